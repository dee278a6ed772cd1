"""``relviz toy``: the paper's toy experiment."""

from __future__ import annotations

import json

import typer

from relviz.cli.base import JSON_OPTION, app


@app.command()
def toy(
    clusters: int = typer.Option(3, help="1 or 3 source clusters on the sphere."),
    iters: int = typer.Option(600, help="Training iterations per loss."),
    seed: int = typer.Option(0, help="Seed for data and initialisation."),
    as_json: bool = JSON_OPTION,
) -> None:
    """The paper's toy experiment: final uniformity and tolerance per loss against the source's."""
    from relviz.toy import ToyConfig, run_toy

    cfg = ToyConfig(clusters=clusters, iters=iters, seed=seed)
    summary = run_toy(cfg).summary()
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(f"{'':<12} {'U':>7} {'T':>7}")
    for name, v in summary.items():
        typer.echo(f"{name:<12} {v['uniformity']:7.3f} {v['tolerance']:7.3f}")
