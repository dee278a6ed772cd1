"""``python -m relviz.experiment NAME [--max-running N] [--retry-failed]``: supervise an experiment
of the workspace to its end, in a process of its own (what ``relviz experiment run --detach`` and
:meth:`relviz.experiment.Experiment.start_in_background` start)."""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    from relviz.config import load_settings
    from relviz.errors import RelvizError
    from relviz.experiment.runner import Experiment
    from relviz.jobs import JobStore

    ap = argparse.ArgumentParser(prog="relviz.experiment")
    ap.add_argument("name")
    ap.add_argument("--max-running", type=int, default=None)
    ap.add_argument("--retry-failed", action="store_true")
    args = ap.parse_args(argv)
    from relviz.jobs.priority import apply_priority, choose_priority

    # a background supervisor evaluates finished runs (probes, fine-tuning): at a job's priority too
    apply_priority(choose_priority(1))

    def log(line: str) -> None:
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}", flush=True)

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
