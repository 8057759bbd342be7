"""batch_norm.FusedBatchNormalization computes what Keras' BatchNormalization does, and a
run that trains with it saves its best model with Keras' own layer."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from cnnlab.data import datasets
from cnnlab.model import config
from cnnlab.model.batch_norm import FusedBatchNormalization
from cnnlab.model.fit_settings import FitSettings
from cnnlab.runs import store as runs
from cnnlab.train import training

IMAGES = np.random.default_rng(0).normal(1.5, 2.0, (16, 7, 6, 5)).astype("float32")


def pair(shape: tuple[int, ...]) -> tuple[keras.layers.Layer, keras.layers.Layer]:
    """Keras' layer and the fused one, built alike, with the same non-trivial weights."""
    plain, fused = keras.layers.BatchNormalization(), FusedBatchNormalization()
    plain.build(shape)
    fused.build(shape)
    rng = np.random.default_rng(1)
    weights = [rng.uniform(0.5, 2.0, shape[-1]), rng.normal(0, 1, shape[-1]),
               rng.normal(0, 1, shape[-1]), rng.uniform(0.5, 2.0, shape[-1])]
    plain.set_weights(weights)
    fused.set_weights(weights)
    return plain, fused


def gradients(layer: keras.layers.Layer, x: np.ndarray) -> list[np.ndarray]:
    """d(sum(output · w))/d(input, gamma, beta) in training mode (w fixed, not uniform)."""
    import tensorflow as tf

    x = tf.constant(x)
    w = tf.constant(np.linspace(-1, 2, int(np.prod(x.shape[1:]))).reshape(x.shape[1:]),
                    dtype=tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(tf.cast(layer(x, training=True), tf.float32) * w)
    grads = tape.gradient(loss, [x, layer.gamma.value, layer.beta.value])
    return [g.numpy() for g in grads]


def test_a_training_step_matches_keras_outputs_gradients_and_moving_statistics() -> None:
    plain, fused = pair(IMAGES.shape)
    np.testing.assert_allclose(fused(IMAGES, training=True), plain(IMAGES, training=True),
                               atol=1e-5)
    n = np.prod(IMAGES.shape[:3])
    mean, var = (np.asarray(w) for w in plain.get_weights()[2:])
    fmean, fvar = (np.asarray(w) for w in fused.get_weights()[2:])
    np.testing.assert_allclose(fmean, mean, rtol=1e-5)
    # The fused op's batch variance is the unbiased one: n/(n-1) of Keras'.
    batch_var = IMAGES.reshape(-1, IMAGES.shape[-1]).var(axis=0)
    np.testing.assert_allclose(fvar - var, 0.01 * batch_var * (n / (n - 1) - 1), rtol=1e-3,
                               atol=1e-6)
    for g_fused, g_plain in zip(gradients(fused, IMAGES), gradients(plain, IMAGES),
                                strict=True):
        np.testing.assert_allclose(g_fused, g_plain, rtol=1e-4, atol=1e-4)


def test_inference_and_vectors_are_keras_own() -> None:
    plain, fused = pair(IMAGES.shape)
    np.testing.assert_array_equal(fused(IMAGES, training=False), plain(IMAGES, training=False))
    flat = IMAGES.reshape(-1, IMAGES.shape[-1])  # a dense layer's output: not fused
    plain, fused = pair(flat.shape)
    np.testing.assert_array_equal(fused(flat, training=True), plain(flat, training=True))
    np.testing.assert_array_equal(fused.get_weights()[3], plain.get_weights()[3])


def test_bfloat16_in_bfloat16_out() -> None:
    import tensorflow as tf

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        plain, fused = pair(IMAGES.shape)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    x = tf.cast(IMAGES, tf.bfloat16)
    out = fused(x, training=True)
    assert out.dtype == tf.bfloat16
    np.testing.assert_allclose(np.asarray(tf.cast(out, tf.float32)),
                               np.asarray(tf.cast(plain(x, training=True), tf.float32)),
                               atol=0.05)


def layer_classes(path: Path) -> set[str]:
    """The registered class names of the layers a .keras file holds."""
    with zipfile.ZipFile(path) as zf:
        spec = json.loads(zf.read("config.json"))
    return {layer.get("registered_name") or layer["class_name"]
            for layer in spec["config"]["layers"]}


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.slow
def test_a_run_trains_fused_and_saves_keras_own_layer(tmp_path: Path) -> None:
    ds = datasets.load("mnist_sample")
    cfg = config.PRESETS["best-mnist"].config
    request = training.TrainRequest(dataset="mnist_sample", config=cfg,
                                    fit=FitSettings(batch_size=32, epochs=1, patience=0),
                                    limit=320)
    run_dir = runs.create_run(tmp_path, training.run_config(request, ds))
    assert training.build_compiled(cfg, (28, 28, 1), 10).get_layer(
        "block1_bn1").__class__ is FusedBatchNormalization
    result = training.train_run(request, ds, run_dir)
    assert result.status == "finished", result.message
    best = layer_classes(runs.best_model_path(run_dir))
    assert "BatchNormalization" in best and not any("Fused" in c for c in best)
    assert "cnnlab>FusedBatchNormalization" in layer_classes(run_dir / "last.keras")
    more = training.TrainRequest(dataset="mnist_sample", config=cfg,
                                 fit=FitSettings(batch_size=32, epochs=2, patience=0),
                                 limit=320)
    resumed = training.train_run(more, ds, run_dir, resume=True)
    assert resumed.status == "finished", resumed.message
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    loaded = keras.saving.load_model(runs.best_model_path(run_dir), safe_mode=True)
    assert {type(layer) for layer in loaded.layers if "bn" in layer.name} == {
        keras.layers.BatchNormalization}


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_float32_run_with_dense_batch_norm_saves_keras_own_layer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No bfloat16 (a GPU, or another CPU): float32, so no mixed-precision twin is needed,
    # but the fused class must still stay out of best.keras.
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    ds = datasets.load("mnist_sample")
    cfg = config.ModelConfig(dense=(config.DenseLayer(32, batch_norm=True),))
    request = training.TrainRequest(dataset="mnist_sample", config=cfg,
                                    fit=FitSettings(batch_size=32, epochs=1, patience=0),
                                    limit=320)
    run_dir = runs.create_run(tmp_path, training.run_config(request, ds))
    result = training.train_run(request, ds, run_dir)
    assert result.status == "finished", result.message
    best = layer_classes(runs.best_model_path(run_dir))
    assert "BatchNormalization" in best and not any("Fused" in c for c in best)
