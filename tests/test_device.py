"""device: bfloat16 training on CPUs that multiply bfloat16 natively, float32 everywhere else."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from conftest import with_fit

from cnnlab.data import datasets
from cnnlab.model import config
from cnnlab.runs import store as runs
from cnnlab.train import device, training

NATIVE = device.detect().bfloat16  # this machine's CPU (AVX512-BF16 or AMX) under TensorFlow
needs_native = pytest.mark.skipif(not NATIVE, reason="this CPU has no native bfloat16")


def test_native_bfloat16_is_read_from_the_cpu_flags() -> None:
    assert device.cpu_bfloat16("fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni")
    assert device.cpu_bfloat16("fpu avx512f amx_tile amx_bf16")
    assert not device.cpu_bfloat16("fpu sse2 avx2 avx512f avx512_vnni")
    assert not device.cpu_bfloat16("")


def test_batch_norm_models_train_in_bfloat16_layers_and_backbones_in_float32() -> None:
    native = device.DeviceInfo("CPU", "CPU (2 cores)", "tensorflow", 0, bfloat16=True)
    plain = config.PRESETS["quick"].config
    assert training.bfloat16_mode(plain, native) == training.GRAPHS
    assert training.bfloat16_mode(plain, dataclasses.replace(native, bfloat16=False)) == ""
    for name in ("best-mnist", "best-fashion", "own-images"):
        assert training.bfloat16_mode(config.PRESETS[name].config, native) == training.LAYERS
    assert training.bfloat16_mode(config.PRESETS["mobilenet-transfer"].config, native) == ""
    norm_head = dataclasses.replace(plain, dense=(config.DenseLayer(64, batch_norm=True),))
    assert training.bfloat16_mode(norm_head, native) == training.LAYERS

    def policy(cfg: config.ModelConfig, dev: device.DeviceInfo, mixed: bool = False) -> str:
        return training.compute_policy(training.TrainRequest(
            dataset="mnist", config=cfg, fit=config.PRESETS["quick"].fit,
            mixed_precision=mixed), dev)

    assert policy(norm_head, native) == "mixed_bfloat16"
    assert policy(plain, native) == "float32"  # the graphs are rewritten instead
    assert policy(norm_head, dataclasses.replace(native, bfloat16=False)) == "float32"
    assert policy(plain, native, mixed=True) == "mixed_float16"


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    return tf.function(lambda x, y: tf.matmul(x, y))(a, b).numpy()


@needs_native
def test_only_graphs_first_run_inside_compute_in_bfloat16() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random((64, 256), "float32"), rng.random((256, 64), "float32")
    exact = a.astype("float64") @ b

    def error(x: np.ndarray) -> float:
        return float(np.abs(x - exact).max() / np.abs(exact).max())

    with device.bfloat16_graphs(False):
        assert error(_matmul(a, b)) < 1e-5
    with device.bfloat16_graphs(True):
        inside = _matmul(a, b)
    after = _matmul(a, b)
    # bfloat16 keeps 8 bits of mantissa: its rounding is far above float32's.
    assert error(inside) > 1e-4
    assert error(after) < 1e-5


@pytest.mark.parametrize("batch_norm", [False, True], ids=["graphs", "layers"])
def test_a_run_trains_in_bfloat16_but_saves_and_predicts_in_float32(
        tmp_path: Path, batch_norm: bool) -> None:
    ds = datasets.load("mnist_sample")
    ds = datasets.Dataset(ds.info, ds.x_train, ds.y_train, ds.x_test[:100], ds.y_test[:100])
    cfg = config.ModelConfig(blocks=(config.ConvBlock(filters=8, batch_norm=batch_norm),),
                             dense=(config.DenseLayer(16),), learning_rate=3e-3)
    req = training.TrainRequest(**with_fit({
        "dataset": "mnist_sample", "config": cfg, "epochs": 1, "batch_size": 32,
        "patience": 0, "limit": 320, "name": "bf16"}))
    run_dir = runs.create_run(tmp_path, training.run_config(req, ds))
    result = training.train_run(req, ds, run_dir)
    assert result.status == "finished", result.message
    label = runs.load_status(run_dir)["device"]
    assert label.startswith(device.detect().label)
    assert ("bfloat16 compute" in label) == NATIVE

    import keras

    # The resumable checkpoint is the model as it trains: batch-norm models in Keras'
    # mixed_bfloat16 policy on a CPU that has it.
    trained = keras.models.load_model(run_dir / "last.keras", safe_mode=True)
    policies = {layer.dtype_policy.name for layer in trained.layers
                if layer.name.startswith("block")}
    assert policies == {"mixed_bfloat16" if NATIVE and batch_norm else "float32"}
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the build

    model = keras.models.load_model(run_dir / "best.keras", safe_mode=True)
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    x = ds.x_test[:16]
    # A model loaded after training predicts in float32: its traced predict equals the
    # eager call to float32 rounding, and the run's own test accuracy is that model's.
    np.testing.assert_allclose(model.predict(x, verbose=0), model(x).numpy(), atol=1e-5)
    probs = model.predict(ds.x_test, verbose=0)
    accuracy = float((probs.argmax(1) == ds.y_test).mean())
    assert runs.load_metrics(run_dir)["test_accuracy"] == pytest.approx(accuracy)
