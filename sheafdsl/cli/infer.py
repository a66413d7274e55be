"""``sheaf infer FILE --input JSON [--pin NAME=JSON ...] [--solver exact|diffusion|cg] [--json]``.

The harmonic extension of the pins: stalks pinned to ``input`` take the values of ``--input`` (in
declaration order), constants come from the file, stalks pinned to ``target`` are free. ``--pin`` adds or
overrides hard pins (``--pin y=[0.3]`` pins the output too: the two-sided equilibrium).

``--input`` is one of
- a JSON list of numbers: one example, filling the input stalks in the order they are declared;
- a JSON list of such lists: a batch;
- a JSON object ``{"x": [...], ...}`` naming the input stalks (each a vector or a list of vectors);
- a ``.npy`` or ``.csv`` file (rows are examples, columns the input coordinates), or a ``.json`` file.

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
from .common import console, emit_json, json_option, load_ir, model_argument, print_table, seed_option

TABLE_ROWS = 20


# ----------------------------------------------------------------------------------------------
# the command


@click.command("infer")
@model_argument
@click.option("--input", "input_", metavar="JSON|FILE", help="Values of the stalks pinned to input, concatenated in the order the stalks are declared: "
              "JSON ([..] one example, [[..], ..] a batch, {\"x\": [..]} by name), or a .npy/.csv/.json file (a batch).")
@click.option("--pin", "pins", multiple=True, metavar="NAME=JSON", help="Hard-pin a stalk (or NAME[i,j]) to values; repeatable.")
@click.option("--solver", type=click.Choice(SOLVE_METHODS), default="exact", show_default=True,
              help="exact: forward sweep or active-set direct solves; cg: matrix-free conjugate gradients; "
              "diffusion: the (Filippov) heat equation.")
@click.option("--params", "params_path", metavar="FILE.npz|RUN_DIR",
              help="Parameter values: an .npz (e.g. a training checkpoint) or a `sheaf train` run directory.")
@seed_option("Seed for initialising parameters.", default=0)
@click.option("--rtol", type=float, default=1e-10, show_default=True, help="Relative gradient-norm tolerance.")
@click.option("--maxiter", type=int, default=None, help="Iteration limit (solver-specific default).")
@json_option
def command(file, input_, pins, solver, params_path, seed, rtol, maxiter, as_json):
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
    out = harmonic_extension(G, params, boundary, batch=batch, solver=solver, rtol=rtol, maxiter=maxiter,
                             file="<command line>")
    res, vals = out.result, out.stalks
    if as_json:
        emit_json(out.to_json())
    else:
        _print(G, res, vals, batch, solver)
    if not bool(np.all(res.converged)):
        click.echo(f"warning: {int((~np.asarray(res.converged)).sum())} of {res.batch} example(s) did not converge "
                   f"(rtol {rtol:g}); raise --maxiter or try another --solver", err=True)


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
    t = Table(title=f"{G.graph.get('name', 'sheaf')}: {res.batch} examples", title_justify="left")
    t.add_column("#", justify="right")
    for v in cols:
        t.add_column(v)
    t.add_column("energy", justify="right")
    for i in range(min(res.batch, TABLE_ROWS)):
        t.add_row(str(i), *[_fmt(vals[v][i]) for v in cols], f"{float(res.energy[i]):.3g}")
    print_table(t)
    if res.batch > TABLE_ROWS:
        console.print(f"… {res.batch - TABLE_ROWS} more rows (use --json for all)")
    console.print(summary)
