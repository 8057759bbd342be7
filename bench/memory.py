"""Peak RSS of training on a CIFAR-10-sized set (synthetic 50k×32×32×3 uint8), as JSON.

    python -m bench.memory [--preset quick] [--epochs 1]
    # from the repository root, with the package installed: pip install -e ".[dev]"

Checks that data stay uint8 end to end (target: peak RSS ≤ 1.5 GiB). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def rss_mib() -> int:
    """Peak resident set size of this process so far, MiB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> None:
    """Build the synthetic set, train through train_run, print peak RSS at each stage."""
    from cnnlab.data import datasets
    from cnnlab.model import config
    from cnnlab.runs import store as runs
    from cnnlab.train import training

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--preset", default="quick", choices=list(config.PRESETS))
    p.add_argument("--epochs", type=int, default=1)
    args = p.parse_args()

    rng = np.random.default_rng(0)
    info = datasets.REGISTRY["cifar10"]
    ds = datasets.Dataset(
        info,
        rng.integers(0, 256, (50_000, 32, 32, 3), dtype=np.uint8),
        rng.integers(0, 10, 50_000).astype(np.uint8),
        rng.integers(0, 256, (10_000, 32, 32, 3), dtype=np.uint8),
        rng.integers(0, 10, 10_000).astype(np.uint8),
    )
    after_data = rss_mib()
    cfg = config.PRESETS[args.preset].config
    request = training.TrainRequest(dataset="cifar10", config=cfg, preset=args.preset,
                                    epochs=args.epochs, batch_size=cfg.batch_size)
    root = Path(tempfile.mkdtemp(prefix="cnnlab-mem-"))
    run_dir = runs.create_run(root, "memory", training.run_config(request, ds),
                              {"status": "queued"})
    t0 = time.perf_counter()
    result = training.train_run(request, ds, run_dir)
    print(json.dumps({
        "preset": args.preset, "epochs": args.epochs, "status": result.status,
        "data_bytes_mib": round((ds.x_train.nbytes + ds.x_test.nbytes) / 2**20),
        "peak_rss_after_data_mib": after_data,
        "peak_rss_mib": rss_mib(),
        "seconds": round(time.perf_counter() - t0, 1),
    }))


if __name__ == "__main__":
    main()
