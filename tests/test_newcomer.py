"""What a new user hits first (issue 15, "From the newcomer run"): each item, as a user meets it."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from sheafdsl.cli.main import cli

VALID = "sheaf ok\nstalk x : 1\nstalk y : 1\nedge e : x -> y  identity\n"  # canonical
BROKEN = "sheaf bad\nstalk x : 1\nedge e : x -> nowhere identity\n"
MESSY = "sheaf messy\nstalk   x:1\nstalk y : 1\nedge e : x -> y identity\n"


def run(*args):
    res = CliRunner().invoke(cli, list(args))
    assert "Traceback" not in res.output
    return res


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


# ----------------------------------------------------------------------------------------------
# check and fmt take many files


def test_check_reports_each_of_many_files(tmp_path):
    a, b, c = write(tmp_path, "a.sheaf", VALID), write(tmp_path, "b.sheaf", BROKEN), write(tmp_path, "c.sheaf", VALID)
    res = run("check", a, b, c)
    assert res.exit_code == 1
    assert f"{a}: ok" in res.stdout and f"{c}: ok" in res.stdout  # the broken one does not stop the others
    assert f"{b}: 1 error" in res.stderr and "E202" in res.stderr and "3 files: 1 with errors" in res.stderr
    assert run("check", a, c).exit_code == 0
    out = json.loads(run("check", "--json", a, b).stdout)
    assert out["ok"] is False and [f["file"] for f in out["files"]] == [a, b]
    assert [f["ok"] for f in out["files"]] == [True, False] and out["files"][1]["diagnostics"][0]["code"] == "E202"
    one = json.loads(run("check", "--json", a).stdout)  # one file: one object, as before
    assert one == {"ok": True, "diagnostics": []}


def test_check_every_shipped_model_in_one_call():
    import glob

    files = sorted(glob.glob("models/*.sheaf"))
    res = run("check", *files)
    assert res.exit_code == 0, res.output
    assert all(f"{f}: ok" in res.stdout for f in files)


def test_fmt_checks_and_rewrites_many_files(tmp_path):
    clean, messy, bad = (write(tmp_path, "clean.sheaf", VALID), write(tmp_path, "messy.sheaf", MESSY),
                         write(tmp_path, "bad.sheaf", "sheaf t\nstalk x : : 1\n"))
    res = run("fmt", "--check", clean, messy, bad)
    assert res.exit_code == 1
    assert f"{clean}: canonical" in res.stdout and f"{messy}: not in canonical layout" in res.stderr
    assert "E101" in res.stderr and "3 files: 2 not canonical or not parsed" in res.stderr
    out = json.loads(run("fmt", "--check", "--json", clean, messy).stdout)
    assert out["ok"] is False and [f["canonical"] for f in out["files"]] == [True, False]
    res = run("fmt", "-w", clean, messy)
    assert res.exit_code == 0 and f"{messy}: rewritten" in res.stderr and f"{clean}: unchanged" in res.stderr
    assert run("fmt", "--check", clean, messy).exit_code == 0
    res = run("fmt", clean, messy)  # printing two files into one stream is not formatting: a usage error
    assert res.exit_code == 2 and "--check" in res.output


# ----------------------------------------------------------------------------------------------
# messages


def test_an_identity_edge_reads_right(tmp_path):
    res = run("check", write(tmp_path, "m.sheaf", "sheaf t\nstalk x : 1\nstalk y : 2\nedge e : x -> y identity\n"))
    assert res.exit_code == 1 and "an identity edge needs stalks of equal dimension" in res.stderr
    assert "a identity" not in res.stderr


def test_license_file_matches_pyproject():
    import tomllib

    meta = tomllib.loads(open("pyproject.toml").read())["project"]
    assert meta["license"] == {"text": "MIT"}
    assert open("LICENSE").read().startswith("MIT License")


def test_docs_hold_what_the_code_cites():
    """No docstring, model or doc cites a DESIGN.md (it is not in the repository); docs/maths.md and
    docs/tasks.md exist and hold the sections they are cited for."""
    import pathlib
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True).stdout.split()
    if not tracked:  # an sdist or installed copy: check the files that are there
        tracked = [str(p) for p in pathlib.Path(".").rglob("*") if p.suffix in (".py", ".md", ".sheaf")]
    cited = [f for f in tracked if f.endswith((".py", ".md", ".sheaf")) and f != "PROTOCOL.md"
             and pathlib.Path(f).is_file() and "DESIGN" in pathlib.Path(f).read_text(errors="replace")
             and not f.endswith("test_newcomer.py")]
    assert cited == []
    assert "Two-sided pinning and training" in open("docs/maths.md").read()
    assert "Blob centres and covariances" in open("docs/tasks.md").read()
