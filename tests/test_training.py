"""One run in this process (training.train_run): events, files, stop, NaN, health checks,
budgets checked again by the worker, and the resumable checkpoint.

Tiny model (one conv block of 4 filters, dense 16) on a few hundred bundled MNIST samples,
one or two epochs, so the whole file runs in well under a minute on a CPU. The engine
(queue, worker processes, Ray) is tested in test_engine.py and test_ray.py.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import with_fit

from cnnlab.data import datasets
from cnnlab.model import config, models
from cnnlab.runs import store as runs
from cnnlab.train import budgets, callbacks, device, health, training
from cnnlab.train.events import EventLog

TINY = config.ModelConfig(
    blocks=(config.ConvBlock(filters=4),),
    dense=(config.DenseLayer(16),),
    learning_rate=3e-3,
)


@pytest.fixture(scope="module")
def sample() -> datasets.Dataset:
    ds = datasets.load("mnist_sample")
    # A small test set keeps evaluation instant.
    return datasets.Dataset(ds.info, ds.x_train, ds.y_train, ds.x_test[:200], ds.y_test[:200])


def request(**kw) -> training.TrainRequest:
    base = {"dataset": "mnist_sample", "config": TINY, "epochs": 1, "batch_size": 32,
            "patience": 2, "limit": 320, "val_fraction": 0.1, "name": "tiny"}
    return training.TrainRequest(**with_fit({**base, **kw}))


def new_run(root: Path, req: training.TrainRequest, ds) -> Path:
    return runs.create_run(root, training.run_config(req, ds))


def test_one_epoch_writes_every_file(runs_root: Path, sample) -> None:
    req = request()
    run_dir = new_run(runs_root, req, sample)
    result = training.train_run(req, sample, run_dir)
    assert result.status == "finished", result.message
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.json", "status.json", "history.csv", "best.keras", "metrics.json",
            "last.keras", "checkpoint.json"} <= names
    assert "best.partial.keras" not in names and "last.partial.keras" not in names
    status = runs.load_status(run_dir)
    assert status["status"] == "finished" and status["epochs_done"] == 1
    assert status["device"].startswith(("CPU", "GPU")) and status["params"] > 0
    hist = runs.load_history(run_dir)
    assert list(hist.columns) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy",
                                  "learning_rate", "seconds"]
    assert hist["epoch"].tolist() == [1] and hist["learning_rate"][0] == pytest.approx(3e-3)
    metrics = runs.load_metrics(run_dir)
    assert metrics["n_test"] == 200 and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert np.array(metrics["confusion"]).sum() == 200
    assert len(metrics["per_class"]) == 10
    cfg = runs.load_config(run_dir)
    assert config.ModelConfig.from_dict(cfg["model"]) == TINY
    assert cfg["class_names"] == list("0123456789") and cfg["input_shape"] == [28, 28, 1]


def test_tensorboard_logs_when_asked(runs_root: Path, sample) -> None:
    req = request(tensorboard=True)
    run_dir = new_run(runs_root, req, sample)
    result = training.train_run(req, sample, run_dir)
    assert result.status == "finished", result.message
    logs = training.tensorboard_dir(run_dir)
    assert any(p.name.startswith("events.out.tfevents") for p in logs.rglob("*"))
    assert training.request_from_run(run_dir).tensorboard is True


def test_a_runs_seed_sets_its_split_and_is_kept_in_its_config(runs_root: Path, sample) -> None:
    *_, v42, _ = training.prepare_data(sample, request())
    *_, v1, _ = training.prepare_data(sample, request(seed=1))
    assert len(v42) == len(v1) > 0 and not np.array_equal(v42, v1)
    assert np.array_equal(v42, training.prepare_data(sample, request())[2])  # repeatable
    run_dir = new_run(runs_root, request(seed=1), sample)
    assert runs.load_config(run_dir)["seed"] == 1
    assert training.request_from_run(run_dir).seed == 1
    # A run written before requests had a seed trained with training.SEED.
    old = {k: v for k, v in runs.load_config(run_dir).items() if k != "seed"}
    assert training.request_from_config(old).seed == training.SEED == request().seed
    assert any("Seed is -1" in e for e in training.request_errors(request(seed=-1), sample))


def test_a_runs_seed_sets_its_starting_weights(runs_root: Path, sample) -> None:
    import keras

    def first_kernel(seed: int) -> np.ndarray:
        """The first conv's kernel of a run stopped within its first batch."""
        stop = callbacks.StopFlag()
        stop.set()
        req = request(seed=seed)
        run_dir = new_run(runs_root, req, sample)
        result = training.train_run(req, sample, run_dir, stop=stop, evaluate=False)
        assert result.status == "stopped", result.message
        model = keras.saving.load_model(runs.best_model_path(run_dir), safe_mode=True)
        return model.get_layer("block1_conv1").get_weights()[0]

    # One step moves a weight by about the learning rate (3e-3); fresh weights differ by
    # far more. So the same seed starts from the same weights and another seed does not.
    seed42 = first_kernel(42)
    assert np.abs(first_kernel(42) - seed42).max() < 1e-3
    assert np.abs(first_kernel(1) - seed42).max() > 0.05


def test_callback_events_in_order_with_right_counts() -> None:
    import keras

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (100, 8, 8, 1), dtype=np.uint8)
    y = rng.integers(0, 3, 100)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 255),
                              keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    def run(min_interval: float) -> list[dict]:
        log = EventLog()
        cb = callbacks.progress_callback(log.add, n_samples=100, batch_size=16,
                                         min_interval=min_interval)
        model.fit(x, y, validation_data=(x[:20], y[:20]), epochs=2, batch_size=16,
                  callbacks=[cb], verbose=0)
        return log.since(0)

    events = run(0.0)  # unthrottled: every batch
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    steps = math.ceil(100 / 16)
    expected = [("batch", ep, b) for ep in (1, 2) for b in range(1, steps + 1)]
    expected.insert(steps, ("epoch", 1, None))
    expected.append(("epoch", 2, None))
    assert [(e["kind"], e["epoch"], e.get("batch")) for e in events] == expected
    assert all(e["batches"] == steps and e["epochs"] == 2 for e in events if e["kind"] == "batch")
    last = events[-2]
    assert last["eta_epoch_s"] == 0 and last["samples_per_s"] > 0
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"} <= set(
        events[-1])

    throttled = run(3600.0)  # throttled: only each epoch's last batch gets through
    assert [(e["kind"], e["epoch"], e.get("batch")) for e in throttled] == [
        ("batch", 1, steps), ("epoch", 1, None), ("batch", 2, steps), ("epoch", 2, None)]


def test_stop_ends_within_one_batch_and_keeps_the_run(runs_root: Path, sample) -> None:
    stop = callbacks.StopFlag()

    def listener(event: dict) -> None:  # runs in the training thread, like a Stop click
        if event["kind"] == "batch" and event["batch"] == 3:
            stop.set()

    req = request(epochs=3)
    run_dir = new_run(runs_root, req, sample)
    log = EventLog(listener=listener)
    result = training.train_run(req, sample, run_dir, log.add, stop, min_interval=0.0)
    batches = [e for e in log.since(0) if e["kind"] == "batch"]
    assert batches[-1]["epoch"] == 1 and batches[-1]["batch"] == 3
    n_train = runs.load_status(run_dir)["n_train"]
    assert batches[-1]["batches"] == math.ceil(n_train / 32) > 3
    assert result.status == "stopped" and "Stopped" in result.message
    assert runs.load_status(run_dir)["status"] == "stopped"
    assert runs.load_history(run_dir).empty  # the cut epoch is not a result
    assert runs.best_model_path(run_dir).exists()
    assert runs.load_metrics(run_dir) is not None


# The arithmetic a run computes in: float32, or on a CPU with native bfloat16 oneDNN's bfloat16
# rewrite of the graphs (models without batch norm) or Keras' mixed_bfloat16 (with it).
ARITHMETIC = {
    "float32": (False, False),
    "bfloat16 graphs": (True, False),
    "bfloat16 layers": (True, True),
}


def in_arithmetic(monkeypatch: pytest.MonkeyPatch, name: str) -> config.ModelConfig:
    """Make this process's runs compute in ``name``, whatever this CPU would choose (bfloat16
    is emulated where the CPU lacks it), and return a small model that takes that path."""
    bfloat16, batch_norm = ARITHMETIC[name]
    dev = dataclasses.replace(device.detect(), bfloat16=bfloat16)
    monkeypatch.setattr(device, "detect", lambda: dev)
    cfg = config.ModelConfig(
        blocks=(config.ConvBlock(filters=16, batch_norm=batch_norm),
                config.ConvBlock(filters=32)), dense=(config.DenseLayer(64),))
    expected = {"float32": "", "bfloat16 graphs": training.GRAPHS,
                "bfloat16 layers": training.LAYERS}[name]
    assert training.bfloat16_mode(cfg, dev) == expected
    return cfg


@pytest.mark.parametrize("arithmetic", list(ARITHMETIC))
def test_nan_loss_fails_with_a_clear_message(runs_root: Path, sample, arithmetic: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # A NaN in the output layer's kernel makes every logit NaN in any arithmetic (NaN times
    # anything is NaN; no ReLU comes after it). A huge learning rate does not: in bfloat16 on
    # an AMX CPU the ReLUs died first and the loss stayed finite.
    cfg = in_arithmetic(monkeypatch, arithmetic)
    build = training.build_compiled

    def with_a_nan(*args, **kwargs):
        model = build(*args, **kwargs)
        kernel = model.layers[-1].kernel
        values = np.array(kernel.numpy())
        values[0, 0] = np.nan
        kernel.assign(values)
        return model

    monkeypatch.setattr(training, "build_compiled", with_a_nan)
    req = request(config=cfg)
    run_dir = new_run(runs_root, req, sample)
    result = training.train_run(req, sample, run_dir)
    assert result.status == "failed", result.message
    status = runs.load_status(run_dir)
    assert status["status"] == "failed" and result.metrics is None
    assert status["message"].startswith("Loss became NaN at epoch 1, batch 1"), status
    assert "starting weights" in status["message"] and "learning rate" not in status["message"]


def test_nan_from_a_huge_learning_rate_names_it(runs_root: Path, sample,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # How a learning rate of 1e20 ends depends on the arithmetic (bfloat16's ReLUs can die
    # first, leaving the loss finite), so this runs in float32 on every CPU.
    cfg = dataclasses.replace(in_arithmetic(monkeypatch, "float32"), optimizer="sgd",
                              learning_rate=1e20)
    req = request(config=cfg)
    run_dir = new_run(runs_root, req, sample)
    result = training.train_run(req, sample, run_dir)
    assert result.status == "failed", result.message
    message = runs.load_status(run_dir)["message"]
    assert "NaN" in message and "learning rate" in message
    assert "1e+20" in message and "sgd" in message


def test_chance_warning_fires_on_shuffled_labels(runs_root: Path, sample) -> None:
    rng = np.random.default_rng(1)
    shuffled = datasets.Dataset(sample.info, sample.x_train, rng.permutation(sample.y_train),
                                sample.x_test, sample.y_test)
    req = request(limit=600, val_fraction=0.3)
    run_dir = new_run(runs_root, req, shuffled)
    training.train_run(req, shuffled, run_dir, evaluate=False)
    kinds = [w.kind for w in health.health_warnings(runs.load_history(run_dir), 10)]
    assert "chance" in kinds


def rows(loss, val_loss=None, acc=None, val_acc=None) -> list[dict]:
    n = len(loss)
    val_loss = val_loss or loss
    acc = acc or [0.8] * n
    val_acc = val_acc or acc
    return [{"loss": a, "val_loss": b, "accuracy": c, "val_accuracy": d}
            for a, b, c, d in zip(loss, val_loss, acc, val_acc, strict=True)]


def kinds(history, n_classes: int = 10) -> list[str]:
    return [w.kind for w in health.health_warnings(history, n_classes)]


def test_health_checks_pure() -> None:
    assert kinds([]) == []
    assert kinds(rows([1.0, 0.5, 0.3], acc=[0.6, 0.8, 0.9])) == []
    assert kinds(rows([2.3, float("nan")])) == ["nan"]
    assert "chance" in kinds(rows([2.30], acc=[0.11]))
    assert "chance" not in kinds(rows([2.30], acc=[0.16]))
    assert "chance" in kinds(rows([1.0], acc=[0.9], val_acc=[0.10]))  # val stuck only
    overfit = rows([1.0, 0.8, 0.6, 0.4], val_loss=[0.9, 1.0, 1.1, 1.2])
    assert "overfit" in kinds(overfit)
    assert "overfit" not in kinds(overfit[1:])  # only 2 rising steps
    assert "overfit" not in kinds(rows([1.0, 0.8, 0.6, 0.4], val_loss=[0.9, 1.0, 0.95, 1.2]))
    assert "lr_high" in kinds(rows([1.0, 2.0]))
    assert "lr_high" in kinds(rows([50.0]))
    assert "lr_low" in kinds(rows([1.500, 1.499, 1.498], acc=[0.4, 0.4, 0.4]))
    assert "lr_low" not in kinds(rows([0.050, 0.0499, 0.0498], acc=[0.99] * 3))
    messages = health.health_warnings(rows([2.3], acc=[0.1]), 10)[0].message
    assert "learning rate" in messages and "batch norm" in messages and "labels" in messages


def test_request_errors_say_what_is_wrong(sample) -> None:
    assert training.request_errors(request(), sample) == []
    errs = training.request_errors(request(epochs=0, batch_size=10_000), sample)
    assert any("Epochs is 0" in e for e in errs)
    assert any("Batch size 10000" in e and "288" in e for e in errs)
    assert any("Limit 5" in e for e in training.request_errors(request(limit=5), sample))
    bad = dataclasses.replace(TINY, learning_rate=-1.0)
    assert training.request_errors(request(config=bad), sample)
    assert any("Mixed precision needs a GPU" in e
               for e in training.request_errors(request(mixed_precision=True), sample))


def test_budgets_refuse_with_the_number_and_the_limit(sample) -> None:
    small = budgets.Budgets(max_params=1_000, max_epochs=5, max_activation_mb=1)
    errs = training.request_errors(request(epochs=6, batch_size=256, limit=None), sample, small)
    text = " ".join(errs)
    assert "Epochs is 6" in text and "at most 5" in text
    params = models.total_params(TINY, (28, 28, 1), 10)
    assert f"{params:,} parameters" in text and "at most 1,000" in text
    assert "MB of activations" in text and "at most 1 MB" in text


def test_the_worker_checks_budgets_again(runs_root: Path, sample) -> None:
    req = request()
    run_dir = new_run(runs_root, req, sample)
    result = training.train_run(req, sample, run_dir, budgets=budgets.Budgets(max_params=100))
    assert result.status == "failed" and result.message.startswith("Refused by the worker")
    assert "at most 100" in result.message
    assert runs.load_status(run_dir)["status"] == "failed"
    assert not runs.best_model_path(run_dir).exists()


def test_time_limit_ends_the_run_with_its_files(runs_root: Path, sample,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    req = request(epochs=50, limit=None, patience=0)  # no early stop before the limit
    run_dir = new_run(runs_root, req, sample)
    # The clock jumps an hour once epoch 2 has ended, so the 1-minute limit strikes in epoch
    # 3 on any machine, however fast or slow.
    jump = [0.0]
    real_monotonic = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: real_monotonic() + jump[0])

    def hour_after_epoch_two(event: dict) -> None:
        if event["kind"] == "epoch" and event["epoch"] == 2:
            jump[0] = 3600.0

    result = training.train_run(req, sample, run_dir, hour_after_epoch_two,
                                budgets=budgets.Budgets(max_run_minutes=1))
    assert result.status == "time limit", result.message
    assert "time limit of 1 minutes" in result.message
    status = runs.load_status(run_dir)
    assert status["status"] == "time limit" and status["epochs_done"] == 2
    assert runs.best_model_path(run_dir).exists() and runs.load_metrics(run_dir) is not None


def test_resume_continues_weights_optimizer_and_schedule(runs_root: Path, sample) -> None:
    import keras

    decaying = dataclasses.replace(TINY, lr_decay_rate=0.5, lr_decay_steps=5)
    req = request(config=decaying, epochs=2)
    run_dir = new_run(runs_root, req, sample)
    assert training.train_run(req, sample, run_dir, evaluate=False).status == "finished"
    steps = math.ceil(runs.load_status(run_dir)["n_train"] / 32)
    first = keras.models.load_model(run_dir / callbacks.LAST_FILE)
    assert int(first.optimizer.iterations.numpy()) == 2 * steps
    assert callbacks.read_checkpoint(run_dir)["epoch"] == 2

    resumed = training.train_run(training.with_epochs(req, 4), sample, run_dir, resume=True)
    assert resumed.status == "finished", resumed.message
    hist = runs.load_history(run_dir)
    assert hist["epoch"].tolist() == [1, 2, 3, 4]
    last = keras.models.load_model(run_dir / callbacks.LAST_FILE)
    assert int(last.optimizer.iterations.numpy()) == 4 * steps  # continued, not restarted
    # The schedule carries on from step 2*steps: epoch 3's rate is below epoch 2's.
    lr = hist["learning_rate"].tolist()
    assert lr[2] < lr[1] and lr[2] == pytest.approx(3e-3 * 0.5 ** (3 * steps / 5), rel=1e-4)
    assert runs.load_status(run_dir)["epochs_done"] == 4


def test_resume_needs_a_checkpoint(runs_root: Path, sample) -> None:
    run_dir = new_run(runs_root, request(), sample)
    result = training.train_run(request(), sample, run_dir, resume=True)
    assert result.status == "failed" and "no resumable checkpoint" in result.message


def test_cli_refuses_an_over_budget_run_with_exit_2(runs_root: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "CNNLAB_MAX_EPOCHS": "3", "CNNLAB_MAX_PARAMS": "50000"}
    done = subprocess.run(
        [sys.executable, "-m", "cnnlab", "train", "--dataset", "mnist_sample", "--preset",
         "quick", "--epochs", "5", "--runs-dir", str(runs_root), "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "Epochs is 5" in done.stderr and "at most 3" in done.stderr
    assert "114,314 parameters" in done.stderr and "at most 50,000" in done.stderr
    assert done.stdout == "" and not runs.list_runs(runs_root)


def test_a_resume_writes_back_a_history_row_its_checkpoint_has(runs_root: Path, sample) -> None:
    # Killed after epoch 2's checkpoint was written but before its history row was.
    req = request(epochs=2)
    run_dir = new_run(runs_root, req, sample)
    assert training.train_run(req, sample, run_dir, evaluate=False).status == "finished"
    runs.truncate_history(run_dir, 1)
    resumed = training.train_run(training.with_epochs(req, 3), sample, run_dir, resume=True,
                                 evaluate=False)
    assert resumed.status == "finished", resumed.message
    assert runs.load_history(run_dir)["epoch"].tolist() == [1, 2, 3]
