"""The constraint rows of general elimination, kept shared by the batch until a gate makes them differ.

:class:`~sheafdsl.solvers.active_set.Elimination` solves a piece through J = E_R T⁻¹ (k constraint rows:
released pins and sliding units), K = J W⁻² Jᵀ and r = W⁻² Jᵀ λ. J is formed by transposed sweeps along
the plan in reverse: the sensitivity block a_v (k × d_v) of each stalk v gathers F_srcᵀ a_head from the
edges leaving it. Those blocks do not depend on the example until the sweep crosses a ReLU gate (the
released pins are the same coordinates for every example, and a sliding unit's row is only masked
per example afterwards), so, as the chain loop does (:mod:`.chain`), each block is kept in the
cheapest of three forms:

- shared: one (k, d) array for the whole batch (every edge above the first gate);
- gated: a shared parent P (k, d) and the batch's 0/1 gates σ (B, d), a = P ⊙ σ (one gate, or a product
  of gates, below a shared block): its Gram block is Σ_i σ_i P_{:,i} P_{:,i}ᵀ, one (B, d) × (d, k²) product,
  and its pull-back (λ P) ⊙ σ, with no (B, k, d) tensor formed;
- batched: (B, k, d), after a gated block meets a linear map, or where blocks of different forms add.

A branch of the DAG (a stalk that feeds several edges, skip edges included) adds the blocks of its heads;
the sum stays shared when all of them are. The (B, k, M) matrix J is never formed.
"""

from __future__ import annotations

from ..ir.maps import ReluGate

SHARED, GATED, BATCHED = "shared", "gated", "batched"


class SharedRows:
    """J for the plan's edges in the forms above: :meth:`gram` (K = J W⁻² Jᵀ, (B, k, k), a fresh array) and
    :meth:`pull` (r = W⁻² Jᵀ λ, (B, M)).

    ``rows``: the k constraint coordinates (host ints); ``free_src``: edge name -> whether its tail has free
    coordinates (the sweep goes on below it); ``gates``: edge name -> (B, d) 0/1 gates of the piece.
    """

    def __init__(self, ops, plan, gates, rows, free_src, B: int, xp):
        self.ops, self.xp, self.B, self.k = ops, xp, B, len(rows)
        k = self.k
        unit = xp.zeros((k, ops.N))
        unit[xp.arange(k), xp.asarray(rows)] = 1.0
        acc: dict = {}  # (start, stop) of a stalk -> its block (form, a[, σ])

        def block(sl):
            return acc.get((sl.start, sl.stop)) or (SHARED, unit[:, sl])

        self.J = []  # (edge, block) for every edge of the plan
        for e in reversed(plan):
            y = block(e.dst)
            self.J.append((e, y))
            if not free_src[e.name]:
                continue
            if isinstance(e.src_map, ReluGate):
                g = gates[e.name]
                if y[0] == SHARED:
                    c = (GATED, y[1], g)
                elif y[0] == GATED:
                    c = (GATED, y[1], y[2] * g)
                else:
                    c = (BATCHED, y[1] * g[:, None, :])
            else:
                c = (SHARED if y[0] == SHARED else BATCHED,
                     ops._map(e, "src", self._dense(y), nonlinear=False, transpose=True))
            cur = block(e.src)
            if cur[0] == SHARED and c[0] == SHARED:
                acc[(e.src.start, e.src.stop)] = (SHARED, cur[1] + c[1])
            elif cur[0] == SHARED and not bool(xp.any(cur[1])):  # nothing there yet: take the contribution as is
                acc[(e.src.start, e.src.stop)] = c
            else:
                acc[(e.src.start, e.src.stop)] = (BATCHED, self._dense(cur) + self._dense(c))

    def _dense(self, b):
        """The block as an array: (k, d) shared, else (B, k, d)."""
        if b[0] == GATED:
            return b[1][None] * b[2][:, None, :]
        return b[1]

    def gram(self):
        """K = Σ_e J_e W_e⁻² J_eᵀ, (B, k, k): the shared blocks' part once, the gated ones as one product."""
        xp, B, k = self.xp, self.B, self.k
        Ks = xp.zeros((k, k))
        Kb = None
        for e, y in self.J:
            w2 = self.ops.w2[e.rows]
            if y[0] == SHARED:
                Ks += (y[1] / w2) @ y[1].T
                continue
            if y[0] == GATED:
                P = y[1]
                outer = (P.T[:, :, None] * P.T[:, None, :]).reshape(P.shape[1], k * k)  # (d, k²)
                part = ((y[2] / w2) @ outer).reshape(B, k, k)
            else:
                part = xp.matmul(y[1] / w2, xp.swapaxes(y[1], 1, 2))
            Kb = part if Kb is None else Kb + part
        K = xp.broadcast_to(Ks, (B, k, k))
        return K.copy() if Kb is None else K + Kb

    def pull(self, lam):
        """r = W⁻² Jᵀ λ for λ (B, k): (B, M), zero on the edges outside the plan."""
        xp = self.xp
        r = xp.zeros((lam.shape[0], self.ops.M))
        for e, y in self.J:
            w2 = self.ops.w2[e.rows]
            if y[0] == SHARED:
                r[:, e.rows] = (lam @ y[1]) / w2
            elif y[0] == GATED:
                r[:, e.rows] = (lam @ y[1]) * (y[2] / w2)
            else:
                r[:, e.rows] = xp.einsum("bk,bkd->bd", lam, y[1]) / w2
        return r


__all__ = ["SharedRows"]
