"""The test images behind a run's numbers, for Train and Runs (not a page itself).

- ``confusion_chart``: the confusion matrix; clicking a cell picks it (Plotly selection);
- ``cell_examples_section``: the picked cell's test images (or the same through two
  selectboxes, for keyboards and tests), and a class's hardest examples;
- ``sample_strip``: the Train page's fixed test images with the model's current answers.

Everything comes from the run's predictions.npz and the epoch events (cnnlab.runs.predictions);
the model is never run here. Images of a private upload are drawn only for its owner and
teachers (``access.can_see_images``); others get the numbers and a note.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import streamlit as st

from cnnlab import charts
from cnnlab.data.datasets import DatasetUnavailable
from cnnlab.people import access
from cnnlab.runs import predictions
from cnnlab.runs import store as runs
from cnnlab.runs.evaluate import N_MISTAKES
from pages.common import cached_dataset, run_predictor
from pages.signin import md
from pages.why import why_panel

if TYPE_CHECKING:
    from cnnlab.people.accounts import User

PRIVATE_NOTE = ("These are someone's own uploaded pictures: only they and teachers see the "
                "images, so here are the numbers.")
STRIP_COLS = 5


def _cell_keys(prefix: str, run_id: str) -> tuple[str, str]:
    # Per run: another run may have other classes, and a stale choice must not carry over.
    return f"{prefix}_cell_true_{run_id}", f"{prefix}_cell_pred_{run_id}"


def confusion_chart(prefix: str, run_id: str, metrics: dict[str, Any]) -> None:
    """The clickable confusion matrix (key ``<prefix>_confusion``): a click on a cell picks
    it for ``cell_examples_section``."""
    key = f"{prefix}_confusion"
    true_key, pred_key = _cell_keys(prefix, run_id)

    def picked() -> None:  # runs only when the selection changes
        event = st.session_state.get(key)
        cell = charts.clicked_cell(event.selection.points) if event else None
        if cell is not None:
            st.session_state[true_key], st.session_state[pred_key] = cell

    names = [str(n) for n in metrics.get("class_names", [])]
    st.plotly_chart(charts.confusion_figure(metrics["confusion"], names), width="stretch",
                    key=key, on_select=picked, selection_mode="points")


def _test_images(user: User, dataset: str, owner: str, preds: predictions.Predictions
                 ) -> np.ndarray | None:
    """The test images to draw, or None (with a note) when this user may not see them or
    they are not here."""
    if not access.can_see_images(user, dataset, owner):
        st.caption(PRIVATE_NOTE)
        return None
    try:
        ds = cached_dataset(dataset)
    except (DatasetUnavailable, KeyError) as exc:
        st.caption(f"The test images are not available here, so only numbers: {md(exc)}")
        return None
    if not preds.matches(ds.y_test):
        st.caption("This run's predictions do not match this data set's test images, so "
                   "only numbers.")
        return None
    return ds.x_test


def _show(x_test: np.ndarray | None, idx: np.ndarray, captions: list[str],
          table: dict[str, list[Any]], key: str) -> None:
    """A grid of the images ``idx`` (when they may be drawn), else their numbers."""
    if x_test is not None:
        st.plotly_chart(charts.image_grid_figure(x_test[idx], captions,
                                                 cols=charts.CAPTIONED_COLS),
                        width="stretch", key=key)
    else:
        st.dataframe(pd.DataFrame({"test image": [int(i) for i in idx], **table}),
                     hide_index=True, key=f"{key}_numbers")


def why_test_image(run_dir: Path | str, x_test: np.ndarray, shown: np.ndarray,
                   names: tuple[str, ...], key: str) -> None:
    """Pick one of the ``shown`` test images and see why the run's model decided what it
    did (the saliency panel); the model loads only once an image is picked."""
    pick = st.selectbox("Why? Explain one of them", range(len(shown)), index=None,
                        format_func=lambda k: f"image {k + 1} (test image {shown[k]})",
                        placeholder="pick an image to see what the model looked at",
                        key=f"{key}_why_pick")
    best = runs.best_model_path(run_dir)
    if pick is None or not best.is_file():
        return
    x = x_test[shown[pick]].astype(np.float32) / 255.0  # the panel takes inputs in [0, 1]
    why_panel(run_predictor(str(run_dir), best.stat().st_mtime), x, names, key=f"{key}_test")


def cell_examples_section(user: User, prefix: str, run_id: str, run_dir: Path | str,
                          dataset: str, owner: str, metrics: dict[str, Any]) -> None:
    """The test images of the picked confusion cell, and a class's hardest examples."""
    names = [str(n) for n in metrics.get("class_names", [])]
    try:
        preds = predictions.load(run_dir)
    except predictions.PredictionsError as exc:
        st.info(md(exc))
        return
    if preds is None:
        st.info("This run was evaluated before per-image predictions were saved, so its "
                "cells cannot be opened; train it again to get them.")
        return
    x_test = _test_images(user, dataset, owner, preds)
    classes = list(range(len(names)))

    st.markdown("**Test images behind a cell** — click a cell of the confusion matrix")
    true_key, pred_key = _cell_keys(prefix, run_id)
    c1, c2 = st.columns(2)
    i = c1.selectbox("True class", classes, format_func=names.__getitem__, index=None,
                     key=true_key, placeholder="click a cell or choose")
    j = c2.selectbox("Predicted class", classes, format_func=names.__getitem__, index=None,
                     key=pred_key, placeholder="click a cell or choose")
    if i is not None and j is not None:
        idx = predictions.cell_examples(preds, i, j)
        shown = idx[:N_MISTAKES]
        conf = preds.confidence[shown]
        if not len(idx):
            st.caption(f"No test image of {md(names[i])} was predicted {md(names[j])}.")
        else:
            order = ("least confident first: right, but only just" if i == j
                     else "most confident first: the surest mistakes")
            st.caption(f"{len(idx)} test image(s) of **{md(names[i])}** predicted "
                       f"**{md(names[j])}**; {order}. Under each: the confidence"
                       + (f" (first {N_MISTAKES} shown)." if len(idx) > N_MISTAKES else "."))
            _show(x_test, shown, [f"{c:.0%}" for c in conf],
                  {"confidence": [round(float(c), 4) for c in conf]}, f"{prefix}_cell_grid")
            if x_test is not None:
                why_test_image(run_dir, x_test, shown, tuple(names), f"{prefix}_{run_id}")

    st.markdown("**Hardest examples of a class** — lowest probability for the true class")
    cm = np.asarray(metrics["confusion"])
    recall = np.diag(cm) / np.maximum(cm.sum(axis=1), 1)
    c = st.selectbox("Class", classes, format_func=names.__getitem__,
                     index=int(np.argmin(recall)) if len(classes) else None,
                     key=f"{prefix}_hardest_{run_id}")
    if c is not None:
        shown = predictions.hardest_examples(preds, c, N_MISTAKES)
        st.caption("Under each: predicted class (probability it gave the true class).")
        _show(x_test, shown,
              [f"→{names[p]} ({q:.0%})" for p, q in zip(preds.predicted[shown],
                                                       preds.true_prob[shown], strict=True)],
              {"predicted": [names[p] for p in preds.predicted[shown]],
               "p(true class)": [round(float(q), 4) for q in preds.true_prob[shown]]},
              f"{prefix}_hardest_grid")


def sample_strip(user: User, dataset: str, owner: str, samples: dict[str, list] | None,
                 class_names: list[str] | tuple[str, ...], active: bool) -> None:
    """The run's fixed test images with the model's label and confidence after the latest
    epoch (from the epoch events), ✓ right / ✗ wrong."""
    if not samples:
        if active:
            st.caption("After each epoch, the model's answers on ten fixed test images "
                       "appear here.")
        return
    idx = np.asarray(samples["index"], np.int64)
    names = [str(n) for n in class_names]
    st.markdown("**The model now, on ten test images** (refreshed every epoch)")
    try:
        ds = None if not access.can_see_images(user, dataset, owner) else cached_dataset(dataset)
    except (DatasetUnavailable, KeyError):
        ds = None
    if ds is None or len(ds.y_test) <= int(idx.max(initial=0)):
        st.caption("The images are not shown here: " + md(", ".join(
            f"{names[p]} ({c:.0%})" for p, c in zip(samples["predicted"],
                                                   samples["confidence"], strict=True))))
        return
    right = ds.y_test.reshape(-1)[idx] == np.asarray(samples["predicted"])
    captions = [f"{'✓' if ok else '✗'} {names[p]} {c:.0%}" for ok, p, c in
                zip(right, samples["predicted"], samples["confidence"], strict=True)]
    # Two rows of five: ten across left a phone's screen ~38 px per image, too narrow for
    # even a digit's caption.
    st.plotly_chart(charts.image_grid_figure(ds.x_test[idx], captions, cols=STRIP_COLS),
                    width="stretch", key="train_samples")
