"""The chain pattern solve (solvers.chain.solve_pattern) against an independent dense reference.

For fixed unit states the equilibrium is the minimiser of a convex quadratic in the discords u_1..u_m
(v_k = A_k(σ) v_{k−1} + b_k + u_k) under the linear constraints v_k[i] = 0 at the sliding units:
a dense KKT system per example. The batch solve takes the one-row solve for every example and adds the
coupled sliding rows (deep relu layers) as a Schur update only on the examples that have them (a sigmoid
output: those examples take the coupled Newton solve instead): the result must be that minimiser for every
example, whichever way it went, and the same as solving the whole batch by the coupled path.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sheafdsl.frontend import load_text
from sheafdsl.ir import from_model
from sheafdsl.lowering import init_params
from sheafdsl.lowering.chain import apply, feedforward, out_map
from sheafdsl.solvers import chain as chain_mod
from sheafdsl.solvers.chain import solve_pattern


def _net(widths, w_o, weights=None):
    text = "sheaf p\nnetwork n : " + " -> ".join(map(str, widths)) + f" relu output identity weight {w_o}\n"
    G = from_model(load_text(text))
    net = feedforward(G)
    if weights is not None:
        for layer, w in zip(net.layers, weights):
            layer.weight = w
    return G, net


def _reference(net, P, x, y, S):
    """Dense KKT solve of one example (x (d_in,), y (1,)): (V, U) at the minimiser for states S."""
    layers = net.layers
    dims = [l.d_out for l in layers]
    n = sum(dims)
    gates = {k: (S[k] == 1).astype(float)[None, :] for k in S}

    def sweep(u):
        parts = np.split(u, np.cumsum(dims)[:-1])
        V = [x[None, :]]
        for k, layer in enumerate(layers):
            V.append(apply(layer, P, V[-1], gates.get(k)) + parts[k][None, :])
        cons = [V[k][0, i] for k in sorted(S) if k >= 1 for i in np.flatnonzero(S[k] == 0)]
        return out_map(net.output, P, V[-1])[0], np.array(cons), V, parts

    p0, c0, _, _ = sweep(np.zeros(n))
    Jp = np.stack([sweep(e)[0] - p0 for e in np.eye(n)], axis=1)
    C = np.stack([sweep(e)[1] - c0 for e in np.eye(n)], axis=1) if c0.size else np.zeros((0, n))
    W = np.diag(np.concatenate([np.full(d, l.weight ** 2) for d, l in zip(dims, layers)]))
    wo2 = net.output.weight ** 2
    H = W + wo2 * Jp.T @ Jp
    r = C.shape[0]
    K = np.block([[H, C.T], [C, np.zeros((r, r))]])
    rhs = np.concatenate([wo2 * Jp.T @ (y - p0), -c0])
    u = np.linalg.solve(K, rhs)[:n]
    _, _, V, parts = sweep(u)
    return [v[0] for v in V], parts


def _states(rng, net, B, p_slide, deep_rows):
    S = {}
    for k in net.relu_layers:
        d = net.layers[k].d_in
        s = rng.choice(np.array([1, -1], dtype=np.int8), size=(B, d))
        slide = rng.random((B, d)) < p_slide
        if k >= 2:  # deep sliding units only on the chosen examples (the others take the one-row solve)
            slide &= deep_rows[:, None]
        s[slide] = 0
        S[k] = s
    return S


def _check(net, P, X, Y, S, tol=1e-9):
    sol = solve_pattern(net, P, X, Y, S)
    for i in range(X.shape[0]):
        V, U = _reference(net, P, X[i], Y[i], {k: s[i] for k, s in S.items()})
        scale = 1.0 + max(float(np.abs(v).max()) for v in V)
        for a, b in zip(sol.V, V):
            np.testing.assert_allclose(a[i], b, rtol=0, atol=tol * scale)
        for a, b in zip(sol.U, U):
            np.testing.assert_allclose(a[i], b, rtol=0, atol=tol * scale)
    return sol


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hidden=st.lists(st.integers(2, 4), min_size=2, max_size=3), B=st.integers(2, 7), seed=st.integers(0, 10_000),
       p_slide=st.sampled_from([0.2, 0.5]), w_o=st.sampled_from([1.0, 0.1, 3.0]),
       which=st.sampled_from(["none", "some", "all"]))
def test_mixed_batches_solve_each_example_exactly(hidden, B, seed, p_slide, w_o, which):
    G, net = _net([2] + hidden + [1], w_o)
    rng = np.random.default_rng(seed)
    P = init_params(G, seed)
    X = rng.uniform(-2, 2, (B, 2))
    Y = rng.normal(size=(B, 1))
    deep_rows = {"none": np.zeros(B, bool), "all": np.ones(B, bool), "some": rng.random(B) < 0.5}[which]
    _check(net, P, X, Y, _states(rng, net, B, p_slide, deep_rows))


def test_mixed_batch_regression_matches_the_whole_batch_coupled_solve():
    """Fixed seed: a batch where some examples have sliding units on the 2nd and 3rd hidden layers and others
    not. The one-row solve with its Schur update equals the dense reference and the coupled path run on the
    whole batch."""
    G, net = _net([2, 6, 5, 4, 1], 1.0, weights=[1.0, 0.7, 1.3, 1.0, 0.9, 1.1, 1.0])
    rng = np.random.default_rng(20261201)
    P = init_params(G, 3)
    B = 24
    X = rng.uniform(-2, 2, (B, 2))
    Y = rng.normal(size=(B, 1))
    deep_rows = np.zeros(B, bool)
    deep_rows[[1, 4, 5, 11, 17, 23]] = True
    S = _states(rng, net, B, 0.3, deep_rows)
    coupled = sum((S[k] == 0).sum(axis=1) for k in S if k >= 2) > 0
    assert coupled.any() and not coupled.all()
    sol = _check(net, P, X, Y, S)
    whole, rho = _coupled_whole_batch(net, P, X, Y, S)  # what every example took before the split
    for a, b in zip(sol.V + sol.U, whole.V + whole.U):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-11)
    np.testing.assert_allclose(sol.rho, rho, rtol=0, atol=1e-11)
    np.testing.assert_allclose(sol.energy, whole.energy, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("out", ["sigmoid"])
def test_split_batch_equals_each_example_alone_with_a_sigmoid_output(out):
    """A sigmoid output (Newton in the coupled path, the scalar solve in the one-row path): the batch solve
    equals solving each example on its own (a batch of one takes one path or the other)."""
    G = from_model(load_text(f"sheaf s\nnetwork n : 2 -> 4 -> 4 -> 1 relu output {out}\n"))
    net = feedforward(G)
    rng = np.random.default_rng(5)
    P = init_params(G, 5)
    B = 12
    X = rng.uniform(-2, 2, (B, 2))
    Y = (rng.random((B, 1)) < 0.5).astype(float)
    deep_rows = rng.random(B) < 0.5
    deep_rows[:2] = [True, False]
    S = _states(rng, net, B, 0.4, deep_rows)
    sol = solve_pattern(net, P, X, Y, S)
    for i in range(B):
        one = solve_pattern(net, P, X[i:i + 1], Y[i:i + 1], {k: s[i:i + 1] for k, s in S.items()})
        for a, b in zip(sol.V + sol.U, one.V + one.U):
            np.testing.assert_allclose(a[i:i + 1], b, rtol=0, atol=1e-9)
        assert sol.newton_ok[i] == one.newton_ok[0]


def _coupled_whole_batch(net, P, X, Y, S):
    """The coupled (n_out + n_slide)-row path run on the whole batch: the general chain elimination."""
    gates = {k: (S[k] == 1).astype(float) for k in S}
    F = [X]
    for k, layer in enumerate(net.layers):
        F.append(apply(layer, P, F[-1], gates.get(k)))
    deep = [k for k in S if k >= 2]
    counts = sum((S[k] == 0).sum(axis=1) for k in deep)
    U, rho, _ = chain_mod._coupled_discords(net, P, Y, gates, F[-1], {k: F[k] for k in deep},
                                            {k: S[k] == 0 for k in deep}, counts, np, 1e-10, 30, None)
    return chain_mod._finish(net, P, X, Y, S, gates, F, U, np.ones(X.shape[0], bool), np, True), rho


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hidden=st.lists(st.integers(2, 5), min_size=2, max_size=3), B=st.integers(2, 9), seed=st.integers(0, 10_000),
       p_slide=st.sampled_from([0.2, 0.5]), w_o=st.sampled_from([1.0, 0.1, 3.0]),
       unit_weights=st.booleans())
def test_schur_update_equals_the_coupled_solve_with_edge_weights(hidden, B, seed, p_slide, w_o, unit_weights):
    """The Schur update's one Gram product over all vertices (edge weights w_k ≠ 1 scale its blocks by 1/w_k)
    equals the coupled path on the whole batch to round-off, and the dense reference."""
    rng = np.random.default_rng(seed)
    n_layers = 2 * len(hidden) + 1
    weights = None if unit_weights else list(rng.uniform(0.5, 2.0, n_layers))
    G, net = _net([2] + hidden + [1], w_o, weights=weights)
    P = init_params(G, seed)
    X = rng.uniform(-2, 2, (B, 2))
    Y = rng.normal(size=(B, 1))
    S = _states(rng, net, B, p_slide, rng.random(B) < 0.6)
    sol = _check(net, P, X, Y, S)
    whole, rho = _coupled_whole_batch(net, P, X, Y, S)
    scale = 1.0 + max(float(np.abs(v).max()) for v in whole.V + whole.U)
    for a, b in zip(sol.V + sol.U, whole.V + whole.U):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-11 * scale)
    np.testing.assert_allclose(sol.rho, rho, rtol=0, atol=1e-11 * scale)
