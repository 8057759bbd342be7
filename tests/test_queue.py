"""The fair queue: round-robin order between people, each queued run's estimated start, and
who may move a queued run to the front or cancel it.

No training: the order and estimate functions are pure, and the engine tests drive an
Engine over tests/fake_executor.py, whose "workers" report what the test says, on a clock
the test moves by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import with_fit
from fake_executor import FakeExecutor

from cnnlab.data import datasets
from cnnlab.model import config
from cnnlab.people import access
from cnnlab.people.accounts import User
from cnnlab.runs import store as runs
from cnnlab.train import budgets, jobs, training
from cnnlab.train.queue_order import Turns, Waiting
from cnnlab.train.wait_estimate import (
    EpochTimes,
    Planned,
    Progress,
    Wait,
    about,
    estimate,
    progress,
    sentence,
)

ANN, BEN, CAT = User("ann"), User("ben"), User("cat")
ZED, KIM = User("zed"), User("kim", "teacher")
TINY = config.ModelConfig(blocks=(config.ConvBlock(filters=4),), dense=(config.DenseLayer(16),))


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def sample() -> datasets.Dataset:
    return datasets.load("mnist_sample")


def request(name: str, epochs: int = 1) -> training.TrainRequest:
    return training.TrainRequest(**with_fit({
        "dataset": "mnist_sample", "config": TINY, "epochs": epochs, "batch_size": 32,
        "patience": 0, "limit": 320, "name": name}))


@pytest.fixture
def engine(runs_root: Path):
    """An Engine over a FakeExecutor (one slot unless asked) and a hand-moved clock."""
    made: list[jobs.Engine] = []

    def make(slots: int = 1, clock: Clock | None = None) -> jobs.Engine:
        made.append(jobs.Engine(runs_root, executor=FakeExecutor(slots),
                                budgets=budgets.Budgets(max_runs_per_user=5),
                                clock=clock or Clock()))
        return made[-1]

    yield make
    for e in made:
        e.close()


# --------------------------------------------------------------------------- the order


def play(turns: Turns, queue: list[Waiting], arrivals: dict[int, list[Waiting]] | None = None
         ) -> list[str]:
    """Start the runs of ``queue`` one at a time as the engine does (each start recorded in
    ``turns``); ``arrivals`` queues more runs after the n-th start. Returns the start order."""
    queue, started = list(queue), []
    while queue:
        run, turn = turns.ranked(queue)[0]
        queue.remove(run)
        turns.started(run, turn)
        started.append(run.run_id)
        queue += (arrivals or {}).get(len(started), [])
    return started


def test_three_peoples_runs_start_round_robin() -> None:
    # Ann queues three runs, then Ben two, then Cat one.
    queue = [Waiting("a1", "ann", 0), Waiting("a2", "ann", 1), Waiting("a3", "ann", 2),
             Waiting("b1", "ben", 3), Waiting("b2", "ben", 4), Waiting("c1", "cat", 5)]
    order = ["a1", "b1", "c1", "a2", "b2", "a3"]
    assert [w.run_id for w in Turns().order(queue)] == order
    assert [w.run_id for w in Turns().order(list(reversed(queue)))] == order  # input order
    # The order holds as the runs start, one at a time (each start is remembered).
    assert play(Turns(), queue) == order
    # Interleaved arrivals give the same rounds: a person's k-th run waits for round k.
    mixed = [Waiting("b1", "ben", 0), Waiting("a1", "ann", 1), Waiting("b2", "ben", 2),
             Waiting("a2", "ann", 3), Waiting("c1", "cat", 4)]
    assert play(Turns(), mixed) == ["b1", "a1", "c1", "b2", "a2"]


def test_a_later_arrival_joins_the_round_in_progress() -> None:
    queue = [Waiting("a1", "ann", 0), Waiting("a2", "ann", 1), Waiting("a3", "ann", 2),
             Waiting("b1", "ben", 3), Waiting("b2", "ben", 4)]
    # Dan queues his first run while Ann's first trains: before anyone's second run.
    early = {1: [Waiting("d1", "dan", 5)]}
    assert play(Turns(), queue, early) == ["a1", "b1", "d1", "a2", "b2", "a3"]
    # Dan queues two while round 2 is under way (Ann's second started): his first still
    # goes before Ben's second; his second is in round 3 with Ann's third, queued earlier.
    late = {3: [Waiting("d1", "dan", 5), Waiting("d2", "dan", 6)]}
    assert play(Turns(), queue, late) == ["a1", "b1", "a2", "d1", "b2", "a3", "d2"]
    # ... and while round 3 is under way, before Ben's third.
    three = queue + [Waiting("b3", "ben", 5)]
    assert play(Turns(), three, {5: [Waiting("d1", "dan", 6)]}) == [
        "a1", "b1", "a2", "b2", "a3", "d1", "b3"]
    # Someone back after a break joins the round in progress, ahead of those served since.
    turns = Turns()
    assert play(turns, [Waiting("c1", "cat", 0)]) == ["c1"]
    assert play(turns, three, {5: [Waiting("c2", "cat", 9)]}) == [
        "a1", "b1", "a2", "b2", "a3", "c2", "b3"]


def test_runs_moved_to_the_front_go_first_the_latest_move_first() -> None:
    queue = [Waiting("a1", "ann", 0), Waiting("b1", "ben", 1), Waiting("c1", "cat", 2),
             Waiting("b2", "ben", 3, front=1), Waiting("c2", "cat", 4, front=2)]
    # The moved runs use their owners' turns: Ben's and Cat's first runs wait a round.
    assert [w.run_id for w in Turns().order(queue)] == ["c2", "b2", "a1", "b1", "c1"]
    assert play(Turns(), queue) == ["c2", "b2", "a1", "b1", "c1"]


def test_the_engine_starts_three_peoples_runs_round_robin(engine, sample) -> None:
    eng = engine()
    busy = eng.submit(request("zed"), sample, user=ZED)  # takes the one slot
    short: dict[str, str] = {busy.run_id: "z"}
    for user, count in ((ANN, 3), (BEN, 2), (CAT, 1)):
        for k in range(1, count + 1):
            job = eng.submit(request(f"{user.name}{k}"), sample, user=user)
            short[job.run_id] = f"{user.name[0]}{k}"
    assert [short[j.run_id] for j in eng.queued()] == ["a1", "b1", "c1", "a2", "b2", "a3"]
    third = next(r for r, s in short.items() if s == "a3")
    assert eng.position(third) == 5
    assert "Queued: 3 run(s) ahead of it" in runs.load_status(
        eng.get(next(r for r, s in short.items() if s == "c1")).run_dir)["message"]
    fake = eng.executor
    while eng.running():
        fake.handles[eng.running()[0].run_id].finish()
    assert [short[r] for r in fake.started] == ["z", "a1", "b1", "c1", "a2", "b2", "a3"]


def test_the_modules_examples_hold() -> None:
    import doctest

    from cnnlab.train import queue_order, wait_estimate

    for module in (queue_order, wait_estimate):
        assert doctest.testmod(module).failed == 0, module.__name__


# --------------------------------------------------------------------------- the estimate


def test_progress_reads_epochs_left_and_the_measured_epoch_time() -> None:
    first = {"epoch": 1, "eta_epoch_s": 6.0, "elapsed_s": 4.0, "time": 100.0}
    # Before its first epoch ends, a run's epoch time is that epoch's pace so far.
    assert progress("s", 3, 0, [], first, now=102.0) == Progress("s", 3, 10.0, 4.0)
    later = {"epoch": 2, "eta_epoch_s": 3.0, "elapsed_s": 15.0, "time": 100.0}
    assert progress("s", 3, 1, [12.0], later, now=101.0) == Progress("s", 2, 12.0, 2.0)
    assert progress("s", 3, 1, [12.0], later, now=200.0).epoch_rest_s == 0.0  # never < 0
    # A report of an epoch already finished says nothing of the next one's rest.
    assert progress("s", 3, 2, [12.0, 14.0], later, now=101.0) == Progress("s", 1, 13.0, None)
    # A resumed run counts its earlier epochs as done; no report yet: nothing measured.
    assert progress("s", 5, 3, [], None, now=0.0) == Progress("s", 2, None, None)


def test_starts_are_epochs_left_times_epoch_time_on_every_slot() -> None:
    times = EpochTimes()
    times.add_epoch("s", 20.0)
    times.add_overhead(5.0)
    running = {"r1": Progress("s", 1, 20.0, 10.0),   # ends in 10 s
               "r2": Progress("s", 2, 15.0, 15.0)}   # ends in 15 + 15 = 30 s
    queued = [Planned(q, "ann", "s", 1) for q in ("q1", "q2", "q3")]
    got = estimate(2, running, queued, times)
    assert got.ends_in == {"r1": 10.0, "r2": 30.0}
    # q1 takes r1's slot at 10 s and holds it 20 + 5 s; q2 takes r2's at 30; q3 q1's at 35.
    assert got.waits == [Wait("q1", "ann", 1, 2, 10.0), Wait("q2", "ann", 2, 3, 30.0),
                         Wait("q3", "ann", 3, 4, 35.0)]


def test_an_unmeasured_shape_uses_a_running_pace_then_the_mean_of_all_epochs() -> None:
    times = EpochTimes()
    times.add_epoch("other", 40.0)
    running = {"r": Progress("new", 1, 8.0, 2.0)}  # a run of shape "new", 8 s an epoch
    queued = [Planned("q1", "ann", "new", 2), Planned("q2", "ben", "third", 1),
              Planned("q3", "cat", "new", 1)]
    starts = [w.starts_in_s for w in estimate(1, running, queued, times).waits]
    # q1: after r's 2 s; holds 2 × 8 s (r's pace). q2: "third" never timed → the mean, 40 s.
    assert starts == [2.0, 18.0, 58.0]


def test_nothing_timed_yet_gives_places_without_minutes() -> None:
    got = estimate(1, {"r": Progress("s", 2)}, [Planned("q", "ann", "s", 1)], EpochTimes())
    assert got.ends_in == {"r": None}
    assert got.waits == [Wait("q", "ann", 1, 1, None)]
    assert sentence(got.waits[0]) == ("1 run ahead of yours; the start time shows once this "
                                      "server has timed an epoch.")


def test_the_owners_sentence_has_counts_and_minutes_only() -> None:
    assert sentence(Wait("q", "ann", 3, 4, 130.0)) == ("4 runs ahead of yours, starts in "
                                                       "about 2 min.")
    assert sentence(Wait("q", "ann", 1, 1, 20.0)) == ("1 run ahead of yours, starts in less "
                                                      "than a minute.")
    assert sentence(Wait("q", "ann", 1, 0, 0.0)) == "Next to start."
    assert about(12 * 60) == "about 12 min" and about(3900) == "about 1 h 05 min"


def test_the_engine_estimate_follows_the_runs_ahead_as_they_train(engine, sample) -> None:
    clock = Clock(1000.0)
    eng = engine(clock=clock)
    zed = eng.submit(request("zed", epochs=3), sample, user=ZED)
    ann = eng.submit(request("ann", epochs=2), sample, user=ANN)
    ben = eng.submit(request("ben", epochs=1), sample, user=BEN)
    cat = eng.submit(request("cat", epochs=1), sample, user=CAT)
    assert eng.wait_for(ann.run_id) == Wait(ann.run_id, "ann", 1, 1, None)  # nothing timed
    worker = eng.executor.handles[zed.run_id]

    # Zed's first epoch: 4 s done, 6 s to go (10 s an epoch), reported 2 s ago.
    worker.report_batch(epoch=1, epochs=3, eta_epoch_s=6.0, elapsed_s=4.0, at=1000.0)
    clock.now = 1002.0
    assert eng.queue_estimate().ends_in == {zed.run_id: pytest.approx(4 + 2 * 10)}
    assert eng.wait_for(ann.run_id).starts_in_s == pytest.approx(24)
    assert eng.wait_for(ben.run_id).starts_in_s == pytest.approx(24 + 2 * 10)

    # The first epoch took 12 s: that measured time replaces the pace.
    worker.report_epoch(1, 3, seconds=12.0)
    worker.report_batch(epoch=2, epochs=3, eta_epoch_s=3.0, elapsed_s=21.0, at=1021.0)
    clock.now = 1022.0
    assert eng.wait_for(ann.run_id).starts_in_s == pytest.approx(2 + 12)
    assert eng.wait_for(ben.run_id).starts_in_s == pytest.approx(14 + 2 * 12)
    assert eng.wait_for(cat.run_id) == Wait(cat.run_id, "cat", 3, 3, pytest.approx(38 + 12))

    # Zed ends 14 s after its 36 s of epochs: each queued run also costs that start-up.
    worker.report_epoch(2, 3, seconds=12.0)
    worker.report_epoch(3, 3, seconds=12.0)
    clock.now = 1050.0
    worker.finish()
    assert [j.run_id for j in eng.running()] == [ann.run_id]
    assert eng.wait_for(ann.run_id) is None  # training now
    assert eng.wait_for(ben.run_id) == Wait(ben.run_id, "ben", 1, 1, pytest.approx(2 * 12))
    assert eng.wait_for(cat.run_id).starts_in_s == pytest.approx(24 + 12 + 14)


# --------------------------------------------------------------------------- who may act


def test_only_a_teacher_moves_a_run_to_the_front(engine, sample) -> None:
    eng = engine()
    eng.submit(request("zed"), sample, user=ZED)
    a1 = eng.submit(request("a1"), sample, user=ANN)
    b1 = eng.submit(request("b1"), sample, user=BEN)
    a2 = eng.submit(request("a2"), sample, user=ANN)
    before = [j.run_id for j in eng.queued()]
    assert before == [a1.run_id, b1.run_id, a2.run_id]
    # Someone else's run, and even one's own: students cannot change the order.
    for user, run in ((BEN, a2), (ANN, a2), (ANN, b1)):
        with pytest.raises(access.AccessDenied, match=f"You cannot move run {run.run_id} to "
                           "the front of the queue: only a teacher may change its order"):
            eng.move_to_front(run.run_id, user)
    assert [j.run_id for j in eng.queued()] == before
    eng.move_to_front(a2.run_id, KIM)  # it uses Ann's turn: her first waits a round
    assert [j.run_id for j in eng.queued()] == [a2.run_id, b1.run_id, a1.run_id]
    assert eng.wait_for(a2.run_id).position == 1
    eng.move_to_front(b1.run_id, KIM)  # the latest move goes first
    assert [j.run_id for j in eng.queued()] == [b1.run_id, a2.run_id, a1.run_id]
    eng.executor.handles[eng.running()[0].run_id].finish()
    assert eng.running()[0] is b1
    with pytest.raises(jobs.EngineRefused, match="it is already training, and only a queued"):
        eng.move_to_front(b1.run_id, KIM)


def test_a_queued_run_is_cancelled_by_its_owner_or_a_teacher_only(engine, sample) -> None:
    eng = engine()
    zed = eng.submit(request("zed"), sample, user=ZED)
    a1 = eng.submit(request("a1"), sample, user=ANN)
    b1 = eng.submit(request("b1"), sample, user=BEN)
    with pytest.raises(access.AccessDenied, match=f"You cannot cancel run {a1.run_id}: it "
                       "is not yours"):
        eng.cancel(a1.run_id, BEN)
    assert not a1.done() and eng.queued() == [a1, b1]
    eng.cancel(a1.run_id, ANN)  # her own
    assert a1.done() and a1.result.status == "stopped"
    assert runs.load_status(a1.run_dir)["message"] == "Cancelled before it started."
    eng.cancel(b1.run_id, KIM)  # a teacher: anyone's
    assert b1.done() and eng.queued() == []
    for run_id, where in ((zed.run_id, "is already training"), (a1.run_id, "has ended"),
                          ("20990101-000000-nothing", "is not a run of this server")):
        with pytest.raises(jobs.EngineRefused, match=f"Cannot cancel run {run_id}: it {where}"):
            eng.cancel(run_id, KIM)
    assert not eng.executor.handles[zed.run_id].stopped  # cancel never stops a training run
