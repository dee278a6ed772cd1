"""Figures of the toy experiment: outputs on the sphere at chosen iterations, and U over training."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from relviz.errors import InputError
from relviz.toy import ToyResult

LOSS_COLORS = {"contrastive": "#d62728", "similarity": "#1f77b4", "relational": "#2ca02c"}
_CLUSTER_COLORS = ("#1f77b4", "#2ca02c", "#d62728")


def _sphere_mesh() -> go.Surface:
    u, v = np.mgrid[0:2 * np.pi:40j, 0:np.pi:20j]
    return go.Surface(x=np.cos(u) * np.sin(v), y=np.sin(u) * np.sin(v), z=np.cos(v), opacity=0.08,
                      showscale=False, hoverinfo="skip", colorscale=[[0, "#888"], [1, "#888"]])


def toy_sphere_figure(result: ToyResult, iteration: int | None = None) -> go.Figure:
    """One 3D panel per loss: the source (faint, by cluster) and the MLP's outputs at ``iteration``
    (the last snapshot at or before it; default the end of training)."""
    names = list(result.runs)
    fig = make_subplots(rows=1, cols=len(names), specs=[[{"type": "scene"}] * len(names)],
                        subplot_titles=[n for n in names])
    src = result.source_points.numpy()
    labels = result.labels.numpy()
    for col, name in enumerate(names, start=1):
        run = result.runs[name]
        its = sorted(run.snapshots)
        it = its[-1] if iteration is None else max([i for i in its if i <= iteration] or its[:1])
        out = run.snapshots[it].numpy()
        fig.add_trace(_sphere_mesh(), row=1, col=col)
        for c in np.unique(labels):
            m = labels == c
            fig.add_trace(go.Scatter3d(x=src[m, 0], y=src[m, 1], z=src[m, 2], mode="markers", opacity=0.25,
                                       marker=dict(size=2, color=_CLUSTER_COLORS[c % 3]), name=f"source {int(c)}",
                                       showlegend=col == 1, legendgroup=f"s{int(c)}"), row=1, col=col)
            fig.add_trace(go.Scatter3d(x=out[m, 0], y=out[m, 1], z=out[m, 2], mode="markers",
                                       marker=dict(size=2.5, color="cyan", line=dict(width=0)),
                                       name="prediction", showlegend=bool(col == 1 and c == labels.min()),
                                       legendgroup="pred"), row=1, col=col)
        fig.layout.annotations[col - 1].text = f"{name} (iteration {it})"
    fig.update_scenes(aspectmode="cube", xaxis_visible=False, yaxis_visible=False, zaxis_visible=False)
    fig.update_layout(height=420, margin=dict(l=0, r=0, t=40, b=0))
    return fig


def toy_uniformity_figure(result: ToyResult, metric: str = "uniformity") -> go.Figure:
    """U (or T) over iterations per loss, with the source's value as a dashed line."""
    if metric not in ("uniformity", "tolerance"):
        raise InputError(f"metric must be 'uniformity' or 'tolerance', got {metric!r}")
    fig = go.Figure()
    for name, run in result.runs.items():
        fig.add_trace(go.Scatter(x=run.iterations, y=getattr(run, metric), mode="lines", name=name,
                                 line=dict(color=LOSS_COLORS.get(name))))
    source = result.source_uniformity if metric == "uniformity" else result.source_tolerance
    fig.add_hline(y=source, line_dash="dash", line_color="black", annotation_text=f"source {source:.3f}")
    fig.update_layout(xaxis_title="iteration", yaxis_title=metric, height=360, margin=dict(l=10, r=10, t=30, b=10))
    return fig
