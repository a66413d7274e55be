"""Training configuration: one validated dataclass, merged from three sources.

Precedence (highest first): command-line overrides (a value of ``None`` means "not given"), the
model's ``train`` statement, then the dataclass defaults below.

>>> cfg = TrainConfig.from_sources({"steps": 500, "lr": 0.05}, {"lr": 0.001, "seed": None})
>>> cfg.steps, cfg.lr, cfg.seed
(500, 0.001, 0)

One field per option of :data:`sheafdsl.options.TRAIN_OPTIONS` (the table the checker's ``train``
statement reads too), with its default; validation uses the same table. Meaning of the fields:

- ``data`` (a built-in task or a ``.csv``/``.npz`` path), ``n``/``n_test`` (train/test sizes),
  ``noise`` (None: the task's default), ``data_seed`` (the data's seed, 42 as in docs/tasks.md),
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

from ..errors import Diagnostic, SheafError, did_you_mean
from ..options import TRAIN_OPTIONS, problem

__all__ = ["TrainConfig"]


def _bad(field: str, value, want: str) -> SheafError:
    return SheafError(Diagnostic("E610", f"training option `{field}` wants {want}, not `{value!r}`"))


class _Methods:
    @classmethod
    def from_sources(cls, model_defaults: dict | None = None, overrides: dict | None = None) -> "TrainConfig":
        """Merge ``overrides`` (None values ignored) over ``model_defaults`` over the defaults, then validate."""
        merged: dict = {}
        for source in (model_defaults or {}, overrides or {}):
            for key, value in source.items():
                if key not in TRAIN_OPTIONS:
                    raise SheafError(Diagnostic("E610", f"unknown training option `{key}`",
                                                hint=did_you_mean(key, TRAIN_OPTIONS)
                                                or "options: " + ", ".join(sorted(TRAIN_OPTIONS))))
                if value is not None:
                    merged[key] = value
        cfg = cls(**merged)
        cfg.validate()
        return cfg

    def validate(self) -> "TrainConfig":
        """Coerce numeric types and check every value against :data:`TRAIN_OPTIONS`; SheafError E610 on a bad one."""
        for name, opt in TRAIN_OPTIONS.items():
            v = getattr(self, name)
            if v is not None:
                if opt.type is int:
                    if isinstance(v, bool) or not isinstance(v, (int, float)) or (
                            isinstance(v, float) and not v.is_integer()):
                        raise _bad(name, v, "an integer")
                    v = int(v)
                elif opt.type is float:
                    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
                        raise _bad(name, v, "a finite number")
                    v = float(v)
                elif not isinstance(v, opt.type) or (opt.type is str and not v):
                    raise _bad(name, v, opt.kind())
            want = problem(name, v)
            if want is not None:
                raise SheafError(Diagnostic("E610", f"training option `{name}` must be {want}, not `{v!r}`"))
            setattr(self, name, v)
        return self

    def to_dict(self) -> dict:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)


#: every knob of a training run: one field per :data:`TRAIN_OPTIONS` entry, with its default
TrainConfig = dataclasses.make_dataclass(
    "TrainConfig", [(name, opt.type if not opt.optional else opt.type | None, dataclasses.field(default=opt.default))
                    for name, opt in TRAIN_OPTIONS.items()], bases=(_Methods,), namespace={"__module__": __name__})
TrainConfig.__doc__ = "Every knob of a training run (see the module docstring); fields: " + ", ".join(TRAIN_OPTIONS) + "."
