"""Evaluation of a trained model on the test set: accuracy, confusion, per-class scores."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras

N_MISTAKES = 24


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``[true, predicted]`` as an (n_classes, n_classes) int64 matrix."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def per_class_scores(cm: np.ndarray, class_names: list[str]) -> list[dict[str, Any]]:
    """Precision, recall, f1 and support per class from a confusion matrix (0 when undefined)."""
    tp = np.diag(cm).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    support = cm.sum(axis=1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / denom, 0.0)
    return [
        {
            "class": i,
            "name": class_names[i],
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i in range(len(class_names))
    ]


def most_confident_mistakes(
    probs: np.ndarray, y_true: np.ndarray, limit: int = N_MISTAKES
) -> list[dict[str, Any]]:
    """The wrong predictions the model was surest about, most confident first."""
    y_true = np.asarray(y_true, np.int64)
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    wrong = np.flatnonzero(pred != y_true)
    order = wrong[np.argsort(-conf[wrong], kind="stable")][:limit]
    return [
        {"index": int(i), "true": int(y_true[i]), "predicted": int(pred[i]),
         "confidence": float(conf[i])}
        for i in order
    ]


def metrics_from_probs(
    probs: np.ndarray, y_true: np.ndarray, class_names: list[str] | tuple[str, ...]
) -> dict[str, Any]:
    """All evaluation numbers from predicted probabilities (pure numpy; no Keras)."""
    names = list(class_names)
    y_true = np.asarray(y_true, np.int64).reshape(-1)
    probs = np.asarray(probs, np.float64)
    pred = probs.argmax(axis=1)
    eps = 1e-7
    picked = np.clip(probs[np.arange(len(y_true)), y_true], eps, 1.0)
    cm = confusion_matrix(y_true, pred, len(names))
    return {
        "test_accuracy": float((pred == y_true).mean()) if len(y_true) else 0.0,
        "test_loss": float(-np.log(picked).mean()) if len(y_true) else 0.0,
        "n_test": int(len(y_true)),
        "class_names": names,
        "confusion": cm.tolist(),
        "per_class": per_class_scores(cm, names),
        "mistakes": most_confident_mistakes(probs, y_true),
    }


def evaluate(
    model: keras.Model,
    x_test: np.ndarray,
    y_test: np.ndarray,
    class_names: list[str] | tuple[str, ...],
    batch_size: int = 256,
) -> dict[str, Any]:
    """Test accuracy and loss, confusion matrix, per-class precision/recall/f1 and the most
    confident mistakes (index, true, predicted, confidence) of ``model`` on uint8 ``x_test``.

    The model rescales inside, so ``x_test`` is passed as raw uint8 pixels.
    """
    return metrics_from_probs(probabilities(model, x_test, batch_size), y_test, class_names)


def probabilities(model: keras.Model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The model's (n, classes) class probabilities for uint8 images ``x``."""
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
