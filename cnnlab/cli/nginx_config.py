"""The nginx configuration that puts one address in front of several web processes.

Streamlit keeps a browser session in the memory of the process that serves its websocket
(``/_stcore/stream``), and a file upload (``/_stcore/upload_file/…``) must reach that same
process. Open-source nginx has no ``sticky cookie``, so the proxy makes its own: a browser
that arrives without the route cookie gets one holding that request's random
``$request_id``, and every request is hashed on the cookie (on the request id for the very
first one) with ``hash … consistent``, so a browser stays on one process and different
browsers spread over all of them. A process that goes away moves only its own browsers.
Sign-ins (``POST /signin``) all go to the first process, so its throttle sees them all.

``site_config`` is the part a user with their own nginx copies into the ``http`` block
(``deploy/nginx.conf`` is it for two processes; ``cnnlab serve --nginx-config`` prints it
for any); ``standalone_config`` wraps it in a whole configuration that ``cnnlab serve``
runs as the current user, everything under one state folder.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path

ROUTE_COOKIE = "cnnlab_route"
# Streamlit's websocket may stay quiet for long (a student reading a page); nginx's default
# 60 s read timeout would cut it and the page would reconnect, so a day.
WEBSOCKET_TIMEOUT = "1d"


def site_config(listen: str, backends: list[str], upload_mb: int) -> str:
    """The ``map``, ``upstream`` and ``server`` blocks for an nginx ``http`` context.

    Args:
        listen: what nginx listens on, e.g. ``"8501"`` or ``"127.0.0.1:8501"``.
        backends: the web processes, e.g. ``["127.0.0.1:8502", "127.0.0.1:8503"]``.
        upload_mb: the app's upload limit (``server.maxUploadSize``); the proxy lets a
            request body that big through, plus a megabyte of form overhead.

    Example:
        ``site_config("8501", ["127.0.0.1:8502", "127.0.0.1:8503"], 200)``
    """
    if not backends:
        raise ValueError("site_config needs at least one web process address in backends, "
                         "e.g. ['127.0.0.1:8502'].")
    servers = "\n".join(f"    server {b} max_fails=1 fail_timeout=5s;" for b in backends)
    stand_ins = "".join(f"\n    server {b} backup;" for b in backends[1:])
    return f"""\
# CNN Lab behind nginx: each browser stays on one web process (cnnlab/cli/nginx_config.py).
# Goes inside nginx's http {{ }} block, e.g. as /etc/nginx/conf.d/cnnlab.conf.
# `cnnlab serve --processes N --nginx-config` writes it for N web processes; start those
# with `cnnlab serve --processes N --no-proxy` (same --port) from the app's folder.

# A browser without the route cookie: hash this request's random id, and hand it the
# same id as its cookie, so its next requests (websocket, uploads) hash alike.
map $cookie_{ROUTE_COOKIE} $cnnlab_route {{
    ""      $request_id;
    default $cookie_{ROUTE_COOKIE};
}}
map $cookie_{ROUTE_COOKIE} $cnnlab_set_route {{
    ""      "{ROUTE_COOKIE}=$request_id; Path=/; HttpOnly; SameSite=Lax";
    default "";
}}
# Streamlit's websocket: pass the upgrade on, keep plain requests' connections closable.
map $http_upgrade $cnnlab_connection {{
    default upgrade;
    ""      close;
}}

upstream cnnlab {{
    hash $cnnlab_route consistent;
{servers}
}}
# Every sign-in goes to the first process (the others stand in while it is down): its
# throttle, kept in memory, then counts each failed attempt, whichever process a browser
# is on. Signed-in sessions are in sessions.json, valid on every process.
upstream cnnlab_sign_in {{
    server {backends[0]};{stand_ins}
}}

server {{
    listen {listen};
    # The app's upload limit (Streamlit's server.maxUploadSize) plus form overhead.
    client_max_body_size {upload_mb + 1}m;

    proxy_http_version 1.1;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $cnnlab_connection;
    # The browser's own host and port: Streamlit and the sign-in routes compare the
    # Origin header with it.
    proxy_set_header Host $http_host;
    # The browser's address (sign-in throttling), set, not appended: a client cannot
    # forge it. Uvicorn trusts these from 127.0.0.1 only.
    proxy_set_header X-Forwarded-For $remote_addr;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_read_timeout {WEBSOCKET_TIMEOUT};
    proxy_send_timeout {WEBSOCKET_TIMEOUT};
    # Uploads stream through to the process instead of waiting in nginx's temp files.
    proxy_request_buffering off;
    proxy_buffering off;
    # Set only on a browser's first response (an empty value adds no header).
    add_header Set-Cookie $cnnlab_set_route always;

    location / {{
        proxy_pass http://cnnlab;
    }}
    location = /signin {{
        proxy_pass http://cnnlab_sign_in;
    }}
}}
"""


def standalone_config(state_dir: Path, listen: str, backends: list[str], upload_mb: int) -> str:
    """A whole nginx configuration for ``nginx -p STATE_DIR -c nginx.conf``: in the
    foreground, as the current user, its pid, logs and temp files inside ``state_dir``.

    The access log names the web process and route of every request (``upstream=…
    route=…``), so which process served a browser can be read back."""
    temps = "\n".join(f"    {kind}_temp_path {state_dir / 'temp' / kind};"
                      for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    # nginx started by root hands its workers to "nobody", who could not write the temp
    # folders here; started by anyone else it cannot change user at all.
    user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""
    return f"""\
# Written by `cnnlab serve`; the site part is the same as deploy/nginx.conf.
{user}daemon off;
master_process on;
worker_processes 1;
pid {state_dir / 'nginx.pid'};
error_log {state_dir / 'error.log'} warn;

events {{
    worker_connections 4096;
}}

http {{
    log_format cnnlab '$remote_addr [$time_local] "$request" $status '
                      'upstream=$upstream_addr route=$cnnlab_route';
    access_log {state_dir / 'access.log'} cnnlab;
{temps}

{_indent(site_config(listen, backends, upload_mb))}}}
"""


def make_state_dir(state_dir: Path) -> None:
    """The folders ``standalone_config`` names (nginx creates only the last level)."""
    (state_dir / "temp").mkdir(parents=True, exist_ok=True)


def _indent(text: str) -> str:
    return "".join(f"    {line}" if line.strip() else line for line in text.splitlines(True))
