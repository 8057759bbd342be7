"""Transfer learning end to end: a backbone model trained in two phases in one run by the
CLI, and through the engine's worker processes phase 1 then a resume across the phase
boundary; refused weights.

The backbone is MobileNetV3Small (the smallest) with weights from a file the test writes
(random weights, saved with ``save_weights``): nothing is downloaded, and the file is the
reference that frozen layers must still equal after training. The data are 36 coloured
shapes of 32×32 pixels (2 classes); the model resizes them to 224×224 inside.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import ROOT
from shapes import shapes_zip

from cnnlab.data import datasets
from cnnlab.model import backbones, config, models
from cnnlab.model.fit_settings import FitSettings
from cnnlab.runs import store as runs
from cnnlab.train import callbacks, jobs, training

BACKBONE = "MobileNetV3Small"
UNFREEZE = 5  # its top 5 layers: conv_1 (55,296 weights) is the one with weights to train
WAIT = 300

# A random backbone's gradients are tiny (about 1e-11 at conv_1: nothing normalises its
# activations), so Adam's steps there are about lr × g / epsilon; rates 20× the usual make
# every phase-2 step show in the weights (ImageNet weights learn at 1e-3 × 0.1).
HEAD = config.ModelConfig(blocks=(), backbone=BACKBONE, dense=(config.DenseLayer(8),),
                          learning_rate=2e-2, fine_tune_lr_factor=0.5, unfreeze=UNFREEZE)


@pytest.fixture(scope="module")
def shapes() -> tuple[datasets.Dataset, bytes]:
    """The tiny data set and its zip (2 classes × 18 pictures, 32×32 colour)."""
    data = shapes_zip(per_class=18, size=32)
    return datasets.load_zip(data, (32, 32), False, name="folder:shapes.zip"), data


@pytest.fixture(scope="module")
def base_file(tmp_path_factory) -> tuple[keras.Model, Path]:
    """A MobileNetV3Small backbone (random weights) and the weights file saved from it.

    Its BatchNorm statistics are set from one batch first (as a real checkpoint's are):
    with the initial ones (mean 0, variance 1) nothing normalises 150 random layers, the
    activations saturate and conv_1's gradient can be exactly zero, so a phase-2 step may
    change nothing there.
    """
    base = backbones.build_backbone(BACKBONE, None)
    norms = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0  # the moving statistics become this batch's
    base(np.random.default_rng(0).uniform(0, 255, (16, 224, 224, 3)).astype("float32"),
         training=True)
    for layer in norms:
        layer.momentum = 0.99
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v3_small.weights.h5"
    with warnings.catch_warnings():  # Keras' HDF5 writer and NumPy 2's copy keyword
        warnings.simplefilter("ignore", DeprecationWarning)
        base.save_weights(path)
    return base, path


def request(weights: Path, epochs: int = 1, fine_tune_epochs: int = 1
            ) -> training.TrainRequest:
    return training.TrainRequest(
        dataset="folder:shapes.zip", config=HEAD, name="transfer", weights=str(weights),
        fit=FitSettings(batch_size=8, epochs=epochs, patience=0,
                        fine_tune_epochs=fine_tune_epochs))


@pytest.fixture
def engine(runs_root: Path):
    eng = jobs.Engine(runs_root)
    yield eng
    eng.close()


def finished(job: jobs.Job) -> None:
    assert job.wait(WAIT), "the run did not end in time"
    assert job.result.status == "finished", job.result.message


def saved_model(run_dir: Path, file: str = callbacks.LAST_FILE) -> keras.Model:
    """A run's saved model (about 3 s to load: load each file once and look inside it)."""
    backbones.register()
    return keras.models.load_model(run_dir / file, safe_mode=True)


def trained_backbone(run_dir: Path, file: str = callbacks.LAST_FILE) -> keras.Model:
    """The backbone inside a run's saved model."""
    return saved_model(run_dir, file).get_layer("backbone")


def changed_layers(base: keras.Model, trained: keras.Model) -> set[str]:
    """Names of the layers whose weights (moving statistics included) differ; layers pair
    up by position (auto-generated names differ between processes)."""
    assert len(base.layers) == len(trained.layers)
    return {a.name for a, b in zip(base.layers, trained.layers, strict=True)
            if any(not np.array_equal(x, y)
                   for x, y in zip(a.get_weights(), b.get_weights(), strict=True))}


def top_with_weights(base: keras.Model) -> set[str]:
    """The unfrozen layers of phase 2 that have trainable weights (BatchNorm stays frozen)."""
    return {layer.name for layer in base.layers[-UNFREEZE:]
            if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)}


def head_weights(model: keras.Model) -> list[np.ndarray]:
    return model.get_layer("output").get_weights()


@pytest.mark.slow
def test_phase_one_trains_the_head_only_and_a_resume_goes_on_in_phase_two(
        engine, shapes, base_file) -> None:
    dataset, _ = shapes
    base, path = base_file
    job = engine.submit(request(path, fine_tune_epochs=0), dataset)  # phase 1 only
    finished(job)
    run_dir = job.run_dir
    assert callbacks.read_checkpoint(run_dir)["phase"] == 1
    last = saved_model(run_dir)
    assert changed_layers(base, last.get_layer("backbone")) == set()
    assert changed_layers(base, trained_backbone(run_dir, runs.BEST_FILE)) == set()
    # The head did learn: its weights differ from the same seeded build's.
    keras.utils.set_random_seed(training.SEED)
    start = models.build_model(HEAD, tuple(dataset.info.image_shape), 2, weights=str(path))
    after_phase1 = head_weights(last)
    assert not np.array_equal(start.get_layer("output").get_weights()[0], after_phase1[0])

    # Train up to epoch 2: the model unfreezes layers, so epoch 2 is phase 2.
    job = engine.resume(run_dir, dataset, epochs=2)
    finished(job)
    assert runs.load_history(run_dir)["epoch"].tolist() == [1, 2]
    assert callbacks.read_checkpoint(run_dir)["phase"] == 2
    last = saved_model(run_dir)
    assert changed_layers(base, last.get_layer("backbone")) == top_with_weights(base)
    assert not np.array_equal(after_phase1[0], head_weights(last)[0])
    assert runs.load_config(run_dir)["fit"]["fine_tune_epochs"] == 1


def test_epoch_totals_of_two_phases() -> None:
    two = request(Path("w.weights.h5"), epochs=3, fine_tune_epochs=2)
    assert training.fine_tunes(two) and training.total_epochs(two) == 5
    assert training.with_epochs(two, 7).fit.fine_tune_epochs == 4  # more phase 2
    shorter = training.with_epochs(two, 2)  # within phase 1: no phase 2 left
    assert (shorter.fit.epochs, training.total_epochs(shorter)) == (2, 2)
    frozen = request(Path("w.weights.h5"), fine_tune_epochs=0)
    assert not training.fine_tunes(frozen) and training.total_epochs(frozen) == 1


def test_weights_that_cannot_be_had_are_refused_in_one_sentence(
        engine, shapes, tmp_path, monkeypatch) -> None:
    dataset, _ = shapes
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(backbones, "online", lambda: False)
    req = training.TrainRequest(dataset="folder:shapes.zip", config=HEAD, weights="imagenet",
                                fit=FitSettings(batch_size=8, epochs=1, fine_tune_epochs=1))
    file = backbones.BACKBONES[BACKBONE].imagenet_file
    assert training.request_errors(req, dataset) == [
        f"ImageNet weights for {BACKBONE} are not here and the internet is not reachable: "
        f"put {file} into {tmp_path / 'models'}, or choose a weights file."]

    missing = tmp_path / "nowhere.weights.h5"
    errors = training.request_errors(request(missing), dataset)
    assert len(errors) == 1 and str(missing) in errors[0] and "does not exist" in errors[0]
    with pytest.raises(jobs.EngineRefused, match="does not exist"):
        engine.submit(request(missing), dataset)

    plain = training.TrainRequest(dataset="folder:shapes.zip", config=config.ModelConfig(),
                                  fit=FitSettings(batch_size=8, fine_tune_epochs=2))
    assert any("no backbone layers are unfrozen" in e
               for e in training.request_errors(plain, dataset))


@pytest.mark.slow
def test_cli_trains_the_head_then_the_top_layers_only(shapes, base_file, tmp_path) -> None:
    """One run of two phases, from the command line's backbone flags on a config file's
    head (the CLI trains in its own process, as the engine's worker does): phase 1 trains
    the head, phase 2 at the lower rate the top layers only."""
    _, data = shapes
    base, path = base_file
    zip_path = tmp_path / "shapes.zip"
    zip_path.write_bytes(data)
    plain = dataclasses.replace(HEAD, backbone="", unfreeze=0, blocks=config.ModelConfig().blocks)
    head_file = tmp_path / "head.json"
    head_file.write_text(config.file_json(plain, FitSettings(patience=0)))
    out = subprocess.run(
        [sys.executable, "-m", "cnnlab", "train", "--dataset", str(zip_path),
         "--image-size", "32", "--config", str(head_file), "--backbone", BACKBONE,
         "--weights", str(path), "--unfreeze", str(UNFREEZE), "--fine-tune-epochs", "1",
         "--epochs", "1", "--batch-size", "8", "--runs-dir", str(tmp_path / "runs"), "--json"],
        capture_output=True, text=True, timeout=WAIT, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "finished" and len(result["history"]["loss"]) == 2
    assert "(phase 2)" in out.stderr
    run_dir = Path(result["run_dir"])

    rows = runs.load_history(run_dir)
    assert rows["epoch"].tolist() == [1, 2]  # epochs + fine_tune_epochs
    lr = rows["learning_rate"].tolist()
    assert lr[1] == pytest.approx(lr[0] * HEAD.fine_tune_lr_factor, rel=1e-5)
    assert callbacks.read_checkpoint(run_dir)["phase"] == 2

    # Phase 2 trained conv_1 (the top layers' only weights); every other backbone layer,
    # each BatchNormalization's moving mean and variance included, is the file's.
    trained = trained_backbone(run_dir)
    top = top_with_weights(base)
    assert top and changed_layers(base, trained) == top
    bns = [(a, b) for a, b in zip(base.layers, trained.layers, strict=True)
           if isinstance(a, keras.layers.BatchNormalization)]
    assert bns and all(np.array_equal(a.moving_mean.numpy(), b.moving_mean.numpy())
                       and np.array_equal(a.moving_variance.numpy(), b.moving_variance.numpy())
                       for a, b in bns)

    cfg = runs.load_config(run_dir)
    assert cfg["weights"] == str(path)
    assert cfg["model"] == HEAD.to_dict()  # the flags put the backbone in the blocks' place
    assert cfg["fit"]["epochs"] == 1 and cfg["fit"]["fine_tune_epochs"] == 1
    assert cfg["fit"]["batch_size"] == 8
    assert training.request_from_run(run_dir).weights == str(path)
    assert runs.load_status(run_dir)["epochs_done"] == 2

    bad = subprocess.run(
        [sys.executable, "-m", "cnnlab", "train", "--dataset", str(zip_path),
         "--backbone", "NoSuchNet"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert bad.returncode == 2 and "MobileNetV3Small" in bad.stderr
