"""The tasks as data of learned models (``train data=sudoku4`` …): each task's loader for
:data:`sheafdsl.training.learned.LEARNED_TASKS`, and the report its run adds to ``sheaf train``'s result
(the task's scores, and its parameter-matched baseline trained on the same data).

A loader ``load(G, config)`` reads ``config.n``, ``config.n_test`` and ``config.data_seed``; the report
``report(trainer, data, config)`` returns the task's keys: for Sudoku ``test_solved`` (the fraction of
hard-split puzzles solved exactly) and ``baseline_test_solved`` (the MPNN's); for the canvases
``test_accuracy_by_canvas`` ({"16": …, "24": …, "32": …}) and ``baseline_test_accuracy_by_canvas`` (the
CNN's). The baseline trains as many Adam steps as the model (``config.steps``), from ``config.seed``, with the
task's own batch and learning rate, on the model's ``lr_schedule``.
"""

from __future__ import annotations

import numpy as np

from . import TASKS


def n_params(params: dict) -> int:
    """The number of trained numbers of a model (every parameter array's size)."""
    return int(sum(int(np.prod(np.shape(v))) for v in params.values()))


def predictions(trainer, split, batch: int = 512) -> dict:
    """The decoders' outputs on a split, in batches, on the host."""
    from ...lowering import to_numpy

    n = len(split)
    parts = [trainer.predict(split.take(np.arange(s, min(n, s + batch)))) for s in range(0, n, batch)]
    return {k: np.concatenate([to_numpy(p[k]) for p in parts]) for k in parts[0]}


def loader(name: str):
    """The ``LEARNED_TASKS`` loader of task ``name``."""
    task = TASKS[name]

    def load(G, config):
        from ..learned import LearnedData, Split

        splits = task.splits(int(config.n), int(config.n_test), int(getattr(config, "data_seed", 42)))

        def report(trainer, data, cfg, *, baseline: bool = True):
            outs = {k: predictions(trainer, s) for k, s in data.tests.items()}
            res = task.scores(outs, splits)
            res["params"] = n_params(trainer.params)
            if baseline:
                res.update(task.baseline(splits, res["params"], seed=int(cfg.seed), steps=int(cfg.steps),
                                         lr_schedule=cfg.lr_schedule))
            return res

        tr_in, tr_out = splits["train"]
        tests = {k: Split(i, o) for k, (i, o) in splits["tests"].items()}
        return LearnedData(name, Split(tr_in, tr_out), tests, meta={"report": report, "task": task, "splits": splits})

    return load


def register() -> None:
    """Put every task of :data:`TASKS` into ``LEARNED_TASKS`` (idempotent)."""
    from ..learned import register_task

    for name in TASKS:
        register_task(name, loader(name))
