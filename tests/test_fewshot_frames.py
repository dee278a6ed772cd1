"""Few-shot scored on a subset of the val frames (an experiment's ``fewshot_frames = "evaluation_set"``):
the linear probe's and the fine-tuning's confusion matrices, mIoU and per-scene values on the chosen
frames equal a scoring written out here on exactly those frames, with the frames grouped by their
own scenes; every frame (no subset, ``"all"``) is scored as before subsets existed; and the
experiment's evaluation scores few-shot on the same keyframes as its structure."""

import json

import numpy as np
import pytest
import torch

from fp_bounds import gamma
from relviz.data import NuScenesLidarSeg
from relviz.data.dataset import collate
from relviz.errors import InputError
from relviz.eval.features import dataset_for, point_features_of
from relviz.eval.fewshot import evaluate_fewshot, fewshot_frames, linear_probe, probe_sample
from relviz.eval.finetune import finetune, train_finetune
from relviz.eval.selection import EvalSet
from relviz.models import build_minkunet

WIDTH = 17  # classes 0..16 of nuScenes-lidarseg (0 ignored)
# keys a few-shot result had before subsets existed: an "all" result has exactly these
PROBE_KEYS = {"method", "miou", "interval_refused", "miou_per_scene", "frame_scenes", "miou_devkit", "classes",
              "absent_predictions", "iou", "miou_interval", "confusion", "confusion_per_frame", "fraction",
              "frame_rule", "scenes", "frames", "frame_count", "split_frames", "frame_fraction", "scene_count",
              "split_scenes", "scene_fraction", "seed", "probe"}


@pytest.fixture(scope="module")
def splits(nusc):
    """Labelled frames from mini_val (one of its 2 scenes at 50%: 2 keyframes); mini_train (8 scenes x 2
    keyframes) stands for a val split with several scenes, and 4 of its scenes x 1 keyframe for its
    evaluation set (each frame costs a forward pass: few of them)."""
    train = NuScenesLidarSeg(None, split="mini_val", nusc=nusc, load_images=False)
    val = NuScenesLidarSeg(None, split="mini_train", nusc=nusc, load_images=False)
    chosen = EvalSet(4, 1, 0).keyframes([val.scene_of(i) for i in range(len(val))])
    assert len(chosen) == 4 and len({val.scene_of(i) for i in chosen}) == 4
    return train, val, chosen


PROBE = dict(epochs=30, max_per_class=2000)  # a small probe: the head is not what is tested


def tiny_student(seed=0):
    torch.manual_seed(seed)
    return build_minkunet("MinkUNet14", out_channels=16, width=0.125, backend="torch").eval()


def confusion_by_hand(model, head, val, frames) -> np.ndarray:
    """[K, 17, 17]: for each frame, rows the labels 1..16, columns ``argmax head(features) + 1``, points
    labelled 0 left out, counted with numpy."""
    data = dataset_for(model, val)
    out = []
    model.eval()
    with torch.inference_mode():
        for i in frames:
            batch = collate([data[i]])
            predicted = head(point_features_of(model, batch, "cpu").float()).argmax(1).numpy() + 1
            labels = batch["labels"].numpy().astype(np.int64)
            keep = labels != 0
            out.append(np.bincount(labels[keep] * WIDTH + predicted[keep], minlength=WIDTH * WIDTH)
                       .reshape(WIDTH, WIDTH))
    return np.stack(out)


def miou_by_hand(cm: np.ndarray, classes: list[int]) -> float:
    """Mean over ``classes`` that have ground truth in ``cm`` of TP / (TP + FP + FN)."""
    values = []
    for c in classes:
        if cm[c].sum() == 0:
            continue
        tp, fn, fp = cm[c, c], cm[c].sum() - cm[c, c], cm[:, c].sum() - cm[c, c]
        values.append(tp / (tp + fp + fn))
    return float(np.mean(values))


def check_scores(result: dict, by_hand: np.ndarray, val, frames) -> None:
    """``result``'s per-frame confusion, mIoU, scene grouping and per-scene mIoU against ``by_hand``."""
    assert np.array_equal(np.asarray(result["confusion_per_frame"]), by_hand)
    total = by_hand.sum(0)
    classes = [c for c in range(1, WIDTH) if total[c].sum() > 0]
    # a mean of at most 16 ratios, each one rounding: both sides within 2 gamma(18) of the exact mean (<= 1)
    tol = 2 * gamma(18)
    assert abs(result["miou"] - miou_by_hand(total, classes)) <= tol
    names = sorted({val.scene_of(i) for i in frames})  # the scored frames' scenes, by name
    assert result["frame_scenes"] == [names.index(val.scene_of(i)) for i in frames]
    per_scene = [miou_by_hand(by_hand[[k for k, i in enumerate(frames) if val.scene_of(i) == name]].sum(0), classes)
                 for name in names]
    assert len(result["miou_per_scene"]) == len(names)
    assert all(abs(a - b) <= tol for a, b in zip(result["miou_per_scene"], per_scene))
    assert result["val_frames"] == [val.sample_tokens[i] for i in frames] and result["val_split_frames"] == len(val)
    assert result["interval_refused"].startswith(f"{len(names)} scenes")  # grouped by the scored frames' scenes


def test_the_probe_on_chosen_val_frames_scores_exactly_those_frames(splits, one_thread):
    train, val, chosen = splits
    model = tiny_student()
    subset = evaluate_fewshot(model, train, val, 0.5, seed=0, val_frames=chosen, **PROBE)
    # the probe, trained as evaluate_fewshot trains it: the same head whichever frames are scored
    x, y = probe_sample(model, train, fewshot_frames(train, 0.5), PROBE["max_per_class"], seed=0)
    head = linear_probe(x, y, PROBE["epochs"], seed=0)
    check_scores(subset, confusion_by_hand(model, head, val, chosen), val, chosen)


def test_fine_tuning_on_chosen_val_frames_scores_exactly_those_frames(splits, one_thread):
    train, val, chosen = splits
    model = tiny_student()
    schedule = dict(steps=2, batch=1, seed=0)
    subset = finetune(model, train, val, 0.5, val_frames=chosen, **schedule)
    student, head, _ = train_finetune(model, train, 0.5, **schedule)  # the same fine-tuning (one thread: same sums)
    check_scores(subset, confusion_by_hand(student, head.eval(), val, chosen), val, chosen)


@pytest.mark.parametrize("frames, message", [([], "at least one"), ([0, 0], "repeated"), ([16], "out-of-range")])
def test_bad_val_frames_are_refused_before_anything_is_trained(splits, frames, message):
    train, val, _ = splits
    with pytest.raises(InputError, match=f"^val_frames: .*{message}"):
        evaluate_fewshot(tiny_student(), train, val, 1.0, val_frames=frames)
    with pytest.raises(InputError, match=f"^val_frames: .*{message}"):
        finetune(tiny_student(), train, val, 1.0, steps=1, batch=1, val_frames=frames)


def test_an_experiment_scores_few_shot_on_its_evaluation_set_or_on_every_frame(synthetic_root, tmp_path, one_thread):
    """``fewshot_frames = "evaluation_set"``: the probe scored on the keyframes the structure reads
    (val_scenes x val_per_scene, drawn as the structure draws them: the same head, so the rows of
    every frame's scoring at those keyframes); ``"all"``: every frame, and the result has exactly the
    keys it had before subsets existed (results stored under "all" stay valid)."""
    from relviz.config import load_settings
    from relviz.eval.structure import evaluation_keyframes
    from relviz.experiment import EvaluationSpec, evaluate_run
    from relviz.models.checkpoint import file_sha256, save_checkpoint
    from relviz.train import from_dict

    config = from_dict({"dataset": str(synthetic_root)})
    val = NuScenesLidarSeg(synthetic_root, "v1.0-mini", "mini_val", load_images=False)
    model = tiny_student()
    results = {}
    for frames in ("evaluation_set", "all"):
        evaluation = EvaluationSpec(val_scenes=2, val_per_scene=1, linear_probe=(0.5,), split="mini_val",
                                    train_split="mini_val", fewshot_frames=frames)
        run = tmp_path / frames
        student = save_checkpoint(run / "student.safetensors", model, {"kind": "student", "loss": "relational",
                                                                        "architecture": model.config.to_dict()})
        # the structure stored already (only the few-shot is computed here)
        (run / "evaluation.json").write_text(json.dumps({
            "checkpoint_sha256": file_sha256(student),
            "protocol": json.loads(json.dumps(evaluation.protocol(config))), "structure": {"uniformity": 1.0}}))
        stored = evaluate_run(run, config, evaluation, load_settings())
        assert ("fewshot_frames" in stored["protocol"]) == (frames == "evaluation_set")  # "all": as before the field
        results[frames] = stored["linear_probe"]["0.5"]
    chosen, _ = evaluation_keyframes(val, EvalSet(2, 1, 0))
    subset, every = results["evaluation_set"], results["all"]
    assert len(chosen) == 2 and subset["val_frames"] == [val.sample_tokens[i] for i in chosen]
    assert subset["confusion_per_frame"] == [every["confusion_per_frame"][i] for i in chosen]
    names = sorted({val.scene_of(i) for i in range(len(val))})
    assert subset["frame_scenes"] == [names.index(val.scene_of(i)) for i in chosen] == [0, 1]
    assert every["frame_scenes"] == [names.index(val.scene_of(i)) for i in range(len(val))]
    assert set(every) == PROBE_KEYS
