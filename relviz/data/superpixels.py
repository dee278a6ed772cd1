"""SLIC superpixels per camera image (SLidR's settings), cached on disk per camera token."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from relviz.errors import InputError
from relviz.files import atomic_path


def slic_superpixels(image: np.ndarray, n_segments: int = 150, compactness: float = 6.0, sigma: float = 3.0
                     ) -> np.ndarray:
    """Superpixel ids int64 [H, W] (0..S-1) of an RGB uint8 image [H, W, 3]."""
    from skimage.segmentation import slic

    return slic(image, n_segments=n_segments, compactness=compactness, sigma=sigma, start_label=0).astype(np.int64)


def cached_superpixels(image: np.ndarray, camera_token: str, cache_dir: str | Path, n_segments: int = 150
                       ) -> np.ndarray:
    """:func:`slic_superpixels`, stored as a PNG under ``cache_dir`` (written atomically)."""
    path = Path(cache_dir) / f"slic{n_segments}" / f"{camera_token}.png"
    if path.is_file():
        return np.asarray(Image.open(path)).astype(np.int64)
    seg = slic_superpixels(image, n_segments)
    if seg.max() > 65535:
        raise InputError(f"{seg.max() + 1} superpixels do not fit a 16-bit PNG")
    with atomic_path(path) as tmp:
        Image.fromarray(seg.astype(np.uint16)).save(tmp, format="PNG")
    return seg
