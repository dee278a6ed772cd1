"""Colours of a free label set: one colour per query, stable while the queries are typed, and
per-point colourings as a small colour table plus a uint8 index per point (what the live view sends
to the browser; ``rgb()`` gives the per-point colours for the camera view and the .ply export)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from relviz.data.classes import CLASS_COLORS
from relviz.errors import InputError

# the 16 class colours first (so a class name keeps its nuScenes colour), then plotly's Dark24 and
# Alphabet qualitative palettes: 66 distinct colours, more than relviz.eval.zeroshot.MAX_QUERIES
_EXTRA = ("#2E91E5 #E15F99 #1CA71C #FB0D0D #DA16FF #222A2A #B68100 #750D86 #EB663B #511CFB #00A08B #FB00D1 "
          "#FC0080 #B2828D #6C7C32 #778AAE #862A16 #A777F1 #620042 #1616A7 #DA60CA #6C4516 #0D2A63 #AF0038 "
          "#AA0DFE #3283FE #85660D #782AB6 #565656 #1C8356 #16FF32 #F7E1A0 #E2E2E2 #1CBE4F #C4451C #DEA0FD "
          "#FE00FA #325A9B #FEAF16 #F8A19F #90AD1C #F6222E #1CFFCE #2ED9FF #B10DA1 #C075A6 #FC1CBF #B00068 "
          "#FBE426 #FA0087").split()
PALETTE = np.concatenate([CLASS_COLORS[1:], np.array([[int(h[i:i + 2], 16) for i in (1, 3, 5)] for h in _EXTRA],
                                                     dtype=np.uint8)])
UNASSIGNED_RGB = np.array([150, 150, 150], dtype=np.uint8)  # points that match no query
SELECTED_RGB = np.array([255, 0, 255], dtype=np.uint8)  # points of a box or lasso selection (no palette has it)
IGNORED_RGB = np.array([200, 200, 200], dtype=np.uint8)  # points without a ground-truth class (errors view)
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
