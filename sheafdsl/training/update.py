"""The local update of the sheaf rule (envelope theorem): parameter gradients from each edge's own
discord and endpoint stalks at an equilibrium, plus the parameter sheaf's gradient. No solver lives here:
the equilibrium comes from :func:`sheafdsl.solvers.solve`.
"""

from __future__ import annotations

import numpy as np

from ..ir import ZERO
from ..ir.maps import ParamMap
from ..lowering.backend import to_numpy
from ..lowering.chain import FeedForward


def local_gradients(net: FeedForward, P, eq, reduce: str = "mean", xp=np, out: dict | None = None) -> dict:
    """∇_θ of the batch residual from each parameterised edge's own discord and endpoint stalks.

    For an edge with discord u = v_head − W v_tail − b and weight w: ∂E/∂W = −w² u v_tailᵀ,
    ∂E/∂b = −w² u (the envelope theorem: c* is stationary, so no chain rule is needed). ``reduce``:
    "mean" (the sheaf trainer) or "sum" (the paper's joint rule) over the batch. ``out``: name -> array of
    the parameter's shape (views of a packed gradient, say) to write the gradients into, the same numbers
    without allocating them; the returned dict then holds those arrays.
    """
    B = eq.V[0].shape[0]
    c = 1.0 / B if reduce == "mean" else 1.0
    grads: dict = {}

    def acc(name, a, b, s):  # grads[name] += (a @ b) * s
        if out is None:
            g = (a @ b) * s
            grads[name] = grads[name] + g if name in grads else g
        elif name in grads:  # a parameter on two edges
            g = (a @ b) * s
            grads[name] += g
        else:
            g = grads[name] = out[name]
            xp.matmul(a, b, out=g)
            g *= s

    ones = None  # sums over the batch as products with a ones vector (a BLAS call, not a reduction loop)
    for k, layer in enumerate(net.layers):
        if layer.kind != "param":
            continue
        s = -c * layer.weight ** 2  # scales the small (d_out, d_in) result, not the (B, d) discords
        u = eq.U[k]
        acc(layer.param, u.T, eq.V[k], s)
        if layer.bias is not None:
            ones = xp.ones(B) if ones is None else ones
            acc(layer.bias, ones, u, s)
    o = net.output
    if o.fn == "linear" and (o.param is not None or o.bias is not None):
        s = -c * o.weight ** 2
        if o.param is not None:
            acc(o.param, eq.out_disc.T, eq.V[-1], s)
        if o.bias is not None:
            ones = xp.ones(B) if ones is None else ones
            acc(o.bias, ones, eq.out_disc, s)
    for name in P:
        if name not in grads:
            if out is None:
                grads[name] = xp.zeros_like(P[name])
            else:
                g = grads[name] = out[name]
                g[...] = 0.0
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
