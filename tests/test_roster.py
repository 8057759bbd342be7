"""A class in one step: ``cnnlab users import`` of a roster, password resets, sessions.

The CLI runs in subprocesses, as an operator types it; the Class view's reset runs in
AppTest as a teacher, and cnnlab refuses a student's (cnnlab.people.roster).
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import APPTEST_TIMEOUT, ROOT, plain

from cnnlab.model.config import PRESETS
from cnnlab.people import access, accounts, roster, sessions
from cnnlab.people.accounts import User
from cnnlab.runs import store as runs
from pages import state

ANN, BOB, KIM = User("ann", "student"), User("bob", "student"), User("kim", "teacher")
PASSWORDS = {"ann": "ann-password-1", "bob": "bob-password-2", "kim": "kim-password-3"}


def users(accounts_file: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """``python -m cnnlab users ARGS --accounts-file ACCOUNTS_FILE``, run from tmp."""
    return subprocess.run([sys.executable, "-m", "cnnlab", "users", *args,
                           "--accounts-file", str(accounts_file)], input=stdin,
                          capture_output=True, text=True, cwd=accounts_file.parent, timeout=120)


@pytest.fixture
def accounts_file(tmp_path: Path) -> Path:
    """An accounts file holding ann, bob (students) and kim (teacher)."""
    path = tmp_path / "accounts.json"
    store = accounts.Accounts(path)
    for user in (ANN, BOB, KIM):
        store.add(user.name, PASSWORDS[user.name], teacher=user.is_teacher)
    return path


def printed_table(stdout: str) -> list[list[str]]:
    """The rows of the NAME ROLE PASSWORD table the import prints."""
    lines = stdout.splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "PASSWORD"]
    return [line.split() for line in lines[1:lines.index("")]]


# --------------------------------------------------------------------------- import


def test_a_30_row_roster_makes_every_account_with_a_password_printed_once(
        tmp_path: Path) -> None:
    path = tmp_path / "accounts.json"
    names = [f"student{n:02d}" for n in range(1, 29)] + ["kim.minji", "lee@school.example"]
    students = (f"Student{n:02d}," if n % 2 else f"student{n:02d},student" for n in range(1, 29))
    lines = ["name,role", *students, "kim.minji,Teacher", "lee@school.example,teacher"]
    (tmp_path / "roster.csv").write_text("\n".join(lines) + "\n\n")

    done = users(path, "import", "roster.csv")
    assert done.returncode == 0, done.stderr
    rows = printed_table(done.stdout)
    assert [r[0] for r in rows] == names
    assert [r[1] for r in rows] == ["student"] * 28 + ["teacher"] * 2
    assert "30 accounts created" in done.stdout and "28 students, 2 teachers" in done.stdout
    store = accounts.Accounts(path)
    assert [(u.name, u.role) for u in store.users()] == sorted(
        (r[0], r[1]) for r in rows)
    stored = path.read_text()
    for name, role, password in rows:
        assert len(password) >= 12 and done.stdout.count(password) == 1
        assert password not in stored  # only hashes are kept
        assert store.verify(name, password) == User(name, role)
    assert len({r[2] for r in rows}) == 30


def test_the_import_prints_one_json_object(tmp_path: Path) -> None:
    path = tmp_path / "accounts.json"
    (tmp_path / "roster.csv").write_text("\ufeffann\r\nbob,,\r\n")  # Excel's BOM and CRLF
    done = users(path, "import", "roster.csv", "--json")
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert [(u["name"], u["role"]) for u in payload["imported"]] == [("ann", "student"),
                                                                       ("bob", "student")]
    assert payload["accounts_file"] == str(path)
    for u in payload["imported"]:
        assert accounts.Accounts(path).verify(u["name"], u["password"])


@pytest.mark.parametrize("roster_text, bad", [
    ("ann.new\nbob.new\nann.new,teacher\n", {3: "'ann.new' is already on line 1"}),
    ("name,role\nann.new\nBad Name!\ncarl\n", {3: "the name 'Bad Name!' is not allowed"}),
    ("ann.new,student\nbob.new,admin\n", {2: "the role 'admin' is not known"}),
    ("ann.new\n../etc,teacher\nbob.new,boss\nann.new\nkim\nx,y,z\n",
     {2: "'../etc' is not allowed", 3: "'boss' is not known", 4: "already on line 1",
      5: "already an account 'kim'", 6: "3 cells"}),
    ("\n\n", {1: "holds no names"}),
])
def test_a_bad_roster_is_refused_whole_naming_every_bad_line(
        accounts_file: Path, roster_text: str, bad: dict[int, str]) -> None:
    (accounts_file.parent / "roster.csv").write_text(roster_text)
    before = accounts_file.read_bytes()
    out = accounts_file.parent / "passwords.csv"
    for extra in ([], ["--passwords-out", out.name]):
        refused = users(accounts_file, "import", "roster.csv", *extra)
        assert refused.returncode == 2 and refused.stdout == ""
        assert refused.stderr.startswith("error: No account was created")
        for line, why in bad.items():
            assert f"line {line}: " in refused.stderr and why in refused.stderr, refused.stderr
        named = {int(w.split()[1].rstrip(":")) for w in refused.stderr.splitlines()[1:]}
        assert named == set(bad)  # each bad line, and no good one
        assert accounts_file.read_bytes() == before  # nothing created
        assert not out.exists()  # a refused roster leaves no passwords file


def test_passwords_out_is_owner_only_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "accounts.json"
    (tmp_path / "roster.csv").write_text("ann\nkim,teacher\n")
    done = users(path, "import", "roster.csv", "--passwords-out", "pw.csv")
    assert done.returncode == 0, done.stderr
    written = tmp_path / "pw.csv"
    assert written.stat().st_mode & 0o777 == 0o600
    rows = list(csv.DictReader(io.StringIO(written.read_text())))
    assert [(r["name"], r["role"]) for r in rows] == [("ann", "student"), ("kim", "teacher")]
    for r in rows:
        assert r["password"] not in done.stdout  # shown in the file only
        assert accounts.Accounts(path).verify(r["name"], r["password"])
    assert "pw.csv, readable only by you" in done.stdout

    (tmp_path / "more.csv").write_text("bob\n")
    kept = written.read_text()
    again = users(path, "import", "more.csv", "--passwords-out", "pw.csv")
    assert again.returncode == 2 and "exists already; it is never overwritten" in again.stderr
    assert written.read_text() == kept
    assert [u.name for u in accounts.Accounts(path).users()] == ["ann", "kim"]  # no bob


def test_a_missing_or_unreadable_roster_is_one_error_line(tmp_path: Path) -> None:
    path = tmp_path / "accounts.json"
    missing = users(path, "import", "nope.csv")
    assert missing.returncode == 2 and missing.stderr.startswith("error: cannot read the roster")
    (tmp_path / "latin1.csv").write_bytes("jos\xe9\n".encode("latin-1"))
    latin = users(path, "import", "latin1.csv")
    assert latin.returncode == 2 and "save it as CSV UTF-8" in latin.stderr
    assert users(path, "list", "--passwords-out", "x.csv").returncode == 2
    assert not path.exists()


# --------------------------------------------------------------------------- reset and sessions


def test_reset_gives_a_new_password_and_ends_only_that_persons_sessions(
        accounts_file: Path) -> None:
    live = sessions.Sessions(sessions.store_path(accounts_file))
    ann_tokens = [live.start("ann"), live.start("ann")]
    bob_token = live.start("bob")
    done = users(accounts_file, "reset", "Ann", "--json")
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["reset"] == "ann"
    store = accounts.Accounts(accounts_file)
    assert store.verify("ann", PASSWORDS["ann"]) is None
    assert store.verify("ann", payload["password"]) == ANN
    assert [live.user_for(t) for t in ann_tokens] == [None, None]
    assert live.user_for(bob_token) == "bob"

    text = users(accounts_file, "reset", "bob")
    new = text.stdout.splitlines()[0].removeprefix("new password for bob: ")
    assert text.returncode == 0 and text.stdout.count(new) == 1 and "only this once" in text.stdout
    assert store.verify("bob", new) == BOB and live.user_for(bob_token) is None
    unknown = users(accounts_file, "reset", "nobody")
    assert unknown.returncode == 2 and "There is no account 'nobody'" in unknown.stderr


def test_the_sessions_command_lists_and_ends_sessions(accounts_file: Path) -> None:
    live = sessions.Sessions(sessions.store_path(accounts_file))
    first, second, bobs = live.start("ann"), live.start("ann"), live.start("bob")
    listed = json.loads(users(accounts_file, "sessions", "--json").stdout)["sessions"]
    assert [s["user"] for s in listed] == ["ann", "ann", "bob"]
    assert set(listed[0]) == {"id", "user", "created", "expires"}
    table = users(accounts_file, "sessions")
    assert table.returncode == 0 and all(s["id"] in table.stdout for s in listed)

    one = users(accounts_file, "sessions", "--revoke", listed[0]["id"])
    assert one.returncode == 0 and f"ended session {listed[0]['id']}" in one.stdout
    assert live.user_for(first) is None and live.user_for(second) == "ann"
    again = users(accounts_file, "sessions", "--revoke", listed[0]["id"])
    assert again.returncode == 2 and "no live session" in again.stderr

    bob = users(accounts_file, "sessions", "--user", "bob", "--json")
    assert json.loads(bob.stdout)["revoked"] == 1 and live.user_for(bobs) is None
    assert live.user_for(second) == "ann"
    assert users(accounts_file, "sessions", "ann").returncode == 2  # a name needs --user


def test_removing_an_account_ends_its_sessions(accounts_file: Path) -> None:
    live = sessions.Sessions(sessions.store_path(accounts_file))
    ann, bob = live.start("ann"), live.start("bob")
    done = users(accounts_file, "remove", "ann")
    assert done.returncode == 0 and "sessions have ended" in done.stdout
    assert live.user_for(ann) is None and live.user_for(bob) == "bob"


def test_only_a_teacher_resets_and_only_a_students_password(accounts_file: Path) -> None:
    store = accounts.Accounts(accounts_file)
    with pytest.raises(access.AccessDenied, match="only a teacher may"):
        roster.reset_password(ANN, store, "bob")
    with pytest.raises(access.AccessDenied, match="kim is a teacher"):
        roster.reset_password(KIM, store, "kim")
    with pytest.raises(accounts.AccountError, match="no account 'nobody'"):
        roster.reset_password(KIM, store, "nobody")
    assert store.verify("bob", PASSWORDS["bob"]) == BOB
    assert store.verify("kim", PASSWORDS["kim"]) == KIM
    new = roster.reset_password(KIM, store, "Bob")
    assert store.verify("bob", new) == BOB


# --------------------------------------------------------------------------- the Class view


@pytest.fixture
def class_server(accounts_file: Path, runs_root: Path, monkeypatch) -> Path:
    """Class mode with local accounts and one run of Ann's, so the Runs page shows it all."""
    monkeypatch.setenv("CNNLAB_SIGN_IN", "accounts")
    monkeypatch.setenv("CNNLAB_ACCOUNTS_FILE", str(accounts_file))
    run_dir = runs.create_run(runs_root, {"name": "ann-run", "owner": "ann",
                                          "dataset": "mnist_sample", "preset": "quick",
                                          "model": PRESETS["quick"].config.to_dict()})
    runs.update_status(run_dir, status="stopped")
    return accounts_file


def runs_page(user: User):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "pages/runs.py"), default_timeout=APPTEST_TIMEOUT)
    at.session_state[state.USER_KEY] = user
    return at.run()


def test_a_teacher_resets_a_students_password_in_the_class_view(class_server: Path) -> None:
    live = sessions.Sessions(sessions.store_path(class_server))
    bobs, anns = live.start("bob"), live.start("ann")
    at = runs_page(KIM)
    assert not at.exception, at.exception
    assert at.selectbox(key="class_reset_student").options == ["ann", "bob"]  # no teacher
    at.selectbox(key="class_reset_student").select("bob")
    at.button(key="class_reset_password").click().run()
    assert not at.exception, at.exception
    assert len(at.code) == 1
    password = at.code[0].value
    store = accounts.Accounts(class_server)
    assert store.verify("bob", password) == BOB
    assert store.verify("bob", PASSWORDS["bob"]) is None
    assert live.user_for(bobs) is None and live.user_for(anns) == "ann"
    assert any("shown only now" in plain(s.value) for s in at.success)
    at.run()  # any next click: the password is gone from the page
    assert not at.code


def test_a_student_has_no_class_view_reset(class_server: Path) -> None:
    at = runs_page(ANN)
    assert not at.exception, at.exception
    assert not [b for b in at.button if b.key == "class_reset_password"]
