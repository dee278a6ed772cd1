"""A deterministic synthetic world in SemanticKITTI's layout, far from the synthetic nuScenes one.

What differs from :mod:`relviz.data.synthetic` (the nuScenes world), on purpose:

- the sensor: a 64-beam spinning lidar (Velodyne HDL-64E-like: 32 beams from +2.0 to -8.33 degrees and
  32 from -8.83 to -24.8, 2048 azimuth steps) mounted 1.73 m above the ground as KITTI's, ranges to
  120 m, reflectance in [0, 1], points in KITTI's velodyne frame (x forward, y left), no cameras;
  nuScenes' is 32 beams from +10 to -30 degrees at 1.84 m, x to the right, intensity 0..255;
- the streets: a residential two-lane road (one 3.5 m lane each way, dashed lane markings) with parking
  strips full of parked cars, sidewalks with poles, traffic signs and parked bicycles, front gardens of
  terrain or gravel behind fences and hedges, trees with separate trunks, building rows, a bus shelter
  and bins (other-structure and other-object: ignored by the learning map);
- the object mix: KITTI-sized cars (1.62 x 3.88 x 1.53 m), moving cars, persons, bicyclists and
  motorcyclists (rider and vehicle labelled as the rider), parked bicycles and motorcycles, a truck and
  an other-vehicle (a van or a bus) per sequence, labelled with SemanticKITTI's raw ids (moving ones
  with the 25x ids) so the learning map is exercised.

Every thing class is placed within the first 30 m ahead of the drive's start, so each sequence has all
19 learning classes near the sensor. The meshes are :mod:`relviz.data.synthetic.meshes`' and the ray
casting is :meth:`relviz.data.synthetic.scene.World.cast`. Sequence ``NN`` is drawn from
``default_rng([seed, NN])``: the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from relviz.data.geometry import pose_matrix, yaw_quaternion
from relviz.data.kitti_classes import RAW_ID, TRAIN_SEQUENCES, VAL_SEQUENCES
from relviz.data.synthetic.meshes import box, cylinder, o3d, sphere, vehicle_parts
from relviz.data.synthetic.scene import World
from relviz.errors import InputError
from relviz.files import new_folder

# raw label -> reflectance in [0, 1] at normal incidence (signs and plates retro-reflect)
REFLECTANCE = {
    "road": 0.18, "lane-marking": 0.65, "parking": 0.22, "sidewalk": 0.30, "other-ground": 0.26, "terrain": 0.24,
    "building": 0.35, "fence": 0.40, "vegetation": 0.30, "trunk": 0.25, "pole": 0.45, "traffic-sign": 0.95,
    "car": 0.45, "moving-car": 0.45, "truck": 0.50, "bus": 0.48, "other-vehicle": 0.50, "bicycle": 0.40,
    "motorcycle": 0.45, "person": 0.22, "bicyclist": 0.30, "moving-bicyclist": 0.30, "motorcyclist": 0.35,
    "moving-motorcyclist": 0.35, "other-structure": 0.35, "other-object": 0.30,
}
# KITTI-sized boxes (w, l, h)
SIZES = {"car": (1.62, 3.88, 1.53), "truck": (2.5, 8.0, 3.2), "van": (2.0, 5.2, 2.3), "bus": (2.55, 12.0, 3.2),
         "bicycle": (0.6, 1.76, 1.1), "motorcycle": (0.8, 2.1, 1.3), "person": (0.6, 0.8, 1.75)}

LANE = 3.5  # one lane each way: road |y| < LANE
PARKING = 2.3
SIDEWALK = 2.5
GARDEN = 3.2
EGO_Y = -LANE / 2  # right-hand traffic, the ego in the right lane


@dataclass(frozen=True)
class KittiSynthConfig:
    """Settings of the synthetic SemanticKITTI world (the default generates in about a minute on 2 cores)."""

    seed: int = 0
    sequences: int = 11  # named 00-10: the standard split applies (train 00-07, 09, 10; val 08)
    scans_per_sequence: int = 6
    scan_period: float = 1.0  # seconds between written scans: every 10th sweep of the 10 Hz sensor
    speed: float = 8.0  # m/s
    beams: int = 64
    azimuth_steps: int = 2048
    max_range: float = 120.0
    height: float = 1.73  # KITTI's velodyne above the ground

    def __post_init__(self) -> None:
        for name in ("sequences", "scans_per_sequence", "beams", "azimuth_steps"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise InputError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.sequences > len(TRAIN_SEQUENCES + VAL_SEQUENCES):
            raise InputError(f"sequences must be at most 11 (SemanticKITTI's labelled sequences 00-10), "
                             f"got {self.sequences}")
        if self.seed < 0:
            raise InputError(f"seed must be >= 0, got {self.seed}")
        if not (self.scan_period > 0 and self.speed >= 0 and self.max_range > 1 and self.height > 0):
            raise InputError(f"scan_period, max_range and height must be > 0 and speed >= 0, got {self}")

    @property
    def sequence_names(self) -> tuple[str, ...]:
        """The sequences written: 08 (val) and the first ``sequences - 1`` training ones (one sequence: 08)."""
        return tuple(sorted(VAL_SEQUENCES + TRAIN_SEQUENCES[:self.sequences - 1]))

    @property
    def drive_length(self) -> float:
        return self.speed * self.scan_period * (self.scans_per_sequence - 1)


@dataclass
class Thing:
    """One labelled object: raw SemanticKITTI label, instance id (0 for stuff) and its meshes."""

    label: str
    instance: int
    parts: list = field(default_factory=list)


class KittiWorld:
    """Ray-castable street: meshes with a raw label, an instance id and a reflectance per object."""

    cast = World.cast  # the nuScenes generator's ray casting (reads only .scene and .geom_obj)

    def __init__(self, things: list[Thing]):
        self.scene = o3d().t.geometry.RaycastingScene()
        geom_obj = []
        for i, thing in enumerate(things):
            for part in thing.parts:
                self.scene.add_triangles(o3d().t.geometry.TriangleMesh.from_legacy(part))
                geom_obj.append(i)
        self.geom_obj = np.array(geom_obj + [-1])
        self.obj_label = np.array([RAW_ID[t.label] | (t.instance << 16) for t in things], dtype=np.uint32)
        self.obj_reflect = np.array([REFLECTANCE[t.label] for t in things])


def build_things(rng: np.random.Generator, length: float) -> list[Thing]:
    """The objects of one street in the road frame (x along the road, y left, z up; ground at 0), the
    drive from x = 0 to ``length`` at y = EGO_Y."""
    x0, x1 = -45.0, length + 75.0
    things: list[Thing] = []
    # a parked bicycle (right) and motorcycle (left) by driveways: no parked car between them and the start
    clear_x = {-1: float(rng.uniform(5, 25)), 1: float(rng.uniform(5, 25))}

    def add(label: str, parts: list, instance: bool = False) -> None:
        things.append(Thing(label, len(things) + 1 if instance else 0, parts))

    def strip(label: str, y_lo: float, y_hi: float, top: float, xa: float = x0, xb: float = x1) -> None:
        add(label, [box(y_hi - y_lo, xb - xa, top + 0.5, (xa + xb) / 2, (y_lo + y_hi) / 2, -0.5, 0.0)])

    strip("road", -LANE, LANE, 0.0)
    for x in np.arange(x0, x1, 6.0):  # dashed centre line, 3 m of paint every 6 m
        strip("lane-marking", -0.06, 0.06, 0.01, x, x + 3.0)
    for side in (-1, 1):
        edges = np.cumsum([LANE, PARKING, SIDEWALK, GARDEN])
        strip("parking", *sorted((side * edges[0], side * edges[1])), 0.0)
        strip("sidewalk", *sorted((side * edges[1], side * edges[2])), 0.12)
        x = x0
        while x < x1:  # front gardens: grass or gravel, behind a fence or a hedge
            l = float(rng.uniform(8, 18))
            strip("terrain" if rng.random() < 0.6 else "other-ground", *sorted((side * edges[2], side * edges[3])),
                  0.06, x, x + l)
            y_fence = side * (edges[3] - 0.1)
            if rng.random() < 0.55:
                add("fence", [box(0.05, l - 0.4, 1.2, x + l / 2, y_fence, 0.0, 0.0)])
            else:
                add("vegetation", [box(0.7, l - 0.4, 1.4, x + l / 2, y_fence, 0.0, 0.0)])
            depth, h = float(rng.uniform(9, 14)), float(rng.uniform(6, 15))
            add("building", [box(depth, l - 1.5, h, x + l / 2, side * (edges[3] + 2.0 + depth / 2), 0.0, 0.0)])
            x += l
        for x in np.arange(x0 + rng.uniform(0, 8), x1, rng.uniform(9, 14)):  # trees in the gardens
            y, h, r = side * (edges[2] + 1.6), float(rng.uniform(2.2, 3.5)), float(rng.uniform(1.4, 2.4))
            add("trunk", [cylinder(0.18, h + 0.3, x, y, 0.0, 10)])
            add("vegetation", [sphere(r, x, y, h + r * 0.8)])
        for k, x in enumerate(np.arange(x0 + rng.uniform(0, 10), x1, 18.0)):  # poles, every other with a sign
            y = side * (edges[1] + 0.35)
            add("pole", [cylinder(0.07, 3.2 if k % 2 == 0 else 5.0, x, y, 0.12, 8)])
            if k % 2 == 0:
                add("traffic-sign", [box(0.05, 0.65, 0.65, x, y, 2.55, math.pi / 2)])
        x = x0 + float(rng.uniform(0, 4))
        while x < x1:  # parked cars, nose to tail with gaps; the driveways kept clear
            if rng.random() < 0.75 and not -16.0 < x - clear_x[side] < 4.0:
                yaw = 0.0 if side < 0 else math.pi
                add("car", vehicle_parts("vehicle.car", x, side * (edges[0] + PARKING / 2), yaw, SIZES["car"]), True)
            x += SIZES["car"][1] + float(rng.uniform(0.8, 5.0))
    sidewalk_y = -(LANE + PARKING + SIDEWALK / 2)

    def near(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi))

    # one of each thing class in the first 30 m ahead (so every sequence holds all 19 classes), more further on
    def person(x: float, y: float, z0: float = 0.12) -> list:
        yaw = float(rng.uniform(-math.pi, math.pi))
        return [box(0.45, 0.3, 1.4, x, y, z0, yaw), sphere(0.12, x, y, z0 + 1.55)]

    def rider(kind: str, label: str, x: float, y: float, yaw: float) -> None:
        w, l, h = SIZES[kind]
        body = [box(0.4, 0.35, 0.75, x, y, h * 0.75, yaw), sphere(0.12, x, y, h * 0.75 + 0.9)]
        add(label, vehicle_parts(f"vehicle.{kind}", x, y, yaw, (w, l, h)) + body, True)

    for k, x in enumerate([near(6, 28)] + list(rng.uniform(30, x1 - 10, 3))):
        add("person", person(x, sidewalk_y + near(-0.8, 0.8)), True)
        if k < 2:
            add("person", person(x + 1.5, -sidewalk_y + near(-0.8, 0.8)), True)
    rider("bicycle", "moving-bicyclist", near(8, 26), -LANE + 0.6, 0.0)
    rider("bicycle", "bicyclist", near(10, 26), LANE - 0.6, math.pi)
    rider("motorcycle", "moving-motorcyclist", near(12, 28), LANE / 2, math.pi)
    rider("motorcycle", "motorcyclist", near(-25, -5), LANE - 0.7, math.pi)  # waiting at the far kerb, behind
    add("bicycle", vehicle_parts("vehicle.bicycle", clear_x[-1], -(LANE + PARKING + 0.4), 0.0, SIZES["bicycle"]), True)
    add("motorcycle", vehicle_parts("vehicle.motorcycle", clear_x[1], LANE + 1.2, math.pi / 2, SIZES["motorcycle"]),
        True)
    add("moving-car", vehicle_parts("vehicle.car", near(15, 30), LANE / 2, math.pi, SIZES["car"]), True)
    add("truck", vehicle_parts("vehicle.truck", near(20, 30) + 8, LANE / 2, math.pi, SIZES["truck"]), True)
    other = "bus" if rng.random() < 0.5 else "other-vehicle"
    add(other, vehicle_parts("vehicle.bus.rigid" if other == "bus" else "vehicle.truck", near(-30, -15), LANE / 2,
                             math.pi, SIZES["bus" if other == "bus" else "van"]), True)
    add("other-structure", [box(1.5, 4.0, 2.4, near(30, 50), -(LANE + PARKING + SIDEWALK - 0.8), 0.12, 0.0)])
    add("other-object", [box(0.6, 0.6, 1.0, near(-10, 10), LANE + PARKING + 0.5, 0.12, 0.0)])
    return things


def beam_elevations(beams: int) -> np.ndarray:
    """Elevation angles [beams] in radians: an HDL-64E-like layout, the upper half of the beams from
    +2.0 to -8.33 degrees, the lower half from -8.83 to -24.8 (any count splits the same way)."""
    upper = beams // 2 + beams % 2
    return np.radians(np.concatenate([np.linspace(2.0, -8.33, upper), np.linspace(-8.83, -24.8, beams - upper)]))


def sweep(world: KittiWorld, lidar_to_road: np.ndarray, cfg: KittiSynthConfig, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray]:
    """One scan: (points float32 [N, 4] x, y, z, reflectance in the sensor frame; labels uint32 [N])."""
    elev = beam_elevations(cfg.beams)
    az = np.linspace(0, 2 * np.pi, cfg.azimuth_steps, endpoint=False)
    e, a = np.meshgrid(elev, az, indexing="ij")
    dirs = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], -1).reshape(-1, 3)
    dirs_road = dirs @ lidar_to_road[:3, :3].T
    t, obj, normals = world.cast(np.broadcast_to(lidar_to_road[:3, 3], dirs_road.shape), dirs_road)
    keep = np.isfinite(t) & (t < cfg.max_range) & (t > 2.5)  # KITTI drops returns from the car itself
    t, obj, normals, dirs, dirs_road = t[keep], obj[keep], normals[keep], dirs[keep], dirs_road[keep]
    r = t + rng.normal(0, 0.02, t.shape)
    cos_inc = np.abs((normals * dirs_road).sum(1))
    reflectance = np.clip(world.obj_reflect[obj] * (0.3 + 0.7 * cos_inc) * rng.uniform(0.85, 1.15, t.shape)
                          * (1.0 - 0.003 * t), 0, 1)
    points = np.concatenate([dirs * r[:, None], reflectance[:, None]], 1).astype(np.float32)
    return points, world.obj_label[obj]


# velodyne -> camera 0 axes (x right, y down, z forward), KITTI's Tr without its small offsets
VELO_TO_CAM = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
_NOMINAL_P = np.array([[718.856, 0.0, 607.1928, 0.0], [0.0, 718.856, 185.2157, 0.0], [0.0, 0.0, 1.0, 0.0]])


def _matrix_line(m: np.ndarray) -> str:
    return " ".join(f"{v:.12e}" for v in np.asarray(m)[:3, :4].ravel())


def write_sequence(folder: Path, cfg: KittiSynthConfig, name: str) -> int:
    """Ray cast and write one sequence (velodyne, labels, calib.txt, poses.txt); returns its point count."""
    rng = np.random.default_rng([cfg.seed, int(name)])
    world = KittiWorld(build_things(rng, cfg.drive_length))
    phase = float(rng.uniform(0, 2 * math.pi))
    (folder / "velodyne").mkdir(parents=True)
    (folder / "labels").mkdir()
    poses, total = [], 0
    for k in range(cfg.scans_per_sequence):
        time_s = k * cfg.scan_period
        y = EGO_Y + 0.3 * math.sin(2 * math.pi * time_s / 9.0 + phase)  # a gentle drift in the lane
        yaw = math.atan2(0.3 * 2 * math.pi / 9.0 * math.cos(2 * math.pi * time_s / 9.0 + phase), max(cfg.speed, 1e-6))
        lidar_to_road = pose_matrix([cfg.speed * time_s, y, cfg.height], yaw_quaternion(yaw))
        points, labels = sweep(world, lidar_to_road, cfg, rng)
        points.tofile(folder / "velodyne" / f"{k:06d}.bin")
        labels.tofile(folder / "labels" / f"{k:06d}.label")
        if k == 0:
            road_to_first = np.linalg.inv(lidar_to_road)
        poses.append(VELO_TO_CAM @ road_to_first @ lidar_to_road @ np.linalg.inv(VELO_TO_CAM))
        total += len(points)
    (folder / "calib.txt").write_text("".join(f"P{i}: {_matrix_line(_NOMINAL_P)}\n" for i in range(4))
                                      + f"Tr: {_matrix_line(VELO_TO_CAM)}\n")
    (folder / "poses.txt").write_text("".join(_matrix_line(p) + "\n" for p in poses))
    return total


def generate_kitti(out_dir: str | Path, config: KittiSynthConfig = KittiSynthConfig(), progress=None) -> Path:
    """Write the synthetic world to ``out_dir/sequences/NN/...`` (``out_dir`` must not exist; written in
    a temporary folder renamed at the end). ``progress``: optional callback(done, total sequences)."""
    with new_folder(out_dir) as tmp:
        points = {}
        for done, name in enumerate(config.sequence_names, 1):
            points[name] = write_sequence(tmp / "sequences" / name, config, name)
            if progress:
                progress(done, len(config.sequence_names))
        (tmp / "relviz_synthetic_kitti.json").write_text(json.dumps(
            {"generator": "relviz.data.synthetic_kitti", **asdict(config), "points": points}, indent=1))
    return Path(out_dir)
