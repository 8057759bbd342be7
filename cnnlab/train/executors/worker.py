"""What runs inside a worker (a local process or a Ray actor): one RunSpec, start to end.

The worker sets its environment before Keras is imported (GPU pinning, thread counts),
loads the data set from its reference, trains with ``training.train_run`` (record=False:
the server records the events) and watches its own memory against the budget. A spec in
mode "score" evaluates a challenge submission's model on the hidden split instead
(``score_submission``; cnnlab.train.scoring prepares it).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from cnnlab.data import datasets, shared_sets
from cnnlab.runs.store import RunStatus
from cnnlab.train import budgets as budgets_mod
from cnnlab.train import callbacks, training
from cnnlab.train import events as ev
from cnnlab.train.executors import DatasetRef, RunSpec

MEMORY_POLL_S = 0.25
MEMORY_GRACE_S = 20.0  # after a memory stop, how long the run may take to end cleanly
EXIT_OVER_MEMORY = 70


def rss_bytes() -> int:
    """This process's resident memory now (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class MemoryWatch(threading.Thread):
    """Stops the run when the worker's memory passes the budget; ends the process if the
    run does not stop within MEMORY_GRACE_S (a single step can be that long)."""

    def __init__(self, limit_bytes: int, stop: callbacks.StopFlag, emit: ev.Emit) -> None:
        super().__init__(name="memory-watch", daemon=True)
        self.limit, self.stop, self.emit = limit_bytes, stop, emit
        self.finished = threading.Event()
        self.peak = 0

    def run(self) -> None:
        over_since = None
        while not self.finished.wait(MEMORY_POLL_S):
            rss = rss_bytes()
            self.peak = max(self.peak, rss)
            if rss <= self.limit or over_since is not None:
                if over_since is not None and time.monotonic() - over_since > MEMORY_GRACE_S:
                    self.emit(ev.make("done", status=RunStatus.FAILED, message=self.stop.detail))
                    os._exit(EXIT_OVER_MEMORY)
                continue
            over_since = time.monotonic()
            mb = budgets_mod.MB
            self.stop.set("memory", (
                f"Stopped: the training process used {rss / mb:,.0f} MB of memory, above this "
                f"server's limit of {self.limit / mb:,.0f} MB per run. Use a smaller batch "
                "size, a smaller model or fewer training samples; the epochs done so far "
                "and the best model are kept."))


def load_dataset(ref: DatasetRef) -> datasets.Dataset:
    """The data set a reference names: an upload's .npz, a class data set (memory-mapped
    from its decoded cache, shared with every process on the machine), else the registry."""
    if ref.npz:
        return datasets.from_npz(ref.npz)
    if shared_sets.is_shared(ref.name):
        return shared_sets.load(ref.name)
    return datasets.load(ref.name)


def execute(spec: RunSpec, work_dir: Path, emit: ev.Emit, stop: callbacks.StopFlag,
            dataset: datasets.Dataset | None = None) -> None:
    """Train ``spec`` with model files in ``work_dir``; every event (``done`` last) to ``emit``.

    Never raises: a failure to even start is a ``done`` event with status "failed".
    """
    os.environ.update(spec.env)
    budgets = budgets_mod.Budgets.from_dict(spec.budgets)
    watch = MemoryWatch(budgets.max_worker_memory_mb * budgets_mod.MB, stop, emit)
    watch.start()
    try:
        if spec.mode == "score":
            hidden = dataset if dataset is not None else load_dataset(spec.dataset)
            score_submission(spec, work_dir, hidden, emit)
            return
        request = training.TrainRequest.from_dict(spec.request)
        if dataset is None:
            dataset = load_dataset(spec.dataset)
        init = work_dir / training.INIT_FILE if spec.mode == "fine-tune" else None
        training.train_run(request, dataset, work_dir, emit, stop, resume=spec.mode == "resume",
                           init_from=init, budgets=budgets, record=False)
    except Exception as exc:  # before train_run's own guard: bad spec, unloadable data
        emit(ev.make("done", status=RunStatus.FAILED, message=training.failure_message(exc)))
    finally:
        watch.finished.set()


def score_submission(spec: RunSpec, work_dir: Path, hidden: datasets.Dataset,
                     emit: ev.Emit) -> None:
    """Evaluate ``work_dir``'s best.keras on the hidden split (``hidden``'s test images) and
    send the score as the ``done`` event: accuracy, loss, the number of images and the
    confusion matrix, never an image or a per-image label. The model is loaded in safe
    mode and its size checked again (a worker never trusts the server's check alone)."""
    import keras
    import numpy as np

    from cnnlab.model import backbones
    from cnnlab.runs import evaluate

    backbones.register()  # a pretrained-backbone run's input layer is a cnnlab class
    model = keras.models.load_model(work_dir / "best.keras", safe_mode=True, compile=False)
    params, limit = int(model.count_params()), spec.request.get("max_params")
    if limit is not None and params > int(limit):
        emit(ev.make("done", status=RunStatus.FAILED,
                     message=f"Refused by the worker: the model has {params:,} parameters; "
                             f"the challenge allows at most {int(limit):,}."))
        return
    metrics = evaluate.evaluate(model, hidden.x_test, np.asarray(hidden.y_test),
                                spec.request["class_names"])
    emit(ev.make("done", status=RunStatus.FINISHED, message="", score={
        "accuracy": metrics["test_accuracy"], "loss": metrics["test_loss"],
        "n": metrics["n_test"], "confusion": metrics["confusion"]}))
