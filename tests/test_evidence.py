"""Gap vs performance (relviz/eval/evidence.py), class relations (relviz/eval/relations.py) and the
comparison rows (relviz/eval/report.py), against independent references: scipy.stats, exact
enumeration, the HSIC formula with explicit centring matrices, naive loops."""

import csv
import io
import itertools
import math

import numpy as np
import pytest
import scipy.stats
import torch

from fp_bounds import gamma
from relviz.errors import InputError
from relviz.eval.evidence import gap_vs_performance
from relviz.eval.relations import centroid_similarity, class_relations, linear_cka
from relviz.eval.report import TEACHER, comparison_rows, to_csv, to_markdown

KEYS = ("checkpoint", "uniformity", "tolerance", "gap", "zeroshot_miou", "fewshot_miou")
ROWS = [dict(zip(KEYS, values)) for values in (  # seven configurations; the first has no few-shot result
    ("a", 1.80, 0.62, 0.40, 0.21, None),
    ("b", 1.30, 0.85, 0.31, 0.30, 0.33),
    ("c", 1.58, 0.71, 0.12, 0.36, 0.38),
    ("d", 1.20, 0.90, 0.35, 0.26, 0.30),
    ("e", 1.49, 0.77, 0.18, 0.33, 0.35),
    ("f", 1.66, 0.69, 0.25, 0.31, 0.36),
    ("g", 1.41, 0.80, 0.22, 0.29, 0.31))]
TEACHER_ROW = {"uniformity": 1.54, "tolerance": 0.73}


def _exact_permutation_p(x, y) -> float:
    """Two-sided p of Pearson's r over all n! pairings, by enumeration."""
    observed = abs(np.corrcoef(x, y)[0, 1])
    rs = [abs(np.corrcoef(x, np.array(p))[0, 1]) for p in itertools.permutations(y)]
    # rounding: permuted r equal to the observed one up to a few ulps count as at least as extreme
    return sum(r >= observed * (1 - 1e-12) for r in rs) / len(rs)


def test_gap_vs_performance_equals_scipy_on_the_gap_measures():
    out = gap_vs_performance(ROWS, TEACHER_ROW)
    du = [abs(r["uniformity"] - 1.54) for r in ROWS]
    dt = [abs(r["tolerance"] - 0.73) for r in ROWS]
    g = [r["gap"] for r in ROWS]
    expected = {"uniformity_gap": du, "tolerance_gap": dt, "gap": g}
    assert {c["measure"] for c in out["correlations"]} == set(expected)  # no composite distance
    for m, row in zip(out["measures"], ROWS):
        assert m["checkpoint"] == row["checkpoint"]
    z = scipy.stats.norm.ppf(0.975)
    # tolerance 1e-12: the measures differ from the hand-computed ones by at most 4 gamma(4) * 0.6
    # (~3e-16); r, rho, the intervals and p are smooth in them with slopes below 2 / (sd * sqrt(n))
    # ~ 100 here (every measure's sd >= 0.02), so they agree within ~3e-14; the permutation p-values
    # are counts of pairings, equal unless a pairing ties with the observed r (none does here)
    for c in out["correlations"]:
        have = [i for i, r in enumerate(ROWS) if r[c["performance"]] is not None]
        x = [expected[c["measure"]][i] for i in have]
        y = [ROWS[i][c["performance"]] for i in have]
        n = len(have)
        assert c["n"] == n == (7 if c["performance"] == "zeroshot_miou" else 6)
        # the measures are |differences| of two-decimal values: a few ulps from the hand-computed ones
        assert [m[c["measure"]] for m in out["measures"] if m[c["performance"]] is not None] == \
            pytest.approx(x, abs=4 * gamma(4))
        pearson = scipy.stats.pearsonr(x, y)
        assert c["pearson"]["r"] == pytest.approx(pearson.statistic, abs=1e-12)
        assert c["pearson"]["p"] == pytest.approx(pearson.pvalue, abs=1e-12)
        # Fisher z by hand: tanh(atanh r +- z / sqrt(n - 3))
        r = pearson.statistic
        assert (c["pearson"]["low"], c["pearson"]["high"]) == pytest.approx(
            (math.tanh(math.atanh(r) - z / math.sqrt(n - 3)), math.tanh(math.atanh(r) + z / math.sqrt(n - 3))),
            abs=1e-12)
        rho = scipy.stats.spearmanr(x, y).statistic
        se = math.sqrt((1 + rho ** 2 / 2) / (n - 3))  # Bonett & Wright (2000)
        assert c["spearman"]["rho"] == pytest.approx(rho, abs=1e-12)
        if abs(rho) < 1:
            assert (c["spearman"]["low"], c["spearman"]["high"]) == pytest.approx(
                (math.tanh(math.atanh(rho) - z * se), math.tanh(math.atanh(rho) + z * se)), abs=1e-12)
        else:
            assert c["spearman"]["low"] == c["spearman"]["high"] == rho
        # every pairing enumerated (n <= 7): the exact permutation p-values
        assert c["pearson"]["p_permutation"] == pytest.approx(_exact_permutation_p(x, y), abs=1e-12)
        assert c["spearman"]["p_permutation"] == pytest.approx(
            _exact_permutation_p(scipy.stats.rankdata(x), scipy.stats.rankdata(y)), abs=1e-12)


def test_gap_vs_performance_refuses_fewer_than_three_checkpoints_and_says_when_few_shot_is_short():
    with pytest.raises(InputError, match="at least 3 configurations, got 2 \\(a, b\\)"):
        gap_vs_performance(ROWS[:2], TEACHER_ROW)
    with pytest.raises(InputError, match="'a'.*gap"):
        gap_vs_performance([{**ROWS[0], "gap": None}] + ROWS[1:], TEACHER_ROW)
    out = gap_vs_performance(ROWS[:3], TEACHER_ROW)  # a has no few-shot: 2 of 3 remain
    few = [c for c in out["correlations"] if c["performance"] == "fewshot_miou"]
    assert all(c["pearson"] is None and c["n"] == 2 and "3 needed" in c["note"] for c in few)
    zero = next(c for c in out["correlations"] if c["performance"] == "zeroshot_miou")
    # n = 3: a coefficient, but no interval or p that cannot exist at that n; the reason instead
    assert zero["n"] == 3 and zero["pearson"]["r"] is not None
    assert all(zero[k][f] is None for k in ("pearson", "spearman") for f in ("low", "high", "p", "p_permutation"))
    assert "n = 3 configurations" in zero["note"] and "only 6 pairings" in zero["note"]


def test_runs_of_one_configuration_count_once_and_their_relation_is_reported_apart():
    """Three configurations of three runs each: the between-configuration r is Pearson's r of the
    configuration means (n = 3), and the within relation is r of the runs' values minus their
    configuration's means (n = 9 runs, 6 degrees of freedom); a pseudo-replicated r over the 9 runs is
    never the one reported."""
    rng = np.random.default_rng(0)
    rows = []
    for config, (u, perf) in enumerate(((1.3, 0.40), (1.6, 0.35), (1.9, 0.30))):
        for seed in range(3):
            rows.append({"checkpoint": f"c{config}-s{seed}", "configuration": f"c{config}",
                         "uniformity": u + rng.normal(0, 0.05), "tolerance": 0.8, "gap": 0.2,
                         "zeroshot_miou": perf + rng.normal(0, 0.01), "fewshot_miou": None})
    out = gap_vs_performance(rows, TEACHER_ROW)
    c = next(x for x in out["correlations"] if x["measure"] == "uniformity_gap" and x["performance"] == "zeroshot_miou")
    du = np.array([abs(r["uniformity"] - 1.54) for r in rows]).reshape(3, 3)
    perf = np.array([r["zeroshot_miou"] for r in rows]).reshape(3, 3)
    assert c["n"] == 3 and c["pearson"]["r"] == pytest.approx(np.corrcoef(du.mean(1), perf.mean(1))[0, 1], abs=1e-12)
    within = np.corrcoef((du - du.mean(1, keepdims=True)).ravel(), (perf - perf.mean(1, keepdims=True)).ravel())[0, 1]
    assert c["within"]["r"] == pytest.approx(within, abs=1e-12)
    assert c["within"]["n"] == 9 and c["within"]["df"] == 6 and c["within"]["configurations"] == 3
    assert [x["runs"] for x in out["configurations"]] == [3, 3, 3]


def _hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA as normalised HSIC with linear kernels and the explicit centring matrix H = I - 11^T / n."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h)  # noqa: E731
    return hsic(k, l_) / math.sqrt(hsic(k, k) * hsic(l_, l_))


def test_linear_cka_is_normalised_hsic_and_invariant_to_rotation_and_scale():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    y = x @ torch.randn(6, 5, generator=g, dtype=torch.float64) + 0.5 * torch.randn(40, 5, generator=g,
                                                                                        dtype=torch.float64)
    # both are ratios of sums of n^2 products of float64 values of size ~ 1 to 10: relative errors
    # within a few gamma(n^2 d), and CKA <= 1
    bound = 4 * gamma(40 * 40 * 6)
    assert linear_cka(x, y) == pytest.approx(_hsic_cka(x.numpy(), y.numpy()), abs=bound)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    assert linear_cka(x, 3.0 * y @ q) == pytest.approx(linear_cka(x, y), abs=bound)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=bound)
    with pytest.raises(InputError, match="same points"):
        linear_cka(x, y[:10])


def test_centroid_similarity_equals_a_naive_loop():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(30, 4, generator=g, dtype=torch.float64)
    labels = torch.tensor([3, 1, 7] * 10)
    classes, sim = centroid_similarity(z, labels)
    assert classes == [1, 3, 7]
    for i, a in enumerate(classes):
        for j, b in enumerate(classes):
            ca = [sum(z[p, d].item() / z[p].norm().item() for p in range(30) if labels[p] == a) / 10 for d in range(4)]
            cb = [sum(z[p, d].item() / z[p].norm().item() for p in range(30) if labels[p] == b) / 10 for d in range(4)]
            cos = sum(u * v for u, v in zip(ca, cb)) / math.sqrt(sum(u * u for u in ca) * sum(v * v for v in cb))
            # sums of 10 normalised entries per coordinate in two orders, then a 4-term cosine
            assert sim[i, j].item() == pytest.approx(cos, abs=8 * gamma(14))


def test_class_relations_on_the_protocol_sample():
    from test_stats import _val

    val = _val(seed=4)
    out = class_relations(val, per_class=30, seed=1)
    n = len(out["classes"])
    assert np.allclose(np.diag(np.array(out["student_similarity"])), 1.0, atol=4 * gamma(8))
    assert np.array(out["difference"]) == pytest.approx(
        np.array(out["student_similarity"]) - np.array(out["teacher_similarity"]), abs=0)
    assert 0 <= out["cka"] <= 1 + 1e-12 and out["sample"]["size"] <= 30 * n
    assert set(out["per_class"]["student"]["uniformity"]) == set(out["classes"])


def _structure(u, t, g, miou, low=None) -> dict:
    sample = {"points": "labelled points seen by a camera (one pair per point)", "per_class": 500, "seed": 0,
              "keyframes": 4, "size": 3000, "counts": {1: 500}, "all_pairs_size": 9000, "zeroshot_points": 12000,
              "zeroshot_scope": "all labelled points", "id": "x"}
    out = {"uniformity": u, "tolerance": t, "gap": g, "gap_all_pairs": g / 2, "zeroshot_miou": miou, "sample": sample}
    if low is not None:
        out["intervals"] = {k: {"value": out[k], "low": out[k] - low, "high": out[k] + low}
                            for k in ("uniformity", "tolerance", "gap", "gap_all_pairs", "zeroshot_miou")}
    return out


def test_comparison_rows_carry_values_intervals_and_samples():
    """Values, intervals and samples of every column; the few-shot column's interval is the one
    :func:`segmentation_scores` gives (over its scored frames)."""
    from relviz.eval.fewshot import segmentation_scores

    confusion_a, confusion_b = np.zeros((17, 17), np.int64), np.zeros((17, 17), np.int64)
    confusion_a[1, 1], confusion_a[1, 2], confusion_a[2, 2] = 8, 2, 5  # two classes, confused differently
    confusion_b[1, 1], confusion_b[2, 2], confusion_b[2, 1] = 3, 4, 4  # on two frames: the interval has width
    entries = [{"checkpoint": "rel", "loss": "relational", "structure": _structure(1.5, 0.7, 0.2, 0.35, 0.01),
                "fewshot": {"method": "linear_probe", **segmentation_scores(np.stack([confusion_a, confusion_b])),
                            "fraction": 0.01, "frames": ["f1", "f2"]}},
               {"checkpoint": "con", "loss": "contrastive", "structure": _structure(1.9, 0.5, 0.6, 0.25),
                "fewshot": None}]
    rows = comparison_rows(entries, _structure(1.54, 0.73, 0.0, 0.5))
    assert [r["checkpoint"] for r in rows] == ["rel", "con", TEACHER]
    assert (rows[0]["uniformity"], rows[0]["uniformity_low"], rows[0]["uniformity_high"]) == (1.5, 1.49, 1.51)
    few = entries[0]["fewshot"]
    assert rows[1]["uniformity_low"] is None and rows[1]["fewshot_miou"] is None
    # two frames of unknown scenes: no interval (the reason is in the result); with their scenes, 12 of them,
    # the interval over scenes is the row's
    assert rows[0]["fewshot_miou"] == few["miou"] and few["miou_interval"] is None and few["interval_refused"]
    assert rows[0]["fewshot_miou_low"] is None
    pick = np.random.default_rng(0).integers(0, 2, 24)  # scenes of two frames each, a and b mixed differently
    frames = np.stack([(confusion_a, confusion_b)[i] for i in pick])
    scored = segmentation_scores(frames, scenes=np.repeat(np.arange(12), 2))
    entries[0]["fewshot"] = {**entries[0]["fewshot"], **scored}
    rows = comparison_rows(entries, _structure(1.54, 0.73, 0.0, 0.5))
    assert scored["miou_interval"]["n"] == 12 and (rows[0]["fewshot_miou_low"], rows[0]["fewshot_miou_high"]) == (
        scored["miou_interval"]["low"], scored["miou_interval"]["high"])
    assert rows[0]["fewshot_miou_low"] < rows[0]["fewshot_miou_high"]
    assert "3,000 points: up to 500 per class (seed 0)" in rows[0]["sample"]["uniformity"]
    assert "1% of the training frames (2 frames)" in rows[0]["sample"]["fewshot_miou"]
    report = {"rows": rows, "paired": [], "evidence": None,
              "protocol": {"version": "v1.0-mini", "split": "mini_val", "keyframes": 4, "scenes": 12,
                           "n_resamples": 100, "confidence": 0.95}}
    assert "| rel | relational | 1.500 [1.490, 1.510] |" in to_markdown(report)
    # the teacher's zero-shot sits only in the paired-points column, beside the students' on the same points
    assert rows[2]["zeroshot_miou"] is None and rows[2]["zeroshot_miou_devkit"] is None
    parsed = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert float(parsed[0]["uniformity_high"]) == 1.51 and parsed[1]["uniformity_low"] == ""
    with pytest.raises(InputError, match="before the analysis protocol"):
        comparison_rows([{"checkpoint": "old", "structure": {"uniformity": 1.0}}])
