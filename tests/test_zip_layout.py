"""Zips read as Keras reads folders: class folders at any depth, an archive's own training
and test parts kept (the reference notes' cats-vs-dogs layout), the files operating systems
add skipped and counted, and each bad layout refused in one sentence."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image
from shapes import zip_of

from cnnlab.data import datasets
from cnnlab.data.datasets import BadUpload

CLASSES = ("cats", "dogs")
# What macOS, Windows and zip tools add beside the images: 7 files, all skipped.
JUNK = {
    ".DS_Store": b"\0\0\0\1Bud1",
    "training_set/.DS_Store": b"\0\0\0\1Bud1",
    "training_set/training_set/cats/.DS_Store": b"\0\0\0\1Bud1",
    "__MACOSX/._training_set": b"\0\5\26\7 AppleDouble",
    "__MACOSX/training_set/training_set/cats/._cat.1.jpg": b"\0\5\26\7 AppleDouble",
    "test_set/test_set/dogs/Thumbs.db": b"\xd0\xcf\x11\xe0",
    "test_set/desktop.ini": b"[.ShellClassInfo]",
}
FOLDERS = ("training_set/", "training_set/training_set/", "test_set/", "__MACOSX/")


def level(part: str, label: int, i: int) -> int:
    """The grey level of image ``i`` of class ``label`` in ``part``: training images are
    dark, test images light, so each decoded image shows where it came from."""
    return (20 if part == "training_set" else 140) + 40 * label + 5 * i


def picture(value: int, fmt: str) -> bytes:
    """A small solid grey picture as ``fmt`` ("JPEG" or "PNG") bytes."""
    buf = io.BytesIO()
    Image.new("RGB", (20, 14), (value, value, value)).save(buf, format=fmt)
    return buf.getvalue()


def layout(parts: dict[str, dict[str, int]], root: str = "") -> dict[str, bytes]:
    """Members ``{root}{folder}{class}/{n}.png`` for ``parts`` = {folder: {class: count}}."""
    return {f"{root}{folder}{cls}/{i}.png": picture(90, "PNG")
            for folder, counts in parts.items() for cls, n in counts.items() for i in range(n)}


def notes_zip(train: int = 4, test: int = 2, root: str = "",
              extra: dict[str, bytes] | None = None) -> bytes:
    """The notes' archive: ``training_set/training_set/{cats,dogs}`` and
    ``test_set/test_set/{cats,dogs}`` (cats JPEG, dogs PNG), with OS junk and folder
    entries, under ``root`` (e.g. "cat_dog/") when given."""
    members = {root + folder: b"" for folder in FOLDERS}
    for part, n in (("training_set", train), ("test_set", test)):
        for label, cls in enumerate(CLASSES):
            for i in range(n):
                fmt, ext = ("JPEG", "jpg") if cls == "cats" else ("PNG", "png")
                members[f"{root}{part}/{part}/{cls}/{cls[:-1]}.{i}.{ext}"] = picture(
                    level(part, label, i), fmt)
    members.update({root + name: data for name, data in {**JUNK, **(extra or {})}.items()})
    return zip_of(members)


def levels(x: np.ndarray) -> list[int]:
    """Each image's grey level (JPEG may be off by a step or two)."""
    return [int(round(v)) for v in x.reshape(len(x), -1).mean(axis=1)]


# ---------------------------------------------------------------------------- the notes' layout


def test_the_notes_archive_keeps_its_test_part():
    ds = datasets.load_zip(notes_zip(train=4, test=2), (16, 16), False, name="folder:cd.zip")
    assert ds.info.class_names == CLASSES
    assert len(ds.y_train) == 8 and len(ds.y_test) == 4
    assert np.bincount(ds.y_test).tolist() == [2, 2]
    # Exactly the test part's images, each with its own class; none of them in training.
    want = sorted((level("test_set", c, i), c) for c in range(2) for i in range(2))
    got = sorted(zip(levels(ds.x_test), ds.y_test.tolist(), strict=True))
    assert [c for _, c in got] == [c for _, c in want]
    assert all(abs(g - w) <= 2 for (g, _), (w, _) in zip(got, want, strict=True))
    assert max(levels(ds.x_train)) < 120 < min(levels(ds.x_test))
    assert ds.info.test_source == "test_set/"
    assert ds.info.skipped_files == len(JUNK)  # folder entries are not junk


def test_a_common_root_above_the_parts_is_read_the_same():
    ds = datasets.load_zip(notes_zip(root="cat_dog/"), (16, 16), True)
    assert ds.info.class_names == CLASSES and ds.info.image_shape == (16, 16, 1)
    assert (len(ds.y_train), len(ds.y_test)) == (8, 4)
    assert ds.info.test_source == "cat_dog/test_set/"
    assert ds.info.skipped_files == len(JUNK)


def test_val_part_joins_training_and_test_stays_the_test_part():
    data = zip_of(layout({"train/": {"a": 5, "b": 5}, "val/": {"a": 2, "b": 2},
                            "test/": {"a": 3, "b": 1}}, root="pets/"))
    ds = datasets.load_zip(data, (8, 8), True)
    assert (len(ds.y_train), len(ds.y_test)) == (14, 4)
    assert np.bincount(ds.y_test).tolist() == [3, 1]
    assert ds.info.test_source == "pets/test/" and ds.info.skipped_files == 0


def test_validation_at_training_time_comes_from_the_training_part_only():
    from cnnlab.train import training

    ds = datasets.load_zip(notes_zip(train=10, test=3), (16, 16), False, name="folder:cd.zip")
    request = training.default_request(ds)
    x_fit, _, x_val, y_val = training.prepare_data(ds, request)
    assert len(x_fit) + len(x_val) == len(ds.y_train) == 20 and len(y_val) >= 2
    assert max(levels(x_val)) < 120  # dark: training-part images only
    assert len(ds.y_test) == 6  # the test part, untouched


def test_without_parts_the_split_is_random_as_before():
    # A single folder named like a part is a root, not a split; so is train/ with val/.
    for parts in ({"test/": {"cats": 5, "dogs": 5}}, {"train/": {"cats": 4, "dogs": 4},
                                                      "val/": {"cats": 1, "dogs": 1}}):
        ds = datasets.load_zip(zip_of(layout(parts)), (8, 8), True)
        assert ds.info.test_source is None
        assert np.bincount(ds.y_test).tolist() == [1, 1]  # 20 % of each class
    # Classes that happen to be called "train" and "bird", at the top: read as before.
    ds = datasets.load_zip(zip_of(layout({"": {"train": 5, "bird": 5}})), (8, 8), True)
    assert ds.info.class_names == ("bird", "train") and ds.info.test_source is None


def test_progress_ends_saying_what_was_skipped():
    calls: list[tuple[float, str]] = []
    datasets.load_zip(notes_zip(), (8, 8), True, progress=lambda f, t: calls.append((f, t)))
    assert calls[-1] == (1.0, "Decoded 12 images in 2 classes; 7 system files skipped")


@pytest.mark.parametrize("name, skipped", [
    (".DS_Store", True), ("a/b/.DS_Store", True), ("__MACOSX/._x.jpg", True),
    ("cat_dog/__MACOSX/cats/._x.jpg", True), ("Thumbs.db", True), ("a/THUMBS.DB", True),
    ("a/desktop.ini", True), ("cats/_DS_Store", True), ("cats/", True),
    ("cats/x.jpg", False), ("cats/notes.txt", False), ("__MACOSX.jpg", False),
])
def test_skipped_names(name: str, skipped: bool):
    assert datasets._skipped(name) is skipped


def test_any_other_non_image_is_still_refused_by_name():
    data = notes_zip(extra={"training_set/training_set/cats/notes.txt": b"hello"})
    with pytest.raises(BadUpload, match=r"training_set/training_set/cats/notes\.txt is not an "
                                        r"image; allowed are \.png"):
        datasets.load_zip(data, (8, 8), True)


def test_npz_round_trip_keeps_where_the_test_set_came_from(tmp_path):
    ds = datasets.load_zip(notes_zip(), (8, 8), True, name="folder:cd.zip")
    again = datasets.from_npz(datasets.to_npz_bytes(ds))
    assert again.info == ds.info and again.info.test_source == "test_set/"
    assert again.info.skipped_files == len(JUNK)
    assert np.array_equal(again.x_test, ds.x_test) and np.array_equal(again.y_test, ds.y_test)
    # A file written before these fields existed still reads, with their defaults.
    old = {k: v for k, v in json.loads(np.load(io.BytesIO(datasets.to_npz_bytes(ds)))[
        "info"].tobytes()).items() if k not in ("test_source", "skipped_files")}
    path = tmp_path / "old.npz"
    np.savez_compressed(path, x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test,
                        y_test=ds.y_test, info=np.frombuffer(json.dumps(old).encode(), np.uint8))
    info = datasets.from_npz(path).info
    assert info.test_source is None and info.skipped_files == 0
    assert info.class_names == CLASSES


# ---------------------------------------------------------------------------- bad layouts


BAD_LAYOUTS = {
    "split folder without classes": (
        {**layout({"train/": {"cats": 3, "dogs": 3}}), "test/1.png": picture(90, "PNG"),
         "test/2.png": picture(90, "PNG")},
        "test/ holds images directly (test/1.png), but the zip's test part needs one "
        "sub-folder per class", "such as test/cats/"),
    "nested split folder without classes": (
        {**layout({"training_set/training_set/": {"cats": 2, "dogs": 2}}),
         "test_set/test_set/1.png": picture(90, "PNG")},
        "test_set/test_set/ holds images directly", "test_set/test_set/cats/"),
    "class only in the test part": (
        layout({"train/": {"cats": 3, "dogs": 3}, "test/": {"birds": 1, "cats": 1, "dogs": 1}}),
        "Class 'birds' is only in the test part (test/)", "add 'birds' images to the training "
        "part (train/)"),
    "classes differ between parts": (
        layout({"train/": {"birds": 3, "cats": 3, "dogs": 3}, "test/": {"cats": 1, "dogs": 1}}),
        "The training part (train/) has class folders that the test part (test/) lacks: "
        "'birds'", "need the same class folders"),
    "image outside both parts": (
        {**layout({"train/": {"cats": 2, "dogs": 2}, "test/": {"cats": 1, "dogs": 1}}),
         "extra/cats/9.png": picture(90, "PNG")},
        "extra/cats/9.png is in neither the training part (train/) nor the test part (test/)",
        "move it into a class folder of one part"),
}


@pytest.mark.parametrize("case", BAD_LAYOUTS)
def test_bad_layout_is_refused_in_one_sentence_before_decoding(case, monkeypatch):
    members, given, todo = BAD_LAYOUTS[case]

    def no_decoding(*args, **kwargs):
        raise AssertionError("the layout is checked on names, before decoding")

    monkeypatch.setattr(datasets, "_decode", no_decoding)
    with pytest.raises(BadUpload) as err:
        datasets.load_zip(zip_of(members), (8, 8), True)
    message = str(err.value)
    assert given in message and todo in message
    assert message.endswith("zip again.") and not re.search(r"\.\s+[A-Z]", message)


# ---------------------------------------------------------------------------- the CLI


@pytest.mark.slow
def test_cli_trains_on_the_training_part_and_tests_on_the_test_part(tmp_path: Path):
    archive = tmp_path / "cat_dog.zip"
    archive.write_bytes(notes_zip(train=6, test=3, root="cat_dog/"))
    done = subprocess.run(
        [sys.executable, "-m", "cnnlab", "train", "--dataset", str(archive), "--image-size",
         "16", "--epochs", "1", "--runs-dir", str(tmp_path / "runs"), "--json"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "finished" and 0.0 <= result["test_accuracy"] <= 1.0
    metrics = json.loads((Path(result["run_dir"]) / "metrics.json").read_text())
    assert metrics["n_test"] == 6  # the test part's 3 cats and 3 dogs, nothing else
    assert metrics["test_accuracy"] == result["test_accuracy"]
