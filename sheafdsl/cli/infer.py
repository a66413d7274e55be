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
import json
import os
import re

import click
import numpy as np

from ..errors import Diagnostic, SheafError, did_you_mean
from ..options import SOLVE_METHODS
from ..ir import PinSpec, param_specs, pinned_stalks, stalks
from .common import console, emit_json, json_option, load_ir, model_argument

PIN_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\[\s*([0-9,\s]*)\])?\s*=\s*(.+)$", re.S)
TABLE_ROWS = 20


def _err(code: str, msg: str, hint: str | None = None) -> SheafError:
    return SheafError(Diagnostic(code, msg, hint=hint, file="<command line>"))


# ----------------------------------------------------------------------------------------------
# parsing the command line


def _json(text: str, what: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _err("E520", f"{what} is not valid JSON: {exc.msg} (at column {exc.colno}): {text!r}",
                   "write a number or a list, e.g. [0.5, -1.0]") from None


def _numeric(value, what: str) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise _err("E520", f"{what} must hold numbers only (a number, a list, or a list of lists)") from None
    if a.dtype == object or a.ndim > 2:
        raise _err("E520", f"{what} must be a number, a list, or a list of equal-length lists")
    if not np.all(np.isfinite(a)):
        raise _err("E520", f"{what} holds NaN or infinite values")
    return a


def _load_file(path: str) -> np.ndarray | dict:
    ext = os.path.splitext(path)[1].lower()
    if not os.path.exists(path):
        raise _err("E522", f"input file `{path}` does not exist")
    try:
        if ext == ".npy":
            return np.load(path, allow_pickle=False)
        if ext == ".json":
            with open(path, encoding="utf-8") as fh:
                return _json(fh.read(), f"`{path}`")
        if ext == ".csv":
            try:
                return np.loadtxt(path, delimiter=",", ndmin=2)
            except ValueError:
                return np.loadtxt(path, delimiter=",", ndmin=2, skiprows=1)  # a header row
    except SheafError:
        raise
    except (OSError, ValueError) as exc:
        raise _err("E522", f"cannot read input file `{path}`: {exc}") from None
    raise _err("E522", f"unsupported input file `{path}`", "use .npy, .csv or .json (or inline JSON)")


def parse_input(text: str, G) -> tuple[dict, bool]:
    """The boundary dict {input stalk: (B, d)} from ``--input``, and whether it was a batch."""
    names = pinned_stalks(G, "input")
    dims = {v: G.nodes[v]["dim"] for v in names}
    total = sum(dims.values())
    is_file = os.path.splitext(text.strip())[1].lower() in (".npy", ".csv", ".json")
    raw = _load_file(text.strip()) if is_file else _json(text, "--input")
    if isinstance(raw, dict):
        unknown = [k for k in raw if k not in dims]
        if unknown:
            raise _err("E521", f"--input names `{unknown[0]}`, which is not an input stalk",
                       did_you_mean(unknown[0], dims) or "input stalks: " + (", ".join(names) or "none"))
        out, batch = {}, False
        for v in names:
            if v not in raw:
                raise _err("E521", f"--input gives no value for the input stalk `{v}`")
            a = _numeric(raw[v], f"--input `{v}`")
            batch |= a.ndim == 2
            a = np.atleast_2d(a)
            if a.shape[1] != dims[v]:
                raise _err("E521", f"input stalk `{v}` has dimension {dims[v]}, got {a.shape[1]} value(s) per example")
            out[v] = a
        sizes = {a.shape[0] for a in out.values()}
        if len(sizes) > 1:
            raise _err("E521", f"--input stalks disagree on the batch size: {sorted(sizes)}")
        return out, batch
    a = _numeric(raw, "--input")
    batch = a.ndim == 2
    a = np.atleast_2d(a) if a.ndim else a.reshape(1, 1)
    if a.shape[1] != total:
        where = " + ".join(f"{v}: {d}" for v, d in dims.items()) or "no input stalks"
        raise _err("E521", f"--input gives {a.shape[1]} value(s) per example but the input stalks take {total} "
                   f"({where})", "list the coordinates of the input stalks in declaration order")
    if a.shape[0] == 0:
        raise _err("E521", "--input is an empty batch")
    out, k = {}, 0
    for v in names:
        out[v] = a[:, k:k + dims[v]]
        k += dims[v]
    return out, batch


def apply_pin(G, spec: str) -> None:
    """Add (or override) a hard pin from ``NAME=JSON`` or ``NAME[i,j]=JSON``, editing G in place."""
    m = PIN_RE.match(spec)
    if not m:
        raise _err("E523", f"--pin `{spec}` is not NAME=JSON or NAME[i,j]=JSON", "e.g. --pin y=[0.25] or --pin z1[3]=0")
    name, idx_text, val_text = m.group(1), m.group(2), m.group(3)
    if name not in G or G.nodes[name].get("anchor"):
        raise _err("E523", f"--pin: `{name}` is not a stalk",
                   did_you_mean(name, [v for v in stalks(G) if not G.nodes[v].get("anchor")]))
    dim = G.nodes[name]["dim"]
    if idx_text is not None:
        try:
            idx = tuple(int(t) for t in idx_text.replace(" ", "").split(",") if t != "")
        except ValueError:
            raise _err("E523", f"--pin `{spec}`: bad index list") from None
        if not idx or len(set(idx)) != len(idx) or any(i < 0 or i >= dim for i in idx):
            raise _err("E523", f"--pin `{spec}`: indices must be distinct and in 0..{dim - 1}")
    else:
        idx = None
    n = dim if idx is None else len(idx)
    val = _numeric(_json(val_text, f"--pin {name}"), f"--pin {name}")
    if val.ndim > 1 or (val.ndim == 1 and val.shape[0] != n):
        raise _err("E523", f"--pin {name}{'' if idx is None else list(idx)} takes {n} value(s), got "
                   f"{val.size if val.ndim else 1}", f"write a number or a list of {n} numbers")
    val = np.broadcast_to(val, (n,)).astype(float)
    covered = set(range(dim)) if idx is None else set(idx)
    kept = []
    for p in G.nodes[name]["pins"]:
        p_idx = tuple(range(dim)) if p.indices is None else p.indices
        if not covered & set(p_idx):
            kept.append(p)
        elif p.source != "value":
            if idx is not None:
                raise _err("E523", f"--pin {name}[...]: `{name}` is pinned to {p.source}; pin the whole stalk to "
                           "override it", f"--pin {name}=[...]")
        else:  # keep the coordinates of a constant pin that this one does not cover
            rest = [(i, v) for i, v in zip(p_idx, p.value) if i not in covered]
            if rest:
                kept.append(PinSpec("value", tuple(i for i, _ in rest), np.array([v for _, v in rest])))
    kept.append(PinSpec("value", idx, val))
    G.nodes[name]["pins"] = kept


def load_params(G, path: str | None, seed: int) -> dict:
    """Parameters from an npz (validated against the declared names and shapes) or from the seed."""
    from ..lowering import init_params

    specs = param_specs(G)
    if path is None:
        return init_params(G, seed)
    if not os.path.exists(path):
        raise _err("E524", f"parameter file `{path}` does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files if "/" not in k and not k.startswith("__")}
    except (OSError, ValueError, AttributeError) as exc:
        raise _err("E524", f"cannot read parameter file `{path}` (an .npz of name -> array): {exc}") from None
    unknown = [k for k in arrays if k not in specs]
    if unknown:
        raise _err("E524", f"`{path}` holds `{unknown[0]}`, which is not a parameter of the model",
                   did_you_mean(unknown[0], specs) or "parameters: " + ", ".join(specs))
    missing = [k for k in specs if k not in arrays]
    if missing:
        raise _err("E524", f"`{path}` has no value for parameter" + "s" * (len(missing) > 1) + " "
                   + ", ".join(f"`{k}`" for k in missing))
    out = {}
    for k, spec in specs.items():
        a = arrays[k]
        if a.dtype.kind not in "fiu" or a.shape != tuple(spec.shape):
            raise _err("E524", f"`{path}`: parameter `{k}` has shape {a.shape} (dtype {a.dtype}), the model declares "
                       f"{tuple(spec.shape)}")
        a = a.astype(float)
        if not np.all(np.isfinite(a)):
            raise _err("E524", f"`{path}`: parameter `{k}` holds NaN or infinite values")
        out[k] = a
    return out


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
@click.option("--params", "params_path", metavar="FILE.npz", help="Parameter values (e.g. a training checkpoint).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for initialising parameters.")
@click.option("--rtol", type=float, default=1e-10, show_default=True, help="Relative gradient-norm tolerance.")
@click.option("--maxiter", type=int, default=None, help="Iteration limit (solver-specific default).")
@json_option
def command(file, input_, pins, solver, params_path, seed, rtol, maxiter, as_json):
    """The harmonic extension of the pins of FILE: the values of the free stalks.

    Stalks pinned to input take --input; stalks pinned to target are free (pin them with --pin for the
    two-sided equilibrium, e.g. --pin y=[0.3]).
    """
    from ..solvers import solve

    G = load_ir(file)
    G = copy.deepcopy(G)
    for spec in pins:
        apply_pin(G, spec)
    params = load_params(G, params_path, seed)
    inputs = pinned_stalks(G, "input")
    if inputs and input_ is None:
        raise _err("E521", "this model has input stalk" + "s" * (len(inputs) > 1) + " " + ", ".join(f"`{v}`" for v in inputs)
                   + "; give " + ("their values" if len(inputs) > 1 else "its value") + " with --input", "e.g. --input '[" + ", ".join(["0.0"] * sum(G.nodes[v]["dim"] for v in inputs)) + "]'")
    boundary, batch = (parse_input(input_, G) if input_ is not None else ({}, False))
    if input_ is not None and not inputs:
        raise _err("E521", "--input was given but no stalk is pinned to input")
    if rtol <= 0 or (maxiter is not None and maxiter < 1):
        raise _err("E525", "--rtol must be positive and --maxiter at least 1")
    res = solve(G, params, boundary, method=solver, sources=("input", "value"), rtol=rtol, maxiter=maxiter)
    shown = [v for v in stalks(G) if not G.nodes[v].get("anchor")]
    vals = {v: np.asarray(res.stalk(v)) for v in shown}
    if as_json:
        if batch:
            emit_json({"stalks": {v: a.tolist() for v, a in vals.items()}, "energy": res.energy.tolist(),
                       "converged": res.converged.tolist(), "iterations": res.iterations,
                       "residual": res.residual.tolist(), "consistent": res.consistent.tolist(),
                       "batch": res.batch, "solver": solver})
        else:
            emit_json({"stalks": {v: a[0].tolist() for v, a in vals.items()}, "energy": float(res.energy[0]),
                       "converged": bool(res.converged[0]), "iterations": res.iterations,
                       "residual": float(res.residual[0]), "consistent": bool(res.consistent[0]), "solver": solver})
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
        console.print(t)
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
    console.print(t)
    if res.batch > TABLE_ROWS:
        console.print(f"… {res.batch - TABLE_ROWS} more rows (use --json for all)")
    console.print(summary)
