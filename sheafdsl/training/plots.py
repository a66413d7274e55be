"""PNG plots of a training run (matplotlib, Agg; no pyplot, so no global backend is touched).

- :func:`plot_loss`: the loss per logged step, the trainer against the baseline when one ran;
- :func:`plot_discord`: per-edge discord energy as bars, coloured by edge type, with the per-layer
  totals beside them;
- :func:`plot_surface`: for a regression with a 2-D input and a 1-D output, the learned function
  over the data's box with the training points, and predicted against true on the test set;
- :func:`plot_boundary`: for a classification with a 2-D input, the decision regions with the test
  points (misclassified ones circled in red).

Every function writes its PNG atomically and returns the path.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .run import atomic_write_bytes

TYPE_COLOURS = {"affine": "#1f77b4", "activation": "#ff7f0e", "output": "#2ca02c", "soft pin": "#9467bd",
                "other": "#7f7f7f"}
MAIN_COLOUR, BASE_COLOUR = "#1f77b4", "#d62728"


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _finite_xy(steps, values):
    pts = [(s, v) for s, v in zip(steps, values) if v is not None and np.isfinite(v)]
    return ([p[0] for p in pts], [p[1] for p in pts]) if pts else ([], [])


def plot_loss(records: list[dict], path, *, title: str = "", main_label: str = "sheaf",
              baseline_label: str = "backprop (baseline)", ylabel: str = "training loss (batch)") -> Path:
    """Loss against step (log scale) from metrics records (``step``, ``loss``, optional ``baseline_loss``)."""
    fig = _figure(7, 4.2)
    ax = fig.add_subplot()
    steps = [r["step"] for r in records]
    xs, ys = _finite_xy(steps, [r.get("loss") for r in records])
    ax.plot(xs, ys, color=MAIN_COLOUR, lw=1.8, marker="o" if len(xs) < 30 else None, ms=3, label=main_label)
    bx, by = _finite_xy(steps, [r.get("baseline_loss") for r in records])
    if bx:
        ax.plot(bx, by, color=BASE_COLOUR, lw=1.5, ls="--", marker="s" if len(bx) < 30 else None, ms=3,
                label=baseline_label)
    if ys and min(ys + by) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title or "training loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_discord(diagnosis, path, *, title: str = "") -> Path:
    """Per-edge discord energy (bars coloured by type), with the per-type and per-layer totals beside."""
    from matplotlib.patches import Patch

    rows = diagnosis.edges
    side = [("per type", diagnosis.types, True)] + ([("per layer", diagnosis.layers, False)] if diagnosis.layers else [])
    fig = _figure(6 + 2.3 * len(side), max(3.0, 0.35 * len(rows) + 1.6))
    gs = fig.add_gridspec(1, 1 + len(side), width_ratios=[3] + [1.2] * len(side))
    ax = fig.add_subplot(gs[0, 0])
    names = [r.name for r in rows]
    vals = np.array([r.energy if np.isfinite(r.energy) else 0.0 for r in rows])
    colours = [TYPE_COLOURS.get(r.type, "#7f7f7f") for r in rows]
    y = np.arange(len(rows))
    ax.barh(y, vals, color=colours)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    positive = vals[vals > 0]
    if positive.size and positive.max() / positive.min() > 100:
        ax.set_xscale("log")
        ax.set_xlim(positive.min() / 3, positive.max() * 3)
    for yi, (r, v) in enumerate(zip(rows, vals)):
        if v > 0:
            ax.text(v, yi, f" {v:.3g} ({100 * r.share:.0f}%)", va="center", fontsize=8)
    ax.set_xlabel("discord energy  ½ w² ‖δc*‖²  (mean per example)")
    ax.set_title(title or "discord per edge", loc="left")
    used = [t for t in TYPE_COLOURS if any(r.type == t for r in rows)]
    ax.legend(handles=[Patch(color=TYPE_COLOURS[t], label=t) for t in used], loc="best", fontsize=8, framealpha=0.9)
    ax.grid(True, axis="x", alpha=0.3)
    ax.margins(x=0.25)
    for k, (label, groups, by_type) in enumerate(side, start=1):
        axk = fig.add_subplot(gs[0, k])
        colours = [TYPE_COLOURS.get(g.group, "#7f7f7f") for g in groups] if by_type else "#8c564b"
        axk.bar([g.group if by_type else f"layer {g.group}" for g in groups], [100 * g.share for g in groups],
                color=colours)
        axk.set_ylabel("share of the residual (%)")
        axk.set_ylim(0, 105)
        axk.set_title(label)
        axk.tick_params(axis="x", rotation=45)
        axk.grid(True, axis="y", alpha=0.3)
    return _save(fig, path)


def _grid(X: np.ndarray, n: int = 120):
    lo, hi = X.min(axis=0), X.max(axis=0)
    pad = 0.05 * (hi - lo + 1e-12)
    g0 = np.linspace(lo[0] - pad[0], hi[0] + pad[0], n)
    g1 = np.linspace(lo[1] - pad[1], hi[1] + pad[1], n)
    A, B = np.meshgrid(g0, g1)
    return A, B, np.column_stack([A.ravel(), B.ravel()])


def plot_surface(predict, data, path, *, title: str = "") -> Path:
    """Regression, 2-D input: the learned f̂ over the data's box, and predicted vs true on the test set."""
    fig = _figure(10, 4.4)
    ax, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    A, B, P = _grid(np.asarray(data.X_train))
    F = np.asarray(predict(P))[:, 0].reshape(A.shape)
    cs = ax.contourf(A, B, F, levels=20, cmap="viridis")
    ax.contour(A, B, F, levels=10, colors="k", linewidths=0.4, alpha=0.5)
    fig.colorbar(cs, ax=ax, label="learned f̂(x)")
    Xt = np.asarray(data.X_train)
    ax.scatter(Xt[:, 0], Xt[:, 1], s=6, c="white", edgecolors="k", linewidths=0.3, label="training points")
    ax.set_xlabel("x₁")
    ax.set_ylabel("x₂")
    ax.set_title(title or "learned surface")
    ax.legend(loc="upper right", fontsize=8)
    Xs, Ys = np.asarray(data.X_test), np.asarray(data.Y_test).reshape(len(data.X_test), -1)[:, 0]
    pred = np.asarray(predict(Xs))[:, 0]
    ax2.scatter(Ys, pred, s=10, alpha=0.7)
    lo, hi = float(min(Ys.min(), pred.min())), float(max(Ys.max(), pred.max()))
    ax2.plot([lo, hi], [lo, hi], "k--", lw=1)
    mse = float(np.mean((pred - Ys) ** 2))
    ax2.set_xlabel("true y (test)")
    ax2.set_ylabel("predicted ŷ")
    ax2.set_title(f"test set: MSE {mse:.4g}")
    ax2.grid(True, alpha=0.3)
    return _save(fig, path)


def _labels(Y) -> np.ndarray:
    Y = np.asarray(Y)
    if Y.ndim == 2 and Y.shape[1] > 1:
        return Y.argmax(axis=1)
    return np.rint(Y.reshape(len(Y))).astype(int)


def _classes(out: np.ndarray) -> np.ndarray:
    out = np.asarray(out)
    if out.shape[1] > 1:
        return out.argmax(axis=1)
    return (out[:, 0] >= 0.5).astype(int)


def plot_boundary(predict, data, path, *, title: str = "") -> Path:
    """Classification, 2-D input: decision regions of the model, test points coloured by true class."""
    from matplotlib.colors import ListedColormap

    fig = _figure(6.4, 5.2)
    ax = fig.add_subplot()
    A, B, P = _grid(np.vstack([np.asarray(data.X_train), np.asarray(data.X_test)]), n=200)
    out = np.asarray(predict(P))
    K = max(int(getattr(data, "n_classes", 0) or 0), out.shape[1] if out.shape[1] > 1 else 2)
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
               "#17becf"]
    cmap = ListedColormap([palette[i % len(palette)] for i in range(K)])
    C = _classes(out).reshape(A.shape)
    ax.contourf(A, B, C, levels=np.arange(K + 1) - 0.5, cmap=cmap, alpha=0.25)
    if out.shape[1] == 1:
        ax.contour(A, B, out[:, 0].reshape(A.shape), levels=[0.5], colors="k", linewidths=1.2)
    else:
        ax.contour(A, B, C, levels=np.arange(K) + 0.5, colors="k", linewidths=0.8)
    Xs = np.asarray(data.X_test)
    ys = _labels(data.Y_test)
    pred = _classes(np.asarray(predict(Xs)))
    ax.scatter(Xs[:, 0], Xs[:, 1], c=ys, cmap=cmap, vmin=-0.5, vmax=K - 0.5, s=16, edgecolors="k", linewidths=0.4)
    wrong = pred != ys
    if wrong.any():
        ax.scatter(Xs[wrong, 0], Xs[wrong, 1], s=70, facecolors="none", edgecolors="red", linewidths=1.2,
                   label=f"misclassified ({int(wrong.sum())})")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("x₁")
    ax.set_ylabel("x₂")
    ax.set_title((title or "decision boundary") + f"  (test accuracy {100 * float(np.mean(~wrong)):.1f}%)")
    return _save(fig, path)


__all__ = ["plot_loss", "plot_discord", "plot_surface", "plot_boundary"]
