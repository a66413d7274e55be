"""The parser: text -> typed AST with spans (syntax only; the checker is tested in test_checker.py)."""

from __future__ import annotations

import math

import pytest

from sheafdsl.errors import SheafError, Span
from sheafdsl.frontend import ast as A
from sheafdsl.frontend import parse_file, parse_text
from sheafdsl.frontend.parser import decode_source, grammar_text, keywords


def stmts(src: str):
    return parse_text(src).statements


def one(src: str):
    s = stmts("sheaf t\n" + src)
    assert len(s) == 2
    return s[1]


def syntax_error(src: str):
    with pytest.raises(SheafError) as info:
        parse_text(src, "t.sheaf")
    (d,) = info.value.diagnostics
    return d


def test_every_statement_to_its_node():
    assert one("stalk x : 2") == A.StalkDecl(A.Ident("x"), 2)
    assert one("param W : 3 x 2 init he") == A.ParamDecl(A.Ident("W"), (3, 2), init=A.InitSpec(A.Ident("he")))
    assert one("param W : 3x2 init normal(0.1)") == A.ParamDecl(A.Ident("W"), (3, 2),
                                                                init=A.InitSpec(A.Ident("normal"), arg=0.1))
    assert one('param W : 3 init "w.npz":K') == A.ParamDecl(
        A.Ident("W"), (3,), init=A.InitSpec(A.Ident("file"), file="w.npz", key=A.Ident("K")))
    assert one("param b : 2 = [1, -2.5]") == A.ParamDecl(A.Ident("b"), (2,), value=A.Lit((1.0, -2.5)))
    assert one("edge e : u -> v affine W b weight 2") == A.EdgeDecl(
        A.Ident("e"), A.Ident("u"), A.Ident("v"), "affine", (A.Ident("W"), A.Ident("b")), 2.0)
    assert one("edge e : u -> v affine W").args == (A.Ident("W"),)
    assert one("edge e : u -> v linear W").kind == "linear"
    for kind in ("relu", "identity", "sigmoid", "softmax"):
        e = one(f"edge e : u -> v {kind}")
        assert (e.kind, e.args, e.weight) == (kind, (), None)
    e = one("edge e : u -> v maps [[1, 0]] | M")
    assert e.args == (A.Lit(((1.0, 0.0),)), A.Ident("M"))
    assert one("edge e : u -> v maps -1 | 2").args == (A.Lit(-1.0), A.Lit(2.0))
    assert one("pin x = input") == A.PinDecl(A.Ident("x"), "input")
    assert one("pin y = target") == A.PinDecl(A.Ident("y"), "target")
    assert one("pin a[1, 3] = [0.5, 1]") == A.PinDecl(A.Ident("a"), A.Lit((0.5, 1.0)), (1, 3))
    p = one("pin z ~ 0 weight 10")
    assert p == A.PinDecl(A.Ident("z"), A.Lit(0.0), None, 10.0) and p.soft
    assert one("reluctance W1 W2 weight 1e-3") == A.ReluctanceDecl((A.Ident("W1"), A.Ident("W2")), 0.001)
    assert one("tie W2 ~ W3 weight 0.1") == A.TieDecl(A.Ident("W2"), A.Ident("W3"), 0.1)
    assert one("network m : 2 -> 30 -> 1") == A.NetworkDecl(A.Ident("m"), (2, 30, 1))
    n = one("network m : 2 -> 3 -> 1 relu output softmax")
    assert (n.activation, n.output) == (A.Ident("relu"), A.Ident("softmax"))
    assert one("network m : 2 -> 1 output sigmoid").activation is None
    t = one('train data=paraboloid n=300 lr=1e-2 out="a b.csv"')
    assert [(i.key.value, i.value, i.quoted) for i in t.items] == [
        ("data", "paraboloid", False), ("n", 300.0, False), ("lr", 0.01, False), ("out", "a b.csv", True)]


def test_spans_point_at_the_source():
    src = "sheaf t\nstalk z1 : 30\nedge act1 : z1 -> a1 relu weight 2\npin a1[3] = 0.5\n"
    _, stalk, edge, pin = stmts(src)
    assert stalk.span == Span(2, 1, 2, 14)
    assert stalk.name.span == Span(2, 7, 2, 9) and stalk.dim_span == Span(2, 12, 2, 14)
    assert edge.src.span == Span(3, 13, 3, 15) and edge.dst.span == Span(3, 19, 3, 21)
    assert edge.kind_span.col == 22 and edge.weight_span == Span(3, 34, 3, 35)
    assert pin.index_span == Span(4, 7, 4, 10) and pin.index_spans == (Span(4, 8, 4, 9),)
    assert pin.value_span == Span(4, 13, 4, 16)


def test_spans_of_a_dims_shape():
    p = one("param W : 30x2 init he")
    assert p.shape == (30, 2) and p.shape_span == Span(2, 11, 2, 15)


def test_spans_do_not_count_in_equality():
    assert parse_text("sheaf t\nstalk x : 2\n") == parse_text("\n\nsheaf    t # c\n\n  stalk x:2")


def test_numbers():
    vals = one("pin x = [1, -2, +3, 0.5, .25, 2., 1e3, 1E-3, -1.5e+2, inf, -Inf, infinity]").value.value
    assert vals == (1, -2, 3, 0.5, 0.25, 2, 1000, 0.001, -150, math.inf, -math.inf, math.inf)
    assert math.isnan(one("pin x = NaN").value.value)
    assert one("pin x = 1.7976931348623157e308").value.value == 1.7976931348623157e308


def test_nested_literals_and_trailing_commas():
    assert one("pin x = [[1, 2,], [3, 4],]").value.value == ((1, 2), (3, 4))
    assert one("pin x = []").value.value == ()
    assert one("pin x = [[]]").value.value == ((),)
    assert one("pin x[0, 1,] = 0").indices == (0, 1)


def test_brackets_span_lines_and_backslash_continues():
    src = "sheaf t\nparam W : 2 x 2 = [[1, 2],   # first row\n\n   [3, 4]]\nedge e : u -> v \\\n    identity\n"
    _, p, e = stmts(src)
    assert p.value.value == ((1, 2), (3, 4)) and p.span.line == 2 and p.span.end_line == 4
    assert e.kind == "identity" and (e.span.line, e.span.end_line) == (5, 6)


def test_comments_blank_lines_crlf_tabs():
    src = "# header\r\n\r\nsheaf t   # the name\r\n\tstalk\tx : 2 # two\r\n#end"
    assert stmts(src) == (A.Header(A.Ident("t")), A.StalkDecl(A.Ident("x"), 2))


def test_keywords_are_whole_words():
    assert "pinx" not in keywords() and {"pin", "stalk", "relu", "weight"} <= keywords()
    d = syntax_error("sheaf t\nstalk x : 2\npinx = 1\n")
    assert (d.code, d.span.line, d.span.col) == ("E101", 3, 1) and d.message == "unknown statement `pinx`"
    assert syntax_error("sheaf t\nedge e : u -> v reluweight 2\n").message == "unknown edge kind `reluweight`"
    assert syntax_error("sheaf t\nparam W : 2 x2 init he\n").code == "E101"


def test_keywords_may_name_things_where_unambiguous():
    s = stmts("sheaf t\nstalk input : 2\nstalk relu : 2\nedge weight : input -> relu identity\npin input = input\n")
    assert [x.name.value for x in s[1:3]] == ["input", "relu"]
    assert s[3].name.value == "weight" and s[4].stalk.value == "input" and s[4].value == "input"
    assert one("param x : 2 x 3 init he").name.value == "x"


def test_number_words_are_numbers_not_names():
    assert one("edge e : u -> v maps nan | 1").args[0].value != one("edge e : u -> v maps nanx | 1").args[0]
    assert one("edge e : u -> v maps nanx | 1").args[0] == A.Ident("nanx")
    assert one("stalk nan : 2").name.value == "nan"  # where only a name can stand, it is a name


@pytest.mark.parametrize("src, code, message", [
    ("sheaf t\nstalk x : 2 3\n", "E101", "unexpected `3`"),
    ("sheaf t\nstalk x 2\n", "E101", "unexpected `2`"),
    ("sheaf t\nstalk x : \n", "E101", "unexpected end of line"),
    ("sheaf t\nedge e : u -> v\n", "E101", "unexpected end of line"),
    ("sheaf t\nedge e : u -> v maps 1\n", "E101", "unexpected end of line"),
    ("sheaf t\npin x ~ 1\n", "E101", "unexpected end of line"),
    ("sheaf t\npin x[] = 1\n", "E101", "unexpected `]`"),
    ("sheaf t\nnetwork m : 2\n", "E101", "unexpected end of line"),
    ("sheaf t\ntrain\n", "E101", "unexpected end of line"),
    ("sheaf t\nreluctance weight 1\n", "E101", "unexpected `1`"),  # here `weight` is a name
    ("sheaf t\nstalk é : 2\n", "E100", "unexpected character `é`"),
    ("sheaf t\nstalk x : 2 ]\n", "E101", "unexpected `]`"),
    ("sheaf t\npin x = [1 2]\n", "E101", "unexpected `2`"),
    ("sheaf t\npin x = 2x\n", "E101", "malformed number `2x`"),
])
def test_syntax_errors(src, code, message):
    d = syntax_error(src)
    assert (d.code, d.message) == (code, message)
    assert d.span.line == 2 and d.file == "t.sheaf"


def test_expected_tokens_come_from_the_parser_state():
    d = syntax_error("sheaf t\nstalk x : 2\npin x = - 1\n")
    assert d.hint == "expected `[`, `input`, `target`, a number"
    assert syntax_error("sheaf t\nstalk x : y\n").hint == "expected an integer"


def test_unclosed_bracket_is_named_where_it_opens():
    d = syntax_error("sheaf t\nparam W : 2 x 2 = [[1, 2],\n  [3, 4]\n")
    assert (d.code, d.span.line, d.span.col) == ("E102", 2, 19) and "never closed" in d.message
    d = syntax_error("sheaf t\nparam W : 2 init normal(1\nstalk y : 2\n")
    assert (d.span.line, d.message) == (3, "unexpected `stalk`")
    assert d.hint == "the `(` at line 2, column 24 is never closed (a missing `)`?)"


def test_decode_source(monkeypatch):
    assert decode_source("\ufeffsheaf t\n".encode("utf-8")) == "sheaf t\n"
    from sheafdsl.frontend import parser

    monkeypatch.setattr(parser, "MAX_SOURCE_BYTES", 100)
    with pytest.raises(SheafError) as info:
        decode_source(b"#" * 101, "big.sheaf")
    assert info.value.codes == ["E103"] and "the limit is 100" in info.value.diagnostics[0].message
    monkeypatch.undo()
    for data in (b"\x80abc", b"sheaf t\n\x00", bytes(range(256))):
        with pytest.raises(SheafError) as info:
            decode_source(data)
        assert info.value.codes == ["E103"]


def test_parse_file_and_unreadable_paths(tmp_path):
    f = tmp_path / "m.sheaf"
    f.write_bytes(b"\xef\xbb\xbfsheaf m\r\nstalk x : 1\r\n")
    m = parse_file(f)
    assert m.path == str(f) and m.statements[0].name.value == "m"
    for bad in (tmp_path / "missing.sheaf", tmp_path):
        with pytest.raises(SheafError) as info:
            parse_file(bad)
        assert info.value.codes == ["E107"]


def test_grammar_ships_with_the_package():
    import sheafdsl.grammars  # noqa: F401  (the installed package data)

    assert "start:" in grammar_text()


def test_every_example_in_the_language_reference_parses():
    """The code blocks of docs/language.md are valid syntax (the full examples also check)."""
    import os
    import re

    from sheafdsl.frontend import load_text

    doc = open(os.path.join(os.path.dirname(__file__), "..", "docs", "language.md"), encoding="utf-8").read()
    blocks = re.findall(r"```\n(.*?)```", doc, re.S)
    assert len(blocks) >= 10
    for block in blocks:
        src = block if re.search(r"^sheaf ", block, re.M) else "sheaf doc\n" + block
        parse_text(src)
    # the expansion shown for `network mlp : 2 -> 30 -> 1` is exactly what the sugar means
    expansion = next(b for b in blocks if b.startswith("stalk x  : 2\nstalk z1 : 30"))
    a = load_text("sheaf t\nnetwork mlp : 2 -> 30 -> 1 relu output identity\n")
    b = load_text("sheaf t\n" + expansion)
    assert (a.stalks, a.params, a.edges, a.pins) == (b.stalks, b.params, b.edges, b.pins)


def test_parsing_is_thread_safe():
    """The lark parser is shared; its bracket tracking must not leak between threads."""
    from concurrent.futures import ThreadPoolExecutor

    good = "sheaf t\nparam W : 2 x 2 = [[1, 2],\n  [3, 4]]\nstalk x : 2\n"
    bad = "sheaf t\npin x = [1,\n 2\nstalk y : 2\n"

    def work(i):
        if i % 2:
            return parse_text(good).statements[1].value.value
        with pytest.raises(SheafError):
            parse_text(bad)
        return None

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(400)))
    assert all(r == ((1, 2), (3, 4)) for r in results[1::2])


@pytest.mark.parametrize("src, hint", [
    ("reluctance W1 W2 wieght 1", "did you mean `weight` instead of `wieght`?"),
    ("network m : 2 -> 1 outptu sigmoid", "did you mean `output` instead of `outptu`?"),
    ("param W : 2 x 2 int he", "did you mean `init`?"),
    ("pin x = inptu", "did you mean `input`?"),
    ("stalk x 2", "expected `:`"),
])
def test_misspelt_keywords_get_a_hint(src, hint):
    assert syntax_error("sheaf t\n" + src + "\n").hint == hint
