"""The engine as its own process (``cnnlab engine``) shared by several web processes.

Two RemoteEngine clients stand for two web processes on one runs root: what one queues
the other sees and may stop; owner checks hold across the socket; the socket's key is
checked. Then the engine is killed with SIGKILL mid-run: a client brings up a new one
within 10 s, the run is "interrupted" and its worker gone, the queued run trains on the
new engine, and a resume continues at the next epoch with the same optimizer state.

Runs are the tiny model of tests/test_engine.py on a few hundred bundled MNIST samples.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import APPTEST_TIMEOUT, plain, wait_until, with_fit
from fake_executor import FakeExecutor
from streamlit.testing.v1 import AppTest

from cnnlab.model import config
from cnnlab.people import access
from cnnlab.people.accounts import User
from cnnlab.runs import store as runs
from cnnlab.train import (
    budgets,
    callbacks,
    engine_client,
    engine_server,
    engine_socket,
    jobs,
    training,
)
from cnnlab.train.engine_client import EngineUnreachable, RemoteEngine

TINY = config.ModelConfig(blocks=(config.ConvBlock(filters=4),), dense=(config.DenseLayer(16),),
                          learning_rate=3e-3)
WAIT = 240
TRAIN_PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "train.py")
ALICE, BOB, TEACHER = User("alice"), User("bob"), User("tess", "teacher")


def request(**kw) -> training.TrainRequest:
    base = {"dataset": "mnist_sample", "config": TINY, "epochs": 1, "batch_size": 32,
            "patience": 0, "limit": 320, "name": "tiny"}
    return training.TrainRequest(**with_fit({**base, **kw}))


def sample():
    from cnnlab.data import datasets

    return datasets.load("mnist_sample")


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def answering_pid(root: Path) -> int | None:
    """The pid of the engine answering on the root's socket, without starting one."""
    try:
        probe = RemoteEngine(root, start=False, watch=False)
    except EngineUnreachable:
        return None
    probe.close()
    return probe.engine_pid


def start_engine(root: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cnnlab", "engine", "--runs-dir", str(root)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, **env})


def end_engines(root: Path) -> None:
    """End the engine answering for ``root`` (engine_client.stop_engine: SIGTERM)."""
    for _ in range(3):  # the fixture's engine, or the ones clients started after it
        pid = engine_client.stop_engine(root)
        if pid is None:
            return
        assert not alive(pid), f"engine {pid} did not end"


@pytest.fixture
def engine_process(runs_root: Path) -> Iterator[subprocess.Popen]:
    """``cnnlab engine`` on the test's runs root; every engine on it is ended afterwards."""
    proc = start_engine(runs_root)
    wait_until(lambda: answering_pid(runs_root) == proc.pid, 60, "the engine to answer")
    yield proc
    end_engines(runs_root)
    if proc.poll() is None:
        proc.kill()
    proc.wait()


@pytest.fixture
def clients(runs_root: Path, engine_process) -> Iterator[list[RemoteEngine]]:
    """Two clients, as two web processes would hold."""
    made = [RemoteEngine(runs_root), RemoteEngine(runs_root)]
    yield made
    made += engine_client._REMOTES.values()  # the pages' (tests that open one)
    engine_client._REMOTES.clear()
    for client in made:
        client.close()  # first, so no watchdog starts another engine
    end_engines(runs_root)
    for client in made:
        for started in client._started:
            started.wait(timeout=60)


def test_the_socket_needs_the_key_and_one_engine_holds_the_root(runs_root, engine_process,
                                                                  ) -> None:
    key = runs_root / engine_socket.KEY_FILE
    assert key.stat().st_mode & 0o777 == 0o600
    sock = Path(engine_socket.address(runs_root))
    assert sock.stat().st_mode & 0o777 == 0o600
    second = start_engine(runs_root)  # another engine on the same root exits at once
    out, _ = second.communicate(timeout=60)
    assert second.returncode == engine_server.EXIT_BLOCKED
    assert b"runs the training queue" in out
    good = key.read_bytes()
    try:
        key.write_bytes(b"x" * 32)
        with pytest.raises(EngineUnreachable, match="refused this server's key"):
            RemoteEngine(runs_root, start=False, watch=False)
        key.chmod(0o644)
        with pytest.raises(EngineUnreachable, match="may be read by other users"):
            RemoteEngine(runs_root, start=False, watch=False)
    finally:
        key.write_bytes(good)
        key.chmod(0o600)
    assert answering_pid(runs_root) == engine_process.pid


def test_budgets_and_the_per_user_cap_are_the_engine_processes(runs_root) -> None:
    # The engine's operator settings, not the web process's (which has none of these).
    proc = start_engine(runs_root, CNNLAB_MAX_EPOCHS="5", CNNLAB_MAX_RUNS_PER_USER="1")
    try:
        wait_until(lambda: answering_pid(runs_root) == proc.pid, 60, "the engine to answer")
        web = RemoteEngine(runs_root, start=False, watch=False)
        assert web.budgets.max_epochs == 5 and web.budgets.max_runs_per_user == 1
        data = sample()
        with pytest.raises(jobs.EngineRefused, match="allows at most 5"):
            web.submit(request(epochs=6), data, user=BOB)
        first = web.submit(request(), data, user=ALICE)
        with pytest.raises(jobs.EngineRefused, match="allows 1 per user"):
            web.submit(request(), data, user=ALICE)
        web.stop(first.run_id, ALICE)
        assert [j.run_id for j in web.active_for("alice")] in ([], [first.run_id])
        web.close()
    finally:
        end_engines(runs_root)
        proc.wait()


def test_a_dead_engines_queue_is_queued_again_by_the_next_in_order(runs_root) -> None:
    data = sample()
    caps = budgets.Budgets(max_runs_per_user=5)
    first = jobs.Engine(runs_root, executor=FakeExecutor(1), budgets=caps)
    running = first.submit(request(name="running"), data, user=ALICE)
    waiting = [first.submit(request(name=f"q{i}"), data, user=user)
               for i, user in enumerate((BOB, ALICE, BOB))]
    cancelled = first.submit(request(name="cancelled"), data, user=ALICE)
    first.cancel(cancelled.run_id, ALICE)
    saved = sorted(p.stem for p in (runs_root / jobs.QUEUE_DIR).glob("*.json"))
    assert saved == sorted(j.run_id for j in waiting)  # not the running or cancelled run
    order = [j.run_id for j in first.queued()]
    # The engine's process dies: no close(), its lock goes with it.
    assert first._lock_fh is not None
    first._lock_fh.close()

    fake = FakeExecutor(1)
    second = jobs.Engine(runs_root, executor=fake, budgets=caps)
    try:
        assert second.interrupted == [running.run_dir]
        assert runs.load_status(running.run_dir)["status"] == runs.RunStatus.INTERRUPTED
        ended = second.get(running.run_id)  # its owner's Train page shows how it ended
        assert ended.done() and ended.result.status == runs.RunStatus.INTERRUPTED
        assert ended.owner == "alice" and not ended.started
        assert fake.started == order[:1]  # the next in the dead engine's order starts
        assert [j.run_id for j in second.queued()] == order[1:]
        assert second.get(order[1]).owner == first.get(order[1]).owner
        assert runs.load_status(cancelled.run_dir)["status"] == runs.RunStatus.STOPPED
        assert not (runs_root / jobs.QUEUE_DIR / f"{order[0]}.json").exists()
        second.cancel(order[1], TEACHER)
        assert not (runs_root / jobs.QUEUE_DIR / f"{order[1]}.json").exists()
        fake.handles[order[0]].finish()
        assert fake.started == [order[0], order[2]]
    finally:
        second.close()


def test_a_closing_engine_leaves_its_training_runs_interrupted(runs_root) -> None:
    # SIGTERM on `cnnlab engine` closes it; a killed worker's "done" may never arrive.
    fake = FakeExecutor(1)  # its kill() sends nothing, as a worker killed at exit
    engine = jobs.Engine(runs_root, executor=fake)
    training = engine.submit(request(name="training"), sample(), user=ALICE)
    waiting = engine.submit(request(name="waiting"), sample(), user=BOB)
    fake.handles[training.run_id].report_epoch(1, 3, seconds=1.0)
    engine.close(keep_queue=True)
    assert fake.handles[training.run_id].stopped
    status = runs.load_status(training.run_dir)
    assert status["status"] == runs.RunStatus.INTERRUPTED, status
    assert "resume it" in status["message"]
    assert runs.load_status(waiting.run_dir)["status"] == runs.RunStatus.QUEUED  # kept


@pytest.mark.slow
def test_a_run_queued_through_one_web_process_is_seen_and_stopped_through_the_other(
        clients) -> None:
    one, other = clients
    data = sample()
    job = one.submit(request(epochs=50), data, user=ALICE)
    queued = one.submit(request(epochs=1, name="second"), data, user=BOB)
    assert [j.run_id for j in other.running()] == [job.run_id]
    assert [j.run_id for j in other.queued()] == [queued.run_id]
    assert other.position(queued.run_id) == 0 and other.busy()
    assert other.wait_for(queued.run_id).position == 1
    assert [j.run_id for j in other.active_for("alice")] == [job.run_id]
    seen = other.get(job.run_id)
    assert seen.owner == "alice" and seen.request.fit.epochs == 50
    wait_until(lambda: any(e["kind"] == "epoch" for e in seen.events.since(0)), WAIT,
               "an epoch event through the other client")
    kinds = [e["kind"] for e in seen.events.since(0)]
    assert kinds[0] == "status" and "batch" in kinds
    last = seen.events.since(0)[-1]["seq"]
    assert all(e["seq"] > last for e in seen.events.since(last))
    assert seen.snapshot()["status"]["status"] == "running"
    assert len(seen.snapshot()["history"]) >= 1

    # Owner checks are the engine's: Bob's web process cannot stop Alice's run.
    with pytest.raises(access.AccessDenied, match="not yours"):
        other.stop(job.run_id, BOB)
    with pytest.raises(access.AccessDenied):
        other.cancel(queued.run_id, ALICE)
    with pytest.raises(access.AccessDenied):
        other.move_to_front(queued.run_id, BOB)
    assert not other.get(job.run_id).done()

    other.stop(job.run_id, ALICE)
    assert job.wait(WAIT)
    assert job.result.status == runs.RunStatus.STOPPED
    assert queued.wait(WAIT) and queued.result.status == runs.RunStatus.FINISHED


def train_page(monkeypatch) -> AppTest:
    """The Train page of a web process with CNNLAB_ENGINE=process (personal mode)."""
    monkeypatch.setenv(engine_client.ENGINE_SETTING, "process")
    at = AppTest.from_file(TRAIN_PAGE, default_timeout=APPTEST_TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.mark.slow
def test_a_killed_engine_is_taken_over_and_its_run_resumes_exactly(
        runs_root, engine_process, clients, monkeypatch) -> None:
    one, other = clients
    data = sample()
    job = one.submit(request(epochs=40), data)  # the local user's: the Train page shows it
    queued = one.submit(request(epochs=1, name="waiting"), data, user=BOB)
    assert (runs_root / jobs.QUEUE_DIR / f"{queued.run_id}.json").is_file()
    wait_until(lambda: (callbacks.read_checkpoint(job.run_dir) or {}).get("epoch", 0) >= 1,
               WAIT, "the first checkpoint")
    worker = one.get(job.run_id).worker_pid
    assert worker and alive(worker)
    at = train_page(monkeypatch)
    assert any(job.run_id in m.value and "running" in m.value for m in at.markdown)

    killed = time.monotonic()
    os.kill(engine_process.pid, signal.SIGKILL)
    engine_process.wait()
    wait_until(lambda: answering_pid(runs_root) not in (None, engine_process.pid), 10,
               "a new engine within 10 s")
    took = time.monotonic() - killed
    print(f"new engine answering {took:.1f} s after the kill")
    wait_until(lambda: not alive(worker), 15, "the dead engine's worker to exit")

    status = runs.load_status(job.run_dir)
    assert status["status"] == runs.RunStatus.INTERRUPTED, status
    # The queued run survived the engine: the new one trains it.
    assert queued.wait(WAIT) and queued.result.status == runs.RunStatus.FINISHED, \
        queued.result
    assert not (runs_root / jobs.QUEUE_DIR / f"{queued.run_id}.json").exists()

    # The page says so, and resumes it through the new engine.
    done = callbacks.read_checkpoint(job.run_dir)["epoch"]
    assert 1 <= done < 40
    at.run()
    assert not at.exception, at.exception
    labels = [e.label for e in at.expander]
    assert any(label.startswith("Resume a run (1 interrupted") for label in labels), labels
    assert any("stopped while this run was running" in plain(c.value) for c in at.caption)
    at.selectbox(key="train_resume_pick").set_value(job.run_id).run()
    at.number_input(key="train_resume_epochs").set_value(done + 1).run()
    at.button(key="train_resume").click().run()
    assert not at.exception and not at.error, (at.exception, at.error)

    again = other.get(job.run_id)
    assert again is not None
    assert again.wait(WAIT) and again.result.status == runs.RunStatus.FINISHED, again.result
    assert runs.load_history(job.run_dir)["epoch"].tolist() == list(range(1, done + 2))
    import keras

    steps = math.ceil(runs.load_status(job.run_dir)["n_train"] / 32)
    last = keras.models.load_model(job.run_dir / callbacks.LAST_FILE)
    assert int(last.optimizer.iterations.numpy()) == (done + 1) * steps
