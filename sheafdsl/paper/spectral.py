r"""The spectral and discord items of the paper: Fig 4, Fig E.5, Fig E.6 and Table E.2.

Each trains the paper's [2, 30, 1] ReLU net (unit edge weights, He initialisation, the paraboloid,
300 training and 100 test points, data seed 42) two ways from the same initial parameters:

- **sheaf**: the paper's joint Euler flow of stalks and weights (α = 1, β = 1/n_train, dt = 0.005,
  full batch, 100 epochs of 1000 steps = 100k steps, the stalks starting at the forward pass and
  re-initialised there at every epoch, as the paper does);
- **SGD**: backprop with plain SGD, full batch, lr = β·n_train·dt = dt (the flow's own weight step:
  its update is dt·β·Σ_i ∇θ E_i = dt · mean_i ∇θ E_i), the same number of steps.

Both runs keep snapshots (:mod:`sheafdsl.training.snapshots`) on a log grid of steps that includes
the paper's three stages 1k, 20k and 100k; the items analyse those snapshots:

- **E5** (spectral evolution): λ_min, λ_max and κ of L_free over training, for 50 test inputs at
  the activation pattern of their forward pass, in the two conventions of which stalks are free:
  *training* (x and y pinned: the system the training flow relaxes) and *inference* (x pinned, y
  free: the heat equation whose limit is the forward pass); the medians over the inputs with their
  range, and the whole spectrum at the three stages;
- **E6** (discord residuals): the per-edge discord ½‖(δc*)_e‖² at the two-sided equilibrium (x and y
  pinned, solved exactly) over the training set, at the three stages, sheaf against SGD;
- **tableE2** (pinned discord profiles): the same at the end of training, per edge, per type and per
  layer, with each edge's share of the residual, on the training and the test set.

``ctx.quick`` scales the schedule down (1000 steps in epochs of 250, stages at 50, 200, 1000; 8 inputs).
"""

from __future__ import annotations

import numpy as np

from .lab12 import net_text

#: the paper's setting of these items
WIDTHS = (2, 30, 1)
N_TRAIN, N_TEST, DATA_SEED = 300, 100, 42
DT, EPOCH = 0.005, 1000
FULL = dict(steps=100_000, stages=(1000, 20_000, 100_000), inputs=50, per_decade=4, logs=50, epoch=EPOCH)
QUICK = dict(steps=1000, stages=(50, 200, 1000), inputs=8, per_decade=1, logs=1, epoch=250)
#: where the paper's numbers are not available on this machine, the items say so in their JSON
NO_PAPER_NUMBERS = "the paper's values for this item are not on this machine (its figures show no table of numbers we could set beside ours)"


def schedule(steps: int, stages, per_decade: int = 4) -> list[int]:
    """The snapshot steps: 0, a log grid of ``per_decade`` steps a decade up to ``steps``, and the ``stages``.

    >>> schedule(1000, (100, 1000))[:6]
    [0, 1, 2, 3, 6, 10]
    >>> schedule(1000, (50, 200, 1000), per_decade=1)
    [0, 1, 10, 50, 100, 200, 1000]
    """
    decades = np.log10(max(int(steps), 1))
    grid = np.round(np.logspace(0, decades, int(round(per_decade * decades)) + 1))
    return sorted({0, *map(int, grid), *map(int, stages), int(steps)})


def paper_net(widths=WIDTHS, name: str = "net"):
    import sheafdsl as sd

    return sd.loads(net_text(list(widths), name), path=f"<{name}>")


def joint_options(dt: float = DT, epoch: int = EPOCH) -> dict:
    """The paper's joint flow: α = 1, β = 1/n_train (the default), forward Euler with step dt on the stalks
    and the summed weight updates, full batch, the stalks starting at the forward pass and re-initialised
    there every ``epoch`` steps (the paper's epochs)."""
    return dict(trainer="joint", optimizer="sgd", dt=dt, alpha=1.0, joint_init="forward", joint_reinit=epoch)


_CACHE: dict = {}


def trained(widths, kind: str, *, steps: int, snapshot_at, dt: float = DT, seed: int = 42, logs: int = 50,
            epoch: int = EPOCH, log=print):
    """One run of the paper's net ``widths`` from its seeded initialisation: ``kind`` "joint" (the paper's
    flow, step dt, epochs of ``epoch`` steps) or "sgd" (backprop, lr dt), full batch, keeping snapshots at
    ``snapshot_at``; a
    :class:`sheafdsl.api.Fit`, computed once per process for the same settings (``sheaf paper all``
    shares the runs between items)."""
    import sheafdsl as sd
    from ..lowering.backend import blas_threads

    key = (tuple(widths), kind, steps, tuple(snapshot_at), dt, seed, logs, epoch if kind == "joint" else None)
    if key not in _CACHE:
        sh = paper_net(widths, "paper_" + "_".join(map(str, widths)))
        how = joint_options(dt, epoch) if kind == "joint" else dict(trainer="backprop", optimizer="sgd", lr=dt)
        log(f"training {list(widths)}: {'the joint flow' if kind == 'joint' else 'SGD'}, {steps} steps of "
            f"{'dt' if kind == 'joint' else 'lr'} {dt:g}")
        with blas_threads(1):
            _CACHE[key] = sd.train(sh, params=sh.init_params(seed=seed), data="paraboloid", n=N_TRAIN, n_test=N_TEST,
                                   data_seed=DATA_SEED, steps=steps, seed=seed, log_every=max(1, steps // logs),
                                   snapshot_at=list(snapshot_at), **how)
    return _CACHE[key]


def trained_pair(widths=WIDTHS, *, steps: int, stages, dt: float = DT, seed: int = 42, per_decade: int = 4,
                 logs: int = 50, epoch: int = EPOCH, log=print) -> dict:
    """The sheaf (joint flow) and SGD runs of the module docstring, with snapshots on :func:`schedule`."""
    snaps = schedule(steps, stages, per_decade)
    runs = {kind: trained(widths, kind, steps=steps, snapshot_at=snaps, dt=dt, seed=seed, logs=logs, epoch=epoch,
                          log=log)
            for kind in ("joint", "sgd")}
    return {"sheaf": runs["joint"].sheaf, **runs, "steps": steps, "stages": tuple(stages), "dt": dt, "seed": seed,
            "epoch": epoch}


def dataset(sh):
    from ..training.data import dataset_for
    from ..training.fit import model_config

    return dataset_for(sh.graph, model_config(sh.graph, {"data": "paraboloid", "n": N_TRAIN, "n_test": N_TEST,
                                                          "data_seed": DATA_SEED}))


def spectra(sh, params, X) -> dict:
    """Per input (rows of X), at the activation pattern of its forward pass (the harmonic extension with x
    pinned): λ_min, λ_max, κ of L_free in the training and the inference convention; and ``eigenvalues``,
    the median over the inputs of each sorted eigenvalue of the training L_free (its whole spectrum)."""
    from ..analysis.spectrum import VARIANTS, restricted_laplacian, spectrum, states_at
    from ..solvers import solve

    res = solve(sh.graph, params, {"x": np.asarray(X, dtype=float)}, method="exact", sources=VARIANTS["inference"])
    states = states_at(res)
    rep = spectrum(sh.graph, params, states, mode="inputs")
    out = {}
    for v in ("training", "inference"):
        out[v] = {k: [float(getattr(s[v], k)) for s in rep.samples] for k in ("lambda_min", "lambda_max", "kappa")}
    eig = [np.linalg.eigvalsh(restricted_laplacian(sh.graph, params, VARIANTS["training"], state=st, gates=g)
                              .toarray()) for st, g in states]
    out["eigenvalues"] = np.median(np.array(eig), axis=0).tolist()
    return out


def edge_profile(sh, params, X, Y) -> dict:
    """The per-edge discord ½‖(δc*)_e‖² (mean over the rows) at the exact two-sided equilibrium, with
    each edge's type, layer and share, and the per-type and per-layer totals."""
    from ..training.diagnostics import diagnose
    from ..training.fit import model_config
    from ..training.trainers import make_trainer

    data = dataset(sh)
    tr = make_trainer(sh.graph, model_config(sh.graph, {"data": "paraboloid", "n": N_TRAIN}), data, params=params)
    d = diagnose(sh.graph, tr.edge_discords(np.asarray(X, dtype=float), np.asarray(Y, dtype=float)))
    return {"edges": [{"edge": r.name, "type": r.type, "layer": r.layer, "discord": float(r.energy),
                       "share": float(r.share)} for r in d.edges],
            "types": {g.group: float(g.share) for g in d.types},
            "layers": {str(g.group): float(g.share) for g in d.layers},
            "total": float(sum(r.energy for r in d.edges))}


def _settings(ctx) -> dict:
    return QUICK if ctx.quick else FULL


def _pair(ctx) -> dict:
    cfg = _settings(ctx)
    return trained_pair(steps=cfg["steps"], stages=cfg["stages"], seed=ctx.seed, per_decade=cfg["per_decade"],
                        logs=cfg["logs"], epoch=cfg["epoch"], log=ctx.log)


def _summary(values) -> dict:
    a = np.asarray(values, dtype=float)
    return {"median": float(np.median(a)), "min": float(a.min()), "max": float(a.max())}


def E5(ctx) -> dict:
    """Fig E.5: λ_min, λ_max and κ of L_free over the sheaf training of [2, 30, 1], with the spectra at
    the three stages."""
    from ..training.plots import compact_ticks, draw_lambda_min
    from .common import new_figure

    cfg, pair = _settings(ctx), _pair(ctx)
    sh, joint = pair["sheaf"], pair["joint"]
    X = dataset(sh).X_test[:cfg["inputs"]]
    steps = sorted(joint.snapshots)
    ctx.log(f"E5: spectra of L_free at {len(steps)} snapshots × {len(X)} inputs")
    rows = {s: spectra(sh, joint.snapshots[s].params, X) for s in steps}
    series = {v: {k: [_summary(rows[s][v][k]) for s in steps] for k in ("lambda_min", "lambda_max", "kappa")}
              for v in ("training", "inference")}
    fig = new_figure(11, 8.0, top=0.8, hspace=0.45, wspace=0.3)
    x = np.maximum(steps, 1)
    panels = (("lambda_min", "λ_min"), ("lambda_max", "λ_max"), ("kappa", "κ = λ_max / λ_min"))
    for j, (k, label) in enumerate(panels):
        ax = fig.add_subplot(2, 2, j + 1)
        for v, colour, ls in (("training", "#1f77b4", "-"), ("inference", "#ff7f0e", "--")):
            med = [r["median"] for r in series[v][k]]
            ax.plot(x, med, color=colour, ls=ls, label=f"{v}: x{', y' if v == 'training' else ''} pinned")
            ax.fill_between(x, [r["min"] for r in series[v][k]], [r["max"] for r in series[v][k]], color=colour,
                            alpha=0.15, lw=0)
            ax.plot([s for s in pair["stages"]], [med[steps.index(s)] for s in pair["stages"]], "o", color=colour,
                    ms=4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        if k == "lambda_min":  # the run's own samples (metrics.jsonl): matrix-free, min over 16 training examples
            draw_lambda_min(ax, [dict(r, step=max(r["step"], 1)) for r in joint.history], colour="k",
                            label="metrics.jsonl: min of 16 training examples (Lanczos)")
            ax.set_xscale("log")
        ax.set_xlabel("training step (0 drawn at 1)", fontsize=9)
        ax.set_title(f"{label} (median, range shaded)", fontsize=10)
        if j == 0:
            ax.legend(fontsize=7)
    ax = fig.add_subplot(2, 2, 4)
    for s, colour in zip(pair["stages"], ("#9ecae1", "#4292c6", "#08519c")):
        ev = rows[s]["eigenvalues"]
        ax.semilogy(np.arange(1, len(ev) + 1), ev, color=colour, marker=".", ms=3, lw=1, label=f"step {s}")
    ax.set_xlabel("index (ascending)", fontsize=9)
    ax.set_title("whole spectrum of L_free (training pins), median per index", fontsize=10)
    ax.legend(fontsize=8)
    fig.suptitle("Fig E.5: spectral evolution of L_free while the joint flow trains [2, 30, 1]", fontsize=11)
    for a in fig.axes:
        compact_ticks(a, "x")
        compact_ticks(a, "y")
    ctx.save_figure(fig, "E5_spectrum")
    at = {str(s): {v: {k: _summary(rows[s][v][k]) for k in ("lambda_min", "lambda_max", "kappa")}
                   for v in ("training", "inference")} for s in pair["stages"]}
    return {"steps": steps, "series": series, "stages": at, "inputs": len(X), "trainer": "joint",
            "eigenvalues": {str(s): rows[s]["eigenvalues"] for s in pair["stages"]},
            "settings": {"dt": pair["dt"], "steps": pair["steps"], "seed": pair["seed"], "epoch": pair["epoch"]},
            "paper": {"note": NO_PAPER_NUMBERS}}


def _stage_profiles(pair, X, Y) -> dict:
    sh = pair["sheaf"]
    return {name: {str(s): edge_profile(sh, pair[name].snapshots[s].params, X, Y) for s in pair["stages"]}
            for name in ("joint", "sgd")}


def E6(ctx) -> dict:
    """Fig E.6: the per-edge discord at the two-sided equilibrium at the three stages, sheaf against SGD."""
    from ..training.plots import compact_ticks, draw_edge_discord
    from .common import new_figure

    pair = _pair(ctx)
    data = dataset(pair["sheaf"])
    ctx.log("E6: two-sided equilibria of the training set at the three stages")
    prof = _stage_profiles(pair, data.X_train, data.Y_train)
    edges = [r["edge"] for r in prof["joint"][str(pair["stages"][0])]["edges"]]
    fig = new_figure(13, 4.4, top=0.75, wspace=0.35)
    for j, s in enumerate(pair["stages"]):
        ax = fig.add_subplot(1, len(pair["stages"]) + 1, j + 1)
        pos = np.arange(len(edges))
        for off, name, colour, label in ((-0.2, "joint", "#1f77b4", "sheaf (joint flow)"), (0.2, "sgd", "#d62728", "SGD")):
            vals = [r["discord"] for r in prof[name][str(s)]["edges"]]
            ax.bar(pos + off, vals, width=0.4, color=colour, label=label)
        ax.set_xticks(pos, edges)
        ax.set_yscale("log")
        ax.set_title(f"step {s}", fontsize=10)
        if j == 0:
            ax.set_ylabel("½‖(δc*)_e‖², mean over the training set")
            ax.legend(fontsize=8)
    ax = fig.add_subplot(1, len(pair["stages"]) + 1, len(pair["stages"]) + 1)
    draw_edge_discord(ax, [dict(r, step=max(r["step"], 1)) for r in pair["joint"].history], marks=pair["stages"])
    draw_edge_discord(ax, [dict(r, step=max(r["step"], 1)) for r in pair["sgd"].history], ls="--", legend=False)
    ax.set_xscale("log")
    compact_ticks(ax, "x")
    ax.set_title("over training (metrics.jsonl): sheaf —, SGD --", fontsize=9)
    fig.suptitle("Fig E.6: discord residuals per edge at the two-sided equilibrium", fontsize=11)
    for a in fig.axes:
        compact_ticks(a, "y")
    ctx.save_figure(fig, "E6_discord")
    return {"stages": list(pair["stages"]), "edges": edges, "profiles": prof,
            "total": {name: {s: p["total"] for s, p in prof[name].items()} for name in prof},
            "paper": {"note": NO_PAPER_NUMBERS}}


def _table(prof_train, prof_test) -> str:
    lines = ["| edge | type | sheaf, train | share | SGD, train | share | sheaf, test | SGD, test |",
             "|---|---|---|---|---|---|---|---|"]
    for k, r in enumerate(prof_train["joint"]["edges"]):
        g = prof_train["sgd"]["edges"][k]
        lines.append(f"| `{r['edge']}` | {r['type']} | {r['discord']:.3g} | {100 * r['share']:.1f}% | "
                     f"{g['discord']:.3g} | {100 * g['share']:.1f}% | {prof_test['joint']['edges'][k]['discord']:.3g} | "
                     f"{prof_test['sgd']['edges'][k]['discord']:.3g} |")
    lines.append(f"| total | | {prof_train['joint']['total']:.3g} | | {prof_train['sgd']['total']:.3g} | | "
                 f"{prof_test['joint']['total']:.3g} | {prof_test['sgd']['total']:.3g} |")
    return "\n".join(lines)


def tableE2(ctx) -> dict:
    """Table E.2: the pinned discord profile of the trained [2, 30, 1], sheaf against SGD."""
    from ..training.plots import compact_ticks
    from .common import new_figure

    pair = _pair(ctx)
    sh, end = pair["sheaf"], pair["steps"]
    data = dataset(sh)
    ctx.log("tableE2: two-sided equilibria of the trained nets (training and test sets)")
    train = {n: edge_profile(sh, pair[n].snapshots[end].params, data.X_train, data.Y_train) for n in ("joint", "sgd")}
    test = {n: edge_profile(sh, pair[n].snapshots[end].params, data.X_test, data.Y_test) for n in ("joint", "sgd")}
    fig = new_figure(7.5, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    edges = [r["edge"] for r in train["joint"]["edges"]]
    pos = np.arange(len(edges))
    for off, name, colour, label in ((-0.2, "joint", "#1f77b4", "sheaf (joint flow)"), (0.2, "sgd", "#d62728", "SGD")):
        ax.bar(pos + off, [100 * r["share"] for r in train[name]["edges"]], width=0.4, color=colour, label=label)
    ax.set_xticks(pos, edges)
    ax.set_ylabel("share of the pinned residual (%)")
    ax.set_title(f"Table E.2: pinned discord profile after {end} steps (training set)", fontsize=10)
    ax.legend(fontsize=8)
    compact_ticks(ax, "y")
    ctx.save_figure(fig, "tableE2_profile")
    return {"step": end, "train": train, "test": test, "table": _table(train, test),
            "paper": {"note": NO_PAPER_NUMBERS}}


# ------------------------------------------------------------------------------------------------
# Fig 4

#: the two nets of Fig 4: widths, dt, epochs (of EPOCH steps; QUICK["epoch"] with --quick)
FIG4_NETS = (((2, 30, 1), 0.005, 100), ((2, 12, 8, 6, 1), 0.05, 200))
FIG4_QUICK_STEPS = (QUICK["steps"], 400)


def block_energy(G, params, states, variant: str) -> dict:
    """Per state, :func:`sheafdsl.analysis.spectrum.extreme_vectors` of ``variant``: λ_min, λ_max and the
    share of the λ_min (Fiedler) and λ_max eigenvector's energy on each free stalk; as lists over the
    states (``{"stalks", "lambda_min", "lambda_max", "min_share": (S, b), "max_share": (S, b)}``)."""
    from ..analysis.spectrum import extreme_vectors

    out = {"stalks": None, "lambda_min": [], "lambda_max": [], "min_share": [], "max_share": []}
    for state, gates in states:
        ev = extreme_vectors(G, params, state, gates, variant=variant)
        out["stalks"] = out["stalks"] or list(ev.blocks)
        out["min_share"].append([ev.blocks[b][0] for b in out["stalks"]])
        out["max_share"].append([ev.blocks[b][1] for b in out["stalks"]])
        out["lambda_min"].append(float(ev.lambda_min))
        out["lambda_max"].append(float(ev.lambda_max))
    return out


def fig4(ctx) -> dict:
    """Fig 4: where the slowest (Fiedler, λ_min) and the fastest (λ_max) modes of L_free live in the trained
    [2, 30, 1] and [2, 12, 8, 6, 1] nets, and their per-edge discord, over 50 test inputs."""
    from ..analysis.spectrum import VARIANTS, states_at
    from ..solvers import solve
    from ..training.plots import TYPE_COLOURS, compact_ticks
    from .common import new_figure

    n_inputs = QUICK["inputs"] if ctx.quick else FULL["inputs"]
    fig = new_figure(12, 8.2, top=0.8, hspace=0.55, wspace=0.3)
    numbers = {}
    for row, ((widths, dt, epochs), quick_steps) in enumerate(zip(FIG4_NETS, FIG4_QUICK_STEPS)):
        steps = quick_steps if ctx.quick else epochs * EPOCH
        cfg = _settings(ctx)
        if tuple(widths) == WIDTHS:  # the same run as E5/E6/tableE2's (shared in `sheaf paper all`)
            fit = trained(widths, "joint", steps=steps, dt=dt, seed=ctx.seed, logs=cfg["logs"], epoch=cfg["epoch"],
                          log=ctx.log, snapshot_at=schedule(steps, cfg["stages"], cfg["per_decade"]))
        else:
            fit = trained(widths, "joint", steps=steps, dt=dt, seed=ctx.seed, logs=QUICK["logs"] if ctx.quick else 50,
                          epoch=cfg["epoch"], snapshot_at=[steps], log=ctx.log)
        sh, P = fit.sheaf, fit.snapshots[steps].params
        data = dataset(sh)
        X, Y = data.X_test[:n_inputs], data.Y_test[:n_inputs]
        states = states_at(solve(sh.graph, P, {"x": X}, method="exact", sources=VARIANTS["inference"]))
        conv = {v: block_energy(sh.graph, P, states, v) for v in ("training", "inference")}
        prof = edge_profile(sh, P, X, Y)
        name = "[" + ", ".join(map(str, widths)) + "]"
        tr = conv["training"]
        ax = fig.add_subplot(2, 2, 2 * row + 1)
        pos = np.arange(len(tr["stalks"]))
        for off, key, colour, label in ((-0.2, "min", "#1f77b4", "λ_min (Fiedler) eigenvector"),
                                        (0.2, "max", "#d62728", "λ_max eigenvector")):
            share = np.array(tr[f"{key}_share"])
            ax.bar(pos + off, 100 * share.mean(axis=0), width=0.4, color=colour, label=label,
                   yerr=100 * share.std(axis=0), capsize=2)
        ax.set_xticks(pos, tr["stalks"])
        ax.set_ylabel("share of the eigenvector's energy (%)")
        ax.set_ylim(0, 105)
        ax.set_title(f"{name} after {steps} steps of dt {dt:g}: mean over {len(X)} inputs, x and y pinned",
                     fontsize=9)
        ax.legend(fontsize=8)
        ax = fig.add_subplot(2, 2, 2 * row + 2)
        edges = prof["edges"]
        ax.bar([r["edge"] for r in edges], [r["discord"] for r in edges],
               color=[TYPE_COLOURS.get(r["type"], "#7f7f7f") for r in edges])
        ax.set_yscale("log")
        compact_ticks(ax, "y")
        ax.set_ylabel("½‖(δc*)_e‖² (mean)")
        ax.set_title(f"{name}: discord per edge, x and y pinned",
                     fontsize=9)
        numbers[name] = {
            "widths": list(widths), "dt": dt, "steps": steps, "epoch": cfg["epoch"], "inputs": len(X),
            "blocks": {v: {"stalks": c["stalks"],
                           "fiedler_share": np.mean(c["min_share"], axis=0).tolist(),
                           "lambda_max_share": np.mean(c["max_share"], axis=0).tolist(),
                           "lambda_min": _summary(c["lambda_min"]), "lambda_max": _summary(c["lambda_max"])}
                       for v, c in conv.items()},
            "edges": edges,
            "weight_edge_discord": sum(r["discord"] for r in edges if r["type"] == "affine"),
            "relu_edge_discord": sum(r["discord"] for r in edges if r["type"] == "activation")}
    fig.suptitle("Fig 4: spectral and discord diagnostics of trained nets", fontsize=11)
    ctx.save_figure(fig, "fig4")
    return {"nets": numbers, "paper": {"note": NO_PAPER_NUMBERS}}
