"""Helpers shared by the subcommands: loading a model, JSON output, the console."""

from __future__ import annotations

import json

import click
from rich.console import Console

from ..errors import SheafError
from ..frontend import check_with_warnings, parse_file

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
model_argument = click.argument("file", type=click.Path(dir_okay=False))


def load_model(path: str):
    """Parse and check a model file; warnings go to stderr, errors raise SheafError (exit 1)."""
    model, warnings = check_with_warnings(parse_file(path))
    for w in warnings:
        click.echo(w.render(model.source), err=True)
    return model


def load_ir(path: str):
    """Parse, check and build the IR of a model file."""
    from ..ir import from_model

    return from_model(load_model(path))


def emit_json(obj) -> None:
    click.echo(json.dumps(obj, default=_default))


def _default(o):
    import numpy as np

    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


__all__ = ["console", "err_console", "json_option", "model_argument", "load_model", "load_ir", "emit_json", "SheafError"]
