"""The result of a solve (shared by every method)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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


def _host(a):
    get = getattr(a, "get", None)
    return get() if callable(get) else np.asarray(a)
