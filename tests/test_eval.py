"""Evaluation: mIoU by hand, devkit agreement on exported predictions, few-shot probe, report."""

import math

import numpy as np
import pytest
import torch

from fp_bounds import U32, gamma
from relviz.data import NuScenesLidarSeg
from relviz.eval import confusion_matrix, iou_per_class, mean_iou
from relviz.eval.fewshot import evaluate_fewshot
from relviz.eval.zeroshot import evaluate_zeroshot, export_submission, predict_by_text
from relviz.models import build_minkunet


def test_miou_against_hand_computed_confusion():
    # classes: 1 and 2 present; 3 only predicted; 4 absent everywhere; label 0 ignored
    target = np.array([1, 1, 1, 2, 2, 0, 0, 2])
    pred = np.array([1, 1, 2, 2, 3, 5, 1, 2])
    cm = confusion_matrix(pred, target, num_classes=6)
    expected = np.zeros((6, 6), dtype=np.int64)
    for t, p in [(1, 1), (1, 1), (1, 2), (2, 2), (2, 3), (2, 2)]:
        expected[t, p] += 1
    np.testing.assert_array_equal(cm, expected)
    iou = iou_per_class(cm)
    # class 1: tp 2, fp 0, fn 1 -> 2/3; class 2: tp 2, fp 1, fn 1 -> 2/4; class 3: tp 0, fp 1 -> 0; 4, 5: absent
    # (one IEEE division of exact integer counts, correctly rounded like Python's 2 / 3: exact)
    assert iou[1] == 2 / 3 and iou[2] == 0.5 and iou[3] == 0.0
    assert math.isnan(iou[4]) and math.isnan(iou[5]) and math.isnan(iou[0])
    # absent classes never count as 1.0; a mean of 3 values <= 1 in any order: gamma(4), x2 for two sides
    assert mean_iou(cm) == pytest.approx((2 / 3 + 0.5 + 0.0) / 3, rel=0, abs=2 * gamma(4))
    # as nuscenes-devkit's ConfusionMatrix: the ignore column is zeroed, so a prediction of 0 drops out
    cm2 = confusion_matrix(np.array([0, 1]), np.array([1, 1]), num_classes=3)
    assert cm2[1].tolist() == [0, 1, 0] and iou_per_class(cm2)[1] == 1.0  # 1 / 1: exact
    # empty predictions and all-ignored ground truth: no defined IoU at all
    empty = confusion_matrix(np.array([], dtype=int), np.array([], dtype=int), num_classes=4)
    assert empty.sum() == 0 and math.isnan(mean_iou(empty))
    with pytest.raises(ValueError, match="differ in length"):
        confusion_matrix(np.array([1]), np.array([1, 2]))


def test_predict_by_text_with_free_prompts():
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert predict_by_text(feats, text).tolist() == [1, 2, 1]
    assert predict_by_text(feats, text, torch.tensor([4, 11])).tolist() == [4, 11, 4]


@pytest.fixture(scope="module")
def demo_teacher():
    from relviz.teacher.demo import load_demo_teacher

    return load_demo_teacher()


def test_export_scored_by_devkit_equals_relviz(nusc, demo_teacher, tmp_path):
    from nuscenes.eval.lidarseg.evaluate import LidarSegEval

    torch.manual_seed(0)
    model = build_minkunet("MinkUNet14", out_channels=demo_teacher.dim, width=0.25, backend="torch").eval()
    ds = NuScenesLidarSeg(None, split="mini_val", nusc=nusc, load_images=False)
    ours = evaluate_zeroshot(model, demo_teacher, ds)
    out = export_submission(model, demo_teacher, ds, tmp_path / "sub", "mini_val")
    bins = sorted((out / "lidarseg" / "mini_val").glob("*_lidarseg.bin"))
    assert len(bins) == len(ds) and (out / "mini_val" / "submission.json").is_file()
    pred = np.fromfile(bins[0], dtype=np.uint8)
    assert pred.min() >= 1 and pred.max() <= 16
    devkit = LidarSegEval(nusc, str(out), "mini_val", verbose=False).evaluate()
    # Same predictions (same model, inputs and code path in this process), so the same integer
    # counts; an IoU is one division of them, but the devkit divides by float32(union): exact below
    # 2^24 points, else off by <= u32 relative. mIoU: a mean of <= 16 such values <= 1, gamma(17)
    # for the order, both sides. x2 safety.
    assert devkit["miou"] == pytest.approx(ours["miou"], rel=0, abs=2 * (U32 + 2 * gamma(17)))
    for name, value in ours["iou"].items():
        if value is not None:
            assert devkit["iou_per_class"][name] == pytest.approx(value, rel=2 * U32, abs=0)


def test_fewshot_probe_beats_random_features(nusc):
    from relviz.demo import student_path
    from relviz.models.checkpoint import load_student

    train = NuScenesLidarSeg(None, split="mini_train", nusc=nusc, load_images=False)
    val = NuScenesLidarSeg(None, split=["scene-0103"], nusc=nusc, load_images=False)  # one val scene: a student
    trained, _ = load_student(student_path("relational"))  # forward is seconds a keyframe on this CPU
    torch.manual_seed(0)
    random_model = build_minkunet("MinkUNet14", out_channels=trained.config.out_channels, width=0.5,
                                  backend="torch").eval()
    good = evaluate_fewshot(trained, train, val, fraction=0.1)
    bad = evaluate_fewshot(random_model, train, val, fraction=0.1)
    assert good["miou"] > bad["miou"] + 0.05, (good["miou"], bad["miou"])
