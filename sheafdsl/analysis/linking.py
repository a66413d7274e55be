r"""Linking numbers of closed polygons in ℝ³, and of their images at the 3-dimensional stalks of a sheaf.

**The exact polygon linking number.** For closed polygons a (n vertices) and b (m vertices), the last
vertex joining the first, the Gauss integral

    lk(a, b) = (1/4π) ∮∮ (x − y)·(dx × dy) / |x − y|³

splits over segment pairs. For segments p₁→p₂ of a and q₁→q₂ of b the map (s, t) ↦ R(s, t) =
(q₁ + t(q₂ − q₁)) − (p₁ + s(p₂ − p₁)) sends the unit square to a planar parallelogram that misses the
origin (when the segments do not meet), and the pair's integral is the signed solid angle Ω that the
parallelogram subtends at the origin, oriented by (∂_s R, ∂_t R). With corners R₀₀ = q₁ − p₁,
R₁₀ = q₁ − p₂, R₁₁ = q₂ − p₂, R₀₁ = q₂ − p₁, Ω is the sum over the triangles (R₀₀, R₁₀, R₁₁) and
(R₀₀, R₁₁, R₀₁) of the Van Oosterom–Strackee formula

    Ω(r₁, r₂, r₃) = 2 atan2(r₁·(r₂ × r₃), |r₁||r₂||r₃| + (r₁·r₂)|r₃| + (r₁·r₃)|r₂| + (r₂·r₃)|r₁|),

so lk = Σ_ij Ω_ij / 4π is exact (no quadrature); it is an integer up to round-off, computed for all
n·m pairs at once in blocks of :data:`BLOCK` pairs.

It is defined only when the polygons are disjoint: :func:`polygon_linking` reports ``None``, with the
reason, when the minimum segment-to-segment distance is zero up to round-off (below
:data:`MEET_RTOL` times the polygons' extent), as after a ReLU collapses both images onto one face.

**Images at the stalks.** :func:`layer_linking` pins the input stalk (which must have dimension 3) to
the polygons' vertices, solves the harmonic extension with the inference pins (on a network, the
forward pass) and reports the linking number of the image polygons (the polygons through the images
of the vertices) at every stalk of dimension 3, in forward (topological) order, input first.

**The point-cloud estimator** (:func:`point_cloud_linking`): with no curve given, the linking between
two classes of sampled points is estimated from a k-nearest-neighbour graph per class (on a
farthest-point subsample of landmarks, so the graph's spacing is even), its minimum cycle basis
(``networkx.minimum_cycle_basis``) and the polygon linking number of every pair of cycles: the
estimate is max |lk| over the pairs.

>>> a, b = link_curves("hopf", 64)
>>> polygon_linking(a, b).linking, polygon_linking(b, a).linking
(1, 1)
>>> polygon_linking(*link_curves("torus:3", 96)).linking
3
>>> polygon_linking(*link_curves("whitehead", 200)).linking
0
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import Diagnostic, NOSPAN, SheafError

#: segment pairs evaluated at once (memory: a few dozen float64 arrays of this many entries)
BLOCK = 1 << 18
#: two polygons meet when their distance is at most MEET_RTOL · (1 + their extent)
MEET_RTOL = 1e-9
#: a Gauss sum farther than this from an integer is not reported as a linking number
INTEGER_TOL = 1e-3
#: the built-in links (``torus:K`` takes an integer K)
LINKS = ("hopf", "unlink", "torus:K", "whitehead")
#: default number of vertices of each built-in curve
DEFAULT_POINTS = 128
#: the largest |K| of ``torus:K``
MAX_TORUS_K = 64
#: the most vertices of a curve (the linking sum is n·m pairs)
MAX_POINTS = 20_000

CL = "<command line>"


def _err(code: str, msg: str, hint: str | None = None, file: str = CL, span=NOSPAN) -> SheafError:
    return SheafError(Diagnostic(code, msg, span=span, hint=hint, file=file))


# ----------------------------------------------------------------------------------------------
# polygons


def check_polygon(p, name: str = "curve", *, file: str = CL) -> np.ndarray:
    """``p`` as an (n, 3) float array of a closed polygon's vertices, n ≥ 3, all finite (E543 otherwise)."""
    try:
        a = np.asarray(p, dtype=float)
    except (TypeError, ValueError):
        raise _err("E543", f"{name} is not an array of numbers") from None
    if a.ndim != 2 or a.shape[1] != 3:
        raise _err("E543", f"{name} must have shape (n, 3) (a vertex per row), not {a.shape}",
                   "each row is one vertex (x, y, z) of a closed polygon", file)
    if a.shape[0] < 3:
        raise _err("E543", f"{name} has {a.shape[0]} vertices; a closed polygon needs at least 3", file=file)
    if a.shape[0] > MAX_POINTS:
        raise _err("E543", f"{name} has {a.shape[0]:,} vertices; at most {MAX_POINTS:,} are accepted", file=file)
    if not np.all(np.isfinite(a)):
        row = int(np.flatnonzero(~np.all(np.isfinite(a), axis=1))[0])
        raise _err("E543", f"{name} has NaN or infinite coordinates (the first at vertex {row})", file=file)
    return a


def _segments(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the closed polygon ``a``: segment i joins vertex i to vertex i+1 (mod n)."""
    return a, np.roll(a, -1, axis=0)


def _blocks(n: int, m: int):
    rows = max(1, BLOCK // max(m, 1))
    for i in range(0, n, rows):
        yield slice(i, min(n, i + rows))


def _triangle_solid_angle(r1, r2, r3):
    """Signed solid angle of the triangle (r₁, r₂, r₃) seen from the origin (Van Oosterom–Strackee)."""
    n1, n2, n3 = (np.sqrt(np.einsum("...k,...k->...", r, r)) for r in (r1, r2, r3))
    det = np.einsum("...k,...k->...", r1, np.cross(r2, r3))
    den = (n1 * n2 * n3 + np.einsum("...k,...k->...", r1, r2) * n3 + np.einsum("...k,...k->...", r1, r3) * n2
           + np.einsum("...k,...k->...", r2, r3) * n1)
    return 2.0 * np.arctan2(det, den)


def _solid_angles(p1, p2, q1, q2) -> np.ndarray:
    """Ω (n, m): 4π times the Gauss integral of segment p1[i]→p2[i] against q1[j]→q2[j]."""
    out = np.empty((len(p1), len(q1)))
    for s in _blocks(len(p1), len(q1)):
        P1, P2 = p1[s, None, :], p2[s, None, :]
        r00, r10, r11, r01 = q1[None] - P1, q1[None] - P2, q2[None] - P2, q2[None] - P1
        out[s] = _triangle_solid_angle(r00, r10, r11) + _triangle_solid_angle(r00, r11, r01)
    return out


def pair_solid_angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Ω (n, m): the Gauss integral of segment i of closed polygon ``a`` against segment j of ``b``, times 4π."""
    return _solid_angles(*_segments(np.asarray(a, float)), *_segments(np.asarray(b, float)))


def gauss_linking(a, b) -> float:
    """The Gauss integral of two closed polygons, in closed form (an integer when they are disjoint)."""
    return float(pair_solid_angles(a, b).sum() / (4.0 * math.pi))


def _distances(p1, p2, q1, q2) -> np.ndarray:
    """(n, m): the distance between segment p1[i]→p2[i] and segment q1[j]→q2[j].

    The closest points p1 + s d1, q1 + t d2 minimise |r + s d1 − t d2|² over [0, 1]² (r = p1 − q1):
    the unconstrained s, clamped; t given s, clamped; then s given the clamped t, clamped (exact for
    segments; a zero-length segment is a point)."""
    d1, d2 = p2 - p1, q2 - q1
    E = np.einsum("jk,jk->j", d2, d2)[None, :]
    out = np.empty((len(p1), len(q1)))
    tiny = np.finfo(float).tiny
    for sl in _blocks(len(p1), len(q1)):
        D1 = d1[sl, None, :]
        r = p1[sl, None, :] - q1[None]
        A = np.einsum("ijk,ijk->ij", D1, D1)
        B = np.einsum("ijk,jk->ij", D1, d2)
        C = np.einsum("ijk,ijk->ij", D1, r)
        F = np.einsum("jk,ijk->ij", d2, r)
        den = A * E - B * B
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.clip(np.where(den > 1e-14 * A * E + tiny, (B * F - C * E) / np.where(den > 0, den, 1.0), 0.0),
                        0.0, 1.0)
            t = np.clip(np.where(E > tiny, (B * s + F) / np.where(E > tiny, E, 1.0), 0.0), 0.0, 1.0)
            s = np.where(A > tiny, np.clip((B * t - C) / np.where(A > tiny, A, 1.0), 0.0, 1.0), 0.0)
        diff = r + s[..., None] * D1 - t[..., None] * d2[None]
        out[sl] = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
    return out


def segment_distances(a, b) -> np.ndarray:
    """(n, m): the distance between segment i of closed polygon ``a`` and segment j of ``b``."""
    return _distances(*_segments(np.asarray(a, float)), *_segments(np.asarray(b, float)))


def min_distance(a, b) -> float:
    """The minimum segment-to-segment distance between closed polygons ``a`` and ``b``."""
    return float(segment_distances(a, b).min())


@dataclass
class PolygonLinking:
    """``linking``: the integer linking number, or None when undefined (``reason`` says why);
    ``gauss``: the Gauss sum itself; ``min_distance``: between the two polygons."""

    linking: int | None
    gauss: float
    min_distance: float
    reason: str | None = None


def polygon_linking(a, b) -> PolygonLinking:
    """The exact linking number of closed polygons ``a`` (n, 3) and ``b`` (m, 3), or None where they meet."""
    a, b = check_polygon(a, "the first curve"), check_polygon(b, "the second curve")
    dist = min_distance(a, b)
    extent = float(np.ptp(np.concatenate([a, b]), axis=0).max())
    if not dist > MEET_RTOL * (1.0 + extent):
        return PolygonLinking(None, float("nan"), dist,
                              f"the two polygons meet (distance {dist:.3g}, zero to round-off): the linking "
                              "number is undefined")
    with np.errstate(invalid="ignore"):
        g = gauss_linking(a, b)
    k = round(g) if math.isfinite(g) else None
    if k is None or abs(g - k) > INTEGER_TOL:
        return PolygonLinking(None, g, dist, f"the Gauss sum {g:.6g} is not within {INTEGER_TOL:g} of an integer: "
                                             f"the polygons nearly meet (distance {dist:.3g})")
    return PolygonLinking(int(k), g, dist)


def refine(a: np.ndarray, points: int) -> np.ndarray:
    """The closed polygon ``a`` with each segment split evenly so that it has at least ``points`` vertices
    (the same polygon, so the same linking number; its image through a nonlinear map is followed closer)."""
    n = len(a)
    k = max(1, -(-int(points) // n))
    if k == 1:
        return a
    s = np.arange(k)[None, :, None] / k
    _, nxt = _segments(a)
    return (a[:, None, :] * (1 - s) + nxt[:, None, :] * s).reshape(-1, 3)


# ----------------------------------------------------------------------------------------------
# the built-in links


def parse_link(spec: str, *, file: str = CL) -> tuple[str, int]:
    """``hopf`` | ``unlink`` | ``whitehead`` | ``torus:K`` → (name, K) (K = 0 for the others); E544/E545."""
    from ..errors import did_you_mean

    spec = str(spec).strip()
    name, sep, arg = spec.partition(":")
    if name == "torus":
        if not sep or not arg.strip():
            raise _err("E545", "`torus` needs an integer K: `torus:K` is the (2, 2K) torus link", "e.g. torus:2",
                       file)
        try:
            k = int(arg.strip())
        except ValueError:
            raise _err("E545", f"`torus:{arg}`: K must be an integer, not `{arg}`", "e.g. torus:2 (linking number 2)",
                       file) from None
        if abs(k) > MAX_TORUS_K:
            raise _err("E545", f"`torus:{k}`: |K| must be at most {MAX_TORUS_K}", file=file)
        return "torus", k
    if name in ("hopf", "unlink", "whitehead") and not sep:
        return name, 0
    raise _err("E544", f"unknown link `{spec}`", did_you_mean(name, ["hopf", "unlink", "torus", "whitehead"]) or
               "built-in links: " + ", ".join(LINKS), file)


def min_points(name: str, k: int = 0) -> int:
    """The fewest vertices per curve at which the built-in polygon is the link it names."""
    return {"hopf": 8, "unlink": 8, "whitehead": 16}.get(name, max(16, 8 * abs(k)))


def link_curves(spec: str, points: int = DEFAULT_POINTS, *, file: str = CL) -> tuple[np.ndarray, np.ndarray]:
    """Two closed polygons (``points`` vertices each) forming a built-in link:

    - ``hopf``: a = (cos t, sin t, 0), b = (1 + cos t, 0, −sin t); lk = 1;
    - ``unlink``: a as above, b = a + (3, 0, 0); lk = 0;
    - ``torus:K``: the (2, 2K) torus link, two (1, K) curves on the torus of radii R = 2, r = 1:
      φ = t, θ = −K t + jπ (j = 0, 1), ((R + r cos θ) cos φ, (R + r cos θ) sin φ, r sin θ); lk = K;
    - ``whitehead``: the Whitehead link, lk = 0 although the components are linked: b is the figure
      eight (2 cos t, sin 2t, 0.3 sin t) and a the curve (1.3 cos t, 0.5 sin t, sin 2t) through both
      of its lobes; seen from above, a reduced alternating diagram with 5 crossings (so of crossing
      number 5, which with two components and lk = 0 is the Whitehead link 5²₁).
    """
    name, k = parse_link(spec, file=file)
    if isinstance(points, bool) or not isinstance(points, (int, np.integer)) or points < min_points(name, k):
        raise _err("E546", f"`{spec}` needs at least {min_points(name, k)} points per curve, not {points}",
                   "a coarser polygon is not the link it is named after", file)
    if points > MAX_POINTS:
        raise _err("E546", f"at most {MAX_POINTS:,} points per curve, not {points:,}", file=file)
    t = np.linspace(0.0, 2.0 * math.pi, int(points), endpoint=False)
    return link_points(name, k, t, t)


def link_points(name: str, k: int, ta, tb) -> tuple[np.ndarray, np.ndarray]:
    """The two components of built-in link ``name`` (K = ``k`` for ``torus``) at parameters ``ta``, ``tb``
    (angles in [0, 2π), arrays): points (len ta, 3) and (len tb, 3), as :func:`link_curves` defines them."""
    ta, tb = np.asarray(ta, float), np.asarray(tb, float)
    ca, sa, cb, sb = np.cos(ta), np.sin(ta), np.cos(tb), np.sin(tb)
    if name == "hopf":
        return np.c_[ca, sa, 0 * ta], np.c_[1 + cb, 0 * tb, -sb]
    if name == "unlink":
        return np.c_[ca, sa, 0 * ta], np.c_[3 + cb, sb, 0 * tb]
    if name == "whitehead":
        return np.c_[1.3 * ca, 0.5 * sa, np.sin(2 * ta)], np.c_[2 * cb, np.sin(2 * tb), 0.3 * sb]
    R, r = 2.0, 1.0

    def ring(t, c, s, j):
        th = -k * t + j * math.pi
        return np.c_[(R + r * np.cos(th)) * c, (R + r * np.cos(th)) * s, r * np.sin(th)]

    return ring(ta, ca, sa, 0), ring(tb, cb, sb, 1)


# ----------------------------------------------------------------------------------------------
# point clouds


def farthest_points(X: np.ndarray, m: int) -> np.ndarray:
    """Indices of ``m`` landmarks of X by farthest-point sampling, from the point nearest the centroid."""
    X = np.asarray(X, float)
    m = min(int(m), len(X))
    idx = [int(np.argmin(((X - X.mean(axis=0)) ** 2).sum(axis=1)))]
    d = ((X - X[idx[0]]) ** 2).sum(axis=1)
    for _ in range(m - 1):
        j = int(np.argmax(d))
        idx.append(j)
        d = np.minimum(d, ((X - X[j]) ** 2).sum(axis=1))
    return np.array(idx)


def knn_graph(X: np.ndarray, k: int):
    """The symmetric k-nearest-neighbour graph of the rows of X (networkx; edge weight = distance)."""
    import networkx as nx

    D = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(axis=-1))
    G = nx.Graph()
    G.add_nodes_from(range(len(X)))
    order = np.argsort(D, axis=1, kind="stable")[:, 1:k + 1]
    for i, row in enumerate(order):
        for j in row:
            G.add_edge(i, int(j), weight=float(D[i, j]))
    return G


def cycle_basis(X: np.ndarray, k: int) -> list[np.ndarray]:
    """The minimum cycle basis of the kNN graph of X, each cycle as the (len, 3) polygon of its points."""
    import networkx as nx

    G = knn_graph(X, k)
    return [X[np.array(c)] for c in nx.minimum_cycle_basis(G, weight="weight") if len(c) >= 3]


@dataclass
class PointCloudLinking:
    """``linking``: max |lk| over the defined cycle pairs (None when no pair is defined); ``cycles``:
    the basis sizes of the two classes; ``pairs``: cycle pairs evaluated; ``undefined``: pairs that meet."""

    linking: int | None
    cycles: tuple[int, int]
    pairs: int
    undefined: int
    landmarks: tuple[int, int]
    k: int


def _cycle_linking(ca: list[np.ndarray], cb: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(lk (len ca, len cb) of every cycle pair as the Gauss sum, meets: whether the pair's polygons meet)."""
    A = np.concatenate(ca)
    B = np.concatenate(cb)
    la, lb = np.array([len(c) for c in ca]), np.array([len(c) for c in cb])
    # each cycle's segments join its vertex i to its vertex i + 1 (mod its length), never across cycles
    p2, q2 = (np.concatenate([np.roll(c, -1, axis=0) for c in cs]) for cs in (ca, cb))
    p1, q1 = A, B
    ia, ib = np.repeat(np.arange(len(ca)), la), np.repeat(np.arange(len(cb)), lb)
    Pa = np.zeros((len(ca), len(A)))
    Pa[ia, np.arange(len(A))] = 1.0
    Pb = np.zeros((len(cb), len(B)))
    Pb[ib, np.arange(len(B))] = 1.0
    omega, dist = _solid_angles(p1, p2, q1, q2), _distances(p1, p2, q1, q2)
    extent = float(np.ptp(np.concatenate([A, B]), axis=0).max())
    meets = (Pa @ (dist <= MEET_RTOL * (1.0 + extent)) @ Pb.T) > 0
    with np.errstate(invalid="ignore"):
        lk = Pa @ np.nan_to_num(omega) @ Pb.T / (4.0 * math.pi)
    return lk, meets


def point_cloud_linking(XA, XB, *, k: int = 5, landmarks: int = 32) -> PointCloudLinking:
    """Estimate the linking between two point clouds (classes) with no curve given.

    Per class: ``landmarks`` points by farthest-point sampling, their symmetric ``k``-nearest-neighbour
    graph, its minimum cycle basis (``networkx.minimum_cycle_basis``, weights = lengths); then the
    exact polygon linking number of every (cycle of A, cycle of B) pair. Returns max |lk| over the pairs
    that do not meet (0 when a class has no cycle)."""
    XA, XB = check_classes((XA, XB))
    la, lb = farthest_points(XA, landmarks), farthest_points(XB, landmarks)
    ca, cb = cycle_basis(XA[la], k), cycle_basis(XB[lb], k)
    if not ca or not cb:
        return PointCloudLinking(0, (len(ca), len(cb)), 0, 0, (len(la), len(lb)), k)
    lk, meets = _cycle_linking(ca, cb)
    ok = ~meets
    best = int(np.max(np.abs(np.round(lk[ok])))) if ok.any() else None
    return PointCloudLinking(best, (len(ca), len(cb)), int(lk.size), int(meets.sum()), (len(la), len(lb)), k)


# ----------------------------------------------------------------------------------------------
# images at the stalks of a sheaf


@dataclass
class LayerLinking:
    """One 3-dim stalk: the linking number of the two image polygons there (None where they meet, with
    ``reason``), their minimum distance, the Gauss sum, and the image polygons (n, 3), (m, 3); with
    classes, ``point_cloud``, the estimate for their images. Without curves (classes only) ``linking``
    is the point-cloud estimate and ``min_distance`` the distance between the two image clouds."""

    stalk: str
    linking: int | None
    min_distance: float
    gauss: float | None
    reason: str | None
    a: np.ndarray | None = field(repr=False, default=None)
    b: np.ndarray | None = field(repr=False, default=None)
    point_cloud: PointCloudLinking | None = None

    def to_json(self) -> dict:
        return {"stalk": self.stalk, "linking": self.linking, "min_distance": float(self.min_distance)}


@dataclass
class LinkingReport:
    """The linking number at every 3-dim stalk, in forward order, the input first (``layers``);
    ``curves`` says what was pushed through (a link's name, a file, or ``classes``)."""

    layers: list
    curves: str
    points: tuple[int, int]

    @property
    def linking(self) -> dict:
        """stalk -> linking number (None where undefined)."""
        return {la.stalk: la.linking for la in self.layers}

    def to_json(self) -> dict:
        out = {"layers": [la.to_json() for la in self.layers], "curves": self.curves, "points": list(self.points),
               "undefined": {la.stalk: la.reason for la in self.layers if la.linking is None}}
        if any(la.point_cloud is not None for la in self.layers):
            out["point_cloud"] = [{"stalk": la.stalk, "linking": la.point_cloud.linking,
                                   "cycles": list(la.point_cloud.cycles), "pairs": la.point_cloud.pairs,
                                   "undefined_pairs": la.point_cloud.undefined}
                                  for la in self.layers if la.point_cloud is not None]
        return out


def forward_stalks(G) -> list[str]:
    """The stalks in forward (topological) order, ties by declaration; the input stalk first.
    A sheaf whose edges form a directed cycle keeps the declaration (cochain) order."""
    import networkx as nx

    from ..ir import pinned_stalks, stalks

    order = [v for v in stalks(G) if not G.nodes[v].get("anchor")]
    pos = {v: i for i, v in enumerate(order)}
    H = nx.DiGraph()
    H.add_nodes_from(order)
    H.add_edges_from((u, v) for u, v in G.edges() if u in pos and v in pos and u != v)
    try:
        order = list(nx.lexicographical_topological_sort(H, key=pos.__getitem__))
    except nx.NetworkXUnfeasible:
        pass
    ins = pinned_stalks(G, "input")
    return ins + [v for v in order if v not in ins]


def input_stalk(G, model=None, *, file: str = CL) -> str:
    """The one input stalk of ``G``, of dimension 3 (E548 otherwise, at its declaration when ``model`` is given)."""
    from ..ir import pinned_stalks

    ins = pinned_stalks(G, "input")
    path = (model.path if model is not None else None) or G.graph.get("path") or file
    if len(ins) != 1:
        raise _err("E548", f"linking needs exactly one stalk pinned to `input` (this model has {len(ins)})",
                   "add `pin x = input` to a stalk of dimension 3", path)
    v = ins[0]
    if G.nodes[v]["dim"] != 3:
        span = NOSPAN
        if model is not None and v in model.stalks:
            span = model.stalks[v].span
        raise _err("E548", f"the input stalk `{v}` has dimension {G.nodes[v]['dim']}; linking numbers need "
                           "curves in ℝ³, so the input stalk must have dimension 3", "declare it `stalk "
                   f"{v} : 3` (or `network ... : 3 -> ...`)", path, span)
    return v


def check_classes(classes, *, file: str = CL) -> tuple[np.ndarray, np.ndarray]:
    """Two point clouds in ℝ³, each (n, 3) with n ≥ 3 and finite (E547 otherwise)."""
    try:
        XA, XB = classes
        XA, XB = np.asarray(XA, dtype=float), np.asarray(XB, dtype=float)
    except (TypeError, ValueError):
        raise _err("E547", "classes must be a pair of point arrays (XA, XB), each of shape (n, 3)", file=file) from None
    for name, X in (("the first class", XA), ("the second class", XB)):
        if X.ndim != 2 or X.shape[1] != 3 or len(X) < 3:
            raise _err("E547", f"{name} must be at least 3 points in ℝ³ (shape (n, 3)), not shape {X.shape}",
                       "the points of each class are the rows; the input stalk has dimension 3", file)
        if not np.all(np.isfinite(X)):
            raise _err("E547", f"{name} has NaN or infinite coordinates", file=file)
    return XA, XB


def layer_linking(G, params: dict, a=None, b=None, *, model=None, classes=None, k: int = 5, landmarks: int = 32,
                  curves: str = "curves", file: str = CL) -> LinkingReport:
    """The linking number of the images of polygons ``a`` and ``b`` at every 3-dim stalk of ``G``.

    The images are the harmonic extension with the input stalk pinned to the vertices (the inference
    pins; on a feed-forward network, the forward pass): one solve for all n + m vertices. With
    ``classes = (XA, XB)`` (points of two classes in ℝ³) also the point-cloud estimate of their images
    at each 3-dim stalk (:func:`point_cloud_linking`); with classes and no curves, that estimate is
    the layer's ``linking``."""
    from ..ir import INFERENCE
    from ..lowering import to_numpy
    from ..solvers import solve

    x = input_stalk(G, model, file=file)
    pts = []
    if a is not None or b is not None:
        pts = [check_polygon(a, "the first curve", file=file), check_polygon(b, "the second curve", file=file)]
    elif classes is None:
        raise _err("E547", "nothing to push through: give two curves, or two classes of points", file=file)
    if classes is not None:
        pts += list(check_classes(classes, file=file))
    X = np.concatenate(pts)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        res = solve(G, params, {x: X}, method="exact", sources=INFERENCE)
    cuts = np.cumsum([len(p) for p in pts])[:-1]
    layers = []
    for v in forward_stalks(G):
        if G.nodes[v]["dim"] != 3:
            continue
        img = np.asarray(to_numpy(res.stalk(v)), dtype=float)
        if not np.all(np.isfinite(img)):
            raise _err("E549", f"the image at stalk `{v}` has infinite or NaN coordinates",
                       "the weights or the points are too large for float64: rescale them", file)
        parts = np.split(img, cuts)
        cloud = point_cloud_linking(parts[-2], parts[-1], k=k, landmarks=landmarks) if classes is not None else None
        if a is None and b is None:
            d = float(np.sqrt(((parts[0][:, None] - parts[1][None]) ** 2).sum(-1)).min())
            why = None if cloud.linking is not None else "every pair of cycles of the two classes meets"
            layers.append(LayerLinking(v, cloud.linking, d, None, why, parts[0], parts[1], cloud))
            continue
        r = polygon_linking(parts[0], parts[1])
        layers.append(LayerLinking(v, r.linking, r.min_distance, r.gauss, r.reason, parts[0], parts[1], cloud))
    n = (len(pts[0]), len(pts[1]))
    return LinkingReport(layers, curves, n)


def figure_layers(report: LinkingReport, title: str = ""):
    """A matplotlib figure: one 3-D panel per 3-dim stalk, both image curves (with classes only, the
    image clouds), the linking number in the title. (The API and the CLI write it atomically.)"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(report.layers))
    cols = min(n, 4)
    rows = -(-n // cols)
    fig = plt.figure(figsize=(3.6 * cols, 3.4 * rows))
    for i, la in enumerate(report.layers):
        ax = fig.add_subplot(rows, cols, i + 1, projection="3d")
        for c, colour in ((la.a, "tab:blue"), (la.b, "tab:orange")):
            if la.gauss is None:  # classes only: the image clouds
                ax.scatter(c[:, 0], c[:, 1], c[:, 2], color=colour, s=2)
                continue
            cc = np.vstack([c, c[:1]])
            ax.plot(cc[:, 0], cc[:, 1], cc[:, 2], color=colour, lw=1.2)
        lk = "undefined" if la.linking is None else str(la.linking)
        extra = "" if la.point_cloud is None or la.gauss is None else f", cloud {la.point_cloud.linking}"
        ax.set_title(f"{la.stalk}: lk = {lk}{extra}", fontsize=10)
        ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


__all__ = ["polygon_linking", "gauss_linking", "pair_solid_angles", "segment_distances", "min_distance", "refine",
           "link_curves", "link_points", "parse_link", "check_polygon", "check_classes", "point_cloud_linking", "farthest_points",
           "knn_graph", "cycle_basis", "layer_linking", "forward_stalks", "input_stalk", "figure_layers",
           "PolygonLinking", "PointCloudLinking", "LayerLinking", "LinkingReport", "LINKS", "DEFAULT_POINTS"]
