"""A feed-forward chain read from the IR: the structure fact that the chain solvers, the local update and
the backprop baseline share (one forward pass, the maps A_k and their transposes, the output energy).

Read from the IR edges (not from the ``network`` sugar): a chain x = v_0 → v_1 → … → v_m → ŷ whose
edges e_1..e_m each map their head by the identity and their tail by a linear map A_k (``affine``
W, b / ``linear`` W / a constant or scaled map / ``identity``), a ReLU gate diag(σ_k), or an
elementwise registry nonlinearity φ_k (tanh, gelu, softplus, sigmoid, leaky_relu: a "nonlinear" layer,
whose Jacobian diag(φ'_k) plays the gate's part in :func:`apply_T`), and whose
last edge (v_m → ŷ) is linear (squared-error energy) or ``sigmoid`` / ``softmax`` (cross-entropy
energy w²·CE(y, φ(z)), whose gradient in z is w²(φ(z) − y), as in the paper's code).

Shapes: a batch of B examples; v_k is (B, d_k); parameters are the arrays of ``P`` (name -> array).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ..errors import Diagnostic, SheafError
from ..ir import edges, pinned_stalks
from ..ir.maps import Constant, Identity, Nonlinear, ParamMap, ReluGate, Scaled
from ..nonlinearities import TASKS
from .backend import array_module
from . import maps
from .nonlinear import kernel


@dataclass
class Layer:
    """One edge e_k : v_{k−1} → v_k of the chain, discord v_k − A_k v_{k−1} − b_k."""

    name: str
    kind: str  # "param" (A = W), "fixed" (A = constant matrix), "relu" (A = diag σ), "nonlinear" (φ, smooth)
    tail: str
    head: str
    d_in: int
    d_out: int
    weight: float = 1.0
    param: str | None = None
    bias: str | None = None
    matrix: np.ndarray | None = None
    map: object = None  # the Nonlinear restriction map of a "nonlinear" layer


@dataclass
class Output:
    """The output edge v_m → ŷ: discord y − A v_m − b (linear) or y − φ(v_m) (sigmoid | softmax)."""

    name: str
    fn: str  # "linear" | "sigmoid" | "softmax"
    tail: str
    head: str
    d_in: int
    d_out: int
    weight: float = 1.0
    param: str | None = None
    bias: str | None = None
    matrix: np.ndarray | None = None

    @cached_property
    def identity(self) -> bool:
        m = self.matrix
        return m is not None and m.shape[0] == m.shape[1] and bool(np.array_equal(m, np.eye(m.shape[0])))


@dataclass
class FeedForward:
    """A network sheaf recognised from the IR: ``layers`` e_1..e_m, then ``output``."""

    input: str
    target: str
    layers: list[Layer]
    output: Output
    graph: object = field(default=None, repr=False, compare=False)  # the IR it was read from

    @cached_property
    def layout(self) -> dict:
        """stalk -> its slice of the cochain (the IR's offsets)."""
        return {v: slice(d["offset"], d["offset"] + d["dim"]) for v, d in self.graph.nodes(data=True)}

    @property
    def vertices(self) -> list[str]:
        return [self.input] + [l.head for l in self.layers]

    @cached_property
    def relu_layers(self) -> list[int]:
        return [k for k, l in enumerate(self.layers) if l.kind == "relu"]

    @cached_property
    def nonlinear_layers(self) -> list[int]:
        """The layers whose tail map is a registry nonlinearity other than the ReLU gate (tanh, gelu, ...)."""
        return [k for k, l in enumerate(self.layers) if l.kind == "nonlinear"]

    def gates(self, V, xp=np) -> dict:
        """The layer Jacobian diagonals at vertex values V: 1[v ≥ 0] for relu layers, φ'(v) for nonlinear
        ones (what :func:`apply_T` multiplies by)."""
        return {k: layer_gate(l, V[k], xp) for k, l in enumerate(self.layers) if l.kind in ("relu", "nonlinear")}

    @property
    def task(self) -> str:
        return TASKS["identity" if self.output.fn == "linear" else self.output.fn]


def layer_gate(layer: Layer, v, xp=np):
    """The Jacobian diagonal of a relu (1[v ≥ 0]) or nonlinear (φ'(v)) layer at its tail value v (B, d)."""
    if layer.kind == "relu":
        return (v >= 0).astype(v.dtype)
    return kernel(layer.map.fn).dphi(xp, v, layer.map.arg)


def _linear_src(m, d_v, name):
    """(kind, param, matrix) for a linear tail map; None when the map is not linear."""
    if isinstance(m, ParamMap):
        return "param", m.param, None
    if isinstance(m, (Identity, Scaled, Constant)):
        return "fixed", None, np.array(maps.matrix(m, d_v, {}), dtype=float)
    return None


def feedforward(G) -> FeedForward | None:
    """Recognise a feed-forward chain in the IR (see the module docstring), or return None.

    Requirements: exactly one stalk pinned to ``input`` and one to ``target`` (whole stalks), no other
    pins or soft pins, and a simple path input → … → target in which every edge maps its head by the
    identity, every non-output edge is linear or a ReLU gate, and the last edge is linear or a
    sigmoid/softmax.
    """
    ins, outs = pinned_stalks(G, "input"), pinned_stalks(G, "target")
    if len(ins) != 1 or len(outs) != 1:
        return None
    for v, d in G.nodes(data=True):
        for p in d["pins"]:
            if p.indices is not None or p.source == "value":
                return None
    x, y = ins[0], outs[0]
    by_tail: dict[str, list] = {}
    for u, v, name, d in edges(G):
        by_tail.setdefault(u, []).append((v, name, d))
    layers: list[Layer] = []
    seen = {x}
    cur = x
    nverts = G.number_of_nodes()
    while True:
        outgoing = by_tail.get(cur, [])
        if len(outgoing) != 1:
            return None
        v, name, d = outgoing[0]
        if G.in_degree(v) != 1 or v in seen or not isinstance(d["dst_map"], Identity):
            return None
        seen.add(v)
        d_in, d_out = G.nodes[cur]["dim"], G.nodes[v]["dim"]
        src = d["src_map"]
        if v == y:
            if isinstance(src, Nonlinear):
                if d.get("bias") is not None or d_in != d_out:
                    return None
                out = Output(name, src.fn, cur, v, d_in, d_out, d["weight"])
            else:
                lin = _linear_src(src, d_in, name)
                if lin is None:
                    return None
                out = Output(name, "linear", cur, v, d_in, d_out, d["weight"], lin[1], d.get("bias"), lin[2])
            break
        if isinstance(src, ReluGate):
            if d_in != d_out or d.get("bias") is not None:
                return None
            layers.append(Layer(name, "relu", cur, v, d_in, d_out, d["weight"]))
        elif isinstance(src, Nonlinear):
            if d_in != d_out or d.get("bias") is not None or kernel(src.fn).dphi is None:
                return None  # softmax inside the chain: not elementwise
            layers.append(Layer(name, "nonlinear", cur, v, d_in, d_out, d["weight"], map=src))
        else:
            lin = _linear_src(src, d_in, name)
            if lin is None:
                return None
            layers.append(Layer(name, lin[0], cur, v, d_in, d_out, d["weight"], lin[1], d.get("bias"), lin[2]))
        cur = v
    if len(seen) != nverts or G.number_of_edges() != len(layers) + 1 or y in by_tail:
        return None
    return FeedForward(x, y, layers, out, G)


# ----------------------------------------------------------------------------------------------
# maps


def apply(layer, P, v, gate=None):
    """A_k v_{k−1} + b_k (batched, v: (B, d_in)); ``gate`` (B, d) 0/1 for a relu layer; φ(v) for a
    nonlinear layer."""
    if layer.kind == "relu":
        return v * gate
    if layer.kind == "nonlinear":
        return kernel(layer.map.fn).phi(array_module(v), v, layer.map.arg)
    A = P[layer.param] if layer.kind == "param" else layer.matrix
    out = v @ A.T
    if layer.bias is not None:
        out += P[layer.bias]  # out is fresh
    return out


def apply_T(layer, P, g, gate=None):
    """A_kᵀ applied to row sensitivities g (B, R, d_out) -> (B, R, d_in); ``gate``: the layer's Jacobian
    diagonal (1[v ≥ 0] for relu, φ'(v) for a nonlinear layer, :meth:`FeedForward.gates`)."""
    if layer.kind in ("relu", "nonlinear"):
        return g * gate[:, None, :]
    A = P[layer.param] if layer.kind == "param" else layer.matrix
    return g @ A


def out_map(out: Output, P, vm):
    """A v_m + b for a linear output (v_m itself for an identity map without bias)."""
    if out.param is None and out.bias is None and out.identity:
        return vm
    A, b = out_linear(out, P)
    p = vm @ A.T
    return p if b is None else p + b


def out_linear(out: Output, P):
    A = P[out.param] if out.param is not None else out.matrix
    b = P[out.bias] if out.bias is not None else None
    return A, b


def _kernel(fn):
    """The registry numerics of an output map (the chain's "linear" output is the registry's identity)."""
    return kernel("identity" if fn == "linear" else fn)


def phi(fn, z, xp):
    """The output nonlinearity φ(z) (B, K) from the registry (the identity for ``linear``)."""
    return _kernel(fn).phi(xp, z)


def dphi(fn, z, xp, ph=None):
    """Dφ(z) as a batch of matrices (B, K, K); ``ph``: φ(z) when the caller has it."""
    k = _kernel(fn)
    if ph is not None and k.jacobian_phi is not None:
        return k.jacobian_phi(xp, ph)
    return k.jacobian(xp, z)


def phi_energy(fn, z, Y, xp):
    """(φ(z), CE(y, z)) per example from one evaluation (one exponential for softmax)."""
    return _kernel(fn).phi_energy(xp, z, Y)


def output_energy(net: FeedForward, P, vm, Y, xp=np):
    """(per-example output-edge energy, output discord, prediction) at v_m = ``vm``."""
    out = net.output
    w2 = out.weight ** 2
    if out.fn == "linear":
        p = out_map(out, P, vm)
        disc = Y - p
        return 0.5 * w2 * (disc ** 2).sum(axis=1), disc, p
    ph = phi(out.fn, vm, xp)
    return w2 * cross_entropy(out.fn, vm, Y, xp), Y - ph, ph


def cross_entropy(fn, z, Y, xp=np):
    """Per-example CE of logits z from the registry: softmax −Σ y log p; sigmoid Σ BCE (stable forms)."""
    k = _kernel(fn)
    if k.energy is None:
        raise SheafError(Diagnostic("E612", f"the output `{fn}` has no cross-entropy energy"))
    return k.energy(xp, z, Y)


def forward(net: FeedForward, P, X, xp=np):
    """The forward pass (the harmonic extension with only x pinned): vertex values [v_0..v_m]."""
    V = [X]
    for layer in net.layers:
        v = V[-1]
        V.append(xp.maximum(v, 0.0) if layer.kind == "relu" else apply(layer, P, v))
    return V


def predict(net: FeedForward, P, X, xp=np):
    """The network output at inference: A v_m + b (linear) or φ(v_m)."""
    return predict_from(net, P, forward(net, P, X, xp)[-1], xp)


def predict_from(net: FeedForward, P, vm, xp=np):
    """The output map at the last vertex value v_m: A v_m + b (linear) or φ(v_m)."""
    out = net.output
    if out.fn == "linear":
        return out_map(out, P, vm)
    return phi(out.fn, vm, xp)


def output_sensitivity(net: FeedForward, P, X, xp=np):
    """K per example at the forward pass (X: (B, d_x) -> (B,)): K = Σ_ℓ ‖J_ℓ‖² / w_ℓ², J_ℓ how the
    (single, linear) output row moves with the discord of edge ℓ. With the output edge's weight w_o,
    the two-sided residual is R = ½ r² / (1/w_o² + K) (docs/training.md, "What the rule minimises"), so
    the sheaf rule's step on an example is backprop's on ½ r² scaled by about 1 / (1/w_o² + K)."""
    V = forward(net, P, X, xp)
    m = len(net.layers)
    R = xp.ones((X.shape[0], 1, V[-1].shape[1]))
    K = (R ** 2).sum(axis=(1, 2)) / net.layers[m - 1].weight ** 2
    for k in range(m - 1, 0, -1):
        layer = net.layers[k]
        gate = layer_gate(layer, V[k], xp) if layer.kind in ("relu", "nonlinear") else None
        R = apply_T(layer, P, R, gate)
        K = K + (R ** 2).sum(axis=(1, 2)) / net.layers[k - 1].weight ** 2
    return K


def output_discord(net, P, vm, Y, xp):
    """y − A v_m − b (linear output) or y − φ(v_m): the output edge's discord (B, n_out)."""
    out = net.output
    if out.fn == "linear":
        return Y - out_map(out, P, vm)
    return Y - phi(out.fn, vm, xp)


def equilibrium_energy(net: FeedForward, P, V, U, Y, xp=np):
    """E(c) per example from the stalks V and chain discords U (output energy from V[m])."""
    e_out, _, _ = output_energy(net, P, V[-1], Y, xp)
    return e_out + sum(0.5 * layer.weight ** 2 * (u ** 2).sum(axis=1) for layer, u in zip(net.layers, U))


# ----------------------------------------------------------------------------------------------
# the heat equation (the local reference)


def energy_gradient(net: FeedForward, P, V, Y, xp=np):
    """(∇_{v_1..v_m} E, discords U, output discord, energy) at vertex values V, gates from the state."""
    layers = net.layers
    m = len(layers)
    gates = net.gates(V, xp)
    U = [V[k + 1] - apply(layers[k], P, V[k], gates.get(k)) for k in range(m)]
    grads = [layers[j - 1].weight ** 2 * U[j - 1] for j in range(1, m + 1)]
    for j in range(1, m):
        gU = layers[j].weight ** 2 * U[j]
        grads[j - 1] = grads[j - 1] - apply_T(layers[j], P, gU[:, None, :], gates.get(j))[:, 0, :]
    out = net.output
    e_out, disc, _ = output_energy(net, P, V[m], Y, xp)
    w2 = out.weight ** 2
    if out.fn == "linear":
        A, _ = out_linear(out, P)
        grads[m - 1] = grads[m - 1] - w2 * disc @ A
    else:
        grads[m - 1] = grads[m - 1] - w2 * disc  # w²(φ(z) − y)
    energy = e_out + sum(0.5 * layers[k].weight ** 2 * (U[k] ** 2).sum(axis=1) for k in range(m))
    return grads, U, disc, energy


def unsupported(G) -> SheafError:
    return SheafError(Diagnostic(
        "E612", f"`{G.graph.get('name', 'sheaf')}` is not a feed-forward network sheaf, and the training fast phase "
        "only handles those (a chain x -> ... -> y of affine/linear/relu/identity edges, then an identity, "
        "sigmoid or softmax output edge)",
        hint="`sheaf verify` explains which structural claim fails; `sheaf infer` solves general sheaves"))
