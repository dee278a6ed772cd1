"""What each number relviz shows means, in one line, with the direction that is "more like the
teacher" (not "better"): shown next to every metric in the app (definitions: docs/definitions.md)."""

from __future__ import annotations

PROTOCOL = "docs/protocol.md"  # which points and sample; the formulas: docs/definitions.md

METRICS: dict[str, tuple[str, str]] = {  # key -> (label, one-line meaning)
    "uniformity": ("Uniformity U", "How evenly the features spread over the unit sphere: -log of the mean of "
                   "exp(-2 |z_i - z_j|^2) over pairs of points from different keyframes (pairs inside a keyframe are "
                   "more alike, so a pooled U drifts with the number of keyframes). Higher is more uniform (at most 4). A student is more like "
                   "its teacher when its U is closer to the teacher's, not when it is higher."),
    "tolerance": ("Tolerance T", "Mean cosine similarity of pairs of the same class, averaged over classes. Higher "
                  "means tighter classes. Closer to the teacher's T is more like the teacher."),
    "gap": ("Modality gap G", "Distance between the mean student feature and the mean teacher feature of the same "
            "points (0 for the teacher itself), on the same sample as U and T. Smaller is closer to the teacher."),
    "gap_all_pairs": ("G (all pairs)", "The modality gap over every labelled point a camera sees, instead of the "
                      "class-balanced sample: dominated by the large classes (road, buildings, vegetation)."),
    "zeroshot_miou": ("Zero-shot mIoU", "Each point takes the class whose text embedding is most similar; mean IoU "
                      "over one fixed class list, the classes with ground truth in the evaluated keyframes, the same "
                      "for every model (a prediction of an absent class is a false positive, not a class of the "
                      "mean). Over every labelled point: the teacher has no score here. Higher is better."),
    "zeroshot_miou_paired": ("Zero-shot mIoU (paired points)", "Zero-shot mIoU over the labelled points a camera "
                             "sees, the points where the teacher has features: the column where students and the "
                             "teacher are scored on the same points."),
    "zeroshot_miou_devkit": ("Zero-shot mIoU (devkit rule)", "nuscenes-devkit's mean: a class absent from the "
                             "ground truth but predicted counts 0, so models are averaged over different class sets "
                             "on a subset of a split. For comparison with published tables only."),
    "fewshot_miou": ("Few-shot mIoU", "A linear probe on the frozen features, trained on 1% of the mini_train "
                     "frames and scored on every mini_val frame. Higher is better."),
}


DEMO_TEACHER_NOTE = (
    "**The demo teacher is not CLIP.** It is a small open_clip model (4.7 M parameters) that relviz trained on the "
    "synthetic dataset's images with the 16 class names and OpenScene's 43 detail names as its only text: it reads "
    "those words and little else. Other text still gets an answer, the nearest of what it knows: \"wet road\" "
    "takes the road, \"ambulance\" may land on bushes. A real CLIP file (the teacher setting, e.g. ViT-B-16 with "
    "its weights file) reads open vocabulary; the numbers on these pages are the demo teacher's.")


def help_text(key: str) -> str:
    """The meaning of a metric and where its definition is, for a tooltip."""
    return f"{METRICS[key][1]} Definitions: {PROTOCOL}."


def sample_caption(points: int, per_class: int, keyframes: int, seed: int, scenes: int | None = None) -> str:
    """The sample behind a figure, said under it."""
    where = f" of {scenes} scene{'s' if scenes != 1 else ''}" if scenes is not None else ""
    return (f"Sample: {points:,} labelled points seen by a camera, up to {per_class:,} per class (seed {seed}), "
            f"from {keyframes} mini_val keyframe{'s' if keyframes != 1 else ''}{where}, spread over each scene.")


def interval_caption(metrics: dict) -> str:
    """How the intervals beside a structure result were made, or why there are none."""
    b = metrics.get("bootstrap") or {}
    if b.get("skipped"):
        per = metrics.get("per_scene") or {}
        shown = [f"{METRICS[k][0].split()[-1]} " + " / ".join("-" if v is None else f"{v:.3f}" for v in per[k])
                 for k in ("uniformity", "tolerance", "gap") if k in per]
        return f"No intervals: {b['skipped']}" + (f": {'; '.join(shown)} (scene by scene)." if shown else ".")
    return f"Intervals: 95% bootstrap over {b.get('scenes', '?')} scenes (keyframes nested in them)."
