"""User-facing errors and diagnostics.

Every mistake in a user's input becomes a :class:`Diagnostic` with a source span and a stable code
(``E101``...). A :class:`SheafError` carries one or more of them. The CLI renders them as::

    model.sheaf:7:22: error[E202]: unknown stalk `z3`
        edge act1 : z3 -> a1 relu
                    ^^
      hint: did you mean `z1`?

and exits 1. Nothing in this module knows about parsing or numerics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Iterable, Sequence


@dataclass(frozen=True)
class Span:
    """A region of source text: 1-based line and column, end exclusive on the same line."""

    line: int = 0
    col: int = 0
    end_line: int = 0
    end_col: int = 0

    @property
    def known(self) -> bool:
        return self.line > 0


NOSPAN = Span()

#: how many columns of a source line a rendered diagnostic shows
SHOW = 160


@dataclass(frozen=True)
class Diagnostic:
    """One message about the user's input."""

    code: str
    message: str
    span: Span = NOSPAN
    severity: str = "error"  # "error" | "warning"
    hint: str | None = None
    file: str = "<input>"

    def to_json(self) -> dict:
        """``file``, ``line``, ``col`` (1-based; null when the diagnostic is not tied to a place),
        ``severity``, ``code``, ``message`` and, when there is one, ``hint``."""
        known = self.span.known
        out = {
            "file": self.file,
            "line": self.span.line if known else None,
            "col": self.span.col if known else None,
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
        }
        if self.hint:
            out["hint"] = self.hint
        return out

    def render(self, source: str | None = None, *, lines: Sequence[str] | None = None) -> str:
        """``FILE:LINE:COL: severity[CODE]: message``, the source line, a caret, and a hint.

        ``lines`` (``source.split("\\n")``) may be given instead of ``source`` to render many
        diagnostics of one file without splitting it each time.
        """
        where = f"{self.file}:{self.span.line}:{self.span.col}" if self.span.known else self.file
        out = [f"{where}: {self.severity}[{self.code}]: {self.message}"]
        if lines is None and source is not None:
            # lark counts lines by "\n" only, so split the same way (not str.splitlines, which also
            # breaks at form feeds and other separators)
            lines = source.split("\n")
        if lines is not None and self.span.known:
            if 1 <= self.span.line <= len(lines):
                text = lines[self.span.line - 1]
                start = max(self.span.col - 1, 0)
                width = 1
                if self.span.end_line == self.span.line and self.span.end_col > self.span.col:
                    width = self.span.end_col - self.span.col
                # a window of at most SHOW columns around the spot, so that long lines stay readable
                lo = 0 if start < SHOW - 40 else start - 40
                shown = text[lo:lo + SHOW].rstrip("\r\n")
                shown = "".join(ch if ch.isprintable() else " " if ch == "\t" else "?" for ch in shown)
                prefix = "... " if lo > 0 else ""
                suffix = " ..." if lo + SHOW < len(text.rstrip("\r\n")) else ""
                caret_at = min(start - lo, len(shown))
                width = max(1, min(width, len(shown) - caret_at))
                out.append("    " + prefix + shown + suffix)
                out.append("    " + " " * (len(prefix) + caret_at) + "^" * width)
        if self.hint:
            out.append(f"  hint: {self.hint}")
        return "\n".join(out)


def _rebuild_error(cls, args, state):
    err = Exception.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


class SheafError(Exception):
    """A problem with the user's input, carrying one or more diagnostics.

    Raised by every layer for anything the user can fix; never for an internal bug.
    """

    def __init__(self, diagnostics: Diagnostic | Sequence[Diagnostic], source: str | None = None):
        if isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics: list[Diagnostic] = list(diagnostics)
        self.source = source
        first = self.diagnostics[0] if self.diagnostics else None
        super().__init__(f"{first.code}: {first.message}" if first else "invalid input")

    def __str__(self) -> str:  # rendered on demand: a file with thousands of errors stays cheap to check
        return self.render()

    def __reduce__(self):
        """Pickled as its class and attributes (a subclass's ``__init__`` takes other arguments): the same
        error crosses a process boundary (a Dask worker, a plot rendered in a forked process)."""
        return _rebuild_error, (type(self), self.args, dict(self.__dict__))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def codes(self) -> list[str]:
        return [d.code for d in self.diagnostics]

    def render(self) -> str:
        lines = self.source.split("\n") if self.source is not None else None
        return "\n".join(d.render(lines=lines) for d in self.diagnostics)


def error(code: str, message: str, span: Span = NOSPAN, hint: str | None = None, file: str = "<input>") -> SheafError:
    """Shorthand for a SheafError with a single error diagnostic."""
    return SheafError(Diagnostic(code, message, span, "error", hint, file))


def a_or_an(word: str) -> str:
    """``word`` with its indefinite article: ``an affine``, ``an identity``, ``a relu``, ``a softmax``.

    >>> a_or_an("affine"), a_or_an("relu")
    ('an affine', 'a relu')
    """
    return ("an " if word[:1].lower() in "aeio" else "a ") + word


@contextlib.contextmanager
def located(file: str, aliases: dict | None = None):
    """Errors from the layers below that name no file (data, trainer, solver) are about ``file``: say so.

    ``aliases`` maps a file name the layers below used to the one the user should look at (a run's
    stored copy of its model, read under the original model's path so that its relative paths resolve).
    """
    aliases = aliases or {}
    try:
        yield
    except SheafError as exc:
        exc.diagnostics = [dataclasses.replace(d, file=file) if d.file == "<input>" else
                           dataclasses.replace(d, file=aliases[d.file]) if d.file in aliases else d
                           for d in exc.diagnostics]
        raise


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A hint naming the closest candidate (difflib), or None."""
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return f"did you mean `{match[0]}`?" if match else None


@dataclass
class DiagnosticSink:
    """Collects diagnostics so that a pass can report every error in one run."""

    file: str = "<input>"
    items: list[Diagnostic] = field(default_factory=list)

    def error(self, code: str, message: str, span: Span = NOSPAN, hint: str | None = None) -> None:
        self.items.append(Diagnostic(code, message, span, "error", hint, self.file))

    def warning(self, code: str, message: str, span: Span = NOSPAN, hint: str | None = None) -> None:
        self.items.append(Diagnostic(code, message, span, "warning", hint, self.file))

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.items)

    def sorted(self) -> list[Diagnostic]:
        return sorted(self.items, key=lambda d: (d.span.line, d.span.col, d.code))
