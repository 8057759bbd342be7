"""Teach a model its mistakes: fine-tune a run on a user's corrections, then compare.

A fine-tune on corrections alone would forget the rest of the data set within an epoch,
so the training set mixes the corrections (repeated, so they weigh in every epoch) with a
replay sample of the original training images; the test set is the original one, so the
parent's and the child's test accuracy compare directly. The derived set is not in the
registry, so the engine ships it to the worker as an .npz like an upload
(``Engine._dataset_ref``). The child run keeps the corrections it learnt from
(``corrections.npz``), so before/after is measured on exactly those, even if the user
deletes or adds some later.

Keras is imported only by ``before_after`` (to load the two models).
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab.data.datasets import Dataset
from cnnlab.people.accounts import LOCAL_USER, User
from cnnlab.runs import corrections
from cnnlab.runs import store as runs

if TYPE_CHECKING:
    from cnnlab.train.jobs import Engine, Job

REPLAY = 1000  # original training images replayed beside the corrections
SHARE = 0.25  # the corrections' share of the mixed training set, after repeating
MAX_REPEAT = 50  # a single correction is not copied more often than this
SEED = 7
CORRECTIONS_FILE = "corrections.npz"  # in the child run: what it was taught


def mixed_dataset(original: Dataset, x_corr: np.ndarray, y_corr: np.ndarray,
                  replay: int = REPLAY, share: float = SHARE, seed: int = SEED) -> Dataset:
    """``original``'s test set, and a training set of the corrections repeated to about
    ``share`` of it plus ``replay`` random original training images (all when fewer).

    The result is named ``<original>+corrections``: not a registry name, so it travels to
    the worker as data, never reloaded by name.
    """
    n = len(y_corr)
    if n == 0:
        raise corrections.CorrectionsError("There are no corrections to learn from: save some "
                                           "first (\"Wrong? It's a …\").")
    if tuple(x_corr.shape[1:]) != tuple(original.info.image_shape):
        raise corrections.CorrectionsError(
            f"The corrections are {'×'.join(map(str, x_corr.shape[1:]))} images but "
            f"{original.info.name!r} has {'×'.join(map(str, original.info.image_shape))}.")
    rng = np.random.default_rng(seed)
    keep = rng.permutation(len(original.y_train))[:replay]
    repeat = int(np.clip(round(share * len(keep) / ((1 - share) * n)), 1, MAX_REPEAT))
    x = np.concatenate([np.repeat(x_corr, repeat, axis=0), original.x_train[keep]])
    y = np.concatenate([np.repeat(y_corr, repeat), original.y_train[keep]])
    y = y.astype(original.y_train.dtype)
    order = rng.permutation(len(y))
    info = replace(original.info, name=f"{original.info.name}+corrections",
                   title=f"{original.info.title} + your corrections")
    return Dataset(info, x[order], y[order], original.x_test, original.y_test)


def fine_tune(engine: Engine, parent_dir: Path | str, original: Dataset,
              user: User = LOCAL_USER, epochs: int = 3) -> Job:
    """Queue a short run from ``parent_dir``'s best model on ``user``'s corrections for the
    run's data set mixed with a replay of ``original`` (the data set it was trained on).

    The engine checks ownership (only the parent's owner or a teacher) and budgets, and
    records ``parent`` and ``corrections`` (how many) in the child's config.json.
    """
    dataset = str(runs.load_config(parent_dir).get("dataset") or original.info.name)
    x_corr, y_corr = corrections.load_arrays(engine.root, user, dataset)
    mixed = mixed_dataset(original, x_corr, y_corr)
    job = engine.fine_tune(parent_dir, mixed, epochs, user=user, corrections=len(y_corr))
    buf = io.BytesIO()
    np.savez_compressed(buf, x=x_corr, y=y_corr)
    runs.write_bytes(job.run_dir / CORRECTIONS_FILE, buf.getvalue())
    return job


def taught_runs(root: Path | str, parent_id: str, user: User) -> list[runs.RunInfo]:
    """Runs fine-tuned on ``user``'s corrections from run ``parent_id``, newest first."""
    return [r for r in runs.list_runs(root)
            if r.config.get("parent") == parent_id and r.config.get("corrections")
            and r.config.get("owner") == user.name]


def _accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    import keras

    # The lab's models rescale inside: raw 0..255 pixels in, as in training.
    probs = keras.ops.convert_to_numpy(model(x.astype(np.float32), training=False))
    return float((probs.argmax(axis=1) == y).mean()) if len(y) else 0.0


def before_after(parent_dir: Path | str, child_dir: Path | str) -> dict[str, Any]:
    """Accuracy of the parent's and the child's best models on the corrections the child
    learnt from, and their test accuracy (each run's metrics.json: both were evaluated on
    the same original test set, so nothing is recomputed here).

    Returns ``{"n": n, "corrections": {"before", "after"}, "test": {"before", "after"}}``
    (a test value is None when that run has no metrics yet).
    """
    from cnnlab.use import inference

    with np.load(Path(child_dir) / CORRECTIONS_FILE) as z:
        x, y = z["x"], z["y"]
    parent = inference.load_run_model(runs.best_model_path(parent_dir))
    child = inference.load_run_model(runs.best_model_path(child_dir))

    def test_accuracy(run_dir: Path | str) -> float | None:
        value = (runs.load_metrics(run_dir) or {}).get("test_accuracy")
        return None if value is None else float(value)

    return {
        "n": int(len(y)),
        "corrections": {"before": _accuracy(parent, x, y), "after": _accuracy(child, x, y)},
        "test": {"before": test_accuracy(parent_dir), "after": test_accuracy(child_dir)},
    }
