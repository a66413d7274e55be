"""Learned consensus models (docs/admm.md "Learning"): the language, the IR per grid size, and the three trainers'
gradients against central finite differences and an independent assembly of the KKT system."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from sheafdsl.errors import SheafError
from sheafdsl.frontend.checker import check_diagnostics, load_text
from sheafdsl.frontend.formatter import format_module
from sheafdsl.frontend.parser import parse_text
from sheafdsl.ir import from_model, instantiate
from sheafdsl.lowering.learned import LearnedStructure, coefficients, decode_loss
from sheafdsl.solvers import learned as SL
from sheafdsl.training.learned import EXAMPLE, LearnedTrainer, Split, observations

# two agents on blocks: a hard edge between cell blocks with a shared parameter map, a soft edge, a loop edge with a
# constant map on blocks, a literal quadratic beside an encoded term, a softmax decoder of the mean of two blocks
BLOCKS = """sheaf blocks
param P  : 2 x 4   init xavier
param Wd : 3 x 4   init xavier
param bd : 3       init zeros
param Qa : 8 x 8   = 0.5
encoder enc : 5 -> 6 tanh -> 16
stalk r0 : 8
stalk r1 : 8
stalk o0 : 5
stalk o1 : 5
pin o0 = input
pin o1 = input
objective r0 encoded enc o0
objective r1 encoded enc o1
objective r1 quadratic Qa
edge e1 : r0[0:4] -> r1[4:8]  maps P | P hard
edge e2 : r0[4:8] -> r1[0:4]  maps P | P weight 2
edge e3 : r0[0:4] -> r0[4:8]  maps P | [[1, 0, 0, 0], [0, 1, 0, 0]] hard
stalk y : 3
pin y = target
decode y : mean r0[0:4] r1[4:8] affine Wd bd softmax
"""

GRID = """sheaf gridm
param P  : 3 x 4   init xavier
param Wd : 5 x 4   init xavier
param bd : 5       init zeros
encoder enc : 6 -> 8 relu -> 8
grid g : 4 observe 6 encoded enc
edge gh : g -> g right  maps P | P weight 1
edge gv : g -> g down  maps P | P hard
stalk y : 5
pin y = target
decode y : mean g affine Wd bd softmax
"""

# a canvas-style grid: a bias-free encoder (a blank patch encodes to q = 0) and a decoder of the agents' sum
POOLED = """sheaf pooled
param P  : 3 x 4   init xavier
param Wd : 5 x 4   init xavier
param bd : 5       init zeros
encoder enc : 6 -> 8 tanh -> 8 nobias
grid g : 4 observe 6 encoded enc
edge gh : g -> g right  maps P | P weight 1
edge gv : g -> g down  maps P | P weight 1
stalk y : 5
pin y = target
decode y : sum g affine Wd bd softmax
"""

# hard edges only (H⁻¹ per agent block, the Schur complement formed agent by agent), around a cycle: the third
# edge repeats what the first two say, so S = AH⁻¹Aᵀ is singular (regularised, refined), as in a Sudoku
CYCLE = """sheaf cycle
param P  : 2 x 3   init xavier
param Wd : 3 x 3   init xavier
param bd : 3       init zeros
encoder enc : 4 -> 5 tanh -> 12
stalk a : 6
stalk b : 6
stalk c : 6
stalk oa : 4
stalk ob : 4
stalk oc : 4
pin oa = input
pin ob = input
pin oc = input
objective a encoded enc oa
objective b encoded enc ob
objective c encoded enc oc
edge ab : a[0:3] -> b[0:3]  maps P | P hard
edge bc : b[0:3] -> c[0:3]  maps P | P hard
edge ac : a[0:3] -> c[0:3]  maps P | P hard
edge ab2 : a[3:6] -> b[3:6]  maps [[1, 0, 0]] | [[0, 1, 0]] hard
stalk y : 3
pin y = target
decode y : sum a[3:6] b[3:6] c[0:3] affine Wd bd softmax
"""


def _split(G, B, rng, grid=None):
    spec = G.graph["learned"]
    inputs = {}
    for _, _, obs in spec.objectives:
        if not any(obs.startswith(g + "[") for g in spec.grids):
            inputs[obs] = rng.normal(size=(B, G.nodes[obs]["dim"]))
    for g, decl in spec.grids.items():
        R, C = grid or (2, 3)
        inputs[g] = rng.normal(size=(B, R, C, decl.obs_dim))
    targets = {}
    for d in spec.decoders:
        k = G.nodes[d.target]["dim"]
        targets[d.target] = np.eye(k)[rng.integers(0, k, B)] if d.kind == "softmax" else rng.normal(size=(B, k))
    return Split(inputs, targets)


def _fd(tr, loss, h=1e-6, entries=None):
    """Central differences of ``loss`` in every parameter entry (or in ``entries`` random ones per parameter; the
    others are NaN and not compared)."""
    out = {}
    rng = np.random.default_rng(0)
    for k, p in tr.params.items():
        g = np.full(p.size, np.nan)
        flat = p.reshape(-1)
        pick = range(flat.size) if entries is None or flat.size <= entries else rng.choice(flat.size, entries, False)
        for i in pick:
            old = flat[i]
            flat[i] = old + h
            lp = loss()
            flat[i] = old - h
            lm = loss()
            flat[i] = old
            g[i] = (lp - lm) / (2 * h)
        out[k] = g.reshape(p.shape)
    return out


def _trainer(src, trainer, seed=3, **kw):
    G = from_model(load_text(src))
    tr = LearnedTrainer(G, trainer=trainer, seed=seed, **kw)
    rng = np.random.default_rng(seed + 10)
    for k in tr.params:  # away from zero biases, so that every path of the gradient is exercised
        tr.params[k] = tr.params[k] + 0.3 * rng.normal(size=tr.params[k].shape)
    return G, tr


# ----------------------------------------------------------------------------------------------
# the language


def test_new_statements_round_trip_through_the_formatter():
    for src in (BLOCKS, GRID, EXAMPLE, POOLED):
        m = parse_text(src)
        text = format_module(m)
        assert parse_text(text).statements == m.statements
        assert format_module(parse_text(text)) == text


def test_encoder_declares_shared_parameters_and_the_checker_knows_the_shapes():
    m = load_text(BLOCKS)
    assert m.is_learned and set(m.encoders) == {"enc"}
    assert m.params["enc_W1"].shape == (6, 5) and m.params["enc_W2"].shape == (16, 6) and m.params["enc_b2"].shape == (16,)
    assert [o.encoder for o in m.objectives if o.kind == "encoded"] == ["enc", "enc"]
    e1 = m.edges["e1"]
    assert (e1.src_block, e1.dst_block, e1.dim) == ((0, 4), (4, 8), 2)


@pytest.mark.parametrize("change, code, where", [
    ("encoder enc : 5 -> 6 tanh -> 16", "encoder enc : 4 -> 6 tanh -> 16", ("E284", 13)),
    ("encoder enc : 5 -> 6 tanh -> 16", "encoder enc : 5 -> 6 tanh -> 12", ("E284", 13)),
    ("encoder enc : 5 -> 6 tanh -> 16", "encoder enc : 5 -> 6 tahn -> 16", ("E284", 6)),
    ("encoder enc : 5 -> 6 tanh -> 16", "encoder enc : 5 -> 6 tanh -> 16 relu", ("E284", 6)),
    ("pin o0 = input", "pin o0 = [0, 0, 0, 0, 0]", ("E285", 13)),
    ("edge e1 : r0[0:4] -> r1[4:8]", "edge e1 : r0[0:4] -> r1[6:10]", ("E286", 16)),
    ("edge e1 : r0[0:4] -> r1[4:8]", "edge e1 : r0[3:3] -> r1[4:8]", ("E286", 16)),
    ("edge e2 : r0[4:8] -> r1[0:4]  maps P | P weight 2", "edge e2 : r0[4:7] -> r1[0:4]  maps P | P weight 2",
     ("E225", 17)),
    ("pin y = target", "pin y = input", ("E287", 21)),
    ("decode y : mean r0[0:4] r1[4:8]", "decode y : r0[0:4] r1[4:8]", ("E287", 21)),
    ("decode y : mean r0[0:4] r1[4:8]", "decode y : mean r0[0:4] r1", ("E287", 21)),
    ("affine Wd bd softmax", "affine bd Wd softmax", ("E287", 21)),
    ("objective r1 quadratic Qa", "objective r1 l1 0.5", ("E289", 15)),
    ("objective r1 quadratic Qa", "objective r1 simplex", ("E289", 15)),
])
def test_checker_errors_point_at_the_statement(change, code, where):
    src = BLOCKS.replace(change, code)
    assert src != BLOCKS
    diags = [d for d in check_diagnostics(parse_text(src)) if d.severity == "error"]
    assert diags, src
    assert (diags[0].code, diags[0].span.line) == where, diags[0]


def test_a_nobias_encoder_declares_no_biases_and_a_sum_decoder_pools_by_sum():
    m = load_text(POOLED)
    assert m.encoders["enc"].layers == (("enc_W1", None), ("enc_W2", None))
    assert not any(k.startswith("enc_b") for k in m.params)
    assert m.decoders[0].pool == "sum" and load_text(GRID).decoders[0].pool == "mean"
    for act, ok in (("relu", True), ("identity", True), ("sigmoid", False), ("softplus", False)):
        diags = check_diagnostics(parse_text(POOLED.replace("8 tanh -> 8 nobias", f"8 {act} -> 8 nobias")))
        errs = [(d.code, d.span.line, d.span.col) for d in diags if d.severity == "error"]
        assert errs == ([] if ok else [("E730", 5, 22)]), (act, errs)
    assert check_diagnostics(parse_text(POOLED.replace("8 tanh -> 8 nobias", "8 sigmoid -> 8"))) == []


def test_a_blank_patch_encodes_to_zero_and_pads_nothing_into_a_sum_readout():
    """With a `nobias` encoder a zero observation gives q = 0 for any parameters, so an agent that sees nothing and
    has no edges sits at x = 0; a sum decoder's logits are then the same on a larger grid padded with blank patches
    (without the edges: the exact statement of size invariance; the mean would shrink the logits instead)."""
    bag = POOLED.replace("edge gh : g -> g right  maps P | P weight 1\nedge gv : g -> g down  maps P | P weight 1\n", "")
    G, tr = _trainer(bag, "implicit", seed=5)
    rng = np.random.default_rng(4)
    small = _split(G, 3, rng, (2, 3))
    big = np.zeros((3, 4, 5, 6))
    big[:, 1:3, 2:5] = small.inputs["g"]
    x, S, (C, _, _) = tr.equilibrium(Split({"g": big}, small.targets))
    blank = [S.offset[f"g[{i},{j}]"] for i in range(4) for j in range(5) if not (1 <= i < 3 and 2 <= j < 5)]
    idx = np.concatenate([np.arange(o, o + 4) for o in blank])
    assert np.abs(C.q[idx]).max() == 0.0 and np.abs(x[idx]).max() < 1e-12
    assert np.allclose(tr.predict({"g": big})["y"], tr.predict(small)["y"], atol=1e-12)
    G2, tr2 = _trainer(bag.replace("sum g", "mean g"), "implicit", seed=5)
    assert not np.allclose(tr2.predict({"g": big})["y"], tr2.predict(small)["y"], atol=1e-3)


def test_the_schur_complement_agent_by_agent_is_the_dense_product():
    """KKT's per-agent Schur complement (each agent's term on the hard rows that touch it) against A H⁻¹ Aᵀ formed
    densely, on the cycle model (a row touched by two agents) and the Sudoku task's model."""
    from sheafdsl.training.tasks import sudoku

    for src in (CYCLE, sudoku.model_text(4)):
        G, tr = _trainer(src, "implicit")
        split = _split(G, 3, np.random.default_rng(7))
        S = tr.structure(split.inputs)
        C = coefficients(S, tr.params, observations(S.G, split.inputs, np), np, B=3)
        K = SL.KKT(S, C, np)
        Hinv = np.zeros((3, S.n, S.n))
        for g, Hb in zip(S.groups, K.Hinv):
            for k in range(g.V):
                Hinv[:, g.cols[k][:, None], g.cols[k][None, :]] = Hb[:, k]
        dense = np.einsum("mi,bij,kj->bmk", K.A, Hinv, K.A)
        assert K.blocks and K.m > 0
        assert np.allclose(K._schur_blocks(), dense, rtol=1e-12, atol=1e-12 * np.abs(dense).max())


def test_grid_misuse_and_unused_encoder():
    bad = GRID.replace("edge gh : g -> g right", "edge gh : g -> g")
    assert check_diagnostics(parse_text(bad))[0].code == "E288"
    bad = GRID + "stalk z : 4\nedge zz : z -> z right maps 1 | 1\n"
    assert "E288" in {d.code for d in check_diagnostics(parse_text(bad))}
    warn = GRID + "encoder spare : 2 -> 2\n"
    assert [d.code for d in check_diagnostics(parse_text(warn))] == ["W311"]


def test_grid_instantiates_per_size_with_one_set_of_parameters():
    G = from_model(load_text(GRID))
    H = instantiate(G, {"g": (3, 4)})
    agents = [v for v in H if v.startswith("g[") and not v.endswith(".obs")]
    assert len(agents) == 12
    assert len([k for _, _, k in H.edges(keys=True) if k.startswith("gh[")]) == 3 * 3
    assert len([k for _, _, k in H.edges(keys=True) if k.startswith("gv[")]) == 2 * 4
    assert H.graph["parameter_sheaf"] is G.graph["parameter_sheaf"]
    assert instantiate(G, {"g": (3, 4)}) is H  # cached
    tr = LearnedTrainer(G, trainer="implicit", seed=0)
    rng = np.random.default_rng(0)
    for R, C in ((2, 2), (3, 5)):  # one model file, any grid size
        pred = tr.predict(_split(G, 4, rng, (R, C)))["y"]
        assert pred.shape == (4, 5) and np.allclose(pred.sum(1), 1)


def test_a_learned_model_is_not_a_plain_consensus_problem():
    G = from_model(load_text(BLOCKS))
    from sheafdsl.lowering.consensus import lower_consensus

    with pytest.raises(SheafError) as e:
        lower_consensus(G, {}, np.zeros((1, sum(G.nodes[v]["dim"] for v in G))))
    assert e.value.diagnostics[0].code == "E550"


def test_verify_proves_strict_convexity_for_all_parameter_values():
    import sheafdsl as sd

    r = sd.loads(GRID).verify()
    assert {c.name: c.status for c in r.claims} == {"objectives_convex": "proved", "constraints_feasible": "proved",
                                                    "strictly_convex": "proved", "minimiser_unique": "proved"}
    assert "softplus" in r.claim("strictly_convex").method


# ----------------------------------------------------------------------------------------------
# the equilibrium against an independent KKT assembly, and ADMM's limit


def _dense_kkt(G, tr, split):
    """x* from the dense KKT system assembled from the IR by hand (numpy lstsq): Q from the encoder, the maps
    written into δ block by block."""
    S = LearnedStructure(G)
    C = coefficients(S, tr.params, observations(G, split.inputs, np), np, B=len(split))
    n, B = S.n, len(split)
    from sheafdsl.ir import edges
    D, hard, w2 = [], [], []
    for u, v, name, d in edges(G):
        rows = np.zeros((d["dim"], n))
        for st, m, blk, sg in ((u, d["src_map"], d.get("src_block"), -1), (v, d["dst_map"], d.get("dst_block"), 1)):
            a, b = blk or (0, S.dim[st])
            mat = tr.params[m.param] if hasattr(m, "param") else (np.asarray(m.matrix) if hasattr(m, "matrix") else
                                                                   np.eye(b - a) * getattr(m, "scale", 1.0))
            rows[:, S.offset[st] + a:S.offset[st] + b] += sg * mat
        D.append(rows)
        hard += [bool(d.get("hard"))] * d["dim"]
        w2 += [d["weight"] ** 2] * d["dim"]
    D, hard, w2 = np.vstack(D), np.array(hard), np.array(w2)
    xs = []
    for b in range(B):
        H = np.zeros((n, n))
        for g, Qg in zip(S.groups, C.Q):
            for k in range(g.V):
                H[np.ix_(g.cols[k], g.cols[k])] = Qg[b, k]
        H += (D[~hard].T * w2[~hard]) @ D[~hard]
        A = D[hard]
        K = np.block([[H, A.T], [A, np.zeros((len(A), len(A)))]])
        sol = np.linalg.lstsq(K, np.concatenate([-C.q[:, b], np.zeros(len(A))]), rcond=None)[0]
        xs.append(sol[:n])
    return np.array(xs).T


@pytest.mark.parametrize("src", [BLOCKS, GRID, CYCLE])
def test_kkt_equilibrium_matches_an_independent_assembly_and_admm_converges_to_it(src):
    G, tr = _trainer(src, "implicit")
    split = _split(G, 3, np.random.default_rng(1))
    x_kkt = tr.equilibrium(split, method="kkt")[0]
    H = instantiate(G, {g: (2, 3) for g in G.graph["learned"].grids}) if G.graph["learned"].grids else G
    assert np.allclose(x_kkt, _dense_kkt(H, tr, split), atol=1e-9)
    x_admm = tr.equilibrium(split, method="admm", iterations=4000)[0]
    assert np.abs(x_admm - x_kkt).max() < 1e-7


# ----------------------------------------------------------------------------------------------
# every gradient against central finite differences


@pytest.mark.parametrize("src", [BLOCKS, GRID, EXAMPLE, POOLED, CYCLE])
def test_implicit_gradient_is_the_derivative_of_the_equilibrium_loss(src):
    G, tr = _trainer(src, "implicit")
    split = _split(G, 3, np.random.default_rng(2))
    _, grads = tr.loss_and_grads(split)
    fd = _fd(tr, lambda: tr.loss(split, method="kkt"))
    for k in tr.params:
        assert np.allclose(grads[k], fd[k], atol=1e-7, rtol=1e-5), k


@pytest.mark.parametrize("src", [BLOCKS, GRID, POOLED])
def test_unrolled_gradient_is_the_derivative_of_the_loss_after_k_iterations(src):
    G, tr = _trainer(src, "unrolled", iterations=7)
    split = _split(G, 3, np.random.default_rng(3))
    _, grads = tr.loss_and_grads(split)
    fd = _fd(tr, lambda: tr.loss(split, method="admm"))
    for k in tr.params:
        assert np.allclose(grads[k], fd[k], atol=1e-7, rtol=1e-5), k


def test_truncated_window_is_the_gradient_with_the_earlier_iterates_held_fixed():
    G, tr = _trainer(BLOCKS, "unrolled", iterations=9, window=4)
    split = _split(G, 2, np.random.default_rng(4))
    _, grads = tr.loss_and_grads(split)
    S = tr.structure(split.inputs)
    obs = observations(G, split.inputs, np)
    base = {k: v.copy() for k, v in tr.params.items()}
    C0 = coefficients(S, base, obs, np, B=2)
    head = SL.admm(S, C0, iterations=5, rho=tr.rho)  # the first K − W steps at the base parameters: constants

    def loss():
        C = coefficients(S, tr.params, obs, np, B=2)
        it = SL.admm(S, C, iterations=4, rho=tr.rho, y0=head.y, mu0=head.mu)
        return decode_loss(S, tr.params, it.x, split.targets, np, grad=False)[0]

    fd = _fd(tr, loss, entries=6)
    for k in tr.params:
        m = ~np.isnan(fd[k])
        assert np.allclose(grads[k][m], fd[k][m], atol=1e-7, rtol=1e-5), k
    full = _trainer(BLOCKS, "unrolled", iterations=9, window=0)[1].loss_and_grads(split)[1]
    assert any(not np.allclose(full[k], grads[k]) for k in grads)  # the window changes the gradient


def test_local_rule_is_the_exact_gradient_of_the_contrastive_function_and_tends_to_the_loss_gradient():
    G, tr = _trainer(BLOCKS, "local", nudge=0.5)
    split = _split(G, 3, np.random.default_rng(5))
    _, grads = tr.loss_and_grads(split)
    S = tr.structure(split.inputs)
    obs = observations(G, split.inputs, np)

    def energy(C, x):  # per-example energies summed, assembled from the coefficients
        F2, D = S.operators(C.F, np)
        val = 0.5 * np.sum(x * SL._apply_blocks(S, C.Q, x, np)) + np.sum(C.q * x)
        r = D @ x
        return val + 0.5 * np.sum(S.w2[~S.hard][:, None] * r[~S.hard] ** 2)

    def phi():
        C = coefficients(S, tr.params, obs, np, B=3)
        x1, _, _ = SL.kkt(S, C, np)
        x2, _, _ = SL.nudged(S, C, tr.params, split.targets, tr.nudge, np)
        l2 = decode_loss(S, tr.params, x2, split.targets, np, grad=False)[0]
        return (energy(C, x2) + tr.nudge * 3 * l2 - energy(C, x1)) / (tr.nudge * 3)

    fd = _fd(tr, phi, entries=4)
    for k in tr.params:
        m = ~np.isnan(fd[k])
        assert np.allclose(grads[k][m], fd[k][m], atol=1e-6, rtol=1e-4), k
    # as β → 0 the local rule tends to the implicit (true) gradient
    exact = LearnedTrainer(G, trainer="implicit", params=tr.params).loss_and_grads(split)[1]
    errs = []
    for beta in (0.1, 0.01, 0.001):
        g = LearnedTrainer(G, trainer="local", nudge=beta, params=tr.params).loss_and_grads(split)[1]
        errs.append(max(float(np.abs(g[k] - exact[k]).max()) for k in g))
    assert errs[2] < errs[1] < errs[0] and errs[2] < 1e-2 * max(1.0, errs[0] * 100)


def test_unrolled_gradient_tends_to_the_implicit_one_as_k_grows():
    G, tr = _trainer(GRID, "implicit")
    split = _split(G, 3, np.random.default_rng(6))
    exact = tr.loss_and_grads(split)[1]
    errs = []
    for K in (10, 100, 3000):
        g = LearnedTrainer(G, trainer="unrolled", iterations=K, params=tr.params).loss_and_grads(split)[1]
        errs.append(max(float(np.abs(g[k] - exact[k]).max()) for k in g))
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-6


# ----------------------------------------------------------------------------------------------
# the command


def test_sheaf_train_trains_a_learned_model_from_an_npz(tmp_path):
    from sheafdsl.cli.main import cli

    rng = np.random.default_rng(0)
    (tmp_path / "m.sheaf").write_text(GRID)
    X = rng.normal(size=(40, 2, 2, 6))
    Y = np.eye(5)[(X[:, 0, 0, 0] > 0).astype(int)]
    Xt = rng.normal(size=(10, 3, 3, 6))
    np.savez(tmp_path / "d.npz", **{"train/g": X, "train/y": Y, "big/g": Xt,
                                    "big/y": np.eye(5)[(Xt[:, 0, 0, 0] > 0).astype(int)]})
    res = CliRunner().invoke(cli, ["train", str(tmp_path / "m.sheaf"), "--data", str(tmp_path / "d.npz"), "--steps",
                                   "30", "--trainer", "implicit", "--lr", "0.05", "--json", "--out",
                                   str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert out["ok"] and out["trainer"] == "implicit" and out["steps"] == 30
    assert out["train_loss"] < np.log(5) and set(out["tests"]) == {"big"}
    assert len(out["residuals"]["primal"]) >= 200
    assert (tmp_path / "run" / "params.npz").exists() and (tmp_path / "run" / "summary.json").exists()
    bad = CliRunner().invoke(cli, ["train", str(tmp_path / "m.sheaf"), "--data", str(tmp_path / "d.npz"), "--trainer",
                                   "backprop", "--json"])
    assert bad.exit_code == 1 and json.loads(bad.output)["diagnostics"][0]["code"] == "E612"


def test_a_parameter_map_on_a_block_in_a_plain_consensus_problem_is_the_embedded_map():
    import sheafdsl as sd

    blocked = """sheaf blk
param P : 1 x 2 = [[1, -1]]
stalk a : 4
stalk b : 2
edge e : a[2:4] -> b  maps P | P hard
objective a quadratic 1 [1, 2, 3, 4]
objective b quadratic 2 [0, 1]
"""
    full = blocked.replace("param P : 1 x 2 = [[1, -1]]\n", "param P : 1 x 2 = [[1, -1]]\nparam F : 1 x 4 = [[0, 0, 1, -1]]\n")
    full = full.replace("a[2:4] -> b  maps P | P", "a -> b  maps F | P")
    xs = [sd.loads(t).infer(solver="exact").stalks for t in (blocked, full)]
    assert np.allclose(xs[0]["a"], xs[1]["a"]) and np.allclose(xs[0]["b"], xs[1]["b"])
    assert abs(float((xs[0]["a"][0, 2] - xs[0]["a"][0, 3]) - (xs[0]["b"][0, 0] - xs[0]["b"][0, 1]))) < 1e-12
    assert not np.allclose(xs[0]["a"], -np.array([[1, 2, 3, 4]]))  # the constraint binds


def test_the_api_trains_a_learned_model(tmp_path):
    import sheafdsl as sd

    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 2, 2, 6))
    np.savez(tmp_path / "d.npz", **{"train/g": X, "train/y": np.eye(5)[(X[:, 0, 0, 0] > 0).astype(int)]})
    steps = []
    fit = sd.train(sd.loads(GRID), data=str(tmp_path / "d.npz"), steps=12, trainer="unrolled", iterations=5,
                   on_step=lambda t, loss, b: steps.append(t), out=str(tmp_path / "run"))
    assert steps == list(range(1, 13)) and [h["step"] for h in fit.history] == steps
    assert fit.metrics["trainer"] == "unrolled" and fit.metrics["iterations"] == 5
    assert sorted(fit.params) == sorted(np.load(tmp_path / "run" / "params.npz").files)
    assert fit.history[-1]["loss"] < fit.history[0]["loss"]


from hypothesis import example, given, settings, strategies as st  # noqa: E402


@settings(max_examples=8, deadline=None)
@example(R=1, C=1, K=3, rho=1.0, seed=0)
@given(R=st.integers(1, 3), C=st.integers(1, 3), K=st.integers(1, 6), rho=st.sampled_from([0.3, 1.0, 4.0]),
       seed=st.integers(0, 10**6))
def test_unrolled_and_implicit_gradients_on_random_grid_sizes(R, C, K, rho, seed):
    """Any grid size (a 1 × 1 grid has no edges), any K and ρ: both gradients equal central differences in a few
    random entries of every parameter."""
    G, tr = _trainer(GRID, "unrolled", seed=seed % 97, iterations=K, rho=rho)
    split = _split(G, 2, np.random.default_rng(seed), (R, C))
    for name, loss in (("unrolled", lambda: tr.loss(split, method="admm")),
                       ("implicit", lambda: tr.loss(split, method="kkt"))):
        tr.trainer = name
        grads = tr.loss_and_grads(split)[1]
        fd = _fd(tr, loss, entries=2)
        for k in tr.params:
            m = ~np.isnan(fd[k])
            assert np.allclose(grads[k][m], fd[k][m], atol=1e-6, rtol=1e-4), (name, k)


def test_blocks_lower_into_the_reference_coboundary_and_the_batched_operators_refuse_them():
    from sheafdsl.lowering.assemble import coboundary_matrix
    from sheafdsl.lowering.operators import SheafOperators

    G = from_model(load_text(BLOCKS))
    tr = LearnedTrainer(G, trainer="implicit", seed=0)
    D = coboundary_matrix(G, tr.params).toarray()
    S = LearnedStructure(G)
    Dl = S.operators(S.map_values(tr.params, np), np)[1].toarray()
    cols = [G.nodes[v]["offset"] + i for v in S.agents for i in range(S.dim[v])]  # the agents' coordinates
    assert np.allclose(D[:, cols], Dl)
    with pytest.raises(SheafError) as e:
        SheafOperators(G, tr.params)
    assert e.value.diagnostics[0].code == "E557"
