"""`sheaf train` end to end: the run directory, the --json line, faults, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from sheafdsl.cli.main import cli
from cli_results import json_line, no_traceback
from sheafdsl.training.checkpoint import load_checkpoint
from sheafdsl.training.run import MetricsLog

PARABOLOID = "models/paraboloid.sheaf"

CIRCLE = "models/circle.sheaf"  # sigmoid output, binary
BLOBS = "models/blobs.sheaf"  # softmax output, 4 classes
RESIDUAL = "models/residual.sheaf"  # a skip connection: not a feed-forward chain


def invoke(args, monkeypatch=None):
    """Run the CLI in-process."""
    args = ["train", *args]
    return CliRunner().invoke(cli, args, catch_exceptions=True)


@pytest.fixture(scope="module")
def para_run(tmp_path_factory):
    """One short paraboloid run with the baseline and plots, shared by the checks below."""
    out = tmp_path_factory.mktemp("runs") / "p"
    res = invoke([PARABOLOID, "--steps", "30", "--log-every", "10", "--out", str(out)])
    return res, out


def test_paraboloid_run_directory(para_run):
    res, out = para_run
    no_traceback(res)
    assert res.exit_code == 0, res.output
    names = {p.name for p in out.iterdir()}
    assert {"checkpoint.npz", "meta.json", "model.sheaf", "metrics.jsonl", "summary.json", "loss.png", "discord.png",
            "surface.png"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    with open(PARABOLOID) as fh:
        assert (out / "model.sheaf").read_text() == fh.read()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["step"] == 30 and meta["status"] == "finished" and meta["seed"] == 0
    assert meta["config"]["steps"] == 30 and meta["config"]["lr"] == 0.01  # flag beats the train block (3000)
    assert meta["baseline"] == "backprop" and meta["baseline_step"] == 30
    assert set(meta["versions"]) >= {"sheafdsl", "numpy", "python"}
    ck = load_checkpoint(out / "checkpoint.npz")
    assert ck.step == 30 and set(ck.params) == {"W1", "b1", "W2", "b2"} and ck.baseline
    assert ck.meta["model_sha256"] == meta["model_sha256"]


def test_paraboloid_metrics(para_run):
    _, out = para_run
    recs = MetricsLog(out / "metrics.jsonl").read()
    assert [r["step"] for r in recs] == [0, 10, 20, 30]
    for r in recs:
        assert set(r["edge_discord"]) == {"aff1", "act1", "aff2", "out"}
        assert all(v >= 0 for v in r["edge_discord"].values())
        assert r["loss"] > 0 and r["baseline_loss"] > 0
        assert r["lambda_min"] > 0  # the relative cohomology vanishes: L_free is positive definite
        assert r["test_loss"] > 0 and r["baseline_test_loss"] > 0 and "test_accuracy" not in r
    assert recs[0]["test_loss"] == recs[0]["baseline_test_loss"]  # the same initial parameters
    assert recs[-1]["test_loss"] < recs[0]["test_loss"]  # it learns
    assert recs[0]["consistent_fraction"] is None and recs[0]["elapsed"] == 0  # step 0: no step taken yet
    assert recs[0]["loss"] == recs[0]["baseline_loss"]  # the same initial parameters
    for r in recs[1:]:
        assert 0 <= r["consistent_fraction"] <= 1
    assert recs[0]["elapsed"] < recs[1]["elapsed"] < recs[2]["elapsed"] < recs[3]["elapsed"]
    assert recs[-1]["loss"] < recs[1]["loss"] < recs[0]["loss"]  # it learns


def test_paraboloid_summary(para_run):
    res, out = para_run
    assert "training summary" in res.stdout and "backprop (baseline)" in res.stdout and "test MSE" in res.stdout
    summ = json.loads((out / "summary.json").read_text())
    assert summ["trainer"]["trainer"] == "sheaf" and summ["baseline"]["trainer"] == "backprop"
    assert summ["trainer"]["test_mse"] > 0 and summ["baseline"]["test_mse"] > 0
    assert set(summ["plots"]) == {"loss.png", "discord.png", "surface.png"}


def test_json_line_regression(tmp_path):
    res = invoke([PARABOLOID, "--steps", "12", "--log-every", "4", "--out", str(tmp_path / "j"), "--json", "--no-plots"])
    no_traceback(res)
    assert res.exit_code == 0, res.output
    line = json_line(res)
    assert set(line) == {"ok", "diagnostics", "trainer", "steps", "seconds", "train_loss", "test_loss", "test_mse",
                         "consistent_fraction"}
    assert line["trainer"] == "sheaf" and line["steps"] == 12 and line["seconds"] > 0
    assert line["test_mse"] > 0 and 0 <= line["consistent_fraction"] <= 1
    assert json.loads((tmp_path / "j" / "meta.json").read_text())["baseline"] is None  # off by default with --json


def test_backprop_trainer_json(tmp_path):
    res = invoke([PARABOLOID, "--steps", "5", "--trainer", "backprop", "--out", str(tmp_path / "b"), "--json",
                  "--no-plots", "--baseline"])
    assert res.exit_code == 0, res.output
    line = json_line(res)
    assert line["trainer"] == "backprop" and line["steps"] == 5
    assert json.loads((tmp_path / "b" / "meta.json").read_text())["baseline"] is None  # no baseline of itself


def test_classification_end_to_end(tmp_path):
    out = tmp_path / "circle-run"
    res = invoke([CIRCLE, "--out", str(out), "--steps", "30", "--n", "120", "--log-every", "10"])
    no_traceback(res)
    assert res.exit_code == 0, res.output
    assert "test accuracy" in res.stdout and "test MSE" not in res.stdout
    assert (out / "boundary.png").is_file() and not (out / "surface.png").exists()
    summ = json.loads((out / "summary.json").read_text())
    assert 0.5 < summ["trainer"]["test_accuracy"] <= 1 and 0 < summ["baseline"]["test_accuracy"] <= 1
    last = MetricsLog(out / "metrics.jsonl").read()[-1]  # the accuracy curves end at the summary's numbers
    assert last["test_accuracy"] == summ["trainer"]["test_accuracy"]
    assert last["baseline_test_accuracy"] == summ["baseline"]["test_accuracy"]
    res = invoke([BLOBS, "--out", str(tmp_path / "blobs-json"), "--steps", "10", "--n", "80", "--json", "--no-plots"])
    line = json_line(res)
    assert set(line) == {"ok", "diagnostics", "trainer", "steps", "seconds", "train_loss", "test_loss",
                         "test_accuracy", "consistent_fraction"}
    assert line["steps"] == 10 and 0 <= line["test_accuracy"] <= 1


def test_a_general_sheaf_trains_without_a_baseline(tmp_path):
    """A skip connection is not a chain: no backprop baseline (a note says why), but the sheaf rule
    trains it and the surface comes from the harmonic extension."""
    out = tmp_path / "res"
    res = invoke([RESIDUAL, "--out", str(out), "--steps", "4", "--n", "60", "--log-every", "2"])
    no_traceback(res)
    assert res.exit_code == 0, res.output
    assert "no backprop baseline" in res.stderr and "backprop (baseline)" not in res.stdout
    assert json.loads((out / "meta.json").read_text())["baseline"] is None
    assert (out / "surface.png").is_file()
    res = invoke([RESIDUAL, "--out", str(tmp_path / "res2"), "--steps", "1", "--baseline", "--no-plots"])
    assert res.exit_code == 1 and "models/residual.sheaf: error[E612]" in res.stderr


def test_existing_run_is_not_overwritten(para_run):
    _, out = para_run
    before = (out / "checkpoint.npz").read_bytes()
    res = invoke([PARABOLOID, "--steps", "3", "--out", str(out)])
    no_traceback(res)
    assert res.exit_code == 1 and "E630" in res.stderr and "--resume" in res.stderr
    assert (out / "checkpoint.npz").read_bytes() == before


# ----------------------------------------------------------------------------------------------
# faults


def _inject_nan_after(monkeypatch, at_step: int, param: str = "W2"):
    """Make the real trainer's parameters go NaN once it has taken ``at_step`` steps."""
    from sheafdsl.training import trainers

    real = trainers.make_trainer

    def make(*a, **k):
        tr = real(*a, **k)
        if tr.config.trainer == "backprop":
            return tr
        step = tr.step

        def poisoned(*a, **k):  # step(loss=...) of a lazy-loss trainer, too
            out = step(*a, **k)
            if tr.step_count == at_step:
                tr.params[param][...] = np.nan
            return out

        tr.step = poisoned
        return tr

    monkeypatch.setattr(trainers, "make_trainer", make)


def test_nan_stops_the_run_names_step_and_edge_and_keeps_checkpoint(tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    assert invoke([PARABOLOID, "--steps", "10", "--log-every", "10", "--out", str(clean), "--no-plots"]).exit_code == 0
    _inject_nan_after(monkeypatch, 13)
    out = tmp_path / "bad"
    res = invoke([PARABOLOID, "--steps", "40", "--log-every", "10", "--checkpoint-every", "0", "--out", str(out),
                  "--no-plots"])
    no_traceback(res)
    assert res.exit_code == 1, res.output
    msg = res.stderr
    assert "E640" in msg and "diverged at step" in msg and "aff2" in msg, msg
    assert "step 1" in msg  # step 13 (the poisoned parameter) or 14 (the first step that meets it)
    assert "last good checkpoint (step 10)" in msg
    ck = load_checkpoint(out / "checkpoint.npz")
    assert ck.step == 10
    ref = load_checkpoint(clean / "checkpoint.npz")
    for k in ref.params:
        np.testing.assert_array_equal(ck.params[k], ref.params[k])
    assert json.loads((out / "meta.json").read_text())["status"] == "diverged"


def test_divergence_error_from_the_trainer(tmp_path, monkeypatch):
    from sheafdsl.training import trainers

    real = trainers.make_trainer

    def make(*a, **k):
        tr = real(*a, **k)
        step = tr.step

        def failing(*a, **k):  # step(loss=...) of a lazy-loss trainer, too
            if tr.step_count == 7:
                raise trainers.DivergenceError(8, "edge `act1`")
            return step(*a, **k)

        tr.step = failing
        return tr

    monkeypatch.setattr(trainers, "make_trainer", make)
    out = tmp_path / "div"
    res = invoke([PARABOLOID, "--steps", "20", "--log-every", "5", "--out", str(out), "--json", "--no-plots"])
    no_traceback(res)
    assert res.exit_code == 1
    line = json_line(res)
    assert line["ok"] is False and line["diagnostics"][0]["code"] == "E640"
    text = line["diagnostics"][0]["message"]
    assert "step 8" in text and "act1" in text
    # checkpoints go by wall time (every 30 s by default): in this short run the last good one is step 0's
    assert load_checkpoint(out / "checkpoint.npz").step == 0


# ----------------------------------------------------------------------------------------------
# bad input: exit 1 (the user's input) or 2 (usage), a clear message, never a traceback


@pytest.mark.parametrize("args, code, needle", [
    ([PARABOLOID, "--data", "paraboloidd", "--steps", "1"], 1, "unknown data set"),
    ([PARABOLOID, "--data", "missing/file.csv", "--steps", "1"], 1, "does not exist"),
    (["models/nope.sheaf"], 1, "cannot read"),
    ([PARABOLOID, "--optimizer", "rmsprop"], 2, "rmsprop"),
    ([PARABOLOID, "--lr", "-1"], 2, "positive"),
    ([PARABOLOID, "--lr", "nan"], 2, "positive"),
    ([PARABOLOID, "--steps", "-3"], 2, "steps"),
    ([PARABOLOID, "--batch", "0"], 2, "batch"),
    ([PARABOLOID, "--data", "circle", "--steps", "1"], 1, "models/paraboloid.sheaf: error[E603]"),
    ([PARABOLOID, "--resume"], 1, "--out"),
])
def test_bad_input(tmp_path, args, code, needle):
    res = invoke(args + ["--out", str(tmp_path / "r")] if "--resume" not in args and code == 1 else args)
    no_traceback(res)
    assert res.exit_code == code, res.output
    assert needle in res.output
    assert not (tmp_path / "r").exists()  # nothing was created for a run that never started


def test_bad_input_json(tmp_path):
    res = invoke([PARABOLOID, "--data", "nosuchtask", "--json", "--out", str(tmp_path / "r")])
    assert res.exit_code == 1
    line = json_line(res)
    assert line["ok"] is False and "unknown data set" in line["diagnostics"][0]["message"]


def test_a_model_can_start_from_a_checkpoint(para_run, tmp_path):
    """Parameters sit under their own names, so `init "checkpoint.npz":W1` reads them."""
    from sheafdsl.frontend import load_file
    from sheafdsl.ir import from_model
    from sheafdsl.lowering import init_params

    _, out = para_run
    text = open(PARABOLOID).read().replace("param W1 : 30 x 2  init he",
                                           f'param W1 : 30 x 2  init "{out / "checkpoint.npz"}":W1')
    model = tmp_path / "warm.sheaf"
    model.write_text(text)
    P = init_params(from_model(load_file(model)), seed=0)
    np.testing.assert_array_equal(P["W1"], load_checkpoint(out / "checkpoint.npz").params["W1"])


def test_default_run_directory(tmp_path, monkeypatch):
    import os

    model = os.path.abspath(PARABOLOID)
    monkeypatch.chdir(tmp_path)
    res = invoke([model, "--steps", "2", "--no-plots", "--no-baseline"])
    assert res.exit_code == 0, res.output
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("paraboloid-")
    assert load_checkpoint(runs[0] / "checkpoint.npz").step == 2
    assert f"run directory: {os.path.join('runs', runs[0].name)}" in res.stdout


def test_a_real_divergence_from_a_huge_learning_rate(tmp_path):
    import re

    out = tmp_path / "blowup"
    res = invoke([PARABOLOID, "--optimizer", "sgd", "--lr", "1e4", "--steps", "200", "--log-every", "5", "--out",
                  str(out), "--no-plots"])
    no_traceback(res)
    assert res.exit_code == 1, res.output
    m = re.search(r"error\[E640\]: training diverged at step (\d+)", res.stderr)
    assert m and "E640" in res.stderr and "edge `" in res.stderr, res.stderr
    assert "RuntimeWarning" not in res.stderr  # overflow on the way is reported once, as the divergence
    ck = load_checkpoint(out / "checkpoint.npz")
    assert ck.step % 5 == 0 and ck.step < int(m.group(1))
    assert all(np.isfinite(v).all() for v in ck.params.values())
    assert "backprop baseline stopped" in res.stderr  # the baseline blew up first and was dropped


def test_threads_limits_the_blas_pools_during_training(tmp_path, monkeypatch):
    """`--threads N` (default 1) holds every BLAS/OpenMP pool at N threads while the run trains."""
    from threadpoolctl import threadpool_info

    from sheafdsl.training import trainers

    seen = []
    real = trainers.make_trainer

    def make(*a, **k):
        # the pools numpy and scipy compute with (a test's cvxpy import brings SCS's own OpenBLAS, which
        # ignores every limit and is never used by sheafdsl)
        seen.append({p["num_threads"] for p in threadpool_info() if any(k in p["filepath"] for k in ("numpy", "scipy"))})
        return real(*a, **k)

    monkeypatch.setattr(trainers, "make_trainer", make)
    for flag, want in (([], 1), (["--threads", "2"], 2)):
        seen.clear()
        res = invoke([PARABOLOID, "--steps", "2", "--out", str(tmp_path / f"t{want}"), "--no-plots", *flag])
        assert res.exit_code == 0, res.output
        assert seen and all(s <= {want} for s in seen), seen
    assert invoke([PARABOLOID, "--threads", "0", "--out", str(tmp_path / "t0")]).exit_code == 2
