"""Real browser: light and dark mode, and a phone (390 px wide, touch) on every page.

Screenshots land in each test's tmp_path (light-*.png, dark-*.png, phone-*.png) for a look.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect
from test_predict_page import make_run

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
         "device_scale_factor": 3}
PAGES = {"home": "", "explore": "explore", "configure": "configure", "train": "train",
         "predict": "predict", "runs": "runs"}
SEVEN = [(0.2, 0.15), (0.8, 0.15), (0.45, 0.9)]  # one stroke, in canvas fractions
SLOW = 90_000  # ms: the first visit of a page imports Keras or loads a data set


@pytest.fixture(scope="module")
def server_runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The served runs root, holding one finished run, so Draw & predict has a model."""
    root = tmp_path_factory.mktemp("theme-runs")
    make_run(root)
    return root


def rgba(css: str) -> tuple[float, float, float, float]:
    """A computed CSS colour as 0..1 floats: ``rgb(…)``/``rgba(…)`` (0–255 channels) or
    ``color(srgb r g b / a)`` (0–1 channels; what ``color-mix`` computes to)."""
    nums = [float(v) for v in re.findall(r"[\d.]+", css)]
    scale = 1.0 if css.startswith("color(") else 255.0
    r, g, b = (v / scale for v in nums[:3])
    return r, g, b, nums[3] if len(nums) > 3 else 1.0


def luminance(css: str) -> float:
    """WCAG relative luminance of an opaque CSS colour."""
    def lin(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b, _ = rgba(css)
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)


def contrast(ink: str, background: str) -> float:
    """WCAG contrast ratio of ``ink`` (its alpha blended onto) an opaque ``background``
    (1 = none, 21 = black on white)."""
    r, g, b, a = rgba(ink)
    br, bg, bb, _ = rgba(background)
    blended = f"rgb({(a * r + (1 - a) * br) * 255}, {(a * g + (1 - a) * bg) * 255}, " \
              f"{(a * b + (1 - a) * bb) * 255})"
    hi, lo = sorted((luminance(blended), luminance(background)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def settle(page) -> None:
    """Wait until the script run is over and the page has painted (the status widget is no
    sign: it also shows "File change" while someone edits the app)."""
    page.locator("h1").first.wait_for(timeout=SLOW)
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(
        timeout=SLOW)
    page.wait_for_timeout(500)


def app_background(page) -> str:
    return page.evaluate(
        "getComputedStyle(document.querySelector('[data-testid=\"stApp\"]')).backgroundColor")


def open_page(browser, url: str, **context_args):
    context = browser.new_context(**context_args)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    return context, page


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_theme_follows_the_browser(scheme: str, streamlit_server: str, _chromium,
                                       tmp_path: Path) -> None:
    """The OS/browser preference picks the theme; charts, tables, the diagram and the canvas
    toolbar stay readable; the ⋮ menu offers the other theme."""
    context, page = open_page(_chromium, f"{streamlit_server}/explore", color_scheme=scheme,
                              viewport={"width": 1280, "height": 900})
    try:
        page.locator('[data-testid="stPlotlyChart"] .xtick text').first.wait_for(timeout=SLOW)
        settle(page)
        background = app_background(page)
        assert (luminance(background) > 0.8) if scheme == "light" else (
            luminance(background) < 0.05), background
        tick = page.locator('[data-testid="stPlotlyChart"] .xtick text').first
        ink = tick.evaluate("e => getComputedStyle(e).fill")
        # 3:1, WCAG's bar for chart graphics: Streamlit's plotly theme greys the axis
        # labels (3.7:1 on white); a black-on-dark label would be about 1:1.
        assert contrast(ink, background) >= 3, (ink, background)
        page.screenshot(path=str(tmp_path / f"{scheme}-explore.png"), full_page=True)
        samples = page.locator('[data-testid="stPlotlyChart"]').nth(1)  # captioned images
        samples.scroll_into_view_if_needed()
        samples.screenshot(path=str(tmp_path / f"{scheme}-explore-samples.png"))

        page.goto(f"{streamlit_server}/configure")
        settle(page)
        page.get_by_role("tab", name="Diagram").click()
        page.locator('[data-testid="stGraphVizChart"] svg').wait_for()
        page.screenshot(path=str(tmp_path / f"{scheme}-configure.png"), full_page=True)

        page.goto(f"{streamlit_server}/train")
        settle(page)
        page.screenshot(path=str(tmp_path / f"{scheme}-train.png"), full_page=True)

        page.goto(f"{streamlit_server}/predict")
        canvas = page.locator("canvas.upper-canvas")
        canvas.wait_for(timeout=SLOW)
        settle(page)
        canvas.hover()  # the toolbar (undo, redo, reset) shows while the pointer is over it
        undo = page.get_by_role("button", name="Undo")
        # The canvas lives in a shadow root (isolated styles): locators reach it, querySelector not.
        expect(page.locator(".dc-toolbar")).to_have_css("opacity", "1")
        assert undo.is_visible()
        card = page.locator(".dc-toolbar-card")
        # Undo is disabled (greyed on purpose) on an empty canvas: its enabled icons inherit
        # the card's colour.
        icon_ink = card.evaluate("e => getComputedStyle(e).color")
        card_bg = card.evaluate("e => getComputedStyle(e).backgroundColor")
        assert contrast(icon_ink, card_bg) >= 3, (icon_ink, card_bg)  # WCAG: icons 3:1
        page.screenshot(path=str(tmp_path / f"{scheme}-predict.png"), full_page=True)

        page.goto(f"{streamlit_server}/runs")
        settle(page)
        page.screenshot(path=str(tmp_path / f"{scheme}-runs.png"), full_page=True)

        # The user's own choice in ⋮ → theme overrides the browser's preference.
        other = "Dark" if scheme == "light" else "Light"
        page.get_by_test_id("stMainMenu").click()
        page.get_by_test_id(f"stMainMenuItem-theme-{other}").click()
        page.wait_for_function(
            "light => { const c = getComputedStyle(document.querySelector("
            "'[data-testid=\"stApp\"]')).backgroundColor.match(/\\d+/g).map(Number);"
            " return (c[0] + c[1] + c[2] > 382) === light; }", arg=other == "Light")
    finally:
        print(f"screenshots: {tmp_path}")
        context.close()


def touch_stroke(page, points: list[tuple[float, float]], steps: int = 6) -> None:
    """One finger down, through ``points`` (fractions of the canvas), up: real touch events
    through the DevTools protocol, as a phone's touchscreen sends them."""
    box = page.locator("canvas.upper-canvas").bounding_box()
    cdp = page.context.new_cdp_session(page)

    def touch(kind: str, fx: float, fy: float) -> None:
        spot = [] if kind == "touchEnd" else [
            {"x": box["x"] + fx * box["width"], "y": box["y"] + fy * box["height"], "id": 1}]
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": spot})

    touch("touchStart", *points[0])
    for (xa, ya), (xb, yb) in zip(points, points[1:], strict=False):
        for k in range(1, steps + 1):
            f = k / steps
            touch("touchMove", xa + f * (xb - xa), ya + f * (yb - ya))
    touch("touchEnd", *points[-1])
    cdp.detach()


def test_a_phone_draws_a_digit_by_touch(streamlit_server: str, _chromium,
                                        tmp_path: Path) -> None:
    context, page = open_page(_chromium, f"{streamlit_server}/predict", **PHONE)
    try:
        canvas = page.locator("canvas.upper-canvas")
        canvas.wait_for(timeout=SLOW)
        settle(page)
        canvas.scroll_into_view_if_needed()
        touch_stroke(page, SEVEN)
        metric = page.locator('[data-testid="stMetric"]').filter(has_text="Prediction")
        metric.wait_for(timeout=30_000)
        value = metric.locator('[data-testid="stMetricValue"]').inner_text().strip()
        assert re.fullmatch(r"[0-9]", value), value
        page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').first.wait_for()
        settle(page)
        page.screenshot(path=str(tmp_path / "phone-predict-drawn.png"), full_page=True)
        metric.scroll_into_view_if_needed()
        page.screenshot(path=str(tmp_path / "phone-predict-result.png"))
        assert page.evaluate("document.documentElement.scrollWidth") <= 392
    finally:
        print(f"screenshots: {tmp_path}")
        context.close()


def test_every_page_fits_a_phone(streamlit_server: str, _chromium, tmp_path: Path) -> None:
    """390 px wide: no sideways scrolling of any page, each title in view (one phone visits
    every page in turn: a fresh browser context per page would compile the app's scripts
    again each time, ~2 CPU-s)."""
    context, page = open_page(_chromium, "about:blank", **PHONE)
    misfits = []
    try:
        for name, path in PAGES.items():
            page.goto(f"{streamlit_server}/{path}")
            settle(page)
            page.screenshot(path=str(tmp_path / f"phone-{name}.png"), full_page=True)
            title = page.locator("h1").first
            box = title.bounding_box() if title.is_visible() else None
            if box is None or box["x"] < 0 or box["x"] + box["width"] > 392:
                misfits.append(f"{name}: the title is not in view ({box})")
            width = page.evaluate("document.documentElement.scrollWidth")
            if width > 392:
                misfits.append(f"{name}: the page is {width} px wide on a 390 px phone")
    finally:
        print(f"screenshots: {tmp_path}")
        context.close()
    assert not misfits, misfits
