"""Figures of training runs: the structure of the student during training (U, T, G and zero-shot
mIoU at each validation, the paper's "U against iterations") and the training loss, for one run or
several overlaid (one colour per run, one legend, shared step axes), so that runs compare by eye.

The curves are data frames with a ``step`` column (:func:`relviz.jobs.validation_curve`,
:func:`relviz.jobs.loss_curve`); the figures only draw them."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from relviz.viz.explain import METRICS

PANELS = ("uniformity", "tolerance", "gap", "zeroshot_miou")  # 2 x 2, in this order


def run_color(i: int) -> str:
    """The colour of the i-th run (or cell) in every figure of runs, so one run has one colour."""
    return qualitative.Plotly[i % len(qualitative.Plotly)]


def validation_figure(curves: Mapping[str, pd.DataFrame], teacher: Mapping[str, float] | None = None,
                      groups: Mapping[str, str] | None = None) -> go.Figure:
    """U, T, G and zero-shot mIoU against the training step, one panel each; one line per run in
    ``curves`` (run name -> frame with ``step`` and the panels' columns). ``teacher``'s values of U
    and T, when given, are dashed lines: a student is more like its teacher the closer it gets.
    ``groups`` (run -> group, e.g. an experiment's cell) gives the runs of one group one colour and
    one legend entry."""
    groups = groups or {run: run for run in curves}
    colors = {g: run_color(i) for i, g in enumerate(dict.fromkeys(groups[run] for run in curves))}
    fig = make_subplots(rows=2, cols=2, shared_xaxes=True, subplot_titles=[METRICS[k][0] for k in PANELS],
                        vertical_spacing=0.12, horizontal_spacing=0.08)
    shown: set[str] = set()
    for run, curve in curves.items():
        group = groups[run]
        for j, key in enumerate(PANELS):
            if key not in curve:
                continue
            fig.add_trace(go.Scatter(x=curve["step"], y=curve[key], mode="lines+markers", name=group, legendgroup=group,
                                     showlegend=group not in shown, line=dict(color=colors[group]),
                                     hovertemplate=f"{run}<br>step %{{x}}<br>{METRICS[key][0]} %{{y:.4f}}<extra></extra>"),
                          row=j // 2 + 1, col=j % 2 + 1)
            shown.add(group)
    for j, key in enumerate(PANELS):
        if teacher and key in teacher:
            fig.add_hline(y=teacher[key], line_dash="dash", line_color="#555", annotation_text="teacher",
                          row=j // 2 + 1, col=j % 2 + 1)
    fig.update_xaxes(title_text="step", row=2)
    fig.update_layout(height=520, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.12),
                      title=None)
    return fig


def loss_figure(curves: Mapping[str, pd.DataFrame]) -> go.Figure:
    """The training loss against the step, one line per run in ``curves`` (frames with ``step``, ``loss``)."""
    fig = go.Figure([go.Scatter(x=c["step"], y=c["loss"], mode="lines", name=run, line=dict(color=run_color(i)))
                     for i, (run, c) in enumerate(curves.items())])
    fig.update_layout(height=280, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="step", yaxis_title="loss",
                      showlegend=len(curves) > 1, title="training loss")
    return fig
