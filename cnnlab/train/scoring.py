"""Scoring a challenge submission: the checks before it, and the worker's evaluation.

``prepare`` is the engine's half (jobs.Engine.submit_to_challenge): the run must be the
submitter's own, finished, trained on the challenge's data set (``challenge:<id>``) and
within its limits (parameters, epochs and minutes trained, the run's fine-tuning parents
included; the image size is the challenge's); the deadline and the allowance are checked
under the challenge's lock as the submission is recorded. It copies the run's best.keras
into the submission's folder (a later resume of the run does not change what was
submitted) and returns the RunSpec (mode "score") a worker runs.

The worker's half is ``executors.worker.score_submission`` (beside the training it
runs, so this module and the executors import one way only); ``result_fields`` turns its
``done`` event into the submission's score.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.people import access
from cnnlab.people.accounts import User
from cnnlab.runs import challenge_data, challenges
from cnnlab.runs import store as runs
from cnnlab.runs.challenges import Challenge, ChallengeError, Submission
from cnnlab.train import budgets as budgets_mod
from cnnlab.train import events as ev
from cnnlab.train.executors import DatasetRef, RunSpec

SUBMISSIONS_DIR = "submissions"  # in the challenge's folder: one folder per submission
SUBMITTABLE = (runs.RunStatus.FINISHED, runs.RunStatus.STOPPED)  # evaluated, with best.keras
MAX_PARENTS = 50  # a fine-tuning chain longer than this is taken as a loop


@dataclass(frozen=True)
class RunFacts:
    """What a challenge's limits are checked against."""

    params: int
    epochs: int
    seconds: float
    input_shape: tuple[int, ...]


def run_facts(root: Path | str, run_dir: Path) -> RunFacts:
    """The run's parameters (as its worker counted them), and the epochs and seconds it
    trained, its fine-tuning parents' included (a fine-tuned run starts from their work)."""
    from cnnlab.model import config as config_mod
    from cnnlab.model import models

    config = runs.load_config(run_dir)
    status = runs.load_status(run_dir)
    shape = tuple(int(v) for v in config.get("input_shape") or ())
    params = status.get("params")
    if params is None:  # an old run: count from its config, as the budgets do
        params = models.total_params(config_mod.ModelConfig.from_dict(config["model"]), shape,
                                     int(config.get("n_classes") or 10))
    epochs, seconds = 0, 0.0
    current: Path | None = run_dir
    seen: set[str] = set()
    while current is not None and current.name not in seen and len(seen) < MAX_PARENTS:
        seen.add(current.name)
        history = runs.load_history(current)
        epochs += len(history)
        if "seconds" in history and history["seconds"].notna().any():
            seconds += float(history["seconds"].fillna(0).sum())
        else:
            seconds += float(runs.load_status(current).get("seconds") or 0)
        parent = runs.load_config(current).get("parent")
        current = runs.run_dir_for(root, str(parent)) if parent else None
        if current is not None and not current.is_dir():
            current = None
    return RunFacts(int(params), epochs, seconds, shape)


def limit_problems(challenge: Challenge, facts: RunFacts, run_id: str) -> list[str]:
    """Every way run ``run_id`` breaks the challenge's limits, with the number and the
    limit (empty: it fits)."""
    limits, name, out = challenge.limits, repr(challenge.name), []
    if limits.max_params is not None and facts.params > limits.max_params:
        out.append(f"Run {run_id} has {facts.params:,} parameters; {name} allows at most "
                   f"{limits.max_params:,}. Train a smaller model (fewer filters or dense "
                   "units) and submit that.")
    if limits.max_epochs is not None and facts.epochs > limits.max_epochs:
        out.append(f"Run {run_id} trained {facts.epochs} epochs; {name} allows at most "
                   f"{limits.max_epochs}. Train again with fewer epochs.")
    if limits.max_minutes is not None and facts.seconds > limits.max_minutes * 60:
        out.append(f"Run {run_id} trained for {facts.seconds / 60:.1f} minutes; {name} allows "
                   f"at most {limits.max_minutes:g}. Train for fewer epochs or a smaller model.")
    if facts.input_shape and tuple(facts.input_shape) != tuple(challenge.image_shape):
        have, want = ("×".join(map(str, s)) for s in (facts.input_shape, challenge.image_shape))
        out.append(f"Run {run_id} takes {have} images; {name} is on {want} images.")
    return out


def prepare(root: Path | str, challenge_id: str, run_id: str, user: User,
            budgets: budgets_mod.Budgets, now: float) -> tuple[Submission, RunSpec, Path]:
    """Check run ``run_id`` may be submitted by ``user``, record the submission ("scoring")
    and return it with the worker's RunSpec and folder. Raises ChallengeError or
    access.AccessDenied (nothing is recorded then)."""
    challenge = challenges.load(root, challenge_id)
    late = challenges.deadline_problem(challenge, now)
    if late:
        raise ChallengeError(late)
    try:
        run_dir = runs.run_dir_for(root, run_id)
    except runs.RunPathError as exc:
        raise ChallengeError(str(exc)) from exc
    if not (run_dir / runs.STATUS_FILE).is_file():
        raise ChallengeError(f"There is no run {run_id} on this server: pick one of your "
                             "finished runs.")
    config = runs.load_config(run_dir)
    owner = access.owner_of(config)
    if owner != user.name:  # not even a teacher: a submission speaks for its person
        raise access.AccessDenied(f"You cannot submit run {run_id}: it is {owner}'s, and only "
                                  "the person who trained a run may submit it.")
    if config.get("dataset") != challenge.dataset_name:
        raise ChallengeError(
            f"Run {run_id} trained on {config.get('dataset')!r}, not on the challenge's data "
            f"set {challenge.dataset_name!r}: press 'Train for this challenge' and submit a "
            "run trained on it.")
    status = runs.load_status(run_dir).get("status")
    best = runs.best_model_path(run_dir)
    if status not in SUBMITTABLE or not best.is_file():
        raise ChallengeError(f"Run {run_id} is {status or 'unreadable'}; only a finished run "
                             "with a best model can be submitted.")
    facts = run_facts(root, run_dir)
    problems = limit_problems(challenge, facts, run_id)
    if problems:
        raise ChallengeError(" ".join(problems))
    hidden = challenge_data.hidden_npz(root, challenge)  # before the allowance is used
    sub = challenges.add_submission(root, challenge, run_id, owner, facts.params,
                                    facts.seconds, now)
    work = challenges.folder(root, challenge.id) / SUBMISSIONS_DIR / sub.id
    work.mkdir(parents=True)
    shutil.copyfile(best, work / runs.BEST_FILE)
    spec = RunSpec(run_id=sub.id, request={"challenge": challenge.id,
                                           "max_params": challenge.limits.max_params,
                                           "class_names": list(challenge.class_names)},
                   dataset=DatasetRef(f"{challenge.dataset_name}:hidden", str(hidden)),
                   budgets=budgets.to_dict(), mode="score", inputs=(runs.BEST_FILE,))
    return sub, spec, work


def result_fields(done: ev.Event) -> dict[str, Any]:
    """The submission fields a scoring worker's ``done`` event sets."""
    score = done.get("score")
    if done.get("status") != runs.RunStatus.FINISHED or not isinstance(score, dict):
        return {"status": challenges.FAILED,
                "message": str(done.get("message") or "The scoring worker ended without a "
                               "score; submit again (a failed scoring does not count).")}
    return {"status": challenges.SCORED, "accuracy": float(score["accuracy"]),
            "loss": float(score["loss"]), "n_hidden": int(score["n"]),
            "confusion": score["confusion"], "message": ""}


def record_score(root: Path | str, sub: Submission, done: ev.Event) -> Submission | None:
    """Write a scoring worker's result into the submission (the engine calls this)."""
    return challenges.update_submission(root, sub.challenge, sub.id, **result_fields(done))


def fail_unscored(root: Path | str) -> int:
    """A new engine marks the submissions a dead one was scoring as failed (not counted)."""
    return challenges.fail_unscored(
        root, "The engine stopped while scoring this submission; it does not count against "
              "your allowance: submit the run again.")


def wait_for_score(root: Path | str, challenge_id: str, submission_id: str,
                   timeout: float = 600.0, poll: float = 0.2) -> Submission:
    """Poll the challenge's submissions until ``submission_id`` is scored or failed (the
    CLI and tests; pages poll with a fragment). Raises TimeoutError after ``timeout``."""
    import time

    end = time.monotonic() + timeout
    while True:
        sub = next((s for s in challenges.load_submissions(root, challenge_id)
                    if s.id == submission_id), None)
        if sub is not None and sub.status != challenges.SCORING:
            return sub
        if time.monotonic() > end:
            raise TimeoutError(f"Submission {submission_id} was not scored within "
                               f"{timeout:.0f} s.")
        time.sleep(poll)
