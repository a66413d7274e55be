"""The tasks' baselines in NumPy, each with its own backward pass: a recurrent MPNN on the Sudoku
agent graph, and a small CNN for the digit canvases. Both are trained by Adam on the mean
cross-entropy; ``tests/test_tasks.py`` checks every gradient against central finite differences.

**Recurrent MPNN** (Gilmer et al.'s message passing, one set of weights for all T rounds) on the
agent graph of an n × n Sudoku: the 3n units (rows, columns, boxes) are the vertices, and a directed
edge b → a joins every two units that share a cell. Agent a observes x_a ∈ R^{n·n}, the one-hot
givens of its n cells (in the unit's cell order); edge b → a carries the fixed feature
s_ab ∈ {0, 1}^{2n}, which slots of a and which of b hold the shared cells. With h⁰ = 0, for
t = 1..T:

    M_ba = relu([h_b, h_a, s_ab] W_m + b_m)                 (E, H) messages
    m_a  = (1/deg a) Σ_{b → a} M_ba                          the mean message
    h_a  ← tanh([h_a, m_a, x_a] W_u + b_u)

and the decoder reads each cell c from the three agents that hold it: o_a = h_a W_d + b_d ∈ R^{n×n}
(a row of digit scores per slot), z_c = Σ_{a ∋ c} o_a[slot_a(c)], p_c = softmax(z_c); the loss is the
mean over cells and puzzles of −log p_c[y_c]. Parameters 4H² + (2n² + 2n + 2)H + n².

**CNN** on a P × P input (every canvas zero-padded, centred, to P: the fixed input of a dense head,
as the paper's baseline): conv 3×3 (1 → C1, zero 'same' padding) → relu → 2×2 max pool → conv 3×3
(C1 → C2) → relu → 2×2 max pool → dense (C2·(P/4)² → 10) → softmax. Parameters
10·C1 + 9·C1·C2 + C2 + 10·C2·(P/4)² + 10.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import Diagnostic, SheafError
from ..optim import make_optimizer, scheduled_lr
from .sudoku import geometry


def _softmax_ce(z: np.ndarray, Y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of logits z (..., K) against one-hot Y, and its gradient in z."""
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    p = e / e.sum(axis=-1, keepdims=True)
    rows = int(np.prod(z.shape[:-1]))
    loss = -float(np.sum(Y * (z - np.log(e.sum(axis=-1, keepdims=True))))) / rows
    return loss, (p - Y) / rows


def _glorot(rng, fan_in, fan_out):
    return rng.normal(0.0, np.sqrt(2.0 / (fan_in + fan_out)), size=(fan_in, fan_out))


# ----------------------------------------------------------------------------------------------
# recurrent MPNN on the Sudoku agent graph


@dataclass
class MPNN:
    """A recurrent MPNN for n × n Sudoku (see the module docstring): width ``hidden``, ``rounds`` T."""

    n: int = 4
    hidden: int = 16
    rounds: int = 8

    def __post_init__(self):
        g = geometry(self.n)
        self.g = g
        A = 3 * self.n
        src, dst, feat = [], [], []
        sets = [set(u.tolist()) for u in g.units]
        for a in range(A):
            for b in range(A):
                shared = sets[a] & sets[b] if a != b else set()
                if shared:
                    f = np.zeros(2 * self.n)
                    f[[list(g.units[a]).index(c) for c in shared]] = 1.0
                    f[[self.n + list(g.units[b]).index(c) for c in shared]] = 1.0
                    src.append(b)
                    dst.append(a)
                    feat.append(f)
        E = len(src)
        self.S_src = np.zeros((E, A))
        self.S_src[np.arange(E), src] = 1.0
        self.S_dst = np.zeros((E, A))
        self.S_dst[np.arange(E), dst] = 1.0
        deg = self.S_dst.sum(axis=0)
        self.mean = (self.S_dst / deg).T  # (A, E): m_a = Σ_e mean[a, e] M_e
        self.feat = np.array(feat)

    def n_params(self) -> int:
        return self.count(self.n, self.hidden)

    @staticmethod
    def count(n: int, hidden: int) -> int:
        """4H² + (2n² + 2n + 2)H + n²."""
        return 4 * hidden * hidden + (2 * n * n + 2 * n + 2) * hidden + n * n

    def init(self, seed: int = 0) -> dict:
        rng = np.random.default_rng(seed)
        H, n = self.hidden, self.n
        return {"W_m": _glorot(rng, 2 * H + 2 * n, H), "b_m": np.zeros(H),
                "W_u": _glorot(rng, 2 * H + n * n, H), "b_u": np.zeros(H),
                "W_d": _glorot(rng, H, n * n), "b_d": np.zeros(n * n)}

    def _observe(self, X):
        n = self.n
        return X.reshape(len(X), n * n, n)[:, self.g.units].reshape(len(X), 3 * n, n * n)  # (B, A, n²)

    def _forward(self, P, X):
        B, A, H = len(X), 3 * self.n, self.hidden
        x = self._observe(X)
        feat = np.broadcast_to(self.feat, (B,) + self.feat.shape)
        h = np.zeros((B, A, H))
        tape = []
        for _ in range(self.rounds):
            hs = np.einsum("ea,bah->beh", self.S_src, h)
            hd = np.einsum("ea,bah->beh", self.S_dst, h)
            inp_m = np.concatenate([hs, hd, feat], axis=2)
            M = np.maximum(inp_m @ P["W_m"] + P["b_m"], 0.0)
            m = np.einsum("ae,beh->bah", self.mean, M)
            inp_u = np.concatenate([h, m, x], axis=2)
            h_new = np.tanh(inp_u @ P["W_u"] + P["b_u"])
            tape.append((inp_m, M, inp_u, h_new))
            h = h_new
        return h, tape

    def logits(self, P, X) -> np.ndarray:
        """(B, n²·n) cell-major digit scores."""
        h, _ = self._forward(P, X)
        return self._decode(P, h).reshape(len(X), -1)

    def _decode(self, P, h):
        n, g = self.n, self.g
        o = (h @ P["W_d"] + P["b_d"]).reshape(len(h), 3 * n, n, n)  # (B, A, slot, digit)
        return sum(o[:, g.cell_units[:, k], g.slot[:, k]] for k in range(3))  # (B, n², n)

    def loss_and_grad(self, P, X, Y) -> tuple[float, dict]:
        n, g, H = self.n, self.g, self.hidden
        B = len(X)
        h, tape = self._forward(P, X)
        z = self._decode(P, h)
        loss, dz = _softmax_ce(z, Y.reshape(B, n * n, n))
        do = np.zeros((B, 3 * n, n, n))
        for k in range(3):
            do[:, g.cell_units[:, k], g.slot[:, k]] += dz
        do = do.reshape(B, 3 * n, n * n)
        G = {k: np.zeros_like(v) for k, v in P.items()}
        G["W_d"] = np.einsum("bah,bak->hk", h, do)
        G["b_d"] = do.sum(axis=(0, 1))
        dh = do @ P["W_d"].T
        for inp_m, M, inp_u, h_new in reversed(tape):
            dpre = dh * (1.0 - h_new ** 2)
            G["W_u"] += np.einsum("bai,bah->ih", inp_u, dpre)
            G["b_u"] += dpre.sum(axis=(0, 1))
            dinp = dpre @ P["W_u"].T
            dh_prev, dm = dinp[..., :H], dinp[..., H:2 * H]
            dM = np.einsum("ae,bah->beh", self.mean, dm) * (M > 0)
            G["W_m"] += np.einsum("bei,beh->ih", inp_m, dM)
            G["b_m"] += dM.sum(axis=(0, 1))
            dinp_m = dM @ P["W_m"].T
            dh = (dh_prev + np.einsum("ea,beh->bah", self.S_src, dinp_m[..., :H])
                  + np.einsum("ea,beh->bah", self.S_dst, dinp_m[..., H:2 * H]))
        return loss, G


def mpnn_for_params(target: int, n: int = 4, rounds: int = 8) -> MPNN:
    """The MPNN whose parameter count is nearest ``target`` (its width H chosen)."""
    best = min(range(1, 513), key=lambda H: abs(MPNN.count(n, H) - target))
    return MPNN(n, best, rounds)


# ----------------------------------------------------------------------------------------------
# CNN


def _windows(xp: np.ndarray) -> np.ndarray:
    """(B, C, P+2, P+2) → (B, C, P, P, 3, 3) views of the 3×3 neighbourhoods."""
    return np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))


def _conv(x, W, b):
    """'same' 3×3 convolution (cross-correlation): x (B, C, P, P), W (O, C, 3, 3) → (B, O, P, P), by im2col:
    the (B·P·P, C·9) matrix of neighbourhoods times W reshaped (C·9, O)."""
    B, C, P, _ = x.shape
    cols = np.ascontiguousarray(_windows(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))))
                                .transpose(0, 2, 3, 1, 4, 5)).reshape(B * P * P, C * 9)
    out = cols @ W.reshape(len(W), -1).T + b
    return out.reshape(B, P, P, -1).transpose(0, 3, 1, 2), cols


def _conv_back(dout, cols, W, shape):
    B, C, P, _ = shape
    d2 = dout.transpose(0, 2, 3, 1).reshape(B * P * P, -1)  # (B·P·P, O)
    dW = (d2.T @ cols).reshape(W.shape)
    db = d2.sum(axis=0)
    dcols = (d2 @ W.reshape(len(W), -1)).reshape(B, P, P, C, 3, 3)
    dxp = np.zeros((B, C, P + 2, P + 2))
    for k in range(3):
        for l in range(3):
            dxp[:, :, k:k + P, l:l + P] += dcols[..., k, l].transpose(0, 3, 1, 2)
    return dxp[:, :, 1:-1, 1:-1], dW, db


def _pool(x):
    """2×2 max pool of (B, C, P, P), P even; the arg-max mask (one winner per window) for the backward."""
    B, C, P, _ = x.shape
    w = x.reshape(B, C, P // 2, 2, P // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(B, C, P // 2, P // 2, 4)
    idx = w.argmax(axis=-1)
    out = np.take_along_axis(w, idx[..., None], axis=-1)[..., 0]
    return out, idx


def _pool_back(dout, idx, shape):
    B, C, P, _ = shape
    dw = np.zeros((B, C, P // 2, P // 2, 4))
    np.put_along_axis(dw, idx[..., None], dout[..., None], axis=-1)
    return dw.reshape(B, C, P // 2, P // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(shape)


@dataclass
class CNN:
    """The small CNN of the module docstring on ``size`` × ``size`` inputs (divisible by 4)."""

    size: int = 32
    c1: int = 4
    c2: int = 4

    def __post_init__(self):
        if self.size % 4:
            raise SheafError(Diagnostic("E571", f"the CNN's input size {self.size} is not a multiple of 4"))

    def n_params(self) -> int:
        return self.count(self.size, self.c1, self.c2)

    @staticmethod
    def count(size: int, c1: int, c2: int) -> int:
        """10·C1 + 9·C1·C2 + C2 + 10·C2·(P/4)² + 10."""
        return 10 * c1 + 9 * c1 * c2 + c2 + 10 * c2 * (size // 4) ** 2 + 10

    def init(self, seed: int = 0) -> dict:
        rng = np.random.default_rng(seed)
        c1, c2, q = self.c1, self.c2, (self.size // 4) ** 2
        return {"K1": rng.normal(0, np.sqrt(2.0 / 9), (c1, 1, 3, 3)), "c1": np.zeros(c1),
                "K2": rng.normal(0, np.sqrt(2.0 / (9 * c1)), (c2, c1, 3, 3)), "c2": np.zeros(c2),
                "W": _glorot(rng, c2 * q, 10), "b": np.zeros(10)}

    def _forward(self, P, X):
        x = X.reshape(len(X), 1, self.size, self.size)
        a1, w1 = _conv(x, P["K1"], P["c1"])
        r1 = np.maximum(a1, 0.0)
        p1, i1 = _pool(r1)
        a2, w2 = _conv(p1, P["K2"], P["c2"])
        r2 = np.maximum(a2, 0.0)
        p2, i2 = _pool(r2)
        f = p2.reshape(len(X), -1)
        return f @ P["W"] + P["b"], (x, a1, w1, i1, p1, a2, w2, i2, p2, f)

    def logits(self, P, X) -> np.ndarray:
        return self._forward(P, X)[0]

    def loss_and_grad(self, P, X, Y) -> tuple[float, dict]:
        z, (x, a1, w1, i1, p1, a2, w2, i2, p2, f) = self._forward(P, X)
        loss, dz = _softmax_ce(z, Y)
        G = {"W": f.T @ dz, "b": dz.sum(axis=0)}
        dp2 = (dz @ P["W"].T).reshape(p2.shape)
        da2 = _pool_back(dp2, i2, a2.shape) * (a2 > 0)
        dp1, G["K2"], G["c2"] = _conv_back(da2, w2, P["K2"], p1.shape)
        da1 = _pool_back(dp1, i1, a1.shape) * (a1 > 0)
        _, G["K1"], G["c1"] = _conv_back(da1, w1, P["K1"], x.shape)
        return loss, G


def cnn_for_params(target: int, size: int = 32) -> CNN:
    """A CNN whose parameter count is within 5% of ``target`` (the nearest, if none is): of those, the one with
    C1 nearest C2 (a balanced net, not a 1-channel first layer feeding a wide head), then the fewest channels."""
    pairs = [(c1, c2) for c2 in range(1, 65) for c1 in range(1, 33)]
    off = {c: abs(CNN.count(size, *c) / target - 1) for c in pairs}
    near = [c for c in pairs if off[c] <= 0.05] or [min(pairs, key=off.get)]
    return CNN(size, *min(near, key=lambda c: (abs(c[1] - c[0]), c[0] + c[1])))


# ----------------------------------------------------------------------------------------------
# training


def fit(model, X: np.ndarray, Y: np.ndarray, *, steps: int = 1000, batch: int = 64, lr: float = 0.01,
        seed: int = 0, params: dict | None = None, log_every: int = 0,
        lr_schedule: str = "constant") -> tuple[dict, list[float]]:
    """Adam on minibatches (a seeded reshuffle each epoch), its step size ``lr`` over the steps as ``lr_schedule``
    says (:func:`sheafdsl.training.optim.scheduled_lr`); (parameters, loss per step)."""
    rng = np.random.default_rng(seed)
    P = params if params is not None else model.init(seed)
    opt = make_optimizer("adam", lr)
    losses, order, pos = [], rng.permutation(len(X)), 0
    for t in range(int(steps)):
        opt.lr = scheduled_lr(lr, t, int(steps), lr_schedule)
        if pos + batch > len(X):
            order, pos = rng.permutation(len(X)), 0
        idx = order[pos:pos + batch]
        pos += batch
        loss, G = model.loss_and_grad(P, X[idx], Y[idx])
        if not np.isfinite(loss):
            raise SheafError(Diagnostic("E572", f"the {type(model).__name__} baseline's loss became {loss} at step "
                                                f"{len(losses) + 1}", hint="lower its learning rate"))
        opt.step(P, G)
        losses.append(loss)
    return P, losses


def predict(model, P: dict, X: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Logits of ``X`` in chunks (bounded memory)."""
    return np.concatenate([model.logits(P, X[i:i + chunk]) for i in range(0, len(X), chunk)])
