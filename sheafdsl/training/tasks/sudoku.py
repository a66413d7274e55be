"""Sudoku puzzles with unique solutions: an exact solver, a seeded generator, the splits and the encoding.

A grid of order n = r·c (4 = 2·2, 9 = 3·3) has n² cells, numbered row-major, each holding a digit
1..n (0 is a blank). Its **units** are the n rows, the n columns and the n boxes (r × c blocks):
3n agents of n cells each, every cell in exactly three of them (its row, its column and its box).
A grid is solved when every unit holds each digit once.

The solver is exact: depth-first search on the cell with the fewest candidates (bit masks of the
digits still free in its row, column and box), stopping after ``limit`` solutions, so
``count_solutions(p, limit=2) == 1`` proves that ``p`` has exactly one solution.

The generator draws a random solved grid (the solver run on the empty grid with a shuffled digit
order), then blanks cells one at a time in a random order, keeping a blank only while the puzzle
still has one solution, until it has the requested number of blanks (and starts again from a new
grid if a pass ends short of it). Every puzzle it returns has a unique solution, proved by counting.

>>> g = Geometry(4)
>>> p, s = generate(3, blanks=(8, 8), seed=0, size=4)
>>> [count_solutions(row, g) for row in p], [int((row == 0).sum()) for row in p]
([1, 1, 1], [8, 8, 8])
>>> bool(np.all(solve(p[0], g) == s[0])) and is_solution(s[0], g)
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ...errors import Diagnostic, SheafError

#: box shapes (rows, columns) of the grid orders the generator knows
BOXES = {4: (2, 2), 6: (2, 3), 9: (3, 3)}


@dataclass(frozen=True)
class Geometry:
    """The cells and units of an n × n grid. ``units``: (3n, n) cell indices, the rows, then the
    columns, then the boxes (each in row-major order); ``cell_units``: (n², 3) the row, column and
    box unit of each cell; ``slot``: (n², 3) the position of the cell inside each of those units."""

    n: int
    box: tuple[int, int] = field(init=False)
    units: np.ndarray = field(init=False, repr=False)
    cell_units: np.ndarray = field(init=False, repr=False)
    slot: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        n = self.n
        if n not in BOXES:
            raise SheafError(Diagnostic("E570", f"no Sudoku of order {n}", hint="orders: " + ", ".join(map(str, BOXES))))
        r, c = BOXES[n]
        idx = np.arange(n * n).reshape(n, n)
        rows = [idx[i] for i in range(n)]
        cols = [idx[:, j] for j in range(n)]
        boxes = [idx[bi * r:(bi + 1) * r, bj * c:(bj + 1) * c].ravel() for bi in range(n // r) for bj in range(n // c)]
        units = np.array(rows + cols + boxes)
        cell_units = np.zeros((n * n, 3), dtype=int)
        slot = np.zeros((n * n, 3), dtype=int)
        for u, cells in enumerate(units):
            kind = u // n
            cell_units[cells, kind] = u
            slot[cells, kind] = np.arange(n)
        object.__setattr__(self, "box", (r, c))
        object.__setattr__(self, "units", units)
        object.__setattr__(self, "cell_units", cell_units)
        object.__setattr__(self, "slot", slot)

    @property
    def cells(self) -> int:
        return self.n * self.n


@lru_cache(maxsize=None)
def geometry(n: int) -> Geometry:
    return Geometry(n)


def _masks(grid, g: Geometry):
    """Bit masks of the digits used in each unit (bit d−1 for digit d); None when a unit repeats one."""
    used = [0] * (3 * g.n)
    for cell, v in enumerate(grid):
        if v:
            bit = 1 << (int(v) - 1)
            for u in g.cell_units[cell]:
                if used[u] & bit:
                    return None
                used[u] |= bit
    return used


def _search(grid: list, g: Geometry, limit: int, first: list | None, rng=None) -> int:
    """Count solutions of ``grid`` (a list, modified and restored) up to ``limit``; the first found is
    copied into ``first``. With ``rng`` the candidate digits are tried in a random order."""
    used = _masks(grid, g)
    if used is None:
        return 0
    full = (1 << g.n) - 1
    cu = [tuple(int(u) for u in row) for row in g.cell_units]
    blanks = [i for i, v in enumerate(grid) if not v]
    count = 0

    def rec():
        nonlocal count
        best, best_free, best_n = -1, 0, g.n + 1
        for i in blanks:
            if grid[i]:
                continue
            a, b, c = cu[i]
            free = full & ~(used[a] | used[b] | used[c])
            k = bin(free).count("1")
            if k < best_n:
                best, best_free, best_n = i, free, k
                if k <= 1:
                    break
        if best < 0:  # no blank left: a solution
            count += 1
            if first is not None and count == 1:
                first[:] = grid
            return
        if best_n == 0:
            return
        digits = [d for d in range(g.n) if best_free >> d & 1]
        if rng is not None:
            rng.shuffle(digits)
        a, b, c = cu[best]
        for d in digits:
            bit = 1 << d
            grid[best] = d + 1
            used[a] |= bit
            used[b] |= bit
            used[c] |= bit
            rec()
            used[a] &= ~bit
            used[b] &= ~bit
            used[c] &= ~bit
            grid[best] = 0
            if count >= limit:
                return

    rec()
    return count


def count_solutions(grid, g: Geometry | None = None, limit: int = 2) -> int:
    """The number of solutions of ``grid`` ((n²,) digits, 0 blank), counted up to ``limit``."""
    grid = [int(v) for v in np.asarray(grid).ravel()]
    g = g or geometry(int(round(len(grid) ** 0.5)))
    return _search(grid, g, limit, None)


def solve(grid, g: Geometry | None = None) -> np.ndarray | None:
    """A solution of ``grid`` (the first the search finds), or None when it has none."""
    cells = [int(v) for v in np.asarray(grid).ravel()]
    g = g or geometry(int(round(len(cells) ** 0.5)))
    first: list = []
    return np.array(first, dtype=int) if _search(cells, g, 1, first) else None


def is_solution(grid, g: Geometry | None = None) -> bool:
    """Whether ``grid`` is a completely filled grid whose every unit holds each digit once."""
    grid = np.asarray(grid).ravel()
    g = g or geometry(int(round(len(grid) ** 0.5)))
    want = np.arange(1, g.n + 1)
    return bool(np.all(np.sort(grid[g.units], axis=1) == want))


def random_solution(rng: np.random.Generator, g: Geometry) -> np.ndarray:
    """A random solved grid: the search on the empty grid, digits tried in a random order."""
    first: list = []
    _search([0] * g.cells, g, 1, first, rng=_PyRandom(rng))
    return np.array(first, dtype=int)


class _PyRandom:
    """A list shuffle drawn from a numpy Generator (so one seed fixes everything)."""

    def __init__(self, rng):
        self.rng = rng

    def shuffle(self, items):
        items[:] = [items[i] for i in self.rng.permutation(len(items))]


def make_puzzle(rng: np.random.Generator, g: Geometry, blanks: int, tries: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(puzzle, solution): a puzzle with exactly ``blanks`` blanks and a unique solution."""
    if not 0 <= blanks < g.cells:
        raise SheafError(Diagnostic("E570", f"a {g.n}x{g.n} Sudoku has {g.cells} cells; {blanks} blanks is out of range"))
    for _ in range(tries):
        sol = random_solution(rng, g)
        puzzle = [int(v) for v in sol]
        left = blanks
        for cell in rng.permutation(g.cells):
            if left == 0:
                break
            v, puzzle[cell] = puzzle[cell], 0
            if _search(puzzle, g, 2, None) == 1:
                left -= 1
            else:
                puzzle[cell] = v
        if left == 0:
            return np.array(puzzle, dtype=int), sol
    raise SheafError(Diagnostic("E570", f"no {g.n}x{g.n} puzzle with a unique solution and {blanks} blanks found in "
                                        f"{tries} tries", hint=f"ask for fewer blanks (at most {max_blanks_hint(g)})"))


def max_blanks_hint(g: Geometry) -> int:
    """Blanks that the generator reaches reliably: all but 5 cells of a 4x4, all but 28 of a 9x9."""
    return {4: 11, 6: 22, 9: 53}[g.n]


def generate(count: int, *, blanks: tuple[int, int], seed: int, size: int = 4,
             exclude: set | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``count`` distinct puzzles (count, n²) and their solutions, the number of blanks of each drawn
    uniformly from ``blanks`` = (lo, hi) inclusive; none of them in ``exclude`` (a set of puzzle bytes).
    One ``numpy.random.default_rng(seed)`` fixes everything."""
    g = geometry(size)
    lo, hi = blanks
    if not 0 <= lo <= hi < g.cells:
        raise SheafError(Diagnostic("E570", f"blanks {lo}..{hi} out of range for a {size}x{size} Sudoku"))
    rng = np.random.default_rng(seed)
    seen = set(exclude or ())
    P, S = [], []
    attempts = 0
    while len(P) < count:
        attempts += 1
        if attempts > 20 * count + 100:
            raise SheafError(Diagnostic("E570", f"only {len(P)} distinct {size}x{size} puzzles with {lo}..{hi} blanks "
                                                f"found; {count} asked", hint="ask for fewer puzzles or more blanks"))
        p, s = make_puzzle(rng, g, int(rng.integers(lo, hi + 1)))
        key = p.astype(np.int8).tobytes()
        if key in seen:
            continue
        seen.add(key)
        P.append(p)
        S.append(s)
    return np.array(P, dtype=int).reshape(count, g.cells), np.array(S, dtype=int).reshape(count, g.cells)


# ----------------------------------------------------------------------------------------------
# encoding and scoring


def one_hot(grids: np.ndarray, n: int) -> np.ndarray:
    """(P, n²) digits → (P, n²·n) one-hot per cell (cell-major: column c·n + d − 1 for digit d); a blank is
    all zeros."""
    grids = np.asarray(grids, dtype=int)
    out = np.zeros(grids.shape + (n,))
    r, c = np.nonzero(grids)
    out[r, c, grids[r, c] - 1] = 1.0
    return out.reshape(len(grids), -1)


def decode(scores: np.ndarray, n: int) -> np.ndarray:
    """(P, n²·n) per-cell scores (logits, probabilities or one-hot) → (P, n²) digits by arg max."""
    scores = np.asarray(scores)
    return scores.reshape(len(scores), -1, n).argmax(axis=2) + 1


def solved_fraction(scores: np.ndarray, solutions: np.ndarray) -> float:
    """The fraction of puzzles whose every cell's arg-max digit is the solution's (solved exactly)."""
    scores, solutions = np.asarray(scores), np.asarray(solutions)
    n = int(round(scores.shape[1] ** (1 / 3)))  # scores: n² cells × n digits
    if solutions.shape[1] == n ** 3:  # given one-hot
        solutions = decode(solutions, n)
    return float(np.mean(np.all(decode(scores, n) == solutions, axis=1)))


def render(puzzle, solution=None) -> str:
    """A grid as text (blanks as ``.``), boxes separated; with ``solution`` the filled-in digits."""
    p = np.asarray(puzzle).ravel()
    g = geometry(int(round(len(p) ** 0.5)))
    s = p if solution is None else np.asarray(solution).ravel()
    r, c = g.box
    lines = []
    for i in range(g.n):
        if i and i % r == 0:
            lines.append("-" * (2 * g.n + 2 * (g.n // c - 1) - 1))
        row = []
        for j in range(g.n):
            if j and j % c == 0:
                row.append("|")
            v = s[i * g.n + j]
            row.append(str(v) if v else ".")
        lines.append(" ".join(row))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# the Sheaf-ADMM model: agents, observations and targets


def agent_names(n: int) -> list[str]:
    """The 3n agents in unit order: ``r0..``, ``c0..``, ``b0..`` (rows, columns, boxes)."""
    return [f"{k}{i}" for k in "rcb" for i in range(n)]


def observations(puzzles: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Each agent's observation ``o_<agent>``: its n cells' clues, one-hot over n + 1 channels (blank, 1..n),
    cell after cell in the unit's order: (P, n·(n + 1)) per agent."""
    g = geometry(n)
    P = np.asarray(puzzles, dtype=int)
    clue = np.eye(n + 1)[P]  # (P, n², n + 1): channel 0 a blank
    return {f"o_{a}": clue[:, g.units[u]].reshape(len(P), -1) for u, a in enumerate(agent_names(n))}


def targets(solutions: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """The one-hot solution of each cell ``y<i><j>`` ((P, n) each; digit d at column d − 1)."""
    Y = one_hot(solutions, n).reshape(len(solutions), n * n, n)
    return {f"y{c // n}{c % n}": Y[:, c] for c in range(n * n)}


def cell_scores(outputs: dict[str, np.ndarray], n: int) -> np.ndarray:
    """The decoders' outputs ``y<i><j>`` back into (P, n²·n) cell-major scores (for :func:`solved_fraction`)."""
    return np.concatenate([np.asarray(outputs[f"y{c // n}{c % n}"]) for c in range(n * n)], axis=1)


def _lit(rows) -> str:
    return "[" + ", ".join("[" + ", ".join(str(int(v)) for v in r) + "]" for r in rows) + "]"


def _sum_constraints(g: Geometry) -> list[tuple[str, tuple, tuple, list, list]]:
    """The digit-count constraints of a solved grid, written homogeneously so that no edge needs an offset:
    every cell's total Σ_d x_{c,d} equals cell 0's, and every unit's count of every digit Σ_{c ∈ u} x_{c,d}
    equals cell 0's total (a solution has all of them 1). A maximal linearly independent subset (the
    cells' copies identified, as the hard share edges make them), so that the KKT system stays regular.
    Each: (name, (agent, block|None), (agent, block|None), src map rows, dst map rows)."""
    n, N = g.n, g.cells
    names = agent_names(n)
    cand = []
    ones = [[1] * n]
    for c in range(1, N):  # cell c's total = cell 0's: r0's copy of cell 0 against c's column copy
        i, j = divmod(c, n)
        cand.append((f"total{i}{j}", ("r0", (0, n)), (f"c{j}", (i * n, i * n + n)), ones, ones,
                     _row_total(c, g) - _row_total(0, g)))
    for u, a in enumerate(names):
        for d in range(n):
            sel = [[1 if k % n == d else 0 for k in range(n * n)]]
            other = "c0" if a == "r0" else "r0"
            cand.append((f"count_{a}_{d + 1}", (other, (0, n)), (a, None), ones, sel,
                         _unit_count(u, d, g) - _row_total(0, g)))
    keep, rows = [], []
    for name, src, dst, ms, md, row in cand:  # rows over the cells' digits: the copies already identified
        if np.linalg.matrix_rank(np.array(rows + [row])) > len(rows):
            rows.append(row)
            keep.append((name, src, dst, ms, md))
    return keep


def _unit_constraints(g: Geometry) -> list[tuple[str, tuple, list]]:
    """The digit counts of a solved grid as affine constraints against the constant ``one`` (= 1): every cell's
    total Σ_d x_{c,d} = 1 (on its row's copy) and every unit's count of every digit Σ_{c ∈ u} x_{c,d} = 1. With
    x ≥ 0 they make each cell's channels a point of the Sudoku polytope (benchmarks/proto_sudoku_polytope.py). A
    maximal linearly independent subset (the cells' copies identified), so that the KKT system stays regular.
    Each: (name, (agent, block|None), dst map rows)."""
    n, N = g.n, g.cells
    names = agent_names(n)
    cand = []
    for c in range(N):
        (ru, _, _), (rs, _, _) = g.cell_units[c], g.slot[c]
        i, j = divmod(c, n)
        cand.append((f"total{i}{j}", (names[ru], (rs * n, rs * n + n)), [[1] * n], _row_total(c, g)))
    for u, a in enumerate(names):
        for d in range(n):
            sel = [[1 if k % n == d else 0 for k in range(n * n)]]
            cand.append((f"count_{a}_{d + 1}", (a, None), sel, _unit_count(u, d, g)))
    keep, rows = [], []
    for name, dst, md, row in cand:
        if np.linalg.matrix_rank(np.array(rows + [row])) > len(rows):
            rows.append(row)
            keep.append((name, dst, md))
    return keep


def _row_total(c: int, g: Geometry) -> np.ndarray:
    r = np.zeros(g.cells * g.n)
    r[c * g.n:(c + 1) * g.n] = 1.0
    return r


def _unit_count(u: int, d: int, g: Geometry) -> np.ndarray:
    r = np.zeros(g.cells * g.n)
    r[g.units[u] * g.n + d] = 1.0
    return r


def model_text(n: int = 4, hidden: int = 64, train: str | None = None, polytope: bool = True) -> str:
    """The Sheaf-ADMM Sudoku model as ``.sheaf`` source (``models/sudoku4.sheaf`` is ``model_text(4)``).

    Agents are the 3n units, each a stalk of n cells × n digit channels (cell s of the unit at
    coordinates [n·s, n·s + n)); agent a's objective is encoded from its observation ``o_a`` (its cells'
    clues) by one shared encoder; every cell's three copies are glued by hard edges through one learned
    restriction map ``P`` (row = column, row = box); and each cell is decoded from the mean of its three
    copies by one shared softmax decoder ``Wd, bd``. With ``polytope`` (the default) every agent is ``nonneg``
    and the digit counts of a solved grid are hard constraints against the constant ``one``
    (:func:`_unit_constraints`: every cell total and every unit's count of every digit is 1), so the consensus is
    the projection of the encoded objectives onto the Sudoku polytope; without it the counts are homogeneous
    (:func:`_sum_constraints`: all equal to cell 0's total) and the consensus is linear in q."""
    g = geometry(n)
    names = agent_names(n)
    d, o = n * n, n * (n + 1)
    how = (["# clues; every agent's channels are >= 0; the three copies of every cell are glued by hard edges",
            "# through one learned map P; every cell total and every unit's count of every digit is 1 (hard edges",
            "# to the constant `one`: with x >= 0, the Sudoku polytope); each cell is read from the mean of its",
            "# three copies by one softmax decoder."] if polytope else
           ["# clues; the three copies of every cell are glued by hard edges through one learned map P; every cell",
            "# total and every unit's count of every digit equal cell 0's total (homogeneous: a solved grid has",
            "# them all 1); each cell is read from the mean of its three copies by one softmax decoder."])
    L = [f"# {n}x{n} Sudoku as a learned consensus problem (docs/admm.md \"Tasks\"); generated by",
         f"# sheafdsl.training.tasks.sudoku.model_text({n}{'' if polytope else ', polytope=False'}) — edit that "
         "function, not this file.",
         f"#",
         f"# Agents: the {n} rows, {n} columns and {n} boxes, each a stalk of its {n} cells x {n} digit channels.",
         f"# Each agent's quadratic objective (Q = diag softplus, q) comes from one shared encoder of its cells'",
         *how,
         f"sheaf sudoku{n}", "",
         f"param P  : {n} x {n}  init xavier",
         f"param Wd : {n} x {n}  init xavier",
         f"param bd : {n}      init zeros", "",
         f"encoder enc : {o} -> {hidden} tanh -> {2 * d}", ""]
    for a in names:
        L.append(f"stalk {a} : {d}")
    for a in names:
        L.append(f"stalk o_{a} : {o}")
    L.append("")
    for a in names:
        L.append(f"pin o_{a} = input")
    for a in names:
        L.append(f"objective {a} encoded enc o_{a}")
    if polytope:
        for a in names:
            L.append(f"objective {a} nonneg")
    L.append("")
    L.append("# the three copies of each cell agree: row = column, row = box")
    for c in range(g.cells):
        (ru, cu, bu), (rs, cs, bs) = g.cell_units[c], g.slot[c]
        i, j = divmod(c, n)
        L.append(f"edge x{i}{j}_rc : {names[ru]}[{rs * n}:{rs * n + n}] -> {names[cu]}[{cs * n}:{cs * n + n}]  maps P | P hard")
        L.append(f"edge x{i}{j}_rb : {names[ru]}[{rs * n}:{rs * n + n}] -> {names[bu]}[{bs * n}:{bs * n + n}]  maps P | P hard")
    L.append("")

    def end(e):
        a, blk = e
        return a if blk is None else f"{a}[{blk[0]}:{blk[1]}]"

    if polytope:
        L += ["# digit counts: every cell total and every unit's count of each digit is 1", "stalk one : 1",
              "pin one = 1"]
        for name, dst, md in _unit_constraints(g):
            L.append(f"edge {name} : one -> {end(dst)}  maps [[1]] | {_lit(md)} hard")
    else:
        L.append("# digit counts: every cell total and every unit's count of each digit equal cell 0's total")
        for name, src, dst, ms, md in _sum_constraints(g):
            L.append(f"edge {name} : {end(src)} -> {end(dst)}  maps {_lit(ms)} | {_lit(md)} hard")
    L.append("")
    for c in range(g.cells):
        L.append(f"stalk y{c // n}{c % n} : {n}")
    for c in range(g.cells):
        L.append(f"pin y{c // n}{c % n} = target")
    for c in range(g.cells):
        (ru, cu, bu), (rs, cs, bs) = g.cell_units[c], g.slot[c]
        L.append(f"decode y{c // n}{c % n} : mean {names[ru]}[{rs * n}:{rs * n + n}] {names[cu]}[{cs * n}:{cs * n + n}] "
                 f"{names[bu]}[{bs * n}:{bs * n + n}] affine Wd bd softmax")
    if train:
        L += ["", train]
    from ...frontend.formatter import format_source

    return format_source("\n".join(L) + "\n")
