"""``sheaf compile FILE [-o out.json|out.graphml|out.dot] [--json]``: build the IR, summarise it, export it.

Without ``-o`` it prints a summary table of the IR (every vertex and edge, with the pins and the
restriction maps). ``-o PATH`` writes the IR in the format named by the extension (see
:mod:`sheafdsl.ir.export`): ``.json`` (lossless node-link data plus the parameter sheaf), ``.graphml``
(scalar attributes), ``.dot``/``.gv`` (Graphviz). An unknown extension is a usage error (exit 2).

``--json`` prints the summary in the common envelope (docs/cli.md: ``ok``, ``diagnostics``): ``vertices``, ``edges``, ``free_dim``, ``pinned_dim``, ``edge_dim``,
``params`` (see :func:`sheafdsl.ir.export.summary`: free/pinned are **as at training time**, when input,
target and constant pins are all hard), plus ``free_dim_inference``, ``pinned_dim_inference``,
``total_dim``, ``anchors``, ``state_dependent``, ``param_shapes``, ``reluctance_edges``, ``tie_edges``, and
``output``/``format`` when a file was written.
"""

from __future__ import annotations

import click

from .common import console, emit_json, json_option, load_ir, model_argument, print_table


def _check_output(ctx, param, value):
    if value is None:
        return None
    from ..ir.export import format_of

    if format_of(value) is None:
        raise click.BadParameter(f"cannot tell the export format of {value!r}: the file name must end in .json, "
                                 ".graphml or .dot (or .gv)", ctx=ctx, param=param)
    return value


@click.command("compile")
@model_argument
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), callback=_check_output,
              metavar="OUT.{json,graphml,dot}", help="Write the IR to this file (format from the extension).")
@json_option
def command(file, output, as_json):
    """Compile FILE to the IR: print its summary, and export it with -o."""
    from ..api import export_ir
    from ..ir.export import summary

    G = load_ir(file)
    info = summary(G)
    if output is not None:
        info["format"] = export_ir(G, output, file="<command line>")
        info["output"] = output
    if as_json:
        emit_json(info)
        return
    _print(G, info)
    if output is not None:
        console.print(f"wrote {info['format']} to {output}")


def _print(G, info) -> None:
    from rich.table import Table

    from ..ir import describe, edges, stalks

    console.print(f"sheaf {info['name']}: {info['vertices']} vertices, {info['edges']} edges")
    t = Table()
    cols = (("vertex", "left"), ("dim", "right"), ("offset", "right"), ("pins", "left")) + (
        (("objective", "left"),) if info.get("consensus") else ())
    for col, just in cols:
        t.add_column(col, justify=just)
    for v in stalks(G):
        d = G.nodes[v]
        pins = ", ".join(p.source + ("" if p.indices is None else str(list(p.indices))) for p in d["pins"])
        row = [v + (" (anchor)" if d.get("anchor") else ""), str(d["dim"]), str(d["offset"]), pins or "-"]
        if info.get("consensus"):
            row.append(" + ".join(o.kind for o in d.get("objectives") or ()) or "-")
        t.add_row(*row)
    print_table(t)
    e = Table(title_justify="left")
    for col, just in (("edge", "left"), ("kind", "left"), ("from -> to", "left"), ("F_src | F_dst", "left"),
                      ("bias", "left"), ("dim", "right"), ("weight", "right")):
        e.add_column(col, justify=just)
    for u, v, name, d in edges(G):
        maps = f"{_short(describe(d['src_map']))} | {_short(describe(d['dst_map']))}"
        e.add_row(name, d["kind"], f"{u} -> {v}", maps, d.get("bias") or "-", str(d["dim"]),
                  "hard" if d.get("hard") else f"{d['weight']:g}")
    print_table(e)
    s = Table(show_header=False, title_justify="left")
    s.add_column(justify="left")
    s.add_column(justify="right")
    rows = [
        ("cochain dimension N", info["total_dim"]),
        ("free dimension (training: input, target, constants pinned)", info["free_dim"]),
        ("pinned dimension (training)", info["pinned_dim"]),
        ("free dimension (inference: target free)", info["free_dim_inference"]),
        ("edge dimension M", info["edge_dim"]),
        ("parameters (scalars)", info["params"]),
        ("reluctance / tie edges", f"{info['reluctance_edges']} / {info['tie_edges']}"),
        ("state-dependent maps", "yes" if info["state_dependent"] else "no"),
    ] + ([("consensus problem: objective terms / hard edges", f"{info['objective_terms']} / {info['hard_edges']}")]
         if info.get("consensus") else [])
    for k, v in rows:
        s.add_row(k, str(v))
    print_table(s)


def _short(text: str, n: int = 32) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."
