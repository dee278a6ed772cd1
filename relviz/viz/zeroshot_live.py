"""The Zero-shot page's live view, answered the same way by the page's fragment (a Streamlit rerun)
and by the direct channel (:mod:`relviz.viz.live_cloud.channel`, a thread of the app's server).

A page run fixes :class:`LiveInputs` (the keyframe's features, the points shown, the colour mode,
the threshold, the selections); :class:`LiveState` is what the session's live view answered last (the
query text, the view, the error), shared by the page's runs and the channel's thread under its lock.
An answer of the channel is picked up by the page's next run (:func:`session_live_state`), so the
page's other parts (scores, camera view, search) follow it as they follow the Streamlit path."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from relviz.errors import RelvizError
from relviz.tensors import one_thread
from relviz.viz.labelcolors import Coloring, hex_colors
from relviz.viz.live_cloud import Typed, message_typed
from relviz.viz.zeroshot_view import View, live_view, mark_selections, shown, summary, unit_rows


@dataclass
class LiveInputs:
    """What one page run fixes: ``features`` [N, D] and ``truth`` [N] (or None) of the keyframe, the
    points shown ``keep`` [K], the colour mode and threshold, the prompts' embedding function, the
    teacher's vocabulary (for the "never read" note) and the selections to mark ((where, point
    indices))."""

    features: torch.Tensor
    truth: np.ndarray | None
    keep: np.ndarray
    threshold: float | None
    mode: str
    embed: Callable[[Sequence[str]], torch.Tensor]
    vocabulary: frozenset[str] | None = None
    selections: list = field(default_factory=list)

    @cached_property
    def unit(self) -> torch.Tensor:
        """The features as float32 unit rows [N, D], once per page run: every keystroke's similarities
        (and the heat map) read them instead of normalising the keyframe's features again."""
        return unit_rows(self.features)

    def colours(self, view: View | None) -> tuple[Coloring, list[dict]]:
        """The colouring [K] and legend rows of ``view`` on the points shown, selections marked."""
        return mark_selections(*shown(view, len(self.features), self.keep), self.keep, self.selections)

    def note(self, view: View | None) -> str:
        return (f"{summary(view, len(self.features))} · showing {len(self.keep):,} of {len(self.features):,} points "
                f"(uniform random, seed 0)")


@dataclass
class LiveState:
    """The session's live view as last answered: query ``text``, ``view`` and ``error``; ``seq``: the
    frame's message the channel answered last (None before one), ``synced``: the one the page's keys
    hold. Its ``lock`` orders the page's runs and the channel's answers."""

    text: str
    view: View | None = None
    error: str | None = None
    seq: float | None = None
    synced: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def compute(self, inputs: LiveInputs, q: Typed, channel: bool = False) -> tuple[View | None, str | None]:
        """The view of ``q``'s text (continuing the last view: colours, heat-map prompt), or the last
        view and the error's message when the text cannot be used; kept as this state's. ``channel``:
        answered by the direct channel (the page's keys take it at the page's next run)."""
        with self.lock:
            view, error = self.view, None
            try:
                with one_thread():  # small tensors per keystroke: see relviz.tensors.one_thread
                    view = live_view(inputs.features, inputs.truth, q.text, inputs.threshold, inputs.mode,
                                     inputs.embed, q.cursor, q.focus, self.view, inputs.vocabulary,
                                     inputs.unit)
            except RelvizError as e:  # the frame shows the message and keeps the last good colours
                error = str(e)
            self.text, self.view, self.error = q.text, view, error
            seq = q.stamps.get("seq") if q.new else None
            if seq is not None and (self.seq is None or seq > self.seq):
                self.seq = seq
                if not channel:
                    self.synced = seq  # the Streamlit path answered it: the page's keys hold it
        return view, error

    def answer(self, inputs: LiveInputs, message: dict) -> tuple[dict, bytes]:
        """The channel's answer to one message of the frame: the colours, legend, note and reply
        (:func:`relviz.viz.live_cloud.channel.register`'s ``Answer``)."""
        q = message_typed(message, 1000 * time.time())
        view, error = self.compute(inputs, q, channel=True)
        coloring, legend = inputs.colours(view)
        meta = {"table": hex_colors(coloring.table), "legend": legend, "note": inputs.note(view),
                "reply": q.reply(view.timings if view else {}, error)}
        return meta, coloring.index.astype(np.uint8).tobytes()


def session_live_state(session: MutableMapping, default_text: str) -> LiveState:
    """The session's :class:`LiveState` (created with ``default_text``), after copying what the channel
    answered since the last run into the page's keys (``zs_queries``, ``zs_view``, ``zs_error``)."""
    state = session.get("zs_live_state")
    if not isinstance(state, LiveState):
        state = session["zs_live_state"] = LiveState(session.get("zs_queries", default_text))
    with state.lock:
        if state.seq is not None and state.seq != state.synced:
            session.update(zs_queries=state.text, zs_view=state.view, zs_error=state.error)
            state.synced = state.seq
    return state
