"""The fair queue on the pages (AppTest, class mode): the owner of a queued run reads its
wait on Train, with counts and minutes only; a teacher reads the whole queue on Runs ▸
Class and moves or cancels runs there; a student gets no such controls.

The server's engine runs over tests/fake_executor.py and a hand-moved clock, so the runs
ahead report exactly the epoch times the estimates are checked against.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import APPTEST_TIMEOUT, ROOT, plain
from fake_executor import FakeExecutor
from streamlit.testing.v1 import AppTest
from test_queue import ANN, BEN, KIM, ZED, Clock, request

from cnnlab.data import datasets
from cnnlab.people import access
from cnnlab.train import budgets, jobs
from pages import state


@pytest.fixture
def queue(runs_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Class mode; the pages' engine has Zed's 3-epoch run training (60 s an epoch, 40 s
    left in the first), then Ann's 2-epoch run and Ben's 1-epoch run queued."""
    monkeypatch.setenv("CNNLAB_SIGN_IN", "accounts")
    monkeypatch.setenv("CNNLAB_ACCOUNTS_FILE", str(tmp_path / "accounts.json"))
    clock = Clock(1000.0)
    eng = jobs.Engine(runs_root, executor=FakeExecutor(), clock=clock,
                      budgets=budgets.Budgets(max_runs_per_user=5))
    jobs._ENGINES[runs_root.resolve()] = eng  # the engine pages.common.engine() returns
    sample = datasets.load("mnist_sample")
    zed = eng.submit(request("zed-run", epochs=3), sample, user=ZED)
    ann = eng.submit(request("ann-run", epochs=2), sample, user=ANN)
    ben = eng.submit(request("ben-run", epochs=1), sample, user=BEN)
    eng.executor.handles[zed.run_id].report_batch(epoch=1, epochs=3, eta_epoch_s=40.0,
                                                  elapsed_s=20.0, at=1000.0)
    return eng, clock, {"zed": zed, "ann": ann, "ben": ben}


def open_page(page: str, user) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=APPTEST_TIMEOUT)
    at.session_state[state.USER_KEY] = user
    at.session_state[state.DATASET_KEY] = "mnist_sample"
    at.run()
    assert not at.exception, at.exception
    return at


def shown_text(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "info", "caption", "success", "warning", "error")
             for e in getattr(at, kind)]
    return plain(" ".join(str(p) for p in parts))


def test_the_owner_reads_her_wait_on_train_and_it_follows_the_runs_ahead(queue) -> None:
    eng, clock, run = queue
    # Zed: 40 s + 2 × 60 s = 160 s left; Ann's run starts then; Ben's after Ann's 2 × 60 s.
    ben = open_page("train.py", BEN)
    assert [i.value for i in ben.info] == [
        "Queued: 2 runs ahead of yours, starts in about 5 min."]
    text = shown_text(ben)
    assert run["ben"].run_id in text
    for other in ("zed", "ann"):  # counts and minutes only: no one else's name or run
        assert run[other].run_id not in text and f"{other}-run" not in text
    assert "zed" not in text.lower()
    ann = open_page("train.py", ANN)
    assert [i.value for i in ann.info] == [
        "Queued: 1 run ahead of yours, starts in about 3 min."]

    # Zed's first epoch took 60 s; 50 s into the second, 10 s are left: 10 + 60 = 70 s.
    worker = eng.executor.handles[run["zed"].run_id]
    worker.report_epoch(1, 3, seconds=60.0)
    worker.report_batch(epoch=2, epochs=3, eta_epoch_s=10.0, elapsed_s=110.0, at=1110.0)
    clock.now = 1110.0
    ann.run()  # what the page's poll does every 2 s
    assert [i.value for i in ann.info] == ["Queued: 1 run ahead of yours, starts in about 1 min."]


def test_a_teacher_moves_and_cancels_queued_runs_on_runs_class(queue) -> None:
    eng, _, run = queue
    kim = open_page("runs.py", KIM)
    table = next(d.value for d in kim.dataframe if "when" in d.value.columns)
    assert list(table["owner"]) == ["zed", "ann", "ben"]
    assert list(table["state"]) == ["training", "queued #1", "queued #2"]
    assert list(table["when"]) == ["ends in about 3 min", "starts in about 3 min",
                                   "starts in about 5 min"]
    assert kim.button(key=f"queue_front_{run['ann'].run_id}").disabled  # already first

    kim.button(key=f"queue_front_{run['ben'].run_id}").click().run()
    assert not kim.exception, kim.exception
    assert [j.run_id for j in eng.queued()] == [run["ben"].run_id, run["ann"].run_id]
    assert any(f"Run {run['ben'].run_id} of ben starts next." == s.value for s in kim.success)
    table = next(d.value for d in kim.dataframe if "when" in d.value.columns)
    assert list(table["owner"]) == ["zed", "ben", "ann"]  # redrawn in the new order

    kim.button(key=f"queue_cancel_{run['ann'].run_id}").click().run()
    assert run["ann"].done() and run["ann"].result.status == "stopped"
    assert [j.run_id for j in eng.queued()] == [run["ben"].run_id]


def test_a_student_gets_no_queue_controls_on_runs(queue) -> None:
    eng, _, run = queue
    ben = open_page("runs.py", BEN)
    assert not [b for b in ben.button if b.key and b.key.startswith("queue_")]
    assert not any("when" in d.value.columns for d in ben.dataframe)
    # And the engine refuses what the page does not offer (tests/test_queue.py has each case).
    with pytest.raises(access.AccessDenied, match="only a teacher may change its order"):
        eng.move_to_front(run["ben"].run_id, BEN)
    with pytest.raises(access.AccessDenied, match="it is not yours"):
        eng.cancel(run["ann"].run_id, BEN)
