"""Sign-in sessions (cnnlab.people.sessions) and the sign-in routes (pages/signin_routes.py):
tokens kept only as hashes, expiry, revocation, the cookie's flags, links kept, bad cookies."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import pytest
from starlette.applications import Starlette

with warnings.catch_warnings():  # Starlette's notice that it prefers httpx2 to httpx
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from cnnlab.people import access, accounts, sessions
from pages import signin_routes

PASSWORD = "ann-password-1"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> sessions.Sessions:
    return sessions.Sessions(tmp_path / "sessions.json", clock=Clock())


def test_a_token_signs_in_until_it_expires(store: sessions.Sessions) -> None:
    token = store.start("ann", hours=8)
    assert store.user_for(token) == "ann"
    store.clock.now += 8 * 3600 - 1  # type: ignore[attr-defined]
    assert store.user_for(token) == "ann"
    store.clock.now += 2  # type: ignore[attr-defined]
    assert store.user_for(token) is None
    assert store.live() == []


def test_only_the_hash_is_stored(store: sessions.Sessions) -> None:
    token = store.start("ann")
    text = store.path.read_text()
    assert token not in text and hashlib.sha256(token.encode()).hexdigest() in text
    assert store.path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("bad", ["", "forged", "x" * 300, None])
def test_forged_truncated_or_missing_tokens_sign_in_nobody(store: sessions.Sessions,
                                                           bad: str | None) -> None:
    token = store.start("ann")
    assert store.user_for(bad) is None
    assert store.user_for(token[:-3]) is None  # truncated
    assert store.user_for(token) == "ann"


def test_revoking_one_a_users_all_or_by_id(store: sessions.Sessions) -> None:
    a1, a2, b = store.start("ann"), store.start("ann"), store.start("bob")
    assert store.revoke(a1) and store.user_for(a1) is None and store.user_for(a2) == "ann"
    (bobs,) = [s for s in store.live() if s.user == "bob"]
    assert store.revoke_id(bobs.id) and store.user_for(b) is None
    store.start("ann")
    assert store.revoke_user("ann") == 2 and store.live() == []


def test_a_damaged_store_signs_nobody_in_and_recovers(store: sessions.Sessions) -> None:
    token = store.start("ann")
    store.path.write_text("{not json")
    assert store.user_for(token) is None
    assert store.user_for(store.start("ann")) == "ann"


# --------------------------------------------------------------------------- the routes


@pytest.fixture
def class_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "accounts.json"
    accounts.Accounts(path).add("ann", PASSWORD)
    monkeypatch.setenv("CNNLAB_SIGN_IN", "accounts")
    monkeypatch.setenv("CNNLAB_ACCOUNTS_FILE", str(path))
    monkeypatch.setattr(signin_routes, "THROTTLE", accounts.Throttle())
    return path


def client(base: str = "http://testserver") -> TestClient:
    return TestClient(Starlette(routes=signin_routes.ROUTES), base_url=base,
                      follow_redirects=False)


def test_sign_in_sets_an_httponly_lax_cookie_and_returns_to_the_link(class_mode: Path) -> None:
    out = client().post("/signin", data={"username": "ann", "password": PASSWORD,
                                         "next": "/runs?run=20261203-101500-quick-mnist"})
    assert out.status_code == 303
    assert out.headers["location"] == "/runs?run=20261203-101500-quick-mnist"
    cookie = out.headers["set-cookie"]
    assert cookie.startswith(f"{sessions.COOKIE}=") and "HttpOnly" in cookie
    assert "SameSite=lax" in cookie and "Secure" not in cookie and "Path=/" in cookie
    assert f"Max-Age={8 * 3600}" in cookie
    token = out.cookies[sessions.COOKIE]
    user = access.session_user(access.load_settings(), token)
    assert user is not None and user.name == "ann" and user.role == "student"


def test_the_cookie_is_secure_over_https(class_mode: Path) -> None:
    for c, headers in ((client("https://lab.example"), {}),
                       (client(), {"x-forwarded-proto": "https"})):
        out = c.post("/signin", data={"username": "ann", "password": PASSWORD, "next": "/"},
                     headers=headers)
        assert out.status_code == 303 and "Secure" in out.headers["set-cookie"]


def test_a_wrong_password_shows_the_form_again_with_the_link(class_mode: Path) -> None:
    out = client().post("/signin", data={"username": "ann", "password": "not-hers-at-all",
                                         "next": "/predict?run=r1"})
    assert out.status_code == 401 and "set-cookie" not in out.headers
    assert "Wrong name or password" in out.text
    assert 'name="next" value="/predict?run=r1"' in out.text and "Traceback" not in out.text


@pytest.mark.parametrize("next_url", ["https://evil.example/", "//evil.example/x", "javascript:x"])
def test_sign_in_never_sends_the_browser_to_another_site(class_mode: Path,
                                                         next_url: str) -> None:
    out = client().post("/signin", data={"username": "ann", "password": PASSWORD,
                                         "next": next_url})
    assert out.status_code == 303 and out.headers["location"] == "/"


def test_a_sign_in_posted_from_another_site_is_refused(class_mode: Path) -> None:
    out = client().post("/signin", data={"username": "ann", "password": PASSWORD},
                        headers={"origin": "https://evil.example"})
    assert out.status_code == 403 and "set-cookie" not in out.headers


def test_sign_out_revokes_the_session_and_clears_the_cookie(class_mode: Path) -> None:
    c = client()
    token = c.post("/signin", data={"username": "ann", "password": PASSWORD}
                   ).cookies[sessions.COOKIE]
    out = c.post("/signout")  # the client sends the cookie it was given
    assert out.status_code == 303 and out.headers["location"] == "/"
    assert f'{sessions.COOKIE}=""' in out.headers["set-cookie"]
    assert access.session_user(access.load_settings(), token) is None
    stored = json.loads(sessions.store_path(class_mode).read_text())["sessions"]
    assert stored == {}


def test_a_removed_account_signs_in_no_more(class_mode: Path) -> None:
    token = client().post("/signin", data={"username": "ann", "password": PASSWORD}
                          ).cookies[sessions.COOKIE]
    settings = access.load_settings()
    assert access.session_user(settings, token) is not None
    data = json.loads(class_mode.read_text())
    del data["users"]["ann"]  # as if the file were edited by hand
    class_mode.write_text(json.dumps(data))
    assert access.session_user(settings, token) is None


def test_session_hours_is_an_operator_setting(class_mode: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_SESSION_HOURS", "1.5")
    out = client().post("/signin", data={"username": "ann", "password": PASSWORD})
    assert f"Max-Age={int(1.5 * 3600)}" in out.headers["set-cookie"]
    monkeypatch.setenv("CNNLAB_SESSION_HOURS", "forever")
    with pytest.raises(ValueError, match="session_hours 'forever'.*session_hours = 8"):
        access.load_settings()


def test_a_right_password_right_after_a_wrong_one_waits(class_mode: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    c = client()
    wrong = c.post("/signin", data={"username": "ann", "password": "not-hers-at-all"})
    assert wrong.status_code == 401 and "Wrong name or password" in wrong.text
    too_soon = c.post("/signin", data={"username": "ann", "password": PASSWORD})
    assert too_soon.status_code == 401 and "wait 1 s" in too_soon.text
    monkeypatch.setattr(signin_routes, "THROTTLE", accounts.Throttle())  # a second later
    assert c.post("/signin", data={"username": "ann", "password": PASSWORD}).status_code == 303
