"""A data set made picture by picture (cnnlab.data.picture_set): names, limits, the build."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from conftest import APPTEST_TIMEOUT, ROOT, plain
from PIL import Image
from shapes import shape_image
from streamlit.testing.v1 import AppTest

from cnnlab.data import datasets, picture_set
from cnnlab.data.datasets import UPLOAD_PREFIX, BadUpload
from cnnlab.data.picture_set import PictureSet, class_name_problems
from cnnlab.model.config import default_preset
from pages import state


def jpeg(kind: str = "circle", seed: int = 0, size: int = 64) -> bytes:
    """A camera-like JPEG of a shape."""
    out = io.BytesIO()
    shape_image(kind, np.random.default_rng(seed), size).save(out, format="JPEG")
    return out.getvalue()


def filled(per_class: tuple[int, ...] = (5, 4), names: tuple[str, ...] = ("cup", "pen"),
           size: int = 64) -> PictureSet:
    pictures = PictureSet(list(names))
    for slot, n in enumerate(per_class):
        for i in range(n):
            assert pictures.add(slot, jpeg(("circle", "square")[slot % 2], seed=slot * 100 + i,
                                           size=size), "shot.jpg", f"id-{slot}-{i}")
    return pictures


def test_names_are_checked_like_zip_class_folders():
    assert class_name_problems(["cup", "pen"]) == []
    assert class_name_problems(["  cup ", "pen"]) == []  # spaces around are dropped
    cases = {
        ("cup",): "1 classes were given; 2 to 10",
        ("cup", ""): "Class 2 has no name",
        ("cup", "   "): "Class 2 has no name",
        ("cup", "Cup"): "Classes 1 and 2 are both called 'Cup'",
        ("cup", "a/b"): "cannot be a folder name",
        ("cup", "..", ): "cannot be a folder name",
        ("cup", ".hidden"): "cannot be a folder name",
        ("cup", "__MACOSX"): "cannot be a folder name",
        ("cup", "pe\u202en"): "control or bidirectional-text characters (U+202E)",
        ("cup", "x" * 41): "has 41 characters; at most 40",
    }
    for names, expected in cases.items():
        problems = class_name_problems(list(names))
        assert len(problems) == 1 and expected in problems[0], (names, problems)
    assert "11 classes were given" in class_name_problems([f"c{i}" for i in range(11)])[0]


def test_a_photo_is_added_once_per_file_id_and_can_be_deleted():
    pictures = PictureSet(["cup", "pen"])
    data = jpeg(size=900)
    assert pictures.add(0, data, "camera.jpg", "photo-1")
    assert not pictures.add(0, data, "camera.jpg", "photo-1")  # the same photo on a rerun
    assert not pictures.add(1, data, "camera.jpg", "photo-1")  # …even after a class switch
    assert pictures.counts() == [1, 0]
    kept = pictures.slots[0][0]
    assert kept.suffix == ".jpg" and kept.data[:2] == b"\xff\xd8"
    with Image.open(io.BytesIO(kept.data)) as im:
        assert max(im.size) == 512  # reduced once, like every uploaded picture
    with Image.open(io.BytesIO(kept.thumbnail)) as im:
        assert max(im.size) == picture_set.THUMBNAIL_SIDE
    pictures.remove(0, "photo-1")
    pictures.remove(0, "photo-1")  # a double click does no harm
    assert pictures.counts() == [0, 0]


def test_transparent_pictures_stay_png_and_turn_white_in_the_data_set():
    pictures = PictureSet(["clear", "red"])
    for slot, colour in enumerate([(0, 0, 0, 0), (255, 0, 0, 255)]):
        for i in range(3):
            out = io.BytesIO()
            Image.new("RGBA", (20, 20), colour).save(out, format="PNG")
            pictures.add(slot, out.getvalue(), "p.png", f"{slot}{i}")
    assert {p.suffix for s in pictures.slots for p in s} == {".png"}
    ds = pictures.build("glass", (8, 8), grayscale=False)
    clear = np.concatenate([ds.x_train[ds.y_train == 0], ds.x_test[ds.y_test == 0]])
    assert (clear == 255).all()


def test_unreadable_and_huge_pictures_are_refused_once():
    pictures = PictureSet(["cup", "pen"])
    with pytest.raises(BadUpload, match=r"notes.txt is not a readable picture"):
        pictures.add(0, b"not a picture", "notes.txt", "f1")
    assert not pictures.add(0, b"not a picture", "notes.txt", "f1")  # tried once
    huge = io.BytesIO()
    Image.new("L", (8000, 8000)).save(huge, format="PNG")
    with pytest.raises(BadUpload, match=r"8000×8000 pixels; at most 50,000,000"):
        pictures.add(0, huge.getvalue(), "huge.png", "f2")
    assert pictures.counts() == [0, 0]


def test_limits_per_class_and_in_all(monkeypatch):
    monkeypatch.setattr(picture_set, "MAX_PER_CLASS", 3)
    monkeypatch.setattr(picture_set, "MAX_PICTURES", 5)
    pictures = filled((3, 2))
    with pytest.raises(BadUpload, match=r"'cup' has 3 pictures, the most a class may have"):
        pictures.add(0, jpeg(), "more.jpg", "more-1")
    with pytest.raises(BadUpload, match=r"has 5 pictures, the most allowed in all \(3 per "):
        pictures.add(1, jpeg(), "more.jpg", "more-2")
    assert pictures.counts() == [3, 2]


def test_renaming_keeps_pictures_and_a_full_class_cannot_be_removed():
    pictures = filled((2, 2))
    pictures.rename(["mug", "pencil", ""])
    assert pictures.counts() == [2, 2, 0] and pictures.names == ["mug", "pencil", ""]
    assert pictures.problems() == ["Class 3 has no name; type a name for it (e.g. cup)."]
    pictures.rename(["mug", "pencil"])  # the empty third class goes
    with pytest.raises(BadUpload, match=r"Class 2 \('pencil'\) holds 2 pictures"):
        pictures.rename(["mug"])
    assert pictures.counts() == [2, 2]


def test_saving_needs_three_pictures_per_class_and_valid_names():
    pictures = filled((3, 2))
    with pytest.raises(BadUpload, match=r"Class 'pen' has 2 pictures; every class needs at "
                                        r"least 3"):
        pictures.build("desk", (32, 32), False)
    pictures = filled((3, 3), names=("cup", "cup"))
    with pytest.raises(BadUpload, match=r"both called 'cup'"):
        pictures.build("desk", (32, 32), False)
    with pytest.raises(BadUpload, match=r"no name"):
        filled((3, 3)).build("  ", (32, 32), False)
    with pytest.raises(BadUpload, match=r"Image size 300x300 is not allowed"):
        filled((3, 3)).build("desk", (300, 300), False)


def test_the_data_set_is_a_zip_upload_of_its_download():
    pictures = filled((6, 5), names=("pen", "cup"))
    ds = pictures.build(" my desk ", (32, 32), grayscale=False)
    # Named and shaped like an upload: private, own-images preset, uint8 (n, h, w, c).
    assert ds.info.name == f"{UPLOAD_PREFIX}my desk"
    assert default_preset(ds.info.name) == "own-images"
    assert ds.info.class_names == ("cup", "pen")  # folders are read in alphabetical order
    assert ds.info.image_shape == (32, 32, 3)
    assert ds.x_train.dtype == np.uint8 and ds.x_train.shape[1:] == (32, 32, 3)
    # Stratified 20 % test split: 1 of 5 cups, 1 of 6 pens.
    assert np.bincount(ds.y_test, minlength=2).tolist() == [1, 1]
    assert np.bincount(ds.y_train, minlength=2).tolist() == [4, 5]
    # The download holds class folders, and uploading it gives the same data set.
    data = pictures.to_zip()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert sorted(zf.namelist())[:2] == ["cup/001.jpg", "cup/002.jpg"]
        assert len(zf.namelist()) == 11
    again = datasets.load_zip(data, (32, 32), False, name=ds.info.name)
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(getattr(ds, field), getattr(again, field)), field
    gray = pictures.build("my desk", (16, 16), grayscale=True)
    assert gray.info.image_shape == (16, 16, 1) and gray.x_test.shape[1:] == (16, 16, 1)


# ---------------------------------------------------------------------------- Explore's form
# AppTest drives st.camera_input itself (set_value with a JPEG), so the camera route is
# tested as such; the uploaded-pictures route goes through the same PictureSet.add.


def explore_page():
    at = AppTest.from_file(str(ROOT / "pages" / "explore.py"), default_timeout=APPTEST_TIMEOUT)
    at.session_state[state.DATASET_KEY] = "mnist_sample"
    return at.run()


def kept(at) -> PictureSet:
    return at.session_state["explore_pictures"]


@pytest.mark.slow
def test_explore_makes_a_data_set_from_camera_photos_and_files():
    at = explore_page()
    assert not at.exception
    # No names yet: a hint (not a warning on every visit), and nothing to add pictures with.
    assert not at.warning and not at.camera_input
    assert not at.file_uploader  # the zip upload is a component (pages/zip_upload.py)
    assert any("Type a name for every class" in c.value for c in at.caption)
    at.text_input(key="mk_name_0").input("cup").run()
    assert not at.warning and not at.file_uploader  # pictures wait for every name
    at.text_input(key="mk_name_1").input("cup").run()
    assert [plain(w.value) for w in at.warning] == [
        "Classes 1 and 2 are both called 'cup'; every class needs its own name: rename one."]
    at.text_input(key="mk_name_1").input("pen").run()
    assert not at.warning and not at.camera_input  # the camera waits for its toggle
    at.toggle(key="mk_use_camera").set_value(True).run()

    # Two photos for "cup": each added once, however often the page reruns.
    for i in range(2):
        at.camera_input(key="mk_camera").set_value(("shot.jpg", jpeg(seed=i), "image/jpeg"))
        at.run()
        at.run()
    assert not at.exception and not at.error
    assert kept(at).counts() == [2, 0]
    assert at.radio(key="mk_class").options == ["cup", "pen"]
    assert "Pictures per class: cup 2, pen 0" in [c.value for c in at.caption]
    assert len(at.image) == 2  # the thumbnails of the picked class

    # "pen": one photo and two uploaded files; the camera's last photo is not added again.
    at.radio(key="mk_class").set_value(1).run()
    assert kept(at).counts() == [2, 0] and len(at.image) == 0
    at.camera_input(key="mk_camera").set_value(("shot.jpg", jpeg("square", 9), "image/jpeg"))
    at.file_uploader(key="mk_files").set_value(
        [("a.jpg", jpeg("square", 10), "image/jpeg"), ("b.png", b"text", "image/png")])
    at.run()
    assert kept(at).counts() == [2, 2]
    assert len(at.error) == 1 and "b.png is not a readable picture" in plain(at.error[0].value)

    # Delete one "pen" picture: saving then says what is missing.
    first = kept(at).slots[1][0].id
    at.button(key=f"mk_del_{first}").click().run()
    assert kept(at).counts() == [2, 1] and len(at.image) == 1
    at.button(key="mk_save").click().run()
    assert not at.exception
    needs = "every class needs at least 3 (to train on, to check each epoch on and to test on)"
    assert [plain(e.value) for e in at.error] == [
        f"Class 'cup' has 2 pictures; {needs}: add more. "
        f"Class 'pen' has 1 picture; {needs}: add more."]
    assert at.session_state[state.DATASET_KEY] == "mnist_sample"  # nothing replaced

    at.file_uploader(key="mk_files").set_value(
        [("c.png", jpeg("square", 11), "image/png"), ("d.png", jpeg("square", 12), "image/png")])
    at.run()
    assert kept(at).counts() == [2, 3]
    at.radio(key="mk_class").set_value(0).run()
    at.camera_input(key="mk_camera").set_value(("shot.jpg", jpeg(seed=5), "image/jpeg"))
    at.run()
    assert kept(at).counts() == [3, 3]
    at.select_slider(key="mk_side").set_value(32).run()
    at.button(key="mk_save").click().run()
    assert not at.exception and not at.error
    name = f"{UPLOAD_PREFIX}my pictures"
    assert at.session_state[state.DATASET_KEY] == name
    assert at.selectbox(key="explore_dataset").value == name
    ds = at.session_state[state.UPLOAD_KEY]
    assert ds.info.class_names == ("cup", "pen") and ds.info.image_shape == (32, 32, 3)
    assert len(ds.y_train) == 4 and len(ds.y_test) == 2
    assert "Saved as **my pictures**" in plain(at.success[0].value)
    assert [m.value for m in at.metric][-1] == "2"  # the page now explores it: 2 classes
    assert any("What the model trains on" in h.value for h in at.subheader)
