"""Few-shot 3D segmentation: a linear probe on frozen point features, labels from a fraction of
the training frames chosen scene-wise (as SLidR's 1% split takes every k-th scene), scored on val."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from relviz.data.classes import CLASSES
from relviz.data.dataset import NuScenesLidarSeg, collate
from relviz.errors import InputError
from relviz.eval.features import dataset_for, student_voxel_features
from relviz.segmentation import confusion_matrix, iou_per_class, mean_iou


def fewshot_frames(dataset: NuScenesLidarSeg, fraction: float = 0.01) -> list[int]:
    """Indices of the labelled frames: every k-th scene (k = 1 / fraction, scenes sorted by name),
    then at most ``max(1, round(fraction * frames))`` of their frames, in order. Deterministic."""
    if not 0 < fraction <= 1:
        raise InputError(f"fraction must be in (0, 1], got {fraction}")
    step = max(1, round(1 / fraction))
    scenes = sorted(set(dataset.scene_of(i) for i in range(len(dataset))))[::step]
    chosen = [i for i in range(len(dataset)) if dataset.scene_of(i) in scenes]
    return chosen[: max(1, round(fraction * len(dataset)))]


def _features(model, dataset, indices, device) -> tuple[torch.Tensor, torch.Tensor]:
    dataset = dataset_for(model, dataset)
    feats, labels = [], []
    with torch.inference_mode():
        for i in indices:
            batch = collate([dataset[i]])
            feats.append(student_voxel_features(model, batch, device)[batch["inverse"].to(device)].float().cpu())
            labels.append(batch["labels"])
    return torch.cat(feats), torch.cat(labels)


def linear_probe(features: torch.Tensor, labels: torch.Tensor, epochs: int = 300, lr: float = 0.05,
                 max_per_class: int = 20_000, seed: int = 0) -> torch.nn.Linear:
    """Softmax regression from features [N, D] to classes 1..16 (0 ignored), full batch, Adam."""
    gen = torch.Generator().manual_seed(seed)
    keep = []
    for c in range(1, 17):
        idx = (labels == c).nonzero().flatten()
        keep.append(idx[torch.randperm(len(idx), generator=gen)[:max_per_class]])
    keep = torch.cat(keep)
    if keep.numel() == 0:
        raise InputError("the few-shot frames hold no labelled point")
    x, y = features[keep], labels[keep] - 1
    torch.manual_seed(seed)
    head = torch.nn.Linear(features.shape[1], 16)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(head(x), y).backward()
        opt.step()
    return head


def evaluate_fewshot(model, train_set: NuScenesLidarSeg, val_set: NuScenesLidarSeg, fraction: float = 0.01,
                     device="cpu", seed: int = 0) -> dict:
    """Train a linear probe on the few-shot frames, score it on every val frame."""
    frames = fewshot_frames(train_set, fraction)
    x, y = _features(model, train_set, frames, device)
    head = linear_probe(x, y, seed=seed)
    cm = np.zeros((17, 17), dtype=np.int64)
    with torch.inference_mode():
        for i in range(len(val_set)):
            xv, yv = _features(model, val_set, [i], device)
            cm += confusion_matrix(head(xv).argmax(1) + 1, yv)
    iou = iou_per_class(cm)
    return {"miou": mean_iou(cm), "iou": {CLASSES[c]: (None if np.isnan(iou[c]) else float(iou[c])) for c in range(1, 17)},
            "fraction": fraction, "frames": [train_set.sample_tokens[i] for i in frames]}
