"""A synthetic set in the v1.0-trainval layout: real trainval scene names that the devkit's splits
assign, a tiny set that opens as nuScenes train and val, and the dry run's steps and teacher-cache
estimates on it, checked against counts read through the devkit."""

import io
import json

import numpy as np
import pytest
import torch
from nuscenes.utils.splits import create_splits_scenes
from typer.testing import CliRunner

from relviz.cli import app as cli_app
from relviz.data import NuScenesLidarSeg
from relviz.data.nuscenes import CAMERAS, DatasetError, open_nuscenes
from relviz.data.synthetic import SynthConfig, generate, trainval_scene_names
from relviz.errors import InputError

# 4 scenes (3 train, 1 val) of 2 keyframes, 64x64 images and a 4-beam lidar: about a second
TINY_TRAINVAL = SynthConfig(seed=0, samples_per_scene=2, image_size=(64, 64), beams=4, azimuth_steps=64,
                            version="v1.0-trainval", scenes=4)
SPLITS = create_splits_scenes()


@pytest.fixture(scope="module")
def trainval_root(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("trainval") / "synthetic-trainval", TINY_TRAINVAL, workers=1)


@pytest.fixture
def one_thread():
    """The dry run's measured forward on a few hundred voxels: one thread spends ~0.1 s of CPU, two
    threads on a busy 2-core machine spend seconds waiting on each other (the bytes are the same)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("n", [2, 4, 7, 850])
def test_trainval_scene_names_are_the_devkits_train_and_val_scenes(n):
    names = trainval_scene_names(n)
    n_train = sum(name in SPLITS["train"] for name in names)
    n_val = sum(name in SPLITS["val"] for name in names)
    assert len(set(names)) == n == n_train + n_val and n_train >= 1 and n_val >= 1
    assert n_val == min(n - 1, max(1, round(n * 150 / 850)))  # nuScenes' 150 val of 850 scenes
    if n == 850:
        assert set(names) == set(SPLITS["train"]) | set(SPLITS["val"])


@pytest.mark.parametrize("kwargs, field", [
    ({"version": "v1.0-trainval", "scenes": 1}, "scenes"), ({"version": "v1.0-trainval", "scenes": 851}, "scenes"),
    ({"version": "v1.0-mini", "scenes": 4}, "scenes"), ({"version": "v2.0"}, "version"),
])
def test_bad_trainval_configs_name_the_field(kwargs, field):
    with pytest.raises(InputError, match=field):
        SynthConfig(**kwargs)


def test_a_tiny_trainval_set_opens_with_the_devkits_splits(trainval_root):
    assert (trainval_root / "v1.0-trainval").is_dir() and (trainval_root / "lidarseg" / "v1.0-trainval").is_dir()
    nusc = open_nuscenes(trainval_root, "v1.0-trainval")
    for split in ("train", "val"):
        scenes = [s for s in nusc.scene if s["name"] in SPLITS[split]]
        ds = NuScenesLidarSeg(trainval_root, "v1.0-trainval", split, load_images=False)
        assert len(ds) == sum(s["nbr_samples"] for s in scenes) > 0
        assert {ds.scene_of(i) for i in range(len(ds))} == {s["name"] for s in scenes}
        item = ds[0]
        assert len(item["labels"]) == len(item["points"]) > 0
    assert len(nusc.scene) == TINY_TRAINVAL.scenes
    with pytest.raises(DatasetError, match="does not belong to version v1.0-trainval"):
        NuScenesLidarSeg(trainval_root, "v1.0-trainval", "mini_train", load_images=False)


def _keyframe_images(nusc, split: str, limit: int | None = None) -> int:
    """Camera images of the keyframes of ``split`` (the first ``limit`` in index order: scenes by
    name, keyframes in time order), counted through the devkit's tables."""
    samples = []
    for scene in sorted((s for s in nusc.scene if s["name"] in SPLITS[split]), key=lambda s: s["name"]):
        token = scene["first_sample_token"]
        while token:
            samples.append(nusc.get("sample", token))
            token = samples[-1]["next"]
    return sum(sum(ch in s["data"] for ch in CAMERAS) for s in samples[:limit])


def _dry_run(args: list[str]) -> dict:
    out = CliRunner().invoke(cli_app, [*args, "--dry-run"])
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)["estimate"]


def test_slidr_dry_run_counts_the_steps_and_the_teacher_cache(trainval_root, one_thread):
    nusc = open_nuscenes(trainval_root, "v1.0-trainval")
    train = sum(s["nbr_samples"] for s in nusc.scene if s["name"] in SPLITS["train"])
    # a narrow student and few pairs keep the measured forward cheap; steps and cache do not depend on them.
    # The preset crops images, so its teacher runs in the step; with the cache (no crops) every train
    # image is cached before step 0 as well
    est = _dry_run(["train", "--preset", "slidr", "--dataset", str(trainval_root), "--width", "0.125",
                    "--pairs", "256", "--set", "image_augment=false", "--set", "teacher_features=cache"])
    assert (est["train_keyframes"], est["steps_per_epoch"], est["total_steps"]) == (train, max(1, train // 4),
                                                                                    50 * max(1, train // 4))
    images = _keyframe_images(nusc, "train") + _keyframe_images(nusc, "val", limit=4)  # val_samples = 4
    buf = io.BytesIO()
    np.save(buf, np.zeros((512, 14, 26), dtype=np.float16))  # ViT-B/16's map at 224x416, as numpy writes it
    assert est["teacher_cache"]["images"] == images
    assert est["teacher_cache"]["bytes"] == images * buf.tell()
    from relviz.train import from_dict
    from relviz.train.config import read_preset

    assert from_dict(read_preset("slidr")).online_teacher(torch.device("cpu"))  # the preset: val images only
    mem = est["memory"]
    assert mem["activations_mb"] > 0 and mem["loss_mb"] > 0
    assert mem["total_mb"] == pytest.approx(sum(mem[p] for p in mem["counted"]), abs=0.3)  # 4 parts rounded to 0.1


def test_jobs_submit_dry_run_counts_its_processes(trainval_root, one_thread):
    nusc = open_nuscenes(trainval_root, "v1.0-trainval")
    train = sum(s["nbr_samples"] for s in nusc.scene if s["name"] in SPLITS["train"])
    est = _dry_run(["jobs", "submit", "--preset", "slidr", "--nproc-per-node", "2", "--batch", "1",
                    "--dataset", str(trainval_root), "--width", "0.125", "--pairs", "256"])
    assert est["world_size"] == 2 and est["steps_per_epoch"] == train // 2 and est["total_steps"] == 50 * (train // 2)


def test_the_cache_estimate_is_the_size_of_the_demo_teachers_cache_files(trainval_root, tmp_path, one_thread):
    """The demo teacher's features of one keyframe's cameras, written by the feature cache as
    training fills it: every file has the size the estimate gives per image."""
    from relviz.config import TeacherSpec
    from relviz.eval.features import camera_images
    from relviz.teacher import FeatureCache, load_teacher
    from relviz.train.estimate import cache_file_bytes, teacher_geometry

    teacher = load_teacher(TeacherSpec())
    ds = NuScenesLidarSeg(trainval_root, "v1.0-trainval", "val", load_images=False)
    tokens = [cam["token"] for cam in ds.keyframes[0]["cameras"].values()]
    cache = FeatureCache(tmp_path, teacher.identity)
    cache.features(teacher, tokens, lambda idx: camera_images(ds, [tokens[i] for i in idx]))
    sizes = {cache.path(t).stat().st_size for t in tokens}
    assert sizes == {cache_file_bytes(teacher_geometry(TeacherSpec()))}


@pytest.mark.parametrize("args, expected", [
    (["--version", "v1.0-mini", "--scenes", "4"], "scenes"),
    (["--version", "v1.0-trainval", "--scenes", "1"], "scenes"),
    (["--version", "v2.0"], "version"),
])
def test_synth_refuses_bad_versions_and_scene_counts(args, expected, tmp_path):
    out = CliRunner().invoke(cli_app, ["synth", "--out", str(tmp_path / "x"), *args])
    assert out.exit_code == 2 and expected in out.output, out.output
    assert not (tmp_path / "x").exists()
