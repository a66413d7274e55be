"""The two-sided equilibrium of a feed-forward chain with smooth hidden maps: safeguarded Gauss-Newton.

The chain. Free stalks v_1..v_m between a pinned input v_0 = x and a pinned target y; edge k maps its
head by the identity and its tail by φ_k (an affine map A v + b, or a nonlinearity of the registry:
tanh, gelu, softplus, sigmoid, leaky_relu, relu), and the output edge carries an energy ℓ(v_m; y)
(½ w_o² ‖y − A v_m − b‖², or w_o² × cross-entropy for a sigmoid/softmax output)::

    E(v) = Σ_k ½ w_k² ‖v_k − φ_k(v_{k−1})‖² + ℓ(v_m)

The discords u_k = v_k − φ_k(v_{k−1}) are coordinates for the free stalks (the coboundary is
unitriangular: v is a forward sweep of u, v_k = φ_k(v_{k−1}) + u_k), so E(u) = Σ ½ w_k²‖u_k‖² +
ℓ(v_m(u)), smooth and in general **not convex** once some φ_k is nonlinear.

Gauss-Newton step. With R_k = ∂v_m/∂u_k = T_m ⋯ T_{k+1} (T_j = Dφ_j(v_{j−1}); d_m rows, one backward
sweep of a (B, d_m, d) tensor), g = ∇ℓ(v_m) and H ⪰ 0 the Gauss-Newton Hessian of ℓ (w_o² AᵀA, or
w_o² Dφ for cross-entropy), the quadratic model of E in u has the Hessian M = W² + Σ R_kᵀ H R_k ≻ 0,
and its minimiser is, in output space (d_m × d_m per example: the Schur complement of the chain)::

    u_k⁺ = −R_kᵀ μ / w_k²,   (I + H K) μ = g − H s,   K = Σ_k R_k R_kᵀ / w_k²,   s = Σ_k R_k u_k

The direction d = u⁺ − u = −M⁻¹∇E is a descent direction; a per-example Armijo backtracking on the
true energy safeguards it, so E decreases monotonically from the start, the forward pass (u = 0).
A fixed point satisfies w_k² u_k + R_kᵀ ∇ℓ = 0, the exact stationarity of E (the Gauss-Newton
approximation changes the path, not the point).

Stopping. An example is **consistent** when ‖∇_u E‖∞ ≤ rtol · (1 + ‖g₀‖∞), g₀ the output force at the
start (a stationary point of the non-convex energy, reached by descent from the forward pass: a local
minimum unless it is a saddle, which descent leaves almost surely). ReLU or leaky ReLU layers in the
chain enter with their almost-everywhere derivative (the gate 1[z ≥ 0], or slope/1): the method is then
a semismooth Newton method, and an example whose equilibrium slides on a kink (z = 0 exactly) is
reported as not consistent rather than resolved; chains with only ReLU gates use the active set
instead (:mod:`sheafdsl.solvers.chain`).

The solver works on plain callables (:class:`Chain`); :func:`smooth_fast_phase` builds them from the
chain structure of :mod:`sheafdsl.lowering.chain` and returns the :class:`~.result.Equilibrium` that the
local update reads (:func:`sheafdsl.solvers.chain.exact_equilibrium` dispatches here when a chain has a
nonlinear hidden layer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..lowering.chain import FeedForward, apply, apply_T, layer_gate, out_linear, out_map, output_discord
from ..lowering.nonlinear import kernel
from ..nonlinearities import TABLE as NONLINEARITIES
from .result import Equilibrium

#: iterations in all before an example is reported as not consistent
MAXITER = 100
#: Gauss-Newton steps before the unsettled examples switch to Newton's method on the exact Hessian
GN_STEPS = 25
#: the largest number of free coordinates per example for which the exact Hessian is assembled
NEWTON_LIMIT = 1500
#: Armijo constant and the number of step halvings tried
ARMIJO, HALVINGS = 1e-4, 40


@dataclass
class Chain:
    """A feed-forward chain, as the solver sees it.

    ``maps[k](v)``: φ_{k+1}(v_k) (bias included), (B, d_k) -> (B, d_{k+1}); ``pullback[k](v, G)``:
    G · Dφ_{k+1}(v_k), (B, R, d_{k+1}) -> (B, R, d_k); ``weights[k]``: w_{k+1}; ``output(v_m, Y)``: at targets Y (B, d_y) (``targets``), (ℓ (B,),
    ∇ℓ (B, d_m), H (B, d_m, d_m) or (d_m, d_m), the PSD Hessian of ℓ); ``curvature[k](v, r)``: the
    diagonal −r ⊙ φ''(v) that the elementwise map k adds to the Hessian in its tail (None: affine).
    """

    maps: list[Callable]
    pullback: list[Callable]
    weights: list[float]
    output: Callable
    targets: object = None
    curvature: list = None
    kinks: list = None  # per map: the slope below the kink of a piecewise linear map (relu 0), else None  # per map: (v, r) -> −r ⊙ φ''(v) (B, d_k), or None for an affine map


@dataclass
class SmoothEquilibrium:
    """``V``: v_0..v_m (B, d_k); ``U``: discords u_1..u_m; ``energy`` (B,); ``consistent`` (B,) bool;
    ``grad_max`` (B,): ‖∇_u E‖∞ at the end; ``iterations``: Gauss-Newton steps taken by the batch."""

    V: list
    U: list
    energy: object
    consistent: object
    grad_max: object
    iterations: int
    info: dict = field(default_factory=dict)


def sweep(chain: Chain, X, U):
    """v_0 = X, v_k = φ_k(v_{k−1}) + u_k: the free stalks from the discords (U None: the forward pass)."""
    V = [X]
    for k, f in enumerate(chain.maps):
        v = f(V[-1])
        V.append(v if U is None else v + U[k])
    return V


def energy(chain: Chain, V, U, xp, Y=None):
    """E per example (B,) and the output's (ℓ, ∇ℓ, H) at v_m, targets Y (default ``chain.targets``)."""
    ell, g, H = chain.output(V[-1], chain.targets if Y is None else Y)
    E = ell
    for w, u in zip(chain.weights, U):
        E = E + 0.5 * w * w * (u * u).sum(axis=1)
    return E, g, H


def sensitivities(chain: Chain, V, xp):
    """R_k = ∂v_m/∂u_k for k = 1..m as (B, d_m, d_k) arrays (one backward sweep)."""
    B, dm = V[-1].shape
    m = len(chain.maps)
    R = [None] * m
    R[m - 1] = xp.broadcast_to(xp.eye(dm), (B, dm, dm))
    for k in range(m - 1, 0, -1):
        R[k - 1] = chain.pullback[k](V[k], R[k])
    return R


def _apply_H(H, x, xp):
    """H x for H (B, d, d) or a shared (d, d); x (B, d)."""
    return x @ H.T if H.ndim == 2 else xp.einsum("bij,bj->bi", H, x)


def _u_gradient(chain, V, U, g, w2, xp):
    """(∇_u E per edge, ‖∇_u E‖∞ per example, R): ∇_{u_k} E = w_k² u_k + R_kᵀ ∇ℓ."""
    R = sensitivities(chain, V, xp)
    grads = [w2[k] * U[k] + xp.einsum("bi,bij->bj", g, R[k]) for k in range(len(U))]
    gmax = xp.zeros(V[0].shape[0])
    for gk in grads:
        gmax = xp.maximum(gmax, xp.abs(gk).max(axis=1))
    return grads, gmax, R


def _line_search(E, trial, slope, active, xp, alpha0=None, with_alpha=False):
    """Armijo backtracking per example: the largest α = α₀ 2^−j (α₀ = 1 unless given) with
    E(trial(α)) ≤ E + c α slope; examples that find none stay put (α = 0). ``trial(α)`` -> (V, U, E, g, H)
    (and α itself with ``with_alpha``)."""
    alpha = xp.where(active, 1.0 if alpha0 is None else alpha0, 0.0)
    for _ in range(HALVINGS):
        out = trial(alpha)
        bad = active & ~(out[2] <= E + ARMIJO * alpha * slope + 1e-15 * (1.0 + xp.abs(E)))
        if not bool(bad.any()):
            return (out, alpha) if with_alpha else out
        alpha = xp.where(bad, 0.5 * alpha, alpha)
    alpha = xp.where(bad, 0.0, alpha)
    return (trial(alpha), alpha) if with_alpha else trial(alpha)


def dense_hessian(chain: Chain, V, U, H_out, xp, exact: bool = True):
    """∇²E over the free stalks v_1..v_m as (B, n, n), n = Σ d_k: block tridiagonal, blocks
    w_k² I (head), w_k² (T_kᵀT_k + diag(−r_k ⊙ φ_k'')) (tail; the curvature term only when ``exact``),
    −w_k² T_k (coupling), plus ∇²ℓ on v_m. Without the curvature term this is δ(v)ᵀW²δ(v) + ∇²ℓ ≻ 0."""
    B = V[0].shape[0]
    dims = [v.shape[1] for v in V[1:]]
    off = np.concatenate([[0], np.cumsum(dims)]).astype(int)
    n, m = int(off[-1]), len(dims)
    Hd = xp.zeros((B, n, n))
    for k in range(m):
        w2 = chain.weights[k] ** 2
        s = slice(off[k], off[k + 1])
        idx = xp.arange(off[k], off[k + 1])
        Hd[:, idx, idx] += w2
        if k == 0:
            continue
        t = slice(off[k - 1], off[k])
        T = chain.pullback[k](V[k], xp.broadcast_to(xp.eye(dims[k]), (B, dims[k], dims[k])))  # (B, d_k+1, d_k)
        Hd[:, t, t] += w2 * xp.matmul(xp.swapaxes(T, 1, 2), T)
        if exact and chain.curvature is not None and chain.curvature[k] is not None:
            tidx = xp.arange(off[k - 1], off[k])
            Hd[:, tidx, tidx] += w2 * chain.curvature[k](V[k], U[k])
        Hd[:, t, s] -= w2 * xp.swapaxes(T, 1, 2)
        Hd[:, s, t] -= w2 * T
    last = slice(off[m - 1], off[m])
    Hd[:, last, last] += H_out
    return Hd


def _v_gradient(chain, V, U, g, w2, xp):
    """∇_v E over v_1..v_m, concatenated (B, n)."""
    m = len(U)
    out = []
    for j in range(m):
        gj = w2[j] * U[j]
        if j + 1 < m:
            gj = gj - w2[j + 1] * chain.pullback[j + 1](V[j + 1], U[j + 1][:, None, :])[:, 0, :]
        else:
            gj = gj + g
        out.append(gj)
    return xp.concatenate(out, axis=1)


def _state(chain, X, Y, Vfree, xp):
    """(V, U, E, g, H) from the free stalk values (B, n), v_1..v_m concatenated."""
    V, off = [X], 0
    for f in chain.maps:
        d = f(V[-1]).shape[1]
        V.append(Vfree[:, off:off + d])
        off += d
    U = [V[k + 1] - f(V[k]) for k, f in enumerate(chain.maps)]
    return (V, U) + energy(chain, V, U, xp, Y)


def smooth_equilibrium(chain: Chain, X, xp=np, *, rtol: float = 1e-10, maxiter: int = MAXITER, U0=None,
                       newton_limit: int = NEWTON_LIMIT) -> SmoothEquilibrium:
    """The two-sided equilibrium of ``chain`` at inputs X (B, d_0) from U0 (default 0: the forward pass).

    Gauss-Newton in output space (the module docstring) for ``GN_STEPS`` steps; the examples still
    unsettled then (the Gauss-Newton rate is linear when the discords are large) continue by Newton's
    method on the exact Hessian over the stalks (:func:`dense_hessian`, n = Σ d_k per example, used
    while n ≤ ``newton_limit``), with the Gauss-Newton Hessian wherever the exact one is not positive
    definite, and the same Armijo safeguard."""
    m = len(chain.maps)
    w2 = [w * w for w in chain.weights]
    B = X.shape[0]
    V0 = sweep(chain, X, None)
    U = [xp.zeros_like(v) for v in V0[1:]] if U0 is None else [u.copy() for u in U0]
    V = V0 if U0 is None else sweep(chain, X, U)
    E, g, H = energy(chain, V, U, xp)
    scale = 1.0 + xp.abs(g).max(axis=1)
    active = xp.ones(B, dtype=bool)
    it = 0
    n = sum(v.shape[1] for v in V[1:])
    gn_steps = min(GN_STEPS, maxiter) if n <= newton_limit else maxiter
    for it in range(gn_steps + 1):
        grads, gmax, R = _u_gradient(chain, V, U, g, w2, xp)
        active = active & ~(gmax <= rtol * scale)
        if it == gn_steps or not bool(active.any()):
            break
        dm = g.shape[1]
        K = sum(xp.matmul(R[k], xp.swapaxes(R[k], 1, 2)) / w2[k] for k in range(m))
        s = sum(xp.einsum("bij,bj->bi", R[k], U[k]) for k in range(m))
        HK = xp.matmul(H, K) if H.ndim == 3 else xp.matmul(H[None], K)
        mu = xp.linalg.solve(xp.eye(dm)[None] + HK, (g - _apply_H(H, s, xp))[..., None])[..., 0]
        D = [-xp.einsum("bi,bij->bj", mu, R[k]) / w2[k] - U[k] for k in range(m)]
        slope = sum((gk * d).sum(axis=1) for gk, d in zip(grads, D))

        def trial(alpha, U=U, D=D):
            Uc = [u + alpha[:, None] * d for u, d in zip(U, D)]
            Vc = sweep(chain, X, Uc)
            return (Vc, Uc) + energy(chain, Vc, Uc, xp)

        V, U, E, g, H = _line_search(E, trial, slope, active, xp)
    _, gmax, _ = _u_gradient(chain, V, U, g, w2, xp)
    consistent = gmax <= rtol * scale
    newton = 0
    if bool(active.any()) and n <= newton_limit and it < maxiter:
        idx = xp.flatnonzero(active)
        Hs = H[idx] if H.ndim == 3 else xp.broadcast_to(H, (idx.shape[0],) + H.shape)
        Vs, Us, Es, gs, ok, gm, newton = _newton(chain, [v[idx] for v in V], [u[idx] for u in U], E[idx], g[idx],
                                                 Hs, chain.targets[idx], scale[idx], rtol, maxiter - it, xp)
        V = [v.copy() for v in V]
        U = [u.copy() for u in U]
        E, consistent, gmax = E.copy(), consistent.copy(), gmax.copy()
        for j in range(len(V)):
            V[j][idx] = Vs[j]
        for j in range(m):
            U[j][idx] = Us[j]
        E[idx], consistent[idx], gmax[idx] = Es, ok, gm
    return SmoothEquilibrium(V, U, E, consistent, gmax, it + newton,
                             {"grad_max": float(gmax.max()) if B else 0.0, "gauss_newton_steps": it,
                              "newton_steps": newton})


def _kinks(chain, V):
    """(positions in the concatenated free stalks, map index, slope) of every coordinate that is the tail of
    a piecewise linear map (relu: slope 0, leaky_relu: its slope)."""
    dims = [v.shape[1] for v in V[1:]]
    off = np.concatenate([[0], np.cumsum(dims)]).astype(int)
    pos, layer, slope = [], [], []
    for k in range(1, len(chain.maps)):
        s = None if chain.kinks is None else chain.kinks[k]
        if s is not None:
            pos.extend(range(off[k - 1], off[k]))
            layer.extend([k] * dims[k - 1])
            slope.extend([s] * dims[k - 1])
    return np.array(pos, dtype=np.int64), np.array(layer, dtype=np.int64), np.array(slope, dtype=float)


def _newton(chain, V, U, E, g, H, Y, scale, rtol, iters, xp):
    """Newton's method over the stalks for a subset of examples (see :func:`smooth_equilibrium`).

    Kinks. A step stops where a unit that is the tail of a piecewise linear map (relu, leaky_relu) would
    cross its kink z_i = 0 (a ratio test, as in the active set: the energy is one smooth piece up to
    there); a unit that reaches the kink (or |z_i| ≤ ε) is held at exactly 0 (sliding) while the rest is solved; with r_i the discord of that map
    and h the rest of ∂E/∂z_i, the one-sided derivatives are g_R = ∂E/∂z_i at the gate 1 and g_L = g_R +
    w²(1 − slope) r_i at the gate slope. The point is consistent (Filippov-stationary) when the free
    gradient vanishes and g_L ≤ 0 ≤ g_R at every held unit; a held unit that violates this is released.
    Returns (V, U, E, g, consistent, ‖gradient‖∞, steps)."""
    w2 = [w * w for w in chain.weights]
    X = V[0]
    B = X.shape[0]
    pos, klayer, kslope = _kinks(chain, V)
    pos_x = xp.asarray(pos)
    nk = len(pos)
    free = xp.concatenate(V[1:], axis=1)
    n = free.shape[1]
    eps = 1e-9 * (1.0 + xp.abs(free).max(axis=1, keepdims=True))
    held = xp.abs(free[:, pos_x]) <= eps if nk else xp.zeros((B, 0), dtype=bool)
    act = xp.ones(B, dtype=bool)
    ok = xp.zeros(B, dtype=bool)
    gm = xp.full(B, xp.inf)
    step = 0
    for step in range(1, iters + 1):
        if nk:  # held units sit exactly on their kink
            free = free.copy()
            free[:, pos_x] = xp.where(held, 0.0, free[:, pos_x])
            V, U, E, g, Hn = _state(chain, X, Y, free, xp)
            H = Hn if Hn.ndim == 3 else xp.broadcast_to(Hn, (B,) + Hn.shape)
        gv = _v_gradient(chain, V, U, g, w2, xp)
        # consistency: free gradient ≈ 0 and the Filippov condition at held units
        gfree = gv.copy()
        filippov_ok = xp.ones(B, dtype=bool)
        if nk:
            gR = gv[:, pos_x]
            r = _kink_discords(U, V, klayer, pos, xp)
            gL = gR + xp.asarray(np.array([w2[k] for k in klayer]) * (1.0 - kslope))[None, :] * r
            tol_s = rtol * scale[:, None]
            violate = held & ((gL > tol_s) | (gR < -tol_s))
            filippov_ok = ~violate.any(axis=1)
            gfree[:, pos_x] = xp.where(held, 0.0, gR)
        gm = xp.abs(gfree).max(axis=1)
        ok = (gm <= rtol * scale) & filippov_ok
        act = act & ~ok
        if not bool(act.any()):
            break
        if nk:  # release the held units that would descend off their kink
            held = held & ~violate
        Hd = dense_hessian(chain, V, U, H, xp)
        if nk:
            Hd = Hd.copy()
            hp = xp.zeros((B, n), dtype=bool)
            hp[:, pos_x] = held
            Hd = xp.where(hp[:, :, None] | hp[:, None, :], 0.0, Hd)
            Hd[:, xp.arange(n), xp.arange(n)] = xp.where(hp, 1.0, Hd[:, xp.arange(n), xp.arange(n)])
            gfree = xp.where(hp, 0.0, gv)
        else:
            gfree = gv
        try:  # numpy raises on an indefinite matrix, cupy returns NaNs: either way, look per example
            if not bool(xp.isfinite(xp.linalg.cholesky(Hd)).all()):
                raise np.linalg.LinAlgError
        except np.linalg.LinAlgError:  # some example's exact Hessian is indefinite: Gauss-Newton there
            lam = xp.linalg.eigvalsh(Hd)[:, 0]
            pd = lam > 1e-10 * xp.abs(Hd).max(axis=(1, 2))
            Hg = dense_hessian(chain, V, U, H, xp, exact=False)
            if nk:
                Hg = xp.where(hp[:, :, None] | hp[:, None, :], 0.0, Hg)
                Hg[:, xp.arange(n), xp.arange(n)] = xp.where(hp, 1.0, Hg[:, xp.arange(n), xp.arange(n)])
            Hd = xp.where(pd[:, None, None], Hd, Hg)
        d = -xp.linalg.solve(Hd, gfree[..., None])[..., 0]
        slope = (gfree * d).sum(axis=1)
        alpha0, block = None, None
        if nk:  # ratio test: stop at the first kink a free unit would cross (its piece ends there)
            z, dz = free[:, pos_x], d[:, pos_x]
            cross = (~held) & (z * dz < 0) & (xp.abs(dz) > xp.abs(z))
            t = xp.where(cross, -z / xp.where(cross, dz, 1.0), xp.inf)
            alpha0 = xp.minimum(t.min(axis=1), 1.0)
            block = cross & (t <= alpha0[:, None])

        def trial(alpha, free=free, d=d):
            return _state(chain, X, Y, free + alpha[:, None] * d, xp)

        (V, U, E, g, Hn), alpha = _line_search(E, trial, slope, act, xp, alpha0, with_alpha=True)
        H = Hn if Hn.ndim == 3 else xp.broadcast_to(Hn, (B,) + Hn.shape)
        free = xp.concatenate(V[1:], axis=1)
        if nk:  # units that reach their kink (the blocking ones of a full ratio-test step) are held there
            held = held | (xp.abs(free[:, pos_x]) <= eps) | (block & (alpha == alpha0)[:, None] & (alpha0 < 1.0)[:, None])
    return V, U, E, g, ok, gm, step


def _kink_discords(U, V, klayer, pos, xp):
    """r_i, the discord of the piecewise map at each kink coordinate (its map's head minus φ(z_i))."""
    dims = [v.shape[1] for v in V[1:]]
    off = np.concatenate([[0], np.cumsum(dims)]).astype(int)
    cols = [U[k][:, p - off[k - 1]] for k, p in zip(klayer.tolist(), pos.tolist())]
    return xp.stack(cols, axis=1)


# ----------------------------------------------------------------------------------------------
# the chain of a network sheaf


def chain_of(net: FeedForward, P, Y, xp=np) -> Chain:
    """The chain of ``net`` at parameters P and targets Y (relu and leaky_relu layers enter with their
    gates 1[z ≥ 0] or slope/1, and their kinks)."""

    def tail(layer):
        if layer.kind == "relu":
            return lambda v: xp.maximum(v, 0.0)
        return lambda v: apply(layer, P, v)

    def pull(layer):
        if layer.kind in ("relu", "nonlinear"):
            return lambda v, G: G * layer_gate(layer, v, xp)[:, None, :]
        return lambda v, G: apply_T(layer, P, G)

    def kink(layer):  # the slope below the kink of a piecewise linear layer
        if layer.kind == "relu":
            return 0.0
        if layer.kind == "nonlinear" and NONLINEARITIES[layer.map.fn].kind == "piecewise":
            return layer.map.arg
        return None

    def curvature(layer):
        if layer.kind == "nonlinear":
            k = kernel(layer.map.fn)
            return lambda v, r: -r * k.d2phi(xp, v, layer.map.arg)
        return None  # affine, or a relu gate (piecewise linear: no curvature off the kink)

    out = net.output
    w2 = out.weight ** 2
    if out.fn == "linear":
        A, _ = out_linear(out, P)
        H = w2 * (A.T @ A)

        def output(vm, Y):
            disc = Y - out_map(out, P, vm)
            return 0.5 * w2 * (disc ** 2).sum(axis=1), -w2 * disc @ A, H
    else:
        k = kernel(out.fn)

        def output(vm, Y):
            return w2 * k.energy(xp, vm, Y), w2 * k.energy_grad(xp, vm, Y), w2 * k.energy_hessian(xp, vm, Y)

    return Chain([tail(l) for l in net.layers], [pull(l) for l in net.layers], [l.weight for l in net.layers],
                 output, Y, [curvature(l) for l in net.layers], [kink(l) for l in net.layers])


def smooth_fast_phase(net: FeedForward, P, X, Y, xp=np, tol: float = 1e-10, with_energy: bool = True) -> Equilibrium:
    """The two-sided equilibrium of a chain with nonlinear hidden layers (tanh, gelu, softplus, sigmoid,
    leaky_relu; relu layers may be mixed in) by :func:`smooth_equilibrium` from the forward pass, as an
    :class:`~.result.Equilibrium`: ``consistent`` marks the examples that reached a (Filippov-)stationary
    point, ``sliding`` counts the units held on a kink, ``S`` gives the relu layers' unit states."""
    r = smooth_equilibrium(chain_of(net, P, Y, xp), X, xp, rtol=tol)
    B = X.shape[0]
    S = {k: xp.where(r.V[k] > 0, 1, xp.where(r.V[k] < 0, -1, 0)).astype(np.int8) for k in net.relu_layers}
    kinks = [k for k, l in enumerate(net.layers) if k >= 1 and (l.kind == "relu" or (
        l.kind == "nonlinear" and NONLINEARITIES[l.map.fn].kind == "piecewise"))]
    sliding = sum(((r.V[k] == 0).sum(axis=1) for k in kinks), xp.zeros(B, dtype=np.int64))
    return Equilibrium(r.V, r.U, output_discord(net, P, r.V[-1], Y, xp), r.energy if with_energy else None, S,
                       r.consistent, sliding, r.iterations, dict(r.info, solver="gauss-newton"))


__all__ = ["Chain", "SmoothEquilibrium", "smooth_equilibrium", "smooth_fast_phase", "chain_of", "sweep",
           "sensitivities", "energy", "dense_hessian", "MAXITER"]
