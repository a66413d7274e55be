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
from . import maps, nonlinear
from .backend import array_module, to_numpy
from .params import check_shapes


def sigmoid(z):
    """σ(z) = 1 / (1 + e^{−z}), computed without overflow (on z's array module)."""
    return nonlinear.sigmoid(array_module(z), z)


def softmax(z, axis=-1):
    """softmax over ``axis``, shifted by the max for stability."""
    xp = array_module(z)
    return xp.moveaxis(nonlinear.softmax(xp, xp.moveaxis(z, axis, -1)), -1, axis)


def nonlinear_jacobian(fn: str, z: np.ndarray, arg: float | None = None) -> np.ndarray:
    """Dφ(z) for one example of the registry nonlinearity ``fn`` (sigmoid: diag(s(1−s)); softmax: diag(p) − p pᵀ)."""
    z = np.asarray(z, dtype=float)
    return nonlinear.kernel(fn).jacobian(np, z[None, :], arg)[0]


def restriction_matrix(m, d_v: int, params: dict, state_v=None, gate=None) -> sp.csr_matrix:
    """The linear map F_{v◁e} (or its linearisation) as a sparse d_e × d_v matrix (:func:`.maps.matrix`)."""
    return sp.csr_matrix(maps.matrix(m, d_v, params, state=state_v, gate=gate))


def coboundary_matrix(G, params: dict, state=None, gates: dict | None = None) -> sp.csr_matrix:
    """δ ∈ R^{M×N} for one example (see the module docstring for how gates are linearised)."""
    check_shapes(G, params)
    gates = gates or {}
    state = None if state is None else to_numpy(state)
    N = total_dim(G)
    eoff = edge_offsets(G)
    blocks = []
    for u, v, name, d in edges(G):
        rows = slice(eoff[name], eoff[name] + d["dim"])
        for m, vert, sign, blk in ((d["src_map"], u, -1.0, d.get("src_block")), (d["dst_map"], v, 1.0, d.get("dst_block"))):
            nd = G.nodes[vert]
            sv = None if state is None else state[nd["offset"]: nd["offset"] + nd["dim"]]
            # a parameter map on a block (a, b) of its stalk acts on coordinates a..b−1 only
            a, width = (0, nd["dim"]) if blk is None else (blk[0], blk[1] - blk[0])
            F = restriction_matrix(m, width, params, sv, gates.get(name)).tocoo()
            blocks.append((F.row + rows.start, F.col + nd["offset"] + a, sign * F.data))
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
