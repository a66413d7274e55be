"""Cohomology numerics: known sheaves (constant and twisted cycles), rank–nullity, exact vs numeric rank,
kernel witnesses, the stated tolerance, undefined h⁰/h¹, and the boundary parameter."""

from __future__ import annotations

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

from sheafdsl.analysis.cohomology import (INFERENCE, TRAINING, cohomology, exact_coboundary, h0, h1, numeric_rank,
                                          relative_h0, to_rational)
from sheafdsl.frontend import load_text
from sheafdsl.ir import (Constant, Identity, ParamMap, ReluGate, Scaled, add_edge, add_param, add_pin, add_stalk,
                         free_indices, from_model, new_sheaf)
from sheafdsl.lowering import coboundary_matrix, init_params
from sheafdsl.testing import networks, pin_sets, sheaves, with_pins


def cycle(n: int, d: int = 1, twist: float | None = None):
    """The constant sheaf R^d on an n-cycle; ``twist`` scales the last edge's head map."""
    G = new_sheaf(f"cycle{n}")
    for i in range(n):
        add_stalk(G, f"v{i}", d)
    for i in range(n):
        j = (i + 1) % n
        dst = Identity() if (twist is None or i < n - 1) else Scaled(twist)
        add_edge(G, f"e{i}", f"v{i}", f"v{j}", src_map=Identity(), dst_map=dst)
    return G


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("method", ["exact", "numeric"])
def test_constant_sheaf_on_a_cycle_has_h0_h1_equal_1(n, method):
    c = cohomology(cycle(n), method=method)
    assert (c.h0, c.h1) == (1, 1)
    assert c.method == ("exact-rational" if method == "exact" else "numeric")


def test_constant_sheaf_of_dimension_d_on_a_cycle():
    c = cohomology(cycle(4, d=3))
    assert (c.h0, c.h1, c.rank) == (3, 3, 9)


@pytest.mark.parametrize("method", ["exact", "numeric"])
def test_twisted_cycle_has_no_global_section(method):
    c = cohomology(cycle(3, twist=-1.0), method=method)
    assert (c.h0, c.h1) == (0, 0)


def test_twisted_cycle_with_a_non_sign_twist_also_has_h0_0():
    # monodromy 2 ≠ 1: no section; δ square and invertible
    assert (h0(cycle(4, twist=2.0)), h1(cycle(4, twist=2.0))) == (0, 0)


def test_constant_cycle_sections_are_constant_and_the_witness_says_so():
    c = cohomology(cycle(3), sources=())  # nothing pinned: relative = absolute
    assert c.relative_h0 == 1
    w = c.witness()
    assert set(w["stalks"]) == {"v0", "v1", "v2"}
    assert w["exact"] == {"v0": ["1"], "v1": ["1"], "v2": ["1"]}


def test_pinning_a_vertex_of_the_constant_cycle_kills_relative_h0():
    G = cycle(3)
    add_pin(G, "v0", "value", value=[1.0])
    c = cohomology(G, sources=("value",))
    assert c.relative_h0 == 0 and c.h0 == 1 and c.relative_h1 == 3 - 2


def test_exact_rank_uses_the_decimals_as_written():
    # [[0.1, 0.3], [0.3, 0.9]] is singular as written (0.1·0.9 = 0.3·0.3) although its float64 entries are not
    G = new_sheaf()
    add_stalk(G, "a", 2)
    add_stalk(G, "b", 2)
    add_edge(G, "ab", "a", "b", src_map=Constant([[0.1, 0.3], [0.3, 0.9]]), dst_map=Constant(np.zeros((2, 2))))
    assert cohomology(G, method="exact").rank == 1
    assert to_rational(0.1) == sympy.Rational(1, 10)
    # the binary expansion of the same floats is nonsingular over Q: the conversion is what makes it exact
    a = [[sympy.Rational(x) for x in row] for row in ([0.1, 0.3], [0.3, 0.9])]
    assert sympy.Matrix(a).rank() == 2


def test_numeric_tolerance_is_stated_and_used():
    A = np.diag([1.0, 1e-20, 3.0])
    r, tol, s = numeric_rank(A)
    assert r == 2 and tol == pytest.approx(3 * np.finfo(float).eps * 3.0)
    G = cycle(3)
    c = cohomology(G, method="numeric")
    assert c.tolerance == pytest.approx(max(c.M, c.N) * np.finfo(float).eps * c.singular_values.max())
    assert cohomology(G, method="exact").tolerance is None


def test_exact_method_refuses_non_rational_maps():
    G = from_model(load_text("sheaf t\nnetwork n : 2 -> 2 -> 1\n"))
    with pytest.raises(ValueError, match="rational"):
        cohomology(G, method="exact")
    assert exact_coboundary(G) is None


def test_literal_parameters_are_exact():
    G = new_sheaf()
    add_param(G, "A", (2, 2), "literal", value=((1.0, 2.0), (2.0, 4.0)))
    add_stalk(G, "a", 2)
    add_stalk(G, "b", 2)
    add_edge(G, "ab", "a", "b", src_map=ParamMap("A"), dst_map=Constant(np.zeros((2, 2))))
    c = cohomology(G)
    assert c.method == "exact-rational" and c.rank == 1 and c.h0 == 3


@pytest.mark.parametrize("src", ["sheaf t\nnetwork n : 2 -> 3 -> 1\n"])
def test_h0_h1_undefined_with_offsets_or_gates(src):
    G = from_model(load_text(src))
    c = cohomology(G)
    assert c.h0 is None and c.h1 is None and "affine offset" in c.undefined
    assert c.relative_h0 == 0  # still defined: the linear part of δ_Ω
    # a gate without any bias: undefined because of the state dependence
    H = new_sheaf()
    add_stalk(H, "z", 2)
    add_stalk(H, "a", 2)
    add_edge(H, "act", "z", "a", src_map=ReluGate(), dst_map=Identity())
    c = cohomology(H)
    assert c.h0 is None and "state-dependent" in c.undefined


def test_gates_are_parameters_of_the_relative_computation():
    # a = relu(z), z free: with the gate off, nothing constrains z
    G = new_sheaf()
    add_stalk(G, "z", 1)
    add_stalk(G, "a", 1)
    add_edge(G, "act", "z", "a", src_map=ReluGate(), dst_map=Identity())
    add_pin(G, "a", "value", value=[0.0])
    assert relative_h0(G, sources=("value",), gates={"act": np.array([1.0])}) == 0
    c = cohomology(G, sources=("value",), gates={"act": np.array([0.0])})
    assert c.relative_h0 == 1 and c.method == "exact-rational" and c.witness()["stalks"] == ["z"]


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_network_relative_h0_vanishes_for_both_boundaries(data):
    case = data.draw(networks())
    for sources in (TRAINING, INFERENCE):
        assert cohomology(case.G, case.params, sources=sources).relative_h0 == 0


@settings(max_examples=40, deadline=None)
@given(sheaves())
def test_rank_nullity(G):
    c = cohomology(G)
    assert c.h0 + c.rank == c.N
    assert c.h1 + c.rank == c.M
    assert c.relative_h0 + c.rank_free == c.free_dim


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_numeric_and_exact_ranks_agree_on_rational_sheaves(data):
    G = data.draw(sheaves())
    e, n = cohomology(G, method="exact"), cohomology(G, method="numeric")
    assert (e.h0, e.h1, e.rank) == (n.h0, n.h1, n.rank)
    pins = data.draw(pin_sets(G))
    Gp = with_pins(G, pins)
    e, n = cohomology(Gp, method="exact"), cohomology(Gp, method="numeric")
    assert e.relative_h0 == n.relative_h0


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_relative_kernel_basis_is_a_basis_of_ker_delta_free(data):
    G = data.draw(sheaves())
    Gp = with_pins(G, data.draw(pin_sets(G)))
    D = coboundary_matrix(Gp, {}).toarray()[:, free_indices(Gp, TRAINING)]
    for method in ("exact", "numeric"):
        c = cohomology(Gp, method=method)
        K = c.kernel
        assert K.shape == (c.free_dim, c.relative_h0)
        assert np.abs(D @ K).max(initial=0.0) <= 1e-9
        assert np.linalg.matrix_rank(K) == c.relative_h0 if c.relative_h0 else True
        if method == "exact":  # the exact basis is exactly in the kernel
            De = sympy.Matrix(exact_coboundary(Gp).to_Matrix())[:, list(free_indices(Gp, TRAINING))]
            for v in c.kernel_exact:
                assert De * sympy.Matrix([sympy.Rational(x) for x in v]) == sympy.zeros(De.shape[0], 1)


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_relative_h0_is_at_most_h0(data):
    # ker δ_Ω extended by zero on the pins lies in ker δ
    G = data.draw(sheaves())
    Gp = with_pins(G, data.draw(pin_sets(G)))
    c = cohomology(Gp)
    assert c.relative_h0 <= c.h0


def test_witness_names_stalks_and_coordinates():
    G = new_sheaf()
    add_stalk(G, "a", 1)
    add_stalk(G, "free", 3)
    add_stalk(G, "b", 1)
    add_edge(G, "ab", "a", "b", src_map=Identity(), dst_map=Identity())
    add_edge(G, "fb", "free", "b", src_map=Constant([[1.0, 0.0, 0.0]]), dst_map=Identity())
    add_pin(G, "a", "value", value=[0.0])
    add_pin(G, "b", "value", value=[0.0])
    c = cohomology(G, sources=("value",))
    assert c.relative_h0 == 2
    support = set()
    for k in range(2):
        w = c.witness(k)
        assert w["stalks"] == ["free"]
        support |= set(w["coordinates"]["free"])
    assert support == {1, 2}  # coordinate 0 is constrained by fb


def test_cohomology_uses_init_params_by_default():
    G = from_model(load_text("sheaf t\nnetwork n : 2 -> 2 -> 1\n"))
    assert cohomology(G).relative_h0 == cohomology(G, init_params(G, 0)).relative_h0 == 0
