"""Evaluation numbers from probabilities, and evaluate() on a model-like object."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.runs import evaluate

NAMES = ("a", "b", "c")


def test_metrics_from_probs_hand_computed() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array([
        [0.9, 0.05, 0.05],  # right
        [0.2, 0.7, 0.1],    # 0 → 1, conf .7
        [0.1, 0.8, 0.1],    # right
        [0.05, 0.9, 0.05],  # right
        [0.6, 0.1, 0.3],    # 2 → 0, conf .6
        [0.1, 0.1, 0.8],    # right
    ])
    m = evaluate.metrics_from_probs(probs, y, NAMES)
    assert m["test_accuracy"] == pytest.approx(4 / 6)
    expected_loss = -np.mean(np.log([0.9, 0.2, 0.8, 0.9, 0.3, 0.8]))
    assert m["test_loss"] == pytest.approx(expected_loss)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    per = {p["name"]: p for p in m["per_class"]}
    assert per["a"]["precision"] == pytest.approx(0.5) and per["a"]["recall"] == pytest.approx(0.5)
    assert per["b"]["precision"] == pytest.approx(2 / 3) and per["b"]["recall"] == 1.0
    assert per["b"]["f1"] == pytest.approx(0.8)
    assert per["c"]["precision"] == 1.0 and per["c"]["support"] == 2
    got = [(x["index"], x["true"], x["predicted"]) for x in m["mistakes"]]
    assert got == [(1, 0, 1), (4, 2, 0)]
    assert m["mistakes"][0]["confidence"] == pytest.approx(0.7)
    assert m["n_test"] == 6 and m["class_names"] == list(NAMES)


def test_undefined_precision_is_zero_and_mistakes_capped() -> None:
    y = np.zeros(50, dtype=np.int64)
    probs = np.tile([0.1, 0.9, 0.0], (50, 1))  # always predicts b; class c never appears
    m = evaluate.metrics_from_probs(probs, y, NAMES)
    per = {p["name"]: p for p in m["per_class"]}
    assert per["c"] == {"class": 2, "name": "c", "precision": 0.0, "recall": 0.0, "f1": 0.0,
                        "support": 0}
    assert per["a"]["precision"] == 0.0
    assert len(m["mistakes"]) == evaluate.N_MISTAKES


def test_evaluate_calls_predict_on_raw_uint8() -> None:
    class Model:
        def predict(self, x, batch_size, verbose):
            assert x.dtype == np.uint8
            out = np.zeros((len(x), 3))
            out[np.arange(len(x)), x.reshape(len(x), -1)[:, 0] % 3] = 1.0
            return out

    x = np.arange(9, dtype=np.uint8).reshape(9, 1, 1, 1)
    y = np.arange(9) % 3
    m = evaluate.evaluate(Model(), x, y, NAMES)
    assert m["test_accuracy"] == 1.0 and m["mistakes"] == []
