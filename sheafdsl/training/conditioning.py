r"""λ_min(L_free) of a network sheaf without assembling L_free: Lanczos on L_free⁻¹, batched.

With x and y pinned (the training pins) and the unit states fixed, the free stalks v_1..v_m of a
feed-forward chain (:class:`~sheafdsl.lowering.chain.FeedForward`) carry the quadratic form

    vᵀ L_free v = Σ_k w_k² ‖v_k − A_k v_{k−1}‖² + w_o² ‖B v_m‖²,   v_0 = 0,

with A_k = W_k (affine / linear), a constant matrix or diag σ_k (ReLU gate), and B the output
edge's map (A_o for a linear output, Dφ(z_m) for sigmoid / softmax, the linearisation of
:func:`sheafdsl.lowering.laplacian_matrix`). Write it as L_free = MᵀM + CᵀC: M (N × N,
(Mv)_k = w_k (v_k − A_k v_{k−1})) is block unitriangular up to the weights, so M⁻¹ is one forward
sweep through the chain and M⁻ᵀ one backward sweep, the sweeps of the exact fast phase; C = w_o B E_m
has only n_out rows. The output-space Woodbury identity then gives

    L_free⁻¹ = G₀ − Z S⁻¹ Zᵀ,   G₀ = M⁻¹M⁻ᵀ,   Z = G₀ Cᵀ (N × n_out),   S = I + C Z (n_out × n_out),

a product of two sweeps and a rank-n_out correction: O(N · width) per product, against the
O(N³) of a dense eigensolver (and the cost of assembling L_free per example).

λ_min(L_free) = 1 / λ_max(L_free⁻¹); the largest eigenvalue of L_free⁻¹ is its best-separated one,
so Lanczos (full reorthogonalisation, every example of the batch at once) finds it in a few dozen
products. An example stops when its Ritz residual |β_j s_j| ≤ ``tol`` · θ (θ the top Ritz value,
s its eigenvector's last entry): then some eigenvalue λ of L_free⁻¹ has |θ − λ| ≤ tol · θ, and
|θ − λ_max| ≤ |β_j s_j|² / gap once the start has converged on λ_max. A Ritz value never exceeds
λ_max, so 1/θ never undercuts λ_min(L_free); two top eigenvalues closer than tol · θ (a saturated
softmax output: L_free ≈ I + O(ε)) may be returned as either, an error of at most their gap.
An invariant subspace (β_j = 0) makes θ exact. At j = N the Krylov space is the whole
space, so the iteration always ends.
"""

from __future__ import annotations

import numpy as np

from ..lowering.chain import FeedForward, apply_T, dphi, forward, out_linear


def _gates(net: FeedForward, V, xp):
    """Per layer: the Jacobian diagonal at the vertex values V, the 0/1 ReLU gate 1[v_{k−1} ≥ 0] or φ'(v_{k−1})
    of a smooth layer (None for a linear layer)."""
    g = net.gates(V, xp)
    return [g.get(k) for k in range(len(net.layers))]


def _A(layer, P, v, gate):
    """A_k applied to a batch of row blocks v (B, R, d_in) -> (B, R, d_out)."""
    if layer.kind in ("relu", "nonlinear"):
        return v * gate[:, None, :]
    A = P[layer.param] if layer.kind == "param" else layer.matrix
    return v @ A.T


class FreeInverse:
    """L_free⁻¹ of a feed-forward network sheaf at fixed states, for a batch (see the module docstring).

    ``apply(x)``: x (B, R, N) -> L_free⁻¹ x, blockwise over the free stalks v_1..v_m (offsets
    ``self.offsets``). ``B`` (B, n_out, d_m): the output map per example.
    """

    def __init__(self, net: FeedForward, P, gates, Bmap, xp):
        self.net, self.P, self.gates, self.xp = net, P, gates, xp
        dims = [layer.d_out for layer in net.layers]
        self.offsets = np.concatenate([[0], np.cumsum(dims)]).astype(int)
        self.N = int(self.offsets[-1])
        w_o = net.output.weight
        self.C = w_o * Bmap  # (B, n_out, d_m)
        n_out = self.C.shape[1]
        Ct = xp.zeros((self.C.shape[0], n_out, self.N))
        Ct[:, :, self.offsets[-2]:] = self.C  # rows of C, as (B, n_out, N)
        self.Z = self._g0(Ct)  # (B, n_out, N): the rows of Zᵀ = C G₀
        S = xp.eye(n_out) + self.C @ xp.swapaxes(self.Z[:, :, self.offsets[-2]:], 1, 2)
        self.Sinv = xp.linalg.inv(S)

    def _blocks(self, x):
        o = self.offsets
        return [x[:, :, o[k]:o[k + 1]] for k in range(len(o) - 1)]

    def _g0(self, x):
        """G₀ x = M⁻¹ M⁻ᵀ x: a backward sweep (Mᵀ u = x), then a forward sweep (M v = u)."""
        xp, layers, P, gates = self.xp, self.net.layers, self.P, self.gates
        g = self._blocks(x)
        m = len(layers)
        u = [None] * m
        for k in range(m - 1, -1, -1):  # (Mᵀu)_k = w_k u_k − w_{k+1} A_{k+1}ᵀ u_{k+1}
            rhs = g[k] if k == m - 1 else g[k] + layers[k + 1].weight * apply_T(layers[k + 1], P, u[k + 1], gates[k + 1])
            u[k] = rhs / layers[k].weight
        v = []
        for k in range(m):  # v_k = u_k / w_k + A_k v_{k−1}, v_{-1} = 0 (the pinned input)
            vk = u[k] / layers[k].weight
            if k > 0:
                vk = vk + _A(layers[k], P, v[-1], gates[k])
            v.append(vk)
        return xp.concatenate(v, axis=2)

    def apply(self, x):
        """L_free⁻¹ x = G₀x − Z S⁻¹ Zᵀ x (x: (B, R, N))."""
        Zt_x = x @ self.xp.swapaxes(self.Z, 1, 2)  # (B, R, n_out): Zᵀx for each row of x
        return self._g0(x) - (Zt_x @ self.xp.swapaxes(self.Sinv, 1, 2)) @ self.Z


def lanczos_max(apply, B: int, N: int, xp, tol: float = 1e-10, seed: int = 0):
    """The largest eigenvalue of each of B symmetric positive definite N × N operators.

    ``apply(q)`` maps (B, N) to (B, N). Lanczos with full reorthogonalisation, all B at once, from
    a seeded random start; an example stops when its Ritz residual is ≤ ``tol`` times its top
    Ritz value (see the module docstring). Returns a (B,) numpy array.
    """
    rng = np.random.default_rng(seed)
    q = xp.asarray(rng.standard_normal((B, N)))
    q = q / xp.linalg.norm(q, axis=1, keepdims=True)
    Q = [q]
    alphas, betas = [], []
    theta = np.full(B, np.nan)
    done = np.zeros(B, dtype=bool)
    for j in range(N):
        w = apply(Q[-1])
        a = (w * Q[-1]).sum(axis=1)
        alphas.append(a)
        Qm = xp.stack(Q, axis=1)  # (B, j+1, N)
        for _ in range(2):  # full reorthogonalisation, twice (Kahan: twice is enough)
            w = w - xp.einsum("bj,bjn->bn", xp.einsum("bjn,bn->bj", Qm, w), Qm)
        b = xp.linalg.norm(w, axis=1)
        T = np.zeros((B, j + 1, j + 1))
        T[:, range(j + 1), range(j + 1)] = np.stack([np.asarray(_host(v)) for v in alphas], axis=1)
        if j:
            off = np.stack([np.asarray(_host(v)) for v in betas], axis=1)
            T[:, range(j), range(1, j + 1)] = off
            T[:, range(1, j + 1), range(j)] = off
        evals, evecs = np.linalg.eigh(T)
        top = evals[:, -1]
        resid = np.abs(_host(b) * evecs[:, -1, -1])
        theta = np.where(done, theta, top)
        scale = np.maximum(np.abs(top), np.finfo(float).tiny)
        done |= resid <= tol * scale
        if done.all() or j == N - 1:
            break
        bh = _host(b)
        safe = xp.asarray(np.where(bh > 0, bh, 1.0))
        nxt = w / safe[:, None]
        nxt = xp.where(xp.asarray(bh > 0)[:, None], nxt, 0.0)  # an invariant subspace: the example is done
        betas.append(b)
        Q.append(nxt)
    return theta


def _host(a) -> np.ndarray:
    get = getattr(a, "get", None)
    return np.asarray(get() if get is not None else a, dtype=float)


def lambda_min_free(net: FeedForward, P, X, xp=np, tol: float = 1e-10) -> np.ndarray:
    """λ_min(L_free) per example at each example's forward-pass states (X: (B, d_x)) -> (B,) numpy.

    The states are those of :meth:`sheafdsl.training.trainers.Trainer.lambda_min_sample`: ReLU gates
    1[z ≥ 0] and the output nonlinearity linearised at the forward pass.
    """
    X = xp.asarray(X, dtype=float)
    B = X.shape[0]
    if not net.layers or B == 0:
        return np.full(B, np.inf)
    V = forward(net, P, X, xp)
    out = net.output
    if out.fn == "linear":
        A, _ = out_linear(out, P)
        Bmap = xp.broadcast_to(xp.asarray(A, dtype=float), (B, *A.shape))
    else:
        Bmap = dphi(out.fn, V[-1], xp)
    op = FreeInverse(net, P, _gates(net, V, xp), Bmap, xp)
    top = lanczos_max(lambda q: op.apply(q[:, None, :])[:, 0, :], B, op.N, xp, tol=tol)
    return 1.0 / top


__all__ = ["FreeInverse", "lanczos_max", "lambda_min_free"]
