"""Checkpoints: relviz's safetensors format, and SLidR / OpenScene / Lightning layouts for reading.

relviz format: one ``.safetensors`` file; the tensors are the model's state dict and the header's
metadata holds ``relviz`` = JSON (architecture, dimensions, voxelization, teacher, loss, training
configuration, package versions, metrics). One file, written to a temporary name and renamed, so a
crash never leaves half a checkpoint.

Other layouts (``.pt``/``.pth``/``.ckpt``) are read with ``torch.load(weights_only=True)``, which
refuses anything that would execute code while unpickling:

- SLidR: ``{"model_points": state_dict, "model_images": ..., "config": ...}``
- Lightning: ``{"state_dict": {"model_points.<key>": ...}}``
- OpenScene: ``{"state_dict": {"net3d.<key>" or "module.net3d.<key>": ...}, "epoch", "optimizer",
  "best_iou"}``; its net3d is MinkowskiEngine's MinkUNet18A, whose names and layouts are relviz's
  (:func:`load_openscene`, docs/openscene.md)
- a bare state dict, possibly with ``module.`` / ``model.`` prefixes

Besides tensors and plain containers, numpy scalars and dtypes are accepted (OpenScene stores
``best_iou`` as a numpy float64): reconstructing them runs no code.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from relviz.errors import RelvizError, shorten
from relviz.files import atomic_path
from relviz.versions import package_versions

if TYPE_CHECKING:
    from relviz.models.minkunet import MinkUNet, MinkUNetConfig

FORMAT = "relviz-checkpoint/1"
# where a student's features come from, by kind: said on every row, legend and export that shows them
PROVENANCE = {"checkpoint": "relviz checkpoint", "features": "imported feature set",
              "published": "imported published checkpoint"}
# Prefixes stripped from foreign checkpoints, outermost first.
_PREFIXES = ("module.", "model_points.", "model.", "net3d.", "encoder.")

# OpenScene's published nuScenes 3D-distill model (config/nuscenes/ours_openseg_pretrained.yaml);
# never downloaded by relviz
OPENSCENE_NUSCENES_URL = "https://cvg-data.inf.ethz.ch/openscene/models/nuscenes_openseg.pth.tar"
OPENSCENE_VOXEL_SIZE = 0.05  # config/nuscenes/*.yaml DATA.voxel_size, cartesian (dataset/voxelizer.py)
OPENSCENE_STEM_VOLUME = 5 ** 3  # models/mink_unet.py: conv0p1s1 kernel_size=5
# The CLIP text tower OpenScene compares its features with, by feature dimension (util/util.py
# extract_text_feature: OpenSeg -> "ViT-L/14@336px", LSeg -> "ViT-B/32", OpenAI's weights), under
# its open_clip name as relviz's teacher registry spells it.
OPENSCENE_TEXT_SPACES = {
    768: {"name": "ViT-L-14-336", "pretrained": "openai", "openai_clip": "ViT-L/14@336px", "image_features": "OpenSeg"},
    512: {"name": "ViT-B-32", "pretrained": "openai", "openai_clip": "ViT-B/32", "image_features": "LSeg"},
}


def _numpy_scalar_globals() -> list:
    """The globals a pickled numpy scalar needs: ``multiarray.scalar`` (which rebuilds a scalar from
    a dtype and its bytes, and calls nothing else) and the dtypes."""
    import importlib

    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25
    found = [np.dtype, *(getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType"))] if dtypes else [np.dtype]
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):  # numpy 2's path first: no deprecation
        try:
            return [*found, importlib.import_module(module).scalar]
        except (ImportError, AttributeError):
            continue
    return found


class CheckpointError(RelvizError):
    """A checkpoint that cannot be read or does not fit; the message names the file and the keys."""


@dataclass
class LoadReport:
    """What happened when a state dict was loaded into a model."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def describe(self, limit: int = 10) -> str:
        def names(keys):
            keys = list(keys)
            return ", ".join(keys[:limit]) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")

        parts = [f"{len(self.loaded)} tensors loaded"]
        if self.missing:
            parts.append(f"missing {len(self.missing)}: {names(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected {len(self.unexpected)}: {names(self.unexpected)}")
        if self.shape_mismatch:
            parts.append("shape mismatch: " + names(f"{k} checkpoint {tuple(a)} vs model {tuple(b)}"
                                                    for k, (a, b) in self.shape_mismatch.items()))
        return "; ".join(parts)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (checkpoint manifests and reports)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(path: str | Path, model: nn.Module | dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    """Write weights and metadata atomically to ``path`` (a ``.safetensors`` file)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: relviz checkpoints are .safetensors files")
    state = model.state_dict() if isinstance(model, nn.Module) else model
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    meta = {"format": FORMAT, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": {k: v for k, v in package_versions().items() if v}, **metadata}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={"relviz": json.dumps(meta)})
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a relviz checkpoint, without loading its tensors."""
    path = Path(path)
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("relviz")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({e})") from e
    if raw is None:
        raise CheckpointError(f"{path}: safetensors file without relviz metadata")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: relviz metadata is not valid JSON ({e})") from e


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if any(k.startswith("model_points.") for k in state):  # Lightning: keep the 3D model only
        state = {k: v for k, v in state.items() if k.startswith("model_points.")}
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _foreign_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only=True refuses anything but tensors and plain containers: a pickle that would
        # import or call code, or bytes that are no pickle at all
        # (torch's message cannot tell damaged bytes from a pickle that calls code: both are refused)
        detail = next((line.strip() for line in str(e).splitlines() if "Unsupported" in line), "")
        raise CheckpointError(f"{path}: not a readable torch checkpoint: refused by torch.load(weights_only=True), "
                              f"which reads only tensors and plain containers (the file is damaged, or unpickling "
                              f"it would run code; re-save it as a state dict)"
                              f"{f' [{shorten(detail, 80)}]' if detail else ''}") from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({e})") from e
    meta: dict[str, Any] = {"source_format": "state_dict"}
    if isinstance(obj, dict) and isinstance(obj.get("model_points"), dict):
        meta = {"source_format": "slidr", "config": obj.get("config"), "epoch": obj.get("epoch")}
        obj = obj["model_points"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        meta = {"source_format": "lightning", "epoch": obj.get("epoch")}
        if isinstance(obj.get("best_iou"), (int, float, np.number)):  # OpenScene's validation mIoU (a numpy float64)
            meta["best_iou"] = float(obj["best_iou"])
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: no state dict found (expected tensors under 'model_points', "
                              f"'state_dict', 'model', or at the top level)")
    if is_openscene_state(obj):
        return openscene_state_to_relviz(obj), {**meta, "source_format": "openscene"}
    return _strip_prefixes(obj), meta


def voxelization_of(metadata: dict[str, Any]) -> tuple[float, bool]:
    """(voxel_size, cylindrical) a student was trained with, from its metadata; checkpoints without
    it (foreign layouts) get relviz's and SLidR's default, 0.1 cylindrical. Features for
    evaluation must be computed with the same voxelization."""
    vox = metadata.get("voxelization") or {}
    return float(vox.get("voxel_size", 0.1)), bool(vox.get("cylindrical", True))


def load_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, metadata) of any supported checkpoint file."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory; expected a checkpoint file (.safetensors, .pt, .pth, .ckpt)")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        meta = read_metadata(path)
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{path}: corrupted safetensors data ({e})") from e
    else:
        state, meta = _foreign_state_dict(path)
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} tensor(s) hold NaN or Inf ({', '.join(bad[:3])}"
                              f"{', ...' if len(bad) > 3 else ''}); the run that wrote it diverged")
    return state, meta


def load_into(model: nn.Module, state: dict[str, torch.Tensor], strict: bool = True,
              source: str = "checkpoint") -> LoadReport:
    """Load matching tensors into ``model``; report missing, unexpected and shape-mismatched keys.

    strict: raise :class:`CheckpointError` unless every key matches. Otherwise load what fits (as
    SLidR's downstream loader does for a new head) and return the report.
    """
    own = model.state_dict()
    report = LoadReport()
    usable = {}
    for k, v in state.items():
        if k not in own:
            report.unexpected.append(k)
        elif tuple(own[k].shape) != tuple(v.shape):
            report.shape_mismatch[k] = (tuple(v.shape), tuple(own[k].shape))
        else:
            usable[k] = v
    report.missing = [k for k in own if k not in state]
    if strict and not report.ok:
        raise CheckpointError(f"{source} does not fit the model: {report.describe()}")
    model.load_state_dict(usable, strict=False)
    report.loaded = list(usable)
    return report


def load_student(path: str | Path, backend: str = "torch", device: str | torch.device = "cpu"):
    """Rebuild a MinkUNet student from a relviz checkpoint, or from OpenScene's (see
    :func:`load_openscene`): (model in eval mode, metadata). The model's ``voxelization`` attribute
    is (voxel_size, cylindrical) of its training."""
    from relviz.models.minkunet import MinkUNet, MinkUNetConfig

    state, meta = load_state_dict(path)
    if "architecture" not in meta and meta.get("source_format") == "openscene":
        return _openscene_model(path, state, meta, backend, device)
    if "architecture" not in meta:
        raise CheckpointError(f"{path}: no 'architecture' in its metadata; build the model yourself and use "
                              f"load_into() for foreign checkpoints (OpenScene's files load with load_openscene)")
    try:
        cfg = MinkUNetConfig.from_dict(meta["architecture"])
    except (TypeError, KeyError) as e:
        raise CheckpointError(f"{path}: invalid 'architecture' metadata ({e})") from e
    model = MinkUNet(cfg, backend)
    load_into(model, state, strict=True, source=str(path))
    model.voxelization = voxelization_of(meta)  # evaluation voxelizes its inputs the same way
    model.source = str(path)  # named in errors about its outputs
    return model.to(device).eval(), meta


# ------------------------------------------------------------------------------------- OpenScene
def is_openscene_state(state: dict[str, Any]) -> bool:
    """Whether every key is under OpenScene's DisNet ``net3d.`` (``module.net3d.`` when saved from
    DistributedDataParallel)."""
    return bool(state) and all(k.startswith(("net3d.", "module.net3d.")) for k in state)


def openscene_state_to_relviz(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenScene's ``state_dict`` -> relviz MinkUNet's, same tensors.

    The net3d is MinkowskiEngine's MinkUNet18A and relviz's layers keep ME's names and layouts
    (convolution ``kernel`` [K^3, C_in, C_out], [C_in, C_out] at K=1; batch norm under ``.bn``), so
    the mapping is the prefix alone: ``module.`` (DDP) then ``net3d.`` (DisNet) are removed. A key
    outside ``net3d.`` is refused by name: it belongs to no 3D network relviz knows.
    """
    out = {}
    for key, value in state.items():
        name = key[len("module."):] if key.startswith("module.") else key
        if not name.startswith("net3d."):
            raise CheckpointError(f"key {key!r} is not under OpenScene's 'net3d.' (or 'module.net3d.'); "
                                  f"expected OpenScene's DisNet state dict")
        out[name[len("net3d."):]] = value
    return out


def openscene_config(state: dict[str, torch.Tensor], normalize: bool = True) -> "MinkUNetConfig":
    """The :class:`~relviz.models.minkunet.MinkUNetConfig` of OpenScene's MinkUNet18A for a state
    dict with relviz's names: input and output channels read from ``conv0p1s1.kernel``
    [125, C_in, 32] and ``final.kernel`` [96, C_out]; ones as input, as OpenScene feeds nuScenes.
    ``normalize``: L2-normalise the outputs (OpenScene distils with a cosine loss, so only their
    direction is trained; its zero-shot argmax is the same either way)."""
    from relviz.models.minkunet import ARCHITECTURES, MinkUNetConfig

    stem, final = state.get("conv0p1s1.kernel"), state.get("final.kernel")
    if stem is None or final is None:
        missing = [k for k, v in (("conv0p1s1.kernel", stem), ("final.kernel", final)) if v is None]
        raise CheckpointError(f"not OpenScene's MinkUNet18A: no {' or '.join(missing)} among its keys")
    if stem.ndim != 3 or stem.shape[0] != OPENSCENE_STEM_VOLUME or final.ndim != 2:
        raise CheckpointError(f"not OpenScene's MinkUNet18A: conv0p1s1.kernel {tuple(stem.shape)} (expected "
                              f"[{OPENSCENE_STEM_VOLUME}, C_in, 32], a k=5 stem), final.kernel {tuple(final.shape)} "
                              f"(expected [96, C_out])")
    return MinkUNetConfig(**ARCHITECTURES["MinkUNet18A"], in_channels=int(stem.shape[1]),
                          out_channels=int(final.shape[1]), normalize=normalize, ones_input=True)


def openscene_metadata(path: str | Path, config: "MinkUNetConfig", epoch: int | None = None,
                       best_iou: float | None = None) -> dict[str, Any]:
    """relviz metadata of an OpenScene checkpoint: architecture, voxelization, input recipe and the
    text space its features live in (None for a dimension OpenScene's configs do not give)."""
    return {"kind": "student", "source_format": "openscene", "arch": "MinkUNet18A", "architecture": config.to_dict(),
            "source": {"file": str(path), "project": "pengsongyou/openscene", "published": OPENSCENE_NUSCENES_URL},
            "voxelization": {"voxel_size": OPENSCENE_VOXEL_SIZE, "cylindrical": False},
            "input_features": {"recipe": "ones", "channels": config.in_channels,
                               "note": "OpenScene's nuScenes loader: torch.ones(V, 3) (input_color: False)"},
            "text_space": OPENSCENE_TEXT_SPACES.get(config.out_channels), "loss": "cosine (OpenScene 3D distillation)",
            "epoch": epoch, "best_iou": best_iou}


def _openscene_model(path: Path | str, state: dict[str, torch.Tensor], meta: dict[str, Any], backend: str,
                     device: str | torch.device, normalize: bool = True) -> tuple["MinkUNet", dict[str, Any]]:
    from relviz.models.minkunet import MinkUNet

    try:
        config = openscene_config(state, normalize=normalize)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from e
    model = MinkUNet(config, backend)
    load_into(model, state, strict=True, source=f"{path} (as OpenScene's MinkUNet18A)")
    metadata = {**openscene_metadata(path, config, meta.get("epoch"), meta.get("best_iou")),
                "versions": {k: v for k, v in package_versions().items() if v}}
    model.voxelization = voxelization_of(metadata)
    model.source = str(path)
    return model.to(device).eval(), metadata


def load_openscene(path: str | Path, backend: str = "torch", device: str | torch.device = "cpu",
                   normalize: bool = True) -> tuple["MinkUNet", dict[str, Any]]:
    """OpenScene's 3D-distill checkpoint (e.g. ``nuscenes_openseg.pth.tar``) as a relviz MinkUNet:
    (model in eval mode, metadata). The model takes a sparse tensor of 5 cm cartesian voxels (any
    features: it uses ones, as OpenScene does) and gives [V, 768] features in the space of CLIP
    ViT-L/14@336px's text tower (``metadata["text_space"]``). Any layout relviz reads is accepted
    (``module.net3d.``/``net3d.`` prefixes, or a bare state dict of the same network); a key that does
    not fit is named in the :class:`CheckpointError`. ``save_checkpoint(out, model, metadata)``
    converts it to a relviz checkpoint that :func:`load_student` rebuilds."""
    state, meta = load_state_dict(path)
    return _openscene_model(path, state, meta, backend, device, normalize)
