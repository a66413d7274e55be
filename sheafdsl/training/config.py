"""Training configuration: one validated dataclass, merged from three sources.

Precedence (highest first): command-line overrides (a value of ``None`` means "not given"), the
model's ``train`` statement, then the dataclass defaults below.

>>> cfg = TrainConfig.from_sources({"steps": 500, "lr": 0.05}, {"lr": 0.001, "seed": None})
>>> cfg.steps, cfg.lr, cfg.seed
(500, 0.001, 0)

Meaning of the fields:

- ``data`` (a built-in task or a ``.csv``/``.npz`` path), ``n``/``n_test`` (train/test sizes),
  ``noise`` (None: the task's default), ``data_seed`` (the data's seed, 42 as in DESIGN §6),
  ``standardize`` (inputs to zero mean, unit variance, fitted on the training split);
- ``steps``, ``batch`` (None: full batch), ``optimizer`` (sgd | momentum | adam), ``lr``, ``momentum``;
- ``trainer``: ``sheaf`` (exact two-sided equilibrium, then the local edge update), ``joint`` (the
  paper's simultaneous forward-Euler flow of stalks and weights with ``alpha``, ``beta`` (None:
  1/n_train) and step ``dt``; ``joint_init``: its stalks start at ``zeros`` or at the ``forward``
  pass), ``backprop`` (the baseline);
- ``solver``: the fast phase of the sheaf trainer, ``exact`` or ``diffusion`` (the heat equation);
  ``tol`` its tolerance; ``seed`` initialises the parameters and orders the mini-batches;
- ``log_every`` (for the run loop), ``backend`` (numpy | cupy | auto).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..errors import Diagnostic, SheafError

OPTIMIZERS = ("sgd", "momentum", "adam")
TRAINERS = ("sheaf", "joint", "backprop")
SOLVERS = ("exact", "diffusion")
BACKENDS = ("numpy", "cupy", "auto")


def _bad(field: str, value, want: str) -> SheafError:
    return SheafError(Diagnostic("E610", f"training option `{field}` wants {want}, not `{value!r}`"))


@dataclass
class TrainConfig:
    """Every knob of a training run (see the module docstring)."""

    data: str = "paraboloid"
    n: int = 300
    n_test: int = 100
    noise: float | None = None
    steps: int = 3000
    batch: int | None = None
    optimizer: str = "adam"
    lr: float = 0.01
    momentum: float = 0.9
    trainer: str = "sheaf"
    solver: str = "exact"
    seed: int = 0
    standardize: bool = False
    log_every: int = 50
    alpha: float = 1.0
    beta: float | None = None
    dt: float = 0.005
    tol: float = 1e-10
    backend: str = "numpy"
    data_seed: int = 42
    joint_init: str = "zeros"

    @classmethod
    def from_sources(cls, model_defaults: dict | None = None, overrides: dict | None = None) -> "TrainConfig":
        """Merge ``overrides`` (None values ignored) over ``model_defaults`` over the defaults, then validate."""
        names = {f.name for f in dataclasses.fields(cls)}
        merged: dict = {}
        for source in (model_defaults or {}, overrides or {}):
            for key, value in source.items():
                if key not in names:
                    from ..errors import did_you_mean

                    raise SheafError(Diagnostic("E610", f"unknown training option `{key}`",
                                                hint=did_you_mean(key, names) or "options: " + ", ".join(sorted(names))))
                if value is not None:
                    merged[key] = value
        cfg = cls(**merged)
        cfg.validate()
        return cfg

    def validate(self) -> "TrainConfig":
        """Coerce numeric types and check every value; SheafError E610 on a bad one."""
        def as_int(name, lo):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
                raise _bad(name, v, "an integer")
            v = int(v)
            if v < lo:
                raise _bad(name, v, f"an integer >= {lo}")
            setattr(self, name, v)

        def as_float(name, positive=True, allow_none=False, upper=None):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
                raise _bad(name, v, "a finite number")
            v = float(v)
            if positive and not v > 0:
                raise _bad(name, v, "a positive number")
            if upper is not None and not v < upper:
                raise _bad(name, v, f"a number below {upper}")
            setattr(self, name, v)

        def choice(name, allowed):
            v = getattr(self, name)
            if v not in allowed:
                raise _bad(name, v, " | ".join(allowed))

        if not isinstance(self.data, str) or not self.data:
            raise _bad("data", self.data, "a task name or a .csv/.npz path")
        for name, lo in (("n", 1), ("n_test", 1), ("steps", 0), ("seed", 0), ("log_every", 1), ("data_seed", 0)):
            as_int(name, lo)
        if self.batch is not None:
            as_int("batch", 1)
        if self.noise is not None:
            as_float("noise", positive=False)
            if self.noise < 0:
                raise _bad("noise", self.noise, "a number >= 0")
        for name in ("lr", "alpha", "dt", "tol"):
            as_float(name)
        as_float("beta", allow_none=True)
        as_float("momentum", positive=False, upper=1.0)
        if self.momentum < 0:
            raise _bad("momentum", self.momentum, "a number in [0, 1)")
        choice("optimizer", OPTIMIZERS)
        choice("trainer", TRAINERS)
        choice("solver", SOLVERS)
        choice("backend", BACKENDS)
        choice("joint_init", ("zeros", "forward"))
        if not isinstance(self.standardize, bool):
            raise _bad("standardize", self.standardize, "true or false")
        return self

    def to_dict(self) -> dict:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)
