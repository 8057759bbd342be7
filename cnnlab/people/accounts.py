"""Who is acting: users and roles, local accounts with hashed passwords, slowed sign-in.

Two modes (cnnlab.people.access.load_settings says which):

- **personal** — a laptop: no sign-in; everyone is LOCAL_USER, who owns every run.
- **class** — one server for a room: each person signs in, through the school's OpenID
  Connect provider (Streamlit's st.login) or with a local account made by the teacher
  (``python -m cnnlab users add NAME [--teacher]``, or a whole class at once with
  ``python -m cnnlab users import roster.csv``, see cnnlab.people.roster).

Local accounts live in one JSON file that holds only argon2id hashes (argon2-cffi, the
maintained binding of the Password Hashing Competition winner), never a password. Failed
sign-ins are slowed: after n failures in a row for an account *or* an address, the next
attempt waits 2**(n-1) seconds (1, 2, 4, … capped at MAX_DELAY_S), which keeps a typo cheap
and guessing useless. A classroom often shares one address (NAT), so an address gets
ADDRESS_FREE_FAILURES free failures first; failures are forgotten after FORGET_AFTER_S.

Removing an account or resetting its password ends every session of that person
(cnnlab.people.sessions, beside the accounts file), so an old password or a departed
student's open browser stops working at the next click.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cnnlab.people import sessions

ROLES = ("student", "teacher")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
MIN_PASSWORD = 8
MAX_DELAY_S = 300.0
ADDRESS_FREE_FAILURES = 10
FORGET_AFTER_S = 900.0
# Generated passwords: no look-alikes (0/o, 1/l/i), so a student can copy one off paper.
PASSWORD_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
PASSWORD_GROUPS, PASSWORD_GROUP_CHARS = 3, 4  # "k7mq-x3rp-9tdw": 12 random chars, ~59 bits


@dataclass(frozen=True)
class User:
    """A person using the lab: a unique name and a role."""

    name: str
    role: str = "student"

    @property
    def is_teacher(self) -> bool:
        """Teachers see and manage every run; students manage their own."""
        return self.role == "teacher"


# Personal mode: the one local user owns everything (and may do everything).
LOCAL_USER = User("local", "teacher")


class AccountError(ValueError):
    """An account cannot be added, removed or read; the message says why."""


class SignInRefused(ValueError):
    """A sign-in attempt was refused (wrong name or password, or too soon after failures)."""


def _hasher():
    from argon2 import PasswordHasher

    return PasswordHasher()  # argon2id with the library's current recommended parameters


def check_name(name: str) -> str:
    """``name`` normalised (stripped, lower case) if it is a valid account name."""
    clean = name.strip().lower()
    if not NAME_RE.match(clean):
        raise AccountError(
            f"The account name {name!r} is not allowed: use 1 to 64 lower-case letters, digits, "
            "'.', '_', '-' or '@', starting with a letter or digit (e.g. 'kim.minji')."
        )
    return clean


def generate_password() -> str:
    """A new random password to hand out, e.g. ``k7mq-x3rp-9tdw`` (``secrets``, ~59 bits:
    with argon2 and slowed sign-in, far beyond guessing; typed easily from a slip of paper)."""
    groups = ("".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_GROUP_CHARS))
              for _ in range(PASSWORD_GROUPS))
    return "-".join(groups)


class Accounts:
    """The local accounts file: ``{"users": {name: {"role": ..., "hash": ...}}}``.

    Every change rewrites the file atomically with owner-only permissions (0600).
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def _read(self) -> dict[str, dict[str, str]]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            users = data["users"]
            assert isinstance(users, dict)
        except (OSError, ValueError, KeyError, AssertionError) as exc:
            raise AccountError(
                f"The accounts file {self.path} cannot be read ({type(exc).__name__}); restore "
                "it from a backup or remove it and add the accounts again."
            ) from exc
        return users

    def _write(self, users: dict[str, dict[str, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".accounts-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"users": users}, fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def add(self, name: str, password: str, teacher: bool = False) -> User:
        """Create an account; AccountError if the name exists or the password is too short."""
        name = check_name(name)
        if len(password) < MIN_PASSWORD:
            raise AccountError(
                f"The password has {len(password)} characters; use at least {MIN_PASSWORD}."
            )
        with self._lock:
            users = self._read()
            if name in users:
                raise AccountError(
                    f"There is already an account {name!r}: to give it a new password, reset "
                    f"it (python -m cnnlab users reset {name})."
                )
            role = "teacher" if teacher else "student"
            users[name] = {"role": role, "hash": _hasher().hash(password)}
            self._write(users)
        return User(name, role)

    def add_many(self, new: Sequence[tuple[str, str, str]]) -> list[User]:
        """Create every ``(name, role, password)`` account in one write, or none of them.

        AccountError naming each problem (a bad name, role or password, a name twice, a name
        that has an account) and nothing written; cnnlab.people.roster checks a roster file
        line by line first, so this is the last guard (e.g. an account added meanwhile).
        """
        problems, clean = [], []
        for name, role, password in new:
            try:
                name = check_name(name)
            except AccountError as exc:
                problems.append(str(exc))
                continue
            if role not in ROLES:
                problems.append(f"{name}: the role {role!r} is not one of {', '.join(ROLES)}.")
            if len(password) < MIN_PASSWORD:
                problems.append(f"{name}: the password has {len(password)} characters; use at "
                                f"least {MIN_PASSWORD}.")
            clean.append((name, role, password))
        names = [n for n, _, _ in clean]
        problems += [f"{n}: the name is given more than once." for n in sorted(set(names))
                     if names.count(n) > 1]
        if problems:
            raise AccountError("No account was created: " + " ".join(problems))
        hashes = [_hasher().hash(p) for _, _, p in clean]  # slow (~0.1 s each): before the lock
        with self._lock:
            users = self._read()
            taken = sorted(set(names) & set(users))
            if taken:
                raise AccountError(
                    f"No account was created: there are already accounts {', '.join(taken)}; "
                    "leave them out, or reset their passwords (python -m cnnlab users reset "
                    "NAME).")
            for (name, role, _), hashed in zip(clean, hashes, strict=True):
                users[name] = {"role": role, "hash": hashed}
            self._write(users)
        return [User(n, r) for n, r, _ in clean]

    def reset_password(self, name: str) -> str:
        """Give ``name`` a new generated password and end all their sessions; returns the
        password (to show once: only its hash is kept). AccountError for an unknown name."""
        name = check_name(name)
        password = generate_password()
        hashed = _hasher().hash(password)
        with self._lock:
            users = self._read()
            if name not in users:
                raise AccountError(self._unknown(name))
            users[name] = {**users[name], "hash": hashed}
            self._write(users)
        self._end_sessions(name)
        return password

    def remove(self, name: str) -> None:
        """Delete an account and end its sessions (its runs stay, owned by the name)."""
        name = check_name(name)
        with self._lock:
            users = self._read()
            if name not in users:
                raise AccountError(self._unknown(name))
            del users[name]
            self._write(users)
        self._end_sessions(name)

    def _unknown(self, name: str) -> str:
        return f"There is no account {name!r}; see python -m cnnlab users list."

    def _end_sessions(self, name: str) -> int:
        # Called once the accounts file is written: sessions begun with the old password (or
        # by the removed account) end; sign-ins from now on already see the new file.
        return sessions.Sessions(sessions.store_path(self.path)).revoke_user(name)

    def users(self) -> list[User]:
        """Every account, by name."""
        return [User(n, u.get("role", "student")) for n, u in sorted(self._read().items())]

    def verify(self, name: str, password: str) -> User | None:
        """The user when ``password`` is right for ``name``, else None.

        An unknown name costs one hash too, so timing does not tell which names exist.
        """
        from argon2.exceptions import InvalidHashError, VerificationError

        try:
            clean = check_name(name)
        except AccountError:
            clean = ""
        entry = self._read().get(clean)
        hasher = _hasher()
        stored = entry["hash"] if entry else _dummy_hash()
        try:
            hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if entry is None:
            return None
        return User(clean, entry.get("role", "student"))


_DUMMY: list[str] = []


def _dummy_hash() -> str:
    if not _DUMMY:
        _DUMMY.append(_hasher().hash("not a password anyone has"))
    return _DUMMY[0]


class Throttle:
    """Exponential waits after failed sign-ins, per key (an account, an address).

    In memory: one per server process (the web server keeps it in st.cache_resource).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: dict[str, tuple[int, float]] = {}  # key → (count, time of last)
        self._lock = threading.Lock()

    def wait(self, *keys: str) -> float:
        """Seconds before any of ``keys`` may try again (0 when allowed now)."""
        now = self._clock()
        waits = [0.0]
        with self._lock:
            for key in keys:
                count, last = self._failures.get(key, (0, 0.0))
                if key.startswith("address:"):
                    count -= ADDRESS_FREE_FAILURES
                waits.append(last + delay_after(count) - now)
        return max(waits)

    def failed(self, *keys: str) -> None:
        """Count one more failure for each key."""
        now = self._clock()
        with self._lock:
            for key in keys:
                count, last = self._failures.get(key, (0, 0.0))
                if now - last > FORGET_AFTER_S:
                    count = 0
                self._failures[key] = (count + 1, now)

    def succeeded(self, *keys: str) -> None:
        """Forget the failures of ``keys``."""
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)


def delay_after(failures: int) -> float:
    """The wait after ``failures`` failures in a row: 1, 2, 4, … seconds, capped."""
    return min(2.0 ** (failures - 1), MAX_DELAY_S) if failures > 0 else 0.0


def sign_in(accounts: Accounts, throttle: Throttle, name: str, password: str,
            address: str) -> User:
    """The user for a right name and password; SignInRefused otherwise, slowed per account
    and per address."""
    keys = (f"account:{name.strip().lower()}", f"address:{address}")
    wait = throttle.wait(*keys)
    if wait > 0:
        raise SignInRefused(
            f"Too many failed sign-ins for this account or from this computer: wait "
            f"{math.ceil(wait)} s and try again."
        )
    user = accounts.verify(name, password)
    if user is None:
        throttle.failed(*keys)
        raise SignInRefused(
            f"Wrong name or password. Check both and try again in "
            f"{math.ceil(throttle.wait(*keys))} s; your teacher can reset a forgotten password."
        )
    throttle.succeeded(keys[0])
    return user
