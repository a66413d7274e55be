"""The CuPy backend against NumPy (marked gpu: skipped without CuPy and an NVIDIA GPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sheafdsl.lowering import cupy_available, to_numpy

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _needs_gpu():
    if not cupy_available():
        pytest.skip("CuPy with a usable NVIDIA GPU is not available")


@pytest.mark.parametrize("trainer", ["sheaf", "backprop"])
def test_training_on_cupy_matches_numpy(trainer):
    from sheafdsl.frontend import load_file
    from sheafdsl.ir import from_model

    G = from_model(load_file(ROOT / "models" / "paraboloid.sheaf"))
    _train_on_both(G, G.graph["train"], {"trainer": trainer, "steps": 30}, rtol=1e-9, atol=1e-11)


def _train_on_both(G, sources, overrides, rtol, atol):
    """Train on numpy and on cupy from the same start; the parameters agree."""
    from sheafdsl.training.config import TrainConfig
    from sheafdsl.training.data import dataset_for
    from sheafdsl.training.trainers import make_trainer

    params = {}
    for backend in ("numpy", "cupy"):
        cfg = TrainConfig.from_sources(sources, dict(overrides, backend=backend))
        T = make_trainer(G, cfg, dataset_for(G, cfg))
        for _ in range(cfg.steps):
            T.step()
        params[backend] = {k: to_numpy(v) for k, v in T.params.items()}
    for k, v in params["numpy"].items():
        np.testing.assert_allclose(params["cupy"][k], v, rtol=rtol, atol=atol)


def _problem(text, B=24, seed=0):
    from sheafdsl.frontend import load_text
    from sheafdsl.ir import from_model
    from sheafdsl.lowering import init_params

    G = from_model(load_text(text))
    P = init_params(G, seed)
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, (B, 2))
    return G, P, X, (X ** 2).sum(1, keepdims=True) - 2 / 3


SHALLOW = "sheaf s\nnetwork n : 2 -> 16 -> 1 relu output identity weight 1\n"
DEEP = "sheaf d\nnetwork n : 2 -> 16 -> 16 -> 1 relu output identity weight 1\n"


@pytest.mark.parametrize("piece,text", [("shallow", SHALLOW), ("chain", DEEP), ("elimination", DEEP),
                                        ("dense", DEEP), ("cg", DEEP)])
def test_every_piece_solver_runs_on_cupy_and_matches_numpy(piece, text):
    """The one driver and each piece solver on CuPy arrays (no host arrays inside): the same equilibrium."""
    import cupy as cp

    from sheafdsl.ir import TRAINING
    from sheafdsl.solvers import solve

    G, P, X, Y = _problem(text)
    method = "cg" if piece == "cg" else "exact"
    ref = solve(G, P, {"x": X, "y": Y}, boundary=TRAINING, piece=piece, method=method)
    Pg = {k: cp.asarray(v) for k, v in P.items()}
    got = solve(G, Pg, {"x": cp.asarray(X), "y": cp.asarray(Y)}, boundary=TRAINING, piece=piece, method=method)
    assert isinstance(got.cochain, cp.ndarray) and got.info == 0
    np.testing.assert_array_equal(to_numpy(got.state), to_numpy(ref.state))
    np.testing.assert_allclose(to_numpy(got.cochain), ref.cochain, atol=1e-8)
    again = solve(G, Pg, {"x": cp.asarray(X), "y": cp.asarray(Y)}, boundary=TRAINING, piece=piece, method=method,
                  warm=got)
    assert again.info == 0


def test_heat_equation_and_sparse_lu_on_cupy():
    import cupy as cp

    from sheafdsl.ir import TRAINING
    from sheafdsl.solvers import solve

    G, P, X, Y = _problem(DEEP, B=8)
    Pg = {k: cp.asarray(v) for k, v in P.items()}
    ref = solve(G, P, {"x": X, "y": Y}, boundary=TRAINING, method="diffusion", rtol=1e-9)
    got = solve(G, Pg, {"x": cp.asarray(X), "y": cp.asarray(Y)}, boundary=TRAINING, method="diffusion", rtol=1e-9)
    assert got.info == 0
    np.testing.assert_allclose(to_numpy(got.cochain), ref.cochain, atol=1e-6)
    # a constant sheaf above the dense limit: the shared sparse LU (cupyx.scipy.sparse.linalg.splu)
    from sheafdsl.frontend import load_text
    from sheafdsl.ir import from_model
    from sheafdsl.solvers.active_set import DENSE_LIMIT

    n = DENSE_LIMIT + 10
    src = "sheaf big\n" + "".join(f"stalk v{i} : 1\n" for i in range(n)) + "".join(
        f"edge e{i} : v{i} -> v{i + 1} identity\n" for i in range(n - 1)) + "pin v0 = input\npin v%d = 1\n" % (n - 1)
    G = from_model(load_text(src))
    x = np.array([[0.5]])
    ref = solve(G, None, {"v0": x}, piece="lu")
    got = solve(G, None, {"v0": cp.asarray(x)}, piece="lu")
    np.testing.assert_allclose(to_numpy(got.cochain), ref.cochain, atol=1e-9)


def test_sheaf_trainer_steps_on_cupy_match_numpy_for_a_deep_net():
    from sheafdsl.frontend import load_text
    from sheafdsl.ir import from_model

    _train_on_both(from_model(load_text(DEEP)), {}, {"data": "paraboloid", "n": 64, "n_test": 16, "steps": 10},
                   rtol=1e-8, atol=1e-10)
