"""Teachers side by side (relviz.eval.teachers, `relviz eval teachers`)."""

import math

import pytest
import torch
import torch.nn.functional as F

from fp_bounds import gamma
from relviz.errors import InputError
from relviz.eval.teachers import compare_teacher_features, compare_teachers


def _points(seed=0, n=300, d=16):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(1, 5, (n,), generator=gen)
    centres = torch.randn(5, d, generator=gen)
    a = F.normalize(centres[labels] + 0.7 * torch.randn(n, d, generator=gen), dim=1)
    return a, labels, gen


def test_a_rotated_teacher_has_the_same_structure_and_cka_one():
    a, labels, gen = _points()
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=gen, dtype=torch.float64))
    b = (a.double() @ rotation).float()
    c = F.normalize(torch.randn(300, 8, generator=gen), dim=1)  # unrelated, another dimension
    text = F.normalize(torch.randn(16, 16, generator=gen), dim=1)
    out = compare_teacher_features({"a": a, "b": b, "c": c}, labels, {"a": text, "b": None, "c": None},
                                   per_class=1000, seed=0)
    ta, tb = out["teachers"]["a"], out["teachers"]["b"]
    # independent references: U and T by their definitions over all pairs, in float64
    z = a.double()
    sq = torch.cdist(z, z) ** 2
    off = ~torch.eye(len(z), dtype=torch.bool)
    u_ref = -math.log(torch.exp(-2 * sq[off]).mean().item())
    t_ref = sum((z[labels == k] @ z[labels == k].T)[~torch.eye(int((labels == k).sum()), dtype=torch.bool)].mean().item()
                for k in labels.unique()) / len(labels.unique())
    tol = 2 * gamma(300 * 300 * 16, torch.float32) * 4  # float32 sums of |terms| <= 4 (squared distances)
    assert ta["uniformity"] == pytest.approx(u_ref, abs=tol) and ta["tolerance"] == pytest.approx(t_ref, abs=tol)
    # a rotation changes no distance: the same U, T, centroid relations; CKA 1 (float rounding aside)
    assert tb["uniformity"] == pytest.approx(ta["uniformity"], abs=tol)
    assert tb["tolerance"] == pytest.approx(ta["tolerance"], abs=tol)
    pair = {(p["a"], p["b"]): p for p in out["pairs"]}
    assert pair[("a", "b")]["cka"] == pytest.approx(1.0, abs=1e-5)
    assert pair[("a", "b")]["centroid_mean_abs_difference"] < 1e-5
    assert pair[("a", "c")]["cka"] < 0.5 and pair[("a", "c")]["gap"] is None  # 16 vs 8 dims
    assert ta["gap_text"] == pytest.approx((z.mean(0) - text.double().mean(0)).norm().item(), abs=tol)
    assert tb["gap_text"] is None and out["sample"]["size"] == 300
    assert ta["classes"] == [1, 2, 3, 4] and len(ta["centroid_similarity"]) == 4


def test_features_at_other_points_are_refused():
    a, labels, _ = _points()
    with pytest.raises(InputError, match="same 300 points"):
        compare_teacher_features({"a": a, "b": a[:-1]}, labels)


def test_compare_teachers_on_the_same_pixels(synthetic_root, tmp_path):
    from relviz.data import NuScenesLidarSeg
    from relviz.eval.selection import EvalSet
    from relviz.teacher import TeacherSpec, load_teacher
    from relviz.teacher.dinov2 import Dinov2Teacher
    from relviz.teacher.registry import entry_for

    dataset = NuScenesLidarSeg(synthetic_root, version="v1.0-mini", split="mini_val", load_images=False)
    torch.manual_seed(0)
    dino = Dinov2Teacher(entry_for("dinov2_vits14"), random_init=True, input_size=(42, 70))
    teachers = {"demo": load_teacher(TeacherSpec()), "dino": dino}
    out = compare_teachers(teachers, dataset, tmp_path, EvalSet(scenes=1, per_scene=1), per_class=50)
    assert out["teachers"]["demo"]["dim"] == 128 and out["teachers"]["dino"]["dim"] == 384
    assert out["teachers"]["demo"]["gap_text"] is not None and out["teachers"]["dino"]["gap_text"] is None
    assert out["keyframes"] == 1 and 0 <= out["pairs"][0]["cka"] <= 1 + 1e-9
    # each teacher's features went to its own cache folder
    assert {p.name for p in (tmp_path / "teacher").iterdir()} == {t.identity for t in teachers.values()}


def test_cli_lists_the_registry_and_refuses_unknown_names():
    from typer.testing import CliRunner

    import relviz.cli.teachers  # noqa: F401 (registers `relviz eval teachers`)
    from relviz.cli.base import app

    result = CliRunner().invoke(app, ["eval", "teachers", "--list"])
    assert result.exit_code == 0 and "dinov2_vitl14\tdinov2\tdim 1024\t224x448/14" in result.output
    assert "no text" in result.output
    result = CliRunner().invoke(app, ["eval", "teachers", "--teacher", "dinov3_vitl16"])
    assert result.exit_code != 0 and "unknown teacher 'dinov3_vitl16'" in result.output
