"""A training run's folder, readable without importing the trainer (the job store and the app read it):

    <run>/config.json            the run's TrainConfig (written atomically)
    <run>/events.jsonl           one JSON object per line, appended (EventLog)
    <run>/train.log              stdout and stderr of a background job
    <run>/checkpoints/last.safetensors   the last checkpoint's weights (the commit point)
    <run>/checkpoints/state-<step>.pt    the optimizer state of that step
    <run>/student.safetensors    the final student, when training finished
    <run>/tensorboard/           TensorBoard event files and projector embeddings, written by a sink
                                 of the event log (relviz.train.tensorboard)
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence


class EventLog:
    """Append-only JSONL events, safe to write from the heartbeat thread and the training loop.

    ``sinks``: callables given every event record (the dict written as a line) after it is written,
    in the same lock, e.g. :class:`relviz.train.tensorboard.TensorBoardSink`. The JSONL file is the
    record the job store and the app read; a sink that raises is dropped with a ``sink_failed`` event,
    never failing the run."""

    def __init__(self, path: Path, enabled: bool = True, sinks: Sequence[Callable[[dict], None]] = ()):
        self.path, self.enabled = path, enabled
        self.sinks = list(sinks)
        self._lock = threading.Lock()

    def write(self, event: str, **fields) -> None:
        if not self.enabled:
            return
        record = {"ts": round(time.time(), 3), "event": event, **fields}
        with self._lock, open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()  # readers see the event before any sink runs
            for sink in list(self.sinks):
                try:
                    sink(record)
                except Exception as e:  # a log for people must never stop training
                    self.sinks.remove(sink)
                    failed = {"ts": round(time.time(), 3), "event": "sink_failed", "sink": type(sink).__name__,
                              "error": f"{type(e).__name__}: {e}"}
                    f.write(json.dumps(failed) + "\n")
                    f.flush()

    def close(self) -> None:
        """Close the sinks that hold files (their buffered records are written)."""
        with self._lock:
            for sink in self.sinks:
                getattr(sink, "close", lambda: None)()


class Heartbeat:
    """A ``heartbeat`` event every ``every_s`` seconds from a daemon thread, from :meth:`start` to
    :meth:`stop` (which returns once the thread has ended, so a terminal event written next is the
    last line). The job store calls a run whose events stop for a minute lost."""

    def __init__(self, events: EventLog, every_s: float = 10.0):
        self.events, self.every_s = events, every_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="relviz-heartbeat")

    def start(self) -> "Heartbeat":
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stopped.is_set():
            self.events.write("heartbeat")
            self._stopped.wait(self.every_s)

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()


@dataclass(frozen=True)
class RunDir:
    """The layout of one run folder (the module docstring); every reader and writer goes through it."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def events(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def log(self) -> Path:
        return self.path / "train.log"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last(self) -> Path:
        """The last checkpoint's weights: the commit point of a checkpoint (see Trainer.save)."""
        return self.checkpoints / "last.safetensors"

    def optimizer_state(self, step: int) -> Path:
        return self.checkpoints / f"state-{step:08d}.pt"

    @property
    def final(self) -> Path:
        return self.path / "student.safetensors"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    def checkpoint(self) -> Path | None:
        """This run's student: the final checkpoint when training finished, else the last one
        saved, else None."""
        return self.final if self.final.is_file() else (self.last if self.last.is_file() else None)



def log_line(record: dict) -> str | None:
    """The line a person reads in ``train.log`` for an event record (None for events it leaves to
    the events file): one per logged step with its loss, learning rate, speed and time left, one per
    validation with U, T, G and zero-shot mIoU, and the phases, checkpoints and the end."""
    e = record.get("event")
    if e == "step":
        eta = record.get("eta_s")
        left = "" if eta is None else f"  eta {int(eta) // 60} min {int(eta) % 60:02d} s"
        return (f"step {record['step']}/{record.get('total_steps', '?')}  loss {record['loss']:.4f}  "
                f"lr {record['lr']:.4g}  {record.get('it_s', 0):.2f} steps/s{left}")
    if e == "val":
        parts = [f"{name} {record[key]:.3f}" for key, name in (("uniformity", "U"), ("tolerance", "T"), ("gap", "G"),
                                                                ("zeroshot_miou", "zero-shot mIoU"))
                 if isinstance(record.get(key), (int, float))]
        return f"validation at step {record['step']}: " + ", ".join(parts)
    if e == "phase":
        return f"phase: {record.get('phase')}" + (f" (step {record['step']})" if "step" in record else "")
    if e == "checkpoint":
        return f"checkpoint at step {record.get('step')}"
    if e in ("done", "failed", "cancelled"):
        return f"{e}" + (f": {record['error']}" if record.get("error") else "")
    return None


def stdout_log(record: dict) -> None:
    """An events sink printing :func:`log_line` to stdout (the job's ``train.log``), flushed per line."""
    line = log_line(record)
    if line is not None:
        print(line, flush=True)


def read_events(path: str | Path, offset: int = 0) -> tuple[list[dict], int]:
    """Events after byte ``offset`` and the new offset (a partial last line is left for later)."""
    path = Path(path)
    if not path.is_file():
        return [], offset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    events = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
    return events, offset + end
