"""Few-shot by fine-tuning the whole student (SLidR's downstream protocol), and the label-efficiency
curve: mIoU against the labelled fraction for fine-tuning and for linear probing.

The labelled frames are :func:`relviz.eval.fewshot.fewshot_frames`' (SLidR's every-k-th-scene
rule). A copy of the student gets a linear head (16 outputs, classes 1..16, on the student's output
features, as the linear probe's) and both are trained with cross-entropy on the labelled points
(label 0 ignored). Scores are the devkit's, on every val frame.

The schedule (``SLIDR_FINETUNE``) is SLidR's ``config/semseg_nuscenes.yaml`` (valeoai/SLidR at
14729d0): SGD, momentum 0.9, dampening 0.1, weight decay 1e-4, learning rate 0.02 for the network
and 2.0 for the head (``lr_head``), cosine annealing to 0, batch 16, 100 epochs, rotation about z and
flips of x and y as augmentation. Differences: SLidR's loss is Lovász-softmax plus cross-entropy on
voxel labels and its head replaces the network's last 1x1 layer; here it is cross-entropy on point
labels and the head sits on top of the (L2-normalised) output features, so fine-tuning and probing
see the same features. The cosine is stepped per optimizer step rather than per epoch.
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
from relviz.eval.features import dataset_for
from relviz.eval.keyframe_sums import ConfusionSums
from relviz.eval.fewshot import (NUM_CLASSES, Progress, check_number, evaluate_fewshot, point_features, score_on,
                                 segmentation_scores, selection)
from relviz.stats import paired_difference

SLIDR_FINETUNE = dict(epochs=100, batch=16, lr=0.02, lr_head=2.0, momentum=0.9, dampening=0.1, weight_decay=1e-4)
# A smoke-test schedule for CPUs, 5x shorter. Measured on the demo relational student, 10% of the test
# fixture's mini_train (2 keyframes): 0.226 mIoU against 0.362 with SLidR's 100 epochs; not for numbers.
CPU_FINETUNE = dict(SLIDR_FINETUNE, epochs=20)
FRACTIONS = (0.01, 0.05, 0.1, 0.25, 1.0)  # SLidR's label fractions


def finetune(model, train_set: NuScenesLidarSeg, val_set: NuScenesLidarSeg, fraction: float = 0.01,
             epochs: int | None = 100, steps: int | None = None, lr: float = 0.02, lr_head: float = 2.0,
             batch: int = 16, momentum: float = 0.9, dampening: float = 0.1, weight_decay: float = 1e-4,
             augment: bool = True, seed: int = 0, device="cpu", progress: Progress | None = None) -> dict:
    """Fine-tune a copy of ``model`` (the caller's is never changed) with a linear head on the
    labelled points of ``fraction`` of ``train_set``'s frames, score it on every frame of ``val_set``.

    ``steps`` (optimizer steps) replaces ``epochs`` (passes over the labelled frames, ``batch``
    frames a step) when given. ``progress(phase, done, total)``: ``train`` per step, ``evaluate``
    per val frame. Returns a JSON-ready dict: ``method`` = "finetune", :func:`segmentation_scores`,
    the frame selection (``fraction``, ``frame_rule``, ``scenes``, ``frames``, ``frame_fraction``),
    ``seed``, ``schedule``, ``loss`` (per step), ``wall_s`` and ``device``."""
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
    frames, chosen = selection(train_set, fraction)
    device = torch.device(device)
    steps_per_epoch = math.ceil(len(frames) / batch)
    total = steps if steps is not None else epochs * steps_per_epoch
    schedule = {"optimizer": "sgd", "scheduler": "cosine", "loss": "cross_entropy", "epochs": total / steps_per_epoch,
                "steps": total, "batch": batch, "lr": lr, "lr_head": lr_head, "momentum": momentum,
                "dampening": dampening, "weight_decay": weight_decay, "augment": augment}

    student = copy.deepcopy(model).to(device).train()  # the caller's weights and mode stay as they are
    for p in student.parameters():
        p.requires_grad_(True)
    with torch.random.fork_rng(devices=[]):  # a seeded head without touching the caller's RNG
        torch.manual_seed(seed)
        head = torch.nn.Linear(student.config.out_channels, NUM_CLASSES).to(device)
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
        target = b["labels"].to(device) - 1  # -1: unlabelled, ignored
        labelled = bool((target >= 0).any())  # else no labelled point in this batch: nothing to learn from
        if labelled:
            loss = F.cross_entropy(head(point_features(student, b, device).float()), target, ignore_index=-1)
            if not torch.isfinite(loss):
                raise NonFiniteError(f"fine-tuning diverged at step {step + 1} of {total} (loss {loss.item()}); "
                                     f"lower lr ({lr}) or lr_head ({lr_head})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
        losses.append(loss.item() if labelled else None)
        if progress:  # it may raise to stop the run (a job's cancel)
            progress("train", step + 1, total)
    if all(v is None for v in losses):
        raise InputError(f"the {len(frames)} few-shot frames hold no labelled point (every label is 0, 'ignore')")
    trained = time.perf_counter()
    head.eval()
    per_frame = score_on(student, head, val_set, device, progress)
    return {"method": "finetune", **segmentation_scores(per_frame, seed=seed), **chosen, "seed": seed,
            "schedule": schedule, "loss": losses, "device": str(device),
            "wall_s": {"train": trained - start, "evaluate": time.perf_counter() - trained}}


def _prefixed(progress: Progress | None, label: str) -> Progress | None:
    return None if progress is None else (lambda phase, done, total: progress(f"{label}: {phase}", done, total))


def label_efficiency(model, train_set: NuScenesLidarSeg, val_set: NuScenesLidarSeg,
                     fractions: Sequence[float] = FRACTIONS, seed: int = 0, device="cpu",
                     progress: Progress | None = None, probe: dict | None = None,
                     finished: Mapping[tuple[str, ...], dict] | None = None,
                     on_finished: Callable[[tuple[str, ...], dict], None] | None = None, **schedule) -> dict:
    """mIoU against the labelled fraction, for fine-tuning (:func:`finetune`, with ``schedule``'s
    keyword arguments) and for linear probing (:func:`relviz.eval.fewshot.evaluate_fewshot`, with
    ``probe``'s: ``epochs``, ``lr``, ``max_per_class``).
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
    """mIoU of fine-tuning minus linear probing scored on the same val frames, with a paired 95%
    bootstrap interval over those frames and ``significant`` (:func:`relviz.stats.paired_difference`);
    None with fewer than 2 frames. Takes the two results' ``confusion_per_frame``."""
    a, b = (np.asarray(r["confusion_per_frame"], dtype=np.int64) for r in (tuned, probed))
    if a.shape != b.shape:
        raise InputError(f"the two results were scored on different val frames ({len(a)} and {len(b)})")
    if len(a) < 2:
        return None
    return paired_difference(ConfusionSums(a).miou, ConfusionSums(b).miou, len(a), n_resamples, seed=seed).as_dict()
