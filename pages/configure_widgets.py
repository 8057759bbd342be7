"""The Configure page's widgets (not a page itself): every field of a ModelConfig and its
FitSettings as a slider, toggle or select box.

- ``config_widgets``: the whole form (backbone, conv blocks, head, training, augmentation);
  returns the config and fit settings it describes and the backbone's weights;
- ``pretrained_widgets`` and ``weights_widgets``: the backbone, its two phases, its weights;
- ``block_widgets`` and ``dense_widgets``: one conv block, one hidden dense layer.

Widget keys come from ``k`` (``cfg<version>_<name>``, see ``state.config_version``), so a new
preset, an uploaded config or a run's settings start every widget again from their values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import streamlit as st

from cnnlab.model import backbones
from cnnlab.model.config import (
    ACTIVATIONS,
    INITIALIZERS,
    MAX_BLOCKS,
    MAX_DENSE,
    OPTIMIZERS,
    Augmentation,
    ConvBlock,
    DenseLayer,
    ModelConfig,
)
from cnnlab.model.fit_settings import FitSettings
from pages import state
from pages.signin import md

FILTERS = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]
KERNELS = [1, 2, 3, 4, 5, 7, 9, 11]
UNITS = [8, 16, 32, 64, 100, 128, 192, 256, 300, 384, 512, 1024]
LEARNING_RATES = [1e-5, 3e-5, 1e-4, 3e-4, 5e-4, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2, 3e-2, 0.1]
BATCH_SIZES = [8, 16, 32, 64, 128, 256, 512]
LR_FACTORS = [0.01, 0.03, 0.1, 0.3, 1.0]
# config_widgets' ``k``: a field name → its widget key (``cfg<version>_<name>``), passed down.
KeyFn = Callable[[str], str]
NO_BACKBONE = ""  # ModelConfig.backbone of a CNN built from conv blocks
# The weights choice's options and how each reads; "file" stands for a path typed below it.
WEIGHT_SOURCES = {state.IMAGENET: "ImageNet (Keras' download)",
                  "file": "A weights file on this server", "none": "None (random start)"}


def with_value(options: list, value) -> list:
    """Options of a select_slider, with ``value`` added when a preset or file uses another."""
    return options if value in options else sorted({*options, value})


def clamp(value: float, low: float, high: float) -> float:
    """``value`` kept within ``low`` and ``high``, so a preset or file outside a slider's
    range still opens it."""
    return min(max(value, low), high)


def block_widgets(i: int, b: ConvBlock, k: KeyFn) -> ConvBlock:
    """Widgets of conv block ``i`` (1-based) in an expander; returns the edited block."""
    pool_label = f", pool {b.pool}" if b.pool else ""
    title = f"Block {i}: {b.convs}× conv {b.filters} ({b.kernel_size}×{b.kernel_size}){pool_label}"
    with st.expander(title, expanded=i == 1):
        c1, c2 = st.columns(2)
        filters = c1.select_slider(
            "Filters", with_value(FILTERS, b.filters), b.filters, key=k(f"b{i}_filters")
        )
        kernel = c2.select_slider(
            "Kernel size", with_value(KERNELS, b.kernel_size), b.kernel_size,
            key=k(f"b{i}_kernel"),
        )
        convs = c1.slider("Convs in block", 1, 4, int(clamp(b.convs, 1, 4)), key=k(f"b{i}_convs"))
        stride = c2.slider("Stride (first conv)", 1, 4, int(clamp(b.stride, 1, 4)),
                           key=k(f"b{i}_stride"))
        padding = c1.radio("Padding", ["same", "valid"], ["same", "valid"].index(b.padding)
                           if b.padding in ("same", "valid") else 0, horizontal=True,
                           key=k(f"b{i}_padding"))
        activation = c2.selectbox(
            "Activation", ACTIVATIONS, ACTIVATIONS.index(b.activation)
            if b.activation in ACTIVATIONS else 0, key=k(f"b{i}_activation"),
        )
        pool = c1.select_slider(
            "Max-pool", with_value([0, 2, 3, 4], b.pool), b.pool, key=k(f"b{i}_pool"),
            format_func=lambda p: "none" if p == 0 else f"{p}×{p}",
        )
        dropout = c2.slider("Dropout after block", 0.0, 0.9, float(clamp(b.dropout, 0, 0.9)),
                            0.05, key=k(f"b{i}_dropout"))
        batch_norm = st.toggle("Batch normalization after each conv", b.batch_norm,
                               key=k(f"b{i}_bn"))
    return ConvBlock(filters, kernel, stride, padding, activation, convs, batch_norm, pool,
                     dropout)


def dense_widgets(i: int, d: DenseLayer, k: KeyFn) -> DenseLayer:
    """Widgets of hidden dense layer ``i`` (1-based); returns the edited layer."""
    with st.expander(f"Dense {i}: {d.units} units", expanded=False):
        c1, c2 = st.columns(2)
        units = c1.select_slider("Units", with_value(UNITS, d.units), d.units,
                                 key=k(f"d{i}_units"))
        dropout = c2.slider("Dropout after", 0.0, 0.9, float(clamp(d.dropout, 0, 0.9)), 0.05,
                            key=k(f"d{i}_dropout"))
        activation = c1.selectbox(
            "Activation", ACTIVATIONS,
            ACTIVATIONS.index(d.activation) if d.activation in ACTIVATIONS else 0,
            key=k(f"d{i}_activation"),
        )
        batch_norm = c2.toggle("Batch normalization", d.batch_norm, key=k(f"d{i}_bn"))
    return DenseLayer(units, dropout, activation, batch_norm)


def backbone_label(name: str) -> str:
    """'ResNet50 · 224×224 input · 23.6 M parameters' for the backbone picker."""
    if name == NO_BACKBONE:
        return "None: build my own CNN from conv blocks"
    b = backbones.BACKBONES[name]
    return f"{name} · {b.input_size}×{b.input_size} input · {b.params / 1e6:.1f} M parameters"


def weights_widgets(backbone: str, k: KeyFn) -> tuple[str | None, str | None]:
    """The backbone's starting weights (as ``TrainRequest.weights``) and why they cannot be
    used (one sentence, None when they can): checked at once, nothing is downloaded."""
    chosen = state.weights_choice()
    source = "none" if chosen is None else chosen if chosen == state.IMAGENET else "file"
    picked = st.radio("Start from weights", list(WEIGHT_SOURCES),
                      list(WEIGHT_SOURCES).index(source), format_func=WEIGHT_SOURCES.get,
                      horizontal=True, key=k("weights_source"))
    if picked == "none":
        return None, None
    if picked == state.IMAGENET:
        return state.IMAGENET, backbones.weights_problem(backbone, state.IMAGENET)
    path = st.text_input("Weights file on the server", chosen if source == "file" else "",
                         key=k("weights_path"), placeholder="/data/weights/resnet50.weights.h5",
                         help="A Keras 3 .weights.h5 file saved from this backbone, or a "
                              "Keras applications *_notop.h5 file.").strip()
    if not path:
        return "", ("Type the path of a weights file on the server, or start from ImageNet "
                    "weights or none.")
    return path, backbones.weights_problem(backbone, path)


def pretrained_widgets(cfg: ModelConfig, fit: FitSettings, k: KeyFn
                       ) -> tuple[ModelConfig, int, str | None, str | None]:
    """The backbone picker and, with a backbone, its two training phases and its weights.

    Returns ``cfg`` with the backbone fields set, the fine-tune epochs, the weights
    (``TrainRequest.weights``) and why those weights cannot be used (None: they can).
    """
    st.subheader("Start from a pretrained network")
    names = [NO_BACKBONE, *backbones.BACKBONES]
    backbone = st.selectbox("Backbone", names,
                            names.index(cfg.backbone) if cfg.backbone in names else 0,
                            format_func=backbone_label, key=k("backbone"),
                            help="A keras.applications network without its classifier; your "
                                 "images are resized to its input size.")
    if backbone == NO_BACKBONE:
        return replace(cfg, backbone=NO_BACKBONE, unfreeze=0), 0, None, None
    info = backbones.BACKBONES[backbone]
    st.caption(f"Phase 1 trains only the head on top of the frozen {backbone}; phase 2 "
               "(optional) then unfreezes its top layers and fine-tunes them with a smaller "
               "learning rate. BatchNorm layers stay frozen.")
    c1, c2 = st.columns(2)
    unfreeze = c1.slider("Unfreeze the top layers (phase 2)", 0, info.layers,
                         int(clamp(cfg.unfreeze, 0, info.layers)), key=k("unfreeze"),
                         help=f"{backbone} has {info.layers} layers; 0 = no phase 2.")
    # Without unfrozen layers phase 2 has nothing to train (Train would refuse its epochs).
    fine_tune_epochs = c2.slider("Fine-tune epochs (phase 2)", 0, 50,
                                 int(clamp(fit.fine_tune_epochs, 0, 50)),
                                 key=k("fine_tune_epochs"), disabled=unfreeze == 0)
    fine_tune_epochs = fine_tune_epochs if unfreeze else 0
    lr_factor = c1.select_slider(
        "Fine-tune learning rate factor", with_value(LR_FACTORS, cfg.fine_tune_lr_factor),
        cfg.fine_tune_lr_factor, key=k("lr_factor"), format_func=lambda v: f"× {v:g}",
        help="Phase 2's learning rate is the learning rate below times this factor.",
    )
    if not (unfreeze and fine_tune_epochs):
        c2.caption("No phase 2: it needs unfrozen layers and epochs of its own.")
    weights, problem = weights_widgets(backbone, k)
    if problem:
        st.error(md(problem))
    config = replace(cfg, backbone=backbone, unfreeze=unfreeze, fine_tune_lr_factor=lr_factor,
                     blocks=(), global_pool=True)
    return config, fine_tune_epochs, weights, problem


def config_widgets(cfg: ModelConfig, fit: FitSettings
                   ) -> tuple[ModelConfig, FitSettings, str | None, str | None]:
    """Every field of the config and its fit settings as a widget; returns what the
    widgets describe, the backbone's weights and why they cannot be used (None: they can)."""
    version = state.config_version()

    def k(name: str) -> str:
        return f"cfg{version}_{name}"

    pretrained, fine_tune_epochs, weights, weights_problem = pretrained_widgets(cfg, fit, k)
    blocks = []
    if not pretrained.backbone:
        st.subheader("Convolutional blocks")
        n_blocks = st.number_input("Number of conv blocks", 1, MAX_BLOCKS,
                                   int(clamp(len(cfg.blocks), 1, MAX_BLOCKS)),
                                   key=k("n_blocks"))
        for i in range(1, n_blocks + 1):
            # A new block starts as the previous one with twice the filters (the first,
            # after a backbone model, as the default block).
            base = cfg.blocks[i - 1] if i <= len(cfg.blocks) else replace(
                blocks[-1], filters=min(2 * blocks[-1].filters, 512)
            ) if blocks else ConvBlock()
            blocks.append(block_widgets(i, base, k))

    st.subheader("Head")
    c1, c2 = st.columns(2)
    if pretrained.backbone:  # the design's head: the feature map is always pooled
        global_pool = True
        c1.caption("Global average pooling of the backbone's feature map, then:")
    else:
        global_pool = c1.toggle("Global average pooling instead of Flatten", cfg.global_pool,
                                key=k("global_pool"))
    flatten_dropout = c2.slider("Dropout before the dense layers", 0.0, 0.9,
                                float(clamp(cfg.flatten_dropout, 0, 0.9)), 0.05,
                                key=k("flatten_dropout"))
    n_dense = st.number_input("Hidden dense layers", 0, MAX_DENSE,
                              int(clamp(len(cfg.dense), 0, MAX_DENSE)), key=k("n_dense"))
    dense = [
        dense_widgets(i, cfg.dense[i - 1] if i <= len(cfg.dense) else DenseLayer(), k)
        for i in range(1, n_dense + 1)
    ]

    st.subheader("Training")
    c1, c2 = st.columns(2)
    optimizer = c1.selectbox(
        "Optimizer", OPTIMIZERS,
        OPTIMIZERS.index(cfg.optimizer) if cfg.optimizer in OPTIMIZERS else 0,
        key=k("optimizer"), help="sgd uses momentum 0.9",
    )
    initializer = c2.selectbox(
        "Kernel initializer", INITIALIZERS,
        INITIALIZERS.index(cfg.initializer) if cfg.initializer in INITIALIZERS else 0,
        key=k("initializer"),
    )
    learning_rate = c1.select_slider(
        "Learning rate", with_value(LEARNING_RATES, cfg.learning_rate), cfg.learning_rate,
        key=k("lr"), format_func=lambda v: f"{v:g}",
    )
    batch_size = c2.select_slider("Batch size", with_value(BATCH_SIZES, fit.batch_size),
                                  fit.batch_size, key=k("batch_size"))
    epochs = c1.slider("Epochs", 1, 100, int(clamp(fit.epochs, 1, 100)), key=k("epochs"))
    patience = c2.slider("Early-stopping patience (0 = off)", 0, 20,
                         int(clamp(fit.patience, 0, 20)), key=k("patience"))
    decay = st.toggle("Exponential learning-rate decay", cfg.lr_decay_rate is not None,
                      key=k("decay"))
    lr_decay_rate, lr_decay_steps = cfg.lr_decay_rate, cfg.lr_decay_steps
    if decay:
        c1, c2 = st.columns(2)
        lr_decay_rate = c1.slider("Decay rate", 0.1, 1.0,
                                  float(clamp(cfg.lr_decay_rate or 0.9, 0.1, 1.0)), 0.01,
                                  key=k("decay_rate"))
        lr_decay_steps = int(c2.number_input("Decay steps (batches)", 1, 1_000_000,
                                             int(clamp(cfg.lr_decay_steps, 1, 1_000_000)), 100,
                                             key=k("decay_steps")))
    else:
        lr_decay_rate = None

    st.subheader("Augmentation (training only)")
    aug = cfg.augmentation
    c1, c2 = st.columns(2)  # two rows of two: four in this narrow column cut the labels
    flip = c1.toggle("Random horizontal flip", aug.flip, key=k("flip"))
    translate = c2.slider("Random shift (fraction)", 0.0, 0.3, float(clamp(aug.translate, 0, 0.3)),
                          0.01, key=k("translate"))
    c3, c4 = st.columns(2)
    rotate = c3.slider("Random rotation (fraction of a turn)", 0.0, 0.25,
                       float(clamp(aug.rotate, 0, 0.25)), 0.01, key=k("rotate"),
                       help="0.05 ≈ ±18°")
    erase = c4.slider("Random erasing (chance)", 0.0, 1.0, float(clamp(aug.erase, 0, 1)), 0.05,
                      key=k("erase"),
                      help="Each training image has this chance of a random rectangle "
                           "replaced by noise, so the model cannot rely on one part alone.")
    config = ModelConfig(
        blocks=tuple(blocks), dense=tuple(dense), flatten_dropout=flatten_dropout,
        global_pool=global_pool, initializer=initializer, optimizer=optimizer,
        learning_rate=learning_rate, lr_decay_rate=lr_decay_rate, lr_decay_steps=lr_decay_steps,
        augmentation=Augmentation(flip, translate, rotate, erase), backbone=pretrained.backbone,
        unfreeze=pretrained.unfreeze, fine_tune_lr_factor=pretrained.fine_tune_lr_factor,
    )
    fit = FitSettings(batch_size=batch_size, epochs=epochs, patience=patience,
                      fine_tune_epochs=fine_tune_epochs)
    return config, fit, weights, weights_problem
