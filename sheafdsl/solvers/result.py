"""The results of a solve: :class:`SolveResult` (a cochain, every method) and :class:`Equilibrium` (a
feed-forward chain's stalks and discords, from the chain piece solvers)."""

from __future__ import annotations

import numpy as np

from ..lowering.backend import array_module


class Lazy:
    """A result attribute computed on first access (``fn()``), for what a caller often never reads."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn


def _lazy(name):
    key = "_" + name

    def get(self):
        d = self.__dict__
        v = d[key] if key in d else self._compute(name)  # a subclass computes what it did not store
        if isinstance(v, Lazy):
            v = v.fn()
        d[key] = v
        return v

    def put(self, v):
        self.__dict__[key] = v

    return property(get, put)


class SolveResult:
    """A batch of B harmonic extensions (inference) or two-sided equilibria (training pins).

    Attributes
    ----------
    cochain : (B, N) array
        The solution c* (pinned coordinates hold their pins).
    converged : (B,) bool
        ``residual <= rtol`` and every gate consistent.
    iterations : int
        exact: active-set iterations, i.e. pattern solves of the batch (1 for a forward sweep); cg: total
        conjugate-gradient steps; diffusion: heat-equation steps.
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
    state : (B, u) int8 or None
        The final unit states (ON = 1, SLIDE = 0, OFF = −1; :mod:`.driver`) of the solver's units: with the
        cochain, a warm start for the next solve (``solve(..., warm=result)``).
    equilibrium : :class:`Equilibrium` or None
        For a feed-forward chain solved by a chain piece solver: its stalks and discords, which the local
        update reads directly.
    trajectory : :class:`~sheafdsl.solvers.diffusion.HeatTrajectory` or None
        A traced heat-equation solve's history (``solve(..., method="diffusion", trajectory=...)``).

    ``cochain``, ``residual``, ``energy``, ``gates``, ``info`` and ``state`` may be computed on first access.
    """

    cochain = _lazy("cochain")
    residual = _lazy("residual")
    energy = _lazy("energy")
    gates = _lazy("gates")
    info = _lazy("info")
    state = _lazy("state")
    sliding = _lazy("sliding")
    trajectory = None

    def __init__(self, cochain, converged, iterations, residual, energy, consistent, gates, info, trace=None,
                 method: str = "exact", layout: dict | None = None, sliding=None, state=None, equilibrium=None):
        self.cochain, self.converged, self.iterations, self.residual = cochain, converged, iterations, residual
        self.energy, self.consistent, self.gates, self.info, self.trace = energy, consistent, gates, info, trace
        self.method, self.layout, self.sliding = method, layout or {}, sliding
        self.state, self.equilibrium = state, equilibrium

    def _compute(self, name: str):
        raise AttributeError(name)

    def __repr__(self) -> str:
        return f"SolveResult(method={self.method!r}, batch={self.batch}, iterations={self.iterations}, info={self.info})"

    def stalk(self, name: str):
        """The values of stalk ``name`` (B, d_v)."""
        if name not in self.layout:
            raise KeyError(f"no stalk {name!r}; stalks: {', '.join(self.layout)}")
        return self.cochain[:, self.layout[name]]

    @property
    def batch(self) -> int:
        return int(self.consistent.shape[0])

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


class Warm:
    """A warm start for the next solve: per example, the previous equilibrium and its unit states.

    Chains (:mod:`.chain`): ``V`` = [None, v_1, …, v_m] (B, d_k) and ``S`` = {relu layer k: (B, d_k) int8};
    general sheaves (:mod:`.active_set`): ``cochain`` (B, N) and ``state`` (B, u) int8. The point is feasible for
    its states (tails on their side, sliding tails exactly 0), so it stays a valid start when the parameters
    move. :meth:`take` / :meth:`put` index examples (a trainer's mini-batches over its training set). A
    chain's warm start may also carry ``forward``, the forward pass at the current parameters when the
    caller has it (the first layer's output is then not recomputed).
    """

    def __init__(self, V=None, S=None, cochain=None, state=None, forward=None):
        self.V, self.S, self.cochain, self.state = V, S, cochain, state
        self.forward = forward  # optional: the chain's forward pass [v_0..v_m] at the current parameters

    @classmethod
    def of(cls, res) -> "Warm":
        """The warm start a :class:`SolveResult` (or a :class:`Warm`) leaves."""
        if isinstance(res, Warm):
            return res
        if isinstance(res, Equilibrium):
            return cls(V=[None] + list(res.V[1:]), S=dict(res.S))
        eq = getattr(res, "equilibrium", None)
        if eq is not None:
            return cls(V=[None] + list(eq.V[1:]), S=dict(eq.S))
        return cls(cochain=res.cochain, state=res.state)

    def take(self, idx) -> "Warm":
        """The warm start of examples ``idx`` (None: all, not copied)."""
        if idx is None:
            return self
        if self.V is not None:
            return Warm(V=[None] + [v[idx] for v in self.V[1:]], S={k: s[idx] for k, s in self.S.items()})
        return Warm(cochain=self.cochain[idx], state=None if self.state is None else self.state[idx])

    def put(self, idx, res) -> None:
        """Store the warm start that ``res`` leaves for examples ``idx`` (None: all)."""
        w = Warm.of(res)
        if idx is None:
            self.V, self.S, self.cochain, self.state = w.V, w.S, w.cochain, w.state
            return
        if self.V is not None:
            for j in range(1, len(self.V)):
                self.V[j][idx] = w.V[j]
            for k in self.S:
                self.S[k][idx] = w.S[k]
        else:
            self.cochain[idx] = w.cochain
            if self.state is not None and w.state is not None:
                self.state[idx] = w.state


def _host(a):
    get = getattr(a, "get", None)
    return get() if callable(get) else np.asarray(a)
