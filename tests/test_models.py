"""MinkUNet layout against SLidR's Res16UNet34C, and checkpoint loading in every supported layout."""

import copy
import math
import pickle

import pytest
import torch

from fp_bounds import U32
from support import minkowski_unet_layout
from relviz.errors import RelvizError
from relviz.models import build_minkunet, count_parameters
from relviz.models.checkpoint import CheckpointError, load_into, load_state_dict, load_student, save_checkpoint
from relviz.sparse import SparseTensor


def slidr_res16unet34c_keys(in_ch=1, out_ch=64):
    """Expected state-dict keys and shapes, enumerated from SLidR's res16unet.py / resnet_block.py."""
    return minkowski_unet_layout((2, 3, 4, 6, 2, 2, 2, 2), (32, 64, 128, 256, 256, 128, 96, 96), 32, in_ch, out_ch)


def test_minkunet34_matches_slidr_layout():
    model = build_minkunet("MinkUNet34", in_channels=1, out_channels=64)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == slidr_res16unet34c_keys()
    for k, shape in {"conv0p1s1.kernel": (27, 1, 32), "bn0.bn.running_mean": (32,),
                     "block2.0.downsample.0.kernel": (32, 64), "convtr4p16s2.kernel": (8, 256, 256),
                     "final.kernel": (96, 64), "final.bias": (1, 64)}.items():
        assert ours[k] == shape
    # parameters (not BN running statistics) of the layout above, exactly; SLidR reports it as 37.8M,
    # i.e. rounded to 0.1M: within 0.05M
    expected = sum(math.prod(s) for k, s in slidr_res16unet34c_keys().items()
                   if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert count_parameters(model) == expected
    assert abs(count_parameters(model) - 37.8e6) <= 0.05e6


def _scan(n=3000, seed=0, batch=2):
    """Random unique voxels of a 2-item batch around the origin, intensity features."""
    gen = torch.Generator().manual_seed(seed)
    coords = torch.cat([torch.randint(0, batch, (n, 1), generator=gen),
                        torch.randint(-40, 40, (n, 3), generator=gen)], dim=1)
    coords = torch.unique(coords, dim=0)
    return SparseTensor(torch.rand(coords.shape[0], 1, generator=gen), coords)


@pytest.mark.parametrize("arch", ["MinkUNet14", "MinkUNet18", "MinkUNet34"])
def test_forward_backward_small(arch):
    torch.manual_seed(0)
    model = build_minkunet(arch, out_channels=16, width=0.25)
    x = _scan()
    out = model(x)
    assert out.features.shape == (x.features.shape[0], 16)
    assert torch.equal(out.coordinates, x.coordinates)
    # F.normalize then norm, both over D = 16 float32 terms: |norm - 1| <= (D + 3) u; x2 safety
    torch.testing.assert_close(out.features.norm(dim=1), torch.ones(x.features.shape[0]), atol=2 * (16 + 3) * U32,
                               rtol=0)
    out.features.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def _small(seed=0):
    torch.manual_seed(seed)
    return build_minkunet("MinkUNet14", out_channels=8, width=0.25).eval()


def test_relviz_checkpoint_round_trip_is_exact(tmp_path):
    model = _small()
    x = _scan(800)
    ref = model(x).features
    meta = {"architecture": model.config.to_dict(), "loss": "relational", "metrics": {"U": 3.1}}
    path = save_checkpoint(tmp_path / "s.safetensors", model, meta)
    assert [p.name for p in tmp_path.iterdir()] == ["s.safetensors"]  # no temp file left behind
    loaded, got_meta = load_student(path)
    assert torch.equal(loaded(x).features, ref)
    assert got_meta["loss"] == "relational" and got_meta["metrics"] == {"U": 3.1}
    assert got_meta["versions"]["torch"].startswith("2.13.0")
    state, _ = load_state_dict(path)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("layout", ["slidr", "lightning", "openscene", "module", "bare"])
def test_foreign_layouts_load(tmp_path, layout):
    model = _small()
    sd = model.state_dict()
    if layout == "slidr":
        obj = {"model_points": sd, "model_images": {"decoder.0.weight": torch.zeros(2)},
               "epoch": 50, "config": {"voxel_size": 0.1, "cylindrical_coordinates": True}}
    elif layout == "lightning":
        obj = {"state_dict": {**{f"model_points.{k}": v for k, v in sd.items()},
                              "model_images.head.weight": torch.zeros(3)}, "epoch": 3}
    elif layout == "openscene":
        obj = {"state_dict": {f"module.net3d.{k}": v for k, v in sd.items()}, "epoch": 1, "best_iou": 0.3}
    elif layout == "module":
        obj = {f"module.{k}": v for k, v in sd.items()}
    else:
        obj = sd
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)
    state, meta = load_state_dict(path)
    fresh = _small(seed=1)
    report = load_into(fresh, state)
    assert report.ok and len(report.loaded) == len(sd)
    x = _scan(500)
    assert torch.equal(fresh(x).features, model(x).features)
    if layout == "slidr":
        assert meta["config"]["voxel_size"] == 0.1


def test_mismatch_is_reported_by_name(tmp_path):
    model = _small()
    sd = dict(model.state_dict())
    sd["final.kernel"] = torch.zeros(24, 17)  # a downstream head: 17 classes
    sd["extra.weight"] = torch.zeros(1)
    del sd["bn0.bn.weight"]
    with pytest.raises(CheckpointError, match=r"missing 1: bn0.bn.weight.*unexpected 1: extra.weight.*"
                                              r"final.kernel checkpoint \(24, 17\) vs model \(24, 8\)"):
        load_into(_small(), sd)
    report = load_into(_small(), sd, strict=False)
    assert report.missing == ["bn0.bn.weight"] and "final.kernel" in report.shape_mismatch


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:  # protocol 2, as torch.save writes
        pickle.dump({"model_points": {"a": torch.zeros(1)}, "hook": _Evil()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="evil.pt: .*refused.*unpickling"):
        load_state_dict(path)


def test_corrupted_checkpoints(tmp_path):
    model = _small()
    path = save_checkpoint(tmp_path / "s.safetensors", model, {"architecture": model.config.to_dict()})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(CheckpointError, match="s.safetensors"):
        load_student(path)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="junk.safetensors: not a readable safetensors"):
        load_state_dict(tmp_path / "junk.safetensors")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable torch checkpoint"):
        load_state_dict(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_state_dict(tmp_path / "missing.safetensors")
    torch.save({"weights": [1, 2]}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="no state dict found"):
        load_state_dict(tmp_path / "odd.pt")


def test_minkowski_backend_matches_torch_backend():
    from relviz.models.backends import available_backends

    if not available_backends()["minkowski"]:
        pytest.skip("MinkowskiEngine is not installed (optional; bench/install_minkowski.sh builds it): "
                    "backend parity not checked here")
    torch.manual_seed(0)
    ours = build_minkunet("MinkUNet34", out_channels=16, width=0.5).eval()
    theirs = build_minkunet("MinkUNet34", out_channels=16, width=0.5, backend="minkowski").eval()
    theirs.load_state_dict(ours.state_dict())
    x = _scan(2000)
    with torch.no_grad():
        got, ours32 = theirs(x).features, ours(x).features
        exact = copy.deepcopy(ours).double()(x.replace(x.features.double())).features
    # ME computes the same float32 sums in another order through the same 34 layers, so its error
    # against the float64 run is of the size of ours (same sums, same magnitudes; no useful a-priori
    # bound exists this deep): at most 10x ours (safety for the max over 16 x N outputs), plus the
    # final normalisation's (D + 3) u. A wrong kernel offset or layout is off by O(0.1).
    err32 = (ours32.double() - exact).abs().max().item()
    err_me = (got.double() - exact).abs().max().item()
    assert err_me <= 10 * err32 + (16 + 3) * U32, (err_me, err32)


def test_unknown_backend_and_architecture():
    with pytest.raises(ValueError, match="unknown sparse backend 'spconv'"):
        build_minkunet("MinkUNet14", backend="spconv")
    with pytest.raises(ValueError, match="unknown architecture 'MinkUNet50'"):
        build_minkunet("MinkUNet50")


def test_backend_is_an_argument_not_a_setting(monkeypatch):
    # the library reads no settings: the same call gives the torch backend whatever the environment says
    monkeypatch.setenv("RELVIZ_SPARSE_BACKEND", "minkowski")
    assert build_minkunet("MinkUNet14", width=0.25).backend.name == "torch"
    from relviz.models.backends import available_backends

    if not available_backends()["minkowski"]:
        with pytest.raises(RelvizError, match="MinkowskiEngine is not installed"):
            build_minkunet("MinkUNet14", width=0.25, backend="minkowski")
