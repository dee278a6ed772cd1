"""One class list for nuScenes-lidarseg's 16 classes and SemanticKITTI's 19, so that a score on one
world and a score on the other are over the same classes (issue #29: a drop in mIoU between worlds
with different class lists mixes worse features with a different task).

The list and both maps were written from the two datasets' class definitions before any score was
computed with them (docs/kitti.md, "A common class list"):

* nuScenes' ``bus``, ``construction_vehicle`` and ``trailer`` are KITTI's ``other-vehicle`` (which
  holds bus, on-rails, trailers); KITTI's ``road`` and ``parking`` are nuScenes'
  ``driveable_surface`` (paved surfaces a car may drive on, parking lots included); KITTI's
  ``building``, ``fence``, ``pole`` and ``traffic-sign`` are nuScenes' ``manmade`` (its definition
  lists buildings, walls, fences, poles and signs); KITTI's ``trunk`` is nuScenes' ``vegetation``
  (trees included); KITTI's ``other-ground`` is nuScenes' ``other_flat`` (traffic islands).
* Left out (ignored on both sides): nuScenes' ``barrier`` and ``traffic_cone`` (temporary objects
  KITTI has no class for) and KITTI's ``bicyclist`` and ``motorcyclist`` (a rider: nuScenes has no
  rider class, and whether its box label gives a rider's points to the cycle or to ``pedestrian``
  is not settled by its definitions).
"""

from __future__ import annotations

import numpy as np

from relviz.data.classes import CLASSES
from relviz.errors import RelvizError
from relviz.data.kitti_classes import KITTI_CLASSES

COMMON_CLASSES = (
    "ignore", "car", "bicycle", "motorcycle", "truck", "other_vehicle", "pedestrian", "driveable_surface",
    "other_flat", "sidewalk", "terrain", "manmade", "vegetation",
)
NUM_COMMON_CLASSES = len(COMMON_CLASSES) - 1  # 12

_NUSCENES = {
    "car": "car", "bicycle": "bicycle", "motorcycle": "motorcycle", "truck": "truck", "bus": "other_vehicle",
    "construction_vehicle": "other_vehicle", "trailer": "other_vehicle", "pedestrian": "pedestrian",
    "driveable_surface": "driveable_surface", "other_flat": "other_flat", "sidewalk": "sidewalk",
    "terrain": "terrain", "manmade": "manmade", "vegetation": "vegetation",
}
_KITTI = {
    "car": "car", "bicycle": "bicycle", "motorcycle": "motorcycle", "truck": "truck",
    "other-vehicle": "other_vehicle", "person": "pedestrian", "road": "driveable_surface",
    "parking": "driveable_surface", "other-ground": "other_flat", "sidewalk": "sidewalk", "terrain": "terrain",
    "building": "manmade", "fence": "manmade", "pole": "manmade", "traffic-sign": "manmade",
    "vegetation": "vegetation", "trunk": "vegetation",
}


def _lookup(names: tuple[str, ...], mapping: dict[str, str]) -> np.ndarray:
    unknown = sorted(set(mapping) - set(names)) + sorted(set(mapping.values()) - set(COMMON_CLASSES))
    if unknown:  # a renamed class must fail here, not silently become "ignore"
        raise RelvizError(f"relviz/data/common_classes.py: the class maps name unknown classes {unknown}")
    return np.array([COMMON_CLASSES.index(mapping.get(n, "ignore")) for n in names], dtype=np.int64)


NUSCENES_TO_COMMON = _lookup(CLASSES, _NUSCENES)  # merged nuScenes class 0..16 -> common class 0..12
KITTI_TO_COMMON = _lookup(KITTI_CLASSES, _KITTI)  # KITTI learning class 0..19 -> common class 0..12


def to_common(labels: np.ndarray, lookup: np.ndarray) -> np.ndarray:
    """A dataset's class indices [N] as common classes [N] (0: ignored) through ``lookup``."""
    return lookup[np.asarray(labels, dtype=np.int64)]
