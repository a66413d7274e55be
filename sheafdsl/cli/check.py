"""``sheaf check FILE... [--json]``: parse and check each file; exit 0 when all are valid, 1 when not.

Each file is reported on its own (its diagnostics, then ``FILE: ok`` or ``FILE: N errors``), and one
broken file does not stop the others. With ``--json`` (docs/cli.md's schema): one file gives
``{"ok", "diagnostics", "file"}``; several give ``{"ok", "diagnostics", "files": [{"ok", "file",
"diagnostics"}, ...]}``, the top-level ``diagnostics`` every file's together and ``ok`` true when
every file is valid.
"""

from __future__ import annotations

import click

from ..errors import SheafError
from ..frontend import check_diagnostics, parse_file
from .common import emit_json, json_option


def check_one(file: str) -> tuple[bool, list, str | None]:
    """(ok, diagnostics, source or None) of one file."""
    try:
        module = parse_file(file)
        diags, source = check_diagnostics(module), module.source
    except SheafError as exc:
        diags, source = exc.diagnostics, exc.source
    return not any(d.severity == "error" for d in diags), diags, source


def _report(file: str, ok: bool, diags: list, source: str | None) -> None:
    # the file is never read a second time: a pipe would be empty, a FIFO would block
    lines = source.split("\n") if source is not None else None
    for d in diags:
        click.echo(d.render(lines=lines), err=True)
    n_err = sum(d.severity == "error" for d in diags)
    if ok:
        click.echo(f"{file}: ok" + (f" ({len(diags)} warning{'s' * (len(diags) != 1)})" if diags else ""))
    else:
        click.echo(f"{file}: {n_err} error{'s' * (n_err != 1)}", err=True)


@click.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False), metavar="FILE...")
@json_option
def command(files, as_json):
    """Parse and check each FILE: report every error, with its line and column.

    \b
    Examples:
      sheaf check models/paraboloid.sheaf
      sheaf check models/*.sheaf
    """
    results = []
    for file in files:
        ok, diags, source = check_one(file)
        results.append((file, ok, diags))
        if not as_json:
            _report(file, ok, diags, source)
    all_ok = all(ok for _, ok, _ in results)
    if as_json:
        everything = [d for _, _, diags in results for d in diags]
        if len(results) == 1:
            emit_json({"file": files[0]}, ok=all_ok, diagnostics=everything)
        else:
            emit_json({"files": [{"ok": ok, "file": f, "diagnostics": [d.to_json() for d in diags]}
                                 for f, ok, diags in results]}, ok=all_ok, diagnostics=everything)
    elif len(files) > 1:
        bad = sum(not ok for _, ok, _ in results)
        click.echo(f"{len(files)} files: " + ("all ok" if all_ok else f"{bad} with errors"), err=not all_ok)
    raise SystemExit(0 if all_ok else 1)
