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
    return xp.moveaxis(v[xp.asarray(g.cols)], 2, 0)


def _scatter(g, out, val, xp):
    out[xp.asarray(g.cols)] = xp.moveaxis(val, 0, 2)


def _apply_blocks(S, blocks, v, xp):
    """blockdiag(blocks) v for v (n, B), blocks per group (B, V, d, d)."""
    out = xp.empty_like(v)
    for g, Mb in zip(S.groups, blocks):
        _scatter(g, out, xp.einsum("bvij,bvj->bvi", Mb, _gather(g, v, xp)), xp)
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
    (B, n, n)), the hard rows A (dense (m, n)) and the inverse of the Schur complement S = AH⁻¹Aᵀ + εI."""

    REFINE = 3
    #: the refinement stops when every column's residual is below RTOL times its right-hand side's size
    RTOL = 1e-14

    def __init__(self, S: LearnedStructure, C: Coefficients, xp, *, extra_hessian=None):
        self.S, self.C, self.xp = S, C, xp
        F2, D = S.operators(C.F, xp)
        self.D = D
        Dd = D.toarray() if hasattr(D, "toarray") else D
        hard = xp.asarray(S.hard)
        self.A = Dd[hard]
        self.soft = ~hard
        w2 = xp.asarray(S.w2)
        self.w2 = w2
        Ds = Dd[self.soft]
        self.blocks = not bool(self.soft.any()) and extra_hessian is None
        if self.blocks:
            self.Hinv = [xp.linalg.inv(Qg) for Qg in C.Q]
        else:
            H = xp.zeros((C.B, S.n, S.n))
            for g, Qg in zip(S.groups, C.Q):
                cols = xp.asarray(g.cols)
                H[:, cols[:, :, None], cols[:, None, :]] = Qg
            H = H + (Ds.T * w2[self.soft]) @ Ds
            if extra_hessian is not None:
                H = H + extra_hessian
            self.Hinv = xp.linalg.inv(H)
        m = self.A.shape[0]
        self.m = m
        if m:
            Sc = self._schur_blocks() if self.blocks else xp.einsum(
                "mi,bik->bmk", self.A, xp.einsum("bij,jm->bim", self.Hinv, self.A.T))
            # S + εI in place (ε = 10⁻¹¹ tr(S)/m, for the redundant rows of a cycle of hard edges); the
            # refinement steps correct against S itself, applied matrix-free as A H⁻¹ Aᵀ λ, so S is not kept
            self.eps = 1e-11 * xp.maximum(xp.abs(xp.einsum("bii->b", Sc)) / m, 1e-300)
            diag = xp.arange(m)
            Sc[:, diag, diag] += self.eps[:, None]
            try:  # S + εI ≻ 0: one Cholesky factor per example (a third of an LU's work, a sixth of an inverse's)
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
        r = xp.moveaxis(rhs, 1, 0)[:, :, None]  # (B, m, 1)
        lam = self._chol_solve(r)[:, :, 0].T  # (m, B)
        scale = xp.abs(rhs).max(0)
        for _ in range(self.REFINE):
            res = rhs - self.A @ self.hinv(self.A.T @ lam)
            if bool((xp.abs(res).max(0) <= self.RTOL * scale).all()):
                break
            lam = lam + self._chol_solve(xp.moveaxis(res, 1, 0)[:, :, None])[:, :, 0].T
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

    def solve(self, rhs_x):
        """(x, λ) with Hx + Aᵀλ = rhs_x, Ax = 0."""
        if not self.m:
            return self.hinv(rhs_x), None
        h = self.hinv(rhs_x)
        lam = self.schur_solve(self.A @ h)
        return self.hinv(rhs_x - self.A.T @ lam), lam


def kkt(S: LearnedStructure, C: Coefficients, xp=np, *, system: KKT | None = None):
    """The equilibrium (x (n, B), λ (m, B) or None, the factorised system)."""
    system = system or KKT(S, C, xp)
    x, lam = system.solve(-C.q)
    if not bool(xp.isfinite(x).all()):
        raise _err("E554", "the KKT system of the learned model is numerically singular (non-finite equilibrium)")
    return x, lam, system


def param_grads_at(S: LearnedStructure, system: KKT, x, lam, g, nu, xp):
    """−[g; ν]ᵀ ∂_θ[Hx + q + Aᵀλ; Ax] as coefficient gradients (Qbar, qbar, Fbar)."""
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
    Fbar = -sign * (_pattern_outer(S, S.erow, S.cols, U, x, xp) + _pattern_outer(S, S.erow, S.cols, V, g, xp))
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
    Fbar = xp.asarray(S.sign) * _pattern_outer(S, S.erow, S.cols, U, x, xp)
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


__all__ = ["admm", "admm_vjp", "kkt", "kkt_vjp", "KKT", "Iterates", "nudged", "energy_grads", "param_grads_at"]
