"""models: pure-Python layer table vs a real Keras build, exported script, compile."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from cnnlab.model.config import (
    PRESETS,
    Augmentation,
    ConvBlock,
    DenseLayer,
    ModelConfig,
    input_shape_for,
)
from cnnlab.model.models import (
    build_model,
    compile_model,
    layer_table,
    memory_bytes,
    to_keras_script,
    total_params,
)

EXPECTED_PARAMS = {
    "seed000-mnist": 1_625_866,
    "seed000-fashion-deep": 1_413_834,
    "seed001-cifar10": 904_718,
    "seed003-fashion": 333_526,
}


@pytest.mark.parametrize(("name", "params"), sorted(EXPECTED_PARAMS.items()))
def test_reference_param_counts_pure_python(name: str, params: int) -> None:
    preset = PRESETS[name]
    assert total_params(preset.config, input_shape_for(preset.dataset), 10) == params


def _keras_rows(model) -> list[tuple[str, tuple[int, ...], int]]:
    return [(ly.name, tuple(ly.output.shape[1:]), ly.count_params()) for ly in model.layers]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_layer_table_matches_keras_for_every_preset(name: str) -> None:
    preset = PRESETS[name]
    shape = input_shape_for(preset.dataset)
    model = build_model(preset.config, shape, 10)
    table = layer_table(preset.config, shape, 10)
    assert _keras_rows(model) == [(r["name"], r["output_shape"], r["params"]) for r in table]
    assert model.count_params() == total_params(preset.config, shape, 10)
    if name in EXPECTED_PARAMS:
        assert model.count_params() == EXPECTED_PARAMS[name]


def test_unusual_config_matches_keras() -> None:
    config = ModelConfig(
        blocks=(
            ConvBlock(filters=6, kernel_size=5, stride=2, padding="valid", convs=2, pool=3),
            ConvBlock(filters=5, kernel_size=2, padding="valid", batch_norm=True, pool=0,
                      dropout=0.1, activation="tanh"),
        ),
        dense=(DenseLayer(7, batch_norm=True, dropout=0.2, activation="elu"), DenseLayer(3)),
        flatten_dropout=0.3,
        augmentation=Augmentation(flip=True, translate=0.1, rotate=0.05, erase=0.5),
    )
    model = build_model(config, (31, 29, 3), 4)
    table = layer_table(config, (31, 29, 3), 4)
    assert _keras_rows(model) == [(r["name"], r["output_shape"], r["params"]) for r in table]
    gp = replace(config, global_pool=True)
    assert build_model(gp, (31, 29, 3), 4).count_params() == total_params(gp, (31, 29, 3), 4)


def test_random_erasing_replaces_one_rectangle_with_the_chance_asked() -> None:
    from cnnlab.model.models import augmented_images

    grey = np.full((64, 28, 28, 1), 100, np.uint8)
    every = augmented_images(replace(PRESETS["quick"].config,
                                     augmentation=Augmentation(erase=1.0)), grey, seed=3)
    changed = every != 100
    assert changed.reshape(64, -1).any(axis=1).all()  # chance 1: every image
    for img in changed[..., 0]:  # one axis-aligned rectangle: its bounding box is all changed
        rows, cols = np.nonzero(img)
        box = img[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.mean() > 0.9 and box.size < img.size
    half = augmented_images(replace(PRESETS["quick"].config,
                                    augmentation=Augmentation(erase=0.5)), grey, seed=3)
    share = (half != 100).reshape(64, -1).any(axis=1).mean()
    assert 0.25 < share < 0.75, share
    assert (augmented_images(PRESETS["quick"].config, grey) == 100).all()  # no layer at all


def test_model_takes_uint8_and_outputs_probabilities() -> None:
    config = PRESETS["quick"].config
    model = build_model(config, (28, 28, 1), 10)
    assert model.layers[1].name == "rescale"
    x = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28, 1), dtype=np.uint8)
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (3, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("optimizer", ["adam", "nadam", "sgd", "rmsprop"])
def test_compile_each_optimizer_and_train_a_step(optimizer: str) -> None:
    config = replace(
        PRESETS["quick"].config, optimizer=optimizer, lr_decay_rate=0.9, lr_decay_steps=10,
        augmentation=Augmentation(translate=0.1, rotate=0.02),
    )
    model = build_model(config, (28, 28, 1), 10)
    compile_model(model, config)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(16, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 10, size=(16,))
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    if optimizer == "sgd":
        assert float(model.optimizer.momentum) == pytest.approx(0.9)


def test_memory() -> None:
    config = PRESETS["seed003-fashion"].config
    mem = memory_bytes(config, (28, 28, 1), 10)
    assert mem["weights"] == 4 * 333_526
    rows = layer_table(config, (28, 28, 1), 10)
    assert mem["activations_per_sample"] == 4 * sum(int(np.prod(r["output_shape"])) for r in rows)


@pytest.mark.parametrize("name", ["best-cifar10", "seed000-mnist", "quick"])
def test_exported_script_builds_the_same_model(name: str) -> None:
    preset = PRESETS[name]
    shape = input_shape_for(preset.dataset)
    source = to_keras_script(preset.config, preset.fit, shape, 10, preset.dataset)
    assert f"EPOCHS = {preset.fit.epochs}" in source
    compile(source, "script.py", "exec")
    namespace: dict = {"__name__": "cnnlab_script"}
    exec(source, namespace)  # noqa: S102 - our own generated code
    model = namespace["build_model"]()
    assert model.count_params() == total_params(preset.config, shape, 10)
    namespace["compile_model"](model)
    assert type(model.optimizer).__name__.lower() == preset.config.optimizer


@pytest.mark.slow
def test_exported_script_runs_standalone_in_build_only_mode(tmp_path) -> None:
    preset = PRESETS["seed003-fashion"]
    script = tmp_path / "model.py"
    script.write_text(to_keras_script(preset.config, preset.fit, (28, 28, 1), 10,
                                      preset.dataset))
    env = {**os.environ, "CNNLAB_BUILD_ONLY": "1"}
    out = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "333,526" in out.stdout


def test_script_for_unknown_dataset_says_where_to_load() -> None:
    source = to_keras_script(PRESETS["quick"].config, PRESETS["quick"].fit, (64, 64, 3), 5,
                             "my_photos")
    assert "DATASET = 'my_photos'" in source
    assert 'put code that loads {DATASET} here' in source
    assert "INPUT_SHAPE = (64, 64, 3)" in source


def _cli(*args: str) -> subprocess.CompletedProcess:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run(
        [sys.executable, "-m", "cnnlab", *args], capture_output=True, text=True, timeout=60,
        cwd=root,
    )


def test_cli_presets_json() -> None:
    import json

    out = _cli("presets", "--json")
    assert out.returncode == 0, out.stderr
    presets = {p["name"]: p for p in json.loads(out.stdout)["presets"]}
    assert set(presets) == set(PRESETS)
    for name, params in EXPECTED_PARAMS.items():
        assert presets[name]["params"] == params
    assert all(p["description"] for p in presets.values())


def test_cli_summary_of_preset_and_config(tmp_path) -> None:
    import json

    out = _cli("summary", "--preset", "seed001-cifar10", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["params"] == 904_718
    assert data["layers"][-1] == {"name": "output", "output_shape": [10], "params": 3010}
    assert data["memory_bytes"]["weights"] == 4 * 904_718

    path = tmp_path / "c.json"
    path.write_text(PRESETS["seed003-fashion"].config.to_json())
    out = _cli("summary", "--config", str(path), "--dataset", "fashion_mnist", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["params"] == 333_526


def test_cli_summary_invalid_config_exits_2_with_messages(tmp_path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"blocks": [{"filters": 0}], "flatten_dropout": 1.5}')
    out = _cli("summary", "--config", str(path), "--json")
    assert out.returncode == 2
    assert "filters is 0" in out.stderr and "dropout 1.5" in out.stderr
    assert out.stdout == ""
    (tmp_path / "junk.json").write_text("{oops")
    out = _cli("summary", "--config", str(tmp_path / "junk.json"), "--json")
    assert out.returncode == 2 and "not valid JSON" in out.stderr
    out = _cli("summary", "--preset", "nope", "--json")
    assert out.returncode == 2 and "invalid choice: 'nope'" in out.stderr


def test_architecture_diagram_and_param_chart() -> None:
    from cnnlab.charts import architecture_dot, params_figure

    config = ModelConfig(
        blocks=(ConvBlock(32, convs=2, batch_norm=True, dropout=0.25),
                ConvBlock(64, convs=2, batch_norm=True, dropout=0.25)),
        dense=(DenseLayer(128, dropout=0.4, batch_norm=True),),
        augmentation=Augmentation(translate=0.1, rotate=0.03))
    rows = layer_table(config, (28, 28, 1), 10)
    dot = architecture_dot(rows)
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    for text in ("block1", "block2", "conv+BN ×2 → 28×28×32", "pool → 7×7×64", "dense1",
                 "softmax output → 10", "random shift"):
        assert text in dot
    assert dot.count("->") == dot.count("[label=") - 1
    fig = params_figure(rows)
    assert sum(fig.data[0].x) == total_params(config, (28, 28, 1), 10)
