"""The heat equation ċ_Ω = −∇_{c_Ω} E, Filippov-aware: the local solver and the reference.

Discretisation: explicit Euler with step α = 1/λ̄, where λ̄ ≥ λ_max of the Hessian of every piece
(``Problem.hessian_bound``: a Collatz–Wielandt bound on ‖W|δ|‖², plus w²/4 or w²/2 per cross-entropy edge),
so each step decreases E (for a quadratic piece the iteration matrix I − αH has spectrum in [0, 1)); the
error contracts by 1 − λ_min/λ̄ per step.

ReLU switching surfaces. A plain Euler step on the piecewise gradient chatters across c_t = 0 when the
equilibrium slides there. Instead each step is a *projected* gradient step on the current piece:

- a unit with c_t > 0 (c_t < 0) is on (off); its step is clipped at c_t = 0, so a crossing lands on the
  switching surface instead of jumping over it;
- a unit with c_t = 0 leaves to the side that descends (g_on < 0: to on; g_off > 0: to off; the steeper
  when both do) and otherwise stays: the Filippov sliding motion, with zero velocity normal to the surface.

Each step is a projected gradient step of a convex quadratic (or convex smooth) piece with step ≤ 1/L on a
set where that piece equals E, so the energy trace is non-increasing, and a fixed point is exactly a
consistent (Filippov-stationary) point of :mod:`.active_set`.
"""

from __future__ import annotations

import numpy as np

from .active_set import (DENSE_LIMIT, OFF, ON, SLIDE, _masked, check_spd, filippov, finalize, piece_gradient,
                         scale)


def diffusion(prob, c, *, rtol=1e-10, maxiter=None, record_trace=False, step=None):
    """Integrate the Filippov heat equation from the feasible c (B, N) until the relative Filippov gradient
    norm is ≤ rtol for every example, or ``maxiter`` steps (default 200 000)."""
    xp, s = prob.xp, prob.s
    B, n, nu = c.shape[0], s.n, len(s.gated_host)
    if maxiter is None:
        maxiter = 200_000
    if s.shared_hessian and 0 < n <= DENSE_LIMIT:
        m = xp.ones(n)
        if len(s.elim_host):
            m[xp.asarray(s.pos[s.elim_host])] = 0.0
        check_spd(prob, _masked(prob.dense_hessian(c[:1], xp.zeros((1, nu)))[0], m, xp), m)
    lam = prob.hessian_bound()
    alpha = step if step is not None else (1.0 / lam if lam > 0 else 1.0)
    denom = scale(prob, c)
    gpos = s.gated_pos
    trace = [] if record_trace else None
    c = c.copy()
    state = None
    k = 0
    for k in range(maxiter + 1):
        z = c[:, s.gated]
        state = xp.where(z > 0, ON, xp.where(z < 0, OFF, SLIDE)).astype(np.int8)
        g, g_on, g_off, r = piece_gradient(prob, c, state)
        if record_trace:
            trace.append(prob.energy(c, r=r))
        gm, _, right, left = filippov(g, g_on, g_off, state, gpos, xp)
        res = xp.sqrt((gm * gm).sum(axis=1)) / denom
        if bool(xp.all(res <= rtol)) or k == maxiter:
            break
        x = c[:, s.free] - alpha * gm
        if nu:
            slide = state == SLIDE
            go_on = slide & (right > 0) & (right >= left)
            go_off = slide & (left > 0) & ~go_on
            zn = x[:, gpos]
            zn = xp.where((state == ON) | go_on, xp.maximum(zn, 0.0),
                          xp.where((state == OFF) | go_off, xp.minimum(zn, 0.0), 0.0))
            x[:, gpos] = zn
        c[:, s.free] = x
    converged = xp.ones(B, dtype=bool)
    out = finalize(prob, c, state, denom, converged, k, trace, "diffusion", rtol)
    return out
