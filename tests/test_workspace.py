"""The app's disk caches: what they store equals what is computed directly, a warm cache needs none of
the loaders, changed inputs are not served stale, and nothing is half-written."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fp_bounds import U16
from relviz.config import load_settings
from relviz.eval.selection import EvalSet
from relviz.files import atomic_path


def _fail(*_):
    raise AssertionError("a loader was called although the cache should have answered")


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "sub" / "file.json"
    with atomic_path(target) as tmp:
        Path(tmp).write_text("first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            Path(tmp).write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "first"
    assert [p.name for p in target.parent.iterdir()] == ["file.json"]  # no temporary left behind
    from relviz.files import read_json, write_json

    write_json(target, {"a": [1, 2.5]})
    assert read_json(target) == {"a": [1, 2.5]}
    target.write_text('{"a": [1,')  # damaged
    assert read_json(target) is None and read_json(tmp_path / "missing.json") is None


def test_demo_teacher_identity_from_the_file_equals_the_models():
    from relviz.teacher import identity_of, load_teacher

    teacher = load_teacher()
    teacher._identity = None  # recomputed from the built model's state dict
    assert identity_of() == teacher.identity


def test_class_embeddings_are_cached_on_disk(tmp_path):
    from relviz.teacher import cached_class_embeddings, load_teacher

    teacher = load_teacher()
    first = cached_class_embeddings(tmp_path, teacher.identity, lambda: teacher)
    # stored in float32: exact (the same computation on the same prompts in this process)
    torch.testing.assert_close(first, teacher.class_embeddings(), rtol=0, atol=0)
    again = cached_class_embeddings(tmp_path, teacher.identity, _fail)
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    assert first.shape == (16, teacher.dim)


def test_teacher_loading_is_shared_and_retried_after_a_failure(tmp_path):
    from relviz.teacher import TeacherSpec, load_teacher_async

    a, b = load_teacher_async(), load_teacher_async()
    assert a is b and a.result(timeout=120).dim > 0
    broken = tmp_path / "teacher.safetensors"
    broken.write_bytes(b"not a checkpoint")
    failed = load_teacher_async(TeacherSpec("demo", str(broken)))
    with pytest.raises(Exception, match="safetensors"):
        failed.result(timeout=60)
    retry = load_teacher_async(TeacherSpec("demo", str(broken)))
    assert retry is not failed  # a failure is not cached for good
    with pytest.raises(Exception):
        retry.result(timeout=60)


def test_toy_run_cache_returns_the_same_result(tmp_path):
    from relviz.toy import ToyConfig, run_toy, run_toy_cached

    cfg = ToyConfig(iters=40, eval_points=120, record_every=10, seed=3)
    direct = run_toy(cfg, snapshot_iters=(0, 20))
    first = run_toy_cached(cfg, tmp_path, (0, 20))
    files = list((tmp_path / "toy").glob("*.json"))
    assert len(files) == 1
    second = run_toy_cached(cfg, tmp_path, (0, 20))
    for result in (first, second):
        assert result.summary() == direct.summary()  # JSON round trip of floats is exact
        for name, run in direct.runs.items():
            assert result.runs[name].iterations == run.iterations
            for it, z in run.snapshots.items():  # float32 -> JSON -> float32 is exact, as the summaries
                torch.testing.assert_close(result.runs[name].snapshots[it], z, rtol=0, atol=0)
    files[0].write_text("{")  # damaged: recomputed, not an error
    assert run_toy_cached(cfg, tmp_path, (0, 20)).summary() == direct.summary()
    run_toy_cached(ToyConfig(iters=40, eval_points=120, record_every=10, seed=4), tmp_path, (0, 20))
    assert len(list((tmp_path / "toy").glob("*.json"))) == 2  # another config, another entry


def test_warm_caches_then_pages_need_no_model(cold_app_workspace):
    """After warm_caches, features and metrics of every checkpoint come from disk; they equal a
    direct computation on the same features."""
    from relviz import workspace
    from relviz.eval.structure import structure_metrics
    from relviz.teacher import load_teacher

    s = load_settings()
    root = s.dataset_root("synthetic-mini")
    timings = workspace.warm_caches(s, root, EvalSet(None, 1), log=lambda *_: None)
    students = [c for c in workspace.student_checkpoints(s) if c.error is None]
    assert {f"student {c.label}" for c in students} <= set(timings)

    # the dataset now opens from its cached index, without the devkit
    code = ("import sys; from relviz.config import load_settings; from relviz import workspace; "
            f"workspace.open_val_dataset(load_settings(), {str(root)!r}); "
            "assert 'nuscenes' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)

    teacher = load_teacher(s.teacher_spec)
    text = workspace.class_embeddings(s, _fail)
    torch.testing.assert_close(text, teacher.class_embeddings(), rtol=0, atol=0)  # as above: exact
    for info in students + [None]:
        val = workspace.val_features(s, root, info, EvalSet(None, 1), _fail, _fail)
        metrics = workspace.structure(s, root, info, EvalSet(None, 1), workspace.DEFAULT_PER_CLASS, 0, _fail, _fail)
        direct = structure_metrics(val, text, workspace.DEFAULT_PER_CLASS, 0)
        # the stored metrics were computed in this process by the same function, thread count and
        # inputs (the same cached features and embeddings); JSON keeps floats exactly: equal
        assert metrics["uniformity"] == direct["uniformity"]
        assert metrics["tolerance_per_class"] == direct["tolerance_per_class"]
        assert metrics["zeroshot_iou"] == direct["zeroshot_iou"]
        assert metrics["sample_counts"] == direct["sample_counts"]
        assert val["pair_labels"].shape == val["pair_teacher"].shape[:1]
        if info is None:
            assert metrics["gap"] == 0.0
    # the cached student features are the model's, to float16 precision
    from relviz.eval.structure import gather_val_features
    from relviz.models.checkpoint import load_student
    from relviz.teacher.cache import FeatureCache

    info = next(c for c in students if c.path.is_relative_to(s.runs_dir))  # not a committed demo file
    model, _ = load_student(info.path, backend="torch")
    fresh = gather_val_features(model, teacher, FeatureCache(s.cache_dir, teacher.identity),
                                workspace.open_val_dataset(s, root), EvalSet(None, 1), "cpu")
    cached = workspace.val_features(s, root, info, EvalSet(None, 1), _fail, _fail)
    # float16 storage: within half a float16 ulp (u16 relative, 2^-25 below float16's normal range);
    # one ulp allowed in case the recomputed float32 values differ slightly
    torch.testing.assert_close(cached["features"], fresh["features"], rtol=2 * U16, atol=2.0 ** -24)
    assert torch.equal(cached["labels"], fresh["labels"]) and torch.equal(cached["pair_index"], fresh["pair_index"])

    # a rewritten checkpoint is a new key: its features are computed again, not served stale
    old_key = info.key
    info.path.write_bytes(info.path.read_bytes())
    fresh_info = next(c for c in workspace.student_checkpoints(s) if c.path == info.path)
    assert fresh_info.key != old_key
    with pytest.raises(AssertionError, match="loader was called"):
        workspace.val_features(s, root, fresh_info, EvalSet(None, 1), _fail, _fail)
    # a second warm-up finds everything
    again = workspace.warm_caches(s, root, EvalSet(None, 1), log=lambda *_: None)
    assert sum(again.values()) < sum(timings.values())


def test_warm_command_then_a_broken_checkpoint(cold_app_workspace):
    """`relviz warm` fills every cache; with a broken checkpoint added it goes on past it, says so,
    exits 1, and stores nothing for it (one cold warm: the second run finds the rest cached)."""
    from typer.testing import CliRunner

    from relviz.cli import app
    from relviz.models import build_minkunet
    from relviz.models.checkpoint import save_checkpoint

    result = CliRunner().invoke(app, ["warm", "--dataset", "synthetic-mini", "--per-scene", "1"])
    assert result.exit_code == 0, result.output
    assert "caches ready" in result.output
    home = Path(load_settings().cache_dir)
    assert list(home.glob("valfeatures/*/*/teacher-sall-k1-r0.safetensors"))
    assert list(home.glob("index/*.json")) and list(home.glob("toy/*.json"))
    metrics = list(home.glob("valfeatures/*/*/*-sall-k1-r0-metrics-pc500-s0-b*.json"))
    assert len(metrics) == 1 + len([p for p in (Path(cold_app_workspace) / "runs").iterdir()]) + 3
    assert all(np.isfinite(json.loads(p.read_text())["uniformity"]) for p in metrics)

    arch = build_minkunet("MinkUNet14", out_channels=8, width=0.125, backend="torch").config.to_dict()
    save_checkpoint(Path(cold_app_workspace) / "runs" / "bad-weights" / "student.safetensors",
                    {"not.a.layer": torch.zeros(3)}, {"kind": "student", "architecture": arch, "loss": "relational"})
    result = CliRunner().invoke(app, ["warm", "--dataset", "synthetic-mini", "--per-scene", "1"])
    assert result.exit_code == 1
    assert "student bad-weights: failed" in result.output and "pages compute those" in result.output
    assert "student test-relational:" in result.output and "toy run:" in result.output  # the rest was done
    # the teacher, the two good runs and the three demo students; nothing for the broken one
    assert len(list(home.glob("valfeatures/*/*/*-sall-k1-r0-metrics-pc500-s0-b*.json"))) == 6


def test_server_preload_imports_what_pages_use():
    from relviz.serve import APP, PRELOAD, preload

    assert preload() >= 0 and all(name in sys.modules for name in PRELOAD)
    assert APP.is_file()


def test_the_server_freezes_what_imports_made_once_per_new_module(monkeypatch):
    import gc
    import types

    from relviz.serve import freeze_imports

    def scanned(obj) -> bool:  # the collector's generations hold it (frozen objects are in none of them)
        return any(o is obj for o in gc.get_objects())

    freeze_imports()
    assert freeze_imports() is False  # nothing imported since
    module = types.ModuleType("relviz_test_new_module")
    module.table = [[i] for i in range(1000)]  # objects the collector tracks, made after the last freeze
    assert scanned(module.table)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    assert freeze_imports() is True and not scanned(module.table)
    gc.unfreeze()  # this test process's collector as it was: everything scanned again


def test_one_thread_runs_torch_on_one_thread_and_restores_the_count():
    from relviz.tensors import one_thread

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # not 1: else a count left at 1 would pass for restored
    with pytest.raises(RuntimeError), one_thread():
        assert torch.get_num_threads() == 1
        raise RuntimeError("the count is restored on the way out of an error too")
    assert torch.get_num_threads() == 2
    torch.set_num_threads(before)


def test_damaged_validation_features_are_recomputed(tmp_path):
    from relviz.eval.features import cached_val_features

    val = {"features": torch.randn(10, 4), "labels": torch.arange(10) % 3, "keyframe": torch.arange(10) // 5,
           "pair_index": torch.tensor([1, 4, 7]), "pair_teacher": torch.randn(3, 4),
           "keyframe_scene": torch.tensor([0, 1]), "keyframe_index": torch.tensor([0, 3])}
    path = tmp_path / "v" / "x-n1.safetensors"
    first = cached_val_features(path, lambda: val)
    # stored in float16: the same round-to-nearest as .half(), so exact
    torch.testing.assert_close(first["features"], val["features"].half().float(), rtol=0, atol=0)
    assert torch.equal(first["pair_labels"], val["labels"][val["pair_index"]])
    assert torch.equal(cached_val_features(path, _fail)["pair_student"], first["features"][[1, 4, 7]])  # a gather
    path.write_bytes(path.read_bytes()[:40])  # truncated on disk
    calls = []
    again = cached_val_features(path, lambda: calls.append(1) or val)
    assert calls == [1] and torch.equal(again["labels"], val["labels"])


def test_students_are_evaluated_with_their_training_voxelization(nusc, tmp_path):
    """A student trained on 0.2 m cylindrical voxels gets its evaluation inputs voxelized so."""
    from relviz.data import NuScenesLidarSeg, collate
    from relviz.eval.features import point_features_cached, student_voxel_features
    from relviz.models import build_minkunet
    from relviz.models.checkpoint import load_student, save_checkpoint

    torch.manual_seed(0)
    model = build_minkunet("MinkUNet14", out_channels=8, width=0.125, backend="torch")
    path = save_checkpoint(tmp_path / "s.safetensors", model, {
        "kind": "student", "architecture": model.config.to_dict(),
        "voxelization": {"voxel_size": 0.2, "cylindrical": False}})
    student, _ = load_student(path, backend="torch")
    assert student.voxelization == (0.2, False)
    ds = NuScenesLidarSeg(None, split="mini_val", nusc=nusc, load_images=False)  # default 0.1 cylindrical
    coarse = ds.voxelized(0.2, False)
    assert ds.voxelized(0.1, True) is ds and (ds.voxel_size, coarse.voxel_size) == (0.1, 0.2)
    assert len(coarse[0]["voxels"]) < len(ds[0]["voxels"])
    batch = collate([coarse[0]])
    with torch.inference_mode():
        expected = student_voxel_features(student, batch)[batch["inverse"]]
    got = point_features_cached(student, "s", ds, 0, tmp_path / "cache")  # given the 0.1 dataset
    # both rounded to float16 from the same computation: equal, or one float16 ulp apart if the
    # float32 values differ slightly (2 u16 relative, 2^-24 below float16's normal range)
    np.testing.assert_allclose(np.asarray(got, dtype=np.float32), expected.half().float().numpy(), rtol=2 * U16,
                               atol=2.0 ** -24)


def test_lazy_demo_teacher_equals_the_loaded_one(tmp_path):
    from relviz.teacher import LazyDemoTeacher, load_teacher
    from relviz.teacher.demo import DEMO_TEACHER_PATH

    lazy = LazyDemoTeacher(DEMO_TEACHER_PATH, "cpu", tmp_path)
    assert lazy._teacher is None  # identity and dimension come from the file alone
    eager = load_teacher()
    assert (lazy.identity, lazy.dim) == (eager.identity, eager.dim)
    assert lazy._teacher is None
    # class embeddings through the disk cache are the model's, bitwise (stored in float32)
    assert torch.equal(lazy.class_embeddings(), eager.class_embeddings())
    pixels = torch.rand(1, 3, 64, 96)
    assert torch.equal(lazy.dense_features(pixels), eager.dense_features(pixels))  # the model, on first use
