"""The hidden split stays hidden: every way a page, a download or the CLI reaches a data set
is tried on a challenge, and none finds a hidden image or label.

The challenge is set on an upload whose every image is a different flat grey, so an image
is recognised by its value wherever it turns up. Runs trained for a challenge (their
predictions, mistakes and metrics) are checked in tests/test_challenge_scoring.py, the
CLI's evaluate and show in tests/test_cli_challenge.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import APPTEST_TIMEOUT, ROOT
from streamlit.testing.v1 import AppTest
from test_challenges import TEACHER, upload

from cnnlab.data import datasets
from cnnlab.model import config
from cnnlab.model.fit_settings import FitSettings
from cnnlab.model.models import to_keras_script
from cnnlab.people.accounts import User
from cnnlab.runs import challenge_data, challenges
from cnnlab.runs import store as runs
from pages import state

ALICE = User("alice")


@pytest.fixture
def challenge(runs_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CNNLAB_SIGN_IN", "accounts")
    monkeypatch.setenv("CNNLAB_ACCOUNTS_FILE", str(tmp_path / "accounts.json"))
    made = challenges.create(runs_root, TEACHER, class_mode=True, name="Greys",
                             source=upload(), seed=3)
    hidden = datasets.from_npz(challenge_data.hidden_npz(runs_root, made))
    return made, {int(v) for v in hidden.x_test[:, 0, 0, 0]}


def greys(x: np.ndarray) -> set[int]:
    return {int(v) for v in np.asarray(x)[:, 0, 0, 0]}


def test_every_page_loads_the_visible_set_only(challenge) -> None:
    from pages.common import cached_dataset

    made, hidden = challenge
    ds = cached_dataset(made.dataset_name)  # Explore, Configure, Train, Runs, Insight, Why
    assert ds.info.name == made.dataset_name
    assert len(hidden) == 18 and not (greys(ds.x_train) | greys(ds.x_test)) & hidden
    assert len(ds.y_train) + len(ds.y_test) == 90 - 18


@pytest.mark.parametrize("suffix", [":hidden", "/../x", "x:hidden"])
def test_no_name_loads_the_hidden_split(challenge, suffix) -> None:
    from pages.common import cached_dataset

    made, _ = challenge
    name = made.dataset_name + suffix if not suffix.startswith("x") else "challenge:" + suffix
    with pytest.raises(datasets.DatasetUnavailable):
        cached_dataset(name)


def explore(made: challenges.Challenge) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "explore.py"), default_timeout=APPTEST_TIMEOUT)
    at.session_state[state.USER_KEY] = ALICE
    at.session_state[state.DATASET_KEY] = made.dataset_name
    at.run()
    assert not at.exception, at.exception
    return at


def bar_values(trace: dict) -> list[int]:
    """A bar trace's y values (plotly writes numpy arrays as base64 typed arrays)."""
    import base64

    y = trace["y"]
    if isinstance(y, dict):
        return np.frombuffer(base64.b64decode(y["bdata"]), np.dtype(y["dtype"])).tolist()
    return list(y)


def test_explore_shows_the_challenges_visible_counts(challenge, runs_root) -> None:
    made, _ = challenge
    visible = challenge_data.visible(runs_root, made)
    at = explore(made)
    assert at.selectbox(key="explore_dataset").value == made.dataset_name
    specs = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    counts = next(s for s in specs if any(t.get("type") == "bar" for t in s["data"]))
    bars = {t["name"]: bar_values(t) for t in counts["data"] if t.get("type") == "bar"}
    assert bars == {"train": np.bincount(visible.y_train).tolist(),
                    "test": np.bincount(visible.y_test).tolist()}
    assert sum(bars["test"]) < 18  # not the 18 hidden images


def test_the_challenge_folder_is_no_run_and_no_path_reaches_it(challenge, runs_root) -> None:
    made, _ = challenge
    assert [r.run_id for r in runs.list_runs(runs_root)] == []
    for given in (challenges.CHALLENGES_DIR, f"{challenges.CHALLENGES_DIR}/{made.id}"):
        with pytest.raises(runs.RunPathError):
            runs.run_dir_for(runs_root, given)
    done = subprocess.run(
        [sys.executable, "-m", "cnnlab", "runs", "show", challenges.CHALLENGES_DIR,
         "--runs-dir", str(runs_root), "--json"], capture_output=True, text=True, cwd=ROOT,
        timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    done = subprocess.run(
        [sys.executable, "-m", "cnnlab", "train", "--dataset", made.dataset_name + ":hidden",
         "--runs-dir", str(runs_root), "--json"], capture_output=True, text=True, cwd=ROOT,
        timeout=120)
    assert done.returncode == 2 and "is not valid" in done.stderr


def test_an_exported_script_does_not_load_the_source_test_set(challenge) -> None:
    made, _ = challenge
    tiny = config.ModelConfig(blocks=(config.ConvBlock(filters=4),))
    script = to_keras_script(tiny, FitSettings(), (8, 8, 1), 3, made.dataset_name)
    assert ".load_data()" not in script and "load your own" in script
