"""The fast phase: the two-sided equilibrium of a network sheaf, batched over examples.

Pin the input stalk x to the data and the target stalk ŷ to y. The equilibrium c* minimises the
energy E(c) = ½ Σ_e w_e² ‖(δc)_e‖² over the free stalks (the output edge of a classifier uses the
cross-entropy energy instead, see below), and the training residual is R(θ; x, y) = E(c*).

Feed-forward structure (:func:`feedforward`)
--------------------------------------------
Read from the IR edges (not from the ``network`` sugar): a chain x = v_0 → v_1 → … → v_m → ŷ whose
edges e_1..e_m each map their head by the identity and their tail by a linear map A_k (``affine``
W, b / ``linear`` W / a constant or scaled map / ``identity``) or a ReLU gate diag(σ_k), and whose
last edge (v_m → ŷ) is linear (squared-error energy) or ``sigmoid`` / ``softmax`` (cross-entropy
energy w²·CE(y, φ(z)), whose gradient in z is w²(φ(z) − y), as in the paper's code).

Exact solve for a fixed pattern (:func:`solve_pattern`)
-------------------------------------------------------
Because every free vertex is the head of exactly one identity-headed edge, the free stalks are in
bijection with the discords u_k = (δc)_{e_k}: v_k = A_k v_{k−1} + b_k + u_k. Eliminating them
(unitriangular), the output is p = p_f + J u with p_f the forward pass at the pattern and J the map
from edge discords to the output. Minimising ½ Σ_k w_k²‖u_k‖² + w_o² ℓ(p) gives

    u_k = J_kᵀ ρ / w_k²,   ρ = w_o² (y − φ(p)),   p = p_f + K ρ,   K = Σ_k J_k J_kᵀ / w_k²,

so only an n_L × n_L problem remains: (I/w_o² + K) ρ = y − p_f for a linear output (the lead of
DESIGN §1: u = Jᵀ(I + JJᵀ)⁻¹ r with unit weights), a few Newton steps for sigmoid/softmax. J is
formed by n_L backward sweeps through the chain (vectorised as one sweep of an (B, n_L, d) tensor),
then one more sweep gives u. This solver is **exact, not local**: the sweeps carry information
across edges. The local reference is the heat equation (:func:`diffusion_equilibrium`), which must
reach the same point; the parameter update that follows (:func:`local_gradients`) is local either way.

Sliding on ReLU switching surfaces (:func:`exact_equilibrium`)
--------------------------------------------------------------
E is continuous and piecewise quadratic in c (the ReLU edge's discord is a − relu(z)). Each unit is
in one of three states: active (+1, z ≥ 0), inactive (−1, z ≤ 0) or **sliding** (0, z = 0 held). A
sliding unit's tail value is a constraint row with infinite weight in the same output-space system
(its discord on the incoming edge becomes −(pre-activation)). The pattern loop is a primal
active-set method that descends E monotonically, so it cannot cycle:

1. start at a feasible point: the forward pass, or (in training) the example's equilibrium at the
   previous step with its states, which stays feasible when θ moves;
2. solve the pattern's quadratic exactly (c̄); move from c towards c̄ until the first unit crosses
   z = 0 (ratio test). A unit arriving from the interior of its side enters the adjacent piece (its
   state flips at z = 0); a unit already on the surface that is pushed across becomes sliding;
3. at c̄ (no crossing), check the KKT conditions of each sliding unit: with g_L = ∂E/∂z_i from the
   inactive side (= w_{in}² u_{in,i}) and g_R = g_L − w_relu² a_i from the active side, a consistent
   stationary point (a local minimum of E) needs g_L ≤ 0 ≤ g_R; a violating unit is released to the
   side of steeper descent.

E never increases and strictly decreases between pattern minimisers, so the loop cannot cycle; a
repeated pattern (per example) or the iteration bound stops an example all the same, and
:attr:`Equilibrium.consistent` marks the examples that reached a consistent stationary point.

E is not convex (the ReLU edge has a concave kink where a > 0), so an example can have several
consistent stationary points; a descent method stops at one of them, and two descent methods (this
loop, the heat equation, :func:`sheafdsl.solvers.solve`) from the same start usually, but not
always, stop at the same one. Each is a valid equilibrium for the envelope theorem.

The first iteration solves the whole batch; later ones solve only the examples that have not
settled (a settled example would re-solve to itself). Small problems, where numpy's per-call
overhead rather than FLOPs is the cost, stay on the whole batch while most of it still moves; large
ones (``SUBSET_WORK``) go to the subset at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..errors import Diagnostic, SheafError
from ..ir import ZERO, edges, pinned_stalks
from ..ir.maps import Constant, Identity, Nonlinear, ParamMap, ReluGate, Scaled
from ..lowering.backend import to_numpy
from ..lowering.nonlinear import kernel
from ..nonlinearities import TASKS
from .shallow import is_shallow, shallow_active_set

# ----------------------------------------------------------------------------------------------
# structure


@dataclass
class Layer:
    """One edge e_k : v_{k−1} → v_k of the chain, discord v_k − A_k v_{k−1} − b_k."""

    name: str
    kind: str  # "param" (A = W), "fixed" (A = constant matrix), "relu" (A = diag σ)
    tail: str
    head: str
    d_in: int
    d_out: int
    weight: float = 1.0
    param: str | None = None
    bias: str | None = None
    matrix: np.ndarray | None = None


@dataclass
class Output:
    """The output edge v_m → ŷ: discord y − A v_m − b (linear) or y − φ(v_m) (sigmoid | softmax)."""

    name: str
    fn: str  # "linear" | "sigmoid" | "softmax"
    tail: str
    head: str
    d_in: int
    d_out: int
    weight: float = 1.0
    param: str | None = None
    bias: str | None = None
    matrix: np.ndarray | None = None

    @cached_property
    def identity(self) -> bool:
        m = self.matrix
        return m is not None and m.shape[0] == m.shape[1] and bool(np.array_equal(m, np.eye(m.shape[0])))


@dataclass
class FeedForward:
    """A network sheaf recognised from the IR: ``layers`` e_1..e_m, then ``output``."""

    input: str
    target: str
    layers: list[Layer]
    output: Output

    @property
    def vertices(self) -> list[str]:
        return [self.input] + [l.head for l in self.layers]

    @property
    def relu_layers(self) -> list[int]:
        return [k for k, l in enumerate(self.layers) if l.kind == "relu"]

    @property
    def task(self) -> str:
        return TASKS["identity" if self.output.fn == "linear" else self.output.fn]


def _linear_src(m, d_v, name):
    """(kind, param, matrix) for a linear tail map; None when the map is not linear."""
    if isinstance(m, ParamMap):
        return "param", m.param, None
    if isinstance(m, Identity):
        return "fixed", None, np.eye(d_v)
    if isinstance(m, Scaled):
        return "fixed", None, m.scale * np.eye(d_v)
    if isinstance(m, Constant):
        return "fixed", None, np.array(m.matrix, dtype=float)
    return None


def feedforward(G) -> FeedForward | None:
    """Recognise a feed-forward chain in the IR (see the module docstring), or return None.

    Requirements: exactly one stalk pinned to ``input`` and one to ``target`` (whole stalks), no other
    pins or soft pins, and a simple path input → … → target in which every edge maps its head by the
    identity, every non-output edge is linear or a ReLU gate, and the last edge is linear or a
    sigmoid/softmax.
    """
    ins, outs = pinned_stalks(G, "input"), pinned_stalks(G, "target")
    if len(ins) != 1 or len(outs) != 1:
        return None
    for v, d in G.nodes(data=True):
        for p in d["pins"]:
            if p.indices is not None or p.source == "value":
                return None
    x, y = ins[0], outs[0]
    by_tail: dict[str, list] = {}
    for u, v, name, d in edges(G):
        by_tail.setdefault(u, []).append((v, name, d))
    layers: list[Layer] = []
    seen = {x}
    cur = x
    nverts = G.number_of_nodes()
    while True:
        outgoing = by_tail.get(cur, [])
        if len(outgoing) != 1:
            return None
        v, name, d = outgoing[0]
        if G.in_degree(v) != 1 or v in seen or not isinstance(d["dst_map"], Identity):
            return None
        seen.add(v)
        d_in, d_out = G.nodes[cur]["dim"], G.nodes[v]["dim"]
        src = d["src_map"]
        if v == y:
            if isinstance(src, Nonlinear):
                if d.get("bias") is not None or d_in != d_out:
                    return None
                out = Output(name, src.fn, cur, v, d_in, d_out, d["weight"])
            else:
                lin = _linear_src(src, d_in, name)
                if lin is None:
                    return None
                out = Output(name, "linear", cur, v, d_in, d_out, d["weight"], lin[1], d.get("bias"), lin[2])
            break
        if isinstance(src, ReluGate):
            if d_in != d_out or d.get("bias") is not None:
                return None
            layers.append(Layer(name, "relu", cur, v, d_in, d_out, d["weight"]))
        else:
            lin = _linear_src(src, d_in, name)
            if lin is None:
                return None
            layers.append(Layer(name, lin[0], cur, v, d_in, d_out, d["weight"], lin[1], d.get("bias"), lin[2]))
        cur = v
    if len(seen) != nverts or G.number_of_edges() != len(layers) + 1 or y in by_tail:
        return None
    return FeedForward(x, y, layers, out)


# ----------------------------------------------------------------------------------------------
# maps


def _apply(layer, P, v, gate=None):
    """A_k v_{k−1} + b_k (batched, v: (B, d_in)); ``gate`` (B, d) 0/1 for a relu layer."""
    if layer.kind == "relu":
        return v * gate
    A = P[layer.param] if layer.kind == "param" else layer.matrix
    out = v @ A.T
    if layer.bias is not None:
        out = out + P[layer.bias]
    return out


def _apply_T(layer, P, g, gate=None):
    """A_kᵀ applied to row sensitivities g (B, R, d_out) -> (B, R, d_in)."""
    if layer.kind == "relu":
        return g * gate[:, None, :]
    A = P[layer.param] if layer.kind == "param" else layer.matrix
    return g @ A


def _out_map(out: Output, P, vm):
    """A v_m + b for a linear output (v_m itself for an identity map without bias)."""
    if out.param is None and out.bias is None and out.identity:
        return vm
    A, b = _out_linear(out, P)
    p = vm @ A.T
    return p if b is None else p + b


def _out_linear(out: Output, P):
    A = P[out.param] if out.param is not None else out.matrix
    b = P[out.bias] if out.bias is not None else None
    return A, b


def _kernel(fn):
    """The registry numerics of an output map (the chain's "linear" output is the registry's identity)."""
    return kernel("identity" if fn == "linear" else fn)


def _phi(fn, z, xp):
    return _kernel(fn).phi(xp, z)


def _dphi(fn, z, xp, phi=None):
    """Dφ(z) as a batch of matrices (B, K, K); ``phi``: φ(z) when the caller has it."""
    k = _kernel(fn)
    if phi is not None and k.jacobian_phi is not None:
        return k.jacobian_phi(xp, phi)
    return k.jacobian(xp, z)


def output_energy(net: FeedForward, P, vm, Y, xp=np):
    """(per-example output-edge energy, output discord, prediction) at v_m = ``vm``."""
    out = net.output
    w2 = out.weight ** 2
    if out.fn == "linear":
        p = _out_map(out, P, vm)
        disc = Y - p
        return 0.5 * w2 * (disc ** 2).sum(axis=1), disc, p
    phi = _phi(out.fn, vm, xp)
    return w2 * cross_entropy(out.fn, vm, Y, xp), Y - phi, phi


def cross_entropy(fn, z, Y, xp=np):
    """Per-example CE of logits z from the registry: softmax −Σ y log p; sigmoid Σ BCE (stable forms)."""
    k = _kernel(fn)
    if k.energy is None:
        raise SheafError(Diagnostic("E612", f"the output `{fn}` has no cross-entropy energy"))
    return k.energy(xp, z, Y)


def forward(net: FeedForward, P, X, xp=np):
    """The forward pass (the harmonic extension with only x pinned): vertex values [v_0..v_m]."""
    V = [X]
    for layer in net.layers:
        v = V[-1]
        V.append(xp.maximum(v, 0.0) if layer.kind == "relu" else _apply(layer, P, v))
    return V


def predict(net: FeedForward, P, X, xp=np):
    """The network output at inference: A v_m + b (linear) or φ(v_m)."""
    return predict_from(net, P, forward(net, P, X, xp)[-1], xp)


def predict_from(net: FeedForward, P, vm, xp=np):
    """The output map at the last vertex value v_m: A v_m + b (linear) or φ(v_m)."""
    out = net.output
    if out.fn == "linear":
        return _out_map(out, P, vm)
    return _phi(out.fn, vm, xp)


# ----------------------------------------------------------------------------------------------
# the exact pattern solve


@dataclass
class PatternSolution:
    V: list  # equilibrium vertex values v_0..v_m at this pattern (sliding tails exactly 0)
    U: list  # discords u_1..u_m
    out_disc: object  # output discord (B, n_out)
    energy: object  # per-example energy (B,)
    newton_ok: object  # (B,) bool
    rho: object = None  # (B, n_out): the output force w_o²(y − φ(p*)) (a warm start for the next solve)
    slide: dict | None = None  # relu tail vertex k -> (B, d) bool sliding mask, only where some unit slides


def solve_pattern(net: FeedForward, P, X, Y, S, xp=np, tol: float = 1e-10, max_newton: int = 30,
                  with_energy: bool = True, F=None, rho0=None, pre1=None) -> PatternSolution:
    """Minimise E exactly for fixed unit states ``S`` (dict layer index -> (B, d) int8 in {+1, 0, −1}).

    Inactive and sliding units have gate 0; a sliding unit also holds its tail value at 0. Cost: a
    forward pass, one batched backward sweep of the (B, n_out + n_slide, d) sensitivity tensor, an
    (n_out + n_slide)-dimensional solve per example (Newton for sigmoid/softmax), and one more sweep.
    """
    B = X.shape[0]
    layers = net.layers
    m = len(layers)
    # 0/1 gates as floats: a product with them is exactly the gated value (and faster than with a bool)
    gates = {k: (S[k] == 1).astype(X.dtype) for k in S}
    if F is None:  # the forward pass at the pattern (the caller may pass it when S is the forward pattern)
        F = [X]
        for k, layer in enumerate(layers):
            if k == 0 and pre1 is not None:  # v_1's value does not depend on the pattern: x is pinned
                F.append(pre1)
            else:
                F.append(_apply(layer, P, F[-1], gates.get(k)))
    n_out = net.output.d_out
    # sliding rows: a unit of relu layer k (tail vertex k) whose own tail value depends on free
    # discords upstream (k >= 2) becomes a constraint row; for k == 1 the row decouples (below).
    deep = [k for k in S if k >= 2]
    slide_masks = {k: S[k] == 0 for k in deep}
    if n_out == 1 and net.output.fn != "softmax" and not any(bool(mk.any()) for mk in slide_masks.values()):
        return _solve_one_row(net, P, X, Y, S, gates, F, xp, with_energy, tol, rho0)
    counts = sum((slide_masks[k].sum(axis=1) for k in deep), xp.zeros(B, dtype=np.int64)) if deep else None
    n_slide = int(counts.max()) if deep and B else 0
    R = n_out + n_slide
    out = net.output
    # seeds at each vertex: (B, R, d_j)
    seeds: dict[int, object] = {}
    if out.fn == "linear":
        A_out, b_out = _out_linear(out, P)
        seed_m = A_out
        p_f = F[m] @ A_out.T + (b_out if b_out is not None else 0.0)
    else:
        seed_m = xp.eye(n_out)
        p_f = F[m]
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
            q[b_idx, slot] = F[k][b_idx, i_idx]
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
            g = _apply_T(layer, P, g, gates.get(j - 1))
            if j - 1 in seeds and j - 1 != m:
                g = g + seeds[j - 1]
    newton_ok = xp.ones(B, dtype=bool)

    def gram(j):
        Gj = Gs[j]
        if Gj.ndim == 2:
            return Gj @ Gj.T
        if j in parent:  # one (B·R, d) × (d, R) product instead of B small ones
            return (Gj.reshape(B * R, -1) @ parent[j].T).reshape(B, R, R)
        return Gj @ Gj.transpose(0, 2, 1)

    K = sum(gram(j) / layers[j - 1].weight ** 2 for j in range(1, m + 1))
    K = xp.broadcast_to(K, (B, R, R))
    t = xp.zeros((B, R))
    t[:, :n_out] = Y
    eye_lam = xp.eye(R)[None] * lam[:, :, None]
    if out.fn == "linear":
        rho = xp.linalg.solve(eye_lam + K, (t - q)[..., None])[..., 0]
    else:
        rho, newton_ok = _newton(out.fn, K, q, t, lam, n_out, n_slide, Y, tol, max_newton, xp, rho0)
    # discords and equilibrium stalks
    def pull(j):  # J_jᵀ ρ per example
        Gj = Gs[j]
        if Gj.ndim == 2:
            return rho @ Gj
        if j in parent:
            return (rho @ parent[j]) * gates[j]
        return xp.einsum("brd,br->bd", Gj, rho)

    U = [pull(j) / layers[j - 1].weight ** 2 for j in range(1, m + 1)]
    sol = _finish(net, P, X, Y, S, gates, F, U, newton_ok, xp, with_energy)
    sol.rho = rho[:, :n_out]
    return sol


def _newton(fn, K, q, t, lam, n_out, n_slide, Y, tol, max_newton, xp, rho0=None):
    """Solve F(ρ) = Λρ + ψ(q + Kρ) − t = 0 (ψ = φ on the output rows, identity on sliding rows).

    Without sliding rows F(ρ) = ∇_z g(z) at z = q + Kρ for the convex g(z) = (z − q)ᵀK⁻¹(z − q)/(2w²) +
    CE(y, z), so Newton's direction descends g(ρ) = ρᵀKρ/(2w²) + CE(y, q + Kρ) and a per-example Armijo
    backtracking on g globalises it; with sliding rows the merit is ½‖F‖². Returns (ρ, converged).
    """
    B, R = q.shape
    rho = xp.zeros((B, R))
    if rho0 is not None:  # warm start of the output rows (sliding rows start at 0)
        rho[:, :n_out] = rho0
    eye = xp.eye(R)
    scale = 1.0 + float(xp.abs(t).max()) if B else 1.0

    k = _kernel(fn)

    def evaluate(rho):
        pz = q + xp.einsum("brs,bs->br", K, rho)
        z = pz[:, :n_out]
        ph, ce = k.phi_energy(xp, z, Y)  # one exponential for softmax
        psi = ph if n_slide == 0 else xp.concatenate([ph, pz[:, n_out:]], axis=1)
        Fv = lam * rho + psi - t
        if n_slide == 0:
            merit = 0.5 * lam[:, 0] * (rho * (pz - q)).sum(axis=1) + ce
        else:
            merit = 0.5 * (Fv ** 2).sum(axis=1)
        return pz, ph, Fv, merit

    pz, ph, Fv, merit = evaluate(rho)
    for _ in range(max_newton):
        if float(xp.abs(Fv).max()) <= tol * scale:
            break
        D = _dphi(fn, pz[:, :n_out], xp, ph)
        if n_slide:
            Dfull = xp.broadcast_to(eye, (B, R, R)).copy()
            Dfull[:, :n_out, :n_out] = D
            D = Dfull
        Jac = eye * lam[:, :, None] + D @ K
        step = xp.linalg.solve(Jac, Fv[..., None])[..., 0]
        if n_slide == 0:
            slope = -(xp.einsum("brs,bs->br", K, Fv) * step).sum(axis=1)
        else:
            slope = -(Fv ** 2).sum(axis=1)
        alpha = xp.ones(B)
        for _ in range(30):
            cand = rho - alpha[:, None] * step
            pz_c, ph_c, F_c, m_c = evaluate(cand)
            bad = ~(m_c <= merit + 1e-4 * alpha * slope + 1e-13 * (1.0 + xp.abs(merit)))
            if not bool(bad.any()):
                break
            alpha = xp.where(bad, 0.5 * alpha, alpha)
        rho, pz, ph, Fv, merit = cand, pz_c, ph_c, F_c, m_c
    ok = xp.abs(Fv).max(axis=1) <= max(tol * 1e3, 1e-8) * scale
    return rho, ok


def _sigmoid_scalar(p_f, k1, Y, w2o, tol, xp, max_iter=60, rho0=None):
    """ρ with ρ/w² + s(p_f + k1 ρ) − y = 0 for one sigmoid output: increasing in ρ, bracketed by
    [w²(y − 1), w² y]; safeguarded Newton (rtsafe): bisection when a step would leave the bracket or
    does not halve the previous step, so the bracket at least halves every other iteration. An
    example stays where it is once it has converged (the batch iterates until every one has)."""
    lo, hi = w2o * (Y - 1.0), w2o * Y
    rho = xp.zeros_like(Y) if rho0 is None else xp.clip(rho0, lo, hi)
    scale = 1.0 + float(xp.abs(Y).max()) if Y.shape[0] else 1.0
    ok = xp.ones(Y.shape[0], dtype=bool)
    last = hi - lo  # the step before the previous one
    step = last
    for _ in range(max_iter):
        s = _phi("sigmoid", p_f + k1 * rho, xp)
        Fv = rho / w2o + s - Y
        done = xp.abs(Fv) <= tol * scale
        if bool(done.all()):
            break
        lo = xp.where(Fv < 0, rho, lo)
        hi = xp.where(Fv > 0, rho, hi)
        new = rho - Fv / (1.0 / w2o + k1 * s * (1.0 - s))
        slow = xp.abs(new - rho) > 0.5 * xp.abs(last)
        bis = (new <= lo) | (new >= hi) | slow
        last = step
        new = xp.where(done, rho, xp.where(bis, 0.5 * (lo + hi), new))
        step = new - rho
        rho = new
    else:
        s = _phi("sigmoid", p_f + k1 * rho, xp)
        ok = (xp.abs(rho / w2o + s - Y) <= max(tol * 1e3, 1e-8) * scale)[:, 0]
    return rho, ok


def _solve_one_row(net, P, X, Y, S, gates, F, xp, with_energy, tol=1e-10, rho0=None):
    """The common case of one output row (linear or sigmoid) and no coupled sliding rows, with (B, d)
    sweeps and no batched solves.

    Linear: ρ = (y − p_f) / (1/w_o² + Σ_k ‖J_k‖²/w_k²); sigmoid: the scalar equation of
    :func:`_sigmoid_scalar`; then u_k = J_kᵀ ρ / w_k².
    """
    layers = net.layers
    m = len(layers)
    out = net.output
    if out.fn == "linear":
        A_out, _ = _out_linear(out, P)
        p_f = _out_map(out, P, F[m])
        g = A_out[0]  # (d_m,): the same for every example until a gate or map varies it
    else:
        p_f = F[m]
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
                # a gated row is only formed when the sweep goes on below it (J_1 never is)
                g = g * gates[j - 1] if j - 1 > 1 or not gated[j - 1] else None
            else:
                g = g @ (P[layer.param] if layer.kind == "param" else layer.matrix)
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
    ok = xp.ones(X.shape[0], dtype=bool)
    if out.fn == "linear":
        rho = (Y - p_f) / (k1[:, None] if getattr(k1, "ndim", 0) else k1)
    else:
        kk = k1 - 1.0 / out.weight ** 2
        kk = kk[:, None] if getattr(kk, "ndim", 0) else kk
        rho, ok = _sigmoid_scalar(p_f, kk, Y, out.weight ** 2, tol, xp, rho0=rho0)
    U = [None] * m
    raw = None  # J_{j+1} ρ
    for j in range(m, 0, -1):
        if gated[j]:
            raw = raw * gates[j]
        elif Gs[j].ndim == 1 and Gs[j].shape[0] > 1 and rho.shape[1] == 1:  # outer product: faster than broadcasting
            raw = xp.einsum("b,d->bd", rho[:, 0], Gs[j])
        else:
            raw = Gs[j] * rho
        w2 = layers[j - 1].weight ** 2
        U[j - 1] = raw if w2 == 1.0 else raw / w2
    sol = _finish(net, P, X, Y, S, gates, F, U, ok, xp, with_energy)
    sol.rho = rho
    return sol


def _finish(net, P, X, Y, S, gates, F, U, newton_ok, xp, with_energy):
    """Discords -> equilibrium stalks (and the energy)."""
    layers = net.layers
    m = len(layers)
    # relu layer 1 (tail v_1 fed by the pinned input): a sliding unit's incoming discord is −pre
    slide = {k: S[k] == 0 for k in S if k >= 1}
    slide = {k: mk for k, mk in slide.items() if bool(mk.any())}
    if 1 in slide:  # then v_1 = pre + (−pre) is exactly 0 on the sliding units (few: index them)
        r, c = xp.nonzero(slide[1])
        U[0][r, c] = -F[1][r, c]  # U[0] is fresh from the sweep
    V = [X]
    for k, layer in enumerate(layers):
        # v_k = A_k v_{k−1} + b_k + u_k (the first layer's input is pinned: reuse the forward value)
        v = (F[1] if k == 0 else _apply(layer, P, V[-1], gates.get(k))) + U[k]
        if k >= 1 and k + 1 in slide:  # v_{k+1} is the tail of a relu layer: sliding units sit exactly at 0
            v = xp.where(slide[k + 1], 0.0, v)
        V.append(v)
    if with_energy:
        e_out, out_disc, _ = output_energy(net, P, V[m], Y, xp)
        energy = e_out + sum(0.5 * layers[k].weight ** 2 * (U[k] ** 2).sum(axis=1) for k in range(m))
    else:
        out_disc, energy = _out_disc(net, P, V[m], Y, xp), None
    return PatternSolution(V, U, out_disc, energy, newton_ok, slide=slide)


def _out_disc(net, P, vm, Y, xp):
    out = net.output
    if out.fn == "linear":
        return Y - _out_map(out, P, vm)
    return Y - _phi(out.fn, vm, xp)


# ----------------------------------------------------------------------------------------------
# the active-set loop


class Equilibrium:
    """The two-sided equilibrium of a batch.

    ``V``: vertex values v_0..v_m (B, d_k); ``U``: discords u_1..u_m of the chain edges; ``out_disc``:
    the output edge's discord (y − p); ``energy``: E(c*) per example (None when not asked for); ``S``:
    final unit states per relu layer (+1/0/−1); ``consistent``: (B,) bool, a consistent stationary
    point was reached; ``sliding``: (B,) number of sliding units; ``iterations``: pattern solves used.
    """

    def __init__(self, V, U, out_disc, energy, S, consistent, sliding=None, iterations: int = 0, info=None,
                 free_layers=None):
        self.V, self.U, self.out_disc, self.energy, self.S = V, U, out_disc, energy, S
        self.consistent, self._sliding, self.iterations = consistent, sliding, iterations
        self.info = info or {}
        self._free = free_layers

    @property
    def sliding(self):
        if self._sliding is None:
            keys = self._free if self._free is not None else [k for k in self.S if k >= 1]
            B = self.V[0].shape[0]
            self._sliding = sum(((self.S[k] == 0).sum(axis=1) for k in keys), np.zeros(B, dtype=np.int64))
        return self._sliding

    @property
    def consistent_fraction(self) -> float:
        c = self.consistent
        return int(c.nonzero()[0].shape[0]) / c.shape[0] if c.shape[0] else 1.0


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


def exact_equilibrium(net: FeedForward, P, X, Y, xp=np, tol: float = 1e-10, max_iter: int | None = None,
                      init=None, guess=None, forward_values=None, with_energy: bool = True,
                      kernel: str = "auto") -> Equilibrium:
    """The two-sided equilibrium by the exact pattern solve and the sliding-aware active-set loop.

    ``guess``: optional unit states (dict layer -> (B, d) int8), e.g. each example's final pattern at
    the previous training step. The guess is solved once and kept for the examples where it passes
    the KKT check (:func:`kkt_ok`): it is then a consistent stationary point whatever its origin. The
    other examples go through the active-set loop from the forward pass. ``forward_values``: the
    forward pass [v_0..v_m] when the caller has it. ``init``: (V, S) start of the loop (V feasible
    for S: tail signs agree, sliding tails 0); default the forward pass. ``kernel``: "auto" runs the
    loop of :mod:`sheafdsl.training.shallow` on the chains it covers (one ReLU layer, one output row),
    "general" always runs the general loop (the same equilibrium, up to round-off).
    """
    if kernel not in ("auto", "general"):
        raise ValueError(f"kernel must be 'auto' or 'general', not {kernel!r}")
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
        rest = _active_set(net, P, X[bad], Y[bad], xp, tol, max_iter, ([v[bad] for v in Vf], Sf), with_energy,
                           kernel=kernel)
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
    return _active_set(net, P, X, Y, xp, tol, max_iter, init, with_energy, pre1, kernel)


def loop_limits(n_units: int, Y, max_iter, xp):
    """(iteration bound, ε_z) of the active-set loops: ``max_iter`` or 2·(free units) + 20 pattern
    solves; a tail counts as on the wrong side of z = 0 beyond ε_z = 1e-12 (1 + max|y|)."""
    eps_z = 1e-12 * (1.0 + float(xp.abs(Y).max())) if Y.shape[0] else 0.0
    return max_iter or (2 * n_units + 20), eps_z


def cycle_guard(visited: dict, release, ids, key) -> list:
    """The active-set loops' per-example cycle guard (it cannot trigger in exact arithmetic).

    For each example i flagged in ``release`` (its states just changed at a pattern minimiser), the
    new pattern ``key(i)`` (bytes) is recorded under the example's batch index ``ids[i]``; returns
    the i whose pattern had been seen before, which the caller stops as not consistent.
    """
    repeated = []
    for i in to_numpy(release).nonzero()[0]:
        seen = visited.setdefault(int(ids[i]), set())
        k = key(i)
        if k in seen:
            repeated.append(i)
        seen.add(k)
    return repeated


SUBSET_WORK = 2_000_000  # batch × stalk width × outputs above which the loop solves only unsettled examples


def _active_set(net, P, X, Y, xp, tol, max_iter, init, with_energy=True, pre1=None, kernel="auto") -> Equilibrium:
    """The primal active-set loop of :func:`exact_equilibrium` (see the module docstring).

    Invariant: the current point c is feasible for its states S (active tails ≥ 0, inactive ≤ 0,
    sliding = 0), so E(c) equals the pattern quadratic Q_S(c). Each iteration solves Q_S exactly (c̄)
    and either steps to the first switching surface on the segment c → c̄ (E decreases by convexity
    of Q_S), or, at c̄, releases the sliding units whose one-sided slopes allow descent.

    At the surface, a unit that arrived from the interior of its side enters the adjacent piece
    (its state flips, z = 0): c lies in the closure of both pieces and E is continuous, so
    E(c) = Q_{S'}(c) and the descent goes on there; if that piece's minimiser puts the unit back on the
    wrong side, the next ratio test stops at once (t = 0) and the unit slides. A unit already on the
    surface that is pushed across becomes sliding. E never increases and strictly decreases between
    pattern minimisers, so no pattern minimiser repeats; a per-example set of visited patterns guards
    this numerically.
    """
    if kernel == "auto" and is_shallow(net):
        return shallow_active_set(net, P, X, Y, xp, tol, max_iter, init, with_energy, pre1)
    layers = net.layers
    m = len(layers)
    B = X.shape[0]
    relu = net.relu_layers
    free = [k for k in relu if k >= 1]  # a relu fed by the pinned input never moves
    if init is None:
        V = forward(net, P, X, xp)
        S = {k: xp.where(V[k] >= 0, 1, -1).astype(np.int8) for k in relu}
    else:  # not copied: nothing below writes into the caller's arrays before `own` copies them
        V = [X] + list(init[0][1:])
        S = dict(init[1])
    if not free:  # linear in c (or patterns fixed by the input): one exact solve
        sol = solve_pattern(net, P, X, Y, S, xp, tol, with_energy=with_energy)
        return Equilibrium(sol.V, sol.U, sol.out_disc, sol.energy, S, sol.newton_ok, xp.zeros(B, dtype=np.int64), 1)
    if layers[0].kind != "relu":  # the first layer's output is the same for every pattern
        pre1 = _apply(layers[0], P, X) if pre1 is None else pre1
    else:
        pre1 = None
    rho_all = None
    if net.output.fn != "linear" and init is not None:  # warm Newton start: the force at the start point
        rho_all = net.output.weight ** 2 * _out_disc(net, P, V[m], Y, xp)
    n_units = sum(layers[k].d_in for k in free)
    max_iter, eps_z = loop_limits(n_units, Y, max_iter, xp)
    visited: dict[int, set] = {}
    cycled = 0
    done = consistent = U = out_disc = None
    idx = None  # None: every example is still active
    # The first iteration solves the whole batch; later ones solve only the unsettled examples (a
    # settled example would re-solve to itself). Small problems (numpy's per-call overhead, not FLOPs,
    # is the cost there) stay on the whole batch while most of it still moves.
    width = sum(l.d_out for l in layers) + net.output.d_out
    subsets = B * width * net.output.d_out > SUBSET_WORK
    frozen = None  # examples stopped by the cycle guard (whole-batch iterations)
    it = 0
    while it < max_iter:
        it += 1
        if idx is None:
            Xs, Ys, Ss, Vs, r0, p1 = X, Y, S, V, rho_all, pre1
        # else: the unsettled examples' own arrays (Xs, Ys, Ss, Vs, r0, p1), kept from the last iteration
        nb = Xs.shape[0]
        sol = solve_pattern(net, P, Xs, Ys, Ss, xp, tol, with_energy=False, rho0=r0, pre1=p1)
        # ratio test on the segment c -> c̄
        tmin = None
        viols = {}  # layer -> (rows, cols, t) of the violating units (few): their crossing fractions
        for k in free:
            z, zb, st = Vs[k], sol.V[k], Ss[k]
            viol = st * zb < -eps_z  # active below 0 or inactive above 0 (sliding: never)
            if bool(viol.any()):
                r, c = xp.nonzero(viol)
                zr = z[r, c]
                t = xp.maximum(zr / (zr - zb[r, c]), 0.0)
                tk = xp.full(z.shape, np.inf)
                tk[r, c] = t
                tmk = tk.min(axis=1)
                tmin = tmk if tmin is None else xp.minimum(tmin, tmk)
                viols[k] = (r, c, t)
        move = tmin < 1.0 if tmin is not None else xp.zeros(nb, dtype=bool)
        if frozen is not None and idx is None:
            move &= ~frozen
        at_min = ~move
        newS = dict(Ss)
        release = None
        mtol = None
        for k in free:
            sl = sol.slide.get(k)  # the pattern's sliding units (None: none at this vertex)
            if sl is None:
                continue
            if mtol is None:
                mtol = 1e-9 * (1.0 + float(xp.abs(sol.out_disc).max())) * (1.0 + net.output.weight ** 2)
            w_in, w_relu = layers[k - 1].weight ** 2, layers[k].weight ** 2
            gL = sol.U[k - 1] if w_in == 1.0 else w_in * sol.U[k - 1]  # slope of E on the inactive side
            gR = gL - (sol.U[k] if w_relu == 1.0 else w_relu * sol.U[k])  # ... on the active side
            want = sl & ((gL > mtol) | (gR < -mtol))
            if not bool(want.any()):  # the common case: every sliding unit satisfies its KKT conditions
                continue
            want &= at_min[:, None]
            if frozen is not None and idx is None:
                want &= ~frozen[:, None]
            if not bool(want.any()):
                continue
            to_neg = want & (gL + gR >= 0)  # the steeper descent: gL − mtol ≥ −gR − mtol
            newS[k] = xp.where(to_neg, -1, xp.where(want, 1, newS[k])).astype(np.int8)
            rel = want.any(axis=1)
            release = rel if release is None else release | rel
        Vn = sol.V
        if bool(move.any()):
            tm = xp.where(move, tmin, 1.0)[:, None]
            # only the tails of the relu edges matter for the next iteration (feasibility, ratio test):
            # the pattern solve itself does not depend on the current point
            Vn = list(sol.V)
            for k in free:
                Vn[k] = Vs[k] + tm * (sol.V[k] - Vs[k])
            for k, (r, c, t) in viols.items():  # the units that reach the surface at tm
                hit = (t <= tm[r, 0] * (1 + 1e-9) + 1e-15) & move[r]
                rh, ch = r[hit], c[hit]
                st = newS[k].copy()  # newS may hold the caller's array
                # from the interior: enter the adjacent piece; already on the surface: slide
                st[rh, ch] = xp.where(Vs[k][rh, ch] == 0, 0, -Ss[k][rh, ch])
                newS[k] = st
                Vn[k][rh, ch] = 0.0  # Vn[k] is fresh (the interpolation above)
        finished = at_min if release is None else at_min & ~release
        cyc = None
        if release is not None and bool(release.any()):  # cycle guard (cannot trigger in exact arithmetic)
            cyc = xp.zeros(nb, dtype=bool)
            gid = np.arange(nb) if idx is None else to_numpy(idx)
            host = {k: to_numpy(newS[k]) for k in free}
            for i in cycle_guard(visited, release, gid, lambda i: b"".join(host[k][i].tobytes() for k in free)):
                finished[i] = cyc[i] = True
                cycled += 1
        if cyc is not None and idx is None:
            frozen = cyc if frozen is None else frozen | cyc
        bad = frozen if idx is None else cyc
        ok = sol.newton_ok & finished if bad is None else sol.newton_ok & finished & ~bad
        if idx is None:
            if bool(finished.all()):  # one solve settled every example (the common case)
                energy = equilibrium_energy(net, P, sol.V, sol.U, Y, xp) if with_energy else None
                return Equilibrium(sol.V, sol.U, sol.out_disc, energy, newS, ok, None, it, {"cycled": cycled}, free)
            if not subsets and 2 * int(finished.sum()) < nb:  # most examples still move: the whole batch again
                V, S = Vn, newS
                if rho_all is not None and sol.rho is not None:
                    rho_all = sol.rho
                if it == max_iter:  # out of iterations: the current pattern's solution, not consistent
                    return Equilibrium(sol.V, sol.U, sol.out_disc,
                                       equilibrium_energy(net, P, sol.V, sol.U, Y, xp) if with_energy else None,
                                       S, ok, None, it, {"cycled": cycled}, free)
                continue
            # From here on only the unsettled examples are solved. This iteration's arrays (fresh from
            # the solve) hold the settled examples' results and the others' current point and states.
            V = [X] + list(Vn[1:])
            S = {k: v.copy() for k, v in newS.items()}  # newS may hold the caller's arrays
            U, out_disc = list(sol.U), sol.out_disc
            consistent, done = ok, finished.copy()
            if rho_all is not None and sol.rho is not None:
                rho_all = sol.rho
            idx = xp.flatnonzero(~done)
            Xs, Ys, Ss = X[idx], Y[idx], {k: v[idx] for k, v in S.items()}
            Vs = [Xs] + [v[idx] for v in V[1:]]
            r0 = None if rho_all is None else rho_all[idx]
            p1 = None if pre1 is None else pre1[idx]
            continue
        # subset iteration: write the examples that finished into the batch's arrays; the others carry
        # their point, states and Newton start to the next iteration in their own (small) arrays
        if bool(finished.any()):
            fi = idx[finished]
            for j in range(1, m + 1):
                V[j][fi] = Vn[j][finished]
            for k in S:
                S[k][fi] = newS[k][finished]
            for j in range(m):
                U[j][fi] = sol.U[j][finished]
            out_disc[fi] = sol.out_disc[finished]
            consistent[fi] = ok[finished]
            done[fi] = True
            keep = ~finished
            if not bool(keep.any()):
                break
            idx, Xs, Ys = idx[keep], Xs[keep], Ys[keep]
            Ss = {k: v[keep] for k, v in newS.items()}
            Vs = [Xs] + [v[keep] for v in Vn[1:]]
            if rho_all is not None and sol.rho is not None:
                r0 = sol.rho[keep]
            p1 = None if p1 is None else p1[keep]
        else:
            Ss, Vs = newS, [Xs] + list(Vn[1:])
            if rho_all is not None and sol.rho is not None:
                r0 = sol.rho
    if not bool(done.all()):
        # out of iterations: the exact solution at the current pattern (reported not consistent)
        for k in S:
            S[k][idx] = Ss[k]
        rest = xp.flatnonzero(~done)
        sol = solve_pattern(net, P, X[rest], Y[rest], {k: S[k][rest] for k in S}, xp, tol, with_energy=False)
        for j in range(m):
            U[j][rest] = sol.U[j]
        for j in range(1, len(V)):
            V[j][rest] = sol.V[j]
        out_disc[rest] = sol.out_disc
        consistent[rest] = False
    energy = equilibrium_energy(net, P, V, U, Y, xp) if with_energy else None
    return Equilibrium(V, U, out_disc, energy, S, consistent, None, it, {"cycled": cycled}, free)


def equilibrium_energy(net: FeedForward, P, V, U, Y, xp=np):
    """E(c) per example from the stalks V and chain discords U (output energy from V[m])."""
    e_out, _, _ = output_energy(net, P, V[-1], Y, xp)
    return e_out + sum(0.5 * layer.weight ** 2 * (u ** 2).sum(axis=1) for layer, u in zip(net.layers, U))


# ----------------------------------------------------------------------------------------------
# the heat equation (the local reference)


def lipschitz_bound(net: FeedForward, P, xp=np) -> float:
    """An upper bound on λ_max of the energy's Hessian in the free stalks (any pattern).

    Each row block of δ touches two vertices, so ‖W δ c‖² ≤ 2 max_v Σ_{e ∋ v} w_e² ‖F_{v◁e}‖² ‖c‖².
    The cross-entropy Hessian is bounded by that of ½‖·‖² (Dφ ≼ I).
    """
    def norm2(layer):
        if layer.kind == "relu":
            return 1.0
        A = P[layer.param] if layer.kind == "param" else layer.matrix
        return float(np.linalg.norm(to_numpy(A), 2)) ** 2

    layers = net.layers
    out = net.output
    per_vertex = []
    for j in range(1, len(layers) + 1):
        s = layers[j - 1].weight ** 2  # head of e_j by the identity
        if j < len(layers):
            s += layers[j].weight ** 2 * norm2(layers[j])
        else:
            s += out.weight ** 2 * (norm2(Layer("o", "param" if out.param else "fixed", "", "", 0, 0, 1.0, out.param,
                                               None, out.matrix)) if out.fn == "linear" else 1.0)
        per_vertex.append(s)
    return 2.0 * max(per_vertex)


def energy_gradient(net: FeedForward, P, V, Y, xp=np):
    """(∇_{v_1..v_m} E, discords U, output discord, energy) at vertex values V, gates from the state."""
    layers = net.layers
    m = len(layers)
    gates = {k: (V[k] >= 0).astype(V[k].dtype) for k in net.relu_layers}
    U = [V[k + 1] - _apply(layers[k], P, V[k], gates.get(k)) for k in range(m)]
    grads = [layers[j - 1].weight ** 2 * U[j - 1] for j in range(1, m + 1)]
    for j in range(1, m):
        gU = layers[j].weight ** 2 * U[j]
        grads[j - 1] = grads[j - 1] - _apply_T(layers[j], P, gU[:, None, :], gates.get(j))[:, 0, :]
    out = net.output
    e_out, disc, _ = output_energy(net, P, V[m], Y, xp)
    w2 = out.weight ** 2
    if out.fn == "linear":
        A, _ = _out_linear(out, P)
        grads[m - 1] = grads[m - 1] - w2 * disc @ A
    else:
        grads[m - 1] = grads[m - 1] - w2 * disc  # w²(φ(z) − y)
    energy = e_out + sum(0.5 * layers[k].weight ** 2 * (U[k] ** 2).sum(axis=1) for k in range(m))
    return grads, U, disc, energy


def _filippov(net: FeedForward, V, grads, U):
    """Replace the z-gradient of units exactly on a switching surface by the Filippov selection.

    At z_i = 0 the one-sided slopes are g_R (active side, what the 1[z ≥ 0] gate gives) and
    g_L = g_R + w_relu² a_i (inactive side). The flow leaves the surface on the side where it descends
    (g_R < 0: up; g_L > 0: down) and otherwise slides: ż_i = 0.
    """
    for k in net.relu_layers:
        if k == 0:
            continue
        on = V[k] == 0
        if not bool(on.any()):
            continue
        gR = grads[k - 1]
        gL = gR + net.layers[k].weight ** 2 * U[k]
        grads[k - 1] = np.where(on, np.where(gR < 0, gR, np.where(gL > 0, gL, 0.0)), gR)
    return grads


def diffusion_equilibrium(net: FeedForward, P, X, Y, xp=np, tol: float = 1e-8, max_iter: int = 50000,
                          init=None, dt: float | None = None) -> Equilibrium:
    """The heat equation ċ_Ω = −∇_{c_Ω} E (explicit Euler, step 1/L), from the forward pass.

    Each step uses only each edge's own discord and endpoint stalks (local). Switching surfaces are
    handled as a Filippov system: a unit whose z crosses 0 in a step stops at z = 0, and a unit at 0
    leaves it only on the side where E descends (see :func:`_filippov`), so sliding solutions are
    reached instead of chattered around. An example is consistent when the (Filippov) gradient
    satisfies ‖∇E‖∞ ≤ tol·(1 + ‖y‖∞).
    """
    V = forward(net, P, X, xp) if init is None else [v.copy() for v in init]
    V[0] = X
    step = dt if dt is not None else 1.0 / lipschitz_bound(net, P, xp)
    B = X.shape[0]
    thresh = tol * (1.0 + float(xp.abs(Y).max()))
    tails = [k for k in net.relu_layers if k >= 1]

    def grad(V):
        grads, U, disc, energy = energy_gradient(net, P, V, Y, xp)
        grads = _filippov(net, V, grads, U)
        gmax = xp.zeros(B)
        for g in grads:
            gmax = xp.maximum(gmax, xp.abs(g).max(axis=1))
        return grads, U, disc, energy, gmax

    it = 0
    for it in range(1, max_iter + 1):
        grads, U, disc, energy, gmax = grad(V)
        if bool((gmax <= thresh).all()):
            break
        old = {k: V[k] for k in tails}
        for j in range(1, len(V)):
            V[j] = V[j] - step * grads[j - 1]
        for k in tails:  # a crossing stops on the surface
            V[k] = xp.where(old[k] * V[k] < 0, 0.0, V[k])
    grads, U, disc, energy, gmax = grad(V)
    S = {k: xp.where(V[k] > 0, 1, xp.where(V[k] < 0, -1, 0)).astype(np.int8) for k in net.relu_layers}
    sliding = sum(((S[k] == 0).sum(axis=1) for k in tails), xp.zeros(B, dtype=np.int64))
    return Equilibrium(V, U, disc, energy, S, gmax <= thresh, sliding, it,
                       {"grad_max": float(gmax.max()) if B else 0.0, "dt": step})


# ----------------------------------------------------------------------------------------------
# the local update (envelope theorem)


def local_gradients(net: FeedForward, P, eq: Equilibrium, reduce: str = "mean", xp=np) -> dict:
    """∇_θ of the batch residual from each parameterised edge's own discord and endpoint stalks.

    For an edge with discord u = v_head − W v_tail − b and weight w: ∂E/∂W = −w² u v_tailᵀ,
    ∂E/∂b = −w² u (the envelope theorem: c* is stationary, so no chain rule is needed). ``reduce``:
    "mean" (the sheaf trainer) or "sum" (the paper's joint rule) over the batch.
    """
    B = eq.V[0].shape[0]
    c = 1.0 / B if reduce == "mean" else 1.0
    grads: dict = {}

    def acc(name, g):
        grads[name] = grads[name] + g if name in grads else g

    ones = None  # sums over the batch as products with a ones vector (a BLAS call, not a reduction loop)
    for k, layer in enumerate(net.layers):
        if layer.kind != "param":
            continue
        s = -c * layer.weight ** 2  # scales the small (d_out, d_in) result, not the (B, d) discords
        u = eq.U[k]
        acc(layer.param, (u.T @ eq.V[k]) * s)
        if layer.bias is not None:
            ones = xp.ones(B) if ones is None else ones
            acc(layer.bias, (ones @ u) * s)
    out = net.output
    if out.fn == "linear" and (out.param is not None or out.bias is not None):
        s = -c * out.weight ** 2
        if out.param is not None:
            acc(out.param, (eq.out_disc.T @ eq.V[-1]) * s)
        if out.bias is not None:
            ones = xp.ones(B) if ones is None else ones
            acc(out.bias, (ones @ eq.out_disc) * s)
    for name in P:
        if name not in grads:
            grads[name] = xp.zeros_like(P[name])
    return grads


def parameter_sheaf_gradients(G, P, xp=np) -> dict:
    """∇ of the parameter sheaf's energy: reluctance (θ–0, weight √λ) gives λθ; a tie a–b of
    weight w gives w²(θ_a − θ_b) on a and the opposite on b. Parameters without edges get nothing."""
    H = G.graph["parameter_sheaf"]
    out: dict = {}
    for a, b, d in H.edges(data=True):
        w2 = xp.asarray(d["weight"], dtype=float) ** 2
        if d.get("kind") == "reluctance" or ZERO in (a, b):
            p = a if b == ZERO else b
            g = w2 * P[p]
            out[p] = out[p] + g if p in out else g
        else:
            diff = w2 * (P[a] - P[b])
            out[a] = out[a] + diff if a in out else diff
            out[b] = out[b] - diff if b in out else -diff
    return out


def parameter_sheaf_energy(G, P) -> float:
    """½ Σ w² ‖θ_a − θ_b‖² over the parameter sheaf's edges (θ_ZERO = 0)."""
    H = G.graph["parameter_sheaf"]
    e = 0.0
    for a, b, d in H.edges(data=True):
        if ZERO in (a, b):
            p = a if b == ZERO else b
            e += 0.5 * float((np.asarray(d["weight"]) ** 2 * to_numpy(P[p]) ** 2).sum())
        else:
            e += 0.5 * float((np.asarray(d["weight"]) ** 2 * (to_numpy(P[a]) - to_numpy(P[b])) ** 2).sum())
    return e


def unsupported(G) -> SheafError:
    return SheafError(Diagnostic(
        "E612", f"`{G.graph.get('name', 'sheaf')}` is not a feed-forward network sheaf, and the training fast phase "
        "only handles those (a chain x -> ... -> y of affine/linear/relu/identity edges, then an identity, "
        "sigmoid or softmax output edge)",
        hint="`sheaf verify` explains which structural claim fails; `sheaf infer` solves general sheaves"))


def edge_gradients(G, P, C, discord, reduce: str = "mean", xp=np) -> dict:
    """The local update for any sheaf, edge by edge from the IR (no chain rule).

    For an edge e = (u → v) with discord δ_e = F_{v◁e} c_v − F_{u◁e} c_u − b_e (``discord``: the
    (B, M) array of every edge's discord at the cochain ``C`` (B, N), edges in declaration order) and
    weight w_e:  ∂E/∂(F_u) = −w_e² δ_e c_uᵀ,  ∂E/∂(F_v) = +w_e² δ_e c_vᵀ,  ∂E/∂b_e = −w_e² δ_e,
    for the parameterised maps F (and the bias b) on that edge; summed or averaged over the batch.
    """
    from ..ir import edge_offsets, edges as ir_edges

    B = C.shape[0]
    c = 1.0 / B if reduce == "mean" else 1.0
    eoff = edge_offsets(G)
    grads: dict = {}

    def acc(name, g):
        grads[name] = grads[name] + g if name in grads else g

    for u, v, name, d in ir_edges(G):
        delta = discord[:, eoff[name]: eoff[name] + d["dim"]]
        wd = (c * d["weight"] ** 2) * delta
        for m, vert, sign in ((d["src_map"], u, -1.0), (d["dst_map"], v, 1.0)):
            if isinstance(m, ParamMap):
                off, dim = G.nodes[vert]["offset"], G.nodes[vert]["dim"]
                acc(m.param, sign * (wd.T @ C[:, off: off + dim]))
        if d.get("bias") is not None:
            acc(d["bias"], -wd.sum(axis=0))
    for name in P:
        if name not in grads:
            grads[name] = xp.zeros_like(P[name])
    return grads
