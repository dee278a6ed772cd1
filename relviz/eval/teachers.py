"""Teachers side by side: the structure of several teachers' features on the same points.

Every teacher is sampled at the same pixels: the labelled lidar points a camera sees, one pair per
point, of the keyframes an :class:`~relviz.eval.selection.EvalSet` selects
(:func:`relviz.eval.structure.gather_teacher_val_features`), and the protocol's per-class sample of
them (the labels are the same for every teacher, so the sample is too). Per teacher: U (all pairs of
the sample), T, G to its class text embeddings (text-aligned teachers only) and the class-centroid
cosine similarities; per pair of teachers: linear CKA at the same points, the mean absolute
difference of their centroid similarities and G between them (when their dimensions agree).

:func:`compare_teacher_vals` (and :func:`compare_teachers`, which gathers the features of loaded
teachers) adds each teacher's U, T and G under the analysis protocol (U over pairs of
points from different keyframes, as the Feature structure page shows it) with intervals over scenes
where :func:`relviz.stats.refusal` allows them, per-scene values where it does not.
:func:`save_comparison` stores a result in the workspace cache, where the Feature structure page's
"Teachers side by side" reads it back (:func:`stored_comparisons`).
"""

from __future__ import annotations

import time
from itertools import combinations
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F

from relviz.errors import InputError
from relviz.eval.relations import centroid_similarity, linear_cka
from relviz.eval.selection import EvalSet
from relviz.files import read_json, write_json
from relviz.metrics import modality_gap, sample_per_class, tolerance, uniformity

STORE = "teachers"  # the folder under the workspace cache that holds stored comparisons
PROTOCOL_METRICS = ("uniformity", "uniformity_pooled", "tolerance", "gap_text")


def compare_teacher_features(features: Mapping[str, torch.Tensor], labels: torch.Tensor,
                             text: Mapping[str, torch.Tensor | None] | None = None, per_class: int = 5000,
                             seed: int = 0) -> dict:
    """The comparison of teachers' features at the same points.

    features: teacher name -> [N, D_t] (row i of every teacher is the same point); labels [N] (0 =
    ignore); text: teacher name -> class text embeddings [16, D_t], or None for a text-less teacher.
    U, T and G are on the unit sphere (the metrics normalise), and so is CKA: it is taken between
    the L2-normalised features, as :func:`relviz.eval.relations.class_relations` takes it.
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
        pairs.append({"a": a, "b": b, "cka": linear_cka(F.normalize(z[a], dim=1), F.normalize(z[b], dim=1)),
                      "centroid_mean_abs_difference": float((similarity[a] - similarity[b])[off].abs().mean())
                      if off.any() else 0.0,
                      "gap": modality_gap(z[a], z[b]) if z[a].shape[1] == z[b].shape[1] else None})
    return {"teachers": teachers, "pairs": pairs, "sample": {"per_class": per_class, "seed": seed, "size": int(len(idx))}}


def has_random_weights(teacher) -> bool:
    """Whether a teacher holds weights read from no file or tag: one built with ``random_init=True``
    (its ``random_init``, set by the teacher itself; a model handed in memory is not random). The demo
    teacher's come from its checkpoint."""
    return bool(getattr(teacher, "random_init", False))


def teacher_protocol(val: dict, text: torch.Tensor | None, per_class: int = 5000, seed: int = 0,
                     n_resamples: int = 1000) -> dict:
    """One teacher's U (cross-keyframe pairs; ``uniformity_pooled`` over all pairs), T (and
    ``tolerance_per_class``) and G to its class text (``gap_text``, text teachers only) under the
    analysis protocol (:func:`relviz.eval.structure.structure_metrics` of ``val``, a
    :func:`~relviz.eval.structure.gather_teacher_val_features` dict; ``text`` [16, D] or None), with
    ``intervals`` over scenes (None, and ``bootstrap["skipped"]`` saying why, under
    :data:`relviz.stats.MIN_SCENES` scenes), ``per_scene`` values and the ``sample``."""
    from relviz.eval.structure import structure_metrics

    out = structure_metrics(val, text, per_class, seed, n_resamples=n_resamples)
    keep = [k for k in PROTOCOL_METRICS if k in out]
    intervals = out.get("intervals")
    return {**{k: out[k] for k in keep}, "tolerance_per_class": out["tolerance_per_class"],
            "intervals": None if intervals is None else {k: intervals[k] for k in keep},
            "bootstrap": out.get("bootstrap"), "per_scene": {k: out["per_scene"][k] for k in keep},
            "sample": out["sample"]}


def compare_teacher_vals(vals: Mapping[str, dict], text: Mapping[str, torch.Tensor | None] | None = None,
                         per_class: int = 5000, seed: int = 0, n_resamples: int = 1000) -> dict:
    """:func:`compare_teacher_features` of teachers' validation features gathered on the same
    keyframes (name -> :func:`relviz.eval.structure.gather_teacher_val_features` dict), with each
    teacher's ``protocol`` (:func:`teacher_protocol`, ``n_resamples`` scene resamples), and the
    ``keyframes`` and ``scenes`` evaluated."""
    text = text or {}
    first = next(iter(vals.values()), None)
    if first is None:
        raise InputError("compare_teacher_vals: give at least one teacher's validation features")
    for name, val in vals.items():  # never from compare_teachers: the same keyframes give the same pairs
        if not torch.equal(first["labels"], val["labels"]) or not torch.equal(first["keyframe"], val["keyframe"]):
            raise InputError(f"teacher {name} was sampled at other points than the first teacher")
    out = compare_teacher_features({name: v["features"] for name, v in vals.items()}, first["labels"], text,
                                   per_class, seed)
    for name, val in vals.items():
        out["teachers"][name]["protocol"] = teacher_protocol(val, text.get(name), per_class, seed, n_resamples)
    return {**out, "keyframes": len(first["keyframe_index"]), "scenes": int(first["keyframe_scene"].max()) + 1}


def compare_teachers(teachers: Mapping[str, object], dataset, cache_root: str | Path, eval_set: EvalSet = EvalSet(),
                     per_class: int = 5000, seed: int = 0, n_resamples: int = 1000) -> dict:
    """:func:`compare_teacher_vals` of loaded ``teachers`` (name -> teacher, see
    :mod:`relviz.teacher.registry`) on the keyframes of ``dataset`` (a NuScenesLidarSeg) that
    ``eval_set`` selects; each teacher's dense features come from (and go to) its own feature cache
    under ``cache_root``. Adds ``eval_set`` and per teacher ``weights`` (its file or tag; None when
    random) and ``random_weights`` (:func:`has_random_weights`)."""
    from relviz.eval.structure import gather_teacher_val_features
    from relviz.teacher.cache import FeatureCache

    vals = {name: gather_teacher_val_features(teacher, FeatureCache(cache_root, teacher.identity), dataset, eval_set)
            for name, teacher in teachers.items()}
    text = {name: teacher.class_embeddings().cpu().float() if getattr(teacher, "has_text", True) else None
            for name, teacher in teachers.items()}
    out = compare_teacher_vals(vals, text, per_class, seed, n_resamples)
    for name, teacher in teachers.items():
        random = has_random_weights(teacher)
        out["teachers"][name].update(weights=None if random else str(getattr(teacher, "pretrained", None) or "demo"),
                                     random_weights=random)
    return {**out, "eval_set": eval_set.as_dict()}


def comparison_dir(cache_dir: str | Path, root: str | Path, version: str, split: str) -> Path:
    """Where the comparisons of teachers on ``root``'s ``version``/``split`` are stored: a folder of
    the workspace cache keyed by the dataset (its path, version, split and table files)."""
    from relviz.data.index import index_key

    return Path(cache_dir) / STORE / index_key(Path(root), version, split)


def save_comparison(result: dict, cache_dir: str | Path, root: str | Path, version: str, split: str) -> Path:
    """Store a :func:`compare_teachers` result (one file per evaluation set, points per class and
    seed; a later run replaces it) with the dataset it is of and when; returns the file."""
    missing = [k for k in ("teachers", "pairs", "sample", "eval_set") if k not in result]
    if missing:
        raise InputError(f"save_comparison: expected a compare_teachers result, got one without {', '.join(missing)}")
    sample = result["sample"]
    name = f"{EvalSet(**result['eval_set']).key()}-pc{sample['per_class']}-s{sample['seed']}.json"
    path = comparison_dir(cache_dir, root, version, split) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {**result, "dataset": {"name": Path(root).name, "version": version, "split": split},
                      "written": time.strftime("%Y-%m-%d %H:%M:%S")})
    return path


def stored_comparisons(cache_dir: str | Path, root: str | Path, version: str, split: str) -> list[dict]:
    """The stored comparisons of teachers on ``root``'s ``version``/``split``, newest first (a
    damaged or foreign file is skipped: it is no comparison to show)."""
    from relviz.eval.structure import from_json

    folder = comparison_dir(cache_dir, root, version, split)
    files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True) if folder.is_dir() else []
    stored = [read_json(p) for p in files]
    return [from_json(r) for r in stored if isinstance(r, dict) and {"teachers", "pairs", "written"} <= r.keys()]


__all__ = ["PROTOCOL_METRICS", "STORE", "compare_teacher_features", "compare_teacher_vals", "compare_teachers",
           "comparison_dir", "has_random_weights", "save_comparison", "stored_comparisons", "teacher_protocol"]
