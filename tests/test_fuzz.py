"""Fuzzing the front end: any input gives a Model or a SheafError, never another exception.

Arbitrary text and bytes, mutated model files (characters and tokens inserted, deleted, replaced),
and the classic nasties: deep brackets, huge numbers, NaN/inf, empty files, binary junk, long lines.
Whatever comes out as a SheafError must also render without failing, with positions inside the input.
"""

from __future__ import annotations

import glob
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sheafdsl.errors import SheafError
from sheafdsl.frontend import check_diagnostics, load_text, parse_text
from sheafdsl.frontend.formatter import format_module
from sheafdsl.frontend.model import Model
from sheafdsl.frontend.parser import decode_source, keywords

MODELS = {p: open(p, encoding="utf-8").read() for p in sorted(glob.glob("models/*.sheaf"))}
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def front_end(source: str):
    """Run everything the front end does to a text; return the model or the SheafError."""
    try:
        module = parse_text(source, "fuzz.sheaf")
        format_module(module)  # the formatter must cope with whatever parses
        check_diagnostics(module)
        return load_text(source, "fuzz.sheaf")
    except SheafError as exc:
        rendered = exc.render()
        assert rendered and "fuzz.sheaf" in rendered
        n_lines = source.count("\n") + 1
        for d in exc.diagnostics:
            assert d.code and d.message
            assert 0 <= d.span.line <= n_lines + 1
        return exc


def ok(result) -> bool:
    return isinstance(result, Model)


@SETTINGS
@given(st.text(max_size=300))
def test_arbitrary_text(text):
    front_end(text)


@SETTINGS
@given(st.lists(st.sampled_from(list(" :=~[](),|#\\\n012.e-") + ["->", "x", "y", "W", "  "] + sorted(keywords())),
                max_size=60).map("".join))
def test_text_made_of_language_pieces(text):
    front_end(text)


@SETTINGS
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data):
    try:
        text = decode_source(data, "fuzz.sheaf")
    except SheafError as exc:
        assert exc.codes == ["E103"]
        return
    front_end(text)


_TOKEN = re.compile(r"\s+|[A-Za-z_][A-Za-z0-9_]*|[0-9.eE+-]+|->|.", re.S)
_PIECES = sorted(keywords()) + ["x", "y", "z1", "W1", "0", "-1", "1e999", "nan", "[", "]", "[[", "]]", "(", ")",
                                ",", ":", "->", "=", "~", "|", "\n", "\\\n", "#", '"', "99999999999999", "3x4"]


@st.composite
def mutated_models(draw):
    path = draw(st.sampled_from(sorted(MODELS)))
    text = MODELS[path]
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):  # a character edit
            i = draw(st.integers(0, len(text)))
            op = draw(st.sampled_from(["insert", "delete", "replace"]))
            ch = draw(st.characters(max_codepoint=0x7F) | st.sampled_from(list("[](),:=~|#\"\\\n")))
            if op == "insert":
                text = text[:i] + ch + text[i:]
            elif op == "delete":
                text = text[:i] + text[i + 1:]
            else:
                text = text[:i] + ch + text[i + 1:]
        else:  # a token edit
            toks = _TOKEN.findall(text)
            k = draw(st.integers(0, max(0, len(toks) - 1)))
            op = draw(st.sampled_from(["insert", "delete", "replace", "swap"]))
            piece = draw(st.sampled_from(_PIECES))
            if op == "insert":
                toks.insert(k, piece)
            elif op == "delete" and toks:
                del toks[k]
            elif op == "replace" and toks:
                toks[k] = piece
            elif toks:
                j = draw(st.integers(0, len(toks) - 1))
                toks[k], toks[j] = toks[j], toks[k]
            text = "".join(toks)
    return text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_models())
def test_mutated_models(text):
    front_end(text)


@pytest.mark.parametrize("text", [
    "",
    "\n\n\n",
    "   \t  ",
    "#",
    "\\",
    "\x00",
    "\ufeff",
    "sheaf",
    "sheaf t",
    "sheaf t\n" + "[" * 10_000,
    "sheaf t\n" + "(" * 10_000 + ")" * 10_000,
    "sheaf t\nstalk x : 2\npin x = " + "[" * 15 + "1" + "]" * 15,
    "sheaf t\nstalk x : 2\npin x = " + "[" * 17 + "1" + "]" * 17,
    "sheaf t\nstalk x : " + "9" * 5000,
    "sheaf t\nstalk x : 2\npin x = " + "9" * 400,
    "sheaf t\nstalk x : 2\npin x = 1e308\n",
    "sheaf t\nstalk x : 2\npin x = 1e309\n",
    "sheaf t\nstalk x : 2\npin x = -1e-400\n",
    "sheaf t\nstalk x : 2\npin x = [nan, inf]\n",
    "sheaf t\nstalk x : 2\npin x ~ [1, 2] weight nan\n",
    "sheaf t\nnetwork m : 2 -> 999999999999 -> 1\n",
    "sheaf t\nnetwork m : " + " -> ".join(["1"] * 1000) + "\n",
    "sheaf t\nstalk x : 2\npin x = [" + ", ".join(["1"] * 10_000) + "]\n",
    "sheaf t\n" + "stalk x : 2 " * 2000 + "\n",
    "sheaf t\n" + "# " + "x" * 1_000_000 + "\n",
    "sheaf t\nstalk " + "x" * 100_000 + " : 1\n",
    "sheaf t\n" + "\n".join(f"stalk s{i} : 1" for i in range(5000)) + "\n",
    "sheaf t\nparam W : 1000000 x 1000000 init he\n",
    'sheaf t\nparam W : 2 init "' + "a" * 10_000,
    "sheaf t\r\nstalk x : 2\r\r\n",
    "sheaf t\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029stalk x : 1\n",
    "sheaf t\ntrain " + " ".join(f"k{i}=1" for i in range(500)) + "\n",
])
def test_nasty_inputs(text):
    front_end(text)


def test_nasty_bytes():
    for data in (bytes(range(256)) * 40, b"\xff" * 10_000, b"\x00" * 100, "sheaf t\n".encode("utf-16"),
                 b"sheaf t\n\xc3\x28", b"\xef\xbb\xbfsheaf t\nstalk x : 1\npin x = 0\n"):
        try:
            text = decode_source(data)
        except SheafError as exc:
            assert exc.codes == ["E103"]
            continue
        front_end(text)


def test_every_model_survives_every_single_line_deletion():
    """Deleting any one line of any model gives a Model or a SheafError (exhaustive, not sampled)."""
    for path, text in MODELS.items():
        lines = text.split("\n")
        for i in range(len(lines)):
            front_end("\n".join(lines[:i] + lines[i + 1:]))


def test_unmutated_models_are_models():
    for path, text in MODELS.items():
        assert ok(front_end(text)), path
