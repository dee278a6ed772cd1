"""Checkpoints: relviz's safetensors format, and SLidR / OpenScene / Lightning layouts for reading.

relviz format: one ``.safetensors`` file; the tensors are the model's state dict and the header's
metadata holds ``relviz`` = JSON (architecture, dimensions, voxelization, teacher, loss, training
configuration, package versions, metrics). One file, written to a temporary name and renamed, so a
crash never leaves half a checkpoint.

Other layouts (``.pt``/``.pth``/``.ckpt``) are read with ``torch.load(weights_only=True)``, which
refuses anything that would execute code while unpickling:

- SLidR: ``{"model_points": state_dict, "model_images": ..., "config": ...}``
- Lightning: ``{"state_dict": {"model_points.<key>": ...}}``
- OpenScene: ``{"state_dict": {"net3d.<key>" or "module.net3d.<key>": ...}}``
- a bare state dict, possibly with ``module.`` / ``model.`` prefixes
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from relviz.errors import RelvizError, shorten
from relviz.files import atomic_path
from relviz.versions import package_versions

FORMAT = "relviz-checkpoint/1"
# Prefixes stripped from foreign checkpoints, outermost first.
_PREFIXES = ("module.", "model_points.", "model.", "net3d.", "encoder.")


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
        meta = {"source_format": "lightning/openscene", "epoch": obj.get("epoch")}
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: no state dict found (expected tensors under 'model_points', "
                              f"'state_dict', 'model', or at the top level)")
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
    """Rebuild a MinkUNet student from a relviz checkpoint: (model in eval mode, metadata). The
    model's ``voxelization`` attribute is (voxel_size, cylindrical) of its training."""
    from relviz.models.minkunet import MinkUNet, MinkUNetConfig

    state, meta = load_state_dict(path)
    if "architecture" not in meta:
        raise CheckpointError(f"{path}: no 'architecture' in its metadata; build the model yourself and use "
                              f"load_into() for foreign checkpoints")
    try:
        cfg = MinkUNetConfig.from_dict(meta["architecture"])
    except (TypeError, KeyError) as e:
        raise CheckpointError(f"{path}: invalid 'architecture' metadata ({e})") from e
    model = MinkUNet(cfg, backend)
    load_into(model, state, strict=True, source=str(path))
    model.voxelization = voxelization_of(meta)  # evaluation voxelizes its inputs the same way
    model.source = str(path)  # named in errors about its outputs
    return model.to(device).eval(), meta
