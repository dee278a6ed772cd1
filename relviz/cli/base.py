"""The ``relviz`` app object, its one error boundary, and what every command module shares."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.core import TyperGroup

from relviz.config import Settings, load_settings
from relviz.errors import RelvizError


class _ErrorBoundary(TyperGroup):
    """The CLI's one error boundary: a RelvizError (bad input, named by its message) prints one line
    and exits 2; anything else is a bug and keeps its traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except RelvizError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None


app = typer.Typer(cls=_ErrorBoundary, help="relviz: 2D-to-3D distillation analysis and visualisation.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  rich_markup_mode=None)  # plain click usage errors: one short message, never a cut-off panel

JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON.")


def settings() -> Settings:
    return load_settings()


def dataset_path(name: str) -> Path:
    """A workspace dataset name or a dataroot, which must exist."""
    from relviz.data.nuscenes import DatasetError

    path = settings().dataset_root(name)
    if not path.is_dir():
        raise DatasetError(f"dataset {path} does not exist (generate it with `relviz synth`, or give a nuScenes "
                           f"dataroot)")
    return path
