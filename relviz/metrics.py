"""Structure metrics of a representation: uniformity U, tolerance T, modality gap G, and PCA.

Definitions (docs/definitions.md), on L2-normalised features z [N, D] (inputs are normalised here, which is a
no-op for unit vectors):

- ``U(Z) = -log( mean_{i != j} exp(-t ||z_i - z_j||^2) )``, t = 2 (higher is more uniform; at most
  2t n/(n-1), reached by a regular simplex)
- ``T_c = mean_{i != j, y_i = y_j = c} z_i . z_j``; ``T = mean_c T_c`` over classes with >= 2 samples
- ``G(A, B) = || mean_i a_i - mean_j b_j ||_2``

Exact U streams over row blocks of the upper triangle (memory O(chunk x N), never N x N);
exact T needs no pairs at all: ``sum_{i != j} z_i . z_j = ||sum_i z_i||^2 - sum_i ||z_i||^2``.
Estimates return the value with its standard error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from relviz.errors import InputError, InputTypeError
from relviz.tensors import check_features, check_labels


@dataclass(frozen=True)
class Estimate:
    """A Monte-Carlo estimate and its standard error."""

    value: float
    stderr: float
    num_pairs: int


@dataclass(frozen=True)
class Tolerance:
    """Tolerance per class and their mean.

    ``per_class[c]`` is NaN for a class with a single sample (no pair exists); such classes are
    listed in ``undefined`` and left out of ``mean``.
    """

    mean: float
    per_class: dict[int, float]
    counts: dict[int, int]
    undefined: list[int] = field(default_factory=list)


def _normalized(z: torch.Tensor, name: str, min_rows: int = 2) -> torch.Tensor:
    return F.normalize(check_features(z, name, min_rows), dim=1)


# ---------------------------------------------------------------------------------------- uniformity

# Exact U works on row blocks of at most this many pairwise entries (64 MB in float32).
_BLOCK_ENTRIES = 16 * 2**20


def uniformity(z: torch.Tensor, t: float = 2.0, chunk_size: int | None = None) -> float:
    """Exact uniformity of z [N, D] over all N(N-1) ordered pairs i != j.

    Streams row blocks of the upper triangle (each unordered pair once) and accumulates a
    log-sum-exp in float64, so memory is O(chunk_size x N) and large t cannot underflow. The
    default chunk keeps a block near 16M entries whatever N is.
    """
    if t <= 0:
        raise InputError(f"t must be > 0, got {t}")
    z = _normalized(z, "features")
    n = z.shape[0]
    chunk_size = chunk_size or max(64, _BLOCK_ENTRIES // n)
    sq = (z * z).sum(dim=1)
    running = torch.tensor(-math.inf, dtype=torch.float64, device=z.device)
    for start in range(0, n - 1, chunk_size):
        stop = min(start + chunk_size, n)
        # block rows [start, stop) against columns [start, n): the diagonal block is masked to j > i
        g = z[start:stop] @ z[start:].T
        d2 = (sq[start:stop, None] + sq[None, start:] - 2.0 * g).clamp_min_(0.0)
        logits = d2.mul_(-t)
        rows = torch.arange(stop - start, device=z.device)
        mask = rows[:, None] >= rows[None, : stop - start]  # j <= i inside the diagonal block
        logits[:, : stop - start].masked_fill_(mask, -math.inf)
        running = torch.logaddexp(running, torch.logsumexp(logits.flatten(), 0).double())
    # ordered pairs = 2 x unordered pairs: mean = 2 * sum_unordered / (n (n - 1))
    return float(-(running + math.log(2.0) - math.log(n * (n - 1))))


def uniformity_estimate(z: torch.Tensor, t: float = 2.0, num_pairs: int = 100_000, seed: int = 0,
                        chunk_size: int = 16_384) -> Estimate:
    """Uniformity from ``num_pairs`` random pairs i != j, with a delta-method standard error."""
    if t <= 0:
        raise InputError(f"t must be > 0, got {t}")
    z = _normalized(z, "features")
    n = z.shape[0]
    gen = torch.Generator().manual_seed(seed)
    i = torch.randint(0, n, (num_pairs,), generator=gen)
    j = (i + torch.randint(1, n, (num_pairs,), generator=gen)) % n  # uniform over j != i
    i, j = i.to(z.device), j.to(z.device)
    total = torch.zeros((), dtype=torch.float64, device=z.device)
    total_sq = torch.zeros((), dtype=torch.float64, device=z.device)
    for s in range(0, num_pairs, chunk_size):
        # unit vectors: ||z_i - z_j||^2 = 2 - 2 z_i . z_j
        dot = (z.index_select(0, i[s:s + chunk_size]) * z.index_select(0, j[s:s + chunk_size])).sum(dim=1)
        w = torch.exp(-t * (2.0 - 2.0 * dot).clamp_min(0.0)).double()
        total += w.sum()
        total_sq += (w * w).sum()
    mean = total / num_pairs
    var = (total_sq / num_pairs - mean * mean).clamp_min(0) * num_pairs / max(num_pairs - 1, 1)
    stderr = float(var.sqrt() / math.sqrt(num_pairs) / mean)  # d(-log m) = dm / m
    return Estimate(value=float(-mean.log()), stderr=stderr, num_pairs=num_pairs)


# ----------------------------------------------------------------------------------------- tolerance

def tolerance(z: torch.Tensor, labels: torch.Tensor, ignore_index: int | None = None) -> Tolerance:
    """Exact tolerance of z [N, D] with integer labels [N], per class and averaged over classes.

    Uses ``sum_{i != j in c} z_i . z_j = ||sum_{i in c} z_i||^2 - sum_{i in c} ||z_i||^2``: O(N D).
    """
    z = _normalized(z, "features")
    labels = check_labels(labels, z.shape[0]).to(z.device)
    if ignore_index is not None:
        keep = labels != ignore_index
        z, labels = z[keep], labels[keep]
    classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    if classes.numel() == 0:
        raise InputError("tolerance: no labelled samples (all are ignored)")
    sums = torch.zeros(classes.numel(), z.shape[1], dtype=torch.float64, device=z.device)
    sums.index_add_(0, inverse, z.double())
    norms = torch.zeros(classes.numel(), dtype=torch.float64, device=z.device)
    norms.index_add_(0, inverse, (z.double() ** 2).sum(dim=1))
    cnt = counts.double()
    pair_sum = (sums * sums).sum(dim=1) - norms
    per = torch.where(cnt > 1, pair_sum / (cnt * (cnt - 1)).clamp_min(1), torch.full_like(cnt, math.nan))
    per_class = {int(c): float(v) for c, v in zip(classes.tolist(), per.tolist())}
    undefined = [c for c, v in per_class.items() if math.isnan(v)]
    defined = [v for v in per_class.values() if not math.isnan(v)]
    if not defined:
        raise InputError("tolerance: every class has a single sample; no same-class pair exists")
    return Tolerance(mean=sum(defined) / len(defined), per_class=per_class,
                     counts={int(c): int(k) for c, k in zip(classes.tolist(), counts.tolist())},
                     undefined=undefined)


# ------------------------------------------------------------------------------------- modality gap

def modality_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    """``|| mean(normalize(a)) - mean(normalize(b)) ||_2`` for a [N, D], b [M, D] (N, M may differ)."""
    a = _normalized(a, "a", min_rows=1)
    b = _normalized(b, "b", min_rows=1)
    if a.shape[1] != b.shape[1]:
        raise InputError(f"modality_gap: feature dims differ ({a.shape[1]} vs {b.shape[1]})")
    return float((a.double().mean(dim=0) - b.double().mean(dim=0)).norm())


# -------------------------------------------------------------------------------------- sampling

def sample_per_class(labels: torch.Tensor, per_class: int = 5000, seed: int = 0,
                     ignore_index: int | None = 0) -> torch.Tensor:
    """Indices [M] of up to ``per_class`` samples of every class (the paper's protocol), seeded.

    Classes with fewer samples keep all of them; the result is sorted by class, then index.
    """
    if not isinstance(labels, torch.Tensor):
        raise InputTypeError("labels: expected an integer tensor [N]")
    labels = check_labels(labels, labels.shape[0])
    if per_class < 1:
        raise InputError(f"per_class must be >= 1, got {per_class}")
    gen = torch.Generator().manual_seed(seed)
    cpu = labels.cpu()
    out = []
    for c in torch.unique(cpu).tolist():
        if ignore_index is not None and c == ignore_index:
            continue
        idx = (cpu == c).nonzero().flatten()
        if idx.numel() > per_class:
            idx = idx[torch.randperm(idx.numel(), generator=gen)[:per_class]].sort().values
        out.append(idx)
    if not out:
        return torch.zeros(0, dtype=torch.long, device=labels.device)
    return torch.cat(out).to(labels.device)


# -------------------------------------------------------------------------------------------- PCA

@dataclass(frozen=True)
class PCA:
    """A fitted PCA basis: ``transform`` projects any [N, D] onto it (shared axes for many sets)."""

    mean: torch.Tensor  # [D]
    components: torch.Tensor  # [k, D], rows are unit principal axes
    explained_variance: torch.Tensor  # [k]
    explained_variance_ratio: torch.Tensor  # [k]

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """[N, D] -> [N, k]"""
        return (x.to(self.mean) - self.mean) @ self.components.T


def fit_pca(x: torch.Tensor, k: int = 3, method: str = "covariance", seed: int = 0) -> PCA:
    """Principal axes of x [N, D].

    ``covariance``: eigendecomposition of the D x D covariance (exact; best for D <= a few thousand).
    ``randomized``: ``torch.svd_lowrank`` (fast for large N and D). Axis signs are fixed so that the
    largest-magnitude loading of each axis is positive, which makes results reproducible.
    """
    x = check_features(x, "features")
    n, d = x.shape
    if not 1 <= k <= min(n, d):
        raise InputError(f"k must be in [1, {min(n, d)}], got {k}")
    mean = x.mean(dim=0)
    xc = x - mean
    total_var = xc.pow(2).sum() / (n - 1)
    if method == "covariance":
        cov = xc.T.double() @ xc.double() / (n - 1)
        evals, evecs = torch.linalg.eigh(cov)
        order = evals.argsort(descending=True)[:k]
        var, comps = evals[order].to(x.dtype), evecs[:, order].T.to(x.dtype)
    elif method == "randomized":
        # svd_lowrank draws its projection from the global generator: seed it without side effects
        with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
            torch.manual_seed(seed)
            _, s, v = torch.svd_lowrank(xc, q=min(k + 10, n, d), niter=4)
        var, comps = (s[:k] ** 2 / (n - 1)), v[:, :k].T
    else:
        raise InputError(f"method must be 'covariance' or 'randomized', got {method!r}")
    flip = torch.sign(comps.gather(1, comps.abs().argmax(dim=1, keepdim=True)))
    comps = comps * flip
    return PCA(mean=mean, components=comps, explained_variance=var, explained_variance_ratio=var / total_var)
