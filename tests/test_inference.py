"""Inference against known truth (issue #26): scenes as the bootstrap unit, the two-stage bootstrap
over seeds and scenes, Holm's correction, the sign-flip test, the evaluation keyframes spread over
scenes, and the fixed class list of zero-shot mIoU."""

import itertools
import math

import numpy as np
import pytest
import scipy.stats

from relviz.errors import InputError
from relviz.stats import (MIN_SCENES, cluster_bootstrap, holm, refusal, resample_multiplicities, scene_statistic,
                          seed_interval, sign_flip_p, t_test_p, two_sided_bootstrap_p, two_stage_bootstrap)


def _scene_data(rng, scenes: int, per_scene: int, between_scenes: float, between_keyframes: float):
    """Keyframe values mu + b_s + c_k (mu = 0; b_s scene effects, c_k keyframe noise), equal weights:
    the mean as a statistic of keyframe multiplicities m [..., K], and each keyframe's scene [K]."""
    values = np.repeat(rng.normal(0, between_scenes, scenes), per_scene) + rng.normal(0, between_keyframes,
                                                                                    scenes * per_scene)
    scene_of = np.repeat(np.arange(scenes), per_scene)
    return (lambda m: (m @ values) / m.sum(-1)), scene_of


def test_the_scene_bootstrap_covers_at_its_nominal_rate_and_the_keyframe_bootstrap_under_covers():
    """300 data sets of 30 scenes x 6 keyframes, a scene effect (sd 1) and keyframe noise (sd 0.3).
    Over scenes, the percentile interval of the mean of 30 iid scene means has exact coverage
    P(|t_29| <= z sqrt(29/30)) = 0.936 (the bootstrap's plug-in variance); the count of covering
    intervals is Binomial(300, p), p in [0.936, 0.95]: the band [ppf(0.001; 0.936), isf(0.001; 0.95)]
    fails a correct bootstrap with probability < 0.002. Over keyframes (180 "independent" units) the
    standard error is about sqrt((1 + 0.09) / 180) against the true sqrt((1 + 0.09 / 6) / 30): coverage
    P(|Z| <= 1.96 * 0.078 / 0.184) = P(|Z| <= 0.83) = 0.59, far below the band."""
    trials, scenes, per_scene, confidence = 300, 30, 6, 0.95
    z = scipy.stats.norm.ppf((1 + confidence) / 2)
    p_theory = 1 - 2 * scipy.stats.t.sf(z * math.sqrt((scenes - 1) / scenes), scenes - 1)
    low_band = scipy.stats.binom.ppf(0.001, trials, p_theory)
    high_band = scipy.stats.binom.isf(0.001, trials, confidence)
    rng = np.random.default_rng(0)
    by_scene = by_keyframe = 0
    for trial in range(trials):
        mean, scene_of = _scene_data(rng, scenes, per_scene, 1.0, 0.3)
        iv = cluster_bootstrap(scene_statistic(mean, scene_of), scenes, n_resamples=300, seed=trial)
        by_scene += iv.low <= 0.0 <= iv.high
        iv = cluster_bootstrap(mean, scenes * per_scene, n_resamples=300, seed=trial)
        by_keyframe += iv.low <= 0.0 <= iv.high
    assert low_band <= by_scene <= high_band, (by_scene, low_band, high_band)
    keyframe_theory = 2 * scipy.stats.norm.cdf(z * math.sqrt(1.09 / 180) / math.sqrt((1 + 0.09 / 6) / 30)) - 1
    assert by_keyframe <= scipy.stats.binom.isf(0.001, trials, keyframe_theory) < low_band, by_keyframe


def test_scene_statistic_draws_whole_scenes_and_few_scenes_are_refused():
    values = np.arange(6.0)
    scene_of = np.array([0, 0, 1, 1, 1, 2])
    stat = scene_statistic(lambda m: m @ values, scene_of)
    assert stat(np.array([2.0, 0.0, 1.0])) == 2 * (0 + 1) + 5
    assert np.array_equal(stat(np.ones((4, 3))), np.full(4, values.sum()))
    assert refusal(MIN_SCENES) is None
    assert "2 scenes" in refusal(2) and "per-scene" in refusal(2)
    m = resample_multiplicities(7, 50, seed=3)
    assert m.shape == (50, 7) and np.all(m.sum(1) == 7)
    assert np.array_equal(m, resample_multiplicities(7, 50, seed=3))


def _two_stage_data(rng, seeds: int, scenes: int, delta: float, sd_seed: float, sd_scene: float, sd_noise: float,
                    resamples: np.ndarray):
    """y[r, s] = delta + a_r + b_s + e_rs: each seed's mean over scenes (observed) and its values on
    the shared scene resamples [R, B]."""
    y = delta + rng.normal(0, sd_seed, (seeds, 1)) + rng.normal(0, sd_scene, (1, scenes)) \
        + rng.normal(0, sd_noise, (seeds, scenes))
    return y.mean(1), (y @ resamples.T) / scenes


def test_the_two_stage_bootstrap_covers_with_seed_and_scene_variance_where_seeds_alone_under_cover():
    """200 experiments of 20 seeds x 20 scenes, seed effect sd 1, scene effect sd 2 (shared by the
    seeds), noise sd 0.5. The variance of the mean is 1/20 + 4/20 + 0.25/400; the two-stage bootstrap's
    is about (19/20) of each of the first two (plug-in), so its coverage is about
    P(|Z| <= 1.96 sqrt(0.95)) = 0.944, a little less for 20-unit percentiles (t_19 tails: 0.93).
    A t interval over seeds ignores the scene effect: its half-width estimates sqrt(1/20 + 0.25/400)
    against the true sqrt(0.25): coverage about P(|Z| <= 1.96 sqrt(0.2)) = 0.62. (The t quantile and
    the R/(R-1) inflation bring the two-stage interval to about nominal.)"""
    trials, seeds, scenes = 200, 20, 20
    rng = np.random.default_rng(1)
    two_stage = seeds_only = 0
    resamples = resample_multiplicities(scenes, 400, seed=0)
    for trial in range(trials):
        observed, reps = _two_stage_data(rng, seeds, scenes, 0.0, 1.0, 2.0, 0.5, resamples)
        iv = two_stage_bootstrap(observed, reps, seed=trial)
        two_stage += iv.low <= 0.0 <= iv.high
        t = seed_interval(observed)
        seeds_only += t.low <= 0.0 <= t.high
    assert scipy.stats.binom.ppf(0.001, trials, 0.925) <= two_stage <= scipy.stats.binom.isf(0.001, trials, 0.96), \
        two_stage
    assert seeds_only <= scipy.stats.binom.isf(0.001, trials, 0.62) < scipy.stats.binom.ppf(0.001, trials, 0.925), \
        seeds_only


def test_the_two_stage_p_holds_its_level_with_five_seeds_and_finds_a_real_difference():
    """Nothing holds: 5 seeds (seed effect sd 1), 12 scenes (shared, sd 0.3), noise 0.1. The
    studentized two-stage p falls below 5% in about 4-5% of 600 data sets (a percentile version: 18%);
    the band [0, isf(0.001; 0.06)] allows a level of at most 6%. Then a real difference of 1 with small
    noise is found."""
    rng = np.random.default_rng(4)
    resamples = resample_multiplicities(12, 400, seed=0)
    trials = 600
    rejected = sum(two_stage_bootstrap(*_two_stage_data(rng, 5, 12, 0.0, 1.0, 0.3, 0.1, resamples), seed=t).p < 0.05
                   for t in range(trials))
    assert rejected <= scipy.stats.binom.isf(0.001, trials, 0.06), rejected
    observed, reps = _two_stage_data(rng, 6, 15, 1.0, 0.2, 0.2, 0.1, resample_multiplicities(15, 500, seed=0))
    iv = two_stage_bootstrap(observed, reps)
    assert iv.significant and iv.low > 0 and iv.p < 0.001
    assert iv.value == pytest.approx(observed.mean())
    d = np.array([-1.0, 1.0, 2.0, 3.0])
    assert two_sided_bootstrap_p(d) == pytest.approx(0.5)
    with pytest.raises(InputError, match="seeds"):
        two_stage_bootstrap([1.0], np.ones((1, 10)))


def _holm_by_step_down(p: list[float], alpha: float) -> set[int]:
    """Holm's procedure as defined: order the p-values, reject while p_(i) <= alpha / (m - i + 1),
    stop at the first that is not."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    rejected = set()
    for rank, i in enumerate(order):
        if p[i] > alpha / (len(p) - rank):
            break
        rejected.add(i)
    return rejected


def test_holm_adjusted_p_rejects_exactly_what_the_step_down_procedure_rejects_at_every_level():
    rng = np.random.default_rng(3)
    for _ in range(50):
        p = list(rng.uniform(0, 0.2, rng.integers(1, 12)) ** 2)
        adjusted = holm(p)
        for alpha in np.linspace(0.001, 0.2, 60):
            assert {i for i, a in enumerate(adjusted) if a <= alpha} == _holm_by_step_down(p, alpha)
    # the review's four claims that lose significance: p 0.015 among 16 is not significant after Holm
    assert holm([None, 0.5, 0.01]) == [None, 0.5, 0.02]


def test_sign_flip_p_enumerates_every_sign_pattern():
    d = [0.3, 0.1, 0.4, -0.05, 0.2]
    observed = abs(np.mean(d))
    patterns = [abs(np.mean(np.array(s) * d)) for s in itertools.product([1, -1], repeat=len(d))]
    expected = np.mean([p >= observed - 1e-12 for p in patterns])
    assert sign_flip_p(d) == pytest.approx(expected)
    assert sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(0.25)  # 3 seeds: 2 of 8 patterns, never below 5%
    assert sign_flip_p([1.0]) is None
    assert t_test_p(d) == pytest.approx(scipy.stats.ttest_1samp(d, 0).pvalue)


def _keyframe_clustered(rng, k: int, per_keyframe: int, spread: float = 0.6):
    """Unit features in R^3: each keyframe's points scatter around its own random direction, so pairs
    inside a keyframe are more alike than pairs across keyframes."""
    import torch

    centres = rng.normal(size=(k, 3))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    z = np.repeat(centres, per_keyframe, 0) + spread * rng.normal(size=(k * per_keyframe, 3))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    keyframe = np.repeat(np.arange(k), per_keyframe)
    return torch.as_tensor(z), torch.zeros(len(z), dtype=torch.long), torch.as_tensor(keyframe)


def test_cross_keyframe_uniformity_is_flat_in_the_number_of_keyframes_where_the_pooled_one_drifts():
    """The estimand: U over pairs of points from two independent keyframes. Its kernel mean is
    estimated without bias by the cross-keyframe pairs of any K >= 2 keyframes; the pooled estimate
    mixes in the within-keyframe pairs (weight about 1/K), which are more alike: it is lower at small K
    and rises toward the estimand as K grows. Over 60 draws per K, the cross estimate at K = 2 and
    K = 16 agree within 4 standard errors of their difference; the pooled estimates differ by more
    than 10 of theirs."""
    from relviz.eval.keyframe_sums import feature_sums

    rng = np.random.default_rng(5)
    estimates = {}
    for k in (2, 16):
        cross, pooled = [], []
        for _ in range(60):
            z, labels, kf = _keyframe_clustered(rng, k, 32 if k == 16 else 256)
            sums = feature_sums(z, labels, kf, k)
            cross.append(float(sums.uniformity(np.ones(k))))
            pooled.append(float(sums.uniformity_pooled(np.ones(k))))
        estimates[k] = (np.array(cross), np.array(pooled))

    def separation(a, b):
        return abs(a.mean() - b.mean()) / math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))

    assert separation(estimates[2][0], estimates[16][0]) < 4
    assert separation(estimates[2][1], estimates[16][1]) > 10
    assert estimates[2][1].mean() < estimates[16][1].mean()


def test_cross_keyframe_uniformity_equals_a_naive_loop_over_pairs_of_distinct_keyframes():
    from relviz.eval.keyframe_sums import feature_sums

    rng = np.random.default_rng(6)
    z, labels, kf = _keyframe_clustered(rng, 3, 7)
    z, kf = z.numpy(), kf.numpy()
    kernel = [math.exp(-2 * np.sum((z[i] - z[j]) ** 2)) for i in range(len(z)) for j in range(len(z))
              if kf[i] != kf[j]]
    import torch
    sums = feature_sums(torch.as_tensor(z), labels, torch.as_tensor(kf), 3)
    assert float(sums.uniformity(np.ones(3))) == pytest.approx(-math.log(np.mean(kernel)), rel=1e-9)
    # a resample drawing keyframe 0 twice and dropping 2: the copies of 0 never pair with each other
    m = np.array([2.0, 1.0, 0.0])
    rows = np.concatenate([np.flatnonzero(kf == 0), np.flatnonzero(kf == 0), np.flatnonzero(kf == 1)])
    owner = np.concatenate([np.full((kf == 0).sum(), 0), np.full((kf == 0).sum(), 0), np.full((kf == 1).sum(), 1)])
    pairs = [math.exp(-2 * np.sum((z[rows[a]] - z[rows[b]]) ** 2)) for a in range(len(rows))
             for b in range(len(rows)) if owner[a] != owner[b]]
    assert float(sums.uniformity(m)) == pytest.approx(-math.log(np.mean(pairs)), rel=1e-9)


def test_a_stray_prediction_of_an_absent_class_leaves_the_fixed_list_miou_unchanged():
    from relviz.segmentation import (absent_predictions, classes_with_ground_truth, confusion_matrix, mean_iou,
                                     mean_iou_over)

    labels = np.array([1, 1, 2, 2, 4, 4, 4, 0])
    pred = np.array([1, 2, 2, 2, 4, 4, 1, 3])
    cm = confusion_matrix(pred, labels, num_classes=6)
    classes = classes_with_ground_truth(cm)
    assert classes == (1, 2, 4)
    # by hand: class 1 TP 1, FP 1 (a 4 predicted 1), FN 1 -> 1/3; class 2: TP 2, FP 1 -> 2/3; class 4: 2/3
    assert mean_iou_over(cm, classes) == pytest.approx((1 / 3 + 2 / 3 + 2 / 3) / 3)
    stray = pred.copy()
    stray[6] = 5  # the point of class 4 called "5", a class absent from the ground truth
    cm_stray = confusion_matrix(stray, labels, num_classes=6)
    # class 1 loses its false positive (1/2), class 4 keeps IoU 2/3: the list, not the stray, decides the mean
    assert mean_iou_over(cm_stray, classes) == pytest.approx((1 / 2 + 2 / 3 + 2 / 3) / 3)
    assert absent_predictions(cm_stray, classes) == {5: 1}
    # the devkit's rule adds class 5 with IoU 0 to the mean: a different class set
    assert mean_iou(cm_stray) == pytest.approx((1 / 2 + 2 / 3 + 2 / 3 + 0) / 4)
    only_stray = confusion_matrix(np.where(labels == 4, 4, labels), labels, num_classes=6)
    with_stray = only_stray.copy()
    with_stray[4, 4] -= 1
    with_stray[4, 5] += 1  # one point moved to an absent class: only class 4's own IoU changes
    assert mean_iou_over(only_stray, classes) == 1.0
    assert mean_iou_over(with_stray, classes) == pytest.approx((1 + 1 + 2 / 3) / 3)


def test_the_evaluation_set_spreads_keyframes_over_scenes_and_refuses_zero():
    from relviz.eval.selection import EvalSet, scene_ids

    scene_of = [f"scene-{s:02d}" for s in range(12) for _ in range(40)]
    picked = EvalSet(scenes=5, per_scene=4, seed=1).keyframes(scene_of)
    by_scene = {}
    for i in picked:
        by_scene.setdefault(scene_of[i], []).append(i % 40)
    assert len(by_scene) == 5 and all(len(v) == 4 for v in by_scene.values())
    for positions in by_scene.values():  # one keyframe from each tenth-by-four stretch of the scene
        assert [p // 10 for p in sorted(positions)] == [0, 1, 2, 3]
    assert picked == EvalSet(scenes=5, per_scene=4, seed=1).keyframes(scene_of)
    assert picked != EvalSet(scenes=5, per_scene=4, seed=2).keyframes(scene_of)
    assert len(EvalSet(scenes=None, per_scene=None).keyframes(scene_of)) == 480
    assert EvalSet(scenes=50, per_scene=100).keyframes(scene_of) == list(range(480))
    ids = scene_ids(scene_of, picked)
    assert sorted(set(ids.tolist())) == [0, 1, 2, 3, 4] and len(ids) == 20
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InputError, match="scenes"):
            EvalSet(scenes=bad)


def test_the_class_list_of_a_scene_or_resample_depends_on_the_labels_only():
    """Two scenes, class 2 only in scene 0, and in scene 1 one stray "class 2" prediction by model A
    only: scene 1 alone averages over class 1 for both models (A: 9 of 10 points right; B: all), not
    over a class 2 that A alone would bring in with IoU 0."""
    from relviz.eval.keyframe_sums import ConfusionSums
    from relviz.segmentation import confusion_matrix

    labels = [np.array([1] * 5 + [2] * 5), np.array([1] * 10)]
    a = [labels[0], np.array([1] * 9 + [2])]
    b = [labels[0], labels[1]]
    sums = {name: ConfusionSums(np.stack([confusion_matrix(p, y, num_classes=3) for p, y in zip(preds, labels)]))
            for name, preds in (("a", a), ("b", b))}
    scene1 = np.array([0.0, 1.0])
    assert sums["a"].classes == sums["b"].classes == (1, 2)
    assert sums["a"].miou(scene1) == pytest.approx(0.9) and sums["b"].miou(scene1) == 1.0


def test_confusion_sums_miou_of_many_resamples_at_once_is_mean_iou_over_each():
    """ConfusionSums.miou computes every resample's mIoU at once (the Experiments page resamples every
    run's probes): the same as relviz.segmentation.mean_iou_over of each resample's summed matrix, with
    resamples that leave a listed class without ground truth, one that leaves none (NaN), and the ignore
    class in the list (never counted)."""
    from fp_bounds import gamma

    from relviz.eval.keyframe_sums import ConfusionSums
    from relviz.segmentation import mean_iou_over

    rng = np.random.default_rng(4)
    per_frame = rng.integers(0, 40, (6, 5, 5))
    per_frame[:3, 4, :] = 0  # class 4's ground truth only in frames 3-5
    per_frame[:, 3, :] = 0  # class 3 never in the ground truth, but predicted: outside the list
    sums = ConfusionSums(per_frame)
    assert sums.classes == (1, 2, 4)
    m = np.vstack([resample_multiplicities(6, 200, seed=1), np.eye(6)[0], np.zeros(6)])
    for listed in (sums.classes, (0, 1, 2, 4)):
        got = sums.miou(m, listed)
        want = [mean_iou_over(np.einsum("k,kij->ij", row, per_frame), listed) for row in m]
        assert math.isnan(got[-1]) and math.isnan(want[-1])
        np.testing.assert_allclose(got[:-1], want[:-1], rtol=4 * gamma(5), atol=0)
    assert sums.miou(m[:2].reshape(2, 1, 6)).shape == (2, 1)
