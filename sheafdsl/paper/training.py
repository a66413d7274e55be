"""The training items of ``sheaf paper``: the joint rule's figures and tables (fig2, fig3, tableE1, E3, E4).

Every item trains with the paper's joint Euler flow (:class:`~sheafdsl.training.trainers.JointTrainer`)
under the paper's protocol, :data:`PROTOCOL`: α = 1, β = 1/n_train, dt = 0.005 for one hidden layer
(0.01 for deeper nets), 100 epochs of 1,000 full-batch steps, the stalks random (N(0, 1)) at the start
and re-initialised at the forward pass at each epoch; 300 training and 100 test points, data seed 42.
The comparison is SGD (backpropagation, full batch, learning rate :data:`SGD_LR`) for the same number
of steps from the same initial parameters. ``--quick`` shrinks the data and the epochs so that an
item runs in seconds (CI); the numbers it returns are then those of the small run.

- **fig2**: loss curves of the two rules on the paraboloid [2, 30, 1] (the paper's unit-weight sheaf,
  ``models/paraboloid_paper.sheaf``) and on the circle [2, 25, 1] (sigmoid output); the learned surface
  and the decision boundary.
- **fig3**: β scaling on the paraboloid: the final test MSE against β·n_train (log–log) for
  β ∈ :data:`BETAS`, three seeds each; the optimum is near β·n_train = 1, with a stagnation regime
  below (the weights hardly move) and divergence above.
- **tableE1**: eight configurations (1 and 2 hidden layers × paraboloid, saddle, circle, blobs), joint
  flow against SGD: train and test loss, the test/train ratio of each, and joint/SGD.
- **E3**: the output panels of the same eight configurations, joint flow and SGD.
- **E4**: depth × integration time: [2, 30, 1] (dt 0.005), [2, 10, 8, 1] and [2, 8, 6, 4, 1] (dt 0.01) on
  the paraboloid, the train and test MSE after integrating the joint flow for a time T = steps·dt,
  T ∈ :data:`TIMES`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

#: the paper's joint-flow protocol (issue 13: fig2)
PROTOCOL = {"alpha": 1.0, "dt": 0.005, "epochs": 100, "epoch_steps": 1000, "n": 300, "n_test": 100,
            "joint_init": "random"}
#: the SGD baseline's learning rate (full batch, the same steps and initialisation as the flow)
SGD_LR = 0.01
#: fig3's weight rates
BETAS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 2e-3, 3.33e-3, 5e-3, 1e-2, 3e-2, 1e-1)
#: E4's integration times T = steps·dt
TIMES = (0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0)

#: models/paraboloid_paper.sheaf, word for word (an installed package has no models/ folder; a test checks
#: that the two are the same)
PAPER_TEXT = """# The [2, 30, 1] ReLU network of Bosca & Ghrist, section 6, with the paper's unit edge weights.
# Task: f(x) = x1^2 + x2^2 - 2/3 on [-2, 2]^2 (300 train / 100 test points, noise 0.02).
# This is the paper's sheaf exactly: every edge weight is 1. models/paraboloid.sheaf is the same
# network with output weight 0.1, which trains as well as backprop (docs/training.md).
# Reproduce the paper's training rule with
#   sheaf train models/paraboloid_paper.sheaf --trainer joint --optimizer sgd --steps 100000
sheaf paraboloid_paper

param W1 : 30 x 2  init he
param b1 : 30      init zeros
param W2 : 1 x 30  init he
param b2 : 1       init zeros

stalk x  : 2
stalk z1 : 30
stalk a1 : 30
stalk z2 : 1
stalk y  : 1

edge aff1 : x  -> z1  affine W1 b1  # z1 - (W1 x + b1)
edge act1 : z1 -> a1  relu          # a1 - diag(z1 >= 0) z1
edge aff2 : a1 -> z2  affine W2 b2  # z2 - (W2 a1 + b2)
edge out  : z2 -> y   identity      # y - z2

pin x = input   # boundary: the data
pin y = target  # pinned while training, free at inference

train data=paraboloid n=300 n_test=100 steps=3000 optimizer=adam lr=0.01 seed=0
"""


def _net_text(name: str, widths, output: str) -> str:
    arrows = " -> ".join(str(w) for w in widths)
    weight = " weight 1" if output == "identity" else ""  # the paper's sheaf: every edge weight 1
    return f"sheaf {name}\nnetwork mlp : {arrows} relu output {output}{weight}\n"


@lru_cache(maxsize=None)
def _graph(text: str):
    from ..frontend import load_text
    from ..ir import from_model

    return from_model(load_text(PAPER_TEXT, "models/paraboloid_paper.sheaf") if text == "paper" else load_text(text))


#: the tasks: (data, output, width of the one hidden layer, classes)
TASKS = {"paraboloid": ("identity", 30, 1), "saddle": ("identity", 30, 1), "circle": ("sigmoid", 25, 1),
         "blobs": ("softmax", 25, 4)}


def model(task: str, hidden: tuple) -> str:
    """The model text (or "paper" for models/paraboloid_paper.sheaf) of ``task`` with hidden widths ``hidden``."""
    output, _, k = TASKS[task]
    if task == "paraboloid" and hidden == (30,):
        return "paper"
    return _net_text(f"{task}_{'_'.join(map(str, hidden))}", (2, *hidden, k), output)


@dataclass
class Run:
    """One training run: its trainer, the curve [(step, train loss, test loss)], where it diverged."""

    trainer: object
    curve: list
    diverged: int | None
    seconds: float

    def final(self) -> dict:
        """Train and test loss (and MSE or accuracy) of the final parameters; inf after a divergence."""
        if self.diverged is not None:
            return {"train_loss": math.inf, "test_loss": math.inf, "diverged_at": self.diverged}
        ev = self.trainer.evaluate()
        return {k: float(v) for k, v in ev.items()}


def train(text: str, data_name: str, *, trainer: str, steps: int, seed: int, n: int, n_test: int,
          dt: float = 0.005, beta: float | None = None, epoch_steps: int = 1000, record: int | None = None,
          lr: float = SGD_LR) -> Run:
    """Train ``text`` on ``data_name`` with the joint flow (the paper's protocol) or SGD, ``steps`` steps;
    the losses every ``record`` steps (None: only at the end)."""
    from ..training.config import TrainConfig
    from ..training.data import dataset_for
    from ..training.trainers import DivergenceError, make_trainer

    G = _graph(text)
    opts = dict(data=data_name, n=n, n_test=n_test, steps=steps, seed=seed, trainer=trainer)
    if trainer == "joint":
        opts.update(dt=dt, alpha=PROTOCOL["alpha"], beta=beta, joint_init=PROTOCOL["joint_init"],
                    joint_reinit=epoch_steps)
    else:
        opts.update(optimizer="sgd", lr=lr)
    cfg = TrainConfig.from_sources({}, opts)
    T = make_trainer(G, cfg, dataset_for(G, cfg))
    curve, diverged = [], None
    t0 = time.perf_counter()
    ev = T.evaluate()
    curve.append((0, ev["train_loss"], ev["test_loss"]))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for t in range(1, steps + 1):
            try:
                out = T.step()
            except DivergenceError:
                diverged = t
                break
            if not math.isfinite(out["loss"]):
                diverged = t
                break
            if record and t % record == 0 or t == steps:
                ev = T.evaluate()
                if not (math.isfinite(ev["train_loss"]) and math.isfinite(ev["test_loss"])):
                    diverged = t
                    break
                curve.append((t, ev["train_loss"], ev["test_loss"]))
    return Run(T, curve, diverged, time.perf_counter() - t0)


def _sizes(ctx) -> dict:
    """The protocol, or its quick version: 50 train / 30 test points, 2 epochs of 150 steps."""
    if ctx.quick:
        return {"n": 50, "n_test": 30, "epochs": 2, "epoch_steps": 150}
    return {k: PROTOCOL[k] for k in ("n", "n_test", "epochs", "epoch_steps")}


def _pair(ctx, task: str, hidden: tuple, dt: float, record: int | None = None) -> dict:
    """The joint flow and SGD on one configuration: {"joint": Run, "sgd": Run}."""
    s = _sizes(ctx)
    steps = s["epochs"] * s["epoch_steps"]
    text = model(task, hidden)
    kw = dict(steps=steps, seed=ctx.seed, n=s["n"], n_test=s["n_test"], record=record)
    return {"joint": train(text, task, trainer="joint", dt=dt, epoch_steps=s["epoch_steps"], **kw),
            "sgd": train(text, task, trainer="backprop", **kw)}


# ------------------------------------------------------------------------------------------------
# drawing


def _bounds(trainer):
    X = np.vstack([np.asarray(trainer.data.X_train), np.asarray(trainer.data.X_test)])
    lo, hi = X.min(axis=0), X.max(axis=0)
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def _output_panel(ax, trainer, title: str, k: int = 80):
    """The learned function over the inputs' box (a k × k grid): a surface (regression), the decision
    regions (classes)."""
    from ..lowering import to_numpy

    lo, hi = _bounds(trainer)
    g0, g1 = np.linspace(lo[0], hi[0], k), np.linspace(lo[1], hi[1], k)
    xx, yy = np.meshgrid(g0, g1)
    pts = np.column_stack([xx.ravel(), yy.ravel()])
    pred = np.asarray(to_numpy(trainer._predict(trainer.xp.asarray(pts))))
    d = trainer.data
    X, Y = np.asarray(d.X_train), np.asarray(d.Y_train)
    if d.task == "regression":
        im = ax.contourf(xx, yy, pred[:, 0].reshape(xx.shape), levels=20, cmap="viridis")
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    elif d.task == "binary":
        ax.contourf(xx, yy, pred[:, 0].reshape(xx.shape), levels=[0, 0.5, 1], colors=["#cfe0f3", "#f6d5c8"])
        ax.contour(xx, yy, pred[:, 0].reshape(xx.shape), levels=[0.5], colors="k", linewidths=1)
        ax.scatter(X[:, 0], X[:, 1], c=Y[:, 0], s=4, cmap="coolwarm", linewidths=0)
    else:
        ax.contourf(xx, yy, pred.argmax(axis=1).reshape(xx.shape), levels=np.arange(pred.shape[1] + 1) - 0.5,
                    cmap="Pastel1")
        ax.scatter(X[:, 0], X[:, 1], c=Y.argmax(axis=1), s=4, cmap="Set1", linewidths=0)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _loss_panel(ax, runs: dict, title: str):
    for name, style in (("joint", "-"), ("sgd", "--")):
        c = np.array(runs[name].curve)
        label = "joint flow" if name == "joint" else "SGD"
        ax.plot(c[:, 0], c[:, 1], style, color="C0", lw=1, label=f"{label} train")
        ax.plot(c[:, 0], c[:, 2], style, color="C1", lw=1, label=f"{label} test")
    ax.set_yscale("log")
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel("loss", fontsize=8)
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=6)
    ax.tick_params(labelsize=7)


def _numbers(runs: dict) -> dict:
    out = {}
    for name, r in runs.items():
        f = r.final()
        f["seconds"] = r.seconds
        f["initial_train_loss"], f["initial_test_loss"] = r.curve[0][1], r.curve[0][2]
        out[name] = f
    return out


# ------------------------------------------------------------------------------------------------
# the items


def fig2(ctx) -> dict:
    """Training panels: the joint flow against SGD on the paraboloid [2, 30, 1] and the circle [2, 25, 1]."""
    from .common import new_figure

    s = _sizes(ctx)
    record = max(1, s["epoch_steps"] // 10)
    numbers = {"protocol": {**PROTOCOL, **s, "sgd_lr": SGD_LR, "seed": ctx.seed}}
    fig = new_figure(13.0, 3.2, wspace=0.35, left=0.6)
    for i, (task, title) in enumerate((("paraboloid", "paraboloid [2, 30, 1]"),
                                       ("circle", "circle [2, 25, 1], sigmoid"))):
        ctx.log(f"fig2: {task}, joint flow and SGD, {s['epochs']} epochs of {s['epoch_steps']} steps")
        runs = _pair(ctx, task, (TASKS[task][1],), PROTOCOL["dt"], record)
        numbers[task] = _numbers(runs)
        _loss_panel(fig.add_subplot(1, 4, 2 * i + 1), runs, f"{title}: loss")
        what = "learned surface" if task == "paraboloid" else "decision boundary"
        _output_panel(fig.add_subplot(1, 4, 2 * i + 2), runs["joint"].trainer, f"{task}: {what} (joint flow)")
    numbers["paper"] = {"paraboloid": {"joint": {"train_mse": 0.0756, "test_mse": 0.088}}}
    ctx.save_figure(fig, "fig2_training")
    return numbers


def fig3(ctx) -> dict:
    """β scaling on the paraboloid: final test MSE against β·n_train, three seeds."""
    from .common import new_figure

    s = _sizes(ctx)
    n = s["n"]
    if ctx.quick:  # β·n from 0.01 to 1000 in decades: the sweep still brackets the three regimes
        betas = tuple(x / n for x in (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0))
        seeds, steps = (ctx.seed,), 2 * s["epoch_steps"]
    else:
        betas, seeds, steps = BETAS, (ctx.seed, ctx.seed + 1, ctx.seed + 2), s["epochs"] * s["epoch_steps"]
    rows = []
    for beta in betas:
        mses, diverged = [], 0
        for seed in seeds:
            ctx.log(f"fig3: β = {beta:g} (β·n = {beta * n:.3g}), seed {seed}")
            r = train("paper", "paraboloid", trainer="joint", steps=steps, seed=seed, n=n, n_test=s["n_test"],
                      dt=PROTOCOL["dt"], beta=beta, epoch_steps=s["epoch_steps"])
            f = r.final()
            diverged += r.diverged is not None
            mses.append(f["test_loss"])
        finite = [m for m in mses if math.isfinite(m)]
        rows.append({"beta": beta, "beta_n": beta * n, "test_mse": mses, "diverged": diverged,
                     "median_test_mse": float(np.median(finite)) if len(finite) == len(mses) else math.inf})
    best = min(rows, key=lambda r: r["median_test_mse"])
    fig = new_figure(5.5, 3.8, left=0.8)
    ax = fig.add_subplot(1, 1, 1)
    bn = np.array([r["beta_n"] for r in rows])
    med = np.array([r["median_test_mse"] for r in rows])
    ok = np.isfinite(med)
    ax.loglog(bn[ok], med[ok], "o-", color="C0", label="median over seeds")
    for r in rows:
        pts = [m for m in r["test_mse"] if math.isfinite(m)]
        ax.scatter([r["beta_n"]] * len(pts), pts, s=8, color="C0", alpha=0.4)
    top = np.nanmax(med[ok]) * 3 if ok.any() else 1.0
    div = [r["beta_n"] for r in rows if r["diverged"]]
    if div:
        ax.scatter(div, [top] * len(div), marker="x", color="C3", label="diverged")
    ax.axvline(1.0, color="0.6", lw=0.8, ls=":")
    ax.axvline(best["beta_n"], color="C2", lw=0.8, ls="--", label=f"best β·n = {best['beta_n']:.3g}")
    lo, hi = bn.min(), bn.max()
    for x, label in ((math.sqrt(lo * min(0.1, best["beta_n"])), "stagnation"), (best["beta_n"], "optimal"),
                     (math.sqrt(max(10.0, best["beta_n"]) * hi), "divergence")):
        ax.text(x, top * 1.5, label, ha="center", fontsize=8)
    ax.set_xlabel("β · n_train")
    ax.set_ylabel("final test MSE")
    ax.legend(fontsize=7)
    ctx.save_figure(fig, "fig3_beta")
    return {"n_train": n, "steps": steps, "seeds": list(seeds), "rows": rows, "best_beta_n": best["beta_n"],
            "best_median_test_mse": best["median_test_mse"], "paper": {"optimal_beta_n": 1.0}}


#: tableE1's eight configurations: (task, hidden widths, dt)
CONFIGS = [(task, (TASKS[task][1],), 0.005) for task in TASKS] + [(task, (10, 8), 0.01) for task in TASKS]


@lru_cache(maxsize=4)
def _table_runs(quick: bool, seed: int):
    """The eight configurations' runs (shared by tableE1 and E3 within one process)."""

    class _Ctx:
        pass

    c = _Ctx()
    c.quick, c.seed = quick, seed
    return [(task, hidden, _pair(c, task, hidden, dt)) for task, hidden, dt in CONFIGS]


def _table(ctx) -> list:
    rows = []
    for task, hidden, runs in _table_runs(ctx.quick, ctx.seed):
        j, g = runs["joint"].final(), runs["sgd"].final()
        rows.append({"task": task, "hidden": list(hidden), "joint": j, "sgd": g,
                     "joint_test_over_train": j["test_loss"] / j["train_loss"],
                     "sgd_test_over_train": g["test_loss"] / g["train_loss"],
                     "joint_over_sgd_test": j["test_loss"] / g["test_loss"]})
    return rows


def tableE1(ctx) -> dict:
    """Eight configurations, joint flow against SGD: train and test loss and their ratios."""
    from .common import new_figure

    ctx.log(f"tableE1: {len(CONFIGS)} configurations, joint flow and SGD")
    rows = _table(ctx)
    fig = new_figure(9.5, 0.45 + 0.28 * (len(rows) + 1), left=0.1, right=0.1, bottom=0.1, top=0.1)
    ax = fig.add_subplot(1, 1, 1)
    ax.axis("off")
    head = ["task", "hidden", "joint train", "joint test", "test/train", "SGD train", "SGD test", "test/train",
            "joint/SGD test"]
    cells = [[r["task"], str(r["hidden"]), f"{r['joint']['train_loss']:.4f}", f"{r['joint']['test_loss']:.4f}",
              f"{r['joint_test_over_train']:.2f}", f"{r['sgd']['train_loss']:.4f}", f"{r['sgd']['test_loss']:.4f}",
              f"{r['sgd_test_over_train']:.2f}", f"{r['joint_over_sgd_test']:.2f}"] for r in rows]
    t = ax.table(cellText=cells, colLabels=head, loc="center", cellLoc="center")
    t.auto_set_font_size(False)
    t.set_fontsize(7)
    ctx.save_figure(fig, "tableE1")
    return {"rows": rows, "protocol": {**PROTOCOL, **_sizes(ctx), "sgd_lr": SGD_LR, "seed": ctx.seed}}


def E3(ctx) -> dict:
    """The output panels of tableE1's eight configurations, joint flow and SGD."""
    from .common import new_figure

    ctx.log(f"E3: {len(CONFIGS)} configurations, joint flow and SGD")
    runs = _table_runs(ctx.quick, ctx.seed)
    fig = new_figure(12.0, 11.0, left=0.3, right=0.2, bottom=0.2, top=0.4, wspace=0.25, hspace=0.35)
    numbers = {}
    tasks = list(TASKS)
    for task, hidden, pair in runs:
        col = tasks.index(task)
        for r, name in enumerate(("joint", "sgd")):
            row = 2 * (len(hidden) - 1) + r
            label = "joint flow" if name == "joint" else "SGD"
            f = pair[name].final()
            _output_panel(fig.add_subplot(4, 4, 4 * row + col + 1), pair[name].trainer,
                          f"{task} {list(hidden)}, {label}: test {f['test_loss']:.3g}", 30 if ctx.quick else 80)
            numbers.setdefault(f"{task}_{len(hidden)}h", {})[name] = f
    ctx.save_figure(fig, "E3_outputs")
    return {"panels": numbers}


def E4(ctx) -> dict:
    """Depth × integration time of the joint flow on the paraboloid: train and test MSE at T = steps·dt."""
    from .common import new_figure

    s = _sizes(ctx)
    times = TIMES[:3] if ctx.quick else TIMES
    nets = [((30,), 0.005), ((10, 8), 0.01), ((8, 6, 4), 0.01)]
    table = []
    fig = new_figure(5.5, 3.8, left=0.8)
    ax = fig.add_subplot(1, 1, 1)
    for hidden, dt in nets:
        steps = int(round(max(times) / dt))
        marks = {int(round(T / dt)): T for T in times}
        ctx.log(f"E4: {[2, *hidden, 1]}, dt {dt:g}, up to T = {max(times):g} ({steps} steps)")
        text = model("paraboloid", hidden)
        r = train(text, "paraboloid", trainer="joint", steps=steps, seed=ctx.seed, n=s["n"], n_test=s["n_test"],
                  dt=dt, epoch_steps=s["epoch_steps"], record=1 if ctx.quick else 50)
        at = {t: (tr, te) for t, tr, te in r.curve}
        row = {"widths": [2, *hidden, 1], "dt": dt, "T": list(times),
               "train_mse": [at.get(k, (math.inf, math.inf))[0] for k in marks],
               "test_mse": [at.get(k, (math.inf, math.inf))[1] for k in marks], "diverged": r.diverged}
        table.append(row)
        ax.semilogx(times, row["test_mse"], "o-", label=f"{row['widths']}, dt {dt:g}")
    ax.set_yscale("log")
    ax.set_xlabel("integration time T = steps · dt")
    ax.set_ylabel("test MSE")
    ax.legend(fontsize=7)
    ctx.save_figure(fig, "E4_depth_time")
    return {"rows": table, "epoch_steps": s["epoch_steps"], "n": s["n"]}


__all__ = ["fig2", "fig3", "tableE1", "E3", "E4", "train", "PROTOCOL", "BETAS", "TIMES", "CONFIGS"]
