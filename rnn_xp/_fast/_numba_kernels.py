"""The compiled pieces of the numba implementation (rnn_xp._fast.numba_cpu imports this on first use).

One kernel per configuration. :func:`chunk_kernel` makes, for a :class:`Spec` (the cell, its
options, the dtype and the block sizes), a function that runs one thread's share of a time chunk,
step by step: the product of each group of units (:func:`rnn_xp._fast._numba_gemm.gemm`; an rnn's
groups a few at a time) followed by the cell's equations on that group (the epilogue), masks and
outputs. For rnn and lstm the step's products read the state rows [x, 1, h] group by group: [x, 1]
times [W_ih^T; b], then h W_hh^T added to it as the tile stores it (nothing of the step's projection
is stored apart); a GRU's n gate needs its input and recurrent parts apart, so a GRU projects x
first (the step's rows, or the chunk's at once) and multiplies h after. The spec's values are
constants of the function: numba drops every branch that does not apply before it compiles, so a
configuration compiles only its own code (a few seconds) and the on-disk cache keeps one entry per
configuration. Calls differ only in sizes.

Layout. Units come in groups of NR (a panel's width); a group's G gates are G consecutive panels.
Packed weights: W_ih with the biases as an extra input row (``wpi``, (groups*G, F+1, NR)), W_hh
(``wp1``, (groups*G1, H_out, NR); G1 = 2 for a GRU with reset before the product: r and z) and the
second product where there is one (``wp2``: W_hn, or the LSTM projection W_hr by output group); for
rnn and lstm ``wpi`` is [W_ih^T; b; W_hh^T] (groups*G, F+1+H_out, NR) and ``wp1`` the same array.
The input projection ``gi`` (rows, groups*G*NR) is in the same column order, so the epilogue of a
group reads its gates side by side. Padded units (past H) are computed and never read.

Arithmetic. Each element of a product is one chain of multiply-adds over k in order (see
_numba_gemm); the epilogue applies the same operations to each element whichever thread, row
position or batch it is in, masked or not. Hence results do not depend on the thread count, on the
batch (a sequence alone or anywhere in any batch), on masks elsewhere in the batch, nor on how the
time steps are split into chunks or stream calls.

Compiler options: ``error_model="numpy"`` (a float division by zero gives inf/nan as in NumPy
instead of a Python exception check in every loop, which keeps the loops vectorisable),
``fastmath={"contract"}`` (a*b+c may become one fused multiply-add; no-NaN/no-inf assumptions are
never made), ``nogil=True`` (threads of rnn_xp's own pool run it at once) and ``_nrt=False`` (the
kernels allocate nothing; views then cost nothing).

float32 sigmoid and tanh are computed in float32 (LLVM vectorises them 16 lanes wide; libm's scalar
calls cost 4-15 ns an element). sigmoid: exp(-|x|) from a Cody-Waite reduction and a Taylor
polynomial, 2^n built from its bits (0.3 ns an element against 1.1 computed in float64), within 2.3 ULP
of float64 over [-87, 87] and unbiased (mean signed error under 0.01 ULP). tanh: an odd minimax
polynomial below 1, 1 - 2e/(1 + e) with e = exp(-2|x|) above (0.5 ns against 0.9 computed in float64
and rounded once), within 1.03 ULP of float64 over every float32, unbiased; a trained LSTM's outputs
over 512 steps then stay within 1.15x PyTorch's error against float64 (1.14x with the float64 tanh;
an earlier float32 tanh, -expm1(-2|x|) / (2 + expm1(-2|x|)) at 2.5 ULP, drifted 1.28x;
tests/test_accuracy.py allows 1.25x). float64 uses libm (math.exp, math.tanh).
"""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ._numba_gemm import gemm

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

_INLINE = {"inline": "always", "error_model": "numpy", "fastmath": {"contract"}}
_OVERLOAD = {"error_model": "numpy", "fastmath": {"contract"}}  # the overloads' implementations: as _INLINE's
# the kernels: cached on disk, free of the GIL, without reference counting (they allocate nothing)
_KERNEL = {"cache": True, "nogil": True, "error_model": "numpy", "fastmath": {"contract"}, "_nrt": False}

# The source of every compiled piece, hashed into each kernel's cache key: numba checks only the
# file that defines a kernel, and a kernel compiled from older pieces must never be loaded.
_SOURCES = ("_numba_kernels.py", "_numba_gemm.py")
DIGEST = hashlib.sha256(b"".join((Path(__file__).parent / f).read_bytes() for f in _SOURCES)).hexdigest()[:16]


# --- float32 sigmoid and tanh in float32 arithmetic (vectorisable: 16 lanes of AVX-512) -------------------
_F32 = np.float32


@intrinsic
def _float32_from_bits(typingctx, n):
    """The float32 whose bits are the int32 n (2^k is (k + 127) << 23)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@njit(**_INLINE)
def _pow2(n):
    """2^n for an integral float32 n in [-126, 127]."""
    return _float32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))


@njit(**_INLINE)
def _exp_parts32(y):
    """(n, expm1(r)) in float32 with y = n ln2 + r, |r| <= ln2/2, for -104 <= y <= 0 (y clamped there).

    Cody-Waite reduction (n times the high part of ln2 is exact), expm1 by its Taylor series to r^7
    (truncation below 0.3 ULP of the result), Horner in float32.
    """
    y = max(y, _F32(-104.0))  # exp(-104) rounds to 0 in float32
    n = np.floor(y * _F32(1.44269504) + _F32(0.5))
    r = y - n * _F32(0.693359375)  # ln2 = 0.693359375 - 2.12194440e-4
    r = r + n * _F32(2.12194440e-4)
    p = _F32(1.0 / 5040.0)
    p = p * r + _F32(1.0 / 720.0)
    p = p * r + _F32(1.0 / 120.0)
    p = p * r + _F32(1.0 / 24.0)
    p = p * r + _F32(1.0 / 6.0)
    p = p * r + _F32(0.5)
    return n, p * (r * r) + r


@njit(**_INLINE)
def _sigmoid32(x):
    n, m = _exp_parts32(-abs(x))
    n1 = np.floor(n * _F32(0.5))  # 2^n as 2^n1 2^(n - n1): exp(-|x|) reaches the subnormals as it should
    s1 = _pow2(n1)
    e = (s1 * m + s1) * _pow2(n - n1)  # exp(-|x|)
    return (_F32(1.0) if x >= 0 else e) / (_F32(1.0) + e)


# tanh(x) = x + x^3 P(x^2) for |x| < 1: P minimises the largest relative error of tanh over [0, 1]
# (weighted least squares reweighted towards the minimax, against 40-digit tanh): 4.6e-9 before rounding.
P0, P1, P2, P3, P4, P5, P6 = (
    _F32(c)
    for c in (
        -0.3333329542974755,
        0.1333234453496239,
        -0.053879800392797335,
        0.021486650949772892,
        -0.007946096766456084,
        0.0023013576082322063,
        -0.0003584500178315955,
    )
)


@njit(**_INLINE)
def _tanh32(x):
    """tanh of a float32 in float32: within 1.03 ULP of float64 (every float32 checked), unbiased.

    |x| < 1: the odd polynomial above. |x| >= 1: 1 - 2e/(1 + e) with e = exp(-2|x|) <= 0.14, whose
    rounding errors shrink by 2e/(1+e) in the result (|x| clamped at 10: tanh rounds to 1 from 9.01).
    Both are computed and one is chosen, so the loop vectorises.
    """
    a = abs(x)
    s = a * a
    p = P6
    p = p * s + P5
    p = p * s + P4
    p = p * s + P3
    p = p * s + P2
    p = p * s + P1
    p = p * s + P0
    small = a + a * (s * p)
    n, m = _exp_parts32(_F32(-2.0) * min(a, _F32(10.0)))
    e = (m + _F32(1.0)) * _pow2(n)
    big = _F32(1.0) - (e + e) / (_F32(1.0) + e)
    return math.copysign(small if a < _F32(1.0) else big, x)


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


# sigmoid, tanh and _like are overloads compiled once per type and called (LLVM inlines them where they are
# called, and the epilogues' loops vectorise as before: measured, the same speed): inlined by numba instead
# (inline="always"), every call site typed a copy of its own, 6 of an LSTM kernel's 18 s of compile on Zen 1.
@overload(sigmoid, jit_options=_OVERLOAD)
def _ov_sigmoid(x):
    if x == types.float32:
        return lambda x: _sigmoid32(x)
    return lambda x: _sigmoid64(x)


@overload(tanh, jit_options=_OVERLOAD)
def _ov_tanh(x):
    if x == types.float32:
        return lambda x: _tanh32(x)
    return lambda x: math.tanh(x)


def _like(x, v):
    """x as the float type of the scalar v (compiled code only)."""
    raise NotImplementedError


@overload(_like, jit_options=_OVERLOAD)
def _ov_like(x, v):
    if v == types.float32:
        return lambda x, v: np.float32(x)
    return lambda x, v: np.float64(x)


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


@njit(error_model="numpy")
def _act_any(code, v, a, b):
    """Any activation of rnn_xp.activations, by code, computed in float64 (general kernels: not inlined, so a
    kernel compiles it once, not once per gate)."""
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


@njit(**_INLINE)
def act(GENERAL, CODE, slot, v, codes, coef, CLIPPED):
    """The activation of gate slot ``slot`` at v, in v's precision.

    The constant CODE (sigmoid, tanh or relu: the cells' defaults), or, in a GENERAL kernel, any
    activation by its code ``codes[slot]`` with its alpha, beta (``coef[0, slot]``, ``coef[1, slot]``),
    the input bounded to [-clip, clip] first where CLIPPED and clip = ``coef[2, 0]`` > 0 (ONNX's clip).
    """
    if GENERAL:
        w = float(v)
        if CLIPPED:
            c = coef[2, 0]
            if c > 0:
                w = min(max(w, -c), c)
        return _like(_act_any(codes[slot], w, coef[0, slot], coef[1, slot]), v)
    if CODE == SIGMOID:
        return sigmoid(v)
    if CODE == TANH:
        return tanh(v)
    return v if not v < 0 else _like(0.0, v)  # relu; NaN stays NaN, as np.maximum


@njit(error_model="numpy", fastmath={"contract"})
def apply_activation(v, code):
    """v[:] = act(v) in place for a constant-code activation (sigmoid, tanh or relu): what the epilogues
    compute, for the accuracy tests."""
    for j in range(v.shape[0]):
        v[j] = act(False, code, 0, v[j], v, v, False)


# --- the epilogues: a cell's equations on one row of one group of units ----------------------------
# a: the row's recurrent products for the group (gate q at a[q*NR:]), x: the row of the input
# projection with the biases (gate q of the group at x[col + q*NR:]); rnn and lstm without SUM: a holds
# the pre-activations (the step's products over [x, 1, h]), x is not read. u0: the group's first unit, nu
# its units (fewer than NR in the last group). The constants (upper case) come from the kernel's spec.
# Each loop runs over range(nu) on views: with an index that provably starts at 0, numba drops the
# negative-index check and LLVM vectorises the loop, float64 sigmoid and tanh included (indexed as
# x[col + j], the checks stayed and every activation ran one element at a time: 3x slower).
def epilogues(spec):
    """The row functions of a kernel, made for its spec: the constants are the functions' own, so numba drops the
    branches that do not apply (act's too) before it inlines a row into the kernel. Made generic, with the
    constants as arguments, a row carried every branch of its act calls (an LSTM row's five: 86 blocks), and numba
    copies an inlined function block by block, each copy with all the function's variables: 8-11% of an LSTM
    kernel's compile, 5-6% of a GRU's."""
    NR, GENERAL, (A0, A1, A2) = spec.nr, spec.general, spec.acts
    SUM = not spec.fused  # the cells add the input's projection to the recurrent product (else it is in the product)
    PEEP, IFG = spec.peepholes, spec.input_forget

    def rnn_row(a, x, col, h_new, u0, nu, codes, coef):
        """h = f(x W_ih^T + b + h W_hh^T)."""
        av, xv, hv = a[0:nu], x[col : col + nu], h_new[u0 : u0 + nu]
        for j in range(nu):
            hv[j] = act(GENERAL, A0, 0, av[j] + xv[j] if SUM else av[j], codes, coef, True)

    def lstm_row(a, x, col, c_old, c_new, out, p, u0, nu, codes, coef):
        """i, f, g, o; c = f c + i g (f = 1 - i with input_forget); out = o h(c): the state, or what W_hr projects.

        Peepholes (ONNX): i and f see c_{t-1}, o sees the new c. Without SUM, a holds the whole pre-activations.
        """
        ai, af, ag, ao = a[0:nu], a[NR : NR + nu], a[2 * NR : 2 * NR + nu], a[3 * NR : 3 * NR + nu]
        xi, xf = x[col : col + nu], x[col + NR : col + NR + nu]
        xg, xo = x[col + 2 * NR : col + 2 * NR + nu], x[col + 3 * NR : col + 3 * NR + nu]
        c0, c1, hv = c_old[u0 : u0 + nu], c_new[u0 : u0 + nu], out[u0 : u0 + nu]
        pi, pf, po = p[0, u0 : u0 + nu], p[1, u0 : u0 + nu], p[2, u0 : u0 + nu]
        for j in range(nu):
            zi = ai[j] + xi[j] if SUM else ai[j]
            zf = af[j] + xf[j] if SUM else af[j]
            zg = ag[j] + xg[j] if SUM else ag[j]
            zo = ao[j] + xo[j] if SUM else ao[j]
            cp = c0[j]
            if PEEP:
                zi += pi[j] * cp
                zf += pf[j] * cp
            i = act(GENERAL, A0, 0, zi, codes, coef, True)
            g = act(GENERAL, A1, 1, zg, codes, coef, True)
            if IFG:
                c = (_like(1.0, i) - i) * cp + i * g
            else:
                c = act(GENERAL, A0, 0, zf, codes, coef, True) * cp + i * g
            if PEEP:
                zo += po[j] * c
            c1[j] = c
            hv[j] = act(GENERAL, A0, 0, zo, codes, coef, True) * act(GENERAL, A2, 2, c, codes, coef, False)

    def gru_row(a, x, col, b_hn, h_old, h_new, u0, nu, codes, coef):
        """Reset after the product: r, z = f(.), n = g(x W_in + b_in + r (h W_hn + b_hn)), h = (1 - z) n + z h."""
        ar, az, an = a[0:nu], a[NR : NR + nu], a[2 * NR : 2 * NR + nu]
        xr, xz, xn = x[col : col + nu], x[col + NR : col + NR + nu], x[col + 2 * NR : col + 2 * NR + nu]
        bh, h0, h1 = b_hn[u0 : u0 + nu], h_old[u0 : u0 + nu], h_new[u0 : u0 + nu]
        for j in range(nu):
            r = act(GENERAL, A0, 0, ar[j] + xr[j], codes, coef, True)
            z = act(GENERAL, A0, 0, az[j] + xz[j], codes, coef, True)
            n = act(GENERAL, A1, 1, xn[j] + r * (an[j] + bh[j]), codes, coef, True)
            h1[j] = (_like(1.0, z) - z) * n + z * h0[j]

    def gru_rz_row(a, x, col, h_old, rh, zs, u0, nu, codes, coef):
        """Reset before the product, first phase: r, z = f(.); r h, which W_hn then multiplies; z kept."""
        ar, az = a[0:nu], a[NR : NR + nu]
        xr, xz = x[col : col + nu], x[col + NR : col + NR + nu]
        h0, rv, zv = h_old[u0 : u0 + nu], rh[u0 : u0 + nu], zs[u0 : u0 + nu]
        for j in range(nu):
            r = act(GENERAL, A0, 0, ar[j] + xr[j], codes, coef, True)
            zv[j] = act(GENERAL, A0, 0, az[j] + xz[j], codes, coef, True)
            rv[j] = r * h0[j]

    def gru_n_row(a, x, col, h_old, zs, h_new, u0, nu, codes, coef):
        """Second phase: n = g(x W_in + b_in + b_hn + (r h) W_hn^T) (both biases in x), h = (1 - z) n + z h."""
        an, xn = a[0:nu], x[col + 2 * NR : col + 2 * NR + nu]
        h0, zv, h1 = h_old[u0 : u0 + nu], zs[u0 : u0 + nu], h_new[u0 : u0 + nu]
        for j in range(nu):
            n = act(GENERAL, A1, 1, xn[j] + an[j], codes, coef, True)
            z = zv[j]
            h1[j] = (_like(1.0, z) - z) * n + z * h0[j]

    rows = (rnn_row, lstm_row, gru_row, gru_rz_row, gru_n_row)
    return {f.__name__: njit(**_INLINE)(f) for f in rows}


# The names the kernels call a row function by: each kernel's own, made for its spec by epilogues(), are globals
# of that kernel alone (see _make); these stand for them in the module.
rnn_row = lstm_row = gru_row = gru_rz_row = gru_n_row = None


@njit(**_INLINE)
def _copy(dst, src):
    """dst[:] = src, as a loop: numba's slice assignment may copy src first (it cannot rule out overlap)."""
    for j in range(dst.shape[0]):
        dst[j] = src[j]


@njit(nogil=True, error_model="numpy", _nrt=False)  # not inlined: its three call sites share one compiled copy
def _x_rows(dst, xin, base, sb, b0, b1, F):
    """dst[b, :F] = xin[base + b*sb, :F] for b0 <= b < b1: one step's rows of x, into state rows [x, 1, h]."""
    for b in range(b0, b1):
        _copy(dst[b, :F], xin[base + b * sb, :F])


@njit(**_INLINE)
def finish_row(u0, nu, h_old, h_new, last, y, masked, r, e):
    """A row's state and output at a step over units [u0, u0+nu), once h_new (its row) holds the cell's result.

    Unmasked: y = h. Masked (forward's lengths/mask): where the row does not run, the state is kept;
    the output is the last output of the row where the step emits (zero before its first), else 0.
    """
    hv, out = h_new[u0 : u0 + nu], y[u0 : u0 + nu]
    if not masked:
        _copy(out, hv)
        return
    lv = last[u0 : u0 + nu]
    if r:
        _copy(lv, hv)
    else:
        _copy(hv, h_old[u0 : u0 + nu])
    if e:
        _copy(out, lv)
    else:
        for j in range(nu):
            out[j] = 0


@njit(**_INLINE)
def keep_row(b, u0, nu, old, new):
    """new[b, units] = old[b, units]: the cell state of a row that does not run."""
    _copy(new[b, u0 : u0 + nu], old[b, u0 : u0 + nu])


# --- threads: a start check and a spin barrier on an int64 control array ------------------------------
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


# ctl: int64 counters 64 bytes apart: threads arrived, start decision, barrier (reset by the caller before each
# chunk); then a team's (resident workers'): the state's parity of the job, and worker k's slot at SLOT0 + 8k
ARRIVED, DECISION, BARRIER, PAR, SLOT0 = 0, 8, 16, 24, 32
CONTROL_SIZE = 32  # + 8 per thread of a team (control_size)
GO, ABANDONED = 1, 2
AWAY, IDLE, JOB = 0, 1, 2  # a worker's slot: not in the team's loop, waiting for a job, a job posted
SPINS = 2000  # spins (a few us) before a waiting thread yields its core
START_YIELDS = 5000  # ~20 ms of waiting for the other threads to start: then the chunk runs on one thread
RESIDENT_SPINS = 1 << 17  # a resident worker's wait for the next job (~0.1-0.3 ms), then it leaves the loop


def control_size(nth):
    """The length of a ctl array for teams of up to nth threads."""
    return CONTROL_SIZE + 8 * nth


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


@njit(**_INLINE)
def _next_job(ctl, k):
    """A resident worker's next job: its state parity, or -1 when told to leave or after RESIDENT_SPINS idle spins.

    Resident workers serve the one-step calls of a stream fed step by step (numba_cpu.Direction.step1):
    between calls each stays in its kernel, spinning on its slot of ctl, so a call costs an atomic
    store and load instead of waking a sleeping thread (~50-100 us on a VM) and taking the GIL twice.
    """
    slot = SLOT0 + 8 * k
    spins = 0
    while True:
        s = _atomic_load(ctl, slot)
        if s == JOB:
            return _atomic_load(ctl, PAR)
        if s == AWAY:
            return -1
        spins += 1
        if spins % SPINS == 0:
            _yield_core()  # another thread waiting for this core (more threads than cores) gets it
        if spins >= RESIDENT_SPINS and _compare_swap(ctl, slot, IDLE, AWAY) == IDLE:
            return -1


@njit(**_INLINE)
def _job_done(ctl, k):
    _compare_swap(ctl, SLOT0 + 8 * k, JOB, IDLE)


def _helper(fn):
    """A small compiled function called from Python: cached on disk where numba can write its cache."""
    try:
        return njit(cache=True, nogil=True, _nrt=False)(fn)
    except RuntimeError:  # no folder numba can write its cache to: compiled in each process (a fraction of a second)
        return njit(nogil=True, _nrt=False)(fn)


@_helper
def post_job(ctl, k):
    """Hand worker k of a team a job if it waits for one in its loop (True); False if it has left (or is leaving)."""
    return _compare_swap(ctl, SLOT0 + 8 * k, IDLE, JOB) == IDLE


@_helper
def wait_jobs(ctl, nth, spins):
    """Whether workers 1 .. nth-1 of a team have all finished their jobs (waiting up to ``spins`` spins)."""
    for k in range(1, nth):
        slot = SLOT0 + 8 * k
        n = 0
        while _atomic_load(ctl, slot) == JOB:
            n += 1
            if n >= spins:
                return False
            if n % SPINS == 0:
                _yield_core()
    return True


@njit(**_INLINE)
def _share(k, nth, n):
    """The k-th of nth near-equal slices of range(n)."""
    return (n * k) // nth, (n * (k + 1)) // nth


# --- the kernel of a configuration -------------------------------------------------------------------
CELL_CODES = {"rnn": 0, "lstm": 1, "gru": 2}  # a GRU with the reset before its product: 3
CELL_NAMES = ("rnn", "lstm", "gru", "gru_rb")
GATES = (1, 4, 3, 3)
SLOTS = (1, 3, 2, 2)  # activation slots: rnn f; lstm f, g, h; gru f, g


class Spec(NamedTuple):
    """What a kernel is compiled for: everything but the sizes (which are the call's)."""

    cell: int  # 0 rnn, 1 lstm, 2 gru (reset after the product), 3 gru (reset before)
    dtype: str  # 'float32' or 'float64'
    general: bool  # activations (any, with alpha/beta) and clip read at run time
    acts: tuple  # the constant activation codes of the gate slots (f, g, h) when not general
    peepholes: bool
    input_forget: bool
    proj: bool  # an LSTM projection (H_out < H)
    mr: int  # block sizes of the matrix product (rnn_xp._fast._cpu.Blocking)
    v: int
    vb: int
    kc: int
    budget: int
    l2b: int  # bytes of a row block of the products' left operand

    @property
    def fused(self):
        """rnn and lstm: every gate is f(x W_i + b + h W_h), so a step's products read state rows [x, 1, h]."""
        return self.cell in (0, 1)

    @property
    def nr(self):
        return self.v * (self.vb // np.dtype(self.dtype).itemsize)

    @property
    def name(self):
        """The kernel's name: its cache entry in numba's cache folder (one index file per configuration)."""
        acts = "any" if self.general else "".join("rts"[c] for c in self.acts[: SLOTS[self.cell]])
        flags = "".join(f for f, on in (("p", self.peepholes), ("i", self.input_forget), ("r", self.proj)) if on)
        return (
            f"chunk_{CELL_NAMES[self.cell]}_{self.dtype}_{acts}{'_' + flags if flags else ''}"
            f"_{self.mr}x{self.v}x{self.vb}k{self.kc}m{self.l2b >> 10}_{DIGEST}"
        )

    @property
    def label(self):
        """What the kernel is for, in words (explain, warmup)."""
        cell = ("rnn", "lstm", "gru (reset after)", "gru (reset before)")[self.cell]
        if self.general:
            acts = "any activations, clip"
        else:
            acts = ", ".join(("relu", "tanh", "sigmoid")[c] for c in self.acts[: SLOTS[self.cell]])
        flags = [
            f
            for f, on in (("peepholes", self.peepholes), ("input_forget", self.input_forget), ("projection", self.proj))
            if on
        ]
        return f"{cell} {self.dtype} ({', '.join([acts, *flags])})"


_KERNELS = {}  # Spec -> its njit function (compiled, or loaded from numba's cache, on first use)


def chunk_kernel(spec: Spec):
    """The kernel of a configuration: a function of (k, nth, ctl, units, reverse, masked, par, dims, W, S, IO).

    Thread k of nth runs its share of a time chunk of n steps: with ``units`` = 0 its share of the rows
    of the batch (independent sequences: no waiting); with ``units`` = U >= 1 part k % U of the groups of
    units for part k // U of the rows (nth // U parts; one when the chunk's rows are projected at once),
    meeting the other threads at a spin barrier after every step.
    With ``par`` < 0 a worker stays resident: it runs a share of each job posted to its slot of ctl
    (the job's parity at ctl[PAR]), and returns when told to leave or after a while without a job:

    * W = (wpi, wp1, wp2, b_hn, peep, coef, codes): the packed weights, GRU's b_hn (ng*NR,), the
      peepholes (3, ng*NR), coef (3, 3) float64: alpha, beta per gate slot and clip, and the
      activation codes (3,) of a general kernel;
    * S = (hbuf, cbuf, aux, last): the state rows and c of even and odd steps ((2, B, .): the state at
      step s is in [(par + s) % 2]; a state row is [x, 1, h] for rnn and lstm, with x copied in as the
      step starts and 1 set by the caller, else h), aux (2, B, .): LSTM's h before the projection, or
      GRU's r h and z, and the last output of each row (masks);
    * IO = (xs, xin, gi, y, run, emit, acc): the chunk's inputs (n*B, >= F+1) with a last feature of 1,
      input rows (see dims), the projection (n*B, >= ng*G*NR), the outputs (n, B, H_out), the masks
      (n, B) uint8 (when ``masked``), and each thread's products (nth, rows, >= G1*NR; an rnn's
      >= :func:`span_groups` * NR); xs and gi are
      read only where a chunk's rows are projected at once (GRU; few rows split by units) or with
      ``copy`` (GRU: a row of xs per step and row);
    * dims = (H, H_out, F, copy, x0, st, sb): step t's row b of x is xin[x0 + t*st + b*sb, :F] (the
      caller's memory, or xs). rnn and lstm copy it into their state rows (the threads that split the
      rows their own, in parallel and in cache for the product); a GRU copies it into xs with ``copy``,
      else the caller filled xs.
    """
    fn = _KERNELS.get(spec)
    if fn is None:
        fn = _KERNELS[spec] = _make(spec)
    return fn


def span_groups(spec):
    """Groups of units an rnn kernel's products and epilogues take at once: 512 bytes of a row (the caller sizes
    each thread's products, ``accs``, by it)."""
    return max(1, 512 // (spec.nr * np.dtype(spec.dtype).itemsize)) if spec.cell == 0 else 1


def _make(spec):
    CELL = spec.cell
    G = GATES[CELL]
    G1 = 2 if CELL == 3 else G  # panels per group in the first product (GRU before: r, z)
    PROJ = spec.proj
    TWO = CELL == 3 or PROJ  # a second product per step: W_hn (r h) or W_hr (the projection)
    MR, V, VB, KC, L2B = spec.mr, spec.v, spec.vb, spec.kc, spec.l2b
    NR = spec.nr
    # rows of a wide tile (few rows, every panel of a group at once) within the accumulator budget
    MRWI = max(1, spec.budget // (G * V))
    MRW1 = max(1, spec.budget // (G1 * V))
    MRW2 = max(1, spec.budget // V)
    FUSED = spec.fused
    # groups of units a product and its epilogue take at once: an rnn's up to 512 bytes of a row (group by
    # group, the epilogue's setup cost 11% of keras-text's step), the other cells' one (its G gates side by
    # side, in L1 for the epilogue)
    SPAN = span_groups(spec)

    def chunk(k, nth, ctl, units, reverse, masked, par, dims, W, S, IO):
        wpi, wp1, wp2, b_hn, peep, coef, codes = W
        hbuf, cbuf, aux, last = S
        xs, xin, gi, y, run, emit, accs = IO
        H, H_out, F, copy, x0, st, sb = dims
        k = np.int64(k)  # a thread index may come unsigned: int64 keeps the slice arithmetic in integers
        # gemm's row offset and add flag as run-time values: literals (0, False, True) made a gemm for each
        K0 = np.int64(0)
        NO, YES = K0 != 0, K0 == 0
        B = hbuf.shape[1]
        n = y.shape[0]
        resident = par < 0  # a resident worker: one-step jobs until told to leave (see _next_job)
        while True:
            if resident:
                par = _next_job(ctl, k)
                if par < 0:
                    return
            XO = F + 1 if FUSED else 0  # a state row: [x, 1, h] (FUSED), else h
            KF = XO + H_out
            # few rows: the input projection of the chunk's rows at once (each weight is used more than once)
            ahead = units > 0 and 2 * B < MR
            if FUSED and units > 0 and not ahead:  # the first step's x, in the threads' shares of the rows
                c0, c1 = _share(k, nth, B)
                _x_rows(hbuf[par], xin, x0 + (n - 1 if reverse else 0) * st, sb, c0, c1, F)
            sync = units > 0 and nth > 1
            if sync and not _start(ctl, nth):
                if not resident:
                    return
                _job_done(ctl, k)  # the caller runs the step on one thread
                continue
            ng = wpi.shape[0] // G  # groups of NR units
            ngo = wp2.shape[0] if PROJ else ng  # groups of output units (the projection's)
            if units > 0:  # a part of the groups of units for a part of the rows
                nrp = 1 if ahead else nth // units  # parts of the rows (the chunk's projection ahead: every row)
                i, j = k // units, k % units
                b0, b1 = _share(i, nrp, B)
                g0, g1 = _share(j, units, ng)
                o0, o1 = _share(j, units, ngo)
                if i >= nrp:  # a thread left over (nth not a multiple of units): it only meets the others
                    b1, g1, o1 = b0, g0, o0
            else:  # the thread's rows, every unit: independent sequences, no waiting
                b0, b1 = _share(k, nth, B)
                g0, g1, o0, o1 = 0, ng, 0, ngo
            R = b1 - b0
            acc = accs[k]
            # the products' rows as the products take them: typed like a slice of gi (numba's layout 'A'), so that
            # every product of a kernel is one compiled gemm ('C' and 'A' operands made two, ~1 s more to compile)
            acc_a = acc[:, : acc.shape[1]]
            # the input projection x W_ih^T + b (the biases ride on the constant feature 1). FUSED cells (rnn,
            # lstm): per group, the state rows [x, 1, h] times [W_ih^T; b], then + h W_hh^T as the tiles store it
            # (two chains added once, as torch adds its two products: one chain over [x, 1, h] made every term
            # after a large bias lose bits, 2.5x torch's error on an LSTM with forget bias 3, and 1.27x over
            # [x, h, 1], against 1.05x); with few rows, [x, 1] W for the chunk's rows at once, each step adding
            # h W_hh^T to it in place. GRU: n's input and recurrent parts stay apart, so a projection of the
            # thread's rows (its columns) at the start of each step (still in L2 when the cell reads it; a chunk
            # ahead, it came back from memory), or the chunk's at once with few rows.
            p0, p1 = g0 * G, g1 * G
            if ahead and p1 > p0:
                x_all, gi_all = xs[0 : n * B, : F + 1], gi[0 : n * B, p0 * NR : p1 * NR]
                gemm(wpi[p0:p1], K0, x_all, gi_all, NO, MR, V, VB, KC, G, MRWI, L2B)
            count = 0
            for s in range(n):
                t = n - 1 - s if reverse else s
                cur = (par + s) % 2
                hx_old, hx_new = hbuf[cur], hbuf[1 - cur]  # rows [x, 1, h] or h: h at XO (row views stay contiguous)
                c_old, c_new = cbuf[cur], cbuf[1 - cur]
                if not ahead and R > 0 and p1 > p0:
                    r0 = t * B + b0
                    if FUSED:
                        if units == 0:  # the thread's rows of this step's x, into its state rows
                            _x_rows(hbuf[cur], xin, x0 + t * st, sb, b0, b1, F)
                    else:
                        if copy:  # the step's rows of x, copied here: in parallel, and in cache for the product
                            for b in range(b0, b1):
                                _copy(xs[t * B + b, :F], xin[x0 + t * st + b * sb, :F])
                        xr, gr = xs[r0 : r0 + R, : F + 1], gi[r0 : r0 + R, p0 * NR : p1 * NR]
                        gemm(wpi[p0:p1], K0, xr, gr, NO, MR, V, VB, KC, G, MRWI, L2B)
                for g in range(g0, g1, SPAN):
                    gs = min(SPAN, g1 - g)  # groups in this product
                    u0 = g * NR
                    nu = min(gs * NR, H - u0)
                    col = g * G * NR
                    if R > 0:
                        if not FUSED:
                            wg, hr = wp1[g * G1 : (g + 1) * G1], hbuf[cur, b0:b1, :H_out]
                            gemm(wg, K0, hr, acc_a[:R], NO, MR, V, VB, KC, G1, MRW1, L2B)
                        elif ahead:  # h W_hh^T, added to the step's projection in place
                            r0 = t * B + b0
                            hr, gr = hbuf[cur, b0:b1, XO:KF], gi[r0 : r0 + R, col : col + gs * G * NR]
                            gemm(wpi[g * G : (g + gs) * G], XO, hr, gr, YES, MR, V, VB, KC, G, MRWI, L2B)
                        else:  # [x, 1] W, then + h W_hh
                            wg = wpi[g * G : (g + gs) * G]
                            gemm(wg, K0, hbuf[cur, b0:b1, :XO], acc_a[:R], NO, MR, V, VB, KC, G, MRWI, L2B)
                            gemm(wg, XO, hbuf[cur, b0:b1, XO:KF], acc_a[:R], YES, MR, V, VB, KC, G, MRWI, L2B)
                    for b in range(b0, b1):
                        ho, hn = hx_old[b, XO:], hx_new[b, XO:]
                        if not FUSED:  # the recurrent products, and the input's at col
                            a, x, xc = acc[b - b0], gi[t * B + b], col
                        elif ahead:  # the pre-activations, in the projection's row
                            a = x = gi[t * B + b, col : col + gs * G * NR]
                            xc = 0
                        else:
                            a = x = acc[b - b0]
                            xc = 0
                        if CELL == 0:
                            rnn_row(a, x, xc, hn, u0, nu, codes, coef)
                        elif CELL == 1:
                            out = aux[0, b] if PROJ else hn
                            lstm_row(a, x, xc, c_old[b], c_new[b], out, peep, u0, nu, codes, coef)
                            if masked and run[t, b] == 0:
                                keep_row(b, u0, nu, c_old, c_new)
                        elif CELL == 2:
                            gru_row(a, x, col, b_hn, ho, hn, u0, nu, codes, coef)
                        else:
                            gru_rz_row(a, x, col, ho, aux[0, b], aux[1, b], u0, nu, codes, coef)
                        if not TWO:
                            r = masked and run[t, b] != 0
                            e = masked and emit[t, b] != 0
                            finish_row(u0, nu, ho, hn, last[b], y[t, b], masked, r, e)
                if TWO:  # every unit of phase 1 is needed by every product of phase 2
                    if sync:
                        count += 1
                        _barrier(ctl, nth, count)
                    for g in range(o0, o1):
                        v0 = g * NR
                        nv = min(NR, H_out - v0)
                        if R > 0:
                            gemm(wp2[g : g + 1], K0, aux[0, b0:b1, :H], acc_a[:R], NO, MR, V, VB, KC, 1, MRW2, L2B)
                        for b in range(b0, b1):
                            a = acc[b - b0]
                            ho, hn = hx_old[b, XO:], hx_new[b, XO:]
                            if CELL == 3:
                                gru_n_row(a, gi[t * B + b], g * G * NR, ho, aux[1, b], hn, v0, nv, codes, coef)
                            else:  # the projection's output is the state
                                _copy(hn[v0 : v0 + nv], a[0:nv])
                            r = masked and run[t, b] != 0
                            e = masked and emit[t, b] != 0
                            finish_row(v0, nv, ho, hn, last[b], y[t, b], masked, r, e)
                if FUSED and units > 0 and not ahead and s + 1 < n:  # the next step's x, into h_new's rows' free x
                    c0, c1 = _share(k, nth, B)
                    _x_rows(hbuf[1 - cur], xin, x0 + (t - 1 if reverse else t + 1) * st, sb, c0, c1, F)
                if sync:  # the next step reads every unit of this one
                    count += 1
                    _barrier(ctl, nth, count)
            if not resident:
                return
            _job_done(ctl, k)

    # the row functions made for this spec come in as the kernel's globals, not as closure variables: numba's cache
    # key hashes a closure's variables, and a compiled function pickles with an id new in every process
    kernel = type(chunk)(chunk.__code__, {**globals(), **epilogues(spec)}, spec.name, None, chunk.__closure__)
    kernel.__qualname__ = spec.name  # numba's cache: one index file per configuration
    try:
        return njit(**_KERNEL)(kernel)
    except RuntimeError as e:  # no folder numba can write its cache to (a read-only install, no user cache)
        UNCACHED[spec] = str(e)
        return njit(**dict(_KERNEL, cache=False))(kernel)


UNCACHED = {}  # Spec -> why numba cannot cache its kernel (it is then compiled in every process)
