"""Sensor simulation on a :class:`~relviz.data.synthetic.scene.World`: the lidar sweep, camera ray
casting with class-specific procedural textures, and :func:`render_view` for one camera image."""

from __future__ import annotations

import numpy as np

from relviz.data.geometry import pose_matrix
from relviz.data.nuscenes import CAMERAS
from relviz.data.synthetic.config import SynthConfig
from relviz.data.synthetic.scene import KINDS, World, build_street
from relviz.data.synthetic.tables import calibrations, static_tables
from relviz.errors import InputError

_LIGHT = (np.array([0.4, 0.3, 0.85]) / np.linalg.norm([0.4, 0.3, 0.85])).astype(np.float32)


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


def _shade(world: World, obj: np.ndarray, p_global: np.ndarray, normals: np.ndarray, dirs: np.ndarray,
           rng: np.random.Generator) -> np.ndarray:
    """RGB uint8 [N, 3] of ray hits, sky where missed.

    The hot path of the generator: float32 throughout, pixels sorted by texture kind once so each
    texture runs on a contiguous slice, and image noise cut from one pre-drawn field.
    """
    n = len(obj)
    g2r = world.global_to_road.astype(np.float32)
    kinds = world.obj_kind_id[obj]  # misses (-1) get the last entry: shaded, then painted over as sky
    order = np.argsort(kinds, kind="stable")
    bounds = np.searchsorted(kinds[order], np.arange(len(KINDS) + 1))
    p_road = p_global[order].astype(np.float32) @ g2r[:3, :3].T + g2r[:3, 3]
    n_road = normals[order].astype(np.float32) @ g2r[:3, :3].T
    shaded = world.obj_color[obj[order]]
    for kind_id in range(len(KINDS)):
        a, b = bounds[kind_id], bounds[kind_id + 1]
        if b > a:
            shaded[a:b] *= _texture(KINDS[kind_id], p_road[a:b], n_road[a:b])
    shaded *= (0.45 + 0.55 * np.abs(n_road @ _LIGHT))[:, None]
    rgb = np.empty_like(shaded)
    rgb[order] = shaded
    sky = obj < 0
    up = np.clip(dirs[sky, 2], 0, 1).astype(np.float32)
    rgb[sky] = np.stack([0.55 + 0.2 * up, 0.70 + 0.2 * up, np.full_like(up, 0.95)], 1)
    start = int(rng.integers(0, len(world.noise) - 3 * n))
    rgb += world.noise[start:start + 3 * n].reshape(n, 3)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def lidar_sweep(world: World, lidar_to_global: np.ndarray, cfg: SynthConfig, rng: np.random.Generator):
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


_RAY_CACHE: dict = {}


def _pixel_rays(intrinsic, w: int, h: int) -> np.ndarray:
    """Unit ray directions [h*w, 3] in the camera frame through integer pixel coordinates."""
    key = (tuple(map(tuple, np.asarray(intrinsic))), w, h)
    if key not in _RAY_CACHE:
        u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
        pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], 1)
        dirs = pix @ np.linalg.inv(np.asarray(intrinsic)).T
        _RAY_CACHE[key] = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    return _RAY_CACHE[key]


def render_camera(world: World, cam_to_global: np.ndarray, intrinsic, w: int, h: int, rng: np.random.Generator):
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
    n_scenes = len(config.scene_names)
    if not 0 <= scene_index < n_scenes:
        raise InputError(f"scene_index must be in [0, {n_scenes - 1}], got {scene_index}")
    if camera not in CAMERAS:
        raise InputError(f"camera must be one of {', '.join(CAMERAS)}, got {camera!r}")
    street = build_street(config, scene_index)
    calib = calibrations(static_tables(config))[camera]
    cam_to_global = street.ego_to_global(time_s) @ pose_matrix(calib["translation"], calib["rotation"])
    w, h = config.image_size
    return render_camera(street.world, cam_to_global, calib["camera_intrinsic"], w, h,
                         np.random.default_rng([config.seed, scene_index, 99]))
