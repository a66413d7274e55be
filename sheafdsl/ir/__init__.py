"""The intermediate representation: a cellular sheaf as a networkx graph (see :mod:`.graph`)."""

from .graph import (BOUNDARIES, INFERENCE, PIN_SOURCES, TRAINING, InvalidSheaf, ZERO, ObjectiveSpec, ParamSpec, PinSpec, add_edge, add_objective, add_param, add_pin, add_reluctance,
                    add_soft_pin, add_stalk, add_tie, constant_pins, edge_dim, edge_offsets, edges, free_indices,
                    consensus_span, declared_at, from_model, is_consensus, model_error, is_learned, instantiate, grid_agent, LearnedSpec, DecoderSpec, DEFAULT_GRID, is_state_dependent, layers, new_sheaf, objectives, param_specs, pinned_indices, pinned_stalks, stalks,
                    total_dim, vertex_slice)
from .maps import Constant, Identity, Nonlinear, ParamMap, ReluGate, Scaled, Select, describe

__all__ = [
    "BOUNDARIES", "INFERENCE", "PIN_SOURCES", "TRAINING", "InvalidSheaf", "ZERO", "ObjectiveSpec", "ParamSpec", "PinSpec", "add_edge", "add_objective", "add_param", "add_pin", "add_reluctance",
    "add_soft_pin", "add_stalk", "add_tie", "constant_pins", "edge_dim", "edge_offsets", "edges", "free_indices",
    "consensus_span", "declared_at", "from_model", "is_consensus", "model_error", "is_learned", "instantiate", "grid_agent", "LearnedSpec", "DecoderSpec", "DEFAULT_GRID", "is_state_dependent", "layers", "new_sheaf", "objectives", "param_specs", "pinned_indices", "pinned_stalks", "stalks",
    "total_dim", "vertex_slice", "Constant", "Identity", "Nonlinear", "ParamMap", "ReluGate", "Scaled", "Select",
    "describe",
]
