"""Class relations: the structure the relational loss matches. Class-centroid cosine similarities of
the teacher and of a student and their difference, linear CKA between the two at the same points,
and U and T per class, all on the protocol's sample (:func:`relviz.eval.structure.protocol_sample`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from relviz.errors import InputError
from relviz.eval.structure import n_keyframes, protocol_sample
from relviz.metrics import tolerance, uniformity
from relviz.tensors import check_features, check_labels


def centroid_similarity(z: torch.Tensor, labels: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    """(classes [C] present, in order; cosine similarities [C, C] float64 of their centroids), the
    centroid of a class being the mean of its L2-normalised features z [N, D]."""
    z = F.normalize(check_features(z, "features", 1).double(), dim=1)
    labels = check_labels(labels, z.shape[0]).to(z.device)
    classes, inverse = torch.unique(labels, return_inverse=True)
    sums = torch.zeros(len(classes), z.shape[1], dtype=torch.float64, device=z.device).index_add_(0, inverse, z)
    unit = F.normalize(sums, dim=1)  # the mean's direction: its length (the class's spread) cancels in a cosine
    return [int(c) for c in classes.tolist()], unit @ unit.T


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of x [N, D1] and y [N, D2] over the same N points (Kornblith et al. 2019, eq. for
    the linear kernel): ``||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)`` with column-centred
    X_c, Y_c, in float64. 1 for representations equal up to rotation and isotropic scaling."""
    x = check_features(x, "x").double()
    y = check_features(y, "y").double().to(x.device)
    if x.shape[0] != y.shape[0]:
        raise InputError(f"linear_cka: x and y must hold the same points, got {x.shape[0]} and {y.shape[0]} rows")
    x, y = x - x.mean(0), y - y.mean(0)
    denominator = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    if denominator == 0:
        raise InputError("linear_cka: a representation is constant over the points (no variance)")
    return float(torch.linalg.matrix_norm(y.T @ x) ** 2 / denominator)


def per_class_structure(z: torch.Tensor, labels: torch.Tensor) -> dict:
    """U and T of every class's features (classes with at least 2 points): {"uniformity": {c: U_c},
    "tolerance": {c: T_c}}. U of a class is O(n_c^2), streamed."""
    tol = tolerance(z, labels)
    u = {c: uniformity(z[labels == c]) for c in tol.per_class if tol.counts[c] >= 2}
    return {"uniformity": u, "tolerance": {c: v for c, v in tol.per_class.items() if not math.isnan(v)}}


def class_relations(val: dict, per_class: int = 5000, seed: int = 0) -> dict:
    """On the protocol sample of ``val`` (a student's :func:`relviz.eval.structure.gather_val_features`):
    ``classes``, the centroid similarity matrices ``teacher_similarity`` and ``student_similarity``
    [C][C], ``difference`` (student - teacher) and its mean absolute off-diagonal entry
    ``mean_abs_difference``, ``cka`` (linear CKA of student and teacher features at the same points),
    ``per_class`` U and T of ``student`` and ``teacher``, and the ``sample`` (per_class, seed,
    keyframes, size)."""
    idx = protocol_sample(val, per_class, seed)
    if len(idx) < 2:
        raise InputError(f"the protocol sample holds {len(idx)} labelled paired point(s): class relations need 2")
    z, q, y = val["pair_student"][idx], val["pair_teacher"][idx], val["pair_labels"][idx]
    classes, student = centroid_similarity(z, y)
    _, teacher = centroid_similarity(q, y)
    diff = student - teacher
    off = ~torch.eye(len(classes), dtype=torch.bool, device=diff.device)
    return {"classes": classes, "teacher_similarity": teacher.tolist(), "student_similarity": student.tolist(),
            "difference": diff.tolist(),
            "mean_abs_difference": float(diff[off].abs().mean()) if off.any() else 0.0,
            "cka": linear_cka(F.normalize(z.float(), dim=1), F.normalize(q.float(), dim=1)),
            "per_class": {"student": per_class_structure(z, y), "teacher": per_class_structure(q, y)},
            "sample": {"per_class": per_class, "seed": seed, "keyframes": n_keyframes(val), "size": int(len(idx))}}


__all__ = ["centroid_similarity", "class_relations", "linear_cka", "per_class_structure"]
