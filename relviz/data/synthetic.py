"""A deterministic synthetic dataset in the genuine nuScenes v1.0-mini layout, with lidarseg.

Ten procedural street scenes (named as the devkit's ``mini_train`` and ``mini_val`` scenes) in which
all 16 merged classes occur with nuScenes-like sizes. For every keyframe a 32-beam spinning lidar
and the 6 nuScenes cameras are ray cast against the scene with open3d's ``RaycastingScene``:

- lidar: float32 N x 5 (x, y, z, intensity, ring) ``.pcd.bin`` in the LIDAR_TOP frame, range noise
  and material-dependent intensity; lidarseg labels are the fine class of the surface hit;
- cameras: JPEGs shaded with class-specific procedural textures, each rendered from the ego pose
  at its own timestamp, plus a per-pixel fine-class PNG alongside (``<image>.class.png``; not part
  of the nuScenes tables) so that label/pixel agreement can be checked.

Everything is written into a temporary folder that is renamed into place at the end, so an
interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pyquaternion import Quaternion

from relviz.data.classes import FINE_CLASSES
from relviz.data.geometry import pose_matrix, transform_points, yaw_quaternion
from relviz.data.nuscenes import CAMERAS, TABLES
from relviz.errors import InputError, OutputExistsError

MINI_TRAIN = ("scene-0061", "scene-0553", "scene-0655", "scene-0757", "scene-0796", "scene-1077", "scene-1094",
              "scene-1100")
MINI_VAL = ("scene-0103", "scene-0916")

# nuScenes-like camera rigs: (yaw deg, translation in ego, focal length at 1600 px width)
_CAMERA_RIG = {
    "CAM_FRONT": (0.0, (1.70, 0.00, 1.51), 1266.0),
    "CAM_FRONT_RIGHT": (-55.0, (1.55, -0.49, 1.49), 1260.0),
    "CAM_BACK_RIGHT": (-110.0, (1.04, -0.48, 1.59), 1260.0),
    "CAM_BACK": (180.0, (0.03, 0.00, 1.58), 809.0),
    "CAM_BACK_LEFT": (110.0, (1.05, 0.48, 1.56), 1257.0),
    "CAM_FRONT_LEFT": (55.0, (1.52, 0.49, 1.51), 1272.0),
}
_LIDAR_TRANSLATION = (0.94, 0.0, 1.84)
_LIDAR_YAW = -math.pi / 2  # as nuScenes' LIDAR_TOP: x to the right of the car, y forward
_FINE = {name: i for i, name in enumerate(FINE_CLASSES)}

# Per fine class: base RGB (0..1), texture kind, lidar reflectivity (0..255 scale).
_MATERIALS = {
    "flat.driveable_surface": ((0.22, 0.22, 0.24), "asphalt", 12.0),
    "flat.other": ((0.80, 0.62, 0.25), "stripes", 30.0),
    "flat.sidewalk": ((0.72, 0.70, 0.66), "tiles", 25.0),
    "flat.terrain": ((0.45, 0.40, 0.22), "dirt", 20.0),
    "static.manmade": ((0.70, 0.60, 0.50), "windows", 35.0),
    "static.vegetation": ((0.12, 0.45, 0.12), "leaves", 28.0),
    "vehicle.car": ((0.70, 0.10, 0.10), "paint", 45.0),
    "vehicle.truck": ((0.92, 0.92, 0.88), "panels", 50.0),
    "vehicle.bus.rigid": ((0.95, 0.75, 0.05), "bus", 45.0),
    "vehicle.trailer": ((0.55, 0.58, 0.62), "ribs", 50.0),
    "vehicle.construction": ((0.95, 0.60, 0.00), "hazard", 55.0),
    "human.pedestrian.adult": ((0.15, 0.20, 0.55), "cloth", 18.0),
    "vehicle.bicycle": ((0.10, 0.70, 0.75), "frame", 40.0),
    "vehicle.motorcycle": ((0.55, 0.05, 0.55), "frame", 45.0),
    "movable_object.barrier": ((0.90, 0.90, 0.90), "barrier", 70.0),
    "movable_object.trafficcone": ((1.00, 0.35, 0.00), "cone", 95.0),
}
_KINDS = tuple(sorted({m[1] for m in _MATERIALS.values()}))
_CAR_COLORS = ((0.70, 0.10, 0.10), (0.10, 0.20, 0.60), (0.75, 0.75, 0.78), (0.08, 0.08, 0.08), (0.90, 0.90, 0.92))


@dataclass(frozen=True)
class SynthConfig:
    seed: int = 0
    samples_per_scene: int = 8
    image_size: tuple[int, int] = (800, 450)
    beams: int = 32
    azimuth_steps: int = 1090
    max_range: float = 70.0
    speed: float = 10.0  # m/s; keyframes are 0.5 s apart as in nuScenes
    version: str = "v1.0-mini"

    def __post_init__(self) -> None:
        if not 2 <= self.samples_per_scene <= 40:  # nuScenes scenes have about 40 keyframes
            raise InputError(f"samples_per_scene must be in [2, 40], got {self.samples_per_scene}")
        if self.seed < 0:
            raise InputError(f"seed must be >= 0, got {self.seed}")
        w, h = self.image_size
        if not (64 <= w <= 1600 and 64 <= h <= 900):
            raise InputError(f"image size must be between 64x64 and 1600x900, got {w}x{h}")


@dataclass
class _Object:
    fine: str
    center: tuple[float, float, float]  # road frame; z of the box centre
    size: tuple[float, float, float]  # (width, length, height) as nuScenes
    yaw: float
    color: tuple[float, float, float]
    annotate: bool = True
    parts: list = field(default_factory=list)  # legacy open3d meshes in the road frame


def _token(*parts) -> str:
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


# ------------------------------------------------------------------------------------------ scenes

def _o3d():
    """open3d, imported on first use: its import takes about a second and only generation needs it
    (the loader imports this module for its constants)."""
    import open3d

    return open3d


def _box(w: float, l: float, h: float, cx: float, cy: float, z0: float, yaw: float):
    """A box of width w (across), length l (along the heading), height h, base at z0."""
    m = _o3d().geometry.TriangleMesh.create_box(l, w, h)
    m.translate((-l / 2, -w / 2, 0.0))
    m.rotate(_rot_z(yaw), center=(0, 0, 0))
    m.translate((cx, cy, z0))
    return m


def _cylinder(r: float, h: float, cx: float, cy: float, z0: float, resolution: int = 12):
    m = _o3d().geometry.TriangleMesh.create_cylinder(r, h, resolution=resolution)
    m.translate((cx, cy, z0 + h / 2))
    return m


def _sphere(r: float, cx: float, cy: float, cz: float):
    m = _o3d().geometry.TriangleMesh.create_sphere(r, resolution=8)
    m.translate((cx, cy, cz))
    return m


def _rot_z(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _vehicle(fine: str, x: float, y: float, yaw: float, size, color, rng) -> _Object:
    w, l, h = size
    parts = []
    if fine == "vehicle.car":
        parts.append(_box(w, l, h * 0.55, x, y, 0.25, yaw))
        parts.append(_box(w * 0.85, l * 0.5, h * 0.45, x - 0.1 * l * math.cos(yaw), y - 0.1 * l * math.sin(yaw),
                          0.25 + h * 0.55 - 0.25, yaw))
    elif fine in ("vehicle.truck", "vehicle.construction"):
        cab = l * 0.25
        fx, fy = math.cos(yaw), math.sin(yaw)
        parts.append(_box(w, cab, h * 0.8, x + fx * (l - cab) / 2, y + fy * (l - cab) / 2, 0.3, yaw))
        parts.append(_box(w, l - cab - 0.2, h * (0.95 if fine == "vehicle.truck" else 0.6),
                          x - fx * (cab + 0.2) / 2, y - fy * (cab + 0.2) / 2, 0.3, yaw))
        if fine == "vehicle.construction":  # an arm
            parts.append(_box(0.5, l * 0.6, 0.4, x - fx * l * 0.1, y - fy * l * 0.1, h * 0.85, yaw + 0.3))
    elif fine == "vehicle.trailer":
        parts.append(_box(w, l, h - 1.0, x, y, 1.0, yaw))
        for s in (-0.3, 0.3):
            parts.append(_box(w * 0.9, 0.3, 1.0, x + s * l * math.cos(yaw), y + s * l * math.sin(yaw), 0.0, yaw))
    elif fine in ("vehicle.bicycle", "vehicle.motorcycle"):
        fx, fy = math.cos(yaw), math.sin(yaw)
        r = 0.33 if fine == "vehicle.bicycle" else 0.32
        for s in (-0.35, 0.35):
            wheel = _o3d().geometry.TriangleMesh.create_cylinder(r, 0.08 if fine == "vehicle.bicycle" else 0.14,
                                                              resolution=12)
            wheel.rotate(_rot_z(yaw) @ np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]]), center=(0, 0, 0))
            wheel.translate((x + s * l * fx, y + s * l * fy, r))
            parts.append(wheel)
        parts.append(_box(w * (0.3 if fine == "vehicle.bicycle" else 0.7), l * 0.7,
                          h * (0.35 if fine == "vehicle.bicycle" else 0.5), x, y, h * 0.4, yaw))
    else:  # buses
        parts.append(_box(w, l, h - 0.3, x, y, 0.3, yaw))
    if fine not in ("vehicle.bicycle", "vehicle.motorcycle"):
        fx, fy, sx, sy = math.cos(yaw), math.sin(yaw), -math.sin(yaw), math.cos(yaw)
        for a in (-0.33, 0.33):
            for b in (-0.5, 0.5):
                wheel = _o3d().geometry.TriangleMesh.create_cylinder(0.35, 0.25, resolution=10)
                wheel.rotate(_rot_z(yaw) @ np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]]), center=(0, 0, 0))
                wheel.translate((x + a * l * fx + b * w * sx, y + a * l * fy + b * w * sy, 0.35))
                parts.append(wheel)
    return _Object(fine, (x, y, h / 2), (w, l, h), yaw, color, parts=parts)


# nuScenes mean box sizes (w, l, h)
_SIZES = {
    "vehicle.car": (1.95, 4.62, 1.73), "vehicle.truck": (2.51, 6.93, 2.84), "vehicle.bus.rigid": (2.94, 11.19, 3.47),
    "vehicle.trailer": (2.90, 12.29, 3.87), "vehicle.construction": (2.73, 6.37, 3.19),
    "human.pedestrian.adult": (0.67, 0.73, 1.77), "vehicle.motorcycle": (0.77, 2.11, 1.47),
    "vehicle.bicycle": (0.61, 1.70, 1.29), "movable_object.trafficcone": (0.41, 0.41, 1.07),
    "movable_object.barrier": (2.49, 0.48, 0.99),
}

ROAD_HALF = 7.0  # half width of the carriageway (two lanes each way)
CURB = 0.3
SIDEWALK = 3.0
TERRAIN = 7.0


def _build_scene(rng: np.random.Generator, length: float) -> list[_Object]:
    """Objects of one street scene in the road frame (x along the road, ego drives at y = -1.75)."""
    x0, x1 = -70.0, length + 70.0
    objs: list[_Object] = []
    span = x1 - x0

    def flat(fine, y_lo, y_hi, top, xa=x0, xb=x1, color=None):
        mat = _MATERIALS[fine]
        objs.append(_Object(fine, ((xa + xb) / 2, (y_lo + y_hi) / 2, top / 2), (y_hi - y_lo, xb - xa, top), 0.0,
                            color or mat[0], annotate=False,
                            parts=[_box(y_hi - y_lo, xb - xa, top + 0.5, (xa + xb) / 2, (y_lo + y_hi) / 2, -0.5, 0)]))

    flat("flat.driveable_surface", -ROAD_HALF, ROAD_HALF, 0.0)
    for side in (-1, 1):
        inner = ROAD_HALF
        flat("flat.other", *sorted((side * inner, side * (inner + CURB))), 0.14)
        flat("flat.sidewalk", *sorted((side * (inner + CURB), side * (inner + CURB + SIDEWALK))), 0.15)
        edge = inner + CURB + SIDEWALK
        flat("flat.terrain", *sorted((side * edge, side * (edge + TERRAIN))), 0.05)
    # traffic islands (other_flat) in the middle of the road, away from the ego lane
    for xc in rng.uniform(x0 + 10, x1 - 10, 3):
        flat("flat.other", 0.3, 1.3, 0.15, xc - 6, xc + 6)

    # buildings behind the terrain: a facade every 12-25 m on both sides
    for side in (-1, 1):
        x = x0
        while x < x1:
            l = rng.uniform(12, 25)
            depth, h = rng.uniform(8, 15), rng.uniform(6, 20)
            y = side * (ROAD_HALF + CURB + SIDEWALK + TERRAIN + 1.0 + depth / 2)
            tint = np.clip(np.array(_MATERIALS["static.manmade"][0]) + rng.uniform(-0.15, 0.15, 3), 0, 1)
            objs.append(_Object("static.manmade", (x + l / 2, y, h / 2), (depth, l, h), 0.0, tuple(tint),
                                annotate=False, parts=[_box(depth, l - 1.0, h, x + l / 2, y, 0.0, 0.0)]))
            x += l
    # poles on the sidewalks, trees and bushes on the terrain
    for side in (-1, 1):
        for x in np.arange(x0 + rng.uniform(0, 15), x1, 15.0):
            y = side * (ROAD_HALF + CURB + 0.5)
            objs.append(_Object("static.manmade", (x, y, 3.5), (0.3, 0.3, 7.0), 0.0, (0.5, 0.5, 0.52), annotate=False,
                                parts=[_cylinder(0.15, 7.0, x, y, 0.15, 8),
                                       _box(0.25, 1.5, 0.25, x, y - side * 0.6, 7.0, math.pi / 2)]))
        for x in np.arange(x0 + rng.uniform(0, 10), x1, rng.uniform(7, 11)):
            y = side * (ROAD_HALF + CURB + SIDEWALK + rng.uniform(1.5, TERRAIN - 1.5))
            h, r = rng.uniform(3, 6), rng.uniform(1.5, 2.8)
            objs.append(_Object("static.vegetation", (x, y, (h + r) / 2), (2 * r, 2 * r, h + r), 0.0,
                                _MATERIALS["static.vegetation"][0], annotate=False,
                                parts=[_cylinder(0.2, h, x, y, 0.05, 8), _sphere(r, x, y, h + r * 0.6)]))
            if rng.random() < 0.6:
                bx, by, br = x + rng.uniform(2, 4), y + rng.uniform(-1, 1), rng.uniform(0.5, 1.0)
                objs.append(_Object("static.vegetation", (bx, by, br), (2 * br, 2 * br, br * 2), 0.0,
                                    (0.20, 0.50, 0.15), annotate=False, parts=[_sphere(br, bx, by, br * 0.7)]))

    def place(fine, n, y_choices, along=None, yaw_jitter=0.15, z0=0.0):
        for _ in range(n):
            x = rng.uniform(x0 + 15, x1 - 15) if along is None else along()
            y = rng.choice(y_choices) + rng.uniform(-0.2, 0.2)
            yaw = (0.0 if rng.random() < 0.5 else math.pi) + rng.uniform(-yaw_jitter, yaw_jitter)
            size = _SIZES[fine]
            color = _MATERIALS[fine][0]
            if fine == "vehicle.car":
                color = _CAR_COLORS[rng.integers(len(_CAR_COLORS))]
            color = tuple(np.clip(np.array(color) + rng.uniform(-0.06, 0.06, 3), 0, 1))
            if fine.startswith("vehicle."):
                obj = _vehicle(fine, x, y, yaw, size, color, rng)
            elif fine == "human.pedestrian.adult":
                obj = _Object(fine, (x, y, z0 + size[2] / 2), size, yaw, color, parts=[
                    _box(size[0] * 0.8, size[1] * 0.5, size[2] * 0.82, x, y, z0, yaw),
                    _sphere(0.13, x, y, z0 + size[2] - 0.13)])
            elif fine == "movable_object.trafficcone":
                cone = _o3d().geometry.TriangleMesh.create_cone(size[0] / 2, size[2] * 0.7, resolution=12)
                cone.translate((x, y, z0))
                obj = _Object(fine, (x, y, z0 + size[2] * 0.35), (size[0], size[1], size[2] * 0.7), 0.0, color,
                              parts=[cone])
            else:  # barrier
                obj = _Object(fine, (x, y, z0 + size[2] / 2), size, yaw + math.pi / 2, color,
                              parts=[_box(size[0], size[1], size[2], x, y, z0, yaw + math.pi / 2)])
            if obj.parts and not any(_overlaps(obj, o) for o in objs if o.annotate):
                objs.append(obj)

    park = (-ROAD_HALF + 1.1, ROAD_HALF - 1.1)
    far_lane = (1.75, 5.25)
    walk = (-(ROAD_HALF + CURB + SIDEWALK / 2), ROAD_HALF + CURB + SIDEWALK / 2)
    place("vehicle.car", int(span / 9), park + far_lane)
    place("vehicle.truck", 3, park + far_lane)
    place("vehicle.bus.rigid", 2, far_lane + park)
    place("vehicle.trailer", 2, park)
    place("vehicle.construction", 2, park)
    place("human.pedestrian.adult", int(span / 8), walk, yaw_jitter=math.pi, z0=0.15)
    place("vehicle.bicycle", 5, park + walk)
    place("vehicle.motorcycle", 5, park)
    place("movable_object.barrier", 8, (ROAD_HALF - 0.6, -(ROAD_HALF - 0.6)))
    place("movable_object.trafficcone", 12, (ROAD_HALF - 1.5, -(ROAD_HALF - 1.5), 0.8), yaw_jitter=math.pi)
    return objs


def _overlaps(a: _Object, b: _Object) -> bool:
    ra = 0.5 * math.hypot(a.size[0], a.size[1])
    rb = 0.5 * math.hypot(b.size[0], b.size[1])
    return math.hypot(a.center[0] - b.center[0], a.center[1] - b.center[1]) < ra + rb + 0.3


# --------------------------------------------------------------------------------------- rendering

def _hash_noise(p: np.ndarray, scale: float) -> np.ndarray:
    """Deterministic value noise in [0, 1) of world points [N, 3] on a lattice of ``scale`` metres."""
    q = np.floor(p / scale).astype(np.float64)
    v = np.sin(q @ np.array([12.9898, 78.233, 37.719])) * 43758.5453
    return (v - np.floor(v)).astype(np.float32)


def _paint(base: np.ndarray, mask: np.ndarray, rgb) -> np.ndarray:
    """A grey texture ``base`` [N] as RGB [N, 3], with ``rgb`` where ``mask`` holds."""
    out = np.stack([base, base, base], 1)
    out[mask] = rgb
    return out


def _texture(kind: str, p: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Multiplicative RGB texture [N, 3] for surface points p [N, 3] (road frame) with normals n."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    ones = np.ones(len(p), dtype=np.float32)
    fine = 0.85 + 0.3 * _hash_noise(p, 0.07)
    if kind == "asphalt":
        t = 0.8 + 0.4 * _hash_noise(p, 0.05)
        mark = (np.abs(y) < 0.08) & ((x % 6.0) < 3.0) | (np.abs(np.abs(y) - 3.5) < 0.07)
        return _paint(t, mark, 4.0)
    if kind == "tiles":
        grid = (np.minimum(x % 1.0, y % 1.0) < 0.05)
        t = np.where(grid, 0.55, fine)
        return np.stack([t, t, t], 1)
    if kind == "stripes":  # painted curbs and islands: ochre and white bands
        band = ((x // 1.0) % 2 == 0)
        return _paint(fine, band, [1.2, 1.5, 3.0])
    if kind == "dirt":
        t = _hash_noise(p, 0.3)
        return np.stack([0.8 + 0.5 * t, 1.0 + 0.6 * t, 0.7 + 0.3 * t], 1) * fine[:, None]
    if kind == "leaves":
        t = _hash_noise(p, 0.12)
        return np.stack([0.6 + 0.8 * t, 0.7 + 0.9 * t, 0.5 + 0.5 * t], 1)
    if kind == "windows":
        vertical = np.abs(n[:, 2]) < 0.5
        u = np.where(np.abs(n[:, 0]) > np.abs(n[:, 1]), y, x)
        win = vertical & ((u % 3.0) > 1.0) & ((z % 3.2) > 1.2) & (z > 1.0)
        return _paint(fine, win, [0.25, 0.35, 0.6])
    if kind == "bus":
        band = (z > 1.6) & (z < 2.6)
        return _paint(ones, band, [0.15, 0.18, 0.25])
    if kind == "panels":
        t = np.where((x % 1.2) < 0.06, 0.7, 1.0)
        return np.stack([t, t, t], 1)
    if kind == "ribs":
        t = np.where((z % 0.5) < 0.1, 0.6, 1.0)
        return np.stack([t, t, t], 1)
    if kind == "hazard":
        stripe = ((x + y + z) % 1.0) < 0.5
        return _paint(ones, stripe, [0.1, 0.1, 0.1])
    if kind == "barrier":
        stripe = ((x - z + y) % 0.8) < 0.4
        return _paint(ones, stripe, [0.9, 0.1, 0.1])
    if kind == "cone":
        band = (z > 0.3) & (z < 0.45)
        return _paint(ones, band, [1.0, 2.8, 6.0])
    if kind == "cloth":
        head = z > 1.45
        return _paint(fine, head, [5.0, 3.5, 1.8])
    return np.stack([fine, fine, fine], 1)


class _World:
    """Ray-castable scene: geometry id -> object index, fine class, colour, texture, reflectivity."""

    def __init__(self, objects: list[_Object], road_to_global: np.ndarray):
        self.scene = _o3d().t.geometry.RaycastingScene()
        self.road_to_global = road_to_global
        self.global_to_road = np.linalg.inv(road_to_global)
        geom_obj = []
        for i, obj in enumerate(objects):
            for part in obj.parts:
                mesh = _o3d().geometry.TriangleMesh(part)
                mesh.transform(road_to_global)
                self.scene.add_triangles(_o3d().t.geometry.TriangleMesh.from_legacy(mesh))
                geom_obj.append(i)
        self.geom_obj = np.array(geom_obj + [-1])  # index -1 (miss) maps to -1
        self.obj_fine = np.array([_FINE[o.fine] for o in objects] + [0], dtype=np.uint8)
        self.obj_color = np.array([o.color for o in objects] + [(0, 0, 0)], dtype=np.float32)
        self.obj_kind_id = np.array([_KINDS.index(_MATERIALS[o.fine][1]) for o in objects] + [0])
        self.obj_reflect = np.array([_MATERIALS[o.fine][2] for o in objects] + [0.0])
        # image noise: one field drawn per scene, windows of it cut per image
        self.noise = (np.random.default_rng(len(objects)).standard_normal(4_000_000, dtype=np.float32) * 0.015)

    def cast(self, origins: np.ndarray, dirs: np.ndarray):
        """(distance [N] (inf on miss), object index [N] (-1 on miss), normals [N, 3] global)."""
        rays = np.concatenate([origins, dirs], axis=1).astype(np.float32)
        hit = self.scene.cast_rays(_o3d().core.Tensor(rays), nthreads=0)
        t = hit["t_hit"].numpy().astype(np.float64)
        gid = hit["geometry_ids"].numpy().astype(np.int64)
        gid = np.where(np.isfinite(t), gid, -1)
        return t, self.geom_obj[gid], hit["primitive_normals"].numpy().astype(np.float64)


def _shade(world: _World, obj: np.ndarray, p_global: np.ndarray, normals: np.ndarray, dirs: np.ndarray,
           rng: np.random.Generator) -> np.ndarray:
    """RGB uint8 [N, 3] of ray hits, sky where missed.

    The hot path of the generator: float32 throughout, pixels sorted by texture kind once so each
    texture runs on a contiguous slice, and image noise cut from one pre-drawn field.
    """
    n = len(obj)
    g2r = world.global_to_road.astype(np.float32)
    kinds = world.obj_kind_id[obj]  # misses (-1) get the last entry: shaded, then painted over as sky
    order = np.argsort(kinds, kind="stable")
    bounds = np.searchsorted(kinds[order], np.arange(len(_KINDS) + 1))
    p_road = p_global[order].astype(np.float32) @ g2r[:3, :3].T + g2r[:3, 3]
    n_road = normals[order].astype(np.float32) @ g2r[:3, :3].T
    shaded = world.obj_color[obj[order]]
    for kind_id in range(len(_KINDS)):
        a, b = bounds[kind_id], bounds[kind_id + 1]
        if b > a:
            shaded[a:b] *= _texture(_KINDS[kind_id], p_road[a:b], n_road[a:b])
    shaded *= (0.45 + 0.55 * np.abs(n_road @ _LIGHT))[:, None]
    rgb = np.empty_like(shaded)
    rgb[order] = shaded
    sky = obj < 0
    up = np.clip(dirs[sky, 2], 0, 1).astype(np.float32)
    rgb[sky] = np.stack([0.55 + 0.2 * up, 0.70 + 0.2 * up, np.full_like(up, 0.95)], 1)
    start = int(rng.integers(0, len(world.noise) - 3 * n))
    rgb += world.noise[start:start + 3 * n].reshape(n, 3)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


_LIGHT = (np.array([0.4, 0.3, 0.85]) / np.linalg.norm([0.4, 0.3, 0.85])).astype(np.float32)


# ------------------------------------------------------------------------------------------ writer

def _ego_state(t: float, speed: float, phase: float) -> tuple[np.ndarray, float]:
    """Ego position (road frame) and yaw at time t: along the road with a gentle lane wobble."""
    amp, period = 0.4, 7.0
    x = speed * t
    y = -1.75 + amp * math.sin(2 * math.pi * t / period + phase)
    dy = amp * 2 * math.pi / period * math.cos(2 * math.pi * t / period + phase)
    return np.array([x, y, 0.0]), math.atan2(dy, speed)


def generate(out_dir: str | Path, config: SynthConfig = SynthConfig(), progress=None, workers: int | None = None) -> Path:
    """Write the synthetic dataset to ``out_dir`` (must not exist yet); returns its path.

    progress: optional callback(done scenes, total scenes). workers: processes (default: CPU count, at most 4).
    """
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise OutputExistsError(f"{out_dir} already exists; choose a new folder or remove it first")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        _generate_into(tmp, config, progress, workers)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _static_tables(cfg: SynthConfig) -> dict[str, list]:
    """The tables that do not depend on the scenes (deterministic in the seed)."""
    seed = cfg.seed
    t: dict[str, list] = {name: [] for name in TABLES}
    for i, name in enumerate(FINE_CLASSES):
        t["category"].append({"token": _token(seed, "category", name), "name": name,
                              "description": f"synthetic {name}", "index": i})
    for name in ("vehicle.moving", "vehicle.parked", "vehicle.stopped", "pedestrian.moving", "pedestrian.standing",
                 "pedestrian.sitting_lying_down", "cycle.with_rider", "cycle.without_rider"):
        t["attribute"].append({"token": _token(seed, "attribute", name), "name": name, "description": name})
    for i, level in enumerate(("v0-40", "v40-60", "v60-80", "v80-100"), start=1):
        t["visibility"].append({"token": str(i), "level": level, "description": f"visibility {level}"})
    w, h = cfg.image_size
    for channel in ("LIDAR_TOP",) + CAMERAS:
        tok = _token(seed, "sensor", channel)
        t["sensor"].append({"token": tok, "channel": channel,
                            "modality": "lidar" if channel.startswith("LIDAR") else "camera"})
        if channel == "LIDAR_TOP":
            calib = {"translation": list(_LIDAR_TRANSLATION), "rotation": yaw_quaternion(_LIDAR_YAW),
                     "camera_intrinsic": []}
        else:
            yaw_deg, trans, f1600 = _CAMERA_RIG[channel]
            f = f1600 * w / 1600.0
            k = [[f, 0.0, (w - 1) / 2.0 + 8.0 * w / 1600.0], [0.0, f, (h - 1) / 2.0 + 41.0 * h / 900.0],
                 [0.0, 0.0, 1.0]]
            # camera axes (x right, y down, z forward) expressed in ego for a camera looking along yaw
            cam_to_ego = _rot_z(math.radians(yaw_deg)) @ np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0],
                                                                   [0.0, -1.0, 0.0]])
            calib = {"translation": list(trans), "rotation": list(Quaternion(matrix=cam_to_ego).elements),
                     "camera_intrinsic": k}
        t["calibrated_sensor"].append({"token": _token(seed, "calibrated_sensor", channel), "sensor_token": tok,
                                       **calib})
    log_token = _token(seed, "log")
    t["log"].append({"token": log_token, "logfile": "relviz-synthetic", "vehicle": "relviz-ego",
                     "date_captured": "2026-01-01", "location": "synthetic-town"})
    t["map"].append({"token": _token(seed, "map"), "log_tokens": [log_token], "category": "semantic_prior",
                     "filename": f"maps/{_token(seed, 'map')}.png"})
    return t


def _generate_into(root: Path, cfg: SynthConfig, progress, workers: int) -> None:
    v = cfg.version
    for sub in [v, f"lidarseg/{v}", "maps", "samples/LIDAR_TOP"] + [f"samples/{c}" for c in CAMERAS]:
        (root / sub).mkdir(parents=True, exist_ok=True)
    tables = _static_tables(cfg)
    Image.new("L", (16, 16), 0).save(root / tables["map"][0]["filename"])
    tables["lidarseg"] = []
    scene_names = MINI_TRAIN + MINI_VAL
    jobs = [(root, cfg, si, name) for si, name in enumerate(scene_names)]
    if workers > 1:
        # scenes are independent and seeded by (seed, scene index): a pool gives identical bytes
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            results = pool.map(_scene_worker, jobs)
            per_scene = []
            for done, records in enumerate(results, start=1):
                per_scene.append(records)
                if progress:
                    progress(done, len(jobs))
    else:
        per_scene = []
        for done, job in enumerate(jobs, start=1):
            per_scene.append(_scene_worker(job))
            if progress:
                progress(done, len(jobs))
    for records in per_scene:
        for name, rows in records.items():
            tables[name].extend(rows)
    for name, rows in tables.items():
        (root / v / f"{name}.json").write_text(json.dumps(rows, indent=0))
    (root / "relviz_synthetic.json").write_text(json.dumps({
        "generator": "relviz.data.synthetic", "seed": cfg.seed, "samples_per_scene": cfg.samples_per_scene,
        "image_size": list(cfg.image_size), "version": v}, indent=1))


def _scene_worker(job) -> dict[str, list]:
    root, cfg, si, scene_name = job
    return _generate_scene(root, cfg, si, scene_name)


def _generate_scene(root: Path, cfg: SynthConfig, si: int, scene_name: str) -> dict[str, list]:
    """Ray cast and write one scene's files; return its table records."""
    v, seed = cfg.version, cfg.seed
    static = _static_tables(cfg)
    calibs = {next(s["channel"] for s in static["sensor"] if s["token"] == c["sensor_token"]): c
              for c in static["calibrated_sensor"]}
    log_token = static["log"][0]["token"]
    cat_token = {c["name"]: c["token"] for c in static["category"]}
    attr_token = {a["name"]: a["token"] for a in static["attribute"]}
    tb = {name: [] for name in ("sample", "sample_data", "ego_pose", "sample_annotation", "instance", "scene",
                                "lidarseg")}
    w, h = cfg.image_size
    rng = np.random.default_rng([seed, si])
    length = cfg.speed * 0.5 * (cfg.samples_per_scene - 1)
    objects = _build_scene(rng, length)
    # place the road in the global frame: a per-scene origin and heading, kept within ~100 m
    road_yaw = float(rng.uniform(-math.pi, math.pi))
    road_to_global = pose_matrix([float(rng.uniform(-60, 60)), float(rng.uniform(-60, 60)), 0.0],
                                 yaw_quaternion(road_yaw))
    world = _World(objects, road_to_global)
    phase = float(rng.uniform(0, 2 * math.pi))
    t0 = 1_600_000_000_000_000 + si * 100_000_000
    scene_token = _token(seed, "scene", scene_name)
    sample_tokens = [_token(seed, scene_name, "sample", i) for i in range(cfg.samples_per_scene)]
    prev_sd = {c: "" for c in ("LIDAR_TOP",) + CAMERAS}
    last_sd: dict[str, dict] = {}
    ann_by_obj: dict[int, list[dict]] = {}
    for i, sample_token in enumerate(sample_tokens):
        ts = t0 + i * 500_000
        tb["sample"].append({"token": sample_token, "timestamp": ts, "scene_token": scene_token,
                             "prev": sample_tokens[i - 1] if i else "",
                             "next": sample_tokens[i + 1] if i + 1 < len(sample_tokens) else ""})
        lidar_counts = None
        for ci, channel in enumerate(("LIDAR_TOP",) + CAMERAS):
            # cameras fire a few ms after the lidar, as the spinning lidar passes them
            sd_ts = ts + (0 if channel == "LIDAR_TOP" else 8_000 * ci + 2_000)
            pos, yaw = _ego_state((sd_ts - t0) / 1e6, cfg.speed, phase)
            ego_global = road_to_global @ pose_matrix(pos, yaw_quaternion(yaw))
            pose = {"token": _token(seed, scene_name, i, channel, "ego_pose"), "timestamp": sd_ts,
                    "translation": list(ego_global[:3, 3]),
                    "rotation": list(Quaternion(matrix=ego_global[:3, :3], atol=1e-6).elements)}
            tb["ego_pose"].append(pose)
            sd_token = _token(seed, scene_name, i, channel, "sample_data")
            sensor_to_global = ego_global @ pose_matrix(calibs[channel]["translation"],
                                                        calibs[channel]["rotation"])
            stem = f"{scene_name}__{channel}__{sd_ts}"
            if channel == "LIDAR_TOP":
                filename = f"samples/LIDAR_TOP/{stem}.pcd.bin"
                points, fine, obj = _lidar_sweep(world, sensor_to_global, cfg, rng)
                points.tofile(root / filename)
                label_file = f"lidarseg/{v}/{sd_token}_lidarseg.bin"
                fine.tofile(root / label_file)
                tb["lidarseg"].append({"token": sd_token, "sample_data_token": sd_token, "filename": label_file})
                lidar_counts = np.bincount(obj[obj >= 0], minlength=len(objects))
                extra = {"fileformat": "pcd", "width": 0, "height": 0}
            else:
                filename = f"samples/{channel}/{stem}.jpg"
                rgb, cls = _render_camera(world, sensor_to_global, calibs[channel]["camera_intrinsic"], w, h, rng)
                Image.fromarray(rgb).save(root / filename, quality=90)
                Image.fromarray(cls).save(root / f"samples/{channel}/{stem}.class.png")
                extra = {"fileformat": "jpg", "width": w, "height": h}
            tb["sample_data"].append({
                "token": sd_token, "sample_token": sample_token, "ego_pose_token": pose["token"],
                "calibrated_sensor_token": calibs[channel]["token"], "timestamp": sd_ts, "is_key_frame": True,
                "filename": filename, "prev": prev_sd[channel], "next": "", **extra})
            if prev_sd[channel]:
                last_sd[channel]["next"] = sd_token
            prev_sd[channel] = sd_token
            last_sd[channel] = tb["sample_data"][-1]
        # annotations for objects seen by the lidar in this sample
        for oi, obj in enumerate(objects):
            if not obj.annotate or lidar_counts[oi] == 0:
                continue
            center = transform_points(road_to_global, np.array([obj.center]))[0]
            ann = {"token": _token(seed, scene_name, i, "ann", oi), "sample_token": sample_token,
                   "instance_token": _token(seed, scene_name, "instance", oi), "visibility_token": "4",
                   "attribute_tokens": [attr_token[_attribute(obj.fine)]], "translation": list(center),
                   "size": list(obj.size), "rotation": yaw_quaternion(obj.yaw + road_yaw),
                   "num_lidar_pts": int(lidar_counts[oi]), "num_radar_pts": 0, "prev": "", "next": ""}
            ann_by_obj.setdefault(oi, []).append(ann)
    for oi, anns in ann_by_obj.items():
        for a, b in zip(anns, anns[1:]):
            a["next"], b["prev"] = b["token"], a["token"]
        tb["sample_annotation"].extend(anns)
        tb["instance"].append({"token": anns[0]["instance_token"], "category_token": cat_token[objects[oi].fine],
                               "nbr_annotations": len(anns), "first_annotation_token": anns[0]["token"],
                               "last_annotation_token": anns[-1]["token"]})
    tb["scene"].append({"token": scene_token, "log_token": log_token, "nbr_samples": len(sample_tokens),
                        "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
                        "name": scene_name, "description": f"relviz synthetic street, seed {seed}"})
    return tb


def _attribute(fine: str) -> str:
    if fine.startswith("human"):
        return "pedestrian.standing"
    if fine in ("vehicle.bicycle", "vehicle.motorcycle"):
        return "cycle.without_rider"
    return "vehicle.parked"


def _lidar_sweep(world: _World, lidar_to_global: np.ndarray, cfg: SynthConfig, rng: np.random.Generator):
    """Ray cast one sweep: (points float32 [N, 5] in the lidar frame, fine labels uint8 [N], object idx [N])."""
    elev = np.radians(np.linspace(10.0, -30.0, cfg.beams))
    az = np.linspace(0, 2 * np.pi, cfg.azimuth_steps, endpoint=False)
    ring, a = np.meshgrid(np.arange(cfg.beams), az, indexing="ij")
    e = elev[ring]
    dirs_l = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], -1).reshape(-1, 3)
    ring = ring.reshape(-1)
    dirs_g = dirs_l @ lidar_to_global[:3, :3].T
    origins = np.broadcast_to(lidar_to_global[:3, 3], dirs_g.shape)
    t, obj, normals = world.cast(origins, dirs_g)
    keep = np.isfinite(t) & (t < cfg.max_range) & (t > 1.0)
    t, obj, normals, dirs_l, dirs_g, ring = t[keep], obj[keep], normals[keep], dirs_l[keep], dirs_g[keep], ring[keep]
    r = t + rng.normal(0, 0.02, t.shape)
    xyz = dirs_l * r[:, None]
    cos_inc = np.abs((normals * dirs_g).sum(1))
    intensity = np.clip(world.obj_reflect[obj] * (0.4 + 0.6 * cos_inc) * rng.uniform(0.85, 1.15, t.shape)
                        * (1.0 - 0.004 * t), 0, 255)
    points = np.concatenate([xyz, intensity[:, None], ring[:, None]], 1).astype(np.float32)
    return points, world.obj_fine[obj], obj


def _pixel_rays(intrinsic, w: int, h: int) -> np.ndarray:
    """Unit ray directions [h*w, 3] in the camera frame through integer pixel coordinates."""
    key = (tuple(map(tuple, np.asarray(intrinsic))), w, h)
    if key not in _RAY_CACHE:
        u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
        pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], 1)
        dirs = pix @ np.linalg.inv(np.asarray(intrinsic)).T
        _RAY_CACHE[key] = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    return _RAY_CACHE[key]


_RAY_CACHE: dict = {}


def _render_camera(world: _World, cam_to_global: np.ndarray, intrinsic, w: int, h: int, rng: np.random.Generator):
    """Ray cast every pixel centre (integer pixel coordinates): (RGB uint8 [h, w, 3], fine class uint8 [h, w])."""
    dirs_g = _pixel_rays(intrinsic, w, h) @ cam_to_global[:3, :3].T
    origins = np.broadcast_to(cam_to_global[:3, 3], dirs_g.shape)
    t, obj, normals = world.cast(origins, dirs_g)
    p = origins + dirs_g * np.where(np.isfinite(t), t, 0)[:, None]
    rgb = _shade(world, obj, p, normals, dirs_g, rng)
    return rgb.reshape(h, w, 3), world.obj_fine[obj].reshape(h, w)


def render_view(config: SynthConfig = SynthConfig(), scene_index: int = 8, camera: str = "CAM_FRONT",
                time_s: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Render one camera of one synthetic scene at ``time_s`` seconds into the drive, without writing
    a dataset: (RGB uint8 [H, W, 3], fine class uint8 [H, W]). Deterministic in its arguments; the
    scene is the one the dataset of the same config holds (scene 8 is mini_val's scene-0103)."""
    rng = np.random.default_rng([config.seed, scene_index])
    objects = _build_scene(rng, config.speed * 0.5 * (config.samples_per_scene - 1))
    road_yaw = float(rng.uniform(-math.pi, math.pi))
    road_to_global = pose_matrix([float(rng.uniform(-60, 60)), float(rng.uniform(-60, 60)), 0.0],
                                 yaw_quaternion(road_yaw))
    world = _World(objects, road_to_global)
    phase = float(rng.uniform(0, 2 * math.pi))
    calib = next(c for c in _static_tables(config)["calibrated_sensor"]
                 if c["token"] == _token(config.seed, "calibrated_sensor", camera))
    pos, yaw = _ego_state(time_s, config.speed, phase)
    cam_to_global = road_to_global @ pose_matrix(pos, yaw_quaternion(yaw)) @ pose_matrix(calib["translation"],
                                                                                        calib["rotation"])
    w, h = config.image_size
    return _render_camera(world, cam_to_global, calib["camera_intrinsic"], w, h,
                          np.random.default_rng([config.seed, scene_index, 99]))
