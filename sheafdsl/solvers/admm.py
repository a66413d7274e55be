"""Sheaf-ADMM on a lowered consensus problem (:mod:`sheafdsl.lowering.consensus`; docs/admm.md).

The problem, on the free coordinates x ∈ R^n of B independent instances (columns)::

    minimise  g(x) + s(x)   subject to  D_h x = b_h,
    g(x) = Σ_i λ_i |x_i| + ι_C(x)                       (nonsmooth, separable by stalk: box, nonneg, simplex, l1)
    s(x) = ½ xᵀQx + qᵀx + ½ ‖W_s (D_s x − b_s)‖²         (smooth: the quadratics and the soft edges)

**The split.** Each prox is closed form on its own, but a non-diagonal Q with a box has none, so every
stalk's objective is split into its nonsmooth part g_v, on the copy x, and its smooth part, on the copy z,
joined by the identity constraint x = z (the "own copy joined by identity hard edges" of the issue, with the
copy the ADMM z itself, so no extra variables and no inner iterative solver: every step is exact).

``admm`` (Sheaf-ADMM; scaled form, Boyd et al. 2011 §3.1.1, constraints Ax + Bz = c with A = [I; 0],
B = [−I; D_h], c = [0; b_h], duals u (vertices) and u_h (hard edges))::

    x ← prox_{g/ρ}(z − u)                                         each stalk alone: clip, soft threshold, simplex
    z ← (Q + D_sᵀW²D_s + ρ(I + D_hᵀD_h)) z = ρ(x̂ + u) − q + D_sᵀW²b_s + ρ D_hᵀ(b_h − u_h − ĥ)
                                                                  matrix-free CG on the sheaf Laplacian
    u ← u + x̂ − z,   u_h ← u_h + ĥ + D_h z − b_h                  the scaled dual memory

with over-relaxation x̂ = αx + (1 − α)z_prev, ĥ = −(1 − α)(D_h z_prev − b_h). The z-step is the soft-edge
prox (γL + ρI)z = ρ(x + u) of the issue with the hard edges entering L at weight ρ (their augmented
Lagrangian, at their own penalty ρ_h = κρ); each CG matvec reads only neighbours (one sparse
sheaf-Laplacian product), and its dot products are the only global reductions. ``zsolve="factor"`` (the
default with numpy) solves the same system by one sparse LU, kept until ρ or κ changes; ρ and κ are
shared by the instances of a batch, so one factorisation serves them all. With no soft edges and Q = 0 it is the projection onto
ker δ_hard, reached in the limit of the dual updates.

``admm-local`` (edge-based ADMM): every edge e = (u → v) keeps copies y_{e,u} = F_{u◁e} x_u and
y_{e,v} = F_{v◁e} x_v, every stalk a copy w_v = x_v carrying g_v::

    x_v ← (Q_v + ρK_v)⁻¹ (ρ Σ_e F_{v◁e}ᵀC_e(y_{e,v} − μ_{e,v}) + ρ(w_v − μ_v) − q_v),  K_v = Σ_e F_{v◁e}ᵀC_eF_{v◁e} + I
    (y_{e,u}, y_{e,v}) ← the prox of the edge, row by row: a = F x + μ, r = a_v − a_u − b_e,
                         y_u = a_u + θ_u r, y_v = a_v − θ_v r   (θ: :func:`edge_theta`)
    w_v ← prox_{g_v/ρ}(x_v + μ_v),   μ ← μ + (Ax − y)

with every copy row i of an edge end equilibrated, penalty ρc_i, c_i = 1/‖F_i‖² (:class:`_Local`).

Q_v + ρK_v is factorised once: K_v^{-1/2} Q_v K_v^{-1/2} = UΛUᵀ gives (Q_v + ρK_v)⁻¹ = T(Λ + ρ)⁻¹Tᵀ with
T = K_v^{-1/2}U, so a new ρ costs a diagonal. Every update reads only a stalk's own edges or an edge's two
endpoints; no global reduction remains in an iteration (the stopping test sums residuals, every
``check`` iterations).

**Stopping** (Boyd et al. §3.3.1), per instance: ‖r‖ ≤ ε_pri = √p·atol + rtol·max(‖Ax‖, ‖Bz‖, ‖c‖) and
‖s‖ ≤ ε_dual = √n·atol + rtol·max(‖ρAᵀu‖, ‖∇s‖), with r = Ax + Bz − c, s = ρAᵀB(z − z_prev) (the dual
scale also counts the smooth part's gradient, as OSQP does: with g = 0 the optimal u is 0 and Boyd's
‖ρAᵀu‖ alone would leave only atol). **Adaptive ρ**
(residual balancing, in the normalised form of OSQP): every ``adapt_every`` iterations, until ``adapt_stop``,
ρ ← ρ·√((‖r‖/ε-scale_pri)/(‖s‖/ε-scale_dual)) when that ratio leaves [1/5, 5] (the scaled duals rescale).
``admm-local`` balances against a dual scale that does not vanish at the minimiser, the copies' forces
ρ‖√c μ‖ as well: on a plain sheaf (no objective) the optimal AᵀCμ is 0, so the test's scale ρ‖AᵀCμ‖ tends to 0,
s/ε-scale_dual stays of order one, and the rule drove ρ down to its floor 10⁻⁶, a stall.
**Infeasible or unbounded problems**: for a problem with a solution both residuals tend to 0; for an
infeasible one the primal residual tends to a positive limit (the minimal displacement of the
Douglas–Rachford operator), for an unbounded one the iterates run away with a dual residual that stays.
So each instance tracks its best merit m = max(‖r‖/ε_pri, ‖s‖/ε_dual) so far; when, after 1000
iterations, the best merit at iteration k is within a fraction ``stall`` (10⁻⁴) of the best at k/2 and the
instance has not converged, the iteration has stalled: E515 when the primal residual is what stays (the
constraints cannot all hold), E516 when the dual residual is (the objective is unbounded below).
Non-finite iterates are E516 at once. The stall rule is a heuristic, so before it reports an ``admm``
instance (unless polish=False) the instance tries the polish's KKT certificate (:func:`polish_solution`), which is a
proof: a bounded feasible problem on which ADMM crawls (a feasible set that is one point where two nearly parallel
rows meet) stops at its certified minimiser, converged; an infeasible or unbounded one has no
certificate and is reported. (A feasible problem so ill-conditioned that ADMM gains less than 0.01% in k/2
iterations and whose iterate names no active set that certifies is reported the same way, with the residuals in
the message.)
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import Diagnostic, SheafError
from ..lowering.backend import array_module
from ..lowering.operators import sparse_module

#: defaults of the ADMM options (solve(..., method="admm" | "admm-local"))
#: the hard rows' penalty ρ_h = κρ starts at κ = KAPPA0: the hard edges are constraints, so close to their exact
#: projection from the start (measured: from κ = 100 the balancing rule climbed to the cap 10⁶ on every
#: benchmark problem, at the price of more iterations and refactorisations on the way)
KAPPA0 = 1e6
#: admm-local moves ρ when the balancing factor leaves [1/LOCAL_BAND, LOCAL_BAND] (admm: [1/5, 5]): a new ρ costs
#: it nothing (a diagonal), and the tighter band keeps ρ nearer the balance (benchmark, 100 agents: 7090 → 5590
#: iterations; 10 agents 250 → 160)
LOCAL_BAND = 2.0
#: the z-step of a batch (B ≥ 8) with at most this many free coordinates is factorised densely (Cholesky)
DENSE_Z = 1000

DEFAULTS = dict(rho=1.0, alpha=1.6, rtol=1e-6, atol=1e-9, maxiter=20000, adapt_every=25, adapt_stop=10000,
                check=10, stall=1e-4)


def _err(code: str, msg: str, hint: str | None = None) -> SheafError:
    return SheafError(Diagnostic(code, msg, hint=hint))


# ----------------------------------------------------------------------------------------------
# the nonsmooth prox: each stalk alone


def _colnorm(xp, a):
    """‖a‖ of each column (instance): (B,), one reduction (no squared temporary)."""
    return xp.sqrt(xp.einsum("ij,ij->j", a, a))


def project_simplex(xp, A, s, lo, hi, capped: bool):
    """argmin ‖x − a‖² over {lo ≤ x ≤ hi, Σ x = s}, for a batch: A (g, k, B), s (g, B), lo/hi (g, k, 1).

    Uncapped (hi = ∞): the sort-based projection (x − lo onto the simplex of size s − Σlo). Capped: the
    shift τ with Σ clip(a − τ, lo, hi) = s by bisection to round-off, then τ recomputed exactly from the
    coordinates strictly inside their bounds."""
    k = A.shape[1]
    if not capped:
        Y = A - lo
        t = s[:, None, :] - xp.sum(lo, axis=1, keepdims=True)  # (g, 1, B)
        U = -xp.sort(-Y, axis=1)
        css = xp.cumsum(U, axis=1) - t
        ind = xp.arange(1, k + 1, dtype=A.dtype)[None, :, None]
        cond = (U - css / ind) > 0
        r = xp.sum(cond, axis=1, keepdims=True)  # ≥ 1 always
        theta = xp.take_along_axis(css, r - 1, axis=1) / r
        return xp.maximum(Y - theta, 0.0) + lo
    s3 = s[:, None, :]
    hi_c = xp.minimum(hi, s3 - xp.sum(lo, axis=1, keepdims=True) + lo)  # x_i ≤ s − Σ_{j≠i} lo_j on the set
    a_lo = xp.min(A - hi_c, axis=1, keepdims=True)
    a_hi = xp.max(A - lo, axis=1, keepdims=True)
    for _ in range(64):
        mid = 0.5 * (a_lo + a_hi)
        f = xp.sum(xp.clip(A - mid, lo, hi_c), axis=1, keepdims=True)
        big = f > s3
        a_lo = xp.where(big, mid, a_lo)
        a_hi = xp.where(big, a_hi, mid)
    tau = 0.5 * (a_lo + a_hi)
    X = xp.clip(A - tau, lo, hi_c)
    inside = (X > lo) & (X < hi_c)
    m = xp.sum(inside, axis=1, keepdims=True)
    fixed = xp.sum(xp.where(inside, 0.0, X), axis=1, keepdims=True)
    tau2 = (xp.sum(xp.where(inside, A, 0.0), axis=1, keepdims=True) - (s3 - fixed)) / xp.maximum(m, 1)
    X2 = xp.clip(A - tau2, lo, hi_c)
    same = xp.all((X2 > lo) & (X2 < hi_c) == inside, axis=1, keepdims=True) & (m > 0)
    return xp.where(same, X2, X)


def prox_g(P, a, rho):
    """prox_{g/ρ}(a) = argmin_x g(x) + ρ/2 ‖x − a‖², a (n, B), ρ (1, B): per coordinate the soft threshold by
    λ/ρ then the clip to [lo, hi] (exact: both are separable and one-dimensional), per simplex stalk the
    (capped) simplex projection of a − λ/ρ (on x ≥ 0, λ|x| = λx is linear)."""
    xp = P.xp
    t = P.lam / rho
    if P.has_l1:
        x = xp.clip(xp.sign(a) * xp.maximum(xp.abs(a) - t, 0.0), P.lo, P.hi)
    else:  # no l1 term: the clip alone
        x = xp.clip(a, P.lo, P.hi)
    for rows, s, lo, hi in P.simplex:
        A = a[rows] - t[rows]
        x[rows] = project_simplex(xp, A, s, lo, hi, capped=bool(xp.any(xp.isfinite(hi))))
    return x


# ----------------------------------------------------------------------------------------------
# conjugate gradients, one per column


def cg(matvec, b, x0, diag, tol, maxiter: int):
    """Solve A x = b column by column (A SPD, given by ``matvec`` on (n, B) arrays) by preconditioned
    CG (Jacobi, ``diag`` (n, B)) from ``x0``, until ‖b − Ax‖ ≤ ``tol`` (B,) in every column; returns
    (x, steps). The column dot products are the only global reductions."""
    xp = array_module(b)
    x = x0.copy()
    r = b - matvec(x)
    rn = _colnorm(xp, r)
    if bool(xp.all(rn <= tol)):
        return x, 0
    zz = r / diag
    p = zz.copy()
    rz = xp.sum(r * zz, axis=0)
    for k in range(1, maxiter + 1):
        Ap = matvec(p)
        pAp = xp.sum(p * Ap, axis=0)
        alpha = xp.where(pAp > 0, rz / xp.where(pAp > 0, pAp, 1.0), 0.0)
        x += alpha * p
        r -= alpha * Ap
        rn = _colnorm(xp, r)
        if bool(xp.all(rn <= tol)):
            return x, k
        zz = r / diag
        rz_new = xp.sum(r * zz, axis=0)
        beta = xp.where(rz > 0, rz_new / xp.where(rz > 0, rz, 1.0), 0.0)
        p = zz + beta * p
        rz = rz_new
    return x, maxiter


# ----------------------------------------------------------------------------------------------
# the two methods: one step each, one driver


class _Global:
    """Sheaf-ADMM (``admm``): x local prox, z by CG on the sheaf Laplacian, scaled duals u, u_h."""

    def __init__(self, P, rho, warm, zsolve: str = "cg"):
        xp = self.xp = P.xp
        self.P = P
        self.zsolve, self._lu_key, self._lu, self.factorisations = zsolve, None, None, 0
        S = sparse_module(xp)
        self.Ls = (P.Q + P.Ds.T @ (S.diags(P.ws2.ravel()) @ P.Ds)).tocsr() if P.Ds.shape[0] else P.Q.tocsr()
        self.Lh = (P.Dh.T @ P.Dh).tocsr()
        self.dLs = self.Ls.diagonal()[:, None]
        self.dLh = self.Lh.diagonal()[:, None]
        self.c_lin = -P.q + (P.Ds.T @ (P.ws2 * P.bs) if P.Ds.shape[0] else 0.0)
        n, B = P.n, P.B
        self.p = n + P.Dh.shape[0]
        self.z = xp.zeros((n, B)) if warm.get("z") is None else warm["z"].copy()
        self.u = xp.zeros((n, B)) if warm.get("u") is None else warm["u"].copy()
        self.uh = xp.zeros((P.Dh.shape[0], B)) if warm.get("uh") is None else warm["uh"].copy()
        self.x = self.z.copy()
        self.cg_steps = 0
        self.cg_tol = None
        self.kappa = xp.full((1, B), KAPPA0) if warm.get("kappa") is None else warm["kappa"].copy()
        if B > 1 and bool(xp.any(self.kappa != self.kappa[0, 0])):  # a warm start whose instances stopped apart
            f = xp.exp(xp.mean(xp.log(self.kappa))) / self.kappa
            self.kappa, self.uh = self.kappa * f, self.uh / f
        self.hz = P.Dh @ self.z - P.bh

    def step(self, rho, alpha):
        xp, P = self.xp, self.P
        z0, hz0 = self.z, self.hz
        x = prox_g(P, z0 - self.u, rho)
        xh = alpha * x + (1 - alpha) * z0
        hh = -(1 - alpha) * hz0
        rho_h = self.kappa * rho
        rhs = self.c_lin + rho * (xh + self.u) + rho_h * (P.Dh.T @ (P.bh - self.uh - hh))
        Ls, Lh = self.Ls, self.Lh

        def matvec(v):
            return Ls @ v + rho * v + rho_h * (Lh @ v)

        if self.zsolve == "factor":
            z = self._factor(float(rho[0, 0]), float(rho_h[0, 0]))(rhs)
        else:
            diag = self.dLs + rho + rho_h * self.dLh
            tol = self.cg_tol if self.cg_tol is not None else 1e-3 * _colnorm(xp, rhs)
            tol = xp.maximum(tol, 1e-14 * _colnorm(xp, rhs))
            z, k = cg(matvec, rhs, z0, diag, tol, maxiter=max(50, 5 * P.n))
            self.cg_steps += k
        hz = P.Dh @ z - P.bh
        self.u = self.u + (xh - z)
        self.uh = self.uh + (hh + hz)
        self.x, self.z, self.hz = x, z, hz
        self.r1, nhz = _colnorm(xp, x - z), _colnorm(xp, hz)
        self.r2 = nhz
        r = xp.sqrt(self.r1 ** 2 + nhz ** 2)
        s = rho[0] * _colnorm(xp, z - z0)
        self._scales = (rho, rho_h)
        return r, s

    def scales(self):
        """(scale_pri, scale_dual, √n) of the stopping test at the last iterate (only at a check: the matvecs
        of ∇s and D_hᵀu_h are the test's, not the iteration's)."""
        xp, P = self.xp, self.P
        rho, rho_h = self._scales
        x, z = self.x, self.z
        nx, nz = _colnorm(xp, x), _colnorm(xp, z)
        nDz, nb = _colnorm(xp, self.hz + P.bh), _colnorm(xp, P.bh)
        self.s1, self.s2 = xp.maximum(nx, nz), xp.maximum(nDz, nb)
        scale_pri = xp.maximum(xp.maximum(nx, xp.sqrt(nz ** 2 + nDz ** 2)), nb)
        grad = _colnorm(xp, self.Ls @ z - self.c_lin)  # ∇s(z), the smooth part's gradient
        scale_dual = xp.maximum(xp.maximum(rho[0] * _colnorm(xp, self.u), grad),
                                rho_h[0] * _colnorm(xp, P.Dh.T @ self.uh))
        return scale_pri, scale_dual, math.sqrt(P.n)

    def _factor(self, rho: float, rho_h: float):
        """The z-step's solve with Ls + ρI + ρ_h D_hᵀD_h by one sparse LU (scipy, on the host), kept until ρ
        or κ changes; every instance of the batch shares it (one solve with B right-hand sides)."""
        key = (rho, rho_h)
        if self._lu_key != key:
            import scipy.sparse as sp
            import scipy.sparse.linalg as spl

            A = (_host_csr(self.Ls) + rho * sp.eye(self.P.n) + rho_h * _host_csr(self.Lh)).tocsc()
            xp = self.xp
            if 0 < self.P.n <= DENSE_Z and self.P.B >= 8:
                # small and batched: the inverse from one dense Cholesky, applied to the B right-hand sides as one
                # GEMM on xp (about 3x the two triangular solves' speed on one core; on a GPU no host round trip).
                # Its forward error is the triangular solves' order, cond(A)·ε
                import scipy.linalg as sla

                c = sla.cho_factor(A.toarray(), lower=True, check_finite=False)
                Ai = xp.asarray(sla.cho_solve(c, np.eye(self.P.n), check_finite=False))
                self._lu = lambda b: Ai @ b
            else:
                # SPD (Ls ⪰ 0, ρ > 0): a symmetric fill-reducing ordering and no pivoting (about 1.6x less fill
                # and faster solves than the default COLAMD with partial pivoting on the benchmark problems)
                lu = spl.splu(A, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                              options=dict(SymmetricMode=True)) if self.P.n else None
                self._lu = (lambda b: xp.asarray(lu.solve(np.asarray(_host(b))))) if lu is not None else (lambda b: b)
            self._lu_key = key
            self.factorisations += 1
        return self._lu

    def dense_kkt(self):
        """The dense inverse of the polish's KKT matrix (:func:`polish_batch`), once per problem, or None when
        the problem is too large for it (n + m > ``DENSE_Z``) or it is singular (no unique minimiser)."""
        if not hasattr(self, "_kkt"):
            self._kkt = kkt_inverse(self.P, self.Ls)
        return self._kkt

    def rescale(self, f):
        """ρ ← ρ·f: the scaled duals (y/ρ) become u/f."""
        self.u = self.u / f
        self.uh = self.uh / f

    def adapt_hard(self, skip):
        """Balance the hard rows against the consensus rows: ρ_h = κρ, κ ← κ·√((‖r_h‖/scale_h)/(‖r_x‖/scale_x))
        when that leaves [1/5, 5] (κ ∈ [1, 10⁶], from 100; the hard edges' scaled duals rescale). A larger κ is closer
        to the exact projection onto ker δ_hard, at the price of a stiffer CG system. Returns the mask of
        instances whose κ changed."""
        xp = self.xp
        tiny = 1e-300
        ratio = xp.sqrt((self.r2 / xp.maximum(self.s2, tiny)) / xp.maximum(self.r1 / xp.maximum(self.s1, tiny), tiny))
        ratio = _shared(xp, ratio, skip | ~xp.isfinite(ratio) | (self.r2 == 0))
        new = xp.clip(self.kappa * ratio[None, :], 1.0, 1e6)
        f = new / self.kappa
        change = (f[0] > 5.0) | (f[0] < 0.2)
        f = xp.where(change[None, :], f, 1.0)
        self.kappa = self.kappa * f
        self.uh = self.uh / f
        return change

    def solution(self):
        return self.x

    #: the per-instance state (columns), kept when an instance stops and sliced by compaction
    STATE = ("x", "z", "u", "uh", "hz", "kappa")

    def state(self, rho):
        return dict({k: getattr(self, k) for k in self.STATE}, rho=rho)

    def keep(self, cols):
        """Go on with the instances at ``cols`` only (compaction)."""
        for k in self.STATE + ("c_lin",):
            setattr(self, k, getattr(self, k)[:, cols])
        for k in ("cg_tol", "r1", "r2", "s1", "s2"):
            if getattr(self, k, None) is not None:
                setattr(self, k, getattr(self, k)[cols])
        self.P = self.P.subset(cols)

    def set_solution(self, cols, x):
        """A polished minimiser for the instances at ``cols``: x = z there (so x − z = 0)."""
        self.x[:, cols] = x
        self.z[:, cols] = x
        self.hz[:, cols] = self.P.Dh @ x - self.P.bh[:, cols]

    @staticmethod
    def solution_of(state):
        return state["x"]

    @staticmethod
    def warm_of(state):
        return {k: state[k] for k in ("z", "u", "uh", "rho", "kappa")}


def local_x_step(s, q, rho, alpha):
    """admm-local's vertex step and over-relaxation on the state ``s`` (a :class:`_Local`, or one part of it
    across workers, :class:`sheafdsl.distributed.admm.Part`: edge-end rows ``Fs, Fd``, the transposes weighted by
    the copy rows' equilibration, ``FsT = Fsᵀ C_u``, ``FdT = Fdᵀ C_v``, the vertex solve's factors ``T, Tt, lamH``,
    copies ``yu, yv, w`` and scaled duals ``mu, mv, mw``):

        x = T diag(1/(lamH + ρ)) Tt (−q + ρ(Fsᵀ C_u (yu − mu) + Fdᵀ C_v (yv − mv) + w − mw)),
        a = α·(Fs x, Fd x, x) + (1 − α)·(yu, yv, w),   e = a_{u,v} + (mu, mv).

    Returns (x, Fs x, Fd x, au, av, aw, eu, ev), each (rows, B)."""
    rhs = -q + rho * (s.FsT @ (s.yu - s.mu) + s.FdT @ (s.yv - s.mv) + (s.w - s.mw))
    x = s.T @ ((s.Tt @ rhs) / (s.lamH + rho))
    axu, axv = s.Fs @ x, s.Fd @ x
    au = alpha * axu + (1 - alpha) * s.yu
    av = alpha * axv + (1 - alpha) * s.yv
    aw = alpha * x + (1 - alpha) * s.w
    return x, axu, axv, au, av, aw, au + s.mu, av + s.mv


def edge_theta(xp, hard, w2, g_end, g_sum, rho):
    """The share θ of one end of an edge row in admm-local's edge prox (each row alone, both ends' copies at
    their own penalties ρc = ρ/g, g = ‖F_row‖², the copy rows' equilibration; g = 0: that end has no free
    coordinate, so no copy, y = 0 = a there)::

        (y_u, y_v) = argmin  φ_e(y_v − y_u − b) + ρ/(2g_u) (y_u − a_u)² + ρ/(2g_v) (y_v − a_v)²,   r = a_v − a_u − b,
        y_u = a_u + θ_u r,  y_v = a_v − θ_v r,   θ_end = w² g_end / (ρ + w² (g_u + g_v))   (soft: φ = w²/2 t²),
                                                 θ_end = g_end / (g_u + g_v)                (hard: φ = ι{t = 0}),

    (0 where both ends have no copy). With g_u = g_v = 1 this is the plain θ = w²/(ρ + 2w²), ½ (hard)."""
    pos = g_sum > 0
    soft = w2 * g_end / (rho + w2 * g_sum)
    return xp.where(pos, xp.where(hard, g_end / xp.where(pos, g_sum, 1.0), soft), 0.0)


class _Local:
    """Edge-based ADMM (``admm-local``): vertex solves factorised once, edge proxes, vertex copies w.

    **Copy-row equilibration.** The copies' constraints are F_i x = y_i, one per edge-end row i; their scale is
    the row's norm, which a model sets at will (a hard edge 0.02 x_v = 0.1 x_u + b asks x_v to agree through a
    row of norm 0.02). ADMM with one ρ on such rows is a penalty of ρ‖F_i‖² on x: the small rows barely pull
    their vertex and the iteration crawls (issue 10: a drawn problem stalled for 2·10⁵ iterations). So each row
    is scaled to unit norm, c_i (F_i x − y_i) with c_i = 1/‖F_i‖² (a row with no free coordinate, an end whose
    stalk is pinned there, has no copy at all, c_i = 0): every constraint row is then as stiff as every other,
    and ρ is the one number left to balance (in both directions: ``run_admm``)."""

    def __init__(self, P, rho, warm):
        import scipy.sparse as sp

        xp = self.xp = P.xp
        self.P = P
        n, B, M = P.n, P.B, P.M
        h = P.host
        Fs = _host_csr(P.Fs)
        Fd = _host_csr(P.Fd)
        gu = np.asarray(Fs.multiply(Fs).sum(axis=1)).ravel()
        gv = np.asarray(Fd.multiply(Fd).sum(axis=1)).ravel()
        cu, cv = _inv(gu), _inv(gv)
        K = (Fs.T @ sp.diags(cu) @ Fs + Fd.T @ sp.diags(cv) @ Fd + sp.eye(n)).tocsr()
        Q = h["Q"].tocsr()
        rows, cols, vals = [], [], []
        lam = np.zeros(n)
        by_k: dict[int, list] = {}
        for sl in P.blocks.values():
            if sl.stop > sl.start:
                by_k.setdefault(sl.stop - sl.start, []).append(sl.start)
        for k, starts in by_k.items():
            starts = np.asarray(starts)
            idx = starts[:, None] + np.arange(k)[None, :]
            Kb = np.stack([K[i][:, i].toarray() for i in idx]) if len(starts) < 64 else _blocks(K, idx)
            Qb = np.stack([Q[i][:, i].toarray() for i in idx]) if len(starts) < 64 else _blocks(Q, idx)
            ek, Vk = np.linalg.eigh(Kb)
            Kih = Vk @ (Vk.transpose(0, 2, 1) / np.sqrt(ek)[:, :, None])  # K^{-1/2}
            Mb = Kih @ Qb @ Kih
            Mb = 0.5 * (Mb + Mb.transpose(0, 2, 1))
            lk, Uk = np.linalg.eigh(Mb)
            T = Kih @ Uk
            lam[idx] = np.maximum(lk, 0.0)
            r_ = np.repeat(idx[:, :, None], k, axis=2)
            c_ = np.repeat(idx[:, None, :], k, axis=1)
            rows.append(r_.ravel()); cols.append(c_.ravel()); vals.append(T.ravel())
        Tm = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)) \
            if rows else sp.csr_matrix((n, n))
        S = sparse_module(xp)
        dev = (lambda A: A.tocsr()) if xp is np else (lambda A: S.csr_matrix(A.tocsr()))
        self.T, self.Tt = dev(Tm), dev(Tm.T)
        self.lamH = xp.asarray(lam[:, None])
        self.Fs, self.Fd = P.Fs, P.Fd
        self.FsT, self.FdT = dev(Fs.T @ sp.diags(cu)), dev(Fd.T @ sp.diags(cv))
        # the copy rows' weights c (for the residuals: ‖√c (F x − y)‖) and norms g (for the edge prox)
        self.cu, self.cv = xp.asarray(cu[:, None]), xp.asarray(cv[:, None])
        self.gu, self.gv = xp.asarray(gu[:, None]), xp.asarray(gv[:, None])
        self.gsum = self.gu + self.gv
        self.theta_hard = P.hard
        self.x = xp.zeros((n, B)) if warm.get("x") is None else warm["x"].copy()
        self.w = self.x.copy() if warm.get("w") is None else warm["w"].copy()
        self.yu = self.Fs @ self.x if warm.get("yu") is None else warm["yu"].copy()
        self.yv = self.Fd @ self.x if warm.get("yv") is None else warm["yv"].copy()
        for name in ("mu", "mv", "mw"):
            shape = (n, B) if name == "mw" else (M, B)
            setattr(self, name, xp.zeros(shape) if warm.get(name) is None else warm[name].copy())
        self.p = 2 * M + n

    def step(self, rho, alpha):
        xp, P = self.xp, self.P
        x, axu, axv, au, av, aw, eu, ev = local_x_step(self, P.q, rho, alpha)
        rr = ev - eu - P.b
        yu = eu + edge_theta(xp, self.theta_hard, P.w2, self.gu, self.gsum, rho) * rr
        yv = ev - edge_theta(xp, self.theta_hard, P.w2, self.gv, self.gsum, rho) * rr
        w = prox_g(P, aw + self.mw, rho)
        self.mu = self.mu + au - yu
        self.mv = self.mv + av - yv
        dmw = aw - w
        self.mw = self.mw + dmw
        dyu, dyv, dw = yu - self.yu, yv - self.yv, w - self.w
        self.x, self.yu, self.yv, self.w = x, yu, yv, w
        r = xp.sqrt(_wsq(xp, self.cu, axu - yu) + _wsq(xp, self.cv, axv - yv) + _wsq(xp, 1.0, x - w))
        s = rho[0] * _colnorm(xp, self.FsT @ dyu + self.FdT @ dyv + dw)
        self._last = (rho, axu, axv)
        return r, s

    def scales(self):
        """(scale_pri, scale_dual, √n) of the stopping test at the last iterate (the equilibrated rows')."""
        xp, P = self.xp, self.P
        rho, axu, axv = self._last
        x, yu, yv, w = self.x, self.yu, self.yv, self.w
        cu, cv = self.cu, self.cv
        scale_pri = xp.maximum(xp.sqrt(_wsq(xp, cu, axu) + _wsq(xp, cv, axv) + _wsq(xp, 1.0, x)),
                               xp.sqrt(_wsq(xp, cu, yu) + _wsq(xp, cv, yv) + _wsq(xp, 1.0, w)))
        scale_dual = xp.maximum(rho[0] * _colnorm(xp, self.FsT @ self.mu + self.FdT @ self.mv + self.mw),
                                _colnorm(xp, P.Q @ x + P.q))
        self.balance_dual = xp.maximum(scale_dual, rho[0] * xp.sqrt(_wsq(xp, cu, self.mu) + _wsq(xp, cv, self.mv)
                                                                    + _wsq(xp, 1.0, self.mw)))
        return scale_pri, scale_dual, math.sqrt(P.n)

    def rescale(self, f):
        self.mu, self.mv, self.mw = self.mu / f, self.mv / f, self.mw / f

    def solution(self):
        return self.w

    STATE = ("x", "w", "yu", "yv", "mu", "mv", "mw")

    def state(self, rho):
        return dict({k: getattr(self, k) for k in self.STATE}, rho=rho)

    def keep(self, cols):
        for k in self.STATE:
            setattr(self, k, getattr(self, k)[:, cols])
        self.P = self.P.subset(cols)

    @staticmethod
    def solution_of(state):
        return state["w"]

    @staticmethod
    def warm_of(state):
        return dict(state)


def _inv(g):
    """1/g where g > 0, else 0 (a copy row with no free coordinate has no copy)."""
    return np.where(g > 0, 1.0 / np.where(g > 0, g, 1.0), 0.0)


def _wsq(xp, c, a):
    """Σ_i c_i a_i² per column (B,): the squared norm of a in the rows' equilibrated scale."""
    return xp.sum(c * (a * a), axis=0)


def _host_csr(A):
    import scipy.sparse as sp

    get = getattr(A, "get", None)
    return (get() if callable(get) and not isinstance(A, sp.spmatrix) else A).tocsr()


def _blocks(A, idx):
    """The diagonal blocks A[i, i] for each row of ``idx`` (g, k): (g, k, k), from a sparse A."""
    g, k = idx.shape
    A = A.tocsr()
    out = np.zeros((g, k, k))
    for a in range(k):
        for b in range(k):
            out[:, a, b] = np.asarray(A[idx[:, a], idx[:, b]]).ravel()
    return out


def _shared(xp, ratio, skip):
    """One factor for the whole batch: the geometric mean of ``ratio`` over the instances not skipped
    (1 when all are), so that ρ and κ stay equal across instances and one factorisation serves them all."""
    keep = ~skip
    m = int(xp.sum(keep))
    g = float(xp.exp(xp.sum(xp.where(keep, xp.log(xp.where(keep, ratio, 1.0)), 0.0)) / m)) if m else 1.0
    return xp.full(ratio.shape, g)


class ADMMOutcome:
    """What an ADMM run returns: x (n, B), converged (B,), iterations, primal/dual residuals (B,) and
    their tolerances, traces (T, B) of each (and of ρ), the warm-start state, inner CG steps."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def run_admm(P, *, method: str = "admm", rho=None, alpha=None, rtol=None, atol=None, maxiter=None, warm=None,
             adapt: bool = True, record_trace: bool = True, stall=None, zsolve: str | None = None,
             polish: bool | None = None, local=None) -> ADMMOutcome:
    """Run ``admm`` or ``admm-local`` on the lowered problem ``P`` (see the module docstring). ``zsolve``
    (admm): ``cg`` (matrix-free, the default on a GPU) or ``factor`` (one sparse factorisation per value
    of ρ and κ, on the host; the default with numpy). ``polish`` (admm, default on with numpy): try
    :func:`polish_solution` on an instance once its residuals meet the test at rtol = ``POLISH_RTOL`` (then
    10× tighter after each failed try) while at most ``POLISH_MAX`` instances are left; a batch of at least
    ``POLISH_BATCH`` instances whose KKT matrix is small enough (:func:`kkt_inverse`) tries
    :func:`polish_batch` instead, on every unstopped instance from rtol = ``POLISH_RTOL_BATCH`` on; a polished
    instance stops when its certificate meets the tolerances. Before a stall is reported (E515/E516) the stalled
    instances try the certificate once more, on every backend, unless ``polish`` is False.

    ``local(P, rho, warm)`` (admm-local): the iteration's state and step in place of :class:`_Local`'s, with
    its interface (the agents spread over Dask workers: :mod:`sheafdsl.distributed.admm`); everything else
    (stopping, ρ, stalls) is this loop's.

    Each instance stops on its own: once it meets its tolerances (or its polish is certified) its iterate is
    kept and, when enough have stopped, the iteration goes on with the others only (compaction, when the
    iteration can be cut: ``keep``)."""
    xp = P.xp
    o = dict(DEFAULTS)
    for k, v in dict(rho=rho, alpha=alpha, rtol=rtol, atol=atol, maxiter=maxiter, stall=stall).items():
        if v is not None:
            o[k] = v
    for k in ("rho", "alpha", "rtol", "maxiter"):
        if isinstance(o[k], bool) or not (isinstance(o[k], (int, float)) and o[k] > 0 and math.isfinite(o[k])):
            raise _err("E519", f"{k} must be a positive number, not {o[k]!r}")
    if not (isinstance(o["atol"], (int, float)) and o["atol"] >= 0 and not isinstance(o["atol"], bool)):
        raise _err("E519", f"atol must be a number >= 0, not {o['atol']!r}")
    if not (0 < o["alpha"] < 2):
        raise _err("E519", f"the over-relaxation alpha must lie in (0, 2), not {o['alpha']}")
    warm = dict(warm or {})
    B = P.B
    rho_v = warm.get("rho")
    rho_v = xp.full((1, B), float(o["rho"])) if rho_v is None else xp.asarray(rho_v).reshape(1, B).copy()
    if zsolve is None:
        zsolve = "factor" if xp is np else "cg"
    if zsolve not in ("factor", "cg"):
        raise _err("E519", f"zsolve must be `factor` or `cg`, not {zsolve!r}")
    algo = _Global(P, rho_v, warm, zsolve) if method == "admm" else (local or _Local)(P, rho_v, warm)
    if B > 1 and bool(xp.any(rho_v != rho_v[0, 0])):  # one ρ for the batch (one factorisation): the geometric mean
        f = xp.exp(xp.mean(xp.log(rho_v))) / rho_v
        algo.rescale(f)
        rho_v = rho_v * f
    do_polish = (method == "admm" and xp is np) if polish is None else bool(polish and method == "admm")
    # before a stall is reported (E515/E516) its instances try the polish's certificate, on every backend (once, so
    # its host solves cost nothing that matters), unless polish=False
    certify_stalls = method == "admm" and polish is not False
    rtol_, atol_, alpha_ = float(o["rtol"]), float(o["atol"]), float(o["alpha"])
    maxit, adapt_every, adapt_stop = int(o["maxiter"]), o["adapt_every"], o["adapt_stop"]
    # the stopping test (its scales cost two products more than an iteration's residuals): every iteration for
    # one instance, every ``check`` for admm-local and for a batch (whose iteration is cheap per instance)
    check = o["check"] if method == "admm-local" else (1 if B == 1 else 5)
    tr_r, tr_s, tr_rho = [], [], []
    # per instance, over the whole batch: what is kept when it stops
    act = np.arange(B)                      # the instances still iterated (columns of algo's arrays)
    done = np.zeros(B, dtype=bool)          # stopped (converged, or polished), over the whole batch
    fin = {}                                # name -> (., B) arrays of the stopped instances' state
    last_r, last_s = xp.full(B, xp.inf), xp.full(B, xp.inf)
    fin_eps_pri, fin_eps_dual = xp.zeros(B), xp.zeros(B)
    iters = np.zeros(B, dtype=np.int64)
    polished = np.zeros(B, dtype=bool)
    level = np.full(B, max(1.0, (POLISH_RTOL_BATCH if B >= POLISH_BATCH else POLISH_RTOL) / rtol_))
    best, bests = None, {}
    k = 0

    def finish(cols_local, r_, s_, ep_, ed_, k_):
        """Keep the state of the instances at ``cols_local`` (columns of the active arrays)."""
        g = xp.asarray(act[cols_local])
        state = algo.state(rho_v)
        for name, a in state.items():
            if name not in fin:
                fin[name] = xp.zeros(a.shape[:-1] + (B,), dtype=a.dtype)
            fin[name][..., g] = a[..., cols_local]
        last_r[g], last_s[g] = r_[cols_local], s_[cols_local]
        fin_eps_pri[g], fin_eps_dual[g] = ep_[cols_local], ed_[cols_local]
        iters[act[cols_local]] = k_
        done[act[cols_local]] = True

    def certify(cand, kkt, r_, s_, ep_, ed_, k_):
        """Polish the instances at ``cand`` (columns of the active arrays; :func:`polish_batch` with ``kkt``, else
        :func:`polish_solution`) and stop those whose certificate meets the tolerances. Returns ok (cand.size,)."""
        Pc, cx = algo.P.subset(cand), xp.asarray(cand)
        xo, ok, pr, du = (polish_batch(Pc, kkt, algo.c_lin[:, cx], algo.x[:, cx], ep_[cx], ed_[cx])
                          if kkt is not None else
                          polish_solution(Pc, algo.Ls, algo.c_lin[:, cx], algo.x[:, cx], ep_[cx], ed_[cx]))
        good = cand[ok]
        if good.size:
            algo.set_solution(good, xp.asarray(xo[:, ok]))
            rr_, ss_ = r_.copy(), s_.copy()
            rr_[good], ss_[good] = xp.asarray(pr[ok]), xp.asarray(du[ok])
            finish(good, rr_, ss_, ep_, ed_, k_)
            polished[act[good]] = True
        return ok

    for k in range(1, maxit + 1):
        r, s = algo.step(rho_v, alpha_)
        ax = xp.asarray(act)
        if record_trace:  # the stopped instances (not yet compacted away) keep their final residuals
            run_ = ~done[act]
            last_r[xp.asarray(act[run_])], last_s[xp.asarray(act[run_])] = r[xp.asarray(run_)], s[xp.asarray(run_)]
            tr_r.append(last_r.copy())
            tr_s.append(last_s.copy())
            rr = xp.zeros(B) + (fin["rho"][0] if "rho" in fin else 0.0)
            rr[ax] = rho_v[0]
            tr_rho.append(rr)
        if k % check and k != maxit and k != 1:  # the first iteration is tested too (a warm start)
            continue
        sp_, sd_, sqn = algo.scales()
        sb_ = getattr(algo, "balance_dual", sd_)  # the dual scale ρ is balanced against (admm-local's: see there)
        eps_pri = math.sqrt(algo.p) * atol_ + rtol_ * sp_
        eps_dual = sqn * atol_ + rtol_ * sd_
        live = ~done[act]
        conv = (r <= eps_pri) & (s <= eps_dual)
        merit = xp.maximum(r / eps_pri, s / eps_dual)
        new = np.flatnonzero(np.asarray(_host(conv)) & live)
        if new.size:
            finish(new, r, s, eps_pri, eps_dual, k)
            live[new] = False
        kkt = algo.dense_kkt() if do_polish and B >= POLISH_BATCH and live.any() else None
        if do_polish and live.any() and (kkt is not None or int(live.sum()) <= POLISH_MAX):
            mh = np.asarray(_host(merit))
            cand = np.flatnonzero(live & (mh <= level[act]))
            if cand.size:
                ok = certify(cand, kkt, r, s, eps_pri, eps_dual, k)
                live[cand[ok]] = False
                level[act[cand[~ok]]] = np.maximum(level[act[cand[~ok]]] / 10.0, 1.0)
        if done.all():
            break
        finite = xp.isfinite(r) & xp.isfinite(s)
        if not bool(xp.all(finite | ~xp.asarray(live))):
            loc = int(np.argmin(np.asarray(_host(finite)) | ~live))
            _diverged(P, algo, loc, int(act[loc]))
        m_full = xp.full(B, xp.inf) if best is None else best.copy()
        m_full[ax] = merit
        m_full[xp.asarray(done)] = 0.0
        best = m_full if best is None else xp.minimum(best, m_full)
        bests[k] = best
        if method == "admm":  # the CG residual bounds the error of s (and of r·ρ): keep it under a tenth of ε
            algo.cg_tol = xp.maximum(0.1 * xp.minimum(eps_dual, rho_v[0] * eps_pri),
                                     1e-3 * xp.minimum(rho_v[0] * r, s))
        if hasattr(algo, "keep") and ((~live).sum() and (~live).sum() * 8 >= live.size
                                        or live.sum() <= POLISH_MAX < live.size):
            keep = np.flatnonzero(live)  # compaction: iterate the unstopped instances only
            algo.keep(keep)
            rho_v = rho_v[:, keep]
            act = act[keep]
            r, s, eps_pri, eps_dual = r[keep], s[keep], eps_pri[keep], eps_dual[keep]
            sp_, sd_, sb_ = sp_[keep], sd_[keep], sb_[keep]
            live = live[keep]
        if adapt and k % adapt_every == 0 and k <= adapt_stop:
            ratio = xp.sqrt((r / xp.maximum(sp_, 1e-300)) / xp.maximum(s / xp.maximum(sb_, 1e-300), 1e-300))
            skip = ~xp.asarray(live)
            ratio = _shared(xp, ratio, skip | ~xp.isfinite(ratio))
            band = LOCAL_BAND if method == "admm-local" else 5.0
            change = (ratio > band) | (ratio < 1 / band)
            if bool(xp.any(change)):
                newr = xp.clip(rho_v * xp.where(change, ratio, 1.0)[None, :], 1e-6, 1e6)
                moved = bool(xp.any(newr != rho_v))
                algo.rescale(newr / rho_v)
                rho_v = newr
                if moved and method == "admm-local":
                    # a new ρ starts a new trajectory of the merit (it may rise at first): the stall test compares
                    # only iterates since the last change (measured: a drawn problem whose ρ the rule raised 1 → 874
                    # was taken for unbounded at 1600 iterations while converging, in 6640)
                    best, bests = None, {}
            if hasattr(algo, "adapt_hard") and P.Dh.shape[0]:
                algo.adapt_hard(skip)
        half = (k // 2) // check * check
        if k >= 1000 and k % 50 == 0 and half in bests:
            stalled = (best >= (1.0 - o["stall"]) * bests[half]) & ~xp.asarray(done)
            for j in [j for j in bests if j < half]:
                del bests[j]
            if bool(xp.any(stalled)):
                cand = np.flatnonzero(np.asarray(_host(stalled))[act])
                if certify_stalls:
                    # the stall rule is a heuristic, the KKT certificate a proof: a bounded feasible problem on which
                    # ADMM crawls (a degenerate feasible set) stops at its polished minimiser instead of an error. The
                    # sparse polish, in correction form: its constraints hold to round-off, where the dense K⁻¹'s
                    # regularisation δ leaves δ·y (on single_point_case's batch 1.1e-9, against ε_pri/100 = 1.5e-12)
                    ok = certify(cand, None, r, s, eps_pri, eps_dual, k)
                    live[cand[ok]] = False
                    cand = cand[~ok]
                if cand.size:
                    loc = int(cand[0])
                    _stalled(P, algo, loc, int(act[loc]), r, s, eps_pri, eps_dual, k)
                if done.all():
                    break
    if not done.all():  # maxiter: keep the unstopped ones as they are
        left = np.flatnonzero(~done[act])
        finish(left, r, s, eps_pri, eps_dual, k)
    conv_all = xp.asarray((last_r <= fin_eps_pri) & (last_s <= fin_eps_dual))
    stack = (lambda L: xp.stack(L)) if record_trace and tr_r else (lambda L: None)
    state = {name: a for name, a in fin.items()}
    return ADMMOutcome(x=algo.solution_of(state), converged=conv_all, iterations=k, primal=last_r, dual=last_s,
                       eps_pri=fin_eps_pri, eps_dual=fin_eps_dual, trace_primal=stack(tr_r), trace_dual=stack(tr_s),
                       trace_rho=stack(tr_rho), warm=algo.warm_of(state), cg_steps=getattr(algo, "cg_steps", 0),
                       method=method, factorisations=getattr(algo, "factorisations", 0),
                       iterations_each=iters, polished=polished)


# ----------------------------------------------------------------------------------------------
# polishing: the exact minimiser on the active set the iterates have found

#: at most this many instances are polished per attempt (each is its own sparse factorisation), and at
#: most POLISH_ROUNDS active-set corrections each
POLISH_MAX = 16
#: a batch of at least this many instances whose KKT matrix has at most DENSE_Z rows polishes every instance
#: with one dense K⁻¹ (:func:`polish_batch`) as soon as its residuals allow, however many are left
POLISH_BATCH = 8
#: ... and tries it from rtol = POLISH_RTOL_BATCH on: a try costs two GEMMs and a small solve per instance, so an
#: early one that fails is cheap (measured on the benchmark's batch: the median instance is polished after 10
#: iterations from 1e-2, after 20 from 1e-3)
POLISH_RTOL_BATCH = 1e-2
POLISH_ROUNDS = 4
#: the first polish is tried when an instance's residuals meet the stopping test at rtol = POLISH_RTOL (its
#: merit max(‖r‖/ε_pri, ‖s‖/ε_dual) is at most POLISH_RTOL/rtol), the next ones at 10×, 100× … tighter
POLISH_RTOL = 1e-3


def polish_solution(P, Ls, c_lin, x, eps_pri, eps_dual, rounds: int = POLISH_ROUNDS):
    """Polish ADMM iterates ``x`` (n, B) into exact minimisers (OSQP's polish, for every nonsmooth term here,
    with primal-dual active-set corrections); on the host (scipy). Per instance:

    - the **active set**: coordinates at a bound (x_i = lo_i or hi_i: the prox clips exactly) or at the kink
      of an l1 term (x_i = 0) are fixed there; the others are free, an l1 term on them linear, λ_i σ_i x_i
      with σ_i = sign x_i;
    - the **equality-constrained QP** on the free coordinates F: minimise ½ xᵀ Ls x − c_linᵀx + Σ λ_i σ_i x_i
      subject to C x = d, C = [D_h; S] (S: one row Σ x = s per simplex stalk), by the proximal method of
      multipliers on one sparse LU of the SPD K = Ls_FF + σ C_FᵀC_F + δI (σ = 10⁸·scale, δ = 10⁻⁹·scale):
      x⁺ = x + K⁻¹(e₁ + σC_Fᵀe₂), y⁺ = y + σ(C_F x⁺ − r₂) with the KKT residuals e₁ = r₁ − Ls_FF x − C_Fᵀy,
      e₂ = r₂ − C_F x (the correction form, so each solve's error scales with the residuals, not with σ),
      until they are under ε_dual/4 and ε_pri/1000, or stall (at most 30 solves; redundant hard rows need no
      special case; the hard edges' multipliers can be large, hence the large σ);
    - the **certificate**: with g = Ls x − c_lin + Cᵀy, x is a minimiser iff it is feasible and every −g_i
      lies in the subdifferential of the nonsmooth terms at x_i, [λ_i a_i − ∞·1(x_i = lo_i),
      λ_i b_i + ∞·1(x_i = hi_i)] ([a, b] = ∂|x_i|). The distance of −g to that set is the dual residual; the
      violation of the bounds and of C x = d the primal one;
    - when the certificate fails, one **active-set correction** (a primal-dual active-set step): a free
      coordinate past a bound is fixed at it (an l1 coordinate that changed sign at 0), a fixed one whose −g_i
      points into the interior is freed; then solve again, up to ``rounds`` times while the residuals
      shrink (far from the minimiser these steps can wander: the iterations then go on).

    Returns (x (n, B), ok (B,) bool, primal (B,), dual (B,)): ok where the dual residual meets ``eps_dual``
    and the primal one a hundredth of ``eps_pri`` (B,): on the right active set the constraints hold to
    round-off, and a fixed set that the constraints can only nearly meet (a coordinate fixed at a bound it
    should leave) is not taken for a minimiser; x is the polished point where ok, the input elsewhere."""
    import scipy.sparse as sp
    import scipy.sparse.linalg as spl

    n, B = x.shape
    lo, hi, lam = (np.asarray(_host(a), dtype=float).ravel() for a in (P.lo, P.hi, P.lam))
    Ls = _host_csr(Ls)
    c_lin = np.asarray(_host(c_lin), dtype=float)
    C, d_all = _constraint_rows(P)
    d_all = np.asarray(_host(d_all), dtype=float)
    xs = np.asarray(_host(x), dtype=float)
    out = xs.copy()
    ok = np.zeros(B, dtype=bool)
    prim, dual = np.full(B, np.inf), np.full(B, np.inf)
    ep, ed = np.asarray(_host(eps_pri)).ravel(), np.asarray(_host(eps_dual)).ravel()
    scale = max(1.0, float(abs(Ls).max()) if Ls.nnz else 0.0)
    cscale = max(1.0, float(abs(C).max()) ** 2 if C.nnz else 0.0)
    sigma, delta = 1e8 * scale / cscale, 1e-9 * scale
    CT = C.T.tocsr()
    for b in range(B):
        xb = xs[:, b]
        fixed = (xb <= lo) | (xb >= hi) | ((lam > 0) & (xb == 0))
        fval = np.where(xb <= lo, lo, np.where(xb >= hi, hi, 0.0))
        sgn = np.sign(xb)
        last = np.inf
        for _ in range(rounds + 1):
            xn = np.where(fixed, fval, 0.0)
            F = np.flatnonzero(~fixed)
            y = np.zeros(C.shape[0])
            if F.size:
                LF, CF = Ls[F][:, F], C[:, F]
                K = (LF + sigma * (CF.T @ CF) + delta * sp.eye(F.size)).tocsc()
                try:
                    lu = spl.splu(K, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                                  options=dict(SymmetricMode=True))
                except RuntimeError:
                    break
                r1 = (c_lin[:, b] - lam * sgn - Ls @ xn)[F]
                r2 = d_all[:, b] - C @ xn
                xf = xb[F].copy()
                CFT = CF.T.tocsr()
                p1 = p2 = np.inf
                for it in range(30):  # in correction form: each solve's error scales with the residuals
                    e1, e2 = r1 - LF @ xf - CFT @ y, r2 - CF @ xf
                    n1, n2 = np.linalg.norm(e1) / ed[b], np.linalg.norm(e2) / ep[b]
                    if n1 <= 0.25 and n2 <= 1e-3:
                        break
                    if it >= 3 and n2 > 0.5 * p2 and (n1 <= 0.25 or n1 > 0.5 * p1):
                        break  # stalled: round-off, or a fixed set that the constraints cannot meet
                    p1, p2 = n1, n2
                    xf = xf + lu.solve(e1 + sigma * (CFT @ e2))
                    y = y + sigma * (CF @ xf - r2)
                xn[F] = xf
            g = Ls @ xn - c_lin[:, b] + CT @ y
            sg = np.sign(xn)
            lower = np.where(xn <= lo, -np.inf, np.where(sg != 0, sg, -1.0) * lam)
            upper = np.where(xn >= hi, np.inf, np.where(sg != 0, sg, 1.0) * lam)
            dres = np.maximum(np.maximum(lower + g, -g - upper), 0.0)
            pv = np.r_[np.maximum(lo - xn, 0.0), np.maximum(xn - hi, 0.0), C @ xn - d_all[:, b]]
            prim[b], dual[b] = np.linalg.norm(pv), np.linalg.norm(dres)
            if prim[b] <= 1e-2 * ep[b] and dual[b] <= ed[b]:
                ok[b] = True
                out[:, b] = xn
                break
            merit = max(prim[b] / ep[b], dual[b] / ed[b])
            if merit >= last:  # the corrections are not converging from here: leave it to the iterations
                break
            last = merit
            # a primal-dual active-set step: fix what left its bounds (or crossed an l1 kink), free what is pushed in
            below, above = ~fixed & (xn < lo), ~fixed & (xn > hi)
            crossed = ~fixed & (lam > 0) & (xn * sgn < 0)
            release = fixed & (dres > 0)
            fval = np.where(below, lo, np.where(above, hi, np.where(crossed, 0.0, fval)))
            sgn = np.where(release, np.sign(-g), np.where(crossed, 0.0, sgn))
            fixed = (fixed & ~release) | below | above | crossed
            if not (below.any() or above.any() or crossed.any() or release.any()):
                break
    return out, ok, prim, dual


def _constraint_rows(P):
    """C = [D_h; S] (S: one row Σ x = s per simplex stalk) on the host, and d = [b_h; s] (m, B) on ``xp``, in
    the order of :func:`polish_solution`."""
    import scipy.sparse as sp

    n = P.n
    S_rows, S_cols, sums = [], [], []
    m0 = 0
    for rows, s, _, _ in P.simplex:
        rows = np.asarray(_host(rows))
        S_rows.append(np.repeat(np.arange(rows.shape[0]) + m0, rows.shape[1]))
        S_cols.append(rows.ravel())
        sums.append(s)
        m0 += rows.shape[0]
    S = sp.csr_matrix((np.ones(sum(len(c) for c in S_cols)), (np.concatenate(S_rows), np.concatenate(S_cols))),
                      shape=(m0, n)) if m0 else sp.csr_matrix((0, n))
    xp = P.xp
    d = xp.concatenate([P.bh] + sums, axis=0) if m0 else P.bh
    return sp.vstack([_host_csr(P.Dh), S]).tocsr(), d


def kkt_inverse(P, Ls):
    """(K⁻¹, L, C) on ``xp`` for the batched polish: K = [[L, Cᵀ], [C, −δI]] with L = Ls (the smooth part's
    Hessian) and C the equality rows (:func:`_constraint_rows`), δ = 10⁻¹²·max(1, max|L|) (a quasi-definite
    regularisation: K is nonsingular exactly when L ≻ 0 on ker C, the unique minimiser, redundant rows included).
    None when n + m exceeds ``DENSE_Z`` or the inverse is not finite."""
    C, _ = _constraint_rows(P)
    n, m = P.n, C.shape[0]
    if n == 0 or n + m > DENSE_Z:
        return None
    L = _host_csr(Ls).toarray()
    delta = 1e-12 * max(1.0, float(np.abs(L).max()))
    Cd = C.toarray()
    K = np.block([[L, Cd.T], [Cd, -delta * np.eye(m)]])
    try:
        Ki = np.linalg.inv(K)
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(Ki)):
        return None
    xp = P.xp
    return xp.asarray(Ki), xp.asarray(L), xp.asarray(Cd)


def polish_batch(P, kkt, c_lin, x, eps_pri, eps_dual, rounds: int = 2):
    """:func:`polish_solution` for a whole batch at once, on ``xp``, with one dense K⁻¹ shared by the instances
    (``kkt``: :func:`kkt_inverse`). Per instance b the active set A_b (the coordinates the iterate has at a bound
    or at an l1 kink, fixed there at v_b) changes only which rows are fixed, so the equality-constrained QP

        [[K, Ē_A], [Ē_Aᵀ, 0]] [ξ; ν] = [ρ_b; v_b],   ρ_b = [c_lin − λσ; d],   Ē_A = [E_A; 0]

    is solved through K⁻¹ and the Schur complement of the fixed coordinates, the |A_b| × |A_b| block
    S_b = (K⁻¹)_{A_b A_b}: ξ⁰ = K⁻¹ρ_b (one GEMM for the batch), ν = S_b⁻¹ (ξ⁰_A − v_A) (a batched solve, the
    A_b padded with identity rows to the largest), ξ = ξ⁰ − K⁻¹ Ē_A ν (one more GEMM). The certificate and the
    active-set corrections (``rounds``) are :func:`polish_solution`'s, for every instance at once; so are the
    returns (x (n, B), ok (B,) host bool, primal (B,), dual (B,))."""
    xp = P.xp
    Ki, L, C = kkt
    n, B = x.shape
    m = C.shape[0]
    lo, hi, lam = P.lo, P.hi, P.lam
    _, d = _constraint_rows(P)
    fixed = (x <= lo) | (x >= hi) | ((lam > 0) & (x == 0))
    fval = xp.where(x <= lo, lo, xp.where(x >= hi, hi, 0.0))
    sgn = xp.sign(x)
    out = x.copy()
    ok = np.zeros(B, dtype=bool)
    prim, dual = xp.full(B, xp.inf), xp.full(B, xp.inf)
    ep, ed = eps_pri.ravel(), eps_dual.ravel()
    todo = np.arange(B)
    for rnd in range(rounds + 1):
        t = xp.asarray(todo)
        f, fv, sg = fixed[:, t], fval[:, t], sgn[:, t]
        Bt = todo.size
        xi = Ki @ xp.concatenate([c_lin[:, t] - lam * sg, d[:, t]], axis=0)
        cnt = xp.sum(f, axis=0)
        a = int(xp.max(cnt)) if Bt else 0
        if a:
            order = xp.argsort(~f, axis=0, kind="stable")[:a].T      # (Bt, a): each instance's fixed rows first
            valid = xp.arange(a)[None, :] < cnt[:, None]
            idx = xp.where(valid, order, 0)
            S = Ki[idx[:, :, None], idx[:, None, :]]
            S = xp.where(valid[:, :, None] & valid[:, None, :], S, xp.eye(a)[None])
            cols = xp.broadcast_to(xp.arange(Bt)[:, None], idx.shape)
            rhs = xp.where(valid, xi[idx, cols] - fv[idx, cols], 0.0)
            try:
                nu = xp.linalg.solve(S, rhs[:, :, None])[:, :, 0]
            except np.linalg.LinAlgError:  # an active set the constraints cannot meet: leave it to the iterations
                break
            N = xp.zeros((n + m + 1, Bt))
            N[xp.where(valid, order, n + m), cols] = xp.where(valid, nu, 0.0)  # padding lands in a spare row
            xi = xi - Ki @ N[:n + m]
        xn = xp.where(f, fv, xi[:n])
        g = L @ xn - c_lin[:, t] + C.T @ xi[n:]
        sn = xp.sign(xn)
        lower = xp.where(xn <= lo, -xp.inf, xp.where(sn != 0, sn, -1.0) * lam)
        upper = xp.where(xn >= hi, xp.inf, xp.where(sn != 0, sn, 1.0) * lam)
        dres = xp.maximum(xp.maximum(lower + g, -g - upper), 0.0)
        pv = xp.concatenate([xp.maximum(lo - xn, 0.0), xp.maximum(xn - hi, 0.0), C @ xn - d[:, t]], axis=0)
        pr, du = _colnorm(xp, pv), _colnorm(xp, dres)
        prim[t], dual[t] = pr, du
        good = np.asarray(_host((pr <= 1e-2 * ep[t]) & (du <= ed[t])))
        if good.any():
            gd = xp.asarray(np.flatnonzero(good))
            out[:, t[gd]] = xn[:, gd]
            ok[todo[good]] = True
        if rnd == rounds or good.all():
            break
        # a primal-dual active-set step for the others (as polish_solution's)
        bd = xp.asarray(np.flatnonzero(~good))
        tb = t[bd]
        xb, fb, fvb, sgb, gb, db = xn[:, bd], f[:, bd], fv[:, bd], sg[:, bd], g[:, bd], dres[:, bd]
        below, above = ~fb & (xb < lo), ~fb & (xb > hi)
        crossed = ~fb & (lam > 0) & (xb * sgb < 0)
        release = fb & (db > 0)
        fval[:, tb] = xp.where(below, lo, xp.where(above, hi, xp.where(crossed, 0.0, fvb)))
        sgn[:, tb] = xp.where(release, xp.sign(-gb), xp.where(crossed, 0.0, sgb))
        fixed[:, tb] = (fb & ~release) | below | above | crossed
        todo = todo[~good]
    return out, ok, prim, dual


def _stalk_at(P, x) -> str | None:
    """The stalk whose free coordinates hold the largest |x| (x: (n,) host)."""
    i = int(np.argmax(np.abs(x))) if x.size else 0
    for v, sl in P.blocks.items():
        if sl.start <= i < sl.stop:
            return v
    return None


def _where(P, x) -> str:
    v = _stalk_at(P, x)
    return f"stalk `{v}`" if v is not None else "the free coordinates"


def _hard_edge_at(P, r) -> str | None:
    """The hard edge whose rows hold the largest |r| (r: (M_h,) host)."""
    hard = np.asarray(_host(P.hard)).ravel()
    names = [name for name, r0, de in P.edge_rows for _ in range(de)]
    hn = [nm for nm, h in zip(names, hard) if h]
    return hn[int(np.argmax(np.abs(r)))] if len(hn) and r.size else None


def _hard_edge(P, r) -> str:
    e = _hard_edge_at(P, r)
    return f"edge `{e}`" if e is not None else "the hard edges"


def _at(P, code, msg, hint, *, edge=None, stalk=None):
    """The error at the named edge's or stalk's statement (file:line:col when the model came from a file)."""
    from ..ir import declared_at, model_error

    return model_error(P.G, code, msg, declared_at(P.G, edge=edge, stalk=stalk), hint)


def _host(a):
    from ..lowering.backend import to_numpy

    return to_numpy(a)


def _diverged(P, algo, loc, b):
    x = np.asarray(_host(algo.solution()))[:, loc]
    bad = np.flatnonzero(~np.isfinite(x))
    where = _where(P, np.where(np.isfinite(x), 0.0, 1.0)) if bad.size else _where(P, x)
    raise _at(P, "E516", f"ADMM diverged: the iterates of {where} became infinite or NaN"
              + (f" (instance {b})" if P.B > 1 else ""),
              "the objective is unbounded below or its data overflow float64: check Q ⪰ 0 on the free "
              "directions, the bounds and the scale of q",
              stalk=_stalk_at(P, np.where(np.isfinite(x), 0.0, 1.0)) if bad.size else _stalk_at(P, x))


def _stalled(P, algo, loc, b, r, s, eps_pri, eps_dual, k):
    """E515/E516 for the instance at column ``loc`` of the active arrays, ``b`` of the batch."""
    inst = f" (instance {b})" if P.B > 1 else ""
    Pa = algo.P
    rp, rd = float(_host(r)[loc] / _host(eps_pri)[loc]), float(_host(s)[loc] / _host(eps_dual)[loc])
    x = np.asarray(_host(algo.solution()))[:, loc]
    if rp >= rd:
        hz = np.asarray(_host(Pa.Dh @ algo.solution() - Pa.bh))[:, loc] if Pa.Dh.shape[0] else np.zeros(0)
        edge = _hard_edge_at(P, hz) if hz.size and np.abs(hz).max() > 0 else None
        where = f"edge `{edge}`" if edge is not None else _where(P, x)
        raise _at(P, "E515", f"the problem looks infeasible{inst}: after {k} ADMM iterations the primal residual "
                   f"{float(_host(r)[loc]):.3g} no longer decreases (tolerance {float(_host(eps_pri)[loc]):.3g}); the "
                   f"largest violation is at {where}",
                   "the hard edges, hard pins and the stalks' boxes/simplices cannot all hold: check them "
                   "(`sheaf verify` proves feasibility of the linear constraints)",
                  edge=edge, stalk=None if edge is not None else _stalk_at(P, x))
    raise _at(P, "E516", f"the problem looks unbounded{inst}: after {k} ADMM iterations the iterates keep moving "
               f"(dual residual {float(_host(s)[loc]):.3g} no longer decreases; |x| is largest at {_where(P, x)})",
               "the objective decreases without bound along a feasible direction: add a quadratic, a box or a pin there",
              stalk=_stalk_at(P, x))
