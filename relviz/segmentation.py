"""Semantic-segmentation scores with nuscenes-devkit's semantics: a confusion matrix over classes
1..C with 0 ignored, per-class IoU, and mIoU as the NaN-mean over classes with a defined IoU (a class
absent from both ground truth and predictions has no IoU; it never counts as 1.0)."""

from __future__ import annotations

import numpy as np
import torch

from relviz.errors import InputError


def confusion_matrix(pred, target, num_classes: int = 17, ignore_index: int = 0) -> np.ndarray:
    """int64 [num_classes, num_classes], rows = ground truth, columns = prediction; points whose
    ground truth is ``ignore_index`` are dropped (the ignore row and column stay zero)."""
    pred = torch.as_tensor(pred).flatten().long().cpu()
    target = torch.as_tensor(target).flatten().long().cpu()
    if pred.shape != target.shape:
        raise InputError(f"predictions {tuple(pred.shape)} and labels {tuple(target.shape)} differ in length")
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    if pred.numel() and (pred.min() < 0 or pred.max() >= num_classes or target.min() < 0
                         or target.max() >= num_classes):
        raise InputError(f"classes must lie in [0, {num_classes - 1}]")
    cm = torch.bincount(target * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)
    cm = cm.numpy().astype(np.int64)
    cm[:, ignore_index] = 0  # as the devkit: predictions of the ignore class are dropped
    return cm


def iou_per_class(cm: np.ndarray, ignore_index: int = 0) -> np.ndarray:
    """IoU of every class [C] from a confusion matrix; NaN where the class is absent from both the
    ground truth and the predictions (and for the ignore class)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    iou[ignore_index] = np.nan
    return iou


def mean_iou(cm: np.ndarray, ignore_index: int = 0) -> float:
    """NaN-mean of :func:`iou_per_class`; NaN when no class has a defined IoU."""
    iou = iou_per_class(cm, ignore_index)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
