"""The ``relviz`` command line: a thin layer over library calls."""

from __future__ import annotations

import json

import typer

from relviz.config import ConfigError, load_settings

app = typer.Typer(help="relviz: 2D-to-3D distillation analysis and visualisation.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)


def _settings():
    try:
        return load_settings()
    except ConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e


@app.command()
def info(as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
    """Versions, device, sparse backends and what the workspace holds."""
    from relviz.info import collect_info, format_info

    facts = collect_info(_settings())
    typer.echo(json.dumps(facts, indent=2) if as_json else format_info(facts))


@app.command()
def workspace() -> None:
    """Create the workspace folders and print the workspace root."""
    typer.echo(str(_settings().ensure().home))


def main() -> None:
    app()
