"""Writing the synthetic dataset: every scene's sensor files and table records, into a temporary
folder renamed into place at the end so that an interrupted run leaves nothing half-written."""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from pyquaternion import Quaternion

from relviz.data.geometry import pose_matrix, transform_points, yaw_quaternion
from relviz.data.nuscenes import CAMERAS
from relviz.data.synthetic.config import SynthConfig
from relviz.data.synthetic.render import lidar_sweep, render_camera
from relviz.data.synthetic.scene import build_street
from relviz.data.synthetic.tables import CHANNELS, attribute, calibrations, static_tables, token
from relviz.errors import InputError
from relviz.files import new_folder


def generate(out_dir: str | Path, config: SynthConfig = SynthConfig(), progress=None,
             workers: int | None = None) -> Path:
    """Write the synthetic dataset to ``out_dir`` (must not exist yet); returns its path.

    progress: optional callback(done scenes, total scenes). workers: processes (default: CPU count, at most 4).
    """
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    with new_folder(out_dir) as tmp:
        _generate_into(tmp, config, progress, workers)
    return Path(out_dir)


def _generate_into(root: Path, cfg: SynthConfig, progress, workers: int) -> None:
    v = cfg.version
    for sub in [v, f"lidarseg/{v}", "maps", "samples/LIDAR_TOP"] + [f"samples/{c}" for c in CAMERAS]:
        (root / sub).mkdir(parents=True, exist_ok=True)
    tables = static_tables(cfg)
    Image.new("L", (16, 16), 0).save(root / tables["map"][0]["filename"])
    tables["lidarseg"] = []
    jobs = [(root, cfg, si, name) for si, name in enumerate(cfg.scene_names)]
    per_scene = []
    if workers > 1:
        # scenes are independent and seeded by (seed, scene index): a pool gives identical bytes
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for done, records in enumerate(pool.map(_scene_worker, jobs), start=1):
                per_scene.append(records)
                if progress:
                    progress(done, len(jobs))
    else:
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
    static = static_tables(cfg)
    calibs = calibrations(static)
    log_token = static["log"][0]["token"]
    cat_token = {c["name"]: c["token"] for c in static["category"]}
    attr_token = {a["name"]: a["token"] for a in static["attribute"]}
    tb = {name: [] for name in ("sample", "sample_data", "ego_pose", "sample_annotation", "instance", "scene",
                                "lidarseg")}
    w, h = cfg.image_size
    street = build_street(cfg, si)
    objects, rng = street.objects, street.rng
    t0 = 1_600_000_000_000_000 + si * 100_000_000
    scene_token = token(seed, "scene", scene_name)
    sample_tokens = [token(seed, scene_name, "sample", i) for i in range(cfg.samples_per_scene)]
    prev_sd = {c: "" for c in CHANNELS}
    last_sd: dict[str, dict] = {}
    ann_by_obj: dict[int, list[dict]] = {}
    for i, sample_token in enumerate(sample_tokens):
        ts = t0 + i * 500_000
        tb["sample"].append({"token": sample_token, "timestamp": ts, "scene_token": scene_token,
                             "prev": sample_tokens[i - 1] if i else "",
                             "next": sample_tokens[i + 1] if i + 1 < len(sample_tokens) else ""})
        lidar_counts = None
        for ci, channel in enumerate(CHANNELS):
            # cameras fire a few ms after the lidar, as the spinning lidar passes them
            sd_ts = ts + (0 if channel == "LIDAR_TOP" else 8_000 * ci + 2_000)
            ego_global = street.ego_to_global((sd_ts - t0) / 1e6)
            pose = {"token": token(seed, scene_name, i, channel, "ego_pose"), "timestamp": sd_ts,
                    "translation": list(ego_global[:3, 3]),
                    "rotation": list(Quaternion(matrix=ego_global[:3, :3], atol=1e-6).elements)}
            tb["ego_pose"].append(pose)
            sd_token = token(seed, scene_name, i, channel, "sample_data")
            sensor_to_global = ego_global @ pose_matrix(calibs[channel]["translation"],
                                                        calibs[channel]["rotation"])
            stem = f"{scene_name}__{channel}__{sd_ts}"
            if channel == "LIDAR_TOP":
                filename = f"samples/LIDAR_TOP/{stem}.pcd.bin"
                points, fine, obj = lidar_sweep(street.world, sensor_to_global, cfg, rng)
                points.tofile(root / filename)
                label_file = f"lidarseg/{v}/{sd_token}_lidarseg.bin"
                fine.tofile(root / label_file)
                tb["lidarseg"].append({"token": sd_token, "sample_data_token": sd_token, "filename": label_file})
                lidar_counts = np.bincount(obj[obj >= 0], minlength=len(objects))
                extra = {"fileformat": "pcd", "width": 0, "height": 0}
            else:
                filename = f"samples/{channel}/{stem}.jpg"
                rgb, cls = render_camera(street.world, sensor_to_global, calibs[channel]["camera_intrinsic"], w, h,
                                         rng)
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
            center = transform_points(street.road_to_global, np.array([obj.center]))[0]
            ann = {"token": token(seed, scene_name, i, "ann", oi), "sample_token": sample_token,
                   "instance_token": token(seed, scene_name, "instance", oi), "visibility_token": "4",
                   "attribute_tokens": [attr_token[attribute(obj.fine)]], "translation": list(center),
                   "size": list(obj.size), "rotation": yaw_quaternion(obj.yaw + street.road_yaw),
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
