"""Your own images with every default: upload-equivalent zip → Train → test accuracy.

    python -m bench.own_images [--skip-fashion] [--size 64] [--settle 8]
    # from the repository root, with the package installed: pip install -e ".[dev]"

Two data sets, each as a zip read exactly like an Explore upload (datasets.load_zip, 20 %
kept for testing) and trained through the engine (a worker process) with the request the
Train page offers untouched (training.default_request):

- ``shapes``: the zip this bench writes: circles vs squares, 60 colour 64×64 pictures each
  (goal: ≥ 95 % test accuracy in ≤ 90 s on 2 CPU cores); ``--size`` makes them smaller, read
  at that size (tests/test_benches.py's smoke run: 16);
- ``fashion``: Fashion-MNIST subsampled to 100 training images per class, zipped as 28×28
  grayscale PNGs and read at 28 px grayscale (goal: ≥ 75 %).

Seconds run from submit to the end of the run (worker start, fit and evaluation).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from cnnlab.data import datasets  # noqa: E402
from cnnlab.data.datasets import UPLOAD_PREFIX  # noqa: E402
from cnnlab.runs import store as runs
from cnnlab.train import jobs, training
from tests.shapes import images_zip, shapes_zip  # noqa: E402


def train_defaults(engine: jobs.Engine, data: bytes, name: str, side: int,
                   grayscale: bool) -> dict:
    """Load ``data`` like an upload, train the offered request, report the result."""
    ds = datasets.load_zip(data, (side, side), grayscale, name=f"{UPLOAD_PREFIX}{name}")
    request = training.default_request(ds)
    t0 = time.perf_counter()
    job = engine.submit(request, ds)
    job.wait()
    seconds = time.perf_counter() - t0
    metrics = runs.load_metrics(job.run_dir) or {}
    history = runs.load_history(job.run_dir)
    return {"images": {"train": int(len(ds.y_train)), "test": int(len(ds.y_test))},
            "preset": request.preset, "batch_size": request.fit.batch_size,
            "epochs_offered": request.fit.epochs, "epochs_run": int(len(history)),
            "status": job.result.status, "test_accuracy": metrics.get("test_accuracy"),
            "seconds": round(seconds, 1)}


def fashion_zip(per_class: int) -> bytes:
    """Fashion-MNIST's first ``per_class`` training images of each class, zipped."""
    import numpy as np

    fm = datasets.load("fashion_mnist")
    keep = np.concatenate([np.flatnonzero(fm.y_train == c)[:per_class]
                           for c in range(len(fm.info.class_names))])
    return images_zip(fm.x_train[keep], fm.y_train[keep], fm.info.class_names)


def main() -> None:
    """Train both data sets with the defaults and print the JSON result."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skip-fashion", action="store_true")
    p.add_argument("--size", type=int, default=64, help="side of the shapes pictures (pixels)")
    p.add_argument("--settle", type=float, default=8.0,
                   help="seconds the fork server gets before the first run (a user's look)")
    args = p.parse_args()
    engine = jobs.Engine(tempfile.mkdtemp(prefix="cnnlab-own-images-"))
    engine.warm()  # as the Train page does while the user looks at the settings
    time.sleep(args.settle)
    try:
        out = {"shapes": train_defaults(engine, shapes_zip(size=args.size), "shapes.zip",
                                        args.size, False)}
        if not args.skip_fashion:
            out["fashion_100_per_class"] = train_defaults(
                engine, fashion_zip(100), "fashion.zip", 28, True)
    finally:
        engine.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
