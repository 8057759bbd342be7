"""Health checks: what a run's per-epoch history says is going wrong, said plainly.

Pure functions of the history (a DataFrame or a list of row dicts), so pages, the CLI and
tests use them without Keras.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

OVERFIT_EPOCHS = 3


@dataclass(frozen=True)
class HealthWarning:
    """A problem spotted in the history: ``kind`` for code, ``message`` (markdown) for people."""

    kind: str
    message: str


def _col(history: Any, name: str) -> list[float]:
    """One metric per epoch from a DataFrame or a list of row dicts (missing → [])."""
    if hasattr(history, "columns"):
        return [float(v) for v in history[name]] if name in history.columns else []
    return [float(r[name]) for r in history if r.get(name) not in (None, "")]


def health_warnings(history: Any, n_classes: int) -> list[HealthWarning]:
    """Warnings about a run so far, from its per-epoch history (DataFrame or list of dicts).

    Checks: non-finite loss; accuracy stuck at chance (≤ 1.5/n_classes); validation loss
    rising while training loss falls for ``OVERFIT_EPOCHS`` epochs; learning rate too high
    (loss exploding) or too low (loss barely moving, accuracy still low).
    """
    loss = _col(history, "loss")
    if not loss:
        return []
    acc = _col(history, "accuracy")
    val_acc = _col(history, "val_accuracy")
    val_loss = _col(history, "val_loss")
    out: list[HealthWarning] = []
    if not all(math.isfinite(v) for v in loss):
        out.append(HealthWarning(
            "nan",
            "**Loss became NaN/inf** — the weights blew up. Lower the learning rate "
            "(10× smaller), add batch normalisation, and check the input scaling.",
        ))
        return out
    chance = 1.5 / n_classes
    stuck = (acc and acc[-1] <= chance) or (val_acc and val_acc[-1] <= chance)
    if stuck:
        which = "training" if acc and acc[-1] <= chance else "validation"
        value = acc[-1] if which == "training" else val_acc[-1]
        out.append(HealthWarning(
            "chance",
            f"**{which.capitalize()} accuracy is at chance level** ({value:.1%}; guessing gives "
            f"{1 / n_classes:.1%}). Likely causes: learning rate too high (the network "
            "diverged and its ReLUs died), no batch normalisation in a deep stack, or labels "
            "that do not match the images. Try: lower the learning rate 10×, turn on batch "
            "norm, check a few images with their labels on Explore.",
        ))
    n = OVERFIT_EPOCHS
    if len(val_loss) > n and len(loss) > n:
        v, t = val_loss[-(n + 1):], loss[-(n + 1):]
        if all(b > a for a, b in zip(v, v[1:], strict=False)) and all(
            b < a for a, b in zip(t, t[1:], strict=False)
        ):
            out.append(HealthWarning(
                "overfit",
                f"**Overfitting**: validation loss rose for {n} epochs while training loss "
                "kept falling. Try more dropout, data augmentation, a smaller model, or rely "
                "on early stopping (the best epoch is kept).",
            ))
    exploding = loss[-1] > 3 * math.log(n_classes) or (
        len(loss) > 1 and loss[-1] > 1.5 * loss[-2]
    )
    if exploding:
        out.append(HealthWarning(
            "lr_high",
            f"**Loss is exploding** ({loss[-1]:.3g}). The learning rate is probably too high: "
            "lower it 3–10×.",
        ))
    elif len(loss) >= 3 and not stuck:
        moved = abs(loss[-3] - loss[-1]) / max(abs(loss[-3]), 1e-12)
        if moved < 0.01 and acc and acc[-1] < 0.9:
            out.append(HealthWarning(
                "lr_low",
                f"**Loss is barely moving** ({moved:.2%} change over 2 epochs) while accuracy "
                f"is {acc[-1]:.1%}. The learning rate may be too low: raise it 3–10×.",
            ))
    return out
