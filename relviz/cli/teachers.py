"""``relviz eval teachers``: several teachers' feature structure on the same points, and
``relviz teacher list``-style listing of the registry (``relviz eval teachers --list``). The result
is printed as JSON and stored in the workspace cache, where the Feature structure page's "Teachers
side by side" shows it."""

from __future__ import annotations

import json

import typer

from relviz.cli.base import settings
from relviz.cli.evaluate import DATASET, SPLIT, VERSION, _dataset, eval_app


def parse_teacher(text: str):
    """``NAME`` or ``NAME=WEIGHTS`` (a local file or an open_clip tag) -> TeacherSpec; the registry
    checks the name."""
    from relviz.teacher import TeacherSpec, entry_for

    name, _, weights = text.partition("=")
    entry_for(name.strip())  # an unknown name is refused before anything loads
    return TeacherSpec(name.strip(), weights.strip() or None)


def teacher_keys(specs: list) -> list[str]:
    """A short name per TeacherSpec for tables and figures: the registry name, with its weights
    file's name (or tag) where one name is given more than once; a spec given twice is refused."""
    from pathlib import Path

    from relviz.errors import InputError

    if len(set(specs)) != len(specs):
        raise InputError(f"--teacher: each teacher once, got {', '.join(map(str, specs))}")
    names = [spec.name for spec in specs]
    return [spec.name if names.count(spec.name) == 1 else f"{spec.name} ({Path(spec.pretrained or 'no weights').name})"
            for spec in specs]


@eval_app.command("teachers")
def eval_teachers(teacher: list[str] = typer.Option(None, "--teacher", help="NAME or NAME=WEIGHTS (repeat): a "
                                                    "registry name (demo, ViT-B-16, ViT-B-16-SigLIP, dinov2_vits14, "
                                                    "...) and its local weights file or open_clip tag."),
                  dataset: str = DATASET, version: str = VERSION, split: str = SPLIT,
                  per_class: int = typer.Option(5000), seed: int = typer.Option(0),
                  scenes: int = typer.Option(2, min=1, help="Val scenes, drawn with seed 0."),
                  per_scene: int = typer.Option(2, min=1, help="Keyframes spread over each scene."),
                  resamples: int = typer.Option(1000, min=10, help="Scene resamples behind each interval (given "
                                                "from 10 scenes on)."),
                  save: bool = typer.Option(True, help="Store the result where the Feature structure page shows "
                                            "it (the workspace cache)."),
                  list_: bool = typer.Option(False, "--list", help="List the registered teachers and exit.")) -> None:
    """U, T, G and class-centroid relations of several teachers on the same points, with linear CKA
    between every pair (JSON), stored for the Feature structure page's "Teachers side by side"."""
    from relviz.eval.selection import EvalSet
    from relviz.eval.teachers import compare_teachers, save_comparison
    from relviz.teacher import entry_for, list_teachers, load_teacher

    if list_:
        for name in list_teachers():
            e = entry_for(name)
            typer.echo(f"{name}\t{e.family}\tdim {e.dim}\t{e.input_size[0]}x{e.input_size[1]}/{e.patch}\t"
                       f"{e.dense_path}\t{'text' if e.has_text else 'no text'}")
        return
    specs = [parse_teacher(t) for t in teacher or []] or [settings().teacher_spec]
    teachers = {key: load_teacher(spec) for key, spec in zip(teacher_keys(specs), specs)}
    data = _dataset(dataset, version, split)
    result = compare_teachers(teachers, data, settings().cache_dir, EvalSet(scenes=scenes, per_scene=per_scene),
                              per_class, seed, resamples)
    typer.echo(json.dumps(result, indent=2))
    if save:
        path = save_comparison(result, settings().cache_dir, data.dataroot, version, split)
        typer.echo(f"stored for the Feature structure page: {path}", err=True)
