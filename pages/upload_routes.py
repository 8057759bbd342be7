"""Big zip uploads as a plain HTTP route that streams to disk, never into memory.

Streamlit's ``st.file_uploader`` keeps every uploaded file's bytes in the server's memory,
and a session that reads it keeps them again, so a class uploading a few hundred megabytes
each could run a web process out of memory. Explore's zip uploader (pages/zip_upload.py)
posts the file here instead (served beside the app by ``st.App`` in app.py): the body is
written to a temporary file chunk by chunk as it arrives, and the page decodes the images
from that file (``datasets.load_zip`` with a path).

A request names its **ticket** in the ``X-Upload-Ticket`` header (a header, not the query,
so no access log holds it): a random secret the page made for its browser session
(``session_ticket``), marked by a ``<ticket>.ticket`` file in the upload folder. Only a
known ticket may write, so nobody without it can put a file in a session or read one.
Tickets live on disk, not in one process's memory, so every web process on the machine
knows them (behind nginx the route cookie sends an upload to the session's own anyway).
The folder (``CNNLAB_UPLOADS_DIR``, else ``<tempdir>/cnnlab-uploads-<user>``) holds, per
ticket:

==============================  =======================================================
``<ticket>.ticket``             the ticket was made here (touched while its page is used)
``<ticket>.<random>.part``      an upload arriving; removed when it fails
``<ticket>.zip`` + ``.json``    the last complete upload and its file name, not loaded yet
``<ticket>.loaded.zip``         the zip the session's data set was loaded from
                                (``pages.state.upload_source``); the next load replaces it
==============================  =======================================================

Files untouched for ``MAX_AGE_HOURS`` are removed whenever a ticket is made or an upload
finishes. The size limit is Streamlit's ``server.maxUploadSize`` (MB), the one setting
that also sizes nginx's ``client_max_body_size`` (cnnlab/cli/nginx_config.py).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import secrets
import tempfile
import time
import zipfile
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from pages.signin_routes import _same_site

UPLOAD_PATH = "/upload/zip"
TICKET_HEADER = "X-Upload-Ticket"
NAME_HEADER = "X-File-Name"  # the file's name, URI-encoded (headers are ASCII)
TICKET_KEY = "upload_ticket"  # the session's ticket in st.session_state (Explore only)
MAX_AGE_HOURS = 6.0
_TICKET = re.compile(r"[A-Za-z0-9_-]{32,64}")  # what secrets.token_urlsafe(32) makes
MAX_NAME = 200  # characters of a file name kept; longer names are cut


def uploads_dir() -> Path:
    """The server's upload folder, made (owner only) when missing."""
    named = os.environ.get("CNNLAB_UPLOADS_DIR")
    # Per user: another account on the machine cannot have made (and so read) the folder.
    folder = (Path(named) if named
              else Path(tempfile.gettempdir()) / f"cnnlab-uploads-{getpass.getuser()}")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def limit_mb() -> int:
    """The upload limit in MB: Streamlit's ``server.maxUploadSize``."""
    from streamlit import config

    return int(config.get_option("server.maxUploadSize"))


def limit_bytes() -> int:
    """The upload limit in bytes (a megabyte is 1024 × 1024 bytes, as for Streamlit)."""
    return limit_mb() * 1024 * 1024


# ---------------------------------------------------------------------------- tickets


def new_ticket() -> str:
    """A fresh ticket, known to the route from now on; old files are swept first."""
    sweep()
    ticket = secrets.token_urlsafe(32)
    _path(ticket, ".ticket").touch()
    return ticket


def known(ticket: str) -> bool:
    """Whether ``ticket`` is well formed and was made here (and not swept since)."""
    return bool(_TICKET.fullmatch(ticket)) and _path(ticket, ".ticket").is_file()


def session_ticket(session: MutableMapping[str, Any]) -> str:
    """The ticket of the session whose state is ``session`` (``st.session_state``): made
    on first use, remade if it was swept; its files are kept fresh while it is used."""
    ticket = session.get(TICKET_KEY)
    if not isinstance(ticket, str) or not known(ticket):
        ticket = session[TICKET_KEY] = new_ticket()
    else:
        for suffix in (".ticket", ".loaded.zip"):
            with contextlib.suppress(FileNotFoundError):
                os.utime(_path(ticket, suffix))
    return ticket


def _path(ticket: str, suffix: str) -> Path:
    # Only well-formed tickets reach here (known() or new_ticket()): no path separators.
    return uploads_dir() / f"{ticket}{suffix}"


# ---------------------------------------------------------------------------- the files


@dataclass(frozen=True)
class Pending:
    """A complete upload waiting to be loaded: its file on disk, its name and size."""

    path: Path
    name: str
    size: int


def pending(ticket: str) -> Pending | None:
    """The ticket's complete upload not loaded yet, or None."""
    path = _path(ticket, ".zip")
    try:
        meta = json.loads(_path(ticket, ".json").read_text(encoding="utf-8"))
        return Pending(path, str(meta["name"]), path.stat().st_size)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def complete(ticket: str, part: Path, name: str) -> Pending:
    """Make the file ``part`` (in the upload folder) the ticket's pending upload, called
    ``name``; it replaces a pending upload not loaded."""
    _path(ticket, ".json").write_text(json.dumps({"name": name}), encoding="utf-8")
    path = _path(ticket, ".zip")
    os.replace(part, path)  # complete, or not there at all
    return Pending(path, name, path.stat().st_size)


def take(ticket: str) -> Path:
    """Mark the ticket's pending upload as loaded: it replaces the zip loaded before (the
    session's previous upload is gone), and its path is returned."""
    loaded = _path(ticket, ".loaded.zip")
    os.replace(_path(ticket, ".zip"), loaded)
    _path(ticket, ".json").unlink(missing_ok=True)
    return loaded


def sweep(max_age_hours: float = MAX_AGE_HOURS) -> int:
    """Remove upload files untouched for ``max_age_hours``; returns how many went."""
    cutoff = time.time() - max_age_hours * 3600
    removed = 0
    for path in uploads_dir().iterdir():
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:  # another process swept it first
            pass
    return removed


# ---------------------------------------------------------------------------- the route


def _refuse(status: int, sentence: str) -> Response:
    return PlainTextResponse(sentence, status_code=status)


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:,.1f} MB"


async def upload_zip(request: Request) -> Response:
    """Stream the request body into the ticket's upload folder as ``<ticket>.zip``.

    Refused (one sentence, nothing kept): another site (403), an unknown ticket (403), a
    body over the limit (413, as soon as Content-Length or the bytes so far say so), a
    body that is not a zip (400). Answers {"name", "bytes"} when the file is complete.
    """
    if not _same_site(request):
        return _refuse(403, "This upload came from another site and was refused.")
    ticket = request.headers.get(TICKET_HEADER, "")
    if not known(ticket):
        return _refuse(403, "This upload's ticket is not known here (the page may be from "
                            "before a server restart): reload the page and upload again.")
    limit = limit_bytes()
    too_big = (f"The upload is larger than the {limit_mb()} MB allowed: upload a smaller "
               "zip (fewer or smaller images).")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return _refuse(413, too_big)
    name = unquote(request.headers.get(NAME_HEADER, "") or "upload.zip")[:MAX_NAME]
    part = _path(ticket, f".{secrets.token_hex(8)}.part")
    received = 0
    try:
        # Chunks as they arrive (about 64 KB each), written off the event loop, which also
        # serves every session's websocket; aclosing: an early return ends the stream.
        async with contextlib.aclosing(request.stream()) as chunks:
            with part.open("wb") as out:
                async for chunk in chunks:
                    received += len(chunk)
                    if received > limit:
                        break
                    if chunk:
                        await run_in_threadpool(out.write, chunk)
        if received > limit:
            part.unlink()
            return _refuse(413, too_big)
    except ClientDisconnect:  # the browser gave up (closed the tab, cancelled)
        part.unlink(missing_ok=True)
        return Response(status_code=400)
    except OSError:  # the disk is full or the folder went away
        part.unlink(missing_ok=True)
        return _refuse(507, f"The server has no room for {_mb(received)} more just now: "
                            "try again later or ask the teacher.")
    if not zipfile.is_zipfile(part):
        part.unlink()
        return _refuse(400, f"The upload ({received:,} bytes) is not a zip file: zip a folder "
                            "that holds one sub-folder of images per class and upload that.")
    complete(ticket, part, name)
    await run_in_threadpool(sweep)
    return JSONResponse({"name": name, "bytes": received})


ROUTES = [Route(UPLOAD_PATH, upload_zip, methods=["POST"])]
