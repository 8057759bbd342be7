"""Readable text for ``cnnlab runs …`` results (without ``--json``).

Each function turns the command's JSON payload into aligned lines, so the text and
``--json`` cannot disagree (as cnnlab.cli.output does for the other commands).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cnnlab.cli.output import table


def pct(value: float | None) -> str:
    """0.857 → '85.70%', None → '–' (as the Runs page)."""
    return "–" if value is None else f"{value:.2%}"


def seconds(value: float | None) -> str:
    """12.3 → '12 s', None → '–'."""
    return "–" if value is None else f"{value:.0f} s"


def list_text(payload: dict[str, Any]) -> str:
    """The runs as a table: id, name, status, data set, model, params, epochs, scores."""
    found = payload["runs"]
    if not found:
        return (f"no runs in {payload['runs_dir']}" if not payload["total"] else
                f"none of the {payload['total']} runs in {payload['runs_dir']} match")
    rows = [(r["run_id"], r["name"], r["status"], r["dataset"], r["model"],
             "–" if r["params"] is None else int(r["params"]), r["epochs"],
             pct(r["best_val_accuracy"]), pct(r["test_accuracy"]), seconds(r["seconds"]),
             r["owner"]) for r in found]
    text = table(("ID", "NAME", "STATUS", "DATASET", "MODEL", "PARAMS", "EPOCHS", "BEST VAL",
                  "TEST", "TIME", "OWNER"), rows)
    damaged = [r for r in found if r["problem"]]
    notes = [f"{r['run_id']}: {r['problem']}" for r in damaged]
    return "\n".join([text, "", f"{len(found)} of {payload['total']} runs in "
                      f"{payload['runs_dir']}", *notes])


def show_text(payload: dict[str, Any]) -> str:
    """One run: facts, message, settings, the history table and the test scores."""
    run = payload["run"]
    lines = [f"{run['name']}  ({run['run_id']})",
             f"status: {run['status']}" + (f" — {run['message']}" if run["message"] else ""),
             f"data set: {run['dataset']} · model: {run['model']} · owner: {run['owner']}",
             f"epochs: {run['epochs']} · best val accuracy: {pct(run['best_val_accuracy'])} · "
             f"test accuracy: {pct(run['test_accuracy'])} · time: {seconds(run['seconds'])}"]
    if payload["parent"]:
        lines.append(f"fine-tuned from: {payload['parent']}")
    if run["resumable_epoch"] is not None and run["status"] not in ("finished", "damaged"):
        lines.append(f"resumable from epoch {run['resumable_epoch']}: "
                     f"cnnlab runs resume {run['run_id']}")
    if run["problem"]:
        lines.append(f"damaged: {run['problem']}")
    settings = payload["settings"] or {}
    if settings:
        from cnnlab.use.compare import flatten

        lines += ["", table(("SETTING", "VALUE"),
                            [(k, _value(v)) for k, v in flatten(settings).items()])]
    history = payload["history"] or {}
    if history.get("epoch"):
        keys = [k for k in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy",
                            "learning_rate", "seconds") if k in history]
        rows = [[_num(history[k][i]) for k in keys] for i in range(len(history["epoch"]))]
        lines += ["", table([k.upper().replace("_", " ") for k in keys], rows)]
    test = payload["test"]
    if test and test.get("test_accuracy") is not None:
        lines += ["", f"test: accuracy {pct(test['test_accuracy'])}, loss "
                      f"{test['test_loss']:.4f} on {test['n_test']:,} images"]
    lines += ["", f"folder: {payload['run_dir']}"]
    return "\n".join(lines)


def _value(v: Any) -> str:
    if isinstance(v, dict | list | tuple):
        import json

        return json.dumps(v)
    return "–" if v is None else str(v)


def _num(v: Any) -> Any:
    if isinstance(v, float):
        return int(v) if v.is_integer() and abs(v) >= 1 else f"{v:.4g}"
    return "–" if v is None else v


def compare_text(payload: dict[str, Any]) -> str:
    """Scores, then the settings that differ, one column per run."""
    found = payload["runs"]
    ids = [r["run_id"] for r in found]
    heads = ["FIELD", *ids]
    rows: list[list[Any]] = [
        ["name", *(r["name"] for r in found)],
        ["status", *(r["status"] for r in found)],
        ["test accuracy", *(pct(r["test_accuracy"]) for r in found)],
        ["best val accuracy", *(pct(r["best_val_accuracy"]) for r in found)],
    ]
    rows += [[d["field"], *("—" if d[i] is None else str(d[i]) for i in ids)]
             for d in payload["differ"]]
    note = ("These runs used the same settings: any difference in the scores is chance."
            if not payload["differ"] else
            f"Only the {len(payload['differ'])} setting(s) that differ are listed; list items "
            "count from 1.")
    return table(heads, rows) + "\n\n" + note


def train_like_text(payload: dict[str, Any]) -> str:
    """A resumed or fine-tuned run's end, as ``train`` prints it."""
    from cnnlab.cli.output import train_text

    text = train_text(payload)
    return text + (f"\nparent: {payload['parent']}" if payload.get("parent") else "")


def evaluate_text(payload: dict[str, Any]) -> str:
    """Accuracy, then the confusion matrix (rows: true class) and per-class scores."""
    names = [str(n) for n in payload["class_names"]]
    confusion = table(["TRUE \\ PREDICTED", *names],
                      [[n, *row] for n, row in zip(names, payload["confusion"], strict=True)])
    per_class = table(("CLASS", "PRECISION", "RECALL", "F1", "IMAGES"),
                      [(c["name"], pct(c["precision"]), pct(c["recall"]), f"{c['f1']:.3f}",
                        c["support"]) for c in payload["per_class"]])
    return "\n".join([
        f"{payload['run_id']} on {payload['dataset']}: test accuracy "
        f"{pct(payload['test_accuracy'])}, loss {payload['test_loss']:.4f} "
        f"({payload['n_test']:,} images)", "", confusion, "", per_class])


def export_text(payload: dict[str, Any]) -> str:
    """Where the export went, its size and its agreement with the Keras model."""
    from cnnlab.cli.output import mib

    agree = payload["agreement"]
    check = (f"; agrees with the Keras model on {agree[0]}/{agree[1]} test images"
             if agree else "")
    return f"wrote {payload['label']} to {payload['out']} ({mib(payload['size'])}){check}"


def rename_text(payload: dict[str, Any]) -> str:
    """'renamed ID: old → new'."""
    return f"renamed {payload['run_id']}: {payload['old_name']} → {payload['name']}"


def delete_text(payload: dict[str, Any]) -> str:
    """'deleted ID (name)'."""
    return f"deleted {payload['deleted']} ({payload['name']})"


TEXT: dict[str, Callable[[dict[str, Any]], str]] = {
    "runs list": list_text,
    "runs show": show_text,
    "runs compare": compare_text,
    "runs resume": train_like_text,
    "runs fine-tune": train_like_text,
    "runs evaluate": evaluate_text,
    "runs export": export_text,
    "runs rename": rename_text,
    "runs delete": delete_text,
}
