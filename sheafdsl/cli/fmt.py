"""``sheaf fmt FILE [--check] [--expand] [-w]``: print (or check, or write) the canonical layout.

- plain: the canonical text on stdout;
- ``--check``: exit 0 when FILE is already canonical, 1 (with a message) when it is not;
- ``--expand``: the text with ``network`` sugar replaced by the statements it stands for;
- ``-w/--write``: rewrite FILE in place (atomically: a temporary file in the same folder, then
  ``os.replace``), only when it changes.

Formatting needs only a file that parses; ``sheaf check`` is what checks names and shapes.
"""

from __future__ import annotations


import click

from ..errors import Diagnostic, SheafError
from ..fileio import atomic_write_text
from ..frontend import parse_file
from ..frontend.checker import expand as expand_sugar
from ..frontend.checker import network_diagnostics
from ..frontend.formatter import format_module
from .common import emit_json, json_option, model_argument


def write_atomic(path: str, text: str) -> None:
    """Rewrite ``path`` atomically (see :mod:`sheafdsl.fileio`); a failure is E108 and leaves it untouched."""
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise SheafError(Diagnostic("E108", f"cannot write `{path}`: {exc.strerror or exc}", file=path)) from None


def _expanded(module):
    """The module with its `network` expanded; a network that is itself invalid has no expansion."""
    bad = network_diagnostics(module)
    if bad:
        raise SheafError(bad, module.source)
    return expand_sugar(module)


@click.command("fmt")
@model_argument
@click.option("--check", "check_only", is_flag=True, help="Exit 1 if FILE is not in canonical layout; change nothing.")
@click.option("--expand", is_flag=True, help="Expand `network` sugar into the statements it stands for.")
@click.option("-w", "--write", is_flag=True, help="Rewrite FILE in place (atomically) instead of printing.")
@json_option
def command(file, check_only, expand, write, as_json):
    """Print FILE in canonical layout (comments kept; idempotent).

    \b
    Examples:
      sheaf fmt models/tiny.sheaf
      sheaf fmt --check models/*.sheaf      (one file per call)
      sheaf fmt --expand models/saddle.sheaf
      sheaf fmt -w my.sheaf
    """
    if check_only and write:
        raise click.UsageError("--check and --write exclude each other")
    if check_only and expand:
        raise click.UsageError("--check compares FILE with its canonical layout; drop --expand")
    if as_json:
        try:
            module = parse_file(file)
            text = format_module(_expanded(module) if expand else module)
            canonical = text == module.source
            ok, diags = canonical or not check_only, []
            out = {"file": file, "canonical": canonical}
            if not check_only:
                out["text"] = text
            if write and not canonical:
                write_atomic(file, text)
                out["written"] = True
        except SheafError as exc:
            ok, diags, out = False, exc.diagnostics, {"file": file}
        emit_json(out, ok=ok, diagnostics=diags)
        raise SystemExit(0 if ok else 1)
    module = parse_file(file)  # a SheafError here is rendered by the CLI and exits 1
    text = format_module(_expanded(module) if expand else module)
    canonical = text == module.source
    if check_only:
        if canonical:
            click.echo(f"{file}: canonical")
            raise SystemExit(0)
        click.echo(f"{file}: not in canonical layout; `sheaf fmt -w {file}` rewrites it", err=True)
        raise SystemExit(1)
    if write:
        if canonical:
            click.echo(f"{file}: unchanged", err=True)
        else:
            write_atomic(file, text)
            click.echo(f"{file}: rewritten", err=True)
        raise SystemExit(0)
    click.echo(text, nl=False)
    raise SystemExit(0)
