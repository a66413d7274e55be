"""Every diagnostic code the front end can emit, each at its exact line and column; the render format.

``CASES`` is the table: (source or a callable that returns diagnostics, code, line, col). A meta-test
fails when a code in ``DIAGNOSTICS`` has no row, so adding a code without a test fails the suite.
"""

from __future__ import annotations

import os
import re

import pytest

from sheafdsl.errors import Diagnostic, SheafError, Span
from sheafdsl.frontend import DIAGNOSTICS, check_diagnostics, parse_file, parse_text
from sheafdsl.frontend.parser import decode_source

XY = "sheaf t\nstalk x : 2\nstalk y : 3\n"  # two stalks on lines 2 and 3; the case starts on line 4
LEARNED = ("sheaf t\nparam W : 2 x 2  init xavier\nencoder e : 3 -> 4 -> 4\nstalk a : 2\nstalk o : 3\npin o = input\n"
           "objective a encoded e o\nstalk y : 2\npin y = target\ndecode y : a affine W identity\n")


def diagnose(source: str) -> list[Diagnostic]:
    """Every diagnostic for a source: the syntax error, or all the checker's errors and warnings."""
    try:
        return check_diagnostics(parse_text(source, "t.sheaf"))
    except SheafError as exc:
        return exc.diagnostics


def _bytes(data: bytes):
    def run():
        try:
            parse_text(decode_source(data, "t.sheaf"), "t.sheaf")
        except SheafError as exc:
            return exc.diagnostics
        return []
    return run


def _read_missing():
    try:
        parse_file("/nonexistent/dir/model.sheaf")
    except SheafError as exc:
        return exc.diagnostics
    return []


def _write_missing():
    from sheafdsl.cli.fmt import write_atomic

    try:
        write_atomic("/nonexistent/dir/model.sheaf", "sheaf t\n")
    except SheafError as exc:
        return exc.diagnostics
    return []


def _missing_file_init():
    return diagnose('sheaf t\nparam W : 2 x 2 init "no-such-file-4f2a.npz":W\n')


CASES = [
    # lexical and syntax errors (one per run: parsing stops at the first)
    ("bad-character", "sheaf t\nstalk x : 2 $\n", "E100", 2, 13),
    ("unterminated-string", 'sheaf t\nparam W : 2 init "abc\n', "E100", 2, 18),
    ("unknown-statement", "sheaf t\nstalkk x : 2\n", "E101", 2, 1),
    ("unknown-edge-kind", XY + "edge e : x -> y reul\n", "E101", 4, 17),
    ("two-statements-on-a-line", "sheaf t stalk x : 2\n", "E101", 1, 9),
    ("keyword-glued-to-name", "sheaf t\nstalk x : 2\npinx = 1\n", "E101", 3, 1),
    ("float-dimension", "sheaf t\nstalk x : 2.5\n", "E101", 2, 11),
    ("negative-dimension", "sheaf t\nstalk x : -2\n", "E101", 2, 11),
    ("three-dim-param", "sheaf t\nparam W : 2 x 2 x 2 init he\n", "E101", 2, 17),
    ("bad-number", "sheaf t\nstalk x : 2\npin x = 1.5.3\n", "E101", 3, 9),
    ("unclosed-bracket", "sheaf t\nstalk x : 2\npin x = [1, 2\n", "E102", 3, 9),
    ("unclosed-outer-bracket", "sheaf t\nparam W : 2 x 2 = [[1, 2],\n [3, 4]\n", "E102", 2, 19),
    ("continuation-at-eof", "sheaf t\nstalk x : \\", "E102", 2, 12),
    ("invalid-utf8", _bytes(b"sheaf t\n\xff\xfe\n"), "E103", 2, 1),
    ("nul-byte", _bytes(b"sheaf t\nstalk\x00 x : 2\n"), "E103", 2, 6),
    ("binary-junk", _bytes(bytes(range(256))), "E103", 2, 118),
    ("empty-file", "", "E104", 1, 1),
    ("only-comments", "# nothing here\n\n   # still nothing\n", "E104", 1, 1),
    ("deep-brackets", "sheaf t\nstalk x : 2\npin x = " + "[" * 20 + "1" + "]" * 20 + "\n", "E105", 3, 25),
    ("huge-integer", "sheaf t\nstalk x : 99999999999999999999\n", "E106", 2, 11),
    ("float-overflow", "sheaf t\nstalk x : 2\npin x = 1e400\n", "E106", 3, 9),
    ("huge-dims-literal", "sheaf t\nparam W : 2x9999999999999 init he\n", "E106", 2, 13),
    ("unreadable-file", _read_missing, "E107", 0, 0),
    ("unwritable-file", _write_missing, "E108", 0, 0),
    # the checker (all errors of a file in one run)
    ("no-header", "stalk x : 2\n", "E200", 1, 1),
    ("header-not-first", "stalk x : 2\nsheaf t\n", "E200", 2, 1),
    ("second-header", "sheaf t\nstalk x : 2\npin x = 0\nsheaf u\n", "E200", 4, 1),
    ("duplicate-stalk", "sheaf t\nstalk x : 2\nstalk x : 3\n", "E201", 3, 7),
    ("stalk-and-param-same-name", "sheaf t\nstalk x : 2\nparam x : 2 init zeros\n", "E201", 3, 7),
    ("network-name-clash", "sheaf t\nnetwork m : 2 -> 1\nedge out : y -> x identity\n", "E201", 3, 6),
    ("unknown-stalk", XY + "edge e : x -> z identity\n", "E202", 4, 15),
    ("unknown-pin-stalk", "sheaf t\nstalk x : 2\npin xx = input\n", "E202", 3, 5),
    ("unknown-param", XY + "edge e : x -> y linear W\n", "E203", 4, 24),
    ("unknown-reluctance-param", "sheaf t\nreluctance W1 weight 1\n", "E203", 2, 12),
    ("stalk-dim-zero", "sheaf t\nstalk x : 0\n", "E210", 2, 11),
    ("network-width-zero", "sheaf t\nnetwork m : 2 -> 0 -> 1\n", "E210", 2, 18),
    ("param-dim-zero", "sheaf t\nparam W : 0 x 3 init zeros\n", "E210", 2, 11),
    ("stalk-too-large", "sheaf t\nstalk x : 2000000\n", "E211", 2, 11),
    ("param-too-large", "sheaf t\nparam W : 100000 x 100000 init zeros\n", "E211", 2, 11),
    ("weight-shape", XY + "param W : 2 x 2 init he\nedge e : x -> y linear W\n", "E220", 5, 24),
    ("network-override-shape", "sheaf t\nnetwork m : 2 -> 3 -> 1\nparam W1 : 3 x 3 init he\n", "E220", 3, 7),
    ("network-override-bias", "sheaf t\nnetwork m : 2 -> 3 -> 1\nparam b2 : 2 init zeros\n", "E221", 3, 7),
    ("bias-shape", XY + "param W : 3 x 2 init he\nparam b : 2 init zeros\nedge e : x -> y affine W b\n", "E221", 6, 26),
    ("weight-not-matrix", XY + "param W : 3 init zeros\nedge e : x -> y linear W\n", "E222", 5, 24),
    ("bias-not-vector", XY + "param W : 3 x 2 init he\nparam b : 3 x 1 init zeros\nedge e : x -> y affine W b\n",
     "E222", 6, 26),
    ("relu-dims", XY + "edge e : x -> y relu\n", "E223", 4, 17),
    ("softmax-dims", XY + "edge e : x -> y softmax\n", "E223", 4, 17),
    ("leaky-slope", "sheaf t\nstalk x : 1\nstalk y : 1\nedge e : x -> y leaky_relu 1.5\n", "E226", 4, 28),
    ("softmax-one", "sheaf t\nstalk x : 1\nstalk y : 1\nedge e : x -> y softmax\n", "E227", 4, 17),
    ("map-is-vector", XY + "edge e : x -> y maps [1, 2] | 1\n", "E224", 4, 22),
    ("map-param-is-vector", XY + "param M : 2 init zeros\nedge e : x -> y maps M | 1\n", "E224", 5, 22),
    ("map-columns", XY + "edge e : x -> y maps [[1, 2, 3]] | [[1, 2, 3]]\n", "E225", 4, 22),
    ("map-rows", XY + "edge e : x -> y maps [[1, 2]] | [[1, 2, 3], [4, 5, 6]]\n", "E225", 4, 17),
    ("scalar-maps-unequal", XY + "edge e : x -> y maps 1 | 1\n", "E225", 4, 17),
    ("param-literal-shape", "sheaf t\nparam W : 2 x 2 = [[1, 2]]\n", "E230", 2, 19),
    ("ragged-param-literal", "sheaf t\nparam W : 2 x 2 = [[1, 2], [3]]\n", "E231", 2, 19),
    ("ragged-map", XY + "edge e : x -> y maps [[1, 2], [3]] | 1\n", "E231", 4, 22),
    ("ragged-pin", "sheaf t\nstalk x : 2\npin x = [[1], [2, 3]]\n", "E231", 3, 9),
    ("nan-pin", "sheaf t\nstalk x : 2\npin x = nan\n", "E232", 3, 9),
    ("inf-param", "sheaf t\nparam b : 2 = [1, -inf]\n", "E232", 2, 15),
    ("nan-map", XY.replace("y : 3", "y : 2") + "edge e : x -> y maps NaN | 1\n", "E232", 4, 22),
    ("unknown-init", "sheaf t\nparam W : 2 x 2 init hee\n", "E233", 2, 22),
    ("normal-without-std", "sheaf t\nparam W : 2 x 2 init normal\n", "E233", 2, 22),
    ("he-with-argument", "sheaf t\nparam W : 2 x 2 init he(2)\n", "E233", 2, 22),
    ("he-on-vector", "sheaf t\nparam b : 3 init he\n", "E234", 2, 18),
    ("missing-init-file", _missing_file_init, "E235", 2, 22),
    ("pin-length", "sheaf t\nstalk x : 2\npin x = [1, 2, 3]\n", "E240", 3, 9),
    ("partial-pin-length", "sheaf t\nstalk x : 3\npin x[0, 1] = [1, 2, 3]\n", "E240", 3, 15),
    ("pin-index-range", "sheaf t\nstalk x : 2\npin x[0, 2] = 1\n", "E241", 3, 10),
    ("pin-index-twice", "sheaf t\nstalk x : 3\npin x[1, 1] = 0\n", "E242", 3, 10),
    ("pinned-twice", "sheaf t\nstalk x : 3\npin x = input\npin x[2] = 1\n", "E242", 4, 1),
    ("partial-input-pin", "sheaf t\nstalk x : 3\npin x[0] = input\n", "E243", 3, 6),
    ("negative-edge-weight", XY.replace("y : 3", "y : 2") + "edge e : x -> y identity weight -1\n", "E250", 4, 33),
    ("zero-soft-pin-weight", "sheaf t\nstalk x : 2\npin x ~ 0 weight 0\n", "E250", 3, 18),
    ("inf-reluctance-weight", "sheaf t\nparam W : 2 x 2 init he\nreluctance W weight inf\n", "E250", 3, 21),
    ("reluctance-twice", "sheaf t\nparam W : 2 x 2 init he\nreluctance W W weight 1\n", "E260", 3, 14),
    ("tie-shapes", "sheaf t\nparam A : 2 x 2 init he\nparam B : 2 x 3 init he\ntie A ~ B weight 1\n", "E261", 4, 1),
    ("tie-to-itself", "sheaf t\nparam A : 2 x 2 init he\ntie A ~ A weight 1\n", "E262", 3, 9),
    ("tie-twice", "sheaf t\nparam A : 2 x 2 init he\nparam B : 2 x 2 init he\ntie A ~ B weight 1\ntie B ~ A weight 2\n", "E263", 5, 1),
    ("two-networks", "sheaf t\nnetwork m : 2 -> 1\nnetwork n : 2 -> 1\n", "E270", 3, 1),
    ("bad-activation", "sheaf t\nnetwork m : 2 -> 3 -> 1 swish\n", "E271", 2, 25),
    ("hidden-softmax", "sheaf t\nnetwork m : 2 -> 3 -> 1 softmax\n", "E271", 2, 25),
    ("bad-output", "sheaf t\nnetwork m : 2 -> 3 -> 1 output softmaxx\n", "E271", 2, 32),
    ("unknown-train-option", "sheaf t\nstalk x : 1\npin x = 0\ntrain stpes=10\n", "E280", 4, 7),
    ("train-option-twice", "sheaf t\nstalk x : 1\npin x = 0\ntrain n=1 n=2\n", "E281", 4, 11),
    ("second-train", "sheaf t\nstalk x : 1\npin x = 0\ntrain n=1\ntrain n=2\n", "E281", 5, 1),
    ("train-type", "sheaf t\nstalk x : 1\npin x = 0\ntrain steps=1.5\n", "E282", 4, 7),
    ("train-choice", "sheaf t\nstalk x : 1\npin x = 0\ntrain optimizer=adma\n", "E282", 4, 7),
    ("train-range", "sheaf t\nstalk x : 1\npin x = 0\ntrain n=0\n", "E283", 4, 7),
    ("train-momentum-range", "sheaf t\nstalk x : 1\npin x = 0\ntrain momentum=1\n", "E283", 4, 7),
    ("self-loop", "sheaf t\nstalk x : 2\nedge e : x -> x identity\n", "E290", 3, 15),
    ("unused-param", "sheaf t\nstalk x : 2\npin x = 1\nparam W : 2 x 2 init he\n", "W300", 4, 7),
    ("unconstrained-stalk", "sheaf t\nstalk x : 2\n", "W301", 2, 7),
    # consensus problems: objectives and hard edges
    ("objective-kind", "sheaf t\nstalk x : 2\nobjective x quadratc [[1, 0], [0, 1]]\n", "E291", 3, 13),
    ("objective-Q-shape", "sheaf t\nstalk x : 2\nobjective x quadratic [[1, 0]]\n", "E292", 3, 23),
    ("objective-q-shape", "sheaf t\nstalk x : 2\nobjective x quadratic 1 [1, 2, 3]\n", "E292", 3, 25),
    ("objective-Q-param-shape", "sheaf t\nstalk x : 2\nparam Q : 3 x 3 init zeros\nobjective x quadratic Q\n",
     "E292", 4, 23),
    ("objective-box-shape", "sheaf t\nstalk x : 2\nobjective x box [0, 0, 0] 1\n", "E292", 3, 17),
    ("objective-l1-vector", "sheaf t\nstalk x : 2\nobjective x l1 [1, 2]\n", "E292", 3, 16),
    ("objective-nan", "sheaf t\nstalk x : 2\nobjective x quadratic 1 [nan, 0]\n", "E232", 3, 25),
    ("objective-Q-asymmetric", "sheaf t\nstalk x : 2\nobjective x quadratic [[1, 2], [0, 1]]\n", "E293", 3, 23),
    ("objective-Q-param-asymmetric",
     "sheaf t\nstalk x : 2\nparam Q : 2 x 2 = [[1, 2], [0, 1]]\nobjective x quadratic Q\n", "E293", 4, 23),
    ("objective-Q-indefinite", "sheaf t\nstalk x : 2\nobjective x quadratic [[1, 2], [2, 1]]\n", "E294", 3, 23),
    ("objective-Q-negative", "sheaf t\nstalk x : 2\nobjective x quadratic -1\n", "E294", 3, 23),
    ("objective-box-empty", "sheaf t\nstalk x : 2\nobjective x box [0, 3] 2\n", "E295", 3, 17),
    ("objective-l1-negative", "sheaf t\nstalk x : 2\nobjective x l1 -0.5\n", "E296", 3, 16),
    ("hard-relu", XY.replace("y : 3", "y : 2") + "edge e : x -> y relu hard\n", "E297", 4, 17),
    ("soft-tanh-beside-objective", XY.replace("y : 3", "y : 2") + "edge e : x -> y tanh\nobjective x nonneg\n",
     "E297", 4, 17),
    ("hard-and-weight", XY.replace("y : 3", "y : 2") + "edge e : x -> y identity weight 2 hard\n", "E298", 4, 35),
    ("weight-after-hard", XY.replace("y : 3", "y : 2") + "edge e : x -> y identity hard weight 2\n", "E298", 4, 26),
    ("two-boxes-disjoint", "sheaf t\nstalk x : 2\nobjective x box 0 1\nobjective x box 2 3\n", "E299", 4, 13),
    ("box-and-nonneg-disjoint", "sheaf t\nstalk x : 2\nobjective x box -2 -1\nobjective x nonneg\n", "E299", 4, 13),
    ("pin-outside-box", "sheaf t\nstalk x : 2\nobjective x box 0 1\npin x[1] = 2\n", "E299", 4, 1),
    ("pin-negative-on-nonneg", "sheaf t\nstalk x : 2\nobjective x nonneg\npin x = [1, -0.5]\n", "E299", 4, 1),
    ("simplex-pins-sum", "sheaf t\nstalk x : 3\nobjective x simplex\npin x = [0.2, 0.3, 0.4]\n", "E299", 3, 13),
    ("simplex-partial-pins-over-1", "sheaf t\nstalk x : 3\nobjective x simplex\npin x[0, 2] = [0.7, 0.6]\n",
     "E299", 3, 13),
    ("simplex-box-below-1", "sheaf t\nstalk x : 3\nobjective x simplex\nobjective x box 0 0.3\n", "E299", 3, 13),
    ("hard-edge-on-pins", XY.replace("y : 3", "y : 2") + "edge e : x -> y maps 1 | 1 hard\npin x = [1, 2]\n"
     "pin y = [1, 3]\n", "E299", 4, 28),
    ("affine-hard-edge-on-pins", "sheaf t\nstalk x : 1\nstalk y : 1\nparam W : 1 x 1 = 2\nparam b : 1 = 1\n"
     "edge e : x -> y affine W b hard\npin x = 1\npin y = 2\n", "E299", 6, 28),
    ("simplex-fully-pinned", "sheaf t\nstalk x : 2\nobjective x simplex\npin x = [0.25, 0.75]\n", "W310", 3, 13),
    # learned models (docs/admm.md "Learning"); LEARNED's statements are on lines 1-10
    ("encoder-width", LEARNED.replace("e : 3 -> 4 -> 4", "e : 3 -> 4 -> 6"), "E284", 7, 21),
    ("observation-not-input", LEARNED.replace("pin o = input", "pin o = [0, 0, 0]"), "E285", 7, 23),
    ("block-out-of-range", LEARNED + "edge s : a[1:5] -> a  maps 1 | 1\n", "E286", 11, 11),
    ("decoder-weight-shape", LEARNED.replace("W : 2 x 2", "W : 2 x 3"), "E287", 10, 21),
    ("direction-without-grid", LEARNED + "edge s : a -> a right  maps 1 | 1\n", "E288", 11, 17),
    ("nonsmooth-in-learned", LEARNED + "objective a l1 0.5\n", "E289", 11, 13),
    ("simplex-in-learned", LEARNED + "objective a simplex\n", "E289", 11, 13),
    ("soft-edge-to-a-constant", LEARNED + "stalk one : 1\npin one = 1\nedge t : one -> a maps [[1]] | [[1, 1]] weight 2\n",
     "E289", 13, 1),
    ("two-constants-joined", LEARNED + "stalk one : 1\npin one = 1\nstalk two : 1\npin two = 2\n"
     "edge t : one -> two maps [[2]] | [[1]] hard\n", "E289", 15, 1),
    ("partial-pin-on-an-agent", LEARNED + "pin a[0] = 1\n", "E289", 11, 1),
    ("unused-encoder", LEARNED + "encoder f : 2 -> 2\n", "W311", 11, 1),
]


def _diagnostics_of(case) -> list[Diagnostic]:
    src = case[1]
    return src() if callable(src) else diagnose(src)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_diagnostic_code_and_position(case):
    name, _, code, line, col = case
    diags = _diagnostics_of(case)
    found = [(d.code, d.span.line, d.span.col) for d in diags]
    assert (code, line, col) in found, f"{name}: wanted {code} at {line}:{col}, got {found}"
    d = next(d for d in diags if (d.code, d.span.line, d.span.col) == (code, line, col))
    assert d.severity == ("warning" if code.startswith("W") else "error")
    assert d.message and d.message[0].islower() or d.message[0] in "`\"", d.message


def test_every_code_has_a_test():
    tested = {c[2] for c in CASES}
    missing = sorted(set(DIAGNOSTICS) - tested)
    assert not missing, f"diagnostic codes without a test in CASES: {missing}"
    unknown = sorted(tested - set(DIAGNOSTICS))
    assert not unknown, f"codes tested but not listed in DIAGNOSTICS: {unknown}"


def test_codes_are_documented():
    """docs/language.md lists every code."""
    doc = open(os.path.join(os.path.dirname(__file__), "..", "docs", "language.md"), encoding="utf-8").read()
    missing = [c for c in DIAGNOSTICS if f"`{c}`" not in doc]
    assert not missing, f"codes missing from docs/language.md: {missing}"


# ----------------------------------------------------------------------------------------------
# rendering


def test_render_format_with_caret_and_hint():
    src = "sheaf t\nstalk z1 : 2\nstalk a1 : 2\nedge act1 : z3 -> a1 relu\n"
    diags = diagnose(src)
    assert [d.code for d in diags] == ["E202"]
    text = diags[0].render(src)
    assert text.splitlines() == [
        "t.sheaf:4:13: error[E202]: unknown stalk `z3`",
        "    edge act1 : z3 -> a1 relu",
        "                ^^",
        "  hint: did you mean `z1`?",
    ]


def test_render_of_sheaf_error_carries_source():
    with pytest.raises(SheafError) as info:
        parse_text("sheaf t\nstalk x : 2 $\n", "m.sheaf")
    text = str(info.value)
    assert text.startswith("m.sheaf:2:13: error[E100]: unexpected character `$`\n")
    lines = text.splitlines()
    assert lines[1] == "    stalk x : 2 $"
    assert lines[2].index("^") == lines[1].index("$")


def test_render_without_position_or_source():
    d = Diagnostic("E107", "cannot read file: No such file", file="m.sheaf")
    assert d.render("whatever") == "m.sheaf: error[E107]: cannot read file: No such file"
    d = Diagnostic("E201", "dup", Span(1, 1, 1, 2), hint="h", file="m.sheaf")
    assert d.render(None) == "m.sheaf:1:1: error[E201]: dup\n  hint: h"


def test_render_long_line_shows_a_window_around_the_spot():
    src = "sheaf t\nstalk x : 3\npin x = [" + ", ".join(["1"] * 200) + ", $]\n"
    diags = diagnose(src)
    assert diags[0].code == "E100"
    _, shown, caret = diags[0].render(src).splitlines()[:3]
    assert len(shown) < 220 and shown.lstrip().startswith("...")
    assert shown[caret.index("^")] == "$"


def test_render_counts_lines_like_the_parser():
    """A form feed is a space to the lexer; it must not shift the shown line (str.splitlines would)."""
    src = "sheaf t\n\x0cstalk x : 0\n"
    d = diagnose(src)[0]
    assert (d.code, d.span.line) == ("E210", 2)
    assert "stalk x : 0" in d.render(src).splitlines()[1]


def test_render_tabs_and_control_characters_keep_the_caret_aligned():
    src = "sheaf t\n\tstalk\tx : 0\n"
    d = diagnose(src)[0]
    shown, caret = d.render(src).splitlines()[1:3]
    assert shown[caret.index("^")] == "0"


def test_json_form():
    d = diagnose("sheaf t\nstalk x : 0\n")[0]
    j = d.to_json()
    assert j == {"file": "t.sheaf", "line": 2, "col": 11, "severity": "error", "code": "E210",
                 "message": "stalk `x` dimension must be at least 1, not 0"}


# ----------------------------------------------------------------------------------------------
# all errors in one run, sorted, and no cascades


def test_collects_every_error_in_one_run():
    src = """sheaf t
stalk x : 2
stalk x : 3
stalk z : 0
param W : 3 x 3 init he
param b : 2 init hee
edge e1 : x -> q affine W b
edge e2 : x -> z relu
pin x[5] = 1
pin x ~ nan weight -1
reluctance W W weight 0
tie W ~ V weight 1
train lrr=1 steps=-1
"""
    diags = diagnose(src)
    got = [(d.code, d.span.line, d.span.col) for d in diags]
    assert got == sorted(got, key=lambda t: (t[1], t[2], t[0]))
    codes = [d.code for d in diags]
    for code in ["E201", "E210", "E233", "E202", "E241", "E232", "E250", "E260", "E203", "E280", "E283"]:
        assert code in codes, (code, got)
    assert len({d.span.line for d in diags}) == 9
    # the stalk `z` with an invalid dimension and the invalid `b` do not cascade into "unknown" errors
    assert not any(d.code in ("E202", "E203") and ("`z`" in d.message or "`b`" in d.message) for d in diags)


def test_warnings_do_not_fail_and_errors_suppress_warnings():
    assert [d.code for d in diagnose("sheaf t\nstalk x : 2\n")] == ["W301"]
    assert [d.code for d in diagnose("sheaf t\nstalk x : 2\nstalk y : 0\n")] == ["E210"]


def test_hints():
    hint = {d.code: d.hint for d in diagnose(XY + "edge e : x -> yy identity\n")}
    assert hint["E202"] == "did you mean `y`?"
    d = diagnose("sheaf t\nstalk x : 2\nedge e : x -> x relux\n")[0]
    assert (d.code, d.hint) == ("E101", "did you mean `relu`?")
    d = diagnose("sheaf t\nstalk x : 2\nstalk y : 2\nedge e : y -> x affine W1\nparam W2 : 2 x 2 init he\n")[0]
    assert d.hint == "did you mean `W2`?"
    d = diagnose("sheaf t\nstalk x : 2\npin x = [1, 2\nstalk y : 2\n")[0]
    assert d.code == "E101" and "line 3, column 9" in d.hint and "`]`" in d.hint
    d = diagnose("sheaf t\nstalk x : 2\nedge x : x -> x maps 1 | 1\n")[0]
    assert d.code == "E201" and "edge" in d.message and "stalk" in d.message
    d = diagnose("sheaf t\nstalk W : 2\nparam V : 2 init zeros\nedge e : W -> W maps W | 1\n")[0]
    assert d.code == "E203" and d.hint == "`W` is a stalk, not a parameter"


def test_every_rendered_position_is_inside_the_source():
    """No diagnostic of the table points past the end of its line (except at end of line/file)."""
    for case in CASES:
        if callable(case[1]):
            continue
        lines = case[1].split("\n")
        for d in _diagnostics_of(case):
            if d.span.known:
                assert 1 <= d.span.line <= len(lines), case[0]
                assert 1 <= d.span.col <= len(lines[d.span.line - 1]) + 1, case[0]


def test_messages_name_the_thing():
    msgs = {d.code: d.message for d in diagnose(XY + "param W : 2 x 2 init he\nedge e : x -> y linear W\n")}
    assert re.search(r"`W` is 2 x 2 but edge `e` maps `x` \(2\) to `y` \(3\)", msgs["E220"])
