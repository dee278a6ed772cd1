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


@app.command()
def toy(
    clusters: int = typer.Option(3, help="1 or 3 source clusters on the sphere."),
    iters: int = typer.Option(600, help="Training iterations per loss."),
    seed: int = typer.Option(0, help="Seed for data and initialisation."),
    as_json: bool = typer.Option(False, "--json", help="Print final U and T per loss as JSON."),
) -> None:
    """The paper's toy experiment: final uniformity and tolerance per loss against the source's."""
    from relviz.toy import ToyConfig, run_toy

    try:
        cfg = ToyConfig(clusters=clusters, iters=iters, seed=seed)
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    summary = run_toy(cfg).summary()
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(f"{'':<12} {'U':>7} {'T':>7}")
    for name, v in summary.items():
        typer.echo(f"{name:<12} {v['uniformity']:7.3f} {v['tolerance']:7.3f}")


def main() -> None:
    app()
