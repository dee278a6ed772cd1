"""On-disk cache of dense teacher features, one half-precision ``.npy`` per camera image.

Layout: ``<cache>/teacher/<teacher identity>/<camera sample_data token>.npy`` holding float16
[D, h, w] (student point features use the same store under ``<cache>/student/``), and the class
text embeddings as ``text-classes-<prompts hash>.npy``. The identity covers the model, a hash of its
weights and the input size, so changing any of them uses a fresh folder. Files are written to a
temporary name and renamed, so concurrent writers (training workers, the app) never leave a partial
file, and readers memory-map them; a damaged file (cut short by something else) reads as a miss.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from relviz.files import atomic_path
from relviz.teacher.prompts import TEMPLATES, class_prompts

if TYPE_CHECKING:
    from relviz.teacher.clip import ClipTeacher


class FeatureCache:
    def __init__(self, root: str | Path, identity: str, kind: str = "teacher"):
        self.dir = Path(root) / kind / identity
        self.hits = self.misses = 0

    def path(self, token: str) -> Path:
        return self.dir / f"{token}.npy"

    def get(self, token: str) -> np.ndarray | None:
        """Memory-mapped float16 [D, h, w], or None when absent or damaged (a file cut short, say by a
        full disk or a copy that stopped: its owner computes it again and :meth:`put` replaces it)."""
        p = self.path(token)
        try:
            features = np.load(p, mmap_mode="r") if p.is_file() else None  # a short file fails here
        except (FileNotFoundError, EOFError, ValueError):  # gone meanwhile, or its header or data cut short
            features = None
        if features is None:
            self.misses += 1
            return None
        self.hits += 1
        return features

    def put(self, token: str, features: torch.Tensor | np.ndarray, dtype=np.float16) -> Path:
        arr = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
        with atomic_path(self.path(token)) as tmp, open(tmp, "wb") as f:
            np.save(f, arr.astype(dtype))
        return self.path(token)

    def features(self, teacher, tokens: list[str], images_fn) -> torch.Tensor:
        """Dense features [B, D, h, w] (float32) for camera tokens; misses are computed with
        ``teacher.image_features(images_fn(missing_indices))`` and stored."""
        found = [self.get(t) for t in tokens]
        missing = [i for i, f in enumerate(found) if f is None]
        if missing:
            computed = teacher.image_features(images_fn(missing))
            for i, feat in zip(missing, computed):
                self.put(tokens[i], feat.half())
                found[i] = feat.half().cpu().numpy()
        return torch.from_numpy(np.stack([np.asarray(f) for f in found])).float()


def cached_class_embeddings(root: str | Path, identity: str, teacher_fn: Callable[[], "ClipTeacher"],
                            templates: tuple[str, ...] = TEMPLATES) -> torch.Tensor:
    """The teacher's class embeddings [16, D] (float32), stored next to its image features under a
    key of the prompts; ``teacher_fn`` (which loads the teacher) is only called on a miss, so a page
    that only needs the text side never builds the model."""
    prompts = json.dumps(class_prompts(templates), sort_keys=True)
    cache = FeatureCache(root, identity)
    key = f"text-classes-{hashlib.sha256(prompts.encode()).hexdigest()[:16]}"
    hit = cache.get(key)
    if hit is None:
        cache.put(key, teacher_fn().class_embeddings(templates).cpu(), dtype=np.float32)
        hit = cache.get(key)
    return torch.from_numpy(np.array(hit))
