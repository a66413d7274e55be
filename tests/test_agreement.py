"""Every piece solver of the one active-set driver gives the same equilibrium on the same problem.

The driver (start, ratio test, release rule, cycle guard) is shared; the piece solvers only return each
piece's exact minimiser, so they take the same decisions and stop at the same point: equality to
round-off (cg to its inner tolerance), not a fraction of examples.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sheafdsl.frontend import load_text
from sheafdsl.ir import TRAINING, edges, from_model
from sheafdsl.lowering import init_params
from sheafdsl.lowering.chain import feedforward
from sheafdsl.solvers import solve
from sheafdsl.solvers.shallow import is_shallow


def model(text):
    return from_model(load_text(text))


def paraboloid_data(B, d_in=2, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, (B, d_in))
    return X, (X ** 2).sum(1, keepdims=True) - 2 / 3


def targets(rng, B, d, output):
    if output == "sigmoid":
        return rng.integers(0, 2, (B, d)).astype(float)
    if output == "softmax":
        return np.eye(d)[rng.integers(0, d, B)]
    return rng.normal(size=(B, d))


def pieces_for(G):
    net = feedforward(G)
    out = ["chain"] if net is not None else []
    if net is not None and is_shallow(net):
        out.append("shallow")
    if net is None or net.output.fn == "linear":
        out.append("elimination")
    return out + ["dense", "cg"]


def run(G, P, values, piece):
    return solve(G, P, values, boundary=TRAINING, piece=piece, method="cg" if piece == "cg" else "exact")


def unit_values(r):
    """The gated coordinates z of a ``network`` chain's result, (B, units), in the order of ``r.state``."""
    hidden = sorted((n for n in r.layout if n.startswith("z") and n[1:].isdigit()), key=lambda n: int(n[1:]))
    z = np.concatenate([np.asarray(r.stalk(n)) for n in hidden], axis=1)
    return z[:, :np.asarray(r.state).shape[1]]


def assert_same(results, ref_name, cg_atol=1e-8, tol=1e-9):
    """The same unit states exactly, the same cochain and energy to round-off (``tol``; a Newton-solved
    output or cg to its inner tolerance)."""
    ref = results[ref_name]
    assert ref.info == 0 and np.asarray(ref.consistent).all()
    for name, r in results.items():
        atol = cg_atol if name == "cg" else tol
        assert r.info == 0, (name, r.info)
        assert np.asarray(r.consistent).all(), name
        # a unit at z = 0 exactly (e.g. all its inputs 0) is at the same point whether it is labelled on,
        # sliding or off (a = z = 0): its label is not part of the equilibrium; every other label must agree
        differ = np.asarray(r.state) != np.asarray(ref.state)
        if differ.any():
            z_r, z_ref = unit_values(r), unit_values(ref)
            assert np.abs(z_r[differ]).max() <= 1e-12 and np.abs(z_ref[differ]).max() <= 1e-12, \
                (name, "unit states differ away from z = 0")
        np.testing.assert_allclose(r.cochain, ref.cochain, atol=atol, rtol=tol, err_msg=name)
        np.testing.assert_allclose(r.energy, ref.energy, rtol=1e-9, atol=1e-12, err_msg=name)


def test_deep_net_pinned_at_both_ends_every_piece_solver_agrees():
    """The issue's case: [2, 64, 64, 64, 1] with x and y pinned (86% agreement before the one driver)."""
    G = model("sheaf t\nnetwork n : 2 -> 64 -> 64 -> 64 -> 1 relu output identity weight 1\n")
    P = init_params(G, 0)
    X, Y = paraboloid_data(48)
    res = {p: run(G, P, {"x": X, "y": Y}, p) for p in ("chain", "elimination", "cg")}
    assert int(np.asarray(res["chain"].sliding).sum()) > 20  # sliding units on every hidden layer
    few = {"x": X[:8], "y": Y[:8]}  # the dense piece assembles 385 × 385 Hessians: a few examples
    dense = run(G, P, few, "dense")
    assert_same(res, "chain")
    assert_same({"dense": dense, "chain": run(G, P, few, "chain")}, "chain")
    np.testing.assert_allclose(dense.cochain, res["chain"].cochain[:8], atol=1e-9)


@pytest.mark.slow
def test_deep_net_pinned_at_both_ends_200_examples_dense():
    G = model("sheaf t\nnetwork n : 2 -> 64 -> 64 -> 64 -> 1 relu output identity weight 1\n")
    P = init_params(G, 0)
    X, Y = paraboloid_data(200)
    assert_same({p: run(G, P, {"x": X, "y": Y}, p) for p in ("chain", "elimination", "dense", "cg")}, "chain")


chains = st.tuples(st.lists(st.integers(1, 5), min_size=2, max_size=5),
                   st.sampled_from(["identity", "sigmoid", "softmax"]), st.sampled_from([1.0, 0.3, 2.0]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arch=chains, seed=st.integers(0, 10_000))
@example(arch=([1, 1, 2, 1, 4], "softmax", 2.0), seed=4159)  # z2 = 0 exactly: cg labels a unit sliding, chain on
def test_random_chains_every_piece_solver_agrees(arch, seed):
    widths, output, w_o = arch
    if output == "softmax" and widths[-1] < 2:
        widths = widths[:-1] + [2]
    src = "sheaf t\nnetwork n : " + " -> ".join(map(str, widths)) + f" relu output {output}\n"
    G = model(src)
    out_edge = feedforward(G).output.name
    for _, _, name, d in edges(G):
        if name == out_edge:
            d["weight"] = w_o  # the output coupling w_o
    P = init_params(G, seed)
    rng = np.random.default_rng(seed)
    B = 12
    values = {"x": 2 * rng.normal(size=(B, widths[0])), "y": targets(rng, B, widths[-1], output)}
    res = {p: run(G, P, values, p) for p in pieces_for(G)}
    # a sigmoid/softmax output is solved by Newton iterations (tolerance 1e-10 on the force equation)
    assert_same(res, "chain", cg_atol=1e-7, tol=1e-9 if output == "identity" else 1e-8)


def test_a_branching_dag_elimination_dense_and_cg_agree():
    """A sweepable DAG that is not a chain (a branch from the first hidden layer to a pinned stalk q, which
    skips the rest of the network): the general piece solvers agree, elimination with its shared rows."""
    G = model("""sheaf branch
param W1 : 8 x 2 init he
param b1 : 8 init zeros
param W2 : 8 x 8 init he
param W3 : 1 x 8 init he
param Q : 2 x 8 init he
stalk x : 2
stalk z1 : 8
stalk a1 : 8
stalk z2 : 8
stalk a2 : 8
stalk z3 : 1
stalk q : 2
stalk y : 1
edge aff1 : x -> z1 affine W1 b1
edge act1 : z1 -> a1 relu
edge aff2 : a1 -> z2 linear W2
edge act2 : z2 -> a2 relu
edge aff3 : a2 -> z3 linear W3
edge br : a1 -> q linear Q weight 0.5
edge out : z3 -> y identity
pin x = input
pin y = target
pin q = [0.5, -0.25]
""")
    assert feedforward(G) is None
    P = init_params(G, 3)
    X, Y = paraboloid_data(30, seed=5)
    res = {p: run(G, P, {"x": X, "y": Y}, p) for p in ("elimination", "dense", "cg")}
    assert int(np.asarray(res["elimination"].sliding).sum()) > 0
    assert_same(res, "elimination")


def test_warm_start_from_the_result_stays_put():
    G = model("sheaf t\nnetwork n : 2 -> 16 -> 16 -> 1 relu\n")
    P = init_params(G, 2)
    X, Y = paraboloid_data(40)
    for piece in ("chain", "elimination"):
        first = run(G, P, {"x": X, "y": Y}, piece)
        again = solve(G, P, {"x": X, "y": Y}, boundary=TRAINING, piece=piece, warm=first)
        assert again.iterations == 1 and again.info == 0
        np.testing.assert_allclose(again.cochain, first.cochain, atol=1e-12)
