"""``relviz experiment``: a declared grid of training runs x seeds, run as background jobs, resumed
as a whole, evaluated and reported with intervals over seeds."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from relviz.cli.base import JSON_OPTION, app, settings

experiment_app = typer.Typer(help="Experiments: a grid of training runs x seeds, with one report.",
                             no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


def _open(file_or_name: str):
    from relviz.experiment import Experiment

    path = Path(file_or_name)
    if path.suffix == ".toml" or path.is_file():
        return Experiment.from_file(settings(), path)
    return Experiment.open(settings(), file_or_name)


def _store():
    from relviz.jobs import JobStore

    return JobStore(settings())


def _log(line: str) -> None:
    typer.echo(f"{time.strftime('%H:%M:%S')} {line}")


@experiment_app.command("run")
def experiment_run(file: str = typer.Argument(..., help="The experiment's TOML file (or the name of one in the "
                                                        "workspace, to continue it)."),
                   max_running: int = typer.Option(None, "--max-running", min=1,
                                                   help="Jobs at once (default: the file's, else 1)."),
                   retry_failed: bool = typer.Option(False, "--retry-failed", help="Resume failed runs too."),
                   detach: bool = typer.Option(False, "--detach", help="Supervise in the background and return."),
                   poll: float = typer.Option(2.0, min=0.1, help="Seconds between checks of the jobs."),
                   as_json: bool = JSON_OPTION) -> None:
    """Launch the missing runs, resume interrupted ones, evaluate finished ones, write the report.
    The jobs run in the background; stopping this command leaves them running, and running it again
    continues the experiment."""
    exp = _open(file)
    if detach:
        pid = exp.start_in_background(max_running, retry_failed)
        typer.echo(json.dumps({"name": exp.spec.name, "supervisor_pid": pid, "folder": str(exp.folder)}) if as_json
                   else f"experiment {exp.spec.name}: supervised by process {pid} (log: {exp.folder / 'supervisor.log'}"
                        f"); follow it with `relviz experiment status {exp.spec.name}`")
        return
    report = exp.supervise(_store(), max_running=max_running, retry_failed=retry_failed, poll_s=poll,
                           log=None if as_json else _log)
    _print_report(report, exp, as_json)


@experiment_app.command("status")
def experiment_status(name: str, as_json: bool = JSON_OPTION) -> None:
    """Every run of the experiment: its job's state and step, and whether it is evaluated."""
    from relviz.experiment import Experiment

    status = Experiment.open(settings(), name).status(_store())
    if as_json:
        typer.echo(json.dumps(status, indent=2))
        return
    pid = status["supervisor_pid"]
    typer.echo(f"experiment {status['name']}: {status['evaluated']}/{status['total']} runs evaluated; "
               + ", ".join(f"{n} {s}" for s, n in sorted(status["counts"].items()))
               + (f"; supervised by process {pid}" if pid else "; no supervisor running"))
    for r in status["runs"]:
        typer.echo(f"  {r['key']:<40} {r['status']:<9} {r['step']:>6}/{r['total_steps'] or '?':<6} "
                   f"{'evaluated' if r['evaluated'] else ''}"
                   + (f"  ({r['error'] or r['evaluation_error']})" if r['error'] or r['evaluation_error'] else ""))


@experiment_app.command("report")
def experiment_report(name: str, as_json: bool = JSON_OPTION) -> None:
    """The aggregated report of the runs evaluated so far (written to the experiment's folder)."""
    from relviz.experiment import Experiment

    exp = Experiment.open(settings(), name)
    _print_report(exp.report(), exp, as_json)


@experiment_app.command("rederive")
def experiment_rederive(report_json: Path = typer.Argument(..., help="A stored report.json (e.g. "
                                                                     "checkpoints/demo/experiment/report.json)."),
                        as_json: bool = JSON_OPTION) -> None:
    """Aggregate a stored report again under the current rules (no re-evaluation) and write its
    report.json, .csv and .md in place."""
    from relviz.errors import InputError
    from relviz.experiment.aggregate import write_report
    from relviz.experiment.runner import rederive
    from relviz.files import read_json

    stored = read_json(report_json)
    if not isinstance(stored, dict):
        raise InputError(f"{report_json}: not a readable report.json")
    report = rederive(stored)
    files = write_report(report, report_json.parent, report.get("name") or report_json.parent.name)
    report["files"] = {k: str(Path(v).name) for k, v in files.items()}
    write_report(report, report_json.parent, report.get("name") or report_json.parent.name)
    typer.echo(json.dumps(report, indent=2, default=str) if as_json else files["markdown"].read_text())


@experiment_app.command("carry")
def experiment_carry(name: str,
                     to: Path = typer.Option(None, "--to", help="Write every evaluated run here (one JSON each)."),
                     from_: Path = typer.Option(None, "--from", help="Take the runs carried here into the workspace."),
                     as_json: bool = JSON_OPTION) -> None:
    """Carry finished runs between machines: ``--to DIR`` writes each evaluated run's evaluation and
    curve (no weights, no paths); ``--from DIR`` makes them runs of the experiment here, which a
    later ``relviz experiment run`` does not train again."""
    from relviz.errors import InputError
    from relviz.experiment.carry import carry_in, carry_out

    if (to is None) == (from_ is None):
        raise InputError("give one of --to DIR (write the evaluated runs) or --from DIR (take carried runs in)")
    exp = _open(name)
    if to is not None:
        done = [str(p) for p in carry_out(exp, to)]
    else:
        exp.save_grid()
        done = carry_in(exp, from_)
    typer.echo(json.dumps(done) if as_json else "\n".join(done) or "nothing to carry")


@experiment_app.command("list")
def experiment_list(as_json: bool = JSON_OPTION) -> None:
    """The workspace's experiments."""
    from relviz.experiment import list_experiments

    names = list_experiments(settings())
    typer.echo(json.dumps(names) if as_json else "\n".join(names))


def _print_report(report: dict, exp, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    typer.echo(Path(report["files"]["markdown"]).read_text())
    typer.echo(f"written to {exp.folder}")
