"""Why did it decide this? A saliency map over the model's input, for any class.

Not a page itself: Draw & predict calls ``why_panel`` under a prediction. The maps are
computed by ``cnnlab.use.saliency`` and drawn by ``cnnlab.charts``; nothing is computed while
the panel is closed (the expander reruns the page when it opens).
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from cnnlab import charts
from cnnlab.use import saliency
from cnnlab.use.inference import Predictor
from pages.signin import md

OVERLAY_PX = 168  # as wide as "What the model sees" above it
METHODS = (saliency.Method.GRAD_CAM, saliency.Method.OCCLUSION)
PREDICTED = -1  # the class picker's first option (not None: that shows a clear button)


def why_panel(predictor: Predictor, x: np.ndarray, class_names: tuple[str, ...],
              key: str = "draw") -> None:
    """A closed "Why did it decide this?" expander for input ``x`` (``(h, w, c)`` in
    [0, 1]); opened, a method, a class (default: the predicted one) and the map over ``x``.
    ``key`` tells apart several panels on one page (the drawing, an upload)."""
    with st.expander("Why did it decide this?", icon=":material/psychology_alt:",
                     key=f"why_{key}", on_change="rerun") as panel:
        if panel.open:
            _why(predictor, x, class_names, key)


def _why(predictor: Predictor, x: np.ndarray, names: tuple[str, ...], key: str) -> None:
    top = int(np.argmax(predictor.probabilities(x)))

    def name(i: int) -> str:
        return names[i] if i < len(names) else str(i)

    picture, controls = st.columns([1, 2])
    with controls:
        method = st.radio("Method", METHODS, horizontal=True, key=f"why_method_{key}",
                          help="Grad-CAM: where the last conv layer's features back the "
                          "class. Occlusion: where covering the input lowers its probability.")
        # PREDICTED follows the prediction as the drawing changes; a class stays picked.
        picked = st.selectbox("Explain the class", [PREDICTED, *range(predictor.n_classes)],
                              key=f"why_class_{key}",
                              format_func=lambda i: f"the predicted one ({name(top)})"
                              if i == PREDICTED else name(i))
    with st.spinner("Working out why…"):
        try:
            found = saliency.explain(predictor, x, None if picked == PREDICTED else picked,
                                     method)
        except ValueError as exc:  # e.g. a Keras backend without gradients
            st.warning(md(exc))
            return
    with picture:
        scale = max(1, round(OVERLAY_PX / x.shape[1]))
        st.image(charts.saliency_overlay(x, found.heat, scale=scale))
    with controls:
        st.caption(md(found.describe(name(found.class_index))))
