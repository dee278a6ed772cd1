"""One registry of teachers, by name (as open_clip's model registry is for its models).

Names: ``demo`` (relviz's own small CLIP); any open_clip CLIP model (``ViT-B-16``, ``ViT-L-14-336``:
OpenScene's text encoder, ...); SigLIP and SigLIP 2 through open_clip (``ViT-B-16-SigLIP``,
``ViT-B-16-SigLIP2``, ``ViT-SO400M-14-SigLIP``, ...); DINOv2 through timm by the names of
facebookresearch/dinov2's torch.hub entries (``dinov2_vits14``, ``dinov2_vitb14_reg``, ...; the
``_prenorm`` variants take the tokens before the final norm, as SuperFlow's and ScaLR's code do).
Every entry knows its input size and patch, normalisation, feature dimension, dense-feature path and
whether it has a text tower, without building the model. ``docs/teacher.md`` derives each dense path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from relviz.errors import InputError
from relviz.teacher.base import DEMO_MODEL

OPENAI_MEAN, OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIGLIP_MEAN, SIGLIP_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
# SLidR's camera crop is 224 x 416: relviz keeps its aspect (13:7) for every CLIP-style teacher
ASPECT = 416 / 224


@dataclass(frozen=True)
class TeacherEntry:
    """A registered teacher. ``family``: demo / clip / siglip / dinov2; ``arch``: the open_clip model
    or timm architecture built; ``input_size``: (height, width) the camera images are resized to,
    whole multiples of ``patch``; ``dim``: feature dimension; ``dense_path``: see docs/teacher.md."""

    name: str
    family: str
    arch: str
    patch: int
    input_size: tuple[int, int]
    dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dense_path: str
    has_text: bool
    weights_hint: str  # the published file(s) a user gives as teacher_pretrained
    source: str = ""

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.input_size[0] // self.patch, self.input_size[1] // self.patch


def clip_input_size(trained: int, patch: int) -> tuple[int, int]:
    """(height, width) for a model trained at ``trained`` px: that height, SLidR's 13:7 aspect,
    the width rounded to whole patches (ViT-B/16 at 224: 224 x 416, SLidR's crop)."""
    return trained, round(trained * ASPECT / patch) * patch


# ------------------------------------------------------------------------------------------- DINOv2
# hub name -> (timm architecture, width); facebookresearch/dinov2 hubconf.py, timm vision_transformer.py
_DINOV2 = {"s": ("small", 384), "b": ("base", 768), "l": ("large", 1024), "g": ("giant", 1536)}
DINOV2_INPUT = (224, 448)  # SuperFlow's and ScaLR's image size (16 x 32 patches)


def _dinov2_entries() -> dict[str, TeacherEntry]:
    out = {}
    for size, (timm_size, width) in _DINOV2.items():
        for reg in (False, True):
            hub = f"dinov2_vit{size}14" + ("_reg" if reg else "")
            arch = f"vit_{timm_size}_patch14" + ("_reg4" if reg else "") + "_dinov2"
            hint = (f"facebookresearch/dinov2's {hub}{'4' if reg else ''}_pretrain.pth or timm's "
                    f"model.safetensors of timm/{arch}.lvd142m")
            for prenorm in (False, True):
                name = hub + ("_prenorm" if prenorm else "")
                out[name] = TeacherEntry(name, "dinov2", arch, 14, DINOV2_INPUT, width, IMAGENET_MEAN, IMAGENET_STD,
                                         "dinov2-prenorm" if prenorm else "dinov2-norm", False, hint,
                                         "Oquab et al. 2023 (DINOv2); Darcet et al. 2024 (registers)")
    return out


DEMO_ENTRY = TeacherEntry("demo", "demo", DEMO_MODEL, 16, (256, 448), 128, OPENAI_MEAN, OPENAI_STD, "maskclip",
                          True, "checkpoints/demo/teacher.safetensors (relviz teacher train)", "docs/teacher.md")
STATIC: dict[str, TeacherEntry] = {"demo": DEMO_ENTRY, **_dinov2_entries()}
# listed by :func:`list_teachers` (any other open_clip model is found by name too)
OPEN_CLIP_LISTED = ("ViT-B-16", "ViT-B-32", "ViT-L-14", "ViT-L-14-336", "ViT-B-16-SigLIP", "ViT-B-16-SigLIP-256",
                    "ViT-L-16-SigLIP-256", "ViT-SO400M-14-SigLIP", "ViT-B-16-SigLIP2", "ViT-L-16-SigLIP2-256",
                    "ViT-SO400M-14-SigLIP2")
_custom: dict[str, TeacherEntry] = {}


def _open_clip_entry(name: str) -> TeacherEntry | None:
    """The entry of open_clip model ``name`` from its config (no model built), or None when open_clip
    does not know it or its image tower has no dense path here (ResNets, non-MAP timm towers)."""
    import open_clip

    if name not in open_clip.list_models():
        return None
    cfg = open_clip.get_model_config(name)
    vision, dim = cfg["vision_cfg"], int(cfg["embed_dim"])
    size = vision.get("image_size", 224)
    trained = size if isinstance(size, int) else int(size[0])
    if vision.get("timm_model_name"):
        match = re.search(r"patch(\d+)", vision["timm_model_name"])
        if vision.get("timm_pool") != "map" or not match:
            return None
        patch = int(match.group(1))
        return TeacherEntry(name, "siglip", name, patch, clip_input_size(trained, patch), dim, SIGLIP_MEAN, SIGLIP_STD,
                            "siglip-map-value", True, f"the open_clip checkpoint of {name} "
                            f"(open_clip_model.safetensors) or an open_clip tag", "Zhai et al. 2023; Tschannen et al. 2025")
    if isinstance(vision.get("layers"), (list, tuple)):  # a ModifiedResNet: no MaskCLIP value path here
        return None
    patch = int(vision.get("patch_size", 16))
    return TeacherEntry(name, "clip", name, patch, clip_input_size(trained, patch), dim, OPENAI_MEAN, OPENAI_STD,
                        "maskclip", True, f"the open_clip checkpoint of {name} or an open_clip tag such as 'openai'",
                        "Radford et al. 2021; MaskCLIP, Zhou et al. 2022")


def entry_for(name: str) -> TeacherEntry:
    """The registry entry of teacher ``name``; InputError listing the known names otherwise."""
    if name in _custom:
        return _custom[name]
    if name in STATIC:
        return STATIC[name]
    entry = _open_clip_entry(name)
    if entry is None:
        raise InputError(f"unknown teacher {name!r}: expected one of {', '.join(list_teachers())} "
                         f"or another open_clip ViT model name")
    return entry


def list_teachers() -> list[str]:
    """The registered names (the demo, the listed open_clip models, every DINOv2 entry, custom ones)."""
    return [*STATIC.keys(), *OPEN_CLIP_LISTED, *_custom.keys()]


def register_teacher(entry: TeacherEntry) -> TeacherEntry:
    """Add a custom entry (e.g. a registered architecture at another input size); its name must be
    new, so that its features never share a cache folder with another entry's."""
    if entry.name in STATIC or entry.name in OPEN_CLIP_LISTED or entry.name in _custom:
        raise InputError(f"teacher {entry.name!r} is registered already; give the custom entry a new name")
    _custom[entry.name] = entry
    return entry


def variant(name: str, new_name: str, **changes) -> TeacherEntry:
    """A registered copy of entry ``name`` under ``new_name`` with ``changes`` (e.g. ``input_size``)."""
    return register_teacher(replace(entry_for(name), name=new_name, **changes))


def build_teacher(name: str, pretrained: str | None = None, device: str = "cpu", random_init: bool = False,
                  input_size: tuple[int, int] | None = None):
    """The teacher of registry entry ``name`` with weights ``pretrained`` (a local file; an open_clip
    tag for CLIP/SigLIP; None refused unless ``random_init``)."""
    entry = entry_for(name)
    if entry.family == "dinov2":
        from relviz.teacher.dinov2 import Dinov2Teacher

        return Dinov2Teacher(entry, pretrained, device, random_init, input_size)
    if entry.family == "siglip":
        from relviz.teacher.siglip import SiglipTeacher

        return SiglipTeacher(entry, pretrained, device, random_init, input_size)
    if entry.family == "demo":
        from relviz.teacher.demo import DEMO_TEACHER_PATH, load_demo_teacher

        return load_demo_teacher(pretrained or DEMO_TEACHER_PATH, device=device)
    from relviz.teacher.clip import ClipTeacher

    teacher = ClipTeacher(entry.arch, pretrained=pretrained, input_size=input_size or entry.input_size,
                          device=device, random_init=random_init)
    teacher.entry = entry
    return teacher


__all__ = ["TeacherEntry", "build_teacher", "clip_input_size", "entry_for", "list_teachers", "register_teacher",
           "variant", "DEMO_ENTRY", "DINOV2_INPUT"]
