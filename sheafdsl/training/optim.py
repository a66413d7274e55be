"""Optimisers on dicts of arrays: sgd, momentum (heavy ball), adam. State exports for exact resume.

Each takes a gradient dict and updates the parameter dict in place:

- sgd:      θ ← θ − η g
- momentum: v ← μ v + g;  θ ← θ − η v
- adam:     m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²;  θ ← θ − η m̂ / (√v̂ + ε), with bias
  corrections m̂ = m / (1 − β1^t), v̂ = v / (1 − β2^t) (Kingma & Ba; β1 = 0.9, β2 = 0.999, ε = 1e-8).

>>> import numpy as np
>>> P = {"w": np.array([1.0, -2.0])}
>>> opt = make_optimizer("sgd", lr=0.5)
>>> opt.step(P, {"w": np.array([2.0, 2.0])}); P["w"]
array([ 0., -3.])
"""

from __future__ import annotations

import numpy as np

from ..errors import Diagnostic, SheafError
from ..options import OPTIMIZERS


class Optimizer:
    name = "base"

    def __init__(self, lr: float):
        self.lr = float(lr)
        self.t = 0
        self.xp = np  # the array module that loaded state is put on

    def _like(self, a):
        return self.xp.asarray(np.array(a, copy=True))

    def step(self, params: dict, grads: dict) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"t": np.asarray(self.t)}

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["t"])


class SGD(Optimizer):
    name = "sgd"

    def step(self, params, grads):
        self.t += 1
        for k, g in grads.items():
            params[k] -= self.lr * g


class Momentum(Optimizer):
    name = "momentum"

    def __init__(self, lr, momentum=0.9):
        super().__init__(lr)
        self.mu = float(momentum)
        self.v: dict = {}

    def step(self, params, grads):
        self.t += 1
        for k, g in grads.items():
            v = self.v.get(k)
            v = g.copy() if v is None else self.mu * v + g
            self.v[k] = v
            params[k] -= self.lr * v

    def state_dict(self):
        out = super().state_dict()
        out.update({f"v.{k}": _host(v) for k, v in self.v.items()})
        return out

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.v = {k[2:]: self._like(v) for k, v in state.items() if k.startswith("v.")}


class Adam(Optimizer):
    name = "adam"

    def __init__(self, lr, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(lr)
        self.b1, self.b2, self.eps = beta1, beta2, eps
        self.m: dict = {}
        self.v: dict = {}

    def step(self, params, grads):
        self.t += 1
        c1 = 1.0 - self.b1 ** self.t
        c2 = 1.0 - self.b2 ** self.t
        step = self.lr * np.sqrt(c2) / c1
        for k, g in grads.items():
            m = self.m.get(k)
            if m is None:
                m = (1 - self.b1) * g
                v = (1 - self.b2) * g * g
            else:
                m = self.b1 * m + (1 - self.b1) * g
                v = self.b2 * self.v[k] + (1 - self.b2) * g * g
            self.m[k], self.v[k] = m, v
            # θ −= η m̂/(√v̂ + ε) written with the bias corrections folded into the step
            params[k] -= step * m / (v ** 0.5 + self.eps * np.sqrt(c2))

    def state_dict(self):
        out = super().state_dict()
        out.update({f"m.{k}": _host(v) for k, v in self.m.items()})
        out.update({f"v.{k}": _host(v) for k, v in self.v.items()})
        return out

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.m = {k[2:]: self._like(v) for k, v in state.items() if k.startswith("m.")}
        self.v = {k[2:]: self._like(v) for k, v in state.items() if k.startswith("v.")}


def _host(a):
    get = getattr(a, "get", None)
    return np.array(get() if callable(get) else a, copy=True)


def make_optimizer(name: str, lr: float, momentum: float = 0.9, xp=np) -> Optimizer:
    """One of :data:`sheafdsl.options.OPTIMIZERS`: sgd | momentum | adam."""
    opt = {"sgd": lambda: SGD(lr), "momentum": lambda: Momentum(lr, momentum), "adam": lambda: Adam(lr)}.get(name)
    if opt is not None:
        o = opt()
        o.xp = xp
        return o
    raise SheafError(Diagnostic("E610", f"unknown optimizer `{name}`", hint="use one of: " + ", ".join(OPTIMIZERS)))
