"""Label-efficiency curves: few-shot mIoU against the fraction of labelled training frames, fine-tuning
solid and the linear probe dashed, for an experiment's cells (relviz.viz.experiment) or for single
checkpoints from their few-shot jobs (:func:`checkpoint_label_efficiency`)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import plotly.graph_objects as go

from relviz.eval.report import FEWSHOT_METHODS
from relviz.viz.training import run_color

FEWSHOT_DASH = {"linear_probe": "dash", "finetune": "solid"}
CURVE_COLUMNS = ["curve", "method", "fraction", "mean", "low", "high", "n", "labelled", "no_interval"]


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
