"""Trainers, optimisers and configuration: learning, determinism, exact resume, faults."""

from __future__ import annotations

import numpy as np
import pytest

from sheafdsl.errors import SheafError
from sheafdsl.frontend import load_file, load_text
from sheafdsl.ir import from_model
from sheafdsl.lowering import init_params
from sheafdsl.training.backprop import backprop_gradients
from sheafdsl.training.config import TrainConfig
from sheafdsl.training.data import load_dataset
from sheafdsl.lowering.chain import energy_gradient, feedforward, forward
from sheafdsl.training.update import local_gradients
from sheafdsl.training.optim import make_optimizer, scheduled_lr
from sheafdsl.training.trainers import (BackpropTrainer, DivergenceError, JointTrainer, SheafTrainer, make_trainer)


@pytest.fixture(scope="module")
def parab():
    return from_model(load_file("models/paraboloid_paper.sheaf"))


@pytest.fixture(scope="module")
def small_data():
    return load_dataset("paraboloid", n=64, n_test=32)


def cfg(**kw) -> TrainConfig:
    return TrainConfig.from_sources({}, kw)


# ----------------------------------------------------------------------------------------------
# configuration


def test_config_precedence_and_types():
    c = TrainConfig.from_sources({"steps": 500, "lr": 0.05, "optimizer": "sgd"}, {"lr": 0.001, "seed": None})
    assert (c.steps, c.lr, c.optimizer, c.seed) == (500, 0.001, "sgd", 0)
    assert TrainConfig.from_sources({"steps": 10.0}, {}).steps == 10
    d = c.to_dict()
    assert d["lr"] == 0.001 and TrainConfig(**d) == c


@pytest.mark.parametrize("bad", [{"steps": -1}, {"lr": 0}, {"lr": float("nan")}, {"optimizer": "rmsprop"},
                                 {"trainer": "magic"}, {"batch": 0}, {"momentum": 1.0}, {"n": 2.5},
                                 {"solver": "cg"}, {"standardize": "yes"}, {"backend": "tpu"}, {"noise": -0.1}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(SheafError) as e:
        TrainConfig.from_sources({}, bad)
    assert e.value.codes == ["E610"]


def test_config_unknown_key_hint():
    with pytest.raises(SheafError) as e:
        TrainConfig.from_sources({"stpes": 3}, {})
    assert e.value.codes == ["E610"] and "steps" in str(e.value)


# ----------------------------------------------------------------------------------------------
# optimisers


def test_optimizer_formulas():
    g = {"w": np.array([0.5, -1.0])}
    P = {"w": np.array([1.0, 2.0])}
    make_optimizer("sgd", 0.1).step(P, g)
    np.testing.assert_allclose(P["w"], [0.95, 2.1])
    P = {"w": np.array([1.0, 2.0])}
    opt = make_optimizer("momentum", 0.1, momentum=0.5)
    opt.step(P, g)
    opt.step(P, g)
    np.testing.assert_allclose(P["w"], [1.0 - 0.1 * 0.5 - 0.1 * 0.75, 2.0 + 0.1 * 1.0 + 0.1 * 1.5])
    P = {"w": np.array([1.0, 2.0])}
    opt = make_optimizer("adam", 0.1)
    m = v = np.zeros(2)
    w = P["w"].copy()
    for t in range(1, 4):
        gt = g["w"] * t
        opt.step(P, {"w": gt})
        m = 0.9 * m + 0.1 * gt
        v = 0.999 * v + 0.001 * gt ** 2
        w = w - 0.1 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    np.testing.assert_allclose(P["w"], w, rtol=1e-12)


def test_the_cosine_schedule_anneals_from_lr_to_zero():
    """η_t = η (1 + cos(π t / T)) / 2: η at t = 0, η/2 halfway, strictly decreasing, η_t + η_{T−t} = η; constant is η."""
    T, lr = 40, 0.03
    cos = np.array([scheduled_lr(lr, t, T, "cosine") for t in range(T + 1)])
    assert cos[0] == lr and abs(cos[T // 2] - lr / 2) < 1e-15 and abs(cos[T]) < 1e-15
    assert np.all(np.diff(cos) < 0)
    np.testing.assert_allclose(cos + cos[::-1], lr, rtol=1e-13)
    assert {scheduled_lr(lr, t, T, "constant") for t in range(T)} == {lr}
    with pytest.raises(SheafError) as e:
        scheduled_lr(lr, 0, T, "linear")
    assert e.value.codes == ["E610"]


def test_optimizer_state_round_trip():
    rng = np.random.default_rng(0)
    for name in ("sgd", "momentum", "adam"):
        P1 = {"w": rng.normal(size=3)}
        P2 = {"w": P1["w"].copy()}
        a = make_optimizer(name, 0.01)
        grads = [{"w": rng.normal(size=3)} for _ in range(6)]
        for gr in grads[:3]:
            a.step(P1, gr)
        b = make_optimizer(name, 0.01)
        b.load_state_dict(a.state_dict())
        P2["w"] = P1["w"].copy()
        for gr in grads[3:]:
            a.step(P1, gr)
            b.step(P2, gr)
        np.testing.assert_array_equal(P1["w"], P2["w"])


# ----------------------------------------------------------------------------------------------
# backprop baseline


@pytest.mark.parametrize("text", ["sheaf a\nnetwork m : 2 -> 5 -> 4 -> 1\n",
                                  "sheaf b\nnetwork m : 2 -> 5 -> 3 relu output softmax\n",
                                  "sheaf c\nnetwork m : 2 -> 5 -> 1 relu output sigmoid\n"])
def test_backprop_gradient_matches_finite_differences(text):
    G = from_model(load_text(text))
    net = feedforward(G)
    P = init_params(G, 1)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(9, 2))
    k = net.output.d_out
    Y = np.eye(k)[rng.integers(0, k, 9)] if k > 1 else rng.integers(0, 2, (9, 1)).astype(float)
    _, _, g = backprop_gradients(net, P, X, Y)
    L = lambda Q: float(backprop_gradients(net, Q, X, Y)[0].mean())  # noqa: E731
    h = 1e-6
    for name in P:
        D = rng.normal(size=P[name].shape)
        fd = (L({**P, name: P[name] + h * D}) - L({**P, name: P[name] - h * D})) / (2 * h)
        assert float((g[name] * D).sum()) == pytest.approx(fd, rel=1e-6, abs=1e-10)


def test_weak_output_coupling_recovers_backprop(parab, small_data):
    """R = E(c*) → w_o² · (the backprop loss) as w_o → 0: the local update's direction tends to
    backprop's (the equilibrium-propagation limit)."""
    from sheafdsl.solvers.chain import exact_equilibrium

    G = from_model(load_text(load_file("models/paraboloid_paper.sheaf").source.replace(
        "out  : z2 -> y   identity", "out  : z2 -> y   identity weight 0.001")))
    net = feedforward(G)
    P = init_params(G, 0)
    X, Y = small_data.X_train, small_data.Y_train
    eq = exact_equilibrium(net, P, X, Y)
    gs = local_gradients(net, P, eq)
    _, _, gb = backprop_gradients(net, P, X, Y)
    for k in P:
        np.testing.assert_allclose(gs[k], gb[k], rtol=1e-4, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# trainers


@pytest.mark.parametrize("trainer", ["sheaf", "backprop", "joint"])
def test_short_run_reduces_the_loss(parab, small_data, trainer):
    c = cfg(trainer=trainer, steps=150, lr=0.01, optimizer="adam", dt=0.05 if trainer == "joint" else 0.005)
    T = make_trainer(parab, c, small_data)
    before = T.evaluate()["train_loss"]
    for _ in range(150):
        out = T.step()
    after = T.evaluate()
    assert after["train_loss"] < 0.5 * before
    assert set(after) == {"train_loss", "train_mse", "test_loss", "test_mse"}
    assert T.step_count == 150
    if trainer == "sheaf":
        assert out["consistent_fraction"] == 1.0
    else:
        assert out["consistent_fraction"] is None


@pytest.mark.parametrize("text,data", [("sheaf c\nnetwork m : 2 -> 16 -> 1 relu output sigmoid\n", "circle"),
                                       ("sheaf b\nnetwork m : 2 -> 16 -> 4 relu output softmax\n", "blobs")])
def test_sheaf_training_classifies(text, data):
    G = from_model(load_text(text))
    d = load_dataset(data, n=120, n_test=60)
    T = make_trainer(G, cfg(trainer="sheaf", lr=0.03), d)
    acc0 = T.evaluate()["train_accuracy"]
    for _ in range(150):
        T.step()
    ev = T.evaluate()
    assert {"train_accuracy", "test_accuracy", "train_loss", "test_loss"} <= set(ev)
    assert ev["train_accuracy"] > max(acc0, 0.8)


def test_diffusion_solver_trains_like_exact(parab, small_data):
    """The accelerated heat equation and the active set reach the same equilibria (E is not convex: from a
    warm start after a few steps a flow with momentum may settle one example in another local minimum, so
    three steps are compared; every step's equilibria are consistent)."""
    a = make_trainer(parab, cfg(trainer="sheaf", solver="exact", steps=5), small_data)
    b = make_trainer(parab, cfg(trainer="sheaf", solver="diffusion", steps=5, tol=1e-12), small_data)
    for _ in range(3):
        a.step()
        rb = b.step()
        assert rb["consistent_fraction"] == 1.0
    for k in a.params:
        np.testing.assert_allclose(a.params[k], b.params[k], rtol=1e-5, atol=1e-7)


def test_same_seed_same_parameters(parab, small_data):
    runs = []
    for seed in (0, 0, 1):
        T = make_trainer(parab, cfg(trainer="sheaf", seed=seed, batch=16), small_data)
        for _ in range(12):
            T.step()
        runs.append(T.params)
    for k in runs[0]:
        np.testing.assert_array_equal(runs[0][k], runs[1][k])
    assert any(not np.array_equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_same_initialisation_across_trainers(parab, small_data):
    Ts = [make_trainer(parab, cfg(trainer=t, seed=3), small_data) for t in ("sheaf", "joint", "backprop")]
    assert isinstance(Ts[0], SheafTrainer) and isinstance(Ts[1], JointTrainer) and isinstance(Ts[2], BackpropTrainer)
    for k in Ts[0].params:
        np.testing.assert_array_equal(Ts[0].params[k], Ts[1].params[k])
        np.testing.assert_array_equal(Ts[0].params[k], Ts[2].params[k])


def test_minibatches_cover_each_epoch(parab, small_data):
    T = make_trainer(parab, cfg(batch=10, seed=5), small_data)
    seen = np.concatenate([T._batch_indices(t) for t in range(7)])  # ⌈64/10⌉ = 7 batches
    assert sorted(seen.tolist()) == list(range(64))
    assert not np.array_equal(T._batch_indices(0), T._batch_indices(7))  # a new permutation next epoch


@pytest.mark.parametrize("trainer,batch", [("sheaf", None), ("sheaf", 24), ("joint", None), ("joint", 24),
                                           ("backprop", 24)])
def test_state_dict_resumes_exactly(parab, small_data, trainer, batch):
    c = cfg(trainer=trainer, batch=batch, optimizer="adam", seed=2)
    A = make_trainer(parab, c, small_data)
    for _ in range(14):
        A.step()
    B = make_trainer(parab, c, small_data)
    for _ in range(7):
        B.step()
    state = {k: np.array(v) for k, v in B.state_dict().items()}  # as if saved to .npz and loaded
    C = make_trainer(parab, c, small_data)
    C.load_state_dict(state)
    assert C.step_count == 7
    for _ in range(7):
        C.step()
    for k in A.params:
        np.testing.assert_array_equal(A.params[k], C.params[k])


def test_state_from_another_trainer_is_refused(parab, small_data):
    s = make_trainer(parab, cfg(trainer="backprop"), small_data).state_dict()
    with pytest.raises(SheafError) as e:
        make_trainer(parab, cfg(trainer="sheaf"), small_data).load_state_dict(s)
    assert e.value.codes == ["E611"]


def test_divergence_names_step_and_place(parab, small_data):
    T = make_trainer(parab, cfg(trainer="backprop", optimizer="sgd", lr=1e6), small_data)
    with pytest.raises(DivergenceError) as e:
        for _ in range(50):
            T.step()
    err = e.value
    assert isinstance(err, SheafError) and err.codes == ["E620"]
    assert 1 <= err.step <= 50 and str(err.step) in str(err) and err.where in str(err)
    assert "aff" in err.where or "out" in err.where
    S = make_trainer(parab, cfg(trainer="sheaf", optimizer="sgd", lr=1e6), small_data)
    with pytest.raises(DivergenceError) as e:
        for _ in range(50):
            S.step()
    assert "edge" in e.value.where


def test_reluctance_is_exactly_l2_in_a_training_step(small_data):
    lam = 0.09
    base = "sheaf r\nnetwork m : 2 -> 6 -> 1\n"
    G0 = from_model(load_text(base))
    G1 = from_model(load_text(base + f"reluctance W1 W2 weight {np.sqrt(lam)}\n"))
    c = cfg(trainer="sheaf", optimizer="sgd", lr=0.1)
    T0, T1 = make_trainer(G0, c, small_data), make_trainer(G1, c, small_data)
    P0 = {k: v.copy() for k, v in T0.params.items()}
    T0.step()
    T1.step()
    for k in P0:
        extra = -0.1 * lam * P0[k] if k in ("W1", "W2") else 0.0
        np.testing.assert_allclose(T1.params[k], T0.params[k] + extra, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("init", ["zeros", "forward"])
def test_joint_step_is_the_papers_euler_flow(parab, small_data, init):
    c = cfg(trainer="joint", optimizer="sgd", dt=0.005, alpha=1.0, joint_init=init)
    T = make_trainer(parab, c, small_data)
    net = T.net
    P = {k: v.copy() for k, v in T.params.items()}
    X, Y = small_data.X_train, small_data.Y_train
    V = forward(net, P, X)
    if init == "zeros":
        V = [X] + [np.zeros_like(v) for v in V[1:]]
    for j, s in enumerate(T.stalks):
        np.testing.assert_array_equal(s, V[j + 1])
    grads_c, U, disc, _ = energy_gradient(net, P, V, Y)

    class Q:
        pass

    q = Q()
    q.V, q.U, q.out_disc = V, U, disc
    gs = local_gradients(net, P, q, "sum")
    T.step()
    for j in range(len(T.stalks)):
        np.testing.assert_allclose(T.stalks[j], V[j + 1] - 0.005 * grads_c[j], rtol=1e-13)
    beta = 1.0 / 64
    for k in P:
        np.testing.assert_allclose(T.params[k], P[k] - 0.005 * beta * gs[k], rtol=1e-13, atol=1e-15)


def test_diagnostics(parab, small_data):
    T = make_trainer(parab, cfg(trainer="sheaf"), small_data)
    d = T.edge_discords(small_data.X_test, small_data.Y_test)
    assert list(d) == ["aff1", "act1", "aff2", "out"]
    assert all(v >= 0 for v in d.values()) and d["out"] > 0
    lam4 = T.lambda_min_sample(small_data.X_test, k=4)
    lam16 = T.lambda_min_sample(small_data.X_test, k=16)
    assert 0 < lam16 <= lam4 < np.inf  # L_free ≻ 0 (unitriangular), minimum over more samples is lower


def test_trainers_that_need_a_chain_refuse_other_sheaves(small_data):
    G = from_model(load_text("sheaf s\nstalk x : 2\nstalk z1 : 2\nstalk z2 : 1\nstalk y : 1\nparam W : 2 x 2 init he\n"
                             "param V : 1 x 2 init he\nparam S : 1 x 2 init he\n"
                             "edge a : x -> z1 linear W\nedge b : z1 -> z2 linear V\nedge skip : x -> z2 linear S\n"
                             "edge o : z2 -> y identity\npin x = input\npin y = target\n"))
    for trainer in ("joint", "backprop"):
        with pytest.raises(SheafError) as e:
            make_trainer(G, cfg(trainer=trainer), small_data)
        assert e.value.codes == ["E612"] and trainer in str(e.value)
    with pytest.raises(SheafError):
        make_trainer(G, TrainConfig(trainer="nope"), small_data)
    with pytest.raises(SheafError) as e:
        SheafTrainer(G, cfg(), small_data)  # the fast path itself
    assert e.value.codes == ["E612"]


SKIP = ("sheaf s\nstalk x : 2\nstalk z1 : 6\nstalk a1 : 6\nstalk z2 : 1\nstalk y : 1\nparam W : 6 x 2 init he\n"
        "param b : 6 init normal(0.3)\nparam V : 1 x 6 init he\nparam S : 1 x 2 init he\n"
        "edge a : x -> z1 affine W b\nedge r : z1 -> a1 relu\nedge c : a1 -> z2 linear V\nedge skip : x -> z2 linear S\n"
        "edge o : z2 -> y identity weight 0.8\npin x = input\npin y = target\n")


def test_general_sheaves_train_with_the_edge_local_rule(small_data):
    from sheafdsl.training.trainers import GeneralSheafTrainer

    G = from_model(load_text(SKIP))
    T = make_trainer(G, cfg(trainer="sheaf", lr=0.02), small_data)
    assert isinstance(T, GeneralSheafTrainer)
    before = T.evaluate()["train_loss"]
    for _ in range(40):
        out = T.step()
    assert out["consistent_fraction"] == 1.0
    assert T.evaluate()["train_loss"] < before
    assert set(T.edge_discords(small_data.X_test, small_data.Y_test)) == {"a", "r", "c", "skip", "o"}
    assert T.lambda_min_sample(small_data.X_test, 3) > 0
    with pytest.raises(SheafError) as e:
        make_trainer(G, cfg(trainer="backprop"), small_data)
    assert e.value.codes == ["E612"]


def test_general_edge_rule_is_the_gradient_of_the_residual(small_data):
    from sheafdsl.lowering.operators import SheafOperators
    from sheafdsl.solvers import solve
    from sheafdsl.training.update import edge_gradients

    G = from_model(load_text(SKIP))
    P = init_params(G, 1)
    X, Y = small_data.X_train[:12], small_data.Y_train[:12]

    def R(Q):
        res = solve(G, Q, {"x": X, "y": Y}, sources=("input", "target", "value"))
        return float(res.energy.mean()), res

    _, res = R(P)
    disc = SheafOperators(G, P).discord(res.cochain)
    g = edge_gradients(G, P, res.cochain, disc)
    rng = np.random.default_rng(0)
    h = 1e-6
    for name in P:
        D = rng.normal(size=P[name].shape)
        Rp, rp = R({**P, name: P[name] + h * D})
        Rm, rm = R({**P, name: P[name] - h * D})
        assert float((g[name] * D).sum()) == pytest.approx((Rp - Rm) / (2 * h), rel=1e-5, abs=1e-9), name


def test_general_rule_equals_the_fast_path_on_a_network(parab, small_data):
    from sheafdsl.training.trainers import GeneralSheafTrainer

    c = cfg(trainer="sheaf", optimizer="sgd", lr=0.05)
    fast, gen = SheafTrainer(parab, c, small_data), GeneralSheafTrainer(parab, c, small_data)
    for _ in range(3):
        fast.step()
        gen.step()
    for k in fast.params:
        np.testing.assert_allclose(gen.params[k], fast.params[k], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("batch", [None, 48])
def test_a_batch_solved_in_blocks_is_the_whole_batch_solved_at_once(monkeypatch, batch):
    """A batch of more than ``block_rows`` examples is solved a block of rows at a time: the same
    parameters, losses and warm starts as one solve of the whole batch, to round-off (full batch and
    mini-batches; blocks of 7 rows, so a batch ends in a short block)."""
    import sheafdsl.lowering.backend as backend

    G = from_model(load_file("models/paraboloid.sheaf"))
    data = load_dataset("paraboloid", n=100, n_test=16)
    c = cfg(trainer="sheaf", batch=batch, seed=3)
    whole = make_trainer(G, c, data)
    hist_whole = [whole.step() for _ in range(6)]
    monkeypatch.setattr(backend, "CPU_BLOCK_ROWS", 7)
    blocks = make_trainer(G, c, data)
    hist_blocks = [blocks.step() for _ in range(6)]
    for a, b in zip(hist_whole, hist_blocks):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-13, abs=1e-15)
        assert b["consistent_fraction"] == pytest.approx(a["consistent_fraction"], abs=1e-12)
    for k in whole.params:
        np.testing.assert_allclose(blocks.params[k], whole.params[k], rtol=0, atol=1e-13, err_msg=k)
    sw, sb = whole.state_dict(), blocks.state_dict()
    assert sw.keys() == sb.keys()
    for k in sw:
        a, b = np.asarray(sw[k]), np.asarray(sb[k])
        if a.dtype.kind in "fiu":
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-12, err_msg=k)
        else:
            assert (a == b).all(), k
    assert any(k.startswith("warm.") for k in sw)
