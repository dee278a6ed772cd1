"""Sparse convolution against dense references (conv3d / conv_transpose3d read at active sites)."""

import pytest
import torch
import torch.nn.functional as F

from fp_bounds import U64, gamma, unit_roundoff
from relviz.sparse import (SparseBatchNorm, SparseConv3d, SparseConvTranspose3d, SparseTensor, devoxelize,
                           global_avg_pool, kernel_offsets, pack_keys, sparse_cat)

G = 8  # dense grid side
# Most terms of any sum below: the dense kernel gradient sums over all B * G^3 = 1024 output cells
# (the forward sums K^3 * C_in <= 375, the input gradient K^3 * C_out <= 625).
N_TERMS = 2 * G ** 3


def _assert_within(actual, expected, bound):
    """|actual - expected| <= bound elementwise (bound: a tensor of the same shape or a float)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    err = (actual - expected).abs()
    assert bool((err <= bound).all()), f"max error {err.max().item():.3g}, / bound {(err / bound).max().item():.3g}"


def _random_sparse(n=120, c=3, batch=2, seed=0, stride=1):
    gen = torch.Generator().manual_seed(seed)
    cells = torch.randperm(batch * G ** 3, generator=gen)[:n]
    b, rest = cells // G ** 3, cells % G ** 3
    coords = torch.stack([b, rest % G, (rest // G) % G, rest // G ** 2], dim=1) * torch.tensor([1, stride, stride, stride])
    feats = torch.randn(n, c, generator=gen, dtype=torch.float64)
    return SparseTensor(feats, coords, stride=stride)


def _dense(x: SparseTensor, side=G):
    s = x.stride
    d = torch.zeros(x.batch_size, x.features.shape[1], side, side, side, dtype=x.features.dtype)
    c = x.coordinates
    d[c[:, 0], :, c[:, 1] // s, c[:, 2] // s, c[:, 3] // s] = x.features
    return d


def _read(dense, coords, stride):
    c = coords
    return dense[c[:, 0], :, c[:, 1] // stride, c[:, 2] // stride, c[:, 3] // stride]


def _torch_weight(kernel, k):
    """ME kernel [K^3, C_in, C_out] (first axis fastest) -> conv3d weight [C_out, C_in, k, k, k] over (x, y, z)."""
    w = kernel.reshape(k, k, k, kernel.shape[1], kernel.shape[2])  # [z, y, x, cin, cout]
    return w.permute(4, 3, 2, 1, 0).contiguous()


@pytest.mark.parametrize("k,dilation", [(3, 1), (5, 1), (3, 2)])
def test_submanifold_conv_matches_conv3d(k, dilation):
    x = _random_sparse()
    conv = SparseConv3d(3, 4, kernel_size=k, dilation=dilation, bias=True).double()
    feats = x.features.clone().requires_grad_()
    out = conv(x.replace(feats))
    assert torch.equal(out.coordinates, x.coordinates) and out.stride == 1
    dense_in = _dense(x).requires_grad_()
    w = _torch_weight(conv.kernel, k)

    def dense(d, w, b):
        ref = F.conv3d(d, w, b.flatten(), padding=dilation * (k // 2), dilation=dilation)
        return _read(ref, x.coordinates, 1)

    _check_against_dense(out.features, dense, (feats, conv.kernel), (dense_in, w, conv.bias),
                         lambda g: _read(g, x.coordinates, 1), lambda g: _torch_weight_grad_to_me(g, k))


def _check_against_dense(out, dense, sparse_inputs, dense_inputs, feature_grad, kernel_grad):
    """Outputs equal; and for one random probe, gradients of (features, kernel) equal the dense
    reference's gradients read at the active sites / converted to ME's kernel layout.

    ``dense(input, weight, bias)`` is the reference read at the active sites. Both sides compute the
    same float64 sums of products in different orders: each is within gamma(n) * sum|terms| of the
    exact value, so they differ by <= 2 gamma(n) sum|terms| (x2 safety); sum|terms| elementwise is the
    same dense computation on |input|, |weight|, |bias| (and, for the gradients, |probe|)."""
    ref_sites = dense(*dense_inputs)
    probe = torch.randn_like(ref_sites)
    absolute = [t.detach().abs().requires_grad_() if t is not None else None for t in dense_inputs]
    abs_sites = dense(*absolute)
    abs_g_dense, abs_g_w = torch.autograd.grad((abs_sites * probe.abs()).sum(), absolute[:2])
    tol = 2 * 2 * gamma(N_TERMS)
    _assert_within(out, ref_sites, tol * abs_sites.detach())
    g_feat, g_kernel = torch.autograd.grad((out * probe).sum(), list(sparse_inputs))
    g_dense, g_w = torch.autograd.grad((ref_sites * probe).sum(), list(dense_inputs[:2]))
    _assert_within(g_feat, feature_grad(g_dense), tol * feature_grad(abs_g_dense))
    _assert_within(g_kernel, kernel_grad(g_w), tol * kernel_grad(abs_g_w))


def _torch_weight_grad_to_me(gw, k):
    # inverse of _torch_weight
    return gw.permute(4, 3, 2, 1, 0).reshape(k ** 3, gw.shape[1], gw.shape[0])


@pytest.mark.parametrize("k", [2, 3])
def test_strided_conv_matches_conv3d(k):
    x = _random_sparse()
    conv = SparseConv3d(3, 5, kernel_size=k, stride=2).double()
    feats = x.features.clone().requires_grad_()
    out = conv(x.replace(feats))
    assert out.stride == 2
    expected = x.coordinates.clone()
    expected[:, 1:] = expected[:, 1:] // 2 * 2
    assert torch.equal(out.coordinates, torch.unique(expected, dim=0))  # floored to the new stride
    dense_in = _dense(x).requires_grad_()
    w = _torch_weight(conv.kernel, k)

    def dense(d, w, _):
        return _read(F.conv3d(d, w, stride=2, padding=k // 2 if k % 2 else 0), out.coordinates, 2)

    _check_against_dense(out.features, dense, (feats, conv.kernel), (dense_in, w, None),
                         lambda g: _read(g, x.coordinates, 1), lambda g: _torch_weight_grad_to_me(g, k))


def test_transposed_conv_matches_conv_transpose3d():
    fine = _random_sparse(n=150)
    down = SparseConv3d(3, 3, kernel_size=2, stride=2).double()
    coarse = down(fine)
    coarse_feats = torch.randn(coarse.features.shape[0], 3, dtype=torch.float64, requires_grad=True)
    up = SparseConvTranspose3d(3, 4, kernel_size=2, stride=2, bias=True).double()
    out = up(coarse.replace(coarse_feats))
    assert out.stride == 1 and torch.equal(out.coordinates, fine.coordinates)  # onto existing coordinates
    dense_in = _dense(coarse.replace(coarse_feats.detach()), side=G // 2).requires_grad_()
    # conv_transpose3d weight is [C_in, C_out, k, k, k]
    w = _torch_weight(up.kernel, 2).transpose(0, 1).contiguous()

    def dense(d, w, b):
        return _read(F.conv_transpose3d(d, w, b.flatten(), stride=2), fine.coordinates, 1)

    _check_against_dense(out.features, dense, (coarse_feats, up.kernel), (dense_in, w, up.bias),
                         lambda g: _read(g, coarse.coordinates, 2), lambda g: _torch_weight_grad_to_me(g.transpose(0, 1), 2))


def test_conv_on_strided_tensor_matches_dense():
    """A submanifold conv at tensor stride 2 uses neighbours 2 apart (ME's dilation by stride)."""
    x = _random_sparse(n=60, stride=2)
    conv = SparseConv3d(3, 2, kernel_size=3).double()
    out = conv(x)
    w = _torch_weight(conv.kernel, 3)
    ref = F.conv3d(_dense(x), w, padding=1)
    # two orders of the same 27 * 3 float64 products: <= 2 gamma(81) sum|terms|, x2 safety
    abs_ref = F.conv3d(_dense(x).abs(), w.detach().abs(), padding=1)
    _assert_within(out.features, _read(ref, x.coordinates, 2), 2 * 2 * gamma(81) * _read(abs_ref, x.coordinates, 2))


def test_one_by_one_conv_and_layouts():
    x = _random_sparse()
    conv = SparseConv3d(3, 6, kernel_size=1, bias=True).double()
    assert conv.kernel.shape == (3, 6) and conv.bias.shape == (1, 6)
    # the same 3-term float64 matmul plus bias; BLAS may order it differently: 2 gamma(4) sum|terms|, x2 safety
    _assert_within(conv(x).features, x.features @ conv.kernel + conv.bias,
                   2 * 2 * gamma(4) * (x.features.abs() @ conv.kernel.abs() + conv.bias.abs()).detach())
    assert SparseConv3d(32, 64, kernel_size=3).kernel.shape == (27, 32, 64)
    assert SparseConvTranspose3d(256, 256, kernel_size=2, stride=2).kernel.shape == (8, 256, 256)
    assert set(SparseBatchNorm(4).state_dict()) == {"bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                                                    "bn.num_batches_tracked"}


def test_kernel_offset_order_first_axis_fastest():
    off = kernel_offsets(3, 1)
    assert off[:4].tolist() == [[-1, -1, -1], [0, -1, -1], [1, -1, -1], [-1, 0, -1]]
    assert off[13].tolist() == [0, 0, 0]
    assert kernel_offsets(2, 4)[:3].tolist() == [[0, 0, 0], [4, 0, 0], [0, 4, 0]]


def test_negative_coordinates_floor_like_me():
    coords = torch.tensor([[0, -1, -3, 5], [0, -2, 0, 0], [0, 1, 1, 1]])
    x = SparseTensor(torch.ones(3, 1), coords)
    out = SparseConv3d(1, 1, kernel_size=2, stride=2)(x)
    assert out.coordinates.tolist() == [[0, -2, -4, 4], [0, -2, 0, 0], [0, 0, 0, 0]]


def test_cat_pool_devoxelize_and_errors():
    x = _random_sparse(n=40)
    y = x.replace(x.features * 2)
    z = sparse_cat(x, y)
    assert z.features.shape == (40, 6)
    pooled = global_avg_pool(x)
    for b in range(2):
        rows = x.features[x.coordinates[:, 0] == b]
        # two float64 sums of n rows (+1 rounding for the division): 2 gamma(n + 1) mean|x|, x2 safety
        _assert_within(pooled[b], rows.mean(0), 2 * 2 * gamma(len(rows) + 1) * rows.abs().mean(0))
    inverse = torch.tensor([3, 3, 0, 39])
    assert torch.equal(devoxelize(x, inverse), x.features[inverse])  # a gather: exact
    other = _random_sparse(n=40, seed=1)
    with pytest.raises(ValueError, match="share coordinates"):
        sparse_cat(x, other)
    with pytest.raises(ValueError, match="unique"):
        SparseTensor(torch.ones(2, 1), torch.tensor([[0, 1, 1, 1], [0, 1, 1, 1]]))
    with pytest.raises(ValueError, match="must lie in"):
        pack_keys(torch.tensor([[0, 1 << 20, 0, 0]]))
    with pytest.raises(ValueError, match="expected 3 input channels"):
        SparseConv3d(3, 2)(x.replace(torch.ones(40, 2, dtype=torch.float64)))
    with pytest.raises(ValueError, match="no coordinates at stride"):
        SparseConvTranspose3d(3, 3, kernel_size=2, stride=2)(_random_sparse(stride=2))


def test_kernel_maps_are_cached():
    x = _random_sparse()
    conv = SparseConv3d(3, 3)
    conv.double()(x)
    maps_before = dict(x.manager._maps)
    conv(x)
    assert x.manager._maps.keys() == maps_before.keys()
    assert all(x.manager._maps[k] is maps_before[k] for k in maps_before)


def test_gradcheck_custom_function():
    from relviz.sparse import sparse_conv_features

    x = _random_sparse(n=30, c=2)
    kmap = x.manager.kernel_map(1, 1, 3)
    feats = x.features.clone().requires_grad_()
    w = torch.randn(27, 2, 3, dtype=torch.float64, requires_grad=True)
    # Linear in each input, so central differences have no truncation error; each of the two
    # evaluations is off by <= gamma(54) * S (S = max sum|terms| of an output, 27 * 2 terms), the
    # perturbed input by <= u|input|: error <= (gamma(54) S + u max|input| max|J|) / eps, x2 safety.
    eps = 1e-6
    s_max = sparse_conv_features(feats.detach().abs(), w.detach().abs(), kmap).max().item()
    j_max = max(feats.abs().max().item(), w.abs().max().item())  # |d out / d f| <= max|w| and vice versa
    atol = 2 * (gamma(54) * s_max + U64 * j_max * j_max) / eps
    assert torch.autograd.gradcheck(lambda f, w: sparse_conv_features(f, w, kmap), (feats, w), eps=eps, atol=atol,
                                    rtol=0)


def test_packed_keys_round_trip_and_strided_coordinates_equal_row_unique():
    """unpack_keys inverts pack_keys at the edges of the range; the strided coordinates (unique over
    packed keys) are exactly torch.unique over rows, in the same order, for negative coordinates and
    several batches."""
    from relviz.sparse.core import _HALF, CoordinateManager, pack_keys, unpack_keys

    gen = torch.Generator().manual_seed(3)
    coords = torch.cat([torch.randint(0, 3, (500, 1), generator=gen),
                        torch.randint(-40, 40, (500, 3), generator=gen)], 1)
    edges = torch.tensor([[0, -_HALF, -_HALF, -_HALF], [2, _HALF - 1, _HALF - 1, _HALF - 1], [1, 0, -1, 5]])
    for c in (coords, edges):
        assert torch.equal(unpack_keys(pack_keys(c)), c)
    for stride, out_stride in ((1, 2), (1, 4), (2, 8)):
        manager = CoordinateManager()
        base = coords.clone()
        base[:, 1:] = torch.div(base[:, 1:], stride, rounding_mode="floor") * stride
        manager.register(stride, torch.unique(base, dim=0))
        reference = manager.coords[stride].clone()
        reference[:, 1:] = torch.div(reference[:, 1:], out_stride, rounding_mode="floor") * out_stride
        got = manager.strided_coords(stride, out_stride)
        assert torch.equal(got, torch.unique(reference, dim=0)) and got.dtype == reference.dtype
        assert torch.equal(manager._keys[out_stride], pack_keys(got))


def test_conv_under_cpu_autocast_runs_in_one_dtype_and_matches_float64():
    """The trainer's CUDA step runs under autocast; on the CPU, bfloat16 autocast takes the same path.
    The convolution then runs wholly in bfloat16 (inputs and weights rounded once: relative error u;
    products and sums of at most 27 * 3 + 1 terms per output accumulated in bfloat16, gamma(82) of
    bfloat16 times sum |terms|); the gradients come back in the inputs' float32."""
    x = _random_sparse(seed=3)
    conv = SparseConv3d(3, 4, kernel_size=3, bias=False)
    feats = x.features.float().clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x.replace(feats))
    assert out.features.dtype == torch.bfloat16
    out.features.float().sum().backward()
    assert feats.grad.dtype == torch.float32 and conv.kernel.grad.dtype == torch.float32
    reference = conv.double()(x.replace(feats.detach().double())).features
    terms = SparseConv3d(3, 4, kernel_size=3, bias=False).double()
    terms.kernel.data = conv.kernel.detach().double().abs()
    magnitude = terms(x.replace(feats.detach().double().abs())).features
    bound = (gamma(82, torch.bfloat16) + 2 * unit_roundoff(torch.bfloat16)) * magnitude
    _assert_within(out.features.double(), reference, bound)
