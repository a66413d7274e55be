"""The heat-equation items: Fig 1, Fig E.1 and Fig E.2 (``sheaf paper fig1|E1|E2``; docs/paper.md).

Each integrates the paper's heat equation ċ = −α ∇E on a network sheaf with only its input pinned, from
random initial stalks, by the plain explicit Euler flow of the one heat-equation solver
(``solver="diffusion"`` with ``dt``; :mod:`sheafdsl.solvers.diffusion`), input (0.5, −0.3), α = 1,
dt = 0.01, until the largest change of a coordinate in one step is below 1e-15 or the iteration cap. The
harmonic extension it converges to is the forward pass, which is computed beside it (``solver="exact"``).

On one piece of the flow (no unit crossing its switching surface) the error contracts by 1 − α dt λ
along each eigenvector of L_free, so the discord energy decays asymptotically by (1 − α dt λ_min)² per
step, λ_min that of the inference L_free at the final activation pattern: Fig 1's numbers set the
measured rate beside that prediction, and bound the output's distance to the forward pass by
‖c − c*‖ ≤ √(2E/λ_min).
"""

from __future__ import annotations

import math

import numpy as np

from .common import HEAT_ALPHA, HEAT_CHANGE_TOL, HEAT_DT, HEAT_INPUT, PaperContext, label, network, new_figure

#: iteration caps (full, quick) of each item
CAPS = {"fig1": (10_000, 1_500), "E1": (62_500, 1_500), "E2": (10_000, 800)}
#: Fig E.2's nets
E2_NETS = ([2, 4, 1], [2, 6, 4, 1], [2, 6, 4, 4, 1])
CROSS_ON, CROSS_OFF = "#2ca02c", "#d62728"


def heat_run(sh, params, *, maxiter: int, seed: int, every: int = 1):
    """The paper's heat-equation run on ``sh`` (input :data:`HEAT_INPUT`, random initial stalks seeded by
    ``seed``, α = 1, dt = 0.01, the change rule 1e-15, at most ``maxiter`` steps), traced; and the forward
    pass (the exact harmonic extension) beside it."""
    run = sh.infer(list(HEAT_INPUT), params=params, solver="diffusion", x0="random", x0_seed=seed, dt=HEAT_DT,
                   alpha=HEAT_ALPHA, change_tol=HEAT_CHANGE_TOL, maxiter=maxiter, trace=True, trace_every=every)
    return run, sh.infer(list(HEAT_INPUT), params=params)


def run_numbers(run, forward, *, maxiter: int) -> dict:
    """What every heat item reports of one run: iterations, why it stopped, the discord at the start and the
    end, the output against the forward pass, the crossings."""
    t = run.trajectory
    y, f = run.stalks["y"][0], forward.stalks["y"][0]
    vals = np.concatenate([t.stalks[v] for v in t.stalks], axis=2)[:, 0]
    last_change = float(np.abs(vals[-1] - vals[-2]).max()) / max(int(t.iterations[-1] - t.iterations[-2]), 1) \
        if len(t.iterations) > 1 else 0.0
    return {"iterations": int(run.iterations), "max_iterations": maxiter,
            "stopped_by": "change below 1e-15" if bool(run.converged[0]) else "iteration cap",
            "last_change": last_change,
            "discord_start": float(t.discord[0, 0]), "discord_end": float(t.discord[-1, 0]),
            "layers_end": {str(k): float(v[-1, 0]) for k, v in t.layers.items()},
            "output": y.tolist(), "forward": f.tolist(), "output_error": float(np.abs(y - f).max()),
            "crossings": len(t.crossings),
            "crossing_list": [[c["iteration"], f"{c['stalk']}[{c['index']}]", c["direction"]] for c in t.crossings]}


def decay_rate(t, *, start: int) -> float:
    """The measured per-step factor of the discord energy, exp of the least-squares slope of log E over the
    snapshots at iterations ≥ ``start`` (where E is above round-off)."""
    it = np.asarray(t.iterations, dtype=float)
    E = np.asarray(t.discord[:, 0], dtype=float)
    keep = (it >= start) & (E > 1e-26)
    if keep.sum() < 3:
        return math.nan
    slope = np.polyfit(it[keep], np.log(E[keep]), 1)[0]
    return float(np.exp(slope))


def inference_lambda_min(sh, params, run) -> float:
    """λ_min of the inference L_free at the final state of ``run`` (its gates and linearisation point)."""
    from ..analysis.spectrum import VARIANTS, extreme_eigenvalues, restricted_laplacian, states_at

    state, gates = states_at(run.result, 0)[0]
    L = restricted_laplacian(sh.graph, params, VARIANTS["inference"], state=state, gates=gates)
    return float(extreme_eigenvalues(L).lambda_min)


def _mark_crossings(ax, t, series):
    """A marker on ``series`` (T,) at each crossing's iteration: green towards on, red towards off."""
    it = np.asarray(t.iterations)
    for c in t.crossings:
        i = min(int(np.searchsorted(it, c["iteration"])), len(it) - 1)
        ax.plot([it[i]], [series[i]], "v" if c["direction"] < 0 else "^", ms=5,
                color=CROSS_ON if c["direction"] > 0 else CROSS_OFF, zorder=3)


def _settings(maxiter: int, seed: int) -> dict:
    return {"input": list(HEAT_INPUT), "alpha": HEAT_ALPHA, "dt": HEAT_DT, "change_tol": HEAT_CHANGE_TOL,
            "max_iterations": maxiter, "x0": "random", "x0_seed": seed, "weights_seed": seed}


# ------------------------------------------------------------------------------------------------
# Fig 1


def fig1(ctx: PaperContext) -> dict:
    """Fig 1: the heat equation on the [2,4,1] identity-output net converges to the forward pass.

    Plots: the total discord against iteration (log scale) with a marker at every activation-pattern
    crossing; the output stalk against iteration, converging to the forward-pass value; its distance to it."""
    widths = [2, 4, 1]
    maxiter = CAPS["fig1"][ctx.quick]
    sh = network(widths)
    P = sh.init_params(seed=ctx.seed)
    ctx.log(f"fig1: {label(widths)}, up to {maxiter:,} heat-equation steps")
    run, fwd = heat_run(sh, P, maxiter=maxiter, seed=ctx.seed)
    t = run.trajectory
    out = run_numbers(run, fwd, maxiter=maxiter)
    lam = inference_lambda_min(sh, P, run)
    last = max([c["iteration"] for c in t.crossings], default=0)
    start = max(last + 1, int(0.5 * t.iterations[-1]))
    out.update({"net": label(widths), "settings": _settings(maxiter, ctx.seed), "lambda_min": lam,
                "decay_measured": decay_rate(t, start=start), "decay_predicted": (1 - HEAT_ALPHA * HEAT_DT * lam) ** 2,
                "error_bound": math.sqrt(2 * out["discord_end"] / lam) if lam > 0 else math.inf})
    ctx.log(f"fig1: {out['iterations']:,} steps ({out['stopped_by']}), {out['crossings']} crossings, "
            f"|y - forward| = {out['output_error']:.3g}")

    fig = new_figure(11.0, 3.6, left=0.7, right=0.2, top=0.75, wspace=0.38)
    it = t.iterations
    ax = fig.add_subplot(1, 3, 1)
    ax.semilogy(it, np.maximum(t.discord[:, 0], 1e-300), color="#1f77b4", lw=1.2)
    _mark_crossings(ax, t, t.discord[:, 0])
    ax.set(xlabel="iteration", ylabel="total discord E", title="discord (▲ on, ▼ off: crossings)")
    ax = fig.add_subplot(1, 3, 2)
    ax.plot(it, t.stalks["y"][:, 0, 0], color="#1f77b4", lw=1.2, label="output stalk y")
    ax.axhline(fwd.stalks["y"][0, 0], color="k", ls="--", lw=1, label="forward pass")
    ax.set(xlabel="iteration", ylabel="y", title="the output stalk")
    ax.legend(frameon=False, fontsize=8)
    ax = fig.add_subplot(1, 3, 3)
    ax.semilogy(it, np.maximum(np.abs(t.stalks["y"][:, 0, 0] - fwd.stalks["y"][0, 0]), 1e-300), color="#9467bd")
    ax.set(xlabel="iteration", ylabel="|y − forward|", title="distance to the forward pass")
    fig.suptitle(f"Fig 1: heat equation on {label(widths)} (input (0.5, −0.3), α = 1, dt = 0.01, random start)",
                 fontsize=10)
    ctx.save_figure(fig, "fig1_heat")
    return out


# ------------------------------------------------------------------------------------------------
# Fig E.1


def E1(ctx: PaperContext) -> dict:
    """Fig E.1: a convergence dashboard of the [2,6,4,4,1] sigmoid-output net: total and per-layer discord,
    the output stalk and the crossings, over up to 62,500 iterations."""
    widths = [2, 6, 4, 4, 1]
    maxiter = CAPS["E1"][ctx.quick]
    every = 1 if ctx.quick else 10
    sh = network(widths, output="sigmoid")
    P = sh.init_params(seed=ctx.seed)
    ctx.log(f"E1: {label(widths)} sigmoid output, up to {maxiter:,} heat-equation steps")
    run, fwd = heat_run(sh, P, maxiter=maxiter, seed=ctx.seed, every=every)
    t = run.trajectory
    out = run_numbers(run, fwd, maxiter=maxiter)
    per_layer: dict = {}
    for c in t.crossings:
        per_layer[c["stalk"]] = per_layer.get(c["stalk"], 0) + 1
    out.update({"net": label(widths), "output_map": "sigmoid", "settings": {**_settings(maxiter, ctx.seed),
                                                                            "trace_every": every},
                "crossings_by_stalk": per_layer,
                "last_crossing": max([c["iteration"] for c in t.crossings], default=None)})
    ctx.log(f"E1: {out['iterations']:,} steps ({out['stopped_by']}), {out['crossings']} crossings, "
            f"|y - forward| = {out['output_error']:.3g}")

    fig = new_figure(10.0, 6.8, left=0.75, right=0.2, bottom=0.55, top=0.75, wspace=0.3, hspace=0.45)
    it = t.iterations
    ax = fig.add_subplot(2, 2, 1)
    ax.semilogy(it, np.maximum(t.discord[:, 0], 1e-300), color="k", lw=1.4, label="total")
    for k, v in t.layers.items():
        ax.semilogy(it, np.maximum(v[:, 0], 1e-300), lw=1, label=f"layer {k}")
    ax.set(xlabel="iteration", ylabel="discord", title="total and per-layer discord")
    ax.legend(frameon=False, fontsize=7, ncol=2)
    ax = fig.add_subplot(2, 2, 2)
    ax.plot(it, t.stalks["y"][:, 0, 0], color="#1f77b4", lw=1.2, label="output stalk y = σ(z₄)")
    ax.axhline(fwd.stalks["y"][0, 0], color="k", ls="--", lw=1, label="forward pass")
    ax.set(xlabel="iteration", ylabel="y", title="the output stalk")
    ax.legend(frameon=False, fontsize=8)
    ax = fig.add_subplot(2, 2, 3)
    rows = [f"{v}[{i}]" for v in ("z1", "z2", "z3") for i in range(sh.stalks[v])]
    for c in t.crossings:
        ax.plot([c["iteration"]], [rows.index(f"{c['stalk']}[{c['index']}]")], "^" if c["direction"] > 0 else "v",
                color=CROSS_ON if c["direction"] > 0 else CROSS_OFF, ms=4)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows, fontsize=6)
    ax.set_ylim(-0.5, len(rows) - 0.5)
    ax.set_xscale("symlog", linthresh=100)  # the crossings come early: linear to 100, then logarithmic
    ax.set_xlim(0, max(int(it[-1]), 1))
    ax.set(xlabel="iteration", title=f"activation-pattern crossings ({len(t.crossings)}; ▲ on, ▼ off)")
    ax = fig.add_subplot(2, 2, 4)
    ax.semilogy(it, np.maximum(np.abs(t.stalks["y"][:, 0, 0] - fwd.stalks["y"][0, 0]), 1e-300), color="#9467bd")
    ax.set(xlabel="iteration", ylabel="|y − forward|", title="distance to the forward pass")
    fig.suptitle(f"Fig E.1: {label(widths)}, sigmoid output (input (0.5, −0.3), α = 1, dt = 0.01, random start)",
                 fontsize=10)
    ctx.save_figure(fig, "E1_dashboard")
    return out


# ------------------------------------------------------------------------------------------------
# Fig E.2


def plane(t) -> tuple[tuple[str, int], tuple[str, int]]:
    """The two first-layer units the trajectory is drawn against: the two with the most crossings (ties: the
    lower index), so the plane shows the pattern changing."""
    n = t.stalks["z1"].shape[2]
    count = np.zeros(n, dtype=int)
    for c in t.crossings:
        if c["stalk"] == "z1":
            count[c["index"]] += 1
    i, j = sorted(np.argsort(-count, kind="stable")[:2].tolist())
    return ("z1", i), ("z1", j)


def E2(ctx: PaperContext) -> dict:
    """Fig E.2: heat-equation trajectories of the [2,4,1], [2,6,4,1] and [2,6,4,4,1] nets in the plane of two
    first-layer pre-activations, with the switching lines z = 0 and the pattern crossings."""
    maxiter = CAPS["E2"][ctx.quick]
    fig = new_figure(12.0, 4.2, left=0.6, right=0.2, top=0.75, wspace=0.3)
    out = {"settings": _settings(maxiter, ctx.seed), "nets": {}}
    for n, widths in enumerate(E2_NETS):
        sh = network(widths)
        P = sh.init_params(seed=ctx.seed)
        ctx.log(f"E2: {label(widths)}, up to {maxiter:,} steps")
        run, fwd = heat_run(sh, P, maxiter=maxiter, seed=ctx.seed)
        t = run.trajectory
        nums = run_numbers(run, fwd, maxiter=maxiter)
        (_, i), (_, j) = plane(t)
        zi, zj = t.stalks["z1"][:, 0, i], t.stalks["z1"][:, 0, j]
        fi, fj = fwd.stalks["z1"][0, i], fwd.stalks["z1"][0, j]
        nums.update({"plane": [f"z1[{i}]", f"z1[{j}]"], "start": [float(zi[0]), float(zj[0])],
                     "end": [float(zi[-1]), float(zj[-1])], "forward_point": [float(fi), float(fj)],
                     "plane_crossings": sum(c["stalk"] == "z1" and c["index"] in (i, j) for c in t.crossings)})
        nums.pop("crossing_list")
        out["nets"][label(widths)] = nums
        ax = fig.add_subplot(1, 3, n + 1)
        ax.axhline(0, color="0.6", lw=0.8, ls="--")
        ax.axvline(0, color="0.6", lw=0.8, ls="--")
        ax.plot(zi, zj, color="#1f77b4", lw=1.2)
        ax.plot([zi[0]], [zj[0]], "o", color="#1f77b4", ms=6, label="random start")
        ax.plot([fi], [fj], "*", color="k", ms=11, label="forward pass")
        it = np.asarray(t.iterations)
        for c in t.crossings:
            if c["stalk"] == "z1" and c["index"] in (i, j):
                k = min(int(np.searchsorted(it, c["iteration"])), len(it) - 1)
                ax.plot([zi[k]], [zj[k]], "^" if c["direction"] > 0 else "v",
                        color=CROSS_ON if c["direction"] > 0 else CROSS_OFF, ms=6)
        ax.set(xlabel=f"z1[{i}]", ylabel=f"z1[{j}]",
               title=f"{label(widths)}: {nums['crossings']} crossings, {nums['iterations']:,} steps")
        ax.legend(frameon=False, fontsize=7, loc="best")
    fig.suptitle("Fig E.2: heat-equation trajectories in the plane of two first-layer units (dashed: z = 0; "
                 "▲ on, ▼ off)", fontsize=10)
    ctx.save_figure(fig, "E2_trajectories")
    return out
