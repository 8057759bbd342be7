"""How long a queued run waits: its place in the queue and when it should start.

The estimate plays the queue forward on the server's slots: each slot frees when the run
training on it ends; each queued run, in queue order, takes the slot that frees first and
holds it for its planned time. Every time is epochs × an epoch time measured on this server:

- a running run: the rest of its current epoch (its last batch report's ETA, less the time
  since that report) plus its epochs after that × its mean epoch time (its own finished
  epochs; before its first one ends, that epoch's pace so far);
- a queued run: its planned epochs × the epoch time of its *shape* (same data set, model,
  batch size, sample limit, validation split and precision: ``shape_key``) as measured
  on finished epochs, else as a running run of that shape paces it, else the mean epoch
  time of every epoch timed so far; plus the mean time a run spends outside its epochs
  (a worker starting, the test-set evaluation). Unknown before any epoch was timed.

Early stopping may end runs sooner, so runs tend to start before their estimate. Pages
recompute it at every poll (it reads memory only), so it follows the runs as they train.
"""

from __future__ import annotations

import collections
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cnnlab.train.events import Event
    from cnnlab.train.training import TrainRequest

MAX_SHAPES = 500  # shapes remembered; the oldest is forgotten first


def shape_key(request: TrainRequest) -> str:
    """What an epoch's time depends on, as a short key: the data set, the model, the batch
    size, the sample limit, the validation split and mixed precision (not the epochs, the
    name or the seed)."""
    fields = {"dataset": request.dataset, "config": request.config.to_dict(),
              "batch_size": request.fit.batch_size, "limit": request.limit,
              "val_fraction": request.val_fraction, "mixed": request.mixed_precision}
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class EpochTimes:
    """Epoch times measured on this server, by shape, and the time runs spend outside
    their epochs. Not thread-safe: the engine updates and reads it under its lock.

    Example:
        >>> times = EpochTimes()
        >>> times.add_epoch("quick-mnist", 8.0); times.add_epoch("quick-mnist", 6.0)
        >>> times.epoch_seconds("quick-mnist"), times.epoch_seconds("other")
        (7.0, None)
        >>> times.mean_epoch_seconds()
        7.0
    """

    def __init__(self) -> None:
        # Sums and counts, not lists: a server that ran thousands of epochs keeps two numbers
        # per shape.
        self._by_shape: collections.OrderedDict[str, tuple[float, int]] = (
            collections.OrderedDict())
        self._all = (0.0, 0)
        self._overhead = (0.0, 0)

    def add_epoch(self, shape: str, seconds: float) -> None:
        """One finished epoch of a run of ``shape`` took ``seconds``."""
        total, n = self._by_shape.pop(shape, (0.0, 0))
        self._by_shape[shape] = (total + seconds, n + 1)
        while len(self._by_shape) > MAX_SHAPES:
            self._by_shape.popitem(last=False)
        self._all = (self._all[0] + seconds, self._all[1] + 1)

    def add_overhead(self, seconds: float) -> None:
        """A run spent ``seconds`` outside its epochs (start-up, evaluation)."""
        self._overhead = (self._overhead[0] + max(0.0, seconds), self._overhead[1] + 1)

    def epoch_seconds(self, shape: str) -> float | None:
        """The mean epoch time of runs of ``shape``; None when none was timed."""
        total, n = self._by_shape.get(shape, (0.0, 0))
        return total / n if n else None

    def mean_epoch_seconds(self) -> float | None:
        """The mean time of every epoch timed so far; None before the first."""
        return self._all[0] / self._all[1] if self._all[1] else None

    def overhead_seconds(self) -> float:
        """The mean time a run spends outside its epochs; 0 before a run has ended."""
        return self._overhead[0] / self._overhead[1] if self._overhead[1] else 0.0


@dataclass(frozen=True)
class Progress:
    """A running run as the estimate sees it.

    Args:
        shape: its ``shape_key``.
        epochs_left: epochs not yet finished, the one in progress included.
        epoch_s: its own mean epoch time (or first-epoch pace); None before it reports.
        epoch_rest_s: seconds left in the epoch in progress; None when not reported.
    """

    shape: str
    epochs_left: int
    epoch_s: float | None = None
    epoch_rest_s: float | None = None


def progress(shape: str, total_epochs: int, epochs_done: int, epoch_seconds: Sequence[float],
             batch: Event | None, now: float) -> Progress:
    """A running run's ``Progress`` from what its worker has reported.

    Args:
        shape: the run's ``shape_key``.
        total_epochs: the epochs it trains in all.
        epochs_done: its finished epochs (a resumed run counts its earlier ones).
        epoch_seconds: the times of the epochs it finished since it started here.
        batch: its latest batch event (``epoch``, ``eta_epoch_s``, ``elapsed_s``, ``time``).
        now: the clock the events' ``time`` was stamped with (time.time()).
    """
    epoch_s = sum(epoch_seconds) / len(epoch_seconds) if epoch_seconds else None
    rest = None
    if batch is not None and batch.get("epoch") == epochs_done + 1:  # the epoch in progress
        age = max(0.0, now - float(batch.get("time", now)))
        eta = float(batch.get("eta_epoch_s") or 0.0)
        rest = max(0.0, eta - age)
        if epoch_s is None:  # its first epoch here: time so far plus the rest
            epoch_s = float(batch.get("elapsed_s") or 0.0) + eta
    return Progress(shape, max(0, total_epochs - epochs_done), epoch_s, rest)


@dataclass(frozen=True)
class Planned:
    """A queued run as the estimate sees it: who, which shape and how many epochs."""

    run_id: str
    owner: str
    shape: str
    epochs: int


@dataclass(frozen=True)
class Wait:
    """One queued run's wait.

    Args:
        run_id, owner: the run and who queued it.
        position: its place in the queue (1 = the next to start).
        ahead: the runs that go before it: those training now and those queued ahead.
        starts_in_s: seconds until it should start; None while unknown.
    """

    run_id: str
    owner: str
    position: int
    ahead: int
    starts_in_s: float | None


@dataclass(frozen=True)
class QueueEstimate:
    """The whole queue's estimate: each queued run's wait (in queue order) and each running
    run's seconds left (None while unknown)."""

    waits: list[Wait]
    ends_in: dict[str, float | None]


def estimate(slots: int, running: Mapping[str, Progress], queued: Sequence[Planned],
             times: EpochTimes) -> QueueEstimate:
    """Play the queue forward (the rule is in the module docstring).

    Args:
        slots: how many runs train at once.
        running: run id → Progress of each run training now.
        queued: the queued runs, first to start first.
        times: the epoch times measured on this server.
    """
    paces: dict[str, list[float]] = collections.defaultdict(list)
    for p in running.values():
        if p.epoch_s is not None:
            paces[p.shape].append(p.epoch_s)

    def epoch_time(shape: str, own: float | None = None) -> float | None:
        if own is not None:
            return own
        measured = times.epoch_seconds(shape)
        if measured is not None:
            return measured
        if paces[shape]:
            return sum(paces[shape]) / len(paces[shape])
        return times.mean_epoch_seconds()

    ends_in: dict[str, float | None] = {}
    for run_id, p in running.items():
        each = epoch_time(p.shape, p.epoch_s)
        if p.epochs_left == 0:
            ends_in[run_id] = 0.0  # evaluating
        elif each is not None:
            first = p.epoch_rest_s if p.epoch_rest_s is not None else each
            ends_in[run_id] = first + (p.epochs_left - 1) * each
        else:
            ends_in[run_id] = None
    free: list[float | None] = [*ends_in.values(), *[0.0] * max(0, slots - len(running))]
    unknown = not free or any(f is None for f in free)
    known = [f for f in free if f is not None]
    waits = []
    for n, plan in enumerate(queued):
        start = None
        if not unknown:
            start = min(known)
            each = epoch_time(plan.shape)
            if each is None:
                unknown = True
            else:
                known[known.index(start)] = start + plan.epochs * each + times.overhead_seconds()
        waits.append(Wait(plan.run_id, plan.owner, n + 1, len(running) + n, start))
    return QueueEstimate(waits, ends_in)


# ------------------------------------------------------------------------------ for people


def about(seconds: float) -> str:
    """A wait in words: 'less than a minute', 'about 12 min', 'about 1 h 05 min'."""
    minutes = round(seconds / 60)
    if seconds < 60 or minutes < 1:
        return "less than a minute"
    if minutes < 60:
        return f"about {minutes} min"
    return f"about {minutes // 60} h {minutes % 60:02d} min"


def sentence(wait: Wait) -> str:
    """What the run's owner reads: 'N runs ahead of yours, starts in about M min.' (no
    other person's name or run)."""
    if wait.ahead == 0:
        return "Next to start."
    runs = f"{wait.ahead} run{'s' if wait.ahead != 1 else ''} ahead of yours"
    if wait.starts_in_s is None:
        return f"{runs}; the start time shows once this server has timed an epoch."
    return f"{runs}, starts in {about(wait.starts_in_s)}."
