"""cnnlab.data.datasets: real loaders, the bundled sample, splits, zip uploads, the CLI listing."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, has_real_mnist
from PIL import Image

from cnnlab.data import datasets
from cnnlab.data.datasets import BadUpload, DatasetUnavailable

MNIST_TRAIN = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
needs_mnist = pytest.mark.skipif(not has_real_mnist(), reason="MNIST IDX files absent")


def has_fashion() -> bool:
    home = os.environ.get("KERAS_HOME")
    path = Path(home or "/nonexistent") / "datasets/fashion-mnist/train-images-idx3-ubyte.gz"
    return path.is_file()


# ---------------------------------------------------------------------------- real loaders


@needs_mnist
def test_mnist_matches_the_published_counts():
    ds = datasets.load("mnist")
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (10000, 28, 28, 1) and ds.x_test.dtype == np.uint8
    assert np.bincount(ds.y_train).tolist() == MNIST_TRAIN
    assert np.bincount(ds.y_test).tolist() == MNIST_TEST
    assert ds.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert ds.info.class_names == tuple("0123456789")
    assert datasets.default_name() == "mnist"


@pytest.mark.skipif(not has_fashion(), reason="Fashion-MNIST files absent")
def test_fashion_mnist_has_6000_per_class():
    ds = datasets.load("fashion_mnist")
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_train.dtype == np.uint8
    assert np.bincount(ds.y_train).tolist() == [6000] * 10
    assert np.bincount(ds.y_test).tolist() == [1000] * 10


def test_default_is_the_sample_without_mnist(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert datasets.default_name() == "mnist_sample"


def test_unknown_name_is_unavailable():
    with pytest.raises(DatasetUnavailable, match="Unknown data set 'nope'"):
        datasets.load("nope")


# ---------------------------------------------------------------------------- CIFAR-10


def cifar_batches(n: int = 4) -> dict[str, dict]:
    """Batches in the real CIFAR-10 python format with known pixels and labels.

    Image i of a batch: red plane = (pixel index) % 256, green = 100 + i, blue = 200.
    """
    out = {}
    for b, name in enumerate(datasets.CIFAR10_BATCHES):
        data = np.empty((n, 3072), np.uint8)
        for i in range(n):
            data[i, :1024] = np.arange(1024) % 256
            data[i, 1024:2048] = 100 + i
            data[i, 2048:] = 200
        labels = [(b + i) % 10 for i in range(n)]
        out[name] = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                     b"filenames": [b"x.png"] * n}
    return out


def check_cifar(ds, n: int = 4) -> None:
    assert ds.x_train.shape == (5 * n, 32, 32, 3) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (n, 32, 32, 3) and ds.x_test.dtype == np.uint8
    assert ds.y_train.shape == (5 * n,) and ds.y_test.shape == (n,)
    # channel order: the red plane carries the pixel index, row-major
    r, c = 3, 17
    assert ds.x_train[0, r, c, 0] == (r * 32 + c) % 256
    assert ds.x_train[2, r, c].tolist() == [(r * 32 + c) % 256, 102, 200]
    expected = np.bincount([(b + i) % 10 for b in range(5) for i in range(n)], minlength=10)
    assert np.bincount(ds.y_train, minlength=10).tolist() == expected.tolist()
    assert ds.info.class_names[0] == "airplane"


def write_cifar_cache(keras_home: Path) -> None:
    """The tiny CIFAR-10 batches where Keras extracts its download under ``keras_home``."""
    folder = keras_home.joinpath(*datasets.CIFAR10_DIR)
    folder.mkdir(parents=True)
    for name, batch in cifar_batches().items():
        (folder / name).write_bytes(pickle.dumps(batch))


def test_cifar10_reads_the_extracted_keras_cache(tmp_path, monkeypatch):
    write_cifar_cache(tmp_path)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(datasets, "_online", lambda host: False)
    assert datasets.available()["cifar10"]
    check_cifar(datasets.load("cifar10"))


def test_cifar10_extracts_a_cached_archive_with_keras_get_file(tmp_path, monkeypatch):
    """The online path: Keras' get_file (as in cifar10.load_data) finds the archive, extracts."""
    from keras.src.utils import file_utils

    archive = tmp_path / "datasets" / "cifar-10-batches-py-target_archive"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        for name, batch in cifar_batches().items():
            raw = pickle.dumps(batch)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    # Our tiny archive cannot match the real archive's sha256, which get_file checks.
    monkeypatch.setattr(file_utils, "validate_file", lambda *a, **k: True)
    monkeypatch.setattr(datasets, "_online", lambda host: False)
    check_cifar(datasets.load("cifar10"))
    assert (tmp_path.joinpath(*datasets.CIFAR10_DIR) / "test_batch").is_file()


def test_cifar10_offline_without_cache_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(datasets, "_online", lambda host: False)
    start = time.monotonic()
    with pytest.raises(DatasetUnavailable) as err:
        datasets.load("cifar10")
    assert time.monotonic() - start < 1.0
    msg = str(err.value)
    assert "cifar-10-python.tar.gz" in msg and str(tmp_path) in msg
    assert not datasets.available()["cifar10"]


def test_mnist_offline_without_cache_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(datasets, "_online", lambda host: False)
    with pytest.raises(DatasetUnavailable, match="train-images-idx3-ubyte.gz is not in"):
        datasets.load("mnist")


# ---------------------------------------------------------------------------- bundled sample


def test_sample_is_a_stratified_uint8_mnist_subset():
    assert datasets.SAMPLE_PATH.is_file() and datasets.SAMPLE_PATH.stat().st_size < 3_000_000
    ds = datasets.load("mnist_sample")
    assert ds.x_train.shape == (6000, 28, 28, 1) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (1000, 28, 28, 1) and ds.x_test.dtype == np.uint8
    # stratified: each class within one image of its MNIST share
    expected = np.array(MNIST_TRAIN) / 60000 * 6000
    assert np.abs(np.bincount(ds.y_train) - expected).max() <= 1
    assert np.abs(np.bincount(ds.y_test) - np.array(MNIST_TEST) / 10).max() <= 1


@needs_mnist
def test_sample_images_come_from_the_real_mnist():
    real = datasets.load("mnist")
    with np.load(datasets.SAMPLE_PATH) as z:
        tr, te = z["train_index"], z["test_index"]
        assert len(set(tr.tolist())) == 6000
        np.testing.assert_array_equal(z["x_train"], real.x_train[tr])
        np.testing.assert_array_equal(z["y_train"], real.y_train[tr])
        np.testing.assert_array_equal(z["x_test"], real.x_test[te])
        np.testing.assert_array_equal(z["y_test"], real.y_test[te])


# ---------------------------------------------------------------------------- splits


def test_train_val_split_is_stratified_deterministic_and_disjoint():
    y = np.repeat(np.arange(3), [500, 300, 200])
    x = np.arange(len(y))  # x holds each sample's index, to trace where it went
    xt, yt, xv, yv = datasets.train_val_split(x, y, val_fraction=0.1, seed=42)
    assert np.bincount(yv).tolist() == [50, 30, 20]
    assert np.bincount(yt).tolist() == [450, 270, 180]
    assert set(xt.tolist()).isdisjoint(xv.tolist())
    assert sorted(np.concatenate([xt, xv]).tolist()) == list(range(len(y)))
    assert (y[xt] == yt).all() and (y[xv] == yv).all()
    again = datasets.train_val_split(x, y, val_fraction=0.1, seed=42)
    assert all((a == b).all() for a, b in zip(again, (xt, yt, xv, yv), strict=True))
    other = datasets.train_val_split(x, y, val_fraction=0.1, seed=7)
    assert not (other[2] == xv).all()
    assert datasets.val_count(y, 0.1) == len(yv)


def test_subset_balances_classes_and_keeps_order():
    ds = datasets.load("mnist_sample")
    small = datasets.subset(ds, 100)
    assert len(small.y_train) == 100
    assert np.bincount(small.y_train).tolist() == [10] * 10
    assert small.x_test is ds.x_test


# ---------------------------------------------------------------------------- zip uploads


def png(size=(20, 10), mode="RGB", color=(255, 0, 0)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def make_zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def good_files() -> dict[str, bytes]:
    jpg = io.BytesIO()
    Image.new("RGB", (300, 200), (0, 128, 255)).save(jpg, format="JPEG")
    return {
        "pets/train/cats/1.png": png((20, 10), "RGB", (255, 0, 0)),
        "pets/train/cats/2.png": png((64, 64), "L", 30),
        "pets/test/cats/3.png": png((40, 40), "RGBA", (0, 0, 0, 0)),  # transparent → white
        "pets/train/dogs/1.jpg": jpg.getvalue(),
        "pets/train/dogs/2.png": png((8, 8), "P", 3),
        "pets/test/dogs/3.gif": png((16, 32), "1", 1),
        "__MACOSX/pets/._1.png": b"junk",
        "pets/.DS_Store": b"junk",
    }


@pytest.fixture
def quiet_dir(tmp_path, monkeypatch):
    """Run in an empty cwd; afterwards assert nothing appeared there or beside it."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    before = sorted(p.name for p in tmp_path.parent.iterdir())
    yield work
    assert list(work.iterdir()) == []
    assert sorted(p.name for p in tmp_path.parent.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["cwd"]


def test_zip_mixed_sizes_and_modes_are_converted(quiet_dir):
    ds = datasets.load_zip(make_zip(good_files()), (24, 32), grayscale=False, name="folder:p.zip")
    assert ds.info.name == "folder:p.zip"
    assert ds.info.class_names == ("cats", "dogs")
    assert ds.info.image_shape == (24, 32, 3)
    assert ds.x_train.shape[1:] == (24, 32, 3) and ds.x_train.dtype == np.uint8
    assert len(ds.y_train) + len(ds.y_test) == 6
    assert sorted(np.bincount(ds.y_test).tolist()) == [1, 1]  # the test part: one per class
    assert ds.info.test_source == "pets/test/" and ds.info.skipped_files == 2
    all_x = np.concatenate([ds.x_train, ds.x_test])
    assert any((img == [255, 255, 255]).all() for img in all_x)  # the transparent one
    assert any((img[..., 0] > 200).all() and (img[..., 1] < 50).all() for img in all_x)
    gray = datasets.load_zip(make_zip(good_files()), (16, 16), grayscale=True)
    assert gray.x_train.shape[1:] == (16, 16, 1) and gray.info.image_shape == (16, 16, 1)


BAD_CASES = {
    "not a zip": (b"this is plainly not a zip archive", "is not a zip file"),
    "dot-dot": ({"cats/1.png": png(), "../evil.png": png()}, "points outside the zip"),
    "absolute": ({"cats/1.png": png(), "/etc/evil.png": png()}, "is an absolute path"),
    "non-image": ({**{"a/1.png": png(), "a/2.png": png(), "b/1.png": png(), "b/2.png": png()},
                   "a/readme.txt": b"hello"}, "a/readme.txt is not an image"),
    "corrupt": ({"a/1.png": png(), "a/2.png": b"\x89PNG broken", "b/1.png": png(),
                 "b/2.png": png()}, "a/2.png is not a readable image"),
    "one class": ({"cats/1.png": png(), "cats/2.png": png()}, "only the class 'cats'"),
    "tiny class": ({"cats/1.png": png(), "cats/2.png": png(), "dogs/1.png": png()},
                   "Class 'dogs' has 1 image"),
    "no folder": ({"1.png": png(), "cats/2.png": png()}, "1.png is not in a class folder"),
    "empty": ({}, "no images"),
}


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_zip_is_refused_with_a_clear_message(case, quiet_dir):
    given, expected = BAD_CASES[case]
    data = given if isinstance(given, bytes) else make_zip(given)
    with pytest.raises(BadUpload) as err:
        datasets.load_zip(data, (28, 28), grayscale=True)
    assert expected in str(err.value)
    assert not (quiet_dir.parent.parent / "evil.png").exists()


def test_zip_limits_files_bytes_pixels_and_size(quiet_dir, monkeypatch):
    files = {f"c{k}/{i}.png": png() for k in range(2) for i in range(3)}
    monkeypatch.setattr(datasets, "MAX_FILES", 5)
    with pytest.raises(BadUpload, match="holds 6 entries; at most 5"):
        datasets.load_zip(make_zip(files), (28, 28), True)
    monkeypatch.setattr(datasets, "MAX_FILES", 20_000)
    # a zip bomb: 50 MB of zeros compresses to ~50 KB
    bomb = make_zip({**files, "c0/big.png": bytes(50_000_000)})
    assert len(bomb) < 1_000_000
    monkeypatch.setattr(datasets, "MAX_UNCOMPRESSED_BYTES", 10_000_000)
    with pytest.raises(BadUpload, match="unpacks to 50,"):
        datasets.load_zip(bomb, (28, 28), True)
    # a pixel bomb: 6000 x 6000 one-bit PNG, tiny on disk, 36 M pixels when decoded
    big = io.BytesIO()
    Image.new("1", (6000, 6000)).save(big, format="PNG")
    with pytest.raises(BadUpload, match="c0/huge.png is 6000x6000 pixels"):
        datasets.load_zip(make_zip({**files, "c0/huge.png": big.getvalue()}), (28, 28), True)
    with pytest.raises(BadUpload, match="Image size 4x4 is not allowed"):
        datasets.load_zip(make_zip(files), (4, 4), True)


# ---------------------------------------------------------------------------- CLI


def test_cli_datasets_json():
    out = subprocess.run(
        [sys.executable, "-m", "cnnlab", "datasets", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )
    payload = json.loads(out.stdout)
    rows = {row["name"]: row for row in payload["datasets"]}
    assert set(rows) == {"mnist", "fashion_mnist", "cifar10", "mnist_sample"}
    assert rows["cifar10"]["classes"][0] == "airplane" and len(rows["cifar10"]["classes"]) == 10
    assert rows["cifar10"]["image_shape"] == [32, 32, 3]
    assert rows["mnist_sample"]["available"] is True
    assert rows["mnist"]["available"] is has_real_mnist()


# ---------------------------------------------------------------------------- Keras' mnist.npz


def write_idx(path: Path, array: np.ndarray) -> None:
    """``array`` (uint8) as a gzipped IDX file, header and all, like the published MNIST."""
    import gzip

    header = bytes([0, 0, 8, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def fake_mnist(n_train: int, n_test: int, ink: int) -> dict[str, np.ndarray]:
    """MNIST-shaped arrays whose every pixel is ``ink``, so their source is recognisable."""
    return {
        "x_train": np.full((n_train, 28, 28), ink, np.uint8),
        "y_train": (np.arange(n_train) % 10).astype(np.uint8),
        "x_test": np.full((n_test, 28, 28), ink, np.uint8),
        "y_test": (np.arange(n_test) % 10).astype(np.uint8),
    }


def write_mnist_idx(home: Path, arrays: dict[str, np.ndarray]) -> None:
    folder = home / "datasets" / "mnist"
    for fname, key in zip(datasets.IDX_FILES, ("x_train", "y_train", "x_test", "y_test"),
                          strict=True):
        write_idx(folder / fname, arrays[key])


class Recorder:
    """A progress callback that keeps every (fraction, text) it hears."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []

    def __call__(self, fraction: float, text: str) -> None:
        self.calls.append((fraction, text))

    def check(self, min_calls: int = 2) -> None:
        """Fractions rise (never fall), stay in [0, 1], end at exactly 1.0; texts are short."""
        fractions = [f for f, _ in self.calls]
        assert len(fractions) >= min_calls, self.calls
        assert all(0.0 <= f <= 1.0 for f in fractions)
        assert fractions == sorted(fractions) and fractions[-1] == 1.0
        assert all(text and len(text) < 100 for _, text in self.calls)


def test_mnist_npz_in_the_keras_cache_is_preferred_over_idx(tmp_path, monkeypatch):
    """A Keras user's cache (what keras.datasets.mnist.load_data() writes) comes first."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(datasets, "_online", lambda host: False)
    assert not datasets.available()["mnist"] and datasets.default_name() == "mnist_sample"

    npz = tmp_path / "datasets" / "mnist.npz"
    npz.parent.mkdir(parents=True)
    np.savez_compressed(npz, **fake_mnist(30, 10, ink=7))
    assert datasets.mnist_npz_path() == npz
    assert datasets.available()["mnist"] and datasets.default_name() == "mnist"

    write_mnist_idx(tmp_path, fake_mnist(20, 5, ink=200))
    progress = Recorder()
    ds = datasets.load("mnist", progress=progress)
    assert ds.x_train.shape == (30, 28, 28, 1) and ds.x_test.shape == (10, 28, 28, 1)
    assert ds.x_train.dtype == np.uint8 and (ds.x_train == 7).all()  # the npz, not the IDX
    assert ds.y_train[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert ds.info is datasets.REGISTRY["mnist"]
    progress.check(min_calls=4)

    npz.unlink()  # without it, the IDX files
    progress = Recorder()
    ds = datasets.load("mnist", progress=progress)
    assert ds.x_train.shape == (20, 28, 28, 1) and (ds.x_train == 200).all()
    assert ds.y_test.tolist() == [0, 1, 2, 3, 4]
    progress.check(min_calls=4)
    assert any("train-images-idx3-ubyte.gz" in text for _, text in progress.calls)


def test_pickled_npz_is_refused_without_unpickling(tmp_path, monkeypatch):
    """allow_pickle=False: an object array in mnist.npz is never unpickled, only refused."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    ran = tmp_path / "pickle-ran"
    arrays = fake_mnist(4, 2, ink=1)
    arrays["x_train"] = np.array([Boom(str(ran))], dtype=object)
    npz = tmp_path / "datasets" / "mnist.npz"
    npz.parent.mkdir(parents=True)
    np.savez(npz, **arrays)
    with pytest.raises(DatasetUnavailable, match="is not a usable MNIST file: Object arrays"):
        datasets.load("mnist")
    assert not ran.exists()


class Boom:
    """Unpickling this touches a file: proof that a loader ran pickled code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _bad_npz_cases() -> dict[str, tuple[object, str]]:
    good = fake_mnist(4, 2, ink=1)
    return {
        "not a zip": (b"not an npz at all", "not an .npz (zip) archive"),
        "missing key": ({k: v for k, v in good.items() if k != "y_test"}, "it has no y_test"),
        "float pixels": ({**good, "x_train": good["x_train"].astype(np.float32)},
                         "x_train is float32 and y_train is uint8, not uint8"),
        "wrong size": ({**good, "x_test": np.zeros((2, 32, 32), np.uint8)},
                       "x_test has shape (2, 32, 32)"),
        "label count": ({**good, "y_train": np.zeros(3, np.uint8)}, "y_train (3,)"),
        "label 10": ({**good, "y_test": np.array([1, 10], np.uint8)}, "y_test has the label 10"),
    }


@pytest.mark.parametrize("case", list(_bad_npz_cases()))
def test_malformed_mnist_npz_names_the_problem(case, tmp_path, monkeypatch):
    given, expected = _bad_npz_cases()[case]
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    npz = tmp_path / "datasets" / "mnist.npz"
    npz.parent.mkdir(parents=True)
    if isinstance(given, bytes):
        npz.write_bytes(given)
    else:
        np.savez(npz, **given)
    with pytest.raises(DatasetUnavailable) as err:
        datasets.load("mnist")
    msg = str(err.value)
    assert expected in msg and str(npz) in msg
    assert "keras.datasets.mnist.load_data()" in msg and "delete it" in msg


# ---------------------------------------------------------------------------- progress


def test_zip_progress_rises_to_one(quiet_dir):
    files = {f"c{k}/{i}.png": png() for k in range(2) for i in range(150)}
    progress = Recorder()
    ds = datasets.load_zip(make_zip(files), (16, 16), True, progress=progress)
    assert len(ds.y_train) + len(ds.y_test) == 300
    progress.check(min_calls=50)  # every few images, not once at the end
    assert progress.calls[-1][1] == "Decoded 300 images in 2 classes"


def test_cifar_and_sample_progress_rise_to_one(tmp_path, monkeypatch):
    write_cifar_cache(tmp_path)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    progress = Recorder()
    datasets.load("cifar10", progress=progress)
    progress.check(min_calls=6)
    progress = Recorder()
    datasets.load("mnist_sample", progress=progress)
    progress.check(min_calls=1)


@pytest.fixture
def file_server(tmp_path):
    """A local HTTP server over ``tmp_path / "served"``: its base URL (ending in /)."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # no request lines in the test output
            pass

    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_a_first_download_shows_its_progress_and_lands_in_the_keras_cache(
        tmp_path, monkeypatch, file_server):
    served, url = file_server
    arrays = fake_mnist(3000, 500, ink=9)
    write_mnist_idx(served.parent / "origin", arrays)
    for fname in datasets.IDX_FILES:  # the published file names, at the origin's root
        (served / fname).write_bytes((served.parent / "origin/datasets/mnist" / fname)
                                     .read_bytes())
    home = tmp_path / "home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setattr(datasets, "MNIST_ORIGIN", url)
    monkeypatch.setattr(datasets, "_online", lambda host: True)
    monkeypatch.setattr(datasets, "DOWNLOAD_CHUNK", 256)  # many steps from small files
    progress = Recorder()
    ds = datasets.load("mnist", progress=progress)
    assert len(ds.y_train) == 3000 and int(ds.x_test.max()) == 9
    assert all((home / "datasets" / "mnist" / f).is_file() for f in datasets.IDX_FILES)
    downloads = [(f, t) for f, t in progress.calls if t.startswith("Downloading ")]
    first = [f for f, t in downloads if datasets.IDX_FILES[0] in t]
    assert len(first) > 3 and first == sorted(first) and first[-1] == 1.0
    assert " MB" in downloads[0][1]
    assert not list(home.rglob("*.part"))  # nothing half-written is left


def test_a_failed_download_leaves_no_file_and_says_what_to_do(tmp_path, monkeypatch,
                                                              file_server):
    _, url = file_server  # serves nothing: every file is a 404
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(datasets, "MNIST_ORIGIN", url)
    monkeypatch.setattr(datasets, "_online", lambda host: True)
    with pytest.raises(datasets.DatasetUnavailable, match="failed .*404.*put it in"):
        datasets.load("mnist")
    assert not [p for p in (tmp_path / "home").rglob("*") if p.is_file()]
