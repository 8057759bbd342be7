"""cnnlab.use.export on a real one-epoch run (quick preset, 3,000 MNIST-sample images): the
SavedModel zip loads back and computes the same probabilities, both TFLite models label test
images as Keras does, the run folder keeps them, and the Runs page offers them."""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import APPTEST_TIMEOUT
from streamlit.testing.v1 import AppTest

from cnnlab.data import datasets
from cnnlab.runs import store as runs
from cnnlab.use import export
from cnnlab.use.inference import load_run_model

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "runs.py")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real finished run: the quick preset, 1 epoch on 3,000 MNIST-sample images."""
    from cnnlab.model.config import PRESETS
    from cnnlab.model.fit_settings import FitSettings
    from cnnlab.train import training

    root = tmp_path_factory.mktemp("export") / "runs"
    ds = datasets.load("mnist_sample")
    request = training.TrainRequest(dataset="mnist_sample", config=PRESETS["quick"].config,
                                    fit=FitSettings(epochs=1), limit=3000, preset="quick",
                                    name="export")
    run_dir = runs.create_run(root, training.run_config(request, ds))
    result = training.train_run(request, ds, run_dir)
    assert result.status == "finished", result.message
    return run_dir


@pytest.fixture(scope="module")
def x_test() -> np.ndarray:
    """The first export.CHECK_IMAGES test images, raw uint8 as the data set keeps them."""
    return datasets.load("mnist_sample").x_test[:export.CHECK_IMAGES]


@pytest.fixture
def run_copy(trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the trained run (nothing exported yet) in CNNLAB_RUNS_DIR."""
    copy = tmp_path / "runs" / trained_run.name
    shutil.copytree(trained_run, copy)
    monkeypatch.setenv("CNNLAB_RUNS_DIR", str(copy.parent))
    return copy


def test_saved_model_zip_loads_back_with_the_same_probabilities(
        trained_run: Path, x_test: np.ndarray, tmp_path: Path) -> None:
    import tensorflow as tf

    data = export.saved_model_zip(runs.best_model_path(trained_run))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert "saved_model/saved_model.pb" in zf.namelist()
        zf.extractall(tmp_path)
    loaded = tf.saved_model.load(str(tmp_path / "saved_model"))
    model = load_run_model(runs.best_model_path(trained_run))
    assert model.inputs[0].dtype == "float32"  # raw 0..255 pixels; Rescaling is inside
    x = x_test.astype(np.float32)
    expected = np.asarray(model(x, training=False))
    np.testing.assert_allclose(np.asarray(loaded.serve(x)), expected, atol=1e-5)


def test_tflite_models_agree_with_keras_and_int8_is_smaller(
        trained_run: Path, x_test: np.ndarray) -> None:
    best = runs.best_model_path(trained_run)
    model = load_run_model(best)
    sizes = {}
    for quantize in (False, True):
        content = export.tflite_bytes(best, quantize=quantize)
        sizes[quantize] = len(content)
        agree, total = export.tflite_agreement(model, content, x_test)
        assert total == 100 and agree >= 99, (quantize, agree)
    assert sizes[True] < sizes[False] / 2  # int8 weights: about a quarter of float32
    with pytest.raises(ValueError, match="model takes"):
        export.tflite_agreement(model, content, np.zeros((3, 32, 32, 3), np.uint8))


def test_without_litert_tensorflows_interpreter_checks_quietly(
        trained_run: Path, x_test: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import warnings

    best = runs.best_model_path(trained_run)
    content = export.tflite_bytes(best, quantize=False)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # ImportError
    model = load_run_model(best)
    with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation notice stays inside
        warnings.filterwarnings("error", message=r"(?s).*Interpreter is deprecated")
        agree, total = export.tflite_agreement(model, content, x_test[:20])
    assert (agree, total) == (20, 20)


def test_augmentation_layers_are_left_out_of_the_exports(x_test: np.ndarray,
                                                         tmp_path: Path) -> None:
    """Random augmentation layers hold ops TFLite cannot run; at inference they do nothing."""
    import dataclasses

    from cnnlab.model.config import PRESETS, Augmentation
    from cnnlab.model.models import build_model

    config = dataclasses.replace(PRESETS["quick"].config,
                                 augmentation=Augmentation(flip=True, translate=0.1, rotate=0.05,
                                                              erase=0.5))
    model = build_model(config, (28, 28, 1), 10)
    path = tmp_path / "augmented.keras"
    model.save(path)
    plain = export.inference_model(model)
    assert [layer.name for layer in plain.layers] == [
        layer.name for layer in model.layers if not layer.name.startswith("augment")]
    assert export.inference_model(plain) is plain  # nothing to leave out
    content = export.tflite_bytes(path, quantize=False)
    assert export.tflite_agreement(model, content, x_test) == (100, 100)


def test_prepare_exports_keeps_them_for_this_model_only(run_copy: Path,
                                                        x_test: np.ndarray) -> None:
    assert export.load_exports(run_copy) is None
    steps: list[str] = []
    files = export.prepare_exports(run_copy, x_test, lambda f, text: steps.append(text))
    assert [f.file_name for f in files] == list(export.EXPORT_NAMES) and steps
    for item in files:
        assert export.export_path(run_copy, item.file_name).stat().st_size == item.size
    assert [f.agreement is None for f in files] == [True, False, False]
    assert all(f.agreement[0] >= 99 and f.agreement[1] == 100 for f in files[1:])
    assert export.load_exports(run_copy) == files  # found again without converting

    best = runs.best_model_path(run_copy)
    stat = best.stat()
    os.utime(best, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a resumed run's model
    assert export.load_exports(run_copy) is None
    os.utime(best, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    manifest = run_copy / export.EXPORT_DIR / export.MANIFEST_FILE
    payload = json.loads(manifest.read_text())
    payload["files"][0]["file_name"] = "../config.json"  # never a download outside export/
    manifest.write_text(json.dumps(payload))
    assert export.load_exports(run_copy) is None
    manifest.write_text("{torn")
    assert export.load_exports(run_copy) is None


def test_other_backends_are_told_export_needs_tensorflow(
        trained_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(export.ExportUnavailable, match="TensorFlow backend.*KERAS_BACKEND=jax"):
        export.prepare_exports(trained_run, None)


def test_size_text() -> None:
    assert [export.size_text(n) for n in (950, 114_232, 1_500_000, 3 * 1024**3)] == [
        "950 B", "111.6 KB", "1.4 MB", "3.0 GB"]


def test_runs_page_prepares_and_offers_the_exports(run_copy: Path) -> None:
    at = AppTest.from_file(PAGE, default_timeout=APPTEST_TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    at.button(key="runs_export_prepare").click().run()
    assert not at.exception and not at.error, (at.exception, at.error)

    def export_buttons(at: AppTest) -> dict[str, str]:
        return {e.proto.id.rsplit("-", 1)[-1]: e.proto.label for e in at.get("download_button")
                if "runs_export_" in e.proto.id}

    labels = export_buttons(at)
    assert set(labels) == {"runs_export_keras", *(f"runs_export_{n}" for n in
                                                  export.EXPORT_NAMES)}
    for name, label in labels.items():
        assert label.endswith(" KB") or label.endswith(" MB"), (name, label)
    assert "SavedModel" in labels["runs_export_saved_model.zip"]
    agreements = [c.value for c in at.caption if c.value.startswith("agrees on")]
    assert len(agreements) == 2 and all(a.endswith("/100 test images") for a in agreements)

    at = AppTest.from_file(PAGE, default_timeout=APPTEST_TIMEOUT)  # a new visit: kept
    at.run()
    assert not at.exception and export_buttons(at) == labels
    assert not [b for b in at.button if b.key == "runs_export_prepare"]
