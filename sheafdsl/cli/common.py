"""Helpers shared by the subcommands: loading a model, JSON output, the console.

Every ``--json`` output is one JSON object on stdout (docs/cli.md):
``{"ok": bool, "diagnostics": [...], ...the command's own fields}``. ``ok`` is true exactly when the
command exits 0; ``diagnostics`` holds every error and warning (:meth:`sheafdsl.errors.Diagnostic.to_json`;
``line``/``col`` are null for a diagnostic that is not tied to a place in the model). Numbers are
finite: NaN and infinities are written as null, so every output is strict JSON.
"""

from __future__ import annotations

import json

import click
from rich.console import Console

from ..errors import Diagnostic, SheafError
from ..fileio import json_ready
from ..frontend import check_with_warnings, parse_file

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")


def _check_seed(ctx, param, value):
    if value is not None and value < 0:
        from ..errors import Diagnostic

        raise SheafError(Diagnostic("E527", f"--seed must be a whole number >= 0, not {value}",
                                    hint="seeds are 0, 1, 2, ...", file="<command line>"))
    return value


def seed_option(help: str, default=None):
    """``--seed S``: a non-negative integer (a negative one is E527, exit 1)."""
    return click.option("--seed", type=int, default=default, show_default=default is not None, callback=_check_seed,
                        help=help)


model_argument = click.argument("file", type=click.Path(dir_okay=False))


def cluster_options(f):
    """``--workers N`` (a LocalCluster of N processes) and ``--scheduler ADDRESS`` (a running Dask cluster):
    the batch is sharded over their workers (docs/distributed.md; the ``[distributed]`` extra)."""
    f = click.option("--scheduler", metavar="ADDRESS", default=None,
                     help="Run on the Dask cluster of this scheduler (tcp://host:8786): the batch is sharded over "
                          "its workers (docs/distributed.md).")(f)
    return click.option("--workers", type=click.IntRange(min=1), default=None, metavar="N",
                        help="Shard the batch over a local Dask cluster of N worker processes "
                             "(the [distributed] extra).")(f)


def open_cluster(workers, scheduler):
    """A context manager: the :class:`sheafdsl.distributed.Cluster` the flags name, or None (one process)."""
    import contextlib

    if workers is None and scheduler is None:
        return contextlib.nullcontext(None)
    if workers is not None and scheduler is not None:
        raise click.UsageError("give either --workers or --scheduler, not both")
    from ..distributed import Cluster

    return Cluster(workers, scheduler)


def load_model(path: str):
    """Parse and check a model file; warnings go to stderr, errors raise SheafError (exit 1)."""
    model, warnings = check_with_warnings(parse_file(path))
    for w in warnings:
        click.echo(w.render(model.source), err=True)
    ctx = click.get_current_context(silent=True)
    if ctx is not None:  # --json lists them too
        ctx.find_root().meta.setdefault("sheaf.warnings", []).extend(warnings)
    return model


def load_ir(path: str):
    """Parse, check and build the IR of a model file."""
    from ..ir import from_model

    return from_model(load_model(path))


def json_envelope(payload: dict | None = None, *, ok: bool = True, diagnostics=()) -> dict:
    """The one shape of every ``--json`` output: ``ok``, ``diagnostics`` (with the warnings of the
    models loaded by this command first), then the command's fields."""
    ctx = click.get_current_context(silent=True)
    seen = list(ctx.find_root().meta.get("sheaf.warnings", ())) if ctx is not None else []
    diags = seen + [d for d in diagnostics if d not in seen]
    out = {"ok": bool(ok), "diagnostics": [d.to_json() if isinstance(d, Diagnostic) else d for d in diags]}
    for k, v in (payload or {}).items():
        if k not in out:
            out[k] = v
    return out


def print_table(table, con=None) -> None:
    """Print a rich table so that no number is cut short: right-justified (numeric) columns never
    wrap or shrink, text columns wrap instead of ending in "…", and a table that cannot fit the
    terminal (or the 80 columns rich assumes when the output is piped) is printed at its natural
    width rather than truncated."""
    from rich.measure import Measurement

    con = console if con is None else con
    for col in table.columns:
        if col.justify == "right":  # a number is never wrapped or cut, and nor is its header
            col.no_wrap = True
            texts = [str(cell) for cell in [*col.cells]] + str(col.header).split("\n")
            col.min_width = max([len(t) for t in texts] + [col.min_width or 0])
        else:  # wrap between words; a word is folded only if it is longer than the column can be
            col.overflow = "fold"
            words = [w for cell in [col.header, *col.cells] for w in str(cell).split()]
            col.min_width = max([len(w) for w in words if len(w) <= 24] + [col.min_width or 0])
    need = Measurement.get(con, con.options.update(max_width=10_000), table).minimum
    if need <= con.width:
        con.print(table)
        return
    width = con.width
    con.width = need  # Console.print(width=...) cannot go past the console's width
    try:
        con.print(table, crop=False)
    finally:
        con.width = width


def emit_json(payload: dict | None = None, *, ok: bool = True, diagnostics=()) -> None:
    """Print :func:`json_envelope` as one line of strict JSON (non-finite numbers become null)."""
    click.echo(json.dumps(_plain(json_envelope(payload, ok=ok, diagnostics=diagnostics)), allow_nan=False))


_plain = json_ready  # (the one JSON-ready conversion lives in fileio)


__all__ = ["console", "err_console", "print_table", "json_option", "seed_option", "model_argument", "load_model", "load_ir", "json_envelope", "emit_json", "SheafError"]
