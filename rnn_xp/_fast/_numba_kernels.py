"""The compiled pieces of the numba implementation (rnn_xp._fast.numba_cpu imports this on first use).

Everything here is ``@njit(cache=True)``: compiled on the first call of a new signature (dtype,
array layouts), then loaded from the on-disk cache by later processes. Compiler options:

* ``error_model="numpy"``: a float division by zero gives inf/nan as in NumPy instead of a Python
  exception check in every loop, which is what keeps the loops vectorisable;
* ``fastmath={"contract"}``: a*b+c may become one fused multiply-add (one rounding fewer); this never
  changes a result beyond rounding, and no-NaN/no-inf assumptions are never made.

The matrix products (:func:`matmul_packed`) are written in LLVM IR: SIMD vectors of explicit fused
multiply-adds over weights packed into panels, each output element summed over k in order. Every
element is computed the same way whichever thread computes it and however the rows or units are
split over threads, so results do not depend on the thread count nor on the SIMD width.

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
import sys
import warnings

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.core.errors import NumbaIRAssumptionWarning
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

# numba's internal IR check flags the phi variables of the inlined sigmoid/tanh overloads in the one-pass rows
# while compiling them (the code it compiles is right: tests compare it with the reference); not for users' eyes
warnings.filterwarnings("ignore", message=r"variable '_ov_(sigmoid|tanh)", category=NumbaIRAssumptionWarning)

# _nrt=False: the kernels allocate nothing, so numba's reference counting is not needed; without it
# the array views taken per batch row cost nothing (measured: a step's per-row overhead halved).
_OPTS = {"cache": True, "error_model": "numpy", "fastmath": {"contract"}, "_nrt": False}
_INLINE = {"inline": "always", "error_model": "numpy", "fastmath": {"contract"}}
_ROW = {"inline": "always", "error_model": "numpy", "fastmath": {"contract"}}  # inlined: no call per row


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


# --- the default cells in one pass: no mask, no clip, the default activations ---------------------
# The same arithmetic, in the same order, as the rows above followed by _finish_units, in one loop
# (the general rows make a pass per operation; at small H that per-row work is most of a step).
@njit(**_ROW)
def rnn_fused(gh, gi, bias, h_out, y, u0, u1):
    """h = tanh(x W_ih^T + h W_hh^T + b), also the output."""
    a, x, b, hv, yv = gh[u0:u1], gi[u0:u1], bias[u0:u1], h_out[u0:u1], y[u0:u1]
    for j in range(u1 - u0):
        v = tanh(a[j] + (x[j] + b[j]))
        hv[j] = v
        yv[j] = v


@njit(**_ROW)
def lstm_fused(gh, gi, bias, c_in, c_out, h_out, y, u0, u1):
    """i, f, o = sigmoid, g = tanh; c = f c + i g; h = o tanh(c), also the output."""
    H = c_in.shape[0]
    ai, af, ag, ao = gh[u0:u1], gh[H + u0 : H + u1], gh[2 * H + u0 : 2 * H + u1], gh[3 * H + u0 : 3 * H + u1]
    xi, xf, xg, xo = gi[u0:u1], gi[H + u0 : H + u1], gi[2 * H + u0 : 2 * H + u1], gi[3 * H + u0 : 3 * H + u1]
    bi, bf, bg, bo = bias[u0:u1], bias[H + u0 : H + u1], bias[2 * H + u0 : 2 * H + u1], bias[3 * H + u0 : 3 * H + u1]
    c0, c1, hv, yv = c_in[u0:u1], c_out[u0:u1], h_out[u0:u1], y[u0:u1]
    for j in range(u1 - u0):
        i = sigmoid(ai[j] + (xi[j] + bi[j]))
        f = sigmoid(af[j] + (xf[j] + bf[j]))
        g = tanh(ag[j] + (xg[j] + bg[j]))
        o = sigmoid(ao[j] + (xo[j] + bo[j]))
        c = f * c0[j] + i * g
        c1[j] = c
        v = tanh(c) * o
        hv[j] = v
        yv[j] = v


@njit(**_ROW)
def gru_fused(gh, gi, bias, b_hn, h_in, h_out, y, u0, u1):
    """Reset after the product: r, z = sigmoid, n = tanh(x W_in + b_in + r (h W_hn + b_hn)); h, also the output."""
    H = h_in.shape[0]
    ar, az, an = gh[u0:u1], gh[H + u0 : H + u1], gh[2 * H + u0 : 2 * H + u1]
    xr, xz, xn = gi[u0:u1], gi[H + u0 : H + u1], gi[2 * H + u0 : 2 * H + u1]
    br, bz, bn = bias[u0:u1], bias[H + u0 : H + u1], bias[2 * H + u0 : 2 * H + u1]
    bh, h0, hv, yv = b_hn[u0:u1], h_in[u0:u1], h_out[u0:u1], y[u0:u1]
    one = _one(gh)
    for j in range(u1 - u0):
        r = sigmoid(ar[j] + (xr[j] + br[j]))
        z = sigmoid(az[j] + (xz[j] + bz[j]))
        m = tanh(xn[j] + bn[j] + r * (an[j] + bh[j]))
        v = (one - z) * m + z * h0[j]
        hv[j] = v
        yv[j] = v


# --- a whole chunk compiled: the products, split over threads by rows or by units -------------------
#
# The products read weights packed into panels: wp (panels, K, P), P = four SIMD vectors of columns,
# each panel contiguous, so a product streams it from the core's cache with a block of rows x four
# vectors of accumulators in registers: ~110 GFLOP/s a core in float32 on AVX-512 (Zen 4), the
# peak's ~0.9, as fast as OpenBLAS's sgemm, with no BLAS threads spinning between steps.
# Threads split the batch rows (independent, no waiting) or, with few rows, the units (every gate
# of a unit together: each thread's share of W_hh stays in its own L2), then they start once per
# chunk and meet at a spin barrier after every step (and between the two phases of a GRU with reset
# before the product or an LSTM with a projection).
def _fma_function(builder, ty):
    """llvm.fma for a float, double or vector of them: one rounding, whatever the hardware."""
    if isinstance(ty, ir.VectorType):
        suffix = f"v{ty.count}f{32 if isinstance(ty.element, ir.FloatType) else 64}"
    else:
        suffix = "f32" if isinstance(ty, ir.FloatType) else "f64"
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty, ty, ty]), "llvm.fma." + suffix)


def _host_vector_bytes():
    """Bytes in a SIMD register here: 64 with AVX-512, else 32 (AVX2; elsewhere LLVM splits the vectors)."""
    try:
        import llvmlite.binding as llvm

        return 64 if llvm.get_host_cpu_features().get("avx512f", False) else 32
    except Exception:  # noqa: BLE001 - features unknown: the portable choice
        return 32


VECTOR_BYTES = _host_vector_bytes()
ROW_GROUP = 4 if VECTOR_BYTES == 64 else 2  # rows sharing each loaded weight vector (x 4 accumulators)


def panel_width(dtype):
    """Columns per packed panel: four SIMD vectors."""
    return 4 * VECTOR_BYTES // np.dtype(dtype).itemsize


@intrinsic
def matmul_packed(typingctx, wp, v, out):
    """out[r, q*P + j] = sum over k of v[r, k] * wp[q, k, j], k in order, one fused multiply-add each.

    wp is (panels, K, P), C-contiguous, P = panel_width; v (R, K) and out (R, >= panels*P) are
    C-contiguous. Each output element is the same chain of multiply-adds in the same order whatever
    the SIMD width, the row group or the panel it sits in, so results do not depend on the machine's
    vector length nor on how rows and columns are split over threads. Rows go ROW_GROUP at a time:
    each weight vector loaded serves ROW_GROUP rows, with ROW_GROUP x 4 accumulators in registers.
    """
    sig = types.void(wp, v, out)

    def codegen(context, builder, signature, args):
        wty = signature.args[0]
        W = context.make_array(wty)(context, builder, args[0])
        V = context.make_array(signature.args[1])(context, builder, args[1])
        Out = context.make_array(signature.args[2])(context, builder, args[2])
        NP, K, P = cgutils.unpack_tuple(builder, W.shape, 3)
        R = cgutils.unpack_tuple(builder, V.shape, 2)[0]
        ostride = cgutils.unpack_tuple(builder, Out.shape, 2)[1]
        elt = context.get_data_type(wty.dtype)
        lanes = VECTOR_BYTES // (4 if wty.dtype == types.float32 else 8)
        vec = ir.VectorType(elt, lanes)
        i32, i64 = ir.IntType(32), ir.IntType(64)
        fma = _fma_function(builder, vec)
        zero = ir.Constant(vec, [0.0] * lanes)
        undef = ir.Constant(vec, ir.Undefined)
        splat = ir.Constant(ir.VectorType(i32, lanes), [0] * lanes)
        accs = [[cgutils.alloca_once(builder, vec) for _ in range(4)] for _ in range(ROW_GROUP)]

        def vptr(base, offset):
            return builder.bitcast(builder.gep(base, [offset]), vec.as_pointer())

        def rows(base, col, r0, count):
            # rows r0 .. r0+count-1 of one panel (count a Python int: the accumulators stay in registers)
            for r in range(count):
                for a in accs[r]:
                    builder.store(zero, a)
            with cgutils.for_range(builder, K) as kl:
                wrow = builder.gep(base, [builder.mul(kl.index, P)])
                ws = [builder.load(vptr(wrow, ir.Constant(i64, j * lanes)), align=1) for j in range(4)]
                for r in range(count):
                    ri = builder.add(r0, ir.Constant(i64, r))
                    vk = builder.load(builder.gep(V.data, [builder.add(builder.mul(ri, K), kl.index)]))
                    b = builder.shuffle_vector(builder.insert_element(undef, vk, ir.Constant(i32, 0)), undef, splat)
                    for j in range(4):
                        builder.store(builder.call(fma, [b, ws[j], builder.load(accs[r][j])]), accs[r][j])
            for r in range(count):
                row = builder.add(r0, ir.Constant(i64, r))
                dst = builder.gep(Out.data, [builder.add(builder.mul(row, ostride), col)])
                for j in range(4):
                    builder.store(builder.load(accs[r][j]), vptr(dst, ir.Constant(i64, j * lanes)), align=1)

        group = ir.Constant(i64, ROW_GROUP)
        groups = builder.sdiv(R, group)
        with cgutils.for_range(builder, NP) as panel:
            base = builder.gep(W.data, [builder.mul(panel.index, builder.mul(K, P))])
            col = builder.mul(panel.index, P)
            with cgutils.for_range(builder, groups) as g:
                rows(base, col, builder.mul(g.index, group), ROW_GROUP)
            with cgutils.for_range_slice(builder, builder.mul(groups, group), R, ir.Constant(i64, 1)) as (r, _):
                rows(base, col, r, 1)
        return context.get_dummy_value()

    return sig, codegen


def _int64_slot(context, builder, signature, args):
    aty = signature.args[0]
    ary = context.make_array(aty)(context, builder, args[0])
    return cgutils.get_item_pointer(context, builder, aty, ary, [args[1]])


@intrinsic
def _atomic_load(typingctx, ctl, i):
    """ctl[i] read with acquire ordering (an int64 array): sees every write made before the matching release."""
    sig = types.int64(ctl, i)

    def codegen(context, builder, signature, args):
        return builder.load_atomic(_int64_slot(context, builder, signature, args), "acquire", 8)

    return sig, codegen


@intrinsic
def _atomic_add(typingctx, ctl, i, v):
    """ctl[i] += v atomically (acquire and release); returns the old value."""
    sig = types.int64(ctl, i, v)

    def codegen(context, builder, signature, args):
        return builder.atomic_rmw("add", _int64_slot(context, builder, signature, args), args[2], "acq_rel")

    return sig, codegen


@intrinsic
def _compare_swap(typingctx, ctl, i, old, new):
    """ctl[i] = new if it is old, atomically; returns the value found."""
    sig = types.int64(ctl, i, old, new)

    def codegen(context, builder, signature, args):
        ptr = _int64_slot(context, builder, signature, args)
        pair = builder.cmpxchg(ptr, args[2], args[3], "acq_rel", "acquire")
        return builder.extract_value(pair, 0)

    return sig, codegen


_YIELD_SYMBOL = "sched_yield" if sys.platform != "win32" else None


@intrinsic
def _yield_core(typingctx):
    """Give the core to another runnable thread (sched_yield; nothing where there is none)."""
    sig = types.void()

    def codegen(context, builder, signature, args):
        if _YIELD_SYMBOL is not None:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), _YIELD_SYMBOL)
            builder.call(fn, [])
        return context.get_dummy_value()

    return sig, codegen


# ctl: int64[CONTROL_SIZE] per chunk, three counters 64 bytes apart: threads arrived, start decision, barrier
ARRIVED, DECISION, BARRIER = 0, 8, 16
CONTROL_SIZE = 24
GO, ABANDONED = 1, 2
SPINS = 2000  # spins (a few us) before a waiting thread yields its core
START_YIELDS = 5000  # ~20 ms of waiting for the other threads to start: then the chunk runs on one thread


@njit(**_INLINE)
def _start(ctl, nth):
    """Whether all nth threads are running at once; False (for every thread) when they are not.

    A spin barrier needs its threads to run concurrently. If the threading layer runs the slices one
    after the other (nested parallelism, a task scheduler) the first would wait forever: after
    START_YIELDS it abandons, every thread returns before touching any state, and the caller runs
    the chunk on one thread.
    """
    _atomic_add(ctl, ARRIVED, 1)
    spins = 0
    yields = 0
    while True:
        d = _atomic_load(ctl, DECISION)
        if d != 0:
            return d == GO
        if _atomic_load(ctl, ARRIVED) >= nth:
            _compare_swap(ctl, DECISION, 0, GO)
            continue
        spins += 1
        if spins >= SPINS:
            spins = 0
            _yield_core()
            yields += 1
            if yields >= START_YIELDS:
                _compare_swap(ctl, DECISION, 0, ABANDONED)


@njit(**_INLINE)
def _barrier(ctl, nth, count):
    """The count-th barrier of the chunk: wait until all nth threads have arrived at it."""
    _atomic_add(ctl, BARRIER, 1)
    target = count * nth
    spins = 0
    while _atomic_load(ctl, BARRIER) < target:
        spins += 1
        if spins >= SPINS:
            spins = 0
            _yield_core()


@njit(**_OPTS)
def _units(k, nth, H):
    """The k-th of nth near-equal slices of range(H)."""
    return (H * k) // nth, (H * (k + 1)) // nth


@njit(**_ROW)
def _scatter(acc, dst, H, u0, u1, gates):
    """acc holds gates x (u1 - u0) products (gate-major, the packing order): dst[g*H + u] for the slice's units."""
    m = u1 - u0
    for g in range(gates):
        d = dst[g * H + u0 : g * H + u1]
        a = acc[g * m : (g + 1) * m]
        for j in range(m):
            d[j] = a[j]


@njit(**_ROW)
def _finish_units(hn, cn, hc, cc, last, y, t, b, w0, w1, c0, c1, has_c, masked, run, emit):
    """Row b of step t over output units [w0, w1) and cell units [c0, c1): state kept where the row does
    not run (masks), output y[t, b] (the last output repeated, or zeros, where it is not emitted)."""
    r = (not masked) or run[t, b] != 0
    if not r:
        _copy(hn[b, w0:w1], hc[b, w0:w1])
        if has_c:
            _copy(cn[b, c0:c1], cc[b, c0:c1])
    if not masked:
        _copy(y[t, b, w0:w1], hn[b, w0:w1])
        return
    if r:
        _copy(last[b, w0:w1], hn[b, w0:w1])
    out = y[t, b, w0:w1]
    if emit[t, b] != 0:
        _copy(out, last[b, w0:w1])
    else:
        for j in range(out.shape[0]):
            out[j] = 0


@njit(**_OPTS)
def _vec_thread(
    k,
    nth,
    ctl,
    by_rows,
    fused,
    reverse,
    cell,
    proj,
    wpi,
    npi,
    wp0,
    np0,
    wp1,
    np1,
    xs,
    xo,
    acc,
    gh,
    gn,
    gi,
    bias,
    b_hn,
    p,
    peep,
    input_forget,
    hbuf,
    cbuf,
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
    """Thread k of nth: the chunk's input projection and every step, for its batch rows or its units.

    fused: the default cell without masks or clip (cell 0, 1 without peepholes, input_forget or a
    projection, or 2, with their default activations): one pass a row (rnn_fused, ...).

    by_rows: each thread runs every step for its own slice of the batch rows with all the weights
    (wpi[0], wp0[0], wp1[0]): the rows are independent sequences, so the threads never wait for each
    other. Otherwise (few rows) each thread owns a slice of the units (its packed columns
    wpi[k], ...) and the threads meet at a spin barrier after every step (and between the two phases
    of a GRU with reset before the product or an LSTM with a projection).

    xs (n*B, F) is the chunk's input, gi (n*B, G*H) its projection (each thread writes the elements
    it reads later, no other). hbuf/cbuf (2, B, .) hold the state of even and odd steps (a step reads
    one and writes the other, so no thread overwrites what another still reads); the chunk starts
    from hbuf[0], cbuf[0]. If the threads could not run at once, every thread returns before writing
    anything and ctl[DECISION] says ABANDONED.
    """
    k = np.int64(k)  # a prange index may be unsigned: int64 keeps the slice arithmetic in integers
    sync = nth > 1 and not by_rows
    if sync and not _start(ctl, nth):
        return
    B = hbuf.shape[1]
    n = gi.shape[0] // B
    H_out = hbuf.shape[2]
    H = rh.shape[1]
    G = gh.shape[2] // H
    G0 = 2 if cell == 3 else G
    if by_rows:
        b0, b1 = _units(k, nth, B)
        u0, u1, v0, v1, q = 0, H, 0, H_out, 0
    else:
        b0, b1 = 0, B
        u0, u1 = _units(k, nth, H)
        v0, v1 = _units(k, nth, H_out) if proj else (u0, u1)
        q = k
    wi, w0, w1 = wpi[q, : npi[q]], wp0[q, : np0[q]], wp1[q, : np1[q]]
    a, xk, ghk, gnk = acc[k], xo[k], gh[k], gn[k]
    rb = xk.shape[0]
    if by_rows:  # x W_ih^T: every column, in place (gi is as wide as the packed panels)
        for t in range(n):
            matmul_packed(wi, xs[t * B + b0 : t * B + b1], gi[t * B + b0 : t * B + b1])
    else:  # this thread's columns, rb rows at a time, then to their places
        for r0 in range(0, n * B, rb):
            r1 = min(r0 + rb, n * B)
            matmul_packed(wi, xs[r0:r1], xk)
            for r in range(r1 - r0):
                _scatter(xk[r], gi[r0 + r], H, u0, u1, G)
    count = 0
    for s in range(n):
        t = n - 1 - s if reverse else s
        hc, hn = hbuf[s % 2], hbuf[(s + 1) % 2]
        cc, cn = cbuf[s % 2], cbuf[(s + 1) % 2]
        matmul_packed(w0, hc[b0:b1], a)
        for b in range(b0, b1):
            gib = gi[t * B + b]
            if by_rows and cell != 3:  # the products are in place already (a's rows: every column in order)
                g0 = a[b - b0]
            else:  # to their places (cell 3: phase 1 reuses a)
                g0 = ghk[b]
                _scatter(a[b - b0], g0, H, u0, u1, G0)
            if fused:  # the default cell, no mask: the output written here too
                if cell == 0:
                    rnn_fused(g0, gib, bias, hn[b], y[t, b], u0, u1)
                elif cell == 1:
                    lstm_fused(g0, gib, bias, cc[b], cn[b], hn[b], y[t, b], u0, u1)
                else:
                    gru_fused(g0, gib, bias, b_hn, hc[b], hn[b], y[t, b], u0, u1)
            elif cell == 0:
                rnn_row(g0, gib, bias, hn[b], u0, u1, codes, alpha, beta, clip)
            elif cell == 1:
                out = hh[b] if proj else hn[b]
                lstm_row(g0, gib, bias, cc[b], cn[b], out, p, peep, input_forget, u0, u1, codes, alpha, beta, clip)
            elif cell == 2:
                gru_row(g0, gib, bias, b_hn, hc[b], hn[b], u0, u1, codes, alpha, beta, clip)
            else:
                gru_rz_row(g0, gib, bias, hc[b], rh[b], u0, u1, codes, alpha, beta, clip)
        if cell == 3 or proj:
            if sync:
                count += 1
                _barrier(ctl, nth, count)
            matmul_packed(w1, rh[b0:b1] if cell == 3 else hh[b0:b1], a)
            for b in range(b0, b1):
                if cell == 3:
                    _scatter(a[b - b0], gnk[b], 0, u0, u1, 1)
                    gru_n_row(ghk[b], gnk[b], gi[t * B + b], bias, b_hn, hc[b], hn[b], u0, u1, codes, alpha, beta, clip)
                else:
                    _scatter(a[b - b0], hn[b], 0, v0, v1, 1)
        if not fused:
            for b in range(b0, b1):
                _finish_units(hn, cn, hc, cc, last, y, t, b, v0, v1, u0, u1, cell == 1, masked, run, emit)
        if sync:
            count += 1
            _barrier(ctl, nth, count)


@njit(parallel=True, **_OPTS)
def chunk_parallel(
    nth,
    ctl,
    by_rows,
    fused,
    reverse,
    cell,
    proj,
    wpi,
    npi,
    wp0,
    np0,
    wp1,
    np1,
    xs,
    xo,
    acc,
    gh,
    gn,
    gi,
    bias,
    b_hn,
    p,
    peep,
    input_forget,
    hbuf,
    cbuf,
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
    """Every step of a chunk on nth persistent threads (ctl[DECISION] is ABANDONED if they could not run at once)."""
    for k in prange(nth):
        _vec_thread(
            k,
            nth,
            ctl,
            by_rows,
            fused,
            reverse,
            cell,
            proj,
            wpi,
            npi,
            wp0,
            np0,
            wp1,
            np1,
            xs,
            xo,
            acc,
            gh,
            gn,
            gi,
            bias,
            b_hn,
            p,
            peep,
            input_forget,
            hbuf,
            cbuf,
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
def chunk_serial(
    nth,
    ctl,
    by_rows,
    fused,
    reverse,
    cell,
    proj,
    wpi,
    npi,
    wp0,
    np0,
    wp1,
    np1,
    xs,
    xo,
    acc,
    gh,
    gn,
    gi,
    bias,
    b_hn,
    p,
    peep,
    input_forget,
    hbuf,
    cbuf,
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
    """chunk_parallel on the calling thread (the weights packed for one thread; nth is 1)."""
    _vec_thread(
        0,
        1,
        ctl,
        False,
        fused,
        reverse,
        cell,
        proj,
        wpi,
        npi,
        wp0,
        np0,
        wp1,
        np1,
        xs,
        xo,
        acc,
        gh,
        gn,
        gi,
        bias,
        b_hn,
        p,
        peep,
        input_forget,
        hbuf,
        cbuf,
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
