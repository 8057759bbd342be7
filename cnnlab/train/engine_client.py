"""A web process's handle on the engine process: the Engine's methods, over its socket.

With ``CNNLAB_ENGINE=process`` each web process (``cnnlab serve --processes N``, or one
``streamlit run app.py``) uses a ``RemoteEngine`` instead of an Engine of its own: the
same methods the pages call (submit, stop, queued, queue_estimate…), answered by the one
``cnnlab engine`` process of the runs root (cnnlab.train.engine_server). Jobs come back as
``RemoteJob``: the run's ids, owner and request, its state as of the last call, a
snapshot read from the run's files, and its events fetched since an index.

No engine running is not an error: the client starts ``cnnlab engine`` itself (detached,
in its own session, logging to ``.engine.log`` in the runs root) and connects, so a laptop
still needs one command. A watchdog thread pings the engine every WATCH_S seconds; when
it has died, a new one is started (the lock on the runs root lets exactly one of the
web processes' engines win), which marks the dead one's runs "interrupted" and queues its
queue again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.people.accounts import LOCAL_USER, User
from cnnlab.runs import store as runs
from cnnlab.train import budgets as budgets_mod
from cnnlab.train import engine_socket, jobs, training, wait_estimate
from cnnlab.train import events as ev

if TYPE_CHECKING:
    from cnnlab.data.datasets import Dataset

WATCH_S = 2.0  # how often the watchdog pings the engine
START_TIMEOUT_S = 30.0  # the longest wait for a started engine to answer
WAIT_POLL_S = 0.2  # RemoteJob.wait's poll
REPLY_TIMEOUT_S = 120.0  # an engine silent this long on one request is taken for dead
# Requests that may be sent again when the engine died before answering.
IDEMPOTENT = frozenset({
    "info", "ping", "describe", "unavailable", "warm", "running", "queued",
    "active_for", "get", "latest", "busy", "position", "queue_estimate", "wait_for",
    "events_since"})


class EngineUnreachable(jobs.EngineRefused):
    """No engine answers for the runs root and none could be started; says why."""


class ExecutorInfo:
    """What pages read of the engine's executor: its name, slots and whether it has a GPU."""

    def __init__(self, name: str, slots: int, gpu: bool) -> None:
        self.name, self.slots, self.gpu = name, slots, gpu


def dataset_wire(dataset: Dataset) -> tuple[str, Any]:
    """A data set as a request carries it: a registry or class data set by name (the
    engine maps a class set's cache), else the set itself (an upload)."""
    from cnnlab.data import datasets, shared_sets

    name = dataset.info.name
    if shared_sets.is_shared(name):
        return ("shared", name)
    return ("registry", name) if name in datasets.REGISTRY else ("data", dataset)


class RemoteEvents:
    """A RemoteJob's events: ``since(seq)`` asks the engine; the latest batch and sample
    predictions are those of the job's state as last fetched."""

    def __init__(self, job: RemoteJob) -> None:
        self._job = job

    def since(self, seq: int = 0) -> list[ev.Event]:
        """The job's events with a sequence number above ``seq``, oldest first."""
        return self._job._engine._call("events_since", self._job.run_id, seq)

    def last_seq(self) -> int:
        """The newest event's sequence number (0 when none)."""
        return int(self._job._refresh()["last_seq"])

    @property
    def latest_batch(self) -> ev.Event | None:
        return self._job._state["latest_batch"]

    @property
    def latest_samples(self) -> dict[str, list[Any]] | None:
        return self._job._state["latest_samples"]


class RemoteJob:
    """A job of the engine process, as a web process sees it (cf. jobs.Job)."""

    def __init__(self, engine: RemoteEngine, state: dict[str, Any]) -> None:
        self._engine, self._state = engine, state
        self.run_id: str = state["run_id"]
        self.run_dir = Path(state["run_dir"])
        self.owner: str = state["owner"]
        self.request: training.TrainRequest = state["request"]
        self.n_classes: int = state["n_classes"]
        self.events = RemoteEvents(self)

    def _refresh(self) -> dict[str, Any]:
        if not self._state["done"]:
            state = self._engine._call("get", self.run_id)
            if state is not None:
                self._state = state
        return self._state

    @property
    def started(self) -> bool:
        return bool(self._state["started"])

    @property
    def slot(self) -> int | None:
        return self._state["slot"]

    @property
    def worker_pid(self) -> int | None:
        """The worker process's id while it trains (local executor), else None."""
        return self._state["worker_pid"]

    @property
    def stop_requested(self) -> bool:
        return bool(self._state["stop_requested"])

    @property
    def result(self) -> training.TrainResult | None:
        result = self._refresh()["result"]
        if result is None:
            return None
        status, message, seconds = result
        return training.TrainResult(status, message, seconds=seconds)

    def done(self) -> bool:
        """Whether the job has ended (asks the engine until it has)."""
        return bool(self._refresh()["done"])

    def wait(self, timeout: float | None = None) -> bool:
        """Poll until the job ends or ``timeout`` passes; True when it ended."""
        end = None if timeout is None else time.monotonic() + timeout
        while not self.done():
            if end is not None and time.monotonic() >= end:
                return False
            time.sleep(WAIT_POLL_S)
        return True

    def snapshot(self) -> dict[str, Any]:
        """What a page needs to draw the job now (jobs.Job.snapshot, from the run's files)."""
        state = self._refresh()
        return jobs.snapshot_of(self.run_dir, self.n_classes, state["latest_batch"],
                                bool(state["done"]))


class RemoteEngine:
    """The Engine's methods, answered by the runs root's engine process.

    Args:
        root: the runs root.
        start: start ``cnnlab engine`` when none answers (else EngineUnreachable).
        watch: run the watchdog thread that brings up a new engine when this one dies.

    Example:
        engine = RemoteEngine("runs")
        job = engine.submit(request, dataset, user=user)
        engine.stop(job.run_id, user)
    """

    def __init__(self, root: Path | str, start: bool = True, watch: bool = True) -> None:
        self.root = runs.ensure_root(root).resolve()
        self._start = start
        self._lock = threading.RLock()
        self._conn: Connection | None = None
        self._started: list[subprocess.Popen[bytes]] = []
        self._closed = threading.Event()
        self.engine_pid = 0
        self.starts = 0  # engines this client started (tests and the log read it)
        self._info()
        if watch:
            threading.Thread(target=self._watch, name="engine-watchdog", daemon=True).start()

    def _info(self) -> None:
        info = self._call("info")
        self.engine_pid = int(info["pid"])
        self.budgets: budgets_mod.Budgets = info["budgets"]
        self.executor = None if info["executor"] is None else ExecutorInfo(*info["executor"])

    # ---------------------------------------------------------------- the connection

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Send one request; raise what the engine raised, or EngineUnreachable."""
        with self._lock:
            for attempt in (1, 2):
                sent = False
                try:
                    conn = self._connection()
                    conn.send((method, args, kwargs))
                    sent = True
                    if not conn.poll(REPLY_TIMEOUT_S):
                        raise TimeoutError(f"no reply in {REPLY_TIMEOUT_S:.0f} s")
                    kind, value = conn.recv()
                    break
                except (EOFError, OSError) as exc:
                    self._drop()
                    if attempt == 2 or (sent and method not in IDEMPOTENT):
                        raise EngineUnreachable(
                            f"The training engine for {self.root} stopped while answering "
                            f"{method!r} ({type(exc).__name__}); a new one starts now. Reload "
                            "the page to see whether your request was done.") from exc
        if kind == "error":
            raise value
        return value

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> Connection:
        """The open connection, or a new one (starting an engine when none answers)."""
        if self._conn is not None:
            return self._conn
        address = engine_socket.address(self.root)
        deadline: float | None = None
        while True:
            try:
                if not (self.root / engine_socket.KEY_FILE).exists():
                    raise FileNotFoundError("no engine has made its key yet")
                key = engine_socket.read_key(self.root)
                self._conn = Client(address, family="AF_UNIX", authkey=key)
                return self._conn
            except AuthenticationError as exc:
                raise EngineUnreachable(
                    f"The training engine for {self.root} refused this server's key: "
                    f"{exc}. Restart the engine (`cnnlab engine`) as the same user.") from exc
            except engine_socket.EngineKeyError as exc:
                raise EngineUnreachable(str(exc)) from exc
            except OSError as exc:  # no socket yet, or a dead engine's
                problem = exc
            if deadline is None:
                if not self._start:
                    raise EngineUnreachable(
                        f"No training engine answers for {self.root} ({problem}): start one "
                        f"with `cnnlab engine --runs-dir {self.root}`.")
                self._spawn()
                deadline = time.monotonic() + START_TIMEOUT_S
            elif time.monotonic() > deadline:
                raise EngineUnreachable(
                    f"Started a training engine for {self.root}, but it did not answer within "
                    f"{START_TIMEOUT_S:.0f} s ({problem}); its log is "
                    f"{self.root / engine_socket.LOG_FILE}.")
            time.sleep(0.05)

    def _spawn(self) -> None:
        """Start ``cnnlab engine`` for the root, detached; the root's lock lets one win."""
        self._started = [p for p in self._started if p.poll() is None]  # reap the dead
        package_root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        with open(self.root / engine_socket.LOG_FILE, "ab") as log:
            self._started.append(subprocess.Popen(
                [sys.executable, "-m", "cnnlab", "engine", "--runs-dir", str(self.root)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                env={**os.environ, "PYTHONPATH": path}))
        self.starts += 1

    def _watch(self) -> None:
        """Ping the engine every WATCH_S; a failed ping starts a new one (via _call)."""
        while not self._closed.wait(WATCH_S):
            try:
                pid = self._call("ping")
            except Exception:  # the next round tries again; pages see their own errors
                continue
            if pid != self.engine_pid:
                with self._lock:
                    try:
                        self._info()
                    except Exception:
                        continue
            self._started = [p for p in self._started if p.poll() is None]

    def close(self) -> None:
        """Stop the watchdog and hang up (the engine goes on for the other web processes)."""
        self._closed.set()
        with self._lock:
            self._drop()

    # ---------------------------------------------------------------- the Engine's methods

    def _job(self, state: dict[str, Any] | None) -> RemoteJob | None:
        return None if state is None else RemoteJob(self, state)

    def _jobs(self, states: list[dict[str, Any]]) -> list[RemoteJob]:
        return [RemoteJob(self, s) for s in states]

    def describe(self) -> str:
        """Where the engine's runs train, for people."""
        return self._call("describe")

    def unavailable(self) -> str:
        """Why the engine cannot train at all ('' when it can)."""
        return self._call("unavailable")

    def warm(self) -> None:
        """Have a worker ready for the next run."""
        self._call("warm")

    def request_errors(self, request: training.TrainRequest, dataset: Dataset) -> list[str]:
        """Everything wrong with ``request`` under the engine's budgets and devices.

        Checked here, from the budgets and device the engine reported, so a page that asks
        on every rerun sends no data set; the engine checks again on submit.
        """
        gpu = bool(self.executor and self.executor.gpu)
        return training.request_errors(request, dataset, self.budgets, gpu=gpu)

    def submit(self, request: training.TrainRequest, dataset: Dataset,
               user: User = LOCAL_USER) -> RemoteJob:
        """Queue a new run owned by ``user`` (jobs.Engine.submit)."""
        return RemoteJob(self, self._call("submit", request, dataset_wire(dataset), user))

    def resume(self, run_dir: Path | str, dataset: Dataset, epochs: int | None = None,
               user: User = LOCAL_USER) -> RemoteJob:
        """Continue a run exactly from its last whole epoch (jobs.Engine.resume)."""
        return RemoteJob(self, self._call("resume", str(run_dir), dataset_wire(dataset),
                                          epochs, user))

    def fine_tune(self, parent_dir: Path | str, dataset: Dataset, epochs: int,
                  user: User = LOCAL_USER, name: str = "", corrections: int = 0) -> RemoteJob:
        """Start a new run from a run's best model (jobs.Engine.fine_tune)."""
        return RemoteJob(self, self._call("fine_tune", str(parent_dir), dataset_wire(dataset),
                                          epochs, user, name, corrections))

    def submit_to_challenge(self, challenge_id: str, run_id: str,
                            user: User = LOCAL_USER) -> dict[str, Any]:
        """Submit ``user``'s run to a challenge, scored in a worker of the engine process
        (jobs.Engine.submit_to_challenge); the submission as a dict."""
        return self._call("submit_to_challenge", challenge_id, run_id, user)

    def stop(self, run_id: str, user: User = LOCAL_USER) -> None:
        """Stop a running run or cancel a queued one; its owner or a teacher only."""
        self._call("stop", run_id, user)

    def cancel(self, run_id: str, user: User = LOCAL_USER) -> None:
        """Cancel a queued run; its owner or a teacher only."""
        self._call("cancel", run_id, user)

    def move_to_front(self, run_id: str, user: User = LOCAL_USER) -> None:
        """Make a queued run the next to start; teachers only."""
        self._call("move_to_front", run_id, user)

    def running(self) -> list[RemoteJob]:
        """Jobs training now, by slot."""
        return self._jobs(self._call("running"))

    def current(self) -> RemoteJob | None:
        """The first job training now, if any."""
        running = self.running()
        return running[0] if running else None

    def queued(self) -> list[RemoteJob]:
        """Jobs waiting for a slot, in order."""
        return self._jobs(self._call("queued"))

    def active_for(self, owner: str) -> list[RemoteJob]:
        """``owner``'s jobs that are queued or training."""
        return self._jobs(self._call("active_for", owner))

    def get(self, run_id: str) -> RemoteJob | None:
        """A job of the engine (running, queued or done), by run id."""
        return self._job(self._call("get", run_id))

    def latest(self, owner: str | None = None) -> RemoteJob | None:
        """The most recently submitted job (of ``owner``, when given)."""
        return self._job(self._call("latest", owner))

    def busy(self) -> bool:
        """Whether a new run would wait."""
        return self._call("busy")

    def position(self, run_id: str) -> int | None:
        """How many queued runs are ahead of ``run_id`` (None when it is not queued)."""
        return self._call("position", run_id)

    def queue_estimate(self, now: float | None = None) -> wait_estimate.QueueEstimate:
        """Each queued run's place and estimated start (jobs.Engine.queue_estimate)."""
        return self._call("queue_estimate", now)

    def wait_for(self, run_id: str, now: float | None = None) -> wait_estimate.Wait | None:
        """``run_id``'s wait; None when it is not queued."""
        return self._call("wait_for", run_id, now)


ENGINE_SETTING = "CNNLAB_ENGINE"
MODES = ("thread", "process")
_REMOTES: dict[Path, RemoteEngine] = {}
_REMOTES_LOCK = threading.Lock()


def engine_mode() -> str:
    """``CNNLAB_ENGINE``: "thread" (the default: an Engine in this process) or "process"."""
    mode = (os.environ.get(ENGINE_SETTING) or "thread").strip().lower()
    if mode not in MODES:
        raise EngineUnreachable(
            f"{ENGINE_SETTING}={mode!r} is not an engine mode: use 'thread' (the engine runs "
            "in this web server, the default) or 'process' (one `cnnlab engine` process "
            "shared by every web server on the runs folder).")
    return mode


def engine_for(root: Path | str | None = None) -> jobs.Engine | RemoteEngine:
    """This process's engine for ``root`` (default: runs.default_root()), made once: an
    Engine of its own, or with CNNLAB_ENGINE=process a RemoteEngine on the engine process.

    Raises runs.RunsRootError (the root cannot be used) or EngineUnreachable.
    """
    if engine_mode() == "thread":
        return jobs.engine_for(root)
    key = Path(root if root is not None else runs.default_root()).resolve()
    with _REMOTES_LOCK:
        remote = _REMOTES.get(key)
        if remote is None:  # the root is checked once, here (ensure_root writes a probe)
            remote = _REMOTES[key] = RemoteEngine(key)
        return remote


def stop_engine(root: Path | str, timeout: float = 60.0) -> int | None:
    """End the engine process answering for ``root`` (SIGTERM: it keeps its queue on disk
    and ends its workers); returns its pid, or None when none answers. For ``cnnlab serve``
    and scripts: web processes leave the engine running when they exit."""
    import signal

    try:
        probe = RemoteEngine(root, start=False, watch=False)
    except EngineUnreachable:
        return None
    probe.close()
    pid = probe.engine_pid
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return pid
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        if _is_zombie(pid):
            break
        time.sleep(0.1)
    return pid


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")
