"""Few-shot 3D segmentation: which labelled frames (SLidR's scene rule), a linear probe on frozen
point features, and the devkit scoring shared with fine-tuning (:mod:`relviz.eval.finetune`).

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
25%); ``frame_fraction`` in the results says how many frames that really is.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from fractions import Fraction
from numbers import Integral, Real
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from relviz.data.classes import CLASSES
from relviz.data.dataset import NuScenesLidarSeg, collate
from relviz.errors import InputError, InputTypeError
from relviz.eval.features import dataset_for, student_voxel_features
from relviz.eval.keyframe_sums import ConfusionSums
from relviz.segmentation import confusion_matrix, iou_per_class, mean_iou
from relviz.stats import cluster_bootstrap

FRAME_RULE = "slidr-scene-skip/1"  # name and version of the rule above, stored with every result
NUM_CLASSES = 16  # the probe's and the fine-tuning head's outputs: classes 1..16, label 0 ignored

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
    """(frame indices, the JSON description of the selection every result carries)."""
    frames = fewshot_frames(dataset, fraction)
    return frames, {"fraction": float(fraction), "frame_rule": FRAME_RULE,
                    "scenes": sorted({dataset.scene_of(i) for i in frames}),
                    "frames": [dataset.sample_tokens[i] for i in frames],
                    "frame_fraction": len(frames) / len(dataset)}


def segmentation_scores(per_frame: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Scores of per-frame confusion matrices [K, 17, 17] with the devkit's rules, JSON-ready:
    ``miou`` of their sum (None when no class has an IoU), per-class ``iou`` by class name (None where
    undefined), ``miou_interval`` (95% percentile bootstrap over the K frames, :mod:`relviz.stats`;
    None below 2 frames), the summed ``confusion`` and ``confusion_per_frame`` (for paired comparisons
    on the same frames)."""
    per_frame = np.asarray(per_frame, dtype=np.int64)
    cm = per_frame.sum(0)
    iou = iou_per_class(cm)
    miou = mean_iou(cm)
    interval = None
    if len(per_frame) >= 2 and not math.isnan(miou):
        interval = cluster_bootstrap(ConfusionSums(per_frame).miou, len(per_frame), n_resamples, seed=seed).as_dict()
    return {"miou": None if math.isnan(miou) else miou,
            "iou": {CLASSES[c]: (None if np.isnan(iou[c]) else float(iou[c])) for c in range(1, 17)},
            "miou_interval": interval, "confusion": cm.tolist(), "confusion_per_frame": per_frame.tolist()}


@contextmanager
def eval_mode(model):
    """``model`` in eval mode (batch norm from its running statistics) for the block, then back to
    the mode the caller had it in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def point_features(model, batch: dict, device) -> torch.Tensor:
    """The student's features [sum N, D] at every point of a collated batch (voxel -> point)."""
    return student_voxel_features(model, batch, device)[batch["inverse"].to(device)]


def score_on(model, head: torch.nn.Module, val_set: NuScenesLidarSeg, device="cpu",
             progress: Progress | None = None) -> np.ndarray:
    """Confusion matrices [K, 17, 17], one per val frame, of ``argmax head(features) + 1`` against the
    labels (one frame at a time, the model in eval mode and inference mode)."""
    val_set = dataset_for(model, val_set)
    per_frame = np.zeros((len(val_set), 17, 17), dtype=np.int64)
    with torch.inference_mode(), eval_mode(model):
        for i in range(len(val_set)):
            batch = collate([val_set[i]])
            if "labels" not in batch:
                raise InputError(f"val frame {val_set.sample_tokens[i]} has no lidarseg labels to score against")
            logits = head(point_features(model, batch, device).float())
            per_frame[i] = confusion_matrix(logits.argmax(1).cpu() + 1, batch["labels"])
            if progress:
                progress("evaluate", i + 1, len(val_set))
    return per_frame


def probe_sample(model, dataset: NuScenesLidarSeg, indices: Sequence[int], max_per_class: int = 20_000,
                 seed: int = 0, device="cpu", progress: Progress | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [M, D] and labels [M] (1..16) of a uniform random sample of at most ``max_per_class``
    labelled points per class over the frames ``indices``, streamed: each point gets a seeded
    uniform key and each class keeps its smallest keys, so memory stays bounded at 100% of a large
    split and the sample is that of one random permutation of all the points."""
    dataset = dataset_for(model, dataset)
    gen = torch.Generator().manual_seed(seed)
    keys: dict[int, torch.Tensor] = {}
    feats: dict[int, torch.Tensor] = {}
    with torch.inference_mode(), eval_mode(model):
        for n, i in enumerate(indices):
            batch = collate([dataset[i]])
            if "labels" not in batch:
                raise InputError(f"training frame {dataset.sample_tokens[i]} has no lidarseg labels")
            x, y = point_features(model, batch, device).float().cpu(), batch["labels"]
            point_keys = torch.rand(len(y), generator=gen, dtype=torch.float64)  # ties unlikely in 1e9 points
            for c in y.unique().tolist():
                if not 1 <= c <= NUM_CLASSES:
                    continue
                at = (y == c).nonzero().flatten()
                k = torch.cat([keys.get(c, point_keys.new_empty(0)), point_keys[at]])
                f = torch.cat([feats.get(c, x.new_empty(0, x.shape[1])), x[at]])
                keep = k.argsort()[:max_per_class]
                keys[c], feats[c] = k[keep], f[keep]
            if progress:
                progress("features", n + 1, len(indices))
    if not feats:
        raise InputError("the few-shot frames hold no labelled point (every label is 0, 'ignore')")
    classes = sorted(feats)
    return torch.cat([feats[c] for c in classes]), torch.cat([torch.full((len(feats[c]),), c) for c in classes])


def linear_probe(features: torch.Tensor, labels: torch.Tensor, epochs: int = 300, lr: float = 0.05,
                 seed: int = 0) -> torch.nn.Linear:
    """Softmax regression from features [N, D] to classes 1..16 (labels [N]; 0 ignored), full batch,
    Adam. Output j of the head is class j + 1."""
    keep = (labels >= 1) & (labels <= NUM_CLASSES)
    if not keep.any():
        raise InputError("the few-shot frames hold no labelled point (every label is 0, 'ignore')")
    x, y = features[keep].float(), labels[keep].long() - 1
    with torch.random.fork_rng(devices=[]):  # a seeded head without touching the caller's RNG
        torch.manual_seed(seed)
        head = torch.nn.Linear(features.shape[1], NUM_CLASSES)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(head(x), y).backward()
        opt.step()
    return head.eval()


def evaluate_fewshot(model, train_set: NuScenesLidarSeg, val_set: NuScenesLidarSeg, fraction: float = 0.01,
                     device="cpu", seed: int = 0, progress: Progress | None = None, epochs: int = 300,
                     lr: float = 0.05, max_per_class: int = 20_000) -> dict:
    """Linear probing: a linear head on the frozen student's features (:func:`linear_probe` with
    ``epochs`` and ``lr``, on :func:`probe_sample`'s ``max_per_class`` points per class of the
    few-shot frames; ``fraction`` = 1.0: SLidR's linear probing on the whole split), scored on every
    val frame. Returns a JSON-ready dict: ``method``, :func:`segmentation_scores`, the
    :func:`selection`, ``seed`` and ``probe`` (the hyper-parameters)."""
    check_number("epochs", epochs, integer=True)
    check_number("lr", lr)
    check_number("max_per_class", max_per_class, integer=True)
    frames, chosen = selection(train_set, fraction)
    x, y = probe_sample(model, train_set, frames, max_per_class, seed, device, progress)
    head = linear_probe(x, y, epochs, lr, seed).to(device)
    per_frame = score_on(model, head, val_set, device, progress)
    return {"method": "linear_probe", **segmentation_scores(per_frame, seed=seed), **chosen, "seed": seed,
            "probe": {"optimizer": "adam", "epochs": epochs, "lr": lr, "max_per_class": max_per_class,
                      "points": len(y)}}
