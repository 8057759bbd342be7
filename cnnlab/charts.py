"""Plotly figure builders: pure functions, data in, figure out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from cnnlab import text as text_mod

if TYPE_CHECKING:
    from cnnlab.model.backbone_stages import Stage

# ---------------------------------------------------------------------------- explore (datasets)


def class_counts_figure(
    class_names: tuple[str, ...] | list[str], y_train: np.ndarray, y_test: np.ndarray
) -> go.Figure:
    """Grouped bars: images per class in the training and the test set, side by side."""
    k = len(class_names)
    fig = go.Figure()
    for part, y, color in (("train", y_train, "#4f46e5"), ("test", y_test, "#f59e0b")):
        counts = np.bincount(np.asarray(y).reshape(-1), minlength=k)[:k]
        fig.add_bar(x=[text_mod.chart_label(n) for n in class_names], y=counts, name=part,
                    marker_color=color,
                    hovertemplate="%{x}: %{y:,} " + part + " images<extra></extra>")
    fig.update_layout(
        barmode="group", height=320, margin=dict(l=10, r=10, t=30, b=10),
        legend=dict(orientation="h", y=1.12, x=0), yaxis_title="images",
        xaxis=dict(type="category"),
    )
    return fig


def image_mosaic(
    images: np.ndarray, cols: int, pad: int = 2, fill: int | None = 255,
    gap_y: int | None = None,
) -> np.ndarray:
    """Tile ``(n, h, w, c)`` images into one ``(H, W, 3)`` uint8 picture, ``cols`` wide.

    ``gap_y`` (default ``pad``) is the blank band under each row, e.g. room for captions.
    ``fill=None`` makes the gaps transparent: an ``(H, W, 4)`` RGBA picture instead.
    """
    gap_y = pad if gap_y is None else gap_y
    images = np.asarray(images)
    if images.dtype != np.uint8:
        images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    if fill is None:  # opaque images, transparent gaps
        images = np.concatenate([images, np.full(images.shape[:-1] + (1,), 255, np.uint8)], -1)
    n, h, w, depth = images.shape
    rows = max(1, -(-n // cols))
    out = np.full((rows * (h + gap_y) + pad, cols * (w + pad) + pad, depth), fill or 0, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        top, left = pad + r * (h + gap_y), pad + c * (w + pad)
        out[top:top + h, left:left + w] = img
    return out


CAPTION_FONT_PX = 11
# Plotly draws an annotation on one line, however long: a caption wider than its tile runs
# into the next one ("✓ T-shirt/top 99%✓ Trouser"). Captions are wrapped to the tile's
# width, from an average glyph width of the theme's sans-serif (Source Sans: ~0.45 em).
GLYPH_PX = 0.45 * CAPTION_FONT_PX
LINE_PX = 1.25 * CAPTION_FONT_PX
# A phone leaves a chart about this many pixels: the grid shrinks to fit (its captions do
# not), so they are wrapped, and their band sized, for the narrower of the two widths.
PHONE_PX = 360
# Images across in a grid of long captions ("Ankle boot → Sandal 92%"): at six they take
# two lines on a phone; at eight they ran into each other on a 420 px window.
CAPTIONED_COLS = 6


def caption_lines(text: str, width_px: float) -> list[str]:
    """``text`` broken at spaces into lines about ``width_px`` wide; a word longer than a
    line keeps its own line (a name cut in half reads worse than one that overhangs)."""
    chars = max(3, int(width_px // GLYPH_PX))
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= chars:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def png_data_uri(picture: np.ndarray) -> str:
    """A uint8 ``(H, W, 3|4)`` picture as a ``data:image/png;base64,…`` URI."""
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def image_grid_figure(
    images: np.ndarray, captions: list[str], cols: int, tile_px: int = 72
) -> go.Figure:
    """Images in a grid, at most ``cols`` across, with a caption under each, wrapped to the
    tile's width on a wide window and on a phone alike (a single Plotly image, crisp
    pixels)."""
    n, h, w = images.shape[:3]
    cols = min(cols, max(1, n))  # no empty columns beside fewer images than a row holds
    pad = max(2, h // 7)
    scale = tile_px / w  # screen pixels per image pixel at the drawn size
    smallest = min(scale, PHONE_PX / (cols * (w + pad) + pad))  # the same on a phone
    wrapped = [caption_lines(t, (w + pad) * smallest) for t in captions[:n]]
    lines = max((len(x) for x in wrapped), default=1)
    # gap_y: a band under each row, tall enough for the longest caption
    gap_y = max(h // 2, int(np.ceil((lines * LINE_PX + 6) / smallest)))
    # Transparent gaps: the captions (the theme's text colour) sit on the page's own
    # background, readable in light and dark mode alike.
    mosaic = image_mosaic(images, cols, pad=pad, gap_y=gap_y, fill=None)
    rows = max(1, -(-n // cols))
    # The mosaic goes as a PNG, encoded once here: with z= Plotly base64-encodes the raw
    # RGBA pixels on every script run that shows the figure (350 KB of JSON for Explore's
    # sample grid, against 29 KB as a PNG).
    fig = go.Figure(go.Image(source=png_data_uri(mosaic), hoverinfo="skip"))
    # One layout update for all captions: add_annotation once per caption validates the
    # whole list each time (64 ms for 30 tiles against 2.4 ms, the Explore page's main cost).
    annotations = [
        dict(x=pad + c * (w + pad) + w / 2, y=pad + r * (h + gap_y) + h + 2 / scale,
             text="<br>".join(text_mod.chart_label(line) for line in text),
             showarrow=False, yanchor="top", font=dict(size=CAPTION_FONT_PX))
        for (r, c), text in ((divmod(i, cols), text) for i, text in enumerate(wrapped))
    ]
    fig.update_layout(
        annotations=annotations,
        width=None, height=int(rows * (h + gap_y) * scale) + 20,
        margin=dict(l=0, r=0, t=0, b=0),
        xaxis=dict(visible=False), yaxis=dict(visible=False, scaleanchor="x"),
    )
    return fig


def class_mean_images(x: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean image per class, float32 ``(n_classes, h, w, c)``; zeros for absent classes."""
    y = np.asarray(y).reshape(-1)
    means = np.zeros((n_classes, *x.shape[1:]), np.float32)
    for k in range(n_classes):
        rows = np.flatnonzero(y == k)
        for start in range(0, len(rows), 10_000):  # bounded float64 temporaries
            means[k] += x[rows[start:start + 10_000]].sum(axis=0, dtype=np.float64)
        means[k] /= max(1, len(rows))
    return means


PIXEL_CHUNK = 1 << 20  # pixels per bincount: its int64 copy of them stays at 8 MB


def pixel_counts(x: np.ndarray) -> np.ndarray:
    """How many pixel values equal 0..255, per channel: int64 ``(c, 256)``."""
    # In chunks: bincount copies its input to int64, so all of MNIST's 47M pixels at once
    # took 376 MB and 5.6 s here; chunk by chunk it is 0.1 s (one Explore visit per server).
    c = x.shape[-1]
    flat = np.asarray(x).reshape(-1, c)
    counts = np.zeros((c, 256), np.int64)
    for start in range(0, len(flat), PIXEL_CHUNK):
        part = flat[start:start + PIXEL_CHUNK]
        for i in range(c):
            counts[i] += np.bincount(part[:, i], minlength=256)
    return counts


def pixel_histogram_figure(counts: np.ndarray) -> go.Figure:
    """Pixel-intensity histogram (log scale: dark backgrounds dominate) from pixel_counts."""
    names = ["gray"] if len(counts) == 1 else ["red", "green", "blue"][: len(counts)]
    colors = {"gray": "#4f46e5", "red": "#dc2626", "green": "#16a34a", "blue": "#2563eb"}
    fig = go.Figure()
    for name, row in zip(names, counts, strict=True):
        fig.add_scatter(x=np.arange(256), y=row, name=name, mode="lines",
                        line=dict(color=colors[name], width=1.5), fill="tozeroy")
    fig.update_layout(
        height=300, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="pixel value (0–255)",
        yaxis=dict(title="pixels", type="log", dtick=1), showlegend=len(names) > 1,
        legend=dict(orientation="h", y=1.12, x=0),
    )
    return fig


# ---------------------------------------------------------------------------- configure (models)

_GROUP_COLORS = {"augment": "#fde68a", "block": "#c7d2fe", "dense": "#bbf7d0", "output": "#fecaca",
                 "backbone": "#bfdbfe"}


def _shape_text(shape: tuple[int, ...] | list[int]) -> str:
    return "×".join(str(v) for v in shape)


def _layer_group(name: str) -> str:
    """Diagram node a layer belongs to: 'augment', 'block3', 'dense2', or its own name."""
    head = name.split("_")[0]
    return "augment" if head == "augment" else head


_SHORT = {"Conv2D": "conv", "BatchNormalization": "BN", "MaxPooling2D": "pool",
          "Dropout": "dropout", "Dense": "dense", "Flatten": "flatten",
          "GlobalAveragePooling2D": "global avg pool", "Rescaling": "rescale 1/255",
          "RandomFlip": "random flip", "RandomTranslation": "random shift",
          "RandomRotation": "random rotation", "Input": "input",
          "ImagenetPreprocess": "resize + ImageNet preprocessing"}


def _group_lines(members: list[dict]) -> list[str]:
    """'conv+BN ×2 → 28×28×32', 'pool → 14×14×32', 'dropout' for one diagram node."""
    steps: list[list] = []  # [label, count, shape]
    for r in members:
        short = _SHORT.get(r["type"], r["type"])
        if short == "BN" and steps:
            steps[-1][0] = steps[-1][0].split("+")[0] + "+BN"
        elif steps and steps[-1][0].split("+")[0] == short and short == "conv":
            steps[-1][1] += 1
            steps[-1][2] = r["output_shape"]
        else:
            steps.append([short, 1, r["output_shape"]])
    out = []
    for label, count, shape in steps:
        times = f" ×{count}" if count > 1 else ""
        arrow = "" if label in ("dropout", "random flip", "random shift", "random rotation") else (
            f" → {_shape_text(shape)}"
        )
        out.append(f"{label}{times}{arrow}")
    return out


def _backbone_cluster(i: int, row: dict, inside: list[Stage]) -> list[str]:
    """A pretrained backbone opened: one box per stage inside a dashed frame (nodes
    ``n{i}_0`` … ``n{i}_{k}``, chained)."""
    frozen = row["params"] - row.get("trainable", row["params"])
    state = "frozen in phase 1" if frozen else "trained"
    lines = [f"  subgraph cluster_n{i} {{",
             f'    label="{row["type"]} backbone, {row["params"]:,} params, {state}";',
             '    style="rounded,dashed"; color="#6b7280"; fontname="Helvetica"; fontsize=11;']
    for j, stage in enumerate(inside):
        parts = [f"{stage.name} · {stage.layers} layers → {_shape_text(stage.output_shape)}"]
        if stage.params:
            parts.append(f"{stage.params:,} params")
        if stage.unfrozen:
            parts.append(f"{stage.unfrozen} trained in phase 2")
        label = "\\n".join(parts).replace('"', "'")
        lines.append(f'    n{i}_{j} [label="{label}", fillcolor="{_GROUP_COLORS["backbone"]}"];')
        if j:
            lines.append(f"    n{i}_{j - 1} -> n{i}_{j};")
    lines.append("  }")
    return lines


def architecture_dot(rows: list[dict], inside: list[Stage] | None = None) -> str:
    """Graphviz DOT of a layer table (``models.layer_table`` rows), one box per conv block or
    dense layer listing its layers and output shapes, top to bottom.

    A pretrained backbone (the row named "backbone") is one box saying how much of it is
    frozen; with ``inside`` (its stages, ``backbone_stages.stages``) it opens into a frame of
    one box per stage.
    """
    groups: list[tuple[str, list[dict]]] = []
    for row in rows:
        key = _layer_group(row["name"])
        if groups and groups[-1][0] == key:
            groups[-1][1].append(row)
        else:
            groups.append((key, [row]))
    lines = [
        "digraph cnn {",
        '  rankdir=TB; bgcolor="transparent"; nodesep=0.2; ranksep=0.25;',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11,'
        ' fillcolor="#e5e7eb", color="#6b7280"];',
        '  edge [color="#6b7280"];',
    ]
    ends: list[tuple[str, str]] = []  # (first, last) node of each group, for the edges
    for i, (key, members) in enumerate(groups):
        if key == "backbone" and inside:
            lines += _backbone_cluster(i, members[0], inside)
            ends.append((f"n{i}_0", f"n{i}_{len(inside) - 1}"))
        else:
            parts = [key] if key.startswith(("block", "dense", "augment")) else []
            parts += _group_lines(members)
            if key == "output":
                parts = [f"softmax output → {_shape_text(members[-1]['output_shape'])}"]
            params = sum(r["params"] for r in members)
            if params:
                parts.append(f"{params:,} params")
            frozen = params - sum(r.get("trainable", r["params"]) for r in members)
            if key == "backbone":
                parts.insert(0, "pretrained backbone")
                if frozen:
                    parts.append("frozen in phase 1")
            color = next((c for k, c in _GROUP_COLORS.items() if key.startswith(k)), "#e5e7eb")
            label = "\\n".join(parts).replace('"', "'")
            lines.append(f'  n{i} [label="{label}", fillcolor="{color}"];')
            ends.append((f"n{i}", f"n{i}"))
        if i:
            lines.append(f"  {ends[i - 1][1]} -> {ends[i][0]};")
    lines.append("}")
    return "\n".join(lines)


def params_figure(rows: list[dict]) -> go.Figure:
    """Horizontal bars: parameters per layer (layers without weights left out)."""
    kept = [r for r in rows if r["params"] > 0]
    total = sum(r["params"] for r in kept) or 1
    fig = go.Figure(
        go.Bar(
            x=[r["params"] for r in kept],
            y=[r["name"] for r in kept],
            orientation="h",
            marker_color="#4f46e5",
            customdata=[100 * r["params"] / total for r in kept],
            hovertemplate="%{y}: %{x:,} params (%{customdata:.1f}%)<extra></extra>",
        )
    )
    fig.update_layout(
        height=max(200, 26 * len(kept) + 60), margin=dict(l=10, r=10, t=10, b=10),
        xaxis_title="parameters", yaxis=dict(autorange="reversed", type="category"),
    )
    return fig


# ---------------------------------------------------------------------------- predict

_TOP_COLOR, _OTHER_COLOR = "#4f46e5", "#c7d2fe"


def probability_bars_figure(
    probs: np.ndarray, class_names: tuple[str, ...] | list[str]
) -> go.Figure:
    """Bars of every class probability, the predicted (top) class highlighted."""
    probs = np.asarray(probs, dtype=float).reshape(-1)
    names = [text_mod.chart_label(n) for n in class_names][: len(probs)]
    names += [str(i) for i in range(len(names), len(probs))]
    top = int(np.argmax(probs)) if len(probs) else -1
    colors = [_TOP_COLOR if i == top else _OTHER_COLOR for i in range(len(probs))]
    fig = go.Figure(
        go.Bar(
            # Label only visible bars: ten "0%" labels would be clutter.
            x=names, y=probs, marker_color=colors,
            text=[f"{p:.0%}" if p >= 0.005 else "" for p in probs],
            textposition="outside", cliponaxis=False, constraintext="none",
            textfont=dict(size=13),
            hovertemplate="%{x}: %{y:.1%}<extra></extra>",
        )
    )
    fig.update_layout(
        height=300, margin=dict(l=10, r=10, t=30, b=10), showlegend=False,
        yaxis=dict(range=[0, 1.0], tickformat=".0%", title=None),
        xaxis=dict(type="category"),
    )
    return fig


def _heatmap_mosaic(tiles: np.ndarray, cols: int) -> np.ndarray:
    """Tile ``(n, h, w)`` float maps into one 2-D array with NaN gaps (one Heatmap trace)."""
    n, h, w = tiles.shape
    rows = max(1, -(-n // cols))
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan, np.float32)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = tile
    return out


def feature_map_grid_figure(maps: np.ndarray, cols: int = 8, tile_px: int = 56) -> go.Figure:
    """One conv layer's activations ``(h, w, channels)`` as a grid of small grey images,
    each scaled to its own maximum so weak channels stay visible (black = 0)."""
    maps = np.moveaxis(np.asarray(maps, np.float32), -1, 0)
    peak = maps.reshape(len(maps), -1).max(axis=1)
    tiles = maps / np.where(peak > 0, peak, 1.0)[:, None, None]
    cols = min(cols, len(tiles))
    z = _heatmap_mosaic(tiles, cols)
    rows = -(-len(tiles) // cols)
    fig = go.Figure(go.Heatmap(z=z, colorscale="gray", zmin=0, zmax=1, showscale=False,
                               hoverongaps=False, hovertemplate="%{z:.2f}<extra></extra>"))
    fig.update_layout(
        height=int(rows * tile_px) + 10, margin=dict(l=0, r=0, t=0, b=0),
        xaxis=dict(visible=False, constrain="domain"),
        yaxis=dict(visible=False, autorange="reversed", scaleanchor="x", constrain="domain"),
        plot_bgcolor="rgba(0,0,0,0)",
    )
    return fig


def filter_grid_figure(kernels: np.ndarray, cols: int = 8, tile_px: int = 48) -> go.Figure:
    """First-layer filters ``(n, kh, kw, in_channels)`` as small images: grey filters on a
    blue–white–red scale (sign matters), colour filters as RGB (rescaled to 0..255)."""
    kernels = np.asarray(kernels, np.float32)
    n, kh, kw, cin = kernels.shape
    cols = min(cols, n)
    rows = -(-n // cols)
    if cin == 3:
        lo, hi = kernels.min(), kernels.max()
        imgs = (kernels - lo) / (hi - lo if hi > lo else 1.0) * 255
        fig = go.Figure(go.Image(z=image_mosaic(imgs, cols, pad=1), hoverinfo="skip"))
    else:
        tiles = kernels.mean(axis=-1)
        bound = float(np.abs(tiles).max()) or 1.0
        fig = go.Figure(go.Heatmap(z=_heatmap_mosaic(tiles, cols), colorscale="RdBu_r",
                                   zmin=-bound, zmax=bound, showscale=False, hoverongaps=False,
                                   hovertemplate="%{z:.3f}<extra></extra>"))
        fig.update_yaxes(autorange="reversed")
    fig.update_layout(
        height=int(rows * tile_px) + 10, margin=dict(l=0, r=0, t=0, b=0),
        xaxis=dict(visible=False, constrain="domain"),
        yaxis=dict(visible=False, scaleanchor="x", constrain="domain"),
        plot_bgcolor="rgba(0,0,0,0)",
    )
    return fig


def saliency_overlay(x: np.ndarray, heat: np.ndarray, scale: int = 6) -> np.ndarray:
    """A saliency map over its input as one ``(h·scale, w·scale, 3)`` uint8 picture.

    ``x``: the model input ``(h, w, c)`` in [0, 1]; ``heat``: ``(h, w)`` in [0, 1]. The
    input is shown dimmed grey (colour photos too: heat colours on colours would blur) and
    the heat laid over it from transparent through red to yellow, so cold pixels keep the
    plain input. Pixels are repeated ``scale`` times (crisp, like "What the model sees").
    """
    x = np.asarray(x, np.float32)
    heat = np.clip(np.nan_to_num(np.asarray(heat, np.float32)), 0.0, 1.0)[..., None]
    grey = x.mean(axis=-1, keepdims=True) if x.shape[-1] == 3 else x[..., :1]
    base = np.repeat(np.clip(grey, 0.0, 1.0) * 0.6, 3, axis=-1)  # dimmed: heat stands out
    hot = np.concatenate([np.ones_like(heat), heat, np.zeros_like(heat)], axis=-1)
    alpha = 0.85 * heat
    rgb = np.rint((base * (1 - alpha) + hot * alpha) * 255).astype(np.uint8)
    return np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)


# ---------------------------------------------------------------------------- train (runs)

_TRAIN_COLOR, _VAL_COLOR = "#4f46e5", "#f59e0b"


def training_curve_figure(history: pd.DataFrame, metric: str, height: int = 300) -> go.Figure:
    """``metric`` ("loss" or "accuracy") per epoch, train vs validation."""
    fig = go.Figure()
    if not history.empty and metric in history:
        x = history["epoch"] if "epoch" in history else np.arange(1, len(history) + 1)
        fig.add_scatter(x=x, y=history[metric], name="train", mode="lines+markers",
                        line=dict(color=_TRAIN_COLOR, width=2))
        if f"val_{metric}" in history:
            fig.add_scatter(x=x, y=history[f"val_{metric}"], name="validation",
                            mode="lines+markers", line=dict(color=_VAL_COLOR, width=2))
    is_acc = metric == "accuracy"
    fig.update_layout(
        height=height, margin=dict(l=10, r=10, t=36, b=10),
        title=dict(text=metric.capitalize(), x=0, font=dict(size=15)),
        xaxis=dict(title="epoch", dtick=1 if len(history) <= 15 else None, rangemode="tozero"),
        yaxis=dict(tickformat=".0%" if is_acc else None, rangemode="tozero"),
        legend=dict(orientation="h", y=1.14, x=1, xanchor="right"),
        hovermode="x unified",
    )
    return fig


def confusion_figure(confusion: list[list[int]] | np.ndarray, class_names: list[str]) -> go.Figure:
    """Confusion-matrix heatmap: rows true class, columns predicted; counts in the cells.

    Clickable: an invisible marker sits on each cell centre with ``customdata`` [true,
    predicted], because Streamlit's point selection ignores heatmap clicks (1.67);
    ``clicked_cell`` reads the selection back.
    """
    cm = np.asarray(confusion)
    names = [text_mod.chart_label(n) for n in class_names]
    # Colour by the row share so small classes are as readable as big ones.
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig = go.Figure(go.Heatmap(
        z=share, x=names, y=names, text=cm, texttemplate="%{text}", colorscale="Blues",
        zmin=0, zmax=1, showscale=False, hoverinfo="skip",
    ))
    n = len(names)
    true, pred = np.divmod(np.arange(n * n), n)
    fig.add_scatter(
        x=[names[j] for j in pred], y=[names[i] for i in true], mode="markers",
        # A list, not an array: plotly sends arrays as typed buffers, which reach Streamlit's
        # selection as {"0": …, "1": …} objects.
        customdata=np.stack([true, pred, cm.reshape(-1)], axis=1).tolist(), showlegend=False,
        marker=dict(symbol="square", size=34, opacity=0),
        hovertemplate="true %{y}, predicted %{x}: %{customdata[2]}<br>click to see them"
                      "<extra></extra>",
    )
    side = max(320, 36 * len(names) + 90)
    fig.update_layout(
        height=side, margin=dict(l=10, r=10, t=10, b=10),
        xaxis=dict(title="predicted", type="category", side="top"),
        yaxis=dict(title="true", type="category", autorange="reversed"),
    )
    return fig


def clicked_cell(points: list[dict[str, Any]]) -> tuple[int, int] | None:
    """The (true, predicted) cell of a ``confusion_figure`` selection's points, or None."""
    for point in points:
        data = point.get("customdata")
        if isinstance(data, dict):  # a typed-array row, as some plotly versions send it
            data = [data.get("0"), data.get("1")]
        if isinstance(data, list | tuple) and len(data) >= 2 and None not in data[:2]:
            return int(data[0]), int(data[1])
    return None


def mistakes_figure(
    x_test: np.ndarray, mistakes: list[dict], class_names: list[str],
    cols: int = CAPTIONED_COLS
) -> go.Figure:
    """Grid of misclassified test images captioned "true → predicted (confidence)"."""
    idx = [m["index"] for m in mistakes]
    captions = [
        f"{class_names[m['true']]} → {class_names[m['predicted']]} {m['confidence']:.0%}"
        for m in mistakes
    ]
    return image_grid_figure(np.asarray(x_test)[idx], captions, cols=cols)


# ---------------------------------------------------------------------------- runs (compare)

RUN_COLORS = ("#4f46e5", "#f59e0b", "#10b981", "#ef4444", "#0ea5e9", "#a855f7", "#84cc16",
              "#ec4899", "#64748b", "#14b8a6")


def runs_overlay_figure(histories: dict[str, pd.DataFrame], height: int = 380) -> go.Figure:
    """Loss (left) and accuracy (right) per epoch of several runs in one figure.

    ``histories`` maps a run label to its history frame. One trace per run per metric:
    validation solid, training dotted, one colour per run; clicking a run in the legend
    hides all of its traces.
    """
    fig = go.Figure()
    for i, (raw_label, history) in enumerate(histories.items()):
        label = text_mod.chart_label(raw_label)
        color = RUN_COLORS[i % len(RUN_COLORS)]
        x = history["epoch"] if "epoch" in history else np.arange(1, len(history) + 1)
        first = True
        for metric, axis in (("loss", "1"), ("accuracy", "2")):
            for col, dash, part in ((f"val_{metric}", "solid", "validation"),
                                    (metric, "dot", "training")):
                if col not in history:
                    continue
                fig.add_scatter(
                    x=x, y=pd.to_numeric(history[col], errors="coerce"), name=label,
                    legendgroup=label, showlegend=first, mode="lines+markers",
                    line=dict(color=color, dash=dash, width=2 if dash == "solid" else 1.5),
                    marker=dict(size=6 if dash == "solid" else 4),
                    xaxis=f"x{axis}" if axis != "1" else "x",
                    yaxis=f"y{axis}" if axis != "1" else "y",
                    hovertemplate=f"{label}<br>{part} {metric} %{{y:.4g}} · epoch %{{x}}"
                    "<extra></extra>",
                )
                first = False
    longest = max((len(h) for h in histories.values()), default=0)
    xaxis = dict(title="epoch", rangemode="tozero", dtick=1 if longest <= 15 else None)
    fig.update_layout(
        height=height, margin=dict(l=10, r=10, t=40, b=10),
        xaxis={**xaxis, "domain": [0, 0.46]},
        xaxis2={**xaxis, "domain": [0.54, 1], "anchor": "y2"},
        yaxis=dict(rangemode="tozero", anchor="x"),
        yaxis2=dict(tickformat=".0%", rangemode="tozero", anchor="x2"),
        legend=dict(orientation="h", y=-0.2, x=0),
        annotations=[
            dict(text="<b>Loss</b>", x=0, xref="paper", xanchor="left", y=1.08, yref="paper",
                 showarrow=False, font=dict(size=14)),
            dict(text="<b>Accuracy</b>", x=0.54, xref="paper", xanchor="left", y=1.08,
                 yref="paper", showarrow=False, font=dict(size=14)),
        ],
    )
    return fig

