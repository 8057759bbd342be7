"""A user's own corrections: drawings the model got wrong, saved with the right label.

Each person has one correction set per data set, on disk beside the runs::

    <runs root>/.corrections/<user name>/<data set key>/
        set.json             the set's classes and image shape (fixed at the first add)
        <correction id>.json one correction: label, time, the uint8 pixels (base64)

One file per correction, written atomically (``runs.write_text``), so adding and deleting
need no index and no lock, and a killed process never leaves half a correction. User names
and data set names are untrusted: a user name must already be a plain file name (refused
otherwise, never rewritten, so two people cannot share a folder); a data set name becomes a
slug plus a hash. Every function takes the ``User`` whose set it reads, so Ann's calls only
ever reach Ann's folder. Pure Python and NumPy: no Keras.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.people.accounts import User
from cnnlab.runs import store as runs

CORRECTIONS_DIR = ".corrections"  # a dot name: never listed as a run
SET_FILE = "set.json"
MAX_PER_SET = 500  # bounds one person's disk use; far more than a lesson needs
# Lower case only: on a case-insensitive disk "Ann" and "ann" would share one folder.
_USER_RE = re.compile(r"^[a-z0-9][a-z0-9._@+-]{0,127}$")
_PLAIN_SET_RE = re.compile(r"^[a-z0-9_]{1,40}$")  # registry names such as mnist_sample
_ID_RE = re.compile(r"^[0-9]{20}-[0-9a-f]{8}$")  # nanoseconds first: sorts by time


class CorrectionsError(ValueError):
    """A correction cannot be saved, found or deleted; the message says why and what to do."""


@dataclass(frozen=True)
class Correction:
    """One saved correction: its id, the right label, the uint8 image and when it was saved."""

    id: str
    label: int
    image: np.ndarray
    created: str


def to_uint8(x: np.ndarray) -> np.ndarray:
    """A model input in [0, 1] (``preprocess.canvas_to_input``) as the uint8 image it came
    from: data sets stay uint8, and 0..255 is what a correction set stores."""
    return np.clip(np.rint(np.asarray(x, np.float32) * 255.0), 0, 255).astype(np.uint8)


def user_folder(user: User) -> str:
    """``user``'s folder name: the name itself, when it is a safe plain file name."""
    if not _USER_RE.match(user.name) or ".." in user.name:
        raise CorrectionsError(
            f"The user name {user.name!r} cannot name a corrections folder: use 1 to 128 "
            "lower-case letters, digits, '.', '_', '@', '+' or '-', starting with a letter or "
            "digit. Sign in with such a name to save corrections.")
    return user.name


def set_key(dataset: str) -> str:
    """The folder of ``dataset``'s set: a registry name as it is, any other (an upload's
    ``folder:<zip name>``) a slug plus a hash, so no name can leave the user's folder."""
    if _PLAIN_SET_RE.match(dataset):
        return dataset
    digest = hashlib.sha256(dataset.encode()).hexdigest()[:12]
    return f"{runs.slugify(dataset) or 'set'}-{digest}"


def set_dir(root: Path | str, user: User, dataset: str) -> Path:
    """Where ``user``'s corrections for ``dataset`` live under the runs root (not created)."""
    return Path(root) / CORRECTIONS_DIR / user_folder(user) / set_key(dataset)


def _check_id(correction_id: str) -> str:
    if not _ID_RE.match(correction_id):
        raise CorrectionsError(f"{correction_id!r} is not a correction id; pick a correction "
                               "from your list.")
    return correction_id


def _set_facts(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / SET_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def add(root: Path | str, user: User, dataset: str, image: np.ndarray, label: int,
        class_names: Sequence[str]) -> Correction:
    """Save ``image`` (uint8 ``(h, w, c)``, what the model saw) as class ``label`` in
    ``user``'s set for ``dataset``; the new Correction.

    The first correction fixes the set's classes and image shape; a later one that differs
    (another model with other classes under the same data set name) is refused.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3:
        raise CorrectionsError(f"A correction is a uint8 image (height, width, channels); got "
                               f"{image.dtype} of shape {image.shape}. Use to_uint8(x).")
    names = [str(n) for n in class_names]
    if not 0 <= int(label) < len(names):
        raise CorrectionsError(f"Label {label} is not a class: choose 0 to {len(names) - 1}.")
    folder = set_dir(root, user, dataset)
    facts = {"dataset": dataset, "class_names": names, "image_shape": list(image.shape)}
    known = _set_facts(folder)
    if known is None:
        folder.mkdir(parents=True, exist_ok=True)
        runs.write_json(folder / SET_FILE, facts)
    elif known.get("class_names") != names or known.get("image_shape") != list(image.shape):
        raise CorrectionsError(
            f"Your corrections for {dataset!r} are for {len(known.get('class_names', []))} "
            f"classes of {'×'.join(map(str, known.get('image_shape', [])))} images; this one "
            "is not. Delete those corrections first, or correct a model of that data set.")
    if len(_files(folder)) >= MAX_PER_SET:
        raise CorrectionsError(f"You have {MAX_PER_SET} corrections for {dataset!r}, the most "
                               "kept per data set: delete some before adding more.")
    correction = Correction(f"{time.time_ns():020d}-{secrets.token_hex(4)}",
                            int(label), image, runs.now_iso())
    runs.write_json(folder / f"{correction.id}.json", {
        "label": correction.label, "created": correction.created,
        "shape": list(image.shape), "pixels": base64.b64encode(image.tobytes()).decode(),
    })
    return correction


def _files(folder: Path) -> list[Path]:
    """The correction files of a set, oldest first (ids start with the time)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.json") if _ID_RE.match(p.stem))


def _read(path: Path) -> Correction | None:
    """One correction file, or None when it is unreadable (skipped, never fatal)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        shape = tuple(int(v) for v in data["shape"])
        pixels = np.frombuffer(base64.b64decode(data["pixels"]), np.uint8).reshape(shape)
        return Correction(path.stem, int(data["label"]), pixels, str(data.get("created", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def list_corrections(root: Path | str, user: User, dataset: str) -> list[Correction]:
    """``user``'s corrections for ``dataset``, oldest first (empty when there are none)."""
    found = (_read(p) for p in _files(set_dir(root, user, dataset)))
    return [c for c in found if c is not None]


def delete(root: Path | str, user: User, dataset: str, correction_id: str) -> None:
    """Delete one of ``user``'s corrections; CorrectionsError when ``user`` has no such one."""
    path = set_dir(root, user, dataset) / f"{_check_id(correction_id)}.json"
    try:
        path.unlink()
    except FileNotFoundError:
        raise CorrectionsError(f"You have no correction {correction_id} for {dataset!r} (it "
                               "may be deleted already).") from None


def load_arrays(root: Path | str, user: User, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """``user``'s corrections for ``dataset`` as (x uint8 ``(n, h, w, c)``, y int64 ``(n,)``)."""
    items = list_corrections(root, user, dataset)
    facts = _set_facts(set_dir(root, user, dataset)) or {}
    shape = tuple(facts.get("image_shape") or (0, 0, 0))
    x = np.stack([c.image for c in items]) if items else np.zeros((0, *shape), np.uint8)
    return x, np.array([c.label for c in items], np.int64)


def counts(items: Sequence[Correction], n_classes: int) -> list[int]:
    """How many corrections each class 0..n_classes-1 has."""
    labels = np.asarray([c.label for c in items], np.int64)
    return np.bincount(labels, minlength=n_classes)[:n_classes].tolist()
