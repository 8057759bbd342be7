"""Bad-input catalogue: every case by name, its user-facing message, and nothing saved lost.

Each case feeds one bad input to the cnnlab function the page calls (the page shows the
message with st.error) and returns that message. The test asserts the message says what was
given and what is allowed, and that every file of a run saved before the case is unchanged.
A few cases are also driven through the page itself with AppTest, where that is cheap.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import APPTEST_TIMEOUT, ROOT, plain, wait_until, with_fit
from PIL import Image
from shapes import zip_of

from cnnlab.data import datasets, preprocess
from cnnlab.data.datasets import BadUpload, DatasetUnavailable
from cnnlab.model import config
from cnnlab.model.config import ConfigError, ModelConfig
from cnnlab.model.fit_settings import FitSettings
from cnnlab.people.accounts import User
from cnnlab.runs import store as runs
from cnnlab.train import budgets, callbacks, jobs, training
from cnnlab.uploads import model_check
from cnnlab.uploads.model_files import ModelRejected
from cnnlab.use import inference

TINY = config.ModelConfig(blocks=(config.ConvBlock(filters=4),), dense=(config.DenseLayer(16),),
                          learning_rate=3e-3)


# --------------------------------------------------------------------------- bad files


def png_bytes(side: int = 12, value: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (side, side), value).save(buf, format="PNG")
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width``×``height`` pixels, in ~60 bytes (no pixels)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


def noise_png(side: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side), np.uint8)).save(
        buf, format="PNG")
    return buf.getvalue()


CORRUPT_PNG = noise_png()[:2000]  # a real PNG cut off in its pixel data
TEXT_PNG = b"just some notes, not a picture\n"
BOMB_PNG = png_header(20_000, 20_000)


def two_classes(extra: dict[str, bytes] | None = None) -> bytes:
    """A good zip (classes a and b, two images each) plus ``extra`` members."""
    good = {"a/1.png": png_bytes(), "a/2.png": png_bytes(), "b/1.png": png_bytes(),
            "b/2.png": png_bytes()}
    return zip_of({**good, **(extra or {})})


def patched_zip(data: bytes, *, method: int | None = None, flags: int | None = None) -> bytes:
    """``data`` (a zip) with every entry's compression method and/or flag bits rewritten in
    both headers, as a zip tool that makes Deflate64 or encrypted entries would write them."""
    out = bytearray(data)
    for sig, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        at = out.find(sig)
        while at != -1:
            if flags is not None:
                out[at + flag_at:at + flag_at + 2] = struct.pack("<H", flags)
            if method is not None:
                out[at + method_at:at + method_at + 2] = struct.pack("<H", method)
            at = out.find(sig, at + 4)
    return bytes(out)


def stored_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


GOOD_MEMBERS = {"a/1.png": png_bytes(), "a/2.png": png_bytes(), "b/1.png": png_bytes(),
                "b/2.png": png_bytes()}


def bad_crc_zip() -> bytes:
    """A stored zip whose b/2.png bytes were changed after its CRC was written."""
    data = bytearray(stored_zip(GOOD_MEMBERS))
    last_png = data.rfind(b"IEND")  # inside b/2.png's data, the last member
    data[last_png - 20] ^= 0xFF
    return bytes(data)


def huge_black_png_zip(count: int) -> bytes:
    """``count`` all-black 5000x5000 PNGs in two classes: ~300 bytes each, zipped."""
    buf = io.BytesIO()
    Image.new("L", (5000, 5000), 0).save(buf, format="PNG")
    png, out = buf.getvalue(), io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(count):
            zf.writestr(f"{'ab'[i % 2]}/{i}.png", png)
    return out.getvalue()


def timed_zip_bomb(ctx) -> str:
    """500 black 5000x5000 PNGs (a ~150 KB zip): refused after a bounded amount of decoding."""
    data = huge_black_png_zip(500)
    assert len(data) < 400_000
    start = time.monotonic()
    message = raised(BadUpload, datasets.load_zip, data, (28, 28), True)
    elapsed = time.monotonic() - start
    # 40 of the 500 images fit the pixel budget (~0.12 s each here); all 500 take ~60 s.
    assert elapsed < 30, f"decoding the bomb took {elapsed:.1f} s"
    return message


def slow_decode(ctx) -> str:
    """A zip whose decoding passes the time budget (made 0 s so the test is instant)."""
    ctx.monkeypatch.setattr(datasets, "MAX_DECODE_SECONDS", 0.0)
    return raised(BadUpload, datasets.load_zip, two_classes(), (28, 28), True)


def resume_twice(ctx) -> str:
    """Two Resume clicks for one run: the second is refused, one job trains it."""
    req = request(epochs=2)
    run_dir = new_run(ctx.root, req, ctx.sample)
    manager = jobs.Engine(ctx.root)
    try:
        job = manager.submit(request(epochs=1, name="first"), ctx.sample)  # fills the slot
        runs.update_status(run_dir, status="stopped")
        (run_dir / callbacks.LAST_FILE).write_bytes(b"stand-in checkpoint")
        (run_dir / callbacks.CHECKPOINT_FILE).write_text(json.dumps({"epoch": 1, "history": []}))
        resumed = manager.resume(run_dir, ctx.sample)
        message = raised(jobs.EngineRefused, manager.resume, run_dir, ctx.sample)
        assert manager.queued() == [resumed] and manager.get(run_dir.name) is resumed
        manager.stop(run_dir.name)  # reaches the one queued job
        assert resumed.done() and runs.load_status(run_dir)["status"] == "stopped"
        job.wait(240)
    finally:
        manager.close()
    return message


def delete_running(ctx) -> str:
    run_dir = new_run(ctx.root, request(), ctx.sample)
    runs.update_status(run_dir, status="running")
    message = raised(ValueError, runs.delete_run, ctx.root, run_dir.name)
    assert run_dir.is_dir()
    return message


def over_widget_max(ctx) -> str:
    cfg = dataclasses.replace(TINY, lr_decay_rate=0.9, lr_decay_steps=5_000_000)
    return " ".join(config.range_problems(ModelConfig.from_json(cfg.to_json())))


def save_model(model, path: Path) -> Path:
    model.save(path)
    return path


# ---- uploaded .keras files written by hand (nothing is built to make them)

SERVER_GROWTH_LIMIT = 200 * budgets.MB  # what one upload may add to the server's memory


def keras_layer(kind: str, name: str, **settings) -> dict:
    """One layer as a saved config lists it (Keras fills in the settings left out)."""
    return {"module": "keras.layers", "class_name": kind, "config": {"name": name, **settings},
            "registered_name": None}


def keras_file(layers: list[dict], input_shape: tuple[int, ...] = (28, 28, 1)) -> bytes:
    """A .keras archive of a Sequential config with an empty weights file."""
    first = keras_layer("InputLayer", "input", batch_shape=[None, *input_shape])
    cfg = {"module": "keras", "class_name": "Sequential", "registered_name": None,
           "config": {"name": "sequential", "layers": [first, *layers]}}
    return zip_of({"metadata.json": b'{"keras_version": "3.15.1"}',
                   "config.json": json.dumps(cfg).encode(), "model.weights.h5": b""})


def peak_rss_growth(fn: Callable[[], object]) -> tuple[object, int]:
    """``fn()``'s result and how far this process's resident memory rose above its start
    meanwhile: current RSS sampled every 5 ms, as ru_maxrss only ever shows the peak."""
    import threading

    from cnnlab.uploads.model_check import rss_of

    base = peak = rss_of("self") or 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.005):
            peak = max(peak, rss_of("self") or 0)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    try:
        result = fn()
    finally:
        done.set()
        watcher.join()
    return result, max(peak, rss_of("self") or 0) - base


def server_growth(fn: Callable, *args) -> tuple[str, int]:
    """(the ModelRejected message of ``fn(*args)``, this process's peak memory growth)."""
    return peak_rss_growth(lambda: raised(ModelRejected, fn, *args))


def refused_in_bounded_memory(ctx, name: str, data: bytes) -> str:
    """Upload ``data`` as ``name``: refused while the server grows under 200 MB."""
    message, grew = server_growth(model_check.load_model_file, ctx.write(name, data))
    print(f"{name}: the server's memory grew {grew / budgets.MB:.1f} MB")
    assert grew < SERVER_GROWTH_LIMIT, f"{name} grew the server by {grew / budgets.MB:.0f} MB"
    return message


def dense_memory_bomb(ctx) -> str:
    """Under 1 KB declaring 785 billion weights: the audit's 3.8 GiB in 6 s, made worse."""
    data = keras_file([keras_layer("Flatten", "flatten"),
                       keras_layer("Dense", "dense", units=10**9)])
    assert len(data) < 1024
    return refused_in_bounded_memory(ctx, "bomb.keras", data)


def unknown_layer_memory_ceiling(ctx) -> str:
    """A layer kind the static check does not size (EinsumDense), building 3 GB of zeros:
    the child process that builds it is stopped at its memory ceiling."""
    data = keras_file([keras_layer("Flatten", "flatten"), keras_layer(
        "EinsumDense", "einsum", equation="ab,bc->ac", output_shape=1_000_000,
        kernel_initializer="zeros"), keras_layer("Dense", "dense", units=10)])
    start = time.monotonic()
    message = refused_in_bounded_memory(ctx, "ceiling.keras", data)
    assert time.monotonic() - start < 60
    return message


def slow_model_check(ctx) -> str:
    """A check that passes its time limit (made 0.5 s: the child is still importing Keras)."""

    ctx.monkeypatch.setattr(model_check, "CHECK_TIMEOUT_S", 0.5)
    data = keras_file([keras_layer("Flatten", "flatten"),
                       keras_layer("Dense", "dense", units=10, activation="softmax")])
    return raised(ModelRejected, model_check.load_model_file, ctx.write("slow.keras", data))


# --------------------------------------------------------------------------- helpers


def raised(exc_type: type[BaseException], fn: Callable, *args, **kwargs) -> str:
    """The message of the ``exc_type`` that ``fn(*args, **kwargs)`` raises."""
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    return str(info.value)


def request(**kw) -> training.TrainRequest:
    base = {"dataset": "mnist_sample", "config": TINY, "epochs": 1, "batch_size": 32,
            "patience": 2, "limit": 600, "name": "tiny"}
    return training.TrainRequest(**with_fit({**base, **kw}))


def errors(ctx, **kw) -> str:
    """training.request_errors (the Train page's check, which includes config.validate)."""
    found = training.request_errors(request(**kw), ctx.sample)
    assert found, "expected the request to be refused"
    return " ".join(found)


def new_run(root: Path, req: training.TrainRequest, ds) -> Path:
    return runs.create_run(root, training.run_config(req, ds))


# --------------------------------------------------------------------------- the cases


def disk_full_on_checkpoint(ctx) -> str:
    """The disk fills while best.keras is written: the run fails, its other files stay."""
    import keras

    real_save = keras.Model.save
    saves = []

    def no_space(self, *args, **kwargs):  # the disk fills after epoch 1's two checkpoints
        saves.append(1)
        if len(saves) > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(self, *args, **kwargs)

    req = request(epochs=2)
    run_dir = new_run(ctx.root, req, ctx.sample)
    ctx.monkeypatch.setattr(keras.Model, "save", no_space)
    result = training.train_run(req, ctx.sample, run_dir)
    status = runs.load_status(run_dir)
    assert result.status == status["status"] == "failed"
    assert len(runs.load_history(run_dir)) == 1  # the epoch before the failed save is kept
    assert callbacks.read_checkpoint(run_dir)["epoch"] == 1  # and resumable
    assert runs.load_config(run_dir)["model"] == TINY.to_dict()
    return status["message"]


def server_killed_mid_run(ctx) -> str:
    """`python -m cnnlab train` killed (SIGKILL) in epoch 2: marked interrupted, resumable."""
    env = {**os.environ, "CNNLAB_RUNS_DIR": str(ctx.root)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnlab", "train", "--dataset", "mnist_sample", "--preset",
         "quick", "--epochs", "6", "--batch-size", "8", "--limit", "2000", "--runs-dir",
         str(ctx.root), "--json"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        def first_epoch_saved() -> bool:
            assert proc.poll() is None, f"training exited early ({proc.returncode})"
            found = [r for r in runs.list_runs(ctx.root) if r.run_id != ctx.saved.name]
            return bool(found) and len(runs.load_history(found[0].run_dir)) >= 1 and \
                runs.best_model_path(found[0].run_dir).is_file()

        wait_until(first_epoch_saved, 120, "the first epoch of the CLI run")
        run_dir = next(r.run_dir for r in runs.list_runs(ctx.root) if r.run_id != ctx.saved.name)
        # Half an epoch later: past the checkpoint write, in the middle of epoch 2.
        time.sleep(max(0.5, 0.5 * float(runs.load_history(run_dir)["seconds"].iloc[0])))
        assert proc.poll() is None, "the run ended before it could be killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert runs.load_status(run_dir)["status"] == "running"  # what a dead server leaves
    rows = len(runs.load_history(run_dir))
    # What a resume continues from; one epoch ahead of history.csv when the kill fell between
    # the checkpoint's write and the history row's (the resume then writes that row back).
    done = callbacks.read_checkpoint(run_dir)["epoch"]
    assert done in (rows, rows + 1)
    best = runs.best_model_path(run_dir).read_bytes()

    manager = jobs.Engine(ctx.root)  # a server starting up
    try:
        status = runs.load_status(run_dir)
        assert manager.interrupted == [run_dir] and status["status"] == "interrupted"
        assert len(runs.load_history(run_dir)) == rows
        assert runs.best_model_path(run_dir).read_bytes() == best
        inference.load_run_model(runs.best_model_path(run_dir))  # the checkpoint is intact

        # Resume one more epoch, exactly from the last whole epoch's checkpoint.
        job = manager.resume(run_dir, ctx.sample, epochs=done + 1)
        assert job.wait(240) and job.result.status == "finished", job.result.message
        assert runs.load_history(run_dir)["epoch"].tolist() == list(range(1, done + 2))
    finally:
        manager.close()
    return status["message"]


def second_request_while_one_runs(ctx) -> str:
    """A second Train click while a run trains: queued (not lost), then it runs."""
    manager = jobs.Engine(ctx.root)
    try:
        first = manager.submit(request(epochs=2, name="first"), ctx.sample)
        second = manager.submit(request(name="second"), ctx.sample)
        assert first.started and not second.started and manager.queued() == [second]
        status = runs.load_status(second.run_dir)
        assert status["status"] == "queued"
        assert first.wait(240) and second.wait(240)
        assert first.result.status == second.result.status == "finished", second.result.message
        assert runs.load_status(second.run_dir)["status"] == "finished"
    finally:
        manager.close()
    return status["message"]


def over_the_runs_per_user_cap(ctx) -> str:
    """A fourth run queued by one user while three wait (the per-user cap is 3)."""
    manager = jobs.Engine(ctx.root, budgets=budgets.Budgets(max_runs_per_user=3))
    try:
        for n in range(3):
            manager.submit(request(name=f"mine-{n}"), ctx.sample, user=User("a"))
        message = raised(jobs.EngineRefused, manager.submit, request(), ctx.sample, user=User("a"))
        other = manager.submit(request(name="theirs"), ctx.sample, user=User("b"))
        assert other.run_id  # another user is not affected
    finally:
        manager.close()
    return message


def resume_on_a_data_set_of_another_shape(ctx) -> str:
    """A run of 32×32×3 images resumed on 28×28×1 digits."""
    info = datasets.DatasetInfo("cifar_like", "CIFAR-like", tuple("abcdefghij"), (32, 32, 3))
    x = np.zeros((40, 32, 32, 3), np.uint8)
    y = np.arange(40) % 10
    colour = datasets.Dataset(info, x, y, x, y)
    run_dir = new_run(ctx.root, request(dataset="cifar_like", limit=None, epochs=3), colour)
    runs.update_status(run_dir, status="interrupted")
    (run_dir / callbacks.LAST_FILE).write_bytes(b"stand-in checkpoint")
    (run_dir / callbacks.CHECKPOINT_FILE).write_text(json.dumps({"epoch": 1, "history": []}))
    manager = jobs.Engine(ctx.root)
    try:
        return raised(ValueError, manager.resume, run_dir, ctx.sample)
    finally:
        manager.close()


def runs_root_under_a_file(ctx) -> str:
    """CNNLAB_RUNS_DIR whose parent is a regular file (as root, chmod would not stop writes)."""
    blocker = ctx.tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    message = raised(runs.RunsRootError, jobs.Engine, blocker / "runs")
    assert blocker.read_text() == "a file where a folder should be"
    return message


def deep_config(ctx) -> str:
    blocks = tuple(config.ConvBlock(filters=8) for _ in range(6))  # 28 → 14 → 7 → 3 → 1 → ?
    return errors(ctx, config=dataclasses.replace(TINY, blocks=blocks))


def big_valid_kernels(ctx) -> str:
    block = config.ConvBlock(filters=8, kernel_size=11, padding="valid", pool=0)
    return errors(ctx, config=dataclasses.replace(TINY, blocks=(block,) * 3))


@dataclass(frozen=True)
class Case:
    """One bad input: how to feed it, and fragments of what was given and what is allowed."""

    run: Callable[[SimpleNamespace], str]
    given: str
    allowed: str


CASES: dict[str, Case] = {
    # ---- Explore: zip of images (datasets.load_zip)
    "zip-corrupt-png": Case(lambda c: raised(BadUpload, datasets.load_zip, two_classes(
        {"b/3.png": CORRUPT_PNG}), (28, 28), True), "b/3.png is not a readable image (OSError)",
        ".png"),
    "zip-text-file-named-png": Case(lambda c: raised(BadUpload, datasets.load_zip, two_classes(
        {"b/3.png": TEXT_PNG}), (28, 28), True), "b/3.png is not a readable image", ".jpg"),
    "zip-decompression-bomb-20000x20000": Case(lambda c: raised(
        BadUpload, datasets.load_zip, two_classes({"b/3.png": BOMB_PNG}), (28, 28), True),
        "claims 400,000,000 pixels", "at most 25,000,000 pixels"),
    "zip-empty": Case(lambda c: raised(BadUpload, datasets.load_zip, zip_of({}), (28, 28),
                                       True), "no images", "at least 2 class folders"),
    "zip-not-a-zip": Case(lambda c: raised(BadUpload, datasets.load_zip, b"PK not really",
                                           (28, 28), True), "is not a zip file",
                          "one sub-folder of images per class"),
    "zip-slip-dotdot": Case(lambda c: raised(BadUpload, datasets.load_zip, two_classes(
        {"../../evil.png": png_bytes()}), (28, 28), True), "'../../evil.png'",
        "only relative paths"),
    "zip-slip-absolute": Case(lambda c: raised(BadUpload, datasets.load_zip, zip_of(
        {"/etc/cron.d/x.png": png_bytes()}), (28, 28), True), "is an absolute path",
        "only relative paths"),
    "zip-one-class": Case(lambda c: raised(BadUpload, datasets.load_zip, zip_of(
        {"a/1.png": png_bytes(), "a/2.png": png_bytes()}), (28, 28), True),
        "only the class 'a'", "at least 2 class folders"),
    "zip-class-with-one-image": Case(lambda c: raised(BadUpload, datasets.load_zip, zip_of(
        {"a/1.png": png_bytes(), "a/2.png": png_bytes(), "b/1.png": png_bytes()}), (28, 28),
        True), "Class 'b' has 1 image", "at least 2"),
    "zip-image-size-4px": Case(lambda c: raised(BadUpload, datasets.load_zip, two_classes(),
                                                (4, 4), True), "4x4", "between 8 and 256"),
    "zip-password-protected": Case(lambda c: raised(
        BadUpload, datasets.load_zip, patched_zip(stored_zip(GOOD_MEMBERS), flags=0x1), (28, 28),
        True), "a/1.png is encrypted (the zip has a password)", "zips without a password"),
    "zip-deflate64": Case(lambda c: raised(
        BadUpload, datasets.load_zip, patched_zip(stored_zip(GOOD_MEMBERS), method=9), (28, 28),
        True), "a/1.png uses zip compression method 9", "allowed are stored, deflate"),
    "zip-bad-crc": Case(lambda c: raised(BadUpload, datasets.load_zip, bad_crc_zip(), (28, 28),
                                         True), "b/2.png cannot be unpacked: the zip is damaged",
                        "complete, undamaged zips"),
    "zip-truncated": Case(lambda c: raised(BadUpload, datasets.load_zip, two_classes()[:300],
                                           (28, 28), True), "is not a zip file",
                          "one sub-folder of images per class"),
    "zip-decode-bomb-500-black-5000x5000-pngs": Case(
        timed_zip_bomb, "add up to more than 1,000,000,000 pixels", "shrink the images"),
    "zip-decode-time-budget": Case(slow_decode, "Decoding the zip took more than 0 s",
                                   "at most 0 s is allowed"),
    "zip-too-many-entries": Case(lambda c: raised(BadUpload, datasets.load_zip, zip_of(
        {f"a/{i}.txt": b"" for i in range(datasets.MAX_FILES + 1)}), (28, 28), True),
        "holds 20,001 entries", "at most 20,000"),
    "zip-unpacks-too-large": Case(lambda c: (c.monkeypatch.setattr(
        datasets, "MAX_UNCOMPRESSED_BYTES", 100), raised(
        BadUpload, datasets.load_zip, two_classes(), (28, 28), True))[1],
        "The zip unpacks to", "at most 100 are allowed"),
    "zip-member-name-with-bidi-override": Case(lambda c: raised(
        BadUpload, datasets.load_zip, two_classes({"b/gnp.\u202eevil.png": png_bytes()}),
        (28, 28), True), "contains a control or bidirectional-text character",
        "may not contain control or bidirectional-text characters"),
    "zip-upload-name-with-control-character": Case(lambda c: raised(
        BadUpload, datasets.load_zip, two_classes(), (28, 28), True, "folder:ph\x1b[31mot.zip"),
        "U+001B", "allowed are visible characters only"),
    # ---- Draw & predict: uploaded picture (preprocess.open_image)
    "picture-corrupt-png": Case(lambda c: raised(
        ValueError, preprocess.open_image, CORRUPT_PNG, "x.png"),
        "x.png is not a readable picture (OSError: image file is truncated)", "PNG, JPEG"),
    "picture-text-file-named-png": Case(lambda c: raised(
        ValueError, preprocess.open_image, TEXT_PNG, "notes.png"),
        "notes.png is not a readable picture", "PNG, JPEG"),
    "picture-decompression-bomb-20000x20000": Case(lambda c: raised(
        ValueError, preprocess.open_image, BOMB_PNG, "huge.png"),
        "huge.png claims 400,000,000 pixels", "at most 50,000,000 pixels"),
    # ---- Draw & predict: uploaded model (model_check.load_model_file)
    "model-text-file-named-keras": Case(lambda c: raised(
        ModelRejected, model_check.load_model_file, c.write("notes.keras", b"hello, not a zip")),
        "notes.keras could not be read as a Keras model", "model.save('model.keras')"),
    "model-with-lambda-layer": Case(lambda c: raised(
        ModelRejected, model_check.load_model_file, c.model("lambda")),
        "Lambda layer", "built-in Keras layers only"),
    "model-input-not-an-image": Case(lambda c: raised(
        ModelRejected, model_check.load_model_file, c.model("vector")),
        "input of shape (10,)", "(height, width, 1)"),
    "model-input-shape-does-not-fit-data-set": Case(
        resume_on_a_data_set_of_another_shape, "takes 32×32×3 images", "28×28×1"),
    "model-dense-memory-bomb": Case(dense_memory_bomb, "declares 785,000,000,000 parameters",
                                    "allows at most 20,000,000"),
    "model-huge-input-shape": Case(lambda c: refused_in_bounded_memory(c, "wide.keras", keras_file(
        [keras_layer("Flatten", "flatten"), keras_layer("Dense", "dense", units=10)],
        (100_000, 100_000, 1))), "input of shape (100000, 100000, 1)",
        "at most 1,048,576 pixels"),
    "model-zip-without-config": Case(lambda c: raised(
        ModelRejected, model_check.load_model_file, c.write("noconfig.keras", zip_of(
            {"metadata.json": b"{}", "model.weights.h5": b""}))),
        "the archive has no config.json", "model.save('model.keras')"),
    "model-config-not-json": Case(lambda c: raised(
        ModelRejected, model_check.load_model_file, c.write("badjson.keras", zip_of(
            {"config.json": b"{not json", "metadata.json": b"{}"}))),
        "config.json is not valid JSON", "model.save('model.keras')"),
    "model-config-too-large": Case(lambda c: raised(
        ModelRejected, model_check.load_model_file, c.write("padded.keras", zip_of(
            {"config.json": json.dumps({"pad": "x" * 1_100_000}).encode()}))),
        "config.json is 1,100,011 bytes", "allows at most 1,000,000"),
    "model-archive-unpacks-too-large": Case(lambda c: raised(
        ModelRejected, model_check.load_model_file, c.write("zeros.keras", zip_of(
            {"config.json": b"{}", "model.weights.h5": bytes(100_000_000)}))),
        "unpacks to 100,000,002 bytes", "at most 96,777,216 bytes"),
    "model-over-parameter-budget-declared": Case(lambda c: raised(
        ModelRejected, model_check.load_model_file, c.write("wide-dense.keras", keras_file([
            keras_layer("Conv2D", "conv", filters=32, kernel_size=3, activation="relu"),
            keras_layer("Flatten", "flatten"), keras_layer("Dense", "hidden", units=1300),
            keras_layer("Dense", "out", units=10, activation="softmax")]))),
        "declares 28,136,230 parameters", "allows at most 20,000,000"),
    "model-unknown-layer-memory-ceiling": Case(unknown_layer_memory_ceiling,
                                               "Loading ceiling.keras took more than",
                                               "MB for loading an uploaded model"),
    "model-child-timeout": Case(slow_model_check, "took longer than 0.5 s",
                                "allows at most 0.5 s"),
    # ---- Configure / Train: model and fit settings (training.request_errors)
    "config-zero-size-feature-map": Case(deep_config, "feature map is 1×1 before a 2×2 pool",
                                         "remove this pool"),
    "config-valid-kernel-larger-than-map": Case(big_valid_kernels, "before a 11×11 conv",
                                                "use a smaller kernel"),
    "learning-rate-0": Case(lambda c: errors(c, config=dataclasses.replace(
        TINY, learning_rate=0.0)), "learning rate is 0", "must be above 0"),
    "learning-rate-1e3": Case(lambda c: errors(c, config=dataclasses.replace(
        TINY, learning_rate=1e3)), "learning rate 1000", "try 0.001"),
    "batch-size-larger-than-data-set": Case(lambda c: errors(c, batch_size=5000),
                                            "Batch size 5000", "between 1 and 540"),
    "epochs-0": Case(lambda c: errors(c, epochs=0), "Epochs is 0", "between 1 and 200"),
    "epochs-over-budget": Case(lambda c: errors(c, epochs=5000), "Epochs is 5000",
                               "allows at most 200 per run"),
    "model-over-parameter-budget": Case(lambda c: errors(c, config=dataclasses.replace(
        TINY, dense=(config.DenseLayer(100_000),))), "has 79,500,050 parameters",
        "allows at most 20,000,000"),
    "batch-over-activation-budget": Case(lambda c: errors(c, limit=None, batch_size=5000,
        config=dataclasses.replace(TINY, blocks=(config.ConvBlock(filters=512),))),
        "One batch of 5000 needs", "allows at most 2,048 MB"),
    "too-many-runs-queued-by-one-user": Case(over_the_runs_per_user_cap,
                                             "You already have 3 run(s)", "allows 3 per user"),
    "sample-limit-too-small": Case(lambda c: errors(c, limit=5), "Limit 5", "at least 20"),
    "config-json-not-json": Case(lambda c: raised(ConfigError, ModelConfig.from_json, b"{oops"),
                                 "not valid JSON", "a file saved by CNN Lab"),
    "config-json-unknown-key": Case(lambda c: raised(
        ConfigError, ModelConfig.from_json, json.dumps({"blocks": [{"filterz": 8}]})),
        "unknown key(s) filterz", "allowed: filters"),
    "unknown-data-set": Case(lambda c: raised(DatasetUnavailable, datasets.load, "imagenet"),
                             "'imagenet'", "choose one of mnist"),
    # ---- Runs: names and ids (runs.rename_run, runs.run_dir_for)
    "run-name-looks-like-a-path": Case(lambda c: raised(
        runs.RunPathError, runs.rename_run, c.root, c.saved.name, "../../etc/passwd"),
        "'../../etc/passwd' looks like a path", "Use letters, digits"),
    "run-id-leaves-the-runs-root": Case(lambda c: raised(
        runs.RunPathError, runs.run_dir_for, c.root, "../../etc"), "'../../etc' is not valid",
        "expected 'YYYYMMDD-HHMMSS[-slug]'"),
    # ---- The server and its disk
    "runs-root-not-writable": Case(runs_root_under_a_file, "not-a-folder/runs cannot be used",
                                   "Set CNNLAB_RUNS_DIR to a writable folder"),
    "disk-full-while-saving-checkpoint": Case(disk_full_on_checkpoint,
                                              "the disk is full (no space left on device)",
                                              "free some disk space"),
    "server-killed-mid-run": Case(server_killed_mid_run, "The server stopped while this run was "
                                  "running", "resume it to continue"),
    "second-training-request-while-one-runs": Case(second_request_while_one_runs,
                                                   "Queued: 1 run(s) ahead of it", "Queued"),
    "second-resume-of-the-same-run": Case(resume_twice, "is already queued or training",
                                          "wait for it to end, or stop it first"),
    "delete-a-running-run": Case(delete_running, "is running", "stop it on the Train page first"),
    # ---- Names and values a user types or uploads
    "config-value-above-the-widget-maximum": Case(
        over_widget_max, "lr_decay_steps is 5,000,000", "allowed is 1 to 1,000,000"),
    "config-more-blocks-than-the-page-shows": Case(lambda c: " ".join(config.range_problems(
        dataclasses.replace(TINY, blocks=(config.ConvBlock(filters=4, pool=0),) * 9))),
        "has 9 conv blocks", "at most 6"),
    "run-name-with-bidi-override": Case(lambda c: raised(
        runs.RunPathError, runs.rename_run, c.root, c.saved.name, "best\u202etxt.exe"),
        "U+202E", "allowed are visible characters only"),
    "run-name-empty": Case(lambda c: raised(runs.RunPathError, runs.rename_run, c.root,
                                            c.saved.name, "   "),
                           "The new name is empty", "type a few words"),
    "run-name-too-long": Case(lambda c: raised(runs.RunPathError, runs.rename_run, c.root,
                                               c.saved.name, "x" * 81),
                              "has 81 characters", "at most 80"),
    "train-request-name-with-control-character": Case(lambda c: errors(c, name="run\x07bell"),
                                                       "U+0007", "visible characters only"),
}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sample() -> datasets.Dataset:
    ds = datasets.load("mnist_sample")
    # A small test set keeps evaluation instant.
    return datasets.Dataset(ds.info, ds.x_train, ds.y_train, ds.x_test[:200], ds.y_test[:200])


def saved_run(root: Path) -> Path:
    """A finished run's files as training leaves them (no training needed)."""
    run_dir = runs.create_run(root, {"name": "kept", "model": TINY.to_dict(),
                                     "fit": FitSettings().to_dict(), "dataset": "mnist"})
    runs.update_status(run_dir, status="finished", epochs_done=2)
    runs.append_history(run_dir, {"epoch": 1, "loss": 0.5, "accuracy": 0.9,
                                  "val_loss": 0.4, "val_accuracy": 0.91})
    runs.append_history(run_dir, {"epoch": 2, "loss": 0.3, "accuracy": 0.95,
                                  "val_loss": 0.35, "val_accuracy": 0.93})
    runs.best_model_path(run_dir).write_bytes(b"PK\x03\x04 saved model bytes")
    runs.save_metrics(run_dir, {"test_accuracy": 0.92})
    return run_dir


def fingerprint(run_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run_dir.iterdir()}


@pytest.fixture
def ctx(runs_root: Path, tmp_path: Path, sample, monkeypatch: pytest.MonkeyPatch):
    """What a case needs; afterwards, checks the saved run's files are all unchanged."""
    models: dict[str, Path] = {}

    def write(name: str, data: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    def model(kind: str) -> Path:
        import keras

        if kind not in models:
            if kind == "lambda":
                layers = [keras.Input((28, 28, 1)), keras.layers.Lambda(lambda t: t / 255.0),
                          keras.layers.Flatten()]
            else:
                layers = [keras.Input((10,))]
            net = keras.Sequential([*layers, keras.layers.Dense(10, activation="softmax")])
            models[kind] = save_model(net, tmp_path / f"{kind}.keras")
        return models[kind]

    saved = saved_run(runs_root)
    before = fingerprint(saved)
    yield SimpleNamespace(root=runs_root, tmp_path=tmp_path, sample=sample, saved=saved,
                          monkeypatch=monkeypatch, write=write, model=model)
    assert fingerprint(saved) == before, "a saved run's files changed"
    assert runs.load_status(saved)["status"] == "finished"


# --------------------------------------------------------------------------- tests


def test_the_catalogue_has_at_least_twenty_cases() -> None:
    assert len(CASES) >= 20
    assert SLOW_CASES <= set(CASES)  # a renamed slow case would join the fast loop unseen


# Cases over about 5 s: worker processes or a CLI run that train, a model checked in its
# own process (model-with-lambda-layer stays in the fast loop for that path).
SLOW_CASES = {"server-killed-mid-run", "second-training-request-while-one-runs",
              "second-resume-of-the-same-run", "model-unknown-layer-memory-ceiling"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_CASES
                                  else n for n in CASES], ids=list(CASES))
def test_bad_input_gets_a_clear_message_and_loses_nothing(name: str, ctx) -> None:
    case = CASES[name]
    message = case.run(ctx)
    print(f"{name}: {message}")
    assert case.given in message, f"message does not say what was given: {message}"
    assert case.allowed in message, f"message does not say what is allowed: {message}"
    assert "Traceback" not in message and len(message) < 600


@pytest.mark.slow
def test_a_small_uploaded_model_still_loads_and_predicts(tmp_path: Path) -> None:
    import keras

    path = save_model(keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax")]), tmp_path / "model.keras")
    predictor = inference.Predictor(model_check.load_model_file(path))
    assert predictor.input_shape == (28, 28, 1) and predictor.n_classes == 10
    probs = predictor.probabilities(np.zeros((28, 28, 1), np.float32))
    assert probs.shape == (10,) and probs.sum() == pytest.approx(1.0, abs=1e-4)


def test_the_static_check_counts_what_keras_builds(tmp_path: Path) -> None:
    """The config walk agrees with count_params for the layer kinds it knows, Sequential
    and Functional with a nested and a shared layer, and admits what it does not know."""
    import keras
    from keras import layers as kl

    from cnnlab.uploads import model_files

    conv = keras.Sequential([
        keras.Input((28, 28, 1)), kl.Rescaling(1 / 255), kl.Conv2D(8, 3, padding="same"),
        kl.BatchNormalization(), kl.MaxPooling2D(), kl.DepthwiseConv2D(3, depth_multiplier=2),
        kl.SeparableConv2D(12, 3, strides=2, use_bias=False), kl.LayerNormalization(),
        kl.Dropout(0.2), kl.GlobalAveragePooling2D(), kl.Dense(10, activation="softmax")])
    x = keras.Input((32, 32, 3))
    a = kl.Conv2D(4, 3, padding="same")(x)
    shared = kl.Conv2D(4, 1)
    merged = kl.Concatenate()([kl.Add()([shared(a), a]), shared(a)])
    head = keras.Sequential([kl.Flatten(), kl.Dense(10, activation="softmax")])
    functional = keras.Model(x, head(kl.ZeroPadding2D(1)(merged)))
    unknown = keras.Sequential([keras.Input((28, 28, 1)), kl.Flatten(),
                                kl.EinsumDense("ab,bc->ac", output_shape=20), kl.Dense(10)])
    limits = budgets.Budgets()
    for name, model in (("conv", conv), ("functional", functional), ("unknown", unknown)):
        facts = model_files.inspect_model_file(save_model(model, tmp_path / f"{name}.keras"),
                                               limits)
        expected = None if name == "unknown" else model.count_params()
        assert facts.params == expected, name
        assert facts.input_shape == tuple(model.inputs[0].shape[1:]), name
    assert facts.unknown_layers and facts.params_at_least < unknown.count_params()


# --------------------------------------------------------------------------- through the pages


def apptest(page: str):
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(ROOT / "pages" / page), default_timeout=APPTEST_TIMEOUT)


def test_explore_page_shows_the_zip_message(runs_root: Path, monkeypatch) -> None:
    from test_upload_route import hand_zip

    monkeypatch.setenv("KERAS_HOME", str(runs_root / "no-keras"))  # the bundled sample: fast
    monkeypatch.setenv("CNNLAB_UPLOADS_DIR", str(runs_root.parent / "uploads"))
    at = apptest("explore.py").run()
    assert not at.exception, at.exception
    hand_zip(at, "photos.zip", two_classes({"b/3.png": BOMB_PNG}))
    at.run()
    next(b for b in at.button if b.label == "Load images").click().run()
    assert not at.exception, at.exception
    assert "b/3.png claims 400,000,000 pixels" in at.error[0].value


def test_pages_say_when_the_runs_root_cannot_be_used(tmp_path: Path, monkeypatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("CNNLAB_RUNS_DIR", str(blocker / "runs"))
    at = apptest("runs.py").run()
    assert not at.exception, at.exception
    shown = plain(at.error[0].value)
    assert "cannot be used" in shown and "CNNLAB_RUNS_DIR" in shown


def test_a_config_above_a_widget_maximum_is_refused_on_the_page(runs_root: Path) -> None:
    at = apptest("configure.py").run()
    assert not at.exception, at.exception
    cfg = dataclasses.replace(TINY, lr_decay_rate=0.9, lr_decay_steps=5_000_000)
    at.file_uploader(key="cfg_upload").set_value(
        ("huge.json", cfg.to_json().encode(), "application/json")).run()
    assert not at.exception, at.exception
    assert "lr_decay_steps is 5,000,000" in plain(at.error[0].value)


# --------------------------------------------------------------------------- the run store


WRITER = """
import sys
from cnnlab.runs import store as runs
run_dir, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(n):
    runs.update_status(run_dir, **{f"{tag}-{i}": i})
"""


def test_concurrent_status_writes_and_renames_lose_nothing(runs_root: Path) -> None:
    """500 status writes from 4 processes and a thread, 100 renames from 2 threads, and the
    run finishing in the middle: every write is kept and the run stays finished."""
    import threading

    from cnnlab.train import events

    run_dir = runs.create_run(runs_root, {"model": TINY.to_dict(), "name": "race"})
    runs.update_status(run_dir, status="running")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(run_dir), f"p{k}", "100"],
                              cwd=ROOT) for k in range(4)]
    names = [f"name-{i}" for i in range(100)]

    def rename(chunk: list[str]) -> None:
        for name in chunk:
            runs.rename_run(runs_root, run_dir.name, name)

    def write(tag: str) -> None:
        for i in range(100):
            runs.update_status(run_dir, **{f"{tag}-{i}": i})

    threads = [threading.Thread(target=rename, args=(names[:50],)),
               threading.Thread(target=rename, args=(names[50:],)),
               threading.Thread(target=write, args=("t0",))]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    runs.record(run_dir, events.make("done", status="finished", message="Finished."))
    for thread in threads:
        thread.join()
    assert [p.wait(120) for p in procs] == [0] * 4
    status = runs.load_status(run_dir)
    lost = [f"{tag}-{i}" for tag in ("p0", "p1", "p2", "p3", "t0") for i in range(100)
            if status.get(f"{tag}-{i}") != i]
    assert not lost, f"{len(lost)} of 500 status writes were lost, e.g. {lost[:3]}"
    assert status["status"] == "finished", "a finished run was turned back"
    assert runs.load_config(run_dir)["name"] in names


def test_a_torn_history_line_is_dropped_not_merged(runs_root: Path) -> None:
    run_dir = runs.create_run(runs_root, {"name": "torn"})
    row = {"epoch": 1, "loss": 0.5, "accuracy": 0.9, "val_loss": 0.4, "val_accuracy": 0.91}
    runs.append_history(run_dir, row)
    with (run_dir / runs.HISTORY_FILE).open("a") as fh:
        fh.write("2,0.4,0.9")  # the disk filled in the middle of epoch 2's line
    assert runs.load_history(run_dir)["epoch"].tolist() == [1]
    runs.append_history(run_dir, {**row, "epoch": 2, "loss": 0.3})
    history = runs.load_history(run_dir)
    assert history["epoch"].tolist() == [1, 2] and history["loss"].tolist() == [0.5, 0.3]
    assert (run_dir / runs.HISTORY_FILE).read_text().count("\n") == 3


@pytest.mark.slow
def test_a_final_status_that_cannot_be_written_still_ends_final(runs_root: Path, sample,
                                                               monkeypatch) -> None:
    """The disk is full when the run ends: the status is written once there is room again
    (here: at close), and a server that dies before that leaves it for the next start."""
    real_record = runs.record

    def full_disk(run_dir, event):
        if event["kind"] == "done":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_record(run_dir, event)

    monkeypatch.setattr(runs, "record", full_disk)
    manager = jobs.Engine(runs_root)
    job = manager.submit(request(name="full-disk"), sample)
    assert job.wait(240) and job.result.status == "finished"
    assert runs.load_status(job.run_dir)["status"] == "running"  # what the full disk left
    manager.close()  # still full: the retry fails too
    assert runs.load_status(job.run_dir)["status"] == "running"
    restarted = jobs.Engine(runs_root)  # the next start
    try:
        assert restarted.interrupted == [job.run_dir]
        assert runs.load_status(job.run_dir)["status"] == "interrupted"
        second = restarted.submit(request(name="room-again"), sample)
        assert second.wait(240)
        assert runs.load_status(second.run_dir)["status"] == "running"
        monkeypatch.setattr(runs, "record", real_record)  # room on the disk again
    finally:
        restarted.close()
    assert runs.load_status(second.run_dir)["status"] == "finished"


# --------------------------------------------------------------------------- pictures


def ring_png(side: int = 7000) -> bytes:
    """A ~180 KB PNG of a black ring on white, ``side`` pixels square (49 M pixels)."""
    from PIL import ImageDraw

    img = Image.new("RGB", (side, side), "white")
    ImageDraw.Draw(img).ellipse((side * 2 // 7, side * 3 // 14, side * 5 // 7, side * 11 // 14),
                                outline="black", width=side // 17)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def test_a_big_picture_is_decoded_once_to_a_small_one() -> None:
    """7000×7000 in 180 KB: before, +1.6 GB and 2.8 s on every rerun; now one decode to
    512 px (+~200 MB once) and reruns work on the small picture."""
    data = ring_png()
    assert len(data) < 250_000
    image, growth = peak_rss_growth(lambda: preprocess.open_image(data, "big.png"))
    assert max(image.size) == preprocess.MAX_PICTURE_SIDE
    assert growth < 400 * 2**20, f"decoding grew memory by {growth / 2**20:.0f} MB"
    x, growth = peak_rss_growth(lambda: preprocess.image_to_input(image, (28, 28, 1)))
    assert x.shape == (28, 28, 1) and x.max() > 0.5
    assert growth < 50 * 2**20, f"the rerun path grew memory by {growth / 2**20:.0f} MB"


def test_the_predict_page_decodes_an_uploaded_picture_once(runs_root: Path, monkeypatch) -> None:
    from test_predict_page import make_run

    make_run(runs_root)  # make_run's default run: a copy once it was trained
    calls = []
    real_open = preprocess.open_image

    def counting(data, name):
        calls.append(name)
        return real_open(data, name)

    monkeypatch.setattr(preprocess, "open_image", counting)
    at = apptest("predict.py").run()
    assert not at.exception, at.exception
    at.file_uploader(key="picture").set_value(("ring.png", ring_png(1400), "image/png")).run()
    at.run()  # any rerun (a widget change, a poll) reuses the decoded picture
    assert not at.exception and not at.error, (at.exception, at.error)
    assert calls == ["ring.png"]
    assert any(m.label == "Prediction" for m in at.metric)


# --------------------------------------------------------------------------- user strings


@pytest.mark.slow
def test_a_crafted_file_name_stays_data_in_the_keras_script(tmp_path: Path) -> None:
    import ast

    from cnnlab.model import models

    marker = tmp_path / "pwned"
    name = f'folder:x"); open({str(marker)!r}, "w")  # \n__import__("os").system("touch {marker}")'
    script = models.to_keras_script(TINY, FitSettings(), (28, 28, 1), 2, name)
    tree = ast.parse(script)
    constants = [n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                 and any(getattr(t, "id", "") == "DATASET" for t in n.targets)]
    assert [ast.literal_eval(c) for c in constants] == [name]
    path = tmp_path / "script.py"
    path.write_text(script)
    proc = subprocess.run([sys.executable, str(path)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=180, env={**os.environ, "CNNLAB_BUILD_ONLY": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not marker.exists(), "the file name ran as code"


def test_names_and_the_address_render_as_text(runs_root: Path) -> None:
    import re

    from cnnlab import text

    run_dir = saved_run(runs_root)
    evil = "[click](https:evil.example) ![i](i.png) :red[x] <b>b www.evil.example"
    runs.rename_run(runs_root, run_dir.name, evil)
    at = apptest("runs.py")
    at.query_params["run"] = "[x](http://evil.example)"
    at.run()
    assert not at.exception, at.exception
    shown = at.error[0].value
    assert "[x](http://evil.example)" in plain(shown)
    assert not re.search(r"(?<!\\)[\[\]<]", shown), shown
    at.query_params["run"] = run_dir.name
    at.run()
    assert text.markdown(evil) in [h.value for h in at.subheader]


def test_class_names_in_charts_are_text() -> None:
    from cnnlab import charts

    names = ["<a href='http://evil.example'>cat</a>", "dog & co"]
    fig = charts.confusion_figure([[3, 1], [0, 4]], names)
    assert list(fig.data[0].x) == ["&lt;a href='http://evil.example'&gt;cat&lt;/a&gt;",
                                   "dog &amp; co"]
    bars = charts.probability_bars_figure(np.array([0.9, 0.1]), names)
    assert "<a" not in "".join(bars.data[0].x)


# --------------------------------------------------------------------------- the error boundary


def test_an_unexpected_error_shows_an_id_and_logs_the_traceback(caplog) -> None:
    """The boundary app.py puts around every page: one sentence and an id for the user, the
    traceback in the server log under that id."""
    import re

    from streamlit.testing.v1 import AppTest

    # AppTest runs a page of app.py's navigation without app.py (Streamlit's old pages-folder
    # mode) after its first run, so the boundary is driven by a script shaped like app.py.
    source = (ROOT / "app.py").read_text()
    assert "    with error_boundary(page.title):  # one boundary around whichever page runs\n" \
           "        page.run()" in source
    at = AppTest.from_string(
        "from pages.boundary import error_boundary\n"
        "with error_boundary('Explore'):\n"
        "    raise RuntimeError('secret detail at /srv/cnnlab/runs')\n",
        default_timeout=APPTEST_TIMEOUT).run()
    assert not at.exception, at.exception
    shown = " ".join(e.value for e in at.error)
    assert "secret" not in shown and "Traceback" not in shown
    error_id = re.search(r"error id (\w+)", shown).group(1)
    logged = [r for r in caplog.records if error_id in r.getMessage()]
    assert logged and "secret detail" in str(logged[0].exc_info[1])
