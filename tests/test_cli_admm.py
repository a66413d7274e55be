"""`sheaf infer --solver admm|admm-local|exact` on consensus problems written in the contract syntax:
the JSON keys, the table, the residual plot, clear errors (exit 1) and `Sheaf.infer(solver=...)`."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from sheafdsl.cli.main import cli

pytest.importorskip("cvxpy")
from test_admm import cvxpy_reference  # noqa: E402

MODEL = """sheaf contract
param Q : 2 x 2 = [[2, 0.5], [0.5, 1]]
stalk a : 2
stalk b : 2
stalk c : 3
stalk m : 1
objective a quadratic Q [1, -1]
objective a box -1 0.5
objective b quadratic [[1, 0], [0, 3]] [-2, 0]
objective b nonneg
objective c simplex
objective c quadratic 1 [-0.2, 0.1, -0.4]
objective m l1 0.5
objective m quadratic 2 [-1]
edge ab : a -> b  maps [[1, 0], [0, 1]] | [[1, 0], [0, 2]] hard
edge bc : b -> c  maps [[1, 0], [0, 1]] | [[1, 0, 0], [0, 1, 0]]
edge cm : c -> m  maps [[1, 1, 1]] | 2 weight 0.5
"""

INFEASIBLE = """sheaf infeasible
stalk a : 1
stalk b : 1
edge ab : a -> b  maps 1 | 1 hard
objective a box 0 1
objective b box 2 3
"""


def write(tmp_path, text, name="m.sheaf"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def run(*args):
    r = CliRunner().invoke(cli, list(args))
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    return r


def _reference(path):
    import sheafdsl as sd

    sh = sd.load(path)
    return cvxpy_reference(sh.graph, sh.init_params(seed=0))


@pytest.mark.parametrize("solver", ["admm", "admm-local"])
def test_infer_json_matches_cvxpy(tmp_path, solver):
    path = write(tmp_path, MODEL)
    r = run("infer", path, "--solver", solver, "--rtol", "1e-10", "--atol", "1e-12", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["ok"] and out["converged"] is True and out["solver"] == solver
    assert {"objective", "primal_residual", "dual_residual", "stalks", "iterations", "energy"} <= set(out)
    ref, val = _reference(path)
    for v, x in ref.items():
        assert np.allclose(out["stalks"][v], x, atol=1e-6), v
    assert abs(out["objective"] - val) < 1e-6
    assert out["primal_residual"] <= 1e-6 and out["dual_residual"] <= 1e-6


def test_converged_needs_both_residuals(tmp_path):
    path = write(tmp_path, MODEL)
    r = run("infer", path, "--solver", "admm", "--maxiter", "3", "--json")
    assert r.exit_code == 0
    out = json.loads(r.stdout)
    assert out["converged"] is False and out["iterations"] == 3
    assert "did not converge" in r.stderr


def test_table_and_plot(tmp_path):
    path = write(tmp_path, MODEL)
    png = tmp_path / "res.png"
    r = run("infer", path, "--solver", "admm", "--rho", "2", "--plot", str(png))
    assert r.exit_code == 0, r.output
    assert "minimiser" in r.output and "objective" in r.output and "primal residual" in r.output
    assert "simplex" in r.output and "box [-1, 0.5]" in r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_exact_on_quadratics_and_refusal_otherwise(tmp_path):
    quad = MODEL.replace("objective a box -1 0.5\n", "").replace("objective b nonneg\n", "") \
        .replace("objective c simplex\n", "").replace("objective m l1 0.5\n", "")
    path = write(tmp_path, quad)
    ex = json.loads(run("infer", path, "--solver", "exact", "--json").stdout)
    ad = json.loads(run("infer", path, "--solver", "admm", "--rtol", "1e-10", "--atol", "1e-12", "--json").stdout)
    ref, _ = _reference(path)
    for v, x in ref.items():
        assert np.allclose(ex["stalks"][v], x, atol=1e-7) and np.allclose(ad["stalks"][v], x, atol=1e-6)
    r = run("infer", write(tmp_path, MODEL, "full.sheaf"), "--solver", "exact")
    assert r.exit_code == 1 and "E517" in r.output and "admm" in r.output


@pytest.mark.parametrize("solver,code", [("admm", "E515"), ("admm-local", "E515"), ("exact", "E517"),
                                         ("cg", "E513"), ("diffusion", "E513")])
def test_infeasible_and_refused_exit_1(tmp_path, solver, code):
    r = run("infer", write(tmp_path, INFEASIBLE), "--solver", solver)
    assert r.exit_code == 1 and code in r.output, r.output
    r = run("infer", write(tmp_path, INFEASIBLE), "--solver", solver, "--json")
    out = json.loads(r.stdout)
    assert r.exit_code == 1 and not out["ok"] and out["diagnostics"][0]["code"] == code


@pytest.mark.parametrize("args", [["--rho", "0"], ["--rho", "-1"], ["--atol", "-1"], ["--solver", "exact", "--plot", "x.png"],
                                  ["--solver", "cg", "--rho", "1"]])
def test_bad_options_exit_1(tmp_path, args):
    args = list(args)
    if "--solver" not in args:
        args = ["--solver", "admm"] + args
    r = run("infer", write(tmp_path, MODEL), *args)
    assert r.exit_code == 1 and "E519" in r.output, r.output


MODELS = os.path.join(os.path.dirname(__file__), "..", "models")


@pytest.mark.parametrize("name", ["sensor_fusion", "formation", "distribution"])
def test_shipped_models_solve_and_agree(name):
    path = os.path.join(MODELS, f"{name}.sheaf")
    ref, _ = _reference(path)
    for solver in ("admm", "admm-local"):
        out = json.loads(run("infer", path, "--solver", solver, "--rtol", "1e-10", "--atol", "1e-12", "--json").stdout)
        assert out["converged"] is True
        for v, x in ref.items():
            assert np.allclose(out["stalks"][v], x, atol=1e-6), (solver, v)


def test_api_infer_with_admm(tmp_path):
    import sheafdsl as sd

    sh = sd.loads(MODEL)
    r = sh.infer(solver="admm", rtol=1e-10, atol=1e-12, rho=0.5)
    ref, val = cvxpy_reference(sh.graph, sh.init_params(seed=0))
    assert bool(r.converged[0]) and abs(float(r.objective[0]) - val) < 1e-6
    for v, x in ref.items():
        assert np.allclose(r.stalks[v][0], x, atol=1e-6)
    assert r.to_json()["primal_residual"] <= 1e-6


@pytest.mark.parametrize("solver,code,line", [("admm", "E515", 4), ("admm-local", "E515", 4), ("exact", "E517", 5),
                                              ("cg", "E513", 5)])
def test_consensus_errors_point_at_their_statement(tmp_path, solver, code, line):
    """The solvers' errors carry a span: the hard edge that cannot hold (E515), the first term exact cannot take
    (E517), the first objective of a problem cg does not solve (E513): file:line:col, the line, a caret."""
    path = write(tmp_path, INFEASIBLE)
    r = run("infer", path, "--solver", solver)
    d = json.loads(run("infer", path, "--solver", solver, "--json").stdout)["diagnostics"][0]
    assert (d["code"], d["file"], d["line"]) == (code, path, line) and d["col"] >= 1
    assert r.exit_code == 1 and f"{path}:{line}:{d['col']}: error[{code}]" in r.output, r.output
    assert INFEASIBLE.split("\n")[line - 1] in r.output and "^" in r.output


def test_infeasible_up_front_points_at_the_box(tmp_path):
    """E514 (an input value outside its stalk's box: only the data can say) at the box it leaves."""
    text = "sheaf pinned\nstalk a : 1\nstalk b : 1\nedge ab : a -> b  maps 1 | 1\nobjective b box 0 1\n" \
           "objective a quadratic 1 0\npin b = input\n"
    path = write(tmp_path, text)
    r = run("infer", path, "--solver", "admm", "--input", '{"b": [2.0]}')
    assert r.exit_code == 1 and f"{path}:5:" in r.output and "error[E514]" in r.output, r.output
    assert "objective b box 0 1" in r.output and "^" in r.output


@pytest.mark.parametrize("command", ["spectrum", "diagnose"])
def test_spectrum_and_diagnose_refuse_a_consensus_problem(tmp_path, command):
    import sheafdsl as sd
    from sheafdsl.errors import SheafError

    path = write(tmp_path, MODEL)
    r = run(command, path)
    assert r.exit_code == 1 and f"{path}:7:" in r.output and "error[E591]" in r.output, r.output
    assert "sheaf verify" in r.output and "--solver admm" in r.output
    d = json.loads(run(command, path, "--json").stdout)["diagnostics"][0]
    assert d["code"] == "E591" and d["line"] == 7
    with pytest.raises(SheafError) as e:
        getattr(sd.load(path), command)()
    assert e.value.codes == ["E591"]
