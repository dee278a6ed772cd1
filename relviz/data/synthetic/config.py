"""What the synthetic dataset is made of: its scene names and the generator's settings."""

from __future__ import annotations

from dataclasses import dataclass

from relviz.errors import InputError

# the devkit's mini_train and mini_val scenes, in the order scenes are generated (scene index = position)
MINI_TRAIN = ("scene-0061", "scene-0553", "scene-0655", "scene-0757", "scene-0796", "scene-1077", "scene-1094",
              "scene-1100")
MINI_VAL = ("scene-0103", "scene-0916")
SCENE_NAMES = MINI_TRAIN + MINI_VAL
VERSIONS = ("v1.0-mini", "v1.0-trainval")
TRAINVAL_SCENES = 20  # the default size of a synthetic v1.0-trainval set
# nuScenes trainval: 700 train and 150 val scenes (nuscenes.utils.splits)
TRAINVAL_TRAIN, TRAINVAL_VAL = 700, 150


def trainval_scene_names(n: int) -> tuple[str, ...]:
    """``n`` real v1.0-trainval scene names, so that the devkit's ``create_splits_scenes()`` puts each
    in its split: the first train scenes, then the first val scenes, in the nuScenes proportion
    (150 of 850 in val, at least one scene in each split)."""
    from nuscenes.utils.splits import create_splits_scenes

    if not 2 <= n <= TRAINVAL_TRAIN + TRAINVAL_VAL:
        raise InputError(f"scenes must be in [2, {TRAINVAL_TRAIN + TRAINVAL_VAL}] for v1.0-trainval, got {n}")
    n_val = min(n - 1, max(1, round(n * TRAINVAL_VAL / (TRAINVAL_TRAIN + TRAINVAL_VAL))))
    splits = create_splits_scenes()
    return tuple(splits["train"][:n - n_val]) + tuple(splits["val"][:n_val])


@dataclass(frozen=True)
class SynthConfig:
    seed: int = 0
    samples_per_scene: int = 8
    image_size: tuple[int, int] = (800, 450)
    beams: int = 32
    azimuth_steps: int = 1090
    max_range: float = 70.0
    speed: float = 10.0  # m/s; keyframes are 0.5 s apart as in nuScenes
    version: str = "v1.0-mini"
    scenes: int | None = None  # v1.0-trainval: how many (default TRAINVAL_SCENES); v1.0-mini: always its 10

    def __post_init__(self) -> None:
        if not 2 <= self.samples_per_scene <= 40:  # nuScenes scenes have about 40 keyframes
            raise InputError(f"samples_per_scene must be in [2, 40], got {self.samples_per_scene}")
        if self.seed < 0:
            raise InputError(f"seed must be >= 0, got {self.seed}")
        if not 2 <= self.beams <= 128:
            raise InputError(f"beams must be in [2, 128], got {self.beams}")
        w, h = self.image_size
        if not (64 <= w <= 1600 and 64 <= h <= 900):
            raise InputError(f"image size must be between 64x64 and 1600x900, got {w}x{h}")
        if self.version not in VERSIONS:
            raise InputError(f"version must be one of {', '.join(VERSIONS)}, got {self.version!r}")
        if self.version == "v1.0-mini" and self.scenes not in (None, len(SCENE_NAMES)):
            raise InputError(f"scenes: v1.0-mini has its {len(SCENE_NAMES)} scenes, got {self.scenes}; "
                             f"use version v1.0-trainval for another number")
        if self.version == "v1.0-trainval":
            # 0 is a number of scenes, not "the default": only None (not given) means TRAINVAL_SCENES
            trainval_scene_names(TRAINVAL_SCENES if self.scenes is None else self.scenes)  # checks the number

    @property
    def scene_names(self) -> tuple[str, ...]:
        """The scenes generated, in order (a scene's index is its position: it seeds the street)."""
        if self.version == "v1.0-mini":
            return SCENE_NAMES
        return trainval_scene_names(TRAINVAL_SCENES if self.scenes is None else self.scenes)

    @property
    def drive_length(self) -> float:
        """Metres the ego drives over a scene's keyframes (0.5 s apart)."""
        return self.speed * 0.5 * (self.samples_per_scene - 1)
