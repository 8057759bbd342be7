"""Fit settings sized to the data, the own-images default, and CLI parity for a zip."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from shapes import shapes_zip

from cnnlab.data import datasets
from cnnlab.model import config, fit_settings, models
from cnnlab.runs import store as runs
from cnnlab.train import training


@pytest.mark.parametrize("per_class", [2, 3, 5, 10, 30, 60, 200, 1000])
@pytest.mark.parametrize("n_classes", [2, 5, 10])
def test_the_batch_default_fits_every_split(per_class: int, n_classes: int) -> None:
    """From two images per class up, every preset's offered batch fits the training part."""
    y = np.repeat(np.arange(n_classes), per_class)
    x = np.zeros((len(y), 16, 16, 1), np.uint8)
    info = datasets.DatasetInfo("folder:x.zip", "x", tuple("abcdefghij"[:n_classes]),
                                (16, 16, 1))
    ds = datasets.Dataset(info, x, y, x[:2], y[:2])
    for preset in config.PRESETS:
        request = training.default_request(ds, preset)
        n_fit = fit_settings.n_fit(len(y), request.val_fraction)
        assert 1 <= request.fit.batch_size <= n_fit, (preset, request.fit.batch_size, n_fit)
        assert not [e for e in training.request_errors(request, ds) if "Batch size" in e]
    big = fit_settings.batch_size_for(128, 86)
    assert big == 16  # the largest power of two ≤ a quarter of 86
    assert fit_settings.batch_size_for(128, 54_001) == 128  # large data: the preset's own


def test_an_explicit_batch_too_large_is_still_explained() -> None:
    ds = datasets.load_zip(shapes_zip(per_class=10, size=16), (16, 16), False, name="folder:s")
    request = training.default_request(ds)
    errors = training.request_errors(dataclasses.replace(
        request, fit=dataclasses.replace(request.fit, batch_size=128)), ds)
    text = " ".join(errors)
    assert "Batch size 128 does not fit" in text and "between 1 and 14" in text
    assert "(2 suits this data set)" in text  # a power of two ≤ 14 / 4


def test_patience_and_first_stop_scale_with_steps_per_epoch() -> None:
    assert fit_settings.patience_for(2, 422) == 2  # full MNIST: the preset's own
    assert fit_settings.patience_for(2, 3) == 20  # 3 steps per epoch: 60 steps of patience
    assert fit_settings.patience_for(0, 3) == 0  # no early stopping stays off
    assert fit_settings.first_stop_epoch(422) == 0
    assert fit_settings.first_stop_epoch(3) == 66  # not before 200 steps
    assert fit_settings.epochs_for(86, 32) == 60 and fit_settings.epochs_for(54_001, 128) == 15


def test_a_tiny_data_set_is_not_stopped_after_a_dozen_steps(runs_root: Path) -> None:
    ds = datasets.load_zip(shapes_zip(per_class=20, size=16), (16, 16), False, name="folder:s")
    quick = training.default_request(ds, "quick")
    request = training.with_epochs(quick, 12)
    run_dir = runs.create_run(runs_root, training.run_config(request, ds))
    result = training.train_run(request, ds, run_dir, evaluate=False)
    assert result.status == "finished" and "Early stopping" not in result.message
    assert len(runs.load_history(run_dir)) == 12  # patience 2 alone would have cut it


def test_uploads_get_the_own_images_model() -> None:
    assert config.default_preset("folder:cats.zip") == config.OWN_IMAGES
    assert config.default_preset("mnist") == "quick"
    own = config.PRESETS[config.OWN_IMAGES].config
    assert own.global_pool and all(b.batch_norm for b in own.blocks)
    assert own.augmentation.flip and own.augmentation.translate > 0
    ds = datasets.load_zip(shapes_zip(), (64, 64), False, name="folder:shapes.zip")
    request = training.default_request(ds)
    assert request.preset == config.OWN_IMAGES and request.fit.epochs == 60
    assert training.request_errors(request, ds) == []


def test_augmented_images_are_the_models_own_augmentation() -> None:
    ds = datasets.load_zip(shapes_zip(per_class=4, size=32), (32, 32), False, name="folder:s")
    own = config.PRESETS[config.OWN_IMAGES].config
    out = models.augmented_images(own, ds.x_train[:4])
    assert out.shape == ds.x_train[:4].shape and out.dtype == np.uint8
    assert (out != ds.x_train[:4]).any()
    same = models.augmented_images(config.PRESETS["quick"].config, ds.x_train[:4])
    assert (same == ds.x_train[:4]).all()  # no augmentation layers: unchanged


@pytest.mark.slow
def test_cli_trains_a_zip_exactly_like_the_upload(tmp_path: Path, runs_root: Path) -> None:
    data = shapes_zip(per_class=20, size=32)
    path = tmp_path / "shapes.zip"
    path.write_bytes(data)
    env = {**os.environ, "CNNLAB_RUNS_DIR": str(runs_root)}
    done = subprocess.run(
        [sys.executable, "-m", "cnnlab", "train", "--dataset", str(path), "--image-size", "32",
         "--epochs", "2", "--json"], capture_output=True, text=True, env=env, cwd=ROOT,
        timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    cfg = runs.load_config(out["run_dir"])
    upload = datasets.load_zip(data, (32, 32), False, name="folder:shapes.zip")
    offered = training.default_request(upload)
    assert cfg["dataset"] == "folder:shapes.zip" and cfg["preset"] == config.OWN_IMAGES
    assert cfg["fit"] == offered.fit.to_dict() | {"epochs": 2}
    assert cfg["input_shape"] == [32, 32, 3]
    assert cfg["class_names"] == ["circle", "square"] and out["test_accuracy"] is not None

    bad = subprocess.run(
        [sys.executable, "-m", "cnnlab", "train", "--dataset", str(tmp_path / "none.zip")],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and "cannot read" in bad.stderr


def test_forward_flops_counts_each_convolution_and_dense_layer() -> None:
    cfg = config.ModelConfig(blocks=(config.ConvBlock(filters=8, kernel_size=3),), dense=())
    conv = 2 * 3 * 3 * 1 * 8 * 28 * 28  # 'same' padding keeps 28×28
    output = 2 * (14 * 14 * 8) * 10  # after the 2×2 pool, flattened, into 10 classes
    assert models.forward_flops(cfg, (28, 28, 1), 10) == conv + output
    backbone = config.PRESETS["mobilenet-transfer"].config
    assert models.forward_flops(backbone, (28, 28, 1), 10) is None


def test_steps_per_execution_groups_short_steps_only() -> None:
    quick = config.PRESETS["quick"]
    flops = models.forward_flops(quick.config, (28, 28, 1), 10)
    steps = fit_settings.steps_per_epoch(54_000, 128)
    spe = fit_settings.steps_per_execution(flops, 128, steps)
    assert 1 < spe <= fit_settings.MAX_STEPS_PER_EXECUTION
    assert 3 * flops * 128 * spe <= fit_settings.EXECUTION_FLOPS  # a group stays short
    best = config.PRESETS["best-fashion"]
    assert fit_settings.steps_per_execution(
        models.forward_flops(best.config, (28, 28, 1), 10), 128, steps) == 1
    assert fit_settings.steps_per_execution(None, 32, steps) == 1  # a backbone
    assert fit_settings.steps_per_execution(flops, 128, 9) == 1  # the bar moves in an epoch
    assert fit_settings.steps_per_execution(flops, 128, 24) == 3  # an eighth of 24 steps


@pytest.mark.slow
def test_steps_per_execution_changes_speed_not_results() -> None:
    import keras

    ds = datasets.load("mnist_sample")
    x, y = ds.x_train[:512], ds.y_train[:512]
    cfg = config.PRESETS["quick"].config
    weights = []
    for spe in (1, 4):
        keras.utils.set_random_seed(training.SEED)
        model = models.build_model(cfg, (28, 28, 1), 10)
        models.compile_model(model, cfg, steps_per_execution=spe)
        model.fit(x, y, epochs=1, batch_size=32, shuffle=True, verbose=0)
        weights.append(model.get_weights())
    for one_step, grouped in zip(*weights, strict=True):
        np.testing.assert_allclose(one_step, grouped, atol=1e-5)
