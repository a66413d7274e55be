"""The study of docs/linking.md: linking numbers through width-3 networks on the Hopf task (Ren & Lim).

For each network, seed and trainer (the sheaf rule and backprop, from the same initial parameters,
on the same data):

- train on ``hopf`` (points near the two rings of the Hopf link, noise 0.1);
- report the test accuracy;
- push the two rings (the ``hopf`` link, ``--points`` vertices each, default 1024) through the trained
  network and report the exact linking number at every 3-dim stalk (``Sheaf.linking``; ``·`` where
  the images meet), and how many stalks get another number from 128 vertices (a polygon through too
  few image points is not the image curve where the two images come close);
- for the first seed, the point-cloud estimate (kNN cycles of the test points of each class) at the
  input and at every hidden post-activation stalk (a_l, h_l), and a plot of the image curves.

Networks: width-3 feed-forward ``3 -> 3 -> 3 -> 3 -> 1`` with ReLU, leaky ReLU (0.1), tanh, sigmoid
(monotone) and GELU (non-monotone), and ``models/hopf_skip.sheaf`` (three residual blocks, written
in the language). The project's backprop trainer takes chains only, so the skip net's backprop is
written out here in NumPy (the same network, loss, initial parameters, Adam and mini-batches).

``--estimator`` measures the point-cloud estimator alone instead: for each noise level and sample
size (points per class), over ``--seeds`` draws, how often it recovers lk = 1 on sampled Hopf data
and 0 on sampled unlinked data (the ``unlink`` rings, 1 apart), with the default k = 5 and 32 landmarks.

Usage::

    python benchmarks/bench_linking.py                     # 3 seeds, 300 steps of batch 50 (a few minutes)
    python benchmarks/bench_linking.py --estimator --seeds 5
    python benchmarks/bench_linking.py --seeds 1 --steps 100 --nets relu,gelu
    python benchmarks/bench_linking.py --plots docs/linking --json out.json

Runs with one BLAS thread. Prints the table of docs/linking.md, then one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sheafdsl as sd  # noqa: E402
from sheafdsl.errors import SheafError  # noqa: E402

CHAIN = "sheaf hopf_{name}\nnetwork mlp : 3 -> 3 -> 3 -> 3 -> 1 {act} output sigmoid\n"
NETS = {
    "relu": ("relu", True),
    "leaky_relu": ("leaky_relu 0.1", True),
    "tanh": ("tanh", True),
    "sigmoid": ("sigmoid", True),
    "gelu": ("gelu", False),
    "skip": (None, None),
}


def model(name: str):
    if name == "skip":
        return sd.load(ROOT / "models" / "hopf_skip.sheaf")
    return sd.loads(CHAIN.format(name=name, act=NETS[name][0]))


def skip_grads(P: dict, x: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
    """(mean binary cross-entropy, its gradient) of models/hopf_skip.sheaf's network in NumPy:
    h_l = h_{l-1} + relu(W_l h_{l-1} + b_l) (l = 1..3, h_0 = x), z4 = W4 h3 + b4, p = σ(z4)."""
    hs, zs = [x], []
    for l in (1, 2, 3):
        z = hs[-1] @ P[f"W{l}"].T + P[f"b{l}"]
        zs.append(z)
        hs.append(hs[-1] + np.maximum(z, 0))
    out = hs[-1] @ P["W4"].T + P["b4"]
    loss = float(np.mean(np.logaddexp(0, out) - y * out))
    g_out = (1 / (1 + np.exp(-out)) - y) / len(x)  # d loss / d z4
    grads = {"W4": g_out.T @ hs[-1], "b4": g_out.sum(0)}
    gh = g_out @ P["W4"]
    for l in (3, 2, 1):
        gz = gh * (zs[l - 1] > 0)
        grads[f"W{l}"], grads[f"b{l}"] = gz.T @ hs[l - 1], gz.sum(0)
        gh = gh + gz @ P[f"W{l}"]
    return loss, grads


def skip_backprop(sh, params: dict, data, *, steps: int, lr: float, batch: int, seed: int) -> dict:
    """Backprop of models/hopf_skip.sheaf (:func:`skip_grads`), Adam (sheafdsl.training.optim), seeded
    mini-batches (a fresh permutation per epoch)."""
    from sheafdsl.training.optim import Adam

    P = {k: np.array(v, dtype=float) for k, v in params.items()}
    opt = Adam(lr)
    X, Y = data.X_train, data.Y_train
    rng = np.random.default_rng(seed)
    order, pos = rng.permutation(len(X)), 0
    for _ in range(steps):
        if pos + batch > len(X):
            order, pos = rng.permutation(len(X)), 0
        idx = order[pos:pos + batch]
        pos += batch
        opt.step(P, skip_grads(P, X[idx], Y[idx])[1])
    return P


def accuracy(sh, params, X, Y) -> float:
    r = sh.infer({"x": X}, params=params)
    return float(np.mean((r.stalks["y"][:, 0] > 0.5) == (Y[:, 0] > 0.5)))


def hidden_post_activation(name: str, stalk: str) -> bool:
    return stalk == "x" or stalk.startswith("a" if name != "skip" else "h")


def run(nets, seeds, steps, lr, batch, n, n_test, plots, landmarks, points) -> list[dict]:
    from sheafdsl.training.data import load_dataset

    data = load_dataset("hopf", n=n, n_test=n_test)
    yt = data.Y_test[:, 0]
    classes = (data.X_test[yt == 0], data.X_test[yt == 1])
    rows = []
    for name in nets:
        sh = model(name)
        for seed in seeds:
            init = sh.init_params(seed=seed)
            at_init = sh.linking(link="hopf", params=init, points=points).linking
            for trainer in ("sheaf", "backprop"):
                t0 = time.perf_counter()
                status = "ok"
                try:
                    if trainer == "backprop" and name == "skip":
                        P = skip_backprop(sh, init, data, steps=steps, lr=lr, batch=batch, seed=seed)
                    else:
                        fit = sd.train(sh, params=init, steps=steps, trainer=trainer, data="hopf", n=n, n_test=n_test,
                                       lr=lr, batch=batch, seed=seed, optimizer="adam")
                        P = fit.params
                except SheafError as exc:  # a diverged run is a result too
                    status, P = f"failed: {exc.codes}", None
                secs = time.perf_counter() - t0
                row = {"net": name, "seed": seed, "trainer": trainer, "status": status, "train_s": round(secs, 2),
                       "linking_init": at_init}
                if P is not None:
                    row["test_accuracy"] = accuracy(sh, P, data.X_test, data.Y_test)
                    rep = sh.linking(link="hopf", params=P, points=points)
                    row["linking"] = {la.stalk: la.linking for la in rep.layers}
                    row["min_distance"] = {la.stalk: la.min_distance for la in rep.layers}
                    # the same at 128 vertices: where it differs, the coarse image polygon is not the image curve
                    row["linking_128"] = sh.linking(link="hopf", params=P, points=128).linking
                    if seed == seeds[0]:
                        cl = sh.linking(classes=classes, params=P, landmarks=landmarks)
                        row["point_cloud"] = {la.stalk: la.linking for la in cl.layers
                                              if hidden_post_activation(name, la.stalk)}
                        if plots:
                            from sheafdsl.api import write_linking_plot

                            Path(plots).mkdir(parents=True, exist_ok=True)
                            write_linking_plot(rep, Path(plots) / f"{name}_{trainer}.png", dpi=55,
                                               title=f"{name}, {trainer}, seed {seed}: test acc "
                                                     f"{row['test_accuracy']:.1%}")
                rows.append(row)
                print(f"  {name:10s} seed {seed} {trainer:8s} {status} acc {row.get('test_accuracy', float('nan')):.3f} "
                      f"lk {row.get('linking')} ({secs:.1f} s)", file=sys.stderr, flush=True)
    return rows


def estimator_table(seeds, noises=(0.05, 0.1, 0.2, 0.3, 0.4), sizes=(20, 40, 80, 160)) -> tuple[str, list]:
    """Hopf / unlink recovery rates of the point-cloud estimator by noise and points per class."""
    from sheafdsl.analysis.linking import link_points, point_cloud_linking

    rows, out = [], ["| noise \\ points per class | " + " | ".join(str(n) for n in sizes) + " |",
                     "|---|" + "---|" * len(sizes)]
    for noise in noises:
        cells = []
        for n in sizes:
            hits = {"hopf": 0, "unlink": 0}
            for seed in seeds:
                for name, want in (("hopf", 1), ("unlink", 0)):
                    rng = np.random.default_rng([seed, n, int(noise * 1000)])
                    A, B = link_points(name, 0, rng.uniform(0, 2 * np.pi, n), rng.uniform(0, 2 * np.pi, n))
                    A, B = A + rng.normal(0, noise, A.shape), B + rng.normal(0, noise, B.shape)
                    got = point_cloud_linking(A, B).linking
                    hits[name] += got == want
                    rows.append({"noise": noise, "n": n, "seed": seed, "link": name, "estimate": got})
            cells.append(f"{hits['hopf']}/{len(seeds)} · {hits['unlink']}/{len(seeds)}")
        out.append(f"| {noise} | " + " | ".join(cells) + " |")
    return "\n".join(out), rows


def _lk(v) -> str:
    return "·" if v is None else str(v)


def table(rows, seeds) -> str:
    out = ["| net | trainer | test accuracy (per seed) | linking at the 3-dim stalks (seed 0; `·`: the images meet) "
           "| seeds with lk = 0 at some stalk (at initialisation) | seeds with lk defined at the last hidden stalk "
           "| point cloud at x and the hidden activations (seed 0) | stalks where 128 vertices give another lk |",
           "|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["net"], r["trainer"]) for r in rows}, key=lambda k: (list(NETS).index(k[0]), k[1] != "sheaf"))
    for net, trainer in keys:
        rs = [r for r in rows if r["net"] == net and r["trainer"] == trainer]
        accs = ", ".join(f"{r['test_accuracy']:.1%}" if "test_accuracy" in r else r["status"] for r in rs)
        first = rs[0]
        lk0 = " ".join(f"{s}:{_lk(v)}" for s, v in first.get("linking", {}).items())
        zero = sum(any(v == 0 for v in r.get("linking", {}).values()) for r in rs)
        zero_init = sum(any(v == 0 for v in r["linking_init"].values()) for r in rs)
        last = sum(list(r["linking"].values())[-1] is not None for r in rs if "linking" in r)
        pc = " ".join(f"{s}:{_lk(v)}" for s, v in first.get("point_cloud", {}).items())
        kind = "" if NETS[net][1] is None else (" (monotone)" if NETS[net][1] else " (non-monotone)")
        coarse = sum(sum(r["linking_128"][s] != v for s, v in r["linking"].items()) for r in rs if "linking" in r)
        out.append(f"| {net}{kind} | {trainer} | {accs} | {lk0} | {zero}/{len(rs)} ({zero_init}/{len(rs)}) | {last}/{len(rs)} | {pc} | {coarse} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", default=",".join(NETS), help="comma-separated: " + ", ".join(NETS))
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per net")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--points", type=int, default=1024, help="vertices per ring pushed through")
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--landmarks", type=int, default=24, help="landmarks per class of the point-cloud estimator")
    ap.add_argument("--plots", default=None, help="folder for one PNG per net and trainer (seed 0)")
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--estimator", action="store_true", help="measure the point-cloud estimator alone")
    a = ap.parse_args(argv)
    if a.estimator:
        t0 = time.perf_counter()
        text, rows = estimator_table(list(range(a.seeds)))
        print(f"point-cloud estimator (k 5, 32 landmarks): Hopf recovered (lk 1) · unlink recovered (lk 0), "
              f"over {a.seeds} draws; one BLAS thread; {time.perf_counter() - t0:.0f} s")
        print(text)
        doc = {"config": vars(a), "rows": rows}
        print(json.dumps(doc))
        if a.json:
            Path(a.json).write_text(json.dumps(doc, indent=1))
        return 0
    nets = [s.strip() for s in a.nets.split(",") if s.strip()]
    unknown = [s for s in nets if s not in NETS]
    if unknown:
        ap.error(f"unknown nets {unknown}; choose from {list(NETS)}")
    seeds = list(range(a.seeds))
    t0 = time.perf_counter()
    rows = run(nets, seeds, a.steps, a.lr, a.batch, a.n, a.n_test, a.plots, a.landmarks, a.points)
    total = time.perf_counter() - t0
    print(f"hopf task: n={a.n}, n_test={a.n_test}, {a.steps} steps of batch {a.batch}, adam lr {a.lr}, seeds {seeds}; "
          f"one BLAS thread; {total:.0f} s in all")
    print(table(rows, seeds))
    doc = {"config": vars(a), "seconds": round(total, 1), "rows": rows}
    print(json.dumps(doc))
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
