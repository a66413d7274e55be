"""Learned models with bounded agents (`nonneg`, `box`) and constants (docs/admm.md "Learning"): the bounded
equilibrium against CVXPY, its two ADMM splittings against each other, the implicit gradient on the final active set
against central finite differences, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sheafdsl.errors import SheafError
from sheafdsl.frontend.checker import load_text
from sheafdsl.ir import from_model
from sheafdsl.lowering.learned import LearnedStructure, coefficients
from sheafdsl.solvers import learned as SL
from sheafdsl.training.learned import LearnedTrainer, Split, observations

cp = pytest.importorskip("cvxpy")
from test_learned import _fd  # noqa: E402  (central differences in every parameter entry)

# hard edges only and encoded objectives: H diagonal (the diagonal splitting). Two nonneg agents and one boxed
# below 0.8, glued by a shared parameter map; the constant `one` pins a's total to 1 and part of b's to 1.5
DIAGONAL = """sheaf bounded
param P : 3 x 3 init xavier
param W : 3 x 3 init xavier
encoder enc : 4 -> 5 -> 6
stalk a : 3
stalk b : 3
stalk c : 3
stalk oa : 4
stalk ob : 4
stalk oc : 4
stalk one : 1
pin oa = input
pin ob = input
pin oc = input
pin one = 1
objective a encoded enc oa
objective b encoded enc ob
objective c encoded enc oc
objective a nonneg
objective b nonneg
objective c box 0 0.8
edge ab : a -> b maps P | P hard
edge bc : b[0:2] -> c[1:3] maps [[1, 0], [0, 1]] | [[1, 0], [0, 1]] hard
edge ta : one -> a maps [[1]] | [[1, 1, 1]] hard
edge tb : one -> b maps [[1.5]] | [[1, 2, 0]] hard
stalk y : 3
pin y = target
decode y : mean a b c affine W softmax
"""

# a soft edge and a literal quadratic (H not diagonal: the affine splitting), a parameter map on the constant's side
AFFINE = """sheaf bounded_soft
param P : 3 x 3 init xavier
param T : 1 x 1 = 1.3
param W : 3 x 3 init xavier
param Qb : 3 x 3 = 0.5
encoder enc : 4 -> 5 -> 6
stalk a : 3
stalk b : 3
stalk oa : 4
stalk ob : 4
stalk one : 1
pin oa = input
pin ob = input
pin one = 1
objective a encoded enc oa
objective b encoded enc ob
objective b quadratic Qb
objective a nonneg
objective b box 0 0.8
edge ab : a -> b maps P | P weight 1.5
edge ta : one -> a maps T | [[1, 1, 1]] hard
edge tb : one -> b[0:2] maps [[1]] | [[1, 2]] hard
stalk y : 3
pin y = target
decode y : mean a b affine W softmax
"""

# constants without bounds: the plain KKT solve with a right-hand side
CONSTANT = DIAGONAL.replace("objective a nonneg\nobjective b nonneg\nobjective c box 0 0.8\n", "")


def _setup(src, seed=0, B=8, spread=3.0):
    G = from_model(load_text(src))
    tr = LearnedTrainer(G, trainer="implicit", seed=seed)
    rng = np.random.default_rng(seed + 10)
    for k in tr.params:  # away from the initial values, so that every path of the gradient is exercised
        tr.params[k] = tr.params[k] + 0.3 * rng.normal(size=tr.params[k].shape)
    spec = G.graph["learned"]
    inputs = {obs: spread * rng.normal(size=(B, G.nodes[obs]["dim"])) for _, _, obs in spec.objectives}
    targets = {d.target: np.eye(3)[rng.integers(0, 3, B)] for d in spec.decoders}
    split = Split(inputs, targets)
    S = tr.structure(split.inputs)
    C = coefficients(S, tr.params, observations(S.G, split.inputs, np), np, B=B)
    return G, tr, split, S, C


def _cvxpy(S, C, b):
    """The minimiser of example b assembled independently: H from the coefficient blocks and the soft rows, the hard
    rows and their right-hand side, the bounds as constraints."""
    _, D = S.operators(C.F, np)
    D = D.toarray()
    H = np.zeros((S.n, S.n))
    for g, Qg in zip(S.groups, C.Q):
        for k in range(g.V):
            H[np.ix_(g.cols[k], g.cols[k])] = Qg[b, k]
    H += (D[~S.hard].T * S.w2[~S.hard]) @ D[~S.hard]
    x = cp.Variable(S.n)
    cons = [D[S.hard] @ x == S.rhs(C.F, np)]
    lo, hi = np.isfinite(S.lo), np.isfinite(S.hi)
    cons += [x[lo] >= S.lo[lo], x[hi] <= S.hi[hi]]
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(x, cp.psd_wrap(H)) + C.q[:, b] @ x), cons)
    # tight tolerances: at Clarabel's defaults its minimiser is off by up to ~1e-6 on these (hypothesis found one)
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10, max_iter=400)
    assert prob.status == "optimal", prob.status
    return x.value


@pytest.mark.parametrize("src", [DIAGONAL, AFFINE])
def test_the_bounded_equilibrium_is_the_qp_minimiser(src):
    _, _, _, S, C = _setup(src)
    x, lam, system = SL.kkt(S, C, np)
    active = ~system.free
    assert active.any() and (active.sum(0) < S.n).all()  # bounds bind, and not everywhere
    ref = np.stack([_cvxpy(S, C, b) for b in range(C.B)], axis=1)
    assert np.abs(x - ref).max() < 1e-7  # CVXPY's own accuracy at its tight tolerances
    # the polish is exact on its active set: the hard rows to round-off, the active coordinates at their bounds
    _, D = S.operators(C.F, np)
    assert np.abs(D.toarray()[S.hard] @ x - S.rhs(C.F, np)[:, None]).max() < 1e-12
    at = np.where(np.isclose(x, S.lo[:, None], atol=0), S.lo[:, None], np.where(active, S.hi[:, None], x))
    assert np.array_equal(x[active], at[active])
    assert (x >= S.lo[:, None] - 1e-12).all() and (x <= S.hi[:, None] + 1e-12).all()


@settings(max_examples=12, deadline=None)
@example(seed=3000, spread=4.0, rho=None)  # Clarabel's default tolerances were 1.5e-6 off here
@given(seed=st.integers(0, 10_000), spread=st.floats(0.5, 6.0), rho=st.sampled_from([None, 0.3, 3.0]))
def test_both_splittings_reach_the_same_minimiser_as_cvxpy(seed, spread, rho):
    """Whatever ρ and whichever ADMM finds the active set, the polished minimiser is the same to round-off, and
    CVXPY's to its tolerance."""
    _, _, _, S, C = _setup(DIAGONAL, seed=seed, B=4, spread=spread)
    x_d = SL.bounded_kkt(S, C, np, rho=rho, split="diagonal")[0]
    x_a = SL.bounded_kkt(S, C, np, rho=rho, split="affine")[0]
    assert np.abs(x_d - x_a).max() < 1e-10
    ref = np.stack([_cvxpy(S, C, b) for b in range(C.B)], axis=1)
    assert np.abs(x_d - ref).max() < 1e-7


def test_constants_without_bounds_give_the_affine_kkt_point():
    """Hard edges to a constant are A x = r: the KKT point against a dense least-squares solve of
    [[H, Aᵀ], [A, 0]] [x; λ] = [−q; r]."""
    _, _, _, S, C = _setup(CONSTANT)
    assert not S.bounded.any() and S.n_fixed == 1
    x, _, _ = SL.kkt(S, C, np)
    _, D = S.operators(C.F, np)
    A, r = D.toarray()[S.hard], S.rhs(C.F, np)
    assert np.abs(r).max() > 0
    for b in range(C.B):
        H = np.zeros((S.n, S.n))
        for g, Qg in zip(S.groups, C.Q):
            for k in range(g.V):
                H[np.ix_(g.cols[k], g.cols[k])] = Qg[b, k]
        K = np.block([[H, A.T], [A, np.zeros((len(A), len(A)))]])
        sol = np.linalg.lstsq(K, np.concatenate([-C.q[:, b], r]), rcond=None)[0]
        assert np.allclose(x[:, b], sol[:S.n], atol=1e-10)


@pytest.mark.parametrize("src", [DIAGONAL, AFFINE, CONSTANT])
def test_the_implicit_gradient_on_the_active_set_is_the_derivative_of_the_loss(src):
    """One adjoint solve per final active set, [[H_FF, A_Fᵀ], [A_F, 0]] [g_F; ν] = [∂ℓ/∂x_F; 0] (g = 0 on the active
    coordinates), against central differences of the loss at the exact bounded minimiser; a parameter map on a
    constant's edge (T) enters through r = −D_c p."""
    _, tr, split, _, _ = _setup(src, B=6)
    _, grads = tr.loss_and_grads(split)
    fd = _fd(tr, lambda: tr.loss(split, method="kkt"))
    for k in tr.params:
        assert np.allclose(grads[k], fd[k], atol=1e-7, rtol=1e-5), k
    assert np.abs(grads["W"]).max() > 1e-3 and ("T" not in grads or np.abs(grads["T"]).max() > 1e-4)


def test_trainers_that_do_not_differentiate_bounds_refuse_them():
    G = from_model(load_text(DIAGONAL))
    for trainer in ("unrolled", "local"):
        with pytest.raises(SheafError) as exc:
            LearnedTrainer(G, trainer=trainer)
        assert exc.value.diagnostics[0].code == "E732" and "--trainer implicit" in exc.value.diagnostics[0].hint
    with pytest.raises(SheafError) as exc:
        LearnedTrainer(from_model(load_text(CONSTANT)), trainer="unrolled")
    assert exc.value.diagnostics[0].code == "E732" and "`one`" in exc.value.diagnostics[0].message


def test_bounds_the_constraints_cannot_meet_stop_with_e731():
    """a's total pinned to −1 with a ≥ 0: no point; ADMM never certifies an active set, and the solve says so."""
    _, _, _, S, C = _setup(DIAGONAL.replace("pin one = 1", "pin one = -1"), B=2)
    with pytest.raises(SheafError) as exc:
        SL.bounded_kkt(S, C, np, maxiter=120)
    d = exc.value.diagnostics[0]
    assert d.code == "E731" and "120 ADMM iterations" in d.message and "sheaf verify" in d.hint


def test_non_finite_observations_stop_with_e554_at_once_not_as_an_unsettled_solve():
    G, tr, split, _, _ = _setup(DIAGONAL, B=3)
    split.inputs["oa"][1, 2] = np.nan
    with pytest.raises(SheafError) as exc:
        tr.loss_and_grads(split)
    d = exc.value.diagnostics[0]
    assert d.code == "E554" and "example 1 (of 3)" in d.message and "non-finite observations" in d.hint


def test_a_data_file_with_nan_is_refused_at_its_entry(tmp_path):
    """`sheaf train --data FILE.npz` of a learned model: a NaN in an observation is E601 naming the entry and the row,
    exit 1, no traceback (the loader's check, before any solve)."""
    from click.testing import CliRunner

    from sheafdsl.cli.main import cli

    (tmp_path / "m.sheaf").write_text(DIAGONAL)
    rng = np.random.default_rng(0)
    d = {f"{s}/{o}": rng.normal(size=(8, 4)) for s in ("train", "test") for o in ("oa", "ob", "oc")}
    d.update({f"{s}/y": np.eye(3)[rng.integers(0, 3, 8)] for s in ("train", "test")})
    d["train/oa"][2, 1] = np.nan
    np.savez(tmp_path / "d.npz", **d)
    res = CliRunner().invoke(cli, ["train", str(tmp_path / "m.sheaf"), "--data", str(tmp_path / "d.npz"),
                                   "--trainer", "implicit", "--steps", "1"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "E601" in res.output and "train/oa" in res.output and "first at row 2" in res.output


def test_the_residual_trace_of_a_bounded_model_is_its_admm():
    """`--json`'s residuals for a bounded model: K iterations of the bounded solve's ADMM, falling to its tolerance,
    and the equilibrium after them is the minimiser."""
    _, tr, split, S, C = _setup(DIAGONAL)
    x, S2, it = tr.equilibrium(split, method="admm", iterations=80, trace=True)
    assert len(it.primal) >= 80 and len(it.dual) == len(it.primal)
    assert it.primal[-1] < 1e-7 * max(1.0, np.abs(C.q).max()) < it.primal[0]
    assert np.abs(x - SL.kkt(S, C, np)[0]).max() < 1e-12
