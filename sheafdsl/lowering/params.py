"""Parameter values: initialisation from a :class:`~sheafdsl.ir.ParamSpec` (seeded), and file loading."""

from __future__ import annotations

import math
import os
import zipfile

import numpy as np

from ..errors import NOSPAN, Diagnostic, SheafError
from ..ir import param_specs
from .backend import to_numpy


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
    """``init "f.npz":KEY`` (or an ``.npy``): errors name the model file at the parameter's declaration."""
    from ..fileio import load_npy, load_npz, real_array

    path = spec.file if os.path.isabs(spec.file) else os.path.join(spec.base_dir, spec.file)
    where = dict(span=getattr(spec, "span", None) or NOSPAN, file=getattr(spec, "model_file", None) or "<input>")

    def fail(message, hint=None):
        return SheafError(Diagnostic("E236", message, hint=hint, **where))

    try:
        if path.lower().endswith(".npy"):
            arr = load_npy(path, code="E236", what=f"initialiser file of `{name}`")
        else:
            data = load_npz(path, code="E236", what=f"initialiser file of `{name}`", wanted=lambda k: k == spec.key)
            if spec.key not in data:
                raise fail(f"`{spec.file}` has no entry `{spec.key}` for parameter `{name}`", _entries(path))
            arr = data[spec.key]
        arr = real_array(arr, code="E236", path=path, what=f"`{spec.file}`:{spec.key}")
    except SheafError as exc:  # the file's own problem, reported at the declaration that names it
        d = exc.diagnostics[0]
        if d.file == where["file"]:
            raise
        raise fail(d.message if spec.file in d.message else f"{d.message} (`{spec.file}`)", d.hint) from None
    if arr.shape != tuple(spec.shape):
        raise fail(f"`{spec.file}`:{spec.key} has shape {arr.shape} but parameter `{name}` is declared "
                   f"{tuple(spec.shape)}")
    if not np.all(np.isfinite(arr)):
        raise fail(f"`{spec.file}`:{spec.key} holds NaN or infinite values")
    return arr


def _entries(path: str) -> str | None:
    try:
        with zipfile.ZipFile(path) as z:
            names = [n[:-4] if n.endswith(".npy") else n for n in z.namelist()]
    except (OSError, zipfile.BadZipFile):
        return None
    return "entries: " + ", ".join(names) if names else "the file has no entries"


def init_params(G, seed: int = 0, xp=np) -> dict:
    """Every parameter of the sheaf, initialised from one seed in declaration order.

    >>> from sheafdsl.frontend import load_text
    >>> from sheafdsl.ir import from_model
    >>> P = init_params(from_model(load_text("sheaf t\\nnetwork n : 2 -> 3 -> 1\\n")), seed=0)
    >>> {k: v.shape for k, v in P.items()}
    {'W1': (3, 2), 'b1': (3,), 'W2': (1, 3), 'b2': (1,)}
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SheafError(Diagnostic("E526", f"seed must be a whole number >= 0, not {seed!r}"))
    from ..resources import require_memory

    specs = param_specs(G)
    require_memory(8.0 * sum(math.prod(s.shape) for s in specs.values()) * 2,
                   f"the parameters of `{G.graph.get('name', 'sheaf')}` ({len(specs)} of them)",
                   hint="declare smaller parameters", file=G.graph.get("path", "<input>"))
    rng = np.random.default_rng(seed)
    return {name: xp.asarray(init_param(name, spec, rng)) for name, spec in specs.items()}


def check_shapes(G, params: dict) -> None:
    """Every given value of a declared parameter has its declared shape and holds numbers (E524).

    Cheap (no copy, no pass over the data): for the functions that take a parameter dict as it is.
    Missing parameters are left to the caller (E502 where a map needs one).
    """
    specs = param_specs(G)
    for k, v in params.items():
        spec = specs.get(k)
        if spec is None:
            continue
        shape, kind = getattr(v, "shape", None), getattr(getattr(v, "dtype", None), "kind", None)
        if shape is None:
            try:
                a = np.asarray(v)
            except (TypeError, ValueError):
                a = np.asarray(None)
            shape, kind = a.shape, a.dtype.kind
        if tuple(shape) != tuple(spec.shape) or kind not in "biuf":
            raise SheafError(Diagnostic("E524", f"parameter `{k}` has shape {tuple(shape)} (dtype kind {kind!r}), the "
                                        f"model declares {tuple(spec.shape)} of numbers"))


def check_params(G, params, *, where: str = "params", file: str = "<input>", code: str = "E524") -> dict:
    """Validate a parameter mapping against the declared names and shapes; float64 host copies.

    ``params`` maps every declared parameter name to an array of its declared shape, with finite
    numbers only (an npz's entries with a ``/`` in their name or starting with ``__``, a checkpoint's
    trainer state, are skipped). Anything else is a SheafError ``code`` (E524), naming ``where``.
    """
    specs = param_specs(G)
    if not hasattr(params, "keys"):
        raise SheafError(Diagnostic(code, f"{where} must map parameter names to arrays, not "
                                    f"{type(params).__name__}", file=file))
    arrays = {k: params[k] for k in params.keys() if not (isinstance(k, str) and ("/" in k or k.startswith("__")))}
    unknown = [k for k in arrays if k not in specs]
    if unknown:
        from ..errors import did_you_mean

        raise SheafError(Diagnostic(code, f"{where} holds `{unknown[0]}`, which is not a parameter of the model",
                                    hint=did_you_mean(str(unknown[0]), specs) or "parameters: " + ", ".join(specs),
                                    file=file))
    missing = [k for k in specs if k not in arrays]
    if missing:
        raise SheafError(Diagnostic(code, f"{where} has no value for parameter" + "s" * (len(missing) > 1) + " "
                                    + ", ".join(f"`{k}`" for k in missing), file=file))
    out = {}
    for k, spec in specs.items():
        try:
            a = to_numpy(arrays[k])
        except (TypeError, ValueError):
            raise SheafError(Diagnostic(code, f"{where}: parameter `{k}` is not an array of numbers", file=file)) from None
        if a.dtype.kind == "c":
            raise SheafError(Diagnostic(code, f"{where}: parameter `{k}` holds complex numbers (dtype {a.dtype}); "
                                        "only real numbers are accepted", file=file))
        if a.dtype.kind not in "biuf" or a.shape != tuple(spec.shape):
            raise SheafError(Diagnostic(code, f"{where}: parameter `{k}` has shape {a.shape} (dtype {a.dtype}), the "
                                        f"model declares {tuple(spec.shape)}", file=file))
        a = a.astype(float)
        if not np.all(np.isfinite(a)):
            raise SheafError(Diagnostic(code, f"{where}: parameter `{k}` holds NaN or infinite values", file=file))
        out[k] = a
    return out


#: the checkpoint file of a ``sheaf train`` run directory (it holds each parameter under its own name)
RUN_CHECKPOINT = "checkpoint.npz"


def load_params(G, path: str | os.PathLike | None = None, seed: int = 0, *, file: str = "<command line>") -> dict:
    """Parameters from an ``.npz`` of name -> array (e.g. a training checkpoint), or from a run
    directory (its ``checkpoint.npz``), validated by :func:`check_params`; or, without a path,
    :func:`init_params` from ``seed``."""
    if path is None:
        return init_params(G, seed)
    path = os.fspath(path)
    if os.path.isdir(path):
        ck = os.path.join(path, RUN_CHECKPOINT)
        if not os.path.isfile(ck):
            raise SheafError(Diagnostic("E524", f"`{path}` is a directory without a {RUN_CHECKPOINT}: not a run "
                                                "directory", file=file,
                                        hint="pass the --out directory of a `sheaf train` run, or an .npz file"))
        path = ck
    from ..fileio import load_npz

    arrays = load_npz(path, code="E524", what="parameter file", file=file,
                      wanted=lambda k: "/" not in k and not k.startswith("__"))
    return check_params(G, arrays, where=f"`{path}`", file=file)

