"""Uncertainty (relviz/stats.py) and the analysis protocol's metrics with their keyframe sums
(relviz/eval/keyframe_sums.py, relviz/eval/structure.py), against independent references: the
known coverage of a bootstrap interval, direct metrics on the same indices, naive loops."""

import json
import math

import numpy as np
import pytest
import scipy.stats
import torch

from fp_bounds import U64, gamma
from relviz.errors import InputError
from relviz.eval.features import cached_val_features, first_pair_per_point, with_pairs
from relviz.eval.keyframe_sums import confusion_sums, feature_sums
from relviz.eval.structure import (from_json, paired_comparison, protocol_sample, protocol_sums, sample_indices,
                                   structure_metrics, teacher_view)
from relviz.eval.zeroshot import predict_by_text
from relviz.metrics import modality_gap, sample_per_class, tolerance, uniformity
from relviz.segmentation import classes_with_ground_truth, confusion_matrix, iou_per_class, mean_iou, mean_iou_over
from relviz.stats import cluster_bootstrap, multiplicities, paired_difference, seed_interval


def _cluster_data(rng, k: int, size: int, between: float = 1.0, within: float = 1.0):
    """Per-cluster sums and counts of values mu + b_k + e_ki (mu = 0), and the mean as a statistic of
    cluster multiplicities m [..., K]."""
    values = rng.normal(0, between, (k, 1)) + rng.normal(0, within, (k, size))
    sums, counts = values.sum(1), np.full(k, float(size))
    return sums, lambda m: (m @ sums) / (m @ counts)


def test_cluster_bootstrap_covers_the_mean_at_its_nominal_rate():
    """400 data sets of 30 clusters x 5 points with a cluster effect (sd 1) and point noise (sd 1);
    the 95% percentile interval of the mean should cover the true mean 0 about 95% of the time.

    The percentile interval of a mean of K iid cluster means is x_bar +- z s sqrt((K-1)/K) / sqrt(K)
    (the bootstrap's plug-in variance), so its exact coverage is P(|t_{K-1}| <= z sqrt((K-1)/K)) =
    0.936 for K = 30, a little under 0.95 (300 resamples add a little noise to the quantiles). The
    count of covering intervals is Binomial(400, p) with p between 0.936 and 0.95; the band
    [ppf(0.001; 0.936), isf(0.001; 0.95)] = [358, 392] fails a correct bootstrap with probability
    < 0.002. A bootstrap over points instead of clusters has standard error sqrt(2 / 150) against the
    true sqrt(1.2 / 30): coverage P(|Z| < 1.13) = 0.74, about 296 of 400, far below the band."""
    trials, k, size, confidence = 400, 30, 5, 0.95
    z = scipy.stats.norm.ppf((1 + confidence) / 2)
    p_theory = 1 - 2 * scipy.stats.t.sf(z * math.sqrt((k - 1) / k), k - 1)
    low_band = scipy.stats.binom.ppf(0.001, trials, p_theory)
    high_band = scipy.stats.binom.isf(0.001, trials, confidence)
    rng = np.random.default_rng(0)
    covered = 0
    for trial in range(trials):
        _, mean = _cluster_data(rng, k, size)
        iv = cluster_bootstrap(mean, k, n_resamples=300, confidence=confidence, seed=trial)
        covered += iv.low <= 0.0 <= iv.high
    assert low_band <= covered <= high_band, (covered, low_band, high_band)


def test_multiplicities_and_the_value_of_the_data():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 7, (4, 3, 7))
    m = multiplicities(ids, 7)
    naive = np.array([[np.bincount(row, minlength=7) for row in block] for block in ids])
    assert np.array_equal(m, naive)
    sums, mean = _cluster_data(rng, 7, 3)
    iv = cluster_bootstrap(mean, 7, n_resamples=50)
    assert iv.value == mean(np.ones(7)) and iv.low <= iv.high and iv.n == 7
    with pytest.raises(InputError, match="at least 2 clusters"):
        cluster_bootstrap(mean, 1)
    with pytest.raises(InputError, match="method"):
        cluster_bootstrap(mean, 7, method="student")


def test_paired_difference_finds_a_shift_hidden_by_cluster_effects_and_none_between_equals():
    """Two checkpoints on 20 shared keyframes: large keyframe effects (sd 5) common to both, a shift
    of 0.3 and small independent noise (sd 0.1). Pairing cancels the shared effects: the difference's
    interval is about 0.3 +- 2 * 0.1 * sqrt(2 / 20), far from 0, while each checkpoint's own interval
    is about +- 2 * 5 / sqrt(20) = +- 2.2 wide, so the two intervals overlap."""
    rng = np.random.default_rng(2)
    k = 20
    shared = rng.normal(0, 5, k)
    a_sums = shared + rng.normal(0, 0.1, k) + 0.3
    b_sums = shared + rng.normal(0, 0.1, k)

    def a(m):
        return (m @ a_sums) / m.sum(-1)

    def b(m):
        return (m @ b_sums) / m.sum(-1)

    diff = paired_difference(a, b, k, n_resamples=1000)
    assert diff.significant and 0.1 < diff.low < diff.high < 0.5
    ia, ib = cluster_bootstrap(a, k, n_resamples=1000), cluster_bootstrap(b, k, n_resamples=1000)
    assert ia.low < ib.high and ib.low < ia.high  # unpaired, the intervals overlap
    same = paired_difference(a, a, k, n_resamples=200)
    assert (same.value, same.low, same.high, same.significant) == (0.0, 0.0, 0.0, False)


def test_seed_interval_is_the_student_t_interval():
    values = [0.41, 0.37, 0.44, 0.39]
    iv = seed_interval(values, 0.95)
    n, mean = len(values), sum(values) / len(values)
    s = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = scipy.stats.t.ppf(0.975, n - 1) * s / math.sqrt(n)
    # a mean, a variance and a product of a few float64 terms each: relative error within gamma(16)
    # of magnitudes below 1
    assert iv.value == pytest.approx(mean, abs=gamma(16)) and iv.n == 4
    assert iv.low == pytest.approx(mean - half, abs=gamma(16)) and iv.high == pytest.approx(mean + half, abs=gamma(16))
    with pytest.raises(InputError, match="at least 2"):
        seed_interval([0.4])


def _val(n: int = 700, k: int = 5, d: int = 8, classes: int = 6, seed: int = 0, per_scene: int = 1) -> dict:
    """A synthetic val dict (the form gather_val_features returns) in float64: points of k
    keyframes (``per_scene`` consecutive keyframes a scene), labels 0..classes-1 (0 unlabelled), about
    70% of the points paired."""
    g = torch.Generator().manual_seed(seed)
    keyframe = torch.randint(0, k, (n,), generator=g).sort().values
    labels = torch.randint(0, classes, (n,), generator=g)
    pair_index = (torch.rand(n, generator=g) < 0.7).nonzero().flatten()
    return with_pairs({"features": torch.randn(n, d, generator=g, dtype=torch.float64), "labels": labels,
                       "keyframe": keyframe, "pair_index": pair_index,
                       "pair_teacher": torch.randn(len(pair_index), d, generator=g, dtype=torch.float64),
                       "keyframe_scene": torch.arange(k) // per_scene, "keyframe_index": torch.arange(k) * 3})


def _bounds(n: int, d: int, t: float = 2.0) -> dict:
    """Float64 bounds for the protocol's metrics against metrics.py on the same n points of dimension
    d. U: each kernel term exp(-t d2) with d2 = |z_i|^2 + |z_j|^2 - 2 z_i.z_j of unit vectors is
    computed with an error within gamma(d + 2) * 4 in d2, so a relative error within 4 t gamma(d + 2)
    + u; two implementations (blocked differently) differ by twice that, and their positive sums of
    n^2 terms by 2 gamma(n^2) relatively; U = -log(mean) turns a relative error into an absolute one.
    T_c and G: sums of n unit vectors (entries within n), squared or normed: within 4 gamma(n + d)
    times the magnitude (at most 1 after the division by the pair or point count), twice."""
    return {"uniformity": 2 * (4 * t * gamma(d + 2) + U64) + 2 * gamma(n * n),
            "tolerance": 8 * gamma(n + d), "gap": 8 * gamma(n + d)}


def test_structure_metrics_are_the_metrics_of_the_protocol_sample():
    val, text = _val(), torch.randn(16, 8, dtype=torch.float64)
    out = structure_metrics(val, text, per_class=40, seed=3)
    idx = sample_per_class(val["pair_labels"], per_class=40, seed=3)
    assert torch.equal(protocol_sample(val, 40, 3), idx)
    z, q, y = val["pair_student"][idx], val["pair_teacher"][idx], val["pair_labels"][idx]
    bound = _bounds(len(idx), 8)
    assert out["uniformity_pooled"] == pytest.approx(uniformity(z), abs=bound["uniformity"])
    assert out["uniformity"] > out["uniformity_pooled"] - 0.05  # cross-keyframe pairs of random features
    direct_t = tolerance(z, y)
    assert out["tolerance"] == pytest.approx(direct_t.mean, abs=bound["tolerance"])
    for c, v in out["tolerance_per_class"].items():
        assert v == pytest.approx(direct_t.per_class[c], abs=bound["tolerance"])
    assert out["gap"] == pytest.approx(modality_gap(z, q), abs=bound["gap"])
    assert out["gap_text"] == pytest.approx(modality_gap(z, text), abs=bound["gap"])
    labelled = val["pair_labels"] != 0
    assert out["gap_all_pairs"] == pytest.approx(
        modality_gap(val["pair_student"][labelled], val["pair_teacher"][labelled]),
        abs=_bounds(int(labelled.sum()), 8)["gap"])
    # zero-shot: integer confusion counts, exactly the direct computation's
    pred = predict_by_text(val["features"], text)
    cm = confusion_matrix(pred, val["labels"])
    listed = classes_with_ground_truth(cm)
    assert out["zeroshot_miou"] == mean_iou_over(cm, listed) and out["zeroshot_classes"] == list(listed)
    assert out["zeroshot_miou_devkit"] == mean_iou(cm)
    cm_paired = confusion_matrix(pred[val["pair_index"]], val["pair_labels"])
    assert out["zeroshot_miou_paired"] == mean_iou_over(cm_paired, classes_with_ground_truth(cm_paired))
    assert out["zeroshot_iou"] == {c: float(v) for c, v in enumerate(iou_per_class(cm)) if c and not np.isnan(v)}
    counts = {int(c): int((y == c).sum()) for c in torch.unique(y)}
    assert out["sample_counts"] == counts and out["sample_size"] == len(idx)
    assert {k: out["sample"][k] for k in ("per_class", "seed", "keyframes", "scenes", "size")} == {
        "per_class": 40, "seed": 3, "keyframes": 5, "scenes": 5, "size": len(idx)}
    # each scene alone: its keyframe's metrics (one keyframe a scene: no cross-keyframe pair, no U)
    assert out["per_scene"]["uniformity"] == [None] * 5
    one = np.zeros(5)
    one[2] = 1
    assert out["per_scene"]["tolerance"][2] == pytest.approx(float(feature_sums(z, y, val["pair_keyframe"][idx], 5)
                                                                    .tolerance(one)))
    assert out["sample"]["zeroshot_scope"] == "all labelled points"


def test_keyframe_sums_give_the_metrics_of_any_resample():
    """A multiset of keyframes (one drawn twice, one left out) gives the metrics of its expanded points."""
    val, text = _val(seed=1), torch.randn(16, 8, dtype=torch.float64)
    idx = protocol_sample(val, 1000, 0)
    z, q, y, kf = (val[k][idx] for k in ("pair_student", "pair_teacher", "pair_labels", "pair_keyframe"))
    sums = feature_sums(z, y, kf, 5, paired=q)
    m = np.array([2.0, 0.0, 1.0, 3.0, 1.0])
    rows = torch.cat([(kf == a).nonzero().flatten().repeat(int(m[a])) for a in range(5)])
    bound = _bounds(len(rows), 8)
    assert sums.uniformity_pooled(m) == pytest.approx(uniformity(z[rows]), abs=bound["uniformity"])
    assert sums.tolerance(m) == pytest.approx(tolerance(z[rows], y[rows]).mean, abs=bound["tolerance"])
    assert sums.gap(m) == pytest.approx(modality_gap(z[rows], q[rows]), abs=bound["gap"])
    pred = predict_by_text(val["features"], text)
    confusion = confusion_sums(pred, val["labels"], val["keyframe"], 5)
    points = torch.cat([(val["keyframe"] == a).nonzero().flatten().repeat(int(m[a])) for a in range(5)])
    assert confusion.miou_devkit(m) == mean_iou(confusion_matrix(pred[points], val["labels"][points]))
    assert confusion.miou(m) == mean_iou_over(confusion_matrix(pred[points], val["labels"][points]), confusion.classes)
    batch = np.stack([m, np.ones(5)])  # vectorised over resamples: row by row the same
    assert np.array_equal(sums.uniformity(batch), [sums.uniformity(m), sums.uniformity(np.ones(5))])


def test_intervals_paired_comparison_and_the_teacher_on_the_same_sample():
    val, text = _val(n=1200, k=24, seed=2, per_scene=2), torch.randn(16, 8, dtype=torch.float64)
    out = structure_metrics(val, text, per_class=40, n_resamples=100, replicates=50)
    for name, iv in out["intervals"].items():
        assert iv["low"] <= iv["high"] and iv["value"] == out[name] and iv["n"] == 12
    assert out["bootstrap"]["unit"] == "scene" and out["bootstrap"]["n_resamples"] == 100
    assert len(out["replicates"]["values"]["uniformity"]) == 50
    few = structure_metrics(_val(seed=2), text, per_class=40, n_resamples=100, replicates=50)
    assert few["intervals"] is None and "5 scenes" in few["bootstrap"]["skipped"] and "replicates" not in few
    teacher = teacher_view(val)
    t = structure_metrics(teacher, text, per_class=40)
    assert t["gap"] == 0.0 and t["gap_all_pairs"] == 0.0  # the teacher against itself, exactly
    assert t["sample"]["id"] == out["sample"]["id"] and t["sample_counts"] == out["sample_counts"]
    assert t["sample"]["zeroshot_scope"] == "labelled points seen by a camera"
    a, b = protocol_sums(val, text, 40), protocol_sums(teacher, text, 40)
    diff = paired_comparison(a, b, n_resamples=100)["differences"]
    refused = paired_comparison(protocol_sums(_val(seed=2), text, 40), protocol_sums(teacher_view(_val(seed=2)), text, 40),
                                n_resamples=100)
    assert refused["differences"] is None and len(refused["per_scene"]["tolerance"]) == 5
    assert diff["uniformity"]["value"] == out["uniformity"] - t["uniformity"]  # the same sums at m = 1
    assert not paired_comparison(a, a, n_resamples=100)["differences"]["uniformity"]["significant"]
    with pytest.raises(InputError, match="same sample"):
        paired_comparison(a, protocol_sums(val, text, 30), n_resamples=100)
    # read back from JSON, the per-class dicts get their int keys again
    assert from_json(json.loads(json.dumps(out))) == out
    # the sample of a result, for figures of the same points; a result of other points is refused
    assert torch.equal(sample_indices(val, out), protocol_sample(val, 40, 0))
    with pytest.raises(InputError, match="do not hold the sample"):
        sample_indices(_val(n=1200, k=24, seed=3, per_scene=2), out)


def test_one_pair_per_point_and_old_caches_are_recomputed(tmp_path):
    pairs = torch.tensor([5, 2, 5, 9, 2, 7])
    first = first_pair_per_point(pairs)
    naive = [min(i for i, p in enumerate(pairs.tolist()) if p == q) for q in sorted(set(pairs.tolist()))]
    assert first.tolist() == naive
    from safetensors.torch import save_file

    val = _val(n=20, k=2)
    path = tmp_path / "old-n2.safetensors"
    save_file({k: val[k].float() if k in ("features", "pair_teacher") else val[k]
               for k in ("features", "labels", "pair_index", "pair_teacher")}, str(path))  # no keyframe
    calls = []
    again = cached_val_features(path, lambda: calls.append(1) or val)
    assert calls == [1] and torch.equal(again["pair_keyframe"], val["keyframe"][val["pair_index"]])
    assert torch.equal(cached_val_features(path, lambda: 1 / 0)["keyframe"], val["keyframe"])


def test_the_significance_level_of_95_percent_is_exactly_five_percent():
    """1 - 0.95 is 0.050000000000000044 in floating point: a p of exactly 0.05 must not pass ``p < level``."""
    from relviz.stats import significance_level

    assert 1 - 0.95 > 0.05 and significance_level(0.95) == 0.05 and not 0.05 < significance_level(0.95)
    assert significance_level(0.99) == 0.01 and significance_level(0.9) == 0.1
