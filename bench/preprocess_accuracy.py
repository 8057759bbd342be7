"""How much MNIST-style preprocessing of a drawing matters: accuracy with and without it.

    python -m bench.preprocess_accuracy [--n 2000] [--run RUN_DIR] [--no-write]
    # from the repository root, with the package installed: pip install -e ".[dev]"

The first ``n`` MNIST test digits are "drawn" on a 280×280 canvas at a random size and place
(cnnlab.data.drawn_digits, seed 0) and classified by a trained model twice: through
``canvas_to_input`` (crop, longest side 20 px, centre of mass to the middle: what Draw &
predict does) and through ``naive_input`` (the whole canvas resized to 28×28). The model is
``--run``'s best model, else the quick preset trained here on full MNIST with its preset fit
settings (what the page's one-click model is, on the full data). Needs MNIST in the Keras
cache (KERAS_HOME). Prints one JSON object and, unless ``--no-write``, stores it in
cnnlab/data/preprocess_accuracy.json, where the Draw & predict caption reads it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def quick_model_on_mnist(runs_dir: Path) -> tuple[Path, str]:
    """A run of the quick preset on full MNIST (its preset fit settings) and its description."""
    from cnnlab.data import datasets
    from cnnlab.model.config import PRESETS
    from cnnlab.runs import store as runs
    from cnnlab.train import training

    preset = PRESETS["quick"]
    ds = datasets.load("mnist")
    request = training.TrainRequest(dataset="mnist", config=preset.config, fit=preset.fit,
                                    preset=preset.name)
    run_dir = runs.create_run(runs_dir, training.run_config(request, ds))
    result = training.train_run(request, ds, run_dir)
    if result.status != "finished":
        raise RuntimeError(f"training the quick preset failed: {result.message}")
    return run_dir, f"the quick preset trained {preset.fit.epochs} epochs on MNIST"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="drawn digits to classify")
    ap.add_argument("--seed", type=int, default=0, help="sizes and places of the digits")
    ap.add_argument("--run", type=Path, default=None, help="a trained run dir (default: train)")
    ap.add_argument("--no-write", action="store_true",
                    help="print only; keep cnnlab/data/preprocess_accuracy.json as it is")
    args = ap.parse_args()

    from cnnlab.data import datasets, drawn_digits
    from cnnlab.data.preprocess import canvas_to_input, naive_input
    from cnnlab.use import inference

    started = time.perf_counter()
    ds = datasets.load("mnist")
    images, labels = ds.x_test[: args.n], ds.y_test[: args.n].astype(int)
    with tempfile.TemporaryDirectory() as tmp:
        if args.run:
            run_dir = args.run
            model = f"the run {args.run.name} ({inference.run_dataset(str(args.run))})"
        else:
            run_dir, model = quick_model_on_mnist(Path(tmp))
        predictor = inference.load_run_predictor(run_dir)
    shape = predictor.input_shape

    def accuracy(inputs: list[np.ndarray | None]) -> float:
        """Share of right answers; a digit taken for a dot (None) counts as wrong."""
        kept = [(x, y) for x, y in zip(inputs, labels, strict=True) if x is not None]
        if not kept:
            return 0.0
        guesses = predictor.probabilities(np.stack([x for x, _ in kept])).argmax(axis=1)
        return float((guesses == np.array([y for _, y in kept])).sum() / len(inputs))

    original = accuracy(list(images.astype(np.float32).reshape(-1, *shape) / 255.0))
    canvases = list(drawn_digits.drawn_digits(images, seed=args.seed))
    mnist_style = accuracy([canvas_to_input(c, shape) for c in canvases])
    naive = accuracy([naive_input(c, shape) for c in canvases])
    result = {
        "n": len(canvases), "model": model,
        "digits": f"the first {len(canvases)} MNIST test digits pasted on a "
                  f"{drawn_digits.CANVAS_SIDE}×{drawn_digits.CANVAS_SIDE} canvas at random "
                  f"sizes ({drawn_digits.MIN_SIDE}–{drawn_digits.MAX_SIDE} px) and places, "
                  f"seed {args.seed}",
        "original_accuracy": round(original, 4), "mnist_style_accuracy": round(mnist_style, 4),
        "naive_accuracy": round(naive, 4),
        "measured": datetime.date.today().isoformat(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))
    if not args.no_write:
        text = json.dumps(result, indent=2, ensure_ascii=False)
        drawn_digits.MEASURED_PATH.write_text(text + "\n")


if __name__ == "__main__":
    main()
