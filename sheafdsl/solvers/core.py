"""``solve``: the harmonic extension of the pinned values, by one of three methods.

Problem. Split the cochain into pinned coordinates U (pins whose source is in ``sources``) and free ones Ω,
and minimise the Dirichlet energy E over c_Ω (see :class:`sheafdsl.lowering.operators.Problem` for the exact
objective, including the cross-entropy convention of nonlinear edges with a pinned head)::

    c*_Ω = argmin_{c_Ω} E(c_Ω, c_U)

For a sheaf without state-dependent maps this is the linear system L_free c_Ω = b (unique iff the relative
cohomology H⁰(G, U; F) = ker δ_Ω vanishes; otherwise SheafError E504 names the free directions).

ReLU gates make E piecewise quadratic: on the piece where every free gated unit t has a fixed state
(on: c_t ≥ 0, gate 1; off: c_t ≤ 0, gate 0; sliding: c_t = 0) E is a convex quadratic. A *consistent
stationary point* minimises its piece and, at each sliding unit, satisfies the Filippov (subgradient)
condition

    g_on = ∂E/∂c_t |_{gate 1} ≥ 0 ≥ g_off = ∂E/∂c_t |_{gate 0}

(neither side of the switching surface descends; equivalently ∂E/∂c_t = 0 for the gate s = g_off/(g_off −
g_on) ∈ [0, 1], the Filippov convex combination). With two-sided pins such sliding equilibria are common.

Methods (``method=``):

- ``exact``: with a unitriangular δ_Ω (a feedforward network with only its input pinned) one forward
  sweep, E = 0. Otherwise a primal active-set method over the pieces, each step an exact solve of the
  current piece: by elimination along the unitriangular structure when releasing the pins on head stalks
  makes the problem a sweep (a k × k system per example, k = those pins + sliding units; a network pinned
  at both ends), else a batched dense Newton step (Cholesky-checked), or one sparse LU for a large sheaf
  without gates; see :mod:`sheafdsl.solvers.active_set`.
- ``cg``: the same active-set method with matrix-free batched conjugate gradients as the inner solver.
- ``diffusion``: the heat equation ċ_Ω = −α ∇E, explicit Euler with α = 1/λ̄ (λ̄ ≥ λ_max of every piece),
  Filippov-aware (projected onto the current piece, so it slides on c_t = 0 instead of chattering).
  This is the local solver of the paper and the reference the exact solvers must agree with.

The exact and cg solvers are *not local*: a solve couples every free stalk at once. The diffusion is local:
each step moves a stalk by its incident edges' discords only.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..codes import codes_between
from ..options import SOLVE_METHODS
from ..errors import Diagnostic, SheafError, did_you_mean
from ..ir import INFERENCE, TRAINING, constant_pins, pinned_stalks
from ..lowering.backend import array_module
from ..lowering.chain import FeedForward, feedforward
from ..lowering.operators import SheafOperators
from . import chain as _chain
from .result import SolveResult, Warm

#: the driver's piece solvers: the chain ones (a feed-forward chain with training pins) and the general ones
PIECES = ("shallow", "chain", "elimination", "dense", "lu", "cg")

METHODS = SOLVE_METHODS

#: the numerics and inference diagnostics (E500–E529), and what each means (a view of :data:`sheafdsl.codes.CODES`)
DIAGNOSTICS = codes_between("E500", "E529")


def _err(code: str, msg: str, hint: str | None = None) -> SheafError:
    return SheafError(Diagnostic(code, msg, hint=hint))


def boundary_values(G, sources, boundary: dict, xp) -> tuple[dict, int]:
    """The validated data pins: {stalk: (B, d_v) float array} for every stalk pinned to a data source in
    ``sources`` (input, target), and B. ``boundary`` maps those stalks to (B, d_v) arrays (a (d_v,) vector is a
    batch of one); a stalk that is not one of them, a missing one, a wrong shape or batch size, or a
    non-finite value is a SheafError (E505–E508)."""
    dims = {v: d["dim"] for v, d in G.nodes(data=True)}
    data_stalks = [v for src in ("input", "target") if src in sources for v in pinned_stalks(G, src)]
    boundary = dict(boundary or {})
    for name in boundary:
        if name not in dims:
            raise _err("E505", f"`{name}` is not a stalk of `{G.graph.get('name', 'sheaf')}`",
                       did_you_mean(name, dims) or "stalks: " + ", ".join(dims))
        if name not in data_stalks:
            what = ", ".join(s for s in ("input", "target") if s in sources)
            raise _err("E505", f"stalk `{name}` is not pinned to {what or 'data'} here, so it takes no boundary value",
                       "data stalks: " + (", ".join(data_stalks) or "none") +
                       "; to pin another stalk add a pin to the sheaf (or `--pin` on the command line)")
    missing = [v for v in data_stalks if v not in boundary]
    if missing:
        raise _err("E506", "no boundary value for the data stalk" + "s" * (len(missing) > 1) + " "
                   + ", ".join(f"`{v}`" for v in missing))
    arrays, B = {}, None
    for name in data_stalks:
        try:
            a = xp.asarray(boundary[name], dtype=float)
        except (TypeError, ValueError):
            raise _err("E520", f"the boundary value of `{name}` is not an array of numbers") from None
        d = dims[name]
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2 or a.shape[1] != d:
            raise _err("E507", f"stalk `{name}` has dimension {d}, but its boundary value has shape {tuple(a.shape)}",
                       f"give a ({d},) vector or a (B, {d}) batch")
        if B is None:
            B = a.shape[0]
        elif a.shape[0] != B:
            raise _err("E507", f"boundary values disagree on the batch size ({B} vs {a.shape[0]} for `{name}`)")
        if not bool(xp.all(xp.isfinite(a))):
            raise _err("E508", f"the boundary value of `{name}` holds NaN or infinite entries")
        arrays[name] = a
    return arrays, (1 if B is None else B)


def boundary_cochain(prob, boundary: dict, xp, order: str = "C") -> tuple[object, int]:
    """The (B, N) cochain holding every pin of ``prob``'s sources (data from ``boundary``, validated by
    :func:`boundary_values`; constants from the IR), zeros elsewhere; and B."""
    ops, G = prob.ops, prob.ops.G
    sources = prob.s.sources
    arrays, B = boundary_values(G, sources, boundary, xp)
    c = xp.zeros((B, ops.N), order=order)
    for name, a in arrays.items():
        c[:, ops.vertex[name]] = a
    if "value" in sources:
        idx, val = constant_pins(G)
        if len(idx):
            c[:, xp.asarray(idx)] = xp.asarray(val)[None, :]
    return c, B


def _sources(boundary, sources) -> tuple:
    """The hard pin sources: ``boundary`` (INFERENCE | TRAINING, or any tuple of sources) or its older name
    ``sources``; INFERENCE when neither is given."""
    if boundary is not None and sources is not None and tuple(boundary) != tuple(sources):
        raise _err("E509", "give the pins as boundary= or as sources=, not both")
    got = boundary if boundary is not None else sources
    return INFERENCE if got is None else tuple(got)


def solve(G, params, values=None, *, boundary=None, method: str = "exact", piece: str | None = None,
          rtol: float | None = None, maxiter: int | None = None, x0=None, warm=None, xp=None, record_trace: bool = False,
          sources=None, atol: float | None = None, rho: float | None = None, x0_seed: int = 0,
          step: float | None = None, change_tol: float | None = None, trajectory=None, local=None) -> SolveResult:
    """The harmonic extension of the pins of ``boundary`` (see the module docstring).

    Parameters
    ----------
    G : networkx.MultiDiGraph, SheafOperators or FeedForward
        The IR; or operators already lowered from it (``SheafOperators(G, params, xp)``) to skip lowering in
        a loop (``params`` then rebinds its parameter values when given); or the feed-forward chain read from
        it (:func:`sheafdsl.lowering.chain.feedforward`), which the chain piece solvers use without lowering.
    params : dict name -> array, or None
        Parameter values (None: ``sheafdsl.lowering.init_params(G, 0)``, e.g. for literal parameters).
    values : dict stalk -> (B, d_v) array
        Values of the stalks pinned to data (input; and target when the boundary is TRAINING); or a chain's
        :class:`~sheafdsl.solvers.chain.ChainPins` (checked once by ``chain_pins``, so not checked again: a
        trainer's hot path).
    boundary : INFERENCE (input and constant pins; the target stalk is free) or TRAINING (the two-sided
        equilibrium: input, target and constant pins; :data:`sheafdsl.ir.BOUNDARIES`), or a tuple of pin
        sources; ``sources`` is its older name.
    method : "exact" | "diffusion" | "cg" | "admm" | "admm-local". A consensus problem (objectives on stalks or
        hard edges, ``sheafdsl.ir.is_consensus``) is solved by admm, admm-local or exact (its KKT system,
        quadratic objectives only): :func:`sheafdsl.solvers.consensus.solve_consensus`; diffusion and cg refuse
        it (E513). admm and admm-local also solve a sheaf without objectives (its harmonic extension) when
        its maps are linear.
    piece : the active-set driver's piece solver (default: chosen from the structure): "shallow" or
        "chain" (a feed-forward chain with training pins), "elimination", "dense", "lu" (exact), "cg".
    rtol : tolerance on the relative Filippov gradient norm (:attr:`SolveResult.residual`); also the inner
        (Newton, CG) tolerances (default 1e-10). ADMM: the relative tolerance of its residuals (default 1e-6),
        with ``atol`` the absolute one (default 1e-9) and ``rho`` the initial penalty (default 1).
    maxiter : exact/cg: pattern solves (default 2·units + 20); diffusion: steps (default 200 000).
    x0 : optional (B, N) initial cochain (its pinned part is overwritten; units exactly at 0 start sliding), or
        the name of one (:data:`STARTS`, :func:`start_cochain`): ``"zeros"``, ``"random"`` (free coordinates
        N(0, 1), seeded by ``x0_seed``) or ``"forward"`` (the forward pass).
    step, change_tol, trajectory : the heat equation's (``method="diffusion"`` only). ``step``: a fixed step
        α·dt of the plain explicit Euler flow c ← c − α dt ∇E (the paper's; default: the accelerated flow with
        its own step); ``change_tol``: stop when the largest change of a coordinate in one step is below it
        (the paper's rule, 1e-15; default: the residual rule ``rtol``); ``trajectory``: True, or
        ``{"stalks": [names], "every": k}``, to record the trajectory (:class:`~.diffusion.HeatTrace`) into
        ``result.trajectory``.
    warm : a previous :class:`SolveResult` or :class:`~sheafdsl.solvers.result.Warm` of the same examples:
        the driver starts at that equilibrium and its unit states (a trainer's previous step).
    xp : array module (default: that of the boundary arrays).
    record_trace : record the energy per iteration (:attr:`SolveResult.trace`; exact and cg: the energy at
        the start and at the end).

    Returns
    -------
    SolveResult (scipy style: ``info`` = 0 when every example converged, else how many did not)

    Examples
    --------
    >>> from sheafdsl.frontend import load_text
    >>> from sheafdsl.ir import TRAINING, from_model
    >>> from sheafdsl.lowering import init_params
    >>> G = from_model(load_text("sheaf t\\nnetwork n : 2 -> 4 -> 1\\n"))
    >>> P = init_params(G, 0)
    >>> x = np.array([[0.5, -1.0]])
    >>> r = solve(G, P, {"x": x})
    >>> bool(np.allclose(r.stalk("y"), np.maximum(x @ P["W1"].T + P["b1"], 0) @ P["W2"].T + P["b2"]))
    True
    >>> two = solve(G, P, {"x": x, "y": np.array([[1.0]])}, boundary=TRAINING)
    >>> again = solve(G, P, {"x": x, "y": np.array([[1.0]])}, boundary=TRAINING, warm=two)
    >>> bool(np.allclose(again.cochain, two.cochain)), again.iterations, again.info
    (True, 1, 0)
    """
    if type(values) is _chain.ChainPins and x0 is None and piece is None and method == "exact" and sources is None \
            and (boundary is TRAINING or boundary == TRAINING) and (G is values.net or G is values.net.graph) \
            and (rtol is None or rtol > 0):
        # the trainer's hot path: pins checked once (ChainPins), the chain's structure facts cached on it
        return _chain.solve_chain(values.net, _chain_params(values.net, params, xp), values, warm=warm,
                                  rtol=1e-10 if rtol is None else rtol, maxiter=maxiter,
                                  xp=array_module(values.X) if xp is None else xp, record_trace=record_trace)
    if isinstance(boundary, Mapping):  # the values passed by their older keyword name
        values, boundary = boundary, None
    srcs = _sources(boundary, sources)
    if method not in METHODS:
        raise _err("E509", f"unknown solver `{method}`", "use one of: " + ", ".join(METHODS))
    if _consensus(G, method):
        from ..ir import consensus_span, model_error

        if method not in ("admm", "admm-local", "exact"):
            raise model_error(G, "E513", f"the `{method}` solver does not solve consensus problems (objectives on "
                              "stalks, hard edges)", consensus_span(G),
                              "use --solver admm, admm-local or exact (quadratic objectives)")
        if tuple(srcs) != tuple(INFERENCE):
            raise model_error(G, "E513", "a consensus problem is solved with the inference pins (input and "
                              "constants); pin a target stalk with a hard pin instead", consensus_span(G))
        from .consensus import solve_consensus

        return solve_consensus(G, params, values, method=method, rtol=rtol, atol=atol, maxiter=maxiter, x0=x0,
                               warm=warm, rho=rho, xp=xp, local=local)
    heat = step is not None or change_tol is not None or trajectory not in (None, False)
    if heat and method != "diffusion":
        raise _err("E662", f"a fixed step, the change rule and a trajectory are the heat equation's (`diffusion`), "
                   f"not the `{method}` solver's", "use method=\"diffusion\" (--solver diffusion)")
    for name, v in (("step", step), ("change_tol", change_tol)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < np.inf):
            raise _err("E662", f"{name} must be a positive finite number, not {v!r}")
    if rtol is None:
        rtol = 1e-10
    if piece is not None and piece not in PIECES:
        raise _err("E509", f"unknown piece solver `{piece}`", "use one of: " + ", ".join(PIECES))
    if not (rtol > 0):
        raise _err("E509", f"rtol must be positive (got {rtol})")
    if xp is None:
        first = next(iter((values or {}).values()), None)
        xp = array_module(first) if first is not None else np
    net = G if isinstance(G, FeedForward) else None
    if net is not None:
        G = net.graph
    chain_piece = piece in (None, "shallow", "chain")
    if method == "exact" and x0 is None and chain_piece and "target" in srcs and "value" in srcs:
        if net is None:
            net = feedforward(G.G if isinstance(G, SheafOperators) else G)
        if net is not None and set(srcs) <= {"input", "target", "value"}:
            P = params if params is not None else (G.params if isinstance(G, SheafOperators) else None)
            return _chain.solve_chain(net, _chain_params(net, P, xp), values, warm=warm, rtol=rtol, maxiter=maxiter,
                                      piece=piece, xp=xp, record_trace=record_trace)
    if piece in ("shallow", "chain"):
        raise _err("E509", f"the `{piece}` piece solver needs a feed-forward chain with training pins "
                   "(boundary=TRAINING, method exact)")
    if isinstance(G, SheafOperators):
        ops = G if params is None else G.with_params(params)
    else:
        if params is None:
            from ..lowering.params import init_params

            params = init_params(G, 0, xp)
        ops = SheafOperators(G, params, xp)
    xp = ops.xp
    prob = ops.restrict(srcs)
    fast = method == "exact" and x0 is None and warm is None and prob.s.sweep is not None
    # the sweep writes each head straight into its column block: column-major keeps the blocks contiguous
    c0, B = boundary_cochain(prob, values, xp, order="F" if fast else "C")
    from .active_set import ON, OFF, SLIDE, active_set, choose_piece, sweep
    from .diffusion import diffusion

    state = None
    if warm is not None:
        w = Warm.of(warm)
        if w.cochain is None:  # a chain's warm start
            raise _err("E507", "this warm start holds a chain's stalks; pass x0= (a cochain) instead")
        x0, state = w.cochain, w.state
    if isinstance(x0, str):
        x0 = start_cochain(prob, c0, x0, seed=x0_seed)
    if x0 is not None:
        x0 = xp.asarray(x0, dtype=float)
        if x0.shape != c0.shape:
            raise _err("E507", f"x0 has shape {tuple(x0.shape)}, expected {tuple(c0.shape)}")
        c = x0.copy()
        c[:, prob.s.pinned] = c0[:, prob.s.pinned]
        if state is None:  # a unit exactly on its switching surface starts sliding
            z = c[:, prob.s.gated]
            state = xp.where(z > 0, ON, xp.where(z < 0, OFF, SLIDE)).astype(np.int8)
    elif fast:
        return sweep(prob, c0, record_trace=record_trace)
    else:
        c = initial_guess(prob, c0)
    if method == "diffusion":
        tracer = None
        if trajectory not in (None, False):
            from .diffusion import HeatTrace

            opts = {} if trajectory is True else dict(trajectory)
            tracer = HeatTrace(prob, columns=_columns(prob, opts.pop("stalks", None)), every=_every(opts.pop("every", 1)))
            if opts:
                raise _err("E662", f"unknown trajectory option `{next(iter(opts))}`", "use `stalks` and `every`")
        return diffusion(prob, c, rtol=rtol, maxiter=maxiter, record_trace=record_trace, step=step,
                         accelerate=step is None, change_tol=change_tol, tracer=tracer)
    inner = piece or choose_piece(prob, method)
    if method == "cg" and inner != "cg":
        raise _err("E509", f"method `cg` uses the `cg` piece solver, not `{inner}`")
    return active_set(prob, c, inner=inner, rtol=rtol, maxiter=maxiter, record_trace=record_trace, state=state,
                      method=method)


def _consensus(G, method: str) -> bool:
    """True when ``G`` (an IR graph) goes to the consensus solvers: it states a consensus problem, or the
    method is admm/admm-local."""
    import networkx as nx

    from ..ir import is_consensus

    if not isinstance(G, nx.Graph):
        if method in ("admm", "admm-local"):
            raise _err("E513", f"the `{method}` solver needs the IR graph, not lowered operators")
        return False
    return method in ("admm", "admm-local") or is_consensus(G)


def _chain_params(net, P, xp):
    """``P``, or the chain's default parameters (``init_params(G, 0)``, e.g. for literal parameters)."""
    if P is not None:
        return P
    from ..lowering.params import init_params

    return init_params(net.graph, 0, np if xp is None else xp)


#: the named initial cochains of ``solve(..., x0=NAME)``
STARTS = ("zeros", "random", "forward")


def start_cochain(prob, c0, kind: str, *, seed: int = 0):
    """A named initial cochain (B, N) with the pins of c0: ``zeros`` (c_Ω = 0), ``random`` (c_Ω ~ N(0, 1),
    drawn on the host by ``numpy.random.default_rng(seed)``, so the same seed gives the same start on every
    backend) or ``forward`` (the forward pass: the sweep of the problem, or of the problem with its pins on
    head stalks released, as :func:`initial_guess`; E662 when the sheaf has none)."""
    xp, s = prob.xp, prob.s
    if kind not in STARTS:
        raise _err("E662", f"unknown initial stalks `{kind}`", "use one of: " + ", ".join(STARTS))
    c = c0.copy()
    if kind == "random":
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise _err("E662", f"the seed of the random initial stalks must be a whole number >= 0, not {seed!r}")
        c[:, s.free] = xp.asarray(np.random.default_rng(int(seed)).standard_normal((c.shape[0], s.n)))
    elif kind == "forward":
        plan = s.sweep if s.sweep is not None else s.warm
        if plan is None:
            raise _err("E662", "this sheaf has no forward pass to start from (it is not a feed-forward sweep)",
                       "use x0 `zeros` or `random`")
        from .active_set import run_sweep

        run_sweep(prob.ops, plan, c)
        c[:, s.pinned] = c0[:, s.pinned]
    return c


def _columns(prob, names):
    """Cochain coordinates of the stalks ``names`` (None: every coordinate); E662 for an unknown stalk."""
    if names is None:
        return None
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise _err("E662", "the stalks to record must be a list of stalk names")
    vertex = prob.ops.vertex
    bad = [n for n in names if n not in vertex]
    if bad:
        raise _err("E662", f"unknown stalk `{bad[0]}` to record",
                   did_you_mean(bad[0], list(vertex)) or "stalks: " + ", ".join(vertex))
    return np.concatenate([np.arange(vertex[n].start, vertex[n].stop) for n in names]) if names else \
        np.zeros(0, dtype=np.int64)


def _every(k):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise _err("E662", f"`every` (record every k-th step) must be a whole number >= 1, not {k!r}")
    return int(k)


def initial_guess(prob, c0):
    """The starting cochain: when the problem is not itself a sweep but becomes one once the pins on head
    stalks are released (a network pinned at both ends, or at a hidden stalk, or soft-pinned), the forward
    sweep of that relaxed problem with the pins then restored; else c_Ω = 0.

    A sweepable problem starts from c_Ω = 0 (for the iterative methods; exact returns the sweep itself).
    """
    s = prob.s
    c = c0.copy()
    if s.sweep is None and s.warm is not None:
        from .active_set import run_sweep

        run_sweep(prob.ops, s.warm, c)
        c[:, s.pinned] = c0[:, s.pinned]
    return c
