"""Training: a streaming Keras callback, health checks, and background jobs with a queue.

``train_run`` trains one run synchronously (CLI, benches). ``TrainingJob`` wraps it in a
background thread owned by the server process; ``JobManager`` runs one job at a time and
queues the rest. The UI keeps one JobManager in ``st.cache_resource``, so a rerun, a page
switch, a refresh or a second tab sees the same job instead of starting a new one.

Data stay uint8: arrays go to ``model.fit`` as they are, batches are sliced per step and the
model's own Rescaling layer turns them into floats, so no float copy of the set is made.
Keras is imported inside functions only.
"""

from __future__ import annotations

import collections
import errno
import functools
import importlib.util
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab import runs

BATCH_EVENT_INTERVAL_S = 0.2
OVERFIT_EPOCHS = 3
SEED = 42


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class TrainRequest:
    """What to train: a data set name, a model config and the fit settings."""

    dataset: str
    config: Any  # cnnlab.config.ModelConfig
    epochs: int = 10
    batch_size: int = 64
    val_fraction: float = 0.1
    limit: int | None = None
    preset: str | None = None
    name: str = ""
    mixed_precision: bool = False
    tensorboard: bool = False  # also write TensorBoard logs to <run>/tensorboard

    def run_name(self) -> str:
        """The human name of the run (used in its id)."""
        return self.name or f"{self.preset or 'custom'}-{self.dataset}"


def request_errors(request: TrainRequest, dataset: Any) -> list[str]:
    """Everything wrong with ``request`` for ``dataset`` as sentences (empty = can train)."""
    errors: list[str] = []
    n_train = len(dataset.y_train)
    if request.limit is not None:
        if request.limit < 2 * len(dataset.info.class_names):
            errors.append(
                f"Limit {request.limit} is too small: use at least "
                f"{2 * len(dataset.info.class_names)} samples (two per class) or no limit."
            )
        n_train = min(n_train, request.limit)
    if not 1 <= request.epochs <= 1000:
        errors.append(f"Epochs is {request.epochs}; choose between 1 and 1000.")
    if not 0.0 < request.val_fraction <= 0.5:
        errors.append(
            f"Validation split is {request.val_fraction}; choose a fraction in (0, 0.5]."
        )
    n_fit = n_train - max(1, round(n_train * request.val_fraction))
    if request.batch_size < 1 or request.batch_size > max(n_fit, 1):
        errors.append(
            f"Batch size {request.batch_size} does not fit: {n_fit} training samples remain "
            f"after the validation split; choose a batch size between 1 and {max(n_fit, 1)}."
        )
    if request.mixed_precision:
        from cnnlab import device

        if device.detect().kind != "GPU":
            errors.append("Mixed precision needs a GPU and this machine trains on CPU; untick it.")
    if request.tensorboard and importlib.util.find_spec("tensorboard") is None:
        errors.append("TensorBoard logs need the tensorboard package (pip install tensorboard); "
                      "untick TensorBoard logs or install it.")
    from cnnlab import config as config_mod

    errors += config_mod.validate(request.config, tuple(dataset.info.image_shape))
    return errors


# --------------------------------------------------------------------------- events


class EventLog:
    """A thread-safe, bounded, ordered log of training events.

    The training thread appends; any number of readers poll ``since(seq)``. Each event is a
    dict with ``seq`` (1, 2, ...), ``kind`` ("batch", "epoch", "status") and its data. Old
    batch events fall off the end; epoch events are also on disk in history.csv.
    """

    def __init__(
        self, maxlen: int = 5000, listener: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._events: collections.deque[dict[str, Any]] = collections.deque(maxlen=maxlen)
        self._seq = 0
        self._listener = listener
        self.latest_batch: dict[str, Any] | None = None

    def append(self, kind: str, **data: Any) -> dict[str, Any]:
        """Add one event; returns it (with its sequence number)."""
        with self._lock:
            self._seq += 1
            event = {"seq": self._seq, "kind": kind, "time": time.time(), **data}
            self._events.append(event)
            if kind == "batch":
                self.latest_batch = event
        if self._listener is not None:
            self._listener(event)
        return event

    def since(self, seq: int = 0) -> list[dict[str, Any]]:
        """Events with a sequence number above ``seq``, oldest first."""
        with self._lock:
            return [e for e in self._events if e["seq"] > seq]

    def last_seq(self) -> int:
        """The sequence number of the newest event (0 when empty)."""
        with self._lock:
            return self._seq


# --------------------------------------------------------------------------- health checks


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


# --------------------------------------------------------------------------- keras callbacks


@functools.cache
def _callback_classes() -> dict[str, type]:
    """Keras callback classes, built on first use so importing this module stays light."""
    import keras

    class ProgressCallback(keras.callbacks.Callback):
        """Pushes throttled batch progress and per-epoch metrics into an EventLog, writes
        history.csv each epoch, and stops within one batch when ``stop`` is set."""

        def __init__(
            self,
            events: EventLog,
            run_dir: Path | None,
            n_samples: int,
            batch_size: int,
            stop: threading.Event,
            min_interval: float = BATCH_EVENT_INTERVAL_S,
        ) -> None:
            super().__init__()
            self.events, self.run_dir, self.stop = events, run_dir, stop
            self.n_samples, self.batch_size = n_samples, batch_size
            self.min_interval = min_interval
            self.partial_epoch = False  # stop came before the epoch's end
            self.nan_at: tuple[int, int] | None = None
            self.epoch_seconds: list[float] = []

        def on_train_begin(self, logs=None):
            steps = self.params.get("steps") or math.ceil(self.n_samples / self.batch_size)
            self.steps = int(steps)
            self.epochs = int(self.params["epochs"])
            self.t_train = time.perf_counter()

        def on_epoch_begin(self, epoch, logs=None):
            self.t_epoch = self.t_last = time.perf_counter()
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            try:
                self._report(batch, logs)
            finally:  # checked last, so a stop set while reporting ends this very batch
                if self.stop.is_set():
                    self.model.stop_training = True
                    self.partial_epoch = batch + 1 < self.steps

        def _report(self, batch, logs):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(loss) and self.nan_at is None:
                self.nan_at = (self.epoch + 1, batch + 1)
            now = time.perf_counter()
            last = batch + 1 >= self.steps
            if now - self.t_last < self.min_interval and not last:
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
            self.events.append(
                "batch",
                epoch=self.epoch + 1, epochs=self.epochs, batch=done, batches=self.steps,
                loss=_num(loss), accuracy=_num((logs or {}).get("accuracy")),
                samples_per_s=rate, eta_epoch_s=eta_epoch, eta_run_s=eta_run,
                elapsed_s=now - self.t_train,
            )

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
                "loss": _num(logs.get("loss")),
                "accuracy": _num(logs.get("accuracy")),
                "val_loss": _num(logs.get("val_loss")),
                "val_accuracy": _num(logs.get("val_accuracy")),
                "learning_rate": _current_lr(self.model),
                "seconds": round(seconds, 3),
            }
            if self.run_dir is not None:
                runs.append_history(self.run_dir, row)
                runs.update_status(self.run_dir, epochs_done=epoch + 1)
            self.events.append("epoch", epochs=self.epochs, **row)

    class BestCheckpoint(keras.callbacks.ModelCheckpoint):
        """ModelCheckpoint(save_best_only) that ignores an epoch cut short by Stop and can
        start from a previous best (so a resumed run does not overwrite a better model)."""

        def __init__(self, path, progress, best=None):
            # Keras writes the file in place; save beside it and rename, so a server killed
            # mid-save leaves the previous best.keras whole.
            self.final_path = Path(path)
            partial = self.final_path.with_name("best.partial.keras")
            super().__init__(str(partial), monitor="val_loss", save_best_only=True, verbose=0)
            self.progress = progress
            if best is not None:
                self.best = best

        def on_epoch_end(self, epoch, logs=None):
            if not self.progress.partial_epoch:
                super().on_epoch_end(epoch, logs)
                partial = Path(self.filepath)
                if partial.exists():
                    os.replace(partial, self.final_path)

    class StopAwareEarlyStopping(keras.callbacks.EarlyStopping):
        """EarlyStopping that ignores an epoch cut short by Stop."""

        def __init__(self, progress, patience):
            super().__init__(monitor="val_loss", patience=patience,
                             restore_best_weights=True, verbose=0)
            self.progress = progress

        def on_epoch_end(self, epoch, logs=None):
            if not self.progress.partial_epoch:
                super().on_epoch_end(epoch, logs)

    return {
        "ProgressCallback": ProgressCallback,
        "BestCheckpoint": BestCheckpoint,
        "StopAwareEarlyStopping": StopAwareEarlyStopping,
    }


def progress_callback(events: EventLog, **kwargs: Any) -> Any:
    """A ProgressCallback (keras.callbacks.Callback) feeding ``events``; see its class doc."""
    kwargs.setdefault("stop", threading.Event())
    kwargs.setdefault("run_dir", None)
    return _callback_classes()["ProgressCallback"](events, **kwargs)


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def _current_lr(model: Any) -> float | None:
    """The optimizer's learning rate now (schedules evaluated at the current step)."""
    try:
        import keras

        return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    except Exception:  # no optimizer or an exotic schedule: the row just lacks it
        return None


# --------------------------------------------------------------------------- one run


@dataclass
class TrainResult:
    """How a run ended: final status, message, history rows, metrics, wall seconds."""

    status: str
    message: str
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] | None = None
    seconds: float = 0.0


def build_compiled(config: Any, input_shape: tuple[int, int, int], n_classes: int) -> Any:
    """A compiled Keras model for ``config`` (models.build_model + models.compile_model)."""
    from cnnlab import models

    model = models.build_model(config, input_shape, n_classes)
    models.compile_model(model, config)
    return model


def prepare_data(
    dataset: Any, request: TrainRequest
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Training and validation arrays (uint8, stratified split, optional limit)."""
    from cnnlab import datasets

    if request.limit is not None and request.limit < len(dataset.y_train):
        dataset = datasets.subset(dataset, request.limit)
    return datasets.train_val_split(
        dataset.x_train, dataset.y_train, val_fraction=request.val_fraction, seed=SEED
    )


def run_config(request: TrainRequest, dataset: Any) -> dict[str, Any]:
    """The config.json payload: the model config plus everything needed to resume/predict."""
    info = dataset.info
    return {
        "model": request.config.to_dict(),
        "dataset": request.dataset,
        "preset": request.preset,
        "name": request.run_name(),
        "epochs": request.epochs,
        "batch_size": request.batch_size,
        "val_fraction": request.val_fraction,
        "limit": request.limit,
        "mixed_precision": request.mixed_precision,
        "tensorboard": request.tensorboard,
        "seed": SEED,
        "input_shape": list(info.image_shape),
        "n_classes": len(info.class_names),
        "class_names": list(info.class_names),
    }


def tensorboard_dir(run_dir: Path | str) -> Path:
    """Where a run's TensorBoard logs go (``tensorboard --logdir`` this folder)."""
    return Path(run_dir) / "tensorboard"


def request_from_run(run_dir: Path | str) -> TrainRequest:
    """The TrainRequest stored in a run's config.json."""
    from cnnlab import config as config_mod

    cfg = runs.load_config(run_dir)
    return TrainRequest(
        dataset=cfg["dataset"],
        config=config_mod.ModelConfig.from_dict(cfg["model"]),
        epochs=int(cfg["epochs"]),
        batch_size=int(cfg["batch_size"]),
        val_fraction=float(cfg["val_fraction"]),
        limit=cfg.get("limit"),
        preset=cfg.get("preset"),
        name=cfg.get("name", ""),
        mixed_precision=bool(cfg.get("mixed_precision", False)),
        tensorboard=bool(cfg.get("tensorboard", False)),
    )


def train_run(
    request: TrainRequest,
    dataset: Any,
    run_dir: Path,
    events: EventLog | None = None,
    stop: threading.Event | None = None,
    resume: bool = False,
    evaluate: bool = True,
    min_interval: float = BATCH_EVENT_INTERVAL_S,
) -> TrainResult:
    """Train ``request`` on ``dataset`` into the existing ``run_dir``; synchronous.

    Updates status.json as it goes (running → finished | stopped | failed), appends
    history.csv per epoch, keeps the best model in best.keras, then evaluates best.keras on
    the test set into metrics.json. With ``resume`` the model starts from best.keras and
    epochs continue from the saved history length. Errors end the run as "failed" with a
    message; they are not raised.
    """
    events = events or EventLog()
    stop = stop or threading.Event()
    t0 = time.perf_counter()
    try:
        result = _train_run(request, dataset, Path(run_dir), events, stop, resume, evaluate,
                            min_interval)
    except Exception as exc:  # the run must end with a status, whatever went wrong
        result = TrainResult("failed", failure_message(exc, run_dir))
        runs.update_status(run_dir, status="failed", message=result.message)
    result.seconds = time.perf_counter() - t0
    result.history = runs.load_history(run_dir).to_dict("records")
    runs.update_status(run_dir, seconds=round(result.seconds, 2))
    events.append("status", status=result.status, message=result.message)
    return result


def failure_message(exc: Exception, run_dir: Path | str) -> str:
    """The "failed" message for an error that ended a run; a full disk says what to do."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return (f"Training failed: the disk is full (no space left on device) while saving "
                f"into {run_dir}. The epochs done so far are kept in history.csv and the "
                "settings in config.json; free some disk space, then start the run again.")
    return f"Training failed: {type(exc).__name__}: {exc}"


def _train_run(
    request: TrainRequest,
    dataset: Any,
    run_dir: Path,
    events: EventLog,
    stop: threading.Event,
    resume: bool,
    evaluate: bool,
    min_interval: float,
) -> TrainResult:
    import keras

    from cnnlab import device

    info = dataset.info
    dev = device.detect()
    n_classes = len(info.class_names)
    x_tr, y_tr, x_val, y_val = prepare_data(dataset, request)
    best_path = runs.best_model_path(run_dir)

    initial_epoch, prev_best = 0, None
    keras.utils.set_random_seed(SEED)
    if resume:
        history = runs.load_history(run_dir)
        initial_epoch = len(history)
        if "val_loss" in history.columns and history["val_loss"].notna().any():
            prev_best = float(history["val_loss"].min())
        if initial_epoch >= request.epochs:
            msg = (f"Nothing to resume: {initial_epoch} of {request.epochs} epochs are done. "
                   "Start a new run to train longer.")
            runs.update_status(run_dir, status="finished", message=msg)
            return TrainResult("finished", msg)
        model = keras.models.load_model(best_path, safe_mode=True)
    else:
        device.set_mixed_precision(request.mixed_precision)
        try:
            model = build_compiled(request.config, tuple(info.image_shape), n_classes)
        finally:
            device.set_mixed_precision(False)  # layers keep their policy; the global resets
    runs.update_status(
        run_dir, status="running", device=dev.label, params=int(model.count_params()),
        n_train=int(len(y_tr)), n_val=int(len(y_val)),
        message=f"Resumed at epoch {initial_epoch + 1}." if resume else "",
    )
    events.append("status", status="running", device=dev.label)

    cls = _callback_classes()
    progress = cls["ProgressCallback"](
        events, run_dir, len(y_tr), request.batch_size, stop, min_interval
    )
    callbacks = [
        progress,
        keras.callbacks.TerminateOnNaN(),
        cls["BestCheckpoint"](best_path, progress, prev_best),
    ]
    early = None
    if request.config.patience > 0:  # patience 0 means "no early stopping"
        early = cls["StopAwareEarlyStopping"](progress, request.config.patience)
        callbacks.append(early)
    if request.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(tensorboard_dir(run_dir))))
    if not stop.is_set():
        model.fit(
            x_tr, y_tr, validation_data=(x_val, y_val), epochs=request.epochs,
            initial_epoch=initial_epoch, batch_size=request.batch_size, callbacks=callbacks,
            shuffle=True, verbose=0,
        )
    done = len(runs.load_history(run_dir))

    if progress.nan_at is not None:
        ep, b = progress.nan_at
        cfg = request.config
        msg = (f"Loss became NaN at epoch {ep}, batch {b}: training was stopped. The learning "
               f"rate {cfg.learning_rate:g} is too high for {cfg.optimizer}; lower it 10× or "
               "more (1e-3 is a safe start) or add batch norm.")
        runs.update_status(run_dir, status="failed", message=msg)
        return TrainResult("failed", msg)

    if stop.is_set():
        status = "stopped"
        msg = f"Stopped by you after {done} complete epoch(s)."
    elif early is not None and early.stopped_epoch > 0:
        status = "finished"
        msg = (f"Early stopping after epoch {early.stopped_epoch + 1}: validation loss did not "
               f"improve for {request.config.patience} epochs; the best epoch is kept.")
    else:
        status, msg = "finished", f"Finished {done} epoch{'' if done == 1 else 's'}."
    if not best_path.exists():
        model.save(best_path)  # stopped before any epoch ended: keep what there is
        msg += " No epoch finished, so best.keras holds the weights at the stop."

    metrics = None
    if evaluate:
        # Still "running" until metrics.json exists, so pages keep polling until the end.
        runs.update_status(run_dir, status="running",
                           message=msg + " Evaluating the best model on the test set…")
        events.append("status", status="evaluating")
        from cnnlab import evaluate as evaluate_mod

        best = keras.models.load_model(best_path, safe_mode=True)
        metrics = evaluate_mod.evaluate(best, dataset.x_test, dataset.y_test, info.class_names)
        runs.save_metrics(run_dir, metrics)
        msg += f" Test accuracy {metrics['test_accuracy']:.2%}."
    runs.update_status(run_dir, status=status, message=msg)
    return TrainResult(status, msg, metrics=metrics)


# --------------------------------------------------------------------------- jobs


class TrainingJob:
    """One run trained in a daemon thread; readable from any thread while it trains."""

    def __init__(
        self, request: TrainRequest, dataset: Any, run_dir: Path, resume: bool = False,
        on_done: Callable[[TrainingJob], None] | None = None,
    ) -> None:
        self.request, self.dataset, self.run_dir = request, dataset, Path(run_dir)
        self.run_id = self.run_dir.name
        self.resume = resume
        self.events = EventLog()
        self.stop_event = threading.Event()
        self.result: TrainResult | None = None
        self._on_done = on_done
        self._thread: threading.Thread | None = None
        self._finished = threading.Event()

    def start(self) -> None:
        """Start training in a background thread (once)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"train-{self.run_id}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.result = train_run(self.request, self.dataset, self.run_dir, self.events,
                                    self.stop_event, resume=self.resume)
        finally:
            self._finished.set()
            if self._on_done is not None:
                self._on_done(self)

    def stop(self) -> None:
        """Ask the job to stop; training ends within one batch and the run is kept."""
        self.stop_event.set()

    @property
    def started(self) -> bool:
        """Whether the job's thread was started (False while queued)."""
        return self._thread is not None

    def done(self) -> bool:
        """Whether the job has ended (finished, stopped, failed or cancelled)."""
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends or ``timeout`` passes; True when it ended."""
        return self._finished.wait(timeout)

    def snapshot(self) -> dict[str, Any]:
        """What a page needs to draw the job now: status, latest batch, history, health."""
        status = runs.load_status(self.run_dir)
        history = runs.load_history(self.run_dir)
        n_classes = len(self.dataset.info.class_names)
        return {
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
            "status": status,
            "batch": self.events.latest_batch,
            "history": history,
            "warnings": health_warnings(history, n_classes),
            "metrics": runs.load_metrics(self.run_dir) if self.done() else None,
            "done": self.done(),
        }


class JobManager:
    """Runs one TrainingJob at a time per server and queues the rest (status "queued").

    Creating a manager marks runs left "running"/"queued" by a dead server as interrupted.
    """

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = runs.ensure_root(root if root is not None else runs.default_root())
        self.interrupted = runs.mark_interrupted(self.root)
        self._lock = threading.RLock()
        self._queue: collections.deque[TrainingJob] = collections.deque()
        self._jobs: dict[str, TrainingJob] = {}
        self._order: list[str] = []
        self._current: TrainingJob | None = None

    def submit(self, request: TrainRequest, dataset: Any) -> TrainingJob:
        """Create a run for ``request`` and start it now, or queue it behind the running job.

        Raises ValueError with every problem when the request cannot train on ``dataset``.
        """
        errors = request_errors(request, dataset)
        if errors:
            raise ValueError(" ".join(errors))
        run_dir = runs.create_run(
            self.root, request.run_name(), run_config(request, dataset),
            {"status": "queued", "dataset": request.dataset, "preset": request.preset,
             "epochs": request.epochs},
        )
        return self._enqueue(TrainingJob(request, dataset, run_dir, on_done=self._job_done))

    def resume(self, run_dir: Path | str, dataset: Any, epochs: int | None = None) -> TrainingJob:
        """Continue an interrupted or stopped run from its best.keras (queued if busy).

        ``epochs`` is the new total (default: the run's original total).
        """
        run_dir = runs.check_inside(self.root, run_dir)
        existing = self._jobs.get(run_dir.name)
        if existing is not None and not existing.done():
            raise ValueError(f"Run {run_dir.name} is already training or queued.")
        if not runs.best_model_path(run_dir).exists():
            raise ValueError(f"Run {run_dir.name} has no best.keras to resume from; start a "
                             "new run instead.")
        request = request_from_run(run_dir)
        want = tuple(runs.load_config(run_dir).get("input_shape") or ())
        have = tuple(dataset.info.image_shape)
        if want and want != have:
            raise ValueError(
                f"Run {run_dir.name}'s model takes {'×'.join(map(str, want))} images but the "
                f"data set {dataset.info.name!r} has {'×'.join(map(str, have))} images; resume "
                f"it on the data set it was trained on ({request.dataset!r})."
            )
        if epochs is not None:
            request = TrainRequest(**{**asdict_shallow(request), "epochs": epochs})
        runs.update_status(run_dir, status="queued", message="Waiting to resume.",
                           epochs=request.epochs)
        return self._enqueue(TrainingJob(request, dataset, run_dir, resume=True,
                                         on_done=self._job_done))

    def _enqueue(self, job: TrainingJob) -> TrainingJob:
        with self._lock:
            self._jobs[job.run_id] = job
            self._order.append(job.run_id)
            if self._current is None:
                self._current = job
                job.start()
            else:
                self._queue.append(job)
                ahead = len(self._queue)
                runs.update_status(job.run_dir, status="queued",
                                   message=f"Queued: {ahead} run(s) ahead of it.")
        return job

    def _job_done(self, job: TrainingJob) -> None:
        with self._lock:
            if self._current is job:
                self._current = None
            while self._queue and self._current is None:
                nxt = self._queue.popleft()
                if nxt.stop_event.is_set():
                    continue
                self._current = nxt
                nxt.start()

    def stop(self, run_id: str) -> None:
        """Stop a running job within one batch, or cancel a queued one (status "stopped")."""
        with self._lock:
            job = self._jobs.get(run_id)
            if job is None:
                return
            job.stop()
            if job in self._queue:
                self._queue.remove(job)
                runs.update_status(job.run_dir, status="stopped",
                                   message="Cancelled before it started.")
                job.events.append("status", status="stopped")
                job._finished.set()

    def current(self) -> TrainingJob | None:
        """The job training now, if any."""
        return self._current

    def queued(self) -> list[TrainingJob]:
        """Jobs waiting for the current one, in order."""
        with self._lock:
            return list(self._queue)

    def get(self, run_id: str) -> TrainingJob | None:
        """A job this server started (running, queued or done), by run id."""
        return self._jobs.get(run_id)

    def latest(self) -> TrainingJob | None:
        """The most recently submitted job of this server, if any."""
        with self._lock:
            return self._jobs[self._order[-1]] if self._order else None

    def busy(self) -> bool:
        """Whether a job is training or waiting."""
        return self._current is not None or bool(self._queue)


def asdict_shallow(request: TrainRequest) -> dict[str, Any]:
    """The request's fields as a dict without deep-copying the config."""
    return {f: getattr(request, f) for f in request.__dataclass_fields__}


def history_dict(rows: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """History rows as ``{"loss": [...], "val_loss": [...], ...}`` (the CLI's shape)."""
    keys = [k for k in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate",
                        "seconds") if rows and k in rows[0]]
    return {k: [_num(r[k]) for r in rows] for k in keys}

