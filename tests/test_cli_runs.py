"""``cnnlab runs …`` on a real tiny run: list, show, compare, resume after a real Ctrl-C,
fine-tune, evaluate, export, rename, delete, and every refusal as one sentence with exit 2
and the run store untouched. Training, resuming and Ctrl-C run in real subprocesses;
commands that only read and print run through the CLI's main() in the test process
(``cli_here``: the same parsing, work and output, without a Python start-up each)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, CliHere

from cnnlab.runs import store as runs

TRAIN = ("train", "--dataset", "mnist_sample", "--preset", "quick", "--limit", "300")


def cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m cnnlab ARGS`` from the repository root, output captured as text."""
    return subprocess.run([sys.executable, "-m", "cnnlab", *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          stdin=subprocess.DEVNULL, env=env)


def cli_json(*args: str | Path) -> dict:
    """The one JSON object a successful ``--json`` command prints."""
    out = cli(*args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def tree_hash(root: Path) -> str:
    """One digest of every path and file's bytes under ``root``."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs folder holding one finished 2-epoch run (trained once for the module)."""
    root = tmp_path_factory.mktemp("runs")
    out = cli(*TRAIN, "--epochs", "2", "--runs-dir", root, "--json")
    assert out.returncode == 0, out.stderr
    return root


def copy_of(trained: Path, tmp_path: Path) -> tuple[Path, str]:
    """A copy of the trained runs folder (for a test that changes it) and the run's id."""
    root = tmp_path / "runs"
    shutil.copytree(trained, root)
    (run,) = runs.list_runs(root)
    return root, run.run_id


def second_run(root: Path, run_id: str, new_id: str, **fit: object) -> Path:
    """A copy of run ``run_id`` under ``new_id`` with some fit settings changed."""
    run_dir = root / new_id
    shutil.copytree(root / run_id, run_dir)
    config = runs.load_config(run_dir)
    runs.write_json(run_dir / runs.CONFIG_FILE, {**config, "fit": {**config["fit"], **fit}})
    return run_dir


def interrupt_after_first_epoch(args: tuple[str | Path, ...]) -> tuple[int, str]:
    """Run ``python -m cnnlab ARGS`` and press Ctrl-C once it prints an epoch line: SIGINT to
    its whole process group, workers included, as a terminal sends it. Its exit status and
    standard error."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnlab", *map(str, args)], cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
        # As from a terminal (see test_cli.py): Ctrl-C must not arrive ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if line.startswith("epoch "):
                assert proc.poll() is None, "the run ended before Ctrl-C"
                os.killpg(proc.pid, signal.SIGINT)
                break
        out, err = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert out == ""  # no result object for a run that did not end
    return proc.returncode, "".join(seen) + err


def optimizer_iterations(path: Path) -> int:
    """The optimizer's step count saved in a .keras checkpoint."""
    import keras

    return int(keras.saving.load_model(path).optimizer.iterations.numpy())


# ---------------------------------------------------------------- no run needed


def test_help_lists_every_action() -> None:
    out = cli("runs", "--help")
    assert out.returncode == 0, out.stderr
    for action in ("list", "show", "compare", "resume", "fine-tune", "evaluate", "export",
                   "rename", "delete"):
        assert action in out.stdout


def test_an_empty_runs_folder_lists_nothing_and_shows_nothing(tmp_path: Path,
                                                              cli_here: CliHere) -> None:
    assert cli_here.json("runs", "list", "--runs-dir", tmp_path) == {
        "runs_dir": str(tmp_path), "total": 0, "runs": []}
    out = cli_here("runs", "show", "20260101", "--runs-dir", tmp_path, "--json")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("error: there is no run '20260101'")


def test_the_runs_folder_defaults_as_the_apps(tmp_path: Path) -> None:
    env = {**os.environ, "CNNLAB_RUNS_DIR": str(tmp_path)}
    out = cli("runs", "list", "--json", env=env)
    assert out.returncode == 0 and json.loads(out.stdout)["runs_dir"] == str(tmp_path)
    out = cli("runs", "list", env=env)
    assert out.returncode == 0 and out.stdout.strip() == f"no runs in {tmp_path}"


# ---------------------------------------------------------------- reading a real run


@pytest.mark.slow
def test_list_shows_the_runs_table_as_text_and_json(trained: Path,
                                                    cli_here: CliHere) -> None:
    listed = cli_here.json("runs", "list", "--runs-dir", trained)
    (row,) = listed["runs"]
    assert row["status"] == "finished" and row["dataset"] == "mnist_sample"
    assert row["epochs"] == "2/2" and row["params"] == 114_314 and row["owner"] == "local"
    assert 0 <= row["test_accuracy"] <= 1 and 0 <= row["best_val_accuracy"] <= 1
    assert row["seconds"] > 0 and row["model"].startswith("quick")
    for only in (("--status", "failed"), ("--dataset", "mnist")):
        assert cli_here.json("runs", "list", *only, "--runs-dir", trained)["runs"] == []
    text = cli_here("runs", "list", "--runs-dir", trained)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "NAME", "STATUS"]
    assert lines[1].startswith(row["run_id"]) and "finished" in lines[1]
    assert "{" not in text.stdout and "'" not in text.stdout


@pytest.mark.slow
def test_show_gives_config_fit_status_history_and_test_scores(trained: Path,
                                                              cli_here: CliHere) -> None:
    (run,) = runs.list_runs(trained)
    shown = cli_here.json("runs", "show", run.run_id[:10], "--runs-dir", trained)  # a prefix
    assert shown["run"]["run_id"] == run.run_id and shown["run"]["status"] == "finished"
    assert shown["config"] == run.config["model"] and shown["fit"] == run.config["fit"]
    assert shown["fit"]["epochs"] == 2 and shown["parent"] is None
    assert shown["history"]["epoch"] == [1, 2] and len(shown["history"]["val_accuracy"]) == 2
    assert shown["test"]["test_accuracy"] == runs.load_metrics(run.run_dir)["test_accuracy"]
    text = cli_here("runs", "show", run.run_id, "--runs-dir", trained).stdout
    assert "status: finished" in text and "blocks[1].filters" in text
    assert "EPOCH" in text and "test: accuracy" in text


@pytest.mark.slow
def test_compare_lists_scores_and_the_settings_that_differ(trained: Path, tmp_path: Path,
                                                           cli_here: CliHere) -> None:
    root, run_id = copy_of(trained, tmp_path)
    other = second_run(root, run_id, "20200101-000000-other", batch_size=64)
    compared = cli_here.json("runs", "compare", run_id, other.name, "--runs-dir", root)
    assert [r["run_id"] for r in compared["runs"]] == [run_id, other.name]
    assert all(r["test_accuracy"] is not None for r in compared["runs"])
    assert compared["differ"] == [{"field": "batch_size", run_id: 128, other.name: 64}]
    text = cli_here("runs", "compare", run_id, other.name, "--runs-dir", root).stdout
    assert "test accuracy" in text and "batch_size" in text and "1 setting(s)" in text


@pytest.mark.slow
def test_evaluate_gives_test_accuracy_and_a_confusion_matrix(trained: Path,
                                                             cli_here: CliHere) -> None:
    before = tree_hash(trained)
    (run,) = runs.list_runs(trained)
    result = cli_here.json("runs", "evaluate", run.run_id, "--runs-dir", trained)
    metrics = runs.load_metrics(run.run_dir)
    assert result["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert result["confusion"] == metrics["confusion"]
    assert sum(map(sum, result["confusion"])) == result["n_test"] == 1000
    text = cli_here("runs", "evaluate", run.run_id, "--runs-dir", trained).stdout
    assert "TRUE \\ PREDICTED" in text and "PRECISION" in text
    assert tree_hash(trained) == before  # evaluating writes nothing


# ---------------------------------------------------------------- training again


@pytest.mark.slow
def test_resume_after_ctrl_c_continues_from_the_next_epoch(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    epochs = 5
    code, _ = interrupt_after_first_epoch((*TRAIN, "--epochs", epochs, "--batch-size", "8",
                                           "--runs-dir", root, "--json"))
    assert code == 130
    (run,) = runs.list_runs(root)
    assert runs.load_status(run.run_dir)["status"] == "interrupted"
    done = json.loads((run.run_dir / "checkpoint.json").read_text())["epoch"]
    assert 1 <= done < epochs
    steps = optimizer_iterations(run.run_dir / "last.keras") // done
    assert steps > 0
    first = runs.load_history(run.run_dir)
    assert list(first["epoch"]) == list(range(1, done + 1))

    # Ctrl-C during the resume: the worker stops, the run is "interrupted" again.
    code, err = interrupt_after_first_epoch(("runs", "resume", run.run_id[:15], "--runs-dir",
                                             root, "--json"))
    assert code == 130 and "Traceback" not in err, err
    assert "Resumed at epoch" in err and "run kept in" in err
    assert runs.load_status(run.run_dir)["status"] == "interrupted"
    later = json.loads((run.run_dir / "checkpoint.json").read_text())["epoch"]
    assert later > done

    result = cli_json("runs", "resume", run.run_id, "--runs-dir", root)
    assert result["status"] == "finished" and result["test_accuracy"] is not None
    history = runs.load_history(run.run_dir)
    n = len(history)
    assert list(history["epoch"]) == list(range(1, n + 1))  # continuous, no epoch twice
    assert later < n <= epochs  # early stopping may end it before the planned epochs
    assert history["loss"][:done].tolist() == first["loss"].tolist()  # earlier rows kept
    assert len(result["history"]["loss"]) == n
    # The optimizer carried on: its step count is every epoch's, not the resumed ones'.
    assert optimizer_iterations(run.run_dir / "last.keras") == n * steps
    rates = history["learning_rate"].tolist()  # the schedule continued: it never rose
    assert all(b <= a for a, b in zip(rates, rates[1:], strict=False))


@pytest.mark.slow
def test_fine_tune_makes_a_child_run_that_records_its_parent(trained: Path,
                                                             tmp_path: Path) -> None:
    root, run_id = copy_of(trained, tmp_path)
    result = cli_json("runs", "fine-tune", run_id, "--epochs", "1", "--runs-dir", root)
    assert result["status"] == "finished" and result["parent"] == run_id
    assert result["run_id"] != run_id and len(result["history"]["loss"]) == 1
    assert runs.load_config(result["run_dir"])["parent"] == run_id
    assert cli_json("runs", "show", result["run_id"], "--runs-dir", root)["parent"] == run_id
    assert runs.load_status(root / run_id)["status"] == "finished"  # the parent as it was


# ---------------------------------------------------------------- files and names


@pytest.mark.slow
def test_exports_load_and_agree_with_the_keras_model(trained: Path, tmp_path: Path,
                                                     cli_here: CliHere) -> None:
    import keras
    import tensorflow as tf

    from cnnlab.data import datasets
    from cnnlab.use import export

    root, run_id = copy_of(trained, tmp_path)
    made = {fmt: cli_here.json("runs", "export", run_id, "--format", fmt, "--out",
                          tmp_path / f"model-{fmt}", "--runs-dir", root)
            for fmt in ("tflite", "tflite-int8", "savedmodel")}
    assert made["tflite"]["agreement"] == [100, 100]
    assert made["tflite-int8"]["agreement"][0] >= 90
    x = datasets.load("mnist_sample").x_test[:100]
    model = keras.saving.load_model(root / run_id / "best.keras")
    expected = export.keras_labels(model, x)
    for fmt in ("tflite", "tflite-int8"):
        content = (tmp_path / f"model-{fmt}").read_bytes()
        assert len(content) == made[fmt]["size"]
        agree = (export.tflite_labels(content, export._model_input(model, x)) == expected)
        assert agree.sum() >= (100 if fmt == "tflite" else 90)
    with zipfile.ZipFile(tmp_path / "model-savedmodel") as zf:
        zf.extractall(tmp_path / "sm")
    loaded = tf.saved_model.load(str(tmp_path / "sm" / "saved_model"))
    probs = np.asarray(loaded.serve(export._model_input(model, x)))
    np.testing.assert_allclose(probs, np.asarray(model(export._model_input(model, x))),
                               atol=1e-5)
    assert (probs.argmax(axis=1) == expected).all()
    text = cli_here("runs", "export", run_id, "--format", "tflite", "--out",
                    tmp_path / "again", "--runs-dir", root).stdout
    assert "agrees with the Keras model on 100/100 test images" in text


@pytest.mark.slow
def test_rename_and_delete_as_on_the_page(trained: Path, tmp_path: Path,
                                          cli_here: CliHere) -> None:
    root, run_id = copy_of(trained, tmp_path)
    renamed = cli_here.json("runs", "rename", run_id, "my best try", "--runs-dir", root)
    assert renamed["name"] == "my best try"
    assert runs.load_config(root / run_id)["name"] == "my best try"
    assert "my best try" in cli_here("runs", "list", "--runs-dir", root).stdout

    refused = cli_here("runs", "delete", run_id, "--runs-dir", root)  # no --yes, no terminal
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert (root / run_id).is_dir()
    assert cli_here.json("runs", "delete", run_id[:12], "--yes", "--runs-dir", root) == {
        "deleted": run_id, "name": "my best try"}
    assert not (root / run_id).exists() and runs.list_runs(root) == []


@pytest.mark.slow
@pytest.mark.parametrize("state", ["running", "queued"])
def test_rename_and_delete_refuse_an_active_run(trained: Path, tmp_path: Path,
                                                state: str, cli_here: CliHere) -> None:
    root, run_id = copy_of(trained, tmp_path)
    runs.update_status(root / run_id, status=state)
    before = tree_hash(root)
    for args in (("rename", run_id, "new name"), ("delete", run_id, "--yes")):
        out = cli_here("runs", *args, "--runs-dir", root, "--json")
        assert out.returncode == 2 and out.stdout == ""
        assert f"is {state}: stop it" in out.stderr
    assert tree_hash(root) == before


# ---------------------------------------------------------------- refused input


def _damaged_config(root: Path, run_id: str) -> None:
    (root / run_id / runs.CONFIG_FILE).write_text("{not json", encoding="utf-8")


def _no_last_keras(root: Path, run_id: str) -> None:
    runs.update_status(root / run_id, status="interrupted")
    (root / run_id / "last.keras").unlink()


def _ambiguous(root: Path, run_id: str) -> None:
    second_run(root, run_id, run_id[:15] + "-twin")


@pytest.mark.slow
@pytest.mark.parametrize("prepare, args, says", [
    (None, ("show", "20991231"), "there is no run '20991231'"),
    (None, ("resume", "../../etc"), "there is no run '../../etc'"),
    (_ambiguous, ("show", "{prefix}"), "is the start of 2 runs"),
    (_ambiguous, ("delete", "{prefix}", "--yes"), "is the start of 2 runs"),
    (_damaged_config, ("resume", "{run}"), "config.json is missing or unreadable"),
    (_damaged_config, ("fine-tune", "{run}"), "config.json is missing or unreadable"),
    (_damaged_config, ("evaluate", "{run}"), "config.json is missing or unreadable"),
    (_damaged_config, ("export", "{run}", "--format", "tflite", "--out", "{tmp}/m.tflite"),
     "config.json is missing or unreadable"),
    (_no_last_keras, ("resume", "{run}"), "has no resumable checkpoint (last.keras)"),
    (None, ("resume", "{run}"), "is finished: only a stopped, interrupted"),
    (None, ("export", "{run}", "--format", "tflite", "--out", "/proc/cnnlab-m.tflite"),
     "cannot be written"),
    (None, ("export", "{run}", "--format", "tflite", "--out", "{tmp}/a-file/m.tflite"),
     "does not exist"),
    (None, ("rename", "{run}", "../../escape"), "looks like a path"),
    (None, ("fine-tune", "{run}", "--epochs", "0"), "--epochs 0"),
])
def test_refused_input_is_one_sentence_exit_2_and_changes_nothing(
        trained: Path, tmp_path: Path, prepare, args: tuple[str, ...], says: str,
        cli_here: CliHere) -> None:
    root, run_id = copy_of(trained, tmp_path)
    (tmp_path / "a-file").write_text("not a folder")
    if prepare is not None:
        prepare(root, run_id)
    before = tree_hash(root)
    filled = [a.format(run=run_id, prefix=run_id[:15], tmp=tmp_path) for a in args]
    for extra in ((), ("--json",)):
        out = cli_here("runs", *filled, "--runs-dir", root, *extra)
        assert out.returncode == 2, out.stderr
        assert out.stdout == ""
        assert out.stderr.startswith("error: ") and says in out.stderr, out.stderr
        assert out.stderr.count("\n") == 1, out.stderr  # one line
    assert tree_hash(root) == before
    assert not (tmp_path / "m.tflite").exists()
