"""Per-test-image predictions of a run: the ``predictions.npz`` file and the test images
behind a confusion-matrix cell, a class's hardest examples and the live sample strip.

Evaluation (``training.train_run``) saves, for every test image, the predicted label, its
confidence and the probability of the true class, so pages answer "which images are in this
cell?" from the file and never run the model again. The images themselves come from the
data set by index. Pure NumPy: no Keras, no Streamlit.

Example::

    preds = Predictions.from_probs(probs, y_test)
    save(run_dir, preds)
    cell_examples(load(run_dir), true_class=3, predicted_class=5, limit=24)
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab.runs import store as runs

PREDICTIONS_FILE = "predictions.npz"
N_SAMPLES = 10  # images in the Train page's live strip
_FIELDS = ("true", "predicted", "confidence", "true_prob")


class PredictionsError(ValueError):
    """A predictions file that cannot be read; the message says which and what to do."""


@dataclass(frozen=True)
class Predictions:
    """One row per test image, in test-set order.

    Args:
        true: the true label (kept to check the file against the data set).
        predicted: the model's label (argmax).
        confidence: the probability of ``predicted``.
        true_prob: the probability the model gave the true label.
    """

    true: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray
    true_prob: np.ndarray

    @classmethod
    def from_probs(cls, probs: np.ndarray, y_true: np.ndarray) -> Predictions:
        """Predictions from an (n, classes) probability matrix and the true labels."""
        probs = np.asarray(probs, np.float32)
        y = np.asarray(y_true, np.int64).reshape(-1)
        predicted = probs.argmax(axis=1)
        rows = np.arange(len(y))
        # int32/float32: a 10,000-image test set is about 160 kB before compression.
        return cls(y.astype(np.int32), predicted.astype(np.int32),
                   probs[rows, predicted].astype(np.float32), probs[rows, y].astype(np.float32))

    def __len__(self) -> int:
        return len(self.true)

    def matches(self, y_test: np.ndarray) -> bool:
        """Whether these rows belong to a test set with labels ``y_test``."""
        y = np.asarray(y_test).reshape(-1)
        return len(y) == len(self) and bool(np.array_equal(y, self.true))


def save(run_dir: Path | str, preds: Predictions) -> Path:
    """Write ``preds`` to the run's predictions.npz atomically; returns the path."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{name: getattr(preds, name) for name in _FIELDS})
    path = Path(run_dir) / PREDICTIONS_FILE
    runs.write_bytes(path, buf.getvalue())
    return path


def load(run_dir: Path | str) -> Predictions | None:
    """The run's predictions, or None when it has none (evaluated before they were saved).

    Raises PredictionsError when the file is there but damaged.
    """
    path = Path(run_dir) / PREDICTIONS_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: np.asarray(data[name]) for name in _FIELDS}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise PredictionsError(
            f"{PREDICTIONS_FILE} of this run cannot be read ({type(exc).__name__}); "
            "evaluate the run again to rebuild it.") from exc
    if len({len(a) for a in arrays.values()}) != 1:
        raise PredictionsError(f"{PREDICTIONS_FILE} of this run has columns of different "
                               "lengths; evaluate the run again to rebuild it.")
    return Predictions(**arrays)


def cell_examples(preds: Predictions, true_class: int, predicted_class: int,
                  limit: int | None = None) -> np.ndarray:
    """Test indices in the confusion cell (true, predicted).

    A mistake cell lists the most confident first (the model was surest and wrong); the
    diagonal lists the least confident first (right, but only just). Ties keep test order.
    """
    idx = np.flatnonzero((preds.true == true_class) & (preds.predicted == predicted_class))
    conf = preds.confidence[idx]
    key = conf if true_class == predicted_class else -conf
    return idx[np.argsort(key, kind="stable")][:limit]


def hardest_examples(preds: Predictions, true_class: int, limit: int | None = None
                     ) -> np.ndarray:
    """Test indices of class ``true_class``, lowest probability for that class first."""
    idx = np.flatnonzero(preds.true == true_class)
    return idx[np.argsort(preds.true_prob[idx], kind="stable")][:limit]


def sample_indices(y_test: np.ndarray, n: int = N_SAMPLES) -> np.ndarray:
    """``n`` fixed test indices for the live strip: the first image of each class in class
    order, then the second of each, … (fewer when the test set is smaller)."""
    y = np.asarray(y_test).reshape(-1)
    # Rank of each image within its class (0 for the first of its class, …); sorting by
    # (rank, class) gives the round-robin order.
    order = np.lexsort((np.arange(len(y)), y))
    ranks = np.empty(len(y), np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(y[order])) + 1]
    for a, b in zip(starts, np.r_[starts[1:], len(y)], strict=True):
        ranks[order[a:b]] = np.arange(b - a)
    return np.lexsort((y, ranks))[:n].astype(np.int64)
