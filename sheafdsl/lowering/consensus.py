"""A consensus problem on a sheaf, lowered to arrays on one array module ``xp`` (docs/admm.md).

The problem (``sheafdsl.ir.is_consensus``; docs/maths.md for δ)::

    minimise   Σ_v f_v(c_v) + ½ Σ_{soft e} w_e² ‖(δc)_e‖²
    subject to (δc)_e = 0 for every hard edge e, and the hard pins c_U = p,

with f_v the sum of the stalk's objective terms (quadratic ½ xᵀQx + qᵀx, nonneg, box, simplex, l1).
Soft pins are soft edges to an anchor pinned to its value. Eliminating the pinned coordinates leaves the
free coordinates x = c_Ω ∈ R^n (cochain order, so each stalk's free coordinates are contiguous) and

    minimise   ½ xᵀQx + qᵀx + ½ ‖W_s (D_s x − b_s)‖² + Σ_i λ_i |x_i| + ι_C(x)
    subject to D_h x = b_h,

where Q is block diagonal (one d_v × d_v block per stalk), D_s, D_h are the soft and hard rows of δ_Ω,
b = o − δ_U p (the offsets less what the pins contribute), and C is the product over stalks of their
boxes (box ∩ nonneg: lo_i ≤ x_i ≤ hi_i) and simplices ({x ≥ lo, Σ x = s_v} with s_v = 1 − Σ of the
stalk's pinned values).

**A batch of B independent instances** share the graph, the maps, Q, the boxes and the weights; what
varies per instance is the pinned values (``pinned``, (B, N)) and every parameter named as a
quadratic's q or an edge's bias, which may carry a leading axis of B (shape (B, d) instead of (d,)).
Arrays are stored column-major per instance: x is (n, B), so each instance is a column and the sparse
operators act on all columns at once.

>>> import numpy as np
>>> from sheafdsl.ir import new_sheaf, add_stalk, add_edge, add_objective, Identity
>>> G = new_sheaf(); add_stalk(G, "a", 2); add_stalk(G, "b", 2)
>>> add_edge(G, "ab", "a", "b", src_map=Identity(), dst_map=Identity(), hard=True)
>>> _ = add_objective(G, "a", "quadratic", Q=np.eye(2), q=[1.0, 0.0]); _ = add_objective(G, "b", "nonneg")
>>> P = lower_consensus(G, {}, np.zeros((1, 4)))
>>> P.n, P.Dh.shape, P.B, P.lo.ravel().tolist()
(4, (2, 4), 1, [-inf, -inf, 0.0, 0.0])
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..errors import Diagnostic, SheafError
from ..ir import INFERENCE, declared_at, edges, free_indices, model_error, objectives, pinned_indices, stalks, total_dim
from ..ir.maps import Nonlinear, ReluGate
from . import maps
from .backend import to_numpy
from .operators import sparse_module


def _err(code: str, msg: str, hint: str | None = None, G=None, **where) -> SheafError:
    """The error, at the statement ``where`` names (``stalk=``/``edge=``/``kinds=``: :func:`declared_at`)."""
    if G is None:
        return SheafError(Diagnostic(code, msg, hint=hint))
    return model_error(G, code, msg, declared_at(G, **where), hint)


def _batched(name: str, value, shape: tuple, B: int, what: str) -> np.ndarray:
    """A parameter's value as (B, *shape): a (*shape) value is shared, a (B, *shape) one is per instance."""
    a = value if type(value) is np.ndarray and value.dtype == np.float64 else np.asarray(to_numpy(value), dtype=float)
    if a.shape == shape:
        return np.broadcast_to(a, (B, *shape))
    if a.shape == (B, *shape):
        return a
    raise _err("E519", f"{what} `{name}` has shape {a.shape}; it needs {shape} (shared) or {(B, *shape)} "
               f"(one per instance of the batch of {B})")


def _value(params, name: str, stalk: str):
    if name not in (params or {}):
        raise _err("E502", f"the objective of stalk `{stalk}` uses parameter `{name}`, which has no value")
    return params[name]


class ConsensusProblem:
    """The arrays of a lowered consensus problem (see the module docstring); everything on ``xp``.

    Attributes (n free coordinates, B instances, M_h / M_s rows of the hard / soft edges)::

        Q  (n, n) sparse, block diagonal      q   (n, B)        lam (n, 1) (has_l1: any λ > 0)     lo, hi (n, 1)
        Dh (M_h, n) sparse   bh (M_h, B)       Ds (M_s, n) sparse   bs (M_s, B)   ws2 (M_s, 1) = w_e²
        Fs, Fd (M, n) sparse: every edge's source and head maps on the free coordinates (δ_Ω = Fd − Fs),
        b (M, B), w2 (M, 1) and hard (M, 1) bool, in edge order (the edge-based, local ADMM reads these);
        simplex: a list of (rows (g, k) int, s (g, B), lo (g, k, 1), hi (g, k, 1)) groups of simplex stalks
        with k free coordinates; blocks: the free-coordinate slice of each stalk (vertex order).

    ``quadratic`` is True when every objective term is quadratic (the KKT system is then the whole
    problem: ``exact``). ``cochain(x)`` puts the pins back: (n, B) -> (B, N).
    """

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def subset(self, cols):
        """The same problem for the instances at ``cols`` only (their q, b, bh, bs and simplex sums; the
        shared operators are not copied)."""
        Pc = ConsensusProblem(**self.__dict__)
        Pc.B = len(cols)
        for k in ("q", "b", "bh", "bs"):
            setattr(Pc, k, getattr(self, k)[:, cols])
        Pc.simplex = [(rows, s[:, cols], lo, hi) for rows, s, lo, hi in self.simplex]
        return Pc

    def cochain(self, x):
        """The full (B, N) cochain with the free coordinates ``x`` (n, B) and the pins."""
        c = self.pinned.copy()
        c[:, self.free] = x.T
        return c

    def objective(self, x):
        """The objective of the whole problem (pins included) at free coordinates ``x`` (n, B): (B,)."""
        xp = self.xp
        c = self.cochain(x).T  # (N, B)
        val = 0.5 * xp.sum(c * (self.Qfull @ c), axis=0) + xp.sum(self.qfull * c, axis=0)
        val = val + xp.sum(self.lamfull * xp.abs(c), axis=0)
        r = self.Ds_full @ c - self.os_full
        return val + 0.5 * xp.sum(self.ws2 * r * r, axis=0)

    def hard_residual(self, x):
        """‖D_h x − b_h‖ per instance (B,)."""
        xp = self.xp
        return xp.sqrt(xp.sum((self.Dh @ x - self.bh) ** 2, axis=0))


def _owner(offsets: np.ndarray, names: list, i: int) -> tuple[str, int]:
    """The stalk holding cochain coordinate ``i`` and the coordinate's index in it."""
    k = int(np.searchsorted(offsets, i, side="right")) - 1
    return names[k], int(i - offsets[k])


def _triplets(groups: dict) -> tuple:
    """(rows, cols, values) of dense blocks placed by array ops: ``groups[(r, c)]`` is a list of
    (row offset, column offset, (r, c) block) for blocks of one shape; each shape is stacked once."""
    R, C, X = [], [], []
    for (r, c), items in groups.items():
        ro = np.fromiter((t[0] for t in items), np.int64, len(items))
        co = np.fromiter((t[1] for t in items), np.int64, len(items))
        blk = np.stack([t[2] for t in items]).astype(float, copy=False).reshape(len(items), r, c)
        R.append(np.broadcast_to(ro[:, None, None] + np.arange(r)[None, :, None], blk.shape).ravel())
        C.append(np.broadcast_to(co[:, None, None] + np.arange(c)[None, None, :], blk.shape).ravel())
        X.append(blk.ravel())
    if not R:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(R), np.concatenate(C), np.concatenate(X)


def _on_block(m, block, dim: int, params):
    """The matrix of restriction map ``m`` over its whole stalk; on an edge's block (a, b) it acts on coordinates
    a..b−1 only (zero columns elsewhere)."""
    if block is None:
        return maps.matrix(m, dim, params)
    F = np.asarray(to_numpy(maps.matrix(m, block[1] - block[0], params)), dtype=float)
    full = np.zeros((F.shape[0], dim))
    full[:, block[0]:block[1]] = F
    return full


def lower_consensus(G, params: dict, pinned, xp=np) -> ConsensusProblem:
    """Lower the consensus problem of ``G`` with parameter values ``params`` and the (B, N) cochain
    ``pinned`` holding the values of every hard pin (inference pins: input and constants; other
    coordinates ignored). Raises E513 for a state-dependent map, E514 for a problem that is infeasible
    up front (an empty box, a pin outside its stalk's box or simplex, a simplex that cannot sum to 1),
    E519 for a parameter whose shape fits neither one instance nor the batch.

    Vectorised: one pass over the stalks and one over the edges only read the IR's attributes; Q's
    blocks, δ's source and head maps and the bounds are then placed by array ops, one per block shape
    (no per-stalk sparse matrices or numpy calls)."""
    from ..ir.maps import ParamMap

    if G.graph.get("learned") is not None:
        raise _err("E550", "a learned model's objectives come from its encoder and its observations: it is trained "
                   "(`sheaf train`) and applied with its decoder, not solved as a plain consensus problem",
                   "sheaf train FILE --trainer unrolled|implicit|local")
    E = edges(G)
    for u, v, name, d in E:
        for m in (d["src_map"], d["dst_map"]):
            for p in [getattr(m, "param", None) if isinstance(m, ParamMap) else None, d.get("bias")]:
                if p is not None and p not in (params or {}):
                    raise _err("E502", f"edge `{name}` uses parameter `{p}`, which has no value", G=G, edge=name)
            if isinstance(m, (ReluGate, Nonlinear)):
                raise _err("E513", f"edge `{name}` has a state-dependent map ({type(m).__name__}); a consensus "
                           "problem (admm, admm-local) needs linear restriction maps",
                           "solve this sheaf with --solver exact, cg or diffusion", G=G, edge=name)
    pinned_h = np.asarray(to_numpy(pinned), dtype=float)
    B, N = pinned_h.shape
    if N != total_dim(G):
        raise _err("E507", f"the pinned cochain has {N} coordinates; the sheaf has {total_dim(G)}")
    free = free_indices(G, INFERENCE)
    pin_idx = pinned_indices(G, INFERENCE)
    n = len(free)
    col = -np.ones(N, dtype=np.int64)  # cochain index -> free coordinate (or −1)
    col[free] = np.arange(n)
    pmask = np.zeros(N, dtype=bool)
    pmask[pin_idx] = True
    P = pinned_h * pmask  # the pins alone (B, N)

    # objectives: one pass gathering each term's data, then placed per block shape
    V = stalks(G)
    nodes = dict(G.nodes(data=True))  # plain dicts: the passes below read them once per stalk and edge
    offs = np.fromiter((nodes[v]["offset"] for v in V), np.int64, len(V))
    dims = np.fromiter((nodes[v]["dim"] for v in V), np.int64, len(V))
    Qgroups: dict = {}          # (d, d) -> [(off, off, Q_v)]
    qgroups: dict = {}          # (d, 1) -> [(off, 0, (d, B) q_v)]
    lo_t, hi_t, lam_t = {}, {}, {}  # d -> [(off, values (d,))]
    checked_Q: set = set()
    simplex_v = []
    for v, off, d in zip(V, offs.tolist(), dims.tolist()):
        obs = nodes[v].get("objectives")
        if not obs:
            continue
        for o in obs:
            k = o.kind
            if k == "quadratic":
                if isinstance(o.Q, str):
                    Qv = np.asarray(to_numpy(_value(params, o.Q, v)), dtype=float)
                    if Qv.shape != (d, d):
                        raise _err("E519", f"parameter `{o.Q}` (Q of stalk `{v}`) has shape {Qv.shape}, not {(d, d)}",
                                   G=G, stalk=v, kinds=("quadratic",))
                    Qv = 0.5 * (Qv + Qv.T)
                    if o.Q not in checked_Q:
                        if np.linalg.eigvalsh(Qv)[0] < -1e-10 * max(1.0, float(np.abs(Qv).max())):
                            raise _err("E514", f"parameter `{o.Q}` (Q of stalk `{v}`) is not positive semidefinite: "
                                       "the objective is not convex", "give a Q ⪰ 0", G=G, stalk=v, kinds=("quadratic",))
                        checked_Q.add(o.Q)
                else:
                    Qv = o.Q
                Qgroups.setdefault((d, d), []).append((off, off, Qv))
                qv = (_batched(o.q, _value(params, o.q, v), (d,), B, f"q of stalk `{v}`:") if isinstance(o.q, str)
                      else np.broadcast_to(o.q, (B, d)))
                qgroups.setdefault((d, B), []).append((off, 0, qv.T))
            elif k == "nonneg":
                lo_t.setdefault(d, []).append((off, np.zeros(d)))
            elif k == "box":
                lo_t.setdefault(d, []).append((off, o.lo))
                hi_t.setdefault(d, []).append((off, o.hi))
            elif k == "simplex":
                lo_t.setdefault(d, []).append((off, np.zeros(d)))
                if v not in simplex_v:
                    simplex_v.append(v)
            elif k == "l1":
                lam_t.setdefault(d, []).append((off, np.full(d, float(o.lam))))

    def place(store, into, ufunc):
        for d, items in store.items():
            idx = np.fromiter((t[0] for t in items), np.int64, len(items))[:, None] + np.arange(d)[None, :]
            ufunc.at(into, idx.ravel(), np.stack([t[1] for t in items]).astype(float, copy=False).ravel())

    lo_full, hi_full, lamfull = np.full(N, -np.inf), np.full(N, np.inf), np.zeros(N)
    place(lo_t, lo_full, np.maximum)
    place(hi_t, hi_full, np.minimum)
    place(lam_t, lamfull, np.add)
    names_v = list(V)
    bad = np.flatnonzero(lo_full > hi_full)
    if bad.size:
        i = int(bad[0])
        v, j = _owner(offs, names_v, i)
        raise _err("E514", f"stalk `{v}`: its objectives leave coordinate {j} no value "
                   f"({lo_full[i]:g} ≤ x ≤ {hi_full[i]:g})", "the problem is infeasible: relax a box",
                   G=G, stalk=v, kinds=("box", "nonneg", "simplex"))
    if len(pin_idx):
        vals = P[:, pin_idx]
        out = (vals < lo_full[pin_idx] - 1e-12) | (vals > hi_full[pin_idx] + 1e-12)
        cols = np.flatnonzero(out.any(0))
        if cols.size:
            c0 = int(cols[0])
            b0 = int(np.flatnonzero(out[:, c0])[0])
            i = int(pin_idx[c0])
            v, j = _owner(offs, names_v, i)
            raise _err("E514", f"stalk `{v}`: coordinate {j} is pinned to {vals[b0, c0]:g}, outside its objectives' "
                       f"bounds [{lo_full[i]:g}, {hi_full[i]:g}]" + (f" (instance {b0})" if B > 1 else ""),
                       "the problem is infeasible: change the pin or the bounds", G=G, stalk=v,
                       kinds=("box", "nonneg", "simplex"))
    simplex = []
    groups: dict[int, list] = {}
    for v in simplex_v:
        off, d = nodes[v]["offset"], nodes[v]["dim"]
        sl = slice(off, off + d)
        s = 1.0 - P[:, sl].sum(1)  # what the free coordinates must sum to (B,)
        fidx = np.arange(off, off + d)[~pmask[sl]]
        lo_v, hi_v = lo_full[fidx], hi_full[fidx]
        worst = np.flatnonzero((s < lo_v.sum() - 1e-12) | (s > hi_v.sum() + 1e-12) if len(fidx) else np.abs(s) > 1e-12)
        if worst.size:
            raise _err("E514", f"stalk `{v}`: the simplex needs its coordinates to sum to 1, which its pins"
                       + (" and bounds" if len(fidx) else "") + f" make impossible (the free part must sum to "
                       f"{s[worst[0]]:g})" + (f" (instance {int(worst[0])})" if B > 1 else ""),
                       "the problem is infeasible: change the pins or the bounds", G=G, stalk=v, kinds=("simplex",))
        if len(fidx):
            groups.setdefault(len(fidx), []).append((col[fidx], s, lo_v, hi_v))
    for k, gs in groups.items():
        rows = np.stack([g[0] for g in gs])
        s = np.stack([g[1] for g in gs])
        lo_g = np.stack([g[2] for g in gs])[:, :, None]
        hi_g = np.stack([g[3] for g in gs])[:, :, None]
        simplex.append((xp.asarray(rows), xp.asarray(s), xp.asarray(lo_g), xp.asarray(hi_g)))
    # the free-coordinate slice of each stalk (free coordinates are in cochain order)
    nfree_before = np.concatenate([[0], np.cumsum(~pmask)])
    starts, stops = nfree_before[offs], nfree_before[offs + dims]
    blocks = {v: slice(int(a), int(b)) if b > a else slice(0, 0) for v, a, b in zip(names_v, starts, stops)}

    # δ split into source and head maps, and its offsets: one pass reading the maps, then per shape
    src_g: dict = {}
    dst_g: dict = {}
    bias_items = []
    de_list, w_list, h_list, names = [], [], [], []
    r0 = 0
    for u, v, name, d in E:
        de = d["dim"]
        du, dv = nodes[u]["dim"], nodes[v]["dim"]
        src_g.setdefault((de, du), []).append((r0, nodes[u]["offset"], _on_block(d["src_map"], d.get("src_block"), du,
                                                                                  params)))
        dst_g.setdefault((de, dv), []).append((r0, nodes[v]["offset"], _on_block(d["dst_map"], d.get("dst_block"), dv,
                                                                                  params)))
        if d.get("bias") is not None:
            bias_items.append((r0, de, _batched(d["bias"], params[d["bias"]], (de,), B, f"bias of edge `{name}`:")))
        de_list.append(de)
        w_list.append(float(d["weight"]))
        h_list.append(bool(d.get("hard")))
        names.append((name, r0, de))
        r0 += de
    M = r0

    def full(groups_):
        r, c, x = _triplets(groups_)
        A = sp.csr_matrix((x, (r, c)), shape=(M, N))
        A.eliminate_zeros()
        return A

    FsN, FdN = full(src_g), full(dst_g)
    DN = FdN - FsN
    o = np.zeros((M, B))
    for r_, de, val in bias_items:
        o[r_:r_ + de] = val.T
    b = o - DN[:, pin_idx] @ P[:, pin_idx].T  # (M, B)
    de_a = np.asarray(de_list, dtype=np.int64)
    w2 = np.repeat(np.asarray(w_list) ** 2, de_a)[:, None]
    hard = np.repeat(np.asarray(h_list, dtype=bool), de_a)
    Fs, Fd, D = FsN[:, free], FdN[:, free], DN[:, free]
    h, s_ = np.flatnonzero(hard), np.flatnonzero(~hard)
    Qr, Qc, Qx = _triplets(Qgroups)
    Qfull = sp.csr_matrix((Qx, (Qr, Qc)), shape=(N, N))
    qr, _, qx = _triplets(qgroups)
    qfull = np.zeros((N, B))
    if qr.size:  # each (d, B) block ravelled: row off + i, column b
        rows_q = qr.reshape(-1, B)[:, 0]
        np.add.at(qfull, rows_q, qx.reshape(-1, B))
    Qf = Qfull[free][:, free]
    q = qfull[free] + (Qfull[free][:, pin_idx] @ P[:, pin_idx].T)  # ∂/∂x of ½cᵀQc + qᵀc at the pins
    S = sparse_module(xp)

    def dev(A):
        return S.csr_matrix(A.tocsr()) if xp is not np else A.tocsr()

    quadratic = (not simplex_v and not np.any(lamfull[free]) and np.all(np.isinf(lo_full[free]))
                 and np.all(np.isinf(hi_full[free])))
    return ConsensusProblem(
        xp=xp, G=G, B=B, N=N, n=n, M=M, free=xp.asarray(free), free_host=free, pinned=xp.asarray(pinned_h),
        Q=dev(Qf), q=xp.asarray(q), lam=xp.asarray(lamfull[free][:, None]), lo=xp.asarray(lo_full[free][:, None]),
        hi=xp.asarray(hi_full[free][:, None]), simplex=simplex, blocks=blocks, has_l1=bool(np.any(lamfull[free])),
        Dh=dev(D[h]), bh=xp.asarray(b[h]), Ds=dev(D[s_]), bs=xp.asarray(b[s_]), ws2=xp.asarray(w2[s_]),
        Fs=dev(Fs), Fd=dev(Fd), b=xp.asarray(b), w2=xp.asarray(w2), hard=xp.asarray(hard[:, None]),
        edge_rows=names, quadratic=bool(quadratic),
        Qfull=dev(Qfull), qfull=xp.asarray(qfull), lamfull=xp.asarray(lamfull[:, None]),
        Ds_full=dev(DN[s_]), os_full=xp.asarray(o[s_]),
        host=dict(Q=Qf, q=q, Dh=D[h], bh=b[h], Ds=D[s_], bs=b[s_], ws2=w2[s_]))


__all__ = ["ConsensusProblem", "lower_consensus"]
