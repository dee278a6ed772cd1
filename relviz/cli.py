"""The ``relviz`` command line: a thin layer over library calls."""

from __future__ import annotations

import json
from pathlib import Path

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
    try:
        cfg = SynthConfig(seed=seed, samples_per_scene=samples_per_scene, image_size=_parse_size(image_size))
        start = time.perf_counter()
        with typer.progressbar(length=10, label="scenes") as bar:
            generate(target, cfg, progress=lambda done, total: bar.update(1), workers=workers)
    except (ValueError, FileExistsError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    typer.echo(f"wrote {target} in {time.perf_counter() - start:.1f} s")


teacher_app = typer.Typer(help="The CLIP teacher.", no_args_is_help=True)
app.add_typer(teacher_app, name="teacher")


@teacher_app.command("train")
def teacher_train(
    dataset: str = typer.Option(..., help="Synthetic nuScenes-format dataroot (with per-pixel class images)."),
    out: str = typer.Option(None, help="Output .safetensors (default: checkpoints/demo/teacher.safetensors)."),
    minutes: float = typer.Option(12.0, help="Training time budget."),
    seed: int = typer.Option(0),
) -> None:
    """Train the small demo teacher on synthetic camera images; save it with its measured scores."""
    from relviz.teacher.demo import DEMO_TEACHER_PATH, train_demo_teacher

    meta = train_demo_teacher(_dataset_path(dataset), out or DEMO_TEACHER_PATH, minutes=minutes, seed=seed,
                              log=typer.echo)
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


def _dataset_path(name: str) -> Path:
    path = _settings().dataset_root(name)
    if not path.is_dir():
        typer.echo(f"error: dataset {path} does not exist", err=True)
        raise typer.Exit(2)
    return path


def main() -> None:
    app()
