"""What one script run of each page costs the server, after warm-up.

    python -m bench.page_cost [--runs 20] [--runs-dir DIR]
    # from the repository root, with the package installed: pip install -e ".[dev]"

Every click, every fragment tick and every page visit is one script run in the web
process, so with 60 students this is what the server pays 60 times over. Each page runs
through Streamlit's AppTest in its default view (the data set of the page's first load,
the runs of ``--runs-dir``, else an empty runs folder): three runs to warm up (imports,
st.cache_data), then ``--runs`` reruns, timed as wall time and as this process's CPU time.
As in the server, a page's compiled script is kept between runs (AppTest compiles it anew
each run otherwise). AppTest parses what the script sends, so these numbers are a little
above the script's own cost. Prints one JSON object: per page p50 and p95 in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.accuracy import machine

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
PAGES = {"Home": "app.py", "Explore": "pages/explore.py", "Configure": "pages/configure.py",
         "Train": "pages/train.py", "Draw & predict": "pages/predict.py",
         "Runs": "pages/runs.py"}


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0–1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def keep_compiled_scripts() -> None:
    """Give every AppTest run one ScriptCache, as the server's runtime has: a page's script
    is compiled once, not on every run."""
    from streamlit.runtime.scriptrunner.script_cache import ScriptCache
    from streamlit.testing.v1 import app_test, local_script_runner

    shared = ScriptCache()
    app_test.ScriptCache = local_script_runner.ScriptCache = lambda: shared


def page_cost(path: str, runs: int) -> dict[str, float]:
    """p50/p95 wall and CPU milliseconds of ``runs`` reruns of the page at ``path``."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / path), default_timeout=300)
    for _ in range(3):
        at.run()
    if at.exception:
        raise SystemExit(f"{path} failed: {at.exception[0].message}")
    wall, cpu = [], []
    for _ in range(runs):
        w0, c0 = time.perf_counter(), time.process_time()
        at.run()
        wall.append(1000 * (time.perf_counter() - w0))
        cpu.append(1000 * (time.process_time() - c0))
    return {"p50_ms": round(statistics.median(wall), 1),
            "p95_ms": round(percentile(wall, 0.95), 1),
            "cpu_p50_ms": round(statistics.median(cpu), 1),
            "errors": len(at.exception) + len(at.error)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20, help="timed reruns per page")
    p.add_argument("--runs-dir", help="a runs folder to show (default: an empty one)")
    args = p.parse_args()
    os.chdir(ROOT)  # pages find app.py's neighbours as `streamlit run` would
    sys.path.insert(0, str(ROOT))
    os.environ["CNNLAB_RUNS_DIR"] = args.runs_dir or tempfile.mkdtemp(prefix="page-cost-")
    keep_compiled_scripts()
    result = {}
    for name, path in PAGES.items():
        result[name] = page_cost(path, args.runs)
        print(name, result[name], file=sys.stderr, flush=True)
    print(json.dumps({"runs": args.runs, "pages": result, "machine": machine()}))


if __name__ == "__main__":
    main()
