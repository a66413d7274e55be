"""The PNGs of a run written in forked processes (:func:`sheafdsl.training.plots.write_all`): the same
files as in turn, its jobs really run elsewhere, and an error in any of them reaches the caller as the
same :class:`~sheafdsl.errors.SheafError` (which pickles for that, as for a Dask worker)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from sheafdsl.errors import SheafError
from sheafdsl.fileio import write_error
from sheafdsl.training import plots as P
from sheafdsl.training.trainers import DivergenceError

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the platform does not fork")

RECORDS = [{"step": s, "loss": 1.0 / (1 + s), "test_loss": 1.2 / (1 + s), "lambda_min": 0.1 + 0.001 * s,
            "edge_discord": {"e1": 0.5 / (1 + s), "out": 0.2 / (1 + s)}} for s in range(0, 500, 10)]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    """Threads other tests left (a Dask client's) would make write_all render in turn: the forked path is
    the one under test."""
    monkeypatch.setattr("threading.active_count", lambda: 1)


def _jobs(tmp):
    rng = np.random.default_rng(0)
    return [lambda: P.plot_loss(RECORDS, tmp / "loss.png", title="t"),
            lambda: P.plot_equilibrium_history(RECORDS, tmp / "history.png", title="h"),
            lambda: P.plot_loss(RECORDS[: 10 + int(rng.integers(5))], tmp / "short.png")]


def test_forked_plots_are_the_plots_written_in_turn(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    got = P.write_all(_jobs(tmp_path / "a"))
    monkeypatch.delattr(P.os, "fork")
    want = P.write_all(_jobs(tmp_path / "b"))
    assert [p.name for p in got] == [p.name for p in want] == ["loss.png", "history.png", "short.png"]
    for a, b in zip(got, want):
        assert a.read_bytes() == b.read_bytes()


def test_the_jobs_after_the_first_run_in_other_processes():
    me = os.getpid()
    pids = P.write_all([os.getpid, os.getpid, os.getpid])
    assert pids[0] == me and len(set(pids)) == 3


def test_an_error_in_a_forked_plot_is_raised_here_in_job_order(tmp_path):
    def fails(code):
        def job():
            raise write_error(code, tmp_path / "x.png", OSError(28, "No space left on device"))
        return job

    with pytest.raises(SheafError) as e:
        P.write_all([lambda: P.plot_loss(RECORDS, tmp_path / "loss.png"), fails("E641"), fails("E640")])
    assert e.value.codes == ["E641"] and "No space left" in str(e.value)
    assert (tmp_path / "loss.png").stat().st_size > 0  # the others still wrote theirs

    def dies():
        os._exit(3)

    with pytest.raises(RuntimeError, match="status"):
        P.write_all([lambda: None, dies])


def test_sheaf_errors_pickle_with_their_diagnostics():
    for err in (write_error("E641", "/x/y.png", OSError(28, "No space")), DivergenceError(7, "edge `out`")):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and back.codes == err.codes and str(back) == str(err)
    d = pickle.loads(pickle.dumps(DivergenceError(7, "edge `out`")))
    assert (d.step, d.where) == (7, "edge `out`")


def _picklable_jobs(tmp):
    import functools

    return [functools.partial(P.plot_loss, RECORDS, tmp / "loss.png", title="t"),
            functools.partial(P.plot_equilibrium_history, RECORDS, tmp / "history.png", title="h"),
            functools.partial(P.plot_loss, RECORDS[:12], tmp / "short.png")]


def test_the_plot_process_renders_the_same_files_elsewhere(tmp_path):
    """A PlotProcess started before the run (it imports matplotlib meanwhile) writes the files write_all writes
    here, byte for byte, and its jobs run outside this process; a SIGINT meant for the run leaves it working."""
    import signal

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with P.PlotProcess() as proc:
        assert proc.pid is not None and proc.pid != os.getpid()
        os.kill(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole process group
        got = proc.run(_picklable_jobs(tmp_path / "a"))
    want = P.write_all(_picklable_jobs(tmp_path / "b"))
    assert [p.name for p in got] == [p.name for p in want]
    for a, b in zip(got, want):
        assert a.read_bytes() == b.read_bytes()
    with P.PlotProcess() as proc:
        pids = proc.run([os.getpid, os.getpid])
    assert os.getpid() not in pids and len(set(pids)) == 2


def test_the_plot_process_raises_a_jobs_error_here_and_ends_without_jobs(tmp_path):
    import functools

    with P.PlotProcess() as proc:
        with pytest.raises(SheafError) as e:
            proc.run([functools.partial(_fail, str(tmp_path / "x.png")), os.getpid])
    assert e.value.codes == ["E641"] and proc.pid is None
    proc = P.PlotProcess()
    pid = proc.pid
    proc.close()  # a run that stopped early: the child ends, and is reaped
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, 0)
    with P.PlotProcess() as proc:  # a job that does not pickle (a closure) is rendered here instead
        assert proc.run([lambda: os.getpid()]) == [os.getpid()]


def _fail(path):
    raise write_error("E641", path, OSError(28, "No space left on device"))
