"""``sheaf compile``: the summary, the three export formats (round trips), atomic writes, exit codes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from click.testing import CliRunner

from sheafdsl.cli.common import load_ir
from sheafdsl.cli.main import cli
from sheafdsl.ir import edges, export, stalks
from sheafdsl.ir.export import from_json, load_json, map_from_json, summary, to_json
from sheafdsl.lowering import coboundary_matrix, init_params, laplacian_matrix, offset_vector

ROOT = Path(__file__).resolve().parents[1]
PARABOLOID = str(ROOT / "models" / "paraboloid.sheaf")
REQUIRED = {"vertices", "edges", "free_dim", "pinned_dim", "edge_dim", "params"}

RICH = """\
sheaf rich
param W : 2 x 3 init he
param V : 2 x 3 init normal(0.5)
param c : 2 = [1, 2]
param F : 2 x 2 init "weights.npz":F
stalk u : 3
stalk v : 2
stalk w : 2
edge e1 : u -> v affine W c weight 2
edge e2 : v -> w maps [[1, 0.5], [0, -1]] | 3
edge e3 : u -> w maps V | F
pin u[0, 2] = [0.5, -1]
pin w ~ [1, 1] weight 4
pin v[1] ~ 2 weight 0.5
reluctance W V weight 0.1
tie W ~ V weight 0.2
"""


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def rich_file(tmp_path):
    np.savez(tmp_path / "weights.npz", F=np.array([[1.0, 2.0], [3.0, 4.0]]))
    path = tmp_path / "rich.sheaf"
    path.write_text(RICH)
    return str(path)


def same_ir(A, B):
    """Equal as IRs: the same JSON form, and the same assembled operators."""
    assert to_json(A) == to_json(B)
    P = init_params(A, 3)
    assert (laplacian_matrix(A, P) != laplacian_matrix(B, P)).nnz == 0
    assert (coboundary_matrix(A, P) != coboundary_matrix(B, P)).nnz == 0
    assert np.array_equal(offset_vector(A, P), offset_vector(B, P))


# ----------------------------------------------------------------------------------------------
# the summary


def test_compile_json_paraboloid():
    r = run("compile", PARABOLOID, "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert REQUIRED <= set(s)
    assert {k: s[k] for k in REQUIRED} == {"vertices": 5, "edges": 4, "free_dim": 61, "pinned_dim": 3,
                                           "edge_dim": 30 + 30 + 1 + 1, "params": 30 * 2 + 30 + 30 + 1}
    assert (s["free_dim_inference"], s["pinned_dim_inference"], s["total_dim"]) == (62, 2, 64)
    assert s["state_dependent"] is True and s["anchors"] == 0
    assert s["param_shapes"] == {"W1": [30, 2], "b1": [30], "W2": [1, 30], "b2": [1]}


def test_summary_counts_anchors_and_parameter_sheaf(rich_file):
    s = summary(load_ir(rich_file))
    # u 3 + v 2 + w 2 + anchors 2 + 1; pinned at training: u[0,2] and both anchors (constants)
    assert (s["vertices"], s["edges"], s["total_dim"], s["pinned_dim"], s["free_dim"]) == (5, 5, 10, 5, 5)
    assert s["pinned_dim"] == s["pinned_dim_inference"]  # no target pins
    assert s["edge_dim"] == 2 + 2 + 2 + 2 + 1
    assert s["params"] == 6 + 6 + 2 + 4
    assert (s["anchors"], s["reluctance_edges"], s["tie_edges"], s["state_dependent"]) == (2, 2, 1, False)


def test_compile_table(rich_file):
    r = run("compile", rich_file)
    assert r.exit_code == 0, r.output
    for word in ("e1", "e2", "e3", "affine", "soft_pin", "pin_w", "(anchor)", "free dimension"):
        assert word in r.output


# ----------------------------------------------------------------------------------------------
# exports


@pytest.mark.parametrize("model", ["paraboloid", "rich"])
def test_json_round_trip(model, rich_file, tmp_path):
    path = PARABOLOID if model == "paraboloid" else rich_file
    out = tmp_path / "g.json"
    r = run("compile", path, "-o", str(out), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["output"] == str(out) and json.loads(r.output)["format"] == "json"
    G = load_ir(path)
    G2 = load_json(out)
    same_ir(G, G2)
    assert G2.graph["network"] == G.graph["network"] and G2.graph["train"] == G.graph["train"]
    # file parameters still load (base_dir kept for them)
    assert all(np.array_equal(a, b) for a, b in zip(init_params(G, 5).values(), init_params(G2, 5).values()))
    # the state sheaf is networkx node-link data
    data = json.loads(out.read_text())
    H = nx.node_link_graph(data["state"], edges="edges")
    assert sorted(H.edges(keys=True)) == sorted(G.edges(keys=True))


def test_json_round_trip_with_network_info():
    from sheafdsl.frontend import load_text
    from sheafdsl.ir import from_model

    G = from_model(load_text("sheaf n\nnetwork mlp : 3 -> 4 -> 2 relu output softmax\n"))
    G2 = from_json(json.loads(json.dumps(to_json(G))))
    same_ir(G, G2)
    assert G2.graph["network"] == G.graph["network"]


def test_from_json_rejects_malformed():
    G = load_ir(PARABOLOID)
    good = to_json(G)
    with pytest.raises(ValueError, match="format"):
        from_json({**good, "format": "other"})
    bad = json.loads(json.dumps(good))
    del bad["state"]["edges"][0]["src_map"]
    with pytest.raises(ValueError, match="malformed"):
        from_json(bad)
    bad = json.loads(json.dumps(good))
    bad["state"]["nodes"][1]["offset"] = 5
    with pytest.raises(ValueError, match="offset"):
        from_json(bad)


def test_graphml_readable_by_networkx(rich_file, tmp_path):
    out = tmp_path / "g.graphml"
    r = run("compile", rich_file, "-o", str(out))
    assert r.exit_code == 0, r.output
    G = load_ir(rich_file)
    R = nx.read_graphml(out, force_multigraph=True)
    assert list(R.nodes) == stalks(G)
    assert sorted(R.edges(keys=True)) == sorted(G.edges(keys=True))
    for v in stalks(G):
        for k in ("dim", "offset", "anchor"):
            assert R.nodes[v][k] == G.nodes[v][k]
    for u, v, name, d in edges(G):
        e = R.edges[u, v, name]
        assert (e["kind"], e["dim"], e["weight"], e["bias"] or None) == (d["kind"], d["dim"], d["weight"], d["bias"])
        assert map_from_json(json.loads(e["src_map_json"])) == d["src_map"]
        assert map_from_json(json.loads(e["dst_map_json"])) == d["dst_map"]
    assert R.edges["v", "w", "e2"]["src_map"] == "[[1,0.5],[0,-1]]"
    assert R.nodes["u"]["pinned"] == "value" and json.loads(R.nodes["u"]["pins"])[0]["indices"] == [0, 2]
    H = json.loads(R.graph["parameter_sheaf"])
    assert sorted(e["kind"] for e in H["edges"]) == ["reluctance", "reluctance", "tie"]
    assert R.graph["name"] == "rich"


def test_dot_has_every_vertex_and_edge(rich_file, tmp_path):
    out = tmp_path / "g.dot"
    r = run("compile", rich_file, "-o", str(out))
    assert r.exit_code == 0, r.output
    text = out.read_text()
    G = load_ir(rich_file)
    assert text.count("{") == text.count("}")
    node_lines = {m.group(1): m.group(2) for m in re.finditer(r'^  "([^"]+)" \[(.*)\];$', text, flags=re.M)}
    assert set(node_lines) == set(G.nodes)
    for u, v, name, d in edges(G):
        (line,) = [ln for ln in text.splitlines() if f'"{u}" -> "{v}"' in ln and f'key="{name}"' in ln]
        assert f"{name}: {d['kind']}" in line and f"w={d['weight']:g}" in line
    assert 'fillcolor' in node_lines["u"] and 'dashed' in node_lines["u"]  # a partial constant pin
    assert 'fillcolor' not in node_lines["v"]
    assert 'shape="box"' in node_lines["pin_w"]
    assert "cluster_parameters" in text and '"param:W" -> "param:__zero__"' in text


def test_dot_paraboloid_pins_styled(tmp_path):
    out = tmp_path / "p.gv"
    assert run("compile", PARABOLOID, "-o", str(out)).exit_code == 0
    text = out.read_text()
    assert re.search(r'^  "x" \[.*fillcolor="#b7e4c7".*pinned="input"', text, flags=re.M)
    assert re.search(r'^  "y" \[.*fillcolor="#ffd8a8".*pinned="target"', text, flags=re.M)
    assert 'label="aff1: affine\\nW1 | I + b1\\nd=30, w=1"' in text


def test_dot_quotes_odd_names():
    from sheafdsl.ir import Identity, add_edge, add_stalk, new_sheaf

    G = new_sheaf('we"ird')
    add_stalk(G, 'a"b', 1)
    add_stalk(G, "c\\d", 1)
    add_edge(G, "e", 'a"b', "c\\d", src_map=Identity(), dst_map=Identity())
    text = export.dumps_dot(G)
    assert '"a\\"b" -> "c\\\\d"' in text and 'digraph "we\\"ird"' in text


# ----------------------------------------------------------------------------------------------
# writes are atomic; errors have exit codes


def test_write_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "g.json"
    out.write_text("old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        export.write(load_ir(PARABOLOID), out)
    assert out.read_text() == "old"
    assert os.listdir(tmp_path) == ["g.json"]  # no temporary file left behind
    monkeypatch.undo()
    export.write(load_ir(PARABOLOID), out)
    assert load_json(out).graph["name"] == "paraboloid" and os.listdir(tmp_path) == ["g.json"]


def test_unknown_extension_is_a_usage_error(tmp_path):
    out = tmp_path / "g.txt"
    r = run("compile", PARABOLOID, "-o", str(out))
    assert r.exit_code == 2
    assert ".json, .graphml or .dot" in r.output
    assert not out.exists()


def test_unwritable_output_exits_1(tmp_path):
    r = run("compile", PARABOLOID, "-o", str(tmp_path / "missing" / "g.json"))
    assert r.exit_code == 1
    assert "E530" in r.output and "Traceback" not in r.output


def test_bad_model_exits_1(tmp_path):
    bad = tmp_path / "bad.sheaf"
    bad.write_text("sheaf b\nstalk x : 2\nedge e : x -> q identity\n")
    r = run("compile", str(bad))
    assert r.exit_code == 1
    assert "E202" in r.output and "Traceback" not in r.output


def test_bad_model_json_through_the_entry_point(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.sheaf"
    bad.write_text("sheaf b\nstalk x : 2\nedge e : x -> q identity\n")
    p = subprocess.run([sys.executable, "-m", "sheafdsl.cli.main", "compile", str(bad), "--json"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    out = json.loads(p.stdout)
    assert out["ok"] is False and out["diagnostics"][0]["code"] == "E202"
