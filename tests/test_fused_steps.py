"""The fused backprop step (:class:`sheafdsl.training.backprop.BackpropFlow`) against the general chain
rule (:func:`~sheafdsl.training.backprop.backprop_gradients`), the backprop trainer's fused path against
its plain one, and the bound in-place updates both fused steps are made of
(:class:`sheafdsl.lowering.backend.Fused`)."""

from __future__ import annotations

import numpy as np
import pytest

from sheafdsl.frontend import load_file, load_text
from sheafdsl.ir import from_model
from sheafdsl.lowering.backend import fused
from sheafdsl.lowering.chain import predict
from sheafdsl.training.backprop import BackpropFlow, backprop_gradients
from sheafdsl.training.config import TrainConfig
from sheafdsl.training.data import load_dataset
from sheafdsl.training.trainers import make_trainer, task_loss

FIXED_MAP = """sheaf f
param W1 : 3 x 2 init he
param b1 : 3 init zeros
param Wo : 1 x 2 init he
param bo : 1 init zeros
stalk x : 2
stalk z : 3
stalk a : 3
stalk s : 2
stalk y : 1
edge e1 : x -> z affine W1 b1
edge r : z -> a relu
edge e2 : a -> s maps [[1, 0, 0.5], [0, 2, 0]] | 1 weight 1.5
edge out : s -> y affine Wo bo weight 0.7
pin x = input
pin y = target
"""

TIED = """sheaf tied
param W1 : 3 x 2 init he
param W : 3 x 3 init he
param Wo : 1 x 3 init he
stalk x : 2
stalk z1 : 3
stalk a1 : 3
stalk z2 : 3
stalk a2 : 3
stalk z3 : 3
stalk y : 1
edge e1 : x -> z1 affine W1
edge r1 : z1 -> a1 relu
edge e2 : a1 -> z2 affine W
edge r2 : z2 -> a2 relu
edge e3 : a2 -> z3 affine W
edge out : z3 -> y affine Wo
pin x = input
pin y = target
"""

CASES = {
    "paper": ("models/paraboloid_paper.sheaf", "paraboloid"),
    "deep-weighted": ("sheaf d\nnetwork m : 2 -> 8 -> 6 -> 3 relu output identity weight 0.5\n", "paraboloid3"),
    "sigmoid": ("sheaf c\nnetwork m : 2 -> 7 -> 1 relu output sigmoid\n", "circle"),
    "softmax-tanh": ("sheaf b\nnetwork m : 2 -> 6 tanh -> 5 relu -> 4 output softmax weight 2\n", "blobs"),
    "fixed-map-affine-out": (FIXED_MAP, "paraboloid"),
}


def _graph(src):
    return from_model(load_file(src) if src.endswith(".sheaf") else load_text(src))


def _data(name, n=48):
    if name == "paraboloid3":  # three outputs: the paraboloid, its negative and a constant
        d = load_dataset("paraboloid", n=n, n_test=8)
        d.Y_train = np.hstack([d.Y_train, -d.Y_train, np.ones_like(d.Y_train)])
        d.Y_test = np.hstack([d.Y_test, -d.Y_test, np.ones_like(d.Y_test)])
        return d
    return load_dataset(name, n=n, n_test=8)


def _trainer(case, **kw):
    src, data = CASES[case]
    c = TrainConfig.from_sources({}, dict(trainer="backprop", steps=40, seed=1, **kw))
    return make_trainer(_graph(src), c, _data(data))


@pytest.mark.parametrize("case", list(CASES))
def test_fused_gradients_are_the_chain_rule(case):
    """One bound step writes backprop_gradients' gradient (to round-off: the same products, with 1ᵀg for
    the sums) and, with loss=True, the task loss of the forward pass."""
    T = _trainer(case)
    assert T.flow is not None
    rng = np.random.default_rng(3)
    for k, v in T.params.items():  # away from the zero biases of the initialisation
        v += 0.3 * rng.standard_normal(v.shape)
    P = {k: np.array(v) for k, v in T.params.items()}
    _, pred, want = backprop_gradients(T.net, P, T.Xtr, T.Ytr)
    plan = T.flow.bind(T.Xtr, T.Ytr)
    loss = plan.step(loss=True)
    assert loss == pytest.approx(task_loss(T.data.task, predict(T.net, P, T.Xtr), T.Ytr), rel=1e-14)
    for k in want:
        np.testing.assert_allclose(T.flow.gviews[k], want[k], rtol=1e-13, atol=1e-15)
    assert plan.step(loss=False) is None
    for k in want:  # a step reads only its inputs: the same gradient again
        np.testing.assert_allclose(T.flow.gviews[k], want[k], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("case,opt,batch", [("paper", "sgd", None), ("deep-weighted", "adam", 20),
                                            ("softmax-tanh", "momentum", None), ("sigmoid", "sgd", 20),
                                            ("fixed-map-affine-out", "adam", None)])
def test_fused_trainer_follows_the_plain_path(case, opt, batch):
    """40 steps of the fused trainer and of the same trainer on its plain path (flow None: the general
    chain rule and the optimiser per array) end at the same parameters, to round-off."""
    A, B = _trainer(case, optimizer=opt, lr=0.05, batch=batch), _trainer(case, optimizer=opt, lr=0.05, batch=batch)
    B.flow = None
    for t in range(40):
        a, b = A.step(loss=t % 7 == 0), B.step()
        if t % 7 == 0:
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-12)
        else:
            assert a["loss"] is None
    for k in A.params:
        np.testing.assert_allclose(A.params[k], B.params[k], rtol=1e-12, atol=1e-14)


def test_the_loss_is_computed_only_when_asked_and_changes_nothing():
    A, B = _trainer("paper", optimizer="sgd", lr=0.05), _trainer("paper", optimizer="sgd", lr=0.05)
    for t in range(10):
        A.step(loss=True)
        B.step(loss=False)
    for k in A.params:
        np.testing.assert_array_equal(A.params[k], B.params[k])


def test_a_tied_parameter_takes_the_plain_path():
    c = TrainConfig.from_sources({}, dict(trainer="backprop", optimizer="sgd", lr=0.05, steps=3, seed=1))
    G = _graph(TIED)
    assert not BackpropFlow.fusable(__import__("sheafdsl.lowering.chain", fromlist=["x"]).feedforward(G))
    T = make_trainer(G, c, _data("paraboloid"))
    assert T.flow is None
    P = {k: np.array(v) for k, v in T.params.items()}
    _, _, g = backprop_gradients(T.net, P, T.Xtr, T.Ytr)
    T.step()
    for k in P:
        np.testing.assert_allclose(T.params[k], P[k] - 0.05 * g[k], rtol=1e-13, atol=1e-15)


def test_a_loaded_state_is_packed_again():
    A = _trainer("paper", optimizer="sgd", lr=0.05)
    for _ in range(5):
        A.step()
    state = {k: np.array(v) for k, v in A.state_dict().items()}
    B = _trainer("paper", optimizer="sgd", lr=0.05)
    B.load_state_dict(state)
    for _ in range(5):
        A.step()
        B.step()
    assert B.flow.is_packed(B.params)
    for k in A.params:
        np.testing.assert_array_equal(A.params[k], B.params[k])


# ----------------------------------------------------------------------------------------------
# the bound updates


def test_bound_blas_updates_write_in_place_and_repeat():
    f = fused(np)
    rng = np.random.default_rng(0)
    y, x = rng.standard_normal((7, 5)), rng.standard_normal((7, 5))
    y0 = y.copy()
    up = f.axpy(0.25, x, y)
    up()
    up()
    np.testing.assert_allclose(y, y0 + 0.5 * x, rtol=1e-15)
    for m in (1, 3):  # ger (a rank-one product) and gemm
        A, Bm, C = rng.standard_normal((7, m)), rng.standard_normal((m, 5)), rng.standard_normal((7, 5))
        C0 = C.copy()
        up = f.gemm(-0.5, A, Bm, C)
        up()
        up()
        np.testing.assert_allclose(C, C0 - A @ Bm, rtol=1e-13, atol=1e-14)


def test_bound_updates_on_strided_outputs_fall_back_to_the_plain_expressions():
    f = fused(np)
    rng = np.random.default_rng(1)
    big = rng.standard_normal((7, 10))
    y, x = big[:, ::2], rng.standard_normal((7, 5))  # not contiguous
    y0 = y.copy()
    f.axpy(2.0, x, y)()
    np.testing.assert_allclose(big[:, ::2], y0 + 2.0 * x, rtol=1e-15)
    A, Bm = rng.standard_normal((7, 1)), rng.standard_normal((1, 5))
    f.gemm(1.0, A, Bm, y)()
    np.testing.assert_allclose(big[:, ::2], y0 + 2.0 * x + A @ Bm, rtol=1e-14)


# ----------------------------------------------------------------------------------------------
# the run loop's stretches


def test_stretches_between_events_change_nothing():
    """The run loop runs the steps between two events (log steps, snapshots, the last) as one stretch for
    trainers with cheap steps; a run that sees every step (an on_step that wants each loss) ends at the
    same parameters, with the same records and snapshots, bit for bit, baseline included."""
    from sheafdsl.training.run import TrainingSession

    def run(each):
        src, data = CASES["paper"]
        G, d = _graph(src), _data(data)
        c = TrainConfig.from_sources({}, dict(trainer="joint", steps=230, seed=1, joint_reinit=40))
        cb = TrainConfig.from_sources({}, dict(trainer="backprop", optimizer="sgd", lr=0.05, steps=230, seed=1))
        T, B = make_trainer(G, c, d), make_trainer(G, cb, d)
        S = TrainingSession(None, G, T, d, meta={}, baseline=B, log_every=50, snapshot_at=[73, 100])
        seen = []

        def on_step(step, loss, bloss):
            seen.append(step)

        on_step.throttled = not each
        out = S.run(230, on_step=on_step)
        assert out.status == "finished" and T.step_count == B.step_count == 230
        return T, B, S, seen

    (T1, B1, S1, seen1), (T2, B2, S2, seen2) = run(True), run(False)
    assert seen1 == list(range(1, 231)) and seen2 == [50, 73, 100, 150, 200, 230]
    for a, b in ((T1, T2), (B1, B2)):
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k])
    keys = ("step", "loss", "baseline_loss", "test_loss", "baseline_test_loss")
    assert [[r.get(k) for k in keys] for r in S1.metrics.read()] == [[r.get(k) for k in keys] for r in S2.metrics.read()]
    assert sorted(S1.snapshots) == sorted(S2.snapshots) == [73, 100]
    for s in (73, 100):
        for k in S1.snapshots[s].params:
            np.testing.assert_array_equal(S1.snapshots[s].params[k], S2.snapshots[s].params[k])
            np.testing.assert_array_equal(S1.snapshots[s].baseline[k], S2.snapshots[s].baseline[k])


def _joint(case, **kw):
    src, data = CASES[case]
    c = TrainConfig.from_sources({}, dict(trainer="joint", steps=100, seed=1, **kw))
    return make_trainer(_graph(src), c, _data(data))


@pytest.mark.parametrize("make", [lambda: _joint("paper", joint_reinit=7), lambda: _joint("sigmoid", dt=0.02),
                                  lambda: _trainer("paper", optimizer="sgd", lr=0.05),
                                  lambda: _trainer("softmax-tanh", optimizer="sgd", lr=0.05)])
def test_a_stretch_is_the_checked_steps_bit_for_bit(make):
    """``steps(n)`` runs a full batch's steps as one tuple of operations repeated, checked once at the end;
    it ends where n checked steps end (parameters, stalks, step and optimiser counts), epochs included."""
    A, B = make(), make()
    assert A._stretch() is not None  # the stretch path is the one under test
    A.steps(23)
    for _ in range(23):
        B.step(loss=False)
    assert A.step_count == B.step_count == 23 and A.opt.t == B.opt.t
    for k in A.params:
        np.testing.assert_array_equal(A.params[k], B.params[k])
    for a, b in zip(getattr(A, "stalks", ()), getattr(B, "stalks", ())):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make", [lambda: _joint("paper", dt=40.0), lambda: _trainer("paper", optimizer="sgd", lr=1e4)])
def test_a_diverging_stretch_stops_where_the_checked_steps_do(make):
    """A stretch that goes non-finite is replayed from its start with every step checked: the same
    DivergenceError (step, place) as n checked steps, and the same state left behind."""
    from sheafdsl.training.trainers import DivergenceError

    A, B = make(), make()
    with pytest.raises(DivergenceError) as ea:
        A.steps(80)
    with pytest.raises(DivergenceError) as eb:
        for _ in range(80):
            B.step(loss=False)
    assert 1 < ea.value.step < 80
    assert (ea.value.step, ea.value.where) == (eb.value.step, eb.value.where)
    assert A.step_count == B.step_count
    for k in A.params:
        np.testing.assert_array_equal(A.params[k], B.params[k])
