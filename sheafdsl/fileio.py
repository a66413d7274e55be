"""Files in and out, shared by every layer: atomic writes, and the one safe reader of each format.

Writes (fmt, compile exports, run directories, plots): the bytes go to a temporary file in the
target's folder (so ``os.replace`` is a rename on one file system), are fsync'ed, take the old file's
permission bits (a new file gets ``0o666 & ~umask``, as ``open`` would give it), and then replace the
target; the folder is fsync'ed after. A symbolic link is written through (its target is replaced,
the link stays). If anything fails, the temporary file is removed and the old file is untouched.

Reads: every file the user names (models, ``--input``/``--target``, ``--params``, ``--data``,
``init "f.npz"``, checkpoints) goes through :func:`read_bytes` and the format readers below, which
turn every way a file can be wrong into a :class:`~sheafdsl.errors.SheafError` with the caller's
code: a missing path, a directory, a FIFO with no writer (after :data:`FIFO_WAIT_S`), an endless
device such as ``/dev/zero`` (past the size limit), a truncated or non-zip ``.npz``, an ``.npy``
where an ``.npz`` is expected, non-numeric or complex arrays, non-UTF-8 or ragged CSV, JSON nested
too deeply. ``-`` is standard input; pipes and process substitution (``<(...)``) are read once.
"""

from __future__ import annotations

import io
import json
import math
import os
import select
import stat
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

from .errors import Diagnostic, SheafError, Span

#: the largest text file read (models, CSV, JSON): 50 MiB
MAX_TEXT_BYTES = 50 * 1024 * 1024
#: the largest array file read from a pipe or device (regular files are memory-mapped by numpy)
MAX_STREAM_BYTES = 2 * 1024 ** 3
#: how long a FIFO may wait for a writer before the read gives up
FIFO_WAIT_S = float(os.environ.get("SHEAF_FIFO_WAIT", "5"))
STDIN = "-"

# ----------------------------------------------------------------------------------------------
# writes


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The permission bits ``open(path, "w")`` would give a new file: ``0o666 & ~umask``."""
    return 0o666 & ~_umask()


def atomic_write(path: str | os.PathLike, write) -> None:
    """Write ``path`` atomically: ``write(fileobj)`` fills a binary temporary file that then replaces it."""
    path = Path(path)
    if path.is_symlink():  # write through the link: its target is what the user means
        path = Path(os.path.realpath(path))
    folder = path.parent if str(path.parent) else Path(".")
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        mode = new_file_mode()
    # the temporary name stays short, so a target whose name is near the length limit can be written
    fd, tmp = tempfile.mkstemp(prefix="." + path.name[:32] + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(folder)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_ready(o):
    """A value as plain JSON data: numpy (or cupy) arrays and scalars as Python values, paths as strings,
    NaN and ±inf as None (so ``json.dumps(..., allow_nan=False)`` always succeeds).

    >>> json_ready({"a": float("nan"), "b": (1, 2.5)})
    {'a': None, 'b': [1, 2.5]}
    """
    if isinstance(o, dict):
        return {str(k): json_ready(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_ready(v) for v in o]
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, (str, int, bool)) or o is None:
        return o
    tolist = getattr(o, "tolist", None)  # numpy (or cupy) arrays and scalars
    if callable(tolist):
        return json_ready(tolist())
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_error(code: str, path, exc: OSError, *, file: str | None = None, hint: str | None = None) -> SheafError:
    """A failed write as a diagnostic: what could not be written, and why (``No space left on device``)."""
    why = exc.strerror or str(exc)
    return SheafError(Diagnostic(code, f"cannot write `{path}`: {why}", file=file or str(path),
                                 hint=hint or "free some space or choose a writable location; nothing was left "
                                 "half-written"))


# ----------------------------------------------------------------------------------------------
# reads


def display_name(path: str | os.PathLike) -> str:
    return "<stdin>" if os.fspath(path) == STDIN else os.fspath(path)


def _fail(code: str, path, message: str, hint: str | None = None, span=None, file: str | None = None) -> SheafError:
    kw = {"span": span} if span is not None else {}
    return SheafError(Diagnostic(code, message, hint=hint, file=file or display_name(path), **kw))


def _read_fd(fd: int, limit: int, code: str, path, what: str, *, wait_fifo: bool, size_code: str | None = None) -> bytes:
    """Read an open descriptor to its end, at most ``limit`` bytes (a longer input is an error).

    With ``wait_fifo`` (a FIFO opened non-blocking) it first waits up to :data:`FIFO_WAIT_S` seconds
    for data or for the writer to close; a FIFO nobody writes to is an error, not a hang.
    """
    if wait_fifo:
        ready, _, _ = select.select([fd], [], [], FIFO_WAIT_S)
        if not ready:
            raise _fail(code, path, f"{what} `{display_name(path)}` is a FIFO that nobody writes to "
                        f"(waited {FIFO_WAIT_S:g} s)", "start the writer first, or pass a regular file")
        os.set_blocking(fd, True)
    chunks, total = [], 0
    while True:
        chunk = os.read(fd, min(1 << 20, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise _fail(size_code or code, path, f"{what} `{display_name(path)}` is larger than the limit of {_size(limit)}",
                        "is this the right file? (an endless device such as /dev/zero never ends)")
    return b"".join(chunks)


def _stat(path, *, code: str, what: str, file: str | None) -> os.stat_result:
    """``os.stat``, with a missing or unreachable path as a SheafError."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise _fail(code, path, f"cannot read {what} `{display_name(path)}`: it does not exist", file=file) from None
    except OSError as exc:
        raise _fail(code, path, f"cannot read {what} `{display_name(path)}`: {exc.strerror or exc}", file=file) from None


def read_bytes(path: str | os.PathLike, *, code: str, what: str = "file", limit: int = MAX_TEXT_BYTES,
               file: str | None = None, size_code: str | None = None) -> bytes:
    """The whole content of ``path`` (``-``: standard input), read once, or a SheafError with ``code``.

    A regular file larger than ``limit`` is refused before reading; a pipe or device is read up to
    ``limit`` bytes; a FIFO waits at most :data:`FIFO_WAIT_S` seconds for its writer. ``size_code``
    (default ``code``) is the code of an input over the limit.
    """
    name = display_name(path)
    if os.fspath(path) == STDIN:
        stream = getattr(sys.stdin, "buffer", None)
        if stream is None:
            raise _fail(code, path, f"{what}: there is no standard input to read")
        try:
            fd = stream.fileno()
        except (AttributeError, ValueError, io.UnsupportedOperation):  # an in-memory stdin (tests)
            data = stream.read(limit + 1)
        else:
            data = _read_fd(fd, limit, code, path, what, wait_fifo=False, size_code=size_code)
        if len(data) > limit:
            raise _fail(size_code or code, path, f"{what} on standard input is larger than the limit of {_size(limit)}")
        return data
    st = _stat(path, code=code, what=what, file=file)
    if stat.S_ISDIR(st.st_mode):
        raise _fail(code, path, f"{what} `{name}` is a directory, not a file", file=file)
    if stat.S_ISREG(st.st_mode) and st.st_size > limit:
        raise _fail(size_code or code, path, f"{what} `{name}` is {_size(st.st_size)}; the limit is {_size(limit)}", file=file)
    fifo = stat.S_ISFIFO(st.st_mode)
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_NONBLOCK if fifo else 0))
    except OSError as exc:
        raise _fail(code, path, f"cannot read {what} `{name}`: {exc.strerror or exc}", file=file) from None
    try:
        return _read_fd(fd, limit, code, path, what, wait_fifo=fifo, size_code=size_code)
    except OSError as exc:
        raise _fail(code, path, f"cannot read {what} `{name}`: {exc.strerror or exc}", file=file) from None
    finally:
        os.close(fd)


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def format_size(nbytes: float) -> str:
    """``12.5 GiB``: a byte count for a message."""
    return _size(float(nbytes))


def decode_text(data: bytes, *, code: str, path, what: str = "file", hint: str | None = None,
                file: str | None = None) -> str:
    """UTF-8 text (a byte-order mark, as spreadsheets write it, is dropped), or a SheafError naming the spot."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise _fail(code, path, f"{what} is not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}, "
                    f"column {col})", hint or "save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
                    span=Span(line, col, line, col + 1), file=file) from None


def read_text(path, *, code: str, what: str = "file", limit: int = MAX_TEXT_BYTES) -> str:
    return decode_text(read_bytes(path, code=code, what=what, limit=limit), code=code, path=path, what=what)


# ---------------------------------------------------------------------------------------------- JSON


def _no_constant(name):
    raise ValueError(f"`{name}` is not JSON")


def parse_json(text: str, *, code: str, what: str, hint: str | None = None, file: str = "<command line>"):
    """``json.loads`` with every failure a SheafError: bad syntax, NaN/Infinity, nesting too deep."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        short = text if len(text) <= 80 else text[:77] + "..."
        raise SheafError(Diagnostic(code, f"{what} is not valid JSON: {exc.msg} (line {exc.lineno}, column "
                                          f"{exc.colno}): {short!r}", hint=hint, file=file)) from None
    except ValueError as exc:  # NaN / Infinity
        raise SheafError(Diagnostic(code, f"{what}: {exc}; write finite numbers", hint=hint, file=file)) from None
    except RecursionError:
        raise SheafError(Diagnostic(code, f"{what} is nested too deeply", hint=hint, file=file)) from None


# ---------------------------------------------------------------------------------------------- arrays

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
#: what numpy raises on a damaged array file
_ARRAY_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, NotImplementedError,
                 MemoryError, OverflowError, TypeError)


def real_array(a, *, code: str, path, what: str, file: str | None = None):
    """A real numeric array (bool, integer or float) as float64, or a SheafError: strings, objects and
    complex numbers are refused (a complex value would otherwise lose its imaginary part silently)."""
    import numpy as np

    a = np.asarray(a)
    if a.dtype.kind == "c":
        raise _fail(code, path, f"{what} holds complex numbers (dtype {a.dtype}); only real numbers are accepted",
                    file=file)
    if a.dtype.kind not in "biuf":
        raise _fail(code, path, f"{what} is not numeric (dtype {a.dtype})", "store real numbers (float or int)",
                    file=file)
    return a.astype(float, copy=False)


def _source(path, *, code: str, what: str, file: str | None):
    """A path numpy can open (a regular file) or a BytesIO of a stream's bytes, and its first bytes."""
    name = display_name(path)
    if os.fspath(path) != STDIN:
        st = _stat(path, code=code, what=what, file=file)
        if stat.S_ISREG(st.st_mode):
            try:
                with open(path, "rb") as fh:
                    head = fh.read(8)
            except OSError as exc:
                raise _fail(code, path, f"cannot read {what} `{name}`: {exc.strerror or exc}", file=file) from None
            return os.fspath(path), head
    data = read_bytes(path, code=code, what=what, limit=MAX_STREAM_BYTES, file=file)
    return io.BytesIO(data), data[:8]


def load_npz(path, *, code: str, what: str = "array file", wanted=None, file: str | None = None) -> dict:
    """name -> array of an ``.npz``; ``wanted(name)`` (default: all) picks the entries read.

    Entries are returned as numpy loaded them (validate with :func:`real_array`); every failure —
    missing, a directory, not a zip, truncated, an ``.npy`` instead, pickled objects — is a SheafError.
    """
    import numpy as np

    name = display_name(path)
    src, head = _source(path, code=code, what=what, file=file)
    if head.startswith(NPY_MAGIC):
        raise _fail(code, path, f"{what} `{name}` is an .npy file (one array); an .npz (name -> array) is expected",
                    "save it with numpy.savez(path, NAME=array)", file=file)
    if not head.startswith(ZIP_MAGIC):
        raise _fail(code, path, f"{what} `{name}` is not an .npz file (not a zip archive)",
                    "save it with numpy.savez(path, NAME=array)", file=file)
    try:
        with np.load(src, allow_pickle=False) as z:
            keys = [k for k in z.files if wanted is None or wanted(k)]
            return {k: z[k] for k in keys}
    except _ARRAY_ERRORS as exc:
        why = "it holds Python objects (pickles are not loaded)" if "pickle" in str(exc) else \
            f"it is truncated or damaged ({type(exc).__name__}: {exc})"
        raise _fail(code, path, f"cannot read {what} `{name}`: {why}", file=file) from None


def load_npy(path, *, code: str, what: str = "array file", file: str | None = None):
    """The array of an ``.npy`` file (validate with :func:`real_array`), or a SheafError."""
    import numpy as np

    name = display_name(path)
    src, head = _source(path, code=code, what=what, file=file)
    if head.startswith(ZIP_MAGIC):
        raise _fail(code, path, f"{what} `{name}` is an .npz archive; an .npy (one array) is expected", file=file)
    if not head.startswith(NPY_MAGIC):
        raise _fail(code, path, f"{what} `{name}` is not an .npy file", "save it with numpy.save(path, array)",
                    file=file)
    try:
        a = np.load(src, allow_pickle=False)
    except _ARRAY_ERRORS as exc:
        why = "it holds Python objects (pickles are not loaded)" if "pickle" in str(exc) else \
            f"it is truncated or damaged ({type(exc).__name__}: {exc})"
        raise _fail(code, path, f"cannot read {what} `{name}`: {why}", file=file) from None
    return a


# ---------------------------------------------------------------------------------------------- CSV


def read_csv(path, *, code: str, what: str = "CSV file"):
    """A numeric CSV table as a (rows, columns) float array, or a SheafError at ``file:line:col``.

    Comma separated, UTF-8 (a byte-order mark is fine); blank lines and ``#`` comments are skipped;
    a first line none of whose fields is a number is a header. Every data line must have as many
    fields as the first, each a finite number: an empty field, a word, NaN or infinity is an error
    naming its line and column.
    """
    import numpy as np

    name = display_name(path)
    text = decode_text(read_bytes(path, code=code, what=what), code=code, path=path, what=f"{what} `{name}`")
    rows: list[list[float]] = []
    width = None
    first_line = None
    header_seen = False
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split(",")
        if not rows and not header_seen and all(not _is_number(f) for f in fields):
            header_seen = True
            continue
        if width is None:
            width, first_line = len(fields), lineno
        elif len(fields) != width:
            raise _fail(code, path, f"line {lineno} has {len(fields)} value(s) but line {first_line} has {width}: "
                        "every row needs the same number of columns", span=Span(lineno, 1, lineno, len(line) + 1))
        row, col = [], 1
        for f in fields:
            token = f.strip()
            lead = len(f) - len(f.lstrip())
            where = Span(lineno, col + lead, lineno, col + lead + max(len(token), 1))
            if not token:
                raise _fail(code, path, f"line {lineno}, column {col}: a value is missing", "fill in every field",
                            span=where)
            try:
                x = float(token)
            except ValueError:
                raise _fail(code, path, f"line {lineno}: `{token[:40]}` is not a number", span=where) from None
            if not math.isfinite(x):
                raise _fail(code, path, f"line {lineno}: `{token}` is not a finite number",
                            "remove or fill in the rows with missing (NaN) or infinite values", span=where)
            row.append(x)
            col += len(f) + 1
        rows.append(row)
    if not rows:
        raise _fail(code, path, f"{what} `{name}` has no data rows" + (" (only a header)" if header_seen else
                                                                        " (it is empty)"))
    return np.array(rows, dtype=float)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------- values


def is_stream(path: str) -> bool:
    """A pipe, FIFO or character device (``/dev/stdin``, ``<(...)``): read as a stream of JSON."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)


def load_values(spec: str, *, code: str, what: str, json_code: str | None = None, hint: str | None = None):
    """Numbers given on the command line: inline JSON, or a ``.npy``/``.csv``/``.json`` file (``-``, a
    pipe or ``/dev/stdin``: JSON read from it). Returns the parsed JSON (lists, numbers or a dict) or a float array.

    A file that cannot be read is ``code``; inline JSON that does not parse is ``json_code`` (default
    ``code``).
    """
    text = spec.strip()
    ext = os.path.splitext(text)[1].lower()
    if ext == ".npy":
        return real_array(load_npy(text, code=code, what=f"{what} file"), code=code, path=text,
                          what=f"{what} file `{text}`")
    if ext == ".csv":
        return read_csv(text, code=code, what=f"{what} file")
    if ext == ".json" or text == STDIN or is_stream(text):
        body = read_text(text, code=code, what=f"{what} file")
        return parse_json(body, code=code, what=f"{what} file `{display_name(text)}`", hint=hint,
                          file=display_name(text))
    return parse_json(spec, code=json_code or code, what=what, hint=hint)


__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "write_error", "new_file_mode", "read_bytes",
           "read_text", "decode_text", "parse_json", "real_array", "load_npz", "load_npy", "read_csv",
           "load_values", "format_size", "display_name", "STDIN", "MAX_TEXT_BYTES", "FIFO_WAIT_S"]
