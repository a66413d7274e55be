"""The learned models' tasks (issue 11; docs/admm.md "Tasks"): data generated in code from one seed,
the scores that say how well a model did, and a parameter-matched NumPy baseline trained on the same data.

=============  =====================================================================  ==========================
task           data                                                                   baseline
=============  =====================================================================  ==========================
sudoku4        4×4 puzzles with unique solutions: train 8–9 blanks, test 10–11         recurrent MPNN (agent graph)
sudoku9        9×9 puzzles: train 40–45 blanks, test 46–50                             recurrent MPNN
digits_canvas  the 8×8 digits at random on 16×16 canvases (train); 16, 24, 32 (test)   CNN on the canvas padded to 32
=============  =====================================================================  ==========================

A task's :meth:`Task.splits` gives ``{"train": (inputs, targets), "tests": {name: (inputs, targets)}}``,
each side a dict of arrays keyed by the model's stalk (or grid) names: the Sudoku agents' observations
``o_r0 …`` and cells ``y00 …`` (:mod:`.sudoku`), the canvas grid ``g`` ((m, R, C, 16) patches) and the
label ``y`` (:mod:`.canvas`). :meth:`Task.scores` turns a model's decoded outputs on the test splits into
the task's numbers (``test_solved``; ``test_accuracy_by_canvas``), and :meth:`Task.baseline` trains the
baseline with a parameter count within ±10% of the model's and returns the same numbers prefixed
``baseline_``.

>>> t = TASKS["sudoku4"]
>>> s = t.splits(n=4, n_test=3, seed=0)
>>> sorted(s["tests"]), s["train"][0]["o_r0"].shape, s["tests"]["hard"][1]["y00"].shape
(['hard'], (4, 20), (3, 4))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import baselines, canvas, sudoku


@dataclass(frozen=True)
class SudokuTask:
    """n × n Sudoku: ``n`` training puzzles with ``train_blanks``, ``n_test`` held-out ones with ``test_blanks``
    (more blanks: harder), none shared."""

    name: str
    size: int
    train_blanks: tuple[int, int]
    test_blanks: tuple[int, int]
    n: int = 2000
    n_test: int = 500
    baseline_rounds: int = 8
    baseline_steps: int = 600
    baseline_batch: int = 64
    baseline_lr: float = 0.01

    def puzzles(self, n: int | None = None, n_test: int | None = None, seed: int = 42):
        """((train puzzles, solutions), (test puzzles, solutions)), each (m, n²) digits."""
        n = self.n if n is None else n
        n_test = self.n_test if n_test is None else n_test
        tr = sudoku.generate(n, blanks=self.train_blanks, seed=seed, size=self.size)
        seen = {p.astype(np.int8).tobytes() for p in tr[0]}
        te = sudoku.generate(n_test, blanks=self.test_blanks, seed=seed + 1, size=self.size, exclude=seen)
        return tr, te

    def splits(self, n: int | None = None, n_test: int | None = None, seed: int = 42) -> dict:
        (P, S), (Pt, St) = self.puzzles(n, n_test, seed)
        k = self.size
        return {"train": (sudoku.observations(P, k), sudoku.targets(S, k)),
                "tests": {"hard": (sudoku.observations(Pt, k), sudoku.targets(St, k))},
                "puzzles": {"train": (P, S), "hard": (Pt, St)}}

    def scores(self, outputs: dict, splits: dict, prefix: str = "") -> dict:
        """``test_solved`` (the fraction of hard-split puzzles solved exactly) and ``test_cell_accuracy`` from the
        decoded cells ``outputs["hard"] = {"y00": (m, n), …}``."""
        _, St = splits["puzzles"]["hard"]
        sc = sudoku.cell_scores(outputs["hard"], self.size)
        cells = float(np.mean(sudoku.decode(sc, self.size) == St))
        return {f"{prefix}test_solved": sudoku.solved_fraction(sc, St), f"{prefix}test_cell_accuracy": cells}

    def baseline(self, splits: dict, n_params: int, seed: int = 0, steps: int | None = None,
                 lr_schedule: str = "constant") -> dict:
        """The recurrent MPNN with the parameter count nearest ``n_params``, trained on the training puzzles (its
        learning rate over the steps as ``lr_schedule`` says: the model's, for a like-for-like comparison)."""
        (P, S), (Pt, St) = splits["puzzles"]["train"], splits["puzzles"]["hard"]
        k = self.size
        model = baselines.mpnn_for_params(n_params, k, self.baseline_rounds)
        params, losses = baselines.fit(model, sudoku.one_hot(P, k), sudoku.one_hot(S, k),
                                       steps=self.baseline_steps if steps is None else steps,
                                       batch=self.baseline_batch, lr=self.baseline_lr, seed=seed,
                                       lr_schedule=lr_schedule)
        sc = baselines.predict(model, params, sudoku.one_hot(Pt, k))
        return {"baseline_test_solved": sudoku.solved_fraction(sc, St),
                "baseline_test_cell_accuracy": float(np.mean(sudoku.decode(sc, k) == St)),
                "baseline_params": model.n_params(), "baseline": f"recurrent MPNN, width {model.hidden}, "
                f"{model.rounds} rounds", "baseline_final_loss": float(np.mean(losses[-20:]))}


@dataclass(frozen=True)
class CanvasTask:
    """Digits on canvases: train on ``train_canvas``, test on each of ``test_canvases``."""

    name: str = "digits_canvas"
    train_canvas: int = canvas.TRAIN_CANVAS
    test_canvases: tuple[int, ...] = canvas.TEST_CANVASES
    patch: int = canvas.PATCH
    n: int = 1437
    n_test: int = 360
    baseline_steps: int = 600
    baseline_batch: int = 64
    baseline_lr: float = 0.01

    def splits(self, n: int | None = None, n_test: int | None = None, seed: int = 42) -> dict:
        raw = canvas.canvas_splits(self.n if n is None else n, self.n_test if n_test is None else n_test, seed,
                                   self.train_canvas, self.test_canvases)
        X, Y, _ = raw["train"]
        out = {"train": ({"g": canvas.patches(X, self.train_canvas, self.patch)}, {"y": Y}), "tests": {}, "canvases": raw}
        for s, (Xt, Yt, _) in raw["test"].items():
            out["tests"][s] = ({"g": canvas.patches(Xt, int(s), self.patch)}, {"y": Yt})
        return out

    def scores(self, outputs: dict, splits: dict, prefix: str = "") -> dict:
        """``test_accuracy_by_canvas`` ``{"16": …, "24": …, "32": …}`` from ``outputs[size] = {"y": (m, 10)}``."""
        acc = {s: canvas.accuracy(outputs[s]["y"], splits["tests"][s][1]["y"]) for s in splits["tests"]}
        return {f"{prefix}test_accuracy_by_canvas": acc}

    def baseline(self, splits: dict, n_params: int, seed: int = 0, steps: int | None = None,
                 lr_schedule: str = "constant") -> dict:
        """The CNN with the parameter count nearest ``n_params`` on every canvas padded to the largest (its learning
        rate over the steps as ``lr_schedule`` says)."""
        raw = splits["canvases"]
        big = max(self.test_canvases + (self.train_canvas,))
        model = baselines.cnn_for_params(n_params, big)
        X, Y, _ = raw["train"]
        params, losses = baselines.fit(model, canvas.pad_to(X, self.train_canvas, big), Y,
                                       steps=self.baseline_steps if steps is None else steps,
                                       batch=self.baseline_batch, lr=self.baseline_lr, seed=seed,
                                       lr_schedule=lr_schedule)
        acc = {s: canvas.accuracy(baselines.predict(model, params, canvas.pad_to(Xt, int(s), big)), Yt)
               for s, (Xt, Yt, _) in raw["test"].items()}
        return {"baseline_test_accuracy_by_canvas": acc, "baseline_params": model.n_params(),
                "baseline": f"CNN {model.c1}-{model.c2} channels on {big}x{big}",
                "baseline_final_loss": float(np.mean(losses[-20:]))}


#: the tasks by the name a model's ``train data=NAME`` gives
TASKS = {"sudoku4": SudokuTask("sudoku4", 4, (8, 9), (10, 11)),
         "sudoku9": SudokuTask("sudoku9", 9, (40, 45), (46, 50), n=1000, n_test=200),
         "digits_canvas": CanvasTask()}

__all__ = ["TASKS", "SudokuTask", "CanvasTask", "baselines", "canvas", "sudoku"]
