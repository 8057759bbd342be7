"""Pretrained backbones from keras.applications: their facts, building and unfreezing.

``BACKBONES`` holds each backbone's numbers (parameters, output channels, layers,
activations) measured once from Keras with ``include_top=False`` and ``weights=None`` at its
default input size, so the Configure page can show a backbone model's size without importing
TensorFlow; ``tests/test_backbones.py`` checks the table against Keras. Keras is imported
only inside the functions that build (``build_backbone``, ``unfreeze_top``) and in
``cnnlab.model.imagenet_preprocess`` (the model's input layer), reached through ``register()``.

Example:

    >>> from cnnlab.model import backbones
    >>> backbones.BACKBONES["ResNet50"].params
    23587712
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import keras

Preprocess = Literal["caffe", "included"]
# Keras' applications download their weights from here (keras/src/applications/*.py).
WEIGHTS_HOST = "storage.googleapis.com"
ONLINE_TIMEOUT_S = 3.0  # a reachability probe never holds up a request for longer
ONLINE_CACHE_S = 60.0  # nor runs on every rerun of a page


class WeightsError(ValueError):
    """Weights that cannot be loaded into a backbone; the message is one sentence for users."""


@dataclass(frozen=True)
class BackboneInfo:
    """One keras.applications backbone (``include_top=False``) at its default input size.

    Args:
        name: the key in ``BACKBONES`` and the Keras application's function name.
        input_size: height and width of its input (3 channels).
        params: all its parameters, frozen ones and BatchNorm statistics included.
        channels: channels of its output feature map (``input_size // 32`` square).
        layers: ``len(base.layers)`` (the input layer included), the most one may unfreeze.
        activations: floats of every layer's output for one image (input excluded), for the
            activation-memory budget.
        preprocess: "caffe" (RGB→BGR, minus the ImageNet mean) or "included" (the Keras
            model rescales its 0..255 input itself).
        keras_class: the function in ``keras.applications`` that builds it.
        imagenet_file: the file name of its no-top ImageNet weights in ``KERAS_HOME/models``.
    """

    name: str
    input_size: int
    params: int
    channels: int
    layers: int
    activations: int
    preprocess: Preprocess
    keras_class: str
    imagenet_file: str

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """Its feature map's shape (h, w, channels): every backbone here halves five times."""
        side = self.input_size // 32
        return (side, side, self.channels)

    @property
    def keras_args(self) -> dict[str, Any]:
        """Arguments of its ``keras.applications`` function besides weights and shape."""
        # MobileNetV3 rescales 0..255 pixels inside only when asked to (EfficientNet always).
        return {"include_preprocessing": True} if self.name.startswith("MobileNetV3") else {}


# Measured with Keras 3.15 (weights=None, 224×224×3); tests/test_backbones.py rechecks them.
BACKBONES: dict[str, BackboneInfo] = {
    b.name: b
    for b in (
        BackboneInfo("MobileNetV3Small", 224, 939_120, 576, 157, 5_205_056, "included",
                     "MobileNetV3Small",
                     "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
        BackboneInfo("MobileNetV3Large", 224, 2_996_352, 960, 187, 15_273_376, "included",
                     "MobileNetV3Large",
                     "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5"),
        BackboneInfo("EfficientNetB0", 224, 4_049_571, 1280, 237, 24_963_007, "included",
                     "EfficientNetB0",
                     "efficientnetb0_notop.h5"),
        BackboneInfo("ResNet50", 224, 23_587_712, 2048, 175, 36_966_636, "caffe", "ResNet50",
                     "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        BackboneInfo("VGG16", 224, 14_714_688, 512, 19, 15_077_888, "caffe", "VGG16",
                     "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    )
}


def info(name: str) -> BackboneInfo:
    """The table row of backbone ``name``; ValueError naming the choices when unknown."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"Unknown backbone {name!r}; choose one of "
                         f"{', '.join(BACKBONES)}.") from None


# --- weights ------------------------------------------------------------------------------


def keras_home() -> Path:
    """Keras' cache folder, as Keras itself decides it (``KERAS_HOME``, else ~/.keras)."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")


def imagenet_weights_path(name: str) -> Path:
    """Where Keras keeps (and downloads) the no-top ImageNet weights of backbone ``name``."""
    return keras_home() / "models" / info(name).imagenet_file


_online: tuple[float, bool] | None = None  # (when probed, reachable)


def online() -> bool:
    """Whether Keras' weights host answers (probed at most once a minute, 3 s at most)."""
    global _online
    if _online is not None and time.monotonic() - _online[0] < ONLINE_CACHE_S:
        return _online[1]
    try:
        socket.create_connection((WEIGHTS_HOST, 443), timeout=ONLINE_TIMEOUT_S).close()
        reachable = True
    except OSError:
        reachable = False
    _online = (time.monotonic(), reachable)
    return reachable


def weights_problem(name: str, weights: str | None, is_online: bool | None = None
                    ) -> str | None:
    """Why ``weights`` cannot be loaded into backbone ``name``, in one sentence (None: fine).

    Nothing is downloaded or built: "imagenet" is fine when its file is in Keras' cache or
    the internet is reachable (``is_online``; None probes it); a path must be an HDF5 file,
    and a Keras 3 ``.weights.h5`` file must hold exactly the backbone's parameter count.
    """
    if weights is None:
        return None
    if name not in BACKBONES:
        return f"Weights {weights!r} need a backbone; choose one of {', '.join(BACKBONES)}."
    if weights == "imagenet":
        path = imagenet_weights_path(name)
        if path.is_file() or (online() if is_online is None else is_online):
            return None
        return (f"ImageNet weights for {name} are not here and the internet is not "
                f"reachable: put {path.name} into {path.parent}, or choose a weights file.")
    path = Path(weights)
    if not path.is_file():
        return (f"The weights file {weights} does not exist on the server; give the path of "
                f"a {name} weights file (.weights.h5 or .h5), or choose imagenet or none.")
    import h5py  # Keras' own dependency; reads the file without TensorFlow

    if not h5py.is_hdf5(path):
        return (f"The weights file {path.name} is not an HDF5 weights file; save one with "
                f"model.save_weights('….weights.h5') or use a Keras applications *_notop.h5.")
    if path.name.endswith(".weights.h5"):
        found = _h5_parameters(path)
        if found != BACKBONES[name].params:
            return (f"The weights file {path.name} holds {found:,} parameters but {name} has "
                    f"{BACKBONES[name].params:,}; choose a file saved from a {name} backbone.")
    return None


def _h5_parameters(path: Path) -> int:
    """The number of values in all data sets of an HDF5 file (a weights file's parameters)."""
    import h5py

    total = 0

    def visit(_: str, obj: Any) -> None:
        nonlocal total
        if isinstance(obj, h5py.Dataset):
            total += int(obj.size)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return total


# --- Keras --------------------------------------------------------------------------------


def register() -> None:
    """Register ``ImagenetPreprocess`` with Keras: call before loading a saved model that
    may hold one (``keras.saving.load_model(..., safe_mode=True)``)."""
    import cnnlab.model.imagenet_preprocess  # noqa: F401  (registration is its import's effect)


def __getattr__(attr: str) -> Any:
    """``backbones.ImagenetPreprocess``: the Keras layer, imported (with Keras) on first use."""
    if attr == "ImagenetPreprocess":
        from cnnlab.model.imagenet_preprocess import ImagenetPreprocess

        return ImagenetPreprocess
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def build_backbone(name: str, weights: str | None = None) -> keras.Model:
    """Backbone ``name`` without its classifier (include_top=False), input (size, size, 3),
    named "backbone"; ``weights``: None (random), "imagenet" (Keras' file, downloaded into
    KERAS_HOME/models when online) or a weights file's path.

    Raises WeightsError (one sentence) when the weights cannot be had or do not fit.
    """
    import keras

    row = info(name)
    problem = weights_problem(name, weights, is_online=True)  # Keras says when it is offline
    if problem:
        raise WeightsError(problem)
    build = getattr(keras.applications, row.keras_class)
    shape = (row.input_size, row.input_size, 3)
    try:
        base = build(include_top=False, weights="imagenet" if weights == "imagenet" else None,
                     input_shape=shape, **row.keras_args)
    except Exception as exc:  # Keras' download: URLError, HTTPError, hash mismatch...
        path = imagenet_weights_path(name)
        raise WeightsError(
            f"ImageNet weights for {name} could not be downloaded ({type(exc).__name__}): "
            f"put {path.name} into {path.parent}, or choose a weights file.") from exc
    # Renamed afterwards: EfficientNet names its weights file after the model's name.
    base.name = "backbone"
    if weights not in (None, "imagenet"):
        try:
            base.load_weights(weights)
        except Exception as exc:  # wrong file: ValueError, KeyError, OSError from h5py...
            raise WeightsError(
                f"The weights file {Path(str(weights)).name} does not fit {name} "
                f"({type(exc).__name__}); choose a file saved from a {name} backbone.") from exc
    return base


def unfreeze_top(base: keras.Model, n: int) -> int:
    """Make the top ``n`` layers of ``base`` trainable and the rest frozen (0: all frozen);
    BatchNormalization layers stay frozen (the Keras transfer-learning guide's recipe).

    Returns the trainable parameter count after.
    """
    import keras

    if n <= 0:
        base.trainable = False
        return 0
    base.trainable = True
    top = {id(layer) for layer in base.layers[-n:]}
    for layer in base.layers:
        layer.trainable = (id(layer) in top
                           and not isinstance(layer, keras.layers.BatchNormalization))
    return sum(math.prod(w.shape) for w in base.trainable_weights)
