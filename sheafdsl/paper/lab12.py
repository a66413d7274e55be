r"""Lab 12 of the book (Ch. 12, *Backprop-free training*): Algorithm 12.4 against SGD on the paraboloid.

Algorithm 12.4 is our ``trainer=sheaf``: for each example of the batch the fast phase solves the
two-sided Dirichlet problem exactly (x and y pinned; sliding ReLU units included), then the slow
phase applies the local update of Def. 12.3 with plain SGD,

    W_ℓ ← W_ℓ − η · (1/B) Σ_i (δc*_i)_{aff ℓ} (c*_{i, a_{ℓ−1}})ᵀ,      b_ℓ ← b_ℓ − η · (1/B) Σ_i (δc*_i)_{aff ℓ}.

Four measurements, each beside what the book states:

1. **Loss against epoch.** The [2, 30, 1] ReLU net with the paper's unit edge weights, trained by
   Algorithm 12.4 and by backprop + SGD from the *same* initial parameters, batch and learning rate;
   the full training MSE of each epoch (from a snapshot per epoch, :mod:`sheafdsl.training.snapshots`),
   the test MSE, and the seconds inside the steps.
2. **Slowdown against 1/λ_min(L_free).** Epochs each rule needs to reach the same training MSE, their
   ratio, and 1/λ_min of the restricted Laplacian (x, y pinned; forward-pass gates; the median over
   the training set) at the initial and the trained parameters (Thm. 12.5 predicts a slowdown of
   order 1/λ_min). Beside them 1 + K, K the output sensitivity of each example
   (:func:`sheafdsl.lowering.chain.output_sensitivity`, the median): the exact two-sided residual is
   R = ½ r² / (1 + K), so each example's local step is SGD's on ½ r² divided by about 1 + K.
3. **β ∼ 1/n_train.** Algorithm 12.4 with *summed* updates, θ ← θ − β Σ_i ∇θ E_i (the paper's
   convention; our mean update with lr = β·n), full batch, for n_train ∈ {16, 64, 256, 1024} over a
   grid of β; the best β per n (a parabola through the three best points in log β), and the slope of
   log β* against log n by least squares (the book: −1).
4. **Batch-parallel fast phase (Prop. 12.6).** The B two-sided solves one example at a time against
   one batched solve of all B (the examples share θ but nothing else, so the batched solve is the
   same numbers: the largest difference is reported), the median of alternated repeats.
"""

from __future__ import annotations

import math
import time

import numpy as np

#: the lab's settings (full run) and the quick (CI) version
FULL = dict(n=200, batch=20, lr=0.01, epochs=300, ns=(16, 64, 256, 1024), beta_steps=400,
            betas=tuple(10.0 ** np.arange(-4.5, 0.01, 0.5)), batches=(1, 4, 16, 64, 256, 1024), repeats=5)
QUICK = dict(n=48, batch=16, lr=0.01, epochs=6, ns=(16, 64), beta_steps=20,
             betas=(1e-3, 1e-2, 1e-1, 1.0), batches=(1, 8, 32), repeats=2)
#: what the book (Ch. 12, Lab 12 and its exercises) states
BOOK = {"final_mse": "comparable to SGD on the same architecture",
        "slowdown": "a factor ~ 1/λ_min(L_free) more steps (Thm. 12.5)",
        "beta_slope": -1.0,
        "batch_parallel": "the B fast-phase solves are independent (Prop. 12.6)"}


def net_text(widths, name: str = "net") -> str:
    """The paper's ReLU MLP [n0, ..., nL] with unit edge weights and He initialisation, written out (the
    stalks x, z1, a1, ..., zL, y; input x and target y pinned), trained on the paraboloid."""
    lines = [f"sheaf {name}"]
    for k in range(1, len(widths)):
        lines += [f"param W{k} : {widths[k]} x {widths[k - 1]} init he", f"param b{k} : {widths[k]} init zeros"]
    lines.append(f"stalk x : {widths[0]}")
    prev = "x"
    L = len(widths) - 1
    for k in range(1, L + 1):
        lines.append(f"stalk z{k} : {widths[k]}")
        if k < L:
            lines.append(f"stalk a{k} : {widths[k]}")
    lines.append(f"stalk y : {widths[-1]}")
    for k in range(1, L + 1):
        lines.append(f"edge aff{k} : {prev} -> z{k} affine W{k} b{k}")
        if k < L:
            lines.append(f"edge act{k} : z{k} -> a{k} relu")
            prev = f"a{k}"
    lines += [f"edge out : z{L} -> y identity", "pin x = input", "pin y = target", "train data=paraboloid"]
    return "\n".join(lines) + "\n"


def _data(sh, **options):
    from ..training.data import dataset_for
    from ..training.fit import model_config

    return dataset_for(sh.graph, model_config(sh.graph, options))


def _mse(net, params, X, Y) -> float:
    from ..lowering.chain import predict

    return float(np.mean((np.asarray(predict(net, params, X)) - Y) ** 2))


def loss_curves(sh, *, n: int, batch: int, lr: float, epochs: int, seed: int = 0) -> dict:
    """Algorithm 12.4 and backprop, both plain SGD from the same initial parameters, batch and lr: the
    training and test MSE after every epoch, and the seconds inside the steps."""
    import sheafdsl as sd
    from ..lowering.chain import feedforward

    per = -(-n // batch)  # steps per epoch
    steps = epochs * per
    init = sh.init_params(seed=seed)
    data = _data(sh, n=n)
    net = feedforward(sh.graph)
    out = {"steps_per_epoch": per, "epochs": epochs, "n_train": n, "batch": batch, "lr": lr}
    for trainer in ("sheaf", "backprop"):
        fit = sd.train(sh, params=init, trainer=trainer, optimizer="sgd", lr=lr, batch=batch, n=n, steps=steps,
                       log_every=steps, seed=seed, snapshot_at=[e * per for e in range(epochs + 1)])
        snaps = fit.snapshots
        out[trainer] = {
            "train_mse": [_mse(net, snaps[e * per].params, data.X_train, data.Y_train) for e in range(epochs + 1)],
            "test_mse": [_mse(net, snaps[e * per].params, data.X_test, data.Y_test) for e in range(epochs + 1)],
            "seconds": float(fit.metrics["seconds"]), "ms_per_step": 1e3 * float(fit.metrics["seconds"]) / steps,
            "final": snaps[epochs * per].params}
    return out


def epochs_to(curve, target: float) -> int | None:
    """The first epoch whose value is at most ``target`` (None: never).

    >>> epochs_to([4.0, 2.0, 1.0, 0.5], 1.0), epochs_to([4.0, 2.0], 1.0)
    (2, None)
    """
    for e, v in enumerate(curve):
        if v <= target:
            return e
    return None


def lambda_min_median(sh, params, X) -> float:
    """The median over the rows of X of λ_min(L_free) (x and y pinned, forward-pass gates)."""
    from ..lowering.chain import feedforward
    from ..training.conditioning import lambda_min_free

    return float(np.median(lambda_min_free(feedforward(sh.graph), params, X)))


def slowdown(sh, curves: dict, X, seed: int = 0) -> dict:
    """Epochs to reach the same training MSE (1.1 × the larger of the two rules' best), their ratio, the
    wall-time ratios, and 1/λ_min(L_free) at the initial and trained parameters."""
    s, b = curves["sheaf"]["train_mse"], curves["backprop"]["train_mse"]
    target = 1.1 * max(min(s), min(b))
    es, eb = epochs_to(s, target), epochs_to(b, target)
    from ..lowering.chain import feedforward, output_sensitivity

    init = sh.init_params(seed=seed)
    lam0 = lambda_min_median(sh, init, X)
    lam1 = lambda_min_median(sh, curves["sheaf"]["final"], X)
    net = feedforward(sh.graph)
    k0 = float(np.median(output_sensitivity(net, init, X)))
    k1 = float(np.median(output_sensitivity(net, curves["sheaf"]["final"], X)))
    ratio = None if not es or not eb else es / eb
    per_step = curves["sheaf"]["ms_per_step"] / curves["backprop"]["ms_per_step"]
    return {"target_train_mse": target, "epochs_sheaf": es, "epochs_sgd": eb, "epoch_ratio": ratio,
            "step_time_ratio": per_step, "wall_time_ratio": None if ratio is None else ratio * per_step,
            "lambda_min_init": lam0, "lambda_min_trained": lam1,
            "inv_lambda_min_init": 1.0 / lam0, "inv_lambda_min_trained": 1.0 / lam1,
            "one_plus_K_init": 1.0 + k0, "one_plus_K_trained": 1.0 + k1}


def best_beta(betas, losses) -> float | None:
    """The β of the least loss, refined by the vertex of a parabola through the best point and its two
    neighbours in (log β, log loss) when it has both; None when every run diverged.

    >>> b = [1e-3, 1e-2, 1e-1, 1.0]
    >>> round(best_beta(b, [(np.log10(x) + 1.5) ** 2 + 1 for x in b]), 4)  # a minimum at 10^-1.5
    0.0316
    """
    lb = np.log10(np.asarray(betas, dtype=float))
    ll = np.array([math.log(v) if v is not None and math.isfinite(v) and v > 0 else np.inf for v in losses])
    if not np.isfinite(ll).any():
        return None
    i = int(np.argmin(ll))
    if 0 < i < len(lb) - 1 and np.isfinite(ll[i - 1:i + 2]).all():
        a, bcoef, _ = np.polyfit(lb[i - 1:i + 2], ll[i - 1:i + 2], 2)
        if a > 0:
            return float(10 ** np.clip(-bcoef / (2 * a), lb[i - 1], lb[i + 1]))
    return float(10 ** lb[i])


def beta_scaling(sh, *, ns, betas, steps: int, seed: int = 0) -> dict:
    """Algorithm 12.4 with summed updates (lr = β·n, full batch) for each n_train and β: the final
    training MSE (None where it diverged), the best β per n, and the slope of log β* on log n."""
    import sheafdsl as sd
    from ..errors import SheafError

    init = sh.init_params(seed=seed)
    rows = {}
    for n in ns:
        losses = []
        for beta in betas:
            try:
                fit = sd.train(sh, params=init, trainer="sheaf", optimizer="sgd", lr=float(beta) * n, n=n,
                               steps=steps, log_every=steps, seed=seed)
                v = fit.metrics["train_loss"]
                losses.append(v if v is not None and math.isfinite(v) else None)
            except SheafError as exc:  # E640: diverged (the divergence regime of the sweep)
                if "E640" not in exc.codes:
                    raise
                losses.append(None)
        rows[n] = {"final_train_mse": losses, "best_beta": best_beta(betas, losses)}
    pts = [(math.log(n), math.log(r["best_beta"])) for n, r in rows.items() if r["best_beta"]]
    slope = float(np.polyfit(*zip(*pts), 1)[0]) if len(pts) >= 2 else None
    return {"betas": [float(b) for b in betas], "steps": steps, "by_n": {str(n): r for n, r in rows.items()},
            "slope": slope}


def batch_parallel(sh, *, batches, repeats: int, seed: int = 0) -> dict:
    """Seconds of the fast phase (the exact two-sided solve) for B examples one at a time and as one
    batch, alternated, medians; and the largest difference between the two answers."""
    from ..training.trainers import make_trainer
    from ..training.fit import model_config

    n = max(batches)
    config = model_config(sh.graph, {"n": n, "seed": seed})
    data = _data(sh, n=n)
    tr = make_trainer(sh.graph, config, data, params=sh.init_params(seed=seed))
    X, Y = data.X_train, data.Y_train
    rows, worst = [], 0.0
    for B in batches:
        loop_t, batch_t = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            one = [tr.equilibrium(X[i:i + 1], Y[i:i + 1]) for i in range(B)]
            loop_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            whole = tr.equilibrium(X[:B], Y[:B])
            batch_t.append(time.perf_counter() - t0)
        for k in range(1, len(whole.V)):
            stacked = np.concatenate([np.asarray(e.V[k]) for e in one])
            worst = max(worst, float(np.abs(stacked - np.asarray(whole.V[k])).max()))
        lo, ba = float(np.median(loop_t)), float(np.median(batch_t))
        rows.append({"B": B, "one_at_a_time_s": lo, "batched_s": ba, "speedup": lo / ba})
    return {"rows": rows, "max_abs_difference": worst, "repeats": repeats}


def _plots(ctx, curves, slow, beta, par) -> None:
    """One figure, ``lab12.pdf``/``.png``: loss against epoch and against seconds, the β sweep and the
    best β against n_train, and the batch-parallel speedup."""
    from ..training.plots import compact_ticks
    from .common import new_figure

    fig = new_figure(13, 8.6, top=0.95, wspace=0.35, hspace=0.55)
    ax, ax2, ax5 = fig.add_subplot(2, 3, 1), fig.add_subplot(2, 3, 2), fig.add_subplot(2, 3, 3)
    ax3, ax4 = fig.add_subplot(2, 3, 4), fig.add_subplot(2, 3, 5)
    ep = np.arange(curves["epochs"] + 1)
    for key, colour, label in (("sheaf", "#1f77b4", "Algorithm 12.4"), ("backprop", "#d62728", "SGD")):
        c = curves[key]
        ax.semilogy(ep, c["train_mse"], color=colour, label=f"{label}, train")
        ax.semilogy(ep, c["test_mse"], color=colour, ls="--", lw=1, label=f"{label}, test")
        ax2.semilogy(np.linspace(0, c["seconds"], len(ep)), c["train_mse"], color=colour, label=label)
    ax.axhline(slow["target_train_mse"], color="0.5", ls=":", lw=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE")
    ax.set_title(f"same init, batch {curves['batch']}, SGD lr {curves['lr']:g}", fontsize=10)
    ax.legend(fontsize=8)
    ax2.set_xlabel("seconds inside the steps")
    ax2.set_ylabel("train MSE")
    ratio = slow["epoch_ratio"]
    ax2.set_title("epochs to the dotted MSE, sheaf / SGD: " + ("—" if ratio is None else f"{ratio:.2f}")
                  + f"\n1/λ_min(L_free) {slow['inv_lambda_min_init']:.3f};  1 + K {slow['one_plus_K_init']:.2f} "
                  f"(init), {slow['one_plus_K_trained']:.2f} (end)", fontsize=9)
    ax2.legend(fontsize=8)
    for n, r in beta["by_n"].items():
        pts = [(b, v) for b, v in zip(beta["betas"], r["final_train_mse"]) if v is not None]
        if pts:
            ax3.loglog(*zip(*pts), marker="o", ms=3, label=f"n = {n}")
    finite = [v for r in beta["by_n"].values() for v in r["final_train_mse"] if v is not None]
    first = [r["final_train_mse"][0] for r in beta["by_n"].values() if r["final_train_mse"][0] is not None]
    if finite:  # from the best run to a few times the barely trained ones: a blow-up does not flatten the rest
        ax3.set_ylim(min(finite) / 2, 3 * max(first or finite))
    ax3.set_xlabel("β (summed update)")
    ax3.set_ylabel(f"train MSE after {beta['steps']} steps")
    ax3.set_title("β sweep (missing points: diverged)", fontsize=10)
    ax3.legend(fontsize=8)
    pts = [(int(n), r["best_beta"]) for n, r in beta["by_n"].items() if r["best_beta"]]
    if pts:
        ns, bs = zip(*pts)
        ax4.loglog(ns, bs, "o", color="#1f77b4", label="best β")
        ln, lb = np.log(ns), np.log(bs)
        if beta["slope"] is not None:
            ax4.loglog(ns, np.exp(lb.mean() + beta["slope"] * (ln - ln.mean())), "-", color="#1f77b4", lw=1,
                       label=f"fit, slope {beta['slope']:.2f}")
        ax4.loglog(ns, np.exp(lb.mean() - (ln - ln.mean())), "--", color="0.5", label="β ∝ 1/n")
        ax4.legend(fontsize=8)
    ax4.set_xlabel("n_train")
    ax4.set_ylabel("best β")
    ax4.set_title("slope " + ("—" if beta["slope"] is None else f"{beta['slope']:.2f}") + " (book: −1)", fontsize=10)
    Bs = [r["B"] for r in par["rows"]]
    ax5.loglog(Bs, [r["speedup"] for r in par["rows"]], marker="o")
    ax5.set_xlabel("batch size B")
    ax5.set_ylabel("one at a time / batched")
    ax5.set_title(f"fast phase batched (max |Δ| {par['max_abs_difference']:.1e})", fontsize=10)
    ax5.grid(True, alpha=0.3)
    fig.suptitle("Lab 12: Algorithm 12.4 (exact fast phase + local update) against SGD, [2, 30, 1] paraboloid",
                 fontsize=11)
    for a in fig.axes:
        compact_ticks(a, "x")
        compact_ticks(a, "y")
    ctx.save_figure(fig, "lab12")


def lab12(ctx) -> dict:
    """The book's Lab 12 (see the module docstring)."""
    import sheafdsl as sd
    from ..lowering.backend import blas_threads

    cfg = QUICK if ctx.quick else FULL
    sh = sd.loads(net_text([2, 30, 1], "lab12"), path="<lab12>")
    with blas_threads(1):
        ctx.log(f"lab12: Algorithm 12.4 vs SGD, {cfg['epochs']} epochs of batch {cfg['batch']} (n = {cfg['n']})")
        curves = loss_curves(sh, n=cfg["n"], batch=cfg["batch"], lr=cfg["lr"], epochs=cfg["epochs"], seed=ctx.seed)
        slow = slowdown(sh, curves, _data(sh, n=cfg["n"]).X_train, seed=ctx.seed)
        ctx.log(f"lab12: β sweep over n_train = {', '.join(map(str, cfg['ns']))}")
        beta = beta_scaling(sh, ns=cfg["ns"], betas=cfg["betas"], steps=cfg["beta_steps"], seed=ctx.seed)
        ctx.log("lab12: batch-parallel fast phase")
        par = batch_parallel(sh, batches=cfg["batches"], repeats=cfg["repeats"], seed=ctx.seed)
    _plots(ctx, curves, slow, beta, par)
    for key in ("sheaf", "backprop"):
        curves[key].pop("final")
    return {"loss": curves, "slowdown": slow, "beta": beta, "batch_parallel": par, "blas_threads": 1,
            "paper": BOOK}
