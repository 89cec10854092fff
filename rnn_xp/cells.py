"""One time step of each cell, written against the Array API alone.

Every step takes ``gi``, the input projection of this step already computed for all
steps at once (``x_t @ w_ih.T + b_ih``, shape (B, G*H)), the previous state, and the
weights; it returns the new state ``(h, c)``, or ``(h, c, gates)`` with ``gates=True``:
the gate activations as they enter the cell update (LSTM i, f, g, o; GRU r, z, n; none for
SimpleRNN), for :func:`rnn_xp.forward`'s ``trace``. Gate orders: LSTM i, f, g, o; GRU r, z, n.
The time loop in :mod:`rnn_xp.loop` owns the recurrence; :mod:`rnn_xp.registry` lists the cells.
"""

from __future__ import annotations

__all__ = ["rnn_step", "lstm_step", "gru_step"]


def _act(act, x, clip, xp):
    """An activation of a possibly clipped input (ONNX's clip bounds the inputs of the gate activations)."""
    if clip is not None:
        x = xp.clip(x, -clip, clip)
    return act(x, xp)


def _recurrent(h, w_hh, b_hh, xp):
    out = xp.matmul(h, xp.matrix_transpose(w_hh))  # (B, G*H)
    return out if b_hh is None else out + b_hh


def rnn_step(gi, h, c, w, cfg, acts, xp, *, gates=False):
    """h_t = f(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)"""
    (f,) = acts
    h = _act(f, gi + _recurrent(h, w.w_hh, w.b_hh, xp), cfg.clip, xp)  # (B, H)
    return (h, None, {}) if gates else (h, None)


def lstm_step(gi, h, c, w, cfg, acts, xp, *, gates=False):
    """LSTM with optional peepholes (ONNX P), coupled input-forget gate and projection (PyTorch)."""
    f_act, g_act, h_act = acts
    H, clip = cfg.hidden_size, cfg.clip
    a = gi + _recurrent(h, w.w_hh, w.b_hh, xp)  # (B, 4H)
    a_i, a_f, a_g, a_o = (a[:, k * H : (k + 1) * H] for k in range(4))  # each (B, H)
    if w.p is not None:
        a_i = a_i + w.p[:H] * c
        a_f = a_f + w.p[H : 2 * H] * c
    i = _act(f_act, a_i, clip, xp)
    f = 1.0 - i if cfg.input_forget else _act(f_act, a_f, clip, xp)
    g = _act(g_act, a_g, clip, xp)
    c = f * c + i * g  # (B, H)
    if w.p is not None:
        a_o = a_o + w.p[2 * H :] * c  # the output gate's peephole sees the new cell state
    o = _act(f_act, a_o, clip, xp)
    h = o * h_act(c, xp)  # (B, H); clip bounds the gates' inputs, never c (as onnxruntime does)
    if w.w_hr is not None:
        h = xp.matmul(h, xp.matrix_transpose(w.w_hr))  # (B, proj_size)
    return (h, c, {"i": i, "f": f, "g": g, "o": o}) if gates else (h, c)


def gru_step(gi, h, c, w, cfg, acts, xp, *, gates=False):
    """GRU; reset after the recurrent matmul (PyTorch, cuDNN, Keras default) or before it (ONNX default)."""
    f_act, g_act = acts
    H, clip = cfg.hidden_size, cfg.clip
    gi_r, gi_z, gi_n = gi[:, :H], gi[:, H : 2 * H], gi[:, 2 * H :]  # each (B, H)
    if cfg.reset_after:
        gh = _recurrent(h, w.w_hh, w.b_hh, xp)  # (B, 3H)
        gh_r, gh_z, gh_n = gh[:, :H], gh[:, H : 2 * H], gh[:, 2 * H :]
        r = _act(f_act, gi_r + gh_r, clip, xp)
        z = _act(f_act, gi_z + gh_z, clip, xp)
        n = _act(g_act, gi_n + r * gh_n, clip, xp)
    else:
        b_hh = w.b_hh
        gh = _recurrent(h, w.w_hh[: 2 * H, :], None if b_hh is None else b_hh[: 2 * H], xp)  # (B, 2H)
        r = _act(f_act, gi_r + gh[:, :H], clip, xp)
        z = _act(f_act, gi_z + gh[:, H:], clip, xp)
        gh_n = _recurrent(r * h, w.w_hh[2 * H :, :], None if b_hh is None else b_hh[2 * H :], xp)  # (B, H)
        n = _act(g_act, gi_n + gh_n, clip, xp)
    h = (1.0 - z) * n + z * h  # (B, H)
    return (h, None, {"r": r, "z": z, "n": n}) if gates else (h, None)
