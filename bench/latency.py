"""Draw-to-probabilities latency of the predict page on CPU: preprocessing + inference.

    python -m bench.latency [--n 200] [--run RUN_DIR]
    # from the repository root, with the package installed: pip install -e ".[dev]"

Synthetic drawings (random white strokes on a black 280×280 RGBA canvas, like st_canvas
returns) go through ``canvas_to_input`` and the seed000-mnist model, called directly as the
page does. Weights are random unless ``--run`` gives a trained run (same architecture cost
either way). Prints one JSON object: p50/p95 ms of the fast path (target p50 ≤ 15 ms), its
parts, the PNG decode the page also pays, and the naive ``model.predict`` path beside it.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # CPU figures, even on a GPU box

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

SIDE = 280


def synthetic_drawing(rng: np.random.Generator) -> np.ndarray:
    """A 280×280 RGBA canvas with 1–3 random strokes (polylines), white on black."""
    img = Image.new("RGBA", (SIDE, SIDE), (0, 0, 0, 255))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 4))):
        pts = [tuple(int(v) for v in rng.integers(30, SIDE - 30, 2))
               for _ in range(int(rng.integers(3, 8)))]
        draw.line(pts, fill=(255, 255, 255, 255), width=int(rng.integers(14, 26)),
                  joint="curve")
    return np.asarray(img)


def percentiles(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200, help="drawings to time")
    ap.add_argument("--naive-n", type=int, default=50, help="drawings for model.predict")
    ap.add_argument("--run", default=None, help="a trained run dir (default: random weights)")
    args = ap.parse_args()

    import keras

    from cnnlab.data.preprocess import canvas_to_input
    from cnnlab.model.config import PRESETS
    from cnnlab.model.models import build_model
    from cnnlab.use import inference

    if args.run:
        predictor = inference.load_run_predictor(args.run)
        weights = f"trained ({args.run})"
    else:
        keras.utils.set_random_seed(0)
        model = build_model(PRESETS["seed000-mnist"].config, (28, 28, 1), 10)
        predictor = inference.Predictor(model)
        weights = "random (seed000-mnist architecture; cost does not depend on the values)"

    rng = np.random.default_rng(0)
    drawings = [synthetic_drawing(rng) for _ in range(args.n)]
    pngs = []
    for d in drawings:  # what the browser sends: a base64 PNG data URL
        buf = io.BytesIO()
        Image.fromarray(d).save(buf, format="PNG")
        pngs.append(base64.b64encode(buf.getvalue()))

    for d in drawings[:10]:  # warm-up: first calls allocate and pick kernels
        x = canvas_to_input(d)
        if x is not None:
            predictor.probabilities(x)

    total, pre, infer, decode = [], [], [], []
    skipped = 0
    for d, png in zip(drawings, pngs, strict=True):
        t0 = time.perf_counter()
        np.asarray(Image.open(io.BytesIO(base64.b64decode(png))))
        t1 = time.perf_counter()
        x = canvas_to_input(d)
        t2 = time.perf_counter()
        if x is None:
            skipped += 1
            continue
        predictor.probabilities(x)
        t3 = time.perf_counter()
        decode.append((t1 - t0) * 1000)
        pre.append((t2 - t1) * 1000)
        infer.append((t3 - t2) * 1000)
        total.append((t3 - t1) * 1000)

    model = predictor.model
    model.predict(np.zeros((1, 28, 28, 1), np.float32), verbose=0)  # warm-up
    naive = []
    for d in drawings[: args.naive_n]:
        t0 = time.perf_counter()
        x = canvas_to_input(d)
        if x is None:
            continue
        model.predict(x[None] * predictor.scale, verbose=0)
        naive.append((time.perf_counter() - t0) * 1000)

    import tensorflow as tf

    print(json.dumps({
        "model": "seed000-mnist",
        "weights": weights,
        "params": int(model.count_params()),
        "device": "CPU",
        "cpu_threads": os.cpu_count(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "drawings": len(total),
        "skipped_as_too_little_ink": skipped,
        "draw_to_probabilities": {**percentiles(total), "target_p50_ms": 15,
                                  "meets_target": bool(np.percentile(total, 50) <= 15)},
        "parts": {"preprocess": percentiles(pre), "inference_model_call": percentiles(infer)},
        "png_decode_not_included": percentiles(decode),
        "naive_model_predict": {**percentiles(naive), "drawings": len(naive)},
    }, indent=2))


if __name__ == "__main__":
    main()
