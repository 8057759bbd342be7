"""The Ray executor end to end on a real local Ray instance (one for this module).

No shared file system is assumed: the worker trains in its own temporary folder and the
files must come back through the event stream. No mocks: real Ray, real TensorFlow.
The instance keeps to loopback and runs with token authentication on (Ray's default for a
local start) on a token of this module's own, so nothing is written to ~/.ray.
tests/test_ray_cluster.py joins a `ray start --head` cluster instead.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import with_fit

pytestmark = pytest.mark.slow  # a real local Ray instance and worker start-ups

ray = pytest.importorskip("ray")

from cnnlab.data import datasets  # noqa: E402
from cnnlab.model import config  # noqa: E402
from cnnlab.runs import store as runs  # noqa: E402
from cnnlab.train import callbacks, jobs, training  # noqa: E402
from cnnlab.train.executors.ray import RayExecutor  # noqa: E402

TINY = config.ModelConfig(blocks=(config.ConvBlock(filters=4),), dense=(config.DenseLayer(16),),
                          learning_rate=3e-3)
WAIT = 300


@pytest.fixture(scope="module")
def ray_engine(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("ray-runs")
    with pytest.MonkeyPatch.context() as env:
        # A local start turns token authentication on (it sets RAY_AUTH_MODE=token in this
        # process) and, with no token anywhere, writes a new one to ~/.ray/auth_token; a
        # token given as RAY_AUTH_TOKEN is used instead. RAY_AUTH_MODE stays Ray's to set:
        # one set here, after `import ray`, would not reach this process's Ray (its config
        # is read at import), so it would send no token to its own GCS.
        env.delenv("RAY_AUTH_MODE", raising=False)
        env.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
        env.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
        env.delenv("RAY_ADDRESS", raising=False)
        # Loopback only. On Linux Ray swaps 127.0.0.1 for the routable address (and its GCS
        # then listens on every interface) unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which
        # it reads once, at import (ray_constants): hence the constant too. The assertion
        # below says so if a Ray release moves it.
        env.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        env.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)
        t0 = time.perf_counter()
        executor = RayExecutor()  # starts a local Ray instance: no RAY_ADDRESS here
        engine = jobs.Engine(root, executor=executor)
        try:
            print(f"Ray started in {time.perf_counter() - t0:.1f} s: {executor.describe()}")
            assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
            yield engine
        finally:
            engine.close()  # shuts down the Ray instance it started
            os.environ.pop("RAY_AUTH_MODE", None)  # Ray's, from its local start
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def sample() -> datasets.Dataset:
    return datasets.load("mnist_sample")


def request(**kw) -> training.TrainRequest:
    base = {"dataset": "mnist_sample", "config": TINY, "epochs": 2, "batch_size": 32,
            "patience": 2, "limit": 400, "name": "ray-tiny"}
    return training.TrainRequest(**with_fit({**base, **kw}))


def test_quick_trains_end_to_end_on_ray(ray_engine, sample) -> None:
    preset = config.PRESETS["quick"].config
    job = ray_engine.submit(request(config=preset, batch_size=64, name="ray-quick"), sample)
    seen, last = [], 0
    while not job.done():
        new = job.events.since(last)
        if new:
            last, seen = new[-1]["seq"], seen + new
        time.sleep(0.02)
    seen += job.events.since(last)
    assert job.result.status == "finished", job.result.message
    kinds = [e["kind"] for e in seen]
    assert kinds[0] == "status" and kinds[-1] == "done" and kinds.count("epoch") == 2
    # The files came back from the worker's own folder through the events.
    run_dir = job.run_dir
    assert {"best.keras", "last.keras", "checkpoint.json", "metrics.json"} <= {
        p.name for p in run_dir.iterdir()}
    assert runs.load_history(run_dir)["epoch"].tolist() == [1, 2]
    assert runs.load_metrics(run_dir)["n_test"] == 1000
    from cnnlab.use import inference

    inference.load_run_model(runs.best_model_path(run_dir))  # a whole, loadable model
    status = runs.load_status(run_dir)
    assert status["status"] == "finished" and status["device"].startswith("CPU")


def test_stop_and_exact_resume_on_ray(ray_engine, sample) -> None:
    job = ray_engine.submit(request(epochs=40, limit=None, name="ray-stop"), sample)
    end = time.monotonic() + WAIT
    while len(runs.load_history(job.run_dir)) < 1:
        assert time.monotonic() < end and not job.done(), "no epoch on Ray"
        time.sleep(0.05)
    ray_engine.stop(job.run_id)
    assert job.wait(WAIT) and job.result.status == "stopped", job.result.message
    done = callbacks.read_checkpoint(job.run_dir)["epoch"]
    assert 1 <= done < 40

    again = ray_engine.resume(job.run_dir, sample, epochs=done + 1)
    assert again.wait(WAIT) and again.result.status == "finished", again.result.message
    assert runs.load_history(job.run_dir)["epoch"].tolist() == list(range(1, done + 2))
    assert callbacks.read_checkpoint(job.run_dir)["epoch"] == done + 1


def test_an_upload_travels_through_the_object_store(ray_engine, tmp_path: Path) -> None:
    info = datasets.DatasetInfo("folder:two.zip", "two", ("dark", "light"), (12, 12, 3))
    x = np.concatenate([np.full((30, 12, 12, 3), 20, np.uint8),
                        np.full((30, 12, 12, 3), 230, np.uint8)])
    y = np.repeat([0, 1], 30)
    upload = datasets.Dataset(info, x, y, x[::6], y[::6])
    job = ray_engine.submit(request(dataset=info.name, limit=None, batch_size=8, epochs=3,
                                    name="ray-upload"), upload)
    assert job.wait(WAIT) and job.result.status == "finished", job.result.message
    assert runs.load_metrics(job.run_dir)["n_test"] == 10


def test_a_class_data_set_goes_into_the_object_store_once(ray_engine, tmp_path: Path,
                                                          monkeypatch) -> None:
    from test_shared_sets import class_files, write_zip

    from cnnlab.data import shared_sets

    folder = tmp_path / "class-sets"
    folder.mkdir()
    write_zip(folder / "colours.zip", class_files(("red", "blue"), 20))
    monkeypatch.setenv("CNNLAB_DATASETS_DIR", str(folder))
    shared_sets.decoded.clear()
    ds = shared_sets.load("shared:colours@16")
    executor = ray_engine.executor
    jobs_ = [ray_engine.submit(request(dataset=ds.info.name, limit=None, batch_size=8, epochs=1,
                                       name=f"ray-class-set-{i}"), ds) for i in range(2)]
    for job in jobs_:
        assert job.wait(WAIT) and job.result.status == "finished", job.result.message
        assert job.spec is None or job.spec.dataset.npz is None
    (version, ref), = executor._shared.values()  # one object for both runs
    assert executor.shared_ref(ds.info.name) is ref
    stored = ray.get(ref)
    assert stored.info.name == "shared:colours@16" and stored.x_train.shape[1:] == (16, 16, 3)
    assert len(shared_sets.decoded) == 1
    assert not list((ray_engine.root / jobs.UPLOADS_DIR).glob("*.npz"))  # nothing shipped
