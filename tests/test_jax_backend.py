"""The lab on Keras's JAX backend (KERAS_BACKEND=jax), as the README says it works.

Keras fixes its backend at import and this test process runs TensorFlow, so one child
process (``KERAS_BACKEND=jax``) trains one tiny epoch through the CLI's own ``main`` (the
quick preset on 300 bundled MNIST samples), then loads the best model with
``cnnlab.use.inference`` and compares the compiled forward pass (``jax.jit``) with the eager
model call. After the CLI's JSON object it prints one JSON report; this process checks both,
the run's files, and that the JAX-trained best.keras also loads and gives the same answer
under TensorFlow. About 20 s on a 2-core CPU. CI installs jax[cpu] through the [dev] extra.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from cnnlab.data import datasets
from cnnlab.runs import store as runs
from cnnlab.use import inference

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                                 reason="jax is not installed (pip install -e \".[dev]\")")]

# Runs in the child: the CLI's train command, then inference on its best model. The CLI
# prints its own JSON object first; the second stdout line is this script's report.
CHILD = """
import json, sys
import keras, jax
import numpy as np
from cnnlab.cli import main as cli
from cnnlab.data import datasets
from cnnlab.use import inference
from cnnlab.runs import store as runs

status = cli.main(sys.argv[2:])
(run,) = runs.list_runs(sys.argv[1])
predictor = inference.load_run_predictor(run.run_dir)
image = datasets.load("mnist_sample").x_test[0].astype(np.float32) / 255.0
compiled = predictor.probabilities(image)
eager = keras.ops.convert_to_numpy(
    predictor.model(image[None] * np.float32(predictor.scale), training=False))[0]
print(json.dumps({
    "backend": keras.backend.backend(),
    "weights_are_jax_arrays": all(isinstance(v.value, jax.Array)
                                  for v in predictor.model.weights),
    "compiled_type": type(compiled).__name__,
    "compiled": compiled.tolist(),
    "eager": np.asarray(eager).tolist(),
}))
sys.exit(status)
"""


def test_one_epoch_and_compiled_inference_under_jax(tmp_path: Path) -> None:
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path),
         "train", "--dataset", "mnist_sample", "--preset", "quick", "--limit", "300",
         "--epochs", "1", "--runs-dir", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=180, cwd=ROOT, env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 2, f"expected the CLI's JSON and the report on stdout:\n{done.stdout}"
    cli_line, report_line = lines
    result, report = json.loads(cli_line), json.loads(report_line)

    # It really ran on JAX: the backend, and the trained weights live in jax.Arrays.
    assert report["backend"] == "jax", report
    assert report["weights_are_jax_arrays"] is True

    # The run finished through the lab's normal path, with its files written.
    assert result["status"] == "finished", result["message"]
    run_dir = Path(result["run_dir"])
    status = runs.load_status(run_dir)
    assert status["status"] == "finished" and status["epochs_done"] == 1
    assert status["device"].startswith(("CPU", "GPU"))
    assert len(result["history"]["loss"]) == 1 and math.isfinite(result["history"]["loss"][0])
    hist = runs.load_history(run_dir)
    assert len(hist) == 1 and np.isfinite(hist["loss"]).all()
    assert np.isfinite(hist["val_loss"]).all()
    acc = result["test_accuracy"]
    assert isinstance(acc, float) and 0.0 <= acc <= 1.0
    assert runs.load_metrics(run_dir)["test_accuracy"] == pytest.approx(acc)
    assert runs.best_model_path(run_dir).is_file()

    # Compiled inference (jax.jit over stateless_call) equals the eager call.
    compiled, eager = np.array(report["compiled"]), np.array(report["eager"])
    assert report["compiled_type"] == "ndarray" and compiled.shape == (10,)
    assert (compiled >= 0).all() and compiled.sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(compiled, eager, atol=1e-5)

    # The .keras file is backend-neutral: the JAX-trained model loads and agrees here (TF).
    model = inference.load_run_model(runs.best_model_path(run_dir))
    image = datasets.load("mnist_sample").x_test[:1].astype(np.float32) / 255.0
    here = np.asarray(model(image * np.float32(inference.input_scale(model)), training=False))[0]
    np.testing.assert_allclose(here, compiled, atol=1e-4)
