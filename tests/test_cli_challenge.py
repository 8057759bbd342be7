"""``cnnlab challenge create|list|submit|board`` as a user runs it: one JSON object with
--json, exit 0 done, 2 refused with why; a run trained with ``cnnlab train --dataset
challenge:<id>`` is scored on the hidden split in a worker. Creating, training and
submitting run in real subprocesses; commands that only read and print run through the
CLI's main() in the test process (``cli_here``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import CliHere
from test_cli import cli

from cnnlab.model import config
from cnnlab.model.fit_settings import FitSettings

TINY = config.ModelConfig(blocks=(config.ConvBlock(filters=4),), dense=(config.DenseLayer(16),),
                          learning_rate=3e-3)


def ok(*args: str) -> dict:
    done = cli(*args, "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> dict:
    """A runs root with a challenge (at most 30,000 parameters, 2 submissions each), a
    tiny run that fits and the quick preset's run that does not."""
    tmp = tmp_path_factory.mktemp("cli-challenge")
    root = str(tmp / "runs")
    made = ok("challenge", "create", "--name", "Digits under 30k", "--dataset", "mnist_sample",
              "--max-params", "30000", "--per-person", "2", "--deadline", "2099-01-01T12:00",
              "--runs-dir", root)["challenge"]
    cfg = tmp / "tiny.json"
    cfg.write_text(config.file_json(TINY, FitSettings(epochs=1, batch_size=32, patience=0)))
    runs = {}
    for name, source in (("tiny", ("--config", str(cfg))), ("quick", ("--preset", "quick"))):
        out = ok("train", "--dataset", made["dataset"], *source, "--limit", "300",
                 "--epochs", "1", "--runs-dir", root)
        assert out["status"] == "finished"
        runs[name] = out["run_id"]
    return {"root": root, "id": made["id"], "dataset": made["dataset"], "runs": runs}


def test_create_and_list(lab, cli_here: CliHere) -> None:
    listed = cli_here.json("challenge", "list", "--runs-dir", lab["root"])["challenges"]
    assert [c["id"] for c in listed] == [lab["id"]]
    assert listed[0]["limits"] == {"max_params": 30000, "max_epochs": None,
                                   "max_minutes": None}
    assert listed[0]["deadline"].startswith("2099-01-01T12:00:00") and not listed[0]["closed"]


def test_submit_scores_in_a_worker_and_the_board_ranks_it(lab, tmp_path: Path,
                                                         cli_here: CliHere) -> None:
    sub = ok("challenge", "submit", lab["id"], lab["runs"]["tiny"], "--runs-dir", lab["root"])
    assert sub["status"] == "scored" and 0 <= sub["accuracy"] <= 1 and sub["n_hidden"] == 1000
    assert "confusion" not in sub
    board = cli_here.json("challenge", "board", lab["id"], "--runs-dir", lab["root"],
                          "--csv", tmp_path / "board.csv")
    assert [(r["rank"], r["who"], r["accuracy"]) for r in board["board"]] == [
        (1, "local", sub["accuracy"])]
    with (tmp_path / "board.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0]["who"] == "local" and float(rows[0]["accuracy"]) == sub["accuracy"]
    readable = cli_here("challenge", "board", lab["id"], "--runs-dir", lab["root"])
    assert readable.returncode == 0 and "Digits under 30k" in readable.stdout


@pytest.mark.parametrize("which, args, says", [
    ("quick", (), "has 114,314 parameters; 'Digits under 30k' allows at most 30,000"),
    ("tiny", ("--challenge", "no-such-1"), "There is no challenge 'no-such-1'"),
])
def test_refusals_exit_2_with_the_numbers(lab, which, args, says) -> None:
    challenge = args[1] if args else lab["id"]
    done = cli("challenge", "submit", challenge, lab["runs"][which], "--runs-dir", lab["root"],
               "--json")
    assert done.returncode == 2 and done.stdout == ""
    assert says in done.stderr


def submissions(lab) -> int:
    return ok("challenge", "list", "--runs-dir", lab["root"])["challenges"][0]["submissions"]


def test_the_allowance_is_counted(lab) -> None:
    before = submissions(lab)  # the file's earlier tests may have submitted once
    for _ in range(2 - before):
        ok("challenge", "submit", lab["id"], lab["runs"]["tiny"], "--runs-dir", lab["root"])
    assert before < 2 and submissions(lab) == 2
    done = cli("challenge", "submit", lab["id"], lab["runs"]["tiny"], "--runs-dir",
               lab["root"], "--json")
    assert done.returncode == 2 and "allows 2 per person" in done.stderr


def test_the_cli_evaluates_and_shows_a_challenge_run_on_its_visible_test_set(
        lab, cli_here: CliHere) -> None:
    from cnnlab.data import datasets

    sample = datasets.load("mnist_sample")
    visible_n = datasets.val_count(sample.y_train, 0.1)  # never the 1,000 hidden images
    out = cli_here.json("runs", "evaluate", lab["runs"]["tiny"], "--runs-dir", lab["root"])
    assert out["dataset"] == lab["dataset"] and out["n_test"] == visible_n
    assert sum(map(sum, out["confusion"])) == visible_n
    shown = cli_here.json("runs", "show", lab["runs"]["tiny"], "--runs-dir", lab["root"])
    assert shown["test"]["n_test"] == visible_n
    board = cli_here("challenge", "board", lab["id"], "--runs-dir", lab["root"], "--json")
    assert "confusion" not in board.stdout and "mistakes" not in board.stdout
