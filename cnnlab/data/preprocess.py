"""Canvas drawings and uploaded pictures → the input a model was trained on.

MNIST digits were made like this: white ink on black, cropped to the ink, the longest
side scaled to 20 px with anti-aliasing, then pasted into a 28×28 frame so that the
centre of mass sits in the middle. A drawing that skips these steps (a small digit in a
corner, black on white) looks nothing like the training data, and the model guesses.
Everything here returns float32 in [0, 1]; the caller scales to what the model expects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

# Uploaded pictures above this many pixels are refused before decoding (about 7000×7000).
MAX_PICTURE_PIXELS = 50_000_000
# Pictures are reduced to this longest side once, at upload: every model here takes at most
# a few hundred pixels, and reruns then work on ~1 MB instead of a 200 MB decoded photo.
MAX_PICTURE_SIDE = 512
PICTURE_TYPES = "PNG, JPEG, BMP, GIF or WebP"
# Ink darker/lighter than the background by less than this (0..1) is noise, not ink.
INK_THRESHOLD = 0.2
# Longest side of the digit inside the 28×28 frame, as in MNIST.
DIGIT_BOX = 20
# Too little ink to be a digit: a bounding box under 3 % of the canvas side, fewer ink
# pixels than 0.1 % of the canvas, or one round blob (a single click of the brush: a
# nearly square box whose inscribed ellipse is solid ink; the boldest of 3,000 real
# MNIST digits cover at most 83 % of theirs, a brush dot ~100 %).
MIN_BOX_FRACTION = 0.03
MIN_INK_FRACTION = 0.001
BLOB_MAX_ASPECT = 1.5
BLOB_MIN_COVER = 0.92


def ink_map(image: np.ndarray) -> np.ndarray:
    """Ink strength in [0, 1] per pixel (1 = full ink, 0 = background), shape (h, w).

    Works for light-on-dark, dark-on-light and strokes on a transparent background:
    with a mostly transparent image the alpha channel is the ink; otherwise the
    background is the median grey level and ink is whatever differs from it, in the
    direction away from the background.
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(
            f"Expected an image of shape (h, w), (h, w, 1), (h, w, 3) or (h, w, 4); "
            f"got {arr.shape}."
        )
    arr = arr.astype(np.float32)
    if np.issubdtype(np.asarray(image).dtype, np.integer):
        arr /= 255.0
    channels = arr.shape[-1]
    if channels in (2, 4):
        alpha = arr[..., -1]
        # A transparent background (the canvas default): strokes are where alpha is.
        if np.median(alpha) < 0.5:
            return np.clip(alpha, 0.0, 1.0)
        colour = arr[..., :-1]
    else:
        colour = arr
    if colour.shape[-1] == 3:
        gray = colour @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    else:
        gray = colour[..., 0]
    background = float(np.median(gray))
    if background > 0.5:  # dark ink on a light background: invert
        ink = (background - gray) / max(background, 1e-6)
    else:
        ink = (gray - background) / max(1.0 - background, 1e-6)
    return np.clip(ink, 0.0, 1.0).astype(np.float32)


def _ink_box(ink: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of the pixels above INK_THRESHOLD, or None if none."""
    rows = np.flatnonzero((ink > INK_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((ink > INK_THRESHOLD).any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _too_little_ink(ink: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """True for a dot or speck: not enough drawn to call it a digit."""
    top, bottom, left, right = box
    height, width = bottom - top, right - left
    side = max(ink.shape)
    inked = int((ink > INK_THRESHOLD).sum())
    if max(height, width) < MIN_BOX_FRACTION * side or inked < MIN_INK_FRACTION * ink.size:
        return True
    if max(height, width) / max(min(height, width), 1) >= BLOB_MAX_ASPECT:
        return False
    ys, xs = np.indices((height, width))
    inside = ((ys + 0.5) / height * 2 - 1) ** 2 + ((xs + 0.5) / width * 2 - 1) ** 2 <= 1
    cover = (ink[top:bottom, left:right] > INK_THRESHOLD)[inside].mean()
    return bool(cover > BLOB_MIN_COVER)


def _resize(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Anti-aliased resize of a float image to (height, width) with Lanczos."""
    img = Image.fromarray(gray.astype(np.float32), mode="F")
    return np.asarray(img.resize((size[1], size[0]), Image.Resampling.LANCZOS), np.float32)


@dataclass(frozen=True)
class Framing:
    """What MNIST-style framing made of an ink map, step by step (see ``_mnist_frame``).

    Args:
        box: (top, bottom, left, right) of the ink on the canvas: the crop.
        scaled: the crop with its longest side DIGIT_BOX px (scaled to the frame), (h, w).
        mass_centre: (y, x) of ``scaled``'s centre of mass, in its own pixels.
        offset: (y, x) where ``scaled``'s top-left corner sits in the frame.
        frame: the size×size frame, the centre of mass at its middle.
    """

    box: tuple[int, int, int, int]
    scaled: np.ndarray
    mass_centre: tuple[float, float]
    offset: tuple[int, int]
    frame: np.ndarray


def _mnist_frame(ink: np.ndarray, box: tuple[int, int, int, int], size: int) -> Framing:
    """Crop to the ink, scale the longest side to DIGIT_BOX, centre by mass in size×size."""
    top, bottom, left, right = box
    crop = ink[top:bottom, left:right]
    scale = DIGIT_BOX * size / 28 / max(crop.shape)
    h = max(1, round(crop.shape[0] * scale))
    w = max(1, round(crop.shape[1] * scale))
    small = np.clip(_resize(crop, (h, w)), 0.0, None)
    if small.max() > 0:
        small = np.clip(small / small.max(), 0.0, 1.0)
    frame = np.zeros((size, size), np.float32)
    mass = small.sum()
    ys, xs = np.indices(small.shape)
    cy = (ys * small).sum() / mass if mass > 0 else (h - 1) / 2
    cx = (xs * small).sum() / mass if mass > 0 else (w - 1) / 2
    # Shift the centre of mass to pixel (14, 14) as MNIST did (measured on its test set:
    # mean 13.99, 14.01), but keep all ink inside the frame.
    y0 = int(np.clip(round(size / 2 - cy), 0, size - h))
    x0 = int(np.clip(round(size / 2 - cx), 0, size - w))
    frame[y0 : y0 + h, x0 : x0 + w] = small
    return Framing(box, small, (float(cy), float(cx)), (y0, x0), frame)


def _fit_channels(gray: np.ndarray, channels: int) -> np.ndarray:
    """(h, w) → (h, w, channels) by repeating the grey level."""
    return np.repeat(gray[..., None], channels, axis=-1).astype(np.float32)


@dataclass(frozen=True)
class CanvasTrace:
    """Every intermediate result of ``canvas_to_input``, kept so that pictures of the steps
    (cnnlab.data.input_steps) show exactly what the model gets.

    Args:
        ink: the ink map of the whole canvas, (h, w) in [0, 1].
        framing: crop, scale and centring; None when there is no digit to frame.
        input: the model input of the target shape; None when there is no digit.
    """

    ink: np.ndarray
    framing: Framing | None
    input: np.ndarray | None


def trace_canvas(rgba: np.ndarray, target: tuple[int, int, int] = (28, 28, 1)) -> CanvasTrace:
    """A canvas drawing made MNIST-like for a model of input shape `target`, every step kept.

    ``input`` (and ``framing``) are None when the canvas is empty or holds too little ink to
    be a digit (a dot), so the caller shows "draw a digit" instead of a meaningless guess.
    """
    ink = ink_map(rgba)
    box = _ink_box(ink)
    if box is None or _too_little_ink(ink, box):
        return CanvasTrace(ink, None, None)
    height, width, channels = target
    framing = _mnist_frame(ink, box, max(height, width))
    frame = framing.frame
    if frame.shape != (height, width):
        frame = np.clip(_resize(frame, (height, width)), 0.0, 1.0)
    return CanvasTrace(ink, framing, _fit_channels(frame, channels))


def canvas_to_input(
    rgba: np.ndarray, target: tuple[int, int, int] = (28, 28, 1)
) -> np.ndarray | None:
    """A canvas drawing as an MNIST-style input of shape `target`, float32 in [0, 1].

    Returns None when the canvas is empty or holds too little ink to be a digit (a dot),
    so the caller shows "draw a digit" instead of a meaningless prediction.
    """
    return trace_canvas(rgba, target).input


def naive_input(rgba: np.ndarray, target: tuple[int, int, int] = (28, 28, 1)) -> np.ndarray:
    """The whole canvas's ink map resized to `target`, float32 in [0, 1]: no crop, no scaling
    of the digit, no centring. Only for comparison: it shows why ``canvas_to_input`` frames
    the digit like MNIST (a small digit in a corner stays small and in the corner here).
    """
    height, width, channels = target
    small = np.clip(_resize(ink_map(rgba), (height, width)), 0.0, 1.0)
    return _fit_channels(small, channels)


def image_to_input(
    image: Image.Image | np.ndarray, target: tuple[int, int, int]
) -> np.ndarray:
    """An uploaded picture as a model input of shape `target`, float32 in [0, 1].

    Colour targets (CIFAR-10): resize the shorter side and centre-crop, keep the colours.
    Grey targets (MNIST, Fashion-MNIST): the picture becomes light-on-dark like the
    training data (dark-on-light photos are inverted); a picture already of the target
    size is kept as it is, a larger one is cropped to its ink and centred like MNIST.
    Raises ValueError for an image with no content to classify.
    """
    height, width, channels = target
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        pil = Image.fromarray(arr.astype(np.uint8) if arr.dtype != np.uint8 else arr)
    else:
        pil = image
    if channels == 3:
        rgb = pil.convert("RGB")
        scale = max(height / rgb.height, width / rgb.width)
        size = (max(width, round(rgb.width * scale)), max(height, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
        left, top = (rgb.width - width) // 2, (rgb.height - height) // 2
        rgb = rgb.crop((left, top, left + width, top + height))
        return np.asarray(rgb, np.float32) / 255.0
    # Grey targets: composite transparency onto the detected background via ink_map.
    if pil.mode not in ("L", "LA", "RGB", "RGBA"):
        pil = pil.convert("RGBA" if "A" in pil.getbands() else "RGB")
    ink = ink_map(np.asarray(pil))
    if ink.shape == (height, width):
        return _fit_channels(ink, channels)
    box = _ink_box(ink)
    if box is None:
        raise ValueError(
            f"The picture ({pil.width}×{pil.height}) is one flat colour; upload a picture "
            "with a visible object or digit on a plain background."
        )
    frame = _mnist_frame(ink, box, max(height, width)).frame
    if frame.shape != (height, width):
        frame = np.clip(_resize(frame, (height, width)), 0.0, 1.0)
    return _fit_channels(frame, channels)


def open_image(data: bytes, name: str) -> Image.Image:
    """An uploaded picture, decoded and reduced to at most MAX_PICTURE_SIDE pixels a side;
    ValueError saying what is wrong when it cannot be used.

    The size comes from the file header before any pixel is decoded, so a small file that
    claims 20,000×20,000 pixels (a decompression bomb) is refused without using memory.
    JPEGs decode at a reduced scale (draft); decode once and keep the result for reruns.
    """
    import io
    import re
    import warnings

    from PIL import UnidentifiedImageError

    too_big = (f"at most {MAX_PICTURE_PIXELS:,} pixels are allowed: shrink it (a few hundred "
               "pixels a side is plenty) and upload it again.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below
            image = Image.open(io.BytesIO(data))
        w, h = image.size
        if w * h > MAX_PICTURE_PIXELS:
            raise ValueError(f"{name} is {w}×{h} pixels; {too_big}")
        image.draft(image.mode, (MAX_PICTURE_SIDE, MAX_PICTURE_SIDE))
        image.thumbnail((MAX_PICTURE_SIDE, MAX_PICTURE_SIDE), Image.Resampling.LANCZOS)
        image.load()  # a small picture is not resized: decode it here, errors included
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        claimed = f"{int(found.group(1)):,}" if found else "far too many"
        raise ValueError(f"{name} claims {claimed} pixels; {too_big}") from exc
    except ValueError:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, … for broken files
        detail = ("its content is in no picture format"
                  if isinstance(exc, UnidentifiedImageError) else f"{type(exc).__name__}: {exc}")
        raise ValueError(
            f"{name} is not a readable picture ({detail}). Allowed are {PICTURE_TYPES} files; "
            "save it again as PNG and retry."
        ) from exc
    return image
