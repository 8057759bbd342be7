"""Sign-in and sign-out as plain HTTP routes, so the session cookie can be HttpOnly.

A Streamlit page talks to the server over a websocket and cannot set a cookie; these routes
(served beside the app by ``st.App`` in app.py) can. The sign-in form on every page posts
here with the address it was opened at; a right name and password start a session
(cnnlab.people.sessions), set its token as an HttpOnly, SameSite=Lax cookie (Secure over
https) and send the browser back to that address, so a link survives signing in.
"""

from __future__ import annotations

import html
import secrets
from urllib.parse import urlencode, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from cnnlab.people import access, accounts, sessions

SIGN_IN_PATH = "/signin"
SIGN_OUT_PATH = "/signout"
OPENID_PATH = "/signin/openid"
# The address an OpenID sign-in was started from: st.login's callback always lands on "/",
# so the app opens this once afterwards (a random id, so a later visit to "/" does not).
NEXT_COOKIE = "cnnlab_next"
NEXT_SECONDS = 600  # long enough to sign in at the school's provider
THROTTLE = accounts.Throttle()  # one per web process: failed sign-ins count together


def safe_next(value: object) -> str:
    """Where to go after signing in: a path on this site only (never another host)."""
    text = str(value or "/")
    parts = urlsplit(text)
    if parts.scheme or parts.netloc or not text.startswith("/") or text.startswith("//"):
        return "/"
    return text


def form_html(next_url: str, message: str | None = None) -> str:
    """The sign-in form: name, password and the address to open afterwards."""
    error = (f'<p role="alert" style="color:#d33;margin:0 0 .8em">{html.escape(message)}</p>'
             if message else "")
    field = ("display:block;width:100%;box-sizing:border-box;margin:.25em 0 .9em;"
             "padding:.5em;border:1px solid #bbb;border-radius:.4em;font-size:1em")
    return (
        f'<form method="post" action="{SIGN_IN_PATH}" style="max-width:380px">{error}'
        f'<label>Name<input name="username" autocomplete="username" required '
        f'style="{field}"></label>'
        f'<label>Password<input name="password" type="password" '
        f'autocomplete="current-password" required style="{field}"></label>'
        f'<input type="hidden" name="next" value="{html.escape(next_url)}">'
        '<button type="submit" style="padding:.5em 1.4em;border:0;border-radius:.4em;'
        'background:#ff4b4b;color:#fff;font-size:1em;cursor:pointer">Sign in</button></form>'
    )


def sign_out_html() -> str:
    """The sidebar's Sign out button: a form that posts to the sign-out route."""
    return (f'<form method="post" action="{SIGN_OUT_PATH}"><button type="submit" '
            'style="padding:.35em 1em;border:1px solid #bbb;border-radius:.4em;'
            'background:transparent;color:inherit;cursor:pointer">Sign out</button></form>')


def openid_button_html(next_url: str) -> str:
    """The OpenID Connect Sign in button: through the route that remembers ``next_url``."""
    return (f'<a role="button" href="{OPENID_PATH}?{urlencode({"next": next_url})}" '
            'target="_self" style="display:inline-block;padding:.5em 1.4em;border-radius:.4em;'
            'background:#ff4b4b;color:#fff;text-decoration:none">Sign in</a>')


def remembered_address(cookie: object) -> tuple[str, str] | None:
    """(id, address) from the NEXT_COOKIE value, or None when it is missing or malformed."""
    if not isinstance(cookie, str) or "|" not in cookie:
        return None
    nonce, next_url = cookie.split("|", 1)
    return nonce, safe_next(next_url)


def _page(body: str, status: int) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html><head><meta charset='utf-8'><title>Sign in · CNN Lab</title>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'></head>"
        "<body style='font-family:sans-serif;margin:3em auto;max-width:420px;padding:0 1em'>"
        f"<h1>CNN Lab</h1>{body}</body></html>", status_code=status)


def _same_site(request: Request) -> bool:
    # A form posted from another site must not sign this browser in (login CSRF).
    origin = request.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == request.headers.get("host")


def _https(request: Request) -> bool:
    return (request.url.scheme == "https"
            or request.headers.get("x-forwarded-proto", "").split(",")[0].strip() == "https")


async def sign_in(request: Request) -> Response:
    """Check the name and password; on success set the session cookie and go back."""
    if not _same_site(request):
        return _page("<p>This sign-in came from another site and was refused.</p>", 403)
    form = await request.form()
    next_url = safe_next(form.get("next"))
    settings = access.load_settings()
    if settings.sign_in != "accounts":  # nothing to check here: the app says how to sign in
        return RedirectResponse(next_url, status_code=303)
    store = accounts.Accounts(settings.accounts_file)
    name, password = str(form.get("username") or ""), str(form.get("password") or "")
    address = request.client.host if request.client else "unknown"
    try:  # argon2 takes ~50 ms of CPU: off the event loop
        user = await run_in_threadpool(accounts.sign_in, store, THROTTLE, name, password,
                                       address)
    except (accounts.SignInRefused, accounts.AccountError) as exc:
        message = access.for_viewer(str(exc), accounts.User("", "student"))
        return _page(form_html(next_url, message), 401)
    token = sessions.Sessions(sessions.store_path(settings.accounts_file)).start(
        user.name, settings.session_hours)
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(sessions.COOKIE, token, max_age=int(settings.session_hours * 3600),
                        path="/", httponly=True, samesite="lax", secure=_https(request))
    return response


async def sign_out(request: Request) -> Response:
    """End this browser's session and forget its cookie."""
    if not _same_site(request):
        return _page("<p>This sign-out came from another site and was refused.</p>", 403)
    token = request.cookies.get(sessions.COOKIE)
    if token:
        settings = access.load_settings()
        sessions.Sessions(sessions.store_path(settings.accounts_file)).revoke(token)
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(sessions.COOKIE, path="/", httponly=True, samesite="lax",
                           secure=_https(request))
    return response


async def openid_sign_in(request: Request) -> Response:
    """Remember the address to return to, then start Streamlit's own OpenID sign-in."""
    # Streamlit's st.login sends the browser to this same URL (its provider token is signed
    # with the [auth] cookie_secret); its callback then always lands on "/".
    from streamlit.user_info import generate_login_redirect_url

    next_url = safe_next(request.query_params.get("next"))
    response = RedirectResponse(generate_login_redirect_url("default"), status_code=302)
    response.set_cookie(NEXT_COOKIE, f"{secrets.token_urlsafe(9)}|{next_url}",
                        max_age=NEXT_SECONDS, path="/", httponly=True, samesite="lax",
                        secure=_https(request))
    return response


ROUTES = [Route(SIGN_IN_PATH, sign_in, methods=["POST"]),
          Route(SIGN_OUT_PATH, sign_out, methods=["POST"]),
          Route(OPENID_PATH, openid_sign_in, methods=["GET"])]
