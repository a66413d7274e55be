"""Heat-equation trace benchmark: does recording a trajectory slow the untraced solve?

Three timed cases of the one heat-equation solver (``solvers/diffusion.py``), each run in a fresh
subprocess against two source trees, alternated (A B A B ...), medians reported:

- ``plain``: the paper's Fig 1 flow, the [2, 4, 1] unit-weight net, input (0.5, -0.3), plain explicit Euler
  with step 0.01 for 3000 steps (``diffusion(prob, c, step=0.01, accelerate=False, maxiter=3000)``: the
  same call in both trees);
- ``accel``: the default accelerated solve of [2, 30, 1] (models/paraboloid_paper.sheaf) on a batch of
  1000 inputs to rtol 1e-10 (``solve(..., method="diffusion")``);
- ``traced``: ``plain`` again with ``trajectory=True`` (the tree under test only; the baseline has no
  tracer), so the price of recording is shown beside the untraced run.

Usage: ``python benchmarks/bench_heat.py --baseline /work/main [--repeats 5]``: the baseline tree is the
code before the trace (any checkout of this repository); this tree is the one under test. One BLAS thread.
Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

CASE = r'''
import sys, time, json
import numpy as np
from sheafdsl.frontend import load_text, load_file
from sheafdsl.ir import from_model, INFERENCE
from sheafdsl.lowering import init_params
from sheafdsl.lowering.operators import SheafOperators
from sheafdsl.solvers import solve
from sheafdsl.solvers.core import boundary_cochain
from sheafdsl.solvers.diffusion import diffusion
case = sys.argv[1]
if case in ("plain", "traced"):
    G = from_model(load_text("sheaf f\nnetwork n : 2 -> 4 -> 1 output identity weight 1\n"))
    P = init_params(G, 0)
    prob = SheafOperators(G, P).restrict(INFERENCE)
    c0, _ = boundary_cochain(prob, {"x": np.array([[0.5, -0.3]])}, np)
    c0[:, prob.s.free] = np.random.default_rng(0).standard_normal((1, prob.s.n))
    kw = {}
    if case == "traced":
        from sheafdsl.solvers.diffusion import HeatTrace
        kw["tracer"] = HeatTrace(prob)
    t0, p0 = time.perf_counter(), time.process_time()
    r = diffusion(prob, c0.copy(), step=0.01, accelerate=False, maxiter=3000, rtol=1e-300, **kw)
    dt, cpu = time.perf_counter() - t0, time.process_time() - p0
else:
    G = from_model(load_file(sys.argv[2]))
    P = init_params(G, 0)
    X = np.random.default_rng(1).uniform(-2, 2, size=(1000, 2))
    t0, p0 = time.perf_counter(), time.process_time()
    r = solve(G, P, {"x": X}, method="diffusion")
    dt, cpu = time.perf_counter() - t0, time.process_time() - p0
print(json.dumps({"seconds": dt, "cpu": cpu, "iterations": int(r.iterations)}))
'''


def once(tree: Path, case: str) -> dict:
    p = subprocess.run([sys.executable, "-c", CASE, case, str(ROOT / "models" / "paraboloid_paper.sheaf")],
                       capture_output=True, text=True, env={**ENV, "PYTHONPATH": str(tree)}, cwd="/", timeout=900)
    if p.returncode:
        raise SystemExit(f"{tree} {case}: {p.stderr.strip().splitlines()[-1]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", required=True, type=Path, help="the source tree before the trace (e.g. /work/main)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    trees = {"baseline": args.baseline.resolve(), "this": ROOT}
    runs: dict = {}
    for _ in range(args.repeats):
        for case in ("plain", "accel"):
            for name, tree in trees.items():
                runs.setdefault((case, name), []).append(once(tree, case))
        runs.setdefault(("traced", "this"), []).append(once(ROOT, "traced"))
    out = {}
    print(f"{'case':8s} {'tree':9s} {'wall s':>8s} {'cpu s':>8s} {'iters':>7s}   (medians; one BLAS thread, "
          f"{args.repeats} alternated runs; load {os.getloadavg()[0]:.1f})")
    for (case, name), rs in runs.items():
        med = statistics.median(r["seconds"] for r in rs)
        cpu = statistics.median(r["cpu"] for r in rs)
        out[f"{case}/{name}"] = {"median_s": med, "median_cpu_s": cpu, "all_s": [r["seconds"] for r in rs],
                                 "all_cpu_s": [r["cpu"] for r in rs], "iterations": rs[0]["iterations"]}
        print(f"{case:8s} {name:9s} {med:8.3f} {cpu:8.3f} {rs[0]['iterations']:7d}")
    for case in ("plain", "accel"):
        for key in ("median_s", "median_cpu_s"):
            out[f"{case}/ratio_{key}"] = out[f"{case}/this"][key] / out[f"{case}/baseline"][key]
        print(f"{case}: this / baseline = {out[f'{case}/ratio_median_s']:.3f} (wall), "
              f"{out[f'{case}/ratio_median_cpu_s']:.3f} (cpu)")
    for key in ("median_s", "median_cpu_s"):
        out[f"traced/plain_{key}"] = out["traced/this"][key] / out["plain/this"][key]
    print(f"traced / untraced (plain) = {out['traced/plain_median_s']:.3f} (wall), "
          f"{out['traced/plain_median_cpu_s']:.3f} (cpu)")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
