"""The live zero-shot view in a real browser (headless Chromium, Playwright, `relviz app` on
localhost): typing a free-text query changes the legend and the colours drawn in the 3D view, and
the drawn colours are the legend's. Screenshots go to artifacts/browser/."""

import io
import os
import re
import statistics
import sys
import time

import numpy as np
import pytest
from PIL import Image

from test_browser import ARTIFACTS, CHROMIUM, ROOT, _settle, pytestmark, server  # noqa: F401 (skip rule, fixture)

sys.path.insert(0, str(ROOT / "bench"))
from screencast import Screencast, canvas_box, visible_at  # noqa: E402 (bench/screencast.py, shared with the bench)

# Keystroke to the screen's recoloured 3D view, by Chrome's screencast (bench/README.md, "Zero-shot live view"). The
# bound is the bench's p95 of that visible clock in the condition nearest the test suite's: a plain training process
# at niceness 0 with torch's threads beside the app (`--training`; the suite's other worker is such a neighbour), on
# the 2-core machine while a background experiment ran 2 jobs: 151 ms at load 5.7-6.3, 2026-12-07, 101 keys.
# Why the median of PRESSES keys is compared with a p95: if a key here takes as long as the bench's keys, each is over
# the p95 with probability 0.05, and the median of 5 is over it only when 3 or more are:
# sum(C(5, k) 0.05^k 0.95^(5 - k), k = 3..5) = 0.0012. So a failure says the answer got slower than the bench
# measured (or the machine is far busier than then: the message gives the load). Through Streamlit instead of the
# direct channel the same keys took 146 ms median, 193 ms p95 (load 6.4): that they went by the channel is asserted
# apart.
# The bound holds for a machine no busier than the bench's was (its 1-minute load average, 6.3 at most): on a
# busier one (a background experiment of three trainings beside the suite: load 8.2, 2026-12-07, medians
# 107-389 ms) the timing is not asserted, said in the skip, while everything else of the test is.
PRESSES = 5
VISIBLE_P95_MS = 151
BENCH_LOAD_MAX = 6.3

BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]


def live_frame(page, timeout_s: float = 240):
    """The live view's frame once its points are drawn."""
    deadline = page.evaluate("Date.now()") + 1000 * timeout_s
    while page.evaluate("Date.now()") < deadline:
        frame = next((f for f in page.frames if "live_cloud" in f.url), None)
        if frame is not None and frame.evaluate("!!(window.relvizCloud && window.relvizCloud.table)"):
            return frame
        page.wait_for_timeout(250)
    raise AssertionError("the live view did not draw its points")


def drawn_colors(frame) -> np.ndarray:
    """The RGB values [M, 3] of the canvas pixels that are not background (white)."""
    png = frame.locator("#plot").screenshot()
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3).astype(int)
    return rgb[(rgb < 250).any(1)]


def legend_colors(frame) -> np.ndarray:
    styles = frame.eval_on_selector_all("#legend .swatch", "els => els.map(e => getComputedStyle(e).backgroundColor)")
    return np.array([[int(v) for v in re.findall(r"\d+", s)[:3]] for s in styles])


def share_in(pixels: np.ndarray, colors: np.ndarray) -> float:
    """The fraction of ``pixels`` within 2 levels (PNG and colour conversion) of one of ``colors``."""
    near = (np.abs(pixels[:, None, :] - colors[None, :, :]) <= 2).all(2).any(1)
    return float(near.mean())


def test_typing_a_free_text_query_recolours_the_live_view(server):  # noqa: F811 (the imported fixture)
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{server}/zeroshot")
        _settle(page)
        frame = live_frame(page)
        before_pixels, before_legend = drawn_colors(frame), frame.inner_text("#legend")
        assert "wet road" not in before_legend and len(before_pixels) > 1000
        assert share_in(before_pixels, legend_colors(frame)) > 0.9  # what is drawn is what the legend says

        answered = frame.evaluate("window.relvizTimings.length")
        frame.click("#queries")
        page.keyboard.press("Control+A")
        page.keyboard.type("ambulance = car\nwet road", delay=20)  # each keystroke is a message (coalesced)
        frame.wait_for_function("document.getElementById('legend').innerText.includes('wet road')", timeout=240_000)
        frame.wait_for_function(f"window.relvizTimings.length > {answered}", timeout=60_000)
        after_legend = frame.inner_text("#legend")
        assert "ambulance → car" in after_legend and "not scored" in after_legend
        colors = legend_colors(frame)
        assert len(colors) == 3  # two queries and the unassigned points
        after_pixels = drawn_colors(frame)
        assert share_in(after_pixels, colors) > 0.9  # the new colours are drawn ...
        assert share_in(before_pixels, colors) < 0.9  # ... and they are not the old ones
        assert "after the keystroke" in frame.inner_text("#status")
        page.screenshot(path=str(ARTIFACTS / "zeroshot-live.png"), full_page=True)
        _visible_latency_of_key_presses(page, frame)

        # a box selection in the 3D view: its points are drawn in the selection colour, and the legend
        # counts them (the share of the shown points the frame itself counted)
        frame.click("#select")
        plot = frame.locator("#plot").bounding_box()
        cx, cy = plot["x"] + plot["width"] / 2, plot["y"] + plot["height"] / 2
        page.mouse.move(cx - 120, cy - 80)
        page.mouse.down()
        page.mouse.move(cx + 120, cy + 80, steps=6)
        page.mouse.up()
        frame.wait_for_function("document.getElementById('legend').innerText.includes('selected (3D view)')",
                                timeout=120_000)
        picked = int(frame.inner_text("#picked").split()[0].replace(",", ""))
        shown = frame.evaluate("window.relvizCloud.n")
        rows = frame.eval_on_selector_all("#legend .row", "els => els.map(e => e.textContent)")
        row = next(text for text in rows if text.startswith("selected (3D view)"))
        assert 0 < picked < shown and f"{100 * picked / shown:.1f}%" in row
        assert share_in(drawn_colors(frame), np.array([[255, 0, 255]])) > 0  # SELECTED_RGB is drawn
        # the status line names what it timed (it said "after the keystroke" for every update)
        frame.wait_for_function("window.relvizTimings.at(-1).cause === 'selection'", timeout=60_000)
        assert "after the selection" in frame.inner_text("#status")
        record = frame.evaluate("window.relvizTimings.at(-1)")
        assert record["key"] <= record["sent"] <= record["received"] <= record["drawn"] <= record["painted"]
        page.screenshot(path=str(ARTIFACTS / "zeroshot-selection.png"), full_page=True)
        browser.close()


def _visible_latency_of_key_presses(page, frame, presses: int = PRESSES) -> None:
    """Key presses in the heat-map mode (every new prompt recolours the view), each timed from just before it
    is sent to the first screencast frame whose 3D view changed: all shown, answered by the direct channel,
    and their median under the bench's p95."""
    answered = frame.evaluate("window.relvizTimings.length")
    page.get_by_text("similarity to a query", exact=True).click()  # the page's radio: a rerun of the page
    _settle(page)
    frame.wait_for_function("() => { const s = window.relvizState; return s && s.inflight === null && !s.pending; }")
    frame.locator("#plot").scroll_into_view_if_needed()
    box = canvas_box(frame.locator("#plot"))
    frame.locator("#queries").press("End")
    screencast = Screencast(page)
    screencast.start()
    pressed = []
    for letter in "slick"[:presses]:
        count = frame.evaluate("window.relvizTimings.length")
        time.sleep(0.3)  # the screen is still before the press
        pressed.append(time.time())
        page.keyboard.press(letter)
        frame.wait_for_function(f"window.relvizTimings.length > {count} && window.relvizState.inflight === null",
                                timeout=60_000)
    time.sleep(0.3)
    screencast.stop()
    records = frame.evaluate(f"window.relvizTimings.slice({answered})")[-presses:]
    seen = visible_at(screencast.frames, pressed, box)
    visible = [1000 * (v - t) for v, t in zip(seen, pressed) if v is not None]
    app = [r["painted"] - r["key"] for r in records]
    print(f"visible ms {[round(v) for v in visible]}, the app's own {[round(a) for a in app]}")
    assert [r["channel"] for r in records] == ["direct"] * presses and all(r["redrawn"] for r in records)
    assert len(visible) == presses, f"{presses - len(visible)} presses never showed a recoloured view"
    if (load := os.getloadavg()[0]) > BENCH_LOAD_MAX:
        pytest.skip(f"visible latency not asserted: load average {load:.1f} above the bench's {BENCH_LOAD_MAX} "
                    f"(visible ms {[round(v) for v in visible]})")
    assert statistics.median(visible) < VISIBLE_P95_MS, (visible, app, f"load average {os.getloadavg()}")
