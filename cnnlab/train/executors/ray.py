"""The Ray executor: each run in its own Ray actor, on one machine or a cluster.

``CNNLAB_EXECUTOR=ray`` selects it. With ``RAY_ADDRESS`` set the server joins that cluster;
without it (and no Ray already started in this process) a local Ray instance starts.
Each run asks Ray for ``CNNLAB_RAY_CPUS`` CPUs (default 1) and ``CNNLAB_RAY_GPUS`` GPUs
(default 0; a fraction such as 0.5 shares a GPU between runs).

No shared file system is assumed: the worker trains in a temporary folder on its node,
gets the files it needs (the resumable checkpoint, a fine-tune's starting model) and an
uploaded data set through Ray's object store, and sends its events through a Ray queue,
with every new or changed model file as a ``file`` event before the epoch it belongs to.
A class data set (``shared:…``) is put into the object store once per version, from the
server's decoded cache, and each run gets its reference: every node holds one copy, which
its runs map read-only, however many students train on it.
The cnnlab package itself reaches the workers as a Ray ``py_modules`` runtime environment;
TensorFlow/Keras must be installed on every worker node (``pip install ".[ray]"``).

A cluster with token authentication on (Ray turns it on once a token exists) is joined only
with ``RAY_AUTH_MODE=token`` and the cluster's token here (``RAY_AUTH_TOKEN``, a file named
by ``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token``): Ray never turns token mode on by
itself when an address is given. A join it refuses says so, and what to set.
"""

from __future__ import annotations

import functools
import os
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.runs.store import RunStatus
from cnnlab.train import events as ev
from cnnlab.train.executors import ExecutorUnavailable, RunSpec

if TYPE_CHECKING:
    from ray import ObjectRef
    from ray.util.queue import Queue

    from cnnlab.data.datasets import Dataset

POLL_S = 0.2


def _resources() -> tuple[float, float]:
    """(CPUs, GPUs) each run asks Ray for, from CNNLAB_RAY_CPUS / CNNLAB_RAY_GPUS."""
    try:
        cpus = float(os.environ.get("CNNLAB_RAY_CPUS") or 1)
        gpus = float(os.environ.get("CNNLAB_RAY_GPUS") or 0)
    except ValueError as exc:
        raise ExecutorUnavailable(
            f"CNNLAB_RAY_CPUS / CNNLAB_RAY_GPUS must be numbers ({exc}); e.g. "
            "CNNLAB_RAY_CPUS=2 CNNLAB_RAY_GPUS=0.5.") from exc
    return cpus, gpus


class FileShipper:
    """Sends the work folder's new or changed files as ``file`` events."""

    def __init__(self, work_dir: Path, emit: ev.Emit) -> None:
        self.work_dir, self.emit = work_dir, emit
        self.seen = self._stats()  # the inputs the server sent are not sent back

    def _stats(self) -> dict[str, tuple[int, int]]:
        out = {}
        for path in self.work_dir.rglob("*"):
            name = path.relative_to(self.work_dir).as_posix()
            if path.is_file() and not path.name.startswith(".") and ".partial." not in name:
                st = path.stat()
                out[name] = (st.st_mtime_ns, st.st_size)
        return out

    def ship(self) -> None:
        """Send every file that is new or changed since the last call."""
        now = self._stats()
        for name, stat in now.items():
            if self.seen.get(name) != stat:
                self.emit(ev.make("file", name=name,
                                  data=(self.work_dir / name).read_bytes()))
        self.seen = now


def _is_auth_failure(exc: BaseException) -> bool:
    """True when ``exc`` or an exception behind it is Ray refusing this process's token.

    ray.init wraps the refusal: ConnectionError("Failed to connect to Ray cluster …") from a
    RuntimeError whose text holds the AuthenticationError ("InvalidAuthToken") of its last try.
    """
    from ray import exceptions

    refused = getattr(exceptions, "AuthenticationError", ())  # not in Rays before tokens
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, refused) or any(
                word in str(cause) for word in ("AuthenticationError", "InvalidAuthToken")):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _token_source() -> str | None:
    """Where Ray would read this process's token from (never the token itself)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return f"RAY_AUTH_TOKEN_PATH={os.environ['RAY_AUTH_TOKEN_PATH']}"
    default = Path.home() / ".ray" / "auth_token"
    return str(default) if default.is_file() else None


def _join_error(address: str | None, exc: Exception) -> str:
    """One sentence on a failed ray.init: the cause, what was given, and what to do."""
    what = f"join Ray (RAY_ADDRESS={address!r})" if address else "start Ray (no RAY_ADDRESS)"
    set_token = ("Set RAY_AUTH_MODE=token and the cluster's token (`ray get-auth-token` on "
                 "the head node prints it) as RAY_AUTH_TOKEN, or in a file named by "
                 "RAY_AUTH_TOKEN_PATH or at ~/.ray/auth_token, then restart the lab "
                 "(README, \"Scaling out with Ray\")")
    if _is_auth_failure(exc):
        mode = os.environ.get("RAY_AUTH_MODE") or "unset"
        source = _token_source()
        if mode.lower() != "token":
            return (f"Could not {what}: the cluster asks for token "
                    f"authentication and this server sent no token (RAY_AUTH_MODE is {mode}, "
                    "and Ray only sends a token when it is 'token'). " + set_token + ".")
        if source is None:
            return (f"Could not {what}: RAY_AUTH_MODE=token but this server has "
                    "no authentication token (no RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or "
                    "~/.ray/auth_token). " + set_token + ".")
        return (f"Could not {what}: the cluster refused the authentication "
                f"token this server sent (from {source}). Give it the token the head node "
                "uses: `ray get-auth-token` there prints it.")
    return (f"Could not {what}: {type(exc).__name__}: {exc}. Check the address and that "
            "`ray start --head` runs there, or unset CNNLAB_EXECUTOR.")


@functools.cache
def _actor_class() -> Any:
    import ray

    # stop() must run while run() trains. Ray's typed overloads of remote() leave out the
    # actor option max_concurrency that it accepts.
    @ray.remote(max_concurrency=2)  # type: ignore[call-overload]
    class RunActor:
        """One run on a Ray worker."""

        def __init__(self) -> None:
            from cnnlab.train import callbacks

            self.stop_flag = callbacks.StopFlag()

        def run(self, spec: RunSpec, files: dict[str, bytes], dataset_npz: bytes | None,
                queue: Queue, shared: Dataset | None = None) -> None:
            from cnnlab.data import datasets
            from cnnlab.train.executors import worker

            with tempfile.TemporaryDirectory(prefix=f"cnnlab-{spec.run_id}-") as tmp:
                work_dir = Path(tmp)
                for name, data in files.items():
                    (work_dir / name).write_bytes(data)
                shipper = FileShipper(work_dir, queue.put)

                def emit(event: ev.Event) -> None:
                    if event["kind"] in ("epoch", "metrics", "done"):
                        shipper.ship()  # the files first: an epoch row means its checkpoint
                    queue.put(event)

                # A class data set arrives resolved from its object reference: read-only
                # arrays in this node's object store, not a copy.
                dataset = datasets.from_npz(dataset_npz) if dataset_npz else shared
                worker.execute(spec, work_dir, emit, self.stop_flag, dataset)

        def stop(self) -> None:
            self.stop_flag.set("user")

    return RunActor


class RayHandle:
    """A run in a Ray actor."""

    def __init__(self, spec: RunSpec, run_dir: Path, on_event: ev.Emit,
                 options: dict[str, Any], shared: ObjectRef | None = None) -> None:
        from ray.util.queue import Queue

        files = {name: (run_dir / name).read_bytes() for name in spec.inputs}
        npz = Path(spec.dataset.npz).read_bytes() if spec.dataset.npz else None
        self.queue = Queue()
        self.actor = _actor_class().options(**options).remote()
        # ``shared`` as a top-level argument: Ray hands the actor the object itself.
        self.ref = self.actor.run.remote(spec, files, npz, self.queue, shared)
        self._killed = False
        self._reader = threading.Thread(target=self._read, args=(on_event,),
                                        name=f"ray-events-{spec.run_id}", daemon=True)
        self._reader.start()

    def _read(self, on_event: ev.Emit) -> None:
        import ray

        done = None
        finished = False
        while True:
            if not finished:
                finished = bool(ray.wait([self.ref], timeout=POLL_S)[0])
            try:
                batch = self.queue.get_nowait_batch(self.queue.qsize())
            except Exception:  # the queue's actor is gone
                batch = []
            for event in batch:
                if event["kind"] == "done":
                    done = event
                else:
                    on_event(event)
            if finished and not batch:
                break
        if done is None:
            try:
                ray.get(self.ref)
                why = "the Ray worker ended without reporting its result"
            except Exception as exc:  # RayActorError, a node lost, a crash in native code
                why = f"the Ray worker died ({type(exc).__name__}: {str(exc)[:300]})"
            if self._killed:
                why = "the server ended the Ray worker"
            done = ev.make("done", status=RunStatus.FAILED, message=(
                f"Training failed: {why}. The epochs done so far and the best model are "
                "kept; resume the run to continue from its last epoch."))
        ray.kill(self.actor)
        self.queue.shutdown(force=True)  # ray.kill of the queue's actor (no restart)
        on_event(done)

    def stop(self) -> None:
        """Ask the actor to stop within one batch."""
        self.actor.stop.remote()

    def kill(self) -> None:
        """End the actor now."""
        import ray

        self._killed = True
        ray.kill(self.actor)


class RayExecutor:
    """Runs each RunSpec in a Ray actor; ``slots`` runs in flight (default: what fits)."""

    name = "ray"

    def __init__(self, slots: int | None = None) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ExecutorUnavailable(
                "CNNLAB_EXECUTOR=ray but the ray package is not installed here: run "
                "`pip install -e \".[ray]\"` in the lab's folder, or unset CNNLAB_EXECUTOR to "
                "train in local worker processes.") from exc
        import cnnlab

        self.cpus, self.gpus = _resources()
        self._started_ray = False
        if not ray.is_initialized():
            address = os.environ.get("RAY_ADDRESS") or None
            # Only a local Ray instance is sized here; joining a cluster passes no num_cpus.
            local: dict[str, Any] = {} if address else {"num_cpus": os.cpu_count()}
            try:
                # py_modules ships this cnnlab to every worker (job level only, in Ray).
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         runtime_env={"py_modules": [cnnlab],
                                      "env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2"}},
                         **local)
            except Exception as exc:  # no cluster there, its token refused, a version mismatch
                raise ExecutorUnavailable(_join_error(address, exc)) from exc
            self._started_ray = True
        total = ray.cluster_resources()
        self.gpu = self.gpus > 0 and total.get("GPU", 0) > 0
        fit = int(total.get("CPU", 1) // max(self.cpus, 1e-9))
        if self.gpus > 0:
            fit = min(fit, int(total.get("GPU", 0) // self.gpus))
        self.slots = slots or max(1, fit)
        self.options = {"num_cpus": self.cpus, "num_gpus": self.gpus}
        self.total = total
        # Class data sets in the object store: name → (version, reference), one per set.
        self._shared: dict[str, tuple[str, ObjectRef]] = {}
        self._shared_lock = threading.Lock()

    def shared_ref(self, name: str) -> ObjectRef:
        """The object reference of class data set ``name``, put into the object store once
        per version from the decoded cache (a newer version replaces the older)."""
        import numpy as np
        import ray

        from cnnlab.data import shared_sets
        from cnnlab.data.datasets import Dataset

        with self._shared_lock:
            version = shared_sets.version(name)
            kept = self._shared.get(name)
            if kept is not None and kept[0] == version:
                return kept[1]
            ds = shared_sets.load(name)
            # Plain arrays over the maps: Ray stores numpy arrays without pickling them.
            plain = Dataset(ds.info, *(np.asarray(a) for a in
                                       (ds.x_train, ds.y_train, ds.x_test, ds.y_test)))
            ref = ray.put(plain)
            self._shared[name] = (version, ref)
            return ref

    def describe(self) -> str:
        """Where runs train, for people."""
        gpus = f", {self.total.get('GPU', 0):g} GPU(s)" if self.total.get("GPU") else ""
        return (f"Ray cluster ({self.total.get('CPU', 0):g} CPUs{gpus}); up to {self.slots} "
                f"run(s) at once, each with {self.cpus:g} CPU(s)"
                + (f" and {self.gpus:g} GPU" if self.gpus else ""))

    def warm(self) -> None:
        """Nothing to do: Ray starts actors on demand."""

    def start(self, spec: RunSpec, run_dir: Path, on_event: ev.Emit, slot: int) -> RayHandle:
        """Start ``spec`` in a new actor (a class data set goes by object reference)."""
        from cnnlab.data import shared_sets

        shared = None
        if not spec.dataset.npz and shared_sets.is_shared(spec.dataset.name):
            try:
                shared = self.shared_ref(spec.dataset.name)
            except shared_sets.SharedSetError:
                pass  # gone since it was queued: the worker's own load fails the run, saying so
        return RayHandle(spec, run_dir, on_event, self.options, shared)

    def close(self) -> None:
        """Shut down the Ray instance this executor started (not one it joined)."""
        if self._started_ray:
            import ray

            ray.shutdown()
