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
trained difference paired by seed.

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
                                 frame_scenes, score_on,
                                 segmentation_scores, selection)
from relviz.losses import lovasz_softmax
from relviz.stats import paired_difference, refusal, scene_statistic, seed_interval

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
             loss: str = "cross_entropy+lovasz", bn: str = "train", bn_momentum: float = 0.02) -> dict:
    """Fine-tune a copy of ``model`` (the caller's is never changed) with a linear head on the
    voxel labels of ``fraction`` of ``train_set``'s frames, score it on every frame of ``val_set``.

    ``steps`` (optimizer steps) replaces ``epochs`` (passes over the labelled frames, ``batch``
    frames a step) when given. ``loss``: one of ``LOSSES`` (SLidR's cross-entropy + Lovász-softmax
    by default); ``bn``: "train" (running statistics updated with ``bn_momentum``, SLidR's 0.02) or
    "frozen" (kept from pretraining; affine parameters still trained). ``progress(phase, done,
    total)``: ``train`` per step, ``evaluate`` per val frame. Returns a JSON-ready dict: ``method`` =
    "finetune", :func:`segmentation_scores`, the frame selection (``fraction``, ``frame_rule``,
    ``scenes``, ``frames``, their counts and shares of the split, see
    :func:`relviz.eval.fewshot.selection`), ``seed``, ``schedule``, ``loss`` (per step),
    ``wall_s`` and ``device``."""
    student, head, trained = train_finetune(
        model, train_set, fraction, epochs=epochs, steps=steps, lr=lr, lr_head=lr_head, batch=batch, momentum=momentum,
        dampening=dampening, weight_decay=weight_decay, augment=augment, seed=seed, device=device, progress=progress,
        loss=loss, bn=bn, bn_momentum=bn_momentum)
    start = time.perf_counter()
    head.eval()
    per_frame = score_on(student, head, val_set, trained["device"], progress)
    wall_s = {**trained["wall_s"], "evaluate": time.perf_counter() - start}
    return {"method": "finetune", **segmentation_scores(per_frame, seed=seed, scenes=frame_scenes(val_set),
                                                        names=class_names(val_set)), **trained, "wall_s": wall_s}


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


def label_efficiency(model, train_set: NuScenesLidarSeg, val_set: NuScenesLidarSeg,
                     fractions: Sequence[float] = FRACTIONS, seed: int = 0, device="cpu",
                     progress: Progress | None = None, probe: dict | None = None,
                     finished: Mapping[tuple[str, ...], dict] | None = None,
                     on_finished: Callable[[tuple[str, ...], dict], None] | None = None, **schedule) -> dict:
    """mIoU against the labelled fraction, for fine-tuning (:func:`finetune`, with ``schedule``'s
    keyword arguments) and for linear probing (:func:`relviz.eval.fewshot.evaluate_fewshot`, with
    ``probe``'s: ``epochs``, ``lr``, ``max_per_class``, ``balance``).
    Fractions whose rule picks the same frames (1, 5 and 10% of a split under 100 scenes) are run
    once. Phases of ``progress`` are prefixed with the method and percentage ("finetune 10%: train").
    ``finished``: results of frame selections computed before (the frames' sample tokens -> the
    dict ``on_finished`` was given), which are not run again; ``on_finished(frames, result)`` is
    called as each selection ends (a job saves it, so a resumed job continues with the next).

    Returns ``fractions``, ``frame_fraction``, ``finetune`` and ``linear_probe`` (mIoU lists in the
    order of ``fractions``), ``finetune_minus_probe`` (paired intervals, :func:`finetune_minus_probe`)
    and ``runs`` (each fraction's two full results)."""
    if not fractions:
        raise InputError("give at least one label fraction, e.g. 0.01, 0.1, 1.0")
    done: dict[tuple[str, ...], dict] = {tuple(k): v for k, v in (finished or {}).items()}
    runs = []
    for fraction in fractions:
        frames = tuple(selection(train_set, fraction)[1]["frames"])
        if frames not in done:
            tuned = finetune(model, train_set, val_set, fraction, seed=seed, device=device,
                             progress=_prefixed(progress, f"finetune {fraction * 100:g}%"), **schedule)
            probed = evaluate_fewshot(model, train_set, val_set, fraction, device, seed,
                                      _prefixed(progress, f"probe {fraction * 100:g}%"), **(probe or {}))
            done[frames] = {"finetune": tuned, "linear_probe": probed,
                            "finetune_minus_probe": finetune_minus_probe(tuned, probed, seed=seed)}
            if on_finished is not None:
                on_finished(frames, done[frames])
        first = done[frames]
        runs.append({"fraction": float(fraction), "finetune_minus_probe": first["finetune_minus_probe"],
                     **{m: {**first[m], "fraction": float(fraction)} for m in ("finetune", "linear_probe")}})
    return {"fractions": [r["fraction"] for r in runs],
            "frame_fraction": [r["finetune"]["frame_fraction"] for r in runs],
            "finetune": [r["finetune"]["miou"] for r in runs],
            "linear_probe": [r["linear_probe"]["miou"] for r in runs],
            "finetune_minus_probe": [r["finetune_minus_probe"] for r in runs], "seed": seed, "runs": runs}


def finetune_minus_probe(tuned: dict, probed: dict, n_resamples: int = 1000, seed: int = 0) -> dict | None:
    """mIoU of fine-tuning minus linear probing scored on the same val frames (each over its own
    fixed class list, the same here), with a paired 95% bootstrap interval over the frames' scenes and
    ``significant`` (:func:`relviz.stats.paired_difference`); under :data:`relviz.stats.MIN_SCENES`
    scenes (or scenes unknown) the difference alone with ``interval_refused`` and ``per_scene``. Takes
    the two results' ``confusion_per_frame`` and ``frame_scenes``."""
    a, b = (np.asarray(r["confusion_per_frame"], dtype=np.int64) for r in (tuned, probed))
    if a.shape != b.shape:
        raise InputError(f"the two results were scored on different val frames ({len(a)} and {len(b)})")
    if not len(a):
        return None
    sa, sb = ConfusionSums(a), ConfusionSums(b)
    ca, cb = sa.classes, sb.classes
    value = float(sa.miou(np.ones(len(a)), ca) - sb.miou(np.ones(len(b)), cb))
    scenes = tuned.get("frame_scenes")
    if scenes is not None and probed.get("frame_scenes") not in (None, scenes):
        raise InputError("the two results were scored on frames of different scenes")
    if scenes is None:
        return {"value": value, "low": None, "high": None, "significant": None, "per_scene": None,
                "interval_refused": "the frames' scenes are not known"}
    ids = np.asarray(scenes, dtype=np.int64)
    n_scenes = int(ids.max()) + 1
    tuned_miou, probed_miou = (scene_statistic(lambda m, s=s, c=c: s.miou(m, c), ids) for s, c in ((sa, ca), (sb, cb)))
    alone = np.eye(n_scenes)  # each scene alone
    per_scene = [None if math.isnan(d) else float(d) for d in tuned_miou(alone) - probed_miou(alone)]
    why = refusal(n_scenes)
    if why:
        return {"value": value, "low": None, "high": None, "significant": None, "per_scene": per_scene,
                "interval_refused": why}
    diff = paired_difference(tuned_miou, probed_miou, n_scenes, n_resamples, seed=seed)
    return {**diff.as_dict(), "per_scene": per_scene, "interval_refused": None}
