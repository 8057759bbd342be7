"""AppTest of the home page and of the Explore page on the sample, MNIST, an upload, CIFAR."""

from __future__ import annotations

import re

import pytest
from conftest import APPTEST_TIMEOUT, ROOT, has_real_mnist
from streamlit.testing.v1 import AppTest

from cnnlab.data import datasets
from pages import state


def explore(name: str | None = None, upload: datasets.Dataset | None = None) -> AppTest:
    """The Explore page with ``name`` as the current data set and ``upload`` kept."""
    at = AppTest.from_file(str(ROOT / "pages" / "explore.py"), default_timeout=APPTEST_TIMEOUT)
    if name:
        at.session_state[state.DATASET_KEY] = name
    if upload is not None:
        at.session_state[state.UPLOAD_KEY] = upload
    return at.run()


def charts(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


def test_home_page_runs():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=APPTEST_TIMEOUT).run()
    assert not at.exception
    assert "CNN Lab" in at.title[0].value


def test_explore_sample():
    at = explore("mnist_sample")
    assert not at.exception and not at.error
    assert [m.value for m in at.metric] == ["5,401", "599", "1,000", "10"]
    assert at.selectbox(key="explore_dataset").value == "mnist_sample"
    assert charts(at) == 4  # counts, samples, class means, histogram
    # filter to one class and reshuffle: still fine
    at.selectbox[1].select("7").run()
    at.button[1].click().run()
    assert not at.exception and at.session_state["explore_seed"] == 1


@pytest.mark.skipif(not has_real_mnist(), reason="MNIST IDX files absent")
def test_explore_full_mnist_is_the_default():
    at = explore()
    assert not at.exception and not at.error
    assert at.session_state[state.DATASET_KEY] == "mnist"
    assert [m.value for m in at.metric] == ["54,001", "5,999", "10,000", "10"]
    assert charts(at) == 4


def test_explore_switching_data_set_updates_the_shared_choice():
    at = explore("mnist_sample")
    at.selectbox(key="explore_dataset").select("fashion_mnist" if has_real_mnist()
                                               else "mnist_sample").run()
    assert not at.exception
    assert at.session_state[state.DATASET_KEY] == at.selectbox(key="explore_dataset").value


def test_explore_shows_an_upload_kept_in_the_session():
    sample = datasets.load("mnist_sample")
    up = datasets.subset(sample, 50)
    info = datasets.DatasetInfo("folder:pets.zip", "Your images", up.info.class_names,
                                up.info.image_shape)
    ds = datasets.Dataset(info, up.x_train, up.y_train, up.x_test[:20], up.y_test[:20])
    at = explore("folder:pets.zip", upload=ds)
    assert not at.exception and not at.error
    assert at.selectbox(key="explore_dataset").value == "folder:pets.zip"
    assert at.metric[2].value == "20"
    assert charts(at) == 4


def test_explore_unavailable_set_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(datasets, "_online", lambda host: False)
    at = explore("cifar10")
    assert not at.exception
    assert len(at.error) == 1 and "cifar-10-python.tar.gz" in at.error[0].value
    assert charts(at) == 0
    # a lost upload (new session) also gets one clear sentence, not a traceback
    at = explore("folder:gone.zip")
    assert not at.exception


def test_an_upload_shows_its_augmented_samples():
    from shapes import shapes_zip

    ds = datasets.load_zip(shapes_zip(per_class=6, size=32), (32, 32), False,
                           name="folder:shapes.zip")
    at = explore("folder:shapes.zip", upload=ds)
    assert not at.exception
    assert any("What the model trains on" in h.value for h in at.subheader)
    assert charts(at) == 4  # the preview is computed only when asked for
    at.toggle(key="explore_augment").set_value(True).run()
    assert not at.exception and charts(at) == 5


def test_a_first_load_draws_a_progress_bar_and_no_run_leaves_one(monkeypatch):
    """The bar is drawn while a data set loads, then emptied; cached replays draw none."""
    import streamlit as st
    from streamlit.elements.progress import ProgressMixin

    drawn: list[tuple[float, str | None]] = []
    real = ProgressMixin.progress

    def spy(self, value, text=None, **kwargs):
        drawn.append((value, text))
        return real(self, value, text=text, **kwargs)

    monkeypatch.setattr(ProgressMixin, "progress", spy)
    st.cache_resource.clear()  # a first load in this server process
    at = explore("mnist_sample")
    assert not at.exception and not at.error and charts(at) == 4
    assert drawn[0] == (0.0, "Loading the data set…")
    assert drawn[-1] == (1.0, f"{datasets.REGISTRY['mnist_sample'].title} loaded")
    assert not at.get("progress")  # removed when done

    drawn.clear()
    at.run()  # a rerun: the cached set, its recorded drawing replayed, no bar left
    assert not at.exception and charts(at) == 4
    assert drawn == [] and not at.get("progress")
    fresh = explore("mnist_sample")  # another session, same server cache
    assert not fresh.exception and charts(fresh) == 4 and not fresh.get("progress")


# --------------------------------------------------------------------------- the address


def address(at: AppTest, param: str) -> str | None:
    """``?param=`` after the last run (AppTest keeps lists before Streamlit 1.6x)."""
    value = at.query_params.get(param)
    return value[-1] if isinstance(value, list) else value


def open_at(**params: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "explore.py"), default_timeout=APPTEST_TIMEOUT)
    for key, value in params.items():
        at.query_params[key] = value
    return at.run()


def test_the_address_opens_a_data_set_and_follows_the_picker(tmp_path, monkeypatch):
    at = open_at(dataset="mnist_sample")
    assert not at.exception and not at.warning and not at.error
    assert at.selectbox(key="explore_dataset").value == "mnist_sample"
    assert at.session_state[state.DATASET_KEY] == "mnist_sample"
    assert [m.value for m in at.metric][-1] == "10" and charts(at) == 4
    assert address(at, "dataset") == "mnist_sample"

    # The user's pick wins over the address it came from, and goes into the address.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # CIFAR-10 missing: a quick error
    monkeypatch.setattr(datasets, "_online", lambda host: False)
    at.selectbox(key="explore_dataset").select("cifar10").run()
    assert not at.exception
    assert at.selectbox(key="explore_dataset").value == "cifar10"
    assert address(at, "dataset") == "cifar10"
    at.run()
    assert at.selectbox(key="explore_dataset").value == "cifar10"


def test_an_unknown_data_set_in_the_address_is_a_warning():
    at = open_at(dataset="[evil](http://evil.example)")
    assert not at.exception
    assert len(at.warning) == 1 and "does not have" in at.warning[0].value
    assert not re.search(r"(?<!\\)[\[\]<]", at.warning[0].value)  # text, not a link
    shown = at.selectbox(key="explore_dataset").value
    assert shown in datasets.REGISTRY and address(at, "dataset") == shown
    at.run()  # reported once: the address now names what is shown
    assert not at.warning


def test_someone_elses_upload_in_the_address_is_a_warning():
    at = open_at(dataset="folder:ann.zip")
    assert not at.exception
    assert "not in this browser session" in at.warning[0].value
    assert at.selectbox(key="explore_dataset").value in datasets.REGISTRY


def test_an_upload_with_its_own_test_part_says_where_the_test_set_came_from():
    from shapes import shapes_zip
    from test_zip_layout import notes_zip

    ds = datasets.load_zip(notes_zip(train=4, test=3), (16, 16), False, name="folder:cd.zip")
    at = explore("folder:cd.zip", upload=ds)
    assert not at.exception and not at.error
    assert at.metric[2].value == "6"  # Test images: the test part's, not 20 % at random
    captions = [c.value for c in at.caption]
    assert any(c.endswith(r"Test set from test\_set/: 6 images.") for c in captions), captions
    # A zip without parts is split at random, and the caption does not claim otherwise.
    ds = datasets.load_zip(shapes_zip(per_class=5, size=16), (16, 16), False,
                           name="folder:shapes.zip")
    at = explore("folder:shapes.zip", upload=ds)
    assert not at.exception and not any("Test set from" in c.value for c in at.caption)
