"""A training run's folder, readable without importing the trainer (the job store and the app read it):

    <run>/config.json            the run's TrainConfig (written atomically)
    <run>/events.jsonl           one JSON object per line, appended (EventLog)
    <run>/train.log              stdout and stderr of a background job
    <run>/checkpoints/last.safetensors   the last checkpoint's weights (the commit point)
    <run>/checkpoints/state-<step>.pt    the optimizer state of that step
    <run>/student.safetensors    the final student, when training finished
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path


class EventLog:
    """Append-only JSONL events, safe to write from the heartbeat thread and the training loop."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = path, enabled
        self._lock = threading.Lock()

    def write(self, event: str, **fields) -> None:
        if not self.enabled:
            return
        line = json.dumps({"ts": round(time.time(), 3), "event": event, **fields})
        with self._lock, open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()


def run_checkpoint(run_dir: str | Path) -> Path | None:
    """A run folder's student: the final checkpoint when training finished, else the last one saved,
    else None."""
    final = Path(run_dir) / "student.safetensors"
    last = Path(run_dir) / "checkpoints" / "last.safetensors"
    return final if final.is_file() else (last if last.is_file() else None)


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
