"""The run directory of ``sheaf train``: layout, atomic writes, and the metrics log.

Layout of a run directory (``--out DIR``, default ``runs/<model>-<YYYYmmdd-HHMMSS>``)::

    DIR/
      checkpoint.npz   parameters (under their own names) + trainer state + metadata; the source of truth
      meta.json        a readable copy of the checkpoint's metadata (config, seed, step, versions, status)
      model.sheaf      the model text the run was started from (resume refuses a different text)
      metrics.jsonl    one JSON object per logged step (see :class:`MetricsLog`)
      summary.json     final numbers of the trainer (and the baseline, if one ran)
      loss.png, discord.png, surface.png | boundary.png

Every file except ``metrics.jsonl`` is written atomically: the bytes go to a temporary file in the
same directory, which is flushed and fsync'ed, then ``os.replace``'d over the target, and finally
the directory is fsync'ed. A crash at any moment leaves either the old file or the new one, never a
mixture. ``metrics.jsonl`` is append-only; a crash can at worst cut its last line short, which
:meth:`MetricsLog.read` skips.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from pathlib import Path

from ..errors import Diagnostic, SheafError

CHECKPOINT = "checkpoint.npz"
META = "meta.json"
MODEL = "model.sheaf"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"


# ----------------------------------------------------------------------------------------------
# atomic writes


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write) -> None:
    """Write a file atomically: ``write(fileobj)`` fills a temporary file, which then replaces ``path``.

    The temporary file lives in the target's directory (so ``os.replace`` is a rename on one file
    system), is fsync'ed before the rename, and is removed if ``write`` raises; the old ``path``,
    if any, is then untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default, allow_nan=True) + "\n")


def _json_default(o):
    import numpy as np

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


def default_run_dir(model_name: str, root: str | os.PathLike = "runs", now: float | None = None) -> Path:
    """``runs/<model>-<YYYYmmdd-HHMMSS>``, with ``-2``, ``-3``... appended if that exists already."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_name) or "model"
    base = Path(root) / f"{safe}-{stamp}"
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

    def create(self) -> "RunDir":
        """Make the directory for a new run; refuse a path that is a file or already holds a run."""
        if self.path.exists() and not self.path.is_dir():
            raise SheafError(Diagnostic("E630", f"run directory `{self.path}` is a file, not a directory",
                                        hint="choose another --out"))
        if self.has_checkpoint():
            raise SheafError(Diagnostic(
                "E630", f"`{self.path}` already holds a training run (it has {CHECKPOINT})",
                hint=f"continue it with `--out {self.path} --resume`, or choose another --out"))
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.path, prefix=".probe.", delete=True)
            probe.close()
        except OSError as exc:
            raise SheafError(Diagnostic("E630", f"cannot write to run directory `{self.path}`: {exc.strerror or exc}",
                                        hint="choose another --out")) from None
        return self

    def require_checkpoint(self) -> "RunDir":
        """For --resume: the directory must exist and hold a checkpoint."""
        if not self.path.is_dir():
            raise SheafError(Diagnostic("E631", f"cannot resume: run directory `{self.path}` does not exist",
                                        hint="pass the --out directory of the run to continue"))
        if not self.has_checkpoint():
            raise SheafError(Diagnostic("E631", f"cannot resume: `{self.path}` has no {CHECKPOINT}",
                                        hint="the run never reached its first checkpoint; start it again without --resume"))
        return self


# ----------------------------------------------------------------------------------------------
# metrics.jsonl


class MetricsLog:
    """``metrics.jsonl``: one JSON object per logged step, appended and fsync'ed as it is written.

    A record has at least ``step``; ``sheaf train`` writes ``loss``, ``edge_discord`` (edge -> value),
    ``lambda_min``, ``consistent_fraction``, ``elapsed`` (seconds in trainer steps so far) and, when a
    baseline runs, ``baseline_loss``. Non-finite numbers are written as null.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def append(self, record: dict) -> None:
        line = json.dumps(_finite_json(record), default=_json_default, allow_nan=False)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

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


def _finite_json(obj):
    if isinstance(obj, dict):
        return {k: _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_json(v) for v in obj]
    if isinstance(obj, float) or type(obj).__name__ in ("float64", "float32"):
        return json_number(obj)
    return obj


__all__ = ["CHECKPOINT", "META", "MODEL", "METRICS", "SUMMARY", "atomic_write", "atomic_write_bytes",
           "atomic_write_text", "atomic_write_json", "json_number", "default_run_dir", "RunDir", "MetricsLog"]
