"""Time of the "Why did it decide this?" maps on CPU: Grad-CAM and occlusion.

    python -m bench.saliency [--n 25] [--warmup 3]
    # from the repository root, with the package installed: pip install -e ".[dev]"

The seed000-mnist preset's model (random weights: the cost does not depend on their
values) explains bundled MNIST test digits, each call as the Why panel makes it
(``saliency.explain``: the probabilities, then the map of the predicted class). Prints one
JSON line: median and p95 ms per method after warm-up, against the goals (Grad-CAM
≤ 300 ms, occlusion ≤ 1.5 s), and the occlusion settings that set its cost.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # CPU figures, even on a GPU box

import numpy as np  # noqa: E402

GOALS_MS = {"grad_cam": 300.0, "occlusion": 1500.0}


def timed(fn: Callable[[np.ndarray], object], inputs: list[np.ndarray], warmup: int
          ) -> dict[str, float]:
    """Median and p95 ms of ``fn(x)`` over ``inputs`` after ``warmup`` untimed calls."""
    for x in inputs[:warmup]:
        fn(x)
    ms = []
    for x in inputs:
        t0 = time.perf_counter()
        fn(x)
        ms.append((time.perf_counter() - t0) * 1000)
    return {"median_ms": round(float(np.median(ms)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1), "calls": len(ms)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=25, help="timed calls per method (≥ 20)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    args = ap.parse_args()

    import keras

    from cnnlab.data import datasets
    from cnnlab.model.config import PRESETS
    from cnnlab.model.models import build_model
    from cnnlab.use import saliency
    from cnnlab.use.inference import Predictor

    keras.utils.set_random_seed(0)
    predictor = Predictor(build_model(PRESETS["seed000-mnist"].config, (28, 28, 1), 10))
    digits = datasets.load("mnist_sample").x_test[: args.n].astype(np.float32) / 255
    inputs = list(digits)

    results = {}
    for key, method in (("grad_cam", saliency.Method.GRAD_CAM),
                        ("occlusion", saliency.Method.OCCLUSION)):
        def call(x: np.ndarray, m: saliency.Method = method) -> saliency.Explanation:
            return saliency.explain(predictor, x, None, m)  # as the Why panel calls it

        stats = timed(call, inputs, args.warmup)
        results[key] = {**stats, "goal_ms": GOALS_MS[key],
                        "meets_goal": stats["p95_ms"] <= GOALS_MS[key]}
    h, w, _ = predictor.input_shape
    patch, stride = saliency.patch_settings(h, w)
    positions = (len(saliency.patch_starts(h, patch, stride))
                 * len(saliency.patch_starts(w, patch, stride)))

    import tensorflow as tf

    print(json.dumps({
        "model": "seed000-mnist",
        "weights": "random (the cost does not depend on their values)",
        "params": int(predictor.model.count_params()),
        "device": "CPU",
        "cpu_threads": os.cpu_count(),
        "backend": keras.backend.backend(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        **results,
        "occlusion_settings": {"patch": patch, "stride": stride, "copies": positions,
                               "batch": saliency.OCCLUSION_BATCH},
    }))


if __name__ == "__main__":
    main()
