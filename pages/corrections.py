"""Teach it: under a drawing's prediction, save the right label, list the saved corrections,
fine-tune on them and show accuracy before and after.

Not a page itself: Draw & predict calls ``corrections_panel`` under the prediction of a
drawing. The store, the training mix and the numbers live in cnnlab (``corrections``,
``teaching``); this module only draws them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from cnnlab.data.datasets import DatasetUnavailable
from cnnlab.people import access
from cnnlab.people.accounts import User
from cnnlab.runs import corrections
from cnnlab.runs import store as runs
from cnnlab.use import inference, teaching
from pages import state
from pages.boundary import guarded
from pages.common import cached_dataset, engine
from pages.signin import current_user, md

TILE_PX = 56  # a 28×28 correction shown 2× bigger, pixel for pixel
GRID_COLUMNS = 6
MAX_EPOCHS = 10  # a correction run is short; the server's budget may be lower still


def corrections_panel(x: np.ndarray, names: tuple[str, ...], model: str | None) -> None:
    """"Wrong? It's a …" for the drawing ``x`` (the model's input in [0, 1]), the user's
    corrections for the data set of run ``model`` (a run directory; anything else, such
    as an uploaded model, shows nothing), and fine-tuning on them."""
    if not model or not runs.best_model_path(model).is_file():
        return  # an uploaded .keras file has no run to fine-tune or data set to key by
    dataset = inference.run_dataset(model)
    if not dataset:
        return
    user, root = current_user(), runs.default_root()
    save_control(user, root, dataset, x, names)
    try:
        saved = corrections.list_corrections(root, user, dataset)
    except corrections.CorrectionsError as exc:  # a user name that cannot be a folder
        st.caption(md(exc))
        return
    with st.expander(f"My corrections ({len(saved)})", icon=":material/school:",
                     expanded=bool(saved)):
        correction_grid(user, root, dataset, saved, names)
        fine_tune_control(user, Path(model), dataset, len(saved))
        results(user, root, Path(model))


def save_control(user: User, root: Path, dataset: str, x: np.ndarray,
                 names: tuple[str, ...]) -> None:
    """The class picker and Save: the drawing's model input joins the user's set."""
    pick, save = st.columns([3, 1], vertical_alignment="bottom")
    label = pick.selectbox("Wrong? It's a …", range(len(names)), index=None,
                           format_func=lambda i: names[i], key="corr_label",
                           placeholder="the right class")
    if save.button("Save", icon=":material/bookmark_add:", key="corr_save",
                   disabled=label is None, help="Keep this drawing with the right class, "
                   "to fine-tune the model on later."):
        try:
            corrections.add(root, user, dataset, corrections.to_uint8(x), int(label or 0), names)
        except corrections.CorrectionsError as exc:
            st.error(md(exc))
        else:
            st.success(f"Saved as {md(names[int(label or 0)])}.")


def tile(image: np.ndarray) -> Image.Image:
    """A uint8 correction as a picture TILE_PX wide, pixel for pixel."""
    picture = image[..., 0] if image.shape[-1] == 1 else image
    return Image.fromarray(picture).resize((TILE_PX, TILE_PX), Image.Resampling.NEAREST)


def correction_grid(user: User, root: Path, dataset: str,
                    saved: list[corrections.Correction], names: tuple[str, ...]) -> None:
    """Counts per class, then every correction as a tile with its label and Delete."""
    if not saved:
        st.caption("No corrections yet: when the model is wrong, pick the right class above "
                   "and Save.")
        return
    per_class = corrections.counts(saved, len(names))
    st.caption("Per class: " + md(" · ".join(f"{names[i]}: {n}"
                                               for i, n in enumerate(per_class) if n)))
    for start in range(0, len(saved), GRID_COLUMNS):
        for column, item in zip(st.columns(GRID_COLUMNS), saved[start:start + GRID_COLUMNS],
                                strict=False):
            with column:
                st.image(tile(item.image))
                label = names[item.label] if item.label < len(names) else str(item.label)
                st.caption(md(label))
                if st.button("Delete", key=f"corr_del_{item.id}", icon=":material/delete:"):
                    try:
                        corrections.delete(root, user, dataset, item.id)
                    except corrections.CorrectionsError as exc:
                        st.error(md(exc))
                    st.rerun()


def fine_tune_control(user: User, run_dir: Path, dataset: str, n_saved: int) -> None:
    """Epochs and "Fine-tune on my corrections" (the run's owner or a teacher only)."""
    owner = access.owner_of(runs.load_config(run_dir))
    if not access.can_manage(user, owner):
        st.caption("Fine-tuning starts from your own runs: this one is someone else's. Pick "
                   "one of your runs above to teach it your corrections.")
        return
    epochs = st.number_input("Epochs", 1, MAX_EPOCHS, 3, key="corr_epochs",
                             help="A short run: your corrections, repeated, mixed with "
                                  f"{teaching.REPLAY} original training images so it does "
                                  "not forget the rest.")
    if not st.button("Fine-tune on my corrections", icon=":material/model_training:",
                     key="corr_finetune", disabled=not n_saved, type="primary"):
        return
    try:
        job = teaching.fine_tune(engine(), run_dir, cached_dataset(dataset), user, int(epochs))
    except (ValueError, DatasetUnavailable, KeyError) as exc:
        st.error(f"Cannot fine-tune: {md(exc)}")
        return
    state.show_training_run(job.run_id)
    st.success(f"Started run {md(job.run_id)}: it learns your {n_saved} corrections. Follow "
               "it here or on the Train page.")


@st.cache_data(max_entries=8, show_spinner="Measuring before and after…")
def _before_after(parent: str, child: str, mtime: float) -> dict:
    # Keyed by the child's best.keras time: a new best means new numbers.
    return teaching.before_after(parent, child)


def results(user: User, root: Path, parent: Path) -> None:
    """The latest correction run from ``parent``: progress while it trains, then accuracy
    before and after on the corrections and on the test set."""
    taught = teaching.taught_runs(root, parent.name, user)
    if not taught:
        return
    child = taught[0]
    if child.status.get("status") in runs.ACTIVE:
        progress(child.run_id)
        return
    best = runs.best_model_path(child.run_dir)
    if not best.is_file():
        st.warning(f"Run {md(child.run_id)} ended without a model: "
                   f"{md(child.status.get('message', ''))}")
        return
    numbers = _before_after(str(parent), str(child.run_dir), best.stat().st_mtime)
    st.markdown(f"**Before and after** — run {md(child.run_id)}, "
                f"{numbers['n']} corrections")
    table = pd.DataFrame(
        {"before": [numbers["corrections"]["before"], numbers["test"]["before"]],
         "after": [numbers["corrections"]["after"], numbers["test"]["after"]]},
        index=["your corrections", "test set"])
    st.dataframe(table.style.format("{:.1%}", na_rep="–"))
    st.bar_chart(table.fillna(0.0), stack=False, y_label="accuracy", height=220)
    st.caption("Try the new model: pick it in the Model list above.")


@st.fragment(run_every=2.0)
@guarded  # fragment reruns skip app.py's boundary
def progress(run_id: str) -> None:
    """The correction run's status; reruns the page when it has ended."""
    run_dir = runs.run_dir_for(runs.default_root(), run_id)
    status = runs.load_status(run_dir)
    if status.get("status") not in runs.ACTIVE:
        st.rerun()
    epochs = runs.load_config(run_dir).get("fit", {}).get("epochs") or 1
    done = int(status.get("epochs_done") or 0)
    st.progress(min(done / epochs, 1.0),
                text=f"Fine-tuning on your corrections ({md(run_id)}): epoch {done}/{epochs} "
                     f"· {status.get('status')}")
