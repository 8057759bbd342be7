"""Where an engine process listens for a runs root, and the key that lets a client in.

The engine (cnnlab.train.engine_server) and its clients (cnnlab.train.engine_client) meet
at a Unix socket in the runs root, ``.engine.sock``, and prove themselves with an authkey
read from ``.engine.key``: a file of random bytes that only its owner may read (mode 0600),
made by the first engine on the root. So only the OS user who runs the lab reaches the
engine, and the engine trusts what its clients say (which user asks) as it trusts its own
pages in one process.

A Unix socket's path has a length limit (108 bytes on Linux): a runs root deep in the file
system gets its socket in the temporary folder instead, named by the root's hash, so
every process finds it without asking.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
import tempfile
from pathlib import Path

SOCKET_FILE = ".engine.sock"
KEY_FILE = ".engine.key"
LOG_FILE = ".engine.log"
MAX_SOCKET_PATH = 100  # below Linux's 108 (sun_path), with room for macOS's 104


class EngineKeyError(RuntimeError):
    """The engine's key file is missing, unreadable or readable by others."""


def address(root: Path) -> str:
    """The Unix socket path of ``root``'s engine."""
    path = str(Path(root).resolve() / SOCKET_FILE)
    if len(path) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:20]
    return str(Path(tempfile.gettempdir()) / f"cnnlab-engine-{digest}.sock")


def make_key(root: Path) -> bytes:
    """``root``'s engine key: read it, or make it (mode 0600) when there is none."""
    path = Path(root) / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_key(root)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secrets.token_bytes(32))
    return read_key(root)


def read_key(root: Path) -> bytes:
    """``root``'s engine key; EngineKeyError when it is missing or others may read it."""
    path = Path(root) / KEY_FILE
    try:
        mode = path.stat().st_mode
        key = path.read_bytes()
    except OSError as exc:
        raise EngineKeyError(
            f"Cannot read the engine's key {path}: {exc.strerror or exc}. Start the engine "
            "(`cnnlab engine`) as the same user as the web server.") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise EngineKeyError(
            f"The engine's key {path} may be read by other users (mode "
            f"{stat.S_IMODE(mode):o}): run `chmod 600 {path}`, or delete it and restart "
            "the engine to make a new one.")
    if len(key) < 16:
        raise EngineKeyError(f"The engine's key {path} is too short ({len(key)} bytes): "
                             "delete it and restart the engine to make a new one.")
    return key
