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
    from sheafdsl.training.config import TrainConfig
    from sheafdsl.training.data import dataset_for
    from sheafdsl.training.trainers import make_trainer

    G = from_model(load_file(ROOT / "models" / "paraboloid.sheaf"))
    params = {}
    for backend in ("numpy", "cupy"):
        cfg = TrainConfig.from_sources(G.graph["train"], {"trainer": trainer, "steps": 30, "backend": backend})
        T = make_trainer(G, cfg, dataset_for(G, cfg))
        for _ in range(cfg.steps):
            T.step()
        params[backend] = {k: to_numpy(v) for k, v in T.params.items()}
    for k, v in params["numpy"].items():
        np.testing.assert_allclose(params["cupy"][k], v, rtol=1e-9, atol=1e-11)
