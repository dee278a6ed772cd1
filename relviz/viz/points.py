"""Point-cloud views: colours by prediction, truth, errors or similarity; decimation; the 3D
figure (numeric colour arrays, WebGL); projected points over a camera image; .ply export."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import plotly.graph_objects as go

from relviz.data.classes import CLASS_COLORS
from relviz.errors import InputError, OutputError

MODES = ("prediction", "ground truth", "errors", "similarity to a query")


def decimate(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Indices of at most ``max_points`` of ``n`` points, uniform random with a fixed seed, sorted."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))


def colors_for(mode: str, pred: np.ndarray, gt: np.ndarray | None, similarity: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 [N, 3] for a colouring mode."""
    if mode == "prediction":
        return CLASS_COLORS[pred]
    if mode == "ground truth":
        if gt is None:
            raise InputError("this dataset has no lidarseg labels")
        return CLASS_COLORS[gt]
    if mode == "errors":
        if gt is None:
            raise InputError("this dataset has no lidarseg labels")
        out = np.full((len(pred), 3), 160, dtype=np.uint8)  # ignored points: grey
        out[(gt > 0) & (pred == gt)] = (40, 170, 60)
        out[(gt > 0) & (pred != gt)] = (220, 40, 40)
        return out
    if mode == "similarity to a query":
        if similarity is None:
            raise InputError("similarity colouring needs a query")
        s = (similarity - similarity.min()) / max(float(np.ptp(similarity)), 1e-9)
        return np.stack([255 * s, 60 + 100 * (1 - np.abs(2 * s - 1)), 255 * (1 - s)], 1).astype(np.uint8)
    raise InputError(f"unknown colour mode {mode!r}; expected one of {', '.join(MODES)}")


def point_cloud_figure(xyz: np.ndarray, colors: np.ndarray, title: str = "") -> go.Figure:
    """Scatter3d of points [N, 3] with per-point RGB; colours travel as one numeric array."""
    # a discrete colour scale over the distinct colours keeps the payload numeric (no per-point strings)
    uniq, inverse = np.unique(colors.reshape(-1, 3), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    if len(uniq) == 1:
        scale = [[0, f"rgb{tuple(int(v) for v in uniq[0])}"], [1, f"rgb{tuple(int(v) for v in uniq[0])}"]]
        values = np.zeros(len(xyz))
    elif len(uniq) <= 64:
        scale = []
        for i, c in enumerate(uniq):
            col = f"rgb{tuple(int(v) for v in c)}"
            scale += [[i / len(uniq), col], [(i + 1) / len(uniq), col]]
        values = (inverse + 0.5) / len(uniq)
    else:  # continuous colourings (similarity): quantise to 64 levels of the same map
        values = None
    if values is None:
        return _continuous_figure(xyz, colors, title)
    fig = go.Figure(go.Scatter3d(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="markers", hoverinfo="skip",
                                 marker=dict(size=1.5, color=values, colorscale=scale, cmin=0, cmax=1)))
    return _layout(fig, title)


def _continuous_figure(xyz, colors, title):
    level = np.round((colors[:, 0].astype(float)) / 255 * 63)
    stops = [[i / 63, f"rgb({int(255 * i / 63)},{int(60 + 100 * (1 - abs(2 * i / 63 - 1)))},{int(255 * (1 - i / 63))})"]
             for i in range(64)]
    fig = go.Figure(go.Scatter3d(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="markers", hoverinfo="skip",
                                 marker=dict(size=1.5, color=level / 63, colorscale=stops, cmin=0, cmax=1,
                                             showscale=True)))
    return _layout(fig, title)


def _layout(fig: go.Figure, title: str) -> go.Figure:
    fig.update_layout(height=560, margin=dict(l=0, r=0, t=30 if title else 0, b=0), title=title or None,
                      scene=dict(aspectmode="data", xaxis_visible=False, yaxis_visible=False, zaxis_visible=False))
    return fig


def projected_points_figure(image: np.ndarray, pixels: np.ndarray, colors: np.ndarray, max_points: int = 15_000
                            ) -> go.Figure:
    """The camera image with projected points [M, 2] (u, v) drawn in their colours."""
    keep = decimate(len(pixels), max_points, seed=1)
    fig = go.Figure(go.Image(z=image))
    c = colors[keep]
    fig.add_trace(go.Scattergl(x=pixels[keep, 0], y=pixels[keep, 1], mode="markers", hoverinfo="skip",
                               marker=dict(size=3, color=[f"rgb({r},{g},{b})" for r, g, b in c])))
    fig.update_layout(height=image.shape[0] * 700 // image.shape[1] + 40, margin=dict(l=0, r=0, t=0, b=0),
                      xaxis_visible=False, yaxis_visible=False, showlegend=False)
    return fig


def to_ply_bytes(xyz: np.ndarray, colors: np.ndarray) -> bytes:
    """A coloured point cloud as .ply bytes, written by open3d."""
    import open3d as o3d

    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz.astype(np.float64)))
    pcd.colors = o3d.utility.Vector3dVector(colors.astype(np.float64) / 255.0)
    fd, path = tempfile.mkstemp(suffix=".ply")
    os.close(fd)
    try:
        if not o3d.io.write_point_cloud(path, pcd, write_ascii=False):
            raise OutputError(f"open3d could not write {path}")
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)
