"""The sheaf trainer's packed step (parameters and gradient in flat vectors, the optimiser's
``step_flat``, the loss only when asked) against its plain path, bit for bit; the optimisers' packed
updates against their per-array ones; the local update written into given arrays; and the run loop's
stretches with the sheaf trainer."""

from __future__ import annotations

import numpy as np
import pytest

from sheafdsl.frontend import load_file, load_text
from sheafdsl.ir import from_model
from sheafdsl.training.config import TrainConfig
from sheafdsl.training.data import load_dataset
from sheafdsl.training.flat import FlatParams
from sheafdsl.training.optim import make_optimizer
from sheafdsl.training.trainers import make_trainer
from sheafdsl.training.update import local_gradients

CASES = {
    "paraboloid": ("models/paraboloid.sheaf", "paraboloid"),
    "deep": ("sheaf d\nnetwork m : 2 -> 8 -> 6 -> 5 -> 1 relu output identity weight 0.3\n", "paraboloid"),
    "sigmoid": ("sheaf c\nnetwork m : 2 -> 7 -> 1 relu output sigmoid\n", "circle"),
    "softmax-reluctance": ("sheaf b\nnetwork m : 2 -> 6 -> 5 relu -> 4 output softmax weight 2\n"
                           "reluctance W1 W2 weight 0.1\n", "blobs"),
}


def _graph(src):
    return from_model(load_file(src) if src.endswith(".sheaf") else load_text(src))


def _trainer(case, **kw):
    src, data = CASES[case]
    c = TrainConfig.from_sources({}, dict(trainer="sheaf", steps=30, seed=1, **kw))
    return make_trainer(_graph(src), c, load_dataset(data, n=48, n_test=8))


@pytest.mark.parametrize("case,opt,batch", [("paraboloid", "adam", None), ("deep", "adam", 20),
                                            ("sigmoid", "momentum", None), ("softmax-reluctance", "sgd", 16)])
def test_packed_step_is_the_plain_path_bit_for_bit(case, opt, batch):
    A, B = _trainer(case, optimizer=opt, lr=0.02, batch=batch), _trainer(case, optimizer=opt, lr=0.02, batch=batch)
    assert A.flow is not None
    B.flow = None  # the plain path: the loss, the gradient dicts and the optimiser per array
    for t in range(30):
        a, b = A.step(loss=t % 4 == 0), B.step()
        assert a["consistent_fraction"] == b["consistent_fraction"]
        if t % 4 == 0:
            assert a["loss"] == b["loss"]
        else:
            assert a["loss"] is None
    for k in A.params:
        np.testing.assert_array_equal(A.params[k], B.params[k])
    sa, sb = A.state_dict(), B.state_dict()
    assert sorted(sa) == sorted(sb)
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


def test_a_loaded_state_is_packed_again_and_resumes_exactly():
    A = _trainer("deep", optimizer="adam", lr=0.02, batch=20)
    for _ in range(6):
        A.step(loss=False)
    state = {k: np.array(v) for k, v in A.state_dict().items()}
    B = _trainer("deep", optimizer="adam", lr=0.02, batch=20)
    B.load_state_dict(state)
    for _ in range(6):
        A.step(loss=False)
        B.step(loss=False)
    assert B.flow.is_packed(B.params)
    for k in A.params:
        np.testing.assert_array_equal(A.params[k], B.params[k])
        np.testing.assert_array_equal(A.opt.m[k], B.opt.m[k])


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_step_flat_is_step_bit_for_bit(name):
    rng = np.random.default_rng(4)
    shapes = {"W": (3, 4), "b": (3,), "w": (1, 3)}
    P1 = {k: rng.standard_normal(s) for k, s in shapes.items()}
    L = FlatParams(P1, np)
    P2 = {k: v.copy() for k, v in P1.items()}
    o1, o2 = make_optimizer(name, 0.03), make_optimizer(name, 0.03)
    for t in range(7):
        g = {k: rng.standard_normal(s) * 10.0 ** rng.integers(-3, 3) for k, s in shapes.items()}
        for k in g:
            L.gviews[k][...] = g[k]
        if t == 5:  # a plain step between packed ones (its arrays replace the packed moments' views)
            o1.step(L.params, {k: v.copy() for k, v in L.gviews.items()})
        else:
            o1.step_flat(L.flat, L.grad, L)
        o2.step(P2, g)
        if t == 3:  # a state loaded between steps (the dicts' arrays replaced) is packed again
            o1.load_state_dict({k: np.array(v) for k, v in o1.state_dict().items()})
    for k in shapes:
        np.testing.assert_array_equal(L.params[k], P2[k])
    s1, s2 = o1.state_dict(), o2.state_dict()
    assert sorted(s1) == sorted(s2)
    for k in s1:
        np.testing.assert_array_equal(s1[k], s2[k])


def test_local_gradients_into_given_arrays():
    T = _trainer("softmax-reluctance")
    X, Y = T.Xtr, T.Ytr
    eq = T.equilibrium(X, Y)
    want = local_gradients(T.net, T.params, eq, "mean")
    out = {k: np.full_like(v, np.nan) for k, v in T.params.items()}
    got = local_gradients(T.net, T.params, eq, "mean", out=out)
    assert set(got) == set(want)
    for k in want:
        assert got[k] is out[k]
        np.testing.assert_array_equal(got[k], want[k])


@pytest.mark.parametrize("stretch_seconds", [0.5, 0.0])
def test_stretches_of_sheaf_steps_change_nothing(stretch_seconds, monkeypatch):
    """With the sheaf trainer lazy about its loss, the run loop runs the steps between two events as one
    stretch (``steps``) and the baseline catches up in one; a run that sees every step ends at the same
    parameters, records and snapshots, bit for bit. So does one whose stretches end after every step
    (``stretch_seconds`` = 0: the loop then takes and reports the next step itself)."""
    from sheafdsl.training.run import TrainingSession
    from sheafdsl.training.trainers import SheafTrainer

    monkeypatch.setattr(SheafTrainer, "stretch_seconds", stretch_seconds)

    def run(each):
        src, data = CASES["paraboloid"]
        G, d = _graph(src), load_dataset(data, n=48, n_test=8)
        c = TrainConfig.from_sources({}, dict(trainer="sheaf", optimizer="adam", lr=0.01, steps=120, seed=1, batch=16))
        cb = TrainConfig.from_sources({}, dict(trainer="backprop", optimizer="adam", lr=0.01, steps=120, seed=1, batch=16))
        T, B = make_trainer(G, c, d), make_trainer(G, cb, d)
        S = TrainingSession(None, G, T, d, meta={}, baseline=B, log_every=50, snapshot_at=[73])
        seen = []

        def on_step(step, loss, bloss):
            seen.append(step)

        on_step.throttled = not each
        assert S.run(120, on_step=on_step).status == "finished"
        return T, B, S, seen

    (T1, B1, S1, seen1), (T2, B2, S2, seen2) = run(True), run(False)
    assert seen1 == list(range(1, 121))
    assert seen2 == ([50, 73, 100, 120] if stretch_seconds else [2 * k for k in range(1, 61)] + [73])  or \
        stretch_seconds == 0 and set(seen2) >= {50, 73, 100, 120} and len(seen2) > 4
    for a, b in ((T1, T2), (B1, B2)):
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k])
    keys = ("step", "loss", "consistent_fraction", "baseline_loss", "test_loss", "edge_discord")
    assert [[r.get(k) for k in keys] for r in S1.metrics.read()] == [[r.get(k) for k in keys] for r in S2.metrics.read()]
    for k in S1.snapshots[73].params:
        np.testing.assert_array_equal(S1.snapshots[73].params[k], S2.snapshots[73].params[k])


@pytest.mark.skipif((__import__("os").cpu_count() or 1) < 2, reason="one core: every BLAS pool has one thread anyway")
def test_blas_threads_limits_the_blas_that_the_fused_steps_load():
    """``blas_threads(1)`` (``sheaf train --threads 1``, the default) limits SciPy's BLAS too, which the fused
    steps load on their first step: loaded after the limits were set, it kept a thread per core (the
    backprop baseline of README command 1 then took 18 s instead of 0.2 on a busy 2-core machine)."""
    import os
    import subprocess
    import sys

    code = ("import numpy as np\n"
            "from threadpoolctl import threadpool_info\n"
            "from sheafdsl.lowering.backend import blas_threads, fused\n"
            "with blas_threads(1):\n"
            "    fused(np)\n"
            "    print(sorted({i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'}))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[1]"
