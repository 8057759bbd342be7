"""What Streamlit's clean-up after every script run costs a server that serves predictions.

    python -m bench.server_hooks
    # from the repository root, with the package installed: pip install -e ".[dev]"

After each script run (every fragment poll too) Streamlit calls keras.backend.clear_session()
and, with runner.postScriptGC, gc.collect(2). pages/common.py turns the first off and
.streamlit/config.toml the second; this bench says whether that is still worth it now that
training runs in worker processes: a prediction with a seed000-mnist model after each
"rerun", with and without the clean-up, in 15 ABBA pairs. Prints one JSON object.
"""

import gc
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from bench.stats import abba, ratio_summary  # noqa: E402
from cnnlab.model import config, models  # noqa: E402
from cnnlab.use import inference

cfg = config.PRESETS["seed000-mnist"].config
model = models.build_model(cfg, (28, 28, 1), 10)
path = Path(tempfile.mkdtemp()) / "model.keras"
model.save(path)
pred = inference.Predictor(inference.load_run_model(path))
x = np.random.default_rng(0).random((28, 28, 1)).astype("float32")
for _ in range(20):
    pred.probabilities(x)
def rerun(clean: bool) -> float:
    """One page rerun's worth: the clean-up Streamlit does after a run, then a prediction."""
    t0 = time.perf_counter()
    if clean:
        keras.backend.clear_session()
        gc.collect(2)
    pred.probabilities(x)
    return time.perf_counter() - t0
a, b = [], []
for order in abba(15):
    for v in order:
        times = [rerun(v == "B") for _ in range(10)]
        (b if v == "B" else a).append(statistics.median(times))
gc_times = []
for _ in range(10):
    t = time.perf_counter()
    gc.collect(2)
    gc_times.append(time.perf_counter() - t)
print(json.dumps({"predict_ms_no_cleanup": round(1000 * statistics.median(a), 2),
                  "predict_ms_with_cleanup": round(1000 * statistics.median(b), 2),
                  "gc_collect2_ms": round(1000 * statistics.median(gc_times), 2),
                  **ratio_summary(a, b)}))
