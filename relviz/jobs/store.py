"""Background jobs (distillation runs, and few-shot label-efficiency jobs, :mod:`relviz.jobs.fewshot`):
a SQLite (WAL) store, one detached process group per job.

A job is ``python -m relviz.jobs.run --config <run>/config.json --run-dir <run>`` started in its own
session (process group) with stdout and stderr in ``<run>/train.log``; the trainer writes
``<run>/events.jsonl``. The store is reconciled at every read: a terminal event decides succeeded,
failed or cancelled; a process that is gone without one, whose PID now belongs to another process
(start time differs), or whose heartbeat is stale, is *lost* (and resumable from its checkpoint).
Nothing here ever runs through a shell; arguments are lists. A job runs at a lower priority with a
thread count chosen from the machine (:mod:`relviz.jobs.priority`), so that the app stays responsive.

The database is written only in short transactions: a job is recorded and launched in one (a
database that another writer holds is reported before anything starts), and a read writes only
what reconciling changed. SQLite's errors (busy past the timeout, a damaged file) become a
:class:`JobError` that names the file and what to do; the file itself is never replaced or deleted.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from relviz.config import Settings
from relviz.errors import RelvizError
from relviz.files import write_json
from relviz.jobs.priority import JobPriority, choose_priority, renice
from relviz.jobs.progress import JobProgress, job_progress
from relviz.train.config import TrainConfig
from relviz.train.rundir import RunDir, read_events

if TYPE_CHECKING:  # a few-shot job's module imports the evaluation stack: not needed to list or launch jobs
    from relviz.jobs.fewshot import FewshotJob

STATES = ("queued", "running", "succeeded", "failed", "cancelled", "lost")
TERMINAL = ("succeeded", "failed", "cancelled", "lost")
HEARTBEAT_STALE_S = 60.0
BUSY_TIMEOUT_S = 30.0  # how long a write waits for another writer before JobError says the database is busy

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, name TEXT, status TEXT NOT NULL, config_json TEXT NOT NULL,
    run_dir TEXT NOT NULL, pid INTEGER, pgid INTEGER, proc_start REAL, nproc INTEGER DEFAULT 1,
    created_at REAL NOT NULL, started_at REAL, ended_at REAL, exit_code INTEGER, error TEXT,
    resume_of TEXT, last_step INTEGER DEFAULT 0, total_steps INTEGER, events_offset INTEGER DEFAULT 0
)
"""


class JobError(RelvizError):
    """A job request that cannot be carried out; the message says why."""


@dataclass
class Job:
    id: str
    name: str
    status: str
    config: dict
    run_dir: Path
    pid: int | None
    pgid: int | None
    proc_start: float | None
    nproc: int
    created_at: float
    started_at: float | None
    ended_at: float | None
    exit_code: int | None
    error: str | None
    resume_of: str | None
    last_step: int
    total_steps: int | None
    events_offset: int = 0  # where the current launch's events begin (a resume appends)

    @property
    def kind(self) -> str:
        """``train`` (a distillation run) or ``label_efficiency`` (a few-shot job, :mod:`relviz.jobs.fewshot`)."""
        return self.config.get("kind", "train")

    @property
    def log_path(self) -> Path:
        return RunDir(self.run_dir).log

    @property
    def events_path(self) -> Path:
        return RunDir(self.run_dir).events

    @property
    def checkpoint(self) -> Path | None:
        return RunDir(self.run_dir).checkpoint()

    @property
    def progress(self) -> float:
        return min(1.0, self.last_step / self.total_steps) if self.total_steps else 0.0


class JobStore:
    def __init__(self, settings: Settings, timeout_s: float | None = None, priority: JobPriority | None = None):
        """``settings``: the workspace (its ``jobs.sqlite``, runs and datasets); ``timeout_s``: how long
        a write waits for another writer (default :data:`BUSY_TIMEOUT_S`); ``priority``: what every job
        launched here runs at (default: :func:`relviz.jobs.priority.choose_priority` for its processes)."""
        self.settings = settings.ensure()
        self.priority = priority
        self.db_path = self.settings.jobs_db
        self.timeout_s = BUSY_TIMEOUT_S if timeout_s is None else timeout_s
        with self._connect() as con:
            if con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'").fetchone() is None:
                con.execute(_SCHEMA)  # only a new database is written to here: opening never waits for a writer

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in autocommit mode (``BEGIN IMMEDIATE`` ... ``COMMIT`` where several statements
        must land together), closed on exit; SQLite's errors leave as :class:`JobError`."""
        con = None
        try:
            con = sqlite3.connect(self.db_path, timeout=self.timeout_s, isolation_level=None)
            con.row_factory = sqlite3.Row
            con.execute(f"PRAGMA busy_timeout={int(self.timeout_s * 1000)}")
            con.execute("PRAGMA journal_mode=WAL")
            yield con
        except sqlite3.Error as e:
            error = self._error(e)
            if error is None:
                raise  # a bug here (a bad statement, a duplicate id), not a problem of the file
            raise error from e
        finally:
            if con is not None:
                con.close()  # an open transaction is rolled back: nothing half-recorded

    def _error(self, e: sqlite3.Error) -> JobError | None:
        """What the user can do about a SQLite error of the database file; None for any other error."""
        db, code = self.db_path, getattr(e, "sqlite_errorname", None) or ""
        if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            return JobError(f"the job database {db} is locked: another writer has held it for more than "
                            f"{self.timeout_s:g} s, so nothing was changed; try again when the other process "
                            f"(another relviz command or app, or a tool that opened {db.name}) has finished")
        if code.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
            return JobError(f"the job database {db} is damaged ({e}); it was left as it is. Move it aside "
                            f"(mv {db} {db}.damaged) and relviz starts an empty one; the runs themselves "
                            f"(checkpoints, logs, events) stay in {self.settings.runs_dir}")
        if code.startswith(("SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_FULL", "SQLITE_READONLY", "SQLITE_PERM")):
            return JobError(f"the job database {db} cannot be used ({e}); expected a SQLite file that this user "
                            "can read and write, in a folder with free space")
        return None

    def _row(self, r: sqlite3.Row) -> Job:
        d = dict(r)
        return Job(id=d["id"], name=d["name"], status=d["status"], config=json.loads(d["config_json"]),
                   run_dir=Path(d["run_dir"]), pid=d["pid"], pgid=d["pgid"], proc_start=d["proc_start"],
                   nproc=d["nproc"] or 1, created_at=d["created_at"], started_at=d["started_at"],
                   ended_at=d["ended_at"], exit_code=d["exit_code"], error=d["error"], resume_of=d["resume_of"],
                   last_step=d["last_step"] or 0, total_steps=d["total_steps"], events_offset=d["events_offset"] or 0)

    def _update(self, job_id: str, con: sqlite3.Connection | None = None, **fields) -> None:
        """Set ``fields`` of a job, through ``con`` (inside its transaction) or a connection of its own."""
        cols = ", ".join(f"{k} = ?" for k in fields)
        if con is not None:
            con.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))
            return
        with self._connect() as own:
            own.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))

    # ------------------------------------------------------------------------------------- submit
    def submit(self, config: TrainConfig, name: str | None = None, nproc: int = 1, resume_of: str | None = None,
               run_dir: Path | None = None) -> Job:
        """Validate, record and launch a training job; returns it (running)."""
        config = config.validate()
        if not self.settings.dataset_root(config.dataset).is_dir():
            raise JobError(f"dataset {self.settings.dataset_root(config.dataset)} does not exist")
        if nproc < 1:
            raise JobError(f"nproc must be >= 1, got {nproc}")
        return self._record_and_launch(config.to_dict(), name or f"{config.loss}-{config.arch}", nproc, resume_of,
                                       run_dir)

    def submit_fewshot(self, job: "FewshotJob", name: str | None = None) -> Job:
        """Validate, record and launch a few-shot label-efficiency job (:mod:`relviz.jobs.fewshot`);
        returns it (running). Its progress, cancel and resume are a training job's."""
        job = job.validate()
        return self._record_and_launch(job.to_dict(), name or job.name, 1, None, None)

    def _record_and_launch(self, config: dict, name: str, nproc: int, resume_of: str | None,
                           run_dir: Path | None) -> Job:
        job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        run_dir = run_dir or (self.settings.runs_dir / job_id)
        with self._connect() as con:
            # one transaction: a database held by another writer fails here, before a folder or a
            # process exists; the row and its launch are recorded together
            con.execute("BEGIN IMMEDIATE")
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json(RunDir(run_dir).config, config)
            con.execute("INSERT INTO jobs (id, name, status, config_json, run_dir, nproc, created_at, resume_of) "
                        "VALUES (?, ?, 'queued', ?, ?, ?, ?, ?)",
                        (job_id, name, json.dumps(config), str(run_dir), nproc, time.time(), resume_of))
            self._launch(con, job_id, run_dir, nproc, config.get("kind", "train"))
            con.execute("COMMIT")
        return self.get(job_id)

    def _priority(self, nproc: int) -> JobPriority:
        return self.priority or choose_priority(nproc)

    def _command(self, run_dir: Path, nproc: int, kind: str = "train") -> list[str]:
        train = [*self._priority(nproc).args(), *(["--kind", kind] if kind != "train" else []),
                 "--config", str(RunDir(run_dir).config), "--run-dir", str(run_dir)]
        if nproc == 1:
            return [sys.executable, "-m", "relviz.jobs.run", *train]
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                "-m", "relviz.jobs.run", *train]

    def _launch(self, con: sqlite3.Connection, job_id: str, run_dir: Path, nproc: int, kind: str = "train") -> None:
        """Start the job's process group and record it through ``con`` (the caller's write transaction)."""
        priority = self._priority(nproc)
        env = {**os.environ, **priority.env(), "RELVIZ_HOME": str(self.settings.home), "PYTHONUNBUFFERED": "1"}
        events = RunDir(run_dir).events
        offset = events.stat().st_size if events.is_file() else 0
        with open(RunDir(run_dir).log, "ab") as log:
            proc = subprocess.Popen(self._command(run_dir, nproc, kind), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, env=env, cwd=str(run_dir))
        try:
            start = psutil.Process(proc.pid).create_time()
        except psutil.NoSuchProcess:
            start = None
        try:
            renice(proc.pid, priority.niceness)  # at once, for its imports; it renices itself too and records it
        except ProcessLookupError:
            pass  # already gone: reconcile says how it ended
        self._update(job_id, con, status="running", pid=proc.pid, pgid=proc.pid, proc_start=start,
                     started_at=time.time(), events_offset=offset)
        self._children = getattr(self, "_children", {})
        self._children[job_id] = proc
        # the launching process must reap its child whenever it ends, whichever JobStore instance looks at
        # the job later (the app makes one per rerun): else the ended job stays a zombie of the app server
        threading.Thread(target=proc.wait, name=f"relviz-reap-{job_id}", daemon=True).start()

    # ---------------------------------------------------------------------------------- reading
    def get(self, job_id: str) -> Job:
        with self._connect() as con:
            r = con.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if r is None:
            raise JobError(f"no job {job_id!r}")
        return self.reconcile(self._row(r))

    def list(self) -> list[Job]:
        with self._connect() as con:
            rows = con.execute("SELECT * FROM jobs ORDER BY created_at DESC").fetchall()
        return [self.reconcile(self._row(r)) for r in rows]

    def events(self, job: Job, offset: int = 0) -> tuple[list[dict], int]:
        """Events of the job (all launches) after byte ``offset``, and the next offset."""
        return read_events(job.events_path, offset)

    def progress_of(self, job: Job, now: float | None = None) -> JobProgress:
        """The job's phase, count, estimate and priority, from its run folder now (:mod:`relviz.jobs.progress`)."""
        events, _ = read_events(job.events_path, job.events_offset)
        return job_progress(events, job.status, now, job.last_step, job.total_steps, job.kind)

    def row(self, job: Job) -> dict:
        """The job as a row of the Jobs page's table: status, phase (count and estimate), progress, step."""
        p = self.progress_of(job)
        train = job.kind == "train"  # a few-shot job has no steps: its progress is its current task's
        return {"id": job.id, "name": job.name, "status": job.status, "phase": p.text(),
                "progress": job.progress if train else p.fraction,
                "step": f"{job.last_step}/{job.total_steps or '?'}" if train else "", "error": job.error or ""}

    def log_tail(self, job: Job, lines: int = 200) -> str:
        if not job.log_path.is_file():
            return ""
        with open(job.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 200 * lines))
            return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")

    # ------------------------------------------------------------------------------- reconcile
    def _alive(self, job: Job) -> bool:
        if job.pid is None:
            return False
        child = getattr(self, "_children", {}).get(job.id)
        if child is not None and child.poll() is not None:
            return False  # our own child has exited (poll reaps it)
        try:
            p = psutil.Process(job.pid)
            if job.proc_start is not None and abs(p.create_time() - job.proc_start) > 1.0:
                return False  # the PID was reused by another process
            if p.status() == psutil.STATUS_ZOMBIE:
                if child is not None:
                    child.wait()  # it exited between poll() and here: reap it, so nothing of the job is left
                return False
            return True
        except psutil.NoSuchProcess:
            return False

    def process_alive(self, job: Job) -> bool:
        """Whether the job's process still runs (also for a job ``lost`` by a stale heartbeat: a stopped
        or hung process holds its CPU and memory, and its run folder, until it ends)."""
        return self._alive(job)

    def reconcile(self, job: Job) -> Job:
        """Bring a job's state up to date from its events and its process."""
        if job.status in ("succeeded", "failed", "cancelled"):
            return job
        events, _ = read_events(job.events_path, job.events_offset)
        last_step = next((e["step"] for e in reversed(events) if e.get("event") in ("step", "start", "resumed")
                          and "step" in e), job.last_step)
        total = next((e["total_steps"] for e in reversed(events) if "total_steps" in e), job.total_steps)
        terminal = next((e for e in reversed(events) if e.get("event") in ("done", "failed", "cancelled")), None)
        fields: dict = {"last_step": last_step, "total_steps": total}
        alive = self._alive(job)
        if terminal is not None and (not alive or terminal["event"] != "done"):
            status = {"done": "succeeded", "failed": "failed", "cancelled": "cancelled"}[terminal["event"]]
            fields.update(status=status, ended_at=terminal["ts"], error=terminal.get("error"))
        elif job.status in ("running", "lost"):
            last_seen = events[-1]["ts"] if events else (job.started_at or job.created_at)
            if not alive:
                fields.update(status="lost", ended_at=job.ended_at or time.time(),
                              error="the process ended without a final event (killed or crashed)")
            elif time.time() - last_seen > HEARTBEAT_STALE_S:
                fields.update(status="lost", error=f"no heartbeat for {time.time() - last_seen:.0f} s")
            elif job.status == "lost":
                fields.update(status="running", error=None)
        changed = {k: v for k, v in fields.items() if getattr(job, k) != v}
        if changed:  # a read writes only what reconciling changed (readers do not wait for a writer otherwise)
            self._update(job.id, **changed)
        for k, v in changed.items():
            setattr(job, k, v)
        return job

    # ---------------------------------------------------------------------------------- control
    def _descendants(self, job: Job) -> list[psutil.Process]:
        """The job's processes outside its own group: torchrun starts each rank in a session of its
        own, so a signal to the job's group reaches torchrun but not the ranks."""
        if not self._alive(job):
            return []
        try:
            return [p for p in psutil.Process(job.pid).children(recursive=True) if os.getpgid(p.pid) != job.pgid]
        except (psutil.NoSuchProcess, ProcessLookupError):
            return []

    def cancel(self, job_id: str, grace_s: float = 30.0) -> Job:
        """SIGTERM to the job's process group (the trainer checkpoints and exits; torchrun forwards
        it to its ranks), SIGKILL after ``grace_s`` seconds to the group and to every process the job
        started in another group, if they are still there."""
        job = self.get(job_id)
        if job.status not in ("running", "queued", "lost") or job.pgid is None:
            raise JobError(f"job {job_id} is {job.status}; only running jobs can be cancelled")
        with self._connect() as con:  # the cancellation must be recordable before the job is touched
            con.execute("BEGIN IMMEDIATE")
            con.execute("ROLLBACK")
        others = self._descendants(job)  # now: once torchrun is gone its ranks are nobody's children

        def running(p: psutil.Process) -> bool:  # a zombie has ended (whoever adopted it reaps it)
            try:
                return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return False

        try:  # only the job's own group: a job that ended was reaped at once, and its pgid may be reused
            if self._alive(job):
                os.killpg(job.pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.time() + grace_s
        while time.time() < deadline and (self._alive(job) or any(running(p) for p in others)):
            time.sleep(0.2)
        if self._alive(job) or any(running(p) for p in others):
            try:
                os.killpg(job.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            for p in others:
                try:
                    p.kill()  # psutil checks the process is still the one listed (no PID reuse)
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(others, timeout=10)
            while self._alive(job):
                time.sleep(0.05)
        events, _ = read_events(job.events_path, job.events_offset)
        # a run that ended on its own meanwhile (done: the signal came during its last moments) says so
        # itself, and reconcile reads it; only a run killed without a final event is recorded here
        if not any(e.get("event") in ("cancelled", "done", "failed") for e in events):
            self._update(job_id, status="cancelled", ended_at=time.time(), error="killed after the grace period")
        return self.get(job_id)

    def resume(self, job_id: str) -> Job:
        """Relaunch a cancelled, lost or failed job in its run folder; it continues from its last checkpoint."""
        job = self.get(job_id)
        if job.status in ("running", "queued", "succeeded"):
            raise JobError(f"job {job_id} is {job.status}; only cancelled, lost or failed jobs can be resumed")
        if self._alive(job):  # 'lost' by a stale heartbeat while its process still runs: never two trainers
            raise JobError(f"job {job_id} is marked {job.status} but its process {job.pid} is still alive; cancel it "
                           f"first")
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            self._update(job_id, con, status="queued", ended_at=None, error=None, exit_code=None)
            self._launch(con, job_id, job.run_dir, job.nproc, job.kind)
            con.execute("COMMIT")
        return self.get(job_id)
