"""An executor that trains nothing: the test decides what each "worker" reports and when.

For engine tests about the queue (order, estimates, who may move or cancel a run), where a
real worker would only add a TensorFlow start-up and make the timing uncertain. A test
starts runs through the Engine, then calls ``report_batch``, ``report_epoch`` and
``finish`` on the handle of a run to play its worker.
"""

from __future__ import annotations

from pathlib import Path

from cnnlab.train import events as ev
from cnnlab.train import executors


class FakeHandle:
    """A started run: remembers Stop, sends the events the test asks for."""

    def __init__(self, run_id: str, on_event: ev.Emit) -> None:
        self.run_id, self.on_event = run_id, on_event
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True

    def kill(self) -> None:
        self.stopped = True

    def report_batch(self, epoch: int, epochs: int, eta_epoch_s: float, elapsed_s: float,
                     at: float, batch: int = 5, batches: int = 10) -> None:
        """A batch report of epoch ``epoch`` stamped ``at`` (the worker's clock)."""
        self.on_event(ev.make("batch", epoch=epoch, epochs=epochs, batch=batch,
                              batches=batches, loss=0.5, accuracy=0.8, samples_per_s=100.0,
                              eta_epoch_s=eta_epoch_s, eta_run_s=0.0, elapsed_s=elapsed_s,
                              time=at))

    def report_epoch(self, epoch: int, epochs: int, seconds: float) -> None:
        """Epoch ``epoch`` ended after ``seconds``: one history row."""
        self.on_event(ev.make("epoch", epoch=epoch, epochs=epochs, loss=0.5, accuracy=0.8,
                              val_loss=0.5, val_accuracy=0.8, learning_rate=1e-3,
                              seconds=seconds))

    def finish(self, status: str = "finished") -> None:
        """The worker ended (the engine then starts the next queued run)."""
        self.on_event(ev.make("done", status=status, message=f"{status.capitalize()}.",
                              seconds=1.0))


class FakeExecutor:
    """``slots`` pretend workers; ``started`` lists run ids in the order they started."""

    name = "fake"
    gpu = False

    def __init__(self, slots: int = 1) -> None:
        self.slots = slots
        self.started: list[str] = []
        self.handles: dict[str, FakeHandle] = {}

    def start(self, spec: executors.RunSpec, run_dir: Path, on_event: ev.Emit,
              slot: int) -> FakeHandle:
        handle = FakeHandle(spec.run_id, on_event)
        self.started.append(spec.run_id)
        self.handles[spec.run_id] = handle
        return handle

    def describe(self) -> str:
        return f"{self.slots} pretend worker(s)"

    def warm(self) -> None:
        pass

    def close(self) -> None:
        pass
