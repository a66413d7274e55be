"""The joint trainer's fused step (:mod:`sheafdsl.training.joint`) against the reference joint Euler flow
written from the chain's energy gradient and the summed local update, step by step; its options
(stalk starts, epochs) and the flags it refuses."""

from __future__ import annotations

import numpy as np
import pytest

from sheafdsl.frontend import load_file, load_text
from sheafdsl.ir import from_model
from sheafdsl.lowering.chain import energy_gradient, forward
from sheafdsl.training.config import TrainConfig
from sheafdsl.training.data import load_dataset
from sheafdsl.training.trainers import make_trainer
from sheafdsl.training.update import local_gradients, parameter_sheaf_gradients

TIED = """sheaf tied
param W1 : 3 x 2 init he
param b1 : 3 init zeros
param W : 3 x 3 init he
param b2 : 3 init zeros
param b3 : 3 init zeros
param Wo : 1 x 3 init he
stalk x : 2
stalk z1 : 3
stalk a1 : 3
stalk z2 : 3
stalk a2 : 3
stalk z3 : 3
stalk y : 1
edge e1 : x -> z1 affine W1 b1
edge r1 : z1 -> a1 relu
edge e2 : a1 -> z2 affine W b2 weight 0.7
edge r2 : z2 -> a2 relu
edge e3 : a2 -> z3 affine W b3
edge out : z3 -> y affine Wo
pin x = input
pin y = target
reluctance W1 weight 0.3
"""


def reference_flow(trainer, steps):
    """The joint flow from energy_gradient and local_gradients(sum), as the trainer's state evolves."""
    net, G, xp, c = trainer.net, trainer.G, trainer.xp, trainer.config
    P = {k: np.array(v, copy=True) for k, v in trainer.params.items()}
    stalks = [np.array(s, copy=True) for s in trainer.stalks]
    for t in range(steps):
        idx = trainer._batch_indices(t)
        X, Y = (trainer.Xtr, trainer.Ytr) if idx is None else (trainer.Xtr[idx], trainer.Ytr[idx])
        V = [X] + ([s for s in stalks] if idx is None else [s[idx] for s in stalks])
        grads_c, U, disc, _ = energy_gradient(net, P, V, Y, xp)

        class Eq:
            pass

        eq = Eq()
        eq.V, eq.U, eq.out_disc = V, U, disc
        g = {k: trainer.beta * v for k, v in local_gradients(net, P, eq, "sum", xp).items()}
        for k, h in parameter_sheaf_gradients(G, P, xp).items():
            g[k] = g[k] + h
        for k in P:
            P[k] -= c.dt * g[k]
        for j in range(len(stalks)):
            new = V[j + 1] - c.dt * c.alpha * grads_c[j]
            if idx is None:
                stalks[j] = new
            else:
                stalks[j][idx] = new
    return P, stalks


CASES = {
    "paper": ("models/paraboloid_paper.sheaf", "paraboloid", {}),
    "deep-batched": ("sheaf d\nnetwork m : 2 -> 8 -> 6 -> 3 relu output identity weight 0.5\n", "paraboloid3",
                     {"batch": 16}),
    "sigmoid": ("sheaf c\nnetwork m : 2 -> 7 -> 1 relu output sigmoid\n", "circle", {"joint_init": "forward"}),
    "softmax-tanh": ("sheaf b\nnetwork m : 2 -> 6 tanh -> 5 relu -> 4 output softmax weight 2\n", "blobs",
                     {"joint_init": "random", "alpha": 0.7}),
    "tied-reluctance": (TIED, "paraboloid", {"batch": 20, "joint_init": "random"}),
}


def _setup(case, steps):
    src, data, kw = CASES[case]
    G = from_model(load_file(src) if src.endswith(".sheaf") else load_text(src))
    if data == "paraboloid3":  # three outputs: the paraboloid, its negative and a constant
        d = load_dataset("paraboloid", n=48, n_test=8)
        d.Y_train = np.hstack([d.Y_train, -d.Y_train, np.ones_like(d.Y_train)])
        d.Y_test = np.hstack([d.Y_test, -d.Y_test, np.ones_like(d.Y_test)])
    else:
        d = load_dataset(data, n=48, n_test=8)
    c = TrainConfig.from_sources({}, dict(trainer="joint", dt=0.02, steps=steps, seed=1, **kw))
    return make_trainer(G, c, d)


@pytest.mark.parametrize("case", list(CASES))
def test_fused_step_is_the_reference_flow(case):
    """Parameters and stalks after 60 steps agree with the reference flow to round-off (1e-13 relative:
    the same products, summed by BLAS in its own order)."""
    T = _setup(case, 60)
    P, stalks = reference_flow(T, 60)
    for _ in range(60):
        T.step()
    for k in P:
        np.testing.assert_allclose(T.params[k], P[k], rtol=1e-13, atol=1e-14)
    for s, r in zip(T.stalks, stalks):
        np.testing.assert_allclose(s, r, rtol=1e-13, atol=1e-14)


# ----------------------------------------------------------------------------------------------
# where the stalks start, and the epochs


def test_stalk_starts():
    from sheafdsl.training.joint import initial_stalks

    T = _setup("deep-batched", 1)
    net, P, X = T.net, T.params, T.Xtr
    fw = forward(net, P, X)[1:]
    z = initial_stalks(net, P, X, "zeros", 0, np)
    f = initial_stalks(net, P, X, "forward", 0, np)
    r0, r0b, r1 = (initial_stalks(net, P, X, "random", s, np) for s in (0, 0, 1))
    for j in range(len(fw)):
        assert not z[j].any()
        np.testing.assert_array_equal(f[j], fw[j])
        np.testing.assert_array_equal(r0[j], r0b[j])  # seeded
        assert not np.array_equal(r0[j], r1[j])
    allr = np.concatenate([r.ravel() for r in r0])
    assert abs(allr.mean()) < 0.2 and 0.8 < allr.std() < 1.2  # N(0, 1) entries


@pytest.mark.parametrize("case", ["paper", "deep-batched"])
def test_a_forward_start_on_its_own_outputs_is_a_fixed_point(case):
    """Stalks at the forward pass and targets equal to the network's own outputs: every discord is exactly
    zero (the fused step computes A v + b as the forward pass does), so nothing moves, bit for bit."""
    T = _setup(case, 1)
    T.stalks = [s.copy() for s in forward(T.net, T.params, T.Xtr)[1:]]
    T.Ytr = T._predict(T.Xtr)
    P0 = {k: v.copy() for k, v in T.params.items()}
    S0 = [s.copy() for s in T.stalks]
    for _ in range(3):
        T.step()
    for k in P0:
        np.testing.assert_array_equal(T.params[k], P0[k])
    for s, s0 in zip(T.stalks, S0):
        np.testing.assert_array_equal(s, s0)


def test_reinit_every_k_steps_restarts_the_stalks_at_the_forward_pass():
    K = 5
    A = _setup("sigmoid", 2 * K + 1)
    A.config.joint_reinit = K
    B = _setup("sigmoid", 2 * K + 1)
    for t in range(2 * K + 1):
        if t in (K, 2 * K):  # by hand: the forward pass of the current parameters
            B.stalks = [s.copy() for s in forward(B.net, B.params, B.Xtr)[1:]]
        A.step()
        B.step()
    for k in A.params:
        np.testing.assert_array_equal(A.params[k], B.params[k])
    C = _setup("sigmoid", 2 * K + 1)  # without the restarts the trajectory differs
    for _ in range(2 * K + 1):
        C.step()
    assert any(not np.array_equal(A.params[k], C.params[k]) for k in A.params)


def test_model_file_flag_and_api_set_the_stalk_start(tmp_path):
    import sheafdsl as sd
    from sheafdsl.training.config import TrainConfig

    sh = sd.loads("sheaf j\nnetwork m : 2 -> 5 -> 1\ntrain trainer=joint joint_init=forward joint_reinit=3 steps=4 "
                  "n=20 n_test=5\n")
    cfg = TrainConfig.from_sources(sh.graph.graph["train"])
    assert (cfg.joint_init, cfg.joint_reinit) == ("forward", 3)
    fit = sd.train(sh, joint_init="random")
    assert fit.config.joint_init == "random" and fit.config.joint_reinit == 3


# ----------------------------------------------------------------------------------------------
# the options the joint trainer would not follow are refused (E670), never silently ignored


def _cli(*args):
    from click.testing import CliRunner

    from sheafdsl.cli.main import cli

    res = CliRunner().invoke(cli, list(args))
    assert "Traceback" not in res.output
    return res


@pytest.mark.parametrize("flags, named", [(["--trainer", "joint", "--lr", "0.1"], "--lr"),
                                          (["--trainer", "joint", "--optimizer", "adam"], "--optimizer adam"),
                                          (["--trainer", "joint", "--optimizer", "momentum", "--lr", "1"], "--lr"),
                                          (["--stalk-init", "random"], "--stalk-init"),
                                          (["--trainer", "backprop", "--stalk-reinit", "10"], "--stalk-reinit"),
                                          (["--lr-schedule", "cosine"], "lr_schedule=cosine")])
def test_unfollowed_flags_are_refused(tmp_path, flags, named):
    out = tmp_path / "r"
    res = _cli("train", "models/paraboloid_paper.sheaf", "--steps", "2", "--out", str(out), *flags)
    assert res.exit_code == 1 and "E670" in res.output and named in res.output, res.output
    assert not out.exists()  # refused before the run directory is made


def test_joint_flags_that_it_follows_run(tmp_path):
    out = tmp_path / "ok"
    res = _cli("train", "models/paraboloid_paper.sheaf", "--trainer", "joint", "--optimizer", "sgd", "--stalk-init",
               "random", "--stalk-reinit", "2", "--steps", "5", "--out", str(out), "--no-plots", "--no-baseline")
    assert res.exit_code == 0, res.output
    assert "forward Euler dt=0.005" in res.output and "stalks from random" in res.output


def test_the_api_refuses_the_same(tmp_path):
    import sheafdsl as sd
    from sheafdsl.errors import SheafError

    with pytest.raises(SheafError) as e:
        sd.train("models/paraboloid_paper.sheaf", trainer="joint", optimizer="adam", steps=2)
    assert e.value.codes == ["E670"]
    with pytest.raises(SheafError) as e:  # the model's own statement names the trainer and an optimiser
        sd.train(sd.loads("sheaf j\nnetwork m : 2 -> 4 -> 1\ntrain trainer=joint optimizer=adam steps=2\n"))
    assert e.value.codes == ["E670"]
    with pytest.raises(SheafError) as e:  # only a learned model's trainers follow a learning-rate schedule
        sd.train(sd.loads("sheaf s\nnetwork m : 2 -> 4 -> 1\ntrain lr_schedule=cosine steps=2\n"))
    assert e.value.codes == ["E670"]
    # the model's optimizer and lr are the baseline's when the trainer comes from elsewhere
    fit = sd.train("models/paraboloid_paper.sheaf", trainer="joint", steps=3, baseline=True)
    assert fit.config.optimizer == "adam" and fit.baseline is not None
