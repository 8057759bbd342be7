"""Why a model decided: saliency maps over its input (Grad-CAM, occlusion, integrated gradients).

Every map has the input's height × width, values in [0, 1] (1 = the most important pixel),
and explains one class: the predicted one or any other the user asks about ("why not 7?").

- **Grad-CAM** weighs the last conv layer's activations by the gradient of the class score
  (the logit before the softmax), sums over channels, keeps the positive part and
  upsamples it to the input (element-wise weights, see ``grad_cam``).
- **Occlusion** covers the input with a patch at each position (all copies in a few batched
  calls) and maps how much the class probability drops.
- **Integrated gradients** stand in for Grad-CAM when a model has no usable conv layer (an
  uploaded dense-only model): gradients along the path from a black image to the input.

Gradients need the backend: TensorFlow's GradientTape, ``jax.grad`` over a stateless call,
or torch autograd, picked by ``keras.backend.backend()``. Keras is imported lazily.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras

    from cnnlab.use.inference import Predictor

IG_STEPS = 32  # path points for integrated gradients, all in one batch
OCCLUSION_BATCH = 256  # occluded copies per model call: bounds memory for larger inputs


class Method(StrEnum):
    """The ways to explain a prediction (the value is the name users see)."""

    GRAD_CAM = "Grad-CAM"
    OCCLUSION = "occlusion"
    INTEGRATED_GRADIENTS = "integrated gradients"


@dataclass(frozen=True)
class Explanation:
    """A saliency map for one class of one input.

    Args:
        heat: ``(height, width)`` float32 in [0, 1]; all zeros when nothing in the input
            raises the class (e.g. "why 7?" for a clear 1).
        method: how it was computed (Grad-CAM falls back to integrated gradients).
        class_index: the class explained.
        probability: the model's probability for that class on the unchanged input.
        layer: the conv layer Grad-CAM looked at, else None.
        patch: the occlusion patch side in pixels, else None.
        note: a sentence to add, e.g. why another method stands in for the one asked.
    """

    heat: np.ndarray
    method: Method
    class_index: int
    probability: float
    layer: str | None = None
    patch: int | None = None
    note: str = ""

    def describe(self, class_name: str) -> str:
        """One plain-text sentence saying what the map shows (class names are data)."""
        name = f"“{class_name}” ({self.probability:.1%})"
        if not self.heat.any():
            text = f"Nothing in this input raises the model's score for {name}."
        elif self.method is Method.GRAD_CAM:
            text = (f"Grad-CAM on layer {self.layer}: bright where that layer's features "
                    f"raise the score for {name}.")
        elif self.method is Method.OCCLUSION:
            text = (f"Occlusion: bright where covering a {self.patch}×{self.patch} patch "
                    f"lowers the probability of {name} the most.")
        else:
            text = f"Integrated gradients: bright where the pixels push the score for {name} up."
        return f"{text} {self.note}".strip()


def explain(predictor: Predictor, x: np.ndarray, class_index: int | None = None,
            method: Method = Method.GRAD_CAM) -> Explanation:
    """The saliency map of ``class_index`` (default: the predicted class) for one input.

    ``x`` is ``(h, w, c)`` in [0, 1], as ``Predictor.probabilities`` takes it. Grad-CAM
    falls back to integrated gradients for a model without a usable conv layer.
    """
    probs = predictor.probabilities(x)
    if class_index is None:
        class_index = int(np.argmax(probs))
    if not 0 <= class_index < predictor.n_classes:
        raise ValueError(f"class_index={class_index} is not a class of this model; allowed "
                         f"are 0 to {predictor.n_classes - 1}.")
    p = float(probs[class_index])
    if method is Method.OCCLUSION:
        heat, patch = occlusion(predictor, x, class_index, base=p)
        return Explanation(heat, method, class_index, p, patch=patch)
    parts = _parts(predictor.model)
    if method is Method.GRAD_CAM and parts.body is not None:
        return Explanation(grad_cam(predictor, x, class_index), method, class_index, p,
                           layer=parts.layer)
    note = ("(This model has no conv layer Grad-CAM can use, so integrated gradients stand "
            "in.)" if method is Method.GRAD_CAM else "")
    heat = integrated_gradients(predictor, x, class_index)
    return Explanation(heat, Method.INTEGRATED_GRADIENTS, class_index, p, note=note)


# ----------------------------------------------------------------------------- the methods


def grad_cam(predictor: Predictor, x: np.ndarray, class_index: int) -> np.ndarray:
    """Grad-CAM heat ``(h, w)`` in [0, 1]; ValueError when the model has no usable conv."""
    parts = _parts(predictor.model)
    if parts.body is None or parts.head is None:
        raise ValueError("Grad-CAM needs a Conv2D layer whose output alone leads to the "
                         "model's output; this model has none. Use integrated_gradients.")
    import keras

    acts = keras.ops.convert_to_numpy(
        parts.body(_batch(x) * predictor.scale, training=False))
    grads = _gradient(parts.head, acts, parts.score(class_index))
    # Each activation weighted by its own gradient (the HiResCAM form), not by the feature
    # map's mean gradient: cnnlab heads are Flatten→Dense, where that mean cancels out
    # (measured on MNIST: 2 of 12 digits got an empty map, and the hottest square mattered
    # half as much as with element-wise weights). For a global-average-pooling head the
    # two are the same.
    cam = np.maximum((acts[0] * grads[0]).sum(axis=-1), 0.0)
    return normalise(resize(cam, x.shape[:2]))


def occlusion(predictor: Predictor, x: np.ndarray, class_index: int,
              patch: int | None = None, stride: int | None = None,
              fill: float | None = None, base: float | None = None) -> tuple[np.ndarray, int]:
    """(heat ``(h, w)`` in [0, 1], patch side): the class probability's drop per pixel,
    averaged over every patch covering it.

    Defaults (``patch_settings``): a patch a quarter of the side (7 px on MNIST: about one
    stroke), a third of it as stride, filled with black for grey inputs (the background:
    the patch erases ink) and mid-grey for colour photos. ``base``: the probability on
    ``x`` if known.
    """
    h, w, c = x.shape
    default_patch, default_stride = patch_settings(h, w)
    patch, stride = patch or default_patch, stride or default_stride
    fill = (0.0 if c == 1 else 0.5) if fill is None else fill
    tops, lefts = patch_starts(h, patch, stride), patch_starts(w, patch, stride)
    spots = [(t, left) for t in tops for left in lefts]
    copies = np.repeat(_batch(x), len(spots), axis=0)
    for i, (t, left) in enumerate(spots):
        copies[i, t:t + patch, left:left + patch] = fill
    probs = np.concatenate([predictor.probabilities(copies[i:i + OCCLUSION_BATCH])
                            for i in range(0, len(copies), OCCLUSION_BATCH)])
    if base is None:
        base = float(predictor.probabilities(x)[class_index])
    drops = base - probs[:, class_index]
    total, count = np.zeros((h, w)), np.zeros((h, w))
    for drop, (t, left) in zip(drops, spots, strict=True):
        total[t:t + patch, left:left + patch] += drop
        count[t:t + patch, left:left + patch] += 1
    return normalise(np.maximum(total / count, 0.0)), patch


def integrated_gradients(predictor: Predictor, x: np.ndarray, class_index: int,
                         steps: int = IG_STEPS) -> np.ndarray:
    """Integrated gradients from a black image, positive part summed over channels, in
    [0, 1]. Works on any model, conv layers or not."""
    parts = _parts(predictor.model)
    scaled = _batch(x) * predictor.scale
    alphas = (np.arange(1, steps + 1, dtype=np.float32) / steps)[:, None, None, None]
    grads = _gradient(parts.whole, alphas * scaled, parts.score(class_index))
    attribution = (scaled[0] * grads.mean(axis=0)).sum(axis=-1)
    return normalise(np.maximum(attribution, 0.0))


# ----------------------------------------------------------------------------- helpers


def normalise(heat: np.ndarray) -> np.ndarray:
    """``heat`` divided by its maximum, float32 in [0, 1]; all zeros if it has no positive
    finite value (a map of nothing must not be stretched into noise)."""
    heat = np.nan_to_num(np.asarray(heat, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    top = float(heat.max()) if heat.size else 0.0
    if top <= 1e-12:
        return np.zeros_like(heat)
    return np.clip(heat / top, 0.0, 1.0)


def resize(heat: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """A 2-D map resized to ``size`` (height, width) with bilinear interpolation."""
    from PIL import Image

    if heat.shape == tuple(size):
        return heat.astype(np.float32)
    img = Image.fromarray(heat.astype(np.float32), mode="F")
    return np.asarray(img.resize((size[1], size[0]), Image.Resampling.BILINEAR), np.float32)


def _batch(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32)[None]


def patch_settings(h: int, w: int) -> tuple[int, int]:
    """The default occlusion (patch side, stride) for an h×w input: a quarter of the side
    and a third of that (7 and 2 on MNIST: 144 copies, ~0.16 s on 2 CPU cores)."""
    patch = max(3, round(min(h, w) / 4))
    return patch, max(1, patch // 3)


def patch_starts(side: int, patch: int, stride: int) -> list[int]:
    """Patch offsets along one side, the last one flush with the edge (no pixel left out)."""
    starts = list(range(0, max(side - patch, 0) + 1, stride))
    if starts[-1] != max(side - patch, 0):
        starts.append(side - patch)
    return starts


@dataclass(frozen=True)
class _Parts:
    """A model cut for explaining: input → conv (body), conv → pre-softmax (head), input →
    pre-softmax (whole), and the class score on a pre-softmax batch."""

    whole: keras.Model
    score: Callable[[int], Callable[[Any], Any]]
    body: keras.Model | None = None
    head: keras.Model | None = None
    layer: str | None = None


_CACHE: weakref.WeakKeyDictionary[Any, _Parts] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _parts(model: keras.Model) -> _Parts:
    """The cut of ``model``, built once per model (a page reruns on every stroke)."""
    with _LOCK:
        parts = _CACHE.get(model)
        if parts is None:
            parts = _CACHE[model] = _cut(model)
    return parts


def _cut(model: keras.Model) -> _Parts:
    import keras

    inputs = model.inputs[0]
    pre, score = _pre_softmax(model)
    whole = keras.Model(inputs, pre)
    conv = _last_conv_output(model)
    if conv is None:
        return _Parts(whole, score)
    name, tensor = conv
    try:
        head = keras.Model(tensor, pre)
    except ValueError:  # the output also needs tensors that bypass the conv (skips)
        return _Parts(whole, score)
    return _Parts(whole, score, keras.Model(inputs, tensor), head, name)


def _pre_softmax(model: keras.Model) -> tuple[Any, Callable[[int], Callable[[Any], Any]]]:
    """(a tensor of ``model`` before its softmax, class index → score of that tensor).

    Grad-CAM's score is the logit: the gradient of a saturated softmax probability is ~0 for
    a confident prediction. A Dense(softmax) output gives the logit from its input and its
    weights; a final Softmax layer from its input; anything else falls back to log p.
    """
    import keras

    last = model.layers[-1]
    softmax = keras.activations.softmax
    if isinstance(last, keras.layers.Dense) and last.activation is softmax:

        def dense_logit(c: int) -> Callable[[Any], Any]:
            # Read at call time: constants for the gradient, current for the weights.
            w = last.kernel.numpy()[:, c]
            b = float(last.bias.numpy()[c]) if last.use_bias else 0.0
            return lambda feats: keras.ops.matmul(feats, w) + b

        return last.input, dense_logit
    if isinstance(last, keras.layers.Softmax) or (
            isinstance(last, keras.layers.Activation) and last.activation is softmax):
        return last.input, lambda c: lambda z: z[:, c]
    return model.outputs[0], lambda c: lambda p: keras.ops.log(p[:, c] + 1e-7)


def _last_conv_output(model: keras.Model) -> tuple[str, Any] | None:
    """(name, output tensor) of the model's last top-level Conv2D, taken after a following
    BatchNormalization/activation (the features the next block sees); None without one."""
    import keras

    follow = (keras.layers.BatchNormalization, keras.layers.Activation, keras.layers.ReLU)
    layers = list(model.layers)
    for i in range(len(layers) - 1, -1, -1):
        if isinstance(layers[i], keras.layers.Conv2D):
            last = layers[i]
            for nxt in layers[i + 1:]:
                if not isinstance(nxt, follow):
                    break
                last = nxt
            return layers[i].name, last.output
    return None


def _gradient(model: keras.Model, x: np.ndarray, score: Callable[[Any], Any]) -> np.ndarray:
    """d sum(score(model(x))) / dx as NumPy, with the backend's own autodiff."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        t = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(t)
            total = tf.reduce_sum(score(model(t, training=False)))
        grad = tape.gradient(total, t)
        if grad is None:  # the score does not depend on x (e.g. a non-differentiable op)
            return np.zeros_like(x)
        return grad.numpy()
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        fixed = [v.value for v in model.non_trainable_variables]

        def total(inp: Any) -> Any:
            out, _ = model.stateless_call(trainable, fixed, inp, training=False)
            return keras.ops.sum(score(out))

        return np.asarray(jax.grad(total)(jax.numpy.asarray(x)))
    if backend == "torch":
        t = keras.ops.convert_to_tensor(x).detach().requires_grad_(True)
        keras.ops.sum(score(model(t, training=False))).backward()
        return t.grad.detach().cpu().numpy()
    raise ValueError(f"Saliency maps need gradients, which cnnlab takes from tensorflow, jax "
                     f"or torch; the Keras backend here is {backend!r}. Set KERAS_BACKEND "
                     "to one of those.")
