"""Image grids (cnnlab.charts.image_grid_figure): captions fit under their own tile."""

from __future__ import annotations

import numpy as np
import pytest

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


def phone_scale(cols: int, tile_px: int, side: int = 28) -> float:
    """Screen pixels per image pixel when the grid shrinks to a phone's chart width."""
    pad = max(2, side // 7)
    return min(tile_px / side, charts.PHONE_PX / (cols * (side + pad) + pad))


def picture(fig) -> np.ndarray:
    """The grid's mosaic, decoded from the figure's PNG."""
    import base64
    import io

    from PIL import Image

    uri = fig.data[0].source
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def test_the_grid_is_sent_as_one_png_of_its_pixels() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 28, 28, 1), dtype=np.uint8)
    fig = charts.image_grid_figure(images, list("abcdef"), cols=3)
    assert fig.data[0].z is None  # no raw pixels to encode on every run
    got = picture(fig)
    assert got.shape[-1] == 4 and (got[4:32, 4:32, 0] == images[0, ..., 0]).all()
    assert (got[4:32, 4:32, 3] == 255).all() and got[0, 0, 3] == 0  # transparent gaps


def test_grid_captions_fit_their_tiles_and_their_band_on_a_phone_too() -> None:
    images = np.zeros((24, 28, 28, 1), np.uint8)
    texts = [f"✓ {name} 99%" for name in FASHION] + [
        f"{a} → {b} 87%" for a, b in zip(FASHION, FASHION[::-1], strict=True)] + ["x"] * 4
    for cols, tile_px in ((5, 72), (6, 72), (10, 56), (5, 40)):
        fig = charts.image_grid_figure(images, texts, cols=cols, tile_px=tile_px)
        notes = fig.layout.annotations
        assert [a.text.replace("<br>", " ") for a in notes] == texts
        for scale in (tile_px / 28, phone_scale(cols, tile_px)):  # wide window, phone
            # No caption runs into its neighbour, but for a single word wider than a tile.
            for a in notes:
                for line in a.text.split("<br>"):
                    assert len(line) * charts.GLYPH_PX <= 32 * scale or " " not in line, line
            # The band under a row holds the longest caption: the next row starts below it.
            lines = max(a.text.count("<br>") + 1 for a in notes)
            rows = -(-len(texts) // cols)
            row_h = (picture(fig).shape[0] - 4) / rows
            assert notes[0].y + lines * charts.LINE_PX / scale <= 4 + row_h
        assert fig.layout.height == int(rows * row_h * tile_px / 28) + 20
    # Wide, five across: the longest fashion caption takes two lines, not more.
    fig = charts.image_grid_figure(images[:10], texts[:10], cols=5)
    assert max(a.text.count("<br>") + 1 for a in fig.layout.annotations) == 2


def test_short_captions_stay_on_one_line() -> None:
    images = np.zeros((10, 28, 28, 1), np.uint8)
    fig = charts.image_grid_figure(images, [f"✗ {d} 73%" for d in range(10)], cols=5)
    assert all("<br>" not in a.text for a in fig.layout.annotations)
    assert picture(fig).shape[0] == 4 + 2 * (28 + 28 // 2)  # pad + two rows, usual band
    # captions are escaped, not read as Plotly HTML
    fig = charts.image_grid_figure(images[:1], ["<b>x</b>"], cols=1)
    assert fig.layout.annotations[0].text == "&lt;b&gt;x&lt;/b&gt;"


def test_fewer_images_than_columns_leave_no_empty_columns() -> None:
    images = np.zeros((3, 28, 28, 1), np.uint8)
    fig = charts.image_grid_figure(images, ["a", "b", "c"], cols=charts.CAPTIONED_COLS)
    assert picture(fig).shape[1] == 3 * (28 + 4) + 4  # three across, not six


@pytest.mark.parametrize("channels", [1, 3])
def test_pixel_counts_count_every_value_per_channel_across_chunks(
        channels: int, monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(1).integers(0, 256, (9, 5, 4, channels), dtype=np.uint8)
    x[0, 0, 0] = 0
    x[-1, -1, -1] = 255
    expected = np.array([[np.count_nonzero(x[..., i] == v) for v in range(256)]
                         for i in range(channels)])
    monkeypatch.setattr(charts, "PIXEL_CHUNK", 7)  # chunks that end mid-image
    counts = charts.pixel_counts(x)
    assert counts.shape == (channels, 256) and counts.dtype == np.int64
    assert (counts == expected).all() and counts.sum() == x.size


def test_pixel_counts_never_hold_an_int64_copy_of_every_pixel() -> None:
    import tracemalloc

    x = np.zeros((4_000_000, 1, 1, 1), np.uint8)  # an int64 copy of it would be 32 MB
    tracemalloc.start()
    try:
        counts = charts.pixel_counts(x)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert counts[0, 0] == x.size
    assert peak < 2 * 8 * charts.PIXEL_CHUNK, peak  # one chunk's copy, not all of them
