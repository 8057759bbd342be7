"""``cnnlab challenge …``: set a challenge, list them, submit a run, read the board.

The same cnnlab functions as pages/challenges.py: ``cnnlab.runs.challenges`` for the
store and the board, the engine's ``submit_to_challenge`` for a submission (scored in a
worker; with ``CNNLAB_ENGINE=process`` by the runs root's engine process). The command
line acts as the personal-mode user (``LOCAL_USER``), as the other commands do, so it
submits that user's own runs only. Nothing here prints a hidden image, label or
per-image result: a submission's score is its accuracy, loss and image count.

Exit status: 0 done, 1 the scoring failed, 2 refused (with why), 130 interrupted.

Example:
    cnnlab challenge create --name "Fashion under 100k" --dataset fashion_mnist \\
        --max-params 100000 --deadline 2026-06-05T17:00 --json
    cnnlab train --dataset challenge:fashion-under-100k-1a2b3c --epochs 3
    cnnlab challenge submit fashion-under-100k-1a2b3c 20260601-101500-quick --json
    cnnlab challenge board fashion-under-100k-1a2b3c --csv board.csv
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from cnnlab.cli.common import CliError, Help
from cnnlab.cli.run_lookup import runs_root

SCORE_FIELDS = ("id", "challenge", "run_id", "person", "status", "accuracy", "loss",
                "n_hidden", "params", "train_seconds", "submitted_at", "message")


def _challenge(root: Path, given: str) -> Any:
    from cnnlab.runs import challenges

    try:
        return challenges.load(root, given)
    except challenges.ChallengeError as exc:
        raise CliError(str(exc)) from exc


def challenge_row(challenge: Any, n_submissions: int) -> dict[str, Any]:
    """One challenge as ``list`` and ``create`` print it."""
    return {"id": challenge.id, "name": challenge.name, "brief": challenge.brief,
            "dataset": challenge.dataset_name, "source": challenge.source,
            "limits": asdict(challenge.limits), "per_person": challenge.per_person,
            "deadline": challenge.deadline, "closed": challenge.closed(),
            "show_names": challenge.show_names, "owner": challenge.owner,
            "created": challenge.created, "submissions": n_submissions}


def cmd_create(args: argparse.Namespace) -> dict[str, Any]:
    """Set a challenge on a registry data set or a zip of class folders."""
    from cnnlab.data import datasets
    from cnnlab.people.accounts import LOCAL_USER
    from cnnlab.runs import challenges

    root = runs_root(args)
    if args.dataset.lower().endswith(".zip"):
        path = Path(args.dataset)
        try:
            source = datasets.load_zip(path.read_bytes(), (args.image_size, args.image_size),
                                       args.grayscale, name=datasets.UPLOAD_PREFIX + path.name)
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc
        except datasets.BadUpload as exc:
            raise CliError(str(exc)) from exc
    else:
        try:
            source = datasets.load(args.dataset)
        except datasets.DatasetUnavailable as exc:
            raise CliError(str(exc)) from exc
    try:
        deadline = datetime.fromisoformat(args.deadline) if args.deadline else None
    except ValueError as exc:
        raise CliError(f"--deadline {args.deadline!r} is not a date and time: give e.g. "
                       "2026-06-05T17:00 (server time) or with its offset, +02:00.") from exc
    try:
        challenge = challenges.create(
            root, LOCAL_USER, class_mode=False, name=args.name, brief=args.brief,
            source=source, limits=challenges.Limits(args.max_params, args.max_epochs,
                                                    args.max_minutes),
            per_person=args.per_person, deadline=deadline, show_names=args.show_names,
            seed=args.seed, hidden_share=args.hidden_share)
    except challenges.ChallengeError as exc:
        raise CliError(str(exc)) from exc
    return {"challenge": challenge_row(challenge, 0)}


def cmd_list(args: argparse.Namespace) -> dict[str, Any]:
    """Every challenge on the runs root, newest first."""
    from cnnlab.runs import challenges

    root = runs_root(args)
    return {"challenges": [challenge_row(c, len(challenges.load_submissions(root, c.id)))
                           for c in challenges.list_challenges(root)]}


def _engine(root: Path) -> Any:
    """The engine that scores: the engine process with CNNLAB_ENGINE=process, else one in
    this process with one local worker (as ``cnnlab runs resume``)."""
    from cnnlab.cli.runs_training import _engine as local_engine
    from cnnlab.train import engine_client

    try:
        if engine_client.engine_mode() == "process":
            return engine_client.RemoteEngine(root, watch=False)
    except engine_client.EngineUnreachable as exc:
        raise CliError(str(exc)) from exc
    return local_engine(root)


def cmd_submit(args: argparse.Namespace) -> dict[str, Any]:
    """Submit one of your finished runs and wait for its hidden-test score (a command's
    own engine ends with it, so it always waits)."""
    from cnnlab.cli.run_lookup import find_run
    from cnnlab.people.access import AccessDenied
    from cnnlab.people.accounts import LOCAL_USER
    from cnnlab.runs import challenges
    from cnnlab.train import scoring

    root = runs_root(args)
    challenge = _challenge(root, args.challenge)
    run = find_run(root, args.run)
    engine = _engine(root)
    try:
        try:
            sub = engine.submit_to_challenge(challenge.id, run.run_id, LOCAL_USER)
        except (ValueError, AccessDenied) as exc:  # ChallengeError, EngineRefused
            raise CliError(str(exc)) from exc
        print(f"submitted {run.run_id} to {challenge.id}; scoring on the hidden split…",
              file=sys.stderr)
        record = scoring.wait_for_score(root, challenge.id, sub["id"], timeout=args.timeout)
    except TimeoutError as exc:
        raise CliError(str(exc)) from exc
    finally:
        engine.close()
    out = {k: v for k, v in asdict(record).items() if k in SCORE_FIELDS}
    return {**out, "status": "failed" if record.status == challenges.FAILED else record.status}


def cmd_board(args: argparse.Namespace) -> dict[str, Any]:
    """The leaderboard, best first; ``--csv FILE`` also writes it as CSV."""
    from cnnlab.people.accounts import LOCAL_USER
    from cnnlab.runs import challenges

    root = runs_root(args)
    challenge = _challenge(root, args.challenge)
    rows = challenges.board(challenge, challenges.load_submissions(root, challenge.id),
                            LOCAL_USER)
    if args.csv:
        try:
            Path(args.csv).write_text(challenges.board_csv(rows), encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot write {args.csv}: {exc.strerror or exc}") from exc
    return {"challenge": challenge_row(challenge, len(challenges.load_submissions(
        root, challenge.id))), "board": rows, "frozen": challenge.closed()}


def text(payload: dict[str, Any]) -> str:
    """The readable text of a ``challenge`` action's result."""
    if "board" in payload:
        lines = [f"{payload['challenge']['name']} ({payload['challenge']['id']})"
                 + (" — closed, the board is final" if payload["frozen"] else "")]
        lines += [f"{r['rank']:>3}  {r['who']:<24} {r['accuracy']:.4f}  {r['params']:>10,} "
                  f"params  {r['train_seconds']:>7.1f} s  {r['submitted_at']}"
                  for r in payload["board"]] or ["no scored submissions yet"]
        return "\n".join(lines)
    if "challenges" in payload:
        return "\n".join(f"{c['id']}  {c['name']}  on {c['source']}  deadline "
                         f"{c['deadline'] or 'none'}  {c['submissions']} submission(s)"
                         for c in payload["challenges"]) or "no challenges yet"
    if "challenge" in payload:
        c = payload["challenge"]
        return f"created {c['id']}: train on --dataset {c['dataset']}"
    score = "–" if payload.get("accuracy") is None else f"{payload['accuracy']:.4f}"
    return (f"submission {payload['id']} of {payload['run_id']}: {payload['status']}, "
            f"hidden-test accuracy {score}" + (f" ({payload['message']})"
                                               if payload.get("message") else ""))


def add_parser(sub: Any) -> None:
    """``challenge`` and its actions (main adds --json and --verbose to each)."""
    parent = sub.add_parser("challenge", help="class challenges: set one, submit, the board",
                            description=__doc__, formatter_class=Help)
    actions = parent.add_subparsers(dest="action", required=True)
    a = actions.add_parser("create", help="set a challenge")
    a.add_argument("--name", required=True)
    a.add_argument("--dataset", required=True, metavar="NAME_OR_ZIP",
                   help="a registry data set (its test set is the hidden split) or a zip of "
                        "class folders (a seeded share is hidden)")
    a.add_argument("--brief", default="")
    a.add_argument("--max-params", type=int, default=None, metavar="N")
    a.add_argument("--max-epochs", type=int, default=None, metavar="N")
    a.add_argument("--max-minutes", type=float, default=None, metavar="M",
                   help="minutes of training (a fine-tuned run's parents count)")
    a.add_argument("--per-person", type=int, default=3, metavar="N",
                   help="submissions per person (default 3; the best counts)")
    a.add_argument("--deadline", default=None, metavar="ISO",
                   help="server time, e.g. 2026-06-05T17:00; later submissions are refused")
    a.add_argument("--show-names", action="store_true",
                   help="the board shows names (default: aliases to students)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--hidden-share", type=float, default=0.2, metavar="F",
                   help="a zip's share kept hidden (default 0.2)")
    a.add_argument("--image-size", type=int, default=64, help="a zip's image side in pixels")
    a.add_argument("--grayscale", action="store_true", help="read a zip's images as grayscale")
    a.set_defaults(func=cmd_create)
    a = actions.add_parser("list", help="every challenge")
    a.set_defaults(func=cmd_list)
    a = actions.add_parser("submit", help="submit a finished run of yours")
    a.add_argument("challenge", metavar="CHALLENGE", help="a challenge id")
    a.add_argument("run", metavar="RUN", help="a run id, or a unique start of one")
    a.add_argument("--timeout", type=float, default=600.0, metavar="S",
                   help="the longest wait for the score (default 600 s)")
    a.set_defaults(func=cmd_submit)
    a = actions.add_parser("board", help="the leaderboard")
    a.add_argument("challenge", metavar="CHALLENGE", help="a challenge id")
    a.add_argument("--csv", default=None, metavar="FILE", help="also write it as CSV")
    a.set_defaults(func=cmd_board)
    for a in actions.choices.values():
        a.add_argument("--runs-dir", default=None, metavar="DIR",
                       help="the runs folder (default: CNNLAB_RUNS_DIR, else runs/)")


def actions_of(sub: Any) -> list[argparse.ArgumentParser]:
    """The parsers of ``challenge``'s actions."""
    parent = sub.choices["challenge"]
    actions = next(a for a in parent._actions if isinstance(a, argparse._SubParsersAction))
    return list(actions.choices.values())

