"""The Challenges page (AppTest, class mode): a teacher sets a challenge with the form and
reads every submission, its confusion matrix and the CSV; a student sees no form, submits
a run of theirs, is refused an over-limit one with its numbers, and sees the board in
aliases and only their own submissions.

The pages' engine runs over tests/fake_executor.py: the test sends the scoring worker's
``done`` event itself (the real worker is tests/test_challenge_scoring.py's).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import APPTEST_TIMEOUT, ROOT, plain
from fake_executor import FakeExecutor
from streamlit.testing.v1 import AppTest
from test_challenges import fake_run

from cnnlab.data import datasets
from cnnlab.people.accounts import User
from cnnlab.runs import challenges
from cnnlab.runs.challenges import Limits
from cnnlab.train import events as ev
from cnnlab.train import jobs
from pages import state

TEACHER, ALICE, BOB = User("tess", "teacher"), User("alice"), User("bob")
PAGE = str(ROOT / "pages" / "challenges.py")


@pytest.fixture
def lab(runs_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Class mode; a challenge (at most 50,000 parameters) with Alice's run that fits and
    one that does not; the pages' engine over a fake executor."""
    monkeypatch.setenv("CNNLAB_SIGN_IN", "accounts")
    monkeypatch.setenv("CNNLAB_ACCOUNTS_FILE", str(tmp_path / "accounts.json"))
    eng = jobs.Engine(runs_root, executor=FakeExecutor())
    jobs._ENGINES[runs_root.resolve()] = eng
    ch = challenges.create(runs_root, TEACHER, class_mode=True, name="Digits under 50k",
                           source=datasets.load("mnist_sample"),
                           limits=Limits(max_params=50_000), brief="Beat 90 %.")
    fits = fake_run(runs_root, "20260101-000000-fits", "alice", ch.dataset_name, 40_000, [9])
    big = fake_run(runs_root, "20260101-000001-big", "alice", ch.dataset_name, 90_000, [9])
    return eng, ch, fits.name, big.name


def open_page(user: User) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=APPTEST_TIMEOUT)
    at.session_state[state.USER_KEY] = user
    at.run()
    assert not at.exception, at.exception
    return at


def shown(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "info", "caption", "success", "warning", "error")
             for e in getattr(at, kind)]
    return plain(" ".join(str(p) for p in parts))


def frames(at: AppTest) -> list:
    return [d.value for d in at.dataframe]


def score(eng: jobs.Engine, sub_id: str, accuracy: float) -> None:
    """The scoring worker's answer, as executors.worker.score_submission sends it."""
    eng.executor.handles[sub_id].on_event(ev.make(  # type: ignore[union-attr]
        "done", status="finished", message="", score={
            "accuracy": accuracy, "loss": 0.4, "n": 1000,
            "confusion": [[100 if i == j else 0 for j in range(10)] for i in range(10)]}))


def test_a_teacher_sets_a_challenge_with_the_form(lab, runs_root) -> None:
    at = open_page(TEACHER)
    at.text_input[0].input("Fashion under 100k")
    at.text_area[0].input("Best model under 100,000 parameters.")
    at.number_input[0].set_value(100_000)
    at.number_input[1].set_value(5)
    at.number_input[3].set_value(2)
    at.button(key="FormSubmitter:ch_create-Set the challenge").click().run()
    assert not at.exception, at.exception
    assert "Challenge 'Fashion under 100k' is set" in shown(at)
    made = next(c for c in challenges.list_challenges(runs_root) if c.name.startswith("Fash"))
    assert made.limits == Limits(100_000, 5, None) and made.per_person == 2
    assert made.deadline is not None and made.owner == "tess"


def test_a_student_submits_sees_aliases_and_only_their_own(lab) -> None:
    eng, ch, fits, big = lab
    at = open_page(ALICE)
    text = shown(at)
    assert "Set a challenge" not in [e.label for e in at.expander]
    assert "at most 50,000 parameters" in text and "Your submissions: 0 of 3 used" in text
    at.selectbox(key="ch_run").set_value(big)
    at.button(key="ch_submit").click().run()
    assert "has 90,000 parameters; 'Digits under 50k' allows at most 50,000" in shown(at)
    at.selectbox(key="ch_run").set_value(fits)
    at.button(key="ch_submit").click().run()
    assert "it is being scored on the hidden test images" in shown(at)
    [sub] = challenges.load_submissions(eng.root, ch.id)
    score(eng, sub.id, 0.875)
    bob = fake_run(eng.root, "20260101-000002-bob", "bob", ch.dataset_name, 30_000, [9])
    bob_sub = eng.submit_to_challenge(ch.id, bob.name, BOB)
    score(eng, bob_sub["id"], 0.9)
    at = open_page(ALICE)
    board, mine = frames(at)
    assert board["Person"].tolist() == [challenges.alias(ch.id, "bob"),
                                        challenges.alias(ch.id, "alice") + " (you)"]
    assert board["Hidden-test accuracy"].tolist() == [0.9, 0.875]
    assert mine["Person"].tolist() == ["alice"] and "bob" not in str(board) + str(mine)
    assert not at.get("plotly_chart") and not at.get("download_button")
    assert "Your submissions: 1 of 3 used" in shown(at)


def test_a_student_cannot_submit_someone_elses_run(lab) -> None:
    eng, ch, fits, _ = lab
    at = open_page(BOB)  # Bob has no runs: nothing of Alice's is offered
    assert "You have no finished run" in shown(at)
    with pytest.raises(Exception, match="it is alice's"):
        eng.submit_to_challenge(ch.id, fits, BOB)
    assert challenges.load_submissions(eng.root, ch.id) == []


def test_a_teacher_sees_every_submission_its_confusion_and_the_csv(lab) -> None:
    eng, ch, fits, _ = lab
    sub = eng.submit_to_challenge(ch.id, fits, ALICE)
    score(eng, sub["id"], 0.8)
    at = open_page(TEACHER)
    board, every = frames(at)
    assert board["Person"].tolist() == ["alice"] and every["Run"].tolist() == [fits]
    assert at.get("plotly_chart"), "the confusion matrix on the hidden split"
    [download] = at.get("download_button")
    assert "Download the board (CSV)" in str(download.proto)


def test_train_for_this_challenge_makes_its_data_set_the_current_one(lab) -> None:
    _, ch, _, _ = lab
    at = open_page(ALICE)
    at.button(key="ch_train").click().run()
    assert at.session_state[state.DATASET_KEY] == ch.dataset_name


def test_the_owner_submits_from_the_runs_page(lab) -> None:
    eng, ch, fits, _ = lab
    at = AppTest.from_file(str(ROOT / "pages" / "runs.py"), default_timeout=APPTEST_TIMEOUT)
    at.session_state[state.USER_KEY] = ALICE
    at.query_params["run"] = fits
    at.run()
    assert not at.exception, at.exception
    at.button(key=f"ch_submit_{fits}").click().run()
    assert "it is being scored on the hidden test images" in shown(at)
    [sub] = challenges.load_submissions(eng.root, ch.id)
    assert (sub.run_id, sub.person, sub.status) == (fits, "alice", "scoring")
    at = AppTest.from_file(str(ROOT / "pages" / "runs.py"), default_timeout=APPTEST_TIMEOUT)
    at.session_state[state.USER_KEY] = BOB  # Bob reads Alice's run, but may not submit it
    at.query_params["run"] = fits
    at.run()
    assert not at.exception and not [b for b in at.button if b.key == f"ch_submit_{fits}"]


def choose_model(at: AppTest, config, fit, preset: str) -> None:
    """A new model for Configure's widgets and Train, as pages.state.set_model_choice
    records it (a preset, a file, a run's settings)."""
    at.session_state[state.MODEL_CONFIG_KEY] = config
    at.session_state[state.FIT_SETTINGS_KEY] = fit
    at.session_state[state.PRESET_NAME_KEY] = preset
    version = state.CONFIG_VERSION_KEY
    at.session_state[version] = (at.session_state[version] if version in at.session_state
                                 else 0) + 1


@pytest.mark.parametrize("page", ["configure.py", "train.py"])
def test_configure_and_train_warn_before_training_a_model_over_the_limits(lab, page) -> None:
    """On a challenge's data set, Configure and Train show its limits and warn, with the
    numbers, about a model it would refuse; a model that fits gets no warning."""
    from cnnlab.model import config as cfg

    _, ch, _, _ = lab
    at = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=APPTEST_TIMEOUT)
    at.session_state[state.USER_KEY] = ALICE
    at.session_state[state.DATASET_KEY] = ch.dataset_name
    big = cfg.PRESETS["seed003-fashion"]  # 333,526 parameters on 28×28 images
    choose_model(at, big.config, big.fit, "seed003-fashion")
    at.run()
    assert not at.exception, at.exception
    assert "Challenge **Digits under 50k** limits: at most 50,000 parameters." in shown(at)
    assert [plain(w.value) for w in at.warning if "Digits under 50k" in w.value] == [
        "This model has 333,526 parameters; 'Digits under 50k' allows at most 50,000, so a "
        "run of it cannot be submitted: use fewer filters or dense units."]

    small = cfg.ModelConfig(blocks=(cfg.ConvBlock(filters=4),), dense=(cfg.DenseLayer(16),))
    choose_model(at, small, big.fit, state.CUSTOM)
    at.run()
    assert not at.exception and not [w for w in at.warning if "Digits under 50k" in w.value]
