"""The IR: a cellular sheaf as a ``networkx.MultiDiGraph``, plus its parameter sheaf.

State sheaf ``G`` (``G.graph["kind"] == "state"``):

- vertex ``v``: ``dim`` (d_v), ``offset`` (where c_v starts in the cochain vector, set in insertion
  order), ``pins`` (a list of :class:`PinSpec`), ``anchor`` (True for a soft pin's constant vertex),
  ``objectives`` (a list of :class:`ObjectiveSpec`: the terms of the local convex objective f_v; read
  it with :func:`objectives`, which also answers for graphs built before objectives existed);
- edge ``(u, v, key=name)``: ``kind``, ``src_map`` F_{u◁e}, ``dst_map`` F_{v◁e} (see :mod:`.maps`),
  ``dim`` (d_e), ``weight`` (w_e), ``bias`` (a parameter name or None), ``hard`` (True: the edge is the
  constraint (δc)_e = 0, not the penalty ½ w_e² ‖(δc)_e‖²; its weight is unused): the discord is
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

import functools
import math
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from ..errors import NOSPAN, Diagnostic, SheafError, Span, did_you_mean
from ..options import INIT_KINDS, MAX_DIM, MAX_PARAM_SIZE, OBJECTIVE_KINDS
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
    #: where it was declared (the model file and the span), for the errors of loading it from a file
    model_file: str = field(default="<input>", compare=False)
    span: Span = field(default=NOSPAN, compare=False)


@dataclass(frozen=True, eq=False)
class ObjectiveSpec:
    """One term of a stalk's local convex objective f_v (the terms of one stalk add up).

    ``kind`` is an entry of ``options.OBJECTIVE_KINDS``; for x = c_v ∈ R^d:

    - ``quadratic``: ½ xᵀQx + qᵀx, with ``Q`` (d, d) symmetric PSD and ``q`` (d,), each a float array
      (a literal) or a parameter name (str, resolved from the parameter values at lowering);
    - ``nonneg``: the indicator of x ≥ 0;
    - ``box``: the indicator of lo ≤ x ≤ hi, ``lo``/``hi`` float arrays (d,) (±inf allowed);
    - ``simplex``: the indicator of x ≥ 0, Σ x = 1;
    - ``l1``: ``lam`` ‖x‖₁, lam ≥ 0.
    """

    kind: str
    Q: np.ndarray | str | None = None
    q: np.ndarray | str | None = None
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    lam: float | None = None
    span: Span = field(default=NOSPAN, compare=False)


class InvalidSheaf(SheafError, ValueError):
    """A builder call that would make an invalid sheaf: a :class:`SheafError` with the checker's code
    (and a ValueError, for callers that catch that)."""


PYTHON = "<python>"


def _err(code: str, message: str, hint: str | None = None) -> InvalidSheaf:
    return InvalidSheaf(Diagnostic(code, message, hint=hint, file=PYTHON))


def _builder(fn):
    """A builder's first argument must be a sheaf IR (``new_sheaf``): else E526, not a raw TypeError."""

    @functools.wraps(fn)
    def wrapper(G, *args, **kwargs):
        if not isinstance(G, nx.MultiDiGraph) or "parameter_sheaf" not in G.graph:
            raise _err("E526", f"{fn.__name__} needs a sheaf IR (sheafdsl.ir.new_sheaf(...)) as its first argument, "
                               f"not {type(G).__name__}")
        return fn(G, *args, **kwargs)

    return wrapper


def _name(what: str, name) -> str:
    if not isinstance(name, str) or not name:
        raise _err("E201", f"a {what} name must be a non-empty string, not {name!r}")
    return name


def _whole(what: str, n, low: int = 1, code: str = "E210") -> int:
    """A whole number >= low (a bool, a float or a string is refused, however integral)."""
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < low:
        raise _err(code, f"{what} needs a whole-number dimension >= {low}, not {n!r}")
    if n > MAX_DIM:
        raise _err("E211", f"{what} has dimension {n:,}, above the limit {MAX_DIM:,}")
    return int(n)


def _weight(what: str, w) -> float:
    try:
        w = float(w)
    except (TypeError, ValueError):
        raise _err("E250", f"{what}: weight must be a positive finite number, not {w!r}") from None
    if not (w > 0 and math.isfinite(w)):
        raise _err("E250", f"{what}: weight must be a positive finite number, not {w!r}")
    return w


def _values(what: str, value, n: int) -> np.ndarray:
    """n finite floats (a number broadcasts): E240 for the wrong length, E232 for NaN/inf."""
    try:
        a = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise _err("E240", f"{what}: the value must be a number or a list of {n} numbers") from None
    if a.ndim > 1 or (a.ndim == 1 and a.shape[0] != n):
        raise _err("E240", f"{what} takes {n} value(s), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise _err("E232", f"{what}: the value holds NaN or infinite entries")
    return np.broadcast_to(a, (n,)).copy()


def _indices(what: str, indices, dim: int) -> tuple[int, ...] | None:
    if indices is None:
        return None
    try:
        idx = tuple(indices)
    except TypeError:
        raise _err("E241", f"{what}: indices must be a list of whole numbers, not {indices!r}") from None
    if not idx or any(isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)) for i in idx):
        raise _err("E241", f"{what}: indices must be a non-empty list of whole numbers, not {indices!r}")
    bad = [int(i) for i in idx if not 0 <= i < dim]
    if bad:
        raise _err("E241", f"{what}: index {bad[0]} is out of range 0..{dim - 1}")
    if len(set(idx)) != len(idx):
        raise _err("E242", f"{what}: an index is listed twice")
    return tuple(int(i) for i in idx)


def new_sheaf(name: str = "sheaf") -> nx.MultiDiGraph:
    """An empty state sheaf with an empty parameter sheaf attached."""
    G = nx.MultiDiGraph(name=_name("sheaf", name), kind="state", network=None, train={}, source="", path=PYTHON)
    H = nx.MultiGraph(kind="parameters")
    H.add_node(ZERO, anchor=True, shape=None)
    G.graph["parameter_sheaf"] = H
    return G


@_builder
def add_stalk(G: nx.MultiDiGraph, name: str, dim: int, *, anchor: bool = False) -> None:
    """Add a vertex with stalk R^dim; its offset follows the vertices already there.

    The checker's codes: E201 a name taken, E210 a dimension that is not a whole number >= 1, E211 too large.
    """
    _name("stalk", name)
    if name in G or name in _edge_names(G):
        raise _err("E201", f"`{name}` already exists")
    dim = _whole(f"stalk `{name}`", dim)
    G.add_node(name, dim=dim, offset=_next_offset(G), pins=[], anchor=anchor, objectives=[])


def _next_offset(G: nx.MultiDiGraph) -> int:
    """Where a new vertex's coordinates start: after the last vertex added (O(1); vertices are laid out in
    the order they are added, so this equals total_dim(G), which is a sum over every vertex)."""
    last = next(reversed(G._node), None)
    if last is None:
        return 0
    d = G._node[last]
    return int(d["offset"]) + int(d["dim"]) if "offset" in d and "dim" in d else total_dim(G)


def _edge_names(G: nx.MultiDiGraph) -> set:
    """The edge names of G, kept beside it so that adding an edge or a stalk is O(1): no scan of every
    edge (and no ``number_of_edges``, which networkx computes by summing degrees). The set belongs to
    this graph object; a copy (which shares or copies ``G.graph``) rebuilds its own on first use."""
    owner, names = G.graph.get("_edge_names", (None, None))
    if owner != id(G._adj) or names is None:
        names = {k for _, _, k in G.edges(keys=True)}
        G.graph["_edge_names"] = (id(G._adj), names)
    return names


@_builder
def add_param(G: nx.MultiDiGraph, name: str, shape, init: str = "he", **kw) -> None:
    """Declare a parameter (a vertex of the parameter sheaf): a matrix (rows, cols) or a vector (n,).

    E201 a name taken, E210/E211 a bad shape, E233 an unknown initialiser, E234 he/xavier on a vector.
    """
    H = G.graph["parameter_sheaf"]
    _name("parameter", name)
    if name in H or name in G:
        raise _err("E201", f"`{name}` already exists")
    try:
        dims = tuple(shape)
    except TypeError:
        dims = (shape,)
    if len(dims) not in (1, 2):
        raise _err("E222", f"parameter `{name}` must be a matrix (rows, cols) or a vector (n,), not shape {shape!r}")
    dims = tuple(_whole(f"parameter `{name}`", d) for d in dims)
    if math.prod(dims) > MAX_PARAM_SIZE:
        raise _err("E211", f"parameter `{name}` has {math.prod(dims):,} entries; the limit is {MAX_PARAM_SIZE:,}")
    if init not in INIT_KINDS:
        raise _err("E233", f"unknown initialiser `{init}` for parameter `{name}`", "initialisers: " + ", ".join(INIT_KINDS))
    if init in ("he", "xavier") and len(dims) != 2:
        raise _err("E234", f"`{init}` needs a matrix parameter; `{name}` is a vector", "use zeros, ones or normal")
    H.add_node(name, spec=ParamSpec(dims, init, **kw), anchor=False)


def param_specs(G: nx.MultiDiGraph) -> dict[str, ParamSpec]:
    """Every parameter's spec, in declaration order."""
    H = G.graph["parameter_sheaf"]
    return {p: d["spec"] for p, d in H.nodes(data=True) if p != ZERO}


def _map_shape(G, m, v: str, side: str, edge: str, block=None) -> tuple[int | None, int]:
    """(rows or None when they follow the edge, columns) of map ``m`` on stalk ``v`` (or on its coordinates
    ``block`` = (a, b), a ≤ i < b); checks its columns."""
    dim = G.nodes[v]["dim"]
    if block is not None:
        a, b = block
        if not (isinstance(a, int) and isinstance(b, int) and 0 <= a < b <= dim):
            raise _err("E286", f"edge `{edge}`: block {block} of the {side} stalk `{v}` (dimension {dim}) is empty or "
                       "out of range")
        if not isinstance(m, ParamMap):
            raise _err("E286", f"edge `{edge}`: only a parameter map sits on a block (a constant one is embedded "
                       "in the whole stalk's matrix)")
        dim = b - a
    if isinstance(m, ParamMap):
        spec = G.graph["parameter_sheaf"].nodes[m.param]["spec"]
        if len(spec.shape) != 2:
            raise _err("E222", f"edge `{edge}`: the {side} map `{m.param}` must be a matrix parameter, not a vector")
        if spec.shape[1] != dim:
            raise _err("E220", f"edge `{edge}`: `{m.param}` is {spec.shape[0]} x {spec.shape[1]} but stalk `{v}` has "
                       f"dimension {dim}", f"it needs {dim} columns")
        return spec.shape[0], dim
    if isinstance(m, Constant):
        if m.matrix.ndim != 2:
            raise _err("E224", f"edge `{edge}`: the {side} map is not a matrix (shape {m.matrix.shape})")
        if m.matrix.shape[1] != dim:
            raise _err("E225", f"edge `{edge}`: the {side} map has {m.matrix.shape[1]} columns but stalk `{v}` has "
                       f"dimension {dim}")
        if not np.all(np.isfinite(m.matrix)):
            raise _err("E232", f"edge `{edge}`: the {side} map holds NaN or infinite entries")
        return m.matrix.shape[0], dim
    if isinstance(m, Scaled) and not math.isfinite(m.scale):
        raise _err("E232", f"edge `{edge}`: the {side} map's scale is not finite")
    if isinstance(m, Select):
        return len(_indices(f"edge `{edge}`: the {side} map", m.indices, dim)), dim
    if not isinstance(m, (Identity, Scaled, ReluGate, Nonlinear)):
        raise _err("E224", f"edge `{edge}`: the {side} map is not a restriction map ({type(m).__name__})",
                   "use Identity, Scaled, Constant, ParamMap, Select, ReluGate or Nonlinear (sheafdsl.ir.maps)")
    return map_rows(m, dim), dim


@_builder
def add_edge(G: nx.MultiDiGraph, name: str, src: str, dst: str, *, src_map, dst_map, kind: str = "maps",
             dim: int | None = None, weight: float = 1.0, bias: str | None = None, hard: bool = False,
             src_block: tuple[int, int] | None = None, dst_block: tuple[int, int] | None = None) -> None:
    """Add edge ``name`` with discord F_dst c_dst − F_src c_src − bias and energy ½ w² ‖discord‖²
    (``hard=True``: the constraint discord = 0 instead, and ``weight`` is unused).

    Validated as the checker validates an ``edge`` statement: E202 an unknown stalk, E203 an unknown
    parameter, E201 a name taken, E220/E222/E224/E225 maps that do not fit their stalks or each other,
    E221 a bias of the wrong length, E250 a weight that is not positive and finite, E290 a loop that
    is not a ``maps`` edge. ``src_block``/``dst_block`` = (a, b): a parameter map that acts on coordinates
    a..b−1 of its stalk only (E286 otherwise), the learned models' shared cell blocks (docs/admm.md).
    """
    _name("edge", name)
    for v in (src, dst):
        if not isinstance(v, str) or v not in G:
            raise _err("E202", f"edge `{name}`: unknown stalk `{v}`",
                       did_you_mean(str(v), [u for u in G if not G.nodes[u].get("anchor")]))
    H = G.graph["parameter_sheaf"]
    for p in [m.param for m in (src_map, dst_map) if isinstance(m, ParamMap)] + ([bias] if bias is not None else []):
        if p not in H or p == ZERO:
            raise _err("E203", f"edge `{name}`: unknown parameter `{p}`", did_you_mean(str(p), param_specs(G)))
    # one namespace, as in the checker; a soft pin's edge is named after its own anchor vertex
    own_anchor = kind == "soft_pin" and dst == name
    names = _edge_names(G)
    if name in names or (not own_anchor and (name in G or name in H)):
        raise _err("E201", f"`{name}` already exists")
    if src == dst and kind not in ("maps", "soft_pin"):
        raise _err("E290", f"edge `{name}` goes from `{src}` to itself", "only a `maps` edge may be a loop")
    w = _weight(f"edge `{name}`", weight)
    rows_src, _ = _map_shape(G, src_map, src, "source", name, src_block)
    rows_dst, _ = _map_shape(G, dst_map, dst, "target", name, dst_block)
    rows = {r for r in (rows_src, rows_dst) if r is not None}
    if dim is not None:
        dim = _whole(f"edge `{name}`", dim)
        rows.add(dim)
    if len(rows) > 1:
        raise _err("E225", f"edge `{name}`: the maps give {rows_src} and {rows_dst} rows" +
                   ("" if dim is None else f" for an edge of dimension {dim}"), "both sides map into one edge stalk")
    if not rows:
        raise _err("E225", f"edge `{name}`: cannot tell the edge dimension from the maps; give dim=")
    d_e = rows.pop()
    if bias is not None:
        spec = H.nodes[bias]["spec"]
        if spec.shape != (d_e,):
            raise _err("E221", f"edge `{name}`: bias `{bias}` has shape {spec.shape}; the edge has dimension {d_e}")
    G.add_edge(src, dst, key=name, kind=kind, src_map=src_map, dst_map=dst_map, dim=d_e,
               weight=w, bias=bias, order=len(names), hard=bool(hard))
    if src_block is not None or dst_block is not None:
        G.edges[src, dst, name].update(src_block=src_block, dst_block=dst_block)
    names.add(name)


@_builder
def add_pin(G: nx.MultiDiGraph, stalk: str, source: str = "value", *, indices=None, value=None) -> None:
    """Hard-pin a stalk (or coordinates ``indices`` of it) to data or to a constant ``value``.

    E202 an unknown stalk, E241/E242 bad indices, E243 indices on an input/target pin, E240/E232 a bad
    value, E242 a coordinate that another pin already holds.
    """
    if source not in PIN_SOURCES:
        raise _err("E243", f"pin source must be one of {', '.join(PIN_SOURCES)}, not {source!r}")
    if not isinstance(stalk, str) or stalk not in G:
        raise _err("E202", f"pin: unknown stalk `{stalk}`", did_you_mean(str(stalk), list(G)))
    dim = G.nodes[stalk]["dim"]
    idx = _indices(f"pin `{stalk}`", indices, dim)
    if idx is not None and source != "value":
        raise _err("E243", f"an {source} pin takes the whole stalk `{stalk}`, not indices")
    n = dim if idx is None else len(idx)
    val = _values(f"pin `{stalk}`", value, n) if source == "value" else None
    taken = set()
    for p in G.nodes[stalk]["pins"]:
        taken |= set(range(dim)) if p.indices is None else set(p.indices)
    clash = sorted(taken & (set(range(dim)) if idx is None else set(idx)))
    if clash:
        raise _err("E242", f"coordinate {clash[0]} of `{stalk}` is pinned twice")
    G.nodes[stalk]["pins"].append(PinSpec(source, idx, val))


@_builder
def add_soft_pin(G: nx.MultiDiGraph, name: str, stalk: str, value, weight: float, *, indices=None) -> None:
    """A soft pin: an anchor vertex pinned to ``value`` and an edge of weight ``weight`` to it.

    Energy ½ w² ‖value − c_stalk[indices]‖².
    """
    if not isinstance(stalk, str) or stalk not in G:
        raise _err("E202", f"soft pin: unknown stalk `{stalk}`", did_you_mean(str(stalk), list(G)))
    dim = G.nodes[stalk]["dim"]
    idx = _indices(f"soft pin `{name}`", indices, dim)
    n = dim if idx is None else len(idx)
    val = _values(f"soft pin `{name}`", value, n)
    _weight(f"soft pin `{name}`", weight)
    add_stalk(G, name, n, anchor=True)
    add_pin(G, name, "value", value=val)
    src_map = Identity() if idx is None else Select(idx)
    add_edge(G, name, stalk, name, kind="soft_pin", src_map=src_map, dst_map=Identity(), dim=n, weight=weight)


@_builder
def add_objective(G: nx.MultiDiGraph, stalk: str, kind: str, *, Q=None, q=None, lo=None, hi=None, lam=None,
                  span: Span = NOSPAN) -> ObjectiveSpec:
    """Add a term of kind ``kind`` (see :class:`ObjectiveSpec`) to the local objective of ``stalk``.

    E202 an unknown stalk, E291 an unknown kind, E203 an unknown parameter, E292 data of the wrong shape
    (or data the kind does not take), E232 NaN in the data, E293 a literal Q that is not symmetric,
    E294 a literal Q that is not PSD (with a witness v: vᵀQv < 0), E295 lo > hi, E296 a negative l1
    weight. Literal numbers broadcast over the stalk (``lo=0``). (``sheaf verify`` proves Q ⪰ 0 exactly.)

    >>> G = new_sheaf("fusion"); add_stalk(G, "x", 2)
    >>> add_objective(G, "x", "quadratic", Q=[[2.0, 0.0], [0.0, 1.0]], q=[1.0, -1.0]).kind
    'quadratic'
    >>> [o.kind for o in objectives(G, "x")]
    ['quadratic']
    """
    if not isinstance(stalk, str) or stalk not in G or G.nodes[stalk].get("anchor"):
        raise _err("E202", f"objective: unknown stalk `{stalk}`", did_you_mean(str(stalk), list(G)))
    if kind not in OBJECTIVE_KINDS:
        raise _err("E291", f"unknown objective kind {kind!r}", f"one of: {', '.join(OBJECTIVE_KINDS)}")
    d = G.nodes[stalk]["dim"]
    what = f"objective `{stalk}` {kind}"
    takes = {"quadratic": ("Q", "q"), "box": ("lo", "hi"), "l1": ("lam",)}.get(kind, ())
    given = {k: v for k, v in dict(Q=Q, q=q, lo=lo, hi=hi, lam=lam).items() if v is not None}
    extra = sorted(set(given) - set(takes))
    if extra:
        raise _err("E292", f"{what} takes no {extra[0]}")
    H = G.graph["parameter_sheaf"]

    def array(name, value, shape):
        if isinstance(value, str):
            if value not in H or value == ZERO:
                raise _err("E203", f"{what}: unknown parameter `{value}`", did_you_mean(value, param_specs(G)))
            pshape = H.nodes[value]["spec"].shape
            if pshape != shape:
                raise _err("E292", f"{what}: {name} `{value}` has shape {pshape}, the stalk needs {shape}")
            return value
        try:
            a = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            raise _err("E292", f"{what}: {name} must be numbers of shape {shape}") from None
        if a.ndim == 0 and len(shape) == 1:
            a = np.full(shape, float(a))
        if a.shape != shape:
            raise _err("E292", f"{what}: {name} has shape {a.shape}, the stalk needs {shape}")
        return a

    spec = {}
    if kind == "quadratic":
        if Q is None:
            raise _err("E292", f"{what} needs Q")
        spec["Q"] = array("Q", Q, (d, d))
        spec["q"] = array("q", 0.0 if q is None else q, (d,))
        for name in ("Q", "q"):
            if not isinstance(spec[name], str) and not np.all(np.isfinite(spec[name])):
                raise _err("E232", f"{what}: {name} holds NaN or infinite entries")
        if not isinstance(spec["Q"], str) and not np.allclose(spec["Q"], spec["Q"].T, rtol=0, atol=1e-12):
            i, j = np.unravel_index(np.argmax(np.abs(spec["Q"] - spec["Q"].T)), (d, d))
            raise _err("E293", f"{what}: Q is not symmetric: Q[{i},{j}] = {spec['Q'][i, j]:g} but "
                       f"Q[{j},{i}] = {spec['Q'][j, i]:g}", "a quadratic form only sees (Q + Qᵀ)/2: write that")
        if not isinstance(spec["Q"], str):
            lam_q, vec_q = np.linalg.eigh(spec["Q"])
            if lam_q[0] < -1e-12 * max(1.0, float(np.abs(lam_q).max())):
                v = vec_q[:, 0] / np.abs(vec_q[:, 0]).max()
                raise _err("E294", f"{what}: Q is not positive semidefinite: v = {np.round(v, 6).tolist()} has "
                           f"vᵀQv = {float(v @ spec['Q'] @ v):.6g} < 0 (smallest eigenvalue {lam_q[0]:.6g})",
                           "the objective must be convex: Q ⪰ 0")
    elif kind == "box":
        if lo is None or hi is None:
            raise _err("E292", f"{what} needs lo and hi")
        spec["lo"], spec["hi"] = array("lo", lo, (d,)), array("hi", hi, (d,))
        if isinstance(spec["lo"], str) or isinstance(spec["hi"], str):
            raise _err("E292", f"{what}: lo and hi must be numbers, not parameters")
        if np.any(np.isnan(spec["lo"])) or np.any(np.isnan(spec["hi"])):
            raise _err("E232", f"{what}: lo or hi holds NaN")
        bad = np.flatnonzero(spec["lo"] > spec["hi"])
        if bad.size:
            i = int(bad[0])
            raise _err("E295", f"{what}: lo[{i}] = {spec['lo'][i]:g} > hi[{i}] = {spec['hi'][i]:g}",
                       "the box is empty, so the problem is infeasible")
    elif kind == "l1":
        try:
            lam_f = float(lam)
        except (TypeError, ValueError):
            raise _err("E296", f"{what} needs a weight LAMBDA >= 0, not {lam!r}") from None
        if not (lam_f >= 0 and math.isfinite(lam_f)):
            raise _err("E296", f"{what}: the weight must be finite and >= 0, not {lam!r}")
        spec["lam"] = lam_f
    obj = ObjectiveSpec(kind, span=span, **spec)
    G.nodes[stalk].setdefault("objectives", []).append(obj)
    return obj


def objectives(G: nx.MultiDiGraph, stalk: str) -> list[ObjectiveSpec]:
    """The terms of the local objective f_v of ``stalk`` (empty: f_v = 0)."""
    return G.nodes[stalk].get("objectives", [])


def declared_at(G: nx.MultiDiGraph, *, stalk: str | None = None, edge: str | None = None, kinds=None) -> Span:
    """Where an edge or a stalk was written (NOSPAN for a graph built in Python); a stalk with ``kinds``:
    its first objective of one of those kinds, else its declaration."""
    if edge is not None:
        for _, _, k, d in G.edges(keys=True, data=True):
            if k == edge:
                return d.get("span", NOSPAN)
    if stalk is not None and stalk in G:
        for o in (G.nodes[stalk].get("objectives") or []) if kinds else []:
            if o.kind in kinds and o.span.known:
                return o.span
        return G.nodes[stalk].get("span", NOSPAN)
    return NOSPAN


def model_error(G: nx.MultiDiGraph, code: str, message: str, span: Span = NOSPAN, hint: str | None = None) -> SheafError:
    """A SheafError about the model ``G`` was built from, at ``span``: rendered ``file:line:col`` with the source
    line and a caret when G came from a file (else as the layers below report it, ``<input>``)."""
    path = G.graph.get("path")
    file = path if span.known and path and path != PYTHON else "<input>"
    return SheafError(Diagnostic(code, message, span, "error", hint, file), G.graph.get("source") or None)


def consensus_span(G: nx.MultiDiGraph) -> Span:
    """Where a consensus problem shows itself: its first objective, else its first hard edge (NOSPAN: neither
    was written in a file)."""
    for v in stalks(G):
        for o in G.nodes[v].get("objectives") or []:
            if o.span.known:
                return o.span
    for *_, d in edges(G):
        if d.get("hard") and d.get("span", NOSPAN).known:
            return d["span"]
    return NOSPAN


def is_consensus(G: nx.MultiDiGraph) -> bool:
    """True when the sheaf states a consensus problem: some stalk has an objective or some edge is hard."""
    return any(d.get("objectives") for _, d in G.nodes(data=True)) or \
        any(d.get("hard") for _, _, d in G.edges(data=True))


@_builder
def add_reluctance(G: nx.MultiDiGraph, param: str, weight: float) -> None:
    """An edge of weight √λ = ``weight`` from a parameter to the zero anchor (weight decay λ).

    E203 an unknown parameter, E260 a second reluctance on it, E250 a bad weight.
    """
    _check_param(G, param)
    H = G.graph["parameter_sheaf"]
    if H.has_edge(param, ZERO, key=f"reluctance_{param}"):
        raise _err("E260", f"`{param}` already has a reluctance")
    H.add_edge(param, ZERO, key=f"reluctance_{param}", kind="reluctance", weight=_weight(f"reluctance `{param}`", weight))


@_builder
def add_tie(G: nx.MultiDiGraph, a: str, b: str, weight: float) -> None:
    """An identity edge between two same-shaped parameters (soft sharing).

    E203 an unknown parameter, E262 a parameter tied to itself, E261 different shapes, E250 a bad weight.
    """
    _check_param(G, a)
    _check_param(G, b)
    if a == b:
        raise _err("E262", f"`{a}` is tied to itself")
    H = G.graph["parameter_sheaf"]
    if H.nodes[a]["spec"].shape != H.nodes[b]["spec"].shape:
        raise _err("E261", f"cannot tie `{a}` {H.nodes[a]['spec'].shape} to `{b}` {H.nodes[b]['spec'].shape}: the "
                   "shapes differ", "a tie is an identity map, so both parameters need the same shape")
    w = _weight(f"tie `{a}` ~ `{b}`", weight)
    if H.has_edge(a, b, f"tie_{a}_{b}") or H.has_edge(b, a, f"tie_{b}_{a}"):
        raise _err("E263", f"`{a}` and `{b}` are already tied", "one tie per pair")
    H.add_edge(a, b, key=f"tie_{a}_{b}", kind="tie", weight=w)


def _check_param(G: nx.MultiDiGraph, param: str) -> None:
    H = G.graph["parameter_sheaf"]
    if not isinstance(param, str) or param not in H or param == ZERO:
        raise _err("E203", f"unknown parameter `{param}`", did_you_mean(str(param), param_specs(G)))


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


def is_parameterised(d) -> bool:
    """An edge (its data ``d``) with a parameter: a parameter map on either side, or a bias."""
    return isinstance(d["src_map"], ParamMap) or isinstance(d["dst_map"], ParamMap) or d.get("bias") is not None


def layers(G: nx.MultiDiGraph) -> tuple[dict[str, int | None], dict[str, int | None]]:
    """(edge layers, stalk layers): the layer of an edge is the number of parameterised edges on the longest
    path from a source stalk up to and including it (at least 1), and a stalk's is that count on the longest
    path into it (0 for a source). So in an MLP layer ℓ holds ``affℓ``, ``actℓ``, ``zℓ`` and ``aℓ``, the output
    edge and stalk join the last layer, and the input is layer 0. A soft-pin edge takes the layer of the stalk
    it pulls on (its anchor is layer 0). A graph with cycles has no layers (every value None).

    >>> G = new_sheaf("chain")
    >>> for v, d in (("x", 2), ("z", 3), ("a", 3)):
    ...     add_stalk(G, v, d)
    >>> add_param(G, "W", (3, 2))
    >>> add_edge(G, "aff", "x", "z", src_map=ParamMap("W"), dst_map=Identity())
    >>> add_edge(G, "act", "z", "a", src_map=ReluGate(), dst_map=Identity())
    >>> layers(G)
    ({'aff': 1, 'act': 1}, {'x': 0, 'z': 1, 'a': 1})
    """
    core = nx.MultiDiGraph()
    core.add_nodes_from(G.nodes)
    for u, v, name, d in edges(G):
        if d.get("kind") != "soft_pin":
            core.add_edge(u, v, key=name, **d)
    if not nx.is_directed_acyclic_graph(core):
        return {name: None for _, _, name, _ in edges(G)}, {v: None for v in stalks(G)}
    depth = {v: 0 for v in core.nodes}  # parameterised edges on the longest path into v
    out: dict[str, int | None] = {}
    for v in nx.topological_sort(core):
        for u, _, name, d in core.in_edges(v, keys=True, data=True):
            layer = depth[u] + (1 if is_parameterised(d) else 0)
            out[name] = max(layer, 1)
            depth[v] = max(depth[v], layer)
    for u, _, name, d in edges(G):
        if name not in out:  # soft pins
            out[name] = max(depth.get(u, 0), 1)
    return out, {v: depth[v] for v in stalks(G)}


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


#: the grid size the commands that need one graph (compile, verify, check's IR build) instantiate a grid at
DEFAULT_GRID = (2, 2)


def grid_agent(grid: str, i: int, j: int) -> str:
    """The IR name of agent (i, j) of a grid: ``g[0,1]``; its observation stalk is ``g[0,1].obs``."""
    return f"{grid}[{i},{j}]"


def from_model(model, grid_sizes: dict | None = None) -> nx.MultiDiGraph:
    """Build the IR of a checked :class:`sheafdsl.frontend.model.Model`.

    A learned model (``model.is_learned``) also gets ``G.graph["learned"]`` (:class:`LearnedSpec`); each of
    its grids is instantiated at ``grid_sizes[name]`` = (R, C) (default :data:`DEFAULT_GRID`): agents
    ``g[i,j]``, observation stalks ``g[i,j].obs`` pinned to the input, one edge ``e[i,j]`` per neighbour pair.
    """
    G = new_sheaf(model.name)
    G.graph.update(train=dict(model.train), source=model.source, path=model.path, network=model.network)
    grids = getattr(model, "grids", {}) or {}
    sizes = {g: tuple(int(x) for x in (grid_sizes or {}).get(g, DEFAULT_GRID)) for g in grids}
    for g, (R, C) in sizes.items():
        if R < 1 or C < 1:
            raise _err("E288", f"grid `{g}` needs at least one agent, not a {R} x {C} grid")
    for p in model.params.values():
        add_param(G, p.name, p.shape, p.init, std=p.std, value=p.value, file=p.file, key=p.key, base_dir=p.base_dir,
                  model_file=model.path, span=p.span)
    for s in model.stalks.values():
        add_stalk(G, s.name, s.dim)
        G.nodes[s.name]["span"] = s.span
    learned_obj = []
    for g, (R, C) in sizes.items():
        spec = grids[g]
        for i in range(R):
            for j in range(C):
                a = grid_agent(g, i, j)
                add_stalk(G, a, spec.dim)
                add_stalk(G, a + ".obs", spec.obs_dim)
                learned_obj.append((a, spec.encoder, a + ".obs"))
    for e in model.edges.values():
        src_map, dst_map, bias = Identity(), Identity(), None
        if e.kind in ("affine", "linear"):
            src_map, bias = ParamMap(e.W), e.b
        elif e.kind == "maps":
            src_map, dst_map = _map(e.src_map), _map(e.dst_map)
        else:  # an entry of the nonlinearity registry; an unknown one raises in Nonlinear (E511)
            src_map = nonlinear_map(e.kind, getattr(e, "arg", None))
        direction = getattr(e, "direction", None)
        if direction is None:
            pairs = [(e.name, e.src, e.dst)]
        else:
            R, C = sizes[e.src]
            di, dj = (0, 1) if direction == "right" else (1, 0)
            pairs = [(f"{e.name}[{i},{j}]", grid_agent(e.src, i, j), grid_agent(e.src, i + di, j + dj))
                     for i in range(R - di) for j in range(C - dj)]
        for name, u, v in pairs:
            sm, sb = _on_block(G, src_map, u, getattr(e, "src_block", None))
            dm, db = _on_block(G, dst_map, v, getattr(e, "dst_block", None))
            add_edge(G, name, u, v, kind=e.kind, src_map=sm, dst_map=dm, dim=e.dim,
                     weight=e.weight, bias=bias, hard=getattr(e, "hard", False), src_block=sb, dst_block=db)
            G.edges[u, v, name]["span"] = e.span
    for p in model.pins:
        add_pin(G, p.stalk, p.source, indices=p.indices, value=p.value)
    for sp in model.soft_pins:
        name = sp.name
        while name in G:
            name += "_"
        add_soft_pin(G, name, sp.stalk, sp.value, sp.weight, indices=sp.indices)
    for g in sizes:
        for a, _, obs in learned_obj:
            if a.startswith(g + "["):
                add_pin(G, obs, "input")
    for o in getattr(model, "objectives", ()):
        if o.kind == "encoded":
            learned_obj.append((o.stalk, o.encoder, o.obs))
        else:
            _add_model_objective(G, o, model.path)
    for r in model.reluctances:
        add_reluctance(G, r.param, r.weight)
    for t in model.ties:
        add_tie(G, t.a, t.b, t.weight)
    if getattr(model, "is_learned", False):
        decoders = []
        for d in model.decoders:
            srcs = []
            for name, block in d.sources:
                if name in sizes:
                    R, C = sizes[name]
                    srcs += [(grid_agent(name, i, j), block) for i in range(R) for j in range(C)]
                else:
                    srcs.append((name, block))
            decoders.append(DecoderSpec(d.target, tuple(srcs), d.W, d.b, d.kind, d.pool))
        G.graph["learned"] = LearnedSpec(dict(model.encoders), tuple(learned_obj), tuple(decoders), dict(sizes),
                                         {g: grids[g] for g in grids}, model)
    return G


@dataclass(frozen=True)
class DecoderSpec:
    """A decoder of the IR: ŷ = φ_kind(W · pool over ``sources`` (stalk, block or None) + b) into ``target``, ``pool``
    "mean" (Σ_s x_s / |sources|) or "sum" (Σ_s x_s)."""

    target: str
    sources: tuple
    W: str
    b: str | None
    kind: str
    pool: str = "mean"

    @property
    def scale(self) -> float:
        """The factor of Σ_s x_s in the pooled reading: 1/|sources| for ``mean``, 1 for ``sum``."""
        return 1.0 / len(self.sources) if self.pool == "mean" else 1.0


@dataclass(frozen=True, eq=False)
class LearnedSpec:
    """What a learned model adds to its IR (``G.graph["learned"]``): the encoders (name → ``frontend.model.Encoder``:
    widths, activations, parameter names), the encoded objectives (agent, encoder, observation stalk), the
    decoders (:class:`DecoderSpec`), the grids' sizes here and their declarations, and the checked model (to
    instantiate another size: :func:`instantiate`)."""

    encoders: dict
    objectives: tuple
    decoders: tuple
    sizes: dict
    grids: dict
    model: object


def is_learned(G) -> bool:
    """True when ``G`` is a learned consensus model (docs/admm.md "Learning")."""
    return G.graph.get("learned") is not None


def instantiate(G, sizes: dict):
    """The IR of ``G``'s learned model with its grids at ``sizes`` (name → (R, C)); ``G`` itself when they are
    its sizes already. Cached on ``G`` per size."""
    spec = G.graph["learned"]
    want = {g: tuple(int(x) for x in sizes.get(g, spec.sizes[g])) for g in spec.sizes}
    if want == spec.sizes:
        return G
    cache = G.graph.setdefault("_instances", {})
    key = tuple(sorted(want.items()))
    if key not in cache:
        H = from_model(spec.model, want)
        H.graph["parameter_sheaf"] = G.graph["parameter_sheaf"]  # one set of parameters for every size
        cache[key] = H
    return cache[key]


def _on_block(G, m, v: str, block):
    """A map on coordinates ``block`` of ``v``: a parameter map keeps the block (the edge says it); any other is
    embedded in the whole stalk (zero columns elsewhere) as a Constant."""
    if block is None or isinstance(m, ParamMap):
        return m, block
    a, b = block
    w, dim = b - a, G.nodes[v]["dim"]
    if isinstance(m, Identity):
        inner = np.eye(w)
    elif isinstance(m, Scaled):
        inner = m.scale * np.eye(w)
    else:
        inner = np.asarray(m.matrix, dtype=float)
    full = np.zeros((inner.shape[0], dim))
    full[:, a:b] = inner
    return Constant(full), None


def _add_model_objective(G, o, path: str) -> None:
    """A checked model's objective; a problem only the builder finds (a literal Q too large for the checker's
    exact test) is reported at the objective's statement."""
    def data(ref):
        return None if ref is None else (ref.param if ref.param is not None else ref.value)

    try:
        add_objective(G, o.stalk, o.kind, Q=data(o.Q), q=data(o.q), lo=o.lo, hi=o.hi, lam=o.lam, span=o.span)
    except InvalidSheaf as exc:
        d = exc.diagnostics[0]
        raise SheafError(Diagnostic(d.code, d.message, o.span, "error", d.hint, path), G.graph.get("source", "")) from None


def _map(ref):
    if ref.param is not None:
        return ParamMap(ref.param)
    if ref.scale is not None:
        return Identity() if ref.scale == 1.0 else Scaled(ref.scale)
    return Constant(np.array(ref.matrix, dtype=float))
