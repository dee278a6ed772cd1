"""SLidR's mixed (image and point) augmentations, with the point-pixel pairs kept consistent.

SLidR (valeoai/SLidR, ``utils/transforms.py``; ``transforms_mixed`` of config/slidr_minkunet.yaml)
augments each camera image with a random resized crop (area 0.3-1.0 of the image, aspect ratio
14/9-17/9, drawn again until more than 1024 of its pairs, or more than 75% of them, fall inside) and a
horizontal flip (p = 0.5), and drops one random cuboid of points (each side up to 20% of the cloud's
extent, around a random point; skipped when any image would then have fewer than 1024 pairs). Here:

- pixels are continuous (u = column, v = row) with integer values at pixel centres, as
  :func:`relviz.teacher.clip.sample_points` reads them, so a pair is moved, not rounded: a crop box
  ``(top, left, height, width)`` resized to the image's ``(H, W)`` maps ``u`` to
  ``(u + 0.5 - left) * W / width - 0.5`` and a flip maps ``u`` to ``W - 1 - u``;
- the crop is resized back to the camera's size (the teacher resizes every image to its input size
  anyway), bilinear with the same pixel-centre convention;
- every draw comes from the caller's numpy Generator, so a micro-batch stays a pure function of its
  seed (:mod:`relviz.train.loader`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

CROP_SCALE = (0.3, 1.0)  # SLidR's image_crop_range: the crop's share of the image area
CROP_RATIO = (14 / 9, 17 / 9)  # SLidR's crop_ratio: width / height of the crop
MIN_PAIRS, MIN_SHARE = 1024, 0.75  # SLidR's rule for an acceptable crop or dropped cuboid
CROP_TRIES = 10  # draws of a crop box before the whole image is used


@dataclass(frozen=True)
class ImageView:
    """How one camera image is seen: the crop box (``top``, ``left``, ``height``, ``width``, in
    pixels) resized to the image's ``size`` (height, width), then flipped left-right if ``flip``."""

    top: int
    left: int
    height: int
    width: int
    size: tuple[int, int]
    flip: bool = False

    def pixels(self, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixels [M, 2] (u, v) of the original image -> (their place [M, 2] in the view, float32;
        inside [M] bool: the pixel lies in the crop box)."""
        H, W = self.size
        u = (uv[:, 0].astype(np.float64) + 0.5 - self.left) * (W / self.width) - 0.5
        v = (uv[:, 1].astype(np.float64) + 0.5 - self.top) * (H / self.height) - 0.5
        if self.flip:
            u = W - 1 - u
        return np.stack([u, v], 1).astype(np.float32), self.inside(uv)

    def inside(self, uv: np.ndarray) -> np.ndarray:
        """bool [M]: the pixels [M, 2] (u, v) of the original image that lie in the crop box."""
        return (uv[:, 0] + 0.5 >= self.left) & (uv[:, 0] + 0.5 < self.left + self.width) & \
               (uv[:, 1] + 0.5 >= self.top) & (uv[:, 1] + 0.5 < self.top + self.height)

    def image(self, image: np.ndarray) -> np.ndarray:
        """The view of a uint8 image [H, W, 3]: the crop, resized bilinearly to ``size`` with pixel
        centres at integer coordinates (as the pairs), flipped if asked. Pillow's resampling: one
        thread and integer arithmetic, so a worker's batch is exactly the in-process one (torch's
        interpolate rounds ties differently with the thread count), and 18 ms for a 1600x900 image
        (a numpy version took 320 ms). It resamples rows, then columns, each rounded to 8 bits."""
        box = (self.left, self.top, self.left + self.width, self.top + self.height)
        out = np.asarray(Image.fromarray(image).resize((self.size[1], self.size[0]), Image.BILINEAR, box=box))
        return np.ascontiguousarray(out[:, ::-1] if self.flip else out)


def whole_image(size: tuple[int, int], flip: bool = False) -> ImageView:
    return ImageView(0, 0, size[0], size[1], size, flip)


def random_crop_box(rng: np.random.Generator, size: tuple[int, int], scale: tuple[float, float] = CROP_SCALE,
                    ratio: tuple[float, float] = CROP_RATIO) -> tuple[int, int, int, int] | None:
    """A crop box (top, left, height, width) of an image of ``size`` (height, width): area a uniform
    share ``scale`` of the image's, aspect ratio (width / height) log-uniform in ``ratio``, placed
    uniformly (the rule of torchvision's RandomResizedCrop, which SLidR calls); None when a draw does
    not fit the image."""
    H, W = size
    area = rng.uniform(*scale) * H * W
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    w, h = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
    if not (0 < w <= W and 0 < h <= H):
        return None
    return int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1)), h, w


def random_view(rng: np.random.Generator, size: tuple[int, int], uv: np.ndarray, crop: bool = True,
                flip: bool = True) -> ImageView:
    """A random view of one image whose pairs are at pixels ``uv`` [M, 2]: a crop drawn until more
    than :data:`MIN_PAIRS` pairs or :data:`MIN_SHARE` of them fall inside (at most
    :data:`CROP_TRIES` draws, then the whole image), and a left-right flip with p = 0.5."""
    view = whole_image(size)
    if crop:
        for _ in range(CROP_TRIES):
            box = random_crop_box(rng, size)
            if box is None:
                continue
            inside = ImageView(*box, size).inside(uv).sum()
            if inside > MIN_PAIRS or (len(uv) and inside / len(uv) > MIN_SHARE):
                view = ImageView(*box, size)
                break
    return ImageView(view.top, view.left, view.height, view.width, size, flip and bool(rng.random() < 0.5))


def drop_cuboid(rng: np.random.Generator, xyz: np.ndarray, pair_points: np.ndarray, pair_cameras: np.ndarray,
                cameras: int, max_share: float = 0.2) -> np.ndarray:
    """SLidR's DropCuboids: the points [N, 3] to keep (bool [N]) after removing those strictly inside
    a box around a random point, each side ``rng.uniform(0, max_share)`` of the cloud's extent on that
    axis; every point is kept when a camera would end with fewer than :data:`MIN_PAIRS` pairs and the
    box took some of them (SLidR also keeps them when a camera had fewer than that to begin with)."""
    extent = xyz.max(0) - xyz.min(0)
    half = extent * rng.uniform(0, max_share) / 2
    centre = xyz[rng.integers(len(xyz))]
    keep = ~np.all((xyz > centre - half) & (xyz < centre + half), axis=1)
    kept = np.bincount(pair_cameras[keep[pair_points]], minlength=cameras)
    before = np.bincount(pair_cameras, minlength=cameras)
    if np.any((kept < MIN_PAIRS) & (kept < before)):
        return np.ones(len(xyz), dtype=bool)
    return keep
