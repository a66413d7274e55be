"""Snapshots at chosen steps (``--snapshot-at``, ``snapshot_at=``): each one is the parameters an
independent run of exactly that many steps ends with; they survive resume; bad requests are E680/E681."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import sheafdsl as sd
from sheafdsl.cli.main import cli
from sheafdsl.training.snapshots import load_snapshot, parse_steps, save_snapshot

PARABOLOID = "models/paraboloid.sheaf"
FAST = dict(steps=30, batch=32, n=64, n_test=20, log_every=10)


@pytest.fixture(scope="module")
def sheaf():
    return sd.load(PARABOLOID)


def same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def test_parse_steps():
    assert parse_steps("100k, 20000,1000,1000") == (1000, 20000, 100000)
    assert parse_steps([5, 0, 5]) == (0, 5)
    assert parse_steps("1.5k") == (1500,)
    for bad in ("10,x", "1.5", "-3", "", [1.0], [-1], [True], 7):
        with pytest.raises(sd.SheafError) as e:
            parse_steps(bad)
        assert e.value.codes == ["E680"]


def test_snapshots_in_memory_are_the_runs_of_that_length(sheaf):
    fit = sheaf.train(snapshot_at=[0, 10, 30], baseline=True, **FAST)
    assert sorted(fit.snapshots) == [0, 10, 30]
    same(fit.snapshots[0].params, sheaf.init_params(seed=0))
    same(fit.snapshots[0].baseline, sheaf.init_params(seed=0))
    same(fit.snapshots[30].params, fit.params)
    short = sheaf.train(baseline=True, **{**FAST, "steps": 10})
    same(fit.snapshots[10].params, short.params)  # the same mini-batches, the same optimiser state
    assert fit.snapshots[10].meta["trainer"] == "sheaf" and fit.snapshots[10].meta["baseline"] == "backprop"
    assert not any(np.array_equal(fit.snapshots[10].params[k], fit.params[k]) for k in fit.params)
    back = sheaf.train(trainer="backprop", **{**FAST, "steps": 10})
    same(fit.snapshots[10].baseline, back.params)
    assert fit.metrics["snapshots"] == [0, 10, 30]


def test_cli_snapshots_resume_and_load(tmp_path):
    base = ["train", PARABOLOID, "--batch", "32", "--n", "64", "--log-every", "10", "--no-plots", "--no-baseline"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    r = CliRunner().invoke(cli, [*base, "--steps", "40", "--snapshot-at", "10,30", "--out", str(whole), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["snapshots"] == [10, 30]
    names = sorted(p.name for p in (whole / "snapshots").iterdir())
    assert names == ["step-000000010.npz", "step-000000030.npz"]  # nothing half-written left beside them
    # stopped at 20, then resumed to 40 without repeating the flag: the schedule recorded at the start goes on
    r = CliRunner().invoke(cli, [*base, "--steps", "20", "--snapshot-at", "10,30", "--out", str(part)])
    assert r.exit_code == 1 and "E680" in r.output and not part.exists()  # 30 is past step 20: refused up front
    assert CliRunner().invoke(cli, [*base, "--steps", "20", "--snapshot-at", "10", "--out", str(part)]).exit_code == 0
    r = CliRunner().invoke(cli, [*base, "--steps", "40", "--snapshot-at", "10,30", "--out", str(part), "--resume"])
    assert r.exit_code == 0, r.output
    a, b = sd.load_snapshots(whole), sd.load_snapshots(part)
    assert sorted(a) == sorted(b) == [10, 30]
    for s in a:
        same(a[s].params, b[s].params)
        assert a[s].baseline is None
    _, params, saved = sd.open_run(whole)
    assert sorted(saved.snapshots()) == [10, 30]
    assert not np.array_equal(a[30].params["W1"], params["W1"])  # step 30, not the last step 40
    with pytest.raises(sd.SheafError) as e:
        sd.load_snapshots(whole, [10, 20])
    assert e.value.codes == ["E681"] and "it has: 10, 30" in str(e.value)


def test_damaged_or_foreign_snapshot_is_E681(tmp_path):
    p = save_snapshot(tmp_path / "s.npz", step=3, params={"W": np.eye(2)}, baseline={"W": np.zeros((2, 2))})
    s = load_snapshot(p)
    assert s.step == 3 and s.params["W"].tolist() == [[1, 0], [0, 1]] and s.baseline["W"].sum() == 0
    p.write_bytes(p.read_bytes()[:40])
    np.savez(tmp_path / "other.npz", W=np.eye(2))
    for path in (p, tmp_path / "other.npz", tmp_path / "missing.npz"):
        with pytest.raises(sd.SheafError) as e:
            load_snapshot(path)
        assert e.value.codes == ["E681"]


def test_equilibrium_history_panels_draw_the_logged_values(sheaf):
    from matplotlib.figure import Figure

    from sheafdsl.training.plots import draw_edge_discord, draw_lambda_min

    fit = sheaf.train(**FAST)
    fig = Figure()
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ys = draw_lambda_min(ax1, fit.history, marks=[10])
    assert ys == [r["lambda_min"] for r in fit.history if r.get("lambda_min") is not None] and ys
    names = draw_edge_discord(ax2, fit.history)
    assert names == ["aff1", "act1", "aff2", "out"]
    line = ax2.lines[names.index("out")]
    logged = [(r["step"], r["edge_discord"]["out"]) for r in fit.history if r.get("edge_discord")]
    assert list(zip(line.get_xdata(), line.get_ydata())) == logged
    assert any(list(ln.get_xdata()) == [10, 10] for ln in ax1.lines)  # the snapshot mark
