"""AST -> canonical text (``sheaf fmt``).

The canonical layout:

- one statement per line, single spaces between tokens, numbers in their shortest round-trip form
  (``1`` for 1.0, ``0.001``, ``1e-5``), shapes as ``ROWS x COLS``;
- a run of consecutive statements of the same kind (no blank line or comment between them) is a
  *block*; inside a block the names (and the sources/targets of edges, the shapes of parameters)
  are padded to a common width, and end-of-line comments start in a common column;
- comments are kept: the comments above a statement stay above it, an end-of-line comment stays at
  the end of its statement's (last) line, a comment inside a statement that spans several lines
  moves above it, and the comments at the end of the file stay there;
- blank lines are kept where the source had them (several collapse to one); an AST without source
  text gets a blank line wherever the kind of statement changes;
- a parameter's matrix literal with two or more rows is written one row per line, the rows aligned
  under the first (a restriction map literal of a ``maps`` edge stays on one line).

Formatting is idempotent (``format(parse(format(t))) == format(t)``) and faithful
(``parse(format(ast)) == ast``); both are property-tested.

>>> from sheafdsl.frontend import parse_text
>>> print(format_module(parse_text("sheaf t\\nstalk x:2\\nstalk long:3   # c\\npin x=[1.0,2]\\n")), end="")
sheaf t
stalk x    : 2
stalk long : 3  # c
pin x = [1, 2]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import ast as A

@dataclass(frozen=True)
class Comment:
    """A ``# ...`` comment: where it starts (1-based) and its text, trailing whitespace removed."""

    line: int
    col: int
    text: str


def collect_comments(source: str) -> list[Comment]:
    """Every comment of ``source``, in order.

    A ``#`` outside a string starts a comment that runs to the end of the line (strings are
    ``"..."`` on one line, so a per-line scan is exact).
    """
    out: list[Comment] = []
    for lineno, line in enumerate(source.split("\n"), 1):
        in_string = False
        for col, ch in enumerate(line):
            if ch == '"':
                in_string = not in_string
            elif ch == "#" and not in_string:
                out.append(Comment(lineno, col + 1, line[col:].rstrip()))
                break
    return out


# ----------------------------------------------------------------------------------------------
# numbers and literals


def format_number(x: float) -> str:
    """The shortest text that parses back to ``x``: ``1``, ``-0.5``, ``1e-5``, ``2.5e300``, ``inf``, ``nan``."""
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == int(x) and abs(x) < 1e16:
        return str(int(x))
    text = repr(x)
    if "e" in text:
        mantissa, exponent = text.split("e")
        return f"{mantissa}e{int(exponent)}"
    return text


def format_literal(value) -> str:
    """A number, or a (nested) vector ``[a, b]`` / matrix ``[[a, b], [c, d]]``, on one line."""
    if isinstance(value, tuple):
        return "[" + ", ".join(format_literal(v) for v in value) + "]"
    return format_number(value)


def _matrix_lines(value: tuple, indent: int) -> list[str]:
    """A matrix literal one row per line; rows after the first are indented by ``indent + 1``."""
    rows = [format_literal(r) for r in value]
    pad = " " * (indent + 1)
    lines = ["[" + rows[0] + ","]
    for r in rows[1:-1]:
        lines.append(pad + r + ",")
    lines.append(pad + rows[-1] + "]")
    return lines


def _is_matrix(value) -> bool:
    return isinstance(value, tuple) and len(value) >= 2 and all(isinstance(r, tuple) for r in value)


def format_shape(shape: tuple[int, ...]) -> str:
    return " x ".join(str(n) for n in shape)


def format_init(init: A.InitSpec) -> str:
    if init.kind.value == "file" and init.file is not None:
        return f'"{init.file}"' + (f":{init.key.value}" if init.key is not None else "")
    arg = f"({format_number(init.arg)})" if init.arg is not None else ""
    return init.kind.value + arg


def _index(indices) -> str:
    return "" if indices is None else "[" + ", ".join(str(i) for i in indices) + "]"


def _block(block) -> str:
    return "" if block is None else f"[{block[0]}:{block[1]}]"


def _train_value(item: A.TrainItem) -> str:
    if item.quoted:
        return f'"{item.value}"'
    if isinstance(item.value, str):
        return item.value
    return format_number(item.value)


# ----------------------------------------------------------------------------------------------
# statements


def _fields(s) -> tuple[str, ...]:
    """The columns of a statement that are padded to a common width inside a block."""
    if isinstance(s, A.StalkDecl):
        return (s.name.value,)
    if isinstance(s, A.ParamDecl):
        return (s.name.value, format_shape(s.shape))
    if isinstance(s, A.EdgeDecl):
        return (s.name.value, s.src.value + _block(s.src_block), s.dst.value + _block(s.dst_block))
    if isinstance(s, A.PinDecl):
        return (s.stalk.value + _index(s.indices),)
    if isinstance(s, A.TieDecl):
        return (s.a.value,)
    if isinstance(s, A.ObjectiveDecl):
        return (s.stalk.value,)
    return ()


def format_statement(s, widths: tuple[int, ...] = ()) -> list[str]:
    """The lines of one statement, its columns padded to ``widths`` (a multi-line matrix gives several)."""
    f = _fields(s)
    w = widths if len(widths) == len(f) else tuple(len(x) for x in f)
    col = [x.ljust(n) for x, n in zip(f, w)]
    if isinstance(s, A.Header):
        return [f"sheaf {s.name.value}"]
    if isinstance(s, A.StalkDecl):
        return [f"stalk {col[0]} : {s.dim}"]
    if isinstance(s, A.ParamDecl):
        head = f"param {col[0]} : {col[1]}  "
        if s.value is None:
            return [head + "init " + format_init(s.init)]
        if not _is_matrix(s.value.value):
            return [head + "= " + format_literal(s.value.value)]
        lines = _matrix_lines(s.value.value, len(head) + 2)
        return [head + "= " + lines[0]] + lines[1:]
    if isinstance(s, A.EdgeDecl):
        args = []
        for a in s.args:
            args.append(a.value if isinstance(a, A.Ident) else format_literal(a.value))
        kind = s.kind + ("" if not args else " " + (" | ".join(args) if s.kind == "maps" else " ".join(args)))
        weight = "" if s.weight is None else f" weight {format_number(s.weight)}"
        hard = " hard" if s.hard else ""
        direction = f" {s.direction}" if s.direction else ""
        return [f"edge {col[0]} : {col[1]} -> {col[2]}{direction}  {kind}{weight}{hard}".rstrip()]
    if isinstance(s, A.ObjectiveDecl):
        args = "".join(" " + (a.value if isinstance(a, A.Ident) else format_literal(a.value)) for a in s.args)
        return [f"objective {col[0]} {s.kind}{args}".rstrip()]
    if isinstance(s, A.PinDecl):
        if s.soft:
            return [f"pin {col[0]} ~ {format_literal(s.value.value)} weight {format_number(s.weight)}"]
        value = s.value if isinstance(s.value, str) else format_literal(s.value.value)
        return [f"pin {col[0]} = {value}"]
    if isinstance(s, A.ReluctanceDecl):
        return ["reluctance " + " ".join(p.value for p in s.params) + f" weight {format_number(s.weight)}"]
    if isinstance(s, A.TieDecl):
        return [f"tie {col[0]} ~ {s.b.value} weight {format_number(s.weight)}"]
    if isinstance(s, A.NetworkDecl):
        def act(name, arg):
            return " " + name.value + ("" if arg is None else " " + format_number(arg.value))

        widths = [str(n) for n in s.widths]
        for k, a in enumerate(s.layers[: max(0, len(widths) - 2)]):
            if a is not None:
                widths[k + 1] += act(a.name, a.arg)
        text = f"network {s.name.value} : " + " -> ".join(widths)
        if s.activation is not None:
            text += act(s.activation, s.activation_arg)
        if s.output is not None:
            text += " output " + s.output.value
            if s.output_weight is not None:
                text += " weight " + format_number(s.output_weight)
        return [text]
    if isinstance(s, A.EncoderDecl):
        text = f"encoder {s.name.value} : {s.widths[0]}"
        for k, w in enumerate(s.widths[1:]):
            act = s.activations[k] if k < len(s.activations) else None
            text += f" -> {w}" + (f" {act.value}" if act is not None else "")
        if s.output_activation is not None:
            text += f" {s.output_activation.value}"
        return [text + ("" if s.bias else " nobias")]
    if isinstance(s, A.GridDecl):
        return [f"grid {s.name.value} : {s.dim} observe {s.obs_dim} encoded {s.encoder.value}"]
    if isinstance(s, A.DecodeDecl):
        srcs = " ".join(x.name.value + _block(x.block) for x in s.sources)
        b = f" {s.b.value}" if s.b is not None else ""
        return [f"decode {s.target.value} : {s.pool + ' ' if s.pool else ''}{srcs} affine {s.W.value}{b} {s.kind}"]
    if isinstance(s, A.TrainDecl):
        return ["train " + " ".join(f"{i.key.value}={_train_value(i)}" for i in s.items)]
    raise TypeError(f"not a statement: {type(s).__name__}")


# ----------------------------------------------------------------------------------------------
# the module


@dataclass
class _Item:
    stmt: object = None  # a statement, or None for a comment line
    comment: Comment | None = None
    trailing: Comment | None = None
    first: int = 0  # source lines (0: unknown)
    last: int = 0


def _items(module: A.Module, comments: list[Comment]) -> list[_Item]:
    stmts = list(module.statements)
    ranges = [(s.span.line, s.span.end_line or s.span.line) if getattr(s, "span", A.NOSPAN).known else None
              for s in stmts]
    leading: list[list[Comment]] = [[] for _ in stmts]
    trailing: list[Comment | None] = [None] * len(stmts)
    tail: list[Comment] = []
    for c in comments:
        owner = next((i for i, r in enumerate(ranges) if r and r[0] <= c.line <= r[1]), None)
        if owner is not None:
            if c.line == ranges[owner][1] and trailing[owner] is None:
                trailing[owner] = c
            else:  # inside a statement that spans lines: it moves above the statement
                leading[owner].append(c)
            continue
        nxt = next((i for i, r in enumerate(ranges) if r and r[0] > c.line), None)
        (leading[nxt] if nxt is not None else tail).append(c)
    for i in range(len(stmts) - 1):
        if trailing[i] is not None and ranges[i] and ranges[i] == ranges[i + 1]:
            # statements expanded from one `network`: its end-of-line comment goes above them all
            leading[i].append(trailing[i])
            trailing[i] = None
    items: list[_Item] = []
    for i, s in enumerate(stmts):
        for c in leading[i]:
            items.append(_Item(comment=c, first=c.line, last=c.line))
        r = ranges[i] or (0, 0)
        items.append(_Item(stmt=s, trailing=trailing[i], first=r[0], last=r[1]))
    for c in tail:
        items.append(_Item(comment=c, first=c.line, last=c.line))
    return items


def _blank_between(prev: _Item, item: _Item, lines: list[str]) -> bool:
    if prev.stmt is not None and item.stmt is not None and (
            not prev.first or not item.first or prev.stmt.span == item.stmt.span):
        # no source positions to go by (a generated AST, or statements expanded from one `network`)
        return type(prev.stmt) is not type(item.stmt)
    if not prev.first or not item.first:
        return False
    return any(not lines[k - 1].strip() for k in range(prev.last + 1, item.first) if 0 < k <= len(lines))


def format_module(module: A.Module, *, comments: bool = True) -> str:
    """The canonical text of a module (see the module docstring), ending in one newline."""
    source = module.source or ""
    found = collect_comments(source) if comments and source else []
    items = _items(module, found)
    lines = source.split("\n")
    blank = [i > 0 and _blank_between(items[i - 1], items[i], lines) for i in range(len(items))]
    # blocks: runs of statements of one kind with nothing between them
    block_of = [0] * len(items)
    block = 0
    for i, it in enumerate(items):
        if i == 0 or blank[i] or it.stmt is None or items[i - 1].stmt is None or \
                type(it.stmt) is not type(items[i - 1].stmt):
            block += 1
        block_of[i] = block
    widths: dict[int, tuple[int, ...]] = {}
    for i, it in enumerate(items):
        if it.stmt is not None:
            f = tuple(len(x) for x in _fields(it.stmt))
            old = widths.get(block_of[i])
            widths[block_of[i]] = f if old is None else tuple(max(a, b) for a, b in zip(old, f))
    rendered: dict[int, list[str]] = {}
    comment_col: dict[int, int] = {}
    for i, it in enumerate(items):
        if it.stmt is not None:
            rendered[i] = format_statement(it.stmt, widths[block_of[i]])
            if it.trailing is not None:
                b = block_of[i]
                comment_col[b] = max(comment_col.get(b, 0), len(rendered[i][-1]) + 2)
    out: list[str] = []
    for i, it in enumerate(items):
        if blank[i]:
            out.append("")
        if it.stmt is None:
            out.append(it.comment.text)
            continue
        code = rendered[i]
        if it.trailing is not None:
            code = code[:-1] + [code[-1].ljust(comment_col[block_of[i]]) + it.trailing.text]
        out.extend(code)
    return "\n".join(out) + "\n"


def format_source(source: str, path: str = "<input>", *, expand: bool = False) -> str:
    """Parse ``source`` and return its canonical text (with ``network`` sugar expanded if asked)."""
    from .checker import expand as expand_sugar
    from .parser import parse_text

    module = parse_text(source, path)
    return format_module(expand_sugar(module) if expand else module)
