"""Real browser, class mode: a challenge from start to board, with three people in three
browser contexts on one `streamlit run` server.

Kim (teacher) sets a challenge on Fashion-MNIST with a parameter limit; Ann and Bob press
"Train for this challenge", train the quick preset on 300 of its images (one epoch, two) and
submit; the board ranks them by hidden-test accuracy (read back from the CSV Kim
downloads); Bob's larger model is refused with its numbers. Screenshots go to
test-output/ (the README's come from here).
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import pytest
from conftest import TEST_OUTPUT, wait_until
from test_browser_class import person, sign_in, signed_in
from ui_steps import SLOW, pick, set_number, settle

from cnnlab.people import accounts
from cnnlab.runs import challenges
from cnnlab.runs import store as runs

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORDS = {"ann": "ann-password-1", "bob": "bob-password-2", "kim": "kim-password-3"}
NAME = "Fashion under 120k"
LIMIT = 120_000  # the quick preset (114,314 parameters) fits; seed003-fashion does not
EXCEPTION = '[data-testid="stException"]'


@pytest.fixture(scope="module")
def server_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    path = tmp_path_factory.mktemp("challenge-class") / "accounts.json"
    store = accounts.Accounts(path)
    for name, password in PASSWORDS.items():
        store.add(name, password, teacher=name == "kim")
    return {"CNNLAB_SIGN_IN": "accounts", "CNNLAB_ACCOUNTS_FILE": str(path)}


def go(page, title: str) -> None:
    """Open a page through the sidebar (a reload would start a new, signed-out session)."""
    page.get_by_role("link", name=title).first.click()
    page.get_by_role("heading", level=1, name=title).wait_for(timeout=SLOW)
    settle(page)


def shot(page, name: str) -> None:
    TEST_OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(TEST_OUTPUT / f"challenge-{name}.png"), full_page=True)


def no_exception(page) -> None:
    boxes = page.locator(EXCEPTION)
    assert boxes.count() == 0, boxes.first.inner_text()


def set_challenge(kim) -> None:
    """Kim fills the form: Fashion-MNIST, at most LIMIT parameters, 2 submissions each."""
    go(kim, "Challenges")
    kim.get_by_text("Set a challenge").click()
    kim.get_by_label("Name", exact=True).fill(NAME)
    kim.get_by_label("Brief", exact=True).fill("Best Fashion-MNIST model under 120,000 parameters.")
    pick(kim, "Data set", "Fashion-MNIST")
    for label, value in (("Maximum parameters (0: none)", LIMIT),
                         ("Submissions per person", 2)):
        field = kim.locator('[data-testid="stNumberInput"]').filter(has_text=label).first \
            .locator("input")
        field.fill(str(value))
        field.press("Tab")
    kim.get_by_role("button", name="Set the challenge").click()
    kim.get_by_text(f"Challenge '{NAME}' is set").wait_for(timeout=SLOW)
    no_exception(kim)


def train(page, preset: str, root: Path, before: set[str], epochs: int = 1) -> str:
    """"Train for this challenge", then ``preset`` on 300 images; the run id."""
    go(page, "Challenges")
    page.get_by_role("button", name="Train for this challenge").click()
    page.get_by_role("heading", level=1, name="Configure").wait_for(timeout=SLOW)
    go(page, "Train")
    page.get_by_text(f"Challenge: {NAME}").first.wait_for(timeout=SLOW)  # the data set
    pick(page, "Model", f"preset: {preset}")
    settle(page)
    set_number(page, "Epochs", epochs)
    set_number(page, "Batch size", 64)
    page.locator('[data-testid="stCheckbox"]').filter(
        has_text="Limit training samples").locator("label").click()
    settle(page)
    set_number(page, "Training samples to use", 300)
    page.locator(".st-key-train_start button").click()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = {p.name for p in root.iterdir() if not p.name.startswith(".")} - before
        if new:
            return new.pop()
        time.sleep(0.2)
    raise AssertionError("no run was created after pressing Train")


def finished(root: Path, run_id: str) -> None:
    wait_until(lambda: runs.load_status(root / run_id).get("status") not in (
        None, *runs.ACTIVE), 300, f"run {run_id} to end")
    assert runs.load_status(root / run_id)["status"] == "finished"


def board_people(page) -> list[str]:
    """The Person column of the page's first table, the board (st.dataframe draws on a
    canvas; its cells are also in a hidden table for screen readers)."""
    cells = page.locator('[data-testid="stDataFrame"]').first.locator(
        'td[role="gridcell"][aria-colindex="2"]')
    return cells.all_text_contents()


def submit(page, run_id: str) -> None:
    go(page, "Challenges")
    pick(page, "Your run", run_id)
    page.get_by_role("button", name=f"Submit to {NAME}").click()
    settle(page)


def test_a_teacher_sets_a_challenge_two_students_submit_and_the_board_ranks_them(
        streamlit_server: str, server_runs_dir: Path, _chromium) -> None:
    root = server_runs_dir
    people = {name: person(_chromium) for name in PASSWORDS}
    try:
        ann, bob, kim = (people[n][1] for n in ("ann", "bob", "kim"))
        for name, page in (("kim", kim), ("ann", ann), ("bob", bob)):
            sign_in(page, streamlit_server, name, PASSWORDS[name])
            signed_in(page, name)

        set_challenge(kim)
        [challenge] = challenges.list_challenges(root)
        assert challenge.limits.max_params == LIMIT and challenge.source == "fashion_mnist"
        shot(kim, "teacher-set")

        # Bob sees no form; Ann and Bob train at once (two worker slots), Bob's big one after.
        go(bob, "Challenges")
        assert bob.get_by_text("Set a challenge").count() == 0
        ann_run = train(ann, "quick", root, set())
        bob_run = train(bob, "quick", root, {ann_run}, epochs=2)  # another model than Ann's
        big_run = train(bob, "seed003-fashion", root, {ann_run, bob_run})
        for run_id in (ann_run, bob_run, big_run):
            finished(root, run_id)
            assert runs.load_config(root / run_id)["dataset"] == challenge.dataset_name

        submit(ann, ann_run)
        ann.get_by_text("it is being scored on the hidden test images").wait_for()
        submit(bob, bob_run)
        bob.get_by_text("it is being scored on the hidden test images").wait_for()
        wait_until(lambda: [s.status for s in challenges.load_submissions(
            root, challenge.id)] == ["scored", "scored"], 180, "both submissions scored")
        subs = {s.person: s for s in challenges.load_submissions(root, challenge.id)}

        # The over-limit run: refused with its numbers, and nothing recorded.
        submit(bob, big_run)
        bob.get_by_text(f"has 333,526 parameters; '{NAME}' allows at most 120,000").wait_for()
        assert len(challenges.load_submissions(root, challenge.id)) == 2
        no_exception(bob)

        # The board, live: Ann sees both rows ranked, her own marked, names aliased.
        ranked = sorted(subs.values(), key=lambda s: (-(s.accuracy or 0), s.params))
        expected = [challenges.alias(challenge.id, s.person) + (" (you)" if s.person == "ann"
                                                                 else "") for s in ranked]
        wait_until(lambda: board_people(ann) == expected, 30, f"Ann's board to be {expected}")
        ann.get_by_text("Your submissions: 1 of 2 used").wait_for()
        shot(ann, "student-board")
        shot(bob, "student-refused")

        # Kim: every submission, a confusion matrix, and the board as CSV, ranked.
        go(kim, "Challenges")
        kim.get_by_text("All submissions").wait_for(timeout=30_000)
        kim.locator('[data-testid="stPlotlyChart"]').first.wait_for(timeout=SLOW)
        with kim.expect_download() as download:
            kim.get_by_role("button", name="Download the board (CSV)").click()
        board = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
        assert [row["who"] for row in board] == [s.person for s in ranked]
        assert [float(row["accuracy"]) for row in board] == [s.accuracy for s in ranked]
        assert [int(row["params"]) for row in board] == [114_314, 114_314]
        shot(kim, "teacher-board")
        no_exception(kim)
    finally:
        for context, _ in people.values():
            context.close()
