"""Canvas / upload preprocessing: unit checks and the real-MNIST round trip."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import has_real_mnist
from PIL import Image, ImageDraw

from cnnlab.data import drawn_digits
from cnnlab.data.drawn_digits import paste_on_canvas
from cnnlab.data.input_steps import MARK, canvas_steps, enlarged
from cnnlab.data.preprocess import (
    DIGIT_BOX,
    INK_THRESHOLD,
    canvas_to_input,
    image_to_input,
    ink_map,
    naive_input,
    trace_canvas,
)

CANVAS = 280


def blank(mode: str) -> Image.Image:
    """An empty 280×280 RGBA canvas in one of the three conventions."""
    colour = {"white_on_black": (0, 0, 0, 255), "black_on_white": (255, 255, 255, 255),
              "transparent": (0, 0, 0, 0)}[mode]
    return Image.new("RGBA", (CANVAS, CANVAS), colour)


def ink_colour(mode: str) -> tuple[int, int, int, int]:
    return {"white_on_black": (255, 255, 255, 255), "black_on_white": (0, 0, 0, 255),
            "transparent": (40, 90, 200, 255)}[mode]


def draw_seven(mode: str, offset: tuple[int, int] = (0, 0), size: float = 1.0) -> np.ndarray:
    """A stroked '7' somewhere on the canvas."""
    img = blank(mode)
    d = ImageDraw.Draw(img)
    ox, oy = offset
    pts = [(60, 50), (200, 50), (110, 230)]
    pts = [(ox + 60 + (x - 60) * size, oy + 50 + (y - 50) * size) for x, y in pts]
    d.line(pts, fill=ink_colour(mode), width=max(3, round(18 * size)), joint="curve")
    return np.asarray(img)


MODES = ["white_on_black", "black_on_white", "transparent"]


@pytest.mark.parametrize("mode", MODES)
def test_empty_canvas_gives_none(mode: str) -> None:
    assert canvas_to_input(np.asarray(blank(mode))) is None


@pytest.mark.parametrize("mode", MODES)
def test_one_dot_gives_none(mode: str) -> None:
    img = blank(mode)
    ImageDraw.Draw(img).ellipse([130, 130, 150, 150], fill=ink_colour(mode))  # one brush click
    assert canvas_to_input(np.asarray(img)) is None
    img = blank(mode)
    ImageDraw.Draw(img).point([(10, 10), (11, 10)], fill=ink_colour(mode))  # a speck
    assert canvas_to_input(np.asarray(img)) is None


def test_thin_one_is_a_digit_not_a_dot() -> None:
    img = blank("white_on_black")
    ImageDraw.Draw(img).line([(140, 40), (140, 240)], fill=(255, 255, 255, 255), width=20)
    x = canvas_to_input(np.asarray(img))
    assert x is not None
    ys, xs = np.nonzero(x[..., 0] > 0.2)
    assert ys.max() - ys.min() + 1 == 20  # longest side scaled to 20 px


@pytest.mark.parametrize("mode", MODES)
def test_output_shape_range_and_centre_of_mass(mode: str) -> None:
    x = canvas_to_input(draw_seven(mode, offset=(-40, 20), size=0.6))
    assert x is not None and x.shape == (28, 28, 1) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() == pytest.approx(1.0)
    g = x[..., 0]
    ys, xs = np.indices(g.shape)
    assert (ys * g).sum() / g.sum() == pytest.approx(14.0, abs=0.5)
    assert (xs * g).sum() / g.sum() == pytest.approx(14.0, abs=0.5)
    assert g.sum() == pytest.approx(
        canvas_to_input(draw_seven("white_on_black"))[..., 0].sum(), rel=0.05
    )  # all the ink stays inside the frame


def test_colour_conventions_agree_and_position_does_not_matter() -> None:
    ref = canvas_to_input(draw_seven("white_on_black"))
    for mode in MODES:
        for offset, size in [((0, 0), 1.0), ((-50, -40), 0.5), ((60, 30), 0.5)]:
            x = canvas_to_input(draw_seven(mode, offset, size))
            assert np.abs(x - ref).mean() < 0.08, (mode, offset, size)


def test_other_targets() -> None:
    x = canvas_to_input(draw_seven("white_on_black"), target=(32, 32, 3))
    assert x.shape == (32, 32, 3) and np.allclose(x[..., 0], x[..., 2])


def test_ink_map_rejects_odd_shapes() -> None:
    with pytest.raises(ValueError, match="Expected an image"):
        ink_map(np.zeros((4, 4, 5)))


def test_image_to_input_colour_resizes_and_centre_crops() -> None:
    arr = np.zeros((48, 96, 3), np.uint8)
    arr[:, 24:72] = (255, 0, 0)  # red square in the middle, blue-ish sides cut off
    arr[:, :24] = (0, 0, 255)
    arr[:, 72:] = (0, 0, 255)
    x = image_to_input(Image.fromarray(arr), (32, 32, 3))
    assert x.shape == (32, 32, 3) and x.dtype == np.float32
    assert x[..., 0].mean() > 0.95 and x[..., 2].mean() < 0.05
    gray = image_to_input(Image.fromarray(arr[..., 0]), (32, 32, 3))  # grey upload → 3 channels
    assert gray.shape == (32, 32, 3)


def test_image_to_input_grey_keeps_target_sized_digit_and_inverts_dark_on_light() -> None:
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255
    same = image_to_input(Image.fromarray(digit), (28, 28, 1))
    assert np.allclose(same[..., 0], digit / 255.0)
    inverted = image_to_input(Image.fromarray(255 - digit), (28, 28, 1))
    assert np.allclose(inverted[..., 0], digit / 255.0)
    photo = Image.fromarray(255 - digit).resize((300, 200))  # large dark-on-light "photo"
    x = image_to_input(photo.convert("RGB"), (28, 28, 1))
    assert x.shape == (28, 28, 1) and x[14, 14, 0] > 0.5 and x[0, 0, 0] == 0


def test_image_to_input_flat_picture_is_refused() -> None:
    with pytest.raises(ValueError, match="one flat colour"):
        image_to_input(Image.new("RGB", (100, 100), (128, 128, 128)), (28, 28, 1))


# --- the steps' pictures (Draw & predict) and the naive resize beside them ---


def as_rgb(gray: np.ndarray) -> np.ndarray:
    """A float picture in [0, 1] as the uint8 RGB the step pictures hold."""
    tile = np.clip(np.round(gray.reshape(gray.shape[:2]) * 255), 0, 255).astype(np.uint8)
    return np.repeat(tile[..., None], 3, axis=-1)


def test_each_step_picture_is_what_canvas_to_input_computed() -> None:
    rgba = draw_seven("white_on_black", offset=(-40, 20), size=0.6)
    trace = trace_canvas(rgba)
    assert np.array_equal(trace.input, canvas_to_input(rgba))  # one code path
    steps = canvas_steps(trace)
    assert [s.title for s in steps] == ["Ink map", "Crop box", f"Longest side {DIGIT_BOX} px",
                                       "Centre of mass → (14, 14)", "The 28×28 input"]
    ink = ink_map(rgba)
    assert np.array_equal(steps[0].image, as_rgb(ink))

    # The crop box: the ink's bounds, outlined on the ink map, the rest untouched.
    ys, xs = np.nonzero(ink > INK_THRESHOLD)
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    assert trace.framing.box == (top, bottom, left, right)
    boxed = steps[1].image
    assert (boxed[top, left:right] == MARK).all() and (boxed[bottom - 1, left:right] == MARK).all()
    assert (boxed[top:bottom, left] == MARK).all() and (boxed[top:bottom, right - 1] == MARK).all()
    outline = np.zeros(ink.shape, bool)
    outline[top:bottom, left:right] = True
    outline[top + 3 : bottom - 3, left + 3 : right - 3] = False
    assert np.array_equal(boxed[~outline], steps[0].image[~outline])
    assert f"{right - left}×{bottom - top} px" in steps[1].caption

    # Longest side 20 px: the scaled crop, pasted unchanged into the centred frame.
    scaled, frame = trace.framing.scaled, trace.framing.frame
    assert max(scaled.shape) == DIGIT_BOX and np.array_equal(steps[2].image, as_rgb(scaled))
    assert steps[2].extent == scaled.shape[1] / 28  # shown at the frame's scale
    y0, x0 = trace.framing.offset
    assert np.array_equal(frame[y0 : y0 + scaled.shape[0], x0 : x0 + scaled.shape[1]], scaled)
    assert frame.sum() == pytest.approx(scaled.sum())

    # Centre of mass at (14, 14), marked in red; every other pixel is the frame.
    ys, xs = np.indices(frame.shape)
    cy, cx = (ys * frame).sum() / frame.sum(), (xs * frame).sum() / frame.sum()
    assert (cy, cx) == pytest.approx((14, 14), abs=0.5)
    centred = steps[3].image
    assert (centred[round(cy), round(cx)] == MARK).all()
    rest = np.ones(frame.shape, bool)
    rest[round(cy), round(cx)] = False
    assert np.array_equal(centred[rest], as_rgb(frame)[rest])

    assert np.array_equal(steps[4].image, as_rgb(trace.input))
    assert np.array_equal(trace.input[..., 0], frame)  # a 28×28 model takes the frame as is


def test_no_digit_has_only_the_ink_map_step() -> None:
    trace = trace_canvas(np.asarray(blank("white_on_black")))
    assert trace.framing is None and trace.input is None
    assert [s.title for s in canvas_steps(trace)] == ["Ink map"]


def test_steps_follow_other_targets() -> None:
    steps = canvas_steps(trace_canvas(draw_seven("white_on_black"), target=(32, 32, 3)))
    assert steps[2].title == "Longest side 23 px" and steps[3].title.endswith("(16, 16)")
    assert steps[4].image.shape == (32, 32, 3)


def test_enlarged_keeps_square_pixels() -> None:
    tile = np.zeros((20, 10, 3), np.uint8)
    tile[0, 0] = 255
    big = enlarged(tile, 150)
    assert big.shape == (300, 150, 3)
    assert (big[:15, :15] == 255).all() and (big[15:, 15:] == 0).all()


def test_naive_input_is_the_whole_canvas_resized() -> None:
    rgba = draw_seven("black_on_white", offset=(-50, -40), size=0.5)  # small, top left
    x = naive_input(rgba)
    assert x.shape == (28, 28, 1) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    expected = np.asarray(Image.fromarray(ink_map(rgba), mode="F").resize(
        (28, 28), Image.Resampling.LANCZOS))
    assert np.allclose(x[..., 0], np.clip(expected, 0, 1), atol=1e-6)
    assert np.abs(x - canvas_to_input(rgba)).mean() > 0.05  # not the MNIST-style input
    ys, xs = np.indices((28, 28))
    g = x[..., 0]
    assert (ys * g).sum() / g.sum() < 10 and (xs * g).sum() / g.sum() < 10  # not centred
    assert naive_input(rgba, (32, 32, 3)).shape == (32, 32, 3)


def test_drawn_digits_are_reproducible() -> None:
    digits = np.random.default_rng(1).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    a = list(drawn_digits.drawn_digits(digits, seed=5))
    b = list(drawn_digits.drawn_digits(digits, seed=5))
    assert len(a) == 3 and all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert a[0].shape == (280, 280, 4) and a[0].dtype == np.uint8
    assert not np.array_equal(a[0], next(drawn_digits.drawn_digits(digits, seed=6)))
    with pytest.raises(ValueError, match="mode='sepia' is not a canvas convention"):
        paste_on_canvas(digits[0, ..., 0], np.random.default_rng(0), "sepia")


def test_the_stored_measurement_is_read_or_none(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    assert drawn_digits.load_measured(path) is None
    path.write_text('{"n": 10, "model": "m", "mnist_style_accuracy": 0.9, '
                    '"naive_accuracy": 0.4, "original_accuracy": 0.95}')
    m = drawn_digits.load_measured(path)
    assert m is not None and (m.n, m.mnist_style, m.naive) == (10, 0.9, 0.4)
    path.write_text('{"n": 10}')
    assert drawn_digits.load_measured(path) is None


# --- real MNIST: pasting digits onto a big canvas and preprocessing back keeps accuracy ---


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    folder = Path(os.environ["KERAS_HOME"]) / "datasets" / "mnist"
    return (_read_idx(folder / "train-images-idx3-ubyte.gz"),
            _read_idx(folder / "train-labels-idx1-ubyte.gz"),
            _read_idx(folder / "t10k-images-idx3-ubyte.gz"),
            _read_idx(folder / "t10k-labels-idx1-ubyte.gz"))


@pytest.fixture(scope="module")
def mnist_model():
    if not has_real_mnist():
        pytest.skip("the real MNIST IDX files are not under KERAS_HOME")
    import keras

    x_train, y_train, x_test, y_test = _mnist()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train[:8000, ..., None], y_train[:8000], epochs=2, batch_size=64, verbose=0)
    return model, x_test[:500], y_test[:500]


@pytest.mark.slow
def test_pasted_mnist_digits_keep_accuracy(mnist_model) -> None:
    model, x_test, y_test = mnist_model
    rng = np.random.default_rng(0)

    def accuracy(x01: np.ndarray) -> float:
        probs = np.asarray(model(x01 * 255.0, training=False))
        return float((probs.argmax(1) == y_test).mean())

    raw = accuracy(x_test[..., None].astype(np.float32) / 255.0)
    drops = {}
    for mode in MODES:
        inputs = [canvas_to_input(paste_on_canvas(d, rng, mode)) for d in x_test]
        assert sum(x is None for x in inputs) == 0, "a real digit was taken for a dot"
        drops[mode] = raw - accuracy(np.stack(inputs))
    print(f"\nraw accuracy {raw:.3f}; drop after paste+preprocess: "
          + ", ".join(f"{m} {d * 100:+.1f} pts" for m, d in drops.items()))
    assert raw > 0.9
    assert all(d <= 0.02 for d in drops.values()), drops
