"""Output-space solves shared by the chain piece solvers: the n_L-dimensional problem that remains once the
discords of a chain are eliminated (see :mod:`.chain`).

- :func:`newton`: F(ρ) = Λρ + ψ(q + Kρ) − t = 0 for a batch of (R × R) systems (sigmoid / softmax outputs,
  with sliding rows), damped Newton with per-example Armijo backtracking;
- :func:`sigmoid_scalar`: the scalar equation of one sigmoid output, safeguarded Newton (rtsafe).
"""

from __future__ import annotations

from ..lowering.chain import dphi, phi, phi_energy


def newton(fn, K, q, t, lam, n_out, n_slide, Y, tol, max_newton, xp, rho0=None):
    """Solve F(ρ) = Λρ + ψ(q + Kρ) − t = 0 (ψ = φ on the output rows, identity on sliding rows).

    Without sliding rows F(ρ) = ∇_z g(z) at z = q + Kρ for the convex g(z) = (z − q)ᵀK⁻¹(z − q)/(2w²) +
    CE(y, z), so Newton's direction descends g(ρ) = ρᵀKρ/(2w²) + CE(y, q + Kρ) and a per-example Armijo
    backtracking on g globalises it; with sliding rows the merit is ½‖F‖². Returns (ρ, converged).
    """
    B, R = q.shape
    rho = xp.zeros((B, R))
    if rho0 is not None:  # warm start of the output rows (sliding rows start at 0)
        rho[:, :n_out] = rho0
    eye = xp.eye(R)
    scale = 1.0 + float(xp.abs(t).max()) if B else 1.0

    def evaluate(rho):
        pz = q + xp.einsum("brs,bs->br", K, rho)
        z = pz[:, :n_out]
        ph, ce = phi_energy(fn, z, Y, xp)  # one exponential for softmax
        psi = ph if n_slide == 0 else xp.concatenate([ph, pz[:, n_out:]], axis=1)
        Fv = lam * rho + psi - t
        if n_slide == 0:
            merit = 0.5 * lam[:, 0] * (rho * (pz - q)).sum(axis=1) + ce
        else:
            merit = 0.5 * (Fv ** 2).sum(axis=1)
        return pz, ph, Fv, merit

    pz, ph, Fv, merit = evaluate(rho)
    for _ in range(max_newton):
        if float(xp.abs(Fv).max()) <= tol * scale:
            break
        D = dphi(fn, pz[:, :n_out], xp, ph)
        if n_slide:
            Dfull = xp.broadcast_to(eye, (B, R, R)).copy()
            Dfull[:, :n_out, :n_out] = D
            D = Dfull
        Jac = eye * lam[:, :, None] + D @ K
        step = xp.linalg.solve(Jac, Fv[..., None])[..., 0]
        if n_slide == 0:
            slope = -(xp.einsum("brs,bs->br", K, Fv) * step).sum(axis=1)
        else:
            slope = -(Fv ** 2).sum(axis=1)
        alpha = xp.ones(B)
        for _ in range(30):
            cand = rho - alpha[:, None] * step
            pz_c, ph_c, F_c, m_c = evaluate(cand)
            bad = ~(m_c <= merit + 1e-4 * alpha * slope + 1e-13 * (1.0 + xp.abs(merit)))
            if not bool(bad.any()):
                break
            alpha = xp.where(bad, 0.5 * alpha, alpha)
        rho, pz, ph, Fv, merit = cand, pz_c, ph_c, F_c, m_c
    ok = xp.abs(Fv).max(axis=1) <= max(tol * 1e3, 1e-8) * scale
    return rho, ok


def sigmoid_scalar(p_f, k1, Y, w2o, tol, xp, max_iter=60, rho0=None):
    """ρ with ρ/w² + s(p_f + k1 ρ) − y = 0 for one sigmoid output: increasing in ρ, bracketed by
    [w²(y − 1), w² y]; safeguarded Newton (rtsafe): bisection when a step would leave the bracket or
    does not halve the previous step, so the bracket at least halves every other iteration. An
    example stays where it is once it has converged (the batch iterates until every one has)."""
    lo, hi = w2o * (Y - 1.0), w2o * Y
    rho = xp.zeros_like(Y) if rho0 is None else xp.clip(rho0, lo, hi)
    scale = 1.0 + float(xp.abs(Y).max()) if Y.shape[0] else 1.0
    ok = xp.ones(Y.shape[0], dtype=bool)
    last = hi - lo  # the step before the previous one
    step = last
    for _ in range(max_iter):
        s = phi("sigmoid", p_f + k1 * rho, xp)
        Fv = rho / w2o + s - Y
        done = xp.abs(Fv) <= tol * scale
        if bool(done.all()):
            break
        lo = xp.where(Fv < 0, rho, lo)
        hi = xp.where(Fv > 0, rho, hi)
        new = rho - Fv / (1.0 / w2o + k1 * s * (1.0 - s))
        slow = xp.abs(new - rho) > 0.5 * xp.abs(last)
        bis = (new <= lo) | (new >= hi) | slow
        last = step
        new = xp.where(done, rho, xp.where(bis, 0.5 * (lo + hi), new))
        step = new - rho
        rho = new
    else:
        s = phi("sigmoid", p_f + k1 * rho, xp)
        ok = (xp.abs(rho / w2o + s - Y) <= max(tol * 1e3, 1e-8) * scale)[:, 0]
    return rho, ok
