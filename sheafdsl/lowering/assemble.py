"""Assembled (single-example) operators as scipy.sparse matrices: the reference form of δ.

For a cochain c ∈ R^N and the 1-cochain space R^M (M = Σ_e d_e, edges in declaration order):

    (δc)_e = F_{v◁e} c_v − F_{u◁e} c_u − o_e,   δ ∈ R^{M×N} (the linear part),
    E(c)   = ½ ‖W (δc − o)‖²,  W = diag(w_e repeated d_e times),
    L      = δᵀ W² δ.

State-dependent maps are linearised at a state: a ReLU gate is diag(1[c_u ≥ 0]) (or a given 0/1
``gates[edge]`` vector), a nonlinear map φ is its Jacobian Dφ(c_u). With neither a state nor gates, a
gate is all ones and φ is linearised at 0.

>>> from sheafdsl.ir import new_sheaf, add_stalk, add_edge, Identity
>>> G = new_sheaf(); add_stalk(G, "a", 1); add_stalk(G, "b", 1)
>>> add_edge(G, "ab", "a", "b", src_map=Identity(), dst_map=Identity())
>>> coboundary_matrix(G, {}).toarray()
array([[-1.,  1.]])
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..ir import edge_offsets, edges, total_dim
from ..ir.maps import Constant, Identity, Nonlinear, ParamMap, ReluGate, Scaled, Select
from .backend import array_module, to_numpy


def sigmoid(z):
    """σ(z) = 1 / (1 + e^{−z}), computed without overflow."""
    xp = array_module(z)
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softmax(z, axis=-1):
    """softmax over ``axis``, shifted by the max for stability."""
    xp = array_module(z)
    e = xp.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def nonlinear_jacobian(fn: str, z: np.ndarray) -> np.ndarray:
    """Dφ(z) for one example: sigmoid -> diag(s(1−s)); softmax -> diag(p) − p pᵀ."""
    z = np.asarray(z, dtype=float)
    if fn == "sigmoid":
        s = sigmoid(z)
        return np.diag(s * (1 - s))
    p = softmax(z)
    return np.diag(p) - np.outer(p, p)


def restriction_matrix(m, d_v: int, params: dict, state_v=None, gate=None) -> sp.csr_matrix:
    """The linear map F_{v◁e} (or its linearisation) as a sparse d_e × d_v matrix."""
    if isinstance(m, Identity):
        return sp.identity(d_v, format="csr")
    if isinstance(m, Scaled):
        return (m.scale * sp.identity(d_v, format="csr")).tocsr()
    if isinstance(m, Constant):
        return sp.csr_matrix(m.matrix)
    if isinstance(m, ParamMap):
        return sp.csr_matrix(to_numpy(params[m.param]))
    if isinstance(m, Select):
        rows = np.arange(len(m.indices))
        return sp.csr_matrix((np.ones(len(m.indices)), (rows, np.array(m.indices))), shape=(len(m.indices), d_v))
    if isinstance(m, ReluGate):
        if gate is None:
            gate = np.ones(d_v) if state_v is None else (np.asarray(state_v) >= 0).astype(float)
        return sp.diags(np.asarray(gate, dtype=float), format="csr")
    if isinstance(m, Nonlinear):
        z = np.zeros(d_v) if state_v is None else np.asarray(state_v, dtype=float)
        return sp.csr_matrix(nonlinear_jacobian(m.fn, z))
    raise TypeError(f"not a restriction map: {m!r}")


def coboundary_matrix(G, params: dict, state=None, gates: dict | None = None) -> sp.csr_matrix:
    """δ ∈ R^{M×N} for one example (see the module docstring for how gates are linearised)."""
    gates = gates or {}
    state = None if state is None else to_numpy(state)
    N = total_dim(G)
    eoff = edge_offsets(G)
    blocks = []
    for u, v, name, d in edges(G):
        rows = slice(eoff[name], eoff[name] + d["dim"])
        for m, vert, sign in ((d["src_map"], u, -1.0), (d["dst_map"], v, 1.0)):
            nd = G.nodes[vert]
            sv = None if state is None else state[nd["offset"]: nd["offset"] + nd["dim"]]
            F = restriction_matrix(m, nd["dim"], params, sv, gates.get(name)).tocoo()
            blocks.append((F.row + rows.start, F.col + nd["offset"], sign * F.data))
    M = sum(d["dim"] for *_, d in edges(G))
    if not blocks:
        return sp.csr_matrix((M, N))
    r, c, x = (np.concatenate(t) for t in zip(*blocks))
    return sp.csr_matrix((x, (r, c)), shape=(M, N))


def offset_vector(G, params: dict) -> np.ndarray:
    """o ∈ R^M: each affine edge's bias, zero elsewhere."""
    eoff = edge_offsets(G)
    o = np.zeros(sum(d["dim"] for *_, d in edges(G)))
    for _, _, name, d in edges(G):
        if d.get("bias") is not None:
            o[eoff[name]: eoff[name] + d["dim"]] = to_numpy(params[d["bias"]])
    return o


def edge_weight_vector(G) -> np.ndarray:
    """w ∈ R^M: w_e repeated d_e times (so E = ½ ‖w ⊙ (δc − o)‖²)."""
    return np.concatenate([np.full(d["dim"], d["weight"]) for *_, d in edges(G)]) if G.number_of_edges() else np.zeros(0)


def laplacian_matrix(G, params: dict, state=None, gates: dict | None = None) -> sp.csr_matrix:
    """L = δᵀ W² δ (N × N, symmetric positive semidefinite)."""
    d = coboundary_matrix(G, params, state, gates)
    w2 = sp.diags(edge_weight_vector(G) ** 2)
    return (d.T @ w2 @ d).tocsr()
