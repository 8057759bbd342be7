"""Real browser, class mode with OpenID Connect: the real ``st.login`` / ``st.logout`` path
through Streamlit's auth routes and Authlib, against a tiny provider this test serves.

The provider (stdlib ``http.server`` in a thread) speaks just enough OIDC for Authlib: the
discovery document, an /authorize that signs in at once as ``PROVIDER.email``, a /token
that checks the client, the code, the redirect URI and the PKCE verifier and returns an
RS256 id_token (joserfc, the library Authlib itself verifies with), its /jwks, a
/userinfo and an /end_session for RP-initiated logout. Anything it refuses is recorded in
``PROVIDER.errors`` so a failure says what went wrong on the provider's side.

Streamlit runs from a temporary working directory whose ``.streamlit/secrets.toml`` holds
``[class] sign_in = "openid"`` and the ``[auth]`` table, because the redirect URI must name
the server's port.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import pytest
from conftest import ROOT, SHARED_KERAS, TEST_OUTPUT, _free_port, served_app, wait_until

# st.login needs streamlit[auth] (Authlib, which verifies with joserfc, and httpx), which
# cnnlab's dependencies install: a missing one is a failure here, not a skip.
from joserfc import jwk
from joserfc import jwt as jose_jwt

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

pytestmark = pytest.mark.browser


TEACHER = "kim@school.example"
STUDENT = "ann@school.example"
CLIENT_ID = "cnnlab-test"
CLIENT_SECRET = secrets.token_urlsafe(24)


# ------------------------------------------------------------------------ the OIDC provider


@dataclass
class Provider:
    """What the local provider knows: who signs in next, and what happened so far."""

    email: str = TEACHER
    forge: str | None = None  # one of FORGERIES: the next id_token is wrong in that way
    issuer: str = ""
    key: jwk.RSAKey = field(
        default_factory=lambda: jwk.RSAKey.generate_key(2048, {"kid": "test-key-1"},
                                                        private=True))
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    tokens_issued: list[str] = field(default_factory=list)
    logouts: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def metadata(self) -> dict[str, object]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "end_session_endpoint": f"{self.issuer}/end_session",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile"],
            "token_endpoint_auth_methods_supported": ["client_secret_post",
                                                      "client_secret_basic"],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": ["sub", "email", "name"],
        }

    def authorize(self, query: dict[str, str]) -> str:
        """The redirect back to the app with a fresh code (or an error, recorded)."""
        self.authorize_requests.append(query)
        redirect_uri = query.get("redirect_uri", "")
        problem = (
            "client_id" if query.get("client_id") != CLIENT_ID
            else "response_type" if query.get("response_type") != "code"
            else "scope" if "openid" not in query.get("scope", "").split()
            else "nonce" if not query.get("nonce")
            else "state" if not query.get("state")
            else "redirect_uri" if not redirect_uri.endswith("/oauth2callback")
            else None
        )
        if problem:
            self.errors.append(f"/authorize: bad {problem} in {query}")
            return f"{redirect_uri}?{urlencode({'error': 'invalid_request'})}"
        code = secrets.token_urlsafe(16)
        self.codes[code] = {"email": self.email, **query}
        return f"{redirect_uri}?{urlencode({'code': code, 'state': query['state']})}"

    def token(self, form: dict[str, str], authorization: str | None
              ) -> tuple[int, dict[str, object]]:
        """The token response for an authorization code, or (400, an OAuth error)."""
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.startswith("Basic "):
            pair = base64.b64decode(authorization[6:]).decode()
            client_id, _, client_secret = (unquote(p) for p in pair.partition(":"))
        if (client_id, client_secret) != (CLIENT_ID, CLIENT_SECRET):
            return self._refuse("invalid_client", f"client {client_id!r}")
        if form.get("grant_type") != "authorization_code":
            return self._refuse("unsupported_grant_type", form.get("grant_type"))
        request = self.codes.pop(form.get("code", ""), None)  # a code works once
        if request is None:
            return self._refuse("invalid_grant", "unknown or used code")
        if form.get("redirect_uri") != request["redirect_uri"]:
            return self._refuse("invalid_grant", f"redirect_uri {form.get('redirect_uri')}")
        if "code_challenge" in request:
            digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
            if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != \
                    request["code_challenge"]:
                return self._refuse("invalid_grant", "PKCE code_verifier does not match")
        now = int(time.time())
        email = request["email"]
        claims = {"iss": self.issuer, "sub": f"sub-{email}", "aud": CLIENT_ID,
                  "iat": now, "exp": now + 300, "nonce": request["nonce"],
                  "email": email, "email_verified": True, "name": email.split("@")[0]}
        key = self.key
        if self.forge == "nonce":  # a replayed token, or one meant for another sign-in
            claims["nonce"] = "not-the-nonce-streamlit-sent"
        elif self.forge == "audience":  # issued to another application
            claims["aud"] = "another-client"
        elif self.forge == "expired":  # well past Authlib's 120 s leeway
            claims.update(iat=now - 3600, exp=now - 1800)
        elif self.forge == "signature":  # same kid, but not the provider's key
            key = jwk.RSAKey.generate_key(2048, {"kid": self.key.kid}, private=True)
        header = {"alg": "RS256", "kid": self.key.kid}
        self.tokens_issued.append(email)
        return 200, {"access_token": secrets.token_urlsafe(24), "token_type": "Bearer",
                     "expires_in": 300, "id_token": jose_jwt.encode(header, claims, key)}

    def _refuse(self, error: str, why: object) -> tuple[int, dict[str, object]]:
        self.errors.append(f"/token: {error}: {why}")
        return 400, {"error": error}


PROVIDER = Provider()
FORGERIES = ("nonce", "audience", "expired", "signature")
# Streamlit's log line when Authlib refuses a token (1.67); older releases (1.53) log the
# refusal as an uncaught exception of the callback route instead.
TOKEN_REFUSED = ("OAuth token exchange failed", "Uncaught exception GET /oauth2callback")


def refusals_logged(log: Path) -> int:
    """How many token refusals the server has logged."""
    text = log.read_text()
    return sum(text.count(line) for line in TOKEN_REFUSED)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/.well-known/openid-configuration":
            self._json(200, PROVIDER.metadata())
        elif url.path == "/jwks":
            self._json(200, {"keys": [PROVIDER.key.as_dict(private=False)]})
        elif url.path == "/authorize":
            self._redirect(PROVIDER.authorize(query))
        elif url.path == "/end_session":
            PROVIDER.logouts.append(query)
            self._redirect(query.get("post_logout_redirect_uri", "/"))
        elif url.path == "/userinfo":
            self._json(200, {"sub": f"sub-{PROVIDER.email}", "email": PROVIDER.email})
        else:
            self._json(404, {"error": "not_found"})

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        form = {k: v[0] for k, v in parse_qs(body).items()}
        if urlsplit(self.path).path == "/token":
            self._json(*PROVIDER.token(form, self.headers.get("Authorization")))
        else:
            self._json(404, {"error": "not_found"})

    def _json(self, status: int, payload: dict[str, object]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # the test reports what matters through PROVIDER.errors


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    PROVIDER.issuer = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield PROVIDER
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------- the Streamlit server


@dataclass
class Server:
    """A running `streamlit run`: its address, the runs root it serves and its log file."""

    url: str
    runs_dir: Path
    log: Path


@pytest.fixture(scope="module")
def openid_server(provider: Provider, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[Server]:
    """`streamlit run <ROOT>/app.py` from a temporary working directory set up for OpenID."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cwd = tmp_path_factory.mktemp("openid-cwd")
    (cwd / ".streamlit").mkdir()
    shutil.copy(ROOT / ".streamlit" / "config.toml", cwd / ".streamlit" / "config.toml")
    (cwd / ".streamlit" / "secrets.toml").write_text(f"""\
[class]
sign_in = "openid"
teachers = ["{TEACHER}"]

[auth]
redirect_uri = "{url}/oauth2callback"
cookie_secret = "{secrets.token_hex(32)}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
server_metadata_url = "{provider.issuer}/.well-known/openid-configuration"
""", encoding="utf-8")
    runs_dir = tmp_path_factory.mktemp("openid-runs")
    env = {k: v for k, v in os.environ.items()
           if k not in ("CNNLAB_SIGN_IN", "CNNLAB_ACCOUNTS_FILE")}  # secrets.toml decides
    env.update(CNNLAB_RUNS_DIR=str(runs_dir), NO_PROXY="127.0.0.1,localhost",
               no_proxy="127.0.0.1,localhost")
    if SHARED_KERAS.is_dir():
        env.setdefault("KERAS_HOME", str(SHARED_KERAS))
    log_path = cwd / "server.log"
    with served_app(port, cwd, env, log_path) as served:
        assert served == url
        yield Server(url, runs_dir, log_path)


# ------------------------------------------------------------------------------ the browser


@pytest.fixture
def people(_chromium, openid_server: Server, provider: Provider,
           request: pytest.FixtureRequest) -> Iterator[Callable[[str], Page]]:
    """Browser pages by name, each in its own context (cookies included); on failure each
    page's screenshot, the server log and the provider's refusals land in TEST_OUTPUT."""
    contexts: dict[str, tuple[BrowserContext, Page]] = {}

    def open_person(name: str) -> Page:
        context = _chromium.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(60_000)
        contexts[name] = (context, page)
        return page

    yield open_person
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        TEST_OUTPUT.mkdir(exist_ok=True)
        for name, (_, page) in contexts.items():
            page.screenshot(path=str(TEST_OUTPUT / f"openid-failed-{name}.png"),
                            full_page=True)
        shutil.copy(openid_server.log, TEST_OUTPUT / "openid-server.log")
        print("provider errors:", provider.errors)
        print(openid_server.log.read_text()[-6000:])
    for context, _ in contexts.values():
        context.close()


def through_provider(page: Page, server: Server, provider: Provider, email: str,
                     back_home: bool = True) -> None:
    """From the bare sign-in screen, click Sign in: through the provider and back to '/'
    (``back_home``; a refused token may leave the browser on Streamlit's callback page)."""
    provider.email = email
    page.goto(server.url)
    page.get_by_role("button", name="Sign in").wait_for()
    nav = page.get_by_test_id("stSidebarNavLink")
    assert nav.count() == 0, f"navigation shown before sign-in: {nav.all_inner_texts()}"
    assert page.get_by_text("Signed in as").count() == 0
    if not back_home:
        page.get_by_role("button", name="Sign in").click()
        return
    with page.expect_navigation(url=f"{server.url}/", timeout=60_000):
        page.get_by_role("button", name="Sign in").click()


def sign_in(page: Page, server: Server, provider: Provider, email: str) -> None:
    """Sign in as ``email``; a failure names what the provider refused."""
    through_provider(page, server, provider, email)
    try:
        signed_in_as(page)
    except Exception as exc:
        raise AssertionError(f"not signed in as {email}; provider errors: "
                             f"{provider.errors}") from exc
    assert provider.errors == [], provider.errors


def signed_in_as(page: Page) -> str:
    """The sidebar's 'Signed in as …' line as a reader sees it (markdown() puts an invisible
    word joiner after the '@' so the address does not become a mailto: link)."""
    caption = page.get_by_test_id("stSidebar").get_by_text("Signed in as")
    caption.wait_for()
    return caption.inner_text().replace("\u2060", "").strip()


def open_page(page: Page, title: str) -> None:
    """Go to a page through the sidebar (a reload would start a new session)."""
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True).click()


def test_sign_in_with_openid_connect(openid_server: Server, provider: Provider,
                                     people: Callable[[str], Page]) -> None:
    # Kim, a teacher by [class] teachers: the Runs page shows her the server's runs folder.
    kim = people("kim")
    sign_in(kim, openid_server, provider, TEACHER)
    assert signed_in_as(kim) == f"Signed in as {TEACHER} (teacher)"
    assert provider.tokens_issued == [TEACHER]
    asked = provider.authorize_requests[-1]
    assert asked["scope"].split() == ["openid", "email", "profile"], asked
    assert asked.get("code_challenge_method") == "S256", asked  # PKCE, as advertised
    cookies = {c["name"] for c in kim.context.cookies(openid_server.url)}
    assert "_streamlit_user" in cookies, cookies
    open_page(kim, "Runs")
    kim.get_by_role("heading", name="Runs").wait_for()
    kim.get_by_text("No runs yet in").wait_for()
    assert str(openid_server.runs_dir.resolve()) in kim.content()
    assert signed_in_as(kim) == f"Signed in as {TEACHER} (teacher)"
    TEST_OUTPUT.mkdir(exist_ok=True)
    kim.screenshot(path=str(TEST_OUTPUT / "openid-teacher.png"), full_page=True)

    # Sign out: the identity cookie goes, the provider's end_session is visited, and the
    # app is back at the bare sign-in screen, also after a reload.
    kim.get_by_role("button", name="Sign out").click()
    kim.get_by_role("button", name="Sign in").wait_for()
    assert kim.get_by_text("Signed in as").count() == 0
    assert len(provider.logouts) == 1, provider.logouts
    assert provider.logouts[0]["client_id"] == CLIENT_ID
    callback = f"{openid_server.url}/oauth2callback"
    assert provider.logouts[0]["post_logout_redirect_uri"] == callback
    assert "_streamlit_user" not in {c["name"] for c in kim.context.cookies(openid_server.url)}
    kim.reload()
    kim.get_by_role("button", name="Sign in").wait_for()
    assert kim.get_by_test_id("stSidebarNavLink").count() == 0

    # Ann, any other address, is a student in a fresh browser: no server paths for her.
    ann = people("ann")
    sign_in(ann, openid_server, provider, STUDENT)
    assert signed_in_as(ann) == f"Signed in as {STUDENT} (student)"
    assert provider.tokens_issued[-1] == STUDENT
    open_page(ann, "Runs")
    ann.get_by_role("heading", name="Runs").wait_for()
    ann.get_by_text("No runs yet").wait_for()
    assert str(openid_server.runs_dir.resolve()) not in ann.content()
    assert signed_in_as(ann) == f"Signed in as {STUDENT} (student)"
    assert provider.errors == [], provider.errors


def home_in_new_tab(page: Page, url: str) -> Page:
    """The home page opened afresh in ``page``'s browser context (its cookies included).

    A new tab, not ``page.goto``: after a refused token ``page`` may still be following
    Streamlit's redirect to '/', and a second navigation to the same address raced it
    (4 of 10 runs of this file hung 60 s on the goto, even waiting only for "commit").
    """
    fresh = page.context.new_page()
    fresh.set_default_timeout(60_000)
    fresh.goto(url)
    return fresh


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_forged_id_token_signs_no_one_in(forgery: str, openid_server: Server,
                                           provider: Provider,
                                           people: Callable[[str], Page]) -> None:
    """Streamlit (Authlib) checks the id_token itself: nonce, audience, expiry, signature."""
    page = people(f"forged-{forgery}")
    issued = len(provider.tokens_issued)
    refusals = refusals_logged(openid_server.log)
    provider.forge = forgery
    try:
        through_provider(page, openid_server, provider, TEACHER, back_home=False)
        wait_until(lambda: len(provider.tokens_issued) > issued, 60, "the provider's token")
        page.wait_for_load_state()
    finally:
        provider.forge = None
    assert len(provider.tokens_issued) == issued + 1  # the provider did answer
    # The callback has answered once the refusal is logged.
    wait_until(lambda: refusals_logged(openid_server.log) > refusals, 60, "the refusal logged")
    page = home_in_new_tab(page, openid_server.url)
    page.get_by_role("button", name="Sign in").wait_for()
    assert page.get_by_text("Signed in as").count() == 0
    assert page.get_by_test_id("stSidebarNavLink").count() == 0
    assert "_streamlit_user" not in {c["name"] for c in page.context.cookies(openid_server.url)}
    # Streamlit logs why (joserfc's InvalidClaimError, BadSignatureError, …) with this line.
    assert refusals_logged(openid_server.log) == refusals + 1


def test_a_link_survives_an_openid_sign_in(openid_server: Server, provider: Provider,
                                           people: Callable[[str], Page]) -> None:
    # st.login's callback always lands on "/": the lab remembers the link and opens it once.
    link = f"{openid_server.url}/configure?dataset=mnist_sample&preset=quick"
    ben = people("ben")
    provider.email = STUDENT
    ben.goto(link)
    ben.get_by_role("button", name="Sign in").click()
    ben.wait_for_url(link, timeout=60_000)
    assert signed_in_as(ben) == f"Signed in as {STUDENT} (student)"
    ben.get_by_role("heading", name="Configure").wait_for()
    assert ben.get_by_text("Page not found").count() == 0
    # The link was opened once: home, opened afresh within the ten minutes, stays home.
    ben.goto(openid_server.url)
    assert signed_in_as(ben) == f"Signed in as {STUDENT} (student)"
    ben.get_by_text("Learn, tweak and demo").wait_for()
    assert ben.url.rstrip("/") == openid_server.url
    assert provider.errors == [], provider.errors
