"""Evaluation: segmentation scores, zero-shot and few-shot protocols, exports and reports."""

from relviz.segmentation import confusion_matrix, iou_per_class, mean_iou

__all__ = ["confusion_matrix", "iou_per_class", "mean_iou"]
