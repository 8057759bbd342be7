"""Keras' BatchNormalization vs batch_norm.FusedBatchNormalization in training: one JSON line.

    python -m bench.batch_norm [--preset best-mnist] [--pairs 7] [--limit 10000] [--epochs 3]
    # from the repository root, with the package installed: pip install -e ".[dev]"

The same preset, data, seed and dtype policy (the lab's, bfloat16 on a CPU that has it),
built with Keras' batch norm (A) or the fused one (B), compiled as the lab compiles, fitted
with an epoch clock only (bench.overhead.bare). The measure is the steady-state epoch (the
median time between consecutive epoch ends; the first epoch, which traces the step, is
left out). Variants alternate ABBA; the result is the median of per-pair ratios A/B (the
speed-up) with a bootstrap 90 % interval, and a control that runs A against A the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.overhead import bare  # noqa: E402
from bench.stats import alternated, ratio_summary  # noqa: E402


def epoch_seconds(preset: str, limit: int, epochs: int, fused: bool) -> float:
    """Steady-state epoch seconds of ``preset`` with the fused or Keras' batch norm."""
    from cnnlab.data import datasets
    from cnnlab.model import config
    from cnnlab.model.fit_settings import FitSettings
    from cnnlab.train import training

    p = config.PRESETS[preset]
    request = training.TrainRequest(dataset=p.dataset, config=p.config, limit=limit,
                                    fit=FitSettings(p.fit.batch_size, epochs, 0))
    return bare(request, datasets.load(p.dataset), fused_batch_norm=fused)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="best-mnist")
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--limit", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    def run(fused: bool) -> float:
        return epoch_seconds(args.preset, args.limit, args.epochs, fused)

    print("Keras batch norm (A) vs fused (B)", file=sys.stderr)
    a, b = alternated(args.pairs, lambda: run(False), lambda: run(True))
    print("control: Keras (A) vs Keras (B)", file=sys.stderr)
    ca, cb = alternated(args.pairs, lambda: run(False), lambda: run(False))
    speed = ratio_summary(b, a)  # A/B: how many times faster the fused epoch is
    control = ratio_summary(cb, ca)
    print(json.dumps({
        "preset": args.preset, "limit": args.limit, "epochs": args.epochs,
        "ratio": speed["ratio"], "ci_low": speed["ci_low"], "ci_high": speed["ci_high"],
        "keras_epoch_s": speed["median_b"], "fused_epoch_s": speed["median_a"],
        "pairs": speed["pairs"], "ratios": speed["ratios"],
        "control": control["ratio"], "control_ci_low": control["ci_low"],
        "control_ci_high": control["ci_high"], "control_ratios": control["ratios"],
    }))


if __name__ == "__main__":
    main()
