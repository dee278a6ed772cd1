"""Unit roundoffs and the summation bound that the tests' float tolerances are derived from.

Machines differ in SIMD width, thread count and BLAS, so the terms of a float sum are added in a
different order. Whatever the order, a computed sum of n terms lies within gamma(n) * sum|terms| of
the exact sum (Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., sec. 3.1 and 4.2;
a dot product of length n counts as n terms), so two evaluations in different orders differ by at
most 2 * gamma(n) * sum|terms|. That worst case is the default here; a test that uses anything else
says so next to its tolerance.
"""

import torch

U16 = 2.0 ** -11  # unit roundoff of float16, 4.9e-4 (half its machine epsilon)
U32 = 2.0 ** -24  # float32, 6.0e-8
U64 = 2.0 ** -53  # float64, 1.1e-16


def unit_roundoff(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


def gamma(n: float, dtype: torch.dtype = torch.float64) -> float:
    """Higham's gamma_n = n u / (1 - n u): the relative error bound of n accumulated roundings."""
    nu = n * unit_roundoff(dtype)
    assert nu < 0.5, f"gamma({n}) is no bound in {dtype}"
    return nu / (1 - nu)
