"""Sums per keyframe from which U, T, G and mIoU of any multiset of keyframes follow exactly.

A cluster bootstrap over keyframes (:mod:`relviz.stats`) evaluates a statistic on many resamples;
a resample is a multiset of the K keyframes, written as multiplicities m [K] (all ones for the data
as observed). With sums kept per keyframe each metric of a resample is a small function of m, so one
pass over the points serves every resample (every function here takes m [..., K], returns [...]):

- U: with W[a, b] = sum over i in a, j in b, i != j of exp(-t ||z_i - z_j||^2), the ordered pairs of
  distinct positions of the resampled multiset sum to m^T W m + sum_a n_a m_a (m_a - 1) (each point
  with its own copies, kernel 1), over N (N - 1) pairs, N = m . n;
- T_c: (||sum_a m_a s_ac||^2 - sum_a m_a q_ac) / (N_c (N_c - 1)), s_ac the sum and q_ac the sum of
  squared norms of class c's features in keyframe a (the identity metrics.tolerance uses);
- G: ||sum_a m_a (sum_{i in a} z_i - r_i)|| / N for features z paired with features r;
- U over cross-keyframe pairs (U's estimand, docs/protocol.md): pairs inside one keyframe are more
  alike than pairs across keyframes, so U pooled over K keyframes drifts with K; the pairs of distinct
  keyframes sum to m^T W' m with W' = W off its diagonal, over (m . n)^2 - sum_a m_a^2 n_a^2 pairs (a
  keyframe drawn twice pairs with itself only inside itself: excluded too);
- mIoU: of the per-keyframe confusion matrices summed with weights m, over a fixed class list.
At m = 1 these are the metrics of :mod:`relviz.metrics` and :mod:`relviz.segmentation` on the same
points (tests/test_stats.py checks it); the one O(S^2) pass is W, streamed in row blocks as U is.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from relviz.errors import InputError
from relviz.segmentation import classes_with_ground_truth, confusion_matrix, mean_iou

_BLOCK_ENTRIES = 16 * 2**20  # pairwise entries per row block (64 MB in float32), as metrics.uniformity
_ONEHOT_ENTRIES = 2**26  # points x keyframes up to which kernel sums use a one-hot product
MAX_T = 20.0  # exp(-4 t) stays a normal float32 up to t ~ 21


def _sum_by(x: torch.Tensor, index: torch.Tensor, size: int, chunk: int = 2**15) -> np.ndarray:
    """Sums of the rows of x [N, ...] by ``index`` [N] in [0, size): float64 [size, ...], converting
    ``chunk`` rows to float64 at a time."""
    out = torch.zeros((size, *x.shape[1:]), dtype=torch.float64, device=x.device)
    index = index.to(x.device)
    for start in range(0, len(x), chunk):
        out.index_add_(0, index[start:start + chunk], x[start:start + chunk].double())
    return out.cpu().numpy()


def _check_keyframes(keyframe: torch.Tensor, n: int, n_keyframes: int) -> None:
    if keyframe.shape != (n,):
        raise InputError(f"keyframe must hold one id per point ({n}), got shape {tuple(keyframe.shape)}")
    if n and (int(keyframe.min()) < 0 or int(keyframe.max()) >= n_keyframes):
        raise InputError(f"keyframe ids must lie in [0, {n_keyframes - 1}]")


def kernel_sums(z: torch.Tensor, keyframe: torch.Tensor, n_keyframes: int, t: float = 2.0) -> np.ndarray:
    """W [K, K] float64: sum over i in keyframe a, j in keyframe b, i != j, of exp(-t ||z_i - z_j||^2),
    for unit features z [S, D]; streamed over row blocks of the upper triangle (memory O(block))."""
    if not 0 < t <= MAX_T:
        raise InputError(f"t must lie in (0, {MAX_T}], got {t}")
    n = z.shape[0]
    keyframe = keyframe.to(z.device)
    # sums over each keyframe's columns: a product with the one-hot [S, K] (BLAS: fast and accurate) for
    # few keyframes; for many, index_add in float64 (a float32 index_add accumulates one term at a time)
    onehot = F.one_hot(keyframe, n_keyframes).to(z.dtype) if n * n_keyframes <= _ONEHOT_ENTRIES else None
    upper = torch.zeros(n_keyframes, n_keyframes, dtype=torch.float64, device=z.device)
    sq = (z * z).sum(dim=1)
    rows = max(1, _BLOCK_ENTRIES // max(n, 1))
    for start in range(0, n - 1, rows):
        stop = min(start + rows, n)
        d2 = (sq[start:stop, None] + sq[None, start:] - 2.0 * (z[start:stop] @ z[start:].T)).clamp_min_(0.0)
        k = d2.mul_(-t).exp_()
        r = torch.arange(stop - start, device=z.device)
        k[:, : stop - start].masked_fill_(r[:, None] >= r[None, :], 0.0)  # pairs j > i only
        if onehot is not None:
            by_column = (k @ onehot[start:]).double()
        else:
            by_column = torch.zeros(stop - start, n_keyframes, dtype=torch.float64, device=z.device)
            by_column.index_add_(1, keyframe[start:], k.double())
        upper.index_add_(0, keyframe[start:stop], by_column)
    return (upper + upper.T).cpu().numpy()


@dataclass(frozen=True)
class GapSums:
    """Per-keyframe point counts [K] and sums [K, D] of z_i - r_i for unit features z paired with r."""

    counts: np.ndarray
    sums: np.ndarray

    def gap(self, m: np.ndarray) -> np.ndarray:
        """G = ||mean z - mean r|| of the resample [...]."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.linalg.norm(m @ self.sums, axis=-1) / (m @ self.counts)


def gap_sums(z: torch.Tensor, paired: torch.Tensor, keyframe: torch.Tensor, n_keyframes: int) -> GapSums:
    """:class:`GapSums` of features z [N, D] and r = ``paired`` [N, D] (both L2-normalised here) with
    keyframe ids [N]. Each keyframe's rows are summed by torch's reduction (cascaded, so its error grows
    with log N, not N) in the features' dtype, then kept in float64: a float64 copy of the [N, D]
    differences of every paired point would cost gigabytes and most of the time."""
    _check_keyframes(keyframe, z.shape[0], n_keyframes)
    if paired.shape != z.shape:
        raise InputError(f"paired features {tuple(paired.shape)} must match the features {tuple(z.shape)}")
    diff = F.normalize(z, dim=1) - F.normalize(paired.to(z.device), dim=1)
    keyframe = keyframe.to(z.device)
    ordered = bool((keyframe[1:] >= keyframe[:-1]).all())  # gathered keyframe by keyframe: no reordering
    if not ordered:
        order = torch.argsort(keyframe, stable=True)
        diff, keyframe = diff[order], keyframe[order]
    counts = torch.bincount(keyframe, minlength=n_keyframes)
    sums = torch.zeros(n_keyframes, z.shape[1], dtype=torch.float64, device=z.device)
    for k, part in zip(counts.nonzero().flatten().tolist(), torch.split(diff, counts[counts > 0].tolist())):
        sums[k] = part.sum(0).double()
    return GapSums(counts.double().cpu().numpy(), sums.cpu().numpy())


@dataclass(frozen=True)
class FeatureSums:
    """Per-keyframe sums of unit features z [S, D] with labels [S] and, when given, paired features
    r [S, D] (the teacher's at the same points) for G. ``classes``: the labels present, in order."""

    counts: np.ndarray  # [K] points per keyframe
    kernel: np.ndarray  # [K, K] W
    classes: tuple[int, ...]
    class_counts: np.ndarray  # [K, C]
    class_sums: np.ndarray  # [K, C, D]
    class_squares: np.ndarray  # [K, C] sums of ||z_i||^2
    paired: GapSums | None  # for G against the paired features

    @property
    def n_keyframes(self) -> int:
        return len(self.counts)

    @cached_property
    def kernel_across(self) -> np.ndarray:
        """W off its diagonal [K, K]: the kernel sums of pairs from two distinct keyframes."""
        return self.kernel - np.diag(np.diag(self.kernel))

    def uniformity(self, m: np.ndarray) -> np.ndarray:
        """U over pairs of points from distinct keyframes [...] (NaN with fewer than 2 keyframes)."""
        pairs = np.einsum("...k,kl,...l->...", m, self.kernel_across, m)
        n = m @ self.counts
        with np.errstate(divide="ignore", invalid="ignore"):
            return -np.log(pairs / (n * n - (m * m) @ (self.counts * self.counts)))

    def uniformity_pooled(self, m: np.ndarray) -> np.ndarray:
        """U over every pair of distinct points, within keyframes too (drifts with K; for comparison)."""
        n = m @ self.counts
        pairs = np.einsum("...k,kl,...l->...", m, self.kernel, m) + (m * (m - 1)) @ self.counts
        with np.errstate(divide="ignore", invalid="ignore"):
            return -np.log(pairs / (n * (n - 1)))

    def tolerance_per_class(self, m: np.ndarray) -> np.ndarray:
        """T_c [..., C]; NaN for a class with fewer than 2 points in the resample."""
        sums = np.einsum("...k,kcd->...cd", m, self.class_sums)
        count = m @ self.class_counts
        pair_sum = (sums * sums).sum(-1) - m @ self.class_squares
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(count > 1, pair_sum / (count * (count - 1)), np.nan)

    def tolerance(self, m: np.ndarray) -> np.ndarray:
        per = self.tolerance_per_class(m)
        defined = np.isfinite(per)
        return np.where(defined.any(-1), np.where(defined, per, 0).sum(-1) / np.maximum(defined.sum(-1), 1), np.nan)

    def mean(self, m: np.ndarray) -> np.ndarray:
        """The mean feature [..., D] of the resample."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.einsum("...k,kcd->...d", m, self.class_sums) / (m @ self.counts)[..., None]

    def gap(self, m: np.ndarray) -> np.ndarray:
        if self.paired is None:
            raise InputError("these sums hold no paired features: G needs them")
        return self.paired.gap(m)

    def gap_to(self, m: np.ndarray, point: np.ndarray) -> np.ndarray:
        """||mean of the resample - point||, ``point`` [D] (e.g. the mean class text embedding)."""
        return np.linalg.norm(self.mean(m) - point, axis=-1)


def feature_sums(z: torch.Tensor, labels: torch.Tensor, keyframe: torch.Tensor, n_keyframes: int,
                 paired: torch.Tensor | None = None, t: float = 2.0) -> FeatureSums:
    """:class:`FeatureSums` of features z [S, D] (L2-normalised here), labels [S] and keyframe ids
    [S] in [0, n_keyframes); ``paired`` [S, D] the features G is measured against."""
    _check_keyframes(keyframe, z.shape[0], n_keyframes)
    if labels.shape != keyframe.shape:
        raise InputError(f"labels {tuple(labels.shape)} and keyframe ids {tuple(keyframe.shape)} differ in shape")
    raw, z = z, F.normalize(z, dim=1)
    classes, column = torch.unique(labels, return_inverse=True)
    kf, n_classes = keyframe.to(z.device), len(classes)
    cell = kf * n_classes + column.to(z.device)  # (keyframe, class): [K * C] cells, never an [S, C, D] tensor

    def by_cell(x: torch.Tensor) -> np.ndarray:
        return _sum_by(x, cell, n_keyframes * n_classes).reshape(n_keyframes, n_classes, *x.shape[1:])

    return FeatureSums(counts=_sum_by(torch.ones(len(z), device=z.device), kf, n_keyframes),
                       kernel=kernel_sums(z, kf, n_keyframes, t), classes=tuple(int(c) for c in classes.tolist()),
                       class_counts=by_cell(torch.ones(len(z), device=z.device)), class_sums=by_cell(z),
                       class_squares=by_cell((z.double() ** 2).sum(1)),
                       paired=None if paired is None else gap_sums(raw, paired, keyframe, n_keyframes))


@dataclass(frozen=True)
class ConfusionSums:
    """Confusion matrices per keyframe [K, C, C] (rows ground truth), summed by multiplicity."""

    per_keyframe: np.ndarray

    def total(self, m: np.ndarray) -> np.ndarray:
        """The summed matrices [..., C, C] of multiplicities ``m`` [..., K]: one matrix product (whole
        counts times whole multiplicities: exact in float64 below 2^53)."""
        m = np.asarray(m, dtype=np.float64)
        k, c = self.per_keyframe.shape[0], self.per_keyframe.shape[1:]
        flat = m.reshape(-1, k) @ self.per_keyframe.reshape(k, -1).astype(np.float64)
        return flat.reshape(*m.shape[:-1], *c)

    @property
    def classes(self) -> tuple[int, ...]:
        """The fixed class list: the classes with ground truth in the evaluated set (m = 1)."""
        return classes_with_ground_truth(self.per_keyframe.sum(0))

    def miou(self, m: np.ndarray, classes: tuple[int, ...] | None = None) -> np.ndarray:
        """mIoU over ``classes`` (default :attr:`classes`, fixed at the data's, resamples included): for
        every multiplicity vector at once, :func:`relviz.segmentation.mean_iou_over`'s rule (a listed class
        without ground truth in the resample leaves the mean; NaN when none has any)."""
        listed = np.asarray(self.classes if classes is None else classes, dtype=np.int64)
        cm = self.total(m)
        flat = cm.reshape(-1, *cm.shape[-2:]).astype(np.float64)
        tp = np.diagonal(flat, axis1=1, axis2=2)[:, listed]
        support = flat.sum(2)[:, listed]  # rows: ground truth
        union = support + flat.sum(1)[:, listed] - tp
        counted = (support > 0) & (listed != 0)  # the ignore class never counts (iou_per_class)
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(counted, tp / np.where(union > 0, union, 1.0), 0.0)
            n = counted.sum(1)
            out = np.where(n > 0, iou.sum(1) / np.maximum(n, 1), np.nan)
        return out.reshape(cm.shape[:-2])

    def miou_devkit(self, m: np.ndarray) -> np.ndarray:
        """mIoU by nuscenes-devkit's rule (a predicted absent class counts 0), the second figure."""
        cm = self.total(m)
        flat = cm.reshape(-1, *cm.shape[-2:])
        return np.array([mean_iou(c) for c in flat]).reshape(cm.shape[:-2])


def confusion_sums(pred: torch.Tensor, labels: torch.Tensor, keyframe: torch.Tensor, n_keyframes: int,
                   num_classes: int = 17) -> ConfusionSums:
    """:class:`ConfusionSums` of predictions and labels [N] (0 ignored) with keyframe ids [N]."""
    _check_keyframes(keyframe, len(labels), n_keyframes)
    order = torch.argsort(keyframe.cpu(), stable=True)
    sizes = torch.bincount(keyframe.cpu(), minlength=n_keyframes).tolist()
    parts = torch.split(order, sizes)
    pred, labels = pred.cpu(), labels.cpu()
    return ConfusionSums(np.stack([confusion_matrix(pred[p], labels[p], num_classes) for p in parts]))


__all__ = ["ConfusionSums", "FeatureSums", "GapSums", "confusion_sums", "feature_sums", "gap_sums", "kernel_sums"]
