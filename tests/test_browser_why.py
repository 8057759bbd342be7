"""Real browser: draw a digit, open "Why did it decide this?" and see the saliency overlay."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TEST_OUTPUT
from test_browser import SEVEN
from test_predict_page import make_run
from ui_steps import draw_stroke

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def server_runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The served runs root, holding one finished run (overrides conftest's empty one)."""
    root = tmp_path_factory.mktemp("browser-why-runs")
    make_run(root)
    return root


def test_draw_then_open_why_and_see_the_overlay(streamlit_server: str, browser_page) -> None:
    page = browser_page
    page.goto(f"{streamlit_server}/predict")
    page.locator("canvas.upper-canvas").wait_for(timeout=90_000)
    draw_stroke(page, SEVEN)
    page.locator('[data-testid="stMetric"]').filter(has_text="Prediction").wait_for(
        timeout=30_000)

    why = page.locator('[data-testid="stExpander"]').filter(has_text="Why did it decide this?")
    assert why.locator("img").count() == 0  # closed: nothing computed or sent
    why.get_by_text("Why did it decide this?").click()
    overlay = why.locator('[data-testid="stImage"] img')
    overlay.wait_for(timeout=30_000)
    assert why.get_by_text("Grad-CAM on layer").is_visible()
    size = overlay.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert size == [168, 168], size  # 28×28 input, 6× pixel for pixel
    TEST_OUTPUT.mkdir(exist_ok=True)
    why.screenshot(path=str(TEST_OUTPUT / "why_grad_cam.png"))

    why.get_by_text("occlusion", exact=True).click()
    why.get_by_text("Occlusion: bright where covering").wait_for(timeout=30_000)
    why.screenshot(path=str(TEST_OUTPUT / "why_occlusion.png"))  # for a person to look at
