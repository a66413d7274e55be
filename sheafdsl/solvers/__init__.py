"""Solvers: the harmonic extension of the pins (exact, cg, diffusion). See :mod:`.core`.

>>> from sheafdsl.solvers import solve, SolveResult
"""

from .core import DIAGNOSTICS, METHODS, boundary_cochain, solve
from .result import SolveResult

__all__ = ["solve", "SolveResult", "METHODS", "DIAGNOSTICS", "boundary_cochain"]
