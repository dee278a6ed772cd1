"""The CLIP teacher: dense per-patch image features by the MaskCLIP value path, text embeddings.

Dense features (MaskCLIP): run the vision transformer up to its last block; on the last block take
only the value path ``out_proj(W_v LN1(x) + b_v)`` for every token (no query-key attention, no
residual, no MLP), then ``ln_post`` and the visual projection: [B, D, H/p, W/p] at stride p.
A point takes the bilinear sample of that grid at its pixel.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F

from relviz.errors import InputError
from relviz.teacher.base import ImageTeacher, TeacherWeightsError, check_input_size
from relviz.teacher.prompts import TEMPLATES, class_prompts, detail_prompts


def _as_tuple(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class ClipTeacher(ImageTeacher):
    """A frozen open_clip model used as the distillation teacher.

    model_name: an open_clip model (``ViT-B-16``, or ``relviz-demo-vit`` for the demo teacher).
    pretrained: an open_clip pretrained tag (downloads through open_clip's cache) or a local weights
        file. None is refused unless ``random_init=True`` (tests) or the built ``model`` is given.
    input_size: (height, width) the images are resized to; positional embeddings follow it.
    """

    has_text = True
    dense_path = "maskclip"

    def __init__(self, model_name: str = "ViT-B-16", pretrained: str | None = "openai",
                 input_size: int | tuple[int, int] = (224, 416), device: str | torch.device = "cpu",
                 model=None, identity: str | None = None, random_init: bool = False):
        """``identity``: the weights part of :attr:`identity` when already known (else hashed)."""
        import open_clip

        if model is None and pretrained is None and not random_init:
            raise TeacherWeightsError(f"teacher {model_name!r} has no weights: set teacher_pretrained to an open_clip "
                                      f"tag (e.g. 'openai') or a local weights file (random weights only with "
                                      f"random_init=True)")

        self.model_name = self.name = model_name
        self.pretrained = pretrained
        self.random_init = model is None and pretrained is None  # said wherever its figures are shown
        self.input_size = _as_tuple(input_size)
        self.device = torch.device(device)
        if model is None:
            model = _create(model_name, pretrained, self.input_size)
        self.model = model.eval().requires_grad_(False)
        if self.device.type == "cuda":
            if identity is None:  # hashed before .half(): one cache key for the same weights on every device
                identity = weights_identity(model_name, self.model.state_dict())
            self.model = self.model.half()
        self.model.to(self.device)
        self.tokenizer = open_clip.get_tokenizer(model_name)
        visual = self.model.visual
        self.mean = torch.tensor(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
        self.patch_size = _as_tuple(visual.patch_size)
        check_input_size(self.input_size, self.patch_size, model_name)
        self.dim = int(visual.proj.shape[1])
        self._identity = identity
        self._init_lock()

    # ---------------------------------------------------------------------------------- identity
    @property
    def identity(self) -> str:
        """A key that changes whenever the model, its weights or the input size change."""
        if self._identity is None:
            self._identity = weights_identity(self.model_name, self.model.state_dict())
        return teacher_identity(self._identity, self.input_size)

    def dense_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised float [B, 3, h, w] -> L2-normalised dense features [B, D, h/p, w/p]."""
        with self._lock, torch.inference_mode():
            return dense_maskclip(self.model.visual, pixels)

    # -------------------------------------------------------------------------------------- text
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """[P] strings -> L2-normalised [P, D] (float32)."""
        if isinstance(prompts, str) or not prompts:
            raise InputError("encode_text expects a non-empty list of strings")
        tokens = self.tokenizer(list(prompts)).to(self.device)
        with self._lock, torch.inference_mode():
            return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def class_embeddings(self, templates: tuple[str, ...] = TEMPLATES) -> torch.Tensor:
        """[16, D]: per merged class (1..16), the normalised mean of its detail prompts x templates
        (the prototypes of the "mean" prompt aggregation, and the text side of G)."""
        return self._group_means(list(class_prompts(templates).values()))

    def detail_embeddings(self, templates: tuple[str, ...] = TEMPLATES) -> torch.Tensor:
        """[43, D]: per detail name (in ``detail_names()`` order), the normalised mean of its prompts
        under ``templates`` (the rows of the "max" prompt aggregation). With ``OPENSCENE_TEMPLATES``
        (one template) these are OpenScene's nuScenes text features."""
        return self._group_means(list(detail_prompts(templates).values()))

    def _group_means(self, groups: list[list[str]]) -> torch.Tensor:
        """[G, D]: per group of prompts, the normalised mean of their normalised embeddings, all
        groups encoded in one batch."""
        emb = self.encode_text([p for group in groups for p in group])
        out, start = [], 0
        for group in groups:
            out.append(F.normalize(emb[start:start + len(group)].mean(0), dim=0))
            start += len(group)
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
    if looks_like_file:
        model = open_clip.create_model(model_name, pretrained=None, force_image_size=input_size)
        load_open_clip_file(model, path, model_name)
        return model
    try:
        return open_clip.create_model(model_name, pretrained=pretrained, force_image_size=input_size)
    except Exception as e:  # network errors, missing cache
        raise TeacherWeightsError(
            f"cannot load {model_name} weights from pretrained tag {pretrained!r}: {type(e).__name__}: {e}. On a "
            f"machine without internet, download the weights elsewhere and pass the local file as "
            f"teacher_pretrained") from e


def open_clip_layout(model_name: str) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of an open_clip checkpoint of ``model_name`` as published (at the image
    size of its config): ``open_clip.create_model(model_name).state_dict()``, built on the meta
    device (shapes only)."""
    import open_clip

    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in open_clip.create_model(model_name, pretrained=None, device="meta").state_dict().items()}


def load_open_clip_file(model, path: str | Path, model_name: str) -> None:
    """Load an open_clip checkpoint file (``open_clip_model.safetensors``, ``open_clip_pytorch_model.bin``,
    a training checkpoint's ``{"state_dict": ...}`` with DDP's ``module.`` prefix) into ``model``,
    after checking it key by key against :func:`open_clip_layout` (a CLIP positional embedding may be
    saved at any patch grid); the positional embedding is then resized to ``model``'s image size as
    open_clip does."""
    from open_clip.model import resize_pos_embed

    from relviz.teacher.weights import check_layout, read_state_dict

    state = read_state_dict(path, model_name)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    layout = open_clip_layout(model_name)
    pos = "visual.positional_embedding"
    if pos in state and pos in layout and state[pos].ndim == 2 and state[pos].shape[1] == layout[pos][1]:
        layout[pos] = tuple(state[pos].shape)  # saved at another image size: resized below, as open_clip does
    check_layout(state, {f"open_clip {model_name}": layout}, path, model_name)
    target = getattr(getattr(model, "visual", None), "positional_embedding", None)
    if pos in state and target is not None and state[pos].shape != target.shape:
        # CLIP's positional embedding saved at the training grid: to the input grid, as open_clip does (its
        # resize assumes a square saved grid; a file saved at this model's own grid needs none)
        resize_pos_embed(state, model)
    model.load_state_dict(state, strict=True)
