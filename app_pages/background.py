"""Structure results computed in the background (issue #31: no control freezes a page for a minute).

A page asks :func:`structure_or_last` for the structure of one student (or the teacher) on one
evaluation set. When it is on disk it is returned at once. Otherwise its features are gathered in a
thread of the app server (one per result, shared by every session), while the page keeps the last
result it showed, says what is being computed with a count, an estimate and a Cancel button, and
reruns itself when the result is ready. Not a page (app.py does not list it)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import streamlit as st

from app_pages import common
from relviz import workspace
from relviz.errors import RelvizError
from relviz.eval.selection import EvalSet
from relviz.workspace import CheckpointInfo


class Cancelled(RelvizError):
    """The user cancelled a background computation."""


@dataclass
class Computation:
    """One structure result being computed: keyframes ``done`` of ``total``, the estimate it started
    with, and its outcome (``error`` set, or ``finished``)."""

    what: str
    total: int
    estimate_s: float | None
    done: int = 0
    started: float = field(default_factory=time.time)
    finished: bool = False
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        if self.cancel.is_set():
            raise Cancelled(f"{self.what}: cancelled at keyframe {done} of {total}")

    def text(self) -> str:
        elapsed = time.time() - self.started
        left = None if not self.done else elapsed / self.done * (self.total - self.done)
        return (f"computing {self.what}: keyframe {self.done} of {self.total}, {elapsed:.0f} s"
                + (f", about {left:.0f} s left" if left is not None else
                   f" (estimate {self.estimate_s:.0f} s)" if self.estimate_s else ""))


@st.cache_resource
def _running() -> dict[tuple, Computation]:
    return {}  # one per result, for every session of this server; a finished one stays until its result is read


@st.cache_resource
def _lock() -> threading.Lock:
    return threading.Lock()  # two sessions asking at once start one thread


def keyframe_count(root: str, n: EvalSet) -> int:
    ds = common.dataset(root)
    return len(n.keyframes([ds.scene_of(i) for i in range(len(ds))]))


def describe(label: str, n: EvalSet) -> str:
    return f"{label} on {n.describe()}"


def _start(info: CheckpointInfo | None, label: str, root: str, n: EvalSet, per_class: int,
           seed: int) -> Computation:
    s = common.settings()
    per_keyframe = workspace.seconds_per_keyframe(s)
    total = keyframe_count(root, n)
    job = Computation(describe(label, n), total, None if per_keyframe is None else per_keyframe * total)
    # the loaders run here, in the page's thread (Streamlit's caches and spinners need it); the thread
    # gets the loaded objects
    teacher = common.active_teacher(s)
    model = None if info is None else common.student(info)[0]

    def run() -> None:
        try:
            workspace.structure(s, root, info, n, per_class, seed, lambda: teacher, lambda: model, progress=job.progress)
        except Exception as e:  # said on every page waiting on it; "Compute again" starts another
            job.error = str(e) if isinstance(e, RelvizError) else f"{type(e).__name__}: {e}"
        finally:
            job.finished = True

    threading.Thread(target=run, name=f"relviz-structure-{label}", daemon=True).start()
    return job


@st.fragment(run_every="1s")
def _watch(key: tuple) -> None:
    """The progress of one computation, and a rerun of the page when it has ended (with its result, or
    with the reason there is none), in every session waiting on it."""
    job = _running().get(key)
    if job is None or job.finished:
        st.rerun(scope="app")
    st.progress(job.done / max(job.total, 1), text=job.text())
    if st.button("Cancel", key="background_cancel"):
        job.cancel.set()


def structure_or_last(info: CheckpointInfo | None, label: str, root: str, n: EvalSet, per_class: int, seed: int):
    """(structure result, (features [S, D], labels [S]) of its sample, (info, label, eval set, per_class,
    seed) it is of) for ``label`` on ``n``: at once when stored; else computed in the background while the
    last result this session showed stays on screen with a note (before any, the page stops under the
    progress bar). A cancelled or failed computation is said, server-wide, and started again only when
    asked ("Compute again")."""
    s = common.settings()
    key = (label, info.key if info else "teacher", root, n, per_class, seed)
    if not workspace.structure_on_disk(s, root, info, n, per_class, seed):  # common.structure reads it below
        with _lock():
            job = _running().get(key)
            if job is None:
                job = _running()[key] = _start(info, label, root, n, per_class, seed)
        if job.finished:  # with an error (a finished job with its result on disk is not here)
            st.error(f"{describe(label, n)} was not computed: {job.error or 'it ended without storing a result'}")
            if st.button("Compute again", key="background_again"):
                _running().pop(key, None)
                st.rerun()
        else:
            _watch(key)
        last = st.session_state.get("structure_shown")
        if last is None:
            st.stop()
        info, label, n, per_class, seed = last
        st.info(f"Showing {describe(label, n)} (points per class {per_class}, seed {seed}) until what the "
                f"controls above ask for is ready.")
    else:
        _running().pop(key, None)  # its result is on disk: nothing to watch any more
    shown = (info, label, n, per_class, seed)
    metrics = common.structure(info, root, n, per_class, seed)
    st.session_state["structure_shown"] = shown
    return metrics, common.structure_points(info, root, n, per_class, seed), shown
