"""Lowering: from the IR to operators on an array backend (numpy | cupy)."""

from .assemble import (coboundary_matrix, edge_weight_vector, laplacian_matrix, nonlinear_jacobian, offset_vector,
                       restriction_matrix, sigmoid, softmax)
from .backend import BACKENDS, array_module, cupy_available, get_backend, to_numpy
from .params import check_params, init_param, init_params, load_params

__all__ = ["coboundary_matrix", "edge_weight_vector", "laplacian_matrix", "nonlinear_jacobian", "offset_vector",
           "restriction_matrix", "sigmoid", "softmax", "BACKENDS", "array_module", "cupy_available", "get_backend",
           "to_numpy", "check_params", "init_param", "init_params", "load_params"]
