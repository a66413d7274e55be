"""The results of a solve: :class:`SolveResult` (a cochain, every method) and :class:`Equilibrium` (a
feed-forward chain's stalks and discords, from the chain piece solvers)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..lowering.backend import array_module


@dataclass
class SolveResult:
    """A batch of B harmonic extensions.

    Attributes
    ----------
    cochain : (B, N) array
        The solution c* (pinned coordinates hold their pins).
    converged : (B,) bool
        ``residual <= rtol`` and every gate consistent.
    iterations : int
        exact: active-set iterations (1 for a forward sweep); cg: total conjugate-gradient steps;
        diffusion: heat-equation steps.
    residual : (B,) array
        The relative Filippov gradient norm ‖∇̃_{c_Ω} E(c*)‖ / ‖∇_{c_Ω} E(c_Ω = 0)‖, where ∇̃ takes, at a sliding
        unit (c_t = 0), the one-sided derivative that still descends (zero when neither does).
    energy : (B,) array
        E(c*) (least squares; cross-entropy for nonlinear edges with a pinned head).
    consistent : (B,) bool
        The gate pattern agrees with the state: on units have c_t ≥ 0, off units c_t ≤ 0, and every sliding
        unit (c_t = 0) satisfies the subgradient (Filippov) condition g_on ≥ 0 ≥ g_off. All True without gates.
    gates : dict edge -> (B, d_e) array
        The gate of each ReLU edge at the solution: 1 (on), 0 (off) or, at a sliding unit, the Filippov
        multiplier s ∈ [0, 1] with which ∂E/∂c_t = 0; with these gates ∇_{c_Ω} E(c*) = 0 (the certificate).
    info : int
        0 when every example converged, else the number that did not (scipy style: > 0 means not converged).
    trace : (T, B) array or None
        The energy per iteration when ``record_trace`` was asked for.
    """

    cochain: object
    converged: object
    iterations: int
    residual: object
    energy: object
    consistent: object
    gates: dict
    info: int
    trace: object = None
    method: str = "exact"
    layout: dict = field(default_factory=dict, repr=False)
    sliding: object = None  # (B,) number of sliding units per example

    def stalk(self, name: str):
        """The values of stalk ``name`` (B, d_v)."""
        if name not in self.layout:
            raise KeyError(f"no stalk {name!r}; stalks: {', '.join(self.layout)}")
        return self.cochain[:, self.layout[name]]

    @property
    def batch(self) -> int:
        return int(self.cochain.shape[0])

    @property
    def fraction_consistent(self) -> float:
        return float(np.mean(_host(self.consistent))) if self.batch else 1.0


class Equilibrium:
    """The two-sided equilibrium of a batch.

    ``V``: vertex values v_0..v_m (B, d_k); ``U``: discords u_1..u_m of the chain edges; ``out_disc``:
    the output edge's discord (y − p); ``energy``: E(c*) per example (None when not asked for); ``S``:
    final unit states per relu layer (+1/0/−1); ``consistent``: (B,) bool, a consistent stationary
    point was reached; ``sliding``: (B,) number of sliding units; ``iterations``: pattern solves used.
    """

    def __init__(self, V, U, out_disc, energy, S, consistent, sliding=None, iterations: int = 0, info=None,
                 free_layers=None):
        self.V, self.U, self.out_disc, self.energy, self.S = V, U, out_disc, energy, S
        self.consistent, self._sliding, self.iterations = consistent, sliding, iterations
        self.info = info or {}
        self._free = free_layers

    @property
    def sliding(self):
        if self._sliding is None:
            keys = self._free if self._free is not None else [k for k in self.S if k >= 1]
            B = self.V[0].shape[0]
            xp = array_module(self.V[0])
            self._sliding = sum(((self.S[k] == 0).sum(axis=1) for k in keys), xp.zeros(B, dtype=np.int64))
        return self._sliding

    @property
    def consistent_fraction(self) -> float:
        c = self.consistent
        return int(c.nonzero()[0].shape[0]) / c.shape[0] if c.shape[0] else 1.0


def _host(a):
    get = getattr(a, "get", None)
    return get() if callable(get) else np.asarray(a)
