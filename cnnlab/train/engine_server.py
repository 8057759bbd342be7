"""The engine as its own process (``cnnlab engine``): one Engine, served over a socket.

Several web processes on one runs root (``CNNLAB_ENGINE=process``) share this one engine:
its queue, slots, budgets and the run store's writer. Each web process talks to it
through a RemoteEngine (cnnlab.train.engine_client) over the root's Unix socket
(cnnlab.train.engine_socket): a request is ``(method, args, kwargs)``, a reply
``("ok", value)`` or ``("error", exception)``. Jobs cross as plain dicts (``job_state``);
data sets as a registry or class data set name, loaded here, or the Dataset itself (an
upload).

Budgets, the per-user cap and owner checks are the Engine's own, so they are enforced
here; the user a request names is the web process's signed-in user, trusted because only
the lab's OS user can read the key that opens the socket.

Exactly one engine runs per root: the Engine's lock on ``.engine.lock`` decides, and a
second ``cnnlab engine`` exits at once (EXIT_BLOCKED).
"""

from __future__ import annotations

import functools
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection, Listener
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.people.accounts import User
from cnnlab.runs import store as runs
from cnnlab.train import engine_socket, jobs

if TYPE_CHECKING:
    from cnnlab.data.datasets import Dataset

EXIT_BLOCKED = 3  # another engine holds the runs root

# A data set on the wire: ("registry", name), ("shared", name) or ("data", Dataset).
DatasetWire = tuple[str, Any]


@functools.lru_cache(maxsize=2)
def _registry_dataset(name: str) -> Dataset:
    from cnnlab.data import datasets

    return datasets.load(name)


def dataset_from_wire(wire: DatasetWire) -> Dataset:
    """The Dataset a client sent: a registry set loaded here (once), a class data set
    mapped from its cache (cheap, and always its current version), or the set itself."""
    kind, value = wire
    if kind == "registry":
        return _registry_dataset(str(value))
    if kind == "shared":
        from cnnlab.data import shared_sets

        return shared_sets.load(str(value))
    return value


def job_state(job: jobs.Job | None) -> dict[str, Any] | None:
    """What a client needs of a job, as plain data (None stays None)."""
    if job is None:
        return None
    result = job.result
    return {
        "run_id": job.run_id, "run_dir": str(job.run_dir), "owner": job.owner,
        "request": job.request, "n_classes": job.n_classes, "started": job.started,
        "slot": job.slot, "done": job.done(), "stop_requested": job.stop_requested,
        "result": None if result is None else (result.status, result.message, result.seconds),
        "latest_batch": job.events.latest_batch, "latest_samples": job.events.latest_samples,
        "last_seq": job.events.last_seq(),
        "worker_pid": getattr(job.handle, "pid", None),
    }


class Service:
    """The engine's methods as the socket offers them: jobs as ``job_state`` dicts."""

    def __init__(self, engine: jobs.Engine) -> None:
        self.engine = engine

    def info(self) -> dict[str, Any]:
        ex = self.engine.executor
        return {"pid": os.getpid(), "root": str(self.engine.root),
                "budgets": self.engine.budgets,
                "executor": None if ex is None else (ex.name, ex.slots, ex.gpu)}

    def ping(self) -> int:
        return os.getpid()

    def describe(self) -> str:
        return self.engine.describe()

    def unavailable(self) -> str:
        return self.engine.unavailable()

    def warm(self) -> None:
        self.engine.warm()

    def submit(self, request: Any, dataset: DatasetWire, user: User) -> dict | None:
        return job_state(self.engine.submit(request, dataset_from_wire(dataset), user=user))

    def resume(self, run_dir: str, dataset: DatasetWire, epochs: int | None,
               user: User) -> dict | None:
        return job_state(self.engine.resume(run_dir, dataset_from_wire(dataset), epochs,
                                            user=user))

    def fine_tune(self, parent_dir: str, dataset: DatasetWire, epochs: int, user: User,
                  name: str, corrections: int) -> dict | None:
        return job_state(self.engine.fine_tune(parent_dir, dataset_from_wire(dataset), epochs,
                                               user=user, name=name, corrections=corrections))

    def submit_to_challenge(self, challenge_id: str, run_id: str, user: User) -> dict:
        return self.engine.submit_to_challenge(challenge_id, run_id, user)

    def stop(self, run_id: str, user: User) -> None:
        self.engine.stop(run_id, user)

    def cancel(self, run_id: str, user: User) -> None:
        self.engine.cancel(run_id, user)

    def move_to_front(self, run_id: str, user: User) -> None:
        self.engine.move_to_front(run_id, user)

    def running(self) -> list[dict | None]:
        return [job_state(j) for j in self.engine.running()]

    def queued(self) -> list[dict | None]:
        return [job_state(j) for j in self.engine.queued()]

    def active_for(self, owner: str) -> list[dict | None]:
        return [job_state(j) for j in self.engine.active_for(owner)]

    def get(self, run_id: str) -> dict | None:
        return job_state(self.engine.get(run_id))

    def latest(self, owner: str | None) -> dict | None:
        return job_state(self.engine.latest(owner))

    def busy(self) -> bool:
        return self.engine.busy()

    def position(self, run_id: str) -> int | None:
        return self.engine.position(run_id)

    def queue_estimate(self, now: float | None) -> Any:
        return self.engine.queue_estimate(now)

    def wait_for(self, run_id: str, now: float | None) -> Any:
        return self.engine.wait_for(run_id, now)

    def events_since(self, run_id: str, seq: int) -> list[dict[str, Any]]:
        job = self.engine.get(run_id)
        return [] if job is None else job.events.since(seq)

    def method(self, name: str) -> Callable[..., Any]:
        """The method ``name``; AttributeError for anything the socket does not offer."""
        if name.startswith("_") or name == "method" or not hasattr(Service, name):
            raise AttributeError(f"The engine has no request {name!r}.")
        return getattr(self, name)


def portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a RuntimeError with its words."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def handle(conn: Connection, service: Service) -> None:
    """Answer one client's requests, one at a time, until it hangs up."""
    with conn:
        while True:
            try:
                method, args, kwargs = conn.recv()
            except (EOFError, OSError):
                return
            except Exception as exc:  # a request that does not unpickle here
                reply: tuple[str, Any] = ("error", portable(exc))
            else:
                try:
                    reply = ("ok", service.method(method)(*args, **kwargs))
                except Exception as exc:  # the client raises it
                    reply = ("error", portable(exc))
            try:
                conn.send(reply)
            except (pickle.PicklingError, TypeError, AttributeError) as exc:
                conn.send(("error", RuntimeError(f"The engine's reply does not pickle: {exc}")))
            except OSError:
                return


def serve(root: Path | str, log: Callable[[str], None] = print) -> int:
    """Run the engine for ``root`` until SIGTERM or SIGINT; returns an exit status.

    Returns EXIT_BLOCKED at once when another engine holds the root.
    """
    engine = jobs.Engine(runs.ensure_root(root))
    if engine.blocked:
        log(engine.blocked)
        engine.close()
        return EXIT_BLOCKED
    address = engine_socket.address(engine.root)
    key = engine_socket.make_key(engine.root)
    # The lock is ours, so a socket file there is a dead engine's.
    Path(address).unlink(missing_ok=True)
    listener = Listener(address, family="AF_UNIX", authkey=key)
    os.chmod(address, 0o600)
    service = Service(engine)

    stopping = threading.Event()

    def finish(signum: int, frame: Any) -> None:
        # A flag and a closed socket, not an exception raised wherever the signal lands:
        # a CI run saw an engine take SIGTERM and go on accepting for 18 minutes.
        stopping.set()
        listener.close()  # accept() now fails at once, wherever the main thread is

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    log(f"cnnlab engine (pid {os.getpid()}) for {engine.root} on {address}: "
        f"{engine.describe()}; {len(engine.queued())} run(s) queued again, "
        f"{len(engine.interrupted)} interrupted")
    sys.stdout.flush()
    try:
        while not stopping.is_set():
            try:
                conn = listener.accept()
            except (OSError, EOFError, AuthenticationError) as exc:  # no key, or gone
                if not stopping.is_set():
                    log(f"refused a connection: {exc}")
                continue
            threading.Thread(target=handle, args=(conn, service), daemon=True,
                             name="engine-client").start()
    finally:
        listener.close()
        Path(address).unlink(missing_ok=True)
        engine.close(keep_queue=True)
    return 0
