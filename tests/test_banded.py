"""Banded chain elimination (solvers.banded): the same pattern minimiser as the output-space solve, the
κ lower bound it gives, and the deep chains it makes tractable."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sheafdsl.solvers.banded as banded
from sheafdsl.frontend import load_text
from sheafdsl.ir import TRAINING, from_model
from sheafdsl.lowering import init_params
from sheafdsl.lowering.chain import feedforward
from sheafdsl.solvers import solve
from sheafdsl.solvers.chain import exact_equilibrium, kkt_ok, solve_pattern
from sheafdsl.testing.sheaves import networks, widths
from test_conditioning import dense_spectra  # noqa: E402  (the dense L_free reference)


def _targets(net, rng, B):
    n = net.output.d_out
    if net.output.fn == "softmax":
        return np.eye(n)[rng.integers(0, n, B)]
    if net.output.fn == "sigmoid":
        return rng.integers(0, 2, (B, n)).astype(float)
    return rng.normal(size=(B, n)) * 2


def _both(monkeypatch, net, P, X, Y, S):
    """The pattern solve by the output-space rows and by banded elimination, forced either way."""
    monkeypatch.setattr(banded, "ROWS_PER_WIDTH", np.inf)
    rows = solve_pattern(net, P, X, Y, S)
    monkeypatch.setattr(banded, "ROWS_PER_WIDTH", 0.0)
    band = solve_pattern(net, P, X, Y, S)
    return rows, band


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(case=networks(widths=widths(min_layers=2, max_layers=5, max_width=5, max_input=3, max_output=3),
                     outputs=("identity", "sigmoid", "softmax"), weight_values=st.floats(-1.5, 1.5)),
       seed=st.integers(0, 2 ** 16))
def test_banded_equals_the_output_space_solve(case, seed, monkeypatch):
    """Every pattern (on, off and sliding units in every hidden layer): the same stalks, discords, energy."""
    net = feedforward(case.G)
    rng = np.random.default_rng(seed)
    B = 12
    X = rng.normal(size=(B, net.layers[0].d_in))
    Y = _targets(net, rng, B)
    S = {k: rng.integers(-1, 2, (B, net.layers[k].d_in)).astype(np.int8) for k in net.relu_layers}
    rows, band = _both(monkeypatch, net, case.params, X, Y, S)
    assert rows.newton_ok.all() and band.newton_ok.all()
    scale = 1.0 + max(float(np.abs(v).max()) for v in rows.V)
    for a, b in zip(rows.V + rows.U + [rows.out_disc], band.V + band.U + [band.out_disc]):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(band.energy, rows.energy, rtol=1e-9, atol=1e-12 * scale ** 2)
    for k in S:  # the sliding tails are held at exactly 0
        if k >= 1:
            assert (band.V[k][S[k] == 0] == 0).all()


def _dense_kappa(G, P, X):
    """κ(L_free) per example at its forward pass, from test_conditioning's dense reference spectra."""
    return np.array([ev[-1] / ev[0] for ev in dense_spectra(G, P, X)])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=networks(widths=widths(min_layers=1, max_layers=5, max_width=5, max_input=3, max_output=2),
                     outputs=("identity", "sigmoid", "softmax")),
       seed=st.integers(0, 2 ** 16))
def test_compliance_bound_never_exceeds_the_dense_condition_number(case, seed):
    net = feedforward(case.G)
    X = np.random.default_rng(seed).normal(size=(4, net.layers[0].d_in)) * 2
    bound, _ = banded.compliance_bound(net, case.params, X)
    want = _dense_kappa(case.G, case.params, X)
    assert (bound <= want * (1 + 1e-8)).all(), (bound, want)


def _deep(depth: int, width: int = 4) -> str:
    return ("sheaf deep\nnetwork n : 2 -> " + " -> ".join([str(width)] * depth)
            + " -> 1 relu output identity weight 1\npin x = input\npin y = target\n")


def test_compliance_bound_grows_with_depth_and_names_the_edge():
    """Deep narrow ReLU chains at He initialisation: the bound passes 1e15 well before 500 layers."""
    G = from_model(load_text(_deep(500)))
    net = feedforward(G)
    X = np.random.default_rng(0).uniform(-2, 2, (16, 2))
    bound, edge = banded.compliance_bound(net, init_params(G, 0), X, limit=1e15)
    assert float(bound.max()) > 1e15 and edge is not None and edge.startswith(("aff", "act"))
    small = from_model(load_text(_deep(10)))
    b10, e10 = banded.compliance_bound(feedforward(small), init_params(small, 0), X, limit=1e15)
    assert float(b10.max()) < 1e6 and e10 is None


def test_deep_chain_equilibrium_is_consistent_and_matches_the_output_space_solve(monkeypatch):
    """A 30-layer width-4 chain: many units slide (the banded piece takes over), every example settles, and
    the equilibrium is the one the output-space solve reaches at the same final pattern."""
    G = from_model(load_text(_deep(30)))
    net = feedforward(G)
    P = init_params(G, 0)
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, (60, 2))
    Y = (X ** 2).sum(axis=1, keepdims=True) - 2 / 3
    eq = exact_equilibrium(net, P, X, Y)
    assert eq.consistent.all()
    sliding = sum((eq.S[k] == 0).sum(axis=1) for k in eq.S if k >= 2)
    assert int(sliding.max()) > 2 * 4, "the fixture should have more sliding rows than the widths"
    rows, band = _both(monkeypatch, net, P, X, Y, eq.S)
    for a, b in zip(rows.V, band.V):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-8 * (1 + np.abs(a).max()))
    assert kkt_ok(net, eq.S, band).all()


@pytest.mark.slow
def test_banded_is_faster_than_the_output_space_rows_on_a_deep_chain(monkeypatch):
    """The 50-layer chain's pattern at its equilibrium (≈ 100 sliding rows): banded is several times faster."""
    G = from_model(load_text(_deep(50)))
    net = feedforward(G)
    P = init_params(G, 0)
    X = np.random.default_rng(0).uniform(-2, 2, (100, 2))
    Y = (X ** 2).sum(axis=1, keepdims=True)
    S = solve(G, P, {"x": X, "y": Y}, boundary=TRAINING).equilibrium.S
    times = {}
    for name, ratio in (("rows", np.inf), ("banded", 0.0)):
        monkeypatch.setattr(banded, "ROWS_PER_WIDTH", ratio)
        t = time.perf_counter()
        solve_pattern(net, P, X, Y, S)
        times[name] = time.perf_counter() - t
    assert times["banded"] * 3 < times["rows"], times
