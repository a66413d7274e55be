"""The output-space Newton solve of the chain (:func:`sheafdsl.solvers.output.newton`) against an independent
dense reference, and its per-example stopping.

The solve is F(ρ) = Λρ + ψ(q + Kρ) − t = 0 per example, ψ = φ (softmax or sigmoid) on the n_out output rows
and the identity on the sliding rows. The fast path never forms Dφ (diagonal plus rank 1 for softmax),
iterates only the examples still moving and backtracks only the refused ones; the reference below is the
textbook method, one example at a time: the dense Jacobian Λ + Dψ(z) K with Dφ from
``kernel.jacobian(z)``, ``np.linalg.solve``, backtracking on ½‖F‖², run until F is at round-off.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sheafdsl.lowering.nonlinear import kernel
from sheafdsl.solvers.output import newton

TOL = 1e-10


def problem(seed, B, n_out, n_slide, fn, w, spread):
    """A batch of random, well-posed output problems: K = I + GGᵀ (symmetric positive definite, as the
    chain's K = Σ_k J_k J_kᵀ / w_k² with the identity seed of the output vertex), Λ = 1/w² on the output
    rows and 0 on the sliding rows, targets one-hot (softmax) or 0/1 (sigmoid) on the output rows."""
    rng = np.random.default_rng(seed)
    R = n_out + n_slide
    G = spread * rng.normal(size=(B, R, R))
    K = np.eye(R) + G @ G.transpose(0, 2, 1)
    q = spread * rng.normal(size=(B, R))
    lam = np.zeros((B, R))
    lam[:, :n_out] = 1.0 / w ** 2
    t = np.zeros((B, R))
    if fn == "softmax":
        Y = np.eye(n_out)[rng.integers(0, n_out, B)]
    else:
        Y = rng.integers(0, 2, (B, n_out)).astype(float)
    t[:, :n_out] = Y
    t[:, n_out:] = rng.normal(size=(B, n_slide))
    return K, q, t, lam, Y


def residual(fn, K, q, t, lam, n_out, rho):
    z = q + np.einsum("brs,bs->br", K, rho)
    psi = np.concatenate([kernel(fn).phi(np, z[:, :n_out]), z[:, n_out:]], axis=1)
    return lam * rho + psi - t


def reference(fn, K, q, t, lam, n_out):
    """One example at a time: dense Newton on F with backtracking on ½‖F‖² (Newton's direction descends it
    wherever the Jacobian is regular), until the step is at round-off (at most 100 iterations); returns
    (ρ, max|F| per example)."""
    k = kernel(fn)
    B, R = q.shape
    out = np.zeros((B, R))
    for b in range(B):
        rho = np.zeros(R)

        def F(r):
            return residual(fn, K[b:b + 1], q[b:b + 1], t[b:b + 1], lam[b:b + 1], n_out, r[None])[0]

        f = F(rho)
        for _ in range(100):
            z = q[b] + K[b] @ rho
            D = np.eye(R)
            D[:n_out, :n_out] = k.jacobian(np, z[None, :n_out])[0]
            s = np.linalg.solve(np.diag(lam[b]) + D @ K[b], f)
            a = 1.0
            while True:
                cand = rho - a * s
                fc = F(cand)
                if fc @ fc <= (1 - 1e-4 * a) * (f @ f) or a < 1e-12:
                    break
                a *= 0.5
            rho, f = cand, fc
            if np.abs(a * s).max() <= 1e-16 * (1 + np.abs(rho).max()):  # at round-off
                break
        out[b] = rho
    return out, np.abs(residual(fn, K, q, t, lam, n_out, out)).max(axis=1)


cases = st.tuples(st.integers(0, 10_000), st.integers(1, 6), st.integers(2, 6), st.integers(0, 3),
                  st.sampled_from(["softmax", "sigmoid"]), st.sampled_from([0.3, 1.0, 3.0]),
                  st.sampled_from([0.1, 1.0, 3.0]), st.booleans())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases)
def test_newton_is_the_dense_reference_to_round_off(case):
    assume(_check_against_reference(case))


def test_a_large_batch_is_the_dense_reference_to_round_off():
    """A batch of 256 with 10 softmax classes, warm-started near the root (the digits case): the whole-batch
    iterations, then the compacted ones."""
    assert _check_against_reference((7, 256, 10, 0, "softmax", 1.0, 1.0, True))


def _check_against_reference(case):
    seed, B, n_out, n_slide, fn, w, spread, warm = case
    K, q, t, lam, Y = problem(seed, B, n_out, n_slide, fn, w, spread)
    ref, ref_res = reference(fn, K, q, t, lam, n_out)
    scale = 1.0 + np.abs(t).max()
    if not bool((ref_res <= 1e-13 * scale).all()):  # the reference itself did not reach round-off
        return False
    rho0 = None
    if warm:  # a warm start near the root, as the trainer's previous equilibrium
        rho0 = ref[:, :n_out] + 0.05 * np.random.default_rng(seed + 1).normal(size=(B, n_out))
    rho, ok = newton(fn, K, q, t, lam, n_out, n_slide, Y, TOL, 30, np, rho0)
    assert ok.all()
    # the root to round-off (not merely to the stopping tolerance 1e-10): ρ and F
    zmax = np.abs(q).max() + np.abs(K).max() * np.abs(ref).max()
    np.testing.assert_allclose(rho, ref, rtol=0, atol=1e-12 * (1 + np.abs(ref).max()) * (1 + zmax))
    assert np.abs(residual(fn, K, q, t, lam, n_out, rho)).max() <= 1e-10 * scale
    return True


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases)
def test_each_example_is_solved_as_if_alone(case):
    """Per-example stopping: an example's result does not depend on the batch around it (how many
    iterations the others need), so a subset re-solve by the driver returns the same ρ, to round-off
    (batched and single products may round differently)."""
    seed, B, n_out, n_slide, fn, w, spread, _ = case
    K, q, t, lam, Y = problem(seed, B, n_out, n_slide, fn, w, spread)
    rho, ok = newton(fn, K, q, t, lam, n_out, n_slide, Y, TOL, 30, np)
    for b in range(B):
        sl = slice(b, b + 1)
        alone, ok1 = newton(fn, K[sl], q[sl], t[sl], lam[sl], n_out, n_slide, Y[sl], TOL, 30, np)
        assert ok1[0] == ok[b]
        np.testing.assert_allclose(alone[0], rho[b], rtol=0, atol=1e-12 * (1 + np.abs(rho[b]).max()))


def test_a_shared_k_and_an_exact_warm_start():
    """K broadcast from one matrix (the chain's rows before any gate) is read, never written; a warm start
    at the root takes no step; an empty batch returns empty arrays."""
    K, q, t, lam, Y = problem(3, 5, 4, 0, "softmax", 1.0, 1.0)
    Kb = np.broadcast_to(K[0], K.shape)
    rho, ok = newton("softmax", Kb, q, t, lam, 4, 0, Y, TOL, 30, np)
    ref, _ = reference("softmax", np.array(Kb), q, t, lam, 4)
    np.testing.assert_allclose(rho, ref, atol=1e-13)
    again, ok2 = newton("softmax", Kb, q, t, lam, 4, 0, Y, TOL, 0, np, rho)  # max_newton 0: no step at all
    assert ok2.all()
    np.testing.assert_array_equal(again, rho)
    e, eok = newton("softmax", K[:0], q[:0], t[:0], lam[:0], 4, 0, Y[:0], TOL, 30, np)
    assert e.shape == (0, 4) and eok.shape == (0,)


def test_an_unsolvable_iteration_budget_is_reported_not_converged():
    """With too few iterations from a far start, the examples that did not converge say so."""
    K, q, t, lam, Y = problem(11, 8, 5, 0, "softmax", 3.0, 3.0)
    _, ok = newton("softmax", K, q, t, lam, 5, 0, Y, TOL, 1, np)
    _, ok_full = newton("softmax", K, q, t, lam, 5, 0, Y, TOL, 30, np)
    assert ok_full.all() and not ok.all()



def test_backtracked_steps_move_z_with_rho():
    """Far cold starts (spread 3, w_o = 3: many full steps refused): the loop moves z = q + Kρ along each
    step as z − αKs instead of recomputing Kρ, so a halved step must move z by the halved Ks; ρ is the
    dense reference to round-off and F(ρ), recomputed from q + Kρ, is at the root."""
    for seed, n_slide in ((21, 0), (22, 2)):
        K, q, t, lam, Y = problem(seed, 64, 6, n_slide, "softmax", 3.0, 3.0)
        ref, ref_res = reference("softmax", K, q, t, lam, 6)
        keep = ref_res <= 1e-13 * (1.0 + np.abs(t).max())
        rho, ok = newton("softmax", K, q, t, lam, 6, n_slide, Y, TOL, 30, np)
        assert ok.all() and keep.sum() > 32
        zmax = np.abs(q).max() + np.abs(K).max() * np.abs(ref).max()
        np.testing.assert_allclose(rho[keep], ref[keep], rtol=0, atol=1e-12 * (1 + np.abs(ref).max()) * (1 + zmax))
        assert np.abs(residual("softmax", K, q, t, lam, 6, rho)).max() <= 1e-10 * (1.0 + np.abs(t).max())
