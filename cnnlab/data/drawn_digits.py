"""Digits "drawn" on a canvas, made reproducibly, and what preprocessing did to accuracy.

Real MNIST test digits are pasted onto a 280×280 canvas (the Draw & predict canvas's size)
at a random size and place, the way people draw: big or small, seldom in the middle.
``bench/preprocess_accuracy.py`` feeds them to a trained model twice, through
``canvas_to_input`` (MNIST-style) and ``naive_input`` (the whole canvas resized), and stores
both accuracies in ``data/preprocess_accuracy.json``; the page's caption reads them from
there, so it only ever quotes a measured number.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CANVAS_SIDE = 280
# A pasted digit's side (its 28×28 frame, the digit ~20/28 of it) in canvas pixels.
MIN_SIDE, MAX_SIDE = 110, 270
MODES = ("white_on_black", "black_on_white", "transparent")
MEASURED_PATH = Path(__file__).resolve().parent / "preprocess_accuracy.json"


def paste_on_canvas(digit: np.ndarray, rng: np.random.Generator,
                    mode: str = "white_on_black") -> np.ndarray:
    """One 28×28 uint8 digit at a random scale and place on a 280×280 RGBA canvas.

    ``mode`` is the canvas convention: white on black (what Draw & predict's canvas sends),
    black on white, or coloured ink on a transparent background.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not a canvas convention; use one of {MODES}.")
    side = int(rng.integers(MIN_SIDE, MAX_SIDE))
    big = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC))
    y, x = (int(v) for v in rng.integers(0, CANVAS_SIDE - side + 1, size=2))
    ink = np.zeros((CANVAS_SIDE, CANVAS_SIDE), np.uint8)
    ink[y : y + side, x : x + side] = big
    canvas = np.zeros((CANVAS_SIDE, CANVAS_SIDE, 4), np.uint8)
    if mode == "white_on_black":
        canvas[..., :3] = ink[..., None]
        canvas[..., 3] = 255
    elif mode == "black_on_white":
        canvas[..., :3] = 255 - ink[..., None]
        canvas[..., 3] = 255
    else:
        canvas[..., :3] = (30, 120, 220)
        canvas[..., 3] = ink
    return canvas


def drawn_digits(images: np.ndarray, seed: int = 0,
                 mode: str = "white_on_black") -> Iterator[np.ndarray]:
    """Each of ``images`` (n, 28, 28[, 1]) uint8 as a canvas, in order; the same ``seed``
    gives the same canvases."""
    rng = np.random.default_rng(seed)
    for digit in images:
        yield paste_on_canvas(digit.reshape(digit.shape[0], digit.shape[1]), rng, mode)


@dataclass(frozen=True)
class Measured:
    """The stored result of ``python -m bench.preprocess_accuracy``.

    Args:
        n: how many drawn digits were classified.
        model: which model classified them, in words (preset, data, epochs).
        mnist_style: accuracy with ``canvas_to_input`` (crop, scale, centre).
        naive: accuracy with ``naive_input`` (the whole canvas resized).
        original: the same model's accuracy on the same digits as MNIST has them.
    """

    n: int
    model: str
    mnist_style: float
    naive: float
    original: float


def load_measured(path: Path | None = None) -> Measured | None:
    """The stored measurement (at ``path``, default MEASURED_PATH), or None when the bench has
    not written one or it is broken: a caption then says nothing rather than something
    unmeasured."""
    try:
        raw = json.loads((path or MEASURED_PATH).read_text())
        return Measured(n=int(raw["n"]), model=str(raw["model"]),
                        mnist_style=float(raw["mnist_style_accuracy"]),
                        naive=float(raw["naive_accuracy"]),
                        original=float(raw["original_accuracy"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
