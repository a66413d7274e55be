"""Values for the pinned stalks: user input -> boundary dicts, and pin overrides on the IR.

Shared by the CLI (``--input``, ``--target``, ``--pin``) and the Python API (``Sheaf.infer``): the
same validation and the same codes (E520 not numbers, E521 the wrong stalks or sizes, E522 an
unreadable file, E523 a bad pin; ``sheaf spectrum --target``: E533).

A value for the input stalks is one of

- a list of numbers (one example: the input stalks' coordinates in declaration order), a list of
  such lists, or a 2-D array (a batch, one row per example);
- a dict ``{"x": ..., ...}`` naming every input stalk (each a vector, or a (B, d_v) batch);
- text: JSON of the above, or the path of a ``.npy``, ``.csv`` or ``.json`` file.

>>> from sheafdsl.frontend import load_text
>>> from sheafdsl.ir import from_model
>>> G = from_model(load_text("sheaf t\\nnetwork n : 2 -> 3 -> 1\\n"))
>>> b, batch = parse_input([[0.5, -1.0], [0.0, 2.0]], G)
>>> b["x"].shape, batch
((2, 2), True)
>>> apply_pin(G, "y", [0.25]); [p.source for p in G.nodes["y"]["pins"]]
['value']
"""

from __future__ import annotations

import os
import re

import numpy as np

from .errors import Diagnostic, SheafError, did_you_mean
from .fileio import is_stream
from .ir import PinSpec, pinned_stalks, stalks

PIN_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\[\s*([0-9,\s]*)\])?\s*=\s*(.+)$", re.S)
FILE_TYPES = (".npy", ".csv", ".json")
#: where errors in command-line values point
COMMAND_LINE = "<command line>"


def _err(code: str, msg: str, hint: str | None = None, file: str = COMMAND_LINE) -> SheafError:
    return SheafError(Diagnostic(code, msg, hint=hint, file=file))


def parse_json(text: str, what: str, file: str = COMMAND_LINE):
    """JSON text, or E520 saying where it went wrong (NaN, Infinity and nesting too deep included)."""
    from .fileio import parse_json as strict

    return strict(text, code="E520", what=what, hint="write a number or a list, e.g. [0.5, -1.0]", file=file)


def numeric(value, what: str, file: str = COMMAND_LINE) -> np.ndarray:
    """A float array of at most 2 dimensions with finite entries, or E520 (complex numbers are refused)."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "c":
        raise _err("E520", f"{what} holds complex numbers; only real numbers are accepted", file=file)
    try:
        a = np.asarray(value, dtype=float)
    except (TypeError, ValueError, OverflowError):
        raise _err("E520", f"{what} must hold numbers only (a number, a list, or a list of lists)", file=file) from None
    if a.dtype == object or a.ndim > 2:
        raise _err("E520", f"{what} must be a number, a list, or a list of equal-length lists", file=file)
    if not np.all(np.isfinite(a)):
        raise _err("E520", f"{what} holds NaN or infinite values", file=file)
    return a


def read_values(path: str, code: str = "E522", file: str = COMMAND_LINE):
    """The contents of a ``.npy``, ``.csv`` (a header row is skipped) or ``.json`` file (``-``: JSON on
    standard input), read by :mod:`sheafdsl.fileio` (every way the file can be wrong is ``code``)."""
    from .fileio import load_values

    ext = os.path.splitext(path)[1].lower()
    if ext not in FILE_TYPES and path != "-" and not is_stream(path):
        raise _err(code, f"unsupported input file `{path}`", "use .npy, .csv or .json (or inline JSON)", file)
    return load_values(path, code=code, what="input")


def _raw(value, what: str, file: str):
    """Text is JSON or a file path (``-``: standard input); anything else is taken as it is."""
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value).strip()
        if os.path.splitext(text)[1].lower() in FILE_TYPES or text == "-" or is_stream(text):
            return read_values(text, file=file)
        return parse_json(text, what, file)
    return value


def parse_input(value, G, *, what: str = "--input", file: str = COMMAND_LINE) -> tuple[dict, bool]:
    """The boundary dict {input stalk: (B, d)} from ``value``, and whether it was a batch."""
    names = pinned_stalks(G, "input")
    dims = {v: G.nodes[v]["dim"] for v in names}
    total = sum(dims.values())
    raw = _raw(value, what, file)
    if isinstance(raw, dict):
        unknown = [k for k in raw if k not in dims]
        if unknown:
            raise _err("E521", f"{what} names `{unknown[0]}`, which is not an input stalk",
                       did_you_mean(str(unknown[0]), dims) or "input stalks: " + (", ".join(names) or "none"), file)
        out, batch = {}, False
        for v in names:
            if v not in raw:
                raise _err("E521", f"{what} gives no value for the input stalk `{v}`", file=file)
            a = numeric(raw[v], f"{what} `{v}`", file)
            batch |= a.ndim == 2
            a = np.atleast_2d(a)
            if a.shape[1] != dims[v]:
                raise _err("E521", f"input stalk `{v}` has dimension {dims[v]}, got {a.shape[1]} value(s) per example",
                           file=file)
            out[v] = a
        sizes = {a.shape[0] for a in out.values()}
        if len(sizes) > 1:
            raise _err("E521", f"{what} stalks disagree on the batch size: {sorted(sizes)}", file=file)
        if 0 in sizes:
            raise _err("E521", f"{what} is an empty batch", file=file)
        return out, batch
    a = numeric(raw, what, file)
    batch = a.ndim == 2
    a = np.atleast_2d(a) if a.ndim else a.reshape(1, 1)
    if a.shape[1] != total:
        where = " + ".join(f"{v}: {d}" for v, d in dims.items()) or "no input stalks"
        raise _err("E521", f"{what} gives {a.shape[1]} value(s) per example but the input stalks take {total} "
                   f"({where})", "list the coordinates of the input stalks in declaration order", file)
    if a.shape[0] == 0:
        raise _err("E521", f"{what} is an empty batch", file=file)
    out, k = {}, 0
    for v in names:
        out[v] = a[:, k:k + dims[v]]
        k += dims[v]
    return out, batch


def input_boundary(value, G, *, what: str = "--input", file: str = COMMAND_LINE) -> tuple[dict, bool]:
    """:func:`parse_input`, or ``({}, False)`` for a model without input stalks and no value; E521 when
    the model has input stalks and no value was given, or a value was given and it has none."""
    names = pinned_stalks(G, "input")
    if names and value is None:
        dims = sum(G.nodes[v]["dim"] for v in names)
        raise _err("E521", "this model has input stalk" + "s" * (len(names) > 1) + " " + ", ".join(f"`{v}`" for v in names)
                   + "; give " + ("their values" if len(names) > 1 else "its value") + f" with {what}",
                   f"e.g. {what} '[" + ", ".join(["0.0"] * dims) + "]'" if what.startswith("--") else None, file)
    if value is not None and not names:
        raise _err("E521", f"{what} was given but no stalk is pinned to input", file=file)
    return parse_input(value, G, what=what, file=file) if value is not None else ({}, False)


def parse_target(value, G, batch: int, *, what: str = "--target", file: str = COMMAND_LINE) -> dict:
    """{target stalk: (B, d)}: the target stalks' coordinates in declaration order, one row per example or
    one row for all (it broadcasts); text is JSON or a ``.npy``/``.csv``/``.json`` path. Errors are E533."""
    names = pinned_stalks(G, "target")
    if not names:
        raise _err("E533", f"{what} was given but no stalk of this model is pinned to target", file=file)
    dims = [G.nodes[v]["dim"] for v in names]
    try:
        a = np.asarray(_raw(value, what, file), dtype=float)
    except SheafError as exc:
        raise _err("E533", f"cannot read {what}: {exc.diagnostics[0].message}", "a JSON list such as [0.5], a list "
                   "of lists, or a .npy/.csv file", file) from None
    except (TypeError, ValueError) as exc:
        raise _err("E533", f"cannot read {what}: {exc}", "a JSON list such as [0.5], a list of lists, or a "
                   ".npy/.csv file", file) from None
    if a.ndim > 2 or not np.all(np.isfinite(a)):
        raise _err("E533", f"{what} must be a list of numbers or a list of equal-length lists of finite numbers",
                   file=file)
    a = a.reshape(1, -1) if a.ndim < 2 else a
    if a.shape[1] != sum(dims) or a.shape[0] not in (1, batch):
        raise _err("E533", f"{what} has shape {a.shape}; expected ({batch}, {sum(dims)}) or (1, {sum(dims)}) for "
                   "the target stalks " + ", ".join(f"{v}: {d}" for v, d in zip(names, dims)), file=file)
    a = np.broadcast_to(a, (batch, a.shape[1]))
    out, k = {}, 0
    for v, d in zip(names, dims):
        out[v] = np.ascontiguousarray(a[:, k:k + d])
        k += d
    return out


def parse_pin(spec: str, file: str = COMMAND_LINE) -> tuple[str, tuple[int, ...] | None, object]:
    """``NAME=JSON`` or ``NAME[i,j]=JSON`` -> (name, indices or None, value)."""
    m = PIN_RE.match(spec)
    if not m:
        raise _err("E523", f"--pin `{spec}` is not NAME=JSON or NAME[i,j]=JSON", "e.g. --pin y=[0.25] or --pin z1[3]=0",
                   file)
    name, idx_text, val_text = m.group(1), m.group(2), m.group(3)
    idx = None
    if idx_text is not None:
        try:
            idx = tuple(int(t) for t in idx_text.replace(" ", "").split(",") if t != "")
        except ValueError:
            raise _err("E523", f"--pin `{spec}`: bad index list", file=file) from None
        if not idx:
            raise _err("E523", f"--pin `{spec}`: the index list is empty", file=file)
    return name, idx, parse_json(val_text, f"--pin {name}", file)


def apply_pin(G, name: str, value, indices=None, *, file: str = COMMAND_LINE) -> None:
    """Hard-pin stalk ``name`` (or its coordinates ``indices``) to the constant ``value``, editing G in place.

    A new pin replaces the constant pins it overlaps (their other coordinates stay pinned); a stalk
    pinned to input or target can be overridden only as a whole. Errors are E523.
    """
    label = f"--pin {name}" if file == COMMAND_LINE else f"pin `{name}`"
    if not isinstance(name, str) or name not in G or G.nodes[name].get("anchor"):
        raise _err("E523", f"{label}: `{name}` is not a stalk",
                   did_you_mean(str(name), [v for v in stalks(G) if not G.nodes[v].get("anchor")]), file)
    dim = G.nodes[name]["dim"]
    if indices is not None:
        try:
            idx = tuple(int(i) for i in indices)
        except (TypeError, ValueError):
            raise _err("E523", f"{label}: indices must be whole numbers", file=file) from None
        if not idx or len(set(idx)) != len(idx) or any(i < 0 or i >= dim for i in idx):
            raise _err("E523", f"{label}{list(idx)}: indices must be distinct and in 0..{dim - 1}", file=file)
    else:
        idx = None
    n = dim if idx is None else len(idx)
    val = numeric(value, label, file)
    if val.ndim > 1 or (val.ndim == 1 and val.shape[0] != n):
        raise _err("E523", f"{label}{'' if idx is None else list(idx)} takes {n} value(s), got "
                   f"{val.size if val.ndim else 1}", f"write a number or a list of {n} numbers", file)
    val = np.broadcast_to(val, (n,)).astype(float)
    covered = set(range(dim)) if idx is None else set(idx)
    kept = []
    for p in G.nodes[name]["pins"]:
        p_idx = tuple(range(dim)) if p.indices is None else p.indices
        if not covered & set(p_idx):
            kept.append(p)
        elif p.source != "value":
            if idx is not None:
                raise _err("E523", f"{label}[...]: `{name}` is pinned to {p.source}; pin the whole stalk to "
                           "override it", f"--pin {name}=[...]", file)
        else:  # keep the coordinates of a constant pin that this one does not cover
            rest = [(i, v) for i, v in zip(p_idx, p.value) if i not in covered]
            if rest:
                kept.append(PinSpec("value", tuple(i for i, _ in rest), np.array([v for _, v in rest])))
    kept.append(PinSpec("value", idx, val))
    G.nodes[name]["pins"] = kept


__all__ = ["COMMAND_LINE", "parse_json", "numeric", "read_values", "parse_input", "input_boundary", "parse_target", "parse_pin",
           "apply_pin"]
