"""A learned consensus model lowered to arrays on ``xp`` (docs/admm.md "Learning").

Per example, the agents' stalks x ∈ R^n (the agents in IR order, each stalk contiguous) minimise

    ½ Σ_v x_vᵀQ_v x_v + q_vᵀx_v + ½ Σ_{soft e} w_e² ‖(Dx)_e‖²   subject to (Dx)_e = 0 (hard e),

with D = F_dst − F_src the coboundary on the agents (M = Σ_e d_e rows), Q_v = diag(softplus(h[:d])) + the
stalk's literal/parameter quadratics, q_v = h[d:] + theirs, h = ENC(c_OBS) the encoder of the agent's
observation. Everything that depends on the parameters is rebuilt per step from three arrays, the
**coefficients** the solvers take and return gradients for:

- ``Q``: per agent group (agents of one dimension d), (B, V_g, d, d);
- ``q``: (n, B) (columns are examples, as in :mod:`.consensus`);
- ``F``: the values (nnz,) of the restriction maps on their fixed sparsity pattern (:class:`LearnedStructure`):
  every side of every edge, a block of d_e × w entries.

:class:`LearnedStructure` is built once per IR (per grid size): the agents, groups, the pattern of the
maps and which parameter fills which block. :func:`coefficients` maps parameters and observations to the
coefficients; :func:`coefficient_grads` maps the gradients of the coefficients back to the parameters
(the encoder by reverse mode of its MLP, a shared map by summing its blocks). :func:`decode` and
:func:`decode_grad` are the decoders and their losses.

>>> from sheafdsl.frontend.checker import load_text
>>> from sheafdsl.ir import from_model
>>> m = load_text('''sheaf t
... param P : 2 x 2 init xavier
... param W : 2 x 2 init xavier
... encoder enc : 3 -> 4 -> 4
... stalk a : 2
... stalk b : 2
... stalk oa : 3
... stalk ob : 3
... pin oa = input
... pin ob = input
... objective a encoded enc oa
... objective b encoded enc ob
... edge ab : a -> b maps P | P hard
... stalk y : 2
... pin y = target
... decode y : mean a b affine W identity
... ''')
>>> S = LearnedStructure(from_model(m))
>>> S.agents, S.n, S.M, S.nnz
(['a', 'b'], 4, 2, 8)
"""

from __future__ import annotations

import numpy as np

from ..errors import Diagnostic, SheafError
from ..ir import edges, stalks
from ..ir.maps import Constant, Identity, ParamMap, Scaled
from .backend import to_numpy
from .operators import sparse_module


def _err(code: str, msg: str, hint: str | None = None) -> SheafError:
    return SheafError(Diagnostic(code, msg, hint=hint))


def softplus(xp, t):
    """log(1 + eᵗ), computed without overflow."""
    return xp.maximum(t, 0.0) + xp.log1p(xp.exp(-xp.abs(t)))


def sigmoid(xp, t):
    """1 / (1 + e⁻ᵗ), computed without overflow."""
    e = xp.exp(-xp.abs(t))
    return xp.where(t >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


_ACT = {
    "tanh": (lambda xp, z: xp.tanh(z), lambda xp, z, a: 1.0 - a * a),
    "relu": (lambda xp, z: xp.maximum(z, 0.0), lambda xp, z, a: (z > 0).astype(z.dtype)),
    "sigmoid": (lambda xp, z: sigmoid(xp, z), lambda xp, z, a: a * (1.0 - a)),
    "softplus": (lambda xp, z: softplus(xp, z), lambda xp, z, a: sigmoid(xp, z)),
    "identity": (lambda xp, z: z, lambda xp, z, a: xp.ones_like(z)),
}


def constant_stalks(G) -> dict:
    """The constants of a learned model's IR, stalk -> value p (d,): stalks pinned whole to a value that are neither
    data (an observation or a decoder's target) nor carry an objective (encoded or any other term)."""
    spec = G.graph.get("learned")
    data = ({o[2] for o in spec.objectives} | {d.target for d in spec.decoders}) if spec is not None else set()
    encoded = {o[0] for o in spec.objectives} if spec is not None else set()
    out = {}
    for v in stalks(G):
        whole = [p for p in G.nodes[v]["pins"] if p.source == "value" and p.indices is None]
        if whole and v not in data and v not in encoded and not G.nodes[v].get("objectives"):
            out[v] = np.asarray(whole[-1].value, dtype=float).reshape(-1)
    return out


def bounds_and_constants(G) -> tuple[list, list]:
    """(the stalks with a ``nonneg``/``box`` term, the constants (:func:`constant_stalks`)) of a learned model's IR:
    what only the implicit trainer differentiates."""
    bounded = [v for v in stalks(G) if any(o.kind in ("nonneg", "box") for o in G.nodes[v].get("objectives") or ())]
    return bounded, list(constant_stalks(G))


class AgentGroup:
    """The agents of one stalk dimension d: ``agents`` (names), ``cols`` (V, d) their coordinates in x."""

    def __init__(self, d: int, agents: list, cols: np.ndarray):
        self.d, self.agents, self.cols = d, agents, cols
        self.V = len(agents)
        #: the first coordinate when the group's coordinates are one contiguous run in agent order (else None):
        #: then gathering them is a reshape, not an indexed copy
        flat = cols.reshape(-1)
        self.start = int(flat[0]) if flat.size and np.array_equal(flat, np.arange(flat[0], flat[0] + flat.size)) else None


class LearnedStructure:
    """What does not change with the parameters: agents, groups, the maps' sparsity pattern.

    Attributes: ``agents`` (IR order), ``offset``/``dim`` per agent, ``n``; ``groups`` (:class:`AgentGroup`),
    ``where[v]`` = (group index, position); ``encoded[enc]`` = (group, positions (V_E,), observation stalks);
    ``quadratic``: (group, position, Q, q) literal/parameter terms (Q, q arrays or parameter names);
    the edges' rows (``M``, ``hard`` (M,) bool, ``w2`` (M,)); the pattern of the stacked side maps
    F = [F_src; F_dst] (2M × n): ``rows2``, ``cols``, ``erow`` (the edge row), ``sign`` (−1 src, +1 dst),
    and ``blocks``: (key, count, d_e, w, start) per map (key a parameter name or a constant map's index in
    ``map_constants``), the entries of its ``count`` blocks at ``start`` .. in the value array (row-major).

    **Constants** (``constants``: stalk -> value p_c) are stalks pinned whole to a value with no objective; their
    coordinates are the pattern's columns n .. n + ``n_fixed`` (``fixed`` the values), so a hard edge between an
    agent and a constant is the affine row (D_x x + D_c p)_e = 0 and the hard rows read A x = r with r = −D_c p
    (:meth:`rhs`). **Bounds** (``lo``, ``hi``: (n,), ±inf where none; ``bounded`` the coordinates with one) come
    from the agents' ``nonneg`` and ``box`` terms.
    """

    def __init__(self, G):
        spec = G.graph.get("learned")
        if spec is None:
            raise _err("E551", "not a learned model: it has no encoder, grid or decoder",
                       "see docs/admm.md, \"Learning\"")
        self.G, self.spec = G, spec
        data_stalks = {o[2] for o in spec.objectives} | {d.target for d in spec.decoders}
        in_edges = {x for u, v, _, _ in edges(G) for x in (u, v)}
        with_obj = {o[0] for o in spec.objectives} | {v for v in stalks(G) if G.nodes[v].get("objectives")}
        self.constants = constant_stalks(G)  # their edges are affine constraints
        self.agents = [v for v in stalks(G) if v not in data_stalks and v not in self.constants
                       and (v in in_edges or v in with_obj)]
        self.offset, self.dim, n = {}, {}, 0
        for v in self.agents:
            self.offset[v], self.dim[v] = n, G.nodes[v]["dim"]
            n += self.dim[v]
        self.n = n
        # the constants' coordinates follow the agents' in the maps' pattern (columns n .. n + n_fixed)
        self.fixed_offset, nf = {}, 0
        for v, val in self.constants.items():
            self.fixed_offset[v] = n + nf
            nf += len(val)
        self.n_fixed = nf
        self.fixed = np.concatenate(list(self.constants.values())) if nf else np.zeros(0)
        missing = [v for v in self.agents if v not in with_obj]
        if missing:
            raise _err("E551", f"agent `{missing[0]}` of a learned model has no objective: its stalk would be decided by "
                       "its edges alone", "give every agent an `encoded` (or `quadratic`) objective")
        by_dim: dict[int, list] = {}
        for v in self.agents:
            by_dim.setdefault(self.dim[v], []).append(v)
        self.groups, self.where = [], {}
        for d, vs in sorted(by_dim.items()):
            cols = np.array([np.arange(self.offset[v], self.offset[v] + d) for v in vs], dtype=np.int64)
            for k, v in enumerate(vs):
                self.where[v] = (len(self.groups), k)
            self.groups.append(AgentGroup(d, vs, cols))
        self.encoded = {}
        for agent, enc, obs in spec.objectives:
            g, k = self.where[agent]
            e = self.encoded.setdefault(enc, [g, [], []])
            e[1].append(k)
            e[2].append(obs)
        self.encoded = {k: (g, np.array(pos, dtype=np.int64), obs) for k, (g, pos, obs) in self.encoded.items()}
        self.quadratic = []
        self.lo, self.hi = np.full(n, -np.inf), np.full(n, np.inf)
        for v in self.agents:
            o0 = self.offset[v]
            sl = slice(o0, o0 + self.dim[v])
            for o in G.nodes[v].get("objectives") or ():
                g, k = self.where[v]
                if o.kind == "quadratic":
                    self.quadratic.append((g, k, o.Q, o.q))
                elif o.kind == "nonneg":
                    self.lo[sl] = np.maximum(self.lo[sl], 0.0)
                elif o.kind == "box":
                    self.lo[sl] = np.maximum(self.lo[sl], o.lo)
                    self.hi[sl] = np.minimum(self.hi[sl], o.hi)
                else:
                    raise _err("E289", f"agent `{v}` of a learned model has a {o.kind} term, which the trainers do not "
                               "differentiate", "a learned model's agents are quadratic, bounded by nonneg or box")
        #: the coordinates with a bound (nonneg/box): the problem is a QP with x ∈ [lo, hi] there
        self.bounded = np.isfinite(self.lo) | np.isfinite(self.hi)
        self._edges(G)

    def _edges(self, G):
        from collections import OrderedDict

        blocks: OrderedDict = OrderedDict()  # key -> list of (row0 in 2M space, edge row0, col0, sign)
        shapes: dict = {}
        self.map_constants: list[np.ndarray] = []
        hard, w2, M = [], [], 0
        self.edge_rows = []
        for u, v, name, d in edges(G):
            de = d["dim"]
            for side, st, m, block in (("src", u, d["src_map"], d.get("src_block")), ("dst", v, d["dst_map"], d.get("dst_block"))):
                if st in self.constants:
                    if not d.get("hard"):
                        raise _err("E289", f"edge `{name}` joins the constant `{st}` without being hard")
                    width = len(self.constants[st]) if block is None else block[1] - block[0]
                    col0 = self.fixed_offset[st] + (0 if block is None else block[0])
                elif st not in self.offset:
                    raise _err("E551", f"edge `{name}` joins `{st}`, which is not an agent of the learned model")
                else:
                    width = self.dim[st] if block is None else block[1] - block[0]
                    col0 = self.offset[st] + (0 if block is None else block[0])
                if isinstance(m, ParamMap):
                    key = m.param
                else:
                    if isinstance(m, Identity):
                        mat = np.eye(width)
                    elif isinstance(m, Scaled):
                        mat = m.scale * np.eye(width)
                    elif isinstance(m, Constant):
                        mat = np.asarray(m.matrix, dtype=float)
                    else:
                        raise _err("E551", f"edge `{name}`: a learned model's maps are linear ({type(m).__name__} is not)")
                    key = ("const", len(self.map_constants))
                    self.map_constants.append(mat)
                shapes[key] = (de, width)
                blocks.setdefault(key, []).append((M, col0, -1.0 if side == "src" else 1.0))
            hard.append(np.full(de, bool(d.get("hard"))))
            w2.append(np.full(de, float(d["weight"]) ** 2))
            self.edge_rows.append((name, M, de))
            M += de
        self.M = M
        self.hard = np.concatenate(hard) if hard else np.zeros(0, dtype=bool)
        self.w2 = np.concatenate(w2) if w2 else np.zeros(0)
        rows2, cols, erow, sign, self.blocks = [], [], [], [], []
        start = 0
        for key, uses in blocks.items():
            de, w = shapes[key]
            ii, jj = np.meshgrid(np.arange(de), np.arange(w), indexing="ij")
            for r0, c0, sg in uses:
                erow.append(r0 + ii.ravel())
                rows2.append(r0 + ii.ravel() + (0 if sg < 0 else M))
                cols.append(c0 + jj.ravel())
                sign.append(np.full(de * w, sg))
            self.blocks.append((key, len(uses), de, w, start))
            start += len(uses) * de * w
        cat = (lambda a, t: np.concatenate(a).astype(t)) if rows2 else (lambda a, t: np.zeros(0, dtype=t))
        self.rows2, self.cols, self.erow = cat(rows2, np.int64), cat(cols, np.int64), cat(erow, np.int64)
        self.sign = cat(sign, float)
        self.nnz = start
        self.params_used = sorted({k for k, _, _, _, _ in self.blocks if isinstance(k, str)})

    def hard_rows(self) -> list:
        """Per group, per agent: the indices (in the hard rows' order, the rows of A = D[hard]) of the hard rows whose
        pattern touches the agent's coordinates (host arrays, computed once): the rows of its term A_v H_v⁻¹ A_vᵀ."""
        if getattr(self, "_hard_rows", None) is None:
            pos = np.cumsum(self.hard) - 1  # edge row -> its index among the hard rows
            owner = np.full(self.n, -1, dtype=np.int64)
            for v in self.agents:
                owner[self.offset[v]:self.offset[v] + self.dim[v]] = self.agents.index(v)
            on = self.hard[self.erow] & (self.cols < self.n) if self.M else np.zeros(0, dtype=bool)
            touched: dict = {}
            for a, r in zip(owner[self.cols[on]], pos[self.erow[on]]):
                touched.setdefault(int(a), set()).add(int(r))
            self._hard_rows = [[np.array(sorted(touched.get(self.agents.index(v), ())), dtype=np.int64)
                                for v in g.agents] for g in self.groups]
        return self._hard_rows

    # -- the maps --
    def map_values(self, params, xp):
        """The values (nnz,) of the side maps on the pattern, from the parameters."""
        parts = []
        for key, count, de, w, _ in self.blocks:
            mat = xp.asarray(params[key] if isinstance(key, str) else self.map_constants[key[1]], dtype=float)
            if mat.shape != (de, w):
                raise _err("E552", f"restriction map `{key}` has shape {tuple(mat.shape)}; its edges need {(de, w)}")
            parts.append(xp.tile(mat.reshape(-1), count))
        return xp.concatenate(parts) if parts else xp.zeros(0)

    def map_grads(self, Fbar, xp) -> dict:
        """The gradient of each map parameter from the gradient (nnz,) of the side maps' values (its blocks summed)."""
        out = {}
        for key, count, de, w, start in self.blocks:
            if isinstance(key, str):
                g = Fbar[start:start + count * de * w].reshape(count, de, w).sum(0)
                out[key] = out[key] + g if key in out else g
        return out

    def operators(self, Fvals, xp):
        """(F2, D): the stacked side maps [F_src; F_dst] (2M × n) and the coboundary D = F_dst − F_src (M × n) on the
        agents' coordinates (a constant's entries are in :meth:`rhs`), sparse on ``xp``."""
        S = sparse_module(xp)
        if self.n_fixed:
            on = self.cols < self.n
            Fvals, rows2, cols, erow, sign = Fvals[xp.asarray(on)], self.rows2[on], self.cols[on], self.erow[on], \
                self.sign[on]
        else:
            rows2, cols, erow, sign = self.rows2, self.cols, self.erow, self.sign
        F2 = S.csr_matrix((Fvals, (xp.asarray(rows2), xp.asarray(cols))), shape=(2 * self.M, self.n))
        D = S.csr_matrix((Fvals * xp.asarray(sign), (xp.asarray(erow), xp.asarray(cols))), shape=(self.M, self.n))
        return F2, D

    def rhs(self, Fvals, xp):
        """r = −(D_c p)[hard] (m,): the right-hand side of A x = r that the constants give (zeros without them)."""
        hard = xp.asarray(self.hard)
        if not self.n_fixed:
            return xp.zeros(int(self.hard.sum()))
        on = self.cols >= self.n
        Dc = sparse_module(xp).csr_matrix((Fvals[xp.asarray(on)] * xp.asarray(self.sign[on]),
                                          (xp.asarray(self.erow[on]), xp.asarray(self.cols[on] - self.n))),
                                         shape=(self.M, self.n_fixed))
        return -(Dc @ xp.asarray(self.fixed))[hard]

    def extended(self, v, xp, fixed: bool = True):
        """[v; p] (n + n_fixed, B) for v (n, B): the constants' values appended (``fixed=False``: zeros, for an
        adjoint, which does not move a constant)."""
        if not self.n_fixed:
            return v
        B = v.shape[1]
        tail = xp.asarray(self.fixed)[:, None] * xp.ones((1, B)) if fixed else xp.zeros((self.n_fixed, B))
        return xp.concatenate([v, tail], axis=0)


# ----------------------------------------------------------------------------------------------
# encoders


def mlp_forward(enc, params, o, xp):
    """h = W_L φ(… φ(W_1 o + b_1) …) + b_L for rows o (m, DIN) (no b_k for a ``nobias`` encoder); returns
    (h (m, DOUT), the layers' (z, a))."""
    a, cache = o, []
    L = len(enc.layers)
    for k, (Wn, bn) in enumerate(enc.layers):
        z = a @ xp.asarray(params[Wn]).T
        if bn is not None:
            z = z + xp.asarray(params[bn])
        if k < L - 1:
            act = _ACT[enc.activations[k]][0](xp, z)
            cache.append((a, z, act))
            a = act
        else:
            cache.append((a, z, None))
            a = z
    return a, cache


def mlp_backward(enc, params, cache, hbar, xp) -> dict:
    """The parameters' gradients of ⟨hbar, h⟩ (reverse mode through :func:`mlp_forward`)."""
    grads = {}
    g = hbar
    for k in range(len(enc.layers) - 1, -1, -1):
        Wn, bn = enc.layers[k]
        a_in, z, act = cache[k]
        if act is not None:
            g = g * _ACT[enc.activations[k]][1](xp, z, act)
        grads[Wn] = g.T @ a_in
        if bn is not None:
            grads[bn] = g.sum(0)
        if k:
            g = g @ xp.asarray(params[Wn])
    return grads


class Coefficients:
    """The problem of one batch: ``Q`` (per group (B, V, d, d)), ``q`` (n, B), ``F`` (nnz,), and what the
    gradients need (the encoders' caches)."""

    def __init__(self, Q, q, F, B, caches):
        self.Q, self.q, self.F, self.B, self.caches = Q, q, F, B, caches


def coefficients(S: LearnedStructure, params: dict, obs: dict, xp, B: int | None = None) -> Coefficients:
    """The coefficients of a batch: ``obs`` maps each observation stalk to its (B, d) values."""
    if B is None:
        B = int(next(iter(obs.values())).shape[0]) if obs else 1
    Q = [xp.zeros((B, g.V, g.d, g.d)) for g in S.groups]
    qT = xp.zeros((B, S.n))
    caches = {}
    for enc_name, (gi, pos, obs_names) in S.encoded.items():
        enc = S.spec.encoders[enc_name]
        g = S.groups[gi]
        try:
            O = xp.stack([xp.asarray(obs[o], dtype=float) for o in obs_names], axis=1)  # (B, V_E, DIN)
        except KeyError as exc:
            raise _err("E553", f"no observation for stalk `{exc.args[0]}`",
                       "give every input-pinned observation stalk (and each grid's (B, R, C, ODIM) patches)") from None
        if O.shape[0] != B or O.shape[2] != enc.widths[0]:
            raise _err("E553", f"the observations of encoder `{enc_name}` have shape {tuple(O.shape)}; they need "
                       f"({B}, {len(obs_names)}, {enc.widths[0]})")
        h, cache = mlp_forward(enc, params, O.reshape(B * len(obs_names), -1), xp)
        h = h.reshape(B, len(obs_names), 2 * g.d)
        caches[enc_name] = (cache, h)
        diag = softplus(xp, h[:, :, :g.d])
        idx = xp.arange(g.d)
        Qg = Q[gi]
        Qg[:, pos[:, None], idx[None, :], idx[None, :]] += diag
        cols = xp.asarray(g.cols[pos])  # (V_E, d)
        qT[:, cols.reshape(-1)] += h[:, :, g.d:].reshape(B, -1)
    for gi, k, Qd, qd in S.quadratic:
        g = S.groups[gi]
        Qm = xp.asarray(params[Qd] if isinstance(Qd, str) else Qd, dtype=float).reshape(g.d, g.d)
        Q[gi][:, k] += 0.5 * (Qm + Qm.T)
        qv = xp.asarray(params[qd] if isinstance(qd, str) else qd, dtype=float)
        qT[:, xp.asarray(g.cols[k])] += qv.reshape(-1, g.d) if qv.ndim == 2 else qv
    return Coefficients(Q, qT.T.copy(), S.map_values(params, xp), B, caches)


def coefficient_grads(S: LearnedStructure, params: dict, C: Coefficients, Qbar: list, qbar, Fbar, xp) -> dict:
    """The parameters' gradients from those of the coefficients (``Qbar`` per group (B, V, d, d), ``qbar``
    (n, B), ``Fbar`` (nnz,)), through the encoders (softplus and the MLP) and the shared maps."""
    grads = S.map_grads(Fbar, xp) if Fbar is not None else {}
    qbT = qbar.T
    for enc_name, (gi, pos, obs_names) in S.encoded.items():
        enc = S.spec.encoders[enc_name]
        g = S.groups[gi]
        cache, h = C.caches[enc_name]
        idx = xp.arange(g.d)
        dQ = Qbar[gi][:, pos[:, None], idx[None, :], idx[None, :]]  # (B, V_E, d)
        hbar = xp.concatenate([dQ * sigmoid(xp, h[:, :, :g.d]),
                               qbT[:, xp.asarray(g.cols[pos]).reshape(-1)].reshape(C.B, len(obs_names), g.d)], axis=2)
        for k, v in mlp_backward(enc, params, cache, hbar.reshape(C.B * len(obs_names), -1), xp).items():
            grads[k] = grads[k] + v if k in grads else v
    for gi, k, Qd, qd in S.quadratic:
        g = S.groups[gi]
        if isinstance(Qd, str):
            Gq = Qbar[gi][:, k].sum(0)
            Gq = 0.5 * (Gq + Gq.T)
            grads[Qd] = grads[Qd] + Gq.reshape(xp.asarray(params[Qd]).shape) if Qd in grads else \
                Gq.reshape(xp.asarray(params[Qd]).shape)
        if isinstance(qd, str):
            gq = qbT[:, xp.asarray(g.cols[k])]
            gq = gq if xp.asarray(params[qd]).ndim == 2 else gq.sum(0)
            grads[qd] = grads[qd] + gq if qd in grads else gq
    return grads


# ----------------------------------------------------------------------------------------------
# decoders


def _pooled(S: LearnedStructure, dec, x, xp):
    """The pooled reading of a decoder, ``dec.scale`` · Σ_s x_s[block] (the mean or the sum): (B, w) from x (n, B)."""
    acc = None
    for st, block in dec.sources:
        o = S.offset[st]
        a, b = (0, S.dim[st]) if block is None else block
        part = x[o + a:o + b]
        acc = part if acc is None else acc + part
    return (acc * dec.scale).T


def decode(S: LearnedStructure, params: dict, x, xp) -> dict:
    """Every decoder's prediction ŷ (B, dim Y) from the agents' stalks x (n, B)."""
    out = {}
    for dec in S.spec.decoders:
        z = _pooled(S, dec, x, xp) @ xp.asarray(params[dec.W]).T
        if dec.b is not None:
            z = z + xp.asarray(params[dec.b])
        if dec.kind == "softmax":
            e = xp.exp(z - z.max(1, keepdims=True))
            out[dec.target] = e / e.sum(1, keepdims=True)
        elif dec.kind == "sigmoid":
            out[dec.target] = sigmoid(xp, z)
        else:
            out[dec.target] = z
    return out


def decode_loss(S: LearnedStructure, params: dict, x, targets: dict, xp, *, grad: bool = True):
    """(loss, ∂loss/∂x (n, B), the decoders' parameter gradients): the sum over decoders of their losses
    (mse ½‖ŷ − y‖², cross-entropy −Σ y log ŷ, binary cross-entropy), averaged over the B examples."""
    B = x.shape[1]
    loss = 0.0
    xbar = xp.zeros_like(x) if grad else None
    grads: dict = {}
    for dec in S.spec.decoders:
        if dec.target not in targets:
            raise _err("E553", f"no target values for `{dec.target}`")
        y = xp.asarray(targets[dec.target], dtype=float)
        xs = _pooled(S, dec, x, xp)
        W = xp.asarray(params[dec.W])
        z = xs @ W.T + (xp.asarray(params[dec.b]) if dec.b is not None else 0.0)
        if y.shape != z.shape:
            raise _err("E553", f"the targets of `{dec.target}` have shape {tuple(y.shape)}; the decoder gives "
                       f"{tuple(z.shape)}")
        if dec.kind == "softmax":
            zm = z - z.max(1, keepdims=True)
            lse = xp.log(xp.exp(zm).sum(1, keepdims=True))
            loss += float(-(y * (zm - lse)).sum()) / B
            zbar = (xp.exp(zm - lse) - y) / B
        elif dec.kind == "sigmoid":
            loss += float((softplus(xp, z) - y * z).sum()) / B
            zbar = (sigmoid(xp, z) - y) / B
        else:
            r = z - y
            loss += 0.5 * float((r * r).sum()) / B
            zbar = r / B
        if not grad:
            continue
        for k, v in ((dec.W, zbar.T @ xs), (dec.b, zbar.sum(0))):
            if k is not None:
                grads[k] = grads[k] + v if k in grads else v
        xsbar = (zbar @ W).T * dec.scale  # (w, B)
        for st, block in dec.sources:
            o = S.offset[st]
            a, b = (0, S.dim[st]) if block is None else block
            xbar[o + a:o + b] += xsbar
    return loss, xbar, grads


__all__ = ["LearnedStructure", "AgentGroup", "bounds_and_constants", "constant_stalks", "Coefficients", "coefficients", "coefficient_grads", "decode",
           "decode_loss", "mlp_forward", "mlp_backward", "softplus", "sigmoid"]
