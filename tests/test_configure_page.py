"""AppTest of the Configure page: live parameter count, presets, validation, no TensorFlow."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from streamlit.testing.v1 import AppTest

from cnnlab.model.config import PRESETS, ModelConfig
from cnnlab.model.models import total_params
from pages import state
from tests.conftest import APPTEST_TIMEOUT, ROOT

PAGE = str(ROOT / "pages" / "configure.py")


@pytest.fixture
def at(runs_root) -> AppTest:
    app = AppTest.from_file(PAGE, default_timeout=APPTEST_TIMEOUT)
    app.session_state[state.DATASET_KEY] = "mnist_sample"
    return app.run()


def params(app: AppTest) -> int:
    return int(app.metric[0].value.replace(",", ""))


def test_first_render_shows_default_preset(at: AppTest) -> None:
    assert not at.exception
    assert at.session_state[state.PRESET_NAME_KEY] == "quick"
    assert isinstance(at.session_state[state.MODEL_CONFIG_KEY], ModelConfig)
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
    assert at.session_state[state.MODEL_CONFIG_KEY].blocks[0].filters == 64
    assert at.session_state[state.PRESET_NAME_KEY] == "custom"
    at.select_slider(key="cfg0_d1_units").set_value(256).run()
    assert params(at) > after


def test_picking_a_preset_loads_it(at: AppTest) -> None:
    at.selectbox(key="cfg_preset").set_value("seed000-mnist").run()
    assert not at.exception
    assert params(at) == 1_625_866
    assert at.session_state[state.MODEL_CONFIG_KEY] == PRESETS["seed000-mnist"].config
    assert at.session_state[state.PRESET_NAME_KEY] == "seed000-mnist"
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


def test_random_erasing_slider_sets_the_chance(at: AppTest) -> None:
    assert at.slider(key="cfg0_erase").value == 0.0  # quick does not erase
    at.slider(key="cfg0_erase").set_value(0.5).run()
    assert not at.exception and not at.error
    assert at.session_state[state.MODEL_CONFIG_KEY].augmentation.erase == 0.5
    assert at.session_state[state.PRESET_NAME_KEY] == "custom"


def test_flip_on_digits_is_a_warning_only(at: AppTest) -> None:
    at.toggle(key="cfg0_flip").set_value(True).run()
    assert any("flip" in w.value for w in at.warning)
    assert not at.button(key="cfg_train").disabled


def test_over_budget_model_disables_train_with_the_reason(runs_root, monkeypatch) -> None:
    monkeypatch.setenv("CNNLAB_MAX_PARAMS", "100000")
    app = AppTest.from_file(PAGE, default_timeout=APPTEST_TIMEOUT)
    app.session_state[state.DATASET_KEY] = "mnist_sample"
    app.run()
    assert not app.exception
    text = " ".join(e.value for e in app.error)
    assert "will not train it" in text and "114,314 parameters" in text
    assert "at most 100,000" in text
    assert app.button(key="cfg_train").disabled


# --------------------------------------------------------------------------- the address


def address(app: AppTest, param: str) -> str | None:
    """``?param=`` after the last run (AppTest keeps lists before Streamlit 1.6x)."""
    value = app.query_params.get(param)
    return value[-1] if isinstance(value, list) else value


def open_at(**params: str) -> AppTest:
    app = AppTest.from_file(PAGE, default_timeout=APPTEST_TIMEOUT)
    for key, value in params.items():
        app.query_params[key] = value
    return app.run()


def test_the_address_opens_a_data_set_and_a_preset(runs_root) -> None:
    app = open_at(dataset="mnist_sample", preset="seed000-mnist")
    assert not app.exception and not app.warning
    assert app.selectbox(key="configure_dataset").value == "mnist_sample"
    assert app.selectbox(key="cfg_preset").value == "seed000-mnist"
    assert params(app) == 1_625_866
    assert app.session_state[state.PRESET_NAME_KEY] == "seed000-mnist"

    # A new address wins once; then the user's edits stand (no reset on the next run).
    version = app.session_state[state.CONFIG_VERSION_KEY]
    app.select_slider(key=f"cfg{version}_b1_filters").set_value(64).run()
    assert app.session_state[state.PRESET_NAME_KEY] == "custom"
    app.run()
    assert app.session_state[state.MODEL_CONFIG_KEY].blocks[0].filters == 64
    assert address(app, "preset") == "seed000-mnist"  # the picker still shows it


def test_changing_the_preset_or_data_set_updates_the_address(at: AppTest) -> None:
    assert address(at, "preset") == "quick" and address(at, "dataset") == "mnist_sample"
    at.selectbox(key="cfg_preset").set_value("seed000-mnist").run()
    assert address(at, "preset") == "seed000-mnist"
    at.selectbox(key="configure_dataset").set_value("cifar10").run()
    assert not at.exception
    assert address(at, "dataset") == "cifar10"
    assert address(at, "preset") == "seed000-mnist"


def test_unknown_names_in_the_address_are_warnings(runs_root) -> None:
    app = open_at(dataset="imagenet", preset="<b>huge</b>")
    assert not app.exception
    text = " ".join(w.value for w in app.warning)
    assert "'imagenet'" in text and "does not have" in text
    assert "does not exist" in text and not re.search(r"(?<!\\)<", text)  # text, not HTML
    assert app.selectbox(key="cfg_preset").value in PRESETS
    assert address(app, "preset") == app.selectbox(key="cfg_preset").value


# --------------------------------------------------------------------------- a pretrained backbone

BACKBONE = "MobileNetV3Small"


def metric_value(app: AppTest, label: str) -> int:
    return int(next(m for m in app.metric if m.label == label).value.replace(",", ""))


def error_text(app: AppTest) -> str:
    from tests.conftest import plain

    return " ".join(plain(e.value) for e in app.error)


@pytest.fixture
def online(monkeypatch) -> None:
    """Keras' weights host answers (no probe): ImageNet weights are always to be had."""
    from cnnlab.model import backbones

    monkeypatch.setattr(backbones, "online", lambda: True)


def with_backbone(app: AppTest, name: str = BACKBONE) -> AppTest:
    """``app`` with backbone ``name`` and batches of 32: the quick preset's 128 images of
    224×224 would exceed the default activation budget."""
    app.select_slider(key="cfg0_batch_size").set_value(32)
    app.selectbox(key="cfg0_backbone").set_value(name).run()
    assert not app.exception, app.exception
    return app


def test_picking_a_backbone_puts_it_frozen_in_the_table_and_metrics(at: AppTest,
                                                                      online) -> None:
    from cnnlab.model import backbones

    frozen = backbones.BACKBONES[BACKBONE].params
    with_backbone(at)
    config = at.session_state[state.MODEL_CONFIG_KEY]
    assert config.backbone == BACKBONE and config.blocks == ()
    assert not [n for n in at.number_input if n.key == "cfg0_n_blocks"]  # no conv blocks now
    table = at.dataframe[0].value.set_index("layer")
    assert table.loc["backbone", "type"] == BACKBONE
    assert table.loc["backbone", "params"] == table.loc["backbone", "frozen"] == frozen
    assert table.loc["backbone", "trainable"] == 0
    total = total_params(config, (28, 28, 1), 10)
    assert params(at) == total
    assert metric_value(at, "Frozen") == frozen
    assert metric_value(at, "Trainable") == total - frozen == table["trainable"].sum()
    dot = at.get("graphviz_chart")[0].proto.spec
    assert "pretrained backbone" in dot and f"{frozen:,} params" in dot
    assert "frozen in phase 1" in dot
    assert at.session_state[state.WEIGHTS_KEY] == state.IMAGENET
    assert not at.error and not at.button(key="cfg_train").disabled

    at.selectbox(key="cfg0_backbone").set_value("").run()  # back to conv blocks
    assert not at.exception and not at.error
    assert at.session_state[state.MODEL_CONFIG_KEY].blocks
    assert metric_value(at, "Frozen") == sum(  # only BatchNorm statistics, if any
        2 * b.filters * b.convs for b in at.session_state[state.MODEL_CONFIG_KEY].blocks
        if b.batch_norm)


def test_phase_two_settings_reach_the_config_and_fit(at: AppTest, online) -> None:
    with_backbone(at)
    assert at.slider(key="cfg0_fine_tune_epochs").disabled  # nothing unfrozen yet
    at.slider(key="cfg0_unfreeze").set_value(20).run()
    at.slider(key="cfg0_fine_tune_epochs").set_value(4).run()
    at.select_slider(key="cfg0_lr_factor").set_value(0.01).run()
    assert not at.exception and not at.error
    config = at.session_state[state.MODEL_CONFIG_KEY]
    assert (config.unfreeze, config.fine_tune_lr_factor) == (20, 0.01)
    assert at.session_state[state.FIT_SETTINGS_KEY].fine_tune_epochs == 4


def test_imagenet_offline_without_the_file_says_which_file_where(runs_root, tmp_path,
                                                                 monkeypatch) -> None:
    from cnnlab.model import backbones

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(backbones, "online", lambda: False)
    app = AppTest.from_file(PAGE, default_timeout=APPTEST_TIMEOUT)
    app.session_state[state.DATASET_KEY] = "mnist_sample"
    with_backbone(app.run())
    wanted = (f"ImageNet weights for {BACKBONE} are not here and the internet is not "
              f"reachable: put {backbones.BACKBONES[BACKBONE].imagenet_file} into "
              f"{tmp_path / 'keras' / 'models'}, or choose a weights file.")
    assert wanted in error_text(app)
    assert app.button(key="cfg_train").disabled
    app.radio(key="cfg0_weights_source").set_value("none").run()  # random weights need nothing
    assert not app.error and not app.button(key="cfg_train").disabled
    assert app.session_state[state.WEIGHTS_KEY] is None


def test_a_weights_file_that_does_not_exist_is_refused(at: AppTest, tmp_path, online) -> None:
    with_backbone(at)
    at.radio(key="cfg0_weights_source").set_value("file").run()
    assert "Type the path of a weights file" in error_text(at)
    assert at.button(key="cfg_train").disabled
    missing = tmp_path / "nope.weights.h5"
    at.text_input(key="cfg0_weights_path").set_value(str(missing)).run()
    assert not at.exception
    assert "does not exist on the server" in error_text(at)
    assert at.button(key="cfg_train").disabled
    not_hdf5 = tmp_path / "notes.weights.h5"
    not_hdf5.write_text("not weights")
    at.text_input(key="cfg0_weights_path").set_value(str(not_hdf5)).run()
    assert "is not an HDF5 weights file" in error_text(at)
    assert at.session_state[state.WEIGHTS_KEY] == str(not_hdf5)  # Train sees it and refuses too


def test_opening_the_backbone_lists_its_stages_in_table_and_diagram(at: AppTest,
                                                                    online) -> None:
    with_backbone(at, "VGG16")
    at.slider(key="cfg0_unfreeze").set_value(4).run()
    at.toggle(key="cfg_open_backbone").set_value(True).run()
    assert not at.exception, at.exception
    stages = at.dataframe[1].value
    assert list(stages["stage"]) == ["input", "block1", "block2", "block3", "block4", "block5"]
    assert stages["params"].sum() == 14_714_688
    # The top 4 layers: block5's three convs and its pool (which has no weights).
    assert list(stages["trained in phase 2"]) == [0, 0, 0, 0, 0, 4]
    dot = at.get("graphviz_chart")[0].proto.spec
    assert "subgraph cluster_" in dot and "block5 · 4 layers → 7×7×512" in dot
    assert "4 trained in phase 2" in dot


def test_page_with_a_backbone_does_not_import_tensorflow() -> None:
    code = (
        "import sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        "from cnnlab.model import backbones\n"
        "backbones.online = lambda: False\n"
        f"at = AppTest.from_file({PAGE!r}, default_timeout=60).run()\n"
        f"at.selectbox(key='cfg0_backbone').set_value({BACKBONE!r}).run()\n"
        "assert not at.exception, at.exception\n"
        "assert at.dataframe[0].value['layer'].tolist().count('backbone') == 1\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
