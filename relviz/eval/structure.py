"""The analysis protocol (docs/protocol.md): U, T, G and zero-shot mIoU of validation point features,
all on one sample, each with a bootstrap interval over keyframes; and the gathering of the
student's and the teacher's features that the protocol reads.

The points are the labelled points that a camera sees (one pair per point), for students and the
teacher alike; the sample is up to ``per_class`` of them per class, seeded; U, T and G are computed
on that sample; G is also given on every labelled paired point (``gap_all_pairs``); zero-shot mIoU
is over every labelled point the features cover (a student's: all; the teacher's: the paired ones).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from relviz.data.dataset import collate
from relviz.errors import InputError
from relviz.eval.features import (dataset_for, first_pair_per_point, student_voxel_features, teacher_pair_features,
                                  with_pairs)
from relviz.eval.keyframe_sums import ConfusionSums, FeatureSums, GapSums, confusion_sums, feature_sums, gap_sums
from relviz.eval.zeroshot import predict_by_text
from relviz.metrics import sample_per_class
from relviz.segmentation import iou_per_class
from relviz.stats import cluster_bootstrap, paired_difference

PAIRED = "labelled points seen by a camera"
POINTS = f"{PAIRED} (one pair per point)"
STATISTICS = ("uniformity", "tolerance", "gap", "gap_all_pairs", "gap_text", "zeroshot_miou", "zeroshot_miou_paired")


def gather_val_features(model, teacher, cache, dataset, n_samples: int, device) -> dict:
    """Over the first ``n_samples`` keyframes of ``dataset``: student point features ``features``
    [N, D], ``labels`` [N] and ``keyframe`` [N] (the keyframe's index in ``dataset``); ``pair_index``
    [M] (into them) of the points a camera sees, one pair per point (:func:`first_pair_per_point`),
    and the teacher's features there, ``pair_teacher`` [M, D]; and, by :func:`with_pairs`,
    ``pair_student``, ``pair_labels`` and ``pair_keyframe`` [M]."""
    dataset = dataset_for(model, dataset)
    feats, labels, keyframe, pair_index, pair_teacher = [], [], [], [], []
    offset = 0
    with torch.inference_mode():
        for i in range(min(n_samples, len(dataset))):
            batch = collate([dataset[i]])
            point = student_voxel_features(model, batch, device)[batch["inverse"].to(device)].float().cpu()
            first = first_pair_per_point(batch["pair_points"])
            feats.append(point)
            labels.append(batch["labels"])
            keyframe.append(torch.full((len(point),), i, dtype=torch.long))
            pair_index.append(batch["pair_points"][first] + offset)
            pair_teacher.append(teacher_pair_features(teacher, cache, dataset, batch, first).float().cpu())
            offset += len(point)
    return with_pairs({"features": torch.cat(feats), "labels": torch.cat(labels), "keyframe": torch.cat(keyframe),
                       "pair_index": torch.cat(pair_index), "pair_teacher": torch.cat(pair_teacher)})


def _teacher_val(features: torch.Tensor, labels: torch.Tensor, keyframe: torch.Tensor) -> dict:
    return with_pairs({"features": features, "labels": labels, "keyframe": keyframe,
                       "pair_index": torch.arange(len(features)), "pair_teacher": features})


def gather_teacher_val_features(teacher, cache, dataset, n_samples: int) -> dict:
    """The teacher's side of :func:`gather_val_features`: its features at the same paired points
    (``features`` = ``pair_teacher``, every point paired, so G = 0), with their labels and keyframes."""
    feats, labels, keyframe = [], [], []
    for i in range(min(n_samples, len(dataset))):
        batch = collate([dataset[i]])
        first = first_pair_per_point(batch["pair_points"])
        feats.append(teacher_pair_features(teacher, cache, dataset, batch, first).float().cpu())
        labels.append(batch["labels"][batch["pair_points"][first]])
        keyframe.append(torch.full((len(first),), i, dtype=torch.long))
    return _teacher_val(torch.cat(feats), torch.cat(labels), torch.cat(keyframe))


def teacher_view(val: dict) -> dict:
    """The teacher's features at a student's paired points (``val`` of :func:`gather_val_features`)
    as a dict of its own, equal to what :func:`gather_teacher_val_features` gathers."""
    return _teacher_val(val["pair_teacher"], val["pair_labels"], val["pair_keyframe"])


def protocol_sample(val: dict, per_class: int = 5000, seed: int = 0) -> torch.Tensor:
    """Indices [S] into the paired points of ``val``: up to ``per_class`` labelled points of every
    class (seeded; sorted by class, then index). The same for a student and the teacher."""
    return sample_per_class(val["pair_labels"], per_class=per_class, seed=seed)


def sample_indices(val: dict, result: dict) -> torch.Tensor:
    """The sample [S] (indices into ``val``'s paired points) that ``result`` (of
    :func:`structure_metrics` on ``val``) was computed on, for figures of the same points; refuses a
    result whose sample id does not match (other keyframes, features or protocol)."""
    s = result.get("sample") or {}
    if not {"per_class", "seed", "id"} <= s.keys():
        raise InputError("this structure result has no sample description (computed before the protocol)")
    idx = protocol_sample(val, s["per_class"], s["seed"])
    if _sample_id(val, idx, n_keyframes(val), s["per_class"], s["seed"]) != s["id"]:
        raise InputError(f"these validation features do not hold the sample {s['id']} of the result "
                         f"({s['per_class']} per class, seed {s['seed']}, {s.get('keyframes')} keyframes)")
    return idx


def sample_locations(val: dict, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the sample points ``idx`` [S] (indices into the paired points of a student's ``val`` of
    :func:`gather_val_features`, which holds every lidar point of its keyframes in order) lie: their
    keyframe [S] (0..n-1, the dataset's order) and their index among that keyframe's lidar points [S]."""
    counts = torch.bincount(val["keyframe"], minlength=n_keyframes(val))
    offsets = torch.cumsum(counts, 0) - counts
    keyframe = val["pair_keyframe"][idx]
    return keyframe, val["pair_index"][idx] - offsets[keyframe]


def n_keyframes(val: dict) -> int:
    return int(val["keyframe"].max()) + 1 if len(val["keyframe"]) else 0


@dataclass(frozen=True)
class ProtocolSums:
    """Per-keyframe sums of one checkpoint's features under the protocol, from which every metric
    of the data and of any bootstrap resample of its keyframes follows (one O(S^2) pass, for U)."""

    sample: FeatureSums  # the protocol sample, G against the teacher's features there
    all_pairs: GapSums  # every labelled paired point
    zeroshot: ConfusionSums  # every labelled point of the features
    zeroshot_paired: ConfusionSums  # the labelled paired points
    text_mean: np.ndarray  # [D] mean of the normalised class text embeddings
    description: dict  # the sample: points, per_class, seed, keyframes, size, counts, id

    @property
    def n_keyframes(self) -> int:
        return self.sample.n_keyframes

    def statistics(self) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
        """Each metric as a function of keyframe multiplicities m [..., K] -> [...]."""
        return {"uniformity": self.sample.uniformity, "tolerance": self.sample.tolerance, "gap": self.sample.gap,
                "gap_all_pairs": self.all_pairs.gap, "gap_text": lambda m: self.sample.gap_to(m, self.text_mean),
                "zeroshot_miou": self.zeroshot.miou, "zeroshot_miou_paired": self.zeroshot_paired.miou}


def _sample_id(val: dict, idx: torch.Tensor, k: int, per_class: int, seed: int) -> str:
    """Names the sampled points (their labels and keyframes) so that two results can be checked to
    share a sample; the student's and the teacher's on the same keyframes share it."""
    h = hashlib.sha256(f"{k}:{per_class}:{seed}".encode())
    for x in (val["pair_labels"][idx], val["pair_keyframe"][idx]):
        h.update(x.cpu().long().numpy().tobytes())
    return h.hexdigest()[:12]


def protocol_sums(val: dict, text: torch.Tensor, per_class: int = 5000, seed: int = 0) -> ProtocolSums:
    """:class:`ProtocolSums` of a val dict (:func:`gather_val_features`, :func:`teacher_view` or
    the cached form) with the class text embeddings ``text`` [16, D]."""
    missing = [k for k in ("keyframe", "pair_keyframe", "pair_labels", "pair_student") if k not in val]
    if missing:
        raise InputError(f"validation features without {', '.join(missing)}: gather them again "
                         f"(gather_val_features) or read them through cached_val_features")
    k = n_keyframes(val)
    idx = protocol_sample(val, per_class, seed)
    if len(idx) < 2:
        raise InputError(f"the protocol sample holds {len(idx)} labelled paired point(s) in {k} keyframe(s); "
                         f"U and T need at least 2: take more keyframes")
    y, kf = val["pair_labels"][idx], val["pair_keyframe"][idx]
    labelled = (val["pair_labels"] != 0).nonzero().flatten()
    pred = predict_by_text(val["features"], text).cpu()
    classes, counts = torch.unique(y, return_counts=True)
    description = {"points": POINTS, "per_class": per_class, "seed": seed, "keyframes": k, "size": int(len(idx)),
                   "counts": {int(c): int(n) for c, n in zip(classes.tolist(), counts.tolist())},
                   "all_pairs_size": int(len(labelled)), "zeroshot_points": int((val["labels"] != 0).sum()),
                   "zeroshot_scope": "all labelled points" if len(val["pair_index"]) < len(val["features"])
                   else PAIRED, "id": _sample_id(val, idx, k, per_class, seed)}
    return ProtocolSums(
        sample=feature_sums(val["pair_student"][idx], y, kf, k, paired=val["pair_teacher"][idx]),
        all_pairs=gap_sums(*(x if len(labelled) == len(x) else x[labelled]
                             for x in (val["pair_student"], val["pair_teacher"], val["pair_keyframe"])), k),
        zeroshot=confusion_sums(pred, val["labels"], val["keyframe"], k),
        zeroshot_paired=confusion_sums(pred[val["pair_index"]], val["pair_labels"], val["pair_keyframe"], k),
        text_mean=F.normalize(text.double().cpu(), dim=1).mean(0).numpy(), description=description)


def _bootstrap_batch(sums: ProtocolSums) -> int:
    """Resamples per statistic call: T's [batch, C, D] float64 array stays near 64 MB."""
    c, d = sums.sample.class_sums.shape[1:]
    return max(16, 2**23 // max(1, c * d))


def _bootstrap_settings(sums: ProtocolSums, n_resamples: int, confidence: float, method: str, seed: int) -> dict:
    return {"unit": "keyframe", "keyframes": sums.n_keyframes, "n_resamples": n_resamples, "confidence": confidence,
            "method": method, "seed": seed}


def structure_result(sums: ProtocolSums, n_resamples: int = 0, confidence: float = 0.95, method: str = "percentile",
                     bootstrap_seed: int = 0) -> dict:
    """The metrics of :class:`ProtocolSums` (see :func:`structure_metrics`)."""
    ones = np.ones(sums.n_keyframes)
    stats = sums.statistics()
    out = {name: float(f(ones)) for name, f in stats.items()}
    per_class = sums.sample.tolerance_per_class(ones)
    iou = iou_per_class(sums.zeroshot.total(ones))
    out.update({
        "tolerance_per_class": {c: float(v) for c, v in zip(sums.sample.classes, per_class) if np.isfinite(v)},
        "zeroshot_iou": {c: float(iou[c]) for c in range(1, len(iou)) if not np.isnan(iou[c])},
        "sample_size": sums.description["size"], "sample_counts": dict(sums.description["counts"]),
        "sample": sums.description})
    if n_resamples:
        if sums.n_keyframes < 2:
            out["intervals"] = None
            out["bootstrap"] = {"skipped": f"{sums.n_keyframes} keyframe: no interval over keyframes"}
        else:
            batch = _bootstrap_batch(sums)
            out["intervals"] = {name: cluster_bootstrap(f, sums.n_keyframes, n_resamples, confidence, method,
                                                        bootstrap_seed, batch).as_dict() for name, f in stats.items()}
            out["bootstrap"] = _bootstrap_settings(sums, n_resamples, confidence, method, bootstrap_seed)
    return out


def structure_metrics(val: dict, text: torch.Tensor, per_class: int = 5000, seed: int = 0, n_resamples: int = 0,
                      confidence: float = 0.95, method: str = "percentile", bootstrap_seed: int = 0) -> dict:
    """The protocol's metrics of a val dict: ``uniformity``, ``tolerance`` (and
    ``tolerance_per_class``), ``gap`` (to the teacher), ``gap_text`` (to the mean class text
    embedding) on the protocol sample; ``gap_all_pairs`` on every labelled paired point;
    ``zeroshot_miou`` (and ``zeroshot_iou`` per class) over every labelled point of ``features``,
    ``zeroshot_miou_paired`` over the paired ones; ``sample_size``, ``sample_counts`` and ``sample``
    (the description). With ``n_resamples`` > 0 also ``intervals`` (metric -> Interval.as_dict()) from
    a ``method`` bootstrap over keyframes, and ``bootstrap`` (its settings)."""
    return structure_result(protocol_sums(val, text, per_class, seed), n_resamples, confidence, method, bootstrap_seed)


def paired_comparison(a: ProtocolSums, b: ProtocolSums, n_resamples: int = 1000, confidence: float = 0.95,
                      method: str = "percentile", bootstrap_seed: int = 0) -> dict:
    """a - b for every metric of two checkpoints on the same sample (same keyframes, points,
    per_class and seed), each with a paired bootstrap interval over keyframes and ``significant``
    (the interval excludes 0): ``{"differences": {metric: Interval.as_dict()}, "sample", "bootstrap"}``."""
    if a.description["id"] != b.description["id"]:
        raise InputError(f"a paired comparison needs both checkpoints on the same sample; got samples "
                         f"{a.description['id']} ({a.description['keyframes']} keyframes) and "
                         f"{b.description['id']} ({b.description['keyframes']} keyframes)")
    fa, fb = a.statistics(), b.statistics()
    batch = _bootstrap_batch(a)
    diffs = {name: paired_difference(fa[name], fb[name], a.n_keyframes, n_resamples, confidence, method,
                                     bootstrap_seed, batch).as_dict() for name in STATISTICS}
    return {"differences": diffs, "sample": a.description,
            "bootstrap": _bootstrap_settings(a, n_resamples, confidence, method, bootstrap_seed)}


def structure_and_zeroshot(model, teacher, cache, dataset, n_samples: int = 4, per_class: int = 500, seed: int = 0,
                           device="cpu", on_features: Callable[[dict], None] | None = None) -> dict:
    """:func:`structure_metrics` of a student on the first ``n_samples`` keyframes of ``dataset``;
    ``on_features`` receives the gathered val dict (the trainer writes TensorBoard's projector)."""
    val = gather_val_features(model, teacher, cache, dataset, n_samples, device)
    if on_features is not None:
        on_features(val)
    out = structure_metrics(val, teacher.class_embeddings().cpu(), per_class, seed)
    return {**out, "val_samples": int(min(n_samples, len(dataset)))}


def from_json(stored):
    """A result read back from JSON: the per-class dicts get their int keys back (JSON keys are strings)."""
    if isinstance(stored, dict):
        return {int(k) if isinstance(k, str) and k.isdigit() else k: from_json(v) for k, v in stored.items()}
    return stored


__all__ = ["PAIRED", "POINTS", "STATISTICS", "ProtocolSums", "from_json", "gather_teacher_val_features",
           "gather_val_features", "n_keyframes", "paired_comparison", "protocol_sample", "protocol_sums",
           "sample_indices", "structure_and_zeroshot", "structure_metrics", "structure_result", "teacher_view"]
