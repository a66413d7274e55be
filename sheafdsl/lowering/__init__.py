"""Lowering: from the IR to operators on an array backend (numpy | cupy).

The assembled (scipy.sparse) forms in :mod:`.assemble` load on first use: the training path of a
feed-forward network never needs scipy, and importing it costs a noticeable part of a short run.
"""

from .backend import BACKENDS, array_module, blas_threads, cupy_available, get_backend, to_numpy
from .params import check_params, check_shapes, init_param, init_params, load_params

_ASSEMBLE = ("coboundary_matrix", "edge_weight_vector", "laplacian_matrix", "nonlinear_jacobian", "offset_vector",
             "restriction_matrix", "sigmoid", "softmax")


def __getattr__(name: str):
    if name in _ASSEMBLE:
        from . import assemble

        return getattr(assemble, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [*_ASSEMBLE, "BACKENDS", "array_module", "blas_threads", "cupy_available", "get_backend", "to_numpy", "check_params", "check_shapes",
           "init_param", "init_params", "load_params"]
