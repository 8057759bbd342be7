"""Pictures of how a drawing becomes the model's input, one per preprocessing step.

Every picture is drawn from a ``CanvasTrace``: the intermediate results that
``cnnlab.data.preprocess.canvas_to_input`` itself computed on the way to the input, not a second
implementation of the steps, so the pictures cannot drift from what the model gets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from cnnlab.data.preprocess import CanvasTrace

# Marks drawn over the grey pictures (RGB): the crop box and the centre of mass.
MARK = (255, 64, 64)
# The crop box's line width on the canvas-sized ink map, in canvas pixels.
BOX_LINE = 3


@dataclass(frozen=True)
class Step:
    """One step's picture.

    Args:
        title: what the step does, e.g. "Longest side 20 px".
        image: the picture, uint8 RGB (h, w, 3) at the step's own resolution.
        caption: one sentence with the step's numbers (sizes, positions).
        extent: the picture's display width as a share of a full one: below 1 for the
            scaled crop, so that it shows at the scale of the frame it goes into.
    """

    title: str
    image: np.ndarray
    caption: str
    extent: float = 1.0


def _rgb(gray: np.ndarray) -> np.ndarray:
    """A float image in [0, 1], (h, w) or (h, w, c), as uint8 RGB (h, w, 3)."""
    if gray.ndim == 3 and gray.shape[-1] == 3:
        return np.clip(np.round(gray * 255), 0, 255).astype(np.uint8)
    if gray.ndim == 3:
        gray = gray[..., 0]
    tile = np.clip(np.round(gray * 255), 0, 255).astype(np.uint8)
    return np.repeat(tile[..., None], 3, axis=-1)


def _with_box(image: np.ndarray, box: tuple[int, int, int, int], line: int) -> np.ndarray:
    """A copy of ``image`` with the outline of box (top, bottom, left, right) in MARK."""
    out = image.copy()
    top, bottom, left, right = box
    out[top : top + line, left:right] = MARK
    out[max(bottom - line, top) : bottom, left:right] = MARK
    out[top:bottom, left : left + line] = MARK
    out[top:bottom, max(right - line, left) : right] = MARK
    return out


def canvas_steps(trace: CanvasTrace) -> list[Step]:
    """The pictures of ``trace``'s steps: ink map, crop box, longest side scaled, centre of
    mass moved to the middle, the model input. Only the ink map when there is no digit."""
    h, w = trace.ink.shape
    ink = _rgb(trace.ink)
    steps = [Step("Ink map", ink, f"How strongly each of the {w}×{h} canvas pixels is inked.")]
    framing = trace.framing
    if framing is None or trace.input is None:
        return steps
    top, bottom, left, right = framing.box
    steps.append(Step("Crop box", _with_box(ink, framing.box, BOX_LINE),
                      f"Only the ink's box is kept: {right - left}×{bottom - top} px."))
    sh, sw = framing.scaled.shape
    size = framing.frame.shape[0]
    steps.append(Step(f"Longest side {max(sh, sw)} px", _rgb(framing.scaled),
                      f"Scaled with anti-aliasing to {sw}×{sh} px, as MNIST digits were.",
                      extent=sw / size))
    cy = framing.offset[0] + framing.mass_centre[0]
    cx = framing.offset[1] + framing.mass_centre[1]
    centred = _rgb(framing.frame)
    centred[int(round(cy)), int(round(cx))] = MARK  # the centre of mass, one pixel
    steps.append(Step(f"Centre of mass → ({size // 2}, {size // 2})", centred,
                      f"Placed in a {size}×{size} frame so that the ink's centre of mass "
                      f"(red) lands at ({cy:.1f}, {cx:.1f})."))
    ih, iw, ic = trace.input.shape
    steps.append(Step(f"The {ih}×{iw} input", _rgb(trace.input),
                      f"What the model gets: {ih}×{iw}×{ic}, ink 1, background 0."))
    return steps


def enlarged(image: np.ndarray, width: int) -> np.ndarray:
    """``image`` scaled to ``width`` pixels wide with square pixels kept (nearest neighbour),
    so a 20×13 picture shows its pixels instead of a blur."""
    h, w = image.shape[:2]
    height = max(1, round(width * h / w))
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.NEAREST))
