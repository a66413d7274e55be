"""A training run from start to finish: config, resume, run directory and metadata, evaluation, plots.

What ``sheaf train`` and ``sheafdsl.train`` share (the CLI adds only the progress bar and the
printing):

- :func:`start_run` merges the options (flags over the model's ``train`` statement over the
  defaults of :class:`~sheafdsl.training.config.TrainConfig`), or, with ``resume``, reopens a run
  directory and checks that the model, the data and every trajectory-changing option are those the
  run started with (E631, E633, E634); it builds the trainer (and the backprop baseline beside it,
  from the same initial parameters) and a :class:`~sheafdsl.training.run.TrainingSession`, with a run
  directory (``model.sheaf``, ``meta.json``, checkpoints, ``metrics.jsonl``) or, with ``out=None``
  and ``record=False``, in memory;
- :func:`finish_run` evaluates, writes ``summary.json`` and the plots, and returns the result row;
- :func:`load_run` reopens a run directory for ``sheaf diagnose``: the model saved with it, its
  config and its checkpoint's parameters.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Diagnostic, SheafError, Span
from ..fileio import write_error

#: options that may differ from the checkpoint's config on resume (they do not change the trajectory)
RESUME_FREE = ("steps", "log_every", "backend")

#: the task loss of the prediction (the harmonic extension with the input pinned), per task
LOSS_LABEL = {"regression": "MSE", "binary": "cross-entropy", "multiclass": "cross-entropy"}


@dataclass
class Run:
    """A prepared run: the session to drive, and what it was made from."""

    G: object
    config: object
    data: object
    session: object
    file: str
    checkpoint: object = None  # the checkpoint resumed from, or None
    notes: list[str] = field(default_factory=list)  # things the user should know (e.g. no baseline)

    @property
    def rundir(self):
        return self.session.rundir

    @property
    def baseline(self):
        return self.session.baseline

    @property
    def start_step(self) -> int:
        return 0 if self.checkpoint is None else int(self.checkpoint.step)


def model_dir(G) -> str:
    """The folder of the model file ``G`` was built from (the working directory for text or Python)."""
    path = G.graph.get("path") or "<python>"
    return os.getcwd() if path.startswith("<") else os.path.dirname(os.path.abspath(path))


def model_config(G, overrides: dict | None = None):
    """The training config of a fresh run of ``G``: ``overrides`` over its ``train`` statement over the
    defaults. A data file named in the model resolves against the model's folder, one given in
    ``overrides`` (``--data``) against the working directory; both are stored absolute, so the run's
    metadata works from any directory (``sheaf diagnose RUN``, ``--resume``). With no data named, the
    built-in task that fits the model (:func:`~sheafdsl.training.data.default_data`)."""
    from .config import TrainConfig
    from .data import default_data, resolve_data

    train, over = dict(G.graph.get("train") or {}), dict(overrides or {})
    if over.get("data") is not None:
        over["data"] = resolve_data(over["data"], os.getcwd())
    elif train.get("data") is not None:
        train["data"] = resolve_data(train["data"], model_dir(G))
    else:
        over["data"] = default_data(G)
    return TrainConfig.from_sources(train, over)


def data_fingerprint(spec: str) -> dict:
    """``{"spec": ...}`` plus the file's sha256 when the data set is a file."""
    from .checkpoint import sha256_file
    from .data import TASKS

    out = {"spec": spec}
    if spec not in TASKS and os.path.isfile(spec):
        out["sha256"] = sha256_file(spec)
    return out


def resume_config(ck, overrides: dict, baseline_flag, file: str):
    """The config a resumed run continues with: the saved one, with only :data:`RESUME_FREE` changed (E634)."""
    from .config import TrainConfig

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


def _refuse_consensus(G, file: str) -> None:
    """E590: a consensus problem (objectives, hard edges) has a minimiser to find, not parameters to train."""
    from ..ir import is_consensus, is_learned, objectives, stalks

    if is_learned(G):
        raise SheafError(Diagnostic("E612", f"`{G.graph.get('name', 'sheaf')}` is a learned consensus model: its "
                                    "trainers are unrolled, implicit and local (sheafdsl.training.learned)", file=file,
                                    hint=f"train it with `sheaf train {file}` or sheafdsl.train(...)"))
    if not is_consensus(G):
        return
    spans = [o.span for v in stalks(G) for o in objectives(G, v) if o.span.known]
    raise SheafError(Diagnostic(
        "E590", f"`{G.graph.get('name', 'sheaf')}` states a consensus problem (local objectives and/or hard edges): "
                "it is solved, not trained", spans[0] if spans else Span(), "error",
        f"solve it with `sheaf infer {file} --solver admm` (or `--solver admm-local`, `--solver exact`)", file),
        G.graph.get("source") or None)


#: the options only the joint trainer reads (their flags: --stalk-init, --stalk-reinit)
JOINT_ONLY = {"joint_init": "--stalk-init", "joint_reinit": "--stalk-reinit"}


def _refuse_unfollowed(config, overrides: dict, train: dict, file: str) -> None:
    """E670: an option the trainer would not follow, given with it (a flag or API keyword, or the model's
    own ``train`` statement when that names the trainer): ``lr`` or an optimiser other than sgd with the
    joint trainer, whose weights move by forward Euler with step ``dt``; the joint-only options with
    another trainer; an ``lr_schedule`` other than constant (only a learned model's trainers follow one). The model's ``optimizer`` and ``lr`` under ``--trainer joint`` are the baseline's."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if config.lr_schedule != "constant":  # from a flag or the statement: no network trainer follows it
        raise SheafError(Diagnostic(
            "E670", f"lr_schedule={config.lr_schedule} would not be followed by the `{config.trainer}` trainer: the "
                    "learning-rate schedule is a learned consensus model's (its trainers and its task's baseline)",
            file=file, hint="drop lr_schedule (--lr-schedule); the step size of this trainer is the constant lr"))
    if train.get("trainer") == config.trainer and "trainer" not in given:
        given = {**train, **given}  # the statement that names the trainer names its options too
    if config.trainer == "joint":
        bad = []
        if "lr" in given:
            bad.append(f"--lr {given['lr']:g}")
        if given.get("optimizer", "sgd") != "sgd":
            bad.append(f"--optimizer {given['optimizer']}")
        if bad:
            raise SheafError(Diagnostic(
                "E670", f"{' and '.join(bad)} would not be followed by the `joint` trainer: the joint flow moves its "
                        f"weights by forward Euler, θ ← θ − dt·g, with step dt = {config.dt:g}",
                file=file, hint="drop " + " and ".join(b.split()[0] for b in bad) + "; set the step with dt= in the "
                                "train statement (the model's optimizer and lr train the backprop baseline)"))
        return
    bad = [flag for key, flag in JOINT_ONLY.items() if key in given]
    if bad:
        raise SheafError(Diagnostic(
            "E670", f"{' and '.join(bad)} would not be followed by the `{config.trainer}` trainer: they set where "
                    "the joint flow's stalks start and restart", file=file,
            hint="drop " + " and ".join(bad) + ", or use --trainer joint"))


def start_run(G, *, file: str, overrides: dict | None = None, out=None, resume: bool = False, baseline=None,
              params: dict | None = None, record: bool = True, command: list | None = None,
              checkpoint_every: float | None = None, snapshot_at=None, trainer_factory=None) -> Run:
    """Prepare a run of the IR ``G`` (built from the model text ``G.graph["source"]`` of ``file``).

    ``overrides``: option -> value (None: not given). ``baseline``: True/False, or None for "if the
    trainer is not backprop and the model allows it". ``params``: initial parameters instead of the
    seeded ones (validated). ``record=False`` with ``out=None``: no run directory (in memory).
    ``checkpoint_every``: seconds of wall time between checkpoints (None: the session's default).
    ``snapshot_at``: steps to keep the parameters of (``"1000,20000"`` or a list; :mod:`.snapshots`; E680
    for a step past the last one); a resumed run keeps its recorded steps unless new ones are given.
    ``trainer_factory(G, config, data, params)``: makes the trainer instead of ``make_trainer`` (a sharded
    trainer on Dask workers, :func:`sheafdsl.distributed.sharded_trainer`; the baseline stays in this process).
    """
    from ..lowering import check_params, to_numpy
    from .checkpoint import load_checkpoint, sha256_text, versions
    from .data import dataset_for
    from .run import MetricsLog, RunDir, TrainingSession, atomic_write_text, default_run_dir
    from .trainers import make_trainer

    from .snapshots import check_steps, parse_steps

    _refuse_consensus(G, file)
    overrides = dict(overrides or {})
    snaps = parse_steps(snapshot_at, file=file)
    text = G.graph.get("source") or ""
    model_sha = sha256_text(text)
    notes: list[str] = []
    ck = None
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
        ck.params = check_params(G, ck.params, where=f"checkpoint `{rundir.checkpoint}`", code="E632",
                                 file=str(rundir.checkpoint))
        if overrides.get("data") is not None:  # compared with the run's (absolute) data path
            from .data import resolve_data

            overrides["data"] = resolve_data(overrides["data"], os.getcwd())
        config = resume_config(ck, overrides, baseline, file)
        use_baseline = bool(ck.baseline) and baseline is not False
    else:
        config = model_config(G, overrides)
        use_baseline = (True if baseline is None else baseline) and config.trainer != "backprop"

    _refuse_unfollowed(config, overrides, G.graph.get("train") or {}, file)
    if overrides.get("solver") is not None and config.trainer != "sheaf":
        raise SheafError(Diagnostic(
            "E610", f"--solver {overrides['solver']} has no effect on the `{config.trainer}` trainer: the solver is the "
                    "sheaf trainer's fast phase (the two-sided equilibrium), and "
                    + ("backprop solves no equilibrium" if config.trainer == "backprop" else
                       "the joint flow moves the stalks by its own Euler steps (dt, alpha)"),
            file=file, hint="drop --solver, or use --trainer sheaf"))
    if snapshot_at is None and ck is not None:  # a resumed run goes on with the schedule it was started with
        snaps = tuple(int(s) for s in ck.meta.get("snapshot_at") or () if int(s) <= config.steps)
    snaps = check_steps(snaps, config.steps, file=file)  # before anything is written
    data = dataset_for(G, config)
    fingerprint = data_fingerprint(config.data)
    if ck is not None and (ck.meta.get("data") or {}).get("sha256") != fingerprint.get("sha256"):
        raise SheafError(Diagnostic("E634", f"cannot resume: the data file `{config.data}` changed since the run "
                                            "started",
                                    file=file, hint="resume with the original data, or start a new run"))

    if ck is not None:
        initial = ck.params
    elif params is not None:
        initial = check_params(G, params, file=file)
    else:
        initial = None
    trainer = (trainer_factory or make_trainer)(G, config, data, params=initial)
    if ck is not None:
        trainer.load_state_dict(ck.state)
    trainer.preflight()  # a model the run cannot train fails here, before its run directory is made
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
                notes.append(f"no backprop baseline for this model ({exc.diagnostics[0].message})")

    if ck is None:
        if out is None and not record:
            rundir = None
        else:
            rundir = RunDir(out if out is not None else default_run_dir(G.graph["name"])).create()
            try:
                atomic_write_text(rundir.model, text)
                MetricsLog(rundir.metrics).truncate_after(-1)  # a fresh (empty) log
            except OSError as exc:
                raise write_error("E641", rundir.path, exc, file=file) from None
        data_meta = {**fingerprint, "name": data.name, "task": data.task, "n_train": int(len(data.X_train)),
                     "n_test": int(len(data.X_test))}
        path = G.graph.get("path") or file
        meta = {"model": G.graph["name"], "model_file": file,
                "model_path": os.path.abspath(path) if os.path.exists(path) else path,
                "model_sha256": model_sha, "config": config.to_dict(), "seed": config.seed, "data": data_meta,
                "baseline": "backprop" if base is not None else None, "versions": versions(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command}
        seconds = bseconds = 0.0
    else:
        meta = dict(ck.meta)
        meta.pop("format", None)
        meta["config"] = config.to_dict()
        meta["model_file"] = file
        meta["versions"] = versions()
        meta.setdefault("resumed", []).append({"from_step": ck.step, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        try:
            MetricsLog(rundir.metrics).truncate_after(ck.step)
        except OSError as exc:
            raise write_error("E641", rundir.metrics, exc, file=file) from None
        seconds, bseconds = float(ck.meta.get("seconds") or 0.0), float(ck.meta.get("baseline_seconds") or 0.0)

    if snaps:
        meta["snapshot_at"] = list(snaps)
    timing = {} if checkpoint_every is None else {"checkpoint_every": checkpoint_every}
    session = TrainingSession(rundir, G, trainer, data, meta=meta, baseline=base, log_every=config.log_every,
                              seconds=seconds, baseline_seconds=bseconds, snapshot_at=snaps, **timing)
    return Run(G, config, data, session, file, ck, notes)


def cli_command() -> list | None:
    """``["sheaf", *argv]`` when running as the ``sheaf`` command (recorded in meta.json), else None."""
    return ["sheaf", *sys.argv[1:]] if sys.argv and sys.argv[0].endswith("sheaf") else None


def metric_row(ev: dict, task: str) -> dict:
    """The headline metrics of an evaluation: losses, and test MSE (regression) or test accuracy."""
    out = {"train_loss": ev.get("train_loss"), "test_loss": ev.get("test_loss")}
    if task == "regression":
        out["test_mse"] = ev.get("test_mse")
    else:
        out["test_accuracy"] = ev.get("test_accuracy")
    return out


@dataclass
class Finished:
    """What :func:`finish_run` computed: the result row, the summary, the plots written, the discords."""

    result: dict
    summary: dict
    plots: list
    discords: dict
    evaluation: dict


def finish_run(run: Run, *, plots: bool = True, discords: bool = True, plotter=None) -> Finished:
    """Evaluate the trainer (and the baseline), write ``summary.json`` and the plots; return the result.
    ``plotter``: a :class:`~sheafdsl.training.plots.PlotProcess` started with the run, which renders them."""
    from .run import atomic_write_json, json_number

    session, config, data = run.session, run.config, run.data
    tr, base = session.trainer, session.baseline
    ev = tr.evaluate()
    cf = ev.get("consistent_fraction")
    records = session.metrics.read()
    if cf is None and records:
        cf = records[-1].get("consistent_fraction")
    result = {"trainer": config.trainer, "steps": int(tr.step_count), "seconds": round(session.seconds, 6),
              **{k: json_number(v) for k, v in metric_row(ev, data.task).items()},
              "consistent_fraction": json_number(cf)}
    summary = {"trainer": {**result, "evaluate": {k: json_number(v) if isinstance(v, (int, float)) else v
                                                  for k, v in ev.items()}}}
    if base is not None:
        bev = base.evaluate()
        summary["baseline"] = {"trainer": "backprop", "steps": int(base.step_count),
                               "seconds": round(session.baseline_seconds, 6),
                               **{k: json_number(v) for k, v in metric_row(bev, data.task).items()}}
    plots = plots and session.rundir is not None
    edge = (tr.edge_discords(data.X_train, data.Y_train) if (plots or discords) and session.equilibrium_skipped is None
            else {})
    written = write_plots(run, records, edge, plotter) if plots else []
    summary["plots"] = [p.name for p in written]
    if session.snapshot_at:
        from .snapshots import snapshot_files

        taken = (snapshot_files(session.rundir.path) if session.rundir is not None else session.snapshots)
        result["snapshots"] = summary["snapshots"] = sorted(int(s) for s in taken)
    if session.rundir is not None:
        try:
            atomic_write_json(session.rundir.summary, summary)
        except OSError as exc:
            raise write_error("E641", session.rundir.summary, exc,
                              hint="the checkpoint of the last step is saved; free some space and rerun with --resume "
                                   "to write the summary") from None
    return Finished(result, summary, written, edge, ev)


def write_plots(run: Run, records: list, discords: dict, plotter=None) -> list:
    """loss.png, discord.png and, for 2-D inputs, surface.png or boundary.png in the run directory
    (rendered by ``plotter``, a :class:`~sheafdsl.training.plots.PlotProcess`, when one is given)."""
    from ..lowering import to_numpy
    from . import plots as P
    from .diagnostics import diagnose, predictor

    session, G, data, config = run.session, run.G, run.data, run.config
    rd, name = session.rundir, G.graph["name"]
    loss = LOSS_LABEL.get(data.task, "loss")
    jobs = [functools.partial(P.plot_loss, records, rd.file("loss.png"),
                              title=f"{name}: {config.trainer} trainer vs backprop" if session.baseline is not None
                              else f"{name}: {config.trainer} trainer", main_label=config.trainer,
                              ylabel=f"{loss} (batch)", test_label=f"{loss} (test set)",
                              marks=sorted(session.snapshot_at))]
    if discords:  # none when the equilibrium could not be solved (see TrainingSession.equilibrium_skipped)
        jobs.append(functools.partial(P.plot_discord, diagnose(G, discords), rd.file("discord.png"),
                                      title=f"{name}: equilibrium discord per edge at step {session.trainer.step_count}"))
    if data.n_inputs == 2:
        predict = predictor(G, {k: to_numpy(v) for k, v in session.trainer.params.items()})
        if predict is not None:
            if data.task == "regression" and data.n_outputs == 1:
                jobs.append(functools.partial(P.plot_surface, predict, data, rd.file("surface.png"),
                                              title=f"{name}: learned surface"))
            elif data.task != "regression":
                jobs.append(functools.partial(P.plot_boundary, predict, data, rd.file("boundary.png"), title=f"{name}"))
    return P.write_all(jobs) if plotter is None else plotter.run(jobs)


@dataclass
class SavedRun:
    """A run directory reopened: its IR (from the model saved with it), config, parameters and step."""

    G: object
    config: object
    params: dict
    step: int
    meta: dict
    rundir: object

    def snapshots(self, steps=None) -> dict:
        """step -> :class:`~sheafdsl.training.snapshots.Snapshot` of this run (``steps``: some of them)."""
        from .snapshots import load_snapshots

        return load_snapshots(self.rundir.path, steps)


def load_run(path, *, data: str | None = None) -> SavedRun:
    """Reopen run directory ``path`` (E635 when it is not one); ``data`` overrides the run's data set."""
    from ..frontend import load_text
    from ..ir import from_model
    from ..errors import located
    from ..fileio import read_text
    from ..lowering import check_params
    from .checkpoint import load_checkpoint, sha256_text
    from .config import TrainConfig
    from .data import resolve_data
    from .run import RunDir

    rd = RunDir(path)
    if not rd.has_checkpoint():
        raise SheafError(Diagnostic("E635", f"`{path}` is a directory but not a run directory (no checkpoint.npz)",
                                    hint="pass the --out directory of a `sheaf train` run, or a .sheaf file"))
    ck = load_checkpoint(rd.checkpoint)
    text = read_text(rd.model, code="E635", what="the run's model")
    recorded = ck.meta.get("model_sha256")
    if recorded and recorded != sha256_text(text):
        raise SheafError(Diagnostic(
            "E636", f"`{rd.model}` no longer matches the run's checkpoint (the model text changed after the run "
                    "was saved)", file=str(rd.model),
            hint="restore the model the run was trained on, or diagnose the model file itself"))
    # parsed under the original file's path, so that relative paths (`init "w.npz":W`) resolve as they did
    # in training; its errors are reported against the run's copy, whose text it is
    original = ck.meta.get("model_path") or str(rd.model)
    with located(str(rd.model), {original: str(rd.model)}):
        G = from_model(load_text(text, path=original))
        params = check_params(G, ck.params, where=f"checkpoint `{rd.checkpoint}`", code="E632",
                              file=str(rd.checkpoint))
    saved = dict(ck.meta.get("config") or {})
    if saved.get("data") is not None:  # a run recorded before data paths were stored absolute
        saved["data"] = resolve_data(saved["data"], model_dir(G))
    config = TrainConfig.from_sources(saved, {"data": None if data is None else resolve_data(data, os.getcwd())})
    return SavedRun(G, config, params, int(ck.step), dict(ck.meta), rd)


__all__ = ["RESUME_FREE", "LOSS_LABEL", "Run", "Finished", "SavedRun", "model_dir", "model_config", "data_fingerprint",
           "resume_config",
           "start_run", "cli_command", "metric_row", "finish_run", "write_plots", "load_run"]
