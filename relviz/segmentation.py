"""Semantic-segmentation scores: a confusion matrix over classes 1..C with 0 ignored, per-class IoU,
and two means of it.

- :func:`mean_iou_over` (relviz's headline): the mean over one fixed class list, the classes with
  ground truth in the evaluated set, the same for every model and the teacher, so a stray prediction
  of a class absent from the ground truth cannot change it; such predictions are counted as false
  positives (:func:`absent_predictions`).
- :func:`mean_iou` (nuscenes-devkit's rule, for comparison with published tables): the NaN-mean over
  classes with a defined IoU, where a class absent from the ground truth but predicted counts 0, so the
  class set differs between models on any subset of a split. Neither ever counts a class as 1.0."""

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


def classes_with_ground_truth(cm: np.ndarray, ignore_index: int = 0) -> tuple[int, ...]:
    """The classes with at least one ground-truth point in a confusion matrix (rows), ignore left out."""
    support = np.asarray(cm).sum(1)
    return tuple(int(c) for c in np.flatnonzero(support > 0) if c != ignore_index)


def mean_iou_over(cm: np.ndarray, classes: tuple[int, ...] | list[int]) -> float:
    """Mean IoU over the fixed class list ``classes`` (normally :func:`classes_with_ground_truth` of the
    evaluated set): an unlisted class never enters it, and a listed class without ground truth in
    ``cm`` (a scene alone, a bootstrap resample) leaves that mean whatever is predicted: which classes
    count depends on the labels only, the same for every model, so a stray prediction cannot add a 0.
    NaN when no listed class has ground truth."""
    support = np.asarray(cm).sum(1)
    present = [c for c in classes if support[c] > 0]
    if not present:
        return float("nan")
    iou = iou_per_class(cm)[present]
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def absent_predictions(cm: np.ndarray, classes: tuple[int, ...] | list[int]) -> dict[int, int]:
    """Labelled points predicted as a class outside ``classes`` (absent from the ground truth): class ->
    count of such false positives, only classes with at least one."""
    cm = np.asarray(cm)
    predicted = cm.sum(0)
    return {int(c): int(predicted[c]) for c in range(1, cm.shape[1]) if c not in set(classes) and predicted[c] > 0}
