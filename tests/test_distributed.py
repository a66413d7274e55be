"""Sharded runs on a Dask LocalCluster agree with one process (sheafdsl.distributed; docs/distributed.md).

One module-scoped cluster (2 processes, 1 thread each) serves every test; it is joined by address, so
``--scheduler`` is exercised too. The killed-worker tests run last: the nanny restarts the worker, and
the run must end with the one-process result.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

import sheafdsl as sd  # noqa: E402
from sheafdsl.errors import SheafError  # noqa: E402
from sheafdsl.training.data import dataset_for  # noqa: E402
from sheafdsl.training.fit import model_config  # noqa: E402
from sheafdsl.training.trainers import make_trainer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "models")


@pytest.fixture(scope="module")
def cluster():
    from sheafdsl.distributed import Cluster

    with Cluster(workers=2) as c:
        yield c


def _setup(model, **over):
    G = sd.load(os.path.join(MODELS, model)).graph
    cfg = model_config(G, over)
    return G, cfg, dataset_for(G, cfg)


def _run(tr, steps):
    for _ in range(steps):
        tr.step()
    return tr


def _agree(a, b, tol=1e-12):
    assert sorted(a.params) == sorted(b.params)
    for k in a.params:
        np.testing.assert_allclose(np.asarray(a.params[k]), np.asarray(b.params[k]), rtol=0, atol=tol, err_msg=k)
    ea, eb = a.evaluate(), b.evaluate()
    assert ea.keys() == eb.keys()
    for k in ea:
        assert ea[k] == pytest.approx(eb[k], rel=1e-12, abs=1e-14), k


@pytest.mark.parametrize("model, over, steps", [
    ("paraboloid.sheaf", {"batch": 64, "n": 300}, 12),           # the sheaf rule, mini-batches (warm starts per shard)
    ("blobs.sheaf", {"batch": None, "n": 200}, 5),              # softmax output: Newton inside the fast phase
    ("paraboloid.sheaf", {"trainer": "joint", "batch": 50, "n": 200}, 8),  # the paper's joint flow (a sum)
    ("paraboloid.sheaf", {"trainer": "backprop", "batch": 40, "n": 200}, 5),
    ("residual.sheaf", {"batch": 50, "n": 150}, 3),               # a skip edge: the general sheaf trainer
])
def test_sharded_trainer_equals_one_process(cluster, model, over, steps):
    from sheafdsl.distributed import sharded_trainer

    G, cfg, data = _setup(model, **over)
    one = _run(make_trainer(G, cfg, data), steps)
    tr = _run(sharded_trainer(cluster, G, cfg, data), steps)
    assert len(tr._ranges) == 2 and tr.rebuilds == 0
    _agree(tr, one)
    # the per-example state the workers keep is the one process's, row for row (a checkpoint's warm starts)
    s1, s2 = one.state_dict(), tr.state_dict()
    assert sorted(s1) == sorted(s2)
    for k in s1:
        if np.asarray(s1[k]).dtype.kind in "fi":
            np.testing.assert_allclose(np.asarray(s2[k], float), np.asarray(s1[k], float), rtol=0, atol=1e-11,
                                       err_msg=k)


def _worker_setup(dask_worker):
    import dask

    return {"profile": dask.config.get("distributed.worker.profile.enabled"),
            "tick": dask.config.get("distributed.admin.tick.interval"),
            "callbacks": sorted(dask_worker.periodic_callbacks)}


def test_the_local_cluster_runs_without_dasks_background_work_and_talks_to_workers_directly(cluster):
    """The LocalCluster's workers have no statistical profiler (it sampled the solving thread every 10 ms:
    before this release the setting was an environment variable, which the configuration a nanny hands its
    worker overrode), their loops tick once a second, not 50 times; the settings are the cluster's, not
    this process's; and the client calls the workers' actors directly, not through the scheduler's proxy."""
    import dask

    from sheafdsl.distributed.cluster import CLUSTER_CONFIG

    got = cluster.client.run(_worker_setup)
    assert len(got) == 2
    for info in got.values():
        assert info["profile"] is False and info["tick"] == CLUSTER_CONFIG["distributed.admin.tick.interval"]
        assert "profile" not in info["callbacks"] and "tick" in info["callbacks"]
    assert dask.config.get("distributed.worker.profile.enabled") is True  # this process keeps Dask's defaults
    assert dask.config.get("distributed.admin.tick.interval") == "20ms"
    assert cluster.client.direct_to_workers is True
    assert "stealing" not in cluster.local.scheduler.periodic_callbacks


def test_a_step_sends_theta_and_returns_the_sums_packed():
    """worker.pack / unpack: θ and the gradient sums travel as one float64 vector each, in the shard's
    parameter order; unpack gives views with the parameters' shapes and the same numbers bit for bit."""
    from sheafdsl.distributed import worker as W

    rng = np.random.default_rng(3)
    shapes = {"W1": (30, 2), "b1": (30,), "W2": (1, 30), "b2": (1,)}
    P = {k: rng.standard_normal(s) for k, s in shapes.items()}
    names = ["b2", "W1", "b1", "W2"]
    flat = W.pack(P, names)
    assert flat.shape == (sum(int(np.prod(s)) for s in shapes.values()),) and flat.dtype == np.float64
    np.testing.assert_array_equal(flat[:1], P["b2"])
    back = W.unpack(flat, names, shapes)
    assert list(back) == names
    for k in P:
        assert back[k].shape == shapes[k] and np.shares_memory(back[k], flat)
        np.testing.assert_array_equal(back[k], P[k])
    assert W.pack({}, []).shape == (0,)


def test_a_sharded_step_reports_where_its_time_goes(cluster):
    """The driver's clocks of a step: the slowest shard's solve (wall and CPU), all shards' CPU, and the
    latency each way of the messages of the shard that finished last, all measured and within the wait."""
    import time

    from sheafdsl.distributed import sharded_trainer

    G, cfg, data = _setup("paraboloid.sheaf", batch=None, n=400)
    tr = sharded_trainer(cluster, G, cfg, data)
    tr.step()
    tr.timing.update(dict.fromkeys(tr.timing, 0.0))
    t0 = time.perf_counter()
    _run(tr, 3)
    wall = time.perf_counter() - t0
    T = tr.timing
    assert 0 < T["compute_cpu"] <= T["shards_cpu"] and 0 < T["compute"]
    assert T["send"] >= 0 and T["receive"] >= 0
    assert T["send"] + T["receive"] < T["workers"] <= wall and T["compute"] < T["workers"]
    assert len(tr._channels) == 2 and all(c is not None for c in tr._channels.values())  # steps on the channels
    tr.close()
    assert not tr._channels


def _fail_in_the_next_step(key):
    """(Run on a worker.) The shard ``key``'s next step raises an error of its own."""
    from sheafdsl.distributed import worker

    def fail(*a, **k):
        raise ValueError("the shard's own error")

    worker.SHARDS[key].trainer._gradients = fail


def _slow_next_step(key, seconds):
    """(Run on a worker.) The shard ``key``'s next step takes ``seconds`` longer."""
    import time

    from sheafdsl.distributed import worker

    tr = worker.SHARDS[key].trainer
    inner = tr._gradients

    def slow(*a, **k):
        time.sleep(seconds)
        tr._gradients = inner
        return inner(*a, **k)

    tr._gradients = slow


def test_a_state_request_waits_for_the_step_in_flight(cluster):
    """A step runs in its channel's thread, a request for the shard's state in the actor's: the state waits for
    the step (an abandoned step may still be running when a checkpoint asks), and then answers for the step
    that step left (None for the step before: the driver rebuilds), never a half-updated state."""
    import pickle
    import time

    from sheafdsl.distributed import sharded_trainer
    from sheafdsl.distributed import worker as W

    G, cfg, data = _setup("paraboloid.sheaf", batch=None, n=200)
    tr = sharded_trainer(cluster, G, cfg, data)
    _run(tr, 2)
    addr, key, t = tr._where[0], tr._key(0), tr.step_count
    cluster.client.run(_slow_next_step, key, 0.5, workers=[addr])
    theta = W.pack({k: np.asarray(v) for k, v in tr.params.items()}, tr._names)
    conn = tr._channels[addr]
    conn.send_bytes(pickle.dumps((-5, (key, t, theta, None, 2.0)), protocol=5))
    time.sleep(0.2)  # the step is solving
    with cluster.client.as_current():
        assert tr._endpoints[addr].run(W.shard_state, key, t).result(timeout=60) is None
    n, ok, out = pickle.loads(conn.recv_bytes())
    assert (n, ok) == (-5, True) and out[4] == 100
    tr.close()


@pytest.mark.parametrize("channel", [True, False])
def test_steps_through_the_channel_or_through_dask_equal_one_process(cluster, channel):
    """A step goes on the workers' step channels, or through the Dask actors where the client may not reach
    the workers directly (``distributed.client.direct-to-workers: false``): the same result either way. A
    reply to an abandoned request on a channel is skipped; a step's own error is raised on the driver."""
    import pickle

    import dask

    from sheafdsl.distributed import sharded_trainer
    from sheafdsl.distributed import worker as W

    G, cfg, data = _setup("paraboloid.sheaf", batch=64, n=300)
    one = _run(make_trainer(G, cfg, data), 6)
    with dask.config.set({"distributed.client.direct-to-workers": None if channel else False}):
        tr = sharded_trainer(cluster, G, cfg, data)
        _run(tr, 3)
        assert len(tr._channels) == 2 and all((c is not None) == channel for c in tr._channels.values())
        if channel:  # a request the driver will not wait for: its reply must not answer the next step
            conn = tr._channels[tr._where[0]]
            theta = W.pack({k: np.asarray(v) for k, v in tr.params.items()}, tr._names)
            conn.send_bytes(pickle.dumps((-1, (tr._key(0), 10**6, theta, None, 1.0)), protocol=5))  # (answered None)
        _run(tr, 3)
        assert tr.rebuilds == 0
        _agree(tr, one)
        cluster.client.run(_fail_in_the_next_step, tr._key(1), workers=[tr._where[1]])
        with pytest.raises(ValueError, match="the shard's own error"):
            tr.step()
    tr.close()


def test_a_shard_outside_the_batch_keeps_the_state_one_process_would(cluster):
    """A step whose batch lies in one shard only: the other shard's warm starts still begin at the first step's
    forward pass, as one process's do (so a later step starts from the same point)."""
    from sheafdsl.distributed import sharded_trainer

    G, cfg, data = _setup("paraboloid.sheaf", batch=20, n=200)
    one, tr = make_trainer(G, cfg, data), sharded_trainer(cluster, G, cfg, data)
    idx = np.arange(20)  # rows 0..19: all in shard 0
    for t in (one, tr):
        t._batch_indices = lambda step, idx=idx: idx
    _run(one, 2), _run(tr, 2)
    _agree(tr, one)
    s1, s2 = one.state_dict(), tr.state_dict()
    for k in s1:
        if k.startswith("warm."):  # shard 1 (rows 100..199) never solved: exactly the first step's forward pass
            np.testing.assert_array_equal(np.asarray(s2[k])[100:], np.asarray(s1[k])[100:], err_msg=k)
            np.testing.assert_allclose(np.asarray(s2[k], float), np.asarray(s1[k], float), rtol=0, atol=1e-12)


def _cli(*args):
    from click.testing import CliRunner

    from sheafdsl.cli.main import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=True)


def _train_cli(tmp_path, name, *extra):
    out = tmp_path / name
    r = _cli("train", os.path.join(MODELS, "paraboloid.sheaf"), "--steps", "16", "--batch", "50", "--n", "200",
             "--log-every", "8", "--no-baseline", "--no-plots", "--json", "--out", str(out), *extra)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout), out


def test_sheaf_train_scheduler_equals_one_process_and_resumes(cluster, tmp_path):
    """`sheaf train --scheduler ADDRESS` (a running cluster): the summary and the checkpoint are the one
    process's; a sharded run resumed from its checkpoint continues exactly."""
    addr = cluster.client.scheduler.address
    one, d1 = _train_cli(tmp_path, "one")
    many, d2 = _train_cli(tmp_path, "many", "--scheduler", addr)
    for k in ("train_loss", "test_loss", "test_mse", "consistent_fraction"):
        assert many[k] == pytest.approx(one[k], rel=1e-12), k
    c1, c2 = np.load(d1 / "checkpoint.npz"), np.load(d2 / "checkpoint.npz")
    for k in c1.files:
        if c1[k].dtype.kind == "f":
            np.testing.assert_allclose(c2[k], c1[k], rtol=0, atol=1e-12, err_msg=k)
    half, d3 = _train_cli(tmp_path, "half", "--scheduler", addr, "--steps", "8")
    again, _ = _train_cli(tmp_path, "half", "--scheduler", addr, "--resume")
    for k in ("train_loss", "test_loss"):
        assert again[k] == pytest.approx(one[k], rel=1e-12), k


def test_cluster_flags_are_checked(tmp_path, monkeypatch):
    from sheafdsl.distributed import cluster as C

    monkeypatch.setattr(C, "CONNECT_TIMEOUT", 1.0)
    model = os.path.join(MODELS, "paraboloid.sheaf")
    r = _cli("train", model, "--workers", "2", "--scheduler", "tcp://127.0.0.1:1")
    assert r.exit_code == 2 and "not both" in r.output
    assert _cli("train", model, "--workers", "0").exit_code == 2
    r = _cli("train", model, "--scheduler", "tcp://127.0.0.1:9", "--steps", "1", "--out", str(tmp_path / "r"))
    assert r.exit_code == 1 and "E702" in r.output and "cannot reach" in r.output, r.output
    assert not (tmp_path / "r").exists()


def test_without_dask_the_flags_say_what_to_install(monkeypatch):
    from sheafdsl.distributed import cluster as C

    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the extra were not installed
    with pytest.raises(SheafError) as e:
        C.Cluster(workers=2)
    d = e.value.diagnostics[0]
    assert d.code == "E700" and "sheafdsl[distributed]" in d.hint


def test_the_core_never_imports_dask():
    """Every command without --workers/--scheduler, and every module outside sheafdsl.distributed, runs
    without Dask: nothing imports it."""
    code = ("import sys, pkgutil, importlib, sheafdsl\n"
            "mods = [m.name for m in pkgutil.walk_packages(sheafdsl.__path__, 'sheafdsl.')\n"
            "        if not m.name.startswith('sheafdsl.distributed') and not m.name.endswith('__main__')]\n"
            "for m in mods: importlib.import_module(m)\n"
            "from click.testing import CliRunner\n"
            "from sheafdsl.cli.main import cli\n"
            f"r = CliRunner().invoke(cli, ['infer', {os.path.join(MODELS, 'paraboloid.sheaf')!r}, '--input', '[0.5, 1]'])\n"
            "assert r.exit_code == 0, r.output\n"
            "print(len(mods), [m for m in ('dask', 'distributed') if m in sys.modules])")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr
    n, loaded = p.stdout.split(" ", 1)
    assert int(n) > 40 and loaded.strip() == "[]"


# ----------------------------------------------------------------------------------------------
# batched solves and admm-local across workers


def test_sharded_inference_and_spectrum_equal_one_process(cluster):
    """`sheaf infer --workers`: every stalk of a batch (a chain's forward pass and a general sheaf's active-set
    solves) as one process computes it, to round-off; `sheaf spectrum --samples --workers`: the same report."""
    from sheafdsl.api import harmonic_extension, spectrum_report
    from sheafdsl.lowering import init_params

    rng = np.random.default_rng(3)
    for model in ("paraboloid.sheaf", "residual.sheaf"):
        G = sd.load(os.path.join(MODELS, model)).graph
        P = init_params(G, 0)
        X = rng.uniform(-2, 2, (301, 2))
        one = harmonic_extension(G, P, {"x": X})
        many = harmonic_extension(G, P, {"x": X}, cluster=cluster)
        assert many.result.batch == 301 and len(many.result.parts) == 2
        for v in one.stalks:
            np.testing.assert_allclose(many.stalks[v], one.stalks[v], rtol=1e-12, atol=1e-14, err_msg=v)
        np.testing.assert_array_equal(many.converged, one.converged)
        np.testing.assert_array_equal(many.consistent, one.consistent)
        r1 = spectrum_report(G, P, samples=24, seed=5)
        r2 = spectrum_report(G, P, samples=24, seed=5, cluster=cluster)
        assert r2.to_json() == r1.to_json()


def _consensus(n_agents: int, seed: int = 0, batch: int | None = None):
    """A ring-with-chords consensus problem: 3-dim agents, random 2 x 3 maps, half the edges hard, a
    quadratic and a box on every agent (bench_admm.py's kind of problem, small)."""
    from sheafdsl.ir import Constant, add_edge, add_objective, add_param, add_stalk, new_sheaf

    rng = np.random.default_rng(seed)
    G = new_sheaf(f"ring{n_agents}")
    params = {}
    for i in range(n_agents):
        add_stalk(G, f"v{i}", 3)
        A = rng.normal(size=(3, 3))
        add_param(G, f"q{i}", (3,), "zeros")
        params[f"q{i}"] = rng.normal(size=(batch, 3) if batch else 3)
        add_objective(G, f"v{i}", "quadratic", Q=A @ A.T / 3 + 0.1 * np.eye(3), q=f"q{i}")
        add_objective(G, f"v{i}", "box", lo=-0.5, hi=0.5)
    pairs = [(i, (i + 1) % n_agents) for i in range(n_agents)] + [(i, (i + 5) % n_agents) for i in range(0, n_agents, 3)]
    for k, (a, b) in enumerate(pairs):
        add_edge(G, f"e{k}", f"v{a}", f"v{b}", src_map=Constant(rng.normal(size=(2, 3))),
                 dst_map=Constant(rng.normal(size=(2, 3))), hard=k % 2 == 0)
    return G, params


def test_admm_local_across_workers_equals_one_process(cluster):
    """`--solver admm-local --workers 2`: the agents partitioned (Kernighan–Lin), only cut edges' ends
    travelling, worker to worker; the same iterations and minimiser as one process (to the round-off of the
    stopping test's sums), and far fewer values sent than the problem holds."""
    from sheafdsl.distributed.admm import partition, partitioned
    from sheafdsl.solvers import solve

    # one instance: a batch's instances stop one by one, and one process then compacts to the unstopped ones
    # (whose ρ balancing goes on without the stopped), which the parts do not mirror (docs/distributed.md)
    G, params = _consensus(24, batch=1)
    owner = partition(G, 2)
    assert sorted(set(owner.values())) == [0, 1] and abs(sum(owner.values()) - 12) <= 1
    made = []

    def local(P, rho, warm):
        made.append(partitioned(cluster)(P, rho, warm))
        return made[-1]

    one = solve(G, params, method="admm-local", rtol=1e-6)
    many = solve(G, params, method="admm-local", rtol=1e-6, local=local)
    assert many.iterations == one.iterations and bool(np.all(many.converged))
    np.testing.assert_allclose(many.cochain, one.cochain, rtol=0, atol=1e-10)
    np.testing.assert_allclose(many.objective, one.objective, rtol=1e-10)
    a = made[0]
    cut = a.cut_edges
    assert 0 < cut < 14 and a._per_iteration == 2 * 2 * cut  # each cut edge: its two ends' e, 2 rows each
    assert a.messages == a._per_iteration * one.iterations


def test_sheaf_infer_admm_local_workers_cli(cluster, tmp_path):
    """The contract command: `sheaf infer FILE --solver admm-local --workers N` (here by --scheduler) prints the
    one-process minimiser; --workers with --input on `sheaf spectrum` is E703."""
    model = os.path.join(MODELS, "formation.sheaf")
    addr = cluster.client.scheduler.address
    one = _cli("infer", model, "--solver", "admm-local", "--json")
    many = _cli("infer", model, "--solver", "admm-local", "--scheduler", addr, "--json")
    assert one.exit_code == 0 and many.exit_code == 0, many.output
    a, b = json.loads(one.stdout), json.loads(many.stdout)
    assert b["iterations"] == a["iterations"]
    for v in a["stalks"]:
        np.testing.assert_allclose(b["stalks"][v], a["stalks"][v], atol=1e-9)
    r = _cli("spectrum", os.path.join(MODELS, "paraboloid.sheaf"), "--input", "[0.5, 1]", "--scheduler", addr)
    assert r.exit_code == 1 and "E703" in r.output


def test_the_replay_log_keeps_each_steps_parameters(cluster):
    """A lost shard replays the steps since the last synchronisation with the θ of each step: the log holds
    copies, not the driver's arrays, which the optimiser then updates in place."""
    from sheafdsl.distributed import sharded_trainer

    G, cfg, data = _setup("paraboloid.sheaf", batch=64, n=300)
    tr = sharded_trainer(cluster, G, cfg, data)
    thetas = []
    for _ in range(3):
        thetas.append({k: np.array(v) for k, v in tr.params.items()})
        tr.step()
    assert [s for s, *_ in tr._log] == [0, 1, 2]
    for (_, P, _, _), want in zip(tr._log, thetas):
        for k in want:
            np.testing.assert_array_equal(P[k], want[k], err_msg=k)
    tr.close()


def test_a_killed_worker_is_recovered_with_the_same_result(cluster):
    """SIGKILL the worker holding shard 0 mid-run: its shard is rebuilt on a live worker from the last
    synchronised state and replays its steps since; the run ends with the one-process parameters."""
    from sheafdsl.distributed import sharded_trainer

    G, cfg, data = _setup("paraboloid.sheaf", batch=64, n=300)
    one = _run(make_trainer(G, cfg, data), 16)
    tr = sharded_trainer(cluster, G, cfg, data)
    _run(tr, 5)
    tr.state_dict()  # a synchronisation (as a checkpoint takes): the base is step 5
    _run(tr, 4)      # steps 6..9 are only in the workers' memory (and the driver's log)
    dead = tr._where[0]
    pid = cluster.client.run(os.getpid)[dead]
    os.kill(pid, signal.SIGKILL)
    _run(tr, 7)
    assert tr.rebuilds >= 1 and dead not in tr._where
    _agree(tr, one)
    # the rebuilt shard replayed steps 6..9 with their own θ: its warm starts are the one-process ones
    # (the parameters alone can agree while a replay from the wrong θ leaves other equilibria behind)
    mine, ref = tr._extra_state(), one._extra_state()
    assert mine.keys() == ref.keys() and mine
    for k in ref:
        np.testing.assert_allclose(mine[k], np.asarray(ref[k]), rtol=0, atol=1e-12, err_msg=k)
    cluster.client.wait_for_workers(2, timeout=60)  # the nanny restarts it



def _die_in_the_next_step(key):
    """(Run on a worker.) The shard ``key`` kills its own process when its next step starts solving."""
    from sheafdsl.distributed import worker

    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)

    worker.SHARDS[key].trainer._gradients = die


def test_a_worker_that_dies_inside_a_step_is_recovered_with_the_same_result(cluster):
    """The worker holding shard 1 dies while it solves a step (the call to it is in flight, not between
    steps): the step waits, rebuilds the shard on a live worker, and the run ends as one process's."""
    from sheafdsl.distributed import sharded_trainer

    cluster.client.wait_for_workers(2, timeout=60)
    G, cfg, data = _setup("paraboloid.sheaf", batch=64, n=300)
    one = _run(make_trainer(G, cfg, data), 10)
    tr = sharded_trainer(cluster, G, cfg, data)
    _run(tr, 4)
    dead = tr._where[1]
    cluster.client.run(_die_in_the_next_step, tr._key(1), workers=[dead])
    _run(tr, 6)
    assert tr.rebuilds >= 1 and dead not in tr._where
    _agree(tr, one)
    cluster.client.wait_for_workers(2, timeout=60)

def test_the_joint_flows_stalk_restarts_are_refused_when_sharded(cluster):
    """E705: joint_reinit restarts stalks that live on the workers; a sharded run refuses it up front."""
    from sheafdsl.distributed import sharded_trainer

    G, cfg, data = _setup("paraboloid.sheaf", trainer="joint", batch=50, n=200, joint_reinit=4)
    with pytest.raises(SheafError) as e:
        sharded_trainer(cluster, G, cfg, data)
    assert e.value.codes == ["E705"]
