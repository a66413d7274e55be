"""Checkpoints: one ``.npz`` holding the parameters, the trainer state and the run's metadata.

Layout of ``checkpoint.npz`` (loadable with ``numpy.load(..., allow_pickle=False)``):

- ``<param>``: each parameter θ under its own name (``W1``, ``b1``...), so a model file can start
  from a trained run with ``param W1 : 30 x 2 init "runs/x/checkpoint.npz":W1``;
- ``state/<key>``: the trainer's :meth:`state_dict` (parameters, optimiser moments, step count,
  RNG state...), everything needed to continue exactly;
- ``baseline/<key>``: the baseline trainer's state, when a baseline runs beside the trainer;
- ``__meta__``: the metadata (config, seed, step, versions, the model's SHA-256...) as a JSON string.

The metadata sits inside the same file as the arrays, so one atomic ``os.replace`` commits all of
it: a checkpoint can never pair the parameters of step 200 with the metadata of step 150.
``meta.json`` beside it is a readable copy, written after the checkpoint.

>>> import numpy as np, tempfile, os
>>> d = tempfile.mkdtemp()
>>> p = os.path.join(d, "checkpoint.npz")
>>> save_checkpoint(p, params={"W": np.eye(2)}, state={"step": np.array(3)}, meta={"step": 3})
>>> ck = load_checkpoint(p)
>>> ck.meta["step"], ck.params["W"].tolist(), int(ck.state["step"])
(3, [[1.0, 0.0], [0.0, 1.0]], 3)
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import dataclass, field

import numpy as np

from ..errors import Diagnostic, SheafError
from .run import atomic_write

FORMAT = 1
META_KEY = "__meta__"
STATE_PREFIX = "state/"
BASELINE_PREFIX = "baseline/"


@dataclass
class Checkpoint:
    """A loaded checkpoint: ``params`` (name -> array), ``state`` and ``baseline`` (the trainers'
    state dicts; ``baseline`` is None when no baseline ran) and ``meta`` (a dict)."""

    params: dict[str, np.ndarray]
    state: dict[str, np.ndarray]
    meta: dict
    baseline: dict[str, np.ndarray] | None = None
    path: str = field(default="", compare=False)

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict[str, str]:
    """Versions of what produced the numbers: sheafdsl, python, numpy, scipy (read from the installed
    package's metadata: importing scipy only for its version would cost more than a short run's step)."""
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    try:
        scipy_version = version("scipy")
    except PackageNotFoundError:  # pragma: no cover - scipy is a core dependency
        scipy_version = None
    return {"sheafdsl": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy_version}


def _host(name: str, value) -> np.ndarray:
    get = getattr(value, "get", None)  # cupy -> numpy
    arr = np.asarray(get() if callable(get) else value)
    if arr.dtype == object:
        raise TypeError(f"checkpoint entry {name!r} is not a numeric array (dtype object)")
    return arr


def checkpoint_arrays(params: dict, state: dict, meta: dict, baseline: dict | None = None) -> dict[str, np.ndarray]:
    """The flat name -> array mapping stored in the ``.npz`` (see the module docstring)."""
    arrays: dict[str, np.ndarray] = {}
    for k, v in params.items():
        if "/" in k or k == META_KEY:
            raise ValueError(f"parameter name {k!r} cannot be stored in a checkpoint")
        arrays[k] = _host(k, v)
    for k, v in state.items():
        arrays[STATE_PREFIX + k] = _host(k, v)
    for k, v in (baseline or {}).items():
        arrays[BASELINE_PREFIX + k] = _host(k, v)
    arrays[META_KEY] = np.array(json.dumps({"format": FORMAT, **meta}, default=_json_default))
    return arrays


def save_checkpoint(path: str | os.PathLike, *, params: dict, state: dict, meta: dict,
                    baseline: dict | None = None) -> None:
    """Write a checkpoint atomically (temp file in the same directory, fsync, ``os.replace``).

    If anything fails before the rename (a full disk, an interrupt), the previous checkpoint at
    ``path`` is left exactly as it was.
    """
    arrays = checkpoint_arrays(params, state, meta, baseline)
    atomic_write(path, lambda fh: np.savez(fh, **arrays))


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`; a damaged file raises SheafError (E632)."""
    from ..fileio import load_npz

    path = os.fspath(path)
    try:
        arrays = load_npz(path, code="E632", what="checkpoint")
    except SheafError as exc:
        d = exc.diagnostics[0]
        if "does not exist" in d.message:
            raise SheafError(Diagnostic("E632", f"no checkpoint at `{path}`", file=path)) from None
        raise SheafError(Diagnostic("E632", f"{d.message}; it is damaged or not a sheafdsl checkpoint",
                                    hint=d.hint, file=path)) from None
    if META_KEY not in arrays:
        raise SheafError(Diagnostic("E632", f"`{path}` is not a sheafdsl checkpoint (it has no metadata entry)"))
    try:
        meta = json.loads(str(arrays.pop(META_KEY)))
        if not isinstance(meta, dict):
            raise json.JSONDecodeError("not an object", "", 0)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise SheafError(Diagnostic("E632", f"checkpoint `{path}` has unreadable metadata: {exc}")) from None
    if meta.get("format") != FORMAT:
        raise SheafError(Diagnostic("E632", f"checkpoint `{path}` has format {meta.get('format')!r}; "
                                    f"this sheafdsl reads format {FORMAT}"))
    params, state, baseline = {}, {}, {}
    for k, v in arrays.items():
        if k.startswith(STATE_PREFIX):
            state[k[len(STATE_PREFIX):]] = v
        elif k.startswith(BASELINE_PREFIX):
            baseline[k[len(BASELINE_PREFIX):]] = v
        else:
            params[k] = v
    for name, v in params.items():
        if v.dtype.kind not in "biuf":
            raise SheafError(Diagnostic("E632", f"checkpoint `{path}`: entry `{name}` is not a real numeric array "
                                                f"(dtype {v.dtype})", file=path))
    return Checkpoint(params, state, meta, baseline if baseline else None, path)


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    return str(o)


__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "checkpoint_arrays", "sha256_text", "sha256_file",
           "versions", "FORMAT"]
