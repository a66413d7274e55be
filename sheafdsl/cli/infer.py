"""``sheaf infer FILE --input JSON [--pin NAME=JSON ...] [--solver exact|diffusion|cg|admm|admm-local] [--json]``.

The harmonic extension of the pins: stalks pinned to ``input`` take the values of ``--input`` (in
declaration order), constants come from the file, stalks pinned to ``target`` are free. ``--pin`` adds or
overrides hard pins (``--pin y=[0.3]`` pins the output too: the two-sided equilibrium).

``--input`` is one of
- a JSON list of numbers: one example, filling the input stalks in the order they are declared;
- a JSON list of such lists: a batch;
- a JSON object ``{"x": [...], ...}`` naming the input stalks (each a vector or a list of vectors);
- a ``.npy`` or ``.csv`` file (rows are examples, columns the input coordinates), or a ``.json`` file.

A consensus problem (objectives on stalks, hard edges; docs/admm.md) prints its minimiser instead:
``--solver admm`` (Sheaf-ADMM), ``admm-local`` (edge-based, fully local) or ``exact`` (its KKT system,
quadratic objectives only), with ``--rho``, ``--maxiter``, ``--rtol``, ``--atol``; ``--plot FILE.png``
draws ADMM's primal and dual residuals per iteration; ``--json`` adds ``objective``,
``primal_residual`` and ``dual_residual`` (``converged``: both residuals within their tolerances).

The heat equation (``--solver diffusion``): ``--x0 zeros|random|forward`` (``--x0-seed``) the initial stalks,
``--dt`` (with ``--alpha``) a fixed step of the plain Euler flow ċ = −α∇E, ``--change-tol`` the stopping rule
"largest change of a coordinate in one step below it", ``--trace [FILE]`` the trajectory (discord per
iteration, per layer and per edge; the stalks, ``--trace-stalks``, every ``--trace-every`` steps; every
activation-pattern crossing), printed, in ``--json`` as ``trace``, or written to FILE (.json or .npz).

``--workers N`` (a local Dask cluster) or ``--scheduler ADDRESS`` (a running one) split the batch over
the workers (docs/distributed.md); with ``--solver admm-local`` they split the agents instead.

Parameters come from ``lowering.init_params(G, --seed)`` unless ``--params FILE.npz`` gives them (an npz of
name -> array, e.g. a training checkpoint; entries with a ``/`` in their name or starting with ``__`` are
ignored).
"""

from __future__ import annotations

import copy

import click
import numpy as np

from ..inputs import apply_pin, input_boundary, parse_pin
from ..ir import pinned_stalks
from ..options import SOLVE_METHODS
from ..solvers.core import STARTS
from ..errors import Diagnostic, SheafError
from .common import (cluster_options, console, emit_json, json_option, load_ir, model_argument, open_cluster,
                     print_table, seed_option)

TABLE_ROWS = 20


# ----------------------------------------------------------------------------------------------
# the command


@click.command("infer")
@model_argument
@click.option("--input", "input_", metavar="JSON|FILE", help="Values of the stalks pinned to input, concatenated in the order the stalks are declared: "
              "JSON ([..] one example, [[..], ..] a batch, {\"x\": [..]} by name), or a .npy/.csv/.json file (a batch).")
@click.option("--pin", "pins", multiple=True, metavar="NAME=JSON", help="Hard-pin a stalk (or NAME[i,j]) to values; repeatable.")
@click.option("--solver", type=click.Choice(SOLVE_METHODS), default="exact", show_default=True,
              help="exact: forward sweep or active-set direct solves (a consensus problem: its KKT system, "
              "quadratic objectives only); cg: matrix-free conjugate gradients; diffusion: the (Filippov) heat "
              "equation; admm: Sheaf-ADMM (consensus problems, docs/admm.md); admm-local: edge-based ADMM, "
              "every update local.")
@click.option("--params", "params_path", metavar="FILE.npz|RUN_DIR",
              help="Parameter values: an .npz (e.g. a training checkpoint) or a `sheaf train` run directory.")
@seed_option("Seed for initialising parameters.", default=0)
@click.option("--rtol", type=float, default=None, help="Relative tolerance: of the gradient norm (default 1e-10), "
              "or of ADMM's primal and dual residuals (default 1e-6).")
@click.option("--atol", type=float, default=None, help="ADMM: absolute tolerance of the residuals (default 1e-9).")
@click.option("--rho", type=float, default=None, help="ADMM: the initial penalty ρ (default 1; adapted by residual balancing).")
@click.option("--maxiter", type=int, default=None, help="Iteration limit (solver-specific default; ADMM 20000).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="ADMM: write the primal and dual residuals per iteration to this PNG.")
@click.option("--x0", "x0", type=click.Choice(STARTS), default=None,
              help="diffusion: the initial stalks (default zeros; random: N(0, 1) seeded by --x0-seed).")
@click.option("--x0-seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="diffusion: the seed of --x0 random.")
@click.option("--dt", type=float, default=None,
              help="diffusion: the time step of the plain explicit Euler flow ċ = −α∇E (default: the accelerated "
                   "flow with its own step).")
@click.option("--alpha", type=float, default=1.0, show_default=True, help="diffusion: the rate α of the flow (with --dt).")
@click.option("--change-tol", type=float, default=None,
              help="diffusion: stop when the largest change of a coordinate in one step is below this (the paper: "
                   "1e-15) instead of the --rtol rule.")
@click.option("--trace", "trace", is_flag=False, flag_value="-", default=None, metavar="[FILE]",
              help="diffusion: record the trajectory (discord per iteration, per layer and per edge, the stalks, "
                   "the activation-pattern crossings): printed (in --json, `trace`), or written to FILE "
                   "(.json or .npz).")
@click.option("--trace-stalks", default=None, metavar="NAME,...", help="With --trace: the stalks to record (default all).")
@click.option("--trace-every", type=int, default=1, show_default=True,
              help="With --trace: record the stalks and discords every k-th step (crossings: every step).")
@cluster_options
@json_option
def command(file, input_, pins, solver, params_path, seed, rtol, atol, rho, maxiter, plot_path, x0, x0_seed, dt, alpha,
            change_tol, trace, trace_stalks, trace_every, workers, scheduler, as_json):
    """The harmonic extension of the pins of FILE: the values of the free stalks.

    Stalks pinned to input take --input; stalks pinned to target are free (pin them with --pin for the
    two-sided equilibrium, e.g. --pin y=[0.3]).
    """
    from ..api import harmonic_extension
    from ..lowering import load_params

    G = copy.deepcopy(load_ir(file))
    for spec in pins:
        name, idx, value = parse_pin(spec)
        apply_pin(G, name, value, idx)
    params = load_params(G, params_path, seed)
    boundary, batch = input_boundary(input_, G)
    if plot_path is not None and solver not in ("admm", "admm-local"):
        raise SheafError(Diagnostic("E519", f"--plot draws ADMM's residuals; the `{solver}` solver has none",
                                    hint="use --solver admm or admm-local", file="<command line>"))
    if (atol is not None or rho is not None) and solver not in ("admm", "admm-local"):
        raise SheafError(Diagnostic("E519", f"--atol and --rho are ADMM's options, not the `{solver}` solver's",
                                    hint="use --solver admm or admm-local", file="<command line>"))
    if trace is None and (trace_stalks is not None or trace_every != 1):
        raise SheafError(Diagnostic("E662", "--trace-stalks and --trace-every need --trace", file="<command line>"))
    if trace not in (None, "-") and not trace.endswith((".json", ".npz")):
        raise SheafError(Diagnostic("E663", f"the trace file `{trace}` must end in .json or .npz",
                                    file="<command line>", hint="e.g. --trace trace.npz"))
    sharded = workers is not None or scheduler is not None
    if plot_path is not None and sharded and solver != "admm-local":
        raise SheafError(Diagnostic("E703", "--plot draws one ADMM run's residuals; --workers splits the instances "
                                            "into several runs", hint="drop --plot or --workers",
                                    file="<command line>"))
    with open_cluster(workers, scheduler) as cluster:
        out = harmonic_extension(G, params, boundary, batch=batch, solver=solver, rtol=rtol, maxiter=maxiter,
                                 file="<command line>", atol=atol, rho=rho, x0=x0, x0_seed=x0_seed if x0 else 0, dt=dt,
                                 alpha=alpha, change_tol=change_tol, trace=trace is not None,
                                 trace_stalks=None if trace_stalks is None else
                                 [t.strip() for t in trace_stalks.split(",") if t.strip()],
                                 trace_every=trace_every, cluster=cluster)
    res, vals = out.result, out.stalks
    traj = out.trajectory
    if traj is not None and trace != "-":
        write_trace(traj, trace, batch=batch)
    if plot_path is not None:
        from ..training.plots import plot_residuals

        plot_residuals(res, plot_path, title=f"{G.graph.get('name', 'sheaf')}: {solver}, {res.iterations} iterations")
    if as_json:
        payload = out.to_json()
        if traj is not None:
            payload["trace"] = traj.to_json(batch=batch) if trace == "-" else trace
        emit_json(payload)
    elif out.objective is not None:
        _print_consensus(G, out, batch, solver)
    else:
        _print(G, res, vals, batch, solver)
        if traj is not None:
            _print_trace(traj, trace)
    if plot_path is not None and not as_json:
        console.print(f"residuals plotted to {plot_path}")
    if not bool(np.all(res.converged)):
        tol = (f"largest change per step below {change_tol:g}" if change_tol is not None else
               f"rtol {rtol:g}" if rtol is not None else "the default tolerance")
        click.echo(f"warning: {int((~np.asarray(res.converged)).sum())} of {res.batch} example(s) did not converge "
                   f"({tol}); raise --maxiter or try another --solver", err=True)


def _fmt(a: np.ndarray) -> str:
    return "[" + ", ".join(f"{x:.6g}" for x in a[:12]) + (", …" if a.size > 12 else "") + "]"


def _role(G, v) -> str:
    srcs = {p.source for p in G.nodes[v]["pins"]}
    if "input" in srcs:
        return "input"
    if "value" in srcs:
        whole = any(p.source == "value" and p.indices is None for p in G.nodes[v]["pins"])
        return "pinned" if whole else "partly pinned"
    return "free"


def _print(G, res, vals, batch, solver):
    from rich.table import Table

    summary = (f"{solver}: {int(np.sum(res.converged))}/{res.batch} converged, {res.iterations} iteration(s), "
               f"energy {float(np.mean(res.energy)):.6g}" + (" (mean)" if batch else ""))
    if not batch:
        t = Table(title=f"{G.graph.get('name', 'sheaf')}: harmonic extension", title_justify="left")
        t.add_column("stalk")
        t.add_column("role")
        t.add_column("dim", justify="right")
        t.add_column("values")
        for v, a in vals.items():
            t.add_row(v, _role(G, v), str(a.shape[1]), _fmt(a[0]))
        print_table(t)
        console.print(summary)
        return
    targets = pinned_stalks(G, "target")
    cols = pinned_stalks(G, "input") + (targets or [v for v in vals if _role(G, v) != "input"])
    _print_rows(G, "examples", cols, vals, "energy", [f"{float(e):.3g}" for e in res.energy[:TABLE_ROWS]],
                res.batch, summary)


def _print_rows(G, what, cols, vals, last, last_cells, n, summary):
    """One row per example (the first TABLE_ROWS of n): the stalks ``cols`` and a last column ``last``."""
    from rich.table import Table

    t = Table(title=f"{G.graph.get('name', 'sheaf')}: {n} {what}", title_justify="left")
    t.add_column("#", justify="right")
    for v in cols:
        t.add_column(v)
    t.add_column(last, justify="right")
    for i in range(min(n, TABLE_ROWS)):
        t.add_row(str(i), *[_fmt(vals[v][i]) for v in cols], last_cells[i])
    print_table(t)
    if n > TABLE_ROWS:
        console.print(f"… {n - TABLE_ROWS} more rows (use --json for all)")
    console.print(summary)


def _terms(G, v) -> str:
    from ..ir import objectives

    out = []
    for o in objectives(G, v):
        if o.kind == "box":
            lo, hi = np.asarray(o.lo), np.asarray(o.hi)
            out.append(f"box [{lo.min():g}, {hi.max():g}]" if lo.size and np.all(lo == lo[0]) and np.all(hi == hi[0])
                       else "box")
        elif o.kind == "l1":
            out.append(f"l1 {o.lam:g}")
        else:
            out.append(o.kind)
    return ", ".join(out) or "—"


def _print_consensus(G, out, batch, solver):
    """The minimiser of a consensus problem: per stalk its role, objective terms and values; then the
    objective, the residuals against their tolerances and the iterations."""
    from rich.table import Table

    res = out.result
    ok = int(np.sum(out.converged))
    tp, td = getattr(res, "primal_tolerance", None), getattr(res, "dual_tolerance", None)
    tols = "" if tp is None else f" (tolerances {float(np.max(to_host(tp))):.2g}, {float(np.max(to_host(td))):.2g})"
    summary = (f"{solver}: {ok}/{res.batch} converged in {res.iterations} iteration(s); objective "
               f"{float(np.mean(out.objective)):.8g}" + (" (mean)" if batch else "") +
               f"; primal residual {float(np.max(out.primal_residual)):.2g}, dual residual "
               f"{float(np.max(out.dual_residual)):.2g}" + tols)
    vals = out.stalks
    show = [v for v in vals if not G.nodes[v].get("anchor")]
    if not batch:
        t = Table(title=f"{G.graph.get('name', 'sheaf')}: minimiser", title_justify="left")
        for col in ("stalk", "role", "objective", "dim", "values"):
            t.add_column(col, justify="right" if col == "dim" else "left")
        for v in show:
            t.add_row(v, _role(G, v), _terms(G, v), str(vals[v].shape[1]), _fmt(vals[v][0]))
        print_table(t)
        console.print(summary)
        return
    _print_rows(G, "instances", show, vals, "objective", [f"{float(o):.6g}" for o in out.objective[:TABLE_ROWS]],
                res.batch, summary)


def to_host(a):
    from ..lowering import to_numpy

    return np.asarray(to_numpy(a))


# ----------------------------------------------------------------------------------------------
# --trace


def write_trace(traj, path: str, *, batch: bool) -> None:
    """The trajectory as JSON (:meth:`Trajectory.to_json`) or as an .npz of arrays (``iterations``,
    ``discord``, ``layer_K``, ``edge_NAME``, ``stalk_NAME``, and the crossings as ``crossing_iteration``,
    ``crossing_example``, ``crossing_stalk``, ``crossing_index``, ``crossing_direction``), atomically; E663
    when it cannot be written."""
    import io
    import json

    from ..fileio import atomic_write_bytes, json_ready, write_error

    if path.endswith(".json"):
        data = (json.dumps(json_ready(traj.to_json(batch=batch)), allow_nan=False) + "\n").encode("utf-8")
    else:
        arrays = {"iterations": traj.iterations, "discord": traj.discord}
        arrays.update({f"layer_{k}": v for k, v in traj.layers.items()})
        arrays.update({f"edge_{k}": v for k, v in traj.edges.items()})
        arrays.update({f"stalk_{k}": v for k, v in traj.stalks.items()})
        cr = traj.crossings
        for key, dtype in (("iteration", np.int64), ("example", np.int64), ("stalk", str), ("index", np.int64),
                           ("direction", np.int8)):
            arrays[f"crossing_{key}"] = np.array([c[key] for c in cr], dtype=dtype)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        data = buf.getvalue()
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise write_error("E663", path, exc, file="<command line>") from None


TRACE_ROWS = 12


def _print_trace(traj, path: str) -> None:
    """A few snapshots of the total and per-layer discord, and the first crossings."""
    from rich.table import Table

    T = traj.iterations.shape[0]
    rows = sorted(set(np.linspace(0, T - 1, min(T, TRACE_ROWS)).round().astype(int).tolist()))
    t = Table(title=f"heat equation: discord over {int(traj.iterations[-1])} iterations"
                    + (f" (step α·dt = {traj.dt:g})" if traj.dt is not None else ""), title_justify="left")
    t.add_column("iteration", justify="right")
    t.add_column("total", justify="right")
    for k in traj.layers:
        t.add_column(f"layer {k}", justify="right")
    for i in rows:
        t.add_row(str(int(traj.iterations[i])), f"{float(np.mean(traj.discord[i])):.4g}",
                  *[f"{float(np.mean(v[i])):.4g}" for v in traj.layers.values()])
    print_table(t)
    cr = traj.crossings
    console.print(f"{len(cr)} activation-pattern crossing(s)" + (":" if cr else ""))
    for c in cr[:TABLE_ROWS]:
        console.print(f"  iteration {c['iteration']}: example {c['example']}, {c['stalk']}[{c['index']}] "
                      f"{c['before']} -> {c['after']}")
    if len(cr) > TABLE_ROWS:
        console.print(f"  … {len(cr) - TABLE_ROWS} more (use --trace FILE or --json)")
    if path != "-":
        console.print(f"trace written to {path}")
