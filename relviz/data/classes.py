"""nuScenes-lidarseg classes: the 32 fine categories and the 16 merged classes (0 = ignore).

The fine-to-merged mapping is the one nuscenes-devkit's ``LidarsegClassMapper`` applies (by name);
a test checks the two agree.
"""

from __future__ import annotations

import numpy as np

from relviz.errors import InputError

# Official lidarseg category names, by index.
FINE_CLASSES = (
    "noise", "animal", "human.pedestrian.adult", "human.pedestrian.child",
    "human.pedestrian.construction_worker", "human.pedestrian.personal_mobility",
    "human.pedestrian.police_officer", "human.pedestrian.stroller", "human.pedestrian.wheelchair",
    "movable_object.barrier", "movable_object.debris", "movable_object.pushable_pullable",
    "movable_object.trafficcone", "static_object.bicycle_rack", "vehicle.bicycle", "vehicle.bus.bendy",
    "vehicle.bus.rigid", "vehicle.car", "vehicle.construction", "vehicle.emergency.ambulance",
    "vehicle.emergency.police", "vehicle.motorcycle", "vehicle.trailer", "vehicle.truck",
    "flat.driveable_surface", "flat.other", "flat.sidewalk", "flat.terrain", "static.manmade",
    "static.other", "static.vegetation", "vehicle.ego",
)

# The 16 merged classes, index 1..16 (0 is ignore).
CLASSES = (
    "ignore", "barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian",
    "traffic_cone", "trailer", "truck", "driveable_surface", "other_flat", "sidewalk", "terrain", "manmade",
    "vegetation",
)
NUM_CLASSES = len(CLASSES)  # 17 including ignore

_FINE_TO_MERGED_NAME = {
    "human.pedestrian.adult": "pedestrian", "human.pedestrian.child": "pedestrian",
    "human.pedestrian.police_officer": "pedestrian", "human.pedestrian.construction_worker": "pedestrian",
    "vehicle.car": "car", "vehicle.motorcycle": "motorcycle", "vehicle.bicycle": "bicycle",
    "vehicle.bus.bendy": "bus", "vehicle.bus.rigid": "bus", "vehicle.truck": "truck",
    "vehicle.construction": "construction_vehicle", "vehicle.trailer": "trailer",
    "movable_object.barrier": "barrier", "movable_object.trafficcone": "traffic_cone",
    "flat.driveable_surface": "driveable_surface", "flat.sidewalk": "sidewalk", "flat.terrain": "terrain",
    "flat.other": "other_flat", "static.manmade": "manmade", "static.vegetation": "vegetation",
}

# fine index -> merged index (uint8 lookup table)
FINE_TO_MERGED = np.array([CLASSES.index(_FINE_TO_MERGED_NAME.get(n, "ignore")) for n in FINE_CLASSES],
                          dtype=np.uint8)

# nuscenes-devkit's coarse colour map (RGB), index 0..16
CLASS_COLORS = np.array([
    (0, 0, 0), (112, 128, 144), (220, 20, 60), (255, 127, 80), (255, 158, 0), (233, 150, 70), (255, 61, 99),
    (0, 0, 230), (47, 79, 79), (255, 140, 0), (255, 99, 71), (0, 207, 191), (175, 0, 75), (75, 0, 75),
    (112, 180, 60), (222, 184, 135), (0, 175, 0),
], dtype=np.uint8)


def merge_labels(fine: np.ndarray) -> np.ndarray:
    """Fine lidarseg indices [N] (0..31) -> merged classes [N] (0..16)."""
    fine = np.asarray(fine)
    if fine.size and (fine.min() < 0 or fine.max() >= len(FINE_CLASSES)):
        raise InputError(f"fine lidarseg labels must lie in [0, {len(FINE_CLASSES) - 1}], "
                         f"got [{fine.min()}, {fine.max()}]")
    return FINE_TO_MERGED[fine]
