"""The choice lists and the training options: one table that every layer reads.

Plain data, no numerics, so that the front end (which must not import the numerics or training
layers) and the library both read it:

- the checker's ``train`` statement accepts exactly :data:`TRAIN_OPTIONS` (E280 otherwise; E282 a
  value of the wrong type or not one of the choices; E283 out of range);
- :class:`sheafdsl.training.config.TrainConfig` has one field per option, with its default, and
  validates with the same :func:`problem` (E610);
- the CLI's ``click.Choice`` lists, the solvers' method check and the trainers' lookup use the tuples
  below.

>>> TRAIN_OPTIONS["optimizer"].choices == OPTIMIZERS
True
>>> problem("momentum", 1.0)
'in [0, 1)'
>>> problem("lr", 0.01) is None
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: ``solve(..., method=...)`` and ``sheaf infer --solver``
SOLVE_METHODS = ("exact", "diffusion", "cg", "admm", "admm-local")
#: the terms of a stalk's local convex objective (``objective STALK KIND ...``; ``sheafdsl.ir.ObjectiveSpec``)
OBJECTIVE_KINDS = ("quadratic", "nonneg", "box", "simplex", "l1")
#: the terms a learned model's agents may carry (beside ``encoded``): a quadratic, and the bounds the implicit trainer
#: differentiates on its active set
LEARNED_OBJECTIVE_KINDS = ("encoded", "quadratic", "nonneg", "box")
#: the fast phase of the sheaf trainer (``train solver=...``, ``sheaf train --solver``)
TRAIN_SOLVERS = ("exact", "diffusion")
#: ``train trainer=...``: exact equilibrium + local update, the paper's joint Euler flow, the baseline
TRAINERS = ("sheaf", "joint", "backprop")
#: the trainers of a learned consensus model (docs/admm.md "Learning"): reverse mode through K ADMM steps, the
#: implicit (KKT adjoint) gradient of the equilibrium, the contrastive local rule
LEARNED_TRAINERS = ("unrolled", "implicit", "local")
#: ``train optimizer=...``
OPTIMIZERS = ("sgd", "momentum", "adam")
#: array backends (``lowering.get_backend``; ``auto`` picks cupy when a GPU is usable)
BACKENDS = ("numpy", "cupy", "auto")
#: ``train lr_schedule=...``: the learning rate of a learned model's trainers (and its task's baseline) over the run
LR_SCHEDULES = ("constant", "cosine")
#: where the joint flow's stalks start: at zero, at the forward pass, or random (N(0, 1), from the seed)
JOINT_INITS = ("zeros", "forward", "random")
#: boundary names of ``sheaf verify --boundary`` and the API (their pin sources: ``sheafdsl.ir.BOUNDARIES``)
BOUNDARY_NAMES = ("training", "inference")
#: which examples ``sheaf diagnose --split`` pins
SPLITS = ("train", "test")

#: activation patterns ``sheaf spectrum`` samples when no inputs fix the gates
SPECTRUM_SAMPLES = 100

#: parameter initialisers (``init he`` ..., a file entry, or a literal written in the model)
INIT_KINDS = ("he", "xavier", "zeros", "ones", "normal", "file", "literal")
#: the largest stalk dimension or width, and the most entries a parameter may have (E211)
MAX_DIM = 1_000_000
MAX_PARAM_SIZE = 100_000_000

INT_MAX = 2**31 - 1
SEED_MAX = 2**32 - 1


@dataclass(frozen=True)
class Option:
    """One ``train`` option: its type, default, and allowed values.

    ``choices`` (for a name), or the interval ``low .. high`` (``low_open``/``high_open`` exclude an
    end); ``optional``: None is allowed (the default None means "derived", e.g. ``batch``: the full set).
    """

    type: type
    default: object
    doc: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False

    def kind(self) -> str:
        """The option's type (or its choices), as the error messages say it."""
        if self.choices:
            return " | ".join(self.choices)
        return {int: "a whole number", float: "a number", str: "a name or a quoted string", bool: "true or false"}[self.type]

    def want(self) -> str:
        """Every value the option accepts, as the error messages say it."""
        if self.choices or self.type in (bool, str):
            return self.kind()
        if self.type is int:
            return f"a whole number from {int(self.low)} to {int(self.high)}"
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'greater than' if self.low_open else 'at least'} {self.low:g}"
        return "a finite number"


def _int(default, low, high=INT_MAX, doc="", **kw):
    return Option(int, default, doc, low=low, high=high, **kw)


def _float(default, doc="", low=0.0, low_open=True, **kw):
    return Option(float, default, doc, low=low, low_open=low_open, **kw)


#: every training option, in the order TrainConfig lists its fields
TRAIN_OPTIONS: dict[str, Option] = {
    "data": Option(str, "paraboloid", "a built-in task (paraboloid, saddle, circle, blobs, digits, hopf, torus:K) or a .csv/.npz path"),
    "n": _int(300, 1, doc="training examples"),
    "n_test": _int(100, 1, doc="test examples"),
    "noise": _float(None, "label noise (None: the task's default)", low_open=False, optional=True),
    "steps": _int(3000, 0, doc="optimiser steps"),
    "batch": _int(None, 1, doc="mini-batch size (None: the full training set)", optional=True),
    "optimizer": Option(str, "adam", "the optimiser on the local gradients", choices=OPTIMIZERS),
    "lr": _float(0.01, "learning rate"),
    "momentum": _float(0.9, "momentum (momentum and adam's β₁)", low_open=False, high=1.0, high_open=True),
    "trainer": Option(str, "sheaf", "sheaf (exact equilibrium + local update), joint (the paper's Euler flow) or "
                      "backprop (the baseline); for a learned model unrolled, implicit or local (default unrolled)",
                      choices=TRAINERS + LEARNED_TRAINERS),
    "solver": Option(str, "exact", "the sheaf trainer's fast phase: exact, or diffusion (the heat equation)",
                     choices=TRAIN_SOLVERS),
    "seed": _int(0, 0, SEED_MAX, doc="initialises the parameters and orders the mini-batches"),
    "standardize": Option(bool, False, "inputs to zero mean and unit variance (fitted on the training split)"),
    "log_every": _int(50, 1, doc="log metrics and checkpoint every K steps"),
    "alpha": _float(1.0, "the joint flow's stalk rate α"),
    "beta": _float(None, "the joint flow's weight rate β (None: 1/n_train)", optional=True),
    "dt": _float(0.005, "the joint flow's Euler step"),
    "tol": _float(1e-10, "the fast phase's tolerance"),
    "backend": Option(str, "numpy", "the array backend", choices=BACKENDS),
    "data_seed": _int(42, 0, SEED_MAX, doc="the data's seed"),
    "iterations": _int(20, 1, doc="a learned model's Sheaf-ADMM iterations K (the unrolled trainer's forward pass)"),
    "window": _int(0, 0, doc="the unrolled trainer's truncated window: backpropagate through the last W iterations "
                   "(0: all)"),
    "rho": _float(1.0, "a learned model's ADMM penalty ρ"),
    "nudge": _float(0.1, "the local trainer's nudge β: the weight of the loss in the two-sided energy"),
    "lr_schedule": Option(str, "constant", "a learned model's learning rate over the steps: constant, or cosine "
                          "(η_t = η (1 + cos(π t / steps)) / 2)", choices=LR_SCHEDULES),
    "joint_init": Option(str, "zeros", "where the joint flow's stalks start: zeros, the forward pass, or random "
                         "(N(0, 1) entries from the seed)", choices=JOINT_INITS),
    "joint_reinit": _int(0, 0, doc="the joint flow's epoch: its stalks restart at the forward pass every K steps "
                         "(0: never)"),
}


def problem(name: str, value) -> str | None:
    """None when ``value`` (already of the option's type, or None) is allowed; else what the option wants.

    The caller has checked that ``name`` is an option and converted the value to its type.
    """
    opt = TRAIN_OPTIONS[name]
    if value is None:
        return None if opt.optional else opt.want()
    if opt.choices is not None:
        return None if value in opt.choices else opt.want()
    if opt.type in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return opt.want()
        if opt.low is not None and (value <= opt.low if opt.low_open else value < opt.low):
            return opt.want()
        if opt.high is not None and (value >= opt.high if opt.high_open else value > opt.high):
            return opt.want()
    return None


__all__ = ["SOLVE_METHODS", "TRAIN_SOLVERS", "TRAINERS", "LEARNED_TRAINERS", "OPTIMIZERS", "BACKENDS", "JOINT_INITS", "LR_SCHEDULES", "BOUNDARY_NAMES",
           "SPLITS", "SPECTRUM_SAMPLES", "INIT_KINDS", "MAX_DIM", "MAX_PARAM_SIZE", "Option", "TRAIN_OPTIONS", "problem"]
