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




def feasible_point(A, r, lo, hi):
    """Decide exactly whether {x : A x = r, lo ≤ x ≤ hi} is empty (``lo``/``hi`` entries None for ∓∞).

    Returns ``("feasible", x)`` with a point x of the set, or ``("infeasible", y)`` with a Farkas
    certificate: a combination y of the rows of A with yᵀA x < yᵀr for every x in the box, so that no x
    satisfies both. Entries may be ints, floats (read as their decimals) or Fractions; results are Fractions.

    The method: x = lo + u, hi − u or u⁺ − u⁻ with u ≥ 0 (and u + s = hi − lo for a two-sided bound), rows
    signed so that the right-hand side is ≥ 0, then phase 1 of the simplex method with artificial variables
    a ≥ 0, min Σa subject to M u + a = b, pivoting by Bland's rule (which cannot cycle), in exact arithmetic.
    Its optimum is 0 exactly when the set is nonempty; otherwise the simplex multipliers y (the dual of
    phase 1: Mᵀy ≤ 0, bᵀy > 0) restricted to the rows of A are the certificate.

    >>> feasible_point([[1, 1]], [1], [0, 0], [None, None])[0]
    'feasible'
    >>> kind, y = feasible_point([[1, -1]], [3], [0, 0], [1, 1])   # x0 − x1 = 3 with both in [0, 1]
    >>> kind, [str(v) for v in y]
    ('infeasible', ['1'])
    """
    def q(x):
        return None if x is None else Fraction(x) if isinstance(x, (int, Fraction)) else decimal(x)

    A = [[q(x) for x in row] for row in A]
    r = [q(x) for x in r]
    lo, hi = [q(x) for x in lo], [q(x) for x in hi]
    m, n = len(A), len(lo)
    cols: list = []  # cols[k] = (j, sign): x_j gets sign·u_k
    shift = []
    ub: list = []  # (k, hi − lo): u_k ≤ hi − lo, as u_k + s = hi − lo
    for j in range(n):
        if lo[j] is not None:
            cols.append((j, 1))
            shift.append(lo[j])
            if hi[j] is not None:
                ub.append((len(cols) - 1, hi[j] - lo[j]))
        elif hi[j] is not None:
            cols.append((j, -1))
            shift.append(hi[j])
        else:
            cols += [(j, 1), (j, -1)]
            shift.append(Fraction(0))
    k = len(cols)
    if any(b < 0 for _, b in ub):
        raise ValueError("lo > hi")
    # rows: A (T u) = r − A shift, then u_k + s_k = ub_k
    M, b = [], []
    for i in range(m):
        M.append([A[i][j] * s for j, s in cols] + [Fraction(0)] * len(ub))
        b.append(r[i] - sum(A[i][j] * shift[j] for j in range(n)))
    for t, (kk, width) in enumerate(ub):
        row = [Fraction(0)] * (k + len(ub))
        row[kk] = row[k + t] = Fraction(1)
        M.append(row)
        b.append(width)
    rows, nv = len(M), k + len(ub)
    sign = [(-1 if b[i] < 0 else 1) for i in range(rows)]
    T = [[sign[i] * x for x in M[i]] + [Fraction(int(i == a)) for a in range(rows)] + [sign[i] * b[i]]
         for i in range(rows)]
    basis = [nv + i for i in range(rows)]
    width = nv + rows
    cost = [Fraction(0)] * nv + [Fraction(1)] * rows
    # reduced costs d_j = c_j − c_Bᵀ B⁻¹ a_j, read off the tableau once, then kept as its objective row (a pivot
    # subtracts d_enter times the new pivot row: the same rationals as recomputing them)
    d = [cost[j] - sum(cost[basis[i]] * T[i][j] for i in range(rows)) for j in range(width)]
    while True:
        enter = next((j for j in range(width) if d[j] < 0), None)  # Bland: the lowest index
        if enter is None:
            break
        ratios = [(T[i][-1] / T[i][enter], basis[i], i) for i in range(rows) if T[i][enter] > 0]
        _, _, leave = min(ratios)  # Bland: ties broken by the lowest basic index
        p = T[leave][enter]
        T[leave] = piv = [x / p if x else x for x in T[leave]]
        nz = [j for j, y in enumerate(piv) if y]  # the pivot row is sparse: only its nonzeros change other rows
        for i in range(rows):
            if i != leave and T[i][enter] != 0:
                f, row = T[i][enter], T[i]
                for j in nz:
                    row[j] = row[j] - f * piv[j]
        f = d[enter]
        for j in nz[:-1] if nz[-1] == width else nz:  # d has no right-hand-side entry
            d[j] = d[j] - f * piv[j]
        basis[leave] = enter
    value = sum(cost[basis[i]] * T[i][-1] for i in range(rows))
    if value == 0:
        u = [Fraction(0)] * width
        for i in range(rows):
            u[basis[i]] = T[i][-1]
        x = list(shift)
        for c, (j, s) in enumerate(cols):
            x[j] += s * u[c]
        return "feasible", x
    # y_i = c_a − d_a for the artificial column of row i (its reduced cost), undone the row signs
    y = [sign[i] * (Fraction(1) - d[nv + i]) for i in range(rows)]
    return "infeasible", y[:m]


__all__ = ["decimal", "psd_witness", "feasible_point"]
