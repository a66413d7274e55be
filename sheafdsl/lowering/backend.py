"""The array backend: one module ``xp`` (numpy or cupy), chosen once and passed down.

Algorithms take ``xp`` (or arrays that already live on it) and never branch on which it is.

>>> xp = get_backend("numpy")
>>> xp.__name__
'numpy'
"""

from __future__ import annotations

import contextlib

import numpy as np

from ..errors import Diagnostic, SheafError
from ..options import BACKENDS  # noqa: F401 (re-exported: the one list of backend names)


@contextlib.contextmanager
def blas_threads(n: int | None):
    """Limit the BLAS (and OpenMP) thread pools to ``n`` threads inside the block (None: leave them)."""
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_limits  # it limits the pools of the libraries already loaded (numpy's)

    with threadpool_limits(limits=int(n)):
        yield


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    try:
        import cupy  # type: ignore

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, CUDA driver errors: no usable GPU
        return False


def get_backend(name: str = "numpy"):
    """Return the array module for ``name``: numpy, cupy, or auto (cupy when a GPU is usable)."""
    if name == "numpy":
        return np
    if name in ("cupy", "auto"):
        if cupy_available():
            import cupy  # type: ignore

            return cupy
        if name == "auto":
            return np
        raise SheafError(Diagnostic("E500", "the cupy backend needs CuPy and an NVIDIA GPU, and none is usable",
                                    hint="install the extra with `pip install 'sheafdsl[cuda]'`, or use --backend numpy"))
    raise SheafError(Diagnostic("E500", f"unknown backend `{name}`", hint="use one of: " + ", ".join(BACKENDS)))


def scipy_module(xp, name: str):
    """``scipy.<name>`` for numpy, ``cupyx.scipy.<name>`` for cupy (e.g. ``sparse``, ``sparse.linalg``,
    ``special``): the one place the backend is named, used once per lowering or per nonlinearity."""
    import importlib

    return importlib.import_module(("scipy." if xp.__name__ == "numpy" else "cupyx.scipy.") + name)


def to_numpy(a):
    """A host (numpy) copy of an array from any backend."""
    get = getattr(a, "get", None)
    return get() if callable(get) else np.asarray(a)


def array_module(a):
    """The module an array belongs to (numpy for anything that is not a cupy array)."""
    mod = type(a).__module__.split(".")[0]
    if mod == "cupy":
        import cupy  # type: ignore

        return cupy
    return np
