"""``sheaf train FILE``: train a model with the local sheaf rule (or a baseline), in a run directory.

The model's ``train`` statement sets the defaults; flags override it. By default a backprop
baseline trains beside the chosen trainer on the same data from the same initial parameters, so
the loss plot and the summary compare the two (``--no-baseline`` turns it off; it is off by default
with ``--json``). See docs/training.md for the run directory, resume and the faults.
"""

from __future__ import annotations

import contextlib
import time

import click

from ..errors import located
from ..lowering.backend import blas_threads
from ..options import BACKENDS, JOINT_INITS, LEARNED_TRAINERS, LR_SCHEDULES, OPTIMIZERS, TRAIN_SOLVERS, TRAINERS
from .common import (cluster_options, console, emit_json, err_console, json_option, load_model, model_argument,
                     open_cluster, print_table, seed_option)


def _positive_float(ctx, param, value):
    if value is not None and not (value > 0 and value < float("inf")):
        raise click.BadParameter(f"{value!r} is not a positive finite number")
    return value


@click.command("train")
@model_argument
@click.option("--data", metavar="NAME|PATH",
              help="Built-in task (paraboloid, saddle, circle, blobs, digits, hopf, torus:K) or a .csv/.npz file.")
@click.option("--steps", type=click.IntRange(min=0), help="Total optimiser steps (a resumed run continues up to this).")
@click.option("--batch", type=click.IntRange(min=1), help="Mini-batch size (default: the full training set).")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), help="Optimiser on the local gradients.")
@click.option("--lr", type=float, callback=_positive_float, help="Learning rate.")
@click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES),
              help="A learned model's learning rate over the steps: constant, or cosine annealing to 0.")
@click.option("--trainer", "trainer_name", type=click.Choice(TRAINERS + LEARNED_TRAINERS),
              help="sheaf: exact equilibrium + local update; joint: the paper's Euler flow; backprop: the baseline. "
                   "A learned consensus model: unrolled (through K ADMM steps), implicit (KKT adjoint), local.")
@click.option("--iterations", type=click.IntRange(min=1), help="A learned model's ADMM iterations K.")
@click.option("--window", type=click.IntRange(min=0), help="The unrolled trainer's truncated window (0: all K).")
@click.option("--rho", type=float, callback=_positive_float, help="A learned model's ADMM penalty ρ.")
@click.option("--nudge", type=float, callback=_positive_float, help="The local trainer's nudge β.")
@click.option("--solver", type=click.Choice(TRAIN_SOLVERS), help="Fast-phase solver of the sheaf trainer.")
@click.option("--stalk-init", type=click.Choice(JOINT_INITS),
              help="Where the joint trainer's stalks start: zero, the forward pass, or N(0, 1) from the seed.")
@click.option("--stalk-reinit", type=click.IntRange(min=0), metavar="K",
              help="The joint trainer's epoch: its stalks restart at the forward pass every K steps (0: never).")
@seed_option("Seed of the initial parameters and the mini-batch order.")
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
@click.option("--snapshot-at", "snapshot_at", metavar="STEPS",
              help="Keep the parameters at these steps in DIR/snapshots/ (comma-separated, e.g. 1000,20000,100k).")
@cluster_options
@json_option
def command(file, data, steps, batch, optimizer, lr, lr_schedule, trainer_name, iterations, window, rho, nudge, solver,
            stalk_init, stalk_reinit, seed, n, log_every, checkpoint_every, threads, backend, out, resume, baseline,
            plots, snapshot_at, workers, scheduler, as_json):
    """Train FILE; write metrics, checkpoints and plots to a run directory.

    \b
    Examples:
      sheaf train models/paraboloid.sheaf
      sheaf train models/paraboloid.sheaf --steps 500 --lr 0.005 --out runs/p
      sheaf train models/paraboloid.sheaf --out runs/p --resume --steps 1000
      sheaf train models/paraboloid.sheaf --workers 2
    """
    overrides = {"data": data, "steps": steps, "batch": batch, "optimizer": optimizer, "lr": lr,
                 "trainer": trainer_name, "solver": solver, "seed": seed, "n": n, "log_every": log_every,
                 "backend": backend, "iterations": iterations, "window": window, "rho": rho, "nudge": nudge,
                 "joint_init": stalk_init, "joint_reinit": stalk_reinit, "lr_schedule": lr_schedule}
    with located(file), blas_threads(threads), open_cluster(workers, scheduler) as cluster:
        code = train_main(file, overrides, out=out, resume=resume, baseline=baseline, plots=plots, as_json=as_json,
                          checkpoint_every=checkpoint_every, snapshot_at=snapshot_at, cluster=cluster)
    raise SystemExit(code)


# ----------------------------------------------------------------------------------------------


def train_main(file: str, overrides: dict, *, out=None, resume=False, baseline=None, plots=True, as_json=False,
               checkpoint_every: float = 30.0, snapshot_at=None, cluster=None) -> int:
    """The body of ``sheaf train`` (returns the exit code; SheafError propagates to the CLI -> exit 1).

    The run itself is :func:`sheafdsl.training.fit.start_run` / :func:`~sheafdsl.training.fit.finish_run`,
    as in the Python API; this adds the progress bar, the messages and the printed summary.
    """
    from ..ir import from_model
    from ..training.fit import cli_command, start_run

    G = from_model(load_model(file))
    from ..ir import is_learned

    if is_learned(G):
        if cluster is not None:
            from ..errors import Diagnostic, SheafError

            raise SheafError(Diagnostic("E703", "a learned consensus model's trainers run in one process; --workers "
                                                "and --scheduler shard the sheaf, joint and backprop trainers",
                                        file=file, hint="drop --workers/--scheduler"))
        if snapshot_at:
            from ..errors import Diagnostic, SheafError

            raise SheafError(Diagnostic("E610", "--snapshot-at is not available for a learned model's run", file=file))
        return learned_main(G, file, overrides, out=out, resume=resume, as_json=as_json, plots=plots)
    learned_only = [k for k in ("iterations", "window", "rho", "nudge") if overrides.get(k) is not None]
    if learned_only:
        from ..errors import Diagnostic, SheafError

        raise SheafError(Diagnostic("E610", f"--{learned_only[0]} is an option of a learned consensus model's trainers; "
                                    f"`{G.graph['name']}` is not one", file=file, hint=f"drop --{learned_only[0]}"))
    if baseline is None and as_json and not resume:  # --json leaves the baseline out unless asked for
        baseline = False
    factory = None
    if cluster is not None:
        import functools

        from ..distributed import sharded_trainer

        factory = functools.partial(sharded_trainer, cluster)
    run = start_run(G, file=file, overrides=overrides, out=out, resume=resume, baseline=baseline, command=cli_command(),
                    checkpoint_every=checkpoint_every, snapshot_at=snapshot_at, trainer_factory=factory)
    if not as_json:
        for note in run.notes:
            click.echo(f"note: {note}", err=True)
    config, data, session, ck = run.config, run.data, run.session, run.checkpoint
    rundir = session.rundir
    if not as_json:
        what = f"{config.trainer} trainer" + (f" ({config.solver} solver)" if config.trainer == "sheaf" else "")
        start = "" if ck is None else f", resuming at step {ck.step}"
        if config.trainer == "joint":  # forward Euler with step dt; optimizer and lr are the baseline's
            beta = config.beta if config.beta is not None else 1.0 / len(data.X_train)
            opt = (f"forward Euler dt={config.dt:g} α={config.alpha:g} β={beta:.3g}, stalks from {config.joint_init}"
                   + (f", restarted every {config.joint_reinit} steps" if config.joint_reinit else ""))
            if run.baseline is not None:
                opt += f"; baseline {config.optimizer} lr={config.lr:g}"
        else:
            opt = f"{config.optimizer} lr={config.lr:g}"
        err_console.print(f"training {G.graph['name']} on {data.name} ({data.task}, {len(data.X_train)} train / "
                          f"{len(data.X_test)} test) with the {what}, {opt}, "
                          f"{config.steps} steps{start}"
                          + (" + backprop baseline" if run.baseline is not None else "")
                          + (f", sharded over {len(run.session.trainer._ranges)} Dask workers" if cluster is not None
                             else "") + f" -> {rundir.path}",
                          soft_wrap=True, markup=False)

    from ..training.plots import PlotProcess

    with contextlib.ExitStack() as stack:
        # matplotlib is imported (in a forked process) while the run trains, not after it
        plotter = stack.enter_context(PlotProcess()) if plots and rundir is not None else None
        return _finish(run, file, overrides, _run_with_progress(session, config.steps, show=not as_json), plots=plots,
                       as_json=as_json, plotter=plotter)


def _finish(run, file, overrides, outcome, *, plots, as_json, plotter) -> int:
    """The end of :func:`train_main`: the warnings, an interruption's message, or the plots and the summary."""
    from ..training.fit import finish_run

    config, data, session, G = run.config, run.data, run.session, run.G
    rundir = session.rundir
    for w in outcome.warnings:
        click.echo(f"warning: {w}", err=True)

    if outcome.status in ("diverged", "failed"):
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
            emit_json({"interrupted": True, "step": outcome.step, "checkpoint_step": outcome.checkpoint_step,
                       "out": str(rundir.path)}, ok=False)
        return 128 + int(outcome.signum)  # 130 for Ctrl-C, 143 for SIGTERM

    done = finish_run(run, plots=plots, discords=not as_json, plotter=plotter)
    if as_json:
        line = dict(done.result)
        if done.summary.get("baseline") is not None:  # asked for with --baseline: it is part of the answer
            line["baseline"] = done.summary["baseline"]
        emit_json(line)
    else:
        _print_summary(done.result, done.summary.get("baseline"), data, session, done.plots, done.discords, G)
    return 0


def learned_main(G, file: str, overrides: dict, *, out=None, resume=False, as_json=False, plots=True) -> int:
    """``sheaf train`` of a learned consensus model (docs/admm.md "Learning"): the trainer, its result table or
    JSON line, and with ``--out`` the trained parameters (``params.npz``) and ``summary.json``, written atomically."""
    from ..errors import Diagnostic, SheafError
    from ..training.learned import fit_learned, learned_config, write_learned_run

    if resume:
        raise SheafError(Diagnostic("E631", "--resume is not available for a learned model's run", file=file,
                                    hint="start the run again (its steps are seconds to minutes)"))
    unused = [k for k in ("solver", "backend") if overrides.get(k) is not None and overrides[k] != "numpy"]
    if unused:
        raise SheafError(Diagnostic("E610", f"--{unused[0]} has no effect on a learned model's trainers", file=file))
    config = learned_config(G, overrides)
    if not as_json:
        err_console.print(f"training {G.graph['name']} (a learned consensus model) with the {config.trainer} trainer, "
                          f"K = {config.iterations} ADMM iterations, {config.optimizer} lr={config.lr:g}"
                          f"{'' if config.lr_schedule == 'constant' else ' (' + config.lr_schedule + ')'}, "
                          f"{config.steps} steps", soft_wrap=True, markup=False)
    fit = fit_learned(G, config)
    result = dict(fit["result"])
    report = fit["data"].meta.get("report")
    if report is not None:  # the task's own keys (a solved-puzzle fraction, a baseline beside it)
        result.update(report(fit["trainer"], fit["data"], config))
    if out is not None:
        write_learned_run(out, fit["params"], result, config)
        result["out"] = str(out)
    if as_json:
        emit_json({k: v for k, v in result.items() if k != "loss_curve"})
        return 0
    from rich.table import Table

    t = Table(title=f"{G.graph['name']}: {result['trainer']} trainer, {result['steps']} steps in "
                    f"{result['seconds']:.2f} s", title_justify="left")
    for c in ("split", "loss", "accuracy", "exact"):
        t.add_column(c, justify="right" if c != "split" else "left")
    rows = [("train", {k[6:]: v for k, v in result.items() if k.startswith("train_")})]
    rows += list((result.get("tests") or {}).items())
    for name, r in rows:
        t.add_row(name, _fmt(r.get("loss")), _fmt(r.get("accuracy"), True), _fmt(r.get("exact"), True))
    print_table(t)
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
    state = {"t": 0.0, "loss": None, "bloss": None}

    with progress:
        task = progress.add_task("train", total=steps, completed=start, info="")

        def on_step(step, loss, bloss):
            if loss is not None:
                state["loss"] = loss
            if bloss is not None:
                state["bloss"] = bloss
            now = time.monotonic()
            if now - state["t"] < 0.1 and step != steps:  # rich refreshes ~10x/s; skip needless updates
                return
            state["t"] = now
            info = ("" if state["loss"] is None else f"loss {state['loss']:.3e}") + (
                f"  backprop {state['bloss']:.3e}" if state["bloss"] is not None else "")
            progress.update(task, completed=step, info=info)

        on_step.throttled = True  # the losses of the logged steps are enough (lazy-loss trainers skip the rest)

        outcome = session.run(steps, on_step=on_step)
        progress.update(task, completed=session.trainer.step_count)
    return outcome


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
    print_table(t)
    from ..training.diagnostics import diagnose

    rows = diagnose(G, discords).edges if discords else []
    top = max(rows, key=lambda r: r.energy) if rows else None
    if top is not None and top.share > 0:
        console.print(f"largest discord: edge [bold]{top.name}[/] ({100 * top.share:.0f}% of the equilibrium energy; "
                      f"`sheaf diagnose {session.rundir.path}` for more)", soft_wrap=True)
    snaps = sorted(session.snapshots)
    console.print(f"run directory: {session.rundir.path}  (checkpoint.npz, metrics.jsonl"
                  + "".join(f", {p.name}" for p in written)
                  + (f", snapshots/ at step {', '.join(map(str, snaps))}" if snaps else "") + ")",
                  markup=False, soft_wrap=True)
