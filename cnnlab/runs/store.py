"""Run store on disk: one directory per training run under a runs root.

A run directory holds ``config.json`` (fixed facts), ``status.json`` (changing facts),
``history.csv`` (one row per epoch, appended as training goes), ``best.keras`` (best
checkpoint), ``last.keras`` + ``checkpoint.json`` (the resumable last epoch) and
``metrics.json`` (after evaluation). The server writes the first three and metrics.json
from the run's events (``record``); workers write the model files. Every JSON write is
atomic (temp file, then ``os.replace``) so a killed process never leaves half a file
behind, and status.json's read-modify-write holds a per-run lock. Pure Python: no Keras.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import pandas as pd

from cnnlab import text
from cnnlab.people import access
from cnnlab.people.accounts import LOCAL_USER, User


class RunStatus(StrEnum):
    """Where a run stands (status.json's ``status``); equal to its plain string."""

    QUEUED = "queued"
    RUNNING = "running"
    STOPPED = "stopped"
    FINISHED = "finished"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    TIME_LIMIT = "time limit"


ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)
FINAL = tuple(s for s in RunStatus if s not in ACTIVE)
RESUMABLE = (RunStatus.INTERRUPTED, RunStatus.STOPPED, RunStatus.FAILED, RunStatus.TIME_LIMIT)
FIXED_FACTS = ("name", "dataset", "preset", "created", "owner", "parent")  # config.json's
CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
HISTORY_FILE = "history.csv"
BEST_FILE = "best.keras"
METRICS_FILE = "metrics.json"

_SLUG_MAX = 40
_ID_RE = re.compile(r"^[0-9]{8}-[0-9]{6}(-[0-9]+)?(-[a-z0-9][a-z0-9_-]*)?$")


class RunPathError(ValueError):
    """A run id or name that would leave the runs root."""


@dataclass(frozen=True)
class RunInfo:
    """One run as listed: its id, directory, fixed facts (config.json) and current
    status (status.json)."""

    run_id: str
    run_dir: Path
    status: dict[str, Any]
    config: dict[str, Any]

    @property
    def name(self) -> str:
        """The run's display name (its id when it has none)."""
        return str(self.config.get("name") or self.run_id)

    @property
    def dataset(self) -> str:
        """The registry name of the data set it trains on ("" when unknown)."""
        return str(self.config.get("dataset") or "")


def default_root() -> Path:
    """The runs root: env ``CNNLAB_RUNS_DIR`` when set, else ``./runs``."""
    return Path(os.environ.get("CNNLAB_RUNS_DIR") or "runs")


class RunsRootError(OSError):
    """The runs root cannot be created or written; the message says which path and what to do."""


def ensure_root(root: Path | str) -> Path:
    """``root``, created if missing and checked writable; else RunsRootError saying what to do.

    Checked up front so a bad CNNLAB_RUNS_DIR is one clear sentence on every page, not a
    traceback from the first run that tries to save.
    """
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=root, prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise RunsRootError(
            f"The runs folder {root} cannot be used ({exc.strerror or exc}): runs are saved "
            "there, so it must be a folder you can write to. Set CNNLAB_RUNS_DIR to a writable "
            "folder (for example ~/cnnlab-runs) and start the app again."
        ) from exc
    return root


def slugify(name: str) -> str:
    """A filesystem-safe slug: lowercase letters, digits, ``-`` and ``_`` only."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_")
    return slug[:_SLUG_MAX].strip("-_")


def now_iso() -> str:
    """The current local time, ISO 8601 to the second."""
    return datetime.now().isoformat(timespec="seconds")


def run_dir_for(root: Path | str, run_id: str) -> Path:
    """The directory of ``run_id`` under ``root``; raises RunPathError for unsafe ids."""
    if not _ID_RE.match(run_id):
        raise RunPathError(
            f"Run id {run_id!r} is not valid: expected 'YYYYMMDD-HHMMSS[-slug]' with "
            "lowercase letters, digits, '-' or '_'. Pick the run from the list instead."
        )
    root = Path(root).resolve()
    path = (root / run_id).resolve()
    if path.parent != root:  # belt and braces: the regex already forbids separators
        raise RunPathError(f"Run id {run_id!r} points outside the runs root {root}.")
    return path


def check_inside(root: Path | str, run_dir: Path | str) -> Path:
    """``run_dir`` resolved, if it lies directly inside ``root``; else RunPathError."""
    root_r = Path(root).resolve()
    path = Path(run_dir).resolve()
    if path.parent != root_r:
        raise RunPathError(f"{run_dir} is not a run directory inside the runs root {root_r}.")
    return path


def create_run(root: Path | str, config: dict[str, Any]) -> Path:
    """Make a new queued run directory with config.json (``config``, which names the run,
    plus its creation time) and status.json; return its path.

    The id is ``YYYYMMDD-HHMMSS-<slug of name>``; a numeric suffix keeps ids unique when two
    runs start in the same second.
    """
    root = ensure_root(root)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    slug = slugify(config["name"])
    for n in range(1000):
        run_id = stamp + (f"-{n}" if n else "") + (f"-{slug}" if slug else "")
        path = run_dir_for(root, run_id)
        try:
            path.mkdir()
        except FileExistsError:
            continue
        break
    else:  # pragma: no cover - a thousand runs in one second
        raise RuntimeError("Could not allocate a run id; try again in a second.")
    write_json(path / CONFIG_FILE, {**config, "created": now_iso()})
    write_json(path / STATUS_FILE, {"status": RunStatus.QUEUED, "epochs_done": 0,
                                    "message": "", "updated": now_iso()})
    return path


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as JSON atomically (temp file in the same folder, then replace)."""
    write_text(path, json.dumps(payload, indent=2, default=_json_default))


def write_text(path: Path, text: str) -> None:
    """Write text atomically: readers see the old file or the new one, never a torn one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())  # the rename must never publish an empty file after a crash
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(obj: Any) -> Any:
    """numpy scalars/arrays and paths in JSON."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def load_status(run_dir: Path | str) -> dict[str, Any]:
    """The run's status.json (``{"status": "failed", ...}`` when missing or unreadable)."""
    data = _read_json(Path(run_dir) / STATUS_FILE)
    if data is None:
        return {"status": RunStatus.FAILED, "message": "status.json is missing or unreadable."}
    return data


_THREAD_LOCK = threading.Lock()


@contextmanager
def run_lock(run_dir: Path | str) -> Iterator[None]:
    """Hold run ``run_dir``'s lock (threads of this process and other processes alike).

    The lock is on the run folder itself, so it adds no file to the run.
    """
    with _THREAD_LOCK:
        fd = os.open(run_dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock


def update_status(run_dir: Path | str, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into status.json (atomically, under the run's lock); the new status."""
    run_dir = Path(run_dir)
    with run_lock(run_dir):
        return _merge_status(run_dir, fields)


def _merge_status(run_dir: Path, fields: dict[str, Any]) -> dict[str, Any]:
    # Callers hold run_lock(run_dir): the read and the write are one step.
    data = _read_json(run_dir / STATUS_FILE) or {}
    data.update(fields)
    data["updated"] = now_iso()
    write_json(run_dir / STATUS_FILE, data)
    return data


def record(run_dir: Path | str, event: dict[str, Any]) -> None:
    """Apply one training event (cnnlab.train.events) to the run's files.

    ``status`` merges into status.json (``evaluating`` keeps the run "running" with its
    message; a resumed run's ``history`` rewrites history.csv to the checkpoint's rows);
    ``epoch`` appends a history row; ``metrics`` writes metrics.json; ``file`` writes a
    file sent back by a remote worker; ``done`` sets the final status. Batch events change
    no file.
    """
    kind = event["kind"]
    if kind == "status":
        fields = {k: v for k, v in event.items() if k not in ("kind", "time", "seq", "history")}
        if fields.get("status") == "evaluating":
            fields["status"] = RunStatus.RUNNING
        if "history" in event:
            write_history(run_dir, event["history"])
        update_status(run_dir, **fields)
    elif kind == "epoch":
        row = {k: event[k] for k in HISTORY_COLUMNS if k in event}
        append_history(run_dir, row)
        update_status(run_dir, epochs_done=int(event["epoch"]))
    elif kind == "metrics":
        save_metrics(run_dir, event["metrics"])
    elif kind == "file":
        write_bytes(Path(run_dir) / safe_relative(event["name"]), event["data"])
    elif kind == "done":
        update_status(run_dir, status=event["status"], message=event["message"],
                      seconds=event.get("seconds"))


def safe_relative(name: str) -> Path:
    """``name`` as a path inside a run directory; RunPathError if it would leave it."""
    path = Path(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise RunPathError(f"File name {name!r} would leave the run directory.")
    return path


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` atomically (temp file beside, fsync, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_config(run_dir: Path | str) -> dict[str, Any]:
    """The run's config.json as a dict (empty when missing).

    A run saved before fit settings and fixed facts had one home each (fit settings inside
    the model and at the top level, name/created/parent in status.json) is read in today's
    layout, so every reader sees one shape.
    """
    run_dir = Path(run_dir)
    data = _read_json(run_dir / CONFIG_FILE) or {}
    if not data or "fit" in data:
        return data
    from cnnlab.model.config import split_fit

    model = data.get("model")
    model, fit = split_fit(model) if isinstance(model, dict) else (model, {})
    fit.update({k: data[k] for k in ("epochs", "batch_size") if k in data})
    status = _read_json(run_dir / STATUS_FILE) or {}
    facts = {k: status[k] for k in FIXED_FACTS if k in status and k not in data}
    rest = {k: v for k, v in data.items() if k not in ("epochs", "batch_size")}
    return {**rest, **facts, "model": model, "fit": fit}


HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate",
                   "seconds")


def write_history(run_dir: Path | str, rows: list[dict[str, Any]]) -> None:
    """Replace history.csv with ``rows`` (atomic rewrite; no rows: no file)."""
    path = Path(run_dir) / HISTORY_FILE
    if not rows:
        path.unlink(missing_ok=True)
        return
    frame = pd.DataFrame(rows)
    cols = [c for c in HISTORY_COLUMNS if c in frame.columns]
    write_text(path, frame[cols].to_csv(index=False))


def append_history(run_dir: Path | str, row: dict[str, Any]) -> None:
    """Append one epoch row to history.csv (header written with the first row).

    Columns are fixed by the first row; later rows fill missing columns with blanks.
    A torn last line (a crash or a full disk mid-write) is cut off first, so it is never
    merged into this row.
    """
    path = Path(run_dir) / HISTORY_FILE
    _drop_torn_line(path)
    if path.exists() and path.stat().st_size > 0:
        with path.open(encoding="utf-8", newline="") as fh:
            fields = next(csv.reader(fh))
    else:
        fields = list(row)
    new_file = not path.exists() or path.stat().st_size == 0
    with path.open("a", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        if new_file:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in fields})
        fh.flush()
        os.fsync(fh.fileno())


def _drop_torn_line(path: Path) -> None:
    """Cut a last line that has no newline (a write that never finished) off ``path``."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    with path.open("r+b") as fh:
        fh.truncate(data.rfind(b"\n") + 1)
        fh.flush()
        os.fsync(fh.fileno())


def load_history(run_dir: Path | str) -> pd.DataFrame:
    """history.csv as a DataFrame (one row per epoch; empty frame when none yet).

    A torn last line (no newline: its write never finished) and malformed lines are dropped.
    """
    path = Path(run_dir) / HISTORY_FILE
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame()
    data = path.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    if not whole.strip():
        return pd.DataFrame()
    try:
        frame = pd.read_csv(io.BytesIO(whole), on_bad_lines="skip")
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    return frame.dropna(how="all").reset_index(drop=True)


def truncate_history(run_dir: Path | str, n_rows: int) -> None:
    """Keep only the first ``n_rows`` epochs of history.csv (atomic rewrite)."""
    frame = load_history(run_dir)
    if len(frame) > n_rows:
        write_text(Path(run_dir) / HISTORY_FILE, frame.iloc[:n_rows].to_csv(index=False))


def load_metrics(run_dir: Path | str) -> dict[str, Any] | None:
    """metrics.json of an evaluated run, else None."""
    return _read_json(Path(run_dir) / METRICS_FILE)


def save_metrics(run_dir: Path | str, metrics: dict[str, Any]) -> None:
    """Write metrics.json atomically."""
    write_json(Path(run_dir) / METRICS_FILE, metrics)


def best_model_path(run_dir: Path | str) -> Path:
    """Where the run's best checkpoint lives (it may not exist yet)."""
    return Path(run_dir) / BEST_FILE


def list_runs(root: Path | str | None = None) -> list[RunInfo]:
    """Every run under ``root`` (default_root() when None), newest first."""
    root = Path(root) if root is not None else default_root()
    if not root.is_dir():
        return []
    out = []
    for path in root.iterdir():
        if path.is_dir() and _ID_RE.match(path.name) and (path / STATUS_FILE).exists():
            out.append(RunInfo(path.name, path.resolve(), load_status(path), load_config(path)))
    return sorted(out, key=lambda r: r.run_id, reverse=True)


def mark_interrupted(root: Path | str | None = None,
                     keep: Iterable[Path] = ()) -> list[Path]:
    """Mark runs left "running"/"queued" by a dead server as "interrupted"; return them.

    Called once when a server's Engine takes the runs root: no worker can own them then.
    Their history and best checkpoint are untouched, so they can be resumed. Runs in
    ``keep`` (queued runs the new engine queues again) are left as they are.
    """
    kept = {Path(p).resolve() for p in keep}
    marked = []
    for run in list_runs(root):
        if run.status.get("status") in ACTIVE and run.run_dir not in kept:
            was = run.status.get("status")
            update_status(
                run.run_dir,
                status=RunStatus.INTERRUPTED,
                message=f"The server stopped while this run was {was}; "
                "its history and best checkpoint are kept — resume it to continue.",
            )
            marked.append(run.run_dir)
    return marked


# --------------------------------------------------------------------------- runs page helpers

NAME_MAX = 80
_NAME_BAD = re.compile(r"[/\\]")


def clean_run_name(name: str) -> str:
    """``name`` stripped, if it is a safe display name; else RunPathError saying why.

    Names never become paths, but one that looks like a path (``../../etc``) is refused
    anyway so no later use of it can ever leave the runs root.
    """
    clean = name.strip()
    if not clean:
        raise RunPathError("The new name is empty; type a few words such as 'quick-dropout'.")
    hidden = text.name_problem(clean, "name")
    if hidden:
        raise RunPathError(hidden)
    if _NAME_BAD.search(clean) or ".." in clean:
        raise RunPathError(
            f"The name {name!r} looks like a path: '/', '\\' and '..' are not allowed. Use "
            "letters, digits, spaces, '-' or '_'."
        )
    if len(clean) > NAME_MAX:
        raise RunPathError(f"The name has {len(clean)} characters; use at most {NAME_MAX}.")
    return clean


def rename_run(root: Path | str, run_id: str, name: str,
               user: User = LOCAL_USER) -> dict[str, Any]:
    """Give run ``run_id`` a new display name (in config.json); its id and folder stay, so
    links and open pages keep working. Returns the new config.

    Only the run's owner or a teacher may (access.AccessDenied otherwise).
    """
    run_dir = run_dir_for(root, run_id)
    clean = clean_run_name(name)
    if not (run_dir / STATUS_FILE).exists():
        raise RunPathError(f"There is no run {run_id!r} under {Path(root).resolve()}.")
    access.check_manage(user, access.owner_of(load_config(run_dir)), "rename", run_id)
    with run_lock(run_dir):  # one read-modify-write, against other renames and resumes
        config = {**load_config(run_dir), "name": clean}
        write_json(run_dir / CONFIG_FILE, config)
        return config


def delete_run(root: Path | str, run_id: str, user: User = LOCAL_USER) -> Path:
    """Delete run ``run_id``'s folder (only that folder, inside ``root``); return its path.

    Refuses a run that is queued or training (stop it first), and anyone but the run's
    owner or a teacher (access.AccessDenied).
    """
    import shutil

    run_dir = run_dir_for(root, run_id)
    if not run_dir.is_dir():
        raise RunPathError(f"There is no run {run_id!r} under {Path(root).resolve()}.")
    access.check_manage(user, access.owner_of(load_config(run_dir)), "delete", run_id)
    state = load_status(run_dir)
    if isinstance(state, dict) and state.get("status") in ACTIVE:
        raise ValueError(f"Run {run_id} is {state['status']}; stop it on the Train page first.")
    shutil.rmtree(run_dir)
    return run_dir


def run_problems(run_dir: Path | str) -> list[str]:
    """Why a run's files cannot be used, one sentence each (empty = the run is intact).

    Checks status.json and config.json are readable objects, the model config loads,
    history.csv parses with numeric loss/accuracy columns, and a run that is no longer
    active or failed has its best.keras.
    """
    from cnnlab.model.config import ConfigError, ModelConfig

    run_dir = Path(run_dir)
    problems = []
    status = _read_json(run_dir / STATUS_FILE)
    if not isinstance(status, dict):
        problems.append(f"{STATUS_FILE} is missing or unreadable.")
        status = {}
    config = _read_json(run_dir / CONFIG_FILE)
    if not isinstance(config, dict):
        problems.append(f"{CONFIG_FILE} is missing or unreadable.")
    else:
        try:
            ModelConfig.from_dict(config.get("model"))
        except (ConfigError, TypeError, ValueError) as exc:
            problems.append(f"{CONFIG_FILE} holds no valid model config ({exc}).")
    try:
        history = load_history(run_dir)
    except (UnicodeDecodeError, pd.errors.ParserError, ValueError, OSError) as exc:
        problems.append(f"{HISTORY_FILE} cannot be read ({type(exc).__name__}).")
    else:
        for col in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if not history.empty and col not in history:
                problems.append(f"{HISTORY_FILE} is corrupt: it has no '{col}' column.")
                break
            if col in history and pd.to_numeric(history[col], errors="coerce").isna().any():
                problems.append(f"{HISTORY_FILE} is corrupt: '{col}' holds non-numbers.")
                break
    state = status.get("status")
    if state not in (*ACTIVE, RunStatus.FAILED) and not best_model_path(run_dir).exists():
        problems.append(f"{BEST_FILE} is missing, so there is no model to use or download.")
    return problems
