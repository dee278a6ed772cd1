"""A Streamlit component (components v1, static files, no build step) that draws a point cloud
once and recolours it as queries are typed.

The browser side holds the query text box and sends its text on each keystroke (a new message only
once the previous one is answered, so typing never queues reruns); the Python side answers with a
uint8 colour index per point and a colour table of at most 128 entries, which the browser uploads
as one byte per point and draws (``cloud.js``: WebGL2 points with an orbit camera). Positions never
travel with an answer: they are written once per point set as a file in the component's folder,
which the browser fetches (and caches) by its content hash. Nothing is fetched from the internet.
Keystrokes go by ``fetch`` to the app's own direct channel when the page gives one (``channel.py``:
answered without Streamlit's rerun loop, which cost more than the answer); Ctrl+Enter, legend clicks
and selections, which change the page around the view, go through Streamlit.

Why not plotly.js: ``Plotly.restyle`` of a scatter3d's marker colours recomputes the whole trace
(each point is a glyph mesh), which costs far more than the 100 ms a keystroke may take at 33k points
(bench/zeroshot_live_bench.py --plotly measures it); a recolour here is one buffer upload and one draw.

Protocol (Streamlit's components v1, by hand): the frame posts ``streamlit:componentReady``, gets
``streamlit:render`` messages with the arguments of :func:`live_cloud`, posts
``streamlit:setComponentValue`` with ``{seq, text, cursor, focus, commit, key, sent}`` (``key``:
epoch ms of the first keystroke the message covers, ``sent``: when it was posted; ``selection``: the
indices of a box selection and ``points``, the point set they index, in the messages that follow one
until a reply covers it) and
``streamlit:setFrameHeight``. The answer's ``reply`` echoes ``seq`` with the server's timings, and
the frame keeps ``window.relvizTimings`` (one record per answered message: keystroke, sent, server
start/end and parts, received, drawn, painted: two animation frames after the draw, when the frame that
shows it is presented; the cause: keystroke, legend click or selection) and shows the time it measures, named by
its cause; a redraw by a page control is said to be one, never timed as the last keystroke."""

from __future__ import annotations

import functools
import hashlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from relviz.errors import InputError
from relviz.files import atomic_path
from relviz.viz.labelcolors import Coloring, hex_colors

HERE = Path(__file__).resolve().parent
_declared: dict[str, Any] = {}


@functools.lru_cache(maxsize=4)  # once per process and root: the static files do not change while it runs
def component_folder(root: str | Path) -> Path:
    """The served folder under ``root``: this package's static files (``index.html``, ``cloud.js``),
    copied when missing; the folder is named by their hash, so a changed file gets a new folder."""
    static = sorted(p for p in HERE.iterdir() if p.suffix in (".html", ".js"))
    digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in static)).hexdigest()[:12]
    folder = Path(root) / f"live_cloud-{digest}"
    for p in static:
        if not (folder / p.name).is_file():
            with atomic_path(folder / p.name) as tmp:
                shutil.copyfile(p, tmp)
    return folder


def points_name(xyz: np.ndarray) -> str:
    """The URL (relative to the component) of positions float32 [N, 3]: named by their content, so a
    message of the frame says which point set its selection indexes."""
    return _name(_positions(xyz))


def _positions(xyz: np.ndarray) -> bytes:
    return np.ascontiguousarray(xyz, dtype="<f4").tobytes()


def _name(positions: bytes) -> str:
    return f"points/{hashlib.blake2b(positions, digest_size=12).hexdigest()}.f32"


def points_file(folder: Path, xyz: np.ndarray) -> str:
    """Write positions float32 [N, 3] (little-endian, x y z per point) under ``folder/points/`` once;
    returns their URL relative to the component (:func:`points_name`)."""
    data = _positions(xyz)
    name = _name(data)
    if not (folder / name).is_file():
        with atomic_path(folder / name) as tmp:
            Path(tmp).write_bytes(data)
    return name


def live_cloud(root: str | Path, xyz: np.ndarray, coloring: Coloring, legend: list[dict], *, text: str,
               reply: dict | None = None, note: str = "", height: int = 560, channel: dict | None = None,
               key: str) -> dict | None:
    """Draw (or recolour) the live point cloud; returns the frame's last message (None before one).

    root: a writable folder for the served files; xyz float32 [N, 3]; coloring: one index per
    point; legend: rows ``{prompt, color, class, scored, points, fraction, iou, unseen}`` (or a
    ``{heat: [low, high], prompt}`` row for a similarity colouring); text: the query text the box
    starts with (used once, when the frame is created); reply: what answers the frame's message
    (``seq``, timings, ``error``); note: a line shown under the legend; channel: where the frame posts its
    keystrokes directly (:func:`relviz.viz.live_cloud.channel.register`), None: through Streamlit."""
    from streamlit.components.v1 import declare_component

    folder = component_folder(str(root))
    if str(folder) not in _declared:
        _declared[str(folder)] = declare_component("live_cloud", path=str(folder))
    if len(coloring.index) != len(xyz):
        raise InputError(f"{len(coloring.index)} colours for {len(xyz)} points")
    return _declared[str(folder)](
        points=points_file(folder, xyz), n=len(xyz), colors=coloring.index.astype(np.uint8).tobytes(),
        table=hex_colors(coloring.table), legend=legend, text=text, reply=reply or {}, note=note, height=height,
        channel=channel, key=key, default=None)


@dataclass
class Typed:
    """The query text and what came with it: ``cursor`` (the line the cursor is on), ``focus`` (a
    legend row clicked, or None), ``commit`` (Ctrl+Enter, once), ``new`` (this run answers a message of
    the frame) and the frame's timestamps, which :meth:`reply` returns with the server's; ``selection``:
    a box selection made in the view with this message (indices into the points it shows, as sent:
    unchecked; empty: cleared), None when the message brings none; ``selection_points``: the point set it indexes
    (:func:`points_name`)."""

    text: str
    cursor: int | None = None
    focus: str | None = None
    commit: bool = False
    new: bool = False
    stamps: dict = field(default_factory=dict)
    selection: list | None = None
    selection_points: str | None = None

    def reply(self, timings: dict, error: str | None = None) -> dict:
        """The ``reply`` argument of :func:`live_cloud`: the message's sequence number and
        timestamps (epoch ms), the server's start and end, its parts in ms, and the error if any."""
        if not self.new:
            return {"error": error} if error else {}
        return {**self.stamps, **timings, "end": 1000 * time.time(), "error": error}


def message_typed(message: dict, start: float, text: str | None = None, focus: str | None = None) -> Typed:
    """The :class:`Typed` of one message of the frame (a dict as posted: unchecked values are dropped),
    ``start``: when the server began answering it (epoch ms)."""
    cursor, selection, points = message.get("cursor"), message.get("selection"), message.get("points")
    stamps = {"seq": message.get("seq"), "key": message.get("key"), "sent": message.get("sent"), "start": start}
    return Typed(str(message.get("text", "")) if text is None else text, cursor if isinstance(cursor, int) else None,
                 message.get("focus") if isinstance(message.get("focus"), str) else focus, bool(message.get("commit")),
                 True, stamps, selection if isinstance(selection, list) else None,  # checked by the page
                 points if isinstance(points, str) else None)


def typed(key: str, text_key: str, default: str, newer_than: float | None = None) -> Typed:
    """Read the frame ``key``'s last message from Streamlit's session state and keep its text under
    ``text_key``, a plain session key that outlives the frame (other pages, another student or
    keyframe), starting from ``default``. A message numbered ``newer_than`` or lower (the direct channel
    answered a later one) brings no text, only its Ctrl+Enter. Call it first in the fragment (its time is
    the server's start)."""
    import streamlit as st

    start = 1000 * time.time()
    state = st.session_state
    state.setdefault(text_key, default)
    message = state.get(key) or {}
    seen = state.get(f"{key}_seen")
    if not isinstance(message, dict) or message.get("seq") is None or message.get("seq") == seen:
        return Typed(state[text_key], focus=state.get(f"{key}_focus"))
    state[f"{key}_seen"] = message["seq"]
    if newer_than is not None and isinstance(message["seq"], (int, float)) and message["seq"] <= newer_than:
        return Typed(state[text_key], focus=state.get(f"{key}_focus"), commit=bool(message.get("commit")))
    state[text_key] = str(message.get("text", ""))
    state[f"{key}_focus"] = message.get("focus") if isinstance(message.get("focus"), str) else None
    return message_typed(message, start, state[text_key], state[f"{key}_focus"])
