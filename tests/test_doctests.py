"""The examples in every module's docstrings, and in docs/api.md, run as part of the suite.

CI runs plain ``pytest`` against the installed package, so the modules are found by import (not by
``--doctest-modules`` over a source tree): one test per module of ``sheafdsl``.
"""

from __future__ import annotations

import doctest
import importlib
import os
from pathlib import Path

import pytest

import sheafdsl

PACKAGE = Path(sheafdsl.__file__).resolve().parent
ROOT = Path(__file__).resolve().parents[1]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules() -> list[str]:
    out = []
    for f in sorted(PACKAGE.rglob("*.py")):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts[-1] != "__main__":
            out.append(".".join(parts))
    return out


MODULES = _modules()


def _run(tests) -> list[str]:
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    failed = []
    for t in tests:
        result = runner.run(t, out=lambda s: failed.append(s))
        assert result.failed == 0 or failed
    return failed


@pytest.mark.parametrize("name", MODULES)
def test_module_doctests(name, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # an example that writes a file writes it here
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder(exclude_empty=True).find(module, name) if t.examples]
    failed = _run(tests)
    assert not failed, "\n".join(failed)


def test_the_suite_sees_the_doctests():
    """Guard against a finder that silently finds nothing."""
    found = {name: sum(len(t.examples) for t in doctest.DocTestFinder().find(importlib.import_module(name), name))
             for name in ("sheafdsl", "sheafdsl.api", "sheafdsl.solvers.core", "sheafdsl.codes", "sheafdsl.inputs",
                          "sheafdsl.options", "sheafdsl.analysis.spectrum", "sheafdsl.ir.graph", "sheafdsl.ir.maps",
                          "sheafdsl.ir.export", "sheafdsl.analysis.cohomology", "sheafdsl.analysis.certificates",
                          "sheafdsl.analysis.verify", "sheafdsl.testing.sheaves")}
    assert all(n > 0 for n in found.values()), found


def test_docs_api_md(monkeypatch):
    """docs/api.md: every example, run from the repository root (it loads models/*.sheaf)."""
    monkeypatch.chdir(ROOT)
    path = ROOT / "docs" / "api.md"
    text = path.read_text(encoding="utf-8")
    test = doctest.DocTestParser().get_doctest(text, {}, "docs/api.md", str(path), 0)
    assert len(test.examples) >= 20
    failed = _run([test])
    assert not failed, "\n".join(failed)
