"""Executors: where a run trains. Never in the web server's own process.

The contract between the server (cnnlab.train.jobs) and a worker is a ``RunSpec`` going in and
the event stream (cnnlab.train.events) coming out. Two backends:

- ``local`` (default): one spawned OS process per run on this machine (executors.local);
- ``ray`` (``CNNLAB_EXECUTOR=ray``): one Ray actor per run, on a cluster when
  ``RAY_ADDRESS`` is set (executors.ray), with no shared file system assumed.

Both call ``start(spec, run_dir, on_event)`` and return a handle with ``stop()`` and
``kill()``. ``on_event`` gets every event in order, from a thread of the executor, and a
``done`` event last of all, after the worker has gone: the executor makes one up (status
"failed", saying how the worker ended) when a worker dies without sending its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cnnlab.train import events as ev

MODES = ("new", "resume", "fine-tune", "score")  # score: a challenge submission


class ExecutorUnavailable(RuntimeError):
    """The configured executor cannot run here; the message says what to install or set."""


@dataclass(frozen=True)
class DatasetRef:
    """Which data set a worker trains on: a registry or class data set name (``shared:…``,
    read from the machine's decoded cache), or an upload's .npz file."""

    name: str
    npz: str | None = None  # path of datasets.to_npz_bytes output, for uploads


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs to train one run (all plain, picklable data).

    ``inputs`` names files of the run directory the worker reads (the resumable
    checkpoint, a fine-tune's starting model); a remote worker gets them sent along.
    """

    run_id: str
    request: dict[str, Any]
    dataset: DatasetRef
    budgets: dict[str, Any]
    mode: str = "new"
    inputs: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


class Handle(Protocol):
    """A started run, as its executor sees it."""

    def stop(self) -> None:
        """Ask the run to stop within one batch (it then evaluates and ends "stopped")."""

    def kill(self) -> None:
        """End the worker now (server shutdown); the run's files stay as they are."""


class Executor(Protocol):
    """Starts runs in workers."""

    name: str
    slots: int
    gpu: bool

    def start(self, spec: RunSpec, run_dir: Path, on_event: ev.Emit, slot: int) -> Handle:
        """Start ``spec`` in a worker on ``slot``; events (then ``done``) go to ``on_event``."""

    def describe(self) -> str:
        """Where runs train, for people ("2 local worker processes on CPU")."""

    def warm(self) -> None:
        """Get workers ready ahead of the next run (may do nothing)."""

    def close(self) -> None:
        """Release what the executor holds (worker processes, a Ray connection)."""


def gpu_ids() -> list[str]:
    """This machine's NVIDIA GPUs as CUDA indices, without importing a framework.

    ``CUDA_VISIBLE_DEVICES`` wins when set; else ``nvidia-smi -L`` is asked.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU")]


def make(name: str | None = None, slots: int | None = None) -> Executor:
    """The executor named ``name`` (default ``CNNLAB_EXECUTOR``, else "local").

    ``slots`` (default ``CNNLAB_WORKERS``) is how many runs train at once. Raises
    ExecutorUnavailable with what to do when the backend cannot run here.
    """
    name = (name or os.environ.get("CNNLAB_EXECUTOR") or "local").strip().lower()
    if slots is None and os.environ.get("CNNLAB_WORKERS"):
        try:
            slots = int(os.environ["CNNLAB_WORKERS"])
        except ValueError:
            slots = 0
        if slots < 1:
            raise ExecutorUnavailable(
                f"CNNLAB_WORKERS={os.environ['CNNLAB_WORKERS']!r} is not a whole number of "
                "at least 1; set it to how many runs may train at once, or unset it.")
    if name == "local":
        from cnnlab.train.executors.local import LocalExecutor

        return LocalExecutor(slots)
    if name == "ray":
        from cnnlab.train.executors.ray import RayExecutor

        return RayExecutor(slots)
    raise ExecutorUnavailable(
        f"CNNLAB_EXECUTOR={name!r} is not an executor: use 'local' (worker processes on this "
        "machine, the default) or 'ray' (a Ray cluster).")
