"""Stroke-end → updated probability bars on Draw & predict, in a real browser.

    python -m bench.stroke_latency [--strokes 32] [--app-dir DIR] [--run RUN_DIR]
    # from the repository root, with the package installed: pip install -e ".[dev]"

A `streamlit run app.py` server (``--app-dir``: this checkout, or another one such as a
``git worktree`` of an older commit, measured the same way) serves a runs folder holding one
trained run (the quick preset on the bundled MNIST sample unless ``--run`` gives one).
Chromium draws on the canvas: a clear, a first stroke, a second stroke on top, again. The
time runs in the page, from the stroke's ``mouseup`` to the animation frame in which the
probability bars (the first Plotly chart) hold data different from before the stroke; every
stroke changes the ink, so every stroke changes the bars. Two warm-up cycles are not
counted. Prints one JSON object: p50/p95 ms over all strokes (goal p50 ≤ 250 ms), apart for
first strokes (on an empty canvas) and added strokes, and ``after_send``: from the moment the
page sent the drawing to the server. The difference is the canvas's own wait: after a mouseup
streamlit-drawable-canvas (0.13) sends the drawing once 200 ms pass without another change (a
fixed debounce in its frontend, no parameter), so no server-side change gets a stroke under
~200 ms; ``after_send`` is what this app's rerun and rendering cost.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.engine import start_server
from tests.ui_steps import draw_stroke

if TYPE_CHECKING:
    pass

ROOT = Path(__file__).resolve().parents[1]

# Strokes in canvas fractions; consecutive ones differ, so the bars always change.
SHAPES = [
    [(0.2, 0.15), (0.8, 0.15), (0.45, 0.9)],  # a 7
    [(0.5, 0.1), (0.5, 0.9)],  # a 1
    [(0.5, 0.15), (0.25, 0.5), (0.5, 0.85), (0.75, 0.5), (0.5, 0.15)],  # a 0
    [(0.3, 0.2), (0.7, 0.2), (0.3, 0.8), (0.7, 0.8)],  # a Z-ish 2
    [(0.25, 0.1), (0.25, 0.5), (0.75, 0.5)],  # the left part of a 4
    [(0.65, 0.2), (0.65, 0.9)],  # its stem
]

# Before the page loads: the time of the last mouseup (capture phase: before the canvas sees
# it) and of the first message to the server after it (the canvas's drawing, once its own
# debounce is over), so the total splits into "until sent" and "server + rendering".
ARM = """
window.addEventListener('mouseup', () => {
  window.__strokeEnd = performance.now(); window.__sent = null;
}, true);
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (...args) {
  if (window.__sent === null) window.__sent = performance.now();
  return send.apply(this, args);
};
"""
# Polled every animation frame: [ms since mouseup, ms since sent, data] once the bars' data
# differ from `prev`.
CHANGED = """(prev) => {
  const plot = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
  if (!plot || !plot.data || !plot.data.length) return false;
  const now = JSON.stringify([plot.data[0].x, plot.data[0].y]);
  if (now === prev) return false;
  const t = performance.now();
  return [t - window.__strokeEnd, t - (window.__sent ?? window.__strokeEnd), now];
}"""


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def trained_run(root: Path) -> Path:
    """The quick preset trained one epoch on 2,000 images of the bundled MNIST sample."""
    from cnnlab.data import datasets
    from cnnlab.model.config import PRESETS
    from cnnlab.model.fit_settings import FitSettings
    from cnnlab.runs import store as runs
    from cnnlab.train import training

    ds = datasets.load("mnist_sample")
    request = training.TrainRequest(dataset="mnist_sample", config=PRESETS["quick"].config,
                                    fit=FitSettings(epochs=1), limit=2000, preset="quick")
    run_dir = runs.create_run(root, training.run_config(request, ds))
    result = training.train_run(request, ds, run_dir)
    if result.status != "finished":
        raise RuntimeError(f"training the bench model failed: {result.message}")
    return run_dir


def measure(url: str, cycles: int, warmup: int) -> dict[str, list[float]]:
    """Stroke-end → bars ms of first and added strokes, and of all strokes from the moment
    the drawing was sent, over ``cycles`` clear + two strokes."""
    from playwright.sync_api import sync_playwright

    from tests.conftest import CHROMIUM, CHROMIUM_ARGS

    times: dict[str, list[float]] = {"first": [], "added": [], "after_send": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.set_default_timeout(120_000)
        page.add_init_script(ARM)
        page.goto(f"{url}/predict")
        page.locator("canvas.upper-canvas").wait_for()
        empty = page.get_by_text("Draw a digit on the black square")
        empty.wait_for()
        for cycle in range(warmup + cycles):
            prev = None
            for n in range(2):
                shape = SHAPES[(2 * cycle + n) % len(SHAPES)]
                draw_stroke(page, shape, jitter=0.03 * ((cycle % 3) - 1))
                ms, after_send, prev = page.wait_for_function(
                    CHANGED, arg=prev, polling="raf", timeout=60_000).json_value()
                if cycle >= warmup:
                    times["first" if n == 0 else "added"].append(ms)
                    times["after_send"].append(after_send)
            log(f"cycle {cycle + 1}: " + " ".join(f"{k} {v[-1]:.0f}" for k, v in times.items())
                if cycle >= warmup else f"warm-up {cycle + 1}")
            page.get_by_role("button", name="Clear").click()
            empty.wait_for()
            page.locator("canvas.upper-canvas").wait_for()
            page.wait_for_timeout(300)  # the new canvas mounts and listens
        browser.close()
    return times


def stats(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1), "n": len(ms)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--strokes", type=int, default=32, help="strokes to time (≥ 30)")
    ap.add_argument("--warmup", type=int, default=2, help="clear+two-stroke cycles not timed")
    ap.add_argument("--app-dir", type=Path, default=ROOT, help="the checkout to serve")
    ap.add_argument("--run", type=Path, default=None, help="a trained run dir to serve")
    args = ap.parse_args()

    runs_dir = Path(tempfile.mkdtemp(prefix="cnnlab-stroke-runs-"))
    try:
        if args.run:
            shutil.copytree(args.run, runs_dir / args.run.name)
        else:
            trained_run(runs_dir)
        proc, url = start_server(args.app_dir.resolve(), runs_dir)
        try:
            times = measure(url, cycles=-(-args.strokes // 2), warmup=args.warmup)
        finally:
            proc.terminate()
            proc.wait(30)
    finally:
        shutil.rmtree(runs_dir, ignore_errors=True)
    commit = subprocess.run(["git", "-C", str(args.app_dir), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(args.app_dir), "status", "--porcelain"],
                           capture_output=True, text=True).stdout.strip() != ""
    print(json.dumps({
        "app_dir": str(args.app_dir.resolve()), "commit": commit, "uncommitted_changes": dirty,
        **stats(times["first"] + times["added"]), "first_stroke": stats(times["first"]),
        "added_stroke": stats(times["added"]), "after_send": stats(times["after_send"]),
        "ms": [round(m, 1) for m in times["first"] + times["added"]],
        "cpus": os.cpu_count(), "loadavg_1min": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
