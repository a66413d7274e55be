"""The `network` sugar's options: per-layer activations, `output OUT weight W`, the default output weight."""

import pytest

from sheafdsl.errors import SheafError
from sheafdsl.frontend import load_text, parse_text
from sheafdsl.frontend.checker import DEFAULT_REGRESSION_WEIGHT
from sheafdsl.frontend.formatter import format_source


def model(line):
    return load_text(f"sheaf t\n{line}\n")


def kinds(m):
    return {e.name: (e.kind, e.arg) for e in m.edges.values()}


def test_per_layer_activations_as_the_issue_writes_them():
    m = model("network mlp : 2 -> 8 tanh -> 8 gelu -> 1")
    assert kinds(m)["act1"] == ("tanh", None) and kinds(m)["act2"] == ("gelu", None)
    assert m.network.layers == (("tanh", None), ("gelu", None)) and m.network.activation == "mixed"


def test_a_trailing_activation_is_the_default_of_the_other_layers():
    a = model("network mlp : 2 -> 8 tanh -> 8 gelu -> 1")
    b = model("network mlp : 2 -> 8 tanh -> 8 -> 1 gelu")
    assert a.edges == b.edges and a.stalks == b.stalks and a.params == b.params
    c = model("network mlp : 2 -> 4 -> 4 -> 1 softplus")
    assert {kinds(c)[e][0] for e in ("act1", "act2")} == {"softplus"} and c.network.activation == "softplus"
    assert kinds(model("network mlp : 2 -> 4 -> 4 -> 1"))["act2"] == ("relu", None)


def test_leaky_relu_takes_its_slope():
    m = model("network mlp : 2 -> 8 leaky_relu 0.1 -> 8 -> 1 output identity weight 0.5")
    assert kinds(m)["act1"] == ("leaky_relu", 0.1) and kinds(m)["act2"] == ("relu", None)
    assert m.edges["out"].weight == 0.5


def test_output_weight_and_its_default():
    assert model("network mlp : 2 -> 3 -> 1 output identity weight 0.1").edges["out"].weight == 0.1
    assert model("network mlp : 2 -> 3 -> 1").edges["out"].weight == DEFAULT_REGRESSION_WEIGHT == 0.03
    assert model("network mlp : 2 -> 3 -> 1 output sigmoid").edges["out"].weight == 1.0
    assert model("network mlp : 2 -> 3 -> 4 output softmax").edges["out"].weight == 1.0
    assert model("network mlp : 2 -> 3 -> 1 output sigmoid weight 2").edges["out"].weight == 2.0


@pytest.mark.parametrize("line, code", [
    ("network m : 2 -> 3 -> 1 output identity weight 0", "E250"),
    ("network m : 2 -> 3 -> 1 output identity weight -2", "E250"),
    ("network m : 2 -> 3 leaky_relu 2 -> 1", "E226"),
    ("network m : 2 -> 3 leaky_relu -> 1", "E271"),
    ("network m : 2 -> 3 tanh 0.5 -> 1", "E271"),
    ("network m : 2 -> 3 swish -> 1", "E271"),
    ("network m : 2 -> 3 softmax -> 1", "E271"),
])
def test_bad_options_are_reported_once(line, code):
    with pytest.raises(SheafError) as e:
        model(line)
    assert [d.code for d in e.value.diagnostics] == [code]


@pytest.mark.parametrize("line", [
    "network mlp : 2 -> 8 tanh -> 8 gelu -> 1",
    "network mlp : 2 -> 8 tanh -> 8 -> 1 gelu output identity weight 0.1",
    "network mlp : 2 -> 8 leaky_relu 0.05 -> 3 output softmax weight 2",
    "network mlp : 2 -> 30 -> 1 relu output identity",
])
def test_fmt_keeps_the_form_and_round_trips(line):
    text = f"sheaf t\n{line}\n"
    assert format_source(text) == text
    assert parse_text(format_source(text)) == parse_text(text)


def test_fmt_expand_shows_the_layers_and_the_output_weight():
    out = format_source("sheaf t\nnetwork mlp : 2 -> 8 tanh -> 8 leaky_relu 0.1 -> 1\n", expand=True)
    assert "edge act1 : z1 -> a1  tanh" in out
    assert "edge act2 : z2 -> a2  leaky_relu 0.1" in out
    assert "edge out  : z3 -> y   identity weight 0.03" in out
    # the expansion is itself a model equal to the sugar
    a, b = model("network mlp : 2 -> 8 tanh -> 8 leaky_relu 0.1 -> 1"), load_text(out)
    assert a.edges == b.edges and a.params == b.params and a.pins == b.pins
