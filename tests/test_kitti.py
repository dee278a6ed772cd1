"""The SemanticKITTI-layout reader against an independent numpy reading, its errors, the few-shot scan
selection against hand-made lists, the synthetic KITTI-format world, and mIoU over the 19 classes."""

import numpy as np
import pytest
from typer.testing import CliRunner

import relviz.cli.kitti  # noqa: F401 (registers synth-kitti and kitti-info on the app)
from relviz.cli.base import app
from relviz.data.dataset import collate
from relviz.data.kitti import SemanticKitti, detect_format, fewshot_scans, open_lidarseg, read_scan, velodyne_poses
from relviz.data.kitti_classes import KITTI_CLASSES
from relviz.data.synthetic_kitti import KittiSynthConfig, generate_kitti
from relviz.errors import InputError
from relviz.segmentation import classes_with_ground_truth, confusion_matrix, mean_iou_over

# semantic-kitti-api config/semantic-kitti.yaml, learning_map, typed from the file (the reference)
YAML_LEARNING_MAP = {0: 0, 1: 0, 10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8, 40: 9,
                     44: 10, 48: 11, 49: 12, 50: 13, 51: 14, 52: 0, 60: 9, 70: 15, 71: 16, 72: 17, 80: 18, 81: 19,
                     99: 0, 252: 1, 253: 7, 254: 6, 255: 8, 256: 5, 257: 5, 258: 4, 259: 5}


def write_scan(folder, sequence, stem, points, raw_labels=None):
    (folder / "sequences" / sequence / "velodyne").mkdir(parents=True, exist_ok=True)
    points.astype(np.float32).tofile(folder / "sequences" / sequence / "velodyne" / f"{stem}.bin")
    if raw_labels is not None:
        (folder / "sequences" / sequence / "labels").mkdir(exist_ok=True)
        raw_labels.astype(np.uint32).tofile(folder / "sequences" / sequence / "labels" / f"{stem}.label")


@pytest.fixture
def handmade(tmp_path):
    """Sequences 00 and 10 (train, 3 and 2 scans) and 08 (val, 1 scan): random points, random ids of the
    learning map with random instance ids in the high 16 bits."""
    rng = np.random.default_rng(0)
    ids = np.array(sorted(YAML_LEARNING_MAP))
    scans = {}
    for sequence, count in (("00", 3), ("10", 2), ("08", 1)):
        for k in range(count):
            n = int(rng.integers(50, 200))
            points = rng.normal(0, 20, (n, 4)).astype(np.float32)
            raw = rng.choice(ids, n) | (rng.integers(0, 1 << 16, n) << 16)
            write_scan(tmp_path, sequence, f"{k:06d}", points, raw)
            scans[f"{sequence}/{k:06d}"] = (points, raw)
    return tmp_path, scans


def test_reader_equals_numpy_and_the_learning_map_by_hand(handmade):
    root, scans = handmade
    for split, expected in (("train", ["00/000000", "00/000001", "00/000002", "10/000000", "10/000001"]),
                            ("val", ["08/000000"])):
        data = SemanticKitti(root, split)
        assert data.sample_tokens == expected and data.has_lidarseg
        for i, token in enumerate(expected):
            folder = root / "sequences" / token.split("/")[0]
            stem = token.split("/")[1]
            points = np.frombuffer((folder / "velodyne" / f"{stem}.bin").read_bytes(), dtype="<f4").reshape(-1, 4)
            raw = np.frombuffer((folder / "labels" / f"{stem}.label").read_bytes(), dtype="<u4")
            by_hand = np.array([YAML_LEARNING_MAP[int(v) & 0xFFFF] for v in raw])
            got_points, got_labels, _ = data.lidar(i)
            np.testing.assert_array_equal(got_points, points)
            np.testing.assert_array_equal(got_labels, by_hand)
            item = data[i]
            np.testing.assert_array_equal(item["points"], points)  # float32 -> float64 -> float32 is exact
            np.testing.assert_array_equal(item["labels"], by_hand)
            assert data.scene_of(i) == token.split("/")[0] and item["sample_token"] == token
            np.testing.assert_array_equal(item["voxel_features"][:, 0], points[:, 3][
                np.unique(item["inverse"], return_index=True)[1]])  # the reflectance of each voxel's first point
        absent = ["01", "02", "03", "04", "05", "06", "07", "09"] if split == "train" else []
        assert data.missing_sequences == absent
    batch = collate([data[0], SemanticKitti(root, "train")[0]])
    assert batch["labels"].shape[0] == batch["points"].shape[0] == batch["inverse"].shape[0]
    assert int(batch["inverse"].max()) + 1 == len(batch["coordinates"]) and len(batch["pair_points"]) == 0


def test_bad_files_are_refused_naming_the_file(handmade):
    root, scans = handmade
    seq = root / "sequences" / "00"
    data = SemanticKitti(root, "train")
    raw = (seq / "velodyne" / "000001.bin").read_bytes()
    (seq / "velodyne" / "000001.bin").write_bytes(raw[:-6])  # truncated mid-point
    with pytest.raises(InputError, match=r"000001\.bin.*not a whole number of points"):
        data.lidar(1)
    label = (seq / "labels" / "000002.label").read_bytes()
    (seq / "labels" / "000002.label").write_bytes(label[:-4])  # one point short
    with pytest.raises(InputError, match=r"000002\.label.*expected"):
        data.lidar(2)
    bad = np.frombuffer((seq / "labels" / "000000.label").read_bytes(), dtype="<u4").copy()
    bad[5] = (3 << 16) | 7  # id 7 is not in the learning map
    bad.tofile(seq / "labels" / "000000.label")
    with pytest.raises(InputError, match=r"000000\.label: semantic id\(s\) 7 are not in SemanticKITTI's learning map"):
        data.lidar(0)
    with pytest.raises(InputError, match="split must be one of"):
        SemanticKitti(root, "mini_train")


def test_format_detection(tmp_path, handmade):
    root, _ = handmade
    assert detect_format(root) == "semantickitti"
    assert isinstance(open_lidarseg(root, "val"), SemanticKitti)
    (tmp_path / "nu" / "v1.0-mini").mkdir(parents=True)
    (tmp_path / "nu" / "v1.0-mini" / "scene.json").write_text("[]")
    assert detect_format(tmp_path / "nu") == "nuscenes"
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="neither SemanticKITTI-layout"):
        detect_format(tmp_path / "empty")
    with pytest.raises(InputError, match="format must be one of"):
        open_lidarseg(root, "val", fmt="kitti")


def test_fewshot_scans_against_a_handmade_list():
    # sequences 00 (150 scans), 01 (40) and 10 (30), given shuffled: sorted positions 0-149, 150-189, 190-219
    ids = [f"00/{k:06d}" for k in range(150)] + [f"01/{k:06d}" for k in range(40)] + [f"10/{k:06d}" for k in range(30)]
    shuffled = list(np.random.default_rng(1).permutation(ids))
    assert sorted(shuffled[i] for i in fewshot_scans(shuffled, 0.01)) == ["00/000000", "00/000100", "10/000010"]
    ten = ([f"00/{k:06d}" for k in range(0, 150, 10)] + ["01/000000", "01/000010", "01/000020", "01/000030"]
           + ["10/000000", "10/000010", "10/000020"])
    assert sorted(shuffled[i] for i in fewshot_scans(shuffled, 0.1)) == ten
    assert fewshot_scans(ids, 1.0) == list(range(len(ids)))
    # SemanticKITTI's 19,130 training scans (ScaLR asserts the count): [::100] and [::10]
    assert len(fewshot_scans([f"{i:05d}" for i in range(19130)], 0.01)) == 192
    assert len(fewshot_scans([f"{i:05d}" for i in range(19130)], 0.1)) == 1913
    with pytest.raises(InputError, match="fraction must be"):
        fewshot_scans(ids, 0)


def test_dataset_selection_reports_scans_and_sequences(handmade):
    root, _ = handmade
    frames, chosen = SemanticKitti(root, "train").selection(0.5)  # [::2] of 00/0, 00/1, 00/2, 10/0, 10/1
    assert chosen["frames"] == ["00/000000", "00/000002", "10/000001"] and frames == [0, 2, 4]
    assert (chosen["frame_count"], chosen["split_frames"], chosen["scene_count"], chosen["split_scenes"]) == (3, 5, 2, 2)


@pytest.fixture(scope="module")
def kitti_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("kitti") / "world"
    return generate_kitti(root, KittiSynthConfig(seed=3, sequences=2, scans_per_sequence=2))


def test_synthetic_world_loads_with_all_19_classes(kitti_world, tmp_path):
    assert detect_format(kitti_world) == "semantickitti"
    seen = set()
    for split in ("train", "val"):
        data = SemanticKitti(kitti_world, split)
        assert data.scenes == (["00"] if split == "train" else ["08"]) and len(data) == 2
        for i in range(len(data)):
            points, labels, _ = data.lidar(i)
            assert len(points) > 50_000 and np.all((points[:, 3] >= 0) & (points[:, 3] <= 1))
            assert np.abs(np.hypot(points[:, 0], points[:, 1])).max() < 120
            seen |= set(labels.tolist())
        poses, calib = data.poses(data.scenes[0]), data.calib(data.scenes[0])
        assert poses.shape == (2, 4, 4) and set(calib) == {"P0", "P1", "P2", "P3", "Tr"}
        moved = velodyne_poses(poses, calib)[:, :3, 3]
        np.testing.assert_allclose(moved[0], 0, atol=1e-9)
        assert 7.5 < moved[1, 0] < 8.5  # 8 m/s for 1 s, forward (x) in the velodyne frame
    assert [KITTI_CLASSES[c] for c in sorted(seen - {0})] == list(KITTI_CLASSES[1:])
    again = generate_kitti(tmp_path / "again", KittiSynthConfig(seed=3, sequences=2, scans_per_sequence=2))
    for sub in ("velodyne/000001.bin", "labels/000001.label", "poses.txt"):
        assert (again / "sequences/08" / sub).read_bytes() == (kitti_world / "sequences/08" / sub).read_bytes()
    np.testing.assert_array_equal(read_scan(again / "sequences/00/velodyne/000000.bin"),
                                  read_scan(kitti_world / "sequences/00/velodyne/000000.bin"))


def test_synth_kitti_command_refuses_non_positive_counts(tmp_path):
    runner = CliRunner()
    for option in ("--sequences", "--scans-per-sequence"):
        for value in ("0", "-2"):
            result = runner.invoke(app, ["synth-kitti", "--out", str(tmp_path / "w"), option, value])
            assert result.exit_code == 2 and f"{option} must be at least 1, got {value}" in result.output
    assert not (tmp_path / "w").exists()
    result = runner.invoke(app, ["synth-kitti", "--out", str(tmp_path / "w"), "--sequences", "12"])
    assert result.exit_code == 2 and "at most 11" in result.output


def test_miou_over_the_19_classes_equals_a_direct_confusion_matrix():
    rng = np.random.default_rng(5)
    target = rng.integers(0, 20, 600)
    target[target == 5] = 9  # other-vehicle absent from the ground truth ...
    target[target == 12] = 0  # ... and other-ground too
    pred = np.where(rng.random(600) < 0.6, target, rng.integers(1, 20, 600))
    pred[target == 0] = rng.integers(1, 20, (target == 0).sum())  # predictions on ignored points don't count
    pred[pred == 12] = 13  # other-ground: absent and never predicted; other-vehicle: absent but predicted
    assert (pred[target > 0] == 5).any()
    cm = confusion_matrix(pred, target, num_classes=20)
    classes = classes_with_ground_truth(cm)
    assert 5 not in classes and 12 not in classes and 0 not in classes and len(classes) == 17
    labelled = target > 0
    p, t = pred[labelled], target[labelled]
    direct = [np.sum((p == c) & (t == c)) / np.sum((p == c) | (t == c)) for c in range(1, 20) if (t == c).any()]
    assert mean_iou_over(cm, classes) == pytest.approx(np.mean(direct), rel=1e-12)  # float64 means of 17 terms


def test_a_linear_probe_runs_on_the_kitti_world_with_a_19_class_head(kitti_world):
    """Few-shot on the SemanticKITTI format: the probe's head has KITTI's 19 outputs, the scores are
    over its classes (the fixed list of those with ground truth in the val scans), the labelled scans
    follow the field's every-k-th-scan rule, and one sequence gives no interval (the reason instead)."""
    import torch

    from relviz.eval.fewshot import evaluate_fewshot
    from relviz.models import build_minkunet
    from relviz.segmentation import classes_with_ground_truth, mean_iou_over

    torch.manual_seed(0)
    model = build_minkunet("MinkUNet14", out_channels=16, width=0.125, backend="torch")
    train, val = SemanticKitti(kitti_world, "train"), SemanticKitti(kitti_world, "val")
    result = evaluate_fewshot(model, train, val, fraction=1.0, epochs=5, max_per_class=200)
    cm = np.asarray(result["confusion"])
    assert cm.shape == (20, 20) and len(result["iou"]) == 19 and set(result["iou"]) == set(KITTI_CLASSES[1:])
    listed = classes_with_ground_truth(cm)
    assert result["miou"] == pytest.approx(mean_iou_over(cm, listed)) and result["classes"] == [KITTI_CLASSES[c] for c in listed]
    assert result["frame_count"] == len(train) and result["miou_interval"] is None
    assert result["interval_refused"].startswith("1 scene")
