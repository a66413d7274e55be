"""The one error-code registry (:mod:`sheafdsl.codes`): every code the source emits is registered,
every registered code is emitted somewhere and documented in docs/language.md's tables, and the
layers' ``DIAGNOSTICS`` tables are views of it."""

import re
from pathlib import Path

import sheafdsl
from sheafdsl.codes import CODES, codes_between

PACKAGE = Path(sheafdsl.__file__).resolve().parent  # the installed package: what ships
DOC = Path(__file__).resolve().parents[1] / "docs" / "language.md"
LITERAL = re.compile(r"""["']([EW]\d{3})["']""")
RANGE = re.compile(r"codes_between\([^)]*\)")  # a registry range's bounds are not emitted codes


def _emitted() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        if f.name == "codes.py":
            continue
        for c in LITERAL.findall(RANGE.sub("", f.read_text(encoding="utf-8"))):
            out.setdefault(c, set()).add(str(f.relative_to(PACKAGE)))
    return out


def test_every_emitted_code_is_registered():
    emitted = _emitted()
    assert len(emitted) > 50  # the scan sees the source
    missing = {c: sorted(w) for c, w in emitted.items() if c not in CODES}
    assert not missing, f"codes emitted but not in sheafdsl.codes.CODES: {missing}"


def test_every_registered_code_is_emitted():
    dead = sorted(set(CODES) - set(_emitted()))
    assert not dead, f"codes registered but never emitted: {dead}"


def test_every_registered_code_is_documented_once():
    rows = re.findall(r"^\| `([EW]\d{3})` \|", DOC.read_text(encoding="utf-8"), re.M)
    undocumented = sorted(set(CODES) - set(rows))
    assert not undocumented, f"codes missing from the tables of docs/language.md: {undocumented}"
    stale = sorted(set(rows) - set(CODES))
    assert not stale, f"docs/language.md documents codes that are not registered: {stale}"
    twice = sorted({c for c in rows if rows.count(c) > 1})
    assert not twice, f"documented twice: {twice}"


def test_codes_are_well_formed_and_layers_are_views():
    from sheafdsl.frontend import DIAGNOSTICS as front
    from sheafdsl.solvers import DIAGNOSTICS as numerics
    from sheafdsl.training.run import DIAGNOSTICS as runs

    assert all(re.fullmatch(r"(E[12567]\d\d|W3\d\d)", c) and m and m == m.strip() for c, m in CODES.items())
    for view in (front, numerics, runs):
        assert view and all(CODES[c] == m for c, m in view.items())
    assert set(numerics) == set(codes_between("E500", "E529"))
    assert set(runs) == set(codes_between("E630", "E649"))
