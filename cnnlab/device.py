"""Which accelerator Keras will train on, said plainly ("CPU" when there is none)."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tensorflow


@dataclass(frozen=True)
class DeviceInfo:
    """What training runs on: ``kind`` is "GPU" or "CPU"; ``label`` is for people."""

    kind: str
    label: str
    backend: str
    n_gpus: int


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
    return DeviceInfo("CPU", f"CPU ({cores} cores)", backend, 0)


def _tf_gpu_name(tf: ModuleType, gpu: tensorflow.config.PhysicalDevice) -> str:
    try:
        return tf.config.experimental.get_device_details(gpu).get("device_name") or gpu.name
    except Exception:  # details are best effort; the name is enough
        return gpu.name


def set_mixed_precision(enabled: bool) -> None:
    """Use float16 compute with float32 weights (only worth it on a GPU)."""
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16" if enabled else "float32")
