"""Losses against naive numpy implementations of the SPEC formulas."""

import numpy as np
import pytest
import torch

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


@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_losses_match_numpy(kind):
    k, q = _data(kind)
    kt, qt = torch.tensor(k), torch.tensor(q)
    assert contrastive_loss(kt, qt).item() == pytest.approx(np_contrastive(k, q), abs=1e-5)
    assert contrastive_loss(kt, qt, temperature=0.5).item() == pytest.approx(np_contrastive(k, q, 0.5), abs=1e-5)
    assert similarity_loss(kt, qt).item() == pytest.approx(np_similarity(k, q), abs=1e-5)
    assert relational_cross_loss(kt, qt).item() == pytest.approx(np_cross(k, q), abs=1e-5)
    assert relational_intra_loss(kt, qt).item() == pytest.approx(np_intra(k, q), abs=1e-5)
    assert relational_loss(kt, qt).item() == pytest.approx(np_cross(k, q) + np_intra(k, q), abs=1e-5)
    assert relational_loss(kt, qt, intra_weight=0.25).item() == pytest.approx(
        np_cross(k, q) + 0.25 * np_intra(k, q), abs=1e-5)
    assert relational_loss(kt, qt, intra_weight=0.0).item() == pytest.approx(np_cross(k, q), abs=1e-5)


def test_float32_matches_float64():
    k, q = _data("random", n=64, d=32)
    for fn in (contrastive_loss, similarity_loss, relational_loss):
        a = fn(torch.tensor(k), torch.tensor(q)).item()
        b = fn(torch.tensor(k, dtype=torch.float32), torch.tensor(q, dtype=torch.float32)).item()
        assert a == pytest.approx(b, abs=1e-5)


def test_permutation_invariance():
    k, q = (torch.tensor(x) for x in _data("clustered", n=40))
    perm = torch.randperm(40)
    for fn in (contrastive_loss, similarity_loss, relational_loss):
        assert fn(k, q).item() == pytest.approx(fn(k[perm], q[perm]).item(), abs=1e-10)


def test_perfect_student():
    _, q = _data("clustered")
    q = torch.tensor(q)
    assert similarity_loss(q, q).item() == pytest.approx(0.0, abs=1e-12)
    assert relational_loss(q, q).item() == pytest.approx(0.0, abs=1e-12)


def test_offdiagonal_excludes_diagonal_exactly():
    # two orthogonal pairs: K K^T and Q Q^T agree off the diagonal, differ on it only through scaling
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]]) * 3.0  # normalised away
    assert relational_intra_loss(k, q).item() == 0.0
    k2 = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # off-diagonal |1 - 0| for both (i, j) orderings: mean 1; diagonal never counted
    assert relational_intra_loss(k2, q).item() == pytest.approx(1.0)


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
    assert superpixel_contrastive_loss(k, q, ids).item() == pytest.approx(
        np_contrastive(pooled_k.numpy(), pooled_q.numpy()), abs=1e-6)
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
