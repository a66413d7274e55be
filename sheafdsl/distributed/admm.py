"""``admm-local`` across workers: the agents (stalks) partitioned, only cut edges' boundary messages travel.

The edge-based ADMM of :mod:`sheafdsl.solvers.admm` (``_Local``) updates every stalk from its own edges
and every edge from its two endpoints. So the agent graph is partitioned (networkx Kernighan–Lin
bisection, recursively, into one part per worker), each part is held by a Dask actor on its worker,
and an iteration is, on every part at once:

A. the x-step of its stalks, then a_e and e = a + μ of its own edge ends (the source end of each edge
   belongs to the source stalk's part, the head end to the head's part); the e of each end of a **cut**
   edge (its endpoints in two parts) is sent straight to the other part's actor, worker to worker;
B. once the other parts' messages of this iteration are in: the edge prox of each of its edge ends, from
   its own e and the other end's (both parts of a cut edge compute the same prox from the same two
   numbers), the w-step and dual updates of its stalks, and its partial sums of the stopping test's
   squared norms.

The driver (:func:`sheafdsl.solvers.admm.run_admm`, unchanged: stopping, adaptive ρ, stalls, traces)
decides only at its checks (every ``check`` = 10 iterations: convergence, ρ), so the parts run the
iterations between two checks on their own, and return the partial sums of each; the driver adds them. Every array a part holds is a row slice of the one-process iteration's (the
vertex factorisation T, K, the initial state: built once by ``_Local`` on the driver and cut), so each
part computes its rows of the one-process iterate with the same floating-point operations: the parts
agree with one process to the round-off of the norms' sums (same iterations, same minimiser;
``tests/test_distributed.py``).
"""

from __future__ import annotations

import math
import types

import numpy as np

from ..errors import Diagnostic, SheafError

#: seconds a part waits for its neighbours' messages of one iteration before giving up (E704)
TIMEOUT = 120.0


def partition(G, k: int, seed: int = 0) -> dict:
    """stalk -> part (0..k-1): recursive Kernighan–Lin bisection of the agent graph (stalks, edges
    undirected), the largest part split first; few cut edges, parts of sizes within one of each other."""
    import networkx as nx
    from networkx.algorithms.community import kernighan_lin_bisection

    from ..ir import edges, stalks

    H = nx.Graph()
    H.add_nodes_from(stalks(G))
    for u, v, _, _ in edges(G):
        if u != v:
            H.add_edge(u, v, weight=H.get_edge_data(u, v, {"weight": 0})["weight"] + 1)
    parts = [sorted(H.nodes)]
    while len(parts) < k and max(len(p) for p in parts) > 1:
        parts.sort(key=len, reverse=True)
        big = parts.pop(0)
        a, b = kernighan_lin_bisection(H.subgraph(big), seed=seed, weight="weight")
        parts += [sorted(a), sorted(b)]
    return {v: j for j, p in enumerate(sorted(parts, key=lambda p: p[0])) for v in p}


class Part:
    """One part's rows of the edge-based ADMM, held by a Dask actor (``data``: see :func:`_part_data`)."""

    def __init__(self, data: dict):
        import threading

        self.__dict__.update(data)
        self.P = types.SimpleNamespace(xp=np, lam=self.lam, lo=self.lo, hi=self.hi, simplex=self.simplex,
                                       has_l1=bool(np.any(self.lam)))  # what prox_g reads of a lowered problem
        self._inbox: dict = {}
        self._cv = threading.Condition()
        self.peers: dict = {}
        self.seconds = {"compute": 0.0, "wait": 0.0}

    def timings(self) -> dict:
        """Seconds this part spent computing and waiting for its neighbours' messages, over the run."""
        return dict(self.seconds)

    def connect(self, peers: dict) -> int:
        """The actors of the parts this one shares cut edges with: {part: actor}."""
        self.peers = {q: a for q, a in peers.items() if q in self.send}
        return len(self.peers)

    async def deliver(self, k: int, src: int, vals) -> None:
        """A neighbour's e values of its cut edges' ends at iteration ``k`` (on the worker's event loop, so it
        lands while :meth:`run` waits in the actor's thread)."""
        with self._cv:
            self._inbox[(k, src)] = vals
            self._cv.notify_all()

    def run(self, k0: int, n: int, rho, alpha, f):
        """Iterations k0 .. k0 + n − 1 (the duals first rescaled by ``f``): the squared norms' partial sums
        of each, (n, 7, B)."""
        import time

        out = np.empty((n, 7, self.x.shape[1]))
        for i in range(n):
            k = k0 + i
            t0 = time.perf_counter()
            msgs = self.phase_a(rho, alpha, f if i == 0 else None)
            sent = [self.peers[q].deliver(k, self.part, vals) for q, vals in msgs.items()]
            t1 = time.perf_counter()
            with self._cv:
                if not self._cv.wait_for(lambda: all((k, q) in self._inbox for q in self.recv), timeout=TIMEOUT):
                    raise SheafError(Diagnostic("E704", f"admm-local across workers: part {self.part} heard nothing "
                                                        f"from its neighbours at iteration {k} for {TIMEOUT:g} s"))
                incoming = {q: self._inbox.pop((k, q)) for q in self.recv}
            t2 = time.perf_counter()
            out[i] = self.phase_b(rho, incoming)
            for fut in sent:
                fut.result()
            t3 = time.perf_counter()
            self.seconds["compute"] += (t1 - t0) + (t3 - t2)
            self.seconds["wait"] += t2 - t1
        return out

    def phase_a(self, rho, alpha, f):
        """Rescale the duals by ``f`` (a ρ change), the x-step, and this part's edge ends' e = a + μ; returns
        the e of cut edges' ends, per destination part: {part: (rows, values)}."""
        from ..solvers.admm import local_x_step

        if f is not None:
            self.mu, self.mv, self.mw = self.mu / f, self.mv / f, self.mw / f
        self._a = local_x_step(self, self.q, rho, alpha)
        eu, ev = self._a[6], self._a[7]
        return {q: (eu[pu], ev[pv]) for q, (pu, pv) in self.send.items()}

    def phase_b(self, rho, incoming):
        """The edge proxes, w-step and dual updates, given the other ends' e of the cut edges
        (``incoming``: {part: (eu values for its rows, ev values)}); returns the squared norms' partial sums
        (7, B), in the copy rows' equilibrated scale c (``_Local``): ‖√c(Ax−y)‖², ‖AᵀC(y−y_prev)‖², ‖√c Ax‖², ‖√c y‖²,
        ‖AᵀCμ‖², ‖Qx+q‖², ‖√c μ‖²."""
        from ..solvers.admm import edge_theta, prox_g

        x, axu, axv, au, av, aw, eu, ev = self._a
        ev_u = ev[self.int_u_in_v] if self.int_u.size == eu.shape[0] else self._fill(eu.shape, ev, "u", incoming)
        eu_v = eu[self.int_v_in_u] if self.int_v.size == ev.shape[0] else self._fill(ev.shape, eu, "v", incoming)
        ru = ev_u - eu - self.b_u
        rv = ev - eu_v - self.b_v
        tu = edge_theta(np, self.hard_u, self.w2_u, self.g_u, self.gsum_u, rho)
        tv = edge_theta(np, self.hard_v, self.w2_v, self.g_v, self.gsum_v, rho)
        yu, yv = eu + tu * ru, ev - tv * rv
        w = prox_g(self.P, aw + self.mw, rho)
        self.mu = self.mu + au - yu
        self.mv = self.mv + av - yv
        self.mw = self.mw + (aw - w)
        dyu, dyv, dw = yu - self.yu, yv - self.yv, w - self.w
        self.x, self.yu, self.yv, self.w = x, yu, yv, w
        sq = lambda a, c=1.0: np.sum(c * (a * a), axis=0)  # noqa: E731
        cu, cv = self.c_u, self.c_v
        return np.stack([sq(axu - yu, cu) + sq(axv - yv, cv) + sq(x - w), sq(self.FsT @ dyu + self.FdT @ dyv + dw),
                         sq(axu, cu) + sq(axv, cv) + sq(x), sq(yu, cu) + sq(yv, cv) + sq(w),
                         sq(self.FsT @ self.mu + self.FdT @ self.mv + self.mw), sq(self.Q @ x + self.q),
                         sq(self.mu, cu) + sq(self.mv, cv) + sq(self.mw)])

    def _fill(self, shape, local, side, incoming):
        """The other end's e for each of this part's ``side`` ends: from this part (internal edges) or the
        message of the part holding it."""
        out = np.empty(shape)
        internal, internal_src = (self.int_u, self.int_u_in_v) if side == "u" else (self.int_v, self.int_v_in_u)
        out[internal] = local[internal_src]
        for q, (eu_q, ev_q) in incoming.items():
            pos = self.recv[q][0 if side == "u" else 1]
            out[pos] = ev_q if side == "u" else eu_q
        return out

    def state(self, f):
        """(x, w, mw, yu, mu, yv, mv) of this part, the duals rescaled by a pending ``f``."""
        if f is not None:
            self.mu, self.mv, self.mw = self.mu / f, self.mv / f, self.mw / f
        return self.x, self.w, self.mw, self.yu, self.mu, self.yv, self.mv


def _rows(A, r, c):
    return A[r][:, c].tocsr()


def _part_data(P, L, owner_col, owner_row_u, owner_row_v, j) -> dict:
    """Part ``j``'s slices of the lowered problem ``P`` and of the one-process state ``L`` (a ``_Local``)."""
    V = np.flatnonzero(owner_col == j)
    Eu = np.flatnonzero(owner_row_u == j)  # edge rows whose source end is here
    Ev = np.flatnonzero(owner_row_v == j)  # ... whose head end is here
    h = lambda a: np.asarray(a)  # noqa: E731
    hard, w2, b = h(P.hard), h(P.w2), h(P.b)
    pos_u, pos_v = {r: i for i, r in enumerate(Eu)}, {r: i for i, r in enumerate(Ev)}
    int_u = np.array([i for i, r in enumerate(Eu) if r in pos_v], dtype=np.int64)
    int_v = np.array([i for i, r in enumerate(Ev) if r in pos_u], dtype=np.int64)
    send: dict = {}
    recv: dict = {}
    for i, r in enumerate(Eu):  # source end here, head end in part q: send eu, receive ev
        q = int(owner_row_v[r])
        if q != j:
            send.setdefault(q, ([], []))[0].append(i)
            recv.setdefault(q, ([], []))[0].append(i)
    for i, r in enumerate(Ev):  # head end here, source end in part q: send ev, receive eu
        q = int(owner_row_u[r])
        if q != j:
            send.setdefault(q, ([], []))[1].append(i)
            recv.setdefault(q, ([], []))[1].append(i)
    arr = lambda t: (np.asarray(t[0], dtype=np.int64), np.asarray(t[1], dtype=np.int64))  # noqa: E731
    simplex = []
    col_local = {int(c): i for i, c in enumerate(V)}
    for rows, s, lo, hi in P.simplex:
        rows = h(rows)
        keep = np.array([int(r[0]) in col_local for r in rows], dtype=bool)
        if keep.any():
            local = np.vectorize(col_local.get)(rows[keep]).astype(np.int64)
            simplex.append((local, h(s)[keep], h(lo)[keep], h(hi)[keep]))
    return dict(
        T=_rows(L.T, V, V), Tt=_rows(L.Tt, V, V), lamH=h(L.lamH)[V], q=h(P.q)[V], Q=_rows(P.Q, V, V),
        Fs=_rows(P.Fs, Eu, V), Fd=_rows(P.Fd, Ev, V), FsT=_rows(L.FsT, V, Eu), FdT=_rows(L.FdT, V, Ev),
        b_u=b[Eu], b_v=b[Ev], hard_u=hard[Eu], hard_v=hard[Ev], w2_u=w2[Eu], w2_v=w2[Ev],
        g_u=h(L.gu)[Eu], g_v=h(L.gv)[Ev], gsum_u=h(L.gsum)[Eu], gsum_v=h(L.gsum)[Ev], c_u=h(L.cu)[Eu], c_v=h(L.cv)[Ev],
        lam=h(P.lam)[V], lo=h(P.lo)[V], hi=h(P.hi)[V], simplex=simplex,
        x=h(L.x)[V], w=h(L.w)[V], mw=h(L.mw)[V], yu=h(L.yu)[Eu], mu=h(L.mu)[Eu], yv=h(L.yv)[Ev], mv=h(L.mv)[Ev],
        int_u=int_u, int_v=int_v,
        int_u_in_v=np.array([pos_v[Eu[i]] for i in int_u], dtype=np.int64),
        int_v_in_u=np.array([pos_u[Ev[i]] for i in int_v], dtype=np.int64),
        send={q: arr(t) for q, t in send.items()}, recv={q: arr(t) for q, t in recv.items()},
        V=V, Eu=Eu, Ev=Ev, part=j)


class Partitioned:
    """The ``local`` of :func:`sheafdsl.solvers.admm.run_admm`: the edge-based iteration over parts on
    workers (``_Local``'s interface: step, rescale, solution, warm, p)."""

    def __init__(self, cluster, P, rho, warm, parts: int | None = None, check: int | None = None,
                 maxiter: int | None = None):
        from ..ir import edges
        from ..solvers.admm import _Local

        if P.xp is not np:
            raise SheafError(Diagnostic("E703", "admm-local across workers runs on the numpy backend",
                                        hint="drop --workers to solve on the GPU in one process"))
        from ..solvers.admm import DEFAULTS

        check = DEFAULTS["check"] if check is None else check
        maxiter = DEFAULTS["maxiter"] if maxiter is None else maxiter
        L = _Local(P, rho, warm)  # the vertex factorisation and initial state, once: the parts take their rows
        addrs = cluster.workers()
        k = max(1, min(int(parts or len(addrs)), len(P.blocks)))
        self.owner = partition(P.G, k)
        k = 1 + max(self.owner.values())
        owner_col = np.zeros(P.n, dtype=np.int64)
        for v, sl in P.blocks.items():
            owner_col[sl] = self.owner[v]
        owner_row_u, owner_row_v = np.zeros(P.M, dtype=np.int64), np.zeros(P.M, dtype=np.int64)
        for (u, v, name, _), (name2, r0, de) in zip(edges(P.G), P.edge_rows):
            owner_row_u[r0:r0 + de], owner_row_v[r0:r0 + de] = self.owner[u], self.owner[v]
        self.cut_edges = int(sum(1 for u, v, _, _ in edges(P.G) if self.owner[u] != self.owner[v]))
        datas = [_part_data(P, L, owner_col, owner_row_u, owner_row_v, j) for j in range(k)]
        client = cluster.client
        self.layout = [(d.pop("V"), d.pop("Eu"), d.pop("Ev")) for d in datas]
        self.client = client
        with client.as_current():  # the actors' proxies talk through this client (it is not the default one)
            futs = [client.submit(Part, d, actor=True, workers=[addrs[j % len(addrs)]], pure=False)
                    for j, d in enumerate(datas)]
            self.parts = [f.result() for f in futs]
            for p in self.parts:
                p.connect(dict(enumerate(self.parts))).result()
        self.P, self.n, self.M, self.B = P, P.n, P.M, P.B
        self.p = 2 * P.M + P.n
        self.check, self.maxiter = int(check), int(maxiter)
        self._f, self._k, self._cache = None, 0, []
        #: values (per instance) the parts send each other per iteration: two per row of each cut edge
        self._per_iteration = int(sum(len(t[0]) + len(t[1]) for d in datas for t in d["send"].values()))
        self.messages = 0  # ... over the run
        self.timing = {"block": 0.0}

    def step(self, rho, alpha):
        """The next iteration's (‖r‖, ‖s‖): from the block the parts ran up to the next check."""
        import time

        if not self._cache:
            t0 = time.perf_counter()
            n = min(self.check - self._k % self.check, max(1, self.maxiter - self._k))
            f, self._f = self._f, None
            rho_h = np.asarray(rho)
            with self.client.as_current():
                runs = [p.run(self._k + 1, n, rho_h, alpha, f) for p in self.parts]
                sums = sum(r.result() for r in runs)
            self._cache = [(rho_h, sums[i]) for i in range(n)]
            self.messages += n * self._per_iteration
            self.timing["block"] += time.perf_counter() - t0
        rho_h, s6 = self._cache.pop(0)
        self._k += 1
        r = np.sqrt(s6[0])
        s = rho_h[0] * np.sqrt(s6[1])
        self._scales = (np.maximum(np.sqrt(s6[2]), np.sqrt(s6[3])),
                        np.maximum(rho_h[0] * np.sqrt(s6[4]), np.sqrt(s6[5])), math.sqrt(self.n))
        self.balance_dual = np.maximum(self._scales[1], rho_h[0] * np.sqrt(s6[6]))  # as _Local's
        return r, s

    def scales(self):
        """(scale_pri, scale_dual, √n) of the stopping test at the last iteration."""
        return self._scales

    def rescale(self, f):
        self._f = f if self._f is None else self._f * f

    def _gather(self):
        f, self._f = self._f, None
        with self.client.as_current():
            states = [a.result() for a in [p.state(f) for p in self.parts]]
        B = self.B
        out = {k: np.zeros(((self.n if k in ("x", "w", "mw") else self.M), B)) for k in
               ("x", "w", "mw", "yu", "mu", "yv", "mv")}
        for (V, Eu, Ev), st in zip(self.layout, states):
            for k, rows, a in zip(("x", "w", "mw", "yu", "mu", "yv", "mv"), (V, V, V, Eu, Eu, Ev, Ev), st):
                out[k][rows] = a
        self._state = out
        return out

    def solution(self):
        return self._gather()["w"]

    def state(self, rho):
        """The per-instance state the driver keeps when instances stop (it is not cut: no ``keep``)."""
        return self.warm(rho)

    @staticmethod
    def solution_of(state):
        return state["w"]

    @staticmethod
    def warm_of(state):
        return dict(state)

    def warm(self, rho):
        st = self._state if self._f is None and getattr(self, "_state", None) is not None else self._gather()
        return dict(st, rho=rho)


def partitioned(cluster, parts: int | None = None, maxiter: int | None = None):
    """The ``local=`` factory of :func:`sheafdsl.solvers.solve` for admm-local on ``cluster``'s workers
    (``maxiter``: the solve's, so that the last block of iterations ends where the solve does)."""
    def make(P, rho, warm):
        return Partitioned(cluster, P, rho, warm, parts, maxiter=maxiter)

    return make


__all__ = ["partition", "partitioned", "Partitioned", "Part"]
