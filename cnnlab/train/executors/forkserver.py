"""A process that imports Keras once and forks a worker for each run (Linux).

A fresh worker interpreter spends about 5 CPU-seconds importing TensorFlow before its run
does anything, most of a short run's start. The fork server pays that once: each run is a
fork of it that goes straight to the code a fresh worker runs after its imports (the local
executor starts it as ``python -m cnnlab.train.executors.local --fork-server FD``).
Forking is safe at that point because nothing has started TensorFlow's runtime yet (no
operation has run, so its thread pools do not exist, nor has CUDA been initialised); each
child starts its own.

What the frameworks read while they are imported (``IMPORT_TIME_ENV``: the backend, thread
counts, the visible GPU, ``KERAS_HOME``'s keras.json) is fixed in a fork server; the local
executor starts another one when that environment changes. Every other variable each child
gets as the engine has it when the run starts.

Messages are SOCK_SEQPACKET datagrams of JSON. The engine sends ``{"env": {...}}`` with the
worker's end of its socket pair as a passed descriptor; the server answers ``{"pid": n}``,
and ``{"exited": n, "code": c}`` when that child ends (the engine cannot wait for a process
that is not its own child). When the engine's end closes the server forks no more, waits
for its children (each ends at its next batch once its own socket closes: local.run) and
exits.
"""

from __future__ import annotations

import json
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection

# Read by Keras, TensorFlow, JAX, XLA or the C libraries while they load, so a child cannot
# change them after the fork: a fork server serves one set of these values.
IMPORT_TIME_ENV = ("KERAS_", "TF_", "CUDA_", "JAX_", "XLA_", "OMP_", "MKL_", "PYTHON",
                   "LD_", "HOME")
MESSAGE_BYTES = 1 << 20  # the largest message: an environment of a few kB, with room


def supported() -> bool:
    """Whether this system can run a fork server: Linux (fork, and pidfd to wait on a child
    with select). Elsewhere each run starts a fresh interpreter."""
    return sys.platform.startswith("linux") and hasattr(os, "pidfd_open")


def import_time_env(env: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The part of ``env`` that a fork server fixes when it starts (IMPORT_TIME_ENV)."""
    return tuple(sorted((k, v) for k, v in env.items() if k.startswith(IMPORT_TIME_ENV)))


class ForkedProcess:
    """A worker forked by a fork server: what ``subprocess.Popen`` offers the local executor
    (pid, poll, wait, kill), with its pid and exit code reported by the server."""

    def __init__(self) -> None:
        self.pid: int | None = None  # known once the server has forked it
        self.returncode: int | None = None
        self._killed = False
        self._exited = threading.Event()

    def started(self, pid: int) -> None:
        """The server forked it as ``pid`` (a kill asked for before then happens now)."""
        self.pid = pid
        if self._killed:
            self.kill()

    def exited(self, code: int | None) -> None:
        """It ended with ``code`` (negative: the signal), or None: its server died first."""
        self.returncode = code
        self._exited.set()

    def poll(self) -> int | None:
        """Its exit code, or None while it runs."""
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait until it has ended; its exit code."""
        if not self._exited.wait(timeout):
            raise subprocess.TimeoutExpired("forked worker", timeout or 0)
        return self.returncode

    def kill(self) -> None:
        """SIGKILL it (as soon as it exists)."""
        self._killed = True
        if self.pid is not None and not self._exited.is_set():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class ForkServer:
    """The engine's side of one fork server process."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        """Start ``command`` + the descriptor of its end of the socket, with ``env``."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.popen = subprocess.Popen(
            [*command, str(theirs.fileno())], pass_fds=(theirs.fileno(),), env=env,
            stdin=subprocess.DEVNULL)
        theirs.close()
        self.key = import_time_env(env)
        self._sock = ours
        self._send_lock = threading.Lock()
        self._pending: queue.SimpleQueue[ForkedProcess] = queue.SimpleQueue()  # asked, no pid
        self._children: dict[int, ForkedProcess] = {}
        self._gone = False
        threading.Thread(target=self._read, name="forkserver-replies", daemon=True).start()

    def alive(self) -> bool:
        """Whether the server still takes requests."""
        return not self._gone and self.popen.poll() is None

    def fork(self, env: dict[str, str]) -> tuple[ForkedProcess, Connection]:
        """Ask for a worker with environment ``env``; it and our end of its socket.

        Returns at once (the server may still be importing Keras): the pid comes later, and
        messages sent on the connection wait in the socket until the worker reads them.
        """
        ours, theirs = socket.socketpair()
        child = ForkedProcess()
        try:
            with self._send_lock:
                self._pending.put(child)
                socket.send_fds(self._sock, [json.dumps({"env": env}).encode()],
                                [theirs.fileno()])
        except OSError:
            self._gone = True
            child.exited(None)  # its socket end closes below: the handle reports a failure
        finally:
            theirs.close()
        return child, Connection(ours.detach())

    def _read(self) -> None:
        while True:
            try:
                data = self._sock.recv(MESSAGE_BYTES)
            except OSError:
                data = b""
            if not data:
                break
            message = json.loads(data)
            if "pid" in message:
                child = self._pending.get()
                self._children[message["pid"]] = child
                child.started(message["pid"])
            else:
                self._children.pop(message["exited"]).exited(message["code"])
        # The server is gone: the exit codes of its children (and of requests it never
        # read) are lost; their sockets close, so each handle reports its run as failed.
        self._gone = True
        self._sock.close()
        while not self._pending.empty():
            self._pending.get().exited(None)
        for child in list(self._children.values()):
            child.exited(None)

    def close(self) -> None:
        """Stop taking requests: the server exits once its running children have. Only our
        sending side closes, so their exit codes still arrive (and a kill still reaches them)."""
        self._gone = True
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def serve(fd: int, run: Callable[[Connection], None]) -> None:
    """The fork server's loop on socket ``fd``: fork a child per request, which calls
    ``run`` with its connection and exits; report each child's pid and exit code."""
    sock = socket.socket(fileno=fd)
    children: dict[int, int] = {}  # pidfd -> pid
    accepting = True
    while accepting or children:
        listening = [sock.fileno()] if accepting else []
        ready, _, _ = select.select(listening + list(children), [], [])
        for ready_fd in ready:
            if ready_fd in listening:
                data, fds, _, _ = socket.recv_fds(sock, MESSAGE_BYTES, 1)
                if not data:  # the engine is gone: no more runs
                    accepting = False
                    continue
                pid = os.fork()
                if pid == 0:
                    _child(sock, list(children), fds[0], json.loads(data)["env"], run)
                os.close(fds[0])
                children[os.pidfd_open(pid)] = pid
                _reply(sock, {"pid": pid})
            else:
                pid = children.pop(ready_fd)
                os.close(ready_fd)
                _, status = os.waitpid(pid, 0)
                _reply(sock, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def _reply(sock: socket.socket, message: dict[str, int]) -> None:
    try:
        sock.send(json.dumps(message).encode())
    except OSError:  # the engine is gone; its workers end by themselves
        pass


def _child(sock: socket.socket, pidfds: list[int], fd: int, env: dict[str, str],
           run: Callable[[Connection], None]) -> None:
    """In a forked child: become the run's worker, then exit (never back into the loop)."""
    code = 0
    try:
        sock.close()
        for pidfd in pidfds:
            os.close(pidfd)
        os.environ.clear()
        os.environ.update(env)
        run(Connection(fd))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
