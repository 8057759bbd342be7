"""Class data sets: the operator's folder of zips and image folders, decoded once into a
cache on disk that every session, engine and worker on the machine maps.

The operator names the folder (``CNNLAB_DATASETS_DIR``, else ``dir`` in the ``[datasets]``
table of .streamlit/secrets.toml). Each ``.zip`` in it and each sub-folder of class folders
is one set, read with the rules of an uploaded zip (datasets.load_members): the class is
the folder an image sits in, ``train/`` and ``test/`` parts are kept, system files skipped.

Names. ``shared:<set>`` is the set at 64×64 colour (the default of uploads);
``shared:<set>@<side>`` another size, ``shared:<set>@<side>-gray`` grayscale (``<set>`` is
the folder's name, or the zip's without ``.zip``). The size and colour are in the name
because the name is what travels: ``?dataset=`` links, a run's config.json, the engine's
DatasetRef to a worker, the CLI's ``--dataset``; each variant is its own cache.

Cache. ``<cache>/<file>/<h>x<w>-<rgb|gray>-<fingerprint>/`` holds ``x_train.npy``,
``y_train.npy``, ``x_test.npy``, ``y_test.npy`` (uint8) and ``info.json``; ``load`` opens
them with ``np.load(mmap_mode="r")``, so every process shares one copy in the operating
system's page cache. ``<cache>`` is ``<folder>/.cache`` unless ``CNNLAB_DATASETS_CACHE`` (or
``[datasets] cache_dir``) names another. The fingerprint is the zip's size and mtime, or a
hash of the folder's files' paths, sizes and mtimes: a changed set is decoded again and its
old cache deleted. A decode writes a temporary folder and renames it, under a lock file per
set and variant, so processes asking at once decode once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab.data import datasets
from cnnlab.data.datasets import BadUpload, Dataset, DatasetInfo, DatasetUnavailable, Progress
from cnnlab.settings import SECRETS_FILE, secrets_table

SHARED_PREFIX = "shared:"
DEFAULT_SIDE = 64  # as an upload's
# The sizes a class set is offered at (Explore's, as for uploads). A fixed few, because any
# student can ask for one by link and each is a decode and a cache on the server's disk.
SIDES = (16, 28, 32, 48, 64, 96, 128)
CACHE_FOLDER = ".cache"
ARRAYS = ("x_train", "y_train", "x_test", "y_test")
# The operator's own files, not an anonymous upload: more than an upload's 20,000 entries
# (Kaggle's cats and dogs is 25,000 images), and no bound on decoding seconds.
MAX_FILES = 200_000
# A folder's mtime changes only when its own entries do, not when a class folder inside
# gains an image: folders are walked again (names only) at most this often.
RECHECK_S = 10.0
SETTING = "CNNLAB_DATASETS_DIR (or [datasets] dir in .streamlit/secrets.toml)"
_SUFFIX = re.compile(r"@(\d+)(-gray)?$")

decoded: list[str] = []
"""Cache folders this process decoded, oldest first (tests and measurements count them)."""


class SharedSetError(DatasetUnavailable):
    """A class data set cannot be listed or loaded; the message is one sentence."""


@dataclass(frozen=True)
class Entry:
    """One class data set as the folder lists it, read from names only (nothing decoded).

    Args:
        name: the set's name at the default size (``shared:cats_dogs``).
        file: the zip's or folder's name in the class data sets folder.
        kind: "zip" or "folder".
        classes: class names, sorted (empty when ``problem``).
        train: training images (a ``val/`` part included).
        test: images of its test part; None when the test set is drawn at random (20 %).
        problem: why it cannot be used, one sentence; None when it can.
    """

    name: str
    file: str
    kind: str
    classes: tuple[str, ...] = ()
    train: int = 0
    test: int | None = None
    problem: str | None = None

    @property
    def images(self) -> int:
        """All its images."""
        return self.train + (self.test or 0)

    @property
    def set_name(self) -> str:
        """The name without the prefix (``cats_dogs``)."""
        return self.name[len(SHARED_PREFIX):]


# ---------------------------------------------------------------------------- settings


def _setting(env: str, key: str, secrets_file: Path | str) -> str | None:
    """The environment variable ``env``, else ``[datasets] key`` of secrets.toml."""
    value = os.environ.get(env)
    if value:
        return value
    try:
        found = secrets_table(secrets_file, "datasets").get(key)
    except ValueError as exc:  # secrets.toml is not TOML
        raise SharedSetError(str(exc)) from exc
    return str(found) if found else None


def datasets_dir(secrets_file: Path | str = SECRETS_FILE) -> Path | None:
    """The class data sets folder the operator set (``CNNLAB_DATASETS_DIR`` over
    ``[datasets] dir``), or None when none is set."""
    value = _setting("CNNLAB_DATASETS_DIR", "dir", secrets_file)
    return Path(value).expanduser() if value else None


def cache_dir(directory: Path, secrets_file: Path | str = SECRETS_FILE) -> Path:
    """Where decoded sets are kept: ``CNNLAB_DATASETS_CACHE`` or ``[datasets] cache_dir``,
    else ``<directory>/.cache`` (a hidden folder, so never listed as a set)."""
    value = _setting("CNNLAB_DATASETS_CACHE", "cache_dir", secrets_file)
    return Path(value).expanduser() if value else directory / CACHE_FOLDER


def _folder_word(directory: Path) -> str:
    # Pages show this: the folder's own name, never the server's full path.
    return f"the class data sets folder {directory.name!r}"


def _require_dir() -> Path:
    directory = datasets_dir()
    if directory is None:
        raise SharedSetError(
            f"This server has no class data sets: the operator sets {SETTING} to a folder "
            "of zips and image folders to offer them.")
    if not directory.is_dir():
        raise SharedSetError(
            f"{_folder_word(directory).capitalize()} is not there or is not a folder any "
            f"more; ask the operator to restore it or to point {SETTING} at another.")
    return directory


# ---------------------------------------------------------------------------- names


def shared_name(set_name: str, side: int = DEFAULT_SIDE, grayscale: bool = False) -> str:
    """The name of ``set_name`` at ``side``×``side`` pixels, colour or grayscale."""
    if side == DEFAULT_SIDE and not grayscale:
        return SHARED_PREFIX + set_name
    return f"{SHARED_PREFIX}{set_name}@{side}{'-gray' if grayscale else ''}"


def parse_name(name: str) -> tuple[str, int, bool]:
    """``(set name, side, grayscale)`` of a ``shared:`` name; SharedSetError for a size
    that is not one of SIDES."""
    rest = name[len(SHARED_PREFIX):] if name.startswith(SHARED_PREFIX) else name
    found = _SUFFIX.search(rest)
    if found is None:
        return rest, DEFAULT_SIDE, False
    side = int(found.group(1))
    if side not in SIDES:
        raise SharedSetError(
            f"The data set name {name!r} asks for {side}-pixel images; class data sets come "
            f"in {', '.join(map(str, SIDES))} pixels: pick one of those on Explore.")
    return rest[: found.start()], side, bool(found.group(2))


def is_shared(name: str) -> bool:
    """True for a class data set's name."""
    return name.startswith(SHARED_PREFIX)


# ---------------------------------------------------------------------------- listing


_SUMMARIES: dict[Path, tuple[tuple[int, int], float, Entry]] = {}
_FINGERPRINTS: dict[Path, tuple[tuple[int, int], float, str]] = {}


def _sources(directory: Path) -> dict[str, tuple[Path, str]]:
    """Set name → (path, kind) for every zip and sub-folder of ``directory``.

    Hidden entries (the cache among them) are left out. A zip named like a folder beside
    it keeps its ``.zip`` in its name, so both can be picked.
    """
    found: list[tuple[str, Path, str]] = []
    with os.scandir(directory) as it:
        for item in it:
            if item.name.startswith("."):
                continue
            if item.is_dir():
                found.append((item.name, Path(item.path), "folder"))
            elif item.is_file() and item.name.lower().endswith(".zip"):
                found.append((item.name, Path(item.path), "zip"))
    folders = {name for name, _, kind in found if kind == "folder"}
    out: dict[str, tuple[Path, str]] = {}
    for name, path, kind in sorted(found):
        stem = name[:-4] if kind == "zip" else name
        out[name if kind == "zip" and stem in folders else stem] = (path, kind)
    return out


def _folder_members(folder: Path) -> list[zipfile.ZipInfo]:
    """A folder's files named as a zip of it would name them (``cats/1.jpg``), in a stable
    order; only names are read (no stat per file)."""
    infos = []
    for top, dirs, files in os.walk(folder):
        dirs.sort()
        rel = Path(top).relative_to(folder).as_posix()
        for file in sorted(files):
            infos.append(zipfile.ZipInfo(file if rel == "." else f"{rel}/{file}"))
    return infos


def _members(path: Path, kind: str) -> list[zipfile.ZipInfo]:
    """The members of a set's zip or folder; BadUpload when there are too many."""
    if kind == "zip":
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    else:
        infos = _folder_members(path)
    if len(infos) > MAX_FILES:
        raise BadUpload(f"it holds {len(infos):,} files; at most {MAX_FILES:,} are allowed: "
                        "split it into smaller sets.")
    return infos


def _summarise(set_name: str, path: Path, kind: str) -> Entry:
    """The Entry for one zip or folder, from its member names."""
    entry = Entry(SHARED_PREFIX + set_name, path.name, kind)
    try:
        layout = datasets.member_layout(_members(path, kind))
        classes = datasets.check_classes(layout.labels)
    except BadUpload as exc:
        return Entry(entry.name, entry.file, kind, problem=str(exc))
    except (OSError, zipfile.BadZipFile) as exc:
        return Entry(entry.name, entry.file, kind, problem=(
            f"{path.name} cannot be read ({type(exc).__name__}: {exc}); ask the operator "
            "to replace it."))
    test = None if layout.parts is None else sum(layout.parts[0])
    return Entry(entry.name, entry.file, kind, classes,
                 len(layout.labels) - (test or 0), test)


def _stat_key(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


def _entry(set_name: str, path: Path, kind: str) -> Entry:
    """``_summarise``, kept while the zip's (mtime, size) stay the same; a folder's is
    walked again when its own mtime changes or RECHECK_S has passed."""
    key, now = _stat_key(path), time.monotonic()
    hit = _SUMMARIES.get(path)
    if (hit is not None and hit[0] == key and hit[2].set_name == set_name
            and (kind == "zip" or now - hit[1] < RECHECK_S)):
        return hit[2]
    entry = _summarise(set_name, path, kind)
    _SUMMARIES[path] = (key, now, entry)
    return entry


def listing() -> list[Entry]:
    """The class data sets, sorted by name; [] when the operator set no folder.

    Costs a directory listing and a stat per set while nothing changes. Raises
    SharedSetError (one sentence) when the folder set is not there.
    """
    if datasets_dir() is None:
        return []
    directory = _require_dir()
    try:
        sources = _sources(directory)
    except OSError as exc:
        raise SharedSetError(
            f"{_folder_word(directory).capitalize()} cannot be read ({exc.strerror or exc}); "
            "ask the operator to fix its permissions.") from exc
    out = []
    for set_name, (path, kind) in sources.items():
        try:
            out.append(_entry(set_name, path, kind))
        except OSError:  # removed between the listing and its stat
            continue
    return out


def find(name: str) -> Entry:
    """The listed Entry of a ``shared:`` name (any size); SharedSetError naming the set and
    the folder when it is not there."""
    set_name = parse_name(name)[0]
    directory = _require_dir()
    for entry in listing():
        if entry.set_name == set_name:
            return entry
    raise SharedSetError(
        f"The class data set {set_name!r} is not in {_folder_word(directory)} any more; "
        "pick another data set (runs trained on it are kept).")


_PUBLISH_NAME = re.compile(r"\w[\w .()-]{0,59}")


def publish(source: Path | bytes, set_name: str) -> Entry:
    """Save an uploaded zip (a file, or a zip's bytes) into the class data sets folder as
    ``<set_name>.zip``: from now on everyone's list offers it as ``shared:<set_name>``.

    Raises SharedSetError (one sentence) when no folder is set, the name is not allowed or
    taken, or the copy fails; nothing is left half-written.
    """
    from cnnlab import text

    directory = _require_dir()
    problem = text.name_problem(set_name, "class data set's name")
    if problem:
        raise SharedSetError(problem)
    if not _PUBLISH_NAME.fullmatch(set_name) or set_name.lower().endswith(".zip"):
        raise SharedSetError(
            f"The name {set_name!r} cannot name a class data set: use up to 60 letters, "
            "digits, spaces and . _ - ( ), starting with a letter or digit, without .zip.")
    if set_name in _sources(directory):
        raise SharedSetError(
            f"{_folder_word(directory).capitalize()} already has a set named {set_name!r}: "
            "pick another name (the one there is kept).")
    final = directory / f"{set_name}.zip"
    part = directory / f".{set_name}.{os.getpid()}.part"  # hidden: never listed half-copied
    try:
        if isinstance(source, bytes):
            part.write_bytes(source)
        else:
            shutil.copyfile(source, part)
        os.link(part, final)  # unlike a rename, fails if a same-named set appeared meanwhile
    except FileExistsError as exc:
        raise SharedSetError(
            f"{_folder_word(directory).capitalize()} already has a set named {set_name!r}: "
            "pick another name (the one there is kept).") from exc
    except OSError as exc:
        raise SharedSetError(
            f"The set {set_name!r} could not be saved in {_folder_word(directory)} "
            f"({exc.strerror or exc}); ask the operator to check its free space and "
            "permissions.") from exc
    finally:
        part.unlink(missing_ok=True)
    return find(SHARED_PREFIX + set_name)


# ---------------------------------------------------------------------------- fingerprint


def fingerprint(path: Path) -> str:
    """12 hex digits that change when the set's files do: a zip's size and mtime, a
    folder's files' paths, sizes and mtimes (walked again at most every RECHECK_S while
    the folder's own mtime stays)."""
    if path.is_file():
        mtime, size = _stat_key(path)
        return hashlib.sha256(f"{size}:{mtime}".encode()).hexdigest()[:12]
    key, now = _stat_key(path), time.monotonic()
    hit = _FINGERPRINTS.get(path)
    if hit is not None and hit[0] == key and now - hit[1] < RECHECK_S:
        return hit[2]
    digest = hashlib.sha256()
    for info in _folder_members(path):
        stat = (path / info.filename).stat()
        digest.update(f"{info.filename}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    value = digest.hexdigest()[:12]
    _FINGERPRINTS[path] = (key, now, value)
    return value


def forget() -> None:
    """Drop the remembered listings and fingerprints (the next call reads the disk)."""
    _SUMMARIES.clear()
    _FINGERPRINTS.clear()


# ---------------------------------------------------------------------------- loading


def version(name: str) -> str:
    """The fingerprint of the set ``name`` names (pages key their caches on it)."""
    entry = find(name)
    directory = _require_dir()
    try:
        return fingerprint(directory / entry.file)
    except OSError as exc:
        raise SharedSetError(
            f"The class data set {entry.set_name!r} is not in {_folder_word(directory)} any "
            "more; pick another data set (runs trained on it are kept).") from exc


def load(name: str, progress: Progress | None = None) -> Dataset:
    """The class data set ``name`` (``shared:cats_dogs@32-gray``) as memory-mapped uint8
    arrays of its cache, decoded first if this variant of this version is not cached.

    Raises SharedSetError, one sentence naming the set and the folder, when the set is
    gone or cannot be decoded. When the cache cannot be written the set is decoded into
    this process's memory instead (nothing shared, but it works).
    """
    set_name, side, gray = parse_name(name)
    entry = find(name)
    directory = _require_dir()
    if entry.problem:
        raise SharedSetError(f"The class data set {set_name!r} ({entry.file} in "
                             f"{_folder_word(directory)}) cannot be used: {entry.problem}")
    path = directory / entry.file
    try:
        fp = fingerprint(path)
    except OSError as exc:
        raise SharedSetError(
            f"The class data set {set_name!r} is not in {_folder_word(directory)} any more; "
            "pick another data set (runs trained on it are kept).") from exc
    variant = f"{side}x{side}-{'gray' if gray else 'rgb'}"
    base = cache_dir(directory) / entry.file
    try:
        folder = _cached(base, variant, fp, lambda: _decode(entry, path, side, gray, progress))
    except _CacheUnwritable:
        return _decode(entry, path, side, gray, progress)
    return _open(folder, name)


class _CacheUnwritable(Exception):
    """The cache folder cannot be made or written (read-only, full)."""


def _decode(entry: Entry, path: Path, side: int, gray: bool,
            progress: Progress | None) -> Dataset:
    """Decode the set at ``side``×``side``; SharedSetError naming it when it cannot be."""
    try:
        if entry.kind == "zip":
            with zipfile.ZipFile(path) as zf:
                def read_zip(info: zipfile.ZipInfo) -> bytes:
                    try:
                        return zf.read(info)
                    except Exception as exc:  # damaged, encrypted, an unknown method
                        raise BadUpload(f"{info.filename} cannot be read from the zip "
                                        f"({type(exc).__name__}: {exc}).") from exc

                ds = datasets.load_members(zf.infolist(), read_zip, (side, side), gray,
                                           entry.name, progress=progress, bounded=False)
        else:
            def read_file(info: zipfile.ZipInfo) -> bytes:
                try:
                    return (path / info.filename).read_bytes()
                except OSError as exc:
                    raise BadUpload(f"{info.filename} cannot be read ({exc.strerror or exc})."
                                    ) from exc

            ds = datasets.load_members(_members(path, "folder"), read_file, (side, side), gray,
                                       entry.name, progress=progress, bounded=False)
    except BadUpload as exc:
        raise SharedSetError(f"The class data set {entry.set_name!r} ({entry.file}) cannot "
                             f"be used: {exc}") from exc
    except (OSError, zipfile.BadZipFile) as exc:
        raise SharedSetError(
            f"The class data set {entry.set_name!r} ({entry.file}) cannot be read "
            f"({type(exc).__name__}: {exc}); ask the operator to replace it.") from exc
    info = DatasetInfo(entry.name, f"Class set: {entry.set_name}", ds.info.class_names,
                       ds.info.image_shape, test_source=ds.info.test_source,
                       skipped_files=ds.info.skipped_files)
    return Dataset(info, ds.x_train, ds.y_train, ds.x_test, ds.y_test)


def _cached(base: Path, variant: str, fp: str, make: Callable[[], Dataset]) -> Path:
    """The cache folder ``base/<variant>-<fp>``, made by ``make()`` under the variant's lock
    if no other process has made it; older versions of the variant are deleted then.

    A decode that failed is remembered beside it (``.error``), so other processes do not
    decode it again until the set changes.
    """
    final = base / f"{variant}-{fp}"
    if (final / "info.json").is_file():
        return final
    error = base / f"{variant}-{fp}.error"
    try:
        base.mkdir(parents=True, exist_ok=True)
        lock = open(base / f"{variant}.lock", "a+b")
    except OSError as exc:
        raise _CacheUnwritable from exc
    with lock:
        # One decoder per set and variant; the lock ends when the file closes (or the
        # process dies), so a killed decoder never leaves it held.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "info.json").is_file():  # another process decoded it meanwhile
            return final
        if error.is_file():
            raise SharedSetError(error.read_text(encoding="utf-8"))
        _remove_stale(base, variant, keep=final)
        try:
            ds = make()
        except SharedSetError as exc:
            with contextlib.suppress(OSError):
                error.write_text(str(exc), encoding="utf-8")
            raise
        try:
            _write(ds, base, variant, fp, final)
        except OSError as exc:
            raise _CacheUnwritable from exc
        decoded.append(str(final))
        return final


def _remove_stale(base: Path, variant: str, keep: Path) -> None:
    """Delete the variant's other versions, failed decodes and cut-off writes. A process
    still mapping an old version keeps reading it: its files live until unmapped."""
    for old in base.glob(f"{variant}-*"):
        if old != keep:
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
    for tmp in base.glob(f".tmp-{variant}-*"):
        shutil.rmtree(tmp, ignore_errors=True)


def _write(ds: Dataset, base: Path, variant: str, fp: str, final: Path) -> None:
    """The arrays as .npy and the info as JSON, in a temporary folder renamed to ``final``."""
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{variant}-", dir=base))
    try:
        for key in ARRAYS:
            np.save(tmp / f"{key}.npy", np.ascontiguousarray(getattr(ds, key)))
        info = ds.info
        (tmp / "info.json").write_text(json.dumps({
            "title": info.title, "class_names": list(info.class_names),
            "image_shape": list(info.image_shape), "test_source": info.test_source,
            "skipped_files": info.skipped_files, "fingerprint": fp,
            "decoded_by": os.getpid(), "decoded_at": time.time()}), encoding="utf-8")
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _open(folder: Path, name: str) -> Dataset:
    """The cached set in ``folder`` as read-only memory maps, called ``name``."""
    raw = json.loads((folder / "info.json").read_text(encoding="utf-8"))
    info = DatasetInfo(name, str(raw["title"]), tuple(raw["class_names"]),
                       tuple(raw["image_shape"]), test_source=raw.get("test_source"),
                       skipped_files=int(raw.get("skipped_files") or 0))
    arrays = [np.load(folder / f"{key}.npy", mmap_mode="r", allow_pickle=False)
              for key in ARRAYS]
    return Dataset(info, *arrays)
