"""The training engine of a server: the queue, its slots, budgets, and the run store's writer.

One ``Engine`` per server process and runs root (``engine_for``), kept in this module
rather than in a Streamlit cache so clearing caches never makes a second one. It holds a
lock file on the runs root; a second server on the same root gets no lock, does not run
the queue and says so.

Runs train in workers (cnnlab.train.executors), never here: the engine sends a RunSpec, turns
the events that come back into the run's files (``runs.record``) and into each job's
EventLog for pages to poll, and starts the next queued run when a slot frees. A finished
job keeps only its ids and a few small events: no data set, no model.

Queued runs start round-robin between people (cnnlab.train.queue_order: one person's third
run never goes ahead of another's first), and each queued run's place and estimated start
come from the runs ahead (cnnlab.train.wait_estimate, from epoch times measured here). A
teacher may move a queued run to the front; its owner or a teacher may cancel it.

A queued run's spec is also kept on disk (``.queue/<run id>.json`` under the runs root)
until it starts: an engine that dies leaves its queue there, and the next engine on the
root queues those runs again, in their order; the runs it was training it marks
"interrupted" (resumable). With ``CNNLAB_ENGINE=process`` the engine runs in its own
process and web servers reach it over a socket (cnnlab.train.engine_server, engine_client).
"""

from __future__ import annotations

import atexit
import collections
import fcntl
import hashlib
import itertools
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from cnnlab.people import access
from cnnlab.people.accounts import LOCAL_USER, User
from cnnlab.runs import store as runs
from cnnlab.train import budgets as budgets_mod
from cnnlab.train import (
    callbacks,
    executors,
    health,
    queue_order,
    scoring,
    training,
    wait_estimate,
)
from cnnlab.train import events as ev

if TYPE_CHECKING:
    from cnnlab.data.datasets import Dataset

LOCAL_OWNER = LOCAL_USER.name  # owner of runs in personal mode
LOCK_FILE = ".engine.lock"
UPLOADS_DIR = ".datasets"  # uploads shipped to workers as .npz, deleted when unused
KEEP_FINISHED = 100  # finished jobs remembered in memory (their runs stay on disk)
QUEUE_DIR = ".queue"  # queued runs' specs, so the next engine queues them again


class EngineRefused(ValueError):
    """A request the engine will not queue; the message says why and what to do."""


class Job:
    """A run as the server sees it: ids, owner, live events; no data set, no model."""

    def __init__(self, run_dir: Path, request: training.TrainRequest, owner: str,
                 n_classes: int, spec: executors.RunSpec, arrival: int = 0,
                 epochs_done: int = 0) -> None:
        self.run_dir = run_dir
        self.run_id = run_dir.name
        self.request, self.owner, self.n_classes = request, owner, n_classes
        self.spec: executors.RunSpec | None = spec  # dropped once started
        # Its place in the queue (queue_order): when it was queued, whether (the move's
        # count) a teacher moved it to the front, and its round while it waits.
        self.arrival, self.front, self.turn = arrival, 0, 0
        # What its wait estimate reads (wait_estimate): its shape, finished epochs (a
        # resumed run's earlier ones included) and the times of those it trained here.
        self.shape = wait_estimate.shape_key(request)
        self.epochs_done = epochs_done
        self.epoch_seconds: list[float] = []
        self.started_at: float | None = None
        self.upload = spec.dataset.npz  # an uploaded data set's shipped file, if any
        self.events = ev.EventLog()
        self.handle: executors.Handle | None = None
        self.slot: int | None = None
        self.result: training.TrainResult | None = None
        self.stop_requested = False
        self._finished = threading.Event()

    @property
    def started(self) -> bool:
        """Whether a worker was started for the job (False while queued)."""
        return self.slot is not None

    def done(self) -> bool:
        """Whether the job has ended (finished, stopped, failed, cancelled)."""
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends or ``timeout`` passes; True when it ended."""
        return self._finished.wait(timeout)

    def snapshot(self) -> dict[str, Any]:
        """What a page needs to draw the job now: status, latest batch, history, health."""
        return snapshot_of(self.run_dir, self.n_classes, self.events.latest_batch, self.done())


def snapshot_of(run_dir: Path, n_classes: int, latest_batch: ev.Event | None,
                done: bool) -> dict[str, Any]:
    """A job's snapshot from its run's files and its latest batch event (``Job.snapshot``;
    a web process reaching the engine over its socket reads the same files)."""
    status = runs.load_status(run_dir)
    history = runs.load_history(run_dir)
    return {
        "run_id": run_dir.name,
        "run_dir": str(run_dir),
        "status": status,
        "batch": latest_batch,
        "history": history,
        "warnings": health.health_warnings(history, n_classes),
        "metrics": runs.load_metrics(run_dir) if done else None,
        "done": done,
    }


class Engine:
    """Queues runs, starts them in an executor's slots, and records what they report.

    Args:
        root: the runs root.
        executor: where runs train (default: executors.make(), i.e. CNNLAB_EXECUTOR).
        budgets: the operator's limits (default: budgets.load()).
        clock: the wall clock (time.time), which workers also stamp events with; tests
            pass their own.
    """

    def __init__(self, root: Path | str, executor: executors.Executor | None = None,
                 budgets: budgets_mod.Budgets | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.root = runs.ensure_root(root).resolve()
        self.budgets = budgets or budgets_mod.load()
        self.clock = clock
        self._lock = threading.RLock()
        self._arrivals = itertools.count()
        self._moves = itertools.count(1)
        self._turns = queue_order.Turns()
        self._times = wait_estimate.EpochTimes()
        self._jobs: dict[str, Job] = {}
        self._order: collections.deque[str] = collections.deque()
        self._queue: collections.deque[Job] = collections.deque()
        self._slots: dict[int, Job | None] = {}
        self._lock_fh: IO[str] | None = None
        # Final statuses that could not be written (a full disk): retried as jobs end and at
        # close; a server that dies first leaves "running", which the next start marks
        # "interrupted" (mark_interrupted), so no run stays active forever.
        self._unrecorded: dict[Path, ev.Event] = {}
        self.blocked = self._take_root_lock()
        self.executor_error = ""
        self.executor: executors.Executor | None = executor
        if executor is None and not self.blocked:
            try:
                self.executor = executors.make()
            except executors.ExecutorUnavailable as exc:
                self.executor_error = str(exc)
        if self.executor is not None:
            self._slots = dict.fromkeys(range(self.executor.slots))
        # A dead engine's queue is queued again (when this one can train); what it was
        # training, nobody trains now: "interrupted", resumable.
        waiting = [] if self.blocked or self.executor is None else self._queue_on_disk()
        self.interrupted = [] if self.blocked else runs.mark_interrupted(
            self.root, keep=[job.run_dir for job in waiting])
        self._remember_interrupted()
        if waiting:
            self._requeue(waiting)
        # Challenge submissions being scored, by submission id (outside the slots: a
        # scoring is seconds of evaluation, and must not wait behind a class's runs).
        self._scoring: dict[str, executors.Handle] = {}
        if not self.blocked:  # a dead engine's scorings: nobody finishes them now
            scoring.fail_unscored(self.root)

    # ---------------------------------------------------------------- the runs-root lock

    def _take_root_lock(self) -> str:
        """Lock the runs root for this engine; '' when taken, else why it is not ours."""
        path = self.root / LOCK_FILE
        fh = open(path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            return (f"Another CNN Lab server ({holder}) runs the training queue for the runs "
                    f"folder {self.root}: train there, or start this server with "
                    "CNNLAB_RUNS_DIR set to a folder of its own.")
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        self._lock_fh = fh
        return ""

    # ---------------------------------------------------------------- the queue on disk

    def _save_queued(self, job: Job) -> None:
        """Keep a queued job's spec on disk until it starts (called under the lock)."""
        assert job.spec is not None
        payload = {"spec": asdict(job.spec), "owner": job.owner, "n_classes": job.n_classes,
                   "epochs_done": job.epochs_done, "queued_at": self.clock()}
        try:
            (self.root / QUEUE_DIR).mkdir(exist_ok=True)
            runs.write_json(self.root / QUEUE_DIR / f"{job.run_id}.json", payload)
        except OSError:  # a full disk: the run still queues, but not past this engine
            pass

    def _unsave_queued(self, job: Job) -> None:
        (self.root / QUEUE_DIR / f"{job.run_id}.json").unlink(missing_ok=True)

    def _queue_on_disk(self) -> list[Job]:
        """Jobs for the runs a dead engine left queued, oldest first. Entries that no longer
        hold (the run ended, was deleted, or the file does not read) are deleted; their runs
        are then marked "interrupted" like any other."""
        folder = self.root / QUEUE_DIR
        found: list[tuple[float, Job]] = []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            run_dir = (self.root / path.stem).resolve()
            try:
                if runs.load_status(run_dir).get("status") != runs.RunStatus.QUEUED:
                    raise ValueError("not queued")
                saved = json.loads(path.read_text(encoding="utf-8"))
                raw = saved["spec"]
                spec = executors.RunSpec(**{**raw, "dataset": executors.DatasetRef(
                    **raw["dataset"]), "inputs": tuple(raw.get("inputs") or ())})
                job = Job(run_dir, training.TrainRequest.from_dict(spec.request),
                          str(saved["owner"]), int(saved["n_classes"]), spec,
                          epochs_done=int(saved.get("epochs_done") or 0))
                found.append((float(saved.get("queued_at") or 0), job))
            except (OSError, ValueError, TypeError, KeyError, AttributeError):
                path.unlink(missing_ok=True)
        return [job for _, job in sorted(found, key=lambda entry: entry[0])]

    def _remember_interrupted(self) -> None:
        """An ended job for each run this engine marked "interrupted", oldest first: its
        owner's Train page (``latest``) then shows how the run ended and offers to resume
        it, as it would after a run that ended here."""
        for run_dir in sorted(self.interrupted):  # run ids begin with their start time
            try:
                config = runs.load_config(run_dir)
                request = training.request_from_config(config)
            except (OSError, KeyError, TypeError, ValueError):
                continue  # a damaged run: the Runs page shows it as it is
            spec = executors.RunSpec(run_id=run_dir.name, request={},
                                     dataset=executors.DatasetRef(request.dataset), budgets={})
            job = Job(run_dir, request, access.owner_of(config),
                      len(config.get("class_names") or ()), spec,
                      arrival=next(self._arrivals))
            job.spec = None
            message = str(runs.load_status(run_dir).get("message") or "")
            job.result = training.TrainResult(runs.RunStatus.INTERRUPTED, message)
            job._finished.set()
            self._jobs[job.run_id] = job
            self._order.append(job.run_id)

    def _requeue(self, waiting: list[Job]) -> None:
        """Queue again the jobs ``_queue_on_disk`` found, in their order."""
        with self._lock:
            for job in waiting:
                job.arrival = next(self._arrivals)
                self._jobs[job.run_id] = job
                self._order.append(job.run_id)
                self._queue.append(job)
            self._start_queued()

    def close(self, keep_queue: bool = False) -> None:
        """Stop every worker, forget the queue and release the runs root.

        ``keep_queue`` leaves the queued runs queued on disk for the next engine (an engine
        process shut down while web servers go on); else they are cancelled.
        """
        with self._lock:
            for job in list(self._queue):
                if keep_queue:
                    self._queue.remove(job)
                else:
                    self._cancel(job)
            handles = {job.run_dir: job.handle for job in self._slots.values()
                       if job is not None and job.handle is not None}
            for handle in [*handles.values(), *self._scoring.values()]:
                handle.kill()
        if self.executor is not None:
            self.executor.close()
        self._record_unrecorded()
        # A killed worker's "done" may come after this process has gone (SIGTERM on
        # `cnnlab engine`): its run would stay "running" until the next engine starts.
        for run_dir in handles:
            if runs.load_status(run_dir).get("status") in runs.ACTIVE:
                runs.update_status(
                    run_dir, status=runs.RunStatus.INTERRUPTED,
                    message="The engine stopped while this run was training; its history "
                            "and best checkpoint are kept — resume it to continue.")
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    # ---------------------------------------------------------------- what may train

    def describe(self) -> str:
        """Where this server's runs train, for people."""
        if self.blocked or self.executor is None:
            return "nowhere (see the message above)"
        return self.executor.describe()

    def warm(self) -> None:
        """Have a worker ready for the next run (a page that can train calls this)."""
        if not self.unavailable() and self.executor is not None:
            self.executor.warm()

    def unavailable(self) -> str:
        """Why this engine cannot train at all ('' when it can)."""
        return self.blocked or self.executor_error

    def request_errors(self, request: training.TrainRequest, dataset: Dataset) -> list[str]:
        """``training.request_errors`` under this server's budgets and devices."""
        gpu = bool(self.executor and self.executor.gpu)
        return training.request_errors(request, dataset, self.budgets, gpu=gpu)

    def active_for(self, owner: str) -> list[Job]:
        """``owner``'s jobs that are queued or training."""
        with self._lock:
            return [j for j in self._jobs.values() if j.owner == owner and not j.done()]

    def _check_can_queue(self, owner: str) -> None:
        if self.unavailable():
            raise EngineRefused(self.unavailable())
        problem = budgets_mod.queue_problem(self.budgets, len(self.active_for(owner)))
        if problem:
            raise EngineRefused(problem)

    # ---------------------------------------------------------------- submitting

    def submit(self, request: training.TrainRequest, dataset: Dataset,
               user: User = LOCAL_USER) -> Job:
        """Create a run for ``request``, owned by ``user``, and start it now or queue it.

        Raises EngineRefused (a ValueError) with every problem when it cannot be queued.
        """
        owner = user.name
        errors = self.request_errors(request, dataset)
        if errors:
            raise EngineRefused(" ".join(errors))
        with self._lock:
            self._check_can_queue(owner)
            run_dir = self._new_run(request, dataset, owner)
            return self._enqueue(run_dir, request, dataset, owner, "new", ())

    def resume(self, run_dir: Path | str, dataset: Dataset, epochs: int | None = None,
               user: User = LOCAL_USER) -> Job:
        """Continue a stopped, interrupted or failed run exactly from its last whole epoch.

        Weights, optimizer state (so learning-rate schedules continue) and the epoch count
        come from the run's checkpoint; ``epochs`` is the new total (default: the run's
        own). Queued when the slots are busy. Only the run's owner or a teacher may; the
        run stays its owner's.
        """
        run_dir = runs.check_inside(self.root, run_dir)
        owner = access.owner_of(runs.load_config(run_dir))
        access.check_manage(user, owner, "resume", run_dir.name)
        state = callbacks.read_checkpoint(run_dir)
        if state is None:
            raise EngineRefused(
                f"Run {run_dir.name} has no resumable checkpoint (last.keras): fine-tune from "
                "its best model instead, which starts a new run from those weights.")
        # The weights come from the checkpoint: a backbone's starting file is not needed.
        request = replace(training.request_from_run(run_dir), weights=None)
        if epochs is not None:
            request = training.with_epochs(request, epochs)
        total = training.total_epochs(request)
        if state["epoch"] >= total:
            raise EngineRefused(
                f"Run {run_dir.name} has done {state['epoch']} of {total} epochs: "
                "resume it with more epochs, or fine-tune from its best model.")
        self._check_same_shape(run_dir, dataset, request)
        errors = self.request_errors(request, dataset)
        if errors:
            raise EngineRefused(" ".join(errors))
        with self._lock:
            existing = self._jobs.get(run_dir.name)
            if existing is not None and not existing.done():
                raise EngineRefused(f"Run {run_dir.name} is already queued or training; "
                                    "wait for it to end, or stop it first.")
            self._check_can_queue(owner)
            runs.update_status(run_dir, status=runs.RunStatus.QUEUED,
                               message="Waiting to resume.")
            if epochs is not None:
                with runs.run_lock(run_dir):  # against a rename at the same moment
                    runs.write_json(run_dir / runs.CONFIG_FILE,
                                    {**runs.load_config(run_dir), "fit": request.fit.to_dict()})
            inputs = (callbacks.LAST_FILE, callbacks.CHECKPOINT_FILE, runs.BEST_FILE)
            return self._enqueue(run_dir, request, dataset, owner, "resume",
                                 tuple(f for f in inputs if (run_dir / f).exists()),
                                 epochs_done=state["epoch"])

    def fine_tune(self, parent_dir: Path | str, dataset: Dataset, epochs: int,
                  user: User = LOCAL_USER, name: str = "", corrections: int = 0) -> Job:
        """Start a new run, owned by ``user``, from ``parent_dir``'s best model (fresh
        optimizer, epoch 0). The new run records its parent in config.json. Only the
        parent's owner or a teacher may.

        ``corrections`` > 0 says ``dataset`` is a derived set holding that many of the
        user's corrections (cnnlab.use.teaching): config.json records the count, and the
        parent's sample limit is dropped, since the derived set is already the sample.
        """
        parent_dir = runs.check_inside(self.root, parent_dir)
        access.check_manage(user, access.owner_of(runs.load_config(parent_dir)),
                            "fine-tune from", parent_dir.name)
        owner = user.name
        best = runs.best_model_path(parent_dir)
        if not best.is_file():
            raise EngineRefused(f"Run {parent_dir.name} has no best.keras to fine-tune from.")
        parent = training.request_from_run(parent_dir)
        # weights=None: the starting weights are the parent's best, not its backbone's file.
        request = replace(training.with_epochs(parent, epochs), weights=None,
                          name=name or f"{parent.run_name()}-finetune")
        facts: dict[str, Any] = {"parent": parent_dir.name}
        if corrections:
            request = replace(request, limit=None)
            facts["corrections"] = corrections
        self._check_same_shape(parent_dir, dataset, request)
        errors = self.request_errors(request, dataset)
        if errors:
            raise EngineRefused(" ".join(errors))
        with self._lock:
            self._check_can_queue(owner)
            run_dir = self._new_run(request, dataset, owner, **facts)
            shutil.copyfile(best, run_dir / training.INIT_FILE)
            return self._enqueue(run_dir, request, dataset, owner, "fine-tune",
                                 (training.INIT_FILE,))

    def _new_run(self, request: training.TrainRequest, dataset: Dataset, owner: str,
                 **facts: Any) -> Path:
        """A new run folder, queued, with config.json's fixed facts (owner, parent…)."""
        return runs.create_run(self.root,
                               training.run_config(request, dataset, owner=owner, **facts))

    @staticmethod
    def _check_same_shape(run_dir: Path, dataset: Dataset,
                          request: training.TrainRequest) -> None:
        want = tuple(runs.load_config(run_dir).get("input_shape") or ())
        have = tuple(dataset.info.image_shape)
        if want and want != have:
            raise EngineRefused(
                f"Run {run_dir.name}'s model takes {'×'.join(map(str, want))} images but the "
                f"data set {dataset.info.name!r} has {'×'.join(map(str, have))} images; use "
                f"the data set it was trained on ({request.dataset!r}).")

    def _dataset_ref(self, dataset: Dataset) -> executors.DatasetRef:
        """A registry set or a class data set by name (the worker maps the class set's
        decoded cache, never a copy shipped); an upload written once as .npz under the runs
        root."""
        from cnnlab.data import datasets, shared_sets

        name = dataset.info.name
        if name in datasets.REGISTRY or shared_sets.is_shared(name):
            return executors.DatasetRef(name)
        data = datasets.to_npz_bytes(dataset)
        folder = self.root / UPLOADS_DIR
        folder.mkdir(exist_ok=True)
        path = folder / f"{hashlib.sha256(data).hexdigest()[:24]}.npz"
        if not path.exists():
            runs.write_bytes(path, data)
        return executors.DatasetRef(name, str(path))

    def _enqueue(self, run_dir: Path, request: training.TrainRequest, dataset: Dataset,
                 owner: str, mode: str, inputs: tuple[str, ...], epochs_done: int = 0) -> Job:
        spec = executors.RunSpec(
            run_id=run_dir.name, request=request.to_dict(),
            dataset=self._dataset_ref(dataset), budgets=self.budgets.to_dict(),
            mode=mode, inputs=inputs,
        )
        with self._lock:
            job = Job(run_dir, request, owner, len(dataset.info.class_names), spec,
                      arrival=next(self._arrivals), epochs_done=epochs_done)
            if job.run_id in self._jobs:  # a resume: the run's earlier job steps aside
                self._order.remove(job.run_id)
            self._jobs[job.run_id] = job
            self._order.append(job.run_id)
            self._queue.append(job)
            self._start_queued()
            if not job.started:
                self._save_queued(job)
                ahead = len(self.running()) + self._queue.index(job)
                runs.update_status(run_dir, status=runs.RunStatus.QUEUED,
                                   message=f"Queued: {ahead} run(s) ahead of it.")
            self._forget_old()
        return job

    def submit_to_challenge(self, challenge_id: str, run_id: str,
                            user: User = LOCAL_USER) -> dict[str, Any]:
        """Submit ``user``'s finished run ``run_id`` to a challenge: checked and recorded by
        cnnlab.train.scoring (owner, data set, limits, deadline, allowance), then scored on
        the hidden split in a worker. Returns the submission (status "scoring"; the score
        lands in the challenge's submissions.json when the worker is done).

        Raises ChallengeError (a ValueError) or access.AccessDenied saying why not.
        """
        if self.unavailable() or self.executor is None:
            raise EngineRefused(self.unavailable() or "No executor: nothing can be scored.")
        sub, spec, work = scoring.prepare(self.root, challenge_id, run_id, user, self.budgets,
                                          self.clock())

        def on_event(event: ev.Event) -> None:
            if event["kind"] == "done":
                scoring.record_score(self.root, sub, event)
                with self._lock:
                    self._scoring.pop(sub.id, None)

        with self._lock:
            self._scoring[sub.id] = self.executor.start(spec, work, on_event,
                                                        slot=len(self._slots))
        return sub.to_dict()

    # ---------------------------------------------------------------- running

    def _reorder(self) -> None:
        """Put the queue in its fair order (queue_order; called under the lock)."""
        ranked = self._turns.ranked(list(self._queue))
        for job, turn in ranked:
            job.turn = turn
        self._queue = collections.deque(job for job, _ in ranked)

    def _start_queued(self) -> None:
        """Start queued jobs, in fair order, while slots are free (called under the lock)."""
        assert self.executor is not None
        self._reorder()
        for slot, holder in self._slots.items():
            if holder is not None or not self._queue:
                continue
            job = self._queue.popleft()
            self._turns.started(job, job.turn)
            self._slots[slot] = job
            job.slot = slot
            job.started_at = self.clock()
            spec, job.spec = job.spec, None
            assert spec is not None
            self._unsave_queued(job)
            job.handle = self.executor.start(spec, job.run_dir, self._on_event(job), slot)
            if job.stop_requested:
                job.handle.stop()

    def _on_event(self, job: Job) -> Callable[[ev.Event], None]:
        def on_event(event: ev.Event) -> None:
            try:
                runs.record(job.run_dir, event)
            except (OSError, runs.RunPathError) as exc:  # e.g. disk full: the run ends
                if event["kind"] != "done" and job.handle is not None:
                    job.handle.stop()
                event = {**event, "message": f"{event.get('message', '')} ({exc})"}
                if event["kind"] == "done":
                    with self._lock:
                        self._unrecorded[job.run_dir] = event
            stored = job.events.add(event)
            if event["kind"] == "epoch":
                self._timed(job, event)
            if event["kind"] == "done":
                self._finish(job, stored)
        return on_event

    def _timed(self, job: Job, epoch: ev.Event) -> None:
        """Keep a finished epoch's time for wait estimates (the job's and its shape's)."""
        with self._lock:
            job.epochs_done = int(epoch["epoch"])
            seconds = epoch.get("seconds")
            if seconds is not None:
                job.epoch_seconds.append(float(seconds))
                self._times.add_epoch(job.shape, float(seconds))

    def _finish(self, job: Job, done: ev.Event) -> None:
        job.result = training.TrainResult(done["status"], done["message"],
                                          seconds=float(done.get("seconds") or 0.0))
        with self._lock:
            if job.slot is not None and self._slots.get(job.slot) is job:
                self._slots[job.slot] = None
            if job.started_at is not None and job.epoch_seconds:
                # Start-up and evaluation: what a queued run costs beyond its epochs.
                self._times.add_overhead(self.clock() - job.started_at - sum(job.epoch_seconds))
            job.handle = None
            job.events.compact()
            self._drop_unused_uploads()
            job._finished.set()
            self._start_queued()
        self._record_unrecorded()

    def _record_unrecorded(self) -> None:
        """Write final statuses that failed before (e.g. the disk has room again)."""
        with self._lock:
            pending = list(self._unrecorded.items())
        for run_dir, done in pending:
            try:
                runs.record(run_dir, done)
            except OSError:
                continue
            with self._lock:
                self._unrecorded.pop(run_dir, None)

    def _drop_unused_uploads(self) -> None:
        """Delete shipped uploads that no queued or running job still needs."""
        folder = self.root / UPLOADS_DIR
        if not folder.is_dir():
            return
        needed = {j.upload for j in (*self._queue, *self.running())}
        for path in folder.glob("*.npz"):
            if str(path) not in needed:
                path.unlink(missing_ok=True)

    def _forget_old(self) -> None:
        """Keep at most KEEP_FINISHED finished jobs in memory (their runs stay on disk)."""
        finished = [rid for rid in self._order if self._jobs[rid].done()]
        for rid in finished[:-KEEP_FINISHED] if len(finished) > KEEP_FINISHED else []:
            self._order.remove(rid)
            del self._jobs[rid]

    def stop(self, run_id: str, user: User = LOCAL_USER) -> None:
        """Stop a running job within one batch, or cancel a queued one (status "stopped").

        Only the run's owner or a teacher may (access.AccessDenied otherwise).
        """
        with self._lock:
            job = self._jobs.get(run_id)
            if job is None or job.done():
                return
            access.check_manage(user, job.owner, "stop", run_id)
            job.stop_requested = True
            if job in self._queue:
                self._cancel(job)
            elif job.handle is not None:
                job.handle.stop()

    def cancel(self, run_id: str, user: User = LOCAL_USER) -> None:
        """Cancel a queued run before it starts (status "stopped").

        Only the run's owner or a teacher may (access.AccessDenied otherwise). Raises
        EngineRefused when the run is not queued (it started or ended meanwhile).
        """
        with self._lock:
            job = self._queued_job(run_id, "cancel")
            access.check_manage(user, job.owner, "cancel", run_id)
            job.stop_requested = True
            self._cancel(job)

    def move_to_front(self, run_id: str, user: User = LOCAL_USER) -> None:
        """Make a queued run the next to start, ahead of the fair order.

        Only a teacher may (access.AccessDenied otherwise): the order is what makes the
        queue fair, so no student may jump it, even with their own run. Raises
        EngineRefused when the run is not queued.
        """
        with self._lock:
            job = self._queued_job(run_id, "move to the front")
            access.check_reorder(user, run_id)
            job.front = next(self._moves)
            self._reorder()

    def _queued_job(self, run_id: str, action: str) -> Job:
        """The queued job ``run_id``; EngineRefused saying where it is otherwise."""
        job = self._jobs.get(run_id)
        if job is not None and job in self._queue:
            return job
        where = ("is not a run of this server" if job is None
                 else "has ended" if job.done() else "is already training")
        raise EngineRefused(f"Cannot {action} run {run_id}: it {where}, and only a queued "
                            "run can be; reload the queue to see where each run is now.")

    def _cancel(self, job: Job) -> None:
        self._queue.remove(job)
        self._reorder()  # its owner's later runs move up a round
        job.spec = None
        self._unsave_queued(job)
        done = ev.make("done", status=runs.RunStatus.STOPPED,
                       message="Cancelled before it started.")
        try:
            runs.record(job.run_dir, done)
        except OSError:
            self._unrecorded[job.run_dir] = done
        job.result = training.TrainResult(runs.RunStatus.STOPPED, done["message"])
        job.events.add(done)
        job._finished.set()

    # ---------------------------------------------------------------- reading

    def running(self) -> list[Job]:
        """Jobs training now, by slot."""
        with self._lock:
            return [j for j in self._slots.values() if j is not None]

    def current(self) -> Job | None:
        """The first job training now, if any."""
        running = self.running()
        return running[0] if running else None

    def queued(self) -> list[Job]:
        """Jobs waiting for a slot, in order."""
        with self._lock:
            return list(self._queue)

    def get(self, run_id: str) -> Job | None:
        """A job this server started (running, queued or done), by run id."""
        return self._jobs.get(run_id)

    def latest(self, owner: str | None = None) -> Job | None:
        """The most recently submitted job (of ``owner``, when given)."""
        with self._lock:
            for rid in reversed(self._order):
                if owner is None or self._jobs[rid].owner == owner:
                    return self._jobs[rid]
        return None

    def busy(self) -> bool:
        """Whether every slot is taken (a new run would wait)."""
        with self._lock:
            return all(j is not None for j in self._slots.values()) or bool(self._queue)

    def position(self, run_id: str) -> int | None:
        """How many queued runs are ahead of ``run_id`` (None when it is not queued)."""
        with self._lock:
            ids = [j.run_id for j in self._queue]
            return ids.index(run_id) if run_id in ids else None

    def queue_estimate(self, now: float | None = None) -> wait_estimate.QueueEstimate:
        """Each queued run's place and estimated start, and each running run's time left
        (wait_estimate: epochs left × epoch times measured here). Reads memory only."""
        now = self.clock() if now is None else now
        with self._lock:
            running = {
                j.run_id: wait_estimate.progress(
                    j.shape, training.total_epochs(j.request), j.epochs_done, j.epoch_seconds,
                    j.events.latest_batch, now)
                for j in self._slots.values() if j is not None}
            queued = [wait_estimate.Planned(
                j.run_id, j.owner, j.shape,
                max(0, training.total_epochs(j.request) - j.epochs_done)) for j in self._queue]
            return wait_estimate.estimate(len(self._slots), running, queued, self._times)

    def wait_for(self, run_id: str, now: float | None = None) -> wait_estimate.Wait | None:
        """``run_id``'s wait (place, runs ahead, estimated start); None when not queued."""
        return next((w for w in self.queue_estimate(now).waits if w.run_id == run_id), None)


_ENGINES: dict[Path, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def engine_for(root: Path | str | None = None) -> Engine:
    """This process's Engine for ``root`` (default: runs.default_root()), made once.

    Raises runs.RunsRootError when the runs root cannot be used.
    """
    key = Path(root if root is not None else runs.default_root()).resolve()
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _ENGINES[key] = Engine(key)
        return engine


@atexit.register
def _close_all() -> None:
    with _ENGINES_LOCK:
        for engine in _ENGINES.values():
            engine.close()
        _ENGINES.clear()
