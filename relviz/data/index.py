"""The keyframe index of a split: what the loader needs of every keyframe (files, calibrations, ego
poses, camera sizes), read once through nuscenes-devkit and cached as JSON.

Importing the devkit takes about 3 s (it pulls in scikit-learn and matplotlib); with a cached index a
dataset opens in milliseconds, which is what the app needs for a page's first render (the same idea
as mmdetection3d's info files). The cache key covers the dataroot, version, split and the size and
modification time of every table file, so a regenerated or edited dataset gets a fresh index.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from relviz.data.nuscenes import check_dataroot, open_nuscenes, split_scenes
from relviz.data.nuscenes import CAMERAS, TABLES
from relviz.files import read_json, write_json

INDEX_FORMAT = 1


def _sensor_record(nusc, sd: dict) -> dict:
    calib = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    pose = nusc.get("ego_pose", sd["ego_pose_token"])
    return {"token": sd["token"], "sample_token": sd["sample_token"], "filename": sd["filename"],
            "width": sd.get("width"), "height": sd.get("height"),
            "calibrated_sensor": {k: calib[k] for k in ("translation", "rotation", "camera_intrinsic")},
            "ego_pose": {k: pose[k] for k in ("translation", "rotation")}}


def build_index(nusc, split: str | list[str] | tuple[str, ...]) -> dict:
    """The keyframes of ``split`` (scenes sorted by name, keyframes in time order) of an open
    ``NuScenes``: ``{"version", "scenes", "has_lidarseg", "keyframes": [...]}``; each keyframe has
    ``sample_token``, ``scene``, ``lidar`` (a sensor record), ``lidarseg`` (label file or None) and
    ``cameras`` (channel -> sensor record, in the order of ``CAMERAS``)."""
    scenes = split_scenes(nusc, split)
    wanted = set(scenes)
    lidarseg = {r["sample_data_token"]: r["filename"] for r in getattr(nusc, "lidarseg", [])}
    keyframes = []
    for scene in sorted(nusc.scene, key=lambda s: s["name"]):
        if scene["name"] not in wanted:
            continue
        token = scene["first_sample_token"]
        while token:
            sample = nusc.get("sample", token)
            lidar = _sensor_record(nusc, nusc.get("sample_data", sample["data"]["LIDAR_TOP"]))
            keyframes.append({
                "sample_token": token, "scene": scene["name"], "lidar": lidar,
                "lidarseg": lidarseg.get(lidar["token"]),
                "cameras": {ch: _sensor_record(nusc, nusc.get("sample_data", sample["data"][ch])) for ch in CAMERAS}})
            token = sample["next"]
    return {"format": INDEX_FORMAT, "version": nusc.version, "scenes": scenes, "has_lidarseg": bool(lidarseg),
            "keyframes": keyframes}


def index_key(root: Path, version: str, split) -> str:
    """A key that changes with the dataroot, version, split, and any table file's size or mtime."""
    h = hashlib.sha256(json.dumps([INDEX_FORMAT, str(root.resolve()), version, split]).encode())
    for name in [*TABLES, "lidarseg"]:
        p = root / version / f"{name}.json"
        if p.is_file():
            st = p.stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:24]


def load_index(dataroot: str | Path, version: str, split, cache_dir: str | Path) -> dict:
    """The index of ``split``, from ``<cache_dir>/index/`` or built with the devkit and stored there
    (written to a temporary file and renamed, so a reader never sees half of one)."""
    root = check_dataroot(dataroot, version)
    path = Path(cache_dir) / "index" / f"{index_key(root, version, split)}.json"
    index = read_json(path)
    if isinstance(index, dict) and index.get("format") == INDEX_FORMAT:
        return index
    index = build_index(open_nuscenes(root, version), split)
    write_json(path, index)
    return index
