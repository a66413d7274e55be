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
is ≤ rtol; converged examples stop moving while the rest of the batch goes on.
"""

from __future__ import annotations

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


def diffusion(prob, c, *, rtol=1e-10, maxiter=None, record_trace=False, step=None, accelerate=True):
    """Integrate the Filippov heat equation from c (B, N) until the relative Filippov gradient norm is ≤ rtol
    for every example, or ``maxiter`` steps (default 200 000). ``step``: a fixed step size (no estimate);
    ``accelerate=False``: the plain (explicit Euler) heat flow."""
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
    E = prob.energy(x)
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
        if bool(stalled.any()):  # (never below the rigorous step 1/λ̄, with which the plain flow converges)
            alpha = xp.where(stalled, xp.maximum(0.5 * alpha, 1.0 / lam_bound), alpha)
            since = xp.where(stalled, 0, since)
            t = xp.where(stalled, 1.0, t)
        done_y = active & (res_y <= rtol)  # y itself is a solution: stop there
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
    if record_trace:  # the last entry: the energy at the point returned
        trace[-1] = E.copy()
    state = _states(x, s.gated, xp)
    return finalize(prob, x, state, denom, xp.ones(B, dtype=bool), k, trace, "diffusion", rtol)
