"""``cnnlab serve``: several ``streamlit run app.py`` web processes and nginx in front.

One Streamlit process runs Python under one GIL, so it uses about one core however many
the machine has. ``cnnlab serve --processes N`` starts ``cnnlab engine`` for the runs
folder (this command's child), then N web processes on 127.0.0.1 (the ports after
``--port``), each with ``CNNLAB_ENGINE=process`` so they share that one training engine,
then nginx on ``--address:--port`` with the configuration of cnnlab.cli.nginx_config (each
browser kept on one process), and stops them all on Ctrl-C or SIGTERM. If a web process
or nginx exits, the rest are stopped too: a class half served is worse than a clear
failure. The engine may end: the web processes start another themselves.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cnnlab.cli import nginx_config
from cnnlab.cli.common import CliError

NGINX_PATHS = ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
READY_SECONDS = 120  # a web process answers /_stcore/health within a few seconds
STOP_SECONDS = 20  # then what has not ended on SIGTERM is killed
DEFAULT_UPLOAD_MB = 200  # Streamlit's own default for server.maxUploadSize


def backends(port: int, processes: int) -> list[str]:
    """The web processes' addresses: the ``processes`` ports after the proxy's."""
    return [f"127.0.0.1:{port + i}" for i in range(1, processes + 1)]


def upload_mb(app_dir: Path) -> int:
    """The app's upload limit in MB, from its ``.streamlit/config.toml``."""
    path = app_dir / ".streamlit" / "config.toml"
    try:
        with path.open("rb") as fh:
            return int(tomllib.load(fh).get("server", {}).get("maxUploadSize",
                                                              DEFAULT_UPLOAD_MB))
    except FileNotFoundError:
        return DEFAULT_UPLOAD_MB
    except (tomllib.TOMLDecodeError, ValueError, TypeError) as exc:
        raise CliError(f"cannot read server.maxUploadSize from {path}: {exc}") from exc


def find_nginx() -> str:
    """The nginx binary, or a CliError that says how to install it."""
    found = shutil.which("nginx") or next((p for p in NGINX_PATHS if Path(p).is_file()), None)
    if found is None:
        raise CliError("nginx is not installed: `apt-get install nginx` (Debian, Ubuntu), or "
                       "run your own proxy with `cnnlab serve --nginx-config` and start the "
                       "web processes with `cnnlab serve --no-proxy`.")
    return found


def _die_with_parent() -> None:
    """In a child, before exec: get SIGTERM if `cnnlab serve` itself is killed (Linux)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def web_command(app: Path, port: int) -> list[str]:
    """One web process: ``streamlit run app.py`` on 127.0.0.1 only (nginx faces outside).

    No file watcher: a class's server does not reload code that changes under it (Streamlit
    drops a changed module from sys.modules, and a page importing it meanwhile fails)."""
    return [sys.executable, "-m", "streamlit", "run", str(app), "--server.address",
            "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
            "--server.fileWatcherType", "none"]


def check_port_free(host: str, port: int) -> None:
    """CliError naming the port when something listens there already (an earlier serve)."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CliError(f"port {port} on {host} is taken ({exc.strerror}): the proxy takes "
                           "--port and the web processes the ports after it; choose another "
                           "--port, or stop what listens there.") from exc


def wait_healthy(procs: dict[str, subprocess.Popen[bytes]], addresses: list[str]) -> None:
    """Wait until every web process answers /_stcore/health; CliError if one exits."""
    deadline = time.monotonic() + READY_SECONDS
    pending = list(addresses)
    while pending:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise CliError(f"{name} exited with status {proc.returncode} while starting; "
                               "its log is above.")
        address = pending[0]
        try:
            with urllib.request.urlopen(f"http://{address}/_stcore/health", timeout=2):
                pending.pop(0)
                continue
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise CliError(f"the web process on {address} did not answer within "
                           f"{READY_SECONDS} s.")
        time.sleep(0.3)


@contextlib.contextmanager
def _stopped_on_exit(procs: dict[str, subprocess.Popen[bytes]]) -> Iterator[None]:
    """Terminate every process on the way out (nginx first: no request meets a dying
    web process), then kill what has not gone within STOP_SECONDS (the engine lets its
    workers reach a checkpoint: up to 10 s)."""
    try:
        yield
    finally:
        for proc in reversed(procs.values()):
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + STOP_SECONDS
        for proc in reversed(procs.values()):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve(args: argparse.Namespace) -> dict[str, Any]:
    """Start the web processes (and nginx unless ``--no-proxy``); run until stopped."""
    app = Path(args.app).resolve()
    if not app.is_file():
        raise CliError(f"--app {args.app} does not exist: run cnnlab serve from the folder "
                       "that holds app.py (the repository), or give its path with --app.")
    if args.processes < 1:
        raise CliError(f"--processes {args.processes}: give 1 or more web processes.")
    addresses = backends(args.port, args.processes)
    if args.nginx_config:
        return {"nginx_config": nginx_config.site_config(
            str(args.port), addresses, upload_mb(app.parent))}
    nginx = None if args.no_proxy else find_nginx()
    for address in ([f"{args.address}:{args.port}"] if nginx else []) + addresses:
        host, number = address.rsplit(":", 1)
        check_port_free(host, int(number))
    env = {**os.environ, "CNNLAB_ENGINE": "process"}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM stops everything as Ctrl-C does
    with _stopped_on_exit(procs):
        engine = start_engine(app.parent, env)
        if engine is not None:
            procs["engine"] = engine
        for address in addresses:
            port = int(address.rsplit(":", 1)[1])
            # Its own session: Ctrl-C reaches `cnnlab serve` alone, which stops the
            # processes in order.
            procs[f"web process {address}"] = subprocess.Popen(
                web_command(app, port), cwd=app.parent, env=env, start_new_session=True,
                preexec_fn=_die_with_parent)
        wait_healthy(procs, addresses)
        url = f"http://{addresses[0]}"
        if nginx is not None:
            state = Path(args.state_dir) if args.state_dir else Path(
                tempfile.mkdtemp(prefix="cnnlab-serve-"))
            nginx_config.make_state_dir(state)
            conf = state / "nginx.conf"
            listen = f"{args.address}:{args.port}"
            conf.write_text(nginx_config.standalone_config(state, listen, addresses,
                                                           upload_mb(app.parent)))
            procs["nginx"] = subprocess.Popen(
                [nginx, "-p", str(state), "-c", str(conf), "-e", str(state / "error.log")],
                start_new_session=True, preexec_fn=_die_with_parent)
            _wait_listening(procs["nginx"], "127.0.0.1" if args.address in ("0.0.0.0", "::")
                            else args.address, args.port, state)
            url = f"http://{args.address}:{args.port} (nginx; its files in {state})"
        print(f"CNN Lab on {url}: {args.processes} web process(es) on "
              f"{', '.join(addresses)}. Ctrl-C stops them all.", file=sys.stderr, flush=True)
        while True:
            for name, proc in procs.items():
                # The engine may end (the web processes' watchdogs start another within
                # seconds, which marks its runs interrupted): the class goes on.
                if name != "engine" and proc.poll() is not None:
                    raise CliError(f"{name} exited with status {proc.returncode}; stopping "
                                   "the others.")
            time.sleep(0.5)


def start_engine(app_dir: Path, env: dict[str, str]) -> subprocess.Popen[bytes] | None:
    """``cnnlab engine`` for the runs folder the web processes will use, started first so
    that it is this command's child (stopped with it) rather than one a web process starts
    detached; None when another engine already serves that folder (it is left alone)."""
    from cnnlab.runs import store as runs
    from cnnlab.train import engine_server, engine_socket

    root = app_dir / runs.default_root()  # the engine runs in app_dir, with this environment
    socket_path = Path(engine_socket.address(root))
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "engine"], cwd=app_dir, env=env,
                            start_new_session=True, preexec_fn=_die_with_parent)
    deadline = time.monotonic() + READY_SECONDS
    while True:
        status = proc.poll()
        if status == engine_server.EXIT_BLOCKED:
            return None
        if status is not None:
            raise CliError(f"cnnlab engine exited with status {status} while starting; its "
                           "log is above.")
        with contextlib.suppress(OSError):
            if socket_path.stat().st_ctime >= started - 1:  # its own socket, not a stale one
                return proc
        if time.monotonic() > deadline:
            raise CliError(f"cnnlab engine did not listen on {socket_path} within "
                           f"{READY_SECONDS} s.")
        time.sleep(0.2)


def _wait_listening(proc: subprocess.Popen[bytes], host: str, port: int, state: Path) -> None:
    """Wait until nginx answers on its port; CliError with its error log if it exits."""
    import socket

    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            log = (state / "error.log").read_text(errors="replace")[-2000:]
            raise CliError(f"nginx exited with status {proc.returncode}:\n{log}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        if time.monotonic() > deadline:
            raise CliError(f"nginx did not listen on {host}:{port} within 20 s.")
        time.sleep(0.1)


def add_parser(sub: Any) -> None:
    """The ``serve`` sub-command."""
    s = sub.add_parser("serve", help="several web processes with nginx in front (a class)")
    s.add_argument("--processes", type=int, default=os.cpu_count() or 1, metavar="N",
                   help="web processes (default: the number of cores)")
    s.add_argument("--port", type=int, default=8501,
                   help="the proxy's port; the web processes take the N ports after it "
                        "(default 8501)")
    s.add_argument("--address", default="0.0.0.0",
                   help="where the proxy listens (default 0.0.0.0: every interface; "
                        "127.0.0.1 for this machine only)")
    s.add_argument("--app", default="app.py", help="the Streamlit app (default: ./app.py)")
    s.add_argument("--state-dir", default=None, metavar="DIR",
                   help="nginx's configuration, pid, logs and temp files (default: a new "
                        "temporary folder)")
    mode = s.add_mutually_exclusive_group()
    mode.add_argument("--no-proxy", action="store_true",
                      help="start only the web processes, for your own nginx")
    mode.add_argument("--nginx-config", action="store_true",
                      help="print the nginx site configuration for these ports and exit")
    s.set_defaults(func=serve)
