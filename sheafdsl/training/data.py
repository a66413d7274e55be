"""Data sets: the built-in benchmark tasks of docs/tasks.md, and ``.csv`` / ``.npz`` files.

Built-in tasks (``load_dataset("paraboloid")``...). Each draws ``n + n_test`` examples from one
``numpy.random.default_rng(seed)`` and splits them in order (the first ``n`` train):

============  ===================================================================  ==========
task          definition                                                           task type
============  ===================================================================  ==========
paraboloid    x ~ U[−2, 2]², y = x1² + x2² − 2/3 + ε, ε ~ N(0, noise²), noise 0.02  regression
saddle        x ~ U[0, 2]², y = x1² − x2² + 0.5 sin(2 x1) + ε, noise 0.02           regression
circle        class 0: angle ~ U[0, 2π), radius √U + N(0, noise²) (noise 0.1);      binary
              class 1: uniform (in area) on the annulus 1.5 < r < 2.5
blobs         4 anisotropic Gaussians (centres and covariances of docs/tasks.md)        multiclass
digits        the 8×8 UCI digits (as scikit-learn bundles them; shipped here),      multiclass
              pixels / 16, a seeded shuffle
hopf          points in ℝ³ near the two rings of the Hopf link (class 0 near        binary
              (cos t, sin t, 0), class 1 near (1 + cos t, 0, −sin t)), t ~ U[0, 2π),
              plus N(0, noise² I), noise 0.1 (the curves of ``sheaf linking --link``)
torus:K       the same near the two components of the (2, 2K) torus link            binary
============  ===================================================================  ==========

Classification tasks are balanced: class k gets ``n_total // K`` examples (the first
``n_total % K`` classes one more), then all are shuffled together.

Targets: regression ``Y`` is (n, K) float; binary ``Y`` is (n, 1) in {0, 1}; multiclass ``Y`` is
one-hot (n, K) and ``n_classes = K``.

Files (``load_dataset("path/data.csv")``):

- ``.npz``: either keys ``X`` and ``y`` (rows are examples; split as below), or the four keys
  ``X_train``, ``y_train``, ``X_test``, ``y_test`` (used as given; ``n``/``n_test`` ignored).
- ``.csv``: numeric, comma separated, an optional header line (detected: a first line that does not
  parse as numbers). The **last** ``n_outputs`` columns are the targets (default 1; a multi-output
  regression needs ``n_outputs``, which :func:`dataset_for` sets from the target stalk), the rest the
  inputs. A classification target is one column of labels 0..K−1.
- Task: given by ``task=`` (:func:`dataset_for` passes the model's output edge kind), else inferred:
  a single integer target column with values {0, 1} is binary, with values {0..K−1}, K ≥ 3,
  multiclass; anything else regression. Class-label columns become one-hot for multiclass.
- Split (``X``/``y`` data): a seeded shuffle, then ``n_test`` rows for the test set and up to ``n`` of
  the rest for training (an error if fewer than ``n_test + 1`` rows).

``standardize=True`` rescales the inputs to zero mean and unit variance with statistics fitted on the
training split only (targets are never rescaled).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import Diagnostic, SheafError
from ..nonlinearities import TASKS as OUTPUT_TASKS

TASKS = ("paraboloid", "saddle", "circle", "blobs", "digits", "hopf")
TASK_KIND = {"paraboloid": "regression", "saddle": "regression", "circle": "binary", "blobs": "multiclass",
             "digits": "multiclass", "hopf": "binary"}

BLOB_CENTRES = np.array([[-1.5, -1.5], [1.8, -1.0], [1.0, 2.0], [-2.0, 1.5]])
BLOB_COVARIANCES = np.array([[[0.8, 0.3], [0.3, 0.4]],
                             [[0.3, -0.2], [-0.2, 1.0]],
                             [[1.2, 0.5], [0.5, 0.5]],
                             [[0.5, 0.0], [0.0, 0.8]]])


@dataclass
class Dataset:
    """A train/test split. ``Y`` is (n, K): regression values, 0/1 (binary, K = 1) or one-hot."""

    name: str
    task: str  # "regression" | "binary" | "multiclass"
    X_train: np.ndarray
    Y_train: np.ndarray
    X_test: np.ndarray
    Y_test: np.ndarray
    n_classes: int | None = None
    meta: dict = field(default_factory=dict)

    @property
    def n_inputs(self) -> int:
        return self.X_train.shape[1]

    @property
    def n_outputs(self) -> int:
        return self.Y_train.shape[1]


def _err(msg: str, code: str = "E600", hint: str | None = None) -> SheafError:
    return SheafError(Diagnostic(code, msg, hint=hint))


# ----------------------------------------------------------------------------------------------
# built-in tasks


def _class_counts(total: int, k: int) -> list[int]:
    return [total // k + (1 if i < total % k else 0) for i in range(k)]


def _paraboloid(rng, total, noise):
    X = rng.uniform(-2.0, 2.0, size=(total, 2))
    y = X[:, 0] ** 2 + X[:, 1] ** 2 - 2.0 / 3.0 + rng.normal(0.0, noise, size=total)
    return X, y[:, None]


def _saddle(rng, total, noise):
    X = rng.uniform(0.0, 2.0, size=(total, 2))
    y = X[:, 0] ** 2 - X[:, 1] ** 2 + 0.5 * np.sin(2 * X[:, 0]) + rng.normal(0.0, noise, size=total)
    return X, y[:, None]


def _circle(rng, total, noise):
    n0, n1 = _class_counts(total, 2)
    th0 = rng.uniform(0, 2 * np.pi, n0)
    r0 = np.sqrt(rng.uniform(0, 1, n0)) + rng.normal(0.0, noise, n0)
    th1 = rng.uniform(0, 2 * np.pi, n1)
    r1 = np.sqrt(rng.uniform(1.5 ** 2, 2.5 ** 2, n1))
    X = np.concatenate([np.c_[r0 * np.cos(th0), r0 * np.sin(th0)], np.c_[r1 * np.cos(th1), r1 * np.sin(th1)]])
    y = np.concatenate([np.zeros(n0), np.ones(n1)])
    p = rng.permutation(total)
    return X[p], y[p][:, None]


def _blobs(rng, total, noise):
    Xs, ys = [], []
    for k, m in enumerate(_class_counts(total, 4)):
        Xs.append(rng.multivariate_normal(BLOB_CENTRES[k], BLOB_COVARIANCES[k], size=m))
        ys.append(np.full(m, k))
    X, y = np.concatenate(Xs), np.concatenate(ys)
    p = rng.permutation(total)
    return X[p], np.eye(4)[y[p]]


#: the digits images, shipped with sheafdsl (no scikit-learn needed): ``pixels`` (1797, 64) uint8 in 0..16
#: and ``labels`` (1797,) uint8, the UCI optical handwritten digits test set exactly as scikit-learn's
#: ``load_digits()`` returns it (tests/test_data.py compares them), in its order
DIGITS_FILE = "digits.npz"


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(pixels (1797, 64) in 0..16, labels (1797,)) of the bundled digits."""
    from importlib import resources

    with resources.files(__package__).joinpath(DIGITS_FILE).open("rb") as fh, np.load(fh) as f:
        return f["pixels"].astype(float), f["labels"].astype(int)


def _digits(rng, total, noise):
    pixels, labels = digits_arrays()
    if total > len(labels):
        raise _err(f"digits has {len(labels)} examples; n + n_test = {total} is too many", "E605",
                   hint="e.g. n=1437 n_test=360")
    p = rng.permutation(len(labels))[:total]
    return pixels[p] / 16.0, np.eye(10)[labels[p]]


def _link_task(spec):
    """A generator of ``hopf``/``torus:K`` data: points near each component of the link, labelled by it."""
    from ..analysis.linking import link_points, parse_link

    name, k = parse_link(spec, file="<input>")

    def gen(rng, total, noise):
        n0, n1 = _class_counts(total, 2)
        A, B = link_points(name, k, rng.uniform(0, 2 * np.pi, n0), rng.uniform(0, 2 * np.pi, n1))
        X = np.concatenate([A, B]) + rng.normal(0.0, noise, size=(total, 3))
        y = np.concatenate([np.zeros(n0), np.ones(n1)])
        p = rng.permutation(total)
        return X[p], y[p][:, None]

    return gen


_BUILTIN = {"paraboloid": (_paraboloid, 0.02), "saddle": (_saddle, 0.02), "circle": (_circle, 0.1),
            "blobs": (_blobs, 0.0), "digits": (_digits, 0.0), "hopf": (_link_task("hopf"), 0.1)}


def is_link_task(spec: str) -> bool:
    """``torus:K`` (a built-in task with an argument)."""
    return isinstance(spec, str) and spec.startswith("torus:")


# ----------------------------------------------------------------------------------------------
# files


def _read_csv(path: str) -> np.ndarray:
    from ..fileio import read_csv

    return read_csv(path, code="E601", what="data file")


def _as_targets(y: np.ndarray, task: str | None, path: str) -> tuple[np.ndarray, str, int | None]:
    y = np.asarray(y, dtype=float)
    if y.ndim == 1:
        y = y[:, None]
    if not np.all(np.isfinite(y)):
        rows = np.flatnonzero(~np.all(np.isfinite(y), axis=1))
        raise _err(f"`{path}`: targets contain NaN or infinite values ({len(rows)} row(s), the first at row "
                   f"{int(rows[0]) + 1})", "E601", hint="remove or fill in those rows; training cannot fit them")
    labels = y.shape[1] == 1 and np.all(np.isfinite(y)) and np.all(y == np.round(y)) and y.min() >= 0
    if task is None:
        if labels and set(np.unique(y).tolist()) <= {0.0, 1.0}:
            task = "binary"
        elif labels and y.max() >= 2:
            task = "multiclass"
        else:
            task = "regression"
    if task == "regression":
        return y, task, None
    if task == "binary":
        if y.shape[1] != 1 or not set(np.unique(y).tolist()) <= {0.0, 1.0}:
            raise _err(f"`{path}`: a binary target must be one column of 0/1 labels", "E601")
        return y, task, 2
    # multiclass: labels 0..K-1 or one-hot rows
    if y.shape[1] == 1:
        if not labels:
            raise _err(f"`{path}`: class labels must be integers 0..K-1", "E601")
        k = int(y.max()) + 1
        if k > max(len(y), 1000):
            raise _err(f"`{path}`: a class label is {k - 1}, but there are only {len(y)} rows; labels are 0..K-1",
                       "E601")
        return np.eye(k)[y[:, 0].astype(int)], task, k
    if not (np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1)):
        raise _err(f"`{path}`: multi-column class targets must be one-hot rows", "E601")
    return y, task, y.shape[1]


def _load_file(path, n, n_test, seed, task, n_outputs):
    ext = os.path.splitext(path)[1].lower()
    rng = np.random.default_rng(seed)
    if ext == ".npz":
        from ..fileio import load_npz, real_array

        raw = load_npz(path, code="E601", what="data file")
        keys = set(raw)
        arrays = {k: real_array(v, code="E601", path=path, what=f"`{path}`: entry `{k}`")
                  for k, v in raw.items() if k in {"X", "y", "X_train", "y_train", "X_test", "y_test"}}
        if {"X_train", "y_train", "X_test", "y_test"} <= keys:
            Xtr, Xte = arrays["X_train"], arrays["X_test"]
            ytr, yte = arrays["y_train"], arrays["y_test"]
            ntr = len(Xtr)
            y_all, task, k = _as_targets(np.concatenate([_2d(ytr), _2d(yte)]), task, path)
            return _check_xy(Xtr, path), y_all[:ntr], _check_xy(Xte, path), y_all[ntr:], task, k
        if not {"X", "y"} <= keys:
            raise _err(f"`{path}` needs keys X and y, or X_train, y_train, X_test and y_test (it has {sorted(keys)})", "E601")
        X, y = arrays["X"], _2d(arrays["y"])
    elif ext == ".csv":
        table = _read_csv(path)
        k = 1 if n_outputs is None else int(n_outputs)
        if table.shape[1] <= k:
            raise _err(f"`{path}` has {table.shape[1]} columns; need inputs plus {k} target column(s)", "E601")
        X, y = table[:, :-k], table[:, -k:]
    else:
        raise _err(f"unsupported data file `{path}` (use .csv or .npz)", "E601")
    X = _check_xy(X, path)
    if len(y) != len(X):
        raise _err(f"`{path}`: X has {len(X)} rows but y has {len(y)}", "E601")
    if len(X) < n_test + 1:
        raise _err(f"`{path}` has {len(X)} rows; need at least n_test + 1 = {n_test + 1}", "E605")
    y, task, k = _as_targets(y, task, path)
    p = rng.permutation(len(X))
    te, tr = p[:n_test], p[n_test:n_test + n]
    return X[tr], y[tr], X[te], y[te], task, k


def _2d(a):
    a = np.asarray(a, dtype=float)
    return a[:, None] if a.ndim == 1 else a


def _check_xy(X, path):
    X = np.asarray(X, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or len(X) == 0:
        raise _err(f"`{path}`: inputs must be a non-empty 2-D table", "E601")
    if not np.all(np.isfinite(X)):
        raise _err(f"`{path}`: inputs contain NaN or infinite values", "E601")
    return X


# ----------------------------------------------------------------------------------------------
# entry points


def is_data_file(spec: str) -> bool:
    """Whether a data spec names a file (``.csv``/``.npz``, or a path), not a built-in task."""
    return spec.lower().endswith((".csv", ".npz")) or os.path.sep in spec


def load_dataset(spec: str, *, n: int = 300, n_test: int = 100, seed: int = 42, noise: float | None = None,
                 standardize: bool = False, task: str | None = None, n_outputs: int | None = None) -> Dataset:
    """A built-in task by name, or a ``.csv``/``.npz`` file (see the module docstring).

    >>> d = load_dataset("paraboloid", n=10, n_test=5)
    >>> d.X_train.shape, d.Y_train.shape, d.task
    ((10, 2), (10, 1), 'regression')
    """
    if n < 1 or n_test < 1:
        raise _err(f"n and n_test must be >= 1 (got n={n}, n_test={n_test})", "E605")
    if spec in _BUILTIN or is_link_task(spec):
        gen, default_noise = _BUILTIN[spec] if spec in _BUILTIN else (_link_task(spec), 0.1)
        rng = np.random.default_rng(seed)
        X, Y = gen(rng, n + n_test, default_noise if noise is None else float(noise))
        kind = TASK_KIND.get(spec, "binary")
        k = None if kind == "regression" else (2 if kind == "binary" else Y.shape[1])
        Xtr, Ytr, Xte, Yte = X[:n], Y[:n], X[n:], Y[n:]
        name = spec
    elif is_data_file(spec):
        Xtr, Ytr, Xte, Yte, kind, k = _load_file(spec, n, n_test, seed, task, n_outputs)
        name = os.path.splitext(os.path.basename(spec))[0]
    else:
        from ..errors import did_you_mean

        raise _err(f"unknown data set `{spec}`", "E600",
                   hint=did_you_mean(spec, TASKS) or "built-in tasks: " + ", ".join(TASKS) + ", torus:K; or a .csv/.npz path")
    if task is not None and task != kind:
        raise _err(f"data set `{spec}` is a {kind} task, but the model expects {task}", "E603")
    if Xte.shape[1] != Xtr.shape[1] or Yte.shape[1] != Ytr.shape[1]:
        raise _err(f"`{spec}`: train and test splits have different widths", "E601")
    meta = {"spec": spec, "seed": seed, "noise": noise, "standardized": bool(standardize)}
    if standardize:
        mu, sd = Xtr.mean(axis=0), Xtr.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        Xtr, Xte = (Xtr - mu) / sd, (Xte - mu) / sd
        meta.update(x_mean=mu.tolist(), x_std=sd.tolist())
    return Dataset(name, kind, np.ascontiguousarray(Xtr), np.ascontiguousarray(Ytr), np.ascontiguousarray(Xte),
                   np.ascontiguousarray(Yte), k, meta)


def model_task(G) -> tuple[str, int, int]:
    """(task, input dim, output dim) that a model expects, read from its pins and output edge.

    The task is the registry's task of the output map into the target stalk (``sigmoid``: "binary",
    ``softmax``: "multiclass"), "regression" otherwise.
    """
    from ..ir import pinned_stalks

    ins, outs = pinned_stalks(G, "input"), pinned_stalks(G, "target")
    if len(ins) != 1 or len(outs) != 1:
        raise _err(f"training needs exactly one stalk pinned to `input` and one to `target` "
                   f"(found {len(ins)} and {len(outs)})", "E602",
                   hint="add `pin x = input` and `pin y = target`")
    into = [d for _, _, d in G.in_edges(outs[0], data=True)] + [d for _, _, d in G.out_edges(outs[0], data=True)]
    tasks = {OUTPUT_TASKS[d["kind"]] for d in into if d["kind"] in OUTPUT_TASKS} - {"regression"}
    task = tasks.pop() if len(tasks) == 1 else "regression"
    return task, G.nodes[ins[0]]["dim"], G.nodes[outs[0]]["dim"]


#: (input width, output width) of each built-in task
TASK_WIDTHS = {"paraboloid": (2, 1), "saddle": (2, 1), "circle": (2, 1), "blobs": (2, 4), "digits": (64, 10),
               "hopf": (3, 1)}


def default_data(G) -> str:
    """The built-in task that a model naming no data set trains on: the first of :data:`TASKS` whose
    task (regression | binary | multiclass, from the output edge) and widths fit the model; E602 when
    none does (a softmax model is never handed the paraboloid)."""
    task, din, dout = model_task(G)
    for name in TASKS:
        if TASK_KIND[name] == task and TASK_WIDTHS[name] == (din, dout):
            return name
    builtin = ", ".join(f"{n} ({TASK_KIND[n]}, {a} -> {b})" for n, (a, b) in TASK_WIDTHS.items())
    raise _err(f"the model names no data set (`train data=...`), and no built-in task fits it: it is a {task} "
               f"model with {din} input(s) and {dout} output(s)", "E602",
               hint=f"pass --data FILE.csv|FILE.npz, or add `train data=...` to the model; built-in: {builtin}")


def resolve_data(spec: str, base_dir: str) -> str:
    """``spec`` as an absolute path when it names a data file (relative paths against ``base_dir``);
    a built-in task's name unchanged."""
    if spec in _BUILTIN or is_link_task(spec) or os.path.isabs(spec) or not is_data_file(spec):
        return spec
    return os.path.normpath(os.path.join(base_dir, spec))


def check_compatible(G, data: Dataset) -> None:
    """Raise SheafError unless ``data`` fits the model: input/target stalk widths and task type."""
    task, din, dout = model_task(G)
    if data.n_inputs != din:
        raise _err(f"data set `{data.name}` has {data.n_inputs} input columns but the input stalk has dimension {din}",
                   "E602")
    if data.n_outputs != dout:
        raise _err(f"data set `{data.name}` has {data.n_outputs} target columns but the target stalk has dimension "
                   f"{dout}", "E602")
    if data.task != task:
        want = {"regression": "an identity (or linear) output edge", "binary": "a sigmoid output edge",
                "multiclass": "a softmax output edge"}[data.task]
        raise _err(f"data set `{data.name}` is a {data.task} task but the model's output edge makes it {task}", "E603",
                   hint=f"a {data.task} task needs {want}")


#: arrays of the batch's cochain (B, N) and edge (B, M) size that a training step holds at once
STEP_ARRAYS = 8


def require_training_memory(G, config, din: int, dout: int) -> None:
    """Stop (E540) before loading data or allocating a trainer whose arrays cannot fit in memory:
    the data set (n + n_test rows of din + dout floats) and a step's STEP_ARRAYS (B, N + M) arrays."""
    from ..ir import edge_dim, total_dim
    from ..resources import require_memory

    rows = int(config.n) + int(config.n_test)
    batch = int(config.batch or config.n)
    nbytes = 8.0 * rows * (din + dout) * 2 + 8.0 * STEP_ARRAYS * batch * (total_dim(G) + edge_dim(G))
    require_memory(nbytes, f"training on {config.n:,} examples (batch {batch:,})",
                   hint="lower n (--n) or the batch (--batch)")


def dataset_for(G, config) -> Dataset:
    """Load ``config.data`` the way the model ``G`` expects it (its task and output width), and check it."""
    task, din, dout = model_task(G)
    require_training_memory(G, config, din, dout)
    data = load_dataset(config.data, n=config.n, n_test=config.n_test, seed=getattr(config, "data_seed", 42),
                        noise=config.noise, standardize=config.standardize,
                        task=None if config.data in _BUILTIN or is_link_task(config.data) else task,
                        n_outputs=dout if task == "regression" else None)
    check_compatible(G, data)
    return data
