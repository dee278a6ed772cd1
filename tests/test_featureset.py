"""Feature sets (docs/features.md): a relviz student exported and imported gives the checkpoint's
results exactly; every malformed set is refused naming the file; voxel sets expand by their index;
the documented ten-line writer runs; import registers atomically."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from relviz.data import NuScenesLidarSeg
from relviz.errors import InputError
from relviz.eval.features import export_feature_set, with_pairs
from relviz.eval.selection import EvalSet
from relviz.eval.structure import gather_val_features, structure_metrics
from relviz.models.featureset import (FeatureSetManifest, open_feature_set, refuse_feature_set, register_feature_set,
                                      registered_feature_sets, text_space_matches, validate_feature_set,
                                      write_feature_set)

DOC = Path(__file__).resolve().parents[1] / "docs" / "features.md"


@pytest.fixture(scope="module")
def splits(nusc):
    return {s: NuScenesLidarSeg(None, split=s, nusc=nusc, load_images=False) for s in ("mini_train", "mini_val")}


@pytest.fixture(scope="module")
def student():
    from relviz.demo import student_path
    from relviz.models.checkpoint import load_student

    model, meta = load_student(student_path("relational"))
    return model, meta


@pytest.fixture(scope="module")
def teacher():
    from relviz.teacher.demo import load_demo_teacher

    return load_demo_teacher()


@pytest.fixture(scope="module")
def scenes(nusc):
    """mini_val's two scenes as datasets of their own (each student forward costs seconds on CPU: the
    probe trains on one and scores on the other)."""
    return [NuScenesLidarSeg(None, split=[name], nusc=nusc, load_images=False) for name in ("scene-0103", "scene-0916")]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, splits, scenes, student):
    """The demo student's features: float32 points of every mini_val keyframe, and float32 voxels of
    one of its scenes."""
    model, meta = student
    root = tmp_path_factory.mktemp("exported")
    return {"points": export_feature_set(model, {"mini_val": splits["mini_val"]}, root / "points", "relational",
                                         text_space=meta["teacher"]["identity"]),
            "voxels": export_feature_set(model, {"scene-0103": scenes[0]}, root / "voxels", "relational",
                                         kind="voxels")}


def _val(source, teacher, splits, tmp_path_factory):
    from relviz.teacher.cache import FeatureCache

    cache = FeatureCache(tmp_path_factory.getbasetemp() / "featureset-teacher-cache", teacher.identity)
    return gather_val_features(source, teacher, cache, splits["mini_val"], EvalSet(scenes=2, per_scene=1), "cpu")


@pytest.fixture(scope="module")
def model_val(student, teacher, splits, tmp_path_factory):
    """The checkpoint's validation features (one keyframe of each mini_val scene) and teacher's."""
    return _val(student[0], teacher, splits, tmp_path_factory)


def test_float32_export_gives_the_checkpoints_structure_zeroshot_and_probe(exported, splits, scenes, student, teacher,
                                                                          model_val, tmp_path_factory):
    from relviz.eval.fewshot import evaluate_fewshot

    fs = validate_feature_set(exported["points"].directory, splits["mini_val"])
    assert fs.tokens == sorted(splits["mini_val"].sample_tokens)
    from_set = _val(fs, teacher, splits, tmp_path_factory)
    for key, value in model_val.items():  # the same numbers at the same points: exact
        assert torch.equal(value, from_set[key]), key
    text = teacher.class_embeddings().cpu()
    metrics = structure_metrics(model_val, text, per_class=200)
    assert None not in (metrics["uniformity"], metrics["tolerance"], metrics["gap"], metrics["zeroshot_miou"])
    assert structure_metrics(from_set, text, per_class=200) == metrics
    probe = dict(fraction=1.0, epochs=20, max_per_class=100)
    from_checkpoint = evaluate_fewshot(student[0], scenes[0], scenes[1], **probe)
    assert from_checkpoint["miou"] is not None
    assert evaluate_fewshot(fs, scenes[0], scenes[1], **probe) == from_checkpoint
    # the manifest carries the student's text space: zero-shot with the teacher it was distilled from
    assert text_space_matches(fs.text_space, teacher.identity)
    assert text_space_matches(re.sub(r"-\d+x\d+-maskclip$", "", teacher.identity), teacher.identity)
    assert not text_space_matches("ViT-B-16-0123456789abcdef", teacher.identity)
    assert not text_space_matches(None, teacher.identity)


def test_a_voxel_set_expands_by_its_index(exported, scenes):
    from safetensors.torch import load_file

    vox, points = exported["voxels"], exported["points"]
    validate_feature_set(vox.directory, scenes[0])
    for token in vox.tokens:
        raw = load_file(str(vox.path(token)))
        assert len(raw["features"]) < len(raw["point_to_voxel"])  # fewer voxels than points: a real index
        expanded = vox.point_features(token)
        assert torch.equal(expanded, raw["features"][raw["point_to_voxel"]])
        assert torch.equal(expanded, points.point_features(token))  # the points kind of the same student


# ------------------------------------------------------------------------------------- malformed sets
DIM = 8


def _write_set(directory: Path, val, kind: str = "points") -> None:
    """A valid set of random features for every mini_val keyframe."""
    rng = np.random.default_rng(0)
    manifest = FeatureSetManifest(model="random", dim=DIM, dtype="float32", dataset="nuscenes", splits=("mini_val",),
                                  version="v1.0-mini", kind=kind, source="tests")
    entries = []
    for i, token in enumerate(val.sample_tokens):
        n = len(val.lidar(i)[0])
        if kind == "points":
            entries.append((token, rng.standard_normal((n, DIM)).astype(np.float32)))
        else:
            entries.append((token, rng.standard_normal((n // 3, DIM)).astype(np.float32), rng.integers(0, n // 3, n)))
    write_feature_set(directory, manifest, entries)


def _file(directory: Path, val, i: int = 1) -> Path:
    return directory / f"{val.sample_tokens[i]}.safetensors"


def _rewrite(path: Path, **tensors) -> None:
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path))


def _read(path: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(path))


def _missing(d, val, train):
    _file(d, val).unlink()
    return _file(d, val)


def _point_count(d, val, train):
    _rewrite(_file(d, val), features=_read(_file(d, val))["features"][:-1])
    return _file(d, val)


def _nan(d, val, train):
    feats = _read(_file(d, val))["features"]
    feats[3, 2] = np.nan
    _rewrite(_file(d, val), features=feats)
    return _file(d, val)


def _inf(d, val, train):
    feats = _read(_file(d, val))["features"]
    feats[0, 0] = np.inf
    _rewrite(_file(d, val), features=feats)
    return _file(d, val)


def _foreign(d, val, train):
    shutil.copy(_file(d, val), d / f"{train.sample_tokens[0]}.safetensors")  # a mini_train keyframe
    return d / f"{train.sample_tokens[0]}.safetensors"


def _dimension(d, val, train):
    feats = _read(_file(d, val))["features"]
    _rewrite(_file(d, val), features=np.concatenate([feats, feats[:, :1]], 1))
    return _file(d, val)


def _dtype(d, val, train):
    _rewrite(_file(d, val), features=_read(_file(d, val))["features"].astype(np.float16))
    return _file(d, val)


def _extra_tensor(d, val, train):
    feats = _read(_file(d, val))["features"]
    _rewrite(_file(d, val), features=feats, point_to_voxel=np.arange(len(feats)))
    return _file(d, val)


def _manifest(change):
    def mutate(d, val, train):
        raw = json.loads((d / "manifest.json").read_text())
        change(raw)
        (d / "manifest.json").write_text(json.dumps(raw))
        return d / "manifest.json"
    return mutate


def _declared_dim(d, val, train):
    _manifest(lambda m: m.update(dim=DIM + 1))(d, val, train)
    return _file(d, val, 0)  # every file disagrees with the manifest: the first is named


def _not_safetensors(d, val, train):
    _file(d, val).write_bytes(b"not a safetensors file")
    return _file(d, val)


def _not_json(d, val, train):
    (d / "manifest.json").write_text("{'model': ")
    return d / "manifest.json"


MALFORMED = {
    "missing keyframe": _missing, "wrong point count": _point_count, "NaN": _nan, "Inf": _inf,
    "foreign token": _foreign, "dimension mismatch": _dimension, "dtype mismatch": _dtype,
    "tensors of another kind": _extra_tensor, "unreadable file": _not_safetensors, "manifest not JSON": _not_json,
    "manifest dim not an integer": _manifest(lambda m: m.update(dim="eight")),
    "manifest dim differs": _declared_dim, "manifest unknown kind": _manifest(lambda m: m.update(kind="pillars")),
    "manifest missing field": _manifest(lambda m: m.pop("dataset")),
    "manifest unknown field": _manifest(lambda m: m.update(dimension=8)),
    "manifest other format": _manifest(lambda m: m.update(format="relviz-features/9")),
    "manifest other version": _manifest(lambda m: m.update(version="v1.0-trainval")),
    "manifest other dataset": _manifest(lambda m: m.update(dataset="semantickitti", version=None)),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_set_is_refused_naming_the_file_and_nothing_is_registered(case, splits, tmp_path):
    val, train = splits["mini_val"], splits["mini_train"]
    source = tmp_path / "set"
    _write_set(source, val)
    validate_feature_set(source, val)  # valid before the damage
    named = MALFORMED[case](source, val, train)
    with pytest.raises(InputError) as caught:
        validate_feature_set(source, val)
    assert str(named) in str(caught.value)
    target = tmp_path / "workspace" / "features" / "random"
    with pytest.raises(InputError) as caught:
        register_feature_set(source, val, target)
    assert str(named) in str(caught.value)  # the user's file, not the temporary copy
    assert not target.exists() and list((tmp_path / "workspace" / "features").glob("*")) == []


def test_a_voxel_index_out_of_range_is_refused_naming_the_file(splits, tmp_path):
    val = splits["mini_val"]
    _write_set(tmp_path, val, kind="voxels")
    fs = validate_feature_set(tmp_path, val)
    raw = _read(_file(tmp_path, val))
    expanded = fs.point_features(val.sample_tokens[1])
    assert torch.equal(expanded, torch.from_numpy(raw["features"][raw["point_to_voxel"]]))
    for bad in (len(raw["features"]), -1):
        index = raw["point_to_voxel"].copy()
        index[5] = bad
        _rewrite(_file(tmp_path, val), features=raw["features"], point_to_voxel=index)
        with pytest.raises(InputError, match=re.escape(str(_file(tmp_path, val))) + ".*point_to_voxel"):
            validate_feature_set(tmp_path, val)
        with pytest.raises(InputError, match="point_to_voxel"):  # also when read for an analysis
            fs.point_features(val.sample_tokens[1])


def test_many_missing_keyframes_are_listed_first_few(splits, tmp_path):
    from relviz.models.featureset import SHOWN

    train = splits["mini_train"]
    manifest = FeatureSetManifest(model="m", dim=2, dtype="float32", dataset="nuscenes", splits=("mini_train",),
                                  version="v1.0-mini")
    write_feature_set(tmp_path, manifest, [])
    with pytest.raises(InputError) as caught:
        validate_feature_set(tmp_path, train)
    message = str(caught.value)
    assert f"{len(train)} of {len(train)} keyframes" in message
    assert message.count(".safetensors") == SHOWN and f"and {len(train) - SHOWN} more" in message


def test_the_documented_writer_runs_and_its_set_imports(nusc, splits, tmp_path):
    code = re.search(r"### A writer in ten lines.*?```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    projection = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    out = tmp_path / "written"
    exec(code, {"DATAROOT": str(nusc.dataroot), "OUT": str(out), "my_model": lambda points: points @ projection})
    fs = validate_feature_set(out, list(splits.values()))
    val = splits["mini_val"]
    points = val.lidar(0)[0]
    assert torch.equal(fs.point_features(val.sample_tokens[0]),
                       torch.from_numpy((points @ projection).astype(np.float16)).float())


def test_the_cli_exports_float16_imports_and_lists_a_set(nusc, splits, teacher, model_val, workspace_home, tmp_path,
                                                          tmp_path_factory):
    from typer.testing import CliRunner

    from relviz.cli import app
    from relviz.demo import student_path

    runner = CliRunner()
    out, root = tmp_path / "exported", str(nusc.dataroot)
    result = runner.invoke(app, ["features", "export", "--checkpoint", str(student_path("relational")), "--root", root,
                                 "--split", "mini_val", "--out", str(out), "--dtype", "float16"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["features", "import", str(out), "--root", root, "--name", "demo-rel"])
    assert result.exit_code == 0, result.output
    registered = registered_feature_sets(Path(workspace_home) / "features")
    assert [fs.directory.name for fs in registered] == ["demo-rel"] and len(registered[0].tokens) == 4
    # float16: exactly the checkpoint's features rounded to float16, and the metrics of those
    from_set = _val(registered[0], teacher, splits, tmp_path_factory)
    rounded = with_pairs({**model_val, "features": model_val["features"].half().float()})
    assert torch.equal(from_set["features"], rounded["features"])
    text = teacher.class_embeddings().cpu()
    assert structure_metrics(from_set, text, per_class=200) == structure_metrics(rounded, text, per_class=200)
    again = runner.invoke(app, ["features", "import", str(out), "--root", root, "--name", "demo-rel"])
    assert again.exit_code == 2 and "already exists" in again.output
    next(out.glob("*.safetensors")).unlink()
    bad = runner.invoke(app, ["features", "import", str(out), "--root", root, "--name", "broken"])
    assert bad.exit_code == 2 and "have no file" in bad.output and "Traceback" not in bad.output
    assert [fs.directory.name for fs in registered_feature_sets(Path(workspace_home) / "features")] == ["demo-rel"]


def test_fine_tuning_refuses_a_feature_set(exported, student):
    with pytest.raises(InputError, match="fine-tuning needs the model itself"):
        refuse_feature_set(exported["voxels"], "fine-tuning")
    refuse_feature_set(student[0], "fine-tuning")  # a model passes
