"""``sheaf``: the command-line entry point.

Subcommands are loaded lazily (each from its own module, exporting ``command``), so ``sheaf check``
does not pay for importing sympy or matplotlib. Every user mistake (a :class:`SheafError`) is printed
as diagnostics and exits 1; click's usage errors exit 2; anything else is a bug and says so.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import click

from .. import __version__
from ..errors import Diagnostic, SheafError

#: subcommand -> module under sheafdsl.cli
COMMANDS = {
    "check": "check",
    "fmt": "fmt",
    "compile": "compile",
    "infer": "infer",
    "spectrum": "spectrum",
    "verify": "verify",
    "train": "train",
    "diagnose": "diagnose",
    "linking": "linking",
    "paper": "paper",
}

EXIT_USER = 1
EXIT_INTERNAL = 70
EXIT_SIGINT = 130


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return [c for c in COMMANDS if self._available(c)]

    @staticmethod
    def _available(name: str) -> bool:
        return importlib.util.find_spec(f"sheafdsl.cli.{COMMANDS[name]}") is not None

    def get_command(self, ctx, name):
        if name not in COMMANDS or not self._available(name):
            return None
        return importlib.import_module(f"sheafdsl.cli.{COMMANDS[name]}").command

    def parse_args(self, ctx, args):
        ctx.meta["sheaf.argv"] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SheafError as exc:
            report_error(exc, json_mode="--json" in ctx.meta.get("sheaf.argv", ()))
            ctx.exit(EXIT_USER)
        except KeyboardInterrupt:  # Ctrl-C in any command: one line and 130, as a shell reports SIGINT
            click.echo(f"interrupted: sheaf {ctx.invoked_subcommand or ''} stopped (Ctrl-C)",
                       err=True)
            ctx.exit(EXIT_SIGINT)
        except MemoryError:  # a last resort: the size checks before allocating should have said so first
            report_error(SheafError(Diagnostic(
                "E540", "out of memory: this input needs more memory than the machine has",
                hint="use a smaller model, batch or --samples")), json_mode="--json" in ctx.meta.get("sheaf.argv", ()))
            ctx.exit(EXIT_USER)
        except Exception as exc:
            if not _singular(exc):
                raise
            report_error(SheafError(Diagnostic(
                "E621", f"a linear system of this model is numerically singular ({exc})",
                hint="very deep or very narrow networks make the equilibrium ill-conditioned: use fewer or wider "
                     "layers, or add reluctance")), json_mode="--json" in ctx.meta.get("sheaf.argv", ()))
            ctx.exit(EXIT_USER)


def _singular(exc: BaseException) -> bool:
    """numpy's LinAlgError (a numerically singular system of the model), without importing numpy."""
    np = sys.modules.get("numpy")
    return np is not None and isinstance(exc, np.linalg.LinAlgError)


def report_error(exc: SheafError, json_mode: bool = False) -> None:
    """Diagnostics to stderr (text), or a JSON object to stdout when --json was given."""
    if json_mode:
        from .common import emit_json

        emit_json(ok=False, diagnostics=exc.diagnostics)
    else:
        click.echo(exc.render(), err=True)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sheaf")
def cli():
    """sheafdsl: write cellular sheaves down, check and prove them, solve and train them."""


def main(argv=None):
    try:
        cli.main(args=argv, prog_name="sheaf", standalone_mode=True)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug: say so plainly
        if os.environ.get("SHEAF_DEBUG"):
            raise
        click.echo(f"internal error: {type(exc).__name__}: {exc}\n"
                   "this is a bug in sheafdsl; rerun with SHEAF_DEBUG=1 for a traceback and report it", err=True)
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()
