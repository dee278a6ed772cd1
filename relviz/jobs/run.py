"""What a background job runs: ``python -m relviz.jobs.run --config <run>/config.json --run-dir <run>``
(under torchrun for several processes). The trainer with the app's caches wired to its finish, so a
job's student opens at once in the app."""

from __future__ import annotations

from relviz.train.trainer import main as train_main
from relviz.workspace import cache_finished_run


def main(argv: list[str] | None = None) -> int:
    return train_main(argv, prog="relviz.jobs.run", on_finish_for=cache_finished_run)


if __name__ == "__main__":
    raise SystemExit(main())
