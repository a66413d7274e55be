"""The one active-set driver of the exact fast phase; piece solvers plug into it.

ReLU gates make the energy E piecewise: each free gated unit t (a free coordinate that is the tail of a
ReLU edge, value z_t) is in one of three **states** (one encoding, int8, everywhere):

    ON = +1 (gate 1, z_t ≥ 0),   SLIDE = 0 (gate 0, z_t = 0 held),   OFF = −1 (gate 0, z_t ≤ 0).

For fixed states S the energy is convex on the piece P_S; a **piece solver** returns its exact minimiser
z̄ (the unit values of c̄ = argmin over the face of S) and, at sliding units, the one-sided slopes of E
in z_t, g_L (from the inactive side) and g_R (from the active side). The driver owns everything else:

1. start at a feasible point (z, S): the forward pass, or a warm start (the previous equilibrium and its
   states, which stay feasible when the parameters move);
2. **ratio test**: solve the piece (c̄); move from c towards c̄ until the first unit reaches z = 0. A unit
   arriving from the interior of its side enters the adjacent piece (its state flips); a unit already on
   the surface that is pushed across becomes sliding;
3. **release rule** at c̄ (no crossing): a sliding unit with g_L > τ or g_R < −τ can still descend and
   leaves to the side of steeper descent (OFF when g_L + g_R ≥ 0, else ON), τ = RELEASE_TOL · scale of
   the example (the piece solver's force scale);
4. an example is **settled** when neither happens: a consistent (Filippov-stationary) point.

Releasing every descending unit at once is fast. If that step is degenerate (the next ratio test stops
at t = 0: jointly the released units do not descend) the example falls back to releasing only its
steepest unit, for which the piece minimiser provably enters the released side.

E never increases and strictly decreases between pattern minimisers, so no pattern repeats; a
per-example set of visited patterns (the **cycle guard**) stops one all the same, not consistent. The
**iteration limit** is ``maxiter`` (default 2·units + 20) pattern solves; an example still unsettled then
gets the exact solution of the pattern it reports, marked not consistent.

**Subset compaction.** The first iteration solves the whole batch; later ones solve only the unsettled
examples (a settled example would re-solve to itself). A piece solver whose per-call overhead dominates
(``subsets = False``) keeps the whole batch while most of it still moves.

The piece-solver protocol (see :class:`Piece`; implementations: :mod:`.shallow`, :mod:`.chain`,
:mod:`.active_set`)::

    piece.xp, piece.eps_z, piece.subsets
    sol = piece.solve(S, rows, warm, fs)   # S (nb, u) states of the examples ``rows`` (global indices,
                                           # None: all); fs: flat indices of S's sliding units
    sol.z          (nb, u)   unit values at the piece minimiser (sliding units exactly 0)
    sol.ok         (nb,) bool or None: the piece's inner solve converged
    sol.fields     dict name -> (nb, ...) arrays: what the result is built from
    sol.warm       (nb, ...) or None: the inner solve's warm start for these examples' next solve
    sol.slopes(fs) -> (g_L, g_R) at the sliding units (flat indices fs into (nb, u))
    sol.scale(r)   -> the examples' force scales (release tolerance RELEASE_TOL · scale)

Everything is written in ``xp`` functions that numpy and CuPy share; only the cycle guard's pattern keys
go to the host (a few rows, only when units are released).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..lowering.backend import to_numpy

ON, SLIDE, OFF = 1, 0, -1
#: a sliding unit whose one-sided slope allows descent by more than this times the example's force scale
#: is released
RELEASE_TOL = 1e-9
#: a unit value on the wrong side of z = 0 by more than this times (1 + max|pins|) violates its state
SIDE_TOL = 1e-12


class Piece:
    """The interface a piece solver implements (documentation; the driver only duck-types it)."""

    xp = np
    eps_z = 0.0  # the side tolerance ε_z (absolute)
    subsets = True  # compact to the unsettled examples at once
    release_tol = RELEASE_TOL  # releases above release_tol · scale (never coarser than the piece's rtol)

    def solve(self, S, rows, warm, fs):  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class DriverResult:
    """Per-example results of :func:`active_set` (full batch)."""

    fields: dict  # name -> (B, ...): the piece solver's fields at each example's final pattern
    S: object  # (B, u) int8 final states
    consistent: object  # (B,) bool
    iterations: int  # pattern solves of the batch (the loop's iterations)
    cycled: int  # examples stopped by the cycle guard


def loop_limits(n_units: int, pins_max: float, maxiter=None):
    """(iteration bound, ε_z): ``maxiter`` or 2·(free units) + 20 pattern solves; a unit counts as on the
    wrong side of z = 0 beyond ε_z = SIDE_TOL (1 + max|pins|)."""
    return maxiter or (2 * n_units + 20), SIDE_TOL * (1.0 + pins_max)


def cycle_guard(visited: dict, release, ids, key) -> list:
    """For each example i flagged in ``release`` (its states just changed at a pattern minimiser) record the
    new pattern ``key(i)`` (bytes) under its batch index ``ids[i]``; return the i whose pattern had been
    seen before (the caller stops them, not consistent). Cannot trigger in exact arithmetic."""
    repeated = []
    for i in to_numpy(release).nonzero()[0]:
        seen = visited.setdefault(int(ids[i]), set())
        k = key(i)
        if k in seen:
            repeated.append(i)
        seen.add(k)
    return repeated


def _flat(mask):
    """Flat indices of the True entries (array methods: cheaper per call than ``xp.flatnonzero``)."""
    return mask.ravel().nonzero()[0]


def _steepest(fw, rs, rate, single, u, xp):
    """Of the releases ``fw`` (indices into the candidate lists: rows ``rs``, descent rates ``rate``), keep all
    those of examples not flagged ``single`` and, for each flagged one, only its steepest."""
    rows = rs[fw]
    flag = single[rows]
    if not bool(flag.any()):
        return fw
    keep = fw[~flag]
    fl = fw[flag]
    rl = rs[fl]
    uniq = xp.unique(rl)
    table = xp.full((uniq.shape[0], fl.shape[0]), -np.inf)
    pos = xp.searchsorted(uniq, rl)
    table[pos, xp.arange(fl.shape[0])] = rate[fl]
    best = fl[xp.argmax(table, axis=1)]
    return xp.sort(xp.concatenate([keep, best]))


def _take(a, keep):
    return None if a is None else a[keep]


def active_set(piece, z, S, *, maxiter=None, warm=None) -> DriverResult:
    """Run the active-set loop (module docstring) from the feasible start (z, S), both (B, u).

    ``S`` and ``z`` are not written into; ``warm``: the piece solver's inner warm start (B, ...) or None.
    """
    xp = piece.xp
    B, u = S.shape
    maxiter = maxiter or (2 * u + 20)
    eps = piece.eps_z
    gid = None  # the global indices of the examples in the loop's arrays (None: the whole batch)
    zs, ss, ws = z, S, warm
    frozen = None  # examples stopped by the cycle guard during whole-batch iterations
    visited: dict[int, set] = {}
    cycled = 0
    F = S_all = cons = None
    single_g, any_single, last_rel = xp.zeros(B, dtype=bool), False, None
    it = 0
    while True:
        it += 1
        nb = ss.shape[0]
        # units are addressed by flat indices into the (nb, u) arrays: the few that violate, slide or hit a
        # surface are short index lists (numpy's per-call cost, not arithmetic, dominates here)
        fs = _flat(ss == SLIDE)
        sol = piece.solve(ss, gid, ws, fs)
        zb = sol.z
        # ratio test on the segment z -> z̄: the first unit to reach z = 0 from its side
        move = None
        lo, hi = zb < -eps, zb > eps  # violators: ON with z < −ε, OFF with z > ε (sliding: never; in place)
        lo &= ss == ON
        hi &= ss == OFF
        lo |= hi
        fv = _flat(lo)
        if fv.shape[0]:
            zr = zs.ravel()[fv]
            t = xp.maximum(zr / (zr - zb.ravel()[fv]), 0.0)  # zr is 0 or of the other sign: t in [0, 1]
            rv = fv // u  # sorted
            first = xp.ones(rv.shape[0], dtype=bool)  # the first violator of each example
            first[1:] = rv[1:] != rv[:-1]
            rows = rv[first]
            if rows.shape[0] == rv.shape[0]:  # one violator per example (the common case)
                tmin = t
            else:
                tk = xp.full((rows.shape[0], u), np.inf)  # the violating examples' crossing fractions
                tk[xp.cumsum(first) - 1, fv - rv * u] = t
                tmin = tk.min(axis=1)
            sel = tmin < 1.0
            if frozen is not None:
                sel &= ~frozen[rows]
            mr = rows[_flat(sel)]
            if mr.shape[0]:
                move = xp.zeros(nb, dtype=bool)
                move[mr] = True
                tm = xp.ones(nb)
                tm[rows] = xp.minimum(tmin, 1.0)
        if move is not None and last_rel is not None:
            # a release followed by a step of length 0: releasing several units at once did not descend;
            # from now on that example releases one unit at a time (which provably enters its side)
            degenerate = move & last_rel & (tm <= 0.0)
            if bool(degenerate.any()):
                single_g[_flat(degenerate) if gid is None else gid[_flat(degenerate)]] = True
                any_single = True
        single = None if not any_single else (single_g if gid is None else single_g[gid])
        # release rule at a pattern minimiser (an example that moves is not at one)
        newS, release = ss, None
        if fs.shape[0]:
            gL, gR = sol.slopes(fs)
            fc = _flat((gL > 0) | (gR < 0))  # only the candidates are held to the tolerance
            if fc.shape[0]:
                gL, gR, fc = gL[fc], gR[fc], fs[fc]
                rs = fc // u
                tol = getattr(piece, "release_tol", RELEASE_TOL) * sol.scale(rs)
                want = (gL > tol) | (gR < -tol)
                if move is not None:
                    want &= ~move[rs]
                if frozen is not None:
                    want &= ~frozen[rs]
                fw = _flat(want)
                if fw.shape[0] and single is not None:  # one unit per such example: the steepest descent
                    fw = _steepest(fw, rs, xp.maximum(gL, -gR), single, u, xp)
                if fw.shape[0]:
                    newS = ss.copy()
                    newS.ravel()[fc[fw]] = xp.where((gL + gR)[fw] >= 0, OFF, ON).astype(np.int8)
                    release = xp.zeros(nb, dtype=bool)
                    release[rs[fw]] = True
        if move is None and release is None and gid is None and frozen is None:
            # the common case: one solve settled every example
            return DriverResult(sol.fields, ss, sol.ok if sol.ok is not None else xp.ones(nb, dtype=bool), it, cycled)
        zn = zb
        if move is not None:
            zn = zb.copy()
            zm = zs[mr]
            zn[mr] = zm + tm[mr, None] * (zb[mr] - zm)
            fh = fv[(t <= tm[rv] * (1 + 1e-9) + 1e-15) & move[rv]]  # the units that reach the surface at tm
            if newS is ss:
                newS = ss.copy()
            # from the interior: enter the adjacent piece; already on the surface: slide
            # ("on the surface": within ε_z of 0, so that round-off in a piece solver does not decide)
            newS.ravel()[fh] = xp.where(xp.abs(zs.ravel()[fh]) <= eps, SLIDE, -ss.ravel()[fh]).astype(np.int8)
            zn.ravel()[fh] = 0.0
            finished = ~move
        else:
            finished = xp.ones(nb, dtype=bool)
        ok = finished
        if release is not None:
            finished = finished & ~release
            host = to_numpy(newS)
            ids = np.arange(nb) if gid is None else to_numpy(gid)
            rep = cycle_guard(visited, release, ids, lambda i: host[i].tobytes())
            ok = finished
            if rep:
                cyc = xp.zeros(nb, dtype=bool)
                cyc[xp.asarray(rep)] = True
                cycled += len(rep)
                finished = finished | cyc
                ok = finished & ~cyc
                newS[cyc] = ss[cyc]  # it stops at the pattern just solved (its fields are that pattern's)
                if gid is None:
                    frozen = cyc if frozen is None else frozen | cyc
        if frozen is not None and gid is None:
            ok = ok & ~frozen
        if sol.ok is not None:
            ok = ok & sol.ok
        if gid is None:
            if bool(finished.all()):  # one solve settled every example (the common case)
                return DriverResult(sol.fields, newS, ok, it, cycled)
            if not piece.subsets and 2 * int(finished.sum()) < nb and it < maxiter:
                zs, ss, ws, last_rel = zn, newS, sol.warm, release  # most examples still move: the whole batch
                continue
            # from here on only the unsettled examples are solved; these arrays (fresh from the solve)
            # hold the settled examples' results
            F = sol.fields
            S_all = newS.copy() if newS is S else newS
            cons = ok
            keep = gid = _flat(~finished)
        else:
            fi = _flat(finished)
            if fi.shape[0] == 0 and it < maxiter:  # nobody settled: the same examples go on as they are
                zs, ss, ws, last_rel = zn, newS, sol.warm, release
                continue
            g = gid[fi]
            every = fi.shape[0] == nb  # the last subset, typically: its arrays as they are
            for name, a in sol.fields.items():
                F[name][g] = a if every else a[fi]
            S_all[g], cons[g] = (newS, ok) if every else (newS[fi], ok[fi])
            keep = _flat(~finished)
            gid = gid[keep]
        if gid.shape[0] == 0:
            break
        if it >= maxiter:  # out of iterations: the exact solution at the current pattern, not consistent
            ss = newS[keep]
            last = piece.solve(ss, gid, _take(sol.warm, keep), _flat(ss == SLIDE))
            for name, a in last.fields.items():
                F[name][gid] = a
            S_all[gid], cons[gid] = ss, False
            break
        zs, ss, ws, last_rel = zn[keep], newS[keep], _take(sol.warm, keep), _take(release, keep)
    return DriverResult(F, S_all, cons, it, cycled)
