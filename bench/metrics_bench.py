"""Uniformity: relviz's streamed exact U and its estimate against the reference
``torch.pdist(z).pow(2).mul(-2).exp().mean().log()``, side by side in one process.

Usage: .venv/bin/python bench/metrics_bench.py
"""

import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from sparse_bench import PeakRSS  # noqa: E402

from relviz.metrics import uniformity, uniformity_estimate  # noqa: E402


def clustered(n_per_class: int, classes: int = 16, dim: int = 512, seed: int = 0) -> torch.Tensor:
    """CLIP-like features: unit vectors around per-class centres, [classes * n_per_class, dim]."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(classes, dim, generator=g), dim=1)
    z = centres.repeat_interleave(n_per_class, 0) + 0.06 * torch.randn(classes * n_per_class, dim, generator=g)
    return F.normalize(z, dim=1)


def timed(fn):
    with PeakRSS() as mem:
        t = time.perf_counter()
        value = fn()
        elapsed = time.perf_counter() - t
    return value, round(elapsed, 3), round(mem.peak / 2**20)


def main() -> None:
    rec = {"threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    z20 = clustered(1250)  # 20k x 512
    ref, t_ref, m_ref = timed(lambda: -float(torch.pdist(z20).pow(2).mul(-2).exp().mean().log()))
    ours, t_ours, m_ours = timed(lambda: uniformity(z20))
    rec["exact_20k"] = {"reference_pdist": {"U": ref, "s": t_ref, "peak_mb": m_ref},
                        "relviz": {"U": ours, "s": t_ours, "peak_mb": m_ours},
                        "speedup": round(t_ref / t_ours, 2), "abs_difference": abs(ref - ours)}
    z80 = clustered(5000)  # the paper's 16 x 5000
    exact, t_exact, m_exact = timed(lambda: uniformity(z80))
    rec["exact_80k"] = {"U": exact, "s": t_exact, "peak_mb": m_exact}
    est, t_est, m_est = timed(lambda: uniformity_estimate(z80, seed=0))
    rec["estimate_80k"] = {"U": est.value, "stderr": est.stderr, "s": t_est, "peak_mb": m_est,
                           "relative_error": abs(est.value - exact) / exact, "num_pairs": est.num_pairs}
    print(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
