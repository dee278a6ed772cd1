"""Zero-shot 3D segmentation by text: query parsing, prediction, evaluation and export."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import torch

from relviz.data.dataset import collate
from relviz.errors import InputError, shorten
from relviz.eval.features import dataset_for, student_voxel_features
from relviz.segmentation import confusion_matrix, iou_per_class, mean_iou
from relviz.files import atomic_path


MAX_QUERY_CHARS = 10_000  # the whole query text; a prompt is at most CLIP's 77 tokens anyway
MAX_QUERIES = 64


def parse_queries(text: str, class_names: list[str] | tuple[str, ...]) -> tuple[list[str], list[int]]:
    """Query lines ``prompt`` (a class name) or ``prompt = class`` -> (prompts, class index per prompt,
    1-based in ``class_names``). Class names match case-insensitively, with ``_`` or spaces. Refuses,
    with the line at fault (cut short), text that is too long, has control characters, is empty, has
    an empty prompt, or names no known class."""
    if len(text) > MAX_QUERY_CHARS:
        raise InputError(f"the queries are {len(text):,} characters long; at most {MAX_QUERY_CHARS:,} are accepted")
    names = {n.replace("_", " ").lower(): i + 1 for i, n in enumerate(class_names)}
    prompts, classes = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        control = next((c for c in line if unicodedata.category(c) == "Cc" and c != "\t"), None)
        if control is not None:
            raise InputError(f"query line {number} {shorten(line)}: contains the control character "
                             f"U+{ord(control):04X}; use plain text")
        prompt, sep, cls = line.partition("=")
        prompt = " ".join(prompt.split())
        cls = " ".join((cls if sep else prompt).replace("_", " ").split()).lower()
        if not prompt:
            raise InputError(f"query line {number} {shorten(line)}: the prompt before '=' is empty; write "
                             f"`text = class`")
        if cls not in names:
            raise InputError(f"query line {number}: {shorten(cls)} is not one of the {len(names)} classes "
                             f"({', '.join(names)})")
        prompts.append(prompt)
        classes.append(names[cls])
    if not prompts:
        raise InputError("type at least one query (one per line)")
    if len(prompts) > MAX_QUERIES:
        raise InputError(f"{len(prompts)} queries; at most {MAX_QUERIES} are accepted")
    return prompts, classes


def predict_by_text(point_features: torch.Tensor, text: torch.Tensor, class_of_prompt: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """Per-point class: ``argmax_p k . t_p`` over prompt embeddings [P, D]; the winning prompt's class
    (``class_of_prompt`` [P], default p + 1, i.e. the 16 classes in order). Returns int64 [N]."""
    if point_features.shape[-1] != text.shape[-1]:
        raise InputError(f"point features have dimension {point_features.shape[-1]} but the text embeddings "
                         f"{text.shape[-1]}: the student was distilled from another teacher than this one")
    best = (point_features.float() @ text.to(point_features.device).float().T).argmax(1)
    if class_of_prompt is None:
        return best + 1
    return class_of_prompt.to(best.device)[best]


def student_point_predictions(model, dataset, text: torch.Tensor, device="cpu", class_of_prompt=None):
    """Yield (index, lidar token, per-point predictions int64 [N], labels [N] or None) over a dataset."""
    dataset = dataset_for(model, dataset)
    with torch.inference_mode():
        for i in range(len(dataset)):
            batch = collate([dataset[i]])
            feats = student_voxel_features(model, batch, device)[batch["inverse"].to(device)]
            yield i, batch["lidar_tokens"][0], predict_by_text(feats, text, class_of_prompt).cpu(), batch.get("labels")


def evaluate_zeroshot(model, teacher, dataset, device="cpu", prompts: list[str] | None = None,
                      class_of_prompt: torch.Tensor | None = None) -> dict:
    """Zero-shot 3D segmentation over a dataset: confusion matrix, per-class IoU, mIoU (devkit rules).

    prompts: free-text prompts instead of the 16 class ensembles, each mapped to a class by
    ``class_of_prompt`` [P] (1..16)."""
    from relviz.data.classes import CLASSES

    if prompts is not None:
        if class_of_prompt is None or len(class_of_prompt) != len(prompts):
            raise InputError("every prompt needs a class (class_of_prompt, one per prompt)")
        text = teacher.encode_text(prompts).cpu()
    else:
        text = teacher.class_embeddings().cpu()
    cm = np.zeros((17, 17), dtype=np.int64)
    for _, _, pred, labels in student_point_predictions(model, dataset, text, device, class_of_prompt):
        cm += confusion_matrix(pred, labels)
    iou = iou_per_class(cm)
    return {"miou": mean_iou(cm), "iou": {CLASSES[c]: (None if np.isnan(iou[c]) else float(iou[c])) for c in range(1, 17)},
            "confusion": cm.tolist(), "samples": len(dataset)}


def export_submission(model, teacher, dataset, out_dir, eval_set: str, device="cpu") -> Path:
    """Write predictions in the nuScenes-lidarseg submission format under ``out_dir``:
    ``lidarseg/<eval_set>/<lidar token>_lidarseg.bin`` (uint8, classes 1..16) and
    ``<eval_set>/submission.json``; returns ``out_dir``."""
    import json

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"export folder {out} exists and is not a directory; give a new or existing folder")
    bins = out / "lidarseg" / eval_set
    bins.mkdir(parents=True, exist_ok=True)
    (out / eval_set).mkdir(parents=True, exist_ok=True)
    text = teacher.class_embeddings().cpu()
    for _, token, pred, _ in student_point_predictions(model, dataset, text, device):
        with atomic_path(bins / f"{token}_lidarseg.bin") as tmp:
            pred.numpy().astype(np.uint8).tofile(tmp)
    meta = {"meta": {"use_camera": False, "use_lidar": True, "use_radar": False, "use_map": False,
                     "use_external": True}}  # the teacher's text embeddings are external knowledge
    (out / eval_set / "submission.json").write_text(json.dumps(meta, indent=2))
    return out
