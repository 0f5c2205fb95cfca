"""A plain-numpy LSTM written from the gate equations: the readable reference of what the model computes.

For one direction of one layer, with input x_t (input_size,), previous output h_{t-1} (hidden,)
and the concatenation z_t = [h_{t-1}, x_t]:

    f_t  = sigma(W_f . z_t + b_f)          forget gate
    i_t  = sigma(W_i . z_t + b_i)          input gate
    C~_t = tanh (W_C . z_t + b_C)          candidate cell
    C_t  = f_t * C_{t-1} + i_t * C~_t      cell state
    o_t  = sigma(W_o . z_t + b_o)          output gate
    h_t  = o_t * tanh(C_t)

Mapping to ``torch.nn.LSTM``: torch stores ``weight_ih_l{k}`` (4H, I) and ``weight_hh_l{k}`` (4H, H)
with the four gates stacked in the order **i, f, g, o** (g is the candidate C~), and two biases
``bias_ih_l{k}``, ``bias_hh_l{k}`` (4H,) that are simply added. So here

    W = [weight_hh | weight_ih]  (4H, H + I)   (columns: h first, then x, matching z = [h, x])
    b = bias_ih + bias_hh        (4H,)
    W_i = W[0:H], W_f = W[H:2H], W_C = W[2H:3H], W_o = W[3H:4H]

The reverse direction (``*_reverse``) runs the same equations over the time-reversed sequence;
a bidirectional layer concatenates [forward h_t ; backward h_t] into (2H,) per step, which is the
input of the next stacked layer. Dropout between layers is not modelled (it is off at evaluation).

Backpropagation through time is written by hand in :meth:`LSTMDirection.backward`; the tests check
the forward against ``torch.nn.LSTM`` and the gradients against autograd, both within 1e-5.
Training uses cuDNN/torch; this module is for reading and checking.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))          # numerically stable form of 1 / (1 + e^-x)


@dataclass
class LSTMDirection:
    """One direction of one layer. W: (4H, H+I) over z = [h, x], gate rows i, f, g, o; b: (4H,)."""

    W: np.ndarray
    b: np.ndarray
    reverse: bool = False

    @property
    def hidden(self) -> int:
        return self.W.shape[0] // 4

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, dict]:
        """x: (batch, T, I) -> h: (batch, T, H) and the cache for backward. Zero initial state."""
        bsz, steps, _ = x.shape
        H = self.hidden
        order = range(steps - 1, -1, -1) if self.reverse else range(steps)
        h = np.zeros((bsz, H), x.dtype)
        c = np.zeros((bsz, H), x.dtype)
        out = np.zeros((bsz, steps, H), x.dtype)
        cache = {"order": list(order), "z": {}, "gates": {}, "c": {}, "c_prev": {}}
        for t in order:
            z = np.concatenate([h, x[:, t]], axis=1)                 # (batch, H+I)
            a = z @ self.W.T + self.b                                # (batch, 4H)
            i, f = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H])
            g, o = np.tanh(a[:, 2 * H:3 * H]), sigmoid(a[:, 3 * H:])
            c_prev = c
            c = f * c_prev + i * g
            h = o * np.tanh(c)
            out[:, t] = h
            cache["z"][t], cache["gates"][t] = z, (i, f, g, o)
            cache["c"][t], cache["c_prev"][t] = c, c_prev
        return out, cache

    def backward(self, dout: np.ndarray, cache: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """dout: dL/dh (batch, T, H) -> dL/dx (batch, T, I), dL/dW (4H, H+I), dL/db (4H,).

        Walks the steps in the reverse of the order they were computed, carrying dL/dh_{t-1}
        and dL/dC_{t-1} back through the recurrence.
        """
        H = self.hidden
        bsz, steps, _ = dout.shape
        n_in = self.W.shape[1] - H
        dx = np.zeros((bsz, steps, n_in), dout.dtype)
        dW = np.zeros_like(self.W)
        db = np.zeros_like(self.b)
        dh_next = np.zeros((bsz, H), dout.dtype)
        dc_next = np.zeros((bsz, H), dout.dtype)
        for t in reversed(cache["order"]):
            i, f, g, o = cache["gates"][t]
            c, c_prev = cache["c"][t], cache["c_prev"][t]
            dh = dout[:, t] + dh_next
            tc = np.tanh(c)
            do = dh * tc
            dc = dh * o * (1 - tc ** 2) + dc_next
            di, df, dg = dc * g, dc * c_prev, dc * i
            da = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g ** 2), do * o * (1 - o)], axis=1)
            dW += da.T @ cache["z"][t]
            db += da.sum(axis=0)
            dz = da @ self.W                                         # (batch, H+I)
            dh_next, dx[:, t] = dz[:, :H], dz[:, H:]
            dc_next = dc * f
        return dx, dW, db


class NumpyLSTM:
    """Stacked (bidirectional) LSTM: (batch, T, I) -> (batch, T, D*H), D = 2 if bidirectional."""

    def __init__(self, layers: list[list[LSTMDirection]]):
        self.layers = layers

    @classmethod
    def from_torch(cls, lstm) -> "NumpyLSTM":
        """Copy the weights of a ``torch.nn.LSTM`` (batch_first or not; no projections)."""
        layers = []
        for k in range(lstm.num_layers):
            dirs = []
            for suffix, rev in [("", False), ("_reverse", True)][: 2 if lstm.bidirectional else 1]:
                p = {n: getattr(lstm, f"{n}_l{k}{suffix}").detach().cpu().double().numpy()
                     for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
                W = np.concatenate([p["weight_hh"], p["weight_ih"]], axis=1)
                dirs.append(LSTMDirection(W, p["bias_ih"] + p["bias_hh"], reverse=rev))
            layers.append(dirs)
        return cls(layers)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list]:
        caches = []
        for dirs in self.layers:
            outs, layer_cache = [], []
            for d in dirs:
                h, cache = d.forward(x)
                outs.append(h)
                layer_cache.append(cache)
            caches.append((x, layer_cache))
            x = np.concatenate(outs, axis=2)
        return x, caches

    def backward(self, dout: np.ndarray, caches: list) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """dL/d(output) -> dL/d(input) and gradients named like torch's parameters.

        torch's two biases get the same gradient (they are added), and dL/dW splits back into
        ``weight_hh`` (first H columns) and ``weight_ih`` (the rest).
        """
        grads: dict[str, np.ndarray] = {}
        for k in range(len(self.layers) - 1, -1, -1):
            x, layer_cache = caches[k]
            dx = np.zeros_like(x)
            for j, (d, cache) in enumerate(zip(self.layers[k], layer_cache)):
                H = d.hidden
                ddx, dW, db = d.backward(dout[:, :, j * H:(j + 1) * H], cache)
                dx += ddx
                suffix = "_reverse" if d.reverse else ""
                grads[f"weight_hh_l{k}{suffix}"] = dW[:, :H]
                grads[f"weight_ih_l{k}{suffix}"] = dW[:, H:]
                grads[f"bias_ih_l{k}{suffix}"] = db
                grads[f"bias_hh_l{k}{suffix}"] = db.copy()
            dout = dx
        return dout, grads
