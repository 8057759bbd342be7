"""Try an uploaded model in a child process before the web server loads it.

The static check (``model_files``) cannot size every layer kind, and a model's weights file
or its first prediction can need memory its config does not show. So the upload is loaded
once more in a fresh interpreter (``python -m cnnlab.uploads.model_check``) that builds it with
``safe_mode``, runs ``safe_load.model_problems``, counts its parameters and makes one
prediction on a blank image, then reports one JSON line. The server watches the child's
resident memory and kills it above a ceiling, or when it takes too long, and turns every
way it can end into one sentence. Only a model the child loaded within the budgets is
then loaded by the server itself: loading is deterministic, so it costs the server about
what it cost the child, which stayed under the ceiling.

The memory ceiling needs Linux's /proc; elsewhere only the time limit applies. RLIMIT_AS
is no use here: TensorFlow reserves far more address space than it ever touches.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from cnnlab.train import budgets as budgets_mod
from cnnlab.train.budgets import MB, Budgets
from cnnlab.uploads import safe_load
from cnnlab.uploads.model_files import ModelRejected, inspect_model_file, over_budget, unreadable

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 60.0  # importing Keras takes ~4 s; loading a model in budget a few more
POLL_S = 0.05  # how often the child's memory is read; it grows at most ~0.3 GB in between
# A fresh interpreter with TensorFlow and Keras imported holds ~0.65 GB (measured on CPU).
CHILD_BASE_BYTES = 1024 * MB
# While loading, a float32 weight is held several times over (its initial value, the .h5
# read, the copy into the variable): 19.9M parameters peaked at +383 MB, 19 bytes each.
LOAD_BYTES_PER_PARAM = 24
LOAD_SLACK_BYTES = 128 * MB  # one prediction's activations and Keras's own bookkeeping
MAX_PARALLEL_CHECKS = 2  # each child takes ~1 GB; more uploads at once wait their turn
REPORT = "cnnlab-model-check: "  # marks the report line among anything else on stdout
_SLOTS = threading.BoundedSemaphore(MAX_PARALLEL_CHECKS)


@dataclass(frozen=True)
class ChildReport:
    """What the child found for a model it loaded: sizes, its peak memory and time."""

    params: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    peak_rss_bytes: int  # the child's peak as the server saw it
    seconds: float


def load_allowance(budgets: Budgets) -> int:
    """The most memory loading and running one model may take on this server."""
    return LOAD_BYTES_PER_PARAM * budgets.max_params + LOAD_SLACK_BYTES


def memory_ceiling(budgets: Budgets) -> int:
    """The child's resident memory above which it is killed (about 1.5 GB by default)."""
    return CHILD_BASE_BYTES + load_allowance(budgets)


def rss_of(pid: int | str) -> int | None:
    """Resident memory of process ``pid`` ("self" for this one) in bytes; None without /proc."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def check_in_child(path: Path | str, budgets: Budgets,
                   timeout_s: float | None = None) -> ChildReport:
    """Load ``path`` in a child process under the memory ceiling and the time limit.

    Raises ModelRejected with the child's reason (the file's problems, over the parameter
    budget, too much memory, too slow, or a crash), one sentence and never a traceback.
    """
    name = Path(path).name
    timeout_s = CHECK_TIMEOUT_S if timeout_s is None else timeout_s
    if not _SLOTS.acquire(timeout=timeout_s):
        raise ModelRejected(
            f"{name} was not checked: the server is already checking {MAX_PARALLEL_CHECKS} "
            "other uploaded models and each may take a minute. Try again shortly.")
    try:
        return _run_child(Path(path), name, budgets, timeout_s)
    finally:
        _SLOTS.release()


def _child_env() -> dict[str, str]:
    # The child imports this very cnnlab, wherever the server was started from; it needs no
    # GPU (TensorFlow would reserve most of one) and one thread, leaving the cores to pages.
    package_root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "CUDA_VISIBLE_DEVICES": "-1",
            "TF_CPP_MIN_LOG_LEVEL": "3", "TF_NUM_INTRAOP_THREADS": "1",
            "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}


def _tail(fh: IO[bytes], limit: int = 64 * 1024) -> str:
    fh.seek(0, 2)
    fh.seek(max(0, fh.tell() - limit))
    return fh.read().decode("utf-8", "replace")


def _run_child(path: Path, name: str, budgets: Budgets, timeout_s: float) -> ChildReport:
    ceiling, start = memory_ceiling(budgets), time.monotonic()
    peak, ended = 0, ""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cnnlab.uploads.model_check", str(path),
             str(budgets.max_params)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=_child_env())
        try:
            while True:
                try:
                    proc.wait(POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    pass
                rss = rss_of(proc.pid) or 0
                peak = max(peak, rss)
                if rss > ceiling:
                    ended = "memory"
                elif time.monotonic() - start > timeout_s:
                    ended = "time"
                if ended:
                    proc.kill()
                    proc.wait()
                    break
        except BaseException:  # the server stopping: leave no child behind
            proc.kill()
            proc.wait()
            raise
        seconds = time.monotonic() - start
        if ended == "memory":
            raise ModelRejected(
                f"Loading {name} took more than {ceiling / MB:,.0f} MB of memory, so the check "
                f"was stopped; this server allows at most {ceiling / MB:,.0f} MB for loading "
                f"an uploaded model (up to {budgets.max_params:,} parameters). Upload a "
                "smaller model, with fewer filters or dense units.")
        if ended == "time":
            raise ModelRejected(
                f"Loading {name} took longer than {timeout_s:g} s, so the check was stopped; "
                f"this server allows at most {timeout_s:g} s for loading an uploaded model. "
                "Upload a smaller model, or try again when the server is less busy.")
        lines = [x for x in _tail(out).splitlines() if x.startswith(REPORT)]
        if not lines:
            log.warning("model check of %s ended with code %s: %s", path, proc.returncode,
                        _tail(err, 4000))
            raise ModelRejected(
                f"Checking {name} failed: the checking process ended unexpectedly (exit code "
                f"{proc.returncode}). Allowed is a model saved with model.save('model.keras') "
                "in Keras 3 using built-in layers; save it again, or upload a smaller one.")
    report = json.loads(lines[-1][len(REPORT):])
    if not report.get("ok"):
        raise ModelRejected(str(report.get("message")))
    found = ChildReport(
        params=int(report["params"]), input_shape=tuple(report["input_shape"]),
        output_shape=tuple(report["output_shape"]), peak_rss_bytes=peak, seconds=seconds)
    if found.params > budgets.max_params:  # the child checks this too; never trust one place
        raise over_budget(name, found.params, budgets.max_params, counted="has")
    # Memory is judged by the ceiling alone: TensorFlow's first prediction adds hundreds of
    # MB of runtime that vary by machine (751 MB for a tiny model under CI load).
    return found


def load_model_file(path: Path | str, budgets: Budgets | None = None) -> keras.Model:
    """Load an uploaded ``.keras`` file safely and check it classifies images.

    First its config.json is read without building anything (``model_files``), then the
    model is built and run once in a child process whose memory is watched
    (``check_in_child``); only then is it loaded here, so a file declaring more than
    ``budgets`` (default: the server's, ``budgets.load()``) never allocates in this process.
    Raises ModelRejected for a file that is not a Keras model, exceeds the budgets, needs
    unsafe code to load (a Lambda layer), or takes/returns the wrong shapes.
    """
    budgets = budgets or budgets_mod.load()
    inspect_model_file(path, budgets)
    check_in_child(path, budgets)
    return safe_load.read_model(path)


# --------------------------------------------------------------------------- the child


def _check(path: Path, max_params: int) -> dict[str, Any]:
    """Load, check and run ``path`` once; the report as a dict (never raises)."""
    import numpy as np


    name = path.name
    try:
        model = safe_load.read_model(path)  # safe_mode; model_problems; ModelRejected
        params = int(model.count_params())
        if params > max_params:
            return {"ok": False, "message": str(over_budget(name, params, max_params,
                                                            counted="has"))}
        in_shape = tuple(int(v) for v in model.inputs[0].shape[1:])
        try:
            model(np.zeros((1, *in_shape), np.float32), training=False)
        except Exception as exc:  # shapes that only fail when run
            return {"ok": False, "message": (
                f"{name} loaded but failed to classify a blank {in_shape} image "
                f"({type(exc).__name__}). Allowed is a model that takes one image and returns "
                "class probabilities; check it with model.predict on one image and save it "
                "again.")}
    except ModelRejected as exc:
        return {"ok": False, "message": str(exc)}
    except Exception as exc:  # Keras raises many types; each becomes the same sentence
        return {"ok": False, "message": str(unreadable(name, type(exc).__name__))}
    return {"ok": True, "params": params, "input_shape": list(in_shape),
            "output_shape": [int(v) for v in model.outputs[0].shape[1:]]}


def main(argv: list[str] | None = None) -> int:
    """The child: ``python -m cnnlab.uploads.model_check PATH MAX_PARAMS``; prints one report
    line."""
    args = sys.argv[1:] if argv is None else argv
    report = _check(Path(args[0]), int(args[1]))
    print(REPORT + json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
