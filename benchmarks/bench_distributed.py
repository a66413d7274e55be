"""Throughput against workers (1, 2) for the three sharded paths of issue 14, broken into compute,
serialisation and communication per step, and the scaling model of docs/distributed.md.

1. ``sheaf infer`` at batch 10⁶ (paraboloid net, input pinned): examples per second, one process against
   :func:`sheafdsl.distributed.batch.sharded_inference` on 1 and 2 workers;
2. a sheaf-rule training step at batch 10⁵ (paraboloid net, 10⁵ training examples, full batch): steps
   per second, :class:`~sheafdsl.training.trainers.SheafTrainer` against the sharded trainer on 1 and 2
   workers (the target: ≥ 1.6× with two workers);
3. ``admm-local`` on 10⁴ agents (the random geometric problem of bench_admm.py): iterations per second
   for a fixed number of iterations (it does not converge in a benchmark's time), one process against
   the partitioned iteration on 2 workers.

The compared runs alternate (single, 1 worker, 2 workers, single, ...) ``--repeats`` times; medians are
reported. Per step: **compute** is the time inside the workers' solves (their own clocks; for the
partitioned ADMM, the parts' arithmetic), **serialisation** the time to pickle and unpickle what a step
sends and receives (measured on the driver on the same objects), **communication** the rest of the
step's wall time beyond compute and serialisation (latency, scheduling, transfers, waiting for the
slowest shard). One BLAS thread everywhere; the load average is printed with the results.

The training step also reports **CPU seconds**, which a shared machine disturbs less than wall time: one
process's per step (its thread); per sharded step the slowest shard's solve on its own thread
(``compute_cpu``; ``compute_cpu_vs_single``: a shard's CPU per example against one process's), the
shards' imbalance (slowest over mean), the driver's main thread and whole process (which holds the
LocalCluster's scheduler and nannies), and the workers' processes (their solves and their event loops;
the nanosecond counters of /proc/PID/task/*/schedstat); and the latency each way of the messages of the
shard that finished last (``send``, ``receive``).

Usage: ``python benchmarks/bench_distributed.py [--repeats 3] [--only infer,train,admm] [--json-out FILE]
[--plot docs/distributed_scaling.png]``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

#: the scaling model's network: one stated latency and bandwidth (a 10 Gb/s data-centre link)
LATENCY_S = 200e-6
BANDWIDTH_BPS = 1.25e9


def _ser(obj) -> tuple[float, int]:
    """Seconds to pickle and unpickle ``obj`` (protocol 5, as Dask's), and its size in bytes."""
    t = time.perf_counter()
    b = pickle.dumps(obj, protocol=5)
    pickle.loads(b)
    return time.perf_counter() - t, len(b)


def _median(xs):
    return float(np.median(np.asarray(xs, dtype=float)))


# ----------------------------------------------------------------------------------------------
# 1. infer


def _timed_piece(boundary, G, params):
    from sheafdsl.api import harmonic_extension

    t = time.perf_counter()
    out = harmonic_extension(G, params, boundary, batch=True)
    out.result = None
    return time.perf_counter() - t, out


def bench_infer(clusters, B: int, repeats: int) -> dict:
    import sheafdsl as sd
    from sheafdsl.api import harmonic_extension
    from sheafdsl.distributed.batch import sharded_inference
    from sheafdsl.distributed.trainer import split_rows
    from sheafdsl.lowering import init_params

    G = sd.load(ROOT / "models" / "paraboloid.sheaf").graph
    P = init_params(G, 0)
    X = np.random.default_rng(0).uniform(-2, 2, (B, 2))
    rows: dict = {"single": [], **{f"{w} workers": [] for w in clusters}}
    parts: dict = {w: [] for w in clusters}
    for c in clusters.values():  # the workers import sheafdsl once (seconds): paid by a command, not per batch
        sharded_inference(c, G, P, {"x": X[:100]}, batch=True, solver="exact")
    for _ in range(repeats):
        t = time.perf_counter()
        ref = harmonic_extension(G, P, {"x": X})
        rows["single"].append(time.perf_counter() - t)
        for w, c in clusters.items():
            t = time.perf_counter()
            out = sharded_inference(c, G, P, {"x": X}, batch=True, solver="exact")
            wall = time.perf_counter() - t
            rows[f"{w} workers"].append(wall)
            assert all(np.allclose(out.stalks[v], ref.stalks[v], rtol=1e-13, atol=1e-15) for v in ref.stalks)
            # the breakdown: the workers' own solve times, and the pickling of what travels
            pieces = [{"x": X[a:b]} for a, b in split_rows(B, w)]
            futs = [c.client.submit(_timed_piece, p, G, P, pure=False) for p in pieces]
            res = c.client.gather(futs)
            compute = max(r[0] for r in res)
            ser = sum(_ser(p)[0] + _ser(r[1])[0] for p, r in zip(pieces, res))
            size = sum(_ser(p)[1] + _ser(r[1])[1] for p, r in zip(pieces, res))
            parts[w].append((wall, compute, ser, size))
    out = {"batch": B, "seconds": {k: _median(v) for k, v in rows.items()}}
    out["throughput"] = {k: B / v for k, v in out["seconds"].items()}
    out["breakdown"] = {f"{w} workers": {"compute": _median([p[1] for p in v]), "serialisation": _median([p[2] for p in v]),
                                         "communication": _median([max(0.0, p[0] - p[1] - p[2]) for p in v]),
                                         "bytes": int(v[0][3])} for w, v in parts.items()}
    out["single_compute"] = out["seconds"]["single"]
    return out


# ----------------------------------------------------------------------------------------------
# 2. a sheaf-rule step


def _cpu(pids) -> float:
    """CPU seconds used so far by the processes ``pids``, all their threads: the scheduler's nanosecond
    counters (/proc/PID/task/TID/schedstat) where Linux has them, else psutil's (10 ms ticks)."""
    total = 0.0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
            for tid in tasks:
                try:
                    with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                        total += int(f.read().split()[0]) * 1e-9
                except (OSError, ValueError, IndexError):  # a thread that just ended
                    pass
        except OSError:
            try:
                import psutil

                t = psutil.Process(pid).cpu_times()
                total += t.user + t.system
            except Exception:  # a worker that is gone counts nothing more
                pass
    return total


def bench_train(clusters, n: int, steps: int, repeats: int) -> dict:
    """Seconds and CPU seconds per step. Per sharded step: the wall time; the slowest shard's solve (its wall
    and its CPU time, the worker's own clocks); the latency of the messages each way (driver → worker until
    the last shard starts, the last shard's end → the driver, one clock on one machine); the driver's CPU
    (its main thread; its whole process, with the LocalCluster's scheduler and nannies in its event loop);
    and the workers' processes' CPU (their solves plus their event loops)."""
    import sheafdsl as sd
    from sheafdsl.distributed import sharded_trainer
    from sheafdsl.training.data import dataset_for
    from sheafdsl.training.fit import model_config
    from sheafdsl.training.trainers import make_trainer

    G = sd.load(ROOT / "models" / "paraboloid.sheaf").graph
    cfg = model_config(G, {"n": n, "batch": None, "steps": steps})
    data = dataset_for(G, cfg)
    one = make_trainer(G, cfg, data)
    many = {w: sharded_trainer(c, G, cfg, data) for w, c in clusters.items()}
    for t in (one, *many.values()):  # warm-up: the first step sets up the warm starts (and places the shards)
        t.step()
    me = os.getpid()
    workers = {w: list(c.client.run(os.getpid).values()) for w, c in clusters.items()}
    rows: dict = {"single": [], **{f"{w} workers": [] for w in clusters}}
    cpu_single: list = []
    brk: dict = {w: [] for w in clusters}
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        for _ in range(steps):
            one.step()
        rows["single"].append((time.perf_counter() - t0) / steps)
        cpu_single.append((time.thread_time() - c0) / steps)
        for w, tr in many.items():
            tr.timing.update(dict.fromkeys(tr.timing, 0.0))
            d0, m0, w0 = _cpu([me]), time.thread_time(), _cpu(workers[w])
            t0 = time.perf_counter()
            for _ in range(steps):
                tr.step()
            wall = (time.perf_counter() - t0) / steps
            d1, m1, w1 = _cpu([me]), time.thread_time(), _cpu(workers[w])
            rows[f"{w} workers"].append(wall)
            theta = np.concatenate([np.asarray(v).ravel() for v in tr.params.values()])
            ser = len(tr._ranges) * (_ser(("key", 1, theta, None, 1.0))[0] + _ser((1.0, 1, None, theta, 1, (0.0,) * 4))[0])
            T = {k: v / steps for k, v in tr.timing.items()}
            brk[w].append({"wall": wall, "compute": T["compute"], "compute_cpu": T["compute_cpu"], "serialisation": ser,
                           "imbalance": T["compute_cpu"] * len(tr._ranges) / T["shards_cpu"],
                           "send": T["send"], "receive": T["receive"], "driver": T["driver"],
                           "driver_main_cpu": (m1 - m0) / steps, "driver_process_cpu": (d1 - d0) / steps,
                           "workers_cpu": (w1 - w0) / steps})
    for w, tr in many.items():
        d = max(float(np.abs(np.asarray(tr.params[k]) - np.asarray(one.params[k])).max()) for k in one.params)
        assert d < 1e-12, d
    out = {"n": n, "seconds_per_step": {k: _median(v) for k, v in rows.items()}}
    out["throughput"] = {k: n / v for k, v in out["seconds_per_step"].items()}
    out["speedup"] = {k: out["seconds_per_step"]["single"] / v for k, v in out["seconds_per_step"].items()}
    out["single_cpu_per_step"] = _median(cpu_single)
    out["breakdown"] = {}
    for w, v in brk.items():
        b = {k: _median([x[k] for x in v]) for k in v[0] if k != "wall"}
        b["communication"] = _median([max(0.0, x["wall"] - x["compute"] - x["serialisation"]) for x in v])
        # each shard's CPU per example against one process's: > 1 when the shards slow each other (shared caches,
        # memory bandwidth) or something else takes their cores
        b["compute_cpu_vs_single"] = b["compute_cpu"] * w / out["single_cpu_per_step"]
        out["breakdown"][f"{w} workers"] = b
    out["theta_bytes"] = int(sum(np.asarray(v).nbytes for v in one.params.values()))
    out["driver_seconds_per_step"] = _median([x["driver"] for v in brk.values() for x in v])
    return out


# ----------------------------------------------------------------------------------------------
# 3. admm-local


def bench_admm(clusters, agents: int, iters: int, repeats: int) -> dict:
    """Seconds per iteration: one process's iteration (``_Local.step`` on the lowered, factorised problem), the
    partitioned one's from its blocks of iterations (its setup, the partition and the parts' data, apart)."""
    import warnings

    from bench_admm import problem
    from sheafdsl.distributed.admm import partitioned
    from sheafdsl.solvers import solve

    from sheafdsl.lowering.consensus import lower_consensus
    from sheafdsl.solvers.admm import _Local
    from sheafdsl.solvers.consensus import pinned_cochain

    G, params, _, m = problem(agents, seed=0)
    Pl = lower_consensus(G, params, pinned_cochain(G, params, None, np), np)
    rows: dict = {"single": []}
    brk: dict = {}
    info = {}
    for _ in range(repeats):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # not converged in so few iterations: that is not the point here
            L = _Local(Pl, np.full((1, Pl.B), 1.0), {})  # the one-process iteration itself, lowered and factorised
            t0 = time.perf_counter()
            for _ in range(iters):
                L.step(np.full((1, Pl.B), 1.0), 1.6)
            rows["single"].append((time.perf_counter() - t0) / iters)
            ref = solve(G, params, method="admm-local", maxiter=iters)
            for w, c in clusters.items():
                made = []

                def make(P, rho, warm, _c=c):
                    made.append(partitioned(_c, maxiter=iters)(P, rho, warm))
                    return made[-1]

                t0 = time.perf_counter()
                res = solve(G, params, method="admm-local", maxiter=iters, local=make)
                wall = time.perf_counter() - t0
                a = made[0]
                per = a.timing["block"] / iters
                rows.setdefault(f"{w} workers", []).append(per)
                with a.client.as_current():
                    secs = [p.timings().result() for p in a.parts]
                compute = max(s["compute"] for s in secs) / iters
                wait = max(s["wait"] for s in secs) / iters
                nvals = max(1, a._per_iteration // len(a.parts))
                ser = _ser(np.zeros((nvals, 1)))[0] * len(a.parts)
                brk.setdefault(w, []).append((per, compute, ser, wait, wall - a.timing["block"]))
                info[w] = {"cut_edges": a.cut_edges, "edges": m, "values_sent_per_iteration": a._per_iteration,
                           "parts": len(a.parts), "max_abs_difference": float(np.abs(res.cochain - ref.cochain).max())}
    out = {"agents": agents, "edges": m, "iterations": iters,
           "seconds_per_iteration": {k: _median(v) for k, v in rows.items()}}
    out["speedup"] = {k: out["seconds_per_iteration"]["single"] / v for k, v in out["seconds_per_iteration"].items()}
    out["breakdown"] = {f"{w} workers": {"compute": _median([b[1] for b in v]), "serialisation": _median([b[2] for b in v]),
                                         "communication": _median([max(0.0, b[0] - b[1] - b[2]) for b in v]),
                                         "waiting_for_neighbours": _median([b[3] for b in v]),
                                         "setup_seconds": _median([b[4] for b in v])} for w, v in brk.items()}
    out["partition"] = info
    return out


# ----------------------------------------------------------------------------------------------
# the scaling model


PS = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256, 512])


def scaling(results: dict, latency: float = LATENCY_S, bandwidth: float = BANDWIDTH_BPS) -> dict:
    """The model of docs/distributed.md from the measured per-shard costs, at p = 1 .. 512 workers.

    - training step (batch B): T(p) = C/p + D + p·(2λ + b/β), C the one-process step's compute, D the
      driver's own work per step, b the bytes of θ out and of the gradient sums back (a star: the driver
      talks to each worker in turn);
    - infer (batch B): T(p) = C/p + p·2λ + V/β + V·σ, V the bytes of inputs and stalks that cross the driver's
      link whatever p, σ the measured seconds of (un)pickling per byte;
    - admm-local (n agents): T(p) = C/p + 2λ + 32·c(p)/(p·β) + p·2λ/K, the parts' compute, one exchange with
      the neighbours (in parallel), each part's share of the cut edges' values (two ends, two rows, 8 bytes),
      and the driver's call of every part once per block of K = 10 iterations; c(p) = c(2)·2(√p − 1) cut edges
      (a geometric graph cut into √p × √p squares).

    Throughput X(p) = (examples or iterations) / T(p); it stops scaling at the p where X is largest."""
    out = {}
    tr = results.get("train")
    if tr:
        B = tr["n"]
        C = tr["seconds_per_step"]["single"]
        D = tr.get("driver_seconds_per_step", 0.0)
        b = 2 * tr["theta_bytes"] + 64
        T = C / PS + D + PS * (2 * latency + b / bandwidth)
        out["train"] = {"p": PS.tolist(), "throughput": (B / T).tolist(), "formula": "C/p + D + p(2λ + b/β)",
                        "C": C, "D": D, "b": b, "best_p": int(PS[np.argmax(B / T)])}
    inf = results.get("infer")
    if inf:
        B = inf["batch"]
        C = inf["single_compute"]
        br = inf["breakdown"].get("2 workers") or next(iter(inf["breakdown"].values()))
        V = br["bytes"]
        sigma = br["serialisation"] / max(V, 1)
        T = C / PS + PS * 2 * latency + V / bandwidth + V * sigma
        out["infer"] = {"p": PS.tolist(), "throughput": (B / T).tolist(), "formula": "C/p + 2λp + V/β + Vσ",
                        "C": C, "V": V, "sigma": sigma, "best_p": int(PS[np.argmax(B / T)]),
                        "bound": 1.0 / (V / B / bandwidth + V / B * sigma)}
    ad = results.get("admm")
    if ad:
        C = ad["seconds_per_iteration"]["single"]
        c2 = next(iter(ad["partition"].values()))["cut_edges"]
        cut = np.where(PS > 1, c2 * 2 * (np.sqrt(PS) - 1), 0.0)
        T = C / PS + np.where(PS > 1, 2 * latency, 0.0) + 32 * cut / (PS * bandwidth) + PS * 2 * latency / 10
        out["admm"] = {"p": PS.tolist(), "throughput": (1.0 / T).tolist(),
                       "formula": "C/p + 2λ + 32c(p)/(pβ) + 2λp/K", "C": C, "cut_2": c2,
                       "best_p": int(PS[np.argmax(1.0 / T)])}
    return out


def plot(model: dict, measured: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(model), figsize=(4.2 * len(model), 3.6))
    axes = np.atleast_1d(axes)
    names = {"train": ("sheaf-rule step, batch 10⁵", "examples / s", "train"),
             "infer": ("sheaf infer, batch 10⁶", "examples / s", "infer"),
             "admm": ("admm-local, 10⁴ agents", "iterations / s", "admm")}
    for ax, (k, m) in zip(axes, model.items()):
        title, unit, key = names[k]
        ax.loglog(m["p"], m["throughput"], "-o", ms=3, label="model")
        meas = measured.get(key, {})
        pts = []
        if k == "admm":
            for lab, v in meas.get("seconds_per_iteration", {}).items():
                pts.append((1 if lab == "single" else int(lab.split()[0]), 1.0 / v))
        else:
            n = meas.get("n") or meas.get("batch")
            secs = meas.get("seconds_per_step") or meas.get("seconds") or {}
            for lab, v in secs.items():
                pts.append((1 if lab == "single" else int(lab.split()[0]), n / v))
        if pts:
            ax.plot(*zip(*pts), "s", color="C3", label="measured (this machine)")
        ax.axvline(m["best_p"], color="0.6", ls=":", lw=1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("workers p")
        ax.set_ylabel(unit)
        ax.legend(fontsize=7)
    fig.suptitle(f"scaling model: λ = {LATENCY_S * 1e6:g} µs, β = {BANDWIDTH_BPS / 1e9:g} GB/s", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default="infer,train,admm")
    ap.add_argument("--infer-batch", type=int, default=1_000_000)
    ap.add_argument("--train-n", type=int, default=100_000)
    ap.add_argument("--train-steps", type=int, default=5)
    ap.add_argument("--agents", type=int, default=10_000)
    ap.add_argument("--admm-iters", type=int, default=100)
    ap.add_argument("--json-out")
    ap.add_argument("--plot", help="write the scaling model's plot (PNG)")
    ap.add_argument("--model-only", metavar="JSON", help="no runs: the model and plot from a saved --json-out")
    args = ap.parse_args(argv)
    if args.model_only:
        results = json.loads(Path(args.model_only).read_text())
        results["model"] = scaling(results)
        print(json.dumps(results["model"], indent=1))
        if args.plot:
            plot(results["model"], results, args.plot)
        return 0
    from sheafdsl.distributed import Cluster

    only = set(args.only.split(","))
    load0 = os.getloadavg()
    results: dict = {"blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"), "cores": os.cpu_count(),
                     "latency_s": LATENCY_S, "bandwidth_Bps": BANDWIDTH_BPS}
    with Cluster(workers=1) as c1, Cluster(workers=2) as c2:
        clusters = {1: c1, 2: c2}
        if "infer" in only:
            results["infer"] = bench_infer(clusters, args.infer_batch, args.repeats)
            print(json.dumps(results["infer"], indent=1), flush=True)
        if "train" in only:
            results["train"] = bench_train(clusters, args.train_n, args.train_steps, args.repeats)
            print(json.dumps(results["train"], indent=1), flush=True)
        if "admm" in only:
            results["admm"] = bench_admm({2: c2}, args.agents, args.admm_iters, args.repeats)
            print(json.dumps(results["admm"], indent=1), flush=True)
    results["load_average"] = {"before": load0, "after": os.getloadavg()}
    results["model"] = scaling(results)
    print(json.dumps(results))
    if args.plot:
        plot(results["model"], results, args.plot)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
