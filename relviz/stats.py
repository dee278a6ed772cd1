"""Uncertainty of a statistic: bootstrap intervals over clusters (keyframes), intervals over seeds,
and the paired comparison of two statistics measured on the same clusters.

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


__all__ = ["Interval", "METHODS", "cluster_bootstrap", "fisher_z_interval", "multiplicities", "paired_difference",
           "seed_interval"]
