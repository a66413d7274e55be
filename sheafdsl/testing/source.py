"""hypothesis strategies for the language: ASTs, and the source text of valid models.

Two families:

- **syntax** (:func:`modules` and the per-statement strategies): any AST the grammar can produce,
  checkable or not (unknown names, wrong shapes, negative weights, ``inf`` are all fair). For the
  round trip ``parse(format(ast)) == ast``. Numbers are never NaN (NaN ≠ NaN would make equality
  meaningless); infinities are allowed.
- **models** (:func:`model_sources`, :func:`network_sources`, :func:`general_sheaf_sources`): source
  text that passes ``sheaf check``: ReLU networks (sugar or written out, with literal weights,
  reluctance, ties and a ``train`` block), and general sheaves on random graphs (literal and
  parameter restriction maps, identity/linear/affine edges, hard, partial and soft pins, weights).
  :func:`with_comments` sprinkles comments over any of them.

>>> from hypothesis import given
>>> from sheafdsl.frontend import load_text
>>> @given(model_sources())
... def test_valid(src):
...     load_text(src)
"""

from __future__ import annotations

import string

from hypothesis import strategies as st

from ..frontend import ast as A
from ..frontend.formatter import format_literal, format_number
from ..frontend.parser import keywords
from ..nonlinearities import TABLE as NONLINEARITIES
from ..options import OPTIMIZERS

__all__ = [
    "names", "numbers", "literal_values", "literals", "headers", "stalk_decls", "init_specs", "param_decls",
    "edge_decls", "pin_decls", "reluctance_decls", "tie_decls", "network_decls", "train_decls", "statements",
    "modules", "network_sources", "general_sheaf_sources", "model_sources", "with_comments", "comment_texts",
    "objective_decls", "consensus_sources",
]

#: words that are numbers to the lexer (any case), so they cannot be names where a number may stand
NUMBER_WORDS = ("nan", "inf", "infinity")
MAX_INT = 10**12 - 1  # the parser takes integers of up to 12 digits


def _is_name(s: str) -> bool:
    return s not in keywords() and s.lower() not in NUMBER_WORDS


def names() -> st.SearchStrategy[str]:
    """Identifiers ``[A-Za-z_][A-Za-z0-9_]*`` that are not keywords and not ``nan``/``inf``."""
    return st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,7}", fullmatch=True).filter(_is_name)


def idents() -> st.SearchStrategy[A.Ident]:
    return names().map(A.Ident)


def numbers(allow_infinity: bool = True) -> st.SearchStrategy[float]:
    """Floats that survive a round trip through text (every float but NaN)."""
    return st.floats(allow_nan=False, allow_infinity=allow_infinity)


def literal_values(max_depth: int = 2) -> st.SearchStrategy:
    """A number, or nested tuples of numbers (possibly ragged or empty) up to ``max_depth`` deep."""
    return st.recursive(numbers(), lambda inner: st.lists(inner, max_size=4).map(tuple),
                        max_leaves=12).filter(lambda v: _depth(v) <= max_depth)


def _depth(v) -> int:
    return 0 if not isinstance(v, tuple) else 1 + max((_depth(x) for x in v), default=0)


def literals(max_depth: int = 2) -> st.SearchStrategy[A.Lit]:
    return literal_values(max_depth).map(A.Lit)


def _ints(lo: int = 0, hi: int = MAX_INT) -> st.SearchStrategy[int]:
    return st.one_of(st.integers(lo, min(hi, 64)), st.integers(lo, hi))


def _strings() -> st.SearchStrategy[str]:
    """The body of a ``"..."`` string: no quote, no line break."""
    return st.text(st.characters(blacklist_characters='"\r\n\x00', blacklist_categories=("Cs",)), max_size=12)


def headers():
    return st.builds(A.Header, idents())


def stalk_decls():
    return st.builds(A.StalkDecl, idents(), _ints())


def init_specs():
    named = st.builds(lambda k, a: A.InitSpec(A.Ident(k), arg=a), names(), st.none() | numbers())
    files = st.builds(lambda f, k: A.InitSpec(A.Ident("file"), file=f, key=k), _strings(), st.none() | idents())
    return named | files


def _shapes():
    return st.lists(_ints(), min_size=1, max_size=2).map(tuple)


def param_decls():
    with_init = st.builds(lambda n, s, i: A.ParamDecl(n, s, init=i), idents(), _shapes(), init_specs())
    with_value = st.builds(lambda n, s, v: A.ParamDecl(n, s, value=v), idents(), _shapes(), literals(3))
    return with_init | with_value


def edge_decls():
    map_arg = idents() | literals(2)
    args = st.one_of(
        st.tuples(st.just("affine"), st.lists(idents(), min_size=1, max_size=2).map(tuple)),
        st.tuples(st.just("linear"), st.tuples(idents())),
        st.tuples(st.sampled_from([a.name for a in NONLINEARITIES.values() if a.arg is None]), st.just(())),
        st.tuples(st.sampled_from([a.name for a in NONLINEARITIES.values() if a.arg is not None]),
                  st.tuples(numbers().map(A.Lit))),
        st.tuples(st.just("maps"), st.tuples(map_arg, map_arg)),
    )
    return st.builds(lambda n, s, d, ka, w, h: A.EdgeDecl(n, s, d, ka[0], ka[1], w, hard=h),
                     idents(), idents(), idents(), args, st.none() | numbers(), st.booleans())


def objective_decls():
    """``objective STALK KIND ...`` of every kind the grammar takes (an unknown kind, a name, included)."""
    arg = idents() | literals(2)
    by_kind = st.one_of(
        st.tuples(st.just("quadratic"), st.lists(arg, min_size=1, max_size=2).map(tuple)),
        st.tuples(st.sampled_from(["nonneg", "simplex"]), st.just(())),
        st.tuples(st.just("box"), st.tuples(literals(1), literals(1))),
        st.tuples(st.just("l1"), st.tuples(literals(1))),
        st.tuples(names(), st.lists(arg, max_size=2).map(tuple)),
    )
    return st.builds(lambda s, ka: A.ObjectiveDecl(s, ka[0], ka[1]), idents(), by_kind)


def pin_decls():
    indices = st.none() | st.lists(_ints(), min_size=1, max_size=4).map(tuple)
    hard = st.builds(lambda s, i, v: A.PinDecl(s, v, i), idents(), indices,
                     st.sampled_from(["input", "target"]) | literals(2))
    soft = st.builds(lambda s, i, v, w: A.PinDecl(s, v, i, w), idents(), indices, literals(2), numbers())
    return hard | soft


def reluctance_decls():
    return st.builds(A.ReluctanceDecl, st.lists(idents(), min_size=1, max_size=4).map(tuple), numbers())


def tie_decls():
    return st.builds(A.TieDecl, idents(), idents(), numbers())


def _layer_activations():
    return st.builds(A.LayerActivation, idents(), st.none() | numbers().map(A.Lit))


@st.composite
def network_decls(draw):
    widths = draw(st.lists(_ints(), min_size=2, max_size=5).map(tuple))
    act = draw(st.none() | _layer_activations())
    layers = draw(st.lists(st.none() | _layer_activations(), min_size=len(widths) - 2, max_size=len(widths) - 2))
    output = draw(st.none() | idents())
    weight = draw(st.none() | numbers()) if output is not None else None
    return A.NetworkDecl(draw(idents()), widths, act.name if act else None, output,
                         layers=tuple(layers) if any(a is not None for a in layers) else (),
                         activation_arg=act.arg if act else None, output_weight=weight)


def train_decls():
    value = st.one_of(numbers().map(lambda v: (v, False)), names().map(lambda v: (v, False)),
                      _strings().map(lambda v: (v, True)))
    item = st.builds(lambda k, v: A.TrainItem(k, v[0], v[1]), idents(), value)
    return st.builds(A.TrainDecl, st.lists(item, min_size=1, max_size=4).map(tuple))


def statements():
    """Any one statement the grammar can produce."""
    return st.one_of(headers(), stalk_decls(), param_decls(), edge_decls(), pin_decls(), reluctance_decls(),
                     tie_decls(), network_decls(), train_decls(), objective_decls())


def modules(max_statements: int = 8) -> st.SearchStrategy[A.Module]:
    """A syntactically valid module (not necessarily one that checks): 1..max_statements statements."""
    return st.lists(statements(), min_size=1, max_size=max_statements).map(lambda s: A.Module(tuple(s)))


# ----------------------------------------------------------------------------------------------
# valid models, as source text


def _values(n: int, lo: float = -3.0, hi: float = 3.0):
    return st.lists(st.floats(lo, hi, allow_nan=False, allow_infinity=False), min_size=n, max_size=n)


def _weights():
    return st.floats(0.01, 100.0, allow_nan=False, allow_infinity=False)


def _matrix(draw, rows: int, cols: int) -> str:
    return format_literal(tuple(tuple(draw(_values(cols))) for _ in range(rows)))


@st.composite
def _train_line(draw) -> str:
    items = {"data": draw(st.sampled_from(["paraboloid", "saddle", "circle", "blobs", "digits"]))}
    if draw(st.booleans()):
        items["steps"] = str(draw(st.integers(0, 5000)))
    if draw(st.booleans()):
        items["lr"] = format_number(draw(st.floats(1e-5, 1.0)))
    if draw(st.booleans()):
        items["optimizer"] = draw(st.sampled_from(OPTIMIZERS))
    if draw(st.booleans()):
        items["seed"] = str(draw(st.integers(0, 1000)))
    if draw(st.booleans()):
        items["standardize"] = draw(st.sampled_from(["true", "false"]))
    return "train " + " ".join(f"{k}={v}" for k, v in items.items())


@st.composite
def network_sources(draw, max_layers: int = 3, max_width: int = 6) -> str:
    """A valid network model: the `network` sugar (any hidden activations, optional output weight) or a
    ReLU network written out, with extras."""
    L = draw(st.integers(1, max_layers))
    widths = [draw(st.integers(1, max_width)) for _ in range(L + 1)]
    output = draw(st.sampled_from(["identity", "sigmoid", "softmax"]))
    if output == "softmax" and widths[-1] < 2:  # a softmax of one number is constant (E227)
        widths[-1] = 2
    name = draw(names())
    lines = [f"sheaf {name}"]
    sugar = draw(st.booleans())
    if sugar:
        hidden = ["relu", "tanh", "gelu", "softplus", "sigmoid", "leaky_relu 0.1"]
        act = " " + draw(st.sampled_from(hidden)) if draw(st.booleans()) else ""
        shown = [str(widths[0])] + [f"{w} {draw(st.sampled_from(hidden))}" if 0 < k < L and draw(st.booleans())
                                    else str(w) for k, w in enumerate(widths) if k > 0]
        out = f" output {output}" if output != "identity" or draw(st.booleans()) else ""
        if out and draw(st.booleans()):
            out += f" weight {draw(st.sampled_from(['0.1', '1', '0.03']))}"
        lines.append(f"network mlp : {' -> '.join(shown)}{act}{out}")
        if draw(st.booleans()):  # an explicit parameter replaces the generated one
            l = draw(st.integers(1, L))
            lines.append(f"param W{l} : {widths[l]} x {widths[l - 1]} = {_matrix(draw, widths[l], widths[l - 1])}")
    else:
        stalks = ["x"] + [s for l in range(1, L + 1) for s in ([f"z{l}"] + ([f"a{l}"] if l < L else []))] + ["y"]
        dims = [widths[0]] + [widths[l] for l in range(1, L + 1) for _ in ((0,) if l == L else (0, 1))] + [widths[L]]
        lines += [f"stalk {s} : {d}" for s, d in zip(stalks, dims)]
        for l in range(1, L + 1):
            init = draw(st.sampled_from(["he", "xavier", "normal(0.1)", "literal"]))
            if init == "literal":
                lines.append(f"param W{l} : {widths[l]} x {widths[l - 1]} = {_matrix(draw, widths[l], widths[l - 1])}")
            else:
                lines.append(f"param W{l} : {widths[l]} x {widths[l - 1]} init {init}")
            lines.append(f"param b{l} : {widths[l]} init zeros")
        for l in range(1, L + 1):
            src = "x" if l == 1 else f"a{l - 1}"
            lines.append(f"edge aff{l} : {src} -> z{l} affine W{l} b{l}")
            if l < L:
                lines.append(f"edge act{l} : z{l} -> a{l} relu")
        lines.append(f"edge out : z{L} -> y {output}")
        lines += ["pin x = input", "pin y = target"]
    if draw(st.booleans()):
        ws = " ".join(f"W{l}" for l in range(1, L + 1) if draw(st.booleans())) or "W1"
        lines.append(f"reluctance {ws} weight {format_number(draw(_weights()))}")
    same = [(i, j) for i in range(1, L + 1) for j in range(i + 1, L + 1)
            if (widths[i], widths[i - 1]) == (widths[j], widths[j - 1])]
    if same and draw(st.booleans()):
        i, j = draw(st.sampled_from(same))
        lines.append(f"tie W{i} ~ W{j} weight {format_number(draw(_weights()))}")
    if draw(st.booleans()):
        lines.append(draw(_train_line()))
    return "\n".join(lines) + "\n"


@st.composite
def general_sheaf_sources(draw, max_vertices: int = 5, max_dim: int = 3, max_edges: int = 6) -> str:
    """A valid general sheaf: random graph, stalk dimensions, restriction maps, pins and weights."""
    n = draw(st.integers(1, max_vertices))
    dims = [draw(st.integers(1, max_dim)) for _ in range(n)]
    lines = [f"sheaf {draw(names())}"] + [f"stalk v{i} : {d}" for i, d in enumerate(dims)]
    params: list[tuple[str, tuple[int, ...]]] = []
    edges: list[str] = []

    def new_param(shape: tuple[int, ...]) -> str:
        name = f"P{len(params)}"
        params.append((name, shape))
        if draw(st.booleans()):
            lines.append(f"param {name} : {' x '.join(map(str, shape))} "
                         f"= {format_literal(_shaped(draw, shape))}")
        else:
            lines.append(f"param {name} : {' x '.join(map(str, shape))} init "
                         + ("normal(0.5)" if len(shape) == 1 else draw(st.sampled_from(["he", "xavier", "normal(0.5)"]))))
        return name

    for k in range(draw(st.integers(0, max_edges))):
        u = draw(st.integers(0, n - 1))
        v = draw(st.integers(0, n - 1))
        du, dv = dims[u], dims[v]
        kinds = ["maps"] if u == v else ["maps", "linear", "affine"] + (["identity", "relu"] if du == dv else [])
        kind = draw(st.sampled_from(kinds))
        if kind == "maps":
            de = draw(st.integers(1, max_dim))

            def one_map(d: int) -> str:
                choice = draw(st.sampled_from(["matrix", "param"] + (["scalar"] if d == de else [])))
                if choice == "scalar":
                    return format_number(draw(st.floats(-3, 3, allow_nan=False)))
                if choice == "param":
                    return new_param((de, d))
                return _matrix(draw, de, d)

            body = f"maps {one_map(du)} | {one_map(dv)}"
        elif kind == "linear":
            body = f"linear {new_param((dv, du))}"
        elif kind == "affine":
            W = new_param((dv, du))
            body = f"affine {W}" + (f" {new_param((dv,))}" if draw(st.booleans()) else "")
        else:
            body = kind
        weight = f" weight {format_number(draw(_weights()))}" if draw(st.booleans()) else ""
        edges.append(f"edge e{k} : v{u} -> v{v} {body}{weight}")
    lines += edges
    for i, d in enumerate(dims):
        how = draw(st.sampled_from(["none", "whole", "partial", "soft", "soft_partial"]))
        if how == "whole":
            lines.append(f"pin v{i} = {format_literal(tuple(draw(_values(d))))}")
        elif how in ("partial", "soft_partial"):
            idx = draw(st.lists(st.integers(0, d - 1), min_size=1, max_size=d, unique=True))
            value = format_literal(tuple(draw(_values(len(idx))))) if draw(st.booleans()) else \
                format_number(draw(st.floats(-3, 3, allow_nan=False)))
            target = f"v{i}[{', '.join(map(str, idx))}]"
            lines.append(f"pin {target} = {value}" if how == "partial" else
                         f"pin {target} ~ {value} weight {format_number(draw(_weights()))}")
        elif how == "soft":
            lines.append(f"pin v{i} ~ {format_number(draw(st.floats(-3, 3, allow_nan=False)))} "
                         f"weight {format_number(draw(_weights()))}")
    if params and draw(st.booleans()):
        chosen = draw(st.lists(st.sampled_from([p for p, _ in params]), min_size=1, unique=True))
        lines.append(f"reluctance {' '.join(chosen)} weight {format_number(draw(_weights()))}")
    pairs = [(a, b) for i, (a, sa) in enumerate(params) for b, sb in params[i + 1:] if sa == sb]
    if pairs and draw(st.booleans()):
        a, b = draw(st.sampled_from(pairs))
        lines.append(f"tie {a} ~ {b} weight {format_number(draw(_weights()))}")
    return "\n".join(lines) + "\n"


def _shaped(draw, shape: tuple[int, ...]):
    if len(shape) == 1:
        return tuple(draw(_values(shape[0])))
    return tuple(tuple(draw(_values(shape[1]))) for _ in range(shape[0]))


@st.composite
def consensus_sources(draw, max_vertices: int = 5, max_dim: int = 3, max_edges: int = 6) -> str:
    """A valid consensus problem: a random graph whose stalks carry random objectives of every kind
    (quadratic with a literal or parameter Q = BᵀB, B integer, so that it is PSD exactly; nonneg, box,
    simplex, l1), hard and soft linear edges mixed (``maps`` with literal, scalar or parameter maps,
    ``identity``, ``linear``, ``affine``), hard pins and soft pins. Every stalk has at least one objective
    or edge. It checks; it need not be feasible or have a unique minimiser (``sheaf verify`` decides)."""
    n = draw(st.integers(1, max_vertices))
    dims = [draw(st.integers(1, max_dim)) for _ in range(n)]
    lines = [f"sheaf {draw(names())}"] + [f"stalk v{i} : {d}" for i, d in enumerate(dims)]
    n_params = [0]

    def param(shape, value) -> str:
        name = f"P{n_params[0]}"
        n_params[0] += 1
        lines.append(f"param {name} : {' x '.join(map(str, shape))} = {format_literal(value)}")
        return name

    ints = st.integers(-2, 2).map(float)
    indicator: set[int] = set()  # stalks with a box/nonneg/simplex term: never hard-pinned (no E299 by chance)
    kinds_seen: set[str] = set()
    for i, d in enumerate(dims):
        for kind in draw(st.lists(st.sampled_from(["quadratic", "nonneg", "box", "simplex", "l1"]), max_size=3)):
            kinds_seen.add(kind)
            if kind == "quadratic":
                B = [[draw(ints) for _ in range(d)] for _ in range(draw(st.integers(1, d + 1)))]
                Q = tuple(tuple(sum(r[a] * r[b] for r in B) for b in range(d)) for a in range(d))
                Qs = param((d, d), Q) if draw(st.booleans()) else format_literal(Q)
                q = "" if draw(st.booleans()) else " " + format_literal(tuple(draw(_values(d))))
                lines.append(f"objective v{i} quadratic {Qs}{q}")
            elif kind == "box":
                lo = draw(_values(d, -3.0, 0.0))
                hi = draw(_values(d, 1.0, 3.0))  # lo ≤ 0 < 1 ≤ hi: every box contains [0, 1]^d (no E299 by chance)
                lines.append(f"objective v{i} box {format_literal(tuple(lo))} {format_literal(tuple(hi))}")
                indicator.add(i)
            elif kind == "l1":
                lines.append(f"objective v{i} l1 {format_number(draw(st.floats(0.0, 2.0)))}")
            else:
                lines.append(f"objective v{i} {kind}")
                indicator.add(i)
    edged: set[int] = set()
    hard_ends: set[int] = set()
    for k in range(draw(st.integers(0 if kinds_seen else 1, max_edges))):
        u, v = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        du, dv = dims[u], dims[v]
        kinds = ["maps"] if u == v else ["maps", "linear", "affine"] + (["identity"] if du == dv else [])
        kind = draw(st.sampled_from(kinds))
        if kind == "maps":
            de = draw(st.integers(1, max_dim))

            def one_map(d: int) -> str:
                choice = draw(st.sampled_from(["matrix", "param"] + (["scalar"] if d == de else [])))
                if choice == "scalar":
                    return format_number(draw(st.sampled_from([1.0, -1.0, 2.0, 0.5])))
                value = tuple(tuple(draw(ints) for _ in range(d)) for _ in range(de))
                return param((de, d), value) if choice == "param" else format_literal(value)

            body = f"maps {one_map(du)} | {one_map(dv)}"
        elif kind in ("linear", "affine"):
            W = param((dv, du), tuple(tuple(draw(ints) for _ in range(du)) for _ in range(dv)))
            body = f"{kind} {W}" + (f" {param((dv,), tuple(draw(_values(dv))))}" if kind == "affine" and
                                    draw(st.booleans()) else "")
        else:
            body = kind
        hard = draw(st.booleans()) or (not kinds_seen and k == 0)  # a consensus problem: an objective or a hard edge
        if hard:
            hard_ends |= {u, v}
        tail = " hard" if hard else (f" weight {format_number(draw(_weights()))}" if draw(st.booleans()) else "")
        lines.append(f"edge e{k} : v{u} -> v{v} {body}{tail}")
        edged |= {u, v}
    for i, d in enumerate(dims):
        how = draw(st.sampled_from(["none", "none", "hard", "soft"]))
        if how == "hard" and i not in indicator and i not in hard_ends:
            idx = draw(st.lists(st.integers(0, d - 1), min_size=1, max_size=d, unique=True))
            lines.append(f"pin v{i}[{', '.join(map(str, idx))}] = {format_literal(tuple(draw(_values(len(idx)))))}")
        elif how == "soft":
            lines.append(f"pin v{i} ~ {format_literal(tuple(draw(_values(d))))} weight {format_number(draw(_weights()))}")
    return "\n".join(lines) + "\n"


def model_sources() -> st.SearchStrategy[str]:
    """Source text of a model that passes ``sheaf check``: a network or a general sheaf."""
    return st.one_of(network_sources(), general_sheaf_sources())


def comment_texts() -> st.SearchStrategy[str]:
    """``# ...`` comments (printable ASCII, quotes and ``#`` included, no trailing space)."""
    body = st.text(st.sampled_from(string.ascii_letters + string.digits + string.punctuation + " "), max_size=20)
    return body.map(lambda b: ("# " + b).rstrip())


@st.composite
def with_comments(draw, sources: st.SearchStrategy[str] | None = None) -> str:
    """A source (default: :func:`model_sources`) with own-line, end-of-line and trailing comments and blank lines."""
    src = draw(sources if sources is not None else model_sources())
    out: list[str] = []
    for line in src.rstrip("\n").split("\n"):
        for _ in range(draw(st.integers(0, 2))):
            out.append(draw(comment_texts()) if draw(st.integers(0, 3)) else "")
        if line.strip() and draw(st.booleans()):
            line = line + " " * draw(st.integers(1, 4)) + draw(comment_texts())
        out.append(line)
    if draw(st.booleans()):
        out.append(draw(comment_texts()))
    return "\n".join(out) + "\n"
