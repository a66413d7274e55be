"""The front end: text -> AST -> checked model (and back to canonical text). It knows nothing of numerics."""

from .checker import (DIAGNOSTICS, TRAIN_OPTIONS, check, check_diagnostics, check_with_warnings, expand, load_file,
                      load_text)
from .formatter import format_module, format_source
from .parser import parse_file, parse_text

__all__ = ["DIAGNOSTICS", "TRAIN_OPTIONS", "check", "check_diagnostics", "check_with_warnings", "expand", "format_module", "format_source",
           "load_file", "load_text", "parse_file", "parse_text"]
