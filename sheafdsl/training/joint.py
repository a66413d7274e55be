"""The paper's joint Euler flow as one fused step on preallocated buffers.

For a feed-forward chain x = v_0 → v_1 → … → v_m → ŷ (edge weights w_k, the output edge w_o) and
stalks c = (v_1..v_m) per training example (rows: v_k is (B, d_k)), one step of size dt is

    U_k   = v_{k+1} − A_k v_k − b_k                  discords (gates σ = 1[v ≥ 0] from the current stalks)
    ∇_{v_j} E = w_{j−1}² U_{j−1} − A_jᵀ (w_j² U_j)     (the last stalk: − w_o² A_oᵀ r, r = y − A_o v_m − b_o;
                                                       w_o² (φ(v_m) − y) for a sigmoid or softmax output)
    v_j   ← v_j − dt·α ∇_{v_j} E
    θ     ← θ − dt·(β Σ_i ∂E_i/∂θ + ∂E_H/∂θ),  ∂E/∂W_k = −w_k² U_kᵀ v_k,  ∂E/∂b_k = −w_k² 1ᵀ U_k

with the weight gradient taken at the stalks before the step (the flow is simultaneous). These are
:func:`~sheafdsl.lowering.chain.energy_gradient` and the summed
:func:`~sheafdsl.training.update.local_gradients`, operation for operation (the tests hold the two to
round-off step by step; the discords bit for bit, so stalks started at the forward pass have exactly
zero discord), written into buffers allocated once per batch size (``out=``):

- no Python objects per step beyond the views it reuses; the forward pass that the reported loss
  needs starts from the discord's first product A_1 x + b_1 instead of recomputing it;
- the stalk step is two fused in-place updates per stalk (:func:`~sheafdsl.lowering.backend.fused`:
  BLAS axpy, ger, gemm on numpy), v_j −= s w_j² U_j and v_j += s w_{j+1}² A_{j+1}ᵀ U_{j+1}, instead of
  forming ∇_{v_j} E (a zero gradient still leaves a stalk exactly where it is);
- the parameters are views into one flat vector and their gradients views into another, so the
  gradient's sign, weight and β, and the weight step θ ← θ − dt g, are one operation each.
"""

from __future__ import annotations

import numpy as np

from ..lowering.backend import fused
from ..lowering.chain import FeedForward, forward, out_linear, phi, predict_from
from ..lowering.nonlinear import kernel


class JointFlow:
    """The fused step (module docstring) for the chain ``net`` with parameters ``P``.

    :meth:`fusable` says whether it applies: every parameter on one edge (a parameter tied across
    edges takes the trainer's plain path). ``params`` are views into ``flat``. ``step(V, X, Y)`` moves
    the batch's stalks ``V`` = [v_1..v_m] in place, writes β Σ_i ∂E_i/∂θ into ``grad`` (views
    ``gviews``) and returns the batch's task loss at the forward pass (``task_loss(pred, Y)``; None with
    ``loss=False``: the forward pass is then not computed).
    """

    @staticmethod
    def fusable(net: FeedForward) -> bool:
        out = net.output
        names = [l.param for l in net.layers if l.kind == "param"] + [l.bias for l in net.layers if l.bias]
        names += [n for n in (out.param, out.bias) if n is not None]
        return len(names) == len(set(names))

    def __init__(self, net: FeedForward, P: dict, xp, alpha: float, beta: float, dt: float, task_loss):
        self.net, self.xp, self.task_loss = net, xp, task_loss
        self.fused = fused(xp)
        self.beta, self.step_size = float(beta), float(dt) * float(alpha)
        names = list(P)
        sizes = [int(np.prod(P[k].shape)) for k in names]
        offs = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.flat, self.grad = xp.zeros(int(offs[-1])), xp.zeros(int(offs[-1]))
        self.params, self.gviews = {}, {}
        for i, k in enumerate(names):
            shape = tuple(P[k].shape)
            self.params[k] = self.flat[offs[i]:offs[i + 1]].reshape(shape)
            self.gviews[k] = self.grad[offs[i]:offs[i + 1]].reshape(shape)
            self.params[k][...] = P[k]
        # the gradient terms (parameter, "W" | "b", edge index; -1 the output edge) and −w² per entry
        self.terms = []
        scale = np.zeros(int(offs[-1]))
        edges = list(enumerate(net.layers)) + [(-1, net.output)]
        for k, e in edges:
            if k >= 0 and e.kind == "param" or k < 0 and e.fn == "linear" and e.param is not None:
                self.terms.append((e.param, "W", k))
            if e.bias is not None:
                self.terms.append((e.bias, "b", k))
        for name, _, k in self.terms:
            i = names.index(name)
            scale[offs[i]:offs[i + 1]] = -((net.layers[k] if k >= 0 else net.output).weight ** 2)
        self.free = [k for k in names if k not in {t[0] for t in self.terms}]  # on no edge: gradient 0
        self.scale = xp.asarray(scale)
        self._buffers: dict[int, dict] = {}

    def is_packed(self, P: dict) -> bool:
        """Whether every array of P is still one of this flow's views (a loaded state replaces them)."""
        return all(P.get(k) is v for k, v in self.params.items())

    def _buf(self, B: int) -> dict:
        b = self._buffers.get(B)
        if b is None:
            xp, layers = self.xp, self.net.layers
            b = {"U": [xp.empty((B, l.d_out)) for l in layers], "T": [xp.empty((B, l.d_out)) for l in layers],
                 "P": [xp.empty((B, l.d_in)) for l in layers],
                 "F": [xp.empty((B, l.d_out)) for l in layers], "ones": xp.ones(B),
                 "gate": {k: xp.empty((B, l.d_in)) for k, l in enumerate(layers) if l.kind == "relu"}}
            self._buffers[B] = b
        return b

    def step(self, V: list, X, Y, loss: bool = True) -> float | None:
        xp, net, P = self.xp, self.net, self.params
        layers, out = net.layers, net.output
        m = len(layers)
        b = self._buf(X.shape[0])
        U, T, gate = b["U"], b["T"], b["gate"]
        V = [X] + list(V)
        gates = {}
        for k, layer in enumerate(layers):  # U_k = v_{k+1} − A_k v_k − b_k, as chain.apply computes A_k v_k + b_k
            v = V[k]
            if layer.kind == "relu":
                g = gate[k]
                xp.greater_equal(v, 0.0, out=g, casting="unsafe")  # σ = 1[v ≥ 0] as 0./1.
                gates[k] = g
                xp.multiply(v, g, out=T[k])
            elif layer.kind == "nonlinear":
                kern = kernel(layer.map.fn)
                gates[k] = kern.dphi(xp, v, layer.map.arg)
                T[k][...] = kern.phi(xp, v, layer.map.arg)
            else:
                A = P[layer.param] if layer.kind == "param" else layer.matrix
                xp.matmul(v, A.T, out=T[k])
                if layer.bias is not None:
                    T[k] += P[layer.bias]
            xp.subtract(V[k + 1], T[k], out=U[k])
        loss = self.task_loss(self._predict(b, X), Y) if loss else None
        vm = V[m]
        if out.fn == "linear":  # r = y − A_o v_m − b_o
            if out.param is None and out.bias is None and out.identity:
                disc = Y - vm
            else:
                A_o, b_o = out_linear(out, P)
                p = vm @ A_o.T
                disc = Y - (p if b_o is None else p + b_o)
        else:
            disc = Y - phi(out.fn, vm, xp)
        # the weight gradient at the current stalks, then its −w² and β (one operation each)
        ones, gv = b["ones"], self.gviews
        for name, kind, k in self.terms:
            u, vt = (U[k], V[k]) if k >= 0 else (disc, vm)
            if kind == "W":
                xp.dot(u.T, vt, out=gv[name])
            else:
                xp.dot(ones, u, out=gv[name])
        for name in self.free:
            gv[name][...] = 0.0
        self.grad *= self.scale
        self.grad *= self.beta
        # v_j ← v_j − dt α ∇_{v_j} E in place, the two terms of the gradient as two fused updates:
        # v_j −= s w_j² U_j, then v_j += s w_{j+1}² A_{j+1}ᵀ U_{j+1} (σ ⊙ U for a gate; ger/gemm for a map)
        s, f = self.step_size, self.fused
        for j in range(m):
            vj = V[j + 1]
            f.axpy(-s * layers[j].weight ** 2, U[j], vj)
            if j + 1 < m:
                nxt = layers[j + 1]
                a = s * nxt.weight ** 2
                if nxt.kind in ("relu", "nonlinear"):
                    pull = b["P"][j + 1]
                    xp.multiply(U[j + 1], gates[j + 1], out=pull)
                    f.axpy(a, pull, vj)
                else:
                    f.gemm(a, U[j + 1], P[nxt.param] if nxt.kind == "param" else nxt.matrix, vj)
            else:
                a = s * out.weight ** 2
                if out.fn == "linear" and not (out.param is None and out.bias is None and out.identity):
                    f.gemm(a, disc, out_linear(out, P)[0], vj)
                else:
                    f.axpy(a, disc, vj)
        return loss

    def _predict(self, b, X):
        """The forward pass's output (B, n_out) as :func:`~sheafdsl.lowering.chain.forward` computes it,
        its first layer taken from the discords' T[0] = A_1 x + b_1 (the same operations)."""
        xp, net, P = self.xp, self.net, self.params
        layers, F = net.layers, b["F"]
        if layers[0].kind == "relu":
            v = xp.maximum(X, 0.0, out=F[0])
        else:
            v = b["T"][0]
        for k in range(1, len(layers)):
            layer = layers[k]
            if layer.kind == "relu":
                v = xp.maximum(v, 0.0, out=F[k])
            elif layer.kind == "nonlinear":
                v = kernel(layer.map.fn).phi(xp, v, layer.map.arg)
            else:
                A = P[layer.param] if layer.kind == "param" else layer.matrix
                v = xp.matmul(v, A.T, out=F[k])
                if layer.bias is not None:
                    v += P[layer.bias]
        return predict_from(net, P, v, xp)


def initial_stalks(net: FeedForward, P, X, how: str, seed: int, xp):
    """The stalks v_1..v_m (each (n, d)) of every training example at the start (or a re-start) of the
    flow: ``zeros``, the ``forward`` pass, or ``random`` (independent N(0, 1) entries, from ``seed``)."""
    V = forward(net, P, X, xp)[1:]
    if how == "forward":
        return [v.copy() for v in V]
    if how == "random":
        rng = np.random.default_rng([int(seed), 7])
        return [xp.asarray(rng.standard_normal(tuple(v.shape))) for v in V]
    return [xp.zeros_like(v) for v in V]


__all__ = ["JointFlow", "initial_stalks"]
