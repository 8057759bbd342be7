"""Real browser, class mode: a sign-in that lasts a class period and links that survive it.

Two `streamlit run app.py` servers share one runs root and accounts file (as several web
processes of one class do); two browser contexts share nothing."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TEST_OUTPUT, lab_server
from test_predict_page import make_run

from cnnlab.people import accounts, sessions
from cnnlab.runs import store as runs

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORDS = {"ann": "ann-password-1", "kim": "kim-password-3"}


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
    run_dir = make_run(root, limit=300)
    runs.write_json(run_dir / runs.CONFIG_FILE,
                    {**runs.load_config(run_dir), "owner": "ann", "name": "ann-digits"})
    return root


@pytest.fixture(scope="module")
def second_server(server_runs_dir: Path, server_env: dict[str, str],
                  tmp_path_factory: pytest.TempPathFactory):
    """Another web process on the same runs root and accounts."""
    with lab_server(server_runs_dir, server_env, tmp_path_factory) as url:
        yield url


def context(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    return ctx, page


def sign_in(page, name: str) -> None:
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password", exact=True).fill(PASSWORDS[name])
    page.get_by_role("button", name="Sign in").click()


def signed_in(page, name: str) -> None:
    page.get_by_text(f"Signed in as {name}").wait_for()


def asks_to_sign_in(page) -> None:
    page.get_by_label("Password", exact=True).wait_for()
    assert page.get_by_text("Signed in as").count() == 0


def folder_digest(root: Path) -> str:
    """One hash of every file under ``root`` (names and bytes)."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def cli(*args: str, accounts_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnlab", "users", *args, "--accounts-file",
                           str(accounts_path)], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)


def test_a_link_survives_sign_in_and_the_sign_in_survives_reloads(
        streamlit_server: str, second_server: str, server_runs_dir: Path, _chromium) -> None:
    run_id = runs.list_runs(server_runs_dir)[0].run_id
    (ctx, page), (other_ctx, other) = context(_chromium), context(_chromium)
    try:
        # A teacher's link, opened signed out: the sign-in form in place, no "Page not found".
        page.goto(f"{streamlit_server}/runs?run={run_id}")
        asks_to_sign_in(page)
        assert page.get_by_text("Page not found").count() == 0
        TEST_OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(TEST_OUTPUT / "signin-link.png"))
        sign_in(page, "ann")
        signed_in(page, "ann")
        page.get_by_text("ann-digits").first.wait_for()  # that run's details
        assert page.url.endswith(f"/runs?run={run_id}")

        (cookie,) = [c for c in ctx.cookies() if c["name"] == sessions.COOKIE]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and not cookie["secure"]
        assert cookie["expires"] > time.time() + 7.9 * 3600  # a class period: 8 h

        page.reload()  # F5, a laptop waking up, a dropped websocket: still signed in
        signed_in(page, "ann")
        tab = ctx.new_page()
        tab.goto(f"{streamlit_server}/explore")
        signed_in(tab, "ann")
        tab.goto(second_server)  # the other web process accepts the same session
        signed_in(tab, "ann")

        other.goto(streamlit_server)  # a browser that shares nothing is not signed in
        asks_to_sign_in(other)

        page.get_by_role("button", name="Sign out").click()
        asks_to_sign_in(page)
        tab.reload()
        asks_to_sign_in(tab)
    finally:
        ctx.close()
        other_ctx.close()


def test_an_expired_revoked_or_forged_cookie_asks_again_and_changes_nothing(
        streamlit_server: str, server_runs_dir: Path, accounts_path: Path, _chromium) -> None:
    before = folder_digest(server_runs_dir)
    store_file = sessions.store_path(accounts_path)
    ctx, page = context(_chromium)
    try:
        # Revoked with `cnnlab users sessions --revoke ID`.
        page.goto(streamlit_server)
        sign_in(page, "kim")
        signed_in(page, "kim")
        listed = json.loads(cli("sessions", "--json", accounts_path=accounts_path).stdout)
        (kims,) = [s for s in listed["sessions"] if s["user"] == "kim"]
        done = cli("sessions", "--revoke", kims["id"], accounts_path=accounts_path)
        assert done.returncode == 0, done.stderr
        page.reload()
        asks_to_sign_in(page)
        page.get_by_text("Your sign-in has ended").wait_for()

        # Past its expiry (the store's clock moved on for it).
        sign_in(page, "kim")
        signed_in(page, "kim")
        data = json.loads(store_file.read_text())
        for entry in data["sessions"].values():
            entry["expires"] = time.time() - 1
        store_file.write_text(json.dumps(data))
        page.reload()
        asks_to_sign_in(page)

        # Forged, and a real token cut short: one sentence and the form, never a traceback.
        sign_in(page, "kim")
        signed_in(page, "kim")
        (real,) = [c for c in ctx.cookies() if c["name"] == sessions.COOKIE]
        for value in ("forged-token", real["value"][:-4]):
            ctx.add_cookies([{**real, "value": value}])
            page.reload()
            asks_to_sign_in(page)
            page.get_by_text("Your sign-in has ended").wait_for()
            text = page.inner_text("body")
            assert "Traceback" not in text and "Error" not in text
    finally:
        ctx.close()
    assert folder_digest(server_runs_dir) == before  # nothing in the run store changed
