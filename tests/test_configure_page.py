"""AppTest of the Configure page: live parameter count, presets, validation, no TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import pytest
from streamlit.testing.v1 import AppTest

from cnnlab.config import PRESETS, ModelConfig
from cnnlab.models import total_params
from tests.conftest import APPTEST_TIMEOUT, ROOT

PAGE = str(ROOT / "pages" / "configure.py")


@pytest.fixture
def at(runs_root) -> AppTest:
    app = AppTest.from_file(PAGE, default_timeout=APPTEST_TIMEOUT)
    app.session_state["dataset_name"] = "mnist_sample"
    return app.run()


def params(app: AppTest) -> int:
    return int(app.metric[0].value.replace(",", ""))


def test_first_render_shows_default_preset(at: AppTest) -> None:
    assert not at.exception
    assert at.session_state["preset_name"] == "quick"
    assert isinstance(at.session_state["model_config"], ModelConfig)
    assert params(at) == total_params(PRESETS["quick"].config, (28, 28, 1), 10)
    assert not at.error
    assert not at.button(key="cfg_train").disabled


def test_page_does_not_import_tensorflow() -> None:
    code = (
        "import sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({PAGE!r}, default_timeout=60).run()\n"
        "assert not at.exception, at.exception\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_changing_a_slider_changes_the_param_total(at: AppTest) -> None:
    before = params(at)
    at.select_slider(key="cfg0_b1_filters").set_value(64).run()
    after = params(at)
    assert after != before
    assert at.session_state["model_config"].blocks[0].filters == 64
    assert at.session_state["preset_name"] == "custom"
    at.select_slider(key="cfg0_d1_units").set_value(256).run()
    assert params(at) > after


def test_picking_a_preset_loads_it(at: AppTest) -> None:
    at.selectbox(key="cfg_preset").set_value("seed000-mnist").run()
    assert not at.exception
    assert params(at) == 1_625_866
    assert at.session_state["model_config"] == PRESETS["seed000-mnist"].config
    assert at.session_state["preset_name"] == "seed000-mnist"
    # Widgets restart from the preset's values under a new key version.
    assert at.number_input(key="cfg1_n_blocks").value == 2


def test_invalid_config_shows_error_and_disables_training(at: AppTest) -> None:
    at.number_input(key="cfg0_n_blocks").set_value(5).run()  # 28→14→7→3→1, then pool on 1×1
    assert not at.exception
    assert at.error, "expected a validation error"
    assert "block 5" in at.error[0].value and "1×1 before a 2×2 pool" in at.error[0].value
    assert at.button(key="cfg_train").disabled
    at.number_input(key="cfg0_n_blocks").set_value(3).run()
    assert not at.error
    assert not at.button(key="cfg_train").disabled


def test_flip_on_digits_is_a_warning_only(at: AppTest) -> None:
    at.toggle(key="cfg0_flip").set_value(True).run()
    assert any("flip" in w.value for w in at.warning)
    assert not at.button(key="cfg_train").disabled


def test_over_budget_model_disables_train_with_the_reason(runs_root, monkeypatch) -> None:
    monkeypatch.setenv("CNNLAB_MAX_PARAMS", "100000")
    app = AppTest.from_file(PAGE, default_timeout=APPTEST_TIMEOUT)
    app.session_state["dataset_name"] = "mnist_sample"
    app.run()
    assert not app.exception
    text = " ".join(e.value for e in app.error)
    assert "will not train it" in text and "105,866 parameters" in text
    assert "at most 100,000" in text
    assert app.button(key="cfg_train").disabled
