"""Figures made lighter for a page's second visit (issue #31 item 6, bench/README.md): the Zero-shot page's
camera view sends the image as a JPEG and each point's colour as an index into a discrete colour scale, and
still draws every point in its own colour on its own pixel."""

import base64
import io

import numpy as np
from PIL import Image


def _drawn_colour(marker, value: float) -> str:
    """The colour plotly.js draws for ``value`` on a colour scale of constant steps (pairs of equal colours):
    the step whose interval holds ``(value - cmin) / (cmax - cmin)``."""
    scale = marker.colorscale
    position = (value - marker.cmin) / (marker.cmax - marker.cmin)
    return next(colour for (low, colour), (high, _) in zip(scale[::2], scale[1::2]) if low <= position <= high)


def test_the_camera_view_draws_each_point_in_its_colour_on_the_jpeg_image():
    from relviz.viz.points import projected_points_figure

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (45, 80, 3), dtype=np.uint8)
    pixels = rng.random((500, 2)) * [80, 45]
    palette = rng.integers(0, 256, (17, 3), dtype=np.uint8)
    colours = palette[rng.integers(0, 17, 500)]
    fig = projected_points_figure(image, pixels, colours)

    points = fig.data[1]
    assert np.array_equal(np.asarray(points.x), pixels[:, 0]) and np.array_equal(np.asarray(points.y), pixels[:, 1])
    drawn = [_drawn_colour(points.marker, v) for v in np.asarray(points.marker.color)]
    assert drawn == [f"rgb({r},{g},{b})" for r, g, b in colours]

    head, data = fig.data[0].source.split(",", 1)
    assert head == "data:image/jpeg;base64"
    sent = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
    reference = io.BytesIO()
    Image.fromarray(image).save(reference, format="JPEG", quality=90)
    assert np.array_equal(sent, np.asarray(Image.open(reference).convert("RGB")))  # the image, as a JPEG of it
    assert list(fig.layout.xaxis.range) == [-0.5, 79.5] and list(fig.layout.yaxis.range) == [44.5, -0.5]


def test_one_colour_is_drawn_too():
    from relviz.viz.points import projected_points_figure

    fig = projected_points_figure(np.zeros((4, 4, 3), np.uint8), np.array([[1.0, 2.0], [3.0, 1.0]]),
                                  np.array([[9, 8, 7], [9, 8, 7]], np.uint8))
    assert {_drawn_colour(fig.data[1].marker, v) for v in fig.data[1].marker.color} == {"rgb(9,8,7)"}
