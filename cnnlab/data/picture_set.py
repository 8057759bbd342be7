"""A data set made picture by picture: camera shots and uploaded pictures, class by class.

Explore's "Make a data set" gathers pictures into a ``PictureSet``; "Save" turns it into
the same kind of Dataset as a zip upload. It does so by writing the pictures as a zip of
class folders and reading that back with ``datasets.load_zip``, so the data set is exactly
what uploading the downloaded zip later gives: the same decoding, resize, uint8 layout,
stratified test split, name checks and limits. Each picture is checked and reduced once,
when it is added, by ``preprocess.open_image`` (like every other uploaded picture), so the
set stays small in the server's memory however large the camera's photos are.

Example::

    pictures = PictureSet(["cup", "pen"])
    pictures.add(0, jpeg_bytes, "shot.jpg", source_id="file-id-1")
    ...
    ds = pictures.build("my desk", size=(64, 64), grayscale=False)
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field

from cnnlab import text
from cnnlab.data.datasets import UPLOAD_PREFIX, BadUpload, Dataset, load_zip

MIN_CLASSES, MAX_CLASSES = 2, 10
MAX_PER_CLASS = 100
MAX_PICTURES = 500  # ~50 KB each once reduced: at most ~25 MB of one session's memory
# One to train on, one to check each epoch on, one to test on: with two, the validation
# split has nothing left and early stopping and the best checkpoint have nothing to go by.
MIN_PER_CLASS = 3
MAX_NAME_LENGTH = 40
THUMBNAIL_SIDE = 96
JPEG_QUALITY = 90
# A class name becomes a folder name in the zip (and on the disk of whoever unzips it).
FOLDER_UNSAFE = '/\\:*?"<>|'


@dataclass(frozen=True)
class Picture:
    """One kept picture.

    Args:
        id: unique within its set (the camera's or uploader's file id); names the widgets.
        data: the picture file, JPEG (PNG when it has transparency), at most
            ``preprocess.MAX_PICTURE_SIDE`` pixels a side.
        suffix: ``".jpg"`` or ``".png"``, matching ``data``.
        thumbnail: a small JPEG to show, at most THUMBNAIL_SIDE pixels a side.
    """

    id: str
    data: bytes
    suffix: str
    thumbnail: bytes


def class_name_problems(names: Sequence[str]) -> list[str]:
    """Why ``names`` (stripped) cannot be the class folders of a zip upload, one sentence
    each; an empty list when they can."""
    problems: list[str] = []
    if not MIN_CLASSES <= len(names) <= MAX_CLASSES:
        problems.append(f"{len(names)} classes were given; {MIN_CLASSES} to {MAX_CLASSES} "
                        "are allowed.")
    seen: dict[str, int] = {}
    for i, raw in enumerate(names, start=1):
        name = raw.strip()
        hidden = text.name_problem(name, f"name of class {i}")
        if not name:
            problems.append(f"Class {i} has no name; type a name for it (e.g. cup).")
        elif hidden:
            problems.append(hidden)
        elif len(name) > MAX_NAME_LENGTH:
            problems.append(f"The name of class {i} has {len(name)} characters; at most "
                            f"{MAX_NAME_LENGTH} are allowed: shorten it.")
        elif any(c in FOLDER_UNSAFE for c in name) or name.startswith(".") or (
                name == "__MACOSX"):
            # load_zip would read "a/b" as class "b" and skips __MACOSX; "." hides a folder.
            problems.append(f"The class name {name!r} cannot be a folder name; allowed are "
                            f"names without {' '.join(FOLDER_UNSAFE)}, not starting with '.' "
                            "and other than __MACOSX: rename it.")
        elif name.casefold() in seen:
            # Folders differing only in case merge when unzipped on macOS or Windows.
            problems.append(f"Classes {seen[name.casefold()]} and {i} are both called "
                            f"{name!r}; every class needs its own name: rename one.")
        else:
            seen[name.casefold()] = i
    return problems



def make_picture(data: bytes, name: str, picture_id: str) -> Picture:
    """A picture file (any size, PNG, JPEG, …) checked and reduced for keeping; BadUpload
    saying what is wrong when it cannot be used."""
    from PIL import Image, ImageOps

    from cnnlab.data.preprocess import open_image

    try:
        image = open_image(data, name)  # the size check and the reduction every upload gets
    except ValueError as exc:
        raise BadUpload(str(exc)) from exc
    # A phone photo's pixels may lie sideways with an EXIF note to turn them; the note is
    # lost when the picture is saved again below, so turn the pixels now.
    image = ImageOps.exif_transpose(image)
    # Transparency is kept (PNG): load_zip turns it white, as for a picture in a zip.
    keeps_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if keeps_alpha:
        image = image.convert("RGBA")
    elif image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    out = io.BytesIO()
    if keeps_alpha:
        image.save(out, format="PNG")
    else:
        image.save(out, format="JPEG", quality=JPEG_QUALITY)
    thumb = image.convert("RGB")
    thumb.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    small = io.BytesIO()
    thumb.save(small, format="JPEG", quality=80)
    return Picture(picture_id, out.getvalue(), ".png" if keeps_alpha else ".jpg",
                   small.getvalue())


@dataclass
class PictureSet:
    """Pictures per class, gathered one at a time before they become a Dataset.

    Pictures belong to a class by position (slot), not by name, so renaming a class keeps
    its pictures.

    Args:
        names: the class names as typed (checked by ``class_name_problems``).
        slots: the pictures of each class, in the order they were added.
        seen: source ids (camera/uploader file ids) already tried: a Streamlit rerun hands
            back the same photo, which must be added once.
    """

    names: list[str] = field(default_factory=lambda: ["", ""])
    slots: list[list[Picture]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.rename(self.names)

    # ------------------------------------------------------------------ classes

    def rename(self, names: Sequence[str]) -> None:
        """Set the class names (their number too). Removing a class that holds pictures is
        refused with BadUpload, so no picture is lost by accident."""
        if len(names) > MAX_CLASSES:
            raise BadUpload(f"{len(names)} classes were asked for; at most {MAX_CLASSES} are "
                            "allowed.")
        dropped = [i for i in range(len(names), len(self.slots)) if self.slots[i]]
        if dropped:
            raise BadUpload(f"Class {dropped[0] + 1} ({self.names[dropped[0]].strip()!r}) "
                            f"holds {len(self.slots[dropped[0]])} pictures; delete them before "
                            "removing the class.")
        self.names = [n.strip() for n in names]
        self.slots = self.slots[:len(names)] + [[] for _ in range(len(names) - len(self.slots))]

    def problems(self) -> list[str]:
        """Why the class names cannot be used (empty when they can)."""
        return class_name_problems(self.names)

    # ------------------------------------------------------------------ pictures

    def counts(self) -> list[int]:
        """Pictures per class."""
        return [len(s) for s in self.slots]

    def total(self) -> int:
        """Pictures in all classes."""
        return sum(self.counts())

    def add(self, slot: int, data: bytes, name: str, source_id: str) -> bool:
        """Add a picture file to class ``slot``; False when ``source_id`` was tried before.

        Raises BadUpload (one sentence) when a limit is reached or the file is not a usable
        picture. A source is tried once either way, so an error is not repeated on reruns.
        """
        if source_id in self.seen:
            return False
        self.seen.add(source_id)
        label = self.names[slot] or f"class {slot + 1}"
        if len(self.slots[slot]) >= MAX_PER_CLASS:
            raise BadUpload(f"{name} was not added: {label!r} has {MAX_PER_CLASS} pictures, the "
                            f"most a class may have; delete some first.")
        if self.total() >= MAX_PICTURES:
            raise BadUpload(f"{name} was not added: the set has {MAX_PICTURES} pictures, the "
                            f"most allowed in all ({MAX_PER_CLASS} per class); delete some "
                            "first.")
        self.slots[slot].append(make_picture(data, name, source_id))
        return True

    def remove(self, slot: int, picture_id: str) -> None:
        """Delete a picture (nothing happens when it is already gone: a double click)."""
        self.slots[slot] = [p for p in self.slots[slot] if p.id != picture_id]

    # ------------------------------------------------------------------ saving

    def save_problems(self) -> list[str]:
        """Why the set cannot be saved yet, one sentence each (empty when it can)."""
        problems = self.problems()
        for name, count in zip(self.names, self.counts(), strict=True):
            if count < MIN_PER_CLASS:
                problems.append(
                    f"Class {name or '(unnamed)'!r} has {count} picture{'s' * (count != 1)}; "
                    f"every class needs at least {MIN_PER_CLASS} (to train on, to check "
                    "each epoch on and to test on): add more."
                )
        return problems

    def to_zip(self) -> bytes:
        """The pictures as a zip of class folders (``cup/001.jpg``, …): what a zip upload
        takes, so the set can be uploaded again in a later session."""
        buf = io.BytesIO()
        # Stored, not deflated: JPEGs do not shrink, and storing is instant.
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
            for name, pictures in zip(self.names, self.slots, strict=True):
                for n, picture in enumerate(pictures, start=1):
                    zf.writestr(f"{name}/{n:03d}{picture.suffix}", picture.data)
        return buf.getvalue()

    def build(self, title: str, size: tuple[int, int], grayscale: bool,
              test_fraction: float = 0.2) -> Dataset:
        """The pictures as the user's own data set ``folder:<title>``, built exactly as a zip
        upload of ``to_zip()`` (classes in alphabetical order, as folders are read).

        Raises BadUpload naming every problem (names, too few pictures, size).
        """
        problems = self.save_problems()
        if not title.strip():
            problems.insert(0, "The data set has no name; type one (e.g. my desk).")
        if problems:
            raise BadUpload(" ".join(problems))
        return load_zip(self.to_zip(), size, grayscale, name=f"{UPLOAD_PREFIX}{title.strip()}",
                        test_fraction=test_fraction)
