"""Linked views of the Feature structure page: the protocol sample in feature space (the PCA) and in
the scene (a bird's-eye view of one keyframe's lidar points), where a box or lasso selection in one
is ringed in the other, and a text query's matches are ringed in both.

Plotly selects only in 2D, so the scene is drawn from above (x, y in the lidar frame) rather than
in 3D; every point of the sample carries its sample index as ``customdata``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from relviz.data.classes import CLASSES
from relviz.viz.pca import CLASS_COLOR, HIGHLIGHT

BACKGROUND = "rgb(200,200,200)"


def selected_sample(event: Mapping | None, size: int) -> list[int]:
    """The sample indices of the points of a plotly selection ``event`` (what ``st.plotly_chart``
    returns with ``on_select``) whose traces carry sample indices as ``customdata``; points of other
    traces (the scene's background, the rings) and indices outside [0, size) are ignored."""
    points = ((event or {}).get("selection") or {}).get("points") or []
    out = set()
    for point in points:
        value = point.get("customdata")
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer() \
                and 0 <= int(value) < size:
            out.add(int(value))
    return sorted(out)


def scene_figure(xyz: np.ndarray, sample_points: np.ndarray, sample_ids: np.ndarray, sample_labels: np.ndarray,
                 highlight: Sequence[int] | np.ndarray = (), max_background: int = 20_000, seed: int = 0,
                 height: int = 520) -> go.Figure:
    """A bird's-eye view of one keyframe: its lidar points ``xyz`` [P, 3] in grey (a uniform random
    ``max_background`` of them), the sample's points there (``sample_points`` [K], indices into
    ``xyz``, with their sample indices ``sample_ids`` [K] as customdata and labels [K]) coloured by
    class, and the sample indices in ``highlight`` ringed in black. Equal x and y scales."""
    rng = np.random.default_rng(seed)
    shown = rng.choice(len(xyz), size=min(max_background, len(xyz)), replace=False) if len(xyz) else np.zeros(0, int)
    fig = go.Figure(go.Scattergl(x=xyz[shown, 0], y=xyz[shown, 1], mode="markers", name="lidar points",
                                 marker=dict(size=2, color=BACKGROUND), hoverinfo="skip"))
    for c in np.unique(sample_labels):
        m = sample_labels == c
        fig.add_trace(go.Scattergl(x=xyz[sample_points[m], 0], y=xyz[sample_points[m], 1], mode="markers",
                                   name=CLASSES[int(c)], customdata=sample_ids[m],
                                   marker=dict(size=4, color=CLASS_COLOR[int(c)])))
    ringed = np.isin(sample_ids, np.asarray(highlight, dtype=np.int64))
    if ringed.any():
        fig.add_trace(go.Scattergl(x=xyz[sample_points[ringed], 0], y=xyz[sample_points[ringed], 1], mode="markers",
                                   name=f"ringed ({int(ringed.sum()):,})", hoverinfo="skip",
                                   marker=dict(size=8, **HIGHLIGHT)))
    fig.update_layout(height=height, xaxis_title="x (m)", yaxis_title="y (m)", yaxis_scaleanchor="x",
                      legend_itemsizing="constant", margin=dict(l=10, r=10, t=30, b=10), dragmode="lasso")
    return fig
