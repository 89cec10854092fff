"""The compiled pieces of the numba implementation (rnn_xp._fast.numba_cpu imports this on first use).

Everything here is ``@njit(cache=True)``: compiled on the first call of a new signature (dtype,
array layouts), then loaded from the on-disk cache by later processes. Compiler options:

* ``error_model="numpy"``: a float division by zero gives inf/nan as in NumPy instead of a Python
  exception check in every loop, which is what keeps the loops vectorisable;
* ``fastmath={"contract"}``: a*b+c may become one fused multiply-add (one rounding fewer); the dot
  products of the batch-1 matrix-vector product add ``"reassoc"`` (a sum split over SIMD lanes, as
  every BLAS does). Neither changes a result beyond rounding; no-NaN/no-inf assumptions are never made.

Every element is computed the same way whichever thread computes it and however the rows or units
are split over threads, so results do not depend on the thread count.

float32 sigmoid and tanh are computed in float64 and rounded once: exp(-|x|) (or expm1) from a
Cody-Waite reduction and a Taylor polynomial, with 2^n built from its bits, which LLVM vectorises
(libm's scalar calls cost 4-15 ns an element; these ~1). Measured on 1.5M float32 inputs over
[-30, 30] against float64: both within 0.50 ULP (correctly rounded but for rare near-ties), mean
signed error under 0.001 ULP. float32 arithmetic alone (a float32 polynomial) reached 2.6 and 1.5
ULP, which left an LSTM's state over 512 steps ~1.3x further from float64 than PyTorch's (whose tanh
is correctly rounded). float64 uses libm (math.exp, math.tanh).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

# Activation codes: the canonical names of rnn_xp.activations, in this order.
ACT_NAMES = (
    "Relu",
    "Tanh",
    "Sigmoid",
    "Affine",
    "LeakyRelu",
    "ThresholdedRelu",
    "ScaledTanh",
    "HardSigmoid",
    "Elu",
    "Softsign",
    "Softplus",
    "Selu",
    "Relu6",
    "Silu",
    "HardSilu",
    "Exponential",
    "LogSigmoid",
    "HardTanh",
    "Mish",
    "TanhShrink",
    "Celu",
    "Gelu",
    "HardShrink",
    "SoftShrink",
    "SparsePlus",
    "SparseSigmoid",
    "Squareplus",
)
RELU, TANH, SIGMOID = 0, 1, 2

# _nrt=False: the kernels allocate nothing, so numba's reference counting is not needed; without it
# the array views taken per batch row cost nothing (measured: a step's per-row overhead halved).
_OPTS = {"cache": True, "error_model": "numpy", "fastmath": {"contract"}, "_nrt": False}
_INLINE = {"inline": "always", "error_model": "numpy", "fastmath": {"contract"}}
_ROW = {"inline": "always", "error_model": "numpy", "fastmath": {"contract"}}  # inlined: no call per row
_DOT = {"cache": True, "error_model": "numpy", "fastmath": {"contract", "reassoc"}, "_nrt": False}


# --- float32 sigmoid and tanh: computed in float64, rounded once (vectorisable) ------------------
@intrinsic
def _f64_from_bits(typingctx, n):
    """The float64 whose bits are the int64 n (2^k as ((k + 1023) << 52))."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@njit(**_INLINE)
def _exp_parts(y):
    """(2^n, expm1(r)) with y = n ln2 + r, |r| <= ln2/2, for -200 <= y <= 0, in float64.

    expm1(r) by its Taylor series to r^9 (relative error below 1e-11): a float32 result computed
    from it is rounded once, correctly but for rare near-ties.
    """
    y = max(y, -200.0)
    n = np.floor(y * 1.4426950408889634 + 0.5)
    r = y - n * 0.6931471803691238  # ln2 in two parts (Cody-Waite)
    r = r - n * 1.9082149292705877e-10
    p = 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    return _f64_from_bits((np.int64(n) + np.int64(1023)) << np.int64(52)), p * r * r + r


@njit(**_INLINE)
def _sigmoid32(x):
    s, m = _exp_parts(-abs(np.float64(x)))
    e = s * m + s  # exp(-|x|)
    d = 1.0 / (1.0 + e)
    return np.float32(d if x >= 0 else e * d)


@njit(**_INLINE)
def _tanh32(x):
    s, m = _exp_parts(-2.0 * abs(np.float64(x)))
    q = s * m + (s - 1.0)  # expm1(-2|x|) <= 0: no cancellation (m itself when n = 0)
    return np.float32(math.copysign(abs(q) / (2.0 + q), x))


@njit(**_INLINE)
def _sigmoid64(x):
    e = math.exp(-abs(x))
    r = 1.0 / (1.0 + e)
    return r if x >= 0.0 else e * r


def sigmoid(x):
    """The logistic function of a float32 or float64 scalar, in its precision (compiled code only)."""
    raise NotImplementedError


def tanh(x):
    """tanh of a float32 or float64 scalar, in its precision (compiled code only)."""
    raise NotImplementedError


@overload(sigmoid, inline="always")
def _ov_sigmoid(x):
    if x == types.float32:
        return lambda x: _sigmoid32(x)
    return lambda x: _sigmoid64(x)


@overload(tanh, inline="always")
def _ov_tanh(x):
    if x == types.float32:
        return lambda x: _tanh32(x)
    return lambda x: math.tanh(x)


def _zero(a):
    """0 in the dtype of array a (compiled code only)."""
    raise NotImplementedError


def _one(a):
    """1 in the dtype of array a (compiled code only)."""
    raise NotImplementedError


@overload(_zero, inline="always")
def _ov_zero(a):
    if a.dtype == types.float32:
        return lambda a: np.float32(0.0)
    return lambda a: np.float64(0.0)


@overload(_one, inline="always")
def _ov_one(a):
    if a.dtype == types.float32:
        return lambda a: np.float32(1.0)
    return lambda a: np.float64(1.0)


# --- every activation ------------------------------------------------------------------------------
@njit(**_INLINE)
def _softplus64(v):
    return max(v, 0.0) + math.log1p(math.exp(-abs(v)))


@njit(**_INLINE)
def _erf64(x):
    # as rnn_xp.activations._erf (Abramowitz & Stegun 7.1.26): Gelu is defined by it
    t = 1.0 / (1.0 + 0.3275911 * abs(x))
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    y = 1.0 - poly * math.exp(-x * x)
    return y if x >= 0 else -y


@njit(error_model="numpy", cache=True)
def _act_any(code, v, a, b):
    """Any activation of rnn_xp.activations, by code, computed in float64 (the rare ones: not vectorised)."""
    if code == 0:
        return max(v, 0.0)
    if code == 1:
        return math.tanh(v)
    if code == 2:
        return _sigmoid64(v)
    if code == 3:
        return a * v + b
    if code == 4:
        return v if v >= 0 else a * v
    if code == 5:
        return v if v > a else 0.0
    if code == 6:
        return a * math.tanh(b * v)
    if code == 7:
        return min(max(a * v + b, 0.0), 1.0)
    if code == 8:
        return v if v >= 0 else a * math.expm1(min(v, 0.0))
    if code == 9:
        return v / (1.0 + abs(v))
    if code == 10:
        return _softplus64(v)
    if code == 11:
        return b * (v if v >= 0 else a * math.expm1(min(v, 0.0)))
    if code == 12:
        return min(max(v, 0.0), 6.0)
    if code == 13:
        return v * _sigmoid64(v)
    if code == 14:
        return v * min(max(v / 6.0 + 0.5, 0.0), 1.0)
    if code == 15:
        return math.exp(v)
    if code == 16:
        return -_softplus64(-v)
    if code == 17:
        return min(max(v, -1.0), 1.0)
    if code == 18:
        return v * math.tanh(_softplus64(v))
    if code == 19:
        return v - math.tanh(v)
    if code == 20:
        return v if v >= 0 else a * math.expm1(min(v, 0.0) / a)
    if code == 21:
        return 0.5 * v * (1.0 + _erf64(v * 0.7071067811865476))
    if code == 22:
        return v if abs(v) > a else 0.0
    if code == 23:
        return v - a if v > a else (v + a if v < -a else 0.0)
    if code == 24:
        return 0.0 if v <= -1.0 else (0.25 * (v + 1.0) ** 2 if v < 1.0 else v)
    if code == 25:
        return min(max(0.5 * (v + 1.0), 0.0), 1.0)
    if code == 26:
        return 0.5 * (v + math.sqrt(v * v + a))
    return math.nan


@njit(**_OPTS)
def activate(v, code, a, b, clip):
    """v = act(clip(v)) in place (v a 1-d view); clip <= 0 means none (ONNX clips the gates' inputs).

    Loops run over range(len(v)) on a view: with an index that provably starts at 0, numba drops
    the negative-index check and LLVM vectorises the loop.
    """
    n = v.shape[0]
    if clip > 0:
        for j in range(n):
            v[j] = min(max(v[j], -clip), clip)
    if code == SIGMOID:
        for j in range(n):
            v[j] = sigmoid(v[j])
    elif code == TANH:
        for j in range(n):
            v[j] = tanh(v[j])
    elif code == RELU:
        zero = _zero(v)
        for j in range(n):
            x = v[j]
            v[j] = zero if x < zero else x  # NaN stays NaN, as np.maximum
    else:
        for j in range(n):
            v[j] = _act_any(code, float(v[j]), a, b)


# --- one row of each cell's gate math, over units [u0, u1) ------------------------------------------
# gh: the recurrent product of this row (overwritten with the gates), gi: its input projection,
# bias: the biases that add to both (b_ih + b_hh), codes/alpha/beta: the cell's activations.
@njit(**_ROW)
def _copy(dst, src):
    """dst[:] = src, as a loop: numba's slice assignment may copy src first (it cannot rule out overlap)."""
    for j in range(dst.shape[0]):
        dst[j] = src[j]


@njit(**_ROW)
def _add3(dst, a, b):
    """dst += a + b (1-d views of one length)."""
    for j in range(dst.shape[0]):
        dst[j] += a[j] + b[j]


@njit(**_ROW)
def rnn_row(gh, gi, bias, h_out, u0, u1, codes, alpha, beta, clip):
    a = gh[u0:u1]
    _add3(a, gi[u0:u1], bias[u0:u1])
    activate(a, codes[0], alpha[0], beta[0], clip)
    _copy(h_out[u0:u1], a)


@njit(**_ROW)
def lstm_row(gh, gi, bias, c_in, c_out, h_out, p, peep, input_forget, u0, u1, codes, alpha, beta, clip):
    """i, f, g, o = gates; c = f c + i g (f = 1 - i with input_forget); h_out = o h(c) (before any projection)."""
    H = c_in.shape[0]
    i, f, g, o = gh[u0:u1], gh[H + u0 : H + u1], gh[2 * H + u0 : 2 * H + u1], gh[3 * H + u0 : 3 * H + u1]
    for k in range(4):
        _add3(gh[k * H + u0 : k * H + u1], gi[k * H + u0 : k * H + u1], bias[k * H + u0 : k * H + u1])
    c0, c1, hv = c_in[u0:u1], c_out[u0:u1], h_out[u0:u1]
    n = u1 - u0
    if peep:  # i and f see c_{t-1}
        p_i, p_f, p_o = p[u0:u1], p[H + u0 : H + u1], p[2 * H + u0 : 2 * H + u1]
        for j in range(n):
            i[j] += p_i[j] * c0[j]
            f[j] += p_f[j] * c0[j]
    activate(i, codes[0], alpha[0], beta[0], clip)
    if not input_forget:
        activate(f, codes[0], alpha[0], beta[0], clip)
    activate(g, codes[1], alpha[1], beta[1], clip)
    if input_forget:
        one = _one(gh)
        for j in range(n):
            c1[j] = (one - i[j]) * c0[j] + i[j] * g[j]
    else:
        for j in range(n):
            c1[j] = f[j] * c0[j] + i[j] * g[j]
    if peep:  # o sees the new c
        for j in range(n):
            o[j] += p_o[j] * c1[j]
    activate(o, codes[0], alpha[0], beta[0], clip)
    _copy(hv, c1)
    activate(hv, codes[2], alpha[2], beta[2], clip * 0)  # h(c): clip never bounds c (as onnxruntime)
    for j in range(n):
        hv[j] *= o[j]


@njit(**_ROW)
def gru_row(gh, gi, bias, b_hn, h_in, h_out, u0, u1, codes, alpha, beta, clip):
    """Reset after the recurrent product: r, z = f(...), n = g(x W_in + b_in + r (h W_hn + b_hn))."""
    H = h_in.shape[0]
    r, z, m = gh[u0:u1], gh[H + u0 : H + u1], gh[2 * H + u0 : 2 * H + u1]
    _add3(r, gi[u0:u1], bias[u0:u1])
    _add3(z, gi[H + u0 : H + u1], bias[H + u0 : H + u1])
    activate(r, codes[0], alpha[0], beta[0], clip)
    activate(z, codes[0], alpha[0], beta[0], clip)
    gi_n, b_n, bh, h0, h1 = (
        gi[2 * H + u0 : 2 * H + u1],
        bias[2 * H + u0 : 2 * H + u1],
        b_hn[u0:u1],
        h_in[u0:u1],
        h_out[u0:u1],
    )
    for j in range(u1 - u0):
        m[j] = gi_n[j] + b_n[j] + r[j] * (m[j] + bh[j])
    activate(m, codes[1], alpha[1], beta[1], clip)
    one = _one(gh)
    for j in range(u1 - u0):
        h1[j] = (one - z[j]) * m[j] + z[j] * h0[j]


@njit(**_ROW)
def gru_rz_row(gh, gi, bias, h_in, rh, u0, u1, codes, alpha, beta, clip):
    """Reset before the recurrent product, part 1: r, z, and r h (which W_hn then multiplies)."""
    H = h_in.shape[0]
    r, z = gh[u0:u1], gh[H + u0 : H + u1]
    _add3(r, gi[u0:u1], bias[u0:u1])
    _add3(z, gi[H + u0 : H + u1], bias[H + u0 : H + u1])
    activate(r, codes[0], alpha[0], beta[0], clip)
    activate(z, codes[0], alpha[0], beta[0], clip)
    h0, out = h_in[u0:u1], rh[u0:u1]
    for j in range(u1 - u0):
        out[j] = r[j] * h0[j]


@njit(**_ROW)
def gru_n_row(gh, gn, gi, bias, b_hn, h_in, h_out, u0, u1, codes, alpha, beta, clip):
    """Part 2: n = g(x W_in + b_in + (r h) W_hn + b_hn), h = (1 - z) n + z h; gn holds (r h) W_hn."""
    H = h_in.shape[0]
    m, z = gn[u0:u1], gh[H + u0 : H + u1]
    gi_n, b_n, bh, h0, h1 = (
        gi[2 * H + u0 : 2 * H + u1],
        bias[2 * H + u0 : 2 * H + u1],
        b_hn[u0:u1],
        h_in[u0:u1],
        h_out[u0:u1],
    )
    for j in range(u1 - u0):
        m[j] = gi_n[j] + b_n[j] + (m[j] + bh[j])
    activate(m, codes[1], alpha[1], beta[1], clip)
    one = _one(gn)
    for j in range(u1 - u0):
        h1[j] = (one - z[j]) * m[j] + z[j] * h0[j]


# --- batch > 1: one step's gate math, rows in parallel (the recurrent products are NumPy's BLAS) -----
# Shapes: gi (n, B, G*H) the chunk's input projection, y (n, B, H_out) the chunk's outputs, run and emit
# (n, B) uint8 (read only when masked), t the chunk-local step; states h (B, H_out), c (B, H) and the
# scratch rows h_new, c_new, hh (h before an LSTM projection; h_new itself without one), rh (B, H).
@njit(**_ROW)
def finalize_row(h_new, c_new, h, c, last, y, t, b, has_c, masked, run, emit):
    """Row b's new state where step t runs (always without a mask), and its output y[t, b]."""
    r = (not masked) or run[t, b] != 0
    if r:
        _copy(h[b], h_new[b])
        if has_c:
            _copy(c[b], c_new[b])
    if not masked:
        _copy(y[t, b], h_new[b])
        return
    if r:
        _copy(last[b], h_new[b])
    if emit[t, b] != 0:
        _copy(y[t, b], last[b])
    else:
        out = y[t, b]
        for j in range(out.shape[0]):
            out[j] = 0


@njit(**_ROW)
def _row(
    b,
    t,
    cell,
    phase,
    finish,
    gh,
    gn,
    gi,
    bias,
    b_hn,
    p,
    peep,
    input_forget,
    h,
    c,
    h_new,
    c_new,
    hh,
    rh,
    last,
    y,
    run,
    emit,
    masked,
    codes,
    alpha,
    beta,
    clip,
):
    """Row b of step t of cell 0 rnn, 1 lstm, 2 gru (reset after), 3 gru (reset before).

    phase 0 is the gate math after the product h W_hh^T (gh); for cell 3 it stops at r h, and phase 1
    (after (r h) W_hn^T in gn) finishes the step. ``finish``: write the state and y (False when an
    LSTM projection still has to run).
    """
    H = rh.shape[1]
    if cell == 0:
        rnn_row(gh[b], gi[t, b], bias, h_new[b], 0, H, codes, alpha, beta, clip)
    elif cell == 1:
        lstm_row(gh[b], gi[t, b], bias, c[b], c_new[b], hh[b], p, peep, input_forget, 0, H, codes, alpha, beta, clip)
    elif cell == 2:
        gru_row(gh[b], gi[t, b], bias, b_hn, h[b], h_new[b], 0, H, codes, alpha, beta, clip)
    elif phase == 0:
        gru_rz_row(gh[b], gi[t, b], bias, h[b], rh[b], 0, H, codes, alpha, beta, clip)
        return
    else:
        gru_n_row(gh[b], gn[b], gi[t, b], bias, b_hn, h[b], h_new[b], 0, H, codes, alpha, beta, clip)
    if finish:
        finalize_row(h_new, c_new, h, c, last, y, t, b, cell == 1, masked, run, emit)


@njit(parallel=True, **_OPTS)
def rows_parallel(
    t,
    cell,
    phase,
    finish,
    gh,
    gn,
    gi,
    bias,
    b_hn,
    p,
    peep,
    input_forget,
    h,
    c,
    h_new,
    c_new,
    hh,
    rh,
    last,
    y,
    run,
    emit,
    masked,
    codes,
    alpha,
    beta,
    clip,
):
    """Every row of one step (see _row), rows spread over numba's threads."""
    for b in prange(h.shape[0]):
        _row(
            b,
            t,
            cell,
            phase,
            finish,
            gh,
            gn,
            gi,
            bias,
            b_hn,
            p,
            peep,
            input_forget,
            h,
            c,
            h_new,
            c_new,
            hh,
            rh,
            last,
            y,
            run,
            emit,
            masked,
            codes,
            alpha,
            beta,
            clip,
        )


@njit(**_OPTS)
def rows_serial(
    t,
    cell,
    phase,
    finish,
    gh,
    gn,
    gi,
    bias,
    b_hn,
    p,
    peep,
    input_forget,
    h,
    c,
    h_new,
    c_new,
    hh,
    rh,
    last,
    y,
    run,
    emit,
    masked,
    codes,
    alpha,
    beta,
    clip,
):
    """rows_parallel on the calling thread (small steps, where a parallel launch costs more than it saves)."""
    for b in range(h.shape[0]):
        _row(
            b,
            t,
            cell,
            phase,
            finish,
            gh,
            gn,
            gi,
            bias,
            b_hn,
            p,
            peep,
            input_forget,
            h,
            c,
            h_new,
            c_new,
            hh,
            rh,
            last,
            y,
            run,
            emit,
            masked,
            codes,
            alpha,
            beta,
            clip,
        )


@njit(**_OPTS)
def finalize_rows(t, h_new, c_new, h, c, last, y, run, emit, masked):
    """After an LSTM projection: the state and the output of every row."""
    for b in range(h.shape[0]):
        finalize_row(h_new, c_new, h, c, last, y, t, b, True, masked, run, emit)


# --- batch 1 and small steps: the whole chunk compiled, W_hh's rows split over the threads -----------
@njit(**_DOT)
def _dot(w, j, v):
    """w[j, :] . v, summed in SIMD lanes."""
    row = w[j]
    s = _zero(v)
    for i in range(v.shape[0]):
        s += row[i] * v[i]
    return s


@njit(**_OPTS)
def _units(k, nth, H):
    """The k-th of nth near-equal slices of range(H)."""
    return (H * k) // nth, (H * (k + 1)) // nth


@njit(**_OPTS)
def _vec_part(
    k,
    nth,
    t,
    cell,
    phase,
    w_hh,
    w_hr,
    gh,
    gn,
    gi,
    bias,
    b_hn,
    p,
    peep,
    input_forget,
    h,
    c,
    h_new,
    c_new,
    hh,
    rh,
    codes,
    alpha,
    beta,
    clip,
):
    """Slice k of nth of a compiled step: the rows of W_hh (or W_hr) for its units, then their gate math.

    Every batch row b in turn. phase 0: W_hh's rows of the slice's units in every gate (cell 3: r and
    z only) and the gate math; phase 1: cell 3, (r h) W_hn^T and the rest of the step; LSTM, the
    projection's rows.
    """
    B = h.shape[0]
    if phase == 1 and cell == 1:
        v0, v1 = _units(k, nth, h_new.shape[1])
        for b in range(B):
            hb, out = hh[b], h_new[b]
            for v in range(v0, v1):
                out[v] = _dot(w_hr, v, hb)
        return
    H = rh.shape[1]
    u0, u1 = _units(k, nth, H)
    G = 2 if cell == 3 else bias.shape[0] // H
    for b in range(B):
        g0, h0, gib = gh[b], h[b], gi[t, b]
        if phase == 1:  # cell 3
            gnb, rhb = gn[b], rh[b]
            for u in range(u0, u1):
                gnb[u] = _dot(w_hh, 2 * H + u, rhb)
            gru_n_row(g0, gnb, gib, bias, b_hn, h0, h_new[b], u0, u1, codes, alpha, beta, clip)
            continue
        for g in range(G):
            for u in range(g * H + u0, g * H + u1):
                g0[u] = _dot(w_hh, u, h0)
        if cell == 0:
            rnn_row(g0, gib, bias, h_new[b], u0, u1, codes, alpha, beta, clip)
        elif cell == 1:
            lstm_row(g0, gib, bias, c[b], c_new[b], hh[b], p, peep, input_forget, u0, u1, codes, alpha, beta, clip)
        elif cell == 2:
            gru_row(g0, gib, bias, b_hn, h0, h_new[b], u0, u1, codes, alpha, beta, clip)
        else:
            gru_rz_row(g0, gib, bias, h0, rh[b], u0, u1, codes, alpha, beta, clip)


@njit(parallel=True, **_OPTS)
def vec_chunk_parallel(
    nth,
    reverse,
    cell,
    proj,
    w_hh,
    w_hr,
    gh,
    gn,
    gi,
    bias,
    b_hn,
    p,
    peep,
    input_forget,
    h,
    c,
    h_new,
    c_new,
    hh,
    rh,
    last,
    y,
    run,
    emit,
    masked,
    codes,
    alpha,
    beta,
    clip,
):
    """Every step of a chunk (batch 1, or small), each step's W_hh rows split over nth threads (a launch a phase)."""
    n = gi.shape[0]
    two = cell == 3 or proj
    for s in range(n):
        t = n - 1 - s if reverse else s
        for k in prange(nth):
            _vec_part(
                k,
                nth,
                t,
                cell,
                0,
                w_hh,
                w_hr,
                gh,
                gn,
                gi,
                bias,
                b_hn,
                p,
                peep,
                input_forget,
                h,
                c,
                h_new,
                c_new,
                hh,
                rh,
                codes,
                alpha,
                beta,
                clip,
            )
        if two:
            for k in prange(nth):
                _vec_part(
                    k,
                    nth,
                    t,
                    cell,
                    1,
                    w_hh,
                    w_hr,
                    gh,
                    gn,
                    gi,
                    bias,
                    b_hn,
                    p,
                    peep,
                    input_forget,
                    h,
                    c,
                    h_new,
                    c_new,
                    hh,
                    rh,
                    codes,
                    alpha,
                    beta,
                    clip,
                )
        for b in range(h.shape[0]):
            finalize_row(h_new, c_new, h, c, last, y, t, b, cell == 1, masked, run, emit)


@njit(**_OPTS)
def vec_chunk_serial(
    nth,
    reverse,
    cell,
    proj,
    w_hh,
    w_hr,
    gh,
    gn,
    gi,
    bias,
    b_hn,
    p,
    peep,
    input_forget,
    h,
    c,
    h_new,
    c_new,
    hh,
    rh,
    last,
    y,
    run,
    emit,
    masked,
    codes,
    alpha,
    beta,
    clip,
):
    """vec_chunk_parallel on the calling thread (nth is ignored)."""
    n = gi.shape[0]
    two = cell == 3 or proj
    for s in range(n):
        t = n - 1 - s if reverse else s
        _vec_part(
            0,
            1,
            t,
            cell,
            0,
            w_hh,
            w_hr,
            gh,
            gn,
            gi,
            bias,
            b_hn,
            p,
            peep,
            input_forget,
            h,
            c,
            h_new,
            c_new,
            hh,
            rh,
            codes,
            alpha,
            beta,
            clip,
        )
        if two:
            _vec_part(
                0,
                1,
                t,
                cell,
                1,
                w_hh,
                w_hr,
                gh,
                gn,
                gi,
                bias,
                b_hn,
                p,
                peep,
                input_forget,
                h,
                c,
                h_new,
                c_new,
                hh,
                rh,
                codes,
                alpha,
                beta,
                clip,
            )
        for b in range(h.shape[0]):
            finalize_row(h_new, c_new, h, c, last, y, t, b, cell == 1, masked, run, emit)
