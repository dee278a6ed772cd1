"""Search a split for one text query: rank its keyframes by how many of their points take the
query (and how similar they are to it), and find the points most similar to it across the split."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from relviz.errors import InputError
from relviz.eval.features import dataset_for, point_features_cached
from relviz.eval.zeroshot import assign_by_text
from relviz.teacher.cache import FeatureCache


@dataclass(frozen=True)
class KeyframeMatch:
    """One keyframe of a search: ``points`` of its ``total`` points take the query, with mean cosine
    similarity ``mean_similarity`` to it (NaN when none does)."""

    keyframe: int
    points: int
    total: int
    mean_similarity: float

    @property
    def fraction(self) -> float:
        return self.points / self.total if self.total else 0.0


class PointMatch(NamedTuple):
    """A point (``point`` of keyframe ``keyframe``) and its cosine similarity to the query."""

    keyframe: int
    point: int
    similarity: float


@dataclass(frozen=True)
class SplitSearch:
    """``keyframes``: every keyframe, most matching points first (ties: the higher mean similarity,
    then the lower index); ``points``: the ``top_points`` most similar points, most similar first."""

    keyframes: tuple[KeyframeMatch, ...]
    points: tuple[PointMatch, ...]


def search_split(features: Iterable[torch.Tensor | np.ndarray], text: torch.Tensor, query: int,
                 threshold: float | None = None, background: torch.Tensor | None = None, top_points: int = 20
                 ) -> SplitSearch:
    """Search keyframes for query ``query`` of a label set.

    features: per keyframe, point features [N_i, D] (any float dtype; one keyframe in memory as
    float32 at a time); text [P, D]: the label set's query embeddings; ``threshold`` and
    ``background`` [B, D]: its unlabelled rule. A point matches when :func:`assign_by_text` gives it
    ``query`` (so the other queries compete for it, as on the page); its similarity is
    ``cos(k, t_query)``. The top points are kept with a running ``torch.topk`` of at most
    ``top_points`` candidates per keyframe, so memory does not grow with the split."""
    if not 0 <= query < len(text):
        raise InputError(f"query index {query}: expected 0 to {len(text) - 1} (the label set has {len(text)} queries)")
    if isinstance(top_points, bool) or not isinstance(top_points, int) or top_points < 0:
        raise InputError(f"top_points {top_points!r}: expected a whole number >= 0")
    target = F.normalize(text[query].float(), dim=0)
    matches: list[KeyframeMatch] = []
    best_sim = torch.empty(0)
    best_where = torch.empty((0, 2), dtype=torch.long)
    for i, feats in enumerate(features):
        if isinstance(feats, np.ndarray):  # a float16 memory map of the disk cache: torch converts it 3x faster
            feats = torch.from_numpy(np.array(feats))
        feats = feats.float()
        assigned, _ = assign_by_text(feats, text, threshold, background)
        # cos(k, t) = (k . t) / max(|k|, eps), as F.normalize; one pass fewer than normalising k
        sim = (feats @ target.to(feats.device)) / feats.norm(dim=1).clamp_min(1e-12)  # [N_i]
        hit = assigned == query
        count = int(hit.sum())
        matches.append(KeyframeMatch(i, count, len(feats), float(sim[hit].mean()) if count else math.nan))
        if top_points:
            k = min(top_points, len(sim))
            vals, idx = sim.topk(k)
            where = torch.stack([torch.full_like(idx, i), idx], 1).cpu()
            best_sim, order = torch.cat([best_sim, vals.cpu()]).topk(min(top_points, len(best_sim) + k))
            best_where = torch.cat([best_where, where])[order]
    ranked = sorted(matches, key=lambda m: (-m.points, -m.mean_similarity if m.points else 0.0, m.keyframe))
    points = tuple(PointMatch(int(w[0]), int(w[1]), float(s)) for w, s in zip(best_where, best_sim))
    return SplitSearch(tuple(ranked), points)


def missing_split_features(model, checkpoint_key: str, dataset, cache_root: str | Path) -> list[int]:
    """Keyframes of ``dataset`` whose student point features are not in the disk cache yet."""
    dataset = dataset_for(model, dataset)
    cache = FeatureCache(cache_root, checkpoint_key, kind="student")
    return [i for i, token in enumerate(dataset.sample_tokens) if cache.get(token) is None]


def split_features(model, checkpoint_key: str, dataset, cache_root: str | Path,
                   progress: Callable[[int, int], None] | None = None) -> Iterator[np.ndarray]:
    """Every keyframe's student point features [N_i, D] (float16, memory-mapped from the disk cache
    of :func:`point_features_cached`; computed and stored on a miss), in dataset order.
    ``progress(done, total)`` is called after each keyframe."""
    for i in range(len(dataset)):
        feats = point_features_cached(model, checkpoint_key, dataset, i, cache_root)
        if progress is not None:
            progress(i + 1, len(dataset))
        yield feats
