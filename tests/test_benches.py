"""The training benches still run on today's API and print what they promise.

Smoke runs on a few hundred bundled images: no speed or accuracy target is checked here
(those are the benches' own job, by hand on a quiet machine); the benches broke once,
silently, when the fit settings moved, because nothing ran them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import ROOT, with_fit


def bench(*args: str) -> dict:
    """Run ``python -m bench.<args>``; its last stdout line as JSON."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_accuracy_bench_trains_two_seeds() -> None:
    from bench import accuracy
    from cnnlab.runs import store as runs

    out = bench("bench.accuracy", "--preset", "quick", "--dataset", "mnist_sample",
                "--limit", "300", "--epochs", "1", "--seeds", "42", "1")
    first, second = out["runs"]
    assert (first["seed"], second["seed"]) == (42, 1) and out["seeds"] == [42, 1]
    for run in out["runs"]:
        assert run["status"] == "finished" and run["epochs_run"] == 1
        assert runs.load_config(run["run_dir"])["seed"] == run["seed"]
        assert 0.0 <= run["test_accuracy"] <= 1.0 and run["seconds"] > 0
    mean = (first["test_accuracy"] + second["test_accuracy"]) / 2
    assert out["test_accuracy"] == pytest.approx(mean, abs=1e-5)
    assert out["seconds"] == max(first["seconds"], second["seconds"])
    # The machine names the vector units the run had: they set the speed (3-4× apart).
    assert out["machine"].startswith(f"{os.cpu_count()} CPU cores")
    one = first["test_accuracy"]
    assert accuracy.accuracy_cell(one, [one]) == f"{one:.2%}"


def test_accuracy_bench_names_the_cpu_and_writes_its_table(tmp_path: Path) -> None:
    """The bench's table logic, without a run (the fast loop's check of bench.accuracy)."""
    from bench import accuracy

    assert accuracy.vector_units("fpu avx avx2 fma") == "AVX2"
    assert accuracy.vector_units("avx2 avx512f avx512bw") == "AVX-512"
    assert accuracy.vector_units("avx2 avx512f avx512_bf16") == "AVX-512, bfloat16"
    assert accuracy.vector_units("sse2") == ""
    assert accuracy.accuracy_cell(0.9871, [0.9871]) == "98.71%"
    assert accuracy.accuracy_cell((0.9936 + 0.9953) / 2, [0.9936, 0.9953]) == (
        "99.45% (99.36, 99.53)")
    # The table: a measured row replaces its preset's; the others say they are not measured.
    results = tmp_path / "results.md"
    accuracy.write_results(results, {"quick": ["quick", "mnist", "goal", "3 of 3", "20",
                                               "98.81%", "2 CPU cores", "2026-11-29"]})
    rows = accuracy.read_rows(results)
    assert list(rows) == ["quick"] and rows["quick"][5] == "98.81%"
    text = results.read_text()
    assert text.count("not measured") == len(accuracy.TARGETS) - 1
    assert text.count("not measured here") == 1  # CIFAR-10: a GPU target


@pytest.mark.slow
def test_accuracy_bench_float32_trains_in_float32_on_a_bfloat16_cpu(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    from bench import accuracy
    from cnnlab.data import datasets
    from cnnlab.model import config
    from cnnlab.runs import store as runs
    from cnnlab.train import device, training

    # A CPU with native bfloat16, whatever this one has: the lab would train in bfloat16.
    native = replace(device.detect(), bfloat16=True)
    monkeypatch.setattr(device, "detect", lambda: native)
    monkeypatch.setattr(device, "cpuinfo", lambda field: {
        "flags": "avx2 avx512f avx512_bf16", "model name": "AMD EPYC"}[field])
    ds = datasets.load("mnist_sample")
    cfg = config.ModelConfig(blocks=(config.ConvBlock(filters=8, batch_norm=True),),
                             dense=(config.DenseLayer(16),))
    req = training.TrainRequest(**with_fit({
        "dataset": "mnist_sample", "config": cfg, "epochs": 1, "batch_size": 32,
        "patience": 0, "limit": 320}))
    assert training.compute_policy(req, device.detect()) == "mixed_bfloat16"
    assert accuracy.machine().endswith("(AVX-512, bfloat16)")

    accuracy.train_in_float32()  # --float32
    run_dir = runs.create_run(tmp_path, training.run_config(req, ds))
    assert training.train_run(req, ds, run_dir, evaluate=False).status == "finished"
    assert "bfloat16" not in runs.load_status(run_dir)["device"]
    trained = keras.models.load_model(run_dir / "last.keras", safe_mode=True)
    assert {layer.dtype_policy.name for layer in trained.layers} == {"float32"}
    # Its row in the table says so: the CPU had bfloat16, the run did not use it.
    assert accuracy.machine().endswith("(AVX-512, float32)")


@pytest.mark.slow
def test_overhead_bench_prints_the_ratio_its_interval_and_a_control() -> None:
    out = bench("bench.overhead", "--dataset", "mnist_sample", "--limit", "200",
                "--epochs", "3", "--pairs", "1")
    assert out["pairs"] == 1 and len(out["ratios"]) == len(out["control_ratios"]) == 1
    assert out["ci_low"] <= out["ratio"] <= out["ci_high"]
    assert out["control_ci_low"] <= out["control"] <= out["control_ci_high"]
    assert out["bare_epoch_s"] > 0 and out["lab_epoch_s"] > 0


@pytest.mark.slow
def test_batch_norm_bench_prints_the_speed_up_its_interval_and_a_control() -> None:
    out = bench("bench.batch_norm", "--limit", "200", "--epochs", "2", "--pairs", "1")
    assert out["preset"] == "best-mnist" and out["pairs"] == 1
    assert len(out["ratios"]) == len(out["control_ratios"]) == 1
    assert out["ci_low"] <= out["ratio"] <= out["ci_high"]
    assert out["control_ci_low"] <= out["control"] <= out["control_ci_high"]
    assert out["keras_epoch_s"] > 0 and out["fused_epoch_s"] > 0


@pytest.mark.slow
def test_throughput_bench_measures_one_run_either_way() -> None:
    before = bench("bench.throughput", "--one", "--before", "--limit", "200", "--epochs", "2")
    today = bench("bench.throughput", "--one", "--limit", "200", "--epochs", "2")
    assert before["steps_per_execution"] == 1
    assert today["steps_per_execution"] >= 1
    assert before["samples_per_s"] > 0 and today["samples_per_s"] > 0
    assert 0 < today["pct_peak"] < 100
    from cnnlab.train import device  # today's path computes in bfloat16 where the CPU has it

    assert before["bfloat16"] is False and today["bfloat16"] is device.detect().bfloat16
    # The threads part's variant reaches the run's own process.
    from bench import throughput

    assert today["inter_op_threads"] == "default"
    one_thread = throughput.spawn("quick", 200, 1, env={"TF_NUM_INTEROP_THREADS": "1"})
    assert one_thread["inter_op_threads"] == "1" and one_thread["samples_per_s"] > 0


@pytest.mark.slow
def test_own_images_bench_trains_an_upload_with_the_offered_defaults() -> None:
    # Its smallest settings: 16×16 shapes (the Train page's upload test's size), no settling.
    out = bench("bench.own_images", "--skip-fashion", "--size", "16", "--settle", "0")["shapes"]
    assert out["preset"] == "own-images" and out["status"] == "finished"
    assert out["images"] == {"train": 96, "test": 24}
    assert 1 <= out["epochs_run"] <= out["epochs_offered"]
    assert 0.0 <= out["test_accuracy"] <= 1.0 and out["seconds"] > 0


@pytest.mark.slow
def test_page_cost_bench_times_every_page() -> None:
    out = bench("bench.page_cost", "--runs", "2")
    assert set(out["pages"]) == {"Home", "Explore", "Configure", "Train", "Draw & predict",
                                 "Runs"}
    for page, cost in out["pages"].items():
        assert cost["errors"] == 0, page
        assert 0 < cost["p50_ms"] <= cost["p95_ms"], page
    assert out["machine"].startswith(f"{os.cpu_count()} CPU cores")
