"""What each number relviz shows means, in one line, with the direction that is "more like the
teacher" (not "better"): shown next to every metric in the app (definitions: docs/definitions.md)."""

from __future__ import annotations

PROTOCOL = "docs/protocol.md"  # which points and sample; the formulas: docs/definitions.md

METRICS: dict[str, tuple[str, str]] = {  # key -> (label, one-line meaning)
    "uniformity": ("Uniformity U", "How evenly the features spread over the unit sphere: -log of the mean of "
                   "exp(-2 |z_i - z_j|^2) over pairs. Higher is more uniform (at most 4). A student is more like "
                   "its teacher when its U is closer to the teacher's, not when it is higher."),
    "tolerance": ("Tolerance T", "Mean cosine similarity of pairs of the same class, averaged over classes. Higher "
                  "means tighter classes. Closer to the teacher's T is more like the teacher."),
    "gap": ("Modality gap G", "Distance between the mean student feature and the mean teacher feature of the same "
            "points (0 for the teacher itself), on the same sample as U and T. Smaller is closer to the teacher."),
    "gap_all_pairs": ("G (all pairs)", "The modality gap over every labelled point a camera sees, instead of the "
                      "class-balanced sample: dominated by the large classes (road, buildings, vegetation)."),
    "zeroshot_miou": ("Zero-shot mIoU", "Each point takes the class whose text embedding is most similar; mean IoU "
                      "over the classes present (nuscenes-devkit semantics). Higher is better segmentation."),
    "fewshot_miou": ("Few-shot mIoU", "A linear probe on the frozen features, trained on 1% of the mini_train "
                     "frames and scored on every mini_val frame. Higher is better."),
}


def help_text(key: str) -> str:
    """The meaning of a metric and where its definition is, for a tooltip."""
    return f"{METRICS[key][1]} Definitions: {PROTOCOL}."


def sample_caption(points: int, per_class: int, keyframes: int, seed: int) -> str:
    """The sample behind a figure, said under it."""
    return (f"Sample: {points:,} labelled points seen by a camera, up to {per_class:,} per class (seed {seed}), "
            f"from the first "
            f"{keyframes} mini_val keyframe{'s' if keyframes != 1 else ''}.")
