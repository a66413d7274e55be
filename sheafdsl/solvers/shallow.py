"""The fast phase of a shallow network: one ReLU layer on the input side, one output row.

A piece solver of the active-set driver (:mod:`.driver`: the same start, ratio test, release rule and
cycle guard as every other piece solver, so the same equilibrium up to round-off) for the chains where
the whole pattern solve collapses to one scalar per example. It applies when

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
array operations, against a forward pass, a backward sweep and a reconstruction in the chain
elimination (:mod:`.chain`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..lowering.backend import outer
from ..lowering.chain import apply, equilibrium_energy, out_linear, output_discord
from .driver import OFF, ON, SLIDE
from .output import sigmoid_scalar
from .result import Equilibrium


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
    """The chain has the shape this module solves (parameter-independent; remembered on the chain)."""
    got = net.__dict__.get("_shallow")
    if got is None:
        layers = net.layers
        got = net.__dict__["_shallow"] = (
            len(layers) >= 2 and layers[0].kind != "relu" and layers[1].kind == "relu"
            and all(l.kind not in ("relu", "nonlinear") for l in layers[2:])
            and net.output.d_out == 1 and net.output.fn in ("linear", "sigmoid"))
    return got


def shallow_chain(net, P, xp) -> ShallowChain:
    """The constants of :class:`ShallowChain` for parameters ``P``."""
    layers, out = net.layers, net.output
    if out.fn == "linear":
        A_out, b_out = out_linear(out, P)
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
    return sigmoid_scalar(p_f[:, None], (k - 1.0 / C.w_o2)[:, None], Y, C.w_o2, tol, xp, rho0=rho0)


def reread_states(pre, on, v1, s, margin, xp, fsl=None, keep=None, slide=True):
    """A ReLU layer's warm states (B, d) int8 and tail values v1, re-read at the current pre-activations
    ``pre`` and active values ``on`` (= pre + σ-free pull-back of the warm force; see
    :func:`sheafdsl.solvers.chain.refreshed_start`): a unit changes only where its warm state is contradicted
    by more than ``margin`` (OFF with pre > margin; ON with on < −margin; SLIDE with pre < −margin or
    on > margin), to OFF (v = pre) where pre < 0, else ON (v = on) where on ≥ 0, else SLIDE (v = 0);
    ``fsl``: the flat indices of the sliding units when the caller has them; ``keep``: examples (indices)
    whose units stay as they are (None: none); ``slide`` False: a unit read as SLIDE keeps its warm state.
    Returns (v1, s) (the inputs themselves when nothing changes, else fresh arrays)."""
    lo, hi = on < -margin, pre > margin
    bad = hi ^ ((lo ^ hi) & (s == ON))  # lo where ON, else hi (a sliding unit's entry is overwritten below)
    if fsl is None:
        fsl = (s == SLIDE).ravel().nonzero()[0]  # few: tested on their own
    if fsl.shape[0]:
        bad.ravel()[fsl] = (pre.ravel()[fsl] < -margin) | (on.ravel()[fsl] > margin)
    if keep is not None:
        bad[keep] = False
    fb = bad.ravel().nonzero()[0]
    if fb.shape[0] == 0:
        return v1, s
    p, o = pre.ravel()[fb], on.ravel()[fb]
    new = xp.where(p < 0, OFF, xp.where(o >= 0, ON, SLIDE)).astype(s.dtype)
    if not slide:  # a unit read as sliding keeps its warm state
        keep_u = new != SLIDE
        fb, p, o, new = fb[keep_u], p[keep_u], o[keep_u], new[keep_u]
        if fb.shape[0] == 0:
            return v1, s
    s = s.copy()
    s.ravel()[fb] = new
    v1 = v1.copy()
    v1.ravel()[fb] = xp.where(new == OFF, p, xp.where(new == ON, o, 0.0))
    return v1, s


class ShallowPiece:
    """The driver's piece solver for a shallow chain (:func:`is_shallow`): the unit values are v_1 (B, d)."""

    subsets = True  # a few (B, d) operations per solve: compact at once

    def __init__(self, net, P, X, Y, xp, tol, eps_z, pre=None):
        self.net, self.P, self.X, self.Y, self.xp, self.tol, self.eps_z = net, P, X, Y, xp, tol, eps_z
        self.C = shallow_chain(net, P, xp)
        self.pre = apply(net.layers[0], P, X) if pre is None else pre
        self._rows = self._data = None

    def refreshed(self, v1, s, rho_w, margin):
        """A warm start (v1, s) (B, d) with its states re-read at the current parameters
        (:func:`reread_states`), the warm force ``rho_w`` (B, 1) pulled back to v_1 by the fixed row g_in:
        on = pre + ρ_w g_in. The same start as :func:`sheafdsl.solvers.chain.refreshed_start` gives."""
        on = outer(rho_w, self.C.g_in, self.xp)
        on += self.pre
        return reread_states(self.pre, on, v1, s, margin, self.xp)

    def _gather(self, rows):
        if rows is None:
            return self.pre, self.Y
        if rows is not self._rows:
            self._rows, self._data = rows, (self.pre[rows], self.Y[rows])
        return self._data

    def solve(self, S, rows, warm, fs):
        """The exact solve at states S (nb, d): ρ, then v_1 = pre + u_1 with u_1 = σ ⊙ g ρ / w_1² (inactive
        units: 0; sliding units: −pre, so that v_1 is exactly 0)."""
        xp, C = self.xp, self.C
        ps, ys = self._gather(rows)
        sigf = (S == ON).astype(ps.dtype)
        rho, solved = _force(self.net, C, sigf, ps, ys, self.tol, xp, warm)
        a = outer(rho, C.g_in, xp)  # a = ρ g_in: also u_2 when w_1 = w_2 (the result reads it)
        u1 = a * sigf
        if fs.shape[0]:
            u1.ravel()[fs] = -ps.ravel()[fs]
        v1 = ps + u1
        return _ShallowSolution(v1, solved, {"V1": v1, "U1": u1, "rho": rho, "sig": sigf, "a": a},
                                rho if warm is not None else None, ps, rho, C)

    def result(self, dr, with_energy=True):
        """The :class:`~sheafdsl.solvers.chain.Equilibrium` of the driver's result ``dr``: the other stalks and
        discords (u_j = J_j ρ / w_j², v_j = A_j v_{j−1} + b_j + u_j) from the final states and ρ."""
        net, P, xp, C = self.net, self.P, self.xp, self.C
        rho_all, sig = dr.fields["rho"], dr.fields["sig"]  # the gates of the final pattern (dr.S == ON)
        V, U = [self.X, dr.fields["V1"]], [dr.fields["U1"]]
        for j, layer in enumerate(net.layers[1:], start=1):
            r = C.rows[j - 1]
            if j == 1 and r is C.g_in:  # u_2 = ρ g / w_2² = a, the solve's own product
                u = dr.fields["a"]
            else:
                u = outer(rho_all, r, xp) if r.shape[0] > 1 else rho_all * r
            U.append(u)
            v = apply(layer, P, V[-1], sig if j == 1 else None)  # a fresh array: the discord is added in place
            v += u
            V.append(v)
        out_disc = output_discord(net, P, V[-1], self.Y, xp)
        energy = equilibrium_energy(net, P, V, U, self.Y, xp) if with_energy else None
        return Equilibrium(V, U, out_disc, energy, {1: dr.S}, dr.consistent, None, dr.iterations,
                           {"cycled": dr.cycled, "piece": "shallow"}, [1])


class _ShallowSolution:
    __slots__ = ("z", "ok", "fields", "warm", "_pre", "_rho", "_C")

    def __init__(self, z, ok, fields, warm, pre, rho, C):
        self.z, self.ok, self.fields, self.warm = z, ok, fields, warm
        self._pre, self._rho, self._C = pre, rho, C

    def slopes(self, fs):
        """g_L = −w_1² pre and g_R = g_L − g ρ = −w_1² (pre + a), a = ρ g_in, at the sliding units ``fs``."""
        C = self._C
        d = C.g_in.shape[0]
        p = self._pre.ravel()[fs]
        return -C.w_in2 * p, -C.w_in2 * (p + self._rho[fs // d, 0] * C.g_in[fs % d])

    def scale(self, r):
        """(1 + w_o²)(1 + |y − p|) per example: |y − p| = |ρ| / w_o²."""
        C = self._C
        return (1.0 + C.w_o2) * (1.0 + abs(self._rho[r, 0]) / C.w_o2)
