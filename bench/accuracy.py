"""Train a preset on a full data set; print test accuracy, seconds and peak RSS as JSON.

    python -m bench.accuracy --preset quick --dataset mnist [--epochs N] [--limit N]
    # from the repository root, with the package installed: pip install -e ".[dev]"

Not a test: a measurement to run by hand (targets: quick on MNIST ≥ 98.5 % in ≤ 60 s on 2
CPU cores). The run is written to a temporary runs root unless --runs-dir is given.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    """Parse arguments, train synchronously, print one JSON object."""
    from cnnlab import config, datasets, device, runs, training

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--preset", required=True, choices=list(config.PRESETS))
    p.add_argument("--dataset", required=True)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--runs-dir", default=None)
    args = p.parse_args()

    cfg = config.PRESETS[args.preset].config
    t_load = time.perf_counter()
    ds = datasets.load(args.dataset)
    load_s = time.perf_counter() - t_load
    request = training.TrainRequest(
        dataset=args.dataset, config=cfg, preset=args.preset,
        epochs=args.epochs or cfg.epochs, batch_size=args.batch_size or cfg.batch_size,
        limit=args.limit,
    )
    errors = training.request_errors(request, ds)
    if errors:
        sys.exit("; ".join(errors))
    root = Path(args.runs_dir or tempfile.mkdtemp(prefix="cnnlab-bench-"))
    run_dir = runs.create_run(root, request.run_name(), training.run_config(request, ds),
                              {"status": "queued", "dataset": args.dataset,
                               "preset": args.preset})
    result = training.train_run(request, ds, run_dir)
    hist = result.history
    print(json.dumps({
        "preset": args.preset,
        "dataset": args.dataset,
        "device": device.detect().label,
        "status": result.status,
        "epochs_run": len(hist),
        "test_accuracy": result.metrics["test_accuracy"] if result.metrics else None,
        "seconds": round(result.seconds, 1),
        "fit_seconds": round(sum(r["seconds"] for r in hist), 1),
        "load_seconds": round(load_s, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "run_dir": str(run_dir),
        "message": result.message,
    }))


if __name__ == "__main__":
    main()
