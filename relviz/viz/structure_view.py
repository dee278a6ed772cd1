"""The Feature structure page's pieces: a metric with its interval, and the links between views:
where each point of the protocol sample lies in the scene, the ringed points handed to the Zero-shot
page's 3D view (and the box selected there ringed here), a text query's matches, and which keyframe
to show first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from relviz.eval.structure import sample_indices, sample_locations
from relviz.eval.zeroshot import assign_by_text, parse_queries
from relviz.viz.explain import METRICS
from relviz.viz.zeroshot_view import embed_prompts


def metric_cell(metrics: Mapping, key: str) -> tuple[str, str, str | None]:
    """(label, value, its 95% interval or None) of metric ``key`` of a structure result."""
    ci = (metrics.get("intervals") or {}).get(key)
    value = metrics[key]
    return (METRICS[key][0], "-" if value is None else f"{value:.3f}",
            f"95% [{ci['low']:.3f}, {ci['high']:.3f}]" if ci else None)


@dataclass(frozen=True)
class SamplePlaces:
    """Where the S sample points lie: ``frame`` int [S], the split's index of each point's keyframe;
    ``point`` int [S], its index among that keyframe's lidar points; ``frames``: the evaluated
    keyframes (the split's indices, in order)."""

    frame: np.ndarray
    point: np.ndarray
    frames: list[int]


def sample_places(val: dict, metrics: dict, idx: torch.Tensor | None = None) -> SamplePlaces:
    """The places of the sample behind ``metrics`` (a structure result of the student's ``val``); ``idx``:
    its :func:`relviz.eval.structure.sample_indices` when the caller keeps them."""
    idx = sample_indices(val, metrics) if idx is None else idx
    keyframe, point = (t.numpy() for t in sample_locations(val, idx))
    frames = val["keyframe_index"].tolist()
    return SamplePlaces(np.asarray(frames, dtype=np.int64)[keyframe], point, frames)


def selection_by_token(places: SamplePlaces, ring: np.ndarray, tokens: Sequence[str]) -> dict[str, list[int]]:
    """The ringed sample points (``ring`` bool [S]) as keyframe token -> their lidar point indices."""
    return {tokens[k]: places.point[ring & (places.frame == k)].tolist() for k in np.unique(places.frame[ring])}


def boxed_rings(places: SamplePlaces, boxes: Mapping[str, Sequence[int]] | None, tokens: Sequence[str]
                ) -> list[tuple[np.ndarray, str]]:
    """The sample points inside the boxes selected in the Zero-shot page's 3D view (``boxes``:
    keyframe token -> lidar point indices): (mask bool [S], a sentence saying how many) for each
    selected keyframe that is evaluated here."""
    out = []
    for token, points in (boxes or {}).items():
        frame = tokens.index(token) if token in tokens else None
        if points and frame in places.frames:
            boxed = (places.frame == frame) & np.isin(places.point, points)
            out.append((boxed, f"{int(boxed.sum()):,} sample points of keyframe {frame} are in the box selected "
                               f"in the Zero-shot page's 3D view ({len(points):,} points there)."))
    return out


def query_matches(z: torch.Tensor, query: str, threshold: float, class_embeddings: torch.Tensor,
                  teacher_fn: Callable[[], object]) -> tuple[np.ndarray, str]:
    """The sample points z [S, D] whose cosine with the first prompt of ``query`` is at least
    ``threshold`` (bool [S]) and a sentence saying how many; RelvizError for a query that cannot be read."""
    prompt = parse_queries(query).prompts[:1]
    text = embed_prompts(prompt, class_embeddings, teacher_fn)
    matches = (assign_by_text(z, text, threshold)[0] == 0).numpy()
    return matches, (f"{int(matches.sum()):,} of {len(z):,} sample points have cosine >= {threshold:.2f} with "
                     f"{prompt[0]!r}")


def first_frame(places: SamplePlaces, ring: np.ndarray) -> int:
    """The keyframe with the most ringed points; the first evaluated one when none is ringed."""
    return int(np.bincount(places.frame[ring]).argmax()) if ring.any() else places.frames[0]


__all__ = ["SamplePlaces", "boxed_rings", "first_frame", "metric_cell", "query_matches", "sample_places", "selection_by_token"]
