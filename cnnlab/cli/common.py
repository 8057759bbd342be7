"""What every CLI command shares: the help layout, the user-error exception and the
progress lines.

Kept apart from cnnlab.cli.main so the command modules (main, runs_commands) import it
without importing each other.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


class Help(argparse.HelpFormatter):
    """Help text wrapped at spaces only, so names such as best-fashion stay whole."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        import textwrap

        return textwrap.wrap(text, width, break_on_hyphens=False)


class CliError(Exception):
    """A user error: printed as one line to stderr, exit status 2."""


def print_progress(event: dict[str, Any]) -> None:
    """One stderr line per epoch (and a live batch line on a terminal)."""
    if event["kind"] == "epoch":
        phase = f"  (phase {event['phase']})" if "phase" in event else ""
        print(
            f"\repoch {event['epoch']}/{event['epochs']}  loss {event['loss']:.4f}  "
            f"acc {event['accuracy']:.4f}  val_loss {event['val_loss']:.4f}  "
            f"val_acc {event['val_accuracy']:.4f}  {event['seconds']:.1f}s{phase}",
            file=sys.stderr,
        )
    elif event["kind"] == "batch" and sys.stderr.isatty():
        print(
            f"\repoch {event['epoch']}/{event['epochs']}  batch {event['batch']}/"
            f"{event['batches']}  loss {event['loss']:.4f}  "
            f"{event['samples_per_s']:.0f} samples/s  ETA {event['eta_epoch_s']:.0f}s",
            end="", file=sys.stderr,
        )
    elif event["kind"] == "status" and event.get("message"):
        print(event["message"], file=sys.stderr)
