"""Whole-run benchmark: what ``sheaf train MODEL`` costs end to end against the time inside its steps.

For each shipped model that trains (and a [2, 30, 30, 30, 1] net on the paraboloid), run the real
command ``sheaf train MODEL --out DIR`` in a fresh process, at the model's default settings with
plots on (and the default backprop baseline), and compare

- ``whole``: the wall time of the command (process start to exit), with
- ``in-step``: the seconds spent inside trainer steps, trainer plus baseline, as ``summary.json``
  records them.

The target of issue 15 is ``whole <= 1.25 * in-step + 1.5 s`` (``fixed`` = whole − 1.25 · in-step).
Runs alternate between models for ``--repeats`` rounds; medians are reported. The CLI's BLAS thread
count is passed through (``--threads``; the CLI's default is one).

Usage::

    python benchmarks/bench_run.py                         # every model, 3 rounds
    python benchmarks/bench_run.py --models paraboloid,deep --repeats 1
    python benchmarks/bench_run.py --sheaf /other/venv/bin/sheaf --json before.json

Prints a table, then one JSON document (also written to ``--json`` when given).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: the shipped models that `sheaf train` trains at their own defaults (input and target pinned)
MODELS = ["paraboloid", "paraboloid_paper", "saddle", "circle", "blobs", "digits", "residual", "tiny"]

DEEP = """sheaf deep
# a [2, 30, 30, 30, 1] ReLU net on the paraboloid (issue 15's whole-run benchmark)
network mlp : 2 -> 30 -> 30 -> 30 -> 1 relu output identity
train data=paraboloid n=300 n_test=100 steps=3000 optimizer=adam lr=0.01 seed=0
"""


def model_path(name: str, scratch: Path) -> tuple[Path, list[str]]:
    """(model file, extra flags) of a benchmark entry; ``deep-backprop`` is the deep net with backprop only."""
    if name.startswith("deep"):
        p = scratch / "deep.sheaf"
        p.write_text(DEEP)
        return p, (["--trainer", "backprop"] if name == "deep-backprop" else [])
    return ROOT / "models" / f"{name}.sheaf", []


def one_run(sheaf: str, model: Path, extra: list[str], scratch: Path, threads: int | None) -> dict:
    out = Path(tempfile.mkdtemp(dir=scratch, prefix="run-"))
    shutil.rmtree(out)
    cmd = [sheaf, "train", str(model), "--out", str(out), *extra]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    env = dict(os.environ)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=scratch, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    whole = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    instep = float(summary["trainer"]["seconds"]) + float((summary.get("baseline") or {}).get("seconds") or 0.0)
    shutil.rmtree(out, ignore_errors=True)
    return {"whole": whole, "instep": instep}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS + ["deep", "deep-backprop"]),
                    help="comma-separated: shipped model names, `deep` and/or `deep-backprop`")
    ap.add_argument("--repeats", type=int, default=3, help="alternating rounds (median)")
    ap.add_argument("--sheaf", default=str(Path(sys.executable).with_name("sheaf")), help="the sheaf executable")
    ap.add_argument("--threads", type=int, default=None, help="pass --threads N to sheaf train")
    ap.add_argument("--json", metavar="PATH", help="also write the JSON here")
    args = ap.parse_args(argv)
    names = [m for m in args.models.split(",") if m]
    scratch = Path(tempfile.mkdtemp(prefix="bench-run-"))
    runs: dict[str, list[dict]] = {n: [] for n in names}
    try:
        for _ in range(args.repeats):
            for n in names:
                model, extra = model_path(n, scratch)
                runs[n].append(one_run(args.sheaf, model, extra, scratch, args.threads))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rows = []
    print(f"{'model':<18}{'whole s':>9}{'in-step s':>11}{'ratio':>7}{'fixed s':>9}  target")
    for n in names:
        whole = statistics.median(r["whole"] for r in runs[n])
        instep = statistics.median(r["instep"] for r in runs[n])
        fixed = whole - 1.25 * instep
        ok = fixed <= 1.5
        rows.append({"model": n, "whole": round(whole, 3), "instep": round(instep, 3),
                     "ratio": round(whole / instep, 3) if instep > 0 else None, "fixed": round(fixed, 3), "ok": ok,
                     "runs": runs[n]})
        ratio = f"{whole / instep:.2f}" if instep > 0 else "—"
        print(f"{n:<18}{whole:>9.2f}{instep:>11.2f}{ratio:>7}{fixed:>9.2f}  {'ok' if ok else 'MISSED'}")
    doc = {"repeats": args.repeats, "threads": args.threads, "sheaf": args.sheaf,
           "blas_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
           "rows": rows}
    text = json.dumps(doc, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
