"""Structure metrics against naive numpy implementations of the SPEC formulas."""

import math

import numpy as np
import pytest
import torch

from relviz.metrics import (fit_pca, modality_gap, sample_per_class, tolerance, uniformity,
                            uniformity_estimate)


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def np_uniformity(z, t=2.0):
    z = _unit(z)
    n = len(z)
    vals = [np.exp(-t * np.sum((z[i] - z[j]) ** 2)) for i in range(n) for j in range(n) if i != j]
    return -np.log(np.mean(vals))


def np_tolerance(z, y):
    z = _unit(z)
    per = {}
    for c in np.unique(y):
        idx = np.where(y == c)[0]
        sims = [z[i] @ z[j] for i in idx for j in idx if i != j]
        if sims:
            per[int(c)] = float(np.mean(sims))
    return per, float(np.mean(list(per.values())))


def _clustered(n=90, d=6, k=4, seed=0, spread=0.2):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    y = rng.integers(0, k, n)
    return centres[y] + spread * rng.normal(size=(n, d)), y


@pytest.mark.parametrize("kind", ["random", "clustered"])
@pytest.mark.parametrize("chunk", [7, 32, 4096])
def test_uniformity_exact_matches_numpy(kind, chunk):
    z = np.random.default_rng(1).normal(size=(75, 5)) if kind == "random" else _clustered(75)[0]
    ref = np_uniformity(z)
    assert uniformity(torch.tensor(z), chunk_size=chunk) == pytest.approx(ref, abs=1e-5)
    assert uniformity(torch.tensor(z, dtype=torch.float32), chunk_size=chunk) == pytest.approx(ref, abs=1e-5)
    assert uniformity(torch.tensor(z), t=0.5, chunk_size=chunk) == pytest.approx(np_uniformity(z, 0.5), abs=1e-5)


def test_uniformity_two_points_and_bounds():
    # a regular simplex of n points reaches the maximum: every ||z_i - z_j||^2 = 2n/(n-1), U = 2t n/(n-1)
    for n in (2, 5, 16):
        z = torch.eye(n, dtype=torch.float64) - 1.0 / n  # centred standard basis = regular simplex
        assert uniformity(z) == pytest.approx(4.0 * n / (n - 1), abs=1e-6)
        assert uniformity(z) >= uniformity(torch.randn(n, n, dtype=torch.float64)) - 1e-9
    # identical points: U = 0 (the minimum)
    assert uniformity(torch.ones(10, 3)) == pytest.approx(0.0, abs=1e-6)
    # large t does not underflow (log-sum-exp)
    assert math.isfinite(uniformity(torch.randn(50, 8), t=500.0))


def test_uniformity_permutation_invariant():
    z = torch.tensor(_clustered(120)[0])
    assert uniformity(z, chunk_size=16) == pytest.approx(uniformity(z[torch.randperm(120)], chunk_size=16), abs=1e-10)


def test_uniformity_estimate_close_to_exact_with_honest_stderr():
    z = torch.tensor(_clustered(2000, d=16, k=8, spread=0.5)[0], dtype=torch.float32)
    exact = uniformity(z)
    est = uniformity_estimate(z, num_pairs=200_000, seed=3)
    assert abs(est.value - exact) < 4 * est.stderr + 1e-4
    assert 0 < est.stderr < 0.01 * exact
    assert uniformity_estimate(z, num_pairs=200_000, seed=3) == est  # seeded


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tolerance_matches_numpy(seed):
    z, y = _clustered(80, seed=seed)
    per_ref, mean_ref = np_tolerance(z, y)
    res = tolerance(torch.tensor(z), torch.tensor(y))
    assert res.mean == pytest.approx(mean_ref, abs=1e-6)
    for c, v in per_ref.items():
        assert res.per_class[c] == pytest.approx(v, abs=1e-6)
    assert res.counts == {int(c): int((y == c).sum()) for c in np.unique(y)}


def test_tolerance_single_sample_class_is_reported_undefined():
    z = torch.randn(7, 4)
    y = torch.tensor([1, 1, 1, 2, 2, 2, 5])
    res = tolerance(z, y)
    assert res.undefined == [5] and math.isnan(res.per_class[5]) and res.counts[5] == 1
    per_ref, mean_ref = np_tolerance(z.numpy(), y.numpy())
    assert res.mean == pytest.approx(mean_ref, abs=1e-6)  # mean over classes with a pair
    with pytest.raises(ValueError, match="every class has a single sample"):
        tolerance(torch.randn(3, 4), torch.tensor([1, 2, 3]))


def test_tolerance_ignore_index():
    z, y = _clustered(60)
    y[:10] = 0
    res = tolerance(torch.tensor(z), torch.tensor(y), ignore_index=0)
    keep = y != 0
    assert res.mean == pytest.approx(np_tolerance(z[keep], y[keep])[1], abs=1e-6)
    assert 0 not in res.per_class


def test_modality_gap_matches_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 6)) + 1.0, rng.normal(size=(25, 6))
    ref = np.linalg.norm(_unit(a).mean(0) - _unit(b).mean(0))
    assert modality_gap(torch.tensor(a), torch.tensor(b)) == pytest.approx(ref, abs=1e-6)
    assert modality_gap(torch.tensor(a), torch.tensor(a)) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="feature dims differ"):
        modality_gap(torch.tensor(a), torch.randn(5, 3))


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least 2 samples"):
        uniformity(torch.randn(1, 4))
    with pytest.raises(TypeError, match="floating-point"):
        uniformity(torch.ones(5, 4, dtype=torch.int64))
    z = torch.randn(5, 4)
    z[2, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite .*row 2"):
        uniformity(z)
    with pytest.raises(ValueError, match=r"labels: expected shape \[5\]"):
        tolerance(torch.randn(5, 4), torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="integer tensor"):
        tolerance(torch.randn(3, 4), torch.tensor([1.0, 2.0, 1.0]))


def test_sample_per_class_protocol():
    y = torch.cat([torch.full((50,), 3), torch.full((8,), 1), torch.zeros(20, dtype=torch.long)])
    y = y[torch.randperm(len(y))]
    idx = sample_per_class(y, per_class=10, seed=7)
    picked = y[idx]
    assert (picked == 3).sum() == 10 and (picked == 1).sum() == 8 and (picked == 0).sum() == 0
    assert len(set(idx.tolist())) == len(idx)
    assert torch.equal(idx, sample_per_class(y, per_class=10, seed=7))
    assert not torch.equal(idx, sample_per_class(y, per_class=10, seed=8))


@pytest.mark.parametrize("method", ["covariance", "randomized"])
def test_pca_matches_sklearn(method):
    from sklearn.decomposition import PCA as SkPCA

    x = torch.tensor(_clustered(300, d=12, k=5)[0], dtype=torch.float64)
    ours = fit_pca(x, k=3, method=method, seed=0)
    ref = SkPCA(n_components=3, svd_solver="full").fit(x.numpy())
    np.testing.assert_allclose(ours.explained_variance.numpy(), ref.explained_variance_, rtol=1e-4)
    np.testing.assert_allclose(ours.explained_variance_ratio.numpy(), ref.explained_variance_ratio_, rtol=1e-4)
    # same axes up to sign
    cos = (ours.components @ torch.tensor(ref.components_).T).abs().diagonal()
    assert torch.allclose(cos, torch.ones(3, dtype=x.dtype), atol=1e-4)
    # a shared basis: another set projects into the same axes
    other = x[:50] + 1.0
    assert ours.transform(other).shape == (50, 3)
    assert torch.allclose(ours.transform(x).mean(0), torch.zeros(3, dtype=x.dtype), atol=1e-8)


def test_pca_signs_are_deterministic():
    x = torch.randn(200, 10)
    a, b = fit_pca(x, 3), fit_pca(x.clone(), 3)
    assert torch.equal(a.components, b.components)
    assert (a.components.gather(1, a.components.abs().argmax(1, keepdim=True)) > 0).all()
