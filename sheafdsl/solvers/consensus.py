"""Consensus problems (objectives on stalks, hard edges): ``solve(..., method="admm" | "admm-local" | "exact")``.

The problem and its lowering: :mod:`sheafdsl.lowering.consensus`; the two ADMM methods: :mod:`.admm`.

``exact`` (quadratic objectives only, with hard and soft edges and pins) solves the KKT system of

    minimise ½ xᵀPx + pᵀx  subject to  D_h x = b_h,     P = Q + D_sᵀW²D_s,  p = q − D_sᵀW²b_s,

as the KKT system [[P_σ, D_hᵀ], [D_h, 0]] [x; λ'] = [−p + σD_hᵀb_h; b_h] with P_σ = P + σD_hᵀD_h (the same
x; λ = λ' + σ(D_h x − b_h)), by iterative refinement on one sparse LU of its quasi-definite regularisation
(−δI in the lower block, δ = 10⁻⁹·scale). P_σ ≻ 0 exactly when P ≻ 0 on ker D_h (a unique minimiser), and
the regularised matrix is then nonsingular whether or not the hard rows are independent (a cycle of hard
edges), so redundant constraints need no special case. A singular P_σ is
E518 with a direction of non-uniqueness; constraints that cannot hold (the violation stops shrinking) are
E518 too, naming the hard edge. It runs on the host (scipy.sparse.linalg.splu): a reference, like
:mod:`sheafdsl.lowering.assemble`.
"""

from __future__ import annotations

import numpy as np

from ..errors import Diagnostic, SheafError
from ..ir import INFERENCE, constant_pins, declared_at, edges, model_error, objectives, param_specs, stalks, total_dim
from ..lowering.backend import array_module
from ..lowering.consensus import lower_consensus
from .result import SolveResult

#: the methods that solve consensus problems
CONSENSUS_METHODS = ("admm", "admm-local", "exact")


def _err(code: str, msg: str, hint: str | None = None) -> SheafError:
    return SheafError(Diagnostic(code, msg, hint=hint))


def _batch_of_params(G, params) -> int | None:
    """The batch size carried by a q or bias parameter with a leading instance axis (None: none does)."""
    specs = param_specs(G)
    Bs = set()
    names = [o.q for v in stalks(G) for o in objectives(G, v) if isinstance(getattr(o, "q", None), str)]
    names += [d["bias"] for *_, d in edges(G) if d.get("bias")]
    for nm in names:
        if nm in (params or {}) and nm in specs:
            a = params[nm]
            if np.ndim(a) == len(specs[nm].shape) + 1:
                Bs.add(int(np.shape(a)[0]))
    if len(Bs) > 1:
        raise _err("E519", f"the per-instance parameters disagree on the batch size ({sorted(Bs)})")
    return Bs.pop() if Bs else None


def pinned_cochain(G, params, values, xp):
    """The (B, N) cochain of the hard pins (input stalks from ``values``, constants from the IR)."""
    from .core import boundary_values

    arrays, B = boundary_values(G, INFERENCE, values, xp)
    Bp = _batch_of_params(G, params)
    if Bp is not None:
        if arrays and B != Bp:
            raise _err("E519", f"the input values hold {B} instance(s) but the per-instance parameters {Bp}")
        B = Bp
    c = xp.zeros((B, total_dim(G)))
    for name, a in arrays.items():
        sl = slice(G.nodes[name]["offset"], G.nodes[name]["offset"] + G.nodes[name]["dim"])
        c[:, sl] = a
    idx, val = constant_pins(G)
    if len(idx):
        c[:, xp.asarray(idx)] = xp.asarray(val)[None, :]
    return c


def solve_consensus(G, params, values=None, *, method: str = "admm", rtol=None, atol=None, maxiter=None, x0=None,
                    warm=None, rho=None, alpha=None, xp=None, record_trace: bool = True, zsolve=None,
                    polish=None, local=None) -> SolveResult:
    """Solve the consensus problem of ``G`` (module docstring) for a batch; returns a :class:`SolveResult`
    with, besides the usual fields, ``objective``, ``primal_residual`` and ``dual_residual`` (B,), the
    residual traces ``primal_trace``/``dual_trace``/``rho_trace`` (T, B) (ADMM), ``state`` (a warm start
    for the next ADMM solve of the same instances: ``warm=result``), and (ADMM) ``iterations_each`` (B,),
    where each instance stopped, and ``polished`` (B,), which instances stopped on a polish certificate
    (``polish=``: :func:`sheafdsl.solvers.admm.run_admm`)."""
    if xp is None:
        first = next(iter((values or {}).values()), None)
        xp = array_module(first) if first is not None else np
    if params is None:
        from ..lowering.params import init_params

        params = init_params(G, 0, xp)
    pinned = pinned_cochain(G, params, values, xp)
    P = lower_consensus(G, params, pinned, xp)
    layout = {v: slice(G.nodes[v]["offset"], G.nodes[v]["offset"] + G.nodes[v]["dim"]) for v in stalks(G)}
    if method == "exact":
        return _exact(P, layout, rtol)
    w = {}
    if warm is not None:
        st = getattr(warm, "state", warm)
        if not isinstance(st, dict) or st.get("method") != method:
            raise _err("E519", f"warm= must be the result of a previous `{method}` solve of the same problem")
        w = dict(st)
    if x0 is not None:
        x0 = xp.asarray(x0, dtype=float)
        if x0.shape != (P.B, P.N):
            raise _err("E507", f"x0 has shape {tuple(x0.shape)}, expected {(P.B, P.N)}")
        z = x0[:, P.free].T.copy()
        w.update(z=z, x=z, w=z) if method == "admm-local" else w.update(z=z)
    from .admm import run_admm

    out = run_admm(P, method=method, rho=rho, alpha=alpha, rtol=rtol, atol=atol, maxiter=maxiter, warm=w,
                   record_trace=record_trace, zsolve=zsolve, polish=polish, local=local)
    x = out.x
    obj = P.objective(x)
    res = SolveResult(P.cochain(x), out.converged, out.iterations, xp.maximum(out.primal, out.dual), obj,
                      xp.ones(P.B, dtype=bool), {}, int(xp.sum(~out.converged)), None, method=method, layout=layout)
    res.objective, res.primal_residual, res.dual_residual = obj, out.primal, out.dual
    res.primal_tolerance, res.dual_tolerance = out.eps_pri, out.eps_dual
    res.primal_trace, res.dual_trace, res.rho_trace = out.trace_primal, out.trace_dual, out.trace_rho
    res.state = dict(out.warm, method=method)
    res.cg_steps, res.factorisations = out.cg_steps, out.factorisations
    res.iterations_each, res.polished = out.iterations_each, out.polished
    return res


def _exact(P, layout, rtol) -> SolveResult:
    import scipy.sparse as sp
    import scipy.sparse.linalg as spl

    xp = P.xp
    if not P.quadratic:
        kinds = sorted({o.kind for v in stalks(P.G) for o in objectives(P.G, v) if o.kind != "quadratic"})
        first = next(v for v in stalks(P.G) if any(o.kind != "quadratic" for o in objectives(P.G, v)))
        raise model_error(P.G, "E517", "the exact solver handles quadratic objectives only; this problem has "
                          + ", ".join(kinds) + " terms", declared_at(P.G, stalk=first, kinds=tuple(kinds)),
                          "use --solver admm (or admm-local)")
    h = P.host
    n, B = P.n, P.B
    Ds, ws2 = h["Ds"], h["ws2"].ravel()
    Pm = (h["Q"] + Ds.T @ sp.diags(ws2) @ Ds).tocsc()
    p = h["q"] - Ds.T @ (ws2[:, None] * h["bs"])
    Dh, bh = h["Dh"].tocsr(), h["bh"]
    scale = max(1.0, abs(Pm).max() if Pm.nnz else 0.0)
    dscale = max(1.0, abs(Dh).max() ** 2 if Dh.nnz else 0.0)
    sigma = scale / dscale
    Ps = (Pm + sigma * (Dh.T @ Dh)).tocsc()
    mh = Dh.shape[0]
    lam = np.zeros((mh, B))
    if n == 0:
        x = np.zeros((0, B))
    else:
        _unique(P, Ps)
        # the KKT system T [x; λ] = [−p + σD_hᵀb_h; b_h], by iterative refinement on its quasi-definite
        # regularisation T − diag(0, δI): one LU, and redundant hard rows (a cycle) need no special case
        T = sp.bmat([[Ps, Dh.T], [Dh, None]], format="csc")
        delta = 1e-9 * scale
        K = (T - sp.diags(np.r_[np.zeros(n), np.full(mh, delta)])).tocsc()
        try:
            lu = spl.splu(K)
        except RuntimeError:
            raise _err("E518", "the KKT system is singular: the minimiser is not unique",
                       "add a quadratic or a pin on the free directions (`sheaf verify` names them)") from None
        rhs = np.vstack([-p + sigma * (Dh.T @ bh), bh])
        sol = np.zeros((n + mh, B))
        for _ in range(30):
            e = rhs - T @ sol
            sol = sol + lu.solve(e)
            x = sol[:n]
            c = Dh @ x - bh
            g = Pm @ x + p + Dh.T @ (sol[n:] + sigma * c)
            if np.abs(g).max(initial=0.0) <= 1e-12 * max(1.0, np.abs(p).max(initial=0.0), scale * np.abs(x).max(initial=0.0)) \
                    and np.abs(c).max(initial=0.0) <= 1e-12 * max(1.0, np.abs(bh).max(initial=0.0), np.abs(x).max(initial=0.0)):
                break
        lam = sol[n:] + sigma * c
        v = np.abs(c).max(initial=0.0)
        if v > 1e-8 * max(1.0, np.abs(bh).max(initial=0.0), np.abs(x).max(initial=0.0)):
            from .admm import _hard_edge_at

            e = _hard_edge_at(P, np.abs(c).max(axis=1))
            raise model_error(P.G, "E518", f"the hard constraints cannot all hold: "
                              + (f"edge `{e}`" if e is not None else "the hard edges") + f" keeps a violation of {v:.3g} "
                              "at the closest point", declared_at(P.G, edge=e), "check the hard edges' maps and biases, "
                              "and the hard pins (`sheaf verify` gives an infeasible combination)")
    xd = xp.asarray(x)
    stat = np.sqrt(((Pm @ x + p + Dh.T @ lam) ** 2).sum(0))
    prim = np.sqrt(((Dh @ x - bh) ** 2).sum(0)) if Dh.shape[0] else np.zeros(B)
    obj = P.objective(xd)
    tol = 1e-8 if rtol is None else max(rtol, 1e-8)
    ok = xp.asarray((prim <= tol * (1 + np.abs(bh).max(initial=0.0))) &
                    (stat <= tol * (1 + np.abs(p).max(initial=0.0))))
    res = SolveResult(P.cochain(xd), ok, 1, xp.asarray(np.maximum(prim, stat)), obj, xp.ones(B, dtype=bool), {},
                      int(xp.sum(~ok)), None, method="exact", layout=layout)
    res.objective, res.primal_residual, res.dual_residual = obj, xp.asarray(prim), xp.asarray(stat)
    res.primal_trace = res.dual_trace = res.rho_trace = None
    res.state = None
    return res


def _unique(P, Ps) -> None:
    """E518 with a direction when P_σ is singular (P not positive definite on ker D_h); dense check up to
    3000 free coordinates (the LU catches the exactly singular rest)."""
    n = Ps.shape[0]
    if n > 3000:
        return
    A = Ps.toarray()
    lam, V = np.linalg.eigh(A)
    if lam[0] <= 1e-10 * max(1.0, abs(lam[-1])):
        v = V[:, 0]
        names = []
        for s, sl in P.blocks.items():
            if sl.stop > sl.start and np.abs(v[sl]).max() > 1e-6:
                names.append(s)
        raise model_error(P.G, "E518", "the minimiser is not unique: the objective is flat along a direction that "
                          "every hard edge allows, moving " + ", ".join(f"`{s}`" for s in names[:6])
                          + (" …" if len(names) > 6 else ""), declared_at(P.G, stalk=names[0] if names else None),
                          "add a quadratic objective or a pin there (a strictly convex objective on ker δ_hard)")


__all__ = ["solve_consensus", "CONSENSUS_METHODS", "pinned_cochain"]
