"""Discord diagnostics (grouping by edge, type, layer), the feed-forward pass, the plots, and `sheaf diagnose`."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from sheafdsl.frontend import load_text
from sheafdsl.ir import Identity, Scaled, add_edge, add_pin, add_stalk, from_model, new_sheaf
from sheafdsl.lowering import init_params
from sheafdsl.training import plots as P
from sheafdsl.training.diagnostics import diagnose, edge_layers, edge_type, forward_pass

PARABOLOID = "models/paraboloid.sheaf"


def _ir(text):
    return from_model(load_text(text))


def _paraboloid():
    from sheafdsl.frontend import load_file

    return from_model(load_file(PARABOLOID))


def _triangle():
    G = new_sheaf("triangle")
    for v in "abc":
        add_stalk(G, v, 1)
    add_edge(G, "ab", "a", "b", src_map=Identity(), dst_map=Identity())
    add_edge(G, "bc", "b", "c", src_map=Identity(), dst_map=Identity())
    add_edge(G, "ca", "c", "a", src_map=Identity(), dst_map=Scaled(-1.0))
    add_pin(G, "a", "input")
    add_pin(G, "c", "target")
    return G


def test_layers_and_types_of_an_mlp():
    G = _ir("sheaf m\nnetwork n : 3 -> 4 -> 5 -> 2\n")
    assert edge_layers(G) == {"aff1": 1, "act1": 1, "aff2": 2, "act2": 2, "aff3": 3, "out": 3}
    types = {name: edge_type(G, u, v, d) for u, v, name, d in G.edges(keys=True, data=True)}
    assert types == {"aff1": "affine", "act1": "activation", "aff2": "affine", "act2": "activation", "aff3": "affine",
                     "out": "output"}


def test_grouping_adds_energies_and_shares_sum_to_one():
    G = _paraboloid()
    w_out = next(d["weight"] for *_, name, d in G.edges(keys=True, data=True) if name == "out")
    # an edge's energy is w_e² times its mean ½‖discord‖²: the out edge has weight 0.1 in the model
    disc = {"aff1": 0.5, "act1": 0.25, "aff2": 0.125, "out": 0.125 / w_out ** 2}
    rep = diagnose(G, disc)
    assert rep.total == pytest.approx(1.0)
    assert [r.name for r in rep.edges] == ["aff1", "act1", "aff2", "out"]
    assert sum(r.share for r in rep.edges) == pytest.approx(1.0)
    by_type = {g.group: (g.edges, g.energy) for g in rep.types}
    assert by_type == {"affine": (["aff1", "aff2"], 0.625), "activation": (["act1"], 0.25), "output": (["out"], 0.125)}
    by_layer = {g.group: (g.edges, g.energy) for g in rep.layers}
    assert by_layer == {"1": (["aff1", "act1"], 0.75), "2": (["aff2", "out"], 0.25)}
    js = json.loads(json.dumps(rep.to_json()))
    assert js["total"] == pytest.approx(1.0) and len(js["edges"]) == 4


def test_edge_weights_scale_the_energy():
    G = _ir("sheaf w\nstalk a : 1\nstalk b : 1\nstalk c : 1\nedge ab : a -> b identity weight 3\n"
            "edge bc : b -> c identity\npin a = input\npin c = target\n")
    rep = diagnose(G, {"ab": 1.0, "bc": 1.0})
    assert [(r.discord, r.energy) for r in rep.edges] == [(1.0, 9.0), (1.0, 1.0)]
    assert rep.total == 10.0 and [r.share for r in rep.edges] == [0.9, 0.1]


def test_zero_discord_has_zero_shares():
    rep = diagnose(_paraboloid(), {"aff1": 0.0, "act1": 0.0, "aff2": 0.0, "out": 0.0})
    assert rep.total == 0 and all(r.share == 0 for r in rep.edges)


def test_a_cycle_has_no_layers():
    G = _triangle()
    assert set(edge_layers(G).values()) == {None}
    rep = diagnose(G, {"ab": 1.0, "bc": 2.0, "ca": 3.0})
    assert rep.layers == [] and {g.group for g in rep.types} == {"other", "output"}


def test_forward_pass_is_the_network(rng=np.random.default_rng(3)):
    G = _ir("sheaf m\nnetwork n : 3 -> 5 -> 4 -> 2 relu output softmax\n")
    Pm = init_params(G, seed=4)
    Pm = {k: v + 0.1 * rng.normal(size=v.shape) for k, v in Pm.items()}  # nonzero biases
    X = rng.normal(size=(7, 3))
    h = np.maximum(X @ Pm["W1"].T + Pm["b1"], 0)
    h = np.maximum(h @ Pm["W2"].T + Pm["b2"], 0)
    z = h @ Pm["W3"].T + Pm["b3"]
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(forward_pass(G, Pm, X), p, rtol=1e-13, atol=1e-15)


def test_forward_pass_is_the_harmonic_extension():
    """Cross-check against the independent solver: with only the input pinned, the harmonic
    extension of a feed-forward sheaf is the forward pass (for sigmoid outputs too)."""
    from sheafdsl.solvers import solve

    rng = np.random.default_rng(5)
    for text in ("sheaf a\nnetwork n : 2 -> 6 -> 3 -> 1\n", "sheaf b\nnetwork n : 2 -> 5 -> 1 relu output sigmoid\n"):
        G = _ir(text)
        Pm = {k: v + 0.2 * rng.normal(size=v.shape) for k, v in init_params(G, 1).items()}
        X = rng.normal(size=(9, 2))
        want = solve(G, Pm, {"x": X}, method="exact", sources=("input", "value")).stalk("y")
        np.testing.assert_allclose(forward_pass(G, Pm, X), want, rtol=1e-9, atol=1e-10)


def test_predictor_uses_the_solver_for_general_sheaves():
    from sheafdsl.frontend import load_file
    from sheafdsl.solvers import solve
    from sheafdsl.training.diagnostics import predictor

    G = from_model(load_file("models/residual.sheaf"))
    Pm = init_params(G, 0)
    X = np.random.default_rng(0).normal(size=(6, 2))
    assert forward_pass(G, Pm, X) is None  # a skip connection: a2 has two incoming edges
    want = solve(G, Pm, {"x": X}, method="exact", sources=("input", "value")).stalk("y")
    np.testing.assert_allclose(predictor(G, Pm)(X), want)
    assert predictor(_triangle(), {}) is not None and predictor(new_sheaf("empty"), {}) is None


def test_forward_pass_declines_what_is_not_feed_forward():
    assert forward_pass(_triangle(), {}, np.zeros((2, 1))) is None
    G = _ir("sheaf m\nnetwork n : 2 -> 3 -> 1\npin z1 ~ 0 weight 2\n")  # a soft pin changes the extension
    assert forward_pass(G, init_params(G, 0), np.zeros((2, 2))) is None
    G = _ir("sheaf m\nnetwork n : 2 -> 3 -> 1\n")
    assert forward_pass(G, init_params(G, 0), np.zeros((2, 3))) is None  # wrong input width


# ----------------------------------------------------------------------------------------------
# plots: real PNGs with something drawn on them


def _png_ok(path):
    import matplotlib.image as mpimg

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.shape[0] > 200 and img.shape[1] > 300
    assert img[..., :3].std() > 0.05  # not a blank canvas


def test_plots_are_written(tmp_path):
    G = _paraboloid()
    Pm = init_params(G, 0)
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, (60, 2))
    Y = (X ** 2).sum(1, keepdims=True) - 2 / 3
    data = SimpleNamespace(X_train=X, Y_train=Y, X_test=X[:20], Y_test=Y[:20], n_classes=None, task="regression")
    recs = [{"step": s, "loss": 1 / s, "baseline_loss": 0.5 / s} for s in range(10, 110, 10)]
    recs.append({"step": 120, "loss": None})  # a missing value is skipped, not plotted as 0
    predict = lambda A: forward_pass(G, Pm, A)  # noqa: E731
    paths = [P.plot_loss(recs, tmp_path / "loss.png"),
             P.plot_discord(diagnose(G, {"aff1": 1e-4, "act1": 0.3, "aff2": 0.2, "out": 0.0}), tmp_path / "d.png"),
             P.plot_surface(predict, data, tmp_path / "surface.png")]
    labels = (np.linalg.norm(X, axis=1) > 1.5).astype(float)[:, None]
    cdata = SimpleNamespace(X_train=X, Y_train=labels, X_test=X[:20], Y_test=labels[:20], n_classes=2, task="binary")
    paths.append(P.plot_boundary(lambda A: 1 / (1 + np.exp(-predict(A))), cdata, tmp_path / "boundary.png"))
    onehot = np.eye(3)[rng.integers(0, 3, 60)]
    mdata = SimpleNamespace(X_train=X, Y_train=onehot, X_test=X[:20], Y_test=onehot[:20], n_classes=3, task="multiclass")
    paths.append(P.plot_boundary(lambda A: np.stack([A[:, 0], A[:, 1], -A.sum(1)], 1), mdata, tmp_path / "multi.png"))
    paths.append(P.plot_discord(diagnose(_triangle(), {"ab": 1.0, "bc": 2.0, "ca": 0.5}), tmp_path / "cycle.png"))
    for p in paths:
        _png_ok(p)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["boundary.png", "cycle.png", "d.png", "loss.png", "multi.png",
                                                          "surface.png"]


# ----------------------------------------------------------------------------------------------
# `sheaf diagnose`


def _cli(args):
    from click.testing import CliRunner

    from sheafdsl.cli.main import cli

    res = CliRunner().invoke(cli, args)
    assert "Traceback" not in res.output
    return res


def _expected_discords(params, seed=0):
    from sheafdsl.training.config import TrainConfig
    from sheafdsl.training.data import dataset_for
    from sheafdsl.training.trainers import make_trainer

    G = _paraboloid()
    cfg = TrainConfig.from_sources(G.graph["train"], {"seed": seed})
    data = dataset_for(G, cfg)
    return make_trainer(G, cfg, data, params=params).edge_discords(data.X_train, data.Y_train)


def test_diagnose_a_file_uses_the_seeded_initial_parameters(tmp_path):
    png = tmp_path / "d.png"
    res = _cli(["diagnose", PARABOLOID, "--json", "--plot", str(png), "--seed", "3"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    want = _expected_discords(init_params(_paraboloid(), 3), seed=3)
    got = {e["name"]: e["discord"] for e in out["edges"]}
    assert got == pytest.approx(want, rel=1e-12)
    w2 = {name: d["weight"] ** 2 for *_, name, d in _paraboloid().edges(keys=True, data=True)}
    assert out["total"] == pytest.approx(sum(w2[k] * v for k, v in want.items()))  # energy: w_e² · discord
    assert {g["group"] for g in out["types"]} == {"affine", "activation", "output"}
    assert [g["group"] for g in out["layers"]] == ["1", "2"]
    assert out["lambda_min"] > 0 and out["plot"] == str(png)
    _png_ok(png)


def test_diagnose_a_run_dir_uses_the_checkpoint(tmp_path):
    from sheafdsl.training.checkpoint import load_checkpoint

    run = tmp_path / "run"
    res = _cli(["train", PARABOLOID, "--steps", "25", "--log-every", "25", "--out", str(run), "--no-plots",
                "--no-baseline"])
    assert res.exit_code == 0, res.output
    res = _cli(["diagnose", str(run)])
    assert res.exit_code == 0, res.output
    text = res.stdout
    for needle in ("discord per edge", "per type", "per layer", "aff1", "act1", "aff2", "out", "step 25", "λ_min"):
        assert needle in text, needle
    _png_ok(run / "diagnose.png")
    res = _cli(["diagnose", str(run), "--json", "--no-plot"])
    out = json.loads(res.stdout)
    want = _expected_discords(load_checkpoint(run / "checkpoint.npz").params)
    assert {e["name"]: e["discord"] for e in out["edges"]} == pytest.approx(want, rel=1e-12)
    assert out["plot"] is None
    init = _expected_discords(init_params(_paraboloid(), 0))
    assert sum(want.values()) < sum(init.values())  # training lowered the residual


def test_diagnose_bad_targets(tmp_path):
    res = _cli(["diagnose", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "E635" in res.stderr
    res = _cli(["diagnose", str(tmp_path)])
    assert res.exit_code == 1 and "E635" in res.stderr and "not a run directory" in res.stderr
    res = _cli(["diagnose", PARABOLOID, "--data", "nosuch", "--no-plot"])
    assert res.exit_code == 1 and "unknown data set" in res.stderr
    res = _cli(["diagnose", PARABOLOID, "--split", "validation"])
    assert res.exit_code == 2
