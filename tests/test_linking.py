"""Linking numbers (sheafdsl.analysis.linking, ``sheaf linking``, ``Sheaf.linking``): the exact polygon
formula against a quadrature of the Gauss integral, its invariances under hypothesis, the built-in links,
segment distances against brute force, the point-cloud estimator, the images at the stalks against a
plain forward pass, and the command's contract and errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sheafdsl as sd
from sheafdsl.analysis.linking import (gauss_linking, link_curves, link_points, min_distance, point_cloud_linking,
                                       polygon_linking, refine, segment_distances)
from sheafdsl.cli.main import cli
from sheafdsl.errors import SheafError

MODELS = Path(__file__).resolve().parents[1] / "models"
RELU = str(MODELS / "hopf_relu.sheaf")

LINKS = [("hopf", 1), ("unlink", 0), ("whitehead", 0), ("torus:0", 0), ("torus:1", 1), ("torus:2", 2),
         ("torus:3", 3), ("torus:-2", -2), ("torus:7", 7)]


# ----------------------------------------------------------------------------------------------
# the exact formula


def _quadrature(a, b, k=24):
    """The Gauss double integral by the midpoint rule, k points per segment (an independent reference)."""
    s = (np.arange(k) + 0.5) / k

    def pts(p):
        nxt = np.roll(p, -1, axis=0)
        return ((p[:, None] * (1 - s)[None, :, None] + nxt[:, None] * s[None, :, None]).reshape(-1, 3),
                np.repeat((nxt - p) / k, k, axis=0))

    A, dA = pts(a)
    B, dB = pts(b)
    R = A[:, None] - B[None]
    return float((np.einsum("ijk,ijk->ij", R, np.cross(dA[:, None], dB[None])) /
                  np.linalg.norm(R, axis=-1) ** 3).sum() / (4 * math.pi))


@pytest.mark.parametrize("spec,want", LINKS[:6])
def test_exact_formula_matches_a_quadrature_of_the_gauss_integral(spec, want):
    a, b = link_curves(spec, 48)
    q = _quadrature(a, b)
    assert abs(q - want) < 2e-3 and abs(gauss_linking(a, b) - want) < 1e-9
    assert polygon_linking(a, b).linking == want


@pytest.mark.parametrize("spec,want", LINKS)
@pytest.mark.parametrize("points", [None, 301])
def test_builtin_links_have_their_linking_numbers(spec, want, points):
    from sheafdsl.analysis.linking import min_points, parse_link

    n = points or min_points(*parse_link(spec))
    a, b = link_curves(spec, n)
    r = polygon_linking(a, b)
    assert r.linking == want and r.reason is None and r.min_distance > 0.05
    assert abs(r.gauss - want) < 1e-9


def _crossings(comps):
    """Crossings of the projection to the xy-plane: ((component, position), (component, position), first over)."""
    segs = [(ci, i, c[i], c[(i + 1) % len(c)]) for ci, c in enumerate(comps) for i in range(len(c))]
    out = []
    for u in range(len(segs)):
        for v in range(u + 1, len(segs)):
            cu, iu, p1, p2 = segs[u]
            cv, iv, q1, q2 = segs[v]
            if cu == cv and (abs(iu - iv) <= 1 or abs(iu - iv) == len(comps[cu]) - 1):
                continue
            d1, d2, r = p2[:2] - p1[:2], q2[:2] - q1[:2], q1[:2] - p1[:2]
            den = -d1[0] * d2[1] + d1[1] * d2[0]
            if den == 0:
                continue
            s, t = (-r[0] * d2[1] + r[1] * d2[0]) / den, (d1[0] * r[1] - d1[1] * r[0]) / den
            if 0 <= s < 1 and 0 <= t < 1:
                out.append(((cu, iu + s), (cv, iv + t), p1[2] + s * (p2[2] - p1[2]) > q1[2] + t * (q2[2] - q1[2])))
    return out


def test_whitehead_curves_form_an_alternating_five_crossing_diagram():
    """Reduced, alternating, 5 crossings, two components, lk 0: the Whitehead link 5²₁ (not the unlink)."""
    a, b = link_curves("whitehead", 120)
    X = _crossings([a, b])
    assert len(X) == 5 and sum(A[0] == B[0] for A, B, _ in X) == 1  # one self-crossing of b
    for comp in (0, 1):
        ev = sorted([(A[1], o) for A, B, o in X if A[0] == comp] + [(B[1], not o) for A, B, o in X if B[0] == comp])
        seq = [o for _, o in ev]
        assert all(seq[i] != seq[(i + 1) % len(seq)] for i in range(len(seq))), (comp, seq)
    assert polygon_linking(a, b).linking == 0


# ----------------------------------------------------------------------------------------------
# invariances (hypothesis)

link_spec = st.sampled_from([s for s, _ in LINKS])


def _rotation(draw_vals):
    q, r = np.linalg.qr(np.asarray(draw_vals).reshape(3, 3))
    q = q * np.sign(np.diag(r))
    return q * np.sign(np.linalg.det(q))  # det +1


floats = st.floats(-1, 1, allow_nan=False)
nine = st.lists(floats, min_size=9, max_size=9).filter(lambda v: abs(np.linalg.det(np.reshape(v, (3, 3)))) > 0.2)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _want(spec):
    return dict(LINKS)[spec]


@SETTINGS
@given(link_spec, nine, st.lists(st.floats(-5, 5), min_size=3, max_size=3))
def test_invariant_under_rigid_motions(spec, rot, shift):
    a, b = link_curves(spec, 64)
    Q, t = _rotation(rot), np.array(shift)
    assert polygon_linking(a @ Q.T + t, b @ Q.T + t).linking == _want(spec)


@SETTINGS
@given(link_spec, nine)
def test_linear_maps_keep_or_negate_the_linking_number_by_the_sign_of_their_determinant(spec, m):
    a, b = link_curves(spec, 64)
    M = np.reshape(m, (3, 3))
    r = polygon_linking(a @ M.T, b @ M.T)
    assert r.linking == int(np.sign(np.linalg.det(M))) * _want(spec)


@SETTINGS
@given(link_spec)
def test_symmetric_under_swapping_and_negated_by_reversing_one_curve(spec):
    a, b = link_curves(spec, 64)
    w = _want(spec)
    assert polygon_linking(b, a).linking == w
    assert polygon_linking(a[::-1], b).linking == -w and polygon_linking(a, b[::-1]).linking == -w
    assert polygon_linking(b[::-1], a[::-1]).linking == w


@SETTINGS
@given(link_spec, st.integers(65, 400), st.integers(0, 2**31 - 1))
def test_stable_under_refinement_and_small_isotopies(spec, n, seed):
    a, b = link_curves(spec, 64)
    w = _want(spec)
    ra, rb = refine(a, n), refine(b, n)
    assert len(ra) >= n and polygon_linking(ra, rb).linking == w
    # moving every vertex by less than half the distance keeps the polygons apart all the way
    d = min_distance(a, b)
    rng = np.random.default_rng(seed)

    def jiggle(p):
        v = rng.normal(size=p.shape)
        return p + 0.49 * d * rng.uniform(0, 1, (len(p), 1)) * v / np.linalg.norm(v, axis=1, keepdims=True)

    assert polygon_linking(jiggle(ra), jiggle(rb)).linking == w


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(3, 9), st.integers(3, 9))
def test_segment_distances_match_brute_force(seed, n, m):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(n, 3)), rng.normal(size=(m, 3)) + rng.normal(size=3)
    if rng.uniform() < 0.3:  # degenerate: a repeated vertex (a zero-length segment) and parallel segments
        a[1] = a[0]
        b[1] = b[0] + (a[2] - a[1])
    D = segment_distances(a, b)
    s = np.linspace(0, 1, 401)

    def pts(p, i):
        return p[i] + s[:, None] * (p[(i + 1) % len(p)] - p[i])

    h = max(np.linalg.norm(np.roll(a, -1, 0) - a, axis=1).max(), np.linalg.norm(np.roll(b, -1, 0) - b, axis=1).max())
    for i in range(n):
        for j in range(m):
            brute = np.linalg.norm(pts(a, i)[:, None] - pts(b, j)[None], axis=-1).min()
            assert D[i, j] <= brute + 1e-12 and brute - D[i, j] <= h / 400 + 1e-12


def test_meeting_polygons_have_no_linking_number():
    a, b = link_curves("hopf", 32)
    r = polygon_linking(a, a + 0.0)
    assert r.linking is None and r.min_distance == 0 and "meet" in r.reason
    flat = np.c_[a[:, :2], 0 * a[:, 2]], np.c_[b[:, :1], 0 * b[:, 1:]]  # both squashed into z = 0 and a line
    r = polygon_linking(*flat)
    assert r.linking is None and "meet" in r.reason


def test_bad_curves_are_diagnostics():
    for bad, code in [(np.zeros((2, 3)), "E543"), (np.zeros((4, 2)), "E543"), ([[0, 0, 0], [1, 0, 0], [np.nan, 1, 0]],
                                                                              "E543")]:
        with pytest.raises(SheafError) as e:
            polygon_linking(bad, np.eye(3))
        assert e.value.codes == [code]
    for spec, code in [("hopx", "E544"), ("torus", "E545"), ("torus:1.5", "E545"), ("torus:999", "E545"),
                       ("hopf:2", "E544")]:
        with pytest.raises(SheafError) as e:
            link_curves(spec)
        assert e.value.codes == [code], spec
    with pytest.raises(SheafError) as e:
        link_curves("torus:5", 20)
    assert e.value.codes == ["E546"]


# ----------------------------------------------------------------------------------------------
# the point-cloud estimator


def _sample(spec, n, noise, seed):
    from sheafdsl.analysis.linking import parse_link

    rng = np.random.default_rng(seed)
    A, B = link_points(*parse_link(spec), rng.uniform(0, 2 * np.pi, n), rng.uniform(0, 2 * np.pi, n))
    return A + rng.normal(0, noise, A.shape), B + rng.normal(0, noise, B.shape)


@pytest.mark.parametrize("seed", [0, 1])
def test_point_cloud_estimator_recovers_hopf_and_unlink(seed):
    assert point_cloud_linking(*_sample("hopf", 150, 0.1, seed)).linking == 1
    assert point_cloud_linking(*_sample("unlink", 150, 0.1, seed)).linking == 0


def test_point_cloud_estimator_sees_the_torus_link():
    assert point_cloud_linking(*_sample("torus:2", 300, 0.05, 0), landmarks=64).linking == 2


# ----------------------------------------------------------------------------------------------
# images at the stalks


def test_images_are_the_forward_pass_and_stalks_come_in_forward_order():
    sh = sd.load(RELU)
    p = sh.init_params(seed=3)
    rep = sh.linking(link="hopf", points=40, params=p)
    assert [la.stalk for la in rep.layers] == ["x", "z1", "a1", "z2", "a2", "z3", "a3"]
    a, _ = link_curves("hopf", 40)
    h, seen = a, {"x": a}
    for i in (1, 2, 3):
        z = h @ p[f"W{i}"].T + p[f"b{i}"]
        h = np.maximum(z, 0)
        seen[f"z{i}"], seen[f"a{i}"] = z, h
    for la in rep.layers:
        np.testing.assert_allclose(la.a, seen[la.stalk], atol=1e-10)
    assert rep.layers[0].linking == 1


LINEAR = """sheaf lin
param A : 3 x 3 = [[2, 1, 0], [0, 1, 0], [0, 0, 3]]
param B : 3 x 3 = [[0, 1, 0], [1, 0, 0], [0, 0, 1]]
param c : 3 = [1, -2, 0.5]
stalk x : 3
stalk u : 3
stalk w : 3
edge e1 : x -> u  affine A c
edge e2 : u -> w  linear B
pin x = input
"""


@pytest.mark.parametrize("spec,want", [("hopf", 1), ("torus:3", 3), ("whitehead", 0)])
def test_linking_follows_the_determinant_through_linear_layers(spec, want):
    rep = sd.loads(LINEAR).linking(link=spec)
    assert rep.linking == {"x": want, "u": want, "w": -want}  # det A = 6 > 0, det B = -1


def test_model_without_a_3_dim_input_is_e548_at_its_declaration():
    with pytest.raises(SheafError) as e:
        sd.load(MODELS / "circle.sheaf").linking(link="hopf")
    d = e.value.diagnostics[0]
    assert e.value.codes == ["E548"] and d.span.line >= 1 and "dimension 2" in d.message


def test_classes_alone_and_beside_curves():
    sh = sd.loads(LINEAR)
    XA, XB = _sample("hopf", 150, 0.1, 0)
    rep = sh.linking(classes=(XA, XB))
    assert rep.linking == {"x": 1, "u": 1, "w": 1}  # |lk|: the estimator reports the largest absolute value
    rep = sh.linking(link="hopf", classes=(XA, XB))
    assert rep.linking == {"x": 1, "u": 1, "w": -1} and [la.point_cloud.linking for la in rep.layers] == [1, 1, 1]
    with pytest.raises(SheafError) as e:
        sh.linking(classes=(XA[:, :2], XB))
    assert e.value.codes == ["E547"]


# ----------------------------------------------------------------------------------------------
# the command


def _run(*args):
    res = CliRunner().invoke(cli, list(args))
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return res


def test_command_json_contract():
    res = _run("linking", RELU, "--link", "hopf", "--points", "64", "--json")
    assert res.exit_code == 0
    out = json.loads(res.stdout)
    assert out["ok"] is True and out["diagnostics"] == []
    assert [e["stalk"] for e in out["layers"]] == ["x", "z1", "a1", "z2", "a2", "z3", "a3"]
    for e in out["layers"]:
        assert set(e) == {"stalk", "linking", "min_distance"}
        assert e["linking"] is None or isinstance(e["linking"], int)
        assert isinstance(e["min_distance"], float) and e["min_distance"] >= 0
    assert out["layers"][0] == {"stalk": "x", "linking": 1, "min_distance": out["layers"][0]["min_distance"]}
    for e in out["layers"]:
        assert (e["linking"] is None) == (e["stalk"] in out["undefined"])


def test_command_with_user_curves_and_a_plot(tmp_path):
    a, b = link_curves("torus:2", 40)
    np.savez(tmp_path / "c.npz", a=a, b=b)
    png = tmp_path / "p.png"
    res = _run("linking", str(MODELS / "hopf_gelu.sheaf"), "--curves", str(tmp_path / "c.npz"), "--plot", str(png),
               "--json")
    out = json.loads(res.stdout)
    assert res.exit_code == 0 and out["layers"][0]["linking"] == 2 and out["points"] == [40, 40]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = _run("linking", str(MODELS / "hopf_gelu.sheaf"), "--curves", str(tmp_path / "c.npz"))
    assert text.exit_code == 0 and "linking" in text.stdout


@pytest.mark.parametrize("args,code", [
    (["--link", "hopx"], "E544"), (["--link", "torus:x"], "E545"), (["--link", "torus:2", "--points", "5"], "E546"),
    (["--link", "hopf", "--points", "0"], "E546"), (["--curves", "MISSING.npz"], "E542"),
    (["--classes", "circle"], "E547"),
])
def test_command_errors_exit_1_with_their_code(args, code):
    res = _run("linking", RELU, *args, "--json")
    out = json.loads(res.stdout)
    assert res.exit_code == 1 and out["ok"] is False and [d["code"] for d in out["diagnostics"]] == [code]


def test_command_bad_npz_contents(tmp_path):
    np.savez(tmp_path / "one.npz", a=np.eye(3))
    np.savez(tmp_path / "short.npz", a=np.eye(3)[:2], b=np.eye(3))
    np.savez(tmp_path / "nan.npz", a=np.full((4, 3), np.nan), b=np.eye(3))
    np.save(tmp_path / "x.npy", np.eye(3))
    for name, code in [("one.npz", "E542"), ("short.npz", "E543"), ("nan.npz", "E543"), ("x.npy", "E542")]:
        res = _run("linking", RELU, "--curves", str(tmp_path / name))
        assert res.exit_code == 1 and f"error[{code}]" in res.stderr, (name, res.stderr)
    res = _run("linking", str(MODELS / "circle.sheaf"), "--link", "hopf")
    assert res.exit_code == 1 and "circle.sheaf:" in res.stderr and "error[E548]" in res.stderr


@pytest.mark.parametrize("args", [[], ["--link", "hopf", "--curves", "c.npz"], ["--link", "hopf", "--k", "0"]])
def test_command_usage_errors_exit_2(args):
    assert _run("linking", RELU, *args).exit_code == 2


# ----------------------------------------------------------------------------------------------
# the data


def test_hopf_and_torus_tasks():
    from sheafdsl.training.data import load_dataset

    d = load_dataset("hopf", n=200, n_test=50, seed=1)
    assert d.task == "binary" and d.X_train.shape == (200, 3) and d.Y_train.shape == (200, 1)
    y = np.concatenate([d.Y_train, d.Y_test])[:, 0]
    X = np.concatenate([d.X_train, d.X_test])
    assert y.sum() == 125
    a, b = link_curves("hopf", 400)
    # every point is near its own ring (noise 0.1): nearer to it than to the other ring
    da = np.linalg.norm(X[:, None] - a[None], axis=-1).min(1)
    db = np.linalg.norm(X[:, None] - b[None], axis=-1).min(1)
    assert np.all((da < db) == (y == 0)) and np.median(np.where(y == 0, da, db)) < 0.2
    assert point_cloud_linking(X[y == 0], X[y == 1]).linking == 1
    t = load_dataset("torus:2", n=50, n_test=10, noise=0.0)
    assert t.task == "binary" and t.X_train.shape == (50, 3)
    with pytest.raises(SheafError) as e:
        load_dataset("torus:q")
    assert e.value.codes == ["E545"]


def test_hopf_models_train_on_their_task(tmp_path):
    from sheafdsl.training.data import default_data

    for name in ("hopf_relu", "hopf_gelu", "hopf_skip"):
        sh = sd.load(MODELS / f"{name}.sheaf")
        assert sh.model.train["data"] == "hopf" and default_data(sh.graph) == "hopf"
        fit = sd.train(sh, steps=3, n=60, n_test=20)
        assert 0 <= fit.metrics["test_accuracy"] <= 1
    res = _run("train", RELU, "--steps", "2", "--n", "40", "--data", "torus:1", "--out", str(tmp_path / "run"), "--json")
    assert res.exit_code == 0, res.stdout


def test_plot_into_a_missing_folder_is_e542(tmp_path):
    res = _run("linking", RELU, "--link", "hopf", "--points", "16", "--plot", str(tmp_path / "no" / "p.png"))
    assert res.exit_code == 1 and "error[E542]" in res.stderr and not (tmp_path / "no").exists()


def test_the_studys_numpy_backprop_of_the_skip_net_is_its_gradient():
    """benchmarks/bench_linking.py trains the skip net's backprop baseline by hand: its forward pass is
    the sheaf's harmonic extension and its gradient matches central finite differences."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_linking.py"
    if not path.exists():
        pytest.skip("benchmarks/ not in this checkout")
    spec = importlib.util.spec_from_file_location("bench_linking", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    sh = sd.load(MODELS / "hopf_skip.sheaf")
    P = sh.init_params(seed=2)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.integers(0, 2, (7, 1)).astype(float)
    z4 = sh.infer({"x": x}, params=P).stalks["z4"]
    loss, g = bench.skip_grads(P, x, y)
    assert abs(loss - np.mean(np.logaddexp(0, z4) - y * z4)) < 1e-12
    for k, v in P.items():
        for i in np.ndindex(v.shape):
            Q = {n: a.copy() for n, a in P.items()}
            Q[k][i] += 1e-6
            up = bench.skip_grads(Q, x, y)[0]
            Q[k][i] -= 2e-6
            down = bench.skip_grads(Q, x, y)[0]
            assert abs((up - down) / 2e-6 - g[k][i]) < 1e-6, (k, i)


@pytest.mark.parametrize("name", ["hopf_relu", "hopf_gelu", "hopf_skip"])
def test_hopf_models_are_canonical_without_warnings(name):
    from sheafdsl.frontend import check_diagnostics, parse_file
    from sheafdsl.frontend.formatter import format_module

    path = MODELS / f"{name}.sheaf"
    text = path.read_text(encoding="utf-8")
    assert format_module(parse_file(str(path))) == text and check_diagnostics(parse_file(str(path))) == []
    assert text.startswith("# ") and sd.load(path).stalks["x"] == 3
