"""Overhead of TrainingJob over a bare ``model.fit``: same model, data, epochs and seed.

    python bench/overhead.py [--dataset mnist] [--preset quick] [--epochs 2] [--limit 20000]

Prints one JSON object with both times and their ratio (target ≤ 1.03). The job's time runs
from submit to the start of evaluation (build, fit, callbacks, history/status writes and
checkpoints: everything the bare fit does not do except the test evaluation). Each variant
runs ``--repeat`` times alternately after one warm-up fit; the best time of each counts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def bare_fit(request, ds) -> float:
    """Seconds for build + compile + fit with no callbacks, as a notebook would do it."""
    import keras

    from cnnlab import training

    x_tr, y_tr, x_val, y_val = training.prepare_data(ds, request)
    t0 = time.perf_counter()
    keras.utils.set_random_seed(training.SEED)
    model = training.build_compiled(request.config, ds.info.image_shape,
                                    len(ds.info.class_names))
    model.fit(x_tr, y_tr, validation_data=(x_val, y_val), epochs=request.epochs,
              batch_size=request.batch_size, shuffle=True, verbose=0)
    return time.perf_counter() - t0


def job_fit(request, ds, root: Path) -> float:
    """Seconds from JobManager.submit to the job's "evaluating" event."""
    from cnnlab import training

    manager = training.JobManager(root)
    t0 = time.time()  # event times are wall-clock time.time() stamps
    job = manager.submit(request, ds)
    job.wait()
    t_eval = next(e["time"] for e in job.events.since(0)
                  if e["kind"] == "status" and e["status"] == "evaluating")
    assert job.result is not None and job.result.status == "finished", job.result
    return t_eval - t0


def main() -> None:
    """Warm up, time both variants alternately, print the JSON result."""
    from cnnlab import config, datasets, device, training

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--preset", default="quick")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--limit", type=int, default=20000)
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()

    ds = datasets.load(args.dataset)
    cfg = config.PRESETS[args.preset].config
    request = training.TrainRequest(dataset=args.dataset, config=cfg, preset=args.preset,
                                    epochs=args.epochs, batch_size=cfg.batch_size,
                                    limit=args.limit)
    warm = training.TrainRequest(**{**training.asdict_shallow(request), "epochs": 1,
                                    "limit": 2000})
    bare_fit(warm, ds)  # one-time TensorFlow start-up costs go here
    root = Path(tempfile.mkdtemp(prefix="cnnlab-overhead-"))
    bare, job = [], []
    for _ in range(args.repeat):
        bare.append(bare_fit(request, ds))
        job.append(job_fit(request, ds, root))
    print(json.dumps({
        "dataset": args.dataset, "preset": args.preset, "epochs": args.epochs,
        "limit": args.limit, "device": device.detect().label,
        "bare_fit_s": [round(t, 2) for t in bare],
        "training_job_s": [round(t, 2) for t in job],
        "ratio_best": round(min(job) / min(bare), 3),
    }))


if __name__ == "__main__":
    main()
