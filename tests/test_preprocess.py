"""Canvas / upload preprocessing: unit checks and the real-MNIST round trip."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import has_real_mnist
from PIL import Image, ImageDraw

from cnnlab.preprocess import canvas_to_input, image_to_input, ink_map

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


def paste_on_canvas(digit: np.ndarray, mode: str, rng: np.random.Generator) -> np.ndarray:
    """One 28×28 MNIST digit at a random scale and position on a 280×280 RGBA canvas."""
    side = int(rng.integers(110, 270))
    big = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC))
    y, x = (int(v) for v in rng.integers(0, CANVAS - side + 1, size=2))
    ink = np.zeros((CANVAS, CANVAS), np.uint8)
    ink[y : y + side, x : x + side] = big
    canvas = np.zeros((CANVAS, CANVAS, 4), np.uint8)
    if mode == "white_on_black":
        canvas[..., :3] = ink[..., None]
        canvas[..., 3] = 255
    elif mode == "black_on_white":
        canvas[..., :3] = 255 - ink[..., None]
        canvas[..., 3] = 255
    else:  # coloured strokes on a transparent background
        canvas[..., :3] = (30, 120, 220)
        canvas[..., 3] = ink
    return canvas


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


def test_pasted_mnist_digits_keep_accuracy(mnist_model) -> None:
    model, x_test, y_test = mnist_model
    rng = np.random.default_rng(0)

    def accuracy(x01: np.ndarray) -> float:
        probs = np.asarray(model(x01 * 255.0, training=False))
        return float((probs.argmax(1) == y_test).mean())

    raw = accuracy(x_test[..., None].astype(np.float32) / 255.0)
    drops = {}
    for mode in MODES:
        inputs = [canvas_to_input(paste_on_canvas(d, mode, rng)) for d in x_test]
        assert sum(x is None for x in inputs) == 0, "a real digit was taken for a dot"
        drops[mode] = raw - accuracy(np.stack(inputs))
    print(f"\nraw accuracy {raw:.3f}; drop after paste+preprocess: "
          + ", ".join(f"{m} {d * 100:+.1f} pts" for m, d in drops.items()))
    assert raw > 0.9
    assert all(d <= 0.02 for d in drops.values()), drops
