"""`sheaf verify` of a learned model with bounds and constants (docs/admm.md "Learning"): `constraints_feasible` is
proved for every value of the parameter maps only with a point checked exactly, refuted with a Farkas certificate
checked here independently, and `checked` (not `proved`) where a parameter sits on a constant's edge."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from sheafdsl.analysis import verify as V
from sheafdsl.frontend.checker import load_text
from sheafdsl.ir import from_model
from sheafdsl.lowering import init_params
from sheafdsl.lowering.learned import LearnedStructure

ROOT = Path(__file__).resolve().parents[1]

# two nonneg agents glued by a shared map P, and a cell total against the constant `one` (TOTAL filled in)
TOTAL = """sheaf tot
param P  : 2 x 2   init xavier
param Wd : 2 x 2   init xavier
encoder enc : 3 -> 4 -> 4
stalk a : 2
stalk b : 2
stalk oa : 3
stalk ob : 3
pin oa = input
pin ob = input
objective a encoded enc oa
objective b encoded enc ob
objective a nonneg
objective b nonneg
edge ab : a -> b maps P | P hard
stalk one : 1
pin one = 1
edge total : one -> a maps [[MAP]] | [[1, 1]] hard
stalk y : 2
pin y = target
decode y : mean a b affine Wd identity
"""


def _model(text):
    G = from_model(load_text(text))
    return G, LearnedStructure(G)


def _statuses(r) -> dict:
    return {c.name: c.status for c in r.claims}


def _hard_system(S, params):
    """A x = r of the hard rows at ``params``, assembled from the structure's operators (numpy)."""
    Fv = S.map_values(params, np)
    return S.operators(Fv, np)[1].toarray()[S.hard], np.asarray(S.rhs(Fv, np), dtype=float)


def _sudoku():
    return _model((ROOT / "models" / "sudoku4.sheaf").read_text())


def test_the_sudoku_polytope_is_proved_feasible_for_every_value_of_the_shared_map():
    G, S = _sudoku()
    r = V.verify(G)
    c = r.claim("constraints_feasible")
    assert c.status == "proved" and c.method.startswith("exact rational"), (c.method, c.detail)
    assert "32 `maps P | P` edge(s)" in c.detail and "40 edge(s) without a parameter" in c.detail
    assert _statuses(r) == dict.fromkeys(V.CONSENSUS_CLAIMS, "proved")
    assert "lo ≤ x ≤ hi" in r.claim("minimiser_unique").detail
    # the point behind the proof satisfies the hard rows and x ≥ 0 at any value of P (here random, and a singular one)
    claim, x = V.claim_learned_feasible(S, init_params(G, 0))
    assert claim.status == "proved" and all(isinstance(v, Fraction) for v in x)
    x = np.array([float(v) for v in x])
    assert x.min() >= 0 and np.isclose(x.sum(), 3 * 16)  # 16 cells, three copies each, totals 1
    rng = np.random.default_rng(1)
    for P in [rng.normal(size=(4, 4)) for _ in range(3)] + [np.outer([1.0, 2, 0, -1], [3.0, 0, 1, 1])]:
        A, rhs = _hard_system(S, dict(init_params(G, 0), P=P))
        assert np.abs(A @ x - rhs).max() < 1e-12


def test_a_point_found_by_highs_is_a_proof_only_after_its_exact_check(monkeypatch):
    G, S = _sudoku()
    params = init_params(G, 0)
    monkeypatch.setattr(V, "EXACT_LP_LIMIT", 0)
    c, x = V.claim_learned_feasible(S, params)
    assert c.status == "proved" and c.method.startswith("certificate (HiGHS point checked exactly over ℚ)"), c.method
    A, rhs = _hard_system(S, params)
    assert np.abs(A @ np.array([float(v) for v in x]) - rhs).max() < 1e-12
    # a HiGHS point off by 1e-3 rounds to a point that breaks a row: then nothing is proved
    import scipy.optimize

    real = scipy.optimize.linprog
    calls = []

    def off(*a, **k):
        res = real(*a, **k)
        if not calls:
            res.x = res.x + 1e-3
        calls.append(1)
        return res

    monkeypatch.setattr(scipy.optimize, "linprog", off)
    c, x = V.claim_learned_feasible(S, params)
    assert x is None and c.status == "checked", (c.status, c.detail)
    assert "breaks row" in c.detail and "not proved for all" in c.detail


@pytest.mark.slow
def test_the_9x9_sudoku_polytope_is_proved_by_a_highs_vertex_checked_exactly():
    # 729 classes, past the exact simplex: HiGHS with a zero cost returned a non-vertex point with denominators near
    # 10⁶ that rounded off the rows (so only `checked`); a generic cost gives a vertex that rounds exactly
    from sheafdsl.training.tasks.sudoku import model_text

    G, S = _model(model_text(9))
    params = init_params(G, 0)
    c, x = V.claim_learned_feasible(S, params)
    assert c.status == "proved" and c.method.startswith("certificate (HiGHS point checked exactly over ℚ)"), c.detail
    assert "729 coordinate classes" in c.method
    x = np.array([float(v) for v in x])
    A, rhs = _hard_system(S, dict(params, P=np.random.default_rng(2).normal(size=params["P"].shape)))
    assert x.min() >= 0 and np.abs(A @ x - rhs).max() < 1e-12


def test_a_total_of_minus_one_against_nonneg_agents_fails_with_a_farkas_certificate():
    G, S = _model(TOTAL.replace("MAP", "-1"))
    r = V.verify(G)
    c = r.claim("constraints_feasible")
    assert c.status == "failed" and "exact phase-1 simplex" in c.method, c.detail
    assert _statuses(r)["minimiser_unique"] == "failed"
    assert "for every parameter value" in c.detail
    # independently: the total's row is x_a0 + x_a1 = −1 (the map [[−1]] on one = 1); with x ≥ 0 a combination
    # y with yᵀA ≤ 0 and yᵀr > 0 is a contradiction (yᵀA x ≤ 0 < yᵀr = yᵀA x)
    rows = {"total[0]": (np.array([1.0, 1.0, 0.0, 0.0]), Fraction(-1))}
    y = {k: Fraction(v) for k, v in c.witness["combination"].items()}
    assert set(y) <= set(rows)
    yA = sum(float(y[k]) * rows[k][0] for k in y)
    yr = sum(y[k] * rows[k][1] for k in y)
    assert np.all(yA <= 0) and yr > 0 and str(yr) == c.witness["y_dot_r"]
    assert Fraction(c.witness["bound"]) < yr
    # the same model with a total of +1 is proved
    ok = V.verify(from_model(load_text(TOTAL.replace("MAP", "1"))))
    assert ok.claim("constraints_feasible").status == "proved"


def test_a_parameter_on_a_constants_edge_is_checked_at_the_given_values_not_proved():
    text = TOTAL.replace("MAP", "1").replace("maps [[1]] | [[1, 1]] hard", "maps [[1]] | R hard").replace(
        "param Wd", "param R  : 1 x 2   init xavier\nparam Wd")
    G, S = _model(text)
    params = init_params(G, 0)
    params["R"] = np.array([[0.5, 2.0]])  # R x_a = 1 has points x_a ≥ 0
    r = V.verify(G, params)
    c = r.claim("constraints_feasible")
    assert c.status == "checked" and "not proved for all" in c.detail, (c.status, c.detail)
    assert _statuses(r)["minimiser_unique"] == "checked"
    # it cannot be proved: at R = −(1, 1) the same model has no feasible point, and verify says so with a witness
    params["R"] = np.array([[-1.0, -1.0]])
    c = V.verify(G, params).claim("constraints_feasible")
    assert c.status == "failed" and "at these values" in c.detail
    A, rhs = _hard_system(S, params)
    labels = [f"{nm}[{i}]" for nm, M0, de in S.edge_rows if S.hard[M0] for i in range(de)]
    y = np.array([c.witness["combination"].get(lab, 0.0) for lab in labels])
    yA = y @ A
    assert np.all(yA <= 1e-12) and y @ rhs > 1e-9  # x ≥ 0 everywhere: yᵀA x ≤ 0 < yᵀr


@pytest.mark.parametrize("edge, status", [
    ("a -> b maps P | P hard", "proved"),                 # x_a = x_b within the boxes
    ("a -> b maps P | [[1, 0], [0, 1]] hard", "checked"),  # needs x_a = 0 and x_b = 0 for all P: outside [1, 2]
])
def test_boxes_away_from_zero(edge, status):
    text = TOTAL.replace("edge ab : a -> b maps P | P hard", f"edge ab : {edge}").replace(
        "objective a nonneg", "objective a box 1 2").replace("objective b nonneg", "objective b box 1 2")
    text = text.replace("stalk one : 1\npin one = 1\nedge total : one -> a maps [[MAP]] | [[1, 1]] hard\n", "")
    G, S = _model(text)
    params = dict(init_params(G, 0), P=np.array([[1.0, 0.5], [0.0, 1.5]]))  # P maps [1, 2]² into reach of [1, 2]²
    c, x = V.claim_learned_feasible(S, params)
    assert c.status == status, c.detail
    if status == "proved":
        assert x is not None and all(1 <= v <= 2 for v in x) and x[:2] == x[2:]


def test_an_edge_with_a_parameter_on_one_side_is_proved_through_zero_blocks():
    # x_a = x_b = 0 meets P x_a = x_b for every P, and the total of b (a constant edge) is left to b's other block
    text = TOTAL.replace("MAP", "1").replace("edge ab : a -> b maps P | P hard", "edge ab : a[0:1] -> b[0:2] maps P | "
                                             "[[1, 0], [0, 1]] hard").replace("param P  : 2 x 2", "param P  : 2 x 1")
    text = text.replace("edge total : one -> a", "edge total : one -> b").replace("[[1, 1]] hard", "[[1, 1]] hard\n"
                                                                                "edge t2 : one -> a maps [[1]] | [[1, 1]] hard")
    G, S = _model(text)
    c, x = V.claim_learned_feasible(S, init_params(G, 0))
    # b's block is all of b: x_b = 0 contradicts its total 1, so no uniform point, and the claim is not proved
    assert c.status in ("checked", "failed") and x is None, c.detail
    text2 = text.replace("edge total : one -> b maps [[1]] | [[1, 1]] hard\n", "")
    G, S = _model(text2)
    c, x = V.claim_learned_feasible(S, init_params(G, 0))
    assert c.status == "proved" and "1 edge(s) with another parameter map" in c.detail, c.detail
    x = np.array([float(v) for v in x])
    assert x[0] == 0 and np.all(x[2:] == 0) and x[1] == 1  # a = (0, 1) meets a's total, b = 0
    for P in (np.array([[2.0], [-3.0]]), np.array([[0.0], [1.0]])):
        A, rhs = _hard_system(S, dict(init_params(G, 0), P=P))
        assert np.abs(A @ x - rhs).max() < 1e-12


def test_without_constants_and_bounds_x_zero_is_the_proof():
    text = TOTAL.replace("objective a nonneg\nobjective b nonneg\n", "").replace(
        "stalk one : 1\npin one = 1\nedge total : one -> a maps [[MAP]] | [[1, 1]] hard\n", "")
    G, S = _model(text)
    c, x = V.claim_learned_feasible(S, init_params(G, 0))
    assert c.status == "proved" and c.method == "structural" and "x = 0" in c.detail and x == [0.0] * S.n
