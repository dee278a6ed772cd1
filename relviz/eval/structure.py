"""The structure numbers (U, T, G) and zero-shot mIoU of validation point features: gathering
the student's and the teacher's features over keyframes, and the metrics on one sample."""

from __future__ import annotations

import numpy as np
import torch

from relviz.data.dataset import collate
from relviz.eval.features import dataset_for, student_voxel_features, teacher_pair_features, with_pairs
from relviz.eval.zeroshot import predict_by_text
from relviz.metrics import modality_gap, sample_per_class, tolerance, uniformity
from relviz.segmentation import confusion_matrix, iou_per_class, mean_iou


def gather_val_features(model, teacher, cache, dataset, n_samples: int, device) -> dict:
    """Over the first ``n_samples`` keyframes of ``dataset``: student point features ``features``
    [N, D] and ``labels`` [N]; ``pair_index`` [M] (into them) of the points with a camera pixel and
    the teacher's features there, ``pair_teacher`` [M, D]; and, by :func:`with_pairs`,
    ``pair_student`` [M, D] and ``pair_labels`` [M]."""
    dataset = dataset_for(model, dataset)
    feats, labels, pair_index, pair_teacher = [], [], [], []
    offset = 0
    with torch.inference_mode():
        for i in range(min(n_samples, len(dataset))):
            batch = collate([dataset[i]])
            point = student_voxel_features(model, batch, device)[batch["inverse"].to(device)].float().cpu()
            feats.append(point)
            labels.append(batch["labels"])
            pair_index.append(batch["pair_points"] + offset)
            pair_teacher.append(teacher_pair_features(teacher, cache, dataset, batch).cpu())
            offset += len(point)
    return with_pairs({"features": torch.cat(feats), "labels": torch.cat(labels), "pair_index": torch.cat(pair_index),
                       "pair_teacher": torch.cat(pair_teacher)})


def gather_teacher_val_features(teacher, cache, dataset, n_samples: int) -> dict:
    """The teacher's side of :func:`gather_val_features`: its features at the paired points of the
    first ``n_samples`` keyframes (``features`` = ``pair_teacher``, every point paired)."""
    feats, labels = [], []
    for i in range(min(n_samples, len(dataset))):
        batch = collate([dataset[i]])
        feats.append(teacher_pair_features(teacher, cache, dataset, batch).cpu())
        labels.append(batch["labels"][batch["pair_points"]])
    f = torch.cat(feats)
    return with_pairs({"features": f, "labels": torch.cat(labels), "pair_index": torch.arange(len(f)),
                       "pair_teacher": f})


def structure_metrics(features: torch.Tensor, labels: torch.Tensor, pair_features: torch.Tensor,
                      pair_teacher: torch.Tensor, text: torch.Tensor, per_class: int = 5000, seed: int = 0) -> dict:
    """U, T (and per class) on a class-stratified sample of ``features`` [N, D] with ``labels`` [N];
    G between paired features and their teacher features, and against the class text embeddings;
    zero-shot mIoU of ``features`` by ``text`` over all labelled points."""
    idx = sample_per_class(labels, per_class=per_class, seed=seed)
    z, y = features[idx], labels[idx]
    tol = tolerance(z, y)
    cm = confusion_matrix(predict_by_text(features, text), labels)
    iou = iou_per_class(cm)
    return {"uniformity": uniformity(z), "tolerance": tol.mean,
            "tolerance_per_class": {int(c): v for c, v in tol.per_class.items() if not np.isnan(v)},
            "gap": modality_gap(pair_features, pair_teacher), "gap_text": modality_gap(z, text),
            "zeroshot_miou": mean_iou(cm), "zeroshot_iou": {int(c): float(iou[c]) for c in range(1, 17)
                                                            if not np.isnan(iou[c])},
            "sample_size": int(len(idx)), "sample_counts": {int(c): int(n) for c, n in tol.counts.items()}}


def structure_and_zeroshot(model, teacher, cache, dataset, n_samples: int = 4, per_class: int = 500, seed: int = 0,
                           device="cpu") -> dict:
    """:func:`structure_metrics` of a student on the first ``n_samples`` keyframes of ``dataset``."""
    val = gather_val_features(model, teacher, cache, dataset, n_samples, device)
    out = structure_metrics(val["features"], val["labels"], val["pair_student"], val["pair_teacher"],
                            teacher.class_embeddings().cpu(), per_class, seed)
    return {**out, "val_samples": int(min(n_samples, len(dataset)))}
