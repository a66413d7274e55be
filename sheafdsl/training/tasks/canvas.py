"""Digits under a canvas-size shift: the bundled 8×8 digits placed at random on larger canvases.

Each image (pixels / 16, in [0, 1]) is pasted at a uniformly random offset (i, j), 0 ≤ i, j ≤ S − 8,
onto an S × S canvas of zeros. The images are split once (a seeded permutation of the 1797 digits:
the first ``n`` train, the next ``n_test`` test); training uses S = 16, and the same test images are
placed on each test canvas (16, 24 and 32 by default), with offsets drawn per canvas. A canvas is
flattened row-major, so an S × S canvas is a row of S² values.

>>> X, Y, off = place(np.ones((2, 64)), np.eye(10)[[3, 5]], size=12, rng=np.random.default_rng(0))
>>> X.shape, float(X.sum()), bool(np.all((0 <= off) & (off <= 4)))
((2, 144), 128.0, True)
"""

from __future__ import annotations

import numpy as np

from ...errors import Diagnostic, SheafError

DIGIT = 8  # the bundled digits are 8 × 8
TRAIN_CANVAS = 16
TEST_CANVASES = (16, 24, 32)


def place(images: np.ndarray, labels: np.ndarray, *, size: int, rng: np.random.Generator):
    """(X (m, size²), labels unchanged, offsets (m, 2)): each 8×8 image (a row of 64) at a random offset."""
    if size < DIGIT:
        raise SheafError(Diagnostic("E571", f"a canvas of {size}x{size} cannot hold an {DIGIT}x{DIGIT} digit",
                                    hint=f"canvas sizes are at least {DIGIT}"))
    m = len(images)
    off = rng.integers(0, size - DIGIT + 1, size=(m, 2))
    X = np.zeros((m, size, size))
    rows = off[:, 0, None, None] + np.arange(DIGIT)[None, :, None]
    cols = off[:, 1, None, None] + np.arange(DIGIT)[None, None, :]
    X[np.arange(m)[:, None, None], rows, cols] = np.asarray(images, dtype=float).reshape(m, DIGIT, DIGIT)
    return X.reshape(m, size * size), labels, off


def canvas_splits(n: int = 1437, n_test: int = 360, seed: int = 42, train_canvas: int = TRAIN_CANVAS,
                  test_canvases: tuple[int, ...] = TEST_CANVASES) -> dict:
    """``{"train": (X, Y, offsets), "test": {str(S): (X, Y, offsets), ...}}``, Y one-hot (·, 10).

    The train and test images are disjoint; the test images are the same on every canvas."""
    from ..data import digits_arrays

    pixels, labels = digits_arrays()
    if n < 1 or n_test < 1 or n + n_test > len(labels):
        raise SheafError(Diagnostic("E605", f"digits_canvas has {len(labels)} images; n={n}, n_test={n_test} do not fit",
                                    hint="e.g. n=1437 n_test=360"))
    rng = np.random.default_rng(seed)
    p = rng.permutation(len(labels))
    tr, te = p[:n], p[n:n + n_test]
    Y = np.eye(10)[labels]
    out = {"train": place(pixels[tr] / 16.0, Y[tr], size=train_canvas, rng=rng), "test": {}}
    for s in test_canvases:
        out["test"][str(s)] = place(pixels[te] / 16.0, Y[te], size=s, rng=rng)
    return out


def pad_to(X: np.ndarray, size: int, target: int) -> np.ndarray:
    """(m, size²) canvases zero-padded, centred, to (m, target²) (the CNN's fixed input)."""
    if target < size:
        raise SheafError(Diagnostic("E571", f"cannot pad a {size}x{size} canvas to {target}x{target}"))
    m = len(X)
    lo = (target - size) // 2
    out = np.zeros((m, target, target))
    out[:, lo:lo + size, lo:lo + size] = np.asarray(X).reshape(m, size, size)
    return out.reshape(m, target * target)


def accuracy(scores: np.ndarray, Y: np.ndarray) -> float:
    """The fraction of rows whose arg max is the one-hot target's."""
    return float(np.mean(np.argmax(scores, axis=1) == np.argmax(Y, axis=1)))


#: the side of a patch: an agent of the grid sees a PATCH × PATCH block of the canvas
PATCH = 4


def patches(X: np.ndarray, size: int, patch: int = PATCH) -> np.ndarray:
    """(m, size²) canvases → (m, R, C, patch²) the grid agents' observations (R = C = size / patch), patch
    (i, j) the block of rows patch·i .. and columns patch·j .., row-major.

    >>> patches(np.arange(16.0)[None], 4, 2)[0, 0, 1].tolist()
    [2.0, 3.0, 6.0, 7.0]
    """
    if size % patch:
        raise SheafError(Diagnostic("E571", f"a {size}x{size} canvas does not split into {patch}x{patch} patches",
                                    hint=f"canvas sizes are multiples of {patch}"))
    m, r = len(X), size // patch
    return (np.asarray(X).reshape(m, r, patch, r, patch).transpose(0, 1, 3, 2, 4).reshape(m, r, r, patch * patch))
