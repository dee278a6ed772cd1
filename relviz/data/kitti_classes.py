"""SemanticKITTI's raw label ids, its learning map to 19 classes plus ignore, and its sequence splits.

The ids, names, mapping and splits are those of semantic-kitti-api's ``config/semantic-kitti.yaml``
(PRBonn/semantic-kitti-api, commit c4b72b1c, 2019-07-24), written out here as a table (docs/kitti.md).
A ``.label`` file holds one uint32 per point: the raw semantic id in the low 16 bits, the instance id
in the high 16. The learning map merges moving and static objects (``moving-car`` -> car), folds bus,
on-rails and other-vehicle into ``other-vehicle``, lane markings into road, and sends unlabeled,
outlier, other-structure and other-object to 0, the ignore class.
"""

from __future__ import annotations

import numpy as np

from relviz.errors import InputError

# raw semantic id -> (name, learning class 0..19); 0 = ignore
RAW_LABELS: dict[int, tuple[str, int]] = {
    0: ("unlabeled", 0), 1: ("outlier", 0),
    10: ("car", 1), 11: ("bicycle", 2), 13: ("bus", 5), 15: ("motorcycle", 3), 16: ("on-rails", 5),
    18: ("truck", 4), 20: ("other-vehicle", 5),
    30: ("person", 6), 31: ("bicyclist", 7), 32: ("motorcyclist", 8),
    40: ("road", 9), 44: ("parking", 10), 48: ("sidewalk", 11), 49: ("other-ground", 12),
    50: ("building", 13), 51: ("fence", 14), 52: ("other-structure", 0), 60: ("lane-marking", 9),
    70: ("vegetation", 15), 71: ("trunk", 16), 72: ("terrain", 17), 80: ("pole", 18), 81: ("traffic-sign", 19),
    99: ("other-object", 0),
    252: ("moving-car", 1), 253: ("moving-bicyclist", 7), 254: ("moving-person", 6),
    255: ("moving-motorcyclist", 8), 256: ("moving-on-rails", 5), 257: ("moving-bus", 5),
    258: ("moving-truck", 4), 259: ("moving-other-vehicle", 5),
}
RAW_ID = {name: raw for raw, (name, _) in RAW_LABELS.items()}

# the 19 learning classes, index 1..19 (0 is ignore), in the order of the yaml's learning_map_inv
KITTI_CLASSES = (
    "ignore", "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist",
    "road", "parking", "sidewalk", "other-ground", "building", "fence", "vegetation", "trunk", "terrain", "pole",
    "traffic-sign",
)
NUM_KITTI_CLASSES = len(KITTI_CLASSES) - 1  # 19, the ignore class left out

# raw id -> learning class; -1 marks an id the learning map does not know
LEARNING_LUT = np.full(1 << 16, -1, dtype=np.int64)
LEARNING_LUT[list(RAW_LABELS)] = [cls for _, cls in RAW_LABELS.values()]

# sequence splits of the yaml's ``split``: 11-21 have no public labels
TRAIN_SEQUENCES = ("00", "01", "02", "03", "04", "05", "06", "07", "09", "10")
VAL_SEQUENCES = ("08",)
TEST_SEQUENCES = tuple(f"{i:02d}" for i in range(11, 22))
SPLITS = {"train": TRAIN_SEQUENCES, "val": VAL_SEQUENCES, "test": TEST_SEQUENCES,
          "trainval": TRAIN_SEQUENCES + VAL_SEQUENCES}


def learning_classes(semantic: np.ndarray, source: str = "labels") -> np.ndarray:
    """Raw semantic ids [N] (the low 16 bits of a ``.label``) -> learning classes int64 [N] in 0..19.
    An id the learning map does not know is refused, naming ``source`` (the file) and the ids."""
    semantic = np.asarray(semantic)
    if semantic.size and (semantic.min() < 0 or semantic.max() >= len(LEARNING_LUT)):
        raise InputError(f"{source}: semantic ids must lie in [0, 65535], got [{semantic.min()}, {semantic.max()}]")
    classes = LEARNING_LUT[semantic.astype(np.int64)]
    if (classes < 0).any():
        unknown = np.unique(semantic[classes < 0])
        raise InputError(f"{source}: semantic id(s) {', '.join(map(str, unknown[:8].tolist()))}"
                         f"{' ...' if len(unknown) > 8 else ''} are not in SemanticKITTI's learning map "
                         f"(known: {', '.join(map(str, sorted(RAW_LABELS)))}); a dataset of the family with other "
                         f"ids needs a class map to SemanticKITTI's (docs/kitti.md)")
    return classes


def split_sequences(split: str) -> tuple[str, ...]:
    """The sequence names (two digits) of ``split``: train, val, test or trainval."""
    if split not in SPLITS:
        raise InputError(f"split must be one of {', '.join(SPLITS)} for SemanticKITTI, got {split!r}")
    return SPLITS[split]
