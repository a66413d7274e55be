"""``sheaf linking FILE (--curves C.npz | --link hopf|unlink|torus:K|whitehead) [--points N] [--params P]
[--classes DATA] [--json] [--plot OUT.png]``.

The linking number of two closed curves at every 3-dimensional stalk of FILE, whose input stalk has
dimension 3 (see :mod:`sheafdsl.analysis.linking` and docs/linking.md):

- ``--curves C.npz``: arrays ``a`` and ``b``, each (n, 3), two closed polygons (the last vertex joins
  the first); ``--points N`` refines each to at least N vertices;
- ``--link NAME``: a built-in link with ``--points`` vertices per curve (default 128): ``hopf``
  (lk 1), ``unlink`` (0), ``torus:K`` (the (2, 2K) torus link, K), ``whitehead`` (0, yet linked).

The image of a curve at a stalk is the polygon through the images of its vertices under the harmonic
extension with the input pinned (the forward pass of a network). Its linking number is exact (the
Gauss integral in closed form over segment pairs); where the two images meet it is undefined
(``null``, with the reason).

``--classes DATA``: the point-cloud estimate as well (kNN graph per class, minimum cycle basis, max |lk|
over cycle pairs) of DATA's two classes (a built-in task such as ``hopf`` or ``torus:2``, or a
``.csv``/``.npz`` with 0/1 labels; train and test rows together), pushed through to every 3-dim stalk.
Without curves, the estimate is each layer's ``linking``.

``--json`` prints the common envelope with ``"layers": [{"stalk", "linking": int|null,
"min_distance"}, ...]`` (forward order, the input first), ``"curves"``, ``"points"``, ``"undefined"``
(stalk -> why), and with ``--classes`` ``"point_cloud"``. ``--plot OUT.png``: one 3-D panel per stalk.
"""

from __future__ import annotations

import click
import numpy as np

from .common import console, emit_json, json_option, load_model, model_argument, print_table, seed_option


@click.command("linking")
@model_argument
@click.option("--curves", "curves_path", metavar="C.npz", help="Two closed polygons: arrays `a` and `b`, each (n, 3).")
@click.option("--link", metavar="NAME", help="A built-in link: hopf, unlink, torus:K, whitehead.")
@click.option("--points", type=int, default=None, metavar="N",
              help="Vertices per built-in curve (default 128); with --curves, refine each polygon to at least N.")
@click.option("--params", "params_path", metavar="FILE.npz|RUN_DIR",
              help="Parameter values: an .npz (e.g. a training checkpoint) or a `sheaf train` run directory.")
@seed_option("Seed for the parameters when --params is not given.", default=0)
@click.option("--classes", "classes", metavar="DATA",
              help="Also estimate the linking of DATA's two classes from their points (kNN cycles): a built-in "
                   "task (hopf, torus:K) or a .csv/.npz file with 0/1 labels.")
@click.option("--k", "k", type=click.IntRange(min=1), default=5, show_default=True,
              help="Neighbours per point of the point-cloud estimator's graph.")
@click.option("--landmarks", type=click.IntRange(min=3), default=32, show_default=True,
              help="Points per class the estimator keeps (farthest-point sampling).")
@click.option("--plot", "plot_path", metavar="OUT.png", help="One 3-D panel per 3-dim stalk: both image curves.")
@json_option
def command(file, curves_path, link, points, params_path, seed, classes, k, landmarks, plot_path, as_json):
    """The linking number of two curves through every 3-dim stalk of FILE."""
    from ..api import linking_report
    from ..ir import from_model
    from ..lowering import load_params

    if curves_path is not None and link is not None:
        raise click.UsageError("give either --curves or --link, not both")
    if curves_path is None and link is None and classes is None:
        raise click.UsageError("give --curves C.npz or --link NAME (or --classes DATA)")
    model = load_model(file)
    G = from_model(model)
    params = load_params(G, params_path, seed)
    cls = None if classes is None else _classes(classes)
    report = linking_report(G, params, curves=curves_path, link=link, points=points, classes=cls, k=k,
                            landmarks=landmarks, model=model, file="<command line>")
    if plot_path is not None:
        from ..api import write_linking_plot

        write_linking_plot(report, plot_path, title=f"{G.graph.get('name', '')}: {report.curves}",
                           file="<command line>")
    if as_json:
        out = report.to_json()
        if plot_path is not None:
            out["plot"] = plot_path
        emit_json(out)
        return
    _print(G, report, plot_path)


def _classes(spec: str) -> tuple[np.ndarray, np.ndarray]:
    """The points of class 0 and class 1 of a data spec (train and test rows together)."""
    from ..errors import Diagnostic, SheafError
    from ..training.data import load_dataset

    ds = load_dataset(spec, n=400, n_test=100, seed=42)
    X = np.concatenate([ds.X_train, ds.X_test])
    Y = np.concatenate([ds.Y_train, ds.Y_test])
    if X.shape[1] != 3 or ds.task != "binary":
        raise SheafError(Diagnostic("E547", f"--classes `{spec}` must be two classes (0/1 labels) of points in ℝ³; it "
                                            f"is a {ds.task} task with {X.shape[1]} input column(s)",
                                    file="<command line>", hint="e.g. --classes hopf"))
    y = Y[:, 0]
    return X[y == 0], X[y == 1]


def _print(G, report, plot_path) -> None:
    from rich.table import Table

    console.print(f"sheaf {G.graph.get('name', '')}: linking numbers of {report.curves} "
                  f"({report.points[0]} + {report.points[1]} points) at the 3-dim stalks, in forward order")
    t = Table()
    t.add_column("stalk")
    t.add_column("linking", justify="right")
    t.add_column("min distance", justify="right")
    cloud = any(la.point_cloud is not None for la in report.layers) and report.curves != "classes"
    if cloud:
        t.add_column("point cloud", justify="right")
    for la in report.layers:
        row = [la.stalk, "undefined" if la.linking is None else str(la.linking), f"{la.min_distance:.4g}"]
        if cloud:
            row.append("-" if la.point_cloud.linking is None else str(la.point_cloud.linking))
        t.add_row(*row)
    print_table(t)
    for la in report.layers:
        if la.reason:
            console.print(f"{la.stalk}: {la.reason}")
    if plot_path:
        console.print(f"plot: {plot_path}")
