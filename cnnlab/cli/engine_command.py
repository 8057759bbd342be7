"""``cnnlab engine``: the training engine of a runs folder as its own process.

Web processes started with ``CNNLAB_ENGINE=process`` share it (cnnlab.train.engine_server);
they start it themselves when none runs, so this command is for running it by hand or
under a service manager. It runs until SIGTERM or Ctrl-C; queued runs stay queued for
the next engine. A second engine on the same folder exits at once with status 3.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cnnlab.cli.common import CliError


def cmd_engine(args: argparse.Namespace) -> dict[str, Any]:
    """Serve the runs folder's engine until told to stop."""
    from cnnlab.runs import store as runs
    from cnnlab.train import engine_server

    root = Path(args.runs_dir) if args.runs_dir else runs.default_root()
    try:
        code = engine_server.serve(root, log=lambda line: print(line, file=sys.stderr,
                                                                  flush=True))
    except runs.RunsRootError as exc:
        raise CliError(str(exc)) from exc
    if code == engine_server.EXIT_BLOCKED:
        sys.exit(code)
    return {"runs_dir": str(root), "status": "stopped"}


def add_parser(sub: Any) -> None:
    """Add ``engine`` to the CLI's sub-parsers."""
    s = sub.add_parser(
        "engine", help="run the training engine of a runs folder as its own process (web "
                       "servers with CNNLAB_ENGINE=process share it)",
        description="Serve the runs folder's training engine (queue, workers, budgets) on a "
                    "Unix socket in that folder, for every web process started with "
                    "CNNLAB_ENGINE=process; they start it themselves when none runs. Runs "
                    "until SIGTERM or Ctrl-C, keeping the queue for the next engine; exits "
                    "with status 3 when another engine holds the folder.")
    s.add_argument("--runs-dir", default=None, metavar="DIR",
                   help="the runs folder (default: CNNLAB_RUNS_DIR, else runs/)")
    s.set_defaults(func=cmd_engine)
