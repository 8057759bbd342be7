"""Sign-in, ownership and roles: accounts, slowed sign-in, who may act on a run, and what
students and teachers see on the pages (class mode with local accounts; personal mode is
covered by every other test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import APPTEST_TIMEOUT, ROOT, plain

from cnnlab.data import datasets
from cnnlab.data.datasets import UPLOAD_PREFIX
from cnnlab.model.config import PRESETS
from cnnlab.model.fit_settings import FitSettings
from cnnlab.people import access, accounts
from cnnlab.people.accounts import LOCAL_USER, User
from cnnlab.runs import store as runs
from cnnlab.train import callbacks, jobs, training
from cnnlab.use import compare
from pages import state

ANN, BOB, TEACHER = User("ann", "student"), User("bob", "student"), User("kim", "teacher")
PASSWORDS = {"ann": "ann-password-1", "bob": "bob-password-2", "kim": "kim-password-3"}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def accounts_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Class mode with local accounts ann, bob (students) and kim (teacher)."""
    path = tmp_path / "accounts.json"
    store = accounts.Accounts(path)
    for user in (ANN, BOB, TEACHER):
        store.add(user.name, PASSWORDS[user.name], teacher=user.is_teacher)
    monkeypatch.setenv("CNNLAB_SIGN_IN", "accounts")
    monkeypatch.setenv("CNNLAB_ACCOUNTS_FILE", str(path))
    from pages import signin_routes

    # Failed sign-ins of earlier tests do not count here.
    monkeypatch.setattr(signin_routes, "THROTTLE", accounts.Throttle())
    return path


# --------------------------------------------------------------------------- accounts


def test_the_accounts_file_holds_argon2_hashes_only(accounts_file: Path) -> None:
    text = accounts_file.read_text()
    assert not any(p in text for p in PASSWORDS.values())
    users = json.loads(text)["users"]
    assert all(u["hash"].startswith("$argon2id$") for u in users.values())
    assert accounts_file.stat().st_mode & 0o077 == 0  # owner-only
    store = accounts.Accounts(accounts_file)
    assert store.verify("Ann", PASSWORDS["ann"]) == ANN
    assert store.verify("ann", "wrong-password") is None
    assert store.verify("nobody", PASSWORDS["ann"]) is None
    assert [u.name for u in store.users()] == ["ann", "bob", "kim"]


def test_bad_account_names_and_passwords_are_refused(tmp_path: Path) -> None:
    store = accounts.Accounts(tmp_path / "a.json")
    with pytest.raises(accounts.AccountError, match="at least 8"):
        store.add("ann", "short")
    with pytest.raises(accounts.AccountError, match="is not allowed"):
        store.add("../ann", "long-enough-1")
    store.add("ann", "long-enough-1")
    with pytest.raises(accounts.AccountError, match="already an account 'ann'"):
        store.add("ann", "long-enough-2")


def test_a_wrong_password_is_refused_and_slowed(accounts_file: Path) -> None:
    clock = Clock()
    throttle = accounts.Throttle(clock)
    store = accounts.Accounts(accounts_file)

    def attempt(password: str, name: str = "ann", address: str = "10.0.0.7") -> User:
        return accounts.sign_in(store, throttle, name, password, address)

    with pytest.raises(accounts.SignInRefused, match="Wrong name or password.*in 1 s"):
        attempt("guess-1")
    # Right away, even the right password waits: guessing costs time.
    with pytest.raises(accounts.SignInRefused, match="wait 1 s"):
        attempt(PASSWORDS["ann"])
    clock.now += 1
    with pytest.raises(accounts.SignInRefused, match="in 2 s"):
        attempt("guess-2")
    clock.now += 2
    with pytest.raises(accounts.SignInRefused, match="in 4 s"):
        attempt("guess-3")
    clock.now += 4
    assert attempt(PASSWORDS["ann"]) == ANN  # and success forgets the account's failures
    assert throttle.wait("account:ann") == 0
    # One address guessing many accounts: free failures (a class shares an address), then
    # waits for every account from there.
    for n in range(accounts.ADDRESS_FREE_FAILURES):
        clock.now += 100
        with pytest.raises(accounts.SignInRefused, match="Wrong"):
            attempt("guess", name=f"user{n}", address="10.0.0.9")
    clock.now += 100
    with pytest.raises(accounts.SignInRefused, match="Wrong"):
        attempt("guess", name="user-next", address="10.0.0.9")
    with pytest.raises(accounts.SignInRefused, match="wait"):
        attempt(PASSWORDS["bob"], name="bob", address="10.0.0.9")
    assert attempt(PASSWORDS["bob"], name="bob", address="10.0.0.10") == BOB


@pytest.mark.slow
def test_the_users_command_reads_passwords_from_stdin(tmp_path: Path) -> None:
    path = tmp_path / "class.json"

    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cnnlab", "users", *args,
                               "--accounts-file", str(path), "--json"], input=stdin,
                              capture_output=True, text=True, cwd=ROOT, timeout=60)

    added = cli("add", "Lee", "--teacher", stdin="lee-password-9\n")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout) == {"added": "lee", "role": "teacher",
                                        "accounts_file": str(path)}
    assert cli("add", "ann", stdin="ann-password-1\n").returncode == 0
    assert "lee-password-9" not in path.read_text()
    listed = json.loads(cli("list").stdout)["users"]
    assert listed == [{"name": "ann", "role": "student"}, {"name": "lee", "role": "teacher"}]
    again = cli("add", "ann", stdin="other-password\n")
    assert again.returncode == 2 and "already an account 'ann'" in again.stderr
    assert cli("remove", "ann").returncode == 0
    assert [u["name"] for u in json.loads(cli("list").stdout)["users"]] == ["lee"]


def test_settings_come_from_secrets_and_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("CNNLAB_SIGN_IN", raising=False)
    monkeypatch.delenv("CNNLAB_ACCOUNTS_FILE", raising=False)
    assert not access.load_settings(tmp_path / "none.toml").class_mode
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[class]\nsign_in = "openid"\nteachers = ["Kim@School.example"]\n')
    settings = access.load_settings(secrets)
    assert settings.sign_in == "openid" and settings.class_mode
    assert access.openid_user("kim@school.example", settings).is_teacher
    assert not access.openid_user("ann@school.example", settings).is_teacher
    with pytest.raises(access.AccessDenied, match="is not verified"):
        access.openid_user("kim@school.example", settings, verified=False)
    secrets.write_text('[class]\nsign_in = "magic"\n')
    with pytest.raises(ValueError, match="'magic' is not known"):
        access.load_settings(secrets)
    monkeypatch.setenv("CNNLAB_SIGN_IN", "accounts")
    assert access.load_settings(secrets).sign_in == "accounts"


def test_students_never_see_server_paths() -> None:
    message = "The runs folder /srv/cnnlab/runs cannot be used (see ~/cnnlab.log); b/3.png"
    assert access.for_viewer(message, TEACHER) == message
    assert access.for_viewer(message, ANN) == "The runs folder … cannot be used (see …); b/3.png"


# --------------------------------------------------------------------------- ownership in cnnlab


@pytest.fixture(scope="module")
def sample() -> datasets.Dataset:
    ds = datasets.load("mnist_sample")
    return datasets.Dataset(ds.info, ds.x_train[:300], ds.y_train[:300], ds.x_test[:100],
                            ds.y_test[:100])


def request(name: str, epochs: int = 1) -> training.TrainRequest:
    return training.TrainRequest(dataset="mnist_sample", config=PRESETS["quick"].config,
                                 fit=FitSettings(batch_size=32, epochs=epochs), limit=300,
                                 name=name)


def owned_run(root: Path, owner: User, sample, status: str = "finished",
              dataset: str = "mnist_sample") -> Path:
    """A run of ``owner`` as the engine leaves it, with a resumable checkpoint stand-in."""
    req = request(f"{owner.name}-run", epochs=3)
    run_dir = runs.create_run(root, {**training.run_config(req, sample, owner=owner.name),
                                     "dataset": dataset})
    runs.update_status(run_dir, status=status)
    (run_dir / callbacks.LAST_FILE).write_bytes(b"stand-in checkpoint")
    (run_dir / callbacks.CHECKPOINT_FILE).write_text(json.dumps({"epoch": 1, "history": []}))
    runs.best_model_path(run_dir).write_bytes(b"stand-in model")
    return run_dir


def test_only_the_owner_or_a_teacher_may_rename_or_delete(runs_root: Path, sample) -> None:
    run_dir = owned_run(runs_root, ANN, sample)
    with pytest.raises(access.AccessDenied, match="You cannot rename run .* it is not yours"):
        runs.rename_run(runs_root, run_dir.name, "mine now", BOB)
    with pytest.raises(access.AccessDenied, match="You cannot delete run"):
        runs.delete_run(runs_root, run_dir.name, BOB)
    assert runs.load_status(run_dir).get("name") != "mine now" and run_dir.is_dir()
    assert runs.rename_run(runs_root, run_dir.name, "ann's best", ANN)["name"] == "ann's best"
    assert runs.rename_run(runs_root, run_dir.name, "checked", TEACHER)["name"] == "checked"
    runs.delete_run(runs_root, run_dir.name, TEACHER)
    assert not run_dir.exists()
    # Runs from before sign-in belong to the personal-mode user: only teachers manage them.
    old = owned_run(runs_root, LOCAL_USER, sample)
    with pytest.raises(access.AccessDenied):
        runs.delete_run(runs_root, old.name, ANN)


@pytest.mark.slow
def test_only_the_owner_or_a_teacher_may_stop_resume_or_fine_tune(runs_root: Path,
                                                                   sample) -> None:
    manager = jobs.Engine(runs_root)
    try:
        first = manager.submit(request("ann-first", epochs=2), sample, user=ANN)
        queued = manager.submit(request("ann-second"), sample, user=ANN)
        assert first.owner == queued.owner == "ann"
        assert runs.load_config(first.run_dir)["owner"] == "ann"
        with pytest.raises(access.AccessDenied, match="You cannot stop run"):
            manager.stop(queued.run_id, BOB)
        assert not queued.done()
        manager.stop(queued.run_id, ANN)
        assert queued.done() and queued.result.status == "stopped"
        manager.stop(first.run_id, TEACHER)
        assert first.wait(240) and first.result.status in ("stopped", "finished")

        stopped = owned_run(runs_root, ANN, sample, status="stopped")
        with pytest.raises(access.AccessDenied, match="You cannot resume run"):
            manager.resume(stopped, sample, user=BOB)
        with pytest.raises(access.AccessDenied, match="You cannot fine-tune from run"):
            manager.fine_tune(stopped, sample, epochs=1, user=BOB)
        assert runs.load_status(stopped)["status"] == "stopped"  # nothing was queued
        child = manager.fine_tune(stopped, sample, epochs=1, user=TEACHER)
        assert child.owner == "kim" and runs.load_config(child.run_dir)["parent"] == stopped.name
        manager.stop(child.run_id, TEACHER)
        child.wait(240)
        # The per-user cap counts per person: Bob is not blocked by Ann's runs.
        assert manager.active_for("bob") == []
    finally:
        manager.close()


def test_upload_images_are_for_their_owner_and_teachers() -> None:
    upload = f"{UPLOAD_PREFIX}photos.zip"
    assert access.can_see_images(ANN, upload, "ann")
    assert not access.can_see_images(BOB, upload, "ann")
    assert access.can_see_images(TEACHER, upload, "ann")
    assert access.can_see_images(BOB, "mnist", "ann")


def test_usage_sums_runs_and_minutes_per_person() -> None:
    rows = [{"owner": "ann", "status": "finished", "device": "CPU", "seconds": 120.0},
            {"owner": "ann", "status": "running", "device": "GPU 0 (H100)", "seconds": 60.0},
            {"owner": "bob", "status": "failed", "device": "", "seconds": None}]
    assert compare.usage(rows) == [
        {"owner": "ann", "runs": 2, "active": 1, "cpu_minutes": 2.0, "gpu_minutes": 1.0},
        {"owner": "bob", "runs": 1, "active": 0, "cpu_minutes": 0.0, "gpu_minutes": 0.0}]


# --------------------------------------------------------------------------- the pages


def app_test(path: str = "app.py", user: User | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / path), default_timeout=APPTEST_TIMEOUT)
    if user is not None:
        at.session_state[state.USER_KEY] = user
    return at


def form_of(at) -> str:
    """The sign-in form's HTML (a plain form: the sign-in route sets the session cookie)."""
    (form,) = [h.proto.body for h in at.get("html") if 'action="/signin"' in h.proto.body]
    return form


def test_signed_out_the_app_shows_the_form_and_nothing_else(accounts_file: Path,
                                                             runs_root: Path,
                                                             monkeypatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(runs_root / "no-keras"))
    at = app_test().run()
    assert not at.exception, at.exception
    form = form_of(at)
    assert 'name="username"' in form and 'type="password"' in form
    assert 'name="next" value="/"' in form  # back to this address once signed in
    assert not at.get("page_link") and not at.text_input


def test_signed_in_the_sidebar_names_the_person_and_signs_out(accounts_file: Path,
                                                               runs_root: Path) -> None:
    at = app_test(user=ANN).run()
    assert not at.exception, at.exception
    assert any("Signed in as" in c.value and "ann" in c.value for c in at.sidebar.caption)
    assert any('action="/signout"' in h.proto.body for h in at.sidebar.get("html"))


def test_a_page_opened_directly_asks_for_sign_in(accounts_file: Path, runs_root: Path) -> None:
    at = app_test("pages/runs.py").run()
    assert not at.exception, at.exception
    assert 'name="password"' in form_of(at)
    assert not at.dataframe


@pytest.fixture
def class_runs(runs_root: Path, sample) -> dict[str, Path]:
    """Ann's stopped run on her own upload (with mistakes) and Bob's stopped run."""
    ann = owned_run(runs_root, ANN, sample, status="stopped", dataset=f"{UPLOAD_PREFIX}ann.zip")
    runs.save_metrics(ann, {"test_accuracy": 0.5, "confusion": [[1, 1], [0, 2]],
                            "class_names": ["cat", "dog"], "per_class": [],
                            "mistakes": [{"index": 0, "true": 0, "predicted": 1,
                                          "confidence": 0.9}]})
    runs.rename_run(runs_root, ann.name, "ann-photos", ANN)
    bob = owned_run(runs_root, BOB, sample, status="stopped")
    runs.rename_run(runs_root, bob.name, "bob-digits", BOB)
    return {"ann": ann, "bob": bob}


def open_run(user: User, run_dir: Path, scope: str | None = None):
    at = app_test("pages/runs.py", user)
    if scope:
        at.session_state["runs_scope"] = scope
    at.query_params["run"] = run_dir.name
    return at.run()


def manage_buttons(at) -> set[str]:
    labels = {b.label for b in at.button}
    return labels & {"Rename", "Resume from the last epoch", "Fine-tune from best",
                     "Delete this run…"}


def test_a_student_reads_but_cannot_manage_anothers_run(accounts_file, class_runs) -> None:
    at = open_run(BOB, class_runs["ann"])
    assert not at.exception, at.exception
    assert at.radio(key="runs_scope").value == "Everyone"  # the link switched the scope
    assert "ann-photos" in [plain(h.value) for h in at.subheader]
    assert manage_buttons(at) == set()
    assert any("This is ann's run" in plain(i.value) for i in at.info)
    # Ann's private upload: numbers yes, images never.
    assert any("only they and teachers see its images" in i.value for i in at.info)
    assert not any(c.key == "runs_mistakes" for c in at.get("plotly_chart"))
    assert not any("/" in plain(c.value) and str(class_runs["ann"].parent) in c.value
                   for c in at.caption)


def test_a_students_own_runs_show_by_default_with_every_control(accounts_file,
                                                                class_runs) -> None:
    at = app_test("pages/runs.py", BOB).run()
    assert not at.exception, at.exception
    assert at.radio(key="runs_scope").value == "Mine"
    assert list(at.dataframe[0].value["owner"]) == ["bob"]
    assert manage_buttons(at) == {"Rename", "Resume from the last epoch",
                                  "Fine-tune from best", "Delete this run…"}
    assert str(class_runs["bob"].parent) not in " ".join(c.value for c in at.caption)


def test_a_teacher_manages_every_run_and_sees_the_class(accounts_file, class_runs) -> None:
    at = open_run(TEACHER, class_runs["ann"])
    assert not at.exception, at.exception
    assert manage_buttons(at) == {"Rename", "Resume from the last epoch",
                                  "Fine-tune from best", "Delete this run…"}
    usage = next(d.value for d in at.dataframe if "cpu_minutes" in d.value.columns)
    assert set(usage["owner"]) == {"ann", "bob"}
    assert str(class_runs["ann"].parent) in " ".join(c.value for c in at.caption)
    at.text_input(key=f"runs_rename_{class_runs['ann'].name}").input("checked by kim")
    next(b for b in at.button if b.label == "Rename").click().run()
    assert runs.load_config(class_runs["ann"])["name"] == "checked by kim"


@pytest.mark.slow
def test_the_train_page_shows_only_the_students_own_run(accounts_file, runs_root, sample,
                                                         monkeypatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(runs_root / "no-keras"))
    manager = jobs.engine_for(runs_root)  # the engine the pages use (pages/common.py)
    job = manager.submit(request("ann-live", epochs=2), sample, user=ANN)
    try:
        bob = app_test("pages/train.py", BOB).run()
        assert not bob.exception, bob.exception
        assert not any(b.label == "Stop" for b in bob.button)
        assert job.run_id not in " ".join(m.value for m in bob.markdown)
        ann = app_test("pages/train.py", ANN).run()
        assert not ann.exception, ann.exception
        assert job.done() or any(b.label == "Stop" for b in ann.button)
    finally:
        manager.stop(job.run_id, ANN)
        job.wait(240)
