"""``cnnlab runs …``: every action of the Runs page from the command line.

list, show, compare, resume, fine-tune, evaluate, export, rename and delete call the same
cnnlab functions as pages/runs_list.py, pages/run_detail.py and pages/run_manage.py:
``cnnlab.runs.store`` for the files, ``cnnlab.use.compare`` for rows and differences,
``Engine.resume``/``Engine.fine_tune`` (a local worker process, as every run trains) for
training, ``cnnlab.runs.evaluate`` and ``cnnlab.use.export`` for the rest. The command line
acts as the personal-mode user (``LOCAL_USER``, a teacher), as the app does without sign-in.

A run is named by its id or a unique prefix of it; an unknown or ambiguous one is refused
(exit 2) before any file is touched. Every refusal leaves the run store as it was.

Example:
    cnnlab runs list --status interrupted
    cnnlab runs resume 20260501-0930 --json
    cnnlab runs export 20260501-0930 --format tflite --out model.tflite
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.cli.common import CliError, Help, print_progress

if TYPE_CHECKING:
    import pandas as pd

    from cnnlab.data.datasets import Dataset
    from cnnlab.runs.store import RunInfo
    from cnnlab.train.jobs import Engine, Job

FORMATS = ("savedmodel", "tflite", "tflite-int8")
STOP_WAIT_S = 120  # how long a Ctrl-C'd run gets to stop at a batch before it is killed


# ---------------------------------------------------------------- finding runs


def runs_root(args: argparse.Namespace) -> Path:
    """``--runs-dir``, else the app's default (``CNNLAB_RUNS_DIR``, else ``runs/``)."""
    from cnnlab.runs import store as runs

    return Path(args.runs_dir) if args.runs_dir else runs.default_root()


def find_run(root: Path, given: str) -> RunInfo:
    """The run whose id is ``given`` or starts with it; CliError naming the candidates."""
    from cnnlab.runs import store as runs

    # ``given`` is only compared with the listed ids: no path is ever made from it.
    found = runs.list_runs(root)
    exact = [r for r in found if r.run_id == given]
    matches = exact or [r for r in found if r.run_id.startswith(given)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        near = ", ".join(r.run_id for r in found[:5]) or "none yet"
        raise CliError(f"there is no run {given!r} in {root} (newest: {near}); see "
                       f"`cnnlab runs list --runs-dir {root}`.")
    ids = ", ".join(r.run_id for r in matches)
    raise CliError(f"{given!r} is the start of {len(matches)} runs ({ids}); give more of "
                   "the id.")


def _readable_config(info: RunInfo) -> dict[str, Any]:
    """The run's config.json, or CliError when it is damaged (the page's check)."""
    from cnnlab.runs import store as runs

    problems = [p for p in runs.run_problems(info.run_dir) if p.startswith(runs.CONFIG_FILE)]
    if problems:
        raise CliError(f"run {info.run_id} is damaged: {problems[0]}")
    return runs.load_config(info.run_dir)


def _dataset(info: RunInfo, config: dict[str, Any], wanted: str | None) -> Dataset:
    """``--dataset`` (a registry name or a zip of class folders), else the run's own set."""
    from cnnlab.data import datasets

    name = wanted or str(config.get("dataset") or "")
    if name.lower().endswith(".zip"):
        path = Path(name)
        shape = list(config.get("input_shape") or (64, 64, 3))
        try:
            return datasets.load_zip(path.read_bytes(), (int(shape[0]), int(shape[1])),
                                     int(shape[-1]) == 1,
                                     name=f"{datasets.UPLOAD_PREFIX}{path.name}")
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc
        except datasets.BadUpload as exc:
            raise CliError(str(exc)) from exc
    if name.startswith(datasets.UPLOAD_PREFIX):
        raise CliError(f"run {info.run_id} was trained on the uploaded pictures "
                       f"{name[len(datasets.UPLOAD_PREFIX):]!r}: give that zip again with "
                       "--dataset PATH.zip.")
    try:
        return datasets.load(name)
    except (datasets.DatasetUnavailable, KeyError) as exc:
        raise CliError(str(exc).strip("'\"")) from exc


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


def cmd_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """The best model on a test set: accuracy, loss, confusion matrix, per-class scores.

    Nothing is written: metrics.json stays the training's own evaluation.
    """
    from cnnlab.runs import evaluate
    from cnnlab.runs import store as runs
    from cnnlab.use.inference import load_run_model

    info = find_run(runs_root(args), args.run)
    config = _readable_config(info)
    best = runs.best_model_path(info.run_dir)
    if not best.is_file():
        raise CliError(f"run {info.run_id} has no {runs.BEST_FILE}, so there is no model to "
                       "evaluate.")
    dataset = _dataset(info, config, args.dataset)
    want = tuple(config.get("input_shape") or ())
    if want and want != tuple(dataset.info.image_shape):
        raise CliError(f"run {info.run_id}'s model takes {'×'.join(map(str, want))} images; "
                       f"{dataset.info.name!r} has "
                       f"{'×'.join(map(str, dataset.info.image_shape))} images.")
    print(f"evaluating {info.run_id} on {dataset.info.name} "
          f"({len(dataset.x_test):,} test images)…", file=sys.stderr)
    metrics = evaluate.evaluate(load_run_model(best), dataset.x_test, dataset.y_test,
                                dataset.info.class_names)
    return {"run_id": info.run_id, "dataset": dataset.info.name,
            **{k: metrics[k] for k in ("test_accuracy", "test_loss", "n_test", "class_names",
                                       "confusion", "per_class")}}


# ---------------------------------------------------------------- training


def _engine(root: Path) -> Engine:
    """An Engine on ``root`` with one local worker slot (as the app's default executor)."""
    from cnnlab.train import executors, jobs

    try:
        engine = jobs.Engine(root, executor=executors.make("local", 1))
    except (OSError, executors.ExecutorUnavailable) as exc:
        raise CliError(str(exc)) from exc
    if engine.unavailable():
        why = engine.unavailable()
        engine.close()
        raise CliError(why)
    return engine


def _follow(engine: Engine, job: Job) -> dict[str, Any]:
    """Wait for ``job`` to end, its epoch lines on stderr; the train command's result.

    Ctrl-C stops the run at the next batch (its last whole epoch is kept), marks it
    "interrupted" and raises KeyboardInterrupt (exit 130).
    """
    from cnnlab.runs import store as runs
    from cnnlab.train import training

    print(f"run {job.run_dir}", file=sys.stderr)
    t0, seq = time.perf_counter(), 0
    try:
        while True:
            ended = job.wait(0.2)
            for event in job.events.since(seq):
                seq = event["seq"]
                print_progress(event)
            if ended:
                break
    except KeyboardInterrupt:
        _interrupt(engine, job)
        raise
    result = job.result
    status = runs.load_status(job.run_dir)
    metrics = runs.load_metrics(job.run_dir)
    rows = [{str(k): v for k, v in row.items()}
            for row in runs.load_history(job.run_dir).to_dict(orient="records")]
    if status.get("status") == runs.RunStatus.FAILED:
        print(f"error: {status.get('message')} (run kept in {job.run_dir})", file=sys.stderr)
    return {
        "run_id": job.run_id,
        "run_dir": str(job.run_dir),
        "status": str(status.get("status") or (result.status if result else "failed")),
        "message": str(status.get("message") or (result.message if result else "")),
        "history": training.history_dict(rows),
        "test_accuracy": (metrics or {}).get("test_accuracy") if status.get("status") ==
        runs.RunStatus.FINISHED else None,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _interrupt(engine: Engine, job: Job) -> None:
    """Ctrl-C: stop the worker at a batch, wait for it, record the run as "interrupted"."""
    from cnnlab.runs import store as runs
    from cnnlab.train import callbacks

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this
    print("stopping the run at the next batch…", file=sys.stderr)
    engine.stop(job.run_id)
    if not job.wait(STOP_WAIT_S) and job.handle is not None:
        job.handle.kill()
        job.wait(30)
    if runs.load_status(job.run_dir).get("status") == runs.RunStatus.FINISHED:
        return
    state = callbacks.read_checkpoint(job.run_dir)
    done = state["epoch"] if state else 0
    runs.update_status(
        job.run_dir, status=runs.RunStatus.INTERRUPTED,
        message=f"Interrupted (Ctrl-C) after {done} complete epoch(s); the history and best "
                "model are kept — resume it (cnnlab runs resume, or the Runs page) to "
                "continue.")
    print(f"run kept in {job.run_dir}", file=sys.stderr)


def _train(args: argparse.Namespace, start: str) -> dict[str, Any]:
    """Resume (``start="resume"``) or fine-tune a run in a worker and wait for it."""
    from cnnlab.data.datasets import DatasetUnavailable
    from cnnlab.people.access import AccessDenied
    from cnnlab.runs import store as runs
    from cnnlab.train import callbacks, training

    root = runs_root(args)
    info = find_run(root, args.run)
    config = _readable_config(info)
    if args.epochs is not None and args.epochs < 1:
        raise CliError(f"--epochs {args.epochs}: give a whole number of epochs, 1 or more.")
    status = info.status.get("status") if isinstance(info.status, dict) else None
    if start == "resume":
        if status not in runs.RESUMABLE:
            raise CliError(f"run {info.run_id} is {status}: only a stopped, interrupted, "
                           "failed or timed-out run resumes; fine-tune a finished one.")
        if callbacks.read_checkpoint(info.run_dir) is None:
            raise CliError(f"run {info.run_id} has no resumable checkpoint "
                           f"({callbacks.LAST_FILE}): fine-tune from its best model instead "
                           f"(cnnlab runs fine-tune {info.run_id}).")
    elif status in runs.ACTIVE:
        raise CliError(f"run {info.run_id} is {status}: wait for it to end, or stop it first.")
    try:
        epochs = args.epochs if args.epochs is not None or start == "resume" else \
            training.total_epochs(training.request_from_config(config))
    except (KeyError, TypeError, ValueError) as exc:
        raise CliError(f"run {info.run_id}'s config.json cannot be read back ({exc}).") \
            from exc
    dataset = _dataset(info, config, args.dataset)
    engine = _engine(root)
    try:
        try:
            if start == "resume":
                job = engine.resume(info.run_dir, dataset, epochs=epochs)
            else:
                assert epochs is not None
                job = engine.fine_tune(info.run_dir, dataset, epochs=epochs)
        except (ValueError, TypeError, KeyError, AccessDenied, DatasetUnavailable) as exc:
            raise CliError(str(exc)) from exc  # EngineRefused is a ValueError
        payload = _follow(engine, job)
        if start == "fine-tune":
            payload["parent"] = info.run_id
        return payload
    finally:
        engine.close()


def cmd_resume(args: argparse.Namespace) -> dict[str, Any]:
    """Continue a run from its last whole epoch (weights, optimizer, schedule, early
    stopping), as the page's Resume."""
    return _train(args, "resume")


def cmd_fine_tune(args: argparse.Namespace) -> dict[str, Any]:
    """A new run from this run's best weights, with a fresh optimizer; it records its
    parent."""
    return _train(args, "fine-tune")


# ---------------------------------------------------------------- files


def _check_out(out: Path) -> None:
    """CliError unless ``out`` can be written: a file in an existing, writable folder."""
    if out.is_dir():
        raise CliError(f"--out {out} is a folder; give a file name, e.g. {out / 'model.tflite'}.")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise CliError(f"--out {out}: the folder {parent} does not exist; create it first.")
    try:  # a real try, before any conversion: permissions, a read-only or virtual disk
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{out.name}.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
        if out.exists() and not os.access(out, os.W_OK):
            raise PermissionError(errno.EACCES, "Permission denied")
    except OSError as exc:
        raise CliError(f"--out {out} cannot be written ({exc.strerror or exc}); give a path "
                       "in a folder you can write to.") from exc


def cmd_export(args: argparse.Namespace) -> dict[str, Any]:
    """best.keras as a SavedModel zip or a TFLite model, prepared as on the page (kept in
    the run's export/ folder, each TFLite model checked on the test images), copied to
    ``--out``."""
    from cnnlab.data.datasets import DatasetUnavailable
    from cnnlab.runs import store as runs
    from cnnlab.uploads.model_files import ModelRejected
    from cnnlab.use import export

    info = find_run(runs_root(args), args.run)
    out = Path(args.out)
    _check_out(out)
    config = _readable_config(info)
    if not runs.best_model_path(info.run_dir).is_file():
        raise CliError(f"run {info.run_id} has no {runs.BEST_FILE}, so there is nothing to "
                       "export.")
    wanted = {"savedmodel": export.SAVED_MODEL_ZIP, "tflite": export.TFLITE_FLOAT,
              "tflite-int8": export.TFLITE_INT8}[args.format]
    prepared = export.load_exports(info.run_dir)
    if prepared is None:
        try:
            x_check = _dataset(info, config, None).x_test[:export.CHECK_IMAGES]
        except (CliError, DatasetUnavailable) as exc:
            print(f"the test images are not available here, so the TFLite models are not "
                  f"checked: {exc}", file=sys.stderr)
            x_check = None

        def progress(_fraction: float, text: str) -> None:
            print(text, file=sys.stderr)

        try:
            prepared = export.prepare_exports(info.run_dir, x_check, progress)
        except (export.ExportUnavailable, ModelRejected, FileNotFoundError) as exc:
            raise CliError(str(exc)) from exc
    item = next(f for f in prepared if f.file_name == wanted)
    data = export.export_path(info.run_dir, item.file_name).read_bytes()
    try:
        runs.write_bytes(out, data)
    except OSError as exc:
        raise CliError(f"cannot write --out {out}: {exc.strerror or exc}.") from exc
    return {"run_id": info.run_id, "format": args.format, "label": item.label,
            "out": str(out), "size": item.size,
            "agreement": list(item.agreement) if item.agreement else None}


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
