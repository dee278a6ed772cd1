"""The synthetic dataset through nuscenes-devkit, and relviz's loader against the devkit."""

import json
import os
from dataclasses import replace
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from fp_bounds import U32
from relviz.data import CAMERAS, CLASSES, FINE_CLASSES, NuScenesLidarSeg, PairConfig, collate, merge_labels
from relviz.data.classes import FINE_TO_MERGED
from relviz.data.nuscenes import DatasetError, open_nuscenes
from relviz.data.synthetic import MINI_TRAIN, MINI_VAL, SynthConfig, generate
from relviz.data.voxel import voxel_coordinates, voxelize


def test_devkit_loads_synthetic_with_lidarseg(nusc, synthetic_root):
    from nuscenes.eval.lidarseg.utils import LidarsegClassMapper
    from nuscenes.utils.splits import create_splits_scenes

    assert sorted(s["name"] for s in nusc.scene) == sorted(MINI_TRAIN + MINI_VAL)
    assert len(nusc.sample) == 20 and len(nusc.lidarseg) == 20
    assert [c["name"] for c in sorted(nusc.category, key=lambda c: c["index"])] == list(FINE_CLASSES)
    splits = create_splits_scenes()
    assert set(splits["mini_val"]) == set(MINI_VAL)
    mapper = LidarsegClassMapper(nusc)
    # our fine -> merged table equals the devkit's mapping, class by class
    assert [mapper.fine_idx_2_coarse_idx_mapping[i] for i in range(32)] == FINE_TO_MERGED.tolist()
    assert [mapper.coarse_name_2_coarse_idx_mapping[n] for n in CLASSES[1:]] == list(range(1, 17))
    assert len(nusc.sample_annotation) > 0 and len(nusc.instance) > 0
    # every merged class occurs in the lidar labels
    seen = set()
    for rec in nusc.lidarseg:
        seen |= set(merge_labels(np.fromfile(synthetic_root / rec["filename"], dtype=np.uint8)).tolist())
    assert seen >= set(range(1, 17))


def test_point_counts_are_lidar_like(nusc, synthetic_root):
    sd = nusc.get("sample_data", nusc.sample[0]["data"]["LIDAR_TOP"])
    pts = np.fromfile(synthetic_root / sd["filename"], dtype=np.float32).reshape(-1, 5)
    assert 20_000 <= len(pts) <= 35_000
    assert set(np.unique(pts[:, 4]).astype(int)) <= set(range(32))


@pytest.mark.parametrize("sample_index", [0, 13])
def test_pairs_equal_devkit_projection(nusc, sample_index):
    ds = NuScenesLidarSeg(None, split="mini_train" if sample_index < 16 else "mini_val", nusc=nusc,
                          load_images=False, pairs=PairConfig(min_depth=1.0, margin=1.0))
    token = nusc.sample[sample_index]["token"]
    points, _, lidar_sd = ds.lidar(ds.sample_tokens.index(token)) if token in ds.sample_tokens else (None,) * 3
    if points is None:
        pytest.skip("sample not in split")
    from relviz.data.geometry import lidar_to_camera_matrix, transform_points

    xyz = points[:, :3].astype(np.float64)
    for channel in CAMERAS:
        idx, uv, cam = ds.camera_pairs(xyz, lidar_sd, channel)
        sample = nusc.get("sample", token)
        ref, _, _ = nusc.explorer.map_pointcloud_to_image(sample["data"]["LIDAR_TOP"], sample["data"][channel])
        assert len(idx) == ref.shape[1] > 0, channel
        # The devkit moves the float32 points through 8 rigid steps (lidar -> ego -> global -> ego ->
        # camera), rounding to float32 after each: the camera-frame point is off by <= 8 u32 B, B the
        # largest norm on the way (<= |p| + the four translations); a pixel f x / z + c is then off by
        # <= f (1 + (|x| + |y|) / z) / z * 8 u32 B. relviz works in float64 throughout; x2 safety.
        shifts = [lidar_sd["calibrated_sensor"], lidar_sd["ego_pose"], cam["ego_pose"], cam["calibrated_sensor"]]
        big = np.linalg.norm(xyz[idx], axis=1) + sum(np.linalg.norm(r["translation"]) for r in shifts)
        m = lidar_to_camera_matrix(lidar_sd["calibrated_sensor"], lidar_sd["ego_pose"], cam["ego_pose"],
                                   cam["calibrated_sensor"])
        x, y, z = transform_points(m, xyz[idx]).T
        f = np.max(np.abs(np.asarray(cam["calibrated_sensor"]["camera_intrinsic"])[:2, :2]))
        bound = 2 * f * (1 + (np.abs(x) + np.abs(y)) / z) / z * 8 * U32 * big
        err = np.abs(uv - ref[:2].T).max(axis=1)
        assert (err <= bound).all(), (channel, err.max(), (err / bound).max())


def test_lidar_labels_match_rendered_classes(nusc, synthetic_root):
    """On points not occluded from a camera, the lidar label equals the rendered class at its pixel."""
    ds = NuScenesLidarSeg(None, split="mini_train", nusc=nusc, load_images=False)
    agree = total = 0
    for i in range(0, len(ds), 3):
        points, _, lidar_sd = ds.lidar(i)
        fine = np.fromfile(synthetic_root / nusc.get("lidarseg", lidar_sd["token"])["filename"], dtype=np.uint8)
        for channel in CAMERAS:
            idx, uv, cam_sd = ds.camera_pairs(points[:, :3].astype(np.float64), lidar_sd, channel)
            cls = np.asarray(Image.open(synthetic_root / cam_sd["filename"].replace(".jpg", ".class.png")))
            px = np.rint(uv).astype(int)
            # z-buffer over the lidar points: keep the nearest point of every 3x3-pixel cell
            depth = np.linalg.norm(points[idx, :3], axis=1)
            cell = (px[:, 1] // 3) * 10_000 + px[:, 0] // 3
            order = np.lexsort((depth, cell))
            first = order[np.r_[True, cell[order][1:] != cell[order][:-1]]]
            visible = first[depth[first] < 60]
            agree += int((cls[px[visible, 1], px[visible, 0]] == fine[idx[visible]]).sum())
            total += len(visible)
    assert total > 5000
    print(f"label/pixel agreement on visible points: {agree / total:.4f} of {total}")
    assert agree / total >= 0.95, agree / total


def test_same_seed_gives_identical_files(tmp_path):
    """Two worker processes write the bytes one process writes, every file, floats included (scenes
    are seeded by (seed, scene index), whichever process renders them), and the kinds of file without
    processor-dependent floats are those recorded in tests/test_synthetic_hash.py. Another seed,
    other bytes."""
    from test_synthetic_hash import EXACT_KINDS, RECORDED, TINY, tree_digests

    a = generate(tmp_path / "a", TINY, workers=2)
    digests = tree_digests(a)
    assert digests == tree_digests(generate(tmp_path / "b", TINY, workers=1))
    assert {k: digests[k] for k in EXACT_KINDS} == {k: RECORDED[k] for k in EXACT_KINDS}
    assert sum(p.relative_to(a).parts[0] == "lidarseg" for p in a.rglob("*") if p.is_file()) == 20
    files = sorted(p.relative_to(a) for p in (a / "samples" / "LIDAR_TOP").iterdir())
    c = generate(tmp_path / "c", replace(TINY, seed=4, beams=3), workers=2)
    assert (c / files[0]).read_bytes() != (a / files[0]).read_bytes()
    # the ring index (the 5th column of a nuScenes .pcd.bin) counts the beams asked for
    rings = [np.unique(np.fromfile(root / files[0], dtype=np.float32).reshape(-1, 5)[:, 4]) for root in (a, c)]
    assert [r.tolist() for r in rings] == [list(range(TINY.beams)), [0, 1, 2]]
    with pytest.raises(FileExistsError):
        generate(tmp_path / "a", TINY)


def test_dataset_items_and_collate(nusc):
    ds = NuScenesLidarSeg(None, split="mini_val", nusc=nusc, voxel_size=0.1, cylindrical=True)
    assert len(ds) == 4  # 2 scenes x 2 keyframes
    a, b = ds[0], ds[1]
    n = len(a["points"])
    assert a["labels"].shape == (n,) and a["labels"].max() <= 16
    assert a["images"].shape == (6, 225, 400, 3)
    assert a["voxels"].shape[1] == 3 and a["inverse"].shape == (n,)
    np.testing.assert_array_equal(a["voxels"][a["inverse"]], voxel_coordinates(a["points"][:, :3]))
    batch = collate([a, b])
    va = len(a["voxels"])
    assert batch["coordinates"].shape == (va + len(b["voxels"]), 4)
    assert torch.equal(batch["coordinates"][batch["inverse"][n:]][:, 1:],
                       torch.from_numpy(b["voxels"][b["inverse"]]))
    assert (batch["coordinates"][va:, 0] == 1).all()
    assert torch.equal(batch["pair_points"][len(a["pair_points"]):], torch.from_numpy(b["pair_points"] + n))
    assert batch["pair_images"].max() < 12 and batch["images"].shape[0] == 12
    assert batch["labels"].shape == (n + len(b["points"]),)


def test_augmentation_is_seeded_rigid_motion(nusc):
    ds = NuScenesLidarSeg(None, split="mini_val", nusc=nusc, augment=True, load_images=False, seed=1)
    plain = NuScenesLidarSeg(None, split="mini_val", nusc=nusc, load_images=False)
    a1, a2, p = ds[0], ds[0], plain[0]
    np.testing.assert_array_equal(a1["points"], a2["points"])
    # rotation/flips keep ranges and heights; pairs come from the unaugmented geometry. Both norms are
    # float32 (2 squares, a sum, a sqrt: <= 2u); the rotated points were float64, rounded to float32
    # (u more); the plain ones are exact: <= 5 u32 relative apart, x2 safety
    np.testing.assert_allclose(np.linalg.norm(a1["points"][:, :2], axis=1), np.linalg.norm(p["points"][:, :2], axis=1),
                               rtol=2 * 5 * U32, atol=0)
    np.testing.assert_array_equal(a1["pair_points"], p["pair_points"])
    ds.set_epoch(1)
    assert not np.array_equal(ds[0]["points"], a1["points"])


def test_voxelize_cylindrical_and_cartesian():
    pts = np.array([[1.0, 0.0, 0.05], [1.04, 0.0, 0.06], [0.0, 2.0, -0.31], [1.0, 0.0, 0.15]])
    coords, first, inverse = voxelize(pts, 0.1, cylindrical=True)
    np.testing.assert_array_equal(coords[inverse], [[10, 0, 0], [10, 0, 0], [20, 90, -4], [10, 0, 1]])
    assert len(coords) == 3 and first[inverse[1]] == 0
    cart, _, inv = voxelize(pts, 0.5, cylindrical=False)
    np.testing.assert_array_equal(cart[inv], [[2, 0, 0], [2, 0, 0], [0, 4, -1], [2, 0, 0]])


# ---------------------------------------------------------------------------------------- bad input

@pytest.fixture
def broken_copy(synthetic_root, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(synthetic_root, dst, ignore=shutil.ignore_patterns("CAM_*"))
    return dst


def test_missing_table(broken_copy):
    (broken_copy / "v1.0-mini" / "attribute.json").unlink()
    with pytest.raises(DatasetError, match=r"v1.0-mini: missing table file\(s\) attribute.json"):
        open_nuscenes(broken_copy)


def test_unknown_version_and_split(broken_copy, nusc):
    with pytest.raises(DatasetError, match="unknown nuScenes version 'v2.0'"):
        open_nuscenes(broken_copy, "v2.0")
    with pytest.raises(DatasetError, match=r"v1.0-trainval is missing.*found: v1.0-mini"):
        open_nuscenes(broken_copy, "v1.0-trainval")
    with pytest.raises(DatasetError, match="unknown split 'training'"):
        NuScenesLidarSeg(None, split="training", nusc=nusc)
    with pytest.raises(DatasetError, match="split 'train' does not belong to version v1.0-mini"):
        NuScenesLidarSeg(None, split="train", nusc=nusc)
    with pytest.raises(DatasetError, match="scene-9999 are not in"):
        NuScenesLidarSeg(None, split=["scene-0061", "scene-9999"], nusc=nusc)


def test_lidarseg_file_count_mismatch(broken_copy):
    extra = broken_copy / "lidarseg" / "v1.0-mini" / "extra_lidarseg.bin"
    extra.write_bytes(b"\x00")
    with pytest.raises(DatasetError, match="21 label files but 20 records"):
        open_nuscenes(broken_copy)


def _first_lidar(root):
    sd = json.loads((root / "v1.0-mini" / "sample_data.json").read_text())
    ls = {r["sample_data_token"]: r for r in json.loads((root / "v1.0-mini" / "lidarseg.json").read_text())}
    rec = next(s for s in sd if s["filename"].startswith("samples/LIDAR_TOP") and
               s["sample_token"] == json.loads((root / "v1.0-mini" / "scene.json").read_text())[0]["first_sample_token"])
    return root / rec["filename"], root / ls[rec["token"]]["filename"]


def test_missing_truncated_points_and_label_mismatch(broken_copy):
    nusc = open_nuscenes(broken_copy)
    ds = NuScenesLidarSeg(None, split=["scene-0061"], nusc=nusc, load_images=False)
    pcd, labels = _first_lidar(broken_copy)
    data = pcd.read_bytes()
    pcd.write_bytes(data[:-7])
    with pytest.raises(DatasetError, match=r"lidar file .*\.pcd\.bin is truncated"):
        ds[0]
    pcd.write_bytes(data)
    labels.write_bytes(labels.read_bytes()[:-10])
    with pytest.raises(DatasetError, match=r"lidarseg file .*_lidarseg\.bin has \d+ labels but its point cloud has"):
        ds[0]
    pcd.unlink()
    with pytest.raises(DatasetError, match=r"lidar file .*\.pcd\.bin is missing"):
        ds[0]


def test_superpixels_cached(nusc, tmp_path):
    from relviz.data.superpixels import cached_superpixels, slic_superpixels

    ds = NuScenesLidarSeg(None, split="mini_val", nusc=nusc)
    item = ds[0]
    image = item["images"][0]
    seg = cached_superpixels(image, item["camera_tokens"][0], tmp_path, n_segments=50)
    assert seg.shape == image.shape[:2] and 10 <= seg.max() + 1 <= 80
    np.testing.assert_array_equal(seg, slic_superpixels(image, 50))
    cached = list((tmp_path / "slic50").glob("*.png"))
    assert len(cached) == 1
    np.testing.assert_array_equal(cached_superpixels(image, item["camera_tokens"][0], tmp_path, n_segments=50), seg)


def test_cached_index_gives_the_same_items_without_the_devkit(synthetic_root, nusc, tmp_path):
    from relviz.data.index import load_index

    plain = NuScenesLidarSeg(None, split="mini_val", nusc=nusc, load_images=False)
    cached = NuScenesLidarSeg(synthetic_root, split="mini_val", load_images=False, index_cache=tmp_path)
    assert len(list((tmp_path / "index").glob("*.json"))) == 1
    reopened = NuScenesLidarSeg(synthetic_root, split="mini_val", load_images=False, index_cache=tmp_path)
    assert reopened._nusc is None and cached.sample_tokens == plain.sample_tokens == reopened.sample_tokens
    for i in (0, len(plain) - 1):
        a, b = plain[i], reopened[i]
        for key in ("points", "labels", "pair_points", "pair_pixels", "voxels", "inverse"):
            np.testing.assert_array_equal(a[key], b[key])
        assert a["camera_tokens"] == b["camera_tokens"]
    # opening from the cached index does not import the devkit (that import is what it saves)
    code = ("import sys; from relviz.data import NuScenesLidarSeg; "
            f"ds = NuScenesLidarSeg({str(synthetic_root)!r}, split='mini_val', index_cache={str(tmp_path)!r}); ds[0]; "
            "assert 'nuscenes' not in sys.modules, 'devkit imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
    # a changed table file gives a new key: the index is rebuilt, not served stale
    table = synthetic_root / "v1.0-mini" / "scene.json"
    os.utime(table, ns=(table.stat().st_atime_ns, table.stat().st_mtime_ns + 1_000_000))
    load_index(synthetic_root, "v1.0-mini", "mini_val", tmp_path)
    assert len(list((tmp_path / "index").glob("*.json"))) == 2
    (tmp_path / "index" / "broken.json").write_text("{")  # stray files do not matter
    with pytest.raises(DatasetError, match="split"):
        load_index(synthetic_root, "v1.0-mini", "validation", tmp_path)
