"""AppTest of the Train page: start a tiny run, poll until it ends, see the results."""

from __future__ import annotations

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

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
    at.number_input(key="train_epochs_quick").set_value(epochs)
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


def test_tiny_run_trains_survives_reruns_and_shows_results(runs_root: Path) -> None:
    from pages.common import job_manager

    at = open_page()
    assert "Train" in at.title[0].value
    setup_tiny_run(at)
    at.button(key="train_start").click().run()
    assert not at.exception and not at.error

    manager = job_manager()  # the same st.cache_resource object the page uses
    assert str(manager.root) == str(runs_root.resolve())
    job = manager.latest()
    assert job is not None and at.session_state["train_run_id"] == job.run_id
    at.run()  # a rerun must neither kill nor duplicate the job
    assert job_manager() is manager and manager.latest() is job
    assert len(list(runs_root.iterdir())) == 1

    poll_until(at, lambda a: metric(a, "Test accuracy") is not None)
    assert job.done() and job.result.status == "finished"
    assert metric(at, "Test accuracy").value.endswith("%")
    assert any("Finished 1 epoch" in s.value for s in at.success)
    assert at.session_state["selected_run"] == str(job.run_dir)
    assert len(list(runs_root.iterdir())) == 1

    # A fresh session (refresh / second tab) sees the same run.
    other = open_page()
    assert any(job.run_id in m.value and "finished" in m.value for m in other.markdown)


def test_bad_inputs_show_errors_without_traceback(runs_root: Path) -> None:
    at = open_page()
    setup_tiny_run(at)
    at.number_input(key="train_epochs_quick").set_value(0)
    at.number_input(key="train_batch_quick").set_value(5000)
    at.button(key="train_start").click().run()
    assert not at.exception
    text = at.error[0].value
    assert "Epochs is 0" in text and "Batch size 5000" in text
    assert not list(runs_root.iterdir())


def test_uses_the_configure_page_model(runs_root: Path) -> None:
    from cnnlab import config

    at = AppTest.from_file(PAGE, default_timeout=APPTEST_TIMEOUT)
    at.session_state["model_config"] = config.ModelConfig(
        blocks=(config.ConvBlock(filters=4),), dense=(config.DenseLayer(8),), epochs=7)
    at.session_state["preset_name"] = "custom"
    at.run()
    assert not at.exception
    assert at.selectbox(key="train_model").value == "configure"
    assert "conv4 → dense8" in " ".join(c.value for c in at.caption)
    assert at.number_input(key="train_epochs_configure").value == 7
