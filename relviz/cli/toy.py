"""``relviz toy``: the paper's toy experiment, one seed or a sweep over seeds."""

from __future__ import annotations

import contextlib
import json
import sys

import typer

from relviz.cli.base import JSON_OPTION, app


def _progress_bar(stack: contextlib.ExitStack):
    """A progress callback drawing a bar on stderr, opened at its first call (when the total is known)."""
    state = {"bar": None, "done": 0}

    def update(phase: str, done: int, total: int) -> None:
        if state["bar"] is None:
            state["bar"] = stack.enter_context(typer.progressbar(length=total, file=sys.stderr, show_eta=True,
                                                                 label="training"))
        state["bar"].label = phase
        state["bar"].update(done - state["done"])
        state["done"] = done

    return update


@app.command()
def toy(
    setup: str = typer.Option("paper-1cluster", help="paper-1cluster (the paper's Fig 2 source) or paper-3clusters."),
    clusters: int = typer.Option(None, help="1 or 3 source clusters on the sphere (default: the setup's)."),
    spread: float = typer.Option(None, help="Angular spread of a source cluster, radians (default: the setup's)."),
    iters: int = typer.Option(600, help="Training iterations per loss."),
    seed: int = typer.Option(0, help="Seed for data and initialisation (the first seed of a sweep)."),
    seeds: int = typer.Option(None, help="Sweep over this many seeds (seed, seed+1, ...): how often the paper's "
                                          "ordering holds, with Clopper-Pearson intervals."),
    as_json: bool = JSON_OPTION,
) -> None:
    """The paper's toy experiment: final uniformity and tolerance per loss against the source's, and
    which of the paper's claims hold (for one seed, or how often over --seeds)."""
    from relviz.toy import PAPER_CLAIMS, run_toy, run_toy_sweep, toy_setup

    cfg = toy_setup(setup, clusters=clusters, spread=spread, iters=iters, seed=seed)
    with contextlib.ExitStack() as stack:
        progress = None if as_json else _progress_bar(stack)
        if seeds is None:
            result = run_toy(cfg, progress=progress)
        else:
            if seeds < 1:
                raise typer.BadParameter(f"must be >= 1, got {seeds}", param_hint="'--seeds'")
            sweep = run_toy_sweep(cfg, range(seed, seed + seeds), progress=progress)
    label = setup if cfg == toy_setup(setup, iters=iters, seed=seed) else f"custom (from {setup})"
    out = {"setup": label, **(result.to_json() if seeds is None else sweep.to_json())}
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(f"setup {label}: {cfg.clusters} cluster(s), spread {cfg.spread:g}, {cfg.iters} iterations")
    if seeds is None:
        typer.echo(f"{'':<12} {'U':>7} {'T':>7}")
        for name, v in result.summary().items():
            typer.echo(f"{name:<12} {v['uniformity']:7.3f} {v['tolerance']:7.3f}")
        for name, text in PAPER_CLAIMS.items():
            typer.echo(f"[{'x' if out['paper_claims'][name] else ' '}] {text}")
        return
    for name, rate in sweep.rates().items():
        text = PAPER_CLAIMS.get(name, "all of the above")
        typer.echo(f"{round(rate.value * rate.n):>3}/{rate.n} seeds ({rate.low:.2f}-{rate.high:.2f}, "
                   f"{rate.confidence:.0%} Clopper-Pearson): {text}")
