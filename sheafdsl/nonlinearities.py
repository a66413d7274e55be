"""The nonlinearity registry, as plain data: which restriction maps φ a model may name, and what each is.

This table is the one place a nonlinearity is declared. The grammar has one keyword per entry; the front
end reads the names, roles and arguments from here; the IR turns an entry into a restriction map by its
``kind``; lowering (:mod:`sheafdsl.lowering.nonlinear`) holds the numeric φ, Dφ and output energy for
each name, and a test checks that both tables list the same names. Nothing here imports numerics, so the
front end stays light.

Adding a nonlinearity: one entry here, its numerics in :mod:`sheafdsl.lowering.nonlinear`, and a keyword
in ``grammars/sheaf.lark`` (``_NAME.5`` terminal and an ``edge_kind`` alternative).

An unknown name is an error wherever it is looked up (:func:`get` raises ``KeyError`` naming the known
ones; the front end turns that into a diagnostic before any lookup can fail).

>>> get("gelu").kind, get("gelu").hidden, get("sigmoid").task
('smooth', True, 'binary')
>>> [a.name for a in OUTPUTS]
['identity', 'sigmoid', 'softmax']
>>> get("swish")
Traceback (most recent call last):
...
KeyError: 'unknown nonlinearity `swish`; known: identity, relu, leaky_relu, tanh, gelu, softplus, sigmoid, softmax'
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Nonlinearity:
    """One entry of the registry.

    ``kind`` says how the IR represents it and which solvers apply:

    - ``linear``: the identity map I (no state dependence);
    - ``gate``: the ReLU gate diag(1[c ≥ 0]): piecewise linear with gates 0/1, solved by the active set;
    - ``piecewise``: piecewise linear with a slope argument (leaky ReLU, gates slope/1);
    - ``smooth``: an elementwise C¹ function φ(c) with derivative φ'(c);
    - ``joint``: a map of the whole stalk (softmax), with a full Jacobian Dφ.

    ``hidden``: allowed on a hidden edge of a network (a free head that feeds further edges);
    ``output``: allowed as the network's output map, with ``task`` (regression | binary | multiclass)
    and ``energy`` at a pinned head (least_squares ½‖y − φ(z)‖², or cross_entropy ℓ(z; y) whose
    gradient in z is φ(z) − y); ``arg``: the name of a numeric argument (``leaky_relu SLOPE``);
    ``dphi``: bounds (lo, hi) on φ' (elementwise kinds) or on the spectral norm of Dφ (joint), used by
    the Hessian bound and reported by ``sheaf verify``.
    """

    name: str
    formula: str
    kind: str
    hidden: bool = False
    output: bool = False
    task: str | None = None
    energy: str | None = None
    arg: str | None = None
    arg_range: tuple[float, float] | None = None  # open interval for the argument
    dphi: tuple[float, float] = (0.0, 1.0)

    def dphi_bounds(self, arg: float | None = None) -> tuple[float, float]:
        """(lo, hi) bounds on φ' (for leaky_relu: (min(slope, 1), max(slope, 1)))."""
        if self.kind == "piecewise" and arg is not None:
            return (min(arg, 1.0), max(arg, 1.0))
        return self.dphi


#: GELU'(x) = Φ(x) + x φ(x) has its extrema at x = ±√2: Φ(√2) + √2 φ(√2) and 1 − that
_GELU_MAX = 1.128904145185155
_GELU_MIN = 1.0 - _GELU_MAX

TABLE: dict[str, Nonlinearity] = {a.name: a for a in (
    Nonlinearity("identity", "φ(z) = z", "linear", hidden=True, output=True, task="regression",
                 energy="least_squares", dphi=(1.0, 1.0)),
    Nonlinearity("relu", "φ(z) = max(z, 0), the gate diag(1[z ≥ 0])", "gate", hidden=True),
    Nonlinearity("leaky_relu", "φ(z) = z for z ≥ 0, slope·z for z < 0", "piecewise", hidden=True, arg="slope",
                 arg_range=(0.0, 1.0)),
    Nonlinearity("tanh", "φ(z) = tanh z", "smooth", hidden=True, dphi=(0.0, 1.0)),
    Nonlinearity("gelu", "φ(z) = z Φ(z), Φ(z) = ½(1 + erf(z/√2))", "smooth", hidden=True,
                 dphi=(_GELU_MIN, _GELU_MAX)),
    Nonlinearity("softplus", "φ(z) = log(1 + e^z)", "smooth", hidden=True, dphi=(0.0, 1.0)),
    Nonlinearity("sigmoid", "φ(z) = 1 / (1 + e^{−z})", "smooth", hidden=True, output=True, task="binary",
                 energy="cross_entropy", dphi=(0.0, 0.25)),
    Nonlinearity("softmax", "φ(z)_i = e^{z_i} / Σ_j e^{z_j}", "joint", output=True, task="multiclass",
                 energy="cross_entropy", dphi=(0.0, 0.5)),
)}

#: every name, in table order
NAMES: tuple[str, ...] = tuple(TABLE)
#: the names a network's hidden layer may use, and its output map
HIDDEN: tuple[Nonlinearity, ...] = tuple(a for a in TABLE.values() if a.hidden and a.kind != "linear")
OUTPUTS: tuple[Nonlinearity, ...] = tuple(a for a in TABLE.values() if a.output)
#: the entries that are restriction maps c ↦ φ(c) in the IR (``Nonlinear``), not I or the ReLU gate
NONLINEAR: tuple[str, ...] = tuple(a.name for a in TABLE.values() if a.kind in ("piecewise", "smooth", "joint"))
#: task type by output name
TASKS: dict[str, str] = {a.name: a.task for a in OUTPUTS}


def get(name: str) -> Nonlinearity:
    """The entry for ``name``; KeyError naming the known entries when there is none."""
    try:
        return TABLE[name]
    except KeyError:
        raise KeyError(f"unknown nonlinearity `{name}`; known: {', '.join(NAMES)}") from None


__all__ = ["Nonlinearity", "TABLE", "NAMES", "HIDDEN", "OUTPUTS", "NONLINEAR", "TASKS", "get"]
