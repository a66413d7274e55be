"""The fast phase of a shallow network: one ReLU layer on the input side, one output row.

This is the active-set loop of :func:`sheafdsl.training.equilibrium.exact_equilibrium` (same start,
same ratio test, same sliding rules, same cycle guard, so the same equilibrium up to round-off) for
the chains where the whole pattern solve collapses to one scalar per example. It applies when

- the first edge e_1 : x → v_1 is linear (pre-activation pre = A_1 x + b_1, fixed: x is pinned),
- the second edge e_2 : v_1 → v_2 is the only ReLU gate (states s ∈ {+1, 0, −1}^d, σ = [s = +1]),
- every later edge is linear, and the output edge has one row (linear, or a sigmoid logit).

Then the row sensitivities J_j of the output to the discord entering v_j are fixed vectors for j ≥ 2
(g := J_2 ∈ ℝ^d is the linear chain v_2 → output as a row) and J_1 = σ ⊙ g, so the output force
ρ = w_o²(y − p) solves

    p_f = g · (σ ⊙ pre) + β,      k(σ) = 1/w_o² + Σ_{j≥2} ‖J_j‖²/w_j² + Σ_i σ_i g_i² / w_1²,
    ρ = (y − p_f) / k(σ)   (linear output; a monotone scalar equation for a sigmoid),
    v_1 = pre + σ ⊙ g ρ / w_1²   (inactive units: pre; sliding units: 0),

β being the output of the chain v_2 → ŷ at v_2 = 0 (its biases). The loop needs only v_1, the states
and ρ; a sliding unit's one-sided slopes are g_L = −w_1² pre_i and g_R = g_L − g_i ρ. The other
stalks and discords (u_2 = g ρ / w_2², u_j = J_j ρ / w_j², v_{j+1} = A_j v_j + b_j + u_j) are formed
once, for the whole batch, from the final states and ρ. Each iteration is a handful of (B, d)
array operations, against a forward pass, a backward sweep and a reconstruction in the general loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..lowering.backend import to_numpy
from . import equilibrium as _eq  # circular: equilibrium imports this module; names are looked up at call time


@dataclass
class ShallowChain:
    """Per-parameter constants of a shallow chain (see the module docstring); shapes (d,) unless noted."""

    g: object  # J_2: the row v_2 → output
    g_in: object  # g / w_1²: v_1 moves by g_in ρ on active units
    g2_in: object  # g² / w_1²: active units' share of k(σ)
    rows: list  # J_j / w_j² for j = 2..m: u_j = rows[j − 2] ρ
    c0: float  # 1/w_o² + Σ_{j≥2} ‖J_j‖²/w_j²
    beta: float  # the chain's output at v_2 = 0
    w_in2: float  # w_1²
    w_o2: float  # w_o²


def is_shallow(net) -> bool:
    """The chain has the shape this module solves (parameter-independent)."""
    layers = net.layers
    return (len(layers) >= 2 and layers[0].kind != "relu" and layers[1].kind == "relu"
            and all(l.kind != "relu" for l in layers[2:])
            and net.output.d_out == 1 and net.output.fn in ("linear", "sigmoid"))


def shallow_chain(net, P, xp) -> ShallowChain:
    """The constants of :class:`ShallowChain` for parameters ``P``."""
    layers, out = net.layers, net.output
    if out.fn == "linear":
        A_out, b_out = _eq._out_linear(out, P)
        g, beta = A_out[0], (float(b_out[0]) if b_out is not None else 0.0)
    else:
        g, beta = xp.ones(1), 0.0
    rows = []  # J_j / w_j², built from J_m down to J_2
    c0 = 1.0 / out.weight ** 2
    for layer in layers[:0:-1]:  # e_m .. e_2: J_j = J_{j+1} A_j; β picks up g · b_j on the way
        w2 = layer.weight ** 2
        r = g if w2 == 1.0 else g / w2
        rows.append(r)
        c0 += float(g @ r)
        if layer.kind == "relu":
            break
        if layer.bias is not None:
            beta += float(g @ P[layer.bias])
        g = g @ (P[layer.param] if layer.kind == "param" else layer.matrix)
    rows.reverse()
    w_in2 = layers[0].weight ** 2
    g_in = g if w_in2 == 1.0 else g / w_in2
    return ShallowChain(g, g_in, g * g_in, rows, c0, beta, w_in2, out.weight ** 2)


def _force(net, C: ShallowChain, sigf, pre, Y, tol, xp, rho0):
    """ρ (B, 1) and the scalar solver's success flags (B,; None for a linear output) for gates ``sigf``."""
    k = sigf @ C.g2_in + C.c0
    p_f = (sigf * pre) @ C.g + C.beta
    if net.output.fn == "linear":
        return ((Y[:, 0] - p_f) / k)[:, None], None
    return _eq._sigmoid_scalar(p_f[:, None], (k - 1.0 / C.w_o2)[:, None], Y, C.w_o2, tol, xp, rho0=rho0)


def _solve(net, C: ShallowChain, ss, ps, ys, tol, xp, rho0):
    """The exact solve at states ``ss`` (B, d): (0/1 gates, ρ (B, 1), scalar-solver flags, a = ρ g_in,
    u_1, v_1 = pre + u_1, flat indices of the sliding units). Active units move by a, inactive ones
    not at all, sliding ones take u_1 = −pre so that v_1 is exactly 0."""
    sigf = (ss == 1).astype(ps.dtype)
    rho, solved = _force(net, C, sigf, ps, ys, tol, xp, rho0)
    a = rho * C.g_in
    u1 = sigf * a
    fs = (ss == 0).ravel().nonzero()[0]
    if fs.shape[0]:
        u1.ravel()[fs] = -ps.ravel()[fs]
    return sigf, rho, solved, a, u1, ps + u1, fs


def shallow_active_set(net, P, X, Y, xp, tol, max_iter, init, with_energy=True, pre1=None):
    """The active-set loop of ``equilibrium._active_set`` for a shallow chain (:func:`is_shallow`).

    ``init``: (V, S) start (V[1] feasible for S[1]); default the forward pass. ``pre1``: the first
    layer's output A_1 x + b_1 when the caller has it. Returns an ``Equilibrium``.

    Units are addressed by flat indices into the (B, d) arrays; the few that violate, slide or hit a
    surface are handled as short index lists (numpy's per-call cost, not arithmetic, dominates here).
    """
    C = shallow_chain(net, P, xp)
    pre = _eq._apply(net.layers[0], P, X) if pre1 is None else pre1
    if init is None:
        z, s = pre, xp.where(pre >= 0, 1, -1).astype(np.int8)
    else:
        z, s = init[0][1], init[1][1]
    rho0 = None
    if net.output.fn != "linear" and init is not None:  # warm start of the scalar solve
        rho0 = C.w_o2 * _eq._out_disc(net, P, init[0][-1], Y, xp)
    d = pre.shape[1]
    max_iter, eps_z = _eq.loop_limits(d, Y, max_iter, xp)
    mscale = 1e-9 * (1.0 + C.w_o2)
    # the loop's arrays hold the unsettled examples (global indices gid; None: the whole batch)
    gid, zs, ss, ps, ys, r0 = None, z, s, pre, Y, rho0
    unsettled = None
    visited: dict[int, set] = {}
    cycled = 0
    it = 0
    while True:
        it += 1
        nb = ss.shape[0]
        sigf, rho, solved, a, u1, zb, fs = _solve(net, C, ss, ps, ys, tol, xp, r0)
        # ratio test on the segment z -> zb: the first unit to reach z = 0 from its side
        fv = (ss * zb < -eps_z).ravel().nonzero()[0]
        move = None
        if fv.shape[0]:
            zr = zs.ravel()[fv]
            t = xp.maximum(zr / (zr - zb.ravel()[fv]), 0.0)  # zr is 0 or of the other sign: t in [0, 1]
            rv = fv // d
            first = xp.ones(rv.shape[0], dtype=bool)  # rv is sorted: the first entry of each row
            first[1:] = rv[1:] != rv[:-1]
            starts = first.nonzero()[0]
            rows, tmin = rv[starts], xp.minimum.reduceat(t, starts)
            mrow = (tmin < 1.0).nonzero()[0]
            if mrow.shape[0]:
                move = xp.zeros(nb, dtype=bool)
                move[rows[mrow]] = True
                tm = xp.full(nb, 1.0)
                tm[rows] = xp.minimum(tmin, 1.0)
        newS = ss
        release = None
        if fs.shape[0]:  # KKT at a pattern minimiser: a sliding unit whose one-sided slopes allow descent leaves
            # slopes g_L = −w_1² pre and g_R = g_L − g ρ = −w_1² (pre + a): candidates have g_L > 0 or
            # g_R < 0, and only those are held to the tolerance
            p_s = ps.ravel()[fs]
            za = p_s + a.ravel()[fs]
            fw = ((p_s < 0) | (za > 0)).nonzero()[0]
            if fw.shape[0]:
                fs, p_s, za = fs[fw], p_s[fw], za[fw]
                rs = fs // d
                gL, gR = -C.w_in2 * p_s, -C.w_in2 * za
                mtol = mscale * (1.0 + xp.abs(rho[rs, 0]) / C.w_o2)  # per example: |y − p| = |ρ|/w_o²
                want = (gL > mtol) | (gR < -mtol)
                if move is not None:
                    want &= ~move[rs]
                fw = want.nonzero()[0]
            if fw.shape[0]:
                newS = ss.copy()
                newS.ravel()[fs[fw]] = xp.where((gL + gR)[fw] >= 0, -1, 1).astype(np.int8)
                release = xp.zeros(nb, dtype=bool)
                release[rs[fw]] = True
        zn = zb
        if move is not None:
            zn = zb.copy()
            mr = move.nonzero()[0]
            zm = zs[mr]
            zn[mr] = zm + tm[mr, None] * (zb[mr] - zm)
            hit = (t <= tm[rv] * (1 + 1e-9) + 1e-15) & move[rv]
            fh = fv[hit.nonzero()[0]]
            if newS is ss:
                newS = ss.copy()
            # from the interior: enter the adjacent piece; already on the surface: slide
            newS.ravel()[fh] = xp.where(zs.ravel()[fh] == 0, 0, -ss.ravel()[fh]).astype(np.int8)
            zn.ravel()[fh] = 0.0
            finished = ~move
        else:
            finished = xp.ones(nb, dtype=bool)
        if release is not None:
            finished &= ~release
            cyc = xp.zeros(nb, dtype=bool)
            host = to_numpy(newS)
            for i in _eq.cycle_guard(visited, release, np.arange(nb) if gid is None else to_numpy(gid),
                                     lambda i: host[i].tobytes()):
                finished[i] = cyc[i] = True
                cycled += 1
            ok = finished & ~cyc
        else:
            ok = finished
        if solved is not None:
            ok = ok & solved
        if gid is None:
            if move is None and release is None:  # the common case: one solve settles the batch
                V1, U1, rho_all, S_all, cons, sig_all = zb, u1, rho, ss, ok, sigf
                break
            # the whole batch's results; later iterations overwrite the unsettled examples' rows
            V1, U1, rho_all, S_all, cons, sig_all = zb, u1, rho, newS, ok, sigf
            keep = gid = unsettled = (~finished).nonzero()[0]
        else:
            fi = finished.nonzero()[0]
            if fi.shape[0] == 0 and it < max_iter:  # nobody settled: the same examples go on as they are
                zs, ss = zn, newS
                r0 = None if r0 is None else rho
                continue
            g_fi = gid[fi]
            V1[g_fi], U1[g_fi], rho_all[g_fi] = zb[fi], u1[fi], rho[fi]
            S_all[g_fi], cons[g_fi] = newS[fi], ok[fi]
            keep = (~finished).nonzero()[0]
            gid = gid[keep]
        if gid.shape[0] == 0:
            break
        if it >= max_iter:  # out of iterations: the current pattern's solution, not consistent
            ss = newS[keep]
            _, rho, _, _, u1, zb, _ = _solve(net, C, ss, pre[gid], Y[gid], tol, xp, None if r0 is None else rho[keep])
            V1[gid], U1[gid], rho_all[gid], S_all[gid], cons[gid] = zb, u1, rho, ss, False
            break
        zs, ss, ps, ys = zn[keep], newS[keep], pre[gid], Y[gid]
        r0 = None if r0 is None else rho[keep]
    if unsettled is not None:  # the gates of the examples the first solve did not settle
        sig_all[unsettled] = S_all[unsettled] == 1
    V, U = [X, V1], [U1]
    for j, layer in enumerate(net.layers[1:], start=1):  # u_j = J_j ρ / w_j², v_j = A_j v_{j−1} + b_j + u_j
        u = rho_all * C.rows[j - 1]
        U.append(u)
        V.append(_eq._apply(layer, P, V[-1], sig_all if j == 1 else None) + u)
    out_disc = _eq._out_disc(net, P, V[-1], Y, xp)
    energy = _eq.equilibrium_energy(net, P, V, U, Y, xp) if with_energy else None
    return _eq.Equilibrium(V, U, out_disc, energy, {1: S_all}, cons, None, it, {"cycled": cycled}, [1])
