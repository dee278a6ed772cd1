"""One pipeline for real and synthetic nuScenes: keyframes of a split -> points, labels, images,
point-pixel pairs and voxels, and a collate that batches them with correct offsets."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from relviz.data.augment import drop_cuboid
from relviz.data.classes import merge_labels
from relviz.data.geometry import lidar_to_camera_matrix, project_to_image, transform_points
from relviz.data.index import build_index, load_index
from relviz.data.nuscenes import DatasetError, open_nuscenes, read_labels, read_points
from relviz.data.nuscenes import CAMERAS
from relviz.data.voxel import voxelize


@dataclass(frozen=True)
class PairConfig:
    min_depth: float = 1.0
    margin: float = 1.0  # pixels kept strictly inside (margin, size - margin): 1 = devkit, 0 = SLidR


class LidarFrames(torch.utils.data.Dataset):
    """What every lidar-segmentation dataset of relviz shares (nuScenes, SemanticKITTI): ``keyframes``
    (each with its ``scene``: a nuScenes scene, a KITTI sequence), a voxelization that each student
    can have its own of, and the scene of a frame (the unit of evaluation uncertainty)."""

    keyframes: list[dict]
    voxel_size: float
    cylindrical: bool

    def voxelized(self, voxel_size: float, cylindrical: bool):
        """This dataset with another voxelization (a shallow copy sharing the index): each student is
        evaluated with the voxelization it was trained with."""
        if (voxel_size, cylindrical) == (self.voxel_size, self.cylindrical):
            return self
        other = copy.copy(self)
        other.voxel_size, other.cylindrical = voxel_size, cylindrical
        return other

    def scene_of(self, index: int) -> str:
        return self.keyframes[index]["scene"]


class NuScenesLidarSeg(LidarFrames):
    """Keyframes of a split of a nuScenes-format dataset.

    Each item is a dict with
    ``points`` float32 [N, 4] (x, y, z, intensity; lidar frame), ``labels`` int64 [N] merged classes
    (0..16; None without lidarseg), ``images`` uint8 [6, H, W, 3] (if ``load_images``),
    ``pair_points`` int64 [M] point indices, ``pair_cameras`` int64 [M] camera index (order of
    ``CAMERAS``), ``pair_pixels`` float32 [M, 2] (u = column, v = row), ``voxels`` int32 [V, 3],
    ``voxel_features`` float32 [V, 1] (intensity of the voxel's first point), ``inverse`` int64 [N],
    and the tokens ``sample_token``, ``lidar_token``, ``camera_tokens``.
    """

    def __init__(self, dataroot: str | Path | None, version: str = "v1.0-mini", split="mini_train",
                 voxel_size: float = 0.1, cylindrical: bool = True, load_images: bool = True,
                 pairs: PairConfig = PairConfig(), augment: bool = False, seed: int = 0, nusc=None,
                 index_cache: str | Path | None = None, drop_cuboids: bool = False):
        """``nusc``: an open devkit ``NuScenes`` to share (``dataroot`` and ``version`` are then
        taken from it); ``index_cache``: a folder where the keyframe index is cached, so that later
        opens skip the devkit (see :mod:`relviz.data.index`); ``drop_cuboids``: with ``augment``,
        also drop one random box of points (:func:`relviz.data.augment.drop_cuboid`)."""
        self._nusc = nusc
        if nusc is not None:
            dataroot, version = nusc.dataroot, nusc.version
            index = build_index(nusc, split)
        elif index_cache is not None:
            index = load_index(dataroot, version, split, index_cache)
        else:
            self._nusc = open_nuscenes(dataroot, version)
            index = build_index(self._nusc, split)
        self.dataroot, self.version = Path(dataroot), version
        self.scenes: list[str] = index["scenes"]
        self.keyframes: list[dict] = index["keyframes"]
        self.sample_tokens: list[str] = [k["sample_token"] for k in self.keyframes]
        self._keyframe_of = {k["sample_token"]: k for k in self.keyframes}
        self._camera_records = {c["token"]: c for k in self.keyframes for c in k["cameras"].values()}
        self.voxel_size, self.cylindrical = voxel_size, cylindrical
        self.load_images, self.pairs, self.augment, self.drop_cuboids = load_images, pairs, augment, drop_cuboids
        self.seed, self.epoch = seed, 0
        self.has_lidarseg = bool(index["has_lidarseg"])

    @property
    def nusc(self):
        """The devkit ``NuScenes`` of this dataroot, opened on first use (a cached index does not need it)."""
        if self._nusc is None:
            self._nusc = open_nuscenes(self.dataroot, self.version)
        return self._nusc

    def __len__(self) -> int:
        return len(self.sample_tokens)

    def set_epoch(self, epoch: int) -> None:
        """Augmentations are drawn from (seed, epoch, index): reproducible and different per epoch."""
        self.epoch = epoch

    def camera_record(self, token: str) -> dict:
        """A camera sample_data of this split (``filename``, ``width``, ``height``, calibration, pose)."""
        return self._camera_records[token]

    def lidar(self, index: int) -> tuple[np.ndarray, np.ndarray | None, dict]:
        """Points float32 [N, 5], merged labels int64 [N] (or None) and the lidar record."""
        keyframe = self.keyframes[index]
        lidar = keyframe["lidar"]
        points = read_points(self.dataroot / lidar["filename"])
        labels = None
        if self.has_lidarseg:
            if keyframe["lidarseg"] is None:
                raise DatasetError(f"{self.dataroot}: keyframe {keyframe['sample_token']} has no lidarseg record")
            labels = merge_labels(read_labels(self.dataroot / keyframe["lidarseg"], len(points))).astype(np.int64)
        return points, labels, lidar

    def camera_pairs(self, points_xyz: np.ndarray, lidar: dict, channel: str) -> tuple[np.ndarray, np.ndarray, dict]:
        """(kept point indices [M], pixels [M, 2], camera record) for one camera."""
        cam = self._keyframe_of[lidar["sample_token"]]["cameras"][channel]
        m = lidar_to_camera_matrix(lidar["calibrated_sensor"], lidar["ego_pose"], cam["ego_pose"],
                                   cam["calibrated_sensor"])
        idx, uv = project_to_image(transform_points(m, points_xyz),
                                   np.asarray(cam["calibrated_sensor"]["camera_intrinsic"]),
                                   cam["width"], cam["height"], self.pairs.min_depth, self.pairs.margin)
        return idx, uv, cam

    def __getitem__(self, index: int) -> dict:
        points, labels, lidar = self.lidar(index)
        xyz = points[:, :3].astype(np.float64)
        pair_points, pair_cameras, pair_pixels, images, cam_tokens = [], [], [], [], []
        for ci, channel in enumerate(CAMERAS):
            idx, uv, cam = self.camera_pairs(xyz, lidar, channel)
            pair_points.append(idx)
            pair_cameras.append(np.full(len(idx), ci))
            pair_pixels.append(uv.astype(np.float32))
            cam_tokens.append(cam["token"])
            if self.load_images:
                images.append(np.asarray(Image.open(self.dataroot / cam["filename"]).convert("RGB")))
        pair_points, pair_cameras = np.concatenate(pair_points).astype(np.int64), np.concatenate(pair_cameras)
        pair_pixels = np.concatenate(pair_pixels)
        if self.augment and self.drop_cuboids:  # before the rotation: the box is drawn in the sensor's frame
            keep = drop_cuboid(np.random.default_rng([self.seed, self.epoch, index, 1]), xyz, pair_points,
                               pair_cameras, len(CAMERAS))
            kept_pairs = keep[pair_points]
            pair_points = (np.cumsum(keep) - 1)[pair_points[kept_pairs]]  # renumbered among the kept points
            pair_cameras, pair_pixels = pair_cameras[kept_pairs], pair_pixels[kept_pairs]
            xyz, points = xyz[keep], points[keep]
            labels = None if labels is None else labels[keep]
        if self.augment:
            xyz = self._augment(xyz, index)
        voxels, first, inverse = voxelize(xyz, self.voxel_size, self.cylindrical)
        item = {
            "sample_token": lidar["sample_token"], "lidar_token": lidar["token"], "camera_tokens": cam_tokens,
            "points": np.concatenate([xyz, points[:, 3:4]], 1).astype(np.float32),
            "labels": labels,
            "pair_points": pair_points, "pair_cameras": pair_cameras.astype(np.int64), "pair_pixels": pair_pixels,
            "voxels": voxels, "voxel_features": points[first, 3:4].astype(np.float32), "inverse": inverse,
        }
        if self.load_images:
            item["images"] = np.stack(images)
        return item

    def _augment(self, xyz: np.ndarray, index: int) -> np.ndarray:
        """Random rotation about z and random flips of x and y (pairs stay as projected before)."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        angle = rng.uniform(0, 2 * np.pi)
        c, s = np.cos(angle), np.sin(angle)
        out = xyz @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]).T
        flips = np.where(rng.random(2) < 0.5, -1.0, 1.0)
        out[:, 0] *= flips[0]
        out[:, 1] *= flips[1]
        return out


def collate(items: list[dict]) -> dict:
    """Batch items: voxel coordinates get a batch column, indices are offset per item.

    Returns ``coordinates`` int32 [sum V, 4] (batch, c0, c1, c2), ``features`` float32 [sum V, 1],
    ``inverse`` int64 [sum N] (into the batched voxels), ``points`` [sum N, 4], ``labels``
    [sum N] (if all items have them), ``batch_points`` int64 [sum N], ``pair_points`` int64 [sum M]
    (into the batched points), ``pair_images`` int64 [sum M] (item * 6 + camera, into ``images``),
    ``pair_pixels`` [sum M, 2], ``images`` uint8 [B * 6, H, W, 3] when loaded, and token lists.
    """
    coords, feats, inverse, points, labels, batch_points = [], [], [], [], [], []
    pair_points, pair_images, pair_pixels = [], [], []
    voxel_offset = point_offset = 0
    for b, it in enumerate(items):
        v, n = len(it["voxels"]), len(it["points"])
        coords.append(np.concatenate([np.full((v, 1), b, dtype=np.int32), it["voxels"]], 1))
        feats.append(it["voxel_features"])
        inverse.append(it["inverse"] + voxel_offset)
        points.append(it["points"])
        labels.append(it["labels"])
        batch_points.append(np.full(n, b, dtype=np.int64))
        pair_points.append(it["pair_points"] + point_offset)
        pair_images.append(it["pair_cameras"] + b * len(CAMERAS))
        pair_pixels.append(it["pair_pixels"])
        voxel_offset += v
        point_offset += n
    batch = {
        "coordinates": torch.from_numpy(np.concatenate(coords)),
        "features": torch.from_numpy(np.concatenate(feats)),
        "inverse": torch.from_numpy(np.concatenate(inverse)),
        "points": torch.from_numpy(np.concatenate(points)),
        "batch_points": torch.from_numpy(np.concatenate(batch_points)),
        "pair_points": torch.from_numpy(np.concatenate(pair_points)),
        "pair_images": torch.from_numpy(np.concatenate(pair_images)),
        "pair_pixels": torch.from_numpy(np.concatenate(pair_pixels)),
        "sample_tokens": [it["sample_token"] for it in items],
        "lidar_tokens": [it["lidar_token"] for it in items],
        "camera_tokens": [t for it in items for t in it["camera_tokens"]],
    }
    if all(lab is not None for lab in labels):
        batch["labels"] = torch.from_numpy(np.concatenate(labels))
    if all("images" in it for it in items):
        batch["images"] = torch.from_numpy(np.concatenate([it["images"] for it in items]))
    return batch
