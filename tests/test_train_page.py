"""AppTest of the Train page: start a tiny run, poll until it ends, see the results."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cnnlab.runs import store as runs
from pages import state
from tests.conftest import APPTEST_TIMEOUT

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "train.py")


def open_page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=APPTEST_TIMEOUT)
    at.run()
    assert not at.exception
    return at


def setup_tiny_run(at: AppTest, epochs: int = 1, limit: int = 300) -> None:
    at.selectbox(key="train_dataset").set_value("mnist_sample").run()
    at.selectbox(key="train_model").set_value("quick").run()
    at.number_input(key="train_epochs_quick_mnist_sample").set_value(epochs)
    at.toggle(key="train_use_limit").set_value(True).run()  # shows the samples input
    at.number_input(key="train_limit").set_value(limit).run()


def poll_until(at: AppTest, done, seconds: float = 120) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        at.run()
        assert not at.exception, at.exception
        if done(at):
            return
        time.sleep(0.3)
    raise AssertionError("the page never showed the expected state")


def metric(at: AppTest, label: str):
    return next((m for m in at.metric if m.label == label), None)


@pytest.mark.slow
def test_tiny_run_trains_survives_reruns_and_shows_results(runs_root: Path) -> None:
    from pages.common import engine

    at = open_page()
    assert "Train" in at.title[0].value
    # 1,000 images: 300 make two or three steps, whose training accuracy sometimes reads
    # as chance, and the page then warns instead of reporting success.
    setup_tiny_run(at, limit=1000)
    at.button(key="train_start").click().run()
    assert not at.exception and not at.error

    manager = engine()  # the same Engine the page uses
    assert manager.root == runs_root.resolve()
    job = manager.latest()
    assert job is not None and at.session_state[state.TRAIN_RUN_KEY] == job.run_id
    assert job.owner == "local"  # personal mode: one local user owns every run
    at.run()  # a rerun must neither kill nor duplicate the job
    assert engine() is manager and manager.latest() is job
    assert len(runs.list_runs(runs_root)) == 1

    poll_until(at, lambda a: metric(a, "Test accuracy") is not None)
    assert job.done() and job.result.status == "finished"
    assert metric(at, "Test accuracy").value.endswith("%")
    assert any("Finished 1 epoch" in s.value for s in at.success)
    assert at.session_state[state.SELECTED_RUN_KEY] == str(job.run_dir)
    assert len(runs.list_runs(runs_root)) == 1

    # A second tab (a fresh session, sharing nothing) of the same local user sees the run.
    other = open_page()
    assert any(job.run_id in m.value and "finished" in m.value for m in other.markdown)


@pytest.mark.slow
def test_clearing_streamlit_caches_keeps_the_engine_and_the_live_run(runs_root: Path) -> None:
    import streamlit as st

    from pages.common import engine

    at = open_page()
    setup_tiny_run(at, epochs=3, limit=2000)
    at.button(key="train_start").click().run()
    manager = engine()
    job = manager.latest()
    st.cache_resource.clear()  # what a websocket clear_cache frame does
    st.cache_data.clear()
    at.run()
    assert not at.exception
    assert engine() is manager and manager.latest() is job and not manager.blocked
    assert runs.load_status(job.run_dir)["status"] in ("queued", "running")
    at.button(key="train_stop").click().run()  # Stop still reaches the live run
    assert job.wait(240) and job.result.status == "stopped", job.result.message
    assert len(runs.list_runs(runs_root)) == 1


def test_bad_inputs_disable_train_with_the_reason(runs_root: Path) -> None:
    at = open_page()
    setup_tiny_run(at)
    at.number_input(key="train_epochs_quick_mnist_sample").set_value(0)
    at.number_input(key="train_batch_quick_mnist_sample").set_value(5000).run()
    assert not at.exception
    text = at.error[0].value
    assert "Epochs is 0" in text and "Batch size 5000" in text
    assert at.button(key="train_start").disabled
    assert not runs.list_runs(runs_root)


def test_over_budget_model_is_refused_with_the_limit(runs_root: Path, monkeypatch) -> None:
    monkeypatch.setenv("CNNLAB_MAX_PARAMS", "50000")
    at = open_page()
    setup_tiny_run(at)  # quick has 114,314 parameters
    text = " ".join(e.value for e in at.error)
    assert "114,314 parameters" in text and "at most 50,000" in text
    assert at.button(key="train_start").disabled


def test_uses_the_configure_page_model(runs_root: Path) -> None:
    from cnnlab.model import config
    from cnnlab.model.fit_settings import FitSettings

    at = AppTest.from_file(PAGE, default_timeout=APPTEST_TIMEOUT)
    at.session_state[state.MODEL_CONFIG_KEY] = config.ModelConfig(
        blocks=(config.ConvBlock(filters=4),), dense=(config.DenseLayer(8),))
    at.session_state[state.FIT_SETTINGS_KEY] = FitSettings(epochs=7)
    at.session_state[state.PRESET_NAME_KEY] = "custom"
    at.run()
    assert not at.exception
    assert at.selectbox(key="train_model").value == "configure"
    assert "conv4 → dense8" in " ".join(c.value for c in at.caption)
    epochs = next(n for n in at.number_input if n.key.startswith("train_epochs_configure_"))
    assert epochs.value == 7


def test_an_upload_offers_the_own_images_model_and_its_defaults(runs_root: Path) -> None:
    # That every default trains an upload to 75 % is tests/test_e2e.py's own-images test
    # (a browser presses Train with nothing changed); training it here too cost 65 s.
    from shapes import shapes_zip

    from cnnlab.data import datasets
    from cnnlab.train import training

    ds = datasets.load_zip(shapes_zip(size=16), (16, 16), False, name="folder:shapes.zip")
    at = AppTest.from_file(PAGE, default_timeout=APPTEST_TIMEOUT)
    at.session_state[state.UPLOAD_KEY] = ds
    at.session_state[state.DATASET_KEY] = ds.info.name
    at.run()
    assert not at.exception and not at.error
    assert at.selectbox(key="train_model").value == "own-images"
    offered = training.default_request(ds)
    batch = next(n for n in at.number_input if n.key.startswith("train_batch_own-images"))
    epochs = next(n for n in at.number_input if n.key.startswith("train_epochs_own-images"))
    assert (batch.value, epochs.value) == (offered.fit.batch_size, offered.fit.epochs) == (32, 60)


def address(at: AppTest, param: str) -> str | None:
    """``?param=`` after the last run (AppTest keeps lists before Streamlit 1.6x)."""
    value = at.query_params.get(param)
    return value[-1] if isinstance(value, list) else value


def test_the_address_opens_a_data_set_and_follows_the_picker(runs_root: Path, tmp_path: Path,
                                                            monkeypatch) -> None:
    from cnnlab.data import datasets

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # CIFAR-10 missing: a quick error
    monkeypatch.setattr(datasets, "_online", lambda host: False)
    at = AppTest.from_file(PAGE, default_timeout=APPTEST_TIMEOUT)
    at.query_params["dataset"] = "mnist_sample"
    at.run()
    assert not at.exception and not at.warning
    assert at.selectbox(key="train_dataset").value == "mnist_sample"
    assert at.session_state[state.DATASET_KEY] == "mnist_sample"
    at.selectbox(key="train_dataset").set_value("cifar10").run()
    assert not at.exception
    assert address(at, "dataset") == "cifar10"


def test_an_unknown_data_set_in_the_address_is_a_warning(runs_root: Path) -> None:
    at = AppTest.from_file(PAGE, default_timeout=APPTEST_TIMEOUT)
    at.query_params["dataset"] = "../../etc/passwd"
    at.run()
    assert not at.exception
    assert "does not have" in at.warning[0].value
    assert address(at, "dataset") == at.selectbox(key="train_dataset").value


def test_a_configure_backbone_is_requested_with_the_chosen_weights(runs_root: Path, tmp_path,
                                                                     monkeypatch) -> None:
    from cnnlab.model import backbones, config
    from cnnlab.model.fit_settings import FitSettings
    from cnnlab.train import jobs

    sent: list = []

    def record(self, request, dataset, user=None):
        sent.append(request)
        raise jobs.EngineRefused("Recorded, not queued.")

    monkeypatch.setattr(jobs.Engine, "submit", record)
    monkeypatch.setattr(backbones, "online", lambda: True)
    at = AppTest.from_file(PAGE, default_timeout=APPTEST_TIMEOUT)
    at.session_state[state.DATASET_KEY] = "mnist_sample"
    at.session_state[state.MODEL_CONFIG_KEY] = config.ModelConfig(
        blocks=(), dense=(), backbone="MobileNetV3Small", global_pool=True, unfreeze=10)
    at.session_state[state.FIT_SETTINGS_KEY] = FitSettings(batch_size=16, epochs=1,
                                                           fine_tune_epochs=2)
    at.session_state[state.PRESET_NAME_KEY] = "custom"
    missing = tmp_path / "missing.weights.h5"
    at.session_state[state.WEIGHTS_KEY] = str(missing)
    at.run()
    assert not at.exception, at.exception
    captions = " ".join(c.value for c in at.caption)
    assert "MobileNetV3Small (frozen; top 10 layers fine-tuned 2 epochs" in captions
    assert "missing.weights.h5" in captions
    assert "does not exist on the server" in " ".join(e.value for e in at.error)
    assert at.button(key="train_start").disabled

    at.session_state[state.WEIGHTS_KEY] = None  # Configure: "None (random start)"
    at.run()
    assert not at.error, [e.value for e in at.error]
    assert "Starts from random weights" in " ".join(c.value for c in at.caption)
    fine_tune = next(n for n in at.number_input if n.key.startswith("train_fine_tune_"))
    assert fine_tune.value == 2
    at.button(key="train_start").click().run()
    assert "Recorded, not queued." in " ".join(e.value for e in at.error)
    assert sent[-1].weights is None and sent[-1].fit.fine_tune_epochs == 2
    assert sent[-1].config.backbone == "MobileNetV3Small"

    at.session_state[state.WEIGHTS_KEY] = state.IMAGENET
    at.run()
    at.button(key="train_start").click().run()
    assert sent[-1].weights == "imagenet"
