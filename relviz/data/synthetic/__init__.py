"""A deterministic synthetic dataset in the genuine nuScenes v1.0-mini (or v1.0-trainval) layout, with lidarseg.

Procedural street scenes in which all 16 merged classes occur with nuScenes-like sizes: v1.0-mini's
ten (named as the devkit's ``mini_train`` and ``mini_val`` scenes), or any number of v1.0-trainval
scenes named as the devkit's ``train`` and ``val`` scenes (:func:`trainval_scene_names`), so that
the devkit's splits apply unchanged. For every keyframe a 32-beam spinning lidar
and the 6 nuScenes cameras are ray cast against the scene with open3d's ``RaycastingScene``:

- lidar: float32 N x 5 (x, y, z, intensity, ring) ``.pcd.bin`` in the LIDAR_TOP frame, range noise
  and material-dependent intensity; lidarseg labels are the fine class of the surface hit;
- cameras: JPEGs shaded with class-specific procedural textures, each rendered from the ego pose
  at its own timestamp, plus a per-pixel fine-class PNG alongside (``<image>.class.png``; not part
  of the nuScenes tables) so that label/pixel agreement can be checked.

Modules: ``config`` (SynthConfig, scene names), ``meshes`` (open3d meshes), ``scene`` (the street,
its materials and ray-castable world: the one scene builder), ``render`` (lidar and camera
simulation, :func:`render_view`), ``tables`` (scene-independent nuScenes tables, tokens) and
``writer`` (:func:`generate`: per-scene files and records, written atomically).
"""

from relviz.data.synthetic.config import MINI_TRAIN, MINI_VAL, SynthConfig, trainval_scene_names
from relviz.data.synthetic.render import render_view
from relviz.data.synthetic.writer import generate

__all__ = ["MINI_TRAIN", "MINI_VAL", "SynthConfig", "generate", "render_view", "trainval_scene_names"]
