"""``relviz features``: import a feature set (validated, then registered in the workspace's
``features/`` folder) and export a relviz student's features as one (docs/features.md)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from relviz.cli.base import JSON_OPTION, app, settings

features_app = typer.Typer(help="Feature sets: any model's per-point features, imported or exported.",
                           no_args_is_help=True)
app.add_typer(features_app, name="features")

def _root(root: str | None) -> Path:
    from relviz.errors import InputError

    path = settings().dataset_root(root)
    if not path.is_dir():
        raise InputError(f"dataset folder {path} does not exist (--root: a dataset folder under the workspace's "
                         f"datasets/, or a path)")
    return path


@features_app.command("import")
def import_features(
    directory: str = typer.Argument(..., help="The feature set folder (manifest.json, one .safetensors per "
                                    "keyframe)."),
    root: str = typer.Option(None, "--root", help="Dataset it was computed on: a folder under the workspace's "
                             "datasets/ or a path (default: the configured dataset)."),
    name: str = typer.Option(None, "--name", help="Name to register it under (default: the manifest's model)."),
    link: bool = typer.Option(False, "--link", help="Hard-link the files instead of copying (same file system)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Validate a feature set against the dataset of its split(s) and register it in the workspace:
    checked in full in a temporary folder, renamed into features/NAME only when valid."""
    from relviz.models.featureset import check_name, open_declared_datasets, read_manifest, register_feature_set

    manifest = read_manifest(directory)
    target = settings().features_dir / check_name(name or manifest.model)
    datasets = open_declared_datasets(manifest, _root(root))
    fs = register_feature_set(directory, datasets, target, link=link)
    facts = {"registered": str(fs.directory), "model": fs.name, "keyframes": len(fs.tokens), "dim": fs.dim,
             "dtype": fs.manifest.dtype, "kind": fs.manifest.kind, "splits": list(fs.manifest.splits),
             "text_space": fs.text_space}
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
        return
    typer.echo(f"registered {fs.name} at {fs.directory}: {len(fs.tokens)} keyframes of "
               f"{', '.join(fs.manifest.splits)}, "
               f"{fs.dim}-d {fs.manifest.dtype} {fs.manifest.kind}, text space {fs.text_space or 'none'}")


@features_app.command("export")
def export_features(
    checkpoint: str = typer.Option(..., help="A relviz student checkpoint (.safetensors)."),
    out: str = typer.Option(..., "--out", help="New folder to write the feature set to."),
    root: str = typer.Option(None, "--root", help="Dataset folder under the workspace's datasets/ or a path "
                             "(default: the configured dataset)."),
    split: list[str] = typer.Option(["mini_val"], "--split", help="Split(s) whose every keyframe is exported; "
                                    "repeatable."),
    version: str = typer.Option(None, "--version", help="nuScenes version (default: the one v1.0-* folder of ROOT)."),
    dtype: str = typer.Option("float32", help="float32 (exactly the checkpoint's features) or float16."),
    kind: str = typer.Option("points", help="points ([N, D] per keyframe) or voxels ([V, D] and point_to_voxel [N])."),
    name: str = typer.Option(None, "--name", help="The manifest's model name (default: the checkpoint's file name)."),
) -> None:
    """Write a relviz student's per-point features for every keyframe of the split(s) as a feature set."""
    from relviz.data.kitti import open_lidarseg
    from relviz.eval.features import export_feature_set
    from relviz.models.checkpoint import load_student
    from relviz.models.featureset import DTYPES, KINDS
    from relviz.errors import InputError

    for option, value, allowed in (("--dtype", dtype, DTYPES), ("--kind", kind, KINDS)):
        if value not in allowed:
            raise InputError(f"{option} must be one of {', '.join(allowed)}, got {value!r}")
    path = _root(root)
    datasets = {s: open_lidarseg(path, s, version=version) for s in split}
    for ds in datasets.values():
        ds.load_images = False  # the features need the points only
    model, meta = load_student(checkpoint, backend=settings().sparse_backend)
    text_space = (meta.get("teacher") or {}).get("identity")
    bar_total = sum(len(d) for d in datasets.values())
    with typer.progressbar(length=bar_total, label="keyframes") as bar:
        fs = export_feature_set(model, datasets, out, name or Path(checkpoint).stem, dtype=dtype, kind=kind,
                                text_space=text_space, source=f"relviz checkpoint {Path(checkpoint).resolve()}",
                                progress=lambda done, total: bar.update(1))
    typer.echo(f"wrote {len(fs.tokens)} keyframes to {fs.directory} ({fs.dim}-d {dtype} {kind}, text space "
               f"{text_space or 'none'})")
