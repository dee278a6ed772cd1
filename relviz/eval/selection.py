"""Which validation keyframes an evaluation reads: S scenes x k keyframes spread over each scene.

Keyframes of one scene are not independent (one street, one drive, half a second apart), so the
scene is the unit of evaluation uncertainty (relviz.stats) and an evaluation set is chosen in scenes:
``scenes`` of the split's scenes drawn at random (seeded; every scene when None or when the split has
fewer), and from each ``per_scene`` keyframes spread over it, one drawn at random (seeded) from each of
``per_scene`` equal strata of the scene's keyframes in time order (every keyframe when None or when the
scene has fewer). Never the first n keyframes: on nuScenes val (about 40 keyframes a scene) the first 16
are a fragment of one scene.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from relviz.errors import InputError


@dataclass(frozen=True)
class EvalSet:
    """``scenes`` (None: all) x ``per_scene`` keyframes (None: all) of a split, drawn with ``seed``."""

    scenes: int | None = None
    per_scene: int | None = 2
    seed: int = 0

    def __post_init__(self):
        for name in ("scenes", "per_scene"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
                raise InputError(f"evaluation set: {name} must be a whole number >= 1 (or all), got {v!r}")

    def keyframes(self, scene_of: Sequence[str]) -> list[int]:
        """Indices into a split whose keyframe i belongs to scene ``scene_of[i]`` (keyframes of a
        scene in time order): the selected keyframes, sorted."""
        by_scene: dict[str, list[int]] = {}
        for i, name in enumerate(scene_of):
            by_scene.setdefault(name, []).append(i)
        names = sorted(by_scene)
        rng = np.random.default_rng(self.seed)
        if self.scenes is not None and self.scenes < len(names):
            names = sorted(names[j] for j in rng.choice(len(names), self.scenes, replace=False))
        chosen: list[int] = []
        for name in names:
            frames = by_scene[name]
            if self.per_scene is None or self.per_scene >= len(frames):
                chosen += frames
                continue
            edges = np.linspace(0, len(frames), self.per_scene + 1)
            for low, high in zip(edges[:-1], edges[1:]):
                start, stop = int(np.ceil(low)), max(int(np.ceil(high)), int(np.ceil(low)) + 1)
                chosen.append(frames[int(rng.integers(start, min(stop, len(frames))))])
        return sorted(chosen)

    def key(self) -> str:
        """A short name for file names: ``s<scenes>-k<per_scene>-r<seed>`` (``all`` for None)."""
        def part(v: int | None) -> str:
            return "all" if v is None else str(v)
        return f"s{part(self.scenes)}-k{part(self.per_scene)}-r{self.seed}"

    def describe(self, scene_of: Sequence[str] | None = None) -> str:
        """In words; with the split's ``scene_of``, the actual counts."""
        want = (f"{'every' if self.scenes is None else self.scenes} scene{'s' if self.scenes not in (1, None) else ''} x "
                f"{'every' if self.per_scene is None else self.per_scene} keyframe"
                f"{'s' if self.per_scene != 1 else ''} per scene (spread, seed {self.seed})")
        if scene_of is None:
            return want
        picked = self.keyframes(scene_of)
        n_scenes = len({scene_of[i] for i in picked})
        return f"{len(picked)} keyframes of {n_scenes} scene{'s' if n_scenes != 1 else ''}: {want}"

    def as_dict(self) -> dict:
        return {"scenes": self.scenes, "per_scene": self.per_scene, "seed": self.seed}


def scene_ids(scene_of: Sequence[str], keyframes: Sequence[int]) -> np.ndarray:
    """int64 [K]: for each selected keyframe, its scene's index among the selection's scenes (sorted
    by name), the cluster id of a bootstrap over scenes."""
    names = sorted({scene_of[i] for i in keyframes})
    position = {n: j for j, n in enumerate(names)}
    return np.array([position[scene_of[i]] for i in keyframes], dtype=np.int64)


__all__ = ["EvalSet", "scene_ids"]
