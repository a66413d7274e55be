"""Discord diagnostics: where, in a sheaf, the data disagrees with the parameters.

With the input and the target both pinned, the equilibrium cochain c* minimises the Dirichlet
energy E(c) = ½ Σ_e w_e² ‖(δc)_e‖², and the residual R = E(c*) is spread over the edges (a
classifier's output edge carries a cross-entropy energy instead; its value here is ½‖δc*‖²). The
share on each edge says which restriction maps the data pushes against hardest; the local
training rule moves each parameter by its own edge's discord, so an edge with no discord gets no
update. This module groups the per-edge values

- **per edge** (declaration order);
- **per type**: ``affine`` (affine, linear and parameterised maps), ``activation`` (ReLU gates and
  nonlinear maps inside the network), ``output`` (edges into a target-pinned stalk), ``soft pin``
  (edges to a soft pin's anchor) and ``other`` (fixed literal maps);
- **per layer**: layer ℓ of an edge is the number of parameterised edges on the longest path from
  a source stalk up to and including it, so in an MLP layer ℓ holds ``aff ℓ`` and ``act ℓ``, and the
  output edge joins the last layer. Graphs with cycles have no layers (``None``).

The input per edge is the mean over examples of ½‖(δc*)_e‖² (what
:meth:`Trainer.edge_discords` returns); the energy of the edge is that times w_e², and shares and
group totals are of energies, which add up over edges to E(c*). It also holds :func:`forward_pass`, the harmonic extension with only the
inputs pinned for feed-forward sheaves, used to draw learned surfaces and decision boundaries.

>>> from sheafdsl.frontend import load_text
>>> from sheafdsl.ir import from_model
>>> G = from_model(load_text("sheaf t\\nnetwork n : 2 -> 3 -> 1\\npin y = target\\n"))  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..ir import INFERENCE, constant_pins, edges, layers, pinned_stalks
from ..ir.graph import is_parameterised
from ..ir.maps import Nonlinear, ReluGate

TYPES = ("affine", "activation", "output", "soft pin", "other")


@dataclass
class EdgeDiagnosis:
    """One edge's row: where it sits and how much discord it carries."""

    name: str
    src: str
    dst: str
    kind: str
    type: str
    layer: int | None
    dim: int
    weight: float
    discord: float  # mean ½‖(δc*)_e‖²
    energy: float   # mean ½ w_e² ‖(δc*)_e‖²
    share: float    # fraction of the total energy (0 when the total is 0)


@dataclass
class GroupDiagnosis:
    group: str
    edges: list[str]
    energy: float
    share: float


@dataclass
class Diagnosis:
    edges: list[EdgeDiagnosis]
    layers: list[GroupDiagnosis]
    types: list[GroupDiagnosis]
    total: float

    def to_json(self) -> dict:
        return {"total": self.total, "edges": [asdict(e) for e in self.edges],
                "layers": [asdict(g) for g in self.layers], "types": [asdict(g) for g in self.types]}


def edge_type(G, u: str, v: str, d: dict) -> str:
    """The type of an edge (see the module docstring)."""
    targets = set(pinned_stalks(G, "target"))
    if d.get("kind") == "soft_pin":
        return "soft pin"
    if v in targets or u in targets:
        return "output"
    if is_parameterised(d):
        return "affine"
    if isinstance(d["src_map"], (ReluGate, Nonlinear)) or isinstance(d["dst_map"], (ReluGate, Nonlinear)):
        return "activation"
    return "other"


def edge_layers(G) -> dict[str, int | None]:
    """Layer of every edge: parameterised edges on the longest source-to-edge path (None if cyclic); see
    :func:`sheafdsl.ir.layers`. Soft-pin edges get the layer of the stalk they pull on."""
    return layers(G)[0]


def diagnose(G, discords: dict[str, float]) -> Diagnosis:
    """Group per-edge discords (mean ½‖(δc*)_e‖²) as energies (× w_e²) by edge, type and layer."""
    layers = edge_layers(G)
    energy = {}
    for _, _, name, d in edges(G):
        energy[name] = float(d["weight"]) ** 2 * float(discords.get(name, 0.0))
    total = float(sum(x for x in energy.values() if np.isfinite(x)))
    rows = []
    for u, v, name, d in edges(G):
        rows.append(EdgeDiagnosis(name, u, v, d.get("kind", "maps"), edge_type(G, u, v, d), layers[name], int(d["dim"]),
                                  float(d["weight"]), float(discords.get(name, 0.0)), energy[name],
                                  energy[name] / total if total > 0 else 0.0))

    def group(key) -> list[GroupDiagnosis]:
        acc: dict = {}
        for r in rows:
            k = key(r)
            if k is None:
                continue
            acc.setdefault(k, []).append(r)
        out = []
        for k, rs in acc.items():
            s = float(sum(r.energy for r in rs))
            out.append(GroupDiagnosis(str(k), [r.name for r in rs], s, s / total if total > 0 else 0.0))
        return out

    by_layer = sorted(group(lambda r: r.layer), key=lambda g: int(g.group))
    by_type = sorted(group(lambda r: r.type), key=lambda g: TYPES.index(g.group))
    return Diagnosis(rows, by_layer, by_type, total)


# ----------------------------------------------------------------------------------------------
# the forward pass (harmonic extension with only the inputs pinned) for feed-forward sheaves


def forward_pass(G, params: dict, X, xp=np):
    """The values of the target-pinned stalks when only the inputs (and constants) are pinned.

    Defined for *feed-forward* sheaves, where δ_Ω is unitriangular (every free stalk the head of one
    identity-headed edge, in a DAG order): then setting c_v = F_{u◁e}(c_u) + b_e in that order zeroes
    every discord, so it is the (unique) harmonic extension, i.e. the network's prediction. It is the
    solvers' forward sweep (:func:`sheafdsl.solvers.active_set.run_sweep`, the one general forward pass).
    ``X`` holds the input stalks' columns side by side. Returns an array (B, Σ target dims), or None when
    the sheaf is not feed-forward (no surface or boundary plot is drawn then).
    """
    from ..errors import SheafError
    from ..lowering.operators import SheafOperators
    from ..solvers.active_set import run_sweep

    inputs = pinned_stalks(G, "input")
    targets = pinned_stalks(G, "target")
    if not inputs or not targets:
        return None
    X = xp.asarray(X, dtype=float)
    dims = [G.nodes[v]["dim"] for v in inputs]
    if sum(dims) != X.shape[1]:
        return None
    try:
        ops = SheafOperators(G, params, xp)
        prob = ops.restrict(("input", "value"))
    except SheafError:  # a state-dependent head map, or a nonlinear edge the solvers do not take
        return None
    if prob.s.sweep is None:
        return None
    c = xp.zeros((X.shape[0], ops.N))
    k = 0
    for v, d in zip(inputs, dims):
        c[:, ops.vertex[v]] = X[:, k:k + d]
        k += d
    idx, val = constant_pins(G)
    if len(idx):
        c[:, xp.asarray(idx)] = xp.asarray(val)[None, :]
    run_sweep(ops, prob.s.sweep, c)
    return xp.concatenate([c[:, ops.vertex[t]] for t in targets], axis=1)


def predictor(G, params: dict):
    """A function X -> prediction (the target stalks with only the inputs and constants pinned).

    Feed-forward sheaves use :func:`forward_pass`; any other sheaf (skip connections, soft pins,
    literal maps) uses the harmonic extension from :func:`sheafdsl.solvers.solve` (exact, inference
    pins). Returns None when the sheaf has no single input and target stalk.
    """
    inputs, targets = pinned_stalks(G, "input"), pinned_stalks(G, "target")
    if len(inputs) != 1 or len(targets) != 1:
        return None
    return _Predictor(G, params, inputs[0], targets[0])


class _Predictor:
    """:func:`predictor`'s function (an object, so that it pickles: a plot rendered in another process)."""

    def __init__(self, G, params: dict, source: str, target: str):
        self.G, self.params, self.source, self.target = G, params, source, target

    def __call__(self, X):
        out = forward_pass(self.G, self.params, X)
        if out is not None:
            return out
        from ..solvers import solve

        return np.asarray(solve(self.G, self.params, {self.source: np.asarray(X, dtype=float)}, method="exact",
                                sources=INFERENCE, xp=np).stalk(self.target))


def edge_discords(G, disc) -> dict[str, float]:
    """Mean over examples of ½‖(δc)_e‖² per edge, from the discords ``disc`` (B, M) of a batch of
    cochains (``SheafOperators.discord``): what :func:`diagnose` takes."""
    from ..ir import edge_offsets

    offsets = edge_offsets(G)
    return {name: float(0.5 * (disc[:, offsets[name]: offsets[name] + d["dim"]] ** 2).sum(axis=1).mean())
            for _, _, name, d in edges(G)}


__all__ = ["edge_discords", "TYPES", "EdgeDiagnosis", "GroupDiagnosis", "Diagnosis", "edge_type", "edge_layers", "diagnose",
           "forward_pass", "predictor"]
