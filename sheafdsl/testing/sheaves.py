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
from ..ir import (Constant, Identity, ReluGate, Scaled, Select, add_edge, add_pin, add_stalk, edges, from_model,
                  new_sheaf, param_specs)

__all__ = ["NetworkCase", "widths", "networks", "weights", "activation_patterns", "restriction_maps", "sheaves",
           "pin_sets", "with_pins", "network_source"]


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
