"""What a class gets from the queue: N people press Train at once, with 1 or 2 workers.

    python -m bench.class_queue [--people 10] [--limit 20000] [--epochs 1] [--rounds 1]
    # from the repository root, with the package installed: pip install -e ".[dev]"

Each person queues one run of the ``quick`` preset on the first ``--limit`` MNIST training
images (the bundled sample when full MNIST is not in KERAS_HOME) at the same moment,
through the lab's own engine (cnnlab.train.jobs.Engine) with local worker processes:
``workers=1`` (one process with every core) and ``workers=2`` (the cores split between
two, as LocalExecutor does: TF_NUM_INTRAOP_THREADS = cores // workers). The variants
alternate A B B A for ``--rounds`` rounds. Per variant it reports the wall time until every
run has finished and the median (and worst) wait from pressing Train to the run's first
training batch, as one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.accuracy import machine  # noqa: E402
from bench.stats import ratio_summary  # noqa: E402


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def one_class(workers: int, people: int, limit: int, epochs: int) -> dict[str, float]:
    """Queue one run per person at once on a fresh engine; wall time and waits (s)."""
    from cnnlab.data import datasets
    from cnnlab.model.config import PRESETS
    from cnnlab.people.accounts import User
    from cnnlab.train import jobs, training
    from cnnlab.train.executors.local import LocalExecutor

    try:
        ds = datasets.load("mnist")
    except datasets.DatasetUnavailable:
        ds = datasets.load("mnist_sample")
    offered = training.default_request(ds, "quick", limit, (PRESETS["quick"].config,
                                                            PRESETS["quick"].fit))
    request = dataclasses.replace(offered, fit=dataclasses.replace(offered.fit, epochs=epochs))
    with tempfile.TemporaryDirectory() as root:
        engine = jobs.Engine(Path(root), LocalExecutor(workers))
        try:
            engine.warm()  # as the Train page does while people look at it
            time.sleep(8)  # the fork server has imported TensorFlow
            t0 = time.perf_counter()
            queued = [engine.submit(request, ds, User(f"student{i:02d}", "student"))
                      for i in range(people)]
            first_batch: dict[str, float] = {}
            while not all(job.done() for job in queued):
                now = time.perf_counter() - t0
                for job in queued:
                    if job.run_id not in first_batch and job.events.latest_batch is not None:
                        first_batch[job.run_id] = now
                time.sleep(0.1)
            wall = time.perf_counter() - t0
        finally:
            engine.close()
    failed = [j.run_id for j in queued if j.result is None or j.result.status != "finished"]
    if failed:
        raise RuntimeError(f"runs did not finish: {failed}")
    waits = [first_batch.get(j.run_id, wall) for j in queued]
    return {"wall_s": round(wall, 2), "median_wait_s": round(statistics.median(waits), 2),
            "max_wait_s": round(max(waits), 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.class_queue", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--people", type=int, default=10)
    p.add_argument("--limit", type=int, default=20_000, help="training images per run")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--rounds", type=int, default=1, help="A B B A rounds (1: 4 classes)")
    args = p.parse_args(argv)

    results: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    for r in range(args.rounds):
        for workers in (1, 2, 2, 1):
            log(f"round {r + 1}: {args.people} runs with {workers} worker(s)…")
            out = one_class(workers, args.people, args.limit, args.epochs)
            log(f"  {out}")
            results[workers].append(out)

    def summary(rows: list[dict[str, float]]) -> dict[str, object]:
        return {key: {"median": statistics.median(r[key] for r in rows),
                      "each": [r[key] for r in rows]}
                for key in ("wall_s", "median_wait_s", "max_wait_s")}

    def walls(rows: list[dict[str, float]]) -> list[float]:
        return [r["wall_s"] for r in rows]

    # Pairs in the order they ran (A B, then B A); the control compares each round's two
    # 1-worker classes (A against A), so it shows what the machine's noise alone gives.
    ones, twos = walls(results[1]), walls(results[2])
    print(json.dumps({
        "people": args.people, "limit": args.limit, "epochs": args.epochs,
        "machine": machine(), "order": "ABBA", "rounds": args.rounds,
        "workers_1": summary(results[1]), "workers_2": summary(results[2]),
        "wall_2_to_1": ratio_summary(ones, twos),
        "wait_2_to_1": ratio_summary([r["median_wait_s"] for r in results[1]],
                                     [r["median_wait_s"] for r in results[2]]),
        "control_1_to_1": ratio_summary(ones[0::2], ones[1::2]),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
