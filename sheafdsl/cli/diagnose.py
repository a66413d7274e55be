"""``sheaf diagnose RUN_DIR | FILE``: where the equilibrium discord sits, per edge, layer and type.

From a run directory it loads the checkpoint's parameters and the model text saved with the run;
from a model file it uses the initial parameters (seeded by the train block or ``--seed``) and the
model's data. Both pin the input and the target, solve for the equilibrium c* with the trainer's
fast phase, and report each edge's discord energy ½ w_e² ‖(δc*)_e‖² (mean per example). A sheaf
with no stalk pinned to input or target is diagnosed at the harmonic extension of the pins it has
(value pins, soft pins).
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..errors import Diagnostic, SheafError
from ..options import SPLITS
from .common import console, emit_json, err_console, json_option, load_model, print_table, seed_option


@click.command("diagnose")
@click.argument("target", type=click.Path())
@click.option("--data", metavar="NAME|PATH", help="Data set (default: the run's, or the model's train block).")
@click.option("--split", type=click.Choice(SPLITS), default="train", show_default=True,
              help="Which examples to pin.")
@seed_option("Seed of the initial parameters (FILE only).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Where to write the PNG (default: RUN_DIR/diagnose.png, or runs/<model>-diagnose.png).")
@click.option("--no-plot", is_flag=True, help="Do not write a PNG.")
@json_option
def command(target, data, split, seed, plot_path, no_plot, as_json):
    """Per-edge, per-layer and per-type discord of a trained run (RUN_DIR) or of a model's initial parameters (FILE)."""
    from ..errors import located

    with located(target):
        _diagnose(target, data, split, seed, plot_path, no_plot, as_json)


def _diagnose(target, data, split, seed, plot_path, no_plot, as_json):
    from ..api import Sheaf, diagnose_run
    from ..training.run import RunDir, file_stem

    path = Path(target)
    if path.is_dir():
        report = diagnose_run(path, data=data, split=split)
        default_png = RunDir(path).file("diagnose.png")
    elif path.exists() or path.suffix == ".sheaf":
        report = Sheaf._from_model(load_model(target)).diagnose(data=data, split=split, seed=seed)
        default_png = Path("runs") / f"{file_stem(report.sheaf)}-diagnose.png"
    else:
        raise SheafError(Diagnostic("E635", f"`{target}` does not exist",
                                    hint="pass a run directory (from `sheaf train --out`) or a .sheaf file"))

    png = None
    if not no_plot:
        from ..training.plots import plot_discord

        png = Path(plot_path) if plot_path else default_png
        try:
            png.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SheafError(Diagnostic("E635", f"cannot create `{png.parent}`: {exc.strerror}")) from None
        plot_discord(report.diagnosis, png, title=f"{report.sheaf}: discord per edge ({report.source})")

    if as_json:
        emit_json({**report.to_json(), "plot": None if png is None else os.fspath(png)})
        return
    _print(report, png)


def _print(rep, png) -> None:
    from rich.table import Table

    report, source, data_name, split, n, lam = rep.diagnosis, rep.source, rep.data, rep.split, rep.n, rep.lambda_min

    def pct(x):
        return f"{100 * x:.1f}%"

    if data_name is None:  # a sheaf without data pins
        console.print(f"[bold]{rep.sheaf}[/]: {source}; at the harmonic extension of its own pins "
                      "(no stalk is pinned to input or target)", soft_wrap=True)
    else:
        console.print(f"[bold]{rep.sheaf}[/]: {source}; data {data_name} ({split}, {n} examples); "
                      f"input and target pinned")
    weighted = any(r.weight != 1.0 for r in report.edges)
    title = "discord per edge  (mean per example; energy = ½ w² ‖δc*‖²)" if weighted else \
        "discord per edge  (energy ½ ‖δc*‖², mean per example)"
    t = Table(title=title, title_justify="left")
    cols = [("edge", "left"), ("src → dst", "left"), ("type", "left"), ("layer", "right"), ("dim", "right")]
    cols += [("weight", "right"), ("½‖δc*‖²", "right"), ("energy", "right")] if weighted else [("energy", "right")]
    for col, just in cols + [("share", "right")]:
        t.add_column(col, justify=just)
    for r in report.edges:
        vals = [f"{r.weight:g}", f"{r.discord:.4g}", f"{r.energy:.4g}"] if weighted else [f"{r.energy:.4g}"]
        t.add_row(r.name, f"{r.src} → {r.dst}", r.type, "—" if r.layer is None else str(r.layer), str(r.dim),
                  *vals, pct(r.share))
    print_table(t)
    t2 = Table(title="per type", title_justify="left")
    for col in ("type", "edges", "energy", "share"):
        t2.add_column(col, justify="left" if col in ("type", "edges") else "right")
    for g in report.types:
        t2.add_row(g.group, ", ".join(g.edges), f"{g.energy:.4g}", pct(g.share))
    print_table(t2)
    if report.layers:
        t3 = Table(title="per layer", title_justify="left")
        for col in ("layer", "edges", "energy", "share"):
            t3.add_column(col, justify="left" if col in ("layer", "edges") else "right")
        for g in report.layers:
            t3.add_row(g.group, ", ".join(g.edges), f"{g.energy:.4g}", pct(g.share))
        print_table(t3)
    else:
        console.print("per layer: the sheaf has a cycle, so its edges have no layers")
    if data_name is None:
        console.print(f"total energy E(c*) = {report.total:.4g}; λ_min(L_free) = {lam:.4g}")
    else:
        console.print(f"total energy: {report.total:.4g} (the residual R = E(c*) when the output edge is linear); "
                      f"sampled λ_min(L_free): {lam:.4g}")
    if png is not None:
        err_console.print(f"plot: {png}", markup=False)
