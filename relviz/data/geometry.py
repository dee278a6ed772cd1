"""Rigid transforms and the nuScenes lidar-to-camera projection chain.

A point cloud goes lidar -> ego (lidar time) -> global -> ego (camera time) -> camera -> pixels,
exactly as nuscenes-devkit's ``NuScenesExplorer.map_pointcloud_to_image`` does, but returning the
indices of the kept points so that point-pixel pairs can be formed.
"""

from __future__ import annotations

import numpy as np
from pyquaternion import Quaternion


def pose_matrix(translation, rotation) -> np.ndarray:
    """4x4 matrix of a nuScenes pose (translation [3], quaternion w, x, y, z); float64."""
    m = np.eye(4)
    m[:3, :3] = Quaternion(rotation).rotation_matrix
    m[:3, 3] = translation
    return m


def yaw_quaternion(yaw: float) -> list[float]:
    """Quaternion (w, x, y, z) of a rotation by ``yaw`` radians about +z."""
    return list(Quaternion(axis=[0.0, 0.0, 1.0], angle=yaw).elements)


def transform_points(m: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to points [N, 3]."""
    return xyz @ m[:3, :3].T + m[:3, 3]


def lidar_to_camera_matrix(lidar_calib: dict, lidar_pose: dict, cam_pose: dict, cam_calib: dict) -> np.ndarray:
    """4x4 transform from the lidar frame (at lidar time) to the camera frame (at camera time)."""
    lidar_to_ego = pose_matrix(lidar_calib["translation"], lidar_calib["rotation"])
    ego_to_global = pose_matrix(lidar_pose["translation"], lidar_pose["rotation"])
    global_to_ego_cam = np.linalg.inv(pose_matrix(cam_pose["translation"], cam_pose["rotation"]))
    ego_to_cam = np.linalg.inv(pose_matrix(cam_calib["translation"], cam_calib["rotation"]))
    return ego_to_cam @ global_to_ego_cam @ ego_to_global @ lidar_to_ego


def project_to_image(points_cam: np.ndarray, intrinsic: np.ndarray, width: int, height: int,
                     min_depth: float = 1.0, margin: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of camera-frame points [N, 3] that lie in front and inside the image.

    Keeps depth > ``min_depth`` and ``margin < u < width - margin``, ``margin < v < height - margin``
    (``margin=1`` is the devkit's rule, 0 is SLidR's). Returns (kept indices [M], pixels [M, 2] as
    float (u = column, v = row)).
    """
    depth = points_cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = points_cam[:, :2] / depth[:, None]
    uv = uv @ np.asarray(intrinsic)[:2, :2].T + np.asarray(intrinsic)[:2, 2]
    keep = ((depth > min_depth) & (uv[:, 0] > margin) & (uv[:, 0] < width - margin)
            & (uv[:, 1] > margin) & (uv[:, 1] < height - margin))
    idx = np.nonzero(keep)[0]
    return idx, uv[idx]
