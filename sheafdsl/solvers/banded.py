"""Banded chain elimination: the pattern solve of a chain in stalk space, for many sliding units.

The energy of a chain at a fixed pattern (see :mod:`.chain`) is

    E(v) = ½ Σ_k w_k² ‖v_k − A_k v_{k−1} − b_k‖² + w_o² ℓ(p),   p = A_o v_m + b_o  (or p = v_m),

with v_0 = x pinned and, for each sliding unit i of a ReLU tail v_k, the constraint v_k[i] = 0. Its
Hessian in (v_1, …, v_m) is block tridiagonal, so it is eliminated along the chain with (d × d) blocks,
whatever the number of constraints. Read as a Gauss–Markov chain (v_k = A_k v_{k−1} + b_k + u_k with
u_k ~ N(0, I/w_k²), the constraints exact observations, the output the only other term), the
elimination is a Kalman filter followed by a smoother:

- forward (filter): μ⁻_k = A_k μ_{k−1} + b_k, Σ⁻_k = A_k Σ_{k−1} A_kᵀ + I/w_k²; conditioning on the
  sliding set M of v_k (mask m): μ_k = μ⁻_k − Σ⁻_k M S⁻¹ M μ⁻_k, Σ_k = Σ⁻_k − Σ⁻_k M S⁻¹ M Σ⁻_k with
  S = M Σ⁻_k M + (I − M) (an SPD system: Σ⁻_k ⪰ I/w_k²);
- output: p = p_f + K ρ with p_f = A_o μ_m + b_o and K = A_o Σ_m A_oᵀ, the output-space problem of
  :mod:`.chain` with no sliding rows (they are eliminated): (I/w_o² + K) ρ = y − p_f for a linear
  output, Newton (:func:`.output.newton`) for sigmoid/softmax;
- backward (the smoother in its adjoint, Bryson–Frazier form): the force φ_k = w_k² u_k on each edge,
  φ_m = A_oᵀ ρ and φ_k = A_{k+1}ᵀ φ_{k+1}, corrected at a vertex with sliding units by
  − M S⁻¹ M (μ⁻_k + Σ⁻_k A_{k+1}ᵀ φ_{k+1}) (the constraint's multiplier); the discords are u_k = φ_k / w_k²
  (the Rauch–Tung–Striebel form v_k = μ_k + Σ_k A_{k+1}ᵀ (Σ⁻_{k+1})⁻¹ (v_{k+1} − μ⁻_{k+1}) gives the same
  point but factorises Σ⁻ at every vertex).

Cost per pattern: O(B Σ_k d_k³), a d × d inverse only at the vertices with sliding units, O(B Σ_k d_k²) memory,
against the output-space solve's O(B Σ_k R² d_k) with R = n_out + (sliding units): the chain piece
(:func:`.chain.solve_pattern`) hands a pattern here when R exceeds the widths (:func:`prefer_banded`).
Both are the exact minimiser of the same strictly convex problem, equal to round-off.
"""

from __future__ import annotations

import numpy as np

from ..lowering.chain import FeedForward, apply, out_linear
from .output import newton

#: the output-space solve is kept while its rows R = n_out + sliding units are at most this times the
#: widest stalk (below it, R² d per layer is cheaper than d³ and needs no per-example factorisation)
ROWS_PER_WIDTH = 2.0


def prefer_banded(net: FeedForward, rows: int) -> bool:
    """Whether a pattern with ``rows`` output-space rows (n_out + sliding units) is solved here."""
    if any(l.kind not in ("relu", "param", "fixed") for l in net.layers):
        return False
    widest = max([l.d_out for l in net.layers] + [net.layers[0].d_in, 1])
    return rows > ROWS_PER_WIDTH * widest


#: a compliance Σ beyond this (times w²) cannot hold its own I/w² part in float64: the system is singular
SINGULAR_SCALE = 1e15


def _singular(Sig, layer, xp) -> None:
    """np.linalg.LinAlgError when the predicted compliance Σ⁻ = A Σ Aᵀ + I/w² is beyond float64 (E621)."""
    top = float(xp.diagonal(Sig, axis1=-2, axis2=-1).max()) * layer.weight ** 2
    if not top <= SINGULAR_SCALE:  # also NaN
        raise np.linalg.LinAlgError(
            f"the compliance of the free stalks reaches {top:.1e} at edge `{layer.name}`, so κ(L_free) ≥ "
            f"{top:.0e}: beyond float64 (1e15)")


#: the widest stalk whose compliance block :func:`compliance_bound` factorises (wider ones are skipped)
BOUND_WIDTH = 128


def compliance_bound(net: FeedForward, P, X, xp=np, limit: float = np.inf):
    """(bound, edge): (B,) lower bounds of κ(L_free) at the forward pattern of each example of ``X``
    (training pins), and the name of the first edge at which the bound of some example exceeds ``limit``
    (None if none does).

    The filter's Σ_k (no sliding units) is the (k, k) block of the prior covariance Σ_Ω of the free
    stalks (v_k = A_k v_{k−1} + b_k + u_k, u_k ~ N(0, I/w_k²)); with the output edge, L_free⁻¹ = Σ_Ω −
    (a rank-n_out correction). By interlacing (a rank-r downdate, then a principal block),
    λ_max(L_free⁻¹) ≥ λ_{r+1}(Σ_Ω) ≥ λ_{r+1}(Σ_k) for every k, r = n_out; and λ_max(L_free) ≥ max_k w_k²
    (a diagonal entry of L_free is at least the weight² of the edge entering it). So

        κ(L_free) ≥ max_k w_k² · max_k λ_{r+1}(Σ_k).

    Cost: one filter pass and an eigvalsh per stalk of width r < d_k ≤ BOUND_WIDTH, O(B Σ_k d_k³). A NaN
    or overflow reads as inf.
    """
    from ..lowering.chain import forward

    V = forward(net, P, X, xp)
    gates = net.gates(V, xp)
    r = net.output.d_out
    w2 = max(l.weight ** 2 for l in net.layers)
    Sig, first = None, None
    top = xp.zeros(X.shape[0])
    with np.errstate(over="ignore", invalid="ignore"):
        for k, layer in enumerate(net.layers):
            noise = xp.eye(layer.d_out) / layer.weight ** 2
            Sig = noise if Sig is None else _propagate(layer, P, Sig, gates.get(k), xp) + noise
            if not r < layer.d_out <= BOUND_WIDTH:
                continue
            Sb = xp.broadcast_to(Sig, (X.shape[0],) + Sig.shape[-2:])
            finite = xp.isfinite(Sb).all(axis=(1, 2))
            lam = xp.linalg.eigvalsh(xp.where(finite[:, None, None], Sb, 0.0))[:, -(r + 1)]
            top = xp.maximum(top, xp.where(finite, lam, xp.inf))
            if first is None and not float(top.max()) * w2 <= limit:
                first = layer.name
            if not bool(finite.any()):
                break
    return top * w2, first


def _propagate(layer, P, Sig, gate, xp):
    """A Σ Aᵀ for Σ (d, d) shared or (B, d, d); a relu gate makes it per example."""
    if layer.kind in ("relu", "nonlinear"):  # diag(σ) or diag(φ'(v))
        if Sig.ndim == 2:
            Sig = Sig[None]
        return Sig * gate[:, :, None] * gate[:, None, :]
    A = P[layer.param] if layer.kind == "param" else layer.matrix
    return A @ Sig @ A.T


def _transpose(layer, P, lam, gate):
    """A_kᵀ λ for λ (B, d_out): the adjoint sweep's step through one edge."""
    if layer.kind == "relu":
        return lam * gate
    A = P[layer.param] if layer.kind == "param" else layer.matrix
    return lam @ A


def solve_banded(net: FeedForward, P, X, Y, S, gates, F, xp=np, tol: float = 1e-10, max_newton: int = 30,
                 rho0=None):
    """(U, rho, newton_ok): the discords u_1..u_m (a list of (B, d_k)), the output force (B, n_out) and
    the output solve's convergence (B,) at the minimiser of E for fixed states ``S`` (module docstring).

    ``gates``: the 0/1 gates of the relu layers at ``S``; ``F``: the forward pass at the pattern (F[1] is
    the first layer's value, which the pinned input fixes).

    The smoother is run in its adjoint (Bryson–Frazier) form: the force φ_k = w_k² u_k on each edge obeys
    φ_m = A_oᵀ ρ, φ_k = A_{k+1}ᵀ φ_{k+1} − M_k S_k⁻¹ M_k (Σ⁻_k A_{k+1}ᵀ φ_{k+1} + μ⁻_k) at a vertex with
    sliding units (mask M_k, S_k as above), φ_k = A_{k+1}ᵀ φ_{k+1} elsewhere: the KKT conditions of E with
    the multipliers of v_k[M] = 0 eliminated. So only the vertices with sliding units factorise anything.
    """
    layers = net.layers
    m = len(layers)
    B = X.shape[0]
    slide = {k: S[k] == 0 for k in S if k >= 1}
    mu = X
    Sig = None  # the pinned input has no spread
    held = {}  # vertex -> (mask, S⁻¹, Σ⁻, μ⁻) where units slide
    for k, layer in enumerate(layers):  # v_{k+1} = A_k v_k + b_k + u_{k+1}
        g = gates.get(k)
        mu_p = F[1] if k == 0 else apply(layer, P, mu, g)
        noise = xp.eye(layer.d_out) / layer.weight ** 2
        if Sig is None:
            Sig_p = noise
        else:
            Sig_p = _propagate(layer, P, Sig, g, xp) + noise
            _singular(Sig_p, layer, xp)
        mu, Sig = mu_p, Sig_p
        mk = slide.get(k + 1)
        if mk is not None and bool(mk.any()):  # condition on the sliding units of v_{k+1}: v[i] = 0
            M = mk.astype(X.dtype)
            Sb = xp.broadcast_to(Sig, (B,) + Sig.shape[-2:])
            SM = Sb * M[:, None, :]  # Σ⁻ M
            Sinv = xp.linalg.inv(SM * M[:, :, None] + xp.eye(layer.d_out) * (1.0 - M)[:, :, None])
            held[k + 1] = (M, Sinv, Sb, mu_p)
            mu = mu_p - xp.einsum("bij,bj->bi", SM, xp.einsum("bij,bj->bi", Sinv, M * mu_p))
            Sig = Sb - SM @ (Sinv @ (M[:, :, None] * Sb))
            Sig = 0.5 * (Sig + Sig.transpose(0, 2, 1))
    out = net.output
    n_out = out.d_out
    if out.fn == "linear":
        A_out, b_out = out_linear(out, P)
    else:
        A_out, b_out = xp.eye(n_out), None
    p_f = mu @ A_out.T + (b_out if b_out is not None else 0.0)
    K = xp.ascontiguousarray(xp.broadcast_to(A_out @ Sig @ A_out.T, (B, n_out, n_out)))  # fresh: solves may write
    lam = xp.full((B, n_out), 1.0 / out.weight ** 2)
    if out.fn == "linear":
        rho = xp.linalg.solve(xp.eye(n_out)[None] * lam[:, :, None] + K, (Y - p_f)[..., None])[..., 0]
        ok = xp.ones(B, dtype=bool)
    else:
        rho, ok = newton(out.fn, K, p_f, Y, lam, n_out, 0, Y, tol, max_newton, xp, rho0)
    U = [None] * m
    phi = rho @ A_out  # φ_m = A_oᵀ ρ
    for k in range(m, 0, -1):  # φ_k: the force on edge k − 1 (into v_k)
        if k in held:
            M, Sinv, Sb, mu_p = held[k]
            t = M * (mu_p + xp.einsum("bij,bj->bi", Sb, phi))  # M (μ⁻ + Σ⁻ A_{k+1}ᵀ φ_{k+1})
            phi = phi - M * xp.einsum("bij,bj->bi", Sinv, t)
        U[k - 1] = phi / layers[k - 1].weight ** 2
        if k > 1:
            phi = _transpose(layers[k - 1], P, phi, gates.get(k - 1))
    return U, rho, ok


__all__ = ["ROWS_PER_WIDTH", "BOUND_WIDTH", "SINGULAR_SCALE", "compliance_bound", "prefer_banded", "solve_banded"]
