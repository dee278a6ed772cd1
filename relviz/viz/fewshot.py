"""Label-efficiency curves: few-shot mIoU against the fraction of labelled training frames, fine-tuning
solid and the linear probe dashed, for an experiment's cells (relviz.viz.experiment) or for single
checkpoints from their few-shot jobs (:func:`checkpoint_label_efficiency`), in and out of
distribution side by side (:func:`label_efficiency_by_dataset`: one panel per dataset, its format and
class count named)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from relviz.eval.report import FEWSHOT_METHODS
from relviz.viz.training import run_color

FEWSHOT_DASH = {"linear_probe": "dash", "finetune": "solid"}
CURVE_COLUMNS = ["curve", "method", "fraction", "mean", "low", "high", "n", "labelled", "no_interval"]
FORMAT_NAMES = {"nuscenes": "nuScenes", "semantickitti": "SemanticKITTI"}
SEPARATOR = " · "  # between a checkpoint and its dataset in a curve's name


def dataset_of(result: Mapping) -> str:
    """The dataset a few-shot job's result was computed on, with its format and class count:
    "synthetic-kitti (SemanticKITTI, 19 classes)". Results from before jobs recorded it were nuScenes."""
    name = result.get("dataset") or Path(result["job"]["dataroot"]).name
    layout = result.get("format", "nuscenes")
    classes = len(result["classes"]) if result.get("classes") else 16
    return f"{name} ({FORMAT_NAMES.get(layout, layout)}, {classes} classes)"


def curve_label(checkpoint: str, result: Mapping) -> str:
    """A job's curve: "relational · synthetic-kitti (SemanticKITTI, 19 classes)"."""
    return f"{checkpoint}{SEPARATOR}{dataset_of(result)}"


def workspace_datasets(datasets_dir: str | Path) -> dict[str, Path]:
    """The few-shot datasets of a workspace's ``datasets/`` folder: label ("name (SemanticKITTI)") ->
    folder, nuScenes and SemanticKITTI layouts (:func:`relviz.data.kitti.detect_format`); other
    folders are left out."""
    from relviz.data.kitti import detect_format
    from relviz.errors import InputError

    out = {}
    folder = Path(datasets_dir)
    for path in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
        try:
            out[f"{path.name} ({FORMAT_NAMES[detect_format(path)]})"] = path
        except InputError:  # neither layout, or both: not a dataset a few-shot job can read as it is
            continue
    return out


def latest_job_results(jobs: Iterable, label_of: Mapping[str, str], read: Callable[[Path], Mapping | None]
                       ) -> tuple[dict[str, Mapping], list[str]]:
    """The curves of finished few-shot jobs (newest first): the latest per checkpoint and dataset,
    named by :func:`curve_label` (``label_of``: checkpoint file -> its label; ``read``: a run folder ->
    its result), and one line per curve naming its source."""
    results, sources = {}, []
    for j in jobs:
        if j.status != "succeeded" or (result := read(j.run_dir)) is None:
            continue
        curve = curve_label(label_of.get(j.config["checkpoint"], j.config["checkpoint"]), result)
        if curve not in results:
            results[curve] = result
            sources.append(f"{curve}: job {j.id}, {result['val_frames']} val frames, seed {result['seed']}")
    return results, sources


def curve_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The page's table of a :func:`checkpoint_label_efficiency` frame: fractions as percentages, intervals in words."""
    shown = frame.assign(fraction=frame["fraction"].map(lambda f: f"{f:.0%}"),
                         interval=[f"[{lo:.3f}, {hi:.3f}]" if pd.notna(lo) else "-"
                                   for lo, hi in zip(frame["low"], frame["high"])])
    return shown[["curve", "method", "fraction", "labelled", "mean", "interval", "no_interval", "n"]].rename(
        columns={"curve": "checkpoint", "mean": "mIoU", "interval": "95% interval (val scenes)",
                 "no_interval": "why no interval", "n": "val keyframes"})


def label_efficiency_by_dataset(frame: pd.DataFrame, y_title: str = "few-shot mIoU") -> go.Figure:
    """:func:`label_efficiency_curves` with one panel per dataset (the part of a curve's name after
    :data:`SEPARATOR`; in distribution and out of distribution side by side), a checkpoint one colour
    in every panel."""
    parts = frame["curve"].str.partition(SEPARATOR)
    frame = frame.assign(checkpoint=parts[0], dataset=parts[2].where(parts[2] != "", "-"))
    datasets, checkpoints = list(dict.fromkeys(frame["dataset"])), list(dict.fromkeys(frame["checkpoint"]))
    fig = make_subplots(rows=1, cols=len(datasets), shared_yaxes=True, subplot_titles=datasets)
    for col, dataset in enumerate(datasets, 1):
        panel = label_efficiency_curves(frame[frame["dataset"] == dataset], y_title)
        for trace in panel.data:
            checkpoint = trace.name.split(SEPARATOR)[0]
            trace.line.color = run_color(checkpoints.index(checkpoint))
            fig.add_trace(trace, row=1, col=col)
        fig.update_xaxes(type="log", title_text="fraction of labelled training frames", tickformat=".0%",
                         row=1, col=col)
    fig.update_yaxes(title_text=y_title, row=1, col=1)
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.3))
    return fig


def checkpoint_label_efficiency(results: Mapping[str, Mapping]) -> pd.DataFrame:
    """One row per checkpoint, method and fraction (:data:`CURVE_COLUMNS`; ``mean`` is the mIoU on
    every val keyframe over the fixed class list, ``low``/``high`` its 95% bootstrap interval over the
    val scenes, ``no_interval`` why there is none (fewer than 10 scenes), ``n`` the keyframes,
    ``labelled`` the frames actually labelled against the fraction asked), from few-shot jobs'
    results (curve name -> :func:`relviz.jobs.fewshot.read_result`)."""
    from relviz.eval.fewshot import describe_selection

    rows = []
    for curve, result in results.items():
        for run in result["runs"]:
            for method in FEWSHOT_METHODS:
                r = run[method]
                interval = r.get("miou_interval") or {}
                rows.append({"curve": curve, "method": method, "fraction": run["fraction"], "mean": r["miou"],
                             "low": interval.get("low"), "high": interval.get("high"),
                             "n": len(r["confusion_per_frame"]), "labelled": describe_selection(r),
                             "no_interval": r.get("interval_refused", "intervals over keyframes (before scenes)")
                             if not interval else None})
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def label_efficiency_curves(frame: pd.DataFrame, y_title: str = "few-shot mIoU") -> go.Figure:
    """mIoU against the labelled fraction (log axis) from a :data:`CURVE_COLUMNS` frame: one colour
    per curve, fine-tuning solid and the linear probe dashed, error bars where the rows have intervals."""
    fig = go.Figure()
    for i, curve in enumerate(dict.fromkeys(frame["curve"])):
        for method in FEWSHOT_METHODS:
            part = frame[(frame["curve"] == curve) & (frame["method"] == method)].sort_values("fraction")
            if part.empty:
                continue
            has_interval = part["low"].notna().all()
            fig.add_trace(go.Scatter(
                x=part["fraction"], y=part["mean"], mode="lines+markers", name=f"{curve}, {FEWSHOT_METHODS[method]}",
                line=dict(color=run_color(i), dash=FEWSHOT_DASH[method]),
                error_y=dict(type="data", symmetric=False, array=part["high"] - part["mean"],
                             arrayminus=part["mean"] - part["low"]) if has_interval else None,
                hovertemplate=f"{curve}, {FEWSHOT_METHODS[method]}<br>%{{x:.0%}} of the frames<br>mIoU %{{y:.3f}}"
                              "<extra></extra>"))
    fig.update_xaxes(type="log", title_text="fraction of labelled training frames", tickformat=".0%")
    fig.update_yaxes(title_text=y_title)
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=-0.25))
    return fig


def finetune_minus_probe_frame(results: Mapping[str, Mapping]) -> pd.DataFrame:
    """Per checkpoint and fraction: fine-tuned minus linear-probe mIoU on the same val keyframes, its
    paired 95% bootstrap interval over the val scenes and whether it excludes 0; with fewer than 10
    scenes no interval, each scene's difference and the reason (columns checkpoint, fraction,
    difference, low, high, significant, per_scene, no_interval)."""
    rows = []
    for curve, result in results.items():
        for run in result["runs"]:
            d = run.get("finetune_minus_probe") or {}
            per_scene = d.get("per_scene")
            rows.append({"checkpoint": curve, "fraction": run["fraction"], "difference": d.get("value"),
                         "low": d.get("low"), "high": d.get("high"), "significant": d.get("significant"),
                         "per_scene": None if per_scene is None else ", ".join(f"{v:+.3f}" for v in per_scene),
                         "no_interval": d.get("interval_refused")})
    return pd.DataFrame(rows, columns=["checkpoint", "fraction", "difference", "low", "high", "significant",
                                       "per_scene", "no_interval"])


def finetune_seed_row(checkpoint: str, fraction: float, tuned: dict) -> dict:
    """One fraction's fine-tuning: each seed's mIoU, their mean, the two-stage interval or why none."""
    two, seeds = tuned.get("two_stage"), tuned.get("seeds", [tuned.get("seed")])
    per_seed = tuned.get("miou_per_seed", [tuned["miou"]])  # a result from before several seeds: its one
    return {"checkpoint": checkpoint, "fraction": f"{fraction:.0%}", "seeds": ", ".join(map(str, seeds)),
            "mIoU per seed": ", ".join("-" if v is None else f"{v:.3f}" for v in per_seed), "mean": tuned["miou"],
            "95% interval (seeds and scenes)": "-" if two is None else f"[{two['low']:.3f}, {two['high']:.3f}]",
            "why no interval": None if two else "one seed" if len(seeds) < 2 else tuned.get("interval_refused")}
