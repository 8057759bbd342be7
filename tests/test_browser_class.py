"""Real browser, class mode with local accounts: three people in three browser contexts that
share nothing — Ann and Bob (students) and Kim (teacher) — on one `streamlit run` server."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from conftest import TEST_OUTPUT
from test_predict_page import make_run

from cnnlab.people import accounts
from cnnlab.runs import store as runs

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORDS = {"ann": "ann-password-1", "bob": "bob-password-2", "kim": "kim-password-3"}


@pytest.fixture(scope="module")
def accounts_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("class") / "accounts.json"
    store = accounts.Accounts(path)
    for name, password in PASSWORDS.items():
        store.add(name, password, teacher=name == "kim")
    return path


@pytest.fixture(scope="module")
def server_env(accounts_path: Path) -> dict[str, str]:
    return {"CNNLAB_SIGN_IN": "accounts", "CNNLAB_ACCOUNTS_FILE": str(accounts_path)}


@pytest.fixture(scope="module")
def server_runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished run, Ann's."""
    root = tmp_path_factory.mktemp("class-runs")
    run_dir = make_run(root)
    runs.write_json(run_dir / runs.CONFIG_FILE,
                    {**runs.load_config(run_dir), "owner": "ann", "name": "ann-digits"})
    return root


def person(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    return context, page


def sign_in(page, url: str, name: str, password: str) -> None:
    page.goto(url)
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()


def mistype_until_slowed(page) -> int:
    """Post wrong passwords until the sign-in asks to wait; the seconds it asks for.

    The waits double (1, 2, 4 s …), so they soon outlast this machine's round trip, however
    slow: the check does not depend on its speed."""
    for _ in range(6):
        page.get_by_label("Name").fill("bob")
        page.get_by_label("Password", exact=True).fill("bob-password-X")
        with page.expect_navigation():
            page.get_by_role("button", name="Sign in").click()
        alert = page.get_by_role("alert").inner_text()
        if alert.startswith("Too many failed sign-ins"):
            return int(re.search(r"wait (\d+) s", alert).group(1))
        assert alert.startswith("Wrong name or password"), alert
    raise AssertionError("six wrong passwords in a row and never asked to wait")


def signed_in(page, name: str) -> None:
    page.get_by_text(f"Signed in as {name}").wait_for()


def open_page(page, title: str) -> None:
    """Go to a page through the sidebar (a reload would start a new, signed-out session)."""
    page.get_by_role("link", name=title).first.click()


def shot(page, name: str) -> None:
    TEST_OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(TEST_OUTPUT / f"class-{name}.png"), full_page=True)


def test_students_and_a_teacher_share_a_server(streamlit_server: str, server_runs_dir: Path,
                                              _chromium) -> None:
    run = runs.list_runs(server_runs_dir)[0]
    people = {name: person(_chromium) for name in PASSWORDS}
    try:
        ann, bob, kim = (people[n][1] for n in ("ann", "bob", "kim"))

        # Bob mistypes: refused, and slowed down until he waits; then his password works.
        sign_in(bob, streamlit_server, "bob", "bob-password-X")
        bob.get_by_text("Wrong name or password").wait_for()
        assert bob.get_by_role("link", name="Runs").count() == 0  # nothing but the form
        time.sleep(mistype_until_slowed(bob))
        bob.get_by_label("Name").fill("bob")
        bob.get_by_label("Password", exact=True).fill(PASSWORDS["bob"])
        bob.get_by_role("button", name="Sign in").click()
        signed_in(bob, "bob")
        for name, page in (("ann", ann), ("kim", kim)):
            sign_in(page, streamlit_server, name, PASSWORDS[name])
            signed_in(page, name)

        # Bob: his own runs first (none), then everyone's: Ann's run is readable, not his.
        open_page(bob, "Runs")
        bob.get_by_text("You have no runs yet").wait_for()
        bob.get_by_test_id("stRadioGroup").get_by_text("Everyone").click()
        bob.get_by_role("heading", name="ann-digits").wait_for()
        bob.get_by_role("tab", name="Manage").click()
        bob.get_by_text("This is ann's run").wait_for()
        assert bob.get_by_role("button", name="Delete this run…").count() == 0
        assert bob.get_by_role("button", name="Rename").count() == 0
        assert str(server_runs_dir) not in bob.content()
        shot(bob, "student-bob-runs")
        open_page(bob, "Train")
        bob.get_by_role("heading", name="Train").wait_for()
        assert run.run_id not in bob.content()
        shot(bob, "student-bob-train")

        # Ann owns it: every control.
        open_page(ann, "Runs")
        ann.get_by_role("heading", name="ann-digits").wait_for()
        ann.get_by_role("tab", name="Manage").click()
        ann.get_by_role("button", name="Delete this run…").wait_for()
        shot(ann, "student-ann-runs")

        # Kim (teacher): everyone's runs, the class panel, and she may rename Ann's run.
        open_page(kim, "Runs")
        kim.get_by_role("heading", name="ann-digits").wait_for()
        kim.get_by_text("Class: the queue and who uses the server").click()
        kim.get_by_role("tab", name="Manage").click()
        kim.get_by_label("New name").fill("ann-digits-checked")
        kim.get_by_role("button", name="Rename").click()
        kim.get_by_text("Renamed to").wait_for()
        assert runs.load_config(run.run_dir)["name"] == "ann-digits-checked"
        shot(kim, "teacher-kim-runs")

        # Signing out ends Bob's session: the form again.
        bob.get_by_role("button", name="Sign out").click()
        bob.get_by_role("button", name="Sign in").wait_for()
        bob.goto(f"{streamlit_server}/runs")
        bob.get_by_role("button", name="Sign in").wait_for()
        assert bob.get_by_text("ann-digits").count() == 0
    finally:
        for context, _ in people.values():
            context.close()
