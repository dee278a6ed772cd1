"""``relviz eval``: zero-shot, few-shot, export and the comparison report."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from relviz.cli.base import JSON_OPTION, app, dataset_path, settings

eval_app = typer.Typer(help="Evaluate students: zero-shot, few-shot, export, comparison.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")

DATASET = typer.Option("synthetic-mini", help="Dataset folder under the workspace, or a nuScenes dataroot.")
VERSION = typer.Option("v1.0-mini", "--version", help="nuScenes version: v1.0-mini, v1.0-trainval, ...")
SPLIT = typer.Option("mini_val", help="Split evaluated (mini_val, val, ...).")
TRAIN_SPLIT = typer.Option("mini_train", "--train-split", help="Split the probe or fine-tuning trains on.")
TEACHER = typer.Option(None, help="Demo-teacher checkpoint file (default: the configured teacher and its weights).")


def _dataset(dataset: str, version: str, split: str):
    from relviz.data import NuScenesLidarSeg

    return NuScenesLidarSeg(dataset_path(dataset), version=version, split=split, load_images=False)


def _teacher(teacher: str | None):
    from relviz.teacher import TeacherSpec, load_teacher

    # a teacher file given here is a demo-teacher checkpoint; otherwise the configured teacher with its weights
    return load_teacher(TeacherSpec("demo", teacher) if teacher else settings().teacher_spec)


def _student(path: str):
    from relviz.models.checkpoint import load_student

    return load_student(path, backend=settings().sparse_backend)


def _label_set(query: list[str] | None, queries: str | None, threshold: float | None):
    """The --query lines, then the --queries file's, as a label set (None: the 16 class prompts)."""
    from relviz.errors import InputError
    from relviz.eval.zeroshot import LabelSet, parse_queries

    lines = list(query or [])
    if queries:
        try:
            lines += Path(queries).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"--queries {queries}: cannot read it as UTF-8 text ({e})") from None
    if lines:
        return parse_queries("\n".join(lines), threshold)
    return LabelSet.of_classes(threshold) if threshold is not None else None


@eval_app.command("zeroshot")
def eval_zeroshot(checkpoint: str = typer.Option(...), dataset: str = DATASET, version: str = VERSION,
                  split: str = typer.Option(None, help="Split evaluated (default: mini_val for nuScenes, val = "
                                                       "sequence 08 for SemanticKITTI)."), teacher: str = TEACHER,
                  query: list[str] = typer.Option(None, "--query", help="A prompt, optionally `text=class` for "
                                                  "scoring or `text=background`; repeatable."),
                  queries: str = typer.Option(None, "--queries", help="A UTF-8 file of query lines (same syntax)."),
                  threshold: float = typer.Option(None, help="Cosine similarity below which a point stays "
                                                  "unassigned."),
                  prompt_aggregation: str = typer.Option("mean", help="Class prompts: 'mean' prototype per class, "
                                                         "or 'max' over OpenScene's detail names."),
                  fmt: str = typer.Option("auto", "--format", help="Dataset layout: auto, nuscenes or "
                                          "semantickitti.")) -> None:
    """Zero-shot 3D segmentation by text: the 16 class prompts (nuscenes-devkit semantics), or your
    own queries, scored over the classes they are mapped to. On a SemanticKITTI folder: its 19 class
    prompts (relviz.teacher.prompts.KITTI_PROMPTS), scored over the classes with ground truth."""
    from relviz.data.kitti import SemanticKitti, resolve_format
    from relviz.eval.zeroshot import evaluate_zeroshot

    from relviz.teacher.prompts import check_aggregation

    from relviz.teacher import require_text

    labels = _label_set(query, queries, threshold)  # the cheap checks first
    check_aggregation(prompt_aggregation)
    root = dataset_path(dataset)
    data = SemanticKitti(root, split or "val") if resolve_format(root, fmt) == "semantickitti" \
        else _dataset(dataset, version, split or "mini_val")
    text_teacher = _teacher(teacher)
    require_text(text_teacher, "zero-shot segmentation")  # before the student loads: a DINOv2 teacher has no text
    model, _ = _student(checkpoint)
    result = evaluate_zeroshot(model, text_teacher, data, queries=labels, aggregation=prompt_aggregation)
    typer.echo(json.dumps({k: v for k, v in result.items() if k != "confusion"}, indent=2))


@eval_app.command("export")
def eval_export(checkpoint: str = typer.Option(...), out: str = typer.Option(...), dataset: str = DATASET,
                version: str = VERSION, split: str = SPLIT, teacher: str = TEACHER) -> None:
    """Write zero-shot predictions in the nuScenes-lidarseg submission format."""
    from relviz.eval.zeroshot import export_submission

    from relviz.teacher import require_text

    text_teacher = _teacher(teacher)
    require_text(text_teacher, "a zero-shot submission")
    model, _ = _student(checkpoint)
    typer.echo(str(export_submission(model, text_teacher, _dataset(dataset, version, split), out, split)))


FORMAT = typer.Option("auto", "--format", help="Dataset layout: auto (detected from the folder), nuscenes or "
                                                "semantickitti.")
FEWSHOT_SPLIT = typer.Option(None, help="Split evaluated (default: mini_val for nuScenes, val = sequence 08 for "
                                         "SemanticKITTI).")
FEWSHOT_TRAIN_SPLIT = typer.Option(None, "--train-split", help="Split the probe or fine-tuning trains on (default: "
                                   "mini_train for nuScenes, train = 00-07, 09, 10 for SemanticKITTI).")


def _fewshot_splits(dataset: str, version: str, fmt: str, split: str | None, train_split: str | None):
    """(layout, val set, training set) of a workspace dataset or dataroot in either format, with the
    format's default splits for those not given (:func:`relviz.jobs.fewshot.open_fewshot_splits`)."""
    from relviz.jobs.fewshot import open_fewshot_splits

    return open_fewshot_splits(dataset_path(dataset), fmt, version, split, train_split)


def _fewshot_header(layout: str, val, frame_rule: str) -> dict:
    """What a few-shot result printed by a command starts with: the format, the scored class list, the rule."""
    from relviz.eval.fewshot import class_names

    return {"format": layout, "class_list": list(class_names(val)[1:]), "frame_rule": frame_rule}


@eval_app.command("fewshot")
def eval_fewshot(checkpoint: str = typer.Option(...), dataset: str = DATASET, version: str = VERSION,
                 split: str = FEWSHOT_SPLIT, train_split: str = FEWSHOT_TRAIN_SPLIT,
                 fraction: float = typer.Option(0.01), seed: int = typer.Option(0), fmt: str = FORMAT,
                 epochs: int = typer.Option(300, help="Passes of the probe's full-batch Adam."),
                 max_per_class: int = typer.Option(20_000, help="Labelled points per class the probe trains on.")
                 ) -> None:
    """Linear probe on frozen features with labels from a fraction of training frames; mIoU on val.
    nuScenes takes whole scenes (SLidR's scene rule); SemanticKITTI every k-th scan of the sorted
    training scans (SLidR's and ScaLR's rule), with its 19 classes. The JSON names the format, the
    class list and the frame rule."""
    from relviz.eval.fewshot import evaluate_fewshot

    layout, val, train = _fewshot_splits(dataset, version, fmt, split, train_split)  # before the student loads
    model, _ = _student(checkpoint)
    result = evaluate_fewshot(model, train, val, fraction, seed=seed, epochs=epochs, max_per_class=max_per_class)
    typer.echo(json.dumps({**_fewshot_header(layout, val, result["frame_rule"]), **result}, indent=2))


@eval_app.command("compare")
def eval_compare(checkpoints: list[str] = typer.Option(..., help="Student checkpoints (repeat the option)."),
                 dataset: str = DATASET, version: str = VERSION, split: str = SPLIT, train_split: str = TRAIN_SPLIT,
                 out: str = typer.Option(None, help="Report folder (default: <workspace>/reports/compare)."),
                 per_class: int = typer.Option(5000), seed: int = typer.Option(0), teacher: str = TEACHER,
                 scenes: int = typer.Option(None, min=1, help="Val scenes, drawn with seed 0 (default: every "
                                                               "scene). Intervals need 10 or more."),
                 per_scene: int = typer.Option(None, min=1, help="Keyframes spread over each scene (default: "
                                                                  "every keyframe)."),
                 prompt_aggregation: str = typer.Option("mean", help="Class prompts: 'mean' or 'max' (OpenScene)."),
                 as_json: bool = JSON_OPTION) -> None:
    """One table: U, T, G against the teacher, zero-shot and few-shot mIoU, and the teacher's rows,
    with intervals over scenes (or per-scene values under 10 scenes)."""
    from relviz.eval.report import compare, to_markdown, write_report
    from relviz.eval.selection import EvalSet
    from relviz.teacher.prompts import check_aggregation

    check_aggregation(prompt_aggregation)
    s = settings()
    root = dataset_path(dataset)
    report = compare(checkpoints, root, _teacher(teacher), s.cache_dir, version=version, split=split,
                     train_split=train_split, per_class=per_class, seed=seed, backend=s.sparse_backend,
                     eval_set=EvalSet(scenes, per_scene, 0), aggregation=prompt_aggregation)
    target = write_report(report, out or s.home / "reports" / "compare")
    if as_json:
        typer.echo(json.dumps({**report, "written_to": str(target)}, indent=2, default=str))
        return
    typer.echo(to_markdown(report))
    typer.echo(f"written to {target}")


@eval_app.command("finetune")
def eval_finetune(checkpoint: str = typer.Option(...), dataset: str = DATASET, version: str = VERSION,
                  split: str = FEWSHOT_SPLIT, train_split: str = FEWSHOT_TRAIN_SPLIT,
                  fraction: list[float] = typer.Option([0.01], help="Labelled fraction of the training frames "
                                                       "(0.01, 0.05, 0.1, 0.25, 1.0); repeatable: a label-"
                                                       "efficiency curve beside linear probing."),
                  epochs: int = typer.Option(100, help="Passes over the labelled frames (SLidR: 100)."),
                  steps: int = typer.Option(None, help="Optimizer steps instead of epochs (for CPU budgets)."),
                  batch: int = typer.Option(16, help="Frames per step (SLidR: 16)."),
                  seed: int = typer.Option(0), fmt: str = FORMAT,
                  finetune_seeds: int = typer.Option(None, "--finetune-seeds", min=1, help="Fine-tuning runs per "
                                                     "fraction, seeds seed, seed + 1, ... (default: "
                                                     "relviz.eval.finetune.FINETUNE_SEEDS); mIoU is their mean."),
                  background: bool = typer.Option(False, "--background", help="Run the label-efficiency curve as a "
                                                  "background job (`relviz jobs list|cancel|resume`; the Label "
                                                  "efficiency page shows it); prints the job's id.")) -> None:
    """Fine-tune the whole student with a segmentation head on a fraction of the labelled frames (the
    SLidR protocol), once per fine-tuning seed, scored on the val split; several fractions give mIoU
    against fraction for fine-tuning and linear probing. Reads nuScenes or SemanticKITTI folders (19
    classes, every k-th training scan); the JSON names the format, the class list and the frame rule."""
    from relviz.eval.fewshot import selection
    from relviz.eval.finetune import FINETUNE_SEEDS, finetune, finetune_over_seeds, label_efficiency, seed_list

    seeds = seed_list(FINETUNE_SEEDS if finetune_seeds is None else finetune_seeds, seed)
    if background:
        from relviz.jobs import JobStore
        from relviz.jobs.fewshot import FewshotJob

        job = FewshotJob(str(Path(checkpoint).resolve()), str(dataset_path(dataset)), version, split, train_split,
                         tuple(fraction), epochs, steps, batch, seed=seed, finetune_seeds=len(seeds),
                         backend=settings().sparse_backend, format=fmt)
        typer.echo(JobStore(settings()).submit_fewshot(job).id)
        return

    layout, val, train = _fewshot_splits(dataset, version, fmt, split, train_split)  # before the student loads
    model, _ = _student(checkpoint)
    schedule = dict(epochs=epochs, steps=steps, batch=batch)
    def progress(phase: str, done: int, total: int) -> None:  # on stderr: stdout stays the JSON result
        if done == total or done % max(1, total // 10) == 0:
            typer.echo(f"{phase} {done}/{total}", err=True)

    _, chosen = selection(train, fraction[0])
    if len(fraction) == 1:  # the fine-tuning part of one fraction's label efficiency: each seed, their mean
        runs = [finetune(model, train, val, fraction[0], seed=s,
                         progress=lambda phase, done, total, s=s: progress(f"seed {s}: {phase}", done, total),
                         **schedule) for s in seeds]
        result = {**chosen, **finetune_over_seeds(runs)}
    else:
        result = label_efficiency(model, train, val, fraction, seed=seed, finetune_seeds=seeds, progress=progress,
                                  **schedule)
    typer.echo(json.dumps({**_fewshot_header(layout, val, chosen["frame_rule"]), **result}, indent=2, default=float))
