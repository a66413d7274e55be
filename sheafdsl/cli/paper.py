"""``sheaf paper NAME|all [--out DIR] [--quick] [--seed S] [--json]`` and ``sheaf paper --list``.

Regenerates one figure or table of Bosca & Ghrist (docs/paper.md): its plots (PDF and PNG) and
``NAME.json`` of its numbers go to DIR (default ``paper_out/NAME``). ``all`` runs every item, each into
``DIR/NAME`` (default ``paper_out/NAME``). ``--quick``: the seconds-long version CI runs. Progress goes
to stderr; ``--json`` prints the one envelope of docs/cli.md with the item's record (``item``, ``quick``,
``seconds``, ``numbers``, ``files``), or, for ``all``, ``items``: name -> record.
An unknown item is E660 (exit 1); an output folder that cannot be written is E661.
"""

from __future__ import annotations

import time

import click

from .common import console, emit_json, json_option, seed_option


@click.command("paper")
@click.argument("name", required=False)
@click.option("--out", "out", metavar="DIR", type=click.Path(file_okay=True), default=None,
              help="Output folder (default paper_out/NAME; with `all`, DIR/NAME per item).")
@click.option("--quick", is_flag=True, help="The seconds-long version (CI smoke test).")
@seed_option("Seed (default: the paper's for the item, else 0).")
@click.option("--list", "list_", is_flag=True, help="List the items and exit.")
@json_option
def command(name, out, quick, seed, list_, as_json):
    """Regenerate a figure or table of the paper (NAME, or `all`; `--list` lists them)."""
    from pathlib import Path

    from ..paper.registry import ITEMS
    from ..paper.runner import DEFAULT_ROOT, check_names, run_item

    if list_:
        if name is not None:
            raise click.UsageError("--list takes no item name")
        if as_json:
            emit_json({"items": {n: {"title": it.title, "seed": it.seed} for n, it in ITEMS.items()}})
        else:
            for n, it in ITEMS.items():
                console.print(f"{n:8s} {it.title}")
        return
    if name is None:
        raise click.UsageError("give an item name, `all`, or --list")
    names = list(ITEMS) if name == "all" else check_names([name])
    root = Path(out) if out is not None else None

    def log(msg, _t0=time.perf_counter()):
        click.echo(f"[{time.perf_counter() - _t0:7.1f} s] {msg}", err=True)

    records = {}
    for n in names:
        dest = (root if name != "all" else root / n) if root is not None else DEFAULT_ROOT / n
        log(f"{n}: {ITEMS[n].title}{' (quick)' if quick else ''} -> {dest}")
        records[n] = run_item(n, dest, quick=quick, seed=seed, logger=log)
        log(f"{n}: done in {records[n]['seconds']:.1f} s")
    if as_json:
        emit_json(records[name] if name != "all" else {"items": records})
        return
    for n, rec in records.items():
        console.print(f"{n}: {rec['seconds']:.1f} s{' (quick)' if quick else ''}")
        for f in rec["files"]:
            console.print(f"  {f}")
        _summary(rec["numbers"])


def _summary(numbers: dict) -> None:
    """The item's scalar numbers (and the paper's beside them), one per line."""
    paper = numbers.get("paper", {}) if isinstance(numbers.get("paper"), dict) else {}
    for k, v in numbers.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            ref = f"   (paper: {paper[k]})" if k in paper else ""
            console.print(f"  {k} = {v:.6g}{ref}" if isinstance(v, float) else f"  {k} = {v}{ref}")
