"""Colours of a free label set: one colour per query, stable while the queries are typed, and
per-point colourings as a small colour table plus a uint8 index per point (what the live view sends
to the browser; ``rgb()`` gives the per-point colours for the camera view and the .ply export)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from relviz.data.classes import CLASS_COLORS
from relviz.errors import InputError

UNASSIGNED_RGB = np.array([150, 150, 150], dtype=np.uint8)  # points that match no query
SELECTED_RGB = np.array([255, 0, 255], dtype=np.uint8)  # points of a box or lasso selection (no palette has it)
IGNORED_RGB = np.array([200, 200, 200], dtype=np.uint8)  # points without a ground-truth class (errors view)
EXTRA_COLORS = 50  # colours for free-text queries beside the 16 class colours: 66 > relviz.eval.zeroshot.MAX_QUERIES


def lab(rgb: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65) of sRGB colours uint8 [..., 3] -> float64 [..., 3] (the sRGB and CIE formulas)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = c @ np.array([[0.4124, 0.2126, 0.0193], [0.3576, 0.7152, 0.1192], [0.1805, 0.0722, 0.9505]])
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def distinct_colors(reserved: np.ndarray, n: int, levels: int = 16) -> np.ndarray:
    """``n`` colours uint8 [n, 3] picked greedily from an RGB grid of ``levels``^3, each the farthest
    (CIE76 distance in L*a*b*) from every ``reserved`` colour [R, 3] and every colour picked before it:
    free-text query colours that no class colour, selection or grey on screen can be mistaken for."""
    axis = np.linspace(0, 255, levels).round().astype(np.uint8)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    grid_lab = lab(grid)
    nearest = np.min(np.linalg.norm(grid_lab[:, None] - lab(reserved)[None], axis=-1), axis=1)
    picked = []
    for _ in range(n):
        i = int(np.argmax(nearest))
        picked.append(grid[i])
        nearest = np.minimum(nearest, np.linalg.norm(grid_lab - grid_lab[i], axis=-1))
    return np.array(picked, dtype=np.uint8)


# the 16 class colours first (so a class name keeps its nuScenes colour), then colours far from all of
# them and from the greys and the selection colour (a query once got a green next to vegetation's)
SCREEN_COLORS = np.concatenate([CLASS_COLORS[1:], np.stack([UNASSIGNED_RGB, SELECTED_RGB, IGNORED_RGB]),
                                np.array([[255, 255, 255], [0, 0, 0]], dtype=np.uint8)])
PALETTE = np.concatenate([CLASS_COLORS[1:], distinct_colors(SCREEN_COLORS, EXTRA_COLORS)])
HEAT_LEVELS = 64


def stable_colors(prompts: Sequence[str], class_indices: Sequence[int], previous: Sequence[tuple[str, int]] = ()
                  ) -> list[int]:
    """A palette index (into :data:`PALETTE`) per query, kept stable while the queries are edited.

    prompts [P] and class_indices [P] (1..16, 0 for an unmapped query) describe the new label set;
    ``previous``: the (prompt, colour) pairs shown before. A prompt shown before keeps its colour
    (case-insensitive), so inserting or deleting a line moves no colour; otherwise a query keeps
    the colour of the query in the same position when that prompt is gone and the two share their
    first or last character (the line being typed or corrected, not a replaced one); a new query
    takes its class's nuScenes colour when free, else the first free colour not shown just before,
    unmapped queries preferring the non-class colours."""
    if len(prompts) != len(class_indices):
        raise InputError(f"{len(prompts)} prompts but {len(class_indices)} class indices")
    if len(prompts) > len(PALETTE):
        raise InputError(f"{len(prompts)} queries; at most {len(PALETTE)} can have distinct colours")
    before = {p.lower(): c for p, c in previous}
    now = {p.lower() for p in prompts}
    colors: list[int | None] = [before.get(p.lower()) for p in prompts]
    used = {c for c in colors if c is not None}
    for i, p in enumerate(prompts):  # the line being typed keeps its colour
        typing = i < len(previous) and _edited(previous[i][0], p) and previous[i][0].lower() not in now
        if colors[i] is None and typing and previous[i][1] not in used:
            colors[i] = previous[i][1]
            used.add(colors[i])
    recent = {c for _, c in previous}
    for i, c in enumerate(class_indices):
        if colors[i] is None:
            # a class's own colour first; unmapped text prefers the colours no class has; a colour just
            # shown for another query comes last, so a replaced query does not look like the old one
            order = [c - 1, *range(len(PALETTE))] if c else [*range(16, len(PALETTE)), *range(16)]
            free = [k for k in order if k not in used]
            colors[i] = next((k for k in free if k not in recent or k == c - 1), free[0])
            used.add(colors[i])
    return [int(c) for c in colors]


def _edited(before: str, after: str) -> bool:
    """Whether ``after`` looks like ``before`` being typed or corrected: the same first or last character."""
    a, b = before.lower(), after.lower()
    return bool(a and b) and (a[0] == b[0] or a[-1] == b[-1])


@dataclass(frozen=True)
class Coloring:
    """Per-point colours as ``index`` uint8 [N] into ``table`` uint8 [T, 3]; ``scale``: the value
    range of a continuous colouring (low, high), else None."""

    index: np.ndarray
    table: np.ndarray
    scale: tuple[float, float] | None = None

    def rgb(self) -> np.ndarray:
        """uint8 [N, 3]."""
        return self.table[self.index]

    def take(self, keep: np.ndarray) -> "Coloring":
        """The colouring of the points ``keep`` (indices or a mask)."""
        return Coloring(self.index[keep], self.table, self.scale)

    def with_selected(self, mask: np.ndarray) -> "Coloring":
        """These colours with the points of ``mask`` bool [N] in :data:`SELECTED_RGB` (one more entry
        of the table, which the live view holds up to 128 of)."""
        if not mask.any():
            return self
        if len(self.table) >= 128:
            raise InputError(f"{len(self.table)} colours already: no room to mark a selection (at most 128)")
        return Coloring(np.where(mask, len(self.table), self.index).astype(np.uint8),
                        np.concatenate([self.table, SELECTED_RGB[None]]), self.scale)


def query_coloring(query: np.ndarray, colors: Sequence[int]) -> Coloring:
    """Points coloured by their query (int64 [N], -1 = unassigned) with the palette indices ``colors`` [P]."""
    table = np.concatenate([PALETTE[list(colors)].reshape(-1, 3), UNASSIGNED_RGB[None]])
    return Coloring(np.where(query < 0, len(colors), query).astype(np.uint8), table)


def class_coloring(classes: np.ndarray) -> Coloring:
    """Points coloured by a class (0..16, nuScenes colours; 0 = ignore, black)."""
    return Coloring(np.asarray(classes).astype(np.uint8), CLASS_COLORS)


def error_coloring(predicted: np.ndarray, truth: np.ndarray) -> Coloring:
    """Green where ``predicted`` equals ``truth`` (both class indices [N]), red where not, light grey
    where the truth is 0 (no class: not scored)."""
    table = np.array([IGNORED_RGB, (40, 170, 60), (220, 40, 40)], dtype=np.uint8)
    index = np.where(truth == 0, 0, np.where(predicted == truth, 1, 2)).astype(np.uint8)
    return Coloring(index, table)


def heat_table(levels: int = HEAT_LEVELS) -> np.ndarray:
    """uint8 [levels, 3]: blue (least similar) through green to red (most similar)."""
    s = np.linspace(0, 1, levels)
    return np.stack([255 * s, 60 + 100 * (1 - np.abs(2 * s - 1)), 255 * (1 - s)], 1).round().astype(np.uint8)


def similarity_coloring(similarity: np.ndarray, levels: int = HEAT_LEVELS) -> Coloring:
    """Points coloured by a similarity [N] over its own range, in ``levels`` steps (``scale`` = range)."""
    similarity = np.asarray(similarity, dtype=np.float64)
    if not len(similarity):
        return Coloring(np.zeros(0, np.uint8), heat_table(levels), (0.0, 0.0))
    lo, hi = float(similarity.min()), float(similarity.max())
    step = np.floor((similarity - lo) / max(hi - lo, 1e-12) * levels)
    return Coloring(np.clip(step, 0, levels - 1).astype(np.uint8), heat_table(levels), (lo, hi))


def hex_colors(table: np.ndarray) -> list[str]:
    """``#rrggbb`` strings of a colour table [T, 3]."""
    return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in np.asarray(table, dtype=np.uint8).tolist()]


def app_icon(size: int = 64):
    """The app's tab icon, drawn here (a PIL image the app serves itself): three points in the car,
    vegetation and driveable-surface colours on a dark disc."""
    from PIL import Image, ImageDraw

    icon = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(icon)
    draw.ellipse((0, 0, size - 1, size - 1), fill=(34, 34, 44, 255))
    r = size // 8
    for (x, y), c in zip(((0.32, 0.62), (0.5, 0.32), (0.68, 0.62)), (4, 16, 11)):
        cx, cy = int(x * size), int(y * size)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(int(v) for v in CLASS_COLORS[c]) + (255,))
    return icon
