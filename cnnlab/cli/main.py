"""Headless command line: ``cnnlab SUBCOMMAND ... --json`` (also ``python -m cnnlab``).

Every sub-command prints exactly one JSON object on stdout when given ``--json`` (else
readable lines); progress and logs go to stderr. Exit status: 0 done, 1 the run failed,
2 bad usage or refused input (with a message), 130 interrupted (Ctrl-C; a training run is
marked "interrupted" and stays resumable). Heavy modules are imported inside the handlers
so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.cli.common import CliError, Help, print_progress
from cnnlab.cli.native_logs import native_logs_hidden

if TYPE_CHECKING:
    from cnnlab.data.datasets import Dataset
    from cnnlab.model.config import ModelConfig
    from cnnlab.model.fit_settings import FitSettings
    from cnnlab.people.accounts import Accounts

# Exit statuses (DESIGN: CLI exit codes).
EXIT_DONE, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def emit(payload: dict[str, Any], as_json: bool, command: str) -> None:
    """Print the result: one JSON object with --json, else readable lines."""
    if as_json:
        print(json.dumps(payload))
    else:
        from cnnlab.cli.challenge_commands import text as challenge_text
        from cnnlab.cli.output import render
        from cnnlab.cli.runs_output import TEXT as RUNS_TEXT

        if command == "challenge":
            print(challenge_text(payload))
            return
        print(RUNS_TEXT[command](payload) if command in RUNS_TEXT else render(command, payload))


def cmd_datasets(args: argparse.Namespace) -> dict[str, Any]:
    """List the registry, then the class data sets of CNNLAB_DATASETS_DIR: name, class
    names, image shape (a class set's default) and whether it loads here now."""
    from cnnlab.data import datasets, shared_sets

    ready = datasets.available()
    listed: list[dict[str, Any]] = [
        {
            "name": info.name,
            "title": info.title,
            "classes": list(info.class_names),
            "image_shape": list(info.image_shape),
            "available": ready[name],
        }
        for name, info in datasets.REGISTRY.items()
    ]
    try:
        shared = shared_sets.listing()
    except shared_sets.SharedSetError as exc:  # the folder set is not there
        raise CliError(str(exc)) from exc
    side = shared_sets.DEFAULT_SIDE
    listed += [{"name": e.name, "title": f"Class set: {e.set_name} ({e.file})",
                "classes": list(e.classes), "image_shape": [side, side, 3],
                "available": e.problem is None, "images": e.images, "train": e.train,
                "test": e.test, "problem": e.problem} for e in shared]
    return {"datasets": listed}


def cmd_presets(args: argparse.Namespace) -> dict[str, Any]:
    """Every preset with its parameter count on its own data set."""
    from cnnlab.model.config import PRESETS, input_shape_for
    from cnnlab.model.models import total_params

    return {
        "presets": [
            {
                "name": p.name,
                "params": total_params(p.config, input_shape_for(p.dataset), _n_classes(p.dataset)),
                "description": p.description,
                "dataset": p.dataset,
            }
            for p in PRESETS.values()
        ]
    }


def _n_classes(dataset_name: str) -> int:
    """Class count of a registered data set (MNIST's for an unknown name, as input_shape_for)."""
    from cnnlab.data import datasets

    info = datasets.REGISTRY.get(dataset_name) or datasets.REGISTRY["mnist"]
    return len(info.class_names)


def cmd_summary(args: argparse.Namespace) -> dict[str, Any]:
    """Layer table, parameter count and memory of a preset or a config file."""
    from pathlib import Path

    from cnnlab.data import datasets
    from cnnlab.model.config import PRESETS, ConfigError, from_file, input_shape_for, validate
    from cnnlab.model.models import layer_table, memory_bytes

    if args.preset:  # argparse has checked the name against PRESETS
        config, dataset = PRESETS[args.preset].config, PRESETS[args.preset].dataset
    else:
        try:
            config = from_file(Path(args.config).read_bytes())[0]
        except OSError as exc:
            raise CliError(f"cannot read config file {args.config}: {exc.strerror}") from exc
        except ConfigError as exc:
            raise CliError(f"{args.config}: {exc}") from exc
        dataset = "mnist"
    dataset = args.dataset or dataset
    if dataset not in datasets.REGISTRY:
        known = ", ".join(datasets.REGISTRY)
        raise CliError(f"unknown data set '{dataset}'; choose one of {known}")
    shape, n_classes = input_shape_for(dataset), _n_classes(dataset)
    problems = validate(config, shape)
    if problems:
        raise CliError(f"invalid config for {dataset} {shape}:\n  " + "\n  ".join(problems))
    rows = layer_table(config, shape, n_classes)
    return {
        "dataset": dataset,
        "params": sum(r["params"] for r in rows),
        "layers": [
            {"name": r["name"], "output_shape": list(r["output_shape"]), "params": r["params"]}
            for r in rows
        ],
        "memory_bytes": memory_bytes(config, shape, n_classes),
    }


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    """Train a preset or config file on a data set, synchronously; progress to stderr."""
    import dataclasses
    import time
    from pathlib import Path

    from cnnlab.data import datasets, shared_sets
    from cnnlab.model import config
    from cnnlab.runs import store as runs
    from cnnlab.train import training

    if args.dataset.lower().endswith(".zip"):
        dataset = _zip_dataset(args)
    elif args.dataset.startswith("challenge:"):  # a challenge's visible set, on this root
        from cnnlab.cli.run_lookup import challenge_dataset

        dataset = challenge_dataset(_train_root(args), args.dataset)
    else:
        try:
            dataset = (_shared_dataset(args) if shared_sets.is_shared(args.dataset)
                       else datasets.load(args.dataset))
        except datasets.DatasetUnavailable as exc:
            raise CliError(str(exc)) from exc
    name = dataset.info.name
    if args.preset is None and args.config is None:
        args.preset = config.default_preset(name)
    if args.preset is not None:
        if args.preset not in config.PRESETS:
            raise CliError(f"unknown preset {args.preset!r}; choose one of "
                           f"{', '.join(config.PRESETS)}")
        chosen = config.PRESETS[args.preset]
        model_and_fit = chosen.config, chosen.fit
    else:
        try:
            model_and_fit = config.from_file(Path(args.config).read_bytes())
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot read config {args.config}: {exc}") from exc
    model_and_fit = _with_backbone(args, *model_and_fit)
    # The same defaults as the Train page: a batch that fits the data, epochs sized to it.
    offered = training.default_request(dataset, args.preset, args.limit, model_and_fit)
    fit = dataclasses.replace(
        offered.fit,
        epochs=args.epochs if args.epochs is not None else offered.fit.epochs,
        batch_size=args.batch_size if args.batch_size is not None else offered.fit.batch_size,
    )
    if args.fine_tune_epochs is not None:
        fit = dataclasses.replace(fit, fine_tune_epochs=args.fine_tune_epochs)
    weights = args.weights
    if weights not in (None, "imagenet"):  # config.json records where the file was
        weights = str(Path(weights).resolve())
    request = dataclasses.replace(offered, fit=fit, weights=weights)
    try:
        errors = training.request_errors(request, dataset)  # budgets included
    except ValueError as exc:  # a bad budget setting
        raise CliError(str(exc)) from exc
    if errors:
        raise CliError(" ".join(errors))
    root = _train_root(args)
    try:
        run_dir = runs.create_run(root, training.run_config(request, dataset))
    except runs.RunsRootError as exc:
        raise CliError(str(exc)) from exc
    print(f"run {run_dir}", file=sys.stderr)
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON object
            result = training.train_run(request, dataset, run_dir, print_progress)
    except KeyboardInterrupt:
        _mark_interrupted(run_dir)
        raise
    if result.status == runs.RunStatus.FAILED:
        print(f"error: {result.message} (run kept in {run_dir})", file=sys.stderr)
    return {
        "run_id": run_dir.name,
        "run_dir": str(run_dir),
        "status": result.status,
        "message": result.message,
        "history": training.history_dict(result.history),
        "test_accuracy": result.metrics["test_accuracy"] if result.metrics else None,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _train_root(args: argparse.Namespace) -> Path:
    """``train``'s runs folder: the parser's default is "runs"; CNNLAB_RUNS_DIR overrides
    that default only."""
    from cnnlab.runs import store as runs

    if args.runs_dir == "runs" and os.environ.get("CNNLAB_RUNS_DIR"):
        return runs.default_root()
    return Path(args.runs_dir)


def _with_backbone(args: argparse.Namespace, model: ModelConfig, fit: FitSettings
                   ) -> tuple[ModelConfig, FitSettings]:
    """The model with ``--backbone`` in place of its conv blocks (the head, optimizer and
    augmentation stay the preset's or config file's) and ``--unfreeze``."""
    import dataclasses

    if args.backbone:
        model = dataclasses.replace(model, backbone=args.backbone, blocks=())
    if args.unfreeze is not None:
        model = dataclasses.replace(model, unfreeze=args.unfreeze)
    epochs = fit.fine_tune_epochs if args.fine_tune_epochs is None else args.fine_tune_epochs
    if args.unfreeze and not epochs:
        raise CliError(f"--unfreeze {args.unfreeze} needs --fine-tune-epochs N (the epochs "
                       "of phase 2, which trains those layers); or leave out --unfreeze.")
    return model, fit


def _mark_interrupted(run_dir: Path) -> None:
    """Record a Ctrl-C'd run as "interrupted" (unless it already ended), like a server
    restart does: every file is written atomically, so the history, best model and
    resumable checkpoint of the epochs done are intact."""
    import signal

    from cnnlab.runs import store as runs
    from cnnlab.train import callbacks

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this write
    if runs.load_status(run_dir).get("status") not in runs.ACTIVE:
        return
    state = callbacks.read_checkpoint(run_dir)
    done = state["epoch"] if state else 0
    runs.update_status(
        run_dir, status=runs.RunStatus.INTERRUPTED,
        message=f"Interrupted (Ctrl-C) after {done} complete epoch(s); the history and best "
                "model are kept — resume it on the Train or Runs page to continue.")
    print(f"run kept in {run_dir}", file=sys.stderr)


def _shared_dataset(args: argparse.Namespace) -> Dataset:
    """A class data set of CNNLAB_DATASETS_DIR, from its decoded cache: ``shared:NAME``
    takes --image-size and --grayscale; ``shared:NAME@32-gray`` says them itself."""
    from cnnlab.data import shared_sets

    name = args.dataset
    if "@" not in name:
        name = shared_sets.shared_name(shared_sets.parse_name(name)[0], args.image_size,
                                       args.grayscale)
    return shared_sets.load(name)


def _zip_dataset(args: argparse.Namespace) -> Dataset:
    """The Dataset in a zip of class folders, read exactly as the Explore page reads one."""
    from pathlib import Path

    from cnnlab.data import datasets
    from cnnlab.data.datasets import UPLOAD_PREFIX

    path = Path(args.dataset)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return datasets.load_zip(data, (args.image_size, args.image_size), args.grayscale,
                                 name=f"{UPLOAD_PREFIX}{path.name}")
    except datasets.BadUpload as exc:
        raise CliError(str(exc)) from exc


def cmd_predict(args: argparse.Namespace) -> dict[str, Any]:
    """Classify one image with a run's best model or a .keras file: label, class name,
    probabilities, ms."""
    from pathlib import Path

    from cnnlab.use import inference

    image = Path(args.image)
    if args.run is not None:
        run_dir = Path(args.run)
        if not (run_dir / "status.json").is_file() and not (run_dir / "best.keras").is_file():
            raise CliError(f"--run {run_dir} is not a run directory (no status.json or "
                           "best.keras); give a folder under runs/ made by `cnnlab train`.")
    elif not Path(args.model).is_file():
        raise CliError(f"--model {args.model} does not exist; give the path of a .keras file "
                       "saved with model.save('model.keras').")
    if not image.is_file():
        raise CliError(f"--image {image} does not exist; give the path of a PNG or JPEG file.")
    try:
        if args.run is not None:
            return inference.predict_file(run_dir, image)
        return inference.predict_model_file(args.model, image)
    except ValueError as exc:  # ModelRejected or an unreadable image
        raise CliError(str(exc)) from exc


def cmd_users(args: argparse.Namespace) -> dict[str, Any]:
    """Local accounts for class mode: add (password from stdin or a prompt), list, remove,
    import a roster, reset a password, and list or end sessions."""
    import getpass

    from cnnlab.people import access, accounts

    if args.passwords_out and args.action != "import":
        raise CliError("--passwords-out goes with users import ROSTER.csv only.")
    if (args.revoke or args.user) and args.action != "sessions":
        raise CliError("--revoke and --user go with users sessions only.")
    example = {"add": "a NAME, e.g. python -m cnnlab users add kim",
               "remove": "a NAME; see python -m cnnlab users list",
               "reset": "a NAME; see python -m cnnlab users list",
               "import": "the roster CSV file, e.g. python -m cnnlab users import roster.csv"}
    if args.action in example and not args.name:
        raise CliError(f"users {args.action} needs {example[args.action]}")
    if args.action == "sessions" and args.name:
        raise CliError(f"users sessions takes no name ({args.name!r} was given): end a "
                       "person's sessions with --user NAME, or one session with --revoke ID.")
    store = accounts.Accounts(args.accounts_file or access.load_settings().accounts_file)
    where = {"accounts_file": str(store.path)}
    try:
        if args.action == "add":
            if sys.stdin.isatty():
                password = getpass.getpass(f"Password for {args.name}: ")
                if getpass.getpass("Again: ") != password:
                    raise CliError("The two passwords differ; run the command again.")
            else:  # scripts: one password per line on standard input
                password = sys.stdin.readline().rstrip("\r\n")
            user = store.add(args.name, password, teacher=args.teacher)
            return {"added": user.name, "role": user.role, **where}
        if args.action == "remove":
            store.remove(args.name)
            return {"removed": accounts.check_name(args.name), **where}
        if args.action == "reset":
            password = store.reset_password(args.name)
            return {"reset": accounts.check_name(args.name), "password": password, **where}
        if args.action == "import":
            return {**_import_roster(store, Path(args.name), args.passwords_out), **where}
        if args.action == "sessions":
            return _sessions(store.path, args.revoke, args.user)
        return {"users": [{"name": u.name, "role": u.role} for u in store.users()], **where}
    except accounts.AccountError as exc:
        raise CliError(str(exc)) from exc


def _import_roster(store: Accounts, roster_file: Path, passwords_out: str | None) -> dict[str, Any]:
    """``users import``: every account of the roster or none; the passwords in the result,
    or in ``passwords_out`` (made owner-only, never overwritten) when given."""
    import csv

    from cnnlab.people import roster

    try:
        text = roster_file.read_text(encoding="utf-8-sig")  # -sig: Excel's "CSV UTF-8" BOM
    except UnicodeDecodeError as exc:
        raise CliError(f"{roster_file} is not UTF-8 text; save it as CSV UTF-8 and import "
                       "it again.") from exc
    except OSError as exc:
        raise CliError(f"cannot read the roster {roster_file}: {exc.strerror or exc}; give "
                       "the path of a CSV file with one name (and optional role) a line.") from exc
    if not passwords_out:
        created = roster.import_roster(store, text)
        return {"imported": [c._asdict() for c in created]}
    roster.check_roster(text, store)  # a bad roster leaves no passwords file behind
    out = Path(passwords_out)
    try:  # O_EXCL: an earlier class's passwords are never overwritten
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise CliError(f"--passwords-out {out} exists already; it is never overwritten (it "
                       "may hold passwords handed out before): give a new file name.") from exc
    except OSError as exc:
        raise CliError(f"cannot create --passwords-out {out}: {exc.strerror or exc}.") from exc
    try:
        os.fchmod(fd, 0o600)  # whatever the umask, only the operator reads it
        created = roster.import_roster(store, text)
    except BaseException:
        os.close(fd)
        out.unlink(missing_ok=True)
        raise
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(roster.Created._fields)
        writer.writerows(created)
    return {"imported": [{"name": c.name, "role": c.role} for c in created],
            "passwords_file": str(out)}


def _sessions(accounts_file: Path, revoke: str | None, user: str | None) -> dict[str, Any]:
    """``users sessions``: the live sign-ins, or end one (``--revoke ID``) or a person's
    (``--user NAME``)."""
    from datetime import datetime

    from cnnlab.people import accounts, sessions

    store = sessions.Sessions(sessions.store_path(accounts_file))
    where = {"sessions_file": str(store.path)}
    if revoke:
        if not store.revoke_id(revoke):
            raise CliError(f"there is no live session {revoke!r}; see python -m cnnlab users "
                           "sessions for the ids.")
        return {"revoked": 1, "session": revoke.strip().lower(), **where}
    if user:
        name = accounts.check_name(user)
        return {"revoked": store.revoke_user(name), "user": name, **where}

    def when(epoch: float) -> str:
        return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")

    return {"sessions": [{"id": s.id, "user": s.user, "created": when(s.created),
                          "expires": when(s.expires)} for s in store.live()], **where}


def parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-parser per command."""
    from cnnlab import __version__
    from cnnlab.data.datasets import REGISTRY
    from cnnlab.model.backbones import BACKBONES
    from cnnlab.model.config import PRESETS

    presets, names, backbone_names = list(PRESETS), list(REGISTRY), list(BACKBONES)
    p = argparse.ArgumentParser(prog="cnnlab", description=__doc__, formatter_class=Help,
                                epilog="`cnnlab` and `python -m cnnlab` are the same command.")
    p.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("datasets", help="list data sets and whether they can be loaded here")
    s.set_defaults(func=cmd_datasets)

    s = sub.add_parser("presets", help="list model presets with parameter counts")
    s.set_defaults(func=cmd_presets)

    s = sub.add_parser("summary", help="layer shapes, parameters and memory of a config")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", choices=presets, metavar="NAME",
                     help=f"one of: {', '.join(presets)}")
    src.add_argument("--config", help="a config JSON file (as the Configure page downloads it)")
    s.add_argument("--dataset", default=None, choices=names, metavar="NAME",
                   help=f"one of: {', '.join(names)} (default: the preset's own, else mnist)")
    s.set_defaults(func=cmd_summary)

    s = sub.add_parser("train", help="train a preset or config on a data set")
    s.add_argument("--dataset", required=True, metavar="NAME_OR_ZIP",
                   help=f"one of: {', '.join(names)}; a class data set of "
                        "CNNLAB_DATASETS_DIR (shared:NAME, see `cnnlab datasets`); or the "
                        "path of a .zip of images with one folder per class")
    src = s.add_mutually_exclusive_group()
    src.add_argument("--preset", choices=presets, metavar="NAME",
                     help=f"one of: {', '.join(presets)} (default: the data set's own; "
                          "own-images for a zip)")
    src.add_argument("--config", help="a config JSON file (as the Configure page downloads it)")
    s.add_argument("--image-size", type=int, default=64,
                   help="side in pixels that a zip's or class data set's images are resized "
                        "to (default 64)")
    s.add_argument("--grayscale", action="store_true",
                   help="read a zip's or class data set's images as grayscale")
    s.add_argument("--epochs", type=int, default=None)
    s.add_argument("--batch-size", type=int, default=None)
    s.add_argument("--limit", type=int, default=None, help="use only the first N training samples")
    s.add_argument("--runs-dir", default="runs")
    s.add_argument("--backbone", choices=backbone_names, metavar="NAME",
                   help=f"a pretrained network in place of the conv blocks: one of "
                        f"{', '.join(backbone_names)} (the head stays the preset's)")
    s.add_argument("--weights", metavar="imagenet|PATH", default=None,
                   help="the backbone's starting weights: imagenet (downloaded into "
                        "KERAS_HOME/models when online) or a weights file (.weights.h5 or a "
                        "Keras *_notop.h5); default: random")
    s.add_argument("--unfreeze", type=int, default=None, metavar="N",
                   help="phase 2 trains the backbone's top N layers (BatchNorm stays frozen)")
    s.add_argument("--fine-tune-epochs", type=int, default=None, metavar="N",
                   help="epochs of phase 2, after --epochs of phase 1 (head only)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("predict", help="classify one image with a trained run or a .keras file")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="a run directory")
    src.add_argument("--model", metavar="FILE.keras",
                     help="a Keras model file from anywhere, checked as an upload is (size, "
                          "safe mode, a load in a child process); its classes are numbered")
    s.add_argument("--image", required=True)
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("users", help="local accounts for class mode (see README)")
    s.add_argument("action", choices=("add", "list", "remove", "import", "reset", "sessions"))
    s.add_argument("name", nargs="?", metavar="NAME_OR_CSV",
                   help="the account name (add, remove, reset), or the roster (import): a CSV "
                        "file, one name and optional role (student, teacher) a line")
    s.add_argument("--teacher", action="store_true", help="add: give the teacher role")
    s.add_argument("--passwords-out", metavar="FILE", default=None,
                   help="import: write name,role,password to this new file (owner-only, never "
                        "overwritten) instead of printing the passwords")
    ended = s.add_mutually_exclusive_group()
    ended.add_argument("--revoke", metavar="ID", default=None,
                       help="sessions: end the session with this id")
    ended.add_argument("--user", metavar="NAME", default=None,
                       help="sessions: end every session of this person")
    s.add_argument("--accounts-file", default=None,
                   help="default: [class] accounts_file in .streamlit/secrets.toml, else "
                        ".streamlit/accounts.json")
    s.set_defaults(func=cmd_users)

    from cnnlab.cli import challenge_commands, engine_command, runs_commands, serve

    serve.add_parser(sub)
    engine_command.add_parser(sub)

    runs_commands.add_parser(sub)
    challenge_commands.add_parser(sub)
    # `runs` and `challenge` take no options: each of their actions does (`cnnlab runs list
    # --json`).
    commands = [command for name, command in sub.choices.items()
                if name not in ("runs", "challenge")]
    for action in [*commands, *runs_commands.actions_of(sub),
                   *challenge_commands.actions_of(sub)]:
        action.formatter_class = Help
        action.add_argument("--json", action="store_true", help="print one JSON object")
        action.add_argument("--verbose", action="store_true",
                            help="also show TensorFlow's own log lines (CUDA, oneDNN, XLA)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    args = parser().parse_args(argv)  # bad usage: argparse exits 2 itself
    try:
        with contextlib.nullcontext() if args.verbose else native_logs_hidden():
            payload = args.func(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    emit(payload, args.json, args.command)
    return EXIT_FAILED if payload.get("status") == "failed" else EXIT_DONE


def run() -> None:
    """The ``cnnlab`` command: main(), then exit with its status."""
    code = main()
    if code == EXIT_INTERRUPTED:
        # Ctrl-C can land inside a TensorFlow op; tearing the interpreter down around its
        # threads then sometimes crashes (SIGSEGV, seen in CI). The run's files are
        # written by now, so leave without that teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)

