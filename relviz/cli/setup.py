"""Commands that set up and describe a workspace: info, workspace, app, warm, synth, teacher, demo."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from relviz.cli.base import JSON_OPTION, app, dataset_path, settings
from relviz.errors import InputError


@app.command()
def info(as_json: bool = JSON_OPTION) -> None:
    """Versions, device, sparse backends and what the workspace holds."""
    from relviz.info import collect_info, format_info

    facts = collect_info(settings())
    typer.echo(json.dumps(facts, indent=2) if as_json else format_info(facts))


@app.command()
def workspace() -> None:
    """Create the workspace folders and print the workspace root."""
    typer.echo(str(settings().ensure().home))


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
    scenes: int = typer.Option(0, help="Validation scenes per checkpoint (0: every scene, the app's default)."),
    per_scene: int = typer.Option(2, help="Keyframes spread over each scene (the app's default is 2)."),
) -> None:
    """Fill the app's disk caches (dataset index, class embeddings, validation features of the teacher
    and of every checkpoint, the default toy run), so that no page computes on its first visit."""
    from relviz.eval.selection import EvalSet
    from relviz.workspace import WarmError, warm_caches

    s = settings().ensure()
    root = dataset_path(dataset or s.dataset)
    try:
        timings = warm_caches(s, root, EvalSet(scenes or None, per_scene), log=typer.echo)
    except WarmError as e:
        typer.echo(f"error: {len(e.failed)} step(s) failed ({', '.join(e.failed)}); the pages compute those on "
                   f"their first visit", err=True)
        raise typer.Exit(1)
    typer.echo(f"caches ready in {sum(timings.values()):.1f} s")


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"image size must look like 800x450, got {text!r}") from None
    return w, h


@app.command()
def synth(
    out: str = typer.Option(None, help="Output dataroot (default: <workspace>/datasets/synthetic-mini, or "
                                       "synthetic-trainval for --version v1.0-trainval)."),
    seed: int = typer.Option(0, help="Seed: the same seed gives byte-identical lidar and label files."),
    samples_per_scene: int = typer.Option(8, help="Keyframes per scene."),
    image_size: str = typer.Option("800x450", help="Camera image size WxH."),
    version: str = typer.Option("v1.0-mini", help="v1.0-mini (its 10 scenes) or v1.0-trainval (--scenes of them, "
                                                  "named as nuScenes' train and val scenes)."),
    scenes: int = typer.Option(None, help="v1.0-trainval: number of scenes (default 20; about 1 in 6 in val)."),
    workers: int = typer.Option(None, help="Processes (default: CPU count, at most 4)."),
    beams: int = typer.Option(32, help="Lidar beams (nuScenes: 32). Another count and seed make a second, "
                                       "out-of-distribution set for few-shot evaluation."),
) -> None:
    """Generate a synthetic nuScenes dataset with lidarseg (v1.0-mini, or v1.0-trainval with --scenes)."""
    import time

    from relviz.data.synthetic import SynthConfig, generate

    if workers is not None and workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    s = settings().ensure()
    cfg = SynthConfig(seed=seed, samples_per_scene=samples_per_scene, image_size=_parse_size(image_size),
                      version=version, scenes=scenes, beams=beams)
    target = Path(out) if out else s.dataset_root("synthetic-mini" if version == "v1.0-mini" else "synthetic-trainval")
    start = time.perf_counter()
    with typer.progressbar(length=len(cfg.scene_names), label="scenes") as bar:
        generate(target, cfg, progress=lambda done, total: bar.update(1), workers=workers)
    typer.echo(f"wrote {target} ({version}, {len(cfg.scene_names)} scenes) in {time.perf_counter() - start:.1f} s")


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

    meta = train_demo_teacher(dataset_path(dataset), out or DEMO_TEACHER_PATH, minutes=minutes, max_steps=steps,
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
    images, classes = _camera_images(dataset_path(dataset), split)
    typer.echo(json.dumps(score_2d(t, images, classes), indent=2))


@app.command()
def demo(
    dataset_only: bool = typer.Option(False, help="Only generate the demo dataset when it is missing (make app)."),
    retrain_teacher: bool = typer.Option(False, help="Train the demo teacher again even if it exists."),
    max_running: int = typer.Option(None, "--max-running", min=1,
                                    help="Training jobs at once (default: the demo experiment's)."),
    evidence: bool = typer.Option(False, "--evidence", help="The evidence experiment instead (docs/evidence.md): "
                                  "its 243-scene v1.0-trainval world, then relviz/experiment/evidence.toml in the "
                                  "background. Needs a workspace outside the checkout."),
    home: str = typer.Option(None, "--home", help="Workspace folder (default: RELVIZ_HOME or the settings'); "
                                                  "the background jobs use it too."),
    wait: bool = typer.Option(False, "--wait", help="With --evidence: supervise here until the report instead of "
                                                    "in the background."),
) -> None:
    """Build the demo from nothing: synthetic dataset, demo teacher, the demo experiment (3 losses x
    3 seeds as background jobs, evaluated), and one student per loss with the report in
    checkpoints/demo/. With --evidence: the evidence world and experiment, nothing published. Run it
    again to continue an interrupted one."""
    import os

    from relviz.demo import build_demo, build_evidence, ensure_dataset

    if home is not None:  # through the environment: the detached supervisor and its jobs read it too
        os.environ["RELVIZ_HOME"] = str(Path(home).expanduser().resolve())
    s = settings()
    if evidence:
        if dataset_only:
            raise InputError("--dataset-only is the demo's first-run dataset; --evidence generates its own world")
        out = build_evidence(s, detach=not wait, max_running=max_running,
                             log=lambda line: typer.echo(f"{time.strftime('%H:%M:%S')} {line}"))
        typer.echo(json.dumps(out, indent=2))
        return
    if dataset_only:
        typer.echo(str(ensure_dataset(s, log=typer.echo)))
        return
    timings = build_demo(s, retrain_teacher=retrain_teacher, max_running=max_running,
                         log=lambda line: typer.echo(f"{time.strftime('%H:%M:%S')} {line}"))
    typer.echo(json.dumps({k: round(v, 1) for k, v in timings.items()}, indent=2))
