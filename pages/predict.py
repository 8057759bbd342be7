"""Draw & predict: draw a digit (or upload a picture) and watch the model's probabilities.

The run whose model predicts is in the address (``?run=<id>``), so a link opens it here.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

from cnnlab import charts
from cnnlab.data import datasets, drawn_digits, input_steps
from cnnlab.data.preprocess import (
    CanvasTrace,
    image_to_input,
    naive_input,
    open_image,
    trace_canvas,
)
from cnnlab.runs import store as runs
from cnnlab.runs.store import RunStatus
from cnnlab.uploads import model_check
from cnnlab.uploads.model_files import ModelRejected
from cnnlab.use import inference
from cnnlab.use.inference import Predictor
from pages import state
from pages.boundary import guarded
from pages.common import cached_dataset, engine, run_predictor
from pages.corrections import corrections_panel
from pages.signin import current_user, md
from pages.why import why_panel

CANVAS_PX = drawn_digits.CANVAS_SIDE  # the canvas the accuracy caption was measured on
PREVIEW_PX = 168  # the 28×28 input shown 6× bigger, pixel for pixel
STEP_PX = 150  # each preprocessing step's picture, pixel for pixel
IMAGE_TYPES = ["png", "jpg", "jpeg", "bmp", "gif", "webp"]
OWN_MODEL = "__own__"


@st.cache_resource(max_entries=2, show_spinner="Checking your model…")
def file_predictor(digest: str, _data: bytes) -> Predictor:
    """An uploaded .keras file loaded safely from a temp file (keyed by its content hash)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"  # Keras wants the .keras suffix
        path.write_bytes(_data)
        return Predictor(model_check.load_model_file(path))


def run_label(run: runs.RunInfo) -> str:
    """'20250101-120000-quick-mnist · MNIST · 98.1 % test accuracy' for the run picker."""
    info = datasets.REGISTRY.get(run.dataset)
    metrics = runs.load_metrics(run.run_dir) or {}
    acc = metrics.get("test_accuracy")
    parts = [run.run_id, info.title if info else run.dataset or "?"]
    parts.append(f"{acc:.1%} test accuracy" if acc is not None else run.status.get("status", "?"))
    return " · ".join(parts)


def offer_first_model() -> None:
    """No run with a saved model yet: train the quick preset in one click, with progress."""
    manager = engine()
    last = manager.latest(current_user().name)  # this person's runs only
    job = last if last is not None and not last.done() else None
    failed = last is not None and last.result and last.result.status == RunStatus.FAILED
    if job is None and failed:
        st.error(f"The last training run failed: {md(last.result.message)}")
    if job is None:
        name = datasets.default_name()
        st.info(
            "There is no trained model yet. Train the small **quick** preset on "
            f"{datasets.REGISTRY[name].title} here in one click (about a minute on a laptop "
            "CPU), or upload your own `.keras` model below."
        )
        if st.button("Train the quick preset", icon=":material/model_training:", type="primary"):
            start_quick_training(name)
            st.rerun()
        return
    training_progress(job.run_id)


def start_quick_training(name: str) -> None:
    """Submit the quick preset on ``name`` to the server's training Engine (shown on Train too)."""
    from cnnlab.model.config import PRESETS
    from cnnlab.train import training

    preset = PRESETS["quick"]
    request = training.TrainRequest(
        dataset=name, config=preset.config, fit=preset.fit, preset=preset.name,
    )
    try:
        engine().submit(request, cached_dataset(name), user=current_user())
    except (ValueError, datasets.DatasetUnavailable) as exc:
        st.error(f"Could not start training: {md(exc)}")


@st.fragment(run_every=1.0)
@guarded  # fragment reruns skip app.py's boundary
def training_progress(run_id: str) -> None:
    """Live progress of the training job; reruns the page when its model is ready."""
    job = engine().get(run_id)
    if job is None:
        return
    snap = job.snapshot()
    if snap["done"]:
        st.rerun()  # whole page: the new run now appears in the model picker
    batch = snap["batch"] or {}
    epochs = batch.get("epochs") or job.request.fit.epochs
    epoch = batch.get("epoch", 0)
    part = (epoch - 1 + batch.get("batch", 0) / max(batch.get("batches", 1), 1)) / epochs
    st.info(f"Training the {job.request.preset or 'chosen'} model ({run_id}); the canvas "
            "appears here when it is done. You can follow it on the Train page too.")
    st.progress(min(max(part, 0.0), 1.0),
                text=f"epoch {max(epoch, 1)}/{epochs} · status {snap['status'].get('status')}")


def run_from_address(ids: list[str]) -> str | None:
    """The run directory asked for by a new address (``?run=<id>``) if it has a model here;
    else None, with a warning for an id that is unknown or unsafe (never opened)."""
    wanted = state.address_choice("run")
    if wanted is None:
        return None
    try:
        run_dir = str(runs.run_dir_for(runs.default_root(), wanted))
    except runs.RunPathError as exc:
        st.warning(f"Cannot open the run in the address: {md(exc)}")
        return None
    if run_dir not in ids:
        st.warning(f"There is no run {md(repr(wanted))} with a saved model here; pick a "
                   "model below.")
        return None
    return run_dir


def choose_model() -> tuple[Predictor, tuple[str, ...], str | None] | None:
    """The model picker: (predictor, class names, data set name) or None when there is none."""
    usable = inference.predictable_runs()
    ids = [str(r.run_dir) for r in usable]
    by_dir = {str(r.run_dir): r for r in usable}
    options = [*ids, OWN_MODEL]
    asked = run_from_address(ids)
    chosen = state.selected_run()
    current = st.session_state.get("predict_model")
    first_run_arrived = current == OWN_MODEL and st.session_state.get("predict_no_runs") and ids
    if asked:  # a new address wins once; then the user's choice
        st.session_state["predict_model"] = asked
        state.select_run(asked)
    elif current not in options or first_run_arrived:
        # Default: the run picked elsewhere (Runs page), else the best digit run.
        st.session_state["predict_model"] = chosen if chosen in ids else options[0]
    st.session_state["predict_no_runs"] = not ids

    def remember() -> None:
        if st.session_state["predict_model"] != OWN_MODEL:
            state.select_run(st.session_state["predict_model"])

    choice = st.selectbox(
        "Model", options, key="predict_model", on_change=remember,
        format_func=lambda o: "Upload my own .keras model…" if o == OWN_MODEL
        else run_label(by_dir[o]),
    )
    # Keep the address in step with the pick, so it can be bookmarked or shared.
    state.show_in_address("run", None if choice == OWN_MODEL else Path(choice).name)
    if choice != OWN_MODEL:
        path = runs.best_model_path(choice)
        try:
            predictor = run_predictor(choice, path.stat().st_mtime)
        except (ModelRejected, OSError) as exc:
            st.error(md(exc))
            return None
        return (predictor, inference.run_class_names(choice, predictor.n_classes),
                inference.run_dataset(choice))
    if not ids:
        offer_first_model()
    return own_model()


def own_model() -> tuple[Predictor, tuple[str, ...], str | None] | None:
    """Upload a .keras file; its classes are named after a matching data set or numbered."""
    upload = st.file_uploader(
        "Your model (.keras, saved with Keras 3 `model.save('model.keras')`)", type=["keras"],
        key="own_model",
    )
    if upload is None:
        return None
    data = upload.getvalue()
    try:
        predictor = file_predictor(hashlib.sha256(data).hexdigest(), data)
    except ModelRejected as exc:
        st.error(f"**{md(upload.name)}** cannot be used: {md(exc)}")
        return None
    fits = [n for n, info in datasets.REGISTRY.items()
            if len(info.class_names) == predictor.n_classes
            and info.image_shape[-1] == predictor.input_shape[-1]]
    name = st.selectbox(
        "Its classes are those of", [*fits, None],
        format_func=lambda n: f"numbers 0–{predictor.n_classes - 1}" if n is None
        else datasets.REGISTRY[n].title,
    )
    names = (datasets.REGISTRY[name].class_names if name
             else tuple(str(i) for i in range(predictor.n_classes)))
    return predictor, names, name


def input_hint(predictor: Predictor, dataset: str | None) -> str:
    """Which input suits this model, in one sentence."""
    h, w, c = predictor.input_shape
    if c == 3:
        return (f"This model classifies colour photos ({h}×{w}×3). Upload a colour photo: it "
                f"is resized and centre-cropped to {h}×{w}.")
    if dataset in inference.DIGIT_DATASETS:
        return ("Draw one digit 0–9 anywhere on the canvas: it is cropped, scaled and "
                f"centred like MNIST before the model sees it ({h}×{w}).")
    info = datasets.REGISTRY.get(dataset or "")
    what = info.title if info else "grey images"
    return (f"This model knows {what} ({h}×{w} grey). Drawings rarely look like its "
            "training images: upload a photo of one object on a plain background instead.")


def show_prediction(predictor: Predictor, names: tuple[str, ...], x: np.ndarray,
                    key: str, seen_as: str = "What the model sees") -> None:
    """The input the model sees, the predicted class and all class probabilities."""
    probs = predictor.probabilities(x)
    top = int(np.argmax(probs))
    seen, result = st.columns([1, 2])
    with seen:
        st.caption(seen_as)
        tile = np.clip(x * 255, 0, 255).astype(np.uint8)
        tile = tile[..., 0] if tile.shape[-1] == 1 else tile
        big = Image.fromarray(tile).resize(
            (PREVIEW_PX, round(PREVIEW_PX * x.shape[0] / x.shape[1])), Image.Resampling.NEAREST)
        st.image(big)
        st.metric("Prediction", names[top] if top < len(names) else str(top),
                  delta=f"{probs[top]:.1%} sure", delta_color="off", delta_arrow="off")
    with result:
        st.plotly_chart(charts.probability_bars_figure(probs, names), key=f"bars_{key}",
                        config={"displayModeBar": False})


def look_inside(predictor: Predictor, x: np.ndarray, key: str) -> None:
    """Every conv layer's activations for this input, and the first layer's filters.

    Computed only while the expander is open (its state reruns the page or the drawing
    fragment), so a stroke with it closed pays nothing for it.
    """
    box = st.expander("Look inside: feature maps and filters", icon=":material/biotech:",
                      key=f"look_inside_{key}", on_change="rerun")
    if box.open:
        with box:
            _look_inside(predictor, x, key)


def _look_inside(predictor: Predictor, x: np.ndarray, key: str) -> None:
    maps = predictor.feature_maps(x)
    if not maps:
        st.info("This model has no Conv2D layers, so there are no feature maps to show.")
        return
    for name, act in maps:
        h, w, ch = act.shape
        st.markdown(f"**{md(name)}** — {ch} feature maps of {h}×{w} (bright = strong response)")
        st.plotly_chart(charts.feature_map_grid_figure(act), key=f"fm_{key}_{name}",
                        config={"displayModeBar": False})
    kernels = predictor.first_filters()
    if kernels is not None:
        n, kh, kw, _ = kernels.shape
        st.markdown(f"**First layer's {n} filters** ({kh}×{kw}; red = positive weight, "
                    "blue = negative)")
        st.plotly_chart(charts.filter_grid_figure(kernels), key=f"filters_{key}",
                        config={"displayModeBar": False})


def measured_caption() -> str:
    """What the bench measured for both inputs, or that nothing is measured yet."""
    m = drawn_digits.load_measured()
    if m is None:
        return ("Not measured yet: `python -m bench.preprocess_accuracy` measures both ways on "
                "drawn digits.")
    return (f"Measured on {m.n:,} drawn digits (MNIST test digits pasted at random sizes and "
            f"places on a {CANVAS_PX}×{CANVAS_PX} canvas) with {m.model}: MNIST-style "
            f"**{m.mnist_style:.1%}**, naive resize **{m.naive:.1%}** (the same digits as "
            f"MNIST has them: {m.original:.1%}).")


def preprocessing_steps(predictor: Predictor, names: tuple[str, ...], trace: CanvasTrace,
                        rgba: np.ndarray) -> None:
    """The drawing's way to the model input, one picture per step, and on request the naive
    resize's input and prediction beside it. Computed only while the expander is open."""
    box = st.expander("How your drawing becomes the model's input", icon=":material/transform:",
                      key="input_steps", on_change="rerun")
    if not box.open or trace.input is None:
        return
    with box:
        steps = input_steps.canvas_steps(trace)
        for col, (n, step) in zip(st.columns(len(steps)), enumerate(steps, 1), strict=True):
            with col:
                st.markdown(f"**{n}. {step.title}**")
                st.image(input_steps.enlarged(step.image, round(STEP_PX * step.extent)))
                st.caption(step.caption)
        naive = st.toggle("Naive resize", key="naive_resize",
                          help="Compare with the whole canvas resized to the input size: no "
                               "crop, no scaling of the digit, no centring.")
        if naive:
            ours, plain = st.columns(2, gap="large")
            with ours:
                show_prediction(predictor, names, trace.input, "steps_mnist",
                                seen_as="MNIST-style")
            with plain:
                show_prediction(predictor, names, naive_input(rgba, predictor.input_shape),
                                "steps_naive", seen_as="Naive resize")
        st.caption(measured_caption())


@st.fragment  # a stroke reruns this section only, not the model picker above it
@guarded  # fragment reruns skip app.py's boundary
def draw_tab(predictor: Predictor, names: tuple[str, ...]) -> None:
    """Canvas on the left, live prediction on the right: every stroke re-predicts."""
    from streamlit_drawable_canvas import st_canvas  # raises outside a running app

    st.session_state.setdefault("canvas_n", 0)

    def clear() -> None:
        st.session_state["canvas_n"] += 1  # a new key mounts an empty canvas

    pad, board = st.columns([2, 3], gap="medium")  # the pad column must fit 280 px
    with pad:
        width = st.slider("Stroke width", 8, 40, 20, key="stroke_width")
        canvas = st_canvas(
            stroke_width=width, stroke_color="#FFFFFF", background_color="#000000",
            height=CANVAS_PX, width=CANVAS_PX, drawing_mode="freedraw",
            return_image_data=True, key=f"canvas_{st.session_state['canvas_n']}",
        )
        st.button("Clear", icon=":material/ink_eraser:", on_click=clear)
    with board:
        rgba = canvas.image_data
        trace = None if rgba is None else trace_canvas(rgba, predictor.input_shape)
        x = None if trace is None else trace.input
        if rgba is None or trace is None or x is None:
            st.info("Draw a digit on the black square: the prediction follows every stroke."
                    if rgba is None or not rgba[..., :3].any()
                    else "That is too little ink for a digit: draw a whole digit.")
            return
        show_prediction(predictor, names, x, "draw")
        # Panels about this prediction go here, right under the bars, one call each.
        why_panel(predictor, x, names, "draw")
        corrections_panel(x, names, st.session_state.get("predict_model"))
    preprocessing_steps(predictor, names, trace, rgba)
    look_inside(predictor, x, "draw")


def uploaded_picture(upload) -> Image.Image | str:
    """The upload decoded once (reduced to a few hundred pixels), or why it cannot be used.

    Kept per session and file: reruns (every widget change) reuse the small picture instead
    of decoding a large file again.
    """
    kept = st.session_state.get("picture_decoded")
    if kept is None or kept[0] != upload.file_id:
        try:
            kept = (upload.file_id, open_image(upload.getvalue(), upload.name))
        except ValueError as exc:  # unreadable or too big
            kept = (upload.file_id, str(exc))
        st.session_state["picture_decoded"] = kept
    return kept[1]


def upload_tab(predictor: Predictor, names: tuple[str, ...]) -> None:
    """Classify an uploaded picture of any size."""
    h, w, c = predictor.input_shape
    upload = st.file_uploader(
        f"A picture (PNG, JPEG, …); it becomes {h}×{w} {'colour' if c == 3 else 'grey'}",
        type=IMAGE_TYPES, key="picture",
    )
    if upload is None:
        return
    image = uploaded_picture(upload)
    if isinstance(image, str):
        st.error(md(image))
        return
    try:
        x = image_to_input(image, predictor.input_shape)
    except ValueError as exc:
        st.error(f"**{md(upload.name)}**: {md(exc)}")
        return
    show_prediction(predictor, names, x, "upload")
    why_panel(predictor, x, names, "upload")
    look_inside(predictor, x, "upload")


current_user()  # class mode: signed-in people only
st.title(":material/draw: Draw & predict")
chosen = choose_model()
if chosen is not None:
    predictor, class_names, dataset_name = chosen
    st.caption(input_hint(predictor, dataset_name))
    if predictor.input_shape[-1] == 1:
        draw, upload_pane = st.tabs([":material/draw: Draw", ":material/image: Upload a picture"])
        with draw:
            draw_tab(predictor, class_names)
        with upload_pane:
            upload_tab(predictor, class_names)
    else:
        upload_tab(predictor, class_names)
