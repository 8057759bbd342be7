"""ModelConfig: JSON round trip, validation messages, presets."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from cnnlab.model import config as config_mod
from cnnlab.model.config import (
    PRESETS,
    Augmentation,
    ConfigError,
    ConvBlock,
    DenseLayer,
    ModelConfig,
    advice,
    default_preset,
    input_shape_for,
    range_problems,
    validate,
)
from cnnlab.model.fit_settings import FitSettings

MNIST = (28, 28, 1)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_json_and_is_valid(name: str) -> None:
    preset = PRESETS[name]
    config = preset.config
    assert ModelConfig.from_json(config.to_json()) == config
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert hash(config) == hash(ModelConfig.from_json(config.to_json()))
    assert validate(config, input_shape_for(preset.dataset)) == []


def test_all_agreed_preset_names_exist() -> None:
    assert set(PRESETS) == {
        "quick", "seed000-mnist", "seed000-fashion-deep", "seed001-cifar10",
        "seed003-fashion", "best-mnist", "best-fashion", "best-cifar10", "own-images",
        "mobilenet-transfer",
    }
    for name, preset in PRESETS.items():
        assert preset.name == name and preset.description


def test_default_preset_per_dataset() -> None:
    assert default_preset("mnist") == "quick"
    assert default_preset("mnist_sample") == "quick"
    assert default_preset("fashion_mnist") == "best-fashion"
    assert default_preset("cifar10") == "best-cifar10"
    assert default_preset("my_upload") in PRESETS
    assert default_preset(None) in PRESETS


def test_best_digits_preset_does_not_flip() -> None:
    assert not PRESETS["best-mnist"].config.augmentation.flip
    assert advice(PRESETS["best-mnist"].config, "mnist") == []
    flipped = replace(PRESETS["quick"].config, augmentation=Augmentation(flip=True))
    assert any("flip" in note for note in advice(flipped, "mnist"))
    assert advice(flipped, "cifar10") == []


def test_missing_keys_take_defaults() -> None:
    config = ModelConfig.from_dict({"blocks": [{"filters": 8}], "learning_rate": 0.01})
    assert config.blocks == (ConvBlock(filters=8),)
    assert config.dense == ModelConfig().dense
    assert config.learning_rate == 0.01


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"blocks": [{"filterz": 3}]}', "filterz"),
        ('{"lr_decay_steps": "ten"}', "lr_decay_steps"),
        ('{"lr_decay_steps": 3.5}', "whole number"),
        ('{"epochs": 3}', "unknown key"),  # fit settings are not the model's
        ('{"blocks": 5}', "list"),
        ('{"augmentation": {"flip": 1}}', "true or false"),
    ],
)
def test_bad_json_raises_config_error_naming_the_problem(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        ModelConfig.from_json(text)


def _one(problems: list[str], *needles: str) -> None:
    assert any(all(n in p for n in needles) for p in problems), problems


def test_zero_size_feature_map_before_pool() -> None:
    config = ModelConfig(blocks=tuple(ConvBlock(filters=8) for _ in range(5)))
    problems = validate(config, MNIST)  # 28 → 14 → 7 → 3 → 1 → pool 2 on 1×1
    _one(problems, "block 5", "1×1 before a 2×2 pool", "remove this pool")


def test_pool_on_a_tiny_map_with_valid_padding_suggests_same_padding() -> None:
    block = ConvBlock(filters=8, kernel_size=1, padding="valid")
    problems = validate(ModelConfig(blocks=(block,) * 5), MNIST)
    _one(problems, "block 5", "1×1 before a 2×2 pool", "padding='same'")


def test_kernel_larger_than_map_with_valid_padding() -> None:
    config = ModelConfig(
        blocks=(ConvBlock(filters=8, pool=4), ConvBlock(filters=8, kernel_size=9, padding="valid"))
    )
    problems = validate(config, MNIST)
    _one(problems, "block 2", "7×7", "9×9", "padding='valid'")


def test_valid_padding_that_fits_is_fine() -> None:
    config = ModelConfig(blocks=(ConvBlock(filters=8, kernel_size=5, padding="valid"),))
    assert validate(config, MNIST) == []


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_dropout_outside_unit_interval(rate: float) -> None:
    for config, where in [
        (ModelConfig(blocks=(ConvBlock(dropout=rate),)), "block 1"),
        (ModelConfig(dense=(DenseLayer(dropout=rate),)), "dense layer 1"),
        (ModelConfig(flatten_dropout=rate), "before the head"),
    ]:
        _one(validate(config, MNIST), where, "dropout", "[0, 1)")


def test_zero_filters_and_zero_units() -> None:
    config = ModelConfig(blocks=(ConvBlock(filters=0),), dense=(DenseLayer(units=0),))
    problems = validate(config, MNIST)
    _one(problems, "block 1", "filters is 0")
    _one(problems, "dense layer 1", "units is 0")


def test_training_settings() -> None:
    base = ModelConfig()
    _one(validate(replace(base, learning_rate=0), MNIST), "learning rate", "above 0")
    _one(validate(replace(base, learning_rate=-1e-3), MNIST), "learning rate", "above 0")
    _one(validate(replace(base, learning_rate=3.0), MNIST), "learning rate", "> 1")
    _one(validate(replace(base, lr_decay_rate=1.5), MNIST), "decay rate")


def test_random_erasing_is_a_chance() -> None:
    erasing = replace(ModelConfig(), augmentation=Augmentation(erase=1.5))
    _one(validate(erasing, MNIST), "erase 1.5", "[0, 1]")
    _one(range_problems(erasing), "augmentation: erase is 1.5", "0 to 1")
    fine = replace(ModelConfig(), augmentation=Augmentation(erase=0.5))
    assert validate(fine, MNIST) == [] and range_problems(fine) == []
    assert fine.augmentation.active
    assert ModelConfig.from_dict(fine.to_dict()) == fine


def test_unknown_names() -> None:
    config = ModelConfig(
        blocks=(ConvBlock(activation="relux"),), optimizer="adamw2", initializer="zeros!"
    )
    problems = validate(config, MNIST)
    _one(problems, "unknown activation 'relux'", "relu")
    _one(problems, "unknown optimizer 'adamw2'", "nadam")
    _one(problems, "unknown initializer 'zeros!'", "he_normal")


def test_every_problem_is_reported_at_once() -> None:
    config = ModelConfig(
        blocks=(ConvBlock(filters=0),), flatten_dropout=2.0, learning_rate=0
    )
    assert len(validate(config, MNIST)) >= 3


def test_input_shapes_of_builtin_datasets() -> None:
    assert input_shape_for("mnist") == (28, 28, 1)
    assert input_shape_for("fashion_mnist") == (28, 28, 1)
    assert input_shape_for("cifar10") == (32, 32, 3)


def test_data_set_facts_come_from_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """One home: a shape, a class count or a kind changed on the DatasetInfo shows here."""
    from cnnlab.data import datasets
    from cnnlab.model import config, models
    from cnnlab.use import inference

    info = datasets.DatasetInfo("tiles", "Tiles", ("a", "b", "c"), (12, 16, 3))
    monkeypatch.setitem(datasets.REGISTRY, "tiles", info)
    assert input_shape_for("tiles") == (12, 16, 3)
    assert input_shape_for("not-registered") == datasets.REGISTRY["mnist"].image_shape
    digits = {n for n, i in datasets.REGISTRY.items() if i.digits}
    assert set(config.DIGIT_DATASETS) == set(inference.DIGIT_DATASETS) == digits
    assert digits == {"mnist", "mnist_sample"}
    assert models.KERAS_DATASETS == {n: i.keras_module for n, i in datasets.REGISTRY.items()
                                     if i.keras_module}
    assert "tiles" not in models.KERAS_DATASETS


def test_a_config_file_holds_the_model_and_its_fit_settings() -> None:
    preset = PRESETS["best-mnist"]
    text = config_mod.file_json(preset.config, preset.fit)
    assert set(json.loads(text)) == {"model", "fit"}
    assert config_mod.from_file(text) == (preset.config, preset.fit)


def test_an_older_flat_config_file_still_loads_with_its_fit_settings() -> None:
    old = {**PRESETS["quick"].config.to_dict(), "batch_size": 16, "epochs": 7, "patience": 0}
    model, fit = config_mod.from_file(json.dumps(old))
    assert model == PRESETS["quick"].config
    assert fit == FitSettings(batch_size=16, epochs=7, patience=0)


@pytest.mark.parametrize(("data", "needle"), [
    ({"model": {}, "fit": {"epochs": "ten"}}, "'epochs' must be a whole number"),
    ({"model": {}, "fit": {"epochz": 3}}, "unknown key(s) epochz"),
    ({"model": {}, "fitness": {}}, "unknown key(s) fitness"),
])
def test_bad_fit_settings_in_a_file_are_named(data: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        config_mod.from_file(json.dumps(data))


def test_fit_settings_say_what_is_wrong_and_range_checks_cover_them() -> None:
    assert FitSettings(batch_size=0, epochs=0, patience=-1).problems() == [
        "batch size is 0; it must be at least 1", "epochs is 0; it must be at least 1",
        "patience is -1; use 0 or more epochs"]
    too_long = config_mod.range_problems(ModelConfig(), FitSettings(epochs=500))
    assert too_long == ["fit settings: epochs is 500; allowed is 1 to 100. Edit the file or "
                        "set it on this page."]
