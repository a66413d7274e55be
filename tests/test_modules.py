"""Every module of the installed package imports on its own (a fresh interpreter each, so that an
import cycle hidden by the order in which the suite imports things shows up), the layers import
only the layers before them, and ``import sheafdsl`` stays cheap (the API loads on first use)."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import sheafdsl

PACKAGE = Path(sheafdsl.__file__).resolve().parent


def _modules() -> list[str]:
    out = []
    for f in sorted(PACKAGE.rglob("*.py")):
        rel = f.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts[-1] == "__main__":
            continue
        out.append(".".join(parts))
    return out


MODULES = _modules()
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _import_alone(name: str) -> tuple[str, int, str]:
    # cwd "/": the installed package, not a source tree that happens to be the working directory
    p = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, env=ENV, cwd="/",
                       timeout=120)
    last = p.stderr.strip().splitlines()
    return name, p.returncode, last[-1] if last else ""


def test_every_module_imports_alone():
    assert len(MODULES) > 40 and "sheafdsl.solvers.shallow" in MODULES
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        results = list(pool.map(_import_alone, MODULES))
    failed = {name: err for name, rc, err in results if rc != 0}
    assert not failed, f"modules that do not import on their own: {failed}"


def test_python_dash_m_runs_the_cli(tmp_path):
    model = tmp_path / "m.sheaf"
    model.write_text("sheaf m\nnetwork n : 2 -> 3 -> 1\n")
    p = subprocess.run([sys.executable, "-m", "sheafdsl", "check", str(model)], capture_output=True, text=True,
                       env=ENV, cwd="/")
    assert p.returncode == 0 and p.stdout.strip() == f"{model}: ok", (p.stdout, p.stderr)
    p = subprocess.run([sys.executable, "-m", "sheafdsl", "--version"], capture_output=True, text=True, env=ENV, cwd="/")
    assert p.returncode == 0 and sheafdsl.__version__ in p.stdout


#: subpackage -> the layers (and top-level modules) it may import; the pipeline flows one way
ALLOWED = {
    "frontend": {"errors", "codes", "options", "nonlinearities", "fileio", "grammars", "exact"},
    "ir": {"errors", "codes", "options", "nonlinearities", "fileio", "frontend"},  # ir.export reads NetworkInfo
    "lowering": {"errors", "codes", "options", "nonlinearities", "fileio", "resources", "ir"},
    "solvers": {"errors", "codes", "options", "nonlinearities", "ir", "lowering"},
    "analysis": {"errors", "codes", "options", "nonlinearities", "resources", "ir", "lowering", "solvers", "frontend",
                 "exact"},
}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_only_what_comes_before(layer):
    import re

    bad = []
    for f in sorted((PACKAGE / layer).glob("*.py")):
        for m in re.finditer(r"^\s*from \.\.(\w+)", f.read_text(encoding="utf-8"), re.M):
            if m.group(1) not in ALLOWED[layer]:
                bad.append(f"{f.name}: ..{m.group(1)}")
    assert not bad, bad


def test_import_sheafdsl_is_cheap():
    """``import sheafdsl`` loads none of the heavy dependencies; the API's names load on first use."""
    code = ("import sys, sheafdsl; heavy = [m for m in ('numpy', 'scipy', 'sympy', 'networkx', 'lark', 'matplotlib') "
            "if m in sys.modules]; print(heavy); sheafdsl.load; print('networkx' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd="/")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("\n")[:2] == ["[]", "False"], p.stdout


def test_architecture_doc_names_the_owner_of_every_module():
    """docs/architecture.md says which module owns what: each module is named in its package's row."""
    import re

    doc = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = [ln for ln in doc.splitlines() if ln.startswith("| ")]
    missing = []
    for name in MODULES:
        parts = name.split(".")
        if name in doc or parts[-1] == "sheafdsl" or len(parts) == 2 and parts[1] == "__init__":
            continue
        package = "sheafdsl" if len(parts) == 2 else ".".join(parts[:2])
        row = [r for r in rows if re.search(rf"`{re.escape(package)}`", r)]
        if len(parts) == 2 and package == "sheafdsl":
            row = [r for r in rows if "`sheafdsl`:" in r]
        if parts[1] == "cli" and len(parts) == 3 and "`cli/<name>.py`" in doc:
            continue
        if len(parts) == 2 and parts[1] in ("analysis", "cli", "frontend", "ir", "lowering", "solvers", "testing",
                                            "training"):
            continue  # a package: its row is the package itself
        if not any(f"`{parts[-1]}.py`" in r for r in row):
            missing.append(name)
    assert not missing, f"modules docs/architecture.md does not place: {missing}"
