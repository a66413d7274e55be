"""Matrix-free λ_min(L_free) (Lanczos on L_free⁻¹ through the chain's sweeps) against dense eigvalsh."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sheafdsl.frontend import load_file, load_text
from sheafdsl.ir import free_indices, from_model, total_dim
from sheafdsl.lowering import init_params, laplacian_matrix
from sheafdsl.testing import networks, widths
from sheafdsl.training.conditioning import FreeInverse, lambda_min_free, lanczos_max
from sheafdsl.lowering.chain import feedforward, forward


def dense_spectra(G, P, X):
    """The reference: assemble L_free per example at its forward pass, dense eigvalsh (ascending)."""
    net = feedforward(G)
    V = forward(net, P, X, np)
    free = free_indices(G, ("input", "target", "value"))
    out = []
    for i in range(X.shape[0]):
        c = np.zeros(total_dim(G))
        for j, v in enumerate(net.vertices):
            off = G.nodes[v]["offset"]
            c[off: off + G.nodes[v]["dim"]] = V[j][i]
        L = laplacian_matrix(G, P, state=c).toarray()[np.ix_(free, free)]
        out.append(np.linalg.eigvalsh(L))
    return out


def dense_lambda_min(G, P, X):
    return np.array([ev[0] for ev in dense_spectra(G, P, X)])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=networks(widths=widths(max_layers=4, max_width=6, max_input=3, max_output=3),
                     outputs=("identity", "sigmoid", "softmax")),
       seed=st.integers(0, 2 ** 16))
def test_agrees_with_dense_eigvalsh(case, seed):
    net = feedforward(case.G)
    X = np.random.default_rng(seed).normal(size=(5, net.layers[0].d_in)) * 2
    got = lambda_min_free(net, case.params, X)
    spectra = dense_spectra(case.G, case.params, X)
    want = np.array([ev[0] for ev in spectra])
    atol = 1e-12 * np.abs(want).max()
    # A Ritz value of L_free⁻¹ never exceeds its top eigenvalue: the estimate never undercuts λ_min
    # (beyond the round-off of the sweeps and of eigvalsh, ~1e-12 relative, which hypothesis has hit).
    assert np.all(got >= want * (1 - 1e-10) - atol)
    for g, ev in zip(got, spectra):
        # Within tol of an eigenvalue of L_free (the residual bound) ...
        assert np.min(np.abs(ev - g)) <= 1e-9 * g + atol
        # ... and that eigenvalue is λ_min unless λ_min and λ_2 are closer than the residual can tell apart.
        if len(ev) > 1 and ev[1] - ev[0] > 1e-8 * ev[1]:
            np.testing.assert_allclose(g, ev[0], rtol=1e-9, atol=atol)


WEIGHTED = """sheaf weighted
param W1 : 7 x 3  init he
param b1 : 7      init normal(0.5)
param W2 : 2 x 7  init he
stalk x : 3
stalk z1 : 7
stalk a1 : 7
stalk s : 7
stalk z2 : 2
stalk y : 2
edge aff1 : x -> z1 affine W1 b1 weight 0.5
edge act1 : z1 -> a1 relu weight 2
edge sc : a1 -> s maps 3 | 1 weight 1.5
edge aff2 : s -> z2 linear W2
edge out : z2 -> y maps [[1, 2], [0, 1]] | 1 weight 0.1
pin x = input
pin y = target
"""


@pytest.mark.parametrize("src", ["models/paraboloid.sheaf", "models/digits.sheaf", WEIGHTED])
def test_weighted_and_constant_maps(src):
    G = from_model(load_file(src) if src.endswith(".sheaf") else load_text(src))
    net = feedforward(G)
    P = init_params(G, 3)
    X = np.random.default_rng(0).uniform(0, 1, size=(6, net.layers[0].d_in))
    np.testing.assert_allclose(lambda_min_free(net, P, X), dense_lambda_min(G, P, X), rtol=1e-9)


def test_the_operator_is_the_inverse_of_the_assembled_laplacian():
    G = from_model(load_text(WEIGHTED))
    net = feedforward(G)
    P = init_params(G, 1)
    X = np.random.default_rng(2).normal(size=(1, 3))
    V = forward(net, P, X, np)
    gates = [(V[k] >= 0).astype(float) if layer.kind == "relu" else None for k, layer in enumerate(net.layers)]
    op = FreeInverse(net, P, gates, np.broadcast_to(np.array([[1.0, 2.0], [0.0, 1.0]]), (1, 2, 2)), np)
    Linv = op.apply(np.eye(op.N)[None])[0]
    c = np.zeros(total_dim(G))
    for j, v in enumerate(net.vertices):
        c[G.nodes[v]["offset"]: G.nodes[v]["offset"] + G.nodes[v]["dim"]] = V[j][0]
    free = free_indices(G, ("input", "target", "value"))
    L = laplacian_matrix(G, P, state=c).toarray()[np.ix_(free, free)]
    np.testing.assert_allclose(Linv @ L, np.eye(op.N), atol=1e-10)


def test_lanczos_finds_the_top_eigenvalue_of_a_clustered_spectrum():
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.normal(size=(40, 40)))
    ev = np.r_[np.linspace(1.0, 1.001, 39), 1.002]  # a tiny gap at the top
    A = (Q * ev) @ Q.T
    top = lanczos_max(lambda q: q @ A, 1, 40, np)
    assert top[0] == pytest.approx(1.002, rel=1e-9)


def test_no_free_stalk_is_infinite():
    G = from_model(load_text("sheaf s\nstalk x : 1\nstalk y : 1\nedge o : x -> y identity\n"
                             "pin x = input\npin y = target\n"))
    assert np.isinf(lambda_min_free(feedforward(G), {}, np.zeros((3, 1)))).all()


def test_saturated_softmax_cluster_regression():
    """A saturated softmax makes L_free = I + O(1e-9): the two eigenvalues sit closer than the residual
    test resolves. The estimate is one of them, never below λ_min (hypothesis found this, seed 218)."""
    G = from_model(load_text("sheaf net\nnetwork mlp : 2 -> 2 output softmax weight 1\n"))
    P = {"W1": np.array([[-1.5, 1.0], [2.0, 0.5]]), "b1": np.array([0.0, 2.0])}
    X = np.random.default_rng(218).normal(size=(5, 2)) * 2
    got = lambda_min_free(feedforward(G), P, X)
    spectra = dense_spectra(G, P, X)
    for g, ev in zip(got, spectra):
        assert ev[0] * (1 - 1e-10) <= g <= ev[-1] * (1 + 1e-10)
        assert np.min(np.abs(ev - g)) <= 1e-9 * g
