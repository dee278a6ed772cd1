"""Figures of the toy experiment: outputs on the sphere at chosen iterations, U and T over training
(the paper's figure), judged values over seeds, where the paper's ordering holds over predictability
x iterations, and the text of a progress bar."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from relviz.toy import PredictabilitySweep, ToyResult, ToySweep

LOSS_COLORS = {"contrastive": "#d62728", "similarity": "#1f77b4", "relational": "#2ca02c", "source": "#444"}
_CLUSTER_COLORS = ("#1f77b4", "#2ca02c", "#d62728")
_METRICS = (("uniformity", "U"), ("tolerance", "T"))


def _sphere_mesh() -> go.Scatter3d:
    """The unit sphere as dots along its equator and two meridians. A translucent surface, as it was, took
    5.5 of the figure's 8 s to draw in the headless browser (software WebGL), lines 1.5 s, these dots
    0.6 s (bench/README.md)."""
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    zero = np.zeros_like(t)
    return go.Scatter3d(x=np.concatenate([np.cos(t), np.cos(t), zero]), y=np.concatenate([np.sin(t), zero, np.cos(t)]),
                        z=np.concatenate([zero, np.sin(t), np.sin(t)]), mode="markers", hoverinfo="skip",
                        marker=dict(size=1.5, color="#bbb"), showlegend=False)


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


def toy_history_figure(result: ToyResult) -> go.Figure:
    """U (left) and T (right) against iterations per loss, with the source's values dashed: the
    paper's U-against-iterations figure, and T beside it. One legend for both panels."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=[f"{name} {sym}" for name, sym in _METRICS])
    source = {"uniformity": result.source_uniformity, "tolerance": result.source_tolerance}
    for col, (metric, sym) in enumerate(_METRICS, start=1):
        for name, run in result.runs.items():
            fig.add_trace(go.Scatter(x=run.iterations, y=getattr(run, metric), mode="lines", name=name,
                                     legendgroup=name, showlegend=col == 1, line=dict(color=LOSS_COLORS.get(name))),
                          row=1, col=col)
        fig.add_hline(y=source[metric], line_dash="dash", line_color=LOSS_COLORS["source"], row=1, col=col,
                      annotation_text=f"source {sym} {source[metric]:.3f}")
        fig.update_xaxes(title_text="iteration", row=1, col=col)
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.25))
    return fig


def toy_sweep_figure(sweep: ToySweep) -> go.Figure:
    """Judged U (left) and T (right) of the source and each loss, one point per seed, a line joining
    the values of one seed (the comparisons are paired: one seed, one source sample)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=[f"judged {sym} over seeds" for _, sym in _METRICS])
    names = list(sweep.summaries[0])
    for col, (metric, _) in enumerate(_METRICS, start=1):
        for seed, summary in zip(sweep.seeds, sweep.summaries):
            fig.add_trace(go.Scatter(x=names, y=[summary[n][metric] for n in names], mode="lines", showlegend=False,
                                     line=dict(color="#ccc", width=1), hoverinfo="skip"), row=1, col=col)
        for name in names:
            fig.add_trace(go.Scatter(x=[name] * len(sweep.seeds), y=[s[name][metric] for s in sweep.summaries],
                                     mode="markers", name=name, legendgroup=name, showlegend=col == 1,
                                     text=[f"seed {s}" for s in sweep.seeds],
                                     marker=dict(color=LOSS_COLORS.get(name), size=8)), row=1, col=col)
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.2))
    return fig


def toy_predictability_figure(sweep: PredictabilitySweep, claim: str = "ordering") -> go.Figure:
    """One heatmap per setup: the share of seeds giving ``claim`` per predictability (rows) and
    iterations (columns), each cell labelled 'k/n' and its 95% Clopper-Pearson interval on hover."""
    rows = sweep.table(claim)
    fig = make_subplots(rows=1, cols=len(sweep.setups), subplot_titles=sweep.setups, shared_yaxes=True)
    columns = [str(h) for h in sweep.horizons]  # categories: the horizons are not evenly spaced
    ylabels = [f"{p:g}" for p in sweep.predictabilities]
    for col, setup in enumerate(sweep.setups, start=1):
        cell = {(r["predictability"], r["iteration"]): r for r in rows if r["setup"] == setup}
        grid = [[cell[p, h] for h in sweep.horizons] for p in sweep.predictabilities]
        fig.add_trace(go.Heatmap(
            z=[[c["rate"] for c in line] for line in grid], x=columns, y=ylabels, zmin=0, zmax=1,
            colorscale="RdBu", showscale=col == 1, colorbar=dict(title="share of seeds"),
            text=[[f"{c['held']}/{c['seeds']}" for c in line] for line in grid], texttemplate="%{text}",
            customdata=[[[c["low"], c["high"], c["verdict"]] for c in line] for line in grid],
            hovertemplate="R^2 %{y}, iteration %{x}: %{text} seeds<br>95% interval %{customdata[0]:.2f}-"
                          "%{customdata[1]:.2f}: %{customdata[2]}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title_text="iteration", type="category", row=1, col=col)
    fig.update_yaxes(title_text="predictability (R^2)", type="category", row=1, col=1)
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def progress_text(phase: str, done: int, total: int, elapsed_s: float) -> str:
    """'<phase>: step done/total · about N s left', the estimate from the rate so far."""
    text = f"{phase}: step {done}/{total}"
    if 0 < done < total:
        left = elapsed_s * (total - done) / done
        text += f" · about {left:.0f} s left" if left < 120 else f" · about {left / 60:.0f} min left"
    return text
