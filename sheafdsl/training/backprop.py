"""The baseline: standard backpropagation on the same feed-forward network, in NumPy.

The objective is the mean over the batch of the output edge's energy at the forward pass,

    L(θ) = mean_i w_o² ℓ(p_i, y_i),   ℓ = ½‖y − p‖² (linear output) | CE(y, φ(z)) (sigmoid/softmax),

which is what the sheaf residual R(θ) = E(c*) becomes when every internal discord is forced to zero.
Gradients by the chain rule through every layer (the global computation the sheaf rule avoids).
"""

from __future__ import annotations

import numpy as np

from ..lowering.chain import FeedForward, apply, apply_T, layer_gate, out_linear, output_energy


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
