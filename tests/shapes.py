"""A small image data set a newcomer might zip: two classes of simple coloured shapes."""

from __future__ import annotations

import io
import zipfile

import numpy as np
from PIL import Image, ImageDraw


def shape_image(kind: str, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """One picture: a filled circle or square of random colour, size and place on a random
    light background."""
    background = tuple(int(v) for v in rng.integers(170, 256, 3))
    im = Image.new("RGB", (size, size), background)
    r = int(rng.integers(size // 6, size // 3))
    cx, cy = (int(v) for v in rng.integers(r + 2, size - r - 2, 2))
    colour = tuple(int(v) for v in rng.integers(0, 150, 3))
    box = (cx - r, cy - r, cx + r, cy + r)
    draw = ImageDraw.Draw(im)
    (draw.ellipse if kind == "circle" else draw.rectangle)(box, fill=colour)
    return im


def zip_of(members: dict[str, bytes]) -> bytes:
    """A zip holding ``members`` (name → bytes), in that order."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def shapes_zip(per_class: int = 60, size: int = 64, seed: int = 0) -> bytes:
    """A zip with circle/ and square/ folders of ``per_class`` PNG pictures each."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for kind in ("circle", "square"):
            for i in range(per_class):
                png = io.BytesIO()
                shape_image(kind, rng, size).save(png, format="PNG")
                zf.writestr(f"shapes/{kind}/{i:03d}.png", png.getvalue())
    return buf.getvalue()


def images_zip(x: np.ndarray, y: np.ndarray, class_names: tuple[str, ...]) -> bytes:
    """A zip of PNGs, one folder per class, from uint8 images ``x`` (n, h, w, 1|3)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, (img, label) in enumerate(zip(x, y, strict=True)):
            png = io.BytesIO()
            Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(png, format="PNG")
            folder = class_names[int(label)].replace("/", "-")
            zf.writestr(f"{folder}/{i:05d}.png", png.getvalue())
    return buf.getvalue()
