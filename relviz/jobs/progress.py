"""What phase a job is in, how far along, and how long it has left, read from its run folder's
events each time it is asked (never remembered), and the run's curves (loss, validation).

The trainer's events (:mod:`relviz.train.trainer`) mark the phases of one launch:

    priority                      the process took its niceness and threads  -> starting
    phase(prepare)                building the teacher, datasets and model     -> loading
    prepare(done, total)          filling the teacher feature cache            -> preparing
    start / resumed / step / val  the optimisation loop                        -> training
    phase(validate)               U, T, G and zero-shot mIoU on val points     -> evaluating
    phase(finalize)               the final student and the app's caches       -> saving
    done / failed / cancelled     the end                                      -> finished / failed / cancelled

A few-shot job (:mod:`relviz.jobs.fewshot`) has ``phase(prepare)`` (loading) and then ``fewshot``
events (task, done, total, part, parts)                                  -> few-shot

``heartbeat``, ``checkpoint`` and ``app_cache`` happen inside a phase and do not change it. An
ended job's status (from :class:`relviz.jobs.store.JobStore`) wins over its events: a job killed
without a final event is *lost*, and nothing ended has an estimate.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from relviz.train.rundir import RunDir, read_events

PHASES = ("queued", "starting", "loading", "preparing", "training", "evaluating", "few-shot", "saving", "finished",
          "failed", "cancelled", "lost")
ENDED = {"succeeded": "finished", "failed": "failed", "cancelled": "cancelled", "lost": "lost"}  # status -> phase
_MARKS = ("phase", "prepare", "start", "resumed", "step", "val", "fewshot", "done", "failed", "cancelled")  # events that move it
VALIDATION_METRICS = ("uniformity", "tolerance", "gap", "zeroshot_miou")

if TYPE_CHECKING:  # pandas is imported where a curve is built: reading a job's phase stays light
    import pandas as pd


@dataclass(frozen=True)
class JobProgress:
    """One job's phase (one of :data:`PHASES`) with its count ``done``/``total`` (teacher images while
    preparing, steps otherwise), ``eta_s`` (seconds left in this phase, None when unknown or ended),
    and the niceness, torch threads and usable cores its process recorded (None before it did);
    ``detail``: a few-shot job's task ("finetune 10%: train, part 1 of 4")."""

    phase: str
    done: int | None = None
    total: int | None = None
    eta_s: float | None = None
    niceness: int | None = None
    threads: int | None = None
    cores: int | None = None
    detail: str | None = None

    @property
    def label(self) -> str:
        count = f"{self.done}/{self.total or '?'}" if self.done is not None else ""
        return {"queued": "queued", "starting": "starting the process",
                "loading": f"loading {self.detail or 'the teacher and the dataset'}",
                "preparing": f"preparing teacher features {count}",
                "training": f"training step {count}",
                "evaluating": f"evaluating U, T, G and zero-shot mIoU at step {count}",
                "saving": "saving the student and filling the app's caches",
                "few-shot": f"few-shot {self.detail} {count}",
                }.get(self.phase, f"{self.phase} (step {count})" if count else self.phase)

    @property
    def priority(self) -> str:
        """What the job's process runs at, in words ('' before it recorded it)."""
        if self.niceness is None:
            return ""
        return f"niceness {self.niceness} with {self.threads} torch thread(s) per process on {self.cores} cores"

    @property
    def fraction(self) -> float:
        """How far along the current phase's count is, in [0, 1] (1 for a finished job)."""
        if self.phase == "finished":
            return 1.0
        return min(1.0, self.done / self.total) if self.done is not None and self.total else 0.0

    @property
    def estimate(self) -> str:
        """The estimate in words ('' when there is none)."""
        if self.eta_s is None:
            return ""
        return f"about {self.eta_s:.0f} s left" if self.eta_s < 120 else f"about {self.eta_s / 60:.0f} min left"

    def text(self) -> str:
        return f"{self.label} · {self.estimate}" if self.estimate else self.label

    def to_dict(self) -> dict:
        return {**asdict(self), "label": self.label, "fraction": self.fraction}


def _left(rate_done: float, rate_seconds: float, remaining: float, since_last: float) -> float | None:
    """Seconds left for ``remaining`` units at ``rate_done`` units per ``rate_seconds``, counted from
    the last event (``since_last`` seconds ago)."""
    if rate_done <= 0 or rate_seconds <= 0:
        return None
    return max(0.0, remaining * rate_seconds / rate_done - since_last)


def _evaluation_seconds(events: list[dict]) -> list[float]:
    """Durations of the validations these events saw end (phase(validate) to its val event)."""
    out, began = [], None
    for e in events:
        if e.get("event") == "phase" and e.get("phase") == "validate":
            began = e["ts"]
        elif e.get("event") == "val" and began is not None:
            out.append(e["ts"] - began)
            began = None
    return out


def job_progress(events: list[dict], status: str = "running", now: float | None = None, last_step: int = 0,
                 total_steps: int | None = None, kind: str = "train") -> JobProgress:
    """The progress of a job from the ``events`` of its current launch and its ``status``
    (:data:`relviz.jobs.store.STATES`); ``last_step``/``total_steps`` are what is known when the
    events say nothing (a launch that has not started). ``now`` (epoch seconds) dates the estimate.
    ``kind``: a few-shot job (``label_efficiency``) counts no steps and loads no teacher."""
    now = time.time() if now is None else now
    priority = next((e for e in reversed(events) if e.get("event") == "priority"), {})
    step = next((e["step"] for e in reversed(events) if "step" in e), last_step)
    total = next((e["total_steps"] for e in reversed(events) if "total_steps" in e), total_steps)
    common = dict(niceness=priority.get("niceness"), threads=priority.get("threads"), cores=priority.get("cores"))
    mark = next((e for e in reversed(events) if e.get("event") in _MARKS), None)
    if kind != "train":  # a few-shot job: no steps to count, and it loads a student, not a teacher
        step = total = None
        common["detail"] = "the student and the dataset"
    if status in ENDED:
        return JobProgress(ENDED[status], step, total, **common)
    if status == "queued":
        return JobProgress("queued", step, total, **common)
    if mark is None:  # the process is starting (Python and torch load before the first event)
        return JobProgress("starting", **common)
    kind, since = mark["event"], now - mark["ts"]
    if kind in ("done", "failed", "cancelled"):  # the process is still exiting
        return JobProgress({"done": "finished"}.get(kind, kind), step, total, **common)
    if kind == "prepare":
        prepared = [e for e in events if e.get("event") == "prepare"]
        first = prepared[0]
        eta = _left(mark["done"] - first["done"], mark["ts"] - first["ts"], mark["total"] - mark["done"], since)
        return JobProgress("preparing", mark["done"], mark["total"], 0.0 if mark["done"] >= mark["total"] else eta,
                           **common)
    if kind == "fewshot":
        same = [e for e in events if e.get("event") == "fewshot" and e.get("task") == mark["task"]]
        eta = _left(mark["done"] - same[0]["done"], mark["ts"] - same[0]["ts"], mark["total"] - mark["done"], since)
        return JobProgress("few-shot", mark["done"], mark["total"], eta,
                           **{**common, "detail": f"{mark['task']}, part {mark['part']} of {mark['parts']}"})
    if kind == "phase" and mark.get("phase") == "validate":
        took = _evaluation_seconds(events)
        eta = max(0.0, sum(took) / len(took) - since) if took else None
        return JobProgress("evaluating", mark.get("step", step), total, eta, **common)
    if kind == "phase" and mark.get("phase") == "finalize":
        return JobProgress("saving", step, total, **common)
    if kind == "phase":
        return JobProgress("loading", **common)
    last = next((e for e in reversed(events) if e.get("event") == "step"), None)
    eta = max(0.0, last["eta_s"] - (now - last["ts"])) if last is not None and "eta_s" in last else None
    return JobProgress("training", step, total, eta, **common)


def _curve(events: list[dict], event: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """One row per step of the ``event`` events, sorted by step; a step logged twice (a resumed run
    repeats what came after its checkpoint) keeps its last value."""
    import pandas as pd

    rows = [{"step": e["step"], **{c: e.get(c) for c in columns}} for e in events if e.get("event") == event]
    frame = pd.DataFrame(rows, columns=["step", *columns])
    return frame.drop_duplicates("step", keep="last").sort_values("step", kind="stable").reset_index(drop=True)


def validation_curve(events: list[dict]) -> pd.DataFrame:
    """U, T, G and zero-shot mIoU of the student at every validation in ``events``: columns ``step``
    and :data:`VALIDATION_METRICS`, one row per validated step."""
    return _curve(events, "val", VALIDATION_METRICS)


def loss_curve(events: list[dict]) -> pd.DataFrame:
    """The training loss at every logged step: columns ``step``, ``loss``."""
    return _curve(events, "step", ("loss",))


def read_validation_curve(run_dir: str | Path) -> pd.DataFrame:
    """:func:`validation_curve` of every launch of the run in ``run_dir`` (a job's or any run folder)."""
    return validation_curve(read_events(RunDir(run_dir).events)[0])
