"""Gap vs performance, the paper's headline analysis: the structural gap between each student and the
teacher (|U - U_t| and |T - T_t|, each a measure of its own, and G as its own claim) against zero-shot
and few-shot mIoU, with Pearson and Spearman correlations.

The unit is the configuration (a loss and its settings), not the run: runs of one configuration with
different seeds are not independent points of the relation between configurations, so rows that name a
``configuration`` are averaged into it first and n is the number of configurations
(``between``). The relation among the runs of a configuration is reported beside it (``within``:
each run's values minus its configuration's means, pooled), never mixed into n. An interval or a
p-value is given only where it can exist: from :data:`MIN_FOR_INFERENCE` configurations on (Fisher's
z needs n > 3, and an exact permutation test has only n! pairings: 6 for n = 3, 24 for n = 4); below that the
coefficient alone, with the reason. There is no composite distance: its scaling made it G in disguise.
"""

from __future__ import annotations

import math
import warnings
from typing import Mapping, Sequence

import numpy as np
import scipy.stats

from relviz.errors import InputError
from relviz.stats import fisher_z_interval

MEASURES = ("uniformity_gap", "tolerance_gap", "gap")
PERFORMANCE = ("zeroshot_miou", "fewshot_miou")
DEFINITIONS = {
    "uniformity_gap": "|U - U_teacher| on the protocol sample",
    "tolerance_gap": "|T - T_teacher| on the protocol sample",
    "gap": "G between the student's and the teacher's features at the sampled points",
    "pearson": "scipy.stats.pearsonr; interval by Fisher z (its confidence_interval)",
    "spearman": "scipy.stats.spearmanr; interval by Fisher z with Bonett & Wright's (2000) variance "
                "(1 + rho^2 / 2) / (n - 3); (-1, 1) when n <= 3",
    "p_permutation": "P(|r*| >= |r|) over pairings, scipy.stats.permutation_test (exact for n <= 7, else 9999 "
                     "random pairings)",
}
MIN_CHECKPOINTS = 3
MIN_FOR_INFERENCE = 5  # configurations from which an interval and a p-value are given


def _number(row: Mapping, key: str) -> float | None:
    v = row.get(key)
    return float(v) if v is not None and math.isfinite(float(v)) else None


def gap_measures(row: Mapping, teacher: Mapping) -> dict:
    """The gap measures of one checkpoint row (``uniformity``, ``tolerance``, ``gap``) against the
    teacher's ``uniformity`` and ``tolerance`` on the same sample."""
    values = {k: _number(row, k) for k in ("uniformity", "tolerance", "gap")}
    ref = {k: _number(teacher, k) for k in ("uniformity", "tolerance")}
    missing = [k for k, v in {**values, **{f"teacher {k}": v for k, v in ref.items()}}.items() if v is None]
    if missing:
        raise InputError(f"checkpoint {row.get('checkpoint', '?')!r}: no finite {', '.join(missing)}")
    du, dt = abs(values["uniformity"] - ref["uniformity"]), abs(values["tolerance"] - ref["tolerance"])
    return {"uniformity_gap": du, "tolerance_gap": dt, "gap": values["gap"]}


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def no_inference_reason(n: int, unit: str = "configurations") -> str | None:
    """Why no interval or p-value is given for a correlation over ``n`` units, or None."""
    if n < MIN_FOR_INFERENCE:
        return (f"n = {n} {unit}: no interval or p-value (at least {MIN_FOR_INFERENCE} needed; an exact "
                f"permutation test has only {math.factorial(n)} pairings and Fisher's z needs n > 3)")
    return None


def correlation(x: Sequence[float], y: Sequence[float], confidence: float = 0.95, unit: str = "configurations"
                ) -> dict:
    """Pearson's r and Spearman's rho of x and y with intervals, p-values and n (see DEFINITIONS);
    a coefficient is None when one variable is constant; below :data:`MIN_FOR_INFERENCE` points the
    coefficients alone (``low``, ``high`` and the p-values None) and ``note`` says why."""
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
    why = no_inference_reason(n, unit)
    if why:
        none = {"low": None, "high": None, "p": None, "p_permutation": None}
        return {**out, "pearson": {"r": float(pearson.statistic), **none},
                "spearman": {"rho": float(spearman.statistic), **none}, "note": why}
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


def _within(measures: list[dict], measure: str, perf: str) -> dict | None:
    """The relation among runs of one configuration: every run's (measure, performance) minus its
    configuration's means, pooled over the configurations with 2 or more runs; Pearson's r of the
    residuals, n = runs in them, and the residual degrees of freedom (runs - configurations)."""
    groups: dict = {}
    for m in measures:
        if m[perf] is not None:
            groups.setdefault(m["configuration"], []).append((m[measure], m[perf]))
    groups = {k: v for k, v in groups.items() if len(v) >= 2}
    if not groups:
        return None
    xs, ys = [], []
    for values in groups.values():
        a = np.asarray(values, dtype=np.float64)
        xs += list(a[:, 0] - a[:, 0].mean())
        ys += list(a[:, 1] - a[:, 1].mean())
    x, y = np.asarray(xs), np.asarray(ys)
    n, df = len(x), len(x) - len(groups)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"n": n, "configurations": len(groups), "df": df, "r": None, "note": "a variable is constant"}
    return {"n": n, "configurations": len(groups), "df": df, "r": float(_pearson(x, y))}


def gap_vs_performance(rows: Sequence[Mapping], teacher: Mapping, confidence: float = 0.95) -> dict:
    """Gap measures of every checkpoint row (``checkpoint``, ``uniformity``, ``tolerance``, ``gap``,
    ``zeroshot_miou`` and, when known, ``fewshot_miou``; ``configuration`` names the configuration a
    run belongs to, default its own ``checkpoint``) against the ``teacher`` row, and per measure and
    performance: ``between`` configurations (the correlation of the configurations' mean values,
    n = configurations) and ``within`` them (:func:`_within`). Refuses fewer than 3 configurations.
    Returns {"measures": [per checkpoint], "configurations": [per configuration, its means and runs],
    "correlations": [per measure and performance: n, pearson, spearman, note, within], "teacher",
    "confidence", "definitions"}."""
    if not 0 < confidence < 1:
        raise InputError(f"confidence must lie in (0, 1), got {confidence}")
    measures = [{"checkpoint": r.get("checkpoint"), "configuration": r.get("configuration") or r.get("checkpoint"),
                 **gap_measures(r, teacher), **{p: _number(r, p) for p in PERFORMANCE},
                 "sample": (r.get("sample") or {}).get("uniformity")} for r in rows]
    by_config: dict = {}
    for m in measures:
        by_config.setdefault(m["configuration"], []).append(m)
    if len(by_config) < MIN_CHECKPOINTS:
        names = ", ".join(str(c) for c in by_config) or "none"
        raise InputError(f"gap vs performance needs at least {MIN_CHECKPOINTS} configurations, got {len(by_config)} "
                         f"({names}); runs of one configuration count once")

    def mean(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    configurations = [{"configuration": c, "runs": len(ms), **{k: mean([m[k] for m in ms]) for k in MEASURES},
                       **{p: (mean([m[p] for m in ms]) if all(m[p] is not None for m in ms) else None)
                          for p in PERFORMANCE}} for c, ms in by_config.items()]
    correlations = []
    for perf in PERFORMANCE:
        have = [c for c in configurations if c[perf] is not None]
        for measure in MEASURES:
            entry = {"measure": measure, "performance": perf, "within": _within(measures, measure, perf)}
            if len(have) < MIN_CHECKPOINTS:
                correlations.append({**entry, "n": len(have), "pearson": None, "spearman": None,
                                     "note": f"{len(have)} configuration(s) with {perf}; {MIN_CHECKPOINTS} needed"})
                continue
            correlations.append({**entry, **correlation([c[measure] for c in have], [c[perf] for c in have],
                                                        confidence)})
    return {"measures": measures, "configurations": configurations, "correlations": correlations,
            "teacher": {k: _number(teacher, k) for k in ("uniformity", "tolerance")}, "confidence": confidence,
            "definitions": DEFINITIONS}


__all__ = ["DEFINITIONS", "MEASURES", "MIN_FOR_INFERENCE", "PERFORMANCE", "correlation", "gap_measures",
           "format_coefficient", "gap_vs_performance", "no_inference_reason"]


def format_coefficient(c: Mapping | None, key: str) -> str:
    """``+0.52 [+0.10, +0.80], p 0.012`` (p by permutation); the coefficient alone where no interval
    or p can exist at that n (the row's ``note`` says why); ``-`` for none."""
    if c is None:
        return "-"
    text = f"{c[key]:+.2f}"
    if c.get("low") is None:
        return text
    p = c.get("p_permutation")
    return f"{text} [{c['low']:+.2f}, {c['high']:+.2f}]" + ("" if p is None else f", p {p:.3f}")
