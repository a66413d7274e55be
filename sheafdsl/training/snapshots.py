"""Snapshots: the parameters of a run at chosen steps (``sheaf train --snapshot-at 1000,20000,100000``).

A checkpoint holds the *last* state of a run; a snapshot keeps the parameters θ_s of step s for
good, so a run can be analysed at several stages afterwards (spectra of L_free, discord profiles,
the learned function at step 1000, 20000, 100000). Layout inside the run directory::

    DIR/snapshots/step-000001000.npz    one file per requested step

Each file is written atomically (temporary file in ``snapshots/``, fsync, ``os.replace``) right after
step s completes (after the baseline's step s too, when one runs in lock step); it holds

- ``<param>``: the trainer's parameters under their own names (so a model file can start from one,
  ``init "runs/x/snapshots/step-000001000.npz":W1``, as from a checkpoint);
- ``baseline/<param>``: the baseline's parameters at the same step, when a baseline runs;
- ``__meta__``: JSON ``{"format", "step", "trainer", "baseline", "seconds", "baseline_seconds"}``
  (``seconds``: time inside the trainer's steps up to s).

Step 0 is the initialisation. A run without a directory (``sheafdsl.train(..., out=None)``) keeps its
snapshots in memory (:attr:`sheafdsl.api.Fit.snapshots`). A resumed run continues the same schedule
(the steps are recorded in ``meta.json``); exact resume rewrites a snapshot it redoes with the same
bytes.

>>> parse_steps("1000,20000,100k")
(1000, 20000, 100000)
>>> snapshot_name(1000)
'step-000001000.npz'
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import Diagnostic, SheafError

FORMAT = 1
#: the folder of a run directory that holds the snapshots
SNAPSHOT_DIR = "snapshots"
META_KEY = "__meta__"
BASELINE_PREFIX = "baseline/"
_NAME = re.compile(r"^step-(\d{9,})\.npz$")
_STEP = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")


@dataclass
class Snapshot:
    """The parameters of one step: ``params`` (name -> array), ``baseline`` (the baseline's, or None),
    ``meta`` (step, trainer, seconds...), ``path`` (the file, or None in memory)."""

    step: int
    params: dict
    baseline: dict | None = None
    meta: dict = field(default_factory=dict)
    path: Path | None = None


def parse_steps(value, *, file: str = "<command line>") -> tuple[int, ...]:
    """The sorted distinct steps of ``value``: a comma-separated string (``"1000,20000,100k"``; ``k`` is
    ×1000, ``M`` ×10⁶) or a sequence of whole numbers ≥ 0. Anything else is E680."""
    if value is None:
        return ()
    if isinstance(value, str):
        parts = [p for p in value.split(",")]
        out = []
        for p in parts:
            m = _STEP.match(p)
            if not m:
                raise _bad(f"--snapshot-at: `{p.strip()}` is not a step", file)
            x = float(m.group(1)) * {"": 1, "k": 1000, "K": 1000, "m": 10**6, "M": 10**6}[m.group(2)]
            if x != int(x):
                raise _bad(f"--snapshot-at: `{p.strip()}` is not a whole step", file)
            out.append(int(x))
    else:
        try:
            items = list(value)
        except TypeError:
            raise _bad(f"snapshot_at must be steps (a list of whole numbers or \"1000,20000\"), not {value!r}",
                       file) from None
        out = []
        for x in items:
            if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 0:
                raise _bad(f"snapshot_at: {x!r} is not a whole step >= 0", file)
            out.append(int(x))
    return tuple(sorted(set(out)))


def _bad(message: str, file: str) -> SheafError:
    return SheafError(Diagnostic("E680", message, file=file,
                                 hint="give whole steps >= 0, comma-separated, e.g. --snapshot-at 1000,20000,100k"))


def check_steps(steps: tuple[int, ...], last: int, *, file: str = "<command line>") -> tuple[int, ...]:
    """E680 when a requested step lies past the run's last step ``last`` (it would never be taken)."""
    late = [s for s in steps if s > last]
    if late:
        raise SheafError(Diagnostic(
            "E680", f"--snapshot-at {', '.join(map(str, late))}: past the run's last step {last}, so never taken",
            file=file, hint=f"ask for steps up to {last}, or train longer with --steps"))
    return steps


def snapshot_name(step: int) -> str:
    return f"step-{int(step):09d}.npz"


def snapshot_dir(run_dir) -> Path:
    return Path(run_dir) / SNAPSHOT_DIR


def save_snapshot(path, *, step: int, params: dict, baseline: dict | None = None, meta: dict | None = None) -> Path:
    """Write one snapshot atomically (its folder is made if needed)."""
    from ..fileio import atomic_write
    from .checkpoint import _host

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for k, v in params.items():
        arrays[k] = _host(k, v)
    for k, v in (baseline or {}).items():
        arrays[BASELINE_PREFIX + k] = _host(k, v)
    info = {"format": FORMAT, "step": int(step), **(meta or {})}
    arrays[META_KEY] = np.array(json.dumps(info))
    atomic_write(path, lambda fh: np.savez(fh, **arrays))
    return path


def load_snapshot(path) -> Snapshot:
    """Read one snapshot file; a damaged file or one that is not a snapshot is E681."""
    from ..fileio import load_npz

    path = Path(path)
    arrays = load_npz(path, code="E681", what="snapshot")
    try:
        meta = json.loads(str(arrays.pop(META_KEY)))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("step"), int):
            raise ValueError
    except (KeyError, ValueError, RecursionError):
        raise SheafError(Diagnostic("E681", f"`{path}` is not a sheafdsl snapshot (no readable metadata)",
                                    file=str(path), hint="snapshots are written by `sheaf train --snapshot-at`"))
    params, base = {}, {}
    for k, v in arrays.items():
        if v.dtype.kind not in "biuf":
            raise SheafError(Diagnostic("E681", f"snapshot `{path}`: entry `{k}` is not a real numeric array",
                                        file=str(path)))
        (base if k.startswith(BASELINE_PREFIX) else params)[k.removeprefix(BASELINE_PREFIX)] = v
    return Snapshot(int(meta["step"]), params, base or None, meta, path)


def snapshot_files(run_dir) -> dict[int, Path]:
    """step -> file of every snapshot in run directory ``run_dir`` (none: an empty dict)."""
    folder = snapshot_dir(run_dir)
    if not folder.is_dir():
        return {}
    out = {}
    for name in os.listdir(folder):
        m = _NAME.match(name)
        if m:
            out[int(m.group(1))] = folder / name
    return dict(sorted(out.items()))


def load_snapshots(run_dir, steps=None) -> dict[int, Snapshot]:
    """step -> :class:`Snapshot` of run directory ``run_dir`` (all of them, or the ``steps`` asked for:
    one that was not taken is E681, naming the steps there are)."""
    files = snapshot_files(run_dir)
    if steps is not None:
        want = parse_steps(steps, file=str(run_dir))
        missing = [s for s in want if s not in files]
        if missing:
            have = ", ".join(map(str, files)) or "none"
            raise SheafError(Diagnostic(
                "E681", f"run `{run_dir}` has no snapshot at step {', '.join(map(str, missing))} (it has: {have})",
                file=str(run_dir), hint="snapshots are taken only at the steps given to --snapshot-at"))
        files = {s: files[s] for s in want}
    return {s: load_snapshot(p) for s, p in files.items()}


__all__ = ["SNAPSHOT_DIR", "Snapshot", "parse_steps", "check_steps", "snapshot_name", "snapshot_dir", "save_snapshot",
           "load_snapshot", "snapshot_files", "load_snapshots"]
