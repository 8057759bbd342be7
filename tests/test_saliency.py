"""Why it decided: saliency maps (cnnlab.use.saliency), their overlay, the Why panel (AppTest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import APPTEST_TIMEOUT, ROOT, plain
from test_predict_page import digit_png, make_run

from cnnlab import charts
from cnnlab.use import saliency
from cnnlab.use.inference import Predictor
from cnnlab.use.saliency import Method

REGION = 8  # side of the occluded square in the faithfulness test (about one stroke)
DIGITS = 12  # test digits averaged over, so the comparison is stable


@pytest.fixture(scope="module")
def trained() -> tuple[Predictor, np.ndarray]:
    """(the quick preset trained 2 epochs on 4000 bundled MNIST images, test digits in
    [0, 1] it classifies right); ~15 s on 2 CPU cores."""
    import keras

    from cnnlab.data import datasets
    from cnnlab.model.config import PRESETS
    from cnnlab.model.models import build_model, compile_model

    keras.utils.set_random_seed(0)
    ds = datasets.load("mnist_sample")
    config = PRESETS["quick"].config
    model = build_model(config, (28, 28, 1), 10)
    compile_model(model, config)
    model.fit(ds.x_train[:4000], ds.y_train[:4000], batch_size=64, epochs=2, verbose=0)
    predictor = Predictor(model)
    x = ds.x_test[:60].astype(np.float32) / 255
    right = predictor.probabilities(x).argmax(axis=1) == ds.y_test[:60]
    assert right.mean() > 0.85, right.mean()
    return predictor, x[right][:DIGITS]


def dense_only() -> Predictor:
    import keras

    keras.utils.set_random_seed(1)
    return Predictor(keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Rescaling(1 / 255), keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ]))


def occluded_drop(predictor: Predictor, x: np.ndarray, top: int, left: int, c: int) -> float:
    """How much blacking out the REGION square at (top, left) lowers class c's probability."""
    covered = x.copy()
    covered[top:top + REGION, left:left + REGION] = 0.0
    return float(predictor.probabilities(x)[c] - predictor.probabilities(covered)[c])


def hottest_square(heat: np.ndarray) -> tuple[int, int]:
    """(top, left) of the REGION square holding the most heat."""
    sums = np.lib.stride_tricks.sliding_window_view(heat, (REGION, REGION)).sum(axis=(2, 3))
    top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(top), int(left)


# --------------------------------------------------------------------------- the maps


@pytest.mark.parametrize("method", list(Method))
def test_maps_have_the_input_shape_and_lie_in_0_1(trained, method: Method) -> None:
    predictor, digits = trained
    for x in digits[:3]:
        found = saliency.explain(predictor, x, None, method)
        assert found.heat.shape == (28, 28) and found.heat.dtype == np.float32
        assert np.isfinite(found.heat).all()
        assert found.heat.min() >= 0.0 and found.heat.max() == pytest.approx(1.0)
        assert found.method is method and found.class_index == int(
            np.argmax(predictor.probabilities(x)))


@pytest.mark.parametrize("method", [Method.GRAD_CAM, Method.OCCLUSION])
def test_the_most_salient_region_matters_more_than_a_random_one(trained,
                                                                method: Method) -> None:
    """Faithfulness: covering the map's hottest square lowers the predicted class's
    probability more than covering random squares (averaged over digits and squares)."""
    predictor, digits = trained
    rng = np.random.default_rng(0)
    salient, random = [], []
    for x in digits:
        found = saliency.explain(predictor, x, None, method)
        c = found.class_index
        salient.append(occluded_drop(predictor, x, *hottest_square(found.heat), c))
        spots = rng.integers(0, 28 - REGION + 1, size=(5, 2))
        random.append(np.mean([occluded_drop(predictor, x, int(t), int(u), c)
                               for t, u in spots]))
    assert np.mean(salient) > np.mean(random) + 0.05, (np.mean(salient), np.mean(random))


@pytest.mark.parametrize("method", [Method.GRAD_CAM, Method.OCCLUSION])
def test_the_class_picked_changes_the_map(trained, method: Method) -> None:
    predictor, digits = trained
    x = digits[0]
    order = np.argsort(predictor.probabilities(x))[::-1]
    first = saliency.explain(predictor, x, int(order[0]), method)
    runner_up = saliency.explain(predictor, x, int(order[1]), method)
    assert runner_up.class_index == int(order[1])
    assert not np.allclose(first.heat, runner_up.heat, atol=1e-3)


def test_a_model_without_conv_layers_still_gets_a_map() -> None:
    predictor = dense_only()
    x = np.zeros((28, 28, 1), np.float32)
    x[6:22, 12:16] = 1.0  # a "1"
    found = saliency.explain(predictor, x, 3, Method.GRAD_CAM)
    assert found.method is Method.INTEGRATED_GRADIENTS and found.layer is None
    assert found.heat.shape == (28, 28) and 0.0 <= found.heat.min() <= found.heat.max() <= 1.0
    assert found.heat.any() and not found.heat[:5].any()  # ink only: the baseline is black
    assert "no conv layer" in found.describe("3")
    occluded = saliency.explain(predictor, x, 3, Method.OCCLUSION)
    assert occluded.heat.shape == (28, 28) and np.isfinite(occluded.heat).all()
    with pytest.raises(ValueError, match="Grad-CAM needs a Conv2D"):
        saliency.grad_cam(predictor, x, 3)


def test_colour_inputs_get_maps_of_their_size() -> None:
    import keras

    keras.utils.set_random_seed(2)
    predictor = Predictor(keras.Sequential([
        keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax"),
    ]))
    x = np.random.default_rng(0).random((32, 32, 3), dtype=np.float32)
    for method in (Method.GRAD_CAM, Method.OCCLUSION):
        heat = saliency.explain(predictor, x, 4, method).heat
        assert heat.shape == (32, 32) and np.isfinite(heat).all() and heat.max() <= 1.0
    assert charts.saliency_overlay(x, heat, scale=2).shape == (64, 64, 3)


def test_a_bad_class_and_empty_maps_are_handled(trained) -> None:
    predictor, digits = trained
    with pytest.raises(ValueError, match="class_index=10 is not a class.*0 to 9"):
        saliency.explain(predictor, digits[0], 10)
    assert not saliency.normalise(np.full((4, 4), np.nan)).any()
    assert not saliency.normalise(-np.ones((4, 4))).any()
    empty = saliency.Explanation(np.zeros((28, 28), np.float32), Method.OCCLUSION, 7, 0.001)
    assert empty.describe("7").startswith("Nothing in this input raises")


def test_overlay_keeps_cold_pixels_and_colours_hot_ones() -> None:
    x = np.zeros((4, 4, 1), np.float32)
    x[1, 1] = 1.0
    heat = np.zeros((4, 4), np.float32)
    heat[2, 2] = 1.0
    rgb = charts.saliency_overlay(x, heat, scale=3)
    assert rgb.shape == (12, 12, 3) and rgb.dtype == np.uint8
    assert rgb[3, 3].tolist() == [153, 153, 153]  # cold ink: dimmed grey
    assert rgb[0, 0].tolist() == [0, 0, 0]
    r, g, b = rgb[6, 6].tolist()
    assert r > 200 and g > 200 and b == 0  # the hottest pixel: yellow


# --------------------------------------------------------------------------- the panel


@pytest.fixture(scope="module")
def served_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs"))


def why(at):
    """The Why expander of the page in ``at``."""
    return next(e for e in at.expander if e.label == "Why did it decide this?")


def test_the_panel_computes_only_when_open_and_shows_the_overlay(
        served_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CNNLAB_RUNS_DIR", str(served_run.parent))
    calls = []
    explain = saliency.explain
    monkeypatch.setattr(saliency, "explain", lambda *a, **k: calls.append(a) or explain(*a, **k))
    at = AppTest.from_file(str(ROOT / "pages" / "predict.py"), default_timeout=APPTEST_TIMEOUT)
    at.run()
    at.file_uploader(key="picture").set_value(("one.png", digit_png(), "image/png")).run()
    assert not at.exception and not at.error, (at.exception, at.error)
    assert [e.label for e in at.expander if e.label.startswith("Why")] == [
        "Why did it decide this?"]
    assert not calls and not len(why(at).image) and not len(why(at).radio)

    at.session_state["why_upload"] = True  # the user opens the expander
    at.run()
    assert not at.exception and not at.error and not at.warning, (at.exception, at.warning)
    assert len(calls) == 1 and len(why(at).image) == 1  # the overlay picture
    assert any("Grad-CAM on layer block2_conv1" in plain(c.value) for c in why(at).caption)

    at.radio(key="why_method_upload").set_value(Method.OCCLUSION).run()
    at.selectbox(key="why_class_upload").set_value(7).run()
    assert not at.exception and len(calls) == 3 and calls[-1][2:] == (7, Method.OCCLUSION)
    assert any("Occlusion" in plain(c.value) and "“7”" in c.value for c in why(at).caption)
