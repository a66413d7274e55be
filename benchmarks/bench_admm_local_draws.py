"""admm-local on problems drawn by the property test's strategy (docs/admm.md, "admm-local: iterations against
agents"): how many stall (E515/E516), how many iterations the others need, and their agreement with CVXPY.

Draws ``N`` problems from ``tests/test_admm.py::consensus_sheaves`` with a fixed hypothesis seed (random graphs,
stalk and edge dimensions, maps, every objective kind, hard and soft edges, pins and soft pins), solves each with
admm-local at rtol 1e-10 (maxiter 2·10⁵) and with CVXPY + Clarabel (the tests' reference), and prints one JSON
line: the count of stalls, the worst error against CVXPY of the converged ones (relative to max(1, |x|)), the
median and the ten largest iteration counts.

Usage: ``python benchmarks/bench_admm_local_draws.py [--n 150] [--seed 999]`` (needs the ``test`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402

import test_admm as T  # noqa: E402
from sheafdsl.errors import SheafError  # noqa: E402
from sheafdsl.solvers import solve  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--seed", type=int, default=999)
    a = ap.parse_args()
    out = []

    @seed(a.seed)
    @settings(max_examples=a.n, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(T.consensus_sheaves())
    def draw(case):
        G, params = case
        if T._lowered(G, params).n == 0:
            return
        ref, _ = T.cvxpy_reference(G, params)
        try:
            res = solve(G, params, None, method="admm-local", maxiter=200000, **T.TIGHT)
        except SheafError as e:
            out.append(dict(stalled=e.codes[0]))
            return
        err = max(float(np.abs(np.asarray(res.stalk(v))[0] - x).max() / max(1.0, np.abs(x).max()))
                  for v, x in ref.items())
        out.append(dict(iterations=int(res.iterations), error=err))

    draw()
    its = sorted(o["iterations"] for o in out if "iterations" in o)
    print(json.dumps(dict(problems=len(out), stalled=sum("stalled" in o for o in out),
                          max_error=max((o["error"] for o in out if "error" in o), default=None),
                          median_iterations=float(np.median(its)) if its else None, largest_iterations=its[-10:],
                          seed=a.seed)))


if __name__ == "__main__":
    main()
