"""Few-shot protocols: SLidR's scene rule for the labelled frames, the streamed probe sample,
fine-tuning a copy of the student, and the label-efficiency curve."""

import json
import math

import numpy as np
import pytest
import torch

from fp_bounds import U64, gamma
from relviz.data import NuScenesLidarSeg
from relviz.data.dataset import collate
from relviz.errors import RelvizError
from relviz.eval.features import student_voxel_features
from relviz.eval.fewshot import fewshot_frames, fewshot_scenes, probe_sample
from relviz.eval.finetune import FRACTIONS, finetune, label_efficiency
from relviz.models import build_minkunet


def slidr_scenes(names, skip):
    """SLidR's downstream loader, written out: count the split's scenes, keep every ``skip``-th."""
    kept, counter = [], 0
    for name in names:
        counter += 1
        if counter % skip == 0:
            kept.append(name)
    return kept


@pytest.fixture(scope="module")
def splits(nusc):
    """mini_train (8 scenes x 2 keyframes) and, to keep scoring cheap, one mini_val scene."""
    train = NuScenesLidarSeg(None, split="mini_train", nusc=nusc, load_images=False)
    val = NuScenesLidarSeg(None, split=["scene-0916"], nusc=nusc, load_images=False)
    return train, val


def tiny_student(seed=0):
    torch.manual_seed(seed)
    return build_minkunet("MinkUNet14", out_channels=16, width=0.125, backend="torch").eval()


def test_scene_rule_is_slidrs_skip_and_nests_as_documented():
    names = [f"scene-{i:04d}" for i in range(1, 701)]  # nuScenes' 700 training scenes
    shuffled = list(np.random.default_rng(0).permutation(names))
    for fraction, skip in zip(FRACTIONS, (100, 20, 10, 4, 1)):
        assert fewshot_scenes(shuffled, fraction) == slidr_scenes(names, skip)
    picked = {f: set(fewshot_scenes(names, f)) for f in FRACTIONS}
    assert picked[0.01] < picked[0.05] < picked[0.1] < picked[1.0] and picked[0.05] < picked[0.25]
    assert not picked[0.1] <= picked[0.25]  # the 10th scene is not a multiple of 4: as in SLidR
    # any fraction: scene i is taken when floor(i f) steps up, in exact integer arithmetic (29/100 of 100)
    steps_up = [n for i, n in enumerate(names[:100], 1) if i * 29 // 100 > (i - 1) * 29 // 100]
    assert fewshot_scenes(names[:100], 0.29) == steps_up and len(steps_up) == 29
    # fewer scenes than 1/f: SLidR would take none; the rule takes the last scene
    assert fewshot_scenes(names[:8], 0.01) == fewshot_scenes(names[:8], 0.1) == [names[7]]


def test_fewshot_frames_are_whole_scenes_nested_and_deterministic(splits, nusc):
    train, _ = splits
    again = NuScenesLidarSeg(None, split="mini_train", nusc=nusc, load_images=False)
    scene_of = [nusc.get("scene", nusc.get("sample", t)["scene_token"])["name"] for t in train.sample_tokens]
    chosen = {}
    for fraction in FRACTIONS:
        frames = fewshot_frames(train, fraction)
        assert frames == fewshot_frames(again, fraction)
        scenes = {scene_of[i] for i in frames}
        assert frames == [i for i, s in enumerate(scene_of) if s in scenes]  # every keyframe of each scene
        chosen[fraction] = set(frames)
    # 8 training scenes of 2 keyframes: 1, 5 and 10% take the last scene, 25% the 4th and 8th, 100% all
    assert [len(chosen[f]) for f in FRACTIONS] == [2, 2, 2, 4, 16]
    assert chosen[0.01] == chosen[0.05] == chosen[0.1] < chosen[0.25] < chosen[1.0]


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5, float("nan"), float("inf"), True, "0.1", None])
def test_bad_fractions_are_refused(splits, fraction):
    train, val = splits
    with pytest.raises(RelvizError, match="fraction"):
        fewshot_frames(train, fraction)
    with pytest.raises(RelvizError, match="fraction"):
        finetune(tiny_student(), train, val, fraction, steps=1)


@pytest.mark.parametrize("options, field", [
    ({"steps": 0}, "steps"), ({"epochs": 1.5}, "epochs"), ({"batch": 0}, "batch"), ({"lr": -1.0}, "lr"),
    ({"lr_head": float("nan")}, "lr_head"), ({"momentum": 2.0}, "momentum"), ({"epochs": None}, "epochs")])
def test_bad_schedules_are_refused(splits, options, field):
    train, val = splits
    with pytest.raises(RelvizError, match=field):
        finetune(tiny_student(), train, val, 0.1, **options)


def test_probe_sample_is_the_smallest_keys_per_class(splits):
    train, _ = splits
    model, frames, cap, seed = tiny_student(), [0, 1], 300, 3
    x, y = probe_sample(model, train, frames, max_per_class=cap, seed=seed)
    # reference: all points' features and labels directly, and the same seeded keys drawn frame by frame
    feats, labels, keys = [], [], []
    gen = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        for i in frames:
            batch = collate([train[i]])
            feats.append(student_voxel_features(model, batch)[batch["inverse"]])
            labels.append(batch["labels"])
            keys.append(torch.rand(len(batch["labels"]), generator=gen, dtype=torch.float64))
    feats, labels, keys = torch.cat(feats), torch.cat(labels), torch.cat(keys)
    for c in range(1, 17):
        at = (labels == c).nonzero().flatten()
        expected = feats[at[keys[at].argsort()[:cap]]]
        got = x[y == c]
        assert len(got) == min(cap, len(at))
        # the same rows (one computation, same inputs and weights), each class in key order
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert set(y.unique().tolist()) == set(labels[labels > 0].unique().tolist())


@pytest.fixture(scope="module")
def tuned(splits):
    """A tiny student, its weights before, and its fine-tuning at 10% (2 steps of 1 frame) with the
    progress calls."""
    train, val = splits
    model = tiny_student()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []
    result = finetune(model, train, val, 0.1, steps=2, batch=1, seed=0, progress=lambda *a: calls.append(a))
    return model, before, calls, result


def test_finetune_trains_a_copy_and_scores_every_val_point(splits, tuned):
    train, val = splits
    model, before, calls, result = tuned
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and not model.training
    assert all(p.grad is None for p in model.parameters())
    json.dumps(result, allow_nan=False)  # JSON-ready for the job system
    assert result["method"] == "finetune" and len(result["loss"]) == 2 and result["frames"] == [
        train.sample_tokens[i] for i in fewshot_frames(train, 0.1)]
    assert [c for c in calls if c[0] == "train"] == [("train", 1, 2), ("train", 2, 2)]
    assert calls[-1] == ("evaluate", len(val), len(val))
    # every labelled val point once, frame by frame; IoU from the sum by the formula tp / (tp + fp + fn)
    cm, per_frame = np.array(result["confusion"]), np.array(result["confusion_per_frame"])
    assert per_frame.shape == (len(val), 17, 17) and (per_frame.sum(0) == cm).all()
    for i in range(len(val)):
        assert per_frame[i].sum() == int((val[i]["labels"] > 0).sum())
    assert cm[0].sum() == 0 and cm[:, 0].sum() == 0
    ious = []
    for c, name in enumerate(result["iou"], 1):
        tp, fp, fn = cm[c, c], cm[:, c].sum() - cm[c, c], cm[c].sum() - cm[c, c]
        iou = tp / (tp + fp + fn) if tp + fp + fn else None
        assert result["iou"][name] == iou  # one correctly rounded division of exact integers: exact
        ious += [] if iou is None else [iou]
    # a mean of n <= 16 values in [0, 1]: numpy's pairwise sum and Python's left-to-right sum each lie
    # within gamma(n) * sum of the exact sum; the division by n adds one rounding of the result
    n = len(ious)
    bound = 2 * gamma(n) * sum(ious) / n + U64 * sum(ious) / n
    assert math.isclose(result["miou"], sum(ious) / n, rel_tol=0, abs_tol=bound)
    # the interval's value is the same mIoU: count sums are exact in float64
    assert result["miou_interval"]["value"] == result["miou"] and result["miou_interval"]["n"] == len(val)


def test_label_efficiency_runs_shared_selections_once_and_repeats_finetune_exactly(splits, tuned):
    train, val = splits
    phases = []
    curve = label_efficiency(tiny_student(), train, val, fractions=(0.01, 0.1), steps=2, batch=1,
                             probe=dict(epochs=20, max_per_class=500),
                             progress=lambda phase, i, n: phases.append(phase))
    assert {p.split(":")[0] for p in phases} == {"finetune 1%", "probe 1%"}  # 10% takes the same frames
    assert curve["fractions"] == [0.01, 0.1] and curve["frame_fraction"] == [2 / 16, 2 / 16]
    assert curve["finetune"][0] == curve["finetune"][1] and curve["linear_probe"][0] == curve["linear_probe"][1]
    run = curve["runs"][0]
    assert run["linear_probe"]["probe"]["points"] <= 16 * 500
    # the same frames, schedule and seed as the fixture's run: the same steps and scores, bit for bit
    assert run["finetune"]["loss"] == tuned[3]["loss"]
    assert run["finetune"]["confusion_per_frame"] == tuned[3]["confusion_per_frame"]
    # the paired difference at m = 1 is the plain difference of the two mIoUs
    assert curve["finetune_minus_probe"][0]["value"] == run["finetune"]["miou"] - run["linear_probe"]["miou"]
    json.dumps(curve, allow_nan=False)
