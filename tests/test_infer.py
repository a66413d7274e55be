"""``sheaf infer``: single inputs, batches (.npy/.csv/JSON), --pin, --params, --json, and bad input (exit 1)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pytest
from click.testing import CliRunner

from sheafdsl.cli.main import cli
from sheafdsl.frontend import load_file
from sheafdsl.ir import from_model
from sheafdsl.lowering import init_params

ROOT = Path(__file__).resolve().parents[1]
PARA = str(ROOT / "models" / "paraboloid.sheaf")
TINY = str(ROOT / "models" / "tiny.sheaf")


def run(*args):
    argv = ["infer", *args]
    with patch.object(sys, "argv", ["sheaf", *argv]):  # the CLI picks JSON errors from argv
        res = CliRunner().invoke(cli, argv)
    return res.exit_code, res.stdout, res.stderr if hasattr(res, "stderr") else ""


def forward(P, x):
    return np.maximum(x @ P["W1"].T + P["b1"], 0) @ P["W2"].T + P["b2"]


def tiny_params():
    return init_params(from_model(load_file(TINY)), 0)


def test_single_input_json():
    code, out, _ = run(TINY, "--input", "[1, 2]", "--json")
    assert code == 0
    d = json.loads(out)
    assert set(d) >= {"stalks", "energy", "converged", "iterations"}
    assert d["converged"] is True and d["energy"] == 0.0 and d["iterations"] == 1
    np.testing.assert_allclose(d["stalks"]["y"], forward(tiny_params(), np.array([[1.0, 2.0]]))[0], atol=1e-12)
    assert d["stalks"]["x"] == [1.0, 2.0]


def test_single_input_table():
    code, out, _ = run(TINY, "--input", "[1, 2]")
    assert code == 0
    assert "z1" in out and "a1" in out and "converged" in out and "input" in out


@pytest.mark.parametrize("solver", ["exact", "cg", "diffusion"])
def test_solvers_and_seed(solver):
    code, out, _ = run(PARA, "--input", "[0.5, -1]", "--json", "--solver", solver, "--seed", "3")
    assert code == 0
    P = init_params(from_model(load_file(PARA)), 3)
    np.testing.assert_allclose(json.loads(out)["stalks"]["y"], forward(P, np.array([[0.5, -1.0]]))[0], atol=1e-7)


def test_batch_from_npy_and_csv(tmp_path):
    x = np.random.default_rng(0).uniform(-2, 2, size=(7, 2))
    np.save(tmp_path / "x.npy", x)
    np.savetxt(tmp_path / "x.csv", x, delimiter=",", header="x1,x2", comments="")
    P = tiny_params()
    for f in ("x.npy", "x.csv"):
        code, out, _ = run(TINY, "--input", str(tmp_path / f), "--json")
        assert code == 0, out
        d = json.loads(out)
        assert d["batch"] == 7 and len(d["energy"]) == 7 and all(d["converged"])
        np.testing.assert_allclose(d["stalks"]["y"], forward(P, x), atol=1e-12)
    code, out, _ = run(TINY, "--input", str(tmp_path / "x.npy"))
    assert code == 0 and "7 examples" in out


def test_batch_inline_json_and_named_input():
    code, out, _ = run(TINY, "--input", '[[1, 2], [3, -4]]', "--json")
    assert code == 0 and len(json.loads(out)["stalks"]["y"]) == 2
    code, out, _ = run(TINY, "--input", '{"x": [1, 2]}', "--json")
    assert code == 0 and json.loads(out)["stalks"]["x"] == [1.0, 2.0]


def test_pin_makes_the_two_sided_equilibrium():
    code, out, _ = run(TINY, "--input", "[1, 2]", "--pin", "y=[0.5]", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["stalks"]["y"] == [0.5] and d["energy"] > 0 and d["converged"]
    # pinning a hidden coordinate moves what is downstream of it
    code, out2, _ = run(TINY, "--input", "[1, 2]", "--pin", "a1[1]=3", "--json")
    d2 = json.loads(out2)
    assert code == 0 and d2["stalks"]["a1"][1] == 3.0
    code, out3, _ = run(TINY, "--input", "[1, 2]", "--json")
    assert abs(d2["stalks"]["y"][0] - json.loads(out3)["stalks"]["y"][0]) > 0.5


def test_params_file(tmp_path):
    G = from_model(load_file(PARA))
    P = init_params(G, 7)
    np.savez(tmp_path / "p.npz", **P, **{"state/step": np.array(3)})
    code, out, _ = run(PARA, "--input", "[0.5, -1]", "--params", str(tmp_path / "p.npz"), "--json")
    assert code == 0
    np.testing.assert_allclose(json.loads(out)["stalks"]["y"], forward(P, np.array([[0.5, -1.0]]))[0], atol=1e-12)
    bad = dict(P)
    bad["W1"] = np.zeros((2, 30))
    np.savez(tmp_path / "bad.npz", **bad)
    code, out, _ = run(PARA, "--input", "[0.5, -1]", "--params", str(tmp_path / "bad.npz"), "--json")
    assert code == 1 and json.loads(out)["diagnostics"][0]["code"] == "E524"
    np.savez(tmp_path / "typo.npz", **P, W3=np.zeros(1))
    code, out, _ = run(PARA, "--input", "[0.5, -1]", "--params", str(tmp_path / "typo.npz"), "--json")
    assert code == 1 and "W3" in out


@pytest.mark.parametrize("args, code_", [
    (["--input", "[0.5]"], "E521"),  # wrong length
    (["--input", "[0.5, "], "E520"),  # not JSON
    (["--input", '["a", 1]'], "E520"),  # not numbers
    (["--input", "[[1, 2], [3]]"], "E520"),  # ragged batch
    (["--input", "[1, NaN]"], "E520"),
    (["--input", '{"z": [1, 2]}'], "E521"),
    (["--input", "missing.npy"], "E522"),
    ([], "E521"),  # no --input for a model with an input stalk
    (["--input", "[1, 2]", "--pin", "y"], "E523"),
    (["--input", "[1, 2]", "--pin", "q=[1]"], "E523"),
    (["--input", "[1, 2]", "--pin", "y=[1, 2]"], "E523"),
    (["--input", "[1, 2]", "--pin", "z1[7]=1"], "E523"),
    (["--input", "[1, 2]", "--pin", "x[0]=1"], "E523"),
    (["--input", "[1, 2]", "--params", "nope.npz"], "E524"),
])
def test_bad_input_is_a_clear_error(args, code_):
    code, out, _ = run(TINY, *args, "--json")
    assert code == 1, out
    d = json.loads(out)
    assert d["ok"] is False and d["diagnostics"][0]["code"] == code_


def test_bad_input_without_json_exits_1_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "sheafdsl.cli.main", "infer", TINY, "--input", "[0.5]"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1
    assert "error[E521]" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    proc = subprocess.run([sys.executable, "-m", "sheafdsl.cli.main", "infer", TINY, "--input", "[1, 2]",
                           "--solver", "newton"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2  # a usage error (click)


def test_singular_model_is_reported(tmp_path):
    path = tmp_path / "loop.sheaf"
    path.write_text("sheaf loop\nstalk a : 1\nstalk b : 1\nedge ab : a -> b identity\nedge ba : b -> a identity\n")
    code, out, _ = run(str(path), "--json")
    assert code == 1
    d = json.loads(out)["diagnostics"][0]
    assert d["code"] == "E504" and "a[0]" in d["message"]
