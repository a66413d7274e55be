"""The heat equation ċ_Ω = −∇_{c_Ω} E, Filippov-aware and accelerated: the local solver and the reference.

This is the one heat-equation solver: inference, the two-sided (training) equilibrium of any sheaf and
the sheaf trainer's ``--solver diffusion`` all use it.

**Filippov projection.** A plain Euler step on the piecewise gradient chatters across a switching surface
c_t = 0 when the equilibrium slides there. Each step is instead a *projected* gradient step on the current
piece:

- a unit with c_t > 0 (c_t < 0) is on (off); its step is clipped at c_t = 0, so a crossing lands on the
  switching surface instead of jumping over it;
- a unit with c_t = 0 leaves to the side that descends (g_on < 0: to on; g_off > 0: to off; the steeper
  when both do) and otherwise stays: the Filippov sliding motion, with zero velocity normal to the surface.

**Acceleration.** The plain heat flow contracts the error by 1 − λ_min/λ_max per step (κ steps). Nesterov's
momentum on the same projected steps (y = x_k + β_k (x_k − x_{k−1}), x_{k+1} = step(y), β_k from the FISTA
sequence t_{k+1} = (1 + √(1 + 4t_k²))/2) needs about √κ steps. The momentum acts within a piece: it
restarts whenever a unit reaches or leaves its switching surface, so the flow crosses the surfaces as the
plain heat flow does (and, from the same start, usually settles at the same one of E's local minima). It stays monotone: an example whose energy
would rise, or whose step from y points against its momentum, restarts the momentum (O'Donoghue–Candès)
and takes the plain step from x_k; an example whose plain step would raise the energy halves its step. So the energy trace never increases, and a fixed
point is exactly a consistent (Filippov-stationary) point of :mod:`.active_set`. Every update of a stalk
still uses only its own history and its incident edges' discords: the method is local.

**Step size.** α = 1/λ̂ per example with λ̂ = 1.1 × a power-iteration estimate of λ_max of the start piece's
Hessian (12 matrix-free products), never above the rigorous bound λ̄ (``Problem.hessian_bound``: a
Collatz–Wielandt bound on ‖W|δ|‖² plus the cross-entropy curvature) that the plain flow used; the halving
above covers pieces with a larger λ_max, and so does halving the step of an example whose residual has not
halved in ``STALL`` steps (down to 1/λ̄ at most).

**Tolerance.** An example is converged when its relative Filippov gradient norm (:attr:`SolveResult.residual`)
is ≤ rtol; converged examples stop moving while the rest of the batch goes on. With ``change_tol`` (the paper's
rule) it stops instead when the largest change of a coordinate in one step is below it.

**The paper's flow.** ``step=α·dt`` (with ``accelerate=False``) is the plain explicit Euler flow with that fixed
step, as the paper integrates it: no step estimate and no stall halving (only an energy rise would halve it).

**Trajectories.** A :class:`HeatTrace` passed as ``tracer`` records, as the flow runs, the energy, each edge's
discord energy and the stalks every k steps, and every activation-pattern crossing at every step
(:class:`HeatTrajectory`, :class:`Crossings`); without one nothing is recorded (``benchmarks/bench_heat.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .active_set import DENSE_LIMIT, OFF, ON, SLIDE, _masked, check_spd, filippov, finalize, piece_gradient, scale

#: power-iteration products for the step-size estimate, and its safety factor
POWER_STEPS, POWER_SAFETY = 12, 1.1
#: steps without halving the residual after which an example's step size is halved
STALL = 100


def _states(c, gated, xp):
    z = c[:, gated]
    return xp.where(z > 0, ON, xp.where(z < 0, OFF, SLIDE)).astype(np.int8)


def _lambda_hat(prob, c, state, lam_bound, xp):
    """(B,) step-size curvature: 1.1 × the power-iteration λ_max of the start piece's Hessian, ≤ ``lam_bound``."""
    s = prob.s
    B = c.shape[0]
    unit_gate = (state == ON).astype(c.dtype)
    gates = prob.gates_from(c, unit_gate)
    v = xp.asarray(np.random.default_rng(0).normal(size=(B, s.n)))
    lam = xp.zeros(B)
    for _ in range(POWER_STEPS):
        v = v / xp.sqrt((v * v).sum(axis=1, keepdims=True) + 1e-300)
        w = prob.hvp(v, c, unit_gate, gates)
        lam = (v * w).sum(axis=1)
        v = w
    return xp.minimum(xp.maximum(POWER_SAFETY * lam, 1e-12 * lam_bound), lam_bound)


def _step(prob, c, alpha, xp):
    """One projected (Filippov) gradient step from c with per-example step ``alpha`` (B,): the new free
    coordinates, the relative gradient norm at c, and the state at c."""
    s = prob.s
    state = _states(c, s.gated, xp)
    g, g_on, g_off, _ = piece_gradient(prob, c, state)
    gm, _, right, left = filippov(g, g_on, g_off, state, s.gated_pos, xp)
    x = c[:, s.free] - alpha[:, None] * gm
    if len(s.gated_host):
        slide = state == SLIDE
        go_on = slide & (right > 0) & (right >= left)
        go_off = slide & (left > 0) & ~go_on
        zn = x[:, s.gated_pos]
        x[:, s.gated_pos] = xp.where((state == ON) | go_on, xp.maximum(zn, 0.0),
                                     xp.where((state == OFF) | go_off, xp.minimum(zn, 0.0), 0.0))
    return x, xp.sqrt((gm * gm).sum(axis=1)), state


def _keep_sides(prob, y, ref, xp):
    """The extrapolated point y with each unit kept on the side (or the surface) it has at ``ref``."""
    s = prob.s
    if len(s.gated_host):
        z, zr = y[:, s.gated], ref[:, s.gated]
        y[:, s.gated] = xp.where(zr > 0, xp.maximum(z, 0.0), xp.where(zr < 0, xp.minimum(z, 0.0), 0.0))
    return y


def diffusion(prob, c, *, rtol=1e-10, maxiter=None, record_trace=False, step=None, accelerate=True,
              change_tol=None, tracer=None):
    """Integrate the Filippov heat equation from c (B, N) until the relative Filippov gradient norm is ≤ rtol
    for every example, or ``maxiter`` steps (default 200 000).

    ``step``: a fixed step size α·dt (no estimate, and no halving when the residual stalls; only an energy
    rise still halves it); ``accelerate=False``: the plain (explicit Euler) heat flow. ``change_tol``: stop
    an example instead when the largest change of a coordinate in one step, max_i |x_{k+1} − x_k|_i, is
    below it (rtol then plays no part; ``converged`` means that change was reached at a consistent point).
    ``tracer``: a :class:`HeatTrace` that records the trajectory (``result.trajectory``)."""
    xp, s = prob.xp, prob.s
    B, n, nu = c.shape[0], s.n, len(s.gated_host)
    if maxiter is None:
        maxiter = 200_000
    if s.shared_hessian and 0 < n <= DENSE_LIMIT:
        m = xp.ones(n)
        if len(s.elim_host):
            m[xp.asarray(s.pos[s.elim_host])] = 0.0
        check_spd(prob, _masked(prob.dense_hessian(c[:1], xp.zeros((1, nu)))[0], m, xp), m)
    denom = scale(prob, c)
    x = c.copy()
    lam_bound = prob.hessian_bound()
    lam_bound = lam_bound if lam_bound > 0 else 1.0
    if step is not None:
        alpha = xp.full(B, float(step))
    elif accelerate and n:
        alpha = 1.0 / _lambda_hat(prob, x, _states(x, s.gated, xp), lam_bound, xp)
    else:
        alpha = xp.full(B, 1.0 / lam_bound)
    trace = [] if record_trace else None
    by_change = change_tol is not None
    E = prob.energy(x)
    if tracer is not None:
        tracer.record(0, x, E)
    x_prev = x.copy()
    t = xp.ones(B)
    best, since = xp.full(B, np.inf), xp.zeros(B, dtype=np.int64)
    active = xp.ones(B, dtype=bool)
    k = 0
    while True:
        # the gradient step from the extrapolated point y (from x itself when the momentum is 0)
        beta = (t - 1.0) / ((1.0 + xp.sqrt(1.0 + 4.0 * t * t)) / 2.0) if accelerate else xp.zeros(B)
        y = x.copy()
        y[:, s.free] = x[:, s.free] + beta[:, None] * (x[:, s.free] - x_prev[:, s.free])
        y = _keep_sides(prob, y, x, xp)
        xf, gnorm, _ = _step(prob, y, alpha, xp)
        if record_trace:  # the energy at x_k
            trace.append(E.copy())
        res_y = gnorm / denom
        # a residual that has not halved in STALL steps: the step is too long for this piece (a switching
        # surface crossed back and forth, or an oscillation below the energy's resolution): halve it
        better = res_y < 0.5 * best
        best = xp.where(better, res_y, best)
        since = xp.where(better, 0, since + 1)
        stalled = since >= STALL
        if step is None and bool(stalled.any()):  # (never below the rigorous step 1/λ̄, with which the plain flow converges)
            alpha = xp.where(stalled, xp.maximum(0.5 * alpha, 1.0 / lam_bound), alpha)
            since = xp.where(stalled, 0, since)
            t = xp.where(stalled, 1.0, t)
        done_y = active & (res_y <= rtol) if not by_change else active & (gnorm == 0)  # y itself is a solution
        if bool(done_y.any()):
            x = xp.where(done_y[:, None], y, x)
            E = xp.where(done_y, prob.energy(y), E)
            active &= ~done_y
        if not bool(active.any()) or k >= maxiter:
            break
        k += 1
        cand = x.copy()
        cand[:, s.free] = xf
        E_c = prob.energy(cand)
        # restart the momentum when the energy would rise, or when the step from y points against the
        # momentum (gradient restart: (y − x_{k+1})·(x_{k+1} − x_k) > 0), which stops oscillations that
        # the energy no longer resolves near the solution
        against = ((y[:, s.free] - xf) * (xf - x[:, s.free])).sum(axis=1) > 0
        worse = active & ((E_c > E + 1e-13 * (1.0 + xp.abs(E))) | ((beta > 0) & against))
        # a unit that reached or left its switching surface: a new piece, where the momentum restarts
        crossed = xp.any(_states(cand, s.gated, xp) != _states(x, s.gated, xp), axis=1) if nu else worse & False
        shrink = worse & ~(beta > 0)  # the plain step overshot: a smaller step (momentum overshot: restart it)
        accept = active & ~worse
        x_prev = xp.where(accept[:, None], x, x_prev)
        x = xp.where(accept[:, None], cand, x)
        E = xp.where(accept, E_c, E)
        t_next = (1.0 + xp.sqrt(1.0 + 4.0 * t * t)) / 2.0
        t = xp.where(accept & ~crossed & accelerate, t_next, xp.where(worse | crossed, 1.0, t))
        x_prev = xp.where(worse[:, None], x, x_prev)
        alpha = xp.where(shrink, 0.5 * alpha, alpha)
        if by_change:  # the largest change of a coordinate in this step (0 for a rejected step: not a stop)
            still = accept & (xp.max(xp.abs(x[:, s.free] - x_prev[:, s.free]), axis=1) < change_tol)
            active &= ~still
        if tracer is not None:
            tracer.record(k, x, E)
    if record_trace:  # the last entry: the energy at the point returned
        trace[-1] = E.copy()
    if tracer is not None:
        tracer.record(k, x, E, final=True)
    state = _states(x, s.gated, xp)
    if by_change:
        res = finalize(prob, x, state, denom, ~active, k, trace, "diffusion", np.inf)
    else:
        res = finalize(prob, x, state, denom, xp.ones(B, dtype=bool), k, trace, "diffusion", rtol)
    if tracer is not None:
        res.trajectory = tracer.result()
    return res


@dataclass
class Crossings:
    """Activation-pattern crossings of a traced heat-equation solve, one entry per event: at ``iteration``
    k (the state after step k differs from the state after step k − 1), in ``example``, the unit at cochain
    coordinate ``coordinate`` went from state ``before`` to ``after`` (ON = 1, SLIDE = 0, OFF = −1). A unit
    crossing its switching surface in one step is one event (−1 → 1 or 1 → −1); the projected flow that
    lands on the surface first makes two (1 → 0, then 0 → −1)."""

    iteration: object
    example: object
    coordinate: object
    before: object
    after: object

    def __len__(self) -> int:
        return int(self.iteration.shape[0])

    @property
    def direction(self):
        """+1 for a step towards on (OFF → SLIDE → ON), −1 towards off."""
        return (self.after > self.before).astype(np.int8) * 2 - 1


@dataclass
class HeatTrajectory:
    """What :class:`HeatTrace` recorded: T snapshots at ``iterations`` (T,) of the objective ``energy``
    (T, B), each edge's discord energy ``edge_energy`` (T, B, n_edges) in the order of ``edge_names``, and the
    cochain coordinates ``columns`` (None: all N) as ``values`` (T, B, len(columns)); and every
    :class:`Crossings` event."""

    iterations: object
    energy: object
    edge_energy: object
    edge_names: list
    values: object
    columns: object
    crossings: Crossings


class HeatTrace:
    """Records a heat-equation solve as it runs (``diffusion(..., tracer=HeatTrace(prob, ...))``).

    Every ``every`` steps (and at the first and the last): the objective E (B,), each edge's discord energy
    ½ w_e² ‖r_e(c)‖² (B, n_edges; ReLU edges as relu(c_u), eliminated heads set from their tails first, so
    the output stalk is φ of its input), and the coordinates ``columns`` of the cochain (default all).
    At every step: each unit whose state (ON/SLIDE/OFF, from the sign of c_t) changed: an
    activation-pattern crossing (iteration, example, unit, state before, state after).
    Nothing is recorded unless a tracer is passed, so the untraced solve does no extra work.
    """

    def __init__(self, prob, *, columns=None, every: int = 1):
        xp, ops = prob.xp, prob.ops
        self.prob, self.every = prob, max(1, int(every))
        self.columns = None if columns is None else xp.asarray(columns, dtype=np.int64)
        M = ops.M
        ind = np.zeros((M, len(ops.edges)))
        for j, e in enumerate(ops.edges):
            ind[e.rows, j] = 1.0
        self._ind = xp.asarray(ind)
        self.edge_names = [e.name for e in ops.edges]
        self.iterations, self.energy, self.edge_energy, self.values = [], [], [], []
        self._cross = []  # (iteration, example indices, unit indices, before, after)
        self._state = None
        self._last = -1

    def _snapshot(self, k, x, E):
        xp, prob = self.prob.xp, self.prob
        c = x.copy()
        prob.finish_heads(c)
        r = prob.ops.discord(c)
        self.iterations.append(int(k))
        self.energy.append(E.copy())
        self.edge_energy.append(0.5 * (prob.ops.w2 * r * r) @ self._ind)
        self.values.append(c if self.columns is None else c[:, self.columns])
        self._last = k

    def record(self, k: int, x, E, final: bool = False) -> None:
        """The cochain x (B, N) after k steps, with objective E (B,)."""
        xp, s = self.prob.xp, self.prob.s
        if len(s.gated_host):
            st = _states(x, s.gated, xp)
            if self._state is not None:
                ex, unit = xp.nonzero(st != self._state)
                if ex.shape[0]:
                    self._cross.append((k, ex, unit, self._state[ex, unit], st[ex, unit]))
            self._state = st
        if (k % self.every == 0 or final) and k != self._last:
            self._snapshot(k, x, E)

    def result(self) -> "HeatTrajectory":
        xp = self.prob.xp
        if self._cross:
            it = xp.concatenate([xp.full(ex.shape[0], k, dtype=np.int64) for k, ex, *_ in self._cross])
            ex, unit, before, after = (xp.concatenate([c[i] for c in self._cross]) for i in range(1, 5))
        else:
            it = ex = unit = xp.zeros(0, dtype=np.int64)
            before = after = xp.zeros(0, dtype=np.int8)
        return HeatTrajectory(iterations=xp.asarray(self.iterations, dtype=np.int64), energy=xp.stack(self.energy),
                              edge_energy=xp.stack(self.edge_energy), edge_names=self.edge_names,
                              values=xp.stack(self.values), columns=self.columns,
                              crossings=Crossings(it, ex, self.prob.s.gated[unit] if unit.shape[0] else unit,
                                                  before, after))
