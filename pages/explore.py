"""Explore: pick a data set (or upload a zip) and look at it before training.

The data set is in the address (``?dataset=mnist``), so a link opens this page on it.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from cnnlab import charts
from cnnlab.data import datasets, shared_sets
from cnnlab.data.datasets import IMAGE_EXTENSIONS, UPLOAD_PREFIX, BadUpload, Dataset
from cnnlab.data.picture_set import (
    FOLDER_UNSAFE,
    MAX_CLASSES,
    MAX_PER_CLASS,
    MAX_PICTURES,
    MIN_CLASSES,
    MIN_PER_CLASS,
    PictureSet,
)
from cnnlab.model import models
from cnnlab.people.accounts import User
from pages import upload_routes
from pages.common import (
    cached_dataset,
    dataset_or_stop,
    dataset_picker,
    progress_bar,
)
from pages.signin import current_user, md
from pages.state import current_dataset, keep_upload, set_dataset, upload_source
from pages.zip_upload import zip_uploader

VAL_FRACTION = 0.1  # the validation share the reference notebooks hold out of training
GRID_COLS = 10
SIDES = [16, 28, 32, 48, 64, 96, 128]  # image sizes offered for your own images
PICTURES_KEY = "explore_pictures"  # the PictureSet being made (this page only)
SAVED_KEY = "explore_pictures_saved"  # the name it was last saved under
THUMB_COLS = 8
SHARED_SIDE_KEY, SHARED_GRAY_KEY = "explore_shared_side", "explore_shared_gray"


def upload_form() -> None:
    """Zip upload: one sub-folder per class; on success it becomes the current data set.

    The zip streams to a file on the server (pages/upload_routes.py) and is decoded from
    there: a few hundred megabytes never sit in the server's memory as bytes.
    """
    with st.expander("Use your own images (.zip with one folder per class)"):
        limit = upload_routes.limit_mb()
        st.caption(
            f"A zip up to {limit} MB, for example `cats/1.jpg, cats/2.jpg, dogs/1.jpg, …`. "
            "Images of any size and colour mode are resized. A zip with its own training and "
            "test parts (`train/` and `test/`, `training_set/` and `test_set/`, at any depth) "
            "keeps that split; otherwise 20 % of each class is kept for testing."
        )
        ticket = upload_routes.session_ticket(st.session_state)
        zip_uploader(ticket, limit, key="explore_zip")
        ready = upload_routes.pending(ticket)
        if ready is not None:
            size = (f"{ready.size / 1024 / 1024:,.1f} MB" if ready.size >= 1024 * 1024
                    else f"{-(-ready.size // 1024)} KB")
            st.caption(f"Ready to load: {md(ready.name)} ({size}).")
        c1, c2 = st.columns(2)
        side = c1.select_slider("Image size (pixels)", SIDES, value=64)
        gray = c2.toggle("Grayscale", value=False)
        if st.button("Load images", disabled=ready is None, type="primary") and ready:
            try:
                with progress_bar("Reading the zip…") as progress:
                    ds = datasets.load_zip(ready.path, (side, side), gray,
                                           name=f"{UPLOAD_PREFIX}{ready.name}",
                                           progress=progress)
            except BadUpload as exc:
                st.error(md(exc))
            else:
                keep_upload(ds, upload_routes.take(ticket))
                st.rerun()


def make_dataset_form() -> None:
    """Make a data set picture by picture (camera or files); saved, it is your own images."""
    with st.expander("Make a data set with your camera or pictures"):
        pictures: PictureSet = st.session_state.setdefault(PICTURES_KEY, PictureSet())
        st.caption(
            f"Name {MIN_CLASSES} to {MAX_CLASSES} classes, pick one, then take or add pictures "
            f"of it; at most {MAX_PER_CLASS} per class and {MAX_PICTURES} in all, and at least "
            f"{MIN_PER_CLASS} per class to save. Saving replaces images uploaded before in this "
            "browser tab."
        )
        if not class_names_form(pictures):
            return
        slot = st.radio("Add pictures to", range(len(pictures.names)), horizontal=True,
                        key="mk_class", format_func=lambda i: md(pictures.names[i]))
        counts = st.empty()  # filled once this run's new pictures are in
        add_pictures(pictures, slot)
        counts.caption("Pictures per class: " + ", ".join(
            f"{md(name)} {n}" for name, n in zip(pictures.names, pictures.counts(), strict=True)))
        thumbnails(pictures, slot)
        save_pictures(pictures)


def class_names_form(pictures: PictureSet) -> bool:
    """How many classes and their names; True when the names can be used."""
    # A class holding pictures cannot be removed: no picture is lost by accident.
    in_use = max((i + 1 for i, n in enumerate(pictures.counts()) if n), default=0)
    n = st.number_input("Classes", min_value=max(MIN_CLASSES, in_use), max_value=MAX_CLASSES,
                        value=len(pictures.names), key="mk_n",
                        help="A class that holds pictures stays until its pictures are deleted.")
    cols = st.columns(min(n, 5))
    names = [cols[i % 5].text_input(f"Class {i + 1}", key=f"mk_name_{i}", placeholder="e.g. cup",
                                    value=pictures.names[i] if i < len(pictures.names) else "")
             for i in range(int(n))]
    try:
        pictures.rename(names)
    except BadUpload as exc:
        st.error(md(exc))
        return False
    if not all(pictures.names):  # not a mistake yet: the names are still being typed
        st.caption("Type a name for every class to start adding pictures.")
        return False
    for problem in pictures.problems():
        st.warning(md(problem))
    return not pictures.problems()


def add_pictures(pictures: PictureSet, slot: int) -> None:
    """Camera and file inputs; each new photo or file goes into class ``slot`` once."""
    left, right = st.columns(2)
    photo = None
    # The camera only when asked for: it asks the browser for the webcam as soon as drawn.
    if left.toggle("Use the camera", key="mk_use_camera"):
        photo = left.camera_input("Take a picture", key="mk_camera")
    files = right.file_uploader("Or add pictures", accept_multiple_files=True, key="mk_files",
                                type=[e.lstrip(".") for e in IMAGE_EXTENSIONS])
    # A rerun hands back the same photo and files: the set adds each file id once, so a
    # picture joins the class picked when it arrived.
    for file in [*([photo] if photo is not None else []), *files]:
        try:
            pictures.add(slot, file.getvalue(), file.name, file.file_id)
        except BadUpload as exc:
            st.error(md(exc))


def thumbnails(pictures: PictureSet, slot: int) -> None:
    """The pictures of class ``slot``, each with a Delete button."""
    shown = pictures.slots[slot]
    st.caption(f"{md(pictures.names[slot])}: {len(shown)} of at most {MAX_PER_CLASS} pictures; "
               f"{pictures.total()} of {MAX_PICTURES} in all.")
    cols = st.columns(THUMB_COLS)
    for k, picture in enumerate(shown):
        with cols[k % THUMB_COLS]:
            st.image(picture.thumbnail)
            st.button("", icon=":material/delete:", key=f"mk_del_{picture.id}",
                      help="Delete this picture", on_click=pictures.remove,
                      args=(slot, picture.id))


def save_pictures(pictures: PictureSet) -> None:
    """Save as the session's own images (used on every page) and download as a zip."""
    c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
    title = c1.text_input("Data set name", value="my pictures", max_chars=60, key="mk_title")
    side = c2.select_slider("Image size (pixels)", SIDES, value=64, key="mk_side")
    gray = c3.toggle("Grayscale", key="mk_gray")
    b1, b2 = st.columns(2)
    if b1.button("Save as my data set", type="primary", icon=":material/save:", key="mk_save"):
        try:
            ds = pictures.build(title, (side, side), gray)
        except BadUpload as exc:
            st.error(md(exc))
        else:
            keep_upload(ds)
            st.session_state[SAVED_KEY] = ds.info.name
            st.rerun()  # every picker on the page now lists and shows it
    file_name = "".join("_" if c in FOLDER_UNSAFE else c for c in title.strip()) or "pictures"
    # The zip is made only when the button is pressed (a callable), not on every rerun.
    b2.download_button("Download as zip", pictures.to_zip, file_name=f"{file_name}.zip",
                       mime="application/zip", on_click="ignore", key="mk_download",
                       icon=":material/download:", disabled=not pictures.total(),
                       help="Class folders of pictures: upload it above in a later session.")
    saved = st.session_state.get(SAVED_KEY)
    if saved and saved == current_dataset():
        st.success(f"Saved as **{md(saved[len(UPLOAD_PREFIX):])}**: it is the data set on "
                   "every page now (Train starts from the own-images model).")


def sample_grid(ds: Dataset) -> None:
    """A random grid of training images with their class, filterable and reshufflable."""
    names = ds.info.class_names
    c1, c2, c3 = st.columns([1, 2, 1], vertical_alignment="bottom")
    rows = c1.slider("Rows", 1, 8, 3, key="explore_rows")
    pick = c2.selectbox("Class", ["All classes", *names], key="explore_class")
    if c3.button("Reshuffle", icon=":material/shuffle:", width="stretch"):
        st.session_state["explore_seed"] = st.session_state.get("explore_seed", 0) + 1
    seed = st.session_state.get("explore_seed", 0)
    fig = (sample_grid_figure(ds, rows, pick, seed) if is_upload(ds)
           else registry_sample_grid(ds.info.name, rows, pick, seed, set_version(ds)))
    st.plotly_chart(fig, key="explore_grid", config={"displayModeBar": False})


def sample_grid_figure(ds: Dataset, rows: int, pick: str, seed: int) -> go.Figure:
    """``rows`` rows of random training images of class ``pick`` (or all), captioned."""
    names = ds.info.class_names
    pool = (np.arange(len(ds.y_train)) if pick == "All classes"
            else np.flatnonzero(ds.y_train == names.index(pick)))
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(pool, size=min(len(pool), rows * GRID_COLS), replace=False))
    captions = [names[int(k)] for k in ds.y_train[idx]]
    return charts.image_grid_figure(ds.x_train[idx], captions, GRID_COLS, tile_px=56)


# A registry set's figures are the same for everyone, so each is built once per input and
# kept as an object: st.cache_data would pickle it, and unpickling re-validates the whole
# figure (31 ms for a sample grid, against 3.7 ms for st.plotly_chart to send a kept one).
# st.plotly_chart only reads a figure, so sessions may share it. So are a class data set's,
# per version of its files.
@st.cache_resource(max_entries=256, show_spinner=False)
def registry_sample_grid(name: str, rows: int, pick: str, seed: int,
                         version: str = "") -> go.Figure:
    """sample_grid_figure of a registry or class data set, shared by every session."""
    return sample_grid_figure(cached_dataset(name), rows, pick, seed)


@st.cache_resource(max_entries=16, show_spinner="Computing class means and pixel histogram…")
def registry_figures(name: str, version: str = "") -> tuple[go.Figure, go.Figure, go.Figure]:
    """overview_figures of a registry or class data set, computed once per server (and
    version of a class set's files) and shared."""
    return overview_figures(cached_dataset(name))


def set_version(ds: Dataset) -> str:
    """The version of a class data set's files ("" for a registry set): its figures are
    made again when the teacher changes the set."""
    return shared_sets.version(ds.info.name) if shared_sets.is_shared(ds.info.name) else ""


def class_set_size(name: str) -> None:
    """A class data set's image size and colour: each choice is another name (and cache)."""
    set_name, side, gray = shared_sets.parse_name(name)
    c1, c2 = st.columns(2)

    def store() -> None:
        set_dataset(shared_sets.shared_name(set_name, st.session_state[SHARED_SIDE_KEY],
                                            st.session_state[SHARED_GRAY_KEY]))

    # The widgets follow the current name (a link or another page may have changed it);
    # the user's change goes back into the name through `store`, before the next run.
    st.session_state[SHARED_SIDE_KEY], st.session_state[SHARED_GRAY_KEY] = side, gray
    c1.select_slider("Image size (pixels)", shared_sets.SIDES, key=SHARED_SIDE_KEY,
                     on_change=store, help="Decoded once for everyone at each size.")
    c2.toggle("Grayscale", key=SHARED_GRAY_KEY, on_change=store)


def overview_figures(ds: Dataset) -> tuple[go.Figure, go.Figure, go.Figure]:
    """The class counts, mean image per class and pixel histogram of ``ds``."""
    names = ds.info.class_names
    return (charts.class_counts_figure(names, ds.y_train, ds.y_test),
            charts.image_grid_figure(
                charts.class_mean_images(ds.x_train, ds.y_train, len(names)), list(names), 5),
            charts.pixel_histogram_figure(charts.pixel_counts(ds.x_train)))


def is_upload(ds: Dataset) -> bool:
    """Uploads are per session (and small): their figures are built on each run."""
    return ds.info.name.startswith(UPLOAD_PREFIX)


def augmentation_preview(ds: Dataset) -> None:
    """Your own images (or a class data set) as the own-images model sees them in
    training (flips, shifts)."""
    from cnnlab.model.config import OWN_IMAGES, PRESETS

    aug = PRESETS[OWN_IMAGES].config
    st.subheader("What the model trains on")
    st.caption("The default model for your images learns from randomly flipped and shifted "
               "copies, so a few dozen pictures per class go further. Each row: one "
               "training image, then three augmented copies.")
    if not st.toggle("Show augmented samples", key="explore_augment"):
        return
    n = min(4, len(ds.y_train))
    rows = np.random.default_rng(st.session_state.get("explore_seed", 0)).choice(
        len(ds.y_train), n, replace=False)
    tiles = []
    for i in rows:
        tiles.append(ds.x_train[i])
        tiles.extend(models.augmented_images(aug, np.repeat(ds.x_train[i:i + 1], 3, axis=0),
                                             seed=int(i)))
    captions = [f"{ds.info.class_names[int(ds.y_train[i])]}" if k == 0 else "augmented"
                for i in rows for k in range(4)]
    st.plotly_chart(charts.image_grid_figure(np.stack(tiles), captions, 4),
                    key="explore_augmented", config={"displayModeBar": False})


def publish_form(ds: Dataset, user: User) -> None:
    """A teacher's (or, in personal mode, the operator's) button that saves this upload into
    the class data sets folder, so every student's list offers it from then on."""
    if not user.is_teacher or shared_sets.datasets_dir() is None:
        return
    pictures: PictureSet | None = st.session_state.get(PICTURES_KEY)
    made_here = st.session_state.get(SAVED_KEY) == ds.info.name and pictures is not None
    source = upload_source()
    if source is None and not made_here:
        return  # the zip was cleaned up: nothing to publish without uploading it again
    with st.expander("Publish to the class", icon=":material/groups:"):
        st.caption("Saves these images (the zip as uploaded) in the server's class data "
                   "sets folder: everyone then finds them in the data set list, decoded "
                   "once for all.")
        stem = ds.info.name[len(UPLOAD_PREFIX):].removesuffix(".zip").strip()
        with st.form("explore_publish", border=False):
            title = st.text_input("Name in the class list", value=stem[:60], max_chars=60)
            if not st.form_submit_button("Publish", icon=":material/publish:"):
                return
        try:
            entry = shared_sets.publish(
                source if source is not None else pictures.to_zip(), title.strip())
        except shared_sets.SharedSetError as exc:
            st.error(md(exc))
        else:
            st.success(f"Published as **{md(entry.set_name)}** ({len(entry.classes)} "
                       f"classes, {entry.images:,} images): it is in every data set list now.")


user = current_user()  # class mode: signed-in people only
st.title(":material/search: Explore")
name = dataset_picker(key="explore_dataset")
if shared_sets.is_shared(name):
    class_set_size(name)
upload_form()
make_dataset_form()

ds = dataset_or_stop(name)

info = ds.info
n_val = datasets.val_count(ds.y_train, VAL_FRACTION)
h, w, c = info.image_shape
cols = st.columns(4)
cols[0].metric("Training images", f"{len(ds.y_train) - n_val:,}")
cols[1].metric("Validation images", f"{n_val:,}", help="10 % of each class, held out of training")
cols[2].metric("Test images", f"{len(ds.y_test):,}")
cols[3].metric("Classes", len(info.class_names), help=f"images are {h}×{w}, {c} channel(s)")
st.caption(f"{info.title}: {h}×{w} pixels, {'grayscale' if c == 1 else 'colour'}, uint8 0–255."
           + (f" Test set from {md(info.test_source)}: {len(ds.y_test):,} images."
              if info.test_source else ""))

counts_fig, means_fig, hist_fig = (overview_figures(ds) if is_upload(ds)
                                   else registry_figures(info.name, set_version(ds)))
st.subheader("Images per class")
st.plotly_chart(counts_fig, key="explore_counts", config={"displayModeBar": False})

st.subheader("Samples")
sample_grid(ds)

if is_upload(ds):
    publish_form(ds, user)
if is_upload(ds) or shared_sets.is_shared(info.name):
    augmentation_preview(ds)

left, right = st.columns(2)
with left:
    st.subheader("Mean image per class")
    st.plotly_chart(means_fig, key="explore_means", config={"displayModeBar": False})
with right:
    st.subheader("Pixel intensities")
    st.plotly_chart(hist_fig, key="explore_hist", config={"displayModeBar": False})
