"""An experiment in the workspace: its folder, its runs as background jobs, its supervision.

    <home>/experiments/<name>/grid.toml        the experiment file as last given (its cells never change)
    <home>/experiments/<name>/state.json       run key -> job, status, evaluated (written atomically)
    <home>/experiments/<name>/supervisor.lock  held (flock) by the one process supervising it; its pid
    <home>/experiments/<name>/teacher.json     the teacher's structure on the evaluation keyframes
    <home>/experiments/<name>/report.{json,csv,md}
    <home>/runs/<name>-c<i>-<cell>-s<seed>/    one run per cell and seed (a job's run folder), with
        evaluation.json          its evaluations (:mod:`relviz.experiment.evaluate`, replaced whole per piece)
        evaluation.lock          held (flock) by the process evaluating the run; its pid
        evaluation.log           that process's output
        evaluation_error.json    why its last evaluation failed (read by the supervisor that launched it)
        carried.json             a run carried from another machine: its validation curve and origin
                                 (:mod:`relviz.experiment.carry`; such a run has no job and is not trained)

Supervising (:meth:`Experiment.supervise`) is a loop of steps: evaluate finished runs and launch missing
runs (resuming interrupted ones) while fewer than ``max_running`` trainings and evaluations run, write
the state. Trainings are jobs (:mod:`relviz.jobs`) and evaluations processes of their own
(``python -m relviz.experiment NAME --evaluate KEY``, launched as a job is: an argument list, a session
of its own, the job's niceness and thread rule, :mod:`relviz.jobs.priority`), so both share the slots
and outlive a supervisor that stops; a re-run of the experiment skips finished runs, resumes the
interrupted ones from their checkpoints, lets running evaluations finish (their lock says they run),
evaluates again what an evaluation killed mid-way left (from the pieces it stored) and launches the rest.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from relviz.config import Settings
from relviz.errors import InputError, RelvizError
from relviz.experiment.aggregate import aggregate, report_cells, run_metrics, run_replicates, write_report
from relviz.experiment.claims import paper_claims
from relviz.experiment.evaluate import (EVALUATION_FILE, evaluate_run, ood_roots, stored_evaluation, teacher_key,
                                       teacher_reference)
from relviz.experiment.spec import Cell, ExperimentError, ExperimentSpec, read_spec_text, spec_from_text
from relviz.files import atomic_path, read_json, write_json
from relviz.jobs import Job, JobStore
from relviz.train.config import TrainConfig, TrainConfigError
from relviz.train.rundir import RunDir

ACTIVE = ("queued", "running")
INTERRUPTED = ("cancelled", "lost")
EVALUATION_LOCK = "evaluation.lock"
EVALUATION_LOG = "evaluation.log"
EVALUATION_ERROR = "evaluation_error.json"
CARRIED_FILE = "carried.json"  # a carried run's validation curve and origin (its events stayed where it trained)
# an evaluation process of this supervisor that ended with neither its results nor an error (killed,
# out of memory) is launched again (it continues from the pieces it stored) until it has ended so this
# many times; then its run is reported as failed until the next supervision
EVALUATION_ATTEMPTS = 2


def experiments_dir(settings: Settings) -> Path:
    return settings.home / "experiments"


def list_experiments(settings: Settings) -> list[str]:
    root = experiments_dir(settings)
    return sorted(p.name for p in root.iterdir() if (p / "grid.toml").is_file()) if root.is_dir() else []


def settings_to_json(settings: Settings) -> str:
    """``settings`` as one JSON object (paths as strings): what an evaluation process is given, so that
    it builds the runs' configs over exactly the supervisor's settings (the demo replaces some)."""
    return json.dumps({f.name: str(v) if isinstance(v := getattr(settings, f.name), Path) else v
                       for f in dataclasses.fields(settings)})


def settings_from_json(text: str) -> Settings:
    """The settings :func:`settings_to_json` wrote; an InputError naming what is wrong otherwise."""
    try:
        values = json.loads(text)
        for key in ("home", "config_file"):
            if values.get(key) is not None:
                values[key] = Path(values[key])
        return Settings(**values)
    except (ValueError, TypeError, AttributeError) as e:
        raise InputError(f"--settings: expected the JSON object of relviz settings an experiment's supervisor "
                         f"writes (home, device, ...), got {text[:80]!r} ({e})") from None


def evaluation_holder(run_dir: str | Path) -> int | None:
    """The pid of the process evaluating the run in ``run_dir`` now (it holds the run's evaluation lock;
    -1 when it has not said its pid yet), or None when none does."""
    return lock_holder(Path(run_dir) / EVALUATION_LOCK)


def lock_holder(path: Path) -> int | None:
    """The pid written in the lock file ``path`` by the process holding its flock (-1 when it has not
    written it yet), or None when no process holds it."""
    if not path.is_file():
        return None
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = f.read().strip()
            return int(text) if text.isdigit() else -1
        return None  # closing the file releases the shared lock just taken


@contextmanager
def holding_evaluation_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold the run's evaluation lock with this process's pid for the block (an evaluation started by
    hand: the supervisor's own hand theirs over at launch); an ExperimentError when another process
    evaluates the run."""
    path = Path(run_dir) / EVALUATION_LOCK
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExperimentError(f"run {run_dir} is being evaluated by process {evaluation_holder(run_dir)}") from None
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        yield


@dataclass(frozen=True)
class RunPlan:
    """One run of the experiment: a cell trained with one seed, in its own run folder."""

    key: str  # c<i>-<cell slug>-s<seed>, unique in the experiment
    cell: Cell
    seed: int
    config: TrainConfig
    run_dir: Path

    @property
    def name(self) -> str:
        return self.run_dir.name


class Experiment:
    def __init__(self, settings: Settings, spec: ExperimentSpec, text: str, source: str | Path):
        """``text``: the experiment file's contents (kept in the experiment's folder); ``source``:
        where it came from, named in errors. Every run's config is built and checked here."""
        self.settings, self.spec, self.text, self.source = settings, spec, text, str(source)
        self.folder = experiments_dir(settings) / spec.name
        self.plans = [self._plan(cell, seed) for cell, seed in spec.runs()]
        self._evaluations: dict[str, subprocess.Popen] = {}  # run key -> the evaluation process launched here
        self._evaluation_ends: dict[str, int] = {}  # run key -> its processes that ended without results
        try:  # an out-of-distribution dataset that is not there fails now, not after hours of training
            ood_roots(settings, spec.evaluation)
        except ExperimentError as e:
            raise ExperimentError(f"experiment file {self.source}: {e}") from None

    def _plan(self, cell: Cell, seed: int) -> RunPlan:
        try:  # the one way a config is built: defaults < preset < settings < [train] < the cell
            config = TrainConfig.from_settings(self.settings, preset=self.spec.preset, **self.spec.train, **cell.values,
                                                seed=seed)
        except TrainConfigError as e:
            raise ExperimentError(f"experiment file {self.source}: cell {cell.label}: {e}") from e
        root = self.settings.dataset_root(config.dataset)
        if not root.is_dir():
            raise ExperimentError(f"experiment file {self.source}: cell {cell.label}: dataset {root} does not exist "
                                  f"(generate it with `relviz synth`, or give a nuScenes dataroot)")
        key = f"c{cell.index}-{cell.slug}-s{seed}"
        return RunPlan(key, cell, seed, config, self.settings.runs_dir / f"{self.spec.name}-{key}")

    # ------------------------------------------------------------------------------ opening
    @property
    def grid_path(self) -> Path:
        return self.folder / "grid.toml"

    @property
    def state_path(self) -> Path:
        return self.folder / "state.json"

    @classmethod
    def from_file(cls, settings: Settings, path: str | Path) -> "Experiment":
        """The experiment declared in ``path``; when its folder exists already, the file must declare
        the same cells as its stored copy (:meth:`ExperimentSpec.identity`)."""
        text = read_spec_text(path)
        exp = cls(settings, spec_from_text(text, path), text, path)
        if exp.grid_path.is_file():
            stored = cls.open(settings, exp.spec.name)
            if stored.spec.identity() != exp.spec.identity():
                changed = [k for k, v in exp.spec.identity().items() if stored.spec.identity()[k] != v]
                raise ExperimentError(f"experiment file {path}: experiment {exp.spec.name!r} exists in "
                                      f"{exp.folder} with another declaration ({', '.join(changed)} differ from "
                                      f"{stored.grid_path}); give it another [experiment] name to start a new one")
        return exp

    @classmethod
    def open(cls, settings: Settings, name: str) -> "Experiment":
        """The experiment ``name`` of the workspace, as its stored file declares it."""
        grid = experiments_dir(settings) / name / "grid.toml"
        if not grid.is_file():
            known = list_experiments(settings)
            raise ExperimentError(f"no experiment {name!r} in {experiments_dir(settings)} (known: "
                                  f"{', '.join(known) or 'none'}); start one with `relviz experiment run FILE`")
        text = read_spec_text(grid)
        return cls(settings, spec_from_text(text, grid, default_name=name), text, grid)

    def save_grid(self) -> None:
        """Keep the experiment file in the experiment's folder (the latest; its cells never change)."""
        if not self.grid_path.is_file() or self.grid_path.read_text() != self.text:
            with atomic_path(self.grid_path) as tmp:
                Path(tmp).write_text(self.text)

    # -------------------------------------------------------------------------------- state
    def read_state(self) -> dict:
        state = read_json(self.state_path)
        return state if isinstance(state, dict) and isinstance(state.get("runs"), dict) else \
            {"name": self.spec.name, "runs": {}}

    def _write_state(self, state: dict) -> None:
        write_json(self.state_path, {**state, "updated_at": time.time()})

    def _jobs(self, store: JobStore, state: dict) -> dict[str, Job | None]:
        """Each run's job: the one the state names, else the newest job in the run's folder (a job
        recorded before the state was written), else None."""
        jobs = store.list()  # newest first, reconciled with their processes
        by_id = {j.id: j for j in jobs}
        by_dir: dict[str, Job] = {}
        for j in jobs:
            by_dir.setdefault(str(j.run_dir), j)
        return {p.key: by_id.get((state["runs"].get(p.key) or {}).get("job_id")) or by_dir.get(str(p.run_dir))
                for p in self.plans}

    def _check_configs(self, state: dict) -> None:
        """A run launched before must be the run the experiment declares now (the settings, which
        configs are built over, may have changed since)."""
        for p in self.plans:
            old = (state["runs"].get(p.key) or {}).get("config")
            if old is not None:  # recorded before a field existed: that field at its default, as the run had it
                old = {**TrainConfig().to_dict(), **old}
            if old is not None and old != p.config.to_dict():
                changed = ", ".join(f"{k}: {old.get(k)!r} then, {v!r} now" for k, v in p.config.to_dict().items()
                                    if old.get(k) != v)
                raise ExperimentError(f"experiment {self.spec.name}: run {p.key} was launched with other training "
                                      f"fields ({changed}); restore the settings it ran with, or start a new "
                                      f"experiment")

    # ---------------------------------------------------------------------------- supervising
    def interrupted(self, store: JobStore, retry_failed: bool = False) -> set[str]:
        """Keys of the runs whose job was cancelled or lost (and failed, with ``retry_failed``)."""
        wanted = INTERRUPTED + (("failed",) if retry_failed else ())
        return {k for k, j in self._jobs(store, self.read_state()).items() if j is not None and j.status in wanted}

    def _advance(self, store: JobStore, resume: set[str] | None = None, max_running: int | None = None,
                 skip_evaluation: set[str] | None = None, log: Callable[[str], None] | None = None) -> dict:
        """One step of supervision, with at most ``max_running`` (default the file's) trainings and
        evaluations running at once: first evaluate finished runs not in ``skip_evaluation`` (each in a
        process of its own, :meth:`_launch_evaluation`), then launch runs without a job and resume the
        runs in ``resume`` (each key is removed once resumed). An evaluation launched here that failed
        is added to ``skip_evaluation`` with its ``evaluation_error`` in the state. Writes and returns
        the state."""
        resume = set() if resume is None else resume
        skip_evaluation = set() if skip_evaluation is None else skip_evaluation
        limit = max_running or self.spec.max_running
        self.save_grid()
        state = self.read_state()
        self._check_configs(state)
        jobs = self._jobs(store, state)
        # the locks first: an evaluation whose lock is free now has written all it will before the results are read
        evaluating = {p.key for p in self.plans if evaluation_holder(p.run_dir) is not None}
        evaluated = {p.key: stored_evaluation(p.run_dir, p.config, self.spec.evaluation_for(p.cell)) is not None
                     for p in self.plans}
        for p in self.plans:
            state["runs"].setdefault(p.key, {})
        self._collect_evaluations(state, evaluated, evaluating, skip_evaluation, log)
        # a job lost by a stale heartbeat whose process still runs (stopped, hung) still holds its slot
        running = sum(j is not None and (j.status in ACTIVE or j.status == "lost" and store.process_alive(j))
                      for j in jobs.values()) + len(evaluating)
        # evaluations first: a finished run's results come as soon as a slot is free, and the longest
        # pieces of work (fine-tuning evaluations) start early rather than last, alone
        for p in self.plans:
            job = jobs[p.key]
            if running < limit and job is not None and job.status == "succeeded" and not evaluated[p.key] \
                    and p.key not in evaluating and p.key not in skip_evaluation:
                self._launch_evaluation(store, p, state["runs"][p.key], log)  # False: another process took it
                evaluating.add(p.key)
                running += 1
        for p in self.launch_order():
            job, entry = jobs[p.key], state["runs"][p.key]
            if job is not None and job.status not in (*INTERRUPTED, "failed"):
                resume.discard(p.key)  # finished, or resumed by someone else meanwhile
            if evaluated[p.key]:  # its evaluation is what a run is for (a carried run has no job here)
                resume.discard(p.key)
            elif running < limit and (job is None or p.key in resume and not store.process_alive(job)):
                job = self._launch(store, p, job, log)
                resume.discard(p.key)
                running += 1
            entry.update(job_id=job.id if job else None, cell=p.cell.label, seed=p.seed, run_dir=str(p.run_dir),
                         config=p.config.to_dict(), status=run_status(job, evaluated[p.key]),
                         step=job.last_step if job else 0, total_steps=job.total_steps if job else None,
                         error=job.error if job else None, evaluated=evaluated[p.key],
                         evaluating=p.key in evaluating)
            if evaluated[p.key]:  # by whichever process: an error of an earlier try is no longer the run's
                entry["evaluation_error"] = None
        self._write_state(state)
        return state

    def _launch(self, store: JobStore, plan: RunPlan, job: Job | None, log) -> Job:
        if job is None:
            job = store.submit(plan.config, name=plan.name, run_dir=plan.run_dir)
            what = "launched"
        else:
            what = f"resumed from {self._checkpoint_step(plan)}"
            job = store.resume(job.id)
        if log:
            log(f"{plan.key}: {what} (job {job.id})")
        return job

    @staticmethod
    def _checkpoint_step(plan: RunPlan) -> str:
        """Where a resumed run continues: the step of its last checkpoint (what the trainer loads)."""
        from relviz.models.checkpoint import read_metadata

        last = RunDir(plan.run_dir).last
        return f"step {read_metadata(last).get('step')}" if last.is_file() else "the start (no checkpoint)"

    def _launch_evaluation(self, store: JobStore, plan: RunPlan, entry: dict, log) -> bool:
        """Start the evaluation of a finished run in a process of its own, ``python -m relviz.experiment
        NAME --evaluate KEY`` (an argument list, a session of its own, the niceness and torch threads
        of ``store``'s jobs, :mod:`relviz.jobs.priority`), its output in the run's ``evaluation.log``.
        The run's evaluation lock is taken here and handed to the process (an inherited descriptor),
        so no second evaluation of the run can start in between; False (nothing launched) when
        another process holds it."""
        from relviz.jobs.priority import choose_priority, renice

        fd = os.open(plan.run_dir / EVALUATION_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            (plan.run_dir / EVALUATION_ERROR).unlink(missing_ok=True)  # from an earlier try
            priority = store.priority or choose_priority(1)
            args = [sys.executable, "-m", "relviz.experiment", self.spec.name, "--evaluate", plan.key,
                    "--lock-fd", str(fd), "--settings", settings_to_json(self.settings), *priority.args()]
            env = {**os.environ, **priority.env(), "PYTHONUNBUFFERED": "1"}
            with open(plan.run_dir / EVALUATION_LOG, "ab") as out:
                proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True, env=env, cwd=str(plan.run_dir), pass_fds=(fd,))
            os.ftruncate(fd, 0)
            os.write(fd, str(proc.pid).encode())
            try:
                renice(proc.pid, priority.niceness)  # at once, for its imports; it renices itself too
            except ProcessLookupError:
                pass  # already gone: the next step reads how it ended
        finally:
            os.close(fd)  # the child's copy keeps the lock until it exits
        # reaped whenever it ends, also after this supervision has returned (no zombie of a --wait shell)
        threading.Thread(target=proc.wait, name=f"relviz-evaluation-{plan.key}", daemon=True).start()
        self._evaluations[plan.key] = proc
        entry.update(evaluation_error=None)
        if log:
            log(f"{plan.key}: evaluating in process {proc.pid} (log: {plan.run_dir / EVALUATION_LOG})")
        return True

    def _collect_evaluations(self, state: dict, evaluated: dict[str, bool], evaluating: set[str],
                             skip_evaluation: set[str], log) -> None:
        """The evaluation processes launched here that have ended (their lock is free): evaluated, or
        failed (their ``evaluation_error.json``: the run's ``evaluation_error``, not tried again in this
        supervision), or gone without either (killed): launched again by the next step, until
        :data:`EVALUATION_ATTEMPTS` such ends."""
        for key, proc in list(self._evaluations.items()):
            if key in evaluating:
                continue
            del self._evaluations[key]
            try:
                code = proc.wait(timeout=10)  # its lock is free, so it has exited or is exiting
            except subprocess.TimeoutExpired:
                code = None
            plan = next(p for p in self.plans if p.key == key)
            entry = state["runs"][key]
            failure = read_json(plan.run_dir / EVALUATION_ERROR)
            if evaluated[key]:
                entry.update(evaluation_error=None)
                if log:
                    log(f"{key}: evaluated")
            elif isinstance(failure, dict) and failure.get("error"):
                entry.update(evaluation_error=str(failure["error"]))
                skip_evaluation.add(key)
                if log:
                    log(f"{key}: evaluation failed ({failure['error']})")
            else:
                ends = self._evaluation_ends[key] = self._evaluation_ends.get(key, 0) + 1
                if ends >= EVALUATION_ATTEMPTS:
                    entry.update(evaluation_error=f"the evaluation process ended {ends} times without its results or "
                                                 f"an error (last exit code {code}; killed?); its output is in "
                                                 f"{plan.run_dir / EVALUATION_LOG}")
                    skip_evaluation.add(key)
                if log:
                    log(f"{key}: the evaluation process ended without its results (exit code {code}); "
                        + ("not tried again until the next supervision" if ends >= EVALUATION_ATTEMPTS else
                           "evaluating again from the pieces it stored"))

    def launch_order(self) -> list[RunPlan]:
        """The runs in the order they are launched: seed by seed (every cell's first seed, then every
        cell's second, ...), so that an experiment stopped part-way has every configuration at its
        first seeds rather than some cells at all their seeds and others at none."""
        # stable: the file's cell order within a seed
        return sorted(self.plans, key=lambda p: self.spec.seeds_for(p.cell).index(p.seed))

    def plan(self, key: str) -> RunPlan:
        """The run ``key`` of the experiment (c<i>-<cell>-s<seed>)."""
        for p in self.plans:
            if p.key == key:
                return p
        raise ExperimentError(f"experiment {self.spec.name} has no run {key!r} (runs: "
                              f"{', '.join(p.key for p in self.plans[:4])}{', ...' if len(self.plans) > 4 else ''})")

    def evaluate_in_this_process(self, key: str, log: Callable[[str], None] | None = None) -> bool:
        """Evaluate the finished run ``key`` here (what an evaluation process runs; its caller holds the
        run's evaluation lock): the teacher's reference first (once per experiment: under its lock,
        :func:`teacher_reference`), then the run's evaluations (:func:`evaluate_run`, continuing from
        the pieces stored). A failure is written to the run's ``evaluation_error.json``, which the
        supervisor reports as the run's ``evaluation_error``; returns whether it succeeded."""
        plan = self.plan(key)
        error_path = plan.run_dir / EVALUATION_ERROR
        for stale in plan.run_dir.glob(f".{EVALUATION_FILE}.*.tmp"):  # a write cut short by a kill
            stale.unlink(missing_ok=True)
        try:
            teacher_reference(self.folder / "teacher.json", plan.config, self.spec.evaluation, self.settings, log)
            evaluate_run(plan.run_dir, plan.config, self.spec.evaluation_for(plan.cell), self.settings, log)
        except RelvizError as e:  # a run that cannot be evaluated is reported; the others go on
            message = str(e)
        except Exception as e:  # a bug, not the input: reported the same way, with its traceback in the log
            traceback.print_exc()
            message = f"{type(e).__name__}: {e} (traceback in {plan.run_dir / EVALUATION_LOG})"
        else:
            error_path.unlink(missing_ok=True)
            return True
        write_json(error_path, {"error": message, "at": time.time()})
        if log:
            log(f"{key}: evaluation failed ({message})")
        return False

    def _finished(self, state: dict, resume: set[str], skip_evaluation: set[str]) -> bool:
        """Nothing left for this supervision: no run active, pending or to resume, no evaluation
        running, and every succeeded run evaluated (or its evaluation failed)."""
        runs = [(p.key, state["runs"][p.key]) for p in self.plans]  # not runs of seeds no longer declared
        return not resume and all(
            r["status"] not in (*ACTIVE, "pending") and not r.get("evaluating")
            and (r["status"] != "succeeded" or r["evaluated"] or k in skip_evaluation) for k, r in runs)

    @contextmanager
    def supervising(self) -> Iterator[None]:
        """Hold the experiment's supervisor lock (one supervisor at a time), with this process's pid."""
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = open(self.folder / "supervisor.lock", "a+")
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ExperimentError(f"experiment {self.spec.name} is already supervised by process "
                                      f"{self.supervisor_pid()}; follow it with `relviz experiment status "
                                      f"{self.spec.name}`") from None
            lock.truncate(0)
            lock.write(str(os.getpid()))
            lock.flush()
            yield
        finally:
            lock.close()  # releases the lock

    def supervisor_pid(self) -> int | None:
        """The pid of the process supervising the experiment now, or None."""
        return lock_holder(self.folder / "supervisor.lock")

    def supervise(self, store: JobStore, max_running: int | None = None, retry_failed: bool = False,
                  poll_s: float = 2.0, log: Callable[[str], None] | None = None,
                  stop: Callable[[dict], bool] | None = None) -> dict:
        """Run the experiment to its end: resume interrupted runs (and failed ones with
        ``retry_failed``), launch the missing ones, evaluate each finished run, ``max_running``
        trainings and evaluations at most at once; then write the report and return it. ``stop(state)``
        True ends the loop early (the jobs and evaluations go on; a later call continues). A run that is
        cancelled or lost during this call is left so until the next call; an evaluation that failed in
        this call is tried again by the next."""
        with self.supervising():
            self._evaluations, self._evaluation_ends = {}, {}
            resume = self.interrupted(store, retry_failed)
            failed_evaluations: set[str] = set()  # in this call: tried again by the next one
            while True:
                state = self._advance(store, resume, max_running, failed_evaluations, log)
                if self._finished(state, resume, failed_evaluations) or (stop is not None and stop(state)):
                    break
                time.sleep(poll_s)
            return self.report()

    def start_in_background(self, max_running: int | None = None, retry_failed: bool = False) -> int:
        """:meth:`supervise` in a detached process (``python -m relviz.experiment NAME``), its output in
        ``supervisor.log`` of the experiment's folder; returns its pid."""
        if (pid := self.supervisor_pid()) is not None:
            raise ExperimentError(f"experiment {self.spec.name} is already supervised by process {pid}")
        self.save_grid()
        args = [sys.executable, "-m", "relviz.experiment", self.spec.name]
        args += [f"--max-running={max_running}"] if max_running else []
        args += ["--retry-failed"] if retry_failed else []
        # the same workspace and settings file: its runs' configs are built over the same settings
        env = {**os.environ, "RELVIZ_HOME": str(self.settings.home), "PYTHONUNBUFFERED": "1",
               **({"RELVIZ_CONFIG": str(self.settings.config_file)} if self.settings.config_file else {})}
        with open(self.folder / "supervisor.log", "ab") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=env)
        return proc.pid

    # --------------------------------------------------------------------------- reading
    def status(self, store: JobStore) -> dict:
        """Every run's job state now (reconciled), whether it is evaluated, and the experiment's counts."""
        state = self.read_state()
        jobs = self._jobs(store, state)
        runs = []
        for p in self.plans:
            job, entry = jobs[p.key], state["runs"].get(p.key) or {}
            evaluated = stored_evaluation(p.run_dir, p.config, self.spec.evaluation_for(p.cell)) is not None
            runs.append({"key": p.key, "cell": p.cell.label, "seed": p.seed, "run_dir": str(p.run_dir),
                         "job_id": job.id if job else None, "status": run_status(job, evaluated),
                         "step": job.last_step if job else 0, "total_steps": job.total_steps if job else None,
                         "progress": job.progress if job else 0.0, "error": job.error if job else None,
                         "evaluated": evaluated,
                         "evaluation_pid": (holder := evaluation_holder(p.run_dir)), "evaluating": holder is not None,
                         "evaluation_error": entry.get("evaluation_error")})
        counts: dict[str, int] = {}
        for r in runs:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        report = self.folder / "report.json"
        return {"name": self.spec.name, "folder": str(self.folder), "grid": str(self.grid_path),
                "supervisor_pid": self.supervisor_pid(), "runs": runs, "counts": counts, "total": len(runs),
                "evaluated": sum(r["evaluated"] for r in runs), "max_running": self.spec.max_running,
                "complete": all(r["evaluated"] for r in runs), "report": str(report) if report.is_file() else None}

    def read_report(self) -> dict | None:
        """The report last written (by :meth:`report` or a supervisor), without computing; None if none."""
        return read_json(self.folder / "report.json")

    def report(self) -> dict:
        """The aggregated report of the runs evaluated so far, written to the experiment's folder."""
        from relviz.jobs import read_validation_curve

        state = self.read_state()
        runs, curves = [], {}
        for p in self.plans:
            entry = state["runs"].get(p.key) or {}
            evaluation = stored_evaluation(p.run_dir, p.config, self.spec.evaluation_for(p.cell))
            status = entry.get("status", "pending")
            if evaluation is not None and status == "pending":  # carried in, no supervisor since
                status = "carried"
            runs.append({"key": p.key, "cell": p.cell.label, "seed": p.seed, "status": status,
                         "run_dir": str(p.run_dir), "metrics": run_metrics(evaluation) if evaluation else None,
                         "replicates": run_replicates(evaluation) if evaluation else None})
            if isinstance(carried := read_json(p.run_dir / CARRIED_FILE), dict):
                curves[p.key] = carried.get("curve") or []
            elif (p.run_dir / "events.jsonl").is_file():
                curves[p.key] = read_validation_curve(p.run_dir).to_dict("records")
        keys = {teacher_key(p.config, self.spec.evaluation) for p in self.plans}
        teacher = (read_json(self.folder / "teacher.json") or {}).get(keys.pop()) if len(keys) == 1 else None
        report = aggregate([{"cell": c.label, "values": c.values, "table": c.table} for c in self.spec.cells()], runs,
                           teacher=teacher,
                           curves=curves, protocol=self.spec.evaluation.protocol(self.plans[0].config))
        report["claims"] = paper_claims(report)
        report = {"name": self.spec.name, **report,
                  "files": {k: str(v) for k, v in write_report(report, self.folder, self.spec.name).items()}}
        return report


def run_status(job: Job | None, evaluated: bool) -> str:
    """A run's status: its job's, else ``carried`` when its evaluation is stored (from another
    machine), else ``pending``."""
    if job is not None:
        return job.status
    return "carried" if evaluated else "pending"


def rederive(stored: dict) -> dict:
    """A stored report (its ``report.json``) aggregated again with the current rules (intervals,
    gap vs performance over configurations, the claims family), from what it stored: its cells, runs
    (metrics per run, scene replicates when it kept them), teacher, curves and protocol. Nothing is
    re-evaluated: a rule that needs what the report did not store (scene replicates) says so in its
    verdicts ("too few scenes")."""
    for key in ("cells", "runs"):
        if not isinstance(stored.get(key), list):
            raise InputError(f"a stored report needs its '{key}' list; got {type(stored.get(key)).__name__}")
    cells = report_cells(stored["cells"])
    runs = [{k: r.get(k) for k in ("key", "cell", "seed", "status", "run_dir", "metrics", "replicates")}
            for r in stored["runs"]]
    report = aggregate(cells, runs, teacher=stored.get("teacher"), curves=stored.get("curves"),
                       protocol=stored.get("protocol"))
    report["claims"] = paper_claims(report)
    return {"name": stored.get("name"), **report}
