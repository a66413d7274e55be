"""Output-space solves shared by the chain piece solvers: the n_L-dimensional problem that remains once the
discords of a chain are eliminated (see :mod:`.chain`).

- :func:`newton`: F(ρ) = Λρ + ψ(q + Kρ) − t = 0 for a batch of (R × R) systems (sigmoid / softmax outputs,
  with sliding rows), damped Newton with per-example Armijo backtracking;
- :func:`sigmoid_scalar`: the scalar equation of one sigmoid output, safeguarded Newton (rtsafe).
"""

from __future__ import annotations

from ..lowering.chain import phi
from ..lowering.nonlinear import kernel

#: an example leaves the Newton loop once max|F| ≤ TIGHT · tol · scale, or after one more (polishing) step
#: taken from max|F| ≤ tol · scale that stays there: from within tol the quadratic convergence of Newton lands
#: at round-off, so every example ends at the root to round-off whatever the batch around it does
TIGHT = 1e-4
#: the Newton loop gathers the examples still iterating once they are at most this fraction of the batch
COMPACT = 0.6
#: Armijo backtracking: at most this many evaluations per Newton step (step lengths 1, 1/2, ..., 2^-29)
LINE_SEARCH = 30


def newton(fn, K, q, t, lam, n_out, n_slide, Y, tol, max_newton, xp, rho0=None):
    """Solve F(ρ) = Λρ + ψ(q + Kρ) − t = 0 (ψ = φ on the output rows, identity on sliding rows).

    Shapes: K (B, R, R) symmetric, q, t, lam (B, R) with R = n_out + n_slide, Y (B, n_out); returns
    (ρ (B, R), converged (B,) bool).

    Without sliding rows F(ρ) = ∇_z g(z) at z = q + Kρ for the convex g(z) = (z − q)ᵀK⁻¹(z − q)/(2w²) +
    CE(y, z), so Newton's direction descends g(ρ) = ρᵀKρ/(2w²) + CE(y, q + Kρ) and a per-example Armijo
    backtracking on g globalises it; with sliding rows the merit is ½‖F‖².

    The Newton matrix is Λ + Dψ K. Dφ is never formed: Dφ K_out comes from the structure of Dφ
    (:meth:`~sheafdsl.lowering.nonlinear.Kernel.jacobian_phi_mul`: diag(p) − ppᵀ for softmax, a diagonal
    for sigmoid), Λ is added on the diagonal in place. Each example iterates until its own F is at
    round-off (:data:`TIGHT`); an iteration computes the whole batch while more than :data:`COMPACT` of it
    is still iterating, and only those examples after that. A backtracking evaluates only the examples
    whose step was refused; a full step accepted costs the one evaluation that the next iteration needs.
    z = q + Kρ is carried along the step s (z − αKs): one product K s per iteration, which also gives the
    Armijo slope ∇g·(−s) = −(KF)·s = −F·(Ks) (K symmetric).
    """
    B, R = q.shape
    k = kernel(fn)
    rho = xp.zeros((B, R))
    if rho0 is not None:  # warm start of the output rows (sliding rows start at 0)
        rho[:, :n_out] = rho0
    scale = 1.0 + float(xp.abs(t).max()) if B else 1.0
    stop, tight = tol * scale, TIGHT * tol * scale
    ts = Y.sum(axis=1)  # Σ_j y_j per example (the softmax energy's)
    pz = q + xp.einsum("brs,bs->br", K, rho)
    ph, Fv, merit = _evaluate(k, pz, q, t, lam, n_out, n_slide, Y, rho, xp, ts)
    res = xp.abs(Fv).max(axis=1)
    act = xp.flatnonzero(~(res <= tight))  # NaN iterates (and ends not converged)
    for _ in range(max_newton):
        na = act.shape[0]
        if na == 0:
            break
        whole = na > COMPACT * B  # compute every example (the settled ones' results are not used)
        sub = (lambda a: a) if whole else (lambda a: a[act])
        Ka, Fa, la, ra, ma, pa = sub(K), sub(Fv), sub(lam), sub(rho), sub(merit), sub(pz)
        qa, ta, Ya, tsa = sub(q), sub(t), sub(Y), sub(ts)
        Jac = _newton_matrix(k, sub(ph), Ka, la, n_out, n_slide, xp)
        step = xp.linalg.solve(Jac, Fa[..., None])[..., 0]
        Ks = xp.einsum("brs,bs->br", Ka, step)  # z moves by −α K s along the step
        if n_slide == 0:
            slope = -xp.einsum("br,br->b", Fa, Ks)  # ∇g·(−s) = −(K F)·s, K symmetric
        else:
            slope = -(Fa ** 2).sum(axis=1)
        cand, pz_c = ra - step, pa - Ks
        ph_c, F_c, m_c = _evaluate(k, pz_c, qa, ta, la, n_out, n_slide, Ya, cand, xp, tsa)
        bad = xp.flatnonzero(~_armijo(m_c, ma, slope, 1.0, xp))
        alpha = None
        for _ in range(LINE_SEARCH - 1):  # halve the refused examples' steps, re-evaluate only them
            if bad.shape[0] == 0:
                break
            if alpha is None:
                alpha = xp.ones(ra.shape[0])
            alpha[bad] *= 0.5
            ab = alpha[bad, None]
            cb, zb = ra[bad] - ab * step[bad], pa[bad] - ab * Ks[bad]
            e = _evaluate(k, zb, qa[bad], ta[bad], la[bad], n_out, n_slide, Ya[bad], cb, xp, tsa[bad])
            cand[bad], pz_c[bad], ph_c[bad], F_c[bad], m_c[bad] = cb, zb, *e
            bad = bad[~_armijo(e[2], ma[bad], slope[bad], alpha[bad], xp)]
        new_res = xp.abs(F_c).max(axis=1)
        if na == B:
            polished = res <= stop
            rho, pz, ph, Fv, merit, res = cand, pz_c, ph_c, F_c, m_c, new_res
        else:
            if whole:
                cand, pz_c, ph_c, F_c, m_c, new_res = (a[act] for a in (cand, pz_c, ph_c, F_c, m_c, new_res))
            polished = res[act] <= stop
            rho[act], pz[act], ph[act], Fv[act], merit[act], res[act] = cand, pz_c, ph_c, F_c, m_c, new_res
        done = (new_res <= tight) | (polished & (new_res <= stop))
        act = act[~done]
    ok = res <= max(tol * 1e3, 1e-8) * scale
    return rho, ok


def _armijo(m_new, m_old, slope, alpha, xp):
    """The sufficient-decrease test of the merit (with a round-off allowance)."""
    return m_new <= m_old + 1e-4 * alpha * slope + 1e-13 * (1.0 + xp.abs(m_old))


def _evaluate(k, pz, q, t, lam, n_out, n_slide, Y, rho, xp, ts):
    """(φ(z_out), F(ρ), merit) per example at ρ and its z = q + Kρ (``pz``), ``ts`` = Σ_j Y_j; one exponential
    for softmax."""
    ph, ce = k.phi_energy(xp, pz[:, :n_out], Y, ts)
    psi = ph if n_slide == 0 else xp.concatenate([ph, pz[:, n_out:]], axis=1)
    Fv = lam * rho + psi - t
    if n_slide == 0:
        merit = 0.5 * lam[:, 0] * xp.einsum("br,br->b", rho, pz - q) + ce
    else:
        merit = 0.5 * (Fv ** 2).sum(axis=1)
    return ph, Fv, merit


def _newton_matrix(k, p, K, lam, n_out, n_slide, xp):
    """Λ + Dψ K (B, R, R): Dφ K on the output rows from the structure of Dφ at p = φ(z_out), the rows of K
    on the sliding rows (ψ is the identity there), Λ added to the diagonal in place."""
    R = lam.shape[1]
    top = k.jacobian_phi_mul(xp, p, K[:, :n_out, :])
    J = top if n_slide == 0 else xp.concatenate([top, K[:, n_out:, :]], axis=1)
    J = xp.ascontiguousarray(J)  # (fresh and contiguous already: no copy) so that the diagonal is a strided view
    J.reshape(J.shape[0], R * R)[:, :: R + 1] += lam
    return J


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
