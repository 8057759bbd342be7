"""The Runs page's class accounts (not a page itself): a teacher resets a student's password.

Shown in the Class view (``runs_list.teacher_panel``) in class mode with local accounts only;
OpenID Connect passwords belong to the school's provider. The new password is shown once,
on the run of the click, and the student's sessions end. cnnlab.people.roster checks that the
one resetting is a teacher and the account a student's, so hiding this from students is a
courtesy, not the guard.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import streamlit as st

from cnnlab.people import access, accounts, roster
from cnnlab.text import markdown
from pages.signin import md

if TYPE_CHECKING:
    from cnnlab.people.accounts import User


def password_reset_section(user: User) -> None:
    """Pick a student, press Reset: their new password, shown once, and their sessions end.
    Draws nothing unless ``user`` is a teacher and people sign in with local accounts."""
    settings = access.load_settings()  # current_user() has checked it
    if settings.sign_in != "accounts" or not user.is_teacher:
        return
    store = accounts.Accounts(settings.accounts_file)
    st.markdown("**A student forgot their password**")
    try:
        students = [u.name for u in store.users() if not u.is_teacher]
    except accounts.AccountError as exc:
        st.error(md(exc))
        return
    if not students:
        st.caption("No student accounts yet: the operator makes a class's accounts with "
                   "`python -m cnnlab users import roster.csv`.")
        return
    pick, press = st.columns([3, 1], vertical_alignment="bottom")
    name = pick.selectbox("Student", students, key="class_reset_student")
    if not press.button("Reset password", icon=":material/lock_reset:",
                        key="class_reset_password",
                        help="A new password replaces the old one; the student is signed out "
                             "everywhere and signs in with the new one."):
        return
    try:
        password = roster.reset_password(user, store, name)
    except (accounts.AccountError, access.AccessDenied) as exc:
        st.error(md(exc))
        return
    # Only this run shows it: the server keeps the hash alone, so copy it now.
    st.success(f"New password for **{markdown(name)}**, shown only now: copy it and give it "
               "to them. Their open sessions have ended.")
    st.code(password, language=None)
