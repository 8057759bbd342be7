"""Real browser: a `streamlit run` server and Chromium drawing a digit on the predict page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_predict_page import make_run
from ui_steps import draw_stroke

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SEVEN = [(0.2, 0.15), (0.8, 0.15), (0.45, 0.9)]  # one stroke, in canvas fractions


@pytest.fixture(scope="module")
def server_runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The served runs root, holding one finished run (overrides conftest's empty one)."""
    root = tmp_path_factory.mktemp("browser-runs")
    make_run(root)
    return root


def test_draw_a_digit_and_see_the_prediction(streamlit_server: str, browser_page) -> None:
    page = browser_page
    page.goto(f"{streamlit_server}/predict")
    # The drawable canvas is a v2 component rendered in the page itself (no iframe).
    page.locator("canvas.upper-canvas").wait_for(timeout=90_000)
    page.get_by_text("Draw a digit on the black square").wait_for()
    draw_stroke(page, SEVEN)

    metric = page.locator('[data-testid="stMetric"]').filter(has_text="Prediction")
    metric.wait_for(timeout=30_000)
    value = metric.locator('[data-testid="stMetricValue"]').inner_text().strip()
    assert re.fullmatch(r"[0-9]", value), value
    assert "sure" in metric.locator('[data-testid="stMetricDelta"]').inner_text()
    bars = page.locator('[data-testid="stPlotlyChart"]').first
    bars.wait_for()
    assert bars.locator(".js-plotly-plot").count() == 1
    assert page.get_by_text("What the model sees").is_visible()

    page.get_by_role("button", name="Clear").click()
    metric.wait_for(state="detached", timeout=30_000)
    assert page.get_by_text("Draw a digit on the black square").is_visible()


def test_a_run_name_and_the_address_show_as_text(streamlit_server: str, server_runs_dir: Path,
                                                browser_page) -> None:
    """A run renamed to Markdown and a crafted ?run= are shown as typed: no link, no image,
    no colour; the page keeps working."""
    from cnnlab.runs import store as runs

    run = runs.list_runs(server_runs_dir)[0]
    evil = "[click](https:evil.example) ![i](x.png) :red[x] <b>b www.evil.example"
    runs.rename_run(server_runs_dir, run.run_id, evil)
    page = browser_page
    page.goto(f"{streamlit_server}/runs?run={run.run_id}")
    heading = page.get_by_role("heading", name=re.compile("click"))
    heading.wait_for(timeout=60_000)
    assert heading.inner_text().replace("\u2060", "").strip() == evil
    page.goto(f"{streamlit_server}/runs?run=%5Bx%5D(https://evil.example)")
    error = page.locator('[data-testid="stAlertContentError"]').first
    error.wait_for(timeout=60_000)
    assert "[x](https://evil.example)" in error.inner_text().replace("\u2060", "")
    assert page.locator('a[href*="evil.example"]').count() == 0
    assert page.locator('img[src*="evil.example"]').count() == 0
    assert page.locator(".stMarkdownColoredText").count() == 0
