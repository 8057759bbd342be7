"""What the Configure page starts from and reports with (not a page itself).

- ``dataset_shape``: the image shape, class count and title of the data set;
- ``load_preset`` and ``preset_from_address``: the preset picked in the box or the address;
- ``backbone_layers``: a backbone's layers, built with Keras once per server process;
- ``human_bytes``: a byte count for the summary's memory metrics.
"""

from __future__ import annotations

import streamlit as st

from cnnlab.data import datasets, shared_sets
from cnnlab.model import backbone_stages
from cnnlab.model.config import PRESETS
from pages import state
from pages.common import class_sets
from pages.signin import md


def dataset_shape(name: str) -> tuple[tuple[int, int, int], int, str]:
    """(image shape, class count, title) of the current data set or this session's upload."""
    if shared_sets.is_shared(name):  # from the listing: nothing is decoded for the shape
        set_name, side, gray = shared_sets.parse_name(name)
        entry = next((e for e in class_sets() if e.set_name == set_name), None)
        if entry is not None and entry.classes:
            return (side, side, 1 if gray else 3), len(entry.classes), f"Class set: {set_name}"
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

@st.cache_data(show_spinner="Building the backbone with Keras to list its layers…")
def backbone_layers(name: str) -> list[backbone_stages.LayerFacts]:
    """Every layer of backbone ``name`` (see ``backbone_stages.layer_facts``), built once per
    server process: it imports TensorFlow and takes seconds."""
    return backbone_stages.layer_facts(name)


def human_bytes(n: float) -> str:
    """1536 → '1.5 KB': bytes in B, KB, MB or GB (1024 each), for the summary."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} GB"
