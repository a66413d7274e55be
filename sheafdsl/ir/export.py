"""Exporting the IR: a summary, and files in three formats (JSON, GraphML, Graphviz dot).

=========== ======================================================================================
format      what it holds
=========== ======================================================================================
``.json``   everything: the state sheaf as networkx *node-link* data (``edges="edges"``), the
            parameter sheaf as node-link data, and the graph attributes. Restriction maps, pins and
            parameter specs are JSON objects, so :func:`load_json` rebuilds an equal IR.
``.graphml`` the state sheaf with scalar attributes only (GraphML has no lists): a restriction map
            is written twice, as :func:`~sheafdsl.ir.maps.describe` text (``src_map``) and as a JSON
            string (``src_map_json``); pins, the network, the train defaults and the parameter sheaf
            are JSON strings. ``networkx.read_graphml`` reads it.
``.dot``    a Graphviz drawing: edge labels give name, kind, ``src_map | dst_map`` and weight;
            pinned vertices are filled (input green, target orange, constant grey; a partial pin is
            dashed), soft-pin anchors are boxes, and the parameter sheaf is a separate cluster.
=========== ======================================================================================

Every write is atomic: a temporary file in the target's directory, then ``os.replace``.

>>> from sheafdsl.ir import new_sheaf, add_stalk, add_edge, add_pin, Identity
>>> G = new_sheaf("pair"); add_stalk(G, "a", 2); add_stalk(G, "b", 2)
>>> add_edge(G, "ab", "a", "b", src_map=Identity(), dst_map=Identity())
>>> add_pin(G, "a", "input")
>>> s = summary(G)
>>> s["vertices"], s["edges"], s["free_dim"], s["pinned_dim"], s["edge_dim"], s["params"]
(2, 1, 2, 2, 2, 0)
>>> G2 = from_json(to_json(G))
>>> sorted(G2.nodes) == sorted(G.nodes) and G2.edges["a", "b", "ab"]["src_map"] == Identity()
True
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import networkx as nx
import numpy as np

from ..fileio import atomic_write_text
from .graph import (INFERENCE, TRAINING, ZERO, ObjectiveSpec, ParamSpec, PinSpec, edge_dim, edges, is_consensus,
                    is_state_dependent, new_sheaf, param_specs,
                    pinned_indices, stalks, total_dim)
from .maps import Constant, Identity, Nonlinear, ParamMap, ReluGate, Scaled, Select, describe


#: file extension -> format name
FORMATS = {".json": "json", ".graphml": "graphml", ".dot": "dot", ".gv": "dot"}

FORMAT_NAME = "sheafdsl-ir"
FORMAT_VERSION = 1


# ----------------------------------------------------------------------------------------------
# summary


def summary(G: nx.MultiDiGraph) -> dict:
    """The numbers ``sheaf compile --json`` prints.

    ``vertices``/``edges`` count every vertex and edge of the state sheaf, soft-pin anchors and their
    edges included. ``pinned_dim`` counts the cochain coordinates pinned **at training time**: input,
    target and constant (``value``) pins, the latter including soft-pin anchors; ``free_dim`` =
    N − ``pinned_dim`` is the dimension of c_Ω in the restricted Laplacian L_free used by training.
    ``free_dim_inference``/``pinned_dim_inference`` are the same at inference, where a target is free.
    ``edge_dim`` is M = Σ_e d_e (the 1-cochain length); ``params`` is the number of scalar parameters.
    ``consensus``: whether it states a consensus problem, with ``objective_terms`` objective terms and
    ``hard_edges`` hard edges (docs/admm.md).
    """
    N = total_dim(G)
    pinned = len(pinned_indices(G, TRAINING))
    pinned_inf = len(pinned_indices(G, INFERENCE))
    specs = param_specs(G)
    H = G.graph["parameter_sheaf"]
    kinds = [d.get("kind") for _, _, d in H.edges(data=True)]
    return {
        "name": G.graph.get("name", ""),
        "vertices": G.number_of_nodes(),
        "edges": G.number_of_edges(),
        "free_dim": N - pinned,
        "pinned_dim": pinned,
        "edge_dim": edge_dim(G),
        "params": int(sum(math.prod(s.shape) for s in specs.values())),
        "total_dim": N,
        "free_dim_inference": N - pinned_inf,
        "pinned_dim_inference": pinned_inf,
        "anchors": sum(bool(d.get("anchor")) for _, d in G.nodes(data=True)),
        "state_dependent": is_state_dependent(G),
        "param_shapes": {p: list(s.shape) for p, s in specs.items()},
        "reluctance_edges": kinds.count("reluctance"),
        "tie_edges": kinds.count("tie"),
        "consensus": is_consensus(G),
        "objective_terms": sum(len(d.get("objectives") or ()) for _, d in G.nodes(data=True)),
        "hard_edges": sum(bool(d.get("hard")) for *_, d in G.edges(data=True)),
    }


# ----------------------------------------------------------------------------------------------
# JSON forms of the IR's objects


def map_to_json(m) -> dict:
    """A restriction map as a JSON object ``{"kind": ..., ...}`` (inverse: :func:`map_from_json`)."""
    if isinstance(m, Identity):
        return {"kind": "identity"}
    if isinstance(m, Scaled):
        return {"kind": "scaled", "scale": float(m.scale)}
    if isinstance(m, Constant):
        return {"kind": "constant", "matrix": m.matrix.tolist()}
    if isinstance(m, ParamMap):
        return {"kind": "param", "param": m.param}
    if isinstance(m, Select):
        return {"kind": "select", "indices": [int(i) for i in m.indices]}
    if isinstance(m, ReluGate):
        return {"kind": "relu"}
    if isinstance(m, Nonlinear):
        return {"kind": "nonlinear", "fn": m.fn} if m.arg is None else {"kind": "nonlinear", "fn": m.fn, "arg": m.arg}
    raise TypeError(f"not a restriction map: {m!r}")


def map_from_json(d: dict):
    kind = d["kind"]
    if kind == "identity":
        return Identity()
    if kind == "scaled":
        return Scaled(float(d["scale"]))
    if kind == "constant":
        return Constant(np.array(d["matrix"], dtype=float))
    if kind == "param":
        return ParamMap(d["param"])
    if kind == "select":
        return Select(tuple(int(i) for i in d["indices"]))
    if kind == "relu":
        return ReluGate()
    if kind == "nonlinear":
        return Nonlinear(d["fn"], d.get("arg"))
    raise ValueError(f"unknown restriction map kind {kind!r}")


def pin_to_json(p: PinSpec) -> dict:
    return {"source": p.source, "indices": None if p.indices is None else list(p.indices),
            "value": None if p.value is None else np.asarray(p.value, dtype=float).tolist()}


def pin_from_json(d: dict) -> PinSpec:
    idx = None if d.get("indices") is None else tuple(int(i) for i in d["indices"])
    val = None if d.get("value") is None else np.array(d["value"], dtype=float)
    return PinSpec(d["source"], idx, val)


def _floats_to_json(a):
    """A float array as nested lists, ±inf as the strings "inf"/"-inf" (JSON has no infinity)."""
    return [x if math.isfinite(x) else ("inf" if x > 0 else "-inf") for x in np.asarray(a, dtype=float).tolist()]


def objective_to_json(o: ObjectiveSpec) -> dict:
    """One objective term: ``kind`` and its data (``Q``/``q``: a parameter name or nested lists; ``lo``/``hi``
    with ±inf as strings; ``lam``)."""
    out: dict = {"kind": o.kind}
    for k in ("Q", "q"):
        v = getattr(o, k)
        if v is not None:
            out[k] = v if isinstance(v, str) else np.asarray(v, dtype=float).tolist()
    for k in ("lo", "hi"):
        v = getattr(o, k)
        if v is not None:
            out[k] = _floats_to_json(v)
    if o.lam is not None:
        out["lam"] = float(o.lam)
    return out


def objective_from_json(d: dict) -> ObjectiveSpec:
    def arr(v):
        return v if v is None or isinstance(v, str) else np.array([float(x) for x in v] if v and not
                                                                   isinstance(v[0], list) else v, dtype=float)

    return ObjectiveSpec(d["kind"], Q=arr(d.get("Q")), q=arr(d.get("q")), lo=arr(d.get("lo")), hi=arr(d.get("hi")),
                         lam=None if d.get("lam") is None else float(d["lam"]))


def _tuplify(x):
    return tuple(_tuplify(y) for y in x) if isinstance(x, (list, tuple)) else x


def spec_to_json(s: ParamSpec) -> dict:
    value = s.value
    if value is not None:
        value = np.asarray(value, dtype=float).tolist()
    out = {"shape": list(s.shape), "init": s.init, "std": s.std, "value": value, "file": s.file, "key": s.key}
    if s.file is not None:  # where a relative file path is resolved; meaningless for other initialisers
        out["base_dir"] = s.base_dir
    return out


def spec_from_json(d: dict) -> ParamSpec:
    return ParamSpec(tuple(int(n) for n in d["shape"]), d.get("init", "he"), d.get("std"), _tuplify(d.get("value")),
                     d.get("file"), d.get("key"), d.get("base_dir", "."))


def _network_to_json(net):
    if net is None:
        return None
    return {"name": net.name, "widths": list(net.widths), "activation": net.activation, "output": net.output,
            "layers": [list(a) for a in net.layers], "output_weight": net.output_weight}


def _network_from_json(d):
    if d is None:
        return None
    # the network record is the front end's plain-data NetworkInfo; import it only when there is one
    from ..frontend.model import NetworkInfo

    return NetworkInfo(d["name"], tuple(int(w) for w in d["widths"]), d.get("activation", "relu"),
                       d.get("output", "identity"), tuple(tuple(a) for a in d.get("layers", ())),
                       float(d.get("output_weight", 1.0)))


def _jsonable(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ----------------------------------------------------------------------------------------------
# JSON (lossless)


def to_json(G: nx.MultiDiGraph) -> dict:
    """The whole IR as a JSON-ready dict (node-link data for both sheaves); :func:`from_json` inverts it.

    Vertices are listed in cochain order and edges in :func:`~sheafdsl.ir.edges` order, so offsets and
    the 1-cochain layout survive the round trip.
    """
    H = G.graph["parameter_sheaf"]
    nodes = []
    for v in stalks(G):
        d = G.nodes[v]
        node = {"id": v, "dim": int(d["dim"]), "offset": int(d["offset"]), "anchor": bool(d.get("anchor")),
                "pins": [pin_to_json(p) for p in d["pins"]]}
        if d.get("objectives"):
            node["objectives"] = [objective_to_json(o) for o in d["objectives"]]
        nodes.append(node)
    links = []
    for u, v, name, d in edges(G):
        links.append({"source": u, "target": v, "key": name, "kind": d["kind"], "src_map": map_to_json(d["src_map"]),
                      "dst_map": map_to_json(d["dst_map"]), "dim": int(d["dim"]), "weight": float(d["weight"]),
                      "bias": d.get("bias"), "hard": bool(d.get("hard", False))})
    pnodes = []
    for p, d in H.nodes(data=True):
        entry = {"id": p, "anchor": bool(d.get("anchor"))}
        if p != ZERO:
            entry["spec"] = spec_to_json(d["spec"])
        pnodes.append(entry)
    plinks = [{"source": a, "target": b, "key": k, "kind": d.get("kind"), "weight": float(d["weight"])}
              for a, b, k, d in H.edges(keys=True, data=True)]
    graph = {"name": G.graph.get("name", ""), "network": _network_to_json(G.graph.get("network")),
             "train": dict(G.graph.get("train") or {}), "path": G.graph.get("path", "<python>"),
             "source": G.graph.get("source", "")}
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "graph": graph,
        "state": {"directed": True, "multigraph": True, "graph": {"kind": "state", "name": graph["name"]},
                  "nodes": nodes, "edges": links},
        "parameter_sheaf": {"directed": False, "multigraph": True, "graph": {"kind": "parameters"},
                            "nodes": pnodes, "edges": plinks},
    }


def from_json(data: dict) -> nx.MultiDiGraph:
    """Rebuild the IR from :func:`to_json`'s dict. Raises ValueError on anything malformed."""
    try:
        if data.get("format") != FORMAT_NAME:
            raise ValueError(f"not a {FORMAT_NAME} file (format = {data.get('format')!r})")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported {FORMAT_NAME} version {data.get('version')!r}")
        g = data["graph"]
        G = new_sheaf(g.get("name", "sheaf"))
        G.graph.update(train=dict(g.get("train") or {}), path=g.get("path", "<python>"), source=g.get("source", ""),
                       network=_network_from_json(g.get("network")))
        H = G.graph["parameter_sheaf"]
        for n in data["parameter_sheaf"]["nodes"]:
            if n["id"] != ZERO:
                H.add_node(n["id"], spec=spec_from_json(n["spec"]), anchor=False)
        for e in data["parameter_sheaf"]["edges"]:
            H.add_edge(e["source"], e["target"], key=e["key"], kind=e["kind"], weight=float(e["weight"]))
        offset = 0
        for n in sorted(data["state"]["nodes"], key=lambda n: n["offset"]):
            if int(n["offset"]) != offset:
                raise ValueError(f"vertex {n['id']!r}: offset {n['offset']} but the layout puts it at {offset}")
            G.add_node(n["id"], dim=int(n["dim"]), offset=offset, pins=[pin_from_json(p) for p in n["pins"]],
                       anchor=bool(n.get("anchor")),
                       objectives=[objective_from_json(o) for o in n.get("objectives", ())])
            offset += int(n["dim"])
        for order, e in enumerate(data["state"]["edges"]):
            for end in ("source", "target"):
                if e[end] not in G:
                    raise ValueError(f"edge {e['key']!r}: unknown vertex {e[end]!r}")
            G.add_edge(e["source"], e["target"], key=e["key"], kind=e["kind"], src_map=map_from_json(e["src_map"]),
                       dst_map=map_from_json(e["dst_map"]), dim=int(e["dim"]), weight=float(e["weight"]),
                       bias=e.get("bias"), order=order, hard=bool(e.get("hard", False)))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed {FORMAT_NAME} data: {type(exc).__name__}: {exc}") from None
    return G


def dumps_json(G: nx.MultiDiGraph) -> str:
    return json.dumps(to_json(G), indent=1, default=_jsonable) + "\n"


def load_json(path) -> nx.MultiDiGraph:
    """Read an IR written by :func:`write` (``.json``)."""
    with open(path, encoding="utf-8") as fh:
        return from_json(json.load(fh))


# ----------------------------------------------------------------------------------------------
# GraphML (scalar attributes)


def to_graphml_graph(G: nx.MultiDiGraph) -> nx.MultiDiGraph:
    """A copy of the state sheaf whose attributes are all str/int/float/bool, for GraphML."""
    data = to_json(G)
    S = nx.MultiDiGraph()
    S.graph.update(name=data["graph"]["name"], kind="state", format=FORMAT_NAME, version=FORMAT_VERSION,
                   path=str(data["graph"]["path"]),
                   network=json.dumps(data["graph"]["network"]), train=json.dumps(data["graph"]["train"]),
                   parameter_sheaf=json.dumps(data["parameter_sheaf"], default=_jsonable))
    for n in data["state"]["nodes"]:
        pins = n["pins"]
        S.add_node(n["id"], dim=n["dim"], offset=n["offset"], anchor=n["anchor"],
                   pinned=",".join(p["source"] for p in pins), pins=json.dumps(pins),
                   objectives=json.dumps(n.get("objectives", [])))
    for (u, v, name, d), e in zip(edges(G), data["state"]["edges"]):
        S.add_edge(u, v, key=name, name=name, kind=e["kind"], src_map=describe(d["src_map"]),
                   dst_map=describe(d["dst_map"]), src_map_json=json.dumps(e["src_map"]),
                   dst_map_json=json.dumps(e["dst_map"]), dim=e["dim"], weight=e["weight"], bias=e["bias"] or "",
                   hard=e["hard"])
    return S


def dumps_graphml(G: nx.MultiDiGraph) -> str:
    return "\n".join(nx.generate_graphml(to_graphml_graph(G))) + "\n"


# ----------------------------------------------------------------------------------------------
# Graphviz dot

_PIN_COLOURS = {"input": "#b7e4c7", "target": "#ffd8a8", "value": "#dee2e6"}


def _q(s) -> str:
    """A double-quoted dot ID (backslashes and quotes escaped, newlines as dot's ``\\n``)."""
    s = str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{s}"'


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def dumps_dot(G: nx.MultiDiGraph) -> str:
    """A readable Graphviz digraph of the state sheaf and (as a cluster) its parameter sheaf."""
    name = G.graph.get("name", "sheaf")
    out = [f"// {FORMAT_NAME}: the sheaf {name!s}; render with `dot -Tsvg`",
           f"digraph {_q(name)} {{",
           "  rankdir=LR;",
           '  node [shape=ellipse, fontname="Helvetica"];',
           '  edge [fontname="Helvetica", fontsize=10];']
    for v in stalks(G):
        d = G.nodes[v]
        label = f"{v}\nR^{d['dim']}"
        attrs = {}
        pins = d["pins"]
        if pins:
            sources = sorted({p.source for p in pins}, key=TRAINING.index)
            parts = []
            for p in pins:
                where = "" if p.indices is None else str(list(p.indices))
                what = p.source if p.source != "value" else _short(np.array2string(p.value, separator=","), 24)
                parts.append(f"{where}= {what}" if where else f"= {what}")
            label += "\npin " + "; ".join(parts)
            attrs["style"] = "filled" + (",dashed" if all(p.indices is not None for p in pins) else "")
            attrs["fillcolor"] = _PIN_COLOURS[sources[0]]
            attrs["pinned"] = ",".join(sources)
        if d.get("objectives"):
            label += "\nf: " + " + ".join(o.kind for o in d["objectives"])
        if d.get("anchor"):
            attrs["shape"] = "box"
            attrs["style"] = "filled,rounded"
            label = f"{v}\nanchor R^{d['dim']}" + label.split(f"R^{d['dim']}", 1)[1]
        attrs["label"] = label
        out.append(f"  {_q(v)} [{', '.join(f'{k}={_q(x)}' for k, x in attrs.items())}];")
    for u, v, ename, d in edges(G):
        maps = f"{_short(describe(d['src_map']))} | {_short(describe(d['dst_map']))}"
        label = f"{ename}: {d['kind']}\n{maps}"
        if d.get("bias"):
            label += f" + {d['bias']}"
        label += f"\nd={d['dim']}, " + ("hard" if d.get("hard") else f"w={d['weight']:g}")
        style = ', style="dashed"' if d["kind"] == "soft_pin" else ', style="bold"' if d.get("hard") else ""
        out.append(f"  {_q(u)} -> {_q(v)} [label={_q(label)}, key={_q(ename)}{style}];")
    H = G.graph["parameter_sheaf"]
    if H.number_of_nodes() > 1 or H.number_of_edges():
        out.append("  subgraph cluster_parameters {")
        out.append('    label="parameter sheaf"; style="dashed";')
        for p, d in H.nodes(data=True):
            if p == ZERO:
                out.append(f'    {_q("param:" + p)} [label="0", shape=doublecircle];')
            else:
                label = f"{p}\n{'x'.join(str(n) for n in d['spec'].shape)}, init {d['spec'].init}"
                out.append(f"    {_q('param:' + p)} [label={_q(label)}, shape=box];")
        for a, b, k, d in H.edges(keys=True, data=True):
            if a == ZERO:  # draw reluctance edges from the parameter to the anchor
                a, b = b, a
            label = f"{k}: {d.get('kind')} w={d['weight']:g}"
            out.append(f"    {_q('param:' + a)} -> {_q('param:' + b)} [dir=none, label={_q(label)}];")
        out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------------
# writing


def format_of(path) -> str | None:
    """The export format implied by a path's extension, or None."""
    return FORMATS.get(Path(path).suffix.lower())


def dumps(G: nx.MultiDiGraph, fmt: str) -> str:
    if fmt == "json":
        return dumps_json(G)
    if fmt == "graphml":
        return dumps_graphml(G)
    if fmt == "dot":
        return dumps_dot(G)
    raise ValueError(f"unknown export format {fmt!r}; use one of: json, graphml, dot")


def write(G: nx.MultiDiGraph, path, fmt: str | None = None) -> str:
    """Export ``G`` to ``path`` (format from the extension unless ``fmt`` is given); returns the format."""
    fmt = fmt or format_of(path)
    if fmt is None:
        raise ValueError(f"cannot tell the export format of {str(path)!r}; use .json, .graphml or .dot")
    atomic_write_text(path, dumps(G, fmt))
    return fmt
