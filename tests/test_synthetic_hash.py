"""Byte identity of the synthetic generator: the files of a tiny dataset and one ``render_view``.

The recorded digests below are the one place where a hard-coded result is right: they were taken on
2026-12-01 from the single-file ``relviz/data/synthetic.py`` (721 lines) before it was split into the
``relviz.data.synthetic`` package (issue #15 item 5), so that the split provably changed no byte.
They depend on the pinned numpy, open3d and Pillow (requirements.lock: ray casting, float noise, JPEG
encoding); a deliberate change to the generator's output, or a new pin, means recording them again.

Two kinds of file hold floats computed by code whose last bits depend on the processor: the lidar
coordinates (open3d's Embree ray casting takes another SIMD path on another CPU) and the camera images
(float shading, then JPEG). Their digests were recorded on an AMD EPYC and differ on an Intel Xeon
(2026-12-06) while every label, class map, table and map stays byte-identical: which mesh every ray hit
and which class every pixel shows do not change. So the exact digests are asserted for the kinds that
hold no such float (:data:`EXACT_KINDS`); the float kinds are asserted deterministic on the machine
that runs the test (tests/test_data.py: one process against two, byte for byte). The tables hold a
few such floats too (poses through numpy's BLAS, whose kernel depends on the processor: found on a
Xeon whose OpenBLAS chose its generic kernels, 2026-12-07): they are compared rounded to a grid far
coarser than those floats' error (:data:`TABLES_GRID`).
"""

import hashlib
import json
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fp_bounds import gamma
from relviz.data.nuscenes import CAMERAS
from relviz.data.synthetic import MINI_TRAIN, MINI_VAL, SynthConfig, generate, render_view
from relviz.errors import InputError

# small enough for about 2 s of generation on 2 cores; still 10 scenes, every sensor and table
TINY = SynthConfig(seed=0, samples_per_scene=2, image_size=(64, 64), beams=4, azimuth_steps=64)

# sha256 per kind of file (sorted relative paths and bytes), recorded before the split (see above)
RECORDED = {
    # rounded (TABLES_GRID): the same on this Xeon with OpenBLAS's Prescott and Haswell kernels; the
    # bytes themselves (ccac2c25..., recorded before the split) come back with OPENBLAS_CORETYPE=Haswell
    "tables": "30fb569e8318ed77222f2c880bf1c6c566b5c6546d5f0eb0aa077e5b455c318d",
    "lidar": "4c047defad566e48cfd935ed568323b6f56e6c3e6c3e83184c67fd49899c87a4",
    "lidarseg": "d2ce7a71377538528e8892e5f602895d96219d0e272fa77a873ec31f6916ecf7",
    "images": "3ecd4e5d423902672caf7625bfb8738d7c10e5d47e63ec06e8cf25461ae086be",
    "class_maps": "86f1ef5cb86d7df153ff334943843612353ead0deb2b771acc7c55d85cd64376",
    "map": "39bcdf4d010923c4621eb1b214d0912ba8d845731639bdf08b605a99e3cd733d",
}
EXACT_KINDS = ("tables", "lidarseg", "class_maps", "map")  # no processor-dependent float in their bytes
# the class map of one render_view (its RGB is float shading: see above), recorded 2026-12-06; the same
# view's RGB and class map together gave 32781e7e... on the AMD EPYC of 2026-12-01
RECORDED_VIEW_CLASSES = "5c90501e827b5934c93eb48ddf2c97c17f4ea74c3258cbe1d3bd4c4c43315af1"


# kinds of file, the first matching pattern (fnmatch: ``*`` also matches ``/``) decides
FILE_KINDS = (("tables", "*.json"), ("lidar", "*.pcd.bin"), ("lidarseg", "lidarseg/*"), ("class_maps", "*.class.png"),
              ("images", "*.jpg"), ("map", "maps/*"))


def _kind(rel: Path) -> str:
    kind = next((k for k, pattern in FILE_KINDS if fnmatch(rel.as_posix(), pattern)), None)
    assert kind, f"unexpected file {rel} in the synthetic dataset"
    return kind


# The tables' floats (ego poses, calibrations) come from chains of at most a few 4 x 4 products and a
# quaternion conversion, whose last bits depend on the BLAS kernel numpy's OpenBLAS picks for the
# processor (this machine's "Prescott" kernels against Haswell's FMA ones, 2026-12-07). Each is off by
# at most gamma(16) x its magnitude (under 100 in TINY): 3.6e-13. Rounded to TABLES_GRID before hashing,
# a float lands in another cell only within 3.6e-13 of a cell's edge, probability <= 2 x 3.6e-13 / 1e-5 =
# 7.2e-8 per float, 2.3e-4 for the 3,143 floats of TINY's tables; a real change of 1e-5 or more shows.
TABLES_GRID = 5  # decimal places
assert 2 * gamma(16) * 100 / 10 ** -TABLES_GRID * 3143 < 1e-3


def _rounded(value):
    if isinstance(value, float):
        return round(value, TABLES_GRID) + 0.0  # + 0.0: -0.0 (a rounded -1e-17) is 0.0
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def tree_digests(root: Path) -> dict[str, str]:
    """sha256 per kind over the sorted relative paths and bytes of every file under ``root`` (the
    tables' JSON with its floats rounded to :data:`TABLES_GRID`, see above)."""
    digests: dict[str, hashlib._Hash] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        kind = _kind(rel)
        h = digests.setdefault(kind, hashlib.sha256())
        h.update(rel.as_posix().encode() + b"\0")
        if kind == "tables":
            h.update(json.dumps(_rounded(json.loads(path.read_bytes())), sort_keys=True).encode())
        else:
            h.update(path.read_bytes())
    return {kind: h.hexdigest() for kind, h in sorted(digests.items())}


def array_digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("tiny") / "synthetic", TINY, workers=1)


def test_generated_files_are_byte_identical_to_the_recorded_ones(tiny_root):
    digests = tree_digests(tiny_root)
    assert set(digests) == set(RECORDED)
    assert {k: digests[k] for k in EXACT_KINDS} == {k: RECORDED[k] for k in EXACT_KINDS}


# workers=1 against workers=2, every file: tests/test_data.py::test_same_seed_gives_identical_files


def test_render_view_is_byte_identical_to_the_recorded_one():
    rgb, fine = render_view(TINY, scene_index=3, camera="CAM_FRONT_LEFT", time_s=0.75)
    assert rgb.shape == (64, 64, 3) and fine.shape == (64, 64)
    assert array_digest(fine) == RECORDED_VIEW_CLASSES
    assert np.array_equal(render_view(TINY, scene_index=3, camera="CAM_FRONT_LEFT", time_s=0.75)[0], rgb)


@pytest.mark.parametrize("scene_index, channel", [(0, "CAM_FRONT"), (8, "CAM_BACK_LEFT")])
def test_render_view_shows_the_scene_generate_wrote(tiny_root, scene_index, channel):
    """render_view at a camera's first keyframe time gives the class map that generate wrote for it."""
    scene = (MINI_TRAIN + MINI_VAL)[scene_index]
    ci = 1 + CAMERAS.index(channel)
    # generate's timing: the camera fires 8 ms * (channel index) + 2 ms after the keyframe at t = 0
    time_s = (8_000 * ci + 2_000) / 1e6
    written = sorted((tiny_root / "samples" / channel).glob(f"{scene}__{channel}__*.class.png"))[0]
    _, fine = render_view(TINY, scene_index=scene_index, camera=channel, time_s=time_s)
    np.testing.assert_array_equal(fine, np.asarray(Image.open(written)))


@pytest.mark.parametrize("kwargs, field", [({"camera": "CAM_TOP"}, "camera"), ({"scene_index": 10}, "scene_index"),
                                           ({"scene_index": -1}, "scene_index")])
def test_render_view_names_the_bad_argument(kwargs, field):
    with pytest.raises(InputError, match=field):
        render_view(TINY, **kwargs)
