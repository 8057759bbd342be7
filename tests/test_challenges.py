"""The challenge store: who may create one, the visible/hidden split, limits, the board.

Fast: no Keras. Scoring in a worker is tests/test_challenge_scoring.py.
"""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from cnnlab.data import datasets
from cnnlab.people.accounts import User
from cnnlab.runs import challenge_data, challenges
from cnnlab.runs import store as runs
from cnnlab.runs.challenges import ChallengeError, Limits, Submission
from cnnlab.train import scoring

TEACHER, ALICE, BOB = User("tess", "teacher"), User("alice"), User("bob")


@pytest.fixture(scope="module")
def sample() -> datasets.Dataset:
    return datasets.load("mnist_sample")


def upload(n_per_class: int = 30) -> datasets.Dataset:
    """A small 'folder:' upload: 3 classes, each image filled with a unique value."""
    y = np.repeat(np.arange(3, dtype=np.uint8), n_per_class)
    x = np.zeros((len(y), 8, 8, 1), np.uint8) + np.arange(len(y), dtype=np.uint8)[:, None,
                                                                                  None, None]
    info = datasets.DatasetInfo("folder:shapes.zip", "Your images", ("a", "b", "c"), (8, 8, 1))
    return datasets.Dataset(info, x[:60], y[:60], x[60:], y[60:])


def make(root: Path, source: datasets.Dataset, **kw) -> challenges.Challenge:
    args = {"class_mode": True, "name": "Digits under 50k", "limits": Limits(max_params=50_000)}
    return challenges.create(root, kw.pop("user", TEACHER), source=source, **{**args, **kw})


# ------------------------------------------------------------------------------ creating


def test_only_a_teacher_creates_one_in_class_mode_and_anyone_in_personal_mode(
        runs_root, sample) -> None:
    with pytest.raises(ChallengeError, match="only a teacher"):
        make(runs_root, sample, user=ALICE)
    assert challenges.list_challenges(runs_root) == []
    mine = make(runs_root, sample, user=ALICE, class_mode=False, name="My benchmark")
    theirs = make(runs_root, sample)
    assert {c.id for c in challenges.list_challenges(runs_root)} == {mine.id, theirs.id}
    loaded = challenges.load(runs_root, theirs.id)
    assert loaded == theirs and loaded.limits.max_params == 50_000
    assert loaded.dataset_name == f"challenge:{theirs.id}" and loaded.owner == "tess"


@pytest.mark.parametrize("kw, words", [
    ({"name": "  "}, "needs a name"),
    ({"per_person": 0}, "choose 1 to 1000"),
    ({"limits": Limits(max_params=0)}, "maximum parameters is 0"),
    ({"deadline": datetime.now() - timedelta(minutes=1)}, "has passed"),
    ({"name": "x\u202ey"}, "control or bidirectional"),
])
def test_bad_settings_are_refused_with_what_to_do(runs_root, sample, kw, words) -> None:
    with pytest.raises(ChallengeError, match=words):
        make(runs_root, sample, **kw)
    assert challenges.list_challenges(runs_root) == []


@pytest.mark.parametrize("bad", ["../x", "a/b", "", "UPPER"])
def test_a_bad_challenge_id_never_leaves_the_challenges_folder(runs_root, bad) -> None:
    with pytest.raises(ChallengeError):
        challenges.load(runs_root, bad)


# ------------------------------------------------------------------------------ the split


def rows_of(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in x}


def test_a_registry_challenge_hides_the_sets_own_test_images(runs_root, sample) -> None:
    ch = make(runs_root, sample)
    visible = challenge_data.visible(runs_root, ch)
    assert visible.info.name == ch.dataset_name and visible.info.keras_module is None
    # Students train and test on the source's training images only, all of them.
    assert len(visible.y_train) + len(visible.y_test) == len(sample.y_train)
    train_rows, test_rows = rows_of(visible.x_train), rows_of(visible.x_test)
    assert rows_of(sample.x_train) == train_rows | test_rows
    assert not rows_of(sample.x_test) & (train_rows | test_rows)
    # Its visible test set is a stratified share: every class in it.
    assert set(np.unique(visible.y_test)) == set(range(10))
    hidden = datasets.from_npz(challenge_data.hidden_npz(runs_root, ch))
    assert np.array_equal(hidden.x_test, sample.x_test)
    assert np.array_equal(hidden.y_test, sample.y_test) and len(hidden.y_train) == 0


def test_an_upload_challenge_keeps_its_images_and_hides_a_seeded_share(runs_root) -> None:
    ch = make(runs_root, upload(), seed=7, hidden_share=0.2)
    assert (challenges.folder(runs_root, ch.id) / challenges.SOURCE_FILE).is_file()
    visible = challenge_data.visible(runs_root, ch)
    hidden = datasets.from_npz(challenge_data.hidden_npz(runs_root, ch))
    assert len(hidden.y_test) == 18 and np.bincount(hidden.y_test).tolist() == [6, 6, 6]
    seen = rows_of(visible.x_train) | rows_of(visible.x_test)
    assert not seen & rows_of(hidden.x_test)
    assert len(seen) + len(hidden.y_test) == 90
    again = challenge_data.visible(runs_root, ch)  # the same seed, the same parts
    assert np.array_equal(again.x_train, visible.x_train)
    other = make(runs_root, upload(), seed=8)
    assert rows_of(challenge_data.split(other, upload())[1].x_test) != rows_of(hidden.x_test)


# ------------------------------------------------------------------------------ submissions


def sub(person: str, accuracy: float, params: int, at: float, status: str = "scored"
        ) -> Submission:
    return Submission(f"s-{person}-{at}", "c", f"run-{person}-{at}", person, at, params, 30.0,
                      status, accuracy, 0.3, 100, [[1]])


def test_the_board_ranks_best_per_person_and_ties_go_to_fewer_parameters(runs_root,
                                                                          sample) -> None:
    ch = make(runs_root, sample)
    subs = [sub("alice", 0.80, 40_000, 1), sub("alice", 0.85, 45_000, 2),
            sub("bob", 0.85, 30_000, 3), sub("carol", 0.90, 49_000, 4, "failed"),
            sub("dan", 0.70, 10_000, 5), sub("carol", 0.60, 1_000, 6, "scoring")]
    rows = challenges.board(ch, subs, TEACHER)
    assert [(r["rank"], r["who"], r["accuracy"]) for r in rows] == [
        (1, "bob", 0.85), (2, "alice", 0.85), (3, "dan", 0.70)]
    assert rows[1]["run_id"] == "run-alice-2"  # alice's best, not her latest or first
    as_alice = challenges.board(ch, subs, ALICE)
    assert [r["who"] for r in as_alice] == [challenges.alias(ch.id, p)
                                            for p in ("bob", "alice", "dan")]
    assert [r["you"] for r in as_alice] == [False, True, False]
    assert all(r["run_id"] is None for r in as_alice)
    assert "bob" not in json.dumps(as_alice)
    table = list(csv.DictReader(io.StringIO(challenges.board_csv(rows))))
    assert [(t["rank"], t["who"], t["params"]) for t in table] == [
        ("1", "bob", "30000"), ("2", "alice", "45000"), ("3", "dan", "10000")]


def test_names_show_when_the_challenge_says_so(runs_root, sample) -> None:
    ch = make(runs_root, sample, show_names=True)
    assert challenges.board(ch, [sub("bob", 0.5, 1, 1)], ALICE)[0]["who"] == "bob"


def test_a_student_lists_only_their_own_submissions_without_the_confusion(runs_root,
                                                                          sample) -> None:
    subs = [sub("alice", 0.8, 1, 1), sub("bob", 0.9, 1, 2)]
    mine = challenges.visible_submissions(subs, ALICE)
    assert [s.person for s in mine] == ["alice"] and mine[0].confusion is None
    assert len(challenges.visible_submissions(subs, TEACHER)) == 2


def test_the_allowance_counts_scored_and_scoring_but_not_failed(runs_root, sample) -> None:
    ch = make(runs_root, sample, per_person=2)
    first = challenges.add_submission(runs_root, ch, "r1", "alice", 10, 1.0)
    challenges.update_submission(runs_root, ch.id, first.id, status="failed")
    challenges.add_submission(runs_root, ch, "r2", "alice", 10, 1.0)
    challenges.add_submission(runs_root, ch, "r3", "alice", 10, 1.0)
    with pytest.raises(ChallengeError, match="made 2 submission.* allows 2 per person"):
        challenges.add_submission(runs_root, ch, "r4", "alice", 10, 1.0)
    challenges.add_submission(runs_root, ch, "r5", "bob", 10, 1.0)
    assert len(challenges.load_submissions(runs_root, ch.id)) == 4


def test_after_the_deadline_submissions_are_refused_with_the_time(runs_root, sample) -> None:
    deadline = datetime.now().astimezone() + timedelta(hours=1)
    ch = make(runs_root, sample, deadline=deadline)
    challenges.add_submission(runs_root, ch, "r1", "alice", 10, 1.0, now=time.time())
    late = deadline.timestamp() + 5
    with pytest.raises(ChallengeError, match="closed at .* it is now .*board is final"):
        challenges.add_submission(runs_root, ch, "r2", "alice", 10, 1.0, now=late)
    assert ch.closed(late) and not ch.closed(time.time())


def test_a_dead_engines_scorings_are_failed_and_do_not_count(runs_root, sample) -> None:
    ch = make(runs_root, sample, per_person=1)
    s = challenges.add_submission(runs_root, ch, "r1", "alice", 10, 1.0)
    assert scoring.fail_unscored(runs_root) == 1
    [after] = challenges.load_submissions(runs_root, ch.id)
    assert after.id == s.id and after.status == "failed" and "submit the run again" in \
        after.message
    challenges.add_submission(runs_root, ch, "r2", "alice", 10, 1.0)  # still allowed


# ------------------------------------------------------------------------------ limits


def fake_run(root: Path, run_id: str, owner: str, dataset: str, params: int,
             epoch_seconds: list[float], parent: str | None = None) -> Path:
    run_dir = root / run_id
    run_dir.mkdir()
    runs.write_json(run_dir / runs.CONFIG_FILE, {
        "model": {}, "dataset": dataset, "owner": owner, "name": run_id, "fit": {},
        "input_shape": [28, 28, 1], "n_classes": 10, **({"parent": parent} if parent else {})})
    runs.write_json(run_dir / runs.STATUS_FILE, {"status": "finished", "params": params})
    runs.write_history(run_dir, [{"epoch": i + 1, "loss": 1.0, "seconds": s}
                                 for i, s in enumerate(epoch_seconds)])
    (run_dir / runs.BEST_FILE).write_bytes(b"not a model")
    return run_dir


def test_limits_count_a_fine_tuned_runs_parents_and_say_the_numbers(runs_root,
                                                                     sample) -> None:
    ch = make(runs_root, sample, limits=Limits(max_params=50_000, max_epochs=3,
                                               max_minutes=1))
    fake_run(runs_root, "20260101-000000-a", "alice", ch.dataset_name, 60_000, [20, 20])
    child = fake_run(runs_root, "20260101-000001-b", "alice", ch.dataset_name, 60_000,
                     [15, 10], parent="20260101-000000-a")
    facts = scoring.run_facts(runs_root, child)
    assert (facts.params, facts.epochs, facts.seconds) == (60_000, 4, 65.0)
    problems = scoring.limit_problems(ch, facts, child.name)
    assert problems == [
        f"Run {child.name} has 60,000 parameters; 'Digits under 50k' allows at most 50,000. "
        "Train a smaller model (fewer filters or dense units) and submit that.",
        f"Run {child.name} trained 4 epochs; 'Digits under 50k' allows at most 3. Train again "
        "with fewer epochs.",
        f"Run {child.name} trained for 1.1 minutes; 'Digits under 50k' allows at most 1. "
        "Train for fewer epochs or a smaller model."]


@pytest.mark.parametrize("who, dataset, params, words", [
    (BOB, None, 1_000, "it is alice's, and only the person who trained a run may submit"),
    (TEACHER, None, 1_000, "it is alice's"),
    (ALICE, "mnist_sample", 1_000, "trained on 'mnist_sample', not on the challenge's"),
    (ALICE, None, 90_000, "has 90,000 parameters; 'Digits under 50k' allows at most 50,000"),
])
def test_a_submission_is_refused_before_anything_is_recorded(runs_root, sample, who, dataset,
                                                             params, words) -> None:
    from cnnlab.people.access import AccessDenied
    from cnnlab.train import budgets

    ch = make(runs_root, sample)
    run = fake_run(runs_root, "20260101-000000-a", "alice", dataset or ch.dataset_name,
                   params, [5.0])
    with pytest.raises((ChallengeError, AccessDenied), match=words):
        scoring.prepare(runs_root, ch.id, run.name, who, budgets.Budgets(), time.time())
    assert challenges.load_submissions(runs_root, ch.id) == []
    assert not (challenges.folder(runs_root, ch.id) / challenges.HIDDEN_FILE).exists()


def test_plan_problems_name_the_numbers_before_anyone_trains(runs_root, sample) -> None:
    ch = challenges.create(runs_root, TEACHER, class_mode=True, name="Tiny",
                           source=sample, limits=Limits(max_params=1_000, max_epochs=3))
    assert challenges.plan_problems(ch, 1_000, 3) == []
    assert challenges.plan_problems(ch, 12_345, 4) == [
        "This model has 12,345 parameters; 'Tiny' allows at most 1,000, so a run of it cannot "
        "be submitted: use fewer filters or dense units.",
        "This run is set to 4 epochs; 'Tiny' allows at most 3, so it could not be submitted: "
        "set fewer epochs."]
