"""The checker: what a valid file means (the Model), sugar expansion and overrides, and edge cases.

Each diagnostic code's position is tested in test_diagnostics.py; here, the content of the model.
"""

from __future__ import annotations

import pytest

from sheafdsl.errors import SheafError
from sheafdsl.frontend import check, check_diagnostics, expand, load_text, parse_text
from sheafdsl.frontend.checker import TRAIN_OPTIONS, lit_shape, network_statements
from sheafdsl.frontend.model import Edge, MapRef, Param, Pin, SoftPin


def codes(src: str) -> list[str]:
    try:
        return [d.code for d in check_diagnostics(parse_text(src))]
    except SheafError as exc:
        return exc.codes


def test_network_sugar_expands_to_the_paper_names():
    m = load_text("sheaf t\nnetwork mlp : 2 -> 4 -> 3 -> 1 output sigmoid\n")
    assert list(m.stalks) == ["x", "z1", "a1", "z2", "a2", "z3", "y"]
    assert [s.dim for s in m.stalks.values()] == [2, 4, 4, 3, 3, 1, 1]
    assert {k: p.shape for k, p in m.params.items()} == {
        "W1": (4, 2), "b1": (4,), "W2": (3, 4), "b2": (3,), "W3": (1, 3), "b3": (1,)}
    assert {k: p.init for k, p in m.params.items()} == {
        "W1": "he", "b1": "zeros", "W2": "he", "b2": "zeros", "W3": "he", "b3": "zeros"}
    assert [(e.name, e.src, e.dst, e.kind) for e in m.edges.values()] == [
        ("aff1", "x", "z1", "affine"), ("act1", "z1", "a1", "relu"), ("aff2", "a1", "z2", "affine"),
        ("act2", "z2", "a2", "relu"), ("aff3", "a2", "z3", "affine"), ("out", "z3", "y", "sigmoid")]
    assert m.edges["aff2"].W == "W2" and m.edges["aff2"].b == "b2" and m.edges["aff2"].dim == 3
    assert [(p.stalk, p.source) for p in m.pins] == [("x", "input"), ("y", "target")]
    assert m.network.widths == (2, 4, 3, 1) and m.network.output == "sigmoid" and m.network.activation == "relu"
    assert m.input_stalks == ["x"] and m.target_stalks == ["y"]


def test_sugar_equals_the_explicit_form():
    sugar = load_text("sheaf t\nnetwork m : 2 -> 3 -> 1\n")
    explicit = load_text("""sheaf t
stalk x : 2
stalk z1 : 3
stalk a1 : 3
stalk z2 : 1
stalk y : 1
param W1 : 3 x 2 init he
param b1 : 3 init zeros
param W2 : 1 x 3 init he
param b2 : 1 init zeros
edge aff1 : x -> z1 affine W1 b1
edge act1 : z1 -> a1 relu
edge aff2 : a1 -> z2 affine W2 b2
edge out : z2 -> y identity weight 0.03
pin x = input
pin y = target
""")
    for field in ("stalks", "params", "edges", "pins", "soft_pins", "reluctances", "ties", "train"):
        assert getattr(sugar, field) == getattr(explicit, field), field
    assert sugar.network is not None and explicit.network is None


def test_explicit_param_and_pin_override_the_sugar():
    src = "sheaf t\nnetwork m : 2 -> 2 -> 1\nparam W1 : 2 x 2 = [[1, 0], [0, 1]]\npin y = [0.5]\n"
    m = load_text(src)
    assert m.params["W1"].init == "literal" and m.params["W1"].value == ((1, 0), (0, 1))
    assert m.params["W2"].init == "he"
    assert [(p.stalk, p.source, p.value) for p in m.pins] == [("x", "input", None), ("y", "value", (0.5,))]
    # an override of the wrong shape is caught by the edge that uses it
    assert codes("sheaf t\nnetwork m : 2 -> 2 -> 1\nparam W1 : 3 x 2 init he\n") == ["E220"]
    # a soft pin adds to the generated pins rather than replacing them
    m = load_text("sheaf t\nnetwork m : 2 -> 1\npin y ~ 0 weight 1\n")
    assert [p.source for p in m.pins] == ["input", "target"] and len(m.soft_pins) == 1


def test_expand_keeps_other_statements_in_place_and_is_checkable():
    mod = parse_text("sheaf t\nnetwork m : 2 -> 3 output softmax\nreluctance W1 weight 0.1\n")
    ex = expand(mod)
    kinds = [type(s).__name__ for s in ex.statements]
    assert kinds[0] == "Header" and kinds[-1] == "ReluctanceDecl" and "NetworkDecl" not in kinds
    assert len(network_statements(mod.statements[1])) == len(ex.statements) - 2
    assert check(ex).edges == check(mod).edges


def test_names_may_be_used_before_they_are_declared():
    m = load_text("sheaf t\nedge e : u -> v linear W\npin u = input\nparam W : 3 x 2 init he\nstalk u : 2\nstalk v : 3\n")
    assert m.edges["e"] == Edge("e", "u", "v", "linear", 3, 1.0, W="W")


def test_maps_edges_infer_the_edge_stalk():
    m = load_text("sheaf t\nstalk u : 2\nstalk v : 3\nparam M : 4 x 3 init normal(1)\n"
                  "edge a : u -> v maps [[1, 2], [3, 4], [5, 6], [7, 8]] | M weight 0.5\n"
                  "edge b : u -> u maps 2 | [[1, 0], [0, 1]]\n")
    a, b = m.edges["a"], m.edges["b"]
    assert (a.dim, a.weight, a.dst_map, a.src_map.matrix[3]) == (4, 0.5, MapRef(param="M"), (7, 8))
    assert (b.dim, b.src_map, b.src == b.dst) == (2, MapRef(scale=2.0), True)


def test_pins_hard_partial_soft():
    m = load_text("sheaf t\nstalk a : 3\nstalk b : 2\npin a[0, 2] = [1, -1]\npin a[1] ~ 0.5 weight 3\n"
                  "pin b = 7\npin b ~ [1, 2] weight 0.1\n")
    assert m.pins == [Pin("a", "value", (0, 2), (1.0, -1.0)), Pin("b", "value", None, (7.0, 7.0))]
    assert m.soft_pins == [SoftPin("pin_a_1", "a", (0.5,), 3.0, (1,)), SoftPin("pin_b", "b", (1.0, 2.0), 0.1)]


def test_soft_pin_names_are_unique():
    m = load_text("sheaf t\nstalk x : 2\nstalk pin_x : 1\npin x ~ 0 weight 1\npin x ~ 1 weight 2\npin pin_x = 0\n")
    names = [p.name for p in m.soft_pins]
    assert len(set(names)) == 2 and not set(names) & set(m.stalks)


def test_partial_pins_may_share_a_stalk_but_not_a_coordinate():
    assert codes("sheaf t\nstalk a : 3\npin a[0] = 1\npin a[1, 2] = 0\n") == []
    assert codes("sheaf t\nstalk a : 3\npin a[0] = 1\npin a[2, 0] = 0\n") == ["E242"]
    assert codes("sheaf t\nstalk a : 3\npin a = input\npin a = target\n") == ["E242"]


def test_parameter_sheaf():
    m = load_text("sheaf t\nnetwork m : 2 -> 2 -> 2 -> 1\nreluctance W1 W2 weight 0.01\ntie W2 ~ W1 weight 0.3\n")
    assert [(r.param, r.weight) for r in m.reluctances] == [("W1", 0.01), ("W2", 0.01)]
    assert [(t.a, t.b, t.weight) for t in m.ties] == [("W2", "W1", 0.3)]


def test_params():
    m = load_text('sheaf t\nparam a : 2 init ones\nparam b : 2 x 2 = 0.5\nparam c : 3 init normal(0.2)\n'
                  'param d : 2 x 3 init xavier\nstalk x : 2\npin x = 0\nreluctance a b c d weight 1\n')
    assert m.params["b"] == Param("b", (2, 2), "literal", value=0.5)
    assert (m.params["c"].init, m.params["c"].std) == ("normal", 0.2)
    assert m.params["d"].init == "xavier"


def test_init_file_is_resolved_against_the_model_folder(tmp_path):
    (tmp_path / "w.npz").write_bytes(b"")
    f = tmp_path / "m.sheaf"
    f.write_text('sheaf t\nparam W : 2 x 2 init "w.npz"\nparam V : 2 x 2 init "w.npz":K\ntie W ~ V weight 1\n')
    from sheafdsl.frontend import load_file

    m = load_file(f)
    assert (m.params["W"].file, m.params["W"].key, m.params["V"].key) == ("w.npz", "W", "K")
    assert m.params["W"].base_dir == str(tmp_path)


def test_train_options_are_coerced():
    m = load_text('sheaf t\nstalk x : 1\npin x = 0\ntrain data="my data.csv" n=300 lr=1e-3 standardize=true '
                  'optimizer=sgd momentum=0 seed=3 noise=0 backend=auto\n')
    assert m.train == {"data": "my data.csv", "n": 300, "lr": 0.001, "standardize": True, "optimizer": "sgd",
                       "momentum": 0.0, "seed": 3, "noise": 0.0, "backend": "auto"}
    assert isinstance(m.train["n"], int) and isinstance(m.train["lr"], float)


def test_train_options_match_the_trainer_config():
    """Every option the checker accepts is a field of TrainConfig, and its defaults validate."""
    from dataclasses import fields

    from sheafdsl.training.config import TrainConfig

    names = {f.name for f in fields(TrainConfig)}
    assert set(TRAIN_OPTIONS) <= names
    m = load_text("sheaf t\nnetwork m : 2 -> 1\ntrain data=saddle n=10 n_test=5 steps=0 lr=0.5 momentum=0.5 "
                  "trainer=joint solver=diffusion seed=1 data_seed=2 log_every=1 alpha=1 beta=2 dt=0.1 tol=1e-6 batch=4\n")
    cfg = TrainConfig.from_sources(m.train)
    assert (cfg.data, cfg.trainer, cfg.batch, cfg.beta) == ("saddle", "joint", 4, 2.0)


@pytest.mark.parametrize("item, code", [
    ("n=0", "E283"), ("n=-3", "E283"), ("lr=0", "E283"), ("lr=-1", "E283"), ("momentum=1", "E283"),
    ("noise=-0.1", "E283"), ("steps=1.5", "E282"), ("lr=fast", "E282"), ("data=1", "E282"),
    ("standardize=2", "E282"), ("optimizer=adamw", "E282"), ("lr=nan", "E282"), ("steps=inf", "E282"),
    ("backend=gpu", "E282"), ("epochs=3", "E280"),
])
def test_bad_train_options(item, code):
    assert codes(f"sheaf t\nstalk x : 1\npin x = 0\ntrain {item}\n") == [code]


def test_invalid_declarations_do_not_cascade():
    # a stalk with a bad dimension, a param with a bad init: their uses are not reported again
    src = "sheaf t\nstalk x : 0\nstalk y : 2\nparam W : 2 x 2 init foo\nedge e : x -> y linear W\npin x = 1\n"
    assert codes(src) == ["E210", "E233"]


def test_errors_are_all_reported_and_sorted():
    src = "sheaf t\nedge e : a -> b relu\nstalk q : 0\nedge f : c -> d identity\n"
    diags = check_diagnostics(parse_text(src))
    assert [(d.code, d.span.line, d.span.col) for d in diags] == [
        ("E202", 2, 10), ("E202", 2, 15), ("E210", 3, 11), ("E202", 4, 10), ("E202", 4, 15)]


def test_check_raises_with_every_error_and_the_source():
    src = "sheaf t\nstalk x : 0\nstalk y : 0\n"
    with pytest.raises(SheafError) as info:
        load_text(src, "m.sheaf")
    assert info.value.codes == ["E210", "E210"] and info.value.source == src
    assert "m.sheaf:3:11: error[E210]" in str(info.value)


def test_warnings_alone_do_not_raise():
    m = load_text("sheaf t\nstalk x : 2\nparam W : 2 x 2 init he\n")
    assert list(m.stalks) == ["x"] and "W" in m.params
    assert codes("sheaf t\nstalk x : 2\nparam W : 2 x 2 init he\n") == ["W301", "W300"]


def test_self_loop_still_checks_its_arguments():
    assert codes("sheaf t\nstalk x : 2\nedge e : x -> x linear V\n") == ["E290", "E203"]


def test_nonlinear_edges_need_equal_dims_but_maps_loops_are_fine():
    assert codes("sheaf t\nstalk x : 2\nstalk y : 2\nedge e : x -> y softmax\npin x = input\n") == []
    assert codes("sheaf t\nstalk x : 2\nedge e : x -> x maps [[0, 1], [1, 0]] | 1\n") == []


def test_lit_shape():
    assert lit_shape(1.0) == () and lit_shape((1.0, 2.0)) == (2,) and lit_shape(((1.0,), (2.0,))) == (2, 1)
    assert lit_shape(((1.0,), (2.0, 3.0))) is None and lit_shape(((1.0,), 2.0)) is None and lit_shape(()) == (0,)


def test_an_invalid_network_does_not_cascade():
    src = "sheaf t\nnetwork m : 2 -> 0 -> 1\nreluctance W1 W2 weight 1\nedge e : z1 -> a1 relu\npin y ~ 0 weight 1\n"
    assert codes(src) == ["E210"]
    assert codes("sheaf t\nnetwork m : 2 -> 1\nnetwork n : 2 -> 1\n") == ["E270"]
