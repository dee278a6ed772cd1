"""Uncertainty of a statistic: bootstrap intervals over clusters (scenes), intervals over seeds, the
paired comparison of two statistics measured on the same clusters, the two-stage bootstrap over seeds
and scenes together, and error control over a family of claims (Holm).

The unit of evaluation uncertainty is the scene: keyframes of one scene are not independent, so an
interval resamples scenes with their keyframes nested in them (:func:`scene_statistic` turns a
statistic of keyframe multiplicities into one of scene multiplicities). An interval over fewer than
:data:`MIN_SCENES` scenes is not given (:func:`refusal`); per-scene values are shown instead.

The unit of resampling is the cluster, not the point: the points of one keyframe share a scene and a
moment, so resampling points would understate the uncertainty (a cluster bootstrap; Field & Welsh,
"Bootstrapping clustered data", JRSS B 2007). A statistic is given as a function of cluster multiplicities:
``statistic(m)`` with m float [..., K] (how often each of the K clusters is drawn; all ones for the
data as observed) returns [...]. Sums kept per cluster make every structure metric such a function
(:mod:`relviz.eval.keyframe_sums`), so a resample costs no pass over the points and thousands of
resamples take milliseconds to seconds. The resampling itself is ``scipy.stats.bootstrap``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import scipy.stats

from relviz.errors import InputError

METHODS = ("percentile", "basic", "BCa")
MIN_SCENES = 10  # fewer scenes give no interval over scenes (a percentile bootstrap over few clusters under-covers)
MIN_SEEDS = 5  # fewer seeds give no "holds"/"reversed" (issue 26's rule); the smallest two-sided sign-flip p
# is 2 / 2^n: 0.125 with 4 seeds, 0.0625 with 5, 0.031 with 6, so a distribution-free 5% needs 6


@dataclass(frozen=True)
class Interval:
    """A value with its confidence interval [low, high]. ``n``: clusters resampled (or runs, for an
    interval over seeds); ``significant``: for a difference, whether the interval excludes 0."""

    value: float
    low: float
    high: float
    confidence: float
    method: str
    n: int
    n_resamples: int | None = None
    stderr: float | None = None
    significant: bool | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _check(confidence: float, n_resamples: int, method: str) -> None:
    if not 0 < confidence < 1:
        raise InputError(f"confidence must lie in (0, 1), got {confidence}")
    if n_resamples < 10:
        raise InputError(f"n_resamples must be >= 10, got {n_resamples}")
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, got {method!r}")


def multiplicities(ids: np.ndarray, n_clusters: int) -> np.ndarray:
    """How often each cluster occurs in every row of ``ids`` int [..., k]: float64 [..., n_clusters]."""
    ids = np.asarray(ids, dtype=np.int64)
    rows = ids.reshape(-1, ids.shape[-1])
    flat = (np.arange(len(rows))[:, None] * n_clusters + rows).ravel()
    counts = np.bincount(flat, minlength=len(rows) * n_clusters).astype(np.float64)
    return counts.reshape(*ids.shape[:-1], n_clusters)


def cluster_bootstrap(statistic: Callable[[np.ndarray], np.ndarray], n_clusters: int, n_resamples: int = 1000,
                      confidence: float = 0.95, method: str = "percentile", seed: int = 0,
                      batch: int | None = None) -> Interval:
    """Bootstrap interval of ``statistic`` (a function of multiplicities m [..., K] -> [...]) over
    ``n_clusters`` clusters drawn with replacement. ``value`` is the statistic of the data (m = 1).

    ``percentile`` is the default: it stays defined when every resample gives the same value (two
    identical checkpoints) and needs no jackknife; ``BCa`` corrects bias and skew at the cost of K
    more evaluations. ``batch``: resamples per call of ``statistic`` (bounds its memory). The same
    ``seed`` draws the same resamples for every statistic of one data set."""
    _check(confidence, n_resamples, method)
    if n_clusters < 2:
        raise InputError(f"a bootstrap over clusters needs at least 2 clusters (keyframes), got {n_clusters}")
    value = float(statistic(np.ones(n_clusters)))

    def on_ids(ids: np.ndarray, axis: int = -1) -> np.ndarray:
        return statistic(multiplicities(np.moveaxis(ids, axis, -1), n_clusters))

    res = scipy.stats.bootstrap((np.arange(n_clusters),), on_ids, n_resamples=n_resamples, batch=batch,
                                vectorized=True, confidence_level=confidence, method=method,
                                rng=np.random.default_rng(seed))
    low, high = res.confidence_interval
    return Interval(value, float(low), float(high), confidence, f"{method} bootstrap over clusters", n_clusters,
                    n_resamples, float(res.standard_error))


def paired_difference(statistic_a: Callable[[np.ndarray], np.ndarray],
                      statistic_b: Callable[[np.ndarray], np.ndarray], n_clusters: int, n_resamples: int = 1000,
                      confidence: float = 0.95, method: str = "percentile", seed: int = 0,
                      batch: int | None = None) -> Interval:
    """The difference a - b of two statistics of the same clusters (two checkpoints on the same
    keyframes), with a paired bootstrap interval: each resample draws one multiset of clusters and
    evaluates both statistics on it, so what the two share (which keyframes are easy) cancels.
    ``significant``: the interval excludes 0."""
    diff = cluster_bootstrap(lambda m: statistic_a(m) - statistic_b(m), n_clusters, n_resamples, confidence, method,
                             seed, batch)
    significant = bool(diff.low > 0 or diff.high < 0)
    return Interval(**{**diff.as_dict(), "method": f"paired {diff.method}", "significant": significant})


def seed_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Student-t interval of the mean of ``values`` measured with different seeds (runs of one
    configuration): mean +- t_{n-1} s / sqrt(n)."""
    if not 0 < confidence < 1:
        raise InputError(f"confidence must lie in (0, 1), got {confidence}")
    x = np.asarray(values, dtype=np.float64).ravel()
    if len(x) < 2 or not np.isfinite(x).all():
        raise InputError(f"an interval over seeds needs at least 2 finite values, got {x.tolist()}")
    mean, sem = float(x.mean()), float(scipy.stats.sem(x))
    low, high = (mean, mean) if sem == 0 else scipy.stats.t.interval(confidence, len(x) - 1, loc=mean, scale=sem)
    return Interval(mean, float(low), float(high), confidence, "t interval over seeds", len(x), None, sem)


def scene_statistic(statistic: Callable[[np.ndarray], np.ndarray],
                    scene_of_keyframe: Sequence[int]) -> Callable[[np.ndarray], np.ndarray]:
    """``statistic`` of keyframe multiplicities [..., K] as a statistic of scene multiplicities
    [..., S]: a scene drawn m times brings each of its keyframes m times (keyframes nested in scenes).
    ``scene_of_keyframe`` [K]: each keyframe's scene in [0, S)."""
    index = np.asarray(scene_of_keyframe, dtype=np.int64)
    return lambda m: statistic(np.asarray(m)[..., index])


def refusal(n_scenes: int, minimum: int = MIN_SCENES) -> str | None:
    """Why no interval over ``n_scenes`` scenes is given, or None when one is."""
    if n_scenes < minimum:
        return (f"{n_scenes} scene{'s' if n_scenes != 1 else ''}: an interval needs at least {minimum} scenes "
                "(keyframes of one scene are not independent); per-scene values instead")
    return None


def resample_multiplicities(n_clusters: int, n_resamples: int, seed: int = 0) -> np.ndarray:
    """float64 [n_resamples, n_clusters]: cluster multiplicities of ``n_resamples`` draws of
    ``n_clusters`` clusters with replacement. The same arguments give the same draws, so statistics of
    different checkpoints (and the teacher) evaluated on them are paired resample by resample."""
    ids = np.random.default_rng(seed).integers(0, n_clusters, (n_resamples, n_clusters))
    return multiplicities(ids, n_clusters)


def two_sided_bootstrap_p(replicates: np.ndarray) -> float:
    """Two-sided p of "the difference is 0" from its bootstrap replicates [B] (the percentile
    interval's duality: the largest alpha whose interval still excludes 0): 2 min(P*(d <= 0),
    P*(d >= 0)), at least 1/B and at most 1."""
    d = np.asarray(replicates, dtype=np.float64)
    d = d[np.isfinite(d)]
    if not len(d):
        return float("nan")
    tail = min(float((d <= 0).mean()), float((d >= 0).mean()))
    return float(min(1.0, max(2 * tail, 1 / len(d))))


@dataclass(frozen=True)
class TwoStage(Interval):
    """An :class:`Interval` with the bootstrap p of "the value is 0"."""

    p: float | None = None


def two_stage_bootstrap(observed: Sequence[float], replicates: np.ndarray, n_resamples: int | None = None,
                        confidence: float = 0.95, seed: int = 0) -> Interval:
    """The mean over seeds of a per-seed value (e.g. a paired difference of two losses, or a
    student's value minus the teacher's), with a two-stage bootstrap interval over seeds and scenes:
    ``observed`` [R] is each seed's value on the evaluation set, ``replicates`` [R, B] its value on B
    scene resamples shared by every seed (:func:`resample_multiplicities` with one seed), so what the
    seeds share (which scenes are hard) stays paired. Each of the B replicates draws R seeds with
    replacement (stage 1) and takes their values on that scene resample (stage 2): both sources of
    variance enter (Davison & Hinkley 1997, sec. 3.8; Field & Welsh 2007). With few seeds a percentile
    interval of these replicates is too narrow (their spread is about (R-1)/R of the mean's, and their
    tails are normal-like where R seeds give t_{R-1}: 18% false "holds" at 5 seeds on data where nothing
    holds), so the replicates give the standard error ``stderr``, inflated by R/(R-1), and the interval
    and the p of "mean = 0" use Student's t with R - 1 degrees of freedom: ``value +- t se``,
    ``p = 2 t_{R-1}.sf(|value| / se)`` (at 5 seeds and 12 scenes: 4.3% false rejections at 5%)."""
    x = np.asarray(observed, dtype=np.float64)
    reps = np.asarray(replicates, dtype=np.float64)
    if reps.ndim != 2 or reps.shape[0] != len(x):
        raise InputError(f"replicates must be [seeds, resamples] with {len(x)} seeds, got {reps.shape}")
    if len(x) < 2:
        raise InputError(f"a two-stage bootstrap needs at least 2 seeds, got {len(x)}")
    if not 0 < confidence < 1:
        raise InputError(f"confidence must lie in (0, 1), got {confidence}")
    b = reps.shape[1] if n_resamples is None else n_resamples
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, len(x), (b, len(x)))
    column = np.arange(b) % reps.shape[1]
    stage = reps[seeds, column[:, None]].mean(1)
    finite = stage[np.isfinite(stage)]
    value = float(x.mean())
    if len(finite) < 2 or not math.isfinite(value):
        return TwoStage(value, float("nan"), float("nan"), confidence, "two-stage bootstrap over seeds and scenes",
                        len(x), b, None, None, None)
    se = float(np.std(finite, ddof=1)) * math.sqrt(len(x) / (len(x) - 1))
    if se == 0:
        low = high = value
        p = 1.0 if value == 0 else 0.0
    else:
        half = float(scipy.stats.t.ppf((1 + confidence) / 2, len(x) - 1)) * se
        low, high = value - half, value + half
        p = float(2 * scipy.stats.t.sf(abs(value) / se, len(x) - 1))
    return TwoStage(value, low, high, confidence, "two-stage bootstrap over seeds and scenes (t, R - 1 df)", len(x),
                    b, se, bool(low > 0 or high < 0), p)


def significance_level(confidence: float) -> float:
    """The test level of a confidence (0.95 -> 0.05), exact to 12 decimals: ``1 - 0.95`` is
    0.050000000000000044 in floating point, which would let a p of exactly 0.05 pass ``p < level``."""
    return round(1 - confidence, 12)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (Holm 1979), in the input order: the i-th smallest of the m
    p-values times (m - i + 1), made monotone and capped at 1. None (no test) stays None and does not
    count in m. Controls the family-wise error rate under any dependence."""
    known = [(p, i) for i, p in enumerate(pvalues) if p is not None and math.isfinite(p)]
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(known)):
        running = max(running, min(1.0, (len(known) - rank) * p))
        out[i] = running
    return out


def sign_flip_p(differences: Sequence[float]) -> float | None:
    """Two-sided p of "the mean difference is 0" by flipping signs (a permutation test over seeds,
    distribution-free; exact: all 2^n sign patterns for n <= 13, scipy.stats.permutation_test). Its
    smallest value is 2 / 2^n: 0.25 for 3 seeds, 0.0625 for 5. None for fewer than 2 values."""
    d = np.asarray([v for v in differences if v is not None], dtype=np.float64)
    if len(d) < 2 or not np.isfinite(d).all():
        return None
    res = scipy.stats.permutation_test((d,), lambda x, axis=-1: np.mean(x, axis=axis), permutation_type="samples",
                                       alternative="two-sided", n_resamples=9999, vectorized=True,
                                       rng=np.random.default_rng(0))
    return float(res.pvalue)


def t_test_p(differences: Sequence[float]) -> float | None:
    """Two-sided p of a one-sample t test of "the mean is 0" (the seed t interval's test); None for
    fewer than 2 values, 1 when every value is 0."""
    d = np.asarray([v for v in differences if v is not None], dtype=np.float64)
    if len(d) < 2 or not np.isfinite(d).all():
        return None
    if np.ptp(d) == 0:
        return 1.0 if d[0] == 0 else 0.0
    return float(scipy.stats.ttest_1samp(d, 0.0).pvalue)


def fisher_z_interval(r: float, n: int, confidence: float = 0.95, spearman: bool = False) -> tuple[float, float]:
    """Interval of a correlation by Fisher's z: tanh(atanh r +- z_{(1+c)/2} se), se = 1/sqrt(n-3)
    for Pearson's r and sqrt((1 + r^2/2)/(n-3)) for Spearman's rho (Bonett & Wright 2000). With
    n <= 3 nothing bounds it: (-1, 1)."""
    if n <= 3 or not math.isfinite(r):
        return (-1.0, 1.0)
    if abs(r) >= 1 - 1e-12:  # a perfect (rank) correlation, up to rounding: z is infinite
        return (float(np.sign(r)), float(np.sign(r)))
    se = math.sqrt(((1 + r * r / 2) if spearman else 1.0) / (n - 3))
    half = scipy.stats.norm.ppf((1 + confidence) / 2) * se
    z = math.atanh(r)
    return (math.tanh(z - half), math.tanh(z + half))


__all__ = ["Interval", "METHODS", "MIN_SCENES", "MIN_SEEDS", "TwoStage", "cluster_bootstrap", "fisher_z_interval",
           "holm", "multiplicities", "paired_difference", "refusal", "resample_multiplicities", "scene_statistic",
           "seed_interval", "sign_flip_p", "t_test_p", "two_sided_bootstrap_p", "two_stage_bootstrap"]
