"""What the sheaf trainer's fast phase would cost, decided before step 1 (E604, E540).

Three checks on the chain at its initial parameters, each cheap next to one training step:

- **conditioning.** κ(L_free) at the forward pattern of the first :data:`SAMPLE` training examples is
  bounded below by :func:`sheafdsl.solvers.banded.compliance_bound` (one filter pass). Beyond
  :data:`KAPPA_LIMIT` no float64 solve resolves the equilibrium (a relative error κ·ε ≳ 1): exact
  elimination meets a numerically singular system and the heat equation needs ~√κ iterations. Deep narrow
  ReLU chains reach it: the compliance of the free stalks grows geometrically with depth (about 1e80 for
  500 hidden layers of width 4 at He initialisation). Refused (E604), naming the edge where the bound
  passes the limit; ``--trainer backprop`` solves no linear system.
- **memory.** A pattern solve holds at most 8·B·max(3 Σ_k d_k², 2·ROWS_PER_WIDTH·d_max Σ_k d_k) bytes
  (the banded elimination's gains and means, or the output-space rows it switches from): E540 if that
  does not fit.
- **time.** A step costs at least a forward pass and one pattern solve, 4·B·Σ_k d_{k−1} d_k flops and a
  per-edge overhead: E604 when that lower bound exceeds :data:`STEP_BUDGET_S`.
"""

from __future__ import annotations

from ..errors import Diagnostic, SheafError

#: the largest κ(L_free) lower bound that float64 solves still resolve (κ·ε ≈ 0.1)
KAPPA_LIMIT = 1e15
#: training examples whose forward patterns the conditioning check reads
SAMPLE = 16
#: the most seconds one training step may cost at the least (more: refused up front)
STEP_BUDGET_S = 600.0
#: the cost model of the time bound: dense flops per second, and seconds per edge of the chain per solve
FLOPS, EDGE_OVERHEAD_S = 3e9, 2e-5


def _duration(s: float) -> str:
    return f"{s:,.0f} s" if s < 7200 else f"{s / 3600:,.1f} h"


def check_fast_phase(net, params, X, batch: int, *, solver: str = "exact", file: str = "<input>", xp=None) -> None:
    """Raise E604 (or E540) now when the sheaf trainer's fast phase on ``net`` cannot be done (see the module
    docstring); ``X``: the training inputs, ``batch``: the examples of one step."""
    import numpy as np

    from ..resources import require_memory
    from ..solvers.banded import ROWS_PER_WIDTH, compliance_bound

    xp = xp or np
    layers = net.layers
    widths = [layers[0].d_in] + [l.d_out for l in layers]
    dmax, total, squares = max(widths), sum(widths[1:]), sum(d * d for d in widths[1:])
    require_memory(8.0 * batch * max(3 * squares, 2 * ROWS_PER_WIDTH * dmax * total),
                   f"one pattern solve of the sheaf trainer ({len(layers)} edges, batch {batch:,})",
                   hint="use a smaller --batch, or fewer or narrower layers", file=file)
    flops = 4.0 * batch * sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    least = flops / FLOPS + 2 * len(layers) * EDGE_OVERHEAD_S
    if least > STEP_BUDGET_S:
        raise SheafError(Diagnostic(
            "E604", f"one training step would take at least {_duration(least)} (a forward pass and a pattern solve "
                    f"of {batch:,} examples through {len(layers)} edges, {flops:.1e} flops); the limit is "
                    f"{_duration(STEP_BUDGET_S)}, and nothing was computed",
            hint="use a smaller --batch, fewer or narrower layers, or --backend cupy on a GPU", file=file))
    Xs = xp.asarray(X[:SAMPLE], dtype=float)
    if Xs.shape[0] == 0:
        return
    bound, edge = compliance_bound(net, params, Xs, xp, limit=KAPPA_LIMIT)
    worst = float(bound.max())
    if worst > KAPPA_LIMIT:
        at = f"; it passes {KAPPA_LIMIT:.0e} at edge `{edge}`" if edge else ""
        kappa = "overflows float64" if not np.isfinite(worst) else f"is at least {worst:.1e}"
        raise SheafError(Diagnostic(
            "E604", f"the sheaf trainer cannot resolve this model's equilibrium in float64: κ(L_free) {kappa} at the "
                    f"initial parameters (the forward pattern of a training example; {len(layers)} edges){at}. "
                    f"The {solver} fast phase would meet a numerically singular system; nothing was computed",
            hint="use fewer layers (the compliance grows geometrically with depth) or wider ones, or train with "
                 "--trainer backprop, which solves no linear system", file=file))


__all__ = ["EDGE_OVERHEAD_S", "FLOPS", "KAPPA_LIMIT", "SAMPLE", "STEP_BUDGET_S", "check_fast_phase"]
