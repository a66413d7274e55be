"""hypothesis strategies for sheaves as IR graphs: networks, general sheaves, weights, gates and pins.

Every strategy draws plain IR objects (:mod:`sheafdsl.ir`), so a property test can hand them to any layer:
cohomology, lowering, solvers, verify. Sizes are small by default (property tests should be fast); every
bound is a keyword.

=========================== ==========================================================================
strategy                    draws
=========================== ==========================================================================
``widths()``                a network's layer widths [n0, ..., nL]
``networks()``              a :class:`NetworkCase`: the IR of ``network n : n0 -> ... -> nL`` and weights
``weights(G)``              a value for every parameter of G (finite floats)
``activation_patterns(G)``  a 0/1 gate vector for every ReLU edge of G
``restriction_maps(dv, de)`` a rational constant map (Identity, Scaled, Constant, Select)
``sheaves()``               a general sheaf: a random multigraph with rational constant maps
``pin_sets(G)``             a list of (stalk, indices or None) to pin; :func:`with_pins` applies it
``consensus_problems()``    a :class:`ConsensusCase`: a consensus problem (objectives of every kind, hard
                            and soft edges mixed, pins, soft pins), feasible by construction, with the
                            feasible point it was built around
=========================== ==========================================================================

>>> from hypothesis import given, settings
>>> from sheafdsl.analysis.cohomology import cohomology
>>> @settings(max_examples=5, deadline=None)
... @given(sheaves())
... def test_rank_nullity(G):
...     c = cohomology(G)
...     assert c.h0 + c.rank == c.N and c.h1 + c.rank == c.M
>>> test_rank_nullity()
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from ..frontend import load_text
from ..ir import (Constant, Identity, ReluGate, Scaled, Select, add_edge, add_objective, add_param, add_pin,
                  add_soft_pin, add_stalk, edges, from_model, is_consensus, new_sheaf, param_specs)
from ..lowering import init_params
from ..lowering.maps import matrix as map_matrix
from ..options import OBJECTIVE_KINDS

__all__ = ["NetworkCase", "widths", "networks", "weights", "activation_patterns", "restriction_maps", "sheaves",
           "pin_sets", "with_pins", "network_source", "ConsensusCase", "consensus_problems"]


@dataclass
class NetworkCase:
    """A drawn network: its IR ``G``, parameter values ``params``, ``widths`` and ``output`` nonlinearity."""

    G: object
    params: dict
    widths: tuple
    output: str
    source: str


def widths(*, min_layers: int = 1, max_layers: int = 3, min_width: int = 1, max_width: int = 4,
           max_input: int = 3, max_output: int = 2):
    """[n0, n1, ..., nL] with L in [min_layers, max_layers] affine layers, hidden widths in [min_width, max_width],
    an input width in [1, max_input] and an output width in [1, max_output]."""
    return st.tuples(
        st.integers(1, max_input),
        st.lists(st.integers(min_width, max_width), min_size=min_layers - 1, max_size=max_layers - 1),
        st.integers(1, max_output),
    ).map(lambda t: (t[0], *t[1], t[2]))


def network_source(widths_, output: str = "identity", name: str = "net") -> str:
    """The ``.sheaf`` text of a network: ``sheaf NAME`` and ``network mlp : n0 -> ... -> nL output F weight 1``
    (every edge weight 1, whatever the sugar's default output weight)."""
    arrows = " -> ".join(str(n) for n in widths_)
    tail = f" output {output} weight 1"
    return f"sheaf {name}\nnetwork mlp : {arrows}{tail}\n"


def weights(G, *, min_value: float = -3.0, max_value: float = 3.0):
    """A value for every parameter of ``G``: finite floats in [min_value, max_value], as float64 arrays."""
    specs = param_specs(G)
    parts = {}
    for p, s in specs.items():
        n = int(np.prod(s.shape))
        parts[p] = st.lists(st.floats(min_value, max_value, allow_nan=False, allow_infinity=False),
                            min_size=n, max_size=n).map(lambda v, shape=s.shape: np.array(v, dtype=float).reshape(shape))
    return st.fixed_dictionaries(parts)


@st.composite
def networks(draw, widths=widths(), outputs=("identity",), weight_values=None):
    """A :class:`NetworkCase`: a ReLU network from ``network`` sugar (input pinned to ``input``, output to
    ``target``) with drawn widths, an output nonlinearity from ``outputs`` (identity, sigmoid, softmax) and drawn
    weights (``weight_values``: a strategy of floats, default uniform in [-3, 3])."""
    w = draw(widths)
    out = draw(st.sampled_from(tuple(outputs)))
    if out == "softmax" and w[-1] < 2:
        w = (*w[:-1], 2)
    src = network_source(w, out)
    G = from_model(load_text(src))
    if weight_values is None:
        params = draw(weights(G))
    else:
        params = {p: np.array(draw(st.lists(weight_values, min_size=int(np.prod(s.shape)),
                                            max_size=int(np.prod(s.shape)))), dtype=float).reshape(s.shape)
                  for p, s in param_specs(G).items()}
    return NetworkCase(G, params, tuple(w), out, src)


def activation_patterns(G):
    """{relu edge: 0/1 float vector} for every ReLU edge of ``G`` (the gates diag(σ) of one activation pattern)."""
    relu = [(name, d["dim"]) for _, _, name, d in edges(G)
            if isinstance(d["src_map"], ReluGate) or isinstance(d["dst_map"], ReluGate)]
    return st.fixed_dictionaries({name: st.lists(st.sampled_from((0.0, 1.0)), min_size=n, max_size=n)
                                  .map(lambda v: np.array(v, dtype=float)) for name, n in relu})


def _entries(max_abs: int):
    return st.integers(-max_abs, max_abs).map(float)


def restriction_maps(d_v: int, d_e: int | None = None, *, max_abs: int = 2):
    """A rational constant map R^{d_v} -> R^{d_e}: Identity or Scaled (when d_e = d_v), a Select, or a Constant
    matrix with integer entries in [-max_abs, max_abs] (exact over ℚ). With ``d_e`` None the map decides it."""
    options = []
    if d_e is None or d_e == d_v:
        options += [st.just(Identity()), st.sampled_from((-2.0, -1.0, 0.5, 2.0, 3.0)).map(Scaled)]
    rows = st.just(d_e) if d_e is not None else st.integers(1, max(1, d_v))
    options.append(rows.flatmap(lambda r: st.lists(st.lists(_entries(max_abs), min_size=d_v, max_size=d_v),
                                                   min_size=r, max_size=r).map(lambda m: Constant(np.array(m)))))
    if d_e is None or d_e <= d_v:
        k = st.just(d_e) if d_e is not None else st.integers(1, d_v)
        options.append(k.flatmap(lambda n: st.lists(st.integers(0, d_v - 1), min_size=n, max_size=n, unique=True)
                                 .map(lambda ix: Select(tuple(sorted(ix))))))
    return st.one_of(options)


@st.composite
def sheaves(draw, *, min_vertices: int = 1, max_vertices: int = 5, max_edges: int = 7, max_dim: int = 3,
            max_abs: int = 2, self_loops: bool = False, name: str = "random"):
    """A general sheaf (IR graph, built with :func:`sheafdsl.ir.add_stalk`/:func:`~sheafdsl.ir.add_edge`): a
    random multigraph on up to ``max_vertices`` stalks of dimension 1..``max_dim`` with up to ``max_edges``
    edges; each edge has a drawn stalk dimension and two rational constant maps (:func:`restriction_maps`).
    No pins (see :func:`pin_sets` / :func:`with_pins`)."""
    G = new_sheaf(name)
    n = draw(st.integers(min_vertices, max_vertices))
    dims = draw(st.lists(st.integers(1, max_dim), min_size=n, max_size=n))
    for i, d in enumerate(dims):
        add_stalk(G, f"v{i}", d)
    m = draw(st.integers(0, max_edges)) if (n > 1 or self_loops) else 0
    for k in range(m):
        u = draw(st.integers(0, n - 1))
        if self_loops:
            v = draw(st.integers(0, n - 1))
        else:  # a vertex other than u, drawn without rejection
            v = draw(st.integers(0, n - 2))
            v += v >= u
        d_e = draw(st.integers(1, max_dim))
        fu = draw(restriction_maps(dims[u], d_e, max_abs=max_abs))
        fv = draw(restriction_maps(dims[v], d_e, max_abs=max_abs))
        add_edge(G, f"e{k}", f"v{u}", f"v{v}", src_map=fu, dst_map=fv, dim=d_e)
    return G


@st.composite
def pin_sets(draw, G, *, min_size: int = 0, max_size: int | None = None, partial: bool = True):
    """A list of ``(stalk, indices)`` to pin: distinct stalks of ``G``, each wholly (indices None) or, when
    ``partial``, on a nonempty subset of its coordinates."""
    names = [v for v in G.nodes if not G.nodes[v].get("anchor")]
    chosen = draw(st.lists(st.sampled_from(names), unique=True, min_size=min(min_size, len(names)),
                           max_size=len(names) if max_size is None else min(max_size, len(names)))) if names else []
    out = []
    for v in chosen:
        d = G.nodes[v]["dim"]
        if partial and d > 1 and draw(st.booleans()):
            idx = draw(st.lists(st.integers(0, d - 1), min_size=1, max_size=d, unique=True))
            out.append((v, tuple(sorted(idx))))
        else:
            out.append((v, None))
    return out


def with_pins(G, pins, source: str = "value", value: float = 0.0):
    """A copy of ``G`` with every ``(stalk, indices)`` of ``pins`` hard-pinned (source ``value``: to ``value``)."""
    H = copy.deepcopy(G)
    for v, idx in pins:
        add_pin(H, v, source, indices=idx, value=value if source == "value" else None)
    return H


# ----------------------------------------------------------------------------------------------
# consensus problems


@dataclass
class ConsensusCase:
    """A drawn consensus problem: its IR ``G``, its parameter values ``params`` (every parameter is a literal:
    the hard edges' biases and any parameter Q), and ``point``, {stalk: array}, a point that satisfies every
    hard edge, hard pin and indicator (so the problem is feasible when ``feasible``). ``strictly_convex``: every
    stalk has a quadratic term with Q ≻ 0, so the minimiser is unique."""

    G: object
    params: dict
    point: dict
    feasible: bool
    strictly_convex: bool


def _quarters(lo: int, hi: int):
    """Multiples of 1/4 in [lo, hi]: exact in binary and as decimals, so exact (ℚ) and float checks agree."""
    return st.integers(4 * lo, 4 * hi).map(lambda k: k / 4)


@st.composite
def consensus_problems(draw, *, min_vertices: int = 1, max_vertices: int = 5, max_edges: int = 6, max_dim: int = 3,
                       kinds=OBJECTIVE_KINDS, hard: bool = True, soft: bool = True, pins: bool = True,
                       soft_pins: bool = True, strictly_convex: bool = True, feasible: bool = True,
                       param_q: bool = True, name: str = "consensus") -> ConsensusCase:
    """A consensus problem (IR graph) on a random multigraph.

    First a point p is drawn, then everything is built so that p is feasible: each stalk gets objective terms
    drawn from ``kinds`` (a box around p_v, nonneg with p_v ≥ 0, simplex with p_v on it, l1, a quadratic
    ½ xᵀQx + qᵀx with Q = BᵀB, B integer, plus I when ``strictly_convex``, and integer q); each edge (up to
    ``max_edges``, no loops) has rational constant maps (:func:`restriction_maps`), is hard (when ``hard``;
    soft when ``soft``; mixed when both) and, when hard, the bias b_e = F_v p_v − F_u p_u (a literal
    parameter) so that (δp)_e = 0; with ``feasible=False`` the hard biases are drawn at random instead (the
    problem may be infeasible). With ``pins``, some coordinates are hard-pinned to p; with ``soft_pins``,
    some stalks get a soft pin. ``strictly_convex`` puts a quadratic term with Q ≻ 0 on every stalk (the
    minimiser is then unique); without it, quadratics are drawn like any other term (PSD, often singular).
    ``param_q``: a quadratic's Q is sometimes a parameter instead of a literal. Every number is a multiple of
    1/4 (exact in binary), so exact and floating-point checks see the same problem.
    """
    kinds = tuple(kinds)
    G = new_sheaf(name)
    n = draw(st.integers(min_vertices, max_vertices))
    dims = draw(st.lists(st.integers(1, max_dim), min_size=n, max_size=n))
    point = {}
    n_params = [0]

    def literal_param(shape, value) -> str:
        pname = f"P{n_params[0]}"
        n_params[0] += 1
        add_param(G, pname, shape, "literal", value=np.asarray(value, dtype=float).tolist())
        return pname

    for i, d in enumerate(dims):
        v = f"v{i}"
        add_stalk(G, v, d)
        terms = list(draw(st.lists(st.sampled_from(kinds), max_size=3))) if kinds else []
        if strictly_convex and "quadratic" not in terms:
            terms.append("quadratic")
        if "simplex" in terms:  # a point on the simplex: 4 quarters shared among the coordinates
            cuts = sorted(draw(st.lists(st.integers(0, 4), min_size=d - 1, max_size=d - 1)))
            p = np.diff([0] + cuts + [4]) / 4.0
        elif "nonneg" in terms:
            p = np.array(draw(st.lists(_quarters(0, 2), min_size=d, max_size=d)))
        else:
            p = np.array(draw(st.lists(_quarters(-2, 2), min_size=d, max_size=d)))
        point[v] = p
        for kind in terms:
            if kind == "quadratic":
                B = np.array(draw(st.lists(st.lists(_entries(2), min_size=d, max_size=d), min_size=1, max_size=d + 1)))
                Q = B.T @ B + (np.eye(d) if strictly_convex else 0.0)
                q = np.array(draw(st.lists(_entries(3), min_size=d, max_size=d)))
                Qarg = literal_param((d, d), Q) if param_q and draw(st.booleans()) else Q
                add_objective(G, v, "quadratic", Q=Qarg, q=q)
            elif kind == "box":
                below = np.array(draw(st.lists(_quarters(0, 2), min_size=d, max_size=d)))
                above = np.array(draw(st.lists(_quarters(0, 2), min_size=d, max_size=d)))
                add_objective(G, v, "box", lo=p - below, hi=p + above)
            elif kind == "l1":
                add_objective(G, v, "l1", lam=draw(_quarters(0, 2)))
            else:
                add_objective(G, v, kind)
    kinds_e = [k for k, ok in (("hard", hard), ("soft", soft)) if ok]
    m = draw(st.integers(0, max_edges)) if n > 1 and kinds_e else 0
    for k in range(m):
        u = draw(st.integers(0, n - 1))
        v = draw(st.integers(0, n - 2))
        v += v >= u
        d_e = draw(st.integers(1, max_dim))
        fu = draw(restriction_maps(dims[u], d_e))
        fv = draw(restriction_maps(dims[v], d_e))
        is_hard = draw(st.sampled_from(kinds_e)) == "hard"
        bias = None
        if is_hard:
            b = map_matrix(fv, dims[v], {}) @ point[f"v{v}"] - map_matrix(fu, dims[u], {}) @ point[f"v{u}"] \
                if feasible else np.array(draw(st.lists(_quarters(-2, 2), min_size=d_e, max_size=d_e)))
            if feasible or draw(st.booleans()):
                bias = literal_param((d_e,), b)
        weight = 1.0 if is_hard else draw(st.sampled_from((0.5, 1.0, 2.0)))
        add_edge(G, f"e{k}", f"v{u}", f"v{v}", src_map=fu, dst_map=fv, dim=d_e, weight=weight, bias=bias, hard=is_hard)
    for i, d in enumerate(dims):
        v = f"v{i}"
        if pins and draw(st.integers(0, 3)) == 0:
            idx = tuple(sorted(draw(st.lists(st.integers(0, d - 1), min_size=1, max_size=d, unique=True))))
            add_pin(G, v, "value", indices=idx, value=point[v][list(idx)])
        if soft_pins and draw(st.integers(0, 3)) == 0:
            add_soft_pin(G, f"soft_{v}", v, np.array(draw(st.lists(_quarters(-2, 2), min_size=d, max_size=d))),
                         draw(st.sampled_from((0.5, 1.0, 2.0))))
    if not is_consensus(G):  # nothing drawn made it one: an objective that constrains nothing
        add_objective(G, "v0", "quadratic", Q=np.zeros((dims[0], dims[0])))
    return ConsensusCase(G, init_params(G, 0), point, feasible, strictly_convex)
