"""How the output edge's weight w_o sets the sheaf rule's accuracy with depth (issue 9).

For each network depth, output weight w_o and seed, train the sheaf rule and backprop from the same
initialisation, data and optimiser on the paraboloid task (300 train / 100 test points, noise 0.02,
adam lr 0.01, full batch) and report the test-MSE ratio sheaf / backprop, the per-example sensitivity
K = Σ_k ‖J_k‖² / w_k² at the forward pass (median over the training set, at the start and the end), the sheaf rule's
minimum consistent fraction and its seconds per step. This is what the ``network`` sugar's default
w_o is chosen from (docs/training.md).

Usage::

    python benchmarks/bench_output_weight.py                       # [2,30,1] and [2,30,30,30,1], 3 seeds
    python benchmarks/bench_output_weight.py --steps 500 --weights 1 0.1 0.01 --json out.json

Prints a table and one JSON document (also written to ``--json``). Run with single-threaded BLAS
(``OMP_NUM_THREADS=1``) for comparable timings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sheafdsl.frontend import load_text  # noqa: E402
from sheafdsl.ir import from_model  # noqa: E402
from sheafdsl.training.config import TrainConfig  # noqa: E402
from sheafdsl.training.data import dataset_for  # noqa: E402
from sheafdsl.lowering.chain import feedforward, output_sensitivity  # noqa: E402
from sheafdsl.training.trainers import make_trainer  # noqa: E402


def model(widths: list[int], w_o: float, activation: str = "relu") -> str:
    """The network ``widths`` written out (as the ``network`` sugar expands it) with output weight w_o."""
    L = len(widths) - 1
    lines = ["sheaf net", f"stalk x : {widths[0]}"]
    for l in range(1, L + 1):
        lines.append(f"stalk z{l} : {widths[l]}")
        if l < L:
            lines.append(f"stalk a{l} : {widths[l]}")
    lines.append(f"stalk y : {widths[L]}")
    for l in range(1, L + 1):
        lines += [f"param W{l} : {widths[l]} x {widths[l - 1]} init he", f"param b{l} : {widths[l]} init zeros"]
        src = "x" if l == 1 else f"a{l - 1}"
        lines.append(f"edge aff{l} : {src} -> z{l} affine W{l} b{l}")
        if l < L:
            lines.append(f"edge act{l} : z{l} -> a{l} {activation}")
    lines += [f"edge out : z{L} -> y identity weight {w_o:g}", "pin x = input", "pin y = target"]
    return "\n".join(lines) + "\n"


def sensitivity(G, P, X) -> np.ndarray:
    """K per example at the forward pass: Σ_k ‖∂p/∂u_k‖² / w_k² (one output row)."""
    return output_sensitivity(feedforward(G), P, X)


def one(widths, w_o, seed, steps, activation):
    G = from_model(load_text(model(widths, w_o, activation)))
    base = dict(data="paraboloid", n=300, n_test=100, noise=0.02, steps=steps, optimizer="adam", lr=0.01,
                seed=seed)
    out = {}
    for trainer in ("sheaf", "backprop"):
        cfg = TrainConfig(**base, trainer=trainer)
        data = dataset_for(G, cfg)
        T = make_trainer(G, cfg, data)
        if trainer == "sheaf":
            K = sensitivity(G, T.params, T.Xtr)
        cf = 1.0
        t0 = time.perf_counter()
        for _ in range(steps):
            r = T.step()
            if r.get("consistent_fraction") is not None:
                cf = min(cf, r["consistent_fraction"])
        secs = time.perf_counter() - t0
        if trainer == "sheaf":
            K_end = sensitivity(G, T.params, T.Xtr)
        out[trainer] = dict(test_mse=float(T.evaluate()["test_loss"]), seconds_per_step=secs / steps,
                            consistent=cf)
    return dict(widths=widths, w_o=w_o, seed=seed, K_median=float(np.median(K)), K_median_end=float(np.median(K_end)),
                ratio=out["sheaf"]["test_mse"] / out["backprop"]["test_mse"], **{
                    f"{t}_{k}": v for t, d in out.items() for k, v in d.items()})


def summary(rows, widths, weights):
    """Per depth and w_o: the sheaf/backprop test-MSE ratio against backprop on the same model (whose
    objective is w_o² · ½ MSE, so Adam's ε sees gradients scaled by w_o²), and against backprop on the
    plain MSE (the w_o = 1 model, same seed) when that was run; min–max over seeds and the median."""
    print("\nsummary: test-MSE ratio sheaf / backprop, min–max over seeds (median); "
          "'plain' = against backprop at w_o = 1")
    for ws in widths:
        mine = [r for r in rows if ",".join(map(str, r["widths"])) == ws]
        plain = {r["seed"]: r["backprop_test_mse"] for r in mine if r["w_o"] == 1.0}
        for w_o in weights:
            rs = [r for r in mine if r["w_o"] == w_o]
            same = [r["ratio"] for r in rs]
            line = f"{ws:>14} w_o={w_o:<5g} same-model {min(same):.2f}–{max(same):.2f} ({statistics.median(same):.2f})"
            vs = [r["sheaf_test_mse"] / plain[r["seed"]] for r in rs if r["seed"] in plain]
            if vs:
                line += f"   plain {min(vs):.2f}–{max(vs):.2f} ({statistics.median(vs):.2f})"
            ms = statistics.median(r["sheaf_seconds_per_step"] for r in rs) * 1e3
            line += f"   sheaf {ms:.2f} ms/step"
            print(line)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", nargs="+", default=["2,30,1", "2,30,30,30,1"])
    ap.add_argument("--weights", nargs="+", type=float, default=[1.0, 0.3, 0.1, 0.03, 0.01])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--activation", default="relu")
    ap.add_argument("--json")
    ap.add_argument("--from-json", help="print the summary of a saved run instead of running")
    a = ap.parse_args(argv)
    if a.from_json:
        doc = json.loads(Path(a.from_json).read_text())
        ws = sorted({",".join(map(str, r["widths"])) for r in doc["rows"]}, key=len)
        summary(doc["rows"], ws, sorted({r["w_o"] for r in doc["rows"]}, reverse=True))
        return
    rows = []
    for ws in a.widths:
        widths = [int(x) for x in ws.split(",")]
        for w_o in a.weights:
            for seed in a.seeds:
                r = one(widths, w_o, seed, a.steps, a.activation)
                rows.append(r)
                print(f"{ws:>14} w_o={w_o:<5g} seed={seed} ratio={r['ratio']:.3f} sheaf={r['sheaf_test_mse']:.5f} "
                      f"bp={r['backprop_test_mse']:.5f} K_med={r['K_median']:.1f}->{r['K_median_end']:.1f} cf={r['sheaf_consistent']:.3f} "
                      f"ms/step sheaf={1e3 * r['sheaf_seconds_per_step']:.2f} "
                      f"bp={1e3 * r['backprop_seconds_per_step']:.2f}", flush=True)
    summary(rows, a.widths, a.weights)
    doc = {"steps": a.steps, "activation": a.activation, "rows": rows}
    print(json.dumps(doc))
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
