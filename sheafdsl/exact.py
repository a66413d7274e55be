"""Exact arithmetic on the numbers a model writes: plain Python, no numerics.

A float64 read from a ``.sheaf`` file is taken as the decimal it was written as (``decimal(0.1)`` is 1/10,
not 3602879701896397/2⁵⁵), so an exact test decides the matrix the user wrote, not its binary rounding.

:func:`psd_witness` decides Q ⪰ 0 for a symmetric matrix over any ordered field (``fractions.Fraction``
here and in the checker, sympy's rationals in ``sheaf verify``) by symmetric LDLᵀ elimination with
diagonal pivoting, and returns a witness v with vᵀQv < 0 when Q is not PSD.

>>> psd_witness([[2, 1], [1, 2]]) is None
True
>>> v, curv = psd_witness([[1, 2], [2, 1]])
>>> [str(x) for x in v], str(curv)
(['-1', '1/2'], '-3/4')
"""

from __future__ import annotations

import math
from fractions import Fraction


def decimal(x) -> Fraction:
    """The rational a float was written as: ``Fraction(repr(x))``. NaN and infinities are a ValueError."""
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"{x} is not a finite number")
    return Fraction(repr(x))


def psd_witness(Q):
    """None when the symmetric matrix ``Q`` (a list of rows) is positive semidefinite; else ``(v, vᵀQv)``
    with vᵀQv < 0, v scaled so that its largest entry has magnitude 1 (entries of ``Q``'s field).

    The method: keep the Schur complement S of the pivots eliminated so far, together with vectors e'_j
    in the original coordinates such that S_ij = e'_iᵀ Q e'_j. Pivot on a positive diagonal entry while
    one exists (then S_ij ← S_ij − S_ik S_kj / S_kk and e'_j ← e'_j − (S_kj / S_kk) e'_k). Q ⪰ 0 iff what
    remains is zero: a negative diagonal S_jj gives v = e'_j (vᵀQv = S_jj); otherwise every remaining
    diagonal is 0, and an entry S_ij ≠ 0 gives v = e'_i + t e'_j with t = −(1 + S_ii)/(2 S_ij), so that
    vᵀQv = S_ii + 2t S_ij + t² S_jj = −1 (before scaling). Python ints and floats are read exactly
    (:func:`decimal`).
    """
    Q = [[Fraction(x) if isinstance(x, int) else decimal(x) if isinstance(x, float) else x for x in row]
         for row in Q]
    n = len(Q)
    zero = Q[0][0] * 0 if n else 0
    one = zero + 1
    S = [list(row) for row in Q]
    E = [[one if i == j else zero for i in range(n)] for j in range(n)]  # E[j] = e'_j
    live = list(range(n))
    while live:
        k = max(live, key=lambda j: S[j][j])
        if not S[k][k] > 0:
            break
        live.remove(k)
        p = S[k][k]
        for j in live:
            f = S[k][j] / p
            if f:
                E[j] = [a - f * b for a, b in zip(E[j], E[k])]
                for i in live:
                    S[i][j] = S[i][j] - S[i][k] * f
    for j in live:
        if S[j][j] < 0:
            return _scaled(E[j], Q)
    for i in live:
        for j in live:
            if i != j and S[i][j] != 0:  # S_jj = 0 (else it would have been a pivot or caught above)
                t = -(one + S[i][i]) / (2 * S[i][j])
                return _scaled([a + t * b for a, b in zip(E[i], E[j])], Q)
    return None


def _scaled(v, Q):
    m = max(abs(x) for x in v)
    v = [x / m for x in v]
    n = len(v)
    curv = sum(v[i] * Q[i][j] * v[j] for i in range(n) for j in range(n))
    return v, curv


__all__ = ["decimal", "psd_witness"]
