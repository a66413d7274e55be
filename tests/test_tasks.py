"""The learned tasks of issue 11 (sheafdsl.training.tasks): the Sudoku solver and generator against brute
force, the digit canvases, and the NumPy baselines' backward passes against finite differences."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from sheafdsl.errors import SheafError
from sheafdsl.training.tasks import baselines as B
from sheafdsl.training.tasks import canvas, sudoku


# ----------------------------------------------------------------------------------------------
# Sudoku: the solver against brute force


def _all_4x4_grids() -> np.ndarray:
    """Every solved 4×4 grid by brute force over row permutations (independent of the solver)."""
    g = sudoku.geometry(4)
    perms = list(itertools.permutations(range(1, 5)))
    out = []
    for r0, r1 in itertools.product(perms, repeat=2):
        if any(a == b for a, b in zip(r0, r1)):  # prune: columns 0..3 of the top band
            continue
        for r2, r3 in itertools.product(perms, repeat=2):
            grid = np.array(r0 + r1 + r2 + r3)
            if sudoku.is_solution(grid, g):
                out.append(grid)
    return np.array(out)


GRIDS = _all_4x4_grids()


def test_there_are_288_solved_4x4_grids_and_the_solver_counts_them():
    assert len(GRIDS) == 288  # the known count
    assert sudoku.count_solutions(np.zeros(16, dtype=int), limit=10_000) == 288


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 287), st.lists(st.booleans(), min_size=16, max_size=16), st.integers(0, 15), st.integers(1, 4))
def test_count_solutions_matches_brute_force(k, keep, cell, digit):
    """Any partial grid (a solved grid's cells kept or blanked, maybe one cell overwritten, so that some
    have no solution): the solver's count equals the number of the 288 grids that agree with it."""
    p = np.where(keep, GRIDS[k], 0)
    p[cell] = digit if not keep[cell] else p[cell]
    agree = int(np.sum(np.all((p == 0) | (GRIDS == p), axis=1)))
    assert sudoku.count_solutions(p, limit=10_000) == agree
    assert sudoku.count_solutions(p, limit=2) == min(agree, 2)
    s = sudoku.solve(p)
    assert (s is None) == (agree == 0)
    if s is not None:
        assert sudoku.is_solution(s) and np.all((p == 0) | (s == p))


def test_a_repeated_digit_has_no_solution_and_is_solution_rejects_bad_grids():
    p = np.zeros(16, dtype=int)
    p[[0, 1]] = 3  # two 3s in row 0
    assert sudoku.count_solutions(p) == 0 and sudoku.solve(p) is None
    good = GRIDS[0].copy()
    assert sudoku.is_solution(good)
    bad = good.copy()
    bad[[0, 1]] = bad[[1, 0]]
    assert not sudoku.is_solution(bad) and not sudoku.is_solution(np.where(np.arange(16) == 5, 0, good))


# ----------------------------------------------------------------------------------------------
# Sudoku: the generator and the splits


def test_generated_puzzles_have_unique_solutions_the_requested_blanks_and_are_seeded():
    P, S = sudoku.generate(40, blanks=(6, 11), seed=3, size=4)
    blanks = (P == 0).sum(axis=1)
    assert blanks.min() >= 6 and blanks.max() <= 11 and len(set(blanks.tolist())) > 2
    assert len({p.tobytes() for p in P}) == 40  # distinct
    for p, s in zip(P, S):
        agree = np.all((p == 0) | (GRIDS == p), axis=1)
        assert agree.sum() == 1 and np.all(GRIDS[agree][0] == s)  # unique, by brute force
    P2, S2 = sudoku.generate(40, blanks=(6, 11), seed=3, size=4)
    assert np.array_equal(P, P2) and np.array_equal(S, S2)
    assert not np.array_equal(P, sudoku.generate(40, blanks=(6, 11), seed=4, size=4)[0])


def test_exclude_keeps_the_held_out_split_apart():
    P, _ = sudoku.generate(30, blanks=(8, 8), seed=0)
    Q, _ = sudoku.generate(30, blanks=(8, 8), seed=0, exclude={p.astype(np.int8).tobytes() for p in P})
    assert not ({p.tobytes() for p in P} & {q.tobytes() for q in Q})


def test_9x9_puzzles_are_unique():
    P, S = sudoku.generate(2, blanks=(45, 50), seed=1, size=9)
    for p, s in zip(P, S):
        assert sudoku.count_solutions(p) == 1 and sudoku.is_solution(s) and np.all((p == 0) | (p == s))
        assert 45 <= (p == 0).sum() <= 50


def test_generator_refusals_are_sheaf_errors():
    with pytest.raises(SheafError) as e:
        sudoku.generate(1, blanks=(3, 20), seed=0)
    assert e.value.codes == ["E570"]
    with pytest.raises(SheafError) as e:
        sudoku.geometry(5)
    assert e.value.codes == ["E570"]
    with pytest.raises(SheafError) as e:  # a 4x4 with 15 blanks is never unique
        sudoku.make_puzzle(np.random.default_rng(0), sudoku.geometry(4), 15, tries=3)
    assert e.value.codes == ["E570"]


def test_geometry_units_and_slots():
    g = sudoku.geometry(4)
    assert g.units.shape == (12, 4)
    assert g.units[0].tolist() == [0, 1, 2, 3] and g.units[4].tolist() == [0, 4, 8, 12]
    assert g.units[8].tolist() == [0, 1, 4, 5] and g.units[11].tolist() == [10, 11, 14, 15]
    for c in range(16):  # every cell is in its three units, at its slot
        assert [g.units[u][s] for u, s in zip(g.cell_units[c], g.slot[c])] == [c, c, c]


def test_one_hot_decode_and_solved_fraction():
    P, S = sudoku.generate(5, blanks=(8, 8), seed=0)
    X, Y = sudoku.one_hot(P, 4), sudoku.one_hot(S, 4)
    assert X.shape == (5, 64) and np.all(X.sum(axis=1) == 8) and np.all(Y.sum(axis=1) == 16)
    assert np.array_equal(sudoku.decode(Y, 4), S)
    assert sudoku.solved_fraction(Y, S) == 1.0 and sudoku.solved_fraction(Y, Y) == 1.0
    wrong = Y.copy().reshape(5, 16, 4)
    wrong[0, 3] = np.roll(wrong[0, 3], 1)  # one wrong cell in puzzle 0
    assert sudoku.solved_fraction(wrong.reshape(5, 64), S) == 0.8


def test_render_shows_the_boxes():
    P, S = sudoku.generate(1, blanks=(8, 8), seed=0)
    text = sudoku.render(P[0])
    assert text.count(".") == 8 and text.splitlines()[2] == "-" * 9 and "|" in text.splitlines()[0]
    assert "." not in sudoku.render(P[0], S[0])


# ----------------------------------------------------------------------------------------------
# digits on canvases


def test_place_puts_each_digit_at_its_offset():
    rng = np.random.default_rng(0)
    imgs = rng.random((6, 64))
    X, _, off = canvas.place(imgs, np.eye(10)[:6], size=20, rng=rng)
    grid = X.reshape(6, 20, 20)
    for k in range(6):
        i, j = off[k]
        assert np.array_equal(grid[k, i:i + 8, j:j + 8].ravel(), imgs[k])
        assert np.isclose(grid[k].sum(), imgs[k].sum())  # nothing else on the canvas


def test_canvas_splits_are_disjoint_seeded_and_cover_all_offsets():
    from sheafdsl.training.data import digits_arrays

    a = canvas.canvas_splits(seed=1)
    b = canvas.canvas_splits(seed=1)
    assert np.array_equal(a["train"][0], b["train"][0]) and np.array_equal(a["test"]["32"][0], b["test"]["32"][0])
    assert a["train"][0].shape == (1437, 256)
    assert {k: v[0].shape for k, v in a["test"].items()} == {"16": (360, 256), "24": (360, 576), "32": (360, 1024)}
    # the same test images (labels, pixel sums) on every canvas; train and test images disjoint
    sums = {k: np.round(v[0].sum(axis=1), 9) for k, v in a["test"].items()}
    assert np.array_equal(sums["16"], sums["32"]) and np.array_equal(a["test"]["16"][1], a["test"]["24"][1])
    pixels, _ = digits_arrays()
    seen = {tuple(r) for r in (pixels / 16.0)}
    assert len(seen) > 1700
    off = a["test"]["32"][2]
    assert off.min() == 0 and off.max() == 24  # offsets span the whole canvas
    assert not np.array_equal(a["train"][0], canvas.canvas_splits(seed=2)["train"][0])


def test_pad_to_centres_and_refuses_to_shrink():
    X = np.arange(16.0).reshape(1, 16) + 1
    Y = canvas.pad_to(X, 4, 8).reshape(8, 8)
    assert np.array_equal(Y[2:6, 2:6].ravel(), X[0]) and Y.sum() == X.sum()
    with pytest.raises(SheafError) as e:
        canvas.pad_to(X, 4, 2)
    assert e.value.codes == ["E571"]
    with pytest.raises(SheafError) as e:
        canvas.place(np.zeros((1, 64)), np.zeros((1, 10)), size=6, rng=np.random.default_rng(0))
    assert e.value.codes == ["E571"]


# ----------------------------------------------------------------------------------------------
# baselines: backward passes against central finite differences


def _fd_check(model, P, X, Y, per_param=8, eps=1e-6):
    rng = np.random.default_rng(1)
    _, G = model.loss_and_grad(P, X, Y)
    assert set(G) == set(P) and all(G[k].shape == P[k].shape for k in P)
    for k in P:
        for _ in range(per_param):
            i = tuple(int(rng.integers(0, s)) for s in P[k].shape)
            Q = {a: b.copy() for a, b in P.items()}
            Q[k][i] += eps
            lp, _ = model.loss_and_grad(Q, X, Y)
            Q[k][i] -= 2 * eps
            lm, _ = model.loss_and_grad(Q, X, Y)
            fd = (lp - lm) / (2 * eps)
            assert abs(fd - G[k][i]) <= 1e-6 * max(1.0, abs(fd)), (k, i, fd, G[k][i])


def _perturbed(P, seed=2, scale=0.3):
    rng = np.random.default_rng(seed)
    return {k: v + scale * rng.normal(size=v.shape) for k, v in P.items()}  # biases nonzero, weights generic


def test_mpnn_backward_matches_finite_differences():
    P_, S_ = sudoku.generate(6, blanks=(6, 9), seed=0)
    m = B.MPNN(4, hidden=5, rounds=3)
    _fd_check(m, _perturbed(m.init(0)), sudoku.one_hot(P_, 4), sudoku.one_hot(S_, 4))


def test_cnn_backward_matches_finite_differences():
    rng = np.random.default_rng(0)
    c = B.CNN(size=8, c1=2, c2=3)
    X = rng.random((4, 64))
    _fd_check(c, _perturbed(c.init(0), scale=0.1), X, np.eye(10)[[1, 2, 7, 9]])


def test_parameter_counts_are_the_formulas_and_the_matching_is_within_10_percent():
    for m in (B.MPNN(4, 7, 2), B.MPNN(9, 3, 1)):
        assert m.n_params() == sum(v.size for v in m.init(0).values())
    for c in (B.CNN(8, 2, 3), B.CNN(32, 4, 5)):
        assert c.n_params() == sum(v.size for v in c.init(0).values())
    for target in (1500, 3000, 12000):
        assert abs(B.mpnn_for_params(target).n_params() / target - 1) <= 0.10
        assert abs(B.cnn_for_params(target).n_params() / target - 1) <= 0.10


def test_mpnn_is_on_the_agent_graph():
    m = B.MPNN(4, 3, 1)
    g = sudoku.geometry(4)
    share = {(a, b) for a in range(12) for b in range(12) if a != b and set(g.units[a]) & set(g.units[b])}
    edges = {(int(np.argmax(s)), int(np.argmax(d))) for s, d in zip(m.S_src, m.S_dst)}
    assert edges == share and len(edges) == 2 * (16 + 8 + 8)  # row-column 16 pairs, row-box 8, column-box 8
    # the feature marks the shared cells' slots in both agents
    for f, s, d in zip(m.feat, m.S_src, m.S_dst):
        a, b = int(np.argmax(d)), int(np.argmax(s))
        shared = set(g.units[a]) & set(g.units[b])
        assert f[:4].sum() == f[4:].sum() == len(shared)


def test_fit_lowers_the_loss_and_a_divergence_is_a_sheaf_error():
    P_, S_ = sudoku.generate(64, blanks=(4, 6), seed=0)
    X, Y = sudoku.one_hot(P_, 4), sudoku.one_hot(S_, 4)
    m = B.MPNN(4, hidden=8, rounds=2)
    _, losses = B.fit(m, X, Y, steps=60, batch=32, lr=0.02, seed=0)
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5])
    with pytest.raises(SheafError) as e:
        B.fit(m, X, Y, steps=3, batch=8, params={k: v * np.nan for k, v in m.init(0).items()})
    assert e.value.codes == ["E572"]


def test_fit_follows_the_lr_schedule_step_by_step():
    """B.fit with lr_schedule=cosine is Adam whose step size at step t is scheduled_lr(lr, t, T): the same loop written
    out by hand (the seeded batches, the step size set before each step) gives the same parameters, and they are not
    the constant rate's."""
    from sheafdsl.training.optim import make_optimizer, scheduled_lr

    P_, S_ = sudoku.generate(40, blanks=(4, 6), seed=1)
    X, Y = sudoku.one_hot(P_, 4), sudoku.one_hot(S_, 4)
    m = B.MPNN(4, hidden=6, rounds=2)
    got, _ = B.fit(m, X, Y, steps=7, batch=16, lr=0.05, seed=3, lr_schedule="cosine")
    const, _ = B.fit(m, X, Y, steps=7, batch=16, lr=0.05, seed=3)
    rng, P, opt = np.random.default_rng(3), m.init(3), make_optimizer("adam", 0.05)
    order, pos = rng.permutation(len(X)), 0
    for t in range(7):
        if pos + 16 > len(X):
            order, pos = rng.permutation(len(X)), 0
        idx, pos = order[pos:pos + 16], pos + 16
        opt.lr = scheduled_lr(0.05, t, 7, "cosine")
        opt.step(P, m.loss_and_grad(P, X[idx], Y[idx])[1])
    for k in P:
        np.testing.assert_array_equal(got[k], P[k])
    assert any(not np.allclose(got[k], const[k]) for k in P)


# ----------------------------------------------------------------------------------------------
# the model's data layout and the digit-count constraints


def test_observations_and_targets_follow_the_stalk_names():
    P_, S_ = sudoku.generate(3, blanks=(8, 8), seed=0)
    obs, tgt = sudoku.observations(P_, 4), sudoku.targets(S_, 4)
    assert sorted(obs) == sorted(f"o_{a}" for a in sudoku.agent_names(4)) and len(tgt) == 16
    g = sudoku.geometry(4)
    for u, a in enumerate(sudoku.agent_names(4)):
        o = obs[f"o_{a}"].reshape(3, 4, 5)
        assert np.array_equal(o.argmax(axis=2), P_[:, g.units[u]])  # channel 0 a blank, k digit k
    assert np.array_equal(sudoku.cell_scores(tgt, 4), sudoku.one_hot(S_, 4))
    assert np.array_equal(tgt["y12"].argmax(axis=1) + 1, S_[:, 6])


def test_count_constraints_are_independent_hold_on_solutions_and_imply_every_count():
    """The kept rows are independent, every solved grid meets them, and they imply all 12·4 unit counts
    and 16 cell totals equal (the rows left out are combinations of the kept ones)."""
    g = sudoku.geometry(4)
    kept = sudoku._sum_constraints(g)
    names = [k[0] for k in kept]
    assert len(names) == len(set(names)) == 39

    def row(name):
        if name.startswith("total"):
            c = int(name[5]) * 4 + int(name[6])
            return sudoku._row_total(c, g) - sudoku._row_total(0, g)
        a, d = name.split("_")[1:]
        return sudoku._unit_count(sudoku.agent_names(4).index(a), int(d) - 1, g) - sudoku._row_total(0, g)

    A = np.array([row(n) for n in names])
    assert np.linalg.matrix_rank(A) == 39
    every = [sudoku._row_total(c, g) - sudoku._row_total(0, g) for c in range(1, 16)] + \
        [sudoku._unit_count(u, d, g) - sudoku._row_total(0, g) for u in range(12) for d in range(4)]
    assert np.linalg.matrix_rank(np.vstack([A, every])) == 39
    x = sudoku.one_hot(GRIDS[:20], 4)
    assert np.allclose(x @ A.T, 0) and not np.allclose(sudoku.one_hot(np.ones((1, 16), dtype=int), 4) @ A.T, 0)  # all 1s breaks the counts


def test_the_unit_constraints_are_the_sudoku_polytopes_equalities():
    """_unit_constraints keeps a basis of {every cell total = 1, every unit's count of every digit = 1}: 40 independent
    rows spanning all 64, which every solved grid meets and a grid with two cells of a row swapped breaks."""
    g = sudoku.geometry(4)
    kept = sudoku._unit_constraints(g)
    names = [k[0] for k in kept]
    assert len(names) == len(set(names)) == 40

    def row(name, dst, md):
        if name.startswith("total"):
            return sudoku._row_total(int(name[5]) * 4 + int(name[6]), g)
        a, d = name.split("_")[1:]
        return sudoku._unit_count(sudoku.agent_names(4).index(a), int(d) - 1, g)

    A = np.array([row(*k) for k in kept])
    every = [sudoku._row_total(c, g) for c in range(16)] + [sudoku._unit_count(u, d, g) for u in range(12) for d in range(4)]
    assert np.linalg.matrix_rank(A) == 40 == np.linalg.matrix_rank(np.vstack([A, every]))
    x = sudoku.one_hot(GRIDS[:20], 4)
    assert np.allclose(x @ A.T, 1)
    swapped = GRIDS[:20].copy()
    swapped[:, [0, 1]] = swapped[:, [1, 0]]  # two cells of row 0 swapped: the row still holds 1..4, its columns not
    assert np.all(np.abs(sudoku.one_hot(swapped, 4) @ A.T - 1).max(axis=1) == 1)


def test_model_text_glues_every_cell_and_decodes_it():
    t = sudoku.model_text(4)
    lines = t.splitlines()
    assert sum(ln.startswith("edge x") and ln.endswith("maps P | P hard") for ln in lines) == 32
    assert sum(ln.startswith(("edge total", "edge count")) and ln.endswith("hard") and " one -> " in ln
               for ln in lines) == 40
    assert sum(ln.startswith("objective ") and ln.endswith(" nonneg") for ln in lines) == 12
    assert "stalk one : 1" in lines and "pin one = 1" in lines
    assert sum(ln.startswith("decode y") for ln in lines) == 16
    assert "encoder enc : 20 -> 64 tanh -> 32" in lines and lines[-1].startswith("decode y33")
    old = sudoku.model_text(4, polytope=False).splitlines()  # the homogeneous counts, linear in q
    assert sum(ln.startswith(("edge total", "edge count")) for ln in old) == 39 and not any("nonneg" in ln for ln in old)


# ----------------------------------------------------------------------------------------------
# the task registry


def test_sudoku_task_scores_and_baseline():
    from sheafdsl.training.tasks import TASKS

    t = TASKS["sudoku4"]
    s = t.splits(n=40, n_test=10, seed=0)
    (P_, _), (Pt, St) = s["puzzles"]["train"], s["puzzles"]["hard"]
    assert (P_ == 0).sum(axis=1).max() <= 9 and (Pt == 0).sum(axis=1).min() >= 10  # the held-out split is harder
    perfect = {"hard": sudoku.targets(St, 4)}
    assert t.scores(perfect, s) == {"test_solved": 1.0, "test_cell_accuracy": 1.0}
    wrong = {"hard": {k: np.roll(v, 1, axis=1) for k, v in perfect["hard"].items()}}
    assert t.scores(wrong, s)["test_solved"] == 0.0
    b = t.baseline(s, 2000, steps=2)
    assert abs(b["baseline_params"] / 2000 - 1) <= 0.10 and 0.0 <= b["baseline_test_solved"] <= 1.0


def test_canvas_task_splits_patches_and_baseline():
    from sheafdsl.training.tasks import TASKS

    t = TASKS["digits_canvas"]
    s = t.splits(n=30, n_test=12, seed=0)
    assert s["train"][0]["g"].shape == (30, 4, 4, 16)
    assert {k: v[0]["g"].shape for k, v in s["tests"].items()} == {"16": (12, 4, 4, 16), "24": (12, 6, 6, 16),
                                                                    "32": (12, 8, 8, 16)}
    X = s["canvases"]["test"]["24"][0]
    assert np.array_equal(s["tests"]["24"][0]["g"][:, 1, 2], X.reshape(12, 24, 24)[:, 4:8, 8:12].reshape(12, 16))
    perfect = {k: {"y": v[1]["y"]} for k, v in s["tests"].items()}
    assert t.scores(perfect, s) == {"test_accuracy_by_canvas": {"16": 1.0, "24": 1.0, "32": 1.0}}
    b = t.baseline(s, 3000, steps=2)
    assert abs(b["baseline_params"] / 3000 - 1) <= 0.10
    assert sorted(b["baseline_test_accuracy_by_canvas"]) == ["16", "24", "32"]
    with pytest.raises(SheafError) as e:
        canvas.patches(np.zeros((1, 36)), 6)
    assert e.value.codes == ["E571"]
