"""Real browser: on Runs, a click on a confusion-matrix cell opens that cell's test images.

Streamlit's point selection ignores heatmap clicks, so the figure carries an invisible
marker on each cell centre (charts.confusion_figure); this test clicks where a person would
and checks the page answers with the grid. A screenshot is kept in test-output/.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import TEST_OUTPUT
from test_predict_page import make_run
from ui_steps import SLOW, settle

from cnnlab.runs import predictions
from cnnlab.runs import store as runs

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def server_runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The served runs root, holding one finished run (overrides conftest's empty one)."""
    root = tmp_path_factory.mktemp("browser-insight-runs")
    make_run(root)
    return root


def centre(locator) -> tuple[float, float]:
    """The page coordinates of the middle of ``locator``'s first match."""
    box = locator.first.bounding_box()
    assert box is not None, locator
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def test_clicking_a_confusion_cell_shows_its_test_images(streamlit_server: str,
                                                         server_runs_dir: Path,
                                                         browser_page) -> None:
    run = runs.list_runs(server_runs_dir)[0]
    cm = np.array(runs.load_metrics(run.run_dir)["confusion"])
    wrong = cm.copy()
    np.fill_diagonal(wrong, -1)
    i, j = (int(v) for v in np.unravel_index(wrong.argmax(), cm.shape))
    n_cell = len(predictions.cell_examples(predictions.load(run.run_dir), i, j))
    assert n_cell == cm[i, j] > 0

    page = browser_page
    page.goto(f"{streamlit_server}/runs?run={run.run_id}")
    chart = page.locator(".st-key-runs_confusion .js-plotly-plot")
    chart.wait_for(timeout=SLOW)
    settle(page)
    chart.scroll_into_view_if_needed()
    # The cell under column j's tick label and beside row i's: the square cells need not
    # fill the plot area, so its width divided by 10 can land a column off.
    x, _ = centre(chart.locator(".xtick text").filter(has_text=re.compile(f"^{j}$")))
    _, y = centre(chart.locator(".ytick text").filter(has_text=re.compile(f"^{i}$")))
    page.mouse.click(x, y)
    grid = page.locator(".st-key-runs_cell_grid .js-plotly-plot")
    grid.wait_for(timeout=60_000)
    settle(page)
    # The click picked the cell: its caption names it (the selectboxes follow the click).
    caption = page.locator('[data-testid="stCaptionContainer"]').filter(
        has_text=f"{n_cell} test image(s) of {i} predicted {j}")
    assert caption.is_visible()
    assert grid.locator(".annotation-text").count() == min(n_cell, 24)

    TEST_OUTPUT.mkdir(exist_ok=True)  # the matrix with the picked cell, then the grid
    page.screenshot(path=str(TEST_OUTPUT / "insight_cell_click.png"))
    grid.scroll_into_view_if_needed()
    page.screenshot(path=str(TEST_OUTPUT / "insight_cell_grid.png"))
