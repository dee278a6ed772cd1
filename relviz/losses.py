"""Distillation losses between student point features K [N, D] and paired teacher features Q [N, D].

Definitions follow docs/definitions.md exactly; both inputs are L2-normalised first (idempotent when they
already are), so every loss sees unit vectors.

- contrastive (PPKT/SLidR InfoNCE): ``CE(K Q^T / tau, arange(N))``
- similarity (CLIP2Scene/OpenScene): ``mean_i (1 - k_i . q_i)``
- relational (Mahmoud et al. 2024): cross-modal ``|K Q^T - Q Q^T|`` (diagonal mean plus
  off-diagonal mean) plus ``lambda *`` intra-modal ``|K K^T - Q Q^T|`` (off-diagonal mean)
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from relviz.errors import InputError
from relviz.tensors import check_pair


def _prepare(k: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    check_pair(k, q)
    return F.normalize(k, dim=1), F.normalize(q, dim=1)


def _offdiag_mean(m: torch.Tensor) -> torch.Tensor:
    """Mean of the entries i != j of a square matrix [N, N]."""
    n = m.shape[0]
    return (m.sum() - m.diagonal().sum()) / (n * (n - 1))


def contrastive_loss(k: torch.Tensor, q: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """InfoNCE over N pairs: each student feature must pick its own teacher feature. Scalar."""
    if temperature <= 0:
        raise InputError(f"temperature must be > 0, got {temperature}")
    k, q = _prepare(k, q)
    logits = k @ q.T / temperature  # cross_entropy is log-sum-exp stable
    return F.cross_entropy(logits, torch.arange(k.shape[0], device=k.device))


def similarity_loss(k: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Mean cosine distance of paired features. Scalar."""
    k, q = _prepare(k, q)
    return (1.0 - (k * q).sum(dim=1)).mean()


def relational_cross_loss(k: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Cross-modal part: ``C = |K Q^T - Q Q^T|``, ``mean_i C_ii + mean_{i != j} C_ij``. Scalar."""
    k, q = _prepare(k, q)
    c = (k @ q.T - q @ q.T).abs()
    return c.diagonal().mean() + _offdiag_mean(c)


def relational_intra_loss(k: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Intra-modal part: ``C' = |K K^T - Q Q^T|``, ``mean_{i != j} C'_ij``. Scalar."""
    k, q = _prepare(k, q)
    return _offdiag_mean((k @ k.T - q @ q.T).abs())


def relational_loss(k: torch.Tensor, q: torch.Tensor, intra_weight: float = 1.0) -> torch.Tensor:
    """``L_cross + intra_weight * L_intra``, sharing the teacher Gram matrix. Scalar."""
    if intra_weight < 0:
        raise InputError(f"intra_weight must be >= 0, got {intra_weight}")
    k, q = _prepare(k, q)
    qq = q @ q.T
    c = (k @ q.T - qq).abs()
    cross = c.diagonal().mean() + _offdiag_mean(c)
    if intra_weight == 0:
        return cross
    return cross + intra_weight * _offdiag_mean((k @ k.T - qq).abs())


def superpixel_contrastive_loss(k: torch.Tensor, q: torch.Tensor, superpixel_ids: torch.Tensor,
                                temperature: float = 0.07) -> torch.Tensor:
    """SLidR's superpixel-pooled InfoNCE.

    Pairs that share a superpixel id (unique across the batch's images) are average-pooled on both
    sides; empty superpixels never appear; the pooled vectors are contrasted with InfoNCE.
    k, q: [N, D]; superpixel_ids: [N] integer. Scalar.
    """
    check_pair(k, q)
    if superpixel_ids.shape != (k.shape[0],) or superpixel_ids.is_floating_point():
        raise InputError(f"superpixel_ids: expected an integer tensor of shape [{k.shape[0]}]")
    ids, inverse = torch.unique(superpixel_ids, return_inverse=True)
    if ids.numel() < 2:
        raise InputError("superpixel_contrastive_loss needs pairs from at least two superpixels")
    pooled_k = torch.zeros(ids.numel(), k.shape[1], device=k.device, dtype=k.dtype).index_add_(0, inverse, k)
    pooled_q = torch.zeros(ids.numel(), q.shape[1], device=q.device, dtype=q.dtype).index_add_(0, inverse, q)
    # averaging then normalising equals normalising the sum
    return contrastive_loss(pooled_k, pooled_q, temperature)


LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "contrastive": contrastive_loss,
    "similarity": similarity_loss,
    "relational": relational_loss,
}


def get_loss(name: str) -> Callable[..., torch.Tensor]:
    """The loss function registered under ``name`` (contrastive, similarity, relational)."""
    try:
        return LOSSES[name]
    except KeyError:
        raise InputError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}") from None
