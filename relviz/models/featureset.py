"""Feature sets: per-point features of any model, written to disk by any framework, read by relviz
wherever a student checkpoint is read (docs/features.md).

A feature set is a folder::

    manifest.json                   FeatureSetManifest (format "relviz-features/1")
    <keyframe>.safetensors          one per keyframe of the declared split(s)

``<keyframe>`` is the dataset's keyframe identity, ``dataset.sample_tokens[i]``: the nuScenes sample
token (``sample["token"]``), or SemanticKITTI's sequence / scan such as ``08/000123`` (a file
``08/000123.safetensors`` in a sub-folder). Each file holds ``features`` [N, D] in the order of the
keyframe's lidar points (manifest ``kind`` "points"), or ``features`` [V, D] and an integer
``point_to_voxel`` [N] into them ("voxels"), in the manifest's ``dtype`` (float16 or float32).

:func:`validate_feature_set` checks a set against the opened dataset(s) of its split(s) and raises
one :class:`~relviz.errors.InputError` naming every bad file (up to a few) and what was expected;
:func:`register_feature_set` copies a set into a workspace folder only after the copy is validated.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from relviz.errors import InputError, InputTypeError, shorten
from relviz.files import atomic_path, new_folder

FORMAT = "relviz-features/1"
MANIFEST = "manifest.json"
SUFFIX = ".safetensors"
KINDS = ("points", "voxels")  # features per point, or per voxel with each point's voxel
DTYPES = ("float16", "float32")
DATASET_KINDS = ("nuscenes", "semantickitti")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # a registered set's folder name
TOKEN = re.compile(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)?")  # a nuScenes token, or KITTI's sequence/scan (08/000123)
TORCH_DTYPES = {"float16": torch.float16, "float32": torch.float32}
SAFETENSORS_DTYPES = {"F16": "float16", "F32": "float32", "BF16": "bfloat16", "F64": "float64"}
INDEX_DTYPES = ("I32", "I64", "U32")  # point_to_voxel
SHOWN = 5  # problems (or missing keyframes) listed in one error message


@dataclass(frozen=True)
class FeatureSetManifest:
    """What a feature set declares. ``model``: a name for its source model; ``dim``: D; ``dtype``:
    float16 / float32; ``dataset``: nuscenes / semantickitti; ``version``: the nuScenes version
    (v1.0-mini, v1.0-trainval; None for SemanticKITTI); ``splits``: the split(s) whose every keyframe
    it covers; ``kind``: points / voxels; ``text_space``: the teacher identity (or its weights part,
    see :func:`text_space_matches`) whose text embeddings the features are aligned to, None if none;
    ``source``: free text, which framework or file made it."""

    model: str
    dim: int
    dtype: str
    dataset: str
    splits: tuple[str, ...]
    version: str | None = None
    kind: str = "points"
    text_space: str | None = None
    source: str = ""
    format: str = FORMAT

    def __post_init__(self):
        object.__setattr__(self, "splits", tuple(self.splits))
        check_manifest(self)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``splits`` as a list)."""
        return {**asdict(self), "splits": list(self.splits)}

    @classmethod
    def from_dict(cls, raw: Any, where: str = MANIFEST) -> "FeatureSetManifest":
        """A manifest from its JSON form, refused with a message naming ``where`` and the field."""
        if not isinstance(raw, dict):
            raise InputError(f"{where}: expected a JSON object, got {shorten(raw)}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InputError(f"{where}: unknown field(s) {', '.join(unknown)}; "
                             f"the fields are {', '.join(sorted(known))}")
        missing = [f for f in ("format", "model", "dim", "dtype", "dataset", "splits") if f not in raw]
        if missing:
            raise InputError(f"{where}: missing field(s) {', '.join(missing)}")
        if raw["format"] != FORMAT:
            raise InputError(f"{where}: format is {shorten(raw['format'])}; expected {FORMAT!r}")
        splits = raw["splits"]
        if isinstance(splits, str) or not isinstance(splits, list):
            raise InputError(f"{where}: splits must be a list of split names, got {shorten(splits)}")
        try:
            return cls(**{**raw, "splits": tuple(splits)})
        except (InputError, InputTypeError) as e:
            raise InputError(f"{where}: {e}") from None


def check_manifest(m: FeatureSetManifest) -> None:
    """Refuse a manifest field outside its domain, naming the field."""
    if m.format != FORMAT:
        raise InputError(f"format is {shorten(m.format)}; expected {FORMAT!r}")
    if not isinstance(m.model, str) or not m.model.strip():
        raise InputError(f"model must be a non-empty name, got {shorten(m.model)}")
    if isinstance(m.dim, bool) or not isinstance(m.dim, int) or m.dim < 1:
        raise InputError(f"dim must be a positive integer (the feature dimension D), got {shorten(m.dim)}")
    choices = (("dtype", m.dtype, DTYPES), ("dataset", m.dataset, DATASET_KINDS), ("kind", m.kind, KINDS))
    for name, value, allowed in choices:
        if value not in allowed:
            raise InputError(f"{name} must be one of {', '.join(allowed)}, got {shorten(value)}")
    if not m.splits or not all(isinstance(s, str) and s for s in m.splits):
        raise InputError(f"splits must list at least one split name, got {shorten(list(m.splits))}")
    if m.dataset == "nuscenes" and not (isinstance(m.version, str) and m.version.startswith("v1.0-")):
        raise InputError(f"version must name the nuScenes version (v1.0-mini, v1.0-trainval, ...), "
                         f"got {shorten(m.version)}")
    for name in ("text_space", "version"):
        value = getattr(m, name)
        if value is not None and not (isinstance(value, str) and value):
            raise InputError(f"{name} must be a non-empty string or null, got {shorten(value)}")
    if not isinstance(m.source, str):
        raise InputError(f"source must be a string, got {shorten(m.source)}")


def text_space_matches(text_space: str | None, teacher_identity: str) -> bool:
    """Whether features in ``text_space`` can be classified by the text embeddings of the teacher
    whose identity is ``teacher_identity`` (``<weights id>-<H>x<W>-<dense path>``): the whole identity,
    or its weights part (the text tower does not depend on the image size or the dense path)."""
    if not text_space:
        return False
    weights_part = re.sub(r"-\d+x\d+-[A-Za-z0-9_]+$", "", teacher_identity)
    return text_space in (teacher_identity, weights_part)


def token_path(directory: str | Path, token: str) -> Path:
    """The file of keyframe ``token`` in a feature set folder."""
    if not isinstance(token, str) or not TOKEN.fullmatch(token):
        raise InputError(f"keyframe identity {shorten(token)} is not a nuScenes token (letters, digits, '-', '_') "
                         f"nor a SemanticKITTI sequence/scan such as 08/000123")
    return Path(directory) / f"{token}{SUFFIX}"


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def write_feature_file(path: str | Path, features, dtype: str, point_to_voxel=None) -> None:
    """One keyframe's file, atomically: ``features`` [N, D] (or [V, D] with ``point_to_voxel`` [N])
    cast to ``dtype``."""
    from safetensors.numpy import save_file

    feats = _as_numpy(features)
    if feats.ndim != 2:
        raise InputError(f"{path}: features must be [N, D], got shape {feats.shape}")
    tensors = {"features": np.ascontiguousarray(feats.astype(dtype))}
    if point_to_voxel is not None:
        tensors["point_to_voxel"] = np.ascontiguousarray(_as_numpy(point_to_voxel).astype(np.int64))
    with atomic_path(path) as tmp:
        save_file(tensors, tmp)


def write_feature_set(directory: str | Path, manifest: FeatureSetManifest, features_by_token: Iterable[tuple]) -> Path:
    """Write a feature set into ``directory``: for each ``(token, features)`` (kind "points",
    features [N, D]) or ``(token, features, point_to_voxel)`` (kind "voxels", [V, D] and [N]), numpy
    arrays or tensors, one file (atomic) in ``manifest.dtype``; the manifest last. Each file's D must be
    ``manifest.dim``. Returns the folder."""
    directory = Path(directory)
    for entry in features_by_token:
        token, feats = entry[0], entry[1]
        path = token_path(directory, token)
        index = entry[2] if len(entry) > 2 else None
        if (index is None) != (manifest.kind == "points"):
            wanted = "(token, features)" if manifest.kind == "points" else "(token, features, point_to_voxel)"
            raise InputError(f"{path}: a {manifest.kind} feature set needs {wanted}")
        shape = tuple(feats.shape)
        if len(shape) != 2 or shape[1] != manifest.dim:
            raise InputError(f"{path}: features of shape {shape}; the manifest declares [*, {manifest.dim}]")
        write_feature_file(path, feats, manifest.dtype, index)
    with atomic_path(directory / MANIFEST) as tmp:
        Path(tmp).write_text(json.dumps(manifest.to_dict(), indent=1))
    return directory


def read_manifest(directory: str | Path) -> FeatureSetManifest:
    """The manifest of the feature set in ``directory``, refused naming the file."""
    path = Path(directory) / MANIFEST
    if not Path(directory).is_dir():
        raise InputError(f"feature set folder {directory} does not exist")
    if not path.is_file():
        raise InputError(f"{path} is missing: a feature set folder holds a manifest.json (docs/features.md)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    return FeatureSetManifest.from_dict(raw, str(path))


@dataclass(frozen=True)
class FileHeader:
    """What a keyframe file's header says, read without loading its tensors: ``shapes`` and
    ``dtypes`` (safetensors names: F16, F32, I64, ...) by tensor name."""

    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]


def read_header(path: Path) -> FileHeader:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            names = list(f.keys())
            slices = {k: f.get_slice(k) for k in names}
            return FileHeader({k: tuple(s.get_shape()) for k, s in slices.items()},
                              {k: s.get_dtype() for k, s in slices.items()})
    except (SafetensorError, OSError) as e:
        raise InputError(f"{path}: not a readable safetensors file ({e})") from None


@dataclass
class FeatureSet:
    """An opened feature set (:func:`open_feature_set`): usable where relviz takes a student model
    (:func:`relviz.eval.features.point_features_of`). ``source`` names it in error messages."""

    directory: Path
    manifest: FeatureSetManifest
    tokens: list[str] = field(default_factory=list)
    voxelization = None  # no voxelization of its own: :func:`relviz.eval.features.dataset_for` keeps the dataset

    @property
    def name(self) -> str:
        return self.manifest.model

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def text_space(self) -> str | None:
        return self.manifest.text_space

    @property
    def source(self) -> str:
        return f"feature set {self.directory}"

    def path(self, token: str) -> Path:
        return token_path(self.directory, token)

    def header(self, token: str) -> FileHeader:
        path = self.path(token)
        if not path.is_file():
            raise InputError(f"{self.source} has no features for keyframe {token} (expected {path})")
        return read_header(path)

    def point_count(self, token: str) -> int:
        """N of keyframe ``token``, from its file's header."""
        h = self.header(token)
        key = "features" if self.manifest.kind == "points" else "point_to_voxel"
        return int(h.shapes.get(key, (-1,))[0])

    def point_features(self, token: str) -> torch.Tensor:
        """Features [N, D] float32 of keyframe ``token``'s points (a voxel set's rows expanded by
        ``point_to_voxel``), checked: declared D and dtype, finite, indices in range."""
        from safetensors.torch import load_file

        path = self.path(token)
        problem = check_header(self.manifest, path, self.header(token), None)
        if problem:
            raise InputError(problem)
        tensors = load_file(str(path))
        problem = check_values(self.manifest, path, tensors)
        if problem:
            raise InputError(problem)
        feats = tensors["features"].float()
        return feats if self.manifest.kind == "points" else feats[tensors["point_to_voxel"].long()]


def feature_tokens(directory: str | Path) -> list[str]:
    """The keyframe identities of the files in a feature set folder, sorted (temporaries left out)."""
    directory = Path(directory)
    return sorted(p.relative_to(directory).as_posix()[:-len(SUFFIX)] for p in directory.rglob(f"*{SUFFIX}")
                  if not p.name.startswith("."))


def open_feature_set(directory: str | Path) -> FeatureSet:
    """The feature set in ``directory`` (its manifest checked; files are checked when read, or all at
    once by :func:`validate_feature_set`)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    return FeatureSet(directory, manifest, feature_tokens(directory))


def check_header(m: FeatureSetManifest, path: Path, h: FileHeader, n_points: int | None) -> str | None:
    """What is wrong with a keyframe file's header (None if nothing): the tensors of its kind, D, dtype,
    and (``n_points`` given) the point count."""
    expected = {"features"} if m.kind == "points" else {"features", "point_to_voxel"}
    if set(h.shapes) != expected:
        return f"{path}: holds tensors {', '.join(sorted(h.shapes)) or 'none'}; a {m.kind} feature set's files hold " \
               f"{' and '.join(sorted(expected))}"
    shape, dtype = h.shapes["features"], SAFETENSORS_DTYPES.get(h.dtypes["features"], h.dtypes["features"])
    if len(shape) != 2 or shape[1] != m.dim:
        return f"{path}: features of shape {list(shape)}; the manifest declares dim {m.dim} ([*, {m.dim}])"
    if dtype != m.dtype:
        return f"{path}: features are {dtype}; the manifest declares {m.dtype}"
    if m.kind == "voxels":
        index = h.shapes["point_to_voxel"]
        if len(index) != 1 or h.dtypes["point_to_voxel"] not in INDEX_DTYPES:
            return f"{path}: point_to_voxel is {h.dtypes['point_to_voxel']} of shape {list(index)}; expected one " \
                   f"integer (int32 or int64) per point, [N]"
    n = shape[0] if m.kind == "points" else h.shapes["point_to_voxel"][0]
    if n_points is not None and n != n_points:
        return f"{path}: {n} points; the dataset's keyframe has {n_points} (one feature row per lidar point, " \
               f"in the file's order)"
    return None


def check_values(m: FeatureSetManifest, path: Path, tensors: Mapping[str, torch.Tensor]) -> str | None:
    """What is wrong with a keyframe file's values (None if nothing): NaN or Inf, a voxel index
    outside 0..V-1."""
    feats = tensors["features"]
    bad = int((~torch.isfinite(feats)).any(1).sum())
    if bad:
        return f"{path}: {bad} feature row(s) hold NaN or Inf; expected finite features"
    if m.kind == "voxels":
        index, v = tensors["point_to_voxel"], len(feats)
        if len(index) and (int(index.min()) < 0 or int(index.max()) >= v):
            return f"{path}: point_to_voxel holds indices {int(index.min())}..{int(index.max())}; " \
                   f"expected 0..{v - 1} " \
                   f"(rows of its {v} voxel features)"
    return None


def dataset_kind(dataset) -> str:
    """``"semantickitti"`` or ``"nuscenes"``: which format an opened dataset reads."""
    from relviz.data.kitti import SemanticKitti

    return "semantickitti" if isinstance(dataset, SemanticKitti) else "nuscenes"


def open_declared_datasets(manifest: FeatureSetManifest, root: str | Path) -> list:
    """The datasets of the manifest's split(s) in the dataset folder ``root`` (its format and version),
    without images: what :func:`validate_feature_set` checks a set against."""
    from relviz.data.dataset import NuScenesLidarSeg
    from relviz.data.kitti import SemanticKitti, resolve_format

    found = resolve_format(root, "auto")
    if found != manifest.dataset:
        raise InputError(f"{root} is a {found} dataset; the feature set's manifest declares {manifest.dataset}")
    if manifest.dataset == "semantickitti":
        return [SemanticKitti(root, split) for split in manifest.splits]
    return [NuScenesLidarSeg(root, manifest.version, split, load_images=False) for split in manifest.splits]


def _listed(items: Sequence[str]) -> str:
    return "; ".join(items[:SHOWN]) + (f"; and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def validate_feature_set(directory: str | Path, datasets) -> FeatureSet:
    """Open the feature set in ``directory`` and check it against ``datasets`` (one opened dataset or
    a list, one per declared split): the dataset format and version; every keyframe present; no file
    of a keyframe outside them (another dataset's or split's); in every file the tensors of the
    manifest's kind, D and dtype (headers, read without loading), as many points as the keyframe,
    finite values and voxel indices in range. Raises one InputError naming the bad files (the first
    few) and what was expected; returns the set."""
    fs = open_feature_set(directory)
    m = fs.manifest
    datasets = list(datasets) if isinstance(datasets, (list, tuple)) else [datasets]
    for ds in datasets:
        kind, version = dataset_kind(ds), getattr(ds, "version", None)
        if kind != m.dataset:
            raise InputError(f"{fs.directory / MANIFEST}: declares dataset {m.dataset}; "
                             f"checked against a {kind} dataset")
        if m.dataset == "nuscenes" and version != m.version:
            raise InputError(f"{fs.directory / MANIFEST}: declares version {m.version}; the dataset is {version}")
    keyframes = {t: (ds, i) for ds in datasets for i, t in enumerate(ds.sample_tokens)}
    present = set(fs.tokens)
    missing = [t for t in keyframes if t not in present]
    if missing:
        raise InputError(f"{fs.directory}: {len(missing)} of {len(keyframes)} keyframes of split(s) "
                         f"{', '.join(m.splits)} have no file: {_listed([str(fs.path(t)) for t in missing])}")
    foreign = [t for t in fs.tokens if t not in keyframes]
    if foreign:
        raise InputError(f"{fs.directory}: {len(foreign)} file(s) of keyframes that are not in {m.dataset} "
                         f"{m.version or ''} split(s) {', '.join(m.splits)} (another dataset's or split's tokens): "
                         f"{_listed([str(fs.directory / f'{t}{SUFFIX}') for t in foreign])}")
    problems = []
    from safetensors.torch import load_file

    for token, (ds, i) in keyframes.items():
        path = fs.path(token)
        try:
            problem = check_header(m, path, read_header(path), len(ds.lidar(i)[0]))
            problem = problem or check_values(m, path, load_file(str(path)))
        except InputError as e:  # an unreadable file: listed with the others
            problem = str(e)
        if problem:
            problems.append(problem)
    if problems:
        raise InputError(f"{fs.directory}: {len(problems)} bad file(s): {_listed(problems)}")
    return fs


def register_feature_set(source: str | Path, datasets, target: str | Path, link: bool = False) -> FeatureSet:
    """Copy (or hard-link, ``link``) the feature set in ``source`` to ``target``, which must not exist,
    validated (:func:`validate_feature_set` against ``datasets``) in a temporary folder beside
    ``target`` and renamed only when valid: nothing is ever half-registered."""
    source, target = Path(source), Path(target)
    read_manifest(source)  # the cheap refusal before any copy
    copy = os.link if link else shutil.copy2
    with new_folder(target) as tmp:
        try:
            shutil.copytree(source, tmp, dirs_exist_ok=True, copy_function=copy,
                            ignore=shutil.ignore_patterns(".*"))
        except OSError as e:
            hint = "; hard links need one file system: register without --link" if link else ""
            raise InputError(f"cannot {'link' if link else 'copy'} {source} to {target} ({e}){hint}") from None
        try:
            validate_feature_set(tmp, datasets)
        except InputError as e:  # name the user's folder, not the temporary copy
            raise InputError(str(e).replace(str(tmp), str(source))) from None
    return open_feature_set(target)


def feature_set_folders(folder: str | Path) -> list[Path]:
    """The sub-folders of ``folder`` (a workspace's ``features/``) that hold registered sets, by name;
    temporaries of a registration under way (dot names) left out."""
    folder = Path(folder)
    return [sub for sub in sorted(folder.iterdir()) if sub.is_dir() and not sub.name.startswith(".")] \
        if folder.is_dir() else []


def registered_feature_sets(folder: str | Path) -> list[FeatureSet]:
    """The feature sets registered in ``folder`` (a workspace's ``features/``), by name; a sub-folder
    whose manifest cannot be read is left out."""
    out = []
    for sub in feature_set_folders(folder):
        if (sub / MANIFEST).is_file():
            try:
                out.append(open_feature_set(sub))
            except InputError:
                continue
    return out


def check_name(name: str) -> str:
    """A registered feature set's folder name: letters, digits, '.', '_' and '-'."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InputError(f"feature set name {shorten(name)}: use letters, digits, '.', '_' and '-' (at most 100), "
                         f"starting with a letter or digit")
    return name


def refuse_feature_set(source, purpose: str = "fine-tuning") -> None:
    """Raise an InputError when ``source`` is a feature set: ``purpose`` needs the model's weights."""
    if isinstance(source, FeatureSet):
        raise InputError(f"{purpose} needs the model itself, and {source.source} ({source.name}) holds only its "
                         f"features; the linear probe, structure, compare and evidence work from features")


__all__ = ["DATASET_KINDS", "DTYPES", "FORMAT", "FeatureSet", "FeatureSetManifest", "KINDS", "MANIFEST", "check_name",
           "dataset_kind", "feature_tokens", "open_declared_datasets", "open_feature_set", "read_manifest",
           "refuse_feature_set", "register_feature_set", "feature_set_folders", "registered_feature_sets", "text_space_matches", "token_path",
           "validate_feature_set", "write_feature_file", "write_feature_set"]
