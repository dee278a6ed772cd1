"""SLidR's mixed augmentations (relviz/data/augment.py): a pair moved with its crop and flip still
sees the same image content, and a dropped box of points keeps every other point's pairs and label."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from relviz.data import NuScenesLidarSeg
from relviz.data.augment import MIN_PAIRS, ImageView, drop_cuboid, random_crop_box, random_view

SIZE = (90, 160)  # (height, width)
A, B, C = 0.7, 0.9, 20.0  # a ramp image: value A * u + B * v + C at pixel centre (u, v), at most 212


def _ramp() -> np.ndarray:
    v, u = np.mgrid[0:SIZE[0], 0:SIZE[1]]
    return np.repeat(np.rint(A * u + B * v + C)[..., None], 3, axis=2).astype(np.uint8)


def _bilinear(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """The image [H, W, 3] read bilinearly at pixel-centre coordinates (the teacher's sampler's rule)."""
    h, w = image.shape[:2]
    grid = torch.from_numpy(np.stack([(uv[:, 0] + 0.5) / w * 2 - 1, (uv[:, 1] + 0.5) / h * 2 - 1], 1))
    x = torch.from_numpy(image[..., 0].astype(np.float64))[None, None]
    return F.grid_sample(x, grid[None, None], mode="bilinear", align_corners=False)[0, 0, 0].numpy()


@pytest.mark.parametrize("seed", range(6))
def test_a_moved_pair_sees_the_content_it_saw(seed):
    """Pixels inside the crop, read in the view where the pairs moved, equal the ramp at the original
    pixel. Error budget: the ramp is rounded to uint8 (<= 0.5; bilinear weights are convex and
    reproduce a linear function, so that bound carries through the resize and the read), Pillow
    resamples rows then columns, rounding each pass to 8 bits (<= 0.5 twice), and its weights are
    fixed-point with 22 fractional bits (<= 255 * 2 * 2^-22 ~ 1.2e-4 a pass): |error| <= 1.5 + 3e-4.
    Pixels within 1.5 crop pixels of the crop's edge are left out: where the crop's edge is the
    image's, Pillow renormalises the filter there instead of interpolating (elsewhere it reads past
    the crop box, which is fine)."""
    rng = np.random.default_rng(seed)
    box = random_crop_box(rng, SIZE)
    while box is None:
        box = random_crop_box(rng, SIZE)
    view = ImageView(*box, SIZE, flip=bool(seed % 2))
    top, left, height, width = box
    uv = np.stack([rng.uniform(left + 1.5, left + width - 2.5, 500), rng.uniform(top + 1.5, top + height - 2.5, 500)], 1)
    moved, inside = view.pixels(uv)
    assert inside.all()
    seen = _bilinear(view.image(_ramp()), moved.astype(np.float64))
    assert np.abs(seen - (A * uv[:, 0] + B * uv[:, 1] + C)).max() <= 1.5 + 3e-4
    # and a pixel outside the box is outside
    assert not view.pixels(np.array([[left - 1.0, top], [left, top + height + 0.0]]))[1].any()


def test_the_crop_follows_slidrs_ranges_and_rule():
    rng = np.random.default_rng(0)
    boxes = [b for b in (random_crop_box(rng, (900, 1600)) for _ in range(2000)) if b is not None]
    for _, _, h, w in boxes:
        # drawn sides w_d, h_d (area share a in [0.3, 1], aspect r = w_d / h_d in [14/9, 17/9]) rounded to
        # whole pixels, each by at most 0.5: w * h within a (1 -+ 0.5/w_d)(1 -+ 0.5/h_d) and w / h within
        # r (1 -+ 0.5/w_d) / (1 +- 0.5/h_d), where w_d >= w - 0.5 and h_d >= h - 0.5
        ew, eh = 0.5 / (w - 0.5), 0.5 / (h - 0.5)
        assert 0.3 * (1 - ew) * (1 - eh) <= h * w / (900 * 1600) <= (1 + ew) * (1 + eh)
        assert 14 / 9 * (1 - ew) / (1 + eh) <= w / h <= 17 / 9 * (1 + ew) / (1 - eh)
    assert all(0 <= t and 0 <= lf and t + h <= 900 and lf + w <= 1600 for t, lf, h, w in boxes)
    # a view keeps more than 1024 of its pairs or more than 75% of them
    uv = np.stack([rng.uniform(-0.5, 1599.5, 4000), rng.uniform(-0.5, 899.5, 4000)], 1)
    for _ in range(20):
        kept = random_view(rng, (900, 1600), uv).pixels(uv)[1].sum()
        assert kept > MIN_PAIRS or kept / len(uv) > 0.75


def test_a_dropped_box_keeps_every_other_points_pairs_and_labels(nusc):
    plain = NuScenesLidarSeg(None, split="mini_val", nusc=nusc, load_images=False, augment=True, seed=3)
    dropping = NuScenesLidarSeg(None, split="mini_val", nusc=nusc, load_images=False, augment=True, seed=3,
                                drop_cuboids=True)
    dropped = 0
    for index in range(len(plain)):
        a, b = plain[index], dropping[index]
        xyz = plain.lidar(index)[0][:, :3].astype(np.float64)
        keep = drop_cuboid(np.random.default_rng([3, 0, index, 1]), xyz, a["pair_points"], a["pair_cameras"], 6)
        dropped += int((~keep).sum())
        # the same rotation and flips of the kept points: a 3-term float64 dot product per coordinate
        # (error <= gamma(3) |x| ~ 7e-16 |x|, whatever rows the product is computed with), then a cast to
        # float32, which rounds two such values to the same or neighbouring floats: <= 1 ulp, 2^-23 |x|
        def close(x, y):
            return x.shape == y.shape and np.allclose(x, y, rtol=2.0 ** -23, atol=1e-12)

        assert close(b["points"], a["points"][keep]) and np.array_equal(b["labels"], a["labels"][keep])
        kept_pairs = keep[a["pair_points"]]
        assert close(b["points"][b["pair_points"]], a["points"][a["pair_points"][kept_pairs]])
        assert np.array_equal(b["pair_pixels"], a["pair_pixels"][kept_pairs])
        assert np.array_equal(b["pair_cameras"], a["pair_cameras"][kept_pairs])
        assert len(b["inverse"]) == len(b["points"])
    assert dropped > 0  # the box removed points somewhere, so the checks above were not vacuous
