"""``cnnlab runs evaluate`` and ``cnnlab runs export``: a run's best model tested on a
test set, or written as SavedModel or TFLite.

Evaluation is cnnlab.runs.evaluate's (the numbers training writes to metrics.json; nothing is
written here). Exports are the Runs page's: ``export.prepare_exports`` into the run's export/
folder, each TFLite model checked against the Keras model on the test images, then copied to
``--out`` (checked writable before any conversion).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from cnnlab.cli.common import CliError
from cnnlab.cli.run_lookup import dataset_for, find_run, readable_config, runs_root

FORMATS = ("savedmodel", "tflite", "tflite-int8")


def cmd_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """The best model on a test set: accuracy, loss, confusion matrix, per-class scores.

    Nothing is written: metrics.json stays the training's own evaluation.
    """
    from cnnlab.runs import evaluate
    from cnnlab.runs import store as runs
    from cnnlab.use.inference import load_run_model

    info = find_run(runs_root(args), args.run)
    config = readable_config(info)
    best = runs.best_model_path(info.run_dir)
    if not best.is_file():
        raise CliError(f"run {info.run_id} has no {runs.BEST_FILE}, so there is no model to "
                       "evaluate.")
    dataset = dataset_for(info, config, args.dataset)
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
    config = readable_config(info)
    if not runs.best_model_path(info.run_dir).is_file():
        raise CliError(f"run {info.run_id} has no {runs.BEST_FILE}, so there is nothing to "
                       "export.")
    wanted = {"savedmodel": export.SAVED_MODEL_ZIP, "tflite": export.TFLITE_FLOAT,
              "tflite-int8": export.TFLITE_INT8}[args.format]
    prepared = export.load_exports(info.run_dir)
    if prepared is None:
        try:
            x_check = dataset_for(info, config, None).x_test[:export.CHECK_IMAGES]
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
