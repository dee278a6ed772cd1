"""Voxelization of lidar points: cylindrical (SLidR's default: 0.1 m radius and height, 1 degree
azimuth) or cartesian, floored as MinkowskiEngine's ``sparse_quantize`` does."""

from __future__ import annotations

import numpy as np

from relviz.errors import InputError


def voxel_coordinates(xyz: np.ndarray, voxel_size: float = 0.1, cylindrical: bool = True) -> np.ndarray:
    """Integer voxel coordinates [N, 3] of points [N, 3] (one per point, duplicates kept)."""
    if voxel_size <= 0:
        raise InputError(f"voxel_size must be > 0, got {voxel_size}")
    xyz = np.asarray(xyz, dtype=np.float64)
    if cylindrical:
        rho = np.hypot(xyz[:, 0], xyz[:, 1]) / voxel_size
        phi = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0]))  # 1-degree bins
        scaled = np.stack([rho, phi, xyz[:, 2] / voxel_size], axis=1)
    else:
        scaled = xyz / voxel_size
    return np.floor(scaled).astype(np.int32)


def voxelize(xyz: np.ndarray, voxel_size: float = 0.1, cylindrical: bool = True
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unique voxel coordinates [V, 3] int32, index of the first point of each voxel [V],
    inverse index [N] mapping every point to its voxel)."""
    coords = voxel_coordinates(xyz, voxel_size, cylindrical)
    if len(coords) == 0:
        return coords, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    shifted = coords.astype(np.int64) - coords.min(axis=0)
    dims = shifted.max(axis=0) + 1
    keys = (shifted[:, 0] * dims[1] + shifted[:, 1]) * dims[2] + shifted[:, 2]
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return coords[first], first.astype(np.int64), inverse.astype(np.int64)
