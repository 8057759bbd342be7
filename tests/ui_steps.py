"""Steps that drive a served CNN Lab page in Chromium (playwright's sync API).

Shared by the browser tests and ``bench/engine.py`` (as ``tests.ui_steps``), so it imports
nothing from the test modules or conftest.
"""

from __future__ import annotations

import time

from playwright.sync_api import TimeoutError as PlaywrightTimeout

SLOW = 90_000  # ms: the first visit of a page that imports Keras


def settle(page) -> None:
    """Wait for the script run that the last interaction started to finish."""
    page.wait_for_timeout(250)
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(
        timeout=SLOW)


def open_selectbox(page, label: str) -> None:
    """Open the dropdown of the selectbox labelled ``label`` (scrolled into view first: a
    scroll after opening would close it again).

    Clicked up to three times: a rerun that redraws the page (a run finishing, a live
    fragment) can swallow the click or close the list before it shows (seen under load on
    the Runs page: no option for 30 s)."""
    field = page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first.locator(
        "input")
    for attempt in range(3):
        settle(page)
        field.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        field.click()
        try:
            page.get_by_role("option").first.wait_for(timeout=10_000)
            return
        except PlaywrightTimeout:
            if attempt == 2:
                raise
            page.keyboard.press("Escape")


def pick(page, label: str, option: str) -> None:
    """Choose ``option`` in the selectbox labelled ``label``."""
    open_selectbox(page, label)
    page.get_by_role("option", name=option).first.click()


def set_number(page, label: str, value: int) -> None:
    """Type ``value`` into the number input labelled ``label`` and wait for its rerun.

    Typed up to three times: a rerun started by the step before (a preset picked) can land
    after settle() saw the page idle and redraw the field with the preset's value (seen
    under load: Epochs back at 4). A field that never keeps the value still fails."""
    box = page.locator('[data-testid="stNumberInput"]').filter(has_text=label).first
    field = box.locator("input")
    for _ in range(3):
        field.fill(str(value))
        field.press("Enter")
        settle(page)
        if field.input_value() == str(value):
            return
    raise AssertionError((label, field.input_value()))


def load_explore(page, url: str) -> float:
    """Seconds from opening Explore to its last chart drawn."""
    t0 = time.perf_counter()
    page.goto(f"{url}/explore")
    page.get_by_role("heading", name="Pixel intensities").wait_for(timeout=SLOW)
    page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').nth(3).wait_for(
        timeout=SLOW)
    return time.perf_counter() - t0


def draw_stroke(page, points: list[tuple[float, float]], steps: int = 6,
                jitter: float = 0.0) -> None:
    """Mouse down on the drawing canvas, move through ``points`` (fractions of the canvas,
    each shifted by ``jitter``), mouse up."""
    box = page.locator("canvas.upper-canvas").bounding_box()
    assert box is not None, "the canvas is not on screen"

    def at(fx: float, fy: float) -> tuple[float, float]:
        return (box["x"] + (fx + jitter) * box["width"],
                box["y"] + (fy + jitter) * box["height"])

    page.mouse.move(*at(*points[0]))
    page.mouse.down()
    for (xa, ya), (xb, yb) in zip(points, points[1:], strict=False):
        for k in range(1, steps + 1):
            f = k / steps
            page.mouse.move(*at(xa + f * (xb - xa), ya + f * (yb - ya)))
    page.mouse.up()
