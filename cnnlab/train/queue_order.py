"""The queue's fair order: queued runs start round-robin between people.

First come, first served lets one person who queues three runs hold up everyone behind
them. Here the queue goes in *rounds*, and each person has one run per round:

1. A person's queued runs, in the order they queued them, take the rounds after the round
   of their last run that started; but a person whose last run started before the round in
   progress (or who has not trained yet) joins the round in progress, never an old one.
2. Rounds go in order. Within a round, the person served longest ago goes first (by the
   round of their previous run: someone's first run goes before anyone's second), then
   runs go in the order they were queued.
3. Runs a teacher moved to the front (``front`` > 0) go before all of that, the latest
   moved first, and each uses its owner's turn in the round in progress.

So when Ann queues three runs, then Ben two and Cat one, they start Ann 1, Ben 1, Cat 1,
Ann 2, Ben 2, Ann 3, however long each takes; and one person's third run never goes ahead
of another person's first, even one queued later. Nobody waits forever: a round holds at
most one run per person, and a run's round never rises while it waits (except when a
teacher moves another of its owner's runs ahead).

``Turns`` remembers the rounds between orderings (the engine keeps one and tells it each
run that starts); the order itself is recomputed whenever the queue changes.

Example::

    >>> from cnnlab.train.queue_order import Turns, Waiting
    >>> queue = [Waiting("a1", "ann", 0), Waiting("a2", "ann", 1), Waiting("a3", "ann", 2),
    ...          Waiting("b1", "ben", 3), Waiting("b2", "ben", 4), Waiting("c1", "cat", 5)]
    >>> [(w.run_id, turn) for w, turn in Turns().ranked(queue)]
    [('a1', 1), ('b1', 1), ('c1', 1), ('a2', 2), ('b2', 2), ('a3', 3)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar


class Queued(Protocol):
    """What the order reads of a queued run (cnnlab.train.jobs.Job has these)."""

    @property
    def run_id(self) -> str: ...

    @property
    def owner(self) -> str: ...

    @property
    def arrival(self) -> int: ...

    @property
    def front(self) -> int: ...


Q = TypeVar("Q", bound=Queued)


@dataclass(frozen=True)
class Waiting:
    """A queued run reduced to what its place depends on (tests; callers without a Job).

    Args:
        run_id: the run's id.
        owner: who queued it.
        arrival: when it was queued, as a number that only grows (the engine's counter).
        front: 0, or the count of the teacher's "Move to front" that put it there (later
            moves are higher and go first).
    """

    run_id: str
    owner: str
    arrival: int
    front: int = 0


class Turns:
    """The rounds so far: the round in progress and each person's last round.

    Not thread-safe: the engine calls it under its lock.
    """

    def __init__(self) -> None:
        self.current = 0  # the round of the last run that started in order
        self.last: dict[str, int] = {}  # person → the round of their last run that started

    def ranked(self, queued: Sequence[Q]) -> list[tuple[Q, int]]:
        """``queued`` (in any order) as (run, round), first to start first (the rule is in
        the module docstring)."""
        previous = {q.owner: self.last.get(q.owner, 0) for q in queued}  # 0: never served
        base = {o: max(p, self.current - 1) for o, p in previous.items()}
        moved = sorted((q for q in queued if q.front), key=lambda q: -q.front)
        out = []
        for q in moved:
            turn = max(self.current, 1)
            base[q.owner] = previous[q.owner] = max(base[q.owner], turn)
            out.append((q, turn))
        rest = []  # (round, previous run's round, arrival, run)
        for q in sorted((q for q in queued if not q.front), key=lambda q: q.arrival):
            base[q.owner] += 1
            rest.append((base[q.owner], previous[q.owner], q.arrival, q))
            previous[q.owner] = base[q.owner]
        rest.sort(key=lambda r: r[:3])
        return out + [(q, turn) for turn, _, _, q in rest]

    def order(self, queued: Sequence[Q]) -> list[Q]:
        """``queued`` in the order they should start."""
        return [q for q, _ in self.ranked(queued)]

    def started(self, run: Queued, turn: int) -> None:
        """``run`` started in round ``turn`` (as ``ranked`` gave it)."""
        self.last[run.owner] = max(self.last.get(run.owner, 0), turn)
        if not run.front:  # a teacher's exception does not move the round on
            self.current = max(self.current, turn)
