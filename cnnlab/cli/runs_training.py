"""``cnnlab runs resume`` and ``cnnlab runs fine-tune``: a run trained again in a worker.

As the Runs page's Resume and Fine-tune: ``Engine.resume`` continues from the last whole
epoch (weights, optimizer state, schedule, epoch count, early stopping), ``Engine.fine_tune``
starts a new run from the best weights that records its parent. The engine has one local
worker slot; the command waits for the run, its epoch lines on stderr. Ctrl-C asks the worker
to stop at the next batch, marks the run "interrupted" and exits 130.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.cli.common import CliError, print_progress
from cnnlab.cli.run_lookup import dataset_for, find_run, readable_config, runs_root

if TYPE_CHECKING:
    from cnnlab.train.jobs import Engine, Job

STOP_WAIT_S = 120  # how long a Ctrl-C'd run gets to stop at a batch before it is killed


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
    config = readable_config(info)
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
    dataset = dataset_for(info, config, args.dataset)
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
