"""The event stream of a training run: what a worker reports and every page renders.

A run emits plain, picklable dicts, each with a ``kind``:

- ``status``: the run's state changed (``running`` with device/params/sizes, ``evaluating``);
- ``batch``: throttled progress inside an epoch (loss, accuracy, samples/s, ETAs);
- ``epoch``: one finished epoch, exactly one history.csv row, and ``samples``: the model's
  label and confidence for a few fixed test images (indices only, no pixels);
- ``metrics``: the test-set evaluation (metrics.json);
- ``file``: a file of the run directory sent back by a remote worker (name, bytes);
- ``done``: the run ended (final status, message, seconds).

The same dicts cross a process pipe (local workers) or a Ray queue, so nothing in them
may need more than pickle. ``EventLog`` keeps them in order for pages to poll.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]
Emit = Callable[[Event], None]

BATCH_EVENT_INTERVAL_S = 0.2


def make(kind: str, **data: Any) -> Event:
    """A new event of ``kind`` stamped with the wall-clock time."""
    return {"kind": kind, "time": time.time(), **data}


class EventLog:
    """A thread-safe, bounded, ordered log of events.

    Writers call ``append``; any number of readers poll ``since(seq)``. Each stored event
    gets ``seq`` (1, 2, ...). Old batch events fall off the end; epoch rows are also on
    disk in history.csv. ``compact`` drops the batch events of a finished run, so a server
    that ran many runs keeps only a few small dicts per run. ``latest_batch`` and
    ``latest_samples`` (the last epoch's sample predictions) outlive ``compact``.
    """

    def __init__(self, maxlen: int = 5000, listener: Emit | None = None) -> None:
        self._lock = threading.Lock()
        self._events: collections.deque[Event] = collections.deque(maxlen=maxlen)
        self._seq = 0
        self._listener = listener
        self.latest_batch: Event | None = None
        self.latest_samples: dict[str, list[Any]] | None = None

    def append(self, kind: str, **data: Any) -> Event:
        """Add a new event of ``kind``; returns it with its sequence number."""
        return self.add(make(kind, **data))

    def add(self, event: Event) -> Event:
        """Add an event made elsewhere (a worker's); returns the stored copy."""
        with self._lock:
            self._seq += 1
            event = {**event, "seq": self._seq}
            if event["kind"] != "file":  # file bytes go to disk, not into memory
                self._events.append(event)
            if event["kind"] == "batch":
                self.latest_batch = event
            elif event["kind"] == "epoch" and event.get("samples"):
                self.latest_samples = event["samples"]
        if self._listener is not None:
            self._listener(event)
        return event

    def since(self, seq: int = 0) -> list[Event]:
        """Events with a sequence number above ``seq``, oldest first."""
        with self._lock:
            return [e for e in self._events if e["seq"] > seq]

    def last_seq(self) -> int:
        """The sequence number of the newest event (0 when empty)."""
        with self._lock:
            return self._seq

    def compact(self) -> None:
        """Forget batch events (keep the last one): the run is over, its rows are on disk."""
        with self._lock:
            self._events = collections.deque(
                (e for e in self._events if e["kind"] not in ("batch", "epoch")),
                maxlen=50,
            )


def num(value: Any) -> float | None:
    """``value`` as a float, or None."""
    return None if value is None else float(value)
