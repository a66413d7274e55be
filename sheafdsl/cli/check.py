"""``sheaf check FILE [--json]``: parse and check; exit 0 when valid, 1 with diagnostics when not."""

from __future__ import annotations

import click

from ..errors import SheafError
from ..frontend import check_diagnostics, parse_file
from .common import emit_json, json_option, model_argument


@click.command("check")
@model_argument
@json_option
def command(file, as_json):
    """Parse and check FILE: report every error, with its line and column."""
    try:
        diags = check_diagnostics(parse_file(file))
        source = None
    except SheafError as exc:
        diags, source = exc.diagnostics, exc.source
    ok = not any(d.severity == "error" for d in diags)
    if as_json:
        emit_json({"file": file}, ok=ok, diagnostics=diags)
    else:
        if source is None:
            try:
                with open(file, encoding="utf-8", errors="replace") as fh:
                    source = fh.read()
            except OSError:
                source = None
        lines = source.split("\n") if source is not None else None
        for d in diags:
            click.echo(d.render(lines=lines), err=True)
        n_err = sum(d.severity == "error" for d in diags)
        if ok:
            click.echo(f"{file}: ok" + (f" ({len(diags)} warning{'s' * (len(diags) != 1)})" if diags else ""))
        else:
            click.echo(f"{file}: {n_err} error{'s' * (n_err != 1)}", err=True)
    raise SystemExit(0 if ok else 1)
