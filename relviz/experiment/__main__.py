"""``python -m relviz.experiment NAME [--max-running N] [--retry-failed]``: supervise an experiment
of the workspace to its end, in a process of its own (what ``relviz experiment run --detach`` and
:meth:`relviz.experiment.Experiment.start_in_background` start).

``python -m relviz.experiment NAME --evaluate KEY [--settings JSON] [--lock-fd FD] [--niceness N]
[--threads T]``: evaluate the finished run KEY of the experiment (what its supervisor launches for
each finished run, :meth:`relviz.experiment.Experiment._launch_evaluation`): at the niceness and torch
threads given (:mod:`relviz.jobs.priority`), over the supervisor's settings (default: this process's),
holding the run's evaluation lock (the descriptor FD the supervisor took it on, else taken here).
Exit status 0 when evaluated, 1 when the evaluation failed (the reason in the run's
``evaluation_error.json``), 2 when the request itself is wrong."""

from __future__ import annotations

import argparse
import sys
import time


def log(line: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}", flush=True)


def evaluate(name: str, key: str, settings_json: str | None, lock_fd: int | None) -> int:
    """Evaluate the run ``key`` of the experiment ``name`` here; the exit status (see the module)."""
    from contextlib import nullcontext

    from relviz.config import load_settings
    from relviz.errors import RelvizError
    from relviz.experiment.runner import Experiment, holding_evaluation_lock, settings_from_json

    try:
        settings = settings_from_json(settings_json) if settings_json else load_settings()
        exp = Experiment.open(settings, name)
        plan = exp.plan(key)
        # the supervisor's descriptor (inherited) holds the lock already: it is released when this process exits
        with holding_evaluation_lock(plan.run_dir) if lock_fd is None else nullcontext():
            log(f"{key}: evaluating {plan.run_dir}")
            done = exp.evaluate_in_this_process(key, log)
    except RelvizError as e:
        log(f"error: {e}")
        return 2
    if done:
        log(f"{key}: evaluated")
    return 0 if done else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="relviz.experiment")
    ap.add_argument("name")
    ap.add_argument("--max-running", type=int, default=None)
    ap.add_argument("--retry-failed", action="store_true")
    ap.add_argument("--evaluate", metavar="KEY", default=None, help="evaluate this finished run, then exit")
    ap.add_argument("--settings", default=None, help="the supervisor's settings as JSON (with --evaluate)")
    ap.add_argument("--lock-fd", type=int, default=None, help="an inherited descriptor holding the run's lock")
    ap.add_argument("--niceness", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    from relviz.jobs.priority import JobPriority, apply_priority, choose_priority

    # a background supervisor and an evaluation (probes, fine-tuning) run at a job's priority: first,
    # before the evaluation stack is imported
    apply_priority(choose_priority(1) if args.niceness is None else JobPriority(args.niceness, args.threads))
    if args.evaluate is not None:
        return evaluate(args.name, args.evaluate, args.settings, args.lock_fd)

    from relviz.config import load_settings
    from relviz.errors import RelvizError
    from relviz.experiment.runner import Experiment
    from relviz.jobs import JobStore

    try:
        settings = load_settings()
        exp = Experiment.open(settings, args.name)
        report = exp.supervise(JobStore(settings), max_running=args.max_running, retry_failed=args.retry_failed,
                               log=log)
    except RelvizError as e:
        log(f"error: {e}")
        return 2
    log(f"report written to {report['files']['markdown']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
