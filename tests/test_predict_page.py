"""Predict: model loading/validation (cnnlab.use.inference), the CLI, and the page (AppTest)."""

from __future__ import annotations

import atexit
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import APPTEST_TIMEOUT, ROOT, CliHere, plain
from PIL import Image, ImageDraw

from cnnlab.runs import store as runs
from cnnlab.uploads import model_check
from cnnlab.uploads.model_files import ModelRejected
from cnnlab.use import inference
from cnnlab.use.inference import Predictor
from pages import state

_MADE: dict[tuple[int, int], Path] = {}  # (limit, epochs): a finished run made by make_run


def make_run(root: Path, limit: int = 600, epochs: int = 1) -> Path:
    """A real finished run (quick preset on the bundled MNIST sample) under ``root``.

    Trained once per ``limit`` and ``epochs`` in a test process, copied after that (the same
    files and run id; about 4 s less each time, and a dozen modules make one)."""
    made = _MADE.get((limit, epochs))
    if made is not None and not (Path(root) / made.name).exists():
        return Path(shutil.copytree(made, runs.ensure_root(root) / made.name))
    run_dir = train_quick_run(root, limit, epochs)
    if (limit, epochs) not in _MADE:
        keep = Path(tempfile.mkdtemp(prefix="cnnlab-made-run-"))
        atexit.register(shutil.rmtree, keep, ignore_errors=True)
        _MADE[limit, epochs] = Path(shutil.copytree(run_dir, keep / run_dir.name))
    return run_dir


def train_quick_run(root: Path, limit: int, epochs: int) -> Path:
    """Train make_run's run under ``root``."""
    from cnnlab.data import datasets
    from cnnlab.model.config import PRESETS
    from cnnlab.model.fit_settings import FitSettings
    from cnnlab.train import training

    ds = datasets.load("mnist_sample")
    request = training.TrainRequest(dataset="mnist_sample", config=PRESETS["quick"].config,
                                    fit=FitSettings(epochs=epochs), limit=limit,
                                    preset="quick")
    run_dir = runs.create_run(root, training.run_config(request, ds))
    result = training.train_run(request, ds, run_dir)
    assert result.status == "finished", result.message
    return run_dir


def digit_png(dark_on_light: bool = False) -> bytes:
    """A hand-drawn-looking '1' as PNG bytes (200×200)."""
    bg, ink = ((255, 0) if dark_on_light else (0, 255))
    img = Image.new("L", (200, 200), bg)
    ImageDraw.Draw(img).line([(100, 30), (100, 170)], fill=ink, width=14)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def keras_bytes(model, tmp_path: Path, name: str = "m.keras") -> bytes:
    path = tmp_path / name
    model.save(path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture
def runs_with_model(trained_run: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CNNLAB_RUNS_DIR", str(trained_run.parent))
    return trained_run


def lambda_model():
    import keras

    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Lambda(lambda t: t / 255.0),
                             keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])


def dense_model(rescale: bool):
    import keras

    layers = [keras.Input((28, 28, 1))]
    if rescale:
        layers.append(keras.layers.Rescaling(1 / 255))
    layers += [keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.Flatten(),
               keras.layers.Dense(10, activation="softmax")]
    return keras.Sequential(layers)


# --------------------------------------------------------------------------- inference


def test_rejects_a_file_that_is_not_a_keras_model(tmp_path: Path) -> None:
    path = tmp_path / "notes.keras"
    path.write_bytes(b"certainly not a zip")
    with pytest.raises(ModelRejected, match=r"notes.keras could not be read as a Keras model"):
        model_check.load_model_file(path)


@pytest.mark.slow
def test_rejects_unsafe_lambda_model(tmp_path: Path) -> None:
    path = tmp_path / "lam.keras"
    lambda_model().save(path)
    with pytest.raises(ModelRejected, match="Lambda layer.*not allowed.*built-in Keras layers"):
        model_check.load_model_file(path)


def test_rejects_model_whose_input_is_not_an_image(tmp_path: Path) -> None:
    import keras

    path = tmp_path / "flat.keras"
    keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation="softmax")]).save(path)
    with pytest.raises(ModelRejected, match=r"input of shape \(784,\).*\(height, width, 1\)"):
        model_check.load_model_file(path)


def test_input_scale_follows_the_rescaling_layer() -> None:
    assert inference.input_scale(dense_model(rescale=True)) == 255.0
    assert inference.input_scale(dense_model(rescale=False)) == 1.0


def test_predictor_probabilities_feature_maps_and_filters(trained_run: Path) -> None:
    p = inference.load_run_predictor(trained_run)
    assert p.input_shape == (28, 28, 1) and p.n_classes == 10 and p.scale == 255.0
    x = np.random.default_rng(0).random((28, 28, 1), dtype=np.float32)
    probs = p.probabilities(x)
    assert probs.shape == (10,) and probs.sum() == pytest.approx(1.0, abs=1e-4)
    assert p.probabilities(np.stack([x, x])).shape == (2, 10)
    maps = p.feature_maps(x)
    assert [m.shape[-1] for _, m in maps] == [16, 32]  # quick preset: conv16, conv32
    # The compiled forward pass gives what an eager call of the model gives, for one image
    # and for batches of other sizes (no retrace per size on TensorFlow).
    import keras

    batch = np.random.default_rng(1).random((5, 28, 28, 1), dtype=np.float32)
    eager = keras.ops.convert_to_numpy(p.model(batch * 255.0, training=False))
    assert np.allclose(p.probabilities(batch), eager, atol=1e-5)
    assert np.allclose(p.probabilities(batch[0]), eager[0], atol=1e-5)
    assert p.first_filters().shape == (16, 5, 5, 1)
    assert inference.run_class_names(trained_run) == tuple(str(i) for i in range(10))


def test_predictable_runs_put_the_best_finished_digit_run_first(tmp_path: Path,
                                                               trained_run: Path) -> None:
    def fake(name: str, status: str, dataset: str, acc: float | None) -> Path:
        d = runs.create_run(tmp_path, {"name": name, "dataset": dataset})
        runs.update_status(d, status=status)
        shutil.copy(runs.best_model_path(trained_run), runs.best_model_path(d))
        if acc is not None:
            runs.save_metrics(d, {"test_accuracy": acc})
        return d

    fake("fashion", "finished", "fashion_mnist", 0.99)
    good = fake("good", "finished", "mnist", 0.97)
    fake("worse", "finished", "mnist", 0.90)
    fake("stopped", "stopped", "mnist", None)
    runs.update_status(runs.create_run(tmp_path, {"name": "no-model", "dataset": "mnist"}),
                       status="running")
    order = [r.run_dir for r in inference.predictable_runs(tmp_path)]
    assert order[0] == good.resolve() and len(order) == 4
    assert runs.load_status(order[-1])["status"] == "stopped"


# --------------------------------------------------------------------------- CLI


@pytest.mark.slow
def test_cli_predict_json(trained_run: Path, tmp_path: Path, cli_here: CliHere) -> None:
    image = tmp_path / "one.png"
    image.write_bytes(digit_png(dark_on_light=True))
    out = cli_here("predict", "--run", str(trained_run), "--image", str(image), "--json")
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert set(payload) == {"label", "class_name", "probabilities", "ms"}
    assert len(payload["probabilities"]) == 10
    assert sum(payload["probabilities"]) == pytest.approx(1.0, abs=1e-3)
    assert payload["label"] == int(np.argmax(payload["probabilities"]))
    assert payload["class_name"] == str(payload["label"]) and payload["ms"] > 0


@pytest.mark.slow
def test_cli_predict_bad_inputs_exit_2(trained_run: Path, tmp_path: Path,
                                       cli_here: CliHere) -> None:
    text = tmp_path / "x.png"
    text.write_text("not an image")
    out = cli_here("predict", "--run", str(trained_run), "--image", str(text), "--json")
    assert out.returncode == 2 and "not a readable picture" in out.stderr and not out.stdout
    out = cli_here("predict", "--run", str(tmp_path), "--image", str(text), "--json")
    assert out.returncode == 2 and "not a run directory" in out.stderr


@pytest.mark.slow
def test_cli_predict_model_file_agrees_with_its_run(trained_run: Path, tmp_path: Path,
                                                    cli_here: CliHere) -> None:
    image = tmp_path / "one.png"
    image.write_bytes(digit_png(dark_on_light=True))
    by_run = cli_here.json("predict", "--run", trained_run, "--image", image)
    out = cli_here("predict", "--model", runs.best_model_path(trained_run), "--image", image,
                   "--json")
    assert out.returncode == 0, out.stderr
    by_file = json.loads(out.stdout)
    assert by_file["label"] == by_run["label"] and by_file["class_name"] == str(by_file["label"])
    assert by_file["probabilities"] == pytest.approx(by_run["probabilities"], abs=1e-5)


@pytest.mark.slow
def test_cli_predict_model_refuses_hostile_oversized_and_missing_files(tmp_path: Path) -> None:
    image = tmp_path / "one.png"
    image.write_bytes(digit_png())
    lam = tmp_path / "lam.keras"
    lambda_model().save(lam)
    wide = tmp_path / "wide.keras"
    dense_model(rescale=True).save(wide)  # 26*26*4*10 + ... = 27,090 parameters
    cases = [
        ((lam, {}), "Lambda layer"),
        ((wide, {"CNNLAB_MAX_PARAMS": "1000"}), "allows at most 1,000"),
        ((tmp_path / "gone.keras", {}), "--model"),
    ]
    for (model, env), says in cases:
        out = subprocess.run(
            [sys.executable, "-m", "cnnlab", "predict", "--model", str(model), "--image",
             str(image), "--json"], capture_output=True, text=True, cwd=ROOT, timeout=120,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env})
        assert out.returncode == 2 and not out.stdout, (model, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], lines
        assert "Traceback" not in out.stderr


# --------------------------------------------------------------------------- page


def page():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(ROOT / "pages" / "predict.py"), default_timeout=APPTEST_TIMEOUT)


@pytest.mark.slow
def test_page_without_runs_trains_the_quick_preset_in_one_click(
    runs_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses
    import time

    from cnnlab.model import config

    # No MNIST files: the default data set is the bundled sample, so training takes seconds;
    # one epoch of the preset, not its four (the button's path is the point here).
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    quick = config.PRESETS["quick"]
    monkeypatch.setitem(config.PRESETS, "quick",
                        dataclasses.replace(quick, fit=dataclasses.replace(quick.fit, epochs=1)))
    at = page().run()
    assert not at.exception, at.exception
    assert any("no trained model yet" in i.value for i in at.info)
    assert at.selectbox(key="predict_model").value == "__own__"
    next(b for b in at.button if b.label == "Train the quick preset").click().run()
    assert not at.exception and not at.error, (at.exception, at.error)
    assert at.get("progress"), "training progress is shown"
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        done = [r for r in runs.list_runs(runs_root) if r.status.get("status") == "finished"]
        if done:
            break
        time.sleep(1)
    assert done, [r.status for r in runs.list_runs(runs_root)]
    at.run()
    assert not at.exception
    assert at.selectbox(key="predict_model").value == str(done[0].run_dir)
    assert done[0].dataset == "mnist_sample" and done[0].config["preset"] == "quick"
    assert done[0].config["model"] == quick.config.to_dict() and done[0].config["fit"][
        "epochs"] == 1


def test_page_with_a_run_predicts_an_uploaded_picture(runs_with_model: Path) -> None:
    at = page().run()
    assert not at.exception, at.exception
    assert at.selectbox(key="predict_model").value == str(runs_with_model.resolve())
    assert any("Draw one digit" in c.value for c in at.caption)
    at.file_uploader(key="picture").set_value(("one.png", digit_png(), "image/png")).run()
    assert not at.exception and not at.error, (at.exception, at.error)
    metric = next(m for m in at.metric if m.label == "Prediction")
    assert metric.value in [str(i) for i in range(10)] and "sure" in metric.delta
    closed = len(at.get("plotly_chart"))
    at.session_state["look_inside_upload"] = True  # what opening "Look inside" sets
    at.run()
    assert not at.exception
    assert len(at.get("plotly_chart")) >= closed + 2  # feature maps, filters


def drawn_seven() -> np.ndarray:
    """A '7' as st_canvas returns it: 280×280 RGBA, white ink on black."""
    img = Image.new("RGBA", (280, 280), (0, 0, 0, 255))
    ImageDraw.Draw(img).line([(60, 50), (200, 50), (110, 230)], fill=(255, 255, 255, 255),
                             width=18, joint="curve")
    return np.asarray(img)


@pytest.fixture
def counted(runs_with_model: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """A canvas holding a drawn 7 (AppTest has no browser to draw in), and how often the
    page computed each optional view."""
    import types

    from cnnlab.data import input_steps, preprocess

    calls = {"steps": 0, "naive": 0, "feature_maps": 0}

    def counting(name: str, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    # The page imports st_canvas when it runs; the real module only loads inside a server.
    canvas = types.SimpleNamespace(image_data=drawn_seven())
    monkeypatch.setitem(sys.modules, "streamlit_drawable_canvas",
                        types.SimpleNamespace(st_canvas=lambda **_: canvas))
    monkeypatch.setattr(input_steps, "canvas_steps", counting("steps", input_steps.canvas_steps))
    monkeypatch.setattr(preprocess, "naive_input", counting("naive", preprocess.naive_input))
    monkeypatch.setattr(Predictor, "feature_maps", counting("feature_maps",
                                                            Predictor.feature_maps))
    return calls


STEPS_LABEL = "How your drawing becomes the model's input"


def test_drawing_steps_and_naive_resize_compute_only_when_open(counted: dict[str, int]) -> None:
    at = page().run()
    assert not at.exception and not at.error, (at.exception, at.error)
    assert [m.label for m in at.metric].count("Prediction") == 1  # the drawing is predicted
    labels = [e.label for e in at.expander]
    assert STEPS_LABEL in labels and "Look inside: feature maps and filters" in labels
    assert counted == {"steps": 0, "naive": 0, "feature_maps": 0}  # closed: nothing computed
    assert not at.toggle  # the naive resize toggle sits inside the closed expander

    at.session_state["input_steps"] = True  # what opening the expander sets
    at.run()
    assert not at.exception
    assert counted["steps"] == 1 and counted["naive"] == 0
    titles = [m.value for m in at.markdown]
    for title in ("**1. Ink map**", "**2. Crop box**", "**3. Longest side 20 px**",
                  "**4. Centre of mass → (14, 14)**", "**5. The 28×28 input**"):
        assert title in titles
    steps = next(e for e in at.expander if e.label == STEPS_LABEL)
    assert len(steps.image) == 5  # one picture per step
    assert any(c.value.startswith(("Measured on", "Not measured yet")) for c in steps.caption)

    at.toggle(key="naive_resize").set_value(True).run()
    assert not at.exception
    assert counted["naive"] == 1
    assert [m.label for m in at.metric].count("Prediction") == 3  # drawing, MNIST-style, naive
    assert {"MNIST-style", "Naive resize"} <= {c.value for c in at.caption}
    assert counted["feature_maps"] == 0

    at.session_state["look_inside_draw"] = True
    at.run()
    assert not at.exception and counted["feature_maps"] == 1


def test_the_caption_quotes_the_stored_measurement(counted: dict[str, int], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnlab.data import drawn_digits

    stored = tmp_path / "preprocess_accuracy.json"
    stored.write_text(json.dumps({"n": 1234, "model": "a test model",
                                  "mnist_style_accuracy": 0.9712, "naive_accuracy": 0.4321,
                                  "original_accuracy": 0.99}))
    monkeypatch.setattr(drawn_digits, "MEASURED_PATH", stored)
    at = page()
    at.session_state["input_steps"] = True
    at.run()
    caption = next(c.value for c in at.caption if c.value.startswith("Measured on"))
    assert "1,234 drawn digits" in caption and "a test model" in caption
    assert "**97.1%**" in caption and "**43.2%**" in caption
    stored.unlink()
    at.run()
    assert any(c.value.startswith("Not measured yet") for c in at.caption)


def test_page_refuses_a_bad_picture(runs_with_model: Path) -> None:
    at = page().run()
    at.file_uploader(key="picture").set_value(("x.png", b"not a picture", "image/png")).run()
    assert not at.exception
    assert "not a readable picture" in at.error[0].value


@pytest.mark.slow
def test_page_own_model_upload(runs_root: Path, tmp_path: Path) -> None:
    at = page().run()
    uploader = at.file_uploader(key="own_model")
    uploader.set_value(("lam.keras", keras_bytes(lambda_model(), tmp_path, "lam.keras"),
                        "application/octet-stream")).run()
    assert not at.exception
    assert "lam.keras" in at.error[0].value and "Lambda" in at.error[0].value
    good = keras_bytes(dense_model(rescale=False), tmp_path, "mine.keras")
    at.file_uploader(key="own_model").set_value(("mine.keras", good, "application/octet-stream"))
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.file_uploader(key="picture").set_value(("one.png", digit_png(), "image/png")).run()
    assert not at.exception and not at.error
    assert any(m.label == "Prediction" for m in at.metric)


def test_page_model_upload_that_is_not_a_model(runs_root: Path) -> None:
    at = page().run()
    at.file_uploader(key="own_model").set_value(("bad.keras", b"zzz", "application/zip")).run()
    assert not at.exception
    assert "could not be read as a Keras model" in at.error[0].value


def test_predictor_input_is_scaled_for_models_without_rescaling(tmp_path: Path) -> None:
    import keras

    model = dense_model(rescale=False)
    p = Predictor(model)
    x = np.full((28, 28, 1), 0.5, np.float32)
    direct = keras.ops.convert_to_numpy(model(x[None], training=False))[0]
    assert np.allclose(p.probabilities(x), direct, atol=1e-6)


def address(at, param: str) -> str | None:
    """``?param=`` after the last run (AppTest keeps lists before Streamlit 1.6x)."""
    value = at.query_params.get(param)
    return value[-1] if isinstance(value, list) else value


def test_the_address_opens_a_run_and_follows_the_pick(trained_run: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "runs"
    shutil.copytree(trained_run, root / trained_run.name)
    shutil.copytree(trained_run, root / "20200101-000000-copy")
    monkeypatch.setenv("CNNLAB_RUNS_DIR", str(root))
    default = page().run().selectbox(key="predict_model").value
    other = next(p for p in (root / trained_run.name, root / "20200101-000000-copy")
                 if str(p.resolve()) != default)

    at = page()
    at.query_params["run"] = other.name
    at.run()
    assert not at.exception and not at.warning, at.exception
    assert at.selectbox(key="predict_model").value == str(other.resolve())
    assert at.session_state[state.SELECTED_RUN_KEY] == str(other.resolve())
    assert address(at, "run") == other.name

    at.selectbox(key="predict_model").set_value(default).run()
    assert address(at, "run") == Path(default).name  # the user's pick goes into the address
    at.selectbox(key="predict_model").set_value("__own__").run()
    assert not at.exception and address(at, "run") is None


def test_an_unknown_or_unsafe_run_in_the_address_is_a_warning(runs_with_model: Path) -> None:
    for wanted, says in (("20200101-000000-nothing", "no run '20200101-000000-nothing'"),
                         ("../../etc", "not valid")):
        at = page()
        at.query_params["run"] = wanted
        at.run()
        assert not at.exception, at.exception
        assert says in plain(at.warning[0].value)
        assert at.selectbox(key="predict_model").value == str(runs_with_model.resolve())
        assert address(at, "run") == runs_with_model.name


@pytest.mark.slow
def test_a_backbone_run_is_listed_in_runs_and_predicts_an_uploaded_picture(
    runs_root: Path,
) -> None:
    """A transfer-learning run (MobileNetV3Small, random weights, no download) needs nothing
    new from Runs or Draw & predict: its model holds the backbone and its preprocessing."""
    from shapes import shape_image, shapes_zip
    from streamlit.testing.v1 import AppTest

    from cnnlab.data import datasets
    from cnnlab.model.config import ModelConfig
    from cnnlab.model.fit_settings import FitSettings
    from cnnlab.train import training

    ds = datasets.load_zip(shapes_zip(per_class=8, size=32), (32, 32), False,
                           name="folder:shapes.zip")
    request = training.TrainRequest(
        dataset=ds.info.name, config=ModelConfig(blocks=(), dense=(),
                                                 backbone="MobileNetV3Small"),
        fit=FitSettings(batch_size=8, epochs=1, patience=0), name="transfer", weights=None)
    run_dir = runs.create_run(runs_root, training.run_config(request, ds))
    result = training.train_run(request, ds, run_dir)
    assert result.status == "finished", result.message

    listing = AppTest.from_file(str(ROOT / "pages" / "runs.py"),
                                default_timeout=APPTEST_TIMEOUT).run()
    assert not listing.exception, listing.exception
    assert run_dir.name in set(listing.dataframe[0].value["run_id"])

    at = page()
    at.session_state[state.SELECTED_RUN_KEY] = str(run_dir)
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="predict_model").value == str(run_dir.resolve())
    png = io.BytesIO()
    shape_image("circle", np.random.default_rng(7), 96).save(png, format="PNG")
    at.file_uploader(key="picture").set_value(("circle.png", png.getvalue(), "image/png")).run()
    assert not at.exception and not at.error, (at.exception, at.error)
    metric = next(m for m in at.metric if m.label == "Prediction")
    assert metric.value in ("circle", "square") and "sure" in metric.delta
