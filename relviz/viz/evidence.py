"""Figures of the paper's argument: gap measures against performance over checkpoints, and the
class-relation matrices of a student beside its teacher's."""

from __future__ import annotations

from typing import Mapping

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from relviz.data.classes import CLASSES
from relviz.eval.evidence import format_coefficient


def gap_scatter(evidence: Mapping, measure: str, performance: str) -> go.Figure:
    """One point per checkpoint of :func:`relviz.eval.evidence.gap_vs_performance`: ``measure``
    against ``performance``, titled with Pearson's r over configurations and its interval (where one
    can exist at that n)."""
    rows = [m for m in evidence["measures"] if m[performance] is not None]
    frame = pd.DataFrame({"checkpoint": [m["checkpoint"] for m in rows], measure: [m[measure] for m in rows],
                          performance: [m[performance] for m in rows]})
    c = next(x for x in evidence["correlations"] if x["measure"] == measure and x["performance"] == performance)
    title = f"{measure} vs {performance}"
    if c.get("pearson"):
        title += f": Pearson r = {format_coefficient(c['pearson'], 'r')}, n = {c['n']} configurations"
    return px.scatter(frame, x=measure, y=performance, text="checkpoint", title=title).update_traces(
        textposition="top center")


def correlation_frame(evidence: Mapping) -> pd.DataFrame:
    """The correlations as a table: measure, performance, n (configurations), Pearson and Spearman
    with intervals and permutation p where they can exist at that n, the within-configuration r, and
    the reason when no interval or p is printed."""
    def within(c):
        w = c.get("within")
        return "-" if not w or w.get("r") is None else f"{w['r']:+.2f} (n={w['n']} runs)"

    return pd.DataFrame([{"gap measure": c["measure"], "performance": c["performance"], "n (configurations)": c["n"],
                          "Pearson r [95%]": format_coefficient(c.get("pearson"), "r"),
                          "Spearman ρ [95%]": format_coefficient(c.get("spearman"), "rho"),
                          "within a configuration": within(c), "note": c.get("note") or ""}
                         for c in evidence["correlations"]])


def relation_figure(relations: Mapping, student: str) -> go.Figure:
    """Teacher, student and difference class-centroid cosine-similarity matrices, side by side."""
    names = [CLASSES[int(c)] for c in relations["classes"]]
    fig = make_subplots(rows=1, cols=3, subplot_titles=["teacher", student, f"{student} - teacher"],
                        horizontal_spacing=0.12)
    for col, key, scale in ((1, "teacher_similarity", "Viridis"), (2, "student_similarity", "Viridis"),
                            (3, "difference", "RdBu")):
        fig.add_trace(go.Heatmap(z=relations[key], x=names, y=names, colorscale=scale, showscale=col != 1,
                                 zmid=0 if key == "difference" else None, colorbar=dict(x=0.62 if col == 2 else 1.0)),
                      row=1, col=col)
    fig.update_layout(height=460)
    fig.update_yaxes(autorange="reversed")
    return fig


__all__ = ["correlation_frame", "gap_scatter", "relation_figure"]
