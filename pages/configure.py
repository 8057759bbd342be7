"""Configure: shape a CNN with sliders; see layers, shapes, parameters and memory live.

Thin page: widgets → ModelConfig → cnnlab.model.models.layer_table (pure Python, no TensorFlow).
The config and its fit settings (batch size, epochs, patience) are kept for the Train
page with pages.state (``model_choice``). Widget keys carry a version number
(``state.config_version``): picking a preset, uploading a config or loading a run's settings
bumps it, so every widget starts again from the new config's values.
The data set and the preset are in the address (``?dataset=mnist&preset=quick``).
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from cnnlab import charts
from cnnlab.model import backbone_stages
from cnnlab.model.config import (
    PRESETS,
    ConfigError,
    ModelConfig,
    advice,
    default_preset,
    file_json,
    from_file,
    range_problems,
    validate,
)
from cnnlab.model.models import layer_table, memory_bytes, to_keras_script
from cnnlab.train import budgets
from pages import challenge_sets, state
from pages.common import dataset_picker, engine
from pages.configure_sources import (
    backbone_layers,
    dataset_shape,
    human_bytes,
    load_preset,
    preset_from_address,
)
from pages.configure_widgets import config_widgets
from pages.signin import current_user, md


# A model's tables and figures are the same for everyone who shapes it: built once per model
# and shared (st.cache_resource, as on Explore: st.plotly_chart and st.dataframe only read
# them), so a rerun that changed nothing rebuilds nothing.
@st.cache_resource(max_entries=256, show_spinner=False)
def model_views(config: ModelConfig, input_shape: tuple[int, ...], n_classes: int
                ) -> tuple[list[dict], dict[str, int], pd.DataFrame, go.Figure]:
    """The layer rows, memory estimate, layer table and parameter chart of ``config``."""
    rows = layer_table(config, input_shape, n_classes)
    layers = pd.DataFrame(
        {
            "layer": [r["name"] for r in rows],
            "type": [r["type"] for r in rows],
            "output shape": ["×".join(map(str, r["output_shape"])) for r in rows],
            "params": [r["params"] for r in rows],
            "trainable": [r["trainable"] for r in rows],
            "frozen": [r["params"] - r["trainable"] for r in rows],
        }
    )
    return (rows, memory_bytes(config, input_shape, n_classes), layers,
            charts.params_figure(rows))


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
rows, memory, layers, params_fig = model_views(config, tuple(input_shape), n_classes)


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
    challenge_sets.warn_limits(dataset_name, total, fit.epochs + fit.fine_tune_epochs)

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
        count = st.column_config.NumberColumn(format="localized")
        st.dataframe(
            layers, hide_index=True, width="stretch",
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
        st.plotly_chart(params_fig, width="stretch")
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
