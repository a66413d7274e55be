"""Beyond one process: batch-sharded solves and training, and Sheaf-ADMM agents, on Dask workers.

The layer after training and solvers (it wraps them; nothing before it imports it, and the core never
imports Dask): :mod:`.cluster` (a LocalCluster of N processes or a running scheduler), :mod:`.trainer`
(the sharded trainers: θ broadcast, per-shard solves warm-started on the workers, one reduction per
step, lost shards rebuilt), :mod:`.worker` (what runs in a worker). Needs the ``[distributed]`` extra;
see docs/distributed.md.
"""

from __future__ import annotations

from ..codes import codes_between
from .cluster import Cluster, require_dask
from .trainer import sharded_trainer, split_rows

#: the codes of this layer: E700–E719
DIAGNOSTICS = codes_between("E700", "E719")

__all__ = ["DIAGNOSTICS", "Cluster", "require_dask", "sharded_trainer", "split_rows"]
