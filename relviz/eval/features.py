"""Point features: a student's (voxel -> point by inverse index) and the teacher's on the same
points (the teacher feature at each point's pixel), shared by training, evaluation and the app."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
from PIL import Image

from relviz.errors import InputError, NonFiniteError
from relviz.files import atomic_path, new_folder
from relviz.models.featureset import FeatureSet, FeatureSetManifest, dataset_kind, open_feature_set, write_feature_set
from relviz.sparse import SparseTensor
from relviz.teacher.cache import FeatureCache
from relviz.teacher.clip import sample_points


def dataset_for(model, dataset):
    """``dataset`` voxelized as ``model`` was trained (its ``voxelization``, which
    :func:`relviz.models.checkpoint.load_student` sets); unchanged for a model without one."""
    voxelization = getattr(model, "voxelization", None)
    return dataset if voxelization is None else dataset.voxelized(*voxelization)


def student_voxel_features(model, batch: dict, device: torch.device | str = "cpu", check_finite: bool = True
                           ) -> torch.Tensor:
    """Student features [sum V, D] of a collated batch's voxels, in the model's parameter dtype.
    ``check_finite``: refuse NaN or Inf naming the checkpoint (training skips it: a non-finite loss is
    caught there, without a reduction over every feature in each step)."""
    dtype = next(model.parameters()).dtype
    x = SparseTensor(batch["features"].to(device, dtype), batch["coordinates"].to(device))
    out = model(x).features
    if check_finite and not torch.isfinite(out).all():  # else a silent mIoU of 0 or a NaN metric much later
        raise NonFiniteError(f"{getattr(model, 'source', 'the student')}: its features hold NaN or Inf on "
                             f"{', '.join(batch.get('sample_tokens', [])[:2]) or 'this batch'}; the weights or "
                             f"normalisation statistics are broken (a diverged run?)")
    return out


def camera_images(dataset, tokens: list[str]) -> np.ndarray:
    """uint8 images [len(tokens), H, W, 3] of camera sample_data tokens of a NuScenesLidarSeg."""
    return np.stack([np.asarray(Image.open(Path(dataset.dataroot) / dataset.camera_record(t)["filename"])
                                .convert("RGB")) for t in tokens])


def camera_size(dataset, token: str) -> tuple[int, int]:
    sd = dataset.camera_record(token)
    return sd["height"], sd["width"]


def teacher_pair_features(teacher, cache: FeatureCache, dataset, batch: dict, pair_index: torch.Tensor | None = None
                          ) -> torch.Tensor:
    """Teacher features [M, D] of a batch's point-pixel pairs (or of ``pair_index`` among them),
    from the feature cache (computed and stored on a miss)."""
    tokens = batch["camera_tokens"]
    pairs_img = batch["pair_images"] if pair_index is None else batch["pair_images"][pair_index]
    used = torch.unique(pairs_img)
    used_tokens = [tokens[i] for i in used.tolist()]
    dense = cache.features(teacher, used_tokens, lambda idx: camera_images(dataset, [used_tokens[i] for i in idx]))
    return pair_features_from_dense(dense.to(teacher.device), used, batch, pair_index,
                                    camera_size(dataset, used_tokens[0]))


def pair_features_from_dense(dense: torch.Tensor, used: torch.Tensor, batch: dict, pair_index: torch.Tensor | None,
                             image_size: tuple[int, int]) -> torch.Tensor:
    """Teacher features [M, D] of a batch's pairs (or of ``pair_index`` among them) from the dense
    features [I, D, h, w] of the images ``used`` [I] (indices into ``camera_tokens``, sorted, covering
    every image those pairs fall in); ``image_size``: the cameras' (height, width)."""
    pairs_img = batch["pair_images"] if pair_index is None else batch["pair_images"][pair_index]
    pairs_px = batch["pair_pixels"] if pair_index is None else batch["pair_pixels"][pair_index]
    remap = torch.full((len(batch["camera_tokens"]),), -1, dtype=torch.long)
    remap[used] = torch.arange(len(used))
    return sample_points(dense, remap[pairs_img].to(dense.device), pairs_px, image_size)


def point_features_of(source, batch: dict, device: torch.device | str = "cpu") -> torch.Tensor:
    """Features [sum N, D] at every point of a collated batch, from a feature ``source``: a student
    model (its voxel features taken at each point's voxel, in the model's dtype, on ``device``) or a
    :class:`~relviz.models.featureset.FeatureSet` (each keyframe's file, float32 on ``device``, its
    point count checked against the batch's). A feature set needs no voxelization: its rows are the
    keyframe's points (a voxel set's expanded by its ``point_to_voxel``)."""
    if not isinstance(source, FeatureSet):
        return student_voxel_features(source, batch, device)[batch["inverse"].to(device)]
    counts = torch.bincount(batch["batch_points"], minlength=len(batch["sample_tokens"])).tolist()
    parts = []
    for token, n in zip(batch["sample_tokens"], counts):
        feats = source.point_features(token)
        if len(feats) != n:
            raise InputError(f"{source.path(token)}: {len(feats)} points; the dataset's keyframe {token} has {n} "
                             f"(a feature set for another dataset, or a dataset opened with points dropped?)")
        parts.append(feats)
    return torch.cat(parts).to(device)


def point_features_cached(model, checkpoint_key: str, dataset, index: int, cache_root: str | Path,
                          device: torch.device | str = "cpu") -> np.ndarray:
    """A student's per-point features [N, D] (float16) for one sample, cached on disk per
    (checkpoint, sample token); a feature set's are read from its file (no cache: it is one)."""
    from relviz.data.dataset import collate

    dataset = dataset_for(model, dataset)
    token = dataset.sample_tokens[index]
    if isinstance(model, FeatureSet):
        return point_features_of(model, collate([dataset[index]])).half().numpy()
    cache = FeatureCache(cache_root, checkpoint_key, kind="student")
    hit = cache.get(token)
    if hit is not None:
        return hit
    batch = collate([dataset[index]])
    with torch.inference_mode():
        feats = student_voxel_features(model, batch, device)[batch["inverse"].to(device)]
    cache.put(token, feats.half())
    return np.asarray(cache.get(token))


def export_feature_set(model, datasets: Mapping[str, object], directory: str | Path, model_name: str,
                       dtype: str = "float32", kind: str = "points", text_space: str | None = None, source: str = "",
                       device: torch.device | str = "cpu", progress: Callable[[int, int], None] | None = None
                       ) -> FeatureSet:
    """Write a relviz student's features for every keyframe of ``datasets`` (split name -> dataset of
    that split, one format and version) as a feature set in the new folder ``directory`` (written
    beside it and renamed when complete): ``kind`` "points" (features [N, D] per keyframe, the
    voxel features taken at each point's voxel, exactly what the analysis reads from the model) or
    "voxels" ([V, D] with ``point_to_voxel`` [N]), stored as ``dtype`` (float16 halves the size; its
    rounding is the only difference from the model's float32 features). ``text_space``: the
    identity of the teacher it was distilled from (its metadata's ``teacher.identity``) when the
    features live in that teacher's text space."""
    from relviz.data.dataset import collate

    if not datasets:
        raise InputError("export_feature_set needs at least one split to export")
    first = next(iter(datasets.values()))
    kind_of_data = dataset_kind(first)
    manifest = FeatureSetManifest(model=model_name, dim=int(model.config.out_channels), dtype=dtype,
                                  dataset=kind_of_data, splits=tuple(datasets),
                                  version=getattr(first, "version", None) if kind_of_data == "nuscenes" else None,
                                  kind=kind, text_space=text_space, source=source)
    total = sum(len(ds) for ds in datasets.values())

    def keyframes():
        done = 0
        with torch.inference_mode():
            for ds in datasets.values():
                ds = dataset_for(model, ds)
                for i in range(len(ds)):
                    batch = collate([ds[i]])
                    voxels = student_voxel_features(model, batch, device).cpu()
                    token = ds.sample_tokens[i]
                    done += 1
                    if progress:
                        progress(done, total)
                    yield (token, voxels[batch["inverse"]]) if kind == "points" else (token, voxels, batch["inverse"])

    with new_folder(directory) as tmp:
        write_feature_set(tmp, manifest, keyframes())
    return open_feature_set(directory)


def first_pair_per_point(pair_points: torch.Tensor) -> torch.Tensor:
    """Indices [P] into a keyframe's pairs [M] keeping one pair per distinct point: its first (cameras
    in ``CAMERAS`` order), in point order. A point seen by two cameras is one point of the analysis."""
    points, inverse = torch.unique(pair_points, return_inverse=True)
    first = torch.full((len(points),), len(pair_points), dtype=torch.long)
    return first.scatter_reduce_(0, inverse, torch.arange(len(pair_points)), "amin")


# keyframe_scene [K]: each evaluated keyframe's scene (the bootstrap's cluster); keyframe_index [K]: its
# index in the split (the evaluation set is spread over scenes, not the first K keyframes)
VAL_KEYS = ("features", "labels", "keyframe", "pair_index", "pair_teacher", "keyframe_scene", "keyframe_index")


def with_pairs(val: dict) -> dict:
    """Add ``pair_student`` [M, D], ``pair_labels`` [M] and ``pair_keyframe`` [M]: the features,
    labels and keyframe ids at ``pair_index``."""
    at = val["pair_index"]
    return {**val, "pair_student": val["features"][at], "pair_labels": val["labels"][at],
            "pair_keyframe": val["keyframe"][at]}


def cached_val_features(path: str | Path, compute: Callable[[], dict]) -> dict:
    """Validation features (the dict of :func:`relviz.eval.structure.gather_val_features`) stored in
    the safetensors file ``path`` with the features in float16; ``compute`` runs only when the file
    is missing, unreadable or written before a key of :data:`VAL_KEYS` existed (``keyframe_scene``). The
    app's structure and comparison pages read these instead of loading the dataset, the models and
    the teacher."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    path = Path(path)
    raw = None
    if path.is_file():
        try:
            raw = load_file(str(path))
        except (SafetensorError, OSError):
            raw = None  # damaged: computed again below
    if raw is None or not set(VAL_KEYS) <= raw.keys():
        val = compute()
        raw = {k: (val[k].half() if k in ("features", "pair_teacher") else val[k].long()).contiguous()
               for k in VAL_KEYS}
        with atomic_path(path) as tmp:
            save_file(raw, tmp)
    return with_pairs({k: raw[k].float() if k in ("features", "pair_teacher") else raw[k] for k in VAL_KEYS})
