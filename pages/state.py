"""Session state shared between pages, behind named accessors; and the page's address.

Every ``st.session_state`` key that links two pages is named here and nowhere else, so the
contract between pages can be read in one place. Widget keys used by one page only stay in
that page.

=====================  ===========================================  =========================
key                    written by                                   read by
=====================  ===========================================  =========================
``user``               signin (sign-in form; sign-out clears all)   app.py and every page
``dataset_name``       data set pickers (Explore, Configure,        the data set pickers
                       Train), Explore's upload, Runs (load,
                       resume, fine-tune)
``uploaded_dataset``   Explore's zip upload and its "Make a data    common (data set list and
                       set" (camera or pictures)                    loading), Configure
``upload_source``      the same (the zip on the server that         ``upload_source``
                       uploaded_dataset came from, or None)
``model_config``,      Configure (its widgets, a preset, a JSON     Train ("Configure page"
``fit_settings``,      file), Runs ("Load into Configure")          model), Configure
``preset_name``
``model_weights``      Configure (pretrained network: ImageNet, a   Train (its request's
                       weights file on the server, or none)         ``weights``), Configure
``cfg_preset``         Configure's preset picker, Runs (load)       Configure
``cfg_version``        ``set_model_choice`` (Configure's preset     Configure (its widget keys
                       and JSON upload, Runs' load)                 carry it: a new version
                                                                    restarts every widget)
``selected_run``       Runs (pick), Train (a finished run),         Runs, Draw & predict
                       Draw & predict (model pick)                  (their default run)
``train_run_id``       Train (start, resume), Runs (resume,         Train (the run it shows)
                       fine-tune)
``runs_flash``         Runs (before its own rerun)                  Runs (shown once)
``address_seen``       ``address_choice``, ``show_in_address``      the same
=====================  ===========================================  =========================

The address (``st.query_params``) holds each page's main choice so a link can be handed
out: ``?dataset=`` (Explore, Configure, Train), ``?preset=`` (Configure), ``?run=`` (Runs,
Draw & predict). A new address wins once; then the user's choice on the page wins and is
written back into the address (``address_choice`` then ``show_in_address``). The setters
below leave the address alone: a page writes it after drawing its picker, and a link to
another page passes the choice with ``st.switch_page(..., query_params=...)``.

Imports only Streamlit at load time: app.py reaches this module through pages.signin, and
the home page opens without NumPy or Keras.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

if TYPE_CHECKING:
    from cnnlab.data.datasets import Dataset
    from cnnlab.model.config import ModelConfig
    from cnnlab.model.fit_settings import FitSettings

USER_KEY = "user"
DATASET_KEY = "dataset_name"
UPLOAD_KEY = "uploaded_dataset"
UPLOAD_SOURCE_KEY = "upload_source"
MODEL_CONFIG_KEY = "model_config"
FIT_SETTINGS_KEY = "fit_settings"
PRESET_NAME_KEY = "preset_name"
WEIGHTS_KEY = "model_weights"
PRESET_PICKER_KEY = "cfg_preset"
CONFIG_VERSION_KEY = "cfg_version"
SELECTED_RUN_KEY = "selected_run"
TRAIN_RUN_KEY = "train_run_id"
RUNS_FLASH_KEY = "runs_flash"
ADDRESS_SEEN_KEY = "address_seen"

CUSTOM = "custom"  # preset_name of a config that no preset matches
IMAGENET = "imagenet"  # weights_choice: Keras' ImageNet weights for the backbone


# ---------------------------------------------------------------------------- data set


def current_dataset() -> str | None:
    """The data set chosen on any page, unchecked (pages.common checks it is known)."""
    return st.session_state.get(DATASET_KEY)


def set_dataset(name: str) -> None:
    """Make ``name`` the data set every page starts from."""
    st.session_state[DATASET_KEY] = name


def uploaded_dataset() -> Dataset | None:
    """This session's own images (Explore's zip upload or pictures), if any."""
    return st.session_state.get(UPLOAD_KEY)


def keep_upload(ds: Dataset, source: Path | None = None) -> None:
    """Keep an uploaded data set for this session and make it the current data set.

    ``source`` is the zip on the server it was decoded from (None: made from pictures);
    the session's previous zip, when it is another file, is removed from the server.
    """
    previous = st.session_state.get(UPLOAD_SOURCE_KEY)
    if previous is not None and previous != source:
        previous.unlink(missing_ok=True)
    st.session_state[UPLOAD_KEY] = ds
    st.session_state[UPLOAD_SOURCE_KEY] = source
    set_dataset(ds.info.name)


def upload_source() -> Path | None:
    """The zip on the server that this session's uploaded data set was decoded from; None
    when the data set was made from pictures, or the file has been cleaned up since
    (pages/upload_routes.py keeps it while the session uses Explore, else some hours)."""
    source = st.session_state.get(UPLOAD_SOURCE_KEY)
    return source if source is not None and source.is_file() else None


# ---------------------------------------------------------------------------- model


def model_choice() -> tuple[ModelConfig, FitSettings, str] | None:
    """(config, fit settings, preset name or "custom") shaped on Configure; None before."""
    from cnnlab.model.fit_settings import FitSettings

    config = st.session_state.get(MODEL_CONFIG_KEY)
    if config is None:
        return None
    fit = st.session_state.get(FIT_SETTINGS_KEY) or FitSettings()
    return config, fit, st.session_state.get(PRESET_NAME_KEY) or CUSTOM


def set_model_choice(config: ModelConfig, fit: FitSettings, preset: str) -> None:
    """A new model for Configure (a preset, a file, a run's settings): every Configure
    widget starts again from it, and its preset picker shows ``preset`` when it is one."""
    from cnnlab.model.config import PRESETS  # here: signin imports this module, and stays light

    record_model_edit(config, fit, preset if preset in PRESETS else CUSTOM)
    if preset in PRESETS:
        st.session_state[PRESET_PICKER_KEY] = preset
    st.session_state[CONFIG_VERSION_KEY] = config_version() + 1


def record_model_edit(config: ModelConfig, fit: FitSettings, preset: str) -> None:
    """What Configure's widgets describe now (no widget restarts)."""
    st.session_state[MODEL_CONFIG_KEY] = config
    st.session_state[FIT_SETTINGS_KEY] = fit
    st.session_state[PRESET_NAME_KEY] = preset


def weights_choice() -> str | None:
    """The starting weights of the Configure model's backbone, as ``TrainRequest.weights``:
    "imagenet" (the default until Configure says otherwise), a weights file's path on the
    server, or None (random initialization). Unchecked; meaningless without a backbone."""
    return st.session_state.get(WEIGHTS_KEY, IMAGENET)


def set_weights_choice(weights: str | None) -> None:
    """What Configure's weights choice says now (see ``weights_choice``)."""
    st.session_state[WEIGHTS_KEY] = weights


def preset_picked() -> str | None:
    """The preset Configure's picker shows (its widget key), unchecked."""
    return st.session_state.get(PRESET_PICKER_KEY)


def config_version() -> int:
    """Configure's widget-key version: bumped whenever a new model replaces the widgets."""
    return st.session_state.get(CONFIG_VERSION_KEY, 0)


# ---------------------------------------------------------------------------- runs


def selected_run() -> str | None:
    """The run directory last picked or finished on any page (Runs, Train, Draw & predict)."""
    return st.session_state.get(SELECTED_RUN_KEY)


def select_run(run_dir: Path | str) -> None:
    """Make ``run_dir`` the run Runs and Draw & predict open by default."""
    st.session_state[SELECTED_RUN_KEY] = str(run_dir)


def forget_selected_run() -> None:
    """No default run any more (it was deleted)."""
    st.session_state.pop(SELECTED_RUN_KEY, None)


def shown_training_run() -> str | None:
    """The id of the run the Train page shows."""
    return st.session_state.get(TRAIN_RUN_KEY)


def show_training_run(run_id: str) -> None:
    """Make the Train page show run ``run_id`` (just started, resumed or fine-tuned)."""
    st.session_state[TRAIN_RUN_KEY] = run_id


def flash_on_runs(message: str) -> None:
    """A message the Runs page shows once, on its next run (e.g. after st.rerun)."""
    st.session_state[RUNS_FLASH_KEY] = message


def take_runs_flash() -> str | None:
    """The Runs page's pending message, removed so it shows once."""
    return st.session_state.pop(RUNS_FLASH_KEY, None)


# ---------------------------------------------------------------------------- the address


def address_choice(param: str) -> str | None:
    """``?param=`` of the address when this session has not taken it in yet, else None.

    Untrusted: the caller checks the value before using it. Taken in at once, so a bad
    value is reported once and the page's own choice then replaces it.
    """
    wanted = st.query_params.get(param)
    if not wanted or st.session_state.get(ADDRESS_SEEN_KEY, {}).get(param) == wanted:
        return None
    _seen(param, wanted)
    return wanted


def show_in_address(param: str, value: str | None) -> None:
    """Put the page's choice in the address (None removes it), so it can be shared."""
    if value is None:
        st.query_params.pop(param, None)
    elif st.query_params.get(param) != value:
        st.query_params[param] = value
    _seen(param, value)


def _seen(param: str, value: str | None) -> None:
    # Replaced, not mutated: a dict in session state is shared with nothing else.
    st.session_state[ADDRESS_SEEN_KEY] = {**st.session_state.get(ADDRESS_SEEN_KEY, {}),
                                          param: value}
