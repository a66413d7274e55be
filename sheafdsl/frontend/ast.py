"""The typed AST of a .sheaf file: plain frozen dataclasses.

Every node carries a :class:`~sheafdsl.errors.Span`. Spans are excluded from equality, so that
``parse(format(ast)) == ast`` holds whatever the layout.

A literal value is a float, or a tuple of literal values (a vector; a tuple of vectors is a matrix).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from ..errors import NOSPAN, Span
from ..nonlinearities import NAMES

LitValue = Union[float, tuple]


def _span() -> Span:
    return field(default=NOSPAN, compare=False, repr=False)


@dataclass(frozen=True)
class Ident:
    """A name as written, with where it was written."""

    value: str
    span: Span = _span()

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Lit:
    """A numeric literal: a number, a vector ``[..]`` or a matrix ``[[..], ..]``."""

    value: LitValue
    span: Span = _span()

    @property
    def depth(self) -> int:
        """0 for a number, 1 for a vector, 2 for a matrix (of the first element)."""
        d, v = 0, self.value
        while isinstance(v, tuple):
            d += 1
            if not v:
                break
            v = v[0]
        return d


@dataclass(frozen=True)
class Header:
    """``sheaf NAME``"""

    name: Ident
    span: Span = _span()


@dataclass(frozen=True)
class StalkDecl:
    """``stalk NAME : DIM``"""

    name: Ident
    dim: int
    span: Span = _span()
    dim_span: Span = _span()


@dataclass(frozen=True)
class InitSpec:
    """``init he | xavier | zeros | ones | normal(STD) | "file.npz"[:KEY]``"""

    kind: Ident  # he, xavier, zeros, ones, normal, or "file"
    arg: float | None = None  # the std of normal(STD)
    file: str | None = None
    key: Ident | None = None
    span: Span = _span()


@dataclass(frozen=True)
class ParamDecl:
    """``param NAME : ROWS [x COLS] init ...`` or ``param NAME : ROWS [x COLS] = LITERAL``"""

    name: Ident
    shape: tuple[int, ...]
    init: InitSpec | None = None
    value: Lit | None = None
    span: Span = _span()
    shape_span: Span = _span()


#: affine and linear, every nonlinearity of the registry (identity, relu, ..., softmax), maps
EDGE_KINDS = ("affine", "linear") + NAMES + ("maps",)


@dataclass(frozen=True)
class EdgeDecl:
    """``edge NAME : SRC -> DST KIND ARGS [weight W | hard]``

    ``hard``: the edge is the constraint (δc)_e = 0 (``hard_span`` is where ``hard`` is written), not the
    penalty ½ w² ‖(δc)_e‖²; a file that writes both ``weight`` and ``hard`` parses (the checker refuses it).
    ``args`` holds, by kind: affine (W, b?) and linear (W,) as Idents; maps (M_src, M_dst), each an
    Ident (a parameter) or a Lit; the numeric argument as a Lit for a registry entry that takes one
    (``leaky_relu SLOPE``); nothing for the other nonlinearities (relu, identity, tanh, ...).
    """

    name: Ident
    src: Ident
    dst: Ident
    kind: str
    args: tuple = ()
    weight: float | None = None
    span: Span = _span()
    kind_span: Span = _span()
    weight_span: Span = _span()
    hard: bool = False
    hard_span: Span = _span()
    src_block: tuple[int, int] | None = None
    dst_block: tuple[int, int] | None = None
    src_block_span: Span = _span()
    dst_block_span: Span = _span()
    direction: str | None = None
    direction_span: Span = _span()


@dataclass(frozen=True)
class ObjectiveDecl:
    """``objective STALK KIND ARGS``: a term of the stalk's local convex objective f_v (KIND is one of
    ``options.OBJECTIVE_KINDS``).

    ``args`` by kind: quadratic (Q, q?) each an Ident (a parameter) or a Lit; box (LO, HI) Lits; l1
    (LAMBDA,) a Lit; encoded (ENC, OBS) Idents; nonneg and simplex nothing. ``kind_span`` is where the kind keyword is written.
    """

    stalk: Ident
    kind: str
    args: tuple = ()
    span: Span = _span()
    kind_span: Span = _span()


@dataclass(frozen=True)
class PinDecl:
    """A pin of a stalk, or of some of its coordinates.

    Hard: ``pin NAME[idx] = input | target | LITERAL``; soft: ``pin NAME[idx] ~ LITERAL weight W``.
    ``value`` is ``"input"``, ``"target"`` or a :class:`Lit`; ``weight`` is set iff the pin is soft.
    """

    stalk: Ident
    value: object
    indices: tuple[int, ...] | None = None
    weight: float | None = None
    span: Span = _span()
    index_span: Span = _span()
    value_span: Span = _span()
    weight_span: Span = _span()
    index_spans: tuple[Span, ...] = field(default=(), compare=False, repr=False)

    @property
    def soft(self) -> bool:
        return self.weight is not None


@dataclass(frozen=True)
class ReluctanceDecl:
    """``reluctance P1 P2 ... weight W``: an edge from each parameter to a zero anchor."""

    params: tuple[Ident, ...]
    weight: float
    span: Span = _span()
    weight_span: Span = _span()


@dataclass(frozen=True)
class TieDecl:
    """``tie P1 ~ P2 weight W``: an identity edge between two parameters in the parameter sheaf."""

    a: Ident
    b: Ident
    weight: float
    span: Span = _span()
    weight_span: Span = _span()


@dataclass(frozen=True)
class LayerActivation:
    """A hidden layer's activation in the ``network`` sugar: a registry name and its argument, if any
    (``tanh``, ``leaky_relu 0.1``)."""

    name: Ident
    arg: Lit | None = None
    span: Span = _span()


@dataclass(frozen=True)
class NetworkDecl:
    """``network NAME : N0 -> N1 [ACT] -> ... -> NL [ACT] [output OUT [weight W]]``

    ``layers``: one :class:`LayerActivation` or None per hidden width N1..N(L−1), as written after it;
    ``activation`` and ``activation_arg``: the one written after the last width NL, the default of the
    hidden layers that name none (relu when absent); ``output``: the output map (identity when absent),
    ``output_weight``: the output edge's weight w_o when given.
    """

    name: Ident
    widths: tuple[int, ...]
    activation: Ident | None = None
    output: Ident | None = None
    span: Span = _span()
    width_spans: tuple[Span, ...] = field(default=(), compare=False, repr=False)
    layers: tuple = ()
    activation_arg: Lit | None = None
    output_weight: float | None = None
    output_weight_span: Span = _span()

    def layer_activations(self) -> list:
        """(name Ident, arg Lit | None) of each hidden layer 1..L−1, defaults filled in (None: relu)."""
        L = len(self.widths) - 1
        own = list(self.layers) + [None] * max(0, L - 1 - len(self.layers))
        dflt = (self.activation, self.activation_arg) if self.activation is not None else None
        return [(a.name, a.arg) if a is not None else dflt for a in own[:max(0, L - 1)]]


@dataclass(frozen=True)
class TrainItem:
    """``KEY=VALUE`` inside a ``train`` statement; value is a float or a string."""

    key: Ident
    value: object
    quoted: bool = False
    span: Span = _span()


@dataclass(frozen=True)
class TrainDecl:
    """``train KEY=VALUE ...``: defaults for ``sheaf train``."""

    items: tuple[TrainItem, ...]
    span: Span = _span()


@dataclass(frozen=True)
class EncoderDecl:
    """``encoder NAME : DIN -> H1 [ACT] -> ... -> DOUT [nobias]``: an MLP whose output layer is affine (linear
    with ``nobias``: no layer has a bias, so a zero observation encodes to h = 0).

    ``widths`` (DIN, H1, ..., DOUT); ``activations``: one Ident or None per hidden width H1..H(L−1) (None:
    tanh); one written after DOUT is kept in ``output_activation`` so that the checker can refuse it.
    """

    name: Ident
    widths: tuple[int, ...]
    activations: tuple = ()
    output_activation: Ident | None = None
    span: Span = _span()
    width_spans: tuple[Span, ...] = field(default=(), compare=False, repr=False)
    bias: bool = True


@dataclass(frozen=True)
class GridDecl:
    """``grid NAME : DIM observe ODIM encoded ENC``: agents NAME[i, j] on an R × C grid (R, C from the data)."""

    name: Ident
    dim: int
    obs_dim: int
    encoder: Ident
    span: Span = _span()
    dim_span: Span = _span()
    obs_span: Span = _span()


@dataclass(frozen=True)
class DecodeSource:
    """One source of a decoder: a stalk (or grid), with an optional block ``[a:b]`` of its coordinates."""

    name: Ident
    block: tuple[int, int] | None = None
    span: Span = _span()
    block_span: Span = _span()


@dataclass(frozen=True)
class DecodeDecl:
    """``decode Y : [mean|sum] SRC ... affine W [b] KIND``: ŷ = φ_KIND(W · pool(sources) + b), ``pool`` the mean or
    the sum of the sources (None: one source, read as it is), KIND identity (mse), softmax (cross-entropy) or
    sigmoid (binary cross-entropy)."""

    target: Ident
    sources: tuple[DecodeSource, ...]
    W: Ident
    b: Ident | None = None
    kind: str = "identity"
    pool: str | None = None
    span: Span = _span()
    kind_span: Span = _span()


Statement = Union[Header, StalkDecl, ParamDecl, EdgeDecl, PinDecl, ReluctanceDecl, TieDecl, NetworkDecl, TrainDecl,
                  ObjectiveDecl, EncoderDecl, GridDecl, DecodeDecl]


@dataclass(frozen=True)
class Module:
    """A whole file: its statements in order."""

    statements: tuple
    path: str = field(default="<input>", compare=False)
    source: str = field(default="", compare=False, repr=False)

    def of_type(self, cls) -> list:
        return [s for s in self.statements if isinstance(s, cls)]
