"""Chain elimination: the exact pattern solve of a feed-forward chain, a piece solver of the driver.

The chain (x = v_0 → v_1 → … → v_m → ŷ, read from the IR by :func:`sheafdsl.lowering.chain.feedforward`)
pinned at both ends: x to the data, ŷ to the target y. The equilibrium c* minimises the energy
E(c) = ½ Σ_e w_e² ‖(δc)_e‖² over the free stalks (the output edge of a classifier uses the cross-entropy
energy w_o² CE(y, φ(z)) instead), and the training residual is R(θ; x, y) = E(c*).

Exact solve for a fixed pattern (:func:`solve_pattern`)
-------------------------------------------------------
Because every free vertex is the head of exactly one identity-headed edge, the free stalks are in
bijection with the discords u_k = (δc)_{e_k}: v_k = A_k v_{k−1} + b_k + u_k. Eliminating them
(unitriangular), the output is p = p_f + J u with p_f the forward pass at the pattern and J the map
from edge discords to the output. Minimising ½ Σ_k w_k²‖u_k‖² + w_o² ℓ(p) gives

    u_k = J_kᵀ ρ / w_k²,   ρ = w_o² (y − φ(p)),   p = p_f + K ρ,   K = Σ_k J_k J_kᵀ / w_k²,

so only an n_L × n_L problem remains (the output-space Schur complement): (I/w_o² + K) ρ = y − p_f for a
linear output (u = Jᵀ(I + JJᵀ)⁻¹ r with unit weights), a few Newton steps for sigmoid/softmax
(:mod:`.output`). J is formed by n_L backward sweeps through the chain (vectorised as one sweep of an
(B, n_L, d) tensor, kept one shared (n_L, d) matrix until the sweep meets a gate), then one more sweep
gives u. A sliding unit of a deep ReLU layer (z_t = 0 held) is one more constraint row with infinite
weight in the same system (its discord on the incoming edge becomes −(pre-activation)); with one linear
output row those rows are a Schur update on the one-row solution, solved only for the examples that have
them (:func:`_slide_rows`).

This solver is **exact, not local**: the sweeps carry information across edges. The local reference is
the heat equation (:mod:`.diffusion`), which must reach the same point; the parameter update that follows
(:func:`sheafdsl.training.update.local_gradients`) is local either way.

The pattern loop around it (ratio test, release rule, cycle guard, iteration limits, subset compaction)
is the driver's (:mod:`.driver`); :class:`ChainPiece` plugs the pattern solve into it, and the shallow
kernel (:mod:`.shallow`) replaces it on the chains where the solve is one scalar per example.

E is not convex (the ReLU edge has a concave kink where a > 0), so an example can have several
consistent stationary points; a descent method stops at one of them. Each is a valid equilibrium for
the envelope theorem.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import Diagnostic, SheafError
from ..ir import TRAINING
from ..lowering.backend import outer
from ..lowering.chain import (FeedForward, apply, apply_T, equilibrium_energy, forward, out_linear, out_map,
                              output_discord, output_energy)
from .banded import prefer_banded, solve_banded
from .driver import OFF, ON, RELEASE_TOL, SLIDE, active_set, loop_limits
from .output import newton, sigmoid_scalar
from .result import Equilibrium, SolveResult, Warm
from .shallow import ShallowPiece, is_shallow, reread_states

#: batch × stalk width × outputs above which the chain loop compacts to the unsettled examples at once
SUBSET_WORK = 2_000_000


@dataclass
class PatternSolution:
    V: list  # equilibrium vertex values v_0..v_m at this pattern (sliding tails exactly 0)
    U: list  # discords u_1..u_m
    out_disc: object  # output discord (B, n_out)
    energy: object  # per-example energy (B,)
    newton_ok: object  # (B,) bool
    rho: object = None  # (B, n_out): the output force w_o²(y − φ(p*)) (a warm start for the next solve)


class StepMaps:
    """The chain's maps at fixed parameters P, held by a piece solver for the pattern solves of one fast phase
    (θ does not move inside it): per layer the forward map's right factor A_kᵀ as a contiguous array (BLAS
    multiplies by a transposed view markedly slower at these widths), A_k for the backward sweeps, and w_k²."""

    def __init__(self, net: FeedForward, P, xp=np):
        self.net, self.P = net, P
        self.At, self.A, self.w2 = [], [], []
        for layer in net.layers:
            A = None
            if layer.kind in ("param", "fixed"):
                A = P[layer.param] if layer.kind == "param" else layer.matrix
            self.A.append(A)
            self.At.append(None if A is None else xp.ascontiguousarray(A.T))
            self.w2.append(layer.weight ** 2)

    def apply(self, k: int, v, gate=None):
        """A_k v + b_k for layer k (v: (B, d_in)); the gated value for a relu layer."""
        layer = self.net.layers[k]
        At = self.At[k]
        if At is None:
            return apply(layer, self.P, v, gate)
        out = v @ At
        if layer.bias is not None:
            out += self.P[layer.bias]
        return out


def sliding_units(S, xp=np) -> dict:
    """{relu layer k ≥ 1: (rows, cols)} of the sliding units of states S (dict k -> (B, d_k)), only the layers
    that have some."""
    out = {}
    for k, s in S.items():
        if k >= 1:
            r, c = xp.nonzero(s == SLIDE)
            if r.shape[0]:
                out[k] = (r, c)
    return out


def solve_pattern(net: FeedForward, P, X, Y, S, xp=np, tol: float = 1e-10, max_newton: int = 30,
                  with_energy: bool = True, F=None, rho0=None, pre1=None, *, maps=None, gates=None,
                  slides=None) -> PatternSolution:
    """Minimise E exactly for fixed unit states ``S`` (dict layer index -> (B, d) int8 in {+1, 0, −1}).

    Inactive and sliding units have gate 0; a sliding unit also holds its tail value at 0. Cost: a
    forward pass, one backward sweep of the output row ((B, d), a vector shared by the batch until the
    first gate), a scalar per example, one more sweep; with coupled sliding rows (relu layers k ≥ 2) a
    Schur update on that one-row solution for the examples that have them (:func:`_slide_rows`), or, for
    sigmoid/softmax and several outputs, the (n_out + n_slide)-row solve (:func:`_coupled_discords`).

    Optional, from a piece solver that has them: ``maps`` (:class:`StepMaps` at P), ``gates`` (the 0/1 relu
    gates of S as floats, contiguous arrays) and ``slides`` (:func:`sliding_units` of S).
    """
    B = X.shape[0]
    layers = net.layers
    maps = maps or StepMaps(net, P, xp)
    # 0/1 gates as floats: a product with them is exactly the gated value (and faster than with a bool)
    if gates is None:
        gates = {k: (S[k] == 1).astype(X.dtype) for k in S}
    if slides is None:
        slides = sliding_units(S, xp)
    if F is None:  # the forward pass at the pattern (the caller may pass it when S is the forward pattern)
        F = [X]
        for k in range(len(layers)):
            if k == 0 and pre1 is not None:  # v_1's value does not depend on the pattern: x is pinned
                F.append(pre1)
            else:
                F.append(maps.apply(k, F[-1], gates.get(k)))
    out = net.output
    # sliding rows: a unit of relu layer k (tail vertex k) whose own tail value depends on free
    # discords upstream (k >= 2) becomes a constraint row; for k == 1 the row decouples (see _finish).
    deep = [k for k in slides if k >= 2]
    counts = None
    if deep:
        counts = xp.zeros(B, dtype=np.int64)
        for k in deep:
            counts += xp.bincount(slides[k][0], minlength=B)
    if deep and prefer_banded(net, out.d_out + int(counts.max())):  # many sliding rows: along the chain
        U, rho, ok = solve_banded(net, P, X, Y, S, gates, F, xp, tol, max_newton, rho0)
    elif out.d_out == 1 and out.fn == "linear":
        U, rho, ok = _one_row_discords(net, P, Y, gates, F[-1], xp, tol, rho0, maps=maps,
                                       slide_rows=(F, {k: slides[k] for k in deep}) if deep else None)
    elif out.d_out == 1 and out.fn != "softmax" and (not deep or bool((counts == 0).any())):
        if not deep:
            U, rho, ok = _one_row_discords(net, P, Y, gates, F[-1], xp, tol, rho0, maps=maps)
        else:  # the examples without coupled rows take the one-row solve, the others the coupled Newton solve
            coupled = counts > 0
            masks = {k: S[k] == SLIDE for k in deep}
            i0, i1 = _flat(~coupled), _flat(coupled)
            U0, r0, ok0 = _one_row_discords(net, P, Y[i0], {k: g[i0] for k, g in gates.items()}, F[-1][i0], xp, tol,
                                            _take(rho0, i0), maps=maps)
            U1, r1, ok1 = _coupled_discords(net, P, Y[i1], {k: g[i1] for k, g in gates.items()}, F[-1][i1],
                                            {k: F[k][i1] for k in deep}, {k: mk[i1] for k, mk in masks.items()},
                                            counts[i1], xp, tol, max_newton, _take(rho0, i1))
            U = [_merge(a, b, i0, i1, B, xp) for a, b in zip(U0, U1)]
            rho, ok = _merge(r0, r1, i0, i1, B, xp), _merge(ok0, ok1, i0, i1, B, xp)
    else:
        masks = {k: S[k] == SLIDE for k in deep}
        U, rho, ok = _coupled_discords(net, P, Y, gates, F[-1], {k: F[k] for k in deep}, masks,
                                       counts if deep else None, xp, tol, max_newton, rho0)
    sol = _finish(net, P, X, Y, S, gates, F, U, ok, xp, with_energy, maps=maps, slides=slides)
    sol.rho = rho
    return sol


def _flat(mask):
    return mask.nonzero()[0]


def _take(a, idx):
    return None if a is None else a[idx]


def _merge(a, b, ia, ib, B, xp):
    """The (B, ...) array whose rows ``ia`` are ``a`` and rows ``ib`` are ``b``."""
    out = xp.empty((B,) + tuple(a.shape[1:]), dtype=a.dtype)
    out[ia] = a
    out[ib] = b
    return out


def _coupled_discords(net, P, Y, gates, Fm, Fslide, slide_masks, counts, xp, tol, max_newton, rho0):
    """(U, ρ (B, n_out), Newton flags): the discords u_1..u_m at the pattern minimiser from the output rows and
    the coupled sliding rows (relu layers k ≥ 2; ``Fslide[k]`` the forward values there, ``counts`` the rows
    per example), by one batched sweep of the (B, R, d) sensitivity tensor and an R × R solve per example."""
    B = Y.shape[0]
    layers = net.layers
    m = len(layers)
    n_out = net.output.d_out
    deep = list(slide_masks)
    n_slide = int(counts.max()) if deep and B else 0
    R = n_out + n_slide
    out = net.output
    # seeds at each vertex: (B, R, d_j)
    seeds: dict[int, object] = {}
    if out.fn == "linear":
        A_out, b_out = out_linear(out, P)
        seed_m = A_out
        p_f = Fm @ A_out.T + (b_out if b_out is not None else 0.0)
    else:
        seed_m = xp.eye(n_out)
        p_f = Fm
    if n_slide:
        seed_m = xp.concatenate([xp.broadcast_to(seed_m, (B, n_out, out.d_in)), xp.zeros((B, n_slide, out.d_in))],
                                axis=1)
    # else the rows stay one (R, d) matrix shared by the batch until the sweep meets a gate
    seeds[m] = seed_m
    q = xp.zeros((B, R))
    q[:, :n_out] = p_f
    lam = xp.ones((B, R))
    lam[:, :n_out] = 1.0 / out.weight ** 2
    if n_slide:
        offset = xp.zeros(B, dtype=np.int64)
        for k in deep:
            mask = slide_masks[k]
            b_idx, i_idx = xp.nonzero(mask)
            slot = n_out + offset[b_idx] + (xp.cumsum(mask, axis=1) - 1)[b_idx, i_idx]
            sd = seeds.get(k)
            if sd is None:
                sd = xp.zeros((B, R, layers[k].d_in))
                seeds[k] = sd
            else:
                sd = sd.copy()
                seeds[k] = sd
            sd[b_idx, slot, i_idx] = 1.0
            q[b_idx, slot] = Fslide[k][b_idx, i_idx]
            lam[b_idx, slot] = 0.0
            offset = offset + mask.sum(axis=1)
    # backward sweep: sensitivity of the rows to vertex j (= to the discord u_j entering it)
    # Gs[j]: (R, d_j) while shared, (B, R, d_j) after a gate; parent[j]: the shared rows a gate at
    # vertex j was applied to (J_j = parent ⊙ σ_j, so J_j J_jᵀ = J_j parentᵀ and J_jᵀρ = σ_j ⊙ parentᵀρ)
    Gs: dict[int, object] = {}
    parent: dict[int, object] = {}
    g = seeds[m]
    for j in range(m, 0, -1):
        Gs[j] = g
        if j > 1:
            layer = layers[j - 1]
            if layer.kind == "relu" and g.ndim == 2:
                parent[j - 1] = g
                if j == 2:  # J_1 = parent ⊙ σ_1 is never formed: gram(1) and pull(1) read parent and σ_1
                    break
            g = apply_T(layer, P, g, gates.get(j - 1))
            if j - 1 in seeds and j - 1 != m:
                g = g + seeds[j - 1]
    newton_ok = xp.ones(B, dtype=bool)

    def gram(j):
        if j in parent:  # J_j J_jᵀ = parent diag(σ_j) parentᵀ (σ_j is 0/1): one (B, d) × (d, R²) product
            Pj = parent[j]
            return (gates[j] @ (Pj[:, None, :] * Pj[None, :, :]).reshape(R * R, -1).T).reshape(B, R, R)
        Gj = Gs[j]
        if Gj.ndim == 2:
            return Gj @ Gj.T
        return Gj @ Gj.transpose(0, 2, 1)

    K = None  # Σ_j gram(j) / w_j², in place where the shapes allow (every gram is a fresh array)
    for j in range(1, m + 1):
        gj = _over_w2(gram(j), layers[j - 1].weight)
        if K is None:
            K = gj
        elif K.ndim >= gj.ndim:
            K += gj
        else:
            K = K + gj
    if K.shape != (B, R, R):  # (broadcast_to costs tens of µs even when the shape already is the batch's)
        K = xp.broadcast_to(K, (B, R, R))
    t = xp.zeros((B, R))
    t[:, :n_out] = Y
    if out.fn == "linear":
        rho = xp.linalg.solve(xp.eye(R)[None] * lam[:, :, None] + K, (t - q)[..., None])[..., 0]
    else:
        rho, newton_ok = newton(out.fn, K, q, t, lam, n_out, n_slide, Y, tol, max_newton, xp, rho0)

    def pull(j):  # J_jᵀ ρ per example
        if j in parent:
            return (rho @ parent[j]) * gates[j]
        Gj = Gs[j]
        if Gj.ndim == 2:
            return rho @ Gj
        return xp.einsum("brd,br->bd", Gj, rho)

    U = [_over_w2(pull(j), layers[j - 1].weight) for j in range(1, m + 1)]
    return U, rho[:, :n_out], newton_ok


def _over_w2(a, w):
    """a / w² for a fresh array ``a``, in place (and no pass at all for w = 1)."""
    if w != 1.0:
        a /= w ** 2
    return a


def _one_row_discords(net, P, Y, gates, Fm, xp, tol=1e-10, rho0=None, maps=None, slide_rows=None):
    """(U, ρ (B, 1), flags): the common case of one output row (linear or sigmoid), with (B, d) sweeps and no
    batched solves.

    Linear: ρ = (y − p_f) / (1/w_o² + Σ_k ‖J_k‖²/w_k²); sigmoid: the scalar equation of
    :func:`sigmoid_scalar`; then u_k = J_kᵀ ρ / w_k². ``slide_rows`` = (F, {k: (rows, cols)}) adds the
    coupled sliding rows of a linear output by a Schur update on that solution (:func:`_slide_rows`).
    """
    layers = net.layers
    m = len(layers)
    out = net.output
    A_mats = maps.A if maps is not None else [P[l.param] if l.kind == "param" else l.matrix for l in layers]
    if out.fn == "linear":
        A_out, _ = out_linear(out, P)
        p_f = out_map(out, P, Fm)
        g = A_out[0]  # (d_m,): the same for every example until a gate or map varies it
    else:
        p_f = Fm
        g = xp.ones(1)
    # backward sweep; a row stays one vector shared by the batch until a relu gate makes it (B, d).
    # gated[j]: J_j = σ ⊙ J_{j+1} with J_{j+1} that shared vector, so ‖J_j‖² = σ · (J_{j+1})² (a
    # matrix-vector product) and J_j ρ = σ ⊙ (J_{j+1} ρ), exactly (σ is 0/1)
    Gs = [None] * (m + 1)
    gated = [False] * (m + 1)
    for j in range(m, 0, -1):
        Gs[j] = g
        if j > 1:
            layer = layers[j - 1]
            if layer.kind == "relu":
                gated[j - 1] = getattr(g, "ndim", 0) == 1
                # a gated row is only formed when the sweep goes on below it (J_1 never is), or when the
                # sliding rows need it
                g = g * gates[j - 1] if j - 1 > 1 or not gated[j - 1] or slide_rows else None
            else:
                g = g @ A_mats[j - 1]
    k1 = 1.0 / net.output.weight ** 2
    for j in range(1, m + 1):
        gj = Gs[j]
        if gated[j]:
            n2 = gates[j] @ (Gs[j + 1] * Gs[j + 1])
        elif gj.ndim == 1:
            n2 = gj @ gj
        else:
            n2 = xp.einsum("bd,bd->b", gj, gj)
        w2 = layers[j - 1].weight ** 2
        k1 = k1 + (n2 if w2 == 1.0 else n2 / w2)
    ok = xp.ones(Y.shape[0], dtype=bool)
    slide = None
    if out.fn == "linear":
        rho = (Y - p_f) / (k1[:, None] if getattr(k1, "ndim", 0) else k1)
        if slide_rows is not None:
            slide = _slide_rows(net, A_mats, gates, slide_rows[0], slide_rows[1], Gs, k1, rho, xp)
    else:
        kk = k1 - 1.0 / out.weight ** 2
        kk = kk[:, None] if getattr(kk, "ndim", 0) else kk
        rho, ok = sigmoid_scalar(p_f, kk, Y, out.weight ** 2, tol, xp, rho0=rho0)
    U = [None] * m
    raw = None  # J_{j+1} ρ
    for j in range(m, 0, -1):
        if gated[j]:
            raw = raw * gates[j]
        elif Gs[j].ndim == 1 and Gs[j].shape[0] > 1 and rho.shape[1] == 1:
            raw = outer(rho, Gs[j], xp)
        else:
            raw = Gs[j] * rho
        w2 = layers[j - 1].weight ** 2
        U[j - 1] = raw if w2 == 1.0 else raw / w2
    if slide is not None:  # the sliding rows' own pull-back, on the examples that have them
        ex, pulls = slide
        for j, pj in pulls.items():
            U[j - 1][ex] += pj
    return U, rho, ok


def _slide_rows(net, A_mats, gates, F, slides, Gs, k1, rho, xp):
    """The coupled sliding rows of a linear one-row output as a Schur update of the one-row solution, only on
    the examples that have them; ``rho`` (B, 1) is updated in place, and (examples, {j: H_jᵀ μ / w_j²})
    returned: the pull-back u_j += H_jᵀ μ / w_j².

    A sliding unit i of relu layer k ≥ 2 holds v_k[i] = F_k[i] + H u = 0 (H: its sensitivity to the discords,
    rows e_i swept down from vertex k). With J the output row, K_oo = J W⁻² Jᵀ, K_so = H W⁻² Jᵀ,
    K_ss = H W⁻² Hᵀ and κ = 1/w_o² + K_oo (the one-row system), the KKT system

        [κ  K_osᵀ; K_so  K_ss] [ρ; μ] = [y − p_f; −F_s]

    is solved from the one-row ρ⁰ = (y − p_f)/κ: (K_ss − K_so K_soᵀ/κ) μ = −F_s − K_so ρ⁰, ρ = ρ⁰ − K_soᵀμ/κ
    (an SPD system of the example's own sliding rows: K_ss ⪰ I/w_k² on them; padded rows are identity).

    K_ss, K_so and the pull-back are each one batched product over all vertices at once: with the blocks
    M_j = [H_j; J_j] / w_j laid side by side along the stalks, M = [M_1 … M_m] (nc, R + 1, Σ d_j), the Gram
    matrix M Mᵀ = Σ_j M_j M_jᵀ holds K_ss (rows and columns :R) and K_so (column R), and M_{:R}ᵀ μ holds every
    H_jᵀ μ / w_j (one product instead of one per vertex; the same sums in another order, equal to round-off)."""
    layers = net.layers
    deep = sorted(slides)
    # the examples with coupled rows, in order (the rows of each layer are row-major: sorted by example), and
    # each example's position among them; index arithmetic, not xp.unique (a sort, and most of this
    # function's per-call cost on the few rows a step has)
    B = rho.shape[0]
    if len(deep) == 1:
        r = slides[deep[0]][0]
        first = xp.ones(r.shape[0], dtype=bool)
        first[1:] = r[1:] != r[:-1]
        ex = r[first]
    else:
        mark = xp.zeros(B, dtype=bool)
        for k in deep:
            mark[slides[k][0]] = True
        ex = _flat(mark)
    nc = ex.shape[0]
    pos = xp.empty(B, dtype=np.int64)
    pos[ex] = xp.arange(nc)
    # each row: its example's position e, its slot among that example's rows (layer by layer), its unit
    place, counts = {}, xp.zeros(nc, dtype=np.int64)
    for k in deep:
        r, c = slides[k]  # row-major, so e is sorted
        e = pos[r]
        place[k] = (e, counts[e] + xp.arange(e.shape[0]) - xp.searchsorted(e, e), c, r)
        counts = counts + xp.bincount(e, minlength=nc)
    R = int(counts.max())
    # the rows' sensitivities to the discords entering each vertex j ≤ the deepest sliding layer
    Hs, h = {}, None
    for j in range(deep[-1], 0, -1):
        if j in place:
            e, sl, c, _ = place[j]
            seed = xp.zeros((nc, R, layers[j].d_in))
            seed[e, sl, c] = 1.0
            h = seed if h is None else h + seed
        Hs[j] = h
        if j > 1:
            layer = layers[j - 1]
            h = h * gates[j - 1][ex][:, None, :] if layer.kind == "relu" else h @ A_mats[j - 1]
    M = xp.empty((nc, R + 1, sum(Hj.shape[2] for Hj in Hs.values())))
    cols, a = {}, 0
    for j, Hj in Hs.items():
        Jc, d, w = (Gs[j] if Gs[j].ndim == 1 else Gs[j][ex]), Hj.shape[2], layers[j - 1].weight
        cols[j] = slice(a, a + d)
        M[:, :R, a:a + d] = Hj if w == 1.0 else Hj / w
        M[:, R, a:a + d] = Jc if w == 1.0 else Jc / w
        a += d
    Kfull = xp.matmul(M, xp.swapaxes(M, 1, 2))
    Kss, Kso = Kfull[:, :R, :R], Kfull[:, :R, R]
    kc = k1[ex] if getattr(k1, "ndim", 0) else xp.full(nc, k1)
    Fs = xp.zeros((nc, R))
    for k, (e, sl, c, r) in place.items():
        Fs[e, sl] = F[k][r, c]
    Sc = Kss - Kso[:, :, None] * Kso[:, None, :] / kc[:, None, None]
    pad = xp.arange(R)[None, :] >= counts[:, None]
    if bool(pad.any()):
        pe, ps = xp.nonzero(pad)
        Sc[pe, ps, ps] = 1.0
    r0 = rho[ex, 0]
    rhs = -Fs - Kso * r0[:, None]
    if R == 1:  # one row per example: the division that the batched LU does for a 1 × 1 system, bit for bit
        mu = rhs / Sc[:, :, 0]
    else:
        mu = xp.linalg.solve(Sc, rhs[..., None])[..., 0]
    rho[ex, 0] = r0 - (Kso * mu).sum(axis=1) / kc
    back = (mu[:, None, :] @ M[:, :R, :])[:, 0, :]  # (nc, Σ d_j): every H_jᵀ μ / w_j
    pulls = {}
    for j, sl in cols.items():
        w = layers[j - 1].weight
        pulls[j] = back[:, sl] if w == 1.0 else back[:, sl] / w
    return ex, pulls


def _finish(net, P, X, Y, S, gates, F, U, newton_ok, xp, with_energy, maps=None, slides=None):
    """Discords -> equilibrium stalks (and the energy)."""
    layers = net.layers
    m = len(layers)
    maps = maps or StepMaps(net, P, xp)
    if slides is None:
        slides = sliding_units(S, xp)
    # relu layer 1 (tail v_1 fed by the pinned input): a sliding unit's incoming discord is −pre
    if 1 in slides:  # then v_1 = pre + (−pre) is exactly 0 on the sliding units (few: index them)
        r, c = slides[1]
        U[0][r, c] = -F[1][r, c]  # U[0] is fresh from the sweep
    V = [X]
    for k in range(m):
        # v_k = A_k v_{k−1} + b_k + u_k (the first layer's input is pinned: reuse the forward value)
        if k == 0:
            v = F[1] + U[0]
        else:  # a fresh array from the map: the discord is added in place
            v = maps.apply(k, V[-1], gates.get(k))
            v += U[k]
        if k >= 1 and k + 1 in slides:  # v_{k+1} is the tail of a relu layer: sliding units sit exactly at 0
            r, c = slides[k + 1]
            v[r, c] = 0.0
        V.append(v)
    if with_energy:
        e_out, out_disc, _ = output_energy(net, P, V[m], Y, xp)
        energy = e_out + sum(0.5 * layers[k].weight ** 2 * (U[k] ** 2).sum(axis=1) for k in range(m))
    else:
        out_disc, energy = output_discord(net, P, V[m], Y, xp), None
    return PatternSolution(V, U, out_disc, energy, newton_ok)


def kkt_ok(net: FeedForward, S, sol: PatternSolution, xp=np):
    """(B,) bool: the pattern solution ``sol`` for states ``S`` is a consistent stationary point.

    Active units have z ≥ 0, inactive z ≤ 0 (both to round-off), sliding units satisfy
    g_L = w_in² u_in ≤ 0 ≤ g_R = g_L − w_relu² a (to a relative tolerance), and Newton converged.
    """
    ok = sol.newton_ok.copy()
    layers = net.layers
    scale_m = 1e-9 * (1.0 + xp.abs(sol.out_disc).max(axis=1)) * (1.0 + net.output.weight ** 2)
    for k in net.relu_layers:
        if k == 0:
            continue
        z, s = sol.V[k], S[k]
        eps = 1e-12 * (1.0 + xp.abs(z).max(axis=1, keepdims=True))
        bad = ((s == 1) & (z < -eps)) | ((s == -1) & (z > eps))
        sl = s == 0
        if bool(sl.any()):
            gL = layers[k - 1].weight ** 2 * sol.U[k - 1]
            gR = gL - layers[k].weight ** 2 * sol.U[k]
            bad |= sl & ((gL > scale_m[:, None]) | (gR < -scale_m[:, None]))
        ok &= ~bad.any(axis=1)
    return ok

class ChainPiece:
    """The driver's piece solver for a chain: :func:`solve_pattern`. The unit values are the tails of the free
    ReLU layers (k ≥ 1; a ReLU fed by the pinned input never moves), concatenated (B, u)."""

    def __init__(self, net, P, X, Y, xp, tol, eps_z, pre1=None):
        self.net, self.P, self.X, self.Y, self.xp, self.tol, self.eps_z = net, P, X, Y, xp, tol, eps_z
        layers = net.layers
        self.free = [k for k in net.relu_layers if k >= 1]
        self.slices, a = {}, 0
        for k in self.free:
            self.slices[k] = slice(a, a + layers[k].d_in)
            a += layers[k].d_in
        self.units = a
        # a ReLU on the pinned input: its states are fixed by the data
        self.fixed = {0: xp.where(X >= 0, ON, -1).astype(np.int8)} if 0 in net.relu_layers else {}
        self.pre1 = (apply(layers[0], P, X) if pre1 is None else pre1) if layers[0].kind != "relu" else None
        width = sum(l.d_out for l in layers) + net.output.d_out
        self.subsets = X.shape[0] * width * net.output.d_out > SUBSET_WORK
        self.maps = StepMaps(net, P, xp)  # the parameters do not move during the solve
        m = len(layers)
        self._keys = [f"V{j}" for j in range(1, m + 1)] + [f"U{j}" for j in range(1, m + 1)]  # the solves' fields
        self._rows = self._data = None

    def states(self, S) -> dict:
        """The per-layer view {k: (B, d_k)} of concatenated states S (B, u), with the fixed layer's."""
        out = {k: S[:, sl] for k, sl in self.slices.items()}
        if self.fixed:
            out[0] = self.fixed[0]
        return out

    def join(self, per_layer: dict):
        """Per-layer values {k: (B, d_k)} concatenated to (B, u) (no copy for one free layer)."""
        if len(self.free) == 1:
            return per_layer[self.free[0]]
        if not self.free:
            return self.xp.zeros((self.X.shape[0], 0))
        return self.xp.concatenate([per_layer[k] for k in self.free], axis=1)

    def _gather(self, rows):
        if rows is None:
            return self.X, self.Y, self.pre1, self.fixed.get(0)
        if rows is not self._rows:
            f0 = self.fixed.get(0)
            self._rows, self._data = rows, (self.X[rows], self.Y[rows], None if self.pre1 is None else self.pre1[rows],
                                            None if f0 is None else f0[rows])
        return self._data

    def solve(self, S, rows, warm, fs):
        Xs, Ys, p1, f0 = self._gather(rows)
        xp, u = self.xp, self.units
        Sd, gates, slides = {}, {}, {}
        for k, sl in self.slices.items():  # contiguous gates: a product with a column block of (nb, u) is slow
            Sd[k] = S[:, sl]
            gates[k] = (Sd[k] == ON).astype(Xs.dtype)
        if fs.shape[0]:  # the sliding units per layer, from the driver's flat list
            r, c = fs // u, fs % u
            for k, sl in self.slices.items():
                m = (c >= sl.start) & (c < sl.stop) if len(self.slices) > 1 else None
                rk, ck = (r, c - sl.start) if m is None else (r[m], c[m] - sl.start)
                if rk.shape[0]:
                    slides[k] = (rk, ck)
        if f0 is not None:
            Sd[0], gates[0] = f0, (f0 == ON).astype(Xs.dtype)
        sol = solve_pattern(self.net, self.P, Xs, Ys, Sd, xp, self.tol, with_energy=False, rho0=warm, pre1=p1,
                            maps=self.maps, gates=gates, slides=slides)
        z = self.join({k: sol.V[k] for k in self.free}) if self.free else xp.zeros((Xs.shape[0], 0))
        fields = dict(zip(self._keys, sol.V[1:] + sol.U))
        fields["out"] = sol.out_disc
        return _ChainSolution(z, sol.newton_ok, fields, sol.rho if warm is not None else None, sol, self)

    def result(self, dr, with_energy=True) -> Equilibrium:
        net, F = self.net, dr.fields
        m = len(net.layers)
        V = [self.X] + [F[f"V{j}"] for j in range(1, m + 1)]
        U = [F[f"U{j}"] for j in range(1, m + 1)]
        energy = equilibrium_energy(net, self.P, V, U, self.Y, self.xp) if with_energy else None
        return Equilibrium(V, U, F["out"], energy, self.states(dr.S), dr.consistent, None, dr.iterations,
                           {"cycled": dr.cycled, "piece": "chain"}, self.free)


class _ChainSolution:
    __slots__ = ("z", "ok", "fields", "warm", "_sol", "_piece")

    def __init__(self, z, ok, fields, warm, sol, piece):
        self.z, self.ok, self.fields, self.warm, self._sol, self._piece = z, ok, fields, warm, sol, piece

    def slopes(self, fs):
        """g_L = w_in² u_in (the inactive side's slope of E in z) and g_R = g_L − w_relu² a at the sliding
        units ``fs`` (flat indices into the concatenated (nb, u) units)."""
        piece, U, xp = self._piece, self._sol.U, self._piece.xp
        layers = piece.net.layers
        r, c = fs // piece.units, fs % piece.units
        if len(piece.free) == 1:
            k = piece.free[0]
            gL = layers[k - 1].weight ** 2 * U[k - 1][r, c]
            return gL, gL - layers[k].weight ** 2 * U[k][r, c]
        gL, gR = xp.empty(r.shape[0]), xp.empty(r.shape[0])
        for k, sl in piece.slices.items():
            m = (c >= sl.start) & (c < sl.stop)
            if bool(m.any()):
                rr, cc = r[m], c[m] - sl.start
                g = layers[k - 1].weight ** 2 * U[k - 1][rr, cc]
                gL[m], gR[m] = g, g - layers[k].weight ** 2 * U[k][rr, cc]
        return gL, gR

    def scale(self, r):
        """(1 + w_o²)(1 + max|y − p|) per example."""
        w2 = self._piece.net.output.weight ** 2
        return (1.0 + w2) * (1.0 + abs(self._sol.out_disc[r]).max(axis=1))


def exact_equilibrium(net: FeedForward, P, X, Y, xp=np, tol: float = 1e-10, max_iter: int | None = None,
                      init=None, guess=None, forward_values=None, with_energy: bool = True,
                      kernel: str = "auto", pins_max: float | None = None, refresh: bool = False,
                      target_max: float | None = None) -> Equilibrium:
    """The two-sided equilibrium by the exact pattern solve and the active-set driver.

    ``guess``: optional unit states (dict layer -> (B, d) int8), e.g. each example's final pattern at
    the previous training step. The guess is solved once and kept for the examples where it passes
    the KKT check (:func:`kkt_ok`): it is then a consistent stationary point whatever its origin. The
    other examples go through the active-set loop from the forward pass. ``forward_values``: the
    forward pass [v_0..v_m] when the caller has it. ``init``: (V, S) start of the loop (V feasible
    for S: tail signs agree, sliding tails 0); default the forward pass. ``kernel``: "auto" uses the
    shallow piece solver (:mod:`.shallow`) on the chains it covers (one ReLU layer, one output row),
    "general" always chain elimination (the same equilibrium, up to round-off). ``pins_max``: max |pin|
    over X and Y when the caller has it (:attr:`ChainPins.pins_max`), ``target_max`` max |y| likewise
    (:attr:`ChainPins.target_max`). ``refresh``: ``init`` is a previous
    equilibrium (a warm start), whose ReLU states are refreshed at the current parameters
    (:func:`refreshed_start`; a shallow chain reads its one layer's off its fixed row,
    :meth:`ShallowPiece.refreshed`).
    """
    if kernel not in ("auto", "general"):
        raise ValueError(f"kernel must be 'auto' or 'general', not {kernel!r}")
    if net.nonlinear_layers:  # smooth hidden maps: Gauss-Newton from the forward pass (solvers.smooth)
        from .smooth import smooth_fast_phase

        return smooth_fast_phase(net, P, X, Y, xp, tol, with_energy)
    if guess is not None and net.relu_layers:
        Vf = forward_values if forward_values is not None else forward(net, P, X, xp)
        sol = solve_pattern(net, P, X, Y, guess, xp, tol, with_energy=with_energy)
        ok = kkt_ok(net, guess, sol, xp)
        B = X.shape[0]
        free = [k for k in net.relu_layers if k >= 1]
        sliding = sum(((guess[k] == 0).sum(axis=1) for k in free), xp.zeros(B, dtype=np.int64))
        eq = Equilibrium(sol.V, sol.U, sol.out_disc, sol.energy, {k: v.copy() for k, v in guess.items()}, ok, sliding, 1)
        if bool(ok.all()):
            return eq
        bad = xp.flatnonzero(~ok)
        n_guessed = int(ok.sum())
        Sf = {k: xp.where(Vf[k][bad] >= 0, 1, -1).astype(np.int8) for k in net.relu_layers}
        rest = exact_equilibrium(net, P, X[bad], Y[bad], xp, tol, max_iter, ([v[bad] for v in Vf], Sf),
                                 with_energy=with_energy, kernel=kernel)
        for j in range(len(eq.V)):
            eq.V[j][bad] = rest.V[j]
        for j in range(len(eq.U)):
            eq.U[j][bad] = rest.U[j]
        eq.out_disc[bad] = rest.out_disc
        if with_energy:
            eq.energy[bad] = rest.energy
        for k in eq.S:
            eq.S[k][bad] = rest.S[k]
        eq.consistent[bad] = rest.consistent
        eq.sliding[bad] = rest.sliding
        eq.iterations = 1 + rest.iterations
        eq.info = dict(rest.info, guessed=n_guessed)
        return eq
    if init is None and forward_values is not None:
        init = (forward_values, {k: xp.where(forward_values[k] >= 0, 1, -1).astype(np.int8) for k in net.relu_layers})
    pre1 = forward_values[1] if forward_values is not None and len(forward_values) > 1 else None
    if init is None:
        V = forward(net, P, X, xp)
        S = {k: xp.where(V[k] >= 0, ON, -1).astype(np.int8) for k in net.relu_layers}
        pre1 = V[1] if pre1 is None and net.layers[0].kind != "relu" else pre1
    else:  # not copied: the driver does not write into the caller's arrays
        V, S = [X] + list(init[0][1:]), dict(init[1])
    if pins_max is None:  # as the general pieces
        pins_max = float(max(abs(X).max(), abs(Y).max())) if Y.shape[0] else 0.0
    shallow = kernel == "auto" and is_shallow(net)
    free = [k for k in net.relu_layers if k >= 1]
    maxiter, eps_z = loop_limits(sum(net.layers[k].d_in for k in free), pins_max, max_iter)
    rho0 = None
    if refresh and not shallow and 1 in free and net.layers[0].kind != "relu":
        if pre1 is None:
            pre1 = apply(net.layers[0], P, X)
        V, S, rho0 = refreshed_start(net, P, Y, V, S, pre1, _refresh_margin(net, Y, eps_z, target_max), xp)
    if shallow:
        piece = ShallowPiece(net, P, X, Y, xp, tol, eps_z, pre1)
        z, S0 = V[1], S[1]
        if refresh:  # the same start as refreshed_start, from the shallow chain's fixed row (no sweep)
            rho0 = net.output.weight ** 2 * output_discord(net, P, V[-1], Y, xp)
            z, S0 = piece.refreshed(z, S0, rho0, _refresh_margin(net, Y, eps_z, target_max))
    else:
        piece = ChainPiece(net, P, X, Y, xp, tol, eps_z, pre1)
        z, S0 = piece.join({k: V[k] for k in free}), piece.join({k: S[k] for k in free})
        if not free:
            S0 = xp.zeros((X.shape[0], 0), dtype=np.int8)
    warm = rho0
    if warm is None and net.output.fn != "linear" and init is not None:  # warm Newton start: the force there
        warm = net.output.weight ** 2 * output_discord(net, P, V[-1], Y, xp)
    dr = active_set(piece, z, S0, maxiter=maxiter, warm=warm)
    return piece.result(dr, with_energy)


def refreshed_start(net: FeedForward, P, Y, V, S, pre1, margin: float, xp=np):
    """A warm start (V, S) (the previous equilibrium of each example, feasible for its states) with the states
    of its ReLU layers refreshed at the current parameters; returns (V, S, ρ_w).

    At a pattern without deep sliding rows every discord is the output force pulled back: u_j = J_jᵀρ / w_{j−1}²
    (w_{j−1} the weight of the edge into v_j), J_j the output row's sensitivity to vertex j. With the warm
    force ρ_w = w_o² (y − φ(v_m)) in place of the pattern's own ρ, swept back once at the warm gates (h_j = J_jᵀρ_w), the equilibrium is
    predicted by one forward pass at the current parameters: v_j = A_{j−1} v_{j−1} + b_{j−1} + h_j / w_{j−1}²
    (v_1's input is the pinned x: pre = A_1 x + b_1). At the tail of a ReLU layer k, from pre_k (the value
    entering v_k) and on_k = pre_k + h_{k+1} / w_{k−1}² (the σ-free pull-back, the value if active), each
    unit's state is read off as at an equilibrium: OFF where pre < 0 (v = pre), ON where on ≥ 0 (v = on),
    else SLIDE (v = 0). Only the units whose warm state that reading contradicts by more than ``margin``
    change (warm OFF with pre > margin; warm ON with on < −margin; warm SLIDE with pre < −margin or
    on > margin; :func:`~sheafdsl.solvers.shallow.reread_states`), each to a value on its new side; a deeper
    unit (k ≥ 2) read as sliding keeps its warm state (a deep sliding unit is a constraint row of every
    pattern solve, and the prediction, made with the warm force, is least sure there). So the start stays
    feasible and the driver (:mod:`.driver`) still decides every unit exactly from there; the
    forward pass goes on from the re-read values (v = on, pre or 0 by the new state).

    An example with a sliding unit on a deeper layer (k ≥ 2) has discords that are not the force's pull-back
    (its sliding rows add H_jᵀμ, also to u_1): its warm states are kept as they are. An equilibrium at
    unchanged parameters therefore stays where it is: for every other example the forward pass reproduces it
    to round-off, far below ``margin``. Needs a ReLU on v_1 (the caller's condition: layer 0 feeds v_1).

    Why: a training step revisits an example after the parameters have moved, and a unit whose state the
    step contradicts costs the driver a ratio-test iteration (a whole pattern solve); read at the current
    parameters the warm pattern is nearly the final one.
    Shapes: V = [v_0..v_m] (B, d_k), S {relu layer: (B, d) int8}, pre1 (B, d_1), Y (B, n_out).
    """
    layers, out = net.layers, net.output
    m = len(layers)
    S_in, S = S, {k: xp.ascontiguousarray(s) for k, s in S.items()}  # often column blocks of the driver's (B, u) states
    gate = {k: (s == ON).astype(V[-1].dtype) for k, s in S.items()}
    rho = out.weight ** 2 * output_discord(net, P, V[-1], Y, xp)
    g = xp.dot(rho, out_linear(out, P)[0]) if out.fn == "linear" else rho
    h = {m: g}  # h[j] = J_jᵀ ρ_w at the warm gates (B, d_j)
    for k in range(m - 1, 1, -1):  # layers[k]: v_k -> v_{k+1}
        layer = layers[k]
        g = g * gate[k] if layer.kind == "relu" else g @ (P[layer.param] if layer.kind == "param" else layer.matrix)
        h[k] = g
    # the examples with deep sliding units keep their deeper layers' warm states (few: from flat indices)
    slid = {k: _flat((S[k] == SLIDE).ravel()) for k in S if k >= 2}  # (layer 1's: reread_states finds them)
    keep = [f // S[k].shape[1] for k, f in slid.items() if f.shape[0]]
    keep = xp.concatenate(keep) if keep else None
    newV, newS, changed = list(V), dict(S_in), False
    v = None  # the forward pass's prediction at the current vertex
    last = max(S)
    for j in range(1, last + 1):
        layer, w2 = layers[j - 1], layers[j - 1].weight ** 2
        if j == 1:
            pre = pre1
        elif layer.kind != "relu":  # a relu layer's value is formed below, at its tail
            pre = apply(layer, P, v)
        if j in S:  # the tail of relu layer j: re-read its states; v_{j+1} = σ ⊙ on + h_{j+1} / w_j²
            hj = h[j + 1] if w2 == 1.0 else h[j + 1] / w2
            on = pre + hj
            vj, sj = reread_states(pre, on, V[j], S[j], margin, xp, fsl=slid.get(j), keep=keep, slide=j == 1)
            if sj is not S[j]:
                newV[j], newS[j], changed = vj, sj, True
                gate[j] = (sj == ON).astype(on.dtype)
            if j < last:
                wr = layers[j].weight ** 2
                v = on * gate[j]
                v += h[j + 1] if wr == 1.0 else h[j + 1] / wr
        elif j < last and layer.kind != "relu":
            v = pre + (h[j] if w2 == 1.0 else h[j] / w2)
    if not changed:
        return V, S_in, rho
    return newV, newS, rho


def _refresh_margin(net: FeedForward, Y, eps_z: float, target_max: float | None = None) -> float:
    """How far a warm state must be contradicted before :func:`refreshed_start` changes it: beyond the
    driver's side tolerance ε_z and its release tolerance at a sliding unit of the first layer
    (RELEASE_TOL · (1 + w_o²)(1 + max|y − p|), in v_1's units: / w_1²), so that an equilibrium stays put. ``target_max``: max|y| when the caller has it."""
    w_o2 = net.output.weight ** 2
    if target_max is None:
        target_max = float(abs(Y).max()) if Y.shape[0] else 0.0
    top = target_max + 1.0  # |y − p| ≤ max|y| + 1 for a sigmoid or softmax p
    return max(1e4 * eps_z, 10 * RELEASE_TOL * (1.0 + w_o2) * (1.0 + top) / net.layers[0].weight ** 2)


class ChainPins(Mapping):
    """The data pins of a chain with training pins, validated once: the read-only mapping {input stalk: X
    (B, d_in), target stalk: Y (B, n_out)} of float arrays.

    :func:`chain_pins` builds it (the checks and errors of :func:`sheafdsl.solvers.core.boundary_values`,
    E505–E508, E520); :meth:`take` gives the pins of some examples (rows of checked arrays, so not checked
    again). :func:`~sheafdsl.solvers.solve` and :func:`solve_chain` skip the validation for it: a trainer
    validates its training set once, not at every step.
    """

    __slots__ = ("net", "X", "Y", "_pins_max", "_target_max")

    def __init__(self, net: FeedForward, X, Y, pins_max=None):  # unchecked: build it by chain_pins / take
        self.net, self.X, self.Y, self._pins_max, self._target_max = net, X, Y, pins_max, None

    def __getitem__(self, name):
        if name == self.net.input:
            return self.X
        if name == self.net.target:
            return self.Y
        raise KeyError(name)

    def __iter__(self):
        return iter((self.net.input, self.net.target))

    def __len__(self) -> int:
        return 2

    @property
    def batch(self) -> int:
        return self.X.shape[0]

    @property
    def pins_max(self) -> float:
        """max |pin| over X and Y (the driver's side tolerance scales with it)."""
        if self._pins_max is None:
            X, Y = self.X, self.Y
            self._pins_max = float(max(abs(X).max(), abs(Y).max())) if X.shape[0] else 0.0
        return self._pins_max

    @property
    def target_max(self) -> float:
        """max |y| over Y (the warm start's re-read margin scales with it; a full-batch trainer's pins are
        one object, so it is computed once)."""
        if self._target_max is None:
            self._target_max = float(abs(self.Y).max()) if self.Y.shape[0] else 0.0
        return self._target_max

    def take(self, idx) -> "ChainPins":
        """The pins of examples ``idx`` (None: all, this object)."""
        return self if idx is None else ChainPins(self.net, self.X[idx], self.Y[idx])


def chain_pins(net: FeedForward, values, xp=np) -> ChainPins:
    """``values`` ({input stalk: X, target stalk: Y}) validated as :func:`sheafdsl.solvers.core.boundary_values`
    does (the same errors) and converted to float arrays, as :class:`ChainPins`."""
    if type(values) is ChainPins and values.net is net:
        return values
    X, Y, _ = _chain_values(net, values, xp)
    return ChainPins(net, X, Y)


def solve_chain(net: FeedForward, P, values, *, warm=None, rtol: float = 1e-10, maxiter=None, piece=None, xp=np,
                record_trace: bool = False) -> SolveResult:
    """The two-sided equilibrium of a chain (training pins) as a :class:`SolveResult`: the shallow piece
    solver where it applies (or ``piece="shallow"``), else chain elimination (``piece="chain"``); from the
    forward pass, or from ``warm`` (a previous result or :class:`Warm` of the same examples).

    ``values``: {input stalk: X, target stalk: Y}, checked here, or :class:`ChainPins` (checked once before).
    The stalks and discords are :attr:`SolveResult.equilibrium`; the cochain, residual, energy, gates and
    the general-order unit states are computed on first access (:class:`ChainResult`).
    """
    if type(values) is not ChainPins or values.net is not net:
        values = chain_pins(net, values, xp)
    X, Y, B = values.X, values.Y, values.X.shape[0]
    if piece == "shallow" and not is_shallow(net):
        raise SheafError(Diagnostic("E509", "the `shallow` piece solver needs one ReLU layer after a linear one "
                                    "and one output row"))
    init = fwd = None
    if warm is not None:
        w = warm if type(warm) is Warm else Warm.of(warm)
        if w.V is None:
            raise SheafError(Diagnostic("E507", "this warm start is a general cochain, not a chain's stalks"))
        if w.V[1].shape[0] != B:
            raise SheafError(Diagnostic("E507", f"the warm start holds {w.V[1].shape[0]} examples, the batch {B}"))
        init = (w.V, w.S)  # w.V[0] is not read: the input is X
        fwd = w.forward
    eq = exact_equilibrium(net, P, X, Y, xp, tol=rtol, max_iter=maxiter, init=init, with_energy=record_trace,
                           kernel="general" if piece == "chain" else "auto", forward_values=fwd,
                           pins_max=values.pins_max, refresh=init is not None, target_max=values.target_max)
    return ChainResult(net, P, X, Y, eq, xp, rtol, eq.info.get("piece", "chain"))


def _chain_values(net: FeedForward, values, xp):
    """(X, Y, B): the chain's data pins, validated as :func:`sheafdsl.solvers.core.boundary_values` does
    (the same errors), from the chain's own two data stalks (no graph scan)."""
    from .core import boundary_values

    values = values or {}
    X, Y = values.get(net.input), values.get(net.target)
    d_in, d_out = net.layers[0].d_in, net.output.d_out
    if (len(values) != 2 or getattr(X, "ndim", 0) != 2 or getattr(Y, "ndim", 0) != 2 or X.shape[1] != d_in
            or Y.shape[1] != d_out or X.shape[0] != Y.shape[0] or X.dtype != float or Y.dtype != float
            or not bool(xp.isfinite(X).all() & xp.isfinite(Y).all())):
        arrays, B = boundary_values(net.graph, TRAINING, values, xp)  # raises the precise error, or converts
        return arrays[net.input], arrays[net.target], B
    return X, Y, X.shape[0]


class ChainResult(SolveResult):
    """A chain :class:`Equilibrium` as a :class:`SolveResult`. The stalks and discords are
    :attr:`equilibrium`; the cochain, energy, info, sliding counts and the general-order unit states are
    computed on first access, the residual and gates by the general operators' certificate at the chain's
    equilibrium (one definition for every solver). Building one is a few attribute stores: a trainer
    builds one per step and reads only :attr:`equilibrium`."""

    def __init__(self, net: FeedForward, P, X, Y, eq: Equilibrium, xp, rtol: float, piece: str):
        self._chain = (net, P, X, Y, xp, rtol)
        self.converged = self.consistent = eq.consistent
        self.iterations, self.trace, self.method, self.equilibrium, self.piece = eq.iterations, None, "exact", eq, piece
        self.layout = net.layout
        if eq.energy is not None:
            self.energy = eq.energy

    def _compute(self, name: str):
        net, P, X, Y, xp, rtol = self._chain
        eq = self.equilibrium
        if name == "cochain":
            return stalks_cochain(net, eq.V, Y, xp)
        if name == "energy":
            return equilibrium_energy(net, P, eq.V, eq.U, Y, xp)
        if name == "info":
            return int((~eq.consistent).sum())
        if name == "sliding":
            return eq.sliding
        if name == "state":  # the units in the general solvers' order: the free coordinates that are ReLU tails
            G = net.graph
            parts = [eq.S[k] for k in sorted(eq.S, key=lambda k: G.nodes[net.layers[k].tail]["offset"]) if k >= 1]
            return xp.concatenate(parts, axis=1) if parts else xp.zeros((X.shape[0], 0), dtype=np.int8)
        if name in ("residual", "gates"):
            from ..lowering.operators import SheafOperators
            from .active_set import finalize, scale

            prob = SheafOperators(net.graph, P, xp).restrict(TRAINING)
            c = self.cochain
            cert = finalize(prob, c.copy(), self.state, scale(prob, c), eq.consistent, eq.iterations, None,
                            "exact", rtol)
            self.residual, self.gates = cert.residual, cert.gates
            return getattr(cert, name)
        return super()._compute(name)


def chain_result(net: FeedForward, P, X, Y, eq: Equilibrium, xp, rtol: float, piece: str) -> SolveResult:
    """Wrap a chain :class:`Equilibrium` as a :class:`SolveResult` (:class:`ChainResult`)."""
    return ChainResult(net, P, X, Y, eq, xp, rtol, piece)


def stalks_cochain(net: FeedForward, V, Y, xp):
    """The (B, N) cochain of a chain's stalks V = [v_0..v_m] with the target stalk at Y."""
    layout = net.layout
    c = xp.zeros((Y.shape[0], max(sl.stop for sl in layout.values())))
    for j, v in enumerate(net.vertices):
        c[:, layout[v]] = V[j]
    c[:, layout[net.target]] = Y
    return c


def chain_equilibrium(net: FeedForward, P, res: SolveResult, Y, xp) -> Equilibrium:
    """The :class:`Equilibrium` (stalks, discords, output discord, energy, states) of a chain read off a
    general solver's result (the heat equation's, say), for the local update."""
    V = [res.cochain[:, net.layout[v]] for v in net.vertices]
    U = [V[k + 1] - apply(layer, P, V[k], None if layer.kind != "relu" else (V[k] > 0).astype(V[k].dtype))
         for k, layer in enumerate(net.layers)]  # a sliding tail is exactly 0: relu(0) = 0 either way
    S = {k: xp.where(V[k] > 0, ON, xp.where(V[k] < 0, -1, SLIDE)).astype(np.int8) for k in net.relu_layers}
    out = output_discord(net, P, V[-1], Y, xp)
    energy = equilibrium_energy(net, P, V, U, Y, xp)
    return Equilibrium(V, U, out, energy, S, res.converged, None, res.iterations,
                       {"piece": res.method}, [k for k in net.relu_layers if k >= 1])
