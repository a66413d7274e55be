"""Data sets: the docs/tasks.md definitions, files, splits, standardisation, compatibility errors."""

from __future__ import annotations

import numpy as np
import pytest

from sheafdsl.errors import SheafError
from sheafdsl.frontend import load_file, load_text
from sheafdsl.ir import from_model
from sheafdsl.training.config import TrainConfig
from sheafdsl.training.data import (BLOB_CENTRES, BLOB_COVARIANCES, check_compatible, dataset_for, load_dataset,
                                    model_task)


def codes(exc) -> list[str]:
    return exc.value.codes


# ----------------------------------------------------------------------------------------------
# built-in tasks


@pytest.mark.parametrize("name,task,din,dout", [("paraboloid", "regression", 2, 1), ("saddle", "regression", 2, 1),
                                                ("circle", "binary", 2, 1), ("blobs", "multiclass", 2, 4)])
def test_shapes_and_tasks(name, task, din, dout):
    d = load_dataset(name)
    assert d.task == task
    assert d.X_train.shape == (300, din) and d.Y_train.shape == (300, dout)
    assert d.X_test.shape == (100, din) and d.Y_test.shape == (100, dout)
    assert d.X_train.dtype == np.float64


def test_regression_targets_follow_the_formulas():
    d = load_dataset("paraboloid", n=2000, n_test=1, noise=0.0)
    X, y = d.X_train, d.Y_train[:, 0]
    np.testing.assert_allclose(y, X[:, 0] ** 2 + X[:, 1] ** 2 - 2 / 3)
    assert X.min() >= -2 and X.max() <= 2 and X.min() < -1.9 and X.max() > 1.9
    d = load_dataset("saddle", n=2000, n_test=1, noise=0.0)
    X, y = d.X_train, d.Y_train[:, 0]
    np.testing.assert_allclose(y, X[:, 0] ** 2 - X[:, 1] ** 2 + 0.5 * np.sin(2 * X[:, 0]))
    assert X.min() >= 0 and X.max() <= 2
    # the default noise is N(0, 0.02²)
    d0 = load_dataset("paraboloid", n=5000, n_test=1)
    resid = d0.Y_train[:, 0] - (d0.X_train ** 2).sum(axis=1) + 2 / 3
    assert abs(resid.std() - 0.02) < 0.002 and abs(resid.mean()) < 0.002


def test_circle_geometry_and_balance():
    d = load_dataset("circle", n=4000, n_test=2, noise=0.0)
    r = np.linalg.norm(d.X_train, axis=1)
    y = d.Y_train[:, 0]
    assert set(np.unique(y)) == {0.0, 1.0}
    assert abs(y.mean() - 0.5) < 0.01
    assert r[y == 0].max() <= 1.0
    assert r[y == 1].min() >= 1.5 and r[y == 1].max() <= 2.5
    # uniform in area: the median radius of the disk is √0.5
    assert abs(np.median(r[y == 0]) - np.sqrt(0.5)) < 0.03
    noisy = load_dataset("circle", n=4000, n_test=2)
    rn = np.linalg.norm(noisy.X_train, axis=1)[noisy.Y_train[:, 0] == 0]
    assert rn.max() > 1.0  # radius noise N(0, 0.1) pushes some points out


def test_blobs_match_the_listed_gaussians():
    d = load_dataset("blobs", n=8000, n_test=4)
    labels = d.Y_train.argmax(axis=1)
    np.testing.assert_array_equal(d.Y_train.sum(axis=1), 1.0)
    assert np.bincount(labels).tolist() == [2000] * 4
    for k in range(4):
        pts = d.X_train[labels == k]
        np.testing.assert_allclose(pts.mean(axis=0), BLOB_CENTRES[k], atol=0.06)
        np.testing.assert_allclose(np.cov(pts.T), BLOB_COVARIANCES[k], atol=0.08)
    assert d.n_classes == 4


def test_digits():
    d = load_dataset("digits", n=1437, n_test=360)
    assert d.X_train.shape == (1437, 64) and d.Y_test.shape == (360, 10)
    assert d.X_train.min() >= 0 and d.X_train.max() <= 1
    assert d.task == "multiclass" and d.n_classes == 10
    with pytest.raises(SheafError) as e:
        load_dataset("digits", n=1700, n_test=200)
    assert codes(e) == ["E605"]


def test_shipped_digits_are_scikit_learns():
    """The bundled file is scikit-learn's load_digits(), value for value and in order (the reference)."""
    sk = pytest.importorskip("sklearn.datasets").load_digits()
    from sheafdsl.training.data import digits_arrays

    pixels, labels = digits_arrays()
    np.testing.assert_array_equal(pixels, sk.data)
    np.testing.assert_array_equal(labels, sk.target)


def test_digits_need_no_scikit_learn(monkeypatch):
    """`sheaf train models/digits.sheaf` after a plain `pip install .`: the data ships with sheafdsl."""
    import builtins

    real = builtins.__import__

    def fake(name, *a, **k):
        if name.startswith("sklearn"):
            raise ImportError("no sklearn")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    d = load_dataset("digits", n=100, n_test=20)
    assert d.X_train.shape == (100, 64)


def test_seeds_are_reproducible_and_matter():
    a, b = load_dataset("blobs", seed=3), load_dataset("blobs", seed=3)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.Y_test, b.Y_test)
    c = load_dataset("blobs", seed=4)
    assert not np.array_equal(a.X_train, c.X_train)


def test_standardize_fits_on_train_only():
    raw = load_dataset("saddle")
    d = load_dataset("saddle", standardize=True)
    np.testing.assert_allclose(d.X_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(d.X_train.std(axis=0), 1, atol=1e-12)
    mu, sd = raw.X_train.mean(axis=0), raw.X_train.std(axis=0)
    np.testing.assert_allclose(d.X_test, (raw.X_test - mu) / sd)
    np.testing.assert_array_equal(d.Y_train, raw.Y_train)  # targets untouched


def test_unknown_name_has_a_hint():
    with pytest.raises(SheafError) as e:
        load_dataset("parabolid")
    assert codes(e) == ["E600"] and "paraboloid" in str(e.value)


# ----------------------------------------------------------------------------------------------
# files


def test_csv_with_header_and_regression(tmp_path):
    p = tmp_path / "r.csv"
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    y = X @ [1.0, -2.0, 0.5]
    p.write_text("a,b,c,target\n" + "\n".join(",".join(f"{v:.17g}" for v in row) for row in np.c_[X, y]) + "\n")
    d = load_dataset(str(p), n=40, n_test=10)
    assert d.task == "regression" and d.X_train.shape == (40, 3) and d.X_test.shape == (10, 3)
    allX = np.vstack([d.X_train, d.X_test])
    ally = np.vstack([d.Y_train, d.Y_test])
    order = np.lexsort(allX.T)
    np.testing.assert_allclose(allX[order], X[np.lexsort(X.T)])
    np.testing.assert_allclose(ally[order, 0], y[np.lexsort(X.T)])
    # two target columns on request
    d2 = load_dataset(str(p), n=40, n_test=10, n_outputs=2)
    assert d2.X_train.shape == (40, 2) and d2.Y_train.shape == (40, 2)


def test_csv_labels_become_classes(tmp_path):
    p = tmp_path / "c.csv"
    rng = np.random.default_rng(1)
    rows = np.c_[rng.normal(size=(30, 2)), rng.integers(0, 3, 30)]
    p.write_text("\n".join(",".join(str(v) for v in r) for r in rows))
    d = load_dataset(str(p), n=25, n_test=5)
    assert d.task == "multiclass" and d.Y_train.shape == (25, 3) and d.n_classes == 3
    b = tmp_path / "b.csv"
    b.write_text("\n".join(f"{i},{i % 2}" for i in range(20)))
    assert load_dataset(str(b), n=15, n_test=5).task == "binary"


def test_npz_both_layouts(tmp_path):
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "a.npz", X=rng.normal(size=(20, 2)), y=rng.normal(size=20))
    d = load_dataset(str(tmp_path / "a.npz"), n=100, n_test=5)
    assert d.X_train.shape == (15, 2) and d.Y_train.shape == (15, 1)
    Xtr, Xte = rng.normal(size=(8, 2)), rng.normal(size=(3, 2))
    np.savez(tmp_path / "b.npz", X_train=Xtr, y_train=np.arange(8) % 4, X_test=Xte, y_test=np.array([0, 1, 3]))
    d = load_dataset(str(tmp_path / "b.npz"))
    np.testing.assert_array_equal(d.X_train, Xtr)
    assert d.task == "multiclass" and d.Y_test.argmax(axis=1).tolist() == [0, 1, 3]


@pytest.mark.parametrize("content,code", [
    ("1,2\n3,x\n", "E601"),  # not numbers
    ("1,2,3\n4,5\n", "E601"),  # ragged
    ("a,b\n", "E601"),  # header only
    ("1,2\n3,4\n", "E605"),  # fewer rows than n_test + 1
])
def test_bad_csv_files(tmp_path, content, code):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(SheafError) as e:
        load_dataset(str(p), n=10, n_test=5)
    assert codes(e) == [code]


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(SheafError) as e:
        load_dataset(str(tmp_path / "none.csv"))
    assert codes(e) == ["E601"]
    (tmp_path / "d.txt").write_text("1,2\n")
    with pytest.raises(SheafError) as e:
        load_dataset(str(tmp_path / "d.txt"))
    assert codes(e) == ["E601"]
    np.savez(tmp_path / "k.npz", A=np.zeros(3))
    with pytest.raises(SheafError) as e:
        load_dataset(str(tmp_path / "k.npz"))
    assert codes(e) == ["E601"] and "X_train" in str(e.value)


# ----------------------------------------------------------------------------------------------
# compatibility with a model


def test_compatibility_checks():
    G = from_model(load_file("models/paraboloid.sheaf"))
    assert model_task(G) == ("regression", 2, 1)
    check_compatible(G, load_dataset("paraboloid", n=5, n_test=2))
    with pytest.raises(SheafError) as e:
        check_compatible(G, load_dataset("blobs", n=8, n_test=4))
    assert codes(e) == ["E602"] and "target" in str(e.value)
    with pytest.raises(SheafError) as e:
        check_compatible(G, load_dataset("circle", n=8, n_test=4))
    assert codes(e) == ["E603"] and "sigmoid" in str(e.value)
    Gd = from_model(load_text("sheaf d\nnetwork m : 64 -> 8 -> 10 relu output softmax\n"))
    with pytest.raises(SheafError) as e:
        check_compatible(Gd, load_dataset("blobs", n=8, n_test=4))
    assert codes(e) == ["E602"] and "input" in str(e.value)
    Gn = from_model(load_text("sheaf n\nstalk a : 1\nstalk b : 1\nedge e : a -> b identity\npin a = input\n"))
    with pytest.raises(SheafError) as e:
        model_task(Gn)
    assert codes(e) == ["E602"]


def test_dataset_for_reads_the_task_from_the_model(tmp_path):
    G = from_model(load_text("sheaf c\nnetwork m : 2 -> 4 -> 1 relu output sigmoid\n"))
    d = dataset_for(G, TrainConfig(data="circle", n=20, n_test=5))
    assert d.task == "binary"
    # a file with 0/1 regression-looking targets is read as the model says
    p = tmp_path / "r.csv"
    p.write_text("\n".join(f"{i},{i},{i % 2}" for i in range(12)))
    Gr = from_model(load_file("models/paraboloid.sheaf"))
    assert dataset_for(Gr, TrainConfig(data=str(p), n=8, n_test=4)).task == "regression"
    assert dataset_for(G, TrainConfig(data=str(p), n=8, n_test=4)).task == "binary"
