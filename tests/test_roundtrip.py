"""Property tests of the formatter: parse(format(ast)) == ast, idempotence, comments kept, valid models stay valid."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sheafdsl.frontend import check, expand, load_text, parse_text
from sheafdsl.frontend.formatter import collect_comments, format_module
from sheafdsl.testing.source import model_sources, modules, network_sources, statements, with_comments

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(modules())
def test_parse_of_format_is_the_ast(module):
    text = format_module(module)
    again = parse_text(text)
    assert again == module
    assert format_module(again) == text  # idempotent, now with the spans and source of real text


@SETTINGS
@given(statements())
def test_each_statement_alone(stmt):
    from sheafdsl.frontend import ast as A

    module = A.Module((stmt,))
    assert parse_text(format_module(module)).statements == (stmt,)


@settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(with_comments())
def test_format_keeps_comments_is_idempotent_and_keeps_the_model(src):
    out = format_module(parse_text(src))
    assert [c.text for c in collect_comments(out)] == [c.text for c in collect_comments(src)]
    assert format_module(parse_text(out)) == out
    before, after = load_text(src), load_text(out)
    for field in ("stalks", "params", "edges", "pins", "soft_pins", "reluctances", "ties", "train", "network"):
        assert getattr(before, field) == getattr(after, field), field


@SETTINGS
@given(model_sources())
def test_generated_models_check(src):
    load_text(src)


@settings(max_examples=60, deadline=None)
@given(network_sources())
def test_expansion_means_the_same_model(src):
    module = parse_text(src)
    expanded = format_module(expand(module))
    assert "network" not in expanded.split("#")[0] or "network" not in src
    a, b = check(module), load_text(expanded)
    for field in ("stalks", "params", "edges", "pins", "reluctances", "ties", "train"):
        assert getattr(a, field) == getattr(b, field), field


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["models/paraboloid.sheaf", "models/tiny.sheaf", "models/soft_pins.sheaf",
                        "models/triangle.sheaf", "models/circle.sheaf"]), st.data())
def test_reformatting_a_scrambled_model_restores_it(path, data):
    """Scrambling only the spacing inside lines formats back to exactly the canonical file."""
    text = open(path, encoding="utf-8").read()
    lines = []
    for line in text.split("\n"):
        if line and not line.lstrip().startswith("#"):
            code, _, comment = line.partition("  #")
            code = " ".join(code.split())
            for tok in (" : ", " -> ", " = ", ", "):
                code = code.replace(tok, data.draw(st.sampled_from([tok.strip(), tok, "  " + tok.strip() + "\t"])))
            line = code + " " * data.draw(st.integers(0, 3)) + (("#" + comment) if comment else "")
        lines.append(line)
    scrambled = "\n".join(lines)
    assert format_module(parse_text(scrambled)) == text
