"""Opening a nuScenes-format dataroot (real or synthetic) through nuscenes-devkit, with checks.

Every problem is reported with the file or field at fault and what was expected: a missing table,
an unknown version or split, a lidarseg file count that does not match its records, and, when a
sample is read, a missing or truncated point file or a label file whose length differs from the
number of points.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from relviz.data.classes import FINE_CLASSES
from relviz.errors import RelvizError, shorten

# The nuScenes format: the camera channels (in relviz's camera order) and the table files of a version.
CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT")
TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
          "scene", "sample", "sample_data", "sample_annotation", "map")
VERSIONS = ("v1.0-mini", "v1.0-trainval", "v1.0-test")
SPLITS = ("train", "val", "test", "mini_train", "mini_val")


class DatasetError(RelvizError):
    """A nuScenes-format dataset that cannot be used as it is; the message names the file or field."""


def check_dataroot(dataroot: str | Path, version: str) -> Path:
    """Validate the folder layout before the devkit reads it."""
    root = Path(dataroot)
    if version not in VERSIONS:
        raise DatasetError(f"unknown nuScenes version {version!r}; expected one of {', '.join(VERSIONS)}")
    if not root.is_dir():
        raise DatasetError(f"dataroot {root} does not exist or is not a directory")
    table_dir = root / version
    if not table_dir.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("v1.0-"))
        raise DatasetError(f"{table_dir} is missing: no '{version}' tables in {root}"
                           + (f" (found: {', '.join(found)})" if found else ""))
    missing = [f"{t}.json" for t in TABLES if not (table_dir / f"{t}.json").is_file()]
    if missing:
        raise DatasetError(f"{table_dir}: missing table file(s) {', '.join(missing)}; a nuScenes version folder "
                           f"needs all of {', '.join(t + '.json' for t in TABLES)}")
    lidarseg_json = table_dir / "lidarseg.json"
    if lidarseg_json.is_file():
        import json

        records = json.loads(lidarseg_json.read_text())
        label_dir = root / "lidarseg" / version
        files = list(label_dir.glob("*.bin")) if label_dir.is_dir() else []
        if len(files) != len(records):
            raise DatasetError(f"{label_dir}: {len(files)} label files but {len(records)} records in "
                               f"{lidarseg_json}; they must match one to one")
    return root


def open_nuscenes(dataroot: str | Path, version: str = "v1.0-mini"):
    """A ``nuscenes.nuscenes.NuScenes`` over ``dataroot`` after :func:`check_dataroot`."""
    from nuscenes.nuscenes import NuScenes

    root = check_dataroot(dataroot, version)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the devkit prints its table stats
            return NuScenes(version=version, dataroot=str(root), verbose=False)
    except (AssertionError, KeyError, IndexError, FileNotFoundError, ValueError) as e:
        raise DatasetError(f"nuscenes-devkit cannot load {root} ({version}): {_broken_table(root / version)}"
                           f"{type(e).__name__}: {shorten(str(e), 200)}") from e


def _broken_table(table_dir: Path) -> str:
    """'<file> is not valid JSON; ' for the first table that does not parse, else '' (only called
    after the devkit failed: parsing every table up front would double the opening time)."""
    import json

    for name in TABLES:
        path = table_dir / f"{name}.json"
        try:
            json.loads(path.read_bytes())
        except (OSError, ValueError):
            return f"{path} is not valid JSON; "
    return ""


def split_scenes(nusc, split: str | list[str] | tuple[str, ...]) -> list[str]:
    """Scene names of a split ('train', 'val', 'mini_train', 'mini_val', ...) or an explicit list,
    restricted to the scenes this dataset has; an error when none of them is present."""
    from nuscenes.utils.splits import create_splits_scenes

    available = {s["name"] for s in nusc.scene}
    if isinstance(split, str):
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)} or a list of scene names")
        if split.startswith("mini") != nusc.version.endswith("mini") and split != "test":
            raise DatasetError(f"split {split!r} does not belong to version {nusc.version} "
                               f"(mini_* splits go with v1.0-mini, train/val with v1.0-trainval)")
        names = create_splits_scenes()[split]
    else:
        names = list(split)
        unknown = [n for n in names if n not in available]
        if unknown:
            raise DatasetError(f"scene(s) {', '.join(unknown[:5])} are not in {nusc.dataroot} ({nusc.version})")
    present = [n for n in names if n in available]
    if not present:
        raise DatasetError(f"none of the {len(names)} scenes of split {split!r} is in {nusc.dataroot}")
    return present


def read_points(path: Path) -> np.ndarray:
    """A ``.pcd.bin`` lidar file as float32 [N, 5] (x, y, z, intensity, ring)."""
    if not path.is_file():
        raise DatasetError(f"lidar file {path} is missing")
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size % 5:
        raise DatasetError(f"lidar file {path} is truncated: {raw.size * 4} bytes is not a whole number of "
                           f"points (5 float32 = 20 bytes each)")
    return raw.reshape(-1, 5)


def read_labels(path: Path, num_points: int) -> np.ndarray:
    """A lidarseg ``.bin`` file as uint8 fine labels [N]; its length must equal the point count."""
    if not path.is_file():
        raise DatasetError(f"lidarseg file {path} is missing")
    labels = np.fromfile(path, dtype=np.uint8)
    if labels.size != num_points:
        raise DatasetError(f"lidarseg file {path} has {labels.size} labels but its point cloud has {num_points} "
                           f"points")
    if labels.size and labels.max() >= len(FINE_CLASSES):
        raise DatasetError(f"lidarseg file {path} has label {int(labels.max())}; nuScenes-lidarseg labels are "
                           f"0..{len(FINE_CLASSES) - 1}")
    return labels
