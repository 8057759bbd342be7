"""The stages of a pretrained backbone (cnnlab.model.backbone_stages) and their diagram frame."""

from __future__ import annotations

from cnnlab.charts import architecture_dot
from cnnlab.model.backbone_stages import Stage, stage_of, stages
from cnnlab.model.config import ModelConfig
from cnnlab.model.models import layer_table


def test_layer_names_of_each_family_map_to_their_stage() -> None:
    names = {
        "conv2_block1_1_conv": "conv2", "pool1_pool": "pool1",  # ResNet50
        "block1_conv1": "block1", "block5_pool": "block5",  # VGG16
        "block2b_se_excite": "block2", "stem_bn": "stem", "top_activation": "top",  # EfficientNet
        "expanded_conv_depthwise": "expanded_conv", "expanded_conv_10_add": "expanded_conv_10",
        "conv_bn": "conv", "conv_1_bn": "conv_1",  # MobileNetV3
        "input_layer": None, "re_lu_3": None, "activation_17": None, "rescaling": None,
    }
    assert {name: stage_of(name) for name in names} == names


def test_stages_group_in_order_and_count_what_phase_two_trains() -> None:
    layers = [("input_layer", "InputLayer", 0, (8, 8, 3)), ("rescaling", "Rescaling", 0, (8, 8, 3)),
              ("block1_conv", "Conv2D", 10, (8, 8, 4)), ("re_lu", "ReLU", 0, (8, 8, 4)),
              ("block2_conv", "Conv2D", 20, (4, 4, 8)),
              ("block2_bn", "BatchNormalization", 32, (4, 4, 8)),
              ("block2_relu", "ReLU", 0, (4, 4, 8))]
    assert stages(layers) == [Stage("input", 2, 0, (8, 8, 3)), Stage("block1", 2, 10, (8, 8, 4)),
                              Stage("block2", 3, 52, (4, 4, 8))]
    # The top 4 layers, BatchNorm left frozen as backbones.unfreeze_top does: 3 trained.
    assert [s.unfrozen for s in stages(layers, unfreeze=4)] == [0, 1, 2]


def test_the_diagram_opens_the_backbone_into_its_stages() -> None:
    config = ModelConfig(blocks=(), dense=(), backbone="VGG16", global_pool=True, unfreeze=4)
    rows = layer_table(config, (32, 32, 3), 10)
    closed = architecture_dot(rows)
    assert "pretrained backbone" in closed and "frozen in phase 1" in closed
    inside = [Stage("block1", 3, 38_720, (112, 112, 64)), Stage("block5", 4, 7_079_424,
                                                                 (7, 7, 512), unfrozen=3)]
    opened = architecture_dot(rows, inside)
    assert "subgraph cluster_" in opened and "pretrained backbone" not in opened
    assert "block5 · 4 layers → 7×7×512" in opened and "3 trained in phase 2" in opened
    # Still one chain: every box but the first has one edge in.
    assert opened.count("->") == opened.count("[label=") - 1
