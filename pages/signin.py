"""Who is using this browser session: personal mode's local user, or a signed-in person.

app.py asks ``signed_in_user()`` before the navigation and shows only the sign-in page
until someone signs in; every page calls ``current_user()`` first as well (a page run on its
own, e.g. by AppTest, stops at the sign-in form too). Kept free of
numpy/Keras imports so the home page stays fast.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import streamlit as st
from streamlit.navigation.page import StreamlitPage

from cnnlab.people import access, sessions
from cnnlab.people.accounts import LOCAL_USER, User
from cnnlab.text import markdown
from pages import signin_routes
from pages.state import USER_KEY

_routed = False  # _route_through_app has run in this process
ENDED_KEY = "signin_ended"  # the cookie of this session was refused: say why once


def _route_through_app() -> None:
    # Streamlit decides once per server process whether to use the old pages/-folder mode,
    # and only app.py's st.navigation switches it off. When the first request after a
    # server start is a page URL (/train), Streamlit runs the page file alone: no app.py,
    # so no navigation and no wide layout, for every user until someone opens "/". Every
    # page and app.py ask signed_in_user() first, so switch the mode off there and rerun
    # through app.py. (Not at import: `streamlit run app.py` imports this module in the
    # server, outside any session, where a rerun does nothing.)
    # Once per process, as the import used to: AppTest runs a switched-to page in that mode
    # on purpose, and switching it off then would undo the switch.
    global _routed
    if _routed:
        return
    _routed = True
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def signed_in_user() -> User | None:
    """The person acting in this session (personal mode: the local user), None when class
    mode is on and nobody has signed in yet. Draws nothing unless the settings are broken.

    With local accounts the session cookie is checked on every script run, so a session
    that expired or was revoked ends at the next click, not only at the next reload.
    """
    _route_through_app()  # before any sign-in form, so no page list shows before sign-in
    try:
        settings = access.load_settings()
    except ValueError as exc:  # a bad [class] setting: only the operator can fix it
        st.error(f"This server's sign-in settings are broken: {markdown(exc)}")
        st.stop()
    if not settings.class_mode:
        return LOCAL_USER
    if settings.sign_in == "openid":
        if not st.user.is_logged_in:
            return None
        try:
            return access.openid_user(st.user.get("email"), settings,
                                      st.user.get("email_verified"))
        except access.AccessDenied as exc:
            st.error(markdown(exc))
            st.button("Sign out", on_click=st.logout, key="signout_refused")
            st.stop()
    token = st.context.cookies.get(sessions.COOKIE)
    if isinstance(token, str):  # (AppTest has no browser, and so no cookies)
        user = access.session_user(settings, token)
        if user is None:  # forged, truncated, expired or revoked: sign in again
            st.session_state.pop(USER_KEY, None)
            st.session_state[ENDED_KEY] = True
        else:
            st.session_state[USER_KEY] = user
        return user
    user = st.session_state.get(USER_KEY)  # set by tests (AppTest sends no cookies)
    return user if isinstance(user, User) else None


def address(url_path: str = "") -> str:
    """This page's address with its choices (query parameters): where to return after
    signing in."""
    query = urlencode([(k, v) for k in st.query_params for v in st.query_params.get_all(k)])
    return f"/{url_path}" + (f"?{query}" if query else "")


def sign_in_page(next_url: str | None = None) -> None:
    """The sign-in form (local accounts) or button (OpenID Connect), in place of the page
    at ``next_url`` (default: this page's address), which opens once signed in."""
    settings = access.load_settings()
    if settings.sign_in == "openid":
        _openid_sign_in(next_url or address())
    else:
        _account_sign_in(next_url or address())


def current_user() -> User:
    """The person acting in this session; without one, the sign-in form, and the page stops."""
    user = signed_in_user()
    if user is None:
        sign_in_page()
        st.stop()
    return user


def _openid_sign_in(next_url: str) -> None:
    st.title(":material/psychology: CNN Lab")
    st.write("This lab is shared by a class: sign in with your school account to start.")
    # Through the lab's own route, which remembers next_url: st.login's callback lands on "/".
    st.html(signin_routes.openid_button_html(next_url))


@st.cache_resource
def _opened_addresses() -> set[str]:
    # One per web process: the remembered addresses already opened, so a later visit to
    # "/" within the cookie's ten minutes stays on "/".
    return set()


def open_remembered_address(page: StreamlitPage, pages: list[StreamlitPage]) -> None:
    """Right after an OpenID sign-in (which lands on "/"), open the address it was started
    from, once. Other sign-ins return to their address themselves."""
    remembered = signin_routes.remembered_address(
        st.context.cookies.get(signin_routes.NEXT_COOKIE))
    if page.url_path != "" or remembered is None or remembered[0] in _opened_addresses():
        return
    _opened_addresses().add(remembered[0])
    path, _, query = remembered[1].partition("?")
    target = next((p for p in pages if p.url_path == path.strip("/")), None)
    if target is not None and (target.url_path or query):
        st.switch_page(target, query_params=parse_qsl(query))


def _account_sign_in(next_url: str) -> None:
    st.title(":material/psychology: CNN Lab")
    if st.session_state.pop(ENDED_KEY, False):
        st.warning("Your sign-in has ended (signed out, expired or not valid here): sign in "
                   "again.")
    st.write("This lab is shared by a class: sign in with the name and password your "
             "teacher gave you.")
    # A plain HTML form: the sign-in route sets the HttpOnly session cookie, which a
    # websocket message cannot, and then opens next_url again.
    st.html(signin_routes.form_html(next_url))


def md(value: object) -> str:
    """``value`` as Markdown that shows as plain text, without server paths for students."""
    return markdown(access.for_viewer(str(value), current_user()))


def sign_out_control(user: User) -> None:
    """'Signed in as …' and a Sign out button in the sidebar (class mode only)."""
    settings = access.load_settings()  # current_user() has checked it
    if not settings.class_mode:
        return
    with st.sidebar:
        role = "teacher" if user.is_teacher else "student"
        st.caption(f"Signed in as **{markdown(user.name)}** ({role})")
        if settings.sign_in == "openid":
            st.button("Sign out", icon=":material/logout:", key="signout", on_click=st.logout)
        else:  # the sign-out route revokes the session and clears the cookie
            st.html(signin_routes.sign_out_html())
