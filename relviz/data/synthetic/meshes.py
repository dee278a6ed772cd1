"""The triangle meshes of the street's things, built with open3d (legacy meshes, road frame)."""

from __future__ import annotations

import math

import numpy as np


def o3d():
    """open3d, imported on first use: its import takes about a second and only generation needs it
    (importing relviz.data imports this package for SynthConfig)."""
    import open3d

    return open3d


def rot_z(yaw: float) -> np.ndarray:
    """Rotation [3, 3] by ``yaw`` radians about z."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def box(w: float, l: float, h: float, cx: float, cy: float, z0: float, yaw: float):
    """A box of width w (across), length l (along the heading), height h, base at z0."""
    m = o3d().geometry.TriangleMesh.create_box(l, w, h)
    m.translate((-l / 2, -w / 2, 0.0))
    m.rotate(rot_z(yaw), center=(0, 0, 0))
    m.translate((cx, cy, z0))
    return m


def cylinder(r: float, h: float, cx: float, cy: float, z0: float, resolution: int = 12):
    """An upright cylinder of radius r and height h, base at z0."""
    m = o3d().geometry.TriangleMesh.create_cylinder(r, h, resolution=resolution)
    m.translate((cx, cy, z0 + h / 2))
    return m


def sphere(r: float, cx: float, cy: float, cz: float):
    m = o3d().geometry.TriangleMesh.create_sphere(r, resolution=8)
    m.translate((cx, cy, cz))
    return m


def cone(r: float, h: float, cx: float, cy: float, z0: float):
    """An upright cone of base radius r and height h, base at z0."""
    m = o3d().geometry.TriangleMesh.create_cone(r, h, resolution=12)
    m.translate((cx, cy, z0))
    return m


def _wheel(r: float, width: float, yaw: float, cx: float, cy: float, resolution: int):
    """A wheel of radius r standing on the ground, its axle across the heading ``yaw``."""
    m = o3d().geometry.TriangleMesh.create_cylinder(r, width, resolution=resolution)
    m.rotate(rot_z(yaw) @ np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]]), center=(0, 0, 0))
    m.translate((cx, cy, r))
    return m


def vehicle_parts(fine: str, x: float, y: float, yaw: float, size: tuple[float, float, float]) -> list:
    """Meshes of a vehicle of fine class ``fine`` centred at (x, y) heading ``yaw``; size (w, l, h)."""
    w, l, h = size
    fx, fy = math.cos(yaw), math.sin(yaw)
    parts = []
    if fine == "vehicle.car":
        parts.append(box(w, l, h * 0.55, x, y, 0.25, yaw))
        parts.append(box(w * 0.85, l * 0.5, h * 0.45, x - 0.1 * l * fx, y - 0.1 * l * fy, 0.25 + h * 0.55 - 0.25, yaw))
    elif fine in ("vehicle.truck", "vehicle.construction"):
        cab = l * 0.25
        parts.append(box(w, cab, h * 0.8, x + fx * (l - cab) / 2, y + fy * (l - cab) / 2, 0.3, yaw))
        parts.append(box(w, l - cab - 0.2, h * (0.95 if fine == "vehicle.truck" else 0.6),
                         x - fx * (cab + 0.2) / 2, y - fy * (cab + 0.2) / 2, 0.3, yaw))
        if fine == "vehicle.construction":  # an arm
            parts.append(box(0.5, l * 0.6, 0.4, x - fx * l * 0.1, y - fy * l * 0.1, h * 0.85, yaw + 0.3))
    elif fine == "vehicle.trailer":
        parts.append(box(w, l, h - 1.0, x, y, 1.0, yaw))
        for s in (-0.3, 0.3):
            parts.append(box(w * 0.9, 0.3, 1.0, x + s * l * fx, y + s * l * fy, 0.0, yaw))
    elif fine in ("vehicle.bicycle", "vehicle.motorcycle"):
        bicycle = fine == "vehicle.bicycle"
        r = 0.33 if bicycle else 0.32
        for s in (-0.35, 0.35):
            parts.append(_wheel(r, 0.08 if bicycle else 0.14, yaw, x + s * l * fx, y + s * l * fy, 12))
        parts.append(box(w * (0.3 if bicycle else 0.7), l * 0.7, h * (0.35 if bicycle else 0.5), x, y, h * 0.4, yaw))
    else:  # buses
        parts.append(box(w, l, h - 0.3, x, y, 0.3, yaw))
    if fine not in ("vehicle.bicycle", "vehicle.motorcycle"):
        sx, sy = -math.sin(yaw), math.cos(yaw)
        for a in (-0.33, 0.33):
            for b in (-0.5, 0.5):
                parts.append(_wheel(0.35, 0.25, yaw, x + a * l * fx + b * w * sx, y + a * l * fy + b * w * sy, 10))
    return parts
