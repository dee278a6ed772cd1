"""The CLIP teacher: dense per-patch image features by the MaskCLIP value path, text embeddings.

Dense features (MaskCLIP): run the vision transformer up to its last block; on the last block take
only the value path ``out_proj(W_v LN1(x) + b_v)`` for every token (no query-key attention, no
residual, no MLP), then ``ln_post`` and the visual projection: [B, D, H/p, W/p] at stride p.
A point takes the bilinear sample of that grid at its pixel.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from relviz.errors import RelvizError, InputError
from relviz.teacher.prompts import TEMPLATES, class_prompts


class TeacherWeightsError(RelvizError, FileNotFoundError):
    """The teacher's weights cannot be found or loaded; the message says how to provide them."""


def _as_tuple(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class ClipTeacher:
    """A frozen open_clip model used as the distillation teacher.

    model_name: an open_clip model (``ViT-B-16``, or ``relviz-demo-vit`` for the demo teacher).
    pretrained: an open_clip pretrained tag (downloads through open_clip's cache) or a local weights
        file. None is refused unless ``random_init=True`` (tests) or the built ``model`` is given.
    input_size: (height, width) the images are resized to; positional embeddings follow it.
    """

    def __init__(self, model_name: str = "ViT-B-16", pretrained: str | None = "openai",
                 input_size: int | tuple[int, int] = (224, 416), device: str | torch.device = "cpu",
                 model=None, identity: str | None = None, random_init: bool = False):
        """``identity``: the weights part of :attr:`identity` when already known (else hashed)."""
        import open_clip

        if model is None and pretrained is None and not random_init:
            raise TeacherWeightsError(f"teacher {model_name!r} has no weights: set teacher_pretrained to an open_clip "
                                      f"tag (e.g. 'openai') or a local weights file (random weights only with "
                                      f"random_init=True)")

        self.model_name = model_name
        self.pretrained = pretrained
        self.input_size = _as_tuple(input_size)
        self.device = torch.device(device)
        if model is None:
            model = _create(model_name, pretrained, self.input_size)
        self.model = model.eval().requires_grad_(False)
        if self.device.type == "cuda":
            self.model = self.model.half()
        self.model.to(self.device)
        self.tokenizer = open_clip.get_tokenizer(model_name)
        visual = self.model.visual
        self.mean = torch.tensor(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
        self.patch_size = _as_tuple(visual.patch_size)
        self.dim = int(visual.proj.shape[1])
        self._identity = identity
        self._lock = threading.Lock()  # one teacher may serve several app sessions

    # ---------------------------------------------------------------------------------- identity
    @property
    def identity(self) -> str:
        """A key that changes whenever the model, its weights or the input size change."""
        if self._identity is None:
            self._identity = weights_identity(self.model_name, self.model.state_dict())
        return teacher_identity(self._identity, self.input_size)

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.input_size[0] // self.patch_size[0], self.input_size[1] // self.patch_size[1]

    # ------------------------------------------------------------------------------------ images
    def preprocess(self, images) -> torch.Tensor:
        """uint8 images [B, H, W, 3] (numpy or tensor) -> normalised float [B, 3, h, w] at input size."""
        x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise InputError(f"images: expected uint8 [B, H, W, 3], got {tuple(x.shape)}")
        x = x.to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        if tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        return ((x - self.mean.to(x)) / self.std.to(x)).to(next(self.model.parameters()).dtype)

    def dense_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised float [B, 3, h, w] -> L2-normalised dense features [B, D, h/p, w/p]."""
        with self._lock, torch.inference_mode():
            return dense_maskclip(self.model.visual, pixels)

    def image_features(self, images) -> torch.Tensor:
        """uint8 images [B, H, W, 3] -> dense features [B, D, h/p, w/p] (float32)."""
        return self.dense_features(self.preprocess(images)).float()

    # -------------------------------------------------------------------------------------- text
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """[P] strings -> L2-normalised [P, D] (float32)."""
        if isinstance(prompts, str) or not prompts:
            raise InputError("encode_text expects a non-empty list of strings")
        tokens = self.tokenizer(list(prompts)).to(self.device)
        with self._lock, torch.inference_mode():
            return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def class_embeddings(self, templates: tuple[str, ...] = TEMPLATES) -> torch.Tensor:
        """[16, D]: per merged class (1..16), the normalised mean of its detail prompts x templates."""
        prompts = class_prompts(templates)
        flat = [p for ps in prompts.values() for p in ps]
        emb = self.encode_text(flat)
        out, start = [], 0
        for ps in prompts.values():
            out.append(F.normalize(emb[start:start + len(ps)].mean(0), dim=0))
            start += len(ps)
        return torch.stack(out)


def teacher_identity(weights_id: str, input_size: tuple[int, int]) -> str:
    """A teacher's identity: its weights, its input size and the dense path."""
    return f"{weights_id}-{input_size[0]}x{input_size[1]}-maskclip"


def weights_identity(model_name: str, state: dict[str, torch.Tensor]) -> str:
    """The weights part of a teacher's identity: a hash of ``state`` as float32, the same for the
    built model and for its checkpoint file, so it can be known without building the model."""
    h = hashlib.sha256()
    for k, v in sorted(state.items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    return f"{model_name}-{h.hexdigest()[:16]}"


def dense_maskclip(visual, x: torch.Tensor) -> torch.Tensor:
    """The MaskCLIP value path of an open_clip VisionTransformer: [B, 3, H, W] -> [B, D, H/p, W/p]."""
    tokens = _embed(visual, x)  # [B, 1 + hw, C]
    blocks = visual.transformer.resblocks
    if not getattr(visual.transformer, "batch_first", True):
        tokens = tokens.transpose(0, 1)
    for block in blocks[:-1]:
        tokens = block(tokens)
    if not getattr(visual.transformer, "batch_first", True):
        tokens = tokens.transpose(0, 1)
    last = blocks[-1]
    attn = last.attn
    width = tokens.shape[-1]
    v = F.linear(last.ln_1(tokens), attn.in_proj_weight[2 * width:], attn.in_proj_bias[2 * width:])
    v = attn.out_proj(v)
    v = visual.ln_post(v[:, 1:]) @ visual.proj  # drop the class token
    gh, gw = x.shape[-2] // visual.patch_size[0], x.shape[-1] // visual.patch_size[1]
    feats = v.transpose(1, 2).reshape(x.shape[0], -1, gh, gw)
    return F.normalize(feats, dim=1)


def _embed(visual, x: torch.Tensor) -> torch.Tensor:
    """conv1, class token, positional embedding (bicubically resized when the patch grid differs
    from the one the model was built for), ln_pre."""
    t = visual.conv1(x)
    gh, gw = t.shape[-2:]
    t = t.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(t.dtype).view(1, 1, -1).expand(t.shape[0], 1, -1)
    pos = visual.positional_embedding.to(t.dtype)
    g0, g1 = visual.grid_size
    if (gh, gw) != (g0, g1):
        grid = pos[1:].reshape(1, g0, g1, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid.float(), size=(gh, gw), mode="bicubic", align_corners=False).to(pos.dtype)
        pos = torch.cat([pos[:1], grid[0].flatten(1).T], 0)
    t = torch.cat([cls, t], dim=1) + pos
    return visual.ln_pre(visual.patch_dropout(t))


def sample_points(dense: torch.Tensor, image_index: torch.Tensor, pixels: torch.Tensor,
                  image_size: tuple[int, int]) -> torch.Tensor:
    """Bilinear samples of dense features at pixels: L2-normalised [M, D].

    dense [B, D, h, w]; image_index [M] (which image); pixels [M, 2] as (u = column, v = row) in the
    original image of size (height, width), integer coordinates at pixel centres. The feature grid
    is taken to cover the whole image, so the centre of patch (i, j) returns feature (i, j) exactly.
    """
    height, width = image_size
    pix = pixels.to(dense.device, torch.float32)
    # pixel-centre coordinates -> [-1, 1] with align_corners=False (edges of the image at +-1)
    grid = torch.stack([(pix[:, 0] + 0.5) / width * 2 - 1, (pix[:, 1] + 0.5) / height * 2 - 1], dim=1)
    out = torch.empty(len(pix), dense.shape[1], device=dense.device, dtype=dense.dtype)
    image_index = image_index.to(dense.device)
    for b in torch.unique(image_index).tolist():
        m = image_index == b
        g = grid[m].view(1, 1, -1, 2).to(dense.dtype)
        out[m] = F.grid_sample(dense[b:b + 1], g, mode="bilinear", padding_mode="border",
                               align_corners=False)[0, :, 0].T
    return F.normalize(out.float(), dim=1)


def _create(model_name: str, pretrained: str | None, input_size: tuple[int, int]):
    import open_clip

    if model_name not in open_clip.list_models():  # the demo teacher's config is registered by its loader
        raise InputError(f"unknown open_clip model {model_name!r}")
    if pretrained is None:
        return open_clip.create_model(model_name, pretrained=None, force_image_size=input_size)
    path = Path(pretrained).expanduser()
    looks_like_file = path.suffix in (".bin", ".pt", ".pth", ".safetensors") or "/" in str(pretrained)
    if looks_like_file and not path.is_file():
        raise TeacherWeightsError(f"teacher weights file {path} not found; give an existing .bin/.pt/.safetensors "
                                  f"file, or an open_clip pretrained tag such as 'openai' on a machine with internet")
    if not looks_like_file and pretrained not in open_clip.list_pretrained_tags_by_model(model_name):
        raise TeacherWeightsError(f"{model_name} has no open_clip pretrained tag {pretrained!r}; known tags: "
                                  f"{', '.join(open_clip.list_pretrained_tags_by_model(model_name)) or 'none'}")
    try:
        return open_clip.create_model(model_name, pretrained=str(path) if looks_like_file else pretrained,
                                      force_image_size=input_size)
    except Exception as e:  # network errors, missing cache, incompatible file
        source = f"file {path}" if looks_like_file else f"pretrained tag {pretrained!r}"
        raise TeacherWeightsError(
            f"cannot load {model_name} weights from {source}: {type(e).__name__}: {e}. On a machine without "
            f"internet, download the weights elsewhere and pass the local file as teacher_pretrained") from e
