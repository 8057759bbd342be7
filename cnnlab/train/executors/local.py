"""The local executor: each run in its own OS process on this machine.

Each run gets a process of its own, which exits when the run ends (its memory, GPU memory
included, goes back to the system). On Linux it is forked from a fork server that has
imported Keras but started nothing (forkserver.py), so a run skips TensorFlow's ~5 s
import; elsewhere it is a fresh interpreter. One slot per
GPU, each worker pinned to its GPU with CUDA_VISIBLE_DEVICES; on a CPU-only machine two
from 2 cores up, then one per 4 cores (cpu_slots), each with its share of the cores; set
CNNLAB_WORKERS to choose.

Spec in, events out and Stop in travel as pickles over a socket pair, read by one thread
per worker. A worker that dies without saying goodbye (SIGKILL, the OOM killer, a crash
in native code) is reported as a ``done`` event with status "failed" naming its exit
signal or code.

A worker never outlives its engine: when the socket closes (the engine's process died,
even by SIGKILL) it asks its run to stop and exits at the next event it would send, a
point between batches where no file is half written (ORPHAN_GRACE_S at most).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path

from cnnlab.runs.store import RunStatus
from cnnlab.train import events as ev
from cnnlab.train.executors import RunSpec, forkserver, gpu_ids

STOP = "stop"
CORES_PER_WORKER = 4  # on a big CPU server; see cpu_slots
ORPHAN_GRACE_S = 10.0  # the longest a worker whose engine died goes on (one long step)
EXIT_ORPHANED = 75  # a worker's exit status when its engine is gone


def cpu_slots(cores: int) -> int:
    """How many runs train at once on a CPU-only machine with ``cores`` cores (when
    CNNLAB_WORKERS is unset): two from 2 cores up, then one per CORES_PER_WORKER cores.

    Measured (bench/class_queue.py, 6 people queueing `quick` on 3,000 MNIST images, 2 AVX2
    cores, 8 ABBA pairs): two workers with one core each finished the class in 0.80× the
    time of one worker with both cores (interval 0.74-0.84, control 1.02) and the median
    wait was 0.75×. Each run then was a fresh interpreter that spent much of a short run
    importing TensorFlow, building, evaluating and saving: with two workers one does that
    while the other trains (measured before the fork server took the import away; building,
    evaluating and saving remain). On a big server a small CNN's
    operations stop gaining from more threads after a few (not measured here: no such
    machine), and each worker holds about 0.8 GB, so one per 4 cores: 16 on 64 cores.
    """
    return 1 if cores < 2 else max(2, cores // CORES_PER_WORKER)


def background_priority() -> None:
    """Put this process below the web server in the CPU scheduler (Linux SCHED_IDLE, else
    nice 19): pages stay responsive while a run trains on the same cores, and a run still
    gets every cycle the server leaves idle. Threads started later (TensorFlow's) inherit it.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)


def prepare() -> None:
    """What a worker does before its run arrives: idle CPU priority, Ctrl-C left to the
    server, and the framework's start-up (a fork server does it once for all its runs)."""
    background_priority()
    # Ctrl-C in a terminal reaches the whole process group: the server (or the CLI that
    # started this worker) answers it by sending "stop", so the run ends at a batch with its
    # last whole epoch kept, never with a KeyboardInterrupt in the middle of a step.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import keras  # noqa: F401

    from cnnlab.train.executors import worker  # noqa: F401  (training, models, data sets)


def main(fd: int) -> None:
    """A fresh worker interpreter (where there is no fork server): prepare, then run."""
    prepare()
    run(Connection(fd))


def fork_server_main(fd: int) -> None:
    """The fork server process: prepare once, then fork a worker per run (forkserver)."""
    prepare()
    forkserver.serve(fd, run)


def run(conn: Connection) -> None:
    """The worker: receive (spec, run dir) on ``conn``, train, send events.

    The same socket carries "stop" the other way; its end (the server gone) stops the run.
    """
    from cnnlab.train import callbacks
    from cnnlab.train.executors import worker

    try:
        spec, run_dir = conn.recv()
    except (EOFError, OSError):  # asked for, then never given a run
        return
    stop = callbacks.StopFlag()
    lock = threading.Lock()
    orphaned = threading.Event()

    def orphan() -> None:
        """The engine is gone: nobody records this run, and the next engine marks it
        "interrupted". Stop at the next batch and leave there (emit), or after a grace."""
        if not orphaned.is_set():
            orphaned.set()
            stop.set("user")
            timer = threading.Timer(ORPHAN_GRACE_S, os._exit, args=(EXIT_ORPHANED,))
            timer.daemon = True
            timer.start()

    def listen() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                orphan()
                return
            if message == STOP:
                stop.set("user")

    def emit(event: ev.Event) -> None:
        # Events are sent between batches and after an epoch's files are written, so
        # leaving here never leaves last.keras and checkpoint.json out of step.
        if orphaned.is_set():
            os._exit(EXIT_ORPHANED)
        with lock:  # the training thread and the memory watch both send
            try:
                conn.send(event)
            except OSError:
                orphan()
                os._exit(EXIT_ORPHANED)

    threading.Thread(target=listen, name="stop-listener", daemon=True).start()
    worker.execute(spec, Path(run_dir), emit, stop)


def exit_message(exitcode: int | None) -> str:
    """Why a worker ended without reporting, in words, from its exit code."""
    from cnnlab.train.executors.worker import EXIT_OVER_MEMORY

    if exitcode is not None and exitcode < 0:
        sig = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else str(
            -exitcode)
        why = (" — usually the system ran out of memory (the kernel's OOM killer) or someone "
               "killed it" if sig == "SIGKILL" else "")
        return (f"The training process was killed by signal {sig}{why}. The epochs done so far "
                "and the best model are kept; resume the run to continue from its last epoch.")
    if exitcode == EXIT_OVER_MEMORY:
        return ("The training process was ended for using more memory than this server allows "
                "per run; the epochs done so far and the best model are kept.")
    return (f"The training process ended unexpectedly (exit code {exitcode}) before reporting "
            "its result. The epochs done so far and the best model are kept; resume the run "
            "to continue from its last epoch.")


def spawn(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Connection]:
    """A fresh worker interpreter with ``env`` (where there is no fork server): the process
    and our end of its socket."""
    ours, theirs = socket.socketpair()
    popen = subprocess.Popen(
        [sys.executable, "-m", "cnnlab.train.executors.local", str(theirs.fileno())],
        pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL)
    theirs.close()  # the child holds the only other end: EOF means it is gone
    return popen, Connection(ours.detach())


# One fork server per slot environment, shared by every engine in this process (they hold
# no run state): tests and a restarted engine reuse its import of TensorFlow.
_SERVERS: dict[tuple[tuple[str, str], ...], forkserver.ForkServer] = {}
_SERVERS_LOCK = threading.Lock()


def fork_server(env: dict[str, str], slot_env: dict[str, str]) -> forkserver.ForkServer:
    """The running fork server for ``slot_env``, started (or replaced, when the variables
    the frameworks read at import have changed since) with ``env``."""
    with _SERVERS_LOCK:
        key = tuple(sorted(slot_env.items()))
        server = _SERVERS.get(key)
        if server is None or not server.alive() or server.key != forkserver.import_time_env(env):
            if server is not None:
                server.close()  # it exits once its running workers have
            server = _SERVERS[key] = forkserver.ForkServer(
                [sys.executable, "-m", "cnnlab.train.executors.local", "--fork-server"], env)
        return server


class LocalHandle:
    """A run in a local worker process: forked from a fork server, or a fresh interpreter
    (``python -m cnnlab.train.executors.local``).

    A fresh interpreter, not multiprocessing's spawn: spawn re-runs the server's main
    module in the child, which breaks under any script without a ``__main__`` guard.
    """

    def __init__(self, process: subprocess.Popen[bytes] | forkserver.ForkedProcess,
                 conn: Connection, spec: RunSpec, run_dir: Path, on_event: ev.Emit) -> None:
        self.process = process
        self.conn = conn
        self._send_lock = threading.Lock()
        self._send((spec, str(run_dir)))
        self._reader = threading.Thread(target=self._read, args=(on_event,),
                                        name=f"events-{spec.run_id}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int | None:
        """The worker's process id (None for a moment while a fork server forks it)."""
        return self.process.pid

    def _send(self, message: object) -> None:
        with self._send_lock:
            try:
                self.conn.send(message)
            except OSError:  # the worker is gone; its reader reports how
                pass

    def _read(self, on_event: ev.Emit) -> None:
        done = None
        while True:
            try:
                event = self.conn.recv()
            except (EOFError, OSError):
                break
            if event["kind"] == "done":
                done = event  # delivered last, once the process has really gone
            else:
                on_event(event)
        exitcode = self.process.wait()
        self.conn.close()
        if done is None:
            done = ev.make("done", status=RunStatus.FAILED, message=exit_message(exitcode),
                           exitcode=exitcode)
        on_event(done)

    def stop(self) -> None:
        """Ask the worker to stop within one batch."""
        self._send(STOP)

    def kill(self) -> None:
        """End the worker process now."""
        if self.process.poll() is None:
            self.process.kill()


class LocalExecutor:
    """Runs each RunSpec in its own worker process; ``slots`` of them at once."""

    name = "local"

    def __init__(self, slots: int | None = None) -> None:
        self.gpus = gpu_ids()
        self.gpu = bool(self.gpus)
        self.slots = slots or len(self.gpus) or cpu_slots(os.cpu_count() or 1)

    def describe(self) -> str:
        """Where runs train, for people."""
        where = f"{len(self.gpus)} GPU(s)" if self.gpus else f"CPU ({os.cpu_count()} cores)"
        plural = "es" if self.slots > 1 else ""
        return f"{self.slots} local worker process{plural} on {where}"

    def worker_env(self, slot: int) -> dict[str, str]:
        """The environment a worker in ``slot`` gets: its own GPU, or its share of cores."""
        if self.gpus:
            return {"CUDA_VISIBLE_DEVICES": self.gpus[slot % len(self.gpus)]}
        # TensorFlow's own inter-op pool stays as it is: one inter-op thread trained quick at
        # 0.88× the default's samples/s (90 % interval 0.82-0.97; control 1.00, 0.94-1.07;
        # bench/throughput.py, 2 AVX2 cores).
        if self.slots > 1:  # without this, each worker's thread pools take every core
            threads = str(max(1, (os.cpu_count() or 1) // self.slots))
            return {"TF_NUM_INTRAOP_THREADS": threads, "OMP_NUM_THREADS": threads}
        return {}

    def full_env(self, slot: int) -> dict[str, str]:
        """This process's environment as a worker in ``slot`` sees it."""
        # The worker imports this very cnnlab, wherever the server was started from.
        package_root = str(Path(__file__).resolve().parents[3])
        path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        return {**os.environ, **self.worker_env(slot), "PYTHONPATH": path}

    def warm(self) -> None:
        """Start each slot's fork server, if it has none: it imports the framework now, so
        the first run starts training in about a second (later ones always do)."""
        if forkserver.supported():
            for slot in range(self.slots):
                self.fork_server(slot)

    def fork_server(self, slot: int) -> forkserver.ForkServer:
        """Slot ``slot``'s fork server for this process's environment now (started, or
        replaced, as needed)."""
        return fork_server(self.full_env(slot), self.worker_env(slot))

    def start(self, spec: RunSpec, run_dir: Path, on_event: ev.Emit, slot: int) -> LocalHandle:
        """Start ``spec`` on ``slot`` in a new worker process (one run per process), forked
        from the slot's fork server, or a fresh interpreter where there is none."""
        env = self.full_env(slot)
        if not forkserver.supported():
            return LocalHandle(*spawn(env), spec, run_dir, on_event)
        return LocalHandle(*fork_server(env, self.worker_env(slot)).fork(env), spec, run_dir,
                           on_event)

    def close(self) -> None:
        """Nothing to end: running workers are the engine's to kill, and the fork servers
        serve every engine of this process (each exits with it)."""


if __name__ == "__main__":
    if sys.argv[1] == "--fork-server":
        fork_server_main(int(sys.argv[2]))
    else:
        main(int(sys.argv[1]))
