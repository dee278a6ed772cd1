"""The CLIP teacher: dense MaskCLIP features, text embeddings, the feature cache, the demo teacher."""

from __future__ import annotations

from relviz.teacher.cache import FeatureCache
from relviz.teacher.clip import ClipTeacher, TeacherWeightsError, dense_maskclip, sample_points
from relviz.teacher.prompts import DETAIL_PROMPTS, TEMPLATES, class_prompts


def load_teacher(name: str = "demo", pretrained: str | None = None, device: str = "cpu") -> ClipTeacher:
    """``demo`` -> the shipped demo teacher; otherwise an open_clip model with ``pretrained`` weights
    (a tag or a local file; None means random weights, which only tests should ask for)."""
    if name == "demo":
        from relviz.teacher.demo import load_demo_teacher

        from relviz.teacher.demo import DEMO_TEACHER_PATH

        return load_demo_teacher(pretrained or DEMO_TEACHER_PATH, device=device)
    return ClipTeacher(name, pretrained=pretrained, device=device)


__all__ = ["ClipTeacher", "FeatureCache", "TeacherWeightsError", "dense_maskclip", "sample_points", "DETAIL_PROMPTS",
           "TEMPLATES", "class_prompts", "load_teacher"]
