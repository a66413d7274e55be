"""PNG plots of a training run (matplotlib, Agg; no pyplot, so no global backend is touched).

- :func:`plot_loss` (``loss.png``): the training curves from ``metrics.jsonl``: the training loss
  and the test loss (and, for a classifier, the test accuracy) per logged step, the trainer against
  the baseline when one ran; below them λ_min(L_free) and each edge's discord over training
  (:func:`draw_lambda_min`, :func:`draw_edge_discord`; dotted lines at the run's snapshot steps);
- :func:`plot_equilibrium_history`: those two panels alone (what ``sheaf paper`` items draw from a
  run's ``metrics.jsonl``);
- :func:`plot_discord`: per-edge discord energy as bars, coloured by edge type, with the per-layer
  totals beside them;
- :func:`plot_surface`: for a regression with a 2-D input and a 1-D output, the learned function
  over the data's box with the training points, and predicted against true on the test set;
- :func:`plot_boundary`: for a classification with a 2-D input, the decision regions with the test
  points (misclassified ones circled in red);
- :func:`plot_residuals` (``sheaf infer --solver admm --plot``): an ADMM solve's primal and dual
  residuals per iteration against their tolerances, and ρ.

Every function writes its PNG atomically and returns the path. Figures are laid out by hand
(fixed margins and gaps in inches) rather than by matplotlib's constrained layout, which measures
every tick label again and costs more than drawing the figure.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from .run import atomic_write_bytes

TYPE_COLOURS = {"affine": "#1f77b4", "activation": "#ff7f0e", "output": "#2ca02c", "soft pin": "#9467bd",
                "other": "#7f7f7f"}
MAIN_COLOUR, BASE_COLOUR = "#1f77b4", "#d62728"
EDGE_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
                "#17becf"]


def _figure(w: float, h: float, *, left=0.8, right=0.25, bottom=0.6, top=0.45, wspace=0.3, hspace=0.4):
    """A w × h inch figure; margins in inches, gaps between panels as fractions of the panel size."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h, wspace=wspace,
                        hspace=hspace)
    return fig


def _save(fig, path, code: str = "E641") -> Path:
    """Render to memory, then one atomic write: a failed write (E641, or ``code``) leaves no partial PNG."""
    from ..fileio import write_error

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:
        raise write_error(code, path, exc) from None
    return Path(path)


def _can_fork() -> bool:
    """Whether a fork is safe here: the platform forks, and only this thread runs (a fork copies the others
    mid-flight: a notebook's, a Dask client's)."""
    import threading

    return hasattr(os, "fork") and threading.active_count() == 1


def _send_outcome(fd: int, fn) -> None:
    """In a forked child: run ``fn`` and write ("ok", its value) or ("error", what it raised), pickled, to
    ``fd`` (an error that does not pickle is sent as a RuntimeError that says what it was)."""
    import pickle

    try:
        msg = ("ok", fn())
    except BaseException as exc:  # noqa: BLE001  raised in the parent, not here
        msg = ("error", exc)
    try:
        blob = pickle.dumps(msg)
    except Exception:  # noqa: BLE001
        blob = pickle.dumps(("error", RuntimeError(f"{type(msg[1]).__name__}: {msg[1]}")))
    with os.fdopen(fd, "wb") as f:
        f.write(blob)


def _receive_outcome(fd: int, pid: int, what: str):
    """In the parent: :func:`_send_outcome`'s (kind, value) from ``fd``, once child ``pid`` is reaped (a
    child that ended without sending: ("error", a RuntimeError naming ``what`` and its status))."""
    import pickle

    with os.fdopen(fd, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    return pickle.loads(data) if data else (
        "error", RuntimeError(f"{what} ended with status {status} before it wrote its figures"))


def write_all(jobs: list) -> list:
    """Run plot jobs (callables that each write one PNG and return its path) and return their paths in
    order. Where a fork is safe (:func:`_can_fork`: the end of a ``sheaf train``), the first job runs
    here and each other one in a forked child, so the figures render on the cores a one-thread run leaves
    idle; the files are the same either way, and the first failing job's error (in job order) is raised
    here as it would be in turn. Otherwise they run in turn."""
    if len(jobs) < 2 or not _can_fork():
        return [job() for job in jobs]
    from matplotlib.backends import backend_agg  # noqa: F401  imported once, before the children copy it

    children = []
    for job in jobs[1:]:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: render, send the outcome back, exit without cleanup
            try:
                os.close(r)
                _send_outcome(w, job)
            finally:
                os._exit(0)
        os.close(w)
        children.append((pid, r))
    results, first_error = [], None
    try:
        results.append(jobs[0]())
    except BaseException as exc:  # noqa: BLE001  the children are reaped first
        first_error = exc
    for pid, r in children:
        kind, value = _receive_outcome(r, pid, "a plot's process")
        if kind == "ok":
            results.append(value)
        elif first_error is None:
            first_error = value
    if first_error is not None:
        raise first_error
    return results


class PlotProcess:
    """A forked process that imports matplotlib (and renders a first figure, which loads the fonts) while
    the run trains, on a core a one-thread run leaves idle, and then renders the run's plot jobs
    (:func:`write_all`) when :meth:`run` hands them over: the end of a run waits for its figures, not for
    matplotlib's import. Where a fork is not safe (:func:`_can_fork`), nothing is started and :meth:`run`
    renders in this process. The child ignores SIGINT (the run's Ctrl-C is the run's) and exits when this
    process closes its end of the pipe (:meth:`close`, or this process's exit)."""

    def __init__(self):
        self.pid = None
        if not _can_fork():
            return
        import signal

        jobs_r, jobs_w = os.pipe()
        out_r, out_w = os.pipe()
        # SIGINT blocked across the fork: the child ignores it from its first instruction, and one that
        # arrives meanwhile is delivered to this process when it unblocks
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        pid = os.fork()
        if pid == 0:  # the child
            try:
                import pickle

                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
                os.close(jobs_w)
                os.close(out_r)
                try:
                    _warm()
                except Exception:  # noqa: BLE001  a failure to warm up shows when the jobs run
                    pass
                with os.fdopen(jobs_r, "rb") as f:
                    data = f.read()  # until the run closes its end
                if data:
                    _send_outcome(out_w, lambda: write_all(pickle.loads(data)))
            finally:
                os._exit(0)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(jobs_r)
        os.close(out_w)
        self.pid, self._jobs_w, self._out_r = pid, jobs_w, out_r

    def run(self, jobs: list) -> list:
        """:func:`write_all` of ``jobs`` in the child (here where none runs, or the jobs do not pickle)."""
        if self.pid is None:
            return write_all(jobs)
        import pickle

        try:
            data = pickle.dumps(jobs)
        except Exception:  # noqa: BLE001  (a job holding a closure): rendered here
            self.close()
            return write_all(jobs)
        with os.fdopen(self._jobs_w, "wb") as f:
            self._jobs_w = None
            f.write(data)
        out, self._out_r = self._out_r, None
        kind, value = _receive_outcome(out, self.pid, "the plots' process")
        self.pid = None
        if kind == "error":
            raise value
        return value

    def close(self) -> None:
        """End the child without jobs (a run that writes no plots, or stopped early)."""
        for fd in (self._jobs_w, self._out_r) if self.pid is not None else ():
            if fd is not None:
                os.close(fd)
        if self.pid is not None:
            os.waitpid(self.pid, 0)
            self.pid = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _warm() -> None:
    """Import the renderer and draw one small figure with text (fonts and caches loaded once, before the jobs
    fork from here)."""
    fig = _figure(2, 1.5)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], label="x")
    ax.set_title("warm", fontsize=10)
    ax.legend(fontsize=8)
    fig.savefig(io.BytesIO(), format="png")


def _finite_xy(steps, values):
    pts = [(s, v) for s, v in zip(steps, values) if v is not None and np.isfinite(v)]
    return ([p[0] for p in pts], [p[1] for p in pts]) if pts else ([], [])


def compact_ticks(ax, axis: str = "x", n: int = 5) -> None:
    """At most about ``n`` labelled ticks, written compactly (``0.02``, ``1e-05``), on a linear or a
    log axis: tick labels never run together, and a log axis spanning less than a decade still
    gets labels (at 1, 2 and 5, or every digit, times a power of ten)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

    a = ax.xaxis if axis == "x" else ax.yaxis
    if a.get_scale() == "log":
        lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
        decades = np.log10(hi / lo) if lo > 0 else n
        subs = tuple(range(1, 10)) if decades < 0.7 else (1.0, 2.0, 5.0) if decades < 2 else (1.0,)
        a.set_major_locator(LogLocator(base=10, subs=subs, numticks=n + 1))
        a.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        a.set_minor_locator(NullLocator())  # minor ticks cost more to lay out than they say
    else:
        a.set_major_locator(MaxNLocator(nbins=n, steps=[1, 2, 2.5, 5, 10]))


_ticks = compact_ticks


def _curve(ax, records, key, label, colour, ls="-"):
    steps = [r["step"] for r in records]
    xs, ys = _finite_xy(steps, [r.get(key) for r in records])
    if xs:
        ax.plot(xs, ys, color=colour, lw=1.6, ls=ls, marker="o" if len(xs) < 30 else None, ms=3, label=label)
    return ys


def _panel(ax, records, key, title, ylabel, main_label, baseline_label, log=True):
    ys = _curve(ax, records, key, main_label, MAIN_COLOUR)
    bys = _curve(ax, records, "baseline_" + key, baseline_label, BASE_COLOUR, ls="--")
    if log and ys and min(ys + bys) > 0:
        ax.set_yscale("log")
    if not ys and not bys:
        ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_xlabel("step", fontsize=9)
    ax.grid(True, alpha=0.3)
    _ticks(ax, "x")
    _ticks(ax, "y")
    if ys and bys:
        ax.legend(fontsize=8)


def _marks(ax, marks) -> None:
    """Dotted vertical lines at the steps ``marks`` (a run's snapshots)."""
    for m in marks or ():
        ax.axvline(m, color="0.55", ls=":", lw=1.0, zorder=0)


def draw_lambda_min(ax, records, *, marks=(), key: str = "lambda_min", label: str = "λ_min",
                    colour: str = "#444444", title: str = "λ_min(L_free), 16 training examples at their forward "
                    "pattern") -> list:
    """λ_min(L_free) against step from metrics records (``metrics.jsonl``: the steps where it was
    sampled), log scale when positive; ``marks``: snapshot steps. Returns the values drawn."""
    ys = _curve(ax, records, key, label, colour)
    if ys and min(ys) > 0:
        ax.set_yscale("log")
    if not ys:
        ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("λ_min", fontsize=9)
    ax.set_xlabel("step", fontsize=9)
    ax.grid(True, alpha=0.3)
    _marks(ax, marks)
    _ticks(ax, "x")
    _ticks(ax, "y")
    return ys


def draw_edge_discord(ax, records, *, marks=(), ls: str = "-", suffix: str = "", legend: bool = True) -> list[str]:
    """The discord of every edge ½‖(δc*)_e‖² (mean over the logged examples, at the two-sided
    equilibrium) against step from metrics records (``edge_discord``: edge -> value), one colour per
    edge in the order the edges first appear; log scale when all are positive. Returns the edge names."""
    names = list(dict.fromkeys(k for r in records for k in (r.get("edge_discord") or {})))
    steps = [r["step"] for r in records]
    positive = True
    for i, e in enumerate(names):
        xs, ys = _finite_xy(steps, [(r.get("edge_discord") or {}).get(e) for r in records])
        if xs:
            ax.plot(xs, ys, color=EDGE_PALETTE[i % len(EDGE_PALETTE)], lw=1.4, ls=ls, label=e + suffix)
            positive = positive and min(ys) > 0
    if names and positive and ax.lines and ax.get_yscale() != "log":
        ax.set_yscale("log")
    if not names:
        ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_title("discord per edge  ½‖(δc*)_e‖² (mean)", fontsize=10)
    ax.set_xlabel("step", fontsize=9)
    ax.grid(True, alpha=0.3)
    _marks(ax, marks)
    _ticks(ax, "x")
    _ticks(ax, "y")
    if legend and ax.lines:
        ax.legend(fontsize=7, ncol=2 if len(ax.lines) > 5 else 1, loc="best")
    return names


def plot_equilibrium_history(records: list[dict], path, *, title: str = "", marks=()) -> Path:
    """λ_min(L_free) and the discord per edge over training, from a run's metrics records
    (``metrics.jsonl``), side by side; dotted lines at ``marks`` (snapshot steps)."""
    fig = _figure(11, 4.2, left=0.8, bottom=0.6, top=0.7, wspace=0.3)
    draw_lambda_min(fig.add_subplot(1, 2, 1), records, marks=marks)
    draw_edge_discord(fig.add_subplot(1, 2, 2), records, marks=marks)
    fig.suptitle(title or "equilibrium diagnostics over training", fontsize=11)
    return _save(fig, path)


def plot_loss(records: list[dict], path, *, title: str = "", main_label: str = "sheaf",
              baseline_label: str = "backprop (baseline)", ylabel: str = "training loss (batch)",
              test_label: str = "test loss", marks=()) -> Path:
    """The training curves of a run from its metrics records (see the module docstring).

    Records carry ``step`` and any of ``loss``, ``test_loss``, ``test_accuracy`` (each also with a
    ``baseline_`` prefix), ``lambda_min`` and ``edge_discord`` (edge -> ½‖(δc*)_e‖²); a missing or
    non-finite value is skipped. The top row is the training and the test loss (and accuracy), the
    bottom row :func:`draw_lambda_min` and :func:`draw_edge_discord`; ``marks`` (a run's snapshot
    steps) are dotted lines on every panel.
    """
    accuracy = any(r.get("test_accuracy") is not None for r in records)
    top = 3 if accuracy else 2
    fig = _figure(11, 7.2, left=0.8, bottom=0.55, top=0.7, wspace=1.1, hspace=0.45)
    gs = fig.add_gridspec(2, 6)
    span = 6 // top
    axes = [fig.add_subplot(gs[0, k * span:(k + 1) * span]) for k in range(top)]
    _panel(axes[0], records, "loss", "training loss", ylabel, main_label, baseline_label)
    _panel(axes[1], records, "test_loss", "test loss", test_label, main_label, baseline_label)
    if accuracy:
        _panel(axes[2], records, "test_accuracy", "test accuracy", "accuracy", main_label, baseline_label, log=False)
    draw_lambda_min(fig.add_subplot(gs[1, 0:3]), records, marks=marks)
    draw_edge_discord(fig.add_subplot(gs[1, 3:6]), records, marks=marks)
    for ax in axes:
        _marks(ax, marks)
    fig.suptitle(title or "training curves", fontsize=11)
    return _save(fig, path)


def plot_discord(diagnosis, path, *, title: str = "") -> Path:
    """Per-edge discord energy (bars coloured by type), with the per-type and per-layer totals beside."""
    from matplotlib.patches import Patch

    rows = diagnosis.edges
    side = [("per type", diagnosis.types, True)] + ([("per layer", diagnosis.layers, False)] if diagnosis.layers else [])
    width = 6.5 + 2.4 * len(side)
    names = [r.name for r in rows]
    left = 0.35 + 0.075 * max([len(n) for n in names] + [4])  # room for the edge names
    height = max(3.2, 0.35 * len(rows) + 1.9)
    fig = _figure(width, height, left=left, right=0.2, bottom=0.95, top=0.75, wspace=0.55)
    gs = fig.add_gridspec(1, 1 + len(side), width_ratios=[3.2] + [1.2] * len(side))
    ax = fig.add_subplot(gs[0, 0])
    vals = np.array([r.energy if np.isfinite(r.energy) else 0.0 for r in rows])
    colours = [TYPE_COLOURS.get(r.type, "#7f7f7f") for r in rows]
    y = np.arange(len(rows))
    ax.barh(y, vals, color=colours)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    positive = vals[vals > 0]
    if positive.size and positive.max() / positive.min() > 100:
        ax.set_xscale("log")
        ax.set_xlim(positive.min() / 3, positive.max() * 30)  # room for the value labels
    elif positive.size:
        ax.set_xlim(0, positive.max() * 1.45)
    _ticks(ax, "x", n=5)
    if ax.get_xscale() == "linear":
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
    for yi, (r, v) in enumerate(zip(rows, vals)):
        if v > 0:
            ax.text(v, yi, f" {v:.3g} ({100 * r.share:.0f}%)", va="center", fontsize=8)
    ax.set_xlabel("discord energy  ½ w² ‖δc*‖²  (mean per example)", fontsize=9)
    # the title spans the figure (a long one, e.g. with a file path, cannot run into the side panels)
    fig.suptitle(title or "discord per edge", x=0.1 / width, y=1 - 0.12 / height, ha="left", va="top", fontsize=10,
                 wrap=True)
    ax.set_title("per edge", fontsize=10)
    used = [t for t in TYPE_COLOURS if any(r.type == t for r in rows)]
    ax.legend(handles=[Patch(color=TYPE_COLOURS[t], label=t) for t in used], loc="lower right", fontsize=8,
              framealpha=0.9)
    ax.grid(True, axis="x", alpha=0.3)
    for k, (label, groups, by_type) in enumerate(side, start=1):
        axk = fig.add_subplot(gs[0, k])
        colours = [TYPE_COLOURS.get(g.group, "#7f7f7f") for g in groups] if by_type else "#8c564b"
        axk.bar([g.group if by_type else f"layer {g.group}" for g in groups], [100 * g.share for g in groups],
                color=colours)
        axk.set_ylabel("share of the residual (%)", fontsize=9)
        axk.set_ylim(0, 105)
        axk.set_title(label, fontsize=10)
        axk.tick_params(axis="x", rotation=45, labelsize=8)
        for lab in axk.get_xticklabels():
            lab.set_horizontalalignment("right")
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
    fig = _figure(11, 4.6, left=0.7, right=0.25, bottom=0.6, top=0.45)
    gs = fig.add_gridspec(1, 4, width_ratios=[1, 0.05, 0.42, 1], wspace=0.08)
    ax, cax, ax2 = fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1]), fig.add_subplot(gs[0, 3])
    A, B, P = _grid(np.asarray(data.X_train), n=90)
    F = np.asarray(predict(P))[:, 0].reshape(A.shape)
    cs = ax.contourf(A, B, F, levels=20, cmap="viridis")
    ax.contour(A, B, F, levels=10, colors="k", linewidths=0.4, alpha=0.5)
    fig.colorbar(cs, cax=cax, label="learned f̂(x)")
    Xt = np.asarray(data.X_train)
    ax.scatter(Xt[:, 0], Xt[:, 1], s=6, c="white", edgecolors="k", linewidths=0.3, label="training points")
    ax.set_xlabel("x₁")
    ax.set_ylabel("x₂")
    ax.set_title(title or "learned surface", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    Xs, Ys = np.asarray(data.X_test), np.asarray(data.Y_test).reshape(len(data.X_test), -1)[:, 0]
    pred = np.asarray(predict(Xs))[:, 0]
    ax2.scatter(Ys, pred, s=10, alpha=0.7)
    lo, hi = float(min(Ys.min(), pred.min())), float(max(Ys.max(), pred.max()))
    ax2.plot([lo, hi], [lo, hi], "k--", lw=1)
    mse = float(np.mean((pred - Ys) ** 2))
    ax2.set_xlabel("true y (test)")
    ax2.set_ylabel("predicted ŷ")
    ax2.set_title(f"test set: MSE {mse:.4g}", fontsize=10)
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

    fig = _figure(6.4, 5.4, left=0.7, right=0.2, bottom=0.6, top=0.45)
    ax = fig.add_subplot()
    A, B, P = _grid(np.vstack([np.asarray(data.X_train), np.asarray(data.X_test)]), n=150)
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




def plot_residuals(result, path, *, title: str = "") -> Path:
    """The residuals of an ADMM solve (a :class:`sheafdsl.solvers.SolveResult` with ``primal_trace``,
    ``dual_trace`` (T, B), ``rho_trace``): the primal residual ‖r_k‖ and the dual residual ‖s_k‖ per
    iteration on a log scale, with their final tolerances ε_pri, ε_dual dashed (the solve stops when both
    curves are under their lines), and ρ_k below. A batch shows its worst instance (the largest
    residuals at each iteration). A write failure is E530."""
    from ..lowering.backend import to_numpy

    rp = np.asarray(to_numpy(result.primal_trace), dtype=float)
    rd = np.asarray(to_numpy(result.dual_trace), dtype=float)
    rho = np.asarray(to_numpy(result.rho_trace), dtype=float)
    ep = float(np.max(to_numpy(result.primal_tolerance)))
    ed = float(np.max(to_numpy(result.dual_tolerance)))
    k = np.arange(1, rp.shape[0] + 1)
    fig = _figure(7.0, 5.0, hspace=0.35)
    ax, ax2 = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
    tiny = 1e-300
    ax.semilogy(k, np.maximum(rp.max(axis=1), tiny), color=MAIN_COLOUR, label="primal ‖r‖")
    ax.semilogy(k, np.maximum(rd.max(axis=1), tiny), color=BASE_COLOUR, label="dual ‖s‖")
    ax.axhline(ep, color=MAIN_COLOUR, ls="--", lw=0.8, label="ε_pri")
    ax.axhline(ed, color=BASE_COLOUR, ls="--", lw=0.8, label="ε_dual")
    ax.set_ylabel("residual")
    ax.set_title(title or f"{result.method}: {rp.shape[0]} iterations" + (f", worst of {rp.shape[1]}" if rp.shape[1] > 1 else ""))
    ax.legend(loc="upper right", fontsize=8)
    ax2.semilogy(k, rho.max(axis=1), color="#2ca02c")
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("ρ")
    return _save(fig, path, code="E530")


__all__ = ["compact_ticks", "draw_lambda_min", "draw_edge_discord", "plot_equilibrium_history", "plot_loss", "plot_discord", "plot_surface", "plot_boundary", "plot_residuals"]
