"""nuScenes-format data: the synthetic generator, the devkit-backed loader, pairs and voxels."""

from relviz.data.classes import CLASSES, FINE_CLASSES, NUM_CLASSES, merge_labels
from relviz.data.dataset import NuScenesLidarSeg, PairConfig, collate
from relviz.data.nuscenes import CAMERAS, DatasetError, open_nuscenes, split_scenes
from relviz.data.synthetic import SynthConfig, generate
from relviz.data.voxel import voxelize

__all__ = ["CLASSES", "FINE_CLASSES", "NUM_CLASSES", "merge_labels", "NuScenesLidarSeg", "PairConfig", "collate",
           "DatasetError", "open_nuscenes", "split_scenes", "CAMERAS", "SynthConfig", "generate", "voxelize"]
