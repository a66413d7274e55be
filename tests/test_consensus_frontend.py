"""Consensus problems in the language: `objective` statements and `hard` edges, from text to the IR.

Each diagnostic's position is in test_diagnostics.py (CASES); here, what a valid file means (the checked
model and the IR it builds), the formatter's round trip, the exports, and that `sheaf train` refuses a
consensus problem.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

from sheafdsl.errors import SheafError
from sheafdsl.frontend import check_diagnostics, load_text, parse_text
from sheafdsl.frontend.formatter import format_module
from sheafdsl.frontend.model import ObjectiveData
from sheafdsl.ir import export, from_model, is_consensus, objectives
from sheafdsl.testing.source import consensus_sources, objective_decls

CONTRACT = """sheaf contract
param Q : 2 x 2 = [[2, 1], [1, 2]]
param q : 2 = [1, -1]
stalk u : 2
stalk v : 2
stalk w : 3
objective u quadratic Q q        # f(x) = ½ xᵀQx + qᵀx
objective v quadratic [[1, 0], [0, 3]] [0.5, 0]
objective u nonneg
objective v box -1 [2, inf]
objective w simplex
objective w l1 0.25
edge uv : u -> v maps [[1, 0], [0, 2]] | 1 hard
edge vw : v -> w maps [[1, 0], [0, 1], [1, 1]] | 1 weight 2
pin v[1] = 0.5
"""


def codes(src: str) -> list[str]:
    try:
        return [d.code for d in check_diagnostics(parse_text(src))]
    except SheafError as exc:
        return exc.codes


def test_the_contract_syntax_checks_into_objectives_and_a_hard_edge():
    m = load_text(CONTRACT)
    assert m.is_consensus
    assert [(o.stalk, o.kind) for o in m.objectives] == [
        ("u", "quadratic"), ("v", "quadratic"), ("u", "nonneg"), ("v", "box"), ("w", "simplex"), ("w", "l1")]
    qu, qv, _, box, _, l1 = m.objectives
    assert qu.Q == ObjectiveData(param="Q") and qu.q == ObjectiveData(param="q")
    assert qv.Q.value == ((1.0, 0.0), (0.0, 3.0)) and qv.q.value == (0.5, 0.0)
    assert box.lo == (-1.0, -1.0) and box.hi == (2.0, float("inf"))
    assert l1.lam == 0.25
    assert m.edges["uv"].hard and not m.edges["vw"].hard and m.edges["vw"].weight == 2.0


def test_the_ir_holds_the_objectives_and_the_hard_edge():
    G = from_model(load_text(CONTRACT))
    assert is_consensus(G)
    assert [o.kind for o in objectives(G, "u")] == ["quadratic", "nonneg"]
    assert objectives(G, "u")[0].Q == "Q" and objectives(G, "u")[0].q == "q"
    assert np.array_equal(objectives(G, "v")[0].Q, [[1, 0], [0, 3]])
    assert np.array_equal(objectives(G, "v")[1].hi, [2, np.inf])
    assert G.edges["u", "v", "uv"]["hard"] and not G.edges["v", "w", "vw"]["hard"]
    assert objectives(G, "u")[0].span.line == 7  # where the statement is, for the solver's errors


def test_a_plain_sheaf_is_not_a_consensus_problem():
    m = load_text("sheaf t\nnetwork n : 2 -> 3 -> 1\n")
    assert not m.is_consensus and not is_consensus(from_model(m)) and m.objectives == []


def test_number_shorthands_broadcast():
    m = load_text("sheaf t\nstalk x : 3\nobjective x quadratic 2 1\nobjective x box 0 1\n")
    Q, box = m.objectives
    assert Q.Q.value == ((2.0, 0.0, 0.0), (0.0, 2.0, 0.0), (0.0, 0.0, 2.0)) and Q.q.value == (1.0, 1.0, 1.0)
    assert box.lo == (0.0,) * 3 and box.hi == (1.0,) * 3
    m = load_text("sheaf t\nstalk x : 2\nobjective x quadratic [[1, 0], [0, 1]]\n")
    assert m.objectives[0].q.value == (0.0, 0.0)  # q may be left out


def test_psd_is_decided_on_the_decimals_as_written():
    # [[0.1, 0.3], [0.3, 0.9]] is singular PSD as written; its binary rounding has det < 0 in exact arithmetic
    ok = "sheaf t\nstalk x : 2\nobjective x quadratic [[0.1, 0.3], [0.3, 0.9]]\n"
    assert "E294" not in codes(ok)
    bad = "sheaf t\nstalk x : 2\nobjective x quadratic [[0.1, 0.3], [0.3, 0.8999]]\n"
    with pytest.raises(SheafError) as e:
        load_text(bad)
    d = e.value.diagnostics[0]
    assert d.code == "E294" and "v = [" in d.message
    from fractions import Fraction

    v = [Fraction(x) for x in d.message.split("v = [")[1].split("]")[0].split(", ")]
    Q = [[Fraction("0.1"), Fraction("0.3")], [Fraction("0.3"), Fraction("0.8999")]]
    curv = sum(v[i] * Q[i][j] * v[j] for i in range(2) for j in range(2))
    assert curv < 0 and f"vᵀQv = {curv} < 0" in d.message  # the witness, checked exactly


def test_a_literal_parameter_q_is_checked_but_a_random_one_is_left_to_the_values():
    bad = "sheaf t\nstalk x : 2\nparam P : 2 x 2 = [[1, 3], [3, 1]]\nobjective x quadratic P\n"
    assert "E294" in codes(bad)
    random = "sheaf t\nstalk x : 2\nparam P : 2 x 2 init he\nobjective x quadratic P\n"
    assert [c for c in codes(random) if c.startswith("E")] == []


def test_every_error_is_reported_at_once():
    src = ("sheaf t\nstalk x : 2\nstalk y : 2\nobjective x quadratic [[1, 2], [0, 1]]\nobjective y box 2 1\n"
           "objective x l1 -1\nedge e : x -> y identity weight 2 hard\n")
    assert sorted(c for c in codes(src) if c.startswith("E")) == ["E293", "E295", "E296", "E298"]


def test_hard_pins_that_agree_with_a_hard_edge_are_fine():
    src = "sheaf t\nstalk x : 2\nstalk y : 2\nedge e : x -> y maps [[2, 0], [0, 1]] | 1 hard\npin x = [1, 2]\npin y = [2, 2]\n"
    assert codes(src) == []
    # a row with a free coordinate is not decided up front (verify decides the whole system)
    src = "sheaf t\nstalk x : 2\nstalk y : 2\nedge e : x -> y maps [[1, 1], [0, 1]] | 1 hard\npin x[0] = 1\npin y = [5, 2]\n"
    assert codes(src) == []


def test_a_simplex_pinned_to_a_distribution_only_warns():
    src = "sheaf t\nstalk x : 3\nobjective x simplex\npin x = [0.1, 0.2, 0.7]\n"  # 0.1 + 0.2 + 0.7 = 1 exactly as written
    assert codes(src) == ["W310"]


def test_the_formatter_writes_the_canonical_layout():
    src = ("sheaf t\nstalk x:2\nstalk long:2\nobjective x   quadratic [[1,0],[0,1]]   [1,2]  # c\n"
           "objective long box -1 1\nedge e : x -> long maps 1|1   hard\n")
    out = format_module(parse_text(src))
    assert out == ("sheaf t\nstalk x    : 2\nstalk long : 2\nobjective x    quadratic [[1, 0], [0, 1]] [1, 2]  # c\n"
                   "objective long box -1 1\nedge e : x -> long  maps 1 | 1 hard\n")
    assert format_module(parse_text(out)) == out
    # `weight` and `hard` together parse (the checker refuses them) and format in one order
    both = format_module(parse_text("sheaf t\nedge e : x -> y identity hard weight 2\n"))
    assert both.endswith("edge e : x -> y  identity weight 2 hard\n")


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(objective_decls())
def test_each_objective_statement_round_trips(stmt):
    from sheafdsl.frontend import ast as A

    module = A.Module((stmt,))
    assert parse_text(format_module(module)).statements == (stmt,)


@SETTINGS
@given(consensus_sources())
def test_random_consensus_sources_check_format_and_build(src):
    m = load_text(src)
    assert m.is_consensus
    out = format_module(parse_text(src))
    again = load_text(out)
    assert again.objectives == m.objectives and again.edges == m.edges and again.pins == m.pins
    G = from_model(m)
    assert is_consensus(G)
    G2 = export.from_json(json.loads(export.dumps_json(G)))
    assert export.to_json(G2) == export.to_json(G)  # objectives and `hard` survive the JSON round trip


def test_graphml_and_dot_show_objectives_and_hard_edges():
    G = from_model(load_text(CONTRACT))
    import networkx as nx
    import io

    S = nx.read_graphml(io.BytesIO(export.dumps_graphml(G).encode()))
    assert json.loads(S.nodes["v"]["objectives"])[1] == {"kind": "box", "lo": [-1.0, -1.0], "hi": [2.0, "inf"]}
    hard = {d["name"]: d["hard"] for *_, d in S.edges(data=True)}
    assert hard == {"uv": True, "vw": False}
    dot = export.dumps_dot(G)
    assert "f: quadratic + nonneg" in dot and "d=2, hard" in dot
    s = export.summary(G)
    assert (s["consensus"], s["objective_terms"], s["hard_edges"]) == (True, 6, 1)
    assert export.summary(from_model(load_text("sheaf t\nnetwork n : 2 -> 1\n")))["consensus"] is False


def test_sheaf_train_refuses_a_consensus_problem(tmp_path):
    from sheafdsl.cli.main import cli

    path = tmp_path / "c.sheaf"
    path.write_text(CONTRACT)
    res = CliRunner().invoke(cli, ["train", str(path), "--out", str(tmp_path / "run")])
    assert res.exit_code == 1, res.output
    assert "E590" in res.output and "sheaf infer" in res.output and "--solver admm" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "run").exists()
    assert f"{path}:7:1" in res.output  # at the first objective
    res = CliRunner().invoke(cli, ["train", str(path), "--json"])
    assert res.exit_code == 1 and json.loads(res.stdout.strip().splitlines()[-1])["diagnostics"][0]["code"] == "E590"


def test_the_api_loads_a_consensus_model_and_refuses_to_train_it():
    import sheafdsl as sd

    sh = sd.loads(CONTRACT)
    assert sh.is_consensus and [o.kind for o in sh.objectives["w"]] == ["simplex", "l1"]
    with pytest.raises(SheafError) as e:
        sd.train(sh, steps=1)
    assert e.value.codes == ["E590"]


def test_an_oversized_literal_q_is_refused_at_its_statement(monkeypatch):
    from sheafdsl.frontend import checker

    monkeypatch.setattr(checker, "PSD_EXACT_LIMIT", 1)  # the checker leaves it to the IR builder (numpy)
    m = load_text("sheaf t\nstalk x : 2\n\nobjective x quadratic [[1, 2], [2, 1]]\n", "big.sheaf")
    with pytest.raises(SheafError) as e:
        from_model(m)
    d = e.value.diagnostics[0]
    assert (d.code, d.span.line, d.file) == ("E294", 4, "big.sheaf")
