"""The models in models/: each checks, is in canonical layout, says what it is, and is what it says."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest

from sheafdsl.frontend import check_diagnostics, load_file, parse_file
from sheafdsl.frontend.formatter import format_module

MODELS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "models", "*.sheaf")))
NAMES = [os.path.basename(p)[:-6] for p in MODELS]

#: docs/tasks.md: task -> (widths, output)
TASKS = {
    "paraboloid": ((2, 30, 1), "identity"),
    "saddle": ((2, 30, 1), "identity"),
    "circle": ((2, 25, 1), "sigmoid"),
    "blobs": ((2, 25, 4), "softmax"),
    "digits": ((64, 64, 10), "softmax"),
}


def test_the_expected_models_exist():
    assert set(OWN) <= set(NAMES)


#: the front end's models (other models, e.g. verify's counterexamples, may warn on purpose)
OWN = ["paraboloid", "saddle", "circle", "blobs", "digits", "tiny", "triangle", "twisted", "soft_pins"]
OWN_PATHS = [os.path.join(os.path.dirname(__file__), "..", "models", f"{n}.sheaf") for n in OWN]


@pytest.mark.parametrize("path", MODELS, ids=NAMES)
def test_every_model_checks(path):
    module = parse_file(path)
    assert [d for d in check_diagnostics(module) if d.severity == "error"] == []
    load_file(path)
    first = open(path, encoding="utf-8").read().split("\n", 1)[0]
    assert first.startswith("# ") and len(first) > 20, "a model starts with a header comment saying what it is"


@pytest.mark.parametrize("path", OWN_PATHS, ids=OWN)
def test_front_end_models_have_no_warnings(path):
    assert check_diagnostics(parse_file(path)) == []


@pytest.mark.parametrize("path", OWN_PATHS, ids=OWN)
def test_model_is_canonical_and_starts_with_a_header_comment(path):
    text = open(path, encoding="utf-8").read()
    assert format_module(parse_file(path)) == text, "run `sheaf fmt -w` on it"
    first = text.split("\n", 1)[0]
    assert first.startswith("# ") and len(first) > 20


def _chain(m):
    """Widths and output kind of a model's feed-forward chain x -> ... -> y, read from its edges."""
    out = {e.src: e for e in m.edges.values()}
    widths, node, kind = [m.stalks["x"].dim], "x", None
    while node in out:
        e = out[node]
        if e.kind == "affine":
            widths.append(m.stalks[e.dst].dim)
        kind = e.kind
        node = e.dst
    assert node == "y"
    return tuple(widths), kind


@pytest.mark.parametrize("task", sorted(TASKS))
def test_network_models_match_their_task(task):
    m = load_file(os.path.join(os.path.dirname(__file__), "..", "models", f"{task}.sheaf"))
    widths, output = TASKS[task]
    assert _chain(m) == (widths, output)
    assert m.train["data"] == task
    assert m.input_stalks == ["x"] and m.target_stalks == ["y"]
    from sheafdsl.training.config import TrainConfig

    TrainConfig.from_sources(m.train)  # the defaults are accepted by the trainer


def _coboundary(m) -> np.ndarray:
    """δ of a sheaf whose edges are all `maps` edges with constant maps (literal, scalar or literal parameter)."""
    offsets, n = {}, 0
    for name, s in m.stalks.items():
        offsets[name], n = n, n + s.dim
    rows = []
    for e in m.edges.values():
        assert e.kind == "maps"

        def mat(ref, dim):
            if ref.scale is not None:
                return ref.scale * np.eye(dim)
            if ref.matrix is not None:
                return np.array(ref.matrix, dtype=float)
            return np.array(m.params[ref.param].value, dtype=float)

        block = np.zeros((e.dim, n))
        s, d = m.stalks[e.src], m.stalks[e.dst]
        block[:, offsets[e.src]:offsets[e.src] + s.dim] -= mat(e.src_map, s.dim)
        block[:, offsets[e.dst]:offsets[e.dst] + d.dim] += mat(e.dst_map, d.dim)
        rows.append(block)
    return np.vstack(rows)


def _h0_h1(m) -> tuple[int, int]:
    D = _coboundary(m)
    r = np.linalg.matrix_rank(D)
    return D.shape[1] - r, D.shape[0] - r


def test_triangle_is_the_constant_sheaf():
    m = load_file(os.path.join(os.path.dirname(__file__), "..", "models", "triangle.sheaf"))
    assert _h0_h1(m) == (2, 2)  # H0 = R^2 (constant sections), H1 = R^2 (one cycle)
    D = _coboundary(m)
    const = np.tile([1.0, -2.0], 3)
    assert np.allclose(D @ const, 0)  # the pinned value extends to a global section
    assert [(p.stalk, p.value) for p in m.pins] == [("u", (1.0, -2.0))]


def test_twisted_sheaf_has_no_global_sections():
    m = load_file(os.path.join(os.path.dirname(__file__), "..", "models", "twisted.sheaf"))
    assert _h0_h1(m) == (0, 0)
    # the same graph with the twist undone has H0 = R^2: it is the twist that kills the sections
    untwisted = _coboundary(m)
    untwisted[4:6, 4:6] = -np.eye(2)
    assert untwisted.shape[1] - np.linalg.matrix_rank(untwisted) == 2


def test_soft_pins_model_shows_every_boundary_kind():
    m = load_file(os.path.join(os.path.dirname(__file__), "..", "models", "soft_pins.sheaf"))
    assert any(p.indices for p in m.pins)  # a partial hard pin
    assert any(p.indices for p in m.soft_pins) and any(p.indices is None for p in m.soft_pins)
    assert m.reluctances and m.ties
