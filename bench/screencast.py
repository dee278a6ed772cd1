"""When a key press shows on the screen, by a clock that is not the app's: Chrome's screencast.

The live view times itself (``window.relvizTimings``: key press to two animation frames after its draw
call), with code of the app. This module measures the same key presses from outside it: Chrome's DevTools
screencast (``Page.startScreencast``) sends each frame the compositor presents, stamped with the time it
was swapped (epoch seconds, the clock ``time.time()`` reads on the same machine). A key press is timed
from ``time.time()`` just before Playwright sends it to the first screencast frame after it whose crop
of the 3D view differs from the last frame before it. Frames are kept as they come (JPEG, base64) and
decoded only afterwards, so the measurement adds little work to the browser's while it runs.

Used by bench/zeroshot_live_bench.py and tests/test_browser_zeroshot.py (they put this folder on
``sys.path``). The walkthrough of 2026-12-06 calibrated the method: a recolour made by script (no
server, no Streamlit) shows in a frame stamped a median 9 ms after its ``gl.finish`` (p95 18 ms), and
:func:`calibrate` repeats that check in the page being measured."""

from __future__ import annotations

import base64
import io
import time
from dataclasses import dataclass, field

import numpy as np

# a pixel counts as changed when a channel moved by more than this (JPEG noise is a few levels) ...
LEVELS = 24
# ... and a frame as changed when more than this many pixels of the crop did
PIXELS = 40
# the crop stays this far (CSS px) inside the canvas: JPEG blocks across its edge carry the neighbours' changes
INSET = 16


@dataclass
class Screencast:
    """Every frame Chrome presents for ``page`` while started: ``(timestamp, jpeg base64, viewport width)``.
    The screencast itself slows the headless browser's frames (it encodes each one): two animation frames
    after a draw took 44 ms without it, 80 ms with full-size frames and 71 ms with 700 px ones (quality 50,
    the default here; the 3D view's crop is still 300 px wide) on the quiet 2-core machine, 2026-12-07."""

    page: object
    quality: int = 50
    max_width: int | None = 700
    frames: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cdp = self.page.context.new_cdp_session(self.page)
        self.cdp.on("Page.screencastFrame", self._frame)

    def _frame(self, params: dict) -> None:
        meta = params["metadata"]
        self.frames.append((meta["timestamp"], params["data"], meta["deviceWidth"]))
        self.cdp.send("Page.screencastFrameAck", {"sessionId": params["sessionId"]})

    def start(self) -> None:
        options = {"format": "jpeg", "quality": self.quality, "everyNthFrame": 1}
        if self.max_width:
            options["maxWidth"] = self.max_width
        self.cdp.send("Page.startScreencast", options)

    def stop(self) -> None:
        self.cdp.send("Page.stopScreencast")


def canvas_box(locator) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) in CSS px of the viewport: the canvas's box, ``INSET`` inside it."""
    box = locator.bounding_box()
    return (box["x"] + INSET, box["y"] + INSET, box["x"] + box["width"] - INSET, box["y"] + box["height"] - INSET)


def _crop(frame: tuple, box: tuple) -> np.ndarray:
    from PIL import Image

    _, data, device_width = frame
    image = Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
    scale = image.width / device_width
    left, top, right, bottom = (round(v * scale) for v in box)
    return np.asarray(image.crop((left, top, right, bottom)), dtype=np.int16)


def changed(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape != b.shape or int((np.abs(a - b).max(axis=2) > LEVELS).sum()) > PIXELS


def visible_at(frames: list, presses: list[float], box: tuple, horizon_s: float = 10.0) -> list[float | None]:
    """For each press (epoch s, ascending), the timestamp of the first frame after it whose crop ``box``
    differs from the last frame before it; None when no frame before the next press (or within
    ``horizon_s``) does (the press changed nothing drawn, or it came later than that)."""
    frames = sorted(frames, key=lambda f: f[0])
    stamps = [f[0] for f in frames]
    out: list[float | None] = []
    for i, pressed in enumerate(presses):
        end = min(presses[i + 1] if i + 1 < len(presses) else float("inf"), pressed + horizon_s)
        before = int(np.searchsorted(stamps, pressed)) - 1
        if before < 0:
            out.append(None)
            continue
        reference = _crop(frames[before], box)
        seen = None
        for j in range(before + 1, len(frames)):
            if stamps[j] >= end:
                break
            if changed(_crop(frames[j], box), reference):
                seen = stamps[j]
                break
        out.append(seen)
    return out


CALIBRATE_JS = """() => {
  const c = window.relvizCloud, n = c.n, index = new Uint8Array(n), table = [];
  for (let i = 0; i < 16; i++) table.push('#' + ((i * 2654435761) % 16777216).toString(16).padStart(6, '0'));
  const shift = Math.floor(Math.random() * 16);
  for (let i = 0; i < n; i++) index[i] = (i + shift) % 16;
  c.setColors(index, table);  // uploads and draws; gl.finish has returned when this does
  return performance.timeOrigin + performance.now();
}"""


def calibrate(frame, screencast: Screencast, box: tuple, repeats: int = 10, gap_s: float = 0.3) -> list[float]:
    """ms from a recolour made by script in the live view's frame (no server, no Streamlit: one buffer
    upload and one draw) to the screencast frame that shows it: what the method itself adds."""
    drawn = []
    for _ in range(repeats):
        time.sleep(gap_s)
        drawn.append(frame.evaluate(CALIBRATE_JS) / 1000)
    time.sleep(gap_s)
    seen = visible_at(screencast.frames, [d - 1e-4 for d in drawn], box)
    return [1000 * (s - d) for s, d in zip(seen, drawn) if s is not None]
