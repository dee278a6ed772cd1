"""What a background job runs: ``python -m relviz.jobs.run --config <run>/config.json --run-dir <run>``
(under torchrun for several processes). The trainer with the app's caches wired to its finish, so a
job's student opens at once in the app."""

from __future__ import annotations

import argparse

from relviz.config import load_settings
from relviz.train.config import load_config
from relviz.train.trainer import Trainer
from relviz.workspace import cache_finished_run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="relviz.jobs.run")
    ap.add_argument("--config", required=True)
    ap.add_argument("--run-dir", required=True)
    args = ap.parse_args(argv)
    settings = load_settings()
    result = Trainer(load_config(args.config), args.run_dir, settings, on_finish=cache_finished_run(settings)).run()
    return 0 if result["status"] in ("succeeded", "cancelled") else 1


if __name__ == "__main__":
    raise SystemExit(main())
