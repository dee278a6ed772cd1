"""Figures and tables of an experiment's report (:func:`relviz.experiment.aggregate.aggregate`): the
cells with their intervals over seeds, the differences between cells paired by seed, the
label-efficiency curve (few-shot mIoU against the fraction of labelled frames, linear probe beside
fine-tuning) and the structure during training of every run, coloured by cell."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import plotly.graph_objects as go

from relviz.eval.report import (FEWSHOT_METHODS, NOT_FOR_TEACHER, cell_interval, format_cell, format_mean_pm,
                                format_p, parse_fewshot_metric)
from relviz.viz.fewshot import label_efficiency_curves
from relviz.viz.training import validation_figure



def report_frame(report: Mapping) -> pd.DataFrame:
    """One row per cell: its seeds and every metric as ``mean ± half-width`` of the interval over
    seeds and scenes (marked †) where the report has it, else over seeds; then the teacher's structure
    on the same keyframes."""
    rows = [{"cell": c["cell"], "seeds": len(c["seeds"]),
             **{report["headings"][m]: format_cell(c["metrics"][m]) for m in report["metrics"]}}
            for c in report["cells"]]
    teacher = (report.get("teacher") or {}).get("structure")
    if teacher:
        rows.append({"cell": "teacher (2D, paired points)", "seeds": None,
                     **{report["headings"][m]: f"{teacher[m]:.3f}" if m in teacher and m not in NOT_FOR_TEACHER
                        and teacher[m] is not None else "-" for m in report["metrics"]}})
    frame = pd.DataFrame(rows)
    return frame.astype({"seeds": "Int64"}) if len(frame) else frame  # the teacher's row has none: <NA>, not 3.0


def claims_frame(claims: list[Mapping]) -> pd.DataFrame:
    """The claims family: claim, verdict, evidence, raw p, Holm-adjusted p, sign-flip p, the test."""
    return pd.DataFrame([{"claim": c["claim"], "verdict": c["verdict"], "evidence": c["evidence"],
                          "p": format_p(c.get("p")), "p (Holm)": format_p(c.get("p_holm")),
                          "p sign-flip (seeds)": format_p(c.get("p_sign")), "test": c.get("test", "-")}
                         for c in claims])


def differences_frame(report: Mapping) -> pd.DataFrame:
    """One row per pair of cells: a - b paired by seed, ``mean ± half-width``, ``*`` where the
    interval excludes 0."""
    return pd.DataFrame([{"a - b": f"{d['a']} - {d['b']}", "seeds": len(d["seeds"]),
                          **{report["headings"][m]: format_mean_pm(d["metrics"][m])
                             + (" *" if d["metrics"][m].get("significant") else "") for m in report["metrics"]}}
                         for d in report.get("differences") or []])


def label_efficiency(report: Mapping) -> pd.DataFrame:
    """Few-shot mIoU per cell, method and fraction (columns cell, method, fraction, mean, low, high, n:
    the interval over seeds and scenes where the report has it, else over seeds), from the report's
    ``<method>@<fraction>`` metrics; empty when it has none."""
    rows = []
    for c in report["cells"]:
        for m, s in c["metrics"].items():
            parsed = parse_fewshot_metric(m)
            if parsed is not None and s.get("mean") is not None:
                method, fraction = parsed
                shown = cell_interval(s)
                rows.append({"cell": c["cell"], "method": method, "fraction": fraction, "mean": s["mean"],
                             "low": shown.get("low"), "high": shown.get("high"), "n": s["n"]})
    return pd.DataFrame(rows, columns=["cell", "method", "fraction", "mean", "low", "high", "n"])


def label_efficiency_figure(report: Mapping) -> go.Figure:
    """Few-shot mIoU against the fraction of labelled training frames, one colour per cell, error
    bars the intervals over seeds (:func:`relviz.viz.fewshot.label_efficiency_curves`)."""
    return label_efficiency_curves(label_efficiency(report).rename(columns={"cell": "curve"}),
                                   "few-shot mIoU (mean over seeds)")


def curves_by_cell(report: Mapping) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """The runs' validation curves (run key -> frame) and each run's cell, for :func:`curves_figure`."""
    cell_of = {r["key"]: r["cell"] for r in report["runs"]}
    curves = {key: pd.DataFrame(rows) for key, rows in (report.get("curves") or {}).items() if rows}
    return curves, {key: cell_of.get(key, key) for key in curves}


def curves_figure(report: Mapping) -> go.Figure:
    """U, T, G and zero-shot mIoU against the step for every run, coloured by cell (one legend entry
    per cell), with the teacher's U and T dashed."""
    curves, groups = curves_by_cell(report)
    teacher = (report.get("teacher") or {}).get("structure")
    return validation_figure(curves, teacher, groups=groups)
