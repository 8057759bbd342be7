"""Image grids (cnnlab.charts.image_grid_figure): captions fit under their own tile."""

from __future__ import annotations

import numpy as np

from cnnlab import charts

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
           "Sneaker", "Bag", "Ankle boot"]


def test_caption_lines_break_at_spaces_to_the_width() -> None:
    chars = int(60 // charts.GLYPH_PX)
    lines = charts.caption_lines("✓ Ankle boot 99% and more words here", 60)
    assert " ".join(lines) == "✓ Ankle boot 99% and more words here"
    assert len(lines) > 1 and all(len(line) <= chars for line in lines)
    # a word longer than a line is kept whole, on a line of its own
    assert charts.caption_lines("a T-shirt/top→Sandal b", 40) == ["a", "T-shirt/top→Sandal", "b"]
    assert charts.caption_lines("", 40) == [""]


def test_grid_captions_fit_their_tiles_and_their_band() -> None:
    images = np.zeros((10, 28, 28, 1), np.uint8)
    texts = [f"✓ {name} 99%" for name in FASHION]
    for tile_px in (72, 40):  # two lines for the longest name; three on small tiles
        fig = charts.image_grid_figure(images, texts, cols=5, tile_px=tile_px)
        notes = fig.layout.annotations
        assert [a.text.replace("<br>", " ") for a in notes] == texts
        scale = tile_px / 28
        pitch_px = (28 + 4) * scale  # pad = 28 // 7
        # No caption runs into its neighbour, but for a single word wider than a tile.
        for a in notes:
            for line in a.text.split("<br>"):
                assert len(line) * charts.GLYPH_PX <= pitch_px or " " not in line, line
        lines = max(a.text.count("<br>") + 1 for a in notes)
        assert lines == (2 if tile_px == 72 else 3)
        # The band under a row holds the longest caption: row 2 starts below it.
        row_h = (fig.data[0].z.shape[0] - 4) / 2
        caption_bottom = notes[0].y + lines * charts.LINE_PX / scale
        assert caption_bottom <= 4 + row_h
        assert fig.layout.height == int(2 * row_h * scale) + 20


def test_short_captions_stay_on_one_line_in_the_usual_band() -> None:
    images = np.zeros((10, 28, 28, 1), np.uint8)
    fig = charts.image_grid_figure(images, [f"✗ {d} 73%" for d in range(10)], cols=10)
    assert all("<br>" not in a.text for a in fig.layout.annotations)
    assert fig.data[0].z.shape[0] == 4 + 28 + 28 // 2  # pad + one row + the default band
    # captions are escaped, not read as Plotly HTML
    fig = charts.image_grid_figure(images[:1], ["<b>x</b>"], cols=1)
    assert fig.layout.annotations[0].text == "&lt;b&gt;x&lt;/b&gt;"
