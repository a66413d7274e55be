"""Text -> AST: the lark grammar in ``grammars/sheaf.lark`` and a Transformer into :mod:`.ast`.

>>> m = parse_text("sheaf demo\\nstalk x : 2\\n")
>>> m.statements[1]
StalkDecl(name=Ident(value='x'), dim=2)
"""

from __future__ import annotations

import math
import re
import threading
from functools import lru_cache
from importlib import resources
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from ..errors import Diagnostic, SheafError, Span, did_you_mean
from ..nonlinearities import NAMES as NONLINEARITY_NAMES
from . import ast as A

MAX_NESTING = 16  # brackets; a literal is at most a matrix, so this is generous
MAX_SOURCE_BYTES = 50 * 1024 * 1024


def grammar_text() -> str:
    """The grammar shipped as package data (``sheafdsl.grammars``), or the repository copy."""
    try:
        return resources.files("sheafdsl.grammars").joinpath("sheaf.lark").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):  # running from a source tree that is not installed
        return (Path(__file__).resolve().parents[2] / "grammars" / "sheaf.lark").read_text(encoding="utf-8")


class _NestingError(Exception):
    def __init__(self, token: Token, message: str):
        self.token, self.message = token, message


class _Brackets:
    """lark post-lexer: drops newlines inside brackets, bounds their nesting depth, and remembers
    which brackets are still open (for the hint when one is never closed)."""

    always_accept = ("_NL",)

    def __init__(self):
        self._local = threading.local()  # the parser is shared; each thread's parse has its own stack

    @property
    def open(self) -> list[Token]:
        """The brackets still open in this thread's latest parse, innermost last."""
        return getattr(self._local, "open", [])

    def process(self, stream):
        stack: list[Token] = []
        self._local.open = stack
        for tok in stream:
            if tok.type == "_NL":
                if not stack:
                    yield tok
                continue
            if tok.type in ("_LSQB", "_LPAR"):
                stack.append(tok)
                if len(stack) > MAX_NESTING:
                    raise _NestingError(tok, f"brackets nested deeper than {MAX_NESTING} levels")
            elif tok.type in ("_RSQB", "_RPAR") and stack:
                stack.pop()
            yield tok


@lru_cache(maxsize=1)
def _lark() -> Lark:
    return Lark(grammar_text(), parser="lalr", lexer="contextual", postlex=_Brackets(),
                propagate_positions=True, maybe_placeholders=True)


@lru_cache(maxsize=1)
def keywords() -> frozenset[str]:
    """The keywords of the language (``stalk``, ``relu``, ``weight``, ...), read off the grammar."""
    return frozenset(_KEYWORD_TERMINALS().values())


@lru_cache(maxsize=1)
def _KEYWORD_TERMINALS() -> dict[str, str]:  # noqa: N802
    out = {}
    for t in _lark().terminals:
        m = re.fullmatch(r"([a-z][a-z0-9_]*)\(\?!\[A-Za-z0-9_\]\)", t.pattern.value) if t.pattern.type == "re" else None
        if m and t.name.startswith("_"):
            out[t.name] = m.group(1)
    return out


def _tspan(tok: Token) -> Span:
    return Span(tok.line, tok.column, tok.end_line or tok.line, tok.end_column or tok.column + len(tok))


def _mspan(meta) -> Span:
    if getattr(meta, "empty", True):
        return Span()
    return Span(meta.line, meta.column, meta.end_line, meta.end_column)


def _ident(tok: Token) -> A.Ident:
    return A.Ident(str(tok), _tspan(tok))


class _NumberError(Exception):
    def __init__(self, token: Token, message: str, hint: str | None = None):
        self.token, self.message, self.hint = token, message, hint


def _to_int(tok: Token) -> int:
    if len(tok) > 12:
        raise _NumberError(tok, f"integer `{tok[:20]}{'...' if len(tok) > 20 else ''}` is too large")
    return int(tok)


@v_args(meta=True)
class ToAST(Transformer):
    """Turns lark's parse tree into :mod:`sheafdsl.frontend.ast` nodes."""

    def start(self, meta, stmts):
        return tuple(s for s in stmts if s is not None)

    def header(self, meta, c):
        return A.Header(_ident(c[0]), _mspan(meta))

    def stalk(self, meta, c):
        return A.StalkDecl(_ident(c[0]), _to_int(c[1]), _mspan(meta), _tspan(c[1]))

    def shape(self, meta, c):
        if len(c) == 1 and c[0].type == "DIMS":
            t = c[0]
            rows, cols = t.split("x")
            at = len(rows) + 1
            return (_to_int(Token("INT", rows, t.start_pos, t.line, t.column, t.line, t.column + len(rows))),
                    _to_int(Token("INT", cols, t.start_pos + at, t.line, t.column + at, t.line, t.end_column))), _mspan(meta)
        dims = tuple(_to_int(t) for t in c if t is not None)
        return dims, _mspan(meta)

    def param_init(self, meta, c):
        (dims, sspan), init = c[1], c[2]
        return A.ParamDecl(_ident(c[0]), dims, init=init, span=_mspan(meta), shape_span=sspan)

    def param_literal(self, meta, c):
        (dims, sspan), lit = c[1], c[2]
        return A.ParamDecl(_ident(c[0]), dims, value=lit, span=_mspan(meta), shape_span=sspan)

    def init_named(self, meta, c):
        arg = c[1].value if c[1] is not None else None
        return A.InitSpec(_ident(c[0]), arg=arg, span=_mspan(meta))

    def init_file(self, meta, c):
        kind = A.Ident("file", _tspan(c[0]))
        return A.InitSpec(kind, file=str(c[0])[1:-1], key=_ident(c[1]) if c[1] is not None else None, span=_mspan(meta))

    def edge(self, meta, c):
        name, (src, sblk, sbspan), (dst, dblk, dbspan), direction, (kind, args, kspan), tail = c
        (w, wspan), hspan = tail if tail is not None else ((None, Span()), None)
        dname, dspan = direction if direction is not None else (None, Span())
        return A.EdgeDecl(_ident(name), _ident(src), _ident(dst), kind, args, w, _mspan(meta), kspan, wspan,
                          hard=hspan is not None, hard_span=hspan or Span(), src_block=sblk, dst_block=dblk,
                          src_block_span=sbspan, dst_block_span=dbspan, direction=dname, direction_span=dspan)

    def endpoint(self, meta, c):
        name, block = c
        blk, bspan = block if block is not None else (None, Span())
        return name, blk, bspan

    def block(self, meta, c):
        return (_to_int(c[0]), _to_int(c[1])), _mspan(meta)

    def dir_right(self, meta, c):
        return "right", _mspan(meta)

    def dir_down(self, meta, c):
        return "down", _mspan(meta)

    def obj_encoded(self, meta, c):
        stalk, kspan, enc, obs = c
        return A.ObjectiveDecl(_ident(stalk), "encoded", (_ident(enc), _ident(obs)), _mspan(meta), kspan)

    def encoder(self, meta, c):
        name, first, *layers, nobias = c
        widths = [first] + [w for w, _ in layers]
        acts = [a for _, a in layers]
        out_act = acts.pop() if acts else None
        return A.EncoderDecl(_ident(name), tuple(_to_int(t) for t in widths),
                             tuple(_ident(a) if a is not None else None for a in acts),
                             _ident(out_act) if out_act is not None else None, _mspan(meta),
                             tuple(_tspan(t) for t in widths), bias=nobias is None)

    def nobias(self, meta, c):
        return True

    def enc_layer(self, meta, c):
        return c[0], c[1]

    def grid(self, meta, c):
        name, dim, odim, enc = c
        return A.GridDecl(_ident(name), _to_int(dim), _to_int(odim), _ident(enc), _mspan(meta), _tspan(dim), _tspan(odim))

    def decode(self, meta, c):
        target, pool, *rest = c
        *sources, W, b, (kind, kspan) = rest
        srcs = tuple(A.DecodeSource(_ident(n), blk, _tspan(n), bspan) for n, blk, bspan in sources)
        return A.DecodeDecl(_ident(target), srcs, _ident(W), _ident(b) if b is not None else None, kind,
                            pool, _mspan(meta), kspan)

    def pool_mean(self, meta, c):
        return "mean"

    def pool_sum(self, meta, c):
        return "sum"

    def dec_identity(self, meta, c):
        return "identity", _mspan(meta)

    def dec_softmax(self, meta, c):
        return "softmax", _mspan(meta)

    def dec_sigmoid(self, meta, c):
        return "sigmoid", _mspan(meta)

    def tail_weight(self, meta, c):
        return c[0], c[1]

    def tail_hard(self, meta, c):
        return (c[1] if c[1] is not None else (None, Span())), c[0]

    def hard(self, meta, c):
        return _mspan(meta)

    def _objective(kind):  # noqa: N805 - a small factory used in the class body
        def build(self, meta, c):
            stalk, kspan, *args = c
            args = tuple(_ident(t) if isinstance(t, Token) else t for t in args if t is not None)
            return A.ObjectiveDecl(_ident(stalk), kind, args, _mspan(meta), kspan)

        return build

    obj_quadratic = _objective("quadratic")
    obj_nonneg = _objective("nonneg")
    obj_box = _objective("box")
    obj_simplex = _objective("simplex")
    obj_l1 = _objective("l1")
    del _objective

    def obj_unknown(self, meta, c):  # an unknown kind parses, so that the checker can name the known ones (E291)
        stalk, kind, *args = c
        args = tuple(_ident(t) if isinstance(t, Token) else t for t in args if t is not None)
        return A.ObjectiveDecl(_ident(stalk), str(kind), args, _mspan(meta), _tspan(kind))

    def objective_kind(self, meta, c):
        return _mspan(meta)

    def _kind(kind):  # noqa: N805 - a small factory used in the class body
        def build(self, meta, c):
            args = tuple(_ident(t) if isinstance(t, Token) else t for t in c if t is not None)
            return kind, args, _mspan(meta)

        return build

    affine = _kind("affine")
    linear = _kind("linear")
    maps = _kind("maps")
    # one edge kind per entry of the nonlinearity registry (relu, identity, tanh, ..., softmax)
    for _name in NONLINEARITY_NAMES:
        locals()[_name] = _kind(_name)
    del _kind, _name

    def weight(self, meta, c):
        return c[0].value, c[0].span

    def index(self, meta, c):
        return tuple(_to_int(t) for t in c), _mspan(meta), tuple(_tspan(t) for t in c)

    def pin_input(self, meta, c):
        return "input", _mspan(meta)

    def pin_target(self, meta, c):
        return "target", _mspan(meta)

    def _pin_value(self, v):
        return (v, v.span) if isinstance(v, A.Lit) else v

    def hard_pin(self, meta, c):
        name, index, value = c
        indices, ispan, ispans = index if index is not None else (None, Span(), ())
        v, vspan = self._pin_value(value)
        return A.PinDecl(_ident(name), v, indices, None, _mspan(meta), ispan, vspan, index_spans=ispans)

    def soft_pin(self, meta, c):
        name, index, value, weight = c
        indices, ispan, ispans = index if index is not None else (None, Span(), ())
        return A.PinDecl(_ident(name), value, indices, weight.value, _mspan(meta), ispan, value.span, weight.span,
                         index_spans=ispans)

    def reluctance(self, meta, c):
        *names, weight = c
        return A.ReluctanceDecl(tuple(_ident(t) for t in names), weight.value, _mspan(meta), weight.span)

    def tie(self, meta, c):
        return A.TieDecl(_ident(c[0]), _ident(c[1]), c[2].value, _mspan(meta), c[2].span)

    def network(self, meta, c):
        name, first, *layers, output = c
        widths = [first] + [w for w, _ in layers]
        acts = [a for _, a in layers]
        last = acts.pop() if acts else None  # after the last width: the default of every hidden layer
        out, (w, wspan) = output if output is not None else (None, (None, Span()))
        return A.NetworkDecl(_ident(name), tuple(_to_int(t) for t in widths), last.name if last else None, out,
                             _mspan(meta), tuple(_tspan(t) for t in widths),
                             layers=tuple(acts) if any(a is not None for a in acts) else (),
                             activation_arg=last.arg if last else None, output_weight=w, output_weight_span=wspan)

    def net_layer(self, meta, c):
        return c[0], c[1]

    def activation(self, meta, c):
        return A.LayerActivation(_ident(c[0]), c[1], _mspan(meta))

    def output(self, meta, c):
        return _ident(c[0]), (c[1] if c[1] is not None else (None, Span()))

    def train(self, meta, c):
        return A.TrainDecl(tuple(c), _mspan(meta))

    def train_item(self, meta, c):
        key, value = c
        if isinstance(value, A.Lit):
            return A.TrainItem(_ident(key), value.value, False, _mspan(meta))
        if value.type == "STRING":
            return A.TrainItem(_ident(key), str(value)[1:-1], True, _mspan(meta))
        return A.TrainItem(_ident(key), str(value), False, _mspan(meta))

    def vector(self, meta, c):
        items = tuple(x.value for x in c if x is not None)
        return A.Lit(items, _mspan(meta))

    def number(self, meta, c):
        tok = c[0]
        text = str(tok)
        value = float(text)
        if math.isinf(value) and "inf" not in text.lower():
            raise _NumberError(tok, f"number `{text[:30]}` is out of range for a 64-bit float",
                               "the largest finite value is about 1.8e308")
        return A.Lit(value, _tspan(tok))


_FRIENDLY = {
    "NAME": "a name", "INT": "an integer", "DIMS": "a shape such as `3x4`", "NUMBER": "a number",
    "STRING": "a quoted string", "_NL": "end of line", "$END": "end of file", "_COLON": "`:`", "_LSQB": "`[`",
    "_RSQB": "`]`", "_LPAR": "`(`", "_RPAR": "`)`", "_COMMA": "`,`", "_EQUAL": "`=`", "_TILDE": "`~`",
    "_VBAR": "`|`", "_ARROW": "`->`",
}

STATEMENT_KEYWORDS = ("sheaf", "stalk", "param", "edge", "pin", "reluctance", "tie", "network", "train", "objective",
                      "encoder", "grid", "decode")
_CLOSING = {"_LSQB": "]", "_LPAR": ")"}


def _friendly(terminal: str) -> str:
    if terminal in _FRIENDLY:
        return _FRIENDLY[terminal]
    kw = _KEYWORD_TERMINALS().get(terminal)
    if kw is not None:
        return f"`{kw}`"
    return terminal.lstrip("_").lower()


def _expected_text(expected) -> tuple[str, list[str]]:
    """("`a`, `b`, a name", [keywords]) for a set of terminal names, keywords first."""
    names = sorted({_friendly(t) for t in expected}, key=lambda n: (not n.startswith("`"), n))
    words = [n.strip("`") for n in names if n.startswith("`") and n.strip("`").isalpha()]
    if len(names) > 9:
        names = names[:8] + ["..."]
    return ", ".join(names), words


def _parser_expected(parser: Lark, state) -> set[str] | None:
    """The terminals the LALR parser can shift in ``state`` (None when unknown)."""
    try:
        position = getattr(state, "position", state)  # lark hands over a ParserState or a state number
        keys = parser.parser.parser._parse_table.states[position].keys()
    except (AttributeError, KeyError, TypeError):
        return None
    return {k for k in keys if k.startswith("$") or k.lstrip("_")[:1].isupper()}  # terminals, not rules


def _token_text(tok: Token) -> str:
    if tok.type == "_NL":
        return "end of line"
    if tok.type == "$END":
        return "end of file"
    text = str(tok)
    return f"`{text[:40]}{'...' if len(text) > 40 else ''}`"


def _unclosed_hint(parser: Lark, line: int) -> str | None:
    """A hint naming the innermost bracket still open when the error happened on a later line."""
    opened = getattr(parser.options.postlex, "open", None) or []
    if opened and opened[-1].line < line:
        tok = opened[-1]
        return (f"the `{tok}` at line {tok.line}, column {tok.column} is never closed "
                f"(a missing `{_CLOSING.get(tok.type, ']')}`?)")
    return None


def _syntax_diagnostic(err: UnexpectedInput, source: str, path: str, parser: Lark) -> Diagnostic:
    line = getattr(err, "line", 0) or 0
    col = getattr(err, "column", 0) or 0
    if isinstance(err, UnexpectedCharacters):
        allowed = _parser_expected(parser, getattr(err, "state", None))
        if allowed is None:
            allowed = set(err.allowed or ())
        expected, words = _expected_text(allowed)
        hint = f"expected {expected}" if expected else None
        ch = source[err.pos_in_stream] if 0 <= err.pos_in_stream < len(source) else "?"
        word = _word_at(source, err.pos_in_stream)
        if word:
            if word[0].isdigit() or word[0] in "+-.":
                what = "a number" if any(t in allowed for t in ("NUMBER", "INT")) else None
                msg = f"malformed number `{word[:40]}`" if what and not _is_number(word) else f"unexpected `{word[:40]}`"
                if "INT" in allowed and "NUMBER" not in allowed and _is_number(word):
                    hint = "expected a whole number (0, 1, 2, ...)"
                return Diagnostic("E101", msg, Span(line, col, line, col + len(word)), "error",
                                  _unclosed_hint(parser, line) or hint, path)
            if ("NAME" in allowed or words) and word[0].isalpha() or word[0] == "_":
                if allowed & set(_KEYWORD_TERMINALS()) and "NAME" not in allowed:
                    what = "statement" if allowed & {"_STALK", "_SHEAF", "_EDGE"} else "keyword"
                    if allowed & {"_RELU", "_AFFINE", "_MAPS"}:
                        what = "edge kind"
                    guess = did_you_mean(word, words)
                    return Diagnostic("E101", f"unknown {what} `{word[:40]}`", Span(line, col, line, col + len(word)),
                                      "error", guess or _unclosed_hint(parser, line) or hint, path)
                return Diagnostic("E101", f"unexpected `{word[:40]}`", Span(line, col, line, col + len(word)), "error",
                                  did_you_mean(word, words) or _unclosed_hint(parser, line) or hint, path)
        shown = repr(ch) if not ch.isprintable() or ch.isspace() else f"`{ch}`"
        if ch == '"':
            return Diagnostic("E100", "unterminated string", Span(line, col, line, col + 1), "error",
                              'a string is written "..." on one line', path)
        return Diagnostic("E100", f"unexpected character {shown}", Span(line, col, line, col + 1), "error",
                          _unclosed_hint(parser, line) or hint, path)
    if isinstance(err, UnexpectedEOF) or (isinstance(err, UnexpectedToken) and err.token.type == "$END"):
        expected, _ = _expected_text(getattr(err, "expected", ()) or ())
        lines = source.split("\n")
        if len(lines) > 1 and lines[-1] == "":
            lines.pop()
        line, col = len(lines), len(lines[-1].rstrip("\r")) + 1
        opened = getattr(parser.options.postlex, "open", None) or []
        if opened:
            tok = opened[-1]
            return Diagnostic("E102", f"unexpected end of file: the `{tok}` here is never closed", _tspan(tok), "error",
                              f"add the missing `{_CLOSING.get(tok.type, ']')}`", path)
        return Diagnostic("E102", "unexpected end of file", Span(line, col, line, col + 1), "error",
                          f"expected {expected}" if expected else None, path)
    assert isinstance(err, UnexpectedToken)
    tok = err.token
    exp = _parser_expected(parser, getattr(err, "state", None)) or set(err.expected or ())
    expected, words = _expected_text(exp)
    hint = f"expected {expected}" if expected else None
    span = _tspan(tok) if tok.type != "_NL" else Span(line, col, line, col + 1)
    unclosed = _unclosed_hint(parser, tok.line or line)
    if tok.type == "NAME":
        guess = did_you_mean(str(tok), words) if words else None
        if {"_RELU", "_AFFINE", "_MAPS"} <= exp:
            return Diagnostic("E101", f"unknown edge kind `{tok}`", span, "error",
                              guess or "an edge is one of: " + ", ".join(A.EDGE_KINDS), path)
        if {"_STALK", "_EDGE", "_SHEAF"} <= exp:
            return Diagnostic("E101", f"unknown statement `{tok}`", span, "error",
                              guess or "a statement starts with one of: " + ", ".join(STATEMENT_KEYWORDS), path)
        hint = guess or hint
    prev = _word_before(source, tok.start_pos) if tok.start_pos is not None else ""
    if prev and words and prev not in words and tok.type != "_NL":
        # `reluctance W1 wieght 1`: the misspelt keyword was read as a name; the next token fails
        guess = did_you_mean(prev, words)
        if guess:
            hint = f"{guess[:-1]} instead of `{prev}`?"
    kw = _KEYWORD_TERMINALS().get(tok.type)
    if kw in STATEMENT_KEYWORDS and exp & {"_NL", "$END"}:
        hint = "each statement goes on its own line"
    if tok.type == "_X" and exp & {"_INIT", "_EQUAL"}:
        hint = "a parameter is a vector (`param b : N`) or a matrix (`param W : ROWS x COLS`)"
    if tok.type in ("NUMBER", "DIMS") and "INT" in exp:
        hint = "expected a whole number (0, 1, 2, ...)" if tok.type == "NUMBER" else hint
    return Diagnostic("E101", f"unexpected {_token_text(tok)}", span, "error", unclosed or hint, path)


def _is_number(word: str) -> bool:
    try:
        float(word)
        return True
    except ValueError:
        return False


_WORD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[+-]?[0-9.](?:[A-Za-z0-9_.]|(?<=[eE])[+-])*")


def _word_before(source: str, pos: int) -> str:
    """The name just before ``pos`` on the same line (spaces between allowed), or ''."""
    end = pos
    while end > 0 and source[end - 1] in " \t":
        end -= 1
    start = end
    while start > 0 and (source[start - 1].isalnum() or source[start - 1] == "_") and source[start - 1].isascii():
        start -= 1
    word = source[start:end]
    return word if word[:1].isalpha() or word[:1] == "_" else ""


def _word_at(source: str, pos: int) -> str:
    """The name or number-like word starting at ``pos`` ('' when there is none)."""
    m = _WORD_RE.match(source, pos)
    return m.group(0) if m else ""


def decode_source(data: bytes, path: str = "<input>") -> str:
    """Bytes -> text, or a SheafError for binary or non-UTF-8 input."""
    if len(data) > MAX_SOURCE_BYTES:
        raise SheafError(Diagnostic("E103", f"file is {len(data)} bytes; the limit is {MAX_SOURCE_BYTES}", file=path))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SheafError(Diagnostic("E103", f"file is not valid UTF-8 text (byte 0x{data[exc.start]:02x})",
                                    Span(line, col, line, col + 1), "error",
                                    "a .sheaf file is plain UTF-8 text; is this a binary file?", path)) from None
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        col = nul - (text.rfind("\n", 0, nul) + 1) + 1
        raise SheafError(Diagnostic("E103", "file contains a NUL byte", Span(line, col, line, col + 1), "error",
                                    "a .sheaf file is plain UTF-8 text; is this a binary file?", path), text)
    return text


def parse_text(source: str, path: str = "<input>") -> A.Module:
    """Parse source text into a :class:`~sheafdsl.frontend.ast.Module`, or raise SheafError."""
    if not source.strip() or all(not ln.strip() or ln.lstrip().startswith("#") for ln in source.split("\n")):
        raise SheafError(Diagnostic("E104", "file is empty: a model starts with `sheaf NAME`", Span(1, 1, 1, 2),
                                    "error", "add a first line such as `sheaf mymodel`", path), source)
    parser = _lark()
    text = source if source.endswith("\n") else source + "\n"
    try:
        tree = parser.parse(text)
        statements = ToAST().transform(tree)
    except _NestingError as exc:
        raise SheafError(Diagnostic("E105", exc.message, _tspan(exc.token), "error",
                                    "a literal is a number, a vector [..] or a matrix [[..], ..]", path), source) from None
    except UnexpectedInput as exc:
        if isinstance(getattr(exc, "__context__", None), _NestingError):
            exc = exc.__context__
            raise SheafError(Diagnostic("E105", exc.message, _tspan(exc.token), "error", None, path), source) from None
        raise SheafError(_syntax_diagnostic(exc, text, path, parser), source) from None
    except VisitError as exc:
        inner = exc.orig_exc
        if isinstance(inner, _NumberError):
            raise SheafError(Diagnostic("E106", inner.message, _tspan(inner.token), "error", inner.hint, path), source) from None
        raise
    except _NumberError as exc:
        raise SheafError(Diagnostic("E106", exc.message, _tspan(exc.token), "error", exc.hint, path), source) from None
    except RecursionError:
        raise SheafError(Diagnostic("E105", "input is nested too deeply", file=path), source) from None
    except LarkError as exc:  # any other lark failure is still the user's input
        raise SheafError(Diagnostic("E101", f"cannot parse: {str(exc).splitlines()[0]}", file=path), source) from None
    return A.Module(statements, path, source)


def parse_file(path: str | Path) -> A.Module:
    """Read (once: a pipe or ``-`` for standard input works) and parse a file; unreadable files are SheafErrors too."""
    from ..fileio import display_name, read_bytes

    data = read_bytes(path, code="E107", what="model file", limit=MAX_SOURCE_BYTES, size_code="E103")
    name = display_name(path)
    return parse_text(decode_source(data, name), name)
