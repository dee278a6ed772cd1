"""Few-shot by fine-tuning the whole student (SLidR's downstream protocol), and the label-efficiency
curve: mIoU against the labelled fraction for fine-tuning and for linear probing.

The labelled frames are :func:`relviz.eval.fewshot.fewshot_frames`' (SLidR's every-k-th-scene
rule); every result carries the selection actually used (scenes, frames, their counts and shares of
the split next to the requested fraction; :func:`relviz.eval.fewshot.describe_selection` writes it
as one line). A copy of the student gets a linear head (16 outputs, classes 1..16, on the student's
output features, as the linear probe's) and both are trained on the labelled frames; scores are
:func:`relviz.eval.fewshot.segmentation_scores`' (mIoU over the fixed class list, the devkit's rule
beside it), on every val point (each point takes its voxel's prediction).

As in SLidR (valeoai/SLidR at 14729d0, ``config/semseg_nuscenes.yaml``, ``downstream/``):

* the loss is cross-entropy plus Lovász-softmax (:func:`relviz.losses.lovasz_softmax`, over the
  classes present in the batch), both over the batch's labelled voxels (SLidR's ``DownstreamLoss``);
* the labels are per voxel (:func:`voxel_labels`): the majority label among the voxel's labelled
  points (ties to the smaller class id; a voxel with no labelled point is ignored). SLidR takes the
  label of the one point MinkowskiEngine's ``sparse_quantize`` returns for the voxel (the point whose
  intensity is its feature); the two differ only on voxels whose points disagree;
* batch norm keeps updating its running statistics with momentum 0.02 (SLidR's ``bn_momentum``; the
  pretrained students use 0.05), ``bn="train"``. ``bn="frozen"`` is the variant the audit asked to
  report beside it: the batch-norm layers stay in eval mode with the pretrained running statistics
  (a few labelled scenes would otherwise replace them), their affine weights and biases still train
  with the rest, so only the statistics differ from ``bn="train"``;
* the schedule (``SLIDR_FINETUNE``): SGD, momentum 0.9, dampening 0.1, weight decay 1e-4, learning
  rate 0.02 for the network and 2.0 for the head (``lr_head``), cosine annealing to 0, batch 16, 100
  epochs, rotation about z and flips of x and y as augmentation.

:func:`finetune_seeds` repeats the fine-tuning over seeds (head initialisation, frame order,
augmentation; at least 2, 3 by default) for each batch-norm mode and reports per-seed mIoU, their
mean and a t interval over the seeds (:func:`relviz.stats.seed_interval`), and the frozen-minus-
trained difference paired by seed. :func:`label_efficiency` fine-tunes every fraction with
``finetune_seeds`` seeds (:data:`FINETUNE_SEEDS` by default) and reports, per fraction, the mean over
them, each seed's mIoU and the intervals of :func:`finetune_over_seeds`: over the val scenes
(conditional on the seeds, as the probe's), over the seeds, and the two-stage bootstrap over seeds and
scenes that carries both sources of variance (one seed of fine-tuning cannot separate the student's
effect from the fine-tuning's noise).

Still different from SLidR: its head replaces the network's last 1x1 layer and has 17 outputs (the
softmax of its Lovász term includes the ignored class 0); here the head sits on top of the
(L2-normalised) output features, so fine-tuning and probing see the same features, and has the 16
classes only. The cosine is stepped per optimizer step rather than per epoch. SLidR's loader drops
a last incomplete batch; here it is used. ``loss="cross_entropy"`` (the earlier protocol, for
comparison) drops the Lovász term.

``CPU_FINETUNE`` keeps every value but the length (20 epochs), for quick looks on a CPU; it scores
well below the full schedule. The demo student (MinkUNet14 at width 0.5) takes about 0.7 s (two CPU
threads) to 0.9 s (one) per keyframe and step, so SLidR's schedule on k <= 16 labelled keyframes is
about 100 k passes: 2-3 minutes for 2 keyframes, 9-12 for 8, 18-24 for 16 (bench/finetune_bench.py).
"""

from __future__ import annotations

import copy
import math
import time
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from relviz.data.dataset import NuScenesLidarSeg, collate
from relviz.errors import InputError, NonFiniteError
from relviz.eval.features import dataset_for, student_voxel_features
from relviz.eval.keyframe_sums import ConfusionSums
from relviz.eval.fewshot import (NUM_CLASSES, Progress, check_number, class_count, class_names, evaluate_fewshot,
                                 frame_scenes, score_on, scored_frames,
                                 segmentation_scores, selection, val_selection)
from relviz.losses import lovasz_softmax
from relviz.models.featureset import refuse_feature_set
from relviz.stats import (cluster_bootstrap, paired_difference, refusal, resample_multiplicities, scene_statistic,
                           seed_interval, two_stage_bootstrap)

LOSSES = ("cross_entropy+lovasz", "cross_entropy")  # SLidR's downstream loss; the earlier one, for comparison
BN_MODES = ("train", "frozen")  # running statistics updated (SLidR) or kept from pretraining
SLIDR_FINETUNE = dict(epochs=100, batch=16, lr=0.02, lr_head=2.0, momentum=0.9, dampening=0.1, weight_decay=1e-4,
                      bn_momentum=0.02)
# A smoke-test schedule for CPUs, 5x shorter. Measured on the demo relational student, 10% of the test
# fixture's mini_train (2 keyframes), scored on its mini_val: with the earlier loss (point-level
# cross-entropy, BN momentum 0.05) 0.226 mIoU against 0.362 with SLidR's 100 epochs; with SLidR's loss,
# voxel labels and BN momentum 0.02, 0.247 (100 epochs not re-measured); not for numbers.
CPU_FINETUNE = dict(SLIDR_FINETUNE, epochs=20)
FRACTIONS = (0.01, 0.05, 0.1, 0.25, 1.0)  # SLidR's label fractions
# Fine-tuning seeds per fraction by default: the audit's minimum. relviz.stats.MIN_SEEDS (5) is the rule for
# the unit of a claim, the student seed; fine-tuning seeds are averaged inside it (they shrink its
# fine-tuning noise by their count, and 2 df give an interval over them). 5 would cost 5 fine-tunings per
# fraction: SLidR's schedule on 8 labelled keyframes takes 9-12 min a seed on a CPU (bench/finetune_bench.py).
FINETUNE_SEEDS = 3


def voxel_labels(labels: torch.Tensor, inverse: torch.Tensor, n_voxels: int, num_classes: int = NUM_CLASSES
                 ) -> torch.Tensor:
    """One label per voxel [n_voxels] from point labels [N] (0..C, 0 unlabelled) and each point's
    voxel ``inverse`` [N]: the most frequent label among the voxel's labelled points (ties to the
    smaller class id), 0 (ignored) for a voxel with no labelled point."""
    if labels.shape != inverse.shape or labels.ndim != 1:
        raise InputError(f"voxel_labels: expected labels [N] and inverse [N], got {tuple(labels.shape)} and "
                         f"{tuple(inverse.shape)}")
    labels, inverse = labels.long(), inverse.long()
    labelled = (labels >= 1) & (labels <= num_classes)
    width = num_classes + 1
    counts = torch.bincount(inverse[labelled] * width + labels[labelled], minlength=n_voxels * width)
    counts = counts.view(n_voxels, width)[:, 1:]  # [V, C], classes 1..C
    return torch.where(counts.sum(1) > 0, counts.argmax(1) + 1, 0)  # argmax: the first of tied maxima


def finetune_loss(logits: torch.Tensor, target: torch.Tensor, loss: str = "cross_entropy+lovasz") -> torch.Tensor:
    """The fine-tuning loss over the labelled rows of logits [V, C] and targets [V] (class indices
    0..C-1, -1 ignored): mean cross-entropy plus (``cross_entropy+lovasz``, SLidR's) the
    Lovász-softmax of the softmax over the classes present. Scalar."""
    if loss not in LOSSES:
        raise InputError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    labelled = target >= 0
    logits, target = logits[labelled], target[labelled]
    value = F.cross_entropy(logits, target)
    if loss == "cross_entropy":
        return value
    return value + lovasz_softmax(logits.softmax(1), target, ignore=None)


def batch_norms(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's batch-norm layers (torch's; :class:`relviz.sparse.SparseBatchNorm` and
    MinkowskiEngine's hold one each)."""
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def set_train_mode(model: torch.nn.Module, bn: str) -> None:
    """``model`` in training mode; with ``bn="frozen"`` its batch-norm layers in eval mode (they
    normalise with, and keep, their running statistics)."""
    model.train()
    if bn == "frozen":
        for layer in batch_norms(model):
            layer.eval()


def train_finetune(model, train_set: NuScenesLidarSeg, fraction: float = 0.01, epochs: int | None = 100,
                   steps: int | None = None, lr: float = 0.02, lr_head: float = 2.0, batch: int = 16,
                   momentum: float = 0.9, dampening: float = 0.1, weight_decay: float = 1e-4, augment: bool = True,
                   seed: int = 0, device="cpu", progress: Progress | None = None,
                   loss: str = "cross_entropy+lovasz", bn: str = "train", bn_momentum: float = 0.02
                   ) -> tuple[torch.nn.Module, torch.nn.Linear, dict]:
    """Fine-tune a copy of ``model`` (the caller's is never changed) with a linear head on the
    voxel labels of ``fraction`` of ``train_set``'s frames; the arguments are :func:`finetune`'s.
    Returns the trained copy (in training mode as ``bn`` sets it), the head and a dict of the
    :func:`selection`, ``seed``, ``schedule``, ``loss`` (per step; None for a step without a
    labelled voxel), ``device`` and ``wall_s`` (``train``)."""
    refuse_feature_set(model, "fine-tuning")
    if steps is None:
        if epochs is None:
            raise InputError("give epochs or steps for the fine-tuning schedule")
        check_number("epochs", epochs, integer=True)
    else:
        check_number("steps", steps, integer=True)
    check_number("batch", batch, integer=True)
    check_number("lr", lr)
    check_number("lr_head", lr_head)
    check_number("momentum", momentum, strict=False, high=1.0)
    check_number("dampening", dampening, strict=False, high=1.0)
    check_number("weight_decay", weight_decay, strict=False)
    check_number("bn_momentum", bn_momentum, strict=False, high=1.0)
    if loss not in LOSSES:
        raise InputError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if bn not in BN_MODES:
        raise InputError(f"bn must be one of {', '.join(BN_MODES)}, got {bn!r}")
    frames, chosen = selection(train_set, fraction)
    device = torch.device(device)
    steps_per_epoch = math.ceil(len(frames) / batch)
    total = steps if steps is not None else epochs * steps_per_epoch
    schedule = {"optimizer": "sgd", "scheduler": "cosine", "loss": loss, "labels": "voxel-majority",
                "bn": bn, "bn_momentum": bn_momentum, "epochs": total / steps_per_epoch, "steps": total,
                "batch": batch, "lr": lr, "lr_head": lr_head, "momentum": momentum, "dampening": dampening,
                "weight_decay": weight_decay, "augment": augment}

    student = copy.deepcopy(model).to(device)  # the caller's weights and mode stay as they are
    for layer in batch_norms(student):
        layer.momentum = bn_momentum
    for p in student.parameters():
        p.requires_grad_(True)
    set_train_mode(student, bn)
    with torch.random.fork_rng(devices=[]):  # a seeded head without touching the caller's RNG
        torch.manual_seed(seed)
        head = torch.nn.Linear(student.config.out_channels, class_count(train_set)).to(device)
    optimizer = torch.optim.SGD([{"params": head.parameters(), "lr": lr_head}, {"params": student.parameters()}],
                                lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    data = copy.copy(dataset_for(student, train_set))  # a shallow copy: only its augmentation differs
    data.augment, data.seed = augment, seed

    losses: list[float | None] = []
    start = time.perf_counter()
    for step in range(total):
        epoch = step // steps_per_epoch
        order = torch.randperm(len(frames), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        at = (step % steps_per_epoch) * batch
        data.set_epoch(epoch)
        b = collate([data[frames[j]] for j in order[at:at + batch].tolist()])
        if "labels" not in b:
            raise InputError(f"training frames {', '.join(b['sample_tokens'][:2])} have no lidarseg labels")
        target = (voxel_labels(b["labels"], b["inverse"], len(b["coordinates"]), head.out_features) - 1
                  ).to(device)  # -1: ignored
        labelled = bool((target >= 0).any())  # else no labelled voxel in this batch: nothing to learn from
        if labelled:
            value = finetune_loss(head(student_voxel_features(student, b, device).float()), target, loss)
            if not torch.isfinite(value):
                raise NonFiniteError(f"fine-tuning diverged at step {step + 1} of {total} (loss {value.item()}); "
                                     f"lower lr ({lr}) or lr_head ({lr_head})")
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
        scheduler.step()
        losses.append(value.item() if labelled else None)
        if progress:  # it may raise to stop the run (a job's cancel)
            progress("train", step + 1, total)
    if all(v is None for v in losses):
        raise InputError(f"the {len(frames)} few-shot frames hold no labelled point (every label is 0, 'ignore')")
    return student, head, {**chosen, "seed": seed, "schedule": schedule, "loss": losses, "device": str(device),
                           "wall_s": {"train": time.perf_counter() - start}}


def finetune(model, train_set: NuScenesLidarSeg, val_set: NuScenesLidarSeg, fraction: float = 0.01,
             epochs: int | None = 100, steps: int | None = None, lr: float = 0.02, lr_head: float = 2.0,
             batch: int = 16, momentum: float = 0.9, dampening: float = 0.1, weight_decay: float = 1e-4,
             augment: bool = True, seed: int = 0, device="cpu", progress: Progress | None = None,
             loss: str = "cross_entropy+lovasz", bn: str = "train", bn_momentum: float = 0.02,
             val_frames: Sequence[int] | None = None) -> dict:
    """Fine-tune a copy of ``model`` (the caller's is never changed) with a linear head on the
    voxel labels of ``fraction`` of ``train_set``'s frames, score it on every frame of ``val_set``,
    or on the indices ``val_frames`` [K] of it (an evaluation set: the intervals are then over those
    frames' scenes, and the result carries :func:`relviz.eval.fewshot.val_selection`).

    ``steps`` (optimizer steps) replaces ``epochs`` (passes over the labelled frames, ``batch``
    frames a step) when given. ``loss``: one of ``LOSSES`` (SLidR's cross-entropy + Lovász-softmax
    by default); ``bn``: "train" (running statistics updated with ``bn_momentum``, SLidR's 0.02) or
    "frozen" (kept from pretraining; affine parameters still trained). ``progress(phase, done,
    total)``: ``train`` per step, ``evaluate`` per val frame. Returns a JSON-ready dict: ``method`` =
    "finetune", :func:`segmentation_scores`, the frame selection (``fraction``, ``frame_rule``,
    ``scenes``, ``frames``, their counts and shares of the split, see
    :func:`relviz.eval.fewshot.selection`), ``seed``, ``schedule``, ``loss`` (per step),
    ``wall_s`` and ``device``."""
    subset = None if val_frames is None else scored_frames(val_set, val_frames)  # checked before training
    student, head, trained = train_finetune(
        model, train_set, fraction, epochs=epochs, steps=steps, lr=lr, lr_head=lr_head, batch=batch, momentum=momentum,
        dampening=dampening, weight_decay=weight_decay, augment=augment, seed=seed, device=device, progress=progress,
        loss=loss, bn=bn, bn_momentum=bn_momentum)
    start = time.perf_counter()
    head.eval()
    per_frame = score_on(student, head, val_set, trained["device"], progress, subset)
    wall_s = {**trained["wall_s"], "evaluate": time.perf_counter() - start}
    return {"method": "finetune", **segmentation_scores(per_frame, seed=seed, scenes=frame_scenes(val_set, subset),
                                                        names=class_names(val_set)), **trained, "wall_s": wall_s,
            **val_selection(val_set, subset)}


def finetune_seeds(model, train_set: NuScenesLidarSeg, val_set: NuScenesLidarSeg, fraction: float = 0.01,
                   seeds: Sequence[int] = (0, 1, 2), bn_modes: Sequence[str] = BN_MODES,
                   progress: Progress | None = None, **options) -> dict:
    """:func:`finetune` once per seed (head initialisation, frame order, augmentation) and batch-norm
    mode, with ``options`` (its other keyword arguments) shared. Phases of ``progress`` are prefixed
    ("frozen BN, seed 1: train").

    Returns a JSON-ready dict: ``method`` = "finetune_seeds", the :func:`selection`, ``seeds``, and
    per mode in ``bn``: ``miou`` (per seed, in ``seeds``' order), ``mean`` and ``seed_interval``
    (95% t interval over the seeds, :func:`relviz.stats.seed_interval`; None when a seed's mIoU is
    undefined) and ``runs`` (the full results). With both modes, ``frozen_minus_train``: the per-seed
    differences (same seed: same head initialisation, frames and order) and their t interval."""
    seeds = list(seeds)
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise InputError(f"an interval over fine-tuning seeds needs at least 2 distinct seeds, got {seeds}")
    if not bn_modes or any(mode not in BN_MODES for mode in bn_modes):
        raise InputError(f"bn_modes must be one or more of {', '.join(BN_MODES)}, got {list(bn_modes)}")
    if "seed" in options or "bn" in options:
        raise InputError("give seeds and bn_modes to finetune_seeds, not seed or bn")
    _, chosen = selection(train_set, fraction)
    per_mode = {}
    for mode in bn_modes:
        runs = [finetune(model, train_set, val_set, fraction, seed=seed, bn=mode,
                         progress=_prefixed(progress, f"{mode} BN, seed {seed}"), **options) for seed in seeds]
        per_mode[mode] = {"miou": [r["miou"] for r in runs], **_over_seeds([r["miou"] for r in runs]), "runs": runs}
    result = {"method": "finetune_seeds", **chosen, "seeds": seeds, "bn": per_mode}
    if {"train", "frozen"} <= set(per_mode):
        pairs = zip(per_mode["frozen"]["miou"], per_mode["train"]["miou"])
        differences = [None if a is None or b is None else a - b for a, b in pairs]
        result["frozen_minus_train"] = {"difference": differences, **_over_seeds(differences)}
    return result


def _over_seeds(values: Sequence[float | None]) -> dict:
    """``mean`` and ``seed_interval`` of per-seed values; both None when one is undefined."""
    if any(v is None for v in values):
        return {"mean": None, "seed_interval": None}
    return {"mean": float(np.mean(values)), "seed_interval": seed_interval(values).as_dict()}


def _prefixed(progress: Progress | None, label: str) -> Progress | None:
    return None if progress is None else (lambda phase, done, total: progress(f"{label}: {phase}", done, total))


def seed_list(seeds: int | Sequence[int], first: int = 0) -> list[int]:
    """Fine-tuning seeds from a count (``first``, ``first`` + 1, ...) or a list of distinct whole numbers."""
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        if seeds < 1:
            raise InputError(f"finetune_seeds: expected a whole number >= 1 or a list of seeds, got {seeds!r}")
        return list(range(first, first + int(seeds)))
    values = list(seeds) if isinstance(seeds, (list, tuple)) else None
    if not values or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in values) \
            or len(set(values)) != len(values):
        raise InputError(f"finetune_seeds: expected a whole number >= 1 or a list of distinct whole-number seeds, "
                         f"got {seeds!r}")
    return [int(v) for v in values]


def _mean_miou(results: Sequence[dict]) -> tuple[Callable[[np.ndarray], np.ndarray], list[Callable], list[int]]:
    """The mean over ``results`` (runs scored on the same val frames) of their mIoU, each over the fixed
    class list of the frames' ground truth (the same for every run), as a statistic of keyframe
    multiplicities [..., K] -> [...]; each run's own statistic [R]; the frames' scene ids [K] (None when
    a run does not know them)."""
    sums = [ConfusionSums(np.asarray(r["confusion_per_frame"], dtype=np.int64)) for r in results]
    if len({s.per_keyframe.shape for s in sums}) != 1:
        raise InputError(f"the runs were scored on different val frames ({[len(s.per_keyframe) for s in sums]})")
    if len({tuple(r.get("frame_scenes") or ()) for r in results}) != 1:
        raise InputError("the runs were scored on frames of different scenes")
    classes = sums[0].classes  # the ground truth decides it: the same for every run on these frames
    each = [lambda m, s=s: s.miou(m, classes) for s in sums]
    return (lambda m: np.mean([f(m) for f in each], axis=0)), each, results[0].get("frame_scenes")


def _finite_or_none(values: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, dtype=np.float64)]


def finetune_over_seeds(runs: Sequence[dict], n_resamples: int = 1000, bootstrap_seed: int = 0,
                        replicates: int = 0) -> dict:
    """One fine-tuned few-shot result from :func:`finetune`'s results with different seeds (``runs``
    [R]) on the same labelled and val frames. JSON-ready (the caller adds the :func:`selection`):

    * ``method`` "finetune", ``seeds`` [R], ``miou`` (the mean over the seeds; None when a seed's is
      undefined), ``miou_per_seed`` [R], ``miou_devkit`` (mean over the seeds), ``classes``;
    * ``seed_interval``: 95% t interval over the seeds (:func:`relviz.stats.seed_interval`; None with
      one seed or an undefined mIoU);
    * ``miou_per_scene`` [S] (each val scene alone, mean over the seeds) and ``miou_interval``: 95%
      percentile bootstrap over the val scenes of the mean over the seeds (conditional on the seeds,
      like the probe's on its one seed); None, with ``interval_refused``, under
      :data:`relviz.stats.MIN_SCENES` scenes;
    * ``two_stage``: the two-stage bootstrap over seeds and scenes on ``n_resamples`` shared scene
      resamples (:func:`relviz.stats.two_stage_bootstrap`: both sources of variance, t with R - 1 df,
      and the p of "mIoU = 0"); None with one seed or under MIN_SCENES scenes;
    * ``replicates`` (with ``replicates`` > 0 and enough scenes): the mean over the seeds on that many
      scene resamples drawn by :func:`relviz.stats.resample_multiplicities` with ``bootstrap_seed``, as
      ``{"seed", "n", "values": {"miou": [B]}}`` (the structure results' layout): an experiment's
      claims pair students on them;
    * ``frame_scenes``, ``confusion`` and ``confusion_per_frame`` summed over the seeds (pooled counts:
      the frame count and the classes' totals; ``miou`` is the mean of the seeds' mIoUs, not this
      sum's), ``schedule``, ``device``, ``wall_s`` summed, and ``seed_runs`` (each seed's result)."""
    if not runs:
        raise InputError("finetune_over_seeds: give at least one fine-tuning result")
    per_seed = [r["miou"] for r in runs]
    mean_of, each, scenes = _mean_miou(runs)
    defined = all(v is not None for v in per_seed)
    out = {"method": "finetune", "seeds": [r["seed"] for r in runs],
           "miou": float(np.mean(per_seed)) if defined else None, "miou_per_seed": per_seed,
           "miou_devkit": None if any(r["miou_devkit"] is None for r in runs)
           else float(np.mean([r["miou_devkit"] for r in runs])),
           "classes": runs[0]["classes"], "seed_interval": _over_seeds(per_seed)["seed_interval"]
           if len(runs) > 1 else None,
           "miou_per_scene": None, "miou_interval": None, "interval_refused": "the frames' scenes are not known",
           "two_stage": None, "frame_scenes": scenes,
           "confusion": np.sum([r["confusion"] for r in runs], axis=0).tolist(),
           "confusion_per_frame": np.sum([r["confusion_per_frame"] for r in runs], axis=0).tolist(),
           "schedule": runs[0]["schedule"], "device": runs[0]["device"],
           "wall_s": {k: float(sum(r["wall_s"][k] for r in runs)) for k in runs[0]["wall_s"]}, "seed_runs": list(runs)}
    if scenes is None:
        return out
    ids = np.asarray(scenes, dtype=np.int64)
    n_scenes = int(ids.max()) + 1
    statistic = scene_statistic(mean_of, ids)
    out["miou_per_scene"] = _finite_or_none(statistic(np.eye(n_scenes)))  # each scene alone
    out["interval_refused"] = why = refusal(n_scenes) or (None if defined else "a seed's mIoU is undefined")
    if why:
        return out
    out["miou_interval"] = cluster_bootstrap(statistic, n_scenes, n_resamples, seed=bootstrap_seed).as_dict()
    draws = {n: resample_multiplicities(n_scenes, n, bootstrap_seed) for n in {n_resamples, replicates} if n}
    if len(runs) > 1:  # each seed on the same scene resamples: what the seeds share stays paired
        reps = np.stack([scene_statistic(f, ids)(draws[n_resamples]) for f in each])
        out["two_stage"] = two_stage_bootstrap(per_seed, reps, seed=bootstrap_seed).as_dict()
    if replicates:
        out["replicates"] = {"seed": bootstrap_seed, "n": replicates,
                             "values": {"miou": _finite_or_none(statistic(draws[replicates]))}}
    return out


def label_efficiency(model, train_set: NuScenesLidarSeg, val_set: NuScenesLidarSeg,
                     fractions: Sequence[float] = FRACTIONS, seed: int = 0,
                     finetune_seeds: int | Sequence[int] = FINETUNE_SEEDS, device="cpu",
                     progress: Progress | None = None, probe: dict | None = None,
                     finished: Mapping[tuple[str, ...], dict] | None = None,
                     on_finished: Callable[[tuple[str, ...], dict], None] | None = None, replicates: int = 0,
                     val_frames: Sequence[int] | None = None, **schedule) -> dict:
    """mIoU against the labelled fraction, for fine-tuning (:func:`finetune`, with ``schedule``'s
    keyword arguments, once per fine-tuning seed, :func:`finetune_over_seeds`) and for linear probing
    (:func:`relviz.eval.fewshot.evaluate_fewshot` with ``seed``, with ``probe``'s: ``epochs``, ``lr``,
    ``max_per_class``, ``balance``). ``finetune_seeds``: a count (seeds ``seed``, ``seed`` + 1, ...) or
    the seeds; ``replicates``: scene resamples kept per fraction (:func:`finetune_over_seeds`);
    ``val_frames``: the indices of ``val_set`` both methods are scored on (None: every frame).
    Fractions whose rule picks the same frames (1, 5 and 10% of a split under 100 scenes) are run
    once. Phases of ``progress`` are prefixed with the method, percentage and fine-tuning seed
    ("finetune 10%, seed 1: train", "probe 10%: features"). ``finished``: results of frame
    selections computed before (the frames' sample tokens -> the dict ``on_finished`` was given),
    which are not run again unless their fine-tuning seeds differ; ``on_finished(frames, result)``
    is called as each selection ends (a job saves it, so a resumed job continues with the next).

    Returns ``fractions``, ``frame_fraction``, ``finetune_seeds``, ``finetune`` (the mean over the
    fine-tuning seeds) and ``linear_probe`` (mIoU lists in the order of ``fractions``),
    ``finetune_per_seed`` (per fraction, each seed's mIoU), ``finetune_interval`` (per fraction, the
    two-stage interval over seeds and scenes, or None with the reason in that run's
    ``interval_refused``), ``finetune_minus_probe`` (paired intervals over scenes of the mean over
    the seeds minus the probe, :func:`finetune_minus_probe`), ``seed`` and ``runs`` (each fraction's
    two full results)."""
    refuse_feature_set(model, "the label-efficiency curve (it fine-tunes)")  # before the probe spends minutes
    if not fractions:
        raise InputError("give at least one label fraction, e.g. 0.01, 0.1, 1.0")
    seeds = seed_list(finetune_seeds, seed)
    check_number("replicates", replicates, integer=True, strict=False)
    done: dict[tuple[str, ...], dict] = {tuple(k): v for k, v in (finished or {}).items()}
    runs = []
    for fraction in fractions:
        _, chosen = selection(train_set, fraction)
        frames = tuple(chosen["frames"])
        if frames not in done or done[frames]["finetune"].get("seeds") != seeds:
            label = f"finetune {fraction * 100:g}%"
            tuned = finetune_over_seeds(
                [finetune(model, train_set, val_set, fraction, seed=s, device=device,
                          progress=_prefixed(progress, f"{label}, seed {s}"), val_frames=val_frames, **schedule)
                 for s in seeds],
                replicates=replicates)
            tuned = {**chosen, **tuned}
            probed = evaluate_fewshot(model, train_set, val_set, fraction, device, seed,
                                      _prefixed(progress, f"probe {fraction * 100:g}%"), val_frames=val_frames,
                                      **(probe or {}))
            done[frames] = {"finetune": tuned, "linear_probe": probed,
                            "finetune_minus_probe": finetune_minus_probe(tuned, probed, seed=seed)}
            if on_finished is not None:
                on_finished(frames, done[frames])
        first = done[frames]
        runs.append({"fraction": float(fraction), "finetune_minus_probe": first["finetune_minus_probe"],
                     **{m: {**first[m], "fraction": float(fraction)} for m in ("finetune", "linear_probe")}})
    return {"fractions": [r["fraction"] for r in runs],
            "frame_fraction": [r["finetune"]["frame_fraction"] for r in runs],
            "finetune_seeds": seeds, "finetune": [r["finetune"]["miou"] for r in runs],
            "finetune_per_seed": [r["finetune"]["miou_per_seed"] for r in runs],
            "finetune_interval": [r["finetune"]["two_stage"] for r in runs],
            "linear_probe": [r["linear_probe"]["miou"] for r in runs],
            "finetune_minus_probe": [r["finetune_minus_probe"] for r in runs], "seed": seed, "runs": runs}


def finetune_minus_probe(tuned: dict, probed: dict, n_resamples: int = 1000, seed: int = 0) -> dict | None:
    """mIoU of fine-tuning (the mean over its seeds for a :func:`finetune_over_seeds` result) minus
    linear probing scored on the same val frames (each over its own fixed class list, the same here),
    with a paired 95% bootstrap interval over the frames' scenes and ``significant``
    (:func:`relviz.stats.paired_difference`; conditional on the fine-tuning seeds); under
    :data:`relviz.stats.MIN_SCENES` scenes (or scenes unknown) the difference alone with
    ``interval_refused`` and ``per_scene``. Takes the results' ``confusion_per_frame`` and
    ``frame_scenes``."""
    n_frames = len(probed["confusion_per_frame"])
    if len(tuned["confusion_per_frame"]) != n_frames:
        raise InputError(f"the two results were scored on different val frames ({len(tuned['confusion_per_frame'])} "
                         f"and {n_frames})")
    if not n_frames:
        return None
    tuned_miou, _, scenes = _mean_miou(tuned.get("seed_runs") or [tuned])
    probed_miou, _, probed_scenes = _mean_miou([probed])
    value = float(tuned_miou(np.ones(n_frames)) - probed_miou(np.ones(n_frames)))
    if scenes is not None and probed_scenes not in (None, scenes):
        raise InputError("the two results were scored on frames of different scenes")
    if scenes is None:
        return {"value": value, "low": None, "high": None, "significant": None, "per_scene": None,
                "interval_refused": "the frames' scenes are not known"}
    ids = np.asarray(scenes, dtype=np.int64)
    n_scenes = int(ids.max()) + 1
    tuned_miou, probed_miou = scene_statistic(tuned_miou, ids), scene_statistic(probed_miou, ids)
    alone = np.eye(n_scenes)  # each scene alone
    per_scene = [None if math.isnan(d) else float(d) for d in tuned_miou(alone) - probed_miou(alone)]
    why = refusal(n_scenes)
    if why:
        return {"value": value, "low": None, "high": None, "significant": None, "per_scene": per_scene,
                "interval_refused": why}
    diff = paired_difference(tuned_miou, probed_miou, n_scenes, n_resamples, seed=seed)
    return {**diff.as_dict(), "per_scene": per_scene, "interval_refused": None}
