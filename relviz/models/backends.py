"""Sparse layer backends for the same model classes: pure PyTorch (default) or MinkowskiEngine.

Both build layers whose parameters have MinkowskiEngine's names and layouts, so one state dict
serves either. Choose with ``RELVIZ_SPARSE_BACKEND`` (``torch`` or ``minkowski``) or by name.
"""

from __future__ import annotations

import collections
import collections.abc
import importlib.util

import torch.nn as nn

from relviz.errors import InputError
from relviz.sparse import (SparseBatchNorm, SparseConv3d, SparseConvTranspose3d, SparseReLU, SparseTensor,
                           sparse_cat)
from relviz.sparse.core import _KeyIndex, pack_keys


class SparseBackend:
    """The pure-PyTorch backend (relviz.sparse)."""

    name = "torch"

    def conv(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
             bias: bool = False) -> nn.Module:
        return SparseConv3d(in_channels, out_channels, kernel_size=kernel_size, stride=stride, bias=bias)

    def conv_transpose(self, in_channels: int, out_channels: int, kernel_size: int = 2, stride: int = 2,
                       bias: bool = False) -> nn.Module:
        return SparseConvTranspose3d(in_channels, out_channels, kernel_size=kernel_size, stride=stride, bias=bias)

    def batch_norm(self, channels: int, momentum: float = 0.1) -> nn.Module:
        return SparseBatchNorm(channels, momentum=momentum)

    def relu(self) -> nn.Module:
        return SparseReLU()

    def add(self, a, b):
        return a.replace(a.features + b.features)

    def cat(self, a, b):
        return sparse_cat(a, b)

    def from_relviz(self, x: SparseTensor):
        return x

    def to_relviz(self, out, like: SparseTensor) -> SparseTensor:
        return out


def import_minkowski():
    """Import MinkowskiEngine (0.5.4 still uses ``collections.Sequence``, gone in Python 3.10+)."""
    if not hasattr(collections, "Sequence"):
        collections.Sequence = collections.abc.Sequence  # type: ignore[attr-defined]
    import MinkowskiEngine as ME  # noqa: N817

    return ME


class MinkowskiBackend(SparseBackend):
    """MinkowskiEngine layers with the same names and layouts (optional accelerator)."""

    name = "minkowski"

    def __init__(self):
        self.ME = import_minkowski()

    def conv(self, in_channels, out_channels, kernel_size=3, stride=1, bias=False):
        return self.ME.MinkowskiConvolution(in_channels, out_channels, kernel_size=kernel_size, stride=stride,
                                            bias=bias, dimension=3)

    def conv_transpose(self, in_channels, out_channels, kernel_size=2, stride=2, bias=False):
        return self.ME.MinkowskiConvolutionTranspose(in_channels, out_channels, kernel_size=kernel_size,
                                                     stride=stride, bias=bias, dimension=3)

    def batch_norm(self, channels, momentum=0.1):
        return self.ME.MinkowskiBatchNorm(channels, momentum=momentum)

    def relu(self):
        return self.ME.MinkowskiReLU()

    def add(self, a, b):
        return a + b

    def cat(self, a, b):
        return self.ME.cat(a, b)

    def from_relviz(self, x: SparseTensor):
        return self.ME.SparseTensor(features=x.features, coordinates=x.coordinates.int(), tensor_stride=x.stride)

    def to_relviz(self, out, like: SparseTensor) -> SparseTensor:
        # ME may store rows in its own order: put them back in the input's coordinate order
        rows = _KeyIndex(pack_keys(out.C.long())).lookup(pack_keys(like.coordinates))
        return like.replace(out.F[rows])


def available_backends() -> dict[str, bool]:
    return {"torch": True, "minkowski": importlib.util.find_spec("MinkowskiEngine") is not None}


def get_backend(name: str = "torch") -> SparseBackend:
    """A backend by name; a clear error when MinkowskiEngine is asked for but not installed."""
    if name == "torch":
        return SparseBackend()
    if name == "minkowski":
        if not available_backends()["minkowski"]:
            raise InputError("sparse backend 'minkowski' was chosen but MinkowskiEngine is not installed; "
                               "build it with bench/install_minkowski.sh or use RELVIZ_SPARSE_BACKEND=torch")
        return MinkowskiBackend()
    raise InputError(f"unknown sparse backend {name!r}; expected 'torch' or 'minkowski'")
