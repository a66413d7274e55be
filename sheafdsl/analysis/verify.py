r"""``sheaf verify``: certificates for the structural claims of a sheaf model, each proved, checked or refuted.

A claim's **status** is one of

- ``proved``: symbolic, for every weight and every activation pattern (every parameter entry is a sympy
  symbol, every ReLU unit a gate symbol g ∈ {0, 1}, every sigmoid/softmax an opaque Jacobian block), or exact
  over ℚ for a sheaf whose maps are rational constants;
- ``checked``: numeric, over stated samples (random weights and all, or sampled, activation patterns);
- ``failed``: false, with a witness;
- ``skipped``: does not apply to this model, with the reason.

The claims (boundaries: *inference* pins input and constants, a target stalk is free; the *boundary* of the
report, training by default, pins input, target and constants):

``coboundary_unitriangular`` (inference)
    δ_Ω is square and, in some ordering of its edge rows and free columns, lower unitriangular, so
    det δ_Ω = 1 identically. Certificate: singleton-row elimination (:mod:`.certificates`), each step a
    Laplace expansion along a row whose only remaining entry is identically 1; sympy then recomputes the
    determinant of the reordered matrix (Berkowitz) and expands it to 1.
``laplacian_positive_definite`` (boundary)
    L_free = δ_Ωᵀ W² δ_Ω ≻ 0. If δ_Ω = T is unitriangular in the reported order, L_free = Tᵀ W² T is an LDLᵀ
    factorisation (of the reversed order) with unit triangular factor and positive pivots w_e², and by
    Cauchy–Binet det L_free = det(δ_Ω)² Π_e w_e^{2 d_e} = Π_e w_e^{2 d_e} > 0. If δ_Ω is tall (a skip edge,
    or the training pin on the output), a square triangular block with constant nonzero diagonal shows δ_Ω
    injective, so xᵀ L_free x = ‖W δ_Ω x‖² > 0 for x ≠ 0 (Cauchy–Binet: det L_free ≥ det(W_B B)² > 0).
``relative_cohomology_vanishes`` (boundary)
    H⁰(G, U; F) = ker δ_Ω = 0: the harmonic extension is unique. A failure names a kernel vector and the
    stalks (and coordinates) it lives on.
``forward_pass_is_harmonic_extension`` (inference)
    With only the input pinned, the harmonic extension is the forward pass. If δ_Ω is unitriangular, the
    zero-discord equations δc = o are solved uniquely by substitution in the reported order, which *is* the
    forward pass (each pivot row says c_v = F_src(c_u) + b with u earlier; a ReLU or sigmoid/softmax is
    evaluated, not linearised); E ≥ 0 vanishes there and only there, so it is the unique minimiser. A
    numeric spot check at random inputs compares it with an independent least-squares solve.
``cohomology``
    h⁰ = dim ker δ, h¹ = dim coker δ, relative h⁰: exact over ℚ when every map is a rational constant
    (``proved``), numeric with a stated tolerance otherwise (``checked``), ``skipped`` when affine offsets or
    state-dependent maps leave H⁰ and H¹ undefined.

**Consensus problems** (objectives and hard edges; docs/admm.md) get their own claims instead of the four
above (then ``cohomology``): ``objectives_convex`` (each Q ⪰ 0, LDLᵀ over ℚ), ``constraints_feasible``
(Rouché–Capelli over ℚ for the hard edges, hard pins and simplex sums; an exact phase-1 simplex for the
indicator bounds; a witness y with yᵀA = 0, yᵀr ≠ 0, or a Farkas certificate), ``strictly_convex``
(ZᵀHZ ≻ 0 on Z = ker A, decided as full column rank of [Q; W δ_S; A]) and ``minimiser_unique`` (from the two,
or refuted by a flat direction that no indicator or l1 term stops).

**Limits.** The symbolic certificates run when the free dimension (the larger of the inference and the
report's boundary) is at most ``symbolic_limit`` (default 512: a [64, 128, 128, 10] network, 532 free
coordinates, proves in about 3 s). Past it every claim falls back to ``checked``: the model's
parameters plus ``weight_draws`` draws of N(0, 1) weights, times every activation pattern when there are at
most log₂(``samples``) ReLU units, else ``samples`` random patterns (including all-on and all-off); nonlinear
maps are linearised at c ~ N(0, I). The minimum eigenvalue of L_free seen is reported.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ..errors import Diagnostic, SheafError
from ..ir import edges, free_indices, is_consensus, param_specs, pinned_stalks, stalks, total_dim, vertex_slice
from ..ir.maps import Identity, Nonlinear, ReluGate
from ..lowering import check_shapes, coboundary_matrix, edge_weight_vector, init_params, offset_vector
from ..lowering.maps import apply as apply_restriction
from ..nonlinearities import TABLE as NONLINEARITIES
from .certificates import berkowitz_det, eliminate, numeric_rows, restrict_columns, symbolic_coboundary
from .spectrum import gram_extremes
from .cohomology import (EXACT_INITS, INFERENCE, TRAINING, cohomology, kernel_witness, to_rational,
                         undefined_reason)

STATUSES = ("proved", "checked", "failed", "skipped")
CLAIMS = ("coboundary_unitriangular", "laplacian_positive_definite", "relative_cohomology_vanishes",
          "forward_pass_is_harmonic_extension", "cohomology")
#: default bound on the free dimension handled symbolically
DEFAULT_SYMBOLIC_LIMIT = 512
#: default number of activation patterns sampled when they are too many to enumerate
DEFAULT_SAMPLES = 256
#: random weight draws (besides the model's own parameters) in the numeric checks
DEFAULT_WEIGHT_DRAWS = 2
#: above this free dimension the dense numeric checks refuse (E651)
DENSE_LIMIT = 4000
#: random inputs of the forward-pass spot check
SPOT_INPUTS = 4
#: the spot check's second opinion (an active-set solve from c = 0) runs up to this free dimension
SOLVER_SPOT_LIMIT = 64
#: sympy's Berkowitz determinant re-check runs up to this size; above it sympy checks the reordered matrix
#: entry by entry (zero above the diagonal, ones on it), which is the same theorem without the O(n⁴) work
BERKOWITZ_LIMIT = 96


@dataclass
class Claim:
    """One claim's verdict. ``witness`` (failures) and ``ordering`` (triangular certificates) are optional."""

    name: str
    status: str
    method: str
    detail: str
    witness: dict | None = None
    ordering: dict | None = None

    def to_json(self) -> dict:
        out = {"name": self.name, "status": self.status, "method": self.method, "detail": self.detail}
        if self.witness is not None:
            out["witness"] = self.witness
        if self.ordering is not None:
            out["ordering"] = self.ordering
        return out


@dataclass
class VerifyReport:
    """Everything ``sheaf verify`` prints: h⁰, h¹ (None when undefined), relative h⁰ and the claims."""

    sheaf: str
    h0: int | None
    h1: int | None
    relative_h0: int
    claims: list
    boundary: tuple
    symbolic_limit: int
    elapsed_s: float = 0.0

    @property
    def failed(self) -> bool:
        return any(c.status == "failed" for c in self.claims)

    def claim(self, name: str) -> Claim:
        return next(c for c in self.claims if c.name == name)

    def to_json(self) -> dict:
        return {"h0": self.h0, "h1": self.h1, "relative_h0": self.relative_h0,
                "claims": [c.to_json() for c in self.claims], "sheaf": self.sheaf, "boundary": list(self.boundary),
                "symbolic_limit": self.symbolic_limit, "elapsed_s": round(self.elapsed_s, 3)}


# ----------------------------------------------------------------------------------------------
# samples for the numeric checks


@dataclass
class _Sample:
    label: str
    params: dict
    gates: dict
    state: np.ndarray | None


def _relu_units(G) -> list[tuple[str, int]]:
    return [(name, d["dim"]) for _, _, name, d in edges(G)
            if isinstance(d["src_map"], ReluGate) or isinstance(d["dst_map"], ReluGate)]


def _has_nonlinear(G) -> bool:
    return any(isinstance(d["src_map"], Nonlinear) or isinstance(d["dst_map"], Nonlinear) for *_, d in edges(G))


def random_params(G, rng) -> dict:
    """Every parameter entry drawn from N(0, 1)."""
    return {p: rng.standard_normal(s.shape) for p, s in param_specs(G).items()}


def _patterns(G, samples: int, rng) -> tuple[list[dict], str]:
    units = _relu_units(G)
    k = sum(d for _, d in units)
    if k == 0:
        return [{}], "no activation patterns (no ReLU gate)"

    def split(bits):
        out, i = {}, 0
        for name, d in units:
            out[name] = np.asarray(bits[i:i + d], dtype=float)
            i += d
        return out

    if 2 ** k <= samples:
        return [split(b) for b in itertools.product((1.0, 0.0), repeat=k)], f"all 2^{k} = {2 ** k} activation patterns"
    pats = [split(np.ones(k)), split(np.zeros(k))]
    pats += [split(rng.integers(0, 2, size=k)) for _ in range(max(samples - 2, 0))]
    return pats, f"{len(pats)} of the 2^{k} activation patterns (all-on, all-off and random)"


def build_samples(G, params, *, samples=DEFAULT_SAMPLES, weight_draws=DEFAULT_WEIGHT_DRAWS, seed=0):
    """(samples, description): the model's parameters and ``weight_draws`` N(0, 1) draws, times the
    activation patterns; a random linearisation point c ~ N(0, I) per sample when some map is nonlinear."""
    rng = np.random.default_rng([seed, 4])
    weights = [("the model's parameters", params)]
    if param_specs(G):
        weights += [(f"random weights #{k + 1}", random_params(G, rng)) for k in range(weight_draws)]
    pats, pdesc = _patterns(G, samples, rng)
    nonlin, N = _has_nonlinear(G), total_dim(G)
    out = []
    for wl, P in weights:
        for i, g in enumerate(pats):
            state = rng.standard_normal(N) if nonlin else None
            out.append(_Sample(f"{wl}, pattern {i}", P, g, state))
    wdesc = (f"{len(weights)} weight sets (the model's parameters and {len(weights) - 1} N(0, 1) draws)"
             if len(weights) > 1 else "the model's parameters (it has none)")
    desc = f"{wdesc} × {pdesc}" + ("; nonlinear maps linearised at c ~ N(0, I)" if nonlin else "")
    return out, desc


def _gates_json(g: dict) -> dict:
    return {e: [int(x) for x in v] for e, v in g.items()}


# ----------------------------------------------------------------------------------------------
# context


class _Ctx:
    def __init__(self, G, params, sources, symbolic_limit, samples, weight_draws, seed):
        self.G, self.params, self.seed = G, params, seed
        self.sources = tuple(sources)
        self.inf = tuple(s for s in self.sources if s != "target") or INFERENCE
        self.symbolic_limit = symbolic_limit
        self.n_inf = len(free_indices(G, self.inf))
        self.n_b = len(free_indices(G, self.sources))
        self.symbolic = max(self.n_inf, self.n_b) <= symbolic_limit
        self._sym: dict = {}
        self._samples = None
        self._numeric = None
        self.samples_n, self.weight_draws = samples, weight_draws
        self.w = edge_weight_vector(G)

    def sym(self, sources):
        key = tuple(sources)
        if key not in self._sym:
            base = self._sym.get(self.inf)
            if key != self.inf and base is not None and set(free_indices(self.G, key)) <= set(free_indices(self.G, self.inf)):
                S = restrict_columns(base[0], _labels(self.G, key))  # more pins: a column subset
            else:
                S = symbolic_coboundary(self.G, key)
            self._sym[key] = (S, eliminate(S.rows, S.shape[1]))
        return self._sym[key]

    def samples(self):
        if self._samples is None:
            self._samples = build_samples(self.G, self.params, samples=self.samples_n,
                                          weight_draws=self.weight_draws, seed=self.seed)
        return self._samples

    def numeric(self) -> dict:
        """One pass over the samples: the unitriangular ordering check (inference columns) and the spectrum of
        L_free (the report's boundary), each δ assembled once per sample."""
        if self._numeric is None:
            self._numeric = _numeric_pass(self)
        return self._numeric

    def delta_free(self, sample: _Sample, sources):
        D = coboundary_matrix(self.G, sample.params, state=sample.state, gates=sample.gates).toarray()
        return D[:, free_indices(self.G, sources)]


def _labels(G, sources):
    owner = []
    for v in stalks(G):
        owner.extend((v, i) for i in range(G.nodes[v]["dim"]))
    return [owner[j] for j in free_indices(G, sources)]


def _group(labels) -> dict:
    out: dict = {}
    for s, i in labels:
        out.setdefault(s, []).append(int(i))
    return out


def _nonlinear_scope(G, hessian: bool = False) -> str:
    """What a proof over opaque Jacobian symbols means for the model's nonlinear maps (registry bounds on
    φ'), or '' when it has none; with ``hessian``, what the Laplacian claim does not cover."""
    fns = {}
    for *_, d in edges(G):
        for m in (d["src_map"], d["dst_map"]):
            if isinstance(m, Nonlinear):
                fns.setdefault(m.fn if m.arg is None else f"{m.fn} {m.arg:g}", NONLINEARITIES[m.fn].dphi_bounds(m.arg))
    if not fns:
        return ""
    ranges = ", ".join(f"{f}: φ' ∈ [{lo:.3g}, {hi:.3g}]" if NONLINEARITIES[f.split()[0]].kind != "joint"
                       else f"{f}: Dφ = diag(p) − ppᵀ" for f, (lo, hi) in fns.items())
    text = (f". The Jacobian symbols stand for Dφ(c) of the nonlinear maps ({ranges}) and are free: the "
            "statement holds for the coboundary linearised at every state c (the Jacobian of the nonlinear "
            "coboundary), whatever the values φ'(c) take")
    if hessian:
        text += (". L_free here is δ(c)ᵀW²δ(c), the Gauss-Newton matrix of the energy at c; the Hessian of the "
                 "non-convex energy adds Σ_e w_e² r_e φ''(c) terms and is not claimed positive definite (training "
                 "solves the two-sided equilibrium numerically and reports its consistent fraction)")
    return text


def _symbols_phrase(S) -> str:
    parts = [f"{len(S.weights)} weight symbols"]
    if S.gates:
        parts.append(f"{len(S.gates)} gate symbols g ∈ {{0, 1}}")
    if S.jacobians:
        parts.append(f"{len(S.jacobians)} Jacobian symbols (nonlinear maps, opaque)")
    return ", ".join(parts)


def _ordering(S, e) -> dict:
    rows, cols = e.coordinate_order(S)
    return {"blocks": e.vertex_order(S), "rows": rows, "columns": cols}


# ----------------------------------------------------------------------------------------------
# numeric scans


def _edge_row_labels(G) -> list:
    return [(name, i) for _, _, name, d in edges(G) for i in range(d["dim"])]


#: free dimensions above this are scanned with the sparse eigensolver (a dense SVD per sample is O(n³))
NUMERIC_DENSE_LIMIT = 1000
#: the sparse scan visits at most NUMERIC_BUDGET / n samples (at least NUMERIC_MIN_SAMPLES), evenly spaced
NUMERIC_BUDGET, NUMERIC_MIN_SAMPLES = 48_000.0, 8


def _sparse_kernel(L, ext):
    """One kernel vector of a sparse PSD L (shift-invert about a small negative shift), as an (n, 1) array."""
    import scipy.sparse.linalg as spla

    sigma = -1e-3 * ext.lambda_max if ext.lambda_max and ext.lambda_max > 0 else -1.0
    _, V = spla.eigsh(L.tocsc(), k=1, sigma=sigma, which="LM")
    return V


def _numeric_pass(ctx) -> dict:
    G = ctx.G
    samples, desc = ctx.samples()
    free_inf, free_b = free_indices(G, ctx.inf), free_indices(G, ctx.sources)
    unitri = {"failure": None, "witness": None, "blocks": None}
    order = None
    if pinned_stalks(G, "input") and len(free_inf):
        generic = next((s for s in samples if s.label.startswith("random")), samples[0])
        D = coboundary_matrix(G, generic.params, state=generic.state, gates=generic.gates).toarray()[:, free_inf]
        nz = [r for r in range(D.shape[0]) if np.any(D[r])]
        e = eliminate(numeric_rows(D[nz]), len(free_inf))
        rl, cl = _edge_row_labels(G), _labels(G, ctx.inf)
        if len(nz) != len(free_inf) or not e.triangular or any(x != 1.0 for *_, x in e.pivots):
            unitri["failure"] = (f"at {generic.label}, δ_Ω (input pinned, target free) has {len(nz)} nonzero rows and "
                                 f"{len(free_inf)} free columns and no unit triangular ordering")
            unitri["witness"] = {"shape": [len(nz), len(free_inf)], "at": generic.label}
            if e.extra_rows:
                unitri["witness"]["extra_rows"] = _group([rl[nz[r]] for r in e.extra_rows])
        else:
            order = ([nz[r] for r in e.row_order], [int(free_inf[c]) for c in e.col_order])
            blocks = []
            for r, c, _ in e.pivots:
                item = f"{rl[nz[r]][0]} -> {cl[c][0]}"
                if not blocks or blocks[-1] != item:
                    blocks.append(item)
            unitri["blocks"] = blocks
    labels = _labels(G, ctx.sources)
    lam_min, lam_max = np.inf, 0.0
    singular, first = 0, None
    large = len(free_b) > NUMERIC_DENSE_LIMIT
    if large:  # past the dense limit: sparse spectra, on as many samples as the cost budget allows
        cap = max(NUMERIC_MIN_SAMPLES, int(NUMERIC_BUDGET // max(len(free_b), 1)))
        if cap < len(samples):
            idx = np.linspace(0, len(samples) - 1, cap).round().astype(int)
            samples = [samples[i] for i in sorted(set(idx.tolist()))]
            desc += (f"; {len(samples)} of them scanned (free dimension {len(free_b)} > {NUMERIC_DENSE_LIMIT}: "
                     "sparse eigensolver, evenly spaced samples)")
    for s in samples:
        if large:
            Ds = coboundary_matrix(G, s.params, state=s.state, gates=s.gates).tocsr()
            if order is not None and unitri["failure"] is None:
                T = Ds[order[0]][:, order[1]]
                if sp.triu(T, 1).count_nonzero() or np.any(T.diagonal() != 1.0):
                    unitri["failure"] = f"at {s.label} the ordering found at a generic sample is not unitriangular"
                    unitri["witness"] = {"at": s.label, "gates": _gates_json(s.gates)}
            A = sp.diags(ctx.w) @ Ds[:, free_b]
            ext = gram_extremes(A, dense_cutoff=0)
            lam_min = min(lam_min, float(ext.lambda_min))
            lam_max = max(lam_max, float(ext.lambda_max))
            if ext.singular:
                singular += 1
                if first is None:
                    K = _sparse_kernel(A.T @ A, ext)
                    first = (s, K, ext.tol, int(K.shape[1]))
            continue
        D = coboundary_matrix(G, s.params, state=s.state, gates=s.gates).toarray()
        if order is not None and unitri["failure"] is None:
            T = D[np.ix_(order[0], order[1])]
            if np.any(np.triu(T, 1)) or np.any(np.diag(T) != 1.0):
                unitri["failure"] = f"at {s.label} the ordering found at a generic sample is not unitriangular"
                unitri["witness"] = {"at": s.label, "gates": _gates_json(s.gates)}
        A = ctx.w[:, None] * D[:, free_b]
        n = A.shape[1]
        if n == 0:
            continue
        sv = np.linalg.svd(A, compute_uv=False)  # singular values only; vectors only for a witness
        smax = float(sv[0]) if sv.size else 0.0
        tol = max(A.shape) * np.finfo(float).eps * smax
        rank = int(np.sum(sv > tol))
        lam_min = min(lam_min, float(sv[-1] ** 2) if sv.size == n else 0.0)
        lam_max = max(lam_max, smax ** 2)
        if rank < n:
            singular += 1
            if first is None:
                Vt = np.linalg.svd(A, full_matrices=True)[2]
                first = (s, Vt[rank:].T, tol ** 2, n - rank)
    return {"unitri": unitri, "n": len(samples), "desc": desc,
            "scan": {"lambda_min": lam_min, "lambda_max": lam_max, "n": len(samples), "singular": singular,
                     "first": first, "desc": desc, "labels": labels}}


def _scan(ctx) -> dict:
    """λ_min(L_free) over the samples at the report's boundary: min, singular samples and the first kernel."""
    return ctx.numeric()["scan"]


def _numeric_witness(first, labels) -> dict:
    s, K, tol, nullity = first
    w = kernel_witness(K[:, 0], labels)
    w.update({"nullity": int(nullity), "at": s.label, "tolerance": tol})
    if s.gates:
        w["gates"] = _gates_json(s.gates)
    return w


# ----------------------------------------------------------------------------------------------
# claims


def _zero_column_witness(S, cols) -> dict:
    labels = [S.col_labels[c] for c in cols]
    vec = {}
    for s, _ in labels:
        vec.setdefault(s, []).append(1.0)
    return {"stalks": list(vec), "coordinates": _group(labels), "vector": vec, "nullity_at_least": len(cols),
            "valid_for": "every weight and every activation pattern (these columns of δ_Ω are identically zero)"}


def _rows_by_edge(S, rows) -> dict:
    return _group([S.row_labels[r] for r in rows])


def claim_unitriangular(ctx) -> Claim:
    name, G = "coboundary_unitriangular", ctx.G
    if not pinned_stalks(G, "input"):
        return Claim(name, "skipped", "not applicable",
                     "no stalk is pinned to input: the claim concerns a feedforward network whose boundary is its "
                     "input (a target stalk free)")
    if ctx.n_inf == 0:
        return Claim(name, "skipped", "not applicable", "every coordinate is pinned: δ_Ω is empty")
    if ctx.symbolic:
        S, e = ctx.sym(ctx.inf)
        m, n = S.shape
        sym = _symbols_phrase(S)
        if e.square_unit:
            if n <= BERKOWITZ_LIMIT:
                det = berkowitz_det(S, e)
                how = "sympy's Berkowitz determinant of the reordered matrix expands to 1"
            else:
                T = S.matrix(e.row_order, e.col_order)
                det = 1 if (T.is_lower and all(T[i, i] == 1 for i in range(n))) else "not unit lower triangular"
                how = ("sympy confirms the reordered matrix is lower triangular with ones on the diagonal; the "
                       f"Berkowitz re-check runs up to size {BERKOWITZ_LIMIT}")
            if det != 1:  # the elimination said unit triangular; sympy disagrees: never hide it
                return Claim(name, "failed", "symbolic (sympy)",
                             f"internal inconsistency: the pivots are all 1 but sympy's determinant is {det}",
                             {"det": str(det)})
            note = f" ({len(S.zero_rows)} edge coordinates among pinned stalks carry no unknown)" if S.zero_rows else ""
            return Claim(name, "proved", "symbolic (sympy): Laplace expansion + Berkowitz det",
                         f"δ_Ω (input pinned, target free) is {m}×{n} over {sym}; in the ordering given it is lower "
                         f"unitriangular, so det δ_Ω = 1 as a polynomial identity ({how}), for every weight and "
                         f"every activation pattern{note}{_nonlinear_scope(ctx.G)}",
                         ordering=_ordering(S, e))
        return _unitriangular_failure(name, S, e, sym, _edges_with_pinned_head(G, ctx.inf))
    # past the symbolic limit: the ordering from one generic sample, checked at every sample
    num = ctx.numeric()
    u = num["unitri"]
    if u["failure"] is not None:
        return Claim(name, "failed", "numeric elimination", u["failure"], u["witness"])
    return Claim(name, "checked", "numeric (past the symbolic limit)",
                 f"free dimension {ctx.n_inf} > symbolic limit {ctx.symbolic_limit}: an ordering found by elimination "
                 f"at one random sample makes δ_Ω lower triangular with ones on the diagonal (so det δ_Ω = 1) at "
                 f"every one of {num['n']} samples: {num['desc']}",
                 ordering={"blocks": u["blocks"]})


def _unitriangular_failure(name, S, e, sym, heads_pinned=()) -> Claim:
    m, n = S.shape
    w: dict = {"shape": [m, n]}
    reasons = []
    if m != n:
        reasons.append(f"δ_Ω (input pinned, target free) is {m}×{n}, not square")
    if e.extra_rows:
        w["extra_rows"] = _rows_by_edge(S, e.extra_rows)
        pinned = [x for x in w["extra_rows"] if x in heads_pinned]
        why = []
        if pinned:
            why.append("the head coordinates of " + ", ".join(f"`{x}`" for x in pinned) + " are pinned")
        if len(pinned) < len(w["extra_rows"]):
            why.append("a head already determined by another edge, as with a skip/residual edge")
        reasons.append("the rows of edge" + "s" * (len(w["extra_rows"]) > 1) + " "
                       + ", ".join(f"`{x}`" for x in w["extra_rows"])
                       + " are left over once every free coordinate has its defining row (more equations than "
                       "unknowns: " + "; ".join(why) + ")")
    if e.uncovered and not e.stuck_rows:
        w["unconstrained"] = _group([S.col_labels[c] for c in e.uncovered])
        reasons.append("no row determines the free coordinates of " + ", ".join(f"`{x}`" for x in w["unconstrained"]))
    if e.stuck_rows:
        w["cycle_edges"] = sorted({S.row_labels[r][0] for r in e.stuck_rows})
        reasons.append("no ordering is triangular: the rows of " + ", ".join(f"`{x}`" for x in w["cycle_edges"])
                       + " each keep two or more unknowns (a cycle)")
    bad = [(r, c, x) for r, c, x in e.pivots if x != 1]
    if bad and not e.stuck_rows:
        w["pivots_not_one"] = [{"row": f"{S.row_labels[r][0]}[{S.row_labels[r][1]}]",
                                "column": f"{S.col_labels[c][0]}[{S.col_labels[c][1]}]", "entry": str(x)}
                               for r, c, x in bad[:20]]
        reasons.append(f"{len(bad)} diagonal entr{'y is' if len(bad) == 1 else 'ies are'} not 1 (e.g. "
                       f"{w['pivots_not_one'][0]['entry']} at {w['pivots_not_one'][0]['row']})")
    return Claim(name, "failed", "symbolic (sympy): triangular elimination",
                 "; ".join(reasons) + f" (over {sym})", w)


@dataclass
class _Injectivity:
    """The shared analysis behind the PD and relative-cohomology claims."""

    status: str
    method: str
    why: str
    nullity: int = 0
    witness: dict | None = None
    lambda_min: float | None = None
    ordering: dict | None = None
    extra: dict = field(default_factory=dict)


def _injectivity(ctx) -> _Injectivity:
    G, sources = ctx.G, ctx.sources
    bname = "/".join(sources) or "nothing"
    if ctx.n_b == 0:
        return _Injectivity("proved", "trivial", "every coordinate is pinned: there is no free coordinate")
    if ctx.symbolic:
        S, e = ctx.sym(sources)
        m, n = S.shape
        if e.triangular and e.constant_pivots:
            prod = 1
            for _, _, x in e.pivots:
                prod *= x
            if e.square_unit:
                why = (f"δ_Ω ({bname} pinned) is {m}×{n} and unitriangular in the given order (T): L_free = Tᵀ W² T "
                       f"is an LDLᵀ factorisation (reversed order) with unit triangular factor and pivots w_e² > 0, "
                       f"and det L_free = det(δ_Ω)² Π w_e^(2 d_e) = Π w_e^(2 d_e) > 0 (Cauchy–Binet)")
            else:
                extra = f"; {len(e.extra_rows)} row(s) of " + ", ".join(f"`{x}`" for x in _rows_by_edge(S, e.extra_rows)) \
                    + " are extra" if e.extra_rows else ""
                why = (f"δ_Ω ({bname} pinned) is {m}×{n}; the {n} pivot rows form a square triangular block B with "
                       f"constant diagonal, det B = ±{prod} ≠ 0 for every weight and activation pattern{extra}. So "
                       f"δ_Ω is injective and xᵀ L_free x = ‖W δ_Ω x‖² > 0 for x ≠ 0; by Cauchy–Binet "
                       f"det L_free ≥ det(W_B B)² > 0")
            return _Injectivity("proved", "symbolic (sympy): triangular elimination",
                                why + f" (over {_symbols_phrase(S)})", 0, ordering=_ordering(S, e),
                                extra={"square_unit": e.square_unit})
        zero_cols = [c for c in range(n) if all(c not in row for row in S.rows)]
        if zero_cols:
            nullity = _nullity_at_model(ctx)
            return _Injectivity("failed", "symbolic (sympy): zero columns of δ_Ω",
                                "no edge constrains the free coordinates of "
                                + ", ".join(f"`{s}`" for s in _group([S.col_labels[c] for c in zero_cols]))
                                + f" ({len(zero_cols)} identically zero columns of δ_Ω, {bname} pinned): any values "
                                "there leave the energy unchanged, for every weight",
                                max(nullity, len(zero_cols)), _zero_column_witness(S, zero_cols))
        if m < n:
            nullity, wit = _kernel_at_model(ctx)
            return _Injectivity("failed", "structural (rank ≤ rows)",
                                f"δ_Ω ({bname} pinned) has {m} nonzero rows and {n} free columns, so rank δ_Ω ≤ {m} "
                                f"< {n} for every weight: dim ker δ_Ω ≥ {n - m}", max(nullity, n - m), wit)
        specs = param_specs(G)
        literal = all(specs[_param_of(x)].init in EXACT_INITS for x in S.weights)
        if not S.gates and not S.jacobians and literal:
            # every entry a rational constant (parameters as written in the file): decide exactly over Q
            rank, basis = _exact_kernel(S, ctx.params)
            at = "" if not S.weights else " at the parameter values written in the file"
            if rank == n:
                return _Injectivity("proved", "exact rational (sympy, over ℚ)",
                                    f"rank δ_Ω = {rank} = {n} free coordinates over ℚ{at}: δ_Ω is injective")
            w = kernel_witness([float(x) for x in basis[0]], S.col_labels, [str(x) for x in basis[0]])
            w["valid_for"] = "exactly" + (at or " (no parameter enters δ_Ω)")
            return _Injectivity("failed", "exact rational (sympy, over ℚ)",
                                f"rank δ_Ω = {rank} < {n} over ℚ{at}: dim ker δ_Ω = {n - rank}", n - rank, w)
    scan = _scan(ctx)
    lead = ("no triangular certificate (the elimination is stuck or a pivot may vanish): " if ctx.symbolic else
            f"free dimension {max(ctx.n_inf, ctx.n_b)} > symbolic limit {ctx.symbolic_limit}: ")
    if scan["singular"]:
        w = _numeric_witness(scan["first"], scan["labels"])
        return _Injectivity("failed", "numeric (SVD)",
                            lead + f"δ_Ω ({bname} pinned) is rank deficient in {scan['singular']} of {scan['n']} "
                            f"samples ({scan['desc']}); the first has dim ker δ_Ω = {w['nullity']}",
                            int(w["nullity"]), w, lambda_min=scan["lambda_min"])
    return _Injectivity("checked", "numeric (SVD)",
                        lead + f"min λ_min(L_free) = {scan['lambda_min']:.6g} > 0 over {scan['n']} samples "
                        f"({scan['desc']})", 0, lambda_min=scan["lambda_min"])


def _param_of(sym) -> str:
    return sym.name.split("[")[0]


def _exact_kernel(S, params):
    """rank and a kernel basis (rational lists) of the symbolic δ_Ω with every weight symbol replaced by its
    parameter's value as written (``to_rational``)."""
    from sympy import QQ
    from sympy.polys.matrices import DomainMatrix

    sub = {}
    for x in S.weights:
        i, j = map(int, x.name.split("[")[1].rstrip("]").split(","))
        a = np.asarray(params[_param_of(x)], dtype=float)
        sub[x] = to_rational(a.reshape(a.shape[0], -1)[i, j])
    rows = {}
    for r, row in enumerate(S.rows):
        q = {c: QQ.convert(e.subs(sub) if sub else e) for c, e in row.items()}
        q = {c: v for c, v in q.items() if v != 0}
        if q:
            rows[r] = q
    D = DomainMatrix(rows, S.shape, QQ)
    rank = D.rank()
    if rank == S.shape[1]:
        return rank, []
    ns = D.to_dense().nullspace().to_Matrix()
    return rank, [[ns[i, j] for j in range(ns.shape[1])] for i in range(ns.shape[0])]


def _kernel_at_model(ctx):
    c = cohomology(ctx.G, ctx.params, sources=ctx.sources, method="auto")
    if not c.relative_h0:
        return 0, None
    w = c.witness()
    w["valid_for"] = "the model's parameters" + (" (exact, over ℚ)" if c.method == "exact-rational" else
                                                 f" (numeric, tolerance {c.tolerance:.3g})")
    return c.relative_h0, w


def _nullity_at_model(ctx) -> int:
    return cohomology(ctx.G, ctx.params, sources=ctx.sources, method="auto").relative_h0


def _model_lambda_min(ctx) -> float | None:
    samples, _ = ctx.samples()
    s = samples[0]
    A = ctx.w[:, None] * ctx.delta_free(s, ctx.sources)
    if A.shape[1] == 0:
        return None
    sv = np.linalg.svd(A, compute_uv=False)
    return float(sv[-1] ** 2) if sv.size == A.shape[1] else 0.0


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:] if s[:1].isascii() else s


def _edges_with_pinned_head(G, sources) -> set:
    """Edges whose head stalk has a pinned coordinate at the boundary ``sources``."""
    pinned = set(np.setdiff1d(np.arange(total_dim(G)), free_indices(G, sources)).tolist())
    out = set()
    for _, v, name, _ in edges(G):
        o = G.nodes[v]["offset"]
        if any(o + i in pinned for i in range(G.nodes[v]["dim"])):
            out.add(name)
    return out


def claim_positive_definite(ctx, inj: _Injectivity) -> Claim:
    name = "laplacian_positive_definite"
    if ctx.n_b == 0:
        return Claim(name, "skipped", "not applicable", "every coordinate is pinned: L_free is empty")
    if inj.status == "proved":
        lm = _model_lambda_min(ctx)
        tail = "" if lm is None else f"; numerically λ_min(L_free) = {lm:.6g} at the model's parameters"
        if ctx.G.number_of_edges() and _relu_units(ctx.G):
            tail += " (all gates on)"
        return Claim(name, "proved", inj.method, inj.why + tail + _nonlinear_scope(ctx.G, hessian=True),
                     ordering=inj.ordering)
    if inj.status == "checked":
        return Claim(name, "checked", inj.method, inj.why)
    lam = 0.0 if inj.lambda_min is None else inj.lambda_min
    return Claim(name, "failed", inj.method,
                 f"L_free is singular (λ_min = {lam:.3g}): ker L_free = ker δ_Ω ≠ 0. " + _cap(inj.why), inj.witness)


def claim_relative(ctx, inj: _Injectivity) -> Claim:
    name = "relative_cohomology_vanishes"
    if inj.status in ("proved", "checked"):
        if inj.method == "trivial":
            return Claim(name, "proved", "trivial", "H⁰(G, U; F) = 0: " + inj.why)
        return Claim(name, inj.status, inj.method, "ker δ_Ω = 0, so H⁰(G, U; F) = 0 and the harmonic extension is "
                     "unique: " + inj.why)
    return Claim(name, "failed", inj.method,
                 f"H⁰(G, U; F) = ker δ_Ω has dimension {inj.nullity}: the harmonic extension is not unique. " + _cap(inj.why),
                 inj.witness)


# ----------------------------------------------------------------------------------------------
# forward pass


def apply_map(m, c, params):
    """F(c) for one restriction map, evaluated (ReLU and every registry nonlinearity applied, not
    linearised); ``c`` is (B, d_v). The one implementation, :func:`sheafdsl.lowering.maps.apply`."""
    return apply_restriction(m, np.asarray(c, dtype=float), {k: np.asarray(v, dtype=float) for k, v in params.items()}, np)


def forward_order(G, blocks: list[str], sources=INFERENCE) -> list[tuple[str, str]] | None:
    """The (edge, stalk) steps of a forward evaluation from a certificate's ``blocks`` (``"edge -> stalk"``), or
    None unless each free stalk is wholly defined by one edge that maps it by the identity."""
    free = set(free_indices(G, sources).tolist())
    steps = []
    for b in blocks:
        e, v = b.split(" -> ")
        if steps and steps[-1] == (e, v):
            continue
        steps.append((e, v))
    seen = set()
    by_name = {name: (u, v, d) for u, v, name, d in edges(G)}
    for e, v in steps:
        u, dst, d = by_name[e]
        sl = range(G.nodes[v]["offset"], G.nodes[v]["offset"] + G.nodes[v]["dim"])
        if dst != v or u == v or not isinstance(d["dst_map"], Identity) or v in seen or not all(j in free for j in sl):
            return None
        seen.add(v)
    return steps


def forward_evaluate(G, params, boundary: dict, steps) -> np.ndarray:
    """The cochain (B, N) of the forward pass: inputs from ``boundary``, constants from the pins, then each step
    (edge e: u -> v) sets c_v = F_src(c_u) + bias."""
    from ..ir import constant_pins

    B = next(iter(boundary.values())).shape[0]
    c = np.zeros((B, total_dim(G)))
    for v, x in boundary.items():
        o = G.nodes[v]["offset"]
        c[:, o:o + G.nodes[v]["dim"]] = x
    idx, val = constant_pins(G)
    if len(idx):
        c[:, idx] = val
    by_name = {name: (u, v, d) for u, v, name, d in edges(G)}
    for e, v in steps:
        u, _, d = by_name[e]
        cu = c[:, G.nodes[u]["offset"]:G.nodes[u]["offset"] + G.nodes[u]["dim"]]
        val = apply_map(d["src_map"], cu, params)
        if d.get("bias") is not None:
            val = val + np.asarray(params[d["bias"]], dtype=float)
        c[:, G.nodes[v]["offset"]:G.nodes[v]["offset"] + G.nodes[v]["dim"]] = val
    return c


def _lstsq_extension(G, params, c_ref, sources) -> np.ndarray:
    """The minimiser of E over the free coordinates with the gates fixed at ``c_ref``'s pattern (assembled δ,
    dense least squares): an independent check of a ReLU network's forward pass."""
    free, pinned = free_indices(G, sources), np.setdiff1d(np.arange(total_dim(G)), free_indices(G, sources))
    o, w = offset_vector(G, params), edge_weight_vector(G)
    out = c_ref.copy()
    for b in range(c_ref.shape[0]):
        if len(free) > NUMERIC_DENSE_LIMIT:  # sparse normal equations L_free x = Aᵀ rhs (a dense lstsq is O(n³))
            import scipy.sparse.linalg as spla

            Ds = coboundary_matrix(G, params, state=c_ref[b]).tocsc()
            rhs = w * (o - Ds[:, pinned] @ c_ref[b, pinned])
            A = sp.diags(w) @ Ds[:, free]
            with np.errstate(all="ignore"):
                out[b, free] = spla.spsolve((A.T @ A).tocsc(), A.T @ rhs)
            continue
        D = coboundary_matrix(G, params, state=c_ref[b]).toarray()
        rhs = w * (o - D[:, pinned] @ c_ref[b, pinned])
        x, *_ = np.linalg.lstsq(w[:, None] * D[:, free], rhs, rcond=None)
        out[b, free] = x
    return out


def _edge_discords(G, params, c):
    """Yield (edge name, attrs, (B, d_e) discord) with the maps evaluated (not linearised)."""
    for u, v, name, d in edges(G):
        r = (apply_map(d["dst_map"], c[:, vertex_slice(G, v)], params)
             - apply_map(d["src_map"], c[:, vertex_slice(G, u)], params))
        if d.get("bias") is not None:
            r = r - np.asarray(params[d["bias"]], dtype=float)
        yield name, d, r


def _energy(G, params, c) -> np.ndarray:
    """E(c) per example with the maps evaluated (not linearised)."""
    E = np.zeros(c.shape[0])
    for _, d, r in _edge_discords(G, params, c):
        E += 0.5 * d["weight"] ** 2 * np.sum(r * r, axis=1)
    return E


def _random_inputs(G, rng, B=SPOT_INPUTS) -> dict:
    return {v: rng.standard_normal((B, G.nodes[v]["dim"])) for v in pinned_stalks(G, "input")}


def _solve_extension(G, params, boundary, sources):
    """The harmonic extension by :func:`sheafdsl.solvers.solve` (active set with CG, started from c_Ω = 0), or
    None when the solver package is unavailable."""
    try:
        from ..solvers import solve
    except ImportError:  # pragma: no cover - the solvers ship with the package
        return None
    try:
        res = solve(G, params, boundary, method="cg", sources=sources, rtol=1e-12)
    except SheafError as exc:  # a sheaf the solvers do not handle (e.g. a gate on a head stalk)
        return exc
    return np.asarray(res.cochain), np.asarray(res.energy), np.asarray(res.converged, dtype=bool)


def _spot_check(ctx, steps) -> tuple[bool, str, dict | None]:
    """Forward pass vs independent solves at random inputs (model parameters and one random draw)."""
    G, rng = ctx.G, np.random.default_rng([ctx.seed, 5])
    weight_sets = [("the model's parameters", ctx.params)]
    if param_specs(G):
        weight_sets.append(("random weights", random_params(G, rng)))
    nonlin = _has_nonlinear(G)
    worst, how = 0.0, []
    for wl, P in weight_sets:
        bnd = _random_inputs(G, rng)
        cf = forward_evaluate(G, P, bnd, steps)
        scale = 1.0 + np.abs(cf).max()
        refs = []
        if not nonlin:
            refs.append(("assembled least squares at the forward pass's gates", _lstsq_extension(G, P, cf, ctx.inf)))
        solved = _solve_extension(G, P, bnd, ctx.inf) if ctx.n_inf <= SOLVER_SPOT_LIMIT or not refs else None
        if solved is not None and not isinstance(solved, SheafError):
            refs.append(("sheafdsl.solvers.solve(method='cg')", solved[0]))
        for rl, ref in refs:
            dev = float(np.abs(ref - cf).max()) / scale
            worst = max(worst, dev)
            if rl not in how:
                how.append(rl)
            if dev > 1e-7:
                k = int(np.argmax(np.abs(ref - cf).max(axis=1)))
                return False, f"{rl} differs from the forward pass by {dev:.3g} (relative) at {wl}", {
                    "input": {v: x[k].tolist() for v, x in bnd.items()}, "at": wl, "relative_difference": dev}
    n = SPOT_INPUTS * len(weight_sets)
    if not how:
        return True, "no independent numeric solve applies to this sheaf, so there is no numeric spot check", None
    note = (f" (the solver from c = 0 runs up to {SOLVER_SPOT_LIMIT} free coordinates)"
            if ctx.n_inf > SOLVER_SPOT_LIMIT else "")
    return True, (f"numerically the forward pass agrees with {' and '.join(how)} to {worst:.1e} (relative) at {n} "
                  f"random inputs{note}"), None


def claim_forward(ctx, unitri: Claim) -> Claim:
    name, G = "forward_pass_is_harmonic_extension", ctx.G
    if not pinned_stalks(G, "input"):
        return Claim(name, "skipped", "not applicable", "no stalk is pinned to input, so there is no forward pass")
    if ctx.n_inf == 0:
        return Claim(name, "skipped", "not applicable", "every coordinate is pinned: nothing to extend")
    if unitri.status in ("proved", "checked"):
        steps = forward_order(G, unitri.ordering["blocks"], ctx.inf)
        if steps is None:
            ok, note, wit = True, "numeric spot check not applicable (some free stalk is not defined by one " \
                "identity-headed edge)", None
        else:
            ok, note, wit = _spot_check(ctx, steps)
        if not ok:
            return Claim(name, "failed", "numeric spot check", note, wit)
        order = ", ".join(f"{e} -> {v}" for e, v in steps) if steps else "see coboundary_unitriangular"
        if unitri.status == "proved":
            return Claim(name, "proved", "structural (from unitriangularity)",
                         "δ_Ω is unitriangular, so δc = o is solved uniquely by substitution in the order "
                         f"{order}: that is the forward pass (each map evaluated, ReLU and every registry "
                         "nonlinearity included: tanh, gelu, softplus, sigmoid, leaky_relu, softmax). E ≥ 0 vanishes "
                         "there and nowhere else (each discord is zero only when its head equals the map of its "
                         "tail), so it is the unique harmonic extension, convex energy or not; " + note,
                         ordering={"steps": [f"{e} -> {v}" for e, v in steps]} if steps else None)
        return Claim(name, "checked", "numeric", note + " (past the symbolic limit)")
    # δ_Ω not unitriangular. Is the harmonic extension unique at all?
    c_inf = cohomology(G, ctx.params, sources=ctx.inf, method="auto")
    if c_inf.relative_h0:
        w = c_inf.witness()
        w["valid_for"] = "the model's parameters, every gate on" if _relu_units(G) else "the model's parameters"
        return Claim(name, "failed", f"{c_inf.method} kernel of δ_Ω (input pinned)",
                     f"with only the input pinned, ker δ_Ω has dimension {c_inf.relative_h0}: the harmonic extension "
                     "is not unique (adding the witness to any minimiser leaves the energy unchanged), so it cannot "
                     "be identified with the forward pass", w)
    # unique, but is it still an edge-by-edge evaluation?
    rng = np.random.default_rng([ctx.seed, 6])
    bnd = _random_inputs(G, rng)
    solved = _solve_extension(G, ctx.params, bnd, ctx.inf)
    if solved is None or isinstance(solved, SheafError):
        why = "the solvers are unavailable" if solved is None else solved.diagnostics[0].message
        return Claim(name, "skipped", "not decidable here",
                     f"δ_Ω is not unitriangular, so the claim needs a numeric harmonic extension, and {why}")
    c, E, conv = solved
    k = int(np.argmax(E))
    if E[k] > 1e-12 * (1.0 + float(np.abs(c).max()) ** 2):
        return Claim(name, "failed", "numeric (sheafdsl.solvers, method='cg')",
                     f"δ_Ω is not unitriangular ({unitri.detail.split(';')[0]}); at a random input the harmonic "
                     f"extension has energy E = {E[k]:.6g} > 0, so no edge-by-edge evaluation (zero discord on "
                     "every edge) exists there: the harmonic extension is a least-squares compromise, not a "
                     "forward pass", {"input": {v: x[k].tolist() for v, x in bnd.items()}, "energy": float(E[k]),
                                      "converged": bool(conv[k]),
                                      "edges": _discord_edges(G, ctx.params, c[k:k + 1])})
    return Claim(name, "checked", "numeric (sheafdsl.solvers, method='cg')",
                 f"δ_Ω is not unitriangular, but the harmonic extension has zero energy (max {E.max():.2g}) at "
                 f"{len(E)} random inputs: it satisfies every edge there")


def _discord_edges(G, params, c) -> dict:
    """{edge: ‖discord‖} for the edges with a nonzero discord at one cochain."""
    out = {}
    for name, _, r in _edge_discords(G, params, c):
        n = float(np.linalg.norm(r))
        if n > 1e-9:
            out[name] = n
    return out


# ----------------------------------------------------------------------------------------------
# cohomology


def claim_cohomology(ctx) -> tuple[Claim, int | None, int | None]:
    name, G = "cohomology", ctx.G
    why = undefined_reason(G)
    if why is not None:
        return Claim(name, "skipped", "not applicable", f"h0 and h1 are null: {why}"), None, None
    c = cohomology(G, ctx.params, sources=ctx.sources, method="auto")
    text = (f"h0 = dim ker δ = {c.h0}, h1 = dim coker δ = {c.h1} (rank δ = {c.rank}, δ is {c.M}×{c.N}); "
            f"relative h0 = {c.relative_h0}")
    if c.method == "exact-rational":
        lit = " at the parameter values written in the file" if param_specs(G) else ""
        return Claim(name, "proved", "exact rational (sympy, over ℚ)", text + f", exactly over ℚ{lit}"), c.h0, c.h1
    return (Claim(name, "checked", "numeric (SVD)",
                  text + f" at the model's parameters (initialised with seed {ctx.seed} where not written in the file): "
                  f"singular values ≤ tol = max(M, N)·ε·σ_max = {c.tolerance:.3g} count as zero"), c.h0, c.h1)


# ----------------------------------------------------------------------------------------------
# consensus problems (objectives and hard edges; docs/admm.md)

#: the claims of a consensus problem, in report order (then ``cohomology``; CLAIMS are a network sheaf's)
CONSENSUS_CLAIMS = ("objectives_convex", "constraints_feasible", "strictly_convex", "minimiser_unique")
#: the exact phase-1 simplex (sheafdsl.exact.feasible_point) runs up to this many free coordinates; past it, HiGHS
EXACT_LP_LIMIT = 120


@dataclass
class _Consensus:
    """A consensus problem's data on its free coordinates x_F (float64; the exact path reads it as ℚ).

    ``A`` x_F = ``r`` − ``data`` y: the hard edges' rows of δ and one Σx = 1 row per simplex stalk, with the
    constant pins moved to the right (``data``: the columns of coordinates pinned to input/target data, whose
    values y are not known here). ``Q`` (n × n): the block diagonal of the stalks' Q on the free coordinates;
    ``S``: the soft edges' rows W δ_S (soft pins included) on the free coordinates; ``g``: the gradient at
    x_F = 0 of the smooth part ½xᵀ(Q + δ_SᵀW²δ_S)x + ... (None with data pins); ``lo``/``hi``: the bounds of the
    indicator terms; ``nonsmooth``: the coordinates that an indicator or an l1 term touches."""

    labels: list
    A: np.ndarray
    r: np.ndarray
    data: np.ndarray
    row_labels: list
    Q: np.ndarray
    S: np.ndarray
    g: np.ndarray | None
    lo: np.ndarray
    hi: np.ndarray
    nonsmooth: np.ndarray
    quadratics: list
    pinned_bounds: list
    exact: bool
    why_numeric: str | None
    data_labels: list = field(default_factory=list)


def _consensus_data(ctx) -> _Consensus:
    from ..ir import constant_pins, objectives, pinned_indices
    from .cohomology import rational_blocker

    G, P = ctx.G, ctx.params
    N = total_dim(G)
    D = coboundary_matrix(G, P).toarray()
    o = offset_vector(G, P)
    w = edge_weight_vector(G)
    free = free_indices(G, ctx.sources)
    col = {int(j): k for k, j in enumerate(free)}
    cidx, cval = constant_pins(G)
    xc = np.zeros(N)
    xc[cidx] = cval
    data_idx = np.setdiff1d(pinned_indices(G, ctx.sources), cidx)
    labels = _labels(G, ctx.sources)
    rows, rhs, dcols, rlabels, soft = [], [], [], [], []
    k = 0
    for _, _, name, d in edges(G):
        for i in range(d["dim"]):
            if d.get("hard"):
                rows.append(D[k])
                rhs.append(o[k])
                rlabels.append(f"{name}[{i}]")
            else:
                soft.append(k)
            k += 1
    Qfull, qfull = np.zeros((N, N)), np.zeros(N)
    lo, hi = np.full(N, -np.inf), np.full(N, np.inf)
    rough = np.zeros(N, dtype=bool)
    quadratics, exact_params = [], True
    specs = param_specs(G)
    for v in stalks(G):
        sl = vertex_slice(G, v)
        for t, term in enumerate(objectives(G, v)):
            if term.kind == "quadratic":
                Qv = np.asarray(P[term.Q] if isinstance(term.Q, str) else term.Q, dtype=float)
                qv = np.asarray(P[term.q] if isinstance(term.q, str) else term.q, dtype=float)
                exact_params &= all(specs[p].init in EXACT_INITS for p in (term.Q, term.q) if isinstance(p, str))
                Qfull[sl, sl] += Qv
                qfull[sl] += qv
                quadratics.append((v, t, Qv, term.Q if isinstance(term.Q, str) else None))
            elif term.kind == "l1":
                rough[sl] |= term.lam > 0
            else:
                a, b = {"nonneg": (0.0, np.inf), "simplex": (0.0, 1.0)}.get(term.kind, (None, None))
                if term.kind == "box":
                    a, b = term.lo, term.hi
                lo[sl] = np.maximum(lo[sl], a)
                hi[sl] = np.minimum(hi[sl], b)
                if term.kind == "simplex" and f"simplex({v})" not in rlabels:  # a second simplex repeats the row
                    row = np.zeros(N)
                    row[sl] = 1.0
                    rows.append(row)
                    rhs.append(1.0)
                    rlabels.append(f"simplex({v})")
    rough |= np.isfinite(lo) | np.isfinite(hi)
    Ah = np.array(rows).reshape(len(rows), N)
    r = np.array(rhs) - Ah[:, cidx] @ cval if len(rows) else np.zeros(0)
    Ws = w[soft, None] * D[soft]
    s0 = Ws @ xc - w[soft] * o[soft]  # W(δ_S x − o_S) at x_F = 0
    g = None if len(data_idx) else (Qfull @ xc + qfull)[free] + Ws[:, free].T @ s0
    pinned_bounds = [(int(j), float(xc[j]), float(lo[j]), float(hi[j])) for j in cidx if not lo[j] <= xc[j] <= hi[j]]
    for _, _, name, d in edges(G):
        if d.get("bias") is not None and specs[d["bias"]].init not in EXACT_INITS:
            exact_params = False
    blocker = rational_blocker(G)
    why = None
    if blocker is not None:
        why = blocker
    elif not exact_params:
        why = "a parameter of an objective or a bias is not written in the file"
    elif len(free) > ctx.symbolic_limit:
        why = f"the free dimension {len(free)} is above the symbolic limit {ctx.symbolic_limit}"
    return _Consensus(labels, Ah[:, free], r, Ah[:, data_idx], rlabels, Qfull[np.ix_(free, free)], Ws[:, free], g,
                      lo[free], hi[free], rough[free], quadratics, pinned_bounds, why is None, why,
                      [_owner(G, int(j)) for j in data_idx])


def _strs(v) -> list:
    return [str(x) for x in v]


def _owner(G, j: int) -> tuple:
    for v in stalks(G):
        d = G.nodes[v]
        if d["offset"] <= j < d["offset"] + d["dim"]:
            return v, j - d["offset"]
    return "?", j


def claim_objectives_convex(ctx, c: _Consensus) -> Claim:
    name = "objectives_convex"
    if not c.quadratics:
        return Claim(name, "proved", "structural", "no quadratic term; every term is an indicator of a convex set "
                     "(nonneg, box, simplex) or a norm (l1 with LAMBDA ≥ 0), so every f_v is convex")
    from ..exact import psd_witness
    from .cohomology import to_rational

    tail = ("; the other terms are indicators of convex sets (nonneg, box, simplex) or norms (l1, LAMBDA ≥ 0), so "
            "every f_v is convex, and so is the whole objective (soft edges add ½ w²‖δx‖² ⪰ 0)")
    worst = np.inf
    for v, t, Q, pname in c.quadratics:
        what = f"Q of term {t} of `{v}`" + (f" (parameter `{pname}`)" if pname else "")
        if c.exact:
            M = [[to_rational(x) for x in row] for row in Q]
            n = len(M)
            asym = next(((i, j) for i in range(n) for j in range(i) if M[i][j] != M[j][i]), None)
            if asym is not None:
                i, j = asym
                return Claim(name, "failed", "exact rational (ℚ)", f"{what} is not symmetric: Q[{i},{j}] = {M[i][j]} "
                             f"but Q[{j},{i}] = {M[j][i]}", {"stalk": v, "term": t, "entry": [i, j]})
            wit = psd_witness(M)
            if wit is not None:
                vec, curv = wit
                return Claim(name, "failed", "exact rational (ℚ): LDLᵀ with diagonal pivoting",
                             f"{what} is not positive semidefinite: vᵀQv = {curv} < 0 at the witness v, so f_{v} "
                             "curves down along v and the problem is not convex",
                             {"stalk": v, "term": t, "vector": [float(x) for x in vec], "exact": _strs(vec),
                              "curvature": str(curv)})
        else:
            lam, V = np.linalg.eigh((Q + Q.T) / 2)
            tol = Q.shape[0] * np.finfo(float).eps * max(1.0, float(np.abs(lam).max()))
            if not np.allclose(Q, Q.T, rtol=0, atol=tol) or lam[0] < -tol:
                vec = V[:, 0] / np.abs(V[:, 0]).max()
                return Claim(name, "failed", "numeric (eigvalsh)", f"{what} is not positive semidefinite: its smallest "
                             f"eigenvalue is {lam[0]:.6g} < -{tol:.2g}", {"stalk": v, "term": t, "vector": vec.tolist(),
                                                                         "curvature": float(vec @ Q @ vec)})
            worst = min(worst, float(lam[0]))
    if c.exact:
        return Claim(name, "proved", "exact rational (ℚ): LDLᵀ with diagonal pivoting",
                     f"each of the {len(c.quadratics)} quadratic terms has a symmetric Q ⪰ 0: its symmetric elimination "
                     "over ℚ (entries read as the decimals written) has only nonnegative pivots and a zero remainder"
                     + tail)
    return Claim(name, "checked", "numeric (eigvalsh)",
                 f"each of the {len(c.quadratics)} quadratic terms has Q ⪰ 0 numerically (smallest eigenvalue "
                 f"{worst:.3g}; {c.why_numeric})" + tail)


def _rank(M, exact: bool) -> int:
    from .certificates import qq_rank
    from .cohomology import numeric_rank

    if M.size == 0:
        return 0
    return qq_rank(M) if exact else numeric_rank(M)[0]


def _null(M, exact: bool) -> list:
    from .certificates import float_nullspace, qq_nullspace

    return qq_nullspace(M) if exact else float_nullspace(M)[0]


def _farkas(A, r, lo, hi, exact: bool):
    """Decide {A x = r, lo ≤ x ≤ hi} (float arrays, ±inf where unbounded): (None, None) when a point exists, else
    (y, bound) with yᵀr > bound ≥ yᵀA x for every x in the box (Farkas' lemma). ``exact``: the exact phase-1
    simplex of :func:`sheafdsl.exact.feasible_point` (Fractions); else HiGHS, and on infeasibility HiGHS on the LP
    max yᵀr − Σ_j t_j over −1 ≤ y ≤ 1, t_j ≥ max over [lo_j, hi_j] of (Aᵀy)_j x_j."""
    m, n = A.shape
    if exact:
        from ..exact import feasible_point

        fin = lambda v: [float(x) if np.isfinite(x) else None for x in v]  # noqa: E731
        kind, y = feasible_point(A.tolist(), r.tolist(), fin(lo), fin(hi))
        if kind == "feasible":
            return None, None
        import sympy

        from .cohomology import to_rational

        y = [sympy.Rational(x.numerator, x.denominator) for x in y]
        cy = [sum((y[i] * to_rational(A[i, j]) for i in range(m)), sympy.Integer(0)) for j in range(n)]
        bound = sum((max(cy[j] * to_rational(b) for b in (lo[j], hi[j]) if np.isfinite(b)) if cy[j] != 0
                     else sympy.Integer(0) for j in range(n)), sympy.Integer(0))
        return y, bound
    from scipy.optimize import linprog as splp

    box = [(a if np.isfinite(a) else None, b if np.isfinite(b) else None) for a, b in zip(lo, hi)]
    res = splp(np.zeros(n), A_eq=A if m else None, b_eq=r if m else None, bounds=box, method="highs")
    if res.status == 0:
        return None, None
    rows, rhs = [], []
    for j in range(n):
        e = np.zeros(n)
        e[j] = -1.0
        for bnd in (lo[j], hi[j]):
            if np.isfinite(bnd):
                rows.append(np.concatenate([A[:, j] * bnd, e]))
        if not np.isfinite(hi[j]):
            rows.append(np.concatenate([A[:, j], np.zeros(n)]))
        if not np.isfinite(lo[j]):
            rows.append(np.concatenate([-A[:, j], np.zeros(n)]))
        if not np.isfinite(lo[j]) and not np.isfinite(hi[j]):
            rows.append(np.concatenate([np.zeros(m), e]))
    dual = splp(np.concatenate([-r, np.ones(n)]), A_ub=np.array(rows), b_ub=np.zeros(len(rows)),
                bounds=[(-1, 1)] * m + [(None, None)] * n, method="highs")
    y = dual.x[:m]
    cy = A.T @ y
    bound = float(sum(max(cy[j] * b for b in (lo[j], hi[j]) if np.isfinite(b)) if abs(cy[j]) > 1e-12 else 0.0
                      for j in range(n)))
    return y, bound


def claim_constraints_feasible(ctx, c: _Consensus) -> Claim:
    name, G = "constraints_feasible", ctx.G
    method = "exact rational (ℚ): Rouché–Capelli" if c.exact else "numeric (SVD rank)"
    for j, x, a, b in c.pinned_bounds:
        v, i = _owner(G, j)
        return Claim(name, "failed", "exact" if c.exact else "numeric", f"the hard pin sets {v}[{i}] = {x:g}, outside "
                     f"[{a:g}, {b:g}] required by its objective's indicator terms", {"stalk": v, "coordinate": i,
                                                                                      "value": x, "bounds": [a, b]})
    m, n = c.A.shape
    k = _rank(c.A, c.exact)
    aug = np.hstack([c.A, c.r[:, None], c.data]) if m else c.A
    k_aug = _rank(aug, c.exact)
    what = (f"the {m} linear constraint rows (hard edges and simplex sums, hard pins moved to the right-hand side) "
            f"on the {n} free coordinates")
    if k_aug > k:
        ys = _null(c.A.T, c.exact)
        from .cohomology import to_rational

        for y in ys:
            yr = (sum(yi * to_rational(ri) for yi, ri in zip(y, c.r)) if c.exact else float(np.dot(y, c.r)))
            yd = [sum(yi * to_rational(x) for yi, x in zip(y, c.data[:, j])) if c.exact else float(np.dot(y, c.data[:, j]))
                  for j in range(c.data.shape[1])]
            if (yr != 0 if c.exact else abs(yr) > 1e-9 * (1 + np.abs(c.r).max())) or any(
                    (x != 0 if c.exact else abs(x) > 1e-9) for x in yd):
                scale = max(abs(x) for x in y) if c.exact else max(abs(float(x)) for x in y)
                comb = {lab: (str(yi / scale) if c.exact else float(yi) / scale) for lab, yi in zip(c.row_labels, y)
                        if (yi != 0 if c.exact else abs(yi) > 1e-10 * scale)}
                val = yr / scale
                wit = {"combination": comb, "y_dot_r": str(val) if c.exact else val}
                if not (yr != 0 if c.exact else abs(yr) > 1e-9 * (1 + np.abs(c.r).max())):
                    dep = {f"{v}[{i}]": (str(x / scale) if c.exact else float(x) / scale)
                           for (v, i), x in zip(c.data_labels, yd) if (x != 0 if c.exact else abs(x) > 1e-9)}
                    wit["y_dot_data"] = dep
                    return Claim(name, "failed", method,
                                 f"rank A = {k} < rank [A | r | D] = {k_aug} for {what}, D the columns of the "
                                 "coordinates pinned to data: the combination y of the rows in the witness has yᵀA = 0 "
                                 f"and yᵀr = {val}, but yᵀD ≠ 0 (`y_dot_data`), so the constraints hold only for data "
                                 "values d with yᵀD d = 0 and fail for every other input", wit)
                return Claim(name, "failed", method,
                             f"rank A = {k} < rank [A | r] = {k_aug} for {what}: the combination y of the rows in the "
                             f"witness has yᵀA = 0 but yᵀr = {val}, so no point satisfies them all (0 = {val} would "
                             "follow)", wit)
        return Claim(name, "failed", method, f"rank A = {k} < rank [A | r] = {k_aug} for {what}")
    head = (f"rank A = rank [A | r] = {k} over ℚ" if c.exact else f"rank A = rank [A | r] = {k} numerically") + \
        f" for {what}" + (" (for every value of the data pins)" if c.data.shape[1] else "") + \
        f": the equalities are consistent, and their solutions form an affine subspace of dimension {n - k}"
    bounded = bool(np.any(np.isfinite(c.lo) | np.isfinite(c.hi)))
    if not bounded:
        return Claim(name, "proved" if c.exact else "checked", method, head + "; no indicator term bounds a free "
                     "coordinate, so that subspace is the feasible set")
    if c.data.shape[1]:
        return Claim(name, "checked", method, head + "; whether the indicator terms (nonneg, box, simplex) can be met "
                     "too depends on the data pins' values, so the LP is left to the solver")
    exact_lp = n <= EXACT_LP_LIMIT
    y, bound = _farkas(c.A, c.r, c.lo, c.hi, exact_lp)
    lp = "the exact phase-1 simplex over ℚ" if exact_lp else "LP (HiGHS)"
    if y is None:
        return Claim(name, "proved" if exact_lp and c.exact else "checked", method + f"; {lp}",
                     head + f"; and a point of that subspace meets every indicator term (nonneg, box, simplex): found by "
                     f"{lp}")
    wit = _farkas_witness(c.row_labels, y, c.r, bound, exact_lp)
    return Claim(name, "failed", method + f"; Farkas certificate by {lp}",
                 head + f", but no point of it meets the indicator terms: the combination y of the rows (witness) has "
                 f"yᵀr = {wit['y_dot_r']}, while yᵀA x ≤ {wit['bound']} for every x within the bounds of the "
                 "nonneg/box/simplex terms", wit)


def _farkas_witness(row_labels, y, r, bound, exact: bool) -> dict:
    """The witness of a Farkas certificate (y, bound) from :func:`_farkas`: y by row label (its nonzero entries),
    yᵀr and the bound (strings over ℚ when ``exact``, else floats)."""
    comb = {lab: (str(yi) if exact else float(yi)) for lab, yi in zip(row_labels, y) if yi != 0}
    yr = sum(yi * to_rational(ri) for yi, ri in zip(y, r)) if exact else float(np.dot(y, r))
    return {"combination": comb, "y_dot_r": str(yr) if exact else float(yr),
            "bound": str(bound) if exact else float(bound)}


def _stack(c: _Consensus) -> np.ndarray:
    return np.vstack([c.Q, c.S, c.A]) if c.Q.shape[1] else np.zeros((0, 0))


def claim_strictly_convex(ctx, c: _Consensus, convex: Claim) -> Claim:
    name = "strictly_convex"
    n = c.Q.shape[1]
    what = ("the smooth part's Hessian H = Q + δ_SᵀW²δ_S (the stalks' Q, the soft edges and soft pins) on the "
            "feasible directions Z = ker A (hard edges, simplex sums; pinned coordinates fixed)")
    if convex.status == "failed":
        return Claim(name, "skipped", "not applicable", "some Q is not PSD (objectives_convex), so the problem is not "
                     "convex")
    if n == 0:
        return Claim(name, "proved", "structural", "every coordinate is pinned: the feasible set is at most one point")
    K = _stack(c)
    k = _rank(K, c.exact)
    method = "exact rational (ℚ): rank" if c.exact else "numeric (SVD rank)"
    equiv = ("Since Q ⪰ 0 and δ_SᵀW²δ_S ⪰ 0, zᵀHz = 0 iff Qz = 0 and δ_S z = 0, so ZᵀHZ ≻ 0 iff "
             "ker Q ∩ ker δ_S ∩ ker A = 0, iff the stacked matrix [Q; W δ_S; A] has full column rank")
    if k == n:
        margin = ""
        if n <= 2000:
            from .certificates import float_nullspace

            Z = np.array(float_nullspace(c.A)[0]).reshape(-1, n).T if c.A.shape[0] else np.eye(n)
            if Z.shape[1]:
                H = c.Q + c.S.T @ c.S
                margin = f"; numerically λ_min(ZᵀHZ) = {float(np.linalg.eigvalsh(Z.T @ H @ Z)[0]):.4g} (Z orthonormal)"
        return Claim(name, "proved" if c.exact else "checked", method,
                     f"ZᵀHZ ≻ 0 for {what}. {equiv}: its rank is {n} = the number of free coordinates" +
                     (" over ℚ" if c.exact else "") + margin + ". So the objective is strictly convex on the feasible "
                     "affine set (the indicator and l1 terms are convex and only add to it)")
    z = _null(K, c.exact)[0]
    vec = np.array([float(x) for x in z])
    w = kernel_witness(vec, c.labels, _strs(z) if c.exact else None)
    return Claim(name, "failed", method,
                 f"[Q; W δ_S; A] has rank {k} < {n}, so ZᵀHZ is singular for {what}: along the witness direction z, "
                 "Hz = 0 and Az = 0, so the smooth part of the objective is affine along z on the feasible set", w)


def claim_minimiser_unique(ctx, c: _Consensus, convex: Claim, feasible: Claim, strict: Claim) -> Claim:
    name = "minimiser_unique"
    if convex.status == "failed":
        return Claim(name, "skipped", "not applicable", "the problem is not convex (objectives_convex failed)")
    if feasible.status == "failed":
        return Claim(name, "failed", "from constraints_feasible", "the constraints have no common point, so there is "
                     "no minimiser at all (see constraints_feasible's witness)")
    if strict.status in ("proved", "checked"):
        both = "proved" if strict.status == feasible.status == "proved" else "checked"
        return Claim(name, both, "from strictly_convex and constraints_feasible",
                     "on the nonempty, closed feasible set the objective is strictly convex, and coercive (a quadratic "
                     "with ZᵀHZ ≻ 0 on the affine set, plus l1 ≥ 0 and indicators that vanish on their sets) and lower "
                     "semicontinuous: a minimiser exists, and strict convexity makes it unique")
    n = c.Q.shape[1]
    E = np.eye(n)[c.nonsmooth]
    K = np.vstack([_stack(c), E])
    free_dirs = _null(K, c.exact) if n else []
    method = ("exact rational (ℚ)" if c.exact else "numeric (SVD)") + ": ker [Q; W δ_S; A; E_I]"
    if not free_dirs:
        return Claim(name, "skipped", "not decided",
                     "the smooth part is flat along some feasible direction (strictly_convex failed), but every such "
                     "direction moves a coordinate that an indicator or l1 term constrains, so the minimiser may still "
                     "be unique (at a vertex or kink); the quadratic test does not decide it")
    z = free_dirs[0]
    vec = np.array([float(x) for x in z])
    w = kernel_witness(vec, c.labels, _strs(z) if c.exact else None)
    if c.g is None:
        tail = "either the objective is unbounded below along ±z or every minimiser x* lies on the line x* + tz"
    else:
        from .cohomology import to_rational

        gz = sum(to_rational(gi) * zi for gi, zi in zip(c.g, z)) if c.exact else float(c.g @ vec)
        flat = gz == 0 if c.exact else abs(gz) <= 1e-9 * (1 + np.abs(c.g).max()) * np.abs(vec).max()
        w["slope"] = str(gz) if c.exact else gz
        tail = ("f(x + tz) = f(x) for every feasible x and t: every minimiser x* lies on a line x* + tz of minimisers"
                if flat else f"f(x + tz) = f(x) + t·({gz}) for every feasible x: the objective is unbounded below, "
                "so there is no minimiser")
    return Claim(name, "failed", method,
                 "along the witness direction z, Hz = 0 and Az = 0 and no indicator or l1 term touches a coordinate "
                 f"z moves, so x + tz is feasible whenever x is and f(x + tz) = f(x) + t·gᵀz: {tail}", w)


def verify_consensus(ctx) -> list:
    """The claims of a consensus problem (docs/admm.md, Checks and verify), then ``cohomology``."""
    c = _consensus_data(ctx)
    convex = claim_objectives_convex(ctx, c)
    feasible = claim_constraints_feasible(ctx, c)
    strict = claim_strictly_convex(ctx, c, convex)
    unique = claim_minimiser_unique(ctx, c, convex, feasible, strict)
    return [convex, feasible, strict, unique]


# ----------------------------------------------------------------------------------------------
# learned models: the hard edges' feasibility with constants and bounds


def _learned_sides(S) -> list:
    """Per edge of the learned structure ``S`` (``S.edge_rows`` order), its sides as (sign, key, cols, mat), the
    source (sign −1) first: key a parameter name or ("const", i), cols the w pattern columns the side reads (n ..
    n + n_fixed are a constant's coordinates), mat the constant map (d_e × w; None for a parameter)."""
    edge_at = {M0: k for k, (_, M0, _) in enumerate(S.edge_rows)}
    sides: list = [[] for _ in S.edge_rows]
    for key, count, de, w, start in S.blocks:
        mat = None if isinstance(key, str) else S.map_constants[key[1]]
        for u in range(count):
            s0 = start + u * de * w
            sides[edge_at[int(S.erow[s0])]].append((float(S.sign[s0]), key, S.cols[s0:s0 + w], mat))
    return [sorted(sd, key=lambda t: t[0]) for sd in sides]


def _uniform_rows(S, sides) -> tuple[list, dict]:
    """Linear conditions on x under which every hard edge holds **for every value of the parameter maps**: rows
    ({agent column: coefficient}, right-hand side, label, kind) over ℚ (the file's decimals; a constant's coordinates
    moved to the right), and how many edges of each kind gave them:

    - ``fixed``: no parameter on either side, the edge's own rows F_dst x_dst − F_src x_src = 0;
    - ``shared``: the same parameter P on both sides, x_src[j] = x_dst[j] for each column j of the blocks (then
      P x_src = P x_dst whatever P is; P = I shows it is also needed);
    - ``zeroed``: any other parameter (on one side only, or two different ones): every parameter side's block is 0
      and every constant side's F x is 0 (P = 0 and then every P show both are needed).

    A point of these rows and the bounds is feasible at every parameter value; the rows are exactly the conditions
    for one point to be, edge by edge."""
    from ..exact import decimal

    n = S.n
    fixed = [decimal(p) for p in S.fixed]
    rows, kinds = [], {"fixed": 0, "shared": 0, "zeroed": 0}

    def emit(coef: dict, label: str, kind: str):
        lhs, rhs = {}, decimal(0.0)
        for col, a in coef.items():
            if a == 0:
                continue
            if col < n:
                lhs[col] = lhs.get(col, 0) + a
            else:
                rhs -= a * fixed[col - n]
        rows.append(({j: a for j, a in lhs.items() if a != 0}, rhs, label, kind))

    def linear(sg, cols, mat, i) -> dict:
        out: dict = {}
        for j, c in enumerate(cols):
            out[int(c)] = out.get(int(c), 0) + sg * decimal(mat[i, j])
        return out

    for (name, M0, de), sd in zip(S.edge_rows, sides):
        if not S.hard[M0]:
            continue
        keys = [k for _, k, _, _ in sd]
        if not any(isinstance(k, str) for k in keys):
            kinds["fixed"] += 1
            for i in range(de):
                coef: dict = {}
                for sg, _, cols, mat in sd:
                    for c, a in linear(int(sg), cols, mat, i).items():
                        coef[c] = coef.get(c, 0) + a
                emit(coef, f"{name}[{i}]", "fixed")
        elif len(sd) == 2 and keys[0] == keys[1]:
            kinds["shared"] += 1
            for j, (a, b) in enumerate(zip(sd[0][2], sd[1][2])):
                emit({int(a): decimal(-1.0), int(b): decimal(1.0)} if a != b else {}, f"{name}: block[{j}] equal",
                     "shared")
        else:
            kinds["zeroed"] += 1
            for sg, key, cols, mat in sd:
                if isinstance(key, str):
                    for j, c in enumerate(cols):
                        emit({int(c): decimal(1.0)}, f"{name}: {'src' if sg < 0 else 'dst'} block[{j}] = 0", "zeroed")
                else:
                    for i in range(de):
                        emit(linear(1, cols, mat, i), f"{name}: {'src' if sg < 0 else 'dst'} map row {i} = 0", "zeroed")
    return rows, kinds


def _uniform_point(rows, lo, hi, n: int):
    """A point x ∈ ℚⁿ of {rows, lo ≤ x ≤ hi}, checked exactly, or None; and how it was found (or why none was).

    The rows x_i − x_j = 0 identify coordinates (union–find; a class gets the intersection of its bounds); the other
    rows are rewritten on the classes, and the LP on the classes they touch is decided by the exact phase-1 simplex
    (:func:`sheafdsl.exact.feasible_point`) up to ``EXACT_LP_LIMIT`` of them, else by HiGHS with a generic cost, so
    that its point is a vertex (B⁻¹b for a basis B of the rational rows: small denominators), rounded
    (``Fraction.limit_denominator``). A cost of zero leaves HiGHS free to return any point of the polytope: on the
    9×9 Sudoku one with denominators near 10⁶ that rounds off the rows. Whichever found it, the point is then checked against every row and
    bound in exact arithmetic: only a point that passes is returned."""
    from fractions import Fraction

    from ..exact import decimal, feasible_point

    from networkx.utils import UnionFind

    classes = UnionFind(range(n))
    rest = []
    for coef, rhs, _, _ in rows:
        if len(coef) == 2 and rhs == 0 and sum(coef.values()) == 0:
            classes.union(*coef)
        else:
            rest.append((coef, rhs))
    smallest = {j: min(c) for c in classes.to_sets() for j in c}  # each class named by its smallest coordinate
    find = smallest.__getitem__
    q = lambda v: None if not np.isfinite(v) else decimal(v)  # noqa: E731
    clo, chi = {}, {}
    for j in range(n):
        c, a, b = find(j), q(lo[j]), q(hi[j])
        if a is not None:
            clo[c] = a if clo.get(c) is None else max(clo[c], a)
        if b is not None:
            chi[c] = b if chi.get(c) is None else min(chi[c], b)
    if any(c in chi and clo[c] > chi[c] for c in clo):
        return None, "the equalities identify coordinates whose bounds do not intersect"
    red = []
    for coef, rhs in rest:
        acc: dict = {}
        for j, a in coef.items():
            acc[find(j)] = acc.get(find(j), 0) + a
        acc = {c: a for c, a in acc.items() if a != 0}
        if not acc and rhs != 0:
            return None, "a row reduces to 0 = " + str(rhs)
        if acc:
            red.append((acc, rhs))
    touched = sorted({c for acc, _ in red for c in acc})
    value = {}
    for c in {find(j) for j in range(n)} - set(touched):  # free classes: the point of their bounds nearest 0
        a, b = clo.get(c), chi.get(c)
        value[c] = a if a is not None and a > 0 else b if b is not None and b < 0 else Fraction(0)
    pos = {c: k for k, c in enumerate(touched)}
    A = [[Fraction(0)] * len(touched) for _ in red]
    for i, (acc, _) in enumerate(red):
        for c, a in acc.items():
            A[i][pos[c]] = a
    r = [rhs for _, rhs in red]
    blo, bhi = [clo.get(c) for c in touched], [chi.get(c) for c in touched]
    if len(touched) <= EXACT_LP_LIMIT:
        kind, pt = feasible_point(A, r, blo, bhi) if touched else ("feasible", [])
        if kind != "feasible":
            return None, "the exact phase-1 simplex over ℚ finds the rows and bounds infeasible"
        how = (f"exact rational (ℚ): phase-1 simplex on the {len(touched)} coordinate classes the rows touch "
               f"({n} coordinates identified into {len({find(j) for j in range(n)})} classes)")
    else:
        from scipy.optimize import linprog as splp

        bounds = [(None if a is None else float(a), None if b is None else float(b)) for a, b in zip(blo, bhi)]
        cost = np.random.default_rng(0).uniform(1.0, 2.0, len(touched))  # generic: the optimum is one vertex
        res = splp(cost, A_eq=np.array(A, dtype=float) if red else None,
                   b_eq=np.array(r, dtype=float) if red else None, bounds=bounds, method="highs")
        if res.status != 0:
            return None, f"HiGHS finds no point of the rows and bounds ({res.message})"
        pt = [Fraction(float(v)).limit_denominator(10 ** 6) for v in res.x]
        how = (f"certificate (HiGHS point checked exactly over ℚ): HiGHS on the {len(touched)} coordinate classes the "
               f"rows touch ({n} coordinates identified into {len({find(j) for j in range(n)})} classes), its vertex "
               "for a generic cost rounded to denominators ≤ 10⁶")
    value.update(zip(touched, pt))
    x = [value[find(j)] for j in range(n)]
    for j in range(n):
        a, b = q(lo[j]), q(hi[j])
        if (a is not None and x[j] < a) or (b is not None and x[j] > b):
            return None, how + f"; but the point breaks the bounds of coordinate {j} exactly over ℚ"
    for coef, rhs, label, _ in rows:
        if sum((a * x[j] for j, a in coef.items()), Fraction(0)) != rhs:
            return None, how + f"; but the point breaks row `{label}` exactly over ℚ"
    return x, how


def claim_learned_feasible(S, params) -> tuple[Claim, list | None]:
    """``constraints_feasible`` of a learned model, and the point that proves it for every parameter value (None
    when there is none). Without constants and bounds the hard rows are D_H x = 0, met by x = 0. Otherwise a point of
    :func:`_uniform_rows` and the bounds, checked exactly, is feasible for every value of the parameter maps
    (``proved``). When there is none: the rows of the edges without parameters are in every instance, so their
    infeasibility with the bounds (Farkas, :func:`_farkas`) is a failure for every value (``failed``); else the
    hard rows A x = r at the given values are decided by HiGHS (``checked`` or ``failed`` there, not for all)."""
    name, m = "constraints_feasible", int(S.hard.sum())
    if not S.n_fixed and not S.bounded.any():
        return Claim(name, "proved", "structural",
                     f"the {m} hard constraint rows are D_H x = 0 (a learned model's edges have no offsets and no "
                     "constants), which x = 0 satisfies for every value of the restriction maps"), [0.0] * S.n
    what = ("constants" if S.n_fixed else "") + (" and " if S.n_fixed and S.bounded.any() else "") + \
        ("bounds" if S.bounded.any() else "")
    rows, kinds = _uniform_rows(S, _learned_sides(S))
    x, how = _uniform_point(rows, S.lo, S.hi, S.n)
    parts = [f"{kinds['fixed']} edge(s) without a parameter keep their rows (constants moved to the right)"]
    if kinds["shared"]:
        parts.append(f"{kinds['shared']} `maps P | P` edge(s) get x_src = x_dst on their blocks, which makes P x_src = "
                     "P x_dst whatever P is")
    if kinds["zeroed"]:
        parts.append(f"{kinds['zeroed']} edge(s) with another parameter map get a zero parameter block and a zero "
                     "constant side, which makes them hold whatever the parameters are")
    reduction = "; ".join(parts)
    if x is not None:
        return Claim(name, "proved", how,
                     f"a learned model with {what}: its {m} hard rows are A x = r with A and r depending on the "
                     f"parameter maps. Edge by edge, {reduction}. A point x of those rows with lo ≤ x ≤ hi exists "
                     "(checked exactly over ℚ), and it satisfies every hard edge and bound for every value of the "
                     "parameter maps: feasible for all parameter values"), x
    const_rows = [row for row in rows if row[3] == "fixed"]
    A = np.zeros((len(const_rows), S.n))
    for i, (coef, _, _, _) in enumerate(const_rows):
        for j, a in coef.items():
            A[i, j] = float(a)
    r = np.array([float(rhs) for _, rhs, _, _ in const_rows])
    exact_lp = S.n <= EXACT_LP_LIMIT
    lp = "the exact phase-1 simplex over ℚ" if exact_lp else "LP (HiGHS)"
    y, bound = _farkas(A, r, S.lo, S.hi, exact_lp) if const_rows else (None, None)
    if y is not None:
        wit = _farkas_witness([lab for _, _, lab, _ in const_rows], y, r, bound, exact_lp)
        return Claim(name, "failed", f"Farkas certificate by {lp}",
                     f"the {len(const_rows)} rows of the hard edges without a parameter (A_c x = r_c, constants moved "
                     "to the right), which every value of the parameter maps leaves as they are, cannot be met within "
                     f"the bounds: the combination y of those rows (witness) has yᵀr_c = {wit['y_dot_r']}, while "
                     f"yᵀA_c x ≤ {wit['bound']} for every x with lo ≤ x ≤ hi. Infeasible for every parameter value",
                     wit), None
    Fv = S.map_values(params, np)
    D, rh = S.operators(Fv, np)[1].toarray()[S.hard], np.asarray(S.rhs(Fv, np), dtype=float)
    labels = [f"{nm}[{i}]" for nm, M0, de in S.edge_rows if S.hard[M0] for i in range(de)]
    y, bound = _farkas(D, rh, S.lo, S.hi, False)
    why = f"the edge-by-edge argument gives no point feasible for every parameter value ({reduction}: {how})"
    if y is None:
        return Claim(name, "checked", "numeric (HiGHS) at the given parameters",
                     f"{why}; at the given parameter values HiGHS finds a point of the {m} hard rows A x = r within "
                     "the bounds: feasible at these values, not proved for all"), None
    wit = _farkas_witness(labels, y, rh, bound, False)
    return Claim(name, "failed", "Farkas certificate by LP (HiGHS) at the given parameters",
                 f"{why}; at the given parameter values the combination y of the {m} hard rows (witness) has yᵀr = "
                 f"{wit['y_dot_r']:.6g}, while yᵀA x ≤ {wit['bound']:.6g} for every x within the bounds: infeasible "
                 "at these values", wit), None


# ----------------------------------------------------------------------------------------------


def verify_learned(G, params: dict, symbolic_limit: int, t0: float, seed: int = 0) -> VerifyReport:
    """The consensus claims of a learned model (docs/admm.md "Learning"), for **every** value of the parameters and
    of the observations where the structure decides them:

    - an ``encoded`` term is Q_v = diag(softplus(h)) with softplus(t) = log(1 + eᵗ) > 0 for every real t (1 + eᵗ > 1),
      so Q_v ≻ 0 whatever the encoder's parameters and input; a literal ``quadratic`` term is decided exactly
      (LDLᵀ over ℚ), a parameter one at the given values (``checked``);
    - every agent with an encoded term makes H = Q + D_SᵀW²D_S ⪰ Q ≻ 0 on all of Rⁿ, so ZᵀHZ ≻ 0 on ker D_H:
      strictly convex for all parameter values;
    - without constants and bounds the hard edges are D_H x = 0, which x = 0 satisfies for all parameter values;
      with them, :func:`claim_learned_feasible` (a point feasible for every parameter value, checked exactly);
    - a strictly convex quadratic on a nonempty closed convex set (affine ∩ box) is coercive there: a unique
      minimiser.

    h⁰ and h¹ are those of the agents' sheaf (δ = D on the agents, hard and soft edges) at the given parameters.
    """
    from ..exact import decimal, psd_witness
    from ..lowering.learned import LearnedStructure

    S = LearnedStructure(G)
    spec = G.graph["learned"]
    encoded = {a for a, _, _ in spec.objectives}
    claims = []
    exact_q, numeric_q, bad = 0, 0, None
    for gi, k, Qd, _ in S.quadratic:
        v = S.groups[gi].agents[k]
        if isinstance(Qd, str):
            Q = np.asarray(params[Qd], dtype=float)
            Q = Q.reshape(S.dim[v], S.dim[v])
            lam = np.linalg.eigvalsh((Q + Q.T) / 2)
            numeric_q += 1
            if lam[0] < -S.dim[v] * np.finfo(float).eps * max(1.0, float(np.abs(lam).max())):
                bad = Claim("objectives_convex", "failed", "numeric (eigvalsh)", f"parameter `{Qd}` (Q of `{v}`) has "
                            f"smallest eigenvalue {lam[0]:.6g} < 0", {"stalk": v, "curvature": float(lam[0])})
        else:
            M = [[decimal(float(x)) for x in row] for row in np.asarray(Qd, dtype=float)]
            exact_q += 1
            if psd_witness(M) is not None:
                vec, curv = psd_witness(M)
                bad = Claim("objectives_convex", "failed", "exact rational (ℚ): LDLᵀ with diagonal pivoting",
                            f"the literal Q of `{v}` is not positive semidefinite: vᵀQv = {curv} < 0",
                            {"stalk": v, "vector": [float(x) for x in vec], "curvature": str(curv)})
    enc_text = (f"each of the {len(spec.objectives)} encoded terms is Q_v = diag(softplus(h)), h = ENC(c_OBS), and "
                "softplus(t) = log(1 + eᵗ) > 0 for every real t, so Q_v ≻ 0 for every value of the encoder's parameters "
                "and of the observation")
    if bad is not None:
        claims.append(bad)
    else:
        extra = "" if not (exact_q or numeric_q) else (
            f"; {exact_q} literal quadratic term(s) are ⪰ 0 exactly (LDLᵀ over ℚ)" if exact_q else "") + (
            f"; {numeric_q} parameter quadratic term(s) are ⪰ 0 at the given values" if numeric_q else "")
        claims.append(Claim("objectives_convex", "checked" if numeric_q else "proved",
                            "structural (softplus > 0)" + (" + numeric" if numeric_q else ""), enc_text + extra))
    feasible, _ = claim_learned_feasible(S, params)
    missing = [v for v in S.agents if v not in encoded]
    if claims[0].status == "failed":
        strict = Claim("strictly_convex", "skipped", "not convex", "the objectives are not convex")
    elif not missing:
        strict = Claim("strictly_convex", "proved", "structural (softplus > 0)",
                       f"every one of the {len(S.agents)} agents has an encoded term, so Q ≻ 0 on all of Rⁿ (n = {S.n}) "
                       "and H = Q + D_SᵀW²D_S ⪰ Q ≻ 0; hence ZᵀHZ ≻ 0 on ker D_H for all parameter values")
    else:
        from ..lowering.learned import coefficients

        rng = np.random.default_rng(seed)
        obs = {o: rng.normal(size=(1, G.nodes[o]["dim"])) for _, _, o in spec.objectives}
        C = coefficients(S, params, obs, np, B=1)
        F2, D = S.operators(C.F, np)
        Dd = D.toarray()
        H = np.zeros((S.n, S.n))
        for g, Qg in zip(S.groups, C.Q):
            H[g.cols[:, :, None], g.cols[:, None, :]] = Qg[0]
        H += (Dd[~S.hard].T * S.w2[~S.hard]) @ Dd[~S.hard]
        A = Dd[S.hard]
        Z = np.linalg.svd(A)[2][np.linalg.matrix_rank(A):].T if A.size else np.eye(S.n)
        lam = float(np.linalg.eigvalsh(Z.T @ H @ Z)[0]) if Z.size else np.inf
        strict = Claim("strictly_convex", "checked" if lam > 1e-10 else "failed", "numeric (eigvalsh)",
                       f"agents {', '.join(missing[:4])} have no encoded term; at the given parameters (and a random "
                       f"observation) λ_min(ZᵀHZ) = {lam:.6g}", None if lam > 1e-10 else {"lambda_min": lam})
    claims += [feasible, strict]
    if feasible.status == "failed":
        claims.append(Claim("minimiser_unique", "failed", "from constraints_feasible", "the hard edges and bounds have "
                            "no common point, so there is no minimiser at all (see constraints_feasible's witness)"))
    elif strict.status in ("proved", "checked"):
        both = "proved" if strict.status == feasible.status == "proved" else "checked"
        box = S.n_fixed or S.bounded.any()
        claims.append(Claim("minimiser_unique", both, "from strictly_convex and constraints_feasible",
                            ("the feasible set {A x = r, lo ≤ x ≤ hi} (an affine set cut by a box: closed and convex) is "
                             "nonempty and the objective a strictly convex quadratic on it, hence coercive there: a "
                             "minimiser exists, and strict convexity on a convex set makes it unique" if box else
                             "the feasible set {D_H x = 0} is a nonempty subspace and the objective a strictly convex "
                             "quadratic on it, so it is coercive there and has exactly one minimiser")
                            + (" for every value of the parameters and observations" if both == "proved" else
                               " at the given parameter values")))
    else:
        claims.append(Claim("minimiser_unique", "skipped", "not decided", "the problem is not strictly convex"))
    Fv = S.map_values(params, np)
    D = S.operators(Fv, np)[1].toarray()
    r = int(np.linalg.matrix_rank(D)) if D.size else 0
    return VerifyReport(G.graph.get("name", "sheaf"), S.n - r, S.M - r, S.n - r, claims, ("input",), symbolic_limit,
                        time.perf_counter() - t0)


def _check_finite(G, params) -> None:
    for p, a in params.items():
        if not np.all(np.isfinite(np.asarray(a, dtype=float))):
            raise SheafError(Diagnostic("E650", f"parameter `{p}` holds NaN or infinite values: nothing can be "
                                        "verified about it", file=G.graph.get("path", "<input>")))
    n = len(free_indices(G, INFERENCE))
    if n > DENSE_LIMIT:
        raise SheafError(Diagnostic("E651", f"the free dimension {n} exceeds {DENSE_LIMIT}, the size up to which "
                                    "`sheaf verify` runs its dense numeric checks",
                                    hint="verify a narrower copy of the architecture: the structural claims do not "
                                    "depend on the widths", file=G.graph.get("path", "<input>")))


#: the most seconds of numeric scans one verify may plan (estimated up front; more is E652)
NUMERIC_BUDGET_S = 600.0


def _check_budget(G, symbolic_limit: int, samples: int, weight_draws: int, sources) -> None:
    """E652 before any work when the numeric scan of ``samples`` activation patterns (times the weight
    sets) would take longer than NUMERIC_BUDGET_S: a dense SVD of the M × n coboundary per sample."""
    n = max(len(free_indices(G, sources)), len(free_indices(G, INFERENCE)))
    if n <= symbolic_limit:
        return
    k = sum(d for _, d in _relu_units(G))
    patterns = min(samples, 2 ** k) if k < 64 else samples
    sets = 1 + (weight_draws if param_specs(G) else 0)
    per = 2e-4 + (4.0 * n ** 3 / 3e9 if n <= NUMERIC_DENSE_LIMIT else 2e-5 * n)
    if n > NUMERIC_DENSE_LIMIT:
        patterns = min(patterns, max(NUMERIC_MIN_SAMPLES, int(NUMERIC_BUDGET // max(n, 1))))
    est = patterns * sets * per
    if est > NUMERIC_BUDGET_S:
        fit = max(1, int(patterns * NUMERIC_BUDGET_S / est))
        raise SheafError(Diagnostic("E652", f"--samples {samples:,} would take about {est:,.0f} s of numeric checks "
                                            f"({sets} weight set(s) × {patterns:,} activation patterns, free dimension "
                                            f"{n}); the limit is {NUMERIC_BUDGET_S:.0f} s, and nothing was computed",
                                    hint=f"use --samples {fit:,} or fewer", file=G.graph.get("path", "<input>")))


def verify(G, params: dict | None = None, *, symbolic_limit: int = DEFAULT_SYMBOLIC_LIMIT, sources=TRAINING,
           samples: int = DEFAULT_SAMPLES, weight_draws: int = DEFAULT_WEIGHT_DRAWS, seed: int = 0) -> VerifyReport:
    """Every claim of the module docstring for the sheaf ``G``.

    ``params`` are the model's parameter values (default ``init_params(G, seed)``); the symbolic claims do not
    use them (every entry is a symbol), the numeric checks and the cohomology numbers do. ``sources`` is the
    boundary of the PD and relative-cohomology claims (training by default).

    >>> from sheafdsl.frontend import load_text
    >>> from sheafdsl.ir import from_model
    >>> r = verify(from_model(load_text("sheaf t\\nnetwork n : 2 -> 3 -> 1\\n")))
    >>> [(c.name, c.status) for c in r.claims]     # doctest: +NORMALIZE_WHITESPACE
    [('coboundary_unitriangular', 'proved'), ('laplacian_positive_definite', 'proved'),
     ('relative_cohomology_vanishes', 'proved'), ('forward_pass_is_harmonic_extension', 'proved'),
     ('cohomology', 'skipped')]
    >>> r.h0, r.h1, r.relative_h0
    (None, None, 0)
    """
    t0 = time.perf_counter()
    if symbolic_limit < 0:
        raise ValueError("symbolic_limit must be >= 0")
    if samples < 1:
        raise ValueError("samples must be >= 1")
    _check_budget(G, symbolic_limit, samples, weight_draws, sources)
    if params is None:
        params = init_params(G, seed)
    check_shapes(G, params)
    params = {k: np.asarray(v, dtype=float) for k, v in params.items()}
    _check_finite(G, params)
    if G.graph.get("learned") is not None:
        return verify_learned(G, params, symbolic_limit, t0, seed)
    ctx = _Ctx(G, params, sources, symbolic_limit, samples, weight_draws, seed)
    if is_consensus(G):
        claims = verify_consensus(ctx)
        coh, h0, h1 = claim_cohomology(ctx)
        rel = cohomology(G, params, sources=ctx.sources, method="auto").relative_h0
        return VerifyReport(G.graph.get("name", "sheaf"), h0, h1, int(rel), claims + [coh], ctx.sources,
                            symbolic_limit, time.perf_counter() - t0)
    unitri = claim_unitriangular(ctx)
    inj = _injectivity(ctx)
    claims = [unitri, claim_positive_definite(ctx, inj), claim_relative(ctx, inj), claim_forward(ctx, unitri)]
    coh, h0, h1 = claim_cohomology(ctx)
    claims.append(coh)
    return VerifyReport(G.graph.get("name", "sheaf"), h0, h1, int(inj.nullity), claims, ctx.sources, symbolic_limit,
                        time.perf_counter() - t0)


__all__ = ["verify", "VerifyReport", "Claim", "STATUSES", "CLAIMS", "CONSENSUS_CLAIMS", "DEFAULT_SYMBOLIC_LIMIT", "DEFAULT_SAMPLES",
           "build_samples", "random_params", "forward_evaluate", "forward_order", "apply_map"]
