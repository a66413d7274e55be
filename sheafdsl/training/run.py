"""The run directory of ``sheaf train``: layout, atomic writes, and the metrics log.

Layout of a run directory (``--out DIR``, default ``runs/<model>-<YYYYmmdd-HHMMSS>``)::

    DIR/
      checkpoint.npz   parameters (under their own names) + trainer state + metadata; the source of truth
      meta.json        a readable copy of the checkpoint's metadata (config, seed, step, versions, status)
      model.sheaf      the model text the run was started from (resume refuses a different text)
      metrics.jsonl    one JSON object per logged step (see :class:`MetricsLog`)
      summary.json     final numbers of the trainer (and the baseline, if one ran)
      snapshots/       the parameters at the steps of ``--snapshot-at`` (:mod:`.snapshots`), one atomic file each
      loss.png, discord.png, surface.png | boundary.png

Every file except ``metrics.jsonl`` is written atomically: the bytes go to a temporary file in the
same directory, which is flushed and fsync'ed, then ``os.replace``'d over the target, and finally
the directory is fsync'ed. A crash at any moment leaves either the old file or the new one, never a
mixture. ``metrics.jsonl`` is append-only (flushed at each record, fsync'ed before each checkpoint);
a crash can at worst cut its last line short, which :meth:`MetricsLog.read` skips, and a resumed
run drops the records past its checkpoint.

Cadence. Metrics are logged every ``log_every`` steps; the per-edge discord and λ_min (the entries
that cost a solve) on every ``lambda_every``-th step, which :func:`lambda_interval` scales with the
run's length so that a run samples them about :data:`LAMBDA_SAMPLES` times. A checkpoint (five fsyncs: the file, its folder, and
the same for ``meta.json``, plus the metrics log) is taken by wall time: at the first log step at
least ``checkpoint_every`` seconds (default 30) after the previous one, at the last step, and on an
interrupt; plus one at step 0, so that a divergence at step 1 has a checkpoint to go back to. The
steps between two that the loop must see (a log step, a snapshot, the last) run as one stretch
(``trainer.steps(n)``) when the trainers' steps need nothing from the loop (the joint, backprop and
sheaf trainers, ``lazy_loss``): the same steps, without the loop's work around each (a test holds the
two ways to the same bits). A stretch may end early (the sheaf trainer's after about half a second);
the loop then takes and reports the next step itself.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..codes import codes_between
from ..errors import Diagnostic, SheafError
from ..fileio import atomic_write, atomic_write_bytes, atomic_write_text  # noqa: F401 (re-exported)
from ..lowering.params import RUN_CHECKPOINT

#: the codes of the training product (run directory, checkpoints, resume, diagnose, faults): E630–E649
DIAGNOSTICS = codes_between("E630", "E649")

CHECKPOINT = RUN_CHECKPOINT  # one name for the file (lowering.load_params reads it from a run directory)
#: the longest model name kept whole in a default run directory's name
NAME_CHARS = 96
#: written first into every new run directory: a directory holding it (and no checkpoint) is a run that
#: never reached its first checkpoint, and may be started again; any other non-empty directory is refused
MARKER = ".sheaf-run"
META = "meta.json"
MODEL = "model.sheaf"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"

#: about how many edge-discord and λ_min samples a run's metrics hold (see :func:`lambda_interval`)
LAMBDA_SAMPLES = 30
#: default seconds of wall time between two checkpoints
CHECKPOINT_EVERY = 30.0


def lambda_interval(steps: int, log_every: int, samples: int = LAMBDA_SAMPLES) -> int:
    """Steps between two λ_min samples: a multiple of ``log_every``, about ``steps / samples``.

    >>> lambda_interval(3000, 50), lambda_interval(100_000, 50), lambda_interval(40, 10)
    (100, 3350, 10)
    """
    per = max(1, -(-int(steps) // (int(log_every) * samples)))
    return per * int(log_every)


# ----------------------------------------------------------------------------------------------
# atomic writes


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default, allow_nan=True) + "\n")


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def json_number(x):
    """A float for JSON: finite floats as they are, NaN/inf as None (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# ----------------------------------------------------------------------------------------------
# the run directory


def file_stem(model_name: str) -> str:
    """A model's name as the start of a file name: other characters as ``_``, and at most NAME_CHARS
    (a longer name keeps a prefix and a hash of the whole: a file name has at most 255 bytes)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_name) or "model"
    if len(safe) > NAME_CHARS:
        import hashlib

        safe = safe[:NAME_CHARS - 9] + "-" + hashlib.sha256(model_name.encode()).hexdigest()[:8]
    return safe


def default_run_dir(model_name: str, root: str | os.PathLike = "runs", now: float | None = None) -> Path:
    """``runs/<model>-<YYYYmmdd-HHMMSS>``, with ``-2``, ``-3``... appended if that exists already."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    base = Path(root) / f"{file_stem(model_name)}-{stamp}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


class RunDir:
    """A run directory: paths of its files and the checks on creating or reopening one."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # paths
    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def meta(self) -> Path:
        return self.path / META

    @property
    def model(self) -> Path:
        return self.path / MODEL

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY

    def file(self, name: str) -> Path:
        return self.path / name

    def has_checkpoint(self) -> bool:
        return self.checkpoint.is_file()

    @classmethod
    def is_run_dir(cls, path: str | os.PathLike) -> bool:
        return Path(path).is_dir() and (Path(path) / CHECKPOINT).is_file()

    def _error(self, code: str, message: str, hint: str) -> SheafError:
        return SheafError(Diagnostic(code, message, hint=hint, file=str(self.path)))

    def create(self) -> "RunDir":
        """Make the directory for a new run; refuse a path that is a file, already holds a run, or holds
        files that are not a run's (the user's own ``model.sheaf`` or ``summary.json`` is never overwritten)."""
        try:
            os.stat(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:  # a name too long, a loop of links...
            raise self._error("E630", f"cannot use run directory `{self.path}`: {exc.strerror or exc}",
                              "choose another --out") from None
        if self.path.exists() and not self.path.is_dir():
            raise self._error("E630", f"run directory `{self.path}` is a file, not a directory", "choose another --out")
        if self.has_checkpoint():
            raise self._error("E630", f"`{self.path}` already holds a training run (it has {CHECKPOINT})",
                              f"continue it with `--out {self.path} --resume`, or choose another --out")
        try:
            entries = sorted(os.listdir(self.path)) if self.path.is_dir() else []
        except OSError as exc:
            raise self._error("E630", f"cannot read run directory `{self.path}`: {exc.strerror or exc}",
                              "choose another --out") from None
        if entries and MARKER not in entries:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise self._error("E630", f"`{self.path}` already holds files that are not a sheaf run ({shown}); "
                              "nothing was written", "choose a new or empty directory for --out")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path / MARKER, "a sheafdsl run directory\n")
        except OSError as exc:
            raise self._error("E630", f"cannot write to run directory `{self.path}`: {exc.strerror or exc}",
                              "choose another --out") from None
        return self

    def require_checkpoint(self) -> "RunDir":
        """For --resume: the directory must exist and hold a checkpoint."""
        if not self.path.is_dir():
            raise self._error("E631", f"cannot resume: run directory `{self.path}` does not exist",
                              "pass the --out directory of the run to continue")
        if not self.has_checkpoint():
            raise self._error("E631", f"cannot resume: `{self.path}` has no {CHECKPOINT}",
                              "the run never reached its first checkpoint; start it again without --resume")
        return self


# ----------------------------------------------------------------------------------------------
# metrics.jsonl


class MetricsLog:
    """``metrics.jsonl``: one JSON object per logged step, appended and flushed as it is written;
    :meth:`sync` fsyncs it (before each checkpoint).

    A record has at least ``step``; ``sheaf train`` writes ``loss``, ``edge_discord`` (edge -> value)
    and ``lambda_min`` (both on the steps where they are sampled), ``consistent_fraction``, ``elapsed`` (seconds
    in trainer steps so far), ``test_loss`` (and ``test_accuracy`` for a classifier) and, when a
    baseline runs, ``baseline_loss``, ``baseline_test_loss`` (``baseline_test_accuracy``) and
    ``baseline_elapsed``. Non-finite numbers are written as null.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def append(self, record: dict) -> None:
        """Append one line; if the write fails (a full disk), the file is cut back to its previous end."""
        line = (json.dumps(_finite_json(record), default=_json_default, allow_nan=False) + "\n").encode("utf-8")
        with open(self.path, "ab") as fh:
            end = fh.seek(0, os.SEEK_END)
            try:
                fh.write(line)
                fh.flush()
            except OSError:
                try:
                    fh.truncate(end)
                except OSError:
                    pass
                raise

    def sync(self) -> None:
        """fsync the log (what was appended so far survives a crash of the machine)."""
        if self.path.is_file():
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def read(self) -> list[dict]:
        """Every complete record (a line cut short by a crash is skipped)."""
        if not self.path.is_file():
            return []
        out = []
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(rec, dict) and "step" in rec:
                    out.append(rec)
        return out

    def truncate_after(self, step: int) -> list[dict]:
        """Keep only the records with ``step <= step`` (atomically); used when a run resumes."""
        keep = [r for r in self.read() if int(r["step"]) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in keep))
        return keep


class MemoryLog:
    """The metrics of a run without a directory (``sheafdsl.train(..., out=None)``): the records in a list."""

    def __init__(self):
        self.records: list[dict] = []

    def append(self, record: dict) -> None:
        self.records.append(_finite_json(record))

    def sync(self) -> None:
        pass

    def read(self) -> list[dict]:
        return list(self.records)

    def truncate_after(self, step: int) -> list[dict]:
        self.records = [r for r in self.records if int(r["step"]) <= step]
        return self.read()


def _finite_json(obj):
    if isinstance(obj, dict):
        return {k: _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_json(v) for v in obj]
    if isinstance(obj, float) or type(obj).__name__ in ("float64", "float32"):
        return json_number(obj)
    return obj


# ----------------------------------------------------------------------------------------------
# the training loop: steps, logging, checkpoints, faults


@dataclass
class Outcome:
    """How a :meth:`TrainingSession.run` ended.

    ``status`` is "finished", "interrupted" (Ctrl-C; a checkpoint of the last completed step was
    saved unless ``saved`` is False), "diverged" (``error`` says where; nothing was saved after the
    last good checkpoint, at ``checkpoint_step``) or "failed" (a write failed, E641 in ``error``; the
    last good checkpoint is intact).
    """

    status: str
    step: int
    checkpoint_step: int
    saved: bool = True
    error: SheafError | None = None
    last: dict = field(default_factory=dict)
    baseline_last: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    signum: int = signal.SIGINT  # the signal that interrupted the run


class _DeferredInterrupt:
    """SIGINT (Ctrl-C) and SIGTERM (``timeout``, a scheduler's preemption) stop the run promptly: inside
    a solve (:attr:`Trainer.in_solve`, which changes no trainer state) the step is abandoned at once
    (:class:`StepAbandoned`); elsewhere (the update, a checkpoint write: short) the signal becomes a flag
    checked at the end of the step, so a checkpoint is never taken half-way through an update. A second
    signal raises KeyboardInterrupt at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, *trainers):
        self.requested = False
        self.signum: int | None = None
        self._old: dict = {}
        self.trainers = trainers

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        from .trainers import StepAbandoned

        self.requested, self.signum = True, signum
        for t in self.trainers:
            t.stop_requested = True
        if any(getattr(t, "in_solve", False) for t in self.trainers):
            raise StepAbandoned

    def __enter__(self):
        for s in self.SIGNALS:
            try:
                self._old[s] = signal.signal(s, self._handler)
            except ValueError:  # not the main thread: leave the signals alone
                pass
        return self

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)
        for t in self.trainers:
            t.stop_requested = False
        return False


def _test_metrics(trainer) -> dict:
    """The test split's loss and accuracy (classification) of ``trainer``'s current parameters, for the log."""
    ev = trainer.evaluate(("test",))
    return {k: json_number(ev[k]) for k in ("test_loss", "test_accuracy") if k in ev}


def _finite(x) -> bool:
    return x is not None and math.isfinite(float(x))


class TrainingSession:
    """Drive a trainer (and optionally a baseline trainer in lock step) in a run directory.

    Each step calls ``trainer.step()`` (timed: ``seconds`` counts only the time inside trainer steps,
    so logging, checkpoints and the baseline do not inflate it). Every ``log_every`` steps and at
    the last step it appends a metrics record (λ_min on every ``lambda_every``-th step: None scales it
    with the run's length, :func:`lambda_interval`); it saves a checkpoint at step 0, at the first
    log step ``checkpoint_every`` seconds after the previous save, at the last step and on an
    interrupt (the module docstring). Faults:

    - a :class:`~sheafdsl.training.trainers.DivergenceError` (or a non-finite loss or parameter)
      ends the run with status "diverged" and an E640 error naming the step and the edge; the last
      good checkpoint is kept as it was;
    - Ctrl-C (or SIGTERM) ends the run after the step in progress, saves a checkpoint and returns
      "interrupted";
    - a diverging *baseline* is dropped with a warning; the trainer goes on.

    ``meta`` is the run's metadata (config, model hash, ...); ``step``, ``seconds``, ``status`` and
    ``updated`` are filled in at each save. With ``rundir=None`` the run is in memory: metrics go to a
    :class:`MemoryLog`, and nothing is written.
    """

    def __init__(self, rundir: RunDir, G, trainer, data, *, meta: dict, baseline=None, log_every: int = 50,
                 seconds: float = 0.0, baseline_seconds: float = 0.0, discord_rows: int = 512, lambda_k: int = 16,
                 checkpoint_every: float = CHECKPOINT_EVERY, lambda_every: int | None = None, snapshot_at=()):
        self.rundir, self.G, self.trainer, self.data, self.baseline = rundir, G, trainer, data, baseline
        self.meta = dict(meta)
        self.log_every = int(log_every)
        self.seconds, self.baseline_seconds = float(seconds), float(baseline_seconds)
        self.metrics = MetricsLog(rundir.metrics) if rundir is not None else MemoryLog()
        self.X_log = data.X_train[:discord_rows]
        self.Y_log = data.Y_train[:discord_rows]
        self.lambda_k = lambda_k
        self.checkpoint_every = float(checkpoint_every)
        self.lambda_every = lambda_every
        self._saved_at = time.monotonic()
        self.checkpoint_step = int(meta.get("step", -1)) if rundir is not None and rundir.has_checkpoint() else -1
        self.warnings: list[str] = []
        #: why the equilibrium diagnostics (edge discord, λ_min) are not sampled, once a solve was singular
        self.equilibrium_skipped: str | None = None
        #: the steps to keep the parameters of (:mod:`.snapshots`), and the snapshots this session took
        self.snapshot_at = frozenset(int(s) for s in snapshot_at)
        self.snapshots: dict = {}

    # ------------------------------------------------------------------ saving
    def save(self, status: str) -> None:
        """Checkpoint (params + trainer state + metadata, one atomic file), then the meta.json copy."""
        from .checkpoint import save_checkpoint

        step = int(self.trainer.step_count)
        self.meta.update(step=step, seconds=self.seconds, status=status,
                         updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                         baseline_step=None if self.baseline is None else int(self.baseline.step_count),
                         baseline_seconds=None if self.baseline is None else self.baseline_seconds)
        self.metrics.sync()
        if self.rundir is None:  # in memory: the state is the trainer's
            self.checkpoint_step = step
            return
        save_checkpoint(self.rundir.checkpoint, params=self.trainer.params, state=self.trainer.state_dict(),
                        meta=self.meta, baseline=None if self.baseline is None else self.baseline.state_dict())
        atomic_write_json(self.rundir.meta, self.meta)
        self.checkpoint_step = step
        self._saved_at = time.monotonic()

    def take_snapshot(self) -> None:
        """Keep the parameters of the current step (and the baseline's): in ``snapshots/`` of the run
        directory (one atomic file) and in :attr:`snapshots`."""
        from ..lowering import to_numpy
        from .snapshots import Snapshot, save_snapshot, snapshot_dir, snapshot_name

        step = int(self.trainer.step_count)
        params = {k: to_numpy(v).copy() for k, v in self.trainer.params.items()}
        base = None if self.baseline is None else {k: to_numpy(v).copy() for k, v in self.baseline.params.items()}
        meta = {"trainer": self.trainer.name, "baseline": None if base is None else self.baseline.name,
                "seconds": self.seconds, "baseline_seconds": None if base is None else self.baseline_seconds}
        path = None
        if self.rundir is not None:
            path = save_snapshot(snapshot_dir(self.rundir.path) / snapshot_name(step), step=step, params=params,
                                 baseline=base, meta=meta)
        self.snapshots[step] = Snapshot(step, params, base, {"step": step, **meta}, path)

    def checkpoint_due(self) -> bool:
        """Whether ``checkpoint_every`` seconds of wall time have passed since the last save."""
        return time.monotonic() - self._saved_at >= self.checkpoint_every

    def log(self, last: dict, baseline_last: dict | None, steps: int | None = None) -> dict:
        """Append the metrics record of the current step. The two entries that cost a solve each,
        the equilibrium's ``edge_discord`` and ``lambda_min``, are sampled when due: at step 0, every
        ``lambda_every`` steps and at the last step ``steps``."""
        step = int(self.trainer.step_count)
        rec = {"step": step, "loss": json_number(last.get("loss"))}
        every = self.lambda_every or lambda_interval(steps if steps is not None else step, self.log_every)
        if (step % every == 0 or step == steps) and self.equilibrium_skipped is None:
            try:
                discords = self.trainer.edge_discords(self.X_log, self.Y_log)
                rec["edge_discord"] = {k: json_number(v) for k, v in discords.items()}
                rec["lambda_min"] = json_number(self.trainer.lambda_min_sample(self.X_log, k=self.lambda_k))
            except np.linalg.LinAlgError as exc:
                if self.trainer.name == "sheaf":  # its own steps solve the same system: the step reports it
                    raise
                # a trainer that solves nothing (backprop, joint) goes on; only its diagnostics are lost
                self.equilibrium_skipped = str(exc)
                rec.pop("edge_discord", None)
                self.warnings.append(f"the equilibrium diagnostics (edge discord, λ_min) are not sampled: its "
                                     f"linear system is numerically singular ({exc})")
        rec.update(consistent_fraction=json_number(last.get("consistent_fraction")), elapsed=self.seconds)
        rec.update(_test_metrics(self.trainer))
        if baseline_last is not None and self.baseline is not None:
            rec["baseline_loss"] = json_number(baseline_last.get("loss"))
            rec.update({f"baseline_{k}": v for k, v in _test_metrics(self.baseline).items()})
            rec["baseline_elapsed"] = self.baseline_seconds
        self.metrics.append(rec)
        return rec

    # ------------------------------------------------------------------ faults
    def _edges_of_param(self, name: str) -> list[str]:
        from ..ir import edges
        from ..ir.maps import ParamMap

        out = []
        for _, _, e, d in edges(self.G):
            if d.get("bias") == name or any(isinstance(m, ParamMap) and m.param == name
                                             for m in (d["src_map"], d["dst_map"])):
                out.append(e)
        return out

    def _nonfinite_where(self) -> tuple[str | None, str]:
        """(edge, what) for the first non-finite parameter, or for a non-finite edge discord."""
        from ..lowering import to_numpy

        for name, p in self.trainer.params.items():
            if not np.all(np.isfinite(to_numpy(p))):
                edges_ = self._edges_of_param(name)
                return (edges_[0] if edges_ else None), f"parameter `{name}` is not finite"
        try:
            discords = self.trainer.edge_discords(self.X_log, self.Y_log)
        except (SheafError, ValueError, ArithmeticError, np.linalg.LinAlgError):  # a broken state may not solve
            discords = {}
        for e, v in discords.items():
            if not _finite(v):
                return e, f"the discord on edge `{e}` is {v}"
        return None, "the loss is not finite"

    def _diverged(self, step: int, where: str | None, detail: str, message: str | None = None) -> Outcome:
        """Stop: E640 naming the step and the edge; the last good checkpoint stays as it was."""
        cfg = self.meta.get("config", {})
        knob = (f"a smaller dt (it is {cfg['dt']:g}; set it in the train block)" if cfg.get("trainer") == "joint"
                else f"a smaller --lr (it is {cfg['lr']:g})" if cfg.get("lr") else "a smaller --lr")
        kept = ("no run directory (give one to keep checkpoints)" if self.rundir is None else
                f"the last good checkpoint (step {self.checkpoint_step}) is kept in {self.rundir.path}"
                if self.checkpoint_step >= 0 else "no checkpoint had been saved yet")
        if message is None:
            edge = f" on edge `{where}`" if where else ""
            message = f"training diverged at step {step}{edge}: {detail}"
        err = SheafError(Diagnostic("E640", message, file=self.meta.get("model_file", "<input>"),
                                    hint=f"{kept}; try {knob}, or add reluctance (weight decay) to the parameters"))
        self.meta.update(status="diverged", diverged_at=step, diverged_edge=where)
        if self.rundir is not None and (self.rundir.meta.exists() or self.checkpoint_step >= 0):
            try:
                atomic_write_json(self.rundir.meta, self.meta)  # say so in meta.json; the checkpoint stays as it was
            except OSError:
                pass
        return Outcome("diverged", step, self.checkpoint_step, saved=False, error=err, warnings=self.warnings)

    # ------------------------------------------------------------------ the loop
    def run(self, steps: int, on_step=None) -> Outcome:
        """Train until ``trainer.step_count == steps``; ``on_step(step, loss, baseline_loss)`` after each step.

        The trainer is asked for its step's loss (``step(loss=True)``) on the steps that log it, the
        last, and every step when ``on_step`` wants each loss; an ``on_step`` with ``throttled = True``
        (a progress bar) takes None on the other steps; so is the baseline. Only a trainer with
        ``lazy_loss`` (the joint and backprop trainers, whose step needs no loss) is asked; the others
        always report it."""
        from .trainers import DivergenceError, StepAbandoned

        tr, bl = self.trainer, self.baseline
        every_loss = on_step is not None and not getattr(on_step, "throttled", False)
        last: dict = {}
        blast: dict | None = {} if bl is not None else None
        lazy = getattr(tr, "lazy_loss", False)  # its loss is extra work: asked for only when it is read
        # the steps between two that the loop must see (a log step, a snapshot, the last) run in one stretch,
        # when every trainer's step needs nothing from the loop (lazy_loss: joint, backprop, sheaf)
        stretch = lazy and not every_loss and (bl is None or getattr(bl, "lazy_loss", False))
        stretch = stretch and hasattr(tr, "steps") and (bl is None or hasattr(bl, "steps"))
        # overflow on the way to a divergence is detected and reported, not warned about (set once for the loop)
        with _DeferredInterrupt(*(t for t in (tr, bl) if t is not None)) as sigint, \
                np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            try:
                if self.checkpoint_step < 0:  # a fresh run: record the start, so curves begin at the initialisation
                    self.log({"loss": tr.evaluate()["train_loss"]},
                             None if bl is None else {"loss": bl.evaluate()["train_loss"]}, steps)
                    self.save("running")  # step 0: a divergence at step 1 still leaves a checkpoint to go back to
                    if 0 in self.snapshot_at:
                        self.take_snapshot()
                while tr.step_count < steps:
                    quiet = self._next_event(int(tr.step_count), steps) - int(tr.step_count) - 1 if stretch else 0
                    t0 = time.perf_counter()
                    try:
                        if quiet > 0:  # no loss, no logging: only the steps (a signal stops them)
                            tr.steps(quiet)
                        if not sigint.requested:
                            if lazy:
                                nxt = tr.step_count + 1
                                last = tr.step(loss=every_loss or nxt % self.log_every == 0 or nxt == steps)
                            else:
                                last = tr.step()
                    except DivergenceError as exc:
                        self.seconds += time.perf_counter() - t0
                        step = getattr(exc, "step", None)
                        step = tr.step_count + 1 if step is None else int(step)
                        where = getattr(exc, "where", None)
                        msg = "; ".join(d.message for d in exc.diagnostics)
                        if not self._params_finite():  # name the parameter (and its edge) that broke, too
                            pw, pwhat = self._nonfinite_where()
                            if pwhat not in msg:
                                msg += f" ({pwhat}" + (f", on edge `{pw}`" if pw else "") + ")"
                        if f"step {step}" not in msg:
                            msg = f"training diverged at step {step}" + (f" ({where})" if where else "") + f": {msg}"
                        return self._diverged(step, where, "", message=msg)
                    self.seconds += time.perf_counter() - t0
                    step = int(tr.step_count)
                    if last.get("loss") is not None and not _finite(last["loss"]):
                        where, what = self._nonfinite_where()
                        return self._diverged(step, where, what)
                    if bl is not None:  # the baseline catches up: it is at the trainer's step at every event
                        blast = self._baseline_step(every_loss or step % self.log_every == 0 or step == steps,
                                                    step - int(bl.step_count))
                        bl = self.baseline
                        if bl is None:
                            blast = None
                    if on_step is not None:
                        on_step(step, last.get("loss"), None if blast is None else blast.get("loss"))
                    if step in self.snapshot_at:
                        self.take_snapshot()
                    if step % self.log_every == 0 or step == steps:
                        if not self._params_finite():  # never checkpoint a broken state
                            return self._diverged(step, *self._nonfinite_where())
                        self.log(last, blast, steps)
                        if step == steps or self.checkpoint_due():
                            self.save("finished" if step == steps else "running")
                    if sigint.requested:
                        if self.checkpoint_step != step:
                            self.save("interrupted")
                        else:
                            self._mark("interrupted")
                        return Outcome("interrupted", step, self.checkpoint_step, True, None, last, blast or {},
                                       self.warnings, sigint.signum)
            except StepAbandoned:  # a signal inside a solve: nothing changed since the last completed step
                step = int(tr.step_count)
                try:
                    if self.checkpoint_step != step:
                        self.save("interrupted")
                    else:
                        self._mark("interrupted")
                except KeyboardInterrupt:  # a second signal during the save: the atomic write kept the last one
                    self._mark("interrupted")
                    return Outcome("interrupted", step, self.checkpoint_step, False, None, last, blast or {},
                                   self.warnings, sigint.signum)
                except OSError as exc:
                    return self._write_failed(exc)
                return Outcome("interrupted", step, self.checkpoint_step, True, None, last, blast or {},
                               self.warnings, sigint.signum)
            except KeyboardInterrupt:  # a second Ctrl-C, maybe mid-step: the state may be torn; keep the last save
                self._mark("interrupted")
                return Outcome("interrupted", int(tr.step_count), self.checkpoint_step, False, None, last, blast or {},
                               self.warnings)
            except OSError as exc:  # a full disk, a folder made read-only: the atomic writes kept the last checkpoint
                return self._write_failed(exc)
        if self.checkpoint_step != tr.step_count:  # resumed at or past the target: record the final state once
            self.save("finished")
        elif self.meta.get("status") != "finished":
            self._mark("finished")
        return Outcome("finished", int(tr.step_count), self.checkpoint_step, True, None, last, blast or {},
                       self.warnings)

    def _mark(self, status: str) -> None:
        self.meta["status"] = status
        if self.rundir is None:
            return
        try:
            atomic_write_json(self.rundir.meta, self.meta)
        except OSError:  # meta.json is a readable copy; the checkpoint holds the truth
            pass

    def _write_failed(self, exc: OSError) -> Outcome:
        """Stop with E641: which file could not be written and why; the last checkpoint is intact."""
        kept = (f"the last good checkpoint (step {self.checkpoint_step}) is intact"
                if self.checkpoint_step >= 0 else "no checkpoint had been saved yet")
        why = exc.strerror or str(exc)
        err = SheafError(Diagnostic("E641", f"cannot write to the run directory `{self.rundir.path}` at step "
                                            f"{int(self.trainer.step_count)}: {why}",
                                    file=self.meta.get("model_file", "<input>"),
                                    hint=f"{kept}; no half-written file was left. Free some space, then continue "
                                         f"with --resume"))
        return Outcome("failed", int(self.trainer.step_count), self.checkpoint_step, saved=False, error=err,
                       warnings=self.warnings)

    def _params_finite(self) -> bool:
        from ..lowering import to_numpy

        return all(np.all(np.isfinite(to_numpy(p))) for p in self.trainer.params.values())

    def _next_event(self, step: int, steps: int) -> int:
        """The first step after ``step`` that the run loop must see: a log step, a snapshot, or the last."""
        nxt = min(steps, (step // self.log_every + 1) * self.log_every)
        snaps = [s for s in self.snapshot_at if step < s < nxt]
        return min(snaps) if snaps else nxt

    def _baseline_step(self, loss: bool = True, n: int = 1) -> dict | None:
        """``n`` steps of the baseline (its loss, on the last, only when ``loss``, for a baseline with
        ``lazy_loss``); None when it diverged, and it is then dropped with a warning."""
        from .trainers import DivergenceError

        bl = self.baseline
        t0 = time.perf_counter()
        out = {}
        try:  # inside the run loop's np.errstate
            if getattr(bl, "lazy_loss", False):
                if n > 1:
                    bl.steps(n - 1, stop=False)  # to the trainer's step, even after a signal
                out = bl.step(loss=loss) if n > 0 else out
            else:
                for _ in range(n):
                    out = bl.step()
        except DivergenceError as exc:
            out = None
            why = "; ".join(d.message for d in exc.diagnostics)
        else:
            why = f"training diverged at step {self.baseline.step_count}: its loss is not finite"
        self.baseline_seconds += time.perf_counter() - t0
        if out is not None and (out.get("loss") is None or _finite(out["loss"])):  # None: not computed this step
            return out
        self.warnings.append(f"the backprop baseline stopped: {why}; it was dropped and the run goes on without it")
        self.baseline = None
        self.meta["baseline"] = None
        return None


__all__ = ["DIAGNOSTICS", "file_stem", "CHECKPOINT", "LAMBDA_SAMPLES", "CHECKPOINT_EVERY", "lambda_interval", "META", "MODEL", "METRICS", "SUMMARY", "atomic_write", "atomic_write_bytes",
           "atomic_write_text", "atomic_write_json", "json_number", "default_run_dir", "RunDir", "MetricsLog",
           "MemoryLog", "TrainingSession", "Outcome"]
