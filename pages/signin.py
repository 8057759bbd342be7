"""Who is using this browser session: personal mode's local user, or a signed-in person.

app.py asks ``signed_in_user()`` before the navigation and shows only the sign-in page
until someone signs in; every page calls ``current_user()`` first as well (a page run on its
own, e.g. by AppTest, stops at the sign-in form too). Kept free of
numpy/Keras imports so the home page stays fast.
"""

from __future__ import annotations

import streamlit as st

from cnnlab.people import access, accounts
from cnnlab.people.accounts import LOCAL_USER, User
from cnnlab.text import markdown
from pages.state import USER_KEY


def _route_through_app() -> None:
    # Streamlit decides once per server process whether to use the old pages/-folder mode,
    # and only app.py's st.navigation switches it off. When the first request after a
    # server start is a page URL (/train), Streamlit runs the page file alone: no app.py,
    # so no navigation and no wide layout, for every user until someone opens "/". Every
    # page and app.py import this module, so switch the mode off here and rerun through app.py.
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


_route_through_app()  # before any sign-in form, so no page list shows before sign-in


@st.cache_resource
def _throttle() -> accounts.Throttle:
    # One per server process: failed sign-ins from every session count together.
    return accounts.Throttle()


def signed_in_user() -> User | None:
    """The person acting in this session (personal mode: the local user), None when class
    mode is on and nobody has signed in yet. Draws nothing unless the settings are broken."""
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
    user = st.session_state.get(USER_KEY)
    return user if isinstance(user, User) else None


def sign_in_page() -> None:
    """The sign-in form (local accounts) or button (OpenID Connect)."""
    settings = access.load_settings()
    if settings.sign_in == "openid":
        _openid_sign_in()
    else:
        _account_sign_in(settings)


def current_user() -> User:
    """The person acting in this session; without one, the sign-in form, and the page stops."""
    user = signed_in_user()
    if user is None:
        sign_in_page()
        st.stop()
    return user


def _openid_sign_in() -> None:
    st.title(":material/psychology: CNN Lab")
    st.write("This lab is shared by a class: sign in with your school account to start.")
    st.button("Sign in", type="primary", icon=":material/login:", on_click=st.login,
              key="signin_openid")


def _account_sign_in(settings: access.Settings) -> None:
    st.title(":material/psychology: CNN Lab")
    st.write("This lab is shared by a class: sign in with the name and password your "
             "teacher gave you.")
    with st.form("signin", border=True, width=420):
        name = st.text_input("Name", key="signin_name", autocomplete="username")
        password = st.text_input("Password", type="password", key="signin_password",
                                 autocomplete="current-password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if not submitted:
        return
    address = st.context.ip_address or "unknown"
    try:
        user = accounts.sign_in(accounts.Accounts(settings.accounts_file), _throttle(), name,
                                password, address)
    except (accounts.SignInRefused, accounts.AccountError) as exc:
        st.error(access.for_viewer(str(exc), User("", "student")))
        return
    st.session_state[USER_KEY] = user
    st.rerun()


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
        else:
            st.button("Sign out", icon=":material/logout:", key="signout", on_click=_sign_out)


def _sign_out() -> None:
    # A callback runs before the next script run, so that run already sees nobody.
    for key in list(st.session_state):
        del st.session_state[key]  # nothing of this person stays in the session
