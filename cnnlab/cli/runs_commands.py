"""``cnnlab runs …``: every action of the Runs page from the command line.

list, show, compare, resume, fine-tune, evaluate, export, rename and delete call the same
cnnlab functions as pages/runs_list.py, pages/run_detail.py and pages/run_manage.py:
``cnnlab.runs.store`` for the files, ``cnnlab.use.compare`` for rows and differences,
``Engine.resume``/``Engine.fine_tune`` (a local worker process, as every run trains) for
training, ``cnnlab.runs.evaluate`` and ``cnnlab.use.export`` for the rest. The command line
acts as the personal-mode user (``LOCAL_USER``, a teacher), as the app does without sign-in.

This module holds the reading and naming actions and the parser; resume and fine-tune are
in cli/runs_training.py, evaluate and export in cli/runs_files.py, the lookup of a run in
cli/run_lookup.py and the readable text in cli/runs_output.py.

A run is named by its id or a unique prefix of it; an unknown or ambiguous one is refused
(exit 2) before any file is touched. Every refusal leaves the run store as it was.

Example:
    cnnlab runs list --status interrupted
    cnnlab runs resume 20260501-0930 --json
    cnnlab runs export 20260501-0930 --format tflite --out model.tflite
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from cnnlab.cli.common import CliError, Help
from cnnlab.cli.run_lookup import find_run, runs_root
from cnnlab.cli.runs_files import FORMATS, cmd_evaluate, cmd_export
from cnnlab.cli.runs_training import cmd_fine_tune, cmd_resume

if TYPE_CHECKING:
    import pandas as pd

    from cnnlab.runs.store import RunInfo


# ---------------------------------------------------------------- reading


def cmd_list(args: argparse.Namespace) -> dict[str, Any]:
    """Every run as the Runs page's table shows it, newest first, optionally filtered."""
    from cnnlab.runs import store as runs
    from cnnlab.use import compare

    root = runs_root(args)
    rows = [compare.run_row(info) for info in runs.list_runs(root)]
    shown = [r for r in rows
             if (args.status is None or r["status"] == args.status)
             and (args.dataset is None or r["dataset"] == args.dataset)]
    return {"runs_dir": str(root), "total": len(rows), "runs": shown}


def cmd_show(args: argparse.Namespace) -> dict[str, Any]:
    """One run: its facts and status, model config, fit settings, history, test scores."""
    from cnnlab.runs import store as runs
    from cnnlab.train import callbacks
    from cnnlab.use import compare

    info = find_run(runs_root(args), args.run)
    row = compare.run_row(info)
    config = info.config if isinstance(info.config, dict) else {}
    history = runs.load_history(info.run_dir) if runs.HISTORY_FILE not in row["problem"] \
        else None
    metrics = runs.load_metrics(info.run_dir)
    test = ({k: metrics.get(k) for k in ("test_accuracy", "test_loss", "n_test")}
            if isinstance(metrics, dict) else None)
    checkpoint = callbacks.read_checkpoint(info.run_dir)
    status = info.status if isinstance(info.status, dict) else {}
    return {
        "run": {**row, "message": str(status.get("message") or ""),
                "resumable_epoch": checkpoint["epoch"] if checkpoint else None},
        "parent": config.get("parent"),
        "config": config.get("model"),
        "fit": config.get("fit"),
        "settings": {k: v for k, v in compare.run_settings(config).items()
                     if k not in ("dataset", "owner", "parent")},
        "history": _columns(history) if history is not None else None,
        "test": test,
        "run_dir": str(info.run_dir),
    }


def _columns(frame: pd.DataFrame) -> dict[str, list[Any]]:
    """history.csv's columns as JSON lists (a blank cell is None)."""
    from cnnlab.train import events

    return {str(c): [events.num(v) for v in frame[c]] for c in frame.columns}


def cmd_compare(args: argparse.Namespace) -> dict[str, Any]:
    """Several runs' scores and the settings that differ between them (as on the page)."""
    from cnnlab.runs import store as runs
    from cnnlab.use import compare

    root = runs_root(args)
    infos = [find_run(root, given) for given in args.runs]
    ids = [i.run_id for i in infos]
    if len(set(ids)) < len(ids):
        raise CliError(f"the same run is named twice ({', '.join(ids)}); give different runs.")
    rows = [compare.run_row(i) for i in infos]
    settings = {i.run_id: compare.run_settings(runs.load_config(i.run_dir)) for i in infos}
    return {
        "runs": [{k: r[k] for k in ("run_id", "name", "status", "test_accuracy",
                                    "best_val_accuracy")} for r in rows],
        "differ": compare.config_diff(settings),
    }


def _not_active(info: RunInfo, action: str) -> None:
    """CliError when the run is queued or training (stop it first, as on the page)."""
    from cnnlab.runs import store as runs

    state = info.status.get("status") if isinstance(info.status, dict) else None
    if state in runs.ACTIVE:
        raise CliError(f"run {info.run_id} is {state}: stop it (on the Train page) before you "
                       f"{action} it.")


def cmd_rename(args: argparse.Namespace) -> dict[str, Any]:
    """A new display name (text, never a path); the id and folder stay."""
    from cnnlab.people.access import AccessDenied
    from cnnlab.runs import store as runs

    root = runs_root(args)
    info = find_run(root, args.run)
    _not_active(info, "rename")
    try:
        config = runs.rename_run(root, info.run_id, args.name)
    except (runs.RunPathError, AccessDenied) as exc:
        raise CliError(str(exc)) from exc
    return {"run_id": info.run_id, "old_name": info.name, "name": config["name"]}


def cmd_delete(args: argparse.Namespace) -> dict[str, Any]:
    """Delete a run's folder after a confirmation (``--yes`` in scripts)."""
    from cnnlab.people.access import AccessDenied
    from cnnlab.runs import store as runs

    root = runs_root(args)
    info = find_run(root, args.run)
    _not_active(info, "delete")
    if not args.yes:
        if args.json or not sys.stdin.isatty():
            raise CliError(f"deleting run {info.run_id} ({info.name}) cannot be undone: add "
                           "--yes to confirm.")
        answer = input(f"Delete {info.name} ({info.run_id}) and all its files? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            raise CliError("nothing deleted.")
    try:
        runs.delete_run(root, info.run_id)
    except (runs.RunPathError, AccessDenied, ValueError, OSError) as exc:
        raise CliError(str(exc)) from exc
    return {"deleted": info.run_id, "name": info.name}


# ---------------------------------------------------------------- the parser


# ---------------------------------------------------------------- the parser


def add_parser(sub: Any) -> None:
    """``runs`` and its actions, under the CLI's sub-parsers ``sub``."""
    from cnnlab.runs.store import RunStatus

    what = ("list, show, compare, resume, fine-tune, evaluate, export, rename or delete runs "
            "(the Runs page)")
    p = sub.add_parser("runs", formatter_class=Help, help=what,
                       description=f"{what}. Each action takes --runs-dir DIR and --json.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, func: Any, help_text: str, run: bool = True) -> Any:
        a = actions.add_parser(name, help=help_text, description=help_text,
                               formatter_class=Help)
        a.set_defaults(func=func, command=f"runs {name}")
        if run:
            a.add_argument("run", metavar="RUN", help="a run id, or a unique start of one")
        return a

    statuses = [str(s) for s in RunStatus] + ["damaged"]
    a = action("list", cmd_list, "every run: status, data set, model, scores, time", run=False)
    a.add_argument("--status", choices=statuses, metavar="S",
                   help=f"only runs in this state: {', '.join(statuses)}")
    a.add_argument("--dataset", metavar="D", help="only runs on this data set")
    action("show", cmd_show, "one run: config, fit settings, status, history, test scores")
    a = action("compare", cmd_compare, "scores and the settings that differ", run=False)
    a.add_argument("runs", nargs="+", metavar="RUN", help="two or more run ids (or prefixes)")
    for name, func, text in (
            ("resume", cmd_resume, "continue a stopped or interrupted run from its last "
                                   "whole epoch"),
            ("fine-tune", cmd_fine_tune, "a new run from this run's best weights")):
        a = action(name, func, text)
        a.add_argument("--epochs", type=int, default=None, metavar="N",
                       help="the total epochs (default: the run's own)")
        a.add_argument("--dataset", metavar="D", default=None,
                       help="a data set name or a zip (default: the run's own)")
    a = action("evaluate", cmd_evaluate, "test accuracy and confusion matrix of the best model")
    a.add_argument("--dataset", metavar="D", default=None,
                   help="a data set name or a zip of the same image size (default: the run's)")
    a = action("export", cmd_export, "best.keras as SavedModel or TFLite, checked")
    a.add_argument("--format", required=True, choices=FORMATS)
    a.add_argument("--out", required=True, metavar="PATH", help="the file to write")
    a = action("rename", cmd_rename, "give a run a new display name")
    a.add_argument("name", metavar="NAME", help="the new name (text, not a path)")
    a = action("delete", cmd_delete, "delete a run and its files")
    a.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    for a in actions.choices.values():
        a.add_argument("--runs-dir", default=None, metavar="DIR",
                       help="the runs folder (default: CNNLAB_RUNS_DIR, else runs/)")


def actions_of(sub: Any) -> list[argparse.ArgumentParser]:
    """The parsers of ``runs``' actions (main adds --json and --verbose to each)."""
    runs_parser = sub.choices["runs"]
    actions = next(a for a in runs_parser._actions
                   if isinstance(a, argparse._SubParsersAction))
    return list(actions.choices.values())
