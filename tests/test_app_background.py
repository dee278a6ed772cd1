"""The app's background structure computations (app_pages/background.py, issue #31): one runs at a time
server-wide, the others wait queued; a Cancel of a queued one ends it before it computes anything; a
Cancel of the running one stops it at its next keyframe. The computation itself is replaced by a fake
that blocks until the test lets it go, so the order is the test's, not the machine's speed."""

from __future__ import annotations

import threading
import time

import pytest

from app_pages import background
from relviz.eval.selection import EvalSet

TIMEOUT_S = 30.0  # a generous bound on a thread switch on a loaded machine: the waits end as soon as they hold


def _until(condition, what: str) -> None:
    end = time.monotonic() + TIMEOUT_S
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"not within {TIMEOUT_S} s: {what}")
        time.sleep(0.01)


@pytest.fixture
def fake_structure(monkeypatch):
    """workspace.structure replaced by a computation of 3 keyframes per root that waits for
    ``release[root]`` before its last keyframe; records which roots ran and the most running at once."""
    state = {"running": 0, "most": 0, "ran": [], "release": {}}
    lock = threading.Lock()

    def structure(s, root, info, n, per_class, seed, teacher, model, progress):
        with lock:
            state["running"] += 1
            state["most"] = max(state["most"], state["running"])
            state["ran"].append(root)
        try:
            progress(1, 3)
            event = state["release"].setdefault(root, threading.Event())
            while not event.wait(0.05):
                progress(1, 3)  # a keyframe boundary: a Cancel stops it here
            progress(3, 3)
        finally:
            with lock:
                state["running"] -= 1

    monkeypatch.setattr(background.common, "settings", lambda: object())
    monkeypatch.setattr(background.workspace, "seconds_per_keyframe", lambda s: 2.0)
    monkeypatch.setattr(background.workspace, "structure", structure)
    background._one_at_a_time.clear()  # a fresh server-wide turn for this test
    return state


def _start(root: str) -> background.Computation:
    return background._start(None, root, root, EvalSet(1, 1, 0), 10, 0, (3, "teacher", None))


def test_one_computation_at_a_time_and_a_queued_one_cancelled(fake_structure):
    first = _start("A")
    _until(lambda: not first.queued and first.done == 1, "the first computation holds the turn")
    second, third = _start("B"), _start("C")
    time.sleep(0.3)  # give the queued threads every chance to start early
    assert second.queued and third.queued and fake_structure["ran"] == ["A"]
    assert "waiting for the computation before it (then about 6 s)" in second.text()
    second.cancel.set()  # cancelled while it waits: it ends without computing anything
    _until(lambda: second.finished, "the cancelled queued computation ends")
    assert "cancelled" in second.error and fake_structure["ran"] == ["A"] and first.queued is False
    fake_structure["release"].setdefault("A", threading.Event()).set()
    _until(lambda: first.finished, "the first computation ends")
    assert first.error is None and first.done == 3
    _until(lambda: not third.queued, "the next queued computation takes the turn")
    assert fake_structure["ran"] == ["A", "C"]
    third.cancel.set()  # cancelled while it runs: it stops at its next keyframe
    _until(lambda: third.finished, "the cancelled running computation ends")
    assert "cancelled at keyframe 1 of 3" in third.error
    assert fake_structure["most"] == 1  # never two at once
    again = _start("D")  # the turn was given back by the cancelled one
    _until(lambda: not again.queued, "a later computation takes the turn")
    again.cancel.set()
    _until(lambda: again.finished, "it ends")


def test_models_load_before_the_server_wide_lock(fake_structure, monkeypatch):
    """What a computation needs (the teacher, the student, the keyframe count) is loaded before the lock
    that every session's page takes, so a page never waits on another session's model load; a result
    already being computed is not loaded again."""
    held = []

    def loaded(info, root, n):
        held.append(background._lock().locked())
        return 3, "teacher", None

    class Shown(Exception):
        pass

    def wait_here(keys):
        raise Shown(keys)

    monkeypatch.setattr(background, "_loaded", loaded)
    monkeypatch.setattr(background, "_wait_here", wait_here)
    monkeypatch.setattr(background.workspace, "structure_on_disk", lambda *args: False)
    background._running.clear()
    background._lock.clear()
    for _ in range(2):  # the second page run finds the computation running: nothing loaded for it
        with pytest.raises(Shown):
            background.structures_or_last({"teacher": None}, "E", EvalSet(1, 1, 0), 10, 0, "test")
    assert held == [False]
    (job,) = background._running().values()
    job.cancel.set()
    _until(lambda: job.finished, "it ends")
    background._running.clear()
