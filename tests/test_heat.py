"""The heat equation's features for everyone: named initial stalks (x0), a fixed step (the paper's plain
Euler flow), the "largest change below tol" stopping rule, and the recorded trajectory (discord per
iteration, per layer and per edge, stalks, activation-pattern crossings) from the one solver
(`solvers/diffusion.py`), through `solve`, `Sheaf.infer` and `sheaf infer --solver diffusion --trace`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import sheafdsl as sd
from sheafdsl.cli.main import cli
from sheafdsl.errors import SheafError
from sheafdsl.ir import INFERENCE, free_indices, layers
from sheafdsl.lowering import init_params, laplacian_matrix
from sheafdsl.solvers import solve

ROOT = Path(__file__).resolve().parents[1]
X = np.array([[0.5, -0.3]])


def net(widths, output="identity"):
    return sd.loads("sheaf n\nnetwork n : " + " -> ".join(map(str, widths)) + f" output {output} weight 1\n")


def heat(G, P, x, **kw):
    kw = {"method": "diffusion", "x0": "random", "step": 0.01, "maxiter": 600, **kw}
    return solve(G, P, {"x": x}, **kw)


def states(values):
    """ON/SLIDE/OFF (1/0/−1) of coordinates from their sign: the solver's rule, recomputed."""
    return np.sign(values).astype(np.int8)


def test_tracing_does_not_change_the_solve():
    sh = net([2, 6, 4, 1])
    G, P = sh.graph, sh.init_params(seed=2)
    x = np.random.default_rng(0).normal(size=(5, 2))
    for kw in ({"step": 0.01, "change_tol": 1e-12}, {"step": None, "maxiter": None}):
        plain = heat(G, P, x, **kw)
        traced = heat(G, P, x, trajectory=True, **kw)
        assert np.array_equal(plain.cochain, traced.cochain) and plain.iterations == traced.iterations
        assert plain.trajectory is None and traced.trajectory is not None


@settings(max_examples=12, deadline=None)
@given(widths=st.lists(st.integers(1, 5), min_size=2, max_size=3), seed=st.integers(0, 2**16))
def test_trajectory_is_what_the_flow_did(widths, seed):
    """Every recorded quantity recomputed from the recorded stalks: the energy, the per-edge discords
    (summing to the layers and the total), and the crossings (exactly the sign changes of the gated
    coordinates between consecutive steps); the energy never rises."""
    sh = net([2, *widths, 1])
    G, P = sh.graph, sh.init_params(seed=seed)
    x = np.random.default_rng(seed).normal(size=(3, 2))
    res = heat(G, P, x, x0_seed=seed, maxiter=150, trajectory=True)
    t = res.trajectory
    T = 151
    assert t.iterations.tolist() == list(range(T)) and t.values.shape == (T, 3, res.cochain.shape[1])
    from sheafdsl.lowering.operators import SheafOperators

    ops = SheafOperators(G, P)
    prob = ops.restrict(INFERENCE)
    flat = t.values.reshape(T * 3, -1)
    assert np.allclose(t.energy.reshape(-1), prob.energy(flat), rtol=1e-12, atol=1e-300)
    r = ops.discord(flat)
    for j, e in enumerate(ops.edges):
        assert np.allclose(t.edge_energy[:, :, j].reshape(-1), 0.5 * e.weight ** 2 * (r[:, e.rows] ** 2).sum(axis=1))
    assert np.all(np.diff(t.energy, axis=0) <= 1e-13 * (1 + np.abs(t.energy[:-1])))
    gated = prob.s.gated_host
    S = states(t.values[:, :, gated])
    k, b, u = np.nonzero(S[1:] != S[:-1])
    got = sorted(zip(t.crossings.iteration.tolist(), t.crossings.example.tolist(), t.crossings.coordinate.tolist()))
    assert got == sorted(zip((k + 1).tolist(), b.tolist(), gated[u].tolist()))
    assert np.array_equal(res.cochain, t.values[-1])


def test_fixed_step_is_the_plain_explicit_euler_flow():
    """On a linear sheaf the traced flow is c_Ω ← c_Ω − dt (L c)_Ω step by step (an independent loop on the
    assembled Laplacian)."""
    sh = sd.load(ROOT / "models" / "triangle.sheaf")
    G = sh.graph
    P = sh.init_params()
    res = solve(G, P, {}, method="diffusion", x0="random", x0_seed=4, step=0.05, maxiter=80, trajectory=True)
    L = laplacian_matrix(G, P).toarray()
    free = free_indices(G, INFERENCE)
    c = res.trajectory.values[0, 0].copy()
    for k in range(1, 81):
        c[free] -= 0.05 * (L @ c)[free]
        assert np.allclose(res.trajectory.values[k, 0], c, rtol=0, atol=1e-13)


def test_change_rule_stops_at_the_first_small_step():
    sh = sd.load(ROOT / "models" / "triangle.sheaf")
    G, P = sh.graph, sh.init_params()
    res = solve(G, P, {}, method="diffusion", x0="random", step=0.1, change_tol=1e-9, maxiter=10_000, trajectory=True)
    v = res.trajectory.values[:, 0]
    change = np.abs(np.diff(v, axis=0)).max(axis=1)
    assert change[-1] < 1e-9 and np.all(change[:-1] >= 1e-9) and bool(res.converged[0])
    assert res.iterations == len(change) < 10_000
    capped = solve(G, P, {}, method="diffusion", x0="random", step=0.1, change_tol=1e-30, maxiter=50)
    assert capped.iterations == 50 and not bool(capped.converged[0])  # never reached: not converged


def test_random_initial_stalks_are_seeded_and_keep_the_pins():
    sh = net([2, 4, 1])
    G, P = sh.graph, sh.init_params(seed=0)
    a = heat(G, P, X, maxiter=1, trajectory=True).trajectory.values[0]
    b = heat(G, P, X, maxiter=1, trajectory=True).trajectory.values[0]
    c = heat(G, P, X, maxiter=1, x0_seed=1, trajectory=True).trajectory.values[0]
    xs = G.nodes["x"]
    assert np.array_equal(a, b) and not np.allclose(a, c)
    assert np.array_equal(a[:, xs["offset"]:xs["offset"] + 2], X)
    free = free_indices(G, INFERENCE)
    assert np.array_equal(a[0, free], np.random.default_rng(0).standard_normal((1, len(free)))[0])
    zero = heat(G, P, X, maxiter=1, x0="zeros", trajectory=True).trajectory.values[0]
    assert np.all(zero[0, free] == 0)
    fwd = heat(G, P, X, maxiter=3, x0="forward", trajectory=True)
    assert np.allclose(fwd.trajectory.energy, 0.0, atol=1e-28)  # the forward pass is the harmonic extension


def test_infer_trajectory_layers_stalks_and_heads():
    sh = net([2, 6, 4, 1], output="sigmoid")
    r = sh.infer([0.5, -0.3], params=sh.init_params(seed=1), solver="diffusion", x0="random", dt=0.02,
                 maxiter=400, trace=True, trace_stalks=["z1", "y"], trace_every=10)
    t = r.trajectory
    assert t.iterations.tolist() == list(range(0, 401, 10)) and t.dt == pytest.approx(0.02) and t.every == 10
    assert set(t.stalks) == {"z1", "y"} and t.stalks["z1"].shape == (41, 1, 6)
    assert np.allclose(t.discord, sum(t.layers.values())) and np.allclose(t.discord, sum(t.edges.values()))
    assert sorted(t.layers) == [1, 2, 3] and set(layers(sh.graph)[0].values()) == {1, 2, 3}
    # the sigmoid head is eliminated by the solver: recorded as φ of its input, and the last is the result
    z3 = r.stalks["z3"]
    assert np.allclose(t.stalks["y"][-1], r.stalks["y"]) and np.allclose(r.stalks["y"], 1 / (1 + np.exp(-z3)))
    assert all(c["stalk"] in ("z1", "z2") and c["direction"] in (1, -1) for c in t.crossings)
    j = t.to_json(batch=False)
    assert len(j["discord"]) == 41 and len(j["stalks"]["y"][0]) == 1 and "example" not in (j["crossings"] or [{}])[0]


def test_alpha_scales_the_step():
    sh = net([2, 4, 1])
    P = sh.init_params(seed=0)
    a = sh.infer([0.5, -0.3], params=P, solver="diffusion", x0="random", dt=0.01, alpha=2.0, maxiter=50)
    b = sh.infer([0.5, -0.3], params=P, solver="diffusion", x0="random", dt=0.02, maxiter=50)
    assert np.array_equal(a.result.cochain, b.result.cochain)


@pytest.mark.parametrize("kw, text", [
    ({"solver": "exact", "trace": True}, "not the `exact` solver's"),
    ({"solver": "cg", "x0": "random"}, "x0"),
    ({"solver": "diffusion", "dt": 0.0}, "dt must be a positive"),
    ({"solver": "diffusion", "change_tol": -1.0}, "change_tol must be"),
    ({"solver": "diffusion", "trace": True, "trace_every": 0}, "trace_every"),
    ({"solver": "diffusion", "trace_stalks": ["y"]}, "trace_stalks without trace"),
    ({"solver": "diffusion", "trace": True, "trace_stalks": ["q1"]}, "unknown stalk `q1`"),
    ({"solver": "diffusion", "x0": "ones"}, "unknown initial stalks"),
    ({"solver": "diffusion", "x0": "random", "x0_seed": -1}, "seed"),
])
def test_bad_heat_options_are_E662(kw, text):
    sh = net([2, 4, 1])
    with pytest.raises(SheafError) as e:
        sh.infer([0.5, -0.3], **kw)
    assert e.value.codes == ["E662"] and text in str(e.value)


def test_forward_start_needs_a_forward_pass():
    sh = sd.load(ROOT / "models" / "triangle.sheaf")  # a cycle: no sweep
    with pytest.raises(SheafError) as e:
        sh.infer(solver="diffusion", x0="forward")
    assert e.value.codes == ["E662"] and "forward pass" in str(e.value)


# ------------------------------------------------------------------------------------------------
# sheaf infer --solver diffusion --trace [FILE]

PARA = str(ROOT / "models" / "paraboloid_paper.sheaf")
ARGS = [PARA, "--input", "[0.5, -0.3]", "--solver", "diffusion", "--x0", "random", "--dt", "0.01", "--maxiter", "300"]


def run(*args):
    res = CliRunner().invoke(cli, ["infer", *args])
    assert "Traceback" not in res.output
    return res


def test_cli_trace_json_npz_and_text_agree(tmp_path):
    j = json.loads(run(*ARGS, "--trace", "--json").stdout)
    tr = j["trace"]
    assert j["ok"] and tr["iterations"] == list(range(301)) and tr["dt"] == pytest.approx(0.01)
    assert set(tr["layers"]) == {"1", "2"} and set(tr["stalks"]) == {"x", "z1", "a1", "z2", "y"}
    assert tr["crossings"] and {"iteration", "stalk", "index", "before", "after", "direction"} == set(tr["crossings"][0])
    assert tr["stalks"]["y"][-1] == pytest.approx(j["stalks"]["y"])
    f = tmp_path / "t.json"
    r = run(*ARGS, "--trace", str(f), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["trace"] == str(f) and json.loads(f.read_text()) == tr
    npz = tmp_path / "t.npz"
    assert run(*ARGS, "--trace", str(npz), "--trace-every", "100", "--trace-stalks", "y,z1").exit_code == 0
    with np.load(npz) as z:
        assert z["iterations"].tolist() == [0, 100, 200, 300] and z["stalk_z1"].shape == (4, 1, 30)
        assert "stalk_a1" not in z and np.allclose(z["discord"], z["layer_1"] + z["layer_2"])
        assert z["crossing_iteration"].tolist() == [c["iteration"] for c in tr["crossings"]]
        assert z["crossing_stalk"].tolist() == [c["stalk"] for c in tr["crossings"]]
    text = run(*ARGS, "--trace")
    assert text.exit_code == 0 and "activation-pattern crossing" in text.stdout and "layer 2" in text.stdout


def test_cli_change_tol_and_errors(tmp_path):
    j = json.loads(run(*ARGS[:-2], "--maxiter", "20000", "--dt", "0.5", "--change-tol", "1e-13", "--json").stdout)
    assert j["converged"] and j["iterations"] < 20000
    r = run(PARA, "--input", "[0.5, -0.3]", "--trace")
    assert r.exit_code == 1 and "E662" in r.stderr
    r = run(*ARGS, "--trace-every", "5")
    assert r.exit_code == 1 and "E662" in r.stderr and "need --trace" in r.stderr
    r = run(*ARGS, "--trace", str(tmp_path / "t.csv"))
    assert r.exit_code == 1 and "E663" in r.stderr
    r = run(*ARGS, "--trace", str(tmp_path / "missing" / "t.json"))
    assert r.exit_code == 1 and "E663" in r.stderr
    assert run(*ARGS, "--x0", "ones").exit_code == 2  # not a choice: usage
