"""Checkpoints and the run directory: exact round trips, atomic writes, damaged files, the metrics log."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sheafdsl.errors import SheafError
from sheafdsl.training import checkpoint as C
from sheafdsl.training import run as R


def _state(seed=0):
    rng = np.random.default_rng(seed)
    params = {"W1": rng.normal(size=(30, 2)), "b1": rng.normal(size=30), "W2": rng.normal(size=(1, 30))}
    state = {"params/W1": params["W1"], "adam/m/W1": rng.normal(size=(30, 2)), "step": np.array(17, dtype=np.int64),
             "rng/state": np.array([2 ** 63 + 5, 7], dtype=np.uint64), "flag": np.array(True)}
    return params, state


def test_round_trip_is_bitwise_and_keeps_dtypes(tmp_path):
    params, state = _state()
    base = {"params/W1": -params["W1"], "step": np.array(17)}
    p = tmp_path / "checkpoint.npz"
    C.save_checkpoint(p, params=params, state=state, meta={"step": 17, "config": {"lr": 0.01}}, baseline=base)
    ck = C.load_checkpoint(p)
    assert ck.step == 17 and ck.meta["config"] == {"lr": 0.01} and ck.meta["format"] == C.FORMAT
    assert set(ck.params) == set(params) and set(ck.state) == set(state) and set(ck.baseline) == set(base)
    for src, dst in ((params, ck.params), (state, ck.state), (base, ck.baseline)):
        for k in src:
            assert dst[k].dtype == np.asarray(src[k]).dtype
            assert np.array_equal(dst[k], src[k]), k
    # parameters sit under their own names: a model can `init "checkpoint.npz":W1`
    with np.load(p, allow_pickle=False) as z:
        assert np.array_equal(z["W1"], params["W1"])


def test_no_baseline_loads_as_none(tmp_path):
    params, state = _state()
    C.save_checkpoint(tmp_path / "c.npz", params=params, state=state, meta={"step": 1})
    assert C.load_checkpoint(tmp_path / "c.npz").baseline is None


@settings(max_examples=25, deadline=None)
@given(st.dictionaries(st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,6}", fullmatch=True),
                       hnp.arrays(st.sampled_from([np.float64, np.float32, np.int64]),
                                  hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)),
                       max_size=4))
def test_any_arrays_round_trip_exactly(tmp_path_factory, arrays):
    p = tmp_path_factory.mktemp("ck") / "checkpoint.npz"
    C.save_checkpoint(p, params=arrays, state={k: v for k, v in arrays.items()}, meta={"step": 0})
    ck = C.load_checkpoint(p)
    for k, v in arrays.items():
        assert ck.params[k].dtype == v.dtype and ck.params[k].shape == v.shape
        assert np.array_equal(ck.params[k], v, equal_nan=v.dtype.kind == "f")
        assert np.array_equal(ck.state[k], v, equal_nan=v.dtype.kind == "f")


def _tmp_leftovers(d):
    return [f for f in os.listdir(d) if f.endswith(".tmp")]


def test_crash_while_writing_keeps_previous_checkpoint(tmp_path, monkeypatch):
    """A failure half-way through writing the new file leaves the old checkpoint intact and loadable."""
    p = tmp_path / "checkpoint.npz"
    params, state = _state(0)
    C.save_checkpoint(p, params=params, state=state, meta={"step": 10})
    before = p.read_bytes()

    real_savez = np.savez

    def crashing_savez(fh, **arrays):
        real_savez(fh, **arrays)  # write the whole new content to the temp file...
        fh.truncate(100)          # ...then lose most of it and die, like a crash mid-write
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", crashing_savez)
    p2, s2 = _state(1)
    with pytest.raises(OSError):
        C.save_checkpoint(p, params=p2, state=s2, meta={"step": 20})
    monkeypatch.undo()
    assert p.read_bytes() == before
    ck = C.load_checkpoint(p)
    assert ck.step == 10 and np.array_equal(ck.params["W1"], params["W1"])
    assert _tmp_leftovers(tmp_path) == []


def test_interrupt_before_rename_keeps_previous_checkpoint(tmp_path, monkeypatch):
    p = tmp_path / "checkpoint.npz"
    params, state = _state(0)
    C.save_checkpoint(p, params=params, state=state, meta={"step": 10})

    def no_replace(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(R.os, "replace", no_replace)
    with pytest.raises(KeyboardInterrupt):
        C.save_checkpoint(p, params=_state(1)[0], state=_state(1)[1], meta={"step": 20})
    monkeypatch.undo()
    assert C.load_checkpoint(p).step == 10
    assert _tmp_leftovers(tmp_path) == []


def test_write_goes_through_a_temp_file_and_replace(tmp_path, monkeypatch):
    """The target is only ever touched by os.replace of a fully written, fsync'ed temp file."""
    calls = []
    real_replace, real_fsync = os.replace, os.fsync
    monkeypatch.setattr(R.os, "fsync", lambda fd: (calls.append(("fsync", fd)), real_fsync(fd))[1])
    monkeypatch.setattr(R.os, "replace", lambda a, b: (calls.append(("replace", os.path.basename(a), b)), real_replace(a, b))[1])
    R.atomic_write_text(tmp_path / "x.json", "{}")
    kinds = [c[0] for c in calls]
    assert kinds.index("fsync") < kinds.index("replace")
    rep = [c for c in calls if c[0] == "replace"][0]
    assert rep[1].startswith(".x.json.") and rep[1].endswith(".tmp")
    assert (tmp_path / "x.json").read_text() == "{}"


def test_damaged_or_foreign_files_are_clear_errors(tmp_path):
    bad = tmp_path / "checkpoint.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(SheafError) as e:
        C.load_checkpoint(bad)
    assert e.value.codes == ["E632"]
    np.savez(tmp_path / "plain.npz", W=np.eye(2))
    with pytest.raises(SheafError) as e:
        C.load_checkpoint(tmp_path / "plain.npz")
    assert e.value.codes == ["E632"] and "not a sheafdsl checkpoint" in str(e.value)
    with pytest.raises(SheafError) as e:
        C.load_checkpoint(tmp_path / "missing.npz")
    assert e.value.codes == ["E632"]


def test_object_arrays_are_refused():
    with pytest.raises(TypeError):
        C.checkpoint_arrays({"W": np.array([{"a": 1}], dtype=object)}, {}, {})
    with pytest.raises(ValueError):
        C.checkpoint_arrays({"state/W": np.zeros(1)}, {}, {})


def test_cupy_like_arrays_are_copied_to_host(tmp_path):
    class FakeDevice:
        def __init__(self, a):
            self.a = a

        def get(self):
            return self.a

    C.save_checkpoint(tmp_path / "c.npz", params={"W": FakeDevice(np.arange(3.0))}, state={}, meta={"step": 0})
    assert C.load_checkpoint(tmp_path / "c.npz").params["W"].tolist() == [0.0, 1.0, 2.0]


# ----------------------------------------------------------------------------------------------
# the run directory and metrics.jsonl


def test_metrics_log_skips_a_torn_last_line_and_truncates(tmp_path):
    log = R.MetricsLog(tmp_path / "metrics.jsonl")
    for s in (10, 20, 30):
        log.append({"step": s, "loss": 1.0 / s, "edge_discord": {"aff1": float("nan")}})
    with open(log.path, "a") as fh:
        fh.write('{"step": 40, "loss": 0.0')  # a crash mid-line
    recs = log.read()
    assert [r["step"] for r in recs] == [10, 20, 30]
    assert recs[0]["edge_discord"]["aff1"] is None  # NaN is written as null, the file stays valid JSON
    for line in log.path.read_text().splitlines()[:3]:
        json.loads(line)
    kept = log.truncate_after(20)
    assert [r["step"] for r in kept] == [10, 20] and [r["step"] for r in log.read()] == [10, 20]


def test_run_dir_create_refuses_existing_run_and_files(tmp_path):
    rd = R.RunDir(tmp_path / "run").create()
    (rd.path / "checkpoint.npz").write_bytes(b"x")
    with pytest.raises(SheafError) as e:
        R.RunDir(rd.path).create()
    assert e.value.codes == ["E630"] and "--resume" in e.value.diagnostics[0].hint
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(SheafError) as e:
        R.RunDir(f).create()
    assert e.value.codes == ["E630"]
    with pytest.raises(SheafError) as e:
        R.RunDir(tmp_path / "nope").require_checkpoint()
    assert e.value.codes == ["E631"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SheafError) as e:
        R.RunDir(tmp_path / "empty").require_checkpoint()
    assert e.value.codes == ["E631"]


def test_default_run_dir_is_unique(tmp_path):
    a = R.default_run_dir("para boloid", root=tmp_path, now=0)
    assert a.parent == tmp_path and a.name.startswith("para_boloid-")
    a.mkdir()
    b = R.default_run_dir("para boloid", root=tmp_path, now=0)
    assert b != a and b.name == a.name + "-2"


def test_every_code_is_listed_documented_and_tested():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    mine = ["sheafdsl/training/run.py", "sheafdsl/training/checkpoint.py", "sheafdsl/training/fit.py", "sheafdsl/cli/train.py",
            "sheafdsl/cli/diagnose.py"]
    used = {c for f in mine for c in re.findall(r'"(E6[3-4]\d)"', re.sub(r"codes_between\([^)]*\)", "", (root / f).read_text()))}
    assert used == set(R.DIAGNOSTICS)
    doc = (root / "docs" / "training.md").read_text()
    assert all(f"`{c}`" in doc for c in R.DIAGNOSTICS)
    here = Path(__file__).read_text()
    tests = here[:here.index("def test_every_code_is_listed")] + "".join(
        (root / "tests" / t).read_text() for t in ("test_train_cli.py", "test_resume.py", "test_diagnose.py",
                                                  "test_adversary.py"))
    untested = [c for c in R.DIAGNOSTICS if c not in tests]
    assert not untested, untested
