"""What a training config will cost, worked out before it runs (``relviz train --dry-run``): the
steps, the size of the teacher feature cache, and the memory of a training step. Nothing here
trains: the dataset is read through its keyframe index, the teacher's shape from its model config
(no weights), and memory from the tensors autograd keeps in one student forward and one loss.
"""

from __future__ import annotations

import inspect
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from relviz.config import TeacherSpec
from relviz.errors import RelvizError
from relviz.train.config import TrainConfig, TrainConfigError

MB = 2**20


@dataclass(frozen=True)
class TeacherGeometry:
    """The shape of a teacher's dense features, known without its weights."""

    name: str
    dim: int  # D
    input_size: tuple[int, int]  # (H, W) images are resized to
    patch_size: tuple[int, int]
    parameters: int | None  # None: the model class could not be built on the meta device

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w) of the dense feature map [D, h, w]."""
        return self.input_size[0] // self.patch_size[0], self.input_size[1] // self.patch_size[1]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "grid": list(self.grid)}


def _pair(size) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))


def teacher_geometry(spec: TeacherSpec) -> TeacherGeometry:
    """The demo teacher's geometry from its file's metadata; an open_clip model's from its model
    config, at the input size :class:`~relviz.teacher.clip.ClipTeacher` uses by default (the one
    training uses), its parameters counted on the meta device (nothing allocated, nothing loaded)."""
    if spec.name == "demo":
        from relviz.models.checkpoint import load_state_dict
        from relviz.teacher.demo import DEMO_TEACHER_PATH

        state, meta = load_state_dict(spec.pretrained or DEMO_TEACHER_PATH)
        cfg = meta["model_config"]
        return TeacherGeometry("demo", int(cfg["embed_dim"]), _pair(meta["input_size"]),
                               _pair(cfg["vision_cfg"]["patch_size"]), sum(v.numel() for v in state.values()))
    from relviz.teacher.registry import STATIC

    entry = STATIC.get(spec.name)
    if entry is not None and entry.family not in ("demo", "clip"):  # DINOv2 (timm) and registered others
        return TeacherGeometry(spec.name, entry.dim, entry.input_size, (entry.patch, entry.patch), None)
    import open_clip
    from open_clip.model import CLIP, CustomTextCLIP

    from relviz.teacher.clip import ClipTeacher

    cfg = open_clip.get_model_config(spec.name)
    if cfg is None or "patch_size" not in cfg.get("vision_cfg", {}):
        raise TrainConfigError(f"config field 'teacher': {spec.name!r} is not an open_clip ViT model (the MaskCLIP "
                               f"dense path needs one), e.g. ViT-B-16")
    input_size = inspect.signature(ClipTeacher).parameters["input_size"].default
    custom_text = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
    try:
        with torch.device("meta"):
            model = (CustomTextCLIP if custom_text else CLIP)(**cfg)
        parameters = sum(p.numel() for p in model.parameters())
    except (TypeError, ValueError, RuntimeError, ImportError):  # a model family this count does not cover
        parameters = None
    return TeacherGeometry(spec.name, int(cfg["embed_dim"]), _pair(input_size), _pair(cfg["vision_cfg"]["patch_size"]),
                           parameters)


def cache_file_bytes(geometry: TeacherGeometry) -> int:
    """Bytes of one image's entry in the teacher feature cache, measured by writing a feature map
    of the teacher's shape [D, h, w] through :class:`~relviz.teacher.FeatureCache` (its format:
    a float16 .npy with its header) into a temporary folder."""
    from relviz.teacher import FeatureCache

    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(tmp, "probe")
        return cache.put("probe", np.zeros((geometry.dim, *geometry.grid), dtype=np.float32)).stat().st_size


def saved_tensor_bytes(fn: Callable[[], Any], exclude: tuple[torch.Tensor, ...] = ()) -> tuple[Any, int]:
    """(fn(), bytes of the distinct storages autograd saves for backward while ``fn`` runs, apart
    from those of ``exclude`` (a model's parameters, which a layer saves but which exist anyway)):
    the activation memory a backward pass of that computation holds."""
    storages: dict[int, int] = {}
    excluded = {t.untyped_storage().data_ptr() for t in exclude}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in excluded:
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(storages.values())


def _keyframes(cfg: TrainConfig, dataroot: Path, split: str, cache_dir: Path) -> list[dict]:
    from relviz.data.index import load_index

    return load_index(dataroot, cfg.version, split, cache_dir)["keyframes"]


def _student_memory(cfg: TrainConfig, dataroot: Path, cache_dir: Path, dim: int, device: torch.device,
                    backend: str) -> dict[str, Any]:
    """Student parameters and the activations of one forward on the split's first keyframe."""
    from relviz.data.dataset import NuScenesLidarSeg, collate
    from relviz.eval.features import student_voxel_features
    from relviz.models.minkunet import build_minkunet

    torch.manual_seed(cfg.seed)
    model = build_minkunet(cfg.arch, in_channels=1, out_channels=dim, width=cfg.width, normalize=True,
                           backend=backend).to(device).train()
    ds = NuScenesLidarSeg(dataroot, cfg.version, cfg.split, cfg.voxel_size, cfg.cylindrical, load_images=False,
                          index_cache=cache_dir)
    batch = collate([ds[0]])
    with torch.autocast(device.type, enabled=device.type == "cuda"):  # as the trainer's step
        _, activations = saved_tensor_bytes(lambda: student_voxel_features(model, batch, device, check_finite=False),
                                            exclude=tuple(model.parameters()))
    return {"parameters": sum(p.numel() for p in model.parameters()), "activations_per_keyframe": activations,
            "measured_on": {"keyframe": batch["sample_tokens"][0], "points": int(len(batch["points"])),
                            "voxels": int(len(batch["coordinates"])), "device": str(device)}}


def _loss_memory(cfg: TrainConfig, dim: int, device: torch.device) -> int:
    """Bytes autograd saves in the loss of ``cfg.pairs`` pairs of unit features [pairs, dim]."""
    gen = torch.Generator().manual_seed(cfg.seed)
    k = torch.nn.functional.normalize(torch.randn(cfg.pairs, dim, generator=gen), dim=1).to(device).requires_grad_()
    q = torch.nn.functional.normalize(torch.randn(cfg.pairs, dim, generator=gen), dim=1).to(device)
    return saved_tensor_bytes(lambda: cfg.loss_function()(k, q))[1]


def estimate(cfg: TrainConfig, dataroot: Path, cache_dir: Path, world: int = 1, sparse_backend: str = "torch",
             measure: bool = True) -> dict[str, Any]:
    """Steps, teacher cache and memory of training ``cfg`` on ``dataroot`` with ``world`` processes.
    Parts that need the dataset say why they are missing (``dataset_error``) instead of failing;
    ``measure``: run the student forward and the loss once to measure activations."""
    target = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(target if target == "cpu" or torch.cuda.is_available() else "cpu")
    geometry = teacher_geometry(cfg.teacher_spec)
    online = cfg.online_teacher(torch.device(target))
    out: dict[str, Any] = {"dataset": str(dataroot), "world_size": world,
                           "teacher_features": "online" if online else "cache",
                           "keyframes_per_step": cfg.batch * cfg.accumulate * world, "teacher": geometry.as_dict()}
    try:
        train = _keyframes(cfg, dataroot, cfg.split, cache_dir)
        val_all = _keyframes(cfg, dataroot, cfg.val_split, cache_dir)
        val = [val_all[i] for i in cfg.val_set.keyframes([k["scene"] for k in val_all])]  # what validation reads
    except RelvizError as e:
        train = val = None
        out["dataset_error"] = str(e)
    per_image = cache_file_bytes(geometry)
    cache: dict[str, Any] = {"bytes_per_image": per_image, "how": f"float16 [{geometry.dim}, {geometry.grid[0]}, "
                             f"{geometry.grid[1]}] .npy per camera image, measured through FeatureCache"}
    if train is not None:
        per_epoch, total = cfg.steps(len(train), world)
        out.update(train_keyframes=len(train), val_keyframes_validated=len(val), steps_per_epoch=per_epoch,
                   total_steps=total)
        # the online teacher computes the train images inside the step: only validation is cached
        images = sum(len(k["cameras"]) for k in (val if online else train + val))
        cache.update(images=images, bytes=images * per_image)
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache["free_disk_bytes"] = shutil.disk_usage(cache_dir).free
        cache["fits_on_disk"] = cache["bytes"] < cache["free_disk_bytes"]
    out["teacher_cache"] = cache
    out["memory"] = _memory(cfg, geometry, dataroot, cache_dir, target, device, sparse_backend,
                            measure and train is not None and len(train) > 0)
    return out


def _memory(cfg: TrainConfig, geometry: TeacherGeometry, dataroot: Path, cache_dir: Path, target: str,
            device: torch.device, backend: str, measure: bool) -> dict[str, Any]:
    teacher_bytes = 2 if target == "cuda" else 4  # ClipTeacher runs in float16 on CUDA
    mem: dict[str, Any] = {"device": target, "teacher_parameters": geometry.parameters,
                           "teacher_weights_mb": geometry.parameters * teacher_bytes / MB if geometry.parameters
                           else None}
    if not measure:
        from relviz.models.minkunet import build_minkunet

        with torch.device("meta"):
            student = build_minkunet(cfg.arch, in_channels=1, out_channels=geometry.dim, width=cfg.width,
                                     normalize=True, backend=backend)
        mem["student_parameters"] = sum(p.numel() for p in student.parameters())
    else:
        student = _student_memory(cfg, dataroot, cache_dir, geometry.dim, device, backend)
        mem["student_parameters"] = student["parameters"]
        mem["activations_mb"] = student["activations_per_keyframe"] * cfg.batch / MB  # one micro-batch at a time
        mem["activations_measured_on"] = student["measured_on"]
        mem["loss_mb"] = _loss_memory(cfg, geometry.dim, device) / MB
    # float32 weights, their gradients and SGD's momentum buffer
    mem["weights_grads_momentum_mb"] = 3 * 4 * mem["student_parameters"] / MB
    parts = ("weights_grads_momentum_mb", "teacher_weights_mb", "activations_mb", "loss_mb")
    mem["total_mb"] = sum(mem.get(p) or 0.0 for p in parts)
    mem["counted"] = [p for p in parts if mem.get(p) is not None]
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in mem.items()}


__all__ = ["TeacherGeometry", "cache_file_bytes", "estimate", "saved_tensor_bytes", "teacher_geometry"]
