"""Teach it: the per-user correction store (cnnlab.runs.corrections), fine-tuning on corrections
through the real Engine (cnnlab.use.teaching) and the panel under a drawing's prediction.

The parent is the tiny model trained in-process for one epoch on a few hundred bundled
MNIST samples; its "corrections" are test digits it gets wrong, with their true labels.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest
from conftest import APPTEST_TIMEOUT, ROOT, plain, with_fit
from PIL import Image, ImageDraw

from cnnlab.data import datasets
from cnnlab.model import config
from cnnlab.people import access
from cnnlab.people.accounts import LOCAL_USER, User
from cnnlab.runs import corrections
from cnnlab.runs import store as runs
from cnnlab.runs.corrections import CorrectionsError
from cnnlab.train import jobs, training
from cnnlab.use import inference, teaching

TINY = config.ModelConfig(blocks=(config.ConvBlock(filters=4),), dense=(config.DenseLayer(16),),
                          learning_rate=3e-3)
DIGITS = tuple(str(i) for i in range(10))
ANN, BOB = User("ann"), User("bob")
WAIT = 240


def image(value: int = 200) -> np.ndarray:
    out = np.zeros((28, 28, 1), np.uint8)
    out[4:24, 12:16] = value
    return out


@pytest.fixture(scope="module")
def sample() -> datasets.Dataset:
    return datasets.load("mnist_sample")


def train_parent(root: Path, sample: datasets.Dataset, owner: str = LOCAL_USER.name) -> Path:
    """A finished tiny run (1 epoch, 320 images), trained in this process."""
    request = training.TrainRequest(**with_fit({
        "dataset": "mnist_sample", "config": TINY, "epochs": 1, "batch_size": 32,
        "patience": 2, "limit": 320, "name": "tiny"}))
    run_dir = runs.create_run(root, training.run_config(request, sample, owner=owner))
    result = training.train_run(request, sample, run_dir)
    assert result.status == "finished", result.message
    return run_dir


# --------------------------------------------------------------------------- the store


def test_corrections_round_trip(tmp_path: Path) -> None:
    first = corrections.add(tmp_path, ANN, "mnist", image(), 7, DIGITS)
    second = corrections.add(tmp_path, ANN, "mnist", image(90), 1, DIGITS)
    saved = corrections.list_corrections(tmp_path, ANN, "mnist")
    assert [c.id for c in saved] == [first.id, second.id]
    assert [c.label for c in saved] == [7, 1]
    assert np.array_equal(saved[0].image, image()) and saved[0].image.dtype == np.uint8
    assert corrections.counts(saved, 10) == [0, 1, 0, 0, 0, 0, 0, 1, 0, 0]
    x, y = corrections.load_arrays(tmp_path, ANN, "mnist")
    assert x.shape == (2, 28, 28, 1) and x.dtype == np.uint8 and y.tolist() == [7, 1]
    corrections.delete(tmp_path, ANN, "mnist", first.id)
    assert [c.id for c in corrections.list_corrections(tmp_path, ANN, "mnist")] == [second.id]
    with pytest.raises(CorrectionsError, match="no correction"):
        corrections.delete(tmp_path, ANN, "mnist", first.id)
    # One set per data set: Fashion-MNIST's corrections are elsewhere.
    assert corrections.list_corrections(tmp_path, ANN, "fashion_mnist") == []
    x, y = corrections.load_arrays(tmp_path, ANN, "fashion_mnist")
    assert x.shape[0] == 0 and y.shape == (0,)


def test_model_input_scales_back_to_the_uint8_image() -> None:
    x = image().astype(np.float32) / 255.0
    assert np.array_equal(corrections.to_uint8(x), image())


def test_ann_cannot_see_or_delete_bobs_corrections(tmp_path: Path) -> None:
    bobs = corrections.add(tmp_path, BOB, "mnist", image(), 3, DIGITS)
    assert corrections.list_corrections(tmp_path, ANN, "mnist") == []
    with pytest.raises(CorrectionsError, match="no correction"):
        corrections.delete(tmp_path, ANN, "mnist", bobs.id)
    assert [c.id for c in corrections.list_corrections(tmp_path, BOB, "mnist")] == [bobs.id]
    assert corrections.set_dir(tmp_path, ANN, "mnist") != corrections.set_dir(tmp_path, BOB,
                                                                              "mnist")


@pytest.mark.parametrize("name", ["../bob", "", "a/b", ".hidden", "Ann", "a\x00b", "..",
                                  "x" * 200, "kim..x"])
def test_unsafe_user_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(CorrectionsError, match="cannot name a corrections folder"):
        corrections.add(tmp_path, User(name), "mnist", image(), 1, DIGITS)
    assert not (tmp_path / corrections.CORRECTIONS_DIR).exists() or not any(
        p for p in (tmp_path / corrections.CORRECTIONS_DIR).rglob("*.json"))


def test_unsafe_data_set_names_and_ids_stay_inside(tmp_path: Path) -> None:
    folder = corrections.set_dir(tmp_path, ANN, "folder:../../evil.zip")
    assert folder.parent == tmp_path / corrections.CORRECTIONS_DIR / "ann"
    corrections.add(tmp_path, ANN, "folder:../../evil.zip", image(), 0, ("a", "b"))
    assert len(corrections.list_corrections(tmp_path, ANN, "folder:../../evil.zip")) == 1
    assert corrections.set_key("folder:a b") != corrections.set_key("folder:a-b")
    with pytest.raises(CorrectionsError, match="not a correction id"):
        corrections.delete(tmp_path, ANN, "mnist", "../../set")


def test_bad_corrections_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CorrectionsError, match="Label 10 is not a class"):
        corrections.add(tmp_path, ANN, "mnist", image(), 10, DIGITS)
    with pytest.raises(CorrectionsError, match="uint8 image"):
        corrections.add(tmp_path, ANN, "mnist", image() / 255.0, 1, DIGITS)
    corrections.add(tmp_path, ANN, "mnist", image(), 1, DIGITS)
    with pytest.raises(CorrectionsError, match="are for 10 classes of 28×28×1"):
        corrections.add(tmp_path, ANN, "mnist", image(), 1, ("a", "b"))


def test_the_mix_repeats_corrections_beside_a_replay_sample(sample) -> None:
    x = np.stack([image(), image(90)])
    mixed = teaching.mixed_dataset(sample, x, np.array([4, 5]), replay=600)
    repeat = min(round(0.25 * 600 / (0.75 * 2)), teaching.MAX_REPEAT)  # capped: 50
    assert len(mixed.y_train) == 600 + 2 * repeat and mixed.y_train.dtype == np.uint8
    copies = (mixed.x_train == image()).all(axis=(1, 2, 3))
    assert copies.sum() == repeat and set(mixed.y_train[copies]) == {4}
    assert mixed.x_test is sample.x_test and mixed.info.name == "mnist_sample+corrections"
    assert mixed.info.name not in datasets.REGISTRY  # shipped to the worker as data
    with pytest.raises(CorrectionsError, match="no corrections"):
        teaching.mixed_dataset(sample, x[:0], np.array([], np.int64))


# --------------------------------------------------------------------------- fine-tuning


@pytest.mark.slow
def test_fine_tuning_on_corrections_learns_them(runs_root: Path, sample) -> None:
    parent = train_parent(runs_root, sample)
    model = inference.load_run_model(runs.best_model_path(parent))
    wrong = np.flatnonzero(model.predict(sample.x_test, verbose=0).argmax(1) != sample.y_test)
    assert len(wrong) >= 20, "the one-epoch parent should get 20 test digits wrong"
    for i in wrong[:20]:
        corrections.add(runs_root, LOCAL_USER, "mnist_sample", sample.x_test[i],
                        int(sample.y_test[i]), DIGITS)

    eng = jobs.Engine(runs_root)
    try:
        corrections.add(runs_root, ANN, "mnist_sample", sample.x_test[0], 7, DIGITS)
        with pytest.raises(access.AccessDenied, match="not yours"):  # Ann: not her run
            teaching.fine_tune(eng, parent, sample, ANN)
        job = teaching.fine_tune(eng, parent, sample, LOCAL_USER, epochs=3)
        assert job.wait(WAIT) and job.result.status == "finished", job.result.message
    finally:
        eng.close()
    cfg = runs.load_config(job.run_dir)
    assert cfg["parent"] == parent.name and cfg["corrections"] == 20 and cfg["limit"] is None
    assert cfg["dataset"] == "mnist_sample"
    assert [r.run_id for r in teaching.taught_runs(runs_root, parent.name, LOCAL_USER)] == [
        job.run_id]
    assert teaching.taught_runs(runs_root, parent.name, ANN) == []
    numbers = teaching.before_after(parent, job.run_dir)
    print("before/after:", numbers)
    assert numbers["n"] == 20 and numbers["corrections"]["before"] == 0.0
    assert numbers["corrections"]["after"] >= 0.5
    assert numbers["test"]["before"] is not None and numbers["test"]["after"] is not None
    assert numbers["test"]["after"] > numbers["test"]["before"] - 0.05  # it did not forget


# --------------------------------------------------------------------------- the panel


def drawn_seven() -> np.ndarray:
    """A canvas's RGBA value: a white '7' on black, 280×280."""
    img = Image.new("RGBA", (280, 280), (0, 0, 0, 255))
    ImageDraw.Draw(img).line([(60, 50), (220, 50), (120, 240)], fill=(255, 255, 255, 255),
                             width=20)
    return np.asarray(img)


def fake_canvas(monkeypatch: pytest.MonkeyPatch) -> None:
    """The drawable canvas (which only loads inside a running app) returning a drawn '7'."""
    module = ModuleType("streamlit_drawable_canvas")
    module.st_canvas = lambda **kw: SimpleNamespace(image_data=drawn_seven())  # type: ignore
    monkeypatch.setitem(sys.modules, "streamlit_drawable_canvas", module)


@pytest.mark.slow
def test_panel_saves_lists_deletes_and_fine_tunes(runs_root: Path, sample,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    parent = train_parent(runs_root, sample)
    fake_canvas(monkeypatch)
    at = AppTest.from_file(str(ROOT / "pages" / "predict.py"), default_timeout=APPTEST_TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    assert at.button(key="corr_save").disabled  # no class picked yet
    at.selectbox(key="corr_label").set_value(3).run()
    at.button(key="corr_save").click().run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    saved = corrections.list_corrections(runs_root, LOCAL_USER, "mnist_sample")
    assert [c.label for c in saved] == [3] and saved[0].image.shape == (28, 28, 1)
    assert saved[0].image.max() > 200  # the drawing, as the model saw it, in 0..255
    assert any(e.label == "My corrections (1)" for e in at.expander)
    assert any("Per class: 3: 1" in plain(c.value) for c in at.caption)

    at.button(key=f"corr_del_{saved[0].id}").click().run()
    assert not at.exception
    assert corrections.list_corrections(runs_root, LOCAL_USER, "mnist_sample") == []
    assert any(e.label == "My corrections (0)" for e in at.expander)
    assert at.button(key="corr_finetune").disabled

    at.selectbox(key="corr_label").set_value(3).run()
    at.button(key="corr_save").click().run()
    at.number_input(key="corr_epochs").set_value(1).run()
    at.button(key="corr_finetune").click().run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    child = teaching.taught_runs(runs_root, parent.name, LOCAL_USER)
    assert len(child) == 1 and child[0].config["corrections"] == 1
    assert any("learns your 1 corrections" in s.value for s in at.success)
    job = jobs.engine_for(runs_root).get(child[0].run_id)
    assert job is not None and job.wait(WAIT), "the fine-tune job ran through the engine"
    assert job.result.status == "finished", job.result.message
    at.run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    assert any("Before and after" in m.value for m in at.markdown)
    table = at.dataframe[0].value
    assert list(table.index) == ["your corrections", "test set"]
    assert list(table.columns) == ["before", "after"]


def test_panel_hides_fine_tune_for_someone_elses_run(runs_root: Path, sample,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    train_parent(runs_root, sample, owner="bob")
    monkeypatch.setenv("CNNLAB_SIGN_IN", "accounts")
    fake_canvas(monkeypatch)
    at = AppTest.from_file(str(ROOT / "pages" / "predict.py"), default_timeout=APPTEST_TIMEOUT)
    at.session_state["user"] = ANN
    at.run()
    assert not at.exception, at.exception
    at.selectbox(key="corr_label").set_value(1).run()
    at.button(key="corr_save").click().run()
    assert not at.exception and not at.error
    assert len(corrections.list_corrections(runs_root, ANN, "mnist_sample")) == 1
    assert not [b for b in at.button if b.key == "corr_finetune"]
    assert any("someone else's" in c.value for c in at.caption)
