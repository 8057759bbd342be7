"""The training engine's costs, measured: one JSON object on stdout.

    python -m bench.engine [--pairs 7] [--skip-browser] [--skip-ray] [--app-dir DIR]
    # from the repository root, with the package installed: pip install -e ".[dev]"

A run through the engine against a bare ``model.fit`` (steady-state epochs, ABBA pairs, a
control) is ``python -m bench.overhead --engine``.

1. ``explore``: Explore page render time in a real browser (session B) while the server is
   idle vs while session A trains ``quick`` on full MNIST, in ABBA-ordered pairs; the median
   of per-pair ratios with a bootstrap 90 % interval (goal ≤ 1.2). ``--app-dir`` points
   at another checkout (e.g. the commit before the engine) to measure it the same way.
2. ``first_batch``: submit-to-first-batch latency of a local run in a fresh worker
   interpreter (A) against one forked from the warm fork server (B), ABBA pairs, with a
   fork-against-fork control; and Ray (an actor per run on a local Ray instance).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.stats import abba, alternated, ratio_summary  # noqa: E402


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- 1. explore


def start_server(app_dir: Path, runs_dir: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CNNLAB_RUNS_DIR": str(runs_dir)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=app_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(180):
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("streamlit did not start")


def bench_explore(app_dir: Path, pairs: int) -> dict:
    from playwright.sync_api import sync_playwright

    from tests.conftest import CHROMIUM, CHROMIUM_ARGS
    from tests.ui_steps import load_explore, pick, set_number, settle

    runs_dir = Path(tempfile.mkdtemp(prefix="cnnlab-bench-runs-"))
    proc, url = start_server(app_dir, runs_dir)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            a = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            b = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            for page in (a, b):
                page.set_default_timeout(120_000)
            a.goto(f"{url}/train")
            a.get_by_role("heading", level=1, name="Train").wait_for()
            pick(a, "Data set", "MNIST digits")
            a.get_by_text("60,000 train").wait_for()
            pick(a, "Model", "preset: quick")
            settle(a)
            set_number(a, "Epochs", 50)
            for _ in range(2):
                load_explore(b, url)  # warm: the data set is cached, pages compiled
            training = False

            def set_training(on: bool) -> None:
                nonlocal training
                if on == training:
                    return
                if on:
                    a.locator(".st-key-train_start button").click()
                    a.get_by_text("samples/s").first.wait_for(timeout=120_000)
                    a.wait_for_timeout(2000)  # past the first batches: steady training
                else:
                    done = a.get_by_role("heading", name="Test set")
                    for _ in range(10):  # a click that lands in an epoch's rerun can be lost
                        if a.locator(".st-key-train_stop button").count():
                            a.locator(".st-key-train_stop button").click()
                        try:
                            done.wait_for(timeout=20_000)
                            break
                        except Exception:
                            log("Stop did not take; clicking again")
                    done.wait_for(timeout=60_000)
                training = on

            idle, busy = [], []
            for n, order in enumerate(abba(pairs)):
                for variant in order:
                    set_training(variant == "B")
                    t = load_explore(b, url)
                    (busy if variant == "B" else idle).append(t)
                log(f"explore pair {n + 1}: idle {idle[-1]:.2f} s, training {busy[-1]:.2f} s")
            set_training(False)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(30)
    return {"app_dir": str(app_dir), "idle_s": [round(t, 2) for t in idle],
            "training_s": [round(t, 2) for t in busy], **ratio_summary(idle, busy)}


# --------------------------------------------------------------------------- 2. first batch


def engine_fit(engine, request, ds) -> tuple[float, float]:
    """(seconds from submit to the start of evaluation, seconds to the first batch)."""
    t0 = time.time()  # event times are time.time() stamps
    job = engine.submit(request, ds)
    first = None
    while not job.done():
        if first is None and job.events.latest_batch is not None:
            first = job.events.latest_batch["time"] - t0
        time.sleep(0.01)
    assert job.result.status == "finished", job.result.message
    t_eval = next(e["time"] for e in job.events.since(0)
                  if e["kind"] == "status" and e.get("status") == "evaluating")
    return t_eval - t0, first if first is not None else float("nan")


def bench_first_batch(pairs: int, skip_ray: bool) -> dict:
    import statistics
    from unittest import mock

    from cnnlab.data import datasets
    from cnnlab.model import config
    from cnnlab.model.fit_settings import FitSettings
    from cnnlab.train import jobs, training
    from cnnlab.train.executors import forkserver

    ds = datasets.load("mnist_sample")
    cfg = config.PRESETS["quick"].config
    request = training.TrainRequest(dataset="mnist_sample", config=cfg,
                                    fit=FitSettings(batch_size=64, epochs=1), limit=2000)
    out: dict[str, object] = {}
    engine = jobs.Engine(tempfile.mkdtemp(prefix="cnnlab-bench-first-"))

    def spawned() -> float:
        with mock.patch.object(forkserver, "supported", lambda: False):
            return engine_fit(engine, request, ds)[1]

    def forked() -> float:
        return engine_fit(engine, request, ds)[1]

    try:
        engine.warm()
        time.sleep(10)  # the fork server imports Keras, as while a user picks settings
        local = ratio_summary(*alternated(pairs, spawned, forked))
        local["control"] = ratio_summary(*alternated(pairs, forked, forked))
    finally:
        engine.close()
    out["local_spawned_vs_forked"] = local
    repeats = 3
    if not skip_ray:
        from cnnlab.train.executors.ray import RayExecutor

        t0 = time.perf_counter()
        executor = RayExecutor()
        out["ray_start_s"] = round(time.perf_counter() - t0, 2)
        engine = jobs.Engine(tempfile.mkdtemp(prefix="cnnlab-bench-ray-"), executor=executor)
        try:
            times = [engine_fit(engine, request, ds)[1] for _ in range(repeats)]
            out["ray_rss_mb"] = round(_ray_rss_mb(), 0)
        finally:
            engine.close()
        out["ray_s"] = round(statistics.median(times), 2)
    return out


def _ray_rss_mb() -> float:
    """Resident memory of Ray's own processes (raylet, GCS, idle workers) in MB."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            if b"ray" not in cmd or b"bench.engine" in cmd:  # not this bench itself
                continue
            pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except OSError:
            continue
        total += pages * os.sysconf("SC_PAGE_SIZE")
    return total / 2**20


def main() -> None:
    """Run the chosen parts and print one JSON object."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=7)
    p.add_argument("--app-dir", type=Path, default=ROOT)
    p.add_argument("--skip-browser", action="store_true")
    p.add_argument("--skip-first-batch", action="store_true")
    p.add_argument("--skip-ray", action="store_true")
    args = p.parse_args()
    result: dict[str, object] = {"cpus": os.cpu_count()}
    if not args.skip_browser:
        result["explore"] = bench_explore(args.app_dir.resolve(), args.pairs)
    if not args.skip_first_batch:
        result["first_batch"] = bench_first_batch(args.pairs, args.skip_ray)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
