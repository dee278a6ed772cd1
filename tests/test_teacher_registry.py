"""The teacher registry: every entry's dimension, patch grid and dense path at its real architecture
(explicitly random weights), weight files in their published layouts, text-less teachers, one
training step per kind of teacher, and distinct feature caches."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from fp_bounds import U32
from relviz.errors import InputError
from relviz.teacher import FeatureCache, TeacherSpec, TeacherWeightsError, load_teacher, require_text
from relviz.teacher.dinov2 import Dinov2Teacher, build_dinov2, official_layout, timm_layout
from relviz.teacher.registry import entry_for, list_teachers, variant

SMALL = (42, 70)  # a non-square input of whole 14-pixel patches: a 3 x 5 grid
SMALL16 = (32, 48)  # the same for 16-pixel patches: 2 x 3


# ------------------------------------------------------------------------------ reference by hand
def _ln(mod, x):
    return F.layer_norm(x, (x.shape[-1],), mod.weight, mod.bias, mod.eps)


def _gelu(mlp, x):
    tanh = "Tanh" in type(mlp.act).__name__  # SigLIP's MLPs use the tanh approximation
    return F.gelu(x, approximate="tanh" if tanh else "none")


def _mlp(mlp, x):
    return _gelu(mlp, x @ mlp.fc1.weight.T + mlp.fc1.bias) @ mlp.fc2.weight.T + mlp.fc2.bias


def _attention(attn, x):
    b, n, c = x.shape
    heads = attn.num_heads
    q, k, v = (x @ attn.qkv.weight.T + attn.qkv.bias).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    a = (q @ k.transpose(-1, -2) / math.sqrt(c // heads)).softmax(-1)
    return (a @ v).transpose(1, 2).reshape(b, n, c) @ attn.proj.weight.T + attn.proj.bias


def _scale(ls, x):
    return x * ls.gamma if hasattr(ls, "gamma") else x  # DINOv2's LayerScale; SigLIP has none


def _resampled(grid_pos, grid):
    """A square grid of positional embeddings [1, s*s, C] bicubically resampled (antialiased) to grid."""
    side = math.isqrt(grid_pos.shape[1])
    g = grid_pos.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    g = F.interpolate(g, size=grid, mode="bicubic", antialias=True, align_corners=False)
    return g.flatten(2).transpose(1, 2)


def _vit_by_hand(vit, x, grid, class_in_pos: bool):
    """Tokens [B, N, C] of a timm ViT ``vit`` as built at its published size (not resampled), step by
    step from its weights: patch conv, class/register tokens, positional embedding resampled to
    ``grid``, blocks, final LayerNorm not applied."""
    p = vit.patch_embed.proj
    t = F.conv2d(x, p.weight, p.bias, stride=p.stride).flatten(2).transpose(1, 2)
    b = x.shape[0]
    prefix = []
    if getattr(vit, "cls_token", None) is not None:
        prefix.append(vit.cls_token.expand(b, -1, -1))
    if getattr(vit, "reg_token", None) is not None:
        prefix.append(vit.reg_token.expand(b, -1, -1))
    if class_in_pos:  # DINOv2 without registers: the class token has its own positional embedding
        t = torch.cat(prefix + [t], 1) + torch.cat([vit.pos_embed[:, :1], _resampled(vit.pos_embed[:, 1:], grid)], 1)
    else:
        t = torch.cat(prefix + [t + _resampled(vit.pos_embed, grid)], 1)
    for blk in vit.blocks:
        t = t + _scale(blk.ls1, _attention(blk.attn, _ln(blk.norm1, t)))
        t = t + _scale(blk.ls2, _mlp(blk.mlp, _ln(blk.norm2, t)))
    return t


def _grid_features(tokens, grid):
    return F.normalize(tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *grid), dim=1)


def _assert_close_to(ours, ref, exact, d):
    """ours (float32), ref (float32 by hand) and exact (ours' code in float64): ~12 blocks deep no a
    priori bound is useful, so the scale is measured (as tests/test_teacher.py does for MaskCLIP):
    the reference must be within 10x ours' own float32 error of the float64 run, plus the final
    normalisation's (D + 3) u. A step missing or misplaced is off by O(0.01) or more."""
    err32 = (ours.double() - exact).abs().max().item()
    err_ref = (ref.double() - exact).abs().max().item()
    assert err_ref <= 10 * err32 + (d + 3) * U32, (err_ref, err32)


# --------------------------------------------------------------------------------------- fixtures
def _in_float64(teacher):
    """The same teacher (weights, dense path) computing in float64."""
    exact = copy.copy(teacher)
    exact.model = copy.deepcopy(teacher.model).double()
    return exact


def _dinov2(name):
    entry = entry_for(name)
    torch.manual_seed(0)
    built = build_dinov2(entry.arch)
    with torch.no_grad():  # LayerScale starts at 1e-5 in timm: make every block count
        for blk in built.blocks:
            blk.ls1.gamma.uniform_(0.5, 1.0)
            blk.ls2.gamma.uniform_(0.5, 1.0)
    published = copy.deepcopy(built)
    return Dinov2Teacher(entry, random_init=True, input_size=SMALL, model=built), published


@pytest.fixture(scope="module")
def siglip():
    import open_clip

    entry = entry_for("ViT-B-16-SigLIP")
    torch.manual_seed(0)
    built = open_clip.create_model(entry.arch, pretrained=None)
    published = copy.deepcopy(built.visual)
    from relviz.teacher.siglip import SiglipTeacher

    return SiglipTeacher(entry, random_init=True, input_size=SMALL16, model=built), published


# ------------------------------------------------------------------------------------ the registry
def test_entries_know_dimension_patch_text_and_normalisation_without_building():
    import open_clip

    expected = {"dinov2_vits14": 384, "dinov2_vitb14_reg": 768, "dinov2_vitl14": 1024, "dinov2_vitg14_reg": 1536,
                "ViT-B-16": 512, "ViT-L-14-336": 768, "ViT-B-16-SigLIP": 768, "ViT-B-16-SigLIP2": 768,
                "ViT-SO400M-14-SigLIP": 1152, "demo": 128}
    for name, dim in expected.items():
        assert entry_for(name).dim == dim, name
    for name in [n for n in list_teachers() if n.startswith("dinov2")]:
        e = entry_for(name)
        assert (e.patch, e.input_size, e.has_text, e.mean) == (14, (224, 448), False, (0.485, 0.456, 0.406))
        with torch.device("meta"):  # the real architecture's width, shapes only
            assert build_dinov2(e.arch, "meta").embed_dim == e.dim
    for name in ("ViT-L-14-336", "ViT-B-16-SigLIP2", "ViT-SO400M-14-SigLIP"):
        e = entry_for(name)
        with torch.device("meta"):
            model = open_clip.create_model(name, pretrained=None, device="meta")
        size = open_clip.get_model_config(name)["vision_cfg"].get("image_size", 224)
        image = model.encode_image(torch.empty(1, 3, size, size, device="meta"))  # the real tower, shapes only
        assert image.shape[-1] == e.dim and e.has_text and e.input_size[0] % e.patch == 0 == e.input_size[1] % e.patch
    assert entry_for("ViT-L-14-336").input_size == (336, 630)  # OpenScene's text encoder, at 336 px
    assert entry_for("ViT-B-16").input_size == (224, 416)  # SLidR's crop, as before the registry
    with pytest.raises(InputError, match="unknown teacher 'dinov3'"):
        entry_for("dinov3")


def test_input_size_must_be_whole_patches():
    with pytest.raises(InputError, match="multiple of its 14x14-pixel patches"):
        Dinov2Teacher(entry_for("dinov2_vits14"), random_init=True, input_size=(224, 416))


def test_weights_are_never_random_unless_asked():
    with pytest.raises(TeacherWeightsError, match="dinov2_vits14_pretrain.pth"):
        load_teacher(TeacherSpec("dinov2_vits14"))
    with pytest.raises(TeacherWeightsError, match="random_init=True"):
        load_teacher(TeacherSpec("ViT-B-16-SigLIP"))


# ------------------------------------------------------------------------------------- dense paths
@pytest.mark.parametrize("name", ["dinov2_vits14", "dinov2_vits14_reg"])
def test_dinov2_dense_features_are_the_normalised_patch_tokens(name):
    teacher, published = _dinov2(name)
    x = torch.randn(2, 3, *SMALL)
    ours = teacher.dense_features(x)
    assert teacher.dim == 384 and teacher.grid_size == (3, 5) and ours.shape == (2, 384, 3, 5)
    with torch.no_grad():
        tokens = _vit_by_hand(published, x, (3, 5), class_in_pos=not name.endswith("_reg"))
        n_prefix = 1 + (4 if name.endswith("_reg") else 0)  # class token (and 4 registers) dropped
        ref = _grid_features(_ln(published.norm, tokens)[:, n_prefix:], (3, 5))
    exact = _in_float64(teacher)
    _assert_close_to(ours, ref, exact.dense_features(x.double()), 384)
    # the prenorm variant: the same tokens before the final LayerNorm
    pre = copy.copy(teacher)
    pre.dense_path = "dinov2-prenorm"
    exact.dense_path = "dinov2-prenorm"
    _assert_close_to(pre.dense_features(x), _grid_features(tokens[:, n_prefix:], (3, 5)),
                     exact.dense_features(x.double()), 384)
    # camera images of any shape are resized to the input size
    images = torch.randint(0, 256, (1, 45, 80, 3), dtype=torch.uint8)
    assert teacher.image_features(images).shape == (1, 384, 3, 5)


def test_siglip_dense_features_follow_the_map_head_value_path(siglip):
    teacher, visual = siglip
    x = torch.randn(2, 3, *SMALL16)
    ours = teacher.dense_features(x)
    assert teacher.dim == 768 and teacher.grid_size == (2, 3) and ours.shape == (2, 768, 2, 3)
    with torch.no_grad():
        trunk = visual.trunk
        t = _ln(trunk.norm, _vit_by_hand(trunk, x, (2, 3), class_in_pos=False))
        pool = trunk.attn_pool
        w_v, b_v = pool.kv.weight.chunk(2)[1], pool.kv.bias.chunk(2)[1]  # the value half of the key-value map
        h = (t @ w_v.T + b_v) @ pool.proj.weight.T + pool.proj.bias
        ref = _grid_features(h + _mlp(pool.mlp, _ln(pool.norm, h)), (2, 3))
    exact = _in_float64(teacher)
    _assert_close_to(ours, ref, exact.dense_features(x.double()), 768)
    # attention one-hot on a patch: the MAP head's own output equals that patch's dense feature
    with torch.no_grad():
        one_hot = trunk.attn_pool(t[:1, 4:5])  # an "image" of the single token 4
    torch.testing.assert_close(F.normalize(one_hot, dim=-1)[0], ours[0, :, 1, 1], atol=2 * (768 + 3) * U32 * 10, rtol=0)


# ---------------------------------------------------------------------------- published layouts
def _official_keys(depth: int, width: int, registers: bool, swiglu_hidden: int | None) -> dict:
    """facebookresearch/dinov2's DinoVisionTransformer state dict at 518 px (hub models, block_chunks=0),
    spelled out from its definition (dinov2/models/vision_transformer.py, layers/block.py)."""
    hidden = 4 * width
    keys = {"cls_token": (1, 1, width), "pos_embed": (1, 1 + 37 * 37, width), "mask_token": (1, width),
            "patch_embed.proj.weight": (width, 3, 14, 14), "patch_embed.proj.bias": (width,),
            "norm.weight": (width,), "norm.bias": (width,)}
    if registers:
        keys["register_tokens"] = (1, 4, width)
    for i in range(depth):
        b = f"blocks.{i}."
        keys.update({b + "norm1.weight": (width,), b + "norm1.bias": (width,),
                     b + "attn.qkv.weight": (3 * width, width), b + "attn.qkv.bias": (3 * width,),
                     b + "attn.proj.weight": (width, width), b + "attn.proj.bias": (width,),
                     b + "ls1.gamma": (width,), b + "norm2.weight": (width,), b + "norm2.bias": (width,),
                     b + "ls2.gamma": (width,)})
        if swiglu_hidden:  # SwiGLUFFNFused: w12 [2 * hidden, C], w3 [C, hidden]
            keys.update({b + "mlp.w12.weight": (2 * swiglu_hidden, width), b + "mlp.w12.bias": (2 * swiglu_hidden,),
                         b + "mlp.w3.weight": (width, swiglu_hidden), b + "mlp.w3.bias": (width,)})
        else:
            keys.update({b + "mlp.fc1.weight": (hidden, width), b + "mlp.fc1.bias": (hidden,),
                         b + "mlp.fc2.weight": (width, hidden), b + "mlp.fc2.bias": (width,)})
    return keys


@pytest.mark.parametrize("name,depth,width,swiglu", [
    ("dinov2_vits14", 12, 384, None), ("dinov2_vitb14_reg", 12, 768, None), ("dinov2_vitl14", 24, 1024, None),
    ("dinov2_vitl14_reg", 24, 1024, None), ("dinov2_vitg14", 40, 1536, 4096), ("dinov2_vitg14_reg", 40, 1536, 4096)])
def test_official_dinov2_layout_of_every_size(name, depth, width, swiglu):
    entry = entry_for(name)
    expected = _official_keys(depth, width, name.endswith("_reg"), swiglu)
    assert official_layout(build_dinov2(entry.arch, "meta")) == expected


def _save_random(layout: dict, path, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(shape, generator=gen) * 0.02 for k, shape in layout.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return state


@pytest.mark.parametrize("name", ["dinov2_vits14", "dinov2_vits14_reg"])
def test_official_pth_and_timm_safetensors_load(name, tmp_path):
    registers = name.endswith("_reg")
    state = _save_random(_official_keys(12, 384, registers, None), tmp_path / f"{name}_pretrain.pth")
    teacher = load_teacher(TeacherSpec(name, str(tmp_path / f"{name}_pretrain.pth")))
    assert teacher.layout == "facebookresearch/dinov2 .pth"
    loaded = teacher.model.state_dict()
    torch.testing.assert_close(loaded["blocks.5.attn.qkv.weight"], state["blocks.5.attn.qkv.weight"], rtol=0, atol=0)
    if registers:  # timm keeps the class token's positional embedding in the class token
        torch.testing.assert_close(loaded["reg_token"], state["register_tokens"], rtol=0, atol=0)
        torch.testing.assert_close(loaded["cls_token"], state["cls_token"] + state["pos_embed"][:, :1], rtol=0, atol=0)
    # timm's / Hugging Face's safetensors of the same model
    timm_state = _save_random(timm_layout(build_dinov2(entry_for(name).arch, "meta")), tmp_path / "model.safetensors")
    teacher = load_teacher(TeacherSpec(name, str(tmp_path / "model.safetensors")))
    assert teacher.layout == "timm safetensors"
    torch.testing.assert_close(teacher.model.state_dict()["norm.weight"], timm_state["norm.weight"], rtol=0, atol=0)


def test_a_renamed_missing_or_misshapen_key_is_named(tmp_path):
    official = _official_keys(12, 384, False, None)
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    state = _save_random(official, path)
    renamed = {("blocks.3.attn.qkv_weight" if k == "blocks.3.attn.qkv.weight" else k): v for k, v in state.items()}
    torch.save(renamed, path)
    with pytest.raises(TeacherWeightsError) as err:
        load_teacher(TeacherSpec("dinov2_vits14", str(path)))
    message = str(err.value)
    assert str(path) in message and "facebookresearch/dinov2 .pth" in message
    assert "missing 1 key(s): blocks.3.attn.qkv.weight" in message and "unexpected 1 key(s): blocks.3.attn.qkv_weight" in message
    torch.save({k: v for k, v in state.items() if k != "norm.bias"}, path)
    with pytest.raises(TeacherWeightsError, match="missing 1 key\\(s\\): norm.bias"):
        load_teacher(TeacherSpec("dinov2_vits14", str(path)))
    torch.save({**state, "pos_embed": torch.zeros(1, 257, 384)}, path)  # a 224-px (16 x 16) embedding
    with pytest.raises(TeacherWeightsError, match=r"pos_embed is \[1, 257, 384\], expected \[1, 1370, 384\]"):
        load_teacher(TeacherSpec("dinov2_vits14", str(path)))


def test_open_clip_checkpoint_layout_is_checked(tmp_path):
    """The demo config is an open_clip CLIP: its checkpoint in open_clip's layout loads, a renamed
    key is named (the same check covers ViT-B-16, ViT-L-14-336 and SigLIP checkpoints)."""
    import open_clip
    from safetensors.torch import save_file

    from relviz.teacher.clip import ClipTeacher, open_clip_layout
    from relviz.teacher.demo import DEMO_MODEL, register_demo_config

    register_demo_config()
    torch.manual_seed(0)
    state = open_clip.create_model(DEMO_MODEL, pretrained=None).state_dict()
    save_file(state, str(tmp_path / "open_clip_model.safetensors"))
    teacher = ClipTeacher(DEMO_MODEL, pretrained=str(tmp_path / "open_clip_model.safetensors"), input_size=(256, 448))
    torch.testing.assert_close(teacher.model.state_dict()["visual.proj"], state["visual.proj"], rtol=0, atol=0)
    save_file({("visual.projection" if k == "visual.proj" else k): v for k, v in state.items()},
              str(tmp_path / "bad.safetensors"))
    with pytest.raises(TeacherWeightsError, match="missing 1 key\\(s\\): visual.proj;.*unexpected 1 key\\(s\\): "
                                                  "visual.projection") as err:
        ClipTeacher(DEMO_MODEL, pretrained=str(tmp_path / "bad.safetensors"), input_size=(256, 448))
    assert "bad.safetensors" in str(err.value) and f"open_clip {DEMO_MODEL}" in str(err.value)
    siglip = open_clip_layout("ViT-B-16-SigLIP")  # SigLIP's published open_clip keys, shapes only
    assert siglip["visual.trunk.attn_pool.kv.weight"] == (1536, 768)
    assert siglip["visual.trunk.pos_embed"] == (1, 196, 768)


# ------------------------------------------------------------------------------ text-less teachers
def test_zero_shot_with_a_text_less_teacher_is_refused_with_the_reason(siglip):
    teacher, _ = _dinov2("dinov2_vits14")
    with pytest.raises(InputError, match="zero-shot segmentation needs class text embeddings, and teacher "
                                         "dinov2_vits14 has no text tower"):
        require_text(teacher, "zero-shot segmentation")
    with pytest.raises(InputError, match="no text tower"):
        teacher.class_embeddings()
    with pytest.raises(InputError, match="no text tower"):
        require_text(entry_for("dinov2_vitl14_reg"), "zero-shot")
    require_text(siglip[0], "zero-shot segmentation")  # text-aligned: allowed
    require_text(entry_for("ViT-B-16"), "zero-shot segmentation")


# -------------------------------------------------------------------------- caches and training
def test_two_teachers_never_share_a_cache_entry(siglip, tmp_path):
    small, _ = _dinov2("dinov2_vits14")
    prenorm = copy.copy(small)
    prenorm.dense_path = "dinov2-prenorm"  # the same weights, another dense path
    registers, _ = _dinov2("dinov2_vits14_reg")
    other_size = Dinov2Teacher(entry_for("dinov2_vits14"), random_init=True, input_size=(28, 42),
                               model=build_dinov2(entry_for("dinov2_vits14").arch))
    torch.manual_seed(1)
    reseeded = Dinov2Teacher(entry_for("dinov2_vits14"), random_init=True, input_size=SMALL,
                             model=build_dinov2(entry_for("dinov2_vits14").arch))
    teachers = [small, prenorm, registers, other_size, reseeded, siglip[0]]
    identities = [t.identity for t in teachers]
    assert len(set(identities)) == len(identities), identities
    dirs = {FeatureCache(tmp_path, t.identity).dir for t in teachers}
    assert len(dirs) == len(teachers)
    # features stored under one teacher are not found under another
    FeatureCache(tmp_path, small.identity).put("cam-token", torch.zeros(384, 3, 5))
    assert all(FeatureCache(tmp_path, t.identity).get("cam-token") is None for t in teachers[1:])


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """Published-layout weight files of one DINOv2 and one SigLIP model (random, seeded)."""
    import open_clip
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("teacher-weights")
    _save_random(_official_keys(12, 384, True, None), folder / "dinov2_vits14_reg4_pretrain.pth")
    torch.manual_seed(0)
    state = open_clip.create_model("ViT-B-16-SigLIP", pretrained=None).state_dict()
    save_file({k: v.half() for k, v in state.items()}, str(folder / "open_clip_model.safetensors"))  # half: 2x smaller
    return {"dinov2": folder / "dinov2_vits14_reg4_pretrain.pth", "siglip": folder / "open_clip_model.safetensors"}


@pytest.mark.parametrize("kind", ["demo", "dinov2", "siglip"])
def test_one_training_step_with_each_kind_of_teacher(kind, weight_files, synthetic_root, tmp_path):
    from support import TINY
    from relviz.config import load_settings
    from relviz.train import Trainer, TrainConfig

    if kind == "demo":  # the demo teacher: an open_clip CLIP with the MaskCLIP path
        teacher, pretrained = "demo", None
    else:  # the registered architectures at a small camera input, under names of their own
        base = "dinov2_vits14_reg" if kind == "dinov2" else "ViT-B-16-SigLIP"
        teacher = f"test-{kind}-small"
        if teacher not in list_teachers():
            variant(base, teacher, input_size=SMALL if kind == "dinov2" else SMALL16)
        pretrained = str(weight_files[kind])
    cfg = TrainConfig(**{**TINY, "dataset": str(synthetic_root), "split": "mini_val", "teacher": teacher,
                         "teacher_pretrained": pretrained, "workers": 0, "max_steps": 1, "device": "cpu"})
    trainer = Trainer(cfg, tmp_path / "run", load_settings())
    trainer._build()
    assert trainer.teacher.dim == entry_for(teacher).dim and trainer.model.config.to_dict()
    before = [p.detach().clone() for p in trainer.model.parameters()]
    batch = next(iter(trainer.loader(0)))
    loss = trainer._micro_step(batch)
    loss.backward()
    trainer.optimizer.step()
    assert torch.isfinite(loss) and loss.item() > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    # its teacher features were cached under its own identity
    assert trainer.cache.dir.name == trainer.teacher.identity and any(trainer.cache.dir.glob("*.npy"))
