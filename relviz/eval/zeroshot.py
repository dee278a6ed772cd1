"""Zero-shot 3D segmentation by text, and the structure numbers (U, T, G) of point features."""

from __future__ import annotations

import numpy as np
import torch

from relviz.data.dataset import collate
from relviz.eval.features import student_voxel_features, teacher_pair_features
from relviz.eval.segmentation import confusion_matrix, iou_per_class, mean_iou
from relviz.metrics import modality_gap, sample_per_class, tolerance, uniformity


def predict_by_text(point_features: torch.Tensor, text: torch.Tensor, class_of_prompt: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """Per-point class: ``argmax_p k . t_p`` over prompt embeddings [P, D]; the winning prompt's class
    (``class_of_prompt`` [P], default p + 1, i.e. the 16 classes in order). Returns int64 [N]."""
    best = (point_features.float() @ text.to(point_features.device).float().T).argmax(1)
    if class_of_prompt is None:
        return best + 1
    return class_of_prompt.to(best.device)[best]


def gather_val_features(model, teacher, cache, dataset, n_samples: int, device) -> dict:
    """Student point features, their labels, and teacher features of the paired points over the
    first ``n_samples`` keyframes of ``dataset``."""
    feats, labels, pair_student, pair_teacher = [], [], [], []
    with torch.inference_mode():
        for i in range(min(n_samples, len(dataset))):
            batch = collate([dataset[i]])
            point = student_voxel_features(model, batch, device)[batch["inverse"].to(device)].float().cpu()
            feats.append(point)
            labels.append(batch["labels"])
            pair_student.append(point[batch["pair_points"]])
            pair_teacher.append(teacher_pair_features(teacher, cache, dataset, batch).cpu())
    return {"features": torch.cat(feats), "labels": torch.cat(labels), "pair_student": torch.cat(pair_student),
            "pair_teacher": torch.cat(pair_teacher)}


def structure_and_zeroshot(model, teacher, cache, dataset, n_samples: int = 4, per_class: int = 500, seed: int = 0,
                           device="cpu") -> dict:
    """U, T (and per class), G against the paired teacher features and against the class text
    embeddings, on a class-stratified sample; zero-shot mIoU over all labelled points."""
    val = gather_val_features(model, teacher, cache, dataset, n_samples, device)
    idx = sample_per_class(val["labels"], per_class=per_class, seed=seed)
    z, y = val["features"][idx], val["labels"][idx]
    tol = tolerance(z, y)
    text = teacher.class_embeddings().cpu()
    pred = predict_by_text(val["features"], text)
    cm = confusion_matrix(pred, val["labels"])
    iou = iou_per_class(cm)
    return {"uniformity": uniformity(z), "tolerance": tol.mean,
            "tolerance_per_class": {int(c): v for c, v in tol.per_class.items() if not np.isnan(v)},
            "gap": modality_gap(val["pair_student"], val["pair_teacher"]), "gap_text": modality_gap(z, text),
            "zeroshot_miou": mean_iou(cm), "zeroshot_iou": {int(c): float(iou[c]) for c in range(1, 17)
                                                            if not np.isnan(iou[c])},
            "sample_size": int(len(idx)), "val_samples": int(min(n_samples, len(dataset)))}
