"""Learning through Sheaf-ADMM (issue 11): the implicit gradient against the unrolled one, side by side.

Two learned models, written out by :func:`sudoku_model` and :data:`GRID_MODEL` (random data: what is
measured is the gradients and their cost, not accuracy):

- ``sudoku4``: the 12 units of a 4 × 4 Sudoku (rows, columns, boxes) as agents, each a stalk of 4 cells ×
  ``ch`` channels; every cell shared by its three units through hard edges between their cell blocks
  (``r_i[a:b] -> c_j[c:d] maps P | P hard``, one shared P), so the hard rows have the redundancy of a cycle;
  each agent's objective encoded from the one-hot clues of its 4 cells (an MLP 20 -> 32 -> 2·4·ch); one
  softmax decoder per cell from the mean of its three blocks (16 decoders sharing W, b).
- the sudoku4 task's linear model (``sheafdsl.training.tasks.sudoku.model_text(4, polytope=False)``: two hard
  edges a cell and homogeneous hard digit-count rows) on real puzzles of its generator;
- ``grid``: a grid of agents (8-dim stalks, 16-pixel observations) with soft neighbour edges, at 4 × 4.

1. **Agreement over K**: max |g_unrolled(K) − g_implicit| over every parameter entry (and relative to
   max |g_implicit|), K = 5 … 5000, at one parameter point and batch.
2. **Cost of a step**: the gradient of one batch (``loss_and_grads``: forward and backward, the encoder
   and decoder included) for ``implicit`` and for ``unrolled`` with K = 20, runs alternated, medians.
   The shipped Sudoku model (``model_text(4)``: its agents ``nonneg``, the counts against the constant ``one``)
   has only the implicit trainer (unrolled ADMM does not differentiate bounds): its implicit step is timed
   alternately against the unrolled K = 20 step of the linear model of the same size, same parameters and
   puzzles.
3. **Peak memory** of one such step (``tracemalloc``, which sees numpy's buffers), for implicit and for
   unrolled at K = 20 and larger K.
4. **Does each trainer train?** (``--train-steps``): the grid model on a learnable synthetic task (the
   label is the argmax of a fixed linear map of the mean observation, 5 classes), the same initial
   parameters and batches for the three trainers; test accuracy on 4 × 4 grids and on 6 × 6 grids (the
   same model file at another size), and the seconds inside the steps.

Usage: ``python benchmarks/bench_admm_learn.py [--batch 64] [--repeats 7] [--agree-rho 1 10] [--json-out FILE]``. One BLAS
thread unless the environment says otherwise. Prints tables, then one JSON line with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tracemalloc
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sheafdsl.frontend.checker import load_text  # noqa: E402
from sheafdsl.ir import from_model  # noqa: E402
from sheafdsl.training.learned import LearnedTrainer, Split  # noqa: E402

GRID_MODEL = """sheaf grid_bench
param P  : 6 x 8   init xavier
param Wd : 10 x 8  init xavier
param bd : 10      init zeros
encoder enc : 16 -> 32 tanh -> 16
grid g : 8 observe 16 encoded enc
edge gh : g -> g right  maps P | P weight 1
edge gv : g -> g down  maps P | P weight 1
stalk y : 10
pin y = target
decode y : mean g affine Wd bd softmax
"""


def sudoku_units(n: int = 4, r: int = 2):
    """The units of an n × n Sudoku with r × (n/r) boxes: name -> its cells (row-major indices), in slot order."""
    c = n // r
    units = {}
    for i in range(n):
        units[f"r{i}"] = [i * n + j for j in range(n)]
        units[f"c{i}"] = [j * n + i for j in range(n)]
    for b in range(n):
        bi, bj = divmod(b, n // c)
        units[f"b{b}"] = [(bi * r + a) * n + (bj * c + d) for a in range(r) for d in range(c)]
    return units


def sudoku_model(n: int = 4, ch: int = 4, hidden: int = 32, cycle: bool = False) -> str:
    """A learned Sudoku model as text: agents = units, cells shared through hard edges between cell blocks: the
    row–column and row–box pairs of each cell (the column–box agreement follows), or with ``cycle`` all three
    pairs (one redundant block of rows per cell)."""
    units = sudoku_units(n)
    lines = [f"sheaf sudoku{n}", f"param P  : {ch} x {ch}  init xavier", f"param Wd : {n} x {ch}  init xavier",
             f"param bd : {n}  init zeros", f"encoder enc : {n * (n + 1)} -> {hidden} tanh -> {2 * n * ch}"]
    for u in units:
        lines += [f"stalk {u} : {n * ch}", f"stalk o_{u} : {n * (n + 1)}", f"pin o_{u} = input",
                  f"objective {u} encoded enc o_{u}"]
    holders = {cell: [(u, cells.index(cell)) for u, cells in units.items() if cell in cells] for cell in range(n * n)}
    for cell, hold in holders.items():
        (a, sa), (b, sb), (c, sc) = hold
        blk = lambda s: f"[{s * ch}:{(s + 1) * ch}]"  # noqa: E731
        lines += [f"edge s{cell}_{a}{b} : {a}{blk(sa)} -> {b}{blk(sb)} maps P | P hard",
                  f"edge s{cell}_{a}{c} : {a}{blk(sa)} -> {c}{blk(sc)} maps P | P hard"]
        if cycle:
            lines.append(f"edge s{cell}_{b}{c} : {b}{blk(sb)} -> {c}{blk(sc)} maps P | P hard")
        lines += [f"stalk y{cell} : {n}", f"pin y{cell} = target",
                  f"decode y{cell} : mean {a}{blk(sa)} {b}{blk(sb)} {c}{blk(sc)} affine Wd bd softmax"]
    return "\n".join(lines) + "\n"


def sudoku_split(G, B: int, rng, n: int = 4) -> Split:
    units = sudoku_units(n)
    grids = rng.integers(0, n + 1, size=(B, n * n))  # 0: blank
    onehot = np.eye(n + 1)[grids]  # (B, n², n+1)
    inputs = {f"o_{u}": onehot[:, cells].reshape(B, -1) for u, cells in units.items()}
    targets = {f"y{k}": np.eye(n)[rng.integers(0, n, B)] for k in range(n * n)}
    return Split(inputs, targets)


def task_sudoku_split(B: int, rng) -> Split:
    """Real 4 × 4 puzzles (the sudoku4 task's generator) for the task's own model."""
    from sheafdsl.training.tasks import sudoku as T

    P, Sol = T.generate(B, blanks=(6, 9), seed=int(rng.integers(1 << 30)), size=4)
    return Split(T.observations(P, 4), T.targets(Sol, 4))


def grid_split(B: int, rng, R: int = 4) -> Split:
    return Split({"g": rng.normal(size=(B, R, R, 16))}, {"y": np.eye(10)[rng.integers(0, 10, B)]})


def max_diff(a: dict, b: dict) -> float:
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def agreement(G, split, params, Ks, rho: float) -> list:
    exact = LearnedTrainer(G, trainer="implicit", params=params).loss_and_grads(split)[1]
    scale = max(float(np.abs(v).max()) for v in exact.values())
    rows = []
    for K in Ks:
        g = LearnedTrainer(G, trainer="unrolled", iterations=K, rho=rho, params=params).loss_and_grads(split)[1]
        d = max_diff(g, exact)
        rows.append({"K": K, "max_abs": d, "relative": d / scale})
    return rows


def step_times(G, split, params, repeats: int, K: int = 20, rho: float = 1.0) -> dict:
    trainers = {"implicit": LearnedTrainer(G, trainer="implicit", params=params),
                f"unrolled K={K}": LearnedTrainer(G, trainer="unrolled", iterations=K, rho=rho, params=params)}
    times = {k: [] for k in trainers}
    for tr in trainers.values():
        tr.loss_and_grads(split)  # warm: the structure is built once per size
    for _ in range(repeats):  # alternated
        for k, tr in trainers.items():
            t0 = time.perf_counter()
            tr.loss_and_grads(split)
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()} | {"runs": {k: v for k, v in times.items()}}


def peak_memory(G, split, params, configs) -> dict:
    out = {}
    for name, kw in configs:
        tr = LearnedTrainer(G, params=params, **kw)
        tr.loss_and_grads(split)
        tracemalloc.start()
        tr.loss_and_grads(split)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out[name] = peak
    return out


def train_compare(steps: int, batch: int, seed: int = 0) -> dict:
    from sheafdsl.training.learned import evaluate

    model = GRID_MODEL.replace("param Wd : 10 x 8", "param Wd : 5 x 8").replace("param bd : 10 ", "param bd : 5 ") \
        .replace("stalk y : 10", "stalk y : 5")
    G = from_model(load_text(model))
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(16, 5))

    def data(n, R):
        X = rng.normal(size=(n, R, R, 16))
        return Split({"g": X}, {"y": np.eye(5)[(X.mean((1, 2)) @ M).argmax(1)]})

    train, test4, test6 = data(2000, 4), data(500, 4), data(500, 6)
    init = LearnedTrainer(G, trainer="implicit", seed=seed).params
    out = {}
    for name, kw in (("unrolled K=20", dict(trainer="unrolled", iterations=20)),
                     ("implicit", dict(trainer="implicit")), ("local nudge 0.1", dict(trainer="local", nudge=0.1)),
                     ("local nudge 1", dict(trainer="local", nudge=1.0))):
        tr = LearnedTrainer(G, params={k: v.copy() for k, v in init.items()}, lr=0.01, **kw)
        order = np.random.default_rng(seed + 1)
        secs = 0.0
        for _ in range(steps):
            secs += tr.step(train.take(order.choice(len(train), batch, replace=False)))["seconds"]
        out[name] = {"seconds": secs, "train_loss": evaluate(tr, train)["loss"],
                     "test4_accuracy": evaluate(tr, test4)["accuracy"], "test6_accuracy": evaluate(tr, test6)["accuracy"]}
    return out


def polytope_step(batch: int, repeats: int, rho: float, rng) -> dict:
    """The shipped (bounded) Sudoku model's implicit step against the linear model's unrolled K = 20 step: the same
    parameters and puzzles, alternated, medians; and the peak memory of one step of each."""
    from sheafdsl.training.tasks import sudoku as T

    Gp, Gl = from_model(load_text(T.model_text(4))), from_model(load_text(T.model_text(4, polytope=False)))
    params = {k: v + 0.2 * rng.normal(size=v.shape) for k, v in LearnedTrainer(Gl, trainer="implicit", seed=0).params.items()}
    split = task_sudoku_split(batch, rng)
    trs = {"implicit (polytope model)": LearnedTrainer(Gp, trainer="implicit", params=params),
           "unrolled K=20 (linear model)": LearnedTrainer(Gl, trainer="unrolled", iterations=20, rho=rho, params=params)}
    runs = {k: [] for k in trs}
    for tr in trs.values():
        tr.loss_and_grads(split)
    for _ in range(repeats):
        for k, tr in trs.items():
            t0 = time.perf_counter()
            tr.loss_and_grads(split)
            runs[k].append(time.perf_counter() - t0)
    mem = {}
    for k, tr in trs.items():
        tracemalloc.start()
        tr.loss_and_grads(split)
        mem[k] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    med = {k: float(np.median(v)) for k, v in runs.items()}
    ti, tu = med["implicit (polytope model)"], med["unrolled K=20 (linear model)"]
    print(f"\nsudoku4, the shipped polytope model (batch {batch}): implicit step {1e3 * ti:.1f} ms against the linear "
          f"model's unrolled K=20 step {1e3 * tu:.1f} ms, ratio {ti / tu:.2f}; peak memory "
          + ", ".join(f"{k} {v / 2**20:.2f} MiB" for k, v in mem.items()))
    return {"step_seconds": med, "runs": runs, "peak_bytes": mem}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--rho", type=float, default=1.0)
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--ks", type=int, nargs="*", default=[5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000],
                    help="the K of the agreement table (none: skip it)")
    ap.add_argument("--agree-rho", type=float, nargs="*", default=None,
                    help="the ρ of the unrolled iterations in the agreement table (several: one table each; default --rho)")
    ap.add_argument("--json-out")
    a = ap.parse_args(argv)
    agree_rhos = a.agree_rho or [a.rho]
    rng = np.random.default_rng(0)
    report = {"threads": os.environ.get("OPENBLAS_NUM_THREADS"), "batch": a.batch, "rho": a.rho, "models": {}}
    Ks = tuple(a.ks)
    from sheafdsl.training.tasks import sudoku as T

    for name, src, mk in (("sudoku4 (the task's linear model, tasks.sudoku.model_text(4, polytope=False))",
                           T.model_text(4, polytope=False),
                           lambda G, B: task_sudoku_split(B, rng)),
                          ("sudoku4", sudoku_model(), lambda G, B: sudoku_split(G, B, rng)),
                          ("sudoku4 (3 edges a cell)", sudoku_model(cycle=True), lambda G, B: sudoku_split(G, B, rng)),
                          ("grid4x4", GRID_MODEL, lambda G, B: grid_split(B, rng))):
        G = from_model(load_text(src))
        tr0 = LearnedTrainer(G, trainer="implicit", seed=0)
        params = {k: v + 0.2 * rng.normal(size=v.shape) for k, v in tr0.params.items()}
        small = mk(G, 8)
        agree = [dict(r, rho=rho) for rho in agree_rhos for r in agreement(G, small, params, Ks, rho)] if Ks else []
        split = mk(G, a.batch)
        times = step_times(G, split, params, a.repeats, rho=a.rho)
        mem = peak_memory(G, split, params, [("implicit", dict(trainer="implicit")),
                                             ("unrolled K=20", dict(trainer="unrolled", iterations=20, rho=a.rho)),
                                             ("unrolled K=200", dict(trainer="unrolled", iterations=200, rho=a.rho)),
                                             ("unrolled K=1000", dict(trainer="unrolled", iterations=1000, rho=a.rho)),
                                             ("unrolled K=200 window 20", dict(trainer="unrolled", iterations=200,
                                                                              window=20, rho=a.rho))])
        n_params = int(sum(v.size for v in params.values()))
        report["models"][name] = {"params": n_params, "agreement": agree, "step_seconds": times, "peak_bytes": mem}
        print(f"\n{name} ({n_params} parameters; agreement on a batch of 8, timing and memory on {a.batch})")
        print("| ρ | K | max |g_unrolled − g_implicit| | relative |")
        print("|---|---|---|---|")
        for r in agree:
            print(f"| {r['rho']:g} | {r['K']} | {r['max_abs']:.2e} | {r['relative']:.2e} |")
        ti, tu = times["implicit"], times["unrolled K=20"]
        print(f"step (median of {a.repeats}, alternated): implicit {1e3 * ti:.1f} ms, unrolled K=20 {1e3 * tu:.1f} ms, "
              f"implicit / unrolled = {ti / tu:.2f}")
        print("peak memory of one step: " + ", ".join(f"{k} {v / 2**20:.2f} MiB" for k, v in mem.items()))
    report["polytope"] = polytope_step(a.batch, a.repeats, a.rho, rng)
    if a.train_steps:
        tc = train_compare(a.train_steps, 32)
        report["training"] = tc
        print(f"\ntraining the grid model on the synthetic task, {a.train_steps} steps of batch 32, lr 0.01 (adam)")
        print("| trainer | seconds in steps | train loss | test accuracy 4×4 | test accuracy 6×6 |")
        print("|---|---|---|---|---|")
        for k, r in tc.items():
            print(f"| {k} | {r['seconds']:.1f} | {r['train_loss']:.3f} | {100 * r['test4_accuracy']:.1f}% | "
                  f"{100 * r['test6_accuracy']:.1f}% |")
    line = json.dumps(report)
    if a.json_out:
        Path(a.json_out).write_text(line + "\n")
    print(line)
    return report


if __name__ == "__main__":
    main()
