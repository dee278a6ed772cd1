"""The ``relviz`` command line: a thin layer over library calls."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.core import TyperGroup

from relviz.config import load_settings
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


def _settings():
    return load_settings()


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


@app.command("app")
def app_(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (anything but loopback exposes the app)."),
    port: int = typer.Option(8501, help="Port."),
) -> None:
    """Start the Streamlit app (the shared modules are imported first, so the first page is quick)."""
    from relviz.serve import run

    run(host, port)


@app.command()
def warm(
    dataset: str = typer.Option(None, help="Dataset name in the workspace (default: the configured one)."),
    samples: int = typer.Option(4, help="Validation keyframes per checkpoint (the app's default is 4)."),
) -> None:
    """Fill the app's disk caches (dataset index, class embeddings, validation features of the teacher
    and of every checkpoint, the default toy run), so that no page computes on its first visit."""
    from relviz.workspace import WarmError, warm_caches

    settings = _settings().ensure()
    root = _dataset_path(dataset or settings.dataset)
    try:
        timings = warm_caches(settings, root, n_samples=samples, log=typer.echo)
    except WarmError as e:
        typer.echo(f"error: {len(e.failed)} step(s) failed ({', '.join(e.failed)}); the pages compute those on "
                   f"their first visit", err=True)
        raise typer.Exit(1)
    typer.echo(f"caches ready in {sum(timings.values()):.1f} s")


@app.command()
def toy(
    clusters: int = typer.Option(3, help="1 or 3 source clusters on the sphere."),
    iters: int = typer.Option(600, help="Training iterations per loss."),
    seed: int = typer.Option(0, help="Seed for data and initialisation."),
    as_json: bool = typer.Option(False, "--json", help="Print final U and T per loss as JSON."),
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


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"image size must look like 800x450, got {text!r}") from None
    return w, h


@app.command()
def synth(
    out: str = typer.Option(None, help="Output dataroot (default: <workspace>/datasets/synthetic-mini)."),
    seed: int = typer.Option(0, help="Seed: the same seed gives byte-identical lidar and label files."),
    samples_per_scene: int = typer.Option(8, help="Keyframes per scene (10 scenes)."),
    image_size: str = typer.Option("800x450", help="Camera image size WxH."),
    workers: int = typer.Option(None, help="Processes (default: CPU count, at most 4)."),
) -> None:
    """Generate the synthetic nuScenes v1.0-mini dataset with lidarseg."""
    import time

    from relviz.data.synthetic import SynthConfig, generate

    settings = _settings().ensure()
    target = Path(out) if out else settings.dataset_root("synthetic-mini")
    cfg = SynthConfig(seed=seed, samples_per_scene=samples_per_scene, image_size=_parse_size(image_size))
    start = time.perf_counter()
    with typer.progressbar(length=10, label="scenes") as bar:
        generate(target, cfg, progress=lambda done, total: bar.update(1), workers=workers)
    typer.echo(f"wrote {target} in {time.perf_counter() - start:.1f} s")


teacher_app = typer.Typer(help="The CLIP teacher.", no_args_is_help=True)
app.add_typer(teacher_app, name="teacher")


@teacher_app.command("train")
def teacher_train(
    dataset: str = typer.Option(..., help="Synthetic nuScenes-format dataroot (with per-pixel class images)."),
    out: str = typer.Option(None, help="Output .safetensors (default: checkpoints/demo/teacher.safetensors)."),
    minutes: float = typer.Option(14.0, help="Training time budget (a cap; steps decide first)."),
    steps: int = typer.Option(900, help="Training steps."),
    seed: int = typer.Option(0),
) -> None:
    """Train the small demo teacher on synthetic camera images; save it with its measured scores."""
    from relviz.teacher.demo import DEMO_TEACHER_PATH, train_demo_teacher

    meta = train_demo_teacher(_dataset_path(dataset), out or DEMO_TEACHER_PATH, minutes=minutes, max_steps=steps,
                              seed=seed, log=typer.echo)
    typer.echo(json.dumps(meta["scores"], indent=2))


@teacher_app.command("score")
def teacher_score(
    dataset: str = typer.Option(..., help="Synthetic nuScenes-format dataroot."),
    split: str = typer.Option("mini_val"),
    teacher: str = typer.Option(None, help="Teacher checkpoint (default: the demo teacher)."),
) -> None:
    """2D zero-shot pixel mIoU of a teacher with the 16 class prompts."""
    from relviz.teacher.demo import _camera_images, load_demo_teacher, score_2d

    t = load_demo_teacher(teacher) if teacher else load_demo_teacher()
    images, classes = _camera_images(_dataset_path(dataset), split)
    typer.echo(json.dumps(score_2d(t, images, classes), indent=2))


# Training options, shared by `relviz train` and `relviz jobs submit`.
_O = dict(
    config=typer.Option(None, help="A .json or .toml training config; flags override it."),
    loss=typer.Option(None, help="contrastive, similarity or relational."),
    epochs=typer.Option(None, min=1), lr=typer.Option(None), batch=typer.Option(None, min=1),
    pairs=typer.Option(None, help="Point-pixel pairs sampled per batch."),
    arch=typer.Option(None, help="MinkUNet14, MinkUNet18 or MinkUNet34."),
    width=typer.Option(None, help="Channel width multiplier."),
    dataset=typer.Option(None, help="Dataset folder under the workspace, or a dataroot."),
    split=typer.Option(None), teacher=typer.Option(None, help="'demo' or an open_clip model name."),
    teacher_pretrained=typer.Option(None, help="open_clip tag or local weights file."),
    seed=typer.Option(None), max_steps=typer.Option(None, help="Stop after this many steps (0: epochs decide)."),
    device=typer.Option(None, help="auto, cpu or cuda."),
    set_=typer.Option(None, "--set", help="Any other config field, as KEY=VALUE (JSON value); repeatable."),
)


def _train_config(config, set_, **flags):
    """Defaults < settings (RELVIZ_* and relviz.toml) < the --config file < --set < flags."""
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
    return TrainConfig.from_settings(_settings(), **{**table, **given})


@app.command()
def train(config: str = _O["config"], loss: str = _O["loss"], epochs: int = _O["epochs"], lr: float = _O["lr"],
          batch: int = _O["batch"], pairs: int = _O["pairs"], arch: str = _O["arch"], width: float = _O["width"],
          dataset: str = _O["dataset"], split: str = _O["split"], teacher: str = _O["teacher"],
          teacher_pretrained: str = _O["teacher_pretrained"], seed: int = _O["seed"], max_steps: int = _O["max_steps"],
          device: str = _O["device"], set_: list[str] = _O["set_"],
          run_dir: str = typer.Option(None, help="Run folder (default: <workspace>/runs/<time>-<loss>)."),
          ) -> None:
    """Distil the teacher into a MinkUNet student, in this process (see `relviz jobs submit` for background)."""
    import time as _time

    from relviz.train import Trainer

    cfg = _train_config(config, set_, loss=loss, epochs=epochs, lr=lr, batch=batch, pairs=pairs, arch=arch,
                        width=width, dataset=dataset, split=split, teacher=teacher,
                        teacher_pretrained=teacher_pretrained, seed=seed, max_steps=max_steps, device=device)
    settings = _settings().ensure()
    target = Path(run_dir) if run_dir else settings.runs_dir / f"{_time.strftime('%Y%m%d-%H%M%S')}-{cfg.loss}"
    from relviz.workspace import cache_finished_run

    result = Trainer(cfg, target, settings, on_finish=cache_finished_run(settings)).run()
    typer.echo(json.dumps({"run_dir": str(target), **result}, indent=2, default=str))


jobs_app = typer.Typer(help="Background distillation jobs.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")


def _jobs():
    from relviz.jobs import JobStore

    return JobStore(_settings())


@jobs_app.command("submit")
def jobs_submit(config: str = _O["config"], loss: str = _O["loss"], epochs: int = _O["epochs"], lr: float = _O["lr"],
                batch: int = _O["batch"], pairs: int = _O["pairs"], arch: str = _O["arch"],
                width: float = _O["width"], dataset: str = _O["dataset"], split: str = _O["split"],
                teacher: str = _O["teacher"], teacher_pretrained: str = _O["teacher_pretrained"],
                seed: int = _O["seed"], max_steps: int = _O["max_steps"], device: str = _O["device"],
                set_: list[str] = _O["set_"], name: str = typer.Option(None),
                nproc_per_node: int = typer.Option(1, "--nproc-per-node", help="DDP processes (torchrun).")) -> None:
    """Start a training job in the background; prints its id."""
    cfg = _train_config(config, set_, loss=loss, epochs=epochs, lr=lr, batch=batch, pairs=pairs, arch=arch,
                        width=width, dataset=dataset, split=split, teacher=teacher,
                        teacher_pretrained=teacher_pretrained, seed=seed, max_steps=max_steps, device=device)
    typer.echo(_jobs().submit(cfg, name=name, nproc=nproc_per_node).id)


@jobs_app.command("list")
def jobs_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """All jobs with state and progress (reconciled with their processes now)."""
    jobs = _jobs().list()
    if as_json:
        typer.echo(json.dumps([{"id": j.id, "name": j.name, "status": j.status, "step": j.last_step,
                                "total_steps": j.total_steps, "run_dir": str(j.run_dir), "error": j.error}
                               for j in jobs], indent=2))
        return
    for j in jobs:
        typer.echo(f"{j.id}  {j.status:<9} {j.last_step:>6}/{j.total_steps or '?':<6} {j.name}"
                   + (f"  ({j.error})" if j.error else ""))


def _job_action(action: str, job_id: str, **kw) -> None:
    job = getattr(_jobs(), action)(job_id, **kw)
    typer.echo(f"{job.id} {job.status}")


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, grace: float = typer.Option(30.0, help="Seconds before SIGKILL.")) -> None:
    """SIGTERM the job's process group (it checkpoints), SIGKILL after the grace period."""
    _job_action("cancel", job_id, grace_s=grace)


@jobs_app.command("resume")
def jobs_resume(job_id: str) -> None:
    """Relaunch a cancelled, lost or failed job from its last checkpoint."""
    _job_action("resume", job_id)


@jobs_app.command("logs")
def jobs_logs(job_id: str, lines: int = typer.Option(50)) -> None:
    """The last lines of a job's log."""
    store = _jobs()
    typer.echo(store.log_tail(store.get(job_id), lines))


eval_app = typer.Typer(help="Evaluate students: zero-shot, few-shot, export, comparison.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


def _eval_setup(dataset: str, split: str, teacher: str | None):
    from relviz.data import NuScenesLidarSeg
    from relviz.teacher import TeacherSpec, load_teacher

    settings = _settings()
    ds = NuScenesLidarSeg(_dataset_path(dataset), split=split, load_images=False)
    # a teacher file given here is a demo-teacher checkpoint; otherwise the configured teacher with its weights
    t = load_teacher(TeacherSpec("demo", teacher) if teacher else settings.teacher_spec)
    return settings, ds, t


def _student(path: str):
    from relviz.models.checkpoint import load_student

    return load_student(path, backend=_settings().sparse_backend)


@eval_app.command("zeroshot")
def eval_zeroshot(checkpoint: str = typer.Option(...), dataset: str = typer.Option("synthetic-mini"),
                  split: str = typer.Option("mini_val"),
                  teacher: str = typer.Option(None, help="Teacher checkpoint (default: the configured teacher).")
                  ) -> None:
    """Zero-shot 3D segmentation mIoU by the 16 class prompts (nuscenes-devkit semantics)."""
    from relviz.eval.zeroshot import evaluate_zeroshot

    model, _ = _student(checkpoint)  # the cheap checks first
    _, ds, t = _eval_setup(dataset, split, teacher)
    result = evaluate_zeroshot(model, t, ds)
    typer.echo(json.dumps({k: v for k, v in result.items() if k != "confusion"}, indent=2))


@eval_app.command("export")
def eval_export(checkpoint: str = typer.Option(...), out: str = typer.Option(...),
                dataset: str = typer.Option("synthetic-mini"), split: str = typer.Option("mini_val"),
                teacher: str = typer.Option(None)) -> None:
    """Write zero-shot predictions in the nuScenes-lidarseg submission format."""
    from relviz.eval.zeroshot import export_submission

    model, _ = _student(checkpoint)
    _, ds, t = _eval_setup(dataset, split, teacher)
    typer.echo(str(export_submission(model, t, ds, out, split)))


@eval_app.command("fewshot")
def eval_fewshot(checkpoint: str = typer.Option(...), dataset: str = typer.Option("synthetic-mini"),
                 split: str = typer.Option("mini_val"), train_split: str = typer.Option("mini_train"),
                 fraction: float = typer.Option(0.01), seed: int = typer.Option(0)) -> None:
    """Linear probe on frozen features with labels from a fraction of training frames; mIoU on val."""
    from relviz.data import NuScenesLidarSeg
    from relviz.eval.fewshot import evaluate_fewshot

    model, _ = _student(checkpoint)
    val = NuScenesLidarSeg(_dataset_path(dataset), split=split, load_images=False)
    train = NuScenesLidarSeg(None, split=train_split, load_images=False, nusc=val.nusc)
    typer.echo(json.dumps(evaluate_fewshot(model, train, val, fraction, seed=seed), indent=2))


@eval_app.command("compare")
def eval_compare(checkpoints: list[str] = typer.Option(..., help="Student checkpoints (repeat the option)."),
                 dataset: str = typer.Option("synthetic-mini"), split: str = typer.Option("mini_val"),
                 out: str = typer.Option(None, help="Report folder (default: <workspace>/reports/compare)."),
                 per_class: int = typer.Option(5000), seed: int = typer.Option(0),
                 teacher: str = typer.Option(None),
                 as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    """One table: U, T, G against the teacher, zero-shot and few-shot mIoU, and the teacher's rows."""
    from relviz.eval.report import compare, to_markdown, write_report

    settings, ds, t = _eval_setup(dataset, split, teacher)
    report = compare(checkpoints, ds.dataroot, t, settings.cache_dir, split=split, per_class=per_class, seed=seed,
                     backend=settings.sparse_backend)
    target = write_report(report, out or settings.home / "reports" / "compare")
    if as_json:
        typer.echo(json.dumps({**report, "written_to": str(target)}, indent=2, default=str))
        return
    typer.echo(to_markdown(report))
    typer.echo(f"written to {target}")


@app.command()
def demo(
    dataset_only: bool = typer.Option(False, help="Only generate the demo dataset when it is missing (make app)."),
    retrain_teacher: bool = typer.Option(False, help="Train the demo teacher again even if it exists."),
    student_steps: int = typer.Option(None, help="Training steps per student."),
) -> None:
    """Build the demo workspace: synthetic dataset, demo teacher, one small student per loss."""
    from relviz.demo import DEMO_STUDENT, build_demo, ensure_dataset

    settings = _settings()
    if dataset_only:
        typer.echo(str(ensure_dataset(settings, log=typer.echo)))
        return
    timings = build_demo(settings, retrain_teacher=retrain_teacher,
                         student_steps=student_steps or DEMO_STUDENT["max_steps"], log=typer.echo)
    typer.echo(json.dumps({k: round(v, 1) for k, v in timings.items()}, indent=2))


def _dataset_path(name: str) -> Path:
    from relviz.data.nuscenes import DatasetError

    path = _settings().dataset_root(name)
    if not path.is_dir():
        raise DatasetError(f"dataset {path} does not exist (generate it with `relviz synth`, or give a nuScenes "
                           f"dataroot)")
    return path


def main() -> None:
    app()
