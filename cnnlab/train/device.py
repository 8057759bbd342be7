"""Which accelerator Keras will train on, said plainly ("CPU" when there is none), and
whether that CPU trains in bfloat16."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tensorflow


@dataclass(frozen=True)
class DeviceInfo:
    """What training runs on: ``kind`` is "GPU" or "CPU"; ``label`` is for people;
    ``bfloat16``: a CPU that multiplies bfloat16 natively, so training can compute in it
    (``bfloat16_graphs`` or ``dtype_policy("mixed_bfloat16")``: training.bfloat16_mode)."""

    kind: str
    label: str
    backend: str
    n_gpus: int
    bfloat16: bool = False


@functools.cache
def detect() -> DeviceInfo:
    """Detect GPUs for the active Keras backend and enable GPU memory growth (TensorFlow).

    Memory growth stops TensorFlow from grabbing all GPU memory up front, so the server can
    still load models for prediction while a job trains. Cached: detection runs once.
    """
    import keras

    backend = keras.backend.backend()
    names: list[str] = []
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        for gpu in gpus:
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:  # already initialised: growth can no longer change
                pass
        names = [_tf_gpu_name(tf, g) for g in gpus]
    elif backend == "jax":
        import jax

        names = [str(d.device_kind) for d in jax.devices() if d.platform == "gpu"]
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if names:
        label = f"GPU: {names[0]}" + (f" (+{len(names) - 1} more)" if len(names) > 1 else "")
        return DeviceInfo("GPU", label, backend, len(names))
    cores = os.cpu_count() or 1
    # oneDNN's bfloat16 rewrite is TensorFlow's, and pays only where the CPU multiplies
    # bfloat16 itself (emulated it is slower than float32); TF_ENABLE_ONEDNN_OPTS=0 turns
    # oneDNN, and so the rewrite, off.
    bf16 = (backend == "tensorflow" and os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0"
            and cpu_bfloat16(cpuinfo("flags")))
    return DeviceInfo("CPU", f"CPU ({cores} cores)", backend, 0, bf16)


def cpu_bfloat16(flags: str) -> bool:
    """Whether a CPU with these /proc/cpuinfo ``flags`` multiplies bfloat16 natively
    (AVX512-BF16 or AMX-BF16)."""
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def cpuinfo(field: str) -> str:
    """The first CPU's ``field`` in /proc/cpuinfo ("flags", "model name"; "" where there is
    none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no flags, so no rewrite, float32 as everywhere else
        return ""
    return next((line.partition(":")[2].strip() for line in text.splitlines()
                 if line.startswith(field)), "")


@contextlib.contextmanager
def bfloat16_graphs(enabled: bool) -> Iterator[None]:
    """With ``enabled`` (``DeviceInfo.bfloat16``), TensorFlow graphs first run inside this
    block compute convolutions and matrix products in bfloat16 (oneDNN's auto mixed
    precision); weights, optimizer, saved models and every graph traced outside stay
    float32.

    On a CPU near its float32 peak this is the one large speed-up left (the quick preset:
    1.3-1.5× on 2 Zen 4 cores, bench/throughput.py), but not for every model:
    training.bfloat16_mode says which. Graphs are rewritten when first run, so Keras'
    train and validation steps made in ``fit`` inside the block keep it, and a model loaded
    later to predict does not.
    """
    if not enabled:
        yield
        return
    import tensorflow as tf

    key = "auto_mixed_precision_onednn_bfloat16"
    tf.config.optimizer.set_experimental_options({key: True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({key: False})


def _tf_gpu_name(tf: ModuleType, gpu: tensorflow.config.PhysicalDevice) -> str:
    try:
        return tf.config.experimental.get_device_details(gpu).get("device_name") or gpu.name
    except Exception:  # details are best effort; the name is enough
        return gpu.name


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Layers built inside this block take Keras' dtype policy ``name``: "float32",
    "mixed_float16" (float16 compute with float32 weights, only worth it on a GPU) or
    "mixed_bfloat16" (a CPU that multiplies bfloat16 natively; batch norm still computes in
    float32). The layers keep it; the global policy is restored on exit."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
