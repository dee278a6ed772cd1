"""The ``relviz`` command line: a thin layer over library calls. Each module adds its commands to
the one :data:`app` of :mod:`relviz.cli.base` (and its one error boundary)."""

from relviz.cli import evaluate, experiment, features, kitti, setup, teachers, toy, train  # noqa: F401 (registers the commands)
from relviz.cli.base import app


def main() -> None:
    app()


__all__ = ["app", "main"]
