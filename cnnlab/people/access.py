"""Who may do what: the server's sign-in mode, run ownership and the checks every action makes.

Everyone signed in may *read* runs (curves, settings, scores); only a run's owner or a
teacher may stop, cancel, delete, rename, resume or fine-tune from it, and only a teacher
may move a queued run to the front. Images of a user's own upload (samples, mistakes) are
shown only to that user and teachers. The checks live here and in the cnnlab operations
that call them, so a page that forgets to hide a button still cannot act on someone else's
run.

The operator turns class mode on in ``.streamlit/secrets.toml``::

    [class]
    sign_in = "accounts"            # local accounts: python -m cnnlab users add NAME
    # sign_in = "openid"            # the [auth] provider below, through st.login
    # teachers = ["kim@school.example"]   # openid: these e-mail addresses are teachers
    # accounts_file = "/srv/cnnlab/accounts.json"   # default .streamlit/accounts.json

``CNNLAB_SIGN_IN`` and ``CNNLAB_ACCOUNTS_FILE`` override the file (tests, containers).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.people import sessions
from cnnlab.people.accounts import LOCAL_USER, AccountError, Accounts, User
from cnnlab.settings import SECRETS_FILE, secrets_table

DEFAULT_ACCOUNTS_FILE = Path(".streamlit") / "accounts.json"
MODES = ("personal", "accounts", "openid")


class AccessDenied(ValueError):
    """An action on someone else's run or data; the message says who may do it."""


@dataclass(frozen=True)
class Settings:
    """How people sign in to this server."""

    sign_in: str = "personal"
    accounts_file: Path = DEFAULT_ACCOUNTS_FILE
    teachers: tuple[str, ...] = ()
    session_hours: float = sessions.DEFAULT_HOURS  # how long a local-account sign-in lasts

    @property
    def class_mode(self) -> bool:
        """True when people sign in (and own their runs)."""
        return self.sign_in != "personal"


def load_settings(secrets_file: Path | str = SECRETS_FILE) -> Settings:
    """The operator's sign-in settings: environment over secrets.toml's [class] over personal.

    Raises ValueError naming a bad setting.
    """
    table = secrets_table(secrets_file, "class")
    mode = os.environ.get("CNNLAB_SIGN_IN") or table.get("sign_in", "personal")
    if mode not in MODES:
        raise ValueError(f"Sign-in mode {mode!r} is not known; use one of {', '.join(MODES)} "
                         "([class] sign_in in .streamlit/secrets.toml).")
    accounts_file = Path(os.environ.get("CNNLAB_ACCOUNTS_FILE")
                         or table.get("accounts_file", DEFAULT_ACCOUNTS_FILE))
    teachers = tuple(str(t).strip().lower() for t in table.get("teachers", ()))
    hours = os.environ.get("CNNLAB_SESSION_HOURS") or table.get("session_hours",
                                                                  sessions.DEFAULT_HOURS)
    try:
        session_hours = float(hours)
    except (TypeError, ValueError):
        session_hours = -1.0
    if not 0 < session_hours <= 24 * 366:
        raise ValueError(f"session_hours {hours!r} is not a number of hours from 0 to a year; "
                         "set e.g. session_hours = 8 ([class] in .streamlit/secrets.toml or "
                         "CNNLAB_SESSION_HOURS).")
    return Settings(mode, accounts_file, teachers, session_hours)


def session_user(settings: Settings, token: str | None) -> User | None:
    """Who a session cookie's token signs in (local accounts), or None when it is missing,
    unknown, expired or revoked, or its account is gone."""
    name = sessions.Sessions(sessions.store_path(settings.accounts_file)).user_for(token)
    if name is None:
        return None
    try:
        return next((u for u in Accounts(settings.accounts_file).users() if u.name == name),
                    None)
    except AccountError:  # an unreadable accounts file signs nobody in
        return None


def openid_user(email: str | None, settings: Settings, verified: bool | None = None) -> User:
    """The User for an OpenID Connect sign-in: the e-mail address is the name.

    An address the provider marks unverified (``email_verified: false``) is refused: on a
    provider where people type their own address, anyone could claim a teacher's.
    """
    name = (email or "").strip().lower()
    if not name:
        raise AccessDenied("Your identity provider did not send an e-mail address; ask the "
                           "operator to request the 'email' scope.")
    if verified is False:
        raise AccessDenied(f"Your identity provider says the address {name} is not verified; "
                           "verify it there, then sign in again.")
    return User(name, "teacher" if name in settings.teachers else "student")


# ------------------------------------------------------------------------------ ownership


def owner_of(config: Mapping[str, Any] | None) -> str:
    """Who owns a run: its config.json's ``owner`` (``runs.load_config``), else the
    personal-mode user (runs made before sign-in existed)."""
    if isinstance(config, Mapping) and config.get("owner"):
        return str(config["owner"])
    return LOCAL_USER.name


def can_manage(user: User, owner: str) -> bool:
    """Whether ``user`` may stop, delete, rename, resume or fine-tune ``owner``'s runs."""
    return user.is_teacher or user.name == owner


def check_manage(user: User, owner: str, action: str, run_id: str) -> None:
    """AccessDenied unless ``user`` may ``action`` run ``run_id`` owned by ``owner``."""
    if not can_manage(user, owner):
        raise AccessDenied(
            f"You cannot {action} run {run_id}: it is not yours. Only the person who "
            "started it or a teacher may; fine-tune needs your own copy, so train one "
            "with the same settings instead."
        )


def can_reorder(user: User) -> bool:
    """Whether ``user`` may change the queue's order (move a run to the front): teachers
    only, since the round-robin order between people is what keeps the queue fair."""
    return user.is_teacher


def check_reorder(user: User, run_id: str) -> None:
    """AccessDenied unless ``user`` may move queued run ``run_id`` to the front."""
    if not can_reorder(user):
        raise AccessDenied(
            f"You cannot move run {run_id} to the front of the queue: only a teacher may "
            "change its order. Queued runs start in turn between people, so each keeps its "
            "fair place; ask your teacher if a run is urgent."
        )


def can_see_images(user: User, dataset: str, owner: str) -> bool:
    """Whether ``user`` may see images of ``dataset`` used by ``owner``'s run: any shared
    data set, but an upload (``folder:…``) only its owner's and teachers'."""
    from cnnlab.data.datasets import UPLOAD_PREFIX

    return not dataset.startswith(UPLOAD_PREFIX) or can_manage(user, owner)


_PATH = re.compile(r"(?<![\w.])(?:~|/)[^\s'\"`,;()]*[/\w]")


def for_viewer(message: str, user: User) -> str:
    """``message`` as ``user`` may read it: teachers see everything; students see no server
    paths (a path becomes '…')."""
    return message if user.is_teacher else _PATH.sub("…", message)
