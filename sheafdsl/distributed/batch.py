"""Batched solves split over the workers: ``sheaf infer --workers`` and ``sheaf spectrum --samples --workers``.

The examples of a batch (or the sampled activation patterns of a spectrum) are independent problems,
so the batch is cut into one contiguous piece per worker, each piece solved there by the same function
one process calls on the whole batch (:func:`sheafdsl.api.harmonic_extension`,
:func:`sheafdsl.analysis.spectrum.sample_extremes`), and the pieces are put back in order. The pieces
travel inside the tasks, so a worker that dies has its piece recomputed on another (Dask retries it).

A batch of consensus instances is cut the same way; since ADMM's ρ is shared by the instances it
solves together, each piece adapts its own ρ, so those pieces agree with one process to the solver's
tolerance (not to round-off, as the other solvers' pieces do).
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import Diagnostic, SheafError
from .trainer import split_rows


class ShardedResult:
    """What a sharded solve leaves of its pieces' results: the per-example fields, concatenated."""

    def __init__(self, parts):
        self.parts = parts
        res = [p.result for p in parts]
        self.converged = np.concatenate([np.asarray(p.converged) for p in parts])
        self.energy = np.concatenate([np.asarray(p.energy) for p in parts])
        self.batch = int(self.converged.shape[0])
        self.iterations = max(int(p.iterations) for p in parts)
        for name in ("primal_tolerance", "dual_tolerance"):
            vals = [getattr(r, name, None) for r in res]
            if all(v is not None for v in vals):
                setattr(self, name, np.concatenate([np.ravel(np.asarray(v)) for v in vals]))


def _submit_all(cluster, fn, pieces, *args, **kw):
    """``fn(piece, *args, **kw)`` for every piece on the cluster, results in order (Dask retries a piece
    whose worker dies, on another: the piece is part of its task)."""
    client = cluster.client
    with warnings.catch_warnings():  # a large piece in a task is what makes it recoverable: no advice needed
        warnings.filterwarnings("ignore", message=".*[Ll]arge (object|graph).*")
        futs = [client.submit(fn, piece, *args, pure=False, **kw) for piece in pieces]
        return client.gather(futs)


def _infer_piece(boundary, G, params, kw):
    from ..api import harmonic_extension
    from ..lowering import to_numpy

    out = harmonic_extension(G, params, boundary, **kw)
    host = lambda a: None if a is None else np.asarray(to_numpy(a))  # noqa: E731
    res = out.result
    out.result = type("PieceResult", (), {n: host(getattr(res, n, None)) for n in ("primal_tolerance", "dual_tolerance")})()
    return out


def sharded_inference(cluster, G, params, boundary: dict, *, batch: bool, **kw):
    """:func:`sheafdsl.api.harmonic_extension` of ``boundary`` with its examples split over ``cluster``'s
    workers: the same :class:`~sheafdsl.api.Inference`, its ``result`` a :class:`ShardedResult`."""
    from ..api import Inference
    from ..solvers.consensus import _batch_of_params

    B = next(iter(boundary.values())).shape[0] if boundary else None
    if B is None or _batch_of_params(G, params) is not None:
        raise SheafError(Diagnostic("E703", "--workers splits a batch of inputs over the workers; this problem's "
                                            "batch comes from per-instance parameters (or it has no inputs)",
                                    hint="give the instances as --input rows, or run in one process",
                                    file="<command line>"))
    k = max(1, min(len(cluster.workers()), B))
    pieces = [{v: np.asarray(a)[lo:hi] for v, a in boundary.items()} for lo, hi in split_rows(B, k)]
    parts = _submit_all(cluster, _infer_piece, pieces, G, params, dict(kw, batch=True))
    cat = lambda name: None if getattr(parts[0], name) is None else np.concatenate(  # noqa: E731
        [np.asarray(getattr(p, name)) for p in parts])
    stalks = {v: np.concatenate([p.stalks[v] for p in parts]) for v in parts[0].stalks}
    return Inference(stalks, cat("energy"), cat("converged"), cat("consistent"), cat("residual"),
                     max(p.iterations for p in parts), parts[0].solver, batch, ShardedResult(parts),
                     objective=cat("objective"), primal_residual=cat("primal_residual"),
                     dual_residual=cat("dual_residual"))


def _spectrum_piece(states, G, params, dense_cutoff, vectors):
    from ..analysis.spectrum import extreme_vectors, sample_extremes

    vecs = [extreme_vectors(G, params, s, g, dense_cutoff=dense_cutoff) for s, g in states] if vectors else None
    return sample_extremes(G, params, states, dense_cutoff=dense_cutoff), vecs


def sharded_spectrum(cluster, G, params, states: list, *, dense_cutoff: int, mode: str, vectors: bool = False):
    """:func:`sheafdsl.analysis.spectrum.spectrum` with the states split over ``cluster``'s workers."""
    from ..analysis.spectrum import summarise

    k = max(1, min(len(cluster.workers()), len(states)))
    pieces = [states[lo:hi] for lo, hi in split_rows(len(states), k)]
    parts = _submit_all(cluster, _spectrum_piece, pieces, G, params, dense_cutoff, vectors)
    rows = [r for part, _ in parts for r in part]
    vecs = [v for _, part in parts for v in part] if vectors else None
    return summarise(G, rows, mode=mode, vectors=vecs)


__all__ = ["sharded_inference", "sharded_spectrum", "ShardedResult"]
