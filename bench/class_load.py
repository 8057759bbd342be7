"""A class on the lab: N sessions asking for pages through Streamlit's websocket, no browser.

    python -m bench.class_load [--url http://127.0.0.1:8501] [--sessions 10] [--interval 2]
                               [--seconds 60] [--warmup 10] [--alone 10] [--timeout 60]
                               [--pages explore,runs,configure,predict,train]
                               [--server-pids PID,PID] [--cookie NAME=VALUE]
    # from the repository root, against a running `streamlit run app.py` (or a proxy in
    # front of several web processes); this bench starts no server

Each session is one websocket on ``/_stcore/stream`` speaking the browser's protocol
(Streamlit 1.67): a page request is a BackMsg ``rerun_script`` whose ClientState names the
page as a browser does (``page_name`` = the address's path on the first visit, then the
``page_script_hash`` the navigation message gave), with the page's query string, no widget
states (every widget at its default) and the hashes of the messages the session holds, so
the server sends references to those as it would to a browser. A request ends at the
``script_finished`` of the full run (not a fragment's run) that started after it; a run
that ends early for st.rerun or st.switch_page goes on to the next. A fragment with
``run_every`` is rerun as the browser does, untimed. No XSRF token is sent: Streamlit asks
for one only before reading its own st.login cookie; ``--cookie`` reaches st.context.cookies
(class mode's sign-in).

Model: ``--sessions`` people, each asking for a page every ``--interval`` seconds (never
two at once: a slow page delays the next), cycling through ``--pages`` from its own
offset, started evenly over one interval; plus one probe session that asks for Explore
alone in a loop (0.5 s between requests). First the probe alone (``--alone`` requests,
after two to warm up), then everyone for ``--warmup`` seconds (each session's first visit
of each page at the default interval, TensorFlow's import in the server) and ``--seconds``
measured: only requests sent in that window count.

Errors: an exception element (not a warning), an error box (st.error), a script that did
not compile, "page not found", a disconnect, a timeout (no end in ``--timeout`` s; the
session then reconnects, as a person reloading would). Server: user+system CPU and RSS
from /proc/<pid>/stat and /status of ``--server-pids``, else of the processes on this
machine listening on the URL's port (found in /proc/net/tcp), each with its child
processes (training workers), sampled every second over the window. Behind a proxy that
process is the proxy: give the web processes' pids.

Prints one JSON object (times in milliseconds); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from streamlit.proto.Alert_pb2 import Alert
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.typing import Subprotocol

from bench.page_cost import percentile

DEFAULT_PAGES = "explore,runs,configure,predict,train"  # Explore, Runs, Configure, Draw & …
PROBE_PAGE = "explore"
PROBE_GAP_S = 0.5  # the probe's pause between requests: one more person, not a flood
ERROR_KINDS = ("exception", "error_box", "page_not_found", "disconnect", "timeout")
FINISHED = (ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_WITH_COMPILE_ERROR)


def log(*args: object) -> None:
    """Progress, on stderr: stdout carries only the JSON object."""
    print(*args, file=sys.stderr, flush=True)


def errors_in(msg: ForwardMsg) -> list[tuple[str, str]]:
    """The errors a person would see in ``msg``, as (kind, text): an exception element
    (warnings excepted), an error box, a script that did not compile, "page not found"."""
    kind = msg.WhichOneof("type")
    if kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
        element = msg.delta.new_element
        shown = element.WhichOneof("type")
        if shown == "exception" and not element.exception.is_warning:
            return [("exception", f"{element.exception.type}: {element.exception.message}")]
        if shown == "alert" and element.alert.format == Alert.ERROR:
            return [("error_box", element.alert.body)]
    elif kind == "page_not_found":
        return [("page_not_found", msg.page_not_found.page_name)]
    elif kind == "script_finished" and msg.script_finished == FINISHED[1]:
        # FINISHED_WITH_COMPILE_ERROR; its traceback follows in a session_event, not counted
        return [("exception", "the script did not compile")]
    return []


@dataclass
class Visit:
    """One page request: its time to the run's end (None: no end) and what went wrong."""

    page: str
    sent: float  # time.monotonic() when sent
    ms: float | None = None
    errors: list[tuple[str, str]] = field(default_factory=list)


class Disconnected(Exception):
    """The server closed the websocket (or it broke) while a request waited."""


class Session:
    """One browser tab's websocket: page requests, the message cache, fragment reruns."""

    def __init__(self, ws_url: str, cookie: str, timeout: float) -> None:
        self.ws_url, self.cookie, self.timeout = ws_url, cookie, timeout
        self.ws: ClientConnection | None = None
        self.reader: asyncio.Task | None = None
        self.pending: Visit | None = None
        self.started = False  # the pending request's run has begun (its new_session came)
        self.done: asyncio.Future | None = None
        self.hashes: dict[str, str] = {}  # url path -> page_script_hash, from the navigation
        self.titles: dict[str, str] = {}  # url path -> the page's title
        self.page_hash = ""  # the page now shown: fragment reruns name it
        # hash -> (run count when last seen, its errors): a referenced message counts again
        self.cache: dict[str, tuple[int, list[tuple[str, str]]]] = {}
        self.runs = 0
        self.max_age = 2  # the server's global.maxCachedMessageAge, from new_session
        self.auto: dict[str, asyncio.Task] = {}
        self.idle_errors: list[tuple[str, str]] = []  # outside any request (fragment runs)
        self.fragment_runs = 0
        self.reconnects = 0

    async def open(self) -> None:
        """Connect as the browser does: subprotocol "streamlit", the cookie if one is given."""
        headers = {"Cookie": self.cookie} if self.cookie else {}
        self.ws = await connect(self.ws_url, subprotocols=[Subprotocol("streamlit")],
                                additional_headers=headers, max_size=None,
                                open_timeout=self.timeout)
        self.reader = asyncio.create_task(self._read(self.ws))

    async def close(self) -> None:
        """Close the websocket; a later visit opens a new one (a fresh server session)."""
        self._stop_auto()
        ws, self.ws = self.ws, None
        if ws is not None:
            await ws.close()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)
        self.cache.clear()
        self.hashes.clear()

    async def visit(self, page: str) -> Visit:
        """Ask for ``page`` ("explore" or "explore?dataset=mnist") and wait for its end."""
        visit = Visit(page, time.monotonic())
        self._stop_auto()  # the browser drops a page's timers when it leaves the page
        try:
            if self.ws is None:
                if self.reader is not None:
                    self.reconnects += 1
                await self.open()
            assert self.ws is not None
            self.pending, self.started = visit, False
            self.done = asyncio.get_running_loop().create_future()
            t0 = time.perf_counter()
            await self.ws.send(self.rerun_request(page))
            await asyncio.wait_for(self.done, self.timeout)
            visit.ms = 1000 * (time.perf_counter() - t0)
        except TimeoutError:
            visit.errors.append(("timeout", f"{page}: no end in {self.timeout:g} s"))
            await self.close()  # as a person reloading: the stuck run is left behind
        except (Disconnected, ConnectionClosed, WebSocketException, OSError) as exc:
            visit.errors.append(("disconnect", f"{page}: {exc!r}"[:200]))
            await self.close()
        finally:
            self.pending = self.done = None
        return visit

    def rerun_request(self, page: str, fragment_id: str = "") -> bytes:
        """The BackMsg asking for ``page`` (or, with ``fragment_id``, a fragment's auto-rerun)."""
        path, _, query = page.partition("?")
        msg = BackMsg()
        state = msg.rerun_script
        state.query_string = query
        state.widget_states.SetInParent()
        if fragment_id:
            state.page_script_hash, state.fragment_id = self.page_hash, fragment_id
            state.is_auto_rerun = True
        elif path in self.hashes:
            state.page_script_hash = self.hashes[path]
        else:
            state.page_name = path  # a browser's first load of /<path>
        state.cached_message_hashes.extend(self.cache)
        return msg.SerializeToString()

    async def _read(self, ws: ClientConnection) -> None:
        """Handle every message until the websocket closes; a waiting request then fails."""
        reason = "the server closed the websocket"
        try:
            async for raw in ws:
                msg = ForwardMsg()
                msg.ParseFromString(raw if isinstance(raw, bytes) else raw.encode())
                self.handle(msg)
        except ConnectionClosed as exc:
            reason = f"the websocket broke: {exc}"
        except Exception as exc:  # a message this client cannot read: say so, not "closed"
            reason = f"unreadable message: {exc!r}"
            await ws.close()
        finally:
            if self.ws is ws:  # not our own close: the server left
                self.ws = None
                if self.pending is None:
                    self.idle_errors.append(("disconnect", f"between requests: {reason}"))
            if self.done is not None and not self.done.done():
                self.done.set_exception(Disconnected(reason))

    def handle(self, msg: ForwardMsg) -> None:
        """Take in one message: its errors, the run's start and end, pages, cache, timers."""
        kind = msg.WhichOneof("type")
        if kind == "ref_hash":
            _, errors = self.cache.get(msg.ref_hash, (0, []))
            self.cache[msg.ref_hash] = (self.runs, errors)
        else:
            errors = errors_in(msg)
            if msg.metadata.cacheable and msg.hash:
                self.cache[msg.hash] = (self.runs, errors)
        (self.pending.errors if self.pending else self.idle_errors).extend(errors)
        if kind == "new_session":
            self.page_hash = msg.new_session.page_script_hash
            self.max_age = msg.new_session.config.max_cached_message_age
            if not msg.metadata.run.fragment_ids:
                self.started = self.pending is not None
        elif kind == "navigation":
            for page in msg.navigation.app_pages:
                self.hashes[page.url_pathname] = page.page_script_hash
                self.titles[page.url_pathname] = page.page_name
        elif kind == "auto_rerun":
            self._start_auto(msg.auto_rerun.fragment_id, msg.auto_rerun.interval)
        elif kind == "stop_auto_rerun":
            for fragment_id in msg.stop_auto_rerun.fragment_ids:
                self._stop_auto(fragment_id)
        elif kind == "script_finished":
            if msg.script_finished == ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY:
                self.fragment_runs += 1
            elif msg.script_finished == ForwardMsg.FINISHED_SUCCESSFULLY:
                self._age_cache()
            if msg.script_finished in FINISHED and self.started and self.done is not None:
                if not self.done.done():
                    self.done.set_result(None)

    def _age_cache(self) -> None:
        # as the browser's cache: a message unused for more than max_age runs is dropped
        self.runs += 1
        self.cache = {h: v for h, v in self.cache.items() if self.runs - v[0] <= self.max_age}

    def _start_auto(self, fragment_id: str, interval: float) -> None:
        if fragment_id and interval > 0 and fragment_id not in self.auto:
            self.auto[fragment_id] = asyncio.create_task(self._tick(fragment_id, interval))

    def _stop_auto(self, fragment_id: str | None = None) -> None:
        for key in [fragment_id] if fragment_id else list(self.auto):
            task = self.auto.pop(key, None)
            if task is not None:
                task.cancel()

    async def _tick(self, fragment_id: str, interval: float) -> None:
        """Rerun the fragment every ``interval`` s, as the browser's timer does."""
        while True:
            await asyncio.sleep(interval)
            if self.ws is None:
                return
            try:
                await self.ws.send(self.rerun_request("", fragment_id))
            except ConnectionClosed:
                return


# ---------------------------------------------------------------------------- the server


def clock_ticks() -> int:
    """Clock ticks per second: the unit of CPU times in /proc/<pid>/stat."""
    return os.sysconf("SC_CLK_TCK")


def listening_pids(port: int) -> list[int]:
    """Processes on this machine with a listening TCP socket on ``port`` (/proc/net/tcp*)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{cols[9]}]")
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                pids.append(int(proc.name))
        except OSError:  # another user's process, or gone
            continue
    return sorted(pids)


def proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, user+system CPU ticks, RSS kB) of ``pid``, None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "(comm)", which may hold spaces
    rss = next((int(line.split()[1]) for line in status.splitlines()
                if line.startswith("VmRSS:")), 0)
    return int(fields[1]), int(fields[11]) + int(fields[12]), rss


class ServerMeter:
    """CPU and RSS of the server's processes and their children, sampled over a window."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.first: dict[int, int] = {}  # pid -> CPU ticks when first seen
        self.last: dict[int, int] = {}
        self.children: set[int] = set()
        self.rss_kb: list[tuple[int, int]] = []  # (servers, children) per sample
        self.t0 = self.t1 = 0.0

    def sample(self) -> None:
        stats = {int(p.name): s for p in Path("/proc").iterdir()
                 if p.name.isdigit() and (s := proc_stat(int(p.name))) is not None}
        family = set(self.pids)
        grew = True
        while grew:  # children, grandchildren, …
            kids = {pid for pid, s in stats.items() if s[0] in family} - family
            family |= kids
            grew = bool(kids)
        self.children |= family - set(self.pids)
        for pid in family:
            self.first.setdefault(pid, stats[pid][1])
            self.last[pid] = stats[pid][1]
        self.rss_kb.append((sum(stats[p][2] for p in self.pids if p in stats),
                            sum(stats[p][2] for p in family - set(self.pids))))
        self.t0 = self.t0 or time.monotonic()
        self.t1 = time.monotonic()

    def result(self, how: str) -> dict:
        def cpu(pids: set[int]) -> float:
            return sum(self.last[p] - self.first[p] for p in pids) / clock_ticks()

        span = max(self.t1 - self.t0, 1e-9)
        servers = cpu(set(self.pids))
        kids = cpu(self.children)
        mb = [(s / 1024, c / 1024) for s, c in self.rss_kb]
        return {"measured": how, "pids": self.pids, "child_pids": sorted(self.children),
                "seconds": round(span, 1), "cpu_s": round(servers, 1),
                "cpu_cores": round(servers / span, 2),  # 1.0 = one core busy all along
                "children_cpu_s": round(kids, 1),
                "rss_mb_start": round(mb[0][0]), "rss_mb_peak": round(max(m[0] for m in mb)),
                "rss_mb_end": round(mb[-1][0]),
                "children_rss_mb_peak": round(max(m[1] for m in mb))}


# ---------------------------------------------------------------------------- the class


def stream_url(url: str) -> str:
    """The websocket address of ``url`` (its path kept: a proxy's base URL)."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/_stcore/stream"


def timing(visits: list[Visit]) -> dict:
    """Requests, answers, p50/p95/max milliseconds and errors of ``visits``."""
    ms = [v.ms for v in visits if v.ms is not None]
    out: dict = {"requests": len(visits), "answered": len(ms),
                 "errors": sum(len(v.errors) for v in visits)}
    if ms:
        out |= {"p50_ms": round(statistics.median(ms), 1),
                "p95_ms": round(percentile(ms, 0.95), 1), "max_ms": round(max(ms), 1)}
    return out


async def probe_alone(probe: Session, n: int) -> list[Visit]:
    """Two warm-up visits of Explore, then ``n`` timed ones, with nobody else on."""
    for _ in range(2):
        await probe.visit(PROBE_PAGE)
    visits = []
    for _ in range(n):
        visits.append(await probe.visit(PROBE_PAGE))
        await asyncio.sleep(PROBE_GAP_S)
    return visits


async def person(session: Session, pages: list[str], first: int, interval: float,
                 start: float, end: float, out: list[Visit]) -> None:
    """Ask for a page every ``interval`` s from ``start`` to ``end``, from ``pages[first]``."""
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    k, due = 0, start
    while time.monotonic() < end:
        out.append(await session.visit(pages[(first + k) % len(pages)]))
        k += 1
        due = max(due + interval, time.monotonic())  # a late answer skips, not bunches
        await asyncio.sleep(due - time.monotonic())


async def prober(probe: Session, end: float, out: list[Visit]) -> None:
    """Ask for Explore again and again until ``end``, a short pause between requests."""
    while time.monotonic() < end:
        out.append(await probe.visit(PROBE_PAGE))
        await asyncio.sleep(PROBE_GAP_S)


async def meter(server: ServerMeter, start: float, end: float) -> None:
    """Sample the server every second from ``start`` to ``end``."""
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    while time.monotonic() < end:
        server.sample()
        await asyncio.sleep(1.0)
    server.sample()


def find_server(args: argparse.Namespace) -> tuple[list[int], str]:
    """The server's pids and how they were found."""
    if args.server_pids:
        return [int(p) for p in args.server_pids.split(",")], "--server-pids"
    parts = urlsplit(args.url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    pids = listening_pids(port)
    return pids, f"listening on port {port} on this machine (/proc/net/tcp, /proc/*/fd)"


async def run_class(args: argparse.Namespace) -> dict:
    """The whole measurement; the JSON object's fields."""
    ws_url = stream_url(args.url)
    cookie = "; ".join(args.cookie)
    pages = [p.strip().lstrip("/") for p in args.pages.split(",") if p.strip()]
    probe = Session(ws_url, cookie, args.timeout)
    log(f"probe alone: {args.alone} visits of {PROBE_PAGE}")
    alone = await probe_alone(probe, args.alone)
    log("alone:", timing(alone))

    t0 = time.monotonic() + 0.1
    window, end = t0 + args.warmup, t0 + args.warmup + args.seconds
    people = [Session(ws_url, cookie, args.timeout) for _ in range(args.sessions)]
    visits: list[list[Visit]] = [[] for _ in people]
    probed: list[Visit] = []
    pids, how = find_server(args)
    server = ServerMeter(pids) if pids else None
    log(f"{args.sessions} sessions for {args.warmup:g} s warm-up + {args.seconds:g} s; "
        f"server: {pids or 'not found'} ({how})")
    c0 = time.process_time()
    await asyncio.gather(
        *(person(s, pages, i % len(pages), args.interval,
                 t0 + i * args.interval / len(people), end, visits[i])
          for i, s in enumerate(people)),
        prober(probe, end, probed),
        *([meter(server, window, end)] if server else []))
    client_cpu = time.process_time() - c0
    await asyncio.gather(*(s.close() for s in [*people, probe]))

    counted = [v for vs in visits for v in vs if window <= v.sent < end]
    under = [v for v in probed if window <= v.sent < end]
    idle = [e for s in [*people, probe] for e in s.idle_errors]
    every = [e for v in [*alone, *counted, *under] for e in v.errors] + idle
    kinds = Counter(kind for kind, _ in every)
    titles = {**probe.titles, **{k: t for s in people for k, t in s.titles.items()}}
    per_page = {}
    for page in pages:
        entry = {"title": titles.get(page.partition("?")[0], page)}
        per_page[page] = entry | timing([v for v in counted if v.page == page])
    alone_t, under_t = timing(alone), timing(under)
    ratio = (round(under_t["p50_ms"] / alone_t["p50_ms"], 2)
             if "p50_ms" in alone_t and "p50_ms" in under_t else None)
    answered = sum(v.ms is not None for v in counted + under)
    return {
        "url": args.url, "sessions": args.sessions, "interval_s": args.interval,
        "seconds": args.seconds, "warmup_s": args.warmup, "pages": per_page,
        "explore_alone_p50": alone_t.get("p50_ms"),
        "explore_under_load_p50": under_t.get("p50_ms"), "explore_load_ratio": ratio,
        "probe": {"alone": alone_t, "under_load": under_t},
        "requests": len(counted) + len(under), "answered": answered,
        "requests_per_s": round(answered / args.seconds, 2),
        "errors": {"total": len(every), **{k: kinds.get(k, 0) for k in ERROR_KINDS}},
        "error_examples": sorted({f"{k}: {text[:160]}" for k, text in every})[:5],
        "fragment_runs": sum(s.fragment_runs for s in [*people, probe]),
        "reconnects": sum(s.reconnects for s in [*people, probe]),
        "client_cpu_s": round(client_cpu, 1),
        "server": server.result(how) if server else {"measured": f"nothing: none {how}"},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv``, default sys.argv's)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8501",
                   help="the lab's address (a web process or a proxy)")
    p.add_argument("--sessions", type=int, default=10, help="people at once")
    p.add_argument("--interval", type=float, default=2.0,
                   help="seconds between a person's page requests")
    p.add_argument("--seconds", type=float, default=60.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds of load not counted")
    p.add_argument("--alone", type=int, default=10, help="timed probe visits with no load")
    p.add_argument("--pages", default=DEFAULT_PAGES,
                   help="url paths in turn, each with an optional ?query")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds before a request counts as timed out")
    p.add_argument("--server-pids", help="comma-separated pids to measure (default: the "
                   "processes listening on the URL's port)")
    p.add_argument("--cookie", action="append", default=[], metavar="NAME=VALUE",
                   help="sent on every websocket handshake (class mode's sign-in); repeatable")
    args = p.parse_args(argv)
    if not [page for page in args.pages.split(",") if page.strip()]:
        p.error("--pages names no page: give url paths such as explore,runs")
    return args


def main() -> None:
    from bench.accuracy import machine

    result = asyncio.run(run_class(parse_args()))
    result["machine"] = machine()  # after the measurement: its Keras import costs it nothing
    print(json.dumps(result))


if __name__ == "__main__":
    main()
