"""The shallow-chain kernel of the fast phase reaches the general active-set loop's equilibrium."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sheafdsl.frontend import load_file, load_text
from sheafdsl.ir import from_model
from sheafdsl.lowering import init_params
from sheafdsl.training.config import TrainConfig
from sheafdsl.training.data import load_dataset
from sheafdsl.lowering.chain import apply, feedforward
from sheafdsl.solvers.chain import _refresh_margin, exact_equilibrium, kkt_ok, refreshed_start, solve_pattern
from sheafdsl.solvers.shallow import ShallowPiece, is_shallow, shallow_chain
from sheafdsl.training.trainers import make_trainer


def shallow_text(n_in, d, extra, out, weights, first_bias):
    """x → z1 (affine/linear) → a1 (relu) → h_1 … h_k (linear maps) → y (one output row)."""
    w = iter(weights)
    lines = ["sheaf s", f"stalk x : {n_in}", f"stalk z1 : {d}", f"stalk a1 : {d}",
             f"param W1 : {d} x {n_in} init he"]
    if first_bias:
        lines += [f"param b1 : {d} init normal(0.5)", f"edge e1 : x -> z1 affine W1 b1 weight {next(w)}"]
    else:
        lines.append(f"edge e1 : x -> z1 linear W1 weight {next(w)}")
    lines.append(f"edge act : z1 -> a1 relu weight {next(w)}")
    prev, dim = "a1", d
    for j, (kind, e) in enumerate(extra):
        name = f"h{j}"
        lines.append(f"stalk {name} : {e}")
        if kind == "identity" and e == dim:
            lines.append(f"edge l{j} : {prev} -> {name} identity weight {next(w)}")
        else:
            lines.append(f"param A{j} : {e} x {dim} init xavier")
            if kind == "affine":
                lines += [f"param c{j} : {e} init normal(0.5)", f"edge l{j} : {prev} -> {name} affine A{j} c{j} weight {next(w)}"]
            else:
                lines.append(f"edge l{j} : {prev} -> {name} linear A{j} weight {next(w)}")
        prev, dim = name, e
    lines.append("stalk y : 1")
    if out == "sigmoid" or (out == "identity" and dim == 1):
        if dim != 1:
            lines += ["stalk q : 1", "param Q : 1 x %d init xavier" % dim, f"edge lq : {prev} -> q linear Q"]
            prev = "q"
        lines.append(f"edge out : {prev} -> y {out} weight {next(w)}")
    else:
        lines += [f"param Wo : 1 x {dim} init xavier", "param bo : 1 init normal(0.5)",
                  f"edge out : {prev} -> y affine Wo bo weight {next(w)}"]
    lines += ["pin x = input", "pin y = target"]
    return "\n".join(lines) + "\n"


def _problem(text, B, seed):
    G = from_model(load_text(text))
    net = feedforward(G)
    rng = np.random.default_rng(seed)
    P = init_params(G, seed)
    X = rng.normal(size=(B, G.nodes[net.input]["dim"]))
    Y = rng.integers(0, 2, (B, 1)).astype(float) if net.output.fn == "sigmoid" else 2 * rng.normal(size=(B, 1))
    return G, net, P, X, Y, rng


def assert_same_equilibrium(a, b, rtol):
    assert np.array_equal(a.consistent, b.consistent)
    for k in b.S:
        assert np.array_equal(a.S[k], b.S[k])
    for x, y in zip(a.V + a.U + [a.out_disc], b.V + b.U + [b.out_disc]):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(a.energy, b.energy, rtol=rtol, atol=rtol)
    assert a.iterations == b.iterations


extra_layers = st.lists(st.tuples(st.sampled_from(["affine", "linear", "identity"]), st.integers(1, 5)), max_size=2)


@settings(max_examples=40, deadline=None)
@given(n_in=st.integers(1, 3), d=st.integers(1, 12), extra=extra_layers,
       out=st.sampled_from(["identity", "affine", "sigmoid"]),
       weights=st.lists(st.sampled_from([0.3, 1.0, 2.0]), min_size=6, max_size=6),
       first_bias=st.booleans(), seed=st.integers(0, 10_000))
def test_shallow_kernel_matches_the_general_loop(n_in, d, extra, out, weights, first_bias, seed):
    """From the forward pass, and warm-started after a parameter step (so units cross, slide and are
    released), the kernel lands where the general loop does: same states, same consistency flags, the
    same stalks and discords up to round-off, the same number of pattern solves."""
    text = shallow_text(n_in, d, extra, out, weights, first_bias)
    G, net, P, X, Y, rng = _problem(text, 40, seed)
    assert is_shallow(net)
    rtol = 1e-9 if net.output.fn == "linear" else 1e-6  # sigmoid: Newton stops at a batch-wide tolerance
    cold = [exact_equilibrium(net, P, X, Y, kernel=k) for k in ("auto", "general")]
    assert_same_equilibrium(*cold, rtol)
    P2 = {k: v + 0.3 * rng.normal(size=v.shape) for k, v in P.items()}
    init = (cold[1].V, cold[1].S)
    fresh = [exact_equilibrium(net, P2, X, Y, init=init, kernel=k, refresh=True) for k in ("auto", "general")]
    assert_same_equilibrium(*fresh, rtol)  # the kernel's refresh (fixed row) is refreshed_start (sweep)
    warm = [exact_equilibrium(net, P2, X, Y, init=init, kernel=k) for k in ("auto", "general")]
    assert_same_equilibrium(*warm, rtol)
    # independent of either loop: the reported states' exact pattern solution, and it is a KKT point
    eq = warm[0]
    sol = solve_pattern(net, P2, X, Y, eq.S)
    for x, y in zip(eq.V[1:] + eq.U, sol.V[1:] + sol.U):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol)
    assert np.array_equal(kkt_ok(net, eq.S, sol) & eq.consistent, eq.consistent)


def _moved(path, scale, seed):
    """A shallow model's chain on 200 paraboloid points, its equilibrium at the initial parameters (the warm
    start) and the parameters moved by ``scale`` · N(0, 1) (a few training steps): (net, X, Y, prev, P2)."""
    G = from_model(load_file(path))
    d = load_dataset("paraboloid", n=200, n_test=10)
    net, X, Y = feedforward(G), d.X_train, d.Y_train
    P = init_params(G, 0)
    rng = np.random.default_rng(seed)
    return net, X, Y, exact_equilibrium(net, P, X, Y), {k: v + scale * rng.normal(size=v.shape) for k, v in P.items()}


def test_the_warm_start_exercises_every_event():
    """The fixed-seed regression behind the property test: crossings, sliding units and releases
    all occur, and the iteration bound reports the current pattern's solution as not consistent."""
    net, X, Y, prev, P2 = _moved("models/paraboloid_paper.sheaf", 0.2, 1)
    a, b = (exact_equilibrium(net, P2, X, Y, init=(prev.V, prev.S), kernel=k) for k in ("auto", "general"))
    assert_same_equilibrium(a, b, 1e-9)
    assert a.iterations >= 3 and (a.S[1] == 0).any() and a.consistent.all()
    assert not np.array_equal(a.S[1], prev.S[1])
    for it in (1, 2):
        a, b = (exact_equilibrium(net, P2, X, Y, init=(prev.V, prev.S), kernel=k, max_iter=it)
                for k in ("auto", "general"))
        assert (~a.consistent).any()
        again = solve_pattern(net, P2, X, Y, a.S)
        for x, y in zip(a.V[1:] + a.U, again.V[1:] + again.U):
            np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-12)
        # the general loop's whole-batch mode reports the solve before its last state change: compare
        # only the examples both call consistent
        both = a.consistent & b.consistent
        assert np.array_equal(a.S[1][both], b.S[1][both])


@pytest.mark.parametrize("path", ["models/paraboloid.sheaf", "models/paraboloid_paper.sheaf"])
def test_the_kernels_refreshed_start_is_refreshed_start(path):
    """ShallowPiece.refreshed (the warm force pulled back by the fixed row g_in) re-reads exactly the
    states and values that refreshed_start's sweep does, and a refreshed warm start saves pattern solves."""
    net, X, Y, prev, P2 = _moved(path, 0.1, 3)
    pre = apply(net.layers[0], P2, X)
    margin = _refresh_margin(net, Y, 1e-9)
    V, S, rho = refreshed_start(net, P2, Y, prev.V, prev.S, pre, margin)
    assert not np.array_equal(S[1], prev.S[1])
    v1, s1 = ShallowPiece(net, P2, X, Y, np, 1e-10, 1e-9, pre).refreshed(prev.V[1], prev.S[1], rho, margin)
    assert np.array_equal(s1, S[1])
    np.testing.assert_allclose(v1, V[1], rtol=1e-13, atol=1e-13)
    fresh, stale = (exact_equilibrium(net, P2, X, Y, init=(prev.V, prev.S), refresh=r) for r in (True, False))
    assert fresh.consistent.all() and fresh.iterations < stale.iterations


@pytest.mark.parametrize("text,shallow", [
    ("sheaf a\nnetwork mlp : 2 -> 30 -> 1\n", True),
    ("sheaf b\nnetwork mlp : 2 -> 6 -> 1 relu output sigmoid\n", True),
    ("sheaf c\nnetwork mlp : 2 -> 6 -> 5 -> 1\n", False),  # two ReLU layers
    ("sheaf d\nnetwork mlp : 2 -> 6 -> 3 relu output softmax\n", False),  # three output rows
    ("sheaf e\nnetwork mlp : 2 -> 6 -> 2\n", False),  # two output rows
])
def test_which_chains_are_shallow(text, shallow):
    assert is_shallow(feedforward(from_model(load_text(text)))) == shallow


def test_chain_constants_are_the_chain():
    """g = J_2 and β: the output of the linear chain after the ReLU is g · a + β for every a."""
    text = shallow_text(2, 4, [("affine", 3), ("linear", 2)], "affine", [1.0, 0.5, 2.0, 1.0, 0.3, 1.0], True)
    G, net, P, X, Y, rng = _problem(text, 5, 3)
    C = shallow_chain(net, P, np)
    a = rng.normal(size=(7, 4))
    v = a
    for layer in net.layers[2:]:
        A = P[layer.param]
        v = v @ A.T + (P[layer.bias] if layer.bias else 0.0)
    p = v @ P["Wo"].T + P["bo"]
    np.testing.assert_allclose(p[:, 0], a @ C.g + C.beta, rtol=1e-12)


def test_training_with_the_kernel_follows_the_general_loop(monkeypatch):
    """Fifty Adam steps of the sheaf trainer on the paraboloid: the same parameters either way."""
    import sheafdsl.solvers.chain as eqm

    G = from_model(load_file("models/paraboloid.sheaf"))
    cfg = TrainConfig.from_sources(G.graph.get("train") or {}, {"steps": 50, "n": 100, "n_test": 10})
    from sheafdsl.training.data import dataset_for

    data = dataset_for(G, cfg)
    fast = make_trainer(G, cfg, data)
    for _ in range(50):
        fast.step()
    monkeypatch.setattr(eqm, "is_shallow", lambda net: False)
    slow = make_trainer(G, cfg, data)
    for _ in range(50):
        slow.step()
    for k in fast.params:
        np.testing.assert_allclose(fast.params[k], slow.params[k], rtol=1e-8, atol=1e-10)
