"""Per-test-image predictions (cnnlab.runs.predictions): the images behind a confusion cell, a
class's hardest examples, the live sample strip, and predictions.npz and the epoch events'
samples as a real tiny training run writes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_training import new_run, request

from cnnlab import charts
from cnnlab.data import datasets
from cnnlab.runs import predictions
from cnnlab.runs import store as runs
from cnnlab.runs.predictions import Predictions
from cnnlab.train import training


def probs_for(rows: list[tuple[int, list[float]]]) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, true labels) from (true label, probability row) pairs."""
    return np.array([p for _, p in rows], np.float32), np.array([t for t, _ in rows])


# Three classes; the comments give (true → predicted, confidence).
PROBS, TRUE = probs_for([
    (0, [0.9, 0.1, 0.0]),   # 0: 0→0 0.9
    (0, [0.2, 0.7, 0.1]),   # 1: 0→1 0.7
    (0, [0.4, 0.3, 0.3]),   # 2: 0→0 0.4
    (0, [0.05, 0.95, 0.0]),  # 3: 0→1 0.95
    (1, [0.1, 0.8, 0.1]),   # 4: 1→1 0.8
    (0, [0.3, 0.6, 0.1]),   # 5: 0→1 0.6
    (2, [0.5, 0.1, 0.4]),   # 6: 2→0 0.5
    (0, [0.6, 0.2, 0.2]),   # 7: 0→0 0.6
])


def test_a_mistake_cell_lists_exactly_its_images_most_confident_first() -> None:
    preds = Predictions.from_probs(PROBS, TRUE)
    assert predictions.cell_examples(preds, 0, 1).tolist() == [3, 1, 5]
    assert predictions.cell_examples(preds, 0, 1, limit=2).tolist() == [3, 1]
    assert predictions.cell_examples(preds, 2, 0).tolist() == [6]
    assert predictions.cell_examples(preds, 1, 0).tolist() == []


def test_a_diagonal_cell_lists_the_least_confident_right_answers_first() -> None:
    preds = Predictions.from_probs(PROBS, TRUE)
    assert predictions.cell_examples(preds, 0, 0).tolist() == [2, 7, 0]


def test_every_test_image_is_in_exactly_one_cell() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=300)
    y = rng.integers(0, 4, 300)
    preds = Predictions.from_probs(probs, y)
    cells = [predictions.cell_examples(preds, i, j) for i in range(4) for j in range(4)]
    assert sorted(np.concatenate(cells).tolist()) == list(range(300))
    for i in range(4):
        for j in range(4):
            idx = predictions.cell_examples(preds, i, j)
            assert (y[idx] == i).all() and (probs[idx].argmax(1) == j).all()
            conf = probs[idx].max(1)
            assert (np.diff(conf) >= 0).all() if i == j else (np.diff(conf) <= 0).all()


def test_hardest_examples_have_the_lowest_true_class_probability_first() -> None:
    preds = Predictions.from_probs(PROBS, TRUE)
    # Class 0's images and their probability for class 0: 0.9, 0.2, 0.4, 0.05, 0.3, 0.6.
    assert predictions.hardest_examples(preds, 0).tolist() == [3, 1, 5, 2, 7, 0]
    assert predictions.hardest_examples(preds, 0, limit=2).tolist() == [3, 1]
    assert predictions.hardest_examples(preds, 2).tolist() == [6]
    assert preds.true_prob[3] == pytest.approx(0.05)


def test_sample_indices_take_each_class_in_turn() -> None:
    y = np.array([3, 1, 1, 0, 3, 2, 0, 1])
    # The first of classes 0..3, then the second of each, then the third.
    assert predictions.sample_indices(y, 10).tolist() == [3, 1, 5, 0, 6, 2, 4, 7]
    assert predictions.sample_indices(y, 3).tolist() == [3, 1, 5]
    assert predictions.sample_indices(np.array([], np.int64)).tolist() == []


def test_a_click_on_the_confusion_figure_names_its_cell() -> None:
    fig = charts.confusion_figure([[5, 1], [2, 7]], ["cat", "dog"])
    cells = [list(c) for c in fig.data[1].customdata]
    assert cells == [[0, 0, 5], [0, 1, 1], [1, 0, 2], [1, 1, 7]]
    # The selection Streamlit sends for a click on the invisible cell markers.
    point = {"curve_number": 1, "point_index": 1, "x": "dog", "y": "cat",
             "customdata": cells[1]}
    assert charts.clicked_cell([point]) == (0, 1)
    assert charts.clicked_cell([{**point, "customdata": {"0": 1, "1": 0, "2": 2}}]) == (1, 0)
    assert charts.clicked_cell([]) is None


def test_a_damaged_predictions_file_says_what_to_do(tmp_path: Path) -> None:
    assert predictions.load(tmp_path) is None
    (tmp_path / predictions.PREDICTIONS_FILE).write_bytes(b"not a zip")
    with pytest.raises(predictions.PredictionsError, match="evaluate the run again"):
        predictions.load(tmp_path)


# ------------------------------------------------------------------- a real tiny run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], datasets.Dataset]:
    """A two-epoch tiny run on the MNIST sample: its folder, its events, its data set."""
    ds = datasets.load("mnist_sample")
    ds = datasets.Dataset(ds.info, ds.x_train, ds.y_train, ds.x_test[:200], ds.y_test[:200])
    req = request(epochs=2, limit=300)
    run_dir = new_run(tmp_path_factory.mktemp("runs"), req, ds)
    events: list[dict] = []
    result = training.train_run(req, ds, run_dir, emit=events.append)
    assert result.status == "finished", result.message
    return run_dir, events, ds


def test_training_saves_every_test_images_prediction(tiny_run) -> None:
    run_dir, _, ds = tiny_run
    preds = predictions.load(run_dir)
    assert preds is not None and len(preds) == 200 and preds.matches(ds.y_test)
    metrics = runs.load_metrics(run_dir)
    # The file agrees with metrics.json: the same confusion matrix and accuracy.
    cm = np.zeros((10, 10), np.int64)
    np.add.at(cm, (preds.true, preds.predicted), 1)
    assert cm.tolist() == metrics["confusion"]
    assert (preds.true == preds.predicted).mean() == pytest.approx(metrics["test_accuracy"])
    assert ((preds.confidence >= preds.true_prob - 1e-6) & (preds.confidence <= 1)).all()
    assert not list(run_dir.glob(".predictions.npz.*"))  # written atomically, nothing left
    for mistake in metrics["mistakes"][:1]:  # the surest mistake heads its cell (ties aside)
        cell = predictions.cell_examples(preds, mistake["true"], mistake["predicted"])
        assert preds.confidence[cell[0]] == pytest.approx(mistake["confidence"], abs=1e-6)


def test_epoch_events_carry_the_same_ten_sample_predictions(tiny_run) -> None:
    _, events, ds = tiny_run
    epochs = [e for e in events if e["kind"] == "epoch"]
    assert len(epochs) == 2
    expected = predictions.sample_indices(ds.y_test).tolist()
    assert sorted(ds.y_test[expected].tolist()) == list(range(10))  # one of each digit
    for event in epochs:
        samples = event["samples"]
        assert samples["index"] == expected
        assert len(samples["predicted"]) == len(samples["confidence"]) == 10
        assert all(0 <= p < 10 for p in samples["predicted"])
        assert all(0.099 <= c <= 1.0 for c in samples["confidence"])  # the top of 10 classes
    # No pixels in the event: it crosses a pipe or a Ray queue every epoch.
    assert all(isinstance(v, list) and all(isinstance(x, int | float) for x in v)
               for v in epochs[0]["samples"].values())
