"""bench/class_load.py: the load client speaks Streamlit's websocket protocol and counts
what a person would see go wrong.

The message classifier and the /proc readers run here in a blink; the two runs against a
real `streamlit run app.py` (conftest's streamlit_server) are slow: a small class of three
sessions on every page, and a page that does not exist counted as an error.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys

import pytest
from conftest import ROOT
from streamlit.proto.Alert_pb2 import Alert
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from bench import class_load
from bench.class_load import Session, Visit, errors_in

PAGES = ["explore", "runs", "configure", "predict", "train"]


def alert(fmt: int, body: str, cache_hash: str = "") -> ForwardMsg:
    msg = ForwardMsg()
    msg.delta.new_element.alert.format = fmt
    msg.delta.new_element.alert.body = body
    if cache_hash:
        msg.hash, msg.metadata.cacheable = cache_hash, True
    return msg


def exception(message: str, warning: bool = False) -> ForwardMsg:
    msg = ForwardMsg()
    msg.delta.new_element.exception.type = "ValueError"
    msg.delta.new_element.exception.message = message
    msg.delta.new_element.exception.is_warning = warning
    return msg


def test_errors_are_exceptions_error_boxes_compile_errors_and_missing_pages() -> None:
    assert errors_in(exception("boom")) == [("exception", "ValueError: boom")]
    assert errors_in(alert(Alert.ERROR, "Something went wrong")) == [
        ("error_box", "Something went wrong")]
    compile_error = ForwardMsg()
    compile_error.script_finished = ForwardMsg.FINISHED_WITH_COMPILE_ERROR
    assert errors_in(compile_error)[0][0] == "exception"
    missing = ForwardMsg()
    missing.page_not_found.page_name = "nosuch"
    assert errors_in(missing) == [("page_not_found", "nosuch")]
    # what is not an error: a warning box, an exception shown as a warning, a finished run
    finished = ForwardMsg()
    finished.script_finished = ForwardMsg.FINISHED_SUCCESSFULLY
    for fine in (alert(Alert.WARNING, "careful"), alert(Alert.INFO, "note"),
                 exception("deprecated", warning=True), finished):
        assert errors_in(fine) == []


def test_a_cached_error_box_counts_again_when_the_server_sends_its_reference() -> None:
    session = Session("ws://unused", "", 1.0)
    session.pending = Visit("explore", 0.0)
    session.handle(alert(Alert.ERROR, "no data", cache_hash="abc"))
    assert session.pending.errors == [("error_box", "no data")]
    # the next request names the hash it holds, so the server sends only a reference
    request = BackMsg.FromString(session.rerun_request("explore")).rerun_script
    assert list(request.cached_message_hashes) == ["abc"] and request.page_name == "explore"
    session.pending = Visit("explore", 0.0)
    ref = ForwardMsg()
    ref.ref_hash = "abc"
    session.handle(ref)
    assert session.pending.errors == [("error_box", "no data")]
    # an error outside any request (a fragment's own run) is kept apart
    session.pending = None
    session.handle(exception("late"))
    assert session.idle_errors == [("exception", "ValueError: late")]


def test_a_run_ends_a_request_only_once_it_started_after_it() -> None:
    async def scenario() -> None:
        session = Session("ws://unused", "", 1.0)
        session.pending = Visit("explore", 0.0)
        session.done = asyncio.get_running_loop().create_future()
        finished = ForwardMsg()
        finished.script_finished = ForwardMsg.FINISHED_SUCCESSFULLY
        session.handle(finished)  # the end of an earlier run
        assert not session.done.done()
        started = ForwardMsg()
        started.new_session.page_script_hash = "h"
        session.handle(started)
        early = ForwardMsg()
        early.script_finished = ForwardMsg.FINISHED_EARLY_FOR_RERUN  # st.rerun: goes on
        session.handle(early)
        assert not session.done.done()
        session.handle(finished)
        assert session.done.done()

    asyncio.run(scenario())


def test_the_stream_address_and_the_servers_processes() -> None:
    assert class_load.stream_url("http://127.0.0.1:8501") == "ws://127.0.0.1:8501/_stcore/stream"
    assert class_load.stream_url("https://lab.example/cnn/") == (
        "wss://lab.example/cnn/_stcore/stream")
    parent, ticks, rss_kb = class_load.proc_stat(os.getpid())
    assert parent == os.getppid() and ticks >= 0 and rss_kb > 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert os.getpid() in class_load.listening_pids(s.getsockname()[1])


@pytest.mark.slow
def test_a_small_class_gets_every_page_without_an_error(streamlit_server: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.class_load", "--url", streamlit_server,
         "--sessions", "3", "--seconds", "8"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["errors"]["total"] == 0, out["error_examples"]
    assert list(out["pages"]) == PAGES
    for page in out["pages"].values():
        assert page["requests"] >= 1 and page["answered"] == page["requests"], page
        assert page["p50_ms"] > 0 and page["p95_ms"] >= page["p50_ms"]
    assert out["pages"]["predict"]["title"] == "Draw & predict"
    assert out["explore_alone_p50"] > 0 and out["explore_under_load_p50"] > 0
    assert out["explore_load_ratio"] > 0 and out["probe"]["alone"]["answered"] == 10
    assert out["answered"] == out["requests"] and out["requests_per_s"] > 0
    server = out["server"]
    assert len(server["pids"]) == 1 and server["cpu_s"] > 0 and server["rss_mb_peak"] > 0
    for key in ("seconds", "sessions", "interval_s", "client_cpu_s", "machine"):
        assert key in out


@pytest.mark.slow
def test_a_page_that_is_not_there_counts_as_an_error(streamlit_server: str) -> None:
    args = class_load.parse_args(["--url", streamlit_server, "--sessions", "1", "--seconds",
                                  "2", "--warmup", "0", "--alone", "1", "--pages", "nosuch"])
    out = asyncio.run(class_load.run_class(args))
    assert out["pages"]["nosuch"]["requests"] >= 1
    assert out["errors"]["page_not_found"] == out["pages"]["nosuch"]["errors"] >= 1
    assert out["errors"]["total"] == out["errors"]["page_not_found"]  # the probe's Explore: none


def test_a_fragment_with_run_every_is_rerun_until_the_page_is_left() -> None:
    class Socket:
        def __init__(self) -> None:
            self.sent: list[bytes] = []

        async def send(self, data: bytes) -> None:
            self.sent.append(data)

    async def scenario() -> list[bytes]:
        session = Session("ws://unused", "", 1.0)
        session.ws = Socket()  # type: ignore[assignment]
        session.page_hash = "page"
        tick = ForwardMsg()
        tick.auto_rerun.fragment_id, tick.auto_rerun.interval = "frag", 0.05
        session.handle(tick)
        await asyncio.sleep(0.13)
        session._stop_auto()  # what a new page request does first
        sent = list(session.ws.sent)
        await asyncio.sleep(0.1)
        assert session.ws.sent == sent
        return sent

    sent = asyncio.run(scenario())
    assert len(sent) >= 1
    request = BackMsg.FromString(sent[0]).rerun_script
    assert (request.fragment_id, request.page_script_hash, request.is_auto_rerun) == (
        "frag", "page", True)
