"""The Python API: one object per model, over the same functions the ``sheaf`` commands use.

>>> import sheafdsl as sd
>>> sh = sd.loads("sheaf t\\nnetwork mlp : 2 -> 4 -> 1\\n")
>>> p = sh.init_params(seed=0)
>>> r = sh.infer({"x": [[0.5, -1.0], [0.0, 2.0]]}, params=p)
>>> r.stalks["y"].shape
(2, 1)

See docs/api.md for every method. Bad input raises :class:`~sheafdsl.errors.SheafError` with the
same codes as the checker and the commands (``e.codes``). Heavy modules (sympy, scipy, the trainers,
matplotlib) are imported by the methods that need them, so ``import sheafdsl`` stays cheap.
"""

from __future__ import annotations

import copy
import numbers
import os
from dataclasses import dataclass, field

from .errors import Diagnostic, SheafError, located
from .options import BOUNDARY_NAMES, SPLITS

API = "<python>"


def _err(code: str, msg: str, hint: str | None = None) -> SheafError:
    return SheafError(Diagnostic(code, msg, hint=hint, file=API))


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise _err("E526", f"`{name}` must be one of {', '.join(map(str, choices))}, not {value!r}")


def _count(name: str, value, low: int, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise _err("E526", f"`{name}` must be a whole number >= {low}, not {value!r}")


def _path(name: str, value) -> str:
    """``value`` as a file-system path (str or os.PathLike), else E526."""
    if not isinstance(value, (str, os.PathLike)):
        raise _err("E526", f"`{name}` must be a path (str or os.PathLike), not {type(value).__name__}")
    return os.fspath(value)


def load(path: str | os.PathLike) -> "Sheaf":
    """Parse and check a ``.sheaf`` file (a SheafError with every diagnostic when it is invalid)."""
    from .frontend import load_file

    return Sheaf._from_model(load_file(_path("path", path)))


def loads(text: str, path: str = "<string>") -> "Sheaf":
    """Parse and check model text; relative file paths in it (``init "w.npz"``) resolve against ``path``'s folder."""
    from .frontend import load_text

    if not isinstance(text, str):
        raise _err("E103", f"model text must be a str, not {type(text).__name__}")
    path = _path("path", path)
    return Sheaf._from_model(load_text(text, path=path))


@dataclass
class Inference:
    """A batch of harmonic extensions (see :class:`sheafdsl.solvers.SolveResult`).

    ``stalks``: every stalk's values, (B, d_v) numpy arrays; ``energy``, ``residual`` (B,) floats;
    ``converged``, ``consistent`` (B,) bools; ``batch``: whether the input was a batch (a single
    example still has B = 1).
    """

    stalks: dict
    energy: object
    converged: object
    consistent: object
    residual: object
    iterations: int
    solver: str
    batch: bool
    result: object = field(repr=False, default=None)
    #: consensus problems (admm, admm-local, exact): the objective and the primal/dual residuals, (B,)
    objective: object = None
    primal_residual: object = None
    dual_residual: object = None
    #: a traced heat-equation solve (``trace=``): its :class:`Trajectory`
    trajectory: object = None

    def to_json(self) -> dict:
        """What ``sheaf infer --json`` prints (one example unwrapped unless the input was a batch); a
        consensus problem adds ``objective``, ``primal_residual`` and ``dual_residual``."""
        extra = {k: getattr(self, k) for k in ("objective", "primal_residual", "dual_residual")
                 if getattr(self, k) is not None}
        if self.batch:
            return {"stalks": {v: a.tolist() for v, a in self.stalks.items()}, "energy": self.energy.tolist(),
                    "converged": self.converged.tolist(), "iterations": self.iterations,
                    "residual": self.residual.tolist(), "consistent": self.consistent.tolist(),
                    "batch": int(self.energy.shape[0]), "solver": self.solver,
                    **{k: v.tolist() for k, v in extra.items()}}
        return {"stalks": {v: a[0].tolist() for v, a in self.stalks.items()}, "energy": float(self.energy[0]),
                "converged": bool(self.converged[0]), "iterations": self.iterations,
                "residual": float(self.residual[0]), "consistent": bool(self.consistent[0]), "solver": self.solver,
                **{k: float(v[0]) for k, v in extra.items()}}


@dataclass
class Trajectory:
    """A heat-equation solve's history, on the host (``Sheaf.infer(..., solver="diffusion", trace=True)``,
    ``sheaf infer --solver diffusion --trace``).

    T snapshots (every ``every``-th step, and the first and the last) at ``iterations`` (T,): ``discord``
    (T, B), the total discord energy Σ_e ½ w_e² ‖(δc)_e‖²; ``edges`` (edge -> (T, B)) and ``layers``
    (layer -> (T, B); :func:`sheafdsl.ir.layers`) the same per edge and per layer; ``stalks``
    (name -> (T, B, d); the recorded ones) the stalk values, an eliminated head (a sigmoid or softmax
    output) as φ of its input. ``crossings``: every activation-pattern crossing, one dict per event, in
    order: ``iteration`` k (the state after step k differs from the one before), ``example``, ``stalk``
    and ``index`` of the unit, ``before`` and ``after`` (``"on"``, ``"sliding"``, ``"off"``: the sign of
    its coordinate) and ``direction`` (+1 towards on, −1 towards off). ``dt`` is the fixed step α·dt
    (None: the accelerated flow chose its own).
    """

    iterations: object
    discord: object
    edges: dict
    layers: dict
    stalks: dict
    crossings: list
    every: int = 1
    dt: float | None = None

    def to_json(self, batch: bool = True) -> dict:
        """Plain lists; one example unwrapped (``batch=False``: (T,) per series instead of (T, B))."""
        one = (lambda a: a.tolist()) if batch else (lambda a: a[:, 0].tolist())
        return {"iterations": self.iterations.tolist(), "every": self.every, "dt": self.dt,
                "discord": one(self.discord), "layers": {str(k): one(v) for k, v in self.layers.items()},
                "edges": {k: one(v) for k, v in self.edges.items()},
                "stalks": {k: (v.tolist() if batch else v[:, 0].tolist()) for k, v in self.stalks.items()},
                "crossings": [c if batch else {k: v for k, v in c.items() if k != "example"} for c in self.crossings]}


_STATE_NAMES = {1: "on", 0: "sliding", -1: "off"}


def _trajectory(G, ops_vertex, t, *, every: int, dt) -> Trajectory:
    """The host :class:`Trajectory` of a solver's :class:`~sheafdsl.solvers.diffusion.HeatTrajectory`."""
    import numpy as np

    from .ir import layers
    from .lowering import to_numpy

    host = lambda a: np.asarray(to_numpy(a))  # noqa: E731
    E = host(t.edge_energy)  # (T, B, n_edges)
    edges = {name: E[:, :, j] for j, name in enumerate(t.edge_names)}
    edge_layer = layers(G)[0]
    by_layer: dict = {}
    for name, series in edges.items():
        k = edge_layer.get(name)
        if k is not None:
            by_layer[k] = by_layer.get(k, 0.0) + series
    cols = None if t.columns is None else host(t.columns)
    vals = host(t.values)
    stalks = {}
    for v, sl in ops_vertex.items():
        if G.nodes[v].get("anchor"):
            continue
        idx = np.arange(sl.start, sl.stop)
        if cols is None:
            stalks[v] = vals[:, :, idx]
        elif np.isin(idx, cols).all() and idx.size:
            where = {int(c): i for i, c in enumerate(cols)}
            stalks[v] = vals[:, :, [where[int(i)] for i in idx]]
    owner = {}
    for v, sl in ops_vertex.items():
        for i in range(sl.start, sl.stop):
            owner[i] = (v, i - sl.start)
    c = t.crossings
    it, ex, co, b, a, d = (host(x) for x in (c.iteration, c.example, c.coordinate, c.before, c.after, c.direction))
    crossings = [{"iteration": int(it[i]), "example": int(ex[i]), "stalk": owner[int(co[i])][0],
                  "index": owner[int(co[i])][1], "before": _STATE_NAMES[int(b[i])], "after": _STATE_NAMES[int(a[i])],
                  "direction": int(d[i])} for i in range(it.shape[0])]
    return Trajectory(host(t.iterations), E.sum(axis=2), edges, dict(sorted(by_layer.items())), stalks, crossings,
                      every=every, dt=dt)


@dataclass
class DiagnoseReport:
    """Where the equilibrium discord sits (input and target pinned): per edge, layer and type.

    For a sheaf with no stalk pinned to input or target, at the harmonic extension of the pins it
    has: then ``data`` and ``split`` are None and ``n`` is 1."""

    diagnosis: object  # sheafdsl.training.diagnostics.Diagnosis
    lambda_min: float
    data: str
    split: str
    n: int
    source: str
    sheaf: str = "sheaf"  # the model's name

    @property
    def edges(self):
        return self.diagnosis.edges

    def to_json(self) -> dict:
        return {"source": self.source, "data": self.data, "split": self.split, "n": self.n,
                "lambda_min": float(self.lambda_min), **self.diagnosis.to_json()}


@dataclass
class Fit:
    """A finished training run.

    ``params``: name -> numpy array; ``history``: the metrics records, as in ``metrics.jsonl``
    (``step``, ``loss``, ``test_loss``, ``edge_discord``, ``lambda_min`` where sampled,
    ``consistent_fraction``, ``elapsed``; ``baseline_loss`` with a baseline), one every ``log_every``
    steps and at the start and the end; ``metrics``: ``train_loss``,
    ``test_loss``, ``test_mse`` (regression) or ``test_accuracy``, ``consistent_fraction``, ``steps``,
    ``seconds`` (inside the steps); ``baseline``: the baseline's metrics or None; ``out``: the run
    directory, or None; ``snapshots``: step -> :class:`sheafdsl.training.snapshots.Snapshot` (``params``,
    ``baseline``: the parameters at each step of ``snapshot_at``; read back from the run directory when
    there is one, so a resumed run has the ones taken before it too).
    """

    params: dict
    history: list
    metrics: dict
    config: object
    baseline: dict | None = None
    out: object = None
    sheaf: "Sheaf | None" = field(default=None, repr=False)
    snapshots: dict = field(default_factory=dict, repr=False)

    def infer(self, inputs=None, **kw) -> "Inference":
        """The trained sheaf's harmonic extension: ``fit.sheaf.infer(inputs, params=fit.params, ...)``."""
        return self.sheaf.infer(inputs, params=self.params, **kw)


class Sheaf:
    """A checked sheaf model: its IR (``graph``, a networkx MultiDiGraph) and what can be done with it."""

    def __init__(self, graph, model=None):
        self.graph = graph
        self.model = model

    @classmethod
    def _from_model(cls, model) -> "Sheaf":
        from .ir import from_model

        return cls(from_model(model), model)

    @classmethod
    def from_graph(cls, graph) -> "Sheaf":
        """Wrap an IR built from Python (``sheafdsl.ir.new_sheaf``, ``add_stalk``, ...)."""
        if getattr(graph, "graph", None) is None or "parameter_sheaf" not in graph.graph:
            raise _err("E526", f"from_graph needs a sheaf IR (sheafdsl.ir.new_sheaf(...)), not {type(graph).__name__}")
        return cls(graph)

    # ------------------------------------------------------------------ what it is
    @property
    def name(self) -> str:
        return self.graph.graph.get("name", "sheaf")

    @property
    def path(self) -> str:
        return self.graph.graph.get("path") or API

    @property
    def source(self) -> str:
        return self.graph.graph.get("source") or ""

    @property
    def stalks(self) -> dict:
        """Stalk name -> dimension, in cochain order (soft-pin anchors left out)."""
        from .ir import stalks

        return {v: self.graph.nodes[v]["dim"] for v in stalks(self.graph) if not self.graph.nodes[v].get("anchor")}

    @property
    def param_shapes(self) -> dict:
        """Parameter name -> shape, in declaration order."""
        from .ir import param_specs

        return {k: tuple(s.shape) for k, s in param_specs(self.graph).items()}

    @property
    def is_consensus(self) -> bool:
        """True when the sheaf states a consensus problem (objectives, hard edges): solved, not trained."""
        from .ir import is_consensus

        return is_consensus(self.graph)

    @property
    def objectives(self) -> dict:
        """Stalk name -> its objective terms (``sheafdsl.ir.ObjectiveSpec``), for the stalks that have any."""
        from .ir import objectives, stalks

        return {v: list(objectives(self.graph, v)) for v in stalks(self.graph) if objectives(self.graph, v)}

    def __repr__(self) -> str:
        return f"Sheaf({self.name!r}: {len(self.stalks)} stalks, {self.graph.number_of_edges()} edges)"

    def compile(self):
        """The IR: the networkx ``MultiDiGraph`` of the sheaf (shared, not a copy; see docs/ir.md)."""
        return self.graph

    def export(self, path) -> str:
        """Write the IR to ``path`` (``sheaf compile -o``): ``.json`` (lossless), ``.graphml`` or ``.dot``/``.gv``,
        atomically; returns the format. An unknown extension, or a folder that cannot be written, is E530."""
        return export_ir(self.graph, path)

    # ------------------------------------------------------------------ parameters
    def init_params(self, seed: int = 0) -> dict:
        """Every parameter's initial value (its declared initialiser), seeded: name -> numpy array."""
        from .lowering import init_params

        _count("seed", seed, 0, allow_none=False)
        return init_params(self.graph, int(seed))

    def load_params(self, path) -> dict:
        """Parameters from an ``.npz`` of name -> array (e.g. a run's ``checkpoint.npz``), checked (E524)."""
        from .lowering import load_params

        return load_params(self.graph, _path("path", path), file=API)

    def _params(self, params, seed: int = 0) -> dict:
        from .lowering import check_params

        if params is None:
            return self.init_params(seed)
        if isinstance(params, (str, os.PathLike)):
            return self.load_params(params)
        return check_params(self.graph, params, file=API)

    # ------------------------------------------------------------------ inference
    def infer(self, inputs=None, *, params=None, seed: int = 0, pins: dict | None = None, solver: str = "exact",
              rtol: float | None = None, maxiter: int | None = None, atol: float | None = None,
              rho: float | None = None, x0=None, x0_seed: int = 0, dt: float | None = None, alpha: float = 1.0,
              change_tol: float | None = None, trace=False, trace_stalks=None, trace_every: int = 1) -> Inference:
        """The harmonic extension of the pins (``sheaf infer``): stalks pinned to input take ``inputs``,
        constants come from the model, stalks pinned to target are free. A consensus problem (objectives,
        hard edges; docs/admm.md) is minimised instead: ``solver="admm"``, ``"admm-local"`` or ``"exact"``
        (quadratic objectives), with ADMM's ``rtol`` (default 1e-6), ``atol`` (1e-9), ``rho`` (1) and
        ``maxiter``; the result adds ``objective``, ``primal_residual`` and ``dual_residual``. ``rtol``
        defaults to 1e-10 for the other solvers.

        ``inputs``: ``{"x": (B, d) array}`` (or a list of numbers / a (B, Σd) array filling the input
        stalks in declaration order; see :mod:`sheafdsl.inputs`). ``pins``: ``{stalk: value}`` or
        ``{stalk: (indices, value)}``, extra hard pins (``{"y": [0.3]}`` solves the two-sided
        equilibrium). ``params``: a dict, an ``.npz`` path, or None (``init_params(seed)``).

        The heat equation (``solver="diffusion"``): ``x0`` the initial stalks, ``"zeros"``, ``"random"``
        (the free coordinates N(0, 1), seeded by ``x0_seed``), ``"forward"`` or a (B, N) cochain; ``dt``
        the time step of the plain explicit Euler flow ċ = −α ∇E (the step is α·dt; default: the
        accelerated flow with its own step); ``change_tol`` stops when the largest change of a coordinate
        in one step is below it (the paper: 1e-15); ``trace=True`` records the trajectory
        (``result.trajectory``, a :class:`Trajectory`: discord per iteration, per layer and per edge, the
        stalks ``trace_stalks`` (default all) every ``trace_every`` steps, and every activation-pattern
        crossing).
        """
        from .inputs import apply_pin, input_boundary

        G = self.graph
        if pins:
            if not hasattr(pins, "items"):
                raise _err("E523", "`pins` must map stalk names to values")
            G = copy.deepcopy(G)
            for name, value in pins.items():
                indices = None
                if isinstance(value, tuple) and len(value) == 2:
                    indices, value = value
                apply_pin(G, name, value, indices, file=API)
        P = self._params(params, seed)
        boundary, batch = input_boundary(inputs, G, what="inputs", file=API)
        return harmonic_extension(G, P, boundary, batch=batch, solver=solver, rtol=rtol, maxiter=maxiter, file=API,
                                  atol=atol, rho=rho, x0=x0, x0_seed=x0_seed, dt=dt, alpha=alpha,
                                  change_tol=change_tol, trace=trace, trace_stalks=trace_stalks,
                                  trace_every=trace_every)

    # ------------------------------------------------------------------ analysis
    def verify(self, params=None, *, seed: int = 0, boundary: str = "training", symbolic_limit: int | None = None,
               samples: int | None = None):
        """Prove, check or refute the structural claims (``sheaf verify``; docs/verify.md).

        Returns a :class:`sheafdsl.analysis.verify.VerifyReport`: ``claims`` (each with ``name``,
        ``status`` ∈ proved | checked | failed | skipped, ``method``, ``detail``), ``h0``, ``h1``,
        ``relative_h0``, ``failed``.
        """
        from .analysis.verify import DEFAULT_SAMPLES, DEFAULT_SYMBOLIC_LIMIT, verify
        from .ir import BOUNDARIES

        _choice("boundary", boundary, BOUNDARY_NAMES)
        _count("symbolic_limit", symbolic_limit, 0)
        _count("samples", samples, 1)
        _count("seed", seed, 0, allow_none=False)
        P = self._params(params, seed)
        return verify(self.graph, P, symbolic_limit=DEFAULT_SYMBOLIC_LIMIT if symbolic_limit is None else symbolic_limit,
                      sources=BOUNDARIES[boundary], samples=DEFAULT_SAMPLES if samples is None else samples, seed=seed)

    def spectrum(self, params=None, *, seed: int = 0, inputs=None, targets=None, samples: int | None = None,
                 dense_cutoff: int | None = None, vectors: bool = False):
        """λ_min, λ_max and κ of L_free (``sheaf spectrum``), in the training and inference variants.

        The state-dependent maps are fixed by ``inputs`` (the harmonic extension's gates per example;
        with ``targets``, the two-sided equilibrium's), or by ``samples`` random activation patterns
        (default 100). Returns a :class:`sheafdsl.analysis.spectrum.SpectrumReport` (``worst``,
        ``samples``, ``warning``). ``vectors=True`` adds ``report.vectors``: per sample the eigenvectors of
        λ_min (Fiedler) and λ_max of the training L_free (input and target pinned, the paper's convention)
        with their energy fraction per stalk block and per layer
        (:class:`sheafdsl.analysis.spectrum.ExtremeVectors`).
        """
        if inputs is not None and samples is not None:
            raise _err("E526", "give either `inputs` or `samples`, not both")
        if targets is not None and inputs is None:
            raise _err("E526", "`targets` needs `inputs`")
        _count("seed", seed, 0, allow_none=False)
        G = self.graph
        P = self._params(params, seed)
        boundary, target = spectrum_boundary(G, inputs, targets, names=("inputs", "targets"), file=API)
        return spectrum_report(G, P, boundary=boundary, targets=target, samples=samples, seed=seed,
                               dense_cutoff=dense_cutoff, vectors=bool(vectors))

    def cohomology(self, params=None, *, seed: int = 0, boundary: str = "training", method: str = "auto"):
        """h⁰, h¹ and relative h⁰ of the boundary (:func:`sheafdsl.analysis.cohomology.cohomology`)."""
        from .analysis.cohomology import cohomology
        from .ir import BOUNDARIES

        _choice("boundary", boundary, BOUNDARY_NAMES)
        _choice("method", method, ("auto", "exact", "numeric"))
        P = self._params(params, seed)
        try:
            return cohomology(self.graph, P, sources=BOUNDARIES[boundary], method=method)
        except ValueError as exc:  # method="exact" on a sheaf with non-rational maps
            raise _err("E526", str(exc)) from None

    def linking(self, curves=None, *, link: str | None = None, points: int | None = None, params=None,
                seed: int = 0, classes=None, k: int = 5, landmarks: int = 32):
        """The linking number of two closed curves' images at every 3-dim stalk (``sheaf linking``).

        ``curves``: a pair ``(a, b)`` of (n, 3) vertex arrays (closed polygons) or an ``.npz`` path with
        arrays ``a`` and ``b``; or ``link``: ``"hopf"``, ``"unlink"``, ``"torus:K"``, ``"whitehead"``
        (``points`` vertices per curve, default 128; with ``curves``, each polygon is refined to at least
        ``points`` vertices). ``classes``: a pair ``(XA, XB)`` of point clouds, for the point-cloud
        estimate at each stalk (alone, or beside the curves). Returns a
        :class:`sheafdsl.analysis.linking.LinkingReport` (``layers``: ``stalk``, ``linking`` (int or None,
        with ``reason``), ``min_distance``, ``gauss``, ``point_cloud``; ``to_json()``).
        """
        _count("seed", seed, 0, allow_none=False)
        return linking_report(self.graph, self._params(params, seed), curves=curves, link=link, points=points,
                              classes=classes, k=k, landmarks=landmarks, model=self.model, file=API)

    # ------------------------------------------------------------------ training
    def train(self, **kw) -> Fit:
        """``sheafdsl.train(self, **kw)``."""
        return train(self, **kw)

    def diagnose(self, params=None, *, data: str | None = None, split: str = "train", seed: int | None = None,
                 config=None) -> DiagnoseReport:
        """The discord per edge, layer and type at the two-sided equilibrium (``sheaf diagnose``).

        With ``params=None`` the initial parameters (seeded by the ``train`` statement or ``seed``);
        ``data`` overrides the model's data set; ``split`` picks the examples.
        """
        from .training.fit import model_config

        refuse_consensus(self.graph, "diagnose")
        _choice("split", split, SPLITS)
        if _pinless(self.graph) and data is None:
            return _diagnose_pins(self.graph, self._params(params, seed if seed is not None else (
                (self.graph.graph.get("train") or {}).get("seed", 0))), source=f"{self.path}, " + (
                "given parameters" if params is not None else "initial parameters"))
        if config is None:
            config = model_config(self.graph, {"data": data, "seed": seed})
        P = None if params is None else self._params(params)
        with located(self.path):
            return _diagnose(self.graph, config, P, split, source=f"{self.path}, " + (
                f"initial parameters (seed {config.seed})" if params is None else "given parameters"))


def export_ir(G, path, *, file: str = API) -> str:
    """Write the IR ``G`` to ``path`` in the format its extension names (``Sheaf.export``, ``sheaf compile -o``)."""
    from .ir.export import format_of, write

    path = _path("path", path)
    if format_of(path) is None:
        raise SheafError(Diagnostic("E530", f"cannot tell the export format of `{path}`", file=file,
                                    hint="the file name must end in .json, .graphml or .dot (or .gv)"))
    try:
        return write(G, path)
    except OSError as exc:
        raise SheafError(Diagnostic("E530", f"cannot write `{path}`: {exc.strerror or exc}", file=file,
                                    hint="check that the directory exists and is writable")) from None


def harmonic_extension(G, params: dict, boundary: dict, *, batch: bool = True, solver: str = "exact",
                       rtol: float | None = None, maxiter: int | None = None, file: str = API,
                       atol: float | None = None, rho: float | None = None, x0=None, x0_seed: int = 0,
                       dt: float | None = None, alpha: float = 1.0, change_tol: float | None = None, trace=False,
                       trace_stalks=None, trace_every: int = 1, cluster=None) -> Inference:
    """Solve for the harmonic extension of ``boundary`` (checked values of the input stalks) with the
    inference pins, and gather every stalk's values on the host (``Sheaf.infer``, ``sheaf infer``); for a
    consensus problem, its minimiser (``solver`` admm, admm-local or exact; ``atol``, ``rho``: ADMM's).
    ``x0``, ``x0_seed``, ``dt``, ``alpha``, ``change_tol`` and ``trace*``: the heat equation's
    (:meth:`Sheaf.infer`); E662 when they do not fit. ``cluster`` (a :class:`sheafdsl.distributed.Cluster`):
    the batch split over its workers (docs/distributed.md)."""
    import numpy as np

    heat = dict(x0=x0, x0_seed=x0_seed, **_heat_options(solver, x0=x0, dt=dt, alpha=alpha, change_tol=change_tol,
                                                        trace=trace, trace_stalks=trace_stalks,
                                                        trace_every=trace_every, file=file))

    from .ir import INFERENCE, stalks
    from .lowering import to_numpy
    from .solvers import solve

    if (rtol is not None and (isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not rtol > 0)) or (
            maxiter is not None and (isinstance(maxiter, bool) or not isinstance(maxiter, int) or maxiter < 1)):
        raise SheafError(Diagnostic("E525", "rtol must be positive and maxiter a whole number >= 1", file=file))
    for name, v in (("atol", atol), ("rho", rho)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v)
                              or v < 0 or (name == "rho" and v == 0)):
            raise SheafError(Diagnostic("E519", f"{name} must be a finite number " + (">= 0" if name == "atol" else "> 0")
                                        + f", not {v!r}", file=file))
    local = None
    if cluster is not None and solver == "admm-local":  # the agents partitioned over the workers
        from .distributed.admm import partitioned

        local = partitioned(cluster, maxiter=maxiter)
    elif cluster is not None:  # the batch split over the workers
        from .distributed.batch import sharded_inference

        if trace or x0 == "random":
            raise SheafError(Diagnostic("E703", "a heat-equation trace, or random initial stalks, belong to one batch: "
                                                "they are not split over workers", file=file,
                                        hint="drop --trace / --x0 random, or --workers"))
        return sharded_inference(cluster, G, params, boundary, batch=batch, solver=solver, rtol=rtol, maxiter=maxiter,
                                 file=file, atol=atol, rho=rho, x0=x0, dt=dt, alpha=alpha, change_tol=change_tol)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # an overflow is reported below
        res = solve(G, params, boundary, method=solver, sources=INFERENCE,
                    rtol=None if rtol is None else float(rtol), maxiter=maxiter, atol=atol, rho=rho, **heat,
                    **({} if local is None else {"local": local}))
    vals = {v: np.asarray(to_numpy(res.stalk(v))) for v in stalks(G) if not G.nodes[v].get("anchor")}
    bad = [v for v, a in vals.items() if not np.all(np.isfinite(a))]
    if bad:  # never print an infinity or NaN as a result
        raise SheafError(Diagnostic("E512", f"the harmonic extension overflows float64: stalk `{bad[0]}` has infinite "
                                            "or NaN values", file=file,
                                    hint="the weights or the inputs are too large for float64: rescale them"))
    host = lambda a: np.asarray(to_numpy(a))  # noqa: E731
    extra = {k: host(getattr(res, k)) for k in ("objective", "primal_residual", "dual_residual")
             if getattr(res, k, None) is not None}
    if res.trajectory is not None:
        extra["trajectory"] = _trajectory(G, res.layout, res.trajectory, every=int(trace_every),
                                          dt=heat.get("step"))
    return Inference(vals, host(res.energy), host(res.converged), host(res.consistent), host(res.residual),
                     int(res.iterations), solver, batch, res, **extra)


def _heat_options(solver: str, *, x0, dt, alpha, change_tol, trace, trace_stalks, trace_every, file) -> dict:
    """The heat equation's options as :func:`sheafdsl.solvers.solve` takes them (E662 when they do not fit)."""
    import numbers

    def bad(msg, hint=None):
        return SheafError(Diagnostic("E662", msg, hint=hint, file=file))

    given = [name for name, v in (("x0", x0), ("dt", dt), ("change_tol", change_tol), ("trace", trace or None),
                                  ("trace_stalks", trace_stalks)) if v is not None]
    if alpha != 1.0:
        given.append("alpha")
    if given and solver != "diffusion":
        if file != API:  # the command's flags, not the API's names
            given = ["--" + g.replace("_", "-") for g in given]
        raise bad(f"{', '.join(given)}: the heat equation's options, not the `{solver}` solver's",
                  "use solver=\"diffusion\" (--solver diffusion)")
    for name, v in (("dt", dt), ("alpha", alpha), ("change_tol", change_tol)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 < v < float("inf")):
            raise bad(f"{name} must be a positive finite number, not {v!r}")
    if trace_stalks is not None and not trace:
        raise bad("trace_stalks without trace", "add trace=True (--trace)")
    if isinstance(trace_every, bool) or not isinstance(trace_every, numbers.Integral) or trace_every < 1:
        raise bad(f"trace_every must be a whole number >= 1, not {trace_every!r}")
    out = {"step": None if dt is None else float(alpha) * float(dt),
           "change_tol": None if change_tol is None else float(change_tol)}
    if trace:
        out["trajectory"] = {"stalks": None if trace_stalks is None else list(trace_stalks), "every": int(trace_every)}
    return out


def spectrum_boundary(G, inputs, targets, *, names=("--input", "--target"), file: str = "<command line>"):
    """(boundary, targets) dicts for :func:`spectrum_report` from user values (None, None without inputs);
    E531 when the model has no input stalks, E533 for bad targets."""
    from .inputs import parse_input, parse_target
    from .ir import pinned_stalks

    if inputs is None:
        return None, None
    if not pinned_stalks(G, "input"):
        raise SheafError(Diagnostic("E531", f"{names[0]} was given but no stalk of this model is pinned to input",
                                    hint="sample activation patterns instead", file=file))
    boundary, _ = parse_input(inputs, G, what=names[0], file=file)
    if targets is None:
        return boundary, None
    return boundary, parse_target(targets, G, next(iter(boundary.values())).shape[0], what=names[1], file=file)


def refuse_consensus(G, command: str) -> None:
    """E591: ``sheaf spectrum`` and ``sheaf diagnose`` analyse a network sheaf's energy and its equilibria; a
    consensus problem (objectives, hard edges) has neither, so they say what to run instead, at the first
    objective or hard edge of the file."""
    from .ir import consensus_span, is_consensus, model_error

    if not is_consensus(G) or G.graph.get("learned") is not None:
        return
    path = G.graph.get("path") or "FILE"
    what = {"spectrum": "the spectrum of L_free, the Laplacian of a network sheaf's energy: a consensus problem's "
                        "hard edges are constraints and its objectives are not edge energies, so L_free says nothing "
                        "about it",
            "diagnose": "the discord of a network sheaf's two-sided (training) equilibrium: a consensus problem has "
                        "none (it is solved, not trained)"}[command]
    raise model_error(G, "E591", f"`{G.graph.get('name', 'sheaf')}` states a consensus problem (local objectives "
                      f"and/or hard edges): `sheaf {command}` reports {what}", consensus_span(G),
                      f"`sheaf verify {path}` proves its convexity (with the margin λ_min(ZᵀHZ) on ker δ_hard) and "
                      f"`sheaf infer {path} --solver admm --json` solves it (minimiser, objective, residuals)")


def spectrum_report(G, params: dict, *, boundary: dict | None = None, targets: dict | None = None,
                    samples: int | None = None, seed: int = 0, dense_cutoff: int | None = None,
                    vectors: bool = False, cluster=None):
    """The spectrum of L_free at the gates of ``boundary``'s harmonic extension (with ``targets``: of
    the two-sided equilibrium), or over ``samples`` random activation patterns (``Sheaf.spectrum``,
    ``sheaf spectrum``); ``report.warning`` says when some extension did not converge."""
    import numpy as np

    from .analysis.spectrum import (DEFAULT_SAMPLES, DENSE_CUTOFF, VARIANTS, require_budget, sample_states, spectrum,
                                    states_at)
    from .ir import is_state_dependent

    refuse_consensus(G, "spectrum")
    _count("samples", samples, 1)
    _count("dense_cutoff", dense_cutoff, 0)
    if cluster is not None and boundary is not None:
        raise SheafError(Diagnostic("E703", "--workers splits the sampled activation patterns of --samples over the "
                                            "workers, not the spectra at given --input examples",
                                    hint="use --samples N with --workers, or drop --workers", file="<command line>"))
    note = None
    if boundary is not None:
        from .solvers import solve

        sources = VARIANTS["inference"]
        if targets is not None:
            boundary = {**boundary, **targets}
            sources = VARIANTS["training"]
        res = solve(G, params, boundary, method="exact", sources=sources)
        states, mode = states_at(res), "inputs" if targets is None else "inputs+targets"
        bad = int(np.sum(~np.asarray(res.converged, dtype=bool)))
        if bad:
            note = f"{bad} of {res.batch} harmonic extension(s) did not converge; their spectra use the last gates"
    else:
        n = DEFAULT_SAMPLES if samples is None else samples
        require_budget(G, n, dense_cutoff=DENSE_CUTOFF if dense_cutoff is None else dense_cutoff)  # before allocating
        states = sample_states(G, n, np.random.default_rng([seed, 1]))
        mode = "samples" if is_state_dependent(G) else "fixed"
    cutoff = DENSE_CUTOFF if dense_cutoff is None else dense_cutoff
    if cluster is not None:  # the sampled patterns split over the workers (docs/distributed.md)
        from .distributed.batch import sharded_spectrum

        report = sharded_spectrum(cluster, G, params, states, dense_cutoff=cutoff, mode=mode, vectors=vectors)
    else:
        report = spectrum(G, params, states, dense_cutoff=cutoff, mode=mode, vectors=vectors)
    report.warning = note
    return report


def linking_report(G, params: dict, *, curves=None, link: str | None = None, points: int | None = None,
                   classes=None, k: int = 5, landmarks: int = 32, model=None, file: str = API):
    """:func:`sheafdsl.analysis.linking.layer_linking` of the given curves, a built-in link, or classes only
    (``Sheaf.linking``, ``sheaf linking``); E546 for a bad ``points``, E547 for bad classes, k or landmarks."""
    import numpy as np

    from .analysis.linking import DEFAULT_POINTS, MAX_POINTS, layer_linking, link_curves, refine

    def bad_count(v, low):
        return isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low

    if curves is not None and link is not None:
        raise SheafError(Diagnostic("E547", "give either curves or a link, not both", file=file))
    if points is not None and (bad_count(points, 3) or points > MAX_POINTS):
        raise SheafError(Diagnostic("E546", f"points must be a whole number from 3 to {MAX_POINTS:,}, not {points!r}",
                                    file=file))
    if bad_count(k, 1) or bad_count(landmarks, 3):
        raise SheafError(Diagnostic("E547", f"k must be >= 1 and landmarks >= 3 (got k={k!r}, landmarks={landmarks!r})",
                                    file=file))
    a = b = None
    what = "classes"
    if link is not None:
        a, b = link_curves(link, DEFAULT_POINTS if points is None else points, file=file)
        what = str(link).strip()
    elif curves is not None:
        if isinstance(curves, (str, os.PathLike)):
            a, b = load_curves(curves, file=file)
            what = os.fspath(curves)
        else:
            try:
                a, b = curves
            except (TypeError, ValueError):
                raise SheafError(Diagnostic("E543", "curves must be a pair (a, b) of (n, 3) arrays, or an .npz path",
                                            file=file)) from None
            what = "curves"
        from .analysis.linking import check_polygon

        a, b = check_polygon(a, "curve `a`", file=file), check_polygon(b, "curve `b`", file=file)
        if points is not None:
            a, b = refine(a, points), refine(b, points)
    elif classes is None:
        raise SheafError(Diagnostic("E547", "nothing to push through: give curves, a link, or classes", file=file,
                                    hint="e.g. link=\"hopf\" (sheaf linking FILE --link hopf)"))
    return layer_linking(G, params, a, b, model=model, classes=classes, k=k, landmarks=landmarks, curves=what,
                         file=file)


def load_curves(path, *, file: str | None = None):
    """The closed polygons ``a`` and ``b`` of an ``.npz`` (each (n, 3), n ≥ 3, finite), or a SheafError
    (E542 for the file, E543 for a curve)."""
    from .analysis.linking import check_polygon
    from .fileio import display_name, load_npz, real_array

    name = display_name(path)
    raw = load_npz(path, code="E542", what="curves file", file=file)
    missing = [k for k in ("a", "b") if k not in raw]
    if missing:
        raise SheafError(Diagnostic("E542", f"curves file `{name}` has no array "
                                            f"{' or '.join(f'`{k}`' for k in missing)} (it has {sorted(raw) or 'none'})",
                                    hint="save the two closed polygons with numpy.savez(path, a=A, b=B), each of "
                                         "shape (n, 3)", file=file or "<command line>"))
    return tuple(check_polygon(real_array(raw[k], code="E542", path=path, what=f"curves file `{name}`: `{k}`",
                                          file=file), f"curve `{k}` of `{name}`", file=file or "<command line>")
                 for k in ("a", "b"))


def write_linking_plot(report, path, *, title: str = "", dpi: int = 110, file: str = API) -> None:
    """``sheaf linking --plot``: :func:`sheafdsl.analysis.linking.figure_layers` as a PNG, written atomically
    (E542 when it cannot be written)."""
    import matplotlib.pyplot as plt

    from .analysis.linking import figure_layers
    from .fileio import atomic_write, write_error

    fig = figure_layers(report, title)
    try:
        atomic_write(os.fspath(path), lambda fh: fig.savefig(fh, format="png", dpi=dpi))
    except OSError as exc:
        raise write_error("E542", path, exc, file=file, hint="check that the folder exists and is writable") from None
    finally:
        plt.close(fig)


def _diagnose(G, config, params, split: str, source: str) -> DiagnoseReport:
    from .training.data import dataset_for
    from .training.diagnostics import diagnose
    from .training.trainers import make_trainer

    ds = dataset_for(G, config)
    trainer = make_trainer(G, config, ds, params=params)
    X, Y = (ds.X_train, ds.Y_train) if split == "train" else (ds.X_test, ds.Y_test)
    discords = trainer.edge_discords(X, Y)
    lam = trainer.lambda_min_sample(X, k=16)
    return DiagnoseReport(diagnose(G, discords), float(lam), ds.name, split, int(len(X)), source,
                          G.graph.get("name", "sheaf"))


def _pinless(G) -> bool:
    """A sheaf with no stalk pinned to ``input`` or ``target``: nothing to feed data to."""
    from .ir import pinned_stalks

    return not pinned_stalks(G, "input") and not pinned_stalks(G, "target")


def _diagnose_pins(G, params, source: str) -> DiagnoseReport:
    """The discord of a sheaf without data pins: at the harmonic extension of the pins it has (value
    pins hard, soft pins as their edges), c* = argmin E over the free stalks; λ_min of that L_free."""
    import numpy as np

    from .analysis.spectrum import extreme_eigenvalues, restricted_laplacian
    from .ir import TRAINING
    from .lowering import to_numpy
    from .lowering.operators import SheafOperators
    from .solvers import solve
    from .training.diagnostics import diagnose, edge_discords

    res = solve(G, params, {}, method="exact", sources=TRAINING)
    disc = SheafOperators(G, params).discord(res.cochain)
    c = np.asarray(to_numpy(res.cochain))[0]
    ext = extreme_eigenvalues(restricted_laplacian(G, params, TRAINING, state=c))
    lam = float("inf") if ext.lambda_min is None else float(ext.lambda_min)
    return DiagnoseReport(diagnose(G, edge_discords(G, np.asarray(to_numpy(disc)))), lam, None, None, 1, source,
                          G.graph.get("name", "sheaf"))


def open_run(path) -> tuple[Sheaf, dict, object]:
    """A run directory (``sheaf train --out``): its model as a :class:`Sheaf`, its checkpoint's
    parameters, and the :class:`sheafdsl.training.fit.SavedRun` (config, step, meta)."""
    from .training.fit import load_run

    saved = load_run(_path("path", path))
    return Sheaf(saved.G), saved.params, saved


def diagnose_run(path, *, data: str | None = None, split: str = "train") -> DiagnoseReport:
    """``sheaf diagnose RUN_DIR``: the discord of a run's checkpoint, on its data (or ``data``)."""
    from .training.fit import load_run

    _choice("split", split, SPLITS)
    saved = load_run(_path("path", path), data=data)
    return _diagnose(saved.G, saved.config, saved.params, split, source=f"run {path} at step {saved.step}")


def load_snapshots(path, steps=None) -> dict:
    """The snapshots of run directory ``path`` (``sheaf train --snapshot-at``): step ->
    :class:`sheafdsl.training.snapshots.Snapshot` (``params``, ``baseline``, ``meta``); ``steps`` picks
    some (a step that was not taken is E681)."""
    from .training.fit import load_run
    from .training.snapshots import load_snapshots as _load

    saved = load_run(_path("path", path))
    return _load(saved.rundir.path, steps)


def train(sheaf, *, params=None, out=None, resume: bool = False, baseline: bool = False, plots: bool | None = None,
          on_step=None, threads: int | None = None, snapshot_at=None, **options) -> Fit:
    """Train ``sheaf`` (a :class:`Sheaf`, or a model path) as ``sheaf train`` does; return a :class:`Fit`.

    ``options`` are the training options (``steps``, ``lr``, ``trainer``, ``seed``, ``data``... every
    field of :class:`sheafdsl.training.config.TrainConfig`), over the model's ``train`` statement.
    ``params``: initial parameters (default: seeded). ``out``: a run directory to write (checkpoints,
    metrics.jsonl, summary.json, plots); without it the run stays in memory. ``resume`` continues the
    run in ``out``. ``baseline``: train backprop beside it (``Fit.baseline``). ``on_step(step, loss,
    baseline_loss)`` is called after each step. ``threads``: BLAS threads during the run (``sheaf
    train`` uses 1; None leaves them as they are). ``snapshot_at``: steps whose parameters to keep
    (``[1000, 20000]`` or ``"1000,20000"``; ``Fit.snapshots``). A divergence raises SheafError E640;
    Ctrl-C raises KeyboardInterrupt after saving a checkpoint (with ``out``).
    """
    from .lowering import blas_threads, to_numpy
    from .training.fit import finish_run, start_run

    if isinstance(sheaf, (str, os.PathLike)):
        sheaf = load(sheaf)
    if not isinstance(sheaf, Sheaf):
        raise _err("E526", f"train needs a Sheaf (sheafdsl.load(...)) or a model path, not {type(sheaf).__name__}")
    if resume and params is not None:
        raise _err("E634", "cannot resume with new initial parameters: a resumed run continues from its checkpoint")
    _count("threads", threads, 1)
    from .ir import is_learned

    if is_learned(sheaf.graph):  # a learned consensus model: its own trainers (docs/admm.md "Learning")
        from .training.learned import fit_learned, learned_config, write_learned_run

        if resume or baseline or snapshot_at:
            raise _err("E610", "a learned model's run has no resume, backprop baseline or snapshots")
        with located(sheaf.path), blas_threads(threads):
            config = learned_config(sheaf.graph, options)
            history = []
            fit = fit_learned(sheaf.graph, config, params=params, on_step=lambda t, loss: (
                history.append({"step": t, "loss": loss}), on_step(t, loss, None) if on_step else None))
            result = dict(fit["result"])
            report = fit["data"].meta.get("report")
            if report is not None:
                result.update(report(fit["trainer"], fit["data"], config))
            if out is not None:
                write_learned_run(out, fit["params"], result, config)
        return Fit({k: to_numpy(v).copy() for k, v in fit["params"].items()}, history, result, config, None, out, sheaf)
    with located(sheaf.path), blas_threads(threads):
        run = start_run(sheaf.graph, file=sheaf.path, overrides=options, out=out, resume=resume, baseline=baseline,
                        params=params, record=out is not None, snapshot_at=snapshot_at)
        outcome = run.session.run(run.config.steps, on_step=on_step)
        if outcome.status in ("diverged", "failed"):  # E640, or E641 (a write failed; the checkpoint is kept)
            raise outcome.error
        if outcome.status == "interrupted":
            raise KeyboardInterrupt(f"training interrupted at step {outcome.step}")
        done = finish_run(run, plots=out is not None if plots is None else plots, discords=False)
    P = {k: to_numpy(v).copy() for k, v in run.session.trainer.params.items()}
    if run.rundir is None:
        snaps = dict(sorted(run.session.snapshots.items()))
    else:
        from .training.snapshots import load_snapshots as _load

        snaps = _load(run.rundir.path)
    return Fit(P, run.session.metrics.read(), done.result, run.config, done.summary.get("baseline"),
               None if run.rundir is None else run.rundir.path, sheaf, snaps)


__all__ = ["load", "loads", "train", "load_snapshots", "open_run", "diagnose_run", "export_ir", "harmonic_extension", "spectrum_boundary", "spectrum_report", "linking_report", "load_curves", "write_linking_plot", "Sheaf", "Inference", "Fit", "DiagnoseReport"]
