"""The procedural street of one scene: its objects, their materials, the ray-castable world, and the
ego's drive along it. :func:`build_street` is the one scene builder (``generate`` and ``render_view``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from relviz.data.classes import FINE_CLASSES
from relviz.data.geometry import pose_matrix, yaw_quaternion
from relviz.data.synthetic.config import SynthConfig
from relviz.data.synthetic.meshes import box, cone, cylinder, o3d, sphere, vehicle_parts

FINE_INDEX = {name: i for i, name in enumerate(FINE_CLASSES)}

# Per fine class: base RGB (0..1), texture kind, lidar reflectivity (0..255 scale).
MATERIALS = {
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
KINDS = tuple(sorted({m[1] for m in MATERIALS.values()}))
_CAR_COLORS = ((0.70, 0.10, 0.10), (0.10, 0.20, 0.60), (0.75, 0.75, 0.78), (0.08, 0.08, 0.08), (0.90, 0.90, 0.92))

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


@dataclass
class SceneObject:
    fine: str
    center: tuple[float, float, float]  # road frame; z of the box centre
    size: tuple[float, float, float]  # (width, length, height) as nuScenes
    yaw: float
    color: tuple[float, float, float]
    annotate: bool = True
    parts: list = field(default_factory=list)  # legacy open3d meshes in the road frame


def build_objects(rng: np.random.Generator, length: float) -> list[SceneObject]:
    """Objects of one street scene in the road frame (x along the road, ego drives at y = -1.75)."""
    x0, x1 = -70.0, length + 70.0
    objs: list[SceneObject] = []
    span = x1 - x0

    def flat(fine, y_lo, y_hi, top, xa=x0, xb=x1, color=None):
        cx, cy = (xa + xb) / 2, (y_lo + y_hi) / 2
        objs.append(SceneObject(fine, (cx, cy, top / 2), (y_hi - y_lo, xb - xa, top), 0.0, color or MATERIALS[fine][0],
                                annotate=False, parts=[box(y_hi - y_lo, xb - xa, top + 0.5, cx, cy, -0.5, 0)]))

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
            tint = np.clip(np.array(MATERIALS["static.manmade"][0]) + rng.uniform(-0.15, 0.15, 3), 0, 1)
            objs.append(SceneObject("static.manmade", (x + l / 2, y, h / 2), (depth, l, h), 0.0, tuple(tint),
                                    annotate=False, parts=[box(depth, l - 1.0, h, x + l / 2, y, 0.0, 0.0)]))
            x += l
    # poles on the sidewalks, trees and bushes on the terrain
    for side in (-1, 1):
        for x in np.arange(x0 + rng.uniform(0, 15), x1, 15.0):
            y = side * (ROAD_HALF + CURB + 0.5)
            objs.append(SceneObject("static.manmade", (x, y, 3.5), (0.3, 0.3, 7.0), 0.0, (0.5, 0.5, 0.52),
                                    annotate=False, parts=[cylinder(0.15, 7.0, x, y, 0.15, 8),
                                                           box(0.25, 1.5, 0.25, x, y - side * 0.6, 7.0, math.pi / 2)]))
        for x in np.arange(x0 + rng.uniform(0, 10), x1, rng.uniform(7, 11)):
            y = side * (ROAD_HALF + CURB + SIDEWALK + rng.uniform(1.5, TERRAIN - 1.5))
            h, r = rng.uniform(3, 6), rng.uniform(1.5, 2.8)
            objs.append(SceneObject("static.vegetation", (x, y, (h + r) / 2), (2 * r, 2 * r, h + r), 0.0,
                                    MATERIALS["static.vegetation"][0], annotate=False,
                                    parts=[cylinder(0.2, h, x, y, 0.05, 8), sphere(r, x, y, h + r * 0.6)]))
            if rng.random() < 0.6:
                bx, by, br = x + rng.uniform(2, 4), y + rng.uniform(-1, 1), rng.uniform(0.5, 1.0)
                objs.append(SceneObject("static.vegetation", (bx, by, br), (2 * br, 2 * br, br * 2), 0.0,
                                        (0.20, 0.50, 0.15), annotate=False, parts=[sphere(br, bx, by, br * 0.7)]))

    def place(fine, n, y_choices, along=None, yaw_jitter=0.15, z0=0.0):
        for _ in range(n):
            x = rng.uniform(x0 + 15, x1 - 15) if along is None else along()
            y = rng.choice(y_choices) + rng.uniform(-0.2, 0.2)
            yaw = (0.0 if rng.random() < 0.5 else math.pi) + rng.uniform(-yaw_jitter, yaw_jitter)
            size = _SIZES[fine]
            color = MATERIALS[fine][0]
            if fine == "vehicle.car":
                color = _CAR_COLORS[rng.integers(len(_CAR_COLORS))]
            color = tuple(np.clip(np.array(color) + rng.uniform(-0.06, 0.06, 3), 0, 1))
            if fine.startswith("vehicle."):
                obj = SceneObject(fine, (x, y, size[2] / 2), size, yaw, color,
                                  parts=vehicle_parts(fine, x, y, yaw, size))
            elif fine == "human.pedestrian.adult":
                obj = SceneObject(fine, (x, y, z0 + size[2] / 2), size, yaw, color, parts=[
                    box(size[0] * 0.8, size[1] * 0.5, size[2] * 0.82, x, y, z0, yaw),
                    sphere(0.13, x, y, z0 + size[2] - 0.13)])
            elif fine == "movable_object.trafficcone":
                obj = SceneObject(fine, (x, y, z0 + size[2] * 0.35), (size[0], size[1], size[2] * 0.7), 0.0, color,
                                  parts=[cone(size[0] / 2, size[2] * 0.7, x, y, z0)])
            else:  # barrier
                obj = SceneObject(fine, (x, y, z0 + size[2] / 2), size, yaw + math.pi / 2, color,
                                  parts=[box(size[0], size[1], size[2], x, y, z0, yaw + math.pi / 2)])
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


def _overlaps(a: SceneObject, b: SceneObject) -> bool:
    ra = 0.5 * math.hypot(a.size[0], a.size[1])
    rb = 0.5 * math.hypot(b.size[0], b.size[1])
    return math.hypot(a.center[0] - b.center[0], a.center[1] - b.center[1]) < ra + rb + 0.3


class World:
    """Ray-castable scene: geometry id -> object index, fine class, colour, texture, reflectivity."""

    def __init__(self, objects: list[SceneObject], road_to_global: np.ndarray):
        self.scene = o3d().t.geometry.RaycastingScene()
        self.road_to_global = road_to_global
        self.global_to_road = np.linalg.inv(road_to_global)
        geom_obj = []
        for i, obj in enumerate(objects):
            for part in obj.parts:
                mesh = o3d().geometry.TriangleMesh(part)
                mesh.transform(road_to_global)
                self.scene.add_triangles(o3d().t.geometry.TriangleMesh.from_legacy(mesh))
                geom_obj.append(i)
        self.geom_obj = np.array(geom_obj + [-1])  # index -1 (miss) maps to -1
        self.obj_fine = np.array([FINE_INDEX[o.fine] for o in objects] + [0], dtype=np.uint8)
        self.obj_color = np.array([o.color for o in objects] + [(0, 0, 0)], dtype=np.float32)
        self.obj_kind_id = np.array([KINDS.index(MATERIALS[o.fine][1]) for o in objects] + [0])
        self.obj_reflect = np.array([MATERIALS[o.fine][2] for o in objects] + [0.0])
        # image noise: one field drawn per scene, windows of it cut per image
        self.noise = (np.random.default_rng(len(objects)).standard_normal(4_000_000, dtype=np.float32) * 0.015)

    def cast(self, origins: np.ndarray, dirs: np.ndarray):
        """Rays [N, 3] + [N, 3] (global): (distance [N] (inf on miss), object index [N] (-1 on miss),
        normals [N, 3] global)."""
        rays = np.concatenate([origins, dirs], axis=1).astype(np.float32)
        hit = self.scene.cast_rays(o3d().core.Tensor(rays), nthreads=0)
        t = hit["t_hit"].numpy().astype(np.float64)
        gid = hit["geometry_ids"].numpy().astype(np.int64)
        gid = np.where(np.isfinite(t), gid, -1)
        return t, self.geom_obj[gid], hit["primitive_normals"].numpy().astype(np.float64)


def ego_state(t: float, speed: float, phase: float) -> tuple[np.ndarray, float]:
    """Ego position (road frame) and yaw at time t: along the road with a gentle lane wobble."""
    amp, period = 0.4, 7.0
    x = speed * t
    y = -1.75 + amp * math.sin(2 * math.pi * t / period + phase)
    dy = amp * 2 * math.pi / period * math.cos(2 * math.pi * t / period + phase)
    return np.array([x, y, 0.0]), math.atan2(dy, speed)


@dataclass
class Street:
    """One scene: its objects and world, where its road lies in the global frame, and its drive."""

    objects: list[SceneObject]
    world: World
    road_yaw: float
    road_to_global: np.ndarray  # [4, 4]
    phase: float  # of the ego's lane wobble
    speed: float
    rng: np.random.Generator  # the scene's stream, past the scene draws: generate's sensor noise continues it

    def ego_to_global(self, time_s: float) -> np.ndarray:
        """The ego pose [4, 4] ``time_s`` seconds into the drive."""
        pos, yaw = ego_state(time_s, self.speed, self.phase)
        return self.road_to_global @ pose_matrix(pos, yaw_quaternion(yaw))


def build_street(config: SynthConfig, scene_index: int) -> Street:
    """The street of scene ``scene_index``, deterministic in (config.seed, scene_index)."""
    rng = np.random.default_rng([config.seed, scene_index])
    objects = build_objects(rng, config.drive_length)
    # place the road in the global frame: a per-scene origin and heading, kept within ~100 m
    road_yaw = float(rng.uniform(-math.pi, math.pi))
    road_to_global = pose_matrix([float(rng.uniform(-60, 60)), float(rng.uniform(-60, 60)), 0.0],
                                 yaw_quaternion(road_yaw))
    world = World(objects, road_to_global)
    phase = float(rng.uniform(0, 2 * math.pi))
    return Street(objects, world, road_yaw, road_to_global, phase, config.speed, rng)
