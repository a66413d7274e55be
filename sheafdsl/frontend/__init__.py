"""The front end: text -> AST -> checked model. It knows nothing of numerics."""

from .checker import DIAGNOSTICS, check, check_diagnostics, expand, load_file, load_text
from .parser import parse_file, parse_text

__all__ = ["DIAGNOSTICS", "check", "check_diagnostics", "expand", "load_file", "load_text", "parse_file", "parse_text"]
