"""The checked model: what a valid .sheaf file means, with sugar expanded and every reference resolved.

Plain data (no numerics): literals are nested tuples of floats. The IR layer
(:mod:`sheafdsl.ir`) is built from this, or directly from Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import NOSPAN, Span
from ..nonlinearities import NAMES, NONLINEAR
from ..options import INIT_KINDS  # noqa: F401 (re-exported: the one list of initialisers)

#: the edges whose restriction map on the source is a fixed nonlinearity (not a linear map or the ReLU gate)
NONLINEAR_KINDS = NONLINEAR
#: the edges that map their head (dst) vertex by the identity
HEAD_IDENTITY_KINDS = ("affine", "linear") + NAMES


@dataclass(frozen=True)
class Stalk:
    """A vertex stalk F(v) = R^dim."""

    name: str
    dim: int
    span: Span = field(default=NOSPAN, compare=False)


@dataclass(frozen=True)
class Param:
    """A parameter (a stalk of the parameter sheaf): a matrix (rows, cols) or a vector (n,).

    ``init`` is one of INIT_KINDS; ``std`` is set for normal, ``value`` for literal, ``file``/``key``
    for a file (the path as written, resolved against ``base_dir`` when loaded).
    """

    name: str
    shape: tuple[int, ...]
    init: str = "he"
    std: float | None = None
    value: object = None
    file: str | None = None
    key: str | None = None
    base_dir: str = field(default=".", compare=False)
    span: Span = field(default=NOSPAN, compare=False)

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class MapRef:
    """One restriction map F_{v◁e} as written: a parameter, a constant matrix, or a scalar times I.

    Exactly one of ``param``, ``matrix`` and ``scale`` is set.
    """

    param: str | None = None
    matrix: tuple | None = None
    scale: float | None = None


@dataclass(frozen=True)
class Edge:
    """An edge e = (src → dst) with its discord (δc)_e.

    ======== ===================================== ===========================
    kind     discord                                 restriction maps (src | dst)
    ======== ===================================== ===========================
    affine   c_dst − (W c_src + b)                   W | I, offset b
    linear   c_dst − W c_src                         W | I
    relu     c_dst − diag(1[c_src ≥ 0]) c_src        gate | I
    identity c_dst − c_src                           I | I
    φ        c_dst − φ(c_src)                        nonlinear | I
    maps     M_dst c_dst − M_src c_src               M_src | M_dst
    ======== ===================================== ===========================

    φ is any other entry of the nonlinearity registry (:mod:`sheafdsl.nonlinearities`: leaky_relu,
    tanh, gelu, softplus, sigmoid, softmax); ``arg`` is its numeric argument (the leaky_relu slope).
    ``dim`` is the edge stalk dimension d_e; ``weight`` is w_e, so the edge's energy is ½ w_e² ‖(δc)_e‖²;
    ``hard``: instead, the edge is the constraint (δc)_e = 0 (its weight is unused).
    """

    name: str
    src: str
    dst: str
    kind: str
    dim: int
    weight: float = 1.0
    W: str | None = None
    b: str | None = None
    src_map: MapRef | None = None
    dst_map: MapRef | None = None
    arg: float | None = None
    span: Span = field(default=NOSPAN, compare=False)
    hard: bool = False
    src_block: tuple[int, int] | None = None
    dst_block: tuple[int, int] | None = None
    direction: str | None = None


@dataclass(frozen=True)
class Objective:
    """A term of the local convex objective f_v of stalk ``stalk`` (x = c_v ∈ R^d; terms of one stalk add up).

    ======== ======================== =====================================================
    kind     f(x)                     data
    ======== ======================== =====================================================
    quadratic ½ xᵀQx + qᵀx            ``Q`` (d×d, symmetric PSD), ``q`` (d,): each a MapRef-like
                                      :class:`ObjectiveData` (a parameter, or a literal)
    nonneg   indicator of x ≥ 0
    box      indicator of lo ≤ x ≤ hi ``lo``, ``hi``: tuples of d floats (±inf allowed)
    simplex  indicator of x ≥ 0, Σx = 1
    l1       lam ‖x‖₁                 ``lam`` ≥ 0
    encoded  ½ xᵀQx + qᵀx             Q = diag(softplus(h[:d])), q = h[d:], h = ``encoder``(c_``obs``)
    ======== ======================== =====================================================

    ``encoder``/``obs`` name the encoder and the observation stalk of an ``encoded`` term (for a grid's
    agents, ``stalk`` is the grid's name and ``obs`` is None: each agent observes its own patch).
    """

    stalk: str
    kind: str
    Q: "ObjectiveData | None" = None
    q: "ObjectiveData | None" = None
    lo: tuple | None = None
    hi: tuple | None = None
    lam: float | None = None
    span: Span = field(default=NOSPAN, compare=False)
    encoder: str | None = None
    obs: str | None = None


@dataclass(frozen=True)
class ObjectiveData:
    """Q or q of a quadratic objective as written: a parameter name, or a literal (nested tuples of floats,
    full size: a number written for q is broadcast by the checker). Exactly one is set."""

    param: str | None = None
    value: tuple | None = None


@dataclass(frozen=True)
class Pin:
    """A hard pin: coordinates ``indices`` of a stalk (all when None) are fixed.

    ``source`` is ``"input"`` or ``"target"`` (filled by data) or ``"value"`` (the constant ``value``,
    a tuple with one float per pinned coordinate).
    """

    stalk: str
    source: str
    indices: tuple[int, ...] | None = None
    value: tuple[float, ...] | None = None
    span: Span = field(default=NOSPAN, compare=False)


@dataclass(frozen=True)
class SoftPin:
    """A soft pin: an edge of weight ``weight`` from the stalk's coordinates to a constant anchor.

    Energy ½ weight² ‖c_stalk[indices] − value‖².
    """

    name: str
    stalk: str
    value: tuple[float, ...]
    weight: float
    indices: tuple[int, ...] | None = None
    span: Span = field(default=NOSPAN, compare=False)


@dataclass(frozen=True)
class Reluctance:
    """An edge of weight ``weight`` from a parameter to the zero anchor: energy ½ weight² ‖θ‖²."""

    param: str
    weight: float
    span: Span = field(default=NOSPAN, compare=False)


@dataclass(frozen=True)
class Tie:
    """An identity edge between two same-shaped parameters: energy ½ weight² ‖θ_a − θ_b‖²."""

    a: str
    b: str
    weight: float
    span: Span = field(default=NOSPAN, compare=False)


@dataclass(frozen=True)
class NetworkInfo:
    """What the ``network`` sugar declared: the widths [n0, ..., nL], the hidden activation (``mixed``
    when the layers differ), the output nonlinearity, each hidden layer's (activation, argument) and
    the output edge's weight."""

    name: str
    widths: tuple[int, ...]
    activation: str = "relu"
    output: str = "identity"
    layers: tuple = ()
    output_weight: float = 1.0


#: the hidden activations an encoder may use (``encoder e : 4 -> 8 relu -> 6``)
ENCODER_ACTIVATIONS = ("tanh", "relu", "sigmoid", "softplus", "identity")
#: the activations with φ(0) = 0: the hidden layers a ``nobias`` encoder may use (so that h(0) = 0)
ZERO_AT_ZERO = ("tanh", "relu", "identity")
#: the decoder kinds and their losses
DECODER_KINDS = {"identity": "mse", "softmax": "cross-entropy", "sigmoid": "binary cross-entropy"}


@dataclass(frozen=True)
class Encoder:
    """An MLP h = W_L φ_{L−1}(… φ_1(W_1 o + b_1) …) + b_L; ``layers``: (W, b) parameter names per layer (b None
    for an encoder declared ``nobias``: then h(0) = 0, since every φ_k(0) = 0), ``activations``: φ_1..φ_{L−1}."""

    name: str
    widths: tuple[int, ...]
    activations: tuple[str, ...]
    layers: tuple[tuple[str, str | None], ...]
    span: Span = field(default=NOSPAN, compare=False)


@dataclass(frozen=True)
class Grid:
    """A family of agents NAME[i, j] on an R × C grid (R, C from the data): stalk ``dim`` each, an
    observation of ``obs_dim`` numbers pinned to the input, the objective ``encoded encoder``."""

    name: str
    dim: int
    obs_dim: int
    encoder: str
    span: Span = field(default=NOSPAN, compare=False)


@dataclass(frozen=True)
class Decoder:
    """ŷ = φ(W · pool_s x_s + b) into the target-pinned stalk ``target``; ``sources``: (stalk or grid, block
    (a, b) or None); ``pool`` "mean" or "sum" over the sources (a grid: over its agents); ``kind`` identity (mse),
    softmax (cross-entropy) or sigmoid (binary cross-entropy)."""

    target: str
    sources: tuple
    W: str
    b: str | None
    kind: str
    span: Span = field(default=NOSPAN, compare=False)
    pool: str = "mean"


@dataclass
class Model:
    """A checked model. Dicts keep declaration order."""

    name: str
    stalks: dict[str, Stalk]
    params: dict[str, Param]
    edges: dict[str, Edge]
    pins: list[Pin]
    soft_pins: list[SoftPin]
    reluctances: list[Reluctance]
    ties: list[Tie]
    train: dict[str, object]
    network: NetworkInfo | None = None
    path: str = "<input>"
    source: str = ""
    objectives: list = field(default_factory=list)
    encoders: dict = field(default_factory=dict)
    grids: dict = field(default_factory=dict)
    decoders: list = field(default_factory=list)

    @property
    def is_learned(self) -> bool:
        """True for a learned consensus model (docs/admm.md "Learning"): an encoder, a grid or a decoder."""
        return bool(self.encoders or self.grids or self.decoders)

    @property
    def is_consensus(self) -> bool:
        """True when the model states a consensus problem: some objective, or some hard edge (it is solved,
        ``sheaf infer --solver admm``, not trained)."""
        return bool(self.objectives) or any(e.hard for e in self.edges.values())

    def pins_of(self, source: str) -> list[Pin]:
        return [p for p in self.pins if p.source == source]

    @property
    def input_stalks(self) -> list[str]:
        return [p.stalk for p in self.pins_of("input")]

    @property
    def target_stalks(self) -> list[str]:
        return [p.stalk for p in self.pins_of("target")]
