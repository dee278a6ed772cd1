"""Teachers side by side (relviz.eval.teachers, `relviz eval teachers`)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fp_bounds import gamma
from relviz.errors import InputError
from relviz.eval.teachers import (compare_teacher_features, compare_teachers, save_comparison,
                                  stored_comparisons)


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
    # the protocol's numbers are on the same sample: its pooled U and its T are the features' U and T.
    # Both normalise the same float32 rows. U: each exp(-2 d2) has d2 from float32 dot products of D
    # unit-vector terms (|error| <= 4 gamma(D + 2) -> relative 8 gamma(D + 2) after exp), summed over up
    # to S^2 terms in float32, twice. T: float64 class sums of S D terms whose size over n(n - 1) is <= 3.
    size = out["sample"]["size"]
    for name, t in out["teachers"].items():
        tol_u = 2 * (8 * gamma(t["dim"] + 2, torch.float32) + gamma(size * size, torch.float32))
        tol_t = 2 * 3 * gamma(size * t["dim"] + size)
        assert t["protocol"]["uniformity_pooled"] == pytest.approx(t["uniformity"], abs=tol_u)
        assert t["protocol"]["tolerance"] == pytest.approx(t["tolerance"], abs=tol_t)
        assert t["protocol"]["intervals"] is None and "1 scene" in t["protocol"]["bootstrap"]["skipped"]
        assert len(t["protocol"]["per_scene"]["uniformity"]) == 1 and t["protocol"]["sample"]["size"] == size
    assert out["teachers"]["demo"]["protocol"]["gap_text"] is not None and "gap_text" not in out["teachers"]["dino"]["protocol"]
    # the random DINOv2 is said to be random; the demo teacher's weights are its checkpoint's
    assert out["teachers"]["dino"]["random_weights"] and out["teachers"]["dino"]["weights"] is None
    assert not out["teachers"]["demo"]["random_weights"] and out["teachers"]["demo"]["weights"] == "demo"


def _hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA as normalised HSIC with linear kernels and the explicit centring matrix H = I - 11^T / n."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T
    return np.trace(k @ h @ l_ @ h) / math.sqrt(np.trace(k @ h @ k @ h) * np.trace(l_ @ h @ l_ @ h))


def test_pair_cka_is_normalised_hsic_of_the_unit_features():
    gen = torch.Generator().manual_seed(3)
    labels = torch.randint(1, 4, (120,), generator=gen)
    a = torch.randn(120, 12, generator=gen)
    b = a @ torch.randn(12, 6, generator=gen) + 0.8 * torch.randn(120, 6, generator=gen)  # related, other dim
    out = compare_teacher_features({"a": a, "b": b}, labels, per_class=1000)
    # the reference: the same float32 normalisation (the same op on the same rows), then H in float64;
    # the two float64 evaluations differ by the summation bound of n^2 d products of unit-row entries
    x, y = (F.normalize(f.float(), dim=1).double().numpy() for f in (a, b))
    bound = 4 * gamma(120 * 120 * 12)
    assert out["pairs"][0]["cka"] == pytest.approx(_hsic_cka(x, y), abs=bound)
    assert 0.2 < out["pairs"][0]["cka"] < 0.99  # neither unrelated nor the same: the test can tell them apart


def _stored(seed: int, name: str = "a") -> dict:
    a, labels, gen = _points(seed)
    out = compare_teacher_features({name: a, "b": F.normalize(torch.randn(300, 8, generator=gen), dim=1)}, labels,
                                   per_class=50, seed=seed)
    return {**out, "keyframes": 2, "scenes": 1, "eval_set": {"scenes": 1, "per_scene": 2, "seed": 0}}


def test_a_saved_comparison_is_read_back_newest_first_and_per_dataset(tmp_path):
    import os

    root, other = tmp_path / "data", tmp_path / "other"
    root.mkdir(), other.mkdir()
    first = save_comparison(_stored(0), tmp_path / "cache", root, "v1.0-mini", "mini_val")
    second = save_comparison(_stored(1, "c"), tmp_path / "cache", root, "v1.0-mini", "mini_val")
    assert first != second  # another seed: another file, the first kept
    os.utime(first, ns=(second.stat().st_mtime_ns + 10**9,) * 2)  # the first written last
    (second.parent / "damaged.json").write_text("{not json")
    stored = stored_comparisons(tmp_path / "cache", root, "v1.0-mini", "mini_val")
    assert [list(r["teachers"]) for r in stored] == [["a", "b"], ["c", "b"]]
    assert stored[0]["pairs"] == _stored(0)["pairs"] and stored[0]["dataset"]["name"] == "data"
    assert stored[0]["teachers"]["a"]["centroid_similarity"] == _stored(0)["teachers"]["a"]["centroid_similarity"]
    assert stored_comparisons(tmp_path / "cache", other, "v1.0-mini", "mini_val") == []
    assert stored_comparisons(tmp_path / "cache", root, "v1.0-mini", "val") == []
    with pytest.raises(InputError, match="without pairs"):
        save_comparison({"teachers": {}, "sample": {}, "eval_set": {}}, tmp_path / "cache", root, "v1.0-mini",
                        "mini_val")


def test_cli_stores_the_comparison_where_the_page_reads_it(synthetic_root, workspace_home):
    import json
    from pathlib import Path

    from typer.testing import CliRunner

    import relviz.cli.teachers  # noqa: F401 (registers `relviz eval teachers`)
    from relviz.cli.base import app

    result = CliRunner().invoke(app, ["eval", "teachers", "--dataset", str(synthetic_root), "--teacher", "demo",
                                      "--scenes", "1", "--per-scene", "1", "--per-class", "20"])
    assert result.exit_code == 0, result.output
    stored = stored_comparisons(Path(workspace_home) / "cache", synthetic_root, "v1.0-mini", "mini_val")
    printed = json.loads(result.stdout)
    assert len(stored) == 1 and list(stored[0]["teachers"]) == ["demo"] and stored[0]["sample"] == printed["sample"]
    assert stored[0]["teachers"]["demo"]["uniformity"] == printed["teachers"]["demo"]["uniformity"]


def test_teacher_keys_name_each_teacher_once():
    from relviz.cli.teachers import teacher_keys
    from relviz.teacher import TeacherSpec

    specs = [TeacherSpec("demo"), TeacherSpec("ViT-B-16", "/w/a.bin"), TeacherSpec("ViT-B-16", "openai")]
    assert teacher_keys(specs) == ["demo", "ViT-B-16 (a.bin)", "ViT-B-16 (openai)"]
    with pytest.raises(InputError, match="each teacher once"):
        teacher_keys([TeacherSpec("demo"), TeacherSpec("demo")])


def test_cli_lists_the_registry_and_refuses_unknown_names():
    from typer.testing import CliRunner

    import relviz.cli.teachers  # noqa: F401 (registers `relviz eval teachers`)
    from relviz.cli.base import app

    result = CliRunner().invoke(app, ["eval", "teachers", "--list"])
    assert result.exit_code == 0 and "dinov2_vitl14\tdinov2\tdim 1024\t224x448/14" in result.output
    assert "no text" in result.output
    result = CliRunner().invoke(app, ["eval", "teachers", "--teacher", "dinov3_vitl16"])
    assert result.exit_code != 0 and "unknown teacher 'dinov3_vitl16'" in result.output
