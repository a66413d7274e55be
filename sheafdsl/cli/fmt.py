"""``sheaf fmt FILE... [--check] [--expand] [-w]``: print (or check, or write) the canonical layout.

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
from .common import emit_json, json_option


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


def _format_one(file: str, check_only: bool, expand: bool, write: bool) -> dict:
    """Format one file: ``{"ok", "file", "diagnostics", "canonical"[, "text"][, "written"]}``, with the
    SheafError under ``"error"`` when it does not parse (or cannot be written)."""
    try:
        module = parse_file(file)
        text = format_module(_expanded(module) if expand else module)
        canonical = text == module.source
        out = {"ok": canonical or not check_only, "file": file, "diagnostics": [], "canonical": canonical}
        if not check_only:
            out["text"] = text
        if write and not canonical:
            write_atomic(file, text)
            out["written"] = True
    except SheafError as exc:
        out = {"ok": False, "file": file, "diagnostics": list(exc.diagnostics), "error": exc}
    return out


@click.command("fmt")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False), metavar="FILE...")
@click.option("--check", "check_only", is_flag=True, help="Exit 1 if a FILE is not in canonical layout; change nothing.")
@click.option("--expand", is_flag=True, help="Expand `network` sugar into the statements it stands for.")
@click.option("-w", "--write", is_flag=True, help="Rewrite each FILE in place (atomically) instead of printing.")
@json_option
def command(files, check_only, expand, write, as_json):
    """Print FILE in canonical layout (comments kept; idempotent); check or rewrite several.

    Several files need --check or -w (each is reported on its own line; one that does not parse
    does not stop the others); printing takes one FILE. With --json: ``{"ok", "diagnostics", "file",
    "canonical", ...}`` for one file, ``{"ok", "diagnostics", "files": [one such object per file]}``
    for several.

    \b
    Examples:
      sheaf fmt models/tiny.sheaf
      sheaf fmt --check models/*.sheaf
      sheaf fmt --expand models/saddle.sheaf
      sheaf fmt -w models/*.sheaf
    """
    if check_only and write:
        raise click.UsageError("--check and --write exclude each other")
    if check_only and expand:
        raise click.UsageError("--check compares FILE with its canonical layout; drop --expand")
    if len(files) > 1 and not (check_only or write):
        raise click.UsageError(f"printing takes one FILE ({len(files)} given); check several with --check, "
                               "or rewrite them with -w")
    results = [_format_one(f, check_only, expand, write) for f in files]
    all_ok = all(r["ok"] for r in results)
    if as_json:
        everything = [d for r in results for d in r["diagnostics"]]
        rows = [{k: v for k, v in r.items() if k not in ("error", "ok", "diagnostics")} for r in results]
        if len(rows) == 1:
            emit_json(rows[0], ok=all_ok, diagnostics=everything)
        else:
            files_ = [{"ok": r["ok"], "diagnostics": [d.to_json() for d in r["diagnostics"]], **row}
                      for r, row in zip(results, rows)]
            emit_json({"files": files_}, ok=all_ok, diagnostics=everything)
        raise SystemExit(0 if all_ok else 1)
    if len(files) == 1 and "error" in results[0]:
        raise results[0]["error"]  # rendered by the CLI (file:line:col, the line, a caret), exit 1
    for r in results:
        file = r["file"]
        if "error" in r:
            click.echo(r["error"].render(), err=True)
        elif check_only:
            if r["canonical"]:
                click.echo(f"{file}: canonical")
            else:
                click.echo(f"{file}: not in canonical layout; `sheaf fmt -w {file}` rewrites it", err=True)
        elif write:
            click.echo(f"{file}: " + ("rewritten" if r.get("written") else "unchanged"), err=True)
        else:
            click.echo(r["text"], nl=False)
    if len(files) > 1:
        bad = sum(not r["ok"] for r in results)
        what = "not canonical or not parsed" if check_only else "not parsed"
        click.echo(f"{len(files)} files: " + ("all ok" if all_ok else f"{bad} {what}"), err=True)
    raise SystemExit(0 if all_ok else 1)
