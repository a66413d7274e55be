"""Trainers: ``sheaf`` (exact fast phase + local update), ``joint`` (the paper's rule), ``backprop``.

All three share the data, the initialisation (``init_params(G, config.seed)``), the mini-batch order
and the optimiser, so their numbers compare like for like.

- **sheaf.** Per step: pin x and y = target on the batch, solve the two-sided equilibrium c* (the
  fast phase: ``solver=exact`` by default, or ``diffusion``, the local heat equation), then the
  local update g_θ = mean_i ∂E_i/∂θ (c*) edge by edge (envelope theorem; no chain rule), plus the
  parameter sheaf's gradient (reluctance λθ, ties w²(θ_a − θ_b)); the optimiser applies g_θ.
- **joint.** The paper's simultaneous forward-Euler flow of stalks and weights:
  c ← c − dt·α ∇_c E,  θ ← θ − dt·(β Σ_i ∂E_i/∂θ + ∂E_H/∂θ) with β = 1/n_train by default, gates
  σ = 1[z ≥ 0] read from the current stalks, stalks warm-started across steps (one stored cochain
  per training example), starting at zero (``joint_init="zeros"``, which reproduces the peer's
  paraboloid numbers), at the forward pass (``"forward"``) or random (``"random"``), restarted at the
  forward pass every ``joint_reinit`` steps when that is > 0. The weights move by forward Euler with
  step ``dt`` (no optimiser; ``lr`` is not used). The fused step is :mod:`sheafdsl.training.joint`.
- **backprop.** Gradient of mean_i w_o² ℓ(p_i, y_i) at the forward pass by the chain rule, plus the
  parameter sheaf's gradient.

What the sheaf rule minimises. At a fixed ReLU pattern the residual is R = ½ rᵀ(I/w_o² + K)⁻¹ r,
r = y − f(x), K = Σ_k J_k J_kᵀ / w_k² (see :mod:`sheafdsl.solvers.chain`): not the squared error. As the
output edge's weight w_o → 0 (weak clamping) R → w_o²·½‖r‖² and the local update tends to backprop's
gradient times w_o² (optimisers like Adam are invariant to that scale); with w_o = 1 examples are
weighted by their sensitivity and R can also be lowered by inflating K (the later layers' weights).
The coupling w_o is part of the model (``edge out : z -> y identity weight 0.1``).

Losses reported by :meth:`Trainer.step` and :meth:`Trainer.evaluate` are task losses of the forward
pass (inference): MSE (mean over examples and outputs) for regression, mean binary cross-entropy,
mean cross-entropy.

Mini-batches: with ``batch=B`` step t uses the slice (t mod nb) of the permutation
``default_rng([seed, t // nb])`` of the training set (nb = ⌈n/B⌉): a pure function of the seed and
the step count, so a resumed run sees the same batches.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time

import numpy as np

from ..errors import Diagnostic, SheafError
from ..ir import INFERENCE, TRAINING, edges, free_indices
from ..options import TRAINERS as TRAINER_NAMES
from ..lowering import get_backend, init_params, to_numpy
from ..lowering.backend import block_rows
from ..lowering.chain import apply, energy_gradient, feedforward, forward, predict, unsupported
from ..solvers import solve
from ..solvers.chain import ChainPins, chain_equilibrium, chain_pins, stalks_cochain
from ..solvers.result import Warm
from .backprop import backprop_gradients
from .config import TrainConfig
from .data import Dataset, check_compatible
from .optim import make_optimizer
from .update import edge_gradients, local_gradients, parameter_sheaf_gradients


class StepAbandoned(KeyboardInterrupt):
    """A signal arrived inside a pure stretch of a step (a solve, :meth:`Trainer._pure`): the step is abandoned
    at once, and the trainer's state is still that of the last completed step (the run loop checkpoints it)."""


class SingularSystemError(SheafError):
    """The linear system of a step is numerically singular (E621): where, and what to do instead."""

    def __init__(self, step: int, trainer: str, what: str):
        self.step = int(step)
        super().__init__(Diagnostic(
            "E621", f"step {self.step} of the {trainer} trainer cannot be solved: its linear system is numerically "
                    f"singular ({what})",
            hint="very deep or very narrow networks make the equilibrium ill-conditioned: use fewer layers or wider "
                 "ones, add reluctance, or try --trainer backprop; the last checkpoint is kept"))


class DivergenceError(SheafError):
    """A NaN or infinity appeared: ``step`` (the step that produced it) and ``where`` (an edge or parameter)."""

    def __init__(self, step: int, where: str, what: str = "NaN or infinite values"):
        self.step = int(step)
        self.where = str(where)
        super().__init__(Diagnostic(
            "E620", f"training diverged at step {self.step}: {what} in {self.where}",
            hint="lower the learning rate (--lr) or the step dt, or add reluctance (weight decay) to the parameters"))


def task_loss(task: str, pred, Y, xp=np) -> float:
    """MSE (regression), mean BCE (binary; ``pred`` are probabilities) or mean CE (multiclass)."""
    if task == "regression":
        return float(((pred - Y) ** 2).mean())
    eps = 1e-12
    if task == "binary":
        p = xp.clip(pred, eps, 1 - eps)
        return float(-(Y * xp.log(p) + (1 - Y) * xp.log(1 - p)).mean())
    return float(-(Y * xp.log(xp.clip(pred, eps, 1.0))).sum(axis=1).mean())


def accuracy(task: str, pred, Y, xp=np) -> float:
    if task == "binary":
        return float(((pred >= 0.5) == (Y >= 0.5)).mean())
    return float((pred.argmax(axis=1) == Y.argmax(axis=1)).mean())


class Trainer:
    """Common machinery; subclasses implement :meth:`_gradients`."""

    name = "base"
    general_ok = False  # handles sheaves that are not feed-forward chains
    #: inside a pure stretch of a step (a solve, which changes no trainer state): the run loop's signal
    #: handler may then abandon the step at once, and the state is still that of the last completed step
    in_solve = False
    #: whether ``step(loss=False)`` saves work (the run loop then asks for the loss only on logged steps)
    lazy_loss = False
    #: set by the run loop's signal handler: the next pure stretch is not started (:class:`StepAbandoned`)
    stop_requested = False

    @contextlib.contextmanager
    def _pure(self):
        """Mark a stretch that changes no trainer state (see :attr:`in_solve`)."""
        if self.stop_requested:
            raise StepAbandoned
        old, self.in_solve = self.in_solve, True
        try:
            yield
        finally:
            self.in_solve = old

    def __init__(self, G, config: TrainConfig, data: Dataset, params: dict | None = None):
        self.G, self.config, self.data = G, config, data
        self.xp = xp = get_backend(config.backend)
        check_compatible(G, data)
        self.net = feedforward(G)
        if self.net is None and not self.general_ok:
            raise unsupported(G)
        init = params if params is not None else init_params(G, config.seed)
        self.params: dict = {k: xp.array(to_numpy(v), dtype=float) for k, v in init.items()}
        self.opt = make_optimizer(config.optimizer, self._step_size(), config.momentum, xp)
        self.step_count = 0
        self.Xtr, self.Ytr = xp.asarray(data.X_train, dtype=float), xp.asarray(data.Y_train, dtype=float)
        self.Xte, self.Yte = xp.asarray(data.X_test, dtype=float), xp.asarray(data.Y_test, dtype=float)
        self.n_train = self.Xtr.shape[0]
        self._perm_cache: tuple[int, np.ndarray] | None = None
        self._param_edge = {}
        for _, _, name, d in edges(G):
            for m in (d["src_map"], d["dst_map"]):
                if getattr(m, "param", None):
                    self._param_edge.setdefault(m.param, name)
            if d.get("bias"):
                self._param_edge.setdefault(d["bias"], name)

    # -- helpers -------------------------------------------------------------------------------

    def _step_size(self) -> float:
        return self.config.lr

    def _batch_indices(self, t: int):
        """Indices of step t's mini-batch (None: the full training set)."""
        B = self.config.batch
        n = self.n_train
        if B is None or B >= n:
            return None
        nb = -(-n // B)
        epoch, pos = divmod(t, nb)
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            self._perm_cache = (epoch, np.random.default_rng([self.config.seed, epoch]).permutation(n))
        return self.xp.asarray(self._perm_cache[1][pos * B:(pos + 1) * B])

    def _where(self, pname: str) -> str:
        e = self._param_edge.get(pname)
        return f"parameter `{pname}` (edge `{e}`)" if e else f"parameter `{pname}`"

    def _predict(self, X):
        return predict(self.net, self.params, X, self.xp)

    def _check_finite(self, loss: float, grads: dict) -> None:
        xp = self.xp
        step = self.step_count + 1
        if not np.isfinite(loss):
            raise DivergenceError(step, f"the loss on output edge `{self.net.output.name}`")
        if np.isfinite(sum(float(g.sum()) for g in grads.values())):
            return
        for k, g in grads.items():
            if not bool(xp.isfinite(g).all()):
                raise DivergenceError(step, "the gradient of " + self._where(k))

    def _check_packed(self, loss, grads: dict) -> None:
        """:meth:`_check_finite` of a step whose gradient is one flat vector (``flow.grad``; ``grads`` its
        views; ``loss`` None where the step did not compute it): one sum, then the search where it fails."""
        if (loss is None or math.isfinite(loss)) and math.isfinite(self.flow.grad.sum()):
            return
        self._check_finite(0.0 if loss is None else loss, grads)

    def _check_packed_params(self) -> None:
        """After a step on packed parameters (``flow.flat``): DivergenceError naming the first parameter
        that is not finite."""
        if not math.isfinite(self.flow.flat.sum()):
            for k, v in self.params.items():
                if not bool(self.xp.isfinite(v).all()):
                    raise DivergenceError(self.step_count, self._where(k))

    # -- the API -------------------------------------------------------------------------------

    def step(self, loss: bool = True) -> dict:
        """One optimisation step on the next mini-batch: {"loss", "consistent_fraction"} (``loss`` is for
        trainers with :attr:`lazy_loss`; this one always computes it)."""
        idx = self._batch_indices(self.step_count)
        X, Y = (self.Xtr, self.Ytr) if idx is None else (self.Xtr[idx], self.Ytr[idx])
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite values are reported below
            try:
                loss, cf, grads = self._gradients(X, Y, idx)
            except np.linalg.LinAlgError as exc:  # numerically singular: a property of the model, said plainly
                raise SingularSystemError(self.step_count + 1, self.name, str(exc)) from None
            for k, g in parameter_sheaf_gradients(self.G, self.params, self.xp).items():
                grads[k] = grads[k] + g
            self._check_finite(loss, grads)
            self.opt.step(self.params, grads)
        self.step_count += 1
        if not np.isfinite(sum(float(v.sum()) for v in self.params.values())):
            for k, v in self.params.items():
                if not bool(self.xp.isfinite(v).all()):
                    raise DivergenceError(self.step_count, self._where(k))
        return {"loss": loss, "consistent_fraction": cf}

    def _gradients(self, X, Y, idx):
        raise NotImplementedError

    def _start_warm(self) -> None:
        """Set up the per-example state that the first step leaves for the examples outside its batch (a
        trainer that keeps one); a no-op once it exists. A sharded run (:mod:`sheafdsl.distributed`) calls
        it on a shard none of whose examples are in a step's batch, so that shard's state is what one process
        would hold."""

    def evaluate(self, splits=("train", "test")) -> dict:
        """Task losses of the forward pass on ``splits``, with their MSE (regression) or accuracy:
        ``{"train_loss", "train_mse" | "train_accuracy", "test_loss", ...}``."""
        task = self.data.task
        out = {}
        data = {"train": (self.Xtr, self.Ytr), "test": (self.Xte, self.Yte)}
        for split in splits:
            X, Y = data[split]
            pred = self._predict(X)
            out[f"{split}_loss"] = task_loss(task, pred, Y, self.xp)
            if task == "regression":
                out[f"{split}_mse"] = out[f"{split}_loss"]
            else:
                out[f"{split}_accuracy"] = accuracy(task, pred, Y, self.xp)
        return out

    def equilibrium(self, X, Y):
        """The two-sided equilibrium (training pins) of a batch with the current parameters."""
        with self._pure():
            return self._equilibrium(X, Y)

    def _equilibrium(self, X, Y):
        xp = self.xp
        X, Y = xp.asarray(X, dtype=float), xp.asarray(Y, dtype=float)
        net = self.net
        warm = self._warm_for(X)
        if self.config.solver == "diffusion" and self.name == "sheaf":
            return self._heat(X, Y, warm)
        if warm is not None and net.relu_layers and not warm.S:
            warm = None  # stalks without unit states (the heat equation's): start at the forward pass
        return solve(net, self.params, {net.input: X, net.target: Y}, boundary=TRAINING, rtol=self.config.tol,
                     xp=xp, warm=warm).equilibrium

    def _warm_for(self, X):
        """The stored equilibria as a warm start when X is the start of the training set (the logging
        solves: the first rows of the training data), else None."""
        warm, B = getattr(self, "warm", None), X.shape[0]
        if not isinstance(warm, Warm) or warm.V is None or B > self.n_train:
            return None
        if not bool((X == self.Xtr[:B]).all()):
            return None
        return warm.take(self.xp.arange(B))

    def _heat(self, X, Y, warm=None):
        """The two-sided equilibrium by the heat equation (:mod:`sheafdsl.solvers.diffusion`, through the
        general operators), from ``warm`` (a chain's Warm) or the forward pass, as a chain Equilibrium."""
        from ..lowering.operators import SheafOperators

        net, xp = self.net, self.xp
        if getattr(self, "_ops", None) is None:
            self._ops = SheafOperators(self.G, self.params, xp)
        x0 = None if warm is None else stalks_cochain(net, [X] + list(warm.V[1:]), Y, xp)
        res = solve(self._ops.with_params(self.params), None, {net.input: X, net.target: Y}, boundary=TRAINING,
                    method="diffusion", rtol=max(self.config.tol, 1e-12), x0=x0, xp=xp)
        return chain_equilibrium(net, self.params, res, Y, xp)

    def preflight(self) -> None:
        """Raise now what the first step would (a SheafError), before a run directory exists. A
        feed-forward chain cannot fail here: its L_free is unitriangular, so positive definite."""

    def edge_discords(self, X, Y) -> dict[str, float]:
        """Mean over examples of ½‖(δc*)_e‖² per edge at the two-sided equilibrium."""
        eq = self.equilibrium(X, Y)
        out = {layer.name: float(0.5 * (eq.U[k] ** 2).sum(axis=1).mean()) for k, layer in enumerate(self.net.layers)}
        out[self.net.output.name] = float(0.5 * (eq.out_disc ** 2).sum(axis=1).mean())
        return out

    def lambda_min_sample(self, X, k: int = 16) -> float:
        """min over the first ``k`` examples of λ_min(L_free) at their forward-pass patterns.

        L_free = δ_Ωᵀ W² δ_Ω with x and y pinned (training pins), ReLU gates at the example's forward
        pattern and sigmoid/softmax maps linearised there; matrix-free, by Lanczos on L_free⁻¹
        through the chain's sweeps (:func:`~sheafdsl.training.conditioning.lambda_min_free`).
        """
        from .conditioning import lambda_min_free

        X = self.xp.asarray(X, dtype=float)[:k]
        if X.shape[0] == 0:
            return float("inf")
        return float(lambda_min_free(self.net, self.params, X, self.xp).min())

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to resume exactly: parameters, optimiser state, step count, trainer state."""
        out = {"step_count": np.asarray(self.step_count), "trainer": np.asarray(self.name)}
        out.update({f"param.{k}": np.array(to_numpy(v)) for k, v in self.params.items()})
        out.update({f"opt.{k}": v for k, v in self.opt.state_dict().items()})
        out.update(self._extra_state())
        return out

    def _extra_state(self) -> dict:
        return {}

    def _load_extra(self, state) -> None:
        pass

    def load_state_dict(self, state) -> None:
        trainer = str(np.asarray(state.get("trainer", self.name)))
        if trainer != self.name:
            raise SheafError(Diagnostic("E611", f"the saved state is from the `{trainer}` trainer, not `{self.name}`"))
        # shapes first: a state of another model must not half-load (nor fail later inside a step)
        expected = {k: np.shape(v) for k, v in self.state_dict().items()}
        for k in state:  # optimiser moments have their parameter's shape: opt.<moment>.<param>
            p = k.split(".", 2)[2] if k.startswith("opt.") and k.count(".") >= 2 else None
            if p in self.params:
                expected.setdefault(k, tuple(self.params[p].shape))
        for k, want in expected.items():
            if k in state:
                got = np.shape(state[k])
                if want != got:
                    raise SheafError(Diagnostic("E611", f"the saved state's `{k}` has shape {got}; this model and "
                                                f"run need {want}",
                                                hint="the checkpoint was written for another model or run"))
        missing = [k for k in self.params if f"param.{k}" not in state]
        if missing:
            raise SheafError(Diagnostic("E611", "the saved state lacks parameter(s) " + ", ".join(missing)))
        for k in self.params:
            v = np.asarray(state[f"param.{k}"], dtype=float)
            if v.shape != tuple(self.params[k].shape):
                raise SheafError(Diagnostic("E611", f"saved parameter `{k}` has shape {v.shape}, "
                                            f"the model wants {tuple(self.params[k].shape)}"))
            self.params[k] = self.xp.array(v)
        self.opt.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("opt.")})
        self.step_count = int(state["step_count"])
        self._perm_cache = None
        self._load_extra(state)


class SheafTrainer(Trainer):
    """Fast phase to tolerance, then the local edge update (mean over the batch).

    The exact fast phase is warm-started, as the paper warm-starts its stalks: each training
    example's equilibrium cochain and unit states (active / inactive / sliding) are kept, and the
    active-set loop of the next step starts there (a feasible point for those states: the first
    pattern solve then usually ends the loop). They start at the forward pass and are trainer state
    (:meth:`state_dict`), so a resumed run continues exactly.

    A chain whose every parameter sits on one edge takes the packed step (:meth:`step`): the parameters
    are views of one flat vector (:class:`~sheafdsl.training.flat.FlatParams`, ``flow``), the local update
    writes into the views of one flat gradient, the optimiser updates the flat vector
    (:meth:`~sheafdsl.training.optim.Optimizer.step_flat`) and the finiteness checks are one sum each;
    the task loss (a forward pass) is computed only when asked (``step(loss=True)``, the default; the run
    loop asks on the steps it logs). The numbers are those of the plain path (``flow`` None: a parameter
    tied across edges, the heat equation, a batch solved in blocks, a sharded run), bit for bit.
    """

    name = "sheaf"
    lazy_loss = True  # step(loss=False) skips the forward pass and the task loss (the run loop asks when it logs)
    flow = None  # the packed parameters of the packed step (None: the plain path)
    #: max |pin| over the whole mini-batch when this trainer solves only a shard of it (set by
    #: :mod:`sheafdsl.distributed`): the solver's side tolerance scales with it, so a shard decides its
    #: units exactly as the one process solving the whole batch does
    batch_pins_max: float | None = None

    def __init__(self, G, config, data, params=None):
        from .flat import fusable

        super().__init__(G, config, data, params)
        self.warm: Warm | None = None  # the training set's equilibria [None, v_1..v_m] and unit states
        self._pins = None  # the training set's data pins, checked once (ChainPins); a step takes its rows
        self._tied = G.graph["parameter_sheaf"].number_of_edges() > 0  # reluctance or ties: their gradient too
        block, B = block_rows(self.xp), int(config.batch or self.n_train)
        if fusable(self.net) and config.solver != "diffusion" and (block is None or min(B, self.n_train) <= block):
            self._pack()

    def _pack(self) -> None:
        from .flat import FlatParams

        self.flow = FlatParams(self.params, self.xp)
        self.params = dict(self.flow.params)

    def step(self, loss: bool = True) -> dict:
        """One step on the next mini-batch: {"loss", "consistent_fraction"}; the loss (at the forward pass,
        before the update) only with ``loss=True``, else None."""
        if self.flow is None:
            return Trainer.step(self)
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite values are reported by the step
            return self._packed_step(loss)

    #: a stretch of :meth:`steps` ends after this many seconds even if steps are left: the run loop then
    #: takes the next step itself and reports it (a progress bar moves on a model with slow steps)
    stretch_seconds = 0.5

    def steps(self, n: int, stop: bool = True) -> None:
        """Up to ``n`` steps without their losses (the run loop's stretches between the steps it logs),
        fewer when :attr:`stretch_seconds` have passed; with ``stop``, a signal (:attr:`stop_requested`)
        ends them after the step in progress."""
        end = time.monotonic() + self.stretch_seconds
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(n):
                self.step(False)
                if stop and self.stop_requested or time.monotonic() > end:
                    return

    def _packed_step(self, want_loss: bool) -> dict:
        xp, net, flow = self.xp, self.net, self.flow
        if not flow.is_packed(self.params):  # the parameters were replaced (a loaded state)
            self._pack()
            flow = self.flow
        P = self.params
        idx = self._batch_indices(self.step_count)
        if self._pins is None:
            self._pins = chain_pins(net, {net.input: self.Xtr, net.target: self.Ytr}, xp)
        pins = self._pins.take(idx)
        X, Y = pins.X, pins.Y
        loss = None
        if want_loss:
            V = forward(net, P, X, xp)
            loss = task_loss(self.data.task, _output(net, P, V[-1], xp), Y, xp)
        else:  # the solve reads only the first layer's output of the forward pass
            first = net.layers[0]
            V = [X, apply(first, P, X)] if first.kind in ("param", "fixed") else None
        self._start_warm()
        w = self.warm.take(idx)
        if self.stop_requested:  # as _pure, inline: a signal abandons the step before the solve
            raise StepAbandoned
        self.in_solve = True
        try:
            res = solve(net, P, pins, boundary=TRAINING, warm=Warm(V=w.V, S=w.S, forward=V), rtol=self.config.tol,
                        xp=xp)
        except np.linalg.LinAlgError as exc:  # numerically singular: a property of the model, said plainly
            raise SingularSystemError(self.step_count + 1, self.name, str(exc)) from None
        finally:
            self.in_solve = False
        self.warm.put(idx, res)
        eq = self.last_equilibrium = res.equilibrium
        grads = local_gradients(net, P, eq, "mean", xp, out=flow.gviews)
        if self._tied:
            for k, g in parameter_sheaf_gradients(self.G, P, xp).items():
                grads[k] += g
        self._check_packed(loss, grads)
        self.opt.step_flat(flow.flat, flow.grad, flow)
        self.step_count += 1
        self._check_packed_params()
        return {"loss": loss, "consistent_fraction": eq.consistent_fraction}

    def _batch_pins(self, idx, pins_max=None) -> ChainPins:
        pins = self._pins.take(idx)
        m = self.batch_pins_max if pins_max is None else pins_max
        return pins if m is None else ChainPins(self.net, pins.X, pins.Y, pins_max=m)

    def preflight(self) -> None:
        """E604/E540 before step 1 when the fast phase cannot be done: its conditioning (κ beyond float64),
        memory or least time per step (:mod:`.cost`)."""
        from .cost import check_fast_phase

        check_fast_phase(self.net, self.params, self.Xtr, int(self.config.batch or self.n_train),
                         solver=self.config.solver, file=self.G.graph.get("path") or "<input>", xp=self.xp)

    def _extra_state(self) -> dict:
        if self.warm is None:
            return {}
        out = {f"warm.v.{j}": np.array(to_numpy(v)) for j, v in enumerate(self.warm.V) if j > 0}
        out.update({f"warm.s.{k}": np.array(to_numpy(v)) for k, v in self.warm.S.items()})
        return out

    def _load_extra(self, state) -> None:
        vs = sorted((int(k.split(".")[2]), k) for k in state if k.startswith("warm.v."))
        if not vs:
            self.warm = None
            return
        V = [None] + [self.xp.array(np.asarray(state[k], dtype=float)) for _, k in vs]
        S = {int(k.split(".")[2]): self.xp.array(np.asarray(state[k], dtype=np.int8))
             for k in state if k.startswith("warm.s.")}
        self.warm = Warm(V=V, S=S)

    def _start_warm(self) -> None:
        """Every training example starts at its forward pass (with the unit states it implies, for the exact
        fast phase; the heat equation keeps stalks only)."""
        if self.warm is not None:
            return
        net, xp = self.net, self.xp
        Vall = forward(net, self.params, self.Xtr, xp)
        S = {} if self.config.solver == "diffusion" else {
            k: xp.where(Vall[k] >= 0, 1, -1).astype(np.int8) for k in net.relu_layers}
        self.warm = Warm(V=[None] + [v.copy() for v in Vall[1:]], S=S)

    def _gradients(self, X, Y, idx):
        """The batch's loss, consistent fraction and mean local gradients. A batch of more than
        :func:`~sheafdsl.lowering.backend.block_rows` examples is solved a block of rows at a time (the
        examples' problems share θ and nothing else), with the whole batch's max |pin| for the solver's
        side tolerance, so each block decides its units as the whole batch would; the results are the
        block-size-weighted means of the blocks'."""
        B, block = int(X.shape[0]), block_rows(self.xp)
        if self.config.solver == "diffusion" or block is None or B <= block:
            return self._block_gradients(X, Y, idx)
        pm = self.batch_pins_max
        if pm is None:
            pm = float(max(abs(X).max(), abs(Y).max()))
        loss, count, grads = 0.0, 0.0, {}
        for a in range(0, B, block):
            b = min(a + block, B)
            rows = slice(a, b) if idx is None else idx[a:b]
            w = (b - a) / B
            lb, cf, gb = self._block_gradients(X[a:b], Y[a:b], rows, pm)
            loss += w * float(lb)
            count += w * float(cf)
            for k, g in gb.items():
                grads[k] = grads[k] + w * g if k in grads else w * g
        return loss, count, grads

    def _block_gradients(self, X, Y, idx, pins_max=None):
        xp, net, P = self.xp, self.net, self.params
        V = forward(net, P, X, xp)
        pred = _output(net, P, V[-1], xp)
        loss = task_loss(self.data.task, pred, Y, xp)
        if self.config.solver == "diffusion":  # the local heat equation, warm-started at the last equilibria
            with self._pure():
                eq = self._heat(X, Y, None if self.warm is None else self.warm.take(idx))
            self._start_warm()
            self.warm.put(idx, Warm(V=eq.V, S={}))
        else:
            self._start_warm()
            if self._pins is None:
                self._pins = chain_pins(net, {net.input: self.Xtr, net.target: self.Ytr}, xp)
            w = self.warm.take(idx)
            w = Warm(V=w.V, S=w.S, forward=V)  # the forward pass above: its first layer is the solve's too
            with self._pure():
                res = solve(net, P, self._batch_pins(idx, pins_max), boundary=TRAINING, warm=w, rtol=self.config.tol, xp=xp)
            self.warm.put(idx, res)
            eq = res.equilibrium
        self.last_equilibrium = eq
        return loss, eq.consistent_fraction, local_gradients(net, P, eq, "mean", xp)


class FusedSteps:
    """What the trainers with a fused step share (mixed in before :class:`Trainer`): ``flow`` holds the
    parameters packed (:mod:`.flat`; ``params`` are its views) and binds one plan per batch size, the
    step of that batch on its own buffers (:mod:`.joint`, :mod:`.backprop`). ``flow`` is None where
    the trainer takes its plain path (a parameter tied across edges; a sharded run)."""

    flow = None

    def _fuse(self) -> None:
        self.flow = self._make_flow()
        self.params = dict(self.flow.params)
        self._plans: dict = {}  # batch size (None: the training set) -> the flow's step of that batch

    def _batch_plan(self, idx):
        """The fused step of this step's batch: the training set itself (idx None), or a mini-batch
        gathered into the plan's buffers."""
        xp = self.xp
        if not self.flow.is_packed(self.params):  # the parameters were replaced (a loaded state)
            self._fuse()
        if idx is None:
            plan = self._plans.get(None)
            if plan is None or plan.X is not self.Xtr or plan.Y is not self.Ytr:
                plan = self._plans[None] = self.flow.bind(self.Xtr, self.Ytr)
            return plan
        B = int(idx.shape[0])
        plan = self._plans.get(B)
        if plan is None:
            plan = self._plans[B] = self.flow.bind(xp.empty((B,) + tuple(self.Xtr.shape[1:])),
                                                   xp.empty((B,) + tuple(self.Ytr.shape[1:])))
        xp.take(self.Xtr, idx, axis=0, out=plan.X)
        xp.take(self.Ytr, idx, axis=0, out=plan.Y)
        return plan

    def step(self, loss: bool = True) -> dict:
        """One step on the next mini-batch: {"loss", "consistent_fraction": None}; the loss (at the forward
        pass, before the update) only with ``loss=True``, else None."""
        if self.flow is None:
            return self._plain_step()
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite values are reported by the step
            return self._fused_step(loss)

    def steps(self, n: int, stop: bool = True) -> None:
        """``n`` steps without their losses, under one ``np.errstate`` (the run loop's stretches between the
        steps it logs); with ``stop``, a signal (:attr:`stop_requested`) ends them after the step in progress."""
        if self.flow is None:
            for _ in range(n):
                self._plain_step()
                if stop and self.stop_requested:
                    return
            return
        with np.errstate(over="ignore", invalid="ignore"):
            while n > 0:
                stretch = self._stretch()
                if stretch is None:  # this step needs more than its plan's operations
                    self._fused_step(False)
                    n -= 1
                else:
                    ops, k = stretch
                    k = min(k, n)
                    n -= self._run_stretch(ops, k, stop)
                if stop and self.stop_requested:
                    return

    def _stretch(self):
        """``(ops, k)``: the next k steps are the tuple ``ops`` run k times (the full batch's fused step
        with the update θ ← θ − η g appended, as :meth:`_fused_step` computes it); None where the next step
        needs more (a mini-batch, a tied parameter's gradient, an optimiser with state)."""
        if self._tied or self._batch_indices(self.step_count) is not None:
            return None
        eta = self._stretch_rate()
        if eta is None:
            return None
        plan = self._batch_plan(None)
        ops = getattr(plan, "stretch_ops", None)
        if ops is None or ops[0] != eta:
            flow, xp = self.flow, self.xp
            update = (functools.partial(xp.multiply, flow.grad, eta, out=flow.grad),  # _descend's grad *= η
                      functools.partial(xp.subtract, flow.flat, flow.grad, out=flow.flat))  # and flat -= grad
            ops = plan.stretch_ops = (eta, plan.ops + update)
        return ops[1], self._stretch_length()

    def _stretch_rate(self):
        """η of a stretch (None: the optimiser's step is not θ ← θ − η g)."""
        return None

    def _stretch_length(self) -> int:
        return 1 << 62

    def _run_stretch(self, ops: tuple, k: int, stop: bool) -> int:
        """Run ``ops`` k times (fewer when a signal stops them): the steps done. A non-finite parameter
        after them (a NaN or ∞ stays one, so none passes unseen) sends the state back to the stretch's start
        and replays it step by step with :meth:`_fused_step`'s checks, which raise the same
        DivergenceError, at the same step and with the same state, as the checked steps would have."""
        flow, xp, plan = self.flow, self.xp, self._plans[None]
        saved = [a.copy() for a in (flow.flat,) + plan.state]
        t0, opt_t0 = self.step_count, self.opt.t
        done = 0
        while done < k:
            for op in ops:
                op()
            done += 1
            if stop and self.stop_requested:
                break
        self.step_count += done
        self.opt.t += done
        if not math.isfinite(flow.flat.sum()):
            for a, s in zip((flow.flat,) + plan.state, saved):
                xp.copyto(a, s)
            self.step_count, self.opt.t = t0, opt_t0
            for _ in range(done):
                self._fused_step(False)
        return done

    def _plain_step(self) -> dict:
        return Trainer.step(self)

    def _descend(self, eta: float) -> None:
        """θ ← θ − η g on the packed parameters (``grad`` scaled in place), as SGD.step does per array."""
        grad = self.flow.grad
        grad *= eta
        self.flow.flat -= grad
        self.opt.t += 1


class BackpropTrainer(FusedSteps, Trainer):
    """Standard backpropagation (the baseline). A chain whose every parameter sits on one edge takes the
    fused step (:class:`~sheafdsl.training.backprop.BackpropFlow`: the same gradients on preallocated
    buffers; plain SGD then updates the packed parameters in one operation); a tied parameter takes
    :meth:`_gradients`."""

    name = "backprop"
    lazy_loss = True  # step(loss=False) skips the task loss (the run loop asks when it logs)

    def __init__(self, G, config, data, params=None):
        from .backprop import BackpropFlow

        super().__init__(G, config, data, params)
        self._tied = G.graph["parameter_sheaf"].number_of_edges() > 0  # reluctance or ties: their gradient too
        if BackpropFlow.fusable(self.net):
            self._fuse()

    def _make_flow(self):
        from .backprop import BackpropFlow

        xp, task = self.xp, self.data.task
        return BackpropFlow(self.net, self.params, xp, lambda pred, Y: task_loss(task, pred, Y, xp))

    def _stretch_rate(self):
        return self.opt.lr if self.opt.name == "sgd" else None

    def _fused_step(self, loss: bool) -> dict:
        idx = self._batch_indices(self.step_count)
        plan = self._batch_plan(idx)
        flow, xp = self.flow, self.xp
        loss = plan.step(loss)
        if self._tied:
            for k, g in parameter_sheaf_gradients(self.G, self.params, xp).items():
                flow.gviews[k] += g
        self._check_packed(loss, flow.gviews)
        if self.opt.name == "sgd":
            self._descend(self.opt.lr)
        else:
            self.opt.step(self.params, flow.gviews)  # in place on the views
        self.step_count += 1
        self._check_packed_params()
        return {"loss": loss, "consistent_fraction": None}

    def _gradients(self, X, Y, idx):
        _, pred, grads = backprop_gradients(self.net, self.params, X, Y, self.xp)
        return task_loss(self.data.task, pred, Y, self.xp), None, grads


class JointTrainer(FusedSteps, Trainer):
    """The paper's simultaneous Euler flow of stalks (α) and weights (β, summed updates), step dt.

    The weights move by forward Euler, θ ← θ − dt·g (no optimiser: ``optimizer`` and ``lr`` are the
    other trainers' and the baseline's; ``sheaf train`` refuses them with ``--trainer joint``, E670).
    The step is :class:`~sheafdsl.training.joint.JointFlow`, fused on preallocated buffers (a chain
    with a parameter tied across edges takes :meth:`_gradients`, the same flow written plainly). The
    stalks start as ``joint_init`` says (zeros, the forward pass, or random) and, with
    ``joint_reinit`` = K > 0, restart at the forward pass every K steps (the paper's epochs).
    """

    name = "joint"
    lazy_loss = True  # step(loss=False) skips the forward pass the loss needs (the run loop asks when it logs)

    def __init__(self, G, config, data, params=None):
        from .joint import JointFlow, initial_stalks

        super().__init__(G, config, data, params)
        self.beta = config.beta if config.beta is not None else 1.0 / self.n_train
        self.opt = make_optimizer("sgd", config.dt, xp=self.xp)  # forward Euler; its state is the step count
        self._tied = G.graph["parameter_sheaf"].number_of_edges() > 0  # reluctance or ties: their gradient too
        if JointFlow.fusable(self.net):
            self._fuse()
        self.stalks = initial_stalks(self.net, self.params, self.Xtr, config.joint_init, config.seed, self.xp)

    def _make_flow(self):
        from .joint import JointFlow

        xp, task = self.xp, self.data.task
        return JointFlow(self.net, self.params, xp, self.config.alpha, self.beta, self.config.dt,
                         lambda pred, Y: task_loss(task, pred, Y, xp))

    def _step_size(self) -> float:
        return self.config.dt

    def _restart_if_due(self) -> None:
        """At the start of an epoch (``joint_reinit`` steps), the stalks restart at the forward pass."""
        t, every = self.step_count, self.config.joint_reinit
        if every and t > 0 and t % every == 0:
            from .joint import initial_stalks

            self.stalks = initial_stalks(self.net, self.params, self.Xtr, "forward", self.config.seed, self.xp)

    def _plain_step(self) -> dict:
        self._restart_if_due()
        return Trainer.step(self)

    def _stretch_rate(self):
        return self.config.dt

    def _stretch_length(self) -> int:
        every = self.config.joint_reinit  # a stretch ends where an epoch restarts the stalks
        return every - self.step_count % every if every else super()._stretch_length()

    def _stretch(self):
        stretch = super()._stretch()
        if stretch is not None:
            self._restart_if_due()
            plan = self._plans[None]
            if not plan.holds(self.stalks):
                self.stalks = plan.load(self.stalks)
        return stretch

    def _fused_step(self, loss: bool) -> dict:
        """One step of the flow on the next mini-batch (``step``'s, inside its ``np.errstate``)."""
        self._restart_if_due()
        xp, t = self.xp, self.step_count
        idx = self._batch_indices(t)
        plan = self._batch_plan(idx)
        if idx is None:  # the training set's stalks are the plan's own arrays
            if not plan.holds(self.stalks):  # new stalks (a start, an epoch, a loaded state): copied in
                self.stalks = plan.load(self.stalks)
        else:
            for v, s in zip(plan.V, self.stalks):
                xp.take(s, idx, axis=0, out=v)
        flow = self.flow
        loss = plan.step(loss)
        if self._tied:
            for k, g in parameter_sheaf_gradients(self.G, self.params, xp).items():
                flow.gviews[k] += g
        self._check_packed(loss, flow.gviews)
        self._descend(self.config.dt)  # θ ← θ − dt·g
        if idx is not None:
            for s, v in zip(self.stalks, plan.V):
                s[idx] = v
        self.step_count += 1
        self._check_packed_params()
        return {"loss": loss, "consistent_fraction": None}

    def _gradients(self, X, Y, idx):
        """The flow written plainly (a chain with a parameter tied across edges): the chain's energy
        gradient moves the stalks, the summed local update the weights."""
        xp, net, P = self.xp, self.net, self.params
        V = [X] + ([s for s in self.stalks] if idx is None else [s[idx] for s in self.stalks])
        loss = task_loss(self.data.task, predict(net, P, X, xp), Y, xp)
        grads_c, U, disc, _ = energy_gradient(net, P, V, Y, xp)
        g = local_gradients(net, P, Equilibrium(V, U, disc), "sum", xp)
        step = self.config.dt * self.config.alpha
        for j in range(len(self.stalks)):
            if idx is None:
                self.stalks[j] = V[j + 1] - step * grads_c[j]
            else:
                self.stalks[j][idx] = V[j + 1] - step * grads_c[j]
        return loss, None, {k: self.beta * v for k, v in g.items()}

    def _extra_state(self) -> dict:
        return {f"stalk.{j}": np.array(to_numpy(s)) for j, s in enumerate(self.stalks)}

    def _load_extra(self, state) -> None:
        self.stalks = [self.xp.array(np.asarray(state[f"stalk.{j}"], dtype=float)) for j in range(len(self.stalks))]


class Equilibrium:
    """A cochain as the local update reads it: vertex values V, chain discords U, the output discord."""

    def __init__(self, V, U, out_disc):
        self.V, self.U, self.out_disc = V, U, out_disc


def _output(net, P, vm, xp):
    from ..lowering.chain import predict_from

    return predict_from(net, P, vm, xp)


class GeneralSheafTrainer(Trainer):
    """The sheaf rule for any sheaf that is not a feed-forward chain (skip connections, literal maps,
    soft pins, …): the two-sided equilibrium from the general solver
    (:func:`sheafdsl.solvers.solve`, ``sources=TRAINING``, warm-started per training
    example), then the local update written once, edge by edge, from the IR
    (:func:`~sheafdsl.training.update.edge_gradients`). Predictions are the harmonic extension
    with the target stalk free (``sources=INFERENCE``)."""

    name = "sheaf"
    general_ok = True

    def __init__(self, G, config, data, params=None):
        super().__init__(G, config, data, params)
        from ..ir import pinned_stalks
        from ..lowering.operators import SheafOperators

        self.input, self.target = pinned_stalks(G, "input")[0], pinned_stalks(G, "target")[0]
        self.ops = SheafOperators(G, self.params, self.xp)
        self.warm = None  # (n_train, N) equilibrium cochains

    def _solve(self, X, Y=None, x0=None):
        from ..solvers import solve

        ops = self.ops.with_params(self.params)
        method = self.config.solver
        with self._pure():
            if Y is None:
                return solve(ops, None, {self.input: X}, method=method, sources=INFERENCE, xp=self.xp)
            return solve(ops, None, {self.input: X, self.target: Y}, method=method,
                         sources=TRAINING, rtol=max(self.config.tol, 1e-12), xp=self.xp, x0=x0)

    def _predict(self, X):
        return self._solve(X).stalk(self.target)

    def _start_warm(self) -> None:
        """Examples not yet solved start at the zero cochain."""
        if self.warm is None:
            self.warm = self.xp.zeros((self.n_train, self.ops.N))

    def equilibrium(self, X, Y):
        return self._solve(self.xp.asarray(X, dtype=float), self.xp.asarray(Y, dtype=float))

    def preflight(self) -> None:
        """Solve one training example with the training pins and with the inference pins: a sheaf whose
        pins leave free directions (a stalk no edge touches, relative H⁰ ≠ 0) fails here with E504."""
        self._solve(self.Xtr[:1], self.Ytr[:1])
        self._predict(self.Xtr[:1])

    def _gradients(self, X, Y, idx):
        loss = task_loss(self.data.task, self._predict(X), Y, self.xp)
        x0 = None if self.warm is None else (self.warm if idx is None else self.warm[idx])
        res = self._solve(X, Y, x0)
        self._start_warm()
        if idx is None:
            self.warm = res.cochain.copy()
        else:
            self.warm[idx] = res.cochain
        self.last_equilibrium = res
        disc = self.ops.with_params(self.params).discord(res.cochain)
        g = edge_gradients(self.G, self.params, res.cochain, disc, "mean", self.xp)
        return loss, float(self.xp.asarray(res.consistent).mean()), g

    def edge_discords(self, X, Y) -> dict[str, float]:
        from .diagnostics import edge_discords

        res = self.equilibrium(X, Y)
        return edge_discords(self.G, self.ops.with_params(self.params).discord(res.cochain))

    def lambda_min_sample(self, X, k: int = 16) -> float:
        from ..lowering import laplacian_matrix

        X = np.asarray(to_numpy(X), dtype=float)[:k]
        res = self._solve(self.xp.asarray(X))
        C = np.asarray(to_numpy(res.cochain))
        P = {n: to_numpy(v) for n, v in self.params.items()}
        free = free_indices(self.G, TRAINING)
        lam = np.inf
        for i in range(C.shape[0]):
            L = laplacian_matrix(self.G, P, state=C[i]).toarray()
            lam = min(lam, float(np.linalg.eigvalsh(L[np.ix_(free, free)])[0]))
        return lam

    def _extra_state(self) -> dict:
        return {} if self.warm is None else {"warm.cochain": np.array(to_numpy(self.warm))}

    def _load_extra(self, state) -> None:
        self.warm = self.xp.array(np.asarray(state["warm.cochain"])) if "warm.cochain" in state else None


TRAINERS = {"sheaf": SheafTrainer, "joint": JointTrainer, "backprop": BackpropTrainer}


def make_trainer(G, config: TrainConfig, data: Dataset, params: dict | None = None) -> Trainer:
    """The trainer that ``config.trainer`` names (sheaf | joint | backprop)."""
    return trainer_class(G, config, data)(G, config, data, params)


def trainer_class(G, config: TrainConfig, data: Dataset) -> type:
    """The class :func:`make_trainer` instantiates for this model and config (E610, E612 when there is none)."""
    cls = TRAINERS.get(config.trainer)
    from ..options import LEARNED_TRAINERS

    if config.trainer in LEARNED_TRAINERS:
        raise SheafError(Diagnostic("E612", f"the `{config.trainer}` trainer trains a learned consensus model (an "
                                    "encoder, grid or decoder: docs/admm.md, \"Learning\"); this model is a network "
                                    "sheaf", hint="use --trainer sheaf, joint or backprop"))
    if cls is None:
        raise SheafError(Diagnostic("E610", f"unknown trainer `{config.trainer}`", hint="use one of: " + ", ".join(TRAINER_NAMES)))
    if feedforward(G) is None:
        if config.trainer != "sheaf":
            raise SheafError(Diagnostic(
                "E612", f"the `{config.trainer}` trainer needs a feed-forward network sheaf (a chain x -> ... -> y); "
                f"`{G.graph.get('name', 'sheaf')}` is not one", hint="use --trainer sheaf, which trains any sheaf"))
        check_compatible(G, data)
        return GeneralSheafTrainer
    return cls


__all__ = ["DivergenceError", "Trainer", "SheafTrainer", "JointTrainer", "BackpropTrainer", "GeneralSheafTrainer",
           "make_trainer", "trainer_class",
           "task_loss", "accuracy"]
