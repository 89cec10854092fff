"""An independent float64 reference written as tutorials write an RNN: plain loops per sample and per step, np.dot.

It shares nothing with rnn_xp's engine but the weight layout (documented in rnn_xp.params).
"""

import math

import numpy as np


def _sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))


def _softplus(v):
    return math.log1p(math.exp(v)) if v < 30 else v + math.log1p(math.exp(-v))


# canonical name -> scalar function f(v, alpha, beta)
SCALAR = {
    "Relu": lambda v, a, b: max(v, 0.0),
    "Tanh": lambda v, a, b: math.tanh(v),
    "Sigmoid": lambda v, a, b: _sigmoid(v),
    "Affine": lambda v, a, b: a * v + b,
    "LeakyRelu": lambda v, a, b: v if v >= 0 else a * v,
    "ThresholdedRelu": lambda v, a, b: v if v > a else 0.0,
    "ScaledTanh": lambda v, a, b: a * math.tanh(b * v),
    "HardSigmoid": lambda v, a, b: min(max(a * v + b, 0.0), 1.0),
    "Elu": lambda v, a, b: v if v >= 0 else a * (math.exp(v) - 1.0),
    "Softsign": lambda v, a, b: v / (1.0 + abs(v)),
    "Softplus": lambda v, a, b: _softplus(v),
    "Selu": lambda v, a, b: b * (v if v >= 0 else a * (math.exp(v) - 1.0)),
    "Relu6": lambda v, a, b: min(max(v, 0.0), 6.0),
    "Silu": lambda v, a, b: v * _sigmoid(v),
    "HardSilu": lambda v, a, b: v * min(max(v / 6.0 + 0.5, 0.0), 1.0),
    "Exponential": lambda v, a, b: math.exp(v),
    "LogSigmoid": lambda v, a, b: -_softplus(-v),
    "HardTanh": lambda v, a, b: min(max(v, -1.0), 1.0),
    "Mish": lambda v, a, b: v * math.tanh(_softplus(v)),
    "TanhShrink": lambda v, a, b: v - math.tanh(v),
}


def _vec(act, clip):
    name, a, b = act.name, act.alpha, act.beta

    def f(vec):
        out = np.empty_like(vec)
        for j, v in enumerate(vec):
            if clip is not None:
                v = min(max(v, -clip), clip)
            out[j] = SCALAR[name](float(v), a, b)
        return out

    return f


def _cell(cfg, w, acts, x_t, h, c):
    """One step for one sample; vectors only."""
    H = cfg.hidden_size
    fs = [_vec(a, cfg.clip) for a in acts]
    zero = np.zeros(w["w_ih"].shape[0])
    bi = w.get("b_ih", zero)
    bh = w.get("b_hh", zero)
    if cfg.cell == "rnn":
        return fs[0](np.dot(w["w_ih"], x_t) + bi + np.dot(w["w_hh"], h) + bh), None
    if cfg.cell == "gru":
        Wi, Wh = w["w_ih"], w["w_hh"]
        r = fs[0](np.dot(Wi[:H], x_t) + bi[:H] + np.dot(Wh[:H], h) + bh[:H])
        z = fs[0](np.dot(Wi[H : 2 * H], x_t) + bi[H : 2 * H] + np.dot(Wh[H : 2 * H], h) + bh[H : 2 * H])
        if cfg.reset_after:
            n = fs[1](np.dot(Wi[2 * H :], x_t) + bi[2 * H :] + r * (np.dot(Wh[2 * H :], h) + bh[2 * H :]))
        else:
            n = fs[1](np.dot(Wi[2 * H :], x_t) + bi[2 * H :] + np.dot(Wh[2 * H :], r * h) + bh[2 * H :])
        return (1 - z) * n + z * h, None
    # lstm
    pre = np.dot(w["w_ih"], x_t) + bi + np.dot(w["w_hh"], h) + bh
    ai, af, ag, ao = pre[:H], pre[H : 2 * H], pre[2 * H : 3 * H], pre[3 * H :]
    p = w.get("p")
    if p is not None:
        ai = ai + p[:H] * c
        af = af + p[H : 2 * H] * c
    i = fs[0](ai)
    f = 1 - i if cfg.input_forget else fs[0](af)
    c_new = f * c + i * fs[1](ag)
    if p is not None:
        ao = ao + p[2 * H :] * c_new
    o = fs[0](ao)
    h_new = o * _vec(acts[2], None)(c_new)  # clip never bounds the cell state (onnxruntime)
    if "w_hr" in w:
        h_new = np.dot(w["w_hr"], h_new)
    return h_new, c_new


def reference_forward(x, params, initial_state=None, lengths=None, mask=None, zero_output_for_mask=False):
    """x (B, T, F) host array; params any rnn_xp params. Returns float64 (y, h_n, c_n or None)."""
    from rnn_xp._xp import to_host

    cfg = params.config
    W = [[{n: to_host(a).astype(np.float64) for n, a in w.items()} for w in per_dir] for per_dir in params.layers]
    x = np.asarray(to_host(x), dtype=np.float64)
    B, T, _ = x.shape
    L, D, Hout, H = cfg.num_layers, cfg.num_directions, cfg.output_size, cfg.hidden_size
    if initial_state is None:
        h0 = np.zeros((L * D, B, Hout))
        c0 = np.zeros((L * D, B, H))
    elif cfg.cell == "lstm":
        h0, c0 = (np.asarray(to_host(s), dtype=np.float64) for s in initial_state)
    else:
        h0, c0 = np.asarray(to_host(initial_state), dtype=np.float64), np.zeros((L * D, B, H))
    lengths = [T] * B if lengths is None else [int(v) for v in np.asarray(to_host(lengths)) if True]
    mask = np.ones((B, T), bool) if mask is None else np.asarray(to_host(mask), bool)
    y_all = np.zeros((B, T, D * Hout))
    h_n = np.zeros((L * D, B, Hout))
    c_n = np.zeros((L * D, B, H))
    for b in range(B):
        seq = x[b]  # (T, F)
        for k in range(L):
            out = np.zeros((T, D * Hout))
            for d in range(D):
                reverse = (d == 1) != (cfg.direction == "reverse")
                h, c = h0[k * D + d, b].copy(), c0[k * D + d, b].copy()
                last = np.zeros(Hout)
                steps = range(lengths[b] - 1, -1, -1) if reverse else range(lengths[b])
                for t in steps:
                    if mask[b, t]:
                        h, c = _cell(cfg, W[k][d], cfg.activations[d], seq[t], h, c)
                        last = h
                        out[t, d * Hout : (d + 1) * Hout] = h
                    elif not zero_output_for_mask:
                        out[t, d * Hout : (d + 1) * Hout] = last
                h_n[k * D + d, b] = h
                if c is not None:
                    c_n[k * D + d, b] = c
            seq = out
        y_all[b] = seq
    return y_all, h_n, (c_n if cfg.cell == "lstm" else None)
