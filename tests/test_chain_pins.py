"""The trainer's hot path: data pins checked once (ChainPins), the same solve and the same errors as plain values."""

from __future__ import annotations

import numpy as np
import pytest

from sheafdsl.errors import SheafError
from sheafdsl.frontend import load_text
from sheafdsl.ir import TRAINING, from_model
from sheafdsl.lowering import init_params
from sheafdsl.lowering.chain import feedforward
from sheafdsl.solvers import solve
from sheafdsl.solvers.chain import ChainPins, ChainResult, _refresh_margin, chain_pins

TEXTS = {
    "shallow": "sheaf s\nnetwork n : 2 -> 6 -> 1 relu output identity weight 0.5\n",
    "deep": "sheaf d\nnetwork n : 2 -> 5 -> 5 -> 1 relu output identity weight 1\n",
}


def _setup(kind, B=40, seed=0):
    G = from_model(load_text(TEXTS[kind]))
    net = feedforward(G)
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, (B, 2))
    Y = (X ** 2).sum(axis=1, keepdims=True) - 0.6 + 0.3 * rng.standard_normal((B, 1))
    return G, net, init_params(G, seed), X, Y


@pytest.mark.parametrize("kind", sorted(TEXTS))
def test_pins_give_the_plain_solve(kind):
    G, net, P, X, Y = _setup(kind)
    plain = solve(net, P, {"x": X, "y": Y}, boundary=TRAINING)
    pins = chain_pins(net, {"x": X, "y": Y})
    fast = solve(net, P, pins, boundary=TRAINING)
    assert isinstance(fast, ChainResult)
    for a, b in zip(plain.equilibrium.V + plain.equilibrium.U, fast.equilibrium.V + fast.equilibrium.U):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(plain.cochain, fast.cochain)
    np.testing.assert_array_equal(plain.state, fast.state)
    np.testing.assert_allclose(plain.residual, fast.residual, rtol=0, atol=0)
    assert fast.info == plain.info == int((~plain.consistent).sum())
    # the lazy attributes mean what the general solver's mean: the residual certifies the equilibrium
    assert float(np.max(fast.residual)) < 1e-8
    np.testing.assert_allclose(fast.energy, solve(G, P, {"x": X, "y": Y}, boundary=TRAINING, piece="elimination").energy,
                               rtol=1e-9, atol=1e-12)
    # a warm start at the equilibrium: one pattern solve, the same point
    again = solve(net, P, pins, boundary=TRAINING, warm=fast)
    assert again.iterations == 1
    np.testing.assert_allclose(again.cochain, fast.cochain, rtol=0, atol=1e-12)


def test_take_is_the_rows_and_keeps_the_pins_max():
    _, net, P, X, Y = _setup("deep", B=30)
    pins = chain_pins(net, {"x": X, "y": Y})
    assert chain_pins(net, pins) is pins and pins.take(None) is pins
    assert pins.pins_max == float(max(np.abs(X).max(), np.abs(Y).max()))
    idx = np.array([3, 7, 11, 29])
    sub = pins.take(idx)
    np.testing.assert_array_equal(sub["x"], X[idx])
    np.testing.assert_array_equal(sub["y"], Y[idx])
    assert sub.pins_max == float(max(np.abs(X[idx]).max(), np.abs(Y[idx]).max()))
    assert pins.target_max == float(np.abs(Y).max()) and sub.target_max == float(np.abs(Y[idx]).max())
    # the warm re-read margin from the kept max|y| is the one computed from the targets
    assert _refresh_margin(net, Y, 1e-9, pins.target_max) == _refresh_margin(net, Y, 1e-9)
    assert dict(sub).keys() == {"x", "y"} and len(sub) == 2
    with pytest.raises(KeyError):
        sub["z"]
    a = solve(net, P, sub, boundary=TRAINING)
    b = solve(net, P, {"x": X[idx], "y": Y[idx]}, boundary=TRAINING)
    np.testing.assert_array_equal(a.cochain, b.cochain)


@pytest.mark.parametrize("values, code", [
    ({"x": np.zeros((2, 3)), "y": np.zeros((2, 1))}, "E507"),
    ({"x": np.zeros((2, 2)), "y": np.zeros((3, 1))}, "E507"),
    ({"x": np.array([[np.nan, 0.0]]), "y": np.zeros((1, 1))}, "E508"),
    ({"x": np.zeros((1, 2))}, "E506"),
    ({"x": np.zeros((1, 2)), "y": np.zeros((1, 1)), "q": np.zeros((1, 1))}, "E505"),
])
def test_pins_check_as_the_solver_does(values, code):
    _, net, P, _, _ = _setup("shallow")
    with pytest.raises(SheafError) as exc:
        chain_pins(net, values)
    assert exc.value.diagnostics[0].code == code
    with pytest.raises(SheafError) as plain:
        solve(net, P, values, boundary=TRAINING)
    assert plain.value.diagnostics[0].code == code


def test_integer_pins_are_converted_once():
    _, net, P, X, Y = _setup("shallow", B=5)
    pins = chain_pins(net, {"x": np.round(X).astype(int), "y": np.round(Y).astype(int)})
    assert pins.X.dtype == float and pins.Y.dtype == float
    np.testing.assert_array_equal(solve(net, P, pins, boundary=TRAINING).cochain,
                                  solve(net, P, {"x": np.round(X), "y": np.round(Y)}, boundary=TRAINING).cochain)


def test_pins_of_another_chain_take_the_checked_path():
    """Pins built for one chain are not trusted for another: solve checks them against the chain it solves."""
    _, net, P, X, Y = _setup("shallow", B=5)
    G2, net2, P2, _, _ = _setup("deep", B=5)
    pins = chain_pins(net, {"x": X, "y": Y})
    assert isinstance(pins, ChainPins)
    a = solve(net2, P2, pins, boundary=TRAINING)
    b = solve(net2, P2, {"x": X, "y": Y}, boundary=TRAINING)
    np.testing.assert_array_equal(a.cochain, b.cochain)
