"""The task models of issue 11 (models/sudoku4.sheaf, models/digits_canvas.sheaf) on their registered data:
the data fits the models, `sheaf train --json` gives the contract's keys with the baseline's beside them,
and the results command writes its tables and plots. (The full-length training runs are benchmarks:
`python benchmarks/bench_tasks.py TASK`; the slow tests below hold the targets that were met.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sheafdsl.cli.main import cli
from sheafdsl.frontend import load_file
from sheafdsl.ir import from_model
from sheafdsl.training.learned import LEARNED_TASKS, LearnedTrainer, fit_learned, learned_config, load_learned_data
from sheafdsl.training.tasks import TASKS, sudoku

ROOT = Path(__file__).resolve().parents[1]
SUDOKU = str(ROOT / "models" / "sudoku4.sheaf")
DIGITS = str(ROOT / "models" / "digits_canvas.sheaf")


def small(path: str, tmp_path, **opts) -> str:
    """A copy of a shipped model whose train statement asks for less (n, n_test, steps): the fast tests' size."""
    import re

    text = open(path, encoding="utf-8").read()
    for k, v in opts.items():
        text = re.sub(rf"(^train .*\b){k}=\S+", rf"\g<1>{k}={v}", text, flags=re.M)
    out = tmp_path / os.path.basename(path)
    out.write_text(text)
    return str(out)


def json_line(res) -> dict:
    assert "Traceback" not in res.output, res.output
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    return json.loads(lines[-1])


def test_the_shipped_sudoku_model_is_the_generated_one():
    """models/sudoku4.sheaf is sudoku.model_text(4) with its train statement (canonical layout, checks)."""
    text = open(SUDOKU, encoding="utf-8").read()
    train = [ln for ln in text.splitlines() if ln.startswith("train ")]
    assert len(train) == 1 and "data=sudoku4" in train[0]
    assert sudoku.model_text(4, train=train[0]) == text


def test_learned_config_registers_the_tasks_and_the_data_fits_the_models():
    for path, name in ((SUDOKU, "sudoku4"), (DIGITS, "digits_canvas")):
        G = from_model(load_file(path))
        cfg = learned_config(G, {"n": 12, "n_test": 5})
        assert name in LEARNED_TASKS and cfg.data == name
        data = load_learned_data(G, cfg)
        assert len(data.train) == 12 and all(len(s) == 5 for s in data.tests.values())
        tr = LearnedTrainer(G, trainer="implicit", seed=0)
        for split in [data.train, *data.tests.values()]:  # every split runs through the model (any canvas size)
            out = tr.predict(split.take(np.arange(2)))
            assert {k: np.shape(v) for k, v in out.items()} == {k: (2, v.shape[1]) for k, v in split.targets.items()}
    assert sorted(data.tests) == ["16", "24", "32"]


def test_sudoku_train_json_has_the_contract_keys(tmp_path):
    res = CliRunner().invoke(cli, ["train", small(SUDOKU, tmp_path, n=30, n_test=6, steps=2), "--json"])
    assert res.exit_code == 0, res.output
    out = json_line(res)
    assert 0.0 <= out["test_solved"] <= 1.0 and 0.0 <= out["baseline_test_solved"] <= 1.0
    assert out["test_solved"] == out["test_exact"]  # the trainer's exact-match count agrees with the task's
    assert abs(out["baseline_params"] / out["params"] - 1) <= 0.10


def test_digits_train_json_has_the_contract_keys(tmp_path):
    res = CliRunner().invoke(cli, ["train", small(DIGITS, tmp_path, n=40, n_test=4, steps=2), "--json"])
    assert res.exit_code == 0, res.output
    out = json_line(res)
    for key in ("test_accuracy_by_canvas", "baseline_test_accuracy_by_canvas"):
        assert sorted(out[key]) == ["16", "24", "32"] and all(0.0 <= v <= 1.0 for v in out[key].values())
    assert out["test_accuracy_by_canvas"]["16"] == out["tests"]["16"]["accuracy"]
    assert abs(out["baseline_params"] / out["params"] - 1) <= 0.10


def test_a_trained_model_scores_what_it_predicts():
    """test_solved counts the puzzles whose every decoded cell is the solution's: recomputed here from the
    trainer's predictions and the generator's solutions."""
    G = from_model(load_file(SUDOKU))
    cfg = learned_config(G, {"n": 40, "n_test": 12, "steps": 3})
    data = load_learned_data(G, cfg)
    tr = LearnedTrainer(G, trainer="implicit", seed=0)
    for _ in range(3):
        tr.step(data.train)
    rep = data.meta["report"](tr, data, cfg, baseline=False)
    pred = tr.predict(data.tests["hard"])
    _, St = data.meta["splits"]["puzzles"]["hard"]
    digits = np.stack([np.asarray(pred[f"y{c // 4}{c % 4}"]).argmax(1) + 1 for c in range(16)], axis=1)
    assert rep["test_solved"] == float(np.mean(np.all(digits == St, axis=1)))


def test_the_shipped_sudoku_schedule_is_followed_by_fit_learned_and_the_flag_overrides_it(tmp_path):
    """The shipped train statement anneals the step size (lr_schedule=cosine): fit_learned's parameters are those of
    the same loop written out with scheduled_lr(lr, t, steps) set before each step, and `--lr-schedule constant`
    trains differently."""
    from sheafdsl.training.optim import scheduled_lr

    G = from_model(load_file(SUDOKU))
    cfg = learned_config(G, {"n": 24, "n_test": 4, "steps": 3, "batch": 8})
    assert cfg.lr_schedule == "cosine"
    data = load_learned_data(G, cfg)
    fit = fit_learned(G, cfg, data=data)
    tr = LearnedTrainer(G, trainer=cfg.trainer, lr=cfg.lr, seed=cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(data.train))
    for t in range(3):  # 3 batches of 8 fit in one epoch
        tr.opt.lr = scheduled_lr(cfg.lr, t, 3, "cosine")
        tr.step(data.train.take(order[8 * t:8 * t + 8]))
    for k in tr.params:
        np.testing.assert_array_equal(fit["params"][k], tr.params[k])
    runs = [json_line(CliRunner().invoke(cli, ["train", small(SUDOKU, tmp_path, n=24, n_test=4, steps=3), "--json",
                                               "--batch", "8", *flags])) for flags in ([], ["--lr-schedule", "constant"])]
    assert runs[0]["train_loss"] != runs[1]["train_loss"]


def test_bench_tasks_writes_tables_and_plots(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_tasks.py"), "sudoku4", "--out", str(tmp_path),
                        "--steps", "1", "--n", "20", "--n-test", "4"], capture_output=True, text=True, env=env,
                       timeout=600)
    assert p.returncode == 0, p.stderr
    r = json.loads((tmp_path / "results.json").read_text())
    assert {"test_solved", "baseline_test_solved", "residuals", "paper"} <= set(r)
    md = (tmp_path / "results.md").read_text()
    assert "| held-out (harder) puzzles solved exactly |" in md and "93%" in md
    for f in ("residuals.png", "sudoku_grid.png"):
        assert (tmp_path / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_sudoku4_as_shipped_reproduces_its_measured_result():
    """The shipped model with its own train statement (implicit, 3000 steps of 64 on 12000 puzzles, the step size
    cosine-annealed; its agents nonneg and the digit counts pinned to 1: the Sudoku polytope): the held-out harder
    puzzles solved as docs/admm.md reports (100% of 500; the target is ≥ 90%), and the parameter-matched MPNN trained
    as long, on the same schedule, on the same puzzles behind it (96.2% at this seed)."""
    res = CliRunner().invoke(cli, ["train", SUDOKU, "--json"])
    out = json_line(res)
    assert out["test_solved"] >= 0.99 and out["train_exact"] >= 0.99
    assert out["test_solved"] - out["baseline_test_solved"] >= 0.03
    assert abs(out["baseline_params"] / out["params"] - 1) <= 0.10


@pytest.mark.slow
def test_digits_canvas_as_shipped_reproduces_its_measured_result():
    """The shipped grid model (a `nobias` encoder, a `sum` decoder; implicit, 2000 steps): within 10 points of its
    16 × 16 accuracy on the 32 × 32 canvas (63.6% → 55.3%, docs/admm.md), while the CNN drops by more."""
    res = CliRunner().invoke(cli, ["train", DIGITS, "--json"])
    out = json_line(res)
    acc, base = out["test_accuracy_by_canvas"], out["baseline_test_accuracy_by_canvas"]
    assert acc["16"] >= 0.60 and acc["16"] - acc["32"] <= 0.10
    assert base["16"] - base["32"] > acc["16"] - acc["32"]
