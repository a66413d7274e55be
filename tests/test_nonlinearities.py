"""The nonlinearity registry: one table, its numerics, the grammar keyword, and loud failure on unknown names."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sheafdsl.errors import SheafError
from sheafdsl.frontend import load_text, parse_text
from sheafdsl.ir import from_model
from sheafdsl.ir.maps import Identity, Nonlinear, ReluGate, nonlinear_map
from sheafdsl.lowering import maps
from sheafdsl.lowering.nonlinear import KERNELS, kernel
from sheafdsl.nonlinearities import NAMES, NONLINEAR, TABLE, get

ARGS = {"leaky_relu": 0.1}


def test_numerics_cover_exactly_the_table():
    assert tuple(KERNELS) == NAMES == tuple(TABLE)


@pytest.mark.parametrize("name", NAMES)
def test_every_entry_is_an_edge_keyword_and_builds_its_map(name):
    arg = f" {ARGS[name]}" if name in ARGS else ""
    m = load_text(f"sheaf t\nstalk a : 3\nstalk b : 3\nedge e : a -> b {name}{arg}\npin a = input\n")
    src = from_model(m).edges["a", "b", "e"]["src_map"]
    kind = TABLE[name].kind
    assert isinstance(src, {"linear": Identity, "gate": ReluGate}.get(kind, Nonlinear))
    if isinstance(src, Nonlinear):
        assert (src.fn, src.arg) == (name, ARGS.get(name))


@pytest.mark.parametrize("bad", ["swish", "Relu", ""])
def test_an_unknown_name_fails_loudly(bad):
    with pytest.raises(SheafError) as e:
        Nonlinear(bad)
    assert e.value.diagnostics[0].code == "E511"
    with pytest.raises(SheafError) as e:
        kernel(bad)
    assert e.value.diagnostics[0].code == "E511"
    with pytest.raises(KeyError, match="unknown nonlinearity"):
        get(bad)
    with pytest.raises(SheafError):
        nonlinear_map(bad)


def test_an_unknown_edge_kind_is_a_syntax_error_naming_the_registry():
    with pytest.raises(SheafError) as e:
        parse_text("sheaf t\nstalk a : 1\nstalk b : 1\nedge e : a -> b swish\n")
    d = e.value.diagnostics[0]
    assert d.code == "E101" and "gelu" in d.hint


def test_arguments_are_checked():
    with pytest.raises(SheafError) as e:
        Nonlinear("leaky_relu")
    assert e.value.diagnostics[0].code == "E511"
    with pytest.raises(SheafError):
        Nonlinear("tanh", 0.5)
    for slope in ("0", "1", "-0.2", "2", "nan"):
        with pytest.raises(SheafError) as e:
            load_text(f"sheaf t\nstalk a : 1\nstalk b : 1\nedge e : a -> b leaky_relu {slope}\n")
        assert [d.code for d in e.value.diagnostics] == ["E226"]


ELEMENTWISE = [n for n in NAMES if TABLE[n].kind != "joint"]


@pytest.mark.parametrize("name", ELEMENTWISE)
@settings(max_examples=30, deadline=None)
@given(z=st.lists(st.floats(-8, 8), min_size=1, max_size=6))
def test_derivative_matches_finite_differences_and_its_bounds(name, z):
    k, arg = kernel(name), ARGS.get(name)
    z = np.array([z])
    z = np.where(np.abs(z) < 1e-3, 1e-3, z)  # away from the kinks of relu / leaky_relu
    h = 1e-6
    fd = (k.phi(np, z + h, arg) - k.phi(np, z - h, arg)) / (2 * h)
    d = k.dphi(np, z, arg)
    np.testing.assert_allclose(d, fd, atol=1e-6)
    lo, hi = TABLE[name].dphi_bounds(arg)
    assert np.all(d >= lo - 1e-12) and np.all(d <= hi + 1e-12)
    x = np.random.default_rng(0).normal(size=z.shape)
    np.testing.assert_allclose(k.jvp(np, z, x, arg), d * x)
    np.testing.assert_allclose(k.jacobian(np, z, arg)[0], np.diag(d[0]))


def test_dphi_bounds_are_attained_where_stated():
    z = np.linspace(-6, 6, 120001)[None, :]
    for name in ("tanh", "gelu", "sigmoid"):
        d = kernel(name).dphi(np, z)
        lo, hi = TABLE[name].dphi
        assert d.max() == pytest.approx(hi, abs=1e-6)
        if name == "gelu":
            assert d.min() == pytest.approx(lo, abs=1e-6)


def test_gelu_is_x_times_the_normal_cdf():
    from scipy.stats import norm

    z = np.linspace(-5, 5, 101)[None, :]
    np.testing.assert_allclose(kernel("gelu").phi(np, z), z * norm.cdf(z), rtol=1e-12, atol=1e-15)


@settings(max_examples=30, deadline=None)
@given(z=st.lists(st.floats(-8, 8), min_size=2, max_size=5), seed=st.integers(0, 99))
def test_output_energies_and_their_gradients(z, seed):
    z = np.array([z])
    rng = np.random.default_rng(seed)
    for name in ("sigmoid", "softmax"):
        k = kernel(name)
        t = rng.uniform(0, 1, size=z.shape)
        h = 1e-6
        fd = np.array([(k.energy(np, z + h * e, t) - k.energy(np, z - h * e, t))[0] / (2 * h)
                       for e in np.eye(z.shape[1])])
        np.testing.assert_allclose(k.energy_grad(np, z, t)[0], fd, atol=1e-5)
        p, ell = k.phi_energy(np, z, t)
        np.testing.assert_allclose(p, k.phi(np, z))
        np.testing.assert_allclose(ell, k.energy(np, z, t))
    J = kernel("softmax").jacobian(np, z)[0]
    fd = np.array([(kernel("softmax").phi(np, z + h * e) - kernel("softmax").phi(np, z - h * e))[0] / (2 * h)
                   for e in np.eye(z.shape[1])]).T
    np.testing.assert_allclose(J, fd, atol=1e-6)


@pytest.mark.parametrize("name", ["softmax", "sigmoid", "tanh"])
@settings(max_examples=40, deadline=None)
@given(shape=st.tuples(st.integers(1, 4), st.integers(1, 7), st.integers(1, 5)), seed=st.integers(0, 10_000),
       spread=st.sampled_from([0.1, 3.0, 30.0]))
def test_the_structured_jacobian_product_is_the_dense_one(name, shape, seed, spread):
    """Dφ M from the structure of Dφ (softmax: diag(p) − ppᵀ, diagonal plus rank 1; elementwise: a row
    scaling) equals the dense Dφ(p) @ M, for random p = φ(z) (down to p ~ e^-60) and random M."""
    B, d, n = shape
    if name == "softmax":
        d = max(d, 2)
    k = kernel(name)
    rng = np.random.default_rng(seed)
    p = k.phi(np, spread * rng.normal(size=(B, d)))
    M = rng.normal(size=(B, d, n)) * rng.choice([1e-3, 1.0, 1e3], size=(B, 1, 1))
    got = k.jacobian_phi_mul(np, p, M)
    want = k.jacobian_phi(np, p) @ M
    assert got.shape == want.shape == (B, d, n)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14 * np.abs(M).max())


@pytest.mark.parametrize("name", NONLINEAR)
def test_one_map_implementation_agrees_with_itself(name):
    """apply_lin and apply_T are the matrix F'(state) and its transpose; apply is φ."""
    m = Nonlinear(name, ARGS.get(name))
    rng = np.random.default_rng(1)
    state, x, y = rng.normal(size=(3, 1, 4))
    F = maps.matrix(m, 4, {}, state=state[0])
    np.testing.assert_allclose(maps.apply_lin(m, x, {}, np, state=state), x @ F.T)
    np.testing.assert_allclose(maps.apply_T(m, y, {}, np, state=state), y @ F)
    np.testing.assert_allclose(maps.apply(m, state, {}, np), kernel(name).phi(np, state, ARGS.get(name)))


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_second_derivative_matches_finite_differences(name):
    k, arg = kernel(name), ARGS.get(name)
    z = np.linspace(-4, 4, 81)[None, :] + 1e-3
    h = 1e-5
    fd = (k.dphi(np, z + h, arg) - k.dphi(np, z - h, arg)) / (2 * h)
    np.testing.assert_allclose(k.d2phi(np, z, arg), fd, atol=1e-6)
