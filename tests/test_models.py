"""The models in models/: each checks, is in canonical layout, says what it is, and is what it says."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest

from sheafdsl.frontend import check_diagnostics, load_file, parse_file
from sheafdsl.frontend.formatter import format_module

MODELS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "models", "*.sheaf")))
NAMES = [os.path.basename(p)[:-6] for p in MODELS]

#: docs/tasks.md: task -> (widths, output)
TASKS = {
    "paraboloid": ((2, 30, 1), "identity"),
    "saddle": ((2, 30, 1), "identity"),
    "circle": ((2, 25, 1), "sigmoid"),
    "blobs": ((2, 25, 4), "softmax"),
    "digits": ((64, 64, 10), "softmax"),
}


def test_the_expected_models_exist():
    assert set(OWN) <= set(NAMES)


#: the front end's models (other models, e.g. verify's counterexamples, may warn on purpose)
OWN = ["paraboloid", "saddle", "circle", "blobs", "digits", "tiny", "triangle", "twisted", "soft_pins",
       "sensor_fusion", "formation", "distribution"]
#: the consensus problems (docs/admm.md): they check, format and verify; they are solved, not trained
CONSENSUS = ["sensor_fusion", "formation", "distribution"]
OWN_PATHS = [os.path.join(os.path.dirname(__file__), "..", "models", f"{n}.sheaf") for n in OWN]


@pytest.mark.parametrize("path", MODELS, ids=NAMES)
def test_every_model_checks(path):
    module = parse_file(path)
    assert [d for d in check_diagnostics(module) if d.severity == "error"] == []
    load_file(path)
    first = open(path, encoding="utf-8").read().split("\n", 1)[0]
    assert first.startswith("# ") and len(first) > 20, "a model starts with a header comment saying what it is"


@pytest.mark.parametrize("path", OWN_PATHS, ids=OWN)
def test_front_end_models_have_no_warnings(path):
    assert check_diagnostics(parse_file(path)) == []


@pytest.mark.parametrize("path", OWN_PATHS, ids=OWN)
def test_model_is_canonical_and_starts_with_a_header_comment(path):
    text = open(path, encoding="utf-8").read()
    assert format_module(parse_file(path)) == text, "run `sheaf fmt -w` on it"
    first = text.split("\n", 1)[0]
    assert first.startswith("# ") and len(first) > 20


def _chain(m):
    """Widths and output kind of a model's feed-forward chain x -> ... -> y, read from its edges."""
    out = {e.src: e for e in m.edges.values()}
    widths, node, kind = [m.stalks["x"].dim], "x", None
    while node in out:
        e = out[node]
        if e.kind == "affine":
            widths.append(m.stalks[e.dst].dim)
        kind = e.kind
        node = e.dst
    assert node == "y"
    return tuple(widths), kind


@pytest.mark.parametrize("task", sorted(TASKS))
def test_network_models_match_their_task(task):
    m = load_file(os.path.join(os.path.dirname(__file__), "..", "models", f"{task}.sheaf"))
    widths, output = TASKS[task]
    assert _chain(m) == (widths, output)
    assert m.train["data"] == task
    assert m.input_stalks == ["x"] and m.target_stalks == ["y"]
    from sheafdsl.training.config import TrainConfig

    TrainConfig.from_sources(m.train)  # the defaults are accepted by the trainer


def _coboundary(m) -> np.ndarray:
    """δ of a sheaf whose edges are all `maps` edges with constant maps (literal, scalar or literal parameter)."""
    offsets, n = {}, 0
    for name, s in m.stalks.items():
        offsets[name], n = n, n + s.dim
    rows = []
    for e in m.edges.values():
        assert e.kind == "maps"

        def mat(ref, dim):
            if ref.scale is not None:
                return ref.scale * np.eye(dim)
            if ref.matrix is not None:
                return np.array(ref.matrix, dtype=float)
            return np.array(m.params[ref.param].value, dtype=float)

        block = np.zeros((e.dim, n))
        s, d = m.stalks[e.src], m.stalks[e.dst]
        block[:, offsets[e.src]:offsets[e.src] + s.dim] -= mat(e.src_map, s.dim)
        block[:, offsets[e.dst]:offsets[e.dst] + d.dim] += mat(e.dst_map, d.dim)
        rows.append(block)
    return np.vstack(rows)


def _h0_h1(m) -> tuple[int, int]:
    D = _coboundary(m)
    r = np.linalg.matrix_rank(D)
    return D.shape[1] - r, D.shape[0] - r


def test_triangle_is_the_constant_sheaf():
    m = load_file(os.path.join(os.path.dirname(__file__), "..", "models", "triangle.sheaf"))
    assert _h0_h1(m) == (2, 2)  # H0 = R^2 (constant sections), H1 = R^2 (one cycle)
    D = _coboundary(m)
    const = np.tile([1.0, -2.0], 3)
    assert np.allclose(D @ const, 0)  # the pinned value extends to a global section
    assert [(p.stalk, p.value) for p in m.pins] == [("u", (1.0, -2.0))]


def test_twisted_sheaf_has_no_global_sections():
    m = load_file(os.path.join(os.path.dirname(__file__), "..", "models", "twisted.sheaf"))
    assert _h0_h1(m) == (0, 0)
    # the same graph with the twist undone has H0 = R^2: it is the twist that kills the sections
    untwisted = _coboundary(m)
    untwisted[4:6, 4:6] = -np.eye(2)
    assert untwisted.shape[1] - np.linalg.matrix_rank(untwisted) == 2


def test_soft_pins_model_shows_every_boundary_kind():
    m = load_file(os.path.join(os.path.dirname(__file__), "..", "models", "soft_pins.sheaf"))
    assert any(p.indices for p in m.pins)  # a partial hard pin
    assert any(p.indices for p in m.soft_pins) and any(p.indices is None for p in m.soft_pins)
    assert m.reluctances and m.ties


# ----------------------------------------------------------------------------------------------
# consensus models: each is what its header says, by an independent solve (CVXPY) of the IR it builds


def _cvxpy_minimiser(G, params):
    """The minimiser of the IR's consensus problem by CVXPY (Clarabel): every vertex coordinate a variable,
    hard pins and hard edges as equalities, soft edges as ½ w² ‖δx − o‖², the objectives term by term."""
    cp = pytest.importorskip("cvxpy")
    from sheafdsl.ir import constant_pins, edge_offsets, edges, objectives, stalks, total_dim, vertex_slice
    from sheafdsl.lowering import coboundary_matrix, offset_vector

    D = coboundary_matrix(G, params).toarray()
    o = offset_vector(G, params)
    x = cp.Variable(total_dim(G))
    cons, terms = [], []
    idx, val = constant_pins(G)
    if len(idx):
        cons.append(x[idx] == val)
    eoff = edge_offsets(G)
    for _, _, name, d in edges(G):
        r = slice(eoff[name], eoff[name] + d["dim"])
        disc = D[r] @ x - o[r]
        if d.get("hard"):
            cons.append(disc == 0)
        else:
            terms.append(0.5 * d["weight"] ** 2 * cp.sum_squares(disc))
    for v in stalks(G):
        xv = x[vertex_slice(G, v)]
        for t in objectives(G, v):
            if t.kind == "quadratic":
                Q = params[t.Q] if isinstance(t.Q, str) else t.Q
                q = params[t.q] if isinstance(t.q, str) else t.q
                terms.append(0.5 * cp.quad_form(xv, cp.psd_wrap(np.asarray(Q))) + np.asarray(q) @ xv)
            elif t.kind == "nonneg":
                cons.append(xv >= 0)
            elif t.kind == "box":
                cons += [xv >= t.lo, xv <= t.hi]
            elif t.kind == "simplex":
                cons += [xv >= 0, cp.sum(xv) == 1]
            elif t.kind == "l1":
                terms.append(t.lam * cp.norm1(xv))
    prob = cp.Problem(cp.Minimize(sum(terms)), cons)
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    assert prob.status == "optimal", prob.status
    return {v: x.value[vertex_slice(G, v)] for v in stalks(G)}


def _consensus(name):
    from sheafdsl.ir import from_model
    from sheafdsl.lowering import init_params

    G = from_model(load_file(os.path.join(os.path.dirname(__file__), "..", "models", f"{name}.sheaf")))
    return G, _cvxpy_minimiser(G, init_params(G, 0))


@pytest.mark.parametrize("name", CONSENSUS)
def test_consensus_models_are_consensus_problems(name):
    from sheafdsl.ir import from_model, is_consensus

    m = load_file(os.path.join(os.path.dirname(__file__), "..", "models", f"{name}.sheaf"))
    assert m.is_consensus and is_consensus(from_model(m)) and not m.train


def test_sensor_fusion_is_the_weighted_least_squares_fusion():
    G, x = _consensus("sensor_fusion")
    C = {"a": [[1, 0, 0], [0, 1, 0]], "b": [[0, 0, 1]], "c": [[1, 1, 0], [0, 0, 1]], "d": [[1, -1, 0]]}
    P = {"a": 1.0, "b": 4.0, "c": 0.25, "d": 1.0}
    y = {"a": [1.02, 1.97], "b": [0.49], "c": [3.05, 0.52], "d": [-0.98]}
    A = np.vstack([np.sqrt(P[k]) * np.array(C[k], float) for k in C])
    b = np.concatenate([np.sqrt(P[k]) * np.array(y[k]) for k in C])
    s = np.linalg.lstsq(A, b, rcond=None)[0]
    assert np.linalg.matrix_rank(A) == 3  # no agent sees the whole state, together they do
    for k in C:
        assert np.allclose(x[f"s_{k}"], s, atol=1e-6)  # the copies agree, on the fused estimate
        assert np.allclose(x[f"m_{k}"], np.array(C[k]) @ s, atol=1e-6)
    assert np.allclose(s, [1, 2, 0.5], atol=0.05)


def test_formation_holds_the_square_and_the_boxes_stop_it():
    G, x = _consensus("formation")
    a = x["a"]
    assert np.allclose(a, [1.0, 0.7], atol=1e-6)  # x_a = 1: b = a + (1, 0) and c = a + (1, 1) reach the box
    for u, v, d in (("a", "b", [1, 0]), ("b", "c", [0, 1]), ("c", "d", [-1, 0]), ("d", "a", [0, -1])):
        assert np.allclose(x[v] - x[u], d, atol=1e-6)
    assert all(np.all(np.abs(x[k]) <= 2 + 1e-7) for k in "abcd")


def test_distribution_beliefs_are_distributions_and_a_b_agree():
    G, x = _consensus("distribution")
    for k in "abcd":
        assert abs(x[f"p_{k}"].sum() - 1) < 1e-7 and np.all(x[f"p_{k}"] >= -1e-8)
    assert np.allclose(x["p_a"], x["p_b"], atol=1e-7)
    assert abs(x["p_d"][2]) < 1e-6  # d's own estimate gives outcome 3 a negative weight: clipped to 0
    assert not np.allclose(x["p_c"], x["p_d"], atol=1e-3)  # soft springs: agree only so far


@pytest.mark.parametrize("name", CONSENSUS)
def test_consensus_models_are_refused_by_train(name):
    from sheafdsl.api import load, train
    from sheafdsl.errors import SheafError

    with pytest.raises(SheafError) as e:
        train(load(os.path.join(os.path.dirname(__file__), "..", "models", f"{name}.sheaf")), steps=1)
    assert e.value.codes == ["E590"] and "--solver admm" in e.value.diagnostics[0].hint
