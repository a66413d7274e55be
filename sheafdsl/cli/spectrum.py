"""``sheaf spectrum FILE [--input JSON | --samples N] [--seed S] [--params FILE.npz] [--json]``.

λ_min, λ_max and κ = λ_max/λ_min of the restricted Laplacian L_free = δ_Ωᵀ W² δ_Ω (see
:mod:`sheafdsl.analysis.spectrum`), in two variants:

- **training**: input, target and constant pins are hard (the fast phase of training);
- **inference**: a target stalk is free (what ``sheaf infer`` solves).

The top-level ``lambda_min``/``lambda_max``/``kappa`` are the training variant's worst case; both
variants are under ``variants``.

The state-dependent maps are fixed either

- by ``--input`` (same forms as ``sheaf infer --input``): the gates and linearisation points of the
  harmonic extension with the inputs pinned (``solvers.solve(..., method="exact")``; on a network, the
  forward pass), one spectrum per example; with ``--target`` as well (a JSON list, a list of lists,
  or a .npy/.csv file; the target stalks' coordinates in declaration order, one row per example or
  one row for all), those of the two-sided (training) equilibrium instead; or
- by ``--samples N`` (default 100): N random activation patterns, each ReLU unit on or off by a fair coin
  (a generator seeded with ``[seed, 1]``), nonlinear maps linearised at c ~ N(0, I).

A sheaf with no state-dependent map has one L_free, computed once. Parameters come from
``init_params(G, --seed)`` or ``--params FILE.npz``.

A singular L_free (λ_min ≤ n·ε·λ_max) is a result, not an error: κ is reported as inf (``null`` in JSON,
with ``"singular": true``), and the free directions spanning relative H⁰ = ker δ_Ω are named; exit 0.
Conflicting or out-of-range options are usage errors (exit 2); a bad ``--input`` or ``--params`` exits 1.
"""

from __future__ import annotations

import math

import click
import numpy as np

from ..errors import Diagnostic, SheafError
from .common import console, emit_json, json_option, load_ir, model_argument

DEFAULT_SAMPLES = 100
SAMPLE_ROWS = 10


def _err(code: str, msg: str, hint: str | None = None) -> SheafError:
    return SheafError(Diagnostic(code, msg, hint=hint, file="<command line>"))


@click.command("spectrum")
@model_argument
@click.option("--input", "input_", metavar="JSON|FILE",
              help="Inputs (as for `sheaf infer`): the spectrum at each example's harmonic extension.")
@click.option("--target", "target", metavar="JSON|FILE",
              help="With --input: targets; the gates then come from the two-sided (training) equilibrium.")
@click.option("--samples", type=click.IntRange(min=1), default=None,
              help=f"Number of random activation patterns (default {DEFAULT_SAMPLES}).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the parameters and the patterns.")
@click.option("--params", "params_path", metavar="FILE.npz", help="Parameter values (e.g. a training checkpoint).")
@click.option("--dense-cutoff", type=click.IntRange(min=0), default=None,
              help="Largest free dimension solved densely (default 1000); above it, sparse eigsh.")
@json_option
def command(file, input_, target, samples, seed, params_path, dense_cutoff, as_json):
    """λ_min, λ_max and κ of L_free for FILE, at given inputs or over sampled activation patterns."""
    from ..analysis.spectrum import DENSE_CUTOFF, VARIANTS, sample_states, spectrum, states_at
    from ..ir import is_state_dependent, pinned_stalks
    from .infer import load_params, parse_input

    if input_ is not None and samples is not None:
        raise click.UsageError("give either --input or --samples, not both")
    if target is not None and input_ is None:
        raise click.UsageError("--target needs --input")
    G = load_ir(file)
    params = load_params(G, params_path, seed)
    cutoff = DENSE_CUTOFF if dense_cutoff is None else dense_cutoff
    note = None
    if input_ is not None:
        if not pinned_stalks(G, "input"):
            raise _err("E531", "--input was given but no stalk of this model is pinned to input",
                       "use --samples N to sample activation patterns instead")
        from ..solvers import solve

        boundary, _ = parse_input(input_, G)
        sources = VARIANTS["inference"]
        if target is not None:
            boundary.update(_parse_target(target, G, next(iter(boundary.values())).shape[0]))
            sources = VARIANTS["training"]
        res = solve(G, params, boundary, method="exact", sources=sources)
        states, mode = states_at(res), "inputs" if target is None else "inputs+targets"
        bad = int(np.sum(~np.asarray(res.converged, dtype=bool)))
        if bad:
            note = f"{bad} of {res.batch} harmonic extension(s) did not converge; their spectra use the last gates"
    else:
        n = DEFAULT_SAMPLES if samples is None else samples
        states = sample_states(G, n, np.random.default_rng([seed, 1]))
        mode = "samples" if is_state_dependent(G) else "fixed"
    report = spectrum(G, params, states, dense_cutoff=cutoff, mode=mode)
    if as_json:
        out = report.to_json()
        out["seed"] = seed
        if note:
            out["warning"] = note
        emit_json(out)
        return
    _print(G, report, seed, note)


def _parse_target(text: str, G, batch: int) -> dict:
    """{target stalk: (B, d)} from ``--target``: inline JSON, or a .npy/.csv/.json file; one row broadcasts."""
    import json
    import os

    from ..ir import pinned_stalks

    names = pinned_stalks(G, "target")
    if not names:
        raise _err("E533", "--target was given but no stalk of this model is pinned to target")
    dims = [G.nodes[v]["dim"] for v in names]
    path = text.strip()
    try:
        ext = os.path.splitext(path)[1].lower()
        if ext == ".npy":
            raw = np.load(path, allow_pickle=False)
        elif ext == ".csv":
            raw = np.loadtxt(path, delimiter=",", ndmin=2)
        elif ext == ".json":
            with open(path, encoding="utf-8") as fh:
                raw = json.load(fh)
        else:
            raw = json.loads(text)
        a = np.asarray(raw, dtype=float)
    except (OSError, ValueError, TypeError) as exc:
        raise _err("E533", f"cannot read --target: {exc}", "a JSON list such as [0.5], a list of lists, or a "
                   ".npy/.csv file") from None
    if a.ndim > 2 or not np.all(np.isfinite(a)):
        raise _err("E533", "--target must be a list of numbers or a list of equal-length lists of finite numbers")
    a = a.reshape(1, -1) if a.ndim < 2 else a
    if a.shape[1] != sum(dims) or a.shape[0] not in (1, batch):
        raise _err("E533", f"--target has shape {a.shape}; expected ({batch}, {sum(dims)}) or (1, {sum(dims)}) for "
                   "the target stalks " + ", ".join(f"{v}: {d}" for v, d in zip(names, dims)))
    a = np.broadcast_to(a, (batch, a.shape[1]))
    out, k = {}, 0
    for v, d in zip(names, dims):
        out[v] = np.ascontiguousarray(a[:, k:k + d])
        k += d
    return out


def _num(x) -> str:
    if x is None:
        return "-"
    return "inf" if math.isinf(x) else f"{x:.6g}"


def _print(G, report, seed, note) -> None:
    from rich.table import Table

    from ..analysis.spectrum import VARIANTS

    n = len(report.samples)
    how = {"samples": f"{n} random activation pattern{'s' * (n != 1)} (seed {seed})",
           "inputs": f"{n} input example{'s' * (n != 1)} (gates of the harmonic extension)",
           "inputs+targets": f"{n} example{'s' * (n != 1)} (gates of the two-sided equilibrium)",
           "fixed": "no state-dependent maps: one L_free"}[report.mode]
    console.print(f"sheaf {G.graph.get('name', '')}: spectrum of L_free = δ_Ωᵀ W² δ_Ω over {how}")
    t = Table()
    for col in ("variant", "free dim", "λ_min", "λ_max", "κ (worst)", "singular"):
        t.add_column(col, justify="left" if col == "variant" else "right")
    for v, w in report.worst.items():
        sing = f"{w.get('singular_samples', 0)}/{n}" if w["lambda_min"] is not None else "-"
        t.add_row(v, str(w["free_dim"]), _num(w["lambda_min"]), _num(w["lambda_max"]),
                  _num(w["kappa"]), sing)
    console.print(t)
    console.print("hard pins: " + "; ".join(f"{v}: {', '.join(VARIANTS[v])}" for v in report.worst))
    if 1 < n <= SAMPLE_ROWS:
        s = Table(title="per sample", title_justify="left")
        s.add_column("#", justify="right")
        for v in report.worst:
            for col in ("λ_min", "λ_max", "κ"):
                s.add_column(f"{v} {col}", justify="right")
        for i, row in enumerate(report.samples):
            s.add_row(str(i), *[_num(x) for v in report.worst for x in
                                (row[v].lambda_min, row[v].lambda_max, row[v].kappa)])
        console.print(s)
    elif n > SAMPLE_ROWS:
        for v in report.worst:
            k = np.array([row[v].kappa for row in report.samples if row[v].kappa is not None], dtype=float)
            if k.size:
                q = np.quantile(k, [0.0, 0.5, 1.0])
                console.print(f"{v}: κ over samples: min {_num(q[0])}, median {_num(q[1])}, max {_num(q[2])}")
    if report.worst and all(w["lambda_min"] is None for w in report.worst.values()):
        console.print("every coordinate is pinned: L_free is empty")
    for v, w in report.worst.items():
        if w["singular"]:
            dirs = "; ".join(f"{s}{idx if len(idx) < 12 else str(idx[:12])[:-1] + ', ...]'}"
                             for s, idx in w["kernel"].items())
            null = "" if w["nullity"] is None else f" (dimension {w['nullity']} in sample {w['worst_sample']})"
            console.print(f"[bold]{v}: L_free is singular[/bold] in {w['singular_samples']} of {n} sample(s): "
                          f"λ_min ≤ tol = {w['tol']:.3g}, so κ = inf and the relative cohomology "
                          f"H⁰(G, U; F) = ker δ_Ω ≠ 0{null}: the harmonic extension is not unique. "
                          f"Free directions in the kernel: {dirs}")
    if note:
        console.print(f"warning: {note}")
