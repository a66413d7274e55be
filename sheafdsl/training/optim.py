"""Optimisers on dicts of arrays: sgd, momentum (heavy ball), adam. State exports for exact resume.

Each takes a gradient dict and updates the parameter dict in place:

- sgd:      θ ← θ − η g
- momentum: v ← μ v + g;  θ ← θ − η v
- adam:     m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²;  θ ← θ − η m̂ / (√v̂ + ε), with bias
  corrections m̂ = m / (1 − β1^t), v̂ = v / (1 − β2^t) (Kingma & Ba; β1 = 0.9, β2 = 0.999, ε = 1e-8).

The step size η of step t (0-based) of a run of T steps follows a schedule (:func:`scheduled_lr`,
:data:`sheafdsl.options.LR_SCHEDULES`): ``constant`` η, or ``cosine`` η_t = η (1 + cos(π t / T)) / 2
(Loshchilov & Hutter's annealing without restarts, to 0: η at the first step, η/2 halfway).

>>> import numpy as np
>>> P = {"w": np.array([1.0, -2.0])}
>>> opt = make_optimizer("sgd", lr=0.5)
>>> opt.step(P, {"w": np.array([2.0, 2.0])}); P["w"]
array([ 0., -3.])

:meth:`Optimizer.step_flat` is the same update on parameters packed in one flat vector (a trainer's
:class:`~sheafdsl.training.flat.FlatParams`): a few operations on the whole vector instead of a few per
array, with the same arithmetic element by element (so the same numbers, bit for bit), the moments
packed alike (``m``/``v`` stay name -> array, views of the packed moments, so the state exports are the
same).
"""

from __future__ import annotations

import numpy as np

from ..errors import Diagnostic, SheafError
from ..options import LR_SCHEDULES, OPTIMIZERS


class Optimizer:
    name = "base"

    def __init__(self, lr: float):
        self.lr = float(lr)
        self.t = 0
        self.xp = np  # the array module that loaded state is put on
        self._flat = None  # (layout, views, packed moments, scratch) of step_flat

    def _like(self, a):
        return self.xp.asarray(np.array(a, copy=True))

    def step(self, params: dict, grads: dict) -> None:
        raise NotImplementedError

    def step_flat(self, flat, grad, layout) -> None:
        """:meth:`step` on packed parameters: ``flat`` (n,) and its gradient ``grad`` (n,) laid out as
        ``layout.offsets`` (name -> (start, stop)) and ``layout.params`` (name -> view) say; ``flat`` is
        updated in place and ``grad`` is used as scratch (overwritten)."""
        raise NotImplementedError

    def _packed(self, moments: tuple, layout, xp):
        """The flat buffers of the moment dicts ``moments`` (names of dict attributes) in the layout of the
        parameters, each dict's arrays views of its buffer (copied in when the dict holds arrays not yet
        packed: a loaded state, or steps by :meth:`step`), and whether they held nothing yet (the first
        step), plus a scratch vector: (buffers, first, scratch)."""
        got = self._flat  # dropped by step() and load_state_dict(), which replace the dicts' arrays
        if got is not None and got[0] is layout:
            return got[2], False, got[3]
        n = layout.flat.shape[0]
        first = all(not getattr(self, name) for name in moments)
        bufs, allviews = [], []
        for name in moments:
            old, buf, views = getattr(self, name), xp.zeros(n), {}
            for k, (lo, hi) in layout.offsets.items():
                views[k] = buf[lo:hi].reshape(layout.params[k].shape)
                if k in old:
                    views[k][...] = old[k]
            setattr(self, name, dict(views))
            bufs.append(buf)
            allviews.append(views)
        scratch = xp.empty(n)
        self._flat = (layout, allviews, bufs, scratch)
        return bufs, first, scratch

    def state_dict(self) -> dict:
        return {"t": np.asarray(self.t)}

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["t"])
        self._flat = None


class SGD(Optimizer):
    name = "sgd"

    def step(self, params, grads):
        self.t += 1
        for k, g in grads.items():
            params[k] -= self.lr * g

    def step_flat(self, flat, grad, layout):
        self.t += 1
        grad *= self.lr
        flat -= grad


class Momentum(Optimizer):
    name = "momentum"

    def __init__(self, lr, momentum=0.9):
        super().__init__(lr)
        self.mu = float(momentum)
        self.v: dict = {}

    def step(self, params, grads):
        self.t += 1
        self._flat = None
        for k, g in grads.items():
            v = self.v.get(k)
            v = g.copy() if v is None else self.mu * v + g
            self.v[k] = v
            params[k] -= self.lr * v

    def step_flat(self, flat, grad, layout):
        self.t += 1
        xp = self.xp
        (v,), first, _ = self._packed(("v",), layout, xp)
        if first:
            v[...] = grad
        else:
            v *= self.mu
            v += grad
        xp.multiply(v, self.lr, out=grad)
        flat -= grad

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
        self._flat = None
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

    def step_flat(self, flat, grad, layout):
        self.t += 1
        xp = self.xp
        c1 = 1.0 - self.b1 ** self.t
        c2 = 1.0 - self.b2 ** self.t
        step = self.lr * np.sqrt(c2) / c1
        (m, v), first, tmp = self._packed(("m", "v"), layout, xp)
        b1, b2 = self.b1, self.b2
        # the operations of step(), in its order, on the packed vectors
        if first:
            xp.multiply(grad, 1 - b1, out=m)
            xp.multiply(grad, 1 - b2, out=v)
            v *= grad
        else:
            m *= b1
            xp.multiply(grad, 1 - b1, out=tmp)
            m += tmp
            v *= b2
            xp.multiply(grad, 1 - b2, out=tmp)
            tmp *= grad
            v += tmp
        xp.sqrt(v, out=tmp)
        tmp += self.eps * np.sqrt(c2)
        xp.multiply(m, step, out=grad)
        grad /= tmp
        flat -= grad

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


def scheduled_lr(lr: float, t: int, steps: int, schedule: str = "constant") -> float:
    """The step size of step ``t`` (0-based) of ``steps``: ``lr``, or for ``cosine`` lr·(1 + cos(π t / steps)) / 2.

    >>> [round(scheduled_lr(0.01, t, 4, "cosine"), 6) for t in range(4)]
    [0.01, 0.008536, 0.005, 0.001464]
    """
    if schedule == "constant":
        return float(lr)
    if schedule == "cosine":
        return float(lr) * 0.5 * (1.0 + float(np.cos(np.pi * t / max(int(steps), 1))))
    raise SheafError(Diagnostic("E610", f"unknown lr_schedule `{schedule}`", hint="use one of: " + ", ".join(LR_SCHEDULES)))


def make_optimizer(name: str, lr: float, momentum: float = 0.9, xp=np) -> Optimizer:
    """One of :data:`sheafdsl.options.OPTIMIZERS`: sgd | momentum | adam."""
    opt = {"sgd": lambda: SGD(lr), "momentum": lambda: Momentum(lr, momentum), "adam": lambda: Adam(lr)}.get(name)
    if opt is not None:
        o = opt()
        o.xp = xp
        return o
    raise SheafError(Diagnostic("E610", f"unknown optimizer `{name}`", hint="use one of: " + ", ".join(OPTIMIZERS)))
