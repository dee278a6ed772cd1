"""Gap vs performance, the paper's headline analysis: the structural gap between each student and the
teacher (|U - U_t|, |T - T_t|, G and a combined distance) against zero-shot and few-shot mIoU, with
Pearson and Spearman correlations, their confidence intervals, n and p-values, over checkpoints.

The combined distance puts the three gaps on one scale by their largest possible values (U lies in
[0, 2t] = [0, 4] for t = 2, T in [-1, 1], G in [0, 2] for unit features), so it does not depend on
which checkpoints are compared: ``d = sqrt(((dU / 4)^2 + (dT / 2)^2 + (G / 2)^2) / 3)``, in [0, 1].
"""

from __future__ import annotations

import math
import warnings
from typing import Mapping, Sequence

import numpy as np
import scipy.stats

from relviz.errors import InputError
from relviz.stats import fisher_z_interval

RANGES = {"uniformity": 4.0, "tolerance": 2.0, "gap": 2.0}  # the largest value each gap can take
MEASURES = ("uniformity_gap", "tolerance_gap", "gap", "structural_distance")
PERFORMANCE = ("zeroshot_miou", "fewshot_miou")
DEFINITIONS = {
    "uniformity_gap": "|U - U_teacher| on the protocol sample",
    "tolerance_gap": "|T - T_teacher| on the protocol sample",
    "gap": "G between the student's and the teacher's features at the sampled points",
    "structural_distance": "sqrt(((|dU| / 4)^2 + (|dT| / 2)^2 + (G / 2)^2) / 3): each gap over its largest "
                           "possible value, in [0, 1]",
    "pearson": "scipy.stats.pearsonr; interval by Fisher z (its confidence_interval)",
    "spearman": "scipy.stats.spearmanr; interval by Fisher z with Bonett & Wright's (2000) variance "
                "(1 + rho^2 / 2) / (n - 3); (-1, 1) when n <= 3",
    "p_permutation": "P(|r*| >= |r|) over pairings, scipy.stats.permutation_test (exact for n <= 7, else 9999 "
                     "random pairings)",
}
MIN_CHECKPOINTS = 3


def _number(row: Mapping, key: str) -> float | None:
    v = row.get(key)
    return float(v) if v is not None and math.isfinite(float(v)) else None


def gap_measures(row: Mapping, teacher: Mapping) -> dict:
    """The four gap measures of one checkpoint row (``uniformity``, ``tolerance``, ``gap``) against
    the teacher's ``uniformity`` and ``tolerance`` on the same sample."""
    values = {k: _number(row, k) for k in ("uniformity", "tolerance", "gap")}
    ref = {k: _number(teacher, k) for k in ("uniformity", "tolerance")}
    missing = [k for k, v in {**values, **{f"teacher {k}": v for k, v in ref.items()}}.items() if v is None]
    if missing:
        raise InputError(f"checkpoint {row.get('checkpoint', '?')!r}: no finite {', '.join(missing)}")
    du, dt = abs(values["uniformity"] - ref["uniformity"]), abs(values["tolerance"] - ref["tolerance"])
    combined = math.sqrt(((du / RANGES["uniformity"]) ** 2 + (dt / RANGES["tolerance"]) ** 2
                          + (values["gap"] / RANGES["gap"]) ** 2) / 3)
    return {"uniformity_gap": du, "tolerance_gap": dt, "gap": values["gap"], "structural_distance": combined}


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def correlation(x: Sequence[float], y: Sequence[float], confidence: float = 0.95) -> dict:
    """Pearson's r and Spearman's rho of x and y with intervals, p-values and n (see DEFINITIONS);
    a coefficient is None when one variable is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    out: dict = {"n": n}
    constant = np.ptp(x) == 0 or np.ptp(y) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.stats.ConstantInputWarning)
        pearson = scipy.stats.pearsonr(x, y)
        spearman = scipy.stats.spearmanr(x, y)
    if constant:
        return {**out, "pearson": None, "spearman": None, "note": "a variable is constant: no correlation"}
    low, high = pearson.confidence_interval(confidence_level=confidence)
    out["pearson"] = {"r": float(pearson.statistic), "low": float(low), "high": float(high),
                      "p": _finite(pearson.pvalue),
                      "p_permutation": _permutation_p(x, y)}
    rho = float(spearman.statistic)
    low, high = fisher_z_interval(rho, n, confidence, spearman=True)
    out["spearman"] = {"rho": rho, "low": low, "high": high, "p": _finite(spearman.pvalue),
                       "p_permutation": _permutation_p(scipy.stats.rankdata(x), scipy.stats.rankdata(y))}
    return out


def _pearson(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    a = a - a.mean(axis, keepdims=True)
    b = b - b.mean(axis, keepdims=True)
    return (a * b).sum(axis) / np.sqrt((a * a).sum(axis) * (b * b).sum(axis))


def _permutation_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided p of Pearson's r of x and y (of their ranks: Spearman's rho) under random pairings,
    P(|r*| >= |r|): x is permuted against a fixed y (one sample, as scipy's docs do for correlations),
    so every one of the n! pairings is enumerated while n! <= 9999, i.e. n <= 7."""
    res = scipy.stats.permutation_test((x,), lambda a, axis=-1: np.abs(_pearson(a, y, axis)),
                                       permutation_type="pairings", alternative="greater", n_resamples=9999,
                                       vectorized=True, rng=np.random.default_rng(0))
    return float(res.pvalue)


def gap_vs_performance(rows: Sequence[Mapping], teacher: Mapping, confidence: float = 0.95) -> dict:
    """Gap measures of every checkpoint row (``checkpoint``, ``uniformity``, ``tolerance``, ``gap``,
    ``zeroshot_miou`` and, when known, ``fewshot_miou``: e.g. the rows of
    :func:`relviz.eval.report.comparison_rows`) against the ``teacher`` row, and the correlation of
    each measure with each performance over the checkpoints that have it. Refuses fewer than 3
    checkpoints. Returns {"measures": [per checkpoint, with the ``sample`` of its U, T and G when the row
    names it], "correlations": [per measure and performance],
    "teacher", "confidence", "definitions"}."""
    if len(rows) < MIN_CHECKPOINTS:
        names = ", ".join(str(r.get("checkpoint", "?")) for r in rows) or "none"
        raise InputError(f"gap vs performance needs at least {MIN_CHECKPOINTS} checkpoints, got {len(rows)} "
                         f"({names})")
    if not 0 < confidence < 1:
        raise InputError(f"confidence must lie in (0, 1), got {confidence}")
    measures = [{"checkpoint": r.get("checkpoint"), **gap_measures(r, teacher),
                 **{p: _number(r, p) for p in PERFORMANCE}, "sample": (r.get("sample") or {}).get("uniformity")}
                for r in rows]
    correlations = []
    for perf in PERFORMANCE:
        have = [m for m in measures if m[perf] is not None]
        for measure in MEASURES:
            entry = {"measure": measure, "performance": perf}
            if len(have) < MIN_CHECKPOINTS:
                correlations.append({**entry, "n": len(have), "pearson": None, "spearman": None,
                                     "note": f"{len(have)} checkpoint(s) with {perf}; {MIN_CHECKPOINTS} needed"})
                continue
            correlations.append({**entry, **correlation([m[measure] for m in have], [m[perf] for m in have],
                                                        confidence)})
    return {"measures": measures, "correlations": correlations,
            "teacher": {k: _number(teacher, k) for k in ("uniformity", "tolerance")}, "confidence": confidence,
            "definitions": DEFINITIONS}


__all__ = ["DEFINITIONS", "MEASURES", "PERFORMANCE", "correlation", "gap_measures", "gap_vs_performance"]
