"""The IR: a cellular sheaf as a ``networkx.MultiDiGraph``, plus its parameter sheaf.

State sheaf ``G`` (``G.graph["kind"] == "state"``):

- vertex ``v``: ``dim`` (d_v), ``offset`` (where c_v starts in the cochain vector, set in insertion
  order), ``pins`` (a list of :class:`PinSpec`), ``anchor`` (True for a soft pin's constant vertex);
- edge ``(u, v, key=name)``: ``kind``, ``src_map`` F_{u◁e}, ``dst_map`` F_{v◁e} (see :mod:`.maps`),
  ``dim`` (d_e), ``weight`` (w_e), ``bias`` (a parameter name or None): the discord is
  (δc)_e = F_{v◁e} c_v − F_{u◁e} c_u − b;
- ``G.graph``: ``name``, ``parameter_sheaf`` (the graph ``H`` below), ``network`` (widths and output,
  or None), ``train`` (defaults), ``source`` and ``path`` (when built from text).

Parameter sheaf ``H = G.graph["parameter_sheaf"]`` (a ``networkx.MultiGraph``): a vertex per parameter
with ``shape`` and initialiser, the vertex ``ZERO`` (the zero anchor), a ``reluctance`` edge from a
parameter to ``ZERO`` of weight √λ (energy ½λ‖θ‖²), and a ``tie`` edge between two parameters
(energy ½w²‖θ_a − θ_b‖²).

Build one from Python, without any text:

>>> G = new_sheaf("triangle")
>>> for v in "abc":
...     add_stalk(G, v, 1)
>>> add_edge(G, "ab", "a", "b", src_map=Identity(), dst_map=Identity())
>>> add_edge(G, "bc", "b", "c", src_map=Identity(), dst_map=Identity())
>>> add_edge(G, "ca", "c", "a", src_map=Identity(), dst_map=Scaled(-1.0))
>>> add_pin(G, "a", "value", value=[1.0])
>>> total_dim(G), edge_dim(G)
(3, 3)
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from .maps import Constant, Identity, Nonlinear, ParamMap, ReluGate, Scaled, Select, map_rows, nonlinear_map

ZERO = "__zero__"
PIN_SOURCES = ("input", "target", "value")
#: the hard pins of the two boundaries: training pins input, target and constants (the two-sided
#: equilibrium); inference leaves a target stalk free (the harmonic extension of the inputs)
TRAINING = ("input", "target", "value")
INFERENCE = ("input", "value")
#: boundary name -> its pin sources (the choices of `--boundary` and of the API)
BOUNDARIES = {"training": TRAINING, "inference": INFERENCE}


@dataclass(frozen=True, eq=False)
class PinSpec:
    """A hard pin of coordinates ``indices`` (None: all) of a vertex.

    ``source`` is "input" or "target" (filled by data) or "value" (the constant ``value``).
    """

    source: str
    indices: tuple[int, ...] | None = None
    value: np.ndarray | None = None


@dataclass(frozen=True)
class ParamSpec:
    """A parameter's shape and initialiser (see :class:`sheafdsl.frontend.model.Param`)."""

    shape: tuple[int, ...]
    init: str = "he"
    std: float | None = None
    value: object = None
    file: str | None = None
    key: str | None = None
    base_dir: str = "."


def new_sheaf(name: str = "sheaf") -> nx.MultiDiGraph:
    """An empty state sheaf with an empty parameter sheaf attached."""
    G = nx.MultiDiGraph(name=name, kind="state", network=None, train={}, source="", path="<python>")
    H = nx.MultiGraph(kind="parameters")
    H.add_node(ZERO, anchor=True, shape=None)
    G.graph["parameter_sheaf"] = H
    return G


def add_stalk(G: nx.MultiDiGraph, name: str, dim: int, *, anchor: bool = False) -> None:
    """Add a vertex with stalk R^dim; its offset follows the vertices already there."""
    if name in G:
        raise ValueError(f"stalk {name!r} already exists")
    if dim < 1:
        raise ValueError(f"stalk {name!r} needs dim >= 1")
    G.add_node(name, dim=int(dim), offset=total_dim(G), pins=[], anchor=anchor)


def add_param(G: nx.MultiDiGraph, name: str, shape, init: str = "he", **kw) -> None:
    """Declare a parameter (a vertex of the parameter sheaf)."""
    H = G.graph["parameter_sheaf"]
    if name in H:
        raise ValueError(f"parameter {name!r} already exists")
    H.add_node(name, spec=ParamSpec(tuple(int(n) for n in shape), init, **kw), anchor=False)


def param_specs(G: nx.MultiDiGraph) -> dict[str, ParamSpec]:
    """Every parameter's spec, in declaration order."""
    H = G.graph["parameter_sheaf"]
    return {p: d["spec"] for p, d in H.nodes(data=True) if p != ZERO}


def add_edge(G: nx.MultiDiGraph, name: str, src: str, dst: str, *, src_map, dst_map, kind: str = "maps",
             dim: int | None = None, weight: float = 1.0, bias: str | None = None) -> None:
    """Add edge ``name`` with discord F_dst c_dst − F_src c_src − bias and energy ½ w² ‖discord‖²."""
    for v in (src, dst):
        if v not in G:
            raise ValueError(f"edge {name!r}: unknown stalk {v!r}")
    H = G.graph["parameter_sheaf"]
    for p in [m.param for m in (src_map, dst_map) if isinstance(m, ParamMap)] + ([bias] if bias is not None else []):
        if p not in H or p == ZERO:
            raise ValueError(f"edge {name!r}: unknown parameter {p!r}")
    if any(k == name for _, _, k in G.edges(keys=True)):
        raise ValueError(f"edge {name!r} already exists")
    if dim is None:
        dim = _edge_dim(G, src_map, src, dst_map, dst)
    if not weight > 0:
        raise ValueError(f"edge {name!r}: weight must be positive")
    G.add_edge(src, dst, key=name, kind=kind, src_map=src_map, dst_map=dst_map, dim=int(dim),
               weight=float(weight), bias=bias, order=G.number_of_edges())


def _edge_dim(G, src_map, src, dst_map, dst) -> int:
    H = G.graph["parameter_sheaf"]
    for m, v in ((dst_map, dst), (src_map, src)):
        if isinstance(m, ParamMap):
            return H.nodes[m.param]["spec"].shape[0]
        rows = map_rows(m, G.nodes[v]["dim"])
        if rows is not None:
            return rows
    raise ValueError("cannot infer the edge dimension")


def add_pin(G: nx.MultiDiGraph, stalk: str, source: str = "value", *, indices=None, value=None) -> None:
    """Hard-pin a stalk (or coordinates ``indices`` of it) to data or to a constant ``value``."""
    if source not in PIN_SOURCES:
        raise ValueError(f"pin source must be one of {PIN_SOURCES}")
    if stalk not in G:
        raise ValueError(f"pin: unknown stalk {stalk!r}")
    dim = G.nodes[stalk]["dim"]
    idx = None if indices is None else tuple(int(i) for i in indices)
    n = dim if idx is None else len(idx)
    val = None
    if source == "value":
        val = np.broadcast_to(np.asarray(value, dtype=float), (n,)).copy()
    G.nodes[stalk]["pins"].append(PinSpec(source, idx, val))


def add_soft_pin(G: nx.MultiDiGraph, name: str, stalk: str, value, weight: float, *, indices=None) -> None:
    """A soft pin: an anchor vertex pinned to ``value`` and an edge of weight ``weight`` to it.

    Energy ½ w² ‖value − c_stalk[indices]‖².
    """
    dim = G.nodes[stalk]["dim"]
    n = dim if indices is None else len(indices)
    add_stalk(G, name, n, anchor=True)
    add_pin(G, name, "value", value=value)
    src_map = Identity() if indices is None else Select(tuple(int(i) for i in indices))
    add_edge(G, name, stalk, name, kind="soft_pin", src_map=src_map, dst_map=Identity(), dim=n, weight=weight)


def add_reluctance(G: nx.MultiDiGraph, param: str, weight: float) -> None:
    """An edge of weight √λ = ``weight`` from a parameter to the zero anchor (weight decay λ)."""
    _check_param(G, param)
    G.graph["parameter_sheaf"].add_edge(param, ZERO, key=f"reluctance_{param}", kind="reluctance", weight=float(weight))


def add_tie(G: nx.MultiDiGraph, a: str, b: str, weight: float) -> None:
    """An identity edge between two same-shaped parameters (soft sharing)."""
    _check_param(G, a)
    _check_param(G, b)
    H = G.graph["parameter_sheaf"]
    if H.nodes[a]["spec"].shape != H.nodes[b]["spec"].shape:
        raise ValueError(f"tie {a!r} ~ {b!r}: shapes {H.nodes[a]['spec'].shape} and {H.nodes[b]['spec'].shape} differ")
    G.graph["parameter_sheaf"].add_edge(a, b, key=f"tie_{a}_{b}", kind="tie", weight=float(weight))


def _check_param(G: nx.MultiDiGraph, param: str) -> None:
    H = G.graph["parameter_sheaf"]
    if param not in H or param == ZERO:
        raise ValueError(f"unknown parameter {param!r}")


# ----------------------------------------------------------------------------------------------
# layout


def stalks(G: nx.MultiDiGraph) -> list[str]:
    """Vertices in cochain order (by offset)."""
    return sorted(G.nodes, key=lambda v: G.nodes[v]["offset"])


def edges(G: nx.MultiDiGraph) -> list[tuple[str, str, str, dict]]:
    """``(src, dst, name, attrs)`` in declaration order (the ``order`` attribute set by :func:`add_edge`).

    Every layout (:func:`edge_offsets`, the rows of δ) follows this order; iterate edges through it,
    not through ``G.edges``, whose order groups edges by source vertex.
    """
    return sorted(G.edges(keys=True, data=True), key=lambda e: e[3].get("order", 0))


def total_dim(G: nx.MultiDiGraph) -> int:
    """N = Σ_v d_v, the length of a 0-cochain."""
    return sum(d["dim"] for _, d in G.nodes(data=True))


def edge_dim(G: nx.MultiDiGraph) -> int:
    """M = Σ_e d_e, the length of a 1-cochain."""
    return sum(d["dim"] for _, _, d in G.edges(data=True))


def edge_offsets(G: nx.MultiDiGraph) -> dict[str, int]:
    """Where each edge's discord starts in the 1-cochain vector (edges in :func:`edges` order)."""
    out, k = {}, 0
    for _, _, name, d in edges(G):
        out[name] = k
        k += d["dim"]
    return out


def vertex_slice(G: nx.MultiDiGraph, v: str) -> slice:
    d = G.nodes[v]
    return slice(d["offset"], d["offset"] + d["dim"])


def pinned_indices(G: nx.MultiDiGraph, sources=TRAINING) -> np.ndarray:
    """Global cochain indices pinned by pins whose source is in ``sources``, sorted."""
    idx: list[int] = []
    for v, d in G.nodes(data=True):
        for p in d["pins"]:
            if p.source in sources:
                local = range(d["dim"]) if p.indices is None else p.indices
                idx.extend(d["offset"] + i for i in local)
    return np.array(sorted(set(idx)), dtype=np.int64)


def free_indices(G: nx.MultiDiGraph, sources=TRAINING) -> np.ndarray:
    """The complement of :func:`pinned_indices`: the coordinates of c_Ω."""
    mask = np.ones(total_dim(G), dtype=bool)
    mask[pinned_indices(G, sources)] = False
    return np.flatnonzero(mask)


def pinned_stalks(G: nx.MultiDiGraph, source: str) -> list[str]:
    """Stalks with a whole-stalk pin from ``source`` ("input" or "target"), in declaration order."""
    return [v for v in stalks(G) if any(p.source == source for p in G.nodes[v]["pins"])]


def constant_pins(G: nx.MultiDiGraph) -> tuple[np.ndarray, np.ndarray]:
    """(global indices, values) of every pin to a constant (including soft-pin anchors)."""
    idx, val = [], []
    for v, d in G.nodes(data=True):
        for p in d["pins"]:
            if p.source == "value":
                local = range(d["dim"]) if p.indices is None else p.indices
                idx.extend(d["offset"] + i for i in local)
                val.extend(p.value.tolist())
    return np.array(idx, dtype=np.int64), np.array(val, dtype=float)


def is_state_dependent(G: nx.MultiDiGraph) -> bool:
    """True when some restriction map depends on the state (relu gates, nonlinear outputs)."""
    return any(isinstance(d["src_map"], (ReluGate, Nonlinear)) or isinstance(d["dst_map"], (ReluGate, Nonlinear))
               for _, _, d in G.edges(data=True))


# ----------------------------------------------------------------------------------------------
# from a checked model


def from_model(model) -> nx.MultiDiGraph:
    """Build the IR of a checked :class:`sheafdsl.frontend.model.Model`."""
    G = new_sheaf(model.name)
    G.graph.update(train=dict(model.train), source=model.source, path=model.path, network=model.network)
    for p in model.params.values():
        add_param(G, p.name, p.shape, p.init, std=p.std, value=p.value, file=p.file, key=p.key, base_dir=p.base_dir)
    for s in model.stalks.values():
        add_stalk(G, s.name, s.dim)
    for e in model.edges.values():
        src_map, dst_map, bias = Identity(), Identity(), None
        if e.kind in ("affine", "linear"):
            src_map, bias = ParamMap(e.W), e.b
        elif e.kind == "maps":
            src_map, dst_map = _map(e.src_map), _map(e.dst_map)
        else:  # an entry of the nonlinearity registry; an unknown one raises in Nonlinear (E511)
            src_map = nonlinear_map(e.kind, getattr(e, "arg", None))
        add_edge(G, e.name, e.src, e.dst, kind=e.kind, src_map=src_map, dst_map=dst_map, dim=e.dim,
                 weight=e.weight, bias=bias)
    for p in model.pins:
        add_pin(G, p.stalk, p.source, indices=p.indices, value=p.value)
    for sp in model.soft_pins:
        name = sp.name
        while name in G:
            name += "_"
        add_soft_pin(G, name, sp.stalk, sp.value, sp.weight, indices=sp.indices)
    for r in model.reluctances:
        add_reluctance(G, r.param, r.weight)
    for t in model.ties:
        add_tie(G, t.a, t.b, t.weight)
    return G


def _map(ref):
    if ref.param is not None:
        return ParamMap(ref.param)
    if ref.scale is not None:
        return Identity() if ref.scale == 1.0 else Scaled(ref.scale)
    return Constant(np.array(ref.matrix, dtype=float))
