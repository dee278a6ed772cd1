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


def lovasz_softmax(probs: torch.Tensor, labels: torch.Tensor, ignore: int | None = 0) -> torch.Tensor:
    """Lovász-softmax loss (Berman, Rannen Triki & Blaschko, CVPR 2018) over the classes present in
    ``labels``, as SLidR's downstream loss uses it (``lovasz_softmax_flat``, ``classes="present"``).

    probs [N, C]: class probabilities per row (a softmax); labels [N]: integers in [0, C), rows whose
    label equals ``ignore`` are dropped (SLidR: ``ignore_index`` 0; None keeps every row). For each
    class c present among the kept labels, with foreground F_c = {i : y_i = c} and errors
    m_i = |1[y_i = c] - p_ic|, the loss is the Lovász extension of the Jaccard loss
    Δ_c(M) = |M| / |F_c ∪ M| at m: sort m descending (π) and take
    ``sum_i m_π(i) * (Δ_c({π(1..i)}) - Δ_c({π(1..i-1)}))`` (Berman et al., Alg. 1). The result is
    the mean over the present classes. Scalar; 0 (with a zero gradient) when every row is ignored.
    """
    if probs.ndim != 2 or labels.shape != (probs.shape[0],):
        raise InputError(f"lovasz_softmax: expected probs [N, C] and labels [N], got {tuple(probs.shape)} and "
                         f"{tuple(labels.shape)}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise InputError(f"lovasz_softmax: labels must be integers, got {labels.dtype}")
    keep = labels != ignore if ignore is not None else torch.ones_like(labels, dtype=torch.bool)
    p, y = probs[keep], labels[keep].long()
    if len(y) == 0:
        return probs.sum() * 0.0
    n_classes = probs.shape[1]
    if int(y.min()) < 0 or int(y.max()) >= n_classes:
        raise InputError(f"lovasz_softmax: labels must lie in [0, {n_classes}) or equal ignore={ignore}, got values "
                         f"from {int(y.min())} to {int(y.max())}")
    foreground = F.one_hot(y, n_classes).to(p.dtype)
    present = foreground.sum(0) > 0
    foreground, p = foreground[:, present], p[:, present]  # [N, C'], the present classes only
    errors, order = (foreground - p).abs().sort(0, descending=True)
    fg_sorted = foreground.gather(0, order)
    n_fg = fg_sorted.sum(0)
    # Jaccard loss of each prefix M: 1 - |F \ M| / |F u M| (= |M| / |F u M|), then its increments
    jaccard = 1.0 - (n_fg - fg_sorted.cumsum(0)) / (n_fg + (1.0 - fg_sorted).cumsum(0))
    increments = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return (errors * increments).sum(0).mean()
