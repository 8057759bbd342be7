"""`cnnlab serve --processes 2`: two real web processes with nginx in front, on 127.0.0.1.

Which process served a request is read from nginx's access log (``upstream=… route=…``,
cnnlab.cli.nginx_config.standalone_config). Plain HTTP and websocket clients, each with its
own cookie jar, check that a browser stays on one process and browsers spread over both,
and that the sign-in throttle sees each computer's address through the proxy. Then
Chromium signs in through the proxy, is moved to the other process (its route cookie
swapped) and is still signed in, uploads a zip on Explore and trains it; the same person in
a second browser on the first process sees that run (one engine behind both, started by
`cnnlab serve`) and stops it."""

from __future__ import annotations

import html
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlencode, urlsplit

import pytest
import requests
from conftest import ROOT, SHARED_KERAS, TEST_OUTPUT, wait_until
from shapes import shapes_zip
from ui_steps import settle
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from cnnlab.cli import nginx_config, serve
from cnnlab.cli.main import main
from cnnlab.people import accounts
from cnnlab.runs import store as runs
from cnnlab.train import engine_socket

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not any(Path(p).is_file() for p in serve.NGINX_PATHS),
                                 reason="nginx is not installed (.ci/run installs it)")]

PASSWORD = "ann-password-1"
LOG_LINE = re.compile(r'"(?P<method>\S+) (?P<path>\S+) [^"]*" (?P<status>\d+) '
                      r"upstream=(?P<upstream>\S+) route=(?P<route>\S+)")


def test_nginx_config_in_the_repository_is_the_one_serve_writes(capsys) -> None:
    """deploy/nginx.conf (for your own nginx) is `cnnlab serve --processes 2 --nginx-config`."""
    shipped = (ROOT / "deploy" / "nginx.conf").read_text()
    assert shipped == nginx_config.site_config("8501", serve.backends(8501, 2),
                                               serve.upload_mb(ROOT))
    assert "client_max_body_size 201m;" in shipped  # .streamlit/config.toml: 200 MB
    assert main(["serve", "--processes", "2", "--nginx-config"]) == 0
    assert capsys.readouterr().out == shipped


@pytest.mark.parametrize(("argv", "said"), [
    (["--processes", "0"], "--processes 0: give 1 or more web processes."),
    (["--app", "nowhere/app.py"], "--app nowhere/app.py does not exist"),
])
def test_serve_refuses_bad_usage(argv: list[str], said: str, capsys) -> None:
    assert main(["serve", *argv]) == 2
    assert said in capsys.readouterr().err


def _listening_above_a_free_port() -> socket.socket:
    """A listening socket whose port's lower neighbour is free (another test's server may
    hold it), for serve to take as its proxy's port."""
    while True:
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", taken.getsockname()[1] - 1))
                return taken
            except OSError:
                taken.close()


def test_serve_says_which_port_is_taken(capsys) -> None:
    with _listening_above_a_free_port() as taken:
        port = taken.getsockname()[1]
        argv = ["serve", "--processes", "1", "--address", "127.0.0.1", "--port"]
        assert main([*argv, str(port)]) == 2  # the proxy's port
        assert f"port {port} on 127.0.0.1 is taken" in capsys.readouterr().err
        assert main([*argv, str(port - 1)]) == 2  # a web process's
        assert f"port {port} on 127.0.0.1 is taken" in capsys.readouterr().err


class Lab(NamedTuple):
    url: str
    state: Path
    backends: list[str]
    runs: Path


def _free_ports(count: int) -> int:
    """A port with the ``count - 1`` ports after it free too."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count > 65535:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no {count} free ports in a row on 127.0.0.1")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """`cnnlab serve --processes 2` in class mode (local accounts; ann signs in)."""
    folder = tmp_path_factory.mktemp("proxy")
    accounts.Accounts(folder / "accounts.json").add("ann", PASSWORD)
    runs_dir, state = folder / "runs", folder / "state"
    runs_dir.mkdir()
    port = _free_ports(3)
    env = {**os.environ, "CNNLAB_RUNS_DIR": str(runs_dir), "CNNLAB_SIGN_IN": "accounts",
           "CNNLAB_ACCOUNTS_FILE": str(folder / "accounts.json")}
    if SHARED_KERAS.is_dir():
        env.setdefault("KERAS_HOME", str(SHARED_KERAS))
    log_path = folder / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cnnlab", "serve", "--processes", "2", "--port", str(port),
             "--address", "127.0.0.1", "--state-dir", str(state)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while "Ctrl-C stops them all" not in log_path.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"cnnlab serve did not start (status {proc.poll()}):\n"
                            f"{log_path.read_text()}")
            time.sleep(0.3)
        yield Lab(url, state, serve.backends(port, 2), runs_dir)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            status = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    # SIGTERM stops nginx and both web processes: nothing answers on the three ports …
    assert status == 130, log_path.read_text()
    for address in [f"127.0.0.1:{port}", *serve.backends(port, 2)]:
        host, p = address.split(":")
        with pytest.raises(OSError), socket.create_connection((host, int(p)), timeout=1):
            pass
    # … and the engine it started: its socket is gone.
    assert not Path(engine_socket.address(runs_dir)).exists()


def served(lab: Lab) -> list[dict[str, str]]:
    """Every request nginx has logged so far: method, path, status, upstream, route."""
    text = (lab.state / "access.log").read_text()
    return [m.groupdict() for m in LOG_LINE.finditer(text)]


def routes_of(lab: Lab) -> dict[str, set[str]]:
    """Each route cookie → the web processes that served its requests (sign-ins aside:
    they all go to the first process)."""
    seen: dict[str, set[str]] = defaultdict(set)
    for line in served(lab):
        if line["path"] != "/signin":
            seen[line["route"]].add(line["upstream"])
    return seen


def visit_as_a_browser(lab: Lab) -> str:
    """A fresh cookie jar: the page, its health check, the websocket; its route cookie."""
    with requests.Session() as jar:
        first = jar.get(lab.url + "/", timeout=30)
        assert first.status_code == 200
        route = jar.cookies.get(nginx_config.ROUTE_COOKIE)
        assert route, first.headers
        assert jar.get(lab.url + "/_stcore/health", timeout=30).text == "ok"
        again = jar.get(lab.url + "/", timeout=30)
        assert "set-cookie" not in again.headers  # the cookie is handed out once
        cookies = "; ".join(f"{k}={v}" for k, v in jar.cookies.items())
        with connect(lab.url.replace("http", "ws") + "/_stcore/stream",
                     subprotocols=[Subprotocol("streamlit")],
                     additional_headers={"Cookie": cookies}, open_timeout=30) as ws:
            ws.ping().wait(30)  # upgraded (nginx logs it as 101 when it closes)
    return route


def test_each_browser_stays_on_one_process_and_browsers_spread(lab: Lab) -> None:
    # 24 browsers: all on one of two processes by chance would happen once in 8 million.
    routes = [visit_as_a_browser(lab) for _ in range(24)]
    seen = routes_of(lab)
    for route in routes:
        assert len(seen[route]) == 1, (route, seen[route])
    lines = served(lab)
    websockets = {line["route"]: line["upstream"] for line in lines
                  if line["path"] == "/_stcore/stream" and line["status"] == "101"}
    assert set(websockets) >= set(routes)  # each websocket was upgraded through the proxy
    assert {next(iter(seen[r])) for r in routes} == set(lab.backends)


def route_to(lab: Lab, backend: str) -> str:
    """A route cookie value that nginx sends to ``backend``."""
    for _ in range(40):
        with requests.Session() as jar:
            jar.get(lab.url + "/_stcore/health", timeout=30)
            route = jar.cookies[nginx_config.ROUTE_COOKIE]
        if routes_of(lab)[route] == {backend}:
            return route
    raise AssertionError(f"40 fresh browsers and none was sent to {backend}")


def sign_in_from(lab: Lab, source: str, name: str, route: str) -> str:
    """POST a wrong password for ``name`` from the address ``source`` (a loopback address
    other than 127.0.0.1 is another computer to nginx); the page's text."""
    conn = http.client.HTTPConnection(urlsplit(lab.url).hostname, urlsplit(lab.url).port,
                                      timeout=30, source_address=(source, 0))
    try:
        conn.request("POST", "/signin", urlencode({"username": name, "password": "wrong",
                                                  "next": "/"}),
                     {"Content-Type": "application/x-www-form-urlencoded",
                      "Cookie": f"{nginx_config.ROUTE_COOKIE}={route}"})
        return html.unescape(conn.getresponse().read().decode())
    finally:
        conn.close()


def test_the_sign_in_throttle_sees_each_computer_through_the_proxy(lab: Lab) -> None:
    """nginx hands the browser's address on (X-Forwarded-For), so one computer's failures
    slow that computer, not the whole class behind the proxy; and every sign-in goes to one
    process, so its throttle counts a computer's failures whichever process the computer's
    route cookie picks."""
    routes = [route_to(lab, backend) for backend in lab.backends]
    for i in range(accounts.ADDRESS_FREE_FAILURES + 1):
        page = sign_in_from(lab, "127.0.0.2", f"nobody{i}", routes[i % 2])
        assert "Wrong name or password" in page
    assert "Too many failed sign-ins" in sign_in_from(lab, "127.0.0.2", "nobody", routes[1])
    assert "Wrong name or password" in sign_in_from(lab, "127.0.0.3", "nobody", routes[1])
    sign_ins = {line["upstream"] for line in served(lab) if line["path"] == "/signin"}
    assert sign_ins == {lab.backends[0]}


@pytest.mark.browser
def test_sign_in_upload_train_and_stop_through_the_proxy_on_both_processes(
        lab: Lab, _chromium, tmp_path: Path) -> None:
    context = _chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(lab.url)
        page.get_by_label("Name").fill("ann")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text("Signed in as ann").wait_for()
        route = next(c["value"] for c in context.cookies()
                     if c["name"] == nginx_config.ROUTE_COOKIE)
        (first,) = routes_of(lab)[route]

        # The same browser moved to the other process: still signed in (sessions.json).
        (other,) = set(lab.backends) - {first}
        moved = route_to(lab, other)
        context.add_cookies([{"name": nginx_config.ROUTE_COOKIE, "value": moved,
                              "url": lab.url}])
        page.goto(lab.url + "/explore")
        page.get_by_text("Signed in as ann").wait_for()
        page.get_by_role("heading", level=1, name="Explore").wait_for(timeout=90_000)
        assert routes_of(lab)[moved] == {other}

        # A zip upload reaches the process that holds this session.
        zip_path = tmp_path / "shapes.zip"
        zip_path.write_bytes(shapes_zip(per_class=20))
        page.get_by_text("Use your own images").click()
        page.get_by_label("Zip file, up to").set_input_files(str(zip_path))
        page.get_by_text("Ready to load: shapes.zip").wait_for(timeout=30_000)
        load = page.get_by_role("button", name="Load images")
        page.wait_for_function("b => !b.disabled", arg=load.element_handle(), timeout=30_000)
        load.click()
        page.get_by_role("heading", name="What the model trains on").wait_for(timeout=90_000)
        uploads = [line for line in served(lab) if line["path"] == "/upload/zip"
                   and line["route"] == moved]
        assert uploads and {u["upstream"] for u in uploads} == {other}, uploads
        assert all(u["status"] == "200" for u in uploads), uploads

        # Train it on this process; the same person on the other process sees the run (one
        # engine behind both) and stops it there.
        page.get_by_role("link", name="Train").first.click()
        page.get_by_text("Trains in").wait_for(timeout=90_000)
        page.locator(".st-key-train_start button").click()
        page.locator(".st-key-train_stop button").wait_for(timeout=90_000)
        (run,) = [p for p in lab.runs.iterdir() if p.is_dir() and not p.name.startswith(".")]
        there = _chromium.new_context(viewport={"width": 1280, "height": 900})
        try:
            there.add_cookies([*[c for c in context.cookies()
                                 if c["name"] != nginx_config.ROUTE_COOKIE],
                               {"name": nginx_config.ROUTE_COOKIE, "value": route_to(lab, first),
                                "url": lab.url}])
            other_page = there.new_page()
            other_page.set_default_timeout(90_000)
            other_page.goto(lab.url + "/train")
            other_page.get_by_text("Signed in as ann").wait_for()
            other_page.get_by_text(run.name).first.wait_for()  # the run from the other process
            settle(other_page)
            other_page.locator(".st-key-train_stop button").click()
            other_page.get_by_text("Stopping after the current batch").wait_for()
            wait_until(lambda: runs.load_status(run).get("status") == runs.RunStatus.STOPPED,
                       120, "the run stopped from the other process")
        finally:
            there.close()
        # This page, polling the engine, sees it end: its Stop button goes.
        page.locator(".st-key-train_stop button").wait_for(state="detached", timeout=90_000)
    except BaseException:
        TEST_OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(TEST_OUTPUT / "proxy-sign-in.png"), full_page=True)
        raise
    finally:
        context.close()
