"""``relviz toy``: the paper's toy experiment, one seed or a sweep over seeds; ``relviz toy sweep``:
where the paper's ordering holds over target predictability x iterations x setups."""

from __future__ import annotations

import contextlib
import json
import sys

import typer

from relviz.cli.base import JSON_OPTION, app

toy_app = typer.Typer(help="The paper's toy experiment.", invoke_without_command=True)
app.add_typer(toy_app, name="toy")


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


@toy_app.callback(invoke_without_command=True)
def toy(
    ctx: typer.Context,
    setup: str = typer.Option("paper-1cluster", help="paper-1cluster (the paper's Fig 2 source) or "
                                                     "paper-3clusters (the setup of the paper's U-against-iterations "
                                                     "figure)."),
    clusters: int = typer.Option(None, help="1 or 3 source clusters on the sphere (default: the setup's)."),
    spread: float = typer.Option(None, help="Angular spread of a source cluster, radians (default: the setup's)."),
    predictability: float = typer.Option(None, help="R^2 of a target's offset in its cluster from the input, "
                                                      "0-1 (default 0.8)."),
    iters: int = typer.Option(600, help="Training iterations per loss."),
    seed: int = typer.Option(0, help="Seed for data and initialisation (the first seed of a sweep)."),
    seeds: int = typer.Option(None, help="Sweep over this many seeds (seed, seed+1, ...): how often the paper's "
                                          "ordering holds, with Clopper-Pearson intervals."),
    as_json: bool = JSON_OPTION,
) -> None:
    """The paper's toy experiment: uniformity and tolerance per loss at the end against the source's, and
    which of the paper's claims hold (for one seed, or how often over --seeds). Values are the mean
    over the last recorded iterations (JUDGE_LAST)."""
    if ctx.invoked_subcommand is not None:
        return
    from relviz.toy import CLAIM_TEXT, PAPER_CLAIMS, run_toy, run_toy_sweep, toy_setup

    cfg = toy_setup(setup, clusters=clusters, spread=spread, predictability=predictability, iters=iters, seed=seed)
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
    typer.echo(f"setup {label}: {cfg.clusters} cluster(s), spread {cfg.spread:g}, predictability R^2 "
               f"{cfg.predictability:g}, {cfg.iters} iterations")
    if seeds is None:
        judged = out["judged_iterations"]
        typer.echo(f"mean over iterations {judged[0]}-{judged[-1]} ({len(judged)} recorded)")
        typer.echo(f"{'':<12} {'U':>7} {'T':>7}")
        for name, v in result.summary().items():
            typer.echo(f"{name:<12} {v['uniformity']:7.3f} {v['tolerance']:7.3f}")
        for name, text in PAPER_CLAIMS.items():
            typer.echo(f"[{'x' if out['paper_claims'][name] else ' '}] {text}")
        return
    for name, rate in sweep.rates().items():
        text = CLAIM_TEXT[name]
        typer.echo(f"{round(rate.value * rate.n):>3}/{rate.n} seeds ({rate.low:.2f}-{rate.high:.2f}, "
                   f"{rate.confidence:.0%} Clopper-Pearson): {text}")


@toy_app.command("sweep")
def sweep(
    setup: list[str] = typer.Option(None, help="Setups to sweep (repeat; default paper-1cluster and "
                                                "paper-3clusters, the setup of the paper's figure)."),
    predictability: list[float] = typer.Option(None, help="R^2 of the target offset from the input (repeat; "
                                                          "default 1, 0.8, 0.5, 0.2, 0)."),
    horizon: list[int] = typer.Option(None, help="Iterations at which runs are judged (repeat; default 100, 200, "
                                                 "400, 600, 1000, 1500)."),
    seeds: int = typer.Option(10, help="Seeds per cell (seed, seed+1, ...)."),
    seed: int = typer.Option(0, help="The first seed."),
    last: int = typer.Option(None, help="Recorded iterations averaged to judge a run (default JUDGE_LAST, 5)."),
    cache_dir: str = typer.Option(None, help="Keep every run here; a rerun reads them (resumes)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Where the paper's U ordering holds (contrastive above the source, similarity below,
    relational closest): per setup x predictability x iterations, how many seeds give it, with a
    95% Clopper-Pearson interval and a verdict (holds: interval above 1/2; fails: below)."""
    from relviz.toy import JUDGE_LAST, PREDICTABILITIES, SETUPS, SWEEP_HORIZONS, run_predictability_sweep, toy_setup

    if seeds < 1:
        raise typer.BadParameter(f"must be >= 1, got {seeds}", param_hint="'--seeds'")
    names = setup or [n for n in SETUPS]
    configs = {name: toy_setup(name) for name in names}
    with contextlib.ExitStack() as stack:
        result = run_predictability_sweep(configs, predictability or PREDICTABILITIES, horizon or SWEEP_HORIZONS,
                                          range(seed, seed + seeds), JUDGE_LAST if last is None else last,
                                          cache_dir, None if as_json else _progress_bar(stack))
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    typer.echo(f"the paper's U ordering, judged on the mean of the last {result.last} recorded iterations; "
               f"seeds {result.seeds[0]}-{result.seeds[-1]}; 95% Clopper-Pearson")
    typer.echo(f"{'setup':<16} {'R^2':>4} {'iter':>5} {'held':>6} {'interval':>12}  verdict  (relational closest)")
    for row in result.table():
        typer.echo(f"{row['setup']:<16} {row['predictability']:>4g} {row['iteration']:>5} "
                   f"{row['held']:>3}/{row['seeds']:<2} {row['low']:.2f}-{row['high']:.2f}  {row['verdict']:<14} "
                   f"({row['relational_closest']}/{row['seeds']})")
