"""Parameter count and output shape of one Keras layer, from its saved config alone.

Exact for the common layers (Dense, the convolutions, the normalizations, Embedding) and
the shape-only ones (Flatten, pooling, Dropout, Rescaling, Reshape, merges...), channels
last, plain float weights. Anything else raises ``Unknown``: a layer kind or setting not
listed here is never guessed at, and the caller leaves its size to Keras itself.
``model_walk`` applies these rules to a whole saved model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Shape = tuple[int | None, ...]  # with the batch axis first, as Keras writes it
Rule = Callable[[dict[str, Any], list[Shape]], tuple[int, Shape]]

MAX_DIM = 2**62  # Keras shapes are int64; a larger value is not a shape we reason about
FLOAT_DTYPES = ("float16", "float32", "float64", "bfloat16", "mixed_float16", "mixed_bfloat16")


class Unknown(Exception):
    """A value these rules do not compute (the layer's size is left to Keras)."""


def layer_size(kind: Any, cfg: dict[str, Any], shapes: list[Shape]) -> tuple[int, Shape]:
    """(parameters, output shape) of a layer of class ``kind`` with saved config ``cfg``
    called on ``shapes`` (one per input). Raises Unknown for what is not computed here."""
    rule = RULES.get(kind) if isinstance(kind, str) else None
    if rule is None:
        raise Unknown
    _plain(cfg)
    try:
        params, out = rule(cfg, shapes)
    except (ArithmeticError, LookupError, TypeError, ValueError) as exc:  # odd values
        raise Unknown from exc
    if any(d is not None and d > MAX_DIM for d in out):
        raise Unknown
    return params, out


# --------------------------------------------------------------------------- values


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else Unknown."""
    if not isinstance(value, dict):
        raise Unknown
    return value


def as_int(value: Any, low: int = 0) -> int:
    """``value`` if it is an int from ``low`` to MAX_DIM (not a bool), else Unknown."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_DIM:
        raise Unknown
    return value


def _ints(value: Any, n: int) -> tuple[int, ...]:
    """An int or a list of ``n`` ints (Keras accepts both for kernel sizes and strides)."""
    values = [value] * n if isinstance(value, int) else value
    if not isinstance(values, list | tuple) or len(values) != n:
        raise Unknown
    return tuple(as_int(v, 1) for v in values)


def shape_of(value: Any) -> Shape:
    """A JSON shape list as a tuple of ints and None (``Unknown`` for anything else)."""
    if not isinstance(value, list | tuple) or not value or len(value) > 32:
        raise Unknown
    return tuple(None if v is None else as_int(v) for v in value)


def _known(dim: int | None) -> int:
    if dim is None:
        raise Unknown
    return dim


def _axis(shape: Shape, axis: Any) -> int:
    axis = as_int(axis + len(shape) if isinstance(axis, int) and axis < 0 else axis)
    if not 0 < axis < len(shape):
        raise Unknown
    return axis


def _channels_last(cfg: dict[str, Any]) -> None:
    if cfg.get("data_format", "channels_last") not in (None, "channels_last"):
        raise Unknown  # channels_first moves the channel axis; not worth guessing


# --------------------------------------------------------------------------- layer rules


def _dense(cfg: dict[str, Any], shapes: list[Shape]) -> tuple[int, Shape]:
    shape, units = shapes[0], as_int(cfg.get("units"), 1)
    fan_in = _known(shape[-1])
    return fan_in * units + units * bool(cfg.get("use_bias", True)), (*shape[:-1], units)


def _spatial(n: int | None, kernel: int, stride: int, dilation: int, padding: Any) -> int | None:
    if n is None:
        return None
    if padding in ("same", "causal"):
        return (n - 1) // stride + 1
    if padding != "valid":
        raise Unknown
    out = (n - dilation * (kernel - 1) - 1) // stride + 1
    if out < 1:
        raise Unknown  # Keras refuses it; let it say so
    return out


def _conv_out(cfg: dict[str, Any], shape: Shape, channels: int) -> Shape:
    _channels_last(cfg)
    rank = len(shape) - 2
    if rank < 1:
        raise Unknown
    kernel = _ints(cfg.get("kernel_size"), rank)
    strides = _ints(cfg.get("strides", 1), rank)
    dilation = _ints(cfg.get("dilation_rate", 1), rank)
    padding = cfg.get("padding", "valid")
    spatial = [_spatial(n, k, s, d, padding)
               for n, k, s, d in zip(shape[1:-1], kernel, strides, dilation, strict=True)]
    return (shape[0], *spatial, channels)


def _conv(cfg: dict[str, Any], shapes: list[Shape]) -> tuple[int, Shape]:
    shape, filters = shapes[0], as_int(cfg.get("filters"), 1)
    groups = as_int(cfg.get("groups", 1), 1)
    channels = _known(shape[-1])
    if channels % groups or filters % groups:
        raise Unknown
    out = _conv_out(cfg, shape, filters)
    kernel = math.prod(_ints(cfg.get("kernel_size"), len(shape) - 2))
    return kernel * channels // groups * filters + filters * bool(cfg.get("use_bias", True)), out


def _depthwise(cfg: dict[str, Any], shapes: list[Shape]) -> tuple[int, Shape]:
    shape, multiplier = shapes[0], as_int(cfg.get("depth_multiplier", 1), 1)
    channels = _known(shape[-1]) * multiplier
    kernel = math.prod(_ints(cfg.get("kernel_size"), len(shape) - 2))
    bias = channels * bool(cfg.get("use_bias", True))
    return kernel * channels + bias, _conv_out(cfg, shape, channels)


def _separable(cfg: dict[str, Any], shapes: list[Shape]) -> tuple[int, Shape]:
    shape, multiplier = shapes[0], as_int(cfg.get("depth_multiplier", 1), 1)
    filters = as_int(cfg.get("filters"), 1)
    depth = _known(shape[-1]) * multiplier
    kernel = math.prod(_ints(cfg.get("kernel_size"), len(shape) - 2))
    bias = filters * bool(cfg.get("use_bias", True))
    return kernel * depth + depth * filters + bias, _conv_out(cfg, shape, filters)


def _norm_size(cfg: dict[str, Any], shape: Shape) -> int:
    axes = cfg.get("axis", -1)
    axes = axes if isinstance(axes, list) else [axes]
    return math.prod(_known(shape[_axis(shape, a)]) for a in axes)


def _batch_norm(cfg: dict[str, Any], shapes: list[Shape]) -> tuple[int, Shape]:
    if cfg.get("renorm"):
        raise Unknown  # renormalization adds variables of its own
    vectors = 2 + bool(cfg.get("center", True)) + bool(cfg.get("scale", True))  # + moving stats
    return vectors * _norm_size(cfg, shapes[0]), shapes[0]


def _layer_norm(cfg: dict[str, Any], shapes: list[Shape]) -> tuple[int, Shape]:
    rms = bool(cfg.get("rms_scaling", False))
    vectors = bool(cfg.get("scale", True) or rms) + bool(cfg.get("center", True) and not rms)
    return vectors * _norm_size(cfg, shapes[0]), shapes[0]


def _embedding(cfg: dict[str, Any], shapes: list[Shape]) -> tuple[int, Shape]:
    dim = as_int(cfg.get("output_dim"), 1)
    return as_int(cfg.get("input_dim"), 1) * dim, (*shapes[0], dim)


def _same(cfg: dict[str, Any], shapes: list[Shape]) -> tuple[int, Shape]:
    return 0, shapes[0]


def _flatten(cfg: dict[str, Any], shapes: list[Shape]) -> tuple[int, Shape]:
    _channels_last(cfg)
    rest = shapes[0][1:]
    size = None if None in rest else math.prod(_known(d) for d in rest)
    return 0, (shapes[0][0], size)


def _reshape(cfg: dict[str, Any], shapes: list[Shape]) -> tuple[int, Shape]:
    target = cfg.get("target_shape")
    if not isinstance(target, list | tuple) or not target or len(target) > 32:
        raise Unknown
    size = math.prod(_known(d) for d in shapes[0][1:])
    dims = [None if d == -1 else as_int(d, 1) for d in target]
    if dims.count(None) > 1:
        raise Unknown
    known = math.prod(d for d in dims if d is not None)
    if None in dims:
        if size % known:
            raise Unknown
        dims[dims.index(None)] = size // known
    elif known != size:
        raise Unknown
    return 0, (shapes[0][0], *dims)


def _pool(cfg: dict[str, Any], shapes: list[Shape]) -> tuple[int, Shape]:
    _channels_last(cfg)
    shape = shapes[0]
    rank = len(shape) - 2
    if rank < 1:
        raise Unknown
    size = _ints(cfg.get("pool_size", 2), rank)
    strides = size if cfg.get("strides") is None else _ints(cfg.get("strides"), rank)
    padding = cfg.get("padding", "valid")
    spatial = [_spatial(n, k, s, 1, padding)
               for n, k, s in zip(shape[1:-1], size, strides, strict=True)]
    return 0, (shape[0], *spatial, shape[-1])


def _global_pool(cfg: dict[str, Any], shapes: list[Shape]) -> tuple[int, Shape]:
    _channels_last(cfg)
    shape = shapes[0]
    if cfg.get("keepdims"):
        return 0, (shape[0], *[1] * (len(shape) - 2), shape[-1])
    return 0, (shape[0], shape[-1])


def _merge(cfg: dict[str, Any], shapes: list[Shape]) -> tuple[int, Shape]:
    if len(shapes) < 2 or any(s != shapes[0] for s in shapes):
        raise Unknown  # broadcasting between shapes: left to Keras
    return 0, shapes[0]


def _concatenate(cfg: dict[str, Any], shapes: list[Shape]) -> tuple[int, Shape]:
    axis = _axis(shapes[0], cfg.get("axis", -1))
    if len(shapes) < 2 or any(len(s) != len(shapes[0]) for s in shapes):
        raise Unknown
    rest = [s[:axis] + s[axis + 1:] for s in shapes]
    if any(r != rest[0] for r in rest):
        raise Unknown
    total = sum(_known(s[axis]) for s in shapes)
    return 0, (*shapes[0][:axis], total, *shapes[0][axis + 1:])


def _padding_2d(cfg: dict[str, Any], shapes: list[Shape], sign: int) -> tuple[int, Shape]:
    _channels_last(cfg)
    shape = shapes[0]
    key = "padding" if sign > 0 else "cropping"
    value = cfg.get(key, 1 if sign > 0 else 0)
    if len(shape) != 4:
        raise Unknown
    if isinstance(value, int):
        pairs = [(value, value)] * 2
    elif isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        pairs = [(value[0], value[0]), (value[1], value[1])]
    elif isinstance(value, list) and len(value) == 2:
        pairs = [(v[0], v[1]) if isinstance(v, list) and len(v) == 2 else (v, v) for v in value]
    else:
        raise Unknown
    spatial = []
    for n, (a, b) in zip(shape[1:3], pairs, strict=True):
        change = sign * (as_int(a) + as_int(b))
        if n is not None and n + change < 1:
            raise Unknown
        spatial.append(None if n is None else n + change)
    return 0, (shape[0], *spatial, shape[3])


def _upsampling(cfg: dict[str, Any], shapes: list[Shape]) -> tuple[int, Shape]:
    _channels_last(cfg)
    shape = shapes[0]
    if len(shape) != 4:
        raise Unknown
    size = _ints(cfg.get("size", 2), 2)
    spatial = [None if n is None else n * s for n, s in zip(shape[1:3], size, strict=True)]
    return 0, (shape[0], *spatial, shape[3])


def _resizing(cfg: dict[str, Any], shapes: list[Shape]) -> tuple[int, Shape]:
    _channels_last(cfg)
    if len(shapes[0]) != 4:
        raise Unknown
    height, width = as_int(cfg.get("height"), 1), as_int(cfg.get("width"), 1)
    return 0, (shapes[0][0], height, width, shapes[0][3])


def _permute(cfg: dict[str, Any], shapes: list[Shape]) -> tuple[int, Shape]:
    dims = cfg.get("dims")
    shape = shapes[0]
    if not isinstance(dims, list) or sorted(dims) != list(range(1, len(shape))):
        raise Unknown
    return 0, (shape[0], *(shape[d] for d in dims))


SHAPE_ONLY = ("Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "Dropout", "SpatialDropout1D",
              "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout",
              "AlphaDropout", "Rescaling", "Identity", "ActivityRegularization", "Masking")
RULES: dict[str, Rule] = {
    "Dense": _dense, "Conv1D": _conv, "Conv2D": _conv, "Conv3D": _conv,
    "DepthwiseConv1D": _depthwise, "DepthwiseConv2D": _depthwise,
    "SeparableConv1D": _separable, "SeparableConv2D": _separable,
    "BatchNormalization": _batch_norm, "LayerNormalization": _layer_norm,
    "Embedding": _embedding, "Flatten": _flatten, "Reshape": _reshape, "Permute": _permute,
    "ZeroPadding2D": lambda c, s: _padding_2d(c, s, 1),
    "Cropping2D": lambda c, s: _padding_2d(c, s, -1),
    "UpSampling2D": _upsampling, "Resizing": _resizing,
    "Add": _merge, "Subtract": _merge, "Multiply": _merge, "Average": _merge,
    "Maximum": _merge, "Minimum": _merge, "Concatenate": _concatenate,
    **{name: _same for name in SHAPE_ONLY},
    **{f"{kind}Pooling{n}D": _pool for kind in ("Max", "Average") for n in (1, 2, 3)},
    **{f"Global{kind}Pooling{n}D": _global_pool for kind in ("Max", "Average") for n in (1, 2, 3)},
}


def _plain(cfg: dict[str, Any]) -> None:
    """Refuse to count layers whose variables are not the plain float ones the rules know."""
    if cfg.get("lora_rank") or cfg.get("quantization_config"):
        raise Unknown
    dtype = cfg.get("dtype")
    if isinstance(dtype, dict):
        if dtype.get("class_name") != "DTypePolicy":
            raise Unknown
        dtype = as_dict(dtype.get("config")).get("name")
    if dtype is not None and dtype not in FLOAT_DTYPES:
        raise Unknown
