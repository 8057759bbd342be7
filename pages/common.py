"""Page helpers shared by all pages: cached data sets and the data set picker.

Not a page itself (app.py lists its pages explicitly). Other helpers append below.

One mechanism for a user's own images: Explore keeps the Dataset built from an uploaded
zip for the session (``pages.state.keep_upload``) under the name ``"folder:<file name>"``;
``cached_dataset`` and ``dataset_picker`` know that name, so every page can use it.
Registry data sets are loaded once per server process (st.cache_resource: shared, no copy).
Class data sets (``"shared:<set>"``, the operator's folder, cnnlab.data.shared_sets) are
listed for everyone after the registry and mapped from their decoded cache, once per server
process and version, whoever asks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import streamlit as st

from cnnlab.data import datasets, shared_sets
from cnnlab.data.datasets import UPLOAD_PREFIX, Dataset, DatasetUnavailable
from pages import challenge_sets, state
from pages.signin import md

if TYPE_CHECKING:
    from cnnlab.use.inference import Predictor


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


@contextmanager
def progress_bar(text: str) -> Iterator[datasets.Progress]:
    """An st.progress bar showing ``text`` for a long load; yields its ``progress`` callback.

    The bar is removed when the block ends, finished or failed.
    """
    slot = st.empty()
    slot.progress(0.0, text=text)

    def progress(fraction: float, note: str) -> None:
        slot.progress(fraction, text=note)

    try:
        yield progress
    finally:
        slot.empty()


@st.cache_resource(show_spinner=False, max_entries=4)
def _registry_dataset(name: str) -> Dataset:
    # Shared by all sessions and never copied: callers must not modify the arrays.
    # The bar is made in here, not passed in as a callback: on a cache hit Streamlit replays
    # what this function drew, and an element made outside it cannot be replayed
    # (CacheReplayClosureError). The replay ends with the bar emptied, so nothing is left.
    with progress_bar("Loading the data set…") as progress:
        return datasets.load(name, progress=progress)


@st.cache_resource(show_spinner=False, max_entries=8)
def _shared_dataset(name: str, version: str) -> Dataset:
    # One per server process and version of the set, for every session: the arrays are
    # read-only maps of the decoded cache, which the engine and the workers map too.
    del version  # the cache key: a changed zip or folder is loaded (and decoded) again
    with progress_bar("Decoding the class data set for everyone (once)…") as progress:
        return shared_sets.load(name, progress=progress)


def cached_dataset(name: str) -> Dataset:
    """The data set called ``name``: a registry set (cached), a class data set (cached per
    version) or this session's upload.

    Raises DatasetUnavailable with a one-sentence message when it cannot be loaded.
    """
    if shared_sets.is_shared(name):
        return _shared_dataset(name, shared_sets.version(name))
    if challenge_sets.is_challenge(name):  # a challenge's visible set, never its hidden split
        return challenge_sets.visible(name)
    if name.startswith(UPLOAD_PREFIX):
        upload = state.uploaded_dataset()
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


@st.cache_data(ttl=60, show_spinner=False)
def _available() -> dict[str, bool]:
    return datasets.available()


@st.cache_data(ttl=3, show_spinner=False)
def _class_sets(directory: str | None, mtime_ns: int) -> tuple[list[shared_sets.Entry], str]:
    # Shared by every session for 3 s (and while the folder's own entries stay the same):
    # a page runs many times a second under a class, the listing stats each set.
    del directory, mtime_ns  # the cache key
    try:
        return shared_sets.listing(), ""
    except shared_sets.SharedSetError as exc:
        return [], str(exc)


def _class_listing() -> tuple[list[shared_sets.Entry], str]:
    """(class data sets, why they cannot be listed or "")."""
    try:
        directory = shared_sets.datasets_dir()
    except shared_sets.SharedSetError as exc:
        return [], str(exc)
    try:
        mtime = directory.stat().st_mtime_ns if directory is not None else 0
    except OSError:
        mtime = -1
    return _class_sets(None if directory is None else str(directory), mtime)


def class_sets() -> list[shared_sets.Entry]:
    """The class data sets of the operator's folder ([] when none is set, or it has gone:
    the picker then says so in one warning, and the other data sets stay)."""
    return _class_listing()[0]


def _shared_choice(name: str | None, listed: list[shared_sets.Entry] | None) -> bool:
    """True when ``name`` is a class data set's name at an allowed size, of a set in
    ``listed`` (any set when ``listed`` is None)."""
    if name is None or not shared_sets.is_shared(name):
        return False
    try:
        set_name = shared_sets.parse_name(name)[0]
    except shared_sets.SharedSetError:
        return False
    return listed is None or any(e.set_name == set_name for e in listed)


def dataset_names() -> list[str]:
    """Registry names, the class data sets (and the size of one chosen), then this
    session's upload (if any)."""
    listed = class_sets()
    names = list(datasets.REGISTRY) + [e.name for e in listed]
    chosen = state.current_dataset()
    # The chosen size of a set stays listed; so does a chosen set that has gone from the
    # folder, so that the page says so (cached_dataset's error) instead of switching sets.
    if chosen not in names and _shared_choice(chosen, None):
        names.append(str(chosen))
    names += challenge_sets.names(state.current_dataset())
    upload = state.uploaded_dataset()
    if upload is not None:
        names.append(upload.info.name)
    return names


def current_dataset_name() -> str:
    """The data set chosen on any page if it names a known set, else the default."""
    name = state.current_dataset()
    return name if name in dataset_names() else datasets.default_name()


def dataset_from_address() -> None:
    """``?dataset=NAME`` of a new address becomes the current data set; an unknown name
    gets a warning and leaves the choice as it is."""
    wanted = state.address_choice("dataset")
    if wanted is None:
        return
    if wanted in dataset_names() or _shared_choice(wanted, class_sets()):
        state.set_dataset(wanted)
    elif shared_sets.is_shared(wanted):
        sides = ", ".join(map(str, shared_sets.SIDES))
        st.warning(f"The address asks for the class data set {md(repr(wanted))}, which this "
                   "server's class data sets folder does not hold (any more), or at a size "
                   f"it does not offer ({sides} pixels). Pick a data set below.")
    elif wanted.startswith(UPLOAD_PREFIX):  # someone else's upload, or one from an old session
        st.warning(f"The address names uploaded images ({md(wanted[len(UPLOAD_PREFIX):])}) "
                   "that are not in this browser session: only the person who uploaded them "
                   "can open them, and only until they close the tab. Upload the zip on the "
                   "Explore page to use it here.")
    else:
        st.warning(f"The address asks for the data set {md(repr(wanted))}, which this lab "
                   f"does not have; it has {md(', '.join(datasets.REGISTRY))}. Pick one "
                   "below.")


def dataset_picker(key: str = "dataset_picker") -> str:
    """A selectbox over the data sets, kept in step with the shared choice and the address.

    A new ``?dataset=`` wins once; then the user's choice, which goes back into the address.
    Sets that cannot be loaded here are still listed, marked "not available here", so the
    page can say which file is missing.
    """
    dataset_from_address()
    names = dataset_names()
    ready = _available()
    listed, problem = _class_listing()
    if problem:
        st.warning(md(problem))
    shared = {e.set_name: e for e in listed}

    def label(name: str) -> str:
        if name.startswith(UPLOAD_PREFIX):
            return f"Your images: {name[len(UPLOAD_PREFIX):]}"
        if challenge_sets.is_challenge(name):
            return challenge_sets.label(name)
        if shared_sets.is_shared(name):
            return class_set_label(name, shared)
        title = datasets.REGISTRY[name].title
        return title if ready.get(name) else f"{title} (not available here)"

    def store() -> None:
        state.set_dataset(st.session_state[key])

    # Sync the widget from the shared choice, so a choice made on another page (or an
    # upload) shows here; the user's own change goes back through `store`.
    name = current_dataset_name()
    state.set_dataset(name)
    st.session_state[key] = name
    st.selectbox("Data set", names, format_func=label, key=key, on_change=store)
    state.show_in_address("dataset", name)
    return name


def class_set_label(name: str, listed: dict[str, shared_sets.Entry]) -> str:
    """"Class set: cats_dogs — 2 classes, 1,200 images" (its size and colour when not the
    default; "cannot be used" when its files say so)."""
    set_name, side, gray = shared_sets.parse_name(name)
    entry = listed.get(set_name)
    variant = "" if (side, gray) == (shared_sets.DEFAULT_SIDE, False) else (
        f" ({side} px{', grayscale' if gray else ''})")
    if entry is None:
        return f"Class set: {set_name}{variant} (gone)"
    if entry.problem:
        return f"Class set: {set_name}{variant} (cannot be used)"
    return (f"Class set: {set_name}{variant} — {len(entry.classes)} classes, "
            f"{entry.images:,} images")


# ---------------------------------------------------------------------------- training engine


def engine():
    """The server's training Engine for the current runs root (CNNLAB_RUNS_DIR or runs/):
    its own, or with CNNLAB_ENGINE=process a RemoteEngine on the root's `cnnlab engine`.

    Kept by cnnlab.train, not in st.cache_resource: clearing Streamlit's caches must never
    make a second engine (two queues, a live run marked interrupted).
    """
    from cnnlab.runs import store as runs
    from cnnlab.train import engine_client

    try:
        return engine_client.engine_for(runs.default_root())
    except (runs.RunsRootError, engine_client.EngineUnreachable) as exc:  # a runs root that
        st.error(md(exc))  # is a file, read-only, …; no engine process could be started
        st.stop()


def fmt_seconds(s: float | None) -> str:
    """12 → '0:12', 3725 → '1:02:05', None or NaN → '–'."""
    if s is None or math.isnan(s):
        return "–"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


@st.cache_resource(max_entries=4, show_spinner="Loading the model…")
def run_predictor(run_dir: str, mtime: float) -> Predictor:
    """A run's best model, loaded once per server; a new checkpoint (mtime) reloads it."""
    from cnnlab.use import inference  # Keras: only for the pages that show a model

    return inference.load_run_predictor(run_dir)
