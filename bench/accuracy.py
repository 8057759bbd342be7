"""Train a preset to the end of its epochs on a full data set; print test accuracy, seconds
and peak memory as one JSON line, and with --write record it in docs/results.md.

    python -m bench.accuracy --preset quick [--dataset mnist] [--epochs N] [--seeds 42 1]
                             [--float32] [--write]
    # from the repository root, with the package installed: pip install -e ".[dev]"

One run's test accuracy moves by a tenth of a point or more with the seed (best-mnist:
99.36 % with seed 42, 99.53 % with seed 1), so --seeds trains the preset once per seed
and reports each run and their mean; the table's accuracy is that mean.

Not a test: a measurement to run by hand on a quiet machine. docs/results.md is generated
from its own table: a new measurement replaces its preset's row, and each target in
TARGETS without one reads "not measured yet" ("not measured here" for a GPU target).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results.md"
# preset: (data set, goal) — issue 19's targets on 2 CPU cores; CIFAR-10 is a GPU target.
TARGETS = {
    "quick": ("mnist", "≥ 99.0 % in ≤ 60 s"),
    "best-mnist": ("mnist", "≥ 99.6 % in ≤ 15 min"),
    "best-fashion": ("fashion_mnist", "≥ 94.5 % in ≤ 60 min"),
    "best-cifar10": ("cifar10", "≥ 88 % (on a GPU)"),
}
COLUMNS = ["preset", "data set", "goal", "epochs", "seconds", "test accuracy", "machine", "date"]
HEADER = """# Accuracy of the presets

Every number below was written by `python -m bench.accuracy --preset NAME --write`: the
preset trained to the end of its epochs (or its early stop) on the full data set, through
the lab's own training path, then evaluated on the test set. Seconds are wall time from
the start of training to the end of the evaluation, data loading excluded. Where a preset
was trained with several seeds, its accuracy is their mean (each run in brackets) and its
seconds and epochs are those of the slowest run.

"""


def vector_units(flags: str) -> str:
    """"AVX-512, bfloat16", "AVX-512", "AVX2" or "" from /proc/cpuinfo ``flags``.

    The same model name can come with or without AVX-512 (a VM's host decides what it
    passes on): best-mnist trained at ~1,300 images/s with AVX-512 and bfloat16 and at
    ~350 with AVX2 alone, on "AMD EPYC" both times.
    """
    from cnnlab.train import device

    have = set(flags.split())
    if "avx512f" in have:
        return "AVX-512, bfloat16" if device.cpu_bfloat16(flags) else "AVX-512"
    return "AVX2" if "avx2" in have else ""


def machine() -> str:
    """'2 CPU cores, AMD EPYC (AVX-512, bfloat16)' or the GPU's name: where the number
    was measured; a bfloat16 CPU whose runs computed in float32 (--float32,
    TF_ENABLE_ONEDNN_OPTS=0) reads '(AVX-512, float32)'."""
    from cnnlab.train import device

    dev = device.detect()
    if dev.kind == "GPU":
        return dev.label
    cpu = device.cpuinfo("model name") or platform.processor()
    units = vector_units(device.cpuinfo("flags"))
    if not dev.bfloat16:
        units = units.replace("bfloat16", "float32")
    return f"{os.cpu_count()} CPU cores, {cpu}".strip(", ") + (f" ({units})" if units else "")


def train_in_float32() -> None:
    """Make this process's runs compute in float32 on a CPU with native bfloat16 too.

    The lab trains in bfloat16 there (training.bfloat16_mode). TF_ENABLE_ONEDNN_OPTS=0
    also turns it off, but with the rest of oneDNN, so the seconds would not be the
    lab's: this keeps oneDNN and changes only the arithmetic, to weigh bfloat16's speed
    against its accuracy on one machine.
    """
    from cnnlab.train import device

    dev = replace(device.detect(), bfloat16=False)
    device.detect = lambda: dev  # type: ignore[assignment]


def read_rows(path: Path) -> dict[str, list[str]]:
    """The measured rows of ``path``'s table by preset (none when the file is missing)."""
    rows: dict[str, list[str]] = {}
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == len(COLUMNS) and cells[0] in TARGETS and cells[3] != "—":
            rows[cells[0]] = cells
    return rows


def write_results(path: Path, measured: dict[str, list[str]]) -> None:
    """docs/results.md: one row per target, measured or 'not measured yet/here'."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for preset, (dataset, goal) in TARGETS.items():
        cells = measured.get(preset) or [preset, dataset, goal, "—", "—",
                                         "not measured here" if "GPU" in goal
                                         else "not measured yet", "—", "—"]
        lines.append("| " + " | ".join(cells) + " |")
    path.write_text(HEADER + "\n".join(lines) + "\n")


def main() -> None:
    """Parse arguments, train synchronously, print one JSON object."""
    import time

    from cnnlab.data import datasets
    from cnnlab.model import config
    from cnnlab.runs import store as runs
    from cnnlab.train import training

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", required=True, choices=list(config.PRESETS))
    p.add_argument("--dataset", default=None, help="default: the preset's own")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=[training.SEED],
                   help="train once per seed; report each and the mean (default: %(default)s)")
    p.add_argument("--float32", action="store_true",
                   help="train in float32 on a CPU with native bfloat16 too (oneDNN stays on)")
    p.add_argument("--write", action="store_true", help=f"record the result in {RESULTS}")
    args = p.parse_args()
    if args.float32:
        train_in_float32()
    if len(set(args.seeds)) < len(args.seeds):
        p.error(f"--seeds {' '.join(map(str, args.seeds))}: give each seed once")

    preset = config.PRESETS[args.preset]
    dataset = args.dataset or preset.dataset
    fit = preset.fit
    if args.epochs is not None:
        fit = replace(fit, epochs=args.epochs)
    t_load = time.perf_counter()
    ds = datasets.load(dataset)
    load_s = time.perf_counter() - t_load
    requests = [training.TrainRequest(dataset=dataset, config=preset.config, fit=fit,
                                      preset=args.preset, limit=args.limit, seed=seed)
                for seed in args.seeds]
    # All checked before any training: a bad seed found after hours of runs loses them all.
    errors = [e for request in requests for e in training.request_errors(request, ds)]
    if errors:
        sys.exit("; ".join(dict.fromkeys(errors)))
    root = Path(tempfile.mkdtemp(prefix="cnnlab-bench-"))
    runs_out = [train_once(request, ds, runs.create_run(root, training.run_config(request, ds)))
                for request in requests]
    values = [r["test_accuracy"] for r in runs_out]
    accuracy = None if None in values else sum(values) / len(values)
    slowest = max(runs_out, key=lambda r: r["seconds"])
    out = {
        "preset": args.preset, "dataset": dataset, "epochs": fit.epochs,
        "test_accuracy": accuracy and round(accuracy, 5),
        "seconds": slowest["seconds"], "seeds": args.seeds, "runs": runs_out,
        "load_seconds": round(load_s, 1), "machine": machine(),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print(json.dumps(out))
    if args.write:
        if (accuracy is None or args.limit is not None or dataset != preset.dataset
                or args.preset not in TARGETS):
            sys.exit(f"--write records only a full run of one of {', '.join(TARGETS)} on "
                     "its own data set")
        rows = read_rows(RESULTS)
        rows[args.preset] = [args.preset, dataset, TARGETS[args.preset][1],
                             f"{slowest['epochs_run']} of {fit.epochs}",
                             f"{slowest['seconds']:.0f}", accuracy_cell(accuracy, values),
                             out["machine"], datetime.date.today().isoformat()]
        write_results(RESULTS, rows)


def train_once(request: Any, ds: Any, run_dir: Path) -> dict[str, Any]:
    """Train ``request`` once in ``run_dir`` through the lab's path; its numbers as a dict."""
    from cnnlab.train import training

    result = training.train_run(request, ds, run_dir)
    return {
        "seed": request.seed, "status": result.status, "epochs_run": len(result.history),
        "test_accuracy": result.metrics["test_accuracy"] if result.metrics else None,
        "seconds": round(result.seconds, 1),
        "fit_seconds": round(sum(r["seconds"] for r in result.history), 1),
        "run_dir": str(run_dir), "message": result.message,
    }


def accuracy_cell(mean: float, values: list[float]) -> str:
    """'99.36%' for one run; '99.45% (99.36, 99.53)' — the ``mean``, then each seed's test
    accuracy in ``values`` — for several."""
    if len(values) == 1:
        return f"{mean:.2%}"
    return f"{mean:.2%} ({', '.join(f'{v * 100:.2f}' for v in values)})"


if __name__ == "__main__":
    main()
