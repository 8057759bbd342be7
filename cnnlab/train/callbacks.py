"""Keras callbacks of a run: progress events, Stop, budgets, best and resumable checkpoints.

The classes subclass ``keras.callbacks.Callback`` but are built on first use, so importing
this module costs no Keras start-up. A run uses them in this order:

- ``BestCheckpoint`` keeps ``best.keras`` (lowest validation loss);
- ``StopAwareEarlyStopping`` stops on a validation-loss plateau, across resumes;
- ``ProgressCallback``, last, streams batch and epoch events, honours Stop (within one
  batch) and the wall-clock budget, and after each whole epoch saves the resumable
  checkpoint (``last.keras`` with optimizer state, ``checkpoint.json`` with the history so
  far) before it reports the epoch: a reported epoch always has its files on disk, and a
  run that dies later resumes exactly from it.
"""

from __future__ import annotations

import functools
import json
import math
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab.train import events as ev

if TYPE_CHECKING:
    import keras

LAST_FILE = "last.keras"
CHECKPOINT_FILE = "checkpoint.json"


class StopFlag:
    """A stop request with its reason: ``"user"`` (Stop), ``"time limit"`` or ``"memory"``.

    ``external`` is anything with ``is_set()`` set from outside the worker (a
    multiprocessing Event); it reads as a user's Stop.
    """

    def __init__(self, external: Any = None) -> None:
        self._external = external
        self._local = threading.Event()
        self._reason: str | None = None
        self.detail = ""

    def set(self, reason: str = "user", detail: str = "") -> None:
        """Ask the run to stop for ``reason`` (the first reason wins)."""
        if self._reason is None:
            self._reason, self.detail = reason, detail
        self._local.set()

    def is_set(self) -> bool:
        """Whether a stop was asked for, here or from outside."""
        return self._local.is_set() or (self._external is not None and self._external.is_set())

    @property
    def reason(self) -> str | None:
        """Why the run stops (None while it should go on)."""
        if self._reason is None and self.is_set():
            return "user"
        return self._reason


def read_checkpoint(run_dir: Path | str) -> dict[str, Any] | None:
    """The resumable checkpoint's facts (``epoch``, ``history`` rows, and a backbone run's
    ``phase``: the one its last.keras is in), or None."""
    try:
        data = json.loads((Path(run_dir) / CHECKPOINT_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if not (Path(run_dir) / LAST_FILE).is_file():
        return None
    return data if isinstance(data, dict) and isinstance(data.get("epoch"), int) else None


def save_model_atomically(model: keras.Model, path: Path) -> None:
    """``model.save(path)`` written beside and renamed, so a kill mid-save keeps the old file."""
    partial = path.with_name(path.stem + ".partial.keras")
    model.save(partial)
    os.replace(partial, path)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@functools.cache
def classes() -> dict[str, type]:
    """The Keras callback classes, built on first use so importing this module stays light."""
    import keras

    class ProgressCallback(keras.callbacks.Callback):
        """Emits throttled batch events and one epoch event per finished epoch; stops within
        one batch when ``stop`` is set or ``deadline`` (time.monotonic) passes; with
        ``work_dir`` saves the resumable checkpoint after every whole epoch.

        Args:
            emit: where events go (a pipe, a queue, an EventLog's ``add``).
            n_samples, batch_size: for progress and samples/s.
            stop: a StopFlag.
            work_dir: where last.keras and checkpoint.json go (None: no checkpoint).
            history: rows of the epochs already done (a resumed run), kept in the checkpoint.
            deadline: time.monotonic() at which the run's wall-clock budget ends, or None.
            samples: (test indices, their uint8 images) predicted after every epoch; the
                epoch event carries ``samples`` = {"index", "predicted", "confidence"}.
            total_epochs: the run's epochs when it fits in more than one ``fit`` call (a
                backbone's two phases); None: the ``fit`` call's own.
            phase: the training phase (1 head only, 2 fine-tuning) of a backbone run, set
                before each ``fit``; it goes into events, history rows and the checkpoint.
        """

        def __init__(
            self,
            emit: ev.Emit,
            n_samples: int,
            batch_size: int,
            stop: StopFlag,
            work_dir: Path | None = None,
            history: list[dict[str, Any]] | None = None,
            deadline: float | None = None,
            min_interval: float = ev.BATCH_EVENT_INTERVAL_S,
            samples: tuple[np.ndarray, np.ndarray] | None = None,
            total_epochs: int | None = None,
            phase: int | None = None,
        ) -> None:
            super().__init__()
            self.total_epochs, self.phase = total_epochs, phase
            self.samples = samples
            self.emit, self.stop, self.work_dir = emit, stop, work_dir
            self.n_samples, self.batch_size = n_samples, batch_size
            self.rows: list[dict[str, Any]] = list(history or [])
            self.deadline, self.min_interval = deadline, min_interval
            self.partial_epoch = False  # stop came before the epoch's end
            self.nan_at: tuple[int, int] | None = None
            self.epoch_seconds: list[float] = []

        def on_train_begin(self, logs=None):
            steps = self.params.get("steps") or math.ceil(self.n_samples / self.batch_size)
            self.steps = int(steps)
            self.epochs = self.total_epochs or int(self.params["epochs"])
            self.t_train = time.perf_counter()

        def on_epoch_begin(self, epoch, logs=None):
            self.t_epoch = self.t_last = time.perf_counter()
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.deadline is not None and time.monotonic() > self.deadline:
                self.stop.set("time limit")
            stopping = self.stop.is_set()
            self._report(batch, logs, force=stopping)
            if stopping or self.stop.is_set():  # a stop set while reporting ends this batch
                self.model.stop_training = True
                self.partial_epoch = batch + 1 < self.steps

        def _report(self, batch, logs, force=False):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(loss) and self.nan_at is None:
                self.nan_at = (self.epoch + 1, batch + 1)
            now = time.perf_counter()
            last = batch + 1 >= self.steps
            if now - self.t_last < self.min_interval and not (last or force):
                return  # throttled: keep the per-batch cost to one clock read
            self.t_last = now
            done = batch + 1
            elapsed = now - self.t_epoch
            samples = min(done * self.batch_size, self.n_samples)
            rate = samples / elapsed if elapsed > 0 else 0.0
            eta_epoch = elapsed / done * (self.steps - done)
            per_epoch = (
                float(np.mean(self.epoch_seconds)) if self.epoch_seconds
                else elapsed / done * self.steps
            )
            eta_run = eta_epoch + per_epoch * (self.epochs - self.epoch - 1)
            self.emit(ev.make(
                "batch",
                epoch=self.epoch + 1, epochs=self.epochs, batch=done, batches=self.steps,
                loss=ev.num(loss), accuracy=ev.num((logs or {}).get("accuracy")),
                samples_per_s=rate, eta_epoch_s=eta_epoch, eta_run_s=eta_run,
                elapsed_s=now - self.t_train, **self._phase(),
            ))

        def _phase(self) -> dict[str, int]:
            return {} if self.phase is None else {"phase": self.phase}

        def on_test_batch_end(self, batch, logs=None):
            if self.stop.is_set():  # skip the rest of validation after Stop
                self.model.stop_evaluating = True
                self.partial_epoch = True

        def on_epoch_end(self, epoch, logs=None):
            if self.partial_epoch:
                return  # an interrupted epoch is not a result: no history row
            logs = logs or {}
            seconds = time.perf_counter() - self.t_epoch
            self.epoch_seconds.append(seconds)
            row = {
                "epoch": epoch + 1,
                "loss": ev.num(logs.get("loss")),
                "accuracy": ev.num(logs.get("accuracy")),
                "val_loss": ev.num(logs.get("val_loss")),
                "val_accuracy": ev.num(logs.get("val_accuracy")),
                "learning_rate": current_lr(self.model),
                "seconds": round(seconds, 3),
                **self._phase(),
            }
            self.rows.append(row)
            if self.work_dir is not None and self.nan_at is None:
                save_model_atomically(self.model, self.work_dir / LAST_FILE)
                _write_json(self.work_dir / CHECKPOINT_FILE,
                            {"epoch": epoch + 1, "history": self.rows, **self._phase()})
            extra = {"samples": self._predict_samples()} if self.samples is not None else {}
            self.emit(ev.make("epoch", epochs=self.epochs, **row, **extra))

        def _predict_samples(self) -> dict[str, list] | None:
            # One forward pass on ~10 images: milliseconds, not an evaluation.
            if self.samples is None or self.nan_at is not None or not len(self.samples[0]):
                return None
            index, x = self.samples
            probs = keras.ops.convert_to_numpy(
                self.model(x.astype("float32"), training=False)).astype(float)
            predicted = probs.argmax(axis=1)
            return {"index": [int(i) for i in index],
                    "predicted": [int(p) for p in predicted],
                    "confidence": [float(c) for c in probs[np.arange(len(index)), predicted]]}

    class BestCheckpoint(keras.callbacks.Callback):
        """Saves ``path`` whenever validation loss improves, but not after an epoch cut
        short by Stop; ``best`` is a previous best to beat (so a resumed run does not
        overwrite a better model). ``float32`` is a float32 twin, with Keras' own layers,
        of a model that trains in mixed precision or with batch_norm.FusedBatchNormalization:
        the weights are saved through it, so best.keras predicts in float32 and loads
        wherever Keras does."""

        def __init__(self, path, progress, best=None, float32=None):
            super().__init__()
            self.final_path = Path(path)
            self.partial_path = self.final_path.with_name("best.partial.keras")
            self.progress = progress
            self.best = math.inf if best is None else best
            self.float32 = float32

        def on_epoch_end(self, epoch, logs=None):
            loss = (logs or {}).get("val_loss")
            if self.progress.partial_epoch or loss is None or not loss < self.best:
                return  # NaN never improves
            self.best = loss
            self.save(self.model)

        def save(self, model):
            """Write ``model``'s weights to the best model file (through the twin)."""
            if self.float32 is not None:
                self.float32.set_weights(model.get_weights())
                model = self.float32
            # Keras writes the file in place; save beside it and rename, so a worker killed
            # mid-save leaves the previous best.keras whole.
            model.save(self.partial_path)
            os.replace(self.partial_path, self.final_path)

    class StopAwareEarlyStopping(keras.callbacks.EarlyStopping):
        """EarlyStopping that ignores an epoch cut short by Stop and, on a resumed run,
        carries on counting from the history so far (best loss and epochs since it).

        ``phase_start`` (0-based epoch) begins a new phase: earlier epochs still set the
        best loss to beat, but the wait for an improvement starts again there.
        """

        def __init__(self, progress, patience, history=None, start_from_epoch=0,
                     phase_start=0):
            super().__init__(monitor="val_loss", patience=patience,
                             restore_best_weights=True, verbose=0,
                             start_from_epoch=start_from_epoch)
            self.progress = progress
            self.previous = [r.get("val_loss") for r in history or []]
            self.phase_start = phase_start

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            losses = [v for v in self.previous if v is not None and math.isfinite(v)]
            if losses:
                best_at = max(i for i, v in enumerate(self.previous) if v == min(losses))
                self.best = min(losses)
                # A new phase trains at another learning rate: its epochs get the full patience.
                self.wait = len(self.previous) - 1 - max(best_at, self.phase_start - 1)

        def on_epoch_end(self, epoch, logs=None):
            if not self.progress.partial_epoch:
                super().on_epoch_end(epoch, logs)

    return {
        "ProgressCallback": ProgressCallback,
        "BestCheckpoint": BestCheckpoint,
        "StopAwareEarlyStopping": StopAwareEarlyStopping,
    }


def progress_callback(emit: ev.Emit, **kwargs: Any) -> keras.callbacks.Callback:
    """A ProgressCallback (keras.callbacks.Callback) sending events to ``emit``."""
    kwargs.setdefault("stop", StopFlag())
    return classes()["ProgressCallback"](emit, **kwargs)


def current_lr(model: keras.Model) -> float | None:
    """The optimizer's learning rate now (schedules evaluated at the current step)."""
    try:
        import keras

        return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    except Exception:  # no optimizer or an exotic schedule: the row just lacks it
        return None
