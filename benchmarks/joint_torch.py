"""A PyTorch reimplementation of the paper's joint Euler flow: the side-by-side baseline of bench_joint.py.

The paper's own code (a PyTorch library, not on this machine) trains a ReLU MLP as a sheaf by one
simultaneous forward-Euler flow of stalks and weights (docs/tasks.md): stalks z_k (pre-activation)
and a_k (activation) per training example, edge discords

    z_k − (W_k a_{k−1} + b_k),   a_k − σ(z_k) z_k  (σ = 1[z ≥ 0]),   y − z_out  (the pinned target),

stalk step c ← c − dt α ∇_c E, weight step θ ← θ − dt β Σ_i ∂E_i/∂θ (summed over the batch,
β = 1/n_train), 100 epochs of 1,000 steps, the train loss logged once per epoch. This file writes that
flow as a PyTorch user would (float64 tensors, ``torch.no_grad``, explicit gradients: the flow is
not a backward pass), so that the two implementations can be timed on the same machine, in the
same session, alternately, and checked against each other number for number.

Run as a command (the paper's whole run), it reads the data and the initial weights from an .npz
written by bench_joint.py, runs the flow, and writes the final weights and losses to another .npz:

    python benchmarks/joint_torch.py IN.npz OUT.npz [--steps 100000] [--log-every 1000] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


class JointFlowTorch:
    """The flow on an MLP [d_0, h_1, ..., h_L, d_out] with ReLU hidden layers and an identity output."""

    def __init__(self, weights, biases, X, Y, *, alpha=1.0, beta=None, dt=0.005, init="zeros"):
        t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))
        self.W = [t(w).clone() for w in weights]
        self.b = [t(b).clone() for b in biases]
        self.X, self.Y = t(X), t(Y)
        n = self.X.shape[0]
        self.alpha, self.dt = float(alpha), float(dt)
        self.beta = 1.0 / n if beta is None else float(beta)
        # stalks: z_1, a_1, ..., z_L, a_L, z_out
        self.z, self.a = [], []
        with torch.no_grad():
            h = self.X
            for k, (W, b) in enumerate(zip(self.W, self.b)):
                z = h @ W.T + b
                self.z.append(z.clone() if init == "forward" else torch.zeros_like(z))
                if k < len(self.W) - 1:
                    h = torch.relu(z)
                    self.a.append(h.clone() if init == "forward" else torch.zeros_like(h))

    def predict(self, X):
        h = X
        for k, (W, b) in enumerate(zip(self.W, self.b)):
            h = h @ W.T + b
            if k < len(self.W) - 1:
                h = torch.relu(h)
        return h

    @torch.no_grad()
    def step(self):
        L = len(self.W)
        tails = [self.X] + self.a  # what edge k reads
        U = [self.z[k] - (tails[k] @ self.W[k].T + self.b[k]) for k in range(L)]  # affine discords
        gates = [(z >= 0).to(z.dtype) for z in self.z[:-1]]
        R = [self.a[k] - gates[k] * self.z[k] for k in range(L - 1)]  # ReLU discords
        r = self.Y - self.z[-1]  # the output edge's discord (y pinned)
        # weight gradients at the current stalks (summed over the batch)
        dW = [-(U[k].T @ tails[k]) for k in range(L)]
        db = [-U[k].sum(0) for k in range(L)]
        # stalk gradients
        gz = [U[k] - gates[k] * R[k] for k in range(L - 1)] + [U[-1] - r]
        ga = [R[k] - U[k + 1] @ self.W[k + 1] for k in range(L - 1)]
        s = self.dt * self.alpha
        for k in range(L):
            self.z[k] -= s * gz[k]
        for k in range(L - 1):
            self.a[k] -= s * ga[k]
        for k in range(L):
            self.W[k] -= self.dt * (self.beta * dW[k])
            self.b[k] -= self.dt * (self.beta * db[k])

    @torch.no_grad()
    def train_mse(self) -> float:
        return float(((self.predict(self.X) - self.Y) ** 2).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inp")
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--log-every", type=int, default=1000, help="steps between two logged train losses (an epoch)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    d = np.load(args.inp)
    L = int(d["layers"])
    flow = JointFlowTorch([d[f"W{k}"] for k in range(L)], [d[f"b{k}"] for k in range(L)], d["X"], d["Y"],
                          alpha=float(d["alpha"]), dt=float(d["dt"]), init=str(d["init"]))
    t0 = time.perf_counter()
    log = []
    for step in range(1, args.steps + 1):
        flow.step()
        if step % args.log_every == 0:
            log.append((step, flow.train_mse()))
    seconds = time.perf_counter() - t0
    out = {f"W{k}": flow.W[k].numpy() for k in range(L)}
    out.update({f"b{k}": flow.b[k].numpy() for k in range(L)})
    out.update(z=np.concatenate([z.numpy() for z in flow.z], axis=1), log=np.array(log), seconds=seconds,
               test_mse=float(((flow.predict(torch.as_tensor(d["Xte"])) - torch.as_tensor(d["Yte"])) ** 2).mean()))
    np.savez(args.out, **out)
    print(f"torch joint flow: {args.steps} steps in {seconds:.2f} s, train MSE {log[-1][1]:.4f}" if log else
          f"torch joint flow: {args.steps} steps in {seconds:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
