"""sheafdsl.testing: the public strategies draw what they promise (valid IR, bounds respected, pins applied
without mutating the input), the source-text strategies are re-exported, and the code in docs/testing.md and
docs/verify.md runs."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sheafdsl.testing as T
from sheafdsl.ir import (Constant, Identity, ReluGate, Scaled, Select, edges, free_indices, param_specs,
                         pinned_indices, total_dim)
from sheafdsl.lowering import coboundary_matrix, restriction_matrix
from sheafdsl.testing import (activation_patterns, networks, pin_sets, restriction_maps, sheaves, weights, widths,
                              with_pins)

ROOT = Path(__file__).resolve().parents[1]


@settings(max_examples=40, deadline=None)
@given(widths(min_layers=2, max_layers=4, min_width=2, max_width=5, max_input=3, max_output=2))
def test_widths_respect_their_bounds(w):
    assert 3 <= len(w) <= 5
    assert 1 <= w[0] <= 3 and 1 <= w[-1] <= 2
    assert all(2 <= n <= 5 for n in w[1:-1])


@settings(max_examples=25, deadline=None)
@given(networks(outputs=("identity", "sigmoid", "softmax")))
def test_networks_are_valid_ir_with_matching_weights(case):
    G, P = case.G, case.params
    assert G.graph["network"].widths == case.widths
    specs = param_specs(G)
    assert set(P) == set(specs)
    for p, s in specs.items():
        assert P[p].shape == s.shape and P[p].dtype == np.float64 and np.all(np.abs(P[p]) <= 3)
    kinds = [d["kind"] for *_, d in edges(G)]
    assert kinds[-1] == case.output
    assert kinds.count("relu") == len(case.widths) - 2
    if case.output == "softmax":
        assert case.widths[-1] >= 2
    D = coboundary_matrix(G, P)
    assert D.shape == (sum(d["dim"] for *_, d in edges(G)), total_dim(G))


def test_networks_accept_a_weight_strategy():
    @settings(max_examples=10, deadline=None)
    @given(networks(weight_values=st.just(0.5)))
    def check(case):
        assert all(np.all(v == 0.5) for v in case.params.values())

    check()


@settings(max_examples=40, deadline=None)
@given(sheaves(max_vertices=5, max_edges=6, max_dim=3))
def test_sheaves_are_consistent_ir(G):
    assert 1 <= G.number_of_nodes() <= 5 and G.number_of_edges() <= 6
    for u, v, name, d in edges(G):
        assert u != v
        for m, x in ((d["src_map"], u), (d["dst_map"], v)):
            assert isinstance(m, (Identity, Scaled, Constant, Select))
            F = restriction_matrix(m, G.nodes[x]["dim"], {})
            assert F.shape == (d["dim"], G.nodes[x]["dim"])
            assert np.all(F.data == np.round(F.data * 2) / 2)  # integers or halves: exact over Q
    assert not pinned_indices(G).size


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_restriction_maps_have_the_requested_shape(data):
    d_v, d_e = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    m = data.draw(restriction_maps(d_v, d_e))
    assert restriction_matrix(m, d_v, {}).shape == (d_e, d_v)
    free = data.draw(restriction_maps(d_v))
    assert restriction_matrix(free, d_v, {}).shape[1] == d_v


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_activation_patterns_cover_every_relu_edge(data):
    case = data.draw(networks())
    g = data.draw(activation_patterns(case.G))
    relu = {name: d["dim"] for _, _, name, d in edges(case.G) if isinstance(d["src_map"], ReluGate)}
    assert set(g) == set(relu)
    for e, v in g.items():
        assert v.shape == (relu[e],) and set(np.unique(v)) <= {0.0, 1.0}


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_pin_sets_and_with_pins(data):
    G = data.draw(sheaves())
    pins = data.draw(pin_sets(G))
    assert len({v for v, _ in pins}) == len(pins)
    H = with_pins(G, pins)
    assert not pinned_indices(G).size  # the input graph is untouched
    expect = set()
    for v, idx in pins:
        o, d = H.nodes[v]["offset"], H.nodes[v]["dim"]
        expect |= {o + i for i in (range(d) if idx is None else idx)}
    assert set(pinned_indices(H).tolist()) == expect
    assert len(free_indices(H)) == total_dim(H) - len(expect)


@settings(max_examples=10, deadline=None)
@given(st.data())
def test_weights_draws_every_parameter(data):
    case = data.draw(networks())
    P = data.draw(weights(case.G, min_value=-1, max_value=1))
    assert all(np.all(np.abs(v) <= 1) for v in P.values()) and set(P) == set(param_specs(case.G))


def test_source_strategies_are_re_exported_when_present():
    if importlib.util.find_spec("sheafdsl.testing.source") is None:
        pytest.skip("sheafdsl.testing.source not present")
    src = importlib.import_module("sheafdsl.testing.source")
    for name in src.__all__:
        assert getattr(T, name) is getattr(src, name)
        assert name in T.__all__


# ----------------------------------------------------------------------------------------------
# the docs: every ```python block runs, in order, in one namespace


@pytest.mark.parametrize("doc", ["testing.md", "verify.md"])
def test_docs_code_runs(doc, monkeypatch):
    monkeypatch.chdir(ROOT)
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    ns: dict = {"__name__": "__docs__"}
    for b in blocks:
        exec(compile(b, f"docs/{doc}", "exec"), ns)  # noqa: S102 - executing our own docs
