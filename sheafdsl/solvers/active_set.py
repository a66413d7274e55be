"""The exact and cg solvers of a general sheaf: a forward sweep, or the active-set driver with a general
piece solver.

**Forward sweep.** When δ_Ω is unitriangular (every free stalk is the head of exactly one edge, whose head
map is the identity, in a DAG order; see ``Problem.sweep_plan``), setting each head c_v = F_u(c_u) + o_e in
topological order makes every discord zero: E = 0, the global minimum, in one pass. On a network with only
its input pinned this is the forward pass.

**Active set.** Each free gated unit t (a free coordinate that is the tail of a ReLU edge) has a state
(:mod:`.driver`: ON, SLIDE, OFF). For fixed states E is convex on the piece (quadratic, plus cross-entropy
terms for nonlinear edges with pinned heads) and agrees there with the true, piecewise energy. The loop
(start, ratio test, release rule, cycle guard, limits, compaction) is the driver's; :class:`GeneralPiece`
gives it each piece's exact minimiser over the face of its states (sliding units held at 0), by one of

- ``elimination``: along the unitriangular structure that releasing the pins on head stalks leaves
  (:class:`Elimination`, a k × k system per example, k = released pins + sliding units; a network pinned
  at both ends, skip edges included; its rows J stay shared by the batch until a gate, :mod:`.shared_rows`);
- ``dense``: a batched dense Newton step (Cholesky-checked; Newton iterations with Armijo backtracking on
  a piece with cross-entropy terms);
- ``lu``: one shared sparse LU of L_free (a large sheaf without free gates);
- ``cg``: matrix-free batched conjugate gradients (``method="cg"``).

Every piece solver gives the same piece minimiser, so the driver takes the same decisions and every one
reaches the same equilibrium (to round-off; cg to its tolerance).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..errors import Diagnostic, SheafError
from ..ir.maps import ParamMap, ReluGate
from .result import SolveResult

from .driver import OFF, ON, RELEASE_TOL, SLIDE, active_set as drive, loop_limits
from .shared_rows import SharedRows

#: the general piece solvers (see the module docstring)
PIECES = ("elimination", "dense", "lu", "cg")

#: a unit with a one-sided descent rate above CONSISTENT_TOL · scale is reported inconsistent
CONSISTENT_TOL = 1e-7
#: the largest number of free coordinates the dense (exact) solver assembles Hessians for
DENSE_LIMIT = 4000


# ----------------------------------------------------------------------------------------------
# forward sweep


def run_sweep(ops, plan, c):
    """Set each head c_v = F_u(c_u) + o_e along ``plan`` (in place) and return c.

    Matmuls and ReLUs write straight into the head's column block (contiguous when c is column-major, as
    :func:`solve` allocates it for a sweep; any layout is correct).
    """
    xp = ops.xp
    for e in plan:
        x = c[:, e.src]
        out = c[:, e.dst]
        m = e.src_map
        if isinstance(m, ReluGate):
            xp.maximum(x, 0.0, out=out)
        elif isinstance(m, ParamMap):
            xp.matmul(x, ops.params[m.param].T, out=out)
        else:
            out[...] = ops._map(e, "src", x, nonlinear=True)
        if e.bias is not None:
            out += ops.o[e.rows]
    return c


class _LazyGates(Mapping):
    """edge -> 1[c_u ≥ 0] at a swept solution, computed on first access (most callers never look)."""

    def __init__(self, c, edges):
        self._c, self._edges, self._cache = c, {e.name: e for e in edges}, {}

    def __getitem__(self, name):
        if name not in self._cache:
            e = self._edges[name]
            self._cache[name] = (self._c[:, e.src] >= 0).astype(self._c.dtype)
        return self._cache[name]

    def __iter__(self):
        return iter(self._edges)

    def __len__(self):
        return len(self._edges)


def sweep(prob, c, *, record_trace=False) -> SolveResult:
    """The harmonic extension of a unitriangular problem by one forward sweep (E = 0 and ∇E = 0 exactly, so
    the energy and residual are reported as zeros rather than recomputed)."""
    xp, ops = prob.xp, prob.ops
    run_sweep(ops, prob.s.sweep, c)
    B = c.shape[0]
    zeros = xp.zeros(B)
    ones = xp.ones(B, dtype=bool)
    return SolveResult(c, ones, 1, zeros, zeros.copy(), ones.copy(), _LazyGates(c, ops.relu_edges), 0,
                       trace=zeros[None, :].copy() if record_trace else None, method="exact", layout=ops.vertex,
                       sliding=xp.zeros(B, dtype=np.int64))


# ----------------------------------------------------------------------------------------------
# shared pieces (also used by the diffusion)


def scale(prob, c):
    """‖∇_{c_Ω} E‖ at c_Ω = 0 per example (1 where it is 0): the forcing by the pins, for relative norms."""
    xp, s = prob.xp, prob.s
    cz = c.copy()
    cz[:, s.free] = 0.0
    g, _ = prob.gradient(cz, prob.gates_from(cz, xp.zeros((c.shape[0], len(s.gated_host)))))
    g = g[:, s.free]
    if len(s.elim_host):
        g[:, xp.asarray(s.pos[s.elim_host])] = 0.0
    nrm = xp.sqrt((g * g).sum(axis=1))
    return xp.where(nrm > 0, nrm, 1.0)


def piece_gradient(prob, c, state):
    """Gradient on the piece of ``state`` at c (sliding units take gate 0, so their entry is g_off).

    Returns (g (B, n), g_on (B, u), g_off (B, u), r (B, M)).
    """
    xp, s = prob.xp, prob.s
    unit_gate = (state == ON).astype(c.dtype)
    gfull, r = prob.gradient(c, prob.gates_from(c, unit_gate))
    g = gfull[:, s.free]
    if len(s.elim_host):
        g[:, xp.asarray(s.pos[s.elim_host])] = 0.0
    S = prob.slide_strength(r)
    gg = g[:, s.gated_pos]
    on = state == ON
    g_off = xp.where(on, gg + S, gg)
    g_on = g_off - S
    return g, g_on, g_off, r


def filippov(g, g_on, g_off, state, gpos, xp):
    """(min-norm Filippov gradient (B, n), piece gradient (B, n), rate right (B, u), rate left (B, u)).

    At a sliding unit the descent rate to the right is −g_on, to the left g_off; the Filippov gradient keeps
    the steeper descending one-sided derivative (0 when neither descends), the piece gradient zeroes it.
    """
    slide = state == SLIDE
    right, left = -g_on, g_off
    v = xp.where(right >= left, xp.where(right > 0, g_on, 0.0), xp.where(left > 0, g_off, 0.0))
    gm, gp = g.copy(), g.copy()
    gm[:, gpos] = xp.where(slide, v, g[:, gpos])
    gp[:, gpos] = xp.where(slide, 0.0, g[:, gpos])
    return gm, gp, xp.where(slide, right, -np.inf), xp.where(slide, left, -np.inf)


def finalize(prob, c, state, denom, converged, iterations, trace, method, rtol, floor=None):
    """Heads, gates with Filippov multipliers, residual, energy and consistency at the final cochain.

    An example converges when its residual ‖g_F‖ / denom ≤ ``rtol``, or when ‖g_F‖ is below ``floor``
    (a callable giving the side resolution's gradient ε_z·λ_max: putting a unit within ε_z of z = 0 exactly
    on its side moves the gradient by up to that much, so a forcing far below it, pins and parameters all
    but zero, cannot be resolved relative to itself)."""
    xp, s, ops = prob.xp, prob.s, prob.ops
    prob.finish_heads(c)
    z = c[:, s.gated]
    state = xp.where(state == SLIDE, SLIDE, xp.where(z > 0, ON, xp.where(z < 0, OFF, state)))
    g, g_on, g_off, r = piece_gradient(prob, c, state)
    gm, _, right, left = filippov(g, g_on, g_off, state, s.gated_pos, xp)
    residual = xp.sqrt((gm * gm).sum(axis=1)) / denom
    tol = CONSISTENT_TOL * denom[:, None]
    slide = state == SLIDE
    sign_ok = xp.where(state == ON, z >= 0, xp.where(state == OFF, z <= 0, z == 0))
    consistent = (xp.all(sign_ok, axis=1) & ~xp.any((right > tol) | (left > tol), axis=1))
    S = g_off - g_on
    safe = xp.where(xp.abs(S) > 0, S, 1.0)
    mult = xp.where(xp.abs(S) > 0, xp.clip(g_off / safe, 0.0, 1.0), 1.0)
    unit_gate = xp.where(slide, mult, (state == ON).astype(c.dtype))
    gates = prob.gates_from(c, unit_gate)
    energy = prob.energy(c, gates)
    ok = residual <= rtol
    if floor is not None and not bool(xp.all(ok)):
        ok = ok | (residual * denom <= floor())
    converged = converged & consistent & ok
    n_bad = int((~converged).sum())
    if trace is not None:
        trace = xp.stack(trace) if trace else xp.zeros((0, c.shape[0]))
    return SolveResult(c, converged, int(iterations), residual, energy, consistent, gates, n_bad, trace=trace,
                       method=method, layout=ops.vertex, sliding=slide.sum(axis=1), state=state)


def singular_error(prob, H, mask=None, example: int | None = None) -> SheafError:
    """SheafError E504 for a singular L_free (relative H⁰ ≠ 0), naming the free directions."""
    from ..lowering.backend import to_numpy

    H = to_numpy(H)
    keep = np.ones(H.shape[0], dtype=bool) if mask is None else to_numpy(mask).astype(bool)
    Hk = H[np.ix_(keep, keep)]
    w, V = np.linalg.eigh(0.5 * (Hk + Hk.T))
    top = max(float(np.abs(w).max()), 1e-300)
    null = w <= 1e-9 * top
    vecs = np.zeros((int(null.sum()) or 1, H.shape[0]))
    sel = V[:, null] if null.any() else V[:, :1]
    vecs[:, keep] = sel.T
    where = "" if example is None else f" for example {example} (its activation pattern)"
    dirs = prob.describe_directions(vecs)
    return SheafError(Diagnostic(
        "E504", f"L_free is singular{where}: the relative cohomology H⁰(G, U; F) = ker δ_Ω ≠ 0 "
        f"(dimension {int(null.sum())}, λ_min/λ_max = {max(float(w[0]), 0.0) / top:.1e}), so the pins do not "
        f"determine the free stalks; free directions: {dirs}",
        hint="pin a coordinate along each free direction, add a soft pin (`pin v ~ 0 weight 1`), or add edges"))


def check_spd(prob, H, mask=None, offset: int = 0):
    """The Cholesky factor of H (n, n) or (B, n, n); raises :func:`singular_error` unless every H[b] is
    numerically positive definite (finite pivots with p² > 1e-11 · max diag)."""
    xp = prob.xp
    bad, Lc = None, None
    try:
        Lc = xp.linalg.cholesky(H)
        piv = xp.diagonal(Lc, axis1=-2, axis2=-1) ** 2
        dmax = xp.diagonal(H, axis1=-2, axis2=-1).max(axis=-1)
        ok = xp.all(xp.isfinite(piv), axis=-1) & (piv.min(axis=-1) > 1e-11 * dmax)
        if not bool(xp.all(ok)):
            bad = int(xp.flatnonzero(xp.atleast_1d(~ok))[0])
    except np.linalg.LinAlgError:
        w = xp.linalg.eigvalsh(H)
        ok = w.min(axis=-1) > 1e-11 * xp.abs(w).max(axis=-1)
        bad = int(xp.flatnonzero(xp.atleast_1d(~ok))[0])
    if bad is not None:
        m = None if mask is None else (mask[bad] if mask.ndim == 2 else mask)
        raise singular_error(prob, H[bad] if H.ndim == 3 else H, m, None if H.ndim == 2 else bad + offset)
    return Lc


def cho_solve(Lc, b, xp):
    """Solve (L Lᵀ) x = b for a batch of lower Cholesky factors L (B, n, n) and b (B, n).

    Forward and back substitution, O(B n²) (a batched LU solve would redo O(B n³) work); for large n
    the O(n) Python steps lose to LAPACK, so there it solves with the factor directly.
    """
    n = b.shape[1]
    if n > 192:
        y = xp.linalg.solve(Lc, b[..., None])
        return xp.linalg.solve(xp.swapaxes(Lc, -1, -2), y)[..., 0]
    y = xp.empty_like(b)
    for i in range(n):
        y[:, i] = (b[:, i] - (Lc[:, i, :i] * y[:, :i]).sum(axis=1)) / Lc[:, i, i]
    x = xp.empty_like(b)
    for i in range(n - 1, -1, -1):
        x[:, i] = (y[:, i] - (Lc[:, i + 1:, i] * x[:, i + 1:]).sum(axis=1)) / Lc[:, i, i]
    return x


# ----------------------------------------------------------------------------------------------
# inner solvers


def _masked(H, m, xp):
    """Rows/columns of fixed coordinates (m = 0) replaced by the identity (a copy)."""
    return H * m[..., :, None] * m[..., None, :] + xp.eye(H.shape[-1]) * (1.0 - m)[..., None, :]


def _fix_inplace(H, m, xp):
    """In place on a batch H (B, n, n): the rows/columns where m (B, n) is 0 become those of the identity."""
    b, t = xp.nonzero(m == 0)
    if b.shape[0]:
        H[b, t, :] = 0.0
        H[b, :, t] = 0.0
        H[b, t, t] = 1.0
    return H


class SharedSparseFactor:
    """A sparse LU of L_free (shared by every example: a sheaf without free gates), factored once per solve;
    the exact solver's path above :data:`DENSE_LIMIT` free coordinates. ``scipy.sparse.linalg.splu`` under
    numpy, ``cupyx.scipy.sparse.linalg.splu`` under cupy (picked by :func:`sparse_module`)."""

    def __init__(self, prob, mask_host: np.ndarray):
        import scipy.sparse as sp

        from ..lowering.operators import sparse_module

        L = prob.sparse_L_free()
        D = sp.diags(mask_host)
        L = (D @ L @ D + sp.diags(1.0 - mask_host)).tocsc()
        self.L = L
        spla, sparse = sparse_module(prob.xp, linalg=True), sparse_module(prob.xp)
        try:
            self.lu = spla.splu(sparse.csc_matrix(L))
            d = np.abs(_host(self.lu.U.diagonal()))
            ok = d.size == 0 or d.min() > 1e-11 * d.max()
        except RuntimeError:  # SuperLU: "Factor is exactly singular"
            ok = False
        if not ok:
            raise _sparse_singular(prob, L, mask_host)

    def solve(self, rhs):
        return self.lu.solve(rhs.T.copy()).T


def _sparse_singular(prob, L, mask_host) -> SheafError:
    """E504 for a large singular L_free: a null direction by shifted inverse iteration (host)."""
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    n = L.shape[0]
    shift = 1e-9 * max(float(abs(L).max()), 1e-300)
    lu = spla.splu((L + shift * sp.identity(n)).tocsc())
    v = np.random.default_rng(0).normal(size=n) * mask_host
    for _ in range(4):
        v = lu.solve(v) * mask_host
        v /= np.abs(v).max() or 1.0
    lam = float(v @ (L @ v)) / float(v @ v)
    return SheafError(Diagnostic(
        "E504", "L_free is singular: the relative cohomology H⁰(G, U; F) = ker δ_Ω ≠ 0 (Rayleigh quotient "
        f"{lam:.1e} along the direction found), so the pins do not determine the free stalks; free direction: "
        f"{prob.describe_directions(v[None, :])}",
        hint="pin a coordinate along each free direction, add a soft pin (`pin v ~ 0 weight 1`), or add edges"))


def dense_step(prob, c, state, rhs, mask, fixed, shared=None):
    """Δ solving H_S Δ = rhs on the unknowns (mask = 1), Δ = 0 elsewhere; batched, chunked (or one shared
    sparse factorisation)."""
    xp, s = prob.xp, prob.s
    B, n = rhs.shape
    unit_gate = (state == ON).astype(c.dtype)
    if shared is not None:
        return shared.solve(rhs * mask)
    if s.shared_hessian:
        H = _masked(prob.dense_hessian(c[:1], unit_gate[:1], fixed)[0], mask[0], xp)
        check_spd(prob, H, mask[0])
        return xp.linalg.solve(H, (rhs * mask).T).T
    K = int(fixed["cols"].shape[0])
    chunk = max(1, int(2e7 // (n * n + n * max(K, 1))))
    out = xp.empty_like(rhs)
    for a in range(0, B, chunk):
        sl = slice(a, min(B, a + chunk))
        H = _fix_inplace(prob.dense_hessian(c[sl], unit_gate[sl], fixed), mask[sl], xp)
        Lc = check_spd(prob, H, mask[sl], offset=a)
        out[sl] = cho_solve(Lc, rhs[sl] * mask[sl], xp)
    return out


class Elimination:
    """The exact piece solve by elimination along a unitriangular structure (docs/maths.md, "Exact solves").

    Applies when releasing the pins on head stalks makes the problem a sweep (plan T: δ over the relaxed
    free coordinates Ω₀ is unitriangular), every edge is least squares, and no nonlinear map acts on a
    coordinate of Ω₀. For a fixed piece the discords r = T c_Ω₀ + q are then in bijection with c_Ω₀, and the
    constraints (released pins c_R = values, sliding units c_t = 0) read J r = h with J = E_R T⁻¹ (one
    transposed sweep per constraint, batched) and h = values − f_R (f: the sweep with zero discords). So

        min ½ ‖W r‖²  s.t.  J r = h   ⇒   r = W⁻² Jᵀ λ,   (J W⁻² Jᵀ) λ = h,

    a k × k system per example (k = released pins + sliding units, far below the n free coordinates), and
    c = the sweep with discords r. J has full row rank (T is invertible), so J W⁻² Jᵀ ≻ 0 always.
    The result is the same piece minimiser as the dense Newton step, at a fraction of the cost.
    """

    def __init__(self, prob):
        ops, st = prob.ops, prob.s
        self.prob, self.plan = prob, st.warm
        heads = np.zeros(ops.N, dtype=bool)
        for e in ops.edges:
            heads[e.dst] = True
        relaxed_pinned = st.pinned_mask & ~heads
        self.released = np.flatnonzero(st.pinned_mask & heads)  # pins that become constraints
        self.free_src = {e.name: bool(np.any(~relaxed_pinned[e.src])) for e in ops.edges}

    @staticmethod
    def applies(prob) -> bool:
        st = prob.s
        if st.sweep is not None or st.warm is None or st.ce_edges or st.head_edges:
            return False
        heads = np.zeros(prob.ops.N, dtype=bool)
        for e in prob.ops.edges:
            heads[e.dst] = True
        relaxed_pinned = st.pinned_mask & ~heads
        return all(np.all(relaxed_pinned[e.src]) for e in prob.ops.nonlinear_edges)

    def _sweep(self, c, gates, r=None):
        """The sweep along the plan with the given gates and discords r (zero when None), in place."""
        ops = self.prob.ops
        for e in self.plan:
            x = c[:, e.src]
            if isinstance(e.src_map, ReluGate):
                y = x * gates[e.name]
            else:
                y = ops._map(e, "src", x, nonlinear=True)
            if e.bias is not None:
                y = y + ops.o[e.rows]
            if r is not None:
                y = y + r[:, e.rows]
            c[:, e.dst] = y
        return c

    def solve(self, c, state):
        """The minimiser of the piece of ``state`` (B, units) over the face through c (B, N)."""
        prob, ops, xp, st = self.prob, self.prob.ops, self.prob.xp, self.prob.s
        B = c.shape[0]
        gates = prob.gates_from(c, (state == ON).astype(c.dtype))
        slide_any = np.flatnonzero(_host(xp.any(state == SLIDE, axis=0)))
        rows_g = np.concatenate([self.released, st.gated_host[slide_any]]).astype(np.int64)
        k, n_rel = len(rows_g), len(self.released)
        f = self._sweep(c.copy(), gates)
        if k == 0:
            return f
        # J = E_R T⁻¹ by transposed sweeps, its blocks shared by the batch until a gate (.shared_rows)
        J = SharedRows(ops, self.plan, gates, rows_g, self.free_src, B, xp)
        K = J.gram()
        h = -f[:, xp.asarray(rows_g)]
        h[:, :n_rel] += c[:, xp.asarray(self.released)]
        if len(slide_any):  # a unit row is a constraint only where that unit slides
            m = xp.ones((B, k))
            m[:, n_rel:] = (state[:, xp.asarray(slide_any)] == SLIDE).astype(c.dtype)
            h = h * m
            K = _fix_inplace(K, m, xp)
        Lc = check_spd(prob, K)
        lam = cho_solve(Lc, h, xp)
        r = J.pull(lam)
        out = self._sweep(c.copy(), gates, r)
        out[:, st.pinned] = c[:, st.pinned]
        return out


def cg_step(prob, c, state, rhs, mask, tol, maxit, lam):
    """Matrix-free batched conjugate gradients for H_S Δ = rhs on the unknowns; returns (Δ, steps)."""
    xp = prob.xp
    unit_gate = (state == ON).astype(c.dtype)
    gates = prob.gates_from(c, unit_gate)
    x = xp.zeros_like(rhs)
    r = rhs * mask
    p = r.copy()
    rs = (r * r).sum(axis=1)
    steps = 0
    for _ in range(maxit):
        todo = xp.sqrt(rs) > tol
        if not bool(xp.any(todo)):
            break
        Ap = prob.hvp(p, c, unit_gate, gates) * mask
        pAp = (p * Ap).sum(axis=1)
        pp = (p * p).sum(axis=1)
        sing = todo & (pAp <= 1e-12 * lam * pp)
        if bool(xp.any(sing)):
            b = int(xp.flatnonzero(sing)[0])
            H = prob.dense_hessian(c[b:b + 1], unit_gate[b:b + 1])[0] if prob.s.n <= DENSE_LIMIT else None
            if H is not None:
                raise singular_error(prob, _masked(H, mask[b], xp), mask[b])
            raise SheafError(Diagnostic("E504", "L_free is singular: relative H⁰ ≠ 0; free direction: "
                                        + prob.describe_directions(np.asarray(p[b].get() if hasattr(p, "get") else p[b]))))
        a = xp.where(todo, rs / xp.where(todo, pAp, 1.0), 0.0)
        x += a[:, None] * p
        r -= a[:, None] * Ap
        rs_new = (r * r).sum(axis=1)
        beta = xp.where(todo, rs_new / xp.where(rs > 0, rs, 1.0), 0.0)
        p = r + beta[:, None] * p
        rs = rs_new
        steps += 1
    return x, steps


# ----------------------------------------------------------------------------------------------
# the general piece solver


def choose_piece(prob, method: str) -> str:
    """The piece solver for ``method`` ("exact" | "cg") from the problem's structure facts."""
    s = prob.s
    if method == "cg":
        return "cg"
    if s.shared_hessian and s.n > DENSE_LIMIT:
        return "lu"
    if not s.ce_edges and Elimination.applies(prob):
        return "elimination"
    return "dense"


class GeneralPiece:
    """The driver's piece solver for any sheaf: the exact minimiser of the piece of states S over the face
    through the pins (sliding units at 0). Unit values: the gated coordinates c[:, gated] (B, u).

    ``c0`` (B, N): the pins (free coordinates are ignored); ``denom`` (B,): the force scale
    ‖∇_{c_Ω} E(c_Ω = 0)‖, which sets the release tolerance and the inner tolerances.
    """

    subsets = True

    def __init__(self, prob, c0, inner: str, rtol: float, denom, eps_z: float):
        xp, s = prob.xp, prob.s
        self.prob, self.xp, self.c0, self.inner, self.rtol, self.denom, self.eps_z = prob, xp, c0, inner, rtol, denom, eps_z
        # a sliding unit whose slope exceeds rtol would fail finalize's residual test: release it
        self.release_tol = min(RELEASE_TOL, rtol)
        n = s.n
        if inner == "dense" and n > DENSE_LIMIT and not s.shared_hessian:
            raise SheafError(Diagnostic("E510", f"the exact solver assembles dense {n} × {n} Hessians per example; "
                                        f"that is above its limit of {DENSE_LIMIT} free coordinates",
                                        hint="use the matrix-free solver: --solver cg (method='cg')"))
        self.base_mask = xp.ones(n)
        if len(s.elim_host):
            self.base_mask[xp.asarray(s.pos[s.elim_host])] = 0.0
        # a piece is a quadratic unless a cross-entropy term or a smooth map on a free stalk (a "hidden"
        # nonlinear edge) acts on it: then Newton iterations (Gauss-Newton for the hidden maps)
        self.quadratic = not s.ce_edges and not any(r == "hidden" for r in s.role.values())
        self.shared = SharedSparseFactor(prob, _host(self.base_mask)) if inner == "lu" else None
        self.elim = Elimination(prob) if inner == "elimination" else None
        self.fixed = prob.dense_fixed() if inner == "dense" else None
        self.lam = prob.hessian_bound() if inner == "cg" else None
        self.cg_steps = 0
        nu = len(s.gated_host)
        if s.shared_hessian and 0 < n <= DENSE_LIMIT:  # a stationary start must not hide a singular L_free
            fixed_h = self.fixed if self.fixed is not None else prob.dense_fixed()
            H = prob.dense_hessian(c0[:1], xp.zeros((1, nu)), fixed_h)[0]
            check_spd(prob, _masked(H, self.base_mask, xp), self.base_mask)
        self._rows = self._data = None

    def _gather(self, rows):
        if rows is None:
            return self.c0, self.denom
        if rows is not self._rows:
            self._rows, self._data = rows, (self.c0[rows], self.denom[rows])
        return self._data

    def _step(self, c, S, mask, da):
        """Δ with H_S Δ = −g_S(c) on the unknowns (mask = 1), and the piece gradient at c."""
        prob = self.prob
        g, _, _, _ = piece_gradient(prob, c, S)
        rhs = -g * mask
        if self.inner == "cg":
            step, k = cg_step(prob, c, S, rhs, mask, 0.1 * self.rtol * da, max(100, 20 * prob.s.n), self.lam)
            self.cg_steps += k
            return step * mask, g
        return dense_step(prob, c, S, rhs, mask, self.fixed, self.shared) * mask, g

    def solve(self, S, rows, warm, fs):
        prob, xp, s = self.prob, self.xp, self.prob.s
        c0, da = self._gather(rows)
        ok = None
        if self.elim is not None:
            cbar = self.elim.solve(c0, S)
        else:
            mask = xp.broadcast_to(self.base_mask, (c0.shape[0], s.n)).copy()
            mask[:, s.gated_pos] = (S != SLIDE).astype(c0.dtype)
            cbar = c0.copy() if warm is None else warm.copy()
            cbar[:, s.pinned] = c0[:, s.pinned]
            cbar[:, s.gated] = xp.where(S == SLIDE, 0.0, cbar[:, s.gated])
            if self.quadratic:  # one exact Newton step minimises a quadratic piece
                step, _ = self._step(cbar, S, mask, da)
                cbar[:, s.free] += step
            else:  # Newton with Armijo backtracking on the convex piece (cross-entropy terms)
                ok = xp.zeros(c0.shape[0], dtype=bool)
                polished = False
                for _ in range(60):
                    step, g = self._step(cbar, S, mask, da)
                    ok = xp.sqrt(((g * mask) ** 2).sum(axis=1)) <= 0.1 * self.rtol * da
                    if bool(ok.all()):
                        if polished:
                            break
                        polished = True  # one more (full, quadratically convergent) step: round-off level
                    alpha = _backtrack(prob, cbar, S, g, step, xp.ones(c0.shape[0]))
                    cbar[:, s.free] += alpha[:, None] * step
        z = cbar[:, s.gated]
        if fs.shape[0]:  # a sliding unit is held at z = 0 exactly (eliminated, it comes back as ±1e-17)
            u = z.shape[1]
            z[fs // u, fs % u] = 0.0
        return _GeneralSolution(z, ok, {"c": cbar}, None if self.quadratic else cbar, self, S, da)

    def result(self, dr, record_trace=False, start_energy=None, method="exact") -> SolveResult:
        c = dr.fields["c"].copy()
        xp, g, S = self.xp, self.prob.s.gated, dr.S
        z = c[:, g]  # a settled unit is on its side to ε_z: put it there exactly
        c[:, g] = xp.where(S == ON, xp.maximum(z, 0.0), xp.where(S == OFF, xp.minimum(z, 0.0), 0.0))
        trace = None
        if record_trace:  # the energy at the start and at the equilibrium (the driver does not keep the path)
            trace = [start_energy, self.prob.energy(c)]
        iterations = self.cg_steps if self.inner == "cg" else dr.iterations
        lam = self.lam
        return finalize(self.prob, c, dr.S, self.denom, dr.consistent, iterations, trace, method, self.rtol,
                        floor=lambda: self.eps_z * (lam if lam is not None else self.prob.hessian_bound()))


class _GeneralSolution:
    __slots__ = ("z", "ok", "fields", "warm", "_piece", "_S", "_da", "_g")

    def __init__(self, z, ok, fields, warm, piece, S, da):
        self.z, self.ok, self.fields, self.warm = z, ok, fields, warm
        self._piece, self._S, self._da, self._g = piece, S, da, None

    def slopes(self, fs):
        """g_L = g_off (the inactive side's slope) and g_R = g_on at the sliding units ``fs``."""
        _, g_on, g_off, _ = piece_gradient(self._piece.prob, self.fields["c"], self._S)
        return g_off.ravel()[fs], g_on.ravel()[fs]

    def scale(self, r):
        return self._da[r]


def active_set(prob, c, *, inner="dense", rtol=1e-10, maxiter=None, record_trace=False, state=None,
               method="exact") -> SolveResult:
    """Minimise E over c_Ω from the feasible start c (B, N) by the driver with the piece solver ``inner``.

    ``state``: the start's unit states (B, u) (a warm start's); default from the signs of the gated
    coordinates (z ≥ 0: ON, z < 0: OFF).
    """
    xp, s = prob.xp, prob.s
    z = c[:, s.gated]
    if state is None:
        state = xp.where(z >= 0, ON, OFF).astype(np.int8)
    denom = scale(prob, c)
    pins = c[:, s.pinned]
    pins_max = float(xp.abs(pins).max()) if pins.size else 0.0
    maxiter, eps_z = loop_limits(len(s.gated_host), pins_max, maxiter)
    piece = GeneralPiece(prob, c, inner, rtol, denom, eps_z)
    E0 = prob.energy(c) if record_trace else None
    dr = drive(piece, z, state, maxiter=maxiter)
    return piece.result(dr, record_trace, E0, method)


def _backtrack(prob, c, state, g, step, alpha):
    """Armijo backtracking on the (piecewise) energy along c + α·step, α ≤ the ratio-test bound."""
    xp, s = prob.xp, prob.s
    unit_gate = (state == ON).astype(c.dtype)
    gates = prob.gates_from(c, unit_gate)
    E0 = prob.energy(c, gates)
    slope = (g * step).sum(axis=1)
    a = alpha.copy()
    # a Newton decrement −gᵀΔ this small is below what the energy can resolve in floating point: take the
    # step (full-step Newton converges quadratically there)
    todo = -slope > 1e-10 * (1.0 + xp.abs(E0))
    for _ in range(50):
        trial = c.copy()
        trial[:, s.free] = c[:, s.free] + a[:, None] * step
        E = prob.energy(trial, gates)
        ok = E <= E0 + 1e-4 * a * slope
        todo = todo & ~ok
        if not bool(xp.any(todo)):
            break
        a = xp.where(todo, 0.5 * a, a)
    return a


def _host(a):
    get = getattr(a, "get", None)
    return get() if callable(get) else np.asarray(a)
