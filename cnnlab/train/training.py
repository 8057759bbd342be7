"""One training run, synchronously, in the calling process: build, fit, checkpoint, evaluate.

``train_run`` is what every worker (a local process, a Ray actor) and the CLI execute. It
writes model files (best.keras, the resumable last.keras + checkpoint.json, TensorBoard
logs) into a work directory and reports everything else as events (cnnlab.train.events): the
server turns those into status.json, history.csv and metrics.json (``runs.record``), so the
run store has one writer. In one process (CLI, benches, tests) ``record=True`` applies the
events to the run directory as they happen.

A backbone model (``config.backbone``) trains in two phases in the same run, with one
history, best checkpoint and Stop: phase 1 fits the head on the frozen backbone for
``fit.epochs``; phase 2 (``fine_tunes``) unfreezes its top ``config.unfreeze`` layers and
recompiles at a lower learning rate for ``fit.fine_tune_epochs`` more.

Data stay uint8: arrays go to ``model.fit`` as they are, batches are sliced per step and the
model's own Rescaling layer turns them into floats, so no float copy of the set is made.
Keras is imported inside functions only.
"""

from __future__ import annotations

import errno
import importlib.util
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab.model import fit_settings
from cnnlab.model.fit_settings import FitSettings
from cnnlab.runs import predictions
from cnnlab.runs import store as runs
from cnnlab.runs.store import RunStatus
from cnnlab.train import budgets as budgets_mod
from cnnlab.train import callbacks
from cnnlab.train import events as ev

if TYPE_CHECKING:
    import keras

    from cnnlab.data.datasets import Dataset
    from cnnlab.model.config import ModelConfig
    from cnnlab.train.device import DeviceInfo

SEED = 42
DEFAULT_VAL_FRACTION = 0.1
INIT_FILE = "init.keras"  # the starting weights of a fine-tuned run (its parent's best)
GRAPHS, LAYERS = "graphs", "layers"  # how a run computes in bfloat16 (bfloat16_mode)


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class TrainRequest:
    """What to train: a data set name, a model config and the fit settings."""

    dataset: str
    config: ModelConfig
    fit: FitSettings = FitSettings()
    val_fraction: float = 0.1
    limit: int | None = None
    preset: str | None = None
    name: str = ""
    mixed_precision: bool = False
    tensorboard: bool = False  # also write TensorBoard logs to <run>/tensorboard
    # A backbone's starting weights: None (random), "imagenet" or a weights file's path.
    weights: str | None = None
    # Seeds the validation split and Keras (weights, dropout, augmentation, shuffling).
    seed: int = SEED

    def run_name(self) -> str:
        """The human name of the run (used in its id)."""
        return self.name or f"{self.preset or 'custom'}-{self.dataset}"

    def to_dict(self) -> dict[str, Any]:
        """The request as plain JSON-able data (the model config as a dict)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["config"] = self.config.to_dict()
        out["fit"] = self.fit.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainRequest:
        """The inverse of ``to_dict``."""
        from cnnlab.model.config import ModelConfig

        return cls(**{**data, "config": ModelConfig.from_dict(data["config"]),
                      "fit": FitSettings.from_dict(data["fit"])})


def request_errors(
    request: TrainRequest, dataset: Dataset, budgets: budgets_mod.Budgets | None = None,
    gpu: bool = False,
) -> list[str]:
    """Everything wrong with ``request`` for ``dataset`` as sentences (empty = can train).

    ``budgets`` are the server's limits (default: budgets.load()); ``gpu`` says whether the
    workers train on a GPU (mixed precision needs one).
    """
    from cnnlab.model import config as config_mod

    budgets = budgets or budgets_mod.load()
    info = dataset.info
    errors: list[str] = []
    n_train = len(dataset.y_train)
    if request.limit is not None:
        if request.limit < 2 * len(info.class_names):
            errors.append(
                f"Limit {request.limit} is too small: use at least "
                f"{2 * len(info.class_names)} samples (two per class) or no limit."
            )
        n_train = min(n_train, request.limit)
    if request.name:
        try:
            runs.clean_run_name(request.name)
        except runs.RunPathError as exc:
            errors.append(str(exc))
    fit = request.fit
    if fit.epochs < 1:
        errors.append(f"Epochs is {fit.epochs}; choose between 1 and {budgets.max_epochs}.")
    if fit.patience < 0:
        errors.append(f"Early-stopping patience is {fit.patience}; use 0 (off) or more epochs.")
    if not 0.0 < request.val_fraction <= 0.5:
        errors.append(
            f"Validation split is {request.val_fraction}; choose a fraction in (0, 0.5]."
        )
    n_fit = fit_settings.n_fit(n_train, request.val_fraction)
    if fit.batch_size < 1 or fit.batch_size > max(n_fit, 1):
        errors.append(
            f"Batch size {fit.batch_size} does not fit: {n_fit} training samples remain "
            f"after the validation split; choose a batch size between 1 and {max(n_fit, 1)} "
            f"({fit_settings.batch_size_for(fit.batch_size, max(n_fit, 1))} suits "
            "this data set)."
        )
    if not 0 <= request.seed < 2**32:  # what numpy's and Keras' generators take
        errors.append(f"Seed is {request.seed}; choose a whole number from 0 to {2**32 - 1}.")
    if request.mixed_precision and not gpu:
        errors.append("Mixed precision needs a GPU and this server trains on CPU; untick it.")
    if request.tensorboard and importlib.util.find_spec("tensorboard") is None:
        errors.append("TensorBoard logs need the tensorboard package (pip install tensorboard); "
                      "untick TensorBoard logs or install it.")
    if fit.fine_tune_epochs < 0:
        errors.append(f"Fine-tuning epochs is {fit.fine_tune_epochs}; use 0 (no phase 2) or "
                      "more epochs.")
    if fit.fine_tune_epochs > 0 and not (request.config.backbone and request.config.unfreeze > 0):
        errors.append(f"Fine-tuning epochs is {fit.fine_tune_epochs} but no backbone layers are "
                      "unfrozen; choose a backbone and unfreeze 1 or more of its top layers, or "
                      "set fine-tuning epochs to 0.")
    if request.weights is not None:
        from cnnlab.model import backbones

        problem = backbones.weights_problem(request.config.backbone, request.weights)
        if problem:
            errors.append(problem)
    shape = tuple(info.image_shape)
    errors += config_mod.validate(request.config, shape)
    errors += budgets_mod.problems(budgets, request.config, shape, len(info.class_names),
                                   total_epochs(request), max(fit.batch_size, 1))
    return errors


def default_request(dataset: Dataset, preset: str | None = None, limit: int | None = None,
                    config: tuple[ModelConfig, FitSettings] | None = None) -> TrainRequest:
    """The run the Train page offers for ``dataset`` when nothing is changed: the data
    set's own preset (own-images for the user's pictures) or ``config`` (a model and its
    fit settings), with a batch size that fits the images left after the validation split
    and epochs sized to them where the own-images preset asks for it."""
    from cnnlab.model import config as config_mod

    if config is None:
        preset = preset or config_mod.default_preset(dataset.info.name)
        chosen = config_mod.PRESETS[preset]
        config = chosen.config, chosen.fit
    model, fit = config
    n_images = fit_settings.n_fit(len(dataset.y_train), DEFAULT_VAL_FRACTION, limit)
    fit = fit_settings.defaults_for(fit, preset == config_mod.OWN_IMAGES, n_images)
    return TrainRequest(dataset=dataset.info.name, config=model, fit=fit,
                        val_fraction=DEFAULT_VAL_FRACTION, limit=limit, preset=preset)


def run_config(request: TrainRequest, dataset: Dataset, **extra: Any) -> dict[str, Any]:
    """The config.json payload: the model config plus everything needed to resume/predict.

    ``extra`` adds fixed facts such as ``owner`` or ``parent``.
    """
    info = dataset.info
    return {
        "model": request.config.to_dict(),
        "dataset": request.dataset,
        "preset": request.preset,
        "name": request.run_name(),
        "fit": request.fit.to_dict(),
        "val_fraction": request.val_fraction,
        "limit": request.limit,
        "mixed_precision": request.mixed_precision,
        "tensorboard": request.tensorboard,
        "weights": request.weights,
        "seed": request.seed,
        "input_shape": list(info.image_shape),
        "n_classes": len(info.class_names),
        "class_names": list(info.class_names),
        **extra,
    }


def request_from_run(run_dir: Path | str) -> TrainRequest:
    """The TrainRequest stored in a run's config.json."""
    return request_from_config(runs.load_config(run_dir))


def request_from_config(cfg: dict[str, Any]) -> TrainRequest:
    """The TrainRequest of a run's config.json contents (``runs.load_config``); raises
    KeyError, TypeError or ValueError for a damaged one."""
    from cnnlab.model import config as config_mod

    return TrainRequest(
        dataset=cfg["dataset"],
        config=config_mod.ModelConfig.from_dict(cfg["model"]),
        fit=FitSettings.from_dict(cfg["fit"]),
        val_fraction=float(cfg["val_fraction"]),
        limit=cfg.get("limit"),
        preset=cfg.get("preset"),
        name=cfg.get("name", ""),
        mixed_precision=bool(cfg.get("mixed_precision", False)),
        tensorboard=bool(cfg.get("tensorboard", False)),
        weights=cfg.get("weights"),
        seed=int(cfg.get("seed", SEED)),
    )


def tensorboard_dir(run_dir: Path | str) -> Path:
    """Where a run's TensorBoard logs go (``tensorboard --logdir`` this folder)."""
    return Path(run_dir) / "tensorboard"


def bfloat16_mode(config: ModelConfig, dev: DeviceInfo) -> str:
    """How a run of ``config`` on ``dev`` computes in bfloat16: "" where it does not (no
    native bfloat16, or a backbone), GRAPHS for models without batch normalization, LAYERS
    for models with it.

    GRAPHS is oneDNN's rewrite of the graphs ``fit`` runs (device.bfloat16_graphs): quick
    trains 1.3-1.5× faster (bench/throughput.py). It also rewrites batch norm, which lost
    accuracy (best-mnist 98.68 vs 99.44 %, and no faster). LAYERS is Keras' mixed_bfloat16
    policy, whose batch norm computes in float32: best-mnist (then with max pools) trained
    its 12 epochs in 512 s instead of 785 s to the same test accuracy (99.48 vs 99.44 %,
    2 Zen 4 cores, one seed); over three seeds today's best-mnist measured 99.57 % in it
    and 99.64 % in float32 (config.py; float32 on a CPU without bfloat16), so its speed
    may cost about 0.07 points. Either way weights stay float32 and best.keras is saved
    in float32.
    """
    if not dev.bfloat16 or config.backbone:
        return ""
    norm = any(b.batch_norm for b in config.blocks) or any(d.batch_norm for d in config.dense)
    return LAYERS if norm else GRAPHS


def compute_policy(request: TrainRequest, dev: DeviceInfo) -> str:
    """Keras' dtype policy for the layers of ``request``'s model on ``dev``."""
    if request.mixed_precision:
        return "mixed_float16"
    return "mixed_bfloat16" if bfloat16_mode(request.config, dev) == LAYERS else "float32"


def build_compiled(config: ModelConfig, input_shape: tuple[int, ...], n_classes: int,
                   weights: str | None = None, batch_size: int = 1,
                   steps: int = 1, fused_batch_norm: bool = True) -> keras.Model:
    """A compiled Keras model for ``config`` (models.build_model + models.compile_model);
    ``weights`` are a backbone's starting weights (its phase 1: the backbone frozen);
    ``batch_size`` and ``steps`` per epoch size its steps per execution
    (fit_settings.steps_per_execution); ``fused_batch_norm`` False builds Keras' own
    batch norm (bench/batch_norm.py compares the two)."""
    from cnnlab.model import models

    model = models.build_model(config, input_shape, n_classes, weights=weights,
                               fused_batch_norm=fused_batch_norm)
    flops = models.forward_flops(config, input_shape, n_classes)
    models.compile_model(model, config, steps_per_execution=fit_settings.steps_per_execution(
        flops, batch_size, steps))
    return model


def start_phase2(model: keras.Model, config: ModelConfig) -> int:
    """Unfreeze the top ``config.unfreeze`` layers of ``model``'s backbone and recompile with
    a fresh optimizer at learning_rate × fine_tune_lr_factor; returns the backbone's
    trainable parameters."""
    from cnnlab.model import backbones, models

    trainable = backbones.unfreeze_top(model.get_layer("backbone"), config.unfreeze)
    # A change of `trainable` takes effect only when compiled again; the lower rate keeps
    # the first large steps from wrecking the pretrained features.
    models.compile_model(model, config, lr_factor=config.fine_tune_lr_factor)
    return trainable


def prepare_data(
    dataset: Dataset, request: TrainRequest
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Training and validation arrays (uint8, stratified split, optional limit)."""
    from cnnlab.data import datasets

    if request.limit is not None and request.limit < len(dataset.y_train):
        dataset = datasets.subset(dataset, request.limit)
    return datasets.train_val_split(
        dataset.x_train, dataset.y_train, val_fraction=request.val_fraction, seed=request.seed
    )


# --------------------------------------------------------------------------- one run


@dataclass
class TrainResult:
    """How a run ended: final status, message, history rows, metrics, wall seconds."""

    status: str
    message: str
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] | None = None
    seconds: float = 0.0


class RunRefused(Exception):
    """The worker refuses the run before training (over budget, nothing to resume)."""


def train_run(
    request: TrainRequest,
    dataset: Dataset,
    run_dir: Path | str,
    emit: ev.Emit | None = None,
    stop: callbacks.StopFlag | None = None,
    *,
    resume: bool = False,
    init_from: Path | str | None = None,
    evaluate: bool = True,
    budgets: budgets_mod.Budgets | None = None,
    record: bool = True,
    min_interval: float = ev.BATCH_EVENT_INTERVAL_S,
) -> TrainResult:
    """Train ``request`` on ``dataset`` with model files in ``run_dir``; synchronous.

    Emits status → batch/epoch … → metrics → done events to ``emit``; with ``record`` they
    are also applied to ``run_dir``'s status.json, history.csv and metrics.json. Every
    whole epoch leaves best.keras (when validation loss improved) and the resumable
    last.keras + checkpoint.json. ``resume`` continues from that checkpoint: same weights,
    optimizer state (so learning-rate schedules continue), epoch count and phase. ``init_from``
    starts a new run from another model's weights (fine-tuning). Errors end the run as
    "failed" with a message; they are not raised.
    """
    run_dir = Path(run_dir)
    stop = stop or callbacks.StopFlag()
    budgets = budgets or budgets_mod.load()

    def send(event: ev.Event) -> None:
        if record:
            runs.record(run_dir, event)
        if emit is not None:
            emit(event)

    t0 = time.perf_counter()
    try:
        result = _train_run(request, dataset, run_dir, send, stop, resume, init_from,
                            evaluate, budgets, min_interval)
    except RunRefused as exc:
        result = TrainResult(RunStatus.FAILED, str(exc))
    except Exception as exc:  # the run must end with a status, whatever went wrong
        result = TrainResult(RunStatus.FAILED, failure_message(exc))
    result.seconds = time.perf_counter() - t0
    send(ev.make("done", status=result.status, message=result.message,
                 seconds=round(result.seconds, 2)))
    return result


def failure_message(exc: BaseException) -> str:
    """The "failed" message for an error that ended a run; a full disk says what to do."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return ("Training failed: the disk is full (no space left on device) while saving "
                "the run. The epochs done so far are kept in history.csv and the settings "
                "in config.json; free some disk space, then start the run again.")
    return f"Training failed: {type(exc).__name__}: {exc}"


def _starting_point(
    request: TrainRequest, run_dir: Path, resume: bool, init_from: Path | str | None,
    input_shape: tuple[int, ...], n_classes: int, steps: int, policy: str,
) -> tuple[Any, list[dict[str, Any]], int]:
    """The model to fit (``steps`` per epoch; its layers in dtype ``policy``), the history
    rows already done (a resumed run's) and the phase its weights are in (1: a backbone
    frozen or no backbone, 2: fine-tuning)."""
    import keras

    from cnnlab.model import backbones
    from cnnlab.train import device

    if resume:
        state = callbacks.read_checkpoint(run_dir)
        if state is None:
            raise RunRefused(
                "Nothing to resume from: this run has no resumable checkpoint (last.keras "
                "and checkpoint.json). Fine-tune from its best model instead.")
        total = total_epochs(request)
        if state["epoch"] >= total:
            raise RunRefused(
                f"Nothing to resume: {state['epoch']} of {total} epochs are done. "
                "Resume with more epochs, or fine-tune from its best model.")
        if request.config.backbone:
            backbones.register()  # its input layer is a cnnlab class
        # compile=True restores the optimizer with its variables (iterations included), and
        # the layers keep their trainable flags: a phase-2 checkpoint resumes in phase 2.
        model = keras.models.load_model(run_dir / callbacks.LAST_FILE, safe_mode=True)
        return model, list(state["history"]), int(state.get("phase", 1))
    # A fine-tuned run's weights come from init_from: no need to fetch the backbone's.
    weights = request.weights if init_from is None else None
    with device.dtype_policy(policy):
        model = build_compiled(request.config, input_shape, n_classes, weights,
                               request.fit.batch_size, steps)
    if init_from is not None:
        if request.config.backbone:
            backbones.register()
        start = keras.models.load_model(init_from, safe_mode=True, compile=False)
        model.set_weights(start.get_weights())
    return model, [], 1


def _train_run(
    request: TrainRequest,
    dataset: Dataset,
    run_dir: Path,
    send: ev.Emit,
    stop: callbacks.StopFlag,
    resume: bool,
    init_from: Path | str | None,
    evaluate: bool,
    budgets: budgets_mod.Budgets,
    min_interval: float,
) -> TrainResult:
    import keras

    from cnnlab.model import models
    from cnnlab.model.batch_norm import FusedBatchNormalization  # also registers it for last.keras
    from cnnlab.train import device

    info = dataset.info
    shape, n_classes = tuple(info.image_shape), len(info.class_names)
    fit = request.fit
    over = budgets_mod.problems(budgets, request.config, shape, n_classes,
                                total_epochs(request), fit.batch_size)
    if over:  # checked again here: a worker never trusts the server's check alone
        raise RunRefused("Refused by the worker: " + " ".join(over))
    deadline = time.monotonic() + budgets.max_run_minutes * 60
    dev = device.detect()
    bf16 = bfloat16_mode(request.config, dev)
    policy = compute_policy(request, dev)
    x_tr, y_tr, x_val, y_val = prepare_data(dataset, request)
    best_path = runs.best_model_path(run_dir)

    steps = fit_settings.steps_per_epoch(len(y_tr), fit.batch_size)
    keras.utils.set_random_seed(request.seed)
    model, previous, phase = _starting_point(request, run_dir, resume, init_from, shape,
                                             n_classes, steps, policy)
    initial_epoch = len(previous)
    losses = [r["val_loss"] for r in previous if r.get("val_loss") is not None]
    backbone = request.config.backbone
    if resume:
        message = f"Resumed at epoch {initial_epoch + 1}."
    elif backbone:
        message = f"Phase 1: training the head; the {backbone} backbone is frozen."
    else:
        message = ""
    send(ev.make(
        "status", status=RunStatus.RUNNING, params=int(model.count_params()),
        device=dev.label + (", bfloat16 compute" if bf16 else ""),
        n_train=int(len(y_tr)), n_val=int(len(y_val)), epochs_done=initial_epoch,
        message=message,
        # history.csv from the checkpoint: a run killed between the checkpoint's write and
        # its history row's would otherwise resume with that epoch's row missing.
        **({"history": previous} if resume else {}),
    ))

    cls = callbacks.classes()
    # The same few test images every epoch: the Train page's live strip of predictions.
    sample_idx = predictions.sample_indices(dataset.y_test)
    total = total_epochs(request)
    progress = cls["ProgressCallback"](send, len(y_tr), fit.batch_size, stop, run_dir,
                                       previous, deadline, min_interval,
                                       samples=(sample_idx, dataset.x_test[sample_idx]),
                                       total_epochs=total, phase=phase if backbone else None)
    # best.keras predicts in float32 with Keras' own layers wherever it is loaded, whatever
    # the run computed in and with (uncompiled: it is for prediction and fine-tuning;
    # last.keras resumes the run).
    fused = any(isinstance(layer, FusedBatchNormalization) for layer in model.layers)
    twin = (models.build_model(request.config, shape, n_classes)
            if policy == "mixed_bfloat16" or fused else None)
    best = cls["BestCheckpoint"](best_path, progress, min(losses) if losses else None, twin)
    # Patience counts epochs; on a small data set an epoch is a few steps, so it is scaled
    # to at least fit_settings.PATIENCE_STEPS steps, and no stop comes before MIN_STEPS.
    patience = fit_settings.patience_for(fit.patience, steps)
    board = (keras.callbacks.TensorBoard(log_dir=str(tensorboard_dir(run_dir)))
             if request.tensorboard else None)

    def fit_to(epochs: int, phase_start: int) -> Any:
        """One ``model.fit`` from the epochs done up to ``epochs``; returns its early
        stopping callback (None when off). Best checkpoint and progress go on across
        phases; early stopping starts afresh at ``phase_start``."""
        early = None
        callbacks_: list[Any] = [keras.callbacks.TerminateOnNaN(), best]
        if patience > 0:  # patience 0 means "no early stopping"
            early = cls["StopAwareEarlyStopping"](
                progress, patience, progress.rows,
                phase_start + fit_settings.first_stop_epoch(steps), phase_start)
            callbacks_.append(early)
        if board is not None:
            callbacks_.append(board)
        # Last, so an epoch is reported only once its best.keras and checkpoint are on disk.
        callbacks_.append(progress)
        with device.bfloat16_graphs(bf16 == GRAPHS):
            model.fit(
                x_tr, y_tr, validation_data=(x_val, y_val), epochs=epochs,
                initial_epoch=len(progress.rows), batch_size=fit.batch_size,
                callbacks=callbacks_, shuffle=True, verbose=0,
            )
        return early

    early = None
    if phase == 1 and initial_epoch < fit.epochs and not stop.is_set():
        early = fit_to(fit.epochs, 0)
    # Phase 2 follows phase 1's last epoch, or its early stop (the head has settled).
    if (fine_tunes(request) and len(progress.rows) < total and not stop.is_set()
            and progress.nan_at is None):
        if phase == 1:
            trainable = start_phase2(model, request.config)
            progress.phase = 2
            lr = request.config.learning_rate * request.config.fine_tune_lr_factor
            send(ev.make("status", status=RunStatus.RUNNING, message=(
                f"Phase 2 from epoch {len(progress.rows) + 1}: fine-tuning the top "
                f"{request.config.unfreeze} layers of {backbone} ({trainable:,} parameters) "
                f"at learning rate {lr:g}.")))
        starts = [i for i, r in enumerate(progress.rows) if r.get("phase") == 2]
        early = fit_to(total, starts[0] if starts else len(progress.rows))
    done = len(progress.rows)
    history = progress.rows

    if progress.nan_at is not None:
        ep, b = progress.nan_at
        cfg = request.config
        if (ep, b) == (1, 1):  # measured before the first update: not the learning rate
            msg = ("Loss became NaN at epoch 1, batch 1, before training had changed any "
                   "weight: the starting weights hold NaN or infinity. Start from fresh "
                   "weights or another run's best model.")
        else:
            msg = (f"Loss became NaN at epoch {ep}, batch {b}: training was stopped. The "
                   f"learning rate {cfg.learning_rate:g} is too high for {cfg.optimizer}; "
                   "lower it 10× or more (1e-3 is a safe start) or add batch norm.")
        return TrainResult(RunStatus.FAILED, msg, history)

    reason = stop.reason
    if reason == "memory":
        return TrainResult(RunStatus.FAILED, stop.detail, history)
    if reason == "time limit":
        status = RunStatus.TIME_LIMIT
        msg = (f"Stopped at this server's time limit of {budgets.max_run_minutes:g} minutes "
               f"per run, after {done} complete epoch(s); the history and best model are kept.")
    elif reason is not None:
        status, msg = RunStatus.STOPPED, f"Stopped by you after {done} complete epoch(s)."
    elif early is not None and early.stopped_epoch > 0:
        status = RunStatus.FINISHED
        msg = (f"Early stopping after epoch {early.stopped_epoch + 1}: validation loss did not "
               f"improve for {patience} epochs; the best epoch is kept.")
    else:
        status, msg = RunStatus.FINISHED, f"Finished {done} epoch{'' if done == 1 else 's'}."
    if not best_path.exists():
        best.save(model)  # stopped before any epoch ended: keep what there is
        msg += " No epoch finished, so best.keras holds the weights at the stop."

    metrics = None
    if evaluate:
        send(ev.make("status", status="evaluating",
                     message=msg + " Evaluating the best model on the test set…"))
        from cnnlab.runs import evaluate as evaluate_mod

        best = keras.models.load_model(best_path, safe_mode=True)
        probs = evaluate_mod.probabilities(best, dataset.x_test)
        metrics = evaluate_mod.metrics_from_probs(probs, dataset.y_test, info.class_names)
        # Written before the metrics event: a remote worker ships new files ahead of it.
        predictions.save(run_dir, predictions.Predictions.from_probs(probs, dataset.y_test))
        send(ev.make("metrics", metrics=metrics))
        msg += f" Test accuracy {metrics['test_accuracy']:.2%}."
    return TrainResult(status, msg, history, metrics=metrics)


def fine_tunes(request: TrainRequest) -> bool:
    """Whether the run has a phase 2 (a backbone with layers to unfreeze and epochs for it)."""
    cfg = request.config
    return bool(cfg.backbone) and cfg.unfreeze > 0 and request.fit.fine_tune_epochs > 0


def total_epochs(request: TrainRequest) -> int:
    """The run's epochs: phase 1's, plus phase 2's when it has one."""
    return request.fit.epochs + (request.fit.fine_tune_epochs if fine_tunes(request) else 0)


def with_epochs(request: TrainRequest, epochs: int) -> TrainRequest:
    """``request`` with a new epoch total. With a backbone that unfreezes layers, epochs
    beyond phase 1's are phase 2's (fine-tuning); a total within phase 1 drops phase 2."""
    fit, cfg = request.fit, request.config
    if cfg.backbone and cfg.unfreeze > 0 and epochs > fit.epochs:
        return replace(request, fit=replace(fit, fine_tune_epochs=epochs - fit.epochs))
    return replace(request, fit=replace(fit, epochs=epochs, fine_tune_epochs=0))


def history_dict(rows: Sequence[dict[str, Any]]) -> dict[str, list[float | None]]:
    """History rows as ``{"loss": [...], "val_loss": [...], ...}`` (the CLI's shape)."""
    keys = [k for k in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate",
                        "seconds") if rows and k in rows[0]]
    return {k: [ev.num(r[k]) for r in rows] for k in keys}
