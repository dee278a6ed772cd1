"""Pure-PyTorch sparse convolution with MinkowskiEngine's semantics and weight layout."""

from relviz.sparse.core import CoordinateManager, SparseTensor, kernel_offsets, pack_keys
from relviz.sparse.nn import (SparseBatchNorm, SparseConv3d, SparseConvTranspose3d, SparseReLU, devoxelize,
                              global_avg_pool, sparse_cat, sparse_conv_features)

__all__ = [
    "CoordinateManager", "SparseTensor", "kernel_offsets", "pack_keys", "SparseBatchNorm", "SparseConv3d",
    "SparseConvTranspose3d", "SparseReLU", "devoxelize", "global_avg_pool", "sparse_cat", "sparse_conv_features",
]
