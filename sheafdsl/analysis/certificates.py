r"""Symbolic coboundaries and triangular certificates (the machinery behind ``sheaf verify``).

**The symbolic δ_Ω.** Every parameter *entry* is its own sympy symbol (``W1[0,1]``), every ReLU unit is a
gate symbol ``g_act1[0]`` ∈ {0, 1}, and a nonlinear map (sigmoid, softmax) is an opaque Jacobian block of
symbols ``J_out[i,j]`` (diagonal for sigmoid, full for softmax): a statement proved about this matrix holds
for every weight, every activation pattern and every linearisation point. Identity, scaled, constant and
selection maps enter as exact rationals (:func:`~sheafdsl.analysis.cohomology.to_rational`). Rows are the
edge coordinates (edges in IR order), columns the free coordinates; rows with no free entry (edges between
pinned coordinates) carry no unknown and are left out.

**The certificate: elimination of singleton rows.** Repeatedly take a row that has exactly one nonzero entry
among the remaining columns, record it as a pivot, and delete its row and column. A square matrix can be
permuted (rows and columns independently) to lower-triangular form iff this never gets stuck: a singleton
row exists in every triangular arrangement (the first row), and deleting a pivot keeps the rest triangular.
Each step is a Laplace expansion along that row, so

    det δ_Ω = ± Π (pivot entries),     and in the pivot order (rows and columns) δ_Ω is lower triangular.

When every pivot is identically 1, δ_Ω is **unitriangular**: det = 1 as a polynomial identity in all the
symbols (sympy also recomputes the determinant of the reordered matrix by Berkowitz's division-free
algorithm as an independent check). When the pivots are nonzero constants but some rows remain (a tall
δ_Ω, e.g. a skip edge), the pivot rows form a square triangular block with nonzero determinant, so δ_Ω is
injective for every value of the symbols.

>>> from sheafdsl.frontend import load_text
>>> from sheafdsl.ir import from_model
>>> G = from_model(load_text("sheaf t\nnetwork n : 2 -> 2 -> 1\n"))
>>> S = symbolic_coboundary(G, ("input", "value"))
>>> S.shape, len(S.weights), len(S.gates)        # W1 multiplies the pinned x: not in δ_Ω
((6, 6), 2, 2)
>>> e = eliminate(S.rows, S.shape[1])
>>> e.square_unit, e.vertex_order(S)
(True, ['aff1 -> z1', 'act1 -> a1', 'aff2 -> z2', 'out -> y'])
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

from ..ir import edges, free_indices, param_specs, stalks
from ..ir.maps import Constant, Identity, Nonlinear, ParamMap, ReluGate, Scaled, Select
from ..nonlinearities import TABLE as NONLINEARITIES
from .cohomology import to_rational


@dataclass
class SymbolicCoboundary:
    """δ restricted to the free columns, with symbolic entries: ``rows[r] = {col: sympy expr}``.

    ``row_labels[r]`` = (edge, local index), ``col_labels[c]`` = (stalk, local index); ``zero_rows`` are the
    edge coordinates left out because no free coordinate enters them. ``weights``, ``gates`` and
    ``jacobians`` list the symbols by kind.
    """

    rows: list
    row_labels: list
    col_labels: list
    zero_rows: list
    weights: list = field(default_factory=list)
    gates: list = field(default_factory=list)
    jacobians: list = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), len(self.col_labels)

    def matrix(self, row_order=None, col_order=None):
        """A dense ``sympy.Matrix`` (optionally with rows/columns permuted)."""
        import sympy

        ro = range(len(self.rows)) if row_order is None else row_order
        co = list(range(len(self.col_labels))) if col_order is None else list(col_order)
        pos = {c: k for k, c in enumerate(co)}
        A = sympy.zeros(len(ro), len(co))
        for i, r in enumerate(ro):
            for c, x in self.rows[r].items():
                if c in pos:
                    A[i, pos[c]] = x
        return A


def _symbolic_block(m, d_e: int, d_v: int, edge: str, spec_of, syms: dict) -> dict:
    """{(i, j): sympy entry} of one restriction map F (d_e × d_v)."""
    import sympy

    def sym(name, kind):
        if name not in syms:
            syms[name] = (sympy.Symbol(name, real=True), kind)
        return syms[name][0]

    if isinstance(m, Identity):
        return {(i, i): sympy.Integer(1) for i in range(d_v)}
    if isinstance(m, Scaled):
        s = to_rational(m.scale)
        return {} if s == 0 else {(i, i): s for i in range(d_v)}
    if isinstance(m, Constant):
        return {(i, j): to_rational(x) for (i, j), x in np.ndenumerate(m.matrix) if x != 0}
    if isinstance(m, Select):
        return {(k, int(j)): sympy.Integer(1) for k, j in enumerate(m.indices)}
    if isinstance(m, ParamMap):
        shape = spec_of(m.param).shape
        rows, cols = (shape[0], shape[1]) if len(shape) == 2 else (shape[0], 1)
        return {(i, j): sym(f"{m.param}[{i},{j}]", "weight") for i in range(rows) for j in range(cols)}
    if isinstance(m, ReluGate):
        return {(i, i): sym(f"g_{edge}[{i}]", "gate") for i in range(d_v)}
    if isinstance(m, Nonlinear):
        if NONLINEARITIES[m.fn].kind != "joint":  # elementwise φ: Dφ = diag(φ'(c))
            return {(i, i): sym(f"J_{edge}[{i},{i}]", "jacobian") for i in range(d_v)}
        return {(i, j): sym(f"J_{edge}[{i},{j}]", "jacobian") for i in range(d_e) for j in range(d_v)}
    raise TypeError(f"not a restriction map: {m!r}")


def symbolic_coboundary(G, sources) -> SymbolicCoboundary:
    """The symbolic δ_Ω of ``G`` for the boundary ``sources`` (see the module docstring)."""
    import sympy

    specs = param_specs(G)
    free = free_indices(G, sources)
    col_of = {int(j): k for k, j in enumerate(free)}
    owner = []
    for v in stalks(G):
        owner.extend((v, i) for i in range(G.nodes[v]["dim"]))
    col_labels = [owner[j] for j in free]
    syms: dict = {}
    rows, row_labels, zero_rows = [], [], []
    for u, v, name, d in edges(G):
        block: dict = {}
        seen: dict = {}
        for m, vert, sign in ((d["src_map"], u, -1), (d["dst_map"], v, 1)):
            nd = G.nodes[vert]
            for (i, j), x in _symbolic_block(m, d["dim"], nd["dim"], name, specs.__getitem__, syms).items():
                c = col_of.get(nd["offset"] + j)
                if c is None:
                    continue
                row = block.setdefault(i, {})
                row[c] = -x if sign < 0 else x
                if (i, c) in seen:  # a self-loop: both maps act on the same column
                    row[c] = sympy.expand(seen[i, c] + row[c])
                seen[i, c] = row[c]
        for i in range(d["dim"]):
            row = {c: x for c, x in block.get(i, {}).items() if x != 0}
            if row:
                rows.append(row)
                row_labels.append((name, i))
            else:
                zero_rows.append((name, i))
    used = set()
    for row in rows:
        for x in row.values():
            used |= x.free_symbols
    by_kind = {"weight": [], "gate": [], "jacobian": []}
    for s, kind in syms.values():
        if s in used:
            by_kind[kind].append(s)
    return SymbolicCoboundary(rows, row_labels, col_labels, zero_rows, by_kind["weight"], by_kind["gate"],
                              by_kind["jacobian"])


def restrict_columns(S: SymbolicCoboundary, keep_labels) -> SymbolicCoboundary:
    """The symbolic δ_Ω of a larger boundary from that of a smaller one: keep the columns whose labels are in
    ``keep_labels`` (in their order) and drop rows left with no entry (pinning more deletes columns)."""
    pos = {lab: k for k, lab in enumerate(S.col_labels)}
    new_of = {pos[lab]: k for k, lab in enumerate(keep_labels)}
    rows, row_labels, zero_rows = [], [], list(S.zero_rows)
    for row, lab in zip(S.rows, S.row_labels):
        r = {new_of[c]: x for c, x in row.items() if c in new_of}
        if r:
            rows.append(r)
            row_labels.append(lab)
        else:
            zero_rows.append(lab)
    used = set()
    for row in rows:
        for x in row.values():
            used |= x.free_symbols
    return SymbolicCoboundary(rows, row_labels, list(keep_labels), zero_rows, [s for s in S.weights if s in used],
                              [s for s in S.gates if s in used], [s for s in S.jacobians if s in used])


def numeric_rows(A) -> list:
    """The rows of a dense array as ``{col: value}`` dicts (exact zeros dropped), for :func:`eliminate`."""
    A = np.asarray(A, dtype=float)
    return [{int(c): float(A[r, c]) for c in np.flatnonzero(A[r])} for r in range(A.shape[0])]


def _grade(x) -> int:
    """0: identically 1; 1: another nonzero constant; 2: an expression that may vanish."""
    if isinstance(x, (float, int, np.floating)):
        return 0 if x == 1 else 1
    if x == 1:
        return 0
    return 1 if x.is_number else 2


@dataclass
class Elimination:
    """The result of singleton-row elimination: ``pivots`` [(row, col, entry)] in order, ``extra_rows`` (rows
    left with no column: a tall matrix), ``stuck_rows`` (rows with ≥ 2 remaining entries when no singleton
    row is left: no triangular arrangement), ``uncovered`` (columns never pivoted)."""

    pivots: list
    extra_rows: list
    stuck_rows: list
    uncovered: list
    n_rows: int
    n_cols: int

    @property
    def triangular(self) -> bool:
        """Every column pivoted, nothing stuck: the pivot rows form a square triangular block."""
        return not self.stuck_rows and not self.uncovered

    @property
    def square_unit(self) -> bool:
        """Square, triangular in the pivot order, every pivot identically 1."""
        return (self.triangular and not self.extra_rows and self.n_rows == self.n_cols
                and all(_grade(x) == 0 for _, _, x in self.pivots))

    @property
    def constant_pivots(self) -> bool:
        """Every pivot a nonzero constant (so det of the pivot block is a nonzero constant)."""
        return all(_grade(x) <= 1 for _, _, x in self.pivots)

    @property
    def row_order(self) -> list:
        return [r for r, _, _ in self.pivots]

    @property
    def col_order(self) -> list:
        return [c for _, c, _ in self.pivots]

    def vertex_order(self, S) -> list[str]:
        """The pivots grouped as ``"edge -> stalk"`` blocks (consecutive pivots of one edge onto one stalk)."""
        out: list[str] = []
        for r, c, _ in self.pivots:
            item = f"{S.row_labels[r][0]} -> {S.col_labels[c][0]}"
            if not out or out[-1] != item:
                out.append(item)
        return out

    def coordinate_order(self, S) -> tuple[list[str], list[str]]:
        rows = [f"{S.row_labels[r][0]}[{S.row_labels[r][1]}]" for r in self.row_order]
        cols = [f"{S.col_labels[c][0]}[{S.col_labels[c][1]}]" for c in self.col_order]
        return rows, cols


def eliminate(rows: list, n_cols: int) -> Elimination:
    """Singleton-row elimination of a sparse matrix given as ``rows[r] = {col: entry}`` (see the module
    docstring). Among the available singleton rows it prefers a pivot equal to 1, then a nonzero constant,
    then the lowest row index, so the result is deterministic.

    >>> e = eliminate([{0: 1.0}, {0: -2.0, 1: 1.0}, {1: 1.0}], 2)    # tall: the last row is extra
    >>> [(r, c) for r, c, _ in e.pivots], e.extra_rows, e.triangular, e.square_unit
    ([(0, 0), (1, 1)], [2], True, False)
    >>> eliminate([{0: 1.0, 1: 1.0}, {0: 1.0, 1: -1.0}], 2).stuck_rows   # no singleton row
    [0, 1]
    """
    live = [dict(r) for r in rows]
    col_rows: dict = {c: set() for c in range(n_cols)}
    for r, row in enumerate(live):
        for c in row:
            col_rows[c].add(r)
    active_rows = set(range(len(live)))
    active_cols = set(range(n_cols))
    heap = []
    for r, row in enumerate(live):
        if len(row) == 1:
            (c, x), = row.items()
            heapq.heappush(heap, (_grade(x), r))
    pivots, extra = [], []
    while heap:
        _, r = heapq.heappop(heap)
        if r not in active_rows or len(live[r]) != 1:
            continue
        (c, x), = live[r].items()
        pivots.append((r, c, x))
        active_rows.discard(r)
        active_cols.discard(c)
        for r2 in col_rows.pop(c):
            if r2 == r or r2 not in active_rows:
                continue
            live[r2].pop(c, None)
            if len(live[r2]) == 1:
                (_, x2), = live[r2].items()
                heapq.heappush(heap, (_grade(x2), r2))
            elif not live[r2]:
                active_rows.discard(r2)
                extra.append(r2)
    stuck = sorted(r for r in active_rows if len(live[r]) >= 2)
    extra += sorted(r for r in active_rows if not live[r])
    return Elimination(pivots, sorted(extra), stuck, sorted(active_cols), len(rows), n_cols)


def berkowitz_det(S: SymbolicCoboundary, e: Elimination):
    """det of δ_Ω in the pivot order, recomputed by sympy (Berkowitz) and expanded: a polynomial."""
    import sympy

    A = S.matrix(e.row_order, e.col_order)
    return sympy.expand(A.det(method="berkowitz"))





# ----------------------------------------------------------------------------------------------
# exact linear algebra over ℚ for consensus problems (sympy's DomainMatrix over QQ)


def qq_matrix(A):
    """A dense float array as a sympy ``DomainMatrix`` over ℚ, each entry the rational it was written as
    (:func:`~sheafdsl.analysis.cohomology.to_rational`)."""
    from sympy import QQ
    from sympy.polys.matrices import DomainMatrix

    A = np.asarray(A, dtype=float)
    rows: dict = {}
    for (r, c), x in np.ndenumerate(A):
        if x != 0.0:
            rows.setdefault(r, {})[c] = QQ.convert(to_rational(x))
    return DomainMatrix(rows, A.shape, QQ)


def qq_rank(A) -> int:
    """rank over ℚ of a float array read exactly."""
    A = np.asarray(A, dtype=float)
    return 0 if A.size == 0 else int(qq_matrix(A).rank())


def qq_nullspace(A) -> list:
    """A basis of ker A over ℚ (A a float array read exactly): a list of vectors, each a list of sympy Rationals."""
    import sympy
    from sympy import QQ

    A = np.asarray(A, dtype=float)
    n = A.shape[1]
    if n == 0:
        return []
    if A.shape[0] == 0:
        return [[sympy.Integer(int(i == j)) for i in range(n)] for j in range(n)]
    ns = qq_matrix(A).to_dense().nullspace()
    rows, cols = ns.shape
    dense = ns.to_list()
    return [[QQ.to_sympy(dense[i][j]) for j in range(cols)] for i in range(rows)]


def float_nullspace(A, tol: float | None = None) -> tuple[list, float]:
    """An orthonormal basis of the numeric kernel of A (singular values ≤ tol = max(M, N)·ε·σ_max count as 0)
    as a list of float vectors, and the tolerance."""
    A = np.asarray(A, dtype=float)
    n = A.shape[1]
    if n == 0:
        return [], 0.0
    if A.shape[0] == 0:
        return [row for row in np.eye(n)], 0.0
    _, s, Vt = np.linalg.svd(A, full_matrices=True)
    if tol is None:
        tol = max(A.shape) * np.finfo(float).eps * (float(s[0]) if s.size else 0.0)
    rank = int(np.sum(s > tol))
    return [Vt[k] for k in range(rank, n)], float(tol)


__all__ = ["SymbolicCoboundary", "symbolic_coboundary", "restrict_columns", "Elimination", "eliminate", "numeric_rows", "berkowitz_det",
           "qq_matrix", "qq_rank", "qq_nullspace", "float_nullspace"]
