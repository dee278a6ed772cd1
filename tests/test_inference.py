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
    against the true sqrt(0.25): coverage about P(|Z| <= 1.96 sqrt(0.2)) = 0.62."""
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
    assert scipy.stats.binom.ppf(0.001, trials, 0.925) <= two_stage <= scipy.stats.binom.isf(0.001, trials, 0.95), \
        two_stage
    assert seeds_only <= scipy.stats.binom.isf(0.001, trials, 0.62) < scipy.stats.binom.ppf(0.001, trials, 0.925), \
        seeds_only


def test_the_two_stage_bootstrap_finds_a_real_difference_and_its_p_is_the_percentile_duality():
    rng = np.random.default_rng(2)
    resamples = resample_multiplicities(15, 500, seed=0)
    observed, reps = _two_stage_data(rng, 6, 15, 1.0, 0.2, 0.2, 0.1, resamples)
    iv = two_stage_bootstrap(observed, reps)
    assert iv.significant and iv.low > 0 and iv.p == pytest.approx(1 / 500)
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
