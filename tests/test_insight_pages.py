"""AppTests of the images behind the numbers (pages/insight.py): a confusion cell's test
images and a class's hardest examples on Runs and Train, the live strip of sample
predictions on Train, and no images of a private upload for another student.

AppTest cannot click a Plotly chart, so a cell is picked through the two selectboxes that a
click fills in (``insight.confusion_chart``); the grid below them is the same code path.
The click itself is checked in a real browser (test_browser_insight.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from test_access import (  # noqa: F401  (fixtures used by name)
    BOB,
    TEACHER,
    accounts_file,
    class_runs,
    open_run,
    sample,
)
from test_predict_page import make_run
from test_train_page import metric, poll_until, setup_tiny_run

from cnnlab.data import datasets
from cnnlab.runs import predictions
from cnnlab.runs import store as runs
from cnnlab.runs.predictions import Predictions
from tests.conftest import APPTEST_TIMEOUT, ROOT


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real finished run (quick preset, 600 MNIST-sample images, one epoch: make_run's
    default, a copy when another module made it first)."""
    return make_run(tmp_path_factory.mktemp("insight") / "runs")


def open_runs_page(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("CNNLAB_RUNS_DIR", str(run_dir.parent))
    at = AppTest.from_file(str(ROOT / "pages" / "runs.py"), default_timeout=APPTEST_TIMEOUT)
    at.query_params["run"] = run_dir.name
    at.run()
    assert not at.exception, at.exception
    return at


def chart(at: AppTest, key: str) -> dict | None:
    """The Plotly spec of the chart with ``key``, or None when it is not drawn."""
    found = [c for c in at.get("plotly_chart") if c.proto.id.endswith(f"-{key}")]
    return json.loads(found[0].proto.spec) if found else None


def captions(spec: dict) -> list[str]:
    """The grid's captions, a wrapped caption's lines joined by spaces."""
    return [a["text"].replace("<br>", " ") for a in spec["layout"].get("annotations", [])]


def busiest_mistake(confusion: list[list[int]]) -> tuple[int, int]:
    cm = np.array(confusion)
    np.fill_diagonal(cm, -1)
    i, j = np.unravel_index(cm.argmax(), cm.shape)
    return int(i), int(j)


def test_runs_page_shows_the_images_of_a_chosen_cell(trained: Path, monkeypatch) -> None:
    at = open_runs_page(trained, monkeypatch)
    run_id = trained.name
    assert chart(at, "runs_confusion") is not None and chart(at, "runs_cell_grid") is None
    preds = predictions.load(trained)
    metrics = runs.load_metrics(trained)
    i, j = busiest_mistake(metrics["confusion"])
    expected = predictions.cell_examples(preds, i, j, 24)
    assert len(expected)  # one epoch on 600 images makes mistakes

    at.selectbox(key=f"runs_cell_true_{run_id}").set_value(i).run()
    at.selectbox(key=f"runs_cell_pred_{run_id}").set_value(j).run()
    assert not at.exception, at.exception
    grid = chart(at, "runs_cell_grid")
    assert grid is not None
    shown = captions(grid)
    assert shown == [f"{c:.0%}" for c in preds.confidence[expected]]
    assert any(f"{len(predictions.cell_examples(preds, i, j))} test image(s)" in c.value
               for c in at.caption)

    # Why? One of the cell's images in the saliency panel: nothing until it is opened.
    at.selectbox(key=f"runs_{run_id}_why_pick").set_value(0).run()
    why = [e for e in at.expander if e.label == "Why did it decide this?"]
    assert not at.exception and len(why) == 1 and not len(why[0].image)
    at.session_state[f"why_runs_{run_id}_test"] = True  # the user opens it
    at.run()
    why = next(e for e in at.expander if e.label == "Why did it decide this?")
    assert not at.exception and len(why.image) == 1  # the map over that test image
    assert any("Grad-CAM on layer" in c.value for c in why.caption)

    # The diagonal: least confident right answers first.
    k = int(np.diag(metrics["confusion"]).argmax())
    at.selectbox(key=f"runs_cell_true_{run_id}").set_value(k).run()
    at.selectbox(key=f"runs_cell_pred_{run_id}").set_value(k).run()
    diagonal = [float(t.rstrip("%")) for t in captions(chart(at, "runs_cell_grid"))]
    assert diagonal == sorted(diagonal) and len(diagonal) > 1

    # Hardest examples of a class: lowest probability for the true class first.
    at.selectbox(key=f"runs_hardest_{run_id}").set_value(j).run()
    hard = captions(chart(at, "runs_hardest_grid"))
    idx = predictions.hardest_examples(preds, j, 24)
    assert len(hard) == len(idx)
    assert hard[0] == f"→{preds.predicted[idx[0]]} ({preds.true_prob[idx[0]]:.0%})"


def test_a_run_without_predictions_says_so(trained: Path, tmp_path: Path, monkeypatch) -> None:
    import shutil

    old = tmp_path / "runs" / trained.name
    shutil.copytree(trained, old)
    (old / predictions.PREDICTIONS_FILE).unlink()
    at = open_runs_page(old, monkeypatch)
    assert any("evaluated before per-image predictions" in i.value for i in at.info)
    assert chart(at, "runs_confusion") is not None  # the rest of the tab is as before


@pytest.mark.usefixtures("accounts_file")
def test_an_upload_run_shows_a_student_numbers_but_no_images(
        request: pytest.FixtureRequest) -> None:
    ann = request.getfixturevalue("class_runs")["ann"]  # test_access's class-mode runs
    # Ann's upload run: confusion [[1, 1], [0, 2]] over four test images.
    predictions.save(ann, Predictions.from_probs(
        np.array([[0.8, 0.2], [0.3, 0.7], [0.1, 0.9], [0.4, 0.6]]), np.array([0, 0, 1, 1])))
    for user, allowed in ((BOB, False), (TEACHER, True)):
        at = open_run(user, ann)
        at.selectbox(key=f"runs_cell_true_{ann.name}").set_value(0).run()
        at.selectbox(key=f"runs_cell_pred_{ann.name}").set_value(1).run()
        assert not at.exception, at.exception
        assert chart(at, "runs_cell_grid") is None and chart(at, "runs_hardest_grid") is None
        numbers = next(d.value for d in at.dataframe if "test image" in d.value.columns)
        assert numbers["test image"].tolist() == [1]
        assert numbers["confidence"].tolist() == [pytest.approx(0.7)]
        private = any("only they and teachers see the images" in c.value for c in at.caption)
        # The teacher may see them; this server just does not hold Ann's upload.
        assert private is not allowed
        assert allowed or not any("not available here" in c.value for c in at.caption)


@pytest.mark.slow
def test_the_train_page_shows_the_sample_strip_and_a_cells_images(runs_root: Path) -> None:
    from pages.common import engine

    at = AppTest.from_file(str(ROOT / "pages" / "train.py"), default_timeout=APPTEST_TIMEOUT)
    at.run()
    setup_tiny_run(at, epochs=1, limit=300)
    at.button(key="train_start").click().run()
    poll_until(at, lambda a: metric(a, "Test accuracy") is not None, seconds=240)
    job = engine().latest()
    strip = chart(at, "train_samples")
    assert strip is not None
    samples = job.events.latest_samples
    y_test = datasets.load("mnist_sample").y_test
    assert samples["index"] == predictions.sample_indices(y_test).tolist()
    texts = captions(strip)
    assert len(texts) == 10 and all(t[0] in "✓✗" for t in texts)
    assert [t.split()[1] for t in texts] == [str(p) for p in samples["predicted"]]

    at.selectbox(key=f"train_cell_true_{job.run_id}").set_value(3).run()
    at.selectbox(key=f"train_cell_pred_{job.run_id}").set_value(3).run()
    assert not at.exception, at.exception
    preds = predictions.load(job.run_dir)
    grid = chart(at, "train_cell_grid")
    assert grid is not None
    assert len(captions(grid)) == len(predictions.cell_examples(preds, 3, 3, 24))
