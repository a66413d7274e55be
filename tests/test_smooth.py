"""Smooth and leaky hidden activations: inference is the forward pass, the two-sided equilibrium by
safeguarded Gauss-Newton is stationary and agrees with an independent minimiser, the local update is
the gradient of the equilibrium energy (envelope theorem), and backprop is the chain rule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from sheafdsl.frontend import load_text
from sheafdsl.ir import from_model
from sheafdsl.lowering import init_params
from sheafdsl.lowering.nonlinear import kernel
from sheafdsl.solvers import solve
from sheafdsl.training.backprop import backprop_gradients
from sheafdsl.training.config import TrainConfig
from sheafdsl.training.data import dataset_for
from sheafdsl.lowering.chain import energy_gradient, equilibrium_energy, feedforward, forward
from sheafdsl.solvers.chain import exact_equilibrium
from sheafdsl.training.update import local_gradients
from sheafdsl.training.trainers import make_trainer

SMOOTH = ["tanh", "gelu", "softplus", "sigmoid", "leaky_relu 0.1"]


def net_text(acts, output="identity", w_o=1.0, widths=(2, 5, 4, 1)):
    layers = " -> ".join([str(widths[0])] + [f"{w} {a}" for w, a in zip(widths[1:-1], acts)] + [str(widths[-1])])
    return f"sheaf s\nnetwork mlp : {layers} output {output} weight {w_o:g}\n"


def setup(acts, output="identity", w_o=1.0, widths=(2, 5, 4, 1), seed=0, B=12):
    G = from_model(load_text(net_text(acts, output, w_o, widths)))
    P = init_params(G, seed)
    P = {k: v + (0.2 if k.startswith("b") else 0.0) for k, v in P.items()}
    rng = np.random.default_rng(seed + 1)
    X = rng.uniform(-1.5, 1.5, size=(B, widths[0]))
    if output == "identity":
        Y = (X ** 2).sum(axis=1, keepdims=True) - 0.5 + 0.3 * rng.normal(size=(B, widths[-1]))
    elif output == "sigmoid":
        Y = (rng.uniform(size=(B, widths[-1])) < 0.5).astype(float)
    else:
        Y = np.eye(widths[-1])[rng.integers(0, widths[-1], size=B)]
    return G, feedforward(G), P, X, Y


def manual_forward(acts, P, X):
    v = X
    for l, a in enumerate(acts, 1):
        name, *arg = a.split()
        v = kernel(name).phi(np, v @ P[f"W{l}"].T + P[f"b{l}"], float(arg[0]) if arg else None)
    L = len(acts) + 1
    return v @ P[f"W{L}"].T + P[f"b{L}"]


@pytest.mark.parametrize("act", SMOOTH)
def test_inference_is_the_forward_pass(act):
    """Only the input pinned: δ_Ω is unitriangular, so the harmonic extension is the forward pass (E = 0)."""
    acts = [act, "tanh"]
    G, net, P, X, _ = setup(acts)
    r = solve(G, P, {"x": X})
    np.testing.assert_allclose(r.stalk("y"), manual_forward(acts, P, X), rtol=1e-12, atol=1e-12)
    assert float(np.abs(r.energy).max()) == 0.0
    # the sweep's energy, recomputed from scratch, is zero too
    from sheafdsl.lowering.operators import SheafOperators

    ops = SheafOperators(G, P)
    assert float(ops.energy(r.cochain).max()) < 1e-24
    # the plots' forward pass is the same sweep, and the chain trainers' forward pass agrees
    from sheafdsl.training.diagnostics import forward_pass

    np.testing.assert_allclose(forward_pass(G, P, X), manual_forward(acts, P, X), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(forward(net, P, X)[-1], manual_forward(acts, P, X), rtol=1e-12, atol=1e-12)


def _flat_energy(net, P, X, Y, dims):
    def f(z):
        Vs, off = [X], 0
        for d in dims:
            Vs.append(z[None, off:off + d])
            off += d
        gs, _, _, e = energy_gradient(net, P, Vs, Y)
        return float(e[0]), np.concatenate([g[0] for g in gs])
    return f


@pytest.mark.parametrize("act", SMOOTH)
@pytest.mark.parametrize("output", ["identity", "sigmoid", "softmax"])
def test_two_sided_equilibrium_is_stationary_and_matches_bfgs(act, output):
    widths = (2, 5, 4, 3 if output == "softmax" else 1)
    G, net, P, X, Y = setup([act, "gelu"], output, 0.7, widths)
    eq = exact_equilibrium(net, P, X, Y, tol=1e-11)
    assert eq.consistent_fraction == 1.0 and eq.info["solver"] == "gauss-newton"
    grads, U, _, E = energy_gradient(net, P, eq.V, Y)
    np.testing.assert_allclose(E, eq.energy, rtol=1e-12)
    dims = [v.shape[1] for v in eq.V[1:]]
    kink = np.zeros(sum(dims), dtype=bool)
    if act.startswith("leaky"):
        kink[:dims[0]] = True  # z1 is the tail of the leaky layer
    for b in range(X.shape[0]):
        f = _flat_energy(net, P, X[b:b + 1], Y[b:b + 1], dims)
        z = np.concatenate([v[b] for v in eq.V[1:]])
        held = kink & (z == 0.0)
        e0, gz = f(z)
        assert np.abs(gz[~held]).max() < 1e-8  # stationary off the kinks
        for i in np.flatnonzero(held):  # Filippov: the energy rises on both sides of a sliding unit
            for sgn in (1.0, -1.0):
                dz = np.zeros_like(z)
                dz[i] = sgn * 1e-6
                assert f(z + dz)[0] >= e0 - 1e-15
        if not held.any():
            # an independent minimiser (scipy BFGS on the stalks) from a nearby start reaches the same point
            res = minimize(f, z + 1e-3, jac=True, method="BFGS", options={"gtol": 1e-12, "maxiter": 2000})
            assert res.fun == pytest.approx(e0, rel=1e-8, abs=1e-12)
            np.testing.assert_allclose(res.x, z, atol=1e-5)


def test_a_leaky_unit_slides_on_its_kink():
    """A two-sided equilibrium on a leaky kink is found and certified (this seed has one)."""
    G, net, P, X, Y = setup(["leaky_relu 0.1", "gelu"], "sigmoid", 0.7, (2, 5, 4, 1))
    eq = exact_equilibrium(net, P, X, Y, tol=1e-11)
    assert eq.consistent_fraction == 1.0 and int((eq.V[1] == 0.0).sum()) >= 1


def _residual(net, P, X, Y):
    eq = exact_equilibrium(net, P, X, Y, tol=1e-12)
    assert eq.consistent_fraction == 1.0
    return float(eq.energy.mean()), eq


@pytest.mark.parametrize("act", SMOOTH)
@pytest.mark.parametrize("output", ["identity", "sigmoid", "softmax"])
def test_local_update_is_the_gradient_of_the_equilibrium_energy(act, output):
    """Envelope theorem: d/dθ E(c*(θ); θ) = ∂E/∂θ at c*, checked against central differences of the
    equilibrium energy (each side re-solved from its forward pass)."""
    widths = (2, 4, 3, 3 if output == "softmax" else 1)
    G, net, P, X, Y = setup([act, "softplus"], output, 0.5, widths, seed=3, B=8)
    _, eq = _residual(net, P, X, Y)
    g = local_gradients(net, P, eq, "mean")
    h = 1e-6
    rng = np.random.default_rng(0)
    for name in P:
        D = rng.normal(size=P[name].shape)
        Rp, _ = _residual(net, {**P, name: P[name] + h * D}, X, Y)
        Rm, _ = _residual(net, {**P, name: P[name] - h * D}, X, Y)
        assert float((g[name] * D).sum()) == pytest.approx((Rp - Rm) / (2 * h), rel=1e-5, abs=1e-9), name


@pytest.mark.parametrize("act", SMOOTH + ["relu"])
@pytest.mark.parametrize("output", ["identity", "sigmoid", "softmax"])
def test_backprop_is_the_chain_rule(act, output):
    widths = (2, 4, 3, 3 if output == "softmax" else 1)
    G, net, P, X, Y = setup([act, "tanh"], output, 0.8, widths, seed=2, B=9)
    e, _, grads = backprop_gradients(net, P, X, Y)
    h = 1e-6
    rng = np.random.default_rng(1)
    for name in P:
        D = rng.normal(size=P[name].shape)
        ep, _, _ = backprop_gradients(net, {**P, name: P[name] + h * D}, X, Y)
        em, _, _ = backprop_gradients(net, {**P, name: P[name] - h * D}, X, Y)
        assert float((grads[name] * D).sum()) == pytest.approx((ep.mean() - em.mean()) / (2 * h), rel=1e-5,
                                                               abs=1e-9), name


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), act=st.sampled_from(SMOOTH), w_o=st.sampled_from([0.1, 1.0, 3.0]))
def test_gauss_newton_descends_from_the_forward_pass(seed, act, w_o):
    """The safeguarded iteration never raises the energy above the forward pass's, and its end point is
    stationary wherever it reports consistency."""
    G, net, P, X, Y = setup([act, act], "identity", w_o, (2, 6, 6, 1), seed=seed, B=10)
    eq = exact_equilibrium(net, P, X, Y, tol=1e-10)
    V = forward(net, P, X)
    E0 = equilibrium_energy(net, P, V, [np.zeros_like(v) for v in V[1:]], Y)
    assert np.all(eq.energy <= E0 + 1e-12)
    grads, _, _, _ = energy_gradient(net, P, eq.V, Y)
    if act.startswith("leaky"):  # units held on their kink (sliding) are checked by Filippov, not here
        grads = [np.where(eq.V[j + 1] == 0.0, 0.0, g) if j + 1 in (1, 3) else g for j, g in enumerate(grads)]
    gmax = np.max([np.abs(g).max(axis=1) for g in grads], axis=0)
    assert np.all(gmax[eq.consistent] < 1e-6)  # what is reported consistent is stationary


@pytest.mark.parametrize("act", SMOOTH)
@pytest.mark.parametrize("output", ["identity", "sigmoid", "softmax"])
def test_every_example_of_a_fixed_grid_reaches_a_consistent_point(act, output):
    """Gauss-Newton, then Newton with the kink ratio test, settles every example of 3 seeds x 3 output
    weights (including w_o = 3, where the target pulls hardest)."""
    for seed in range(3):
        for w_o in (0.1, 1.0, 3.0):
            widths = (2, 6, 6, 3 if output == "softmax" else 1)
            G, net, P, X, Y = setup([act, act], output, w_o, widths, seed=seed, B=10)
            eq = exact_equilibrium(net, P, X, Y, tol=1e-10)
            assert eq.consistent_fraction == 1.0, (seed, w_o, eq.info)


@pytest.mark.parametrize("trainer", ["sheaf", "backprop", "joint"])
def test_every_trainer_runs_on_smooth_networks(trainer):
    G = from_model(load_text("sheaf s\nnetwork mlp : 2 -> 8 gelu -> 8 leaky_relu 0.05 -> 1 output identity weight 0.1\n"))
    cfg = TrainConfig(data="paraboloid", n=60, n_test=20, steps=30, optimizer="adam", lr=0.01, seed=0,
                      trainer=trainer)
    T = make_trainer(G, cfg, dataset_for(G, cfg))
    first = T.evaluate()["train_loss"]
    for _ in range(30):
        r = T.step()
    last = T.evaluate()["train_loss"]
    assert np.isfinite(last)
    if trainer != "joint":  # the paper's Euler flow starts its stalks at 0 and needs far more steps
        assert last < first
    if trainer == "sheaf":
        assert r["consistent_fraction"] == 1.0


@pytest.mark.parametrize("act", SMOOTH)
def test_verify_proves_the_structural_claims_and_says_for_which_states(act):
    from sheafdsl.analysis.verify import verify

    G, net, P, X, Y = setup([act, "gelu"])
    r = verify(G)
    status = {c.name: c.status for c in r.claims}
    assert [status[n] for n in ("coboundary_unitriangular", "laplacian_positive_definite",
                                "relative_cohomology_vanishes", "forward_pass_is_harmonic_extension")] == ["proved"] * 4
    detail = {c.name: c.detail for c in r.claims}
    assert "linearised at every state" in detail["coboundary_unitriangular"]
    assert act.split()[0] in detail["coboundary_unitriangular"]
    assert "not claimed positive definite" in detail["laplacian_positive_definite"]


@pytest.mark.parametrize("act", SMOOTH)
def test_the_jacobian_of_the_coboundary_is_unitriangular_at_random_states(act):
    """The numeric counterpart of the proof: at any state c the linearised δ_Ω(c) (input pinned) has
    determinant 1, and L_free(c) = δ_Ω(c)ᵀW²δ_Ω(c) with both ends pinned is positive definite."""
    from sheafdsl.ir import free_indices
    from sheafdsl.lowering import coboundary_matrix, edge_weight_vector

    G, net, P, X, Y = setup([act, "tanh"])
    rng = np.random.default_rng(0)
    inf, tr = free_indices(G, ("input", "value")), free_indices(G, ("input", "target", "value"))
    w2 = edge_weight_vector(G) ** 2
    for _ in range(20):
        c = 3 * rng.normal(size=sum(G.nodes[v]["dim"] for v in G.nodes))
        D = coboundary_matrix(G, P, state=c).toarray()
        assert np.linalg.det(D[:, inf]) == pytest.approx(1.0, rel=1e-9)
        L = D[:, tr].T @ (w2[:, None] * D[:, tr])
        assert np.linalg.eigvalsh(L)[0] > 0
