"""Readable text for the CLI's results (``python -m cnnlab`` without ``--json``).

Each sub-command's JSON payload is turned into aligned lines here; the payload stays the one
source, so the text and ``--json`` cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """``rows`` under ``headers`` in aligned columns; numbers right-aligned, text left."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    numeric = [bool(rows) and all(isinstance(r[i], int | float) for r in rows)
               for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w)
                 for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(r) for r in cells)])


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list | tuple):
        return "×".join(str(v) for v in value)
    return str(value)


def count(n: int, noun: str) -> str:
    """'1 account', '30 accounts'."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def mib(n_bytes: float) -> str:
    """Bytes as MiB with one decimal (KiB below one MiB)."""
    if n_bytes < 1024**2:
        return f"{n_bytes / 1024:.1f} KiB"
    return f"{n_bytes / 1024**2:.1f} MiB"


def datasets_text(payload: dict[str, Any]) -> str:
    """The registry as a table: name, image shape, class count, loadable here, title."""
    rows = [(d["name"], d["image_shape"], len(d["classes"]), d["available"], d["title"])
            for d in payload["datasets"]]
    return table(("NAME", "IMAGE", "CLASSES", "HERE", "TITLE"), rows)


def presets_text(payload: dict[str, Any]) -> str:
    """Presets as a table: name, data set, parameters, description."""
    rows = [(p["name"], p.get("dataset", ""), p["params"], p["description"])
            for p in payload["presets"]]
    return table(("NAME", "DATASET", "PARAMS", "DESCRIPTION"), rows)


def summary_text(payload: dict[str, Any]) -> str:
    """The layer table, then the parameter count and memory."""
    rows = [(r["name"], r["output_shape"], r["params"]) for r in payload["layers"]]
    memory = ", ".join(f"{k.replace('_', ' ')} {mib(v)}"
                       for k, v in payload["memory_bytes"].items())
    return "\n".join([
        table(("LAYER", "OUTPUT", "PARAMS"), rows),
        "",
        f"{payload['params']:,} parameters on {payload['dataset']}; {memory} (float32)",
    ])


def train_text(payload: dict[str, Any]) -> str:
    """How the run ended, its last epoch, test accuracy, time and folder."""
    history = payload.get("history") or {}
    lines = [f"{payload['status']}: {payload.get('message', '')}".rstrip(": ")]
    epochs = len(history.get("loss", []))
    if epochs:
        last = ", ".join(f"{k} {v[-1]:.4f}" for k, v in history.items()
                         if k in ("loss", "accuracy", "val_loss", "val_accuracy")
                         and v and v[-1] is not None)
        lines.append(f"epochs done: {epochs} (last: {last})")
    if payload.get("test_accuracy") is not None:
        lines.append(f"test accuracy: {payload['test_accuracy']:.2%}")
    lines.append(f"run: {payload['run_id']} in {payload['run_dir']} "
                 f"({payload['seconds']:.1f} s)")
    return "\n".join(lines)


def predict_text(payload: dict[str, Any]) -> str:
    """The predicted class with its probability, then the runners-up."""
    probs = payload["probabilities"]
    ranked = sorted(range(len(probs)), key=lambda i: -probs[i])
    top = ", ".join(f"{i} {probs[i]:.1%}" for i in ranked[:3])
    return (f"{payload['class_name']} (label {payload['label']}) with "
            f"{probs[payload['label']]:.1%}, in {payload['ms']:.1f} ms\n"
            f"top 3 labels: {top}")


def users_text(payload: dict[str, Any]) -> str:
    """What ``users add/remove/import/reset`` did, the accounts as a table, or the sessions."""
    if "sessions" in payload or "revoked" in payload:
        return sessions_text(payload)
    where = payload["accounts_file"]
    if "added" in payload:
        return f"added {payload['added']} ({payload['role']}) to {where}"
    if "removed" in payload:
        return f"removed {payload['removed']} from {where}; their sessions have ended"
    if "reset" in payload:
        return (f"new password for {payload['reset']}: {payload['password']}\n\n"
                "Shown only this once (only its hash is kept): give it to them now. Their "
                "sessions have ended; they sign in again with it.")
    if "imported" in payload:
        return imported_text(payload)
    users = payload["users"]
    if not users:
        return f"no accounts in {where}"
    return table(("NAME", "ROLE"), [(u["name"], u["role"]) for u in users]) + f"\n\n{where}"


def imported_text(payload: dict[str, Any]) -> str:
    """A roster's new accounts: with their passwords (shown once), or where those went."""
    made = payload["imported"]
    teachers = sum(1 for u in made if u["role"] == "teacher")
    done = (f"{count(len(made), 'account')} created in {payload['accounts_file']} "
            f"({count(len(made) - teachers, 'student')}, {count(teachers, 'teacher')}).")
    if "passwords_file" in payload:
        return (f"{done}\nTheir passwords are in {payload['passwords_file']}, readable only by "
                "you: hand them out, then delete the file.")
    rows = [(u["name"], u["role"], u["password"]) for u in made]
    return "\n".join([
        table(("NAME", "ROLE", "PASSWORD"), rows), "", done,
        "These passwords are shown only this once (only their hashes are kept): hand them out "
        "now. A lost one: python -m cnnlab users reset NAME."])


def sessions_text(payload: dict[str, Any]) -> str:
    """The live sign-ins as a table, or which were ended."""
    if "session" in payload:
        return f"ended session {payload['session']}"
    if "user" in payload:
        return f"ended {count(payload['revoked'], 'session')} of {payload['user']}"
    found = payload["sessions"]
    if not found:
        return f"nobody is signed in ({payload['sessions_file']})"
    rows = [(s["id"], s["user"], _minute(s["created"]), _minute(s["expires"])) for s in found]
    return (table(("ID", "USER", "SINCE", "UNTIL"), rows)
            + "\n\nEnd one with --revoke ID, or a person's with --user NAME.")


def _minute(iso: str) -> str:
    """'2025-05-01T09:30:12+02:00' → '2025-05-01 09:30' (local time, as the server keeps)."""
    return iso[:16].replace("T", " ")


def _plain(payload: dict[str, Any]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in payload.items())


TEXT: dict[str, Callable[[dict[str, Any]], str]] = {
    "datasets": datasets_text,
    "presets": presets_text,
    "summary": summary_text,
    "train": train_text,
    "predict": predict_text,
    "users": users_text,
    "serve": lambda payload: payload["nginx_config"].rstrip("\n"),  # only --nginx-config returns
}


def render(command: str, payload: dict[str, Any]) -> str:
    """The readable text of ``command``'s result (``key: value`` lines for an unknown one)."""
    return TEXT.get(command, _plain)(payload)
