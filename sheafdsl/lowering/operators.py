"""Batched, matrix-free operators of a cellular sheaf on one array module ``xp`` (numpy or cupy).

Shapes: ``B`` independent examples, ``N = Σ_v d_v`` (0-cochains), ``M = Σ_e d_e`` (1-cochains), ``n`` free
coordinates. Every operator acts on a leading batch axis: a cochain is ``(B, N)``, a discord ``(B, M)``.

The maths (docs/maths.md). For an edge e = (u → v)::

    (δc)_e   = F_{v◁e} c_v − F_{u◁e} c_u                  (the linear part, no offset)
    r_e(c)   = F_{v◁e} c_v − F_{u◁e}(c_u) − o_e           (the discord, with the affine offset o_e)
    E(c)     = ½ Σ_e w_e² ‖r_e(c)‖²,   L = δᵀ W² δ,   ∇E(c) = δ(c)ᵀ W² r(c)

State-dependent maps: a ReLU gate is F_{u◁e} = diag(g) with g = 1[c_u ≥ 0] by default, or an explicit gate
pattern ``gates[e]`` of shape (B, d_e) or (d_e,) (values in [0, 1]; a sliding unit carries its Filippov
multiplier). A nonlinear map c_u ↦ φ(c_u) (sigmoid, softmax) enters the discord as φ and δ as its Jacobian
Dφ at a linearisation ``state`` (at 0 when none is given, as in :mod:`.assemble`).

Constant maps (I, s·I, constant matrices, selections) are grouped at lowering time into one linear block: a
sparse matrix (``scipy.sparse``, or ``cupyx.scipy.sparse`` under cupy) when there are many of them, applied
edge by edge otherwise. Parameterised and gated maps are applied matrix-free, edge by edge, as batched
matmuls. The choice is made once, in :class:`SheafOperators`; the algorithms never branch on the backend.

Boundary. For a set of pin sources (inference: ``("input", "value")``; two-sided: ``("input", "target",
"value")``), the coordinates split into pinned U and free Ω, and :class:`Problem` provides

    L_free = δ_Ωᵀ W² δ_Ω,      b = −δ_Ωᵀ W² (δ_U c_U − o)      (so the harmonic extension solves L_free c_Ω = b),

the energy and gradient over c_Ω, dense per-example Hessians for the exact solver, Hessian-vector products
for CG, and the *sweep plan* when δ_Ω is unitriangular (see :meth:`Problem.sweep_plan`).

>>> from sheafdsl.frontend import load_text
>>> from sheafdsl.ir import from_model
>>> from sheafdsl.lowering import init_params
>>> G = from_model(load_text("sheaf t\\nnetwork n : 2 -> 3 -> 1\\n"))
>>> ops = SheafOperators(G, init_params(G, 0))
>>> ops.N, ops.M
(10, 8)
>>> c = np.random.default_rng(0).normal(size=(4, ops.N))
>>> bool(np.allclose(ops.energy(c), 0.5 * (ops.w2 * ops.discord(c) ** 2).sum(1)))
True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import Diagnostic, SheafError
from ..ir import INFERENCE, edge_offsets, edges, pinned_indices, stalks, total_dim
from ..ir.maps import Constant, Identity, Nonlinear, ParamMap, ReluGate, Scaled, Select
from ..nonlinearities import OUTPUTS
from ..nonlinearities import TABLE as NONLINEARITIES
from .backend import scipy_module, to_numpy
from . import maps
from .nonlinear import hessian_weight, kernel
from .params import check_shapes

CONSTANT_MAPS = maps.CONSTANT  # the maps lowered into the one constant block

#: when at least this many restriction maps are constant, they are applied as one sparse matrix
SPARSE_THRESHOLD = 32


# ----------------------------------------------------------------------------------------------
# nonlinear maps: the registry's numerics (sheafdsl.lowering.nonlinear)


def _kernel(m):
    """(numerics, argument) of a Nonlinear map, or of a registry name without argument."""
    return (kernel(m), None) if isinstance(m, str) else (kernel(m.fn), m.arg)


def phi(xp, m, z):
    """φ(z) of a :class:`~sheafdsl.ir.maps.Nonlinear` map ``m`` (or a registry name), batched over the last
    axis (softmax per row)."""
    k, arg = _kernel(m)
    return k.phi(xp, z, arg)


def phi_jvp(xp, m, z, x):
    """Dφ(z) x, batched. Dφ is symmetric for every registry entry, so this is also Dφᵀ x."""
    k, arg = _kernel(m)
    return k.jvp(xp, z, x, arg)


def phi_jacobian(xp, m, z):
    """Dφ(z) as (B, d, d)."""
    k, arg = _kernel(m)
    return k.jacobian(xp, z, arg)


def cross_entropy(xp, m, z, t):
    """The cross-entropy energy ℓ(z; t) of a nonlinear edge with a pinned head, per example (before the w²
    factor); its gradient in z is :func:`cross_entropy_grad` (φ(z) − t for a one-hot t). See
    :mod:`sheafdsl.lowering.nonlinear` for each output; E503 for a map without one."""
    k, _ = _kernel(m)
    if k.energy is None:
        raise _ce_missing(m)
    return k.energy(xp, z, t)


def cross_entropy_grad(xp, m, z, t):
    """∂ℓ/∂z of :func:`cross_entropy`, (B, d)."""
    k, _ = _kernel(m)
    if k.energy_grad is None:
        raise _ce_missing(m)
    return k.energy_grad(xp, z, t)


def _ce_missing(m) -> SheafError:
    return SheafError(Diagnostic("E503", f"`{getattr(m, 'fn', m)}` has no output energy, so its head cannot be pinned to a target",
                                 hint="outputs: " + ", ".join(a.name for a in OUTPUTS)))


# ----------------------------------------------------------------------------------------------
# the sparse kit: picked once per array module


def sparse_module(xp, linalg: bool = False):
    """``scipy.sparse`` (``.linalg``) for numpy, ``cupyx.scipy.sparse`` (``.linalg``) for cupy (named by
    :func:`~sheafdsl.lowering.backend.scipy_module`), used once at lowering time."""
    return scipy_module(xp, "sparse.linalg" if linalg else "sparse")


class _SparseBlock:
    """A constant linear block C ∈ R^{M×N} applied to batches: X ↦ X Cᵀ and Y ↦ Y C."""

    def __init__(self, xp, rows, cols, vals, shape):
        sparse = sparse_module(xp)
        self.C = sparse.csr_matrix((xp.asarray(vals), (xp.asarray(rows), xp.asarray(cols))), shape=shape)
        self.CT = self.C.T.tocsr()

    def matvec(self, X):
        return (self.C @ X.T).T

    def rmatvec(self, Y):
        return (self.CT @ Y.T).T


# ----------------------------------------------------------------------------------------------
# lowered edges


@dataclass
class EdgeOp:
    """One edge, lowered: its slices in the cochain (``src``, ``dst``) and in the discord (``rows``)."""

    name: str
    u: str
    v: str
    src: slice
    dst: slice
    rows: slice
    dim: int
    weight: float
    src_map: object
    dst_map: object
    bias: str | None
    const: dict = field(default_factory=dict)  # side -> dense xp matrix for Constant / Select maps

    @property
    def is_relu(self) -> bool:
        return isinstance(self.src_map, ReluGate)

    @property
    def is_nonlinear(self) -> bool:
        return isinstance(self.src_map, Nonlinear)


def _unsupported(msg: str, hint: str | None = None) -> SheafError:
    return SheafError(Diagnostic("E501", msg, hint=hint))


class SheafOperators:
    """The batched operators of a sheaf ``G`` with parameter values ``params`` on array module ``xp``.

    Built once; :meth:`with_params` rebinds new parameter values without redoing the structural work.

    Attributes: ``N``, ``M``, ``w`` and ``w2`` (edge weights per discord row, and squared), ``o`` (offsets),
    ``edges`` (:class:`EdgeOp` list in declaration order), ``vertex`` (name -> slice).
    """

    def __init__(self, G, params: dict | None = None, xp=np, *, sparse_threshold: int = SPARSE_THRESHOLD):
        self.G, self.xp = G, xp
        self.N, self.names = total_dim(G), stalks(G)
        self.vertex = {v: slice(G.nodes[v]["offset"], G.nodes[v]["offset"] + G.nodes[v]["dim"]) for v in self.names}
        eoff = edge_offsets(G)
        self.edges: list[EdgeOp] = []
        for u, v, name, d in edges(G):
            if d.get("src_block") is not None or d.get("dst_block") is not None:
                raise SheafError(Diagnostic(
                    "E557", f"edge `{name}` puts a parameter map on a block of a stalk, which the batched operators "
                    "(cg, diffusion, the network trainers) do not lower", hint="solve it with --solver exact or admm "
                    "(a consensus problem), or train it as a learned model"))
            for m, side in ((d["dst_map"], "dst"), (d["src_map"], "src")):
                if side == "dst" and maps.is_state_dependent(m):
                    raise _unsupported(f"edge `{name}`: a state-dependent map ({type(m).__name__}) on the head "
                                       f"stalk `{v}` is not supported", "put relu/sigmoid/softmax on the source side")
            e = EdgeOp(name, u, v, self.vertex[u], self.vertex[v], slice(eoff[name], eoff[name] + d["dim"]),
                       d["dim"], d["weight"], d["src_map"], d["dst_map"], d.get("bias"))
            for side, m, vert in (("src", e.src_map, u), ("dst", e.dst_map, v)):
                if isinstance(m, (Constant, Select)):
                    e.const[side] = xp.asarray(maps.matrix(m, G.nodes[vert]["dim"], {}))
            self.edges.append(e)
        self.M = sum(e.dim for e in self.edges)
        w = np.concatenate([np.full(e.dim, e.weight) for e in self.edges]) if self.edges else np.zeros(0)
        self.w, self.w2 = xp.asarray(w), xp.asarray(w * w)
        self.relu_edges = [e for e in self.edges if e.is_relu]
        self.nonlinear_edges = [e for e in self.edges if e.is_nonlinear]
        # constant maps: one sparse block when there are many, else edge by edge
        const_sides = [(e, s) for e in self.edges for s in ("src", "dst")
                       if maps.is_constant(getattr(e, s + "_map"))]
        self._block = None
        if len(const_sides) >= sparse_threshold:
            rows, cols, vals = [], [], []
            for e, s in const_sides:
                F = maps.matrix(getattr(e, s + "_map"), (e.dst if s == "dst" else e.src).stop
                                - (e.dst if s == "dst" else e.src).start, {})
                r, k = np.nonzero(F)
                rows.append(r + e.rows.start)
                cols.append(k + (e.dst if s == "dst" else e.src).start)
                vals.append((1.0 if s == "dst" else -1.0) * F[r, k])
            self._block = _SparseBlock(xp, np.concatenate(rows), np.concatenate(cols), np.concatenate(vals),
                                       (self.M, self.N))
        self._structures: dict = {}
        self.params: dict = {}
        self.o = xp.zeros(self.M)
        if params is not None:
            self._bind(params)

    # -- parameters -------------------------------------------------------------------------

    def _bind(self, params: dict) -> None:
        xp = self.xp
        check_shapes(self.G, params)
        self.params = {k: xp.asarray(v) for k, v in params.items()}
        o = xp.zeros(self.M)
        for e in self.edges:
            for m in (e.src_map, e.dst_map):
                if isinstance(m, ParamMap):
                    if m.param not in self.params:
                        raise SheafError(Diagnostic("E502", f"no value for parameter `{m.param}` (edge `{e.name}`)"))
            if e.bias is not None:
                if e.bias not in self.params:
                    raise SheafError(Diagnostic("E502", f"no value for parameter `{e.bias}` (bias of edge `{e.name}`)"))
                o[e.rows] = self.params[e.bias]
        self.o = o

    def with_params(self, params: dict) -> "SheafOperators":
        """The same lowered structure with new parameter values (cheap: no graph traversal)."""
        new = object.__new__(SheafOperators)
        new.__dict__.update(self.__dict__)
        new._bind(params)
        return new

    # -- one restriction map ----------------------------------------------------------------

    def _map(self, e: EdgeOp, side: str, x, *, gate=None, state=None, nonlinear: bool, transpose: bool = False):
        """F x (or Fᵀ x) for the ``side`` map of edge ``e``; ``nonlinear`` applies φ itself instead of Dφ(state)."""
        m = e.src_map if side == "src" else e.dst_map
        const = e.const.get(side)
        if transpose:
            return maps.apply_T(m, x, self.params, self.xp, state=state, gate=gate, const=const)
        if nonlinear:
            return maps.apply(m, x, self.params, self.xp, const)
        return maps.apply_lin(m, x, self.params, self.xp, state=state, gate=gate, const=const)

    def _gate(self, e: EdgeOp, gates, c):
        if gates is not None and e.name in gates:
            return gates[e.name]
        return None if c is None else (c[:, e.src] >= 0)

    # -- δ, δᵀ, L, discord, energy ------------------------------------------------------------

    def delta(self, c, gates: dict | None = None, state=None):
        """δ c, (B, N) -> (B, M), linearised at ``state`` (gates from ``gates`` or 1[state_u ≥ 0]; all ones
        with neither; nonlinear maps as Dφ(state), at 0 when no state). No offset."""
        xp = self.xp
        out = xp.zeros((c.shape[0], self.M)) if self._block is None else self._block.matvec(c).copy()
        for e in self.edges:
            for side, sl, sign in (("dst", e.dst, 1.0), ("src", e.src, -1.0)):
                m = e.dst_map if side == "dst" else e.src_map
                if self._block is not None and maps.is_constant(m):
                    continue
                st = None if state is None else state[:, e.src]
                g = self._gate(e, gates, None if state is None else state) if side == "src" else None
                y = self._map(e, side, c[:, sl], gate=g, state=st, nonlinear=False)
                out[:, e.rows] += sign * y
        return out

    def delta_T(self, r, gates: dict | None = None, state=None):
        """δᵀ r, (B, M) -> (B, N), linearised as in :meth:`delta`."""
        xp = self.xp
        out = xp.zeros((r.shape[0], self.N)) if self._block is None else self._block.rmatvec(r).copy()
        for e in self.edges:
            for side, sl, sign in (("dst", e.dst, 1.0), ("src", e.src, -1.0)):
                m = e.dst_map if side == "dst" else e.src_map
                if self._block is not None and maps.is_constant(m):
                    continue
                st = None if state is None else state[:, e.src]
                g = self._gate(e, gates, None if state is None else state) if side == "src" else None
                y = self._map(e, side, r[:, e.rows], gate=g, state=st, nonlinear=False, transpose=True)
                out[:, sl] += sign * y
        return out

    def laplacian(self, c, gates: dict | None = None, state=None):
        """L c = δᵀ W² δ c, (B, N) -> (B, N)."""
        return self.delta_T(self.w2 * self.delta(c, gates, state), gates, state)

    def discord(self, c, gates: dict | None = None):
        """r(c) = F_v c_v − F_u(c_u) − o per edge, (B, N) -> (B, M): ReLU edges as relu(c_u), or as g ⊙ c_u with
        the piece's gates g when ``gates`` are given (the same at a point of that piece); nonlinear maps
        applied as φ (not linearised)."""
        xp = self.xp
        out = xp.zeros((c.shape[0], self.M)) if self._block is None else self._block.matvec(c).copy()
        for e in self.edges:
            for side, sl, sign in (("dst", e.dst, 1.0), ("src", e.src, -1.0)):
                m = e.dst_map if side == "dst" else e.src_map
                if self._block is not None and maps.is_constant(m):
                    continue
                g = self._gate(e, gates, c) if side == "src" else None
                # a given gate is the piece's: off its own side of z = 0 a unit keeps it (x·g, not relu(x))
                lin = g is not None and gates is not None and isinstance(m, ReluGate)
                out[:, e.rows] += sign * self._map(e, side, c[:, sl], gate=g, nonlinear=not lin)
        return out - self.o

    def energy(self, c, gates: dict | None = None):
        """E(c) = ½ Σ_e w_e² ‖r_e(c)‖², per example (B,). Least squares on every edge (see
        :meth:`Problem.energy` for the cross-entropy convention of pinned nonlinear heads)."""
        return 0.5 * (self.w2 * self.discord(c, gates) ** 2).sum(axis=1)

    def gradient(self, c, gates: dict | None = None):
        """∇E(c) = δ(c)ᵀ W² r(c), (B, N), with the gates of ``gates`` (else 1[c_u ≥ 0]) as the chosen
        (sub)gradient of each ReLU edge, and Dφ(c_u) for nonlinear edges."""
        full_gates = {e.name: self._gate(e, gates, c) for e in self.relu_edges}
        return self.delta_T(self.w2 * self.discord(c, full_gates), full_gates, c)

    def dense_delta(self) -> np.ndarray:
        """δ as a dense host (M, N) matrix with every ReLU gate and nonlinear map zeroed (the fixed part)."""
        D = np.zeros((self.M, self.N))
        for e in self.edges:
            for side, sl, sign in (("dst", e.dst, 1.0), ("src", e.src, -1.0)):
                m = e.dst_map if side == "dst" else e.src_map
                if maps.is_state_dependent(m):
                    continue
                D[e.rows, sl] += sign * maps.matrix(m, sl.stop - sl.start, self.params)
        return D

    # -- boundary -----------------------------------------------------------------------------

    def restrict(self, sources=INFERENCE) -> "Problem":
        """The free/pinned split for pins whose source is in ``sources`` (the structure is cached)."""
        key = tuple(sorted(sources))
        if key not in self._structures:
            self._structures[key] = _Structure(self, key)
        return Problem(self, self._structures[key])


# ----------------------------------------------------------------------------------------------
# the boundary problem


class _Structure:
    """What depends only on the graph and the pinned set: index sets, edge roles, the sweep plan."""

    def __init__(self, ops: SheafOperators, sources):
        xp, G = ops.xp, ops.G
        self.sources = sources
        pinned = pinned_indices(G, sources)
        mask = np.zeros(ops.N, dtype=bool)
        mask[pinned] = True
        self.pinned_mask = mask
        free = np.flatnonzero(~mask)
        self.free_host, self.pinned_host = free, pinned
        self.free, self.pinned = xp.asarray(free), xp.asarray(pinned)
        self.n = len(free)
        pos = -np.ones(ops.N, dtype=np.int64)
        pos[free] = np.arange(len(free))
        self.pos = pos  # global index -> position in c_Ω (−1 when pinned)

        def fully(sl, pinned_value):
            return bool(np.all(mask[sl] == pinned_value))

        # roles of nonlinear edges (see Problem docstring)
        touching: dict[str, list[str]] = {v: [] for v in ops.names}
        for e in ops.edges:
            touching[e.u].append(e.name)
            if e.v != e.u:
                touching[e.v].append(e.name)
        self.role = {}
        for e in ops.nonlinear_edges:
            if fully(e.src, True):
                self.role[e.name] = "linear"  # φ(c_u) is data: an offset
            elif fully(e.dst, True) and NONLINEARITIES[e.src_map.fn].energy == "cross_entropy":
                self.role[e.name] = "ce"
            elif fully(e.dst, False) and touching[e.v] == [e.name] and isinstance(e.dst_map, (Identity, Scaled)) \
                    and getattr(e.dst_map, "scale", 1.0) != 0:
                self.role[e.name] = "head"
            else:
                self.role[e.name] = "hidden"  # least squares, non-convex: only a forward sweep solves it here
        self.ce_edges = [e for e in ops.nonlinear_edges if self.role[e.name] == "ce"]
        self.head_edges = [e for e in ops.nonlinear_edges if self.role[e.name] == "head"]
        self.skip = {e.name for e in self.ce_edges + self.head_edges}  # not in the least-squares part
        self.ls_edges = [e for e in ops.edges if e.name not in self.skip]
        self.ls_rows = np.concatenate([np.arange(e.rows.start, e.rows.stop) for e in self.ls_edges]) \
            if self.ls_edges else np.zeros(0, dtype=np.int64)
        self.ls_rows_x = xp.asarray(self.ls_rows)
        # eliminated head stalks are not unknowns of the solve
        elim = np.zeros(ops.N, dtype=bool)
        for e in self.head_edges:
            elim[e.dst] = True
        self.solve_mask = (~mask) & (~elim)
        self.elim_host = np.flatnonzero(elim)
        # free gated coordinates: the sources of ReLU edges that are free (one unit per coordinate)
        gated = sorted({int(i) for e in ops.relu_edges for i in range(e.src.start, e.src.stop) if not mask[i]})
        self.gated_host = np.array(gated, dtype=np.int64)
        self.gated = xp.asarray(self.gated_host)
        self.gated_pos = xp.asarray(pos[self.gated_host]) if gated else xp.zeros(0, dtype=np.int64)
        # for each relu edge: which local coordinates are free units, and their unit number
        unit_of = {g: k for k, g in enumerate(gated)}
        self.relu_units = []
        for e in ops.relu_edges:
            loc = [i for i in range(e.dim) if not mask[e.src.start + i]]
            self.relu_units.append((e, xp.asarray(np.array(loc, dtype=np.int64)),
                                    xp.asarray(np.array([unit_of[e.src.start + i] for i in loc], dtype=np.int64))))
        # the Hessian is shared by all examples iff no gate and no cross-entropy term acts on a free coordinate
        self.shared_hessian = len(gated) == 0 and not any(np.any(~mask[e.src]) for e in self.ce_edges)
        self.sweep = self._sweep_plan(ops, mask, touching)
        hidden = [e for e in ops.nonlinear_edges if self.role[e.name] == "hidden"]
        if hidden and self.sweep is None:
            e = hidden[0]
            raise SheafError(Diagnostic(
                "E503", f"nonlinear edge `{e.name}` ({e.src_map.fn}): its head `{e.v}` is free but not a leaf "
                "(or only partly pinned), and the problem is not a forward sweep, so the energy is a non-convex "
                "least-squares problem the general solvers do not handle",
                hint=f"pin only the input (inference is then the forward pass), train a feed-forward chain "
                     f"(`sheaf train` solves its two-sided equilibrium by Gauss-Newton), or pin `{e.v}`"))
        # a warm start: the sweep of the problem with every pin on a head stalk released (targets, pins on
        # hidden stalks, soft-pin anchors); the solvers start there when the problem itself is no sweep
        self.warm = None
        if self.sweep is None:
            heads = np.zeros(ops.N, dtype=bool)
            for e in ops.edges:
                heads[e.dst] = True
            relaxed = mask & ~heads
            if relaxed.any() or not mask.any():
                self.warm = self._sweep_plan(ops, relaxed, touching)

    @staticmethod
    def _sweep_plan(ops, mask, touching):
        """The edges in forward order when δ_Ω is (block) unitriangular, else None.

        Holds iff every stalk is wholly pinned or wholly free, every edge's head is free, every free stalk is
        the head of exactly one edge whose head map is the identity, and these edges form a DAG. Then each
        edge's discord can be made zero by setting its head, c_v = F_u(c_u) + o_e, in topological order:
        E = 0, the global minimum, reached by one forward sweep.
        """
        heads: dict[str, list] = {}
        for e in ops.edges:
            heads.setdefault(e.v, []).append(e)
        for v, sl in ops.vertex.items():
            if not (np.all(mask[sl]) or not np.any(mask[sl])):
                return None
        free_v = [v for v, sl in ops.vertex.items() if not np.any(mask[sl])]
        for e in ops.edges:
            if np.any(mask[e.dst]) or not isinstance(e.dst_map, Identity):
                return None
        if any(len(heads.get(v, [])) != 1 for v in free_v):
            return None
        order, done = [], {v for v, sl in ops.vertex.items() if np.all(mask[sl])}
        pending = [heads[v][0] for v in free_v]
        while pending:
            ready = [e for e in pending if e.u in done]
            if not ready:
                return None  # a cycle among the free stalks
            for e in ready:
                order.append(e)
                done.add(e.v)
            pending = [e for e in pending if e not in ready]
        return order


class Problem:
    """The harmonic-extension problem for one pinned set: minimise E over c_Ω with c_U fixed.

    Energy over the free coordinates (the solvers' objective)::

        E(c) = ½ Σ_{e least-squares} w_e² ‖r_e(c)‖²  +  Σ_{e cross-entropy} w_e² ℓ_φ(c_u; t_e)

    Nonlinear edges u → v (φ from the registry: sigmoid, softmax, tanh, gelu, ...) take one of four roles,
    decided from the pins:

    - ``linear``: c_u pinned, so φ(c_u) is data and the edge is least squares in c_v;
    - ``ce``: c_v pinned (training) and φ an output with a cross-entropy energy (sigmoid, softmax), the target
      t_e = F_v c_v − o_e; energy w² ℓ_φ with ∇_{c_u} = w² (φ(c_u) − t_e) for a one-hot target
      (:func:`cross_entropy`), convex in c_u;
    - ``head``: c_v free and touched by this edge only (inference): its discord is zero at the optimum, so c_v
      is eliminated and set to F_v⁻¹(φ(c_u) + o_e) after the solve.

    - ``hidden``: anything else (a smooth hidden layer, a tanh edge with a pinned head): least squares and
      non-convex. Allowed only when the whole problem is a forward sweep (inference of a feed-forward
      network: E = 0 at the sweep, the global minimum); otherwise SheafError E503.
    """

    def __init__(self, ops: SheafOperators, structure: _Structure):
        self.ops, self.s, self.xp = ops, structure, ops.xp

    @property
    def n(self) -> int:
        return self.s.n

    # -- cochains -----------------------------------------------------------------------------

    def fill(self, c, values):
        """Write pinned values into c (B, N); ``values`` is (B, |U|) in the order of ``pinned`` indices."""
        c[:, self.s.pinned] = values
        return c

    def scatter(self, x, c0):
        """The cochain with free part x (B, n) and pinned part from c0 (B, N)."""
        c = c0.copy()
        c[:, self.s.free] = x
        return c

    def finish_heads(self, c):
        """Set each eliminated head c_v = (φ(c_u) + o_e) / s so its discord is zero (in place)."""
        xp = self.xp
        for e in self.s.head_edges:
            val = phi(xp, e.src_map, c[:, e.src]) + self.ops.o[e.rows]
            c[:, e.dst] = val / getattr(e.dst_map, "scale", 1.0)
        return c

    # -- gates -----------------------------------------------------------------------------------

    def gates_from(self, c, unit_gate=None) -> dict:
        """Gate arrays per ReLU edge: 1[c_u ≥ 0] on pinned coordinates, ``unit_gate`` (B, units) on free ones
        (default: also 1[c_u ≥ 0])."""
        out = {}
        for e, loc, units in self.s.relu_units:
            g = (c[:, e.src] >= 0).astype(c.dtype)
            if unit_gate is not None and loc.shape[0]:
                g[:, loc] = unit_gate[:, units]
            out[e.name] = g
        return out

    # -- energy and gradient over c_Ω --------------------------------------------------------------

    def discord(self, c, gates=None):
        return self.ops.discord(c, gates)

    def energy(self, c, gates=None, r=None):
        """The objective per example (B,) (least squares + cross-entropy; eliminated heads contribute 0)."""
        xp, ops = self.xp, self.ops
        if r is None:
            r = ops.discord(c, gates)
        rows = self.s.ls_rows_x
        E = 0.5 * (ops.w2[rows] * r[:, rows] ** 2).sum(axis=1)
        for e in self.s.ce_edges:
            t = self._target(e, c)
            E = E + e.weight ** 2 * cross_entropy(xp, e.src_map, c[:, e.src], t)
        return E

    def _target(self, e, c):
        return self.ops._map(e, "dst", c[:, e.dst], nonlinear=True) - self.ops.o[e.rows]

    def gradient(self, c, gates):
        """∇E(c) over all N coordinates (B, N) with the given gates as the ReLU (sub)gradient choice; also
        returns the discord r (B, M)."""
        ops = self.ops
        r = ops.discord(c, gates)
        wr = ops.w2 * r
        if self.s.skip:
            wr = wr.copy()
            for e in self.s.ce_edges + self.s.head_edges:
                wr[:, e.rows] = 0.0
        g = ops.delta_T(wr, gates, c)
        for e in self.s.ce_edges:
            g[:, e.src] += e.weight ** 2 * cross_entropy_grad(self.xp, e.src_map, c[:, e.src], self._target(e, c))
        return g, r

    def slide_strength(self, r):
        """S_t = Σ_{relu e ∋ t} w_e² r_e,t per free gated unit (B, units): ∂E/∂c_t jumps by −S_t from gate 0 to
        gate 1 at c_t = 0, so g_on = g_off − S."""
        xp = self.xp
        S = xp.zeros((r.shape[0], len(self.s.gated_host)))
        for e, loc, units in self.s.relu_units:
            if loc.shape[0]:
                S[:, units] += e.weight ** 2 * r[:, e.rows][:, loc]
        return S

    # -- linear algebra ----------------------------------------------------------------------------

    def L_free(self, x, gates=None, state=None):
        """L_free x = [δᵀ W² δ]_{ΩΩ} x, (B, n) -> (B, n), linearised at ``state`` (a full cochain) or ``gates``."""
        xp, ops = self.xp, self.ops
        c = xp.zeros((x.shape[0], ops.N))
        c[:, self.s.free] = x
        return ops.laplacian(c, gates, state)[:, self.s.free]

    def boundary_rhs(self, c, gates=None, state=None):
        """b = −δ_Ωᵀ W² (δ_U c_U − o), (B, n): the coupling of the pinned values (the free part of c is ignored).

        With it the harmonic extension of a linear sheaf solves L_free c_Ω = b.
        """
        xp, ops = self.xp, self.ops
        cu = xp.zeros_like(c)
        cu[:, self.s.pinned] = c[:, self.s.pinned]
        r = ops.delta(cu, gates, state) - ops.o
        return -ops.delta_T(ops.w2 * r, gates, state)[:, self.s.free]

    def dense_fixed(self):
        """The per-call constant part of the dense Hessians (see :meth:`dense_hessian`).

        With δ_Ω(g) = D − G P on the free columns (D: every map except the free ReLU gates; G P: the gate g_k at
        (row k, free source column col_k) of each ReLU row k whose source is free):

            δ_Ω(g)ᵀ W² δ_Ω(g) = Dᵀ W² D − X(g) − X(g)ᵀ + Pᵀ diag(w_k² g_k²) P,   X(g) = Dᵀ W² G P,

        where X(g) has column col_k = g_k w_k² D[k, :]ᵀ. Returns a dict with H0 = Dᵀ W² D (least-squares rows),
        and for the gated rows: their columns, units, weights and X0 = (w_k² D[k, :])_k (n, K).
        """
        xp, ops, s = self.xp, self.ops, self.s
        D = ops.dense_delta()[:, s.free_host]
        w2 = to_numpy(ops.w2)
        rows = s.ls_rows
        H0 = (D[rows].T * w2[rows]) @ D[rows]
        krows, kunits = [], []
        for e, loc, units in s.relu_units:
            loc_h, units_h = np.asarray(_host(loc)), np.asarray(_host(units))
            krows.extend(e.rows.start + loc_h)
            kunits.extend(units_h)
        krows = np.array(krows, dtype=np.int64)
        kcols = s.pos[s.gated_host[np.array(kunits, dtype=np.int64)]] if len(kunits) else np.zeros(0, dtype=np.int64)
        return {"H0": xp.asarray(H0), "cols": xp.asarray(kcols), "units": xp.asarray(np.array(kunits, dtype=np.int64)),
                "w2": xp.asarray(w2[krows]), "X0": xp.asarray(D[krows].T * w2[krows]),
                "unique": len(set(kcols.tolist())) == len(kcols), "onehot": xp.asarray(np.eye(s.n)[kcols])}

    def dense_hessian(self, c, unit_gate, fixed=None):
        """Per-example Hessians of the objective over c_Ω (B, n, n) at cochain c with free unit gates
        ``unit_gate`` (B, units):  δ_Ω(g)ᵀ W² δ_Ω(g)  +  Σ_ce w² Dφ(c_u) on the free source coordinates
        (assembled by the rank-structured update of :meth:`dense_fixed`, no batched matmul)."""
        xp, s = self.xp, self.s
        f = fixed if fixed is not None else self.dense_fixed()
        B = c.shape[0]
        H = xp.broadcast_to(f["H0"], (B, s.n, s.n)).copy()
        K = f["cols"].shape[0]
        if K:
            g = unit_gate[:, f["units"]]  # (B, K)
            X = f["X0"][None, :, :] * g[:, None, :]  # (B, n, K): column k is g_k w_k² D[k, :]ᵀ
            d = f["w2"] * g * g
            if f["unique"]:
                cols = f["cols"]
                H[:, :, cols] -= X
                H[:, cols, :] -= xp.swapaxes(X, 1, 2)
                H[:, cols, cols] += d
            else:  # a coordinate gating several ReLU edges: accumulate through the one-hot map P
                P = f["onehot"]
                XP = xp.matmul(X, P)
                H -= XP + xp.swapaxes(XP, 1, 2)
                H += xp.matmul(xp.swapaxes(P, 0, 1)[None] * d[:, None, :], P)
        for e in s.ce_edges:
            cols = s.pos[e.src.start: e.src.stop]
            ok = np.flatnonzero(cols >= 0)
            Jp = phi_jacobian(xp, e.src_map, c[:, e.src])[:, ok][:, :, ok]
            ci = xp.asarray(cols[ok])
            H[:, ci[:, None], ci[None, :]] += e.weight ** 2 * Jp
        return H

    def hvp(self, v, c, unit_gate, gates=None):
        """Hessian-vector product over c_Ω (B, n) -> (B, n), matrix-free (for CG)."""
        xp, ops, s = self.xp, self.ops, self.s
        if gates is None:
            gates = self.gates_from(c, unit_gate)
        full = xp.zeros((v.shape[0], ops.N))
        full[:, s.free] = v
        dv = ops.delta(full, gates, c)
        if s.skip:
            for e in s.ce_edges + s.head_edges:
                dv[:, e.rows] = 0.0
        out = ops.delta_T(ops.w2 * dv, gates, c)
        for e in s.ce_edges:
            out[:, e.src] += e.weight ** 2 * phi_jvp(xp, e.src_map, c[:, e.src], full[:, e.src])
        return out[:, s.free]

    def hessian_bound(self) -> float:
        """An upper bound on λ_max of the objective's Hessian over every gate pattern and state.

        |δ(g)| ≤ |δ(1)| entrywise for gates in [0, 1], so λ_max(δ(g)ᵀW²δ(g)) = ‖Wδ(g)‖² ≤ ‖W|δ(1)|‖² = ρ(A),
        A = |δ(1)|ᵀ W² |δ(1)| ≥ 0; by Collatz–Wielandt ρ(A) ≤ max_i (A x)_i / x_i for any x > 0 (a few power
        steps make it tight). Cross-entropy Hessians add at most w²/4 (sigmoid) or w²/2 (softmax).
        """
        A = self.sparse_W_delta(absolute=True)
        lam = 0.0
        if A.nnz:
            x = np.ones(A.shape[1])
            lam = np.inf
            for _ in range(30):
                y = A.T @ (A @ x)
                with np.errstate(divide="ignore", invalid="ignore"):
                    ratio = np.where(x > 0, y / x, 0.0)
                lam = min(lam, float(ratio.max()))
                if not np.all(y > 0):
                    break
                x = y / y.max()
        # cross-entropy Hessians w² Dφ (‖Dφ‖ ≤ 1/4 sigmoid, ≤ 1/2 softmax); summed in case sources overlap
        extra = sum(e.weight ** 2 * hessian_weight(e.src_map.fn) for e in self.s.ce_edges)
        return lam + extra

    def sparse_W_delta(self, absolute: bool = False):
        """W δ_Ω on the least-squares rows as a host scipy.sparse matrix (gates 1, nonlinear maps at 0);
        with ``absolute`` its entrywise absolute value."""
        import scipy.sparse as sp

        from .assemble import coboundary_matrix

        ops, s = self.ops, self.s
        A = coboundary_matrix(ops.G, {k: to_numpy(v) for k, v in ops.params.items()}).tocsr()
        A = A[s.ls_rows][:, s.free_host]
        if absolute:
            A = abs(A)
        return (sp.diags(np.sqrt(to_numpy(ops.w2)[s.ls_rows])) @ A).tocsr()

    def sparse_L_free(self):
        """L_free = (Wδ_Ω)ᵀ(Wδ_Ω) as a host scipy.sparse CSC matrix; valid when the Hessian is shared by all
        examples (no free gated coordinate, no cross-entropy term on a free coordinate)."""
        A = self.sparse_W_delta()
        return (A.T @ A).tocsc()

    # -- diagnosis ----------------------------------------------------------------------------

    def describe_directions(self, vecs: np.ndarray, k: int = 6) -> str:
        """Name the free coordinates a set of (n,) null vectors live on: ``b[0] (0.71), c[0] (0.71)``."""
        ops, s = self.ops, self.s
        out = []
        for v in np.atleast_2d(vecs)[:3]:
            v = v / (np.abs(v).max() or 1.0)
            big = np.argsort(-np.abs(v))[:k]
            names = []
            for j in big:
                if abs(v[j]) < 1e-3:
                    continue
                g = int(s.free_host[j])
                for name, sl in ops.vertex.items():
                    if sl.start <= g < sl.stop:
                        names.append(f"{name}[{g - sl.start}] ({v[j]:+.2f})")
                        break
            more = int((np.abs(v) >= 1e-3).sum()) - len(names)
            out.append(", ".join(names) + (f", … {more} more" if more > 0 else ""))
        return "; ".join(f"[{t}]" for t in out)


def _host(a):
    get = getattr(a, "get", None)
    return get() if callable(get) else np.asarray(a)


def lower(G, params: dict, xp=np) -> SheafOperators:
    """Lower the IR ``G`` with parameter values ``params`` to batched operators on ``xp``."""
    return SheafOperators(G, params, xp)


__all__ = ["SheafOperators", "Problem", "EdgeOp", "lower", "phi", "phi_jvp", "phi_jacobian", "cross_entropy", "cross_entropy_grad",
           "sparse_module", "SPARSE_THRESHOLD"]
