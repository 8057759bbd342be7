"""Fit settings sized to the data: batch size, epochs, early-stopping patience.

A preset's batch size and patience suit a large data set (60,000 MNIST digits). On a
newcomer's zip of a hundred pictures the same numbers mean a batch larger than the data
and an early stop after a dozen optimizer steps, before anything is learned. These pure
functions scale them by what a run really has: the training images left after the
validation split and the steps per epoch they make.

``FitSettings`` is the one home of a run's fit settings: a preset suggests them, the
Configure page edits them beside the architecture (``ModelConfig`` is only the
architecture and its optimizer, as in keras-io's examples), and a ``TrainRequest`` carries
the ones a run trains with into its config.json.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

PATIENCE_STEPS = 60  # early stopping waits at least this many steps without improvement
MIN_STEPS = 200  # and never stops a run before this many steps
TARGET_STEPS = 1500  # a default run on the user's own images takes about this many steps
MIN_EPOCHS, MAX_EPOCHS = 15, 60
# Keras waits for the device after each execution of the training step, to hand the
# callbacks that step's logs: a fixed cost per execution that is a large part of a small
# model's step on a CPU (bench/throughput.py). Several steps per execution pay it once,
# in groups of about EXECUTION_FLOPS of training work: about 0.1 s on 2 CPU cores, so Stop
# and the progress bar still answer at once. Big models and short epochs keep one step.
EXECUTION_FLOPS = 10e9
MAX_STEPS_PER_EXECUTION = 16
FIELDS = ("batch_size", "epochs", "patience", "fine_tune_epochs")


@dataclass(frozen=True)
class FitSettings:
    """How a model is fitted: batch size, epochs, early-stopping patience in epochs
    (0 = no early stopping), and for a backbone model the epochs of phase 2 (fine-tuning
    its top layers, run after ``epochs``; 0 = none)."""

    batch_size: int = 64
    epochs: int = 10
    patience: int = 3
    fine_tune_epochs: int = 0

    def to_dict(self) -> dict[str, int]:
        """Plain JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> FitSettings:
        """Fit settings from a dict as written by ``to_dict``; missing keys take defaults.

        Raises ValueError naming the bad key and what is allowed.
        """
        if not isinstance(data, dict):
            raise ValueError(f"fit settings must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(FIELDS))
        if unknown:
            raise ValueError(f"fit settings: unknown key(s) {', '.join(unknown)}; allowed: "
                             f"{', '.join(FIELDS)}")
        for key, value in data.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
                raise ValueError(f"fit settings: '{key}' must be a whole number, got {value!r}")
        return cls(**{key: int(value) for key, value in data.items()})

    def problems(self) -> list[str]:
        """What is wrong with these settings on their own, one sentence each."""
        out = []
        if self.batch_size < 1:
            out.append(f"batch size is {self.batch_size}; it must be at least 1")
        if self.epochs < 1:
            out.append(f"epochs is {self.epochs}; it must be at least 1")
        if self.patience < 0:
            out.append(f"patience is {self.patience}; use 0 or more epochs")
        if self.fine_tune_epochs < 0:
            out.append(f"fine-tune epochs is {self.fine_tune_epochs}; use 0 (no fine-tuning) "
                       "or more epochs")
        return out


def n_fit(n_train: int, val_fraction: float, limit: int | None = None) -> int:
    """Training images left after the optional limit and the validation split."""
    n = min(n_train, limit) if limit is not None else n_train
    return n - max(1, round(n * val_fraction))


def batch_size_for(preferred: int, n_images: int) -> int:
    """``preferred`` when the data hold at least that many images, else the largest power
    of two ≤ a quarter of them (so an epoch has at least four steps)."""
    if preferred <= n_images:
        return preferred
    return 2 ** max(0, int(math.log2(max(1, n_images // 4))))


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    """Optimizer steps in one epoch."""
    return max(1, math.ceil(n_images / max(1, batch_size)))


def steps_per_execution(forward_flops: int | None, batch_size: int, steps: int) -> int:
    """Training steps Keras runs per execution for a model of ``forward_flops`` per image
    (models.forward_flops; None, a backbone: 1) at ``batch_size``, with ``steps`` per epoch:
    a group of about EXECUTION_FLOPS (a training step costs about 3× the forward pass), at
    most MAX_STEPS_PER_EXECUTION and an eighth of an epoch, so its progress bar still moves."""
    if not forward_flops:
        return 1
    per_step = 3 * forward_flops * max(1, batch_size)
    return max(1, min(MAX_STEPS_PER_EXECUTION, steps // 8, int(EXECUTION_FLOPS // per_step)))


def patience_for(patience: int, steps: int) -> int:
    """Early-stopping patience in epochs: the preset's, or enough epochs for PATIENCE_STEPS
    steps when epochs are short (0 stays 0: no early stopping)."""
    if patience <= 0:
        return 0
    return max(patience, math.ceil(PATIENCE_STEPS / steps))


def first_stop_epoch(steps: int) -> int:
    """The first epoch (0-based) at which early stopping may end a run: after MIN_STEPS."""
    return max(0, math.ceil(MIN_STEPS / steps) - 1)


def epochs_for(n_images: int, batch_size: int) -> int:
    """Epochs for about TARGET_STEPS steps, within [MIN_EPOCHS, MAX_EPOCHS]."""
    wanted = math.ceil(TARGET_STEPS / steps_per_epoch(n_images, batch_size))
    return min(MAX_EPOCHS, max(MIN_EPOCHS, wanted))


def defaults_for(preferred: FitSettings, own_images: bool, n_images: int) -> FitSettings:
    """The fit settings to offer for ``n_images`` training images: ``preferred`` with its
    batch size made to fit, and for the own-images preset epochs sized to the data."""
    batch = batch_size_for(preferred.batch_size, max(n_images, 1))
    epochs = epochs_for(n_images, batch) if own_images else preferred.epochs
    return FitSettings(batch_size=batch, epochs=epochs, patience=preferred.patience,
                       fine_tune_epochs=preferred.fine_tune_epochs)
