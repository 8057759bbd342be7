"""Class challenges on disk: a task, its limits and deadline, the submissions and the board.

A challenge is a folder ``.challenges/<id>/`` under the runs root: ``challenge.json`` (its
fixed facts: name, brief, source data set, seed, limits, allowance, deadline, board
style), ``submissions.json`` (one record per submission, written under the folder's lock)
and, for a challenge on an upload, ``source.npz`` (the upload's images, kept so every
process can rebuild the parts; cnnlab.runs.challenge_data splits them). Students train on
the data set ``challenge:<id>`` (the visible part); the hidden part is only read where a
submission is scored (cnnlab.train.scoring, in a worker).

In class mode only a teacher may create a challenge; in personal mode anyone may (a
personal benchmark). A person's best submission counts (highest hidden-test accuracy;
ties go to fewer parameters, then to the earlier submission); failed scorings do not
count against the allowance.

Example::

    ch = create(root, teacher, class_mode=True, name="Fashion under 100k",
                source=datasets.load("fashion_mnist"), limits=Limits(max_params=100_000))
    rows = board(ch, load_submissions(root, ch.id), viewer=student)
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.people.accounts import User
from cnnlab.runs import store as runs

if TYPE_CHECKING:
    from cnnlab.data.datasets import Dataset

CHALLENGE_PREFIX = "challenge:"  # the data set name runs for a challenge train on
CHALLENGES_DIR = ".challenges"
CHALLENGE_FILE = "challenge.json"
SUBMISSIONS_FILE = "submissions.json"
SOURCE_FILE = "source.npz"  # an upload's images (challenge_data splits them)
HIDDEN_FILE = "hidden.npz"  # the hidden part, written for the scoring worker only
NAME_MAX, BRIEF_MAX = 80, 2000
SCORING, SCORED, FAILED = "scoring", "scored", "failed"
COUNTED = (SCORING, SCORED)  # a failed scoring is the server's fault: it does not count


class ChallengeError(ValueError):
    """A challenge request that cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class Limits:
    """What a submitted run may have used (None: no limit beyond the server's budgets)."""

    max_params: int | None = None
    max_epochs: int | None = None
    max_minutes: float | None = None

    def words(self) -> str:
        """The limits in one line, for pages and the CLI."""
        parts = [f"at most {self.max_params:,} parameters" if self.max_params else "",
                 f"{self.max_epochs} epochs" if self.max_epochs else "",
                 f"{self.max_minutes:g} minutes of training" if self.max_minutes else ""]
        shown = [p for p in parts if p]
        return ", ".join(shown) if shown else "no limits beyond the server's budgets"


@dataclass(frozen=True)
class Challenge:
    """One challenge's fixed facts (challenge.json)."""

    id: str
    name: str
    brief: str
    source: str  # a registry name, or an upload's "folder:…" name (source.npz)
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    limits: Limits = field(default_factory=Limits)
    per_person: int = 3
    deadline: str | None = None  # ISO 8601 with its UTC offset (server time)
    show_names: bool = False
    seed: int = 0
    hidden_share: float = 0.2  # of an upload: the hidden test part
    owner: str = ""
    created: str = ""

    @property
    def dataset_name(self) -> str:
        """The data set name runs for this challenge train on (``challenge:<id>``)."""
        return CHALLENGE_PREFIX + self.id

    def deadline_ts(self) -> float | None:
        """The deadline as a POSIX time (None: no deadline)."""
        return None if not self.deadline else datetime.fromisoformat(self.deadline).timestamp()

    def closed(self, now: float | None = None) -> bool:
        """Whether the deadline has passed (the board is frozen)."""
        end = self.deadline_ts()
        return end is not None and (time.time() if now is None else now) >= end

    def to_dict(self) -> dict[str, Any]:
        """As challenge.json holds it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Challenge:
        """From challenge.json's contents; raises KeyError/TypeError/ValueError if damaged."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, "class_names": tuple(data["class_names"]),
                      "image_shape": tuple(data["image_shape"]),
                      "limits": Limits(**data.get("limits") or {})})


@dataclass(frozen=True)
class Submission:
    """One submission: a run of its person, scored on the hidden part in a worker."""

    id: str
    challenge: str
    run_id: str
    person: str
    submitted_at: float
    params: int
    train_seconds: float
    status: str = SCORING
    accuracy: float | None = None
    loss: float | None = None
    n_hidden: int = 0
    confusion: list[list[int]] | None = None  # teachers only
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """As submissions.json holds it."""
        return asdict(self)


# ------------------------------------------------------------------------------ the folder


def folder(root: Path | str, challenge_id: str) -> Path:
    """The folder of ``challenge_id`` under the runs root; ChallengeError for a bad id."""
    if not challenge_id or runs.slugify(challenge_id) != challenge_id:
        raise ChallengeError(f"Challenge id {challenge_id!r} is not valid: pick the challenge "
                             "from the Challenges page or `cnnlab challenge list`.")
    return Path(root).resolve() / CHALLENGES_DIR / challenge_id


def id_of(dataset_name: str) -> str | None:
    """The challenge id in a data set name ``challenge:<id>`` (None for other names)."""
    return dataset_name[len(CHALLENGE_PREFIX):] if dataset_name.startswith(
        CHALLENGE_PREFIX) else None


def can_create(user: User, class_mode: bool) -> bool:
    """Teachers in class mode; anyone in personal mode (a personal benchmark)."""
    return user.is_teacher or not class_mode


def create(root: Path | str, user: User, *, class_mode: bool, name: str, source: Dataset,
           brief: str = "", limits: Limits | None = None, per_person: int = 3,
           deadline: datetime | None = None, show_names: bool = False, seed: int = 0,
           hidden_share: float = 0.2) -> Challenge:
    """Make a new challenge on ``source`` (a registry set, or an upload whose images are
    kept in the challenge's folder). Raises ChallengeError saying what is wrong."""
    from cnnlab import text
    from cnnlab.data import datasets

    if not can_create(user, class_mode):
        raise ChallengeError(f"{user.name} cannot create a challenge: in class mode only a "
                             "teacher may; ask your teacher to set one.")
    name = " ".join(name.split())
    problem = text.name_problem(name, "challenge's name") if name else (
        "The challenge needs a name: say what to build, e.g. 'Fashion under 100k'.")
    if problem or len(name) > NAME_MAX:
        raise ChallengeError(problem or f"The name has {len(name)} characters; at most "
                                        f"{NAME_MAX} are allowed: shorten it.")
    if len(brief) > BRIEF_MAX:
        raise ChallengeError(f"The brief has {len(brief):,} characters; at most {BRIEF_MAX:,} "
                             "are allowed: shorten it.")
    if not 1 <= per_person <= 1000:
        raise ChallengeError(f"Submissions per person is {per_person}; choose 1 to 1000.")
    if not 0.05 <= hidden_share <= 0.5:
        raise ChallengeError(f"The hidden share is {hidden_share:g}; choose 0.05 to 0.5 of "
                             "the upload's images.")
    for label, value in (("maximum parameters", (limits or Limits()).max_params),
                         ("maximum epochs", (limits or Limits()).max_epochs),
                         ("maximum minutes", (limits or Limits()).max_minutes)):
        if value is not None and value <= 0:
            raise ChallengeError(f"The {label} is {value}; give a number above 0, or none.")
    if deadline is not None and deadline.tzinfo is None:
        deadline = deadline.astimezone()  # a naive time is the server's local time
    if deadline is not None and deadline.timestamp() <= time.time():
        raise ChallengeError(f"The deadline {deadline.isoformat(timespec='minutes')} has "
                             "passed (server time); choose a later one.")
    registry = source.info.name in datasets.REGISTRY
    if not registry and not source.info.name.startswith(datasets.UPLOAD_PREFIX):
        raise ChallengeError(f"A challenge is set on a registry data set or your own upload, "
                             f"not on {source.info.name!r}.")
    slug = runs.slugify(name)[:30].strip("-_") or "challenge"
    challenge_id = f"{slug}-{secrets.token_hex(3)}"
    path = folder(root, challenge_id)
    path.mkdir(parents=True)
    challenge = Challenge(
        challenge_id, name, brief.strip(), source.info.name, tuple(source.info.class_names),
        tuple(source.info.image_shape), limits or Limits(), per_person,  # type: ignore[arg-type]
        deadline.isoformat(timespec="seconds") if deadline else None, show_names, seed,
        hidden_share, user.name, runs.now_iso())
    if not registry:  # the upload lives in one browser session: keep its images here
        runs.write_bytes(path / SOURCE_FILE, datasets.to_npz_bytes(source))
    runs.write_json(path / SUBMISSIONS_FILE, {"submissions": []})
    runs.write_json(path / CHALLENGE_FILE, challenge.to_dict())  # last: it makes it listed
    return challenge


def load(root: Path | str, challenge_id: str) -> Challenge:
    """The challenge ``challenge_id``; ChallengeError when there is none."""
    path = folder(root, challenge_id) / CHALLENGE_FILE
    try:
        return Challenge.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError as exc:
        raise ChallengeError(f"There is no challenge {challenge_id!r} on this server: pick one "
                             "from the Challenges page or `cnnlab challenge list`.") from exc
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise ChallengeError(f"Challenge {challenge_id!r} cannot be read ({exc}).") from exc


def list_challenges(root: Path | str) -> list[Challenge]:
    """Every readable challenge under the runs root, newest first."""
    base = Path(root).resolve() / CHALLENGES_DIR
    found = []
    for path in base.glob(f"*/{CHALLENGE_FILE}") if base.is_dir() else []:
        try:
            found.append(load(root, path.parent.name))
        except ChallengeError:
            continue  # a damaged one is skipped, not a broken page
    return sorted(found, key=lambda c: c.created, reverse=True)


# ------------------------------------------------------------------------------ submissions


def load_submissions(root: Path | str, challenge_id: str) -> list[Submission]:
    """Every submission of the challenge, oldest first."""
    path = folder(root, challenge_id) / SUBMISSIONS_FILE
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["submissions"]
    except FileNotFoundError:
        return []
    return [Submission(**row) for row in rows]


def _write_submissions(path: Path, subs: list[Submission]) -> None:
    runs.write_json(path / SUBMISSIONS_FILE, {"submissions": [s.to_dict() for s in subs]})


def add_submission(root: Path | str, challenge: Challenge, run_id: str, person: str,
                   params: int, train_seconds: float, now: float | None = None) -> Submission:
    """Record a new submission ("scoring"), after the deadline and allowance checks, under
    the challenge's lock: two presses at once cannot both pass the allowance."""
    now = time.time() if now is None else now
    path = folder(root, challenge.id)
    with runs.run_lock(path):
        subs = load_submissions(root, challenge.id)
        problem = deadline_problem(challenge, now) or allowance_problem(challenge, subs, person)
        if problem:
            raise ChallengeError(problem)
        sub = Submission(f"s{len(subs) + 1:04d}-{secrets.token_hex(2)}", challenge.id, run_id,
                         person, now, int(params), float(train_seconds))
        _write_submissions(path, [*subs, sub])
    return sub


def update_submission(root: Path | str, challenge_id: str, submission_id: str,
                      **fields: Any) -> Submission | None:
    """Merge ``fields`` (status, accuracy, confusion…) into one submission; the new record
    (None when it is gone)."""
    path = folder(root, challenge_id)
    with runs.run_lock(path):
        subs = load_submissions(root, challenge_id)
        out = None
        for i, sub in enumerate(subs):
            if sub.id == submission_id:
                out = subs[i] = replace(sub, **fields)
        _write_submissions(path, subs)
    return out


def fail_unscored(root: Path | str, message: str) -> int:
    """Mark every "scoring" submission failed (a new engine: nobody scores them now);
    how many were marked."""
    marked = 0
    for challenge in list_challenges(root):
        for sub in load_submissions(root, challenge.id):
            if sub.status == SCORING:
                update_submission(root, challenge.id, sub.id, status=FAILED, message=message)
                marked += 1
    return marked


def deadline_problem(challenge: Challenge, now: float | None = None) -> str | None:
    """Why a submission now is too late (None: in time)."""
    if not challenge.closed(now):
        return None
    at = datetime.fromtimestamp(time.time() if now is None else now).astimezone()
    return (f"The challenge {challenge.name!r} closed at {challenge.deadline} (server time); "
            f"it is now {at.isoformat(timespec='seconds')}, so submissions are refused and the "
            "board is final.")


def plan_problems(challenge: Challenge, params: int, epochs: int) -> list[str]:
    """Why a model of ``params`` parameters set to train ``epochs`` epochs would be refused
    by ``challenge`` (empty: it fits). Configure and Train say so before anyone trains;
    minutes are known only once it has trained (scoring.limit_problems checks them)."""
    limits, name, out = challenge.limits, repr(challenge.name), []
    if limits.max_params is not None and params > limits.max_params:
        out.append(f"This model has {params:,} parameters; {name} allows at most "
                   f"{limits.max_params:,}, so a run of it cannot be submitted: use fewer "
                   "filters or dense units.")
    if limits.max_epochs is not None and epochs > limits.max_epochs:
        out.append(f"This run is set to {epochs} epochs; {name} allows at most "
                   f"{limits.max_epochs}, so it could not be submitted: set fewer epochs.")
    return out


def used(subs: list[Submission], person: str) -> int:
    """How many of ``person``'s submissions count against the allowance."""
    return sum(1 for s in subs if s.person == person and s.status in COUNTED)


def allowance_problem(challenge: Challenge, subs: list[Submission], person: str) -> str | None:
    """Why ``person`` may not submit again (None: they may)."""
    n = used(subs, person)
    if n < challenge.per_person:
        return None
    return (f"You have made {n} submission(s) to {challenge.name!r}; it allows "
            f"{challenge.per_person} per person, and your best one counts on the board.")


# ------------------------------------------------------------------------------ the board


def alias(challenge_id: str, person: str) -> str:
    """A stable pseudonym for ``person`` on one challenge (another on the next)."""
    digest = hashlib.sha256(f"{challenge_id}\0{person}".encode()).hexdigest()
    animals = ("Otter", "Heron", "Lynx", "Marten", "Ibis", "Gecko", "Puffin", "Koala",
               "Tapir", "Wombat", "Osprey", "Newt", "Bison", "Civet", "Dingo", "Egret")
    return f"{animals[int(digest[:2], 16) % len(animals)]} {int(digest[2:6], 16) % 1000:03d}"


def _key(sub: Submission) -> tuple[float, int, float]:
    return (-(sub.accuracy or 0.0), sub.params, sub.submitted_at)


def board(challenge: Challenge, subs: list[Submission], viewer: User | None = None
          ) -> list[dict[str, Any]]:
    """The leaderboard: each person's best scored submission, best first (accuracy, then
    fewer parameters, then earlier). Teachers (and personal mode) see names; others see
    names or aliases as the challenge says, with their own row marked ``you``."""
    best: dict[str, Submission] = {}
    for sub in subs:
        if sub.status == SCORED and (sub.person not in best or _key(sub) < _key(best[sub.person])):
            best[sub.person] = sub
    names = challenge.show_names or viewer is None or viewer.is_teacher
    rows = []
    for rank, sub in enumerate(sorted(best.values(), key=_key), start=1):
        rows.append({
            "rank": rank,
            "who": sub.person if names else alias(challenge.id, sub.person),
            "you": viewer is not None and sub.person == viewer.name,
            "accuracy": sub.accuracy, "params": sub.params,
            "train_seconds": round(sub.train_seconds, 1),
            "submitted_at": datetime.fromtimestamp(sub.submitted_at).astimezone().isoformat(
                timespec="seconds"),
            "run_id": sub.run_id if names else None,
        })
    return rows


def visible_submissions(subs: list[Submission], viewer: User) -> list[Submission]:
    """The submissions ``viewer`` may list: all for a teacher, else their own, without
    the hidden part's confusion matrix (only the score per submission is shown)."""
    if viewer.is_teacher:
        return subs
    return [replace(s, confusion=None) for s in subs if s.person == viewer.name]


def board_csv(rows: list[dict[str, Any]]) -> str:
    """The board as CSV text (rank, who, accuracy, params, training seconds, submitted at)."""
    out = io.StringIO()
    columns = ("rank", "who", "accuracy", "params", "train_seconds", "submitted_at", "run_id")
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        who = str(row.get("who") or "")
        # A cell that starts like a formula would run as one in a spreadsheet.
        writer.writerow({**row, "who": "'" + who if who[:1] in "=+-@" and who else who})
    return out.getvalue()
