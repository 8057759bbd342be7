"""AppTest of the home page and of the Explore page on the sample, MNIST, an upload, CIFAR."""

from __future__ import annotations

import pytest
from conftest import APPTEST_TIMEOUT, ROOT, has_real_mnist
from streamlit.testing.v1 import AppTest

from cnnlab import datasets


def explore(name: str | None = None, **state) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "explore.py"), default_timeout=APPTEST_TIMEOUT)
    if name:
        at.session_state["dataset_name"] = name
    for key, value in state.items():
        at.session_state[key] = value
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
    assert at.session_state["dataset_name"] == "mnist"
    assert [m.value for m in at.metric] == ["54,001", "5,999", "10,000", "10"]
    assert charts(at) == 4


def test_explore_switching_data_set_updates_the_shared_choice():
    at = explore("mnist_sample")
    at.selectbox(key="explore_dataset").select("fashion_mnist" if has_real_mnist()
                                               else "mnist_sample").run()
    assert not at.exception
    assert at.session_state["dataset_name"] == at.selectbox(key="explore_dataset").value


def test_explore_shows_an_upload_kept_in_the_session():
    sample = datasets.load("mnist_sample")
    up = datasets.subset(sample, 50)
    info = datasets.DatasetInfo("folder:pets.zip", "Your images", up.info.class_names,
                                up.info.image_shape)
    ds = datasets.Dataset(info, up.x_train, up.y_train, up.x_test[:20], up.y_test[:20])
    at = explore("folder:pets.zip", uploaded_dataset=ds)
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
    at = explore("folder:shapes.zip", uploaded_dataset=ds)
    assert not at.exception
    assert any("What the model trains on" in h.value for h in at.subheader)
    assert charts(at) == 4  # the preview is computed only when asked for
    at.toggle(key="explore_augment").set_value(True).run()
    assert not at.exception and charts(at) == 5
