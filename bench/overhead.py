"""What the lab's training path costs over a bare ``model.fit``: one JSON line.

    python -m bench.overhead [--pairs 7] [--limit 20000] [--epochs 4] [--engine]
    # from the repository root, with the package installed: pip install -e ".[dev]"

A = bare: the same compiled model (training.build_compiled), data and seed, ``model.fit``
with no callbacks but an epoch clock. B = the lab: ``training.train_run`` in this process
(checkpoints, events, progress, early stopping, sample predictions), or with ``--engine``
a run through jobs.Engine in its worker process. The measure is the steady-state epoch:
the median time between consecutive epoch ends (the first epoch, which traces the step,
is left out; everything the lab does per epoch is inside). Variants alternate ABBA; the
result is the median of per-pair ratios B/A with a bootstrap 90 % interval, and a control
that runs A against A in the same way: its interval is the noise floor and contains 1.0.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.stats import alternated, ratio_summary  # noqa: E402


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def steady_epoch(ends: list[float]) -> float:
    """The median time between consecutive epoch ends, the first epoch left out."""
    gaps = [b - a for a, b in zip(ends, ends[1:], strict=False)]
    if not gaps:
        raise ValueError("need at least 2 epochs for a steady-state epoch")
    return statistics.median(gaps)


def bare(request, ds, fused_batch_norm: bool = True) -> float:
    """Steady-state epoch seconds of a bare fit (no callbacks but an epoch clock), with
    the lab's fused batch norm or Keras' own (training.build_compiled)."""
    import keras

    from cnnlab.model import fit_settings
    from cnnlab.train import device, training

    x_tr, y_tr, x_val, y_val = training.prepare_data(ds, request)
    ends: list[float] = []

    class EpochClock(keras.callbacks.Callback):  # epoch hooks only: no per-step cost
        def on_epoch_end(self, epoch, logs=None):
            ends.append(time.perf_counter())

    keras.utils.set_random_seed(training.SEED)
    # In the arithmetic the lab's run uses (bfloat16 on a CPU that has it).
    dev = device.detect()
    with device.dtype_policy(training.compute_policy(request, dev)):
        model = training.build_compiled(
            request.config, ds.info.image_shape, len(ds.info.class_names),
            batch_size=request.fit.batch_size,
            steps=fit_settings.steps_per_epoch(len(y_tr), request.fit.batch_size),
            fused_batch_norm=fused_batch_norm)
    with device.bfloat16_graphs(training.bfloat16_mode(request.config, dev) == training.GRAPHS):
        model.fit(x_tr, y_tr, validation_data=(x_val, y_val), epochs=request.fit.epochs,
                  batch_size=request.fit.batch_size, shuffle=True, verbose=0,
                  callbacks=[EpochClock()])
    return steady_epoch(ends)


def lab(request, ds) -> float:
    """Steady-state epoch seconds of training.train_run in this process."""
    from cnnlab.runs import store as runs
    from cnnlab.train import training

    ends: list[float] = []
    run_dir = runs.create_run(tempfile.mkdtemp(prefix="cnnlab-bench-overhead-"),
                              training.run_config(request, ds))
    result = training.train_run(
        request, ds, run_dir, evaluate=False,
        emit=lambda e: ends.append(e["time"]) if e["kind"] == "epoch" else None)
    assert result.status == "finished", result.message
    return steady_epoch(ends)


def through_engine(engine, request, ds) -> float:
    """Steady-state epoch seconds of a run through the Engine (a local worker process)."""
    engine.warm()
    time.sleep(10)  # the fork server imports Keras, as while a user picks settings
    job = engine.submit(request, ds)
    while not job.done():
        time.sleep(0.05)
    assert job.result.status == "finished", job.result.message
    return steady_epoch([e["time"] for e in job.events.since(0) if e["kind"] == "epoch"])


def main() -> None:
    """Measure and print one JSON object."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=7)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--preset", default="quick")
    p.add_argument("--limit", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--engine", action="store_true", help="B runs through jobs.Engine")
    args = p.parse_args()

    from cnnlab.data import datasets
    from cnnlab.model import config, fit_settings
    from cnnlab.train import jobs, training

    ds = datasets.load(args.dataset)
    preset = config.PRESETS[args.preset]
    # patience 0: both variants run every epoch (early stopping is the lab's, not bare's)
    fit = fit_settings.FitSettings(batch_size=preset.fit.batch_size, epochs=args.epochs,
                                   patience=0)
    request = training.TrainRequest(dataset=args.dataset, config=preset.config, fit=fit,
                                    preset=args.preset, limit=args.limit)
    bare(request, ds)  # this process's backend start-up and first trace, outside the pairs
    engine = jobs.Engine(Path(tempfile.mkdtemp(prefix="cnnlab-bench-engine-"))) \
        if args.engine else None
    try:
        b_variant = ((lambda: through_engine(engine, request, ds)) if engine is not None
                     else (lambda: lab(request, ds)))
        log(f"bare (A) vs {'engine' if engine else 'lab'} (B)")
        a, b = alternated(args.pairs, lambda: bare(request, ds), b_variant)
        log("control: bare (A) vs bare (B)")
        c_a, c_b = alternated(args.pairs, lambda: bare(request, ds), lambda: bare(request, ds))
    finally:
        if engine is not None:
            engine.close()
    result = ratio_summary(a, b)
    control = ratio_summary(c_a, c_b)
    print(json.dumps({
        "variant": "engine" if args.engine else "lab", "dataset": args.dataset,
        "preset": args.preset, "limit": args.limit, "epochs": args.epochs,
        "ratio": result["ratio"], "ci_low": result["ci_low"], "ci_high": result["ci_high"],
        "control": control["ratio"], "control_ci_low": control["ci_low"],
        "control_ci_high": control["ci_high"],
        "bare_epoch_s": result["median_a"], "lab_epoch_s": result["median_b"],
        "pairs": result["pairs"], "ratios": result["ratios"], "control_ratios": control["ratios"],
    }))


if __name__ == "__main__":
    main()
