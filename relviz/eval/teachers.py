"""Teachers side by side: the structure of several teachers' features on the same points.

Every teacher is sampled at the same pixels: the labelled lidar points a camera sees, one pair per
point, of the keyframes an :class:`~relviz.eval.selection.EvalSet` selects
(:func:`relviz.eval.structure.gather_teacher_val_features`), and the protocol's per-class sample of
them (the labels are the same for every teacher, so the sample is too). Per teacher: U (all pairs of
the sample), T, G to its class text embeddings (text-aligned teachers only) and the class-centroid
cosine similarities; per pair of teachers: linear CKA at the same points, the mean absolute
difference of their centroid similarities and G between them (when their dimensions agree).
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Mapping

import torch

from relviz.errors import InputError
from relviz.eval.relations import centroid_similarity, linear_cka
from relviz.eval.selection import EvalSet
from relviz.metrics import modality_gap, sample_per_class, tolerance, uniformity


def compare_teacher_features(features: Mapping[str, torch.Tensor], labels: torch.Tensor,
                             text: Mapping[str, torch.Tensor | None] | None = None, per_class: int = 5000,
                             seed: int = 0) -> dict:
    """The comparison of teachers' features at the same points.

    features: teacher name -> [N, D_t] (row i of every teacher is the same point); labels [N] (0 =
    ignore); text: teacher name -> class text embeddings [16, D_t], or None for a text-less teacher.
    Returns ``teachers`` (name -> {dim, uniformity, tolerance, gap_text (None without text),
    classes, centroid_similarity [C][C]}), ``pairs`` ([{a, b, cka, centroid_mean_abs_difference,
    gap (None when dims differ)}]) and ``sample`` (per_class, seed, size)."""
    if len(features) < 1:
        raise InputError("compare_teacher_features: give at least one teacher's features")
    rows = {name: f.shape[0] for name, f in features.items()}
    if len(set(rows.values())) != 1 or next(iter(rows.values())) != labels.shape[0]:
        raise InputError(f"compare_teacher_features: every teacher needs features at the same {labels.shape[0]} "
                         f"points; got rows {rows}")
    idx = sample_per_class(labels, per_class=per_class, seed=seed)
    if len(idx) < 2:
        raise InputError(f"the sample holds {len(idx)} labelled point(s): teacher structure needs 2")
    y = labels[idx]
    z = {name: f[idx].float() for name, f in features.items()}
    text = text or {}
    teachers, similarity = {}, {}
    for name, feats in z.items():
        classes, sim = centroid_similarity(feats, y)
        similarity[name] = sim
        emb = text.get(name)
        teachers[name] = {"dim": int(feats.shape[1]), "uniformity": uniformity(feats),
                          "tolerance": tolerance(feats, y).mean,
                          "gap_text": None if emb is None else modality_gap(feats, emb),
                          "classes": classes, "centroid_similarity": sim.tolist()}
    pairs = []
    for a, b in combinations(z, 2):
        off = ~torch.eye(similarity[a].shape[0], dtype=torch.bool)
        pairs.append({"a": a, "b": b, "cka": linear_cka(z[a], z[b]),
                      "centroid_mean_abs_difference": float((similarity[a] - similarity[b])[off].abs().mean())
                      if off.any() else 0.0,
                      "gap": modality_gap(z[a], z[b]) if z[a].shape[1] == z[b].shape[1] else None})
    return {"teachers": teachers, "pairs": pairs, "sample": {"per_class": per_class, "seed": seed, "size": int(len(idx))}}


def compare_teachers(teachers: Mapping[str, object], dataset, cache_root: str | Path, eval_set: EvalSet = EvalSet(),
                     per_class: int = 5000, seed: int = 0) -> dict:
    """:func:`compare_teacher_features` of loaded ``teachers`` (name -> teacher, see
    :mod:`relviz.teacher.registry`) on the keyframes of ``dataset`` (a NuScenesLidarSeg) that
    ``eval_set`` selects; each teacher's dense features come from (and go to) its own feature cache
    under ``cache_root``. Adds ``keyframes`` (how many) and ``eval_set``."""
    from relviz.eval.structure import gather_teacher_val_features
    from relviz.teacher.cache import FeatureCache

    features, labels, text = {}, None, {}
    for name, teacher in teachers.items():
        val = gather_teacher_val_features(teacher, FeatureCache(cache_root, teacher.identity), dataset, eval_set)
        if labels is not None and not torch.equal(labels, val["labels"]):  # never: same keyframes, same pairs
            raise InputError(f"teacher {name} was sampled at other points than the first teacher")
        labels = val["labels"]
        features[name] = val["features"]
        text[name] = teacher.class_embeddings().cpu().float() if getattr(teacher, "has_text", True) else None
    out = compare_teacher_features(features, labels, text, per_class, seed)
    return {**out, "keyframes": int(val["keyframe"].max()) + 1 if len(val["keyframe"]) else 0,
            "eval_set": eval_set.as_dict()}


__all__ = ["compare_teacher_features", "compare_teachers"]
