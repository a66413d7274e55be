"""Batch-sharded training: the fast phase of every step solved on the workers, one reduction per step.

The per-example problems of a step share θ and nothing else (the book's Prop. 12.6), so the training
set is cut into contiguous shards, one per worker, each held there as a trainer of the same class over
its rows (:mod:`.worker`). Step t on the driver:

1. the batch I_t (the trainer's own mini-batch order) is split by shard, I_t = ∪_k I_t^k;
2. θ_t is broadcast with the rows I_t^k of each shard and max |pin| over I_t (the solver's side
   tolerance is a property of the whole batch);
3. each worker solves its rows, warm-started from the equilibria it keeps, and returns the sums
   Σ_{i∈I_t^k} ℓ_i and Σ_{i∈I_t^k} ∂E_i/∂θ;
4. the driver reduces, g = (1/|I_t|) Σ_k Σ_{i∈I_t^k} ∂E_i/∂θ (a trainer that sums, the joint rule, skips
   the 1/|I_t|), and takes the optimiser step exactly as one process does (parameter sheaf, finiteness
   checks, optimiser, all in :meth:`~sheafdsl.training.trainers.Trainer.step`).

So the parameters agree with one process to round-off in the order of the sums (1e-12 after a run;
``tests/test_distributed.py``).

**Faults.** The driver keeps the shards' state as of the last synchronisation (the start, every
:data:`SYNC_EVERY` steps and every checkpoint, when it gathers it anyway) and the θ and rows of each
step since. A shard whose worker died (or that answers for another step) is rebuilt on a live worker
from that state and replays its steps since, deterministically, so the run ends with the same result.
"""

from __future__ import annotations

import os
import pickle
import time
import uuid

import numpy as np

from ..errors import Diagnostic, SheafError
from ..lowering import to_numpy
from ..training.data import Dataset
from . import worker as W

#: steps between two gatherings of the shards' state (bounds what a lost shard replays)
SYNC_EVERY = 100
#: seconds between two checks that the workers a step waits for are alive
POLL = 0.25
#: rebuilds of one step's shards before giving up (E704)
MAX_REBUILDS = 5
#: seconds to open and connect a worker's step channel before the steps go through Dask instead
CHANNEL_TIMEOUT = 5.0


def _host(a):
    return np.asarray(to_numpy(a))


class _Lost:
    """The answer of a shard whose worker is gone before the call: None (rebuild it)."""

    def result(self, timeout=None):
        return None


_LOST = _Lost()


def _answer(reply: tuple):
    """A step's result from its unpickled reply (:func:`~.worker.step_reply`); the step's own error raised."""
    _, ok, value = reply
    if not ok:
        raise value
    return value


class _Step:
    """The answer of a shard's step through its Dask endpoint (:meth:`~.worker.ShardEndpoint.step`)."""

    __slots__ = ("future",)

    def __init__(self, future):
        self.future = future

    def result(self, timeout=None):
        return _answer(pickle.loads(self.future.result(timeout=timeout)))


class _Channeled:
    """The answer of a shard's step sent on its worker's step channel (:meth:`~.worker.ShardEndpoint.open`).

    Replies come in the order of the requests; one with another request number answers a request of a
    step the driver abandoned, and is skipped. A closed channel is a dead worker: ConnectionResetError."""

    __slots__ = ("conn", "tag")

    def __init__(self, conn, tag):
        self.conn, self.tag = conn, tag

    def result(self, timeout=None):
        try:
            while True:
                if not self.conn.poll(timeout):
                    raise TimeoutError(f"no answer in {timeout} s")
                reply = pickle.loads(self.conn.recv_bytes())
                if reply[0] == self.tag:
                    return _answer(reply)
        except EOFError:
            raise ConnectionResetError("the worker closed its step channel") from None


def split_rows(n: int, k: int) -> list[tuple[int, int]]:
    """``k`` contiguous ranges [a, b) covering 0..n-1, sizes differing by at most one.

    >>> split_rows(10, 3)
    [(0, 4), (4, 7), (7, 10)]
    """
    q, r = divmod(int(n), int(k))
    out, a = [], 0
    for j in range(int(k)):
        b = a + q + (1 if j < r else 0)
        out.append((a, b))
        a = b
    return out


class ShardedTrainer:
    """The driver's side of a sharded trainer; mixed in before a trainer class by :func:`sharded_class`.

    Everything but :meth:`_gradients` (and where the per-example state lives) is the trainer's own.
    """

    #: how the trainer reduces its per-example gradients: "mean" (sheaf rule, backprop) or "sum" (joint)
    reduce = "mean"

    def attach(self, cluster, shards: int | None = None) -> None:
        """Cut the training set into ``shards`` (default: one per worker) on ``cluster``."""
        if getattr(self, "flow", None) is not None:  # the joint rule's fused step runs in one process: the
            self.flow = None                         # driver takes the plain step, whose _gradients is the shards'
        if self.reduce == "sum" and getattr(self.config, "joint_reinit", 0):
            raise SheafError(Diagnostic("E705", "the joint flow's stalk restarts (joint_reinit) are not sharded: "
                                                "the stalks live on the workers",
                                        hint="train without --workers/--scheduler, or without --stalk-reinit"))
        self.cluster, self.client = cluster, cluster.client
        k = max(1, min(int(shards or len(cluster.workers())), self.n_train))
        self._ranges = split_rows(self.n_train, k)
        self._token = f"sheafdsl-{uuid.uuid4().hex}/"
        self._where: list[str | None] = [None] * k  # the worker holding each shard (None: to be placed)
        self._endpoints: dict = {}  # worker address -> its ShardEndpoint actor
        self._channels: dict = {}  # worker address -> its step channel (a Connection), or None: through Dask
        self._authkey = os.urandom(32)  # what the workers' step channels ask of this driver
        self._requests = 0  # step requests sent (their numbers tag the replies)
        self._dead: set = set()  # the workers seen to die (a restarted worker comes back at a new address)
        pending = getattr(self, "_pending_state", None) or {}
        self._base = self._split_state(pending)  # the shards' state at step _base_step
        self._base_step = int(self.step_count)
        self._log: list[tuple] = []  # (step, θ, max |pin|, rows per shard) of each step since the base
        self._config = self._worker_config()
        self._names = list(self.params)  # the order of θ's entries in a step's messages (worker.pack)
        self._pins_max_all = None  # max |pin| over the whole training set (the full-batch steps')
        self.rebuilds = 0  # shards rebuilt after a fault (or an abandoned step), over the run
        #: seconds over the run: the driver's own work in the steps, waiting for the shards, the slowest shard's
        #: work inside that wait (its wall and its CPU time; all shards' CPU time), and the latency of the
        #: messages of the shard that finished last (driver → worker until its step starts, its end → the
        #: driver: with its solve, the whole wait; a driver and a local worker share one clock)
        self.timing = dict.fromkeys(("driver", "workers", "compute", "compute_cpu", "shards_cpu", "send", "receive"), 0.0)

    def _worker_config(self):
        import dataclasses

        cfg = self.config
        if self.reduce == "sum" and getattr(cfg, "beta", 0) is None:  # the joint rule's β = 1/n of the whole set
            cfg = dataclasses.replace(cfg, beta=float(self.beta))
        return cfg

    # -- shards ------------------------------------------------------------------------------

    def _key(self, k: int) -> str:
        return f"{self._token}{k}"

    def _shard_data(self, k: int) -> Dataset:
        import dataclasses

        a, b = self._ranges[k]
        d = self.data
        return dataclasses.replace(d, X_train=d.X_train[a:b], Y_train=d.Y_train[a:b], X_test=d.X_test[:0],
                                   Y_test=d.Y_test[:0])

    def _split_state(self, state: dict) -> list[dict]:
        """Each shard's rows of a row-indexed trainer state (the training set's warm starts)."""
        return [{k: np.asarray(v)[a:b] for k, v in state.items()} for a, b in self._ranges]

    def _alive(self) -> list[str]:
        # (the scheduler may still list a worker this driver has seen die: it learns of a death later)
        addrs = [a for a in self.cluster.workers() if a not in self._dead]
        if not addrs:
            raise SheafError(Diagnostic("E704", "every worker of the cluster is gone: the sharded run cannot go on",
                                        hint="restart the workers (or use --workers N); the last checkpoint is kept"))
        return addrs

    def _place(self, lost: list[int]) -> None:
        """(Re)build the shards ``lost`` on live workers from the base state, then replay the steps since."""
        if not lost:  # (asking the scheduler which workers live is itself a round trip)
            return
        for attempt in range(MAX_REBUILDS + 1):
            addrs = self._alive()
            held = {a: sum(1 for w in self._where if w == a) for a in addrs}
            P = {k: _host(self.params[k]) for k in self._names}
            futs = {}
            for k in lost:
                addr = min(addrs, key=lambda a: (held[a], addrs.index(a)))  # the least loaded live worker
                held[addr] += 1
                self._where[k] = addr
                try:
                    data = self.client.scatter(self._shard_data(k), workers=[addr], hash=False)  # its rows, once
                except (KeyError, OSError):  # the worker left the scheduler since it was listed
                    self._dead.add(addr)
                    futs[k] = _LOST
                    continue
                futs[k] = self.client.submit(W.shard_init, self._key(k), self.G, self._config, data, P, self._base[k],
                                             self._base_step, self.reduce, workers=[addr], allow_other_workers=False,
                                             pure=False)
            ok = all(v is not None for v in self._wait(futs).values())
            ok = ok and all(self._endpoint(self._where[k]) is not None for k in lost)
            for step, Pl, pm, rows in self._log if ok else ():  # replay: the same θ and rows give the same state
                if any(v is None for v in self._run_step(lost, step, Pl, pm, rows).values()):
                    ok = False
                    break
            if ok:
                return
        raise SheafError(Diagnostic("E704", f"shard(s) {lost} could not be rebuilt: their workers keep dying",
                                    hint="check the workers' memory and logs; the last checkpoint is kept"))

    def _endpoint(self, addr: str):
        """The :class:`~.worker.ShardEndpoint` actor on worker ``addr`` (made once), or None if ``addr`` died."""
        ep = self._endpoints.get(addr)
        if ep is None:
            with self.client.as_current():  # the proxy talks through this client (it is not the default one)
                made = self._wait({0: self.client.submit(W.ShardEndpoint, actor=True, workers=[addr],
                                                         allow_other_workers=False, pure=False)}, {0: addr})[0]
            if made is not None:
                self._endpoints[addr] = ep = made
        return ep

    def _call(self, k: int, fn, *args):
        """``fn(key_k, *args)`` on the worker holding shard ``k``, through its endpoint: an ActorFuture."""
        addr = self._where[k]
        ep = self._endpoint(addr)
        try:
            if ep is None:
                return _LOST
            if fn is W.shard_step:  # the step's hot path: one pickled message each way
                self._requests += 1
                blob = pickle.dumps((self._requests, (self._key(k),) + args), protocol=5)
                conn = self._channel(addr, ep)
                if conn is None:
                    return _Step(ep.step(blob))
                try:
                    conn.send_bytes(blob)
                except OSError:  # the channel's other end is gone: so is its worker
                    self._lose(addr)
                    return _LOST
                return _Channeled(conn, self._requests)
            return ep.run(fn, self._key(k), *args)
        except RuntimeError:  # "Worker holding Actor was lost": the proxy knows its worker died
            self._lose(addr)
            return _LOST

    def _channel(self, addr: str, ep):
        """The step channel to worker ``addr`` (opened once, through its endpoint ``ep``), or None: the steps
        go through Dask (a client told not to reach the workers directly, a ``tls://`` worker, a channel
        that could not be opened or connected in :data:`CHANNEL_TIMEOUT` seconds)."""
        if addr in self._channels:
            return self._channels[addr]
        from multiprocessing import AuthenticationError

        from .cluster import _direct

        conn = None
        if _direct():
            try:
                where = ep.open(self._authkey).result(timeout=CHANNEL_TIMEOUT)
                if where is not None:
                    conn = W.connect(where, self._authkey, CHANNEL_TIMEOUT)
            except (OSError, EOFError, RuntimeError, AuthenticationError):  # (TimeoutError is an OSError)
                conn = None
        self._channels[addr] = conn
        return conn

    def _lose(self, addr: str) -> None:
        """Forget worker ``addr``: it died (its endpoint and step channel are closed with it)."""
        self._endpoints.pop(addr, None)
        conn = self._channels.pop(addr, None)
        if conn is not None:
            conn.close()
        self._dead.add(addr)

    def _wait(self, futs: dict, where: dict | None = None) -> dict:
        """The results of ``futs`` (shard -> future or actor future); None for a shard whose worker died or
        that the worker does not hold at that step. A task's own error (a SheafError of the step) is raised
        here. ``where``: the worker of each future (default: the shard's)."""
        import asyncio
        import concurrent.futures

        where = where or {k: self._where[k] for k in futs}
        out, pending = {}, dict(futs)
        while pending:
            k, f = next(iter(pending.items()))
            try:
                out[k] = f.result(timeout=POLL)  # the task's own exception is raised, as one process would
                del pending[k]
                continue
            except (TimeoutError, asyncio.TimeoutError):  # (TimeoutError is an OSError: first)
                pass
            except (asyncio.CancelledError, concurrent.futures.CancelledError):
                out[k] = None
                del pending[k]
                continue
            except OSError:  # a worker that cannot be reached (the connection closed mid-call)
                out[k] = None
                del pending[k]
                self._lose(where[k])
                continue
            live = self.cluster.workers()
            for j, g in list(pending.items()):
                if where[j] not in live:  # its worker is gone: the call can never be answered
                    if getattr(g, "status", None) == "pending":
                        g.cancel()
                    out[j] = None
                    del pending[j]
                    self._lose(where[j])
        return out

    def _run_step(self, shards, step, P, pins_max, rows) -> dict:
        theta = W.pack(P, self._names)
        return self._wait({k: self._call(k, W.shard_step, step, theta, rows[k], pins_max) for k in shards})

    def _ask(self, fn, args) -> list:
        """``fn(key_k, *args[k])`` on every shard, rebuilding the shards that are lost; results in shard order."""
        out: dict = {}
        todo = list(range(len(self._ranges)))
        for _ in range(MAX_REBUILDS + 1):
            self._place([k for k in todo if self._where[k] is None])
            got = self._wait({k: self._call(k, fn, *args[k]) for k in todo})
            out.update({k: v for k, v in got.items() if v is not None})
            todo = [k for k in todo if got[k] is None]
            if not todo:
                return [out[k] for k in range(len(self._ranges))]
            self.rebuilds += len(todo)
            for k in todo:
                self._where[k] = None
        raise SheafError(Diagnostic("E704", f"shard(s) {todo} could not be solved after {MAX_REBUILDS} rebuilds "
                                            "(their workers keep dying)",
                                    hint="check the workers' memory and logs; the last checkpoint is kept"))

    # -- the step ----------------------------------------------------------------------------

    def _gradients(self, X, Y, idx):
        t0 = time.perf_counter()
        step = int(self.step_count)
        P = {k: _host(self.params[k]).copy() for k in self._names}  # copies: the optimiser steps in place, the log keeps θ_t
        pins_max = self._pins_max(X, Y, idx)
        ih = None if idx is None else _host(idx)
        rows = [None if ih is None else ih[(ih >= a) & (ih < b)] - a for a, b in self._ranges]
        theta = W.pack(P, self._names)
        t1 = time.perf_counter()
        with self._pure():  # the solves change no driver state: a signal may abandon the step here
            res = self._ask(W.shard_step, [(step, theta, r, pins_max) for r in rows])
        t2 = time.perf_counter()
        n = sum(r[4] for r in res)
        loss = sum(r[0] for r in res) / n
        counts = [r[1] for r in res if r[4]]
        cf = None if any(c is None for c in counts) else sum(counts) / n
        sums: dict = {}  # gradient names -> the sum of the shards' packed sums, in shard order (the same sums every run)
        for r in res:
            if r[3] is not None:
                names = tuple(self._names) if r[2] is None else r[2]
                sums[names] = r[3] if names not in sums else sums[names] + r[3]
        c = 1.0 / n if self.reduce == "mean" else 1.0
        shapes = {k: tuple(np.shape(v)) for k, v in self.params.items()}
        grads: dict = {}
        for names, flat in sums.items():
            for name, g in W.unpack(flat * c, names, shapes).items():
                grads[name] = self.xp.asarray(g) if name not in grads else grads[name] + self.xp.asarray(g)
        self._log.append((step, P, pins_max, rows))
        if len(self._log) >= SYNC_EVERY:
            self._sync(step + 1)
        self.timing["driver"] += (t1 - t0) + (time.perf_counter() - t2)
        self.timing["workers"] += t2 - t1
        clocks = [r[5] for r in res]
        self.timing["compute"] += max(c[0] for c in clocks)  # the slowest shard's own solve and update
        self.timing["compute_cpu"] += max(c[1] for c in clocks)
        self.timing["shards_cpu"] += sum(c[1] for c in clocks)
        last = max(clocks, key=lambda c: c[3])  # the shard that finished last: the step's critical path
        self.timing["send"] += last[2] - t1
        self.timing["receive"] += t2 - last[3]
        return loss, cf, grads

    def _pins_max(self, X, Y, idx) -> float:
        """max |pin| over the step's batch (X, Y): the solver's side tolerance, the whole batch's. The full
        training set's (a full-batch step's) is computed once."""
        whole = idx is None and X is self.Xtr and Y is self.Ytr
        if whole and self._pins_max_all is not None:
            return self._pins_max_all
        m = float(max(abs(X).max(), abs(Y).max())) if X.shape[0] else 0.0
        if whole:
            self._pins_max_all = m
        return m

    # -- the per-example state ---------------------------------------------------------------

    def _sync(self, step: int) -> list[dict]:
        """Gather the shards' state at ``step``: the new base a lost shard is rebuilt from."""
        parts = self._ask(W.shard_state, [(step,)] * len(self._ranges))
        self._base, self._base_step, self._log = parts, step, []
        return parts

    def _extra_state(self) -> dict:
        """The training set's per-example state, gathered from the shards (a checkpoint's warm starts)."""
        if getattr(self, "_ranges", None) is None:
            return {}
        parts = self._sync(int(self.step_count))
        keys = set(parts[0])
        if not keys or any(set(p) != keys for p in parts):
            return {}
        return {k: np.concatenate([p[k] for p in parts], axis=0) for k in sorted(keys)}

    def _load_extra(self, state) -> None:
        super()._load_extra(state)  # checked (and held) as one process holds it
        rows = {k: np.asarray(v) for k, v in state.items()
                if k.startswith(("warm.", "stalk.")) and np.ndim(v) >= 1 and np.shape(v)[0] == self.n_train}
        if getattr(self, "_ranges", None) is None:
            self._pending_state = rows
            return
        self._base, self._base_step, self._log = self._split_state(rows), int(self.step_count), []
        self._where = [None] * len(self._ranges)

    def _warm_for(self, X):
        """The logging solves start where one process's do: at the stored equilibria of the first rows."""
        B = X.shape[0]
        if not self.step_count or not hasattr(self, "warm") or B > self.n_train or not bool((X == self.Xtr[:B]).all()):
            return None
        parts = self._ask(W.shard_rows, [(int(self.step_count), np.arange(max(0, min(b, B) - a)))
                                         for a, b in self._ranges])
        parts = [p for p in parts if p and next(iter(p.values())).shape[0]]
        if not parts:
            return None
        state = {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}
        saved = self.warm
        try:
            super()._load_extra(state)
            return super()._warm_for(X)
        finally:
            self.warm = saved

    def close(self) -> None:
        """Forget the shards on the workers (and close the step channels)."""
        for conn in getattr(self, "_channels", {}).values():
            if conn is not None:
                conn.close()
        self._channels = {}
        if getattr(self, "_token", None) and getattr(self, "client", None) is not None:
            try:
                self.client.run(W.drop, self._token)
            except (OSError, RuntimeError):
                pass


def sharded_class(cls: type) -> type:
    """``cls`` (a trainer class) with its batch solved on the cluster's workers."""
    reduce = "sum" if cls.name == "joint" else "mean"
    return type(f"Sharded{cls.__name__}", (ShardedTrainer, cls), {"reduce": reduce})


def sharded_trainer(cluster, G, config, data, params=None, shards: int | None = None):
    """The trainer :func:`~sheafdsl.training.trainers.make_trainer` would make, sharded on ``cluster``."""
    from ..training.trainers import trainer_class

    tr = sharded_class(trainer_class(G, config, data))(G, config, data, params)
    tr.attach(cluster, shards)
    return tr


__all__ = ["ShardedTrainer", "sharded_class", "sharded_trainer", "split_rows", "SYNC_EVERY"]
