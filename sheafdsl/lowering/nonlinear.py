"""The numerics of the nonlinearity registry: φ, Dφ and the output energies on any array module ``xp``.

One :class:`Kernel` per entry of :data:`sheafdsl.nonlinearities.TABLE` (a test checks the two tables
name the same things). Shapes: ``z`` is (..., d), batched over leading axes; every function is applied
per row (softmax) or elementwise (the rest).

- ``phi(xp, z, arg)``: φ(z);
- ``dphi(xp, z, arg)``: the elementwise derivative φ'(z) (None for softmax, whose Dφ is not diagonal);
- ``d2phi(xp, z, arg)``: the elementwise second derivative φ''(z) (0 for the piecewise linear ones, None
  for softmax), for the exact Newton step of :mod:`sheafdsl.solvers.smooth`;
- ``jvp(xp, z, x, arg)``: Dφ(z) x (Dφ is symmetric for every entry, so this is also Dφᵀ x);
- ``jacobian(xp, z, arg)``: Dφ(z) as (..., d, d);
- ``jacobian_phi(xp, p)``: Dφ from p = φ(z) when that is cheaper (sigmoid, softmax, tanh), else None;
- ``jacobian_phi_mul(xp, p, M)``: the product Dφ M (..., d, n) from p = φ(z), without forming Dφ: a row
  scaling φ'(z) ⊙ M for the elementwise kinds, and for softmax, whose Dφ = diag(p) − ppᵀ is diagonal plus
  rank 1, p ⊙ (M − 1 (pᵀM)) (one vector-matrix product and one scaling);
- for outputs with a cross-entropy energy at a pinned head, ``energy(xp, z, t)`` = ℓ(z; t) per row,
  ``energy_grad(xp, z, t)`` = ∂ℓ/∂z, ``energy_hessian(xp, z, t)`` = ∂²ℓ/∂z² (B, d, d), and
  ``phi_energy(xp, z, t)`` = (φ(z), ℓ(z; t)) from one evaluation:
  sigmoid ℓ = Σ softplus(z) − t·z, ∂ℓ = σ(z) − t (binary cross-entropy for t ∈ {0, 1});
  softmax ℓ = logsumexp(z)·Σt − t·z, ∂ℓ = softmax(z)·Σt − t (cross-entropy for a one-hot t, ∂ℓ = φ − t).

``kernel(name)`` is the lookup; an unknown name is a SheafError (E511), never a silent default.

>>> import numpy as np
>>> z = np.array([[-1.0, 0.0, 2.0]])
>>> np.round(kernel("gelu").phi(np, z), 4)
array([[-0.1587,  0.    ,  1.9545]])
>>> np.round(kernel("leaky_relu").phi(np, z, 0.1), 4)
array([[-0.1,  0. ,  2. ]])
>>> kernel("swish")
Traceback (most recent call last):
...
sheafdsl.errors.SheafError: <input>: error[E511]: unknown nonlinearity `swish`
  hint: known: identity, relu, ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from ..errors import Diagnostic, SheafError
from ..nonlinearities import NAMES, TABLE
from .backend import scipy_module

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


def sigmoid(xp, z):
    """σ(z) = 1 / (1 + e^{−z}) without overflow."""
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softmax(xp, z):
    """softmax over the last axis, shifted by the max."""
    e = xp.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softplus(xp, z):
    """log(1 + e^z) without overflow."""
    return xp.maximum(z, 0.0) + xp.log1p(xp.exp(-xp.abs(z)))


def logsumexp(xp, z):
    """log Σ_j e^{z_j} over the last axis."""
    m = z.max(axis=-1, keepdims=True)
    return (m + xp.log(xp.exp(z - m).sum(axis=-1, keepdims=True)))[..., 0]


def _normal_cdf(xp, z):
    return 0.5 * (1.0 + scipy_module(xp, "special").erf(z * _INV_SQRT2))


def _diag(xp, d):
    """(..., k) -> (..., k, k) diagonal matrices."""
    return d[..., :, None] * xp.eye(d.shape[-1])


@dataclass(frozen=True)
class Kernel:
    """The numerics of one registry entry (see the module docstring for each function)."""

    name: str
    phi: Callable
    dphi: Callable | None
    d2phi: Callable | None
    jvp: Callable
    jacobian: Callable
    energy: Callable | None = None
    energy_grad: Callable | None = None
    jacobian_phi: Callable | None = None
    phi_energy_fn: Callable | None = None
    energy_hessian: Callable | None = None
    jacobian_phi_mul_fn: Callable | None = None

    def jacobian_phi_mul(self, xp, p, M):
        """Dφ M for p = φ(z) (..., d) and M (..., d, n), from the structure of Dφ where the entry has one
        (elementwise: diagonal; softmax: diagonal plus rank 1), else the dense product Dφ @ M."""
        if self.jacobian_phi_mul_fn is not None:
            return self.jacobian_phi_mul_fn(xp, p, M)
        return self.jacobian_phi(xp, p) @ M

    def phi_energy(self, xp, z, t, t_sum=None):
        """(φ(z), ℓ(z; t)) per row; one exponential for softmax. ``t_sum``: Σ_j t_j per row (softmax's ℓ
        needs it) when the caller has it (a Newton loop evaluates the same targets many times)."""
        if self.phi_energy_fn is not None:
            return self.phi_energy_fn(xp, z, t, t_sum)
        return self.phi(xp, z), self.energy(xp, z, t)


def _elementwise(name, phi, dphi, d2phi, energy=None, energy_grad=None, dphi_of_phi=None,
                 energy_hessian=None) -> Kernel:
    return Kernel(name, phi, dphi, d2phi,
                  jvp=lambda xp, z, x, arg=None: dphi(xp, z, arg) * x,
                  jacobian=lambda xp, z, arg=None: _diag(xp, dphi(xp, z, arg)),
                  energy=energy, energy_grad=energy_grad, energy_hessian=energy_hessian,
                  jacobian_phi=None if dphi_of_phi is None else (lambda xp, p: _diag(xp, dphi_of_phi(p))),
                  jacobian_phi_mul_fn=None if dphi_of_phi is None else (lambda xp, p, M: dphi_of_phi(p)[..., :, None] * M))


def _sigmoid_d(xp, z, arg=None):
    s = sigmoid(xp, z)
    return s * (1.0 - s)


def _gelu(xp, z, arg=None):
    return z * _normal_cdf(xp, z)


def _gelu_d(xp, z, arg=None):
    return _normal_cdf(xp, z) + z * xp.exp(-0.5 * z * z) * _INV_SQRT2PI


def _tanh_d(xp, z, arg=None):
    t = xp.tanh(z)
    return 1.0 - t * t


def _tanh_d2(xp, z, arg=None):
    t = xp.tanh(z)
    return -2.0 * t * (1.0 - t * t)


def _sigmoid_d2(xp, z, arg=None):
    s = sigmoid(xp, z)
    return s * (1.0 - s) * (1.0 - 2.0 * s)


def _gelu_d2(xp, z, arg=None):
    return xp.exp(-0.5 * z * z) * _INV_SQRT2PI * (2.0 - z * z)


def _zero(xp, z, arg=None):
    return xp.zeros_like(z)


def _softmax_jvp(xp, z, x, arg=None):
    p = softmax(xp, z)
    return p * x - p * (p * x).sum(axis=-1, keepdims=True)


def _softmax_jacobian(xp, z, arg=None):
    p = softmax(xp, z)
    return _diag(xp, p) - p[..., :, None] * p[..., None, :]


def _softmax_jacobian_mul(xp, p, M):
    """(diag(p) − ppᵀ) M = p ⊙ (M − 1 (pᵀM)) for p = softmax(z) (..., d), M (..., d, n): O(d n) per row
    instead of forming Dφ and an O(d² n) product."""
    out = M - p[..., None, :] @ M
    out *= p[..., :, None]
    return out


def _softmax_energy(xp, z, t):
    return logsumexp(xp, z) * t.sum(axis=-1) - (t * z).sum(axis=-1)


def _softmax_energy_grad(xp, z, t):
    return softmax(xp, z) * t.sum(axis=-1, keepdims=True) - t


def _softmax_phi_energy(xp, z, t, t_sum=None):
    """φ and ℓ = (max + log Σe)·Σt − t·z from one exponential (Σt: ``t_sum`` when given)."""
    top = z.max(axis=-1, keepdims=True)
    e = xp.exp(z - top)
    total = e.sum(axis=-1, keepdims=True)
    # row dot products by einsum: one call, faster than a product and a sum over a short last axis
    ts = t.sum(axis=-1) if t_sum is None else t_sum
    return e / total, (top[..., 0] + xp.log(total[..., 0])) * ts - xp.einsum("...i,...i->...", t, z)


KERNELS: dict[str, Kernel] = {k.name: k for k in (
    _elementwise("identity", lambda xp, z, arg=None: z, lambda xp, z, arg=None: xp.ones_like(z), _zero),
    _elementwise("relu", lambda xp, z, arg=None: xp.maximum(z, 0.0),
                 lambda xp, z, arg=None: (z >= 0).astype(z.dtype), _zero),
    _elementwise("leaky_relu", lambda xp, z, arg: xp.where(z >= 0, z, arg * z),
                 lambda xp, z, arg: xp.where(z >= 0, 1.0, arg).astype(z.dtype), _zero),
    _elementwise("tanh", lambda xp, z, arg=None: xp.tanh(z), _tanh_d, _tanh_d2, dphi_of_phi=lambda t: 1.0 - t * t),
    _elementwise("gelu", _gelu, _gelu_d, _gelu_d2),
    _elementwise("softplus", lambda xp, z, arg=None: softplus(xp, z), lambda xp, z, arg=None: sigmoid(xp, z),
                 _sigmoid_d),
    _elementwise("sigmoid", lambda xp, z, arg=None: sigmoid(xp, z), _sigmoid_d, _sigmoid_d2,
                 energy=lambda xp, z, t: (softplus(xp, z) - t * z).sum(axis=-1),
                 energy_grad=lambda xp, z, t: sigmoid(xp, z) - t, dphi_of_phi=lambda s: s * (1.0 - s),
                 energy_hessian=lambda xp, z, t: _diag(xp, _sigmoid_d(xp, z))),
    Kernel("softmax", lambda xp, z, arg=None: softmax(xp, z), None, None, _softmax_jvp, _softmax_jacobian,
           energy=_softmax_energy, energy_grad=_softmax_energy_grad,
           jacobian_phi=lambda xp, p: _diag(xp, p) - p[..., :, None] * p[..., None, :],
           phi_energy_fn=_softmax_phi_energy, jacobian_phi_mul_fn=_softmax_jacobian_mul,
           energy_hessian=lambda xp, z, t: t.sum(axis=-1)[..., None, None] * _softmax_jacobian(xp, z)),
)}

assert tuple(KERNELS) == NAMES, "lowering.nonlinear.KERNELS must list exactly sheafdsl.nonlinearities.TABLE"


def kernel(name: str) -> Kernel:
    """The numerics of nonlinearity ``name``; SheafError E511 for a name the registry does not hold."""
    k = KERNELS.get(name)
    if k is None:
        raise SheafError(Diagnostic("E511", f"unknown nonlinearity `{name}`",
                                    hint="known: " + ", ".join(NAMES)))
    return k


def hessian_weight(name: str) -> float:
    """An upper bound on ‖∂²ℓ/∂z²‖ of an output's cross-entropy energy (per unit of Σt): the Dφ bound."""
    return TABLE[name].dphi[1]


__all__ = ["Kernel", "KERNELS", "kernel", "sigmoid", "softmax", "softplus", "logsumexp", "hessian_weight"]
