r"""Cohomology of a cellular sheaf: dim H⁰ = ker δ, dim H¹ = coker δ, and relative H⁰ = ker δ_Ω.

For δ ∈ R^{M×N} (M = Σ_e d_e edge coordinates, N = Σ_v d_v vertex coordinates) and the free columns Ω
(the coordinates no hard pin fixes):

    h⁰ = dim ker δ = N − rank δ,        h¹ = dim coker δ = M − rank δ,
    relative h⁰ = dim H⁰(G, U; F) = dim ker δ_Ω = |Ω| − rank δ_Ω.

The harmonic extension of the pins is unique iff relative h⁰ = 0 (iff L_free = δ_Ωᵀ W² δ_Ω ≻ 0). Which pins
count as boundary is the ``sources`` parameter; the default is the training boundary
(``("input", "target", "value")``: both ends of a network pinned); ``("input", "value")`` is inference.

**When h⁰ and h¹ are undefined.** H⁰ and H¹ are the kernel and cokernel of a *linear* δ. If some edge has
an affine offset (a bias), the sections {c : δc = o} form an affine space (possibly empty), not a vector
space; if some map is state dependent (a ReLU gate, a sigmoid or softmax), δ changes with the state. Then
``h0`` and ``h1`` are ``None`` and ``undefined`` says why. Relative h⁰ stays defined: it concerns the
*linear part* of δ_Ω (the offsets move to the right-hand side of the harmonic-extension system), taken at
the given ``gates`` / ``state`` (default: every gate on, nonlinear maps linearised at 0, as in
:func:`sheafdsl.lowering.coboundary_matrix`).

**Two ways to compute a rank.**

- ``exact-rational``: over ℚ with sympy (``DomainMatrix`` over ``QQ``), used when every map is a
  rational constant: :class:`~sheafdsl.ir.Identity`, :class:`~sheafdsl.ir.Scaled`,
  :class:`~sheafdsl.ir.Constant`, :class:`~sheafdsl.ir.Select`, fixed 0/1 ReLU gates, or a
  :class:`~sheafdsl.ir.ParamMap` whose parameter has a value written in the file (``literal``, ``zeros``,
  ``ones``). A float64 entry x becomes the rational ``Rational(repr(x))``: the shortest decimal that
  round-trips to x, i.e. the number as written in the ``.sheaf`` file (0.1 is 1/10, not 3602879701896397/2⁵⁵).
- ``numeric``: singular values (LAPACK SVD) with the tolerance

      tol = max(M, N) · ε · σ_max      (ε = 2.22e-16, float64 machine epsilon)

  (numpy's ``matrix_rank`` rule): a singular value ≤ tol is counted as zero. The tolerance is returned.

>>> from sheafdsl.ir import new_sheaf, add_stalk, add_edge, Identity, Scaled
>>> G = new_sheaf("cycle")
>>> for v in "abc":
...     add_stalk(G, v, 1)
>>> for u, v in ("ab", "bc", "ca"):
...     add_edge(G, u + v, u, v, src_map=Identity(), dst_map=Identity())
>>> c = cohomology(G)                     # the constant sheaf on a 3-cycle: H⁰ = H¹ = R
>>> c.h0, c.h1, c.relative_h0, c.method
(1, 1, 1, 'exact-rational')
>>> G.edges["c", "a", "ca"]["dst_map"] = Scaled(-1.0)   # twist one edge by −1
>>> cohomology(G).h0, cohomology(G).h1
(0, 0)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..ir import INFERENCE, TRAINING, edges, free_indices, param_specs, stalks, total_dim
from ..ir.maps import Nonlinear, ParamMap, ReluGate
from ..lowering import check_shapes, coboundary_matrix, init_params

#: parameter initialisers whose value is written in the file (exact rationals)
EXACT_INITS = ("literal", "zeros", "ones")
#: above this many matrix entries (M·N) the ``auto`` method uses floating point even for rational sheaves
EXACT_ENTRY_LIMIT = 250_000


@dataclass
class Cohomology:
    """Dimensions of H⁰, H¹ and relative H⁰, how they were computed, and a basis of relative H⁰.

    Attributes
    ----------
    h0, h1 : int or None
        dim ker δ and dim coker δ; None when δ is affine or state dependent (``undefined`` says why).
    relative_h0 : int
        dim ker δ_Ω for the boundary ``sources``.
    rank, rank_free : int
        rank δ and rank δ_Ω.
    N, M, free_dim : int
        Vertex coordinates, edge coordinates, free coordinates |Ω|.
    method : "exact-rational" | "numeric"
    tolerance : float or None
        The singular-value cut-off of the numeric method (None when exact).
    sources : tuple
        The pin sources that were hard.
    kernel : (free_dim, relative_h0) ndarray
        A basis of ker δ_Ω (columns; orthonormal when numeric, rational vectors as floats when exact).
    kernel_exact : list of lists of str, or None
        The exact basis vectors as rational strings (``"-1/2"``) when ``method == "exact-rational"``.
    labels : list of (stalk, local index)
        The stalk and coordinate of each free coordinate (each row of ``kernel``).
    undefined : str or None
        Why h0/h1 are None.
    """

    h0: int | None
    h1: int | None
    relative_h0: int
    rank: int | None
    rank_free: int
    N: int
    M: int
    free_dim: int
    method: str
    tolerance: float | None
    sources: tuple
    kernel: np.ndarray
    labels: list
    kernel_exact: list | None = None
    undefined: str | None = None
    singular_values: np.ndarray | None = field(default=None, repr=False)

    @property
    def relative_h1(self) -> int:
        """dim coker δ_Ω = M − rank δ_Ω."""
        return self.M - self.rank_free

    def witness(self, k: int = 0) -> dict:
        """Kernel basis vector ``k`` of δ_Ω as {stalk: [values of every coordinate of that stalk]} restricted to
        the stalks where it is nonzero, and {stalk: [local indices]} of its nonzero coordinates."""
        return kernel_witness(self.kernel[:, k], self.labels,
                              None if self.kernel_exact is None else self.kernel_exact[k])

    def to_json(self) -> dict:
        out = {"h0": self.h0, "h1": self.h1, "relative_h0": self.relative_h0, "relative_h1": self.relative_h1,
               "rank": self.rank, "rank_free": self.rank_free, "N": self.N, "M": self.M,
               "free_dim": self.free_dim, "method": self.method, "tolerance": self.tolerance,
               "sources": list(self.sources), "undefined": self.undefined}
        if self.relative_h0:
            out["witnesses"] = [self.witness(k) for k in range(self.relative_h0)]
        return out


def kernel_witness(vec, labels, exact=None) -> dict:
    """A kernel vector named by stalks: ``{"vector": {stalk: [...]}, "stalks": [...], "coordinates": {...}}``.

    Only stalks where the vector is nonzero (|x| > 1e-10 · max|x|) appear; ``coordinates`` lists the local
    indices with nonzero weight, ``vector`` the vector's entries on those indices. With ``exact`` (rational
    strings), ``exact`` holds the same entries exactly.
    """
    vec = np.asarray(vec, dtype=float)
    scale = float(np.abs(vec).max()) if vec.size else 0.0
    out_v: dict = {}
    out_c: dict = {}
    out_e: dict = {}
    for j, (stalk, i) in enumerate(labels):
        if scale and abs(vec[j]) > 1e-10 * scale:
            out_v.setdefault(stalk, []).append(float(vec[j]))
            out_c.setdefault(stalk, []).append(int(i))
            if exact is not None:
                out_e.setdefault(stalk, []).append(exact[j])
    w = {"stalks": list(out_v), "coordinates": out_c, "vector": out_v}
    if exact is not None:
        w["exact"] = out_e
    return w


# ----------------------------------------------------------------------------------------------
# exact entries


def to_rational(x):
    """The rational a float64 was written as: ``Rational(repr(x))`` (0.1 -> 1/10). Rejects NaN/inf.

    >>> to_rational(0.1), to_rational(-2.5), to_rational(3)
    (1/10, -5/2, 3)
    """
    import sympy

    x = float(x)
    if not np.isfinite(x):
        raise ValueError(f"{x} is not a finite number")
    return sympy.Rational(repr(x))


def rational_blocker(G, gates: dict | None = None) -> str | None:
    """Why δ is not a matrix of rational constants (None if it is).

    Rational: Identity, Scaled, Constant, Select, a ReLU gate whose 0/1 pattern is given in ``gates``, and a
    parameter map or bias whose parameter is written in the file (literal, zeros, ones).
    """
    specs = param_specs(G)
    gates = gates or {}
    for _, _, name, d in edges(G):
        for m in (d["src_map"], d["dst_map"]):
            if isinstance(m, Nonlinear):
                return f"edge `{name}` has the nonlinear map {m.fn}"
            if isinstance(m, ReluGate) and name not in gates:
                return f"edge `{name}` has a state-dependent ReLU gate"
            if isinstance(m, ParamMap) and specs[m.param].init not in EXACT_INITS:
                return f"edge `{name}` uses parameter `{m.param}` (initialised `{specs[m.param].init}`, not a literal)"
    return None


def undefined_reason(G) -> str | None:
    """Why h⁰ and h¹ are undefined for ``G`` (affine offsets or state-dependent maps), or None."""
    for _, _, name, d in edges(G):
        if d.get("bias") is not None:
            return (f"edge `{name}` has the affine offset `{d['bias']}`: the sections δc = o form an affine space, "
                    "not a vector space, so H⁰ and H¹ are undefined")
        for m in (d["src_map"], d["dst_map"]):
            if isinstance(m, (ReluGate, Nonlinear)):
                kind = "ReLU gate" if isinstance(m, ReluGate) else f"nonlinear map {m.fn}"
                return (f"edge `{name}` has a state-dependent {kind}: δ changes with the state, "
                        "so H⁰ and H¹ are undefined")
    return None


def exact_coboundary(G, params: dict | None = None, gates: dict | None = None):
    """δ as a sympy ``DomainMatrix`` over ℚ (M × N), or None when some map is not a rational constant.

    ``gates`` {relu edge: 0/1 vector} fixes ReLU gates; literal parameters are read from ``params`` (default:
    ``init_params(G, 0)``, which returns them exactly as written).
    """
    if rational_blocker(G, gates) is not None:
        return None
    from sympy import QQ
    from sympy.polys.matrices import DomainMatrix

    if params is None:
        params = init_params(G, 0)
    A = coboundary_matrix(G, params, gates=gates).tocoo()
    rows: dict = {}
    for r, c, x in zip(A.row.tolist(), A.col.tolist(), A.data.tolist()):
        if x != 0.0:
            q = QQ.convert(to_rational(x))
            row = rows.setdefault(r, {})
            row[c] = row.get(c, QQ(0)) + q
            if row[c] == 0:
                del row[c]
    return DomainMatrix({r: row for r, row in rows.items() if row}, A.shape, QQ)


def _exact_rank_and_kernel(D, cols):
    """rank of D[:, cols] over ℚ and a basis of its kernel (as rational lists)."""
    from sympy import QQ
    from sympy.polys.matrices import DomainMatrix

    M = D.shape[0]
    col_pos = {c: k for k, c in enumerate(cols)}
    sub = {}
    for r, row in D.to_sparse().rep.items():
        s = {col_pos[c]: x for c, x in row.items() if c in col_pos}
        if s:
            sub[r] = s
    S = DomainMatrix(sub, (M, len(cols)), QQ)
    if len(cols) == 0:
        return 0, []
    rank = S.rank()
    if rank == len(cols):
        return rank, []
    ns = S.to_dense().nullspace().to_Matrix()
    return rank, [[ns[i, j] for j in range(ns.shape[1])] for i in range(ns.shape[0])]


# ----------------------------------------------------------------------------------------------
# numeric


def numeric_rank(A, tol: float | None = None) -> tuple[int, float, np.ndarray]:
    """(rank, tol, singular values) of a dense or sparse matrix: σ ≤ tol = max(M, N)·ε·σ_max counts as 0.

    >>> numeric_rank(np.array([[1.0, 2.0], [2.0, 4.0]]))[0]
    1
    """
    A = A.toarray() if hasattr(A, "toarray") else np.asarray(A, dtype=float)
    if A.size == 0:
        return 0, 0.0, np.zeros(0)
    s = np.linalg.svd(A, compute_uv=False)
    if tol is None:
        tol = max(A.shape) * np.finfo(float).eps * (float(s[0]) if s.size else 0.0)
    return int(np.sum(s > tol)), float(tol), s


def numeric_kernel(A, tol: float | None = None) -> tuple[np.ndarray, float, np.ndarray]:
    """An orthonormal basis (columns) of ker A, the tolerance used, and the singular values."""
    A = A.toarray() if hasattr(A, "toarray") else np.asarray(A, dtype=float)
    n = A.shape[1]
    if A.shape[0] == 0:
        return np.eye(n), 0.0, np.zeros(0)
    U, s, Vt = np.linalg.svd(A, full_matrices=True)
    if tol is None:
        tol = max(A.shape) * np.finfo(float).eps * (float(s[0]) if s.size else 0.0)
    rank = int(np.sum(s > tol))
    return Vt[rank:].T.copy(), float(tol), s


# ----------------------------------------------------------------------------------------------
# the public functions


def free_labels(G, sources=TRAINING) -> list[tuple[str, int]]:
    """(stalk, local index) of each free coordinate, in :func:`~sheafdsl.ir.free_indices` order."""
    owner = []
    for v in stalks(G):
        owner.extend((v, i) for i in range(G.nodes[v]["dim"]))
    return [owner[j] for j in free_indices(G, sources)]


def cohomology(G, params: dict | None = None, *, sources=TRAINING, method: str = "auto", gates: dict | None = None,
               state=None, tol: float | None = None) -> Cohomology:
    """h⁰, h¹ and relative h⁰ of the sheaf ``G`` (see the module docstring for definitions and methods).

    Parameters
    ----------
    G : the IR (``networkx.MultiDiGraph``)
    params : parameter values (default ``init_params(G, 0)``: literal parameters exactly as written)
    sources : the pin sources that are hard (the boundary U of the relative cohomology)
    method : "auto" (exact when every map is a rational constant and M·N ≤ :data:`EXACT_ENTRY_LIMIT`,
        else numeric), "exact" (ValueError when not rational) or "numeric"
    gates, state : fix the state-dependent maps (as in :func:`sheafdsl.lowering.coboundary_matrix`)
    tol : numeric singular-value cut-off (default max(M, N)·ε·σ_max)

    Examples
    --------
    Two stalks joined by c_b = 2 c_a, with a pinned: the harmonic extension is unique.

    >>> from sheafdsl.ir import new_sheaf, add_stalk, add_edge, add_pin, Identity, Scaled
    >>> G = new_sheaf(); add_stalk(G, "a", 1); add_stalk(G, "b", 1)
    >>> add_edge(G, "ab", "a", "b", src_map=Scaled(2.0), dst_map=Identity())
    >>> add_pin(G, "a", "value", value=[1.0])
    >>> c = cohomology(G, sources=("value",))
    >>> c.h0, c.h1, c.relative_h0
    (1, 0, 0)
    >>> c = cohomology(G, sources=())                 # nothing pinned: relative = absolute
    >>> c.relative_h0, c.witness()["exact"]
    (1, {'a': ['1/2'], 'b': ['1']})
    """
    if method not in ("auto", "exact", "numeric"):
        raise ValueError(f"method must be auto, exact or numeric, not {method!r}")
    if params is None:
        params = init_params(G, 0)
    check_shapes(G, params)
    sources = tuple(sources)
    N, free = total_dim(G), free_indices(G, sources)
    labels = free_labels(G, sources)
    undefined = undefined_reason(G)
    M = sum(d["dim"] for *_, d in G.edges(data=True))
    exact_ok = state is None and rational_blocker(G, gates) is None
    if method == "exact" and not exact_ok:
        raise ValueError("exact cohomology needs rational constant maps: "
                         + (rational_blocker(G, gates) or "a state was given"))
    use_exact = method == "exact" or (method == "auto" and exact_ok and M * N <= EXACT_ENTRY_LIMIT)
    if use_exact:
        D = exact_coboundary(G, params, gates)
        rank = None if undefined else _exact_rank_and_kernel(D, list(range(N)))[0]
        rank_free, basis = _exact_rank_and_kernel(D, [int(j) for j in free])
        K = np.array([[float(x) for x in v] for v in basis], dtype=float).T if basis else np.zeros((len(free), 0))
        exact = [[str(x) for x in v] for v in basis]
        return Cohomology(None if undefined else N - rank, None if undefined else M - rank,
                          len(free) - rank_free, rank, rank_free, N, M, len(free), "exact-rational", None,
                          sources, K, labels, exact, undefined)
    A = coboundary_matrix(G, params, state=state, gates=gates).toarray()
    rank = None
    if not undefined:
        rank, _, _ = numeric_rank(A, tol)
    Af = A[:, free]
    K, t, s = numeric_kernel(Af, tol)
    rank_free = len(free) - K.shape[1]
    return Cohomology(None if undefined else N - rank, None if undefined else M - rank, K.shape[1], rank,
                      rank_free, N, M, len(free), "numeric", t, sources, K, labels, None, undefined, s)


def h0(G, params=None, **kw) -> int | None:
    """dim H⁰ = dim ker δ (None when undefined; see :func:`cohomology`)."""
    return cohomology(G, params, **kw).h0


def h1(G, params=None, **kw) -> int | None:
    """dim H¹ = dim coker δ (None when undefined; see :func:`cohomology`)."""
    return cohomology(G, params, **kw).h1


def relative_h0(G, params=None, *, sources=TRAINING, **kw) -> int:
    """dim H⁰(G, U; F) = dim ker δ_Ω for the boundary ``sources`` (see :func:`cohomology`)."""
    return cohomology(G, params, sources=sources, **kw).relative_h0


__all__ = ["Cohomology", "cohomology", "h0", "h1", "relative_h0", "numeric_rank", "numeric_kernel",
           "exact_coboundary", "rational_blocker", "undefined_reason", "to_rational", "kernel_witness",
           "free_labels", "TRAINING", "INFERENCE"]
