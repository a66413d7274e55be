"""The adversary's corpus: every way a file, a value, a signal or a full disk can go wrong.

Each case runs one ``sheaf`` command (in-process, or as a subprocess where a pipe, a FIFO or a
signal is part of the case) and asserts

- the exit code: 1 for a mistake in the input, 0 where the input is valid, 130 for Ctrl-C;
- a clear message (the expected code or words) and never a traceback or "internal error";
- what must not happen: half-written files, a user's file overwritten, a checkpoint lost.

The kinds follow issue 15's list ("Mishandled today, by kind"); ``KINDS`` maps each kind to its
cases, and a test fails if a kind has none.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sheafdsl.cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
#: the shipped [2, 2, 1] network with literal weights, with a short train block
TINY = (ROOT / "models" / "tiny.sheaf").read_text(encoding="utf-8") + \
    "train data=paraboloid n=20 n_test=5 steps=2 log_every=1 seed=0\n"
#: the same network with W1 from an initialiser file `w.npz` (its other parameters initialised)
W1_LITERAL = "= [[1, -0.5],\n                     [0.25, 2]]"
INIT = TINY.replace("sheaf tiny", "sheaf fromfile").replace(W1_LITERAL, 'init "w.npz":W1')


def line_of(text: str, needle: str) -> int:
    """The 1-based line of ``needle`` in ``text`` (for the expected ``file:line:`` of a diagnostic)."""
    return text[: text.index(needle)].count("\n") + 1


INIT_LINE = f"m.sheaf:{line_of(INIT, 'param W1')}:"
# the edits the cases make to TINY must find what they replace
assert all(s in TINY for s in ("stalk x  : 2", "[[1.5, -1]]", "[0.1, -0.2]", W1_LITERAL))

#: a network of 500 hidden ReLU layers of width 4 (its L_free at He initialisation has κ ≳ 1e80)
DEEP500 = ("sheaf deep\nnetwork n : 2 -> " + " -> ".join(["4"] * 500) + " -> 1 relu output identity weight 1\n"
           "pin x = input\npin y = target\n")
INFER = ["infer", "tiny.sheaf", "--input"]
TRAIN = ["train", "tiny.sheaf", "--no-plots", "--no-baseline"]
SUBPROCESS = [sys.executable, "-c", "from sheafdsl.cli.main import main; main()"]

# ----------------------------------------------------------------------------------------------
# building the files of a case


def write(path, text: str | bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def npz_bytes(**arrays) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def npy_bytes(a) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.asarray(a))
    return buf.getvalue()


def csv_data(n=30, seed=0, header="x1,x2,y") -> str:
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, (n, 2))
    y = X[:, 0] ** 2 + X[:, 1] ** 2
    return (header + "\n" if header else "") + "".join(f"{a:.6f},{b:.6f},{c:.6f}\n" for (a, b), c in zip(X, y))


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def tiny_run(tmp: Path, name="run") -> Path:
    """A copy of the shared two-step run of the tiny model (see the fixture)."""
    dst = tmp / name
    shutil.copytree(_RUN["path"], dst)
    return dst


_RUN: dict = {}


@pytest.fixture(scope="module", autouse=True)
def shared_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("shared")
    write(base / "tiny.sheaf", TINY)
    old = os.getcwd()
    os.chdir(base)
    try:
        res = CliRunner().invoke(cli, [*TRAIN, "--out", "run"], catch_exceptions=True)
    finally:
        os.chdir(old)
    assert res.exit_code == 0, res.output
    _RUN["path"] = base / "run"
    yield


# ----------------------------------------------------------------------------------------------
# the cases


@dataclass
class Case:
    id: str
    kind: str
    setup: object  # (tmp: Path) -> argv (list) ; may write files
    code: int = 1
    expect: tuple = ()  # substrings of the output (any case)
    forbid: tuple = ()  # substrings that must not be in the output
    after: object = None  # (tmp: Path, output: str) -> None
    env: dict = field(default_factory=dict)
    subprocess: bool = False
    stdin: bytes | None = None
    timeout: float = 60.0


def _files(tmp, **files):
    for name, content in files.items():
        write(tmp / name.replace("__", "/"), content)


def case_files(argv, **files):
    def setup(tmp):
        write(tmp / "tiny.sheaf", TINY)
        _files(tmp, **files)
        return [a.format(tmp=tmp) for a in argv]
    return setup


def no_tmp_files(tmp, _out=""):
    left = [p for p in Path(tmp).rglob("*") if p.name.endswith(".tmp")]
    assert not left, f"half-written files left: {left}"


def checkpoint_step(run: Path) -> int:
    from sheafdsl.training.checkpoint import load_checkpoint

    return load_checkpoint(run / "checkpoint.npz").step


CASES: list[Case] = []


def add(*cases):
    CASES.extend(cases)


W1 = np.array([[1.0, -0.5], [0.25, 2.0]])

# -------- internal errors instead of a diagnostic
add(
    Case("params-truncated-npz", "internal", case_files([*INFER, "[0.5, 0.5]", "--params", "p.npz"],
                                                        **{"p.npz": truncated(npz_bytes(W1=W1, b1=np.zeros(2)))}),
         expect=("E524", "p.npz")),
    Case("params-not-zip", "internal", case_files([*INFER, "[0.5, 0.5]", "--params", "p.npz"],
                                                  **{"p.npz": "W1 = 1\n"}), expect=("E524", "not an .npz")),
    Case("params-npy-for-npz", "internal", case_files([*INFER, "[0.5, 0.5]", "--params", "p.npz"],
                                                      **{"p.npz": npy_bytes(W1)}), expect=("E524", ".npy")),
    Case("params-directory", "internal", lambda tmp: (write(tmp / "tiny.sheaf", TINY), (tmp / "p.npz").mkdir(),
                                                      [*INFER, "[0.5, 0.5]", "--params", "p.npz"])[-1],
         expect=("E524", "directory")),
    Case("params-string-array", "internal", case_files(
        [*INFER, "[0.5, 0.5]", "--params", "p.npz"],
        **{"p.npz": npz_bytes(W1=np.array([["a", "b"], ["c", "d"]]), b1=np.zeros(2), W2=np.ones((1, 2)),
                              b2=np.zeros(1))}), expect=("E524",)),
    Case("params-wrong-shape", "internal", case_files(
        [*INFER, "[0.5, 0.5]", "--params", "p.npz"],
        **{"p.npz": npz_bytes(W1=np.ones((3, 3)), b1=np.zeros(2), W2=np.ones((1, 2)), b2=np.zeros(1))}),
         expect=("E524", "shape")),
    Case("data-truncated-npz", "internal", case_files([*TRAIN, "--data", "d.npz", "--out", "r"],
                                                      **{"d.npz": truncated(npz_bytes(X=np.ones((30, 2)),
                                                                                      y=np.ones(30)))}),
         expect=("E601", "d.npz"), after=lambda tmp, out: (no_tmp_files(tmp), _no_run(tmp / "r"))),
    Case("data-npy-for-npz", "internal", case_files([*TRAIN, "--data", "d.npz", "--out", "r"],
                                                    **{"d.npz": npy_bytes(np.ones((30, 3)))}),
         expect=("E601", ".npy")),
    Case("data-object-npz", "internal", lambda tmp: (write(tmp / "tiny.sheaf", TINY), np.savez(
        tmp / "d.npz", X=np.array([{"a": 1}] * 30, dtype=object), y=np.ones(30)),
        [*TRAIN, "--data", "d.npz", "--out", "r"])[-1], expect=("E601",)),
    Case("data-string-npz", "internal", case_files([*TRAIN, "--data", "d.npz", "--out", "r"],
                                                   **{"d.npz": npz_bytes(X=np.array([["a", "b"]] * 30),
                                                                         y=np.ones(30))}), expect=("E601",)),
    Case("init-truncated-npz", "internal", lambda tmp: (write(tmp / "m.sheaf", INIT),
                                                        write(tmp / "w.npz", truncated(npz_bytes(W1=W1))),
                                                        ["infer", "m.sheaf", "--input", "[0, 0]"])[-1],
         expect=("E236", INIT_LINE)),
    Case("init-npy-for-npz", "internal", lambda tmp: (write(tmp / "m.sheaf", INIT), write(tmp / "w.npz", npy_bytes(W1)),
                                                      ["verify", "m.sheaf"])[-1], expect=("E236", INIT_LINE)),
    Case("init-string-array", "internal", lambda tmp: (
        write(tmp / "m.sheaf", INIT), write(tmp / "w.npz", npz_bytes(W1=np.array([["a", "b"], ["c", "d"]]))),
        ["infer", "m.sheaf", "--input", "[0, 0]"])[-1], expect=("E236", INIT_LINE, "not numeric")),
    Case("init-complex", "internal", lambda tmp: (
        write(tmp / "m.sheaf", INIT), write(tmp / "w.npz", npz_bytes(W1=W1 + 1j)),
        ["spectrum", "m.sheaf"])[-1], expect=("E236", "complex")),
    Case("checkpoint-truncated", "internal", lambda tmp: (
        write(tmp / "tiny.sheaf", TINY), tiny_run(tmp),
        write(tmp / "run/checkpoint.npz", truncated((tmp / "run/checkpoint.npz").read_bytes())),
        ["diagnose", "run", "--no-plot"])[-1], expect=("E632",)),
    Case("checkpoint-not-zip-resume", "internal", lambda tmp: (
        write(tmp / "tiny.sheaf", TINY), tiny_run(tmp), write(tmp / "run/checkpoint.npz", b"not a zip at all"),
        [*TRAIN, "--out", "run", "--resume", "--steps", "4"])[-1], expect=("E632",)),
    Case("checkpoint-npy", "internal", lambda tmp: (
        write(tmp / "tiny.sheaf", TINY), tiny_run(tmp), write(tmp / "run/checkpoint.npz", npy_bytes(W1)),
        ["diagnose", "run", "--no-plot"])[-1], expect=("E632", ".npy")),
    Case("checkpoint-bad-meta", "internal", lambda tmp: (
        write(tmp / "tiny.sheaf", TINY), tiny_run(tmp),
        write(tmp / "run/checkpoint.npz", npz_bytes(W1=W1, __meta__=np.array("[" * 100000))),
        ["diagnose", "run", "--no-plot"])[-1], expect=("E632",)),
    Case("checkpoint-wrong-shapes", "internal", lambda tmp: (
        write(tmp / "tiny.sheaf", TINY), tiny_run(tmp), _reshape_checkpoint(tmp / "run"),
        ["diagnose", "run", "--no-plot"])[-1], expect=("E632", "shape")),
    Case("checkpoint-wrong-shapes-resume", "internal", lambda tmp: (
        write(tmp / "tiny.sheaf", TINY), tiny_run(tmp), _reshape_checkpoint(tmp / "run"),
        [*TRAIN, "--out", "run", "--resume", "--steps", "4"])[-1], expect=("E632", "shape")),
    Case("checkpoint-wrong-state-shapes-resume", "internal", lambda tmp: (
        write(tmp / "tiny.sheaf", TINY), tiny_run(tmp), _reshape_checkpoint(tmp / "run", state=True),
        [*TRAIN, "--out", "run", "--resume", "--steps", "4"])[-1], expect=("E611",)),
    Case("diagnose-model-changed", "internal", lambda tmp: (
        write(tmp / "tiny.sheaf", TINY), tiny_run(tmp),
        write(tmp / "run/model.sheaf", TINY.replace("[0.1, -0.2]", "[0.3, -0.2]")),
        ["diagnose", "run", "--no-plot"])[-1], expect=("E636", "model.sheaf")),
    Case("input-deep-json", "internal", case_files([*INFER, "[" * 100000 + "]" * 100000]), expect=("E520", "deep")),
    Case("input-deep-json-file", "internal", case_files([*INFER, "in.json"], **{"in.json": "[" * 100000 + "]" * 100000}),
         expect=("E522",)),
    Case("target-deep-json", "internal", case_files(["spectrum", "tiny.sheaf", "--input", "[0, 0]", "--target",
                                                     "[" * 100000 + "]" * 100000]), expect=("E533",)),
    Case("model-dev-zero", "internal", lambda tmp: ["check", "/dev/zero"], expect=("E103", "limit"), subprocess=True,
         timeout=30),
    Case("input-dev-zero-json", "internal", lambda tmp: (write(tmp / "tiny.sheaf", TINY),
                                                         os.symlink("/dev/zero", tmp / "z.json"),
                                                         [*INFER, "z.json"])[-1], expect=("E522", "limit"),
         subprocess=True, timeout=30),
    Case("seed-negative-infer", "internal", case_files([*INFER, "[0, 0]", "--seed", "-1"]), expect=("E527",)),
    Case("seed-negative-verify", "internal", case_files(["verify", "tiny.sheaf", "--seed", "-3"]), expect=("E527",)),
    Case("seed-negative-spectrum", "internal", case_files(["spectrum", "tiny.sheaf", "--seed", "-1"]),
         expect=("E527",)),
    Case("seed-negative-train", "internal", case_files([*TRAIN, "--seed", "-1", "--out", "r"]), expect=("E527",),
         after=lambda tmp, out: _no_run(tmp / "r")),
    Case("n-huge", "internal", case_files([*TRAIN, "--n", str(10 ** 12), "--out", "r"]), expect=("`n`",),
         after=lambda tmp, out: _no_run(tmp / "r"), subprocess=True),
    Case("n-large-batch", "internal", case_files([*TRAIN, "--n", str(10 ** 8), "--out", "r"]),
         expect=("E540", "would need"), after=lambda tmp, out: _no_run(tmp / "r"), subprocess=True),
    Case("model-name-too-long", "internal", lambda tmp: (
        write(tmp / "long.sheaf", TINY.replace("sheaf tiny", "sheaf " + "n" * 400)),
        ["train", "long.sheaf", "--no-plots", "--no-baseline", "--steps", "1"])[-1], code=0,
         after=lambda tmp, out: _one_run_under(tmp / "runs")),
    Case("model-name-too-long-diagnose", "internal", lambda tmp: (
        write(tmp / "long.sheaf", TINY.replace("sheaf tiny", "sheaf " + "n" * 400)), ["diagnose", "long.sheaf"])[-1],
         code=0, after=lambda tmp, out: _assert(len(list((tmp / "runs").glob("*-diagnose.png"))) == 1)),
    Case("out-name-too-long", "internal", case_files([*TRAIN, "--out", "o" * 300]), expect=("E630",)),
    Case("csv-latin1-input", "internal", case_files([*INFER, "in.csv"], **{"in.csv": "x1,x2\n0.5,0.25\n".encode()
                                                                         .replace(b"x1", b"\xe91")}),
         expect=("E522", "UTF-8", "in.csv:1:")),
    Case("csv-latin1-data", "internal", case_files([*TRAIN, "--data", "d.csv", "--out", "r"],
                                                   **{"d.csv": csv_data(header="\xe9x1,x2,y").encode("latin-1")}),
         expect=("E601", "UTF-8")),
    Case("csv-directory-input", "internal", lambda tmp: (write(tmp / "tiny.sheaf", TINY), (tmp / "in.csv").mkdir(),
                                                         [*INFER, "in.csv"])[-1], expect=("E522", "directory")),
    Case("csv-directory-data", "internal", lambda tmp: (write(tmp / "tiny.sheaf", TINY), (tmp / "d.csv").mkdir(),
                                                        [*TRAIN, "--data", "d.csv", "--out", "r"])[-1],
         expect=("E601", "directory")),
    Case("spectrum-huge-weights", "internal", lambda tmp: (
        write(tmp / "h.sheaf", TINY.replace("[[1.5, -1]]", "[[1e200, -1e200]]")), ["spectrum", "h.sheaf"])[-1],
         expect=("E534",)),
    Case("spectrum-huge-weights-json", "internal", lambda tmp: (
        write(tmp / "h.sheaf", TINY.replace("[[1.5, -1]]", "[[1e200, -1e200]]")), ["spectrum", "h.sheaf", "--json"])[-1],
         expect=("E534",), after=lambda tmp, out: _strict_json(out)),
)

# -------- scale: bounded time, or the cost said up front
add(
    Case("spectrum-samples-huge", "scale", case_files(["spectrum", "tiny.sheaf", "--samples", "1000000000"]),
         expect=("E541", "would"), subprocess=True),
    Case("spectrum-wide-layer", "scale", lambda tmp: (
        write(tmp / "w.sheaf", "sheaf wide\nnetwork n : 2 -> 4000 -> 1\npin x = input\npin y = target\n"),
        ["spectrum", "w.sheaf", "--samples", "10", "--json"])[-1], code=0, timeout=60, subprocess=True,
         after=lambda tmp, out: _strict_json(out)),
    Case("verify-samples-huge", "scale", lambda tmp: ["verify", str(ROOT / "models" / "paraboloid.sheaf"), "--samples",
                                                       "1000000000", "--symbolic-limit", "0"],
         expect=("E652", "would take"), subprocess=True, timeout=60),
    Case("verify-deep-network", "scale", lambda tmp: (write(tmp / "d.sheaf", "sheaf deep\nnetwork n : 2 -> " + " -> ".join(
        ["3"] * 200) + " -> 1\npin x = input\npin y = target\n"), ["verify", "d.sheaf"])[-1], code=0,
         expect=("sparse eigensolver", "4 checked"), subprocess=True, timeout=120),
    Case("train-500-layers", "scale", lambda tmp: (write(tmp / "d.sheaf", DEEP500), [
        "train", "d.sheaf", "--steps", "1", "--no-plots", "--no-baseline", "--out", "r"])[-1],
         expect=("E604", "κ(L_free)", "--trainer backprop", "d.sheaf"), subprocess=True, timeout=60,
         after=lambda tmp, out: _absent(tmp / "r")),
    Case("train-500-layers-backprop", "scale", lambda tmp: (write(tmp / "d.sheaf", DEEP500), [
        "train", "d.sheaf", "--trainer", "backprop", "--steps", "2", "--no-plots", "--no-baseline", "--out", "r"])[-1],
         code=0, expect=("equilibrium diagnostics", "not sampled"), subprocess=True, timeout=90,
         after=lambda tmp, out: checkpoint_step(tmp / "r") == 2 or pytest.fail("no step-2 checkpoint")),
    *[Case(f"{argv[0]}-500-layers", "scale", lambda tmp, argv=argv: (write(tmp / "d.sheaf", DEEP500), argv)[-1],
           code=code, expect=words, subprocess=True, timeout=60)
      for argv, code, words in (
          (["verify", "d.sheaf"], 1, ("E651",)),
          (["spectrum", "d.sheaf", "--samples", "1"], 0, ()),
          (["infer", "d.sheaf", "--input", "[0.5, 0.5]"], 0, ()),
          (["compile", "d.sheaf", "-o", "g.json"], 0, ()),
          (["diagnose", "d.sheaf", "--no-plot"], 1, ("E621", "κ(L_free)")))],
    Case("spectrum-two-wide-layers", "scale", lambda tmp: (
        write(tmp / "w2.sheaf", "sheaf wide2\nnetwork n : 2 -> 1500 -> 1500 -> 1\npin x = input\npin y = target\n"),
        ["spectrum", "w2.sheaf", "--samples", "1"])[-1], expect=("E532", "--dense-cutoff"), subprocess=True,
         timeout=60),
    Case("literal-params-too-large", "scale", lambda tmp: (
        write(tmp / "big.sheaf", "sheaf big\n" + "".join(f"param P{i} : 10000 x 10000 = 0.5\n" for i in range(40))
              + "stalk x : 1\nstalk y : 1\nedge e : x -> y identity\npin x = input\n"),
        ["infer", "big.sheaf", "--input", "[1]"])[-1], expect=("E540", "would need"), subprocess=True),
    Case("compile-many-statements", "scale", lambda tmp: (
        write(tmp / "many.sheaf", _many_statements(20000)), ["compile", "many.sheaf", "--json"])[-1], code=0,
         timeout=60, subprocess=True),
)

# -------- writes that fail mid-way (full disk, read-only folder): see also the test functions below
add(
    Case("compile-out-enospc", "writes", case_files(["compile", "tiny.sheaf", "-o", "g.json"]), expect=("E530",
                                                                                                       "No space"),
         env={"__fault__": "enospc"}, after=lambda tmp, out: (no_tmp_files(tmp), _absent(tmp / "g.json"))),
    Case("fmt-write-enospc", "writes", case_files(["fmt", "-w", "messy.sheaf"], **{"messy.sheaf": TINY.replace(
        "stalk x  : 2", "stalk   x :2")}), expect=("E108", "No space"), env={"__fault__": "enospc"},
         after=lambda tmp, out: (no_tmp_files(tmp), _same(tmp / "messy.sheaf", TINY.replace("stalk x  : 2",
                                                                                              "stalk   x :2")))),
    Case("diagnose-plot-readonly", "writes", lambda tmp: (write(tmp / "tiny.sheaf", TINY), (tmp / "ro").mkdir(),
                                                          ["diagnose", "tiny.sheaf", "--plot", "ro/d.png"])[-1],
         expect=("E641", "ro/d.png"), env={"__fault__": "readonly:ro"},
         after=lambda tmp, out: (no_tmp_files(tmp), _absent(tmp / "ro/d.png"))),
    Case("train-plots-enospc", "writes", case_files(["train", "tiny.sheaf", "--no-baseline", "--out", "r"]),
         expect=("E641",), env={"__fault__": "enospc-png"},
         after=lambda tmp, out: (no_tmp_files(tmp), _checkpoint_ok(tmp / "r"))),
)

# -------- silently wrong
add(
    Case("input-complex-npy", "silent", case_files([*INFER, "in.npy"], **{"in.npy": npy_bytes([[0.5 + 1j, 0.5]])}),
         expect=("E522", "complex")),
    Case("input-string-npy", "silent", case_files([*INFER, "in.npy"], **{"in.npy": npy_bytes([["a", "b"]])}),
         expect=("E522",)),
    Case("params-complex", "silent", case_files([*INFER, "[0, 0]", "--params", "p.npz"], **{
        "p.npz": npz_bytes(W1=W1 + 0j, b1=np.zeros(2), W2=np.ones((1, 2)), b2=np.zeros(1))}), expect=("complex",)),
    Case("data-complex", "silent", case_files([*TRAIN, "--data", "d.npz", "--out", "r"], **{
        "d.npz": npz_bytes(X=np.ones((30, 2)) + 1j, y=np.ones(30))}), expect=("E601", "complex")),
    Case("csv-missing-value-first-row", "silent", case_files([*INFER, "in.csv"], **{"in.csv": "0.5,\n0.1,0.2\n"}),
         expect=("E522", "in.csv:1:", "missing")),
    Case("csv-missing-value-later-row", "silent", case_files([*INFER, "in.csv"],
                                                             **{"in.csv": "x1,x2\n0.5,0.25\n0.1,\n"}),
         expect=("E522", "in.csv:3:", "missing")),
    Case("csv-missing-value-data", "silent", case_files([*TRAIN, "--data", "d.csv", "--out", "r"], **{
        "d.csv": csv_data().replace("\n", "\n,", 1)}), expect=("E601", "d.csv:2:")),
    Case("csv-missing-first-line-data", "silent", case_files([*TRAIN, "--data", "d.csv", "--out", "r"], **{
        "d.csv": "0.1,,0.3\n" + csv_data(header="")}), expect=("E601", "d.csv:1:", "missing")),
    Case("tie-twice", "silent", lambda tmp: (write(tmp / "t.sheaf", TINY + "param W3 : 1 x 2 init he\ntie W2 ~ W3 "
                                                                        "weight 1\ntie W3 ~ W2 weight 5\n"),
                                             ["check", "t.sheaf"])[-1],
         expect=("E263", f"t.sheaf:{TINY.count(chr(10)) + 3}:")),
    Case("json-no-infinity-verify", "silent", lambda tmp: (
        write(tmp / "h.sheaf", TINY.replace("[[1.5, -1]]", "[[1e200, -1e200]]")), ["verify", "h.sheaf", "--json"])[-1],
         code=None, after=lambda tmp, out: _strict_json(out)),
    Case("json-no-infinity-infer", "silent", lambda tmp: (
        write(tmp / "h.sheaf", TINY.replace("[[1.5, -1]]", "[[1e300, -1e300]]")),
        ["infer", "h.sheaf", "--input", "[1e10, 1e10]", "--json"])[-1], expect=("E512",),
         after=lambda tmp, out: _strict_json(out)),
    Case("infer-overflow-text", "silent", lambda tmp: (
        write(tmp / "h.sheaf", TINY.replace("[[1.5, -1]]", "[[1e300, -1e300]]")),
        ["infer", "h.sheaf", "--input", "[1e10, 1e10]"])[-1], expect=("E512", "overflows"), forbid=("RuntimeWarning",)),
)

# -------- valid input rejected
add(
    Case("csv-bom-input", "valid", case_files([*INFER, "in.csv"], **{"in.csv": b"\xef\xbb\xbfx1,x2\n0.5,0.25\n"}),
         code=0),
    Case("csv-bom-no-header", "valid", case_files([*INFER, "in.csv", "--json"],
                                                  **{"in.csv": b"\xef\xbb\xbf0.5,0.25\n0.1,0.2\n"}), code=0,
         after=lambda tmp, out: _batch(out, 2)),
    Case("csv-bom-data", "valid", case_files([*TRAIN, "--data", "d.csv", "--out", "r", "--steps", "1"],
                                             **{"d.csv": b"\xef\xbb\xbf" + csv_data().encode()}), code=0),
    Case("csv-crlf-data", "valid", case_files([*TRAIN, "--data", "d.csv", "--out", "r", "--steps", "1"],
                                              **{"d.csv": csv_data().replace("\n", "\r\n")}), code=0),
    Case("fmt-write-long-name", "valid", lambda tmp: (
        write(tmp / ("m" * 240 + ".sheaf"), TINY.replace("stalk x  : 2", "stalk   x :2")),
        ["fmt", "-w", "m" * 240 + ".sheaf"])[-1], code=0,
         after=lambda tmp, out: _assert("stalk x" in (tmp / ("m" * 240 + ".sheaf")).read_text())),
    Case("model-from-pipe", "valid", lambda tmp: ["check", "/dev/stdin"], code=0, subprocess=True,
         stdin=TINY.encode(), expect=("ok",)),
    Case("model-from-dash", "valid", lambda tmp: ["compile", "-", "--json"], code=0, subprocess=True,
         stdin=TINY.encode()),
    Case("model-from-pipe-verify", "valid", lambda tmp: ["verify", "/dev/stdin", "--json"], code=0, subprocess=True,
         stdin=TINY.encode()),
    Case("model-with-warning-from-pipe", "valid", lambda tmp: ["infer", "-", "--input", "[0, 0]"], code=0,
         subprocess=True, stdin=(TINY + "param U : 1 init zeros\n").encode(), expect=("W300",)),
    Case("input-from-stdin", "valid", case_files([*INFER, "-", "--json"]), code=0, subprocess=True,
         stdin=b"[[0.5, 0.5], [1, 2]]", after=lambda tmp, out: _batch(out, 2)),
    Case("input-process-substitution", "valid", lambda tmp: (write(tmp / "tiny.sheaf", TINY),
                                                             ["bash", "-c", "\"$@\" --input <(echo '[[0.5, 1], [2, 3]]')",
                                                              "sheaf", *SUBPROCESS, "infer", "tiny.sheaf", "--json"])[-1],
         code=0, subprocess="raw", after=lambda tmp, out: _batch(out, 2)),
    Case("input-dev-stdin", "valid", case_files([*INFER, "/dev/stdin", "--json"]), code=0, subprocess=True,
         stdin=b"[0.5, 0.5]"),
    Case("model-process-substitution", "valid", lambda tmp: (write(tmp / "tiny.sheaf", TINY),
                                                             ["bash", "-c", "\"$@\" <(cat tiny.sheaf)", "sheaf",
                                                              *SUBPROCESS, "check"])[-1], code=0, subprocess="raw",
         expect=("ok",)),
    Case("seed-zero-and-large", "valid", case_files([*INFER, "[0, 0]", "--seed", str(2 ** 62)]), code=0),
)

# -------- misleading messages
add(
    Case("csv-empty-input", "misleading", case_files([*INFER, "in.csv"], **{"in.csv": ""}), expect=("no data rows",),
         forbid=("per example",)),
    Case("csv-header-only-input", "misleading", case_files([*INFER, "in.csv"], **{"in.csv": "x1,x2\n"}),
         expect=("no data rows",), forbid=("per example",)),
    Case("csv-ragged-input", "misleading", case_files([*INFER, "in.csv"], **{"in.csv": "0.1,0.2\n0.3\n"}),
         expect=("in.csv:2:", "line 2 has 1"), forbid=("per example",)),
    Case("csv-empty-data", "misleading", case_files([*TRAIN, "--data", "d.csv", "--out", "r"], **{"d.csv": ""}),
         expect=("E601", "no data rows")),
    Case("csv-ragged-data", "misleading", case_files([*TRAIN, "--data", "d.csv", "--out", "r"],
                                                     **{"d.csv": csv_data() + "0.1,0.2\n"}),
         expect=("E601", "line 32 has 2")),
    Case("data-nan-target-csv", "misleading", case_files([*TRAIN, "--data", "d.csv", "--out", "r"],
                                                         **{"d.csv": csv_data() + "0.1,0.2,nan\n"}),
         expect=("E601",), forbid=("diverged", "E640"), after=lambda tmp, out: _no_run(tmp / "r")),
    Case("data-nan-target-npz", "misleading", case_files([*TRAIN, "--data", "d.npz", "--out", "r"], **{
        "d.npz": npz_bytes(X=np.ones((30, 2)), y=np.r_[np.ones(29), np.nan])}), expect=("E601", "targets"),
         forbid=("diverged", "E640"), after=lambda tmp, out: _no_run(tmp / "r")),
    Case("init-missing-key", "misleading", lambda tmp: (write(tmp / "m.sheaf", INIT),
                                                        write(tmp / "w.npz", npz_bytes(V=W1)),
                                                        ["infer", "m.sheaf", "--input", "[0, 0]"])[-1],
         expect=(INIT_LINE, "E236", "`W1`"), forbid=("<input>",)),
    Case("init-wrong-shape-train", "misleading", lambda tmp: (write(tmp / "m.sheaf", INIT),
                                                              write(tmp / "w.npz", npz_bytes(W1=np.ones((3, 2)))),
                                                              ["train", "m.sheaf", "--out", "r"])[-1],
         expect=(INIT_LINE, "E236", "shape"), forbid=("<input>",)),
    Case("run-model-error-points-at-run", "misleading", lambda tmp: (
        write(tmp / "m.sheaf", INIT), write(tmp / "w.npz", npz_bytes(W1=W1)),
        _invoke(["train", "m.sheaf", "--out", "run", "--no-plots", "--no-baseline"], 0),
        os.unlink(tmp / "w.npz"), ["diagnose", "run", "--no-plot"])[-1],
         expect=(os.path.join("run", "model.sheaf") + INIT_LINE[len("m.sheaf"):],), forbid=("<input>",)),
)

# -------- lost data
add(
    Case("out-holds-user-model", "lost", case_files([*TRAIN, "--out", "mine"], **{"mine__model.sheaf": "my own\n"}),
         expect=("E630", "model.sheaf"), after=lambda tmp, out: (_same(tmp / "mine/model.sheaf", "my own\n"),
                                                                 _absent(tmp / "mine/metrics.jsonl"))),
    Case("out-holds-user-summary", "lost", case_files([*TRAIN, "--out", "mine"], **{"mine__summary.json": "{}\n"}),
         expect=("E630",), after=lambda tmp, out: _same(tmp / "mine/summary.json", "{}\n")),
    Case("out-empty-dir-is-fine", "lost", lambda tmp: (write(tmp / "tiny.sheaf", TINY), (tmp / "e").mkdir(),
                                                       [*TRAIN, "--out", "e"])[-1], code=0),
    Case("fmt-write-symlink", "lost", lambda tmp: (
        write(tmp / "real/m.sheaf", TINY.replace("stalk x  : 2", "stalk   x :2")),
        os.symlink("real/m.sheaf", tmp / "link.sheaf"), ["fmt", "-w", "link.sheaf"])[-1], code=0,
         after=lambda tmp, out: (_assert((tmp / "link.sheaf").is_symlink()),
                                 _assert("stalk x" in (tmp / "real/m.sheaf").read_text()))),
)

# -------- other: umask, `-` and pipes, FIFOs, Ctrl-C
add(
    Case("umask-022-compile", "other", case_files(["compile", "tiny.sheaf", "-o", "g.json"]), code=0,
         env={"__umask__": "022"}, after=lambda tmp, out: _mode(tmp / "g.json", 0o644)),
    Case("umask-002-train", "other", case_files([*TRAIN, "--out", "r"]), code=0, env={"__umask__": "002"},
         after=lambda tmp, out: [_mode(tmp / "r" / n, 0o664) for n in ("checkpoint.npz", "meta.json",
                                                                         "model.sheaf", "summary.json")]),
    Case("umask-077-fmt-new-mode-kept", "other", lambda tmp: (
        write(tmp / "m.sheaf", TINY.replace("stalk x  : 2", "stalk   x :2")), os.chmod(tmp / "m.sheaf", 0o640),
        ["fmt", "-w", "m.sheaf"])[-1], code=0, env={"__umask__": "077"},
         after=lambda tmp, out: _mode(tmp / "m.sheaf", 0o640)),
    Case("fifo-no-writer", "other", lambda tmp: (os.mkfifo(tmp / "f.sheaf"), ["check", "f.sheaf"])[-1],
         expect=("FIFO",), subprocess=True, env={"SHEAF_FIFO_WAIT": "0.5"}, timeout=30),
    Case("fifo-with-writer", "other", lambda tmp: (write(tmp / "tiny.sheaf", TINY),
                                                   ["bash", "-c", "mkfifo f.sheaf; (cat tiny.sheaf > f.sheaf &); "
                                                    "\"$@\" check f.sheaf", "sheaf", *SUBPROCESS])[-1],
         code=0, subprocess="raw", expect=("ok",), timeout=30),
    Case("fifo-input-no-writer", "other", lambda tmp: (write(tmp / "tiny.sheaf", TINY), os.mkfifo(tmp / "in.json"),
                                                       [*INFER, "in.json"])[-1],
         expect=("E522", "FIFO"), subprocess=True, env={"SHEAF_FIFO_WAIT": "0.5"}, timeout=30),
)


# -------- more of the same kinds: models, values, files
PICKLED = b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (1,), }" + b" " * 51 + b"\n" + \
    b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00]\x94."
add(
    Case("model-binary", "internal", lambda tmp: (write(tmp / "m.sheaf", b"\x89PNG\r\n\x1a\n\x00\x00"),
                                                  ["check", "m.sheaf"])[-1], expect=("E103",)),
    Case("model-latin1", "internal", lambda tmp: (write(tmp / "m.sheaf", "sheaf caf\xe9\n".encode("latin-1")),
                                                  ["compile", "m.sheaf"])[-1], expect=("E103", "m.sheaf:1:")),
    Case("model-empty-stdin", "misleading", lambda tmp: ["check", "-"], expect=("E104",), subprocess=True, stdin=b""),
    Case("model-missing", "internal", lambda tmp: ["compile", "nope.sheaf"], expect=("E107", "does not exist")),
    Case("model-bom-crlf", "valid", lambda tmp: (write(tmp / "m.sheaf", b"\xef\xbb\xbf" + TINY.replace("\n", "\r\n")
                                                        .encode()), ["check", "m.sheaf"])[-1], code=0),
    Case("input-json-overflow", "silent", case_files([*INFER, "[1e400, 0]"]), expect=("E520",)),
    Case("input-json-nan-literal", "silent", case_files([*INFER, "[NaN, 0]"]), expect=("E520",)),
    Case("input-json-strings", "internal", case_files([*INFER, '["a", "b"]']), expect=("E520",)),
    Case("input-json-bom-file", "valid", case_files([*INFER, "in.json"], **{"in.json": b"\xef\xbb\xbf[0.5, 0.25]"}),
         code=0),
    Case("input-npy-3d", "internal", case_files([*INFER, "in.npy"], **{"in.npy": npy_bytes(np.zeros((2, 2, 2)))}),
         expect=("E520",)),
    Case("input-npy-pickled", "internal", case_files([*INFER, "in.npy"], **{"in.npy": PICKLED}),
         expect=("E522",)),
    Case("input-npy-truncated", "internal", case_files([*INFER, "in.npy"], **{"in.npy": npy_bytes(np.zeros((50, 2)))[:90]}),
         expect=("E522",)),
    Case("input-csv-inf", "silent", case_files([*INFER, "in.csv"], **{"in.csv": "0.5,inf\n"}), expect=("E522", "in.csv:1:")),
    Case("input-csv-bom-spectrum", "valid", case_files(["spectrum", "tiny.sheaf", "--input", "in.csv", "--json"],
                                                       **{"in.csv": b"\xef\xbb\xbf0.5,0.25\n"}), code=0,
         after=lambda tmp, out: _strict_json(out)),
    Case("target-complex-npy", "silent", case_files(["spectrum", "tiny.sheaf", "--input", "[0, 0]", "--target", "t.npy"],
                                                    **{"t.npy": npy_bytes([[1 + 2j]])}), expect=("E533",)),
    Case("params-pickled", "internal", lambda tmp: (write(tmp / "tiny.sheaf", TINY), np.savez(
        tmp / "p.npz", W1=np.array([None] * 4, dtype=object).reshape(2, 2), b1=np.zeros(2), W2=np.ones((1, 2)),
        b2=np.zeros(1)), ["verify", "tiny.sheaf", "--params", "p.npz"])[-1], expect=("E524",)),
    Case("params-run-dir-truncated", "internal", lambda tmp: (
        write(tmp / "tiny.sheaf", TINY), tiny_run(tmp),
        write(tmp / "run/checkpoint.npz", truncated((tmp / "run/checkpoint.npz").read_bytes())),
        [*INFER, "[0, 0]", "--params", "run"])[-1], expect=("E524",)),
    Case("params-run-dir-ok", "valid", lambda tmp: (write(tmp / "tiny.sheaf", TINY), tiny_run(tmp),
                                                    [*INFER, "[0, 0]", "--params", "run"])[-1], code=0),
    Case("data-csv-one-column", "misleading", case_files([*TRAIN, "--data", "d.csv", "--out", "r"],
                                                         **{"d.csv": "y\n1\n2\n3\n"}), expect=("E601",)),
    Case("data-csv-inf", "silent", case_files([*TRAIN, "--data", "d.csv", "--out", "r"],
                                              **{"d.csv": csv_data() + "inf,0.2,0.3\n"}), expect=("E601", "d.csv:32:")),
    Case("data-npz-rows-mismatch", "misleading", case_files([*TRAIN, "--data", "d.npz", "--out", "r"], **{
        "d.npz": npz_bytes(X=np.ones((30, 2)), y=np.ones(29))}), expect=("E601", "rows")),
    Case("compile-out-missing-dir", "writes", case_files(["compile", "tiny.sheaf", "-o", "no/such/g.json"]),
         expect=("E530",)),
    Case("compile-out-symlink", "lost", lambda tmp: (write(tmp / "tiny.sheaf", TINY), write(tmp / "real/g.json", "{}"),
                                                     os.symlink("real/g.json", tmp / "g.json"),
                                                     ["compile", "tiny.sheaf", "-o", "g.json"])[-1], code=0,
         after=lambda tmp, out: (_assert((tmp / "g.json").is_symlink()),
                                 _assert(len((tmp / "real/g.json").read_text()) > 100))),
    Case("fmt-write-readonly", "writes", case_files(["fmt", "-w", "messy.sheaf"], **{"messy.sheaf": TINY.replace(
        "stalk x  : 2", "stalk   x :2")}), expect=("E108", "Permission denied"), env={"__fault__": "readonly:."},
         after=lambda tmp, out: _same(tmp / "messy.sheaf", TINY.replace("stalk x  : 2", "stalk   x :2"))),
    Case("out-is-a-file", "lost", case_files([*TRAIN, "--out", "f"], **{"f": "mine\n"}), code=2, expect=("is a file",),
         after=lambda tmp, out: _same(tmp / "f", "mine\n")),
    Case("resume-without-run", "misleading", case_files([*TRAIN, "--out", "none", "--resume"]), expect=("E631",)),
    Case("diagnose-dir-not-run", "misleading", lambda tmp: ((tmp / "d").mkdir(), ["diagnose", "d"])[-1],
         expect=("E635",)),
)


def _invoke(argv, code):
    res = CliRunner().invoke(cli, argv, catch_exceptions=True)
    assert res.exit_code == code, res.output
    return res


def _reshape_checkpoint(run: Path, state=False):
    """Rewrite the checkpoint with a wrongly shaped parameter (or trainer-state entry), metadata intact."""
    with np.load(run / "checkpoint.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if state:
        key = next(k for k in arrays if k.startswith("state/opt.") and arrays[k].ndim >= 1)
        arrays[key] = np.zeros(tuple(n + 1 for n in arrays[key].shape))
    else:
        arrays["W1"] = np.ones((3, 5))
        arrays["state/param.W1"] = np.ones((3, 5))
    with open(run / "checkpoint.npz", "wb") as fh:
        np.savez(fh, **arrays)


def _many_statements(n: int) -> str:
    """A chain of ~n statements: stalks and identity edges."""
    k = n // 2
    out = ["sheaf many"] + [f"stalk s{i} : 1" for i in range(k)]
    out += [f"edge e{i} : s{i} -> s{i + 1} identity" for i in range(k - 1)]
    out += ["pin s0 = input"]
    return "\n".join(out) + "\n"


def _assert(cond):
    assert cond


def _absent(path: Path):
    assert not path.exists(), f"{path} should not exist"


def _same(path: Path, text: str):
    assert path.read_text() == text, f"{path} changed"


def _no_run(path: Path):
    assert not (path / "checkpoint.npz").exists()


def _mode(path: Path, mode: int):
    assert stat.S_IMODE(os.stat(path).st_mode) == mode, (path, oct(stat.S_IMODE(os.stat(path).st_mode)))


def _one_run_under(root: Path):
    runs = [p for p in root.iterdir() if p.is_dir()]
    assert len(runs) == 1 and (runs[0] / "checkpoint.npz").is_file(), runs
    assert len(runs[0].name) < 200


def _checkpoint_ok(run: Path):
    from sheafdsl.training.checkpoint import load_checkpoint

    assert load_checkpoint(run / "checkpoint.npz").step >= 0


def _strict_json(out: str):
    lines = [ln for ln in out.splitlines() if ln.strip().startswith("{")]
    assert lines, out

    def refuse(name):
        raise AssertionError(f"not JSON: {name}")

    for ln in lines:
        json.loads(ln, parse_constant=refuse)


def _batch(out: str, n: int):
    obj = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][0])
    assert obj["batch"] == n, obj


# ----------------------------------------------------------------------------------------------
# faults injected in-process: a full disk, a read-only folder


def _inject(monkeypatch, fault: str, tmp: Path):
    import sheafdsl.fileio as F

    if fault == "enospc":
        def fsync(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr(F.os, "fsync", fsync)
    elif fault == "enospc-png":
        real = F.atomic_write

        def atomic_write(path, write):
            if str(path).endswith(".png"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(path, write)
        monkeypatch.setattr(F, "atomic_write", atomic_write)
        import sheafdsl.training.run as R
        monkeypatch.setattr(R, "atomic_write", atomic_write)

        def atomic_write_bytes(path, data):
            return atomic_write(path, lambda fh: fh.write(data))
        monkeypatch.setattr(F, "atomic_write_bytes", atomic_write_bytes)
        import sheafdsl.training.plots as P
        monkeypatch.setattr(P, "atomic_write_bytes", atomic_write_bytes)
    elif fault.startswith("readonly:"):
        ro = (tmp / fault.split(":", 1)[1]).resolve()
        real = F.tempfile.mkstemp

        def mkstemp(*a, dir=None, **kw):
            if dir is not None and Path(dir).resolve() == ro:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))
            return real(*a, dir=dir, **kw)
        monkeypatch.setattr(F.tempfile, "mkstemp", mkstemp)
    else:
        raise ValueError(fault)


def _limit_memory():
    """A subprocess gets at most 6 GiB of address space: a case that allocates without checking fails
    with MemoryError instead of pushing the machine into swap or the OOM killer."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))


def _run_case(case: Case, tmp: Path, monkeypatch):
    monkeypatch.chdir(tmp)
    argv = case.setup(tmp)
    env = {k: v for k, v in case.env.items() if not k.startswith("__")}
    if case.subprocess:
        cmd = argv if case.subprocess == "raw" else [*SUBPROCESS, *argv]
        try:
            proc = subprocess.run(cmd, input=case.stdin if case.stdin is not None else b"", capture_output=True,
                                  timeout=case.timeout, env={**os.environ, "SHEAF_MEMORY_LIMIT": str(4 << 30), **env},
                                  cwd=tmp, preexec_fn=_limit_memory)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no answer within {case.timeout:g} s") from None
        return proc.returncode, (proc.stdout + proc.stderr).decode("utf-8", "replace")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    if "__fault__" in case.env:
        _inject(monkeypatch, case.env["__fault__"], tmp)
    old_mask = os.umask(int(case.env["__umask__"], 8)) if "__umask__" in case.env else None
    try:
        res = CliRunner().invoke(cli, argv, catch_exceptions=True, input=case.stdin)
    finally:
        if old_mask is not None:
            os.umask(old_mask)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        import traceback

        raise AssertionError("an exception escaped: " + "".join(traceback.format_exception(res.exception)))
    return res.exit_code, res.output


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case, tmp_path, monkeypatch):
    t0 = time.monotonic()
    code, out = _run_case(case, tmp_path, monkeypatch)
    assert "Traceback" not in out and "internal error" not in out, out
    if case.code is not None:
        assert code == case.code, f"exit {code}, wanted {case.code}:\n{out}"
    else:
        assert code in (0, 1), out
    low = out.lower()
    for s in case.expect:
        assert s.lower() in low, f"{s!r} not in:\n{out}"
    for s in case.forbid:
        assert s.lower() not in low, f"{s!r} in:\n{out}"
    if case.code == 1:  # a clear message: FILE: error[CODE]: ... (or FILE:LINE:COL: ...), or its JSON form
        assert "error[E" in out or '"code": "E' in out, out
    if case.after is not None:
        case.after(tmp_path, out)
    assert time.monotonic() - t0 < case.timeout


# ----------------------------------------------------------------------------------------------
# cases that need more than one command line


def test_full_disk_during_train_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    """fsync fails with ENOSPC from the third checkpoint on: exit 1, E641 naming the cause, no
    temporary file left, the checkpoint of the last good save intact and loadable, metrics whole."""
    import sheafdsl.fileio as F
    from sheafdsl.training.run import MetricsLog

    monkeypatch.chdir(tmp_path)
    write(tmp_path / "tiny.sheaf", TINY)
    real = os.fsync
    calls = {"n": 0}

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] > 12:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(F.os, "fsync", fsync)
    res = CliRunner().invoke(cli, [*TRAIN, "--out", "r", "--steps", "6"], catch_exceptions=True)
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert res.exit_code == 1, res.output
    assert "E641" in res.output and "No space left on device" in res.output and "Traceback" not in res.output
    no_tmp_files(tmp_path)
    monkeypatch.setattr(F.os, "fsync", real)
    step = checkpoint_step(tmp_path / "r")
    assert 0 <= step < 6
    recs = MetricsLog(tmp_path / "r" / "metrics.jsonl").read()
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert len(recs) == len(lines)  # no line cut short
    # and the run continues from there once the disk has room again
    res = CliRunner().invoke(cli, [*TRAIN, "--out", "r", "--steps", "6", "--resume"], catch_exceptions=True)
    assert res.exit_code == 0, res.output
    assert checkpoint_step(tmp_path / "r") == 6


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_readonly_folder_for_the_plot_really(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "tiny.sheaf", TINY)
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o555)
    try:
        res = CliRunner().invoke(cli, ["diagnose", "tiny.sheaf", "--plot", "ro/d.png"], catch_exceptions=True)
    finally:
        os.chmod(tmp_path / "ro", 0o755)
    assert res.exit_code == 1 and "E641" in res.output, res.output
    assert not list((tmp_path / "ro").iterdir())


#: a 40-layer width-4 chain: each step of the sheaf trainer is seconds of pattern solves
SLOW_STEPS = ("sheaf slowsteps\nnetwork n : 2 -> " + " -> ".join(["4"] * 40) + " -> 1 relu output identity weight 1\n"
              "pin x = input\npin y = target\ntrain data=paraboloid n=200 n_test=20 steps=200 log_every=1 seed=0\n")


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_step_stops_at_once_and_keeps_the_last_checkpoint(tmp_path, sig, code):
    """SIGTERM/SIGINT inside a long step (its solve) stops the run within about a second, not at the step's
    end: exit 128 + signum, one line, and a checkpoint of the last completed step that loads and resumes."""
    from sheafdsl.training.checkpoint import load_checkpoint

    write(tmp_path / "s.sheaf", SLOW_STEPS)
    proc = subprocess.Popen([*SUBPROCESS, "train", "s.sheaf", "--out", "r", "--no-plots", "--no-baseline",
                             "--checkpoint-every", "0"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "SHEAF_MEMORY_LIMIT": str(4 << 30)})
    ck = tmp_path / "r" / "checkpoint.npz"
    deadline = time.monotonic() + 120
    while not ck.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ck.exists(), proc.communicate(timeout=10)
    time.sleep(0.3)  # inside step 1: its warm-started solve takes seconds
    t0 = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    took = time.monotonic() - t0
    text = (out + err).decode()
    assert proc.returncode == code, text
    assert took < 2.0, f"{took:.1f} s to stop:\n{text}"
    lines = [ln for ln in err.decode().splitlines() if ln.startswith("interrupted")]
    assert len(lines) == 1 and "Traceback" not in text, text
    saved = load_checkpoint(ck)
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert meta["status"] == "interrupted" and int(meta["step"]) == int(saved.meta["step"]) < 200, (meta, text)
    no_tmp_files(tmp_path / "r")
    # the run resumes from it
    res = subprocess.run([*SUBPROCESS, "train", "s.sheaf", "--out", "r", "--resume", "--steps",
                          str(int(saved.meta["step"]) + 1), "--no-plots", "--no-baseline"], cwd=tmp_path,
                         capture_output=True, timeout=300)
    assert res.returncode == 0, (res.stdout + res.stderr).decode()


VERIFY_SLOW = "sheaf slow\nnetwork n : 2 -> 30 -> 30 -> 1\npin x = input\npin y = target\n"


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc to see that verify is working")
def test_ctrl_c_during_verify_exits_130_with_one_line(tmp_path):
    write(tmp_path / "slow.sheaf", VERIFY_SLOW)
    proc = subprocess.Popen([*SUBPROCESS, "verify", "slow.sheaf", "--symbolic-limit", "0", "--samples", "20000"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while _cpu_seconds(proc.pid) < 2.5 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # until the imports are done and verify is at work
    assert proc.poll() is None, "verify finished before the signal; make the model slower"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    text = err.decode()
    assert proc.returncode == 130, (proc.returncode, text)
    assert "Traceback" not in text and "Aborted" not in text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0], text


def test_ctrl_c_during_spectrum_exits_130(tmp_path):
    write(tmp_path / "w.sheaf", "sheaf w\nnetwork n : 2 -> 200 -> 1\npin x = input\npin y = target\n")
    proc = subprocess.Popen([*SUBPROCESS, "spectrum", "w.sheaf", "--samples", "5000"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while _cpu_seconds(proc.pid) < 2.5 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "spectrum finished before the signal"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in err.decode(), (proc.returncode, err.decode())


@pytest.mark.parametrize("seed", range(4))
def test_the_factored_sparse_spectrum_agrees_with_the_dense_one(seed):
    """gram_extremes' sparse path (Lanczos on AᵀA, shift-invert through the augmented system) against
    a dense eigvalsh of AᵀA: λ_min, λ_max, and the singular case (a zero column: its kernel named)."""
    import scipy.sparse as sp

    from sheafdsl.analysis.spectrum import gram_extremes

    rng = np.random.default_rng(seed)
    M, n = 90, 60
    A = sp.random(M, n, density=0.08, random_state=seed, format="csr") + sp.eye(M, n) * rng.uniform(0.5, 2)
    A = sp.csr_matrix(A)
    if seed % 2:
        A = sp.csr_matrix(A.multiply(np.r_[np.ones(n - 1), 0.0][None, :]))  # column n-1 is free: singular
    w = np.linalg.eigvalsh((A.T @ A).toarray())
    ext = gram_extremes(A, dense_cutoff=0)
    assert ext.method == "sparse eigsh"
    assert abs(ext.lambda_max - w[-1]) <= 1e-8 * w[-1]
    if seed % 2:
        assert ext.singular and ext.kernel == {"c": [n - 1]}
    else:
        assert not ext.singular and abs(ext.lambda_min - w[0]) <= 1e-8 * w[-1]


def test_compile_scales_linearly_in_the_statements():
    """Adding a stalk or an edge must not scan every stalk or edge (O(n²) for n statements): building
    the IR of 4n statements makes under 6× the Python calls of n (linear: 4×, quadratic: 16×). Calls
    are counted, not timed, so the test does not depend on the machine's load."""
    from sheafdsl.frontend import load_text
    from sheafdsl.ir import from_model

    def calls(n):
        model = load_text(_many_statements(n))
        count = [0]

        def prof(frame, event, arg):
            if event == "call":
                count[0] += 1
        sys.setprofile(prof)
        try:
            from_model(model)
        finally:
            sys.setprofile(None)
        return count[0]

    small, big = calls(1000), calls(4000)
    assert big < 6 * small, (small, big)


# ----------------------------------------------------------------------------------------------
# API misuse: the Python modules validate the way the checker does, with the same codes


def _api_sheaf():
    import sheafdsl as sd

    return sd.loads("sheaf t\nnetwork mlp : 2 -> 4 -> 1\npin x = input\npin y = target\n")


def _two_stalks():
    from sheafdsl import ir

    G = ir.new_sheaf("g")
    ir.add_stalk(G, "a", 2)
    ir.add_stalk(G, "b", 3)
    ir.add_param(G, "W", (3, 2))
    ir.add_param(G, "v", (3,), init="zeros")
    return G


def _edge(G=None, **kw):
    from sheafdsl import ir
    from sheafdsl.ir.maps import Identity, ParamMap

    G = _two_stalks() if G is None else G
    kw.setdefault("src_map", ParamMap("W"))
    kw.setdefault("dst_map", Identity())
    ir.add_edge(G, "e", kw.pop("src", "a"), kw.pop("dst", "b"), **kw)


def _api_cases(tmp: Path):
    """(id, call, code): each call is a misuse that must raise SheafError carrying ``code``."""
    import sheafdsl as sd
    from sheafdsl import ir
    from sheafdsl.ir.maps import Constant, Identity, Nonlinear, Scaled, Select, nonlinear_map

    sh = _api_sheaf()
    P = sh.init_params(seed=0)
    x = {"x": [[0.5, -1.0]]}
    return [
        # load / loads
        ("load-int", lambda: sd.load(3), "E526"),
        ("load-none", lambda: sd.load(None), "E526"),
        ("load-missing", lambda: sd.load(tmp / "nope.sheaf"), "E107"),
        ("load-directory", lambda: sd.load(tmp), "E107"),
        ("loads-bytes", lambda: sd.loads(b"sheaf t\n"), "E103"),
        ("loads-path-int", lambda: sd.loads("sheaf t\nstalk x : 1\n", path=3), "E526"),
        ("loads-float-dim", lambda: sd.loads("sheaf t\nstalk x : 2.0\n"), "E101"),
        ("from-graph-none", lambda: sd.Sheaf.from_graph(None), "E526"),
        # Sheaf.infer: shapes, keys, values
        ("infer-wrong-width", lambda: sh.infer({"x": [[1, 2, 3]]}, params=P), "E521"),
        ("infer-unknown-key", lambda: sh.infer({"zz": [[1, 2]]}, params=P), "E521"),
        ("infer-target-as-input", lambda: sh.infer({"x": [[1, 2]], "y": [[1]]}, params=P), "E521"),
        ("infer-nan", lambda: sh.infer({"x": [[np.nan, 1]]}, params=P), "E520"),
        ("infer-inf", lambda: sh.infer({"x": [[np.inf, 1]]}, params=P), "E520"),
        ("infer-complex", lambda: sh.infer({"x": np.array([[1 + 1j, 1]])}, params=P), "E520"),
        ("infer-strings", lambda: sh.infer({"x": [["a", "b"]]}, params=P), "E520"),
        ("infer-ragged", lambda: sh.infer({"x": [[1, 2], [3]]}, params=P), "E520"),
        ("infer-3d", lambda: sh.infer({"x": np.zeros((2, 2, 2))}, params=P), "E520"),
        ("infer-object", lambda: sh.infer(object(), params=P), "E520"),
        ("infer-empty-batch", lambda: sh.infer({"x": np.zeros((0, 2))}, params=P), "E521"),
        ("infer-no-inputs", lambda: sh.infer(None, params=P), "E521"),
        ("infer-flat-wrong", lambda: sh.infer(np.zeros((3, 5)), params=P), "E521"),
        ("infer-solver", lambda: sh.infer(x, params=P, solver="magic"), "E509"),
        ("infer-rtol-negative", lambda: sh.infer(x, params=P, rtol=-1), "E525"),
        ("infer-rtol-string", lambda: sh.infer(x, params=P, rtol="small"), "E525"),
        ("infer-maxiter-zero", lambda: sh.infer(x, params=P, maxiter=0), "E525"),
        ("infer-maxiter-float", lambda: sh.infer(x, params=P, maxiter=2.5), "E525"),
        ("infer-seed-negative", lambda: sh.infer(x, seed=-1), "E526"),
        ("infer-pins-not-a-dict", lambda: sh.infer(x, params=P, pins=[1]), "E523"),
        ("infer-pin-unknown", lambda: sh.infer(x, params=P, pins={"zz": 1}), "E523"),
        ("infer-pin-index-out-of-range", lambda: sh.infer(x, params=P, pins={"y": ([5], [1.0])}), "E523"),
        ("infer-pin-text", lambda: sh.infer(x, params=P, pins={"y": "abc"}), "E520"),
        ("infer-pin-nan", lambda: sh.infer(x, params=P, pins={"y": float("nan")}), "E520"),
        # parameters given to the API
        ("params-missing", lambda: sh.infer(x, params={"W1": P["W1"]}), "E524"),
        ("params-not-a-dict", lambda: sh.infer(x, params=[1, 2]), "E524"),
        ("params-wrong-shape", lambda: sh.infer(x, params={**P, "W1": np.zeros((2, 2))}), "E524"),
        ("params-nan", lambda: sh.infer(x, params={**P, "W1": P["W1"] * np.nan}), "E524"),
        ("params-text", lambda: sh.infer(x, params={**P, "W1": "abc"}), "E524"),
        ("params-complex", lambda: sh.infer(x, params={**P, "W1": P["W1"] + 1j}), "E524"),
        ("load-params-missing-entries", lambda: sh.load_params(tmp / "short.npz"), "E524"),
        ("load-params-wrong-shape", lambda: sh.load_params(tmp / "misshapen.npz"), "E524"),
        ("load-params-npy", lambda: sh.load_params(tmp / "one.npy"), "E524"),
        ("load-params-truncated", lambda: sh.load_params(tmp / "trunc.npz"), "E524"),
        ("load-params-absent", lambda: sh.load_params(tmp / "absent.npz"), "E524"),
        ("load-params-int", lambda: sh.load_params(5), "E526"),
        # init_params seeds
        ("init-seed-negative", lambda: sh.init_params(seed=-1), "E526"),
        ("init-seed-float", lambda: sh.init_params(seed=1.5), "E526"),
        ("init-seed-string", lambda: sh.init_params(seed="0"), "E526"),
        ("init-seed-bool", lambda: sh.init_params(seed=True), "E526"),
        ("init-seed-none", lambda: sh.init_params(seed=None), "E526"),
        # sd.train options
        ("train-steps-negative", lambda: sd.train(sh, steps=-1), "E610"),
        ("train-steps-string", lambda: sd.train(sh, steps="a"), "E610"),
        ("train-lr-nan", lambda: sd.train(sh, steps=1, lr=float("nan")), "E610"),
        ("train-unknown-option", lambda: sd.train(sh, stepz=1), "E610"),
        ("train-trainer", lambda: sd.train(sh, steps=1, trainer="magic"), "E610"),
        ("train-batch-zero", lambda: sd.train(sh, steps=1, batch=0), "E610"),
        ("train-seed-negative", lambda: sd.train(sh, steps=1, seed=-3), "E610"),
        ("train-backend", lambda: sd.train(sh, steps=1, backend="cuda"), "E610"),
        ("train-threads-zero", lambda: sd.train(sh, steps=1, threads=0), "E526"),
        ("train-n-huge", lambda: sd.train(sh, steps=1, n=10 ** 12), "E610"),
        ("train-data-unknown", lambda: sd.train(sh, steps=1, data="no_such_data"), "E600"),
        ("train-params-wrong", lambda: sd.train(sh, steps=1, params={"W1": np.zeros((2, 2))}), "E524"),
        ("train-out-is-a-file", lambda: sd.train(sh, steps=1, out=write(tmp / "f.txt", "x")), "E630"),
        ("train-not-a-sheaf", lambda: sd.train(5, steps=1), "E526"),
        ("train-model-missing", lambda: sd.train(tmp / "missing.sheaf", steps=1), "E107"),
        # analysis methods' arguments
        ("verify-boundary", lambda: sh.verify(boundary="both"), "E526"),
        ("verify-samples-zero", lambda: sh.verify(samples=0), "E526"),
        ("verify-symbolic-limit", lambda: sh.verify(symbolic_limit=-1), "E526"),
        ("spectrum-samples", lambda: sh.spectrum(samples=-1), "E526"),
        ("spectrum-cutoff", lambda: sh.spectrum(samples=1, dense_cutoff="a"), "E526"),
        ("spectrum-inputs-width", lambda: sh.spectrum(inputs={"x": [[1]]}), "E521"),
        ("cohomology-method", lambda: sh.cohomology(method="x"), "E526"),
        ("cohomology-seed", lambda: sh.cohomology(seed=-1), "E526"),
        ("diagnose-split", lambda: sh.diagnose(split="val"), "E526"),
        ("diagnose-data", lambda: sh.diagnose(data="no_such_data"), "E600"),
        ("export-int", lambda: sh.export(5), "E526"),
        ("export-extension", lambda: sh.export(tmp / "g.xyz"), "E530"),
        ("open-run-int", lambda: sd.open_run(5), "E526"),
        ("open-run-not-a-run", lambda: sd.open_run(tmp), "E635"),
        ("diagnose-run-not-a-run", lambda: sd.diagnose_run(tmp), "E635"),
        # the IR builders (the checker's codes)
        ("stalk-float-dim", lambda: ir.add_stalk(ir.new_sheaf("g"), "a", 2.0), "E210"),
        ("stalk-zero-dim", lambda: ir.add_stalk(ir.new_sheaf("g"), "a", 0), "E210"),
        ("stalk-string-dim", lambda: ir.add_stalk(ir.new_sheaf("g"), "a", "2"), "E210"),
        ("stalk-bool-dim", lambda: ir.add_stalk(ir.new_sheaf("g"), "a", True), "E210"),
        ("stalk-huge-dim", lambda: ir.add_stalk(ir.new_sheaf("g"), "a", 10 ** 12), "E211"),
        ("stalk-twice", lambda: ir.add_stalk(_two_stalks(), "a", 2), "E201"),
        ("stalk-name-int", lambda: ir.add_stalk(ir.new_sheaf("g"), 5, 2), "E201"),
        ("builder-not-a-sheaf", lambda: ir.add_stalk(None, "a", 2), "E526"),
        ("builder-plain-graph", lambda: ir.add_pin(__import__("networkx").MultiDiGraph(), "a"), "E526"),
        ("sheaf-name-empty", lambda: ir.new_sheaf(""), "E201"),
        ("edge-unknown-stalk", lambda: _edge(dst="zz"), "E202"),
        ("edge-unknown-param", lambda: _edge(src_map=__import__("sheafdsl.ir.maps", fromlist=["x"]).ParamMap("Q")),
         "E203"),
        ("edge-map-shapes", lambda: _edge(src_map=Identity()), "E225"),
        ("edge-constant-columns", lambda: _edge(src_map=Constant(np.ones((3, 3)))), "E225"),
        ("edge-constant-nan", lambda: _edge(src_map=Constant(np.full((3, 2), np.nan))), "E232"),
        ("edge-constant-text", lambda: _edge(src_map=Constant("abc")), "E224"),
        ("edge-constant-ragged", lambda: _edge(src_map=Constant([[1, 2], [3]])), "E224"),
        ("edge-constant-complex", lambda: _edge(src_map=Constant(np.ones((3, 2)) * 1j)), "E224"),
        ("edge-constant-3d", lambda: _edge(src_map=Constant(np.ones((3, 2, 1)))), "E224"),
        ("edge-map-array", lambda: _edge(src_map=np.ones((3, 2))), "E224"),
        ("edge-scaled-text", lambda: Scaled("x"), "E224"),
        ("edge-scaled-nan", lambda: _edge(src="b", src_map=Scaled(float("nan"))), "E232"),
        ("edge-select-out-of-range", lambda: _edge(src="a", dst="a", src_map=Select((0, 5)), dim=2), "E241"),
        ("edge-weight-negative", lambda: _edge(weight=-1), "E250"),
        ("edge-weight-text", lambda: _edge(weight="a"), "E250"),
        ("edge-bias-shape", lambda: _edge(bias="W"), "E221"),
        ("edge-dim-float", lambda: _edge(dim=3.0), "E210"),
        ("edge-nonmaps-loop", lambda: _edge(src="a", dst="a", src_map=Identity(), kind="affine"), "E290"),
        ("edge-twice", lambda: (lambda G: (_edge(G), _edge(G)))(_two_stalks()), "E201"),
        ("nonlinearity-unknown", lambda: nonlinear_map("swish"), "E511"),
        ("nonlinearity-relu-as-nonlinear", lambda: Nonlinear("relu"), "E511"),
        ("leaky-slope-out-of-range", lambda: nonlinear_map("leaky_relu", 2.0), "E226"),
        ("leaky-slope-text", lambda: nonlinear_map("leaky_relu", "x"), "E226"),
        ("leaky-slope-missing", lambda: nonlinear_map("leaky_relu"), "E511"),
        ("param-float-shape", lambda: ir.add_param(ir.new_sheaf(), "W", (2.0, 3)), "E210"),
        ("param-negative-shape", lambda: ir.add_param(ir.new_sheaf(), "W", (-2, 3)), "E210"),
        ("param-3d", lambda: ir.add_param(ir.new_sheaf(), "W", (2, 3, 4)), "E222"),
        ("param-huge", lambda: ir.add_param(ir.new_sheaf(), "W", (10 ** 9, 10 ** 9)), "E211"),
        ("param-initialiser", lambda: ir.add_param(ir.new_sheaf(), "W", (2, 3), init="magic"), "E233"),
        ("param-he-vector", lambda: ir.add_param(ir.new_sheaf(), "W", (3,), init="he"), "E234"),
        ("tie-self", lambda: ir.add_tie(_two_stalks(), "W", "W", 1.0), "E262"),
        ("tie-shapes", lambda: ir.add_tie(_two_stalks(), "W", "v", 1.0), "E261"),
        ("tie-unknown", lambda: ir.add_tie(_two_stalks(), "W", "Z", 1.0), "E203"),
        ("tie-twice", lambda: (lambda G: (ir.add_param(G, "W2", (3, 2)), ir.add_tie(G, "W", "W2", 1.0),
                                          ir.add_tie(G, "W2", "W", 1.0)))(_two_stalks()), "E263"),
        ("tie-weight-zero", lambda: (lambda G: (ir.add_param(G, "W2", (3, 2)), ir.add_tie(G, "W", "W2", 0)))(
            _two_stalks()), "E250"),
        ("reluctance-twice", lambda: (lambda G: (ir.add_reluctance(G, "W", 1.0), ir.add_reluctance(G, "W", 1.0)))(
            _two_stalks()), "E260"),
        ("reluctance-unknown", lambda: ir.add_reluctance(_two_stalks(), "Z", 1.0), "E203"),
        ("pin-unknown-stalk", lambda: ir.add_pin(_two_stalks(), "zz", "input"), "E202"),
        ("pin-index-out-of-range", lambda: ir.add_pin(_two_stalks(), "a", "value", indices=[5], value=[1.0]),
         "E241"),
        ("pin-index-negative", lambda: ir.add_pin(_two_stalks(), "a", "value", indices=[-1], value=[1.0]), "E241"),
        ("pin-index-float", lambda: ir.add_pin(_two_stalks(), "a", "value", indices=[0.5], value=[1.0]), "E241"),
        ("pin-index-twice", lambda: ir.add_pin(_two_stalks(), "a", "value", indices=[0, 0], value=[1, 2]), "E242"),
        ("pin-value-length", lambda: ir.add_pin(_two_stalks(), "a", "value", value=[1.0]), "E240"),
        ("pin-value-nan", lambda: ir.add_pin(_two_stalks(), "a", "value", value=[1.0, np.nan]), "E232"),
        ("pin-value-complex", lambda: ir.add_pin(_two_stalks(), "a", "value", value=[1j, 1]), "E240"),
        ("pin-source", lambda: ir.add_pin(_two_stalks(), "a", "magic"), "E243"),
        ("pin-coordinate-twice", lambda: (lambda G: (ir.add_pin(G, "a", "input"),
                                                     ir.add_pin(G, "a", "value", value=[1, 2])))(_two_stalks()),
         "E242"),
        ("pin-indices-on-input", lambda: ir.add_pin(_two_stalks(), "a", "input", indices=[0]), "E243"),
        ("soft-pin-weight", lambda: ir.add_soft_pin(_two_stalks(), "s", "a", [1, 2], -1.0), "E250"),
        ("soft-pin-length", lambda: ir.add_soft_pin(_two_stalks(), "s", "a", [1, 2, 3], 1.0), "E240"),
    ]


def _api_files(tmp: Path) -> None:
    P = _api_sheaf().init_params(seed=0)
    np.savez(tmp / "short.npz", W1=np.zeros((4, 2)))
    np.savez(tmp / "misshapen.npz", **{**P, "W1": np.zeros((3, 3))})
    np.save(tmp / "one.npy", np.zeros(3))
    write(tmp / "trunc.npz", truncated(npz_bytes(**P)))


_API_IDS = [c[0] for c in _api_cases(Path("<ids>"))]  # the calls are not made here


@pytest.mark.parametrize("index", range(len(_API_IDS)), ids=_API_IDS)
def test_api_misuse_raises_the_checkers_code(index, tmp_path, monkeypatch):
    """Every misuse raises SheafError with the code the checker (or the command) uses: never a raw numpy,
    Key, Index, Type or Value error, and never a silent acceptance."""
    from sheafdsl.errors import SheafError

    monkeypatch.chdir(tmp_path)
    _api_files(tmp_path)
    name, call, code = _api_cases(tmp_path)[index]
    with pytest.raises(SheafError) as info:
        call()
    assert code in info.value.codes, (name, info.value.codes, str(info.value))
    assert all(d.message for d in info.value.diagnostics)


def test_api_accepts_numpy_integers_and_paths(tmp_path):
    """Valid input in its numpy or pathlib form is not rejected: np.int64 seeds, PathLike files."""
    sh = _api_sheaf()
    a, b = sh.init_params(seed=np.int64(3)), sh.init_params(seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    np.savez(tmp_path / "p.npz", **a)
    loaded = sh.load_params(tmp_path / "p.npz")
    assert all(np.array_equal(loaded[k], a[k]) for k in a)
    assert sh.infer({"x": np.array([[1, 2]], dtype=np.int32)}, params=a).stalks["y"].shape == (1, 1)


KINDS = {"internal": "internal errors instead of a diagnostic", "scale": "hangs and memory failures",
         "writes": "writes that fail mid-way", "silent": "silently wrong", "valid": "valid input rejected",
         "misleading": "misleading messages", "lost": "lost data", "other": "umask, pipes, FIFOs, Ctrl-C",
         "api": "the Python modules' misuse (test_api_misuse_raises_the_checkers_code)"}


def test_every_kind_has_cases():
    counts = {k: sum(c.kind == k for c in CASES) for k in KINDS}
    counts["writes"] += 1  # test_full_disk_during_train_keeps_the_last_checkpoint
    counts["other"] += 2  # test_ctrl_c_during_verify_exits_130_with_one_line, ..._spectrum_exits_130
    counts["api"] += len(_API_IDS)  # test_api_misuse_raises_the_checkers_code
    assert all(counts.values()), counts
    assert len({c.id for c in CASES}) == len(CASES)
