"""Point-cloud helpers: decimation, projected points over a camera image, .ply export (the live 3D
view is relviz.viz.live_cloud; its colourings relviz.viz.labelcolors)."""

from __future__ import annotations

import base64
import io
import os
import tempfile

import numpy as np
import plotly.graph_objects as go

from relviz.errors import OutputError



def decimate(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Indices of at most ``max_points`` of ``n`` points, uniform random with a fixed seed, sorted."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))


def projected_points_figure(image: np.ndarray, pixels: np.ndarray, colors: np.ndarray, max_points: int = 15_000
                            ) -> go.Figure:
    """The camera image with projected points [M, 2] (u, v) drawn in their colours (uint8 RGB [M, 3]).
    The colours travel as one index per point into a discrete colour scale of the distinct colours (a
    colour string per point made plotly check each one: 0.7 s for 6k points on the 2-core machine)."""
    keep = decimate(len(pixels), max_points, seed=1)
    fig = go.Figure(go.Image(source=image_uri(image), hoverinfo="skip"))
    table, index = np.unique(np.asarray(colors)[keep].reshape(-1, 3), axis=0, return_inverse=True)
    names = [f"rgb({r},{g},{b})" for r, g, b in table] or ["rgb(0,0,0)"]
    scale = [[min(1.0, (i + edge) / len(names)), name] for i, name in enumerate(names) for edge in (0, 1)]
    fig.add_trace(go.Scattergl(x=pixels[keep, 0], y=pixels[keep, 1], mode="markers", hoverinfo="skip",
                               marker=dict(size=3, color=index.reshape(-1).astype(np.int32), colorscale=scale,
                                           cmin=-0.5, cmax=len(names) - 0.5, showscale=False)))
    fig.update_layout(height=image.shape[0] * 700 // image.shape[1] + 40, margin=dict(l=0, r=0, t=0, b=0),
                      xaxis=dict(visible=False, range=[-0.5, image.shape[1] - 0.5]),
                      yaxis=dict(visible=False, range=[image.shape[0] - 0.5, -0.5]), showlegend=False)
    return fig


def image_uri(image: np.ndarray, quality: int = 90) -> str:
    """An RGB image uint8 [H, W, 3] as a JPEG data URI: the browser decodes it natively (as ``z``, the
    pixel values, plotly.js drew it pixel by pixel: 4.9 s for 800x450 in the headless browser)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def to_ply_bytes(xyz: np.ndarray, colors: np.ndarray, comment: str | None = None) -> bytes:
    """A coloured point cloud [N, 3] with colours [N, 3] uint8 as .ply bytes, written by open3d;
    ``comment`` (e.g. where the features that coloured it come from) goes into the header as a
    ``comment`` line (one line, ASCII)."""
    import open3d as o3d

    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz.astype(np.float64)))
    pcd.colors = o3d.utility.Vector3dVector(colors.astype(np.float64) / 255.0)
    fd, path = tempfile.mkstemp(suffix=".ply")
    os.close(fd)
    try:
        if not o3d.io.write_point_cloud(path, pcd, write_ascii=False):
            raise OutputError(f"open3d could not write {path}")
        with open(path, "rb") as f:
            data = f.read()
    finally:
        os.unlink(path)
    if comment is None:
        return data
    line = " ".join(comment.encode("ascii", "replace").decode().split())
    head, sep, rest = data.partition(b"\n")  # "ply", then the format line: the comment goes after it
    fmt, sep2, body = rest.partition(b"\n")
    return head + sep + fmt + sep2 + f"comment {line}\n".encode() + body
