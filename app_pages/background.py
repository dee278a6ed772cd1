"""Structure results computed in the background (issue #31: no control freezes a page for a minute).

A page asks :func:`structures_or_last` for the structure of some students (and the teacher) on one
evaluation set. What is on disk is returned at once. What is not is gathered in a thread of the app
server (one per result, shared by every session, one at a time: two would share the same cores),
while the page keeps the last results it showed of the same students, says what is being computed with
a count, an estimate and a Cancel button, and reruns itself when the results are ready (with no such
result shown yet, the page's run waits under the progress bars: a control's change or Cancel still
interrupts it). Feature structure asks for one result (:func:`structure_or_last`), Compare and Evidence
for several. Not a page (app.py does not list it)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import streamlit as st

from app_pages import common, kept
from relviz import workspace
from relviz.errors import RelvizError
from relviz.eval.selection import EvalSet
from relviz.workspace import CheckpointInfo


class Cancelled(RelvizError):
    """The user cancelled a background computation."""


@dataclass
class Computation:
    """One structure result being computed: keyframes ``done`` of ``total``, the estimate it started
    with, whether it still waits for another to end (``queued``), and its outcome (``error`` set, or
    ``finished``)."""

    what: str
    total: int
    estimate_s: float | None
    done: int = 0
    queued: bool = False
    started: float = field(default_factory=time.time)
    finished: bool = False
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        if self.cancel.is_set():
            raise Cancelled(f"{self.what}: cancelled at keyframe {done} of {total}")

    def text(self) -> str:
        if self.queued:
            return (f"{self.what}: waiting for the computation before it"
                    + (f" (then about {self.estimate_s:.0f} s)" if self.estimate_s else ""))
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


@st.cache_resource
def _one_at_a_time() -> threading.Lock:
    return threading.Lock()  # held by the computation that runs; the others wait their turn


def keyframe_count(root: str, n: EvalSet) -> int:
    ds = common.dataset(root)
    return len(n.keyframes([ds.scene_of(i) for i in range(len(ds))]))


def describe(label: str, n: EvalSet) -> str:
    return f"{label} on {n.describe()}"


def _loaded(info: CheckpointInfo | None, root: str, n: EvalSet) -> tuple:
    """(keyframe count, teacher, student or None) for a computation: loaded in the page's thread
    (Streamlit's caches and spinners need it) and before the server-wide lock is taken, so another
    session's page never waits on this one's model loads."""
    s = common.settings()
    return keyframe_count(root, n), common.active_teacher(s), None if info is None else common.student(info)[0]


def _start(info: CheckpointInfo | None, label: str, root: str, n: EvalSet, per_class: int, seed: int,
           loaded: tuple) -> Computation:
    """A computation's thread, started at once with what :func:`_loaded` gave: it waits for its turn
    (queued) and then stores the structure."""
    s = common.settings()
    per_keyframe = workspace.seconds_per_keyframe(s)
    total, teacher, model = loaded
    job = Computation(describe(label, n), total, None if per_keyframe is None else per_keyframe * total,
                      queued=True)  # until its thread holds the turn

    def run() -> None:
        turn = _one_at_a_time()
        try:
            while not turn.acquire(timeout=0.5):  # waiting its turn, a Cancel still ends it
                job.progress(0, job.total)
            try:
                job.queued, job.started = False, time.time()
                job.progress(0, job.total)  # cancelled while it waited: nothing computed
                workspace.structure(s, root, info, n, per_class, seed, lambda: teacher, lambda: model,
                                    progress=job.progress)
            finally:
                turn.release()
        except Exception as e:  # said on every page waiting on it; "Compute again" starts another
            job.error = str(e) if isinstance(e, RelvizError) else f"{type(e).__name__}: {e}"
        finally:
            job.finished = True

    threading.Thread(target=run, name=f"relviz-structure-{label}", daemon=True).start()
    return job


def _fraction(job: Computation) -> float:
    return 0.0 if job.queued else job.done / max(job.total, 1)


@st.fragment(run_every="1s")
def _watch(keys: list[tuple]) -> None:
    """The progress of the computations a page waits on, and a rerun of the page when one has ended
    (with its result, or with the reason there is none), in every session waiting on it."""
    jobs = [_running().get(key) for key in keys]
    if any(job is None or job.finished for job in jobs):
        st.rerun(scope="app")
    for job in jobs:
        st.progress(_fraction(job), text=job.text())
    if st.button("Cancel", key="background_cancel"):
        for job in jobs:
            job.cancel.set()


def _wait_here(keys: list[tuple]) -> None:
    """With nothing earlier to show: the progress of the computations, updated in place until they have
    ended, then the page again. The script run waits, the page does not: a change of a control or Cancel
    interrupts the wait (Streamlit stops a run at its next call when the page asks for another run)."""
    jobs = [_running()[key] for key in keys]
    bars = [st.progress(_fraction(job), text=job.text()) for job in jobs]
    if st.button("Cancel", key="background_cancel"):
        for job in jobs:
            job.cancel.set()
    while not all(job.finished for job in jobs):
        time.sleep(0.5)
        for bar, job in zip(bars, jobs):
            bar.progress(_fraction(job), text=job.text())
    st.rerun()


def _key(info: CheckpointInfo | None, label: str, root: str, n: EvalSet, per_class: int, seed: int) -> tuple:
    return label, info.key if info else "teacher", root, n, per_class, seed


def structures_or_last(sources: dict[str, CheckpointInfo | None], root: str, n: EvalSet, per_class: int, seed: int,
                       page: str) -> tuple[dict[str, dict], tuple]:
    """({label: structure result}, (sources, eval set, per_class, seed) they are of) for every student of
    ``sources`` (label -> info; None: the teacher) on ``n``: at once when stored; else computed in the
    background while the last results this session showed on ``page`` of the same students stay on screen with
    a note (before any, or when they were of other students, the page's run waits under the progress bars, and
    shows the results when they are stored). A cancelled or failed computation is said, server-wide, and
    started again only when asked ("Compute again")."""
    s = common.settings()
    missing = {label: info for label, info in sources.items()
               if not workspace.structure_on_disk(s, root, info, n, per_class, seed)}
    for label, info in sources.items():
        if label not in missing:
            _running().pop(_key(info, label, root, n, per_class, seed), None)  # on disk: nothing to watch any more
    if missing:
        keys = [_key(info, label, root, n, per_class, seed) for label, info in missing.items()]
        jobs = []
        for key, (label, info) in zip(keys, missing.items()):
            job = _running().get(key)
            if job is None:  # loaded outside the lock; under it only the check and the thread's start
                loaded = _loaded(info, root, n)
                with _lock():  # another session may have started it meanwhile: that one is watched
                    job = _running().get(key) or _running().setdefault(
                        key, _start(info, label, root, n, per_class, seed, loaded))
            jobs.append(job)
        # finished here means with an error: a finished job with its result on disk is not here
        if failed := [job for job in jobs if job.finished]:
            for job in failed:
                st.error(f"{job.what} was not computed: {job.error or 'it ended without storing a result'}")
            if st.button("Compute again", key="background_again"):
                for key, job in zip(keys, jobs):
                    if job.finished:
                        _running().pop(key, None)
                st.rerun()
        waiting = [key for key, job in zip(keys, jobs) if not job.finished]
        last = st.session_state.get(f"{page}_shown")
        if last is not None and set(last[0]) != set(sources):
            last = None  # other students' results are not the last of these: wait for these
        if last is None and waiting:  # nothing to keep on screen: the page waits here, under the progress
            _wait_here(waiting)
        if last is None:
            st.stop()  # the reason it failed is said above
        if waiting:
            _watch(waiting)
        sources, n, per_class, seed = last
        st.info(f"Showing {describe(', '.join(sources), n)} (points per class {per_class}, seed {seed}) until what "
                f"the controls above ask for is ready.")
    shown = (sources, n, per_class, seed)
    results = {label: common.structure(info, root, n, per_class, seed) for label, info in sources.items()}
    st.session_state[f"{page}_shown"] = shown
    return results, shown


def structure_or_last(info: CheckpointInfo | None, label: str, root: str, n: EvalSet, per_class: int, seed: int):
    """(structure result, (features [S, D], labels [S]) of its sample, (info, label, eval set, per_class,
    seed) it is of) for ``label`` on ``n``: :func:`structures_or_last` of one source."""
    results, (sources, n, per_class, seed) = structures_or_last({label: info}, root, n, per_class, seed, "structure")
    (label, info), = sources.items()
    metrics = results[label]
    return metrics, kept.structure_points(info, root, n, per_class, seed), (info, label, n, per_class, seed)
