"""Scoring a challenge submission in a worker, through the engine in this process and
through the engine process (``CNNLAB_ENGINE=process``'s RemoteEngine).

Alice and Bob each train the tiny model of tests/test_engine.py on a few hundred images of
the challenge's visible set (the bundled MNIST sample); Alice also trains one too big for
the challenge's parameter limit. The score a worker sends must equal the lab's own
evaluation of the same best.keras on the same hidden images, recomputed here.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from conftest import with_fit
from test_engine_process import end_engines

from cnnlab.data import datasets
from cnnlab.model import config
from cnnlab.people.access import AccessDenied
from cnnlab.people.accounts import User
from cnnlab.runs import challenge_data, challenges, evaluate
from cnnlab.runs.challenges import ChallengeError, Limits
from cnnlab.train import engine_client, jobs, scoring, training

TINY = config.ModelConfig(blocks=(config.ConvBlock(filters=4),), dense=(config.DenseLayer(16),),
                          learning_rate=3e-3)
BIG = config.ModelConfig(blocks=(config.ConvBlock(filters=8),), dense=(config.DenseLayer(64),))
TEACHER, ALICE, BOB = User("tess", "teacher"), User("alice"), User("bob")
WAIT = 240
LIMIT = 20_000


def request(dataset: str, model: config.ModelConfig = TINY, name: str = "tiny"
            ) -> training.TrainRequest:
    return training.TrainRequest(**with_fit({
        "dataset": dataset, "config": model, "epochs": 1, "batch_size": 32, "patience": 0,
        "limit": 320, "name": name}))


class Class:
    """A runs root with a challenge, its engine and three trained runs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.challenge = challenges.create(
            root, TEACHER, class_mode=True, name="Digits under 20k",
            source=datasets.load("mnist_sample"), limits=Limits(max_params=LIMIT),
            per_person=2, deadline=datetime.now() + timedelta(days=1))
        self.visible = challenge_data.visible(root, self.challenge)
        self.engine = jobs.Engine(root)
        name = self.challenge.dataset_name
        jobs_ = {"alice": self.engine.submit(request(name), self.visible, user=ALICE),
                 "bob": self.engine.submit(request(name, name="bobs"), self.visible, user=BOB),
                 "big": self.engine.submit(request(name, BIG, "big"), self.visible, user=ALICE)}
        for job in jobs_.values():
            assert job.wait(WAIT) and job.result is not None
            assert job.result.status == "finished", job.result.message
        self.runs = {who: job.run_id for who, job in jobs_.items()}

        self._first: dict[str, challenges.Submission] = {}

    def submit(self, who: User, run: str, engine=None) -> challenges.Submission:
        sub = (engine or self.engine).submit_to_challenge(self.challenge.id, self.runs[run], who)
        assert sub["status"] == "scoring"
        return scoring.wait_for_score(self.root, self.challenge.id, sub["id"], timeout=WAIT)

    def first(self, who: User, run: str) -> challenges.Submission:
        """``who``'s first submission of ``run``, made by whichever test needs it first (the
        tests do not depend on their order)."""
        if run not in self._first:
            self._first[run] = self.submit(who, run)
        return self._first[run]


@pytest.fixture(scope="module")
def klass(tmp_path_factory) -> Iterator[Class]:
    made = Class(tmp_path_factory.mktemp("challenge") / "runs")
    yield made
    made.engine.close()


def own_evaluation(root: Path, challenge: challenges.Challenge, run_id: str) -> dict:
    import keras

    hidden = datasets.from_npz(challenge_data.hidden_npz(root, challenge))
    model = keras.models.load_model(root / run_id / "best.keras")
    return evaluate.evaluate(model, hidden.x_test, hidden.y_test, challenge.class_names)


def test_the_hidden_score_is_the_labs_own_evaluation_and_the_board_ranks_it(klass) -> None:
    alice = klass.first(ALICE, "alice")
    bob = klass.first(BOB, "bob")
    for sub, run in ((alice, "alice"), (bob, "bob")):
        assert sub.status == "scored", sub.message
        own = own_evaluation(klass.root, klass.challenge, klass.runs[run])
        assert sub.accuracy == own["test_accuracy"] and sub.n_hidden == 1000
        assert sub.confusion == own["confusion"]
        assert sub.params < LIMIT and sub.train_seconds > 0
    # The hidden split is the sample's own test set; the runs' test set is a visible share.
    source = datasets.load("mnist_sample")
    assert len(klass.visible.y_test) == datasets.val_count(source.y_train, 0.1)
    rows = challenges.board(klass.challenge, challenges.load_submissions(
        klass.root, klass.challenge.id), TEACHER)
    ranked = sorted([(alice.accuracy, "alice"), (bob.accuracy, "bob")], key=lambda t: -t[0])
    assert [r["who"] for r in rows] == [who for _, who in ranked]
    assert [r["accuracy"] for r in rows] == [acc for acc, _ in ranked]


def test_a_challenge_runs_predictions_mistakes_and_metrics_are_on_visible_images(klass
                                                                               ) -> None:
    """What the Runs page (mistakes, confusion cells), Train's sample strip and downloads
    read of a run: all of it is the visible test set's, none of it the hidden split's."""
    from cnnlab.runs import predictions
    from cnnlab.runs import store as runs

    hidden = datasets.from_npz(challenge_data.hidden_npz(klass.root, klass.challenge))
    hidden_rows = {row.tobytes() for row in hidden.x_test}
    for run_id in klass.runs.values():
        run_dir = klass.root / run_id
        preds = predictions.load(run_dir)
        assert preds is not None and preds.matches(klass.visible.y_test)
        metrics = runs.load_metrics(run_dir)
        assert metrics["n_test"] == len(klass.visible.y_test) != len(hidden.y_test)
        shown = klass.visible.x_test[[m["index"] for m in metrics["mistakes"]]]
        assert not {row.tobytes() for row in shown} & hidden_rows


def test_refusals_say_why_and_record_nothing(klass) -> None:
    before = challenges.load_submissions(klass.root, klass.challenge.id)
    with pytest.raises(AccessDenied, match="it is alice's"):
        klass.engine.submit_to_challenge(klass.challenge.id, klass.runs["alice"], BOB)
    with pytest.raises(ChallengeError, match=r"has \d[\d,]+ parameters; 'Digits under 20k' "
                                             r"allows at most 20,000"):
        klass.engine.submit_to_challenge(klass.challenge.id, klass.runs["big"], ALICE)
    late = jobs.Engine.__new__(jobs.Engine)  # the same engine, its clock past the deadline
    late.__dict__.update(klass.engine.__dict__)
    late.clock = lambda: klass.challenge.deadline_ts() + 60  # type: ignore[operator]
    with pytest.raises(ChallengeError, match="closed at .* board is final"):
        late.submit_to_challenge(klass.challenge.id, klass.runs["alice"], ALICE)
    assert challenges.load_submissions(klass.root, klass.challenge.id) == before


def test_the_allowance_and_the_process_engine(klass) -> None:
    """Alice's second submission goes through the engine process; her third is refused."""
    first = klass.first(ALICE, "alice")
    klass.engine.close()  # the root's lock passes to the engine process
    remote = engine_client.RemoteEngine(klass.root)
    try:
        again = klass.submit(ALICE, "alice", engine=remote)
        assert again.status == "scored" and again.id != first.id
        assert again.accuracy == first.accuracy
        with pytest.raises(ChallengeError, match="made 2 submission.* allows 2 per person"):
            remote.submit_to_challenge(klass.challenge.id, klass.runs["alice"], ALICE)
        with pytest.raises(AccessDenied, match="it is alice's"):
            remote.submit_to_challenge(klass.challenge.id, klass.runs["alice"], BOB)
    finally:
        remote.close()
        end_engines(klass.root)
    assert np.isfinite(again.loss or 0)
