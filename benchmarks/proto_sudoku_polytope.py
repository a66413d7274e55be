"""Prototype for issue 11's last target (no learning): how much of a held-out 4x4 Sudoku the consensus
alone solves when the agents carry x >= 0, against today's equality-only (linear) consensus.

Over the cells' digit channels x in R^{N n} (the cells' copies identified, as the hard share edges make
them), minimise 1/2 |x|^2 + q.x with q = -alpha on each clue's digit and 0 elsewhere, subject to the digit
counts A x = b of ``tasks.sudoku`` (every cell total and every unit's count of every digit):

* ``pin=False``: homogeneous, as the shipped model writes them (every row equal to cell 0's total, b = 0);
* ``pin=True``: every row equal to 1 (the Sudoku polytope; needs a right-hand side the learned model lacks).

``nonneg=False`` is the shipped model's kind of solve, x = x0 - N N^T q (N an orthonormal basis of
ker A, x0 the least-norm solution of A x = b): linear in q. ``nonneg=True`` adds x >= 0 and solves by
ADMM on x = z, z >= 0 (x-step the projection onto the affine set, z-step the clip). A puzzle counts as
solved when every cell's argmax is its solution's digit.

    python benchmarks/proto_sudoku_polytope.py [count]
"""
from __future__ import annotations

import sys

import numpy as np

from sheafdsl.training.tasks.sudoku import _row_total, _unit_count, generate, geometry


def constraints(n: int = 4, pin: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(A, b): every cell total and every unit's digit count; equal to 1 (pin) or to cell 0's total."""
    g = geometry(n)
    rows = [_row_total(c, g) for c in range(g.cells)]
    rows += [_unit_count(u, d, g) for u in range(len(g.units)) for d in range(n)]
    A = np.array(rows)
    if pin:
        return A, np.ones(len(A))
    A = A[1:] - A[0]
    return A, np.zeros(len(A))


def consensus(q: np.ndarray, A: np.ndarray, b: np.ndarray, nonneg: bool, iters: int = 3000,
              rho: float = 1.0, dual: bool = False):
    """argmin 1/2 |x|^2 + q.x s.t. A x = b (and x >= 0 when ``nonneg``), for one q. With ``dual`` (and
    ``nonneg``) also the bounds' multipliers mu = -rho u (ADMM's scaled dual of x = z): at the minimiser
    mu >= 0, mu_i x_i = 0, and x + q - mu lies in range(A^T)."""
    r = np.linalg.matrix_rank(A)
    N = np.linalg.svd(A)[2][r:].T
    x0 = np.linalg.lstsq(A, b, rcond=None)[0]
    if not nonneg:
        return x0 - N @ (N.T @ q)
    PN = N @ N.T
    z = np.zeros_like(q)
    u = np.zeros_like(q)
    for _ in range(iters):
        x = x0 + PN @ ((rho * (z - u) - q) / (1 + rho) - x0)
        z = np.maximum(x + u, 0.0)
        u += x - z
    return (z, -rho * u) if dual else z


def solved(puzzles: np.ndarray, solutions: np.ndarray, *, pin: bool, nonneg: bool, alpha: float,
           n: int = 4) -> float:
    """Fraction of the puzzles whose consensus decodes (argmax per cell) to their solution."""
    A, b = constraints(n, pin)
    hits = 0
    for p, s in zip(puzzles, solutions):
        q = np.zeros(p.size * n)
        clue = np.flatnonzero(p)
        q[clue * n + p[clue] - 1] = -alpha
        x = consensus(q, A, b, nonneg)
        hits += np.array_equal(x.reshape(-1, n).argmax(1) + 1, s)
    return hits / len(puzzles)


def main(count: int = 500) -> None:
    P, S = generate(count, blanks=(10, 11), seed=7)
    print(f"{count} puzzles with 10-11 blanks; q = -alpha on each clue's digit, Q = I")
    for pin in (False, True):
        for alpha in ((1.0,) if not pin else (1.0, 3.0, 10.0)):
            lin = solved(P, S, pin=pin, nonneg=False, alpha=alpha)
            box = solved(P, S, pin=pin, nonneg=True, alpha=alpha)
            print(f"  totals {'= 1' if pin else 'homogeneous'}, alpha {alpha:g}: linear {100 * lin:.1f}%, "
                  f"x >= 0 {100 * box:.1f}%")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
