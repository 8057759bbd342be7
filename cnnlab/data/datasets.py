"""Image data sets: a small registry, real Keras-style loaders, a bundled sample, user zips.

Everything stays ``uint8`` of shape ``(n, h, w, c)`` in memory (CIFAR-10 train is about
150 MB this way instead of 600 MB as float32); models rescale inside. Keras is imported
only where a download is needed, so reading a cached data set costs no TensorFlow start-up.
Every loader takes an optional ``progress(fraction, text)`` callback for a progress bar.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import posixpath
import socket
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

SAMPLE_PATH = Path(__file__).resolve().parent / "mnist_sample.npz"

# Where Keras publishes the files it downloads; get_file() uses these as `origin`.
MNIST_ORIGIN = "https://storage.googleapis.com/cvdf-datasets/mnist/"
FASHION_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
CIFAR10_ORIGIN = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
# keras.datasets.cifar10.load_data() extracts its archive into this folder of the cache.
CIFAR10_DIR = ("datasets", "cifar-10-batches-py-target", "cifar-10-batches-py")
CIFAR10_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
# keras.datasets.mnist.load_data() downloads one file to <keras home>/datasets/mnist.npz.
MNIST_NPZ = ("datasets", "mnist.npz")
MNIST_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
IDX_CHUNK = 4 << 20  # bytes decompressed between two progress reports

Progress = Callable[[float, str], None]
DOWNLOAD_CHUNK = 1 << 18  # bytes per read of a download: a progress step every 256 KB
"""A loader's progress callback: ``progress(fraction, text)``, fraction rising to 1.0."""

# Limits for uploaded zips: the server caps uploads at 200 MB; these bound what we unpack.
MAX_FILES = 20_000
MAX_UNCOMPRESSED_BYTES = 1_000_000_000
MAX_IMAGE_PIXELS = 25_000_000  # 5000 x 5000; guards decompression bombs per image
# All-black 5000x5000 PNGs zip to ~300 bytes each, so a 10 MB zip within every limit above
# can hold an hour of decoding. Bound the work itself: the pixels decoded (as the headers
# declare them, after JPEG's reduced-scale draft) and the seconds spent.
MAX_TOTAL_PIXELS = 1_000_000_000  # ~10 s of decoding here; 2,000 phone photos as JPEG
MAX_DECODE_SECONDS = 60.0
MIN_SIZE, MAX_SIZE = 8, 256
UPLOAD_PREFIX = "folder:"  # the name prefix of a data set made from the user's own images
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
# Folder names that mark a part of an archive as data sets ship them (train/test, the
# notes' training_set/test_set, train/val/test), compared in lower case.
PART_FOLDERS = {
    "train": frozenset({"train", "training", "train_set", "training_set"}),
    "val": frozenset({"val", "valid", "validation", "val_set", "validation_set"}),
    "test": frozenset({"test", "testing", "test_set", "testing_set"}),
}
PART_WORDS = {"train": "training", "val": "validation", "test": "test"}
# File names that operating systems add beside images (lower case). "_ds_store": tools
# that cannot keep a leading dot re-pack macOS's .DS_Store under this name.
OS_JUNK_FILES = ("thumbs.db", "desktop.ini", "_ds_store")


class DatasetUnavailable(Exception):
    """A data set cannot be loaded here; the message says which file to put where."""


class BadUpload(ValueError):
    """An uploaded zip cannot be used; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a data set is: the one home of its facts (pages and cnnlab read them here).

    Args:
        name: registry name (or ``"folder:<zip name>"`` for an upload).
        title: display title.
        class_names: one name per label 0..n-1.
        image_shape: (height, width, channels) of every image.
        digits: hand-written digits: the drawing canvas suits them and a flip breaks them.
        keras_module: the ``keras.datasets`` module that loads it in exported scripts.
        test_source: for a zip that holds its own test part, that part's folder in the
            zip (e.g. ``"test_set/"``); None when the test set was drawn at random.
        skipped_files: zip entries that operating systems add (``.DS_Store``,
            ``__MACOSX/…``, ``Thumbs.db``, ``desktop.ini``), left out when reading.
    """

    name: str
    title: str
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    digits: bool = False
    keras_module: str | None = None
    test_source: str | None = None
    skipped_files: int = 0


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded data set: uint8 images ``(n, h, w, c)`` and integer labels ``(n,)``."""

    info: DatasetInfo
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


DIGITS = tuple(str(i) for i in range(10))
REGISTRY: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", "MNIST digits", DIGITS, (28, 28, 1), digits=True,
                         keras_module="mnist"),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist",
        "Fashion-MNIST",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        (28, 28, 1),
        keras_module="fashion_mnist",
    ),
    "cifar10": DatasetInfo(
        "cifar10",
        "CIFAR-10",
        ("airplane", "automobile", "bird", "cat", "deer",
         "dog", "frog", "horse", "ship", "truck"),
        (32, 32, 3),
        keras_module="cifar10",
    ),
    "mnist_sample": DatasetInfo(
        # A slice of MNIST: exported scripts load the full set with keras.datasets.mnist.
        "mnist_sample", "MNIST sample (bundled, 6k/1k)", DIGITS, (28, 28, 1), digits=True,
        keras_module="mnist",
    ),
}


# ---------------------------------------------------------------------------- cache & network


def keras_home() -> Path:
    """The Keras cache folder: ``$KERAS_HOME`` or ``~/.keras`` (read now, not at import)."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()


_ONLINE: dict[str, tuple[float, bool]] = {}


def _online(host: str, timeout: float = 2.0) -> bool:
    """True when a TCP connection to ``host:443`` opens within ``timeout`` seconds.

    Why: urllib's download has no useful timeout on a black-holed network, so we never
    start one before this short check passes. Answers are remembered for five minutes.
    """
    now = time.monotonic()
    cached = _ONLINE.get(host)
    if cached and now - cached[0] < 300:
        return cached[1]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            ok = True
    except OSError:
        ok = False
    _ONLINE[host] = (now, ok)
    return ok


def _host(url: str) -> str:
    return url.split("/")[2]


def _tell(progress: Progress | None, fraction: float, text: str) -> None:
    """Report to ``progress`` (when given), ``fraction`` clipped into [0, 1]."""
    if progress is not None:
        progress(min(max(fraction, 0.0), 1.0), text)


def download(url: str, dest: Path, progress: Progress | None = None) -> Path:
    """Fetch ``url`` into ``dest``, telling ``progress`` the share of bytes received.

    Our own loop rather than keras.utils.get_file, whose progress only reaches stdout: a
    first download of a data set shows its progress in the page. The file appears at
    ``dest`` only when complete (temp file, then rename), so a cut download never looks
    cached. Any failure is a DatasetUnavailable saying what to do.
    """
    import tempfile
    import urllib.error
    import urllib.request

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as exc:
        raise DatasetUnavailable(
            f"Cannot save {dest.name} into {dest.parent} ({exc.strerror or exc}); set "
            "KERAS_HOME to a folder you can write to.") from exc
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as resp:
            total, got = int(resp.headers.get("Content-Length") or 0), 0
            size = f" of {total / 1e6:.1f} MB" if total else " MB"
            while chunk := resp.read(DOWNLOAD_CHUNK):
                out.write(chunk)
                got += len(chunk)
                _tell(progress, got / total if total else 0.0,
                      f"Downloading {dest.name}: {got / 1e6:.1f}{size}")
        os.replace(tmp, dest)
    except (OSError, urllib.error.URLError) as exc:  # HTTPError and timeouts included
        Path(tmp).unlink(missing_ok=True)
        raise DatasetUnavailable(
            f"Downloading {url} failed ({exc}); try again, or download it yourself and put "
            f"it in {dest.parent}.") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _cached_file(fname: str, origin: str, subdir: str, progress: Progress | None = None) -> Path:
    """Path of a data file in the Keras cache (where keras.datasets keeps it), downloaded
    from ``origin`` with its progress when it is not there and the internet is reachable."""
    local = keras_home() / subdir / fname
    if local.is_file():
        return local
    if not _online(_host(origin)):
        raise DatasetUnavailable(
            f"{fname} is not in {local.parent} and the internet is not reachable: "
            f"download it from {origin}{fname} and put it there (or set KERAS_HOME to a "
            f"folder whose {subdir} has it)."
        )
    return download(origin + fname, local, progress)


def _read_idx(path: Path, offset: int, read: Callable[[int], None] | None = None) -> np.ndarray:
    """The payload of a gzipped IDX file as a flat uint8 array (header skipped).

    ``read``, when given, hears after each chunk how many compressed bytes are consumed.
    """
    chunks = []
    with open(path, "rb") as raw, gzip.GzipFile(fileobj=raw) as f:
        while chunk := f.read(IDX_CHUNK):
            chunks.append(chunk)
            if read is not None:
                read(raw.tell())
    return np.frombuffer(b"".join(chunks), np.uint8, offset=offset)


def _load_idx_set(info: DatasetInfo, origin: str, subdir: str,
                  progress: Progress | None) -> tuple[np.ndarray, ...]:
    """The four gzipped IDX files of an MNIST-style set in ``<keras home>/<subdir>``.

    Read the way keras.datasets.fashion_mnist reads them, but in chunks so that
    ``progress`` moves with the compressed bytes consumed across all four files.
    """
    paths = [_cached_file(f, origin, subdir, progress) for f in IDX_FILES]
    total = sum(p.stat().st_size for p in paths) or 1
    done = 0
    arrays = []
    for path, offset in zip(paths, (16, 8, 16, 8), strict=True):
        def read(n: int, path: Path = path, before: int = done) -> None:
            _tell(progress, (before + n) / total, f"Reading {path.name}")

        arrays.append(_read_idx(path, offset, read))
        done += path.stat().st_size
    x_train, y_train, x_test, y_test = arrays
    return (x_train.reshape(len(y_train), *info.image_shape), y_train,
            x_test.reshape(len(y_test), *info.image_shape), y_test)


def mnist_npz_path() -> Path:
    """Where keras.datasets.mnist.load_data() keeps MNIST: ``<keras home>/datasets/mnist.npz``."""
    return keras_home().joinpath(*MNIST_NPZ)


def _npz_problem(arrays: dict[str, np.ndarray], shape: tuple[int, ...],
                 n_classes: int) -> str | None:
    """What is wrong with the arrays of a Keras mnist.npz, or None when they are fine."""
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.dtype != np.uint8 or y.dtype != np.uint8:
            return f"x_{part} is {x.dtype} and y_{part} is {y.dtype}, not uint8"
        if x.ndim != 3 or x.shape[1:] != shape or y.shape != (len(x),):
            return f"x_{part} has shape {x.shape} and y_{part} {y.shape}"
        if len(y) and int(y.max()) >= n_classes:
            return f"y_{part} has the label {int(y.max())}"
    return None


def _read_mnist_npz(path: Path, progress: Progress | None) -> tuple[np.ndarray, ...]:
    """The arrays of a Keras ``mnist.npz``, checked; DatasetUnavailable naming what is wrong.

    Read with ``allow_pickle=False``: the file is data, never code to run.
    """
    info = REGISTRY["mnist"]
    shape, n_classes = info.image_shape[:2], len(info.class_names)
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":  # else np.load would try it as a pickle
                raise ValueError("it is not an .npz (zip) archive")
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in MNIST_NPZ_KEYS if k not in z.files]
            if missing:
                holds = ", ".join(z.files) or "nothing"
                raise ValueError(f"it has no {missing[0]} (it holds {holds})")
            sizes = [z.zip.getinfo(f"{k}.npy").file_size for k in MNIST_NPZ_KEYS]
            arrays = {}
            for i, key in enumerate(MNIST_NPZ_KEYS):
                arrays[key] = z[key]
                _tell(progress, sum(sizes[: i + 1]) / (sum(sizes) or 1), f"Reading {key}")
        problem = _npz_problem(arrays, shape, n_classes)
    except Exception as exc:  # not a zip, pickled objects, a damaged member
        problem = f"{exc} ({type(exc).__name__})"
    if problem:
        raise DatasetUnavailable(
            f"{path} is not a usable MNIST file: {problem}; expected x_train/x_test uint8 "
            f"(n, {shape[0]}, {shape[1]}) and y_train/y_test uint8 (n,) labels 0–"
            f"{n_classes - 1}, as keras.datasets.mnist.load_data() writes them: delete it "
            "(Keras downloads it again) or replace it."
        )
    return tuple(arrays[k][..., None] if k.startswith("x") else arrays[k]
                 for k in MNIST_NPZ_KEYS)


def _load_mnist(progress: Progress | None) -> tuple[np.ndarray, ...]:
    # A Keras user's cache first (what keras.datasets.mnist.load_data() wrote), else the
    # four IDX files, read the way keras.datasets.fashion_mnist reads its own.
    npz = mnist_npz_path()
    if npz.is_file():
        return _read_mnist_npz(npz, progress)
    return _load_idx_set(REGISTRY["mnist"], MNIST_ORIGIN, "datasets/mnist", progress)


def _load_fashion_mnist(progress: Progress | None) -> tuple[np.ndarray, ...]:
    # The same files, folder and origin as keras.datasets.fashion_mnist.load_data(), read
    # here so that the progress bar moves and a cached set needs no TensorFlow.
    return _load_idx_set(REGISTRY["fashion_mnist"], FASHION_ORIGIN, "datasets/fashion-mnist",
                         progress)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: images (n, 32, 32, 3) uint8 and labels (n,) uint8."""
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")  # the user's own Keras cache, like Keras does
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    # Rows are 3072 bytes: the red plane, then green, then blue, each 32x32 row-major.
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return x, np.asarray(batch[b"labels"], dtype=np.uint8)


def _load_cifar10(progress: Progress | None) -> tuple[np.ndarray, ...]:
    folder = keras_home().joinpath(*CIFAR10_DIR)
    archive = folder.parents[1] / "cifar-10-batches-py-target_archive"
    if not all((folder / b).is_file() for b in CIFAR10_BATCHES):
        if not archive.is_file() and not _online(_host(CIFAR10_ORIGIN)):
            raise DatasetUnavailable(
                f"CIFAR-10 is not in {folder} and the internet is not reachable: download "
                f"{CIFAR10_ORIGIN} and extract it into {folder.parent} (giving "
                "cifar-10-batches-py/data_batch_1..5 and test_batch)."
            )
        import keras

        if not archive.is_file():  # our download shows its progress; Keras' prints it
            download(CIFAR10_ORIGIN, archive, progress)
        _tell(progress, 0.0, "Checking and extracting CIFAR-10 with Keras…")
        # Exactly the sha256 check / extraction of keras.datasets.cifar10.load_data, which
        # finds the archive in place and does not download it again.
        # We read the batches ourselves afterwards: load_data builds a (50000, 3, 32, 32) array
        # and returns a transposed view (a second 150 MB copy to make it contiguous), and on
        # every later call it re-hashes the 170 MB archive and extracts it again.
        keras.utils.get_file(
            fname="cifar-10-batches-py-target", origin=CIFAR10_ORIGIN, extract=True,
            file_hash=CIFAR10_SHA256, cache_dir=str(keras_home()),
        )
    parts = []
    for i, batch in enumerate(CIFAR10_BATCHES, start=1):
        parts.append(_read_cifar_batch(folder / batch))
        _tell(progress, i / len(CIFAR10_BATCHES), f"Read {batch}")
    x_train = np.concatenate([p[0] for p in parts[:5]])
    y_train = np.concatenate([p[1] for p in parts[:5]])
    x_test, y_test = parts[5]
    return x_train, y_train, x_test, y_test


def _load_sample(progress: Progress | None) -> tuple[np.ndarray, ...]:
    # 2 MB, read in well under a second: load() reports its 1.0 and that is enough.
    if not SAMPLE_PATH.is_file():
        raise DatasetUnavailable(
            f"The bundled sample {SAMPLE_PATH} is missing: run "
            "`python scripts/make_mnist_sample.py` to rebuild it."
        )
    with np.load(SAMPLE_PATH) as z:
        return z["x_train"], z["y_train"], z["x_test"], z["y_test"]


_LOADERS: dict[str, Callable[[Progress | None], tuple[np.ndarray, ...]]] = {
    "mnist": _load_mnist,
    "fashion_mnist": _load_fashion_mnist,
    "cifar10": _load_cifar10,
    "mnist_sample": _load_sample,
}


def load(name: str, progress: Progress | None = None) -> Dataset:
    """Load a registry data set as uint8 arrays; raises DatasetUnavailable if it cannot.

    ``progress(fraction, text)``, when given, hears rising fractions per file or chunk
    read, and 1.0 last when the data set is loaded.
    """
    if name not in REGISTRY:
        raise DatasetUnavailable(
            f"Unknown data set {name!r}: choose one of {', '.join(REGISTRY)}."
        )
    try:
        x_train, y_train, x_test, y_test = _LOADERS[name](progress)
    except DatasetUnavailable:
        raise
    except Exception as exc:  # a failed download or a damaged cache file
        raise DatasetUnavailable(
            f"{REGISTRY[name].title} could not be loaded from {keras_home()} ({exc}); "
            "check or replace its files there."
        ) from exc
    _tell(progress, 1.0, f"{REGISTRY[name].title} loaded")
    return Dataset(REGISTRY[name], x_train, y_train, x_test, y_test)


def _cached(name: str) -> bool:
    home = keras_home()
    if name == "mnist":
        return mnist_npz_path().is_file() or all(
            (home / "datasets" / "mnist" / f).is_file() for f in IDX_FILES)
    if name == "fashion_mnist":
        return all((home / "datasets" / "fashion-mnist" / f).is_file() for f in IDX_FILES)
    if name == "cifar10":
        folder = home.joinpath(*CIFAR10_DIR)
        return all((folder / b).is_file() for b in CIFAR10_BATCHES) or (
            folder.parents[1] / "cifar-10-batches-py-target_archive").is_file()
    return SAMPLE_PATH.is_file()


def available() -> dict[str, bool]:
    """Which registry data sets can be loaded here now (cached, or downloadable)."""
    origins = {"mnist": MNIST_ORIGIN, "fashion_mnist": FASHION_ORIGIN, "cifar10": CIFAR10_ORIGIN}
    return {
        name: _cached(name) or (name in origins and _online(_host(origins[name])))
        for name in REGISTRY
    }


def default_name() -> str:
    """"mnist" when it is in the Keras cache (mnist.npz or the IDX files), else "mnist_sample".

    Only the cache counts (no network check), so the first page opens fast and offline.
    """
    return "mnist" if _cached("mnist") else "mnist_sample"


# ---------------------------------------------------------------------------- shipping


def to_npz_bytes(ds: Dataset) -> bytes:
    """``ds`` as one compressed .npz (arrays and info): how an upload reaches a worker."""
    import json

    buf = io.BytesIO()
    info = {"name": ds.info.name, "title": ds.info.title,
            "class_names": list(ds.info.class_names), "image_shape": list(ds.info.image_shape),
            "digits": ds.info.digits, "keras_module": ds.info.keras_module,
            "test_source": ds.info.test_source, "skipped_files": ds.info.skipped_files}
    np.savez_compressed(buf, x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test,
                        y_test=ds.y_test, info=np.frombuffer(json.dumps(info).encode(), np.uint8))
    return buf.getvalue()


def from_npz(source: bytes | Path | str) -> Dataset:
    """The Dataset in an .npz made by ``to_npz_bytes`` (bytes or a file path).

    Fields added to DatasetInfo later take their defaults when an older file lacks them.
    """
    import json

    with np.load(io.BytesIO(source) if isinstance(source, bytes) else source) as z:
        raw = json.loads(z["info"].tobytes().decode())
        info = DatasetInfo(raw["name"], raw["title"], tuple(raw["class_names"]),
                           tuple(raw["image_shape"]), bool(raw.get("digits", False)),
                           raw.get("keras_module"), raw.get("test_source"),
                           int(raw.get("skipped_files", 0)))
        return Dataset(info, z["x_train"], z["y_train"], z["x_test"], z["y_test"])


# ---------------------------------------------------------------------------- splits


def train_val_split(
    x: np.ndarray, y: np.ndarray, val_fraction: float = 0.1, seed: int = 42
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified, seeded split into (x_train, y_train, x_val, y_val), both shuffled.

    Each class gives ``round(n_class * val_fraction)`` samples to validation (at least one
    when it has two or more), so class proportions match in both parts.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}.")
    rng = np.random.default_rng(seed)
    y = np.asarray(y).reshape(-1)
    val_parts, train_parts = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_val = int(np.rint(len(idx) * val_fraction))
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        val_parts.append(idx[:n_val])
        train_parts.append(idx[n_val:])
    tr = rng.permutation(np.concatenate(train_parts))
    va = rng.permutation(np.concatenate(val_parts))
    return x[tr], y[tr], x[va], y[va]


def val_count(y: np.ndarray, val_fraction: float = 0.1) -> int:
    """How many samples train_val_split(y=y, val_fraction) puts into validation."""
    # bincount, not unique: no sort of the labels (Explore asks on every run); an absent
    # class counts 0 and adds 0.
    counts = np.bincount(np.asarray(y).reshape(-1).astype(np.int64))
    n_val = np.rint(counts * val_fraction).astype(int)
    n_val = np.where(counts >= 2, np.clip(n_val, 1, counts - 1), n_val)
    return int(n_val.sum())


def subset(ds: Dataset, limit: int) -> Dataset:
    """The first ``limit`` training samples taken round-robin over classes (test set kept).

    Keeps classes balanced for quick runs; the chosen samples stay in their original order.
    """
    if limit >= len(ds.y_train):
        return ds
    y = np.asarray(ds.y_train).reshape(-1)
    rank = np.empty(len(y), dtype=np.int64)  # k-th occurrence of its class
    for label in np.unique(y):
        where = np.flatnonzero(y == label)
        rank[where] = np.arange(len(where))
    chosen = np.sort(np.lexsort((np.arange(len(y)), rank))[:limit])
    return Dataset(ds.info, ds.x_train[chosen], ds.y_train[chosen], ds.x_test, ds.y_test)


# ---------------------------------------------------------------------------- user zips


CONTROL_CHARACTER = "contains a control or bidirectional-text character"
ALLOWED_COMPRESSION = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate",
                       zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}
MemberReader = Callable[[zipfile.ZipInfo], bytes]
"""Reads one member's bytes (a zip's, or a file of a folder named like one); BadUpload
when it cannot."""


def _member_problem(name: str) -> str | None:
    """Why a zip member name is unsafe, or None. Names never reach the file system anyway."""
    from cnnlab import text

    if text.hidden_characters(name):
        return CONTROL_CHARACTER
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "is an absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "points outside the zip with '..'"
    return None


def _skipped(name: str) -> bool:
    """Folders, and the files operating systems add beside images: macOS forks
    (``__MACOSX/`` at any depth, ``._x.jpg``), hidden files (``.DS_Store``), Windows'
    ``Thumbs.db`` and ``desktop.ini``."""
    parts = name.split("/")
    return (name.endswith("/") or "__MACOSX" in parts[:-1] or parts[-1].startswith(".")
            or parts[-1].lower() in OS_JUNK_FILES)


def _part_kind(folder: str) -> str | None:
    """"train", "val" or "test" when ``folder`` names that part of an archive, else None."""
    low = folder.lower()
    return next((kind for kind, names in PART_FOLDERS.items() if low in names), None)


def _class_of(member: str) -> str:
    """An image's class: the folder it sits in (``train/cats/1.png`` is "cats")."""
    return posixpath.basename(posixpath.dirname(member))


def _part_of(member: str) -> tuple[str, str] | None:
    """(kind, folder) of the part above ``member``'s class folder, or None.

    The innermost part-named folder decides the kind (``training/test/cats/1.jpg`` is in
    the test part); its folder is reported from the first of a run of same-kind names, so
    the notes' ``test_set/test_set/cats/1.jpg`` is in ``test_set/``, as a person says it.
    """
    dirs = member.split("/")[:-2]  # the folders above the class folder
    inner = next((k for k in range(len(dirs) - 1, -1, -1) if _part_kind(dirs[k])), None)
    if inner is None:
        return None
    kind, start = _part_kind(dirs[inner]), inner
    while start > 0 and _part_kind(dirs[start - 1]) == kind:
        start -= 1
    return str(kind), "/".join(dirs[: start + 1]) + "/"


def _archive_parts(members: list[str]) -> tuple[list[bool], str, str] | None:
    """Per image whether it is in the test part, the test part's folder and the training
    part's folder(s), when the archive holds a training (or val) and a test part; None
    when it does not, and its images are one pool to split at random.

    A folder named like a part on its own is no split: a zip of ``test/cats``, ``test/dogs``
    (or a class named "test") reads as before. Raises BadUpload for a part holding images
    directly or an image outside both parts.
    """
    where = [_part_of(m) for m in members]
    loose = [m for m in members if _part_kind(_class_of(m))]
    kinds = {w[0] for w in where if w} | {_part_kind(_class_of(m)) for m in loose}
    if "test" not in kinds or not kinds & {"train", "val"}:
        return None
    test_source = ", ".join(sorted({w[1] for w in where if w and w[0] == "test"}))
    train_source = ", ".join(sorted({w[1] for w in where if w and w[0] != "test"}))
    if loose:
        folder = posixpath.dirname(loose[0])
        kind = PART_WORDS[str(_part_kind(_class_of(loose[0])))]
        loose_set = set(loose)
        example = min((_class_of(m) for m, w in zip(members, where, strict=True)
                       if w and m not in loose_set), default="cats")
        raise BadUpload(
            f"{folder}/ holds images directly ({loose[0]}), but the zip's {kind} part needs "
            f"one sub-folder per class, as in Keras' image_dataset_from_directory: move them "
            f"into class folders such as {folder}/{example}/ and zip again."
        )
    outside = [m for m, w in zip(members, where, strict=True) if w is None]
    if outside:
        raise BadUpload(
            f"{outside[0]} is in neither the training part ({train_source or 'none'}) nor "
            f"the test part ({test_source}) of the zip, and with both parts every image must "
            "be in one: move it into a class folder of one part, or remove it, and zip again."
        )
    return [w is not None and w[0] == "test" for w in where], test_source, train_source


def _check_part_classes(labels: list[str], in_test: list[bool], test_source: str,
                        train_source: str) -> None:
    """BadUpload unless the training and test parts hold the same class folders.

    Keras numbers classes by the sorted folder names of each directory it reads, so parts
    with different folders would give one label two meanings; and a class met only in
    testing could never be learnt.
    """
    train = {c for c, t in zip(labels, in_test, strict=True) if not t}
    test = {c for c, t in zip(labels, in_test, strict=True) if t}
    if test - train:
        only = min(test - train)
        raise BadUpload(
            f"Class {only!r} is only in the test part ({test_source}), so the model could "
            f"never learn it; the training and test parts need the same class folders: add "
            f"{only!r} images to the training part ({train_source}), or remove its folder "
            "from the test part, and zip again."
        )
    if train - test:
        missing = ", ".join(repr(c) for c in sorted(train - test))
        raise BadUpload(
            f"The training part ({train_source}) has class folders that the test part "
            f"({test_source}) lacks: {missing}; the two parts need the same class folders: "
            "add those classes' test images to the test part, or remove their folders from "
            "the training part, and zip again."
        )


def _image_entries(infos: list[zipfile.ZipInfo]) -> tuple[list[zipfile.ZipInfo], int]:
    """The zip's image entries and how many junk files were left out (see _skipped);
    BadUpload for an unsafe name, a file that is no image, or an image outside a folder."""
    images, junk = [], 0
    for info in infos:
        member = info.filename
        problem = _member_problem(member)
        if problem == CONTROL_CHARACTER:
            raise BadUpload(
                f"The zip entry {member!r} {problem}; names may not contain control or "
                "bidirectional-text characters: rename the file or folder and zip again."
            )
        if problem:
            raise BadUpload(
                f"The zip entry {member!r} {problem}; only relative paths inside the "
                "zip are allowed: zip the folder again with a normal zip tool."
            )
        if _skipped(member):
            junk += not member.endswith("/")  # folder entries are structure, not junk
            continue
        if not member.lower().endswith(IMAGE_EXTENSIONS):
            raise BadUpload(
                f"{member} is not an image; allowed are {', '.join(IMAGE_EXTENSIONS)} "
                "files: remove it and zip again."
            )
        if not posixpath.dirname(member):
            raise BadUpload(
                f"{member} is not in a class folder; put each class's images in its "
                "own sub-folder (e.g. cats/1.jpg, dogs/1.jpg) and zip again."
            )
        images.append(info)
    return images, junk


class Layout(NamedTuple):
    """What the member names of a zip (or a folder) say, before any image is decoded."""

    entries: list[zipfile.ZipInfo]  # the image members, in order
    labels: list[str]  # each image's class folder
    parts: tuple[list[bool], str, str] | None  # see _archive_parts
    junk: int  # system files left out


def member_layout(infos: list[zipfile.ZipInfo]) -> Layout:
    """The images, classes and training/test parts that ``infos``' names describe, read as
    load_zip reads them; BadUpload (one sentence) for names or a layout it refuses."""
    entries, junk = _image_entries(infos)
    members = [i.filename for i in entries]
    labels = [_class_of(m) for m in members]
    parts = _archive_parts(members)
    if parts is not None:
        _check_part_classes(labels, *parts)
    return Layout(entries, labels, parts, junk)


def check_classes(labels: list[str]) -> tuple[str, ...]:
    """The sorted class names of ``labels``; BadUpload unless there are 2 or more classes
    of 2 or more images each."""
    class_names = tuple(sorted(set(labels)))
    counts = {c: labels.count(c) for c in class_names}
    if len(class_names) < 2:
        found = f"only the class {class_names[0]!r}" if class_names else "no images"
        raise BadUpload(
            f"The zip has {found}; at least 2 class folders with 2 or more images each "
            "are needed: add another class folder and zip again."
        )
    small = [c for c, n in counts.items() if n < 2]
    if small:
        raise BadUpload(
            f"Class {small[0]!r} has {counts[small[0]]} image; every class needs at least 2 "
            "(one for training, one for testing): add images to it or remove it."
        )
    return class_names


def _decode_all(read: MemberReader, entries: list[zipfile.ZipInfo], size: tuple[int, int],
                grayscale: bool, progress: Progress | None,
                bounded: bool = True) -> list[np.ndarray]:
    """Every image entry decoded (see _decode), within MAX_DECODE_SECONDS and
    MAX_TOTAL_PIXELS when ``bounded``; ``progress`` hears about a hundred rising fractions."""
    deadline = time.monotonic() + MAX_DECODE_SECONDS if bounded else float("inf")
    pixels = [0] if bounded else None  # decoded so far, shared with _decode
    images: list[np.ndarray] = []
    every = max(1, len(entries) // 100)  # about a hundred reports, however big the zip
    for i, info in enumerate(entries):
        if i % every == 0:
            _tell(progress, i / len(entries), f"Decoding images: {i:,} of {len(entries):,}")
        if time.monotonic() > deadline:
            raise BadUpload(
                f"Decoding the zip took more than {MAX_DECODE_SECONDS:.0f} s ({i:,} of "
                f"{len(entries):,} images done); at most {MAX_DECODE_SECONDS:.0f} s is "
                "allowed: upload fewer or smaller images (a few hundred pixels a side)."
            )
        images.append(_decode(read(info), info.filename, size, grayscale, pixels))
    return images


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """The bytes of one zip member; BadUpload (one sentence) for every way it cannot be read."""
    name = info.filename
    if info.flag_bits & 0x1:
        raise BadUpload(
            f"{name} is encrypted (the zip has a password); allowed are zips without a "
            "password: zip the folder again without encryption."
        )
    if info.compress_type not in ALLOWED_COMPRESSION:
        raise BadUpload(
            f"{name} uses zip compression method {info.compress_type} (e.g. Deflate64 from "
            f"Windows for large folders); allowed are {', '.join(ALLOWED_COMPRESSION.values())}:"
            " zip the folder again with a standard zip tool."
        )
    try:
        # ZipExtFile stops at the declared size, so the total size check holds.
        return zf.read(info)
    except Exception as exc:  # BadZipFile (bad CRC), zlib.error/EOFError (truncated), …
        raise BadUpload(
            f"{name} cannot be unpacked: the zip is damaged ({type(exc).__name__}: {exc}); "
            "allowed are complete, undamaged zips: zip the folder again and upload it again."
        ) from exc


def _decode(raw: bytes, name: str, size: tuple[int, int], grayscale: bool,
            pixels: list[int] | None = None) -> np.ndarray:
    """One image member → uint8 (h, w, c), converted and resized; BadUpload if unusable.

    ``pixels`` is a one-item running total of decoded pixels across a zip, checked against
    MAX_TOTAL_PIXELS before this image's pixels are decoded.
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw)) as im:
            w, h = im.size  # read from the header only; pixels are not decoded yet
            if w * h > MAX_IMAGE_PIXELS:
                raise BadUpload(
                    f"{name} is {w}x{h} pixels; at most {MAX_IMAGE_PIXELS:,} pixels per "
                    "image are allowed: shrink it and zip again."
                )
            im.draft("RGB", (size[1], size[0]))  # JPEG: decode at reduced scale, faster
            if pixels is not None:
                pixels[0] += im.size[0] * im.size[1]  # only the first frame is decoded
                if pixels[0] > MAX_TOTAL_PIXELS:
                    raise BadUpload(
                        f"The images in the zip add up to more than {MAX_TOTAL_PIXELS:,} "
                        f"pixels (reached at {name}, {w}x{h}); at most {MAX_TOTAL_PIXELS:,} are"
                        " allowed: shrink the images (a few hundred pixels a side is plenty) "
                        "or upload fewer."
                    )
            picture: Image.Image = im  # the decoded file, then its converted copies
            if picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info:
                rgba = picture.convert("RGBA")
                picture = Image.new("RGBA", rgba.size, "white")
                picture.alpha_composite(rgba)  # transparent parts become white, not black
            picture = picture.convert("L" if grayscale else "RGB")
            picture = picture.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(picture, dtype=np.uint8)
    except BadUpload:
        raise
    except Image.DecompressionBombError as exc:  # the header claims a gigantic image
        raise BadUpload(
            f"{name} claims {_claimed_pixels(exc)} pixels; at most {MAX_IMAGE_PIXELS:,} "
            "pixels per image are allowed: shrink it and zip again."
        ) from exc
    except Exception as exc:  # Pillow raises many kinds for corrupt data
        raise BadUpload(
            f"{name} is not a readable image ({type(exc).__name__}); allowed are "
            f"{', '.join(IMAGE_EXTENSIONS)} files: replace or remove it and zip again."
        ) from exc
    return arr[..., None] if grayscale else arr


def _claimed_pixels(exc: Exception) -> str:
    """The pixel count in Pillow's DecompressionBombError message, formatted ('more than …')."""
    import re

    found = re.search(r"\((\d+) pixels\)", str(exc))
    return f"{int(found.group(1)):,}" if found else "more than 178 million"


def load_zip(
    data: bytes | str | Path,
    size: tuple[int, int],
    grayscale: bool,
    name: str = "folder",
    test_fraction: float = 0.2,
    progress: Progress | None = None,
) -> Dataset:
    """A data set from a zip of images with one sub-folder per class, read as Keras'
    ``image_dataset_from_directory`` reads a folder.

    The class of an image is the folder it sits in, at any depth (``shapes/circle/1.png``
    is "circle"). When the zip holds a training and a test part (``train/`` and
    ``test/``, ``training_set/`` and ``test_set/``, nested too, as in the reference notes'
    ``training_set/training_set/cats/1.jpg``), the test set is exactly the test part and
    ``info.test_source`` names it; a ``val/`` part joins training, because every run takes
    its validation share from the training images (as the notes do with
    ``validation_split=0.1``). Otherwise ``test_fraction`` of each class is drawn at
    random (seeded) for testing. Files that operating systems add (``.DS_Store``,
    ``__MACOSX/``, ``Thumbs.db``, ``desktop.ini``) are left out and counted in
    ``info.skipped_files``. Images of any size or colour mode are converted and resized to
    ``size`` = (height, width). ``data`` is the zip's bytes or its path: a path is read
    member by member from disk (the web app's uploads, up to a few hundred MB, are files),
    never whole into memory; nothing is extracted or written anywhere.
    ``progress(fraction, text)``, when given, hears rising fractions every few images
    decoded, and 1.0 last. Raises BadUpload naming the problem.
    """
    from cnnlab import text

    name_problem = text.name_problem(name, "upload's name")
    if name_problem:
        raise BadUpload(name_problem)
    h, w = size
    if not (MIN_SIZE <= h <= MAX_SIZE and MIN_SIZE <= w <= MAX_SIZE):
        raise BadUpload(
            f"Image size {h}x{w} is not allowed: choose between {MIN_SIZE} and {MAX_SIZE}."
        )
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        zf = zipfile.ZipFile(source)
    except zipfile.BadZipFile as exc:
        size_bytes = len(data) if isinstance(data, bytes) else Path(data).stat().st_size
        raise BadUpload(
            f"The upload ({size_bytes:,} bytes) is not a zip file: zip a folder that holds "
            "one sub-folder of images per class and upload that."
        ) from exc
    except OSError as exc:  # the file went away (cleaned up) or cannot be read
        raise BadUpload(
            f"The uploaded zip cannot be read any more ({type(exc).__name__}): upload it "
            "again."
        ) from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_FILES:
            raise BadUpload(
                f"The zip holds {len(infos):,} entries; at most {MAX_FILES:,} are allowed: "
                "upload fewer images."
            )
        total = sum(i.file_size for i in infos)
        if total > MAX_UNCOMPRESSED_BYTES:
            raise BadUpload(
                f"The zip unpacks to {total:,} bytes; at most {MAX_UNCOMPRESSED_BYTES:,} "
                "are allowed: upload fewer or smaller images."
            )
        return load_members(infos, lambda info: _read_member(zf, info), size, grayscale,
                            name, test_fraction, progress)


def load_members(infos: list[zipfile.ZipInfo], read: MemberReader, size: tuple[int, int],
                 grayscale: bool, name: str, test_fraction: float = 0.2,
                 progress: Progress | None = None, bounded: bool = True) -> Dataset:
    """The Dataset in ``infos`` (member names as a zip spells them, ``cats/1.jpg``), each
    read by ``read``: load_zip's rules for names, parts, classes and decoding.

    load_zip calls it with a zip's members; a folder of class folders (the server's class
    data sets) with its files named the same way. ``bounded=False`` lifts the limits on
    decoding seconds and total pixels, which guard the server against uploads: the
    operator's own files are decoded once into a cache.
    """
    # The layout is checked on names, before any second is spent decoding.
    entries, labels, parts, junk = member_layout(infos)
    images = _decode_all(read, entries, size, grayscale, progress, bounded)
    h, w = size
    class_names = check_classes(labels)
    x = np.stack(images)
    y = np.array([class_names.index(c) for c in labels], dtype=np.uint8 if len(
        class_names) <= 255 else np.int64)
    if parts is None:
        x_train, y_train, x_test, y_test = train_val_split(x, y, test_fraction, seed=42)
        test_source = None
    else:
        in_test, test_source = np.array(parts[0]), parts[1]
        # Seeded shuffles: a zip lists a class's images together, and the order of a
        # data set's arrays should not tell the class (the random split shuffles too).
        rng = np.random.default_rng(42)
        tr, te = (rng.permutation(np.flatnonzero(~in_test)),
                  rng.permutation(np.flatnonzero(in_test)))
        x_train, y_train, x_test, y_test = x[tr], y[tr], x[te], y[te]
    dataset_info = DatasetInfo(name, "Your images", class_names, (h, w, 1 if grayscale else 3),
                               test_source=test_source, skipped_files=junk)
    skipped = f"; {junk:,} system files skipped" if junk else ""
    _tell(progress, 1.0, f"Decoded {len(images):,} images in {len(class_names)} classes{skipped}")
    return Dataset(dataset_info, x_train, y_train, x_test, y_test)
