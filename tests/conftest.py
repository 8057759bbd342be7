"""Shared pytest set-up: repo on sys.path, KERAS_HOME on the shared data, fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_KERAS = ROOT.parent / "shared" / "keras"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# Tests read the real data sets from ../shared/keras when it is there (CI sets it too).
if "KERAS_HOME" not in os.environ and SHARED_KERAS.is_dir():
    os.environ["KERAS_HOME"] = str(SHARED_KERAS)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Pages that import Keras need more than AppTest's default 3 s.
APPTEST_TIMEOUT = 120


def has_real_mnist() -> bool:
    """True when the full MNIST IDX files are reachable through KERAS_HOME."""
    home = os.environ.get("KERAS_HOME")
    return bool(home) and (Path(home) / "datasets" / "mnist" / "train-images-idx3-ubyte.gz").is_file()


@pytest.fixture
def runs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty runs root, also exported as CNNLAB_RUNS_DIR for pages under test."""
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("CNNLAB_RUNS_DIR", str(root))
    return root
