"""SigLIP and SigLIP 2 teachers through open_clip (a timm ViT image tower pooled by an attention head).

Dense features (the MaskCLIP idea carried to SigLIP's attention-pooling "MAP" head). SigLIP's image
embedding is ``head(norm(x))`` over the last block's tokens x, where the MAP head is one cross-attention
of a learnt latent query over all N patch tokens followed by a residual MLP:

    a = softmax(q k_i^T / sqrt(d))            (per head, q from the latent, k_i = W_k t_i + b_k)
    h = W_o (sum_i a_i v_i) + b_o,  v_i = W_v t_i + b_v,  t_i = norm(x_i)
    e = h + MLP(LN(h))

CLIP's image embedding is also an attention output (the class token's), and MaskCLIP drops its
query-key weighting and keeps the value path of every token. The same here: take the pooled output
as if the attention were one-hot on patch i (a_i = 1), i.e. for every patch

    h_i = W_o (W_v t_i + b_v) + b_o,   e_i = h_i + MLP(LN(h_i))

which is exactly what the head returns for an image whose attention falls on patch i alone, so e_i
lives where SigLIP's image and text embeddings do. The MLP is kept (unlike MaskCLIP's dropped FFN of
CLIP's last block) because here it is part of the head that maps the pooled vector into the
embedding space, applied per token with nothing mixed across tokens. Then L2 normalisation:
[B, D, H/p, W/p]. The tower's positional embedding is resampled once to the input grid (timm's
``set_input_size``: bicubic, antialiased).

Weights: open_clip checkpoints of the model (``open_clip_model.safetensors`` /
``open_clip_pytorch_model.bin`` of ``timm/ViT-B-16-SigLIP`` and kin on Hugging Face), checked key by
key; or an open_clip pretrained tag (``webli``) where open_clip can download.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from relviz.teacher.clip import ClipTeacher, TeacherWeightsError, load_open_clip_file, weights_identity

SIGLIP_MEAN, SIGLIP_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # open_clip's / timm's preprocessing for SigLIP


def build_siglip(model_name: str, pretrained: str | None = None):
    """The open_clip model ``model_name`` at the image size of its config, with the weights of the
    local file or open_clip tag ``pretrained`` (None: random)."""
    import open_clip

    if pretrained is None:
        return open_clip.create_model(model_name, pretrained=None)
    path = Path(pretrained).expanduser()
    if path.suffix in (".bin", ".pt", ".pth", ".safetensors") or "/" in str(pretrained):
        if not path.is_file():
            raise TeacherWeightsError(f"teacher {model_name}: weights file {path} not found; give the local path "
                                      f"of its open_clip checkpoint (open_clip_model.safetensors)")
        model = open_clip.create_model(model_name, pretrained=None)
        load_open_clip_file(model, path, model_name)
        return model
    try:
        return open_clip.create_model(model_name, pretrained=pretrained)
    except Exception as e:  # no network, no such tag
        raise TeacherWeightsError(f"cannot load {model_name} weights from pretrained tag {pretrained!r}: "
                                  f"{type(e).__name__}: {e}. Without internet pass the local open_clip "
                                  f"checkpoint file as teacher_pretrained") from e


def dense_map(visual, pixels: torch.Tensor) -> torch.Tensor:
    """The MAP-head value path (module docstring) of open_clip's timm tower ``visual`` at its input
    size: normalised pixels [B, 3, H, W] -> L2-normalised [B, D, H/p, W/p]."""
    trunk = visual.trunk
    tokens = trunk.forward_features(pixels)  # [B, N, C]: last block, final norm (SigLIP has no class token)
    pool = trunk.attn_pool
    width = tokens.shape[-1]
    v = F.linear(tokens, pool.kv.weight[width:], pool.kv.bias[width:] if pool.kv.bias is not None else None)
    h = pool.proj(v)
    e = h + pool.mlp(pool.norm(h))
    e = visual.head(trunk.head(trunk.fc_norm(e)))  # identities for SigLIP; a projection where one exists
    patches = e[:, trunk.num_prefix_tokens:]
    gh, gw = pixels.shape[-2] // trunk.patch_embed.patch_size[0], pixels.shape[-1] // trunk.patch_embed.patch_size[1]
    return F.normalize(patches.transpose(1, 2).reshape(pixels.shape[0], -1, gh, gw), dim=1)


class SiglipTeacher(ClipTeacher):
    """A frozen open_clip SigLIP / SigLIP 2 model as the distillation teacher, with its text tower.

    entry: its :class:`~relviz.teacher.registry.TeacherEntry`; pretrained: a local open_clip
    checkpoint or an open_clip tag; None is refused unless ``random_init=True``; input_size: (height,
    width), multiples of the patch (the entry's by default). The tokenizer (a Hugging Face one) is
    loaded on first use of the text side, so the image side works offline without it.
    """

    has_text = True

    def __init__(self, entry, pretrained: str | None = None, device: str | torch.device = "cpu",
                 random_init: bool = False, input_size: tuple[int, int] | None = None, model=None):
        self._init_entry(entry, pretrained, device, random_init, input_size, model, entry.arch, entry.weights_hint)
        if model is None:
            model = build_siglip(entry.arch, pretrained)
        self._identity = weights_identity(entry.name, model.state_dict())  # before the resampling below
        model.visual.set_input_size(self.input_size)
        self.dim = entry.dim
        self._tokenizer = None
        self._set_model(model, entry)

    @property
    def identity(self) -> str:
        return f"{self._identity}-{self.input_size[0]}x{self.input_size[1]}-{self.dense_path}"

    @property
    def tokenizer(self):
        """open_clip's tokenizer of the model (SigLIP's is a Hugging Face tokenizer: it must be in the
        local Hugging Face cache when there is no internet)."""
        if self._tokenizer is None:
            import open_clip

            try:
                self._tokenizer = open_clip.get_tokenizer(self.model_name)
            except Exception as e:  # offline and not cached
                raise TeacherWeightsError(
                    f"teacher {self.name}: cannot load its tokenizer ({type(e).__name__}: {e}); put the Hugging "
                    f"Face tokenizer open_clip names for {self.model_name} in the local Hugging Face cache "
                    f"(HF_HOME) to use the text side") from e
        return self._tokenizer

    def dense_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised float [B, 3, h, w] -> L2-normalised dense features [B, D, h/p, w/p]."""
        with self._lock, torch.inference_mode():
            return dense_map(self.model.visual, pixels)


__all__ = ["SiglipTeacher", "build_siglip", "dense_map"]
