"""`sheaf check`: exit codes 0/1/2, the --json schema, and no traceback for any input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from sheafdsl.cli.main import cli

VALID = "sheaf t\nstalk x : 2\nstalk y : 2\nedge e : x -> y identity\npin x = input\n"
INVALID = "sheaf t\nstalk x : 2\nstalk y : 2\nedge e : x -> yy identity\nstalk q : 0\n"
WARNING = "sheaf t\nstalk x : 2\n"
SYNTAX = "sheaf t\nstalk x : : 2\n"


def write(tmp_path, text, name="m.sheaf", mode="w"):
    p = tmp_path / name
    if mode == "wb":
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return str(p)


def run(*args):
    r = CliRunner().invoke(cli, list(args))
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    return r


def check_schema(out: dict) -> None:
    assert set(out) == {"ok", "diagnostics", "file"} and isinstance(out["ok"], bool)
    for d in out["diagnostics"]:
        assert {"file", "line", "col", "severity", "message", "code"} <= set(d) <= \
            {"file", "line", "col", "severity", "message", "code", "hint"}
        assert (isinstance(d["line"], int) and isinstance(d["col"], int)) or d["line"] is d["col"] is None
        assert d["severity"] in ("error", "warning") and isinstance(d["message"], str)


def test_valid_file_exits_0(tmp_path):
    path = write(tmp_path, VALID)
    r = run("check", path)
    assert r.exit_code == 0 and r.output.strip() == f"{path}: ok"


def test_warnings_exit_0_and_are_shown(tmp_path):
    r = run("check", write(tmp_path, WARNING))
    assert r.exit_code == 0 and "warning[W301]" in r.output and "ok (1 warning)" in r.output


def test_errors_exit_1_with_every_error(tmp_path):
    path = write(tmp_path, INVALID)
    r = run("check", path)
    assert r.exit_code == 1
    assert f"{path}:4:15: error[E202]: unknown stalk `yy`" in r.output
    assert f"{path}:5:11: error[E210]" in r.output
    assert "hint: did you mean `y`?" in r.output and f"{path}: 2 errors" in r.output


def test_syntax_error_exits_1(tmp_path):
    r = run("check", write(tmp_path, SYNTAX))
    assert r.exit_code == 1 and "2:11: error[E101]: unexpected `:`" in r.output


@pytest.mark.parametrize("text, ok, codes", [
    (VALID, True, []), (WARNING, True, ["W301"]), (INVALID, False, ["E202", "E210"]), (SYNTAX, False, ["E101"]),
    ("", False, ["E104"]),
])
def test_json_schema(tmp_path, text, ok, codes):
    path = write(tmp_path, text)
    r = run("check", "--json", path)
    assert r.exit_code == (0 if ok else 1)
    out = json.loads(r.output)
    check_schema(out)
    assert out["ok"] is ok and [d["code"] for d in out["diagnostics"]] == codes
    assert all(d["file"] == path for d in out["diagnostics"])


def test_json_for_binary_and_missing_files(tmp_path):
    r = run("check", "--json", write(tmp_path, bytes(range(256)), mode="wb"))
    out = json.loads(r.output)
    check_schema(out)
    assert r.exit_code == 1 and [d["code"] for d in out["diagnostics"]] == ["E103"]
    r = run("check", "--json", str(tmp_path / "missing.sheaf"))
    out = json.loads(r.output)
    check_schema(out)
    assert r.exit_code == 1 and out["diagnostics"][0]["code"] == "E107"


@pytest.mark.parametrize("args", [["check"], ["check", "--bogus", "x.sheaf"], ["chekc", "x"]])
def test_usage_errors_exit_2(args):
    r = run(*args)
    assert r.exit_code == 2


def test_directory_is_a_usage_error(tmp_path):
    assert run("check", str(tmp_path)).exit_code == 2


@pytest.mark.parametrize("data", [
    b"", b"\x00\x01\x02", bytes(range(256)) * 4, b"sheaf t\n" + b"[" * 5000, b"sheaf t\nstalk x : " + b"9" * 400,
    b"sheaf t\nstalk x : 2\npin x = nan\n", "sheaf \u00e9\n".encode(), b"\xef\xbb\xbf", b"sheaf t\r\n\r\n",
])
def test_no_traceback_for_junk(tmp_path, data):
    r = run("check", write(tmp_path, data, mode="wb"))
    assert r.exit_code in (0, 1)
    assert "internal error" not in r.output


def test_real_process_exit_codes_and_streams(tmp_path):
    """Through the installed console entry point: stdout/stderr split, exit codes, no traceback."""
    exe = [sys.executable, "-m", "sheafdsl.cli.main"]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    ok = subprocess.run(exe + ["check", write(tmp_path, VALID)], capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and ok.stdout.endswith(": ok\n") and ok.stderr == ""
    bad = subprocess.run(exe + ["check", write(tmp_path, INVALID, "bad.sheaf")], capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and bad.stdout == "" and "error[E202]" in bad.stderr
    js = subprocess.run(exe + ["check", "--json", write(tmp_path, INVALID, "bad.sheaf")], capture_output=True,
                        text=True, env=env)
    assert js.returncode == 1 and json.loads(js.stdout)["ok"] is False
    usage = subprocess.run(exe + ["check"], capture_output=True, text=True, env=env)
    assert usage.returncode == 2
    for p in (ok, bad, js, usage):
        assert "Traceback" not in p.stdout + p.stderr
