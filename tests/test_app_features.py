"""Imported feature sets in the workspace and the app (issue #30): listed beside the students with their
provenance, compared on Compare and Evidence, G left undefined for features of another dimension,
zero-shot offered only in the teacher's text space, fine-tuning refused."""

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def _write_set(home: Path, name: str, dim: int, text_space: str | None, splits=("mini_val",), seed: int = 0) -> Path:
    """A feature set of seeded random features [N, dim] for every keyframe of ``splits`` of the
    workspace's dataset, written as another framework would and registered with relviz's importer."""
    from relviz.config import load_settings
    from relviz.data import NuScenesLidarSeg
    from relviz.models.featureset import FeatureSetManifest, register_feature_set, write_feature_set

    s = load_settings()
    datasets = [NuScenesLidarSeg(s.dataset_root(), split=split, load_images=False) for split in splits]
    rng = np.random.default_rng(seed)
    manifest = FeatureSetManifest(model=name, dim=dim, dtype="float32", dataset="nuscenes", splits=splits,
                                  version="v1.0-mini", text_space=text_space, source="a test's numpy writer")
    written = home.parent / f"{name}-written"
    write_feature_set(written, manifest, ((ds.sample_tokens[i], rng.standard_normal(
        (len(ds[i]["points"]), dim)).astype(np.float32)) for ds in datasets for i in range(len(ds))))
    register_feature_set(written, datasets, s.features_dir / name)
    return s.features_dir / name


def test_a_feature_set_is_a_student_with_its_provenance(app_workspace):
    from relviz.config import load_settings
    from relviz.teacher.demo import load_demo_teacher
    from relviz.workspace import DEFAULT_EVAL_SET, configuration_of, structure, student_checkpoints, text_applies

    teacher = load_demo_teacher()
    _write_set(app_workspace, "same-dim", teacher.dim, None)
    _write_set(app_workspace, "other-dim", 24, None)
    _write_set(app_workspace, "in-text", teacher.dim, teacher.identity)
    s = load_settings()
    infos = {c.label: c for c in student_checkpoints(s)}
    same, other, text = infos["same-dim [features]"], infos["other-dim [features]"], infos["in-text [features]"]
    assert same.kind == "features" and same.error is None
    assert same.provenance == "imported feature set features/same-dim"
    assert infos["relational"].provenance == "relviz checkpoint checkpoints/demo/student-relational.safetensors"
    assert configuration_of(same) == "same-dim [features]"
    assert (text_applies(s, same), text_applies(s, text)) == (False, True)

    def measured(info):
        from relviz.workspace import load_source

        return structure(s, s.dataset_root(), info, DEFAULT_EVAL_SET, 100, 0, lambda: teacher,
                         lambda: load_source(info)[0])

    a, b, c = measured(same), measured(other), measured(text)
    # no declared space: U and T, no zero-shot, and no G even in the teacher's dimension (not its space)
    assert a["uniformity"] is not None and a["gap"] is None and "zeroshot_miou" not in a
    assert b["uniformity"] is not None and b["gap"] is None and b["gap_all_pairs"] is None  # another dimension
    assert c["zeroshot_miou"] is not None and c["gap"] is not None  # declared in the teacher's space: both


def test_an_imported_set_is_compared_beside_the_students_on_compare_and_evidence(app_workspace):
    from relviz.teacher.demo import load_demo_teacher

    _write_set(app_workspace, "imported", load_demo_teacher().dim, None)
    at = AppTest.from_file(APP, default_timeout=300).run()
    at.switch_page("app_pages/compare.py")
    at.query_params["ckpts"] = "relational,imported [features]"
    at.run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value.set_index("checkpoint")
    assert table.loc["imported [features]", "source"] == "imported feature set features/imported"
    assert table.loc["relational", "source"] == "relviz checkpoint checkpoints/demo/student-relational.safetensors"
    assert table.loc["imported [features]", "zeroshot_miou"] == "-"  # not in the teacher's text space

    at.switch_page("app_pages/evidence.py").run()
    assert not at.exception, at.exception
    assert "imported [features]" in at.selectbox(key="ev_student").options  # its class relations
    # no declared space, so no G: said, and left out of the gap-vs-performance correlation
    assert any("Left out of the correlation (no G: not in the teacher's space): imported [features]" in c.value
               for c in at.caption)

    at.switch_page("app_pages/zeroshot.py").run()
    assert not at.exception, at.exception
    assert "imported [features]" not in at.selectbox(key="zs_ckpt").options
    assert any("Not in this teacher's text space" in c.value and "imported [features]" in c.value for c in at.caption)

    at.switch_page("app_pages/fewshot.py").run()  # fine-tuning needs weights: not offered for a feature set
    assert not at.exception, at.exception
    assert "imported [features]" not in at.selectbox(key="fs_ckpt").options


def test_the_probe_of_a_set_without_the_train_split_says_what_is_missing(app_workspace):
    from relviz.config import load_settings
    from relviz.errors import RelvizError
    from relviz.teacher.demo import load_demo_teacher
    from relviz.workspace import fewshot, load_source, student_checkpoints

    _write_set(app_workspace, "val-only", load_demo_teacher().dim, None)
    s = load_settings()
    info = next(c for c in student_checkpoints(s) if c.label == "val-only [features]")
    with pytest.raises(RelvizError, match="trains on mini_train's features.*holds only mini_val"):
        fewshot(s, s.dataset_root(), info, model_fn=lambda: load_source(info)[0])


def test_a_ply_export_names_where_its_features_come_from():
    from relviz.viz.points import to_ply_bytes

    xyz, colors = np.random.default_rng(0).random((5, 3)), np.full((5, 3), 200, np.uint8)
    plain, named = to_ply_bytes(xyz, colors), to_ply_bytes(xyz, colors, "features: imported feature set features/x")
    header = named.split(b"end_header\n")[0].decode().splitlines()
    assert header[:3] == ["ply", plain.split(b"\n")[1].decode(), "comment features: imported feature set features/x"]
    assert named.split(b"end_header\n")[1] == plain.split(b"end_header\n")[1]  # the points are untouched


def test_a_published_checkpoint_is_in_a_teachers_space_only_when_its_metadata_names_that_teacher():
    from types import SimpleNamespace

    from relviz.eval.report import in_teacher_space

    openscene = {"source_format": "openscene", "text_space": {"name": "ViT-L-14-336", "pretrained": "openai"}}
    clip_l, clip_b = (SimpleNamespace(model_name=m, pretrained="openai", identity=m) for m in ("ViT-L-14-336", "ViT-B-16"))
    model = object()  # neither a feature set nor asked for anything else
    assert in_teacher_space(model, openscene, clip_l) and not in_teacher_space(model, openscene, clip_b)
    assert not in_teacher_space(model, {"source_format": "slidr"}, clip_l)  # declares no text space
    assert in_teacher_space(model, {"format": "relviz-checkpoint/1"}, clip_b)  # relviz's own student
