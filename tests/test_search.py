"""Split search (relviz.eval.search) against a direct float64 computation over all points at once."""

import math

import numpy as np
import pytest
import torch

from fp_bounds import gamma
from relviz.errors import InputError
from relviz.eval.search import search_split

D, P, SIZES = 16, 4, (300, 1, 450, 220, 380)
# A cosine similarity computed in float32: normalising (a sum of D squares, a square root, a division)
# and a dot product of D terms of unit vectors (sum |k_i t_i| <= 1 by Cauchy-Schwarz) each err by at
# most gamma(D + 2) in float32; twice that per side plus the dot product, with a factor 2 of margin.
TOL = 2 * (2 * gamma(D + 2, torch.float32) + gamma(D, torch.float32))


def _direct(feats, text, query, threshold, background, top):
    """Everything at once in float64: argmax of cosine similarity, the unlabelled rule, counts per
    keyframe, and the top points by numpy's sort."""
    k = torch.cat(feats).double()
    k = k / k.norm(dim=1, keepdim=True)
    t = text.double() / text.double().norm(dim=1, keepdim=True)
    sims = (k @ t.T).numpy()
    order = np.sort(sims, 1)
    best, second = order[:, -1], order[:, -2]
    assigned = sims.argmax(1)
    keep = np.ones(len(k), bool)
    # the comparison is only defined away from ties: float32 may order values closer than TOL either way
    assert (best - second).min() > 2 * TOL
    if threshold is not None:
        assert np.abs(best - threshold).min() > 2 * TOL
        keep &= best >= threshold
    if background is not None:
        b = background.double() / background.double().norm(dim=1, keepdim=True)
        bg = (k @ b.T).numpy().max(1)
        assert np.abs(bg - best).min() > 2 * TOL
        keep &= bg <= best
    hit = keep & (assigned == query)
    keyframe = np.repeat(np.arange(len(feats)), [len(f) for f in feats])
    point = np.concatenate([np.arange(len(f)) for f in feats])
    rows = []
    for i in range(len(feats)):
        m = hit & (keyframe == i)
        rows.append((i, int(m.sum()), float(sims[m, query].mean()) if m.any() else math.nan))
    rows.sort(key=lambda r: (-r[1], -r[2] if r[1] else 0.0, r[0]))
    top_idx = np.argsort(-sims[:, query], kind="stable")[:top]
    return rows, [(int(keyframe[j]), int(point[j]), float(sims[j, query])) for j in top_idx], sims[:, query]


@pytest.mark.parametrize("rule", ["none", "threshold", "background"])
def test_search_split_equals_a_direct_computation(rule):
    gen = torch.Generator().manual_seed(3)
    feats = [torch.randn(n, D, generator=gen) for n in SIZES]
    text = torch.randn(P, D, generator=gen)
    threshold = 0.05 if rule == "threshold" else None
    background = torch.randn(2, D, generator=gen) if rule == "background" else None
    query, top = 2, 25
    # float16 input for one keyframe, as the disk cache stores it: the reference gets the same values
    feats[0] = feats[0].half()
    result = search_split([f.numpy() if i % 2 else f for i, f in enumerate(feats)], text, query, threshold,
                          background, top_points=top)
    rows, points, sim_q = _direct([f.float() for f in feats], text, query, threshold, background, top)

    assert [(m.keyframe, m.points) for m in result.keyframes] == [(r[0], r[1]) for r in rows]
    assert sum(r[1] for r in rows) > 0 and len({r[1] for r in rows}) > 2  # the fixture ranks something
    for m, r in zip(result.keyframes, rows):
        assert m.total == SIZES[m.keyframe]
        if r[1]:
            # a mean of n float32 similarities: each within TOL, the sum adds gamma(n) relative to <= 1
            assert abs(m.mean_similarity - r[2]) <= TOL + gamma(r[1], torch.float32)
        else:
            assert math.isnan(m.mean_similarity)
    assert len(result.points) == top
    # the same values in the same order (the fixture has no two top values closer than 2 TOL)
    top_ref = np.array([p[2] for p in points])
    assert np.diff(top_ref).__abs__().min() > 2 * TOL
    assert [(p.keyframe, p.point) for p in result.points] == [(p[0], p[1]) for p in points]
    assert np.allclose([p.similarity for p in result.points], top_ref, rtol=0, atol=TOL)


def test_search_split_handles_small_splits_and_refuses_bad_arguments():
    gen = torch.Generator().manual_seed(4)
    feats, text = [torch.randn(3, D, generator=gen)], torch.randn(2, D, generator=gen)
    result = search_split(feats, text, 0, top_points=10)
    assert len(result.points) == 3  # no more points than the split has
    assert search_split(feats, text, 1, top_points=0).points == ()
    with pytest.raises(InputError, match="query index 2"):
        search_split(feats, text, 2)
    with pytest.raises(InputError, match="top_points"):
        search_split(feats, text, 0, top_points=-1)
