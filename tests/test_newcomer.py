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
    assert one == {"ok": True, "diagnostics": [], "file": a}


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


@pytest.mark.parametrize("src", ["sheaf s\nnetwork mlp : 2 -> 3 -> 1 relu output softmax\n",
                                 "sheaf s\nstalk z : 1\nstalk y : 1\nedge o : z -> y softmax\n"])
def test_a_softmax_of_one_number_is_rejected(tmp_path, src):
    res = run("check", "--json", write(tmp_path, "s.sheaf", src))
    out = json.loads(res.stdout)
    assert res.exit_code == 1 and [d["code"] for d in out["diagnostics"]] == ["E227"]
    assert "sigmoid" in out["diagnostics"][0]["hint"]
    two = src.replace("-> 1 relu", "-> 2 relu").replace("z : 1\nstalk y : 1", "z : 2\nstalk y : 2")
    assert run("check", write(tmp_path, "t.sheaf", two)).exit_code == 0


# ----------------------------------------------------------------------------------------------
# training and its run directory


def test_data_paths_resolve_against_the_model_folder(tmp_path, monkeypatch):
    """`train data="data.csv"` names the file beside the model; the run stores it absolute, so
    `sheaf diagnose RUN` and `--resume` work from any directory."""
    import numpy as np

    proj = tmp_path / "proj" / "models"
    proj.mkdir(parents=True)
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (60, 2))
    np.savetxt(proj / "data.csv", np.c_[X, X.sum(1)], delimiter=",")
    (proj / "lin.sheaf").write_text('sheaf lin\nnetwork mlp : 2 -> 4 -> 1 relu output identity\n'
                                    'train data="data.csv" n=40 n_test=20 steps=6 log_every=3\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(tmp_path / "proj")  # not the model's folder
    res = run("train", "models/lin.sheaf", "--out", "runs/r", "--no-plots", "--steps", "3")
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "proj" / "runs" / "r" / "meta.json").read_text())
    assert meta["config"]["data"] == str(proj / "data.csv")
    monkeypatch.chdir(elsewhere)
    run_dir = str(tmp_path / "proj" / "runs" / "r")
    res = run("diagnose", run_dir, "--no-plot", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["data"] == "data"
    res = run("train", str(proj / "lin.sheaf"), "--out", run_dir, "--resume", "--no-plots", "--steps", "6")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "proj" / "runs" / "r" / "meta.json").read_text())["step"] == 6
    # --data on the command line is the shell's path: relative to the working directory
    np.savetxt(elsewhere / "mine.csv", np.c_[X, -X.sum(1)], delimiter=",")
    res = run("train", str(proj / "lin.sheaf"), "--data", "mine.csv", "--out", "r2", "--no-plots", "--steps", "1")
    assert res.exit_code == 0, res.output
    assert json.loads((elsewhere / "r2" / "meta.json").read_text())["config"]["data"] == str(elsewhere / "mine.csv")


def test_a_model_without_data_trains_on_the_task_that_fits_it(tmp_path):
    m = write(tmp_path, "sm.sheaf", "sheaf sm\nnetwork mlp : 2 -> 5 -> 4 relu output softmax\n")
    res = run("train", m, "--steps", "2", "--out", str(tmp_path / "r"), "--no-plots", "--json")
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert meta["data"]["name"] == "blobs" and meta["data"]["task"] == "multiclass"  # never the paraboloid
    sig = write(tmp_path, "sig.sheaf", "sheaf sig\nnetwork mlp : 2 -> 5 -> 1 relu output sigmoid\n")
    res = run("train", sig, "--steps", "1", "--out", str(tmp_path / "c"), "--no-plots", "--json")
    assert res.exit_code == 0 and json.loads((tmp_path / "c" / "meta.json").read_text())["data"]["name"] == "circle"
    odd = write(tmp_path, "odd.sheaf", "sheaf odd\nnetwork mlp : 2 -> 5 -> 3 relu output softmax\n")
    res = run("train", odd, "--out", str(tmp_path / "o"))
    assert res.exit_code == 1 and "E602" in res.stderr and "no built-in task fits" in res.stderr
    assert "--data" in res.stderr and not (tmp_path / "o").exists()
    assert run("diagnose", odd, "--no-plot").exit_code == 1


def test_an_unconstrained_stalk_is_refused_before_the_run_starts(tmp_path):
    out = tmp_path / "u"
    res = run("train", "models/unconstrained.sheaf", "--out", str(out))
    assert res.exit_code == 1 and "E504" in res.stderr and "memo" in res.stderr
    assert not out.exists()  # no half-made run directory


@pytest.mark.parametrize("trainer", ["backprop", "joint"])
def test_solver_is_not_silently_ignored(tmp_path, trainer):
    out = tmp_path / "s"
    res = run("train", "models/paraboloid.sheaf", "--trainer", trainer, "--solver", "diffusion", "--out", str(out))
    assert res.exit_code == 1 and "E610" in res.stderr and "--solver" in res.stderr and trainer in res.stderr
    assert not out.exists()
    res = run("train", "models/paraboloid.sheaf", "--trainer", "sheaf", "--solver", "exact", "--steps", "1",
              "--out", str(out), "--no-plots")
    assert res.exit_code == 0, res.output


def test_json_with_baseline_reports_the_baseline(tmp_path):
    res = run("train", "models/paraboloid.sheaf", "--steps", "3", "--json", "--baseline", "--out", str(tmp_path / "b"))
    assert res.exit_code == 0, res.output
    line = json.loads(res.stdout)
    assert line["trainer"] == "sheaf" and line["baseline"]["trainer"] == "backprop" and line["baseline"]["steps"] == 3
    assert line["baseline"]["test_mse"] > 0
    plain = json.loads(run("train", "models/paraboloid.sheaf", "--steps", "3", "--json", "--out",
                           str(tmp_path / "n")).stdout)
    assert "baseline" not in plain  # --json alone trains no baseline


def test_infer_takes_a_run_directory_as_params(tmp_path):
    out = tmp_path / "run"
    assert run("train", "models/paraboloid.sheaf", "--steps", "3", "--out", str(out), "--no-plots").exit_code == 0
    by_dir = run("infer", "models/paraboloid.sheaf", "--params", str(out), "--input", "[1, 2]", "--json")
    by_file = run("infer", "models/paraboloid.sheaf", "--params", str(out / "checkpoint.npz"), "--input", "[1, 2]",
                  "--json")
    assert by_dir.exit_code == 0, by_dir.output
    assert json.loads(by_dir.stdout) == json.loads(by_file.stdout)
    res = run("infer", "models/paraboloid.sheaf", "--params", str(tmp_path), "--input", "[1, 2]")
    assert res.exit_code == 1 and "E524" in res.stderr and "not a run directory" in res.stderr


# ----------------------------------------------------------------------------------------------
# tables


@pytest.mark.parametrize("columns", ["80", "40"])
def test_tables_never_cut_a_number_short(monkeypatch, columns):
    """Piped (no terminal) or in a narrow terminal, a table wraps its text but prints every number
    whole: nothing ends in "…", and each value of the --json output appears in the text."""
    monkeypatch.setenv("COLUMNS", columns)
    from sheafdsl.cli import common

    monkeypatch.setattr(common.console, "_width", int(columns))  # as rich sees a terminal of that width
    res = run("diagnose", "models/paraboloid.sheaf", "--no-plot")
    assert res.exit_code == 0, res.output
    assert "…" not in res.stdout
    js = json.loads(run("diagnose", "models/paraboloid.sheaf", "--no-plot", "--json").stdout)
    for e in js["edges"]:
        assert f"{e['energy']:.4g}" in res.stdout and f"{e['discord']:.4g}" in res.stdout
        assert f"{100 * e['share']:.1f}%" in res.stdout
    res = run("spectrum", "models/digits.sheaf", "--samples", "2")
    assert res.exit_code == 0 and "…" not in res.stdout
    js = json.loads(run("spectrum", "models/digits.sheaf", "--samples", "2", "--json").stdout)
    for s in js["samples"]:
        assert f"{s['training']['lambda_min']:g}" in res.stdout and f"{s['inference']['kappa']:g}" in res.stdout


# ----------------------------------------------------------------------------------------------
# sheaves without data pins


@pytest.mark.parametrize("model, zero", [("soft_pins", False), ("triangle", True), ("twisted", True)])
def test_diagnose_a_sheaf_without_data_pins(tmp_path, model, zero):
    """The discord at the harmonic extension of the sheaf's own pins: its total is the solver's minimum
    energy E(c*) (an independent solve), zero exactly when the pins are consistent (a global section)."""
    import numpy as np

    from sheafdsl.frontend import load_file
    from sheafdsl.ir import TRAINING, from_model
    from sheafdsl.lowering import init_params
    from sheafdsl.solvers import solve

    png = tmp_path / "d.png"
    res = run("diagnose", f"models/{model}.sheaf", "--json", "--plot", str(png))
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["data"] is None and out["n"] == 1 and png.is_file()
    G = from_model(load_file(f"models/{model}.sheaf"))
    ref = solve(G, init_params(G, 0), {}, method="cg", sources=TRAINING)
    assert out["total"] == pytest.approx(float(np.asarray(ref.energy)[0]), rel=1e-8, abs=1e-12)
    assert (out["total"] == pytest.approx(0, abs=1e-20)) is zero
    assert out["lambda_min"] > 0
    text = run("diagnose", f"models/{model}.sheaf", "--no-plot")
    assert text.exit_code == 0 and "harmonic extension of its own pins" in text.stdout
    res = run("train", f"models/{model}.sheaf", "--out", str(tmp_path / "t"))  # training needs data pins
    assert res.exit_code == 1 and "E602" in res.stderr and not (tmp_path / "t").exists()


# ----------------------------------------------------------------------------------------------
# the README's results table


def _readme_rows():
    import re

    text = open("README.md").read().split("## Results", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in text.splitlines():
        m = re.match(r"\| `(\w+)\.sheaf`[^|]*\| (test MSE|test acc) ([\d.]+)%? \| ([\d.]+)%? \|", line)
        if m:
            rows.append((m.group(1), m.group(2), m.group(3), m.group(4)))
    return rows


def test_the_readme_names_a_shipped_model_in_every_row():
    import os

    rows = _readme_rows()
    assert len(rows) >= 6 and all(os.path.isfile(f"models/{name}.sheaf") for name, *_ in rows)


@pytest.mark.slow
@pytest.mark.parametrize("row", _readme_rows(), ids=lambda r: r[0])
def test_readme_results_reproduce_from_the_shipped_model(tmp_path, row):
    """`sheaf train models/NAME.sheaf` at its own settings gives the README's numbers, to the digits shown."""
    name, metric, sheaf_value, backprop_value = row
    res = run("train", f"models/{name}.sheaf", "--json", "--baseline", "--no-plots", "--out", str(tmp_path / "r"))
    assert res.exit_code == 0, res.output
    line = json.loads(res.stdout)
    key, scale = ("test_mse", 1) if metric == "test MSE" else ("test_accuracy", 100)
    for got, shown in ((line[key], sheaf_value), (line["baseline"][key], backprop_value)):
        digits = len(shown.split(".")[1]) if "." in shown else 0
        assert f"{scale * got:.{digits}f}" == shown, (name, got, shown)
