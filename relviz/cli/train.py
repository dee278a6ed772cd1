"""``relviz train`` and ``relviz jobs``: distillation in this process or in the background."""

from __future__ import annotations

import inspect
import json

import typer

from relviz.cli.base import JSON_OPTION, app, settings

# The training options, declared once: `train` and `jobs submit` take them through `training_options`.
TRAINING_OPTIONS: dict[str, tuple[type, typer.models.OptionInfo]] = {
    "preset": (str, typer.Option(None, help="A published setting as the base: slidr or demo (docs/presets.md); "
                                            "the settings, --config, --set and flags override it.")),
    "config": (str, typer.Option(None, help="A .json or .toml training config; flags override it.")),
    "loss": (str, typer.Option(None, help="contrastive, similarity or relational.")),
    "epochs": (int, typer.Option(None, min=1)),
    "lr": (float, typer.Option(None)),
    "batch": (int, typer.Option(None, min=1)),
    "pairs": (int, typer.Option(None, help="Point-pixel pairs sampled per batch.")),
    "arch": (str, typer.Option(None, help="MinkUNet14, MinkUNet18, MinkUNet34 or MinkUNet18A (OpenScene's: a kernel-5 stem).")),
    "width": (float, typer.Option(None, help="Channel width multiplier.")),
    "dataset": (str, typer.Option(None, help="Dataset folder under the workspace, or a dataroot.")),
    "split": (str, typer.Option(None)),
    "teacher": (str, typer.Option(None, help="'demo' or an open_clip model name.")),
    "teacher_pretrained": (str, typer.Option(None, help="open_clip tag or local weights file.")),
    "seed": (int, typer.Option(None)),
    "max_steps": (int, typer.Option(None, help="Stop after this many steps (0: epochs decide).")),
    "device": (str, typer.Option(None, help="auto, cpu or cuda.")),
    "set_": (list[str], typer.Option(None, "--set", help="Any other config field, as KEY=VALUE (JSON value); "
                                                         "repeatable.")),
}


def training_options(command):
    """Give ``command`` the training options as keyword-only parameters (typer reads the signature);
    it receives them in ``**options`` and builds its config with :func:`train_config`."""
    own = [p for p in inspect.signature(command).parameters.values() if p.kind != p.VAR_KEYWORD]
    shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
              for name, (kind, option) in TRAINING_OPTIONS.items()]
    command.__signature__ = inspect.Signature([*own, *shared])
    return command


def train_config(config: str | None = None, set_: list[str] | None = None, preset: str | None = None, **flags):
    """Defaults < the --preset < settings (RELVIZ_* and relviz.toml) < the --config file < --set < flags
    (docs/presets.md says why the settings sit above a preset)."""
    from relviz.errors import shorten
    from relviz.train.config import TrainConfig, TrainConfigError, read_config_table

    table = read_config_table(config) if config else {}
    for item in set_ or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise TrainConfigError(f"--set expects KEY=VALUE, got {shorten(item)}")
        try:
            table[key] = json.loads(value)
        except json.JSONDecodeError:
            table[key] = value
    given = {k: v for k, v in flags.items() if v is not None}  # an unset flag leaves the file's value
    if "teacher" in given and "teacher_pretrained" not in given and given["teacher"] != table.get("teacher"):
        table.pop("teacher_pretrained", None)  # a teacher flag never borrows the file's weights for another teacher
    return TrainConfig.from_settings(settings(), preset=preset, **{**table, **given})


DRY_RUN_OPTION = typer.Option(False, "--dry-run", help="Print the resolved config and the estimated steps, teacher "
                                                       "cache size and memory; train nothing.")


def print_dry_run(cfg, preset: str | None, world: int = 1) -> None:
    """The resolved config and :func:`relviz.train.estimate.estimate` of it, as JSON."""
    from relviz.train.estimate import estimate

    s = settings()
    facts = estimate(cfg, s.dataset_root(cfg.dataset), s.cache_dir, world=world, sparse_backend=s.sparse_backend)
    typer.echo(json.dumps({"preset": preset, "config": cfg.to_dict(), "estimate": facts}, indent=2))


@app.command()
@training_options
def train(run_dir: str = typer.Option(None, help="Run folder (default: <workspace>/runs/<time>-<loss>)."),
          dry_run: bool = DRY_RUN_OPTION, **options) -> None:
    """Distil the teacher into a MinkUNet student, in this process (see `relviz jobs submit` for background)."""
    import time

    from relviz.train import Trainer
    from relviz.workspace import cache_finished_run

    cfg = train_config(**options)
    if dry_run:
        print_dry_run(cfg, options.get("preset"))
        return
    s = settings().ensure()
    target = run_dir or s.runs_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.loss}"
    result = Trainer(cfg, target, s, on_finish=cache_finished_run(s)).run()
    typer.echo(json.dumps({"run_dir": str(target), **result}, indent=2, default=str))


jobs_app = typer.Typer(help="Background distillation jobs.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")


def _jobs():
    from relviz.jobs import JobStore

    return JobStore(settings())


def _job_facts(job) -> dict:
    return {"id": job.id, "name": job.name, "status": job.status, "step": job.last_step,
            "total_steps": job.total_steps, "run_dir": str(job.run_dir), "error": job.error}


@jobs_app.command("submit")
@training_options
def jobs_submit(name: str = typer.Option(None),
                nproc_per_node: int = typer.Option(1, "--nproc-per-node", help="DDP processes (torchrun)."),
                dry_run: bool = DRY_RUN_OPTION, as_json: bool = JSON_OPTION, **options) -> None:
    """Start a training job in the background; prints its id."""
    cfg = train_config(**options)
    if dry_run:
        print_dry_run(cfg, options.get("preset"), world=nproc_per_node)
        return
    job = _jobs().submit(cfg, name=name, nproc=nproc_per_node)
    typer.echo(json.dumps(_job_facts(job), indent=2) if as_json else job.id)


@jobs_app.command("list")
def jobs_list(as_json: bool = JSON_OPTION) -> None:
    """All jobs with state, phase, count and estimate (from their run folders and processes now)."""
    store = _jobs()
    jobs = [(j, store.progress_of(j)) for j in store.list()]
    if as_json:
        typer.echo(json.dumps([{**_job_facts(j), "progress": p.to_dict()} for j, p in jobs], indent=2))
        return
    for j, p in jobs:
        typer.echo(f"{j.id}  {j.status:<9} {p.text():<56} {j.name}" + (f"  ({j.error})" if j.error else ""))


def _job_action(action: str, job_id: str, as_json: bool, **kw) -> None:
    job = getattr(_jobs(), action)(job_id, **kw)
    typer.echo(json.dumps(_job_facts(job), indent=2) if as_json else f"{job.id} {job.status}")


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, grace: float = typer.Option(30.0, help="Seconds before SIGKILL."),
                as_json: bool = JSON_OPTION) -> None:
    """SIGTERM the job's process group (it checkpoints), SIGKILL after the grace period."""
    _job_action("cancel", job_id, as_json, grace_s=grace)


@jobs_app.command("resume")
def jobs_resume(job_id: str, as_json: bool = JSON_OPTION) -> None:
    """Relaunch a cancelled, lost or failed job from its last checkpoint."""
    _job_action("resume", job_id, as_json)


@jobs_app.command("logs")
def jobs_logs(job_id: str, lines: int = typer.Option(50)) -> None:
    """The last lines of a job's log."""
    store = _jobs()
    typer.echo(store.log_tail(store.get(job_id), lines))
