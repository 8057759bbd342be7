"""Sign-in sessions that outlive a reload: random tokens, kept on the server only as hashes.

A sign-in with a local account gives the browser a random token in an HttpOnly cookie; this
store keeps the token's SHA-256 (never the token), whose account it is and when it expires,
in ``sessions.json`` beside the accounts file, so every server process of the lab accepts
it. Signing out revokes one session; removing an account or resetting its password revokes
all of that person's (``revoke_user``); ``cnnlab users sessions`` lists and revokes.

Writes are atomic (a temporary file renamed over the store) under a lock file, so two server
processes signing people in at once lose no session.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COOKIE = "cnnlab_session"
DEFAULT_HOURS = 8.0  # a class period, with room to spare; [class] session_hours
TOKEN_BYTES = 32  # 256 random bits: a token cannot be guessed, so its hash need no salt
ID_CHARS = 12  # a session's public id: the start of its hash (safe to show and type)


@dataclass(frozen=True)
class Session:
    """One live sign-in: its public id, whose it is, and when it began and ends (epoch s)."""

    id: str
    user: str
    created: float
    expires: float


def store_path(accounts_file: Path | str) -> Path:
    """Where the sessions of an accounts file are kept: ``sessions.json`` beside it."""
    return Path(accounts_file).with_name("sessions.json")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class Sessions:
    """The sessions beside one accounts file (see the module docstring)."""

    def __init__(self, path: Path | str, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock

    def start(self, user: str, hours: float = DEFAULT_HOURS) -> str:
        """A new session for ``user`` lasting ``hours``; returns its token (shown only once)."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        now = self.clock()
        with self._locked() as entries:
            entries[_digest(token)] = {"user": user, "created": now,
                                       "expires": now + hours * 3600}
        return token

    def user_for(self, token: str | None) -> str | None:
        """The account a token signs in, or None for a missing, unknown, expired or revoked
        one (a forged or truncated cookie is just unknown)."""
        if not isinstance(token, str) or not token or len(token) > 256:
            return None
        entry = self._read().get(_digest(token))
        if not isinstance(entry, dict) or not isinstance(entry.get("user"), str):
            return None
        try:
            alive = float(entry["expires"]) > self.clock()
        except (KeyError, TypeError, ValueError):
            return None
        return entry["user"] if alive else None

    def revoke(self, token: str) -> bool:
        """End the session of ``token`` (sign out); whether there was one."""
        with self._locked() as entries:
            return entries.pop(_digest(token), None) is not None

    def revoke_id(self, session_id: str) -> bool:
        """End the session whose public id is ``session_id``; whether there was one."""
        with self._locked() as entries:
            found = [d for d in entries if d[:ID_CHARS] == session_id.strip().lower()]
            for digest in found:
                del entries[digest]
            return bool(found)

    def revoke_user(self, user: str) -> int:
        """End every session of ``user`` (account removed, password reset); how many."""
        with self._locked() as entries:
            found = [d for d, e in entries.items() if e.get("user") == user]
            for digest in found:
                del entries[digest]
            return len(found)

    def live(self) -> list[Session]:
        """Sessions not yet expired, oldest first."""
        now = self.clock()
        found = [Session(d[:ID_CHARS], e["user"], float(e["created"]), float(e["expires"]))
                 for d, e in self._read().items() if float(e.get("expires", 0)) > now]
        return sorted(found, key=lambda s: s.created)

    # ------------------------------------------------------------------------ the file

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # none yet, or damaged: nobody is signed in
            return {}
        entries = data.get("sessions") if isinstance(data, dict) else None
        return entries if isinstance(entries, dict) else {}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, dict[str, Any]]]:
        """The entries to change; written back atomically, expired ones dropped."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = self._read()
            yield entries
            now = self.clock()
            kept = {d: e for d, e in entries.items() if float(e.get("expires", 0)) > now}
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".sessions-")
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump({"sessions": kept}, out)
            os.chmod(tmp, 0o600)  # the hashes are no secret, but whose session is
            os.replace(tmp, self.path)
