"""Run store: ids, path safety, atomic writes, history, listing, interrupted marking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnnlab.runs import store as runs


def make_run(root: Path, name: str = "demo", status: str = "queued") -> Path:
    run_dir = runs.create_run(root, {"name": name, "model": {}, "dataset": "mnist"})
    runs.update_status(run_dir, status=status)
    return run_dir


def test_create_run_writes_config_and_status(runs_root: Path) -> None:
    run_dir = make_run(runs_root, "My Run: quick/../evil")
    assert run_dir.parent == runs_root.resolve()
    assert run_dir.name.endswith("-my-run-quick-evil")
    config = json.loads((run_dir / "config.json").read_text())
    assert config.keys() == {"name", "model", "dataset", "created"}  # fixed facts only here
    assert config["name"] == "My Run: quick/../evil"
    status = runs.load_status(run_dir)
    assert status["status"] == runs.RunStatus.QUEUED  # changing facts only here
    assert status.keys() == {"status", "epochs_done", "message", "updated"}


def test_a_run_saved_before_fit_settings_had_one_home_reads_in_todays_layout(
        runs_root: Path) -> None:
    run_dir = runs_root / "20250101-000000-old"
    run_dir.mkdir()
    runs.write_json(run_dir / runs.CONFIG_FILE, {
        "model": {"optimizer": "adam", "batch_size": 64, "epochs": 10, "patience": 2},
        "epochs": 3, "batch_size": 32, "dataset": "mnist"})
    runs.write_json(run_dir / runs.STATUS_FILE, {"status": "finished", "name": "old one",
                                                 "created": "2025-01-01T00:00:00"})
    config = runs.load_config(run_dir)
    assert config["model"] == {"optimizer": "adam"}
    assert config["fit"] == {"batch_size": 32, "epochs": 3, "patience": 2}
    assert (config["name"], config["created"]) == ("old one", "2025-01-01T00:00:00")
    [info] = runs.list_runs(runs_root)
    assert (info.name, info.dataset) == ("old one", "mnist")


def test_ids_are_unique_within_one_second(runs_root: Path) -> None:
    dirs = {make_run(runs_root, "same") for _ in range(5)}
    assert len(dirs) == 5


@pytest.mark.parametrize(
    "run_id", ["../x", "..", "a/b", "20240101-000000/../../etc", "/etc", "", "20240101-000000-A"]
)
def test_unsafe_ids_are_rejected(runs_root: Path, run_id: str) -> None:
    with pytest.raises(runs.RunPathError):
        runs.run_dir_for(runs_root, run_id)


def test_check_inside(runs_root: Path, tmp_path: Path) -> None:
    run_dir = make_run(runs_root)
    assert runs.check_inside(runs_root, run_dir) == run_dir
    with pytest.raises(runs.RunPathError):
        runs.check_inside(runs_root, tmp_path)
    with pytest.raises(runs.RunPathError):
        runs.check_inside(runs_root, runs_root / ".." / "elsewhere")


def test_default_root_follows_env(runs_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert runs.default_root() == runs_root
    monkeypatch.delenv("CNNLAB_RUNS_DIR")
    assert runs.default_root() == Path("runs")


def test_atomic_writes_leave_no_temp_files(runs_root: Path) -> None:
    run_dir = make_run(runs_root)
    for i in range(5):
        runs.update_status(run_dir, status="running", epochs_done=i)
    runs.save_metrics(run_dir, {"test_accuracy": 0.5})
    assert runs.load_status(run_dir)["epochs_done"] == 4
    assert runs.load_metrics(run_dir) == {"test_accuracy": 0.5}
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]


def test_history_append_load_and_torn_line(runs_root: Path) -> None:
    run_dir = make_run(runs_root)
    assert runs.load_history(run_dir).empty
    runs.append_history(run_dir, {"epoch": 1, "loss": 2.0, "val_loss": 1.9})
    runs.append_history(run_dir, {"epoch": 2, "loss": 1.0})  # missing column → blank
    with (run_dir / "history.csv").open("a") as fh:
        fh.write("3,0.5,0.4,extra,fields,here\n")  # a torn/garbled last line
    frame = runs.load_history(run_dir)
    assert list(frame["epoch"]) == [1, 2]
    assert frame["val_loss"].isna().tolist() == [False, True]
    runs.truncate_history(run_dir, 1)
    assert len(runs.load_history(run_dir)) == 1


def test_missing_status_reads_as_failed(tmp_path: Path) -> None:
    assert runs.load_status(tmp_path)["status"] == "failed"
    assert runs.load_metrics(tmp_path) is None


def test_list_runs_newest_first_and_ignores_strays(runs_root: Path) -> None:
    a = runs.create_run(runs_root, {"name": "a"})
    runs.update_status(a, status="finished")
    (runs_root / "not-a-run").mkdir()
    (runs_root / "20990101-000000-x").mkdir()  # no status.json
    listed = runs.list_runs(runs_root)
    assert [r.run_dir for r in listed] == [a]
    assert runs.list_runs(runs_root / "missing") == []


def test_mark_interrupted_only_touches_active_runs(runs_root: Path) -> None:
    running = make_run(runs_root, "r", "running")
    queued = make_run(runs_root, "q", "queued")
    done = make_run(runs_root, "d", "finished")
    runs.append_history(running, {"epoch": 1, "loss": 1.0})
    (running / "best.keras").write_bytes(b"checkpoint")
    marked = runs.mark_interrupted(runs_root)
    assert set(marked) == {running.resolve(), queued.resolve()}
    assert runs.load_status(running)["status"] == "interrupted"
    assert "resume" in runs.load_status(running)["message"]
    assert runs.load_status(queued)["status"] == "interrupted"
    assert runs.load_status(done)["status"] == "finished"
    assert len(runs.load_history(running)) == 1
    assert (running / "best.keras").read_bytes() == b"checkpoint"
