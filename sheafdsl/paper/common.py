"""What every ``sheaf paper`` item shares: its context, the figure writer, and the paper's small helpers.

An item is ``def NAME(ctx: PaperContext) -> dict``: it computes, draws with
``ctx.save_figure(fig, "fig1_heat")`` (``OUT/fig1_heat.pdf`` and ``.png``, each written atomically),
reports progress with ``ctx.log(...)``, and returns a plain JSON-able dict of its numbers (with
``"paper": {...}``, the paper's values, where the paper states them). ``ctx.quick`` asks for the
seconds-long version CI runs; ``ctx.seed`` is the item's seed (the paper's, or 0, or ``--seed``).

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     ctx = PaperContext(out=d, quick=True)
...     fig = new_figure(2.0, 1.5)
...     ax = fig.add_subplot(1, 1, 1); _ = ax.plot([0, 1], [1, 0])
...     paths = ctx.save_figure(fig, "demo")
...     sorted(p.name for p in paths), ctx.files == [str(p) for p in paths]
(['demo.pdf', 'demo.png'], True)
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Diagnostic, SheafError
from ..fileio import atomic_write_bytes, write_error

#: the formats every figure is written in
FIGURE_FORMATS = ("pdf", "png")
#: the resolution of the PNGs (docs/paper/ shows them)
PNG_DPI = 130


def new_figure(w: float, h: float, *, left=0.75, right=0.25, bottom=0.55, top=0.4, wspace=0.35, hspace=0.45):
    """A w × h inch matplotlib figure on its own Agg canvas (no pyplot: no global state); margins in
    inches, the gaps between panels as fractions of a panel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h, wspace=wspace,
                        hspace=hspace)
    return fig


@dataclass
class PaperContext:
    """One run of one item: where it writes (``out``), whether it is the quick version, its seed, its
    progress sink (``logger``: a callable taking one line; default stderr) and the files it wrote."""

    out: Path
    quick: bool = False
    seed: int = 0
    logger: object = None
    files: list = field(default_factory=list)

    def __post_init__(self):
        self.out = Path(self.out)

    def log(self, message: str) -> None:
        """One line of progress."""
        if self.logger is None:
            print(message, file=sys.stderr, flush=True)
        else:
            self.logger(message)

    def save_figure(self, fig, stem: str) -> list[Path]:
        """Write ``fig`` as ``OUT/STEM.pdf`` and ``OUT/STEM.png`` (rendered in memory, then one atomic write
        each: a failed write is E661 and leaves no partial file); the paths are recorded in ``files``."""
        paths = []
        for fmt in FIGURE_FORMATS:
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, dpi=PNG_DPI if fmt == "png" else None, metadata=_metadata(fmt))
            path = self.out / f"{stem}.{fmt}"
            write_file(path, buf.getvalue())
            paths.append(path)
            self.files.append(str(path))
        return paths


def _metadata(fmt: str) -> dict:
    # no creation date in the PDF, so a rerun writes the same bytes
    return {"CreationDate": None} if fmt == "pdf" else {}


def write_file(path: Path, data: bytes) -> None:
    """Atomic write of one output file; an OSError is E661 (what could not be written, and why)."""
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise write_error("E661", path, exc, hint="choose a writable --out folder with free space") from None


def prepare_out(out: Path) -> Path:
    """Create the output folder (and its parents); a path that is a file, or cannot be created, is E661."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SheafError(Diagnostic("E661", f"the output folder `{out}` is a file", file="<command line>",
                                    hint="give --out a folder (it is created if missing)"))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error("E661", out, exc, hint="choose a writable --out folder") from None
    return out


# ------------------------------------------------------------------------------------------------
# the paper's standard settings and small helpers

#: the heat equation of Fig 1 and Figs E.1, E.2: the input, the rate α, the step dt, the stopping rule
HEAT_INPUT = (0.5, -0.3)
HEAT_ALPHA, HEAT_DT, HEAT_CHANGE_TOL = 1.0, 0.01, 1e-15


def network(widths, *, output: str = "identity", activation: str = "relu", weight: float = 1.0, name: str = "net"):
    """The paper's network sheaf [w0, ..., wL] (``network`` sugar, every edge weight 1 unless ``weight``
    says otherwise for the output edge), as a :class:`sheafdsl.api.Sheaf`.

    >>> network([2, 4, 1]).param_shapes
    {'W1': (4, 2), 'b1': (4,), 'W2': (1, 4), 'b2': (1,)}
    """
    from ..api import loads

    arrow = " -> ".join(str(int(w)) for w in widths)
    return loads(f"sheaf {name}\nnetwork n : {arrow} {activation} output {output} weight {weight:g}\n")


def label(widths) -> str:
    """``[2,4,1]``: how the paper names a net."""
    return "[" + ",".join(str(int(w)) for w in widths) + "]"
