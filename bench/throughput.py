"""Training throughput through the lab's own path (training.train_run): one JSON line.

    python -m bench.throughput [--pairs 7] [--limit 0] [--epochs 3] [--skip-jax]
    # from the repository root, with the package installed: pip install -e ".[dev]"

1. ``quick``: the quick preset on MNIST as it was before (one training step per Keras
   execution, float32) vs today's (fit_settings.steps_per_execution, and bfloat16 compute
   where the CPU has it: device.bfloat16_graphs), ABBA ordered, each run in a
   fresh process; steady-state samples/s (the first epoch, which
   traces the step, is left out); the median of per-pair ratios with a bootstrap 90 %
   interval, and a control: today's path against itself in the same order.
2. ``accuracy``: both variants trained for the preset's own epochs on full MNIST;
   test accuracy (goal: the same within ±0.2 points).
3. ``seed000``: seed000-mnist's steady-state samples/s as a percentage of the CPU's peak
   FLOP/s (training ≈ 3 × models.forward_flops per image) in the arithmetic it ran in
   (bfloat16 on a CPU that has it: device.bfloat16_graphs); quick's share is in part 1.
4. ``backends``: quick's samples/s on TensorFlow and on JAX side by side (same ABBA order).
5. ``threads``: quick with TensorFlow's default thread pools (as the lab's workers run) vs
   one inter-op thread (TF_NUM_INTEROP_THREADS=1), ABBA: a check that the defaults are
   right on this CPU (2 AVX2 cores: one inter-op thread ran at 0.88×).

Not a test: a measurement to run by hand on a quiet machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from bench.stats import alternated, ratio_summary

# 2 cores × 2.6 GHz × 32 float32 FLOP per cycle (AVX-512: two 256-bit FMA pipes on Zen 4);
# bfloat16 dot products (AVX512-BF16) do twice the FLOP per instruction.
PEAK_GFLOPS = 166.0
PEAK_GFLOPS_BF16 = 2 * PEAK_GFLOPS


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def one(preset: str, limit: int | None, epochs: int | None, before: bool,
        evaluate: bool) -> dict:
    """Train once in this process; steady-state samples/s and (with evaluate) accuracy."""
    import keras

    from cnnlab.data import datasets
    from cnnlab.model import config, fit_settings, models
    from cnnlab.runs import store as runs
    from cnnlab.train import device, training

    p = config.PRESETS[preset]
    if before:  # the path as it was: every step its own execution, all in float32
        fit_settings.steps_per_execution = lambda forward_flops, batch_size, steps: 1
        device.bfloat16_graphs = lambda enabled: contextlib.nullcontext()
        training.compute_policy = lambda request, dev: "float32"
    ds = datasets.load(p.dataset)
    fit = p.fit if epochs is None else replace(p.fit, epochs=epochs, patience=0)
    request = training.TrainRequest(dataset=p.dataset, config=p.config, fit=fit,
                                    preset=preset, limit=limit)
    root = Path(tempfile.mkdtemp(prefix="cnnlab-bench-throughput-"))
    run_dir = runs.create_run(root, training.run_config(request, ds))
    result = training.train_run(request, ds, run_dir, evaluate=evaluate)
    assert result.status == "finished", result.message
    n_fit = fit_settings.n_fit(len(ds.y_train), request.val_fraction, limit)
    steady = [r["seconds"] for r in result.history[1:]] or [result.history[0]["seconds"]]
    flops = models.forward_flops(p.config, ds.info.image_shape, len(ds.info.class_names))
    rate = n_fit / statistics.median(steady)
    # The same rule the run followed (bfloat16 only where the CPU multiplies it).
    bf16 = not before and bool(training.bfloat16_mode(p.config, device.detect()))
    peak = PEAK_GFLOPS_BF16 if bf16 else PEAK_GFLOPS
    return {
        "backend": keras.backend.backend(), "preset": preset, "n_fit": n_fit,
        "batch_size": fit.batch_size,
        "steps_per_execution": fit_settings.steps_per_execution(
            flops, fit.batch_size, fit_settings.steps_per_epoch(n_fit, fit.batch_size)),
        "epochs": len(result.history), "samples_per_s": round(rate, 1),
        "bfloat16": bf16,  # the peak below is that of the arithmetic the run used
        "pct_peak": round(100 * rate * 3 * (flops or 0) / (peak * 1e9), 1),
        "test_accuracy": result.metrics["test_accuracy"] if result.metrics else None,
        # TensorFlow reads it when it starts: the threads part's variant
        "inter_op_threads": os.environ.get("TF_NUM_INTEROP_THREADS", "default"),
        "seconds": round(result.seconds, 1),
    }


def spawn(preset: str, limit: int | None, epochs: int | None, before: bool = False,
          evaluate: bool = False, backend: str = "tensorflow",
          env: dict[str, str] | None = None) -> dict:
    """``one`` in a fresh process (a fresh backend each time; JAX needs its own process),
    with ``env`` added to its environment."""
    cmd = [sys.executable, "-m", "bench.throughput", "--one", "--preset", preset]
    cmd += ["--limit", str(limit or 0), "--epochs", str(epochs or 0)]
    cmd += ["--before"] if before else []
    cmd += ["--evaluate"] if evaluate else []
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Run the parts and print one JSON object (or, with --one, one measurement)."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=7)
    p.add_argument("--limit", type=int, default=0, help="training images (0: all)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--skip-jax", action="store_true")
    p.add_argument("--skip-threads", action="store_true")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--preset", default="quick", help=argparse.SUPPRESS)
    p.add_argument("--before", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--evaluate", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.preset, args.limit or None, args.epochs or None,
                             args.before, args.evaluate)))
        return

    peak_pct: dict[bool, list[float]] = {True: [], False: []}  # TensorFlow runs, by before

    def quick(before: bool = False, backend: str = "tensorflow",
              env: dict[str, str] | None = None) -> float:
        """Steady-state samples/s of one quick run in a fresh process."""
        run = spawn("quick", args.limit, args.epochs, before, backend=backend, env=env)
        if backend == "tensorflow":
            peak_pct[before].append(run["pct_peak"])
        return run["samples_per_s"]

    result: dict[str, object] = {"cpus": os.cpu_count(), "limit": args.limit,
                                 "epochs": args.epochs, "peak_gflops": PEAK_GFLOPS,
                                 "peak_gflops_bfloat16": PEAK_GFLOPS_BF16}
    log("quick: before (A) vs today (B)")
    before, now = alternated(args.pairs, lambda: quick(before=True), quick, "{:,.0f}/s")
    log("control: today (A) vs today (B)")
    c_a, c_b = alternated(args.pairs, quick, quick, "{:,.0f}/s")
    control = ratio_summary(c_a, c_b)
    result["quick"] = {**ratio_summary(before, now), "control": control["ratio"],
                       "control_ci": [control["ci_low"], control["ci_high"]],
                       # How far from the CPU's peak each path runs: the room left.
                       "pct_peak_before": statistics.median(peak_pct[True]),
                       "pct_peak_today": statistics.median(peak_pct[False])}
    if not args.skip_accuracy:
        # Both to quick's own epochs on full MNIST: the speed-up must not cost accuracy.
        full = {name: spawn("quick", None, None, was, evaluate=True)
                for name, was in (("before", True), ("today", False))}
        result["accuracy"] = {name: {k: r[k] for k in ("test_accuracy", "seconds", "epochs")}
                              for name, r in full.items()}
    seed = spawn("seed000-mnist", 6000, 3)
    result["seed000"] = {k: seed[k] for k in ("samples_per_s", "pct_peak", "bfloat16",
                                              "steps_per_execution")}
    if not args.skip_jax:
        log("backends: TensorFlow (A) vs JAX (B)")
        tf_rates, jax_rates = alternated(args.pairs, quick, lambda: quick(backend="jax"),
                                         "{:,.0f}/s")
        result["backends"] = {"tensorflow_samples_per_s": statistics.median(tf_rates),
                              "jax_samples_per_s": statistics.median(jax_rates),
                              **ratio_summary(tf_rates, jax_rates)}
    if not args.skip_threads:
        log("threads: TensorFlow's defaults (A) vs one inter-op thread (B)")
        defaults, inter1 = alternated(
            args.pairs, quick, lambda: quick(env={"TF_NUM_INTEROP_THREADS": "1"}),
            "{:,.0f}/s")
        result["threads"] = {"inter_op_1_vs_default": ratio_summary(defaults, inter1)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
