"""``relviz eval teachers``: several teachers' feature structure on the same points, and
``relviz teacher list``-style listing of the registry (``relviz eval teachers --list``)."""

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


@eval_app.command("teachers")
def eval_teachers(teacher: list[str] = typer.Option(None, "--teacher", help="NAME or NAME=WEIGHTS (repeat): a "
                                                    "registry name (demo, ViT-B-16, ViT-B-16-SigLIP, dinov2_vits14, "
                                                    "...) and its local weights file or open_clip tag."),
                  dataset: str = DATASET, version: str = VERSION, split: str = SPLIT,
                  per_class: int = typer.Option(5000), seed: int = typer.Option(0),
                  scenes: int = typer.Option(2, min=1, help="Val scenes, drawn with seed 0."),
                  per_scene: int = typer.Option(2, min=1, help="Keyframes spread over each scene."),
                  list_: bool = typer.Option(False, "--list", help="List the registered teachers and exit.")) -> None:
    """U, T, G and class-centroid relations of several teachers on the same points, with linear CKA
    between every pair (JSON)."""
    from relviz.eval.selection import EvalSet
    from relviz.eval.teachers import compare_teachers
    from relviz.teacher import entry_for, list_teachers, load_teacher

    if list_:
        for name in list_teachers():
            e = entry_for(name)
            typer.echo(f"{name}\t{e.family}\tdim {e.dim}\t{e.input_size[0]}x{e.input_size[1]}/{e.patch}\t"
                       f"{e.dense_path}\t{'text' if e.has_text else 'no text'}")
        return
    specs = [parse_teacher(t) for t in teacher or []] or [settings().teacher_spec]
    teachers = {str(spec): load_teacher(spec) for spec in specs}
    result = compare_teachers(teachers, _dataset(dataset, version, split), settings().cache_dir,
                              EvalSet(scenes=scenes, per_scene=per_scene), per_class, seed)
    typer.echo(json.dumps(result, indent=2))
