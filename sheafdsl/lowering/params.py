"""Parameter values: initialisation from a :class:`~sheafdsl.ir.ParamSpec` (seeded), and file loading."""

from __future__ import annotations

import os

import numpy as np

from ..errors import Diagnostic, SheafError
from ..ir import param_specs


def init_param(name: str, spec, rng: np.random.Generator) -> np.ndarray:
    """One parameter's initial value (float64, on the host).

    he: N(0, 2/fan_in); xavier: N(0, 2/(fan_in + fan_out)); normal(std); zeros; ones; a literal
    (a number fills the shape); or a ``.npz``/``.npy`` file entry.
    """
    shape = spec.shape
    if spec.init == "he":
        return rng.normal(0.0, np.sqrt(2.0 / shape[1]), size=shape)
    if spec.init == "xavier":
        return rng.normal(0.0, np.sqrt(2.0 / (shape[0] + shape[1])), size=shape)
    if spec.init == "normal":
        return rng.normal(0.0, float(spec.std), size=shape)
    if spec.init == "zeros":
        return np.zeros(shape)
    if spec.init == "ones":
        return np.ones(shape)
    if spec.init == "literal":
        return np.broadcast_to(np.asarray(spec.value, dtype=float), shape).copy()
    if spec.init == "file":
        return _load(name, spec)
    raise ValueError(f"unknown initialiser {spec.init!r}")


def _load(name: str, spec) -> np.ndarray:
    path = spec.file if os.path.isabs(spec.file) else os.path.join(spec.base_dir, spec.file)
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.ndarray):
            arr = data
        else:
            with data:
                if spec.key not in data.files:
                    raise SheafError(Diagnostic("E236", f"`{spec.file}` has no entry `{spec.key}` for parameter `{name}`",
                                                hint="entries: " + ", ".join(data.files) if data.files else None))
                arr = data[spec.key]
    except SheafError:
        raise
    except (OSError, ValueError) as exc:
        raise SheafError(Diagnostic("E236", f"cannot load parameter `{name}` from `{spec.file}`: {exc}")) from None
    arr = np.asarray(arr, dtype=float)
    if arr.shape != tuple(spec.shape):
        raise SheafError(Diagnostic("E236", f"`{spec.file}`:{spec.key} has shape {arr.shape} but parameter `{name}` "
                                    f"is declared {tuple(spec.shape)}"))
    if not np.all(np.isfinite(arr)):
        raise SheafError(Diagnostic("E236", f"`{spec.file}`:{spec.key} holds NaN or infinite values"))
    return arr


def init_params(G, seed: int = 0, xp=np) -> dict:
    """Every parameter of the sheaf, initialised from one seed in declaration order.

    >>> from sheafdsl.frontend import load_text
    >>> from sheafdsl.ir import from_model
    >>> P = init_params(from_model(load_text("sheaf t\\nnetwork n : 2 -> 3 -> 1\\n")), seed=0)
    >>> {k: v.shape for k, v in P.items()}
    {'W1': (3, 2), 'b1': (3,), 'W2': (1, 3), 'b2': (1,)}
    """
    rng = np.random.default_rng(seed)
    return {name: xp.asarray(init_param(name, spec, rng)) for name, spec in param_specs(G).items()}
