"""The issue-5 targets, measured side by side (slow: run with ``pytest -m slow``).

Accuracy targets are deterministic (seeded). Wall-time targets are not tested here (timings belong in
benchmarks): see benchmarks/bench_train.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sheafdsl.frontend import load_text
from sheafdsl.ir import from_model
from sheafdsl.training.config import TrainConfig
from sheafdsl.training.data import dataset_for
from sheafdsl.training.trainers import make_trainer

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


PAPER_SRC = (ROOT / "models" / "paraboloid_paper.sheaf").read_text()  # the paper's unit edge weights


def _model(text=None):
    if text is None:
        text = (ROOT / "models" / "paraboloid.sheaf").read_text()
    return from_model(load_text(text))


def _train(G, **kw):
    cfg = TrainConfig.from_sources(G.graph.get("train") or {}, kw)
    T = make_trainer(G, cfg, dataset_for(G, cfg))
    t0 = time.perf_counter()
    for _ in range(cfg.steps):
        T.step()
    return time.perf_counter() - t0, T.evaluate()


PARAB = dict(steps=3000, optimizer="adam", lr=0.01, seed=0, n=300, n_test=100)


@pytest.fixture(scope="module")
def paraboloid_runs():
    """Test metrics of the sheaf and backprop trainers on models/paraboloid.sheaf, same data and init."""
    G = _model()
    return {t: _train(G, trainer=t, **PARAB)[1] for t in ("sheaf", "backprop")}


def test_paraboloid_sheaf_mse(paraboloid_runs):
    ev = paraboloid_runs
    assert ev["sheaf"]["test_mse"] <= 0.01


def test_paraboloid_sheaf_within_2x_of_backprop(paraboloid_runs):
    ev = paraboloid_runs
    assert ev["sheaf"]["test_mse"] <= 2 * ev["backprop"]["test_mse"]


def test_paraboloid_unit_output_weight_is_the_weaker_objective():
    """With the paper's unit weights the sheaf residual weighs examples by sensitivity: still ≤ 0.01."""
    G = _model(PAPER_SRC)
    _, s = _train(G, trainer="sheaf", **PARAB)
    assert s["test_mse"] <= 0.01


@pytest.mark.parametrize("task,text", [
    ("circle", "sheaf circle\nnetwork mlp : 2 -> 25 -> 1 relu output sigmoid\n"),
    ("blobs", "sheaf blobs\nnetwork mlp : 2 -> 25 -> 4 relu output softmax\n"),
])
def test_classification_within_one_point_of_backprop(task, text):
    G = _model(text)
    kw = dict(data=task, steps=3000, optimizer="adam", lr=0.01, seed=0)
    _, s = _train(G, trainer="sheaf", **kw)
    _, b = _train(G, trainer="backprop", **kw)
    assert s["test_accuracy"] >= b["test_accuracy"] - 0.01


def test_digits_accuracy():
    pytest.importorskip("sklearn")
    G = _model("sheaf digits\nnetwork mlp : 64 -> 64 -> 10 relu output softmax\n")
    _, s = _train(G, trainer="sheaf", data="digits", n=1437, n_test=360, steps=500, optimizer="adam", lr=0.01, seed=0)
    assert s["test_accuracy"] >= 0.95


def test_digits_as_shipped_keeps_its_accuracy():
    """models/digits.sheaf at its own settings (1000 steps of batch 256): the refreshed warm starts of the fast
    phase (a different path to an exact equilibrium each step) keep the test accuracy it had before them
    (96.9%; 97.2% with them), and every step's equilibrium stays consistent."""
    pytest.importorskip("sklearn")
    G = _model((ROOT / "models" / "digits.sheaf").read_text())
    cfg = TrainConfig.from_sources(G.graph.get("train") or {}, {"trainer": "sheaf"})
    T = make_trainer(G, cfg, dataset_for(G, cfg))
    worst = min(T.step()["consistent_fraction"] for _ in range(cfg.steps))
    assert worst == 1.0
    assert T.evaluate()["test_accuracy"] >= 0.969


def test_paper_reproduction_joint_rule():
    """The paper's sheaf (unit weights) and rule: the peer reports train MSE 0.0756 after 100k steps
    (docs/tasks.md). Its wall time against the peer's ~96 s is in benchmarks/bench_train.py."""
    G = _model(PAPER_SRC)
    _, ev = _train(G, trainer="joint", optimizer="sgd", steps=100_000, alpha=1.0, dt=0.005, seed=0)
    assert 0.06 <= ev["train_mse"] <= 0.08
