"""Real browser, class mode: Ann trains, Ben's run waits behind hers and his Train page tells
him how long (counts and minutes, no one else's name); Kim (teacher) sees the queue with
its owners on Runs ▸ Class and cancels Ben's run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_browser_class import open_page, person, shot, sign_in, signed_in
from test_e2e import start_training
from ui_steps import SLOW, pick, settle

from cnnlab.people import accounts
from cnnlab.runs import store as runs

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORDS = {"ann": "ann-password-1", "ben": "ben-password-2", "kim": "kim-password-3"}
SAMPLE = "MNIST sample (bundled, 6k/1k)"


@pytest.fixture(scope="module")
def server_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    path = tmp_path_factory.mktemp("queue-class") / "accounts.json"
    store = accounts.Accounts(path)
    for name, password in PASSWORDS.items():
        store.add(name, password, teacher=name == "kim")
    return {"CNNLAB_SIGN_IN": "accounts", "CNNLAB_ACCOUNTS_FILE": str(path)}


def train(page, epochs: int, limit: int | None) -> None:
    open_page(page, "Train")
    page.get_by_role("heading", name="Train").wait_for(timeout=SLOW)
    pick(page, "Data set", SAMPLE)
    settle(page)
    start_training(page, epochs=epochs, batch_size=32, limit=limit)


def test_a_queued_run_shows_its_wait_and_a_teacher_cancels_it(streamlit_server: str,
                                                              server_runs_dir: Path,
                                                              _chromium) -> None:
    people = {name: person(_chromium) for name in PASSWORDS}
    try:
        ann, ben, kim = (people[n][1] for n in ("ann", "ben", "kim"))
        for name, page in people.items():
            sign_in(page[1], streamlit_server, name, PASSWORDS[name])
            signed_in(page[1], name)

        # Ann's run takes the one worker for a while; Ben's waits behind it.
        train(ann, epochs=20, limit=None)
        ann.get_by_role("button", name="Stop").wait_for(timeout=SLOW)
        train(ben, epochs=1, limit=300)
        # Once Ann's worker reports its pace, Ben reads minutes (the page polls every 2 s).
        wait = ben.get_by_text(re.compile(r"Queued: 1 run ahead of yours, starts in "
                                          r"(less than a minute|about \d+ min)\."))
        wait.wait_for(timeout=SLOW)
        main = ben.locator('[data-testid="stMain"]').inner_text()
        ann_runs = [r.run_id for r in runs.list_runs(server_runs_dir)
                    if r.config.get("owner") == "ann"]
        assert ann_runs and not any(r in main for r in ann_runs)
        assert not re.search(r"\bann\b", main, re.IGNORECASE)  # no one else's name
        shot(ben, "queue-student-ben-train")

        # Kim: the class queue, with Ben's run and its buttons; she cancels it.
        open_page(kim, "Runs")
        kim.get_by_text("Class: the queue and who uses the server").click()
        kim.get_by_role("button", name="Move to front").wait_for(timeout=SLOW)
        assert kim.get_by_role("button", name="Cancel").count() == 1  # one queued run
        shot(kim, "queue-teacher-kim-runs")
        kim.get_by_role("button", name="Cancel").click()
        kim.get_by_text(re.compile(r"Run \S+ of ben was cancelled\.")).wait_for()
        ben.get_by_text("Cancelled before it started.").wait_for(timeout=SLOW)

        ann.get_by_role("button", name="Stop").click()
        ann.get_by_text(re.compile("Stopped")).first.wait_for(timeout=SLOW)
    finally:
        for context, _ in people.values():
            context.close()
