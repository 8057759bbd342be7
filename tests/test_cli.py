"""The command line as a user runs it (real subprocesses): help, version, exit statuses,
Ctrl-C during training, readable output."""

from __future__ import annotations

import importlib.metadata
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

import cnnlab
from cnnlab.cli.native_logs import is_native_log, native_logs_hidden
from cnnlab.data import datasets
from cnnlab.model.config import PRESETS
from cnnlab.runs import store as runs


def cli(*args: str, env: dict[str, str] | None = None,
        **kwargs) -> subprocess.CompletedProcess:
    """``python -m cnnlab ARGS`` from the repository root, output captured as text."""
    return subprocess.run([sys.executable, "-m", "cnnlab", *args], capture_output=True,
                          text=True, timeout=180, cwd=ROOT, env=env, **kwargs)


def test_help_lists_the_preset_and_data_set_choices() -> None:
    for command in ("train", "summary"):
        out = cli(command, "--help")
        assert out.returncode == 0, out.stderr
        text = " ".join(out.stdout.split())  # as read, whatever the terminal's width
        assert all(name in text for name in PRESETS), text
        assert all(name in text for name in datasets.REGISTRY), text
    assert ".zip" in " ".join(cli("train", "--help").stdout.split())


def test_version_is_the_package_version() -> None:
    out = cli("--version")
    assert out.returncode == 0 and out.stdout == f"cnnlab {cnnlab.__version__}\n"
    try:  # installed (pip install -e .): the metadata reads the same single source
        assert importlib.metadata.version("cnnlab") == cnnlab.__version__
    except importlib.metadata.PackageNotFoundError:
        pass


def test_console_script_exits_with_mains_status() -> None:
    script = Path(sys.executable).with_name("cnnlab")
    if not script.is_file():
        pytest.skip("the cnnlab console script is not installed (pip install -e .)")
    done = subprocess.run([str(script), "summary", "--preset", "no-such"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "invalid choice" in done.stderr
    done = subprocess.run([str(script), "presets"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "quick" in done.stdout


@pytest.mark.parametrize("args, says", [
    (("train",), "required: --dataset"),  # argparse's own usage error
    (("summary", "--preset", "no-such"), "invalid choice: 'no-such'"),
    (("summary", "--preset", "quick", "--dataset", "imagenet"), "invalid choice: 'imagenet'"),
])
def test_bad_usage_exits_2(args: tuple[str, ...], says: str) -> None:
    out = cli(*args, "--json")
    assert out.returncode == 2 and says in out.stderr and out.stdout == ""


def test_refused_input_exits_2_with_a_message(tmp_path: Path) -> None:
    out = cli("predict", "--run", str(tmp_path), "--image", str(tmp_path / "x.png"), "--json")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("error: --run") and "not a run directory" in out.stderr


def test_readable_output_is_not_python_reprs() -> None:
    for args in (("presets",), ("datasets",), ("summary", "--preset", "quick")):
        out = cli(*args)
        assert out.returncode == 0, out.stderr
        assert "{" not in out.stdout and "[" not in out.stdout and "'" not in out.stdout
    presets = cli("presets").stdout.splitlines()
    assert presets[0].split() == ["NAME", "DATASET", "PARAMS", "DESCRIPTION"]
    assert any(line.split()[:3] == ["quick", "mnist", "114,314"] for line in presets)
    summary = cli("summary", "--preset", "quick").stdout
    assert "114,314 parameters on mnist" in summary and "28×28×16" in summary


def _small_file_limit() -> None:
    # Files over 200 KB fail with EFBIG (Python ignores SIGXFSZ), like a full disk: the
    # run's config and status fit, its first model checkpoint does not.
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


@pytest.mark.slow
def test_a_run_that_fails_exits_1_with_its_result(tmp_path: Path) -> None:
    out = cli("train", "--dataset", "mnist_sample", "--preset", "quick", "--limit", "300",
              "--epochs", "2", "--runs-dir", str(tmp_path), "--json",
              preexec_fn=_small_file_limit)
    assert out.returncode == 1, out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "failed" and "File too large" in result["message"]
    assert runs.load_status(result["run_dir"])["status"] == "failed"
    assert "error: Training failed" in out.stderr


@pytest.mark.slow
def test_ctrl_c_during_train_exits_130_and_marks_the_run_interrupted(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnlab", "train", "--dataset", "mnist_sample", "--preset",
         "quick", "--limit", "300", "--epochs", "60", "--batch-size", "8", "--runs-dir",
         str(tmp_path), "--json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # As from a terminal: a runner started in the background (`cmd &` in a script)
        # passes SIGINT on ignored, and Python then keeps ignoring Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        for line in proc.stderr:
            if line.startswith("epoch 1/"):
                assert proc.poll() is None, "the run ended before Ctrl-C"
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert out == ""  # no result object for a run that did not end
    (run,) = runs.list_runs(tmp_path)
    status = runs.load_status(run.run_dir)
    assert status["status"] == "interrupted" and "Ctrl-C" in status["message"]
    assert len(runs.load_history(run.run_dir)) >= 1
    assert runs.best_model_path(run.run_dir).is_file()  # nothing already saved is lost


@pytest.mark.slow
def test_tensorflow_log_lines_show_only_with_verbose(tmp_path: Path) -> None:
    quiet, verbose = (
        cli("train", "--dataset", "mnist_sample", "--preset", "quick", "--limit", "200",
            "--epochs", "1", "--runs-dir", str(tmp_path), *extra)
        for extra in ((), ("--verbose",)))
    assert quiet.returncode == 0 and verbose.returncode == 0, quiet.stderr + verbose.stderr
    native = [line for line in verbose.stderr.splitlines()
              if is_native_log(line.encode())]
    # TensorFlow logs its start-up from C++ (no CUDA driver here, CPU features, oneDNN).
    assert native, verbose.stderr
    assert not [line for line in quiet.stderr.splitlines() if is_native_log(line.encode())
                or "cuda" in line.lower() or "oneDNN" in line], quiet.stderr
    # Everything the lab itself says still comes through, in order.
    assert quiet.stderr.startswith("run ") and "epoch 1/1" in quiet.stderr
    assert "test accuracy" in quiet.stdout


def test_the_log_filter_passes_on_all_but_native_lines(capfd: pytest.CaptureFixture) -> None:
    with native_logs_hidden():
        os.write(2, b"I0000 00:00:1796290941.850027   13738 cudart_stub.cc:31] Could not "
                    b"find cuda drivers on your machine, GPU will not be used.\n")
        os.write(2, b"a line from native code\n")
        os.write(2, b"E0000 00:00:1796290946.214950   13738 cuda_platform.cc:52] failed call "
                    b"to cuInit: INTERNAL: CUDA error: UNKNOWN ERROR (303)\n")
        print("progress from Python", file=sys.stderr)
    # The pipe's reader is a thread of its own: native lines may come after Python's.
    assert sorted(capfd.readouterr().err.splitlines()) == [
        "a line from native code", "progress from Python"]
