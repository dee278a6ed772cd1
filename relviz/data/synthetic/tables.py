"""The scene-independent nuScenes tables of the synthetic dataset: categories, attributes, the sensor
rig and its calibration, log and map; and the md5 tokens every record is named by."""

from __future__ import annotations

import hashlib
import math

import numpy as np
from pyquaternion import Quaternion

from relviz.data.classes import FINE_CLASSES
from relviz.data.geometry import yaw_quaternion
from relviz.data.nuscenes import CAMERAS, TABLES
from relviz.data.synthetic.config import SynthConfig
from relviz.data.synthetic.meshes import rot_z

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
CHANNELS = ("LIDAR_TOP",) + CAMERAS


def token(*parts) -> str:
    """The record token of ``parts`` (md5 of their '/'-joined text: the same in every run)."""
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def static_tables(cfg: SynthConfig) -> dict[str, list]:
    """The tables that do not depend on the scenes (deterministic in the seed)."""
    seed = cfg.seed
    t: dict[str, list] = {name: [] for name in TABLES}
    for i, name in enumerate(FINE_CLASSES):
        t["category"].append({"token": token(seed, "category", name), "name": name,
                              "description": f"synthetic {name}", "index": i})
    for name in ("vehicle.moving", "vehicle.parked", "vehicle.stopped", "pedestrian.moving", "pedestrian.standing",
                 "pedestrian.sitting_lying_down", "cycle.with_rider", "cycle.without_rider"):
        t["attribute"].append({"token": token(seed, "attribute", name), "name": name, "description": name})
    for i, level in enumerate(("v0-40", "v40-60", "v60-80", "v80-100"), start=1):
        t["visibility"].append({"token": str(i), "level": level, "description": f"visibility {level}"})
    w, h = cfg.image_size
    for channel in CHANNELS:
        tok = token(seed, "sensor", channel)
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
            cam_to_ego = rot_z(math.radians(yaw_deg)) @ np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0],
                                                                  [0.0, -1.0, 0.0]])
            calib = {"translation": list(trans), "rotation": list(Quaternion(matrix=cam_to_ego).elements),
                     "camera_intrinsic": k}
        t["calibrated_sensor"].append({"token": token(seed, "calibrated_sensor", channel), "sensor_token": tok,
                                       **calib})
    log_token = token(seed, "log")
    t["log"].append({"token": log_token, "logfile": "relviz-synthetic", "vehicle": "relviz-ego",
                     "date_captured": "2026-01-01", "location": "synthetic-town"})
    t["map"].append({"token": token(seed, "map"), "log_tokens": [log_token], "category": "semantic_prior",
                     "filename": f"maps/{token(seed, 'map')}.png"})
    return t


def calibrations(tables: dict[str, list]) -> dict[str, dict]:
    """Channel -> its calibrated_sensor record, from :func:`static_tables`."""
    channel_of = {s["token"]: s["channel"] for s in tables["sensor"]}
    return {channel_of[c["sensor_token"]]: c for c in tables["calibrated_sensor"]}


def attribute(fine: str) -> str:
    """The nuScenes attribute of a (static) object of fine class ``fine``."""
    if fine.startswith("human"):
        return "pedestrian.standing"
    if fine in ("vehicle.bicycle", "vehicle.motorcycle"):
        return "cycle.without_rider"
    return "vehicle.parked"
