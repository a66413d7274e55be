"""AST -> checked :class:`~sheafdsl.frontend.model.Model`.

Two passes, like CVXPY's model-then-verify split:

1. :func:`expand` rewrites ``network`` sugar into plain statements (``sheaf fmt --expand`` prints it);
2. :func:`check` resolves names, checks shapes, pins and weights, and collects *every* error before
   raising one :class:`~sheafdsl.errors.SheafError`.

The codes it can emit are listed in :data:`DIAGNOSTICS` (and in docs/language.md).

>>> m = load_text("sheaf t\\nnetwork mlp : 2 -> 3 -> 1\\n")
>>> list(m.stalks), list(m.edges)
(['x', 'z1', 'a1', 'z2', 'y'], ['aff1', 'act1', 'aff2', 'out'])
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ..codes import codes_between
from ..options import LEARNED_OBJECTIVE_KINDS, MAX_DIM, MAX_PARAM_SIZE, OBJECTIVE_KINDS, TRAIN_OPTIONS, problem
from ..errors import DiagnosticSink, SheafError, Span, a_or_an, did_you_mean
from ..nonlinearities import HIDDEN, TABLE as NONLINEARITIES
from ..nonlinearities import OUTPUTS as OUTPUT_MAPS
from . import ast as A
from ..exact import decimal, psd_witness
from .model import (DECODER_KINDS, ENCODER_ACTIVATIONS, ZERO_AT_ZERO, Decoder, Edge, Encoder, Grid, MapRef, Model, NetworkInfo,
                    Objective, ObjectiveData, Param, Pin, Reluctance, SoftPin, Stalk, Tie)
from .parser import parse_file, parse_text


#: every diagnostic code the front end can emit, with what it means (a view of :data:`sheafdsl.codes.CODES`;
#: E236 is in the checker's range but is emitted when parameters are loaded, by :mod:`sheafdsl.lowering.params`)
DIAGNOSTICS = {c: m for c, m in {**codes_between("E100", "E299"), **codes_between("W300", "W399")}.items() if c != "E236"}

#: the names the ``network`` sugar takes for its output and hidden layers (from the nonlinearity registry)
OUTPUTS = tuple(a.name for a in OUTPUT_MAPS)
ACTIVATIONS = tuple(a.name for a in HIDDEN)
NAMED_INITS = ("he", "xavier", "zeros", "ones", "normal")


# ----------------------------------------------------------------------------------------------
# sugar


def network_statements(net: A.NetworkDecl) -> list:
    """The plain statements that ``network`` stands for (spans point at the network statement)."""
    sp = net.span
    w = net.widths
    L = len(w) - 1
    out_kind = net.output.value if net.output is not None else "identity"
    acts = [(a[0].value, a[1]) if a is not None else ("relu", None) for a in net.layer_activations()]
    w_o = net.output_weight if net.output_weight is not None else default_output_weight(w, out_kind)

    def ident(s: str) -> A.Ident:
        return A.Ident(s, sp)

    stmts: list = [A.StalkDecl(ident("x"), w[0], sp, sp)]
    for l in range(1, L + 1):
        stmts.append(A.StalkDecl(ident(f"z{l}"), w[l], sp, sp))
        if l < L:
            stmts.append(A.StalkDecl(ident(f"a{l}"), w[l], sp, sp))
    stmts.append(A.StalkDecl(ident("y"), w[L], sp, sp))
    for l in range(1, L + 1):
        stmts.append(A.ParamDecl(ident(f"W{l}"), (w[l], w[l - 1]), init=A.InitSpec(ident("he"), span=sp), span=sp, shape_span=sp))
        stmts.append(A.ParamDecl(ident(f"b{l}"), (w[l],), init=A.InitSpec(ident("zeros"), span=sp), span=sp, shape_span=sp))
    for l in range(1, L + 1):
        src = "x" if l == 1 else f"a{l - 1}"
        stmts.append(A.EdgeDecl(ident(f"aff{l}"), ident(src), ident(f"z{l}"), "affine", (ident(f"W{l}"), ident(f"b{l}")), None, sp, sp))
        if l < L:
            kind, arg = acts[l - 1]
            stmts.append(A.EdgeDecl(ident(f"act{l}"), ident(f"z{l}"), ident(f"a{l}"), kind,
                                    () if arg is None else (arg,), None, sp, sp))
    stmts.append(A.EdgeDecl(ident("out"), ident(f"z{L}"), ident("y"), out_kind, (), None if w_o == 1.0 else w_o, sp,
                            sp, net.output_weight_span if net.output_weight is not None else sp))
    stmts.append(A.PinDecl(ident("x"), "input", span=sp))
    stmts.append(A.PinDecl(ident("y"), "target", span=sp))
    return stmts


#: the output weight w_o the ``network`` sugar gives an ``identity`` (regression) output when none is
#: written: measured best on the paraboloid at one and three hidden layers (benchmarks/bench_output_weight.py,
#: docs/training.md "The network sugar's default output weight")
DEFAULT_REGRESSION_WEIGHT = 0.03


def default_output_weight(widths, output: str) -> float:
    """The output edge's weight w_o that ``network`` declares when none is written: 0.03 for an
    ``identity`` output (the sheaf rule then trains like backprop at any depth, where w_o = 1 weighs each
    example by 1/(1/w_o² + K) with a sensitivity K that grows with depth), 1 for the cross-entropy
    outputs (sigmoid, softmax). See docs/training.md."""
    return DEFAULT_REGRESSION_WEIGHT if output == "identity" else 1.0


def generated_names(layers: int) -> list[str]:
    """Every name the ``network`` sugar declares for ``layers`` affine layers (stalks, params, edges)."""
    L = max(layers, 1)
    out = ["x", "y", "out"]
    for l in range(1, L + 1):
        out += [f"z{l}", f"W{l}", f"b{l}", f"aff{l}"] + ([f"a{l}", f"act{l}"] if l < L else [])
    return out


def network_diagnostics(module: A.Module) -> list:
    """The errors of the ``network`` statements alone (widths, activation, output, count)."""
    c = _Checker(module)
    nets = module.of_type(A.NetworkDecl)
    for n in nets[1:]:
        c.d.error("E270", "a file holds at most one `network` statement", n.span)
    for n in nets:
        c.check_network(n)
    return c.d.sorted()


def expand(module: A.Module) -> A.Module:
    """Replace each ``network`` statement by its plain statements.

    A parameter the user declares explicitly replaces the generated one (so weights can be given
    as literals or files), and so does an explicit pin of ``x`` or ``y``.
    """
    own_params = {s.name.value for s in module.of_type(A.ParamDecl)}
    own_pins = {s.stalk.value for s in module.of_type(A.PinDecl) if not s.soft}
    out: list = []
    for s in module.statements:
        if isinstance(s, A.NetworkDecl) and all(x >= 1 for x in s.widths) and len(s.widths) >= 2:
            for g in network_statements(s):
                if isinstance(g, A.ParamDecl) and g.name.value in own_params:
                    continue
                if isinstance(g, A.PinDecl) and g.stalk.value in own_pins:
                    continue
                out.append(g)
        else:
            out.append(s)
    return A.Module(tuple(out), module.path, module.source)


# ----------------------------------------------------------------------------------------------
# literal helpers


def lit_shape(v) -> tuple[int, ...] | None:
    """The shape of a nested tuple literal, or None when it is ragged."""
    if not isinstance(v, tuple):
        return ()
    if not v:
        return (0,)
    inner = [lit_shape(x) for x in v]
    if any(s is None for s in inner) or len(set(inner)) != 1:
        return None
    return (len(v),) + inner[0]


def lit_flat(v) -> list[float]:
    if not isinstance(v, tuple):
        return [v]
    out: list[float] = []
    for x in v:
        out.extend(lit_flat(x))
    return out


def _finite(v) -> bool:
    return all(math.isfinite(x) for x in lit_flat(v))


# ----------------------------------------------------------------------------------------------
# the checker


class _Checker:
    def __init__(self, module: A.Module):
        self.m = module
        self.d = DiagnosticSink(module.path)
        self.names: dict[str, tuple[str, A.Ident]] = {}  # name -> (kind, where)
        self.invalid: set[str] = set()  # declared, but with an error already reported
        self.stalks: dict[str, Stalk] = {}
        self.params: dict[str, Param] = {}
        self.edges: dict[str, Edge] = {}
        self.pins: list[Pin] = []
        self.soft_pins: list[SoftPin] = []
        self.reluctances: list[Reluctance] = []
        self.ties: list[Tie] = []
        self.objectives: list[Objective] = []
        self.objective_decls: list[A.ObjectiveDecl] = []
        self.edge_decls: dict[str, A.EdgeDecl] = {}
        self.train: dict[str, object] = {}
        self.train_seen: Span | None = None
        self.net_spans: set[Span] = set()
        self.used_params: set[str] = set()
        self.encoders: dict[str, Encoder] = {}
        self.grids: dict[str, Grid] = {}
        self.decoders: list[Decoder] = []
        self.used_encoders: set[str] = set()
        self.base_dir = os.path.dirname(os.path.abspath(module.path)) if module.path != "<input>" else os.getcwd()

    # -- names --
    def declare(self, ident: A.Ident, kind: str) -> bool:
        prev = self.names.get(ident.value)
        if prev is not None:
            pkind, pident = prev
            where = f" at line {pident.span.line}" if pident.span.known else ""
            hint = "each stalk, parameter and edge needs its own name"
            if ident.span in self.net_spans or pident.span in self.net_spans:
                where += " (by the `network` statement)" if pident.span in self.net_spans else ""
                hint = ("`network` declares the stalks x, z1, a1, ..., y, the parameters W1, b1, ... and the edges "
                        "aff1, act1, ..., out; only a parameter or a hard pin of x or y may be redeclared (it replaces "
                        "the generated one)")
            self.d.error("E201", f"{kind} `{ident.value}` is already declared as a {pkind}{where}", ident.span, hint)
            return False
        self.names[ident.value] = (kind, ident)
        return True

    def stalk(self, ident: A.Ident) -> Stalk | None:
        s = self.stalks.get(ident.value)
        if s is not None:
            return s
        if ident.value in self.invalid:
            return None
        other = self.names.get(ident.value)
        hint = f"`{ident.value}` is a {other[0]}, not a stalk" if other else did_you_mean(ident.value, self.stalks)
        if hint is None and not self.stalks:
            hint = "declare it first with `stalk NAME : DIM`"
        self.d.error("E202", f"unknown stalk `{ident.value}`", ident.span, hint)
        return None

    def param(self, ident: A.Ident) -> Param | None:
        p = self.params.get(ident.value)
        if p is not None:
            self.used_params.add(p.name)
            return p
        if ident.value in self.invalid:
            return None
        other = self.names.get(ident.value)
        hint = f"`{ident.value}` is a {other[0]}, not a parameter" if other else did_you_mean(ident.value, self.params)
        if hint is None and not self.params:
            hint = "declare it first with `param NAME : ROWS x COLS init he`"
        self.d.error("E203", f"unknown parameter `{ident.value}`", ident.span, hint)
        return None

    def weight(self, w: float | None, span: Span, what: str = "weight") -> float:
        if w is None:
            return 1.0
        if not math.isfinite(w) or w <= 0:
            self.d.error("E250", f"{what} must be a positive finite number, not {w!r}", span,
                         "the energy of an edge is ½ w² ‖discord‖², with w > 0")
            return 1.0
        return float(w)

    def dim(self, n: int, span: Span, what: str) -> bool:
        if n < 1:
            self.d.error("E210", f"{what} must be at least 1, not {n}", span)
            return False
        if n > MAX_DIM:
            self.d.error("E211", f"{what} {n} is larger than the limit {MAX_DIM:,}", span)
            return False
        return True

    # -- statements --
    def run(self) -> Model:
        stmts = self.m.statements
        headers = [s for s in stmts if isinstance(s, A.Header)]
        if not headers:
            first = stmts[0].span if stmts else Span(1, 1, 1, 2)
            self.d.error("E200", "a model starts with `sheaf NAME`", first, "add a first line such as `sheaf mymodel`")
        else:
            if stmts[0] is not headers[0]:
                self.d.error("E200", "`sheaf NAME` must be the first statement", headers[0].span)
            for h in headers[1:]:
                self.d.error("E200", "a file declares one sheaf; this is a second `sheaf` header", h.span)
        nets = [s for s in stmts if isinstance(s, A.NetworkDecl)]
        for n in nets[1:]:
            self.d.error("E270", "a file holds at most one `network` statement", n.span,
                         "write further layers with stalk/param/edge statements")
        network = None
        self.net_spans = {n.span for n in nets}
        if nets:
            network = self.check_network(nets[0])
            if not (len(nets[0].widths) >= 2 and all(w >= 1 for w in nets[0].widths)):
                # not expanded: its names are known to be broken, so uses of them are not errors again
                self.invalid |= set(generated_names(len(nets[0].widths) - 1))
        # only the first `network` is expanded (a second is E270, not a cascade of duplicate names)
        expanded = expand(A.Module(tuple(s for s in stmts if not (isinstance(s, A.NetworkDecl) and s is not nets[0])),
                                   self.m.path, self.m.source)).statements
        order = (A.StalkDecl, A.ParamDecl, A.EncoderDecl, A.GridDecl, A.EdgeDecl, A.PinDecl, A.ReluctanceDecl,
                 A.TieDecl, A.TrainDecl, A.ObjectiveDecl, A.DecodeDecl)
        # declarations first, so that statements may refer to names declared further down
        for cls in order:
            for s in expanded:
                if isinstance(s, cls):
                    getattr(self, "check_" + cls.__name__)(s)
        if not self.d.has_errors:
            self.check_consensus()
        if not self.d.has_errors:
            self.check_learned()
        if not self.d.has_errors:
            self.warnings()
        if self.d.has_errors:
            raise SheafError(self.d.sorted(), self.m.source)
        return Model(
            name=headers[0].name.value if headers else "sheaf",
            stalks=self.stalks, params=self.params, edges=self.edges, pins=self.pins,
            soft_pins=self.soft_pins, reluctances=self.reluctances, ties=self.ties, train=self.train,
            network=network, path=self.m.path, source=self.m.source, objectives=self.objectives,
            encoders=self.encoders, grids=self.grids, decoders=self.decoders,
        )

    def check_network(self, n: A.NetworkDecl) -> NetworkInfo | None:
        ok = True
        spans = n.width_spans or (n.span,) * len(n.widths)
        for w, sp in zip(n.widths, spans):
            ok &= self.dim(w, sp, "a network width")
        out = n.output.value if n.output else "identity"
        written = list(n.layers) + ([A.LayerActivation(n.activation, n.activation_arg, n.activation.span)]
                                    if n.activation is not None else [])
        for a in written:
            if a is not None:
                ok &= self.check_activation(a)
        if out not in OUTPUTS:
            ok = False
            self.d.error("E271", f"unsupported output `{out}`", n.output.span,
                         did_you_mean(out, OUTPUTS) or "the output is one of: " + ", ".join(OUTPUTS))
        if n.output_weight is not None:
            self.weight(n.output_weight, n.output_weight_span, "output weight")
            ok &= math.isfinite(n.output_weight) and n.output_weight > 0
        if not ok:
            return None
        acts = tuple((a[0].value, None if a[1] is None else float(a[1].value)) if a is not None else ("relu", None)
                     for a in n.layer_activations())
        w_o = n.output_weight if n.output_weight is not None else default_output_weight(n.widths, out)
        common = acts[0][0] if acts and len(set(acts)) == 1 and acts[0][1] is None else (
            "relu" if not acts else "mixed")
        return NetworkInfo(n.name.value, n.widths, common, out, acts, float(w_o))

    def check_activation(self, a: A.LayerActivation) -> bool:
        """A hidden layer's activation in `network`: a hidden entry of the registry, with its argument."""
        name = a.name.value
        entry = NONLINEARITIES.get(name)
        if name not in ACTIVATIONS:
            self.d.error("E271", f"unsupported activation `{name}`", a.name.span,
                         did_you_mean(name, ACTIVATIONS) or "a hidden layer is one of: " + ", ".join(ACTIVATIONS))
            return False
        if entry.arg is not None and a.arg is None:
            self.d.error("E271", f"`{name}` takes its {entry.arg}: e.g. `{name} 0.1`", a.name.span)
            return False
        if entry.arg is None and a.arg is not None:
            self.d.error("E271", f"`{name}` takes no argument", a.arg.span)
            return False
        if a.arg is not None:
            lo, hi = entry.arg_range
            if not (math.isfinite(a.arg.value) and lo < a.arg.value < hi):
                self.d.error("E226", f"the {entry.arg} of {name} must be a number in ({lo:g}, {hi:g}), not "
                             f"{_fmt_value(a.arg.value)}", a.arg.span, f"{entry.formula}")
                return False
        return True

    def check_StalkDecl(self, s: A.StalkDecl) -> None:
        if self.declare(s.name, "stalk"):
            if self.dim(s.dim, s.dim_span, f"stalk `{s.name.value}` dimension"):
                self.stalks[s.name.value] = Stalk(s.name.value, s.dim, s.name.span)
            else:
                self.invalid.add(s.name.value)

    def check_ParamDecl(self, s: A.ParamDecl) -> None:
        if not self.declare(s.name, "parameter"):
            return
        ok = all(self.dim(n, s.shape_span, "a parameter dimension") for n in s.shape)
        size = math.prod(s.shape)
        if ok and size > MAX_PARAM_SIZE:
            self.d.error("E211", f"parameter `{s.name.value}` has {size:,} entries; the limit is {MAX_PARAM_SIZE:,}", s.shape_span)
            ok = False
        kw: dict = {}
        if s.value is not None:
            shape = lit_shape(s.value.value)
            if shape is None:
                self.d.error("E231", "literal is not rectangular: its rows have different lengths", s.value.span)
                ok = False
            elif shape != () and shape != s.shape:
                self.d.error("E230", f"literal has shape {_fmt_shape(shape)} but `{s.name.value}` is declared {_fmt_shape(s.shape)}",
                             s.value.span, "a number fills the whole parameter; otherwise give a literal of the declared shape")
                ok = False
            if shape is not None and not _finite(s.value.value):
                self.d.error("E232", f"parameter `{s.name.value}` has a NaN or infinite entry", s.value.span)
                ok = False
            kw = dict(init="literal", value=s.value.value)
        else:
            init = s.init
            kind = init.kind.value
            if kind == "file":
                path = init.file or ""
                full = path if os.path.isabs(path) else os.path.join(self.base_dir, path)
                if not os.path.exists(full):
                    self.d.error("E235", f"initialiser file `{path}` does not exist", init.span,
                                 f"paths are relative to the model file's folder ({self.base_dir})")
                    ok = False
                kw = dict(init="file", file=path, key=init.key.value if init.key else s.name.value)
            elif kind not in NAMED_INITS:
                self.d.error("E233", f"unknown initialiser `{kind}`", init.kind.span,
                             did_you_mean(kind, NAMED_INITS) or "use one of: " + ", ".join(NAMED_INITS) + ", or \"file.npz\":KEY")
                ok = False
            elif kind == "normal":
                if init.arg is None or not math.isfinite(init.arg) or init.arg <= 0:
                    self.d.error("E233", "normal(STD) needs a positive finite standard deviation", init.span, "e.g. `init normal(0.1)`")
                    ok = False
                kw = dict(init="normal", std=init.arg)
            else:
                if init.arg is not None:
                    self.d.error("E233", f"initialiser `{kind}` takes no argument", init.span)
                    ok = False
                if kind in ("he", "xavier") and len(s.shape) != 2:
                    self.d.error("E234", f"`{kind}` initialisation needs a matrix; `{s.name.value}` is a vector", init.span,
                                 "use `init zeros` or `init normal(STD)` for a vector")
                    ok = False
                kw = dict(init=kind)
        if not ok:
            self.invalid.add(s.name.value)
        else:
            self.params[s.name.value] = Param(s.name.value, tuple(s.shape), base_dir=self.base_dir, span=s.name.span, **kw)

    def endpoint(self, ident: A.Ident, block, span: Span, edge: A.EdgeDecl) -> Stalk | None:
        """An edge's endpoint as the stalk its map sees: the stalk, a grid's agent, or a block [a:b] of either."""
        g = self.grids.get(ident.value)
        if g is not None:
            if edge.direction is None:
                self.d.error("E288", f"`{g.name}` is a grid: an edge between its agents says which neighbours it joins",
                             ident.span, f"write `edge {edge.name.value} : {g.name} -> {g.name} right ...` (or `down`)")
                return None
            st = Stalk(g.name, g.dim, ident.span)
        else:
            st = self.stalk(ident)
            if st is None:
                return None
        if block is None:
            return st
        a, b = block
        if not 0 <= a < b <= st.dim:
            self.d.error("E286", f"block [{a}:{b}] of `{st.name}` is " + ("empty" if a >= b else
                         f"out of range (dimension {st.dim})"), span,
                         f"a block [a:b] takes coordinates a .. b−1 with 0 ≤ a < b ≤ {st.dim}")
            return None
        if edge.kind not in ("maps", "identity"):
            self.d.error("E286", f"a block of a stalk is an endpoint of `maps` and `identity` edges only, not of "
                         f"{a_or_an(edge.kind)} edge", span)
            return None
        return Stalk(f"{st.name}[{a}:{b}]", b - a, st.span)

    def check_EdgeDecl(self, e: A.EdgeDecl) -> None:
        declared = self.declare(e.name, "edge")
        src = self.endpoint(e.src, e.src_block, e.src_block_span, e)
        dst = self.endpoint(e.dst, e.dst_block, e.dst_block_span, e)
        if e.direction is not None and src is not None and dst is not None:
            if not (e.src.value in self.grids and e.dst.value == e.src.value):
                self.d.error("E288", f"`{e.direction}` joins the neighbours of one grid; `{e.src.value}` -> "
                             f"`{e.dst.value}` is not a grid's edge", e.direction_span,
                             "declare the agents with `grid NAME : DIM observe ODIM encoded ENC`")
                src = None
            elif e.kind not in ("maps", "identity"):
                self.d.error("E288", f"a grid's edge is `maps` or `identity`, not {a_or_an(e.kind)} edge", e.kind_span)
                src = None
        sugar = e.span in self.net_spans  # its activation and output weight were checked with the `network`
        if e.hard and e.weight is not None:
            self.d.error("E298", f"edge `{e.name.value}` is both `hard` and weighted", e.hard_span,
                         "a hard edge is the constraint (δc)_e = 0 and has no weight; a weighted edge is the penalty "
                         "½ w² ‖(δc)_e‖²: keep one of `hard` and `weight`")
        weight = (e.weight if e.weight is not None and math.isfinite(e.weight) and e.weight > 0 else 1.0) if sugar \
            else self.weight(e.weight, e.weight_span, f"weight of edge `{e.name.value}`")
        ok = src is not None and dst is not None
        if src is not None and dst is not None and src.name == dst.name and e.kind != "maps" and e.direction is None:
            self.d.error("E290", f"edge `{e.name.value}` goes from `{src.name}` to itself", e.dst.span,
                         "only a `maps` edge may be a loop")
            ok = False
        kw: dict = {}
        dim = dst.dim if dst is not None else 0
        if e.kind in ("affine", "linear"):
            W = self.param(e.args[0])
            b = self.param(e.args[1]) if len(e.args) > 1 else None
            ok &= W is not None and (len(e.args) < 2 or b is not None)
            if W is not None:
                if len(W.shape) != 2:
                    self.d.error("E222", f"weight `{W.name}` of {a_or_an(e.kind)} edge must be a matrix, not shape {_fmt_shape(W.shape)}", e.args[0].span)
                    ok = False
                elif src is not None and dst is not None and W.shape != (dst.dim, src.dim):
                    self.d.error("E220", f"`{W.name}` is {_fmt_shape(W.shape)} but edge `{e.name.value}` maps "
                                 f"`{src.name}` ({src.dim}) to `{dst.name}` ({dst.dim})", self._use_span(e, W, 0),
                                 f"declare `param {W.name} : {dst.dim} x {src.dim}`")
                    ok = False
            if b is not None:
                if len(b.shape) != 1:
                    self.d.error("E222", f"bias `{b.name}` must be a vector, not shape {_fmt_shape(b.shape)}", e.args[1].span)
                    ok = False
                elif dst is not None and b.shape[0] != dst.dim:
                    self.d.error("E221", f"bias `{b.name}` has {b.shape[0]} entries but `{dst.name}` has dimension {dst.dim}",
                                 self._use_span(e, b, 1), f"declare `param {b.name} : {dst.dim}`")
                    ok = False
            kw = dict(W=W.name if W else None, b=b.name if b else None)
        elif e.kind in NONLINEARITIES:
            if src is not None and dst is not None and src.dim != dst.dim:
                self.d.error("E223", f"{a_or_an(e.kind)} edge needs stalks of equal dimension; `{src.name}` has {src.dim}, "
                             f"`{dst.name}` has {dst.dim}", e.kind_span)
                ok = False
            entry = NONLINEARITIES[e.kind]
            if entry.task == "multiclass" and src is not None and src.dim < 2:  # a distribution over one class
                self.d.error("E227", f"{a_or_an(e.kind)} edge on {src.dim}-dimensional stalks is constant: "
                             f"{e.kind} of a single number is always 1, so the edge carries no information",
                             e.kind_span, "a two-class output is `sigmoid` on 1 dimension (or softmax on 2)")
                ok = False
            if entry.arg is not None and e.args:  # (missing only from a `network` already reported: E271)
                arg = e.args[0]
                lo, hi = entry.arg_range
                if not (math.isfinite(arg.value) and lo < arg.value < hi) and not sugar:
                    self.d.error("E226", f"the {entry.arg} of {a_or_an(e.kind)} edge must be a number in ({lo:g}, {hi:g}), "
                                 f"not {_fmt_value(arg.value)}", arg.span,
                                 f"{entry.formula}; slope 0 is `relu`, slope 1 is `identity`")
                    ok = False
                kw = dict(arg=float(arg.value))
        elif e.kind == "maps":
            ms, md = e.args
            rs, ref_s = self.map_ref(ms, src)
            rd, ref_d = self.map_ref(md, dst)
            ok &= ref_s is not None and ref_d is not None
            if rs is not None and rd is not None:
                if rs != rd:
                    self.d.error("E225", f"the two maps of edge `{e.name.value}` have {rs} and {rd} rows; "
                                 "they must land in the same edge stalk", e.kind_span,
                                 "M_src is d_e x dim(src) and M_dst is d_e x dim(dst)")
                    ok = False
                dim = rs
            kw = dict(src_map=ref_s, dst_map=ref_d)
        if declared and ok:
            self.edges[e.name.value] = Edge(e.name.value, e.src.value, e.dst.value, e.kind, dim, weight,
                                            span=e.name.span, hard=e.hard, src_block=e.src_block,
                                            dst_block=e.dst_block, direction=e.direction, **kw)
            self.edge_decls[e.name.value] = e

    def _use_span(self, e: A.EdgeDecl, p: Param, k: int) -> Span:
        """Where to report a parameter that does not fit an edge: at the use, unless the edge comes
        from the `network` sugar and the parameter is the user's override (then at its declaration)."""
        if e.span in self.net_spans and p.span.known and p.span not in self.net_spans:
            return p.span
        return e.args[k].span

    def map_ref(self, arg, stalk: Stalk | None) -> tuple[int | None, MapRef | None]:
        """(rows, MapRef) of one restriction map of a `maps` edge; rows None when unknown."""
        if isinstance(arg, A.Ident):
            p = self.param(arg)
            if p is None:
                return None, None
            if len(p.shape) != 2:
                self.d.error("E224", f"restriction map `{p.name}` must be a matrix, not shape {_fmt_shape(p.shape)}", arg.span)
                return None, None
            if stalk is not None and p.shape[1] != stalk.dim:
                self.d.error("E225", f"restriction map `{p.name}` has {p.shape[1]} columns but `{stalk.name}` has dimension {stalk.dim}",
                             arg.span)
                return None, None
            return p.shape[0], MapRef(param=p.name)
        shape = lit_shape(arg.value)
        if shape is None:
            self.d.error("E231", "literal is not rectangular: its rows have different lengths", arg.span)
            return None, None
        if not _finite(arg.value):
            self.d.error("E232", "restriction map has a NaN or infinite entry", arg.span)
            return None, None
        if shape == ():
            return (stalk.dim if stalk else None), MapRef(scale=float(arg.value))
        if len(shape) != 2 or shape[0] == 0:
            self.d.error("E224", f"a restriction map is a matrix [[..], ..] or a number, not shape {_fmt_shape(shape)}", arg.span,
                         "write a 1 x n map as [[a, b, ...]]")
            return None, None
        if stalk is not None and shape[1] != stalk.dim:
            self.d.error("E225", f"map has {shape[1]} columns but `{stalk.name}` has dimension {stalk.dim}", arg.span)
            return None, None
        return shape[0], MapRef(matrix=arg.value)

    def check_PinDecl(self, p: A.PinDecl) -> None:
        stalk = self.stalk(p.stalk)
        if stalk is None:
            return
        indices = p.indices
        ok = True
        if indices is not None:
            spans = p.index_spans if len(p.index_spans) == len(indices) else (p.index_span,) * len(indices)
            bad = [k for k, i in enumerate(indices) if i >= stalk.dim]
            if bad:
                k = bad[0]
                self.d.error("E241", f"index {indices[k]} is out of range for `{stalk.name}` (dimension {stalk.dim})",
                             spans[k], f"indices are 0-based: 0 .. {stalk.dim - 1}")
                ok = False
            first: dict[int, int] = {}
            for k, i in enumerate(indices):
                if i in first:
                    self.d.error("E242", f"index {i} is listed twice", spans[k], "each coordinate is pinned once")
                    ok = False
                    break
                first[i] = k
        count = len(indices) if indices is not None else stalk.dim
        values = None
        if p.value in ("input", "target"):
            if indices is not None:
                self.d.error("E243", f"an `{p.value}` pin takes the whole stalk", p.index_span,
                             f"write `pin {stalk.name} = {p.value}`")
                ok = False
        else:
            lit: A.Lit = p.value
            shape = lit_shape(lit.value)
            if shape is None:
                self.d.error("E231", "literal is not rectangular", lit.span)
                ok = False
            elif shape == ():
                values = (float(lit.value),) * count
            elif shape == (count,):
                values = tuple(float(v) for v in lit.value)
            else:
                self.d.error("E240", f"pin gives {_fmt_shape(shape)} values for {count} coordinate{'s' * (count != 1)} of `{stalk.name}`",
                             lit.span, "give one number (used for every coordinate) or a vector with one entry per coordinate")
                ok = False
            if shape is not None and not _finite(lit.value):
                self.d.error("E232", "pin value is NaN or infinite", lit.span)
                ok = False
        if p.soft:
            w = self.weight(p.weight, p.weight_span, "soft pin weight")
            if ok:
                base = f"pin_{stalk.name}" + ("_" + "_".join(map(str, indices)) if indices else "")
                taken = set(self.names) | {sp.name for sp in self.soft_pins}
                name, k = base, 2
                while name in taken:  # a unique name for the anchor and its edge
                    name, k = f"{base}_{k}", k + 1
                self.soft_pins.append(SoftPin(name, stalk.name, values, w, indices, p.span))
            return
        if ok:
            coords = set(indices) if indices is not None else set(range(stalk.dim))
            for other in self.pins:
                if other.stalk != stalk.name:
                    continue
                theirs = set(other.indices) if other.indices is not None else set(range(stalk.dim))
                both = sorted(coords & theirs)
                if both:
                    self.d.error("E242", f"coordinate {both[0]} of `{stalk.name}` is already pinned at line {other.span.line}",
                                 p.span, "a coordinate takes one hard pin")
                    return
            source = p.value if p.value in ("input", "target") else "value"
            self.pins.append(Pin(stalk.name, source, indices, values, p.span))

    def check_ReluctanceDecl(self, r: A.ReluctanceDecl) -> None:
        w = self.weight(r.weight, r.weight_span, "reluctance weight")
        seen = {x.param for x in self.reluctances}
        for ident in r.params:
            p = self.param(ident)
            if p is None:
                continue
            if p.name in seen:
                self.d.error("E260", f"parameter `{p.name}` already has a reluctance edge", ident.span,
                             "a parameter takes one reluctance weight")
                continue
            seen.add(p.name)
            self.reluctances.append(Reluctance(p.name, w, ident.span))

    def check_TieDecl(self, t: A.TieDecl) -> None:
        w = self.weight(t.weight, t.weight_span, "tie weight")
        a, b = self.param(t.a), self.param(t.b)
        if a is None or b is None:
            return
        if a.name == b.name:
            self.d.error("E262", f"`{a.name}` is tied to itself", t.b.span)
        elif a.shape != b.shape:
            self.d.error("E261", f"cannot tie `{a.name}` {_fmt_shape(a.shape)} to `{b.name}` {_fmt_shape(b.shape)}", t.span,
                         "a tie is an identity map, so both parameters need the same shape")
        else:
            prev = next((x for x in self.ties if {x.a, x.b} == {a.name, b.name}), None)
            if prev is not None:
                self.d.error("E263", f"`{a.name}` and `{b.name}` are already tied (line {prev.span.line})", t.span,
                             "one tie per pair: give the pair a single `tie` with the weight you want")
                return
            self.ties.append(Tie(a.name, b.name, w, t.span))

    def check_TrainDecl(self, t: A.TrainDecl) -> None:
        if self.train_seen is not None:
            self.d.error("E281", f"a second `train` statement (the first is at line {self.train_seen.line})", t.span,
                         "put every option in one `train` statement")
            return
        self.train_seen = t.span
        given: dict[str, Span] = {}
        for item in t.items:
            key = item.key.value
            if key in given:
                self.d.error("E281", f"train option `{key}` given twice", item.key.span,
                             f"it is first given at column {given[key].col}")
                continue
            given[key] = item.key.span
            if key not in TRAIN_OPTIONS:
                self.d.error("E280", f"unknown train option `{key}`", item.key.span,
                             did_you_mean(key, TRAIN_OPTIONS) or "options: " + ", ".join(TRAIN_OPTIONS))
                continue
            opt = TRAIN_OPTIONS[key]
            value = _coerce(item.value, opt.type)
            if value is None or opt.choices is not None and problem(key, value):
                shown = f'"{item.value}"' if item.quoted else _fmt_value(item.value)
                self.d.error("E282", f"train option `{key}` wants {opt.kind()}, not `{shown}`", item.span,
                             did_you_mean(str(item.value), opt.choices)
                             if opt.choices and isinstance(item.value, str) else None)
                continue
            if problem(key, value):
                self.d.error("E283", f"train option `{key}` must be {opt.want()}, not {_fmt_value(value)}", item.span)
                continue
            self.train[key] = value

    # -- objectives (consensus problems) --
    def check_ObjectiveDecl(self, o: A.ObjectiveDecl) -> None:  # noqa: N802
        stalk = self.stalk(o.stalk)
        if stalk is None:
            return
        d, kind = stalk.dim, o.kind
        if kind == "encoded":
            self.encoded_objective(o, stalk)
            return
        if kind not in OBJECTIVE_KINDS:
            self.d.error("E291", f"unknown objective kind `{kind}`", o.kind_span,
                         did_you_mean(kind, OBJECTIVE_KINDS) or "an objective is one of: " + ", ".join(OBJECTIVE_KINDS))
            return
        what = f"{kind} objective of `{stalk.name}`"
        data: dict = {}
        if kind == "quadratic":
            Q = self.objective_data(o.args[0], (d, d), f"the matrix Q of the {what}", matrix=True)
            q = self.objective_data(o.args[1], (d,), f"the vector q of the {what}") if len(o.args) > 1 else \
                ObjectiveData(value=(0.0,) * d)
            if Q is None or q is None:
                return
            if not self.quadratic_convex(Q, o.args[0], what):
                return
            data = dict(Q=Q, q=q)
        elif kind == "box":
            lo = self.bound(o.args[0], d, f"the bound LO of the {what}")
            hi = self.bound(o.args[1], d, f"the bound HI of the {what}")
            if lo is None or hi is None:
                return
            for i, (a, b) in enumerate(zip(lo, hi)):
                if a > b or a == math.inf or b == -math.inf:
                    self.d.error("E295", f"the {what} is empty: LO[{i}] = {_fmt_value(a)} > HI[{i}] = {_fmt_value(b)}"
                                 if a > b else f"the {what} is empty: coordinate {i} lies in [{_fmt_value(a)}, "
                                 f"{_fmt_value(b)}]", o.args[0].span if a > b else o.kind_span,
                                 "a box LO HI needs LO ≤ HI in every coordinate (and finite points in it); as written "
                                 "the problem is infeasible")
                    return
            data = dict(lo=lo, hi=hi)
        elif kind == "l1":
            lam = o.args[0]
            if lit_shape(lam.value) != ():
                self.d.error("E292", f"the weight LAMBDA of the {what} is one number, not shape "
                             f"{_fmt_shape(lit_shape(lam.value) or (0,))}", lam.span, "f(x) = LAMBDA ‖x‖₁")
                return
            if not (math.isfinite(lam.value) and lam.value >= 0):
                self.d.error("E296", f"the weight LAMBDA of the {what} must be a finite number ≥ 0, not "
                             f"{_fmt_value(lam.value)}", lam.span, "a negative multiple of ‖x‖₁ is not convex")
                return
            data = dict(lam=float(lam.value))
        self.objectives.append(Objective(stalk.name, kind, span=o.span, **data))
        self.objective_decls.append(o)

    # -- learned models (docs/admm.md "Learning") --
    def check_EncoderDecl(self, n: A.EncoderDecl) -> None:  # noqa: N802
        if not self.declare(n.name, "encoder"):
            return
        ok = True
        spans = n.width_spans or (n.span,) * len(n.widths)
        for w, sp in zip(n.widths, spans):
            ok &= self.dim(w, sp, "an encoder width")
        if n.output_activation is not None:
            self.d.error("E284", f"the output layer of encoder `{n.name.value}` is affine: it takes no activation",
                         n.output_activation.span, "softplus is applied to Q's half of the output by `encoded`; "
                         "an activation after a hidden width is that layer's")
            ok = False
        acts = []
        for a in n.activations:
            name = a.value if a is not None else "tanh"
            if name not in ENCODER_ACTIVATIONS:
                self.d.error("E284", f"unknown encoder activation `{name}`", a.span,
                             did_you_mean(name, ENCODER_ACTIVATIONS) or "one of: " + ", ".join(ENCODER_ACTIVATIONS))
                ok = False
            acts.append(name)
            if not n.bias and name in ENCODER_ACTIVATIONS and name not in ZERO_AT_ZERO:
                self.d.error("E730", f"encoder `{n.name.value}` is `nobias`, but {name}(0) ≠ 0: a zero observation "
                             "would not encode to h = 0", a.span if a is not None else n.span,
                             "a `nobias` encoder's hidden layers are one of: " + ", ".join(ZERO_AT_ZERO))
                ok = False
        layers = []
        for k in range(1, len(n.widths)):
            W, b = f"{n.name.value}_W{k}", (f"{n.name.value}_b{k}" if n.bias else None)
            decl = [(W, (n.widths[k], n.widths[k - 1]), "xavier")] + ([(b, (n.widths[k],), "zeros")] if n.bias else [])
            for pname, shape, init in decl:
                if self.declare(A.Ident(pname, n.name.span), "parameter") and ok:
                    self.params[pname] = Param(pname, shape, init, base_dir=self.base_dir, span=n.name.span)
                    self.used_params.add(pname)
            layers.append((W, b))
        if ok:
            self.encoders[n.name.value] = Encoder(n.name.value, tuple(n.widths), tuple(acts), tuple(layers), n.span)
        else:
            self.invalid.add(n.name.value)

    def encoder_for(self, ident: A.Ident, din: int, dout: int, obs: str, agent: str) -> Encoder | None:
        enc = self.encoders.get(ident.value)
        if enc is None:
            if ident.value not in self.invalid:
                self.d.error("E284", f"unknown encoder `{ident.value}`", ident.span,
                             did_you_mean(ident.value, self.encoders) or "declare it with `encoder NAME : DIN -> H -> DOUT`")
            return None
        self.used_encoders.add(enc.name)
        if enc.widths[0] != din:
            self.d.error("E284", f"encoder `{enc.name}` reads {enc.widths[0]} numbers, but its observation {obs} has {din}",
                         ident.span, f"its first width must be {din}")
            return None
        if enc.widths[-1] != dout:
            self.d.error("E284", f"encoder `{enc.name}` gives {enc.widths[-1]} numbers, but {agent} needs {dout}: "
                         f"q and the diagonal of Q", ident.span, f"its last width must be 2 x dim = {dout}")
            return None
        return enc

    def check_GridDecl(self, g: A.GridDecl) -> None:  # noqa: N802
        if not self.declare(g.name, "grid"):
            return
        if not (self.dim(g.dim, g.dim_span, "a grid agent's dimension") & self.dim(g.obs_dim, g.obs_span,
                                                                                  "a grid agent's observation")):
            self.invalid.add(g.name.value)
            return
        enc = self.encoder_for(g.encoder, g.obs_dim, 2 * g.dim, f"(`observe {g.obs_dim}`)", f"agent stalk ({g.dim})")
        if enc is None:
            self.invalid.add(g.name.value)
            return
        self.grids[g.name.value] = Grid(g.name.value, g.dim, g.obs_dim, enc.name, g.span)

    def encoded_objective(self, o: A.ObjectiveDecl, stalk: Stalk) -> None:
        enc_id, obs_id = o.args
        obs = self.stalk(obs_id)
        if obs is None:
            return
        if not any(p.stalk == obs.name and p.source == "input" for p in self.pins):
            self.d.error("E285", f"the observation `{obs.name}` of an encoded objective must be pinned to the input",
                         obs_id.span, f"add `pin {obs.name} = input`")
            return
        touching = [e.name for e in self.edges.values() if obs.name in (e.src, e.dst)]
        if touching:
            self.d.error("E285", f"the observation `{obs.name}` is read by the encoder only, but edge `{touching[0]}` "
                         "touches it", obs_id.span, "an observation is data, not an agent: give the agent the edges")
            return
        enc = self.encoder_for(enc_id, obs.dim, 2 * stalk.dim, f"`{obs.name}`", f"`{stalk.name}` ({stalk.dim})")
        if enc is None:
            return
        self.objectives.append(Objective(stalk.name, "encoded", span=o.span, encoder=enc.name, obs=obs.name))
        self.objective_decls.append(o)

    def check_DecodeDecl(self, dd: A.DecodeDecl) -> None:  # noqa: N802
        y = self.stalk(dd.target)
        if y is None:
            return
        if not any(p.stalk == y.name and p.source == "target" for p in self.pins):
            self.d.error("E287", f"the output `{y.name}` of a decoder must be pinned to the target", dd.target.span,
                         f"add `pin {y.name} = target`")
            return
        widths, srcs = [], []
        for src in dd.sources:
            g = self.grids.get(src.name.value)
            st = Stalk(g.name, g.dim) if g is not None else self.stalk(src.name)
            if st is None:
                return
            if g is None and st.name == y.name:
                self.d.error("E287", f"a decoder reads the agents, not its own output `{y.name}`", src.span)
                return
            w = st.dim
            if src.block is not None:
                a, b = src.block
                if not 0 <= a < b <= st.dim:
                    self.d.error("E286", f"block [{a}:{b}] of `{st.name}` is " + ("empty" if a >= b else
                                 f"out of range (dimension {st.dim})"), src.block_span,
                                 f"a block [a:b] takes coordinates a .. b−1 with 0 ≤ a < b ≤ {st.dim}")
                    return
                w = b - a
            widths.append((w, src))
            srcs.append((st.name, src.block))
        if len(set(w for w, _ in widths)) > 1:
            (w0, s0), (w1, s1) = widths[0], next(x for x in widths if x[0] != widths[0][0])
            self.d.error("E287", f"a decoder pools its sources, which need one dimension: `{s0.name.value}` has "
                         f"{w0}, `{s1.name.value}` has {w1}", s1.span)
            return
        if dd.pool is None and (len(srcs) > 1 or any(n in self.grids for n, _ in srcs)):
            self.d.error("E287", "a decoder of several sources (or of a grid's agents) pools them: write `mean` (their "
                         "average) or `sum`", dd.sources[0].span, f"`decode {y.name} : mean ...` or `decode {y.name} : sum ...`")
            return
        width = widths[0][0]
        W = self.param(dd.W)
        b = self.param(dd.b) if dd.b is not None else None
        if W is None or (dd.b is not None and b is None):
            return
        if W.shape != (y.dim, width):
            self.d.error("E287", f"decoder weight `{W.name}` is {_fmt_shape(W.shape)}, but it maps {width} numbers "
                         f"to `{y.name}` ({y.dim})", dd.W.span, f"declare `param {W.name} : {y.dim} x {width}`")
            return
        if b is not None and b.shape != (y.dim,):
            self.d.error("E287", f"decoder bias `{b.name}` has shape {_fmt_shape(b.shape)}, `{y.name}` needs {y.dim}",
                         dd.b.span, f"declare `param {b.name} : {y.dim}`")
            return
        if dd.kind == "softmax" and y.dim < 2:
            self.d.error("E287", "a softmax decoder on one number is constant", dd.kind_span,
                         "a two-class output is `sigmoid` on 1 dimension")
            return
        self.decoders.append(Decoder(y.name, tuple(srcs), W.name, b.name if b else None, dd.kind, dd.span,
                                     pool=dd.pool or "mean"))

    def check_learned(self) -> None:
        """What the learning trainers differentiate (E289): a strictly convex quadratic consensus problem on the
        agents (encoded or quadratic objectives, optionally bounded by ``nonneg``/``box``; linear edges without
        offsets), with no pins on an agent. A stalk pinned whole to a constant, with no objective and joined by hard
        edges only, is a **constant** of the problem: its edges are the affine constraints F_v x_v = F_p p."""
        if not (self.encoders or self.grids or self.decoders):
            if not (self.objectives or any(e.hard for e in self.edges.values())):
                for name, e in self.edges.items():
                    sides = [(e.src_block, e.src_map), (e.dst_block, e.dst_map)]
                    if any(b is not None and r is not None and r.param for b, r in sides):
                        decl = self.edge_decls[name]
                        self.d.error("E286", f"edge `{name}` puts a parameter map on a block of a stalk, which only a "
                                     "consensus problem (a model with objectives or hard edges) or a learned model "
                                     "lowers", decl.src_block_span if e.src_block else decl.dst_block_span,
                                     "write the map over the whole stalk (zero columns elsewhere)")
            return
        targets = {d.target for d in self.decoders}
        data = {o.obs for o in self.objectives if o.kind == "encoded"} | targets
        with_obj = {o.stalk for o in self.objectives}
        constants = {p.stalk for p in self.pins if p.source == "value" and p.indices is None} - with_obj - data
        agents = ({e.src for e in self.edges.values()} | {e.dst for e in self.edges.values()} | with_obj) - constants
        for o, decl in zip(self.objectives, self.objective_decls):
            if o.kind not in LEARNED_OBJECTIVE_KINDS:
                self.d.error("E289", f"a learned model's agents have quadratic objectives (`encoded` or `quadratic`), "
                             f"bounded by `nonneg` or `box`; the {o.kind} term of `{o.stalk}` is not differentiated by "
                             "the trainers", decl.kind_span,
                             "drop the term, or solve the model as a plain consensus problem")
        for name, e in self.edges.items():
            decl = self.edge_decls[name]
            if e.b is not None:
                self.d.error("E289", f"edge `{name}` has an offset: a learned model's edges are linear maps without a bias",
                             decl.span, "use `maps` or `linear`; a constant right-hand side is an edge to a stalk "
                             "pinned to a constant (`pin one = 1`)")
            if e.src in targets or e.dst in targets:
                self.d.error("E287", f"edge `{name}` touches the decoder's output; the decoder alone reads the agents",
                             decl.span)
            fixed = [s for s in (e.src, e.dst) if s in constants]
            if fixed and not e.hard:
                self.d.error("E289", f"edge `{name}` joins the constant stalk `{fixed[0]}` without being hard: a learned "
                             "model's constants enter its hard constraints only", decl.span,
                             "write `hard` instead of the weight, or give the pull a quadratic objective")
            elif len(fixed) == 2:
                self.d.error("E289", f"edge `{name}` joins two constant stalks: it constrains no agent", decl.span,
                             "drop the edge")
        for p in self.pins:
            if p.stalk in agents and p.stalk not in data:
                self.d.error("E289", f"`{p.stalk}` is an agent of a learned model: it is not pinned (its objective comes "
                             "from its observation)", p.span, "pin an observation stalk to the input and encode it; "
                             "a constant is a stalk pinned whole to a value, with no objective")
        for st in targets & with_obj:
            self.d.error("E287", f"the decoder's output `{st}` has an objective", self.stalks[st].span)
        if not self.decoders:
            self.d.error("E287", "a learned model reads its agents into a target through a `decode` statement",
                         Span(1, 1, 1, 2), "e.g. `decode y : mean g affine W b softmax`")

    def objective_data(self, arg, shape: tuple, what: str, matrix: bool = False) -> ObjectiveData | None:
        """Q (``matrix``) or q of a quadratic objective: a parameter of shape ``shape``, or a literal of that shape
        (a number: that multiple of I for Q, that value in every coordinate for q)."""
        if isinstance(arg, A.Ident):
            p = self.param(arg)
            if p is None:
                return None
            if p.shape != shape and not (p.shape == (1,) and shape == (1, 1)):
                self.d.error("E292", f"{what}: parameter `{p.name}` has shape {_fmt_shape(p.shape)}, the stalk needs "
                             f"{_fmt_shape(shape)}", arg.span, f"declare `param {p.name} : {_fmt_shape(shape)}`")
                return None
            return ObjectiveData(param=p.name)
        sh = lit_shape(arg.value)
        if sh is None:
            self.d.error("E231", "literal is not rectangular: its rows have different lengths", arg.span)
            return None
        if sh != () and sh != shape:
            n = shape[0]
            self.d.error("E292", f"{what} has shape {_fmt_shape(sh)}, the stalk needs {_fmt_shape(shape)}", arg.span,
                         (f"Q is a {n} x {n} matrix [[..], ..] (or a number s: s·I)" if matrix else
                          f"q is a vector of {n} numbers (or one number for every coordinate)"))
            return None
        if not _finite(arg.value):
            self.d.error("E232", f"{what} has a NaN or infinite entry", arg.span)
            return None
        if sh == ():
            v = float(arg.value)
            value = tuple(tuple(v if i == j else 0.0 for j in range(shape[0])) for i in range(shape[0])) if matrix \
                else (v,) * shape[0]
        else:
            value = arg.value
        return ObjectiveData(value=value)

    def quadratic_convex(self, Q: ObjectiveData, arg, what: str) -> bool:
        """E293/E294 for a Q whose values are known (a literal, or a parameter written in the file): symmetric,
        and PSD decided exactly on the decimals as written, with a witness of negative curvature."""
        value = Q.value if Q.param is None else _param_value(self.params[Q.param])
        if value is None:
            return True  # drawn at random or read from a file: checked when the values are known
        n = len(value)
        if n > PSD_EXACT_LIMIT:
            return True  # the IR builder checks it in floating point (numpy)
        M = [[decimal(x) for x in row] for row in value]
        name = f"parameter `{Q.param}`" if Q.param else "the matrix Q"
        for i in range(n):
            for j in range(i):
                if M[i][j] != M[j][i]:
                    self.d.error("E293", f"{name} of the {what} is not symmetric: Q[{i},{j}] = "
                                 f"{_fmt_value(value[i][j])} but Q[{j},{i}] = {_fmt_value(value[j][i])}", arg.span,
                                 "½ xᵀQx only sees (Q + Qᵀ)/2: write that symmetric matrix")
                    return False
        w = psd_witness(M)
        if w is not None:
            v, curv = w
            shown = "[" + ", ".join(_fmt_frac(x) for x in v) + "]"
            self.d.error("E294", f"{name} of the {what} is not positive semidefinite: v = {shown} has "
                         f"vᵀQv = {_fmt_frac(curv)} < 0", arg.span,
                         "f(x) = ½ xᵀQx + qᵀx is convex only for Q ⪰ 0: along v it curves down, so the problem "
                         "has no minimiser (or many local ones)")
            return False
        return True

    def bound(self, arg: A.Lit, d: int, what: str) -> tuple | None:
        sh = lit_shape(arg.value)
        if sh is None:
            self.d.error("E231", "literal is not rectangular", arg.span)
            return None
        if sh not in ((), (d,)):
            self.d.error("E292", f"{what} has shape {_fmt_shape(sh)}, the stalk has dimension {d}", arg.span,
                         f"give one number (for every coordinate) or a vector of {d}")
            return None
        vals = (float(arg.value),) * d if sh == () else tuple(float(x) for x in arg.value)
        if any(math.isnan(x) for x in vals):
            self.d.error("E232", f"{what} is NaN", arg.span, "a bound may be inf or -inf, not nan")
            return None
        return vals

    def check_consensus(self) -> None:
        """What a consensus problem needs beyond each statement: convex edges (E297), and the contradictions
        that are decidable up front (E299): per stalk, the bounds of its box/nonneg/simplex terms against each
        other and its hard pins; a hard edge row whose every coordinate is pinned; W310 a stalk whose every
        coordinate is pinned."""
        if not (self.objectives or any(e.hard for e in self.edges.values())):
            return
        for name, e in self.edges.items():
            if e.kind not in LINEAR_KINDS:
                decl = self.edge_decls[name]
                why = "a hard edge is a linear constraint" if e.hard else \
                    "a consensus problem (a model with objectives) is convex, and so is each soft edge's energy"
                self.d.error("E297", f"edge `{name}` is {a_or_an(e.kind)} edge, which is not linear: {why}",
                             decl.kind_span, "in a consensus problem an edge is `maps`, `linear`, `affine` or "
                             "`identity` (restriction maps that do not depend on the state)")
        if self.d.has_errors:
            return
        pinned: dict[str, dict[int, tuple[float, Pin]]] = {}
        fixed: dict[str, set] = {}
        for p in self.pins:
            dim = self.stalks[p.stalk].dim
            idx = p.indices if p.indices is not None else tuple(range(dim))
            fixed.setdefault(p.stalk, set()).update(idx)
            if p.source == "value":
                for i, x in zip(idx, p.value):
                    pinned.setdefault(p.stalk, {})[i] = (x, p)
        by_stalk: dict[str, list] = {}
        for o, decl in zip(self.objectives, self.objective_decls):
            by_stalk.setdefault(o.stalk, []).append((o, decl))
        for name, terms in by_stalk.items():
            self.stalk_feasible(name, terms, pinned.get(name, {}))
            if len(fixed.get(name, ())) == self.stalks[name].dim:
                self.d.warning("W310", f"every coordinate of `{name}` is hard-pinned: its objective is a constant "
                               "(its terms only restrict the pinned values)", terms[0][1].kind_span)
        for name, e in self.edges.items():
            if e.hard:
                self.hard_edge_on_pins(e, pinned)

    def stalk_feasible(self, name: str, terms: list, pins: dict) -> None:
        d = self.stalks[name].dim
        lo, hi = [(-math.inf, None)] * d, [(math.inf, None)] * d  # (bound, the term that sets it)
        simplex = None
        for o, decl in terms:
            if o.kind == "box":
                los, his = o.lo, o.hi
            elif o.kind in ("nonneg", "simplex"):
                los, his = (0.0,) * d, ((1.0,) if o.kind == "simplex" else (math.inf,)) * d
                simplex = simplex or (decl if o.kind == "simplex" else None)
            else:
                continue
            for i in range(d):
                if los[i] > lo[i][0]:
                    lo[i] = (los[i], decl)
                if his[i] < hi[i][0]:
                    hi[i] = (his[i], decl)
                if lo[i][0] > hi[i][0]:
                    a, b = lo[i], hi[i]
                    self.d.error("E299", f"coordinate {i} of `{name}` must be ≥ {_fmt_value(a[0])} ({_said(a[1])}) and "
                                 f"≤ {_fmt_value(b[0])} ({_said(b[1])}): no value is both", decl.kind_span,
                                 "the terms of one stalk's objective add up, so their sets intersect; as written the "
                                 "problem is infeasible")
                    return
        for i, (x, pin) in sorted(pins.items()):
            if not lo[i][0] <= x <= hi[i][0]:
                bound, term = (lo[i], "≥") if x < lo[i][0] else (hi[i], "≤")
                self.d.error("E299", f"pin of `{name}` sets coordinate {i} to {_fmt_value(x)}, but the {_said(bound[1])} "
                             f"needs it {term} {_fmt_value(bound[0])}", pin.span,
                             "a hard pin must lie in the stalk's box/nonneg/simplex set, or the problem is infeasible")
                return
        if simplex is not None:
            exact = lambda x: decimal(x) if math.isfinite(x) else x  # noqa: E731
            low = sum(exact(pins[i][0]) if i in pins else exact(max(lo[i][0], 0.0)) for i in range(d))
            high = sum(exact(pins[i][0]) if i in pins else exact(hi[i][0]) for i in range(d))
            if not low <= 1 <= high:
                every = len(pins) == d
                if every:
                    msg = f"the pins of `{name}` sum to {_fmt_frac(low)}, but its simplex needs Σx = 1"
                else:
                    side = "at least" if low > 1 else "at most"
                    msg = (f"on the simplex of `{name}` Σx = 1, but its pins and bounds make Σx {side} "
                           f"{_fmt_frac(low if low > 1 else high)}")
                self.d.error("E299", msg, simplex.kind_span,
                             "x ≥ 0 and Σx = 1 on a simplex stalk: pinned values must be ≥ 0 and sum to 1 when every "
                             "coordinate is pinned (at most 1 otherwise)")

    def hard_edge_on_pins(self, e: Edge, pinned: dict) -> None:
        """A row of B x_v − A x_u − b = 0 whose every coordinate is pinned to a constant is decided here."""
        A_ = _edge_block(self, e, e.src, "src")
        B_ = _edge_block(self, e, e.dst, "dst")
        b = _edge_offset(self, e)
        if A_ is None or B_ is None or b is None:
            return
        pu, pv = pinned.get(e.src, {}), pinned.get(e.dst, {})
        for r in range(e.dim):
            terms = [(-decimal(a), e.src, j, pu) for j, a in enumerate(A_[r]) if a] + \
                    [(decimal(a), e.dst, j, pv) for j, a in enumerate(B_[r]) if a]
            if not all(j in pins for _, _, j, pins in terms):
                continue
            value = sum(c * decimal(pins[j][0]) for c, _, j, pins in terms) - decimal(b[r])
            if value != 0:
                lines = sorted({pins[j][1].span.line for _, _, j, pins in terms})
                where = ", ".join(f"{st}[{j}]" for _, st, j, _ in terms) or "no coordinate"
                self.d.error("E299", f"hard edge `{e.name}` requires row {r} of F_dst x_{e.dst} − F_src x_{e.src} − b "
                             f"to vanish, but the hard pins of {where} (line{'s' * (len(lines) > 1)} "
                             f"{', '.join(map(str, lines))}) make it {_fmt_frac(value)}",
                             self.edge_decls[e.name].hard_span,
                             "two hard constraints on the same coordinates disagree, so the problem is infeasible; "
                             "`sheaf verify` decides the feasibility of every hard edge and pin together")
                return

    def warnings(self) -> None:
        for name, p in self.params.items():
            if name not in self.used_params:
                self.d.warning("W300", f"parameter `{name}` is not used by any edge, tie or reluctance", p.span)
        edged = {e.src for e in self.edges.values()} | {e.dst for e in self.edges.values()}
        pinned = {p.stalk for p in self.pins} | {p.stalk for p in self.soft_pins}
        with_objective = {o.stalk for o in self.objectives}
        for name, enc in self.encoders.items():
            if name not in self.used_encoders:
                self.d.warning("W311", f"encoder `{name}` is not used by any objective or grid", enc.span)
        for name, s in self.stalks.items():
            if name not in edged and name not in pinned and name not in with_objective:
                self.d.warning("W301", f"stalk `{name}` has no edges and no pins: it is unconstrained", s.span)


#: edges whose restriction maps do not depend on the state: the edges of a consensus problem
LINEAR_KINDS = ("maps", "linear", "affine", "identity")
#: literal Q matrices up to this size are decided exactly here; larger ones in floating point by the IR builder
PSD_EXACT_LIMIT = 200


def _param_value(p: Param):
    """A parameter's values when the file fixes them (literal, zeros, ones) as nested tuples, else None."""
    fill = {"zeros": 0.0, "ones": 1.0}.get(p.init)
    value = p.value if p.init == "literal" else fill
    if value is None:
        return None
    if not isinstance(value, tuple):  # one number fills the parameter
        if len(p.shape) == 1:
            return (float(value),) * p.shape[0]
        return tuple((float(value),) * p.shape[1] for _ in range(p.shape[0]))
    return value


def _edge_block(c: "_Checker", e: Edge, stalk: str, side: str):
    """The restriction map of one side of a linear edge as rows of floats over the whole stalk (None when its values
    are not fixed, or the side is a grid's agents)."""
    if stalk not in c.stalks:
        return None
    rows = _edge_block_rows(c, e, stalk, side)
    block = e.src_block if side == "src" else e.dst_block
    if rows is None or block is None:
        return rows
    n = c.stalks[stalk].dim
    return tuple((0.0,) * block[0] + tuple(r) + (0.0,) * (n - block[1]) for r in rows)


def _edge_block_rows(c: "_Checker", e: Edge, stalk: str, side: str):
    block = e.src_block if side == "src" else e.dst_block
    n = c.stalks[stalk].dim if block is None else block[1] - block[0]
    eye = tuple(tuple(1.0 if i == j else 0.0 for j in range(n)) for i in range(n))
    if side == "dst":
        ref = e.dst_map if e.kind == "maps" else MapRef(scale=1.0)
    else:
        ref = e.src_map if e.kind == "maps" else (MapRef(param=e.W) if e.W else MapRef(scale=1.0))
    if ref.scale is not None:
        return tuple(tuple(ref.scale * x for x in row) for row in eye)
    if ref.matrix is not None:
        return ref.matrix
    return _param_value(c.params[ref.param])


def _edge_offset(c: "_Checker", e: Edge):
    if e.b is None:
        return (0.0,) * e.dim
    return _param_value(c.params[e.b])


def _said(decl) -> str:
    """`the box of line 4`: which objective statement set a bound."""
    return f"{decl.kind} at line {decl.span.line}" if decl is not None and decl.span.known else \
        (decl.kind if decl is not None else "stalk")


def _fmt_frac(x) -> str:
    """An exact rational as a short decimal when it is one (1/4 -> 0.25), else p/q."""
    from fractions import Fraction

    x = Fraction(x)
    if x.denominator == 1:
        return str(x.numerator)
    f = float(x)
    if Fraction(repr(f)) == x:
        return repr(f)
    return f"{x.numerator}/{x.denominator}"


def _coerce(value, typ):
    if typ is str:
        return value if isinstance(value, str) else None
    if typ is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        if isinstance(value, float) and value in (0.0, 1.0):
            return bool(value)
        return None
    if isinstance(value, str):
        return None
    if typ is int:
        if not math.isfinite(value) or value != int(value):
            return None
        return int(value)
    if not math.isfinite(value):
        return None
    return float(value)


def _fmt_value(v) -> str:
    if isinstance(v, float) and math.isfinite(v) and v == int(v) and abs(v) < 1e16:
        return str(int(v))
    return str(v)


def _fmt_shape(shape: tuple[int, ...]) -> str:
    if shape == ():
        return "a scalar"
    return " x ".join(str(n) for n in shape)


def check(module: A.Module) -> Model:
    """Check a parsed module; return the model or raise SheafError with every error found.

    Warnings alone do not raise; they are on ``check_diagnostics``.
    """
    return _Checker(module).run()


def check_diagnostics(module: A.Module) -> list:
    """Every diagnostic (errors and warnings) for a module, sorted by position."""
    c = _Checker(module)
    try:
        c.run()
    except SheafError:
        pass
    return c.d.sorted()


def check_with_warnings(module: A.Module) -> tuple[Model, list]:
    """:func:`check`, and the warnings it found (sorted): one pass for a command that shows both."""
    c = _Checker(module)
    model = c.run()
    return model, [d for d in c.d.sorted() if d.severity == "warning"]


def load_text(source: str, path: str = "<input>") -> Model:
    """Parse and check source text."""
    return check(parse_text(source, path))


def load_file(path: str | Path) -> Model:
    """Parse and check a .sheaf file."""
    return check(parse_file(path))
