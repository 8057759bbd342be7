"""A pretrained backbone's own layers, grouped into its stages, for the expanded view.

The layer table and the diagram show a backbone as one row; a reader who opens it sees
its stages instead of 20 to 240 single layers: ResNet50's ``conv1`` … ``conv5``, VGG16's
``block1`` … ``block5``, EfficientNet's ``stem``, ``block1`` … ``block7``, ``top``,
MobileNetV3's ``conv``, ``expanded_conv_N`` blocks and ``conv_1``. Each stage says how many
of its layers phase 2 unfreezes (``unfreeze_top``'s rule: the top N layers, BatchNorm
layers stay frozen).

``stages`` is pure Python over (name, kind, params, output shape) tuples; ``layer_facts``
builds the backbone with Keras (random weights, nothing downloaded) to get them, so only a
caller that really wants the inside pays for TensorFlow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A stage is named by its layers' common prefix: conv2_block1_1_conv → conv2,
# block1a_dwconv → block1, expanded_conv_3_expand → expanded_conv_3, top_bn → top.
_STAGE = re.compile(r"^(expanded_conv(?:_\d+)?|conv_\d+|conv\d+|pool\d+|block\d+|stem|top|conv)"
                    r"(?=_|[a-z]?$|[a-z]_)")
LayerFacts = tuple[str, str, int, tuple[int, ...]]  # name, Keras class, params, output shape


@dataclass(frozen=True)
class Stage:
    """One stage of a backbone: its name, layer count, parameters, the output shape of its
    last layer, and how many of its layers phase 2 trains (``unfrozen``)."""

    name: str
    layers: int
    params: int
    output_shape: tuple[int, ...]
    unfrozen: int = 0


def stage_of(layer_name: str) -> str | None:
    """The stage a layer name belongs to, or None (input, rescaling, re_lu_3, …)."""
    match = _STAGE.match(layer_name)
    return match.group(1) if match else None


def stages(layers: list[LayerFacts], unfreeze: int = 0) -> list[Stage]:
    """Consecutive layers grouped by stage; a layer without a stage name (an activation
    between two of them) joins the stage before it, the input layers make a first stage
    "input". ``unfreeze`` counts the top layers phase 2 trains (BatchNorm excluded)."""
    top = {i for i in range(max(len(layers) - unfreeze, 0), len(layers))
           if layers[i][1] != "BatchNormalization"} if unfreeze > 0 else set()
    out: list[Stage] = []
    for i, (name, _kind, params, shape) in enumerate(layers):
        key = stage_of(name) or (out[-1].name if out else "input")
        trained = int(i in top)
        if out and out[-1].name == key:
            last = out[-1]
            out[-1] = Stage(key, last.layers + 1, last.params + params, shape,
                            last.unfrozen + trained)
        else:
            out.append(Stage(key, 1, params, shape, trained))
    return out


def layer_facts(name: str) -> list[LayerFacts]:
    """(name, Keras class, params, output shape) of every layer of backbone ``name`` (a key
    of ``backbones.BACKBONES``), built with Keras at its input size with random weights
    (nothing downloaded). Imports TensorFlow: seconds, not instant; callers cache it."""
    from cnnlab.model import backbones

    base = backbones.build_backbone(name, None)
    return [(layer.name, type(layer).__name__, int(layer.count_params()),
             tuple(int(v) for v in layer.output.shape[1:]))
            for layer in base.layers]
