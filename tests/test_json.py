"""One JSON schema for every command's ``--json`` output (docs/cli.md), a test per command.

Every output is exactly one line of strict JSON on stdout (no NaN/Infinity) holding an object with
``ok`` (true exactly when the exit status is 0) and ``diagnostics`` (a list of diagnostic objects;
``line``/``col`` null when a diagnostic is not tied to a place), then the command's own fields.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sheafdsl.cli.main import cli

MODELS = Path(__file__).resolve().parents[1] / "models"
TINY = str(MODELS / "tiny.sheaf")
PARA = str(MODELS / "paraboloid.sheaf")
DIAG_KEYS = {"file", "line", "col", "severity", "code", "message"}


def _strict(text: str):
    def bad(c):
        raise AssertionError(f"not strict JSON: {c}")

    return json.loads(text, parse_constant=bad)


def run_json(*args, cwd=None) -> tuple[int, dict]:
    res = CliRunner().invoke(cli, [*args, "--json"])
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stdout
    out = _strict(lines[0])
    check_envelope(out)
    assert out["ok"] == (res.exit_code == 0), (res.exit_code, out)
    return res.exit_code, out


def check_envelope(out) -> None:
    assert isinstance(out, dict) and list(out)[:2] == ["ok", "diagnostics"]
    assert isinstance(out["ok"], bool) and isinstance(out["diagnostics"], list)
    for d in out["diagnostics"]:
        assert DIAG_KEYS <= set(d) <= DIAG_KEYS | {"hint"}
        assert d["severity"] in ("error", "warning") and d["code"][0] in "EW" and d["message"]
        placed = isinstance(d["line"], int) and d["line"] >= 1 and isinstance(d["col"], int) and d["col"] >= 1
        assert placed or (d["line"] is None and d["col"] is None), d


def test_check(tmp_path):
    code, out = run_json("check", TINY)
    assert code == 0 and out["diagnostics"] == [] and out["file"] == TINY
    bad = tmp_path / "bad.sheaf"
    bad.write_text("sheaf b\nstalk x : 2\nedge e : x -> q identity\n")
    code, out = run_json("check", str(bad))
    assert code == 1 and [d["code"] for d in out["diagnostics"]] == ["E202"] and out["diagnostics"][0]["line"] == 3


def test_fmt(tmp_path):
    code, out = run_json("fmt", TINY)
    assert code == 0 and out["text"] and out["canonical"] in (True, False)
    broken = tmp_path / "broken.sheaf"
    broken.write_text("sheaf b\nstalk x : [\n")
    code, out = run_json("fmt", str(broken))
    assert code == 1 and out["diagnostics"][0]["code"].startswith("E1")


def test_compile():
    code, out = run_json("compile", PARA)
    assert code == 0 and out["vertices"] == 5 and out["edges"] == 4


def test_infer():
    code, out = run_json("infer", PARA, "--input", "[0.5, -1.0]")
    assert code == 0 and len(out["stalks"]["y"]) == 1 and out["converged"] is True
    code, out = run_json("infer", PARA, "--input", "[0.5]")
    assert code == 1 and out["diagnostics"][0]["code"] == "E521"
    d = out["diagnostics"][0]
    assert d["file"] == "<command line>" and d["line"] is None and d["col"] is None  # no place in the model


def test_spectrum():
    code, out = run_json("spectrum", PARA, "--samples", "3")
    assert code == 0 and out["n_samples"] == 3 and out["lambda_min"] > 0


def test_spectrum_singular_is_null_not_infinity():
    code, out = run_json("spectrum", str(MODELS / "unconstrained.sheaf"), "--samples", "2")
    assert code == 0 and out["singular"] is True and out["kappa"] is None


def test_verify():
    code, out = run_json("verify", TINY)
    assert code == 0 and {c["status"] for c in out["claims"]} <= {"proved", "checked", "failed", "skipped"}


def test_verify_failed_claim_is_not_ok():
    code, out = run_json("verify", str(MODELS / "unconstrained.sheaf"))
    assert code == 1 and out["ok"] is False and any(c["status"] == "failed" for c in out["claims"])


def test_train_and_diagnose(tmp_path):
    run = tmp_path / "run"
    code, out = run_json("train", PARA, "--steps", "3", "--out", str(run), "--no-plots")
    assert code == 0 and out["steps"] == 3 and out["trainer"] == "sheaf"
    code, out = run_json("diagnose", str(run), "--no-plot")
    assert code == 0 and out["edges"] and out["plot"] is None
    code, out = run_json("train", PARA, "--steps", "3", "--out", str(run))  # already a run: E630, no place
    assert code == 1 and out["diagnostics"][0]["code"] == "E630" and out["diagnostics"][0]["line"] is None
    code, out = run_json("diagnose", str(tmp_path / "nothing-here"))
    assert code == 1 and out["diagnostics"][0]["code"] == "E635"


def test_linking():
    code, out = run_json("linking", str(MODELS / "hopf_relu.sheaf"), "--link", "hopf", "--points", "32")
    assert code == 0 and out["layers"][0] == {"stalk": "x", "linking": 1, "min_distance": out["layers"][0]["min_distance"]}
    assert all(set(e) == {"stalk", "linking", "min_distance"} for e in out["layers"])
    code, out = run_json("linking", TINY, "--link", "hopf")
    assert code == 1 and [d["code"] for d in out["diagnostics"]] == ["E548"]


def test_paper():
    code, out = run_json("paper", "--list")
    assert code == 0 and isinstance(out["items"], dict)
    code, out = run_json("paper", "no-such-item")
    assert code == 1 and [d["code"] for d in out["diagnostics"]] == ["E660"]


def test_warnings_are_listed_in_the_json():
    code, out = run_json("compile", str(MODELS / "unconstrained.sheaf"))
    assert code == 0 and [d["code"] for d in out["diagnostics"]] == ["W301"]
    assert out["diagnostics"][0]["severity"] == "warning" and out["diagnostics"][0]["line"] >= 1


def test_every_command_is_covered():
    from sheafdsl.cli.main import COMMANDS

    here = Path(__file__).read_text()
    assert all(f'run_json("{c}"' in here for c in COMMANDS), [c for c in COMMANDS if f'run_json("{c}"' not in here]


def test_shell_completion_is_documented_and_works():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    assert "_SHEAF_COMPLETE=bash_source sheaf" in doc
    res = CliRunner().invoke(cli, [], prog_name="sheaf",
                             env={"_SHEAF_COMPLETE": "bash_complete", "COMP_WORDS": "sheaf train --optimizer ",
                                  "COMP_CWORD": "3"})
    assert res.exit_code == 0 and res.output.split() == ["plain,sgd", "plain,momentum", "plain,adam"]
