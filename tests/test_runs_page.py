"""Runs page: config_diff and the run-store helpers it uses, then an AppTest of the page over
three real one-epoch runs (table, overlay, diff, delete, unsafe names/ids, damaged runs)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cnnlab.model.fit_settings import FitSettings
from cnnlab.runs import store as runs
from cnnlab.use import compare
from pages import state
from tests.conftest import APPTEST_TIMEOUT, ROOT

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "runs.py")
DIFF_FIELDS = ["blocks[2].filters", "dense[1].dropout"]


# --------------------------------------------------------------------------- pure functions



def run_dirs(root: Path) -> list[Path]:
    """The runs root's run folders (not the engine's hidden lock file and upload cache)."""
    return [p for p in root.iterdir() if not p.name.startswith(".")]

def test_flatten_counts_list_items_from_one() -> None:
    flat = compare.flatten({"blocks": [{"filters": 8}, {"filters": 16}], "aug": {"flip": True},
                            "dense": []})
    assert flat == {"blocks[1].filters": 8, "blocks[2].filters": 16, "aug.flip": True,
                    "dense": []}


def test_config_diff_keeps_only_differing_fields() -> None:
    a = {"optimizer": "adam", "blocks": [{"filters": 16}, {"filters": 32}], "lr": 0.001}
    b = {"optimizer": "adam", "blocks": [{"filters": 16}, {"filters": 64}], "lr": 0.001}
    c = {"optimizer": "sgd", "blocks": [{"filters": 16}, {"filters": 32}, {"filters": 64}],
         "lr": 0.001}
    assert compare.config_diff({"a": a, "b": a}) == []
    assert compare.config_diff({"a": a, "b": b}) == [
        {"field": "blocks[2].filters", "a": 32, "b": 64}]
    rows = {r["field"]: r for r in compare.config_diff({"a": a, "b": b, "c": c})}
    assert list(rows) == ["optimizer", "blocks[2].filters", "blocks[3].filters"]
    assert rows["blocks[3].filters"] == {"field": "blocks[3].filters", "a": None, "b": None,
                                         "c": 64}


def test_run_settings_puts_model_and_fit_fields_beside_the_run_settings() -> None:
    cfg = {"model": {"optimizer": "adam"}, "fit": {"epochs": 1, "batch_size": 128},
           "dataset": "mnist_sample", "name": "x", "class_names": ["0"], "created": "t",
           "seed": 42}
    assert compare.run_settings(cfg) == {"epochs": 1, "batch_size": 128, "optimizer": "adam",
                                         "dataset": "mnist_sample", "seed": 42}
    other = compare.run_settings({**cfg, "seed": 1})
    assert compare.config_diff({"a": compare.run_settings(cfg), "b": other}) == [
        {"field": "seed", "a": 42, "b": 1}]


def test_clean_run_name_refuses_paths() -> None:
    assert runs.clean_run_name("  quick + dropout ") == "quick + dropout"
    for bad in ("../../etc", "a/b", "a\\b", "", "   ", "x\x00y", "x" * 81):
        with pytest.raises(runs.RunPathError):
            runs.clean_run_name(bad)


def _fake_run(root: Path, run_id: str, status: str = "finished") -> Path:
    path = root / run_id
    path.mkdir(parents=True)
    runs.write_json(path / runs.STATUS_FILE, {"status": status, "name": "fake"})
    runs.write_json(path / runs.CONFIG_FILE, {"model": {}, "name": "fake"})
    (path / runs.BEST_FILE).write_bytes(b"x")
    runs.append_history(path, {"epoch": 1, "loss": 1.0, "accuracy": 0.5, "val_loss": 1.1,
                               "val_accuracy": 0.4})
    return path


def test_rename_and_delete_stay_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    outside = tmp_path / "etc"
    outside.mkdir()
    keep = _fake_run(root, "20250101-000000-keep")
    gone = _fake_run(root, "20250101-000001-gone")
    busy = _fake_run(root, "20250101-000002-busy", status="running")
    assert runs.run_problems(keep) == []

    assert runs.rename_run(root, keep.name, "better name")["name"] == "better name"
    assert runs.load_config(keep)["name"] == "better name"
    with pytest.raises(runs.RunPathError):
        runs.rename_run(root, keep.name, "../../etc")
    for bad_id in ("../etc", "..", "/etc", "20250101-000000/../../etc"):
        with pytest.raises(runs.RunPathError):
            runs.rename_run(root, bad_id, "ok")
        with pytest.raises(runs.RunPathError):
            runs.delete_run(root, bad_id)
    with pytest.raises(ValueError, match="stop it"):
        runs.delete_run(root, busy.name)

    assert runs.delete_run(root, gone.name) == gone.resolve()
    assert sorted(p.name for p in run_dirs(root)) == sorted([busy.name, keep.name])
    assert outside.is_dir()


def test_run_problems_name_each_damaged_file(tmp_path: Path) -> None:
    run = _fake_run(tmp_path, "20250101-000000-x")
    (run / runs.HISTORY_FILE).write_bytes(b"epoch,loss,accuracy,val_loss,val_accuracy\n"
                                          b"1,\xff\xfe\x00garbage,0.5,1,0.4\n")
    (run / runs.BEST_FILE).unlink()
    (run / runs.STATUS_FILE).write_text("{not json")
    problems = " ".join(runs.run_problems(run))
    assert runs.HISTORY_FILE in problems and runs.STATUS_FILE in problems
    # status unreadable: best.keras missing is still reported (the run is not active)
    assert runs.BEST_FILE in problems


# --------------------------------------------------------------------------- the page


@pytest.fixture(scope="module")
def trained_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three real one-epoch runs on 300 MNIST-sample images: the quick preset, then one with
    a wider second block, then one with dropout after the dense layer."""
    from cnnlab.data import datasets
    from cnnlab.model.config import PRESETS
    from cnnlab.train import training

    root = tmp_path_factory.mktemp("trained") / "runs"
    ds = datasets.load("mnist_sample")
    base = PRESETS["quick"].config
    wider = dataclasses.replace(
        base, blocks=(base.blocks[0], dataclasses.replace(base.blocks[1], filters=24)))
    dropout = dataclasses.replace(
        base, dense=(dataclasses.replace(base.dense[0], dropout=0.25),))
    for name, cfg in (("base", base), ("wider", wider), ("dropout", dropout)):
        request = training.TrainRequest(dataset="mnist_sample", config=cfg,
                                        fit=FitSettings(batch_size=64, epochs=1), limit=300,
                                        preset="quick", name=name)
        run_dir = runs.create_run(root, training.run_config(request, ds))
        result = training.train_run(request, ds, run_dir)
        assert result.status == "finished", result.message
    return root


@pytest.fixture
def root(trained_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the three runs, exported as CNNLAB_RUNS_DIR."""
    copy = tmp_path / "runs"
    shutil.copytree(trained_root, copy)
    monkeypatch.setenv("CNNLAB_RUNS_DIR", str(copy))
    return copy


def run_ids(root: Path) -> dict[str, str]:
    """name → run id of the runs under ``root``."""
    return {p.name.rsplit("-", 1)[-1]: p.name for p in run_dirs(root)}


def open_page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=APPTEST_TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def element(at: AppTest, kind: str, key: str):
    return next(e for e in at.get(kind) if e.proto.id.endswith(f"-{key}"))


def overlay_traces(at: AppTest) -> list[dict]:
    return json.loads(element(at, "plotly_chart", "runs_overlay").proto.spec)["data"]


def test_empty_root_points_to_train(runs_root: Path) -> None:
    at = open_page()
    assert "No runs yet" in at.info[0].value and not at.error


def test_table_overlay_and_diff(root: Path) -> None:
    ids = run_ids(root)
    at = open_page()
    table = at.dataframe[0].value
    assert len(table) == 3 and set(table["run_id"]) == set(ids.values())
    assert set(table["status"]) == {"finished"}
    assert table["test_accuracy"].between(0, 100).all()  # shown in percent

    at.multiselect(key="runs_compare").set_value(list(ids.values())).run()
    assert not at.exception
    traces = overlay_traces(at)
    assert len(traces) == 3 * 4  # runs × (loss, val_loss, accuracy, val_accuracy)
    assert {t["name"] for t in traces} == {"base", "wider", "dropout"}
    diff = at.dataframe[1].value
    assert list(diff.index) == ["test accuracy", "best val accuracy", *DIFF_FIELDS]
    assert diff.loc["blocks[2].filters", "wider"] == "24"
    assert diff.loc["dense[1].dropout", "dropout"] == "0.25"

    at.multiselect(key="runs_compare").set_value([ids["base"], ids["wider"]]).run()
    assert len(overlay_traces(at)) == 2 * 4
    assert list(at.dataframe[1].value.index)[2:] == ["blocks[2].filters"]

    at.text_input(key="runs_search").set_value("drop").run()
    assert list(at.dataframe[0].value["name"]) == ["dropout"]


def test_delete_needs_confirmation_and_removes_only_that_run(root: Path) -> None:
    ids = run_ids(root)
    at = open_page()
    at.selectbox(key="runs_pick").set_value(ids["wider"]).run()
    at.button(key="runs_delete").click().run()
    assert (root / ids["wider"]).is_dir()  # not yet: a confirmation first
    assert any("cannot be undone" in w.value for w in at.warning)
    at.button(key="runs_delete_confirm").click().run()
    assert not at.exception
    assert sorted(p.name for p in run_dirs(root)) == sorted([ids["base"], ids["dropout"]])
    assert len(at.dataframe[0].value) == 2
    assert any("Deleted" in s.value for s in at.success)


def test_unsafe_names_and_ids_are_refused(root: Path) -> None:
    ids = run_ids(root)
    parent = sorted(p.name for p in root.parent.iterdir())
    before = {p.name: (p / runs.STATUS_FILE).read_text() for p in run_dirs(root)}
    at = open_page()
    at.selectbox(key="runs_pick").set_value(ids["base"]).run()
    at.text_input(key=f"runs_rename_{ids['base']}").set_value("../../etc").run()
    at.button(key="runs_rename").click().run()
    assert not at.exception and "looks like a path" in at.error[0].value
    assert {p.name: (p / runs.STATUS_FILE).read_text() for p in run_dirs(root)} == before

    at.text_input(key=f"runs_rename_{ids['base']}").set_value("base, bigger batch").run()
    at.button(key="runs_rename").click().run()
    assert runs.load_config(root / ids["base"])["name"] == "base, bigger batch"

    at = AppTest.from_file(PAGE, default_timeout=APPTEST_TIMEOUT)
    at.query_params["run"] = "../../etc"
    at.run()
    assert not at.exception and "not valid" in at.error[0].value
    assert len(at.dataframe[0].value) == 3
    assert sorted(p.name for p in root.parent.iterdir()) == parent


def test_damaged_runs_are_marked_not_fatal(root: Path) -> None:
    ids = run_ids(root)
    (root / ids["base"] / runs.HISTORY_FILE).write_bytes(b"\x89PNG\x00\xff garbage\n\x01,\x02\n")
    (root / ids["wider"] / runs.BEST_FILE).unlink()
    at = open_page()
    table = at.dataframe[0].value.set_index("name")
    assert table.loc["base", "status"] == "damaged" and "history.csv" in table.loc["base",
                                                                                   "problem"]
    assert table.loc["wider", "status"] == "damaged" and "best.keras" in table.loc["wider",
                                                                                    "problem"]
    assert table.loc["dropout", "status"] == "finished"
    # a run without a readable history cannot be overlaid, so it is not offered
    assert set(at.multiselect(key="runs_compare").value) == {ids["wider"], ids["dropout"]}

    at.selectbox(key="runs_pick").set_value(ids["wider"]).run()
    assert not at.exception and "damaged" in at.error[0].value
    assert element(at, "download_button", "runs_dl_best.keras").proto.disabled
    assert not element(at, "download_button", "runs_dl_config.json").proto.disabled
    at.selectbox(key="runs_pick").set_value(ids["base"]).run()
    assert not at.exception and "history.csv" in at.error[0].value


def test_address_opens_a_run_and_follows_the_pick(root: Path) -> None:
    ids = run_ids(root)
    at = AppTest.from_file(PAGE, default_timeout=APPTEST_TIMEOUT)
    at.query_params["run"] = ids["wider"]
    at.run()
    assert not at.exception and not at.error
    assert at.selectbox(key="runs_pick").value == ids["wider"]
    assert at.session_state[state.SELECTED_RUN_KEY] == str((root / ids["wider"]).resolve())
    at.selectbox(key="runs_pick").set_value(ids["base"]).run()
    shown = at.query_params["run"]  # a list in AppTest before Streamlit 1.6x
    assert (shown[-1] if isinstance(shown, list) else shown) == ids["base"]


@pytest.mark.slow
def test_fine_tune_from_best_starts_a_child_run_and_resume_needs_a_checkpoint(
        root: Path) -> None:
    from cnnlab.train import callbacks
    from pages.common import engine

    ids = run_ids(root)
    # Through app.py's navigation, so the button's switch to the Train page can happen.
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=APPTEST_TIMEOUT).run()
    at.switch_page("pages/runs.py").run()
    at.selectbox(key="runs_pick").set_value(ids["base"]).run()
    assert not at.exception
    at.button(key="runs_finetune").click().run()
    assert not at.exception, at.exception
    assert any("Train" in t.value for t in at.title)  # now on the Train page
    job = engine().latest()
    assert job is not None and job.run_id != ids["base"]
    assert runs.load_config(job.run_dir)["parent"] == ids["base"]
    assert job.wait(240) and job.result.status == "finished", job.result.message

    # A stopped run with its resumable checkpoint offers Resume; without it, not.
    base = root / ids["base"]
    runs.update_status(base, status="stopped")
    at = open_page()
    at.selectbox(key="runs_pick").set_value(ids["base"]).run()
    resume = at.button(key="runs_resume")
    assert resume.disabled == (callbacks.read_checkpoint(base) is None)


def test_the_keras_script_download_carries_the_runs_own_fit_settings(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run trained 1 epoch at batch 64; its quick preset says 4 epochs at 128. The script
    offered for download must reproduce the run, not the preset."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    offered: dict[str | None, bytes] = {}
    real = MemoryMediaFileStorage.load_and_get_id

    def keep(self, data, mimetype, kind, filename=None):  # what the page hands the browser
        offered[filename] = data
        return real(self, data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", keep)
    run_id = run_ids(root)["base"]
    at = AppTest.from_file(PAGE, default_timeout=APPTEST_TIMEOUT)
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception, at.exception
    script = offered[f"{run_id}.py"].decode()
    assert "EPOCHS = 1\n" in script and "BATCH_SIZE = 64\n" in script
    assert runs.load_config(root / run_id)["fit"] == {"batch_size": 64, "epochs": 1,
                                                      "patience": 3, "fine_tune_epochs": 0}


def test_links_to_other_pages_carry_the_run_and_its_data_set(root: Path) -> None:
    ids = run_ids(root)
    # Through app.py's navigation, so the buttons' switch to another page can happen.
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=APPTEST_TIMEOUT).run()
    at.switch_page("pages/runs.py").run()
    at.selectbox(key="runs_pick").set_value(ids["wider"]).run()
    at.button(key="runs_to_configure").click().run()
    assert not at.exception, at.exception
    assert any("Configure" in t.value for t in at.title)
    assert at.selectbox(key="configure_dataset").value == "mnist_sample"
    assert at.session_state[state.MODEL_CONFIG_KEY].blocks[1].filters == 24  # the run's model
    assert address(at, "dataset") == "mnist_sample" and address(at, "preset") == "quick"

    at.switch_page("pages/runs.py").run()
    at.selectbox(key="runs_pick").set_value(ids["dropout"]).run()
    at.button(key="runs_to_predict").click().run()
    assert not at.exception, at.exception
    assert any("Draw & predict" in t.value for t in at.title)
    assert at.selectbox(key="predict_model").value == str((root / ids["dropout"]).resolve())
    assert address(at, "run") == ids["dropout"]


def address(at: AppTest, param: str) -> str | None:
    """``?param=`` after the last run (AppTest keeps lists before Streamlit 1.6x)."""
    value = at.query_params.get(param)
    return value[-1] if isinstance(value, list) else value
