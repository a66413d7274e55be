"""The baseline: standard backpropagation on the same feed-forward network, in NumPy.

The objective is the mean over the batch of the output edge's energy at the forward pass,

    L(θ) = mean_i w_o² ℓ(p_i, y_i),   ℓ = ½‖y − p‖² (linear output) | CE(y, φ(z)) (sigmoid/softmax),

which is what the sheaf residual R(θ) = E(c*) becomes when every internal discord is forced to zero.
Gradients by the chain rule through every layer (the global computation the sheaf rule avoids):
:func:`backprop_gradients` for any feed-forward chain, and :class:`BackpropFlow`, the same step fused on
buffers allocated once, which the backprop trainer takes whenever every parameter sits on one edge.
"""

from __future__ import annotations

import functools

import numpy as np

from ..lowering.backend import fused
from ..lowering.chain import FeedForward, apply, apply_T, layer_gate, out_linear, output_energy, phi
from ..lowering.nonlinear import kernel
from .flat import FlatParams, edge_terms, fusable


def backprop_gradients(net: FeedForward, P, X, Y, xp=np):
    """(per-example output energy (B,), prediction, gradient dict of the batch-mean energy)."""
    layers = net.layers
    V = [X]
    gates = {}
    for k, layer in enumerate(layers):
        v = V[-1]
        if layer.kind in ("relu", "nonlinear"):  # 1[v ≥ 0], or φ'(v) for tanh, gelu, ...
            gates[k] = layer_gate(layer, v, xp)
        V.append(apply(layer, P, v, gates.get(k)))
    B = X.shape[0]
    out = net.output
    e, disc, pred = output_energy(net, P, V[-1], Y, xp)
    w2 = out.weight ** 2
    grads: dict = {}

    def acc(name, g):
        grads[name] = grads[name] + g if name in grads else g

    # dL/dv_m
    if out.fn == "linear":
        A, _ = out_linear(out, P)
        gp = (-w2 / B) * disc  # dL/dp
        if out.param is not None:
            acc(out.param, gp.T @ V[-1])
        if out.bias is not None:
            acc(out.bias, gp.sum(axis=0))
        g = gp @ A
    else:
        g = (-w2 / B) * disc  # w²(φ(z) − y)/B
    for k in range(len(layers) - 1, -1, -1):
        layer = layers[k]
        if layer.kind == "param":
            acc(layer.param, g.T @ V[k])
            if layer.bias is not None:
                acc(layer.bias, g.sum(axis=0))
        if k > 0:
            g = apply_T(layer, P, g[:, None, :], gates.get(k))[:, 0, :]
    for name in P:
        if name not in grads:
            grads[name] = xp.zeros_like(P[name])
    return e, pred, grads


class BackpropFlow:
    """:func:`backprop_gradients` as one fused step on buffers allocated once, for a chain whose every
    parameter sits on one edge (:func:`.flat.fusable`; a tied parameter takes the trainer's plain path).

    The same products in the same order (the tests hold the two to round-off), written with ``out=``
    into buffers (:class:`BackpropPlan`): the forward pass v_{k+1} = A_k v_k + b_k (σ ⊙ v for a ReLU,
    φ(v) for a smooth layer), the output discord r = y − p, then the chain rule backwards,
    g_m = −(w_o²/B) r A_o, ∂L/∂W_k = g_kᵀ v_k, ∂L/∂b_k = 1ᵀ g_k, g_{k−1} = g_k A_k (σ ⊙ g for a gate),
    into ``grad``, whose views ``gviews`` have the parameters' names. The parameters are views into
    ``flat`` (:class:`.flat.FlatParams`), so plain SGD's θ ← θ − η g is one operation.
    """

    fusable = staticmethod(fusable)

    def __init__(self, net: FeedForward, P: dict, xp, task_loss):
        self.net, self.xp, self.task_loss = net, xp, task_loss
        self.packed = FlatParams(P, xp)
        self.flat, self.grad = self.packed.flat, self.packed.grad
        self.params, self.gviews = self.packed.params, self.packed.gviews
        self.terms = edge_terms(net)
        self.free = [k for k in P if k not in {t[0] for t in self.terms}]  # on no edge: gradient 0

    def is_packed(self, P: dict) -> bool:
        return self.packed.is_packed(P)

    def bind(self, X, Y) -> "BackpropPlan":
        """The step of the batch (X, Y) (arrays it reads at every step: their memory is the batch)."""
        return BackpropPlan(self, X, Y)


class BackpropPlan:
    """One batch's backprop step (:class:`BackpropFlow`): its buffers and its operations, each bound to
    its arrays, run in order by :meth:`step` (which returns the batch's task loss at the forward pass
    with ``loss=True``, else None)."""

    def __init__(self, flow: BackpropFlow, X, Y):
        xp, net, P = flow.xp, flow.net, flow.params
        self.flow, self.X, self.Y = flow, X, Y
        layers, out = net.layers, net.output
        m, B = len(layers), X.shape[0]
        V = [X] + [xp.empty((B, l.d_out)) for l in layers]
        gate = {k: xp.empty((B, l.d_in)) for k, l in enumerate(layers) if l.kind in ("relu", "nonlinear")}
        D = xp.empty((B, out.d_out))  # r = y − p
        identity_out = out.fn == "linear" and out.param is None and out.bias is None and out.identity
        pred = V[m] if identity_out else xp.empty((B, out.d_out))
        self.pred = pred
        ones = xp.ones(B)
        f = fused(xp)
        ops = []
        for k, layer in enumerate(layers):  # the forward pass, keeping the gates
            v = V[k]
            if layer.kind == "relu":
                ops.append(functools.partial(xp.greater_equal, v, 0.0, out=gate[k], casting="unsafe"))
                ops.append(functools.partial(xp.maximum, v, 0.0, out=V[k + 1]))  # σ ⊙ v
            elif layer.kind == "nonlinear":
                kern = kernel(layer.map.fn)
                ops.append(functools.partial(_into, gate[k], kern.dphi, xp, v, layer.map.arg))
                ops.append(functools.partial(_into, V[k + 1], kern.phi, xp, v, layer.map.arg))
            else:
                A = P[layer.param] if layer.kind == "param" else xp.asarray(layer.matrix)
                ops.extend(f.affine(v, A, None if layer.bias is None else P[layer.bias], V[k + 1]))
        c = -(out.weight ** 2) / B
        gv = flow.gviews
        if out.fn == "linear":
            A_o, b_o = out_linear(out, P)
            if not identity_out:
                ops.extend(f.affine(V[m], xp.asarray(A_o), b_o, pred))
            ops.append(functools.partial(xp.subtract, Y, pred, out=D))
            gp = xp.empty((B, out.d_out))
            ops.append(functools.partial(xp.multiply, D, c, out=gp))  # dL/dp
            if out.param is not None:
                ops.append(functools.partial(xp.dot, gp.T, V[m], out=gv[out.param]))
            if out.bias is not None:
                ops.append(functools.partial(xp.dot, ones, gp, out=gv[out.bias]))
            if out.identity and out.param is None:  # gp @ I is gp
                g = gp
            else:
                g = xp.empty((B, out.d_in))
                ops.extend(f.product(gp, xp.asarray(A_o), g))
        else:
            ops.append(functools.partial(_into, pred, phi, out.fn, V[m], xp))
            ops.append(functools.partial(xp.subtract, Y, pred, out=D))
            g = xp.empty((B, out.d_in))
            ops.append(functools.partial(xp.multiply, D, c, out=g))  # w²(φ(z) − y)/B
        for k in range(m - 1, -1, -1):  # the chain rule backwards
            layer = layers[k]
            if layer.kind == "param":
                ops.append(functools.partial(xp.dot, g.T, V[k], out=gv[layer.param]))
                if layer.bias is not None:
                    ops.append(functools.partial(xp.dot, ones, g, out=gv[layer.bias]))
            if k > 0:
                nxt = xp.empty((B, layer.d_in))
                if layer.kind in ("relu", "nonlinear"):
                    ops.append(functools.partial(xp.multiply, g, gate[k], out=nxt))
                else:
                    A = P[layer.param] if layer.kind == "param" else xp.asarray(layer.matrix)
                    ops.extend(f.product(g, A, nxt))
                g = nxt
        for name in flow.free:
            ops.append(functools.partial(gv[name].fill, 0.0))
        self.ops = tuple(ops)
        self.state = ()  # what a step moves besides the parameters: nothing

    def step(self, loss: bool = True) -> float | None:
        for op in self.ops:
            op()
        return self.flow.task_loss(self.pred, self.Y) if loss else None


def _into(buf, fn, *args):
    """buf[...] = fn(*args): a registry nonlinearity (which returns a new array) into its buffer."""
    buf[...] = fn(*args)
