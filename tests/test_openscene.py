"""OpenScene's 3D-distill MinkUNet18A in relviz: its published state-dict layout, written out here from
OpenScene's ``models/mink_unet.py`` and MinkowskiEngine's ``modules/resnet_block.py`` (not from relviz's
model), loads key for key into relviz's MinkUNet and runs; where MinkowskiEngine is installed, ME's own
network with the same weights gives the same outputs."""

import copy

import numpy as np
import pytest
import torch

from fp_bounds import U32
from support import minkowski_unet_layout
from relviz.models import count_parameters
from relviz.models.checkpoint import (CheckpointError, is_openscene_state, load_openscene, load_student,
                                      openscene_state_to_relviz, save_checkpoint)
from relviz.sparse import SparseTensor

# OpenScene models/mink_unet.py: MinkUNet18 LAYERS, MinkUNet18A PLANES, MinkUNetBase INIT_DIM, a k=5 stem;
# DisNet (models/disnet.py): in_channels=3, out_channels=768 for OpenSeg features
LAYERS, PLANES, INIT_DIM, STEM_K = (2, 2, 2, 2, 2, 2, 2, 2), (32, 64, 128, 256, 128, 128, 96, 96), 32, 5
IN_CH, OUT_CH = 3, 768


def openscene_layout(in_ch: int = IN_CH, out_ch: int = OUT_CH) -> dict[str, tuple[int, ...]]:
    """Every key of OpenScene's net3d and its shape, as MinkowskiEngine 0.5 creates them: convolution
    ``kernel`` [K^3, C_in, C_out] ([C_in, C_out] at K=1), no convolution bias (ME's default, and
    OpenScene's ``final`` has ``has_bias=True`` commented out), MinkowskiBatchNorm as ``.bn``."""
    return minkowski_unet_layout(LAYERS, PLANES, INIT_DIM, in_ch, out_ch, stem_kernel=STEM_K, final_bias=False)


def openscene_parameter_count(in_ch: int = IN_CH, out_ch: int = OUT_CH) -> int:
    """Trainable parameters of the layout: every kernel and every batch norm's weight and bias (the
    running statistics and counters are buffers)."""
    return sum(int(np.prod(shape)) for key, shape in openscene_layout(in_ch, out_ch).items()
               if key.endswith((".kernel", ".bn.weight", ".bn.bias")))


def openscene_state(prefix: str = "module.net3d.", seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights (seeded) in the layout, with the prefix OpenScene saves (DisNet's ``net3d.``,
    ``module.`` from DistributedDataParallel). Kernels at ME's initial scale 1/sqrt(K^3 C_in), so
    activations stay O(1) through the 18 layers; running variances positive."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in openscene_layout().items():
        if key.endswith("num_batches_tracked"):
            value = torch.tensor(1000, dtype=torch.long)
        elif key.endswith(".kernel"):
            fan_in = shape[0] * shape[1] if len(shape) == 3 else shape[0]
            value = (torch.rand(shape, generator=g) * 2 - 1) / fan_in ** 0.5
        elif key.endswith("running_var") or key.endswith("bn.weight"):
            value = 0.5 + torch.rand(shape, generator=g)
        else:  # bias, running_mean
            value = 0.1 * torch.randn(shape, generator=g)
        state[prefix + key] = value
    return state


def save_openscene(path, state, best_iou=np.float64(0.42)):
    """As OpenScene's run/distill.py saves: epoch, state_dict, optimizer, best_iou (np.mean: a numpy float)."""
    torch.save({"epoch": 100, "state_dict": state, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
                "best_iou": best_iou}, path)
    return path


def sparse_scan(n: int = 400, batch: int = 2, extent: int = 24, seed: int = 0) -> SparseTensor:
    """[<= n, 4] unique voxel coordinates in a box of ``extent`` (every stride up to 16 occupied), with
    one intensity channel as relviz's loaders give (the model replaces it by ones)."""
    g = torch.Generator().manual_seed(seed)
    coords = torch.cat([torch.randint(0, batch, (n, 1), generator=g), torch.randint(-extent // 2, extent // 2, (n, 3),
                                                                                    generator=g)], 1)
    coords = torch.unique(coords, dim=0)
    return SparseTensor(torch.rand(len(coords), 1, generator=g), coords)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_openscene(tmp_path_factory.mktemp("openscene") / "nuscenes_openseg.pth.tar", openscene_state())


@pytest.fixture(scope="module")
def loaded(checkpoint):
    """(model, metadata) of the checkpoint, loaded once for the tests that only read them."""
    return load_openscene(checkpoint)


@pytest.mark.parametrize("prefix", ["module.net3d.", "net3d."])
def test_every_key_and_shape_maps_onto_relviz(tmp_path, prefix):
    state = openscene_state(prefix)
    path = save_openscene(tmp_path / "model_best.pth.tar", state)
    model, meta = load_openscene(path)
    own = model.state_dict()
    layout = openscene_layout()
    assert set(own) == set(layout)  # nothing missing, nothing unexpected
    assert all(tuple(own[k].shape) == layout[k] for k in layout)
    assert all(torch.equal(own[k], state[prefix + k]) for k in layout)  # tensors unchanged, no transposes
    assert meta["source_format"] == "openscene" and meta["arch"] == "MinkUNet18A"
    assert meta["epoch"] == 100 and meta["best_iou"] == pytest.approx(0.42)
    assert meta["voxelization"] == {"voxel_size": 0.05, "cylindrical": False} and model.voxelization == (0.05, False)
    assert meta["input_features"]["recipe"] == "ones" and meta["input_features"]["channels"] == 3
    assert meta["text_space"]["name"] == "ViT-L-14-336" and meta["text_space"]["pretrained"] == "openai"


def test_parameter_count_is_the_architectures(loaded):
    model, _ = loaded
    assert count_parameters(model) == openscene_parameter_count()


def test_text_space_is_a_registered_teacher_of_the_same_dimension(loaded):
    pytest.importorskip("open_clip")
    from relviz.teacher.registry import entry_for

    _, meta = loaded
    entry = entry_for(meta["text_space"]["name"])  # the config only: no model built, nothing downloaded
    assert entry.has_text and entry.dim == OUT_CH


def test_runs_on_a_sparse_input(loaded):
    model, _ = loaded
    x = sparse_scan()
    with torch.no_grad():
        out = model(x).features
    assert out.shape == (len(x.coordinates), OUT_CH) and torch.isfinite(out).all()
    # unit rows: sqrt of a sum of 768 squares and one division, (768 / 2 + 2) u of float32
    assert (out.norm(dim=1) - 1).abs().max() <= (OUT_CH / 2 + 2) * U32
    # OpenScene's recipe: the input features are ones, whatever the loader gives
    with torch.no_grad():
        ones = model(x.replace(torch.ones(len(x.coordinates), 3))).features
    assert torch.equal(out, ones)


def test_load_student_reads_openscene_files_and_converts_them(checkpoint, loaded, tmp_path):
    direct, meta = loaded
    model, meta_student = load_student(checkpoint)
    x = sparse_scan(seed=1)
    with torch.no_grad():
        ref = direct(x).features
        assert torch.equal(model(x).features, ref)
    assert meta_student["source_format"] == "openscene"
    # to relviz's format and back: same network, same outputs, same provenance
    converted = save_checkpoint(tmp_path / "openscene.safetensors", model, meta)
    again, meta_again = load_student(converted)
    with torch.no_grad():
        assert torch.equal(again(x).features, ref)
    assert meta_again["text_space"] == meta["text_space"] and again.voxelization == (0.05, False)


def test_unnormalised_outputs_are_the_normalised_ones_scaled(checkpoint, loaded):
    raw_model, _ = load_openscene(checkpoint, normalize=False)
    unit_model, _ = loaded
    x = sparse_scan(seed=2)
    with torch.no_grad():
        raw, unit = raw_model(x).features, unit_model(x).features
    assert torch.equal(torch.nn.functional.normalize(raw, dim=1), unit)


@pytest.mark.parametrize("change, named", [
    ("rename", r"missing 1: block1\.0\.conv1\.kernel.*unexpected 1: block1\.0\.conv_1\.kernel"),
    ("drop", r"missing 1: bntr7\.bn\.running_var"),
    ("bias", r"unexpected 1: final\.bias"),  # ME's example MinkUNet has a final bias; OpenScene's has none
    ("shape", r"block5\.0\.conv2\.kernel checkpoint \(27, 128, 64\) vs model \(27, 128, 128\)"),
])
def test_a_key_that_does_not_fit_is_named(tmp_path, change, named):
    state = openscene_state()
    p = "module.net3d."
    if change == "rename":
        state[p + "block1.0.conv_1.kernel"] = state.pop(p + "block1.0.conv1.kernel")
    elif change == "drop":
        del state[p + "bntr7.bn.running_var"]
    elif change == "bias":
        state[p + "final.bias"] = torch.zeros(1, OUT_CH)
    else:
        state[p + "block5.0.conv2.kernel"] = torch.zeros(27, 128, 64)
    path = save_openscene(tmp_path / "broken.pth.tar", state)
    with pytest.raises(CheckpointError, match=r"broken\.pth\.tar.*" + named):
        load_openscene(path)
    if change == "rename":  # the same check behind load_student's dispatch
        with pytest.raises(CheckpointError, match=named):
            load_student(path)


def test_another_network_is_refused_by_its_stem(tmp_path):
    state = openscene_state()
    state["module.net3d.conv0p1s1.kernel"] = torch.zeros(27, 3, 32)  # a k=3 stem: SLidR's, not OpenScene's
    with pytest.raises(CheckpointError, match=r"not OpenScene's MinkUNet18A: conv0p1s1\.kernel \(27, 3, 32\)"):
        load_openscene(save_openscene(tmp_path / "k3.pth.tar", state))


def test_prefix_mapping_is_pure_and_names_a_stray_key():
    state = {"module.net3d.final.kernel": torch.zeros(2, 3), "module.net3d.bn0.bn.weight": torch.ones(2)}
    mapped = openscene_state_to_relviz(state)
    assert set(mapped) == {"final.kernel", "bn0.bn.weight"}
    assert mapped["final.kernel"] is state["module.net3d.final.kernel"]  # the same tensor, no copy or transpose
    assert set(state) == {"module.net3d.final.kernel", "module.net3d.bn0.bn.weight"}  # input untouched
    assert is_openscene_state(state) and not is_openscene_state({"model_points.a": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="'module.head.weight' is not under OpenScene's 'net3d.'"):
        openscene_state_to_relviz({**state, "module.head.weight": torch.zeros(1)})


# ------------------------------------------------------------------------------ MinkowskiEngine
def minkowski_minkunet18a(me, in_ch: int = IN_CH, out_ch: int = OUT_CH):
    """OpenScene's MinkUNet18A written with MinkowskiEngine's own layers, as models/mink_unet.py builds
    it (its ResNetBase import aside), for the output comparison."""
    from MinkowskiEngine.modules.resnet_block import BasicBlock

    class MinkUNet18A(torch.nn.Module):
        def __init__(self):
            super().__init__()
            def conv(i, o, k, s=1):
                return me.MinkowskiConvolution(i, o, kernel_size=k, stride=s, dimension=3)

            self.inplanes = INIT_DIM
            self.conv0p1s1, self.bn0 = conv(in_ch, INIT_DIM, STEM_K), me.MinkowskiBatchNorm(INIT_DIM)
            for i, name in enumerate(("conv1p1s2", "conv2p2s2", "conv3p4s2", "conv4p8s2")):
                setattr(self, name, conv(self.inplanes, self.inplanes, 2, 2))
                setattr(self, f"bn{i + 1}", me.MinkowskiBatchNorm(self.inplanes))
                setattr(self, f"block{i + 1}", self._make_layer(PLANES[i], LAYERS[i]))
            skips = (PLANES[2], PLANES[1], PLANES[0], INIT_DIM)
            for i, name in enumerate(("convtr4p16s2", "convtr5p8s2", "convtr6p4s2", "convtr7p2s2")):
                setattr(self, name, me.MinkowskiConvolutionTranspose(self.inplanes, PLANES[4 + i], kernel_size=2,
                                                                     stride=2, dimension=3))
                setattr(self, f"bntr{4 + i}", me.MinkowskiBatchNorm(PLANES[4 + i]))
                self.inplanes = PLANES[4 + i] + skips[i]
                setattr(self, f"block{5 + i}", self._make_layer(PLANES[4 + i], LAYERS[4 + i]))
            self.final = conv(PLANES[7], out_ch, 1)
            self.relu = me.MinkowskiReLU()

        def _make_layer(self, planes, blocks):
            down = None
            if self.inplanes != planes:
                down = torch.nn.Sequential(me.MinkowskiConvolution(self.inplanes, planes, kernel_size=1, dimension=3),
                                           me.MinkowskiBatchNorm(planes))
            layers = [BasicBlock(self.inplanes, planes, downsample=down, dimension=3)]
            self.inplanes = planes
            layers += [BasicBlock(planes, planes, dimension=3) for _ in range(1, blocks)]
            return torch.nn.Sequential(*layers)

        def forward(self, x):
            out_p1 = self.relu(self.bn0(self.conv0p1s1(x)))
            out_b1p2 = self.block1(self.relu(self.bn1(self.conv1p1s2(out_p1))))
            out_b2p4 = self.block2(self.relu(self.bn2(self.conv2p2s2(out_b1p2))))
            out_b3p8 = self.block3(self.relu(self.bn3(self.conv3p4s2(out_b2p4))))
            out = self.block4(self.relu(self.bn4(self.conv4p8s2(out_b3p8))))
            for i, skip in enumerate((out_b3p8, out_b2p4, out_b1p2, out_p1)):
                up = getattr(self, ("convtr4p16s2", "convtr5p8s2", "convtr6p4s2", "convtr7p2s2")[i])
                out = self.relu(getattr(self, f"bntr{4 + i}")(up(out)))
                out = getattr(self, f"block{5 + i}")(me.cat(out, skip))
            return self.final(out)

    return MinkUNet18A()


def test_outputs_equal_minkowski_engines_on_the_same_weights(checkpoint):
    pytest.importorskip("MinkowskiEngine")
    from relviz.models.backends import import_minkowski

    me = import_minkowski()
    ours, _ = load_openscene(checkpoint, normalize=False)
    theirs = minkowski_minkunet18a(me).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)  # OpenScene's names are ME's
    x = sparse_scan(n=2000, extent=40, seed=3)
    ones = torch.ones(len(x.coordinates), IN_CH)
    with torch.no_grad():
        got = theirs(me.SparseTensor(features=ones, coordinates=x.coordinates.int()))
        # ME may order its rows otherwise: look each input coordinate up among its output's
        rows = {tuple(c): i for i, c in enumerate(got.C.long().tolist())}
        got = got.F[torch.tensor([rows[tuple(c)] for c in x.coordinates.tolist()])].double()
        ours32 = ours(x).features.double()
        exact = copy.deepcopy(ours).double()(x.replace(x.features.double())).features
    # ME adds the same float32 products in another order through the same 18 layers, so its error
    # against the float64 run is of the size of ours (as in test_models' backend parity: no useful
    # a-priori bound exists this deep); 10x ours covers the max over 768 x N outputs. A wrong kernel
    # offset, stem size or missing bias is off by O(0.1) of the outputs' scale.
    err32 = (ours32 - exact).abs().max().item()
    err_me = (got - exact).abs().max().item()
    scale = exact.abs().max().item()
    assert err_me <= 10 * err32 + U32 * scale, (err_me, err32, scale)  # + the rounding of ME's stored output
