"""Sparse tensors, coordinate keys and kernel maps with MinkowskiEngine's semantics, in pure PyTorch.

A :class:`SparseTensor` holds features [N, C] at integer coordinates [N, 4] = (batch, x, y, z) with
one tensor stride. All tensors derived from one input share a :class:`CoordinateManager`, which
keeps the canonical coordinates of every stride and caches kernel maps, so that a transposed
convolution lands exactly on the finer coordinates that already exist (as in ME) and skip
connections can be concatenated row by row.

A kernel map is a neighbour table ``[N_out, K_vol]`` of input row indices (-1 where there is no
neighbour). Each offset maps inputs to outputs one-to-one, so the convolution is, per offset, a
gather of the present pairs, one matrix product and an index-add. For offset k with spatial offset o_k:

- convolution:            out[p] = sum_k W[k]^T x[p + o_k]
- transposed convolution: out[q] = sum_k W[k]^T x[q - o_k]

Offsets follow ME's kernel region: the first spatial axis varies fastest,
``o_i = ((k // K^i) % K - K // 2) * stride * dilation`` for odd K and ``(k // K^i) % K * stride``
(lower corner) for even K.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from relviz.errors import InputError

# Coordinates are packed into one int64 key: batch in the top bits, three 18-bit spatial fields.
_BITS = 18
_HALF = 1 << (_BITS - 1)  # spatial coordinates must lie in [-2^17, 2^17)
_MAX_BATCH = 1 << (63 - 3 * _BITS)


def pack_keys(coords: torch.Tensor) -> torch.Tensor:
    """[N, 4] int (batch, x, y, z) -> [N] int64 keys, order-preserving in (b, x, y, z)."""
    c = coords.long()
    spatial = c[:, 1:]
    if c.numel() and (spatial.min() < -_HALF or spatial.max() >= _HALF):
        raise InputError(f"sparse coordinates must lie in [{-_HALF}, {_HALF}); got "
                         f"[{spatial.min().item()}, {spatial.max().item()}]")
    if c.numel() and (c[:, 0].min() < 0 or c[:, 0].max() >= _MAX_BATCH):
        raise InputError(f"batch indices must lie in [0, {_MAX_BATCH}); got [{c[:, 0].min().item()}, "
                         f"{c[:, 0].max().item()}]")
    s = spatial + _HALF
    return ((c[:, 0] << _BITS | s[:, 0]) << _BITS | s[:, 1]) << _BITS | s[:, 2]


def unpack_keys(keys: torch.Tensor) -> torch.Tensor:
    """[N] int64 keys of :func:`pack_keys` -> [N, 4] int64 (batch, x, y, z), its exact inverse."""
    mask = (1 << _BITS) - 1
    return torch.stack([keys >> (3 * _BITS), (keys >> (2 * _BITS) & mask) - _HALF,
                        (keys >> _BITS & mask) - _HALF, (keys & mask) - _HALF], dim=1)


def _offset_key(offsets: torch.Tensor) -> torch.Tensor:
    """[K, 3] spatial offsets -> [K] increments that shift a packed key by that offset."""
    o = offsets.long()
    return (o[:, 0] << (2 * _BITS)) + (o[:, 1] << _BITS) + o[:, 2]


def kernel_offsets(kernel_size: int, step: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[K^3, 3] spatial offsets in ME's order (first axis fastest), scaled by ``step``."""
    k = torch.arange(kernel_size ** 3, device=device)
    idx = torch.stack([k % kernel_size, (k // kernel_size) % kernel_size, k // kernel_size ** 2], dim=1)
    if kernel_size % 2 == 1:
        idx = idx - kernel_size // 2
    return idx * step


class _KeyIndex:
    """Sorted keys for vectorised look-up (``searchsorted``) of coordinates into row indices."""

    def __init__(self, keys: torch.Tensor):
        self.sorted, self.order = keys.sort()

    def lookup(self, queries: torch.Tensor) -> torch.Tensor:
        """Row index of each query key, -1 where absent. Any shape."""
        if self.sorted.numel() == 0:
            return torch.full_like(queries, -1)
        pos = torch.searchsorted(self.sorted, queries).clamp_(max=self.sorted.numel() - 1)
        return torch.where(self.sorted[pos] == queries, self.order[pos], torch.full_like(pos, -1))


class KernelMap:
    """A neighbour table ``nbr`` [N_out, K] of input rows (-1: none) and, computed once, the valid
    (input rows, output rows) pairs of each offset. ``identity`` is the offset that maps every row
    to itself (the centre of a submanifold kernel), which needs no gather at all."""

    def __init__(self, nbr: torch.Tensor, num_in: int, identity: int | None = None):
        self.nbr = nbr
        self.num_in = num_in
        self.identity = identity
        self._pairs: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    @property
    def num_out(self) -> int:
        return self.nbr.shape[0]

    @property
    def pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per offset: (input rows, output rows) of the neighbours that exist."""
        if self._pairs is None:
            self._pairs = []
            for k in range(self.nbr.shape[1]):
                out_rows = (self.nbr[:, k] >= 0).nonzero().squeeze(1)
                self._pairs.append((self.nbr[out_rows, k], out_rows))
        return self._pairs


@dataclass
class CoordinateManager:
    """Canonical coordinates per tensor stride, and cached kernel maps between strides."""

    coords: dict[int, torch.Tensor] = field(default_factory=dict)  # stride -> [N_s, 4] int64
    _keys: dict[int, torch.Tensor] = field(default_factory=dict)
    _index: dict[int, _KeyIndex] = field(default_factory=dict)
    _maps: dict[tuple, KernelMap] = field(default_factory=dict)

    def register(self, stride: int, coords: torch.Tensor) -> None:
        self.coords[stride] = coords
        self._keys[stride] = pack_keys(coords)

    def index(self, stride: int) -> _KeyIndex:
        if stride not in self._index:
            self._index[stride] = _KeyIndex(self._keys[stride])
        return self._index[stride]

    def strided_coords(self, stride: int, out_stride: int) -> torch.Tensor:
        """Coordinates at ``out_stride``: those at ``stride`` floored to the coarser grid (unique, sorted)."""
        if out_stride not in self.coords:
            c = self.coords[stride].long().clone()
            c[:, 1:] = torch.div(c[:, 1:], out_stride, rounding_mode="floor") * out_stride
            # unique over the packed keys (order-preserving, so the same rows in the same order as
            # torch.unique(c, dim=0)): a 1-D sort instead of a row-wise one, which took 14% of a
            # demo training step (py-spy, bench/README.md)
            keys = torch.unique(pack_keys(c), sorted=True)
            self.coords[out_stride] = unpack_keys(keys).to(self.coords[stride].dtype)
            self._keys[out_stride] = keys
        return self.coords[out_stride]

    def kernel_map(self, in_stride: int, out_stride: int, kernel_size: int, dilation: int = 1,
                   transposed: bool = False) -> KernelMap:
        """The kernel map from ``in_stride`` to ``out_stride`` coordinates; cached per arguments."""
        key = (in_stride, out_stride, kernel_size, dilation, transposed)
        if key not in self._maps:
            # offsets live on the finer of the two grids
            fine = min(in_stride, out_stride)
            step = fine * (dilation if kernel_size % 2 == 1 else 1)
            device = self.coords[in_stride].device
            shift = _offset_key(kernel_offsets(kernel_size, step, device))
            out_keys = self._keys[out_stride]
            queries = out_keys[:, None] - shift[None, :] if transposed else out_keys[:, None] + shift[None, :]
            centre = kernel_size ** 3 // 2 if (in_stride == out_stride and kernel_size % 2 == 1) else None
            self._maps[key] = KernelMap(self.index(in_stride).lookup(queries), self.coords[in_stride].shape[0], centre)
        return self._maps[key]


@dataclass
class SparseTensor:
    """Features [N, C] at coordinates [N, 4] (batch, x, y, z), integer multiples of ``stride``."""

    features: torch.Tensor
    coordinates: torch.Tensor
    stride: int = 1
    manager: CoordinateManager = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.features.ndim != 2 or self.coordinates.ndim != 2 or self.coordinates.shape[1] != 4:
            raise InputError(f"SparseTensor: expected features [N, C] and coordinates [N, 4], got "
                             f"{tuple(self.features.shape)} and {tuple(self.coordinates.shape)}")
        if self.features.shape[0] != self.coordinates.shape[0]:
            raise InputError(f"SparseTensor: {self.features.shape[0]} feature rows but "
                             f"{self.coordinates.shape[0]} coordinates")
        if self.manager is None:
            coords = self.coordinates.long()
            keys = pack_keys(coords)
            if torch.unique(keys).numel() != keys.numel():
                raise InputError("SparseTensor: coordinates must be unique (voxelize first)")
            self.coordinates = coords
            self.manager = CoordinateManager()
            self.manager.coords[self.stride] = coords
            self.manager._keys[self.stride] = keys

    @property
    def F(self) -> torch.Tensor:  # noqa: N802 - MinkowskiEngine's name
        return self.features

    @property
    def C(self) -> torch.Tensor:  # noqa: N802
        return self.coordinates

    @property
    def batch_size(self) -> int:
        return int(self.coordinates[:, 0].max().item()) + 1 if self.coordinates.numel() else 0

    def replace(self, features: torch.Tensor) -> "SparseTensor":
        """Same coordinates and manager, new features [N, C']."""
        return SparseTensor(features, self.coordinates, self.stride, self.manager)
