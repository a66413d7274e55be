"""Training benchmark: the sheaf trainer against backprop, side by side in one process (issue 5).

Every comparison builds both trainers from the same model, data, seed and optimiser and times their
``step()`` loops alternately (``--repeats`` rounds, median wall time), so the ratio is meaningful
on a shared or noisy machine. Tasks (docs/tasks.md):

- ``paraboloid``: models/paraboloid.sheaf ([2, 30, 1]), 300 points, adam lr 0.01, 3000 steps, seed 0;
  also the same network with a weak output coupling (``--coupling``: the output edge's weight w_o,
  declared in the model text: R = E(c*) → w_o² · ½ MSE as w_o → 0);
- ``circle`` ([2, 25, 1] sigmoid) and ``blobs`` ([2, 25, 4] softmax): test accuracy, sheaf vs backprop;
- ``deep`` ([2, 30, 30, 30, 1] ReLU, ``network`` sugar) on the paraboloid: in-step time, at w_o = 1 and at the
  sugar's default output weight (``--deep-weights``);
- ``digits``: ``models/digits.sheaf`` as shipped ([64, 64, 10] softmax, 1437 train / 360 test, 1000 steps of
  batch 256): sheaf test accuracy, in-step time and the floor;
- ``joint``: the paper's rule (``--trainer joint --optimizer sgd``, α = 1, β = 1/300, dt = 0.005,
  100,000 steps) on the paraboloid: train MSE and seconds;
- ``beside``: models/paraboloid.sheaf's sheaf and backprop steps (3000 each) alone, alternated step by step
  (what ``sheaf train``'s loop did with the sheaf trainer and its baseline before the sheaf trainer had
  ``lazy_loss``) and in stretches of 50 (what it does now), each trainer's CPU seconds (thread time),
  medians of ``--repeats`` rounds of the three.

Usage::

    python benchmarks/bench_train.py                      # everything (several minutes)
    python benchmarks/bench_train.py --tasks paraboloid --repeats 3
    python benchmarks/bench_train.py --tasks beside --repeats 3
    python benchmarks/bench_train.py --quick              # short smoke run (fewer steps)
    python benchmarks/bench_train.py --threads 2          # BLAS threads (default 1, stated in the JSON)
    python benchmarks/bench_train.py --json out.json

The floor (issue 9). The exact fast phase solves an n_L-row output-space Schur complement per pattern: its
least possible cost is one forward pass plus (n_L + 1) backward sweeps of a (B, d) sensitivity through the
chain (n_L to form K, one for u = Jᵀρ). ``floor`` times exactly those sweeps on the training batch at the
trained parameters, and the sheaf trainer is re-run with its fast phase timed (``solve_us``, the pattern
solves per step), so the table says how far each figure is from the floor: ``solve/floor`` (the fast
phase against one floor solve per step) and ``floor ratio`` = (sheaf step − fast phase + floor) / backprop
step, the in-step ratio if the fast phase cost exactly one floor solve. The fast phase is also split into
the piece solves of the whole batch, those of the unsettled subsets, and the driver's own bookkeeping
(ratio test, release rule, compaction; what is left of the loop).

Prints a table, then one JSON document (also written to ``--json`` when given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sheafdsl.frontend import load_text  # noqa: E402
from sheafdsl.ir import from_model  # noqa: E402
from sheafdsl.training.config import TrainConfig  # noqa: E402
from sheafdsl.training.data import dataset_for  # noqa: E402
from sheafdsl.training.trainers import make_trainer  # noqa: E402

MODELS = {
    "circle": "sheaf circle\nnetwork mlp : 2 -> 25 -> 1 relu output sigmoid\n",
    "blobs": "sheaf blobs\nnetwork mlp : 2 -> 25 -> 4 relu output softmax\n",
    "deep": "sheaf deep\nnetwork mlp : 2 -> 30 -> 30 -> 30 -> 1 relu output identity{weight}\n",
}


def paraboloid_model(coupling: float | None = None):
    """models/paraboloid.sheaf, with its output edge's weight w_o replaced by ``coupling`` when given."""
    src = (ROOT / "models" / "paraboloid.sheaf").read_text()
    if coupling is not None:
        src, n = re.subn(r"^(edge out\s*:\s*z2\s*->\s*y\s+identity)(\s+weight\s+\S+)?",
                         rf"\g<1> weight {coupling:g}", src, flags=re.M)
        if n != 1:
            raise SystemExit("models/paraboloid.sheaf changed: cannot set the output coupling")
    return from_model(load_text(src, str(ROOT / "models" / "paraboloid.sheaf")))


#: the benchmark asks the trainers for their loss every LOG_EVERY-th step (``--loss-every``; 1: every step, as
#: the figures before issue 9's bookkeeping slice were measured; 50: as ``sheaf train`` logs by default)
LOG_EVERY = 1


def run(G, config: TrainConfig, data):
    """Train to ``config.steps``; returns (wall seconds inside step(), evaluate() plus the process CPU
    seconds, min consistent fraction). CPU time is what a busy shared machine distorts least. The loss
    is asked for on every ``LOG_EVERY``-th step and the last (a trainer with ``lazy_loss`` skips it on
    the others, as in ``sheaf train``)."""
    T = make_trainer(G, config, data)
    cf = 1.0
    n = config.steps
    t0, c0 = time.perf_counter(), time.process_time()
    for t in range(1, n + 1):
        r = T.step(loss=t % LOG_EVERY == 0 or t == n)
        if r["consistent_fraction"] is not None:
            cf = min(cf, r["consistent_fraction"])
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    ev = T.evaluate()
    ev["cpu_seconds"] = cpu
    return secs, ev, cf


def side_by_side(G, base: dict, repeats: int, trainers=("sheaf", "backprop")) -> dict:
    """Alternate the trainers ``repeats`` times; median seconds, metrics of the (deterministic) runs."""
    out = {t: {"seconds": [], "cpu": []} for t in trainers}
    data = None
    for _ in range(repeats):
        for t in trainers:
            cfg = TrainConfig.from_sources(G.graph.get("train") or {}, dict(base, trainer=t))
            data = data or dataset_for(G, cfg)
            secs, ev, cf = run(G, cfg, data)
            out[t]["seconds"].append(secs)
            out[t]["cpu"].append(ev.pop("cpu_seconds"))
            out[t].update(ev)
            if t == "sheaf":
                out[t]["consistent_fraction_min"] = cf
    for t in trainers:
        out[t]["seconds_median"] = statistics.median(out[t]["seconds"])
        out[t]["cpu_min"] = min(out[t]["cpu"])
    return out


def floor_sweeps(net, P, X, xp):
    """The floor of one pattern solve (module docstring): one forward pass and (n_L + 1) backward sweeps of a
    (B, d) row sensitivity through the chain's maps and gates at that forward pass."""
    from sheafdsl.lowering.chain import forward, out_linear

    V = forward(net, P, X, xp)
    gates = net.gates(V, xp)
    out = net.output
    A = out_linear(out, P)[0] if out.fn == "linear" else xp.eye(out.d_out)
    B = X.shape[0]
    for r in range(out.d_out + 1):
        g = xp.ones((B, 1)) * A[r % out.d_out]  # contiguous (a broadcast view would miss BLAS)
        for j in range(len(net.layers) - 1, 0, -1):  # the rows' sensitivity to the discord entering v_j
            layer = net.layers[j]
            if layer.kind in ("relu", "nonlinear"):
                g = g * gates[j]
            else:
                g = g @ (P[layer.param] if layer.kind == "param" else layer.matrix)
    return g


def floor_profile(G, base: dict, repeats: int) -> dict:
    """Re-run the sheaf trainer with its fast phase timed (every ``solve`` call of a step, and inside it the
    driver's loop and its piece solves: the whole batch's and the unsettled subsets'), then time the floor
    sweeps (:func:`floor_sweeps`) on the training batch at the trained parameters (median of ``repeats``)."""
    import sheafdsl.solvers.active_set as gen
    import sheafdsl.solvers.chain as chain
    import sheafdsl.training.trainers as tr

    cfg = TrainConfig.from_sources(G.graph.get("train") or {}, dict(base, trainer="sheaf"))
    T = make_trainer(G, cfg, dataset_for(G, cfg))
    inner, spent, solves = tr.solve, [0.0], [0]
    parts = {"loop": 0.0, "whole": 0.0, "subsets": 0.0}

    def timed(*a, **k):
        t0 = time.perf_counter()
        r = inner(*a, **k)
        spent[0] += time.perf_counter() - t0
        solves[0] += int(r.iterations)
        return r

    def driven(drive):
        def run(piece, *a, **k):
            real = piece.solve

            def piece_solve(S, rows, warm, fs):
                t0 = time.perf_counter()
                out = real(S, rows, warm, fs)
                parts["whole" if rows is None else "subsets"] += time.perf_counter() - t0
                return out

            piece.solve = piece_solve  # this call's piece only
            t0 = time.perf_counter()
            try:
                return drive(piece, *a, **k)
            finally:
                parts["loop"] += time.perf_counter() - t0
                del piece.solve
        return run

    loops = (chain.active_set, gen.drive)
    tr.solve, chain.active_set, gen.drive = timed, driven(loops[0]), driven(loops[1])
    try:
        t0 = time.perf_counter()
        for t in range(1, cfg.steps + 1):
            T.step(loss=t % LOG_EVERY == 0 or t == cfg.steps)
        step = (time.perf_counter() - t0) / cfg.steps
    finally:
        tr.solve, (chain.active_set, gen.drive) = inner, loops
    X = T.Xtr if cfg.batch is None else T.Xtr[: cfg.batch]
    n = max(50, min(2000, int(0.05 / max(step, 1e-6))))
    floors = []
    for _ in range(max(3, repeats)):
        t0 = time.perf_counter()
        for _ in range(n):
            floor_sweeps(T.net, T.params, X, T.xp)
        floors.append((time.perf_counter() - t0) / n)
    us = {k: 1e6 * v / cfg.steps for k, v in parts.items()}
    return {"step_us": 1e6 * step, "solve_us": 1e6 * spent[0] / cfg.steps,
            "pattern_solves_per_step": solves[0] / cfg.steps, "floor_us": 1e6 * statistics.median(floors),
            "rows": T.net.output.d_out, "whole_batch_us": us["whole"], "subsets_us": us["subsets"],
            "driver_us": us["loop"] - us["whole"] - us["subsets"]}


def add_floor(res: dict, G, base: dict, repeats: int) -> None:
    """Put the floor comparison (:func:`floor_profile`) into a side-by-side result ``res``."""
    f = floor_profile(G, base, repeats)
    bp = 1e6 * res["backprop"]["seconds_median"] / base["steps"]
    sheaf = 1e6 * res["sheaf"]["seconds_median"] / base["steps"]
    f["solve_over_floor"] = f["solve_us"] / f["floor_us"]
    f["floor_ratio"] = (sheaf - f["solve_us"] * sheaf / f["step_us"] + f["floor_us"]) / bp
    res["floor"] = f


def bench_paraboloid(args) -> dict:
    base = {"steps": args.steps or 3000, "optimizer": "adam", "lr": 0.01, "seed": 0, "n": 300, "n_test": 100}
    res = {"settings": base, "as_written": side_by_side(paraboloid_model(), base, args.repeats)}
    for w in args.coupling:
        res[f"coupling_{w:g}"] = side_by_side(paraboloid_model(w), base, args.repeats)
    add_floor(res["as_written"], paraboloid_model(), base, args.repeats)
    for key in [k for k in res if k != "settings"]:
        r = res[key]
        r["mse_ratio"] = r["sheaf"]["test_mse"] / r["backprop"]["test_mse"]
        r["time_ratio"] = r["sheaf"]["seconds_median"] / r["backprop"]["seconds_median"]
        r["cpu_ratio"] = r["sheaf"]["cpu_min"] / r["backprop"]["cpu_min"]
    return res


def bench_deep(args) -> dict:
    """A [2, 30, 30, 30, 1] ReLU net (the ``network`` sugar) on the paraboloid, at each output weight of
    ``--deep-weights`` ("default": the sugar's own): the deep chain path (sliding units on hidden layers 2-3
    make coupled rows in the output-space solve)."""
    base = {"data": "paraboloid", "steps": args.deep_steps, "optimizer": "adam", "lr": 0.01, "seed": 0, "n": 300,
            "n_test": 100}
    out = {"settings": base}
    for w in args.deep_weights:
        G = from_model(load_text(MODELS["deep"].format(weight="" if w == "default" else f" weight {w}")))
        res = side_by_side(G, base, args.repeats)
        res["output_weight"] = _output_weight(G)
        res["mse_ratio"] = res["sheaf"]["test_mse"] / res["backprop"]["test_mse"]
        res["time_ratio"] = res["sheaf"]["seconds_median"] / res["backprop"]["seconds_median"]
        res["cpu_ratio"] = res["sheaf"]["cpu_min"] / res["backprop"]["cpu_min"]
        add_floor(res, G, base, args.repeats)
        out[f"w_o={w}"] = res
    return out


def _output_weight(G) -> float:
    from sheafdsl.lowering.chain import feedforward

    return float(feedforward(G).output.weight)


def bench_classification(task: str, args) -> dict:
    G = from_model(load_text(MODELS[task]))
    base = {"data": task, "steps": args.steps or 3000, "optimizer": "adam", "lr": 0.01, "seed": 0}
    res = side_by_side(G, base, args.repeats)
    res["settings"] = base
    res["accuracy_gap_points"] = 100 * (res["backprop"]["test_accuracy"] - res["sheaf"]["test_accuracy"])
    res["time_ratio"] = res["sheaf"]["seconds_median"] / res["backprop"]["seconds_median"]
    res["cpu_ratio"] = res["sheaf"]["cpu_min"] / res["backprop"]["cpu_min"]
    return res


def bench_digits(args) -> dict:
    """models/digits.sheaf as shipped (its own `train` statement: 1000 steps of batch 256, adam lr 0.005, the
    reluctance edges), ``--digits-steps`` / ``--digits-batch`` overriding its steps and batch."""
    path = ROOT / "models" / "digits.sheaf"
    G = from_model(load_text(path.read_text(), str(path)))
    base = dict(G.graph.get("train") or {})
    if args.digits_steps:
        base["steps"] = args.digits_steps
    if args.digits_batch:
        base["batch"] = args.digits_batch
    res = side_by_side(G, base, args.repeats)
    add_floor(res, G, base, args.repeats)
    res["settings"] = base
    res["time_ratio"] = res["sheaf"]["seconds_median"] / res["backprop"]["seconds_median"]
    res["cpu_ratio"] = res["sheaf"]["cpu_min"] / res["backprop"]["cpu_min"]
    return res


def bench_joint(args) -> dict:
    G = paraboloid_model(1.0)  # the paper's sheaf: unit weights
    steps = args.joint_steps
    cfg = TrainConfig.from_sources(G.graph.get("train") or {}, {"trainer": "joint", "optimizer": "sgd", "steps": steps,
                                                                 "alpha": 1.0, "dt": 0.005, "seed": 0})
    secs, ev, _ = run(G, cfg, dataset_for(G, cfg))
    return {"settings": {"trainer": "joint", "optimizer": "sgd", "alpha": 1.0, "beta": "1/n_train", "dt": 0.005,
                         "steps": steps}, "seconds": secs, **ev,
            "reference": {"train_mse": 0.0756, "test_mse": 0.0884, "seconds": 96.0,
                          "source": "docs/tasks.md: the paper's code, measured on a 2-core machine"}}


def bench_beside(args) -> dict:
    """The sheaf and backprop steps of models/paraboloid.sheaf alone, alternated one step at a time, and in
    stretches of 50 (module docstring): CPU seconds of each trainer's 3000 steps (the loss asked every 50th
    step), medians over ``--repeats`` rounds, fresh trainers in every mode and round."""
    import numpy as np

    G = paraboloid_model()
    steps = args.steps or 3000
    base = {"steps": steps, "optimizer": "adam", "lr": 0.01, "seed": 0, "n": 300, "n_test": 100}
    cfgs = {t: TrainConfig.from_sources(G.graph.get("train") or {}, dict(base, trainer=t)) for t in ("sheaf", "backprop")}
    data = dataset_for(G, cfgs["sheaf"])
    clock = time.thread_time
    out = {m: {"sheaf": [], "backprop": []} for m in ("alone", "step_by_step", "stretches_of_50")}
    for _ in range(args.repeats):
        for mode, chunk in (("alone", None), ("step_by_step", 1), ("stretches_of_50", 50)):
            tr = {t: make_trainer(G, c, data) for t, c in cfgs.items()}
            spent = {"sheaf": 0.0, "backprop": 0.0}
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                spans = [(t, 0, steps) for t in tr] if chunk is None else \
                    [(t, a, min(a + chunk, steps)) for a in range(0, steps, chunk) for t in tr]
                for t, a, b in spans:
                    T = tr[t]
                    c0 = clock()
                    for i in range(a + 1, b + 1):
                        T.step(loss=i % LOG_EVERY == 0 or i == steps)
                    spent[t] += clock() - c0
            for t in spent:
                out[mode][t].append(spent[t])
    res = {"settings": dict(base, loss_every=LOG_EVERY, repeats=args.repeats)}
    for mode, d in out.items():
        s, b = statistics.median(d["sheaf"]), statistics.median(d["backprop"])
        res[mode] = {"sheaf_cpu": s, "backprop_cpu": b, "ratio": s / b, "rounds": d}
    return res


def table(results: dict) -> str:
    rows = [("task", "trainer", "test metric", "train metric", "seconds", "note")]
    p = results.get("paraboloid")
    if p:
        for key in [k for k in p if k != "settings"]:
            r = p[key]
            for t in ("sheaf", "backprop"):
                rows.append((f"paraboloid {key}", t, f"mse {r[t]['test_mse']:.5f}", f"mse {r[t]['train_mse']:.5f}",
                             f"{r[t]['seconds_median']:.2f}",
                             f"ratio mse {r['mse_ratio']:.2f}, wall {r['time_ratio']:.2f}, cpu {r['cpu_ratio']:.2f}"
                             if t == "sheaf" else _floor_note(r)))
    d = results.get("deep")
    for key, r in (d or {}).items():
        if key == "settings":
            continue
        for t in ("sheaf", "backprop"):
            rows.append((f"deep [2,30,30,30,1] {key}", t, f"mse {r[t]['test_mse']:.5f}", f"mse {r[t]['train_mse']:.5f}",
                         f"{r[t]['seconds_median']:.2f}",
                         f"ratio mse {r['mse_ratio']:.2f}, wall {r['time_ratio']:.2f}, cpu {r['cpu_ratio']:.2f}"
                         if t == "sheaf" else _floor_note(r)))
    for task in ("circle", "blobs", "digits"):
        r = results.get(task)
        if r:
            for t in ("sheaf", "backprop"):
                rows.append((task, t, f"acc {100 * r[t]['test_accuracy']:.1f}%", f"acc {100 * r[t]['train_accuracy']:.1f}%",
                             f"{r[t]['seconds_median']:.2f}",
                             f"ratio wall {r['time_ratio']:.2f}, cpu {r['cpu_ratio']:.2f}" if t == "sheaf"
                             else _floor_note(r)))
    bs = results.get("beside")
    for mode in ("alone", "step_by_step", "stretches_of_50"):
        if bs:
            r = bs[mode]
            rows.append((f"paraboloid beside: {mode}", "sheaf/backprop", "", "", f"{r['sheaf_cpu']:.3f}",
                         f"backprop {r['backprop_cpu']:.3f} s of CPU, ratio {r['ratio']:.2f}"))
    j = results.get("joint")
    if j:
        rows.append(("paraboloid (paper's rule)", "joint/sgd", f"mse {j['test_mse']:.4f}", f"mse {j['train_mse']:.4f}",
                     f"{j['seconds']:.1f}", f"{j['settings']['steps']} steps; peer: train 0.0756 in ~96 s"))
    return format_rows(rows)


def _floor_note(r: dict) -> str:
    f = r.get("floor")
    if not f:
        return ""
    return (f"fast phase {f['solve_us']:.0f} us/step = {f['solve_over_floor']:.1f}x floor ({f['floor_us']:.0f} us: "
            f"1 fwd + {f['rows'] + 1} bwd), {f['pattern_solves_per_step']:.2f} solves/step (whole batch "
            f"{f['whole_batch_us']:.0f} us, subsets {f['subsets_us']:.0f}, driver {f['driver_us']:.0f}); floor ratio "
            f"{f['floor_ratio']:.2f}")


def format_rows(rows) -> str:
    """Rows of strings (the first a header) as aligned columns with a rule under the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def emit(results: dict, path: str | None) -> None:
    """Print the results as one JSON document, and write it atomically to ``path`` when given."""
    doc = json.dumps(results, indent=2, default=float)
    print(doc)
    if path:
        tmp = path + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(doc)
        os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="paraboloid,deep,circle,blobs,digits,joint",
                    help="comma-separated: paraboloid, deep, circle, blobs, digits, joint, beside")
    ap.add_argument("--repeats", type=int, default=2, help="alternating timing rounds (median)")
    ap.add_argument("--steps", type=int, default=None, help="override the 3000 steps of paraboloid/circle/blobs")
    ap.add_argument("--coupling", type=float, nargs="*", default=[1.0],
                    help="extra paraboloid runs with this output-edge weight w_o")
    ap.add_argument("--deep-steps", type=int, default=1000)
    ap.add_argument("--deep-weights", nargs="*", default=["1", "default"],
                    help="output weights w_o of the deep net (\"default\": the network sugar's own)")
    ap.add_argument("--digits-steps", type=int, default=None, help="override models/digits.sheaf's 1000 steps")
    ap.add_argument("--digits-batch", type=int, default=None, help="override models/digits.sheaf's batch of 256")
    ap.add_argument("--joint-steps", type=int, default=100_000)
    ap.add_argument("--loss-every", type=int, default=1,
                    help="ask the trainers for their loss every N-th step (1: every step, as earlier figures; 50: as "
                         "`sheaf train` logs; trainers with lazy_loss skip it on the others)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 300 steps, 2,000 joint steps")
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS threads (threadpoolctl; default 1, as `sheaf train`): small batched arrays "
                         "oversubscribe the cores with more, and the ratios then depend on the machine's load")
    ap.add_argument("--json", metavar="PATH", help="also write the JSON here")
    args = ap.parse_args(argv)
    from sheafdsl.lowering.backend import blas_threads  # SciPy's BLAS (the fused steps') limited too

    with blas_threads(args.threads):
        return _main(ap, args)


def _main(ap, args) -> int:
    global LOG_EVERY
    LOG_EVERY = max(1, args.loss_every)
    if args.quick:
        args.steps, args.deep_steps, args.digits_steps, args.joint_steps, args.repeats = 300, 100, 100, 2000, 1
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    results: dict = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                                 "cpus": os.cpu_count(), "blas_threads": args.threads},
                       "loss_every": LOG_EVERY}
    for t in tasks:
        t0 = time.perf_counter()
        if t == "paraboloid":
            results[t] = bench_paraboloid(args)
        elif t in ("circle", "blobs"):
            results[t] = bench_classification(t, args)
        elif t == "digits":
            results[t] = bench_digits(args)
        elif t == "deep":
            results[t] = bench_deep(args)
        elif t == "joint":
            results[t] = bench_joint(args)
        elif t == "beside":
            results[t] = bench_beside(args)
        else:
            ap.error(f"unknown task {t!r}")
        print(f"[{t}: {time.perf_counter() - t0:.1f} s]", file=sys.stderr, flush=True)
    print(table(results))
    emit(results, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
