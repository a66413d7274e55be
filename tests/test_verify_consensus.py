"""`sheaf verify` of consensus problems: each claim proved on a good model and refuted, with a witness that
the test checks independently, on a bad one; the numeric fallback; hypothesis over random problems."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

from sheafdsl.analysis.verify import CONSENSUS_CLAIMS, verify
from sheafdsl.frontend import load_text
from sheafdsl.ir import edge_offsets, edges, free_indices, from_model, objectives, stalks, vertex_slice
from sheafdsl.lowering import coboundary_matrix, init_params, offset_vector
from sheafdsl.testing import consensus_problems

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def report(src: str, **kw):
    G = from_model(load_text(src))
    return G, verify(G, **kw)


def statuses(r) -> dict:
    return {c.name: c.status for c in r.claims}


@pytest.mark.parametrize("name", ["sensor_fusion", "formation", "distribution"])
def test_the_models_are_proved(name):
    import sheafdsl as sd

    r = sd.load(ROOT / "models" / f"{name}.sheaf").verify()
    assert [c.name for c in r.claims] == list(CONSENSUS_CLAIMS) + ["cohomology"]
    assert all(statuses(r)[c] == "proved" for c in CONSENSUS_CLAIMS), [(c.name, c.detail) for c in r.claims]
    assert not r.failed


# ----------------------------------------------------------------------------------------------
# objectives_convex


def test_an_indefinite_parameter_q_is_refuted_with_its_witness():
    # a parameter drawn at random: its values are only known at verify time (numeric)
    src = "sheaf t\nstalk x : 2\nparam P : 2 x 2 init normal(1)\nobjective x quadratic P\n"
    G = from_model(load_text(src))
    Q = np.array([[1.0, 2.0], [2.0, 1.0]])
    r = verify(G, {"P": Q})
    c = r.claim("objectives_convex")
    assert c.status == "failed" and r.failed and c.method.startswith("numeric")
    v = np.array(c.witness["vector"])
    assert v @ Q @ v < 0 and np.isclose(v @ Q @ v, c.witness["curvature"])
    assert statuses(r)["strictly_convex"] == "skipped" and statuses(r)["minimiser_unique"] == "skipped"
    r = verify(G, {"P": np.array([[2.0, 1.0], [1.0, 2.0]])})
    assert statuses(r)["objectives_convex"] == "checked"  # PSD, numerically (`normal` is not written in the file)


def test_an_indefinite_literal_parameter_built_from_python_is_refuted_exactly():
    from sheafdsl.ir import add_objective, add_param, add_stalk, new_sheaf

    G = new_sheaf("py")
    add_stalk(G, "x", 3)
    add_param(G, "P", (3, 3), "literal", value=[[1.0, 0.5, 0], [0.5, 0.2, 0], [0, 0, 1]])  # det of the 2x2 block < 0
    add_objective(G, "x", "quadratic", Q="P")  # the builder leaves a parameter's values to verify
    c = verify(G).claim("objectives_convex")
    assert c.status == "failed" and "ℚ" in c.method
    v = [Fraction(x) for x in c.witness["exact"]]
    Q = [[Fraction(1), Fraction(1, 2), 0], [Fraction(1, 2), Fraction(1, 5), 0], [0, 0, Fraction(1)]]
    curv = sum(v[i] * Q[i][j] * v[j] for i in range(3) for j in range(3))
    assert curv < 0 and str(curv) == c.witness["curvature"]


def test_a_literal_psd_q_is_proved_exactly():
    _, r = report("sheaf t\nstalk x : 2\nobjective x quadratic [[0.1, 0.3], [0.3, 0.9]]\n")
    assert statuses(r)["objectives_convex"] == "proved" and "ℚ" in r.claim("objectives_convex").method


# ----------------------------------------------------------------------------------------------
# constraints_feasible

FORMATION = (ROOT / "models" / "formation.sheaf").read_text()


def _rows(G, P, y_labels):
    """The hard rows (δ, o) and simplex rows of G as {label: (row over all coordinates, rhs with the constant
    pins moved over)}: an independent assembly of the constraint system, to check a witness against."""
    from sheafdsl.ir import constant_pins

    D, o = coboundary_matrix(G, P).toarray(), offset_vector(G, P)
    idx, val = constant_pins(G)
    xc = np.zeros(D.shape[1])
    xc[idx] = val
    out, off = {}, edge_offsets(G)
    for _, _, name, d in edges(G):
        for i in range(d["dim"]):
            out[f"{name}[{i}]"] = (D[off[name] + i], o[off[name] + i] - D[off[name] + i] @ xc)
    N = D.shape[1]
    for v in stalks(G):
        if any(t.kind == "simplex" for t in objectives(G, v)):
            row = np.zeros(N)
            row[vertex_slice(G, v)] = 1
            out[f"simplex({v})"] = (row, 1.0 - row @ xc)
    return {k: out[k] for k in y_labels}


def test_offsets_around_a_cycle_that_do_not_close_are_infeasible():
    bad = FORMATION.replace("param d_da : 2      = [0, -1]", "param d_da : 2      = [0, -0.5]")
    G, r = report(bad)
    c = r.claim("constraints_feasible")
    assert c.status == "failed" and statuses(r)["minimiser_unique"] == "failed"
    comb = {k: Fraction(v) for k, v in c.witness["combination"].items()}
    rows = _rows(G, init_params(G, 0), comb)
    yA = sum(float(comb[k]) * rows[k][0] for k in comb)
    yr = sum(comb[k] * Fraction(repr(float(rows[k][1]))) for k in comb)
    assert np.allclose(yA, 0) and yr != 0 and str(yr) == c.witness["y_dot_r"]  # 0 = yᵀr ≠ 0 would follow
    assert set(k.split("[")[0] for k in comb) == {"ab", "bc", "cd", "da"}  # the whole cycle, y-coordinates
    ok = statuses(verify(from_model(load_text(FORMATION))))
    assert ok["constraints_feasible"] == "proved"


def test_boxes_too_small_for_the_formation_have_a_farkas_certificate():
    bad = FORMATION.replace("box -2 2", "box -0.4 0.4")
    G, r = report(bad)
    c = r.claim("constraints_feasible")
    assert c.status == "failed", c.detail
    assert "rank A = rank [A | r]" in c.detail  # the equalities alone are consistent
    comb = {k: Fraction(v) for k, v in c.witness["combination"].items()}
    rows = _rows(G, init_params(G, 0), comb)
    yA = sum(float(comb[k]) * rows[k][0] for k in comb)
    yr = sum(comb[k] * Fraction(repr(float(rows[k][1]))) for k in comb)
    # max of yᵀA x over the boxes [-0.4, 0.4] on every coordinate is 0.4 Σ|yᵀA|: below yᵀr
    assert float(yr) > 0.4 * np.abs(yA).sum() + 1e-12
    assert str(yr) == c.witness["y_dot_r"]


def test_an_exact_lp_finds_a_point_when_the_boxes_allow_one():
    _, r = report(FORMATION.replace("box -2 2", "box -0.5 0.5"))  # the unit square just fits
    assert statuses(r)["constraints_feasible"] == "proved" and "phase-1 simplex" in r.claim("constraints_feasible").method


def test_a_simplex_on_a_hard_edge_that_scales_it_is_infeasible():
    src = ("sheaf t\nstalk p : 2\nstalk q : 2\nobjective p simplex\nobjective q simplex\n"
           "edge e : p -> q maps 2 | 1 hard\n")  # q = 2p: Σq = 2Σp, but both sum to 1
    G, r = report(src)
    c = r.claim("constraints_feasible")
    assert c.status == "failed"
    comb = {k: Fraction(v) for k, v in c.witness["combination"].items()}
    assert {"simplex(p)", "simplex(q)"} <= set(comb)
    rows = _rows(G, init_params(G, 0), comb)
    assert np.allclose(sum(float(comb[k]) * rows[k][0] for k in comb), 0)
    assert sum(comb[k] * Fraction(repr(float(rows[k][1]))) for k in comb) != 0


# ----------------------------------------------------------------------------------------------
# strictly_convex and minimiser_unique

FUSION = (ROOT / "models" / "sensor_fusion.sheaf").read_text()


def _check_flat_direction(G, P, w, sources=("input", "target", "value")):
    """z (the witness, on the free coordinates) is in ker Q ∩ ker δ_S ∩ ker A: checked on the assembled IR."""
    free = free_indices(G, sources)
    labels = []
    for v in stalks(G):
        labels += [(v, i) for i in range(G.nodes[v]["dim"])]
    z = np.zeros(len(labels))
    pos = {lab: j for j, lab in enumerate(labels)}
    for v, vals in w["exact"].items():
        for i, x in zip(w["coordinates"][v], vals):
            z[pos[(v, i)]] = float(Fraction(x))
    assert np.any(z) and np.all(z[np.setdiff1d(np.arange(len(z)), free)] == 0)
    D = coboundary_matrix(G, P).toarray()
    assert np.allclose(D @ z, 0)  # every edge, hard and soft, is flat along z
    for v in stalks(G):
        for t in objectives(G, v):
            if t.kind == "quadratic":
                Q = P[t.Q] if isinstance(t.Q, str) else t.Q
                assert np.allclose(Q @ z[vertex_slice(G, v)], 0)
    return z


def test_an_unobservable_state_is_a_direction_of_non_uniqueness():
    # without the altimeter (b) and the noisy sensor (c), no agent sees h: the fusion is not unique
    bad = FUSION.replace("objective m_b quadratic 4 [-1.96]\n", "").replace(
        "objective m_c quadratic 0.25 [-0.7625, -0.13]\n", "")
    G, r = report(bad)
    c = r.claim("strictly_convex")
    assert c.status == "failed"
    z = _check_flat_direction(G, init_params(G, 0), c.witness)
    u = r.claim("minimiser_unique")
    assert u.status == "failed" and u.witness["slope"] == "0" and "line" in u.detail  # a line of minimisers
    _check_flat_direction(G, init_params(G, 0), u.witness)
    assert np.abs(z).max() > 0
    good = statuses(verify(from_model(load_text(FUSION))))
    assert good["strictly_convex"] == good["minimiser_unique"] == "proved"


def test_a_flat_direction_with_a_slope_means_no_minimiser():
    G, r = report("sheaf t\nstalk x : 2\nobjective x quadratic [[1, 0], [0, 0]] [0, 1]\n")
    u = r.claim("minimiser_unique")
    assert u.status == "failed" and u.witness["slope"] == "1" and "unbounded below" in u.detail
    assert u.witness["exact"] == {"x": ["1"]} and u.witness["coordinates"] == {"x": [1]}


def test_a_flat_direction_into_an_indicator_is_not_decided():
    # a linear objective on the simplex: the quadratic part is flat, but the simplex bounds every direction
    G, r = report("sheaf t\nstalk x : 2\nobjective x simplex\nobjective x quadratic 0 [1, 2]\n")
    assert statuses(r)["strictly_convex"] == "failed"
    u = r.claim("minimiser_unique")
    assert u.status == "skipped" and u.method == "not decided"


def test_hard_pins_remove_the_flat_direction():
    src = "sheaf t\nstalk x : 2\nobjective x quadratic [[1, 0], [0, 0]]\n"
    assert statuses(report(src)[1])["strictly_convex"] == "failed"
    assert statuses(report(src + "pin x[1] = 3\n")[1])["strictly_convex"] == "proved"
    assert statuses(report(src + "pin x[1] ~ 3 weight 2\n")[1])["strictly_convex"] == "proved"  # a soft pin too


def test_past_the_symbolic_limit_every_claim_is_checked():
    G = from_model(load_text(FUSION))
    r = verify(G, symbolic_limit=0)
    assert [statuses(r)[c] for c in CONSENSUS_CLAIMS] == ["checked"] * 4
    bad = FORMATION.replace("param d_da : 2      = [0, -1]", "param d_da : 2      = [0, -0.5]")
    assert statuses(verify(from_model(load_text(bad)), symbolic_limit=0))["constraints_feasible"] == "failed"


def test_sheaf_verify_cli_prints_the_claims_and_exits_1_on_a_failure(tmp_path):
    from sheafdsl.cli.main import cli

    res = CliRunner().invoke(cli, ["verify", str(ROOT / "models" / "formation.sheaf"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["ok"] and [c["name"] for c in out["claims"]][:4] == list(CONSENSUS_CLAIMS)
    bad = tmp_path / "bad.sheaf"
    bad.write_text(FORMATION.replace("box -2 2", "box -0.4 0.4"))
    res = CliRunner().invoke(cli, ["verify", str(bad)])
    assert res.exit_code == 1 and "constraints_feasible" in res.output and "witness" in res.output


# ----------------------------------------------------------------------------------------------
# hypothesis: random consensus problems against independent references

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _reference(case):
    """Independent numeric answers from the IR: feasibility by scipy's LP (HiGHS), λ_min(ZᵀHZ) by a dense
    null space (scipy.linalg.null_space) and eigvalsh."""
    from scipy.linalg import null_space
    from scipy.optimize import linprog

    G, P = case.G, case.params
    free = free_indices(G, ("input", "target", "value"))
    D, o = coboundary_matrix(G, P).toarray(), offset_vector(G, P)
    N = D.shape[1]
    from sheafdsl.ir import constant_pins

    idx, val = constant_pins(G)
    xc = np.zeros(N)
    xc[idx] = val
    hard = [k for _, _, n, d in edges(G) for k in range(edge_offsets(G)[n], edge_offsets(G)[n] + d["dim"]) if d["hard"]]
    soft = [k for k in range(D.shape[0]) if k not in hard]
    w = np.concatenate([np.full(d["dim"], d["weight"]) for *_, d in edges(G)]) if hard or soft else np.zeros(0)
    A, r = D[hard][:, free], o[hard] - D[hard] @ xc
    lo, hi = np.full(N, -np.inf), np.full(N, np.inf)
    Q = np.zeros((N, N))
    for v in stalks(G):
        sl = vertex_slice(G, v)
        for t in objectives(G, v):
            if t.kind == "quadratic":
                Q[sl, sl] += P[t.Q] if isinstance(t.Q, str) else t.Q
            elif t.kind in ("nonneg", "simplex"):
                lo[sl] = np.maximum(lo[sl], 0)
            elif t.kind == "box":
                lo[sl], hi[sl] = np.maximum(lo[sl], t.lo), np.minimum(hi[sl], t.hi)
            if t.kind == "simplex":
                row = np.zeros(N)
                row[sl] = 1
                A = np.vstack([A, row[free]])
                r = np.append(r, 1 - row @ xc)
    if len(free) == 0:
        feasible = bool(np.allclose(r, 0))
    else:
        res = linprog(np.zeros(len(free)), A_eq=A if len(A) else None, b_eq=r if len(A) else None,
                      bounds=list(zip(np.where(np.isfinite(lo[free]), lo[free], None),
                                      np.where(np.isfinite(hi[free]), hi[free], None))), method="highs")
        feasible = res.status == 0
    Ws = w[soft, None] * D[soft][:, free]
    H = Q[np.ix_(free, free)] + Ws.T @ Ws
    Z = null_space(A) if len(A) else np.eye(len(free))
    lam = np.linalg.eigvalsh(Z.T @ H @ Z)[0] if Z.shape[1] else np.inf
    return feasible, lam


@SETTINGS
@given(consensus_problems(strictly_convex=True))
def test_random_strictly_convex_feasible_problems_are_proved(case):
    r = verify(case.G, case.params)
    s = statuses(r)
    assert s["objectives_convex"] == "proved" and s["constraints_feasible"] == "proved", r.claim("constraints_feasible").detail
    assert s["strictly_convex"] == "proved" and s["minimiser_unique"] == "proved"
    feasible, lam = _reference(case)
    assert feasible and lam > 1e-9


@SETTINGS
@given(consensus_problems(strictly_convex=False, feasible=False, max_vertices=4))
def test_random_problems_agree_with_the_numeric_references(case):
    r = verify(case.G, case.params)
    s = statuses(r)
    feasible, lam = _reference(case)
    assert (s["constraints_feasible"] == "proved") == feasible, (r.claim("constraints_feasible").detail, feasible)
    assert s["strictly_convex"] in ("proved", "failed")
    assert (s["strictly_convex"] == "proved") == (lam > 1e-9), (r.claim("strictly_convex").detail, lam)
    if s["strictly_convex"] == "failed":
        _check_flat_direction(case.G, case.params, r.claim("strictly_convex").witness)
    if s["constraints_feasible"] == "failed" and "combination" in (r.claim("constraints_feasible").witness or {}):
        c = r.claim("constraints_feasible")
        comb = {k: Fraction(v) for k, v in c.witness["combination"].items()}
        rows = _rows(case.G, case.params, comb)
        yA = sum(float(comb[k]) * rows[k][0] for k in comb)
        yr = sum(comb[k] * Fraction(repr(float(rows[k][1]))) for k in comb)
        assert str(yr) == c.witness["y_dot_r"]
        if "bound" in c.witness:  # Farkas: yᵀA x ≤ bound < yᵀr over the indicator bounds
            assert Fraction(c.witness["bound"]) < yr
        else:  # Rouché–Capelli: yᵀA = 0 on the free coordinates, yᵀr ≠ 0
            assert yr != 0
            free = free_indices(case.G, ("input", "target", "value"))
            assert np.allclose(yA[free], 0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(consensus_problems())
def test_the_strategy_builds_problems_around_a_feasible_point(case):
    """consensus_problems(): its point satisfies every hard edge, hard pin and indicator; every Q ≻ 0."""
    G, P = case.G, case.params
    from sheafdsl.ir import is_consensus, total_dim

    assert is_consensus(G)
    c = np.zeros(total_dim(G))
    for v in stalks(G):
        d = G.nodes[v]
        c[vertex_slice(G, v)] = d["pins"][0].value if d.get("anchor") else case.point[v]
        for p in ([] if d.get("anchor") else d["pins"]):
            assert np.array_equal(case.point[v][list(p.indices)], p.value)
    D, o, off = coboundary_matrix(G, P).toarray(), offset_vector(G, P), edge_offsets(G)
    for _, _, name, d in edges(G):
        if d["hard"]:
            sl = slice(off[name], off[name] + d["dim"])
            assert np.array_equal(D[sl] @ c - o[sl], np.zeros(d["dim"]))  # exactly: quarters
    for v, p in case.point.items():
        for t in objectives(G, v):
            if t.kind in ("nonneg", "simplex"):
                assert np.all(p >= 0) and (t.kind == "nonneg" or p.sum() == 1)
            elif t.kind == "box":
                assert np.all(t.lo <= p) and np.all(p <= t.hi)
            elif t.kind == "quadratic":
                Q = P[t.Q] if isinstance(t.Q, str) else t.Q
                assert np.linalg.eigvalsh(Q)[0] >= 1 - 1e-9  # BᵀB + I


def test_constraints_that_only_some_inputs_satisfy_are_refuted_with_the_data_combination():
    src = ("sheaf t\nstalk x : 2\nstalk y : 2\nedge e : x -> y maps 1 | 1 hard\n"
           "edge f : x -> y maps [[1, 0], [0, 2]] | 1 hard\nobjective y quadratic 1\npin x = input\n")
    G, r = report(src)
    c = r.claim("constraints_feasible")
    assert c.status == "failed" and c.witness["y_dot_r"] == "0"
    comb = {k: Fraction(v) for k, v in c.witness["combination"].items()}
    assert set(comb) == {"e[1]", "f[1]"} and comb["e[1]"] == -comb["f[1]"]  # y1 = x1 and y1 = 2 x1: x1 = 0 only
    assert {k: Fraction(v) for k, v in c.witness["y_dot_data"].items()} == {"x[1]": -comb["f[1]"]}
    # with the second row consistent for every input (y1 = x1 twice), it is proved for every data value
    ok = src.replace("[[1, 0], [0, 2]]", "[[1, 0], [0, 1]]")
    c = report(ok)[1].claim("constraints_feasible")
    assert c.status == "proved" and "for every value of the data pins" in c.detail


@pytest.mark.parametrize("bad", [
    "sheaf t\nstalk x : 2\nparam P : 2 x 2 = [[0, 0], [0, 0]]\nobjective x quadratic P\n",  # values from --params
    FORMATION.replace("param d_da : 2      = [0, -1]", "param d_da : 2      = [0, -0.5]"),
    FORMATION.replace("box -2 2", "box -0.4 0.4"),
    "sheaf t\nstalk x : 2\nobjective x quadratic [[1, 0], [0, 0]] [0, 1]\n",
], ids=["indefinite-Q", "cycle", "farkas", "unbounded"])
def test_sheaf_verify_prints_every_consensus_witness(tmp_path, bad):
    from sheafdsl.cli.main import cli

    path = tmp_path / "bad.sheaf"
    path.write_text(bad)
    args = ["verify", str(path)]
    if "param P" in bad:
        np.savez(tmp_path / "p.npz", P=np.array([[1.0, 2.0], [2.0, 1.0]]))
        args += ["--params", str(tmp_path / "p.npz")]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1, res.output
    assert "internal error" not in res.output and "witness:" in res.output
