"""Sparse convolution against dense references (conv3d / conv_transpose3d read at active sites)."""

import pytest
import torch
import torch.nn.functional as F

from relviz.sparse import (SparseBatchNorm, SparseConv3d, SparseConvTranspose3d, SparseTensor, devoxelize,
                           global_avg_pool, kernel_offsets, pack_keys, sparse_cat)

G = 8  # dense grid side


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
    ref = F.conv3d(dense_in, w, conv.bias.flatten(), padding=dilation * (k // 2), dilation=dilation)
    ref_sites = _read(ref, x.coordinates, 1)
    _check_against_dense(out.features, ref_sites, (feats, conv.kernel), (dense_in, w),
                         lambda g: _read(g, x.coordinates, 1), lambda g: _torch_weight_grad_to_me(g, k))


def _check_against_dense(out, ref_sites, sparse_inputs, dense_inputs, feature_grad, kernel_grad):
    """Outputs equal; and for one random probe, gradients of (features, kernel) equal the dense
    reference's gradients read at the active sites / converted to ME's kernel layout."""
    torch.testing.assert_close(out, ref_sites, atol=1e-10, rtol=1e-8)
    probe = torch.randn_like(ref_sites)
    g_feat, g_kernel = torch.autograd.grad((out * probe).sum(), list(sparse_inputs))
    g_dense, g_w = torch.autograd.grad((ref_sites * probe).sum(), list(dense_inputs))
    torch.testing.assert_close(g_feat, feature_grad(g_dense), atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(g_kernel, kernel_grad(g_w), atol=1e-10, rtol=1e-8)


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
    ref = F.conv3d(dense_in, w, stride=2, padding=k // 2 if k % 2 else 0)
    ref_sites = _read(ref, out.coordinates, 2)
    _check_against_dense(out.features, ref_sites, (feats, conv.kernel), (dense_in, w),
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
    ref = F.conv_transpose3d(dense_in, w, up.bias.flatten(), stride=2)
    ref_sites = _read(ref, fine.coordinates, 1)
    _check_against_dense(out.features, ref_sites, (coarse_feats, up.kernel), (dense_in, w),
                         lambda g: _read(g, coarse.coordinates, 2), lambda g: _torch_weight_grad_to_me(g.transpose(0, 1), 2))


def test_conv_on_strided_tensor_matches_dense():
    """A submanifold conv at tensor stride 2 uses neighbours 2 apart (ME's dilation by stride)."""
    x = _random_sparse(n=60, stride=2)
    conv = SparseConv3d(3, 2, kernel_size=3).double()
    out = conv(x)
    ref = F.conv3d(_dense(x), _torch_weight(conv.kernel, 3), padding=1)
    torch.testing.assert_close(out.features, _read(ref, x.coordinates, 2), atol=1e-10, rtol=1e-8)


def test_one_by_one_conv_and_layouts():
    x = _random_sparse()
    conv = SparseConv3d(3, 6, kernel_size=1, bias=True).double()
    assert conv.kernel.shape == (3, 6) and conv.bias.shape == (1, 6)
    torch.testing.assert_close(conv(x).features, x.features @ conv.kernel + conv.bias)
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
        torch.testing.assert_close(pooled[b], x.features[x.coordinates[:, 0] == b].mean(0))
    inverse = torch.tensor([3, 3, 0, 39])
    torch.testing.assert_close(devoxelize(x, inverse), x.features[inverse])
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
    assert torch.autograd.gradcheck(lambda f, w: sparse_conv_features(f, w, kmap), (feats, w))
