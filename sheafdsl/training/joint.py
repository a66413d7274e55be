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
zero discord), written into buffers allocated once per batch (:class:`JointPlan`, ``out=``):

- the step is a fixed sequence of operations bound once to their arrays (``functools.partial`` of a
  ufunc with ``out=``, or a BLAS update), so a step creates no arrays and makes no decisions; the
  forward pass that the reported loss needs starts from the discord's first product A_1 x + b_1
  instead of recomputing it;
- the stalks, the products T_k = A_k v_k + b_k and the discords are views into one packed vector
  each, so U = v − T is one subtraction for every edge, and so is v −= s w² U when the edges' weights
  are equal (the paper's: all 1);
- the stalk step is then one more fused in-place update per stalk (:func:`~sheafdsl.lowering.backend.fused`:
  BLAS axpy, ger, gemm on numpy), v_j += s w_{j+1}² A_{j+1}ᵀ U_{j+1}, instead of forming ∇_{v_j} E (a
  zero gradient still leaves a stalk exactly where it is);
- the parameters are views into one flat vector and their gradients views into another
  (:mod:`.flat`), so the gradient's sign, weight and β, and the weight step θ ← θ − dt g, are one
  operation each.
"""

from __future__ import annotations

import functools
import operator

import numpy as np

from ..lowering.backend import fused
from ..lowering.chain import FeedForward, forward, out_linear, phi, predict_from
from ..lowering.nonlinear import kernel
from .flat import FlatParams, edge_terms, edge_weight, fusable


class JointFlow:
    """The fused step (module docstring) for the chain ``net`` with parameters ``P``.

    :meth:`fusable` says whether it applies: every parameter on one edge (a parameter tied across
    edges takes the trainer's plain path). ``params`` are views into ``flat`` (:class:`.flat.FlatParams`).
    :meth:`bind` gives the step of one batch, a :class:`JointPlan` whose ``step()`` moves its stalks
    ``V`` = [v_1..v_m] in place, writes β Σ_i ∂E_i/∂θ into ``grad`` (views ``gviews``) and returns the
    batch's task loss at the forward pass (``task_loss(pred, Y)``; None with ``loss=False``: the forward
    pass is then not computed).
    """

    fusable = staticmethod(fusable)

    def __init__(self, net: FeedForward, P: dict, xp, alpha: float, beta: float, dt: float, task_loss):
        self.net, self.xp, self.task_loss = net, xp, task_loss
        self.fused = fused(xp)
        self.beta, self.step_size = float(beta), float(dt) * float(alpha)
        self.packed = FlatParams(P, xp)
        self.flat, self.grad = self.packed.flat, self.packed.grad
        self.params, self.gviews = self.packed.params, self.packed.gviews
        self.terms = edge_terms(net)
        # −w² β per entry: the gradient's sign, its edge's weight and β in one product (0 off the edges)
        self.scale = self.packed.per_entry({name: -edge_weight(net, k) ** 2 * self.beta for name, _, k in self.terms})
        self.free = [k for k in P if k not in {t[0] for t in self.terms}]  # on no edge: gradient 0

    def is_packed(self, P: dict) -> bool:
        """Whether every array of P is still one of this flow's views (a loaded state replaces them)."""
        return self.packed.is_packed(P)

    def bind(self, X, Y) -> "JointPlan":
        """The step of the batch (X, Y) (arrays it reads at every step: their memory is the batch)."""
        return JointPlan(self, X, Y)


class JointPlan:
    """One batch's step on buffers allocated once: ``V``, the stalks v_1..v_m (views into one packed
    vector, as the discords U and the products T = A v + b), and the sequence of operations, each bound
    to its arrays (``functools.partial`` of a ufunc with ``out=``, or a BLAS update of
    :func:`~sheafdsl.lowering.backend.fused`), run in order by :meth:`step`."""

    def __init__(self, flow: JointFlow, X, Y):
        xp, net, P = flow.xp, flow.net, flow.params
        self.flow, self.X, self.Y = flow, X, Y
        layers, out = net.layers, net.output
        m, B = len(layers), X.shape[0]
        self.m = m
        sizes = [B * l.d_out for l in layers]
        self._Vflat, self._Tflat, self._Uflat = xp.zeros(sum(sizes)), xp.empty(sum(sizes)), xp.empty(sum(sizes))
        offs = [0]
        for n in sizes:
            offs.append(offs[-1] + n)
        block = lambda a, k: a[offs[k]:offs[k + 1]].reshape(B, layers[k].d_out)  # noqa: E731
        self.V = [block(self._Vflat, k) for k in range(m)]
        T, U = [block(self._Tflat, k) for k in range(m)], [block(self._Uflat, k) for k in range(m)]
        self.T = T
        tails = [X] + self.V  # what edge k reads
        gate = {k: xp.empty((B, l.d_in)) for k, l in enumerate(layers) if l.kind in ("relu", "nonlinear")}
        self._F = [xp.empty((B, l.d_out)) for l in layers]  # the forward pass of the loss
        D = self.D = xp.empty((B, out.d_out))  # the output edge's discord
        ones = xp.ones(B)
        f = flow.fused
        ops = []
        # T_k = A_k v_k + b_k (as chain.apply computes it), the gates from the current stalks
        for k, layer in enumerate(layers):
            v = tails[k]
            if layer.kind == "relu":  # σ = 1[v ≥ 0] as 0./1. (for the pull below), σ ⊙ v as max(v, 0)
                ops.append(functools.partial(xp.greater_equal, v, 0.0, out=gate[k], casting="unsafe"))
                ops.append(functools.partial(xp.maximum, v, 0.0, out=T[k]))
            elif layer.kind == "nonlinear":
                ops.append(functools.partial(_nonlinear, xp, kernel(layer.map.fn), layer.map.arg, v, T[k], gate[k]))
            else:
                A = P[layer.param] if layer.kind == "param" else xp.asarray(layer.matrix)
                ops.extend(f.affine(v, A, None if layer.bias is None else P[layer.bias], T[k]))
        ops.append(functools.partial(xp.subtract, self._Vflat, self._Tflat, out=self._Uflat))  # U = v − T, all edges
        vm = self.V[m - 1]
        identity_out = out.fn == "linear" and out.param is None and out.bias is None and out.identity
        if identity_out:  # r = y − A_o v_m − b_o
            ops.append(functools.partial(xp.subtract, Y, vm, out=D))
        elif out.fn == "linear":
            A_o, b_o = out_linear(out, P)
            ops.extend(f.affine(vm, xp.asarray(A_o), b_o, D))
            ops.append(functools.partial(xp.subtract, Y, D, out=D))
        else:
            ops.append(functools.partial(_phi_discord, xp, out.fn, Y, vm, D))
        # the weight gradient at the current stalks, then its −w² β (one product)
        gv = flow.gviews
        for name, kind, k in flow.terms:
            u, vt = (U[k], tails[k]) if k >= 0 else (D, vm)
            ops.append(functools.partial(xp.dot, u.T, vt, out=gv[name]) if kind == "W"
                       else functools.partial(xp.dot, ones, u, out=gv[name]))
        for name in flow.free:
            ops.append(functools.partial(gv[name].fill, 0.0))
        ops.append(functools.partial(xp.multiply, flow.grad, flow.scale, out=flow.grad))
        # v_j ← v_j − dt α ∇_{v_j} E in place, the two terms of the gradient as two fused updates:
        # v_j −= s w_j² U_j (all stalks in one update when the edge weights are equal), then
        # v_j += s w_{j+1}² A_{j+1}ᵀ U_{j+1} (σ ⊙ U for a gate; ger/gemm for a map)
        s = flow.step_size
        w2 = [l.weight ** 2 for l in layers]
        if len(set(w2)) == 1:
            ops.append(f.axpy(-s * w2[0], self._Uflat, self._Vflat))
        else:
            ops.extend(f.axpy(-s * w2[j], U[j], self.V[j]) for j in range(m))
        for j in range(m):
            vj = self.V[j]
            if j + 1 < m:
                nxt = layers[j + 1]
                a = s * nxt.weight ** 2
                if nxt.kind in ("relu", "nonlinear"):
                    pull = xp.empty_like(vj)
                    ops.append(functools.partial(xp.multiply, U[j + 1], gate[j + 1], out=pull))
                    ops.append(f.axpy(a, pull, vj))
                else:
                    A = P[nxt.param] if nxt.kind == "param" else xp.asarray(nxt.matrix)
                    ops.append(f.gemm(a, U[j + 1], A, vj))
            else:
                a = s * out.weight ** 2
                if out.fn == "linear" and not identity_out:
                    ops.append(f.gemm(a, D, xp.asarray(out_linear(out, P)[0]), vj))
                else:
                    ops.append(f.axpy(a, D, vj))
        self.ops = tuple(ops)
        self.state = (self._Vflat,)  # what a step moves besides the parameters

    def holds(self, stalks) -> bool:
        """Whether ``stalks`` are this plan's own arrays (``V``)."""
        return len(stalks) == self.m and all(map(operator.is_, stalks, self.V))

    def load(self, stalks) -> list:
        """Copy ``stalks`` into ``V`` and return ``V``."""
        for v, s in zip(self.V, stalks):
            v[...] = s
        return self.V

    def step(self, loss: bool = True) -> float | None:
        for op in self.ops:
            op()
        return self.flow.task_loss(self._predict(), self.Y) if loss else None

    def _predict(self):
        """The forward pass's output (B, n_out) as :func:`~sheafdsl.lowering.chain.forward` computes it,
        its first layer taken from the discords' T[0] = A_1 x + b_1 (the same operations)."""
        flow = self.flow
        xp, net, P = flow.xp, flow.net, flow.params
        layers, F = net.layers, self._F
        v = xp.maximum(self.X, 0.0, out=F[0]) if layers[0].kind == "relu" else self.T[0]
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


def _nonlinear(xp, kern, arg, v, T, gate):
    """A smooth layer's T = φ(v) and its gate φ'(v), into their buffers."""
    gate[...] = kern.dphi(xp, v, arg)
    T[...] = kern.phi(xp, v, arg)


def _phi_discord(xp, fn, Y, vm, D):
    """The discord y − φ(v_m) of a sigmoid or softmax output, into D."""
    xp.subtract(Y, phi(fn, vm, xp), out=D)


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


__all__ = ["JointFlow", "JointPlan", "initial_stalks"]
