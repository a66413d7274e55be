"""The parameters of a fused step (:mod:`.joint`, :mod:`.backprop`): views into one flat vector, their
gradients views into another, and which parameter sits on which edge of the chain.

With the parameters packed, the weight step θ ← θ − η g and the finiteness checks are one operation
on the flat vectors whatever the number of parameters; a name's array is ``params[name]``, a view that
an optimiser may update in place. A loaded state replaces those arrays: :meth:`FlatParams.is_packed`
then says False and the trainer packs again.
"""

from __future__ import annotations

import operator

import numpy as np

from ..lowering.chain import FeedForward


class FlatParams:
    """``params`` (name -> view of ``flat``) holding the values of ``P``, and ``gviews`` (name -> view of
    ``grad``), in the order of ``P``; ``offsets[name]`` = (start, stop) in the flat vectors."""

    def __init__(self, P: dict, xp):
        self.xp = xp
        names = list(P)
        sizes = [int(np.prod(P[k].shape)) for k in names]
        offs = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.size = int(offs[-1])
        self.flat, self.grad = xp.zeros(self.size), xp.zeros(self.size)
        self.params, self.gviews, self.offsets = {}, {}, {}
        for i, k in enumerate(names):
            shape = tuple(P[k].shape)
            lo, hi = int(offs[i]), int(offs[i + 1])
            self.offsets[k] = (lo, hi)
            self.params[k] = self.flat[lo:hi].reshape(shape)
            self.gviews[k] = self.grad[lo:hi].reshape(shape)
            self.params[k][...] = P[k]
        self._views = tuple(self.params.values())

    def is_packed(self, P: dict) -> bool:
        """Whether every array of P is still one of these views, in their order (a loaded state replaces
        them; the trainers' ``params`` is ``dict(params)``)."""
        return len(P) == len(self._views) and all(map(operator.is_, P.values(), self._views))

    def per_entry(self, values: dict, default: float = 0.0):
        """A flat vector (on ``xp``) holding ``values[name]`` on each entry of that parameter."""
        out = np.full(self.size, float(default))
        for k, v in values.items():
            lo, hi = self.offsets[k]
            out[lo:hi] = v
        return self.xp.asarray(out)


def edge_terms(net: FeedForward) -> list[tuple[str, str, int]]:
    """The chain's parameters on its edges: (name, "W" | "b", layer index k; −1 the output edge), in the
    order of the edges. ∂E/∂W of an edge with discord u and tail v is a product uᵀ v, ∂E/∂b is 1ᵀ u."""
    terms = []
    for k, e in list(enumerate(net.layers)) + [(-1, net.output)]:
        if k >= 0 and e.kind == "param" or k < 0 and e.fn == "linear" and e.param is not None:
            terms.append((e.param, "W", k))
        if e.bias is not None:
            terms.append((e.bias, "b", k))
    return terms


def fusable(net: FeedForward) -> bool:
    """Whether a fused step applies: every parameter on one edge (a parameter tied across edges takes
    the trainers' plain path, which adds the gradients of its edges)."""
    names = [t[0] for t in edge_terms(net)]
    return len(names) == len(set(names))


def edge_weight(net: FeedForward, k: int) -> float:
    """The weight of layer k's edge (−1: the output edge)."""
    return (net.layers[k] if k >= 0 else net.output).weight


__all__ = ["FlatParams", "edge_terms", "fusable", "edge_weight"]
