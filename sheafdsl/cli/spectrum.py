"""``sheaf spectrum FILE [--input JSON | --samples N [--workers N | --scheduler ADDRESS]] [--seed S] [--params FILE.npz] [--json]``.

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

A sheaf with no state-dependent map has one L_free, computed once. ``--workers N`` / ``--scheduler ADDRESS``
split the sampled patterns over Dask workers (docs/distributed.md): the same report. Parameters come from
``init_params(G, --seed)`` or ``--params FILE.npz``.

A singular L_free (λ_min ≤ n·ε·λ_max) is a result, not an error: κ is reported as inf (``null`` in JSON,
with ``"singular": true``), and the free directions spanning relative H⁰ = ker δ_Ω are named; exit 0.
Conflicting or out-of-range options are usage errors (exit 2); a bad ``--input`` or ``--params`` exits 1.
"""

from __future__ import annotations

import math

import click
import numpy as np

from ..options import SPECTRUM_SAMPLES
from .common import (cluster_options, console, emit_json, json_option, load_ir, model_argument, open_cluster,
                     print_table, seed_option)

SAMPLE_ROWS = 10


@click.command("spectrum")
@model_argument
@click.option("--input", "input_", metavar="JSON|FILE",
              help="Inputs (as for `sheaf infer`): the spectrum at each example's harmonic extension.")
@click.option("--target", "target", metavar="JSON|FILE",
              help="With --input: targets; the gates then come from the two-sided (training) equilibrium.")
@click.option("--samples", type=click.IntRange(min=1), default=None,
              help=f"Number of random activation patterns (default {SPECTRUM_SAMPLES}).")
@seed_option("Seed for the parameters and the patterns.", default=0)
@click.option("--params", "params_path", metavar="FILE.npz|RUN_DIR",
              help="Parameter values: an .npz (e.g. a training checkpoint) or a `sheaf train` run directory.")
@click.option("--dense-cutoff", type=click.IntRange(min=0), default=None,
              help="Largest free dimension solved densely (default 1000); above it, sparse eigsh.")
@click.option("--vectors", is_flag=True,
              help="Also the eigenvectors of λ_min (Fiedler) and λ_max of the training L_free (input and target "
                   "pinned, every other stalk free: the paper's convention) and their energy per stalk block and "
                   "per layer.")
@cluster_options
@json_option
def command(file, input_, target, samples, seed, params_path, dense_cutoff, vectors, workers, scheduler, as_json):
    """λ_min, λ_max and κ of L_free for FILE, at given inputs or over sampled activation patterns."""
    from ..api import spectrum_boundary, spectrum_report
    from ..lowering import load_params

    if input_ is not None and samples is not None:
        raise click.UsageError("give either --input or --samples, not both")
    if target is not None and input_ is None:
        raise click.UsageError("--target needs --input")
    G = load_ir(file)
    params = load_params(G, params_path, seed)
    boundary, targets = spectrum_boundary(G, input_, target)
    if input_ is not None and (workers is not None or scheduler is not None):
        from ..errors import Diagnostic, SheafError

        raise SheafError(Diagnostic("E703", "--workers splits the sampled activation patterns of --samples over the "
                                            "workers, not the spectra at given --input examples",
                                    hint="use --samples N with --workers, or drop --workers", file="<command line>"))
    with open_cluster(workers, scheduler) as cluster:
        report = spectrum_report(G, params, boundary=boundary, targets=targets, samples=samples, seed=seed,
                                 dense_cutoff=dense_cutoff, vectors=vectors, cluster=cluster)
    note = report.warning
    if as_json:
        out = report.to_json()
        out["seed"] = seed
        emit_json(out)
        return
    _print(G, report, seed, note)


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
    print_table(t)
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
        print_table(s)
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
    if report.vectors is not None:
        _print_vectors(G, report)
    if note:
        console.print(f"warning: {note}")


def _print_vectors(G, report) -> None:
    """The energy of the λ_min (Fiedler) and λ_max eigenvectors per free stalk and per layer (mean over samples)."""
    from rich.table import Table

    from ..analysis.spectrum import CONVENTION, mean_fractions

    vecs = report.vectors
    if not vecs or not vecs[0].labels:
        console.print("eigenvectors: every coordinate is pinned (L_free is empty)")
        return
    n = len(vecs)
    mean = mean_fractions(vecs)
    console.print(f"eigenvectors of the training L_free ({CONVENTION['training']}); energy fraction "
                  f"Σ v_i² per block" + (f", mean over {n} samples" if n > 1 else ""))
    t = Table()
    for col in ("block", "layer", "Fiedler (λ_min)", "λ_max"):
        t.add_column(col, justify="left" if col == "block" else "right")
    from ..ir import layers

    depth = layers(G)[1]
    for stalk, f in mean["blocks"].items():
        t.add_row(stalk, "-" if depth.get(stalk) is None else str(depth[stalk]), f"{f['min']:.4f}", f"{f['max']:.4f}")
    if mean["layers"]:
        for layer, f in mean["layers"].items():
            t.add_row(f"layer {layer}", layer, f"{f['min']:.4f}", f"{f['max']:.4f}")
    print_table(t)
    if n == 1:
        v = vecs[0]
        console.print(f"λ_min = {_num(v.lambda_min)}, λ_max = {_num(v.lambda_max)} ({v.method}); --json has the vectors")
