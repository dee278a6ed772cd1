"""The out-of-distribution measures (relviz/eval/domain.py): the domain classifier on generated features
with a known shift and with none, its scene-grouped folds, the probe-transfer scores against a direct
confusion-matrix computation, the reflectance rescaling, and `relviz eval fewshot` on a KITTI world."""

import json
import math

import numpy as np
import pytest
import scipy.stats
from typer.testing import CliRunner

import relviz.cli.evaluate  # noqa: F401 (registers `eval` on the app)
from relviz.cli.base import app
from relviz.data.kitti import SemanticKitti
from relviz.data.kitti_classes import KITTI_CLASSES
from relviz.data.synthetic_kitti import KittiSynthConfig, generate_kitti
from relviz.errors import InputError
from relviz.data.classes import CLASSES
from relviz.data.common_classes import COMMON_CLASSES, KITTI_TO_COMMON, NUSCENES_TO_COMMON
from relviz.eval.domain import (CommonKitti, CommonRescaledKitti, RescaledKitti, domain_classifier, drop_interval,
                                group_folds, paired_student_difference, random_halves, transfer_scores)

Z = 4.0  # bounds below are 4 binomial standard deviations: a seeded draw outside one has chance < 1e-4


def two_worlds(rng, shift: float, groups_per_domain: int = 20, per_group: int = 10, dim: int = 8):
    """Samples [2 G P, dim] of two domains (0, 1), each of G groups of P i.i.d. standard normal samples,
    domain 1 moved by ``shift`` along the first axis; groups named by domain."""
    n = groups_per_domain * per_group
    x = rng.normal(size=(2 * n, dim))
    x[n:, 0] += shift
    domains = np.r_[np.zeros(n, int), np.ones(n, int)]
    groups = np.array([f"{d}-{i // per_group}" for d, i in zip(domains, np.r_[np.arange(n), np.arange(n)])])
    return x, domains, groups


def test_separable_worlds_are_told_apart():
    x, d, g = two_worlds(np.random.default_rng(0), shift=8.0)
    result = domain_classifier(x, d, g, n_splits=5, n_permutations=19)
    # the Bayes rule errs with probability Phi(-4) = 3e-5 per sample: 0.013 expected errors in 400;
    # 0.99 leaves room for 2 errors in a domain of 200 from the fitted (not Bayes) boundary
    assert scipy.stats.norm.cdf(-4.0) * len(d) < 0.02
    assert result["balanced_accuracy"] >= 0.99 and min(result["fold_accuracies"]) >= 0.95
    assert result["p_permutation"] == pytest.approx(1 / 20) and result["verdict"] == "holds"
    assert result["groups_per_domain"] == [20, 20] and sum(result["fold_sizes"]) == 400


def test_identical_worlds_stay_at_chance_within_the_binomial_bound():
    x, d, g = two_worlds(np.random.default_rng(1), shift=0.0)
    result = domain_classifier(x, d, g, n_splits=5, n_permutations=19)
    # with no shift each out-of-fold prediction is right with probability 1/2; balanced accuracy
    # averages two recalls over n/2 samples each: standard deviation 0.5 / sqrt(n)
    n = len(d)
    assert abs(result["balanced_accuracy"] - 0.5) <= Z * 0.5 / math.sqrt(n)
    for accuracy, size in zip(result["fold_accuracies"], result["fold_sizes"]):
        assert abs(accuracy - 0.5) <= Z * 0.5 / math.sqrt(size)
    assert result["verdict"] == "cannot be told" and result["p_permutation"] > 0.05


def test_folds_keep_every_group_on_one_side():
    x, d, g = two_worlds(np.random.default_rng(2), shift=1.0, groups_per_domain=12, per_group=3)
    tested = np.zeros(len(d), int)
    _, group_index = np.unique(g, return_inverse=True)
    for train, test in group_folds(d, group_index, n_splits=5, seed=0):
        assert not set(g[train]) & set(g[test])
        assert set(d[test]) == {0, 1}  # stratified: both worlds in every test fold
        tested[test] += 1
    assert (tested == 1).all()  # every sample is predicted out of fold exactly once


def test_the_classifier_refuses_mixed_or_too_few_groups():
    x, d, g = two_worlds(np.random.default_rng(3), shift=1.0, groups_per_domain=4, per_group=2)
    with pytest.raises(InputError, match="5 folds need at least 5 groups in each domain"):
        domain_classifier(x, d, g, n_splits=5)
    mixed = g.copy()
    mixed[0] = g[-1]  # a domain-0 sample in a domain-1 group
    with pytest.raises(InputError, match="holds samples of both domains"):
        domain_classifier(x, d, mixed, n_splits=3)
    few = domain_classifier(x, d, g, n_splits=3, n_permutations=0)
    assert few["verdict"] == "too few scenes" and few["refused"].startswith("4 scenes")


def test_random_halves_split_scenes_not_frames():
    scenes = [f"s{i // 3}" for i in range(36)]
    half = random_halves(scenes, seed=0)
    assert all(len({h for h, s in zip(half, scenes) if s == name}) == 1 for name in set(scenes))
    assert half.sum() == 18  # 6 of the 12 scenes, 3 frames each


def direct_miou(cm: np.ndarray) -> float:
    """mIoU over the classes 1.. with ground truth, TP / (TP + FP + FN) on labelled points (row 0 dropped)."""
    cm = cm[1:]  # ground truth 0 is ignored
    ious = [cm[c - 1, c] / (cm[c - 1].sum() + cm[:, c].sum() - cm[c - 1, c]) for c in range(1, cm.shape[1])
            if cm[c - 1].sum() > 0]
    return float(np.mean(ious))


def random_confusions(rng, seeds: int, frames: int, width: int, accuracy: float) -> np.ndarray:
    """Per-frame confusions [seeds, frames, width, width] of a noisy classifier (ground truth rows, class 0 empty)."""
    out = np.zeros((seeds, frames, width, width), dtype=np.int64)
    for s in range(seeds):
        for k in range(frames):
            truth = rng.integers(1, width, 300)
            pred = np.where(rng.random(300) < accuracy, truth, rng.integers(1, width, 300))
            np.add.at(out[s, k], (truth, pred), 1)
    return out


def test_transfer_scores_and_the_drop_equal_a_direct_computation():
    rng = np.random.default_rng(4)
    scenes_in = [f"scene-{k // 2:02d}" for k in range(24)]  # 12 scenes x 2 frames
    scenes_out = [f"{k // 3:02d}" for k in range(33)]  # 11 sequences x 3 scans
    inside = random_confusions(rng, 2, 24, 17, accuracy=0.8)
    outside = random_confusions(rng, 2, 33, 20, accuracy=0.4)
    names = ("ignore",) + tuple(f"c{i}" for i in range(1, 20))
    scores = transfer_scores(outside, scenes_out, [0, 1], names, n_resamples=200)
    per_seed = [direct_miou(outside[s].sum(0)) for s in range(2)]
    assert scores["miou_per_seed"] == pytest.approx({"0": per_seed[0], "1": per_seed[1]}, rel=1e-12)
    assert scores["miou"] == pytest.approx(np.mean(per_seed), rel=1e-12)
    first = [direct_miou(outside[s, :3].sum(0)) for s in range(2)]  # sequence 00 alone
    assert scores["miou_per_scene"]["00"] == pytest.approx(np.mean(first), rel=1e-12)
    assert scores["scenes"] == 11 and scores["interval"]["low"] <= scores["miou"] <= scores["interval"]["high"]
    drop = drop_interval(inside, scenes_in, outside, scenes_out, n_resamples=200)
    expected = np.mean([direct_miou(inside[s].sum(0)) for s in range(2)]) - np.mean(per_seed)
    assert drop["value"] == pytest.approx(expected, rel=1e-12)
    assert drop["low"] > 0 and drop["verdict"] == "holds"  # 0.8 against 0.4 accuracy: far apart
    few = drop_interval(inside[:, :18], scenes_in[:18], outside, scenes_out)
    assert few["verdict"] == "too few scenes" and few["low"] is None and few["refused"].startswith("9 scenes")
    assert transfer_scores(inside[:, :18], scenes_in[:18], [0, 1], names[:17])["interval"] is None


@pytest.fixture(scope="module")
def tiny_kitti(tmp_path_factory):
    """The smallest KITTI-format world the standard split can use: sequences 00 (train) and 08 (val), one
    scan each, from a sparse 16-beam, 512-step sensor (about 1/16 of the default's points: a fast test)."""
    return generate_kitti(tmp_path_factory.mktemp("kitti") / "world",
                          KittiSynthConfig(seed=3, sequences=2, scans_per_sequence=1, beams=16, azimuth_steps=512))


def test_rescaled_reflectance_is_the_raw_times_255(tiny_kitti):
    raw, scaled = SemanticKitti(tiny_kitti, "val")[0], RescaledKitti(tiny_kitti, "val")[0]
    # float32 x 255 is one rounding: the relative error is at most 2^-24
    np.testing.assert_allclose(scaled["voxel_features"], raw["voxel_features"] * 255, rtol=2 ** -24)
    np.testing.assert_allclose(scaled["points"][:, 3], raw["points"][:, 3] * 255, rtol=2 ** -24)
    np.testing.assert_array_equal(scaled["points"][:, :3], raw["points"][:, :3])
    assert raw["voxel_features"].max() <= 1 < scaled["voxel_features"].max()
    with pytest.raises(InputError, match="reflectance scale"):
        RescaledKitti(tiny_kitti, "val", scale=0.0)


def test_eval_fewshot_reads_a_kitti_folder_with_its_19_classes(tiny_kitti):
    runner = CliRunner()
    args = ["eval", "fewshot", "--checkpoint", "checkpoints/demo/student-relational.safetensors", "--dataset",
            str(tiny_kitti), "--fraction", "0.01", "--epochs", "3", "--max-per-class", "50"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["format"] == "semantickitti" and out["class_list"] == list(KITTI_CLASSES[1:])
    assert len(out["class_list"]) == 19 and out["frame_rule"] == "slidr-kitti-scan-skip/1"
    assert out["frames"] == ["00/000000"] and out["split_frames"] == 1  # the first scan: [::100] of one
    assert len(out["iou"]) == 19 and out["interval_refused"].startswith("1 scene")
    bad = runner.invoke(app, args[:-6] + ["--format", "kitti"])
    assert bad.exit_code == 2 and "format must be one of auto, nuscenes, semantickitti, got 'kitti'" in bad.output


# --- one class list for both worlds, and students compared on the same frames -------------------------

def test_the_common_class_list_is_reached_from_both_worlds_by_name():
    def common(lookup, names, name):
        return COMMON_CLASSES[lookup[names.index(name)]]
    for kitti, shared in [("road", "driveable_surface"), ("parking", "driveable_surface"), ("person", "pedestrian"),
                          ("other-vehicle", "other_vehicle"), ("trunk", "vegetation"), ("pole", "manmade"),
                          ("traffic-sign", "manmade"), ("other-ground", "other_flat"), ("bicyclist", "ignore"),
                          ("motorcyclist", "ignore"), ("ignore", "ignore")]:
        assert common(KITTI_TO_COMMON, KITTI_CLASSES, kitti) == shared
    for nus, shared in [("bus", "other_vehicle"), ("trailer", "other_vehicle"), ("driveable_surface", "driveable_surface"),
                        ("barrier", "ignore"), ("traffic_cone", "ignore"), ("manmade", "manmade"), ("ignore", "ignore")]:
        assert common(NUSCENES_TO_COMMON, CLASSES, nus) == shared
    # every common class has ground truth in both worlds' label sets: a score is over the same classes
    everything = set(range(1, len(COMMON_CLASSES)))
    assert set(KITTI_TO_COMMON.tolist()) - {0} == everything == set(NUSCENES_TO_COMMON.tolist()) - {0}


def test_a_common_class_kitti_frame_is_its_labels_mapped(tiny_kitti):
    raw, common, scaled = SemanticKitti(tiny_kitti, "val"), CommonKitti(tiny_kitti, "val"), \
        CommonRescaledKitti(tiny_kitti, "val")
    expected = np.array([COMMON_CLASSES.index({"road": "driveable_surface", "parking": "driveable_surface",
                                               "person": "pedestrian", "other-vehicle": "other_vehicle",
                                               "trunk": "vegetation", "pole": "manmade", "traffic-sign": "manmade",
                                               "building": "manmade", "fence": "manmade",
                                               "other-ground": "other_flat"}.get(KITTI_CLASSES[c], KITTI_CLASSES[c])
                                              if KITTI_CLASSES[c] not in ("bicyclist", "motorcyclist") else "ignore")
                         for c in raw[0]["labels"]])
    np.testing.assert_array_equal(common[0]["labels"], expected)
    np.testing.assert_array_equal(scaled[0]["labels"], expected)
    assert common.classes == COMMON_CLASSES and common.num_classes == 12
    voxelized = common.voxelized(0.5, False)  # a student's own voxelization keeps the class list
    assert voxelized.classes == COMMON_CLASSES and voxelized[0]["labels"].max() <= 12


def test_paired_student_differences_equal_a_direct_computation_and_pair_the_scenes():
    rng = np.random.default_rng(7)
    scenes_in = [f"scene-{k // 2:02d}" for k in range(24)]
    scenes_out = [f"{k // 3:02d}" for k in range(33)]
    a_in, a_out = random_confusions(rng, 2, 24, 13, 0.8), random_confusions(rng, 2, 33, 13, 0.5)
    b_in, b_out = random_confusions(rng, 2, 24, 13, 0.7), random_confusions(rng, 2, 33, 13, 0.45)

    def mean_miou(cms):
        return np.mean([direct_miou(c.sum(0)) for c in cms])
    out = paired_student_difference({"out": a_out, "scenes_out": scenes_out}, {"out": b_out, "scenes_out": scenes_out},
                                    n_resamples=300)
    assert out["value"] == pytest.approx(mean_miou(a_out) - mean_miou(b_out), rel=1e-12)
    assert out["low"] < out["value"] < out["high"] and 0 < out["p"] <= 1 and out["measure"] == "mIoU on the second world"
    drop = paired_student_difference({"in": a_in, "scenes_in": scenes_in, "out": a_out, "scenes_out": scenes_out},
                                     {"in": b_in, "scenes_in": scenes_in, "out": b_out, "scenes_out": scenes_out},
                                     n_resamples=300)
    expected = (mean_miou(a_in) - mean_miou(a_out)) - (mean_miou(b_in) - mean_miou(b_out))
    assert drop["value"] == pytest.approx(expected, rel=1e-12) and drop["measure"] == "drop"
    # a student against itself: every shared resample gives exactly 0 (the pairing), so p = 1
    same = paired_student_difference({"out": a_out, "scenes_out": scenes_out}, {"out": a_out, "scenes_out": scenes_out})
    assert same["value"] == 0 and same["low"] == same["high"] == 0 and same["p"] == 1
    # the pairing: B = A with one frame's confusions moved between classes keeps the interval far narrower
    # than two students' independent intervals would be
    b_close = a_out.copy()
    b_close[:, 0, 1, 1] -= 5
    b_close[:, 0, 1, 2] += 5
    close = paired_student_difference({"out": a_out, "scenes_out": scenes_out}, {"out": b_close, "scenes_out": scenes_out})
    alone = transfer_scores(a_out, scenes_out, [0, 1], COMMON_CLASSES)["interval"]
    assert close["high"] - close["low"] < (alone["high"] - alone["low"]) / 10
    few = paired_student_difference({"out": a_out[:, :27], "scenes_out": scenes_out[:27]},
                                    {"out": b_out[:, :27], "scenes_out": scenes_out[:27]})
    assert few["verdict"] == "too few scenes" and few["p"] is None
    with pytest.raises(InputError, match="same frames"):
        paired_student_difference({"out": a_out, "scenes_out": scenes_out},
                                  {"out": b_out[:, :27], "scenes_out": scenes_out[:27]})
