"""backbones: the table against Keras, backbone models' counts, preprocessing, weights,
config fields and the two-phase Keras script.

Each backbone is built once (module-scoped fixture): ResNet50, VGG16 and EfficientNetB0
take seconds each on a CPU.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest

from cnnlab.model import backbones
from cnnlab.model.backbones import BACKBONES, weights_problem
from cnnlab.model.config import (
    PRESETS,
    ConfigError,
    ConvBlock,
    DenseLayer,
    ModelConfig,
    range_problems,
    validate,
)
from cnnlab.model.fit_settings import FitSettings
from cnnlab.model.models import (
    build_model,
    layer_plan,
    layer_table,
    memory_bytes,
    to_keras_script,
    total_params,
    trainable_params,
)

GREY, COLOUR = (28, 28, 1), (32, 32, 3)
N_CLASSES = 3
# One build per backbone; grey and colour inputs both go through each preprocessing mode.
BUILD_SHAPES = {"MobileNetV3Small": GREY, "MobileNetV3Large": COLOUR,
                "EfficientNetB0": GREY, "ResNet50": COLOUR, "VGG16": GREY}
SECONDS: dict[str, float] = {}


def transfer_config(name: str, **changes) -> ModelConfig:
    """A backbone config with a small head (dropout, one dense layer with batch norm)."""
    config = ModelConfig(blocks=(), backbone=name, flatten_dropout=0.2,
                         dense=(DenseLayer(16, batch_norm=True),), unfreeze=10)
    return replace(config, **changes)


def _np(tensor) -> np.ndarray:
    """A Keras tensor as a NumPy array."""
    import keras

    return keras.ops.convert_to_numpy(tensor)


def _size(weights) -> int:
    return sum(math.prod(w.shape) for w in weights)


@pytest.fixture(scope="module", params=sorted(BACKBONES))
def built(request):
    """(name, input shape, config, model) for each backbone, built once."""
    name = request.param
    shape, config = BUILD_SHAPES[name], transfer_config(name)
    start = time.perf_counter()
    model = build_model(config, shape, N_CLASSES)
    SECONDS[name] = time.perf_counter() - start
    return name, shape, config, model


def test_backbones_import_no_tensorflow() -> None:
    code = ("import sys, cnnlab.model.config, cnnlab.model.models, cnnlab.model.backbones, "
            "cnnlab.train.budgets; "
            "print(any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "False"


def test_table_equals_keras_and_counts_equal_the_plan(built) -> None:
    name, shape, config, model = built
    row = BACKBONES[name]
    base = model.get_layer("backbone")
    # The table's numbers are Keras' own.
    assert base.count_params() == row.params
    assert len(base.layers) == row.layers
    assert tuple(base.output.shape[1:]) == row.output_shape
    assert sum(math.prod(ly.output.shape[1:]) for ly in base.layers[1:]) == row.activations
    # The model: total, trainable and frozen counts equal Keras' and the plan's.
    trainable = _size(model.trainable_weights)
    assert model.count_params() == total_params(config, shape, N_CLASSES)
    assert trainable == trainable_params(config, shape, N_CLASSES)
    assert _size(model.non_trainable_weights) == model.count_params() - trainable
    assert _size(base.trainable_weights) == 0  # phase 1: frozen
    rows = [(ly.name, tuple(ly.output.shape[1:]), ly.count_params()) for ly in model.layers]
    table = layer_table(config, shape, N_CLASSES)
    assert rows == [(r["name"], r["output_shape"], r["params"]) for r in table]
    assert [r["trainable"] for r in table if r["name"] == "backbone"] == [0]
    # The other input kind gives the same model after preprocessing.
    other = COLOUR if shape == GREY else GREY
    assert total_params(config, other, N_CLASSES) == model.count_params()
    assert layer_plan(config, other, N_CLASSES)[1].output_shape == (224, 224, 3)
    # A forward pass: 3 probabilities per image.
    x = np.random.default_rng(0).integers(0, 256, (2, *shape)).astype("float32")
    probs = _np(model(x, training=False))
    assert probs.shape == (2, N_CLASSES) and np.allclose(probs.sum(axis=1), 1, atol=1e-4)


def test_unfreeze_top_trains_the_top_layers_but_not_batch_norm(built) -> None:
    import keras

    name, _, _, model = built
    base = model.get_layer("backbone")
    try:
        n = 12
        count = backbones.unfreeze_top(base, n)
        top = base.layers[-n:]
        expected = sum(_size(ly.weights) for ly in top
                       if not isinstance(ly, keras.layers.BatchNormalization))
        assert count == expected == _size(base.trainable_weights)
        assert not any(ly.trainable for ly in base.layers
                       if isinstance(ly, keras.layers.BatchNormalization))
        assert not any(ly.trainable for ly in base.layers[:-n])
        assert backbones.unfreeze_top(base, BACKBONES[name].layers) > count
    finally:
        assert backbones.unfreeze_top(base, 0) == 0
    assert _size(base.trainable_weights) == 0


def test_layer_table_reports_seconds_per_build(built) -> None:
    """Not a check: makes the build time of each backbone visible with -rA / -s."""
    name = built[0]
    print(f"{name}: built in {SECONDS[name]:.1f} s")


def test_memory_and_plan_of_a_backbone_are_pure_python() -> None:
    config = transfer_config("ResNet50", dense=())
    plan = layer_plan(config, GREY, 10)
    assert [s.name for s in plan] == ["input", "imagenet_preprocess", "backbone", "global_pool",
                                      "flatten_dropout", "output"]
    assert plan[2].kind == "ResNet50" and plan[2].output_shape == (7, 7, 2048)
    assert plan[2].params == 23_587_712 and plan[2].trainable == 0
    mem = memory_bytes(config, GREY, 10)
    assert mem["weights"] == 4 * total_params(config, GREY, 10)
    assert mem["activations_per_sample"] > 4 * BACKBONES["ResNet50"].activations
    # global_pool is implied: the head pools even when the config says Flatten.
    assert layer_plan(replace(config, global_pool=False), GREY, 10)[3].name == "global_pool"


# --- ImagenetPreprocess -------------------------------------------------------------------


@pytest.mark.parametrize("app", ["resnet50", "vgg16", "mobilenet_v3", "efficientnet"])
def test_preprocess_matches_keras_preprocess_input(app: str) -> None:
    import keras

    mode = "caffe" if app in ("resnet50", "vgg16") else "included"
    x = np.random.default_rng(1).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    ours = _np(backbones.ImagenetPreprocess(224, mode)(x))
    theirs = getattr(keras.applications, app).preprocess_input(x.copy())
    np.testing.assert_allclose(ours, _np(theirs), atol=1e-4)


def test_preprocess_repeats_grey_and_resizes() -> None:
    grey = np.full((1, 28, 28, 1), 100.0, dtype="float32")
    out = _np(backbones.ImagenetPreprocess(64, "included")(grey))
    assert out.shape == (1, 64, 64, 3)
    np.testing.assert_allclose(out, 100.0, atol=1e-3)
    caffe = _np(backbones.ImagenetPreprocess(64, "caffe")(grey))
    np.testing.assert_allclose(caffe[0, 0, 0], [100 - 103.939, 100 - 116.779, 100 - 123.68],
                               atol=1e-3)
    with pytest.raises(ValueError, match="mode='torch'"):
        backbones.ImagenetPreprocess(64, "torch")


def test_preprocess_layer_saves_and_loads_in_safe_mode(tmp_path) -> None:
    import keras

    inputs = keras.Input((28, 28, 1))
    x = backbones.ImagenetPreprocess(32, "caffe", name="imagenet_preprocess")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    sample = np.random.default_rng(2).uniform(0, 255, (3, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(_np(loaded(sample)), _np(model(sample)), atol=1e-5)
    assert type(loaded.get_layer("imagenet_preprocess")).__name__ == "ImagenetPreprocess"


def test_backbone_model_saves_and_loads_in_safe_mode(tmp_path) -> None:
    import keras

    config = transfer_config("MobileNetV3Small")
    model = build_model(config, GREY, N_CLASSES)
    model.save(tmp_path / "best.keras")
    loaded = keras.saving.load_model(tmp_path / "best.keras", safe_mode=True)
    sample = np.random.default_rng(3).integers(0, 256, (2, *GREY)).astype("float32")
    np.testing.assert_allclose(_np(loaded(sample)), _np(model(sample)), atol=1e-5)
    assert loaded.count_params() == model.count_params()
    assert _size(loaded.trainable_weights) == _size(model.trainable_weights)


# --- weights ------------------------------------------------------------------------------


def test_weights_file_round_trip(tmp_path) -> None:
    base = backbones.build_backbone("MobileNetV3Small")
    rng = np.random.default_rng(4)
    base.set_weights([w + rng.normal(0, 0.01, w.shape).astype(w.dtype)
                      if w.dtype.kind == "f" else w for w in base.get_weights()])
    path = tmp_path / "mnv3s.weights.h5"
    base.save_weights(path)
    assert weights_problem("MobileNetV3Small", str(path)) is None
    model = build_model(transfer_config("MobileNetV3Small"), COLOUR, N_CLASSES,
                        weights=str(path))
    loaded = model.get_layer("backbone").get_weights()
    assert len(loaded) == len(base.get_weights())
    for got, want in zip(loaded, base.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    # The same file does not fit another backbone: said before anything is built.
    problem = weights_problem("ResNet50", str(path))
    assert problem is not None and "939,120 parameters but ResNet50 has 23,587,712" in problem
    with pytest.raises(backbones.WeightsError, match="choose a file saved from a ResNet50"):
        backbones.build_backbone("ResNet50", str(path))


def test_weights_problem_offline_imagenet_names_file_and_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    folder = tmp_path / "models"
    assert weights_problem("ResNet50", "imagenet", is_online=False) == (
        "ImageNet weights for ResNet50 are not here and the internet is not reachable: put "
        f"resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 into {folder}, or choose a "
        "weights file.")
    assert weights_problem("ResNet50", "imagenet", is_online=True) is None
    folder.mkdir()
    (folder / BACKBONES["ResNet50"].imagenet_file).write_bytes(b"cached")
    assert weights_problem("ResNet50", "imagenet", is_online=False) is None
    assert backbones.imagenet_weights_path("VGG16") == (
        folder / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
    assert weights_problem("VGG16", None) is None


def test_weights_problem_paths(tmp_path) -> None:
    missing = tmp_path / "nope.weights.h5"
    problem = weights_problem("VGG16", str(missing))
    assert problem is not None and str(missing) in problem and "does not exist" in problem
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    problem = weights_problem("VGG16", str(text))
    assert problem is not None and "not an HDF5 weights file" in problem
    assert "need a backbone" in str(weights_problem("", "imagenet"))
    with pytest.raises(ValueError, match="choose a backbone or no weights"):
        build_model(ModelConfig(), GREY, 3, weights="imagenet")


def test_failed_download_is_one_sentence(tmp_path, monkeypatch) -> None:
    import urllib.error

    import keras

    def offline(**_):
        raise urllib.error.URLError("no route")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras.applications, "VGG16", offline)
    with pytest.raises(backbones.WeightsError) as err:
        backbones.build_backbone("VGG16", "imagenet")
    assert str(err.value) == (
        "ImageNet weights for VGG16 could not be downloaded (URLError): put "
        f"vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 into {tmp_path / 'models'}, or "
        "choose a weights file.")


# --- config -------------------------------------------------------------------------------


def test_config_round_trip_with_backbone_fields() -> None:
    config = transfer_config("EfficientNetB0", unfreeze=30, fine_tune_lr_factor=0.05)
    assert ModelConfig.from_json(config.to_json()) == config
    data = config.to_dict()
    assert data["backbone"] == "EfficientNetB0" and data["unfreeze"] == 30
    assert data["fine_tune_lr_factor"] == 0.05
    # Old configs (no backbone fields) still load, as CNNs.
    old = {k: v for k, v in ModelConfig().to_dict().items()
           if k not in ("backbone", "unfreeze", "fine_tune_lr_factor")}
    assert ModelConfig.from_dict(old) == ModelConfig()
    # A backbone without blocks in the file: none, not the default block.
    assert ModelConfig.from_dict({"backbone": "VGG16"}).blocks == ()
    with pytest.raises(ConfigError, match="'unfreeze' must be a whole number"):
        ModelConfig.from_dict({"backbone": "VGG16", "unfreeze": 2.5})
    fit = FitSettings(epochs=3, fine_tune_epochs=4)
    assert FitSettings.from_dict(json.loads(json.dumps(fit.to_dict()))) == fit
    assert FitSettings.from_dict({"epochs": 3}).fine_tune_epochs == 0
    assert FitSettings(fine_tune_epochs=-1).problems() == [
        "fine-tune epochs is -1; use 0 (no fine-tuning) or more epochs"]


def test_validation_of_backbone_configs() -> None:
    assert validate(transfer_config("ResNet50"), GREY) == []
    assert validate(transfer_config("ResNet50"), COLOUR) == []
    both = transfer_config("VGG16", blocks=(ConvBlock(),))
    assert validate(both, COLOUR) == [
        "A VGG16 model has no conv blocks of its own, but this config has 1; remove them or "
        "choose no backbone."]
    assert "Unknown backbone 'AlexNet'" in validate(transfer_config("AlexNet"), COLOUR)[0]
    assert validate(transfer_config("VGG16", unfreeze=20), COLOUR) == [
        "Unfreeze is 20; VGG16 has 19 layers, so use 0 to 19."]
    assert "no backbone to unfreeze" in validate(replace(ModelConfig(), unfreeze=3), GREY)[0]
    assert "outside (0, 1]" in validate(transfer_config("VGG16", fine_tune_lr_factor=0),
                                        COLOUR)[0]
    assert "1 or 3 channels" in validate(transfer_config("VGG16"), (32, 32, 4))[0]
    assert "fine_tune_epochs is 500" in range_problems(
        transfer_config("VGG16"), FitSettings(fine_tune_epochs=500))[0]


def test_transfer_preset_is_valid_and_sized() -> None:
    preset = PRESETS["mobilenet-transfer"]
    assert preset.config.backbone == "MobileNetV3Small" and preset.fit.fine_tune_epochs > 0
    assert validate(preset.config, (32, 32, 3)) == []
    assert total_params(preset.config, (32, 32, 3), 10) == 939_120 + 576 * 10 + 10


# --- Keras script -------------------------------------------------------------------------


@pytest.mark.slow
def test_keras_script_of_a_backbone_builds_and_has_both_phases(tmp_path) -> None:
    config = transfer_config("MobileNetV3Small")
    fit = FitSettings(batch_size=16, epochs=2, patience=1, fine_tune_epochs=3)
    source = to_keras_script(config, fit, GREY, N_CLASSES, "mnist", weights=None)
    for text in ("WEIGHTS = None", "UNFREEZE = 10", "FINE_TUNE_EPOCHS = 3",
                 "FINE_TUNE_LR_FACTOR = 0.1", "keras.applications.MobileNetV3Small(",
                 'unfreeze_top(model.get_layer("backbone"), UNFREEZE)',
                 "compile_model(model, lr_factor=FINE_TUNE_LR_FACTOR)",
                 "initial_epoch=len(history.epoch)", "x = base(x, training=False)"):
        assert text in source, text
    assert "'/" not in to_keras_script(config, fit, GREY, N_CLASSES, "mnist",
                                       weights="/srv/secret/w.weights.h5")  # no server path
    script = tmp_path / "model.py"
    script.write_text(source)
    env = {**os.environ, "CNNLAB_BUILD_ONLY": "1"}
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    total = total_params(config, GREY, N_CLASSES)
    frozen = total - trainable_params(config, GREY, N_CLASSES)
    assert f"{total:,}" in out.stdout and f"{frozen:,}" in out.stdout, out.stdout[-1500:]
