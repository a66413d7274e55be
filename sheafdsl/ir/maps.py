"""Restriction maps as they sit on IR edges: what each F_{v◁e} is, not how it is computed.

A map is one of

- :class:`Identity`: I (d_e = d_v);
- :class:`Scaled`: c·I;
- :class:`Constant`: a fixed d_e × d_v matrix;
- :class:`ParamMap`: the matrix held by a named parameter (affine, linear, parameterised maps);
- :class:`Select`: rows of the identity (c ↦ c[indices]), used by partial soft pins;
- :class:`ReluGate`: diag(1[c_v ≥ 0]), state-dependent;
- :class:`Nonlinear`: c ↦ φ(c) for φ = sigmoid | softmax, state-dependent and not linear.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Identity:
    kind: str = field(default="identity", init=False)


@dataclass(frozen=True)
class Scaled:
    scale: float
    kind: str = field(default="scaled", init=False)


@dataclass(frozen=True, eq=False)
class Constant:
    matrix: np.ndarray
    kind: str = field(default="constant", init=False)

    def __post_init__(self):
        m = np.array(self.matrix, dtype=float)
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
    fn: str  # "sigmoid" | "softmax"
    kind: str = field(default="nonlinear", init=False)


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
        return m.fn
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
