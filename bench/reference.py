"""A float64 reference, vectorised over the batch, written apart from rnn_xp's engine.

PyTorch's equations with its default activations (rnn tanh; LSTM i, f, g, o; GRU r, z, n with
the reset applied after the recurrent matmul), weights in rnn_xp/PyTorch layout. Only what the
benchmark configs need: one layer, one direction, both biases.
"""

from __future__ import annotations

import numpy as np


def _sigmoid(v):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-v))


def forward64(cell, x, w):
    """x (B, T, F); w: dict of float64 arrays w_ih, w_hh, b_ih, b_hh. Returns y (B, T, H), h_T, c_T or None."""
    x = np.asarray(x, dtype=np.float64)
    B, T, _ = x.shape
    w_ih, w_hh, b_ih, b_hh = (np.asarray(w[k], dtype=np.float64) for k in ("w_ih", "w_hh", "b_ih", "b_hh"))
    H = w_hh.shape[1]
    h = np.zeros((B, H))
    c = np.zeros((B, H))
    y = np.empty((B, T, H))
    for t in range(T):
        a_x = x[:, t] @ w_ih.T + b_ih  # (B, G*H)
        a_h = h @ w_hh.T + b_hh  # (B, G*H)
        if cell == "rnn":
            h = np.tanh(a_x + a_h)
        elif cell == "lstm":
            a = a_x + a_h
            i, f, g, o = (
                _sigmoid(a[:, :H]),
                _sigmoid(a[:, H : 2 * H]),
                np.tanh(a[:, 2 * H : 3 * H]),
                _sigmoid(a[:, 3 * H :]),
            )
            c = f * c + i * g
            h = o * np.tanh(c)
        elif cell == "gru":
            r = _sigmoid(a_x[:, :H] + a_h[:, :H])
            z = _sigmoid(a_x[:, H : 2 * H] + a_h[:, H : 2 * H])
            n = np.tanh(a_x[:, 2 * H :] + r * a_h[:, 2 * H :])
            h = (1.0 - z) * n + z * h
        else:
            raise ValueError(f"cell={cell!r}; expected 'rnn', 'lstm' or 'gru'")
        y[:, t] = h
    return y, h, (c if cell == "lstm" else None)
