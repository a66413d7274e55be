"""The IR: what from_model builds from each model file, Python-built == text-built, soft pins, the
parameter sheaf, the builders' checks, and the code in docs/ir.md (executed, so the docs cannot rot)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from sheafdsl.frontend import load_file, load_text
from sheafdsl.ir import (ZERO, Constant, Identity, ParamMap, ReluGate, Scaled, Select, add_edge, add_param, add_pin,
                         add_reluctance, add_soft_pin, add_stalk, add_tie, constant_pins, edge_dim, edge_offsets, edges,
                         free_indices, from_model, new_sheaf, param_specs, pinned_indices, stalks, total_dim)
from sheafdsl.ir.export import to_json
from sheafdsl.lowering import coboundary_matrix, init_params, laplacian_matrix, offset_vector, restriction_matrix

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted((ROOT / "models").glob("*.sheaf"))


def canon(G) -> dict:
    """Everything the IR holds except where it came from (path, source text, a file param's base_dir)."""
    d = to_json(G)
    for n in d["parameter_sheaf"]["nodes"]:
        if "spec" in n:
            n["spec"].pop("base_dir", None)
    return {"name": d["graph"]["name"], "network": d["graph"]["network"], "train": d["graph"]["train"],
            "state": d["state"], "parameter_sheaf": d["parameter_sheaf"]}


# ----------------------------------------------------------------------------------------------
# every model file


@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_model_ir_is_consistent(path):
    model = load_file(str(path))
    G = from_model(model)
    # vertices: the model's stalks in order (then soft-pin anchors), offsets contiguous
    names = stalks(G)
    assert names[: len(model.stalks)] == list(model.stalks)
    # then soft-pin anchors, and a learned model's grid agents (``g[i,j]``, ``g[i,j].obs``) at the default size
    grids = tuple(f"{g}[" for g in (G.graph.get("learned").grids if G.graph.get("learned") else ()))
    assert all(G.nodes[v]["anchor"] or v.startswith(grids) for v in names[len(model.stalks):])
    off = 0
    for v in names:
        assert G.nodes[v]["offset"] == off
        off += G.nodes[v]["dim"]
    assert off == total_dim(G) == sum(s.dim for s in model.stalks.values()) + sum(
        len(sp.value) for sp in model.soft_pins) + sum(G.nodes[v]["dim"] for v in names if grids and v.startswith(grids))
    for s in model.stalks.values():
        assert G.nodes[s.name]["dim"] == s.dim
    # edges: one per declared edge (plus one per soft pin), each restriction map d_e x d_v
    if not grids:  # a grid's `right`/`down` edge is one edge per pair of neighbours
        assert G.number_of_edges() == len(model.edges) + len(model.soft_pins)
    P = init_params(G, 0)
    for u, v, name, d in edges(G):
        if name in model.edges:
            e = model.edges[name]
            assert (u, v, d["kind"], d["dim"], d["weight"]) == (e.src, e.dst, e.kind, e.dim, e.weight)
        for m, w, block in ((d["src_map"], u, d.get("src_block")), (d["dst_map"], v, d.get("dst_block"))):
            width = G.nodes[w]["dim"] if block is None else block[1] - block[0]  # an endpoint block's map sees its width
            assert restriction_matrix(m, width, P).shape == (d["dim"], width)
        if d["bias"] is not None:
            assert P[d["bias"]].shape == (d["dim"],)
    assert coboundary_matrix(G, P).shape == (edge_dim(G), total_dim(G))
    # pins: the declared ones, and pinned/free partition the coordinates for both variants
    for p in model.pins:
        assert any(q.source == p.source and q.indices == p.indices for q in G.nodes[p.stalk]["pins"])
    for sources in (("input", "target", "value"), ("input", "value")):
        pinned, free = pinned_indices(G, sources), free_indices(G, sources)
        assert np.array_equal(np.sort(np.concatenate([pinned, free])), np.arange(total_dim(G)))
    assert list(param_specs(G)) == list(model.params)


def test_paraboloid_ir():
    G = from_model(load_file(str(ROOT / "models" / "paraboloid.sheaf")))
    assert stalks(G) == ["x", "z1", "a1", "z2", "y"]
    assert [G.nodes[v]["dim"] for v in stalks(G)] == [2, 30, 30, 1, 1]
    assert [G.nodes[v]["offset"] for v in stalks(G)] == [0, 2, 32, 62, 63]
    es = {name: (u, v, d) for u, v, name, d in edges(G)}
    assert list(es) == ["aff1", "act1", "aff2", "out"]
    u, v, d = es["aff1"]
    assert (u, v, d["kind"], d["src_map"], d["dst_map"], d["bias"], d["dim"]) == (
        "x", "z1", "affine", ParamMap("W1"), Identity(), "b1", 30)
    assert es["act1"][2]["src_map"] == ReluGate() and es["act1"][2]["bias"] is None
    assert es["out"][2]["src_map"] == Identity() == es["out"][2]["dst_map"]
    assert edge_offsets(G) == {"aff1": 0, "act1": 30, "aff2": 60, "out": 61}
    assert (total_dim(G), edge_dim(G)) == (64, 62)
    assert [p.source for p in G.nodes["x"]["pins"]] == ["input"]
    assert [p.source for p in G.nodes["y"]["pins"]] == ["target"]
    assert pinned_indices(G).tolist() == [0, 1, 63]
    assert pinned_indices(G, ("input", "value")).tolist() == [0, 1]
    assert len(free_indices(G)) == 61 and len(free_indices(G, ("input", "value"))) == 62
    assert {k: s.shape for k, s in param_specs(G).items()} == {"W1": (30, 2), "b1": (30,), "W2": (1, 30), "b2": (1,)}
    assert G.graph["train"]["data"] == "paraboloid"
    H = G.graph["parameter_sheaf"]
    assert set(H.nodes) == {ZERO, "W1", "b1", "W2", "b2"} and H.number_of_edges() == 0


def test_tiny_literal_parameters():
    G = from_model(load_file(str(ROOT / "models" / "tiny.sheaf")))
    P = init_params(G, 123)  # literals ignore the seed
    assert np.array_equal(P["W1"], [[1.0, -0.5], [0.25, 2.0]])
    assert np.array_equal(P["b2"], [0.05])
    assert offset_vector(G, P).tolist() == [0.1, -0.2, 0.0, 0.0, 0.05, 0.0]


# ----------------------------------------------------------------------------------------------
# Python-built == text-built

GENERAL = """\
sheaf general
param W : 2 x 3 init he
param V : 2 x 3 init normal(0.5)
param c : 2 = [1, 2]
stalk u : 3
stalk v : 2
stalk w : 2
edge e1 : u -> v affine W c weight 2
edge e2 : v -> w maps [[1, 0], [0, -1]] | 3
edge e3 : u -> w maps V | [[0, 1], [1, 0]]
pin u[0, 2] = [0.5, -1]
pin w ~ [1, 1] weight 4
pin v[1] ~ 2 weight 0.5
reluctance W weight 0.1
tie W ~ V weight 0.2
"""


def build_general_in_python():
    G = new_sheaf("general")
    add_param(G, "W", (2, 3), "he")
    add_param(G, "V", (2, 3), "normal", std=0.5)
    add_param(G, "c", (2,), "literal", value=(1.0, 2.0))
    add_stalk(G, "u", 3)
    add_stalk(G, "v", 2)
    add_stalk(G, "w", 2)
    add_edge(G, "e1", "u", "v", kind="affine", src_map=ParamMap("W"), dst_map=Identity(), bias="c", weight=2)
    add_edge(G, "e2", "v", "w", src_map=Constant([[1, 0], [0, -1]]), dst_map=Scaled(3.0))
    add_edge(G, "e3", "u", "w", src_map=ParamMap("V"), dst_map=Constant([[0, 1], [1, 0]]))
    add_pin(G, "u", "value", indices=[0, 2], value=[0.5, -1])
    add_soft_pin(G, "pin_w", "w", [1, 1], 4)
    add_soft_pin(G, "pin_v_1", "v", [2], 0.5, indices=[1])
    add_reluctance(G, "W", 0.1)
    add_tie(G, "W", "V", 0.2)
    return G


def build_paraboloid_in_python():
    G = new_sheaf("paraboloid")
    for name, shape, init in (("W1", (30, 2), "he"), ("b1", (30,), "zeros"), ("W2", (1, 30), "he"),
                              ("b2", (1,), "zeros")):
        add_param(G, name, shape, init)
    for name, dim in (("x", 2), ("z1", 30), ("a1", 30), ("z2", 1), ("y", 1)):
        add_stalk(G, name, dim)
    add_edge(G, "aff1", "x", "z1", kind="affine", src_map=ParamMap("W1"), dst_map=Identity(), bias="b1")
    add_edge(G, "act1", "z1", "a1", kind="relu", src_map=ReluGate(), dst_map=Identity())
    add_edge(G, "aff2", "a1", "z2", kind="affine", src_map=ParamMap("W2"), dst_map=Identity(), bias="b2")
    add_edge(G, "out", "z2", "y", kind="identity", src_map=Identity(), dst_map=Identity(), weight=0.1)
    add_pin(G, "x", "input")
    add_pin(G, "y", "target")
    G.graph["train"] = dict(data="paraboloid", n=300, n_test=100, steps=3000, optimizer="adam", lr=0.01, seed=0)
    return G


def test_python_equals_text_general():
    Gt = from_model(load_text(GENERAL))
    Gp = build_general_in_python()
    assert canon(Gp) == canon(Gt)
    Pt, Pp = init_params(Gt, 7), init_params(Gp, 7)
    assert all(np.array_equal(Pt[k], Pp[k]) for k in Pt)
    assert (laplacian_matrix(Gt, Pt) != laplacian_matrix(Gp, Pp)).nnz == 0
    assert np.array_equal(offset_vector(Gt, Pt), offset_vector(Gp, Pp))


def test_python_equals_text_paraboloid():
    Gt = from_model(load_file(str(ROOT / "models" / "paraboloid.sheaf")))
    assert canon(build_paraboloid_in_python()) == canon(Gt)


def test_canon_sees_differences():
    """The comparison above is not vacuous: changing one weight, map or pin shows up."""
    base = canon(build_general_in_python())
    G = build_general_in_python()
    G.edges["v", "w", "e2"]["dst_map"] = Scaled(2.0)
    assert canon(G) != base
    G = build_general_in_python()
    G.graph["parameter_sheaf"].edges["W", ZERO, "reluctance_W"]["weight"] = 0.3
    assert canon(G) != base
    G = build_general_in_python()
    add_pin(G, "v", "value", indices=[0], value=[1.0])
    assert canon(G) != base


# ----------------------------------------------------------------------------------------------
# soft pins and the parameter sheaf


def test_soft_pins_become_anchor_vertices():
    G = from_model(load_text(GENERAL))
    anchors = [v for v in stalks(G) if G.nodes[v]["anchor"]]
    assert anchors == ["pin_w", "pin_v_1"]
    a = G.nodes["pin_w"]
    assert a["dim"] == 2 and [p.source for p in a["pins"]] == ["value"]
    assert a["pins"][0].value.tolist() == [1.0, 1.0]
    (u, v, name, d), = [e for e in edges(G) if e[1] == "pin_v_1"]
    assert (u, name, d["kind"], d["src_map"], d["dst_map"], d["dim"], d["weight"]) == (
        "v", "pin_v_1", "soft_pin", Select((1,)), Identity(), 1, 0.5)
    # the anchor's coordinates are pinned (to a constant) in both variants, and listed as constants
    idx, val = constant_pins(G)
    sl = slice(G.nodes["pin_w"]["offset"], G.nodes["pin_w"]["offset"] + 2)
    assert set(range(sl.start, sl.stop)) <= set(idx.tolist())
    assert set(range(sl.start, sl.stop)) <= set(pinned_indices(G, ("input", "value")).tolist())
    # energy ½ w² ‖c_v[1] − 2‖²: with v[1] = 5 and everything else consistent, the edge's discord is 2 − 5
    P = init_params(G, 0)
    c = np.zeros(total_dim(G))
    c[G.nodes["v"]["offset"] + 1] = 5.0
    c[G.nodes["pin_v_1"]["offset"]] = 2.0
    r = coboundary_matrix(G, P) @ c
    k = edge_offsets(G)["pin_v_1"]
    assert r[k] == pytest.approx(-3.0)


def test_partial_soft_pin_name_clash_gets_a_fresh_anchor():
    G = from_model(load_text("sheaf s\nstalk pin_a : 1\nstalk a : 1\nedge e : a -> pin_a identity\npin a ~ 1 weight 2\n"))
    anchors = [v for v in stalks(G) if G.nodes[v]["anchor"]]
    assert len(anchors) == 1 and anchors[0] != "pin_a" and anchors[0].startswith("pin_a")


def test_parameter_sheaf_reluctance_and_ties():
    G = from_model(load_text(GENERAL))
    H = G.graph["parameter_sheaf"]
    rel = [(a, b, d["weight"]) for a, b, d in H.edges(data=True) if d["kind"] == "reluctance"]
    ties = [(a, b, d["weight"]) for a, b, d in H.edges(data=True) if d["kind"] == "tie"]
    assert [(set((a, b)), w) for a, b, w in rel] == [({"W", ZERO}, 0.1)]
    assert [(set((a, b)), w) for a, b, w in ties] == [({"W", "V"}, 0.2)]
    assert H.nodes[ZERO]["anchor"] and not H.nodes["W"]["anchor"]
    assert H.nodes["V"]["spec"].std == 0.5


def test_reluctance_on_several_params():
    G = from_model(load_text("sheaf r\nnetwork n : 2 -> 3 -> 1\npin x = input\nreluctance W1 W2 weight 1e-3\n"))
    H = G.graph["parameter_sheaf"]
    assert sorted(p for p, q in H.edges() for p in (p, q) if p != ZERO) == ["W1", "W2"]
    assert all(d["weight"] == 1e-3 for *_, d in H.edges(data=True))


# ----------------------------------------------------------------------------------------------
# builders refuse what would break the IR


def test_builders_reject_bad_references():
    G = build_general_in_python()
    cases = [
        (lambda: add_reluctance(G, "nope", 1.0), "E203"),
        (lambda: add_tie(G, "W", "nope", 1.0), "E203"),
        (lambda: add_tie(G, "W", "c", 1.0), "E261"),
        (lambda: add_edge(G, "e9", "u", "v", src_map=ParamMap("Q"), dst_map=Identity()), "E203"),
        (lambda: add_edge(G, "e9", "u", "v", src_map=ParamMap("W"), dst_map=Identity(), bias="nobias"), "E203"),
        (lambda: add_pin(G, "zz", "input"), "E202"),
        (lambda: add_stalk(G, "u", 1), "E201"),
        (lambda: add_edge(G, "e9", "u", "v", src_map=ParamMap("W"), dst_map=Identity(), weight=0), "E250"),
    ]
    for call, code in cases:
        with pytest.raises(ValueError) as e:  # an InvalidSheaf: a SheafError that is also a ValueError
            call()
        assert e.value.codes == [code], (code, e.value.codes)
    # nothing half-added
    assert "e9" not in edge_offsets(G) and "nope" not in G.graph["parameter_sheaf"]


# ----------------------------------------------------------------------------------------------
# docs/ir.md: every ```python block runs, in order, in one namespace


def _doc_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.S | re.M)


@pytest.mark.parametrize("doc", ["ir.md", "architecture.md"])
def test_doc_code_blocks_run(doc, tmp_path, monkeypatch):
    path = ROOT / "docs" / doc
    blocks = _doc_blocks(path)
    if doc == "ir.md":
        assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    ns: dict = {"__name__": "__docs__"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{path}:block{i}", "exec"), ns)


def test_edges_follow_declaration_order_not_source_grouping():
    """A skip edge declared last stays last in δ's rows, even though its source vertex comes first."""
    from sheafdsl.frontend import load_text
    from sheafdsl.ir import edge_offsets, edges, from_model

    G = from_model(load_text(
        "sheaf s\nstalk a : 1\nstalk b : 1\nstalk c : 1\n"
        "edge ab : a -> b identity\nedge bc : b -> c identity\nedge ac : a -> c identity\n"))
    assert [name for _, _, name, _ in edges(G)] == ["ab", "bc", "ac"]
    assert edge_offsets(G) == {"ab": 0, "bc": 1, "ac": 2}


# the builders validate the way the checker does, with its codes (never a raw numpy error later)
BAD_BUILDS = [
    ("float dim", lambda G: add_stalk(G, "q", 2.5), "E210"),
    ("integral float dim", lambda G: add_stalk(G, "q", 2.0), "E210"),
    ("zero dim", lambda G: add_stalk(G, "q", 0), "E210"),
    ("bool dim", lambda G: add_stalk(G, "q", True), "E210"),
    ("huge dim", lambda G: add_stalk(G, "q", 10**7), "E211"),
    ("name not a string", lambda G: add_stalk(G, 3, 1), "E201"),
    ("param shape", lambda G: add_param(G, "P", (2, 0)), "E210"),
    ("param 3-d", lambda G: add_param(G, "P", (2, 2, 2)), "E222"),
    ("param taken", lambda G: add_param(G, "W", (2, 3)), "E201"),
    ("unknown init", lambda G: add_param(G, "P", (2, 3), "glorot"), "E233"),
    ("he on a vector", lambda G: add_param(G, "P", (3,), "he"), "E234"),
    ("self-tie", lambda G: add_tie(G, "W", "W", 1.0), "E262"),
    ("tie weight", lambda G: add_tie(G, "W", "V", -1.0), "E250"),
    ("second reluctance", lambda G: add_reluctance(G, "W", 0.5), "E260"),
    ("reluctance weight inf", lambda G: add_reluctance(G, "V", float("inf")), "E250"),
    ("pin index out of range", lambda G: add_pin(G, "w", "value", indices=[5], value=[0.0]), "E241"),
    ("pin index negative", lambda G: add_pin(G, "w", "value", indices=[-1], value=[0.0]), "E241"),
    ("pin index twice", lambda G: add_pin(G, "w", "value", indices=[0, 0], value=[0.0, 1.0]), "E242"),
    ("pin coordinate pinned twice", lambda G: add_pin(G, "u", "value", indices=[0], value=[1.0]), "E242"),
    ("pin value length", lambda G: add_pin(G, "w", "value", value=[1.0, 2.0, 3.0]), "E240"),
    ("pin value NaN", lambda G: add_pin(G, "w", "value", value=[np.nan, 0.0]), "E232"),
    ("input pin with indices", lambda G: add_pin(G, "w", "input", indices=[0]), "E243"),
    ("pin source", lambda G: add_pin(G, "w", "prior"), "E243"),
    ("map columns", lambda G: add_edge(G, "e9", "v", "w", src_map=ParamMap("W"), dst_map=Identity()), "E220"),
    ("constant map columns", lambda G: add_edge(G, "e9", "v", "w", src_map=Constant(np.ones((2, 3))),
                                                dst_map=Identity()), "E225"),
    ("maps disagree on rows", lambda G: add_edge(G, "e9", "u", "w", src_map=Identity(), dst_map=Identity()), "E225"),
    ("bias length", lambda G: add_edge(G, "e9", "u", "v", src_map=ParamMap("W"), dst_map=Identity(), bias="c2"),
     "E221"),
    ("vector as a map", lambda G: add_edge(G, "e9", "v", "w", src_map=ParamMap("c"), dst_map=Identity()), "E222"),
    ("not a map", lambda G: add_edge(G, "e9", "v", "w", src_map=np.eye(2), dst_map=Identity()), "E224"),
    ("relu loop", lambda G: add_edge(G, "e9", "v", "v", kind="relu", src_map=ReluGate(), dst_map=Identity()), "E290"),
    ("edge name taken", lambda G: add_edge(G, "e1", "v", "w", src_map=Identity(), dst_map=Identity()), "E201"),
    ("soft pin weight", lambda G: add_soft_pin(G, "sp", "w", [0.0, 0.0], 0.0), "E250"),
    ("soft pin index", lambda G: add_soft_pin(G, "sp", "w", [0.0], 1.0, indices=[2]), "E241"),
]


@pytest.mark.parametrize("what, call, code", BAD_BUILDS, ids=[b[0] for b in BAD_BUILDS])
def test_builders_validate_like_the_checker(what, call, code):
    from sheafdsl.errors import SheafError

    G = build_general_in_python()
    add_param(G, "c2", (3,), "zeros")
    before = (total_dim(G), edge_dim(G), len(G.graph["parameter_sheaf"]), [list(G.nodes[v]["pins"]) for v in G])
    with pytest.raises(SheafError) as e:
        call(G)
    assert e.value.codes == [code]
    # nothing half-added
    assert before == (total_dim(G), edge_dim(G), len(G.graph["parameter_sheaf"]), [list(G.nodes[v]["pins"]) for v in G])
