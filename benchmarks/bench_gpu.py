"""GPU benchmark, one call on a GPU machine (issue 9): the sheaf rule and backprop, and inference against torch.

Measures, on the array backend chosen once (``--backend``: auto = CuPy when a GPU is usable):

- **training steps per second**, sheaf rule (exact fast phase + local update) and backprop, full-batch steps
  on the paraboloid task, for batch sizes 10³ … 10⁶ (``--batches``), for models/paraboloid.sheaf and a
  [2, 30, 30, 30, 1] ReLU net (``--models``);
- **inference throughput** (examples per second): the harmonic extension that ``sheaf infer`` computes
  (``sheafdsl.solvers.solve`` with the input pinned: the forward sweep) against a torch forward pass of the
  same network with the same weights on the same device (torch is the ``bench`` extra; without it the
  comparison is reported as skipped).

Timings synchronise the device before reading the clock, take the median of ``--repeats`` timed rounds after
one untimed warm-up, and use one BLAS thread on the host (``--threads``).

Usage::

    python benchmarks/bench_gpu.py                   # on the GPU machine: batches 1e3..1e6
    python benchmarks/bench_gpu.py --quick           # a CPU smoke run: batches 1e3, 1e4, few steps
    python benchmarks/bench_gpu.py --json gpu.json

Prints a table, then one JSON document (also written to ``--json``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from sheafdsl.frontend import load_file, load_text  # noqa: E402
from sheafdsl.ir import INFERENCE, from_model  # noqa: E402
from sheafdsl.lowering import get_backend, init_params, to_numpy  # noqa: E402
from sheafdsl.solvers import solve  # noqa: E402
from sheafdsl.training.config import TrainConfig  # noqa: E402
from sheafdsl.training.data import dataset_for  # noqa: E402
from sheafdsl.training.trainers import make_trainer  # noqa: E402

from bench_train import emit, format_rows  # noqa: E402  (the same table and JSON output)

MODELS = {
    "paraboloid": lambda: from_model(load_file(ROOT / "models" / "paraboloid.sheaf")),
    "deep": lambda: from_model(load_text("sheaf deep\nnetwork mlp : 2 -> 30 -> 30 -> 30 -> 1 relu "
                                         "output identity weight 1\n")),
}


def synchronize(xp) -> None:
    """Wait for the device (a no-op on numpy)."""
    cuda = getattr(xp, "cuda", None)
    if cuda is not None:
        cuda.Device().synchronize()


def timed(fn, xp, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` rounds after one warm-up round."""
    fn()
    synchronize(xp)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(xp)
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def train_rate(G, backend: str, trainer: str, B: int, steps: int, repeats: int) -> dict:
    """Full-batch steps per second of ``trainer`` on B paraboloid points (the consistent fraction too)."""
    cfg = TrainConfig.from_sources({}, {"data": "paraboloid", "n": B, "n_test": 16, "trainer": trainer,
                                        "optimizer": "adam", "lr": 0.01, "seed": 0, "backend": backend})
    T = make_trainer(G, cfg, dataset_for(G, cfg))
    xp = T.xp
    last = {}

    def run():
        for _ in range(steps):
            last.update(T.step())

    secs = timed(run, xp, repeats)
    cf = last.get("consistent_fraction")
    return {"steps_per_second": steps / secs, "seconds_per_step": secs / steps,
            "consistent_fraction": None if cf is None else float(cf)}


def torch_forward(G, P, X, repeats: int):
    """(examples per second, max |difference| to the sheaf's output) of a torch forward pass of the same chain
    with the same weights, on the device the arrays live on; None when torch is not installed."""
    try:
        import torch
    except ImportError:
        return None
    from sheafdsl.lowering.chain import feedforward

    net = feedforward(G)
    dev = "cuda" if torch.cuda.is_available() and not isinstance(X, np.ndarray) else "cpu"
    mods = []
    for layer in net.layers:
        if layer.kind == "relu":
            mods.append(torch.nn.ReLU())
        elif layer.kind == "param":
            W = to_numpy(P[layer.param])
            lin = torch.nn.Linear(W.shape[1], W.shape[0], bias=layer.bias is not None).double()
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(W))
                if layer.bias is not None:
                    lin.bias.copy_(torch.from_numpy(to_numpy(P[layer.bias])))
            mods.append(lin)
        else:
            return None  # constant maps: not written for torch here
    model = torch.nn.Sequential(*mods).to(dev)
    Xt = torch.as_tensor(to_numpy(X), device=dev)

    def run():
        with torch.no_grad():
            return model(Xt)

    run()
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    sync()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        y = run()
        sync()
        out.append(time.perf_counter() - t0)
    return X.shape[0] / statistics.median(out), y.cpu().numpy(), dev


def infer_rate(G, xp, B: int, repeats: int) -> dict:
    """Examples per second of the harmonic extension with the input pinned (what ``sheaf infer`` solves)."""
    P = {k: xp.asarray(v) for k, v in init_params(G, 0).items()}
    X = xp.asarray(np.random.default_rng(0).uniform(-2, 2, (B, 2)))
    res = {}

    def run():
        res["r"] = solve(G, P, {"x": X}, boundary=INFERENCE)

    secs = timed(run, xp, repeats)
    out = {"examples_per_second": B / secs}
    ref = torch_forward(G, P, X, repeats)
    if ref is None:
        out["torch"] = "skipped: torch is not installed (pip install '.[bench]')"
    else:
        rate, y, dev = ref
        from sheafdsl.lowering.chain import feedforward

        got = to_numpy(res["r"].stalk(feedforward(G).target))  # identity output: the target stalk is p
        out["torch"] = {"device": dev, "examples_per_second": rate, "ratio_sheaf_over_torch": out["examples_per_second"] / rate,
                        "max_abs_difference": float(np.abs(got - y).max())}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="auto", help="numpy | cupy | auto (cupy when a GPU is usable)")
    ap.add_argument("--batches", default="1e3,1e4,1e5,1e6", help="comma-separated batch sizes")
    ap.add_argument("--models", default="paraboloid,deep", help="comma-separated: " + ", ".join(MODELS))
    ap.add_argument("--steps", type=int, default=20, help="timed training steps per round")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds (median)")
    ap.add_argument("--threads", type=int, default=1, help="host BLAS threads (threadpoolctl)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: batches 1e3 and 1e4, 3 steps, 1 round")
    ap.add_argument("--json", metavar="PATH", help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.quick:
        args.batches, args.steps, args.repeats = "1e3,1e4", 3, 1
    from sheafdsl.lowering.backend import blas_threads

    with blas_threads(args.threads):  # SciPy's BLAS loaded first, so its pool is limited too
        return _main(args)


def _main(args) -> int:
    xp = get_backend(args.backend)
    backend = "cupy" if xp.__name__ == "cupy" else "numpy"
    device = "CPU"
    if backend == "cupy":
        props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
        device = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    batches = [int(float(b)) for b in args.batches.split(",") if b.strip()]
    results = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                           "cpus": os.cpu_count(), "blas_threads": args.threads, "backend": backend,
                           "device": device},
               "settings": {"steps": args.steps, "repeats": args.repeats, "batches": batches}, "models": {}}
    rows = [("model", "batch", "sheaf steps/s", "backprop steps/s", "sheaf/backprop time", "infer ex/s",
             "torch ex/s")]
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        G = MODELS[name]()
        per = {}
        for B in batches:
            t0 = time.perf_counter()
            sh = train_rate(G, backend, "sheaf", B, args.steps, args.repeats)
            bp = train_rate(G, backend, "backprop", B, args.steps, args.repeats)
            inf = infer_rate(G, xp, B, args.repeats)
            per[B] = {"sheaf": sh, "backprop": bp, "time_ratio": bp["steps_per_second"] / sh["steps_per_second"],
                      "infer": inf}
            tr = inf["torch"]
            rows.append((name, f"{B:.0e}", f"{sh['steps_per_second']:.1f}", f"{bp['steps_per_second']:.1f}",
                         f"{per[B]['time_ratio']:.2f}", f"{inf['examples_per_second']:.3g}",
                         f"{tr['examples_per_second']:.3g}" if isinstance(tr, dict) else "n/a"))
            print(f"[{name} B={B}: {time.perf_counter() - t0:.1f} s]", file=sys.stderr, flush=True)
        results["models"][name] = per
    print(f"backend {backend} ({device}), BLAS threads {args.threads}")
    print(format_rows(rows))
    emit(results, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
