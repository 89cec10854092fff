"""A per-sample NumPy loop as tutorials write it: per sample, per step, np.dot, for SimpleRNN/LSTM/GRU.

This is the code users start from before reaching for a library (the benchmark's ``numpy-loop``
backend); it is timed as written, not tuned.
"""

from __future__ import annotations

import numpy as np


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def rnn_forward(x, W_ih, W_hh, b_ih, b_hh):
    B, T, _ = x.shape
    H = W_hh.shape[0]
    ys = np.zeros((B, T, H), dtype=x.dtype)
    for b in range(B):
        h = np.zeros(H, dtype=x.dtype)
        for t in range(T):
            h = np.tanh(np.dot(W_ih, x[b, t]) + b_ih + np.dot(W_hh, h) + b_hh)
            ys[b, t] = h
    return ys


def lstm_forward(x, W_ih, W_hh, b_ih, b_hh):
    B, T, _ = x.shape
    H = W_hh.shape[1]
    ys = np.zeros((B, T, H), dtype=x.dtype)
    for b in range(B):
        h = np.zeros(H, dtype=x.dtype)
        c = np.zeros(H, dtype=x.dtype)
        for t in range(T):
            z = np.dot(W_ih, x[b, t]) + b_ih + np.dot(W_hh, h) + b_hh
            i = sigmoid(z[:H])
            f = sigmoid(z[H : 2 * H])
            g = np.tanh(z[2 * H : 3 * H])
            o = sigmoid(z[3 * H :])
            c = f * c + i * g
            h = o * np.tanh(c)
            ys[b, t] = h
    return ys


def gru_forward(x, W_ih, W_hh, b_ih, b_hh):
    B, T, _ = x.shape
    H = W_hh.shape[1]
    ys = np.zeros((B, T, H), dtype=x.dtype)
    for b in range(B):
        h = np.zeros(H, dtype=x.dtype)
        for t in range(T):
            gx = np.dot(W_ih, x[b, t]) + b_ih
            gh = np.dot(W_hh, h) + b_hh
            r = sigmoid(gx[:H] + gh[:H])
            z = sigmoid(gx[H : 2 * H] + gh[H : 2 * H])
            n = np.tanh(gx[2 * H :] + r * gh[2 * H :])
            h = (1 - z) * n + z * h
            ys[b, t] = h
    return ys


FORWARD = {"rnn": rnn_forward, "lstm": lstm_forward, "gru": gru_forward}
