"""Comparing runs: one summary row per run and the config fields that differ between runs.

Pure Python over the run store (cnnlab.runs.store); no Keras, no Streamlit. A run whose files are
damaged still gets a row (status "damaged" and the reason), so one bad folder never hides
the others.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from cnnlab.people import access
from cnnlab.runs import store as runs

# config.json keys that name or describe a run rather than set how it trains (the seed
# does set it: two runs that differ only in their seed differ in that row).
_NOT_SETTINGS = ("model", "fit", "name", "created", "class_names", "n_classes", "input_shape")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts/lists as one flat dict: ``{"blocks[1].filters": 16, "optimizer": "adam"}``.

    List indices count from 1, like "Block 1" on the Configure page and ``block1`` layer names.
    An empty list or dict stays as one value (so "no dense layers" is still a difference).
    """
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list | tuple) and value:
        out = {}
        for i, item in enumerate(value, start=1):
            out.update(flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def run_settings(run_config: dict[str, Any]) -> dict[str, Any]:
    """What a run trained with, from its config.json: the model's and the fit settings'
    fields at the top level, with the run's data set, limit and validation split."""
    settings: dict[str, Any] = {}
    for part in ("model", "fit"):
        if isinstance(run_config.get(part), dict):
            settings.update(run_config[part])
    settings.update({k: v for k, v in run_config.items() if k not in _NOT_SETTINGS})
    return settings


def config_diff(configs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The flattened fields whose values differ between runs, one row per field.

    ``configs`` maps run id → settings dict (e.g. ``run_settings(config.json)``). Each row is
    ``{"field": "blocks[2].filters", "<run id>": value, ...}``; a field a run lacks (say a
    third block) is None for it. Fields come in the order they first appear.
    """
    flat = {run_id: flatten(cfg) for run_id, cfg in configs.items()}
    fields: dict[str, None] = {}
    for values in flat.values():
        fields.update(dict.fromkeys(values))
    rows = []
    for name in fields:
        values = {run_id: f.get(name) for run_id, f in flat.items()}
        if len({repr(v) for v in values.values()}) > 1:
            rows.append({"field": name, **values})
    return rows


def model_summary(model: dict[str, Any]) -> str:
    """'conv16→conv32→dense64 · adam 0.002' from a model config dict ('' if unreadable)."""
    try:
        parts = [
            f"conv{b['filters']}" + (f"×{b['convs']}" if b.get("convs", 1) > 1 else "")
            for b in model.get("blocks", [])
        ]
        parts += [f"dense{d['units']}" for d in model.get("dense", [])]
        head = "→".join(parts) or "no layers"
        return f"{head} · {model.get('optimizer', '?')} {model.get('learning_rate', 0):g}"
    except (AttributeError, KeyError, TypeError, ValueError):
        return ""


def _number(value: Any) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def _planned_epochs(config: dict[str, Any]) -> int | None:
    """Epochs a run plans in all (both phases of a pretrained backbone), None if unreadable."""
    from cnnlab.train import training

    try:
        return training.total_epochs(training.request_from_config(config))
    except (KeyError, TypeError, ValueError):
        return None


def run_row(run: runs.RunInfo) -> dict[str, Any]:
    """One table row for ``run``: name, data set, model, scores, time, device, status.

    Never raises for damaged files: ``status`` becomes "damaged" and ``problem`` says why.
    """
    status = run.status if isinstance(run.status, dict) else {}
    config = run.config if isinstance(run.config, dict) else {}
    problems = runs.run_problems(run.run_dir)
    best_val = None
    if not any(p.startswith(runs.HISTORY_FILE) for p in problems):
        history = runs.load_history(run.run_dir)
        if "val_accuracy" in history and history["val_accuracy"].notna().any():
            best_val = float(pd.to_numeric(history["val_accuracy"]).max())
    metrics = runs.load_metrics(run.run_dir)
    test_acc = _number(metrics.get("test_accuracy")) if isinstance(metrics, dict) else None
    raw_model = config.get("model")
    model = raw_model if isinstance(raw_model, dict) else {}
    preset = config.get("preset") or "custom"
    summary = model_summary(model)
    done, total = status.get("epochs_done"), _planned_epochs(config)
    return {
        "run_id": run.run_id,
        "name": run.name,
        "dataset": run.dataset or "?",
        "model": f"{preset} · {summary}" if summary else str(preset),
        "params": _number(status.get("params")),
        "epochs": f"{done if done is not None else '?'}/{total if total else '?'}",
        "best_val_accuracy": best_val,
        "test_accuracy": test_acc,
        "seconds": _number(status.get("seconds")),
        "device": str(status.get("device") or ""),
        "status": "damaged" if problems else str(status.get("status", "?")),
        "problem": "; ".join(problems),
        "created": str(config.get("created") or ""),
        "owner": access.owner_of(config),
    }


def usage(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per owner: runs, runs queued or training, and CPU and GPU minutes trained, from
    run_row() rows (a teacher's view of who uses the server)."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = out.setdefault(row["owner"], {"owner": row["owner"], "runs": 0, "active": 0,
                                              "cpu_minutes": 0.0, "gpu_minutes": 0.0})
        entry["runs"] += 1
        entry["active"] += row["status"] in runs.ACTIVE
        kind = "gpu_minutes" if "GPU" in row["device"].upper() else "cpu_minutes"
        entry[kind] += (row["seconds"] or 0.0) / 60
    return sorted(out.values(), key=lambda e: (-e["cpu_minutes"] - e["gpu_minutes"], e["owner"]))
