"""Structure metrics against naive numpy implementations of the SPEC formulas."""

import math

import numpy as np
import pytest
import torch

from fp_bounds import gamma, unit_roundoff
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


def _u_bound(n, d, t, dtype):
    """Worst-case |U - U_exact| for n points in d dims (one side, no safety): a block log-sum-exp adds
    <= n^2 positive terms exp(-t d2), relative error gamma(n^2 + 2) of their mean = absolute error of
    U = -log(mean); each d2 = |zi|^2 + |zj|^2 - 2 zi.zj (<= 4) is off by <= 4 gamma(d + 4) (dot and
    normalising), t times that in the exponent; a few roundings of the logs (<= 4t + 2 log n)."""
    return gamma(n * n + 2, dtype) + t * 4 * gamma(d + 4, dtype) + 3 * unit_roundoff(dtype) * (4 * t + 2 * math.log(n))


def _t_bound(m, d, dtype):
    """Worst-case |T_c - T_c exact| for a class of m unit rows in d dims (one side, no safety): the
    reference means m(m-1) d-term dots (gamma(m^2 + 2d + 4), terms <= 1); relviz forms
    |sum z|^2 - sum |z|^2 from m-term sums (gamma(2m + 2d + 5) relative to m^2) over m(m-1) <= m^2 / 2."""
    return 2 * gamma(m * m + 2 * m + 2 * d + 5, dtype)


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
    n, d = z.shape
    b64 = _u_bound(n, d, 2.0, torch.float64)
    # float64 on both sides (2 x the bound), x2 safety; float32: its bound dominates (inputs rounded to
    # float32 add u per entry, within the normalising term), x2 safety
    assert uniformity(torch.tensor(z), chunk_size=chunk) == pytest.approx(ref, abs=2 * 2 * b64)
    assert uniformity(torch.tensor(z, dtype=torch.float32), chunk_size=chunk) == pytest.approx(
        ref, abs=2 * (_u_bound(n, d + 1, 2.0, torch.float32) + b64))
    assert uniformity(torch.tensor(z), t=0.5, chunk_size=chunk) == pytest.approx(
        np_uniformity(z, 0.5), abs=2 * 2 * _u_bound(n, d, 0.5, torch.float64))


def test_uniformity_two_points_and_bounds():
    # a regular simplex of n points reaches the maximum: every ||z_i - z_j||^2 = 2n/(n-1), U = 2t n/(n-1)
    for n in (2, 5, 16):
        z = torch.eye(n, dtype=torch.float64) - 1.0 / n  # centred standard basis = regular simplex
        bound = _u_bound(n, n, 2.0, torch.float64)  # against the exact value: one side, x2 safety
        assert uniformity(z) == pytest.approx(4.0 * n / (n - 1), abs=2 * bound)
        assert uniformity(z) >= uniformity(torch.randn(n, n, dtype=torch.float64)) - 2 * 2 * bound
    # identical points: U = 0 (the minimum); float32, one side, x2 safety
    assert uniformity(torch.ones(10, 3)) == pytest.approx(0.0, abs=2 * _u_bound(10, 3, 2.0, torch.float32))
    # large t does not underflow (log-sum-exp)
    assert math.isfinite(uniformity(torch.randn(50, 8), t=500.0))


def test_uniformity_permutation_invariant():
    z = torch.tensor(_clustered(120)[0])
    # the same float64 sums in another order: 2 x the bound, x2 safety
    assert uniformity(z, chunk_size=16) == pytest.approx(uniformity(z[torch.randperm(120)], chunk_size=16),
                                                         abs=2 * 2 * _u_bound(120, 6, 2.0, torch.float64))


def test_uniformity_estimate_close_to_exact_with_honest_stderr():
    z = torch.tensor(_clustered(2000, d=16, k=8, spread=0.5)[0], dtype=torch.float32)
    exact = uniformity(z.double())  # U of these float32 points, to float64 accuracy
    est = uniformity_estimate(z, num_pairs=200_000, seed=3)
    # 4 standard errors (statistics), plus rounding: the estimate's terms carry float32 d2 errors
    # (t * 4 gamma(d + 4) relative each, summed in float64), the float64 U its own bound; x2 safety
    rounding = 2.0 * 4 * gamma(16 + 4, torch.float32) + _u_bound(2000, 16, 2.0, torch.float64)
    assert abs(est.value - exact) < 4 * est.stderr + 2 * rounding
    assert 0 < est.stderr < 0.01 * exact  # statistics, not rounding: 200k pairs give a relative stderr ~1e-3
    assert uniformity_estimate(z, num_pairs=200_000, seed=3) == est  # seeded


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tolerance_matches_numpy(seed):
    z, y = _clustered(80, seed=seed)
    per_ref, mean_ref = np_tolerance(z, y)
    res = tolerance(torch.tensor(z), torch.tensor(y))
    # float64 both sides (each within the bound of its largest class), x2 safety; the class mean adds
    # a few roundings of values <= 1, far below
    tol = 2 * 2 * _t_bound(np.bincount(y).max(), z.shape[1], torch.float64)
    assert res.mean == pytest.approx(mean_ref, abs=tol)
    for c, v in per_ref.items():
        assert res.per_class[c] == pytest.approx(v, abs=tol)
    assert res.counts == {int(c): int((y == c).sum()) for c in np.unique(y)}


def test_tolerance_single_sample_class_is_reported_undefined():
    z = torch.randn(7, 4)
    y = torch.tensor([1, 1, 1, 2, 2, 2, 5])
    res = tolerance(z, y)
    assert res.undefined == [5] and math.isnan(res.per_class[5]) and res.counts[5] == 1
    per_ref, mean_ref = np_tolerance(z.double().numpy(), y.numpy())
    # mean over classes with a pair; relviz normalises in float32, the reference is float64: x2 safety
    assert res.mean == pytest.approx(mean_ref, abs=2 * _t_bound(3, 4, torch.float32))
    with pytest.raises(ValueError, match="every class has a single sample"):
        tolerance(torch.randn(3, 4), torch.tensor([1, 2, 3]))


def test_tolerance_ignore_index():
    z, y = _clustered(60)
    y[:10] = 0
    res = tolerance(torch.tensor(z), torch.tensor(y), ignore_index=0)
    keep = y != 0
    tol = 2 * 2 * _t_bound(np.bincount(y[keep]).max(), z.shape[1], torch.float64)  # as test_tolerance_matches_numpy
    assert res.mean == pytest.approx(np_tolerance(z[keep], y[keep])[1], abs=tol)
    assert 0 not in res.per_class


def test_modality_gap_matches_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 6)) + 1.0, rng.normal(size=(25, 6))
    ref = np.linalg.norm(_unit(a).mean(0) - _unit(b).mean(0))
    # each mean of N unit rows is within gamma(N + d + 4) per coordinate (normalising, N terms <= 1),
    # their difference within twice that, its d-term norm within sqrt(d) x that + gamma(d + 2) G;
    # float64 on both sides, x2 safety
    n, d = max(len(a), len(b)), a.shape[1]
    one_side = math.sqrt(d) * 2 * gamma(n + d + 4) + gamma(d + 2) * ref
    assert modality_gap(torch.tensor(a), torch.tensor(b)) == pytest.approx(ref, abs=2 * 2 * one_side)
    # identical inputs through the same kernels: 0 up to the same bound with G = 0
    assert modality_gap(torch.tensor(a), torch.tensor(a)) == pytest.approx(
        0.0, abs=2 * 2 * math.sqrt(d) * 2 * gamma(n + d + 4))
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
    n, d = x.shape
    ours = fit_pca(x, k=3, method=method, seed=0)
    ref = SkPCA(n_components=3, svd_solver="full").fit(x.numpy())
    # Covariance entries are n-term sums: off by <= gamma(n) lam_max each (Cauchy-Schwarz), so by
    # <= d gamma(n) lam_max in 2-norm; eigh / SVD are backward stable (c d u |C|): every eigenvalue
    # is within E = d gamma(n + d) lam_max of exact on each side (Weyl); x2 safety.
    spectrum = np.linalg.eigvalsh(np.cov(x.numpy().T))[::-1]
    err = d * gamma(n + d) * spectrum[0]
    np.testing.assert_allclose(ours.explained_variance.numpy(), ref.explained_variance_, rtol=0, atol=2 * 2 * err)
    total = spectrum.sum()  # the ratio's denominator, a sum of n d positive terms: gamma(n d + 2) relative
    np.testing.assert_allclose(ours.explained_variance_ratio.numpy(), ref.explained_variance_ratio_, rtol=0,
                               atol=2 * 2 * (err / total + gamma(n * d + 2)))
    # same axes up to sign: each axis is within sin(angle) <= E / (gap - E) of exact on each side
    # (Davis-Kahan; gap to the nearest other eigenvalue), plus normalising (d + 2) u; x2 safety
    gap = min(min(spectrum[i - 1] - spectrum[i] if i else np.inf, spectrum[i] - spectrum[i + 1]) for i in range(3))
    axis_tol = 2 * 2 * (err / (gap - err) + gamma(d + 2))
    theirs = torch.tensor(ref.components_)
    sign = torch.sign((ours.components * theirs).sum(1, keepdim=True))
    torch.testing.assert_close(ours.components, sign * theirs, rtol=0, atol=axis_tol)
    # a shared basis: another set projects into the same axes
    other = x[:50] + 1.0
    assert ours.transform(other).shape == (50, 3)
    # the mean of the projections is exactly -axes . (mean error): gamma(n) max|x| per coordinate, and
    # rounding the projections (d + 1 terms <= 2 max|x| sqrt(d)) and their mean (n): x2 safety
    center_tol = 2 * 2 * math.sqrt(d) * x.abs().max().item() * gamma(2 * n + d + 1)
    torch.testing.assert_close(ours.transform(x).mean(0), torch.zeros(3, dtype=x.dtype), rtol=0, atol=center_tol)


def test_pca_signs_are_deterministic():
    x = torch.randn(200, 10)
    a, b = fit_pca(x, 3), fit_pca(x.clone(), 3)
    assert torch.equal(a.components, b.components)
    assert (a.components.gather(1, a.components.abs().argmax(1, keepdim=True)) > 0).all()
