"""Tensor helpers shared across layers: input checks (one place for the errors users see), and the
intra-op thread count for small work."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from relviz.errors import InputError, InputTypeError


def check_features(z: torch.Tensor, name: str = "features", min_rows: int = 2) -> torch.Tensor:
    """Validate a feature matrix [N, D]: floating point, finite, at least ``min_rows`` rows."""
    if not isinstance(z, torch.Tensor):
        raise InputTypeError(f"{name}: expected a torch.Tensor [N, D], got {type(z).__name__}")
    if not z.is_floating_point():
        raise InputTypeError(f"{name}: expected floating-point features [N, D], got dtype {z.dtype}")
    if z.ndim != 2:
        raise InputError(f"{name}: expected shape [N, D], got {tuple(z.shape)}")
    if z.shape[0] < min_rows:
        raise InputError(f"{name}: needs at least {min_rows} samples, got {z.shape[0]}")
    if not torch.isfinite(z).all():
        bad = (~torch.isfinite(z)).any(dim=1).nonzero().flatten()
        raise InputError(f"{name}: {bad.numel()} row(s) contain NaN or infinite values (first: row {bad[0].item()})")
    return z


def check_pair(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str] = ("student", "teacher"),
               min_rows: int = 2) -> None:
    """Validate two paired feature matrices of the same shape [N, D]."""
    check_features(a, names[0], min_rows)
    check_features(b, names[1], min_rows)
    if a.shape != b.shape:
        raise InputError(f"{names[0]} {tuple(a.shape)} and {names[1]} {tuple(b.shape)} must have the same shape [N, D]")


def check_labels(labels: torch.Tensor, n: int, name: str = "labels") -> torch.Tensor:
    """Validate integer labels [N] aligned with N features."""
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise InputTypeError(f"{name}: expected an integer tensor [N]")
    if labels.ndim != 1 or labels.shape[0] != n:
        raise InputError(f"{name}: expected shape [{n}] to match the features, got {tuple(labels.shape)}")
    return labels


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, then restore the count. For small tensors (the toy's
    [256, 64], a prompt's text encoding, one keyframe's [N, D] @ [D, P]): on idle cores a second
    thread saves little, and when another process holds a core (the browser drawing, a background
    job) every parallel region waits for its descheduled thread. Measured on 2 cores with one busy
    core: the demo teacher's text encoding median 8.5 ms, max 130 ms on two threads, 5.2 and 12 ms on
    one; the toy's 200 iterations 26.7 s on two threads, 2.3 s on one. OpenMP's count is per calling
    thread, so threads that have run torch before keep theirs; but torch also keeps a process-wide
    default, which a thread whose first torch operation falls inside this block starts from (in the
    app: at worst one script run of another session computes on one thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
