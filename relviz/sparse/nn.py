"""Sparse layers with MinkowskiEngine's parameter names and layouts.

- convolution kernel ``[K^3, C_in, C_out]`` (``[C_in, C_out]`` when K = 1), bias ``[1, C_out]``
- batch norm wraps ``nn.BatchNorm1d`` as ``.bn`` (keys ``bn.weight``, ``bn.running_mean``, ...)

so a MinkowskiEngine/SLidR state dict loads without renaming.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from relviz.errors import InputError
from relviz.sparse.core import KernelMap, SparseTensor

class _SparseConvFunction(torch.autograd.Function):
    """out[p] = sum_k x[nbr[p, k]] @ W[k] over the present pairs of each offset.

    Forward, input gradient and weight gradient each run one gather, one matrix product and one
    index-add per offset on the present pairs only (lidar neighbourhoods are mostly empty); the
    identity offset of a submanifold kernel skips the gathers.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
        # autocast (the trainer's CUDA step) casts the products but not the in-place sums into the
        # output: run the whole convolution in one dtype, autocast's where it is on, as a dense conv would
        if torch.is_autocast_enabled(x.device.type):
            dtype = torch.get_autocast_dtype(x.device.type)
            x, weight = x.to(dtype), weight.to(dtype)
        ctx.save_for_backward(x, weight)
        ctx.kmap = kmap
        out = x.new_zeros(kmap.num_out, weight.shape[2])
        for k, (rows_in, rows_out) in enumerate(kmap.pairs):
            if k == kmap.identity:
                out.addmm_(x, weight[k])
            elif rows_in.numel():
                out.index_add_(0, rows_out, x.index_select(0, rows_in) @ weight[k])
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        kmap: KernelMap = ctx.kmap
        grad_out = grad_out.to(x.dtype).contiguous()  # the forward's dtype (autograd casts back per input)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = x.new_zeros(x.shape) if need_x else None
        grad_w = torch.zeros_like(weight) if need_w else None
        for k, (rows_in, rows_out) in enumerate(kmap.pairs):
            if k == kmap.identity:
                g, xin = grad_out, x
            elif rows_in.numel():
                g, xin = grad_out.index_select(0, rows_out), x.index_select(0, rows_in) if need_w else None
            else:
                continue
            if need_x:
                if k == kmap.identity:
                    grad_x.addmm_(g, weight[k].T)
                else:
                    grad_x.index_add_(0, rows_in, g @ weight[k].T)
            if need_w:
                grad_w[k] = xin.T @ g
        return grad_x, grad_w, None


def sparse_conv_features(x: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """x [N_in, C_in], weight [K, C_in, C_out], kernel map with K offsets -> [N_out, C_out]."""
    if kmap.num_out == 0:
        return x.new_zeros(0, weight.shape[2])
    return _SparseConvFunction.apply(x, weight, kmap)


class _ConvBase(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1, bias: bool = False, dimension: int = 3):
        super().__init__()
        if dimension != 3:
            raise InputError(f"only 3D sparse convolution is supported, got dimension={dimension}")
        if kernel_size < 1 or stride < 1 or dilation < 1:
            raise InputError(f"kernel_size, stride and dilation must be >= 1, got {kernel_size}, {stride}, {dilation}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation
        kvol = kernel_size ** 3
        shape = (in_channels, out_channels) if kvol == 1 else (kvol, in_channels, out_channels)
        self.kernel = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.zeros(1, out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # ME's initialisation: uniform with bound 1/sqrt(C_in * K^3)
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size ** 3)
        nn.init.uniform_(self.kernel, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def _weight(self) -> torch.Tensor:
        return self.kernel if self.kernel.ndim == 3 else self.kernel.unsqueeze(0)

    def _finish(self, out: torch.Tensor) -> torch.Tensor:
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"dilation={self.dilation}, bias={self.bias is not None}")


class SparseConv3d(_ConvBase):
    """Sparse convolution (``MinkowskiConvolution``).

    stride 1: submanifold (output on the input coordinates, odd kernels centred).
    stride s: output coordinates are the input's floored to ``stride * s`` (kernel 2 uses the
    lower-corner offsets 0 and the input stride on each axis).
    """

    def forward(self, x: SparseTensor) -> SparseTensor:
        if x.features.shape[1] != self.in_channels:
            raise InputError(f"{type(self).__name__}: expected {self.in_channels} input channels, "
                             f"got {x.features.shape[1]}")
        if self.kernel_size == 1 and self.stride == 1:
            return x.replace(self._finish(x.features @ self.kernel))
        out_stride = x.stride * self.stride
        if self.stride > 1:
            x.manager.strided_coords(x.stride, out_stride)
        kmap = x.manager.kernel_map(x.stride, out_stride, self.kernel_size, self.dilation)
        feats = self._finish(sparse_conv_features(x.features, self._weight(), kmap))
        return SparseTensor(feats, x.manager.coords[out_stride], out_stride, x.manager)


class SparseConvTranspose3d(_ConvBase):
    """Transposed sparse convolution (``MinkowskiConvolutionTranspose``) onto the finer
    coordinates that already exist in the coordinate manager: never generative."""

    def forward(self, x: SparseTensor) -> SparseTensor:
        if x.features.shape[1] != self.in_channels:
            raise InputError(f"{type(self).__name__}: expected {self.in_channels} input channels, "
                             f"got {x.features.shape[1]}")
        if x.stride % self.stride:
            raise InputError(f"cannot upsample tensor stride {x.stride} by {self.stride}")
        out_stride = x.stride // self.stride
        if out_stride not in x.manager.coords:
            raise InputError(f"no coordinates at stride {out_stride} to upsample onto")
        kmap = x.manager.kernel_map(x.stride, out_stride, self.kernel_size, self.dilation, transposed=True)
        feats = self._finish(sparse_conv_features(x.features, self._weight(), kmap))
        return SparseTensor(feats, x.manager.coords[out_stride], out_stride, x.manager)


class SparseBatchNorm(nn.Module):
    """``MinkowskiBatchNorm``: BatchNorm1d over the feature rows, stored as ``.bn``."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.bn = nn.BatchNorm1d(num_features, eps=eps, momentum=momentum)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(self.bn(x.features))


class SparseReLU(nn.Module):
    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(F.relu(x.features))


def sparse_cat(*tensors: SparseTensor) -> SparseTensor:
    """Concatenate channels of tensors on identical coordinates (same manager and stride)."""
    first = tensors[0]
    for t in tensors[1:]:
        if t.manager is not first.manager or t.stride != first.stride:
            raise InputError("sparse_cat: tensors must share coordinates (same manager and stride)")
    return first.replace(torch.cat([t.features for t in tensors], dim=1))


def global_avg_pool(x: SparseTensor) -> torch.Tensor:
    """Mean feature per batch item: [B, C]."""
    b = x.coordinates[:, 0]
    n = x.batch_size
    sums = x.features.new_zeros(n, x.features.shape[1]).index_add(0, b, x.features)
    counts = torch.bincount(b, minlength=n).clamp_min(1).to(sums.dtype)
    return sums / counts[:, None]


def devoxelize(x: SparseTensor, inverse: torch.Tensor) -> torch.Tensor:
    """Per-point features [P, C] from voxel features by the voxelization's inverse index [P]."""
    if x.stride != 1:
        raise InputError(f"devoxelize needs stride-1 features, got tensor stride {x.stride}")
    return x.features[inverse]
