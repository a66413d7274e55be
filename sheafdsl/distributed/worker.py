"""What runs inside a Dask worker process: the shards' state and the tasks on it.

A shard is a contiguous range of rows of the training set, held by one worker as an ordinary trainer
of the same class, config and parameters as the driver's, over those rows only (so the algorithm of a
step is the trainer's own, never a copy). Its state (the warm-start equilibria of its examples,
:meth:`~sheafdsl.training.trainers.Trainer._extra_state`) stays on the worker between steps, in
:data:`SHARDS`, keyed by the run's token and the shard's number; each state knows the step it is at,
so a task that finds no state, or a state at another step (a new worker after a crash, a step the
driver abandoned), answers ``None`` and the driver rebuilds that shard (:mod:`.trainer`).
"""

from __future__ import annotations

import pickle
import socket
import threading

import numpy as np

#: key -> _Shard, in this worker process
SHARDS: dict = {}
#: held by every function of this module that reads or changes the shards: a step runs in a step channel's
#: thread, the other calls in Dask's (a task's, the actor's), and a step the driver abandoned may still be
#: running when it asks for the state (which then waits, and sees the step that step left)
LOCK = threading.RLock()
#: seconds a step channel waits for the driver to connect (it does so right after opening it)
CHANNEL_ACCEPT_TIMEOUT = 30.0


class _Shard:
    __slots__ = ("trainer", "step", "reduce", "names")

    def __init__(self, trainer, step: int, reduce: str, names):
        self.trainer, self.step, self.reduce, self.names = trainer, int(step), reduce, tuple(names)


def pack(arrays: dict, names) -> np.ndarray:
    """The arrays ``arrays[name]`` for ``name`` in ``names``, raveled and concatenated: one float64 vector
    (what a step sends each way: θ out, the gradient sums back)."""
    return np.concatenate([np.asarray(arrays[k], dtype=float).ravel() for k in names]) if names else np.zeros(0)


def unpack(flat: np.ndarray, names, shapes: dict) -> dict:
    """:func:`pack`'s inverse: {name: view of ``flat`` with ``shapes[name]``}."""
    out, a = {}, 0
    for k in names:
        b = a + int(np.prod(shapes[k], dtype=int))
        out[k] = flat[a:b].reshape(shapes[k])
        a = b
    return out


def _locked(fn):
    """``fn`` holding :data:`LOCK`."""
    import functools

    @functools.wraps(fn)
    def locked(*args, **kwargs):
        with LOCK:
            return fn(*args, **kwargs)

    return locked


def _host(a):
    from ..lowering import to_numpy

    return np.asarray(to_numpy(a))


def _address() -> str:
    from distributed import get_worker

    return get_worker().address


@_locked
def shard_init(key: str, G, config, data, params: dict, state: dict, step: int, reduce: str) -> str:
    """Make (or replace) shard ``key`` here: a trainer over the shard's rows ``data``, with ``params``, the
    shard's part of the trainer state ``state`` (its rows of the warm starts; {} before the first step),
    at step ``step``. The order of ``params`` is the order of θ's and the gradients' entries in a step's
    messages (:func:`pack`). Returns this worker's address."""
    from ..training.trainers import make_trainer

    tr = make_trainer(G, config, data, params=params)
    tr.step_count = int(step)
    if state:
        tr._load_extra(state)
    SHARDS[key] = _Shard(tr, step, reduce, list(params))
    return _address()


@_locked
def shard_step(key: str, step: int, theta: np.ndarray, idx, pins_max):
    """Step ``step`` of shard ``key``: the trainer's own fast phase and local update on its rows ``idx``
    (None: all of them) with the broadcast parameters θ (``theta``: :func:`pack`'s vector, in the
    shard's parameter order). Returns (loss sum, consistent count or None, gradient names, gradient sums,
    rows, clocks) — sums over the shard's examples, for the driver to reduce; the gradient sums packed
    in the order of their names (None: the shard's parameter order), both None when none of the batch is
    here — or None when this worker does not hold the shard at that step. ``clocks`` = (seconds, CPU
    seconds of this thread, perf_counter at entry, at exit): the step's cost here, and when it ran (the
    driver's and a local worker's perf_counter are one clock, so the benchmark splits the messages'
    latency from the work)."""
    import time

    t0, c0 = time.perf_counter(), time.thread_time()
    sh = SHARDS.get(key)
    if sh is None or sh.step != int(step):
        return None
    tr = sh.trainer
    xp = tr.xp
    shapes = {k: tuple(v.shape) for k, v in tr.params.items()}
    tr.params = {k: xp.asarray(v, dtype=float) for k, v in unpack(theta, sh.names, shapes).items()}
    tr.batch_pins_max = pins_max
    X, Y = (tr.Xtr, tr.Ytr) if idx is None else (tr.Xtr[xp.asarray(idx)], tr.Ytr[xp.asarray(idx)])
    n = int(X.shape[0])
    if n == 0:  # none of this step's batch is here: the state the first step leaves, nothing to add
        tr._start_warm()
        loss, count, names, out = 0.0, 0, None, None
    else:
        with np.errstate(over="ignore", invalid="ignore"):  # the driver checks finiteness, as one process does
            loss, cf, grads = tr._gradients(X, Y, None if idx is None else xp.asarray(idx))
        scale = float(n) if sh.reduce == "mean" else 1.0
        names = [k for k in sh.names if k in grads] + sorted(k for k in grads if k not in sh.names)
        out = pack({k: _host(grads[k]) for k in names}, names) * scale
        names = None if tuple(names) == sh.names else tuple(names)
        count = None if cf is None else int(round(float(cf) * n))
    sh.step = int(step) + 1
    tr.step_count = sh.step
    t1 = time.perf_counter()
    return float(loss) * n, count, names, out, n, (t1 - t0, time.thread_time() - c0, t0, t1)


def step_reply(blob: bytes) -> bytes:
    """The answer to a step's request ``blob``, pickled (n, args): the driver's request number n and the
    arguments of :func:`shard_step`. Returns pickled (n, True, its result), or (n, False, the exception the
    step raised: a SheafError, which the driver raises as one process would)."""
    n, args = pickle.loads(blob)
    try:
        out = (True, shard_step(*args))
    except Exception as exc:  # noqa: BLE001 (any error of the step is the driver's to raise)
        out = (False, exc)
    try:
        return pickle.dumps((n,) + out, protocol=5)
    except Exception:  # noqa: BLE001 (an error that does not pickle still reaches the driver)
        return pickle.dumps((n, False, RuntimeError(f"{type(out[1]).__name__}: {out[1]}")), protocol=5)


def _serve(listener: socket.socket, authkey: bytes) -> None:
    """One driver's step channel: accept its connection (authenticated by ``authkey``, HMAC challenges both
    ways), then answer its step requests (:func:`step_reply`) until it closes the connection."""
    from multiprocessing import AuthenticationError
    from multiprocessing.connection import Connection, answer_challenge, deliver_challenge

    try:
        listener.settimeout(CHANNEL_ACCEPT_TIMEOUT)
        sock, _ = listener.accept()
    except OSError:
        return
    finally:
        listener.close()
    sock.settimeout(None)  # (a blocking descriptor: Connection reads it with os.read)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = Connection(sock.detach())
    try:
        deliver_challenge(conn, authkey)
        answer_challenge(conn, authkey)
        while True:
            conn.send_bytes(step_reply(conn.recv_bytes()))
    except (EOFError, OSError, AuthenticationError):
        pass
    finally:
        conn.close()


def connect(address, authkey: bytes, timeout: float):
    """The driver's end of a step channel opened by :meth:`ShardEndpoint.open` at ``address`` (host, port):
    a ``multiprocessing.connection.Connection``, authenticated both ways with ``authkey``."""
    from multiprocessing.connection import Connection, answer_challenge, deliver_challenge

    sock = socket.create_connection(tuple(address), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(None)
    conn = Connection(sock.detach())
    try:
        answer_challenge(conn, authkey)
        deliver_challenge(conn, authkey)
    except BaseException:
        conn.close()
        raise
    return conn


class ShardEndpoint:
    """A Dask actor, one per worker: the driver's direct line to the shards held in this process.

    A task goes driver → scheduler → worker → scheduler → driver; an actor's method call goes driver →
    worker → driver, so a step's round trip costs about a fifth of a task's (2–3 ms against 10–14 ms on
    a 2-core machine). It holds no state of its own: :meth:`run` calls one of this module's functions
    on :data:`SHARDS`, which the actor shares with the tasks (``shard_init``) of the same process.

    A step itself goes through a **step channel** where one can be opened (:meth:`open`): a TCP
    connection from the driver to this process, one pickled message each way, without Dask's event loops
    (an actor's call costs about 0.5 ms of the driver's CPU in Dask's protocol and loop, and the calls of
    a step to the workers are made one after the other there; a message on the channel costs tens of
    microseconds). :meth:`step` is the same call through Dask, where there is no channel.
    """

    def run(self, fn, *args):
        """``fn(*args)`` here, ``fn`` one of :func:`shard_state`, :func:`shard_rows` (or :func:`shard_step`)."""
        return fn(*args)

    def step(self, blob: bytes) -> bytes:
        """:func:`step_reply` to ``blob``: a step's call through Dask.

        A step's call is one pickled message each way: Dask serialises each argument of an actor's call
        (and a dict of arrays array by array) at about 0.1 ms of CPU apiece on this machine, six times
        the cost of pickling them together (protocol 5); θ and the gradient sums are one vector each."""
        return step_reply(blob)

    def open(self, authkey: bytes):
        """Listen for one driver's step channel on this worker's host (a port of the system's choosing;
        the connection must answer ``authkey``'s challenge) and serve it in a thread of its own; returns
        (host, port), or None where this worker is not on plain TCP (a ``tls://`` cluster keeps its steps on
        Dask's encrypted connections)."""
        from urllib.parse import urlsplit

        where = urlsplit(_address())
        if where.scheme != "tcp" or not where.hostname:
            return None
        family = socket.AF_INET6 if ":" in where.hostname else socket.AF_INET
        listener = socket.create_server((where.hostname, 0), family=family)
        threading.Thread(target=_serve, args=(listener, bytes(authkey)), daemon=True,
                         name="sheafdsl-step-channel").start()
        return listener.getsockname()[:2]


@_locked
def shard_state(key: str, step: int):
    """The shard's part of the trainer state at step ``step`` (host arrays), or None if not held here."""
    sh = SHARDS.get(key)
    if sh is None or sh.step != int(step):
        return None
    return {k: _host(v) for k, v in sh.trainer._extra_state().items()}


@_locked
def shard_rows(key: str, step: int, rows):
    """Rows ``rows`` (shard-local) of the shard's row-indexed trainer state, or None if not held here."""
    st = shard_state(key, step)
    if st is None:
        return None
    return {k: v[np.asarray(rows)] for k, v in st.items()}


@_locked
def drop(prefix: str) -> int:
    """Forget every shard whose key starts with ``prefix`` (the end of a run); returns how many."""
    keys = [k for k in SHARDS if k.startswith(prefix)]
    for k in keys:
        del SHARDS[k]
    return len(keys)
