"""`sheaf paper`: the runner, the CLI, and every item's --quick run with a check of its numbers.

Each item's test runs ``sheaf paper NAME --quick`` (≤ 4 s on one core) and asserts something true
about the numbers it returns, not only that its files exist. B and C append their items' tests below.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sheafdsl.cli.main import cli
from cli_results import json_line, no_traceback
from sheafdsl.paper import registry, runner
from sheafdsl.paper.common import PaperContext, new_figure

ROOT = Path(__file__).resolve().parents[1]


def invoke(*args):
    return CliRunner().invoke(cli, ["paper", *args], catch_exceptions=True)


def run_quick(name, tmp_path) -> dict:
    """``sheaf paper NAME --quick --json`` into tmp_path: the record, checked against NAME.json and its files."""
    res = invoke(name, "--quick", "--out", str(tmp_path), "--json")
    no_traceback(res)
    assert res.exit_code == 0, res.output
    out = json_line(res)
    assert out["ok"] and out["item"] == name and out["quick"] is True
    saved = json.loads((tmp_path / f"{name}.json").read_text())
    assert saved["numbers"] == out["numbers"] and saved["item"] == name
    for f in out["files"]:
        assert Path(f).is_file() and Path(f).stat().st_size > 0, f
    figures = [f for f in out["files"] if f.endswith(".png")]
    assert figures and all(Path(f).with_suffix(".pdf").is_file() for f in figures)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    return out["numbers"]


# ------------------------------------------------------------------------------------------------
# the skeleton, on a small item registered for the test


def _toy(ctx: PaperContext) -> dict:
    import numpy as np

    ctx.log("drawing")
    x = np.linspace(0.0, 1.0, 5 if ctx.quick else 50)
    fig = new_figure(3.0, 2.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(x, x ** 2)
    ctx.save_figure(fig, "toy_curve")
    return {"n": int(x.size), "seed": ctx.seed, "area": float(np.trapezoid(x ** 2, x)), "bad": float("nan"),
            "paper": {"area": 1 / 3}}


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(registry.ITEMS, "toy", registry.Item("toy", "nowhere:toy", title="a toy item", seed=7))
    real = runner.resolve
    monkeypatch.setattr(runner, "resolve", lambda name: _toy if name == "toy" else real(name))


def test_item_writes_figures_and_its_json(toy, tmp_path):
    res = invoke("toy", "--out", str(tmp_path / "t"), "--json")
    no_traceback(res)
    assert res.exit_code == 0, res.output
    out = json_line(res)
    assert out["ok"] and out["diagnostics"] == [] and out["item"] == "toy" and out["quick"] is False
    assert out["numbers"]["n"] == 50 and out["numbers"]["seed"] == 7  # the item's own seed
    assert out["numbers"]["bad"] is None  # NaN written as null: strict JSON
    assert out["seconds"] >= 0
    names = sorted(Path(f).name for f in out["files"])
    assert names == ["toy.json", "toy_curve.pdf", "toy_curve.png"]
    png = (tmp_path / "t" / "toy_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "t" / "toy_curve.pdf").read_bytes()[:5] == b"%PDF-"
    saved = json.loads((tmp_path / "t" / "toy.json").read_text())
    assert set(saved) == {"item", "quick", "seconds", "numbers", "files"}
    assert saved["numbers"]["paper"] == {"area": 1 / 3}


def test_quick_and_seed_reach_the_item(toy, tmp_path):
    res = invoke("toy", "--quick", "--seed", "3", "--out", str(tmp_path), "--json")
    out = json_line(res)
    assert out["quick"] is True and out["numbers"]["n"] == 5 and out["numbers"]["seed"] == 3
    assert "drawing" in res.stderr


def test_text_output_lists_files_and_numbers_beside_the_papers(toy, tmp_path):
    res = invoke("toy", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    assert "toy_curve.png" in res.stdout and re.search(r"area = 0\.33\d+ +\(paper: 0\.333", res.stdout)


def test_default_out_is_paper_out_name(toy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = invoke("toy", "--quick")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "paper_out" / "toy" / "toy.json").is_file()


def test_all_runs_every_item_into_its_own_folder(toy, tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "ITEMS", {"toy": registry.ITEMS["toy"]})
    monkeypatch.setattr(runner, "ITEMS", registry.ITEMS)
    res = invoke("all", "--quick", "--out", str(tmp_path), "--json")
    assert res.exit_code == 0, res.output
    out = json_line(res)
    assert list(out["items"]) == ["toy"]
    assert (tmp_path / "toy" / "toy.json").is_file() and (tmp_path / "toy" / "toy_curve.png").is_file()


def test_list_names_every_registered_item(toy):
    res = invoke("--list")
    assert res.exit_code == 0 and "toy" in res.stdout and "a toy item" in res.stdout
    out = json_line(invoke("--list", "--json"))
    assert set(out["items"]) == set(registry.ITEMS) and out["items"]["toy"] == {"title": "a toy item", "seed": 7}


def test_unknown_item_is_E660_with_a_suggestion(toy):
    res = invoke("tyo")
    no_traceback(res)
    assert res.exit_code == 1 and "E660" in res.stderr and "toy" in res.stderr
    out = json_line(invoke("nope", "--json"))
    assert out["ok"] is False and out["diagnostics"][0]["code"] == "E660"


def test_unwritable_out_is_E661(toy, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    res = invoke("toy", "--out", str(f))
    no_traceback(res)
    assert res.exit_code == 1 and "E661" in res.stderr


def test_usage_errors_exit_2():
    assert invoke().exit_code == 2
    assert invoke("fig1", "--list").exit_code == 2


def test_registry_targets_are_importable_and_lazy():
    """Every item's function exists; the registry itself imports no item module."""
    import subprocess
    import sys

    for name in registry.ITEMS:
        assert callable(registry.resolve(name)), name
    code = ("import sys, sheafdsl.paper.registry as r; "
            "print([m for m in sys.modules if m.startswith('sheafdsl.paper.') and m != 'sheafdsl.paper.registry'])")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == "[]", (p.stdout, p.stderr)


def test_only_the_cli_imports_the_paper_layer():
    pkg = ROOT / "sheafdsl"
    bad = [str(f.relative_to(pkg)) for f in pkg.rglob("*.py")
           if "paper" not in f.relative_to(pkg).parts[:1] and f.name != "paper.py"
           and re.search(r"^\s*(from|import) (\.\.?|sheafdsl\.)paper\b", f.read_text(encoding="utf-8"), re.M)]
    assert not bad, bad


def test_every_item_has_a_quick_test_and_a_docs_section():
    here = Path(__file__).read_text(encoding="utf-8")
    doc = (ROOT / "docs" / "paper.md").read_text(encoding="utf-8")
    for name in registry.ITEMS:
        assert re.search(rf"run_quick\(\"{re.escape(name)}\"", here), f"no --quick test of {name}"
        assert f"sheaf paper {name}" in doc, f"docs/paper.md has no section for {name}"


# ------------------------------------------------------------------------------------------------
# the items (one test each: `run_quick(NAME, tmp_path)` and a check of what is true of its numbers)


def _forward(widths, seed, x, output="identity"):
    """The forward pass in plain NumPy, from the seeded parameters of the paper's net: (pre-activations, y)."""
    from sheafdsl.paper.common import network

    P = network(widths, output=output).init_params(seed=seed)
    a, zs = np.asarray(x, dtype=float), []
    for k in range(1, len(widths)):
        z = P[f"W{k}"] @ a + P[f"b{k}"]
        zs.append(z)
        a = np.maximum(z, 0.0)
    y = 1 / (1 + np.exp(-zs[-1])) if output == "sigmoid" else zs[-1]
    return zs, y


def test_fig1_quick(tmp_path):
    """The heat equation converges to the forward pass at the rate L_free's λ_min predicts."""
    n = run_quick("fig1", tmp_path)
    _, y = _forward([2, 4, 1], 0, [0.5, -0.3])
    assert n["forward"] == pytest.approx(y.tolist(), abs=1e-12)  # the exact solve is the forward pass
    assert n["settings"]["dt"] == 0.01 and n["settings"]["alpha"] == 1.0 and n["settings"]["change_tol"] == 1e-15
    assert n["discord_end"] < 1e-2 * n["discord_start"] and n["crossings"] >= 1
    # on the last piece the discord decays by (1 − α dt λ_min)² per step: measured against predicted
    assert n["decay_measured"] == pytest.approx(n["decay_predicted"], rel=1e-4)
    # and the output is within the energy bound √(2E/λ_min) of the forward pass
    assert n["output_error"] <= n["error_bound"] * (1 + 1e-9)
    assert all(s.startswith("z1[") and d in (1, -1) for _, s, d in n["crossing_list"])


def test_E1_quick(tmp_path):
    n = run_quick("E1", tmp_path)
    _, y = _forward([2, 6, 4, 4, 1], 0, [0.5, -0.3], output="sigmoid")
    assert n["forward"] == pytest.approx(y.tolist(), abs=1e-12) and 0 < n["output"][0] < 1
    assert sum(n["layers_end"].values()) == pytest.approx(n["discord_end"], rel=1e-12)
    assert sorted(n["layers_end"]) == ["1", "2", "3", "4"]
    assert sum(n["crossings_by_stalk"].values()) == n["crossings"] >= 1
    assert set(n["crossings_by_stalk"]) <= {"z1", "z2", "z3"}
    assert n["discord_end"] < n["discord_start"]


def test_E2_quick(tmp_path):
    n = run_quick("E2", tmp_path)
    assert list(n["nets"]) == ["[2,4,1]", "[2,6,4,1]", "[2,6,4,4,1]"]
    for name, widths in zip(n["nets"], ([2, 4, 1], [2, 6, 4, 1], [2, 6, 4, 4, 1])):
        r = n["nets"][name]
        zs, y = _forward(widths, 0, [0.5, -0.3])
        i, j = (int(p[3:-1]) for p in r["plane"])
        assert r["forward_point"] == pytest.approx([zs[0][i], zs[0][j]], abs=1e-12)
        assert r["forward"] == pytest.approx(y.tolist(), abs=1e-12)
        d = lambda p: np.hypot(p[0] - r["forward_point"][0], p[1] - r["forward_point"][1])  # noqa: E731
        assert d(r["end"]) < d(r["start"])  # the trajectory approaches the forward pass in its plane
        assert r["discord_end"] < r["discord_start"]
    assert any(r["plane_crossings"] > 0 for r in n["nets"].values())

# --- helper C: fig4, E5, E6, tableE2, lab12 -------------------------------------------------

GOLDEN_GAP = (3 - 5 ** 0.5) / 2  # the smallest eigenvalue of [[2, -1], [-1, 1]]


def test_E5_quick(tmp_path):
    import numpy as np

    nums = run_quick("E5", tmp_path)
    tr = nums["series"]["training"]
    # a 1-hidden-layer ReLU net with x, y pinned: every active unit j orthogonal to W2 leaves the block
    # [[2, -1], [-1, 1]] on (z1_j, a1_j), so λ_min is exactly (3 - √5)/2 however the weights move
    for k in ("min", "max"):
        assert np.allclose([r[k] for r in tr["lambda_min"]], GOLDEN_GAP, atol=1e-12)
    for r, lo, hi in zip(tr["kappa"], tr["lambda_min"], tr["lambda_max"]):
        assert r["max"] == pytest.approx(hi["max"] / lo["max"], rel=1e-9)
    assert tr["lambda_max"][-1]["median"] > tr["lambda_max"][0]["median"]  # the weights grow
    inf = nums["series"]["inference"]["lambda_min"]
    assert all(r["max"] < GOLDEN_GAP for r in inf)  # freeing y adds a softer direction
    ev = nums["eigenvalues"][str(nums["settings"]["steps"])]
    assert ev[0] == pytest.approx(GOLDEN_GAP, abs=1e-12) and ev == sorted(ev) and len(ev) == 61


def test_E6_quick(tmp_path):
    nums = run_quick("E6", tmp_path)
    assert nums["edges"] == ["aff1", "act1", "aff2", "out"]
    for trainer, stages in nums["profiles"].items():
        for s, prof in stages.items():
            d = {r["edge"]: r["discord"] for r in prof["edges"]}
            # z2 is free between aff2 and out: at the equilibrium ∂E/∂z2 = δ_aff2 - δ_out = 0
            assert d["aff2"] == pytest.approx(d["out"], rel=1e-9, abs=1e-15), (trainer, s)
            assert sum(r["share"] for r in prof["edges"]) == pytest.approx(1.0)
        totals = [stages[str(s)]["total"] for s in nums["stages"]]
        assert totals[-1] < totals[0], trainer  # training lowers the pinned residual


def test_tableE2_quick(tmp_path):
    import numpy as np

    from sheafdsl.lowering.chain import feedforward, predict
    from sheafdsl.paper import spectral

    nums = run_quick("tableE2", tmp_path)
    pair = spectral.trained_pair(steps=spectral.QUICK["steps"], stages=spectral.QUICK["stages"], seed=42,
                                 per_decade=spectral.QUICK["per_decade"], logs=spectral.QUICK["logs"],
                                 epoch=spectral.QUICK["epoch"], log=lambda m: None)
    data = spectral.dataset(pair["sheaf"])
    net = feedforward(pair["sheaf"].graph)
    for name in ("joint", "sgd"):
        P = pair[name].snapshots[nums["step"]].params
        half_mse = 0.5 * float(np.mean((predict(net, P, data.X_train) - data.Y_train) ** 2))
        # the forward pass is a feasible cochain with all of its discord on the output edge, so the
        # minimum over cochains (the pinned residual) is at most ½ MSE
        assert 0 < nums["train"][name]["total"] <= half_mse * (1 + 1e-12)
        assert set(nums["train"][name]["types"]) == {"affine", "activation", "output"}
    assert "| `act1` | activation |" in nums["table"]


def test_the_spectral_items_restart_the_stalks_every_epoch():
    """fig4, E5, E6 and tableE2 train with the paper's protocol: the stalks re-initialised at the forward pass
    every epoch (joint_reinit), so their run is the explicit one with joint_reinit = epoch, not the one
    without restarts."""
    import numpy as np

    import sheafdsl as sd
    from sheafdsl.paper import spectral

    q = spectral.QUICK
    assert spectral.joint_options()["joint_reinit"] == spectral.EPOCH == 1000 and q["steps"] > q["epoch"]
    fit = spectral.trained(spectral.WIDTHS, "joint", steps=q["steps"], snapshot_at=[q["steps"]], seed=42,
                           logs=q["logs"], epoch=q["epoch"], log=lambda m: None)
    sh = spectral.paper_net()
    base = dict(params=sh.init_params(seed=42), data="paraboloid", n=spectral.N_TRAIN, n_test=spectral.N_TEST,
                data_seed=spectral.DATA_SEED, steps=q["steps"], seed=42, trainer="joint", optimizer="sgd",
                dt=spectral.DT, alpha=1.0, joint_init="forward")
    restarted = sd.train(sh, joint_reinit=q["epoch"], threads=1, **base).params
    never = sd.train(sh, threads=1, **base).params
    for k in fit.params:
        np.testing.assert_array_equal(fit.params[k], restarted[k])
    assert any(not np.allclose(fit.params[k], never[k], rtol=1e-6) for k in fit.params)


def test_lab12_quick(tmp_path):
    nums = run_quick("lab12", tmp_path)
    loss = nums["loss"]
    assert loss["sheaf"]["train_mse"][0] == loss["backprop"]["train_mse"][0]  # the same initialisation
    assert loss["sheaf"]["train_mse"][-1] < loss["sheaf"]["train_mse"][0]
    assert nums["batch_parallel"]["max_abs_difference"] < 1e-12  # Prop. 12.6: the batched solve is the same
    assert nums["slowdown"]["lambda_min_init"] == pytest.approx(GOLDEN_GAP, abs=1e-9)
    beta = nums["beta"]
    assert all(r["best_beta"] is not None for r in beta["by_n"].values())
    assert -2.0 < beta["slope"] < -0.5  # the best β falls with n_train (the book: slope -1)


def test_fig4_quick(tmp_path):
    import numpy as np

    nums = run_quick("fig4", tmp_path)
    shallow, deep = nums["nets"]["[2, 30, 1]"], nums["nets"]["[2, 12, 8, 6, 1]"]
    b = shallow["blocks"]["training"]
    assert b["stalks"] == ["z1", "a1", "z2"]
    # the Fiedler space of a 1-hidden-layer net: (z1_j, a1_j) = (1, φ) per active unit, a1 ⊥ W2, nothing on z2
    phi = (1 + 5 ** 0.5) / 2
    assert np.allclose(b["fiedler_share"], [1 / (1 + phi ** 2), phi ** 2 / (1 + phi ** 2), 0.0], atol=1e-9)
    assert b["lambda_min"]["max"] == pytest.approx(GOLDEN_GAP, abs=1e-12)
    for net in (shallow, deep):
        for conv in net["blocks"].values():
            assert sum(conv["fiedler_share"]) == pytest.approx(1.0) and sum(conv["lambda_max_share"]) == pytest.approx(1.0)
        types = {e["type"] for e in net["edges"]}
        assert types == {"affine", "activation", "output"}
        assert net["weight_edge_discord"] + net["relu_edge_discord"] < sum(e["discord"] for e in net["edges"])
    assert deep["blocks"]["training"]["stalks"] == ["z1", "a1", "z2", "a2", "z3", "a3", "z4"]


# helper B's items: the joint rule's training figures and tables (sheafdsl/paper/training.py)


def test_fig2_quick(tmp_path):
    """Both rules lower their losses on both tasks; SGD separates the circle."""
    n = run_quick("fig2", tmp_path)
    for task in ("paraboloid", "circle"):
        for rule in ("joint", "sgd"):
            r = n[task][rule]
            assert r["train_loss"] < r["initial_train_loss"], (task, rule, r)
    assert n["circle"]["sgd"]["test_accuracy"] >= 0.8
    assert n["paper"]["paraboloid"]["joint"] == {"train_mse": 0.0756, "test_mse": 0.088}
    assert n["protocol"]["joint_init"] == "random" and n["protocol"]["seed"] == 42


def test_fig3_quick(tmp_path):
    """The three regimes: the smallest β·n stagnates, the largest diverges, the best lies strictly between."""
    n = run_quick("fig3", tmp_path)
    rows = n["rows"]
    bn = [r["beta_n"] for r in rows]
    assert bn == sorted(bn) and bn[0] < n["best_beta_n"] < bn[-1]
    assert rows[-1]["diverged"] == len(n["seeds"]) and rows[-1]["median_test_mse"] is None  # inf -> null
    assert rows[0]["median_test_mse"] > 2 * n["best_median_test_mse"]
    assert n["best_median_test_mse"] == min(r["median_test_mse"] for r in rows if r["median_test_mse"] is not None)


def test_tableE1_quick(tmp_path):
    """Eight configurations; the ratios are the losses' ratios; SGD's test loss beats the joint flow's."""
    rows = run_quick("tableE1", tmp_path)["rows"]
    assert sorted((r["task"], len(r["hidden"])) for r in rows) == sorted(
        (t, h) for t in ("paraboloid", "saddle", "circle", "blobs") for h in (1, 2))
    for r in rows:
        assert r["joint_over_sgd_test"] == pytest.approx(r["joint"]["test_loss"] / r["sgd"]["test_loss"])
        assert r["sgd_test_over_train"] == pytest.approx(r["sgd"]["test_loss"] / r["sgd"]["train_loss"])
        assert r["sgd"]["test_loss"] < r["joint"]["test_loss"], r


def test_E3_quick(tmp_path):
    """Sixteen panels (eight configurations, two rules), the same runs as Table E.1."""
    n = run_quick("E3", tmp_path)["panels"]
    t = run_quick("tableE1", tmp_path / "t")["rows"]
    assert len(n) == 8
    for r in t:
        p = n[f"{r['task']}_{len(r['hidden'])}h"]
        assert p["joint"]["test_loss"] == r["joint"]["test_loss"] and p["sgd"]["test_loss"] == r["sgd"]["test_loss"]


def test_E4_quick(tmp_path):
    """Each depth's test MSE falls with the integration time; at the longest time the deepest net lags the shallowest."""
    rows = run_quick("E4", tmp_path)["rows"]
    assert [r["widths"] for r in rows] == [[2, 30, 1], [2, 10, 8, 1], [2, 8, 6, 4, 1]]
    for r in rows:
        assert all(a > b for a, b in zip(r["test_mse"], r["test_mse"][1:])), r
    assert rows[2]["test_mse"][-1] > rows[0]["test_mse"][-1]


def test_the_paper_items_carry_the_papers_model_word_for_word():
    """An installed package has no models/ folder: the items carry models/paraboloid_paper.sheaf's text."""
    from sheafdsl.paper import training

    path = Path(__file__).resolve().parents[1] / "models" / "paraboloid_paper.sheaf"
    assert training.PAPER_TEXT == path.read_text()
