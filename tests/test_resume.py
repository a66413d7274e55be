"""Resume is exact: an interrupted and resumed run ends bitwise where an uninterrupted one does."""

from __future__ import annotations

import json
import signal
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from sheafdsl.cli.main import cli
from sheafdsl.training.checkpoint import load_checkpoint
from sheafdsl.training.run import MetricsLog

PARABOLOID = "models/paraboloid.sheaf"
# mini-batches and the baseline: the RNG state, the optimiser moments and the baseline's state must
# all be restored for the trajectories to agree bitwise
COMMON = ["--batch", "64", "--log-every", "10", "--no-plots", "--baseline"]


def invoke(args):
    args = ["train", *args]
    res = CliRunner().invoke(cli, args)
    assert "Traceback" not in res.output
    return res


def assert_same_state(a, b):
    ca, cb = load_checkpoint(a / "checkpoint.npz"), load_checkpoint(b / "checkpoint.npz")
    assert ca.step == cb.step
    for part in ("params", "state", "baseline"):
        da, db = getattr(ca, part), getattr(cb, part)
        assert set(da) == set(db), part
        for k in da:
            assert da[k].dtype == db[k].dtype
            np.testing.assert_array_equal(da[k], db[k], err_msg=f"{part}/{k}")


def signal_during_step(monkeypatch, after: int, sig=signal.SIGINT):
    """Make the (non-backprop) trainer raise ``sig`` once ``after`` steps are done, so that it arrives
    while step ``after + 1`` is running."""
    from sheafdsl.training import trainers

    real = trainers.make_trainer

    def make(*a, **k):
        tr = real(*a, **k)
        if tr.config.trainer != "backprop":
            step = tr.step

            def interrupted(*a, **k):  # step(loss=...) of a lazy-loss trainer, too
                if tr.step_count == after:
                    signal.raise_signal(sig)
                return step(*a, **k)

            tr.step = interrupted
        return tr

    monkeypatch.setattr(trainers, "make_trainer", make)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "straight"
    res = invoke([PARABOLOID, "--steps", "40", "--out", str(out), *COMMON])
    assert res.exit_code == 0, res.output
    return out


def test_stop_and_resume_is_bitwise_exact(straight, tmp_path):
    out = tmp_path / "split"
    assert invoke([PARABOLOID, "--steps", "20", "--out", str(out), *COMMON]).exit_code == 0
    assert load_checkpoint(out / "checkpoint.npz").step == 20
    res = invoke([PARABOLOID, "--steps", "40", "--out", str(out), "--resume", "--no-plots"])
    assert res.exit_code == 0, res.output
    assert_same_state(straight, out)
    assert [r["step"] for r in MetricsLog(out / "metrics.jsonl").read()] == [0, 10, 20, 30, 40]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["resumed"][0]["from_step"] == 20 and meta["status"] == "finished"


def test_ctrl_c_saves_and_resume_is_exact(straight, tmp_path, monkeypatch):
    """SIGINT in the middle of step 13: the step is abandoned at once (its solve is not started), the
    checkpoint of the last completed step (12) is saved, exit 130; the resumed run is the straight one."""
    signal_during_step(monkeypatch, 12)
    handler_before = signal.getsignal(signal.SIGINT)
    out = tmp_path / "ctrlc"
    res = invoke([PARABOLOID, "--steps", "40", "--out", str(out), *COMMON])
    assert res.exit_code == 130, res.output
    assert "checkpoint saved at step 12" in res.stderr
    assert f"--out {out} --resume" in res.stderr
    assert load_checkpoint(out / "checkpoint.npz").step == 12
    assert json.loads((out / "meta.json").read_text())["status"] == "interrupted"
    assert signal.getsignal(signal.SIGINT) is handler_before  # the handler was put back
    monkeypatch.undo()
    res = invoke([PARABOLOID, "--out", str(out), "--resume", "--no-plots"])  # --steps comes from the run: 40
    assert res.exit_code == 0, res.output
    assert_same_state(straight, out)


def test_a_torn_metrics_tail_is_dropped_on_resume(straight, tmp_path):
    out = tmp_path / "torn"
    assert invoke([PARABOLOID, "--steps", "20", "--out", str(out), *COMMON]).exit_code == 0
    with open(out / "metrics.jsonl", "a") as fh:  # records past the checkpoint, and a torn line
        fh.write('{"step": 25, "loss": 1.0}\n{"step": 30, "lo')
    assert invoke([PARABOLOID, "--steps", "30", "--out", str(out), "--resume", "--no-plots"]).exit_code == 0
    assert [r["step"] for r in MetricsLog(out / "metrics.jsonl").read()] == [0, 10, 20, 30]


def test_resume_refuses_a_different_model(straight, tmp_path):
    other = tmp_path / "other.sheaf"
    other.write_text(open(PARABOLOID).read().replace("lr=0.01", "lr=0.02"))
    before = (straight / "checkpoint.npz").read_bytes()
    res = invoke([str(other), "--out", str(straight), "--resume", "--steps", "50"])
    assert res.exit_code == 1 and "E633" in res.stderr and "model text differs" in res.stderr
    assert (straight / "checkpoint.npz").read_bytes() == before


def test_resume_refuses_trajectory_changing_flags(straight):
    res = invoke([PARABOLOID, "--out", str(straight), "--resume", "--lr", "0.5"])
    assert res.exit_code == 1 and "E634" in res.stderr and "--lr" in res.stderr
    res = invoke([PARABOLOID, "--out", str(straight), "--resume", "--optimizer", "sgd"])
    assert res.exit_code == 1 and "E634" in res.stderr


def test_resume_needs_a_checkpoint(tmp_path):
    res = invoke([PARABOLOID, "--out", str(tmp_path / "none"), "--resume"])
    assert res.exit_code == 1 and "E631" in res.stderr
    (tmp_path / "empty").mkdir()
    res = invoke([PARABOLOID, "--out", str(tmp_path / "empty"), "--resume"])
    assert res.exit_code == 1 and "E631" in res.stderr


def test_resume_past_the_end_just_reports(straight, tmp_path):
    res = invoke([PARABOLOID, "--out", str(straight), "--resume", "--json", "--no-plots"])
    assert res.exit_code == 0, res.output
    line = json.loads(res.stdout)
    assert line["steps"] == 40


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_real_signal_to_a_running_process(tmp_path, sig, code):
    """The shell's Ctrl-C (SIGINT) or a scheduler's SIGTERM to a live `sheaf train` process: it saves
    a checkpoint and exits 128 + signal."""
    import os
    import subprocess
    import time

    out = tmp_path / "live"
    exe = os.path.join(os.path.dirname(sys.executable), "sheaf")
    proc = subprocess.Popen([exe, "train", PARABOLOID, "--steps", "1000000", "--log-every", "1000000", "--out", str(out),
                             "--no-plots", "--no-baseline"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not (out / "meta.json").exists():  # the step-0 checkpoint: the loop is running
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "resume with:" in stderr
    ck = load_checkpoint(out / "checkpoint.npz")
    assert 0 < ck.step < 1000000 and f"checkpoint saved at step {ck.step}" in stderr
    assert json.loads((out / "meta.json").read_text())["status"] == "interrupted"


def test_resume_refuses_a_changed_data_file(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, (160, 2))
    y = (X ** 2).sum(1) - 2 / 3
    csv = tmp_path / "para.csv"
    csv.write_text("x1,x2,y\n" + "".join(f"{a},{b},{c}\n" for a, b, c in zip(X[:, 0], X[:, 1], y)))
    out = tmp_path / "csvrun"
    res = invoke([PARABOLOID, "--data", str(csv), "--n", "50", "--steps", "10", "--out", str(out), "--no-plots"])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["data"]["spec"] == str(csv) and len(meta["data"]["sha256"]) == 64
    csv.write_text(csv.read_text().replace("x1,x2,y\n", "x1,x2,y\n0,0,5\n"))
    res = invoke([PARABOLOID, "--out", str(out), "--resume", "--steps", "20", "--no-plots"])
    assert res.exit_code == 1 and "E634" in res.stderr and "changed" in res.stderr


@pytest.mark.parametrize("cadence, kept", [("0", 10), ("3600", 0)])
def test_interrupt_inside_a_step_keeps_the_last_checkpoint(straight, tmp_path, monkeypatch, cadence, kept):
    """A KeyboardInterrupt raised mid-step (a second Ctrl-C) may leave the trainer torn: nothing new is
    saved, the last checkpoint stays (step 10 when every log step checkpoints, step 0 when the
    wall-time cadence has not come round yet), and resuming from it is still exact."""
    from sheafdsl.training import trainers

    real = trainers.make_trainer

    def make(*a, **k):
        tr = real(*a, **k)
        if tr.config.trainer != "backprop":
            step = tr.step

            def torn(*a, **k):  # step(loss=...) of a lazy-loss trainer, too
                if tr.step_count == 14:
                    tr.params["W1"][0, 0] += 1.0  # half an update...
                    raise KeyboardInterrupt       # ...then the interrupt
                return step(*a, **k)

            tr.step = torn
        return tr

    monkeypatch.setattr(trainers, "make_trainer", make)
    out = tmp_path / "torn-step"
    res = invoke([PARABOLOID, "--steps", "40", "--out", str(out), "--checkpoint-every", cadence, *COMMON])
    assert res.exit_code == 130, res.output
    assert f"interrupted inside a step; the checkpoint at step {kept} is kept" in res.stderr
    assert load_checkpoint(out / "checkpoint.npz").step == kept
    monkeypatch.undo()
    assert invoke([PARABOLOID, "--out", str(out), "--resume", "--no-plots"]).exit_code == 0
    assert_same_state(straight, out)


def test_ctrl_c_in_json_mode_prints_one_json_line(tmp_path, monkeypatch):
    from sheafdsl.training import trainers

    real = trainers.make_trainer

    def make(*a, **k):
        tr = real(*a, **k)
        step = tr.step

        def interrupted(*a, **k):  # step(loss=...) of a lazy-loss trainer, too
            if tr.step_count == 3:
                signal.raise_signal(signal.SIGINT)
            return step(*a, **k)

        tr.step = interrupted
        return tr

    monkeypatch.setattr(trainers, "make_trainer", make)
    out = tmp_path / "j"
    res = invoke([PARABOLOID, "--steps", "10", "--out", str(out), "--json", "--no-plots"])
    assert res.exit_code == 130
    lines = res.stdout.splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line == {"ok": False, "diagnostics": [], "interrupted": True, "step": 3, "checkpoint_step": 3,
                    "out": str(out)}


# ----------------------------------------------------------------------------------------------
# the cadence: checkpoints by wall time, λ_min scaled with the run's length


def test_checkpoints_go_by_wall_time(tmp_path, monkeypatch):
    """With --checkpoint-every S, a log step checkpoints only when S seconds passed since the last save;
    step 0 and the last step always do. The saved steps are counted on a fake clock."""
    from sheafdsl.training import run as R

    clock = {"t": 0.0}
    monkeypatch.setattr(R.time, "monotonic", lambda: clock["t"])
    saved = []
    real_save = R.TrainingSession.save

    def save(self, status):
        saved.append(int(self.trainer.step_count))
        real_save(self, status)

    monkeypatch.setattr(R.TrainingSession, "save", save)
    real_log = R.TrainingSession.log

    def log(self, *a, **k):
        clock["t"] += 4.0  # every log step is 4 s after the previous one
        return real_log(self, *a, **k)

    monkeypatch.setattr(R.TrainingSession, "log", log)
    out = tmp_path / "cadence"
    res = invoke([PARABOLOID, "--steps", "60", "--log-every", "5", "--checkpoint-every", "10", "--out", str(out),
                  "--no-plots", "--no-baseline"])
    assert res.exit_code == 0, res.output
    # logs at 0, 5, ..., 60 (t = 4, 8, ...); saves at 0 (t=4), then when ≥ 10 s passed: 15 (t=16), 30, 45, and 60
    assert saved == [0, 15, 30, 45, 60]
    assert [r["step"] for r in MetricsLog(out / "metrics.jsonl").read()] == list(range(0, 61, 5))


def test_resume_from_a_wall_time_checkpoint_is_exact(straight, tmp_path, monkeypatch):
    """A run stopped by a signal between two wall-time checkpoints saves where it stopped; resumed,
    it ends bitwise where the uninterrupted run does, and its metrics have no gap or repeat."""
    signal_during_step(monkeypatch, 26, signal.SIGTERM)
    out = tmp_path / "term"
    res = invoke([PARABOLOID, "--steps", "40", "--out", str(out), "--checkpoint-every", "3600", *COMMON])
    assert res.exit_code == 143, res.output
    assert load_checkpoint(out / "checkpoint.npz").step == 26  # the last completed step
    monkeypatch.undo()
    assert invoke([PARABOLOID, "--out", str(out), "--resume", "--no-plots"]).exit_code == 0
    assert_same_state(straight, out)
    assert [r["step"] for r in MetricsLog(out / "metrics.jsonl").read()] == [0, 10, 20, 30, 40]


def test_discord_and_lambda_min_are_sampled_on_a_scaled_interval(tmp_path):
    from sheafdsl.training.run import lambda_interval

    out = tmp_path / "lam"
    res = invoke([PARABOLOID, "--steps", "200", "--log-every", "2", "--out", str(out), "--no-plots", "--no-baseline"])
    assert res.exit_code == 0, res.output
    every = lambda_interval(200, 2)
    assert every == 8
    recs = MetricsLog(out / "metrics.jsonl").read()
    assert len(recs) == 101
    sampled = [r["step"] for r in recs if "lambda_min" in r]
    assert sampled == [s for s in range(0, 201, 2) if s % every == 0 or s == 200]
    assert sampled == [r["step"] for r in recs if "edge_discord" in r]  # the other entry that costs a solve
    assert all(r["lambda_min"] > 0 for r in recs if "lambda_min" in r)
    assert all("test_loss" in r and "loss" in r for r in recs)  # the cheap entries are in every record
