"""Spectra of L_free: positive definite on network sheaves for every pattern, equal to numpy's dense
eigenvalues, singular sheaves reported (κ = inf, kernel named) without a traceback, and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from sheafdsl.analysis.spectrum import (VARIANTS, extreme_eigenvalues, free_labels, relu_edges, restricted_laplacian,
                                        sample_states, singular_tolerance, spectrum)
from sheafdsl.cli.main import cli
from sheafdsl.frontend import load_text
from sheafdsl.ir import free_indices, from_model
from sheafdsl.lowering import coboundary_matrix, edge_weight_vector, init_params

ROOT = Path(__file__).resolve().parents[1]
PARABOLOID = str(ROOT / "models" / "paraboloid.sheaf")

UNDER = "sheaf under\nstalk a : 2\nstalk b : 2\nstalk c : 1\nedge e : a -> b identity\npin a[0] = 1\n"


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def network(widths, output="identity"):
    text = "sheaf n\nnetwork n : " + " -> ".join(map(str, widths)) + f" relu output {output} weight 1\n"  # unit weights
    return from_model(load_text(text))


def dense_L_free(G, P, sources, state=None, gates=None):
    """δ_Ωᵀ W² δ_Ω from the dense coboundary's free columns (a path independent of L[free][:, free])."""
    D = coboundary_matrix(G, P, state=state, gates=gates).toarray()[:, free_indices(G, sources)]
    return D.T @ np.diag(edge_weight_vector(G) ** 2) @ D, D


# ----------------------------------------------------------------------------------------------
# network sheaves: L_free ≻ 0 for every activation pattern


@settings(max_examples=25, deadline=None)
@given(widths=st.lists(st.integers(1, 6), min_size=2, max_size=4), seed=st.integers(0, 2**16),
       output=st.sampled_from(["identity", "sigmoid"]))
def test_network_L_free_positive_definite(widths, seed, output):
    if output == "sigmoid":
        widths = widths[:-1] + [1]
    G = network(widths, output)
    P = init_params(G, seed)
    rng = np.random.default_rng(seed)
    for state, gates in sample_states(G, 3, rng):
        for variant, sources in VARIANTS.items():
            A, D = dense_L_free(G, P, sources, state, gates)
            ext = extreme_eigenvalues(restricted_laplacian(G, P, sources, state=state, gates=gates))
            w = np.linalg.eigvalsh(A)
            assert not ext.singular and ext.lambda_min > 0
            assert ext.lambda_min == pytest.approx(w[0], rel=1e-9, abs=1e-12)
            assert ext.lambda_max == pytest.approx(w[-1], rel=1e-9)
            assert ext.kappa == pytest.approx(w[-1] / w[0], rel=1e-8)
            if variant == "inference":
                # δ_Ω is square and unitriangular (docs/maths.md): det L_free = det(δ_Ω)² = 1 with unit weights
                assert D.shape[0] == D.shape[1]
                assert np.sum(np.log(w)) == pytest.approx(0.0, abs=1e-8)


def test_paraboloid_samples_report():
    G = from_model(load_text(Path(PARABOLOID).read_text()))
    P = init_params(G, 0)
    states = sample_states(G, 6, np.random.default_rng(1))
    assert [set(g) for _, g in states] == [{"act1"}] * 6 and relu_edges(G) == [("act1", 30)]
    r = spectrum(G, P, states)
    for v in VARIANTS:
        ex = [s[v] for s in r.samples]
        w = r.worst[v]
        assert w["lambda_min"] == min(e.lambda_min for e in ex) > 0
        assert w["lambda_max"] == max(e.lambda_max for e in ex)
        assert w["kappa"] == max(e.kappa for e in ex) == ex[w["worst_sample"]].kappa
        assert not w["singular"] and w["free_dim"] == {"training": 61, "inference": 62}[v]
    # a free target can only loosen the system: λ_min(inference) ≤ λ_min(training) per sample (interlacing)
    assert all(s["inference"].lambda_min <= s["training"].lambda_min + 1e-12 for s in r.samples)


def test_sparse_path_matches_dense():
    G = from_model(load_text(Path(PARABOLOID).read_text()))
    P = init_params(G, 2)
    states = sample_states(G, 3, np.random.default_rng(0))
    dense = spectrum(G, P, states)
    sparse = spectrum(G, P, states, dense_cutoff=0)
    for a, b in zip(dense.samples, sparse.samples):
        for v in VARIANTS:
            assert b[v].method == "sparse eigsh" and a[v].method == "dense eigvalsh"
            assert b[v].lambda_min == pytest.approx(a[v].lambda_min, rel=1e-8)
            assert b[v].lambda_max == pytest.approx(a[v].lambda_max, rel=1e-8)


# ----------------------------------------------------------------------------------------------
# singular and degenerate cases


def test_under_constrained_is_singular_and_named():
    G = from_model(load_text(UNDER))
    sources = VARIANTS["training"]
    L = restricted_laplacian(G, {}, sources)
    ext = extreme_eigenvalues(L, labels=free_labels(G, sources))
    assert ext.singular and math.isinf(ext.kappa) and abs(ext.lambda_min) <= ext.tol
    # ker δ_Ω: a[1] = b[1] (one direction) and c (untouched): nullity 2 = n − rank δ_Ω
    _, D = dense_L_free(G, {}, sources)
    assert ext.nullity == 2 == D.shape[1] - np.linalg.matrix_rank(D)
    assert ext.kernel == {"a": [1], "b": [1], "c": [0]}
    assert ext.to_json()["kappa"] is None and json.dumps(ext.to_json())  # strict JSON (no Infinity)


def test_sparse_singular_path():
    text = "sheaf path\n" + "".join(f"stalk s{i} : 3\n" for i in range(8)) + "".join(
        f"edge e{i} : s{i} -> s{i + 1} identity\n" for i in range(7))
    G = from_model(load_text(text))
    L = restricted_laplacian(G, {}, VARIANTS["training"])
    ext = extreme_eigenvalues(L, dense_cutoff=0, labels=free_labels(G, VARIANTS["training"]))
    assert ext.method == "sparse eigsh" and ext.singular and ext.nullity is None
    assert set(ext.kernel) == {f"s{i}" for i in range(8)}  # constants: every stalk moves
    dense = extreme_eigenvalues(L)
    assert dense.singular and dense.nullity == 3
    assert ext.lambda_max == pytest.approx(dense.lambda_max, rel=1e-9)


def test_soft_pin_makes_it_definite():
    base = "sheaf s\nstalk a : 1\nstalk b : 1\nedge e : a -> b identity\n"
    G = from_model(load_text(base))
    assert extreme_eigenvalues(restricted_laplacian(G, {}, VARIANTS["training"])).singular
    G = from_model(load_text(base + "pin a ~ 0 weight 2\n"))
    ext = extreme_eigenvalues(restricted_laplacian(G, {}, VARIANTS["training"]))
    # L_free = [[1 + 4, −1], [−1, 1]]
    w = np.linalg.eigvalsh([[5.0, -1.0], [-1.0, 1.0]])
    assert not ext.singular and ext.lambda_min == pytest.approx(w[0]) and ext.lambda_max == pytest.approx(w[1])


def test_tolerance_rule():
    assert singular_tolerance(10, 2.0) == 10 * np.finfo(float).eps * 2.0
    ext = extreme_eigenvalues(np.diag([1e-20, 1.0]))
    assert ext.singular and ext.kernel == {"c": [0]}
    ext = extreme_eigenvalues(np.diag([1e-10, 1.0]))  # ill-conditioned, not singular
    assert not ext.singular and ext.kappa == pytest.approx(1e10)
    assert extreme_eigenvalues(np.diag([1e-10, 1.0]), tol=1e-9).singular
    assert extreme_eigenvalues(np.zeros((0, 0))).lambda_min is None
    zero = extreme_eigenvalues(np.zeros((3, 3)))
    assert zero.singular and zero.nullity == 3


# ----------------------------------------------------------------------------------------------
# the command


def test_cli_samples_json():
    r = run("spectrum", PARABOLOID, "--samples", "5", "--seed", "3", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert {"lambda_min", "lambda_max", "kappa", "samples"} <= set(out)
    assert out["n_samples"] == len(out["samples"]) == 5 and out["mode"] == "samples"
    assert out["lambda_min"] > 0 and not out["singular"] and out["free_dim"] == 61
    for s in out["samples"]:
        for v in ("training", "inference"):
            assert s[v]["kappa"] == pytest.approx(s[v]["lambda_max"] / s[v]["lambda_min"])
    assert out["kappa"] == max(s["training"]["kappa"] for s in out["samples"])
    assert out["variants"]["inference"]["free_dim"] == 62
    # reproducible
    assert json.loads(run("spectrum", PARABOLOID, "--samples", "5", "--seed", "3", "--json").output) == out


def test_cli_params_file_equals_seed(tmp_path):
    G = from_model(load_text(Path(PARABOLOID).read_text()))
    np.savez(tmp_path / "p.npz", **init_params(G, 7))
    a = json.loads(run("spectrum", PARABOLOID, "--samples", "2", "--seed", "7", "--json").output)
    b = json.loads(run("spectrum", PARABOLOID, "--samples", "2", "--seed", "7", "--params",
                       str(tmp_path / "p.npz"), "--json").output)
    assert a["samples"] == b["samples"]


def test_cli_at_inputs_uses_the_forward_pass_gates():
    x = np.array([[0.5, 1.0], [1.0, -1.0], [-1.5, 0.25]])
    r = run("spectrum", PARABOLOID, "--input", json.dumps(x.tolist()), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["mode"] == "inputs" and out["n_samples"] == 3
    G = from_model(load_text(Path(PARABOLOID).read_text()))
    P = init_params(G, 0)
    for i, s in enumerate(out["samples"]):
        gate = (P["W1"] @ x[i] + P["b1"] >= 0).astype(float)
        for v, sources in VARIANTS.items():
            A, _ = dense_L_free(G, P, sources, gates={"act1": gate})
            w = np.linalg.eigvalsh(A)
            assert s[v]["lambda_min"] == pytest.approx(w[0], rel=1e-9)
            assert s[v]["lambda_max"] == pytest.approx(w[-1], rel=1e-9)


def test_cli_singular_is_reported_not_raised(tmp_path):
    f = tmp_path / "under.sheaf"
    f.write_text(UNDER)
    r = run("spectrum", str(f))
    assert r.exit_code == 0, r.output
    assert "singular" in r.output and "inf" in r.output and "ker δ_Ω ≠ 0" in r.output
    assert "a[1]" in r.output and "c[0]" in r.output and "Traceback" not in r.output
    out = json.loads(run("spectrum", str(f), "--json").output.splitlines()[-1])
    assert out["singular"] is True and out["kappa"] is None and out["mode"] == "fixed" and out["n_samples"] == 1
    assert out["variants"]["training"]["kernel"] == {"a": [1], "b": [1], "c": [0]}
    assert out["variants"]["training"]["nullity"] == 2


def test_cli_nothing_free(tmp_path):
    f = tmp_path / "pinned.sheaf"
    f.write_text("sheaf p\nstalk a : 1\nstalk b : 1\nedge e : a -> b identity\npin a = input\npin b = target\n")
    out = json.loads(run("spectrum", str(f), "--json").output)
    assert out["free_dim"] == 0 and out["lambda_min"] is None and out["singular"] is False
    assert out["variants"]["inference"]["lambda_min"] == pytest.approx(1.0)
    r = run("spectrum", str(f))
    assert r.exit_code == 0 and "-" in r.output


@pytest.mark.parametrize("args, code, text", [
    (["--input", "[1, 2]", "--samples", "3"], 2, "not both"),
    (["--samples", "0"], 2, "--samples"),
    (["--dense-cutoff", "-1"], 2, "--dense-cutoff"),
    (["--input", "[1, 2"], 1, "E520"),
    (["--input", "[1, 2, 3]"], 1, "E521"),
    (["--params", "/nonexistent/p.npz"], 1, "E524"),
])
def test_cli_exit_codes(args, code, text):
    r = run("spectrum", PARABOLOID, *args)
    assert r.exit_code == code, r.output
    assert text in r.output and "Traceback" not in r.output


def test_cli_input_without_input_stalks(tmp_path):
    f = tmp_path / "under.sheaf"
    f.write_text(UNDER)
    r = run("spectrum", str(f), "--input", "[1]")
    assert r.exit_code == 1 and "E531" in r.output


def test_cli_missing_file():
    r = run("spectrum", "/nonexistent/model.sheaf")
    assert r.exit_code == 1 and "Traceback" not in r.output


def test_eigsh_failure_is_a_clear_error(monkeypatch):
    import scipy.sparse.linalg as spla

    from sheafdsl.analysis import spectrum as S
    from sheafdsl.errors import SheafError

    def fail(*a, **k):
        raise spla.ArpackNoConvergence("no convergence", np.zeros(0), np.zeros((0, 0)))

    monkeypatch.setattr(S.spla, "eigsh", fail)
    G = from_model(load_text(Path(PARABOLOID).read_text()))
    with pytest.raises(SheafError) as e:
        extreme_eigenvalues(restricted_laplacian(G, init_params(G, 0), VARIANTS["training"]), dense_cutoff=0)
    assert e.value.diagnostics[0].code == "E532" and "--dense-cutoff" in e.value.diagnostics[0].hint
    r = run("spectrum", PARABOLOID, "--samples", "1", "--dense-cutoff", "0")
    assert r.exit_code == 1 and "E532" in r.output


def test_cli_with_targets_uses_the_two_sided_equilibrium():
    from sheafdsl.solvers import solve

    x = np.array([[0.5, 1.0], [1.0, -1.0], [-1.5, 0.25]])
    y = np.array([[0.3], [5.0], [-4.0]])
    r = run("spectrum", PARABOLOID, "--input", json.dumps(x.tolist()), "--target", json.dumps(y.tolist()), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["mode"] == "inputs+targets"
    G = from_model(load_text(Path(PARABOLOID).read_text()))
    P = init_params(G, 0)
    res = solve(G, P, {"x": x, "y": y}, method="exact", sources=VARIANTS["training"])
    for i, s in enumerate(out["samples"]):
        gates = {"act1": np.asarray(res.gates["act1"])[i]}
        w = np.linalg.eigvalsh(dense_L_free(G, P, VARIANTS["training"], gates=gates)[0])
        assert s["training"]["lambda_min"] == pytest.approx(w[0], rel=1e-9)
        assert s["training"]["lambda_max"] == pytest.approx(w[-1], rel=1e-9)
    # one target row broadcasts over the batch
    r1 = run("spectrum", PARABOLOID, "--input", json.dumps(x.tolist()), "--target", "[0.3]", "--json")
    assert r1.exit_code == 0 and json.loads(r1.output)["n_samples"] == 3


@pytest.mark.parametrize("args, code, text", [
    (["--target", "[1]"], 2, "--target needs --input"),
    (["--input", "[1, 2]", "--target", "[1, 2]"], 1, "E533"),
    (["--input", "[1, 2]", "--target", "[1"], 1, "E533"),
    (["--input", "[1, 2]", "--target", "[NaN]"], 1, "E533"),
])
def test_cli_target_errors(args, code, text):
    r = run("spectrum", PARABOLOID, *args)
    assert r.exit_code == code, r.output
    assert text in r.output and "Traceback" not in r.output


# ----------------------------------------------------------------------------------------------
# --vectors: the extreme eigenvectors and their energy per block (the paper's Fig 4)


@settings(max_examples=15, deadline=None)
@given(widths=st.lists(st.integers(1, 5), min_size=3, max_size=4), seed=st.integers(0, 2**16))
def test_extreme_vectors_are_eigenpairs_of_the_dense_L_free(widths, seed):
    from sheafdsl.analysis.spectrum import extreme_vectors

    G = network(widths)
    P = init_params(G, seed)
    state, gates = sample_states(G, 1, np.random.default_rng(seed))[0]
    A, _ = dense_L_free(G, P, VARIANTS["training"], state, gates)
    w = np.linalg.eigvalsh(A)
    ev = extreme_vectors(G, P, state, gates)
    assert ev.lambda_min == pytest.approx(w[0], rel=1e-9, abs=1e-12)
    assert ev.lambda_max == pytest.approx(w[-1], rel=1e-9)
    for lam, v in ((ev.lambda_min, ev.v_min), (ev.lambda_max, ev.v_max)):
        assert np.linalg.norm(v) == pytest.approx(1.0)
        assert np.linalg.norm(A @ v - lam * v) <= 1e-9 * max(1.0, w[-1])
        assert v[np.argmax(np.abs(v))] > 0
    # the blocks are the free stalks, in order, and each vector's energy is split among them exactly
    free = list(dict.fromkeys(s for s, _ in free_labels(G, VARIANTS["training"])))
    assert list(ev.blocks) == free and "x" not in ev.blocks and "y" not in ev.blocks
    for k in (0, 1):
        assert sum(f[k] for f in ev.blocks.values()) == pytest.approx(1.0)
        assert sum(f[k] for f in ev.layers.values()) == pytest.approx(1.0)
    owner = np.array([s for s, _ in ev.labels])
    for stalk, (fmin, fmax) in ev.blocks.items():
        assert fmin == pytest.approx(float(np.sum(ev.v_min[owner == stalk] ** 2)))
    L = len(widths) - 1  # layer ℓ holds zℓ and aℓ
    assert sorted(ev.layers) == list(range(1, L + 1))
    assert ev.layers[L][0] == pytest.approx(ev.blocks[f"z{L}"][0])


def test_extreme_vectors_sparse_path_matches_dense():
    from sheafdsl.analysis.spectrum import extreme_vectors

    G = network([2, 7, 5, 1])
    P = init_params(G, 3)
    gates = {"act1": np.ones(7), "act2": np.ones(5)}  # all on: simple extreme eigenvalues
    dense = extreme_vectors(G, P, gates=gates)
    sparse = extreme_vectors(G, P, gates=gates, dense_cutoff=0)
    assert sparse.method == "sparse eigsh" and dense.method == "dense eigh"
    assert sparse.lambda_min == pytest.approx(dense.lambda_min, rel=1e-8)
    assert sparse.lambda_max == pytest.approx(dense.lambda_max, rel=1e-8)
    assert np.allclose(sparse.v_min, dense.v_min, atol=1e-6) and np.allclose(sparse.v_max, dense.v_max, atol=1e-6)


def test_cli_vectors_json_states_the_convention():
    res = CliRunner().invoke(cli, ["spectrum", str(ROOT / "models" / "paraboloid_paper.sheaf"), "--input", "[[0.5, -0.3], [1, 1]]",
                                   "--vectors", "--json"])
    assert res.exit_code == 0, res.output
    v = json.loads(res.stdout)["vectors"]
    assert v["variant"] == "training" and "input and target" in v["convention"]
    assert v["free_stalks"] == ["z1", "a1", "z2"] and len(v["samples"]) == 2
    s = v["samples"][0]
    assert set(s["v_min"]) == {"z1", "a1", "z2"} and len(s["v_min"]["z1"]) == 30
    assert sum(b["min"] for b in s["blocks"].values()) == pytest.approx(1.0)
    assert v["mean"]["layers"]["1"]["max"] == pytest.approx(
        np.mean([x["layers"]["1"]["max"] for x in v["samples"]]))
    text = CliRunner().invoke(cli, ["spectrum", str(ROOT / "models" / "paraboloid_paper.sheaf"), "--samples", "3", "--vectors"])
    assert text.exit_code == 0 and "Fiedler" in text.stdout and "layer 1" in text.stdout
    plain = json.loads(CliRunner().invoke(cli, ["spectrum", str(ROOT / "models" / "paraboloid_paper.sheaf"), "--samples", "3",
                                                "--json"]).stdout)
    assert "vectors" not in plain
