"""Why the digits grid model was not size-invariant, and what made it so: variants of models/digits_canvas.sheaf
trained side by side on the same data, batches and initial seeds, tested on 16, 24 and 32 pixel canvases.

    python benchmarks/bench_canvas_invariance.py [--variants before nobias_mean shipped ...] [--steps N] [--json-out F]

Each variant is the shipped model's text with one thing changed (see :data:`VARIANTS`): the encoder's biases
(a biased encoder gives a blank patch q = h(0) ≠ 0, so every blank agent adds the same vector to the reading),
the pooling of the decoder (`mean` divides the digit's evidence by the agent count, `sum` does not), the
decoder's bias and the encoder's width. The training loop is ``fit_learned``'s (the implicit trainer, adam,
the model's seed and batch), so the ``shipped`` row is what ``sheaf train models/digits_canvas.sheaf`` gives.
Prints one markdown table and one JSON line. One BLAS thread unless the environment says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def model(hidden: int = 64, nobias: bool = True, pool: str = "sum", bias: bool = True) -> str:
    """The digits grid model with the given encoder width, encoder biases, decoder pooling and decoder bias."""
    return "\n".join([
        "sheaf digits_variant",
        "param P  : 8 x 8   init xavier",
        "param Wd : 10 x 8  init xavier",
        *(["param bd : 10      init zeros"] if bias else []),
        f"encoder enc : 16 -> {hidden} tanh -> 16" + (" nobias" if nobias else ""),
        "grid g : 8 observe 16 encoded enc",
        "edge gh : g -> g right  maps P | P weight 1",
        "edge gv : g -> g down  maps P | P weight 1",
        "stalk y : 10",
        "pin y = target",
        f"decode y : {pool} g affine Wd" + (" bd" if bias else "") + " softmax", ""])


#: name -> (what it is, model text, lr); every variant trains with the implicit trainer, batch 64, seed 0
VARIANTS = {
    "before": ("the model before: biased encoder 16 -> 32 -> 16, mean, no decoder bias",
               model(32, nobias=False, pool="mean", bias=False), 0.02),
    "nobias_mean": ("nobias encoder 16 -> 32 -> 16, mean, no decoder bias", model(32, pool="mean", bias=False), 0.02),
    "nobias_sum_32": ("nobias encoder 16 -> 32 -> 16, sum, decoder bias", model(32), 0.02),
    "shipped": ("models/digits_canvas.sheaf: nobias encoder 16 -> 64 -> 16, sum, decoder bias", model(64), 0.02),
}


def run(name: str, steps: int) -> dict:
    from sheafdsl.frontend.checker import load_text
    from sheafdsl.ir import from_model
    from sheafdsl.training.learned import fit_learned, learned_config

    what, text, lr = VARIANTS[name]
    G = from_model(load_text(text))
    cfg = learned_config(G, {"data": "digits_canvas", "trainer": "implicit", "steps": steps, "batch": 64,
                             "optimizer": "adam", "lr": lr, "seed": 0, "n": 1437, "n_test": 360})
    t0 = time.perf_counter()
    out = fit_learned(G, cfg)
    r = out["result"]
    acc = {k: v["accuracy"] for k, v in r["tests"].items()}
    return {"variant": name, "what": what, "steps": steps, "lr": lr, "accuracy": acc,
            "drop_16_to_32": acc["16"] - acc["32"], "train_accuracy": r["train_accuracy"],
            "seconds_in_steps": r["seconds"], "seconds_total": time.perf_counter() - t0}


def main(argv=None) -> list:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--steps", type=int, nargs="*", default=[600, 2000])
    ap.add_argument("--json-out")
    a = ap.parse_args(argv)
    rows = [run(v, s) for s in a.steps for v in a.variants]
    print("| variant | steps | 16 | 24 | 32 | 16 → 32 | train |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        acc = r["accuracy"]
        print(f"| {r['what']} | {r['steps']} | {100 * acc['16']:.1f}% | {100 * acc['24']:.1f}% | {100 * acc['32']:.1f}% "
              f"| {-100 * r['drop_16_to_32']:+.1f} | {100 * r['train_accuracy']:.1f}% |")
    line = json.dumps({"threads": os.environ.get("OPENBLAS_NUM_THREADS"), "rows": rows})
    if a.json_out:
        Path(a.json_out).write_text(line + "\n")
    print(line)
    return rows


if __name__ == "__main__":
    main()
