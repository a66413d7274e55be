"""The equilibria of a learned consensus model and their gradients (docs/admm.md "Learning").

For a batch of B examples with coefficients C (:class:`sheafdsl.lowering.learned.Coefficients`: Q per agent,
q, the maps' values F), the agents' stalks x ∈ R^n minimise the strictly convex quadratic

    ½ xᵀQx + qᵀx + ½ ‖W_S D_S x‖²   subject to   D_H x = 0

(D = F_dst − F_src, its soft rows S with weights w_e and hard rows H). Three ways to reach it and to
differentiate through it, all against one array module ``xp``:

- :func:`admm`: K iterations of the edge-based Sheaf-ADMM (Seely et al.; the ``admm-local`` of
  :mod:`.admm` with a per-example Q and a fixed ρ), from y = μ = 0. Every edge e keeps a copy y_{e,s} of
  each side's image F_{s◁e} x_s, with scaled duals μ:

      x_v ← (Q_v + ρK_v)⁻¹ (ρ Σ_{(e,s) at v} F_{s◁e}ᵀ (y_{e,s} − μ_{e,s}) − q_v),   K_v = Σ F_{s◁e}ᵀF_{s◁e}
      a = F x + μ;   y_u = a_u + θ_e (a_v − a_u),  y_v = a_v − θ_e (a_v − a_u)
      μ ← a − y

  with θ_e = ½ on a hard edge (the projection onto y_v = y_u) and w_e²/(ρ + 2w_e²) on a soft one (its prox).
  The stacked F = [F_src; F_dst] (2M × n) and T (the edge step) are linear, so each iteration is linear in
  (y, μ); :func:`admm_vjp` is reverse mode through the K steps with the adjoint of each step written out
  (the prox: one solve with the same symmetric (Q_v + ρK_v); the projection: T is symmetric; the dual),
  over the last ``window`` steps only when asked (truncated backpropagation).
- :func:`kkt`: the fixed point of every ADMM variant, the KKT point of the problem,
  [[H, Aᵀ], [A, 0]] [x; λ] = [−q; 0] with H = Q + D_SᵀW²D_S and A = D_H, by the Schur complement
  S = A H⁻¹ Aᵀ (+ a tiny εI and refinement steps, for the redundant rows of cycles of hard edges);
  :func:`kkt_vjp` is one adjoint solve of the same system, [[H, Aᵀ], [A, 0]] [g; ν] = [∂ℓ/∂x; 0], and
  dℓ/dθ = −[g; ν]ᵀ ∂_θ [Hx + q + Aᵀλ; Ax]: exact gradients of the equilibrium in memory independent of K.
- :func:`nudged`: the equilibrium with the decoder's loss added to the energy with weight β (the target
  pinned softly: the two-sided equilibrium), by Newton steps on the same KKT system; and
  :func:`energy_grads`, ∂_θ of the energy at an equilibrium, each coefficient from its own term (the local
  rule: what a parameter's own objective or edge sees).

Every gradient comes back as the gradients of the coefficients: ``Qbar`` (per group (B, V, d, d)), ``qbar``
(n, B) and ``Fbar`` (nnz,), which :func:`sheafdsl.lowering.learned.coefficient_grads` maps to parameters.
"""

from __future__ import annotations

import numpy as np

from ..errors import Diagnostic, SheafError
from ..lowering.learned import Coefficients, LearnedStructure, decode_loss


def _err(code: str, msg: str, hint: str | None = None) -> SheafError:
    return SheafError(Diagnostic(code, msg, hint=hint))


def _gather(g, v, xp):
    """(B, V, d) from an (n, B) array: the coordinates of the group's agents."""
    if g.start is not None:
        return xp.moveaxis(v[g.start:g.start + g.V * g.d].reshape(g.V, g.d, v.shape[1]), 2, 0)
    return xp.moveaxis(v[xp.asarray(g.cols)], 2, 0)


def _scatter(g, out, val, xp):
    if g.start is not None:
        out[g.start:g.start + g.V * g.d] = xp.moveaxis(val, 0, 2).reshape(g.V * g.d, -1)
        return
    out[xp.asarray(g.cols)] = xp.moveaxis(val, 0, 2)


def _apply_blocks(S, blocks, v, xp):
    """blockdiag(blocks) v for v (n, B), blocks per group (B, V, d, d)."""
    out = xp.empty_like(v)
    for g, Mb in zip(S.groups, blocks):
        _scatter(g, out, (Mb @ _gather(g, v, xp)[..., None])[..., 0], xp)
    return out


def _pattern_outer(S, rows, cols, U, V, xp):
    """Σ_b U[rows_k, b] V[cols_k, b] for every entry k of the maps' pattern: (nnz,)."""
    return (U[xp.asarray(rows)] * V[xp.asarray(cols)]).sum(1)


class Iterates:
    """What :func:`admm` leaves: ``x`` (n, B) after the last step, the final ``y`` and ``mu`` (2M, B), the primal
    residual ‖Fx − y‖ and dual residual ρ‖Fᵀ(y − y_prev)‖ per step (``primal``, ``dual``: (K,) maxima over the
    batch), and the tape of the differentiated steps."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


class _ADMMOps:
    """The per-batch operators of Sheaf-ADMM: F, the blocks (Q_v + ρK_v)⁻¹, the edge step's θ."""

    def __init__(self, S: LearnedStructure, C: Coefficients, rho: float, xp):
        self.S, self.C, self.rho, self.xp = S, C, float(rho), xp
        self.F2, self.D = S.operators(C.F, xp)
        K = (self.F2.T @ self.F2)
        K = K.toarray() if hasattr(K, "toarray") else K
        self.K = [K[xp.asarray(g.cols)[:, :, None], xp.asarray(g.cols)[:, None, :]] for g in S.groups]  # (V, d, d)
        self.Minv = []
        for Qg, Kg in zip(C.Q, self.K):
            Mg = Qg + self.rho * Kg[None]
            try:
                self.Minv.append(xp.linalg.inv(Mg))
            except Exception as exc:  # numpy's LinAlgError, cupy's
                raise _err("E554", f"an agent's prox system (Q_v + ρK_v) is singular ({exc})",
                           "every agent needs Q_v ≻ 0 (an encoded objective) or edges that fix its stalk") from None
        w2 = xp.asarray(S.w2)[:, None]
        self.theta = xp.where(xp.asarray(S.hard)[:, None], 0.5, w2 / (self.rho + 2.0 * w2))

    def edge(self, a):
        """The edge step T a (projection / prox of each edge's two copies); T is symmetric."""
        M = self.S.M
        au, av = a[:M], a[M:]
        r = self.theta * (av - au)
        return self.xp.concatenate([au + r, av - r], axis=0)


def admm(S: LearnedStructure, C: Coefficients, *, iterations: int, rho: float = 1.0, window: int | None = None,
         xp=np, trace: bool = False, ops: _ADMMOps | None = None, y0=None, mu0=None) -> Iterates:
    """K = ``iterations`` steps of Sheaf-ADMM from y = μ = 0 (or ``y0``, ``mu0``: (2M, B), held constant by
    :func:`admm_vjp`; see the module docstring). ``window``: how many of the last steps to record for
    :func:`admm_vjp` (None: none; 0 or ≥ K: all). ``trace``: record the residuals per step."""
    ops = ops or _ADMMOps(S, C, rho, xp)
    B = C.B
    y = xp.zeros((2 * S.M, B)) if y0 is None else y0
    mu = xp.zeros((2 * S.M, B)) if mu0 is None else mu0
    x = xp.zeros((S.n, B))
    K = int(iterations)
    taped_from = K if window is None else (0 if window <= 0 or window >= K else K - window)
    tape = []
    primal, dual = [], []
    for k in range(K):
        ym = y - mu
        r = ops.rho * (ops.F2.T @ ym) - C.q
        x = _apply_blocks(S, ops.Minv, r, xp)
        a = ops.F2 @ x + mu
        y_new = ops.edge(a)
        mu = a - y_new
        if trace:
            primal.append(float(xp.sqrt(((mu) ** 2).sum(0)).max()) if S.M else 0.0)
            dual.append(float(ops.rho * xp.sqrt(((ops.F2.T @ (y_new - y)) ** 2).sum(0)).max()) if S.M else 0.0)
        if k >= taped_from:
            tape.append((x, ym))
        y = y_new
        if not bool(xp.isfinite(x).all()):
            raise _err("E555", f"Sheaf-ADMM diverged at iteration {k + 1} (non-finite stalks)",
                       "lower the learning rate, or raise rho")
    return Iterates(x=x, y=y, mu=mu, tape=tape, ops=ops, primal=np.array(primal), dual=np.array(dual),
                    iterations=K, window=len(tape))


def admm_vjp(it: Iterates, xbar, xp=np):
    """Reverse mode through the recorded steps of :func:`admm`: the gradients (Qbar, qbar, Fbar) of ⟨xbar, x_K⟩.

    Per step (forward: r = ρFᵀ(y − μ) − q, x' = M⁻¹r, a = Fx' + μ, y' = Ta, μ' = a − y'), from the adjoints
    (x̄', ȳ', μ̄') of its outputs: ā = T(ȳ' − μ̄') + μ̄', x̄ = x̄' + Fᵀā, r̄ = M⁻¹x̄, then
    ȳ = ρFr̄, μ̄ = ā − ρFr̄, M̄ −= r̄x'ᵀ, q̄ −= r̄, F̄ += āx'ᵀ + ρ(y − μ)r̄ᵀ (on the pattern). M = Q + ρK with
    K = FᵀF gives Q̄ = M̄ and F̄ += F(K̄ + K̄ᵀ), K̄ = ρ Σ_b M̄.
    """
    ops = it.ops
    S, rho = ops.S, ops.rho
    B = xbar.shape[1]
    ybar = xp.zeros((2 * S.M, B))
    mubar = xp.zeros((2 * S.M, B))
    Mbar = [xp.zeros_like(m) for m in ops.Minv]
    qbar = xp.zeros((S.n, B))
    Fbar = xp.zeros(S.nnz)
    first = True
    for x_new, ym in reversed(it.tape):
        abar = ops.edge(ybar - mubar) + mubar
        xb = ops.F2.T @ abar
        if first:
            xb = xb + xbar
            first = False
        rbar = _apply_blocks(S, ops.Minv, xb, xp)
        for gi, g in enumerate(S.groups):
            Mbar[gi] -= xp.einsum("bvi,bvj->bvij", _gather(g, rbar, xp), _gather(g, x_new, xp))
        qbar -= rbar
        Frb = ops.F2 @ rbar
        Fbar += _pattern_outer(S, S.rows2, S.cols, abar, x_new, xp) + rho * _pattern_outer(S, S.rows2, S.cols, ym, rbar, xp)
        ybar = rho * Frb
        mubar = abar - rho * Frb
    if first:  # nothing recorded: x_K was treated as a constant
        return [xp.zeros_like(m) for m in ops.Minv], qbar, Fbar
    # K_v = Σ F_sᵀF_s: K̄_v = ρ Σ_b M̄_v, and F̄ += F (K̄ + K̄ᵀ) on the pattern
    Sym = xp.zeros((S.n, S.n))
    for g, Mb in zip(S.groups, Mbar):
        Kb = rho * Mb.sum(0)
        cols = xp.asarray(g.cols)
        Sym[cols[:, :, None], cols[:, None, :]] = Kb + xp.swapaxes(Kb, 1, 2)
    P = ops.F2 @ Sym
    Fbar += P[xp.asarray(S.rows2), xp.asarray(S.cols)]
    return Mbar, qbar, Fbar


# ----------------------------------------------------------------------------------------------
# the KKT point and its adjoint


class KKT:
    """The factorised KKT system of a batch: H⁻¹ (per agent blocks when there is no soft edge, else dense
    (B, n, n)), the hard rows A (dense (m, n)), their right-hand side r (the constants', :meth:`LearnedStructure.rhs`)
    and the inverse of the Schur complement S = AH⁻¹Aᵀ + εI.

    ``diag`` (n,) adds a diagonal to H (the ρ of the bounded solve's ADMM). ``free`` (n, B) bool fixes, per example,
    the coordinates where it is False (an active set): H⁻¹ is then P(PHP + I − P)⁻¹P with P = diag(free), so
    :meth:`solve` solves the equality-constrained problem on the free coordinates and returns zeros on the others.
    ``explicit``: keep (S + εI)⁻¹ itself, so that each solve is a batched product (the bounded solve's inner
    iterations: many solves with one system); the refinement is the same."""

    REFINE = 3
    #: the refinement stops when every column's residual is below RTOL times its right-hand side's size
    RTOL = 1e-14

    def __init__(self, S: LearnedStructure, C: Coefficients, xp, *, extra_hessian=None, diag=None, free=None,
                 explicit: bool = False):
        self.S, self.C, self.xp = S, C, xp
        F2, D = S.operators(C.F, xp)
        self.D = D
        Dd = D.toarray() if hasattr(D, "toarray") else D
        hard = xp.asarray(S.hard)
        self.A = Dd[hard]
        self.r = S.rhs(C.F, xp)
        self.soft = ~hard
        w2 = xp.asarray(S.w2)
        self.w2 = w2
        Ds = Dd[self.soft]
        self.free = free
        self.explicit = bool(explicit)
        self.blocks = not bool(self.soft.any()) and extra_hessian is None
        if self.blocks:
            self.Hinv = []
            for g, Qg in zip(S.groups, C.Q):
                if diag is not None:
                    Qg = Qg + xp.einsum("vi,ij->vij", xp.asarray(diag)[xp.asarray(g.cols)], xp.eye(g.d))[None]
                if free is not None:
                    f = _gather(g, free.astype(float), xp)  # (B, V, d)
                    ff = f[..., :, None] * f[..., None, :]
                    self.Hinv.append(xp.linalg.inv(Qg * ff + xp.einsum("bvi,ij->bvij", 1.0 - f, xp.eye(g.d))) * ff)
                else:
                    self.Hinv.append(xp.linalg.inv(Qg))
        else:
            H = xp.zeros((C.B, S.n, S.n))
            for g, Qg in zip(S.groups, C.Q):
                cols = xp.asarray(g.cols)
                H[:, cols[:, :, None], cols[:, None, :]] = Qg
            H = H + (Ds.T * w2[self.soft]) @ Ds
            if extra_hessian is not None:
                H = H + extra_hessian
            if diag is not None:
                H = H + xp.diag(xp.asarray(diag))[None]
            if free is not None:
                f = free.T.astype(float)  # (B, n)
                ff = f[:, :, None] * f[:, None, :]
                self.Hinv = xp.linalg.inv(H * ff + xp.einsum("bi,ij->bij", 1.0 - f, xp.eye(S.n))) * ff
            else:
                self.Hinv = xp.linalg.inv(H)
        m = self.A.shape[0]
        self.m = m
        if m:
            Sc = self._schur_blocks() if self.blocks else xp.einsum(
                "mi,bik->bmk", self.A, xp.einsum("bij,jm->bim", self.Hinv, self.A.T))
            # S + εI in place (ε = 10⁻¹¹ tr(S)/m, for the redundant rows of a cycle of hard edges, and the rows an
            # active set empties); the refinement steps correct against S itself, applied matrix-free as A H⁻¹ Aᵀ λ
            self.eps = 1e-11 * xp.maximum(xp.abs(xp.einsum("bii->b", Sc)) / m, 1e-300)
            diag_m = xp.arange(m)
            Sc[:, diag_m, diag_m] += self.eps[:, None]
            try:  # S + εI ≻ 0: one Cholesky factor per example (a third of an LU's work, a sixth of an inverse's)
                if self.explicit:
                    self.Sinv = xp.linalg.inv(Sc)
                else:
                    self.L = xp.linalg.cholesky(Sc)
                del Sc
            except Exception as exc:  # numpy's LinAlgError, cupy's
                raise _err("E554", f"the Schur complement of the learned model's KKT system is not positive definite "
                           f"({exc})", "a hard edge whose maps are (numerically) zero, or non-finite parameters") from None
            from ..lowering.backend import scipy_module

            self._tri = scipy_module(xp, "linalg").solve_triangular

    def _schur_blocks(self):
        """S = A H⁻¹ Aᵀ = Σ_v A_v H_v⁻¹ A_vᵀ with H⁻¹ block diagonal, each agent's term on the hard rows that touch it
        only (``LearnedStructure.hard_rows``: r_v rows, so a (B, r_v, d) @ (B, d, d) @ (d, r_v) product scattered
        into S): Σ_v r_v² d + r_v d² per example instead of m² n (on the three-edge Sudoku, r_v = 32 of m = 192
        rows, and 2× faster than the dense product measured alternately)."""
        xp, S = self.xp, self.S
        B, m = self.C.B, self.m
        out = xp.zeros((B, m, m))
        for g, Hb, rows_g in zip(S.groups, self.Hinv, S.hard_rows()):
            for k, rows in enumerate(rows_g):
                if not len(rows):
                    continue
                r = xp.asarray(rows)
                Ar = self.A[r[:, None], xp.asarray(g.cols[k])[None, :]]  # (r_v, d)
                out[:, r[:, None], r[None, :]] += (Ar @ Hb[:, k]) @ Ar.T
        return out

    def hinv(self, v):
        """H⁻¹ v for v (n, B)."""
        if self.blocks:
            return _apply_blocks(self.S, self.Hinv, v, self.xp)
        return self.xp.einsum("bij,jb->ib", self.Hinv, v)

    def schur_solve(self, rhs):
        """λ with S λ = rhs (rhs (m, B)), refined against the unregularised S: at most ``REFINE`` steps, fewer once
        the residual ‖rhs − Sλ‖ is at round-off (``RTOL`` · ‖rhs‖ in every column: the regularisation's error is
        ε/λ_min(S) relative and shrinks by that factor per step, so one or two usually suffice)."""
        xp = self.xp
        inv = (lambda t: (self.Sinv @ t.T[:, :, None])[:, :, 0].T) if self.explicit else \
            (lambda t: self._chol_solve(xp.moveaxis(t, 1, 0)[:, :, None])[:, :, 0].T)
        lam = inv(rhs)  # (m, B)
        scale = xp.abs(rhs).max(0)
        for _ in range(self.REFINE):
            res = rhs - self.A @ self.hinv(self.A.T @ lam)
            if bool((xp.abs(res).max(0) <= self.RTOL * scale).all()):
                break
            lam = lam + inv(res)
        return lam

    def _chol_solve(self, r):
        """(S + εI)⁻¹ r for r (B, m, 1): two triangular solves per example with its Cholesky factor (the factor is
        finite, so the solver's finiteness scan of every (m, m) factor per call is skipped)."""
        tri = self._tri
        out = self.xp.empty_like(r)
        for b in range(r.shape[0]):
            out[b] = tri(self.L[b], tri(self.L[b], r[b], lower=True, check_finite=False), lower=True, trans="T",
                         check_finite=False)
        return out

    def solve(self, rhs_x, rhs_a=None):
        """(x, λ) with Hx + Aᵀλ = rhs_x (on the free coordinates; x = 0 on the others) and Ax = rhs_a ((m,) or
        (m, B); None: 0)."""
        if not self.m:
            return self.hinv(rhs_x), None
        h = self.hinv(rhs_x)
        t = self.A @ h
        if rhs_a is not None:
            t = t - (rhs_a[:, None] if rhs_a.ndim == 1 else rhs_a)
        lam = self.schur_solve(t)
        return self.hinv(rhs_x - self.A.T @ lam), lam


def kkt(S: LearnedStructure, C: Coefficients, xp=np, *, system: KKT | None = None, **bounded_options):
    """The equilibrium (x (n, B), λ (m, B) or None, the factorised system). With bounds on some coordinates (the
    agents' ``nonneg``/``box`` terms) it is :func:`bounded_kkt`'s, whose system is the one of the final active set."""
    if S.bounded.any() and system is None:
        return bounded_kkt(S, C, xp, **bounded_options)
    system = system or KKT(S, C, xp)
    x, lam = system.solve(-C.q, system.r if S.n_fixed else None)
    if not bool(xp.isfinite(x).all()):
        raise _err("E554", "the KKT system of the learned model is numerically singular (non-finite equilibrium)")
    return x, lam, system


class BoundedSystem:
    """The KKT systems of a bounded equilibrium's final active sets: ``pieces`` of (example indices, which of them
    settled there, the :class:`KKT` of those examples' coefficients with their free masks: one polish). :meth:`solve`
    solves the adjoint system of each piece and scatters the settled examples' columns: (g, ν) with g = 0 on every
    active coordinate. ``rounds``/``iterations``: how the solve went."""

    def __init__(self, S, B, xp):
        self.S, self.B, self.xp = S, B, xp
        self.pieces: list = []
        self.free = None
        self.D = self.soft = self.w2 = None
        self.iterations = 0
        self.rounds = 0

    @property
    def m(self):
        return int(self.S.hard.sum())

    def solve(self, rhs_x, rhs_a=None):
        xp = self.xp
        g = xp.zeros_like(rhs_x)
        nu = xp.zeros((self.m, rhs_x.shape[1])) if self.m else None
        for idx, ok, sys_ in self.pieces:
            ra = None if rhs_a is None else (rhs_a if rhs_a.ndim == 1 else rhs_a[:, idx])
            gi, ni = sys_.solve(rhs_x[:, idx], ra)  # its masked H⁻¹ ignores the active coordinates of rhs_x
            g[:, idx[ok]] = gi[:, ok]
            if self.m:
                nu[:, idx[ok]] = ni[:, ok]
        return g, nu


def _subset(C: Coefficients, idx, xp) -> Coefficients:
    return Coefficients([Qg[idx] for Qg in C.Q], C.q[:, idx], C.F, len(idx), None)


class _AffineSplit:
    """ADMM on x = z for a general H: x ← argmin ½xᵀ(H + ρB)x + (q − ρB(z − u))ᵀx s.t. Ax = r (one factorised
    :class:`KKT` of the batch, multipliers λ); x̂ = αx + (1 − α)z; z ← clip(x̂ + u) on the bounded coordinates B;
    u ← u + x̂ − z. At its fixed point Hx + q + Aᵀλ = μ with μ = −ρu (≥ 0 where z = lo, ≤ 0 where z = hi)."""

    def __init__(self, S, C, xp, rho, relax, lo, hi, bb):
        self.xp, self.rho, self.relax, self.lo, self.hi, self.bb = xp, rho, relax, lo, hi, bb
        self.system = KKT(S, C, xp, diag=rho * xp.asarray(S.bounded.astype(float)), explicit=True)
        self.system.REFINE = 1  # one step removes the εI's bias to round-off; the polish is exact anyway
        self.r, self.q = self.system.r, C.q
        self.z = xp.clip(xp.zeros_like(C.q), lo, hi)
        self.u = xp.zeros_like(C.q)
        self.lam = None

    def step(self):
        xp, rho = self.xp, self.rho
        x, self.lam = self.system.solve(-self.q + rho * self.bb * (self.z - self.u), self.r if self.system.m else None)
        v = self.relax * x + (1.0 - self.relax) * self.z + self.u
        z_prev, self.z = self.z, xp.where(self.bb, xp.clip(v, self.lo, self.hi), x)
        self.u = xp.where(self.bb, v - self.z, 0.0)
        return x, self.z, z_prev

    def active(self, idx):
        """(𝒜_lo, 𝒜_hi) on the examples ``idx``: the coordinates the clip holds at a bound."""
        z, u = self.z[:, idx], self.u[:, idx]
        return self.bb & (z <= self.lo) & (u < 0), self.bb & (z >= self.hi) & (u > 0)

    def multipliers(self, idx, Hx_q, active):
        """(Aᵀλ, μ) on the examples ``idx``, for a polished x_p with Hx_p + q = ``Hx_q`` on the set ``active``."""
        g_aff = self.system.A.T @ self.lam[:, idx] if self.system.m else 0.0
        return g_aff, -self.rho * self.u[:, idx]


class _DiagonalSplit:
    """ADMM on x = y for a diagonal H = diag(h) (encoded objectives, no soft edge): the bounds go with the objective
    and the hard rows with the copy, x ← clip((ρ(y − u) − q) / (h + ρ), lo, hi) elementwise; x̂ = αx + (1 − α)y;
    y ← Π(x̂ + u) + c, the projection onto {Ay = r} (Π = I − Aᵀ(AAᵀ)⁻¹A and c = Aᵀ(AAᵀ)⁻¹r, formed once: A is
    shared by the batch, so an iteration is elementwise work and one (n, n) @ (n, B) product); u ← u + x̂ − y. At its fixed point
    u ∈ range(Aᵀ): Aᵀλ = ρu, and the bounds' multipliers are μ = hx + q + ρu on the clipped coordinates."""

    def __init__(self, S, C, xp, rho, relax, lo, hi, bb):
        self.xp, self.rho, self.relax, self.lo, self.hi, self.bb = xp, rho, relax, lo, hi, bb
        F2, D = S.operators(C.F, xp)
        Dd = D.toarray() if hasattr(D, "toarray") else D
        A = Dd[xp.asarray(S.hard)]
        r = S.rhs(C.F, xp)
        m, n = A.shape
        if m:
            # the projector Π = I − Aᵀ(AAᵀ)⁻¹A and offset c = Aᵀ(AAᵀ)⁻¹r, once for the batch (Cholesky of AAᵀ + εI,
            # then one refinement step against AAᵀ itself, which removes the εI's bias to round-off): each
            # iteration's projection is then one (n, n) @ (n, B) product
            from ..lowering.backend import scipy_module

            tri = scipy_module(xp, "linalg").solve_triangular
            AAt = A @ A.T
            L = xp.linalg.cholesky(AAt + (1e-13 * max(float(xp.trace(AAt)) / m, 1e-300)) * xp.eye(m))

            def solve(t):
                return tri(L, tri(L, t, lower=True, check_finite=False), lower=True, trans="T", check_finite=False)

            rhs = xp.concatenate([A, r[:, None]], axis=1)
            X = solve(rhs)
            X = X + solve(rhs - AAt @ X)
            self.Pi = xp.eye(n) - A.T @ X[:, :n]
            self.c = (A.T @ X[:, n:])  # (n, 1)
        else:
            self.Pi, self.c = None, None
        self.h = _diag_of(S, C, xp)
        self.q = C.q
        self.y = xp.clip(xp.zeros_like(C.q), lo, hi)
        self.u = xp.zeros_like(C.q)
        self.w = None

    def _project(self, v):
        """The projection of v (n, B) onto {Ay = r}: Πv + c."""
        return v if self.Pi is None else self.Pi @ v + self.c

    def step(self):
        xp, rho = self.xp, self.rho
        self.w = (rho * (self.y - self.u) - self.q) / (self.h + rho)
        x = xp.clip(self.w, self.lo, self.hi)
        v = self.relax * x + (1.0 - self.relax) * self.y + self.u
        y_prev, self.y = self.y, self._project(v)
        self.u = v - self.y
        return x, self.y, y_prev

    def active(self, idx):
        w = self.w[:, idx]
        return self.bb & (w < self.lo), self.bb & (w > self.hi)

    def multipliers(self, idx, Hx_q, active):
        g_aff = self.rho * self.u[:, idx]
        return g_aff, self.xp.where(active, Hx_q + g_aff, 0.0)


def _diag_of(S, C, xp):
    h = xp.zeros((S.n, C.B))
    for g, Qg in zip(S.groups, C.Q):
        _scatter(g, h, xp.diagonal(Qg, axis1=2, axis2=3), xp)
    return h


def bounded_kkt(S: LearnedStructure, C: Coefficients, xp=np, *, rho: float | None = None, first: int = 20, every: int = 5,
                maxiter: int = 3000, tol: float = 1e-7, relax: float = 1.6, split: str = "auto", trace: bool = False):
    """The minimiser of ½xᵀHx + qᵀx subject to Ax = r and lo ≤ x ≤ hi on the bounded coordinates, per example,
    exactly: ADMM finds the active set and a valid set of multipliers, and a polish solves the equality problem on
    that set exactly.

    ADMM (ρ = ``rho``, by default 1.5 × the mean of H's diagonal over the batch, scaled dual u, over-relaxation
    α = ``relax``, Boyd et al. 2011 §3.4.3) is one of two splittings (``split``: ``"auto"``, ``"diagonal"``,
    ``"affine"``), by default chosen by the structure: :class:`_DiagonalSplit` when H is diagonal (every agent's
    objective encoded, no soft edge, no quadratic term: the Sudoku), whose iterations are elementwise plus a
    projection shared by the batch, else :class:`_AffineSplit`, whose x-step is a factorised KKT solve per example.
    Both reach the same minimiser (the polish is exact); only the cost differs. Either
    gives estimates of the multipliers: Aᵀλ of the hard rows and μ of the bounds, with μ ≥ 0 at a lower bound and
    ≤ 0 at an upper one by construction. After ``first`` iterations, and then every ``every``, the **polish** of
    each unsettled example takes ADMM's active set 𝒜_lo, 𝒜_hi, fixes x there, solves the equality-constrained
    problem on the free coordinates F exactly (a :class:`KKT` with the free mask), and accepts it when the
    multipliers certify it (it is tried once ADMM's residuals |x − z|_∞ and ρ|z − z_prev|_∞ are both below τ):
    lo − τ ≤ x_F ≤ hi + τ, |Ax − r| ≤ τ, the stationarity residual s = Hx + q + Aᵀλ − μ has
    |s|_∞ ≤ τ, and μ has the bounds' signs to τ; τ = ``tol`` · max(1, |q|_∞). Then x is the exact minimiser of the
    problem with q − s in place of q, so |x − x*| ≤ |s| / λ_min(ZᵀHZ): the set is the minimiser's whenever the
    minimiser is τ/λ_min away from changing it (in practice always: ADMM identifies the set long before the
    certificate passes). The multipliers are ADMM's, not the polish's own: at a vertex of a polytope, such as a
    solved Sudoku, the active bounds and the hard rows are linearly dependent, so the bounds' multipliers are not
    unique, and the least-norm ones the equality solve picks need not be ≥ 0.

    Returns (x (n, B), λ (m, B) or None, :class:`BoundedSystem`): its pieces are the final active sets' systems,
    which the implicit gradient's adjoint solves (:func:`kkt_vjp`). ``trace``: record per ADMM iteration the primal
    residual ‖x − z‖ and the dual residual ρ‖z − z_prev‖ (maxima over the batch) as ``primal``, ``dual``."""
    B, n = C.B, S.n
    finite = xp.isfinite(C.q).all(0)
    for Qg in C.Q:
        finite = finite & xp.isfinite(Qg).reshape(B, -1).all(1)
    if not bool(finite.all()):
        e = int(xp.flatnonzero(~finite)[0])
        raise _err("E554", f"the bounded equilibrium of example {e} (of {B}) has non-finite objective coefficients",
                   "non-finite observations, or parameters that have diverged")
    lo, hi = xp.asarray(S.lo)[:, None], xp.asarray(S.hi)[:, None]
    bb = xp.asarray(S.bounded)[:, None]
    diagonal = not bool((~S.hard).any()) and not S.quadratic
    if split not in ("auto", "diagonal", "affine"):
        raise ValueError(f"split must be auto, diagonal or affine, not {split!r}")
    if split == "diagonal" and not diagonal:
        raise ValueError("the diagonal splitting needs a diagonal H: encoded objectives only, no soft edge")
    diagonal = diagonal and split != "affine"
    if rho is None:
        rho = 1.5 * float(xp.mean(_diag_of(S, C, xp)))
    admm_ = (_DiagonalSplit if diagonal else _AffineSplit)(S, C, xp, float(rho), float(relax), lo, hi, bb)
    m = int(S.hard.sum())
    r = S.rhs(C.F, xp)
    scale = xp.maximum(1.0, xp.abs(C.q).max(0))  # (B,)
    out = BoundedSystem(S, B, xp)
    x_out = xp.zeros((n, B))
    lam_out = xp.zeros((m, B)) if m else None
    free_out = xp.ones((n, B), dtype=bool)
    todo = xp.arange(B)
    primal, dual = [], []
    k, stop = 0, int(first)
    while True:
        while k < stop:
            x, z, z_prev = admm_.step()
            k += 1
            if trace:
                primal.append(float(xp.sqrt(((x - z) ** 2).sum(0)).max()))
                dual.append(float(rho * xp.sqrt(((z - z_prev) ** 2).sum(0)).max()))
        # polish only the examples whose ADMM residuals are at the certificate's tolerance (a cheap filter: a polish
        # is a factorisation, an iteration is not); the rest iterate on
        res = xp.maximum(xp.abs(x - z).max(0), rho * xp.abs(z - z_prev).max(0))[todo]
        near = res <= tol * scale[todo]
        if not bool(near.any()) and k < maxiter:
            stop = min(stop + int(every), int(maxiter))
            continue
        idx = todo[near] if k < maxiter else todo
        rest = todo[~near] if k < maxiter else todo[:0]
        out.rounds += 1
        Cs = _subset(C, idx, xp)
        lo_s, hi_s = admm_.active(idx)
        free = ~(lo_s | hi_s)
        x_act = xp.where(lo_s, lo, 0.0) + xp.where(hi_s, hi, 0.0)
        sys_ = KKT(S, Cs, xp, free=free)
        if out.D is None:
            out.D, out.soft, out.w2 = sys_.D, sys_.soft, sys_.w2
        ra = (r[:, None] - sys_.A @ x_act) if m else None
        xf, lam = sys_.solve(-Cs.q - smooth_hessian_apply(S, Cs, sys_, x_act, xp), ra)
        xs = xf + x_act
        Hx_q = smooth_hessian_apply(S, Cs, sys_, xs, xp) + Cs.q
        g_aff, mu = admm_.multipliers(idx, Hx_q, ~free)
        tau = tol * scale[idx]
        stat = Hx_q + g_aff - mu
        ok = (xp.where(free, xp.maximum(lo - xs, xs - hi), -1.0) <= tau).all(0) & (xp.abs(stat).max(0) <= tau) \
            & (xp.where(lo_s, -mu, -1.0) <= tau).all(0) & (xp.where(hi_s, mu, -1.0) <= tau).all(0) \
            & xp.isfinite(xs).all(0)
        if m:
            ok = ok & (xp.abs(sys_.A @ xs - r[:, None]).max(0) <= tau)
        if bool(ok.any()):
            sel = idx[ok]
            x_out[:, sel] = xs[:, ok]
            if m:
                lam_out[:, sel] = lam[:, ok]
            free_out[:, sel] = free[:, ok]
            out.pieces.append((idx, ok, sys_))
        todo = xp.concatenate([idx[~ok], rest])
        if not len(todo):
            break
        if k >= maxiter:
            e = int(todo[0])
            raise _err("E731", f"the bounded equilibrium of example {e} (of {B}) did not settle in {k} ADMM iterations: "
                       "no active set met the KKT conditions", "the constraints and bounds may have no common point; "
                       "`sheaf verify` checks it")
        stop = min(stop + int(every), int(maxiter))
    out.iterations = k
    out.free = free_out
    out.primal, out.dual = np.array(primal), np.array(dual)
    return x_out, lam_out, out


def param_grads_at(S: LearnedStructure, system: KKT, x, lam, g, nu, xp):
    """−[g; ν]ᵀ ∂_θ[Hx + q + Aᵀλ; Ax − r] as coefficient gradients (Qbar, qbar, Fbar); r = −D_c p, so a constant's
    entries of the maps get ν_e p_c (x extended by the constants' values, g by zeros)."""
    Qbar = []
    for gr in S.groups:
        Qbar.append(-xp.einsum("bvi,bvj->bvij", _gather(gr, g, xp), _gather(gr, x, xp)))
    qbar = -g
    D = system.D
    B = x.shape[1]
    U = xp.zeros((S.M, B))
    V = xp.zeros((S.M, B))
    soft = system.soft
    w2 = system.w2[:, None]
    if bool(soft.any()):
        Dg, Dx = D @ g, D @ x
        U = xp.where(soft[:, None], w2 * Dg, U)
        V = xp.where(soft[:, None], w2 * Dx, V)
    if system.m:
        hard = ~soft
        U[hard] = nu
        V[hard] = lam
    # D̄[e, c] = −Σ_b (U_e x_c + V_e g_c); F_src = −D, F_dst = +D on their entries
    sign = xp.asarray(S.sign)
    xe, ge = S.extended(x, xp), S.extended(g, xp, fixed=False)
    Fbar = -sign * (_pattern_outer(S, S.erow, S.cols, U, xe, xp) + _pattern_outer(S, S.erow, S.cols, V, ge, xp))
    return Qbar, qbar, Fbar


def kkt_vjp(S: LearnedStructure, system: KKT, x, lam, xbar, xp=np):
    """The gradients (Qbar, qbar, Fbar) of ⟨xbar, x*⟩ by one adjoint solve of the KKT system (see the module
    docstring)."""
    g, nu = system.solve(xbar)
    return param_grads_at(S, system, x, lam, g, nu, xp)


# ----------------------------------------------------------------------------------------------
# the nudged (two-sided) equilibrium and the local rule


def energy_grads(S: LearnedStructure, system: KKT, x, lam, xp=np):
    """∂_θ E at an equilibrium (x, λ) of E = ½xᵀQx + qᵀx + ½‖W_S D_S x‖² + λᵀD_H x, each coefficient from its own
    term: Q̄_v = ½x_vx_vᵀ, q̄ = x, and on an edge's entries w_e²(Dx)_e x_c (soft) or λ_e x_c (hard), signed by side."""
    Qbar = [0.5 * xp.einsum("bvi,bvj->bvij", _gather(g, x, xp), _gather(g, x, xp)) for g in S.groups]
    D = system.D
    B = x.shape[1]
    U = xp.zeros((S.M, B))
    soft = system.soft
    if bool(soft.any()):
        U = xp.where(soft[:, None], system.w2[:, None] * (D @ x), U)
    if system.m:
        U[~soft] = lam
    Fbar = xp.asarray(S.sign) * _pattern_outer(S, S.erow, S.cols, U, S.extended(x, xp), xp)
    return Qbar, x.copy(), Fbar


def nudged(S: LearnedStructure, C: Coefficients, params: dict, targets: dict, beta: float, xp=np, *,
           x0=None, newton: int = 30, tol: float = 1e-12):
    """The equilibrium of E + β·ℓ(decoder(x), y) (the target pinned softly: the two-sided equilibrium), by Newton
    steps on the KKT system [[H + β∇²ℓ, Aᵀ], [A, 0]] [Δ; λ] = [−∇(E + βℓ); 0]; (x, λ, system). ℓ is per
    example (the batch's mean loss times B). The energy is strictly convex, so Newton converges (one step for
    an mse decoder)."""
    B = C.B
    x = x0 if x0 is not None else kkt(S, C, xp)[0]
    lam, system = None, None
    for _ in range(newton):
        _, gx, _ = decode_loss(S, params, x, targets, xp)
        system = KKT(S, C, xp, extra_hessian=_loss_hessian(S, params, x, xp) * (beta * B))
        grad = smooth_hessian_apply(S, C, system, x, xp) + C.q + beta * B * gx
        step, lam = system.solve(-grad)
        x = x + step
        if float(xp.abs(step).max()) <= tol * max(1.0, float(xp.abs(x).max())):
            break
    return x, lam, system


def smooth_hessian_apply(S, C, system, x, xp):
    """(Q + D_SᵀW²D_S) x."""
    out = _apply_blocks(S, C.Q, x, xp)
    soft = system.soft
    if bool(soft.any()):
        D = system.D
        out = out + D.T @ xp.where(soft[:, None], system.w2[:, None] * (D @ x), 0.0)
    return out


def _loss_hessian(S, params, x, xp):
    """∇²ℓ per example (B, n, n) of the decoders' losses (mse: JᵀJ; cross-entropy: Jᵀ(diag p − ppᵀ)J;
    sigmoid: Jᵀ diag(σ(1 − σ)) J), J the decoder's linear map from x (1/B scaled as ``decode_loss``)."""
    from ..lowering.learned import decode

    B = x.shape[1]
    Hs = xp.zeros((B, S.n, S.n))
    preds = decode(S, params, x, xp)
    for dec in S.spec.decoders:
        W = xp.asarray(params[dec.W])
        dy, w = W.shape
        J = xp.zeros((dy, S.n))
        for st, block in dec.sources:
            o = S.offset[st]
            a, b = (0, S.dim[st]) if block is None else block
            J[:, o + a:o + b] += W * dec.scale
        p = preds[dec.target]
        if dec.kind == "softmax":
            C = xp.einsum("bi,ij->bij", p, xp.eye(dy)) - p[:, :, None] * p[:, None, :]
        elif dec.kind == "sigmoid":
            C = xp.einsum("bi,ij->bij", p * (1 - p), xp.eye(dy))
        else:
            C = xp.broadcast_to(xp.eye(dy), (B, dy, dy))
        Hs = Hs + xp.einsum("in,bij,jm->bnm", J, C, J) / B
    return Hs


__all__ = ["admm", "admm_vjp", "kkt", "kkt_vjp", "KKT", "BoundedSystem", "bounded_kkt", "Iterates", "nudged", "energy_grads", "param_grads_at"]
