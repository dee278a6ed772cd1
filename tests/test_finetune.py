"""Few-shot protocols: SLidR's scene rule for the labelled frames and its description, the streamed
probe sample (class-balanced and natural), fine-tuning a copy of the student (SLidR's loss on voxel
labels, batch norm trained or frozen, several seeds), and the label-efficiency curve."""

import copy
import inspect
import json
import math
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
import scipy.special
import torch

from fp_bounds import U64, gamma
from relviz.data import NuScenesLidarSeg
from relviz.data.classes import CLASSES
from relviz.data.dataset import collate
from relviz.errors import RelvizError
from relviz.eval.features import student_voxel_features
from relviz.eval.fewshot import (describe_selection, fewshot_frames, fewshot_scenes, probe_sample, segmentation_scores,
                                 selection)
from relviz.eval.finetune import (FINETUNE_SEEDS, FRACTIONS, batch_norms, finetune, finetune_loss, finetune_over_seeds,
                                  finetune_seeds, label_efficiency, seed_list, train_finetune, voxel_labels)
from relviz.models import build_minkunet
from relviz.segmentation import mean_iou_over
from relviz.stats import (MIN_SCENES, cluster_bootstrap, resample_multiplicities, seed_interval,
                          two_stage_bootstrap)
from test_lovasz import implementation_bound, lovasz_reference


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


def _every_point_with_its_key(model, dataset, frames, seed):
    """The reference of probe_sample: every point's feature [N, D] and label [N], computed directly, and
    the same seeded keys [N] drawn frame by frame."""
    feats, labels, keys = [], [], []
    gen = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        for i in frames:
            batch = collate([dataset[i]])
            feats.append(student_voxel_features(model, batch)[batch["inverse"]])
            labels.append(batch["labels"].long())
            keys.append(torch.rand(len(batch["labels"]), generator=gen, dtype=torch.float64))
    return torch.cat(feats), torch.cat(labels), torch.cat(keys)


def test_probe_sample_is_the_smallest_keys_per_class(splits):
    train, _ = splits
    model, frames, cap, seed = tiny_student(), [0, 1], 300, 3
    x, y = probe_sample(model, train, frames, max_per_class=cap, seed=seed)
    feats, labels, keys = _every_point_with_its_key(model, train, frames, seed)
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
    ious, ious_with_truth = [], []
    for c, name in enumerate(result["iou"], 1):
        tp, fp, fn = cm[c, c], cm[:, c].sum() - cm[c, c], cm[c].sum() - cm[c, c]
        iou = tp / (tp + fp + fn) if tp + fp + fn else None
        assert result["iou"][name] == iou  # one correctly rounded division of exact integers: exact
        ious += [] if iou is None else [iou]
        ious_with_truth += [iou] if cm[c].sum() > 0 else []
    assert result["classes"] == [CLASSES[c] for c in range(1, 17) if cm[c].sum() > 0]
    assert result["absent_predictions"] == {CLASSES[c]: int(cm[:, c].sum()) for c in range(1, 17)
                                            if cm[c].sum() == 0 and cm[:, c].sum() > 0}
    # a mean of n <= 16 values in [0, 1]: numpy's pairwise sum and Python's left-to-right sum each lie
    # within gamma(n) * sum of the exact sum; the division by n adds one rounding of the result
    for got, values in ((result["miou"], ious_with_truth), (result["miou_devkit"], ious)):
        n = len(values)
        bound = 2 * gamma(n) * sum(values) / n + U64 * sum(values) / n
        assert math.isclose(got, sum(values) / n, rel_tol=0, abs_tol=bound)
    # under 10 val scenes: no interval (the reason instead), and each scene's mIoU over the same fixed class
    # list (count sums are exact in float64, so the same arithmetic gives the same bits)
    scenes = np.array(result["frame_scenes"])
    n_scenes = len(set(scenes.tolist()))
    assert result["miou_interval"] is None and result["interval_refused"].startswith(f"{n_scenes} scene")
    listed = [c for c in range(1, 17) if cm[c].sum() > 0]
    assert result["miou_per_scene"] == [mean_iou_over(per_frame[scenes == s].sum(0), listed) for s in range(n_scenes)]
    assert result["schedule"]["loss"] == "cross_entropy+lovasz" and result["schedule"]["labels"] == "voxel-majority"
    assert result["schedule"]["bn"] == "train" and result["schedule"]["bn_momentum"] == 0.02


def test_label_efficiency_runs_shared_selections_once_and_repeats_finetune_exactly(splits, tuned):
    train, val = splits
    phases = []
    curve = label_efficiency(tiny_student(), train, val, fractions=(0.01, 0.1), finetune_seeds=1, steps=2, batch=1,
                             probe=dict(epochs=20, max_per_class=500, balance="natural"),
                             progress=lambda phase, i, n: phases.append(phase))
    assert {p.split(":")[0] for p in phases} == {"finetune 1%, seed 0", "probe 1%"}  # 10% takes the same frames
    assert curve["fractions"] == [0.01, 0.1] and curve["frame_fraction"] == [2 / 16, 2 / 16]
    assert curve["finetune"][0] == curve["finetune"][1] and curve["linear_probe"][0] == curve["linear_probe"][1]
    run = curve["runs"][0]
    assert run["linear_probe"]["probe"]["points"] <= 16 * 500 and run["linear_probe"]["probe"]["balance"] == "natural"
    # the same frames, schedule and seed as the fixture's run: the same steps and scores, bit for bit
    assert curve["finetune_seeds"] == [0] and run["finetune"]["seeds"] == [0]
    assert run["finetune"]["seed_runs"][0]["loss"] == tuned[3]["loss"]
    assert run["finetune"]["confusion_per_frame"] == tuned[3]["confusion_per_frame"]  # one seed: its own counts
    assert run["finetune"]["miou"] == tuned[3]["miou"] and run["finetune"]["seed_interval"] is None
    # the paired difference at m = 1 is the plain difference of the two mIoUs (same frames, same class list)
    assert run["finetune"]["classes"] == run["linear_probe"]["classes"]
    assert curve["finetune_minus_probe"][0]["value"] == run["finetune"]["miou"] - run["linear_probe"]["miou"]
    json.dumps(curve, allow_nan=False)


def test_probe_sample_at_natural_frequencies_is_a_uniform_draw_of_the_same_size(splits):
    train, _ = splits
    model, frames, cap, seed = tiny_student(), [0, 1], 300, 3
    x, y = probe_sample(model, train, frames, max_per_class=cap, seed=seed, balance="natural")
    feats, labels, keys = _every_point_with_its_key(model, train, frames, seed)
    labelled = (labels >= 1).nonzero().flatten()
    size = sum(min(cap, int((labels == c).sum())) for c in range(1, 17))
    assert len(y) == size < len(labelled)  # the class-balanced sample's total; the cap binds somewhere
    # the `size` smallest keys among all labelled points: a uniform random subset, whatever the class
    chosen = labelled[keys[labelled].argsort()[:size]]
    torch.testing.assert_close(x, feats[chosen], rtol=0, atol=0)  # same rows of one computation
    assert torch.equal(y, labels[chosen])
    # a cap above every class count: the natural sample is every labelled point, at its frequency
    _, y_all = probe_sample(model, train, frames, max_per_class=len(labels), seed=seed, balance="natural")
    assert torch.equal(torch.bincount(y_all, minlength=17), torch.bincount(labels[labelled], minlength=17))
    with pytest.raises(RelvizError, match="balance"):
        probe_sample(model, train, frames, balance="uniform")


def test_selection_is_described_with_its_real_counts(splits):
    train, _ = splits
    names = sorted({train.scene_of(i) for i in range(len(train))})
    assert len(train) == 16 and len(names) == 8  # mini_train of the fixture: 8 scenes x 2 keyframes
    _, tenth = selection(train, 0.1)  # 1/10 of 8 scenes is none: the rule takes the last scene
    assert (tenth["frame_count"], tenth["split_frames"], tenth["scene_count"], tenth["split_scenes"]) == (2, 16, 1, 8)
    assert tenth["frame_fraction"] == tenth["scene_fraction"] == 2 / 16
    assert describe_selection(tenth) == f"1 of 8 scenes (12.5%), 2 of 16 frames = 12.5% (requested 10%): {names[7]}"
    _, quarter = selection(train, 0.25)
    assert describe_selection(quarter) == (f"2 of 8 scenes (25%), 4 of 16 frames = 25% (requested 25%): "
                                           f"{names[3]}, {names[7]}")
    _, everything = selection(train, 1.0)
    assert describe_selection(everything, max_names=2) == (f"8 of 8 scenes (100%), 16 of 16 frames = 100% "
                                                           f"(requested 100%): {names[0]}, {names[1]} and 6 more")
    # a result stored before the split's counts were: the frame total from frame_fraction, no scene share
    old = {k: tenth[k] for k in ("fraction", "scenes", "frames", "frame_fraction")}
    assert describe_selection(old) == f"1 scene, 2 of 16 frames = 12.5% (requested 10%): {names[7]}"


def test_voxel_labels_are_the_majority_of_each_voxels_labelled_points(splits):
    rng = np.random.default_rng(0)
    n_voxels = 60
    inverse = rng.integers(0, n_voxels, size=400)
    labels = rng.choice([0, 0, 1, 2, 3, 16], size=400)  # many unlabelled points, few classes: ties happen
    got = voxel_labels(torch.from_numpy(labels), torch.from_numpy(inverse), n_voxels)
    expected = []
    for v in range(n_voxels):
        votes = Counter(int(label) for label, at in zip(labels, inverse) if at == v and label != 0)
        top = max(votes.values(), default=0)
        expected.append(min((c for c, n in votes.items() if n == top), default=0))  # ties: the smaller class
    assert got.tolist() == expected and 0 in expected
    # on collated frames: one label per voxel of the batch
    train, _ = splits
    batch = collate([train[0], train[1]])
    per_voxel = voxel_labels(batch["labels"], batch["inverse"], len(batch["coordinates"]))
    assert per_voxel.shape == (len(batch["coordinates"]),)
    for v in torch.unique(batch["inverse"])[:50].tolist():
        votes = Counter(batch["labels"][batch["inverse"] == v].tolist())
        votes.pop(0, None)
        top = max(votes.values(), default=0)
        assert per_voxel[v] == min((c for c, n in votes.items() if n == top), default=0)


def test_the_finetuning_loss_is_cross_entropy_plus_lovasz_softmax():
    rng = np.random.default_rng(1)
    n, c = 12, 5
    logits = rng.normal(0, 2, size=(n, c))
    target = rng.integers(-1, c, size=n)  # -1: a voxel without label, left out of both terms
    target[:2] = [0, 3]
    got = finetune_loss(torch.from_numpy(logits), torch.from_numpy(target)).item()
    kept = target >= 0
    probs = scipy.special.softmax(logits[kept], axis=1)
    cross_entropy = float(np.mean(-np.log(probs[np.arange(kept.sum()), target[kept]])))
    lovasz = lovasz_reference(probs, target[kept], ignore=None)
    # cross-entropy: each row's log-softmax is C exponentials, a sum and a log on logits below 8 in size,
    # within gamma(C + 3) * (1 + 2 * 8 + log C) in either implementation; the mean adds gamma(n).
    # Lovász: the two softmaxes differ by <= gamma(C + 3) per entry, and the extension is 1-Lipschitz in
    # the max norm per class (its increments are >= 0 and sum to <= 1); plus its own rounding
    assert np.abs(logits).max() < 8
    ce_bound = 2 * gamma(c + 3) * (1 + 16 + math.log(c)) + 2 * gamma(n) * cross_entropy
    bound = ce_bound + 2 * gamma(c + 3) + implementation_bound(int(kept.sum()), c) + 2 * U64
    assert abs(Fraction(got) - (Fraction(cross_entropy) + lovasz)) <= bound
    cross_entropy_only = finetune_loss(torch.from_numpy(logits), torch.from_numpy(target), loss="cross_entropy")
    assert abs(cross_entropy_only.item() - cross_entropy) <= ce_bound
    with pytest.raises(RelvizError, match="loss"):
        finetune_loss(torch.from_numpy(logits), torch.from_numpy(target), loss="focal")


def test_a_finetuning_step_is_that_loss_on_the_voxels_of_its_batch(splits):
    train, _ = splits
    model, seed = tiny_student(), 5
    _, _, result = train_finetune(model, train, 0.1, steps=1, batch=2, augment=False, seed=seed)
    # the first step by hand: a copy in training mode, the seeded head, both frames of the 10% selection in
    # the loop's seeded order, the voxel labels and the loss on the voxels' features
    student = copy.deepcopy(model).train()
    torch.manual_seed(seed)
    head = torch.nn.Linear(student.config.out_channels, 16)
    frames = fewshot_frames(train, 0.1)
    order = torch.randperm(len(frames), generator=torch.Generator().manual_seed(seed * 100_003)).tolist()
    batch = collate([train[frames[j]] for j in order])
    target = voxel_labels(batch["labels"], batch["inverse"], len(batch["coordinates"])) - 1
    with torch.no_grad():
        expected = finetune_loss(head(student_voxel_features(student, batch)), target).item()
    assert result["loss"] == [expected]  # one computation on the same inputs and weights


def test_batch_norm_momentum_is_slidrs_and_frozen_keeps_the_pretrained_statistics(splits):
    train, _ = splits
    model = tiny_student()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    momenta = [layer.momentum for layer in batch_norms(model)]
    trained, _, info = train_finetune(model, train, 0.1, steps=1, batch=1)
    frozen, _, frozen_info = train_finetune(model, train, 0.1, steps=1, batch=1, bn="frozen")
    assert all(layer.momentum == 0.02 for layer in batch_norms(trained) + batch_norms(frozen))
    assert [layer.momentum for layer in batch_norms(model)] == momenta and 0.02 not in momenta  # caller's untouched
    assert info["schedule"]["bn"] == "train" and frozen_info["schedule"]["bn"] == "frozen"
    statistics = [k for k in before if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    affine = [k for k in before if k.endswith("bn.weight") or k.endswith("bn.bias")]
    assert statistics and affine
    after_frozen, after_trained = frozen.state_dict(), trained.state_dict()
    assert all(torch.equal(after_frozen[k], before[k]) for k in statistics)
    assert not all(torch.equal(after_trained[k], before[k]) for k in statistics)
    assert not all(torch.equal(after_frozen[k], before[k]) for k in affine)  # the affine parameters still train
    assert frozen.training and not any(layer.training for layer in batch_norms(frozen))
    with pytest.raises(RelvizError, match="bn"):
        train_finetune(model, train, 0.1, steps=1, bn="recomputed")


def test_finetune_seeds_reports_each_seed_and_an_interval_over_them(splits):
    train, val = splits
    assert len(inspect.signature(finetune_seeds).parameters["seeds"].default) >= 3  # the default: 3 seeds
    seeds = (0, 1)  # enough for an interval, and fast
    report = finetune_seeds(tiny_student(), train, val, 0.1, seeds=seeds, steps=1, batch=1)
    json.dumps(report, allow_nan=False)
    assert report["seeds"] == list(seeds) and report["frames"] == selection(train, 0.1)[1]["frames"]
    for mode in ("train", "frozen"):
        block = report["bn"][mode]
        assert [r["seed"] for r in block["runs"]] == list(seeds)
        assert all(r["schedule"]["bn"] == mode for r in block["runs"])
        assert block["miou"] == [r["miou"] for r in block["runs"]]
        assert block["seed_interval"] == seed_interval(block["miou"]).as_dict()
        assert block["mean"] == block["seed_interval"]["value"]
    assert report["bn"]["train"]["runs"][0]["loss"] != report["bn"]["train"]["runs"][1]["loss"]  # seeds differ
    differences = [a - b for a, b in zip(report["bn"]["frozen"]["miou"], report["bn"]["train"]["miou"])]
    assert report["frozen_minus_train"]["difference"] == differences
    assert report["frozen_minus_train"]["seed_interval"] == seed_interval(differences).as_dict()
    with pytest.raises(RelvizError, match="seeds"):
        finetune_seeds(tiny_student(), train, val, 0.1, seeds=(0,), steps=1)


def test_label_efficiency_with_two_finetune_seeds_gives_each_seeds_own_run_and_their_mean(splits):
    train, val = splits
    # a small head learning rate: after 2 steps the seeds' heads still differ (SLidR's 2.0 makes both
    # predict the same classes here, so their mIoUs would be equal and their mean one of them)
    schedule = dict(steps=2, batch=1, lr_head=0.05)
    curve = label_efficiency(tiny_student(), train, val, fractions=(0.1,), finetune_seeds=2,
                             probe=dict(epochs=5, max_per_class=100), **schedule)
    # the second seed on its own (the first is the single-seed path every other test checks): the curve's
    # seed 1 is that run, not seed 0 again
    alone = finetune(tiny_student(), train, val, 0.1, seed=1, **schedule)
    tuned_curve = curve["runs"][0]["finetune"]
    per_seed = tuned_curve["miou_per_seed"]
    assert curve["finetune_seeds"] == tuned_curve["seeds"] == [0, 1]
    assert per_seed[1] == alone["miou"] and tuned_curve["seed_runs"][1]["loss"] == alone["loss"]
    assert curve["finetune_per_seed"] == [per_seed] and tuned_curve["seed_runs"][0]["seed"] == 0
    assert per_seed[0] != per_seed[1]  # the seeds differ: a mean of two values, not one twice
    assert curve["finetune"] == [(per_seed[0] + per_seed[1]) / 2]
    assert tuned_curve["seed_interval"] == seed_interval(per_seed).as_dict()
    # the val split is one scene: no interval over scenes, the reason, and the scene's mean over the seeds
    assert tuned_curve["miou_interval"] is None and tuned_curve["two_stage"] is None
    assert curve["finetune_interval"] == [None] and tuned_curve["interval_refused"].startswith("1 scene")
    assert tuned_curve["miou_per_scene"] == [pytest.approx(curve["finetune"][0], abs=2 * gamma(2) * 1.0)]
    # fine-tuned minus probe: the mean over the seeds minus the probe, on the same frames
    difference = curve["finetune_minus_probe"][0]["value"]
    assert difference == pytest.approx(curve["finetune"][0] - curve["linear_probe"][0], abs=4 * gamma(2) * 1.0)
    assert describe_selection(tuned_curve) == describe_selection(alone)
    json.dumps(curve, allow_nan=False)


def test_finetune_seed_counts_and_lists():
    assert FINETUNE_SEEDS >= 3  # the audit's minimum by default
    assert inspect.signature(label_efficiency).parameters["finetune_seeds"].default == FINETUNE_SEEDS
    assert seed_list(3, first=5) == [5, 6, 7] and seed_list([4, 1]) == [4, 1]
    for bad in (0, -1, 2.5, True, [], [1, 1], [0, "1"], "3"):
        with pytest.raises(RelvizError, match="finetune_seeds"):
            seed_list(bad)


def _miou_at(per_frame, frame_scene, m, classes):
    """mIoU over ``classes`` of the frames' confusions summed with each frame's scene multiplicity, written out."""
    cm = np.zeros(per_frame.shape[1:])
    for frame, scene in enumerate(frame_scene):
        cm += m[scene] * per_frame[frame]
    return mean_iou_over(cm, classes)


def test_finetune_over_seeds_intervals_equal_a_direct_computation():
    """Three seeds' confusions on 24 frames of 12 scenes: the mean, the interval over scenes of the mean
    over seeds, each scene alone, the two-stage bootstrap and the stored replicates, each against the
    mIoU of the confusions summed frame by frame (:func:`_miou_at`)."""
    rng = np.random.default_rng(4)
    n_scenes, frames_per_scene, seeds = MIN_SCENES + 2, 2, [0, 1, 2]
    frame_scene = np.repeat(np.arange(n_scenes), frames_per_scene)
    runs = []
    for seed in seeds:
        per_frame = rng.integers(0, 40, (len(frame_scene), 17, 17))
        per_frame[:, 0, :] = per_frame[:, :, 0] = 0  # label 0 ignored
        per_frame[:, 16, :] = 0  # no ground truth of class 16, but predictions of it: outside the class list
        per_frame[::3, 5, :] = 0  # class 5 missing from some frames
        runs.append({**segmentation_scores(per_frame, seed=seed, scenes=frame_scene.tolist()), "seed": seed,
                     "schedule": {"steps": 1}, "device": "cpu", "wall_s": {"train": 1.0, "evaluate": 0.5}})
    out = finetune_over_seeds(runs, n_resamples=200, replicates=50)
    json.dumps(out, allow_nan=False)
    per_frame = [np.array(r["confusion_per_frame"]) for r in runs]
    classes = [c for c in range(1, 17) if per_frame[0][:, c].sum() > 0]
    assert 16 not in classes

    def mean_over_seeds(m):  # scene multiplicities [..., S] -> [...]
        rows = np.asarray(m).reshape(-1, n_scenes)
        values = [np.mean([_miou_at(pf, frame_scene, row, classes) for pf in per_frame]) for row in rows]
        return np.array(values).reshape(np.shape(m)[:-1])

    # a mean of 3 seeds' means of at most 15 IoUs, each IoU a quotient of exact integer sums
    tol = 2 * gamma(3 + 15 + 1) * 1.0
    assert out["seeds"] == seeds and out["miou_per_seed"] == [r["miou"] for r in runs]
    assert out["miou"] == pytest.approx(np.mean([r["miou"] for r in runs]), abs=tol)
    assert out["seed_interval"] == seed_interval(out["miou_per_seed"]).as_dict()
    assert out["miou_per_scene"] == pytest.approx(mean_over_seeds(np.eye(n_scenes)), abs=tol)
    reference = cluster_bootstrap(mean_over_seeds, n_scenes, 200, seed=0).as_dict()
    assert out["interval_refused"] is None
    for key in ("value", "low", "high", "stderr"):
        assert out["miou_interval"][key] == pytest.approx(reference[key], abs=tol), key
    draws = resample_multiplicities(n_scenes, 200, 0)
    replicates = np.array([[_miou_at(pf, frame_scene, m, classes) for m in draws] for pf in per_frame])
    two = two_stage_bootstrap(out["miou_per_seed"], replicates).as_dict()
    for key in ("value", "low", "high", "stderr", "p"):
        assert out["two_stage"][key] == pytest.approx(two[key], abs=tol), key
    assert out["replicates"]["seed"] == 0 and out["replicates"]["n"] == 50
    assert out["replicates"]["values"]["miou"] == pytest.approx(
        mean_over_seeds(resample_multiplicities(n_scenes, 50, 0)), abs=tol)
    # pooled counts and summed times; each seed's result kept
    assert out["confusion_per_frame"] == sum(per_frame).tolist() and out["wall_s"] == {"train": 3.0, "evaluate": 1.5}
    assert out["seed_runs"] == runs
