"""How a background job shares the machine with the app that launched it.

The app and its jobs run on the same cores. A job at the app's priority, with PyTorch's default of
one thread per core in every process, oversubscribes them: a page update then waits seconds behind
the job's thread pools. So a job runs

* at a higher niceness (:data:`DEFAULT_NICENESS`, 10): under contention the kernel gives the app's
  processes about nine times the job's share of a core, and the job still gets every idle cycle.
  On Linux with autogroup scheduling (``/proc/sys/kernel/sched_autogroup_enabled``, on in most
  distributions) a process's niceness only orders it within its session's group, and a job is its
  own session (a detached process group): measured here, a job at niceness 10 still took an equal
  share against a busy process of another session. So the job also sets its autogroup's niceness
  (``/proc/self/autogroup``), which orders it against the other sessions;
* with a torch thread count chosen from the machine, by one rule (:func:`choose_priority`): keep
  ``max(1, cores // 8)`` cores for the app (one core on a machine of up to 15 cores, two up to 23,
  ...) and share the rest between the job's processes, at least one thread each.

``cores`` is what this process may run on (its CPU affinity), not what the machine has.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from relviz.config import available_cores
from relviz.errors import InputError

DEFAULT_NICENESS = 10
RULE = "threads = max(1, (cores - max(1, cores // 8)) // processes): cores // 8 (at least one) are kept for the app"


@dataclass(frozen=True)
class JobPriority:
    """What a job process runs at: ``niceness`` (absolute, 0 is the app's usual) and ``threads``,
    torch's intra-op threads per process (None: torch's default, one per core)."""

    niceness: int = DEFAULT_NICENESS
    threads: int | None = None

    def args(self) -> list[str]:
        """The command-line arguments of :mod:`relviz.jobs.run` that carry it."""
        return ["--niceness", str(self.niceness)] + (["--threads", str(self.threads)] if self.threads else [])

    def env(self) -> dict[str, str]:
        """Environment for the job: OpenMP, MKL and numpy's OpenBLAS size their pools from it before
        torch starts (torchrun, too, keeps an OMP_NUM_THREADS it is given). numpy's OpenBLAS falls back
        to OMP_NUM_THREADS; it is named as well so that no pool is left to its default (spinning BLAS
        threads beyond a process's share made scikit-learn's fits 13x slower on a loaded 2-core machine)."""
        if not self.threads:
            return {}
        return {name: str(self.threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


# what a job ran at before there was a rule: the app's niceness and torch's default threads
UNMANAGED = JobPriority(niceness=0, threads=None)


def choose_priority(nproc: int = 1, cores: int | None = None, niceness: int = DEFAULT_NICENESS) -> JobPriority:
    """The priority of a job of ``nproc`` processes on ``cores`` cores (default: :func:`available_cores`),
    by :data:`RULE`."""
    cores = available_cores() if cores is None else cores
    if cores < 1 or nproc < 1:
        raise InputError(f"cores and nproc must be >= 1, got cores={cores}, nproc={nproc}")
    kept_for_app = max(1, cores // 8)
    return JobPriority(niceness=niceness, threads=max(1, (cores - kept_for_app) // nproc))


def describe_rule(nproc: int = 1, cores: int | None = None) -> str:
    """The rule and what it gives on this machine, in a sentence (the Jobs page says it)."""
    cores = available_cores() if cores is None else cores
    chosen = choose_priority(nproc, cores)
    return (f"Jobs run at niceness {chosen.niceness} (the app at 0) with {chosen.threads} torch thread(s) per process "
            f"on this machine's {cores} cores: {RULE}.")


def renice(pid: int, niceness: int) -> int:
    """Raise the niceness of process ``pid`` to ``niceness`` (never lowers it: an unprivileged user
    cannot, and a job started nicer stays so); returns the niceness it has now."""
    current = os.getpriority(os.PRIO_PROCESS, pid)
    if niceness > current:
        os.setpriority(os.PRIO_PROCESS, pid, niceness)
    return os.getpriority(os.PRIO_PROCESS, pid)


def apply_priority(priority: JobPriority) -> dict:
    """In the job's own process, before training starts: its niceness and torch's thread counts.
    Returns what the process runs at now (``niceness``, ``threads``, ``interop_threads``, ``cores``),
    which the job records as its ``priority`` event."""
    niceness = renice(0, priority.niceness)  # first: the imports below already run at it
    group_niceness = renice_autogroup(priority.niceness) if own_session() else None
    import torch

    if priority.threads:
        torch.set_num_threads(priority.threads)
        try:
            torch.set_num_interop_threads(priority.threads)
        except RuntimeError:  # only settable before any parallel work; then the default stays
            pass
    return {"niceness": niceness, "autogroup_niceness": group_niceness, "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(), "cores": available_cores()}


AUTOGROUP = Path("/proc/self/autogroup")
AUTOGROUP_ENABLED = Path("/proc/sys/kernel/sched_autogroup_enabled")


def own_session() -> bool:
    """Whether this process's group leads its session, as a job's does (launched with a session of
    its own; torchrun's workers share it): then its autogroup is the job's alone. Under an interactive
    shell a command's group is not the session's, and renicing the autogroup would slow the shell
    and everything started from it later."""
    try:
        return os.getsid(0) == os.getpgid(0)
    except (AttributeError, OSError):
        return False


def renice_autogroup(niceness: int, path: Path = AUTOGROUP, enabled: Path = AUTOGROUP_ENABLED) -> int | None:
    """Raise the niceness of this process's autogroup (its session's scheduling group) to
    ``niceness``; returns the group's niceness now, or None where autogroups do not order anything
    (not Linux, or ``kernel.sched_autogroup_enabled`` is 0) or the file cannot be written. Never
    lowers it. (Inside a non-root cgroup the cgroup's weight orders it first; that is not visible here.)"""
    try:
        if enabled.read_text().strip() != "1":
            return None
        text = path.read_text()  # "/autogroup-504 nice 0"
        current = int(text.split("nice")[1])
        if niceness > current:
            path.write_text(str(niceness))
            current = int(path.read_text().split("nice")[1])
        return current
    except (OSError, IndexError, ValueError):
        return None
