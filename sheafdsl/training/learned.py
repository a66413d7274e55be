"""Training a learned consensus model (docs/admm.md "Learning"): the three trainers and their data.

A learned model maps each example's observations to a strictly convex consensus problem (its encoders
give Q_v and q_v, its restriction maps are parameters), whose minimiser x* the decoders read into the
target-pinned outputs. The trainers differ in how the gradient of the loss ℓ(decoder(x), y) reaches the
parameters θ:

- ``unrolled``: x = x_K after K iterations of Sheaf-ADMM (``iterations``, ``rho``); the gradient is reverse
  mode through those K steps (:func:`sheafdsl.solvers.learned.admm_vjp`), over the last ``window`` of them
  when ``window`` > 0 (truncated);
- ``implicit``: x = x*, the KKT point (the fixed point of every ADMM variant); the gradient is one adjoint
  solve of the KKT system (:func:`sheafdsl.solvers.learned.kkt_vjp`): exact for x*, memory O(1) in K;
- ``local``: the contrastive form of the sheaf rule. With the decoder's loss added to the energy with
  weight β = ``nudge`` (the target pinned softly), the two-sided equilibrium x** and the free one x*; each
  coefficient's gradient is read off its own term of the energy at the two (envelope theorem):
  ĝ = (∂_θE(x**) − ∂_θE(x*))/β, and the decoders' parameters from their own loss at x**. ĝ is the exact
  gradient of Φ(θ) = (min_x [E + βℓ] − min_x E)/β, which tends to ∇ℓ(x*) as β → 0 (equilibrium
  propagation; no adjoint solve, no tape).

Data (:class:`LearnedData`): a ``train`` :class:`Split` and named test splits, each holding ``inputs`` (each
observation stalk → (n, d); each grid → (n, R, C, ODIM): agent (i, j)'s observation) and ``targets`` (each
decoder's output stalk → (n, dim)). A task registers a loader under a name in :data:`LEARNED_TASKS`; the
model's ``train data=NAME`` picks it.

>>> from sheafdsl.frontend.checker import load_text
>>> from sheafdsl.ir import from_model
>>> G = from_model(load_text(EXAMPLE))
>>> rng = np.random.default_rng(0)
>>> split = Split({"oa": rng.normal(size=(5, 3)), "ob": rng.normal(size=(5, 3))}, {"y": rng.normal(size=(5, 2))})
>>> tr = LearnedTrainer(G, trainer="implicit", seed=0)
>>> loss, grads = tr.loss_and_grads(split)
>>> sorted(grads) == sorted(tr.params)
True
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import Diagnostic, SheafError
from ..lowering.learned import LearnedStructure, coefficient_grads, coefficients, decode, decode_loss
from ..solvers import learned as SL

from ..options import LEARNED_TRAINERS

EXAMPLE = """sheaf two_agents
param P : 2 x 2 init xavier
param W : 2 x 2 init xavier
param c : 2 init zeros
encoder enc : 3 -> 4 -> 4
stalk a : 2
stalk b : 2
stalk oa : 3
stalk ob : 3
pin oa = input
pin ob = input
objective a encoded enc oa
objective b encoded enc ob
edge ab : a -> b maps P | P hard
edge ba : a -> b maps 1 | 1 weight 0.5
stalk y : 2
pin y = target
decode y : mean a b affine W c identity
"""


def _err(code: str, msg: str, hint: str | None = None) -> SheafError:
    return SheafError(Diagnostic(code, msg, hint=hint))


@dataclass
class Split:
    """One split of a learned model's data: ``inputs`` (observation stalk → (n, d), grid → (n, R, C, ODIM)) and
    ``targets`` (output stalk → (n, dim))."""

    inputs: dict
    targets: dict

    def __len__(self) -> int:
        return int(next(iter(self.targets.values())).shape[0]) if self.targets else 0

    def take(self, idx) -> "Split":
        return Split({k: np.asarray(v)[idx] for k, v in self.inputs.items()},
                     {k: np.asarray(v)[idx] for k, v in self.targets.items()})


@dataclass
class LearnedData:
    """A learned model's data: the ``train`` split and named ``tests`` (e.g. one per canvas size)."""

    name: str
    train: Split
    tests: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


#: name -> loader(G, config) -> LearnedData, for ``train data=NAME`` (the tasks register themselves)
LEARNED_TASKS: dict = {}


def _builtin_tasks() -> dict:
    """:data:`LEARNED_TASKS` with the built-in tasks (``sheafdsl.training.tasks``: sudoku4, sudoku9, digits_canvas)
    registered on first use (importing them here would make every learned run load the task generators)."""
    if not _BUILTIN_REGISTERED:
        from .tasks.learned import register

        register()
        _BUILTIN_REGISTERED.append(True)
    return LEARNED_TASKS


_BUILTIN_REGISTERED: list = []


def register_task(name: str, loader) -> None:
    """Make ``train data=NAME`` load ``loader(G, config)`` (a :class:`LearnedData`) for a learned model."""
    LEARNED_TASKS[name] = loader


def grid_sizes(G, inputs: dict) -> dict:
    """Each grid's (R, C) in a split's inputs (a grid's observations are (n, R, C, ODIM))."""
    spec = G.graph["learned"]
    out = {}
    for g, decl in spec.grids.items():
        if g not in inputs:
            raise _err("E553", f"no observations for grid `{g}`", f"give `{g}` as an (n, R, C, {decl.obs_dim}) array")
        a = np.asarray(inputs[g])
        if a.ndim != 4 or a.shape[3] != decl.obs_dim:
            raise _err("E553", f"the observations of grid `{g}` have shape {a.shape}; they need (n, R, C, {decl.obs_dim})")
        out[g] = (int(a.shape[1]), int(a.shape[2]))
    return out


def observations(G, inputs: dict, xp) -> dict:
    """Observation stalk → (B, d) values on ``xp``, a grid's patches spread to its agents' observation stalks."""
    from ..ir import grid_agent

    spec = G.graph["learned"]
    out = {}
    for k, v in inputs.items():
        if k in spec.grids:
            a = xp.asarray(v, dtype=float)
            for i in range(a.shape[1]):
                for j in range(a.shape[2]):
                    out[grid_agent(k, i, j) + ".obs"] = a[:, i, j]
        else:
            out[k] = xp.asarray(v, dtype=float)
    return out


class LearnedTrainer:
    """One of :data:`LEARNED_TRAINERS` on a learned model's IR ``G``: parameters, an optimiser, and
    :meth:`loss_and_grads` / :meth:`step` / :meth:`predict` on :class:`Split` batches. A grid model is
    instantiated per size (``sheafdsl.ir.instantiate``), cached, with one set of parameters."""

    def __init__(self, G, *, trainer: str = "unrolled", iterations: int = 20, window: int = 0, rho: float = 1.0,
                 nudge: float = 0.1, optimizer: str = "adam", lr: float = 0.01, momentum: float = 0.9, seed: int = 0,
                 params: dict | None = None, xp=np):
        from ..ir import is_learned
        from ..lowering import init_params
        from .optim import make_optimizer

        if not is_learned(G):
            raise _err("E551", "not a learned model: it has no encoder, grid or decoder", "see docs/admm.md, \"Learning\"")
        if trainer not in LEARNED_TRAINERS:
            raise _err("E610", f"unknown trainer `{trainer}` for a learned model", "one of: " + ", ".join(LEARNED_TRAINERS))
        if int(iterations) < 1:
            raise _err("E610", f"iterations must be at least 1, not {iterations}")
        if not (rho > 0 and np.isfinite(rho)):
            raise _err("E610", f"rho must be a positive number, not {rho}")
        if not (nudge > 0 and np.isfinite(nudge)):
            raise _err("E610", f"nudge must be a positive number, not {nudge}")
        from ..lowering.learned import bounds_and_constants

        bounded, consts = bounds_and_constants(G)
        if (bounded or consts) and trainer != "implicit":
            from ..ir import declared_at, model_error

            what = f"bounds (`{bounded[0]}` has a nonneg/box term)" if bounded else f"a constant (`{consts[0]}`)"
            at = declared_at(G, stalk=bounded[0], kinds=("nonneg", "box")) if bounded else declared_at(G, stalk=consts[0])
            raise model_error(G, "E732", f"the {trainer} trainer does not differentiate a learned model with {what}: its "
                              "equilibrium is a QP with an active set, or an affine constraint", at,
                              "use --trainer implicit (the adjoint of the KKT system on the final active set)")
        self.G, self.xp = G, xp
        self.trainer, self.iterations, self.window, self.rho, self.nudge = trainer, int(iterations), int(window), \
            float(rho), float(nudge)
        self.params = {k: xp.asarray(v, dtype=float) for k, v in (params or init_params(G, seed=seed)).items()}
        self.opt = make_optimizer(optimizer, lr=lr, momentum=momentum, xp=xp)
        self.step_count = 0
        self._structures: dict = {}
        self.last: dict = {}

    def structure(self, inputs: dict) -> LearnedStructure:
        from ..ir import instantiate

        sizes = grid_sizes(self.G, inputs)
        key = tuple(sorted(sizes.items()))
        if key not in self._structures:
            self._structures[key] = LearnedStructure(instantiate(self.G, sizes) if sizes else self.G)
        return self._structures[key]

    # -- the forward pass and the gradients --
    def equilibrium(self, split: Split, *, method: str | None = None, iterations: int | None = None, trace: bool = False):
        """(x (n, B), structure, extra): the agents' stalks of a split's examples, by Sheaf-ADMM (K iterations)
        for ``unrolled`` (or ``method="admm"``), else the KKT point."""
        xp = self.xp
        S = self.structure(split.inputs)
        C = coefficients(S, self.params, observations(S.G, split.inputs, xp), xp, B=len(split))
        method = method or ("admm" if self.trainer == "unrolled" else "kkt")
        if method == "admm" and (S.bounded.any() or S.n_fixed):
            # a bounded model's ADMM is its equilibrium's: K iterations of the split x = z, then the polish
            x, lam, system = SL.bounded_kkt(S, C, xp, rho=self.rho, first=iterations or self.iterations, trace=trace)
            return x, S, system
        if method == "admm":
            it = SL.admm(S, C, iterations=iterations or self.iterations, rho=self.rho, xp=xp, trace=trace)
            return it.x, S, it
        x, lam, system = SL.kkt(S, C, xp)
        return x, S, (C, lam, system)

    def predict(self, split_or_inputs, **kw) -> dict:
        """Each decoder's prediction (B, dim) for a split (or its inputs)."""
        inputs = split_or_inputs.inputs if isinstance(split_or_inputs, Split) else split_or_inputs
        split = Split(inputs, {"_": np.zeros((len(next(iter(inputs.values()))), 1))})
        x, S, _ = self.equilibrium(split, **kw)
        return decode(S, self.params, x, self.xp)

    def loss(self, split: Split, **kw) -> float:
        x, S, _ = self.equilibrium(split, **kw)
        return decode_loss(S, self.params, x, split.targets, self.xp, grad=False)[0]

    def loss_and_grads(self, split: Split) -> tuple[float, dict]:
        """The batch's mean loss and every parameter's gradient, by this trainer's rule."""
        xp = self.xp
        S = self.structure(split.inputs)
        B = len(split)
        C = coefficients(S, self.params, observations(S.G, split.inputs, xp), xp, B=B)
        if self.trainer == "unrolled":
            it = SL.admm(S, C, iterations=self.iterations, rho=self.rho, window=self.window, xp=xp)
            loss, xbar, dgrads = decode_loss(S, self.params, it.x, split.targets, xp)
            Qb, qb, Fb = SL.admm_vjp(it, xbar, xp)
        elif self.trainer == "implicit":
            x, lam, system = SL.kkt(S, C, xp)
            loss, xbar, dgrads = decode_loss(S, self.params, x, split.targets, xp)
            Qb, qb, Fb = SL.kkt_vjp(S, system, x, lam, xbar, xp)
        else:
            x, lam, system = SL.kkt(S, C, xp)
            loss = decode_loss(S, self.params, x, split.targets, xp, grad=False)[0]
            x2, lam2, system2 = SL.nudged(S, C, self.params, split.targets, self.nudge, xp, x0=x)
            _, _, dgrads = decode_loss(S, self.params, x2, split.targets, xp)
            Q1, q1, F1 = SL.energy_grads(S, system, x, lam, xp)
            Q2, q2, F2 = SL.energy_grads(S, system2, x2, lam2, xp)
            # per-example energies, the loss a mean: divide by B as the loss does
            scale = 1.0 / (self.nudge * B)
            Qb = [(a - b) * scale for a, b in zip(Q2, Q1)]
            qb, Fb = (q2 - q1) * scale, (F2 - F1) * scale
        grads = coefficient_grads(S, self.params, C, Qb, qb, Fb, xp)
        for k, v in dgrads.items():
            grads[k] = grads[k] + v if k in grads else v
        for k in self.params:
            if k not in grads:
                grads[k] = xp.zeros_like(self.params[k])
        return float(loss), grads

    def step(self, batch: Split) -> dict:
        """One optimiser step on a batch; returns {"loss", "seconds"}."""
        t0 = time.perf_counter()
        loss, grads = self.loss_and_grads(batch)
        bad = [k for k, g in grads.items() if not bool(self.xp.isfinite(g).all())]
        if bad or not np.isfinite(loss):
            raise _err("E556", f"step {self.step_count + 1} of the {self.trainer} trainer diverged: "
                       + (f"the gradient of `{bad[0]}` is not finite" if bad else "the loss is not finite"),
                       "lower lr, or raise rho / iterations")
        self.opt.step(self.params, grads)  # in place
        self.step_count += 1
        self.last = {"loss": loss, "seconds": time.perf_counter() - t0}
        return self.last


# ----------------------------------------------------------------------------------------------
# data, evaluation and a whole run


def load_learned_data(G, config) -> LearnedData:
    """The data ``config.data`` names: a task of :data:`LEARNED_TASKS`, or an ``.npz`` whose entries are
    ``SPLIT/NAME`` (``train/oa``, ``train/y``, ``test/oa``, ...: an observation stalk, a grid or a decoder's
    output, per split)."""
    from .data import is_data_file, resolve_data

    spec = config.data
    if spec in _builtin_tasks():
        return LEARNED_TASKS[spec](G, config)
    if not is_data_file(spec):
        raise _err("E600", f"unknown data set `{spec}` for a learned model",
                   "known: " + (", ".join(sorted(LEARNED_TASKS)) or "none registered") + ", or an .npz of SPLIT/NAME "
                   "entries")
    from ..fileio import load_npz, real_array

    path = resolve_data(spec, os.path.dirname(os.path.abspath(G.graph.get("path") or ".")))
    raw = load_npz(path, code="E601", what="data file")
    spec_l = G.graph["learned"]
    obs_names = {o for _, _, o in spec_l.objectives if not any(o.startswith(g + "[") for g in spec_l.grids)}
    inputs_names = obs_names | set(spec_l.grids)
    target_names = {d.target for d in spec_l.decoders}
    splits: dict = {}
    for key, arr in raw.items():
        split, _, name = key.partition("/")
        if not name or name not in inputs_names | target_names:
            raise _err("E601", f"`{spec}`: entry `{key}` is not SPLIT/NAME for an observation, grid or output of the "
                       "model", "entries: " + ", ".join(sorted(f"train/{n}" for n in inputs_names | target_names)))
        a = real_array(arr, code="E601", path=path, what=f"`{spec}`:{key}")
        if not np.all(np.isfinite(a)):
            rows = np.flatnonzero(~np.isfinite(a.reshape(len(a), -1)).all(axis=1)) if a.ndim else np.zeros(1, int)
            raise _err("E601", f"`{spec}`: entry `{key}` contains NaN or infinite values ({len(rows)} row(s), the first "
                       f"at row {int(rows[0])})", "drop or repair those examples")
        part = splits.setdefault(split, Split({}, {}))
        (part.targets if name in target_names else part.inputs)[name] = a
    if "train" not in splits:
        raise _err("E601", f"`{spec}` has no train/... entries")
    for name, part in splits.items():
        missing = sorted((inputs_names - set(part.inputs)) | (target_names - set(part.targets)))
        if missing:
            raise _err("E601", f"`{spec}`: split `{name}` lacks `{name}/{missing[0]}`")
    train = splits.pop("train")
    return LearnedData(os.path.basename(spec), train, splits)


def evaluate(trainer: "LearnedTrainer", split: Split, batch: int = 512) -> dict:
    """{"loss", "accuracy", "exact"} of a split: the mean loss; for the softmax/sigmoid decoders the fraction of
    (example, decoder) predictions that are right, and the fraction of examples whose every prediction is right
    (a Sudoku solved exactly)."""
    n = len(split)
    tot, right, count, exact_all = 0.0, 0.0, 0, np.ones(n, dtype=bool)
    classify = [d for d in trainer.G.graph["learned"].decoders if d.kind in ("softmax", "sigmoid")]
    from ..lowering import to_numpy

    for s in range(0, n, batch):
        part = split.take(np.arange(s, min(n, s + batch)))
        tot += trainer.loss(part) * len(part)
        if classify:
            pred = trainer.predict(part)
            for d in classify:
                p, y = to_numpy(pred[d.target]), np.asarray(part.targets[d.target])
                ok = (p.argmax(1) == y.argmax(1)) if d.kind == "softmax" else ((p > 0.5) == (y > 0.5)).all(1)
                right += float(ok.sum())
                count += len(ok)
                exact_all[s:s + len(part)] &= ok
    out = {"loss": tot / max(n, 1)}
    if classify:
        out["accuracy"] = right / max(count, 1)
        out["exact"] = float(exact_all.mean())
    return out


def learned_config(G, overrides: dict | None = None):
    """The training config of a learned model: ``overrides`` over its ``train`` statement over the defaults, the
    trainer ``unrolled`` unless one of :data:`LEARNED_TRAINERS` is named (E612 for a network sheaf's trainer)."""
    from .config import TrainConfig
    from .data import is_data_file, resolve_data
    from .fit import model_dir

    train, over = dict(G.graph.get("train") or {}), {k: v for k, v in (overrides or {}).items() if v is not None}
    _builtin_tasks()
    named = over.get("trainer", train.get("trainer"))
    if named is not None and named not in LEARNED_TRAINERS:
        raise _err("E612", f"the `{named}` trainer trains a network sheaf; this is a learned consensus model",
                   "use --trainer " + " | ".join(LEARNED_TRAINERS) + " (docs/admm.md, \"Learning\")")
    if named is None:
        over["trainer"] = "unrolled"
    for d, base in ((over, os.getcwd()), (train, model_dir(G))):
        if d.get("data") is not None and d["data"] not in LEARNED_TASKS and is_data_file(d["data"]):
            d["data"] = resolve_data(d["data"], base)
    if over.get("data") is None and train.get("data") is None:
        raise _err("E600", "a learned model names its data: `train data=NAME` (a registered task) or --data FILE.npz",
                   "tasks: " + (", ".join(sorted(LEARNED_TASKS)) or "none registered"))
    return TrainConfig.from_sources(train, over)


def fit_learned(G, config, *, data: LearnedData | None = None, params: dict | None = None, on_step=None,
                xp=np) -> dict:
    """Train a learned model with ``config`` (a TrainConfig: trainer, iterations, window, rho, nudge, steps, batch,
    optimizer, lr and its ``lr_schedule`` over the steps, seed); return {"trainer", "params", "data", "result"}: the result has the step count, the
    seconds inside the steps, and the loss/accuracy/exact of the train split and of each test split
    (``test_loss``, ``test_accuracy`` ... for the first, ``tests`` for all), and ``residuals``: the ADMM primal
    and dual residual per iteration on the first test split's first examples."""
    from .optim import scheduled_lr

    data = data if data is not None else load_learned_data(G, config)
    name = config.trainer if config.trainer in LEARNED_TRAINERS else "unrolled"
    tr = LearnedTrainer(G, trainer=name, iterations=config.iterations, window=config.window, rho=config.rho,
                        nudge=config.nudge, optimizer=config.optimizer, lr=config.lr, momentum=config.momentum,
                        seed=config.seed, params=params, xp=xp)
    n = len(data.train)
    rng = np.random.default_rng(config.seed)
    batch = min(config.batch or n, n)
    order, pos = rng.permutation(n), 0
    seconds = 0.0
    losses = []
    for t in range(config.steps):
        tr.opt.lr = scheduled_lr(config.lr, t, config.steps, config.lr_schedule)
        if pos + batch > n:
            order, pos = rng.permutation(n), 0
        rec = tr.step(data.train.take(order[pos:pos + batch]))
        pos += batch
        seconds += rec["seconds"]
        losses.append(rec["loss"])
        if on_step is not None:
            on_step(t + 1, rec["loss"])
    result = {"trainer": name, "steps": tr.step_count, "seconds": round(seconds, 6), "iterations": tr.iterations}
    for k, v in evaluate(tr, data.train).items():
        result[f"train_{k}"] = v
    tests = {k: evaluate(tr, v) for k, v in data.tests.items()}
    if tests:
        first = next(iter(tests.values()))
        for k, v in first.items():
            result[f"test_{k}"] = v
        result["tests"] = tests
        probe = next(iter(data.tests.values())).take(np.arange(min(8, len(next(iter(data.tests.values()))))))
        it = tr.equilibrium(probe, method="admm", iterations=max(tr.iterations, 200), trace=True)[2]
        result["residuals"] = {"primal": [float(v) for v in it.primal], "dual": [float(v) for v in it.dual]}
    result["loss_curve"] = losses
    return {"trainer": tr, "params": tr.params, "data": data, "result": result}


def write_learned_run(out, params: dict, result: dict, config) -> None:
    """``params.npz`` (the trained parameters) and ``summary.json`` (the result and the config) in ``out``, each
    written atomically."""
    import io

    from ..fileio import atomic_write_bytes
    from ..lowering import to_numpy
    from .run import atomic_write_json

    os.makedirs(out, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **{k: to_numpy(v) for k, v in params.items()})
    atomic_write_bytes(os.path.join(out, "params.npz"), buf.getvalue())
    atomic_write_json(os.path.join(out, "summary.json"), {**result, "config": config.to_dict()})


__all__ = ["evaluate", "fit_learned", "write_learned_run", "learned_config", "load_learned_data", "LEARNED_TRAINERS", "LEARNED_TASKS", "LearnedData", "LearnedTrainer", "Split", "grid_sizes",
           "observations", "register_task"]
