"""The array backend: one module ``xp`` (numpy or cupy), chosen once and passed down.

Algorithms take ``xp`` (or arrays that already live on it) and never branch on which it is.

>>> xp = get_backend("numpy")
>>> xp.__name__
'numpy'
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np

from ..errors import Diagnostic, SheafError
from ..options import BACKENDS  # noqa: F401 (re-exported: the one list of backend names)


@contextlib.contextmanager
def blas_threads(n: int | None):
    """Limit the BLAS (and OpenMP) thread pools to ``n`` threads inside the block (None: leave them).

    threadpoolctl limits the pools of the libraries loaded when the block starts, so SciPy's BLAS (its own
    OpenBLAS, which the fused steps call through ``scipy.linalg.blas``: :class:`Fused`) is loaded first;
    loaded later inside the block, it would keep one thread per core.
    """
    if n is None:
        yield
        return
    import scipy.linalg.blas  # noqa: F401 (loaded before the limits are set: see above)
    from threadpoolctl import threadpool_limits

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


#: rows of a batch that one batched solve takes at a time on a CPU (:func:`block_rows`)
CPU_BLOCK_ROWS = 4096


def block_rows(xp) -> int | None:
    """The rows of a batch that a batched solve should take at a time on ``xp``, or None for all of them.

    On a CPU (numpy) a block of :data:`CPU_BLOCK_ROWS` examples keeps a step's stalks and temporaries in
    cache: a 10⁵-example sheaf-rule step of a [2, 30, 1] net is memory-bound otherwise (1.15 µs of CPU an
    example, against 0.75 in blocks; ``benchmarks/bench_distributed.py``). A GPU (cupy) wants the whole
    batch.

    >>> block_rows(np)
    4096
    """
    return None if xp.__name__.startswith("cupy") else CPU_BLOCK_ROWS


def scipy_module(xp, name: str):
    """``scipy.<name>`` for numpy, ``cupyx.scipy.<name>`` for cupy (e.g. ``sparse``, ``sparse.linalg``,
    ``special``): the one place the backend is named, used once per lowering or per nonlinearity."""
    import importlib

    return importlib.import_module(("scipy." if xp.__name__ == "numpy" else "cupyx.scipy.") + name)


class Fused:
    """In-place updates fused into one pass, bound once to their arrays and then called with no
    arguments (a step that repeats them on preallocated buffers pays the checks and the views once):

    - ``axpy(a, x, y)``: y += a·x (x, y of one shape);
    - ``gemm(alpha, A, B, C)``: C += α·A B (C (n, k), A (n, m), B (m, k));
    - ``product(A, B, C)``: C = A B, and ``affine(v, A, b, T)``: T = v Aᵀ + b, each a list of such updates
      computing what the numpy expression does, bit for bit, in fewer passes.

    On numpy, with C-contiguous float64 outputs, they are BLAS calls (daxpy; dger for a rank-one
    product, m = 1; dgemm with β = 1) writing into y and C with no temporary; otherwise (another
    backend, or a strided output) the plain expressions. A call returns what BLAS returns (the output). The arrays must keep their memory while the
    bound update is in use (views into buffers allocated once).

    >>> import numpy as np
    >>> f = fused(np)
    >>> y = np.ones(3); up = f.axpy(2.0, np.arange(3.0), y)
    >>> _ = up(); y
    array([1., 3., 5.])
    >>> _ = up(); y
    array([1., 5., 9.])
    >>> C = np.zeros((2, 2)); _ = f.gemm(1.0, np.ones((2, 1)), np.array([[1.0, 2.0]]), C)(); C
    array([[1., 2.],
           [1., 2.]])
    """

    def __init__(self, xp):
        self.xp = xp
        self.blas = None
        if xp is np:
            from scipy.linalg import blas

            self.blas = blas

    @staticmethod
    def _writable_f64(a) -> bool:
        return a.dtype == np.float64 and a.flags.c_contiguous and a.flags.aligned and a.flags.writeable

    def axpy(self, a: float, x, y):
        """The bound update y += a·x."""
        a = float(a)
        if self.blas is None or not (self._writable_f64(y) and x.dtype == np.float64 and x.flags.c_contiguous
                                     and x.shape == y.shape):
            def up():
                y.__iadd__(a * x)
            return up
        return functools.partial(self.blas.daxpy, x.reshape(-1), y.reshape(-1), a=a)

    def gemm(self, alpha: float, A, B, C):
        """The bound update C += α·A B."""
        alpha = float(alpha)
        if self.blas is None or not (self._writable_f64(C) and A.ndim == B.ndim == 2):
            def up():
                C.__iadd__(alpha * (A @ B))
            return up
        # in Fortran order: Cᵀ += α Bᵀ Aᵀ, Cᵀ being C's memory as it is (F-contiguous: updated in place)
        if A.shape[1] == 1:  # a rank-one product: ger
            b, a = B.reshape(-1), A.reshape(-1)
            if not (b.flags.c_contiguous and a.flags.c_contiguous):  # a strided row: a copy each call
                return lambda: self.blas.dger(alpha, np.ascontiguousarray(B).reshape(-1),
                                              np.ascontiguousarray(A).reshape(-1), a=C.T, overwrite_a=1)
            return functools.partial(self.blas.dger, alpha, b, a, a=C.T, overwrite_a=1)
        ops = _fortran(B.T), _fortran(A.T)
        if None in ops:  # a strided operand: the plain expression (a copy at every call would be the same)
            return lambda: C.__iadd__(alpha * (A @ B))
        (a, ta), (b, tb) = ops
        return functools.partial(self.blas.dgemm, alpha, a, b, beta=1.0, c=C.T, trans_a=ta, trans_b=tb,
                                 overwrite_c=1)

    def product(self, A, B, C) -> list:
        """The bound ``C = A B`` (a list of updates), as ``A @ B`` computes it: a rank-one product
        (A with one column) as C = 0, then ger, instead of numpy's much slower path for it."""
        if A.ndim == B.ndim == 2 and A.shape[1] == 1 and self.blas is not None and self._writable_f64(C):
            return [functools.partial(C.fill, 0.0), self.gemm(1.0, A, B, C)]
        return [functools.partial(self.xp.matmul, A, B, out=C)]

    def affine(self, v, A, b, T) -> list:
        """The bound ``T = v Aᵀ + b`` (a list of updates; b may be None), bit for bit as ``v @ A.T + b``:
        where numpy's matmul is a BLAS gemm (more than one row and one column), as T = b broadcast, then
        gemm with β = 1 (no zeroing pass, no broadcast addition), else matmul and the addition."""
        xp = self.xp
        if (b is not None and self.blas is not None and self._writable_f64(T) and T.ndim == 2
                and T.shape[0] > 1 and T.shape[1] > 1):
            return [functools.partial(np.copyto, T, b), self.gemm(1.0, v, A.T, T)]
        ops = [functools.partial(xp.matmul, v, A.T, out=T)]
        if b is not None:
            ops.append(functools.partial(xp.add, T, b, out=T))
        return ops


def _fortran(M):
    """``M`` as a BLAS operand without a copy: (M, 0) when it is F-contiguous, (Mᵀ, 1) when Mᵀ is, else
    None."""
    if M.dtype != np.float64:
        return None
    if M.flags.f_contiguous:
        return M, 0
    if M.flags.c_contiguous:
        return M.T, 1
    return None


def outer(r, g, xp):
    """The outer product r gᵀ (B, d) of a column r (B, 1) and a row g (d,): one BLAS rank-1 product
    (``dot``), faster than broadcasting or ``einsum`` at a trainer's batch sizes.

    >>> outer(np.array([[1.0], [2.0]]), np.array([3.0, 4.0]), np).tolist()
    [[3.0, 4.0], [6.0, 8.0]]
    """
    return xp.dot(r, g[None, :])


def fused(xp) -> Fused:
    """The fused in-place updates of the backend ``xp`` (:class:`Fused`)."""
    return Fused(xp)


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
