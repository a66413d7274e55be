"""Inference benchmark (issue 3): the forward sweep against plain NumPy, and two-sided sliding solves.

The model is the paper's [2, 30, 1] sheaf (models/paraboloid_paper.sheaf, unit weights: sliding is
common there); ``--model`` picks another.

1. A batch of inputs through [2, 30, 1] (He init): ``solve(..., method="exact")``
   with the input pinned (one forward sweep through the lowered operators, built once and reused) against a
   plain NumPy forward pass on the same batch. Medians of repeats, side by side in one process, so the
   ratio is meaningful on a loaded machine. Target: ratio ≤ 3.
2. Two-sided pinned solves on the paraboloid data (x ~ U[-2, 2]², y = x1² + x2² − 2/3 + N(0, 0.02²),
   300 points, He init): per method, the time per example, the fraction of examples that reached a
   consistent (Filippov-stationary) point, the fraction with sliding units, and the distance to exact.

Usage: ``python benchmarks/bench_infer.py [--batch 10000] [--repeats 30] [--n 300] [--json-out FILE]``.
Prints a table, then one JSON line with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# Single-threaded BLAS unless the caller says otherwise (set before numpy loads): on a shared machine a
# threaded BLAS spends its time waiting for cores, and both sides of each comparison use the same BLAS.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sheafdsl.frontend import load_file  # noqa: E402
from sheafdsl.ir import from_model  # noqa: E402
from sheafdsl.lowering import init_params  # noqa: E402
from sheafdsl.lowering.operators import SheafOperators  # noqa: E402
from sheafdsl.solvers import solve  # noqa: E402


def median_time(fn, repeats: int) -> float:
    fn()  # warm up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def paraboloid_data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=(n, 2))
    y = (x ** 2).sum(1, keepdims=True) - 2 / 3 + rng.normal(0, 0.02, size=(n, 1))
    return x, y


def bench_forward(G, P, batch: int, repeats: int, seed: int) -> dict:
    x = np.random.default_rng(seed).uniform(-2, 2, size=(batch, 2))
    W1, b1, W2, b2 = P["W1"], P["b1"], P["W2"], P["b2"]

    def plain():
        return np.maximum(x @ W1.T + b1, 0.0) @ W2.T + b2

    ops = SheafOperators(G, P)  # lowered once, reused

    def sheaf_reused():
        return solve(ops, None, {"x": x})

    def sheaf_fresh():
        return solve(G, P, {"x": x})

    err = float(np.abs(sheaf_reused().stalk("y") - plain()).max())
    # interleave the variants in rounds so that changes in machine load hit them alike; the ratio is taken
    # per round (same conditions), then the median over rounds
    rounds, per = 7, max(3, repeats // 7)
    t_plain, t_reused, t_fresh = [], [], []
    for _ in range(rounds):
        t_plain.append(median_time(plain, per))
        t_reused.append(median_time(sheaf_reused, per))
        t_fresh.append(median_time(sheaf_fresh, per))
    tp, tr, tf = (np.array(t) for t in (t_plain, t_reused, t_fresh))
    return {"batch": batch, "plain_ms": float(np.median(tp)) * 1e3, "sheaf_exact_ms": float(np.median(tr)) * 1e3,
            "sheaf_exact_with_lowering_ms": float(np.median(tf)) * 1e3,
            "ratio": float(np.median(tr / tp)), "ratio_with_lowering": float(np.median(tf / tp)),
            "ratio_rounds": [float(v) for v in tr / tp], "max_abs_diff": err, "target_ratio": 3.0}


def bench_two_sided(G, P, n: int, repeats: int, seed: int) -> list[dict]:
    x, y = paraboloid_data(n, seed)
    ops = SheafOperators(G, P)
    bnd = {"x": x, "y": y}
    sources = ("input", "target", "value")
    ref = solve(ops, None, bnd, sources=sources, method="exact")
    rows = []
    for method in ("exact", "cg", "diffusion"):
        res = solve(ops, None, bnd, sources=sources, method=method)
        t = median_time(lambda: solve(ops, None, bnd, sources=sources, method=method), repeats)
        rows.append({
            "method": method, "n": n, "seconds": t, "us_per_example": t / n * 1e6, "examples_per_s": n / t,
            "fraction_consistent": res.fraction_consistent, "fraction_converged": float(np.mean(res.converged)),
            "fraction_sliding": float(np.mean(res.sliding > 0)), "sliding_units_mean": float(np.mean(res.sliding)),
            "iterations": res.iterations, "max_residual": float(res.residual.max()),
            "max_abs_diff_vs_exact": float(np.abs(res.cochain - ref.cochain).max()),
            "mean_energy": float(res.energy.mean()),
        })
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=10_000, help="forward-pass batch size")
    ap.add_argument("--repeats", type=int, default=30, help="timed repeats (medians)")
    ap.add_argument("--n", type=int, default=300, help="paraboloid points for the two-sided solves")
    ap.add_argument("--two-sided-repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=42, help="data seed")
    ap.add_argument("--param-seed", type=int, default=0, help="He-init seed")
    ap.add_argument("--json-out", help="also write the JSON to this file")
    ap.add_argument("--model", default=str(ROOT / "models" / "paraboloid_paper.sheaf"), help="a [2, n, 1] model file")
    args = ap.parse_args(argv)

    G = from_model(load_file(args.model))
    P = init_params(G, args.param_seed)
    fwd = bench_forward(G, P, args.batch, args.repeats, args.seed)
    two = bench_two_sided(G, P, args.n, args.two_sided_repeats, args.seed)
    out = {"benchmark": "infer", "model": args.model, "cpu_count": os.cpu_count(),
           "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
           "numpy": np.__version__, "forward": fwd, "two_sided": two}

    from rich.console import Console
    from rich.table import Table

    con = Console(highlight=False)
    t = Table(title=f"forward: batch {fwd['batch']} through [2, 30, 1] (medians)", title_justify="left")
    for col in ("plain NumPy", "sheaf exact (reused ops)", "ratio", "with lowering", "ratio", "max |Δy|"):
        t.add_column(col, justify="right")
    t.add_row(f"{fwd['plain_ms']:.3f} ms", f"{fwd['sheaf_exact_ms']:.3f} ms", f"{fwd['ratio']:.2f}×",
              f"{fwd['sheaf_exact_with_lowering_ms']:.3f} ms", f"{fwd['ratio_with_lowering']:.2f}×", f"{fwd['max_abs_diff']:.1e}")
    con.print(t)
    t = Table(title=f"two-sided (x and y pinned), paraboloid n={args.n}, He init", title_justify="left")
    for col in ("method", "µs / example", "examples / s", "consistent", "converged", "with sliding units",
                "iterations", "max |Δc| vs exact"):
        t.add_column(col, justify="right")
    for r in two:
        t.add_row(r["method"], f"{r['us_per_example']:.1f}", f"{r['examples_per_s']:.0f}", f"{r['fraction_consistent']:.3f}",
                  f"{r['fraction_converged']:.3f}", f"{r['fraction_sliding']:.3f}", str(r["iterations"]),
                  f"{r['max_abs_diff_vs_exact']:.1e}")
    con.print(t)
    print(json.dumps(out))
    if args.json_out:
        tmp = args.json_out + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(out, fh, indent=2)
        os.replace(tmp, args.json_out)
    return out


if __name__ == "__main__":
    main()
