"""Configure: shape a CNN with sliders; see layers, shapes, parameters and memory live.

Thin page: widgets → ModelConfig → cnnlab.model.models.layer_table (pure Python, no TensorFlow).
The config and its fit settings (batch size, epochs, patience) are kept for the Train
page with pages.state (``model_choice``). Widget keys carry a version number
(``state.config_version``): picking a preset, uploading a config or loading a run's settings
bumps it, so every widget starts again from the new config's values.
The data set and the preset are in the address (``?dataset=mnist&preset=quick``).
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import streamlit as st

from cnnlab import charts
from cnnlab.data import datasets
from cnnlab.model import backbone_stages, backbones
from cnnlab.model.config import (
    ACTIVATIONS,
    INITIALIZERS,
    MAX_BLOCKS,
    MAX_DENSE,
    OPTIMIZERS,
    PRESETS,
    Augmentation,
    ConfigError,
    ConvBlock,
    DenseLayer,
    ModelConfig,
    advice,
    default_preset,
    file_json,
    from_file,
    range_problems,
    validate,
)
from cnnlab.model.fit_settings import FitSettings
from cnnlab.model.models import layer_table, memory_bytes, to_keras_script
from cnnlab.train import budgets
from pages import state
from pages.common import dataset_picker, engine
from pages.signin import current_user, md

FILTERS = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]
KERNELS = [1, 2, 3, 4, 5, 7, 9, 11]
UNITS = [8, 16, 32, 64, 100, 128, 192, 256, 300, 384, 512, 1024]
LEARNING_RATES = [1e-5, 3e-5, 1e-4, 3e-4, 5e-4, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2, 3e-2, 0.1]
BATCH_SIZES = [8, 16, 32, 64, 128, 256, 512]
LR_FACTORS = [0.01, 0.03, 0.1, 0.3, 1.0]
NO_BACKBONE = ""  # ModelConfig.backbone of a CNN built from conv blocks
# The weights choice's options and how each reads; "file" stands for a path typed below it.
WEIGHT_SOURCES = {state.IMAGENET: "ImageNet (Keras' download)",
                  "file": "A weights file on this server", "none": "None (random start)"}


def with_value(options: list, value) -> list:
    """Options of a select_slider, with ``value`` added when a preset or file uses another."""
    return options if value in options else sorted({*options, value})


def clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def dataset_shape(name: str) -> tuple[tuple[int, int, int], int, str]:
    """(image shape, class count, title) of the current data set or this session's upload."""
    info = datasets.REGISTRY.get(name)
    if info is None:
        upload = state.uploaded_dataset()
        info = upload.info if upload is not None and upload.info.name == name else None
    if info is None:  # a lost upload: trace shapes as for MNIST, like config.input_shape_for
        mnist = datasets.REGISTRY["mnist"]
        return mnist.image_shape, len(mnist.class_names), name
    return tuple(info.image_shape), len(info.class_names), info.title


def load_preset() -> None:
    """Preset picker callback: start over from the chosen preset."""
    name = state.preset_picked()
    state.set_model_choice(PRESETS[name].config, PRESETS[name].fit, name)


def preset_from_address() -> None:
    """``?preset=NAME`` of a new address starts over from that preset; an unknown name gets
    a warning and leaves the model as it is."""
    wanted = state.address_choice("preset")
    if wanted is None:
        return
    if wanted in PRESETS:
        state.set_model_choice(PRESETS[wanted].config, PRESETS[wanted].fit, wanted)
    else:
        st.warning(f"The address asks for the preset {md(repr(wanted))}, which does not "
                   f"exist; the presets are {md(', '.join(PRESETS))}. Pick one below.")


def block_widgets(i: int, b: ConvBlock, k) -> ConvBlock:
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


def dense_widgets(i: int, d: DenseLayer, k) -> DenseLayer:
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


def weights_widgets(backbone: str, k) -> tuple[str | None, str | None]:
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


def pretrained_widgets(cfg: ModelConfig, fit: FitSettings, k) -> tuple[ModelConfig, int,
                                                                        str | None, str | None]:
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


@st.cache_data(show_spinner="Building the backbone with Keras to list its layers…")
def backbone_layers(name: str) -> list[backbone_stages.LayerFacts]:
    """Every layer of backbone ``name`` (see ``backbone_stages.layer_facts``), built once per
    server process: it imports TensorFlow and takes seconds."""
    return backbone_stages.layer_facts(name)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} GB"


# ------------------------------------------------------------------------------------ page

current_user()  # class mode: signed-in people only
st.title(":material/tune: Configure")
st.caption("Shape a CNN: every change updates the layer table, parameters and diagram at once.")

top = st.columns([1, 1, 2])
with top[0]:
    dataset_name = dataset_picker(key="configure_dataset")
input_shape, n_classes, title = dataset_shape(dataset_name)

preset_from_address()
chosen = state.model_choice()
if chosen is None:  # a first visit: the data set's usual preset
    start = default_preset(dataset_name)
    chosen = PRESETS[start].config, PRESETS[start].fit, start
    state.record_model_edit(*chosen)
chosen_config, chosen_fit, chosen_preset = chosen
if state.preset_picked() not in PRESETS:
    st.session_state[state.PRESET_PICKER_KEY] = (
        chosen_preset if chosen_preset in PRESETS else default_preset(dataset_name)
    )
with top[1]:
    preset = st.selectbox("Start from preset", list(PRESETS), key=state.PRESET_PICKER_KEY,
                          on_change=load_preset)
state.show_in_address("preset", preset)
with top[2]:
    st.write("")
    st.caption(f"**{preset}** — {PRESETS[preset].description}  \n"
               f"Input {'×'.join(map(str, input_shape))} ({title}), {n_classes} classes.")

summary = st.container()  # filled after the widgets below have produced the config
left, right = st.columns([5, 7], gap="large")
with left:
    config, fit, weights, weights_problem = config_widgets(chosen_config, chosen_fit)
modified = (config, fit) != (PRESETS[preset].config, PRESETS[preset].fit)
preset_name = state.CUSTOM if modified else preset
state.record_model_edit(config, fit, preset_name)
if config.backbone:  # kept apart, so a later backbone still starts from ImageNet by default
    state.set_weights_choice(weights)

problems = validate(config, input_shape) + fit.problems()
# The server's budgets, with these fit settings (Train may change epochs and batch size).
over_budget = budgets.problems(engine().budgets, config, input_shape, n_classes,
                               fit.epochs, fit.batch_size)
rows = layer_table(config, input_shape, n_classes)
memory = memory_bytes(config, input_shape, n_classes)


with summary:
    m1, m2, m3, m4, m5, m6 = st.columns([1.2, 1.2, 1.2, 1, 1, 1.2], vertical_alignment="center")
    total = sum(r["params"] for r in rows)
    trainable = sum(r["trainable"] for r in rows)
    m1.metric("Parameters", f"{total:,}")
    m2.metric("Trainable", f"{trainable:,}",
              help="Trained by the optimizer (in phase 1, when a backbone is frozen).")
    m3.metric("Frozen", f"{total - trainable:,}",
              help="Not trained by the optimizer: a frozen backbone, BatchNorm's moving "
                   "statistics.")
    m4.metric("Weights (float32)", human_bytes(memory["weights"]))
    m5.metric("Activations / image", human_bytes(memory["activations_per_sample"]),
              help="Sum of every layer's output for one image, forward pass, float32.")
    with m6:
        blocked = bool(problems or over_budget or weights_problem)
        if st.button("Train this model", icon=":material/model_training:", type="primary",
                     disabled=blocked, key="cfg_train",
                     help="Fix the problems below first" if blocked else None):
            st.switch_page("pages/train.py", query_params={"dataset": dataset_name})
        if modified:
            st.caption(f"Modified from preset **{preset}**.")
    if problems:
        st.error("This network cannot be built:\n" + "\n".join(f"- {md(p)}" for p in problems))
    if over_budget:
        st.error("This server will not train it:\n" + "\n".join(f"- {md(p)}" for p in over_budget))
    for note in advice(config, dataset_name):
        st.warning(note)

with right:
    # The backbone is one row until opened: its stages need Keras (TensorFlow) to list.
    opened = bool(config.backbone) and st.toggle(
        f"Open the {config.backbone} block: list its stages",
        key="cfg_open_backbone",
        help="Builds the backbone once with Keras (a few seconds the first time).",
    )
    inside = (backbone_stages.stages(backbone_layers(config.backbone), config.unfreeze)
              if opened else None)
    tab_layers, tab_diagram, tab_params, tab_code, tab_json = st.tabs(
        ["Layers", "Diagram", "Parameters", "Keras script", "Config JSON"]
    )
    with tab_layers:
        table = pd.DataFrame(
            {
                "layer": [r["name"] for r in rows],
                "type": [r["type"] for r in rows],
                "output shape": ["×".join(map(str, r["output_shape"])) for r in rows],
                "params": [r["params"] for r in rows],
                "trainable": [r["trainable"] for r in rows],
                "frozen": [r["params"] - r["trainable"] for r in rows],
            }
        )
        count = st.column_config.NumberColumn(format="localized")
        st.dataframe(
            table, hide_index=True, width="stretch",
            height=min(38 + 35 * len(rows), 600),
            # "output" keeps the six columns inside the half-page without a scroll bar.
            column_config={"output shape": st.column_config.TextColumn("output"),
                           "params": count, "trainable": count, "frozen": count},
        )
        if inside is not None:
            st.caption(f"Inside **{config.backbone}** ({sum(s.layers for s in inside)} layers "
                       f"in {len(inside)} stages); phase 2 trains the top {config.unfreeze} "
                       "layers, BatchNorm excluded.")
            st.dataframe(
                pd.DataFrame({
                    "stage": [s.name for s in inside],
                    "layers": [s.layers for s in inside],
                    "output shape": ["×".join(map(str, s.output_shape)) for s in inside],
                    "params": [s.params for s in inside],
                    "trained in phase 2": [s.unfrozen for s in inside],
                }),
                hide_index=True, width="stretch", height=min(38 + 35 * len(inside), 600),
                column_config={"params": count},
            )
    with tab_diagram:
        st.graphviz_chart(charts.architecture_dot(rows, inside), width="content")
    with tab_params:
        st.plotly_chart(charts.params_figure(rows), width="stretch")
    with tab_code:
        script = to_keras_script(config, fit, input_shape, n_classes, dataset_name)
        st.download_button("Download script", script, icon=":material/download:",
                           file_name="cnnlab_model.py",
                           mime="text/x-python", key="cfg_script_download")
        st.code(script, language="python")
    with tab_json:
        st.download_button("Download config JSON", file_json(config, fit),
                           icon=":material/download:",
                           file_name=f"{preset_name}.json",
                           mime="application/json", key="cfg_json_download")
        upload = st.file_uploader("Load a config JSON", type=["json"], key="cfg_upload")
        if upload is not None and upload.file_id != st.session_state.get("cfg_upload_id"):
            try:
                loaded, loaded_fit = from_file(upload.getvalue())
                out_of_range = range_problems(loaded, loaded_fit)
                if out_of_range:
                    raise ConfigError(" ".join(out_of_range))
                bad = validate(loaded, input_shape) + loaded_fit.problems()
                if bad:
                    raise ConfigError("it does not fit this data set: " + "; ".join(bad))
            except ConfigError as exc:
                st.error(f"Could not load {md(upload.name)}: {md(exc)}")
            else:
                st.session_state["cfg_upload_id"] = upload.file_id
                state.set_model_choice(loaded, loaded_fit, state.CUSTOM)
                st.rerun()
        st.code(file_json(config, fit), language="json")
