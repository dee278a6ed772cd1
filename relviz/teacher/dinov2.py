"""DINOv2 teachers (ViT-S/B/L/g/14, with and without registers) through timm; no text tower.

Dense features: the patch tokens of the last block after the final LayerNorm (DINOv2's
``x_norm_patchtokens``), class and register tokens dropped, on the 14-pixel patch grid of the input,
L2-normalised: [B, D, H/14, W/14]. The ``prenorm`` variant takes the last block's tokens before that
norm (``x_prenorm``, what SuperFlow's and ScaLR's code distil). The positional embedding, published
for 518x518 (37x37 patches), is resampled once to the input grid by timm's
``resample_abs_pos_embed`` (bicubic, antialiased).

Weights: facebookresearch/dinov2's ``dinov2_vit{s,b,l,g}14[_reg4]_pretrain.pth`` (keys as
``DinoVisionTransformer`` creates them: ``cls_token``, ``pos_embed`` [1, 1370, C], ``mask_token``,
``register_tokens``, ``blocks.N.ls1.gamma``, ``blocks.N.mlp.w12``/``w3`` for g) or timm's
``model.safetensors`` of ``timm/vit_*_patch14[_reg4]_dinov2.lvd142m`` (Hugging Face), converted to
timm's names by timm's own ``checkpoint_filter_fn``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F

from relviz.teacher.base import ImageTeacher
from relviz.teacher.clip import weights_identity
from relviz.teacher.weights import Layout, check_layout, layout_of, read_state_dict

PUBLISHED_SIZE = 518  # the image size DINOv2's positional embeddings were published for (37 x 37 patches)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def build_dinov2(arch: str, device: str | torch.device = "cpu"):
    """timm's ``arch`` (e.g. ``vit_small_patch14_dinov2``) at the published 518 px, no head, random
    weights (``device="meta"``: shapes only, nothing allocated)."""
    import timm

    with torch.device(device):
        return timm.create_model(arch, pretrained=False, num_classes=0, img_size=PUBLISHED_SIZE)


def timm_layout(model) -> Layout:
    """The keys and shapes of timm's DINOv2 ``model`` (the timm / Hugging Face safetensors layout)."""
    return layout_of(model.state_dict())


def official_layout(model) -> Layout:
    """The keys and shapes facebookresearch/dinov2's hub model of the same size has (its ``.pth``),
    from timm's: plus ``mask_token`` [1, C]; registers as ``register_tokens`` with the class token's
    position inside ``pos_embed`` [1, 1 + 37*37, C] (timm keeps them apart); SwiGLU ``fc1``/``fc2``
    as ``w12``/``w3`` (ViT-g)."""
    from timm.layers import GluMlp  # timm's SwiGLUPacked (ViT-g's feed-forward)

    timm_keys = timm_layout(model)
    width = model.embed_dim
    swiglu = isinstance(model.blocks[0].mlp, GluMlp)
    out: Layout = {}
    for k, shape in timm_keys.items():
        if k == "reg_token":
            out["register_tokens"] = shape
        elif k == "pos_embed" and "reg_token" in timm_keys:
            out[k] = (1, shape[1] + 1, width)
        elif re.match(r"blocks\.\d+\.mlp\.fc[12]\.", k) and swiglu:
            out[k.replace("fc1", "w12").replace("fc2", "w3")] = shape
        else:
            out[k] = shape
    out["mask_token"] = (1, width)
    return out


def load_dinov2_state(model, path: str | Path, name: str) -> str:
    """Load the weights file ``path`` (official ``.pth`` or timm safetensors) into timm's ``model``
    (built by :func:`build_dinov2`); returns the layout's name. A file that matches neither layout
    exactly is refused naming its keys."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    state = read_state_dict(path, name)
    layout = check_layout(state, {"facebookresearch/dinov2 .pth": official_layout(model),
                                  "timm safetensors": timm_layout(model)}, path, name)
    if layout.startswith("facebookresearch"):
        state = checkpoint_filter_fn(dict(state), model)  # timm's conversion of the official names
    model.load_state_dict(state, strict=True)
    return layout


def dense_dinov2(model, pixels: torch.Tensor, prenorm: bool = False) -> torch.Tensor:
    """timm DINOv2 ``model`` at its input size: normalised pixels [B, 3, H, W] -> L2-normalised patch
    tokens [B, D, H/14, W/14] (after the final norm unless ``prenorm``; class and register tokens
    dropped)."""
    tokens = model.patch_embed(pixels)  # [B, hw, C]
    tokens = model._pos_embed(tokens)  # class (and register) tokens, the positional embedding
    tokens = model.blocks(model.norm_pre(model.patch_drop(tokens)))
    if not prenorm:
        tokens = model.norm(tokens)
    patches = tokens[:, model.num_prefix_tokens:]
    gh, gw = pixels.shape[-2] // model.patch_embed.patch_size[0], pixels.shape[-1] // model.patch_embed.patch_size[1]
    feats = patches.transpose(1, 2).reshape(pixels.shape[0], -1, gh, gw)
    return F.normalize(feats, dim=1)


class Dinov2Teacher(ImageTeacher):
    """A frozen DINOv2 image encoder as the distillation teacher (no text tower).

    entry: its :class:`~relviz.teacher.registry.TeacherEntry`; pretrained: a local weights file (see
    the module docstring); None is refused unless ``random_init=True`` (tests, benchmarks);
    input_size: (height, width), multiples of 14 (the entry's by default).
    """

    has_text = False

    def __init__(self, entry, pretrained: str | None = None, device: str | torch.device = "cpu",
                 random_init: bool = False, input_size: tuple[int, int] | None = None, model=None):
        self._init_entry(entry, pretrained, device, random_init, input_size, model, entry.name,
                         f"the local path of {entry.weights_hint}")
        if model is None:
            model = build_dinov2(entry.arch)
            if pretrained is not None:
                self.layout = load_dinov2_state(model, pretrained, entry.name)
        # the weights as loaded, before the positional embedding is resampled to the input grid
        self._weights_id = weights_identity(entry.name, model.state_dict())
        model.set_input_size(img_size=self.input_size)
        self.dim = int(model.embed_dim)
        self._set_model(model, entry)

    @property
    def identity(self) -> str:
        """Weights, input size and dense path: two teachers never share a feature-cache folder."""
        return f"{self._weights_id}-{self.input_size[0]}x{self.input_size[1]}-{self.dense_path}"

    def dense_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised float [B, 3, h, w] -> L2-normalised dense features [B, D, h/14, w/14]."""
        with self._lock, torch.inference_mode():
            return dense_dinov2(self.model, pixels, prenorm=self.dense_path.endswith("prenorm"))


__all__ = ["Dinov2Teacher", "build_dinov2", "dense_dinov2", "load_dinov2_state", "official_layout", "timm_layout"]
