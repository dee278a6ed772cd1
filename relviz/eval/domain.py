"""Is a second world out of distribution for a student? Two measures (issue #29, docs/kitti.md):

* a **domain classifier**: logistic regression (scikit-learn) on per-frame pooled student features
  (:func:`pooled_features`: the mean and the standard deviation of the point features of a frame),
  one world against the other, cross-validated with whole scenes (sequences) held out together
  (``StratifiedGroupKFold``), scored by balanced accuracy: about 0.5 when the student's features do
  not tell the worlds apart, near 1 when they do. Its chance level is checked by permuting the
  worlds' labels between scenes (never within one: a scene belongs to one world).
* the **probe transfer**: the linear probe of :mod:`relviz.eval.fewshot` trained and scored in each
  world with every scene held out in turn (leave-one-scene-out: a probe trained on the frames of all
  the other scenes scores the frames of the scene left out), so every frame is scored by a probe that
  never saw its scene and the mIoU has an interval over scenes; the drop is in-distribution minus
  out-of-distribution, with an interval from independent scene resamples of the two worlds.

The worlds here differ in sensor and class list as well as in streets, and the students' input is
the raw intensity (0..255 in the synthetic nuScenes world, reflectance 0..1 in SemanticKITTI's
layout): :class:`RescaledKitti` multiplies the reflectance by 255, so the scale of the input can be
told apart from the rest of the shift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from relviz.data.common_classes import COMMON_CLASSES, KITTI_TO_COMMON, NUSCENES_TO_COMMON, NUM_COMMON_CLASSES, to_common
from relviz.data.dataset import NuScenesLidarSeg, collate
from relviz.data.kitti import SemanticKitti
from relviz.errors import InputError
from relviz.eval.features import dataset_for, point_features_of
from relviz.eval.fewshot import class_count, class_names, eval_mode, linear_probe
from relviz.eval.keyframe_sums import ConfusionSums
from relviz.segmentation import confusion_matrix
from relviz.stats import (MIN_SCENES, cluster_bootstrap, refusal, resample_multiplicities, scene_statistic,
                          two_sided_bootstrap_p)

REFLECTANCE_TO_INTENSITY = 255.0  # SemanticKITTI's reflectance 0..1 onto nuScenes' intensity range 0..255
Progress = Callable[[str, int, int], None]  # (phase, done, total)


class RescaledKitti(SemanticKitti):
    """:class:`~relviz.data.kitti.SemanticKitti` with the reflectance (``points[:, 3]`` and
    ``voxel_features``) multiplied by ``scale`` (default 255: nuScenes' intensity range)."""

    def __init__(self, *args, scale: float = REFLECTANCE_TO_INTENSITY, **kwargs):
        super().__init__(*args, **kwargs)
        if not (math.isfinite(scale) and scale > 0):
            raise InputError(f"reflectance scale must be a finite number > 0, got {scale}")
        self.scale = float(scale)

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        item["points"][:, 3] *= self.scale
        item["voxel_features"] *= self.scale
        return item


class CommonClasses:
    """Mixin: a dataset whose labels are the common class list of :mod:`relviz.data.common_classes`
    (``common_lookup`` maps its own classes), so that two worlds are scored over the same classes."""

    classes = COMMON_CLASSES
    num_classes = NUM_COMMON_CLASSES
    common_lookup: np.ndarray

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        if item.get("labels") is not None:
            item["labels"] = to_common(item["labels"], self.common_lookup)
        return item


class CommonNuScenes(CommonClasses, NuScenesLidarSeg):
    """:class:`~relviz.data.dataset.NuScenesLidarSeg` labelled with the common class list."""

    common_lookup = NUSCENES_TO_COMMON


class CommonKitti(CommonClasses, SemanticKitti):
    """:class:`~relviz.data.kitti.SemanticKitti` labelled with the common class list."""

    common_lookup = KITTI_TO_COMMON


class CommonRescaledKitti(CommonClasses, RescaledKitti):
    """:class:`RescaledKitti` labelled with the common class list."""

    common_lookup = KITTI_TO_COMMON


# --- one pass of a student over a world ----------------------------------------------------------------

@dataclass
class WorldPass:
    """What one pass of a student over a world's K frames keeps: each frame's ``scenes`` [K] and
    ``tokens`` [K], ``pooled`` float64 [K, 2D] (:func:`pooled_features`), and per probe seed and
    frame the class-balanced candidates ``samples[seed][k]`` = (features float16 [m, D], labels
    int64 [m], keys float64 [m]): of each class, the points with the ``max_per_class`` smallest
    seeded uniform keys, so the sample of any set of frames is theirs re-cut (:func:`probe_sample_of`)."""

    scenes: list[str]
    tokens: list[str]
    pooled: np.ndarray
    samples: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = field(default_factory=dict)
    num_classes: int = 16
    class_names: tuple[str, ...] = ()


def frames_of(datasets: Sequence) -> list[tuple[object, int]]:
    """(dataset, index) of every frame of ``datasets`` (e.g. a world's train and val splits), in order."""
    return [(d, i) for d in datasets for i in range(len(d))]


def pooled_features(point_features: torch.Tensor) -> np.ndarray:
    """A frame's point features [N, D] as one vector [2D]: their mean and standard deviation per channel."""
    x = point_features.double()
    return torch.cat([x.mean(0), x.std(0, correction=0)]).numpy()


def world_pass(model, datasets: Sequence, seeds: Sequence[int] = (0,), max_per_class: int = 1000,
               device="cpu", progress: Progress | None = None) -> WorldPass:
    """One pass of ``model`` over every frame of ``datasets`` (one class list): pooled features and
    the probe's candidate points per seed (:class:`WorldPass`)."""
    frames = frames_of(datasets)
    n_classes = {class_count(d) for d in datasets}
    if len(n_classes) != 1:
        raise InputError(f"the datasets of one world must share a class list, got class counts {sorted(n_classes)}")
    world = WorldPass([], [], np.zeros(0), {s: [] for s in seeds}, n_classes.pop(), class_names(datasets[0]))
    pooled = []
    with torch.inference_mode(), eval_mode(model):
        for n, (dataset, i) in enumerate(frames):
            batch = collate([dataset_for(model, dataset)[i]])
            if "labels" not in batch:
                raise InputError(f"frame {dataset.sample_tokens[i]} has no labels")
            x, y = point_features_of(model, batch, device).float().cpu(), batch["labels"].long()
            world.scenes.append(dataset.scene_of(i))
            world.tokens.append(dataset.sample_tokens[i])
            pooled.append(pooled_features(x))
            for seed in seeds:
                gen = torch.Generator().manual_seed(seed * 1_000_003 + n)  # one key stream per (seed, frame)
                keys = torch.rand(len(y), generator=gen, dtype=torch.float64)
                keep = []
                for c in y.unique().tolist():
                    if 1 <= c <= world.num_classes:
                        at = (y == c).nonzero().flatten()
                        keep.append(at[keys[at].argsort()[:max_per_class]])
                at = torch.cat(keep) if keep else torch.zeros(0, dtype=torch.long)
                world.samples[seed].append((x[at].half().numpy(), y[at].numpy(), keys[at].numpy()))
            if progress:
                progress("features", n + 1, len(frames))
    world.pooled = np.stack(pooled)
    return world


def probe_sample_of(world: WorldPass, frames: Sequence[int], seed: int, max_per_class: int = 1000
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The probe's training sample [M, D], [M] from ``frames``: of each class, the points with the
    ``max_per_class`` smallest keys among those frames (class-balanced, as
    :func:`relviz.eval.fewshot.probe_sample` draws it)."""
    parts = [world.samples[seed][k] for k in frames]
    feats = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    keys = np.concatenate([p[2] for p in parts])
    keep = np.concatenate([np.flatnonzero(labels == c)[np.argsort(keys[labels == c], kind="stable")[:max_per_class]]
                           for c in np.unique(labels)]) if len(labels) else np.zeros(0, dtype=np.int64)
    if not len(keep):
        raise InputError("the probe's training frames hold no labelled point")
    return torch.from_numpy(feats[keep].astype(np.float32)), torch.from_numpy(labels[keep])


def leave_one_scene_out(model, datasets: Sequence, world: WorldPass, seeds: Sequence[int] = (0,),
                        max_per_class: int = 1000, epochs: int = 300, lr: float = 0.05, device="cpu",
                        progress: Progress | None = None) -> np.ndarray:
    """Confusion matrices [len(seeds), K, C + 1, C + 1]: frame k scored by the probe (seed s) trained
    on the frames of every other scene. The features are computed again (a second pass) rather than
    kept: a frame's are up to 130,000 x D numbers."""
    scenes = sorted(set(world.scenes))
    if len(scenes) < 2:
        raise InputError(f"leave-one-scene-out needs at least 2 scenes, got {len(scenes)}")
    heads = {}
    for n, (s, scene) in enumerate([(s, scene) for s in seeds for scene in scenes]):
        train = [k for k, other in enumerate(world.scenes) if other != scene]
        x, y = probe_sample_of(world, train, s, max_per_class)
        heads[s, scene] = linear_probe(x, y, epochs, lr, s, world.num_classes).to(device)
        if progress:
            progress("probes", n + 1, len(seeds) * len(scenes))
    width = world.num_classes + 1
    frames = frames_of(datasets)
    per_frame = np.zeros((len(seeds), len(frames), width, width), dtype=np.int64)
    with torch.inference_mode(), eval_mode(model):
        for k, (dataset, i) in enumerate(frames):
            batch = collate([dataset_for(model, dataset)[i]])
            x = point_features_of(model, batch, device).float()
            for j, s in enumerate(seeds):
                pred = heads[s, world.scenes[k]](x).argmax(1).cpu() + 1
                per_frame[j, k] = confusion_matrix(pred, batch["labels"], num_classes=width)
            if progress:
                progress("score", k + 1, len(frames))
    return per_frame


# --- statistics --------------------------------------------------------------------------------------

def scene_ids(scenes: Sequence[str]) -> np.ndarray:
    """Each frame's scene [K] as an index into the sorted scene names."""
    names = sorted(set(scenes))
    return np.array([names.index(s) for s in scenes], dtype=np.int64)


def seed_mean_miou(per_frame: np.ndarray, scenes: Sequence[str]) -> Callable[[np.ndarray], np.ndarray]:
    """The statistic of scene multiplicities [..., S]: the mIoU (over the classes with ground truth in
    the world) of per-frame confusions [R, K, C + 1, C + 1], averaged over the R probe seeds."""
    sums = [ConfusionSums(p) for p in per_frame]
    classes = sums[0].classes
    return scene_statistic(lambda m: np.mean([s.miou(m, classes) for s in sums], axis=0), scene_ids(scenes))


def transfer_scores(per_frame: np.ndarray, scenes: Sequence[str], seeds: Sequence[int], names: Sequence[str],
                    n_resamples: int = 1000) -> dict:
    """JSON-ready scores of leave-one-scene-out confusions [R, K, C + 1, C + 1]: ``miou`` (mean over
    the seeds), its ``interval`` over scenes (95% percentile cluster bootstrap; None with
    ``interval_refused`` under :data:`relviz.stats.MIN_SCENES` scenes), ``miou_per_seed``,
    ``miou_per_scene`` (seed mean, each scene alone) and the ``classes`` scored."""
    n_scenes = len(set(scenes))
    statistic = seed_mean_miou(per_frame, scenes)
    per_seed = [float(ConfusionSums(p).miou(np.ones(len(scenes)))) for p in per_frame]
    why = refusal(n_scenes)
    interval = None if why else cluster_bootstrap(statistic, n_scenes, n_resamples, seed=0).as_dict()
    classes = ConfusionSums(per_frame[0]).classes
    return {"miou": float(statistic(np.ones(n_scenes))), "interval": interval, "interval_refused": why,
            "miou_per_seed": dict(zip(map(str, seeds), per_seed)),
            "miou_per_scene": dict(zip(sorted(set(scenes)), map(float, statistic(np.eye(n_scenes))))),
            "scenes": n_scenes, "frames": len(scenes), "classes": [names[c] for c in classes]}


def drop_interval(per_frame_in: np.ndarray, scenes_in: Sequence[str], per_frame_out: np.ndarray,
                  scenes_out: Sequence[str], n_resamples: int = 1000, confidence: float = 0.95) -> dict:
    """In-distribution minus out-of-distribution mIoU (seed means), with a percentile interval from
    independent scene resamples of the two worlds (different scenes: nothing is paired), and a verdict:
    "holds" (the interval is above 0), "reversed" (below), "cannot be told" (it holds 0) or "too few
    scenes" (either world under :data:`relviz.stats.MIN_SCENES` scenes: no interval)."""
    stat_in, stat_out = seed_mean_miou(per_frame_in, scenes_in), seed_mean_miou(per_frame_out, scenes_out)
    n_in, n_out = len(set(scenes_in)), len(set(scenes_out))
    value = float(stat_in(np.ones(n_in)) - stat_out(np.ones(n_out)))
    why = refusal(min(n_in, n_out))
    if why:
        return {"value": value, "low": None, "high": None, "verdict": "too few scenes", "refused": why}
    reps = stat_in(resample_multiplicities(n_in, n_resamples, seed=0)) - \
        stat_out(resample_multiplicities(n_out, n_resamples, seed=1))
    reps = reps[np.isfinite(reps)]
    low, high = np.quantile(reps, [(1 - confidence) / 2, (1 + confidence) / 2])
    verdict = "holds" if low > 0 else "reversed" if high < 0 else "cannot be told"
    return {"value": value, "low": float(low), "high": float(high), "confidence": confidence,
            "method": "percentile bootstrap, scenes of each world resampled independently",
            "n_resamples": len(reps), "verdict": verdict, "refused": None}


def paired_student_difference(a: dict, b: dict, n_resamples: int = 1000, confidence: float = 0.95) -> dict:
    """Student A minus student B, paired on the same frames: ``a`` and ``b`` each hold ``"out"``, the
    leave-one-scene-out confusions [R, K, C + 1, C + 1] on the second world, and optionally ``"in"``,
    those on the first world, with ``"scenes_out"`` / ``"scenes_in"`` [K] (the same frames for both
    students). Without ``"in"``: the difference of the second world's mIoU; with it: the difference of
    the drops, (A_in - A_out) - (B_in - B_out). Each world's scenes are resampled once per replicate
    and the same resample is applied to both students (the pairing); the worlds independently.
    Returns the value, a percentile interval, the two-sided bootstrap p (:func:`relviz.stats.two_sided_bootstrap_p`;
    the family's correction is the caller's) and "too few scenes" under :data:`relviz.stats.MIN_SCENES`."""
    worlds = ["out"] + (["in"] if "in" in a else [])
    if ("in" in a) != ("in" in b):
        raise InputError("both students need the first world's confusions, or neither")
    value, reps, counts = 0.0, np.zeros(n_resamples), []
    for seed, world in enumerate(worlds):
        scenes = a[f"scenes_{world}"]
        if list(scenes) != list(b[f"scenes_{world}"]) or a[world].shape != b[world].shape:
            raise InputError(f"the two students must be scored on the same frames of the {world} world")
        sign = -1.0 if world == "out" and "in" in a else 1.0  # a drop is in - out
        stat_a, stat_b = seed_mean_miou(a[world], scenes), seed_mean_miou(b[world], scenes)
        n = len(set(scenes))
        counts.append(n)
        value += sign * float(stat_a(np.ones(n)) - stat_b(np.ones(n)))
        draws = resample_multiplicities(n, n_resamples, seed=seed)
        reps += sign * (stat_a(draws) - stat_b(draws))
    measure = "drop" if "in" in a else "mIoU on the second world"
    why = refusal(min(counts))
    if why:
        return {"value": value, "measure": measure, "low": None, "high": None, "p": None,
                "verdict": "too few scenes", "refused": why}
    reps = reps[np.isfinite(reps)]
    low, high = np.quantile(reps, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {"value": value, "measure": measure, "low": float(low), "high": float(high), "confidence": confidence,
            "p": two_sided_bootstrap_p(reps), "n_resamples": len(reps),
            "method": "percentile bootstrap over scenes, one resample of each world shared by both students",
            "refused": None}


# --- the domain classifier ---------------------------------------------------------------------------

def group_folds(domains: np.ndarray, groups: np.ndarray, n_splits: int, seed: int
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index arrays of ``StratifiedGroupKFold``: every group wholly on one side."""
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(domains)), domains, groups))


def _out_of_fold(features: np.ndarray, domains: np.ndarray, folds) -> tuple[np.ndarray, list[float]]:
    predicted = np.empty_like(domains)
    per_fold = []
    for train, test in folds:
        classifier = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000,
                                                                        class_weight="balanced"))
        classifier.fit(features[train], domains[train])
        predicted[test] = classifier.predict(features[test])
        per_fold.append(float(balanced_accuracy_score(domains[test], predicted[test])))
    return predicted, per_fold


def domain_classifier(features: np.ndarray, domains: Sequence[int], groups: Sequence, n_splits: int = 5,
                      seed: int = 0, n_permutations: int = 200) -> dict:
    """Can a linear classifier tell two worlds apart from ``features`` [N, F] (``domains`` [N]: 0 or
    1; ``groups`` [N]: each sample's scene, wholly in one world)? Standardised features, L2 logistic
    regression (C = 1, balanced class weights), ``StratifiedGroupKFold`` with ``n_splits`` folds.

    Returns ``balanced_accuracy`` (of the out-of-fold predictions of all N samples), the per-fold
    values ``fold_accuracies`` with their ``fold_mean`` and ``fold_std``, ``fold_sizes`` (test
    samples), the counts, and ``p_permutation``: the share of ``n_permutations`` relabellings, the
    worlds' labels permuted between groups (a group keeps one label), whose out-of-fold balanced
    accuracy reaches the observed one ((1 + hits) / (1 + permutations)). ``verdict``: "holds" (the
    classifier tells them apart: p <= 0.05), "cannot be told", or "too few scenes" (a world with
    fewer than :data:`relviz.stats.MIN_SCENES` groups: the figures are given, no verdict)."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(domains, dtype=np.int64)
    g = np.asarray(groups)
    if x.ndim != 2 or len(x) != len(y) or len(y) != len(g):
        raise InputError(f"features [N, F], domains [N] and groups [N] must agree, got {x.shape}, {y.shape}, {g.shape}")
    if set(np.unique(y).tolist()) != {0, 1}:
        raise InputError(f"domains must hold both 0 and 1, got {sorted(set(y.tolist()))}")
    group_names, group_index = np.unique(g, return_inverse=True)
    group_domain = np.full(len(group_names), -1)
    for gi, d in zip(group_index, y):
        if group_domain[gi] not in (-1, d):
            raise InputError(f"group {group_names[gi]!r} holds samples of both domains; a scene belongs to one world")
        group_domain[gi] = d
    per_domain = [int((group_domain == d).sum()) for d in (0, 1)]
    if min(per_domain) < n_splits:
        raise InputError(f"{n_splits} folds need at least {n_splits} groups in each domain, got {per_domain}")
    folds = group_folds(y, group_index, n_splits, seed)
    predicted, per_fold = _out_of_fold(x, y, folds)
    observed = float(balanced_accuracy_score(y, predicted))
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n_permutations):
        shuffled = rng.permutation(group_domain)[group_index]  # whole groups change world, as the data's unit
        permuted, _ = _out_of_fold(x, shuffled, group_folds(shuffled, group_index, n_splits, seed))
        hits += balanced_accuracy_score(shuffled, permuted) >= observed
    p = (1 + hits) / (1 + n_permutations) if n_permutations else None
    why = refusal(min(per_domain))
    verdict = "too few scenes" if why else ("holds" if p is not None and p <= 0.05 else "cannot be told")
    return {"balanced_accuracy": observed, "fold_accuracies": per_fold, "fold_mean": float(np.mean(per_fold)),
            "fold_std": float(np.std(per_fold, ddof=1)), "fold_sizes": [len(t) for _, t in folds],
            "samples": len(y), "groups_per_domain": per_domain, "n_splits": n_splits,
            "n_permutations": n_permutations, "p_permutation": p, "verdict": verdict, "refused": why,
            "classifier": "StandardScaler + LogisticRegression(C=1, class_weight='balanced')",
            "cv": f"StratifiedGroupKFold({n_splits}, shuffle, seed {seed})"}


def random_halves(scenes: Sequence[str], seed: int = 0) -> np.ndarray:
    """A control with no shift: the scenes of one world split at random into two halves; each
    frame's half [K] (0 or 1)."""
    names = sorted(set(scenes))
    half = np.zeros(len(names), dtype=np.int64)
    half[np.random.default_rng(seed).permutation(len(names))[:len(names) // 2]] = 1
    return half[scene_ids(scenes)]


__all__ = ["MIN_SCENES", "REFLECTANCE_TO_INTENSITY", "RescaledKitti", "WorldPass", "domain_classifier", "drop_interval",
           "frames_of", "group_folds", "leave_one_scene_out", "pooled_features", "probe_sample_of", "random_halves",
           "scene_ids", "seed_mean_miou", "transfer_scores", "world_pass"]
