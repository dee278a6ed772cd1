"""The analysis protocol (docs/protocol.md): U, T, G and zero-shot mIoU of validation point features,
all on one sample, with a bootstrap interval over scenes (given from :data:`relviz.stats.MIN_SCENES`
scenes on; per-scene values always); and the gathering of the student's and the teacher's features on
an evaluation set of scenes x keyframes (:class:`relviz.eval.selection.EvalSet`) that the protocol reads.

U is over pairs of points from distinct keyframes (``uniformity``; the pooled form, which drifts with
the number of keyframes, is ``uniformity_pooled``); zero-shot mIoU is over the fixed list of classes with
ground truth in the evaluated set (``zeroshot_miou``; nuscenes-devkit's rule is ``zeroshot_miou_devkit``).

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
from relviz.eval.features import (dataset_for, first_pair_per_point, point_features_of, teacher_pair_features,
                                  with_pairs)
from relviz.eval.keyframe_sums import ConfusionSums, FeatureSums, GapSums, confusion_sums, feature_sums, gap_sums
from relviz.eval.selection import EvalSet, scene_ids
from relviz.eval.zeroshot import predict_by_text
from relviz.teacher.prompts import DEFAULT_AGGREGATION, MEAN
from relviz.teacher.text import TextClassifier, build_text_classifier, text_classifier
from relviz.metrics import sample_per_class
from relviz.segmentation import absent_predictions, iou_per_class
from relviz.stats import cluster_bootstrap, paired_difference, refusal, resample_multiplicities, scene_statistic

PAIRED = "labelled points seen by a camera"
POINTS = f"{PAIRED} (one pair per point)"
STATISTICS = ("uniformity", "uniformity_pooled", "tolerance", "gap", "gap_all_pairs", "gap_text", "zeroshot_miou",
              "zeroshot_miou_devkit", "zeroshot_miou_paired")


def evaluation_keyframes(dataset, eval_set: EvalSet) -> tuple[list[int], torch.Tensor]:
    """The keyframes of ``dataset`` that ``eval_set`` selects [K] and each one's scene id [K]."""
    scene_of = [dataset.scene_of(i) for i in range(len(dataset))]
    chosen = eval_set.keyframes(scene_of)
    return chosen, torch.as_tensor(scene_ids(scene_of, chosen))


def _selection(chosen: list[int], scenes: torch.Tensor) -> dict:
    return {"keyframe_scene": scenes.long(), "keyframe_index": torch.as_tensor(chosen, dtype=torch.long)}


def gather_val_features(model, teacher, cache, dataset, eval_set: EvalSet, device,
                        progress: Callable[[int, int], None] | None = None) -> dict:
    """Over the keyframes of ``dataset`` that ``eval_set`` selects (K of them, spread over scenes):
    student point features ``features`` [N, D] (``model``: a student, or a feature set read by
    :func:`~relviz.eval.features.point_features_of`), ``labels`` [N] and ``keyframe`` [N] (the keyframe's
    position 0..K-1 in the selection); ``keyframe_scene`` [K] and ``keyframe_index`` [K] (its index in
    ``dataset``); ``pair_index`` [M] (into the points) of the points a camera sees, one pair per point
    (:func:`first_pair_per_point`), and the teacher's features there, ``pair_teacher`` [M, D]; and, by
    :func:`with_pairs`, ``pair_student``, ``pair_labels`` and ``pair_keyframe`` [M]. ``progress(done,
    total)`` after each keyframe (an exception it raises stops the gathering: the app's Cancel)."""
    dataset = dataset_for(model, dataset)
    chosen, scenes = evaluation_keyframes(dataset, eval_set)
    feats, labels, keyframe, pair_index, pair_teacher = [], [], [], [], []
    offset = 0
    with torch.inference_mode():
        for position, i in enumerate(chosen):
            batch = collate([dataset[i]])
            point = point_features_of(model, batch, device).float().cpu()
            first = first_pair_per_point(batch["pair_points"])
            feats.append(point)
            labels.append(batch["labels"])
            keyframe.append(torch.full((len(point),), position, dtype=torch.long))
            pair_index.append(batch["pair_points"][first] + offset)
            pair_teacher.append(teacher_pair_features(teacher, cache, dataset, batch, first).float().cpu())
            offset += len(point)
            if progress is not None:
                progress(position + 1, len(chosen))
    return with_pairs({"features": torch.cat(feats), "labels": torch.cat(labels), "keyframe": torch.cat(keyframe),
                       "pair_index": torch.cat(pair_index), "pair_teacher": torch.cat(pair_teacher),
                       **_selection(chosen, scenes)})


def _teacher_val(features: torch.Tensor, labels: torch.Tensor, keyframe: torch.Tensor, selection: dict) -> dict:
    return with_pairs({"features": features, "labels": labels, "keyframe": keyframe,
                       "pair_index": torch.arange(len(features)), "pair_teacher": features, **selection})


def gather_teacher_val_features(teacher, cache, dataset, eval_set: EvalSet,
                                progress: Callable[[int, int], None] | None = None) -> dict:
    """The teacher's side of :func:`gather_val_features`: its features at the same paired points
    (``features`` = ``pair_teacher``, every point paired, so G = 0), with their labels and keyframes;
    ``progress`` as there."""
    chosen, scenes = evaluation_keyframes(dataset, eval_set)
    feats, labels, keyframe = [], [], []
    for position, i in enumerate(chosen):
        batch = collate([dataset[i]])
        first = first_pair_per_point(batch["pair_points"])
        feats.append(teacher_pair_features(teacher, cache, dataset, batch, first).float().cpu())
        labels.append(batch["labels"][batch["pair_points"][first]])
        keyframe.append(torch.full((len(first),), position, dtype=torch.long))
        if progress is not None:
            progress(position + 1, len(chosen))
    return _teacher_val(torch.cat(feats), torch.cat(labels), torch.cat(keyframe), _selection(chosen, scenes))


def teacher_view(val: dict) -> dict:
    """The teacher's features at a student's paired points (``val`` of :func:`gather_val_features`)
    as a dict of its own, equal to what :func:`gather_teacher_val_features` gathers."""
    return _teacher_val(val["pair_teacher"], val["pair_labels"], val["pair_keyframe"],
                        {k: val[k] for k in ("keyframe_scene", "keyframe_index")})


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
    keyframe [S] (0..K-1, the position in the selection: ``val["keyframe_index"]`` maps it to the
    dataset) and their index among that keyframe's lidar points [S]."""
    counts = torch.bincount(val["keyframe"], minlength=n_keyframes(val))
    offsets = torch.cumsum(counts, 0) - counts
    keyframe = val["pair_keyframe"][idx]
    return keyframe, val["pair_index"][idx] - offsets[keyframe]


def n_keyframes(val: dict) -> int:
    if "keyframe_scene" in val:
        return len(val["keyframe_scene"])
    return int(val["keyframe"].max()) + 1 if len(val["keyframe"]) else 0


@dataclass(frozen=True)
class ProtocolSums:
    """Per-keyframe sums of one checkpoint's features under the protocol, from which every metric
    of the data and of any bootstrap resample of its keyframes follows (one O(S^2) pass, for U)."""

    sample: FeatureSums  # the protocol sample, G against the teacher's features there
    all_pairs: GapSums | None  # every labelled paired point (None: features not in the teacher's space)
    zeroshot: ConfusionSums | None  # every labelled point of the features (None: a teacher without text)
    zeroshot_paired: ConfusionSums | None  # the labelled paired points
    text_mean: np.ndarray | None  # [D] mean of the normalised class text embeddings
    scenes: np.ndarray  # [K] each keyframe's scene id, 0..S-1
    description: dict  # the sample: points, per_class, seed, keyframes, scenes, size, counts, id

    @property
    def n_keyframes(self) -> int:
        return self.sample.n_keyframes

    @property
    def n_scenes(self) -> int:
        return int(self.scenes.max()) + 1 if len(self.scenes) else 0

    def statistics(self) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
        """Each metric as a function of keyframe multiplicities m [..., K] -> [...]. Zero-shot means
        are over a fixed class list, the classes with ground truth in the evaluated points (all
        labelled points; the paired ones for ``zeroshot_miou_paired``, the teacher's points), fixed at
        the data's list in every resample."""
        out = {"uniformity": self.sample.uniformity, "uniformity_pooled": self.sample.uniformity_pooled,
               "tolerance": self.sample.tolerance}
        if self.all_pairs is not None:  # G compares with the teacher's features: the same dimension only
            out.update(gap=self.sample.gap, gap_all_pairs=self.all_pairs.gap)
        if self.zeroshot is None:  # a teacher without a text tower (DINOv2): no text, no zero-shot
            return out
        classes, paired = self.zeroshot.classes, self.zeroshot_paired.classes
        return {**out, "gap_text": lambda m: self.sample.gap_to(m, self.text_mean),
                "zeroshot_miou": lambda m: self.zeroshot.miou(m, classes),
                "zeroshot_miou_devkit": self.zeroshot.miou_devkit,
                "zeroshot_miou_paired": lambda m: self.zeroshot_paired.miou(m, paired)}

    def scene_statistics(self) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
        """Each metric as a function of scene multiplicities m [..., S] (keyframes nested in scenes)."""
        return {name: scene_statistic(f, self.scenes) for name, f in self.statistics().items()}

    def per_scene(self) -> dict[str, list[float | None]]:
        """Each metric on each scene alone [S] (None where undefined, e.g. U of a one-keyframe scene)."""
        one = np.eye(self.n_scenes)
        return {name: [None if not np.isfinite(v) else float(v) for v in f(one)]
                for name, f in self.scene_statistics().items()}


def _sample_id(val: dict, idx: torch.Tensor, k: int, per_class: int, seed: int) -> str:
    """Names the sampled points (their labels and keyframes, and which keyframes of the split) so that
    two results can be checked to share a sample; the student's and the teacher's on the same keyframes
    share it."""
    h = hashlib.sha256(f"{k}:{per_class}:{seed}".encode())
    for x in (val["pair_labels"][idx], val["pair_keyframe"][idx], val["keyframe_index"]):
        h.update(x.cpu().long().numpy().tobytes())
    return h.hexdigest()[:12]


def as_classifier(text) -> TextClassifier:
    """``text``: a :class:`~relviz.teacher.text.TextClassifier`, or the 16 class embeddings [16, D]
    (the mean-prototype classifier)."""
    if text is None or isinstance(text, TextClassifier):
        return text
    return build_text_classifier(MEAN, text)


def protocol_sums(val: dict, text, per_class: int = 5000, seed: int = 0, teacher_space: bool = True) -> ProtocolSums:
    """:class:`ProtocolSums` of a val dict (:func:`gather_val_features`, :func:`teacher_view` or
    the cached form) with the zero-shot text classifier ``text`` (a TextClassifier, or the class text
    embeddings [16, D]: the mean-prototype rule; None for a teacher without text: U, T and G only);
    its aggregation is named in the description."""
    classifier = as_classifier(text)
    # G compares with the teacher's features: only for features distilled into its space (``teacher_space``,
    # False for an imported set or model that does not declare it) and of its dimension: else U and T only
    same_space = teacher_space and val["pair_student"].shape[1] == val["pair_teacher"].shape[1]
    missing = [k for k in ("keyframe", "keyframe_scene", "keyframe_index", "pair_keyframe", "pair_labels",
                           "pair_student") if k not in val]
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
    pred = None if classifier is None else predict_by_text(val["features"], classifier).cpu()
    classes, counts = torch.unique(y, return_counts=True)
    scenes = val["keyframe_scene"].cpu().numpy().astype(np.int64)
    description = {"points": POINTS, "per_class": per_class, "seed": seed, "keyframes": k,
                   "prompt_aggregation": None if classifier is None else classifier.aggregation,
                   "scenes": int(scenes.max()) + 1 if len(scenes) else 0,
                   "keyframe_index": val["keyframe_index"].tolist(), "size": int(len(idx)),
                   "counts": {int(c): int(n) for c, n in zip(classes.tolist(), counts.tolist())},
                   "all_pairs_size": int(len(labelled)), "zeroshot_points": int((val["labels"] != 0).sum()),
                   "zeroshot_scope": "all labelled points" if len(val["pair_index"]) < len(val["features"])
                   else PAIRED, "id": _sample_id(val, idx, k, per_class, seed)}
    return ProtocolSums(
        sample=feature_sums(val["pair_student"][idx], y, kf, k, paired=val["pair_teacher"][idx] if same_space else None),
        all_pairs=gap_sums(*(x if len(labelled) == len(x) else x[labelled]
                             for x in (val["pair_student"], val["pair_teacher"], val["pair_keyframe"])), k)
        if same_space else None,
        zeroshot=None if pred is None else confusion_sums(pred, val["labels"], val["keyframe"], k),
        zeroshot_paired=None if pred is None else
        confusion_sums(pred[val["pair_index"]], val["pair_labels"], val["pair_keyframe"], k),
        text_mean=None if classifier is None else  # the class rows as given (float64 stays float64)
        F.normalize((text if isinstance(text, torch.Tensor) else classifier.class_embeddings).double().cpu(),
                    dim=1).mean(0).numpy(), scenes=scenes,
        description=description)


def _bootstrap_batch(sums: ProtocolSums) -> int:
    """Resamples per statistic call: T's [batch, C, D] float64 array stays near 64 MB."""
    c, d = sums.sample.class_sums.shape[1:]
    return max(16, 2**23 // max(1, c * d))


def _bootstrap_settings(sums: ProtocolSums, n_resamples: int, confidence: float, method: str, seed: int) -> dict:
    return {"unit": "scene", "scenes": sums.n_scenes, "keyframes": sums.n_keyframes, "n_resamples": n_resamples,
            "confidence": confidence, "method": method, "seed": seed}


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def scene_replicates(sums: ProtocolSums, n_resamples: int, seed: int = 0) -> dict[str, list[float | None]]:
    """Every metric on ``n_resamples`` scene resamples drawn by
    :func:`relviz.stats.resample_multiplicities` with ``seed``: the same draws for every checkpoint and
    the teacher on the same scenes, so a two-stage bootstrap over seeds and scenes pairs them."""
    m = resample_multiplicities(sums.n_scenes, n_resamples, seed)
    batch = _bootstrap_batch(sums)
    out = {}
    for name, f in sums.scene_statistics().items():
        values = np.concatenate([f(m[i:i + batch]) for i in range(0, len(m), batch)])
        out[name] = [_finite(v) for v in values]
    return out


def structure_result(sums: ProtocolSums, n_resamples: int = 0, confidence: float = 0.95, method: str = "percentile",
                     bootstrap_seed: int = 0, replicates: int = 0) -> dict:
    """The metrics of :class:`ProtocolSums` (see :func:`structure_metrics`)."""
    ones = np.ones(sums.n_keyframes)
    stats = sums.statistics()
    out = {name: _finite(f(ones)) for name, f in stats.items()}
    if sums.all_pairs is None:  # undefined, not zero: the features are not in the teacher's space
        out.update(gap=None, gap_all_pairs=None)
    per_class = sums.sample.tolerance_per_class(ones)
    out["tolerance_per_class"] = {c: float(v) for c, v in zip(sums.sample.classes, per_class) if np.isfinite(v)}
    if sums.zeroshot is not None:
        total = sums.zeroshot.total(ones)
        iou = iou_per_class(total)
        out.update({"zeroshot_iou": {c: float(iou[c]) for c in range(1, len(iou)) if not np.isnan(iou[c])},
                    "zeroshot_classes": list(sums.zeroshot.classes),
                    "zeroshot_false_positives": absent_predictions(total, sums.zeroshot.classes)})
    out.update({
        "per_scene": sums.per_scene(),
        "sample_size": sums.description["size"], "sample_counts": dict(sums.description["counts"]),
        "sample": sums.description})
    if n_resamples:
        why = refusal(sums.n_scenes)
        if why:
            out["intervals"] = None
            out["bootstrap"] = {"skipped": why, "scenes": sums.n_scenes, "keyframes": sums.n_keyframes}
        else:
            batch = _bootstrap_batch(sums)
            out["intervals"] = {name: cluster_bootstrap(f, sums.n_scenes, n_resamples, confidence, method,
                                                        bootstrap_seed, batch).as_dict()
                                for name, f in sums.scene_statistics().items()}
            out["bootstrap"] = _bootstrap_settings(sums, n_resamples, confidence, method, bootstrap_seed)
    if replicates and not refusal(sums.n_scenes):
        out["replicates"] = {"seed": bootstrap_seed, "n": replicates,
                             "values": scene_replicates(sums, replicates, bootstrap_seed)}
    return out


def structure_metrics(val: dict, text, per_class: int = 5000, seed: int = 0, n_resamples: int = 0,
                      confidence: float = 0.95, method: str = "percentile", bootstrap_seed: int = 0,
                      replicates: int = 0, teacher_space: bool = True) -> dict:
    """The protocol's metrics of a val dict: ``uniformity`` (cross-keyframe pairs; ``uniformity_pooled``
    over all pairs), ``tolerance`` (and ``tolerance_per_class``), ``gap`` (to the teacher), ``gap_text``
    (to the mean class text embedding) on the protocol sample; ``gap_all_pairs`` on every labelled
    paired point; ``zeroshot_miou`` over the fixed list ``zeroshot_classes`` (``zeroshot_iou`` per class,
    ``zeroshot_false_positives``: points predicted as an absent class) over every labelled point of
    ``features``, ``zeroshot_miou_devkit`` by the devkit's rule, ``zeroshot_miou_paired`` over the paired
    points; ``per_scene`` (metric -> [S] values); ``sample_size``, ``sample_counts`` and ``sample`` (the
    description). With ``n_resamples`` > 0 also ``intervals`` (metric -> Interval.as_dict()) from a
    ``method`` bootstrap over scenes, and ``bootstrap`` (its settings), or, with fewer than
    :data:`relviz.stats.MIN_SCENES` scenes, ``intervals`` None and ``bootstrap["skipped"]`` saying why.
    With ``replicates`` > 0 (and enough scenes) ``replicates``: every metric on that many shared scene
    resamples (:func:`scene_replicates`), for the two-stage bootstrap of an experiment's claims."""
    return structure_result(protocol_sums(val, text, per_class, seed, teacher_space), n_resamples, confidence, method,
                            bootstrap_seed, replicates)


def paired_comparison(a: ProtocolSums, b: ProtocolSums, n_resamples: int = 1000, confidence: float = 0.95,
                      method: str = "percentile", bootstrap_seed: int = 0) -> dict:
    """a - b for every metric of two checkpoints on the same sample (same keyframes, points,
    per_class and seed), each with a paired bootstrap interval over scenes and ``significant``
    (the interval excludes 0): ``{"differences": {metric: Interval.as_dict()}, "per_scene", "sample",
    "bootstrap"}``; with fewer than :data:`relviz.stats.MIN_SCENES` scenes ``differences`` is None,
    ``per_scene`` holds each scene's difference and ``bootstrap["skipped"]`` says why."""
    aggregations = {a.description.get("prompt_aggregation"), b.description.get("prompt_aggregation")} - {None}
    if len(aggregations) > 1:  # None: features without text (a text-less teacher, an imported set): no zero-shot
        raise InputError(f"a paired comparison needs one prompt aggregation; got "
                         f"{a.description.get('prompt_aggregation')} and {b.description.get('prompt_aggregation')}")
    if a.description["id"] != b.description["id"]:
        raise InputError(f"a paired comparison needs both checkpoints on the same sample; got samples "
                         f"{a.description['id']} ({a.description['keyframes']} keyframes) and "
                         f"{b.description['id']} ({b.description['keyframes']} keyframes)")
    pa, pb = a.per_scene(), b.per_scene()
    shared = [name for name in STATISTICS if name in pa and name in pb]
    per_scene = {name: [None if x is None or y is None else x - y for x, y in zip(pa[name], pb[name])]
                 for name in shared}
    why = refusal(a.n_scenes)
    if why:
        return {"differences": None, "per_scene": per_scene, "sample": a.description,
                "bootstrap": {"skipped": why, "scenes": a.n_scenes, "keyframes": a.n_keyframes}}
    fa, fb = a.scene_statistics(), b.scene_statistics()
    batch = _bootstrap_batch(a)
    diffs = {name: paired_difference(fa[name], fb[name], a.n_scenes, n_resamples, confidence, method,
                                     bootstrap_seed, batch).as_dict() for name in shared}
    return {"differences": diffs, "per_scene": per_scene, "sample": a.description,
            "bootstrap": _bootstrap_settings(a, n_resamples, confidence, method, bootstrap_seed)}


def structure_and_zeroshot(model, teacher, cache, dataset, eval_set: EvalSet = EvalSet(), per_class: int = 500,
                           seed: int = 0, device="cpu", on_features: Callable[[dict], None] | None = None,
                           replicates: int = 0, aggregation: str = DEFAULT_AGGREGATION) -> dict:
    """:func:`structure_metrics` of a student on the keyframes of ``dataset`` that ``eval_set``
    selects, zero-shot under the prompt ``aggregation``; ``on_features`` receives the gathered val
    dict (the trainer writes TensorBoard's projector)."""
    val = gather_val_features(model, teacher, cache, dataset, eval_set, device)
    if on_features is not None:
        on_features(val)
    if not getattr(teacher, "has_text", True):  # DINOv2: U, T and G against it; zero-shot needs text
        text = None
    else:
        text = teacher.class_embeddings().cpu() if aggregation == MEAN else text_classifier(teacher, aggregation)
    out = structure_metrics(val, text, per_class, seed, replicates=replicates)
    return {**out, "val_keyframes": out["sample"]["keyframes"], "val_scenes": out["sample"]["scenes"],
            "eval_set": eval_set.as_dict()}


def from_json(stored):
    """A result read back from JSON: the per-class dicts get their int keys back (JSON keys are strings)."""
    if isinstance(stored, dict):
        return {int(k) if isinstance(k, str) and k.isdigit() else k: from_json(v) for k, v in stored.items()}
    return stored


__all__ = ["PAIRED", "POINTS", "STATISTICS", "ProtocolSums", "evaluation_keyframes", "from_json",
           "gather_teacher_val_features", "gather_val_features", "n_keyframes", "paired_comparison", "protocol_sample",
           "protocol_sums", "sample_indices", "scene_replicates", "structure_and_zeroshot", "structure_metrics",
           "structure_result", "teacher_view"]
