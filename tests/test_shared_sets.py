"""Class data sets (cnnlab.data.shared_sets): the operator's folder of zips and image folders,
listed from names, decoded once per size into a memory-mapped cache shared by processes;
and their bad inputs: a folder or set that disappears, a zip replaced while cached, a file
that is no image, a cache that cannot be written."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import APPTEST_TIMEOUT, ROOT, plain, wait_until
from PIL import Image
from streamlit.testing.v1 import AppTest

from cnnlab.data import datasets, shared_sets
from cnnlab.data.shared_sets import SharedSetError
from cnnlab.model import config
from cnnlab.runs import store as runs
from cnnlab.train import engine_client, engine_server, executors
from cnnlab.train.executors import worker
from pages import state

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


def png(colour: tuple[int, int, int], seed: int, size: tuple[int, int] = (40, 30)) -> bytes:
    """A small PNG of ``colour`` with a little seeded noise (so images differ)."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.integers(-20, 20, (size[1], size[0], 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def class_files(classes: tuple[str, ...], per_class: int, part: str = "") -> dict[str, bytes]:
    """``{part/class/i.png: bytes}`` for each class."""
    return {f"{part}{c}/{i}.png": png(COLOURS[c], seed=hash((part, c, i)) % 1000)
            for c in classes for i in range(per_class)}


def write_zip(path: Path, files: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)


def write_folder(path: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)


@pytest.fixture
def sets_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A class data sets folder: two zips (one with train/test parts) and one image folder,
    beside a hidden file and a text file that are no sets; CNNLAB_DATASETS_DIR names it."""
    folder = tmp_path / "class-sets"
    folder.mkdir()
    write_zip(folder / "shapes.zip", {**class_files(("red", "blue"), 6, "train/"),
                                      **class_files(("red", "blue"), 2, "test/")})
    write_zip(folder / "pets.zip", class_files(("red", "green", "blue"), 5, "pets/"))
    write_folder(folder / "letters", class_files(("red", "green"), 6))
    (folder / ".hidden.zip").write_bytes(b"not listed")
    (folder / "README.txt").write_text("not a set")
    monkeypatch.setenv("CNNLAB_DATASETS_DIR", str(folder))
    monkeypatch.delenv("CNNLAB_DATASETS_CACHE", raising=False)
    shared_sets.forget()
    shared_sets.decoded.clear()
    return folder


# ---------------------------------------------------------------------------- settings, names


def test_the_folder_comes_from_the_environment_over_secrets_toml(tmp_path, monkeypatch):
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[datasets]\ndir = "/srv/sets"\ncache_dir = "/var/cache/sets"\n')
    monkeypatch.delenv("CNNLAB_DATASETS_DIR", raising=False)
    monkeypatch.delenv("CNNLAB_DATASETS_CACHE", raising=False)
    assert shared_sets.datasets_dir(tmp_path / "none.toml") is None
    assert shared_sets.datasets_dir(secrets) == Path("/srv/sets")
    assert shared_sets.cache_dir(Path("/srv/sets"), secrets) == Path("/var/cache/sets")
    assert shared_sets.cache_dir(Path("/srv/sets"), tmp_path / "none.toml") == Path(
        "/srv/sets/.cache")
    monkeypatch.setenv("CNNLAB_DATASETS_DIR", str(tmp_path))
    assert shared_sets.datasets_dir(secrets) == tmp_path
    assert shared_sets.listing() == []  # only secrets.toml here: a file, not a set


def test_names_carry_the_image_size_and_colour():
    assert shared_sets.shared_name("cats") == "shared:cats"
    assert shared_sets.shared_name("cats", 32) == "shared:cats@32"
    assert shared_sets.shared_name("cats", 28, True) == "shared:cats@28-gray"
    for name in ("shared:cats", "shared:cats@32", "shared:cats@28-gray", "shared:a@b@16"):
        assert shared_sets.shared_name(*shared_sets.parse_name(name)) == name
    assert shared_sets.parse_name("shared:cats@64-gray") == ("cats", 64, True)
    with pytest.raises(SharedSetError, match="asks for 4-pixel images; class data sets come in "
                       "16, 28, 32, 48, 64, 96, 128 pixels"):
        shared_sets.parse_name("shared:cats@4")
    assert config.default_preset("shared:cats@32") == config.OWN_IMAGES


# ---------------------------------------------------------------------------- listing


def test_listing_names_each_zip_and_folder_with_its_counts_from_names_only(sets_dir):
    listed = {e.name: e for e in shared_sets.listing()}
    assert list(listed) == ["shared:letters", "shared:pets", "shared:shapes"]
    assert listed["shared:shapes"].classes == ("blue", "red")
    assert (listed["shared:shapes"].train, listed["shared:shapes"].test) == (12, 4)
    assert (listed["shared:pets"].train, listed["shared:pets"].test) == (15, None)
    assert listed["shared:letters"].kind == "folder" and listed["shared:letters"].images == 12
    assert all(e.problem is None for e in listed.values())
    assert shared_sets.decoded == [] and not (sets_dir / ".cache").exists()  # nothing decoded


def test_a_zip_named_like_a_folder_keeps_its_extension(sets_dir):
    write_zip(sets_dir / "letters.zip", class_files(("red", "blue"), 3))
    names = [e.name for e in shared_sets.listing()]
    assert "shared:letters" in names and "shared:letters.zip" in names


def test_the_listing_is_kept_while_the_zip_stays_the_same(sets_dir, monkeypatch):
    shared_sets.listing()
    calls = []
    real = shared_sets._summarise
    monkeypatch.setattr(shared_sets, "_summarise",
                        lambda *a: calls.append(a[0]) or real(*a))
    shared_sets.listing()
    assert calls == []
    write_zip(sets_dir / "pets.zip", class_files(("red", "green"), 4))
    os.utime(sets_dir / "pets.zip", ns=(1, 10**18))
    assert {e.name: e.images for e in shared_sets.listing()}["shared:pets"] == 8
    assert calls == ["pets"]


# ---------------------------------------------------------------------------- loading, cache


def test_load_maps_uint8_arrays_from_a_cache_written_once(sets_dir):
    ds = shared_sets.load("shared:shapes")
    assert isinstance(ds.x_train, np.memmap) and ds.x_train.dtype == np.uint8
    assert not ds.x_train.flags.writeable
    assert ds.x_train.shape == (12, 64, 64, 3) and ds.x_test.shape == (4, 64, 64, 3)
    assert ds.info.name == "shared:shapes" and ds.info.class_names == ("blue", "red")
    assert ds.info.test_source == "test/" and ds.info.title == "Class set: shapes"
    assert len(shared_sets.decoded) == 1
    cached = Path(shared_sets.decoded[0])
    assert cached.parent == sets_dir / ".cache" / "shapes.zip"
    assert cached.name.startswith("64x64-rgb-")
    again = shared_sets.load("shared:shapes")
    assert len(shared_sets.decoded) == 1  # mapped, not decoded again
    np.testing.assert_array_equal(again.x_train, ds.x_train)
    small = shared_sets.load("shared:shapes@16-gray")
    assert small.x_train.shape == (12, 16, 16, 1) and small.info.name == "shared:shapes@16-gray"
    assert len(shared_sets.decoded) == 2  # each size is its own cache


def test_a_folder_reads_exactly_as_the_same_files_zipped(sets_dir):
    files = {p.relative_to(sets_dir / "letters").as_posix(): p.read_bytes()
             for p in sorted((sets_dir / "letters").rglob("*.png"))}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    zipped = datasets.load_zip(buf.getvalue(), (28, 28), True, name="folder:letters.zip")
    shared = shared_sets.load("shared:letters@28-gray")
    for key in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(shared, key), getattr(zipped, key))
    assert shared.info.class_names == zipped.info.class_names


def _load_in_child(start, results) -> None:
    start.wait()
    shared_sets.load("shared:pets")
    results.put(len(shared_sets.decoded))


def test_two_processes_loading_at_once_decode_once(sets_dir, monkeypatch):
    slow = shared_sets._decode

    def decode_slowly(*args):  # a decode long enough for the other process to arrive
        import time

        time.sleep(1.0)
        return slow(*args)

    monkeypatch.setattr(shared_sets, "_decode", decode_slowly)
    ctx = multiprocessing.get_context("fork")  # the children inherit the slow decode
    start, results = ctx.Event(), ctx.Queue()
    children = [ctx.Process(target=_load_in_child, args=(start, results)) for _ in range(2)]
    for child in children:
        child.start()
    start.set()
    decodes = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(30)
    assert sorted(decodes) == [0, 1]  # one decoded, the other waited and mapped its cache
    folders = [p for p in (sets_dir / ".cache" / "pets.zip").iterdir() if p.is_dir()]
    assert len(folders) == 1 and not [p for p in folders if p.name.startswith(".tmp")]


def test_a_zip_replaced_while_cached_is_decoded_again_and_its_old_cache_removed(sets_dir):
    first = shared_sets.load("shared:pets")
    old = Path(shared_sets.decoded[-1])
    write_zip(sets_dir / "pets.zip", class_files(("red", "blue"), 4, "pets/"))
    os.utime(sets_dir / "pets.zip", ns=(1, 10**18))  # a new mtime however fast the test
    second = shared_sets.load("shared:pets")
    assert second.info.class_names == ("blue", "red") and len(second.y_train) + len(
        second.y_test) == 8
    assert len(shared_sets.decoded) == 2 and not old.exists()
    assert first.info.class_names == ("blue", "green", "red")  # a running reader keeps its map
    assert float(first.x_train.mean()) >= 0


def test_a_changed_folder_gets_a_new_fingerprint(sets_dir, monkeypatch):
    monkeypatch.setattr(shared_sets, "RECHECK_S", 0.0)
    before = shared_sets.fingerprint(sets_dir / "letters")
    (sets_dir / "letters" / "red" / "0.png").write_bytes(png((1, 2, 3), 7))
    os.utime(sets_dir / "letters" / "red" / "0.png", ns=(1, 10**18))
    assert shared_sets.fingerprint(sets_dir / "letters") != before


# ---------------------------------------------------------------------------- bad inputs


def test_a_set_removed_after_listing_is_one_sentence_naming_it_and_the_folder(sets_dir):
    assert "shared:pets" in [e.name for e in shared_sets.listing()]
    (sets_dir / "pets.zip").unlink()
    with pytest.raises(SharedSetError) as caught:
        shared_sets.load("shared:pets")
    message = str(caught.value)
    assert message == ("The class data set 'pets' is not in the class data sets folder "
                       "'class-sets' any more; pick another data set (runs trained on it are "
                       "kept).")
    assert str(sets_dir) not in message  # the server's path stays on the server


def test_a_folder_that_disappears_is_one_sentence_for_listing_and_loading(sets_dir):
    shared_sets.load("shared:letters")
    os.rename(sets_dir, sets_dir.with_name("moved"))
    for call in (shared_sets.listing, lambda: shared_sets.load("shared:letters")):
        with pytest.raises(SharedSetError, match=r"^The class data sets folder 'class-sets' "
                           r"is not there or is not a folder any more; ask the operator"):
            call()


def test_a_file_that_is_no_image_is_named(sets_dir):
    (sets_dir / "letters" / "red" / "notes.txt").write_text("hello")
    entry = {e.name: e for e in shared_sets.listing()}["shared:letters"]
    assert entry.problem is not None and "red/notes.txt is not an image" in entry.problem
    with pytest.raises(SharedSetError, match=r"^The class data set 'letters' \(letters in the "
                       r"class data sets folder 'class-sets'\) cannot be used: red/notes.txt "
                       r"is not an image"):
        shared_sets.load("shared:letters")
    assert shared_sets.decoded == []


def test_an_image_that_does_not_decode_fails_once_for_every_process(sets_dir, monkeypatch):
    write_zip(sets_dir / "broken.zip", {**class_files(("red", "blue"), 3),
                                        "red/bad.png": b"\x89PNG not really"})
    with pytest.raises(SharedSetError, match=r"'broken' \(broken.zip\) cannot be used: "
                       r"red/bad.png is not a readable image"):
        shared_sets.load("shared:broken")
    assert list((sets_dir / ".cache" / "broken.zip").glob("*.error"))
    monkeypatch.setattr(shared_sets, "_decode", lambda *a: pytest.fail("decoded again"))
    with pytest.raises(SharedSetError, match="red/bad.png is not a readable image"):
        shared_sets.load("shared:broken")


def test_a_cache_that_cannot_be_written_decodes_in_memory(sets_dir, monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("CNNLAB_DATASETS_CACHE", str(blocker / "cache"))
    ds = shared_sets.load("shared:pets@16")
    assert ds.x_train.shape[1:] == (16, 16, 3) and not isinstance(ds.x_train, np.memmap)


def test_a_size_out_of_range_or_an_unknown_set_is_one_sentence(sets_dir):
    with pytest.raises(SharedSetError, match="300-pixel images; class data sets come in"):
        shared_sets.load("shared:pets@300")
    with pytest.raises(SharedSetError, match="'nothing' is not in the class data sets folder"):
        shared_sets.load("shared:nothing")


def test_no_folder_set_lists_nothing_and_loading_says_what_to_set(monkeypatch, tmp_path):
    monkeypatch.delenv("CNNLAB_DATASETS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # no .streamlit/secrets.toml here
    assert shared_sets.listing() == []
    with pytest.raises(SharedSetError, match="sets CNNLAB_DATASETS_DIR"):
        shared_sets.load("shared:pets")


# ---------------------------------------------------------------------------- engine, worker


def test_the_engine_sends_a_class_set_by_name_and_the_worker_maps_its_cache(sets_dir,
                                                                           runs_root):
    from cnnlab.train import jobs

    ds = shared_sets.load("shared:pets@16")
    engine = jobs.Engine.__new__(jobs.Engine)
    engine.root = runs_root
    ref = engine._dataset_ref(ds)
    assert ref == executors.DatasetRef("shared:pets@16") and ref.npz is None
    assert not (runs_root / jobs.UPLOADS_DIR).exists()  # nothing shipped
    loaded = worker.load_dataset(ref)
    assert isinstance(loaded.x_train, np.memmap) and loaded.info.image_shape == (16, 16, 3)
    wire = engine_client.dataset_wire(ds)
    assert wire == ("shared", "shared:pets@16")
    assert isinstance(engine_server.dataset_from_wire(wire).x_train, np.memmap)
    assert len(shared_sets.decoded) == 1


# ---------------------------------------------------------------------------- CLI


def test_cli_lists_class_sets_beside_the_registry(sets_dir):
    out = subprocess.run([sys.executable, "-m", "cnnlab", "datasets", "--json"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env={**os.environ, "CNNLAB_DATASETS_DIR": str(sets_dir)})
    assert out.returncode == 0, out.stderr
    listed = {d["name"]: d for d in json.loads(out.stdout)["datasets"]}
    assert set(datasets.REGISTRY) < set(listed)
    assert listed["shared:shapes"]["classes"] == ["blue", "red"]
    assert (listed["shared:shapes"]["train"], listed["shared:shapes"]["test"]) == (12, 4)
    assert listed["shared:pets"]["available"] is True


@pytest.mark.slow
def test_cli_trains_on_a_class_set(sets_dir, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "cnnlab", "train", "--dataset", "shared:pets", "--image-size",
         "16", "--epochs", "1", "--runs-dir", str(tmp_path / "runs"), "--json"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={**os.environ, "CNNLAB_DATASETS_DIR": str(sets_dir)})
    assert out.returncode == 0, out.stderr[-2000:]
    run_dir = Path(json.loads(out.stdout)["run_dir"])
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["dataset"] == "shared:pets@16" and saved["input_shape"] == [16, 16, 3]
    assert saved["preset"] == config.OWN_IMAGES
    assert [p.name for p in (sets_dir / ".cache" / "pets.zip").iterdir()
            if p.is_dir()][0].startswith("16x16-rgb-")


# ---------------------------------------------------------------------------- Explore


def explore(name: str | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "explore.py"), default_timeout=APPTEST_TIMEOUT)
    if name:
        at.session_state[state.DATASET_KEY] = name
    return at.run()


def test_explore_lists_class_sets_with_their_counts_and_shows_one(sets_dir):
    at = explore("shared:shapes")
    assert not at.exception and not at.error, [e.value for e in at.error]
    picker = at.selectbox(key="explore_dataset")
    assert picker.options[-3:] == ["Class set: letters — 2 classes, 12 images",
                                   "Class set: pets — 3 classes, 15 images",
                                   "Class set: shapes — 2 classes, 16 images"]
    assert picker.value == "shared:shapes"
    # 12 training images: 10 % of each class (one each) held out for validation.
    assert [m.value for m in at.metric] == ["10", "2", "4", "2"]
    assert len(at.get("plotly_chart")) == 4


def test_explore_size_and_colour_of_a_class_set_change_its_name(sets_dir):
    at = explore("shared:pets")
    at.select_slider(key="explore_shared_side").set_value(32).run()
    assert at.session_state[state.DATASET_KEY] == "shared:pets@32"
    at.toggle(key="explore_shared_gray").set_value(True).run()
    assert not at.exception and not at.error
    assert at.session_state[state.DATASET_KEY] == "shared:pets@32-gray"
    assert at.selectbox(key="explore_dataset").value == "shared:pets@32-gray"
    assert any("32×32 pixels, grayscale" in c.value for c in at.caption)
    assert [m.value for m in at.metric][-1] == "3"
    # A link to another size moves the widgets with it.
    at.session_state[state.DATASET_KEY] = "shared:pets@16"
    at.run()
    assert at.select_slider(key="explore_shared_side").value == 16
    assert at.toggle(key="explore_shared_gray").value is False


def test_explore_on_a_set_that_has_gone_says_so_in_one_sentence(sets_dir):
    at = explore("shared:letters")
    assert not at.error
    import shutil

    shutil.rmtree(sets_dir / "letters")
    at.run()
    assert not at.exception
    assert [plain(e.value) for e in at.error] == [
        "The class data set 'letters' is not in the class data sets folder 'class-sets' any "
        "more; pick another data set (runs trained on it are kept)."]
    picker = at.selectbox(key="explore_dataset")
    assert picker.value == "shared:letters" and "Class set: letters (gone)" in picker.options
    picker.select("shared:pets").run()
    assert not at.exception and not at.error
    assert "Class set: letters (gone)" not in at.selectbox(key="explore_dataset").options


def test_a_link_to_an_unknown_class_set_is_a_warning(sets_dir):
    at = AppTest.from_file(str(ROOT / "pages" / "explore.py"), default_timeout=APPTEST_TIMEOUT)
    at.query_params["dataset"] = "shared:gone@32"
    at.run()
    assert not at.exception and not at.error
    assert "does not hold (any more)" in at.warning[0].value
    assert at.selectbox(key="explore_dataset").value in datasets.REGISTRY


def test_train_page_offers_a_class_set_with_the_own_images_model(sets_dir, runs_root):
    at = AppTest.from_file(str(ROOT / "pages" / "train.py"), default_timeout=APPTEST_TIMEOUT)
    at.session_state[state.DATASET_KEY] = "shared:pets@32"
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="train_dataset").value == "shared:pets@32"
    assert at.selectbox(key="train_model").value == config.OWN_IMAGES
    caption = " ".join(c.value for c in at.caption)
    assert "Class set: pets" in caption and "32×32×3" in caption and "3 classes" in caption


def test_train_page_says_in_one_sentence_when_the_engine_cannot_open_the_set(
        sets_dir, runs_root, monkeypatch):
    # The engine process opens a class set by name when Train is pressed: one removed since
    # the page drew comes back from it as SharedSetError (engine_client re-raises it).
    from cnnlab.train import jobs

    at = AppTest.from_file(str(ROOT / "pages" / "train.py"), default_timeout=APPTEST_TIMEOUT)
    at.session_state[state.DATASET_KEY] = "shared:pets@16"
    at.run()
    gone = SharedSetError("The class data set 'pets' is not in the class data sets folder "
                          "'class-sets' any more; pick another data set (runs trained on it "
                          "are kept).")

    def submit(*args, **kwargs):
        raise gone

    monkeypatch.setattr(jobs.Engine, "submit", submit)
    at.button(key="train_start").click().run()
    assert not at.exception
    assert [plain(e.value) for e in at.error] == [str(gone)]
    assert runs.list_runs(runs_root) == []


@pytest.mark.slow
def test_the_engine_process_trains_a_class_set_sent_by_name(sets_dir, runs_root):
    from test_engine_process import answering_pid, end_engines, request, start_engine

    from cnnlab.train import jobs
    from cnnlab.train.engine_client import RemoteEngine

    ds = shared_sets.load("shared:pets@16")
    (cached,) = shared_sets.decoded
    info = (Path(cached) / "info.json").read_text()
    proc = start_engine(runs_root)  # its environment names the same class sets folder
    try:
        wait_until(lambda: answering_pid(runs_root) == proc.pid, 60, "the engine to answer")
        web = RemoteEngine(runs_root, start=False, watch=False)
        try:
            job = web.submit(request(dataset=ds.info.name, limit=None, batch_size=8), ds)
            wait_until(job.done, 240, "the run on the engine process")
            assert job.result.status == runs.RunStatus.FINISHED, job.result.message
        finally:
            web.close()
    finally:
        end_engines(runs_root)
        proc.wait(30)
    assert runs.load_config(job.run_dir)["dataset"] == "shared:pets@16"
    assert not list((runs_root / jobs.UPLOADS_DIR).glob("*.npz"))  # sent by name
    # The engine and its worker mapped the cache this process wrote: not decoded again.
    assert [str(p) for p in Path(cached).parent.iterdir() if p.is_dir()] == [cached]
    assert (Path(cached) / "info.json").read_text() == info


# ---------------------------------------------------------------------------- publishing


def test_publish_saves_an_upload_that_everyone_then_lists_and_loads(sets_dir, tmp_path):
    upload = tmp_path / "my upload.zip"
    write_zip(upload, class_files(("red", "green"), 4, "mine/"))
    entry = shared_sets.publish(upload, "our colours")
    assert entry.name == "shared:our colours" and entry.classes == ("green", "red")
    assert (sets_dir / "our colours.zip").read_bytes() == upload.read_bytes()
    assert "shared:our colours" in [e.name for e in shared_sets.listing()]
    assert shared_sets.load("shared:our colours@16").x_train.shape[1:] == (16, 16, 3)
    # Bytes (a picture set's zip) publish the same way; nothing half-written stays behind.
    shared_sets.publish(upload.read_bytes(), "colours 2")
    assert sorted(p.name for p in sets_dir.iterdir() if p.name.endswith(".part")) == []


@pytest.mark.parametrize("name, says", [
    ("pets", "already has a set named 'pets'"),  # a zip there
    ("letters", "already has a set named 'letters'"),  # a folder there
    ("../up", "cannot name a class data set"),
    ("a/b", "cannot name a class data set"),
    (".hidden", "cannot name a class data set"),
    ("pets@32", "cannot name a class data set"),  # @ would read as an image size
    ("pets.zip", "cannot name a class data set"),
    ("", "cannot name a class data set"),
    ("evil\u202etxt", "invisible control or bidirectional-text characters"),
])
def test_publish_refuses_a_taken_or_unsafe_name_and_keeps_what_is_there(sets_dir, tmp_path,
                                                                        name, says):
    upload = tmp_path / "u.zip"
    write_zip(upload, class_files(("red", "green"), 3))
    before = sorted(p.name for p in sets_dir.iterdir())
    pets = (sets_dir / "pets.zip").read_bytes()
    with pytest.raises(SharedSetError) as caught:
        shared_sets.publish(upload, name)
    assert says in str(caught.value)
    assert sorted(p.name for p in sets_dir.iterdir()) == before
    assert (sets_dir / "pets.zip").read_bytes() == pets


def test_publish_without_a_class_sets_folder_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.delenv("CNNLAB_DATASETS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # no .streamlit/secrets.toml here
    with pytest.raises(SharedSetError, match="CNNLAB_DATASETS_DIR"):
        shared_sets.publish(b"PK", "x")


def explore_with_upload(upload: Path, user=None) -> AppTest:
    """Explore with ``upload`` loaded as this session's own images (as Load images does)."""
    ds = datasets.load_zip(upload, (16, 16), False, name=f"{datasets.UPLOAD_PREFIX}{upload.name}")
    at = AppTest.from_file(str(ROOT / "pages" / "explore.py"), default_timeout=APPTEST_TIMEOUT)
    at.session_state[state.UPLOAD_KEY] = ds
    at.session_state[state.UPLOAD_SOURCE_KEY] = upload
    at.session_state[state.DATASET_KEY] = ds.info.name
    if user is not None:
        at.session_state[state.USER_KEY] = user
    return at.run()


def test_a_teacher_publishes_an_upload_from_explore_and_a_student_cannot(sets_dir, tmp_path,
                                                                         monkeypatch):
    from cnnlab.people import accounts

    store = accounts.Accounts(tmp_path / "accounts.json")
    store.add("kim", "a long teacher password", teacher=True)
    store.add("ann", "a long student password", teacher=False)
    monkeypatch.setenv("CNNLAB_SIGN_IN", "accounts")
    monkeypatch.setenv("CNNLAB_ACCOUNTS_FILE", str(tmp_path / "accounts.json"))
    upload = tmp_path / "fruit.zip"
    write_zip(upload, class_files(("red", "green"), 4))

    ann = explore_with_upload(upload, accounts.User("ann", "student"))
    assert not ann.exception and not ann.error
    assert "Publish to the class" not in [e.label for e in ann.expander]

    kim = explore_with_upload(upload, accounts.User("kim", "teacher"))
    assert "Publish to the class" in [e.label for e in kim.expander]
    (name,) = [t for t in kim.text_input if t.label == "Name in the class list"]
    assert name.value == "fruit"
    next(b for b in kim.button if b.label == "Publish").click().run()
    assert not kim.exception and not kim.error, [e.value for e in kim.error]
    assert any("Published as **fruit**" in s.value for s in kim.success)
    assert (sets_dir / "fruit.zip").read_bytes() == upload.read_bytes()
    # Everyone's list offers it now; publishing it again is refused in one sentence.
    student = AppTest.from_file(str(ROOT / "pages" / "explore.py"),
                                default_timeout=APPTEST_TIMEOUT)
    student.session_state[state.USER_KEY] = accounts.User("ann", "student")
    student.session_state[state.DATASET_KEY] = "shared:fruit"
    student.run()
    assert not student.exception and not student.error
    assert student.selectbox(key="explore_dataset").value == "shared:fruit"
    assert "Class set: fruit — 2 classes, 8 images" in student.selectbox(
        key="explore_dataset").options
    next(b for b in kim.button if b.label == "Publish").click().run()
    assert [plain(e.value) for e in kim.error] == [
        "The class data sets folder 'class-sets' already has a set named 'fruit': pick "
        "another name (the one there is kept)."]
