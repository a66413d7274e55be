"""Restriction maps as they sit on IR edges: what each F_{v◁e} is, not how it is computed.

A map is one of

- :class:`Identity`: I (d_e = d_v);
- :class:`Scaled`: c·I;
- :class:`Constant`: a fixed d_e × d_v matrix;
- :class:`ParamMap`: the matrix held by a named parameter (affine, linear, parameterised maps);
- :class:`Select`: rows of the identity (c ↦ c[indices]), used by partial soft pins;
- :class:`ReluGate`: diag(1[c_v ≥ 0]), state-dependent;
- :class:`Nonlinear`: c ↦ φ(c) for a registry nonlinearity (tanh, gelu, softplus, sigmoid, softmax,
  leaky_relu SLOPE), state-dependent and not linear.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from ..errors import Diagnostic, SheafError
from ..nonlinearities import NAMES, NONLINEAR, TABLE


@dataclass(frozen=True)
class Identity:
    kind: str = field(default="identity", init=False)


@dataclass(frozen=True)
class Scaled:
    scale: float
    kind: str = field(default="scaled", init=False)

    def __post_init__(self):
        s = self.scale
        if isinstance(s, bool) or not isinstance(s, numbers.Real):
            raise SheafError(Diagnostic("E224", f"a scaled restriction map needs a real number as its scale, not {s!r}"))


@dataclass(frozen=True, eq=False)
class Constant:
    matrix: np.ndarray
    kind: str = field(default="constant", init=False)

    def __post_init__(self):
        # as the checker reads a literal (E224): real numbers only, never a silent cast of complex or text
        raw = self.matrix
        try:
            a = np.asarray(raw)
        except ValueError:  # ragged nested lists
            a = None
        if a is None or a.dtype == object or a.dtype.kind not in "biuf":
            kind = "complex numbers" if a is not None and a.dtype.kind == "c" else "something other than real numbers"
            raise SheafError(Diagnostic("E224", f"a constant restriction map must be a rectangular matrix of real "
                                                f"numbers; this one holds {kind}"))
        m = np.array(a, dtype=float)
        m.setflags(write=False)
        object.__setattr__(self, "matrix", m)

    def __eq__(self, other):
        return isinstance(other, Constant) and np.array_equal(self.matrix, other.matrix)

    def __hash__(self):
        return hash(self.matrix.tobytes())


@dataclass(frozen=True)
class ParamMap:
    param: str
    kind: str = field(default="param", init=False)


@dataclass(frozen=True)
class Select:
    indices: tuple[int, ...]
    kind: str = field(default="select", init=False)


@dataclass(frozen=True)
class ReluGate:
    kind: str = field(default="relu", init=False)


@dataclass(frozen=True)
class Nonlinear:
    """c ↦ φ(c) for a nonlinearity of the registry (:mod:`sheafdsl.nonlinearities`) that is neither I nor
    the ReLU gate; ``arg`` is its numeric argument (the slope of ``leaky_relu``), None for the others.

    An unknown name, or a missing or superfluous argument, is a SheafError (E511) here, when the IR is built.

    >>> Nonlinear("gelu"), describe(Nonlinear("leaky_relu", 0.1))
    (Nonlinear(fn='gelu', arg=None, kind='nonlinear'), 'leaky_relu(0.1)')
    >>> Nonlinear("relu")
    Traceback (most recent call last):
    ...
    sheafdsl.errors.SheafError: <input>: error[E511]: `relu` is not a nonlinear restriction map (use ReluGate())
    """

    fn: str
    arg: float | None = None
    kind: str = field(default="nonlinear", init=False)

    def __post_init__(self):
        entry = TABLE.get(self.fn)
        if entry is None:
            raise SheafError(Diagnostic("E511", f"unknown nonlinearity `{self.fn}`", hint="known: " + ", ".join(NAMES)))
        if self.fn not in NONLINEAR:
            other = "ReluGate()" if entry.kind == "gate" else "Identity()"
            raise SheafError(Diagnostic("E511", f"`{self.fn}` is not a nonlinear restriction map (use {other})"))
        if (entry.arg is None) != (self.arg is None):
            need = f"takes its {entry.arg} as arg" if entry.arg else "takes no arg"
            raise SheafError(Diagnostic("E511", f"nonlinearity `{self.fn}` {need}"))
        if self.arg is not None:
            a = self.arg
            if isinstance(a, bool) or not isinstance(a, numbers.Real) or not math.isfinite(float(a)):
                raise SheafError(Diagnostic("E226", f"the {entry.arg} of {self.fn} must be a finite number, not {a!r}"))
            lo, hi = entry.arg_range or (-math.inf, math.inf)
            if not lo < float(a) < hi:  # as the checker says it (E226)
                raise SheafError(Diagnostic("E226", f"the {entry.arg} of {self.fn} must be a number in ({lo:g}, {hi:g}), "
                                                    f"not {float(a):g}"))
            object.__setattr__(self, "arg", float(a))


def nonlinear_map(name: str, arg: float | None = None):
    """The restriction map of registry entry ``name`` (its source side): Identity for ``identity``,
    ReluGate for ``relu``, else Nonlinear(name, arg); SheafError E511 for a name the registry lacks.

    >>> nonlinear_map("relu"), nonlinear_map("tanh")
    (ReluGate(kind='relu'), Nonlinear(fn='tanh', arg=None, kind='nonlinear'))
    """
    entry = TABLE.get(name)
    if entry is not None and entry.kind == "linear":
        return Identity()
    if entry is not None and entry.kind == "gate":
        return ReluGate()
    return Nonlinear(name, arg)


RestrictionMap = Identity | Scaled | Constant | ParamMap | Select | ReluGate | Nonlinear

STATE_DEPENDENT = (ReluGate, Nonlinear)


def describe(m) -> str:
    """A short text form, for exports and tables: ``I``, ``2*I``, ``[[1,0],[0,1]]``, ``W1``, ``relu``...

    A constant matrix is written in full (``%g`` entries) up to 36 entries, else as ``constant RxC``.

    >>> describe(Constant([[0.5, -1.25], [1, 0]])), describe(Scaled(-1.0)), describe(Select((0, 2)))
    ('[[0.5,-1.25],[1,0]]', '-1*I', 'select[0, 2]')
    """
    if isinstance(m, Identity):
        return "I"
    if isinstance(m, Scaled):
        return f"{m.scale:g}*I"
    if isinstance(m, Constant):
        a = m.matrix
        if a.size > 36:
            return f"constant {a.shape[0]}x{a.shape[1]}"
        return "[" + ",".join("[" + ",".join(f"{x:g}" for x in row) + "]" for row in a) + "]"
    if isinstance(m, ParamMap):
        return m.param
    if isinstance(m, Select):
        return "select" + str(list(m.indices))
    if isinstance(m, ReluGate):
        return "relu"
    if isinstance(m, Nonlinear):
        return m.fn if m.arg is None else f"{m.fn}({m.arg:g})"
    raise TypeError(f"not a restriction map: {m!r}")


def map_rows(m, d_v: int) -> int | None:
    """The edge-stalk dimension d_e that a map of a d_v-dimensional stalk produces (None: from a parameter)."""
    if isinstance(m, Constant):
        return m.matrix.shape[0]
    if isinstance(m, Select):
        return len(m.indices)
    if isinstance(m, ParamMap):
        return None
    return d_v
