"""``sheaf train FILE``: train a model with the local sheaf rule (or a baseline), in a run directory.

The model's ``train`` statement sets the defaults; flags override it. By default a backprop
baseline trains beside the chosen trainer on the same data from the same initial parameters, so
the loss plot and the summary compare the two (``--no-baseline`` turns it off; it is off by default
with ``--json``). See docs/training.md for the run directory, resume and the faults.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from pathlib import Path

import click

from ..errors import Diagnostic, SheafError
from ..options import BACKENDS, OPTIMIZERS, TRAIN_SOLVERS, TRAINERS
from .common import console, emit_json, err_console, json_option, load_model, model_argument

LOSS_LABEL = {"regression": "training MSE (batch, forward pass)", "binary": "training cross-entropy (batch)",
              "multiclass": "training cross-entropy (batch)"}

#: flags that may differ from the checkpoint's config on --resume (they do not change the trajectory)
RESUME_FREE = ("steps", "log_every", "backend")


def _positive_float(ctx, param, value):
    if value is not None and not (value > 0 and value < float("inf")):
        raise click.BadParameter(f"{value!r} is not a positive finite number")
    return value


@click.command("train")
@model_argument
@click.option("--data", metavar="NAME|PATH",
              help="Built-in task (paraboloid, saddle, circle, blobs, digits) or a .csv/.npz file.")
@click.option("--steps", type=click.IntRange(min=0), help="Total optimiser steps (a resumed run continues up to this).")
@click.option("--batch", type=click.IntRange(min=1), help="Mini-batch size (default: the full training set).")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), help="Optimiser on the local gradients.")
@click.option("--lr", type=float, callback=_positive_float, help="Learning rate.")
@click.option("--trainer", "trainer_name", type=click.Choice(TRAINERS),
              help="sheaf: exact equilibrium + local update; joint: the paper's Euler flow; backprop: the baseline.")
@click.option("--solver", type=click.Choice(TRAIN_SOLVERS), help="Fast-phase solver of the sheaf trainer.")
@click.option("--seed", type=click.IntRange(min=0), help="Seed of the initial parameters and the mini-batch order.")
@click.option("--n", "n", type=click.IntRange(min=1), help="Number of training examples.")
@click.option("--log-every", type=click.IntRange(min=1), help="Log metrics every K steps.")
@click.option("--checkpoint-every", type=click.FloatRange(min=0), default=30.0, show_default=True, metavar="SECONDS",
              help="Checkpoint at the first log step this long after the last checkpoint (and at the end, and on "
                   "Ctrl-C); 0: at every log step.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="BLAS threads (small batched arrays run fastest on one).")
@click.option("--backend", type=click.Choice(BACKENDS), help="Array backend.")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory (default: runs/<model>-<timestamp>).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option("--baseline/--no-baseline", default=None,
              help="Train a backprop baseline beside the trainer (default: on, except with --json).")
@click.option("--plots/--no-plots", default=True, help="Write PNG plots into the run directory (default: on).")
@json_option
def command(file, data, steps, batch, optimizer, lr, trainer_name, solver, seed, n, log_every, checkpoint_every,
            threads, backend, out, resume, baseline, plots, as_json):
    """Train FILE; write metrics, checkpoints and plots to a run directory.

    \b
    Examples:
      sheaf train models/paraboloid.sheaf
      sheaf train models/paraboloid.sheaf --steps 500 --lr 0.005 --out runs/p
      sheaf train models/paraboloid.sheaf --out runs/p --resume --steps 1000
    """
    overrides = {"data": data, "steps": steps, "batch": batch, "optimizer": optimizer, "lr": lr,
                 "trainer": trainer_name, "solver": solver, "seed": seed, "n": n, "log_every": log_every,
                 "backend": backend}
    with located(file), blas_threads(threads):
        code = train_main(file, overrides, out=out, resume=resume, baseline=baseline, plots=plots, as_json=as_json,
                          checkpoint_every=checkpoint_every)
    raise SystemExit(code)


@contextlib.contextmanager
def located(file: str):
    """Errors from the layers below that name no file (data, trainer, solver) are about FILE: say so."""
    try:
        yield
    except SheafError as exc:
        exc.diagnostics = [dataclasses.replace(d, file=file) if d.file == "<input>" else d for d in exc.diagnostics]
        raise


@contextlib.contextmanager
def blas_threads(n: int | None):
    """Limit the BLAS (and OpenMP) thread pools to ``n`` threads inside the block (None: leave them)."""
    if n is None:
        yield
        return
    import numpy  # noqa: F401  (threadpoolctl limits the pools of the libraries already loaded)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=int(n)):
        yield


# ----------------------------------------------------------------------------------------------


def _data_fingerprint(spec: str) -> dict:
    from ..training.checkpoint import sha256_file
    from ..training.data import TASKS

    out = {"spec": spec}
    if spec not in TASKS and os.path.isfile(spec):
        out["sha256"] = sha256_file(spec)
    return out


def _resume_config(ck, overrides: dict, baseline_flag, file: str):
    from ..training.config import TrainConfig

    saved = dict(ck.meta.get("config") or {})
    for key, value in overrides.items():
        if value is None or key in RESUME_FREE:
            continue
        if key in saved and saved[key] != value:
            flag = "--" + key.replace("_", "-")
            raise SheafError(Diagnostic(
                "E634", f"cannot resume with {flag} {value}: the run in `{Path(ck.path).parent}` was started with "
                        f"{flag} {saved[key]}", file=file,
                hint="a resumed run continues the same trajectory; start a new run (another --out) to change it"))
    if baseline_flag is True and not ck.baseline:
        raise SheafError(Diagnostic("E634", "cannot resume with --baseline: the run was started without a baseline",
                                    file=file, hint="drop --baseline, or start a new run"))
    free = {k: v for k, v in overrides.items() if k in RESUME_FREE and v is not None}
    return TrainConfig.from_sources(saved, free)


def train_main(file: str, overrides: dict, *, out=None, resume=False, baseline=None, plots=True, as_json=False,
               checkpoint_every: float = 30.0) -> int:
    """The body of ``sheaf train`` (returns the exit code; SheafError propagates to the CLI -> exit 1)."""
    from ..ir import from_model
    from ..lowering import to_numpy
    from ..training.checkpoint import load_checkpoint, sha256_text, versions
    from ..training.config import TrainConfig
    from ..training.data import dataset_for
    from ..training.run import MetricsLog, RunDir, TrainingSession, atomic_write_text, default_run_dir
    from ..training.trainers import make_trainer

    model = load_model(file)
    G = from_model(model)
    text = model.source
    model_sha = sha256_text(text)

    if resume:
        if out is None:
            raise SheafError(Diagnostic("E631", "--resume needs --out DIR: the run directory to continue", file=file,
                                        hint="e.g. `sheaf train FILE --out runs/my-run --resume`"))
        rundir = RunDir(out).require_checkpoint()
        ck = load_checkpoint(rundir.checkpoint)
        if ck.meta.get("model_sha256") != model_sha:
            raise SheafError(Diagnostic(
                "E633", f"cannot resume: `{file}` is not the model the run in `{out}` was trained on "
                        "(the model text differs)", file=file,
                hint=f"compare with `{rundir.model}`; resume with that file, or start a new run"))
        config = _resume_config(ck, overrides, baseline, file)
        use_baseline = bool(ck.baseline) and baseline is not False
    else:
        config = TrainConfig.from_sources(G.graph.get("train") or {}, overrides)
        use_baseline = (not as_json if baseline is None else baseline) and config.trainer != "backprop"
        ck = None

    data = dataset_for(G, config)
    fingerprint = _data_fingerprint(config.data)
    if ck is not None and (ck.meta.get("data") or {}).get("sha256") != fingerprint.get("sha256"):
        raise SheafError(Diagnostic("E634", f"cannot resume: the data file `{config.data}` changed since the run "
                                            "started",
                                    file=file, hint="resume with the original data, or start a new run"))

    trainer = make_trainer(G, config, data, params=None if ck is None else ck.params)
    if ck is not None:
        trainer.load_state_dict(ck.state)
    base = None
    if use_baseline:
        bconfig = dataclasses.replace(config, trainer="backprop")
        if ck is not None:
            base = make_trainer(G, bconfig, data, params={k: v.copy() for k, v in ck.params.items()})
            base.load_state_dict(ck.baseline)  # its own parameters and optimiser state
        else:  # the same initial parameters as the trainer's, copied
            try:
                base = make_trainer(G, bconfig, data,
                                    params={k: to_numpy(v).copy() for k, v in trainer.params.items()})
            except SheafError as exc:  # e.g. backprop needs a feed-forward chain; a skip connection is not one
                if baseline:  # asked for explicitly
                    raise
                if not as_json:
                    click.echo(f"note: no backprop baseline for this model ({exc.diagnostics[0].message})", err=True)

    if ck is None:
        rundir = RunDir(out if out is not None else default_run_dir(G.graph["name"])).create()
        atomic_write_text(rundir.model, text)
        MetricsLog(rundir.metrics).truncate_after(-1)  # a fresh (empty) log
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        data_meta = {**fingerprint, "name": data.name, "task": data.task, "n_train": int(len(data.X_train)),
                     "n_test": int(len(data.X_test))}
        meta = {"model": G.graph["name"], "model_file": file, "model_path": os.path.abspath(file),
                "model_sha256": model_sha, "config": config.to_dict(), "seed": config.seed, "data": data_meta,
                "baseline": "backprop" if base is not None else None, "versions": versions(), "created": now,
                "command": ["sheaf", *sys.argv[1:]] if sys.argv and sys.argv[0].endswith("sheaf") else None}
        seconds = bseconds = 0.0
    else:
        meta = dict(ck.meta)
        meta.pop("format", None)
        meta["config"] = config.to_dict()
        meta["model_file"] = file
        meta["versions"] = versions()
        meta.setdefault("resumed", []).append({"from_step": ck.step, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        MetricsLog(rundir.metrics).truncate_after(ck.step)
        seconds, bseconds = float(ck.meta.get("seconds") or 0.0), float(ck.meta.get("baseline_seconds") or 0.0)

    session = TrainingSession(rundir, G, trainer, data, meta=meta, baseline=base, log_every=config.log_every,
                              seconds=seconds, baseline_seconds=bseconds, checkpoint_every=checkpoint_every)
    if not as_json:
        what = f"{config.trainer} trainer" + (f" ({config.solver} solver)" if config.trainer == "sheaf" else "")
        start = "" if ck is None else f", resuming at step {ck.step}"
        if config.trainer == "joint":  # the flow's step is dt; lr is not used
            beta = config.beta if config.beta is not None else 1.0 / len(data.X_train)
            opt = f"{config.optimizer} dt={config.dt:g} α={config.alpha:g} β={beta:.3g}"
        else:
            opt = f"{config.optimizer} lr={config.lr:g}"
        err_console.print(f"training {G.graph['name']} on {data.name} ({data.task}, {len(data.X_train)} train / "
                          f"{len(data.X_test)} test) with the {what}, {opt}, "
                          f"{config.steps} steps{start}"
                          + (" + backprop baseline" if base is not None else "") + f" -> {rundir.path}",
                          soft_wrap=True, markup=False)

    outcome = _run_with_progress(session, config.steps, show=not as_json)
    for w in outcome.warnings:
        click.echo(f"warning: {w}", err=True)

    if outcome.status == "diverged":
        raise outcome.error
    if outcome.status == "interrupted":
        if outcome.saved:
            how = f"checkpoint saved at step {outcome.checkpoint_step}"
        elif outcome.checkpoint_step >= 0:
            how = f"interrupted inside a step; the checkpoint at step {outcome.checkpoint_step} is kept"
        else:
            how = "interrupted before the first checkpoint; start the run again (without --resume)"
        cmd = f"sheaf train {file} --out {rundir.path} --resume"
        if overrides.get("steps"):
            cmd += f" --steps {config.steps}"
        resume_line = f"\nresume with: {cmd}" if outcome.checkpoint_step >= 0 else ""
        click.echo(f"interrupted: {how} in {rundir.path}{resume_line}", err=True)  # unwrapped: copy-pasteable
        if as_json:
            emit_json({"ok": False, "interrupted": True, "step": outcome.step,
                       "checkpoint_step": outcome.checkpoint_step, "out": str(rundir.path)})
        return 128 + int(outcome.signum)  # 130 for Ctrl-C, 143 for SIGTERM

    result = _finish(session, config, data, G, plots, as_json)
    if as_json:
        emit_json(result)
    return 0


def _run_with_progress(session, steps: int, *, show: bool):
    if not show:
        return session.run(steps)
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    progress = Progress(TextColumn("[bold blue]train"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[info]}"),
                        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=err_console,
                        transient=False)
    start = int(session.trainer.step_count)
    state = {"t": 0.0}

    with progress:
        task = progress.add_task("train", total=steps, completed=start, info="")

        def on_step(step, loss, bloss):
            now = time.monotonic()
            if now - state["t"] < 0.1 and step != steps:  # rich refreshes ~10x/s; skip needless updates
                return
            state["t"] = now
            info = f"loss {loss:.3e}" + (f"  backprop {bloss:.3e}" if bloss is not None else "")
            progress.update(task, completed=step, info=info)

        outcome = session.run(steps, on_step=on_step)
        progress.update(task, completed=session.trainer.step_count)
    return outcome


def _metric_row(ev: dict, task: str) -> dict:
    out = {"train_loss": ev.get("train_loss"), "test_loss": ev.get("test_loss")}
    if task == "regression":
        out["test_mse"] = ev.get("test_mse")
    else:
        out["test_accuracy"] = ev.get("test_accuracy")
    return out


def _finish(session, config, data, G, plots: bool, as_json: bool) -> dict:
    """Evaluate, write summary.json and the plots, print the summary; return the --json line."""
    from ..training.run import atomic_write_json, json_number

    tr, base = session.trainer, session.baseline
    ev = tr.evaluate()
    cf = ev.get("consistent_fraction")
    records = session.metrics.read()
    if cf is None and records:
        cf = records[-1].get("consistent_fraction")
    result = {"trainer": config.trainer, "steps": int(tr.step_count), "seconds": round(session.seconds, 6),
              **{k: json_number(v) for k, v in _metric_row(ev, data.task).items()},
              "consistent_fraction": json_number(cf)}
    bev = base.evaluate() if base is not None else None
    summary = {"trainer": {**result, "evaluate": {k: json_number(v) if isinstance(v, (int, float)) else v
                                                  for k, v in ev.items()}}}
    if bev is not None:
        summary["baseline"] = {"trainer": "backprop", "steps": int(base.step_count),
                               "seconds": round(session.baseline_seconds, 6),
                               **{k: json_number(v) for k, v in _metric_row(bev, data.task).items()}}
    written = []
    discords = tr.edge_discords(data.X_train, data.Y_train) if (plots or not as_json) else {}
    if plots:
        written = _plots(session, G, data, records, discords, config)
    summary["plots"] = [p.name for p in written]
    atomic_write_json(session.rundir.summary, summary)
    if not as_json:
        _print_summary(result, summary.get("baseline"), data, session, written, discords, G)
    return result


def _plots(session, G, data, records, discords, config) -> list:
    from ..lowering import to_numpy
    from ..training import plots as P
    from ..training.diagnostics import diagnose, predictor

    rd, name = session.rundir, G.graph["name"]
    out = [P.plot_loss(records, rd.file("loss.png"), title=f"{name}: {config.trainer} trainer vs backprop"
                       if session.baseline is not None else f"{name}: {config.trainer} trainer",
                       main_label=config.trainer, ylabel=LOSS_LABEL.get(data.task, "training loss"))]
    out.append(P.plot_discord(diagnose(G, discords), rd.file("discord.png"),
                              title=f"{name}: equilibrium discord per edge at step {session.trainer.step_count}"))
    if data.n_inputs == 2:
        predict = predictor(G, {k: to_numpy(v) for k, v in session.trainer.params.items()})
        if predict is not None:
            if data.task == "regression" and data.n_outputs == 1:
                out.append(P.plot_surface(predict, data, rd.file("surface.png"), title=f"{name}: learned surface"))
            elif data.task != "regression":
                out.append(P.plot_boundary(predict, data, rd.file("boundary.png"), title=f"{name}"))
    return out


def _fmt(v, pct=False) -> str:
    if v is None:
        return "—"
    if pct:
        return f"{100 * v:.1f}%"
    if isinstance(v, int):
        return str(v)
    return f"{v:.4g}"


def _print_summary(result, bres, data, session, written, discords, G) -> None:
    from rich.table import Table

    t = Table(title=f"{G.graph['name']}: training summary", title_justify="left")
    t.add_column("")
    t.add_column(result["trainer"], justify="right")
    if bres:
        t.add_column("backprop (baseline)", justify="right")
    acc = data.task != "regression"
    rows = [("steps", "steps", False), ("seconds (in steps)", "seconds", False), ("train loss", "train_loss", False),
            ("test loss", "test_loss", False)]
    rows.append(("test accuracy", "test_accuracy", True) if acc else ("test MSE", "test_mse", False))
    rows.append(("consistent fraction", "consistent_fraction", True))
    for label, key, pct in rows:
        cells = [_fmt(result.get(key), pct)]
        if bres:
            cells.append(_fmt(bres.get(key), pct))
        t.add_row(label, *cells)
    console.print(t)
    from ..training.diagnostics import diagnose

    rows = diagnose(G, discords).edges if discords else []
    top = max(rows, key=lambda r: r.energy) if rows else None
    if top is not None and top.share > 0:
        console.print(f"largest discord: edge [bold]{top.name}[/] ({100 * top.share:.0f}% of the equilibrium energy; "
                      f"`sheaf diagnose {session.rundir.path}` for more)", soft_wrap=True)
    console.print(f"run directory: {session.rundir.path}  (checkpoint.npz, metrics.jsonl"
                  + "".join(f", {p.name}" for p in written) + ")", markup=False, soft_wrap=True)
