"""The batched matrix-free operators agree with the assembled scipy.sparse reference, and L is symmetric PSD."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sheafdsl.errors import SheafError
from sheafdsl.frontend import load_text
from sheafdsl.ir import (Constant, Identity, ParamMap, Scaled, add_edge, add_param, add_pin, add_soft_pin, add_stalk,
                         from_model, new_sheaf, pinned_indices)
from sheafdsl.lowering import init_params
from sheafdsl.lowering.assemble import coboundary_matrix, edge_weight_vector, laplacian_matrix, offset_vector
from sheafdsl.lowering.operators import SheafOperators


def network(widths, output="identity"):
    arrows = " -> ".join(str(w) for w in widths)
    return from_model(load_text(f"sheaf t\nnetwork n : {arrows} relu output {output}\n"))


def general_sheaf(rng, n_vertices=5, extra=3):
    """A random sheaf with constant, scaled and parameterised maps, a weighted edge, and a partial soft pin."""
    G = new_sheaf("g")
    dims = rng.integers(1, 4, size=n_vertices)
    for i, d in enumerate(dims):
        add_stalk(G, f"v{i}", int(d))
    add_param(G, "P", (2, int(dims[1])), "normal", std=1.0)
    pairs = [(i, i + 1) for i in range(n_vertices - 1)] + [tuple(rng.choice(n_vertices, 2, replace=False)) for _ in range(extra)]
    for k, (i, j) in enumerate(pairs):
        de = 2
        src = Constant(rng.normal(size=(de, dims[i])))
        dst = Constant(rng.normal(size=(de, dims[j])))
        add_edge(G, f"e{k}", f"v{i}", f"v{j}", src_map=src, dst_map=dst, dim=de, weight=float(rng.uniform(0.5, 2)))
    add_edge(G, "scaled", "v0", "v4", src_map=Scaled(2.0), dst_map=Constant(rng.normal(size=(dims[0], dims[4]))),
             dim=int(dims[0]))
    add_edge(G, "pe", "v1", "v2", src_map=ParamMap("P"), dst_map=Constant(rng.normal(size=(2, dims[2]))), dim=2)
    add_soft_pin(G, "soft", "v3", [0.5], 3.0, indices=[0])
    add_pin(G, "v0", "value", value=rng.normal(size=int(dims[0])))
    return G


def ref_matrices(G, P, state=None, gates=None):
    return coboundary_matrix(G, P, state, gates).toarray(), edge_weight_vector(G), offset_vector(G, P)


widths_st = st.lists(st.integers(1, 5), min_size=2, max_size=4)


@settings(max_examples=25, deadline=None)
@given(widths=widths_st, seed=st.integers(0, 10_000), output=st.sampled_from(["identity", "sigmoid", "softmax"]))
def test_delta_matches_assembled_on_networks(widths, seed, output):
    if output == "softmax" and widths[-1] < 2:  # a softmax of one number is constant (E227)
        widths = [*widths[:-1], 2]
    G = network(widths, output)
    P = init_params(G, seed)
    ops = SheafOperators(G, P)
    rng = np.random.default_rng(seed)
    B = 3
    c = rng.normal(size=(B, ops.N))
    state = rng.normal(size=(B, ops.N))
    r = rng.normal(size=(B, ops.M))
    D = ops.delta(c, state=state)
    DT = ops.delta_T(r, state=state)
    Lc = ops.laplacian(c, state=state)
    for b in range(B):
        A = coboundary_matrix(G, P, state[b]).toarray()
        w2 = edge_weight_vector(G) ** 2
        np.testing.assert_allclose(D[b], A @ c[b], atol=1e-12)
        np.testing.assert_allclose(DT[b], A.T @ r[b], atol=1e-12)
        np.testing.assert_allclose(Lc[b], laplacian_matrix(G, P, state[b]) @ c[b], atol=1e-11)
        np.testing.assert_allclose(Lc[b], A.T @ (w2 * (A @ c[b])), atol=1e-11)
    # explicit gate patterns per example
    gates = {e.name: rng.integers(0, 2, size=(B, e.dim)).astype(float) for e in ops.relu_edges}
    D = ops.delta(c, gates=gates)
    for b in range(B):
        A = coboundary_matrix(G, P, None, {k: v[b] for k, v in gates.items()}).toarray()
        np.testing.assert_allclose(D[b], A @ c[b], atol=1e-12)


def test_discord_and_energy_of_a_relu_network_are_the_state_linearisation():
    G = network([3, 4, 4, 2])
    P = init_params(G, 1)
    ops = SheafOperators(G, P)
    c = np.random.default_rng(2).normal(size=(4, ops.N))
    for b in range(4):
        A, w, o = ref_matrices(G, P, state=c[b])
        np.testing.assert_allclose(ops.discord(c)[b], A @ c[b] - o, atol=1e-12)
        np.testing.assert_allclose(ops.energy(c)[b], 0.5 * np.sum((w * (A @ c[b] - o)) ** 2), rtol=1e-12)


@pytest.mark.parametrize("threshold", [1, 10_000])  # all-sparse constant block, and edge by edge
def test_general_sheaf_operators_match_assembled(threshold):
    rng = np.random.default_rng(5)
    G = general_sheaf(rng)
    P = init_params(G, 3)
    ops = SheafOperators(G, P, sparse_threshold=threshold)
    assert (ops._block is not None) == (threshold == 1)
    A, w, o = ref_matrices(G, P)
    c = rng.normal(size=(6, ops.N))
    r = rng.normal(size=(6, ops.M))
    np.testing.assert_allclose(ops.delta(c), c @ A.T, atol=1e-12)
    np.testing.assert_allclose(ops.delta_T(r), r @ A, atol=1e-12)
    np.testing.assert_allclose(ops.discord(c), c @ A.T - o, atol=1e-12)
    np.testing.assert_allclose(ops.laplacian(c), c @ laplacian_matrix(G, P).toarray().T, atol=1e-10)


def test_large_constant_sheaf_uses_one_sparse_block():
    G = new_sheaf("ring")
    n = 40
    for i in range(n):
        add_stalk(G, f"v{i}", 2)
    rng = np.random.default_rng(0)
    for i in range(n):
        add_edge(G, f"e{i}", f"v{i}", f"v{(i + 1) % n}", src_map=Constant(rng.normal(size=(2, 2))), dst_map=Identity())
    ops = SheafOperators(G, {})
    assert ops._block is not None
    A = coboundary_matrix(G, {}).toarray()
    c = rng.normal(size=(3, ops.N))
    np.testing.assert_allclose(ops.delta(c), c @ A.T, atol=1e-12)
    np.testing.assert_allclose(ops.delta_T(ops.delta(c)), c @ (A.T @ A), atol=1e-10)


@settings(max_examples=20, deadline=None)
@given(widths=widths_st, seed=st.integers(0, 10_000))
def test_laplacian_is_symmetric_psd(widths, seed):
    G = network(widths)
    P = init_params(G, seed)
    ops = SheafOperators(G, P)
    rng = np.random.default_rng(seed)
    gates = {e.name: rng.integers(0, 2, size=(1, e.dim)).astype(float) for e in ops.relu_edges}
    Lm = ops.laplacian(np.eye(ops.N), gates=gates)  # rows: L e_i
    np.testing.assert_allclose(Lm, Lm.T, atol=1e-10)
    assert np.linalg.eigvalsh(Lm).min() >= -1e-9 * max(1.0, np.abs(Lm).max())


@settings(max_examples=20, deadline=None)
@given(widths=widths_st, seed=st.integers(0, 10_000),
       sources=st.sampled_from([("input", "value"), ("input", "target", "value")]))
def test_free_laplacian_and_boundary_coupling(widths, seed, sources):
    G = network(widths)
    P = init_params(G, seed)
    ops = SheafOperators(G, P)
    prob = ops.restrict(sources)
    rng = np.random.default_rng(seed)
    B = 3
    state = rng.normal(size=(B, ops.N))
    x = rng.normal(size=(B, prob.n))
    c = rng.normal(size=(B, ops.N))
    free, pinned = prob.s.free_host, prob.s.pinned_host
    np.testing.assert_array_equal(pinned, pinned_indices(G, sources))
    Lf = prob.L_free(x, state=state)
    rhs = prob.boundary_rhs(c, state=state)
    for b in range(B):
        L = laplacian_matrix(G, P, state[b]).toarray()
        A, w, o = ref_matrices(G, P, state=state[b])
        np.testing.assert_allclose(Lf[b], L[np.ix_(free, free)] @ x[b], atol=1e-10)
        expect = -L[np.ix_(free, pinned)] @ c[b, pinned] + (A.T @ (w ** 2 * o))[free]
        np.testing.assert_allclose(rhs[b], expect, atol=1e-10)
        # the dense per-pattern Hessian is the same matrix
        gates = (state[b, prob.s.gated_host] >= 0).astype(float)[None]
        H = prob.dense_hessian(state[b:b + 1], gates)[0]
        np.testing.assert_allclose(H, L[np.ix_(free, free)], atol=1e-10)
        np.testing.assert_allclose(prob.hvp(x[b:b + 1], state[b:b + 1], gates)[0], H @ x[b], atol=1e-10)


@settings(max_examples=15, deadline=None)
@given(widths=widths_st, seed=st.integers(0, 10_000), output=st.sampled_from(["identity", "sigmoid", "softmax"]))
def test_gradient_matches_finite_differences(widths, seed, output):
    if output == "softmax" and widths[-1] < 2:  # a softmax of one number is constant (E227)
        widths = [*widths[:-1], 2]
    G = network(widths, output)
    P = init_params(G, seed)
    ops = SheafOperators(G, P)
    prob = ops.restrict(("input", "target", "value"))
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(1, ops.N))
    c[:, ops.vertex["y"]] = rng.uniform(0.1, 0.9, size=(1, widths[-1]))
    g, _ = prob.gradient(c, prob.gates_from(c))
    h = 1e-6
    for j in prob.s.free_host[:12]:
        if j in set(prob.s.gated_host) and abs(c[0, j]) < 1e-3:
            continue
        cp, cm = c.copy(), c.copy()
        cp[0, j] += h
        cm[0, j] -= h
        fd = (prob.energy(cp) - prob.energy(cm))[0] / (2 * h)
        assert abs(fd - g[0, j]) <= 1e-5 * max(1.0, abs(fd))


@settings(max_examples=15, deadline=None)
@given(widths=widths_st, seed=st.integers(0, 10_000))
def test_hessian_bound_dominates_every_pattern(widths, seed):
    G = network(widths)
    P = init_params(G, seed)
    prob = SheafOperators(G, P).restrict(("input", "target", "value"))
    bound = prob.hessian_bound()
    rng = np.random.default_rng(seed)
    nu = len(prob.s.gated_host)
    c = rng.normal(size=(8, prob.ops.N))
    H = prob.dense_hessian(c, rng.integers(0, 2, size=(8, nu)).astype(float))
    assert np.linalg.eigvalsh(H).max() <= bound * (1 + 1e-9)
    assert bound <= 10 * np.linalg.eigvalsh(H).max() + 10  # and not absurdly loose


def test_sweep_plan_detects_unitriangular_structure():
    G = network([2, 3, 3, 1])
    ops = SheafOperators(G, init_params(G, 0))
    plan = ops.restrict(("input", "value")).s.sweep
    assert [e.name for e in plan] == ["aff1", "act1", "aff2", "act2", "aff3", "out"]
    assert ops.restrict(("input", "target", "value")).s.sweep is None  # a pinned head: not a sweep
    rng = np.random.default_rng(0)
    assert ops.restrict(()).s.sweep is None  # nothing pinned: x is free and is the head of no edge
    Gg = general_sheaf(rng)
    assert SheafOperators(Gg, init_params(Gg, 0)).restrict(("value",)).s.sweep is None


def test_with_params_rebinds_without_relowering():
    G = network([2, 3, 1])
    P0, P1 = init_params(G, 0), init_params(G, 1)
    ops = SheafOperators(G, P0)
    c = np.random.default_rng(0).normal(size=(2, ops.N))
    np.testing.assert_allclose(ops.with_params(P1).discord(c), SheafOperators(G, P1).discord(c))
    np.testing.assert_allclose(ops.discord(c), SheafOperators(G, P0).discord(c))  # the original is untouched


def test_missing_parameter_and_unsupported_maps_are_sheaf_errors():
    G = network([2, 3, 1])
    with pytest.raises(SheafError) as e:
        SheafOperators(G, {"W1": np.zeros((3, 2))})
    assert e.value.codes == ["E502"]
    # a nonlinear edge whose free head is not a leaf: not a supported energy
    G = from_model(load_text("sheaf s\nstalk w : 2\nstalk a : 2\nstalk b : 2\nstalk c : 2\nedge i : w -> a identity\n"
                             "edge s : a -> b sigmoid\nedge t : b -> c identity\npin w = input\npin c = [0, 1]\n"))
    ops = SheafOperators(G, {})
    with pytest.raises(SheafError) as e:
        ops.restrict(("input", "value"))
    assert e.value.codes == ["E503"]


def test_dense_hessian_when_one_coordinate_gates_two_relu_edges():
    G = from_model(load_text("sheaf two\nparam W : 3 x 2 init he\nstalk x : 2\nstalk z : 3\nstalk a : 3\nstalk b : 3\n"
                             "stalk y : 3\nedge l : x -> z linear W\nedge r1 : z -> a relu\nedge r2 : z -> b relu weight 2\n"
                             "edge s : a -> y identity\nedge t : b -> y maps 1 | 3\npin x = input\npin y = [1, -1, 0.5]\n"))
    P = init_params(G, 0)
    prob = SheafOperators(G, P).restrict(("input", "value"))
    fixed = prob.dense_fixed()
    assert not fixed["unique"]  # the shared-source path
    rng = np.random.default_rng(0)
    state = rng.normal(size=(4, prob.ops.N))
    gates = (state[:, prob.s.gated_host] >= 0).astype(float)
    H = prob.dense_hessian(state, gates, fixed)
    f = prob.s.free_host
    for b in range(4):
        np.testing.assert_allclose(H[b], laplacian_matrix(G, P, state[b]).toarray()[np.ix_(f, f)], atol=1e-12)
