"""SemanticKITTI-format commands: ``synth-kitti`` (the synthetic world) and ``kitti-info`` (a folder's
format, splits and the few-shot scans of SLidR's rule)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from relviz.cli.base import JSON_OPTION, app, settings
from relviz.errors import InputError


@app.command("synth-kitti")
def synth_kitti(
    out: str = typer.Option(None, help="Output folder (default: <workspace>/datasets/synthetic-kitti)."),
    sequences: int = typer.Option(11, help="Sequences, 1-11, named 00-10 (08 is val; the first train ones)."),
    scans_per_sequence: int = typer.Option(6, help="Scans per sequence."),
    seed: int = typer.Option(0, help="Seed: the same seed gives byte-identical files."),
) -> None:
    """Generate the synthetic SemanticKITTI-format world (64 beams at 1.73 m, KITTI's 19 classes)."""
    from relviz.data.synthetic_kitti import KittiSynthConfig, generate_kitti

    for name, value in (("--sequences", sequences), ("--scans-per-sequence", scans_per_sequence)):
        if value < 1:
            raise InputError(f"{name} must be at least 1, got {value}")
    cfg = KittiSynthConfig(seed=seed, sequences=sequences, scans_per_sequence=scans_per_sequence)
    target = Path(out) if out else settings().ensure().dataset_root("synthetic-kitti")
    start = time.perf_counter()
    with typer.progressbar(length=len(cfg.sequence_names), label="sequences") as bar:
        generate_kitti(target, cfg, progress=lambda done, total: bar.update(1))
    typer.echo(f"wrote {target} ({len(cfg.sequence_names)} sequences x {scans_per_sequence} scans) in "
               f"{time.perf_counter() - start:.1f} s")


@app.command("kitti-info")
def kitti_info(
    dataset: str = typer.Argument(..., help="A dataset folder."),
    fmt: str = typer.Option("auto", "--format", help="auto, nuscenes or semantickitti."),
    fraction: list[float] = typer.Option([0.01, 0.1], help="Few-shot fractions to show the selected scans of."),
    as_json: bool = JSON_OPTION,
) -> None:
    """The folder's format; for SemanticKITTI, the scans of each split and the scans SLidR's and ScaLR's
    few-shot rule labels at each fraction (the actual count and share)."""
    from relviz.data.kitti import SemanticKitti, resolve_format

    found = resolve_format(dataset, fmt)
    facts: dict = {"dataset": dataset, "format": found}
    if found == "semantickitti":
        train, val = SemanticKitti(dataset, "train"), SemanticKitti(dataset, "val")
        facts["splits"] = {name: {"sequences": d.scenes, "missing_sequences": d.missing_sequences, "scans": len(d),
                                  "labelled": d.has_lidarseg} for name, d in (("train", train), ("val", val))}
        facts["fewshot"] = [train.selection(f)[1] for f in fraction]
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
        return
    typer.echo(f"{dataset}: {found}")
    for name, split in facts.get("splits", {}).items():
        typer.echo(f"  {name}: {split['scans']} scans in sequences {', '.join(split['sequences'])}"
                   + (f" (absent: {', '.join(split['missing_sequences'])})" if split["missing_sequences"] else ""))
    for sel in facts.get("fewshot", []):
        typer.echo(f"  {100 * sel['fraction']:g}%: {sel['frame_count']} of {sel['split_frames']} scans "
                   f"= {100 * sel['frame_fraction']:.3g}% from {sel['scene_count']} sequences ({sel['frame_rule']})")
