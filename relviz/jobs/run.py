"""What a background job runs: ``python -m relviz.jobs.run --niceness N [--threads T] [--kind K]
--config <run>/config.json --run-dir <run>`` (under torchrun for several processes). It takes its
priority (:mod:`relviz.jobs.priority`) before the training stack is imported, records it as a
``priority`` event, then runs the job's kind: ``train`` (the default), the trainer with the app's
caches wired to its finish, so a job's student opens at once in the app; ``label_efficiency``, a
few-shot job (:mod:`relviz.jobs.fewshot`)."""

from __future__ import annotations

import argparse
import os

from relviz.jobs.priority import DEFAULT_NICENESS, JobPriority, apply_priority
from relviz.train.rundir import EventLog, RunDir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="relviz.jobs.run", add_help=False)
    ap.add_argument("--niceness", type=int, default=DEFAULT_NICENESS)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--kind", choices=("train", "label_efficiency"), default="train")
    own, trainer_args = ap.parse_known_args(argv)
    applied = apply_priority(JobPriority(own.niceness, own.threads))
    EventLog(RunDir(own.run_dir).events, enabled=int(os.environ.get("RANK", "0")) == 0).write(
        "priority", pid=os.getpid(), **applied)

    if own.kind == "label_efficiency":
        from relviz.jobs.fewshot import main as fewshot_main

        config = argparse.ArgumentParser(add_help=False)
        config.add_argument("--config", required=True)
        return fewshot_main(config.parse_args(trainer_args).config, own.run_dir)

    from relviz.train.trainer import main as train_main
    from relviz.workspace import cache_finished_run

    return train_main([*trainer_args, "--run-dir", own.run_dir], prog="relviz.jobs.run",
                      on_finish_for=cache_finished_run)


if __name__ == "__main__":
    raise SystemExit(main())
