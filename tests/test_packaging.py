"""Packaging: the grammar ships inside the wheel, every subpackage is listed, and CI runs the README's command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_subpackage_is_listed():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "sheafdsl").rglob("__init__.py")}
    found = {f for f in found if "__pycache__" not in f}
    assert found - listed == set(), f"add these to [tool.setuptools] packages: {sorted(found - listed)}"
    assert "sheafdsl.grammars" in listed


def test_grammar_is_package_data():
    from importlib import resources

    text = resources.files("sheafdsl.grammars").joinpath("sheaf.lark").read_text()
    assert text == (ROOT / "grammars" / "sheaf.lark").read_text()


def _quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(?:bash|sh)?\n(.*?)\n```", section, re.S)


def test_readme_quick_start_has_two_commands_and_ci_runs_the_test_one():
    commands = _quickstart_commands()
    assert len(commands) == 2, commands
    train, test = commands
    assert "sheaf train models/paraboloid.sheaf" in train and "pip install" in train
    assert "pytest" in test and "'.[test,distributed]'" in test  # the LocalCluster tests run in CI too
    ci = (ROOT / ".ci" / "run").read_text()
    assert test.strip() in ci, "the fast CI job must run exactly the README's test command"


def test_wheel_ships_the_grammar(tmp_path):
    """Build a wheel, install it (no deps) into a fresh folder, parse a model from outside the repo and
    read the bundled digits data."""
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheel_dir), str(ROOT)],
                   check=True, capture_output=True)
    wheel = next(wheel_dir.glob("sheafdsl-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = ("import sheafdsl.grammars, sheafdsl.frontend as f; "
            "assert sheafdsl.grammars.__file__.startswith(%r), sheafdsl.grammars.__file__; "
            "m = f.load_file(%r); print(len(m.edges)); "
            "from sheafdsl.training.data import digits_arrays; print(digits_arrays()[0].shape)"
            ) % (str(target), str(ROOT / "models" / "paraboloid.sheaf"))
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["4", "(1797,", "64)"]  # the digits data ships too: no scikit-learn needed


@pytest.mark.parametrize("command", ["check", "fmt", "compile", "infer", "spectrum", "verify", "train", "diagnose"])
def test_every_documented_subcommand_exists(command):
    from click.testing import CliRunner

    from sheafdsl.cli.main import cli

    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0, result.output
