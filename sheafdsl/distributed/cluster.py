"""Where the work runs: a Dask ``LocalCluster`` of N worker processes, or a running scheduler.

``sheaf ... --workers N`` starts N single-threaded worker processes on this machine (one BLAS thread
each); ``--scheduler ADDRESS`` joins a cluster started with ``dask scheduler`` and ``dask worker
ADDRESS`` (every worker needs sheafdsl installed). Both give a :class:`Cluster`, a context manager
that closes what it started.
"""

from __future__ import annotations

import logging

from ..errors import Diagnostic, SheafError

#: environment of the worker processes a LocalCluster starts: one BLAS thread each (the workers are the
#: parallelism); malloc keeps freed blocks below 32 MB for reuse instead of unmapping them (Dask's default trim
#: threshold of 64 KiB made every (B, d) temporary of a solve fresh pages)
WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "MALLOC_TRIM_THRESHOLD_": str(1 << 30), "MALLOC_MMAP_THRESHOLD_": str(1 << 25)}
#: Dask's configuration for the processes of a LocalCluster: its scheduler and nannies (in this process) and
#: its workers (a nanny hands its worker the configuration it was made under; an environment variable would
#: lose to it). Dask's defaults wake every process of the cluster about 200 times a second: the workers'
#: statistical profiler samples the solving thread every 10 ms and the event loops' health tick runs every
#: 20 ms in each worker, nanny and the scheduler; memory monitors (100 ms), work stealing (100 ms) and system
#: monitors (500 ms) add to it. On a machine with a core per worker, that CPU is taken from the solves. Here:
#: no profiler, no work stealing (every task and actor is pinned to its worker), the ticks and monitors once
#: a second (the memory limits are still enforced, a second later at most).
CLUSTER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.scheduler.work-stealing": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "1s",
    "distributed.worker.memory.monitor-interval": "1s",
}
#: seconds to wait for a scheduler to answer
CONNECT_TIMEOUT = 10.0
#: seconds to wait for the processes of a LocalCluster to start and register
START_TIMEOUT = 120.0


def _direct() -> bool:
    """Whether the client talks to the workers directly: yes, unless Dask's configuration says no
    (``distributed.client.direct-to-workers: false``, for workers the driver cannot reach). An actor's call
    (every step's) then goes driver → worker → driver; Dask's default sends it through the scheduler's
    proxy, two more hops (and, on a LocalCluster, a loop-back through the driver's own process)."""
    import dask

    direct = dask.config.get("distributed.client.direct-to-workers", None)
    return True if direct is None else bool(direct)


def require_dask():
    """Import ``distributed`` or say how to install it (E700)."""
    try:
        import distributed
    except ImportError:
        raise SheafError(Diagnostic("E700", "running on several workers needs Dask, which is not installed",
                                    hint="pip install 'sheafdsl[distributed]' (dask and distributed)")) from None
    return distributed


class Cluster:
    """A Dask client and, with ``workers=N``, the LocalCluster of N processes it owns.

    ``workers``: start a LocalCluster of that many processes (1 thread each, :data:`WORKER_ENV`);
    ``scheduler``: the address of a running scheduler (``tcp://host:8786``) to join instead.
    """

    def __init__(self, workers: int | None = None, scheduler: str | None = None, *, timeout: float | None = None):
        if (workers is None) == (scheduler is None):
            raise SheafError(Diagnostic("E701", "give either a number of workers or a scheduler address",
                                        hint="--workers N starts N local processes; --scheduler ADDRESS joins a cluster"))
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise SheafError(Diagnostic("E701", f"the number of workers must be a whole number >= 1, not {workers!r}"))
        distributed = require_dask()
        timeout = CONNECT_TIMEOUT if timeout is None else timeout
        self.local = None
        try:
            if workers is not None:
                import dask

                # malloc reads its tunables when a process starts: they must be in the environment the worker
                # processes are spawned with (Dask's pre-spawn environment), not set inside them (``env=``)
                pre = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
                pre.update({k: v for k, v in WORKER_ENV.items() if k.startswith("MALLOC_")})
                with dask.config.set({"distributed.nanny.pre-spawn-environ": pre, **CLUSTER_CONFIG}):
                    self.local = distributed.LocalCluster(
                        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                        silence_logs=logging.ERROR, env=dict(WORKER_ENV))
                self.client = distributed.Client(self.local, set_as_default=False, direct_to_workers=_direct())
            else:
                self.client = distributed.Client(scheduler, timeout=timeout, set_as_default=False,
                                                 direct_to_workers=_direct())
        except (OSError, TimeoutError, ValueError) as exc:
            self.close()
            where = f"the scheduler at `{scheduler}`" if scheduler is not None else f"a local cluster of {workers}"
            raise SheafError(Diagnostic("E702", f"cannot reach {where}: {exc}",
                                        hint="start one with `dask scheduler` and `dask worker ADDRESS`, or use "
                                             "--workers N for local processes")) from None
        if workers is not None:  # a loaded machine may start the processes after the cluster object exists
            try:
                self.client.wait_for_workers(workers, timeout=START_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                self.close()
                raise SheafError(Diagnostic("E702", f"the {workers} local worker processes did not start in "
                                                    f"{START_TIMEOUT:g} s ({exc})",
                                            hint="the machine may be overloaded: try fewer --workers")) from None
        if scheduler is not None:
            try:
                self.client.wait_for_workers(1, timeout=timeout)
            except (OSError, TimeoutError) as exc:
                self.close()
                raise SheafError(Diagnostic("E702", f"the scheduler at `{scheduler}` has no workers ({exc})",
                                            hint="start some with `dask worker " + scheduler + "`")) from None

    def workers(self) -> list[str]:
        """The addresses of the live workers, in a fixed (sorted) order."""
        # asked of the scheduler each time: Client.scheduler_info() may answer from a cache without the workers
        info = self.client.sync(self.client.scheduler.identity, n_workers=-1)
        return sorted(info.get("workers", {}))

    def close(self) -> None:
        client, self.client = getattr(self, "client", None), None
        if client is not None:
            client.close()
        if self.local is not None:
            self.local.close()
            self.local = None

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


__all__ = ["Cluster", "require_dask", "WORKER_ENV", "CLUSTER_CONFIG"]

