"""On-disk cache of dense teacher features, one half-precision ``.npy`` per camera image.

Layout: ``<cache>/teacher/<teacher identity>/<camera sample_data token>.npy`` holding float16
[D, h, w] (student point features use the same store under ``<cache>/student/``). The identity covers the model, a hash of its weights and the input size, so changing any
of them uses a fresh folder. Files are written to a temporary name and renamed, so concurrent
writers (training workers, the app) never leave a partial file, and readers memory-map them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch


class FeatureCache:
    def __init__(self, root: str | Path, identity: str, kind: str = "teacher"):
        self.dir = Path(root) / kind / identity
        self.hits = self.misses = 0

    def path(self, token: str) -> Path:
        return self.dir / f"{token}.npy"

    def get(self, token: str) -> np.ndarray | None:
        """Memory-mapped float16 [D, h, w], or None when absent."""
        p = self.path(token)
        if not p.is_file():
            self.misses += 1
            return None
        self.hits += 1
        return np.load(p, mmap_mode="r")

    def put(self, token: str, features: torch.Tensor | np.ndarray) -> Path:
        arr = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{token}.", suffix=".npy")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, arr.astype(np.float16))
            os.replace(tmp, self.path(token))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
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
