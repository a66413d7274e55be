r"""Spectra of the restricted Laplacian L_free = δ_Ωᵀ W² δ_Ω.

Split the cochain c = (c_Ω free, c_U pinned). The harmonic extension of the pins is unique iff
L_free ≻ 0, iff the relative cohomology H⁰(G, U; F) = ker δ_Ω vanishes; the heat equation converges at
rate α·λ_min(L_free), and an explicit step is stable for α < 2/λ_max. This module measures λ_min,
λ_max and κ = λ_max/λ_min, and (:func:`extreme_vectors`, ``sheaf spectrum --vectors``) the eigenvectors of
λ_min and λ_max with the share of their energy in each free stalk's block and each layer.

Two **variants** of "free", named by which pins are hard:

========== ============================== ========================================================
variant    hard pins (``sources``)        meaning
========== ============================== ========================================================
training   input, target, value           both ends pinned: the fast phase of training solves this
inference  input, value                   a target stalk is free: ``sheaf infer``'s system
========== ============================== ========================================================

A soft pin is not a hard pin: its anchor vertex is pinned to a constant (``value``) and its edge
stays in δ, so it *adds* w² to L_free's diagonal on the pinned coordinates.

**State dependence.** A ReLU edge's map diag(σ) depends on the activation pattern σ; a sigmoid or
softmax edge is linearised, F ≈ Dφ(c_u) (so L_free is the Gauss–Newton matrix of the energy). The
spectrum is taken either at a given state (gates and linearisation point from a solve), or over
sampled states: each ReLU unit's gate is an independent fair 0/1 coin and the linearisation point is
c ~ N(0, I). (For a sigmoid/softmax edge this is the quadratic model of the least-squares energy
E = ½ Σ w² ‖r‖² of docs/maths.md; a solver that scores a pinned nonlinear head by cross-entropy has a
different Hessian there.)

**Eigenvalues.** Up to :data:`DENSE_CUTOFF` free coordinates: ``scipy.linalg.eigvalsh`` of the dense
matrix (all eigenvalues). Above it: ``scipy.sparse.linalg.eigsh``: λ_max by Lanczos (``which="LA"``),
λ_min by shift-invert about σ = −10⁻³ λ_max < 0 (L_free − σI is positive definite even when L_free is
singular, so the factorisation never fails). If ARPACK fails to converge that is a SheafError (E532)
that points to the dense path.

**Singularity.** L_free is reported singular when λ_min ≤ tol = n · ε · λ_max (n the free dimension,
ε the float64 machine epsilon): numpy's ``matrix_rank`` rule applied to L_free, i.e. the level below
which a computed eigenvalue cannot be told from 0. Then κ = inf, and the free directions that span the
kernel (relative H⁰ ≠ 0) are named.

>>> from sheafdsl.ir import new_sheaf, add_stalk, add_edge, add_pin, Identity, Scaled
>>> G = new_sheaf("pair"); add_stalk(G, "a", 1); add_stalk(G, "b", 1)
>>> add_edge(G, "ab", "a", "b", src_map=Identity(), dst_map=Scaled(2.0))
>>> L = restricted_laplacian(G, {}, sources=())          # nothing pinned: ker δ = {c_b = c_a / 2}
>>> ext = extreme_eigenvalues(L, labels=free_labels(G, ()))
>>> ext.singular, ext.kappa, ext.kernel
(True, inf, {'a': [0], 'b': [0]})
>>> add_pin(G, "a", "value", value=[1.0])
>>> ext = extreme_eigenvalues(restricted_laplacian(G, {}, sources=("value",)))  # L_free = [4]
>>> ext.lambda_min, ext.lambda_max, ext.kappa, ext.singular
(4.0, 4.0, 1.0, False)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ..errors import Diagnostic, SheafError
from ..options import SPECTRUM_SAMPLES
from ..ir import BOUNDARIES, ReluGate, edges, free_indices, is_state_dependent, layers, stalks, total_dim
from ..ir.maps import Nonlinear
from ..lowering import coboundary_matrix, edge_weight_vector, laplacian_matrix

#: variant name -> the pin sources that are hard in it
VARIANTS = BOUNDARIES
#: random activation patterns sampled when no inputs fix the gates
DEFAULT_SAMPLES = SPECTRUM_SAMPLES
#: free dimensions up to this use dense eigvalsh; above it sparse eigsh
DENSE_CUTOFF = 1000
#: the shift-invert point for λ_min in the sparse path, as a fraction of −λ_max
SHIFT = 1e-3
#: the most seconds of eigenvalue work one spectrum may plan (estimated up front; more is E541)
BUDGET_S = 600.0
#: the per-sample cost model: a fixed overhead (assembling L) plus dense work n³/FLOPS (or sparse Lanczos)
SAMPLE_OVERHEAD_S, FLOPS = 2e-4, 3e9
#: Lanczos iterations the sparse path may take per eigenvalue before falling back
SPARSE_MAXITER = 3000
#: the most nonzeros of the factor W δ_Ω that the sparse path factorises (beyond: E532 up front)
FACTOR_NNZ = 2_000_000


@dataclass
class Extremes:
    """λ_min, λ_max and κ of one symmetric positive semidefinite matrix (one L_free).

    ``singular`` is λ_min ≤ ``tol``; then ``kappa`` is inf and ``kernel`` maps each stalk to the local
    coordinates that carry weight in a kernel vector (the free directions of relative H⁰), and
    ``nullity`` counts the eigenvalues ≤ tol (dense path; the sparse path computes one kernel vector and
    reports ``nullity`` = None). With no free coordinates every value is None and ``singular`` is False.
    """

    n: int
    lambda_min: float | None
    lambda_max: float | None
    kappa: float | None
    singular: bool
    tol: float | None
    method: str
    nullity: int | None = 0
    kernel: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """JSON-ready (κ = inf is written as null, since JSON has no infinity; ``singular`` says why)."""
        return {"free_dim": self.n, "lambda_min": self.lambda_min, "lambda_max": self.lambda_max,
                "kappa": None if self.kappa is None or math.isinf(self.kappa) else self.kappa,
                "singular": self.singular, "tol": self.tol, "method": self.method, "nullity": self.nullity,
                "kernel": self.kernel}


def restricted_laplacian(G, params: dict, sources=VARIANTS["training"], *, state=None, gates=None) -> sp.csr_matrix:
    """L_free = δ_Ωᵀ W² δ_Ω: the Laplacian restricted to :func:`~sheafdsl.ir.free_indices` (``sources`` hard).

    ``state`` (N,) and ``gates`` {relu edge: (d_e,) 0/1 or [0, 1] vector} fix the state-dependent maps, as in
    :func:`sheafdsl.lowering.laplacian_matrix`.
    """
    L = laplacian_matrix(G, params, state=state, gates=gates)
    free = free_indices(G, sources)
    return L[free][:, free].tocsr()


def singular_tolerance(n: int, lambda_max: float) -> float:
    """tol = n · ε · λ_max: below it an eigenvalue of an n × n PSD matrix is numerically zero."""
    return max(n, 1) * np.finfo(float).eps * max(float(lambda_max), 0.0)


def extreme_eigenvalues(L, *, dense_cutoff: int = DENSE_CUTOFF, tol: float | None = None, labels=None) -> Extremes:
    """λ_min, λ_max and κ of a symmetric PSD matrix ``L`` (dense ndarray or scipy.sparse).

    ``labels`` (optional, one ``(stalk, local index)`` per row) names the kernel directions when L is
    singular; without it they are named ``("c", row)``. ``tol`` overrides :func:`singular_tolerance`.
    """
    n = L.shape[0]
    if n == 0:
        return Extremes(0, None, None, None, False, None, "empty", 0)
    data = L.data if sp.issparse(L) else np.asarray(L)
    if not np.all(np.isfinite(data)):
        raise _overflow(np.ravel(data))
    dense = n <= max(dense_cutoff, 2)
    if dense:
        A = L.toarray() if sp.issparse(L) else np.asarray(L, dtype=float)
        w = scipy.linalg.eigvalsh(A)
        lo, hi = float(w[0]), float(w[-1])
        if not math.isfinite(hi):
            raise _overflow(np.array([hi]))
        method = "dense eigvalsh"
    else:
        A = sp.csc_matrix(L, dtype=float)
        try:
            hi = float(spla.eigsh(A, k=1, which="LA", return_eigenvectors=False, maxiter=SPARSE_MAXITER)[0])
            lo = _sparse_lambda_min(A, hi)
        except (spla.ArpackNoConvergence, spla.ArpackError) as exc:
            raise SheafError(Diagnostic("E532", f"the sparse eigensolver (eigsh) failed on the {n} x {n} L_free: {exc}",
                                        hint=f"use the dense solver: --dense-cutoff {n}")) from None
        method = "sparse eigsh"
    tol = singular_tolerance(n, hi) if tol is None else float(tol)
    singular = lo <= tol
    if not singular:
        return Extremes(n, lo, hi, hi / lo, False, tol, method, 0)
    if dense:
        w, V = scipy.linalg.eigh(A)
        K = V[:, w <= tol]
        nullity = int(K.shape[1])
    else:
        sigma = -SHIFT * hi if hi > 0 else -1.0
        _, K = spla.eigsh(A, k=1, sigma=sigma, which="LM")
        nullity = None
    return Extremes(n, lo, hi, math.inf, True, tol, method, nullity, _kernel_support(K, labels))


def _sparse_lambda_min(A, hi: float) -> float:
    sigma = -SHIFT * hi if hi > 0 else -1.0
    return float(spla.eigsh(A, k=1, sigma=sigma, which="LM", return_eigenvectors=False)[0])


def gram_extremes(A, *, dense_cutoff: int = DENSE_CUTOFF, labels=None) -> Extremes:
    """The extremes of L = AᵀA from its factor A (M × n, sparse), without assembling L when n is large.

    L_free = (W δ_Ω)ᵀ(W δ_Ω): one edge that reads a whole layer (an output row of W) makes L dense
    where A is sparse, so past ``dense_cutoff`` the sparse path works on A: λ_max by Lanczos on
    x ↦ Aᵀ(Ax), and λ_min by shift-invert about σ < 0 through the sparse symmetric augmented system
    [[−I, A], [Aᵀ, −σI]] [r; x] = [0; b], whose solution has (AᵀA − σI) x = b (no fill-in from the
    dense block). Up to the cutoff: :func:`extreme_eigenvalues` of the dense AᵀA.
    """
    A = sp.csr_matrix(A, dtype=float)
    M, n = A.shape
    if not np.all(np.isfinite(A.data)):
        raise _overflow(A.data)
    if n == 0 or n <= max(dense_cutoff, 2):
        with np.errstate(over="ignore", invalid="ignore"):
            L = (A.T @ A).toarray()
        return extreme_eigenvalues(L, dense_cutoff=dense_cutoff, labels=labels)
    with np.errstate(over="ignore", invalid="ignore"):
        op = spla.LinearOperator((n, n), matvec=lambda x: A.T @ (A @ x), dtype=float)
        try:
            hi = float(spla.eigsh(op, k=1, which="LA", return_eigenvectors=False, maxiter=SPARSE_MAXITER)[0])
        except (spla.ArpackNoConvergence, spla.ArpackError) as exc:
            raise SheafError(Diagnostic("E532", f"the sparse eigensolver (eigsh) failed on the {n} x {n} L_free: "
                                                f"{exc}", hint=f"use the dense solver: --dense-cutoff {n}")) from None
    if not math.isfinite(hi):
        raise _overflow(np.array([math.inf]))
    if A.nnz > FACTOR_NNZ:  # dense blocks (a full weight matrix between wide layers): the LU would not end soon
        raise SheafError(Diagnostic("E532", f"L_free's factor has {A.nnz:,} nonzeros (dense weight blocks between wide "
                                            f"layers), above the {FACTOR_NNZ:,} the sparse shift-invert factorises in "
                                            "bounded time; nothing more was computed",
                                    hint=f"use the dense solver, --dense-cutoff {n} (about {8 * n * n / 2 ** 30:.1f} GiB "
                                         f"and O(n³) = {n ** 3 / FLOPS:,.0f} s per sample), or a narrower model"))
    sigma = -SHIFT * hi if hi > 0 else -1.0
    K = sp.bmat([[-sp.identity(M), A], [A.T, -sigma * sp.identity(n)]], format="csc")
    lu = spla.splu(K)

    def shifted_inverse(b):
        return lu.solve(np.concatenate([np.zeros(M), b]))[M:]

    inv = spla.LinearOperator((n, n), matvec=shifted_inverse, dtype=float)
    try:  # the largest eigenvalue of (L − σI)⁻¹ is 1/(λ_min − σ)
        mu, V = spla.eigsh(inv, k=1, which="LA", maxiter=SPARSE_MAXITER)
    except (spla.ArpackNoConvergence, spla.ArpackError) as exc:
        raise SheafError(Diagnostic("E532", f"the sparse eigensolver (eigsh) failed on the {n} x {n} L_free: {exc}",
                                    hint=f"use the dense solver: --dense-cutoff {n}")) from None
    lo = max(float(1.0 / mu[0] + sigma), 0.0)
    tol = singular_tolerance(n, hi)
    if lo > tol:
        return Extremes(n, lo, hi, hi / lo, False, tol, "sparse eigsh", 0)
    return Extremes(n, lo, hi, math.inf, True, tol, "sparse eigsh", None, _kernel_support(V, labels))


def _overflow(data) -> SheafError:
    finite = np.isfinite(data)
    big = float(np.abs(data[finite]).max()) if finite.any() else math.inf
    return SheafError(Diagnostic("E534", f"L_free overflows float64: its entries (or its eigenvalues) are infinite or "
                                         f"NaN (the largest finite entry is {big:.3g}), so its spectrum cannot be "
                                         "computed",
                                 hint="the weights (squared, in W²) are too large: rescale the parameters or the "
                                      "edge weights"))


def _kernel_support(K: np.ndarray, labels) -> dict:
    """Rows where some kernel vector has weight (> 1e-8 of its largest entry), grouped by stalk."""
    if K.size == 0:
        return {}
    w = np.abs(K).max(axis=1)
    rows = np.flatnonzero(w > 1e-8 * w.max())
    out: dict = {}
    for r in rows:
        stalk, i = labels[r] if labels is not None else ("c", int(r))
        out.setdefault(stalk, []).append(int(i))
    return out


def free_labels(G, sources) -> list[tuple[str, int]]:
    """``(stalk, local index)`` of each free coordinate, in the order of :func:`~sheafdsl.ir.free_indices`."""
    owner = np.empty(total_dim(G), dtype=object)
    local = np.empty(total_dim(G), dtype=np.int64)
    for v in stalks(G):
        d = G.nodes[v]
        owner[d["offset"]: d["offset"] + d["dim"]] = v
        local[d["offset"]: d["offset"] + d["dim"]] = np.arange(d["dim"])
    return [(owner[j], int(local[j])) for j in free_indices(G, sources)]


def relu_edges(G) -> list[tuple[str, int]]:
    """``(edge name, gate length)`` of every edge with a ReLU gate."""
    return [(name, int(d["dim"])) for _, _, name, d in edges(G)
            if isinstance(d["src_map"], ReluGate) or isinstance(d["dst_map"], ReluGate)]


def _has_nonlinear(G) -> bool:
    return any(isinstance(d["src_map"], Nonlinear) or isinstance(d["dst_map"], Nonlinear) for *_, d in edges(G))


def estimated_seconds(G, n_samples: int, *, variants=tuple(VARIANTS), dense_cutoff: int = DENSE_CUTOFF) -> float:
    """A cost model of :func:`spectrum` over ``n_samples`` states: per sample and variant a fixed
    overhead plus n³/FLOPS for a dense eigvalsh of the n free coordinates (n·nnz-ish for sparse)."""
    if not is_state_dependent(G):
        n_samples = 1
    total = 0.0
    for v in variants:
        n = len(free_indices(G, VARIANTS[v]))
        work = n ** 3 / FLOPS if n <= dense_cutoff else 2e-5 * n  # sparse: a factorisation and ~100 solves
        total += n_samples * (SAMPLE_OVERHEAD_S + work)
    return total


def require_budget(G, n_samples: int, *, dense_cutoff: int = DENSE_CUTOFF, budget_s: float = BUDGET_S) -> None:
    """E541 before any work when the spectra of ``n_samples`` states would take longer than ``budget_s``
    (or their per-sample reports more memory than there is)."""
    from ..resources import require_memory

    est = estimated_seconds(G, n_samples, dense_cutoff=dense_cutoff)
    if est > budget_s:
        fit = max(1, int(n_samples * budget_s / est))
        raise SheafError(Diagnostic("E541", f"{n_samples:,} samples would take about {_duration(est)} of eigenvalue "
                                            f"work (the limit is {_duration(budget_s)}); nothing was computed",
                                    hint=f"use --samples {fit:,} or fewer, or --input to take the spectrum at "
                                         "given examples"))
    require_memory(n_samples * (8.0 * total_dim(G) + 2000.0), f"{n_samples:,} sampled spectra",
                   hint="use fewer --samples")


def _duration(s: float) -> str:
    for unit, k in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if s >= 2 * k:
            return f"{s / k:,.0f} {unit}"
    return f"{s:,.0f} s"


def sample_states(G, n: int, rng: np.random.Generator) -> list[tuple[np.ndarray | None, dict]]:
    """``n`` random (state, gates): fair-coin 0/1 gates on every ReLU unit; state ~ N(0, I) when some map is
    nonlinear (its linearisation point), else None. A state-independent sheaf gives one (None, {})."""
    if not is_state_dependent(G):
        return [(None, {})]
    relus, nonlin, N = relu_edges(G), _has_nonlinear(G), total_dim(G)
    out = []
    for _ in range(n):
        gates = {e: rng.integers(0, 2, size=d).astype(float) for e, d in relus}
        out.append((rng.standard_normal(N) if nonlin else None, gates))
    return out


@dataclass
class SpectrumReport:
    """Per-sample extremes for each variant, and the worst case over the samples.

    ``worst[variant]`` holds min_i λ_min, max_i λ_max, the worst κ (max_i κ_i; inf when any sample is
    singular), whether any sample is singular, the index of the sample with the worst κ, and that sample's
    kernel.
    """

    mode: str  # "samples" | "inputs" | "fixed" (state-independent)
    samples: list[dict]  # per sample: variant -> Extremes
    worst: dict
    state_dependent: bool
    warning: str | None = None  # e.g. some harmonic extensions did not converge
    vectors: list | None = None  # per sample: ExtremeVectors of the training variant (``vectors=True``)

    def to_json(self) -> dict:
        t = self.worst["training"]
        out = {
            "variant": "training",
            "lambda_min": t["lambda_min"], "lambda_max": t["lambda_max"], "kappa": _finite(t["kappa"]),
            "singular": t["singular"], "free_dim": t["free_dim"],
            "variants": {k: {**w, "kappa": _finite(w["kappa"])} for k, w in self.worst.items()},
            "mode": self.mode, "n_samples": len(self.samples), "state_dependent": self.state_dependent,
            "samples": [{k: e.to_json() for k, e in s.items()} for s in self.samples],
        }
        if self.warning:
            out["warning"] = self.warning
        if self.vectors is not None:
            out["vectors"] = vectors_json(self.vectors)
        return out


def _finite(x):
    return None if x is None or math.isinf(x) else x


def spectrum(G, params: dict, states, *, variants=tuple(VARIANTS), dense_cutoff: int = DENSE_CUTOFF,
             mode: str = "samples", vectors: bool = False) -> SpectrumReport:
    """The extremes of L_free for each (state, gates) in ``states`` and each variant, and the worst case;
    with ``vectors``, also each state's :func:`extreme_vectors` (training variant) in ``report.vectors``.

    Example: the paraboloid network's L_free is positive definite for every sampled pattern
    (δ_Ω is unitriangular), so no sample is singular.

    >>> from sheafdsl.frontend import load_text
    >>> from sheafdsl.ir import from_model
    >>> from sheafdsl.lowering import init_params
    >>> G = from_model(load_text("sheaf t\\nnetwork n : 2 -> 5 -> 1\\n"))
    >>> r = spectrum(G, init_params(G, 0), sample_states(G, 8, np.random.default_rng(0)))
    >>> r.worst["training"]["singular"], r.worst["training"]["lambda_min"] > 0, len(r.samples)
    (False, True, 8)
    """
    samples = sample_extremes(G, params, states, variants=variants, dense_cutoff=dense_cutoff)
    vecs = [extreme_vectors(G, params, state, gates, dense_cutoff=dense_cutoff) for state, gates in states] \
        if vectors else None
    return summarise(G, samples, variants=variants, mode=mode, vectors=vecs)


def sample_extremes(G, params: dict, states, *, variants=tuple(VARIANTS), dense_cutoff: int = DENSE_CUTOFF) -> list:
    """Per (state, gates) of ``states``: variant -> :class:`Extremes` of its L_free (each sample on its own,
    so a list of states can be cut anywhere and the pieces computed apart: ``sheaf spectrum --workers``)."""
    labels = {v: free_labels(G, VARIANTS[v]) for v in variants}
    frees = {v: free_indices(G, VARIANTS[v]) for v in variants}
    samples = []
    W = sp.diags(edge_weight_vector(G))
    for state, gates in states:
        A = (W @ coboundary_matrix(G, params, state=state, gates=gates)).tocsc()
        row = {}
        for v in variants:
            row[v] = gram_extremes(A[:, frees[v]], dense_cutoff=dense_cutoff, labels=labels[v])
        samples.append(row)
    return samples


def summarise(G, samples: list, *, variants=tuple(VARIANTS), mode: str = "samples", vectors=None) -> SpectrumReport:
    """The report of per-sample extremes (:func:`sample_extremes`): the worst case of each variant
    (``vectors``: the states' :func:`extreme_vectors`, or None)."""
    worst = {}
    for v in variants:
        ex = [s[v] for s in samples]
        if not ex or ex[0].n == 0:
            worst[v] = {"free_dim": ex[0].n if ex else 0, "lambda_min": None, "lambda_max": None, "kappa": None,
                        "singular": False, "worst_sample": None, "kernel": {}, "nullity": 0,
                        "method": ex[0].method if ex else "empty"}
            continue
        k = int(np.argmax([e.kappa for e in ex]))
        worst[v] = {"free_dim": ex[0].n, "lambda_min": min(e.lambda_min for e in ex),
                    "lambda_max": max(e.lambda_max for e in ex), "kappa": ex[k].kappa,
                    "singular": any(e.singular for e in ex),
                    "singular_samples": sum(e.singular for e in ex), "worst_sample": k,
                    "kernel": ex[k].kernel, "nullity": ex[k].nullity, "tol": ex[k].tol, "method": ex[k].method}
    return SpectrumReport(mode, samples, worst, is_state_dependent(G), vectors=vectors)


def states_at(result, index: int | None = None) -> list[tuple[np.ndarray, dict]]:
    """(state, gates) of each example of a :class:`~sheafdsl.solvers.SolveResult` (gates as the solver found
    them: 0/1, or a Filippov multiplier in [0, 1] at a sliding unit)."""
    from ..lowering import to_numpy

    C = to_numpy(result.cochain)
    gates = {e: to_numpy(g) for e, g in result.gates.items()}
    rows = range(C.shape[0]) if index is None else [index]
    return [(C[i], {e: g[i] for e, g in gates.items()}) for i in rows]


# ------------------------------------------------------------------------------------------------
# the extreme eigenvectors and where their energy sits (`sheaf spectrum --vectors`, the paper's Fig 4)

#: the convention of which stalks are free, per variant, in words (printed and documented)
CONVENTION = {
    "training": "the input and target stalks (and constant pins) are pinned, every other stalk is free: for a "
                "network the hidden stalks z_l, a_l and the output pre-activation z_L (the paper's L_free, the "
                "fast phase of training)",
    "inference": "the input stalks (and constant pins) are pinned; the target stalk is free (the system of "
                 "`sheaf infer`)",
}


@dataclass
class ExtremeVectors:
    """The eigenpairs of λ_min and λ_max of one L_free (``variant``'s pins hard), and their energy per block.

    ``v_min`` (the Fiedler vector of L_free: the eigenvector of its smallest eigenvalue, L_free being the
    Laplacian with the pinned vertices removed) and ``v_max`` are unit (n,) vectors over the free
    coordinates ``labels`` (``(stalk, local index)``), each with its largest entry positive. ``blocks``:
    free stalk -> (fraction of ‖v_min‖², fraction of ‖v_max‖²) on that stalk's block of L_free (each sums
    to 1 over the stalks); ``layers``: the same summed by layer (:func:`sheafdsl.ir.layers`: zℓ and aℓ are
    layer ℓ); None where the graph has cycles.
    """

    variant: str
    lambda_min: float | None
    lambda_max: float | None
    v_min: np.ndarray
    v_max: np.ndarray
    labels: list
    blocks: dict
    layers: dict | None
    method: str

    def by_stalk(self, v: np.ndarray) -> dict:
        """A vector over the free coordinates, split into its stalks: stalk -> (d,) array."""
        out: dict = {}
        for (stalk, _), x in zip(self.labels, v):
            out.setdefault(stalk, []).append(float(x))
        return {k: np.asarray(x) for k, x in out.items()}

    def to_json(self, vectors: bool = True) -> dict:
        out = {"variant": self.variant, "lambda_min": self.lambda_min, "lambda_max": self.lambda_max,
               "blocks": {k: {"min": a, "max": b} for k, (a, b) in self.blocks.items()},
               "layers": None if self.layers is None else {str(k): {"min": a, "max": b}
                                                           for k, (a, b) in self.layers.items()},
               "method": self.method}
        if vectors:
            out["v_min"] = {k: x.tolist() for k, x in self.by_stalk(self.v_min).items()}
            out["v_max"] = {k: x.tolist() for k, x in self.by_stalk(self.v_max).items()}
        return out


def _signed(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=float).ravel()
    v = v / max(float(np.linalg.norm(v)), 1e-300)
    return -v if v.size and v[int(np.argmax(np.abs(v)))] < 0 else v


def extreme_vectors(G, params: dict, state=None, gates=None, *, variant: str = "training",
                    dense_cutoff: int = DENSE_CUTOFF) -> ExtremeVectors:
    """λ_min and λ_max of L_free = δ_Ωᵀ W² δ_Ω at one state (``state``, ``gates`` as in
    :func:`restricted_laplacian`) with their eigenvectors, and the fraction of each vector's energy Σ_{i∈b} v_i²
    in each free stalk's block b and in each layer (see :class:`ExtremeVectors`). Dense ``eigh`` up to
    ``dense_cutoff`` free coordinates; above it ``eigsh`` (λ_max by Lanczos, λ_min by shift-invert about
    σ = −10⁻³ λ_max).

    >>> from sheafdsl.frontend import load_text
    >>> from sheafdsl.ir import from_model
    >>> from sheafdsl.lowering import init_params
    >>> G = from_model(load_text("sheaf t\\nnetwork n : 2 -> 3 -> 1\\n"))
    >>> ev = extreme_vectors(G, init_params(G, 0), gates={"act1": np.ones(3)})
    >>> sorted(ev.blocks), round(sum(a for a, _ in ev.blocks.values()), 12), sorted(ev.layers)
    (['a1', 'z1', 'z2'], 1.0, [1, 2])
    """
    sources = VARIANTS[variant]
    labels = free_labels(G, sources)
    L = restricted_laplacian(G, params, sources, state=state, gates=gates)
    n = L.shape[0]
    if n == 0:
        return ExtremeVectors(variant, None, None, np.zeros(0), np.zeros(0), [], {}, {}, "empty")
    if not np.all(np.isfinite(L.data)):
        raise _overflow(L.data)
    if n <= max(dense_cutoff, 2):
        w, V = scipy.linalg.eigh(L.toarray())
        lo, hi, v_lo, v_hi, method = float(w[0]), float(w[-1]), V[:, 0], V[:, -1], "dense eigh"
    else:
        A = sp.csc_matrix(L, dtype=float)
        try:
            mu, Vh = spla.eigsh(A, k=1, which="LA", maxiter=SPARSE_MAXITER)
            hi = float(mu[0])
            m, Vl = spla.eigsh(A, k=1, sigma=-SHIFT * hi if hi > 0 else -1.0, which="LM", maxiter=SPARSE_MAXITER)
        except (spla.ArpackNoConvergence, spla.ArpackError) as exc:
            raise SheafError(Diagnostic("E532", f"the sparse eigensolver (eigsh) failed on the {n} x {n} L_free: {exc}",
                                        hint=f"use the dense solver: --dense-cutoff {n}")) from None
        lo, v_lo, v_hi, method = max(float(m[0]), 0.0), Vl[:, 0], Vh[:, 0], "sparse eigsh"
    v_lo, v_hi = _signed(v_lo), _signed(v_hi)
    owner = np.array([s for s, _ in labels], dtype=object)
    blocks = {}
    for stalk in dict.fromkeys(owner):
        sel = owner == stalk
        blocks[stalk] = (float(np.sum(v_lo[sel] ** 2)), float(np.sum(v_hi[sel] ** 2)))
    _, depth = layers(G)
    by_layer = None
    if all(depth[s] is not None for s in blocks):
        by_layer = {}
        for stalk, (a, b) in blocks.items():
            x = by_layer.setdefault(depth[stalk], [0.0, 0.0])
            x[0] += a
            x[1] += b
        by_layer = {k: tuple(by_layer[k]) for k in sorted(by_layer)}
    return ExtremeVectors(variant, lo, hi, v_lo, v_hi, labels, blocks, by_layer, method)


#: up to this many samples, ``--vectors``' JSON holds the eigenvectors themselves (above: only their fractions)
VECTOR_ROWS = 10


def mean_fractions(vecs: list) -> dict:
    """The mean over samples of each block's and layer's energy fractions: ``{"blocks": {stalk: {"min", "max"}},
    "layers": {layer: {"min", "max"}} or None}``."""
    def mean(key):
        if not vecs or any(getattr(v, key) is None for v in vecs):
            return None
        names = list(getattr(vecs[0], key))
        return {str(k) if key == "layers" else k: {"min": float(np.mean([getattr(v, key)[k][0] for v in vecs])),
                                                   "max": float(np.mean([getattr(v, key)[k][1] for v in vecs]))}
                for k in names}

    return {"blocks": mean("blocks") or {}, "layers": mean("layers")}


def vectors_json(vecs: list) -> dict:
    """``--vectors``' JSON: the convention, the free and pinned stalks, the mean fractions, and per sample
    λ_min, λ_max, the fractions (and, for at most :data:`VECTOR_ROWS` samples, the vectors by stalk)."""
    variant = vecs[0].variant if vecs else "training"
    free = list(dict.fromkeys(s for s, _ in vecs[0].labels)) if vecs else []
    return {"variant": variant, "convention": CONVENTION[variant], "free_stalks": free,
            "mean": mean_fractions(vecs),
            "samples": [v.to_json(vectors=len(vecs) <= VECTOR_ROWS) for v in vecs]}
