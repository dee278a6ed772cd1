"""PCA views of point features: one student's sample in its own basis (2D or 3D), and several
students in one shared basis with shared axes and one legend, so that panels compare by eye."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from relviz.data.classes import CLASS_COLORS, CLASSES
from relviz.metrics import PCA, fit_pca

CLASS_COLOR = {c: f"rgb{tuple(int(v) for v in CLASS_COLORS[c])}" for c in range(1, len(CLASSES))}


def _class_traces(p: np.ndarray, labels: np.ndarray, dims: int, show_legend: bool, size: float) -> list:
    """One WebGL trace per class present in ``labels`` [N] (1..16) for projections ``p`` [N, >=dims];
    each point's ``customdata`` is its index in ``labels``, so a selection maps back to the sample."""
    traces = []
    for c in np.unique(labels):
        m = labels == c
        name = CLASSES[int(c)]
        common = dict(mode="markers", name=name, legendgroup=name, showlegend=show_legend,
                      customdata=np.nonzero(m)[0], marker=dict(size=size, color=CLASS_COLOR[int(c)]))
        if dims == 3:
            traces.append(go.Scatter3d(x=p[m, 0], y=p[m, 1], z=p[m, 2], **common))
        else:
            traces.append(go.Scattergl(x=p[m, 0], y=p[m, 1], **common))
    return traces


HIGHLIGHT = dict(color="rgba(0,0,0,0)", line=dict(color="black", width=1.5))


def pca_figure(features: torch.Tensor, labels: torch.Tensor, dims: int = 2, height: int = 560,
               highlight: np.ndarray | None = None, highlight_name: str = "selected", basis: PCA | None = None
               ) -> go.Figure:
    """A sample's features [N, D] with labels [N] projected on their own first ``dims`` (2 or 3)
    principal axes, coloured by class; the axis titles carry the explained variance. ``highlight``
    (bool [N]) rings those points in black, as one more trace named ``highlight_name``. ``basis``: the
    features' PCA (:func:`relviz.metrics.fit_pca` with k = ``dims``) when the caller keeps it."""
    pca = fit_pca(features, k=3 if dims == 3 else 2) if basis is None else basis
    p = pca.transform(features).cpu().numpy()
    ev = pca.explained_variance_ratio.tolist()
    fig = go.Figure(_class_traces(p, labels.cpu().numpy(), dims, True, 2 if dims == 3 else 3))
    if highlight is not None and highlight.any():
        h = p[np.asarray(highlight, bool)]
        ring = dict(mode="markers", name=f"{highlight_name} ({len(h):,})", hoverinfo="skip",
                    marker=dict(size=7 if dims == 2 else 4, **HIGHLIGHT))
        fig.add_trace(go.Scatter3d(x=h[:, 0], y=h[:, 1], z=h[:, 2], **ring) if dims == 3 else
                      go.Scattergl(x=h[:, 0], y=h[:, 1], **ring))
    titles = {f"{axis}axis_title": f"PC{i + 1} ({ev[i]:.0%})" for i, axis in enumerate("xyz"[:dims])}
    if dims == 3:
        fig.update_layout(scene=titles)
    else:
        fig.update_layout(**titles)
    fig.update_layout(height=height, legend_itemsizing="constant")
    return fig


def shared_pca_figure(panels: dict[str, tuple[torch.Tensor, torch.Tensor]], reference: str,
                      height: int = 440) -> go.Figure:
    """Panels of features [N_i, D] with labels [N_i], all projected on the first two principal axes
    of ``panels[reference]`` (the teacher, typically): one basis, shared x and y ranges, one legend
    (every class that appears in any panel) placed below the panels so that it is never clipped."""
    pca = fit_pca(panels[reference][0], k=2)
    names = list(panels)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, shared_xaxes="all", shared_yaxes="all",
                        horizontal_spacing=0.03)
    shown: set[str] = set()
    for col, name in enumerate(names, start=1):
        z, y = panels[name]
        labels = y.cpu().numpy()
        for trace in _class_traces(pca.transform(z).cpu().numpy(), labels, 2, False, 3):
            trace.showlegend = trace.name not in shown
            shown.add(trace.name)
            fig.add_trace(trace, row=1, col=col)
    fig.update_layout(height=height, legend=dict(orientation="h", yanchor="top", y=-0.08, itemsizing="constant"),
                      margin=dict(b=110))
    return fig


__all__ = ["CLASS_COLOR", "HIGHLIGHT", "pca_figure", "shared_pca_figure"]
