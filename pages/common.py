"""Page helpers shared by all pages: cached data sets and the data set picker.

Not a page itself (app.py lists its pages explicitly). Other helpers append below.

One mechanism for a user's own images: Explore stores the Dataset built from an uploaded
zip in ``st.session_state[UPLOAD_KEY]`` under the name ``"folder:<file name>"``;
``cached_dataset`` and ``dataset_picker`` know that name, so every page can use it.
Registry data sets are loaded once per server process (st.cache_resource: shared, no copy).
"""

from __future__ import annotations

import math

import streamlit as st

from cnnlab import datasets
from cnnlab.config import UPLOAD_PREFIX
from cnnlab.datasets import Dataset, DatasetUnavailable
from pages.signin import md

UPLOAD_KEY = "uploaded_dataset"


def _keep_keras_state() -> None:
    # After every script run (each fragment poll included) Streamlit calls
    # keras.backend.clear_session(). Training no longer runs in this process, but the
    # Draw & predict models do: with a seed000-mnist model loaded, that clean-up plus the
    # post-run gc.collect(2) made one prediction after a rerun 267 ms instead of 7 ms
    # (bench/server_hooks.py). The lab keeps its models in st.cache_resource on purpose, so
    # skip the clean-up (it also closes matplotlib figures, which the lab does not use);
    # .streamlit/config.toml turns postScriptGC off for the same reason.
    from streamlit.runtime.scriptrunner import script_runner

    script_runner._clean_problem_modules = lambda: None


_keep_keras_state()


@st.cache_resource(show_spinner="Loading the data set…", max_entries=4)
def _registry_dataset(name: str) -> Dataset:
    # Shared by all sessions and never copied: callers must not modify the arrays.
    return datasets.load(name)


def cached_dataset(name: str) -> Dataset:
    """The data set called ``name``: a registry set (cached) or this session's upload.

    Raises DatasetUnavailable with a one-sentence message when it cannot be loaded.
    """
    if name.startswith(UPLOAD_PREFIX):
        upload = st.session_state.get(UPLOAD_KEY)
        if upload is not None and upload.info.name == name:
            return upload
        raise DatasetUnavailable(
            f"The uploaded data set {name[len(UPLOAD_PREFIX):]!r} is not in this browser "
            "session any more: upload the zip again on the Explore page."
        )
    return _registry_dataset(name)


def dataset_or_stop(name: str) -> Dataset:
    """``cached_dataset(name)``, or its one-sentence st.error and the end of this page run."""
    try:
        return cached_dataset(name)
    except DatasetUnavailable as exc:
        st.error(md(exc))
        st.stop()


def remember_upload(ds: Dataset) -> None:
    """Keep an uploaded Dataset for this session and make it the current data set."""
    st.session_state[UPLOAD_KEY] = ds
    st.session_state["dataset_name"] = ds.info.name


@st.cache_data(ttl=60, show_spinner=False)
def _available() -> dict[str, bool]:
    return datasets.available()


def dataset_names() -> list[str]:
    """Registry names, then this session's upload (if any)."""
    names = list(datasets.REGISTRY)
    upload = st.session_state.get(UPLOAD_KEY)
    if upload is not None:
        names.append(upload.info.name)
    return names


def current_dataset_name() -> str:
    """st.session_state["dataset_name"] if it names a known set, else the default."""
    name = st.session_state.get("dataset_name")
    return name if name in dataset_names() else datasets.default_name()


def dataset_picker(key: str = "dataset_picker") -> str:
    """A selectbox over the data sets; stores the choice in st.session_state["dataset_name"].

    Sets that cannot be loaded here are still listed, marked "not available here", so the
    page can say which file is missing.
    """
    names = dataset_names()
    ready = _available()

    def label(name: str) -> str:
        if name.startswith(UPLOAD_PREFIX):
            return f"Your images: {name[len(UPLOAD_PREFIX):]}"
        title = datasets.REGISTRY[name].title
        return title if ready.get(name) else f"{title} (not available here)"

    def store() -> None:
        st.session_state["dataset_name"] = st.session_state[key]

    # Sync the widget from the shared key, so a choice made on another page (or an upload)
    # shows here; the user's own change goes back through `store`.
    st.session_state["dataset_name"] = current_dataset_name()
    st.session_state[key] = st.session_state["dataset_name"]
    st.selectbox("Data set", names, format_func=label, key=key, on_change=store)
    return st.session_state["dataset_name"]


# ---------------------------------------------------------------------------- training engine


def engine():
    """The server's training Engine for the current runs root (CNNLAB_RUNS_DIR or runs/).

    Kept by cnnlab.jobs, not in st.cache_resource: clearing Streamlit's caches must never
    make a second engine (two queues, a live run marked interrupted).
    """
    from cnnlab import jobs, runs

    try:
        return jobs.engine_for(runs.default_root())
    except runs.RunsRootError as exc:  # a runs root that is a file, read-only, …
        st.error(md(exc))
        st.stop()


def fmt_seconds(s: float | None) -> str:
    """12 → '0:12', 3725 → '1:02:05', None or NaN → '–'."""
    if s is None or math.isnan(s):
        return "–"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"
