"""Server-wide Streamlit behaviours the lab overrides (see pages/common.py)."""

from __future__ import annotations

import keras
import pytest
from conftest import APPTEST_TIMEOUT, ROOT
from streamlit.testing.v1 import AppTest


def test_page_runs_do_not_clear_the_keras_session(monkeypatch: pytest.MonkeyPatch) -> None:
    # Streamlit clears the Keras session after every script run: with a model loaded for
    # Draw & predict that made each prediction after a rerun ~35x slower.
    calls: list[int] = []
    monkeypatch.setattr(keras.backend, "clear_session", lambda *a, **k: calls.append(1))
    at = AppTest.from_file(str(ROOT / "pages" / "explore.py"), default_timeout=APPTEST_TIMEOUT)
    at.run()
    at.run()
    assert not at.exception
    assert calls == []
