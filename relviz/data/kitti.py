"""SemanticKITTI-layout lidar segmentation: the file readers, the format check of a folder, the field's
few-shot scan selection and :class:`SemanticKitti`, a dataset with the interface relviz's few-shot code
reads from :class:`~relviz.data.dataset.NuScenesLidarSeg` (a "scene" is a sequence).

The layout (``root`` or ``root/dataset`` holds ``sequences``)::

    sequences/08/velodyne/000123.bin   float32 [N, 4]: x, y, z (metres, sensor frame: x forward, y left,
                                       z up), reflectance in [0, 1]
    sequences/08/labels/000123.label   uint32 [N]: semantic id (low 16 bits) | instance id << 16
    sequences/08/calib.txt             optional: "P0: 12 numbers" ... "Tr: 12 numbers" (3 x 4 each)
    sequences/08/poses.txt             optional: one 3 x 4 pose (12 numbers) per scan, camera 0 frame

Few-shot selection (:func:`fewshot_scans`), as SLidR's ``downstream/dataloader_kitti.py`` and ScaLR's
``datasets/semantic_kitti_for_scalr.py`` do it: every scan path of the training sequences, sorted,
then every k-th from the first (``[::k]``; k = 100 for 1%, 10 for 10%). Scans, not sequences: every
training sequence contributes. A fraction that is not 1/k takes scan i (0-based) when
``floor(i f) > floor((i - 1) f)``, which is ``[::k]`` for f = 1/k.
"""

from __future__ import annotations

from fractions import Fraction
from numbers import Real
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from relviz.data.dataset import LidarFrames, NuScenesLidarSeg
from relviz.data.kitti_classes import KITTI_CLASSES, NUM_KITTI_CLASSES, learning_classes, split_sequences
from relviz.data.voxel import voxelize
from relviz.errors import InputError

FORMATS = ("auto", "nuscenes", "semantickitti")
FRAME_RULE = "slidr-kitti-scan-skip/1"  # the selection rule above, stored with every result


# --- files -------------------------------------------------------------------------------------------

def read_scan(path: str | Path) -> np.ndarray:
    """A ``.bin`` scan: float32 [N, 4] (x, y, z, reflectance). A size that is not a whole number of
    16-byte points (a truncated file) is refused, naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"scan file {path} does not exist")
    size = path.stat().st_size
    if size % 16:
        raise InputError(f"{path}: {size} bytes is not a whole number of points (16 bytes each: float32 x, y, z, "
                         f"reflectance); the file is truncated or not a SemanticKITTI scan")
    return np.fromfile(path, dtype=np.float32).reshape(-1, 4)


def read_label(path: str | Path, n_points: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``.label`` file of a scan of ``n_points`` points: (raw semantic ids int64 [N], instance ids
    int64 [N]). A length other than one uint32 per point is refused, naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"label file {path} does not exist (its scan has {n_points} points)")
    size = path.stat().st_size
    if size != 4 * n_points:
        raise InputError(f"{path}: {size} bytes, expected {4 * n_points} (one uint32 per point of its scan's "
                         f"{n_points} points)")
    raw = np.fromfile(path, dtype=np.uint32)
    return (raw & 0xFFFF).astype(np.int64), (raw >> 16).astype(np.int64)


def read_classes(path: str | Path, n_points: int) -> np.ndarray:
    """A ``.label`` file as learning classes int64 [N] in 0..19 (0 = ignore), via the learning map;
    an id outside it is refused, naming the file."""
    semantic, _ = read_label(path, n_points)
    return learning_classes(semantic, str(path))


def read_calib(path: str | Path) -> dict[str, np.ndarray]:
    """``calib.txt``: key -> matrix [3, 4] (P0..P3: camera projections; Tr: velodyne -> camera 0)."""
    out = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        key, _, values = line.partition(":")
        try:
            numbers = np.array([float(v) for v in values.split()])
        except ValueError:
            raise InputError(f"{path}, line {n}: expected 'KEY: 12 numbers', got {line[:60]!r}") from None
        if len(numbers) != 12:
            raise InputError(f"{path}, line {n}: {key.strip()} has {len(numbers)} numbers, expected 12 (a 3 x 4 matrix)")
        out[key.strip()] = numbers.reshape(3, 4)
    return out


def read_poses(path: str | Path) -> np.ndarray:
    """``poses.txt``: float64 [K, 4, 4], one pose per scan (camera 0 of scan k -> camera 0 of scan 0)."""
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            numbers = [float(v) for v in line.split()]
        except ValueError:
            raise InputError(f"{path}, line {n}: expected 12 numbers, got {line[:60]!r}") from None
        if len(numbers) != 12:
            raise InputError(f"{path}, line {n}: {len(numbers)} numbers, expected 12 (a 3 x 4 pose)")
        rows.append(np.vstack([np.reshape(numbers, (3, 4)), [0.0, 0.0, 0.0, 1.0]]))
    return np.array(rows).reshape(-1, 4, 4)


def velodyne_poses(poses: np.ndarray, calib: dict[str, np.ndarray]) -> np.ndarray:
    """Camera-0 poses [K, 4, 4] -> velodyne poses [K, 4, 4] (scan k's points -> scan 0's velodyne
    frame): Tr^-1 P_k Tr, with Tr the velodyne -> camera 0 matrix of ``calib``."""
    tr = np.vstack([calib["Tr"], [0.0, 0.0, 0.0, 1.0]])
    return np.linalg.inv(tr) @ poses @ tr


# --- layout ------------------------------------------------------------------------------------------

def sequences_folder(root: str | Path) -> Path | None:
    """The ``sequences`` folder of a SemanticKITTI-layout ``root`` (``root/sequences`` or the official
    archive's ``root/dataset/sequences``) holding at least one ``NN/velodyne``; None if there is none."""
    root = Path(root)
    for candidate in (root / "sequences", root / "dataset" / "sequences"):
        if candidate.is_dir() and any(candidate.glob("*/velodyne")):
            return candidate
    return None


def detect_format(root: str | Path) -> str:
    """``"semantickitti"`` or ``"nuscenes"``: which layout the folder ``root`` has (a ``sequences``
    folder with ``NN/velodyne`` sub-folders, or a ``v1.0-*`` folder with ``scene.json``)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder {root} does not exist")
    kitti = sequences_folder(root) is not None
    nuscenes = any(root.glob("v1.0-*/scene.json"))
    if kitti and nuscenes:
        raise InputError(f"{root} holds both a SemanticKITTI 'sequences' folder and nuScenes tables; name the "
                         f"format with --format nuscenes or --format semantickitti")
    if kitti:
        return "semantickitti"
    if nuscenes:
        return "nuscenes"
    raise InputError(f"{root} is neither SemanticKITTI-layout (sequences/NN/velodyne/*.bin, or dataset/sequences/...) "
                     f"nor nuScenes-layout (v1.0-*/scene.json)")


def resolve_format(root: str | Path, fmt: str = "auto") -> str:
    """``fmt`` checked against :data:`FORMATS`; ``"auto"`` becomes :func:`detect_format` of ``root``."""
    if fmt not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return detect_format(root) if fmt == "auto" else fmt


# --- few-shot selection ------------------------------------------------------------------------------

def _fraction(fraction) -> Fraction:
    if isinstance(fraction, bool) or not isinstance(fraction, Real) or not 0 < fraction <= 1:
        raise InputError(f"fraction must be a number in (0, 1] (0.01 = 1% of the scans), got {fraction!r}")
    return Fraction(fraction).limit_denominator(1_000_000)


def fewshot_scans(scan_ids: Sequence[str], fraction: float) -> list[int]:
    """Positions in ``scan_ids`` (e.g. "08/000123", one per scan of the training split) of the scans
    SLidR's and ScaLR's rule labels: the ids sorted (the order of their sorted file paths), then scan
    i of that order taken when ``floor(i f) > floor((i - 1) f)``, i.e. ``[::k]`` for f = 1/k. Returned
    in ``scan_ids``' order."""
    f = _fraction(fraction)
    p, q = f.numerator, f.denominator
    order = sorted(range(len(scan_ids)), key=lambda i: scan_ids[i])
    taken = {at for i, at in enumerate(order) if (i * p) // q > ((i - 1) * p) // q}
    return sorted(taken)


# --- dataset -----------------------------------------------------------------------------------------

class SemanticKitti(LidarFrames):
    """The scans of a split (or of listed sequences) of a SemanticKITTI-layout folder.

    Each item is a dict as :class:`~relviz.data.dataset.NuScenesLidarSeg`'s without cameras:
    ``points`` float32 [N, 4] (x, y, z, reflectance), ``labels`` int64 [N] learning classes 0..19
    (None without labels), ``voxels`` int32 [V, 3], ``voxel_features`` float32 [V, 1] (reflectance of
    the voxel's first point), ``inverse`` int64 [N], empty ``pair_points`` / ``pair_cameras`` [0] and
    ``pair_pixels`` [0, 2], ``sample_token`` = ``lidar_token`` = "08/000123" (sequence / scan), ``camera_tokens`` [].
    A "scene" is a sequence: :meth:`scene_of` gives its two-digit name.
    """

    classes = KITTI_CLASSES  # index 0 = ignore
    num_classes = NUM_KITTI_CLASSES  # 19 outputs for a head
    frame_rule = FRAME_RULE
    load_images = False

    def __init__(self, root: str | Path, split: str = "train", sequences: Sequence[str] | None = None,
                 voxel_size: float = 0.1, cylindrical: bool = True, augment: bool = False, seed: int = 0):
        """``split``: train (00-07, 09, 10), val (08), test (11-21) or trainval; ``sequences``: names
        that replace the split's. Sequences of the split missing from the folder are left out (listed
        in ``missing_sequences``); none present is an error."""
        folder = sequences_folder(root)
        if folder is None:
            raise InputError(f"{root} is not SemanticKITTI-layout: no sequences/NN/velodyne folder "
                             f"(nor dataset/sequences/NN/velodyne)")
        wanted = tuple(sequences) if sequences is not None else split_sequences(split)
        self.root, self.folder, self.split = Path(root), folder, split if sequences is None else "custom"
        self.scenes = [s for s in wanted if (folder / s / "velodyne").is_dir()]
        self.missing_sequences = [s for s in wanted if s not in self.scenes]
        if not self.scenes:
            raise InputError(f"{folder}: none of the sequences {', '.join(wanted)} has a velodyne folder")
        labelled = {s: (folder / s / "labels").is_dir() for s in self.scenes}
        if len(set(labelled.values())) > 1:
            bare = [s for s, has in labelled.items() if not has]
            raise InputError(f"{folder}: sequence(s) {', '.join(bare)} have no labels folder but the others do")
        self.has_lidarseg = all(labelled.values())
        self.keyframes: list[dict] = []
        for s in self.scenes:
            for scan in sorted((folder / s / "velodyne").glob("*.bin")):
                self.keyframes.append({"scene": s, "sample_token": f"{s}/{scan.stem}", "velodyne": scan,
                                       "label": folder / s / "labels" / f"{scan.stem}.label"})
        if not self.keyframes:
            raise InputError(f"{folder}: no .bin scan in the velodyne folders of {', '.join(self.scenes)}")
        self.sample_tokens = [k["sample_token"] for k in self.keyframes]
        self.voxel_size, self.cylindrical, self.augment, self.seed, self.epoch = voxel_size, cylindrical, augment, seed, 0

    def __len__(self) -> int:
        return len(self.keyframes)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


    def lidar(self, index: int) -> tuple[np.ndarray, np.ndarray | None, dict]:
        """Points float32 [N, 4], learning classes int64 [N] (or None) and the scan's record."""
        keyframe = self.keyframes[index]
        points = read_scan(keyframe["velodyne"])
        labels = read_classes(keyframe["label"], len(points)) if self.has_lidarseg else None
        return points, labels, keyframe

    def calib(self, sequence: str) -> dict[str, np.ndarray] | None:
        """The sequence's ``calib.txt`` (:func:`read_calib`), None if it has none."""
        path = self.folder / sequence / "calib.txt"
        return read_calib(path) if path.is_file() else None

    def poses(self, sequence: str) -> np.ndarray | None:
        """The sequence's ``poses.txt`` [K, 4, 4] (one per scan, checked), None if it has none."""
        path = self.folder / sequence / "poses.txt"
        if not path.is_file():
            return None
        poses = read_poses(path)
        n_scans = len(list((self.folder / sequence / "velodyne").glob("*.bin")))
        if len(poses) != n_scans:
            raise InputError(f"{path}: {len(poses)} poses for {n_scans} scans; expected one per scan")
        return poses

    def fewshot_frames(self, fraction: float) -> list[int]:
        """Indices of the scans :func:`fewshot_scans` labels at ``fraction`` (SLidR's and ScaLR's rule)."""
        return fewshot_scans(self.sample_tokens, fraction)

    def selection(self, fraction: float) -> tuple[list[int], dict]:
        """(scan indices, the JSON description relviz's few-shot results carry, with the keys of
        :func:`relviz.eval.fewshot.selection`): requested ``fraction``, ``frame_rule``, the sequences
        (``scenes``) and scans (``frames``) taken, their counts and shares of the split."""
        frames = self.fewshot_frames(fraction)
        chosen = sorted({self.scene_of(i) for i in frames})
        return frames, {"fraction": float(fraction), "frame_rule": self.frame_rule, "scenes": chosen,
                        "frames": [self.sample_tokens[i] for i in frames], "frame_count": len(frames),
                        "split_frames": len(self), "frame_fraction": len(frames) / len(self),
                        "scene_count": len(chosen), "split_scenes": len(self.scenes),
                        "scene_fraction": len(chosen) / len(self.scenes)}

    _augment = NuScenesLidarSeg._augment  # the same rotation about z and flips, drawn from (seed, epoch, index)

    def __getitem__(self, index: int) -> dict:
        points, labels, keyframe = self.lidar(index)
        xyz = points[:, :3].astype(np.float64)
        if self.augment:
            xyz = self._augment(xyz, index)
        voxels, first, inverse = voxelize(xyz, self.voxel_size, self.cylindrical)
        token = keyframe["sample_token"]
        return {"sample_token": token, "lidar_token": token, "camera_tokens": [],
                "points": np.concatenate([xyz, points[:, 3:4]], 1).astype(np.float32), "labels": labels,
                "pair_points": np.zeros(0, dtype=np.int64), "pair_cameras": np.zeros(0, dtype=np.int64),
                "pair_pixels": np.zeros((0, 2), dtype=np.float32),
                "voxels": voxels, "voxel_features": points[first, 3:4].astype(np.float32), "inverse": inverse}


def nuscenes_versions(root: str | Path) -> list[str]:
    """The nuScenes versions a folder holds (its ``v1.0-*`` folders with a ``scene.json``), sorted."""
    return sorted(p.parent.name for p in Path(root).glob("v1.0-*/scene.json"))


def default_splits(layout: str, version: str | None = None) -> tuple[str, str]:
    """(val, training) split a folder is read with when none is named: SemanticKITTI's 08 and 00-07, 09,
    10; nuScenes v1.0-mini's mini_val / mini_train, any other version's val / train."""
    if layout == "semantickitti":
        return "val", "train"
    return ("mini_val", "mini_train") if version in (None, "v1.0-mini") else ("val", "train")


def open_lidarseg(root: str | Path, split: str, fmt: str = "auto", version: str | None = None, **options):
    """A lidar-segmentation dataset of either layout: :class:`SemanticKitti` (``split`` train / val /
    test / trainval) or :class:`~relviz.data.dataset.NuScenesLidarSeg` (``version``: default the one
    ``v1.0-*`` folder of ``root``). ``fmt``: auto (:func:`detect_format`), nuscenes or semantickitti;
    ``options`` go to the dataset's constructor."""
    fmt = resolve_format(root, fmt)
    if fmt == "semantickitti":
        return SemanticKitti(root, split, **options)
    if version is None:
        versions = nuscenes_versions(root)
        if len(versions) != 1:
            raise InputError(f"{root}: name the nuScenes version (found {', '.join(versions) or 'none'})")
        version = versions[0]
    return NuScenesLidarSeg(root, version, split, **options)
