"""Losses against naive numpy implementations of the SPEC formulas."""

import math

import numpy as np
import pytest
import torch

from fp_bounds import U64, gamma, unit_roundoff
from relviz.losses import (contrastive_loss, get_loss, relational_cross_loss, relational_intra_loss,
                           relational_loss, similarity_loss, superpixel_contrastive_loss)


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def np_contrastive(k, q, tau=0.07):
    k, q = _unit(k), _unit(q)
    logits = k @ q.T / tau
    total = 0.0
    for i in range(len(k)):
        m = logits[i].max()
        total += -(logits[i, i] - (m + np.log(np.exp(logits[i] - m).sum())))
    return total / len(k)


def np_similarity(k, q):
    k, q = _unit(k), _unit(q)
    return np.mean([1 - k[i] @ q[i] for i in range(len(k))])


def np_offdiag_mean(m):
    n = len(m)
    return sum(m[i, j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))


def np_cross(k, q):
    k, q = _unit(k), _unit(q)
    c = np.abs(k @ q.T - q @ q.T)
    return np.mean(np.diag(c)) + np_offdiag_mean(c)


def np_intra(k, q):
    k, q = _unit(k), _unit(q)
    return np_offdiag_mean(np.abs(k @ k.T - q @ q.T))


def _data(kind, n=24, d=8, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "random":
        k, q = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    else:  # clustered: three tight clusters, student a noisy copy of the teacher
        centres = rng.normal(size=(3, d))
        q = centres[rng.integers(0, 3, n)] + 0.05 * rng.normal(size=(n, d))
        k = q + 0.3 * rng.normal(size=(n, d))
    return k, q


def _bounds(n, d, dtype, temperature=0.07, typical=False):
    """Worst-case distance of each loss over N pairs of d-vectors from its exact value (one side, no
    safety factor); gamma(m) * sum|terms| bounds m roundings in any order (fp_bounds). ``typical``:
    sqrt(m) u instead of gamma(m), the size of m independent roundings.
    Every logit / Gram entry has |e| <= 1 and m = 2d + 8 roundings: the d-term dot, normalising each
    side (d/2 + 2 each) and rounding the inputs to the dtype (2 each). Then
    - contrastive: lse over N logits minus l_ii (the entry error counts twice), N + 2 more roundings,
      and a mean over N rows; every term is <= 2/tau + log N
    - similarity: 1 - k.q and a mean over N; terms <= 2
    - relational, per part (cross or intra): means of N^2 entries <= 2; the off-diagonal mean is
      (sum - diagonal) / (N(N-1)), and N^2 / (N(N-1)) <= 2."""
    m = 2 * d + 8
    g = (lambda k, dtype: math.sqrt(k) * unit_roundoff(dtype)) if typical else gamma
    return {"contrastive": g(2 * m + 2 * n + 2, dtype) * (2 / temperature + math.log(n)),
            "similarity": g(m + n + 2, dtype) * 2,
            "relational": g(2 * m + 2 * n * n + 2, dtype) * 2 * 2}


@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_losses_match_numpy(kind):
    k, q = _data(kind)
    kt, qt = torch.tensor(k), torch.tensor(q)
    # float64 on both sides, each within its bound of the exact value; x2 safety
    b = {name: 2 * 2 * v for name, v in _bounds(*k.shape, torch.float64).items()}
    b05 = 2 * 2 * _bounds(*k.shape, torch.float64, temperature=0.5)["contrastive"]
    assert contrastive_loss(kt, qt).item() == pytest.approx(np_contrastive(k, q), abs=b["contrastive"])
    assert contrastive_loss(kt, qt, temperature=0.5).item() == pytest.approx(np_contrastive(k, q, 0.5), abs=b05)
    assert similarity_loss(kt, qt).item() == pytest.approx(np_similarity(k, q), abs=b["similarity"])
    assert relational_cross_loss(kt, qt).item() == pytest.approx(np_cross(k, q), abs=b["relational"])
    assert relational_intra_loss(kt, qt).item() == pytest.approx(np_intra(k, q), abs=b["relational"])
    # cross + w * intra, w <= 1: two parts
    assert relational_loss(kt, qt).item() == pytest.approx(np_cross(k, q) + np_intra(k, q), abs=2 * b["relational"])
    assert relational_loss(kt, qt, intra_weight=0.25).item() == pytest.approx(
        np_cross(k, q) + 0.25 * np_intra(k, q), abs=2 * b["relational"])
    assert relational_loss(kt, qt, intra_weight=0.0).item() == pytest.approx(np_cross(k, q), abs=b["relational"])


def test_float32_matches_float64():
    k, q = _data("random", n=64, d=32)
    # The float32 side's error dominates. Its worst case (relational: N^2 = 4096 terms, 8e-3) could
    # not tell a float16 accumulation from float32, so this uses the typical sqrt(m) u, x10 safety.
    b32 = _bounds(*k.shape, torch.float32, typical=True)
    for fn, name, parts in ((contrastive_loss, "contrastive", 1), (similarity_loss, "similarity", 1),
                            (relational_loss, "relational", 2)):
        a = fn(torch.tensor(k), torch.tensor(q)).item()
        b = fn(torch.tensor(k, dtype=torch.float32), torch.tensor(q, dtype=torch.float32)).item()
        assert a == pytest.approx(b, abs=10 * parts * b32[name])


def test_permutation_invariance():
    k, q = (torch.tensor(x) for x in _data("clustered", n=40))
    perm = torch.randperm(40)
    bound = _bounds(*k.shape, torch.float64)  # the same sums in another order: two sides, x2 safety
    for fn, name, parts in ((contrastive_loss, "contrastive", 1), (similarity_loss, "similarity", 1),
                            (relational_loss, "relational", 2)):
        assert fn(k, q).item() == pytest.approx(fn(k[perm], q[perm]).item(), abs=2 * 2 * parts * bound[name])


def test_perfect_student():
    _, q = _data("clustered")
    d = q.shape[1]
    q = torch.tensor(q)
    # 1 - |q_i|^2 of a normalised row: (d + 3) u each, and their mean; x2 safety
    assert similarity_loss(q, q).item() == pytest.approx(0.0, abs=2 * (d + 4) * U64)
    # K Q^T and Q Q^T of the same unit rows, possibly ordered differently by BLAS: each entry of
    # |K Q^T - Q Q^T| <= 2 gamma(d); relational is three means of such entries (the off-diagonal
    # one up to 2x their size, see _bounds); x2 safety
    assert relational_loss(q, q).item() == pytest.approx(0.0, abs=2 * 4 * 2 * gamma(d + 1))


def test_offdiagonal_excludes_diagonal_exactly():
    # two orthogonal pairs: K K^T and Q Q^T agree off the diagonal, differ on it only through scaling
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]]) * 3.0  # normalised away
    assert relational_intra_loss(k, q).item() == 0.0
    k2 = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # off-diagonal |1 - 0| for both (i, j) orderings: mean 1; diagonal never counted (entries 0 and 1,
    # sums of small integers and a division by 2: exact in float32)
    assert relational_intra_loss(k2, q).item() == 1.0


@pytest.mark.parametrize("name", ["contrastive", "similarity", "relational"])
def test_gradients_finite(name):
    k = torch.randn(128, 16, requires_grad=True)
    q = torch.randn(128, 16)
    q[1] = q[0]  # duplicates and near-duplicates must not break anything
    get_loss(name)(k, q).backward()
    assert torch.isfinite(k.grad).all() and k.grad.abs().sum() > 0


def test_contrastive_stable_at_tiny_temperature():
    k = torch.randn(64, 16, dtype=torch.float32)
    loss = contrastive_loss(k, k + 0.1 * torch.randn_like(k), temperature=1e-4)
    assert torch.isfinite(loss)


def test_superpixel_contrastive_matches_manual_pooling():
    k, q = (torch.tensor(x) for x in _data("random", n=30))
    ids = torch.tensor([i % 5 for i in range(30)]) * 7  # five superpixels, non-contiguous ids
    pooled_k = torch.stack([k[ids == s].mean(0) for s in torch.unique(ids)])
    pooled_q = torch.stack([q[ids == s].mean(0) for s in torch.unique(ids)])
    # Pooling by index_add vs by mean (normalising removes the 1/6): a pooled row is within gamma(7)
    # * |sum |k_i|| of exact, its direction within 2 gamma(7) cond, cond = max |sum |k_i|| / |sum k_i|
    # (cancellation in the sum); that moves each logit by 2x that / tau (k and q) and the loss by 2x
    # that again (lse and diagonal) on each side; plus the contrastive bound of 5 pairs on each side;
    # x2 safety
    cond = max((x[ids == s].abs().sum(0).norm() / x[ids == s].sum(0).norm()).item()
               for x in (k, q) for s in torch.unique(ids))
    one_side = 8 * gamma(7) * cond / 0.07 + _bounds(5, k.shape[1], torch.float64)["contrastive"]
    tol = 2 * 2 * one_side
    assert superpixel_contrastive_loss(k, q, ids).item() == pytest.approx(
        np_contrastive(pooled_k.numpy(), pooled_q.numpy()), abs=tol)
    with pytest.raises(ValueError, match="at least two superpixels"):
        superpixel_contrastive_loss(k, q, torch.zeros(30, dtype=torch.long))


def test_bad_inputs_are_named():
    k = torch.randn(8, 4)
    with pytest.raises(ValueError, match="student .* and teacher .* same shape"):
        similarity_loss(k, torch.randn(7, 4))
    bad = k.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="teacher: 1 row.*NaN.*row 3"):
        relational_loss(k, bad)
    with pytest.raises(ValueError, match="student: .* NaN or infinite"):
        contrastive_loss(bad.masked_fill(torch.isnan(bad), float("inf")), k)
    with pytest.raises(TypeError, match="floating-point"):
        similarity_loss(torch.ones(8, 4, dtype=torch.long), k)
    with pytest.raises(ValueError, match="at least 2 samples"):
        relational_loss(k[:1], k[:1])
    with pytest.raises(ValueError, match="unknown loss 'cosine'"):
        get_loss("cosine")
    with pytest.raises(ValueError, match="temperature"):
        contrastive_loss(k, k, temperature=0)
