"""Few-shot 3D segmentation: which labelled frames (SLidR's scene rule), a linear probe on frozen
point features, and the scoring shared with fine-tuning (:mod:`relviz.eval.finetune`).

The frame rule, for a label fraction f in (0, 1]:

* the scenes of the training split are put in name order (the order of nuscenes-devkit's split
  lists) and numbered 1..S;
* scene i is taken when ``floor(i * f) > floor((i - 1) * f)``: with f = 1/k these are the k-th, 2k-th,
  ... scenes, exactly SLidR's ``skip_counter % dataset_skip_step == 0`` (``dataset_skip_step`` = 100
  for 1%, 20 for 5%, 10 for 10%, 4 for 25%, 1 for 100%); any other f takes floor(S * f) scenes spread
  evenly;
* a split with fewer than 1/f scenes (nuScenes-mini's 8 training scenes at 1, 5 or 10%) would get
  none (SLidR then fails with an empty loader, valeoai/SLidR#19); the rule is applied with
  f' = max(f, 1/S) instead, which takes the last scene;
* every keyframe of a taken scene is labelled, in time order: whole scenes, never part of one.

The same fraction on the same split always gives the same frames. Selections nest when one step
divides the other (SLidR's 1% is inside its 5%, both inside 10% and inside 25%; 10% is not inside
25%). Because whole scenes are taken (and the floor above), the labelled share is not the requested
one: every result stores the scenes and frames taken, their counts and their shares of the split
(:func:`selection`), and :func:`describe_selection` writes them as one line ("1 of 8 scenes (12.5%),
8 of 64 frames = 12.5% (requested 10%): scene-1100") for pages and reports.

The linear probe trains on a sample of the labelled points of those frames: class-balanced by
default (at most ``max_per_class`` points of each class, so the rare classes weigh as much as the
frequent ones; SLidR's linear probing, ``freeze_layers=True`` on the whole split, trains its last
layer on every labelled voxel with the fine-tuning loss), or, as a control, the same
number of points drawn uniformly (``balance="natural"``, classes at their natural frequencies, as
fine-tuning sees them). Scores use relviz's fixed class list (the classes with ground truth in the
scored frames) with nuscenes-devkit's rule beside it (:func:`segmentation_scores`).

The scored frames are every frame of the val split, or (``val_frames``) given indices into it, such
as an experiment's evaluation set (a few keyframes spread over some scenes): the scores, the scene
ids of the intervals and the per-scene values are then those of the given frames and their scenes,
and the result names them (:func:`val_selection`); a result over every frame is as it always was.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from fractions import Fraction
from numbers import Integral, Real
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from relviz.data.classes import CLASSES
from relviz.data.dataset import NuScenesLidarSeg, collate
from relviz.errors import InputError, InputTypeError
from relviz.eval.features import dataset_for, point_features_of
from relviz.eval.keyframe_sums import ConfusionSums
from relviz.segmentation import (absent_predictions, classes_with_ground_truth, confusion_matrix, iou_per_class,
                                 mean_iou, mean_iou_over)
from relviz.eval.selection import scene_ids
from relviz.stats import cluster_bootstrap, refusal, resample_multiplicities, scene_statistic

FRAME_RULE = "slidr-scene-skip/1"  # name and version of the rule above, stored with every result
NUM_CLASSES = 16  # the probe's and the fine-tuning head's outputs: classes 1..16, label 0 ignored


def class_count(dataset) -> int:
    """The classes a head predicts on ``dataset`` (1..C, 0 ignored): nuScenes' 16, SemanticKITTI's 19."""
    return int(getattr(dataset, "num_classes", NUM_CLASSES))


def class_names(dataset) -> tuple[str, ...]:
    """Names of classes 0..C of ``dataset`` (0: ignore)."""
    return tuple(getattr(dataset, "classes", CLASSES))

Progress = Callable[[str, int, int], None]  # (phase, done, total)


def check_number(name: str, value, integer: bool = False, low: float = 0.0, strict: bool = True,
                 high: float = math.inf) -> None:
    """Refuse ``value`` unless it is a finite number (an integer if ``integer``) above ``low`` (or at
    least ``low`` when not ``strict``) and at most ``high``; the message names ``name``."""
    kind = Integral if integer else Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise InputTypeError(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not (math.isfinite(value) and (value > low if strict else value >= low) and value <= high):
        raise InputError(f"{name} must be {'>' if strict else '>='} {low:g}"
                         f"{'' if high == math.inf else f' and <= {high:g}'}, got {value}")


def label_fraction(fraction) -> Fraction:
    """``fraction`` as an exact rational (so 29/100 * 100 is 29, not 28.999...), checked to lie in (0, 1]."""
    if isinstance(fraction, bool) or not isinstance(fraction, Real):
        raise InputTypeError(f"fraction must be a number in (0, 1], got {fraction!r}")
    if not (math.isfinite(fraction) and 0 < fraction <= 1):
        raise InputError(f"fraction must be in (0, 1] (0.01 = 1% of the frames), got {fraction}")
    return Fraction(fraction).limit_denominator(1_000_000) or Fraction(1, 1_000_000)


def fewshot_scenes(scenes: Sequence[str], fraction: float) -> list[str]:
    """The scenes the rule of this module takes from the training split ``scenes`` (any order;
    duplicates ignored), in name order."""
    names = sorted(set(scenes))
    if not names:
        raise InputError("the training split has no scene to take labelled frames from")
    f = max(label_fraction(fraction), Fraction(1, len(names)))
    p, q = f.numerator, f.denominator
    return [name for i, name in enumerate(names, 1) if (i * p) // q > ((i - 1) * p) // q]


def fewshot_frames(dataset: NuScenesLidarSeg, fraction: float = 0.01) -> list[int]:
    """Indices of the labelled frames: every keyframe of the scenes :func:`fewshot_scenes` takes,
    in the dataset's order. Deterministic."""
    chosen = set(fewshot_scenes([dataset.scene_of(i) for i in range(len(dataset))], fraction))
    return [i for i in range(len(dataset)) if dataset.scene_of(i) in chosen]


def selection(dataset: NuScenesLidarSeg, fraction: float) -> tuple[list[int], dict]:
    if hasattr(dataset, "selection"):  # a dataset with its field's rule (SemanticKITTI: every k-th scan)
        return dataset.selection(fraction)
    return _scene_selection(dataset, fraction)


def _scene_selection(dataset: NuScenesLidarSeg, fraction: float) -> tuple[list[int], dict]:
    """(frame indices, the JSON description of the selection every result carries): the requested
    ``fraction``, ``frame_rule``, the labelled ``scenes`` and ``frames`` (names and sample tokens),
    ``frame_count`` of ``split_frames`` (``frame_fraction``) and ``scene_count`` of ``split_scenes``
    (``scene_fraction``). :func:`describe_selection` writes it as one line."""
    frames = fewshot_frames(dataset, fraction)
    chosen = {dataset.scene_of(i) for i in frames}
    split_scenes = len({dataset.scene_of(i) for i in range(len(dataset))})
    return frames, {"fraction": float(fraction), "frame_rule": FRAME_RULE, "scenes": sorted(chosen),
                    "frames": [dataset.sample_tokens[i] for i in frames], "frame_count": len(frames),
                    "split_frames": len(dataset), "frame_fraction": len(frames) / len(dataset),
                    "scene_count": len(chosen), "split_scenes": split_scenes, "scene_fraction": len(chosen) / split_scenes}


def _percent(x: float) -> str:
    return f"{100 * x:.3g}%"


def describe_selection(result: Mapping, max_names: int = 4) -> str:
    """One line saying which labels a few-shot ``result`` (or its :func:`selection` dict) really had,
    e.g. "1 of 8 scenes (12.5%), 16 of 128 frames = 12.5% (requested 10%): scene-1100". Results
    stored before ``split_frames`` existed give the split's frame count from ``frame_fraction`` and
    leave the scene share out. At most ``max_names`` scene names, then how many more."""
    scenes, n_frames = list(result["scenes"]), len(result["frames"])
    split_frames = result.get("split_frames") or round(n_frames / result["frame_fraction"])
    counted = f"{len(scenes)} scene{'' if len(scenes) == 1 else 's'}"
    if result.get("split_scenes"):
        counted = f"{len(scenes)} of {result['split_scenes']} scenes ({_percent(len(scenes) / result['split_scenes'])})"
    names = ", ".join(scenes[:max_names]) + (f" and {len(scenes) - max_names} more" if len(scenes) > max_names else "")
    return (f"{counted}, {n_frames} of {split_frames} frames = {_percent(n_frames / split_frames)} "
            f"(requested {_percent(result['fraction'])}): {names}")


def frame_scenes(dataset, frames: Sequence[int] | None = None) -> list[int]:
    """Each scored frame's scene [K] as an index 0..S-1 among the scenes of the scored frames (the
    cluster of the intervals over scenes): of every frame of ``dataset``, or of ``frames`` (indices
    into it, in the order they are scored)."""
    names = [dataset.scene_of(i) for i in range(len(dataset))]
    return scene_ids(names, range(len(names)) if frames is None else frames).tolist()


def scored_frames(dataset, frames: Sequence[int] | None) -> list[int]:
    """The indices of ``dataset`` that are scored: every frame (``frames`` None) or ``frames``, checked
    to be distinct indices into it (K >= 1)."""
    if frames is None:
        return list(range(len(dataset)))
    chosen = [int(i) for i in frames]
    if not chosen:
        raise InputError("val_frames: give at least one val frame to score (or None for every frame)")
    bad = [i for i in chosen if not 0 <= i < len(dataset)]
    if bad or len(set(chosen)) != len(chosen):
        raise InputError(f"val_frames: expected distinct indices into the {len(dataset)} val frames, got "
                         f"{'out-of-range ' + str(bad[:4]) if bad else 'a repeated index'}")
    return chosen


def segmentation_scores(per_frame: np.ndarray, n_resamples: int = 1000, seed: int = 0,
                        scenes: Sequence[int] | None = None, names: Sequence[str] = CLASSES) -> dict:
    """Scores of per-frame confusion matrices [K, C + 1, C + 1] (class ``names`` [C + 1]), JSON-ready: ``miou`` of their sum over the
    fixed list ``classes`` (those with ground truth in the scored frames, :mod:`relviz.segmentation`;
    None when no class has an IoU), ``miou_devkit`` by nuscenes-devkit's rule (a predicted absent class
    counts 0), ``absent_predictions`` (class name -> points predicted as a class outside the list),
    per-class ``iou`` by class name (None where undefined), ``miou_interval`` (of ``miou``: 95%
    percentile bootstrap over the scenes of ``scenes`` [K], the frames' scene ids; None, with
    ``interval_refused`` saying why, under :data:`relviz.stats.MIN_SCENES` scenes or when the scenes are
    not given), ``miou_per_scene`` and ``frame_scenes``, the summed ``confusion`` and
    ``confusion_per_frame`` (for paired comparisons on the same frames)."""
    per_frame = np.asarray(per_frame, dtype=np.int64)
    cm = per_frame.sum(0)
    iou = iou_per_class(cm)
    classes = classes_with_ground_truth(cm)
    miou, miou_devkit = mean_iou_over(cm, classes), mean_iou(cm)
    interval, why, per_scene = None, "the frames' scenes are not known", None
    if scenes is not None:
        ids = np.asarray(scenes, dtype=np.int64)
        if ids.shape != (len(per_frame),):
            raise InputError(f"scenes must give one scene id per scored frame ({len(per_frame)}), got {ids.shape}")
        n_scenes = int(ids.max()) + 1 if len(ids) else 0
        sums = ConfusionSums(per_frame)
        statistic = scene_statistic(lambda m: sums.miou(m, classes), ids)
        per_scene = [None if math.isnan(v) else float(v) for v in statistic(np.eye(n_scenes))]  # each scene alone
        why = refusal(n_scenes)
        if why is None and not math.isnan(miou):
            interval = cluster_bootstrap(statistic, n_scenes, n_resamples, seed=seed).as_dict()
    return {"miou": None if math.isnan(miou) else miou, "interval_refused": None if interval else why,
            "miou_per_scene": per_scene, "frame_scenes": None if scenes is None else list(map(int, scenes)),
            "miou_devkit": None if math.isnan(miou_devkit) else miou_devkit,
            "classes": [names[c] for c in classes],
            "absent_predictions": {names[c]: n for c, n in absent_predictions(cm, classes).items()},
            "iou": {names[c]: (None if np.isnan(iou[c]) else float(iou[c])) for c in range(1, len(cm))},
            "miou_interval": interval, "confusion": cm.tolist(), "confusion_per_frame": per_frame.tolist()}


def miou_on_scene_resamples(result: Mapping, n: int, seed: int = 0) -> list[float | None] | None:
    """A few-shot result's mIoU (its ``confusion_per_frame`` over the fixed list of classes with ground
    truth in its frames) on ``n`` scene resamples of its frames' scenes (``frame_scenes``) drawn by
    :func:`relviz.stats.resample_multiplicities` with ``seed``: every run scored on the same frames gets
    the same draws, so an experiment pairs its runs on them; they are the structure's own draws when the
    few-shot frames are the structure's evaluation set (``fewshot_frames = "evaluation_set"``: the same
    scenes, indexed alike by :func:`relviz.eval.selection.scene_ids`). None when the frames' scenes are
    not known or number under :data:`relviz.stats.MIN_SCENES`."""
    scenes = result.get("frame_scenes")
    if not scenes or n < 1:
        return None
    ids = np.asarray(scenes, dtype=np.int64)
    n_scenes = int(ids.max()) + 1
    if refusal(n_scenes):
        return None
    sums = ConfusionSums(np.asarray(result["confusion_per_frame"], dtype=np.int64))
    classes = sums.classes
    values = scene_statistic(lambda m: sums.miou(m, classes), ids)(resample_multiplicities(n_scenes, n, seed))
    return [float(v) if math.isfinite(v) else None for v in values]


@contextmanager
def eval_mode(model):
    """``model`` in eval mode (batch norm from its running statistics) for the block, then back to
    the mode the caller had it in; a feature set (no modes) as it is."""
    if not isinstance(model, torch.nn.Module):
        yield model
        return
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def point_features(model, batch: dict, device) -> torch.Tensor:
    """The student's features [sum N, D] at every point of a collated batch (voxel -> point), or a
    feature set's (:func:`~relviz.eval.features.point_features_of`): the probe trains and scores on
    points either way, so a feature set's probe is the model's on the same numbers."""
    return point_features_of(model, batch, device)


def score_on(model, head: torch.nn.Module, val_set: NuScenesLidarSeg, device="cpu",
             progress: Progress | None = None, frames: Sequence[int] | None = None) -> np.ndarray:
    """Confusion matrices [K, C + 1, C + 1] (C = :func:`class_count` of ``val_set``), one per scored
    val frame (every frame of ``val_set``, or the indices ``frames`` [K] in their order), of
    ``argmax head(features) + 1`` against the labels (one frame at a time, the model in eval mode and
    inference mode)."""
    width = class_count(val_set) + 1
    chosen = scored_frames(val_set, frames)
    val_set = dataset_for(model, val_set)
    per_frame = np.zeros((len(chosen), width, width), dtype=np.int64)
    with torch.inference_mode(), eval_mode(model):
        for k, i in enumerate(chosen):
            batch = collate([val_set[i]])
            if "labels" not in batch:
                raise InputError(f"val frame {val_set.sample_tokens[i]} has no lidarseg labels to score against")
            logits = head(point_features(model, batch, device).float())
            per_frame[k] = confusion_matrix(logits.argmax(1).cpu() + 1, batch["labels"], num_classes=width)
            if progress:
                progress("evaluate", k + 1, len(chosen))
    return per_frame


def val_selection(val_set, frames: Sequence[int] | None) -> dict:
    """What a result scored on a subset of the val frames says about it: ``val_frames`` (their sample
    tokens, in scoring order) and ``val_split_frames`` (the split's frame count); nothing when every
    frame was scored (results then stay as they were before subsets existed)."""
    if frames is None:
        return {}
    return {"val_frames": [val_set.sample_tokens[i] for i in scored_frames(val_set, frames)],
            "val_split_frames": len(val_set)}


BALANCES = ("class", "natural")  # the probe's training sample: capped per class, or at natural frequencies


def probe_sample(model, dataset: NuScenesLidarSeg, indices: Sequence[int], max_per_class: int = 20_000,
                 seed: int = 0, device="cpu", progress: Progress | None = None, balance: str = "class",
                 num_classes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [M, D] and labels [M] (1..16) of a random sample of the labelled points of the frames
    ``indices``, streamed: each point gets a seeded uniform key and the sample keeps the smallest
    keys, so memory stays bounded at 100% of a large split and the sample is that of one random
    permutation of all the points.

    ``balance="class"``: at most ``max_per_class`` points of each class (rare classes whole, common
    ones capped), in class order. ``"natural"``: the same total M = sum_c min(n_c, max_per_class),
    drawn uniformly from all labelled points (the M smallest keys), so classes keep their natural
    frequencies; in key order. The same seed gives both the same keys."""
    if balance not in BALANCES:
        raise InputError(f"balance must be one of {', '.join(BALANCES)}, got {balance!r}")
    n_classes = num_classes or class_count(dataset)
    dataset = dataset_for(model, dataset)
    gen = torch.Generator().manual_seed(seed)
    keys: dict[int, torch.Tensor] = {}  # per group (a class, or 0: every labelled point): kept keys,
    feats: dict[int, torch.Tensor] = {}  # their features
    labels: dict[int, torch.Tensor] = {}  # and labels
    counts = torch.zeros(n_classes + 1, dtype=torch.long)
    pool_size = n_classes * max_per_class  # bounds M whatever the class counts
    with torch.inference_mode(), eval_mode(model):
        for n, i in enumerate(indices):
            batch = collate([dataset[i]])
            if "labels" not in batch:
                raise InputError(f"training frame {dataset.sample_tokens[i]} has no lidarseg labels")
            x, y = point_features(model, batch, device).float().cpu(), batch["labels"].long()
            point_keys = torch.rand(len(y), generator=gen, dtype=torch.float64)  # ties unlikely in 1e9 points
            if balance == "natural":
                at = ((y >= 1) & (y <= n_classes)).nonzero().flatten()
                counts += torch.bincount(y[at], minlength=n_classes + 1)
                groups = {0: at}  # one pool of every labelled point
            else:
                groups = {c: (y == c).nonzero().flatten() for c in y.unique().tolist() if 1 <= c <= n_classes}
            for c, at in groups.items():
                k = torch.cat([keys.get(c, point_keys.new_empty(0)), point_keys[at]])
                f = torch.cat([feats.get(c, x.new_empty(0, x.shape[1])), x[at]])
                lab = torch.cat([labels.get(c, y.new_empty(0)), y[at]])
                keep = k.argsort()[:pool_size if balance == "natural" else max_per_class]
                keys[c], feats[c], labels[c] = k[keep], f[keep], lab[keep]
            if progress:
                progress("features", n + 1, len(indices))
    if not feats or not any(len(f) for f in feats.values()):
        raise InputError("the few-shot frames hold no labelled point (every label is 0, 'ignore')")
    if balance == "natural":
        m = int(counts.clamp(max=max_per_class).sum())
        return feats[0][:m], labels[0][:m]  # already in key order
    groups = sorted(feats)
    return torch.cat([feats[c] for c in groups]), torch.cat([labels[c] for c in groups])


def linear_probe(features: torch.Tensor, labels: torch.Tensor, epochs: int = 300, lr: float = 0.05,
                 seed: int = 0, num_classes: int = NUM_CLASSES) -> torch.nn.Linear:
    """Softmax regression from features [N, D] to classes 1..C (labels [N]; 0 ignored; C =
    ``num_classes``), full batch, Adam. Output j of the head is class j + 1."""
    keep = (labels >= 1) & (labels <= num_classes)
    if not keep.any():
        raise InputError("the few-shot frames hold no labelled point (every label is 0, 'ignore')")
    x, y = features[keep].float(), labels[keep].long() - 1
    with torch.random.fork_rng(devices=[]):  # a seeded head without touching the caller's RNG
        torch.manual_seed(seed)
        head = torch.nn.Linear(features.shape[1], num_classes)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(head(x), y).backward()
        opt.step()
    return head.eval()


def evaluate_fewshot(model, train_set: NuScenesLidarSeg, val_set: NuScenesLidarSeg, fraction: float = 0.01,
                     device="cpu", seed: int = 0, progress: Progress | None = None, epochs: int = 300,
                     lr: float = 0.05, max_per_class: int = 20_000, balance: str = "class",
                     val_frames: Sequence[int] | None = None) -> dict:
    """Linear probing: a linear head on the frozen student's features (:func:`linear_probe` with
    ``epochs`` and ``lr``, on :func:`probe_sample`'s points of the few-shot frames: ``max_per_class``
    per class with ``balance="class"``, or as many at natural class frequencies with ``"natural"``,
    the control; ``fraction`` = 1.0: SLidR's linear probing on the whole split), scored on every
    val frame, or on the indices ``val_frames`` [K] of ``val_set`` (an evaluation set; the intervals
    are then over those frames' scenes). Returns a JSON-ready dict: ``method``,
    :func:`segmentation_scores`, the :func:`selection`, ``seed``, ``probe`` (the hyper-parameters,
    ``balance`` and the sample's ``points``) and, with ``val_frames``, :func:`val_selection`."""
    check_number("epochs", epochs, integer=True)
    check_number("lr", lr)
    check_number("max_per_class", max_per_class, integer=True)
    if balance not in BALANCES:
        raise InputError(f"balance must be one of {', '.join(BALANCES)}, got {balance!r}")
    scored = scored_frames(val_set, val_frames)  # bad indices fail before the probe spends minutes
    frames, chosen = selection(train_set, fraction)
    n_classes = class_count(train_set)
    if class_count(val_set) != n_classes:
        raise InputError(f"the training frames have {n_classes} classes and the val frames "
                         f"{class_count(val_set)}: a probe needs one class list")
    x, y = probe_sample(model, train_set, frames, max_per_class, seed, device, progress, balance, n_classes)
    head = linear_probe(x, y, epochs, lr, seed, n_classes).to(device)
    subset = None if val_frames is None else scored
    per_frame = score_on(model, head, val_set, device, progress, subset)
    return {"method": "linear_probe", **segmentation_scores(per_frame, seed=seed, scenes=frame_scenes(val_set, subset),
                                                            names=class_names(val_set)),
            **chosen, "seed": seed,
            "probe": {"optimizer": "adam", "epochs": epochs, "lr": lr, "max_per_class": max_per_class,
                      "balance": balance, "points": len(y)}, **val_selection(val_set, subset)}
