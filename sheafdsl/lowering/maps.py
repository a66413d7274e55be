"""What a restriction map does to arrays: one ``apply`` / ``apply_T`` / ``matrix`` for every map type.

The IR (:mod:`sheafdsl.ir.maps`) says what each F_{v◁e} is; this module is the one place that says how it
acts, shared by the batched operators, the forward passes, the assembled reference matrices, the
analysis and the training diagnostics. ``x`` is (B, d_v) (a batch of vertex values), ``y`` (B, d_e).

- ``apply(m, x, params, xp)``: F(x), state-dependent maps *evaluated* (max(x, 0), φ(x));
- ``apply_lin(m, x, params, xp, state=, gate=)``: the linearisation F'(state) x (a ReLU gate diag(g) with g
  from ``gate`` or 1[state ≥ 0], all ones with neither; Dφ(state) x, at state 0 when none is given);
- ``apply_T(m, y, params, xp, state=, gate=)``: F'(state)ᵀ y;
- ``matrix(m, d_v, params, state=, gate=)``: F'(state) as a dense host (d_e, d_v) array (one example).

>>> import numpy as np
>>> from sheafdsl.ir.maps import Nonlinear, ReluGate, Select
>>> x = np.array([[-1.0, 2.0]])
>>> apply(ReluGate(), x, {}, np), apply(Select((1,)), x, {}, np)
(array([[0., 2.]]), array([[2.]]))
>>> matrix(Nonlinear("tanh"), 2, {}, state=np.zeros(2))
array([[1., 0.],
       [0., 1.]])
"""

from __future__ import annotations

import numpy as np

from ..ir.maps import Constant, Identity, Nonlinear, ParamMap, ReluGate, Scaled, Select
from .backend import to_numpy
from .nonlinear import kernel


def _dense(m, d_v: int) -> np.ndarray:
    """The host matrix of a constant map (Identity, Scaled, Constant, Select)."""
    if isinstance(m, Identity):
        return np.eye(d_v)
    if isinstance(m, Scaled):
        return m.scale * np.eye(d_v)
    if isinstance(m, Constant):
        return np.asarray(m.matrix)
    S = np.zeros((len(m.indices), d_v))
    S[np.arange(len(m.indices)), list(m.indices)] = 1.0
    return S


def _param(params, m, xp):
    W = xp.asarray(params[m.param])
    return W.reshape(W.shape[0], -1)


def _not_a_map(m):
    return TypeError(f"not a restriction map: {m!r}")


def apply(m, x, params, xp=np, const=None):
    """F(x) with state-dependent maps evaluated; ``const``: an xp copy of a Constant/Select matrix to reuse."""
    if isinstance(m, Identity):
        return x
    if isinstance(m, Scaled):
        return m.scale * x
    if isinstance(m, (Constant, Select)):
        A = const if const is not None else xp.asarray(_dense(m, x.shape[-1]))
        return x @ A.T
    if isinstance(m, ParamMap):
        return x @ _param(params, m, xp).T
    if isinstance(m, ReluGate):
        return xp.maximum(x, 0.0)
    if isinstance(m, Nonlinear):
        return kernel(m.fn).phi(xp, x, m.arg)
    raise _not_a_map(m)


def _gate(gate, state, xp):
    if gate is not None:
        return gate
    return 1.0 if state is None else (state >= 0)


def apply_lin(m, x, params, xp=np, *, state=None, gate=None, const=None):
    """F'(state) x, the linearisation (see the module docstring)."""
    if isinstance(m, ReluGate):
        return x * _gate(gate, state, xp)
    if isinstance(m, Nonlinear):
        z = xp.zeros_like(x) if state is None else state
        return kernel(m.fn).jvp(xp, z, x, m.arg)
    return apply(m, x, params, xp, const)


def apply_T(m, y, params, xp=np, *, state=None, gate=None, const=None, d_v: int | None = None):
    """F'(state)ᵀ y, (B, d_e) -> (B, d_v) (``d_v`` is needed for a Select map unless ``const`` is given)."""
    if isinstance(m, Identity):
        return y
    if isinstance(m, Scaled):
        return m.scale * y
    if isinstance(m, (Constant, Select)):
        A = const if const is not None else xp.asarray(_dense(m, d_v))
        return y @ A
    if isinstance(m, ParamMap):
        return y @ _param(params, m, xp)
    if isinstance(m, ReluGate):
        return y * _gate(gate, state, xp)
    if isinstance(m, Nonlinear):  # Dφ is symmetric for every registry entry
        z = xp.zeros_like(y) if state is None else state
        return kernel(m.fn).jvp(xp, z, y, m.arg)
    raise _not_a_map(m)


def matrix(m, d_v: int, params, *, state=None, gate=None) -> np.ndarray:
    """F'(state) as a dense host (d_e, d_v) array for one example (``state``, ``gate``: (d_v,) vectors)."""
    if isinstance(m, CONSTANT):
        return _dense(m, d_v)
    if isinstance(m, ParamMap):
        return np.asarray(to_numpy(params[m.param]), dtype=float).reshape(-1, d_v)
    if isinstance(m, ReluGate):
        g = np.ones(d_v) if gate is None and state is None else np.asarray(_gate(gate, None if state is None else
                                                                                 np.asarray(state), np), dtype=float)
        return np.diag(g)
    if isinstance(m, Nonlinear):
        z = np.zeros((1, d_v)) if state is None else np.asarray(state, dtype=float).reshape(1, d_v)
        return kernel(m.fn).jacobian(np, z, m.arg)[0]
    raise _not_a_map(m)


#: the maps that depend on neither the state nor a parameter
CONSTANT = (Identity, Scaled, Constant, Select)


def is_constant(m) -> bool:
    """True for the maps that depend on neither the state nor a parameter (I, c·I, constants, selections)."""
    return isinstance(m, CONSTANT)


def is_state_dependent(m) -> bool:
    """True for ReLU gates and nonlinear maps."""
    return isinstance(m, (ReluGate, Nonlinear))


__all__ = ["apply", "apply_lin", "apply_T", "matrix", "is_constant", "is_state_dependent", "CONSTANT"]
