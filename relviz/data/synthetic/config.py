"""What the synthetic dataset is made of: its scene names and the generator's settings."""

from __future__ import annotations

from dataclasses import dataclass

from relviz.errors import InputError

# the devkit's mini_train and mini_val scenes, in the order scenes are generated (scene index = position)
MINI_TRAIN = ("scene-0061", "scene-0553", "scene-0655", "scene-0757", "scene-0796", "scene-1077", "scene-1094",
              "scene-1100")
MINI_VAL = ("scene-0103", "scene-0916")
SCENE_NAMES = MINI_TRAIN + MINI_VAL


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

    def __post_init__(self) -> None:
        if not 2 <= self.samples_per_scene <= 40:  # nuScenes scenes have about 40 keyframes
            raise InputError(f"samples_per_scene must be in [2, 40], got {self.samples_per_scene}")
        if self.seed < 0:
            raise InputError(f"seed must be >= 0, got {self.seed}")
        w, h = self.image_size
        if not (64 <= w <= 1600 and 64 <= h <= 900):
            raise InputError(f"image size must be between 64x64 and 1600x900, got {w}x{h}")

    @property
    def drive_length(self) -> float:
        """Metres the ego drives over a scene's keyframes (0.5 s apart)."""
        return self.speed * 0.5 * (self.samples_per_scene - 1)
