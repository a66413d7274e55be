"""``sheaf verify FILE [--json] [--symbolic-limit N] [--samples N] [--seed S] [--params FILE.npz] [--boundary B]``.

Proves, checks or refutes the structural claims of a sheaf model (see :mod:`sheafdsl.analysis.verify` and
docs/verify.md): ``coboundary_unitriangular``, ``laplacian_positive_definite``,
``relative_cohomology_vanishes``, ``forward_pass_is_harmonic_extension`` and ``cohomology``; for a consensus
problem (objectives, hard edges; docs/admm.md) ``objectives_convex``, ``constraints_feasible``,
``strictly_convex``, ``minimiser_unique`` and ``cohomology``. Each is
``proved`` (symbolic, for every weight and activation pattern; or exact over ℚ), ``checked`` (numeric, with
what was sampled), ``failed`` (with a witness) or ``skipped`` (with the reason).

``--json`` prints the common envelope (docs/cli.md: ``ok``, false when a claim failed, and
``diagnostics``) with ``"h0": int|null, "h1": int|null, "relative_h0": int, "claims": [{"name",
"status", "method", "detail", "witness"?, "ordering"?}], "sheaf", "boundary", "symbolic_limit",
"elapsed_s"``.

Exit status: 0 when no claim failed, 1 when some claim failed (the JSON is printed either way; an input
error also exits 1 and prints only ``{"ok": false, "diagnostics": [...]}``), 2 for usage errors.
"""

from __future__ import annotations

import click

from ..options import BOUNDARY_NAMES
from .common import console, emit_json, json_option, load_ir, model_argument, print_table, seed_option

STYLE = {"proved": "bold green", "checked": "cyan", "failed": "bold red", "skipped": "dim"}


@click.command("verify")
@model_argument
@click.option("--symbolic-limit", type=click.IntRange(min=0), default=None, metavar="N",
              help="Largest free dimension handled symbolically (default 512); past it, numeric checks.")
@click.option("--samples", type=click.IntRange(min=1), default=None, metavar="N",
              help="Activation patterns sampled when they are too many to enumerate (default 256).")
@seed_option("Seed for the parameters (where not written in the file) and the samples.", default=0)
@click.option("--params", "params_path", metavar="FILE.npz|RUN_DIR",
              help="Parameter values: an .npz (e.g. a training checkpoint) or a `sheaf train` run directory.")
@click.option("--boundary", type=click.Choice(BOUNDARY_NAMES), default="training", show_default=True,
              help="Hard pins of the positive-definiteness and relative-cohomology claims.")
@json_option
@click.pass_context
def command(ctx, file, symbolic_limit, samples, seed, params_path, boundary, as_json):
    """Prove, check or refute the structural claims of FILE (exit 1 if any claim failed)."""
    from ..api import Sheaf
    from ..lowering import load_params

    G = load_ir(file)
    report = Sheaf(G).verify(load_params(G, params_path, seed), seed=seed, boundary=boundary,
                             symbolic_limit=symbolic_limit, samples=samples)
    if as_json:
        emit_json(report.to_json(), ok=not report.failed)
    else:
        _print(report)
    if report.failed:
        ctx.exit(1)


def _print(report) -> None:
    from rich.table import Table

    console.print(f"sheaf {report.sheaf}: verify (boundary: {', '.join(report.boundary)}; symbolic limit "
                  f"{report.symbolic_limit}; {report.elapsed_s:.2f} s)")
    t = Table()
    t.add_column("claim", no_wrap=True)
    t.add_column("status", no_wrap=True)
    t.add_column("method")
    for c in report.claims:
        t.add_row(c.name, f"[{STYLE[c.status]}]{c.status}[/]", c.method)
    print_table(t)
    for c in report.claims:
        console.print(f"[bold]{c.name}[/bold] ([{STYLE[c.status]}]{c.status}[/]): {c.detail}", highlight=False)
        if c.ordering and "blocks" in c.ordering:
            console.print("  ordering: " + ", ".join(c.ordering["blocks"]))
        if c.witness:
            console.print(f"  witness: {_witness_text(c.witness)}")
    h = lambda x: "undefined" if x is None else str(x)  # noqa: E731
    console.print(f"h0 = {h(report.h0)}, h1 = {h(report.h1)}, relative h0 = {report.relative_h0}")
    n = {s: sum(c.status == s for c in report.claims) for s in ("proved", "checked", "failed", "skipped")}
    console.print(", ".join(f"{v} {k}" for k, v in n.items() if v))


def _witness_text(w: dict) -> str:
    parts = []
    if isinstance(w.get("vector"), dict):
        parts.append("kernel vector on " + "; ".join(f"{s}{w['coordinates'][s]} = {[round(x, 6) for x in v]}"
                                                     for s, v in w["vector"].items()))
    elif "vector" in w:  # a direction in one stalk (a consensus problem's Q: negative curvature)
        parts.append(f"vector v = {w.get('exact') or [round(x, 6) for x in w['vector']]}")
    for k, v in w.items():
        if k not in ("vector", "coordinates", "stalks", "exact"):
            parts.append(f"{k}: {v}")
    return "; ".join(parts)
