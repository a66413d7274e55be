"""The paper's joint rule, side by side with a PyTorch reimplementation of the paper's code (issue 13).

The run: ``models/paraboloid_paper.sheaf`` (the [2, 30, 1] ReLU net with unit edge weights) on the
paraboloid (300 train / 100 test, data seed 42), parameters seeded 0, stalks from zero, α = 1,
β = 1/300, dt = 0.005, 100,000 steps of the full batch (the paper's 100 × 1,000).

It measures, alternating the compared runs in every round and reporting medians:

- **in-step**: in this process, the seconds of N steps of our ``JointTrainer.step`` and of
  :class:`joint_torch.JointFlowTorch.step` from the same data, initial weights and stalks (wall and
  CPU seconds; each computes the train loss once per 1,000 steps); their final parameters are compared
  too (the two implementations must agree to round-off: max |Δθ| over max |θ|); and the command's
  default baseline (backprop, SGD) on its fused step and on its plain path;
- **whole-command**: the wall and CPU seconds of fresh processes, start to exit:
  ``sheaf train models/paraboloid_paper.sheaf --trainer joint --optimizer sgd --steps 100000`` as a
  user runs it (plots, metrics, checkpoints and the default backprop baseline beside it), the same
  with ``--no-baseline``, and ``python benchmarks/joint_torch.py`` (import torch, the run with the
  train loss logged every 1,000 steps, the results written).

BLAS: one thread for both (``OMP/OPENBLAS/MKL_NUM_THREADS=1``, ``torch.set_num_threads(1)``;
``sheaf train`` uses one by default). The load of the machine is printed with the results (the
machine is shared: CPU seconds are the steadier number when it is busy).

Usage::

    python benchmarks/bench_joint.py                      # 3 rounds, 100k steps
    python benchmarks/bench_joint.py --instep-steps 20000 # in-step rounds of 20k steps, whole commands of 100k
    python benchmarks/bench_joint.py --quick              # 1 round, 5k steps (a smoke run)
    python benchmarks/bench_joint.py --skip-whole --repeats 5

Needs torch (the ``bench`` extra). Prints a table, then one JSON document (also to ``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: the in-step runs compute the train loss once per epoch, on both sides (as the paper's code logs it)
LOG_EVERY = 1000
#: steps run before a baseline's timed ones
WARM = 200
MODEL = ROOT / "models" / "paraboloid_paper.sheaf"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def our_trainer(steps: int, trainer: str = "joint"):
    """The trainer of the command's run (``trainer`` "backprop": its default baseline, SGD at the model's lr)."""
    from sheafdsl.frontend import load_file
    from sheafdsl.ir import from_model
    from sheafdsl.training.config import TrainConfig
    from sheafdsl.training.data import dataset_for
    from sheafdsl.training.trainers import make_trainer

    G = from_model(load_file(str(MODEL)))
    over = {"trainer": "joint", "steps": steps} if trainer == "joint" else {"trainer": "backprop", "optimizer": "sgd",
                                                                             "steps": steps}
    cfg = TrainConfig.from_sources(G.graph.get("train") or {}, over)
    data = dataset_for(G, cfg)
    return make_trainer(G, cfg, data), data


def _baseline_steps(steps: int, fused: bool) -> tuple[float, float]:
    """Wall and CPU seconds of ``steps`` steps of the default backprop baseline (its loss once per epoch), on
    its fused step or on the plain path (the general chain rule and the optimiser per array)."""
    B, _ = our_trainer(steps + WARM, "backprop")
    if not fused:
        B.flow = None
    for _ in range(WARM):  # the first steps bind the buffers and touch their pages
        B.step(loss=False)
    w, c = time.perf_counter(), time.process_time()
    for t in range(1, steps + 1):
        B.step(loss=t % LOG_EVERY == 0)
    return time.perf_counter() - w, time.process_time() - c


def torch_input(path: Path) -> None:
    """The data, initial weights and settings of our run, for joint_torch.py."""
    T, data = our_trainer(1)
    P = {k: np.array(v) for k, v in T.params.items()}
    np.savez(path, layers=2, W0=P["W1"], b0=P["b1"], W1=P["W2"], b1=P["b2"], X=data.X_train, Y=data.Y_train,
             Xte=data.X_test, Yte=data.Y_test, alpha=T.config.alpha, dt=T.config.dt, init=T.config.joint_init)


def in_step(steps: int, repeats: int) -> dict:
    import torch

    from joint_torch import JointFlowTorch

    torch.set_num_threads(1)
    ours, theirs, base_fused, base_plain = [], [], [], []
    diff = None
    for _ in range(repeats):
        base_fused.append(_baseline_steps(steps, True))
        base_plain.append(_baseline_steps(steps, False))
        T, data = our_trainer(steps)
        w, c = time.perf_counter(), time.process_time()
        for t in range(1, steps + 1):
            T.step(loss=t % LOG_EVERY == 0)  # both sides compute the train loss once per epoch
        ours.append((time.perf_counter() - w, time.process_time() - c))
        P = {k: np.array(v) for k, v in T.params.items()}
        T0, _ = our_trainer(1)
        P0 = {k: np.array(v) for k, v in T0.params.items()}
        F = JointFlowTorch([P0["W1"], P0["W2"]], [P0["b1"], P0["b2"]], data.X_train, data.Y_train,
                           alpha=T.config.alpha, dt=T.config.dt, init=T.config.joint_init)
        w, c = time.perf_counter(), time.process_time()
        for t in range(1, steps + 1):
            F.step()
            if t % LOG_EVERY == 0:
                F.train_mse()
        theirs.append((time.perf_counter() - w, time.process_time() - c))
        Q = {"W1": F.W[0].numpy(), "b1": F.b[0].numpy(), "W2": F.W[1].numpy(), "b2": F.b[1].numpy()}
        scale = max(float(np.abs(P[k]).max()) for k in P)
        diff = max(float(np.abs(P[k] - Q[k]).max()) for k in P) / scale
        ours_mse, torch_mse = T.evaluate()["train_mse"], F.train_mse()
    med = lambda xs, i: statistics.median(x[i] for x in xs)
    return {"steps": steps, "repeats": repeats,
            "ours_wall_s": med(ours, 0), "ours_cpu_s": med(ours, 1),
            "torch_wall_s": med(theirs, 0), "torch_cpu_s": med(theirs, 1),
            "speedup_wall": med(theirs, 0) / med(ours, 0), "speedup_cpu": med(theirs, 1) / med(ours, 1),
            "ours_us_per_step": 1e6 * med(ours, 1) / steps, "torch_us_per_step": 1e6 * med(theirs, 1) / steps,
            "max_rel_param_diff": diff, "ours_train_mse": ours_mse, "torch_train_mse": torch_mse,
            "baseline_fused_us_per_step": 1e6 * med(base_fused, 1) / steps,
            "baseline_plain_us_per_step": 1e6 * med(base_plain, 1) / steps,
            "baseline_speedup_cpu": med(base_plain, 1) / med(base_fused, 1),
            "rounds": {"ours": ours, "torch": theirs}}


def _timed(cmd: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def whole(steps: int, repeats: int, sheaf: str) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="bench-joint-"))
    try:
        inp = scratch / "in.npz"
        torch_input(inp)
        base = [sheaf, "train", str(MODEL), "--trainer", "joint", "--optimizer", "sgd", "--steps", str(steps)]
        runs = {"sheaf train (with the backprop baseline)": lambda i: base + ["--out", str(scratch / f"a{i}")],
                "sheaf train --no-baseline": lambda i: base + ["--no-baseline", "--out", str(scratch / f"b{i}")],
                "torch (joint_torch.py)": lambda i: [sys.executable, str(ROOT / "benchmarks" / "joint_torch.py"),
                                                     str(inp), str(scratch / f"t{i}.npz"), "--steps", str(steps)]}
        times: dict[str, list] = {k: [] for k in runs}
        for i in range(repeats):
            for label, cmd in runs.items():
                times[label].append(_timed(cmd(i)))
        summary = json.loads((scratch / "b0" / "summary.json").read_text())
        tor = np.load(scratch / "t0.npz")
        out = {"steps": steps, "repeats": repeats}
        for label, ts in times.items():
            out[label] = {"wall_s": statistics.median(t[0] for t in ts), "cpu_s": statistics.median(t[1] for t in ts),
                          "rounds": ts}
        ours = summary["trainer"]
        out["ours_train_mse"], out["ours_test_mse"] = ours["train_loss"], ours["test_mse"]
        out["ours_in_step_s"] = ours["seconds"]
        out["torch_train_mse"] = float(tor["log"][-1][1]) if len(tor["log"]) else None
        out["torch_test_mse"] = float(tor["test_mse"])
        # like with like: torch runs the flow alone, so its match is the command without the baseline (which
        # still writes plots, metrics and checkpoints); the default command trains a second net beside it
        t = out["torch (joint_torch.py)"]
        for label, key in (("sheaf train --no-baseline", "no_baseline"),
                           ("sheaf train (with the backprop baseline)", "with_baseline")):
            out[f"torch_over_{key}_cpu"] = t["cpu_s"] / out[label]["cpu_s"]
            out[f"torch_over_{key}_wall"] = t["wall_s"] / out[label]["wall_s"]
        return out
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--instep-steps", type=int, default=None, help="steps of each in-step round (default: --steps)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="a smoke run: 1 round of 5,000 steps")
    ap.add_argument("--skip-whole", action="store_true")
    ap.add_argument("--skip-instep", action="store_true")
    ap.add_argument("--sheaf", default=str(Path(sys.executable).with_name("sheaf")))
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 5000, 1
    res = {"load_before": os.getloadavg(), "threads": 1, "cpus": os.cpu_count()}
    if not args.skip_instep:
        res["in_step"] = in_step(args.instep_steps or args.steps, args.repeats)
    if not args.skip_whole:
        res["whole"] = whole(args.steps, args.repeats, args.sheaf)
    res["load_after"] = os.getloadavg()
    print(f"joint rule, {args.steps} steps (in-step rounds: {args.instep_steps or args.steps}), median of "
          f"{args.repeats} alternating rounds, 1 BLAS thread, "
          f"load {res['load_before'][0]:.1f} -> {res['load_after'][0]:.1f} on {res['cpus']} cores")
    if "in_step" in res:
        s = res["in_step"]
        print(f"  in-step    ours {s['ours_wall_s']:7.2f} s wall {s['ours_cpu_s']:7.2f} s CPU "
              f"({s['ours_us_per_step']:.0f} µs/step) | torch {s['torch_wall_s']:7.2f} s wall {s['torch_cpu_s']:7.2f} s "
              f"CPU ({s['torch_us_per_step']:.0f} µs/step) | torch/ours {s['speedup_wall']:.2f}x wall, "
              f"{s['speedup_cpu']:.2f}x CPU")
        print(f"  baseline   backprop (SGD) fused {s['baseline_fused_us_per_step']:.0f} µs/step | plain path "
              f"{s['baseline_plain_us_per_step']:.0f} µs/step | {s['baseline_speedup_cpu']:.2f}x CPU")
        print(f"             train MSE ours {s['ours_train_mse']:.6f} torch {s['torch_train_mse']:.6f}; "
              f"parameters agree to {s['max_rel_param_diff']:.1e} (relative)")
    if "whole" in res:
        w = res["whole"]
        for label in [k for k in w if isinstance(w[k], dict)]:
            print(f"  whole      {label:42s} {w[label]['wall_s']:7.2f} s wall {w[label]['cpu_s']:7.2f} s CPU")
        print(f"             torch/ours: {w['torch_over_no_baseline_cpu']:.2f}x CPU ({w['torch_over_no_baseline_wall']:.2f}x "
              f"wall) without the baseline (like with like), {w['torch_over_with_baseline_cpu']:.2f}x CPU "
              f"({w['torch_over_with_baseline_wall']:.2f}x wall) with it")
        print(f"             train MSE ours {w['ours_train_mse']:.6f} torch {w['torch_train_mse']:.6f}")
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
