"""The NumPy fast path: the reference loop of forward.run_direction with the per-step cost cut down.

Same equations as rnn_xp.cells, arranged for NumPy on the CPU:

* every buffer is allocated once per call (nothing cached on params or in this module, so
  forward stays safe from many threads) and every step writes in place with ``out=``; the
  state is written straight into the preallocated output y;
* the weights are transposed once per call into C-contiguous (in, G*H) copies, which OpenBLAS
  multiplies faster than a transposed view, and the gate columns are reordered so that the
  sigmoid gates sit side by side (LSTM i, f, o, g): one ufunc call covers all of them;
* sigmoid(z) = 1 / (1 + exp(-z)), with the sign of z folded into the weights and biases of
  the sigmoid gates (negation is exact): three ufunc calls (exp, add, reciprocal) activate all
  of a cell's sigmoid gates at once (exp overflowing to inf for z << 0 gives the correct limit 0,
  so overflow warnings are silenced). The shorter (1 + tanh(z/2)) / 2 is not accurate: for
  z << 0 the sum cancels (~700 ULP in float32), and the biased error accumulates in an LSTM's state;
* in float32, tanh and the sigmoid are computed in float64 and rounded once (ufuncs with
  ``dtype=np.float64``, and a float64 scratch buffer for the sigmoid's three steps), as
  rnn_xp.activations does on NumPy: NumPy's float32 tanh and exp are 1-3 ULP off, which over
  hundreds of steps leaves an LSTM's state ~1.5x further from float64 than PyTorch's;
* the biases are folded into the input projection, as the weights of a constant-1 input
  feature (b_ih + b_hh, rounded once more than in the reference: within float tolerance),
  except GRU's b_hn under reset_after, which the reset gate multiplies;
* the input projection is one GEMM per time chunk (forward.time_chunks, at most 1 Mi elements
  here so that it stays in cache), so extra memory is bounded by a chunk, not by T;
* the default cells (PyTorch's, unmasked) run a loop with the step written out: at batch 1 a
  Python call per step is a tenth of the step. Every other option (masks, clip, peepholes,
  projection, input_forget, other activations, GRU reset before) runs the step closures.

float32 and float64 run here; other dtypes go to the reference loop.

Measured on a 2-core Xeon with OpenBLAS (bench/results): about 2x the reference loop where the
step count dominates (keras-text, gru-latency), 1.4x on lstm-med. At batch 1 the matvec with
W_hh (L2-bandwidth bound on one core: OpenBLAS does not thread it) plus ~11 ufunc calls of
~0.25 us each set the floor of a step; at batch 64 OpenBLAS's sgemm of (B, H) x (H, 4H) runs at
~270 GFLOP/s and the gate math (single-threaded ufuncs) adds a third.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .. import loop as _loop  # CHUNK_ELEMENTS is read at call time (tests shrink it)

__all__ = ["NAMESPACES", "unsupported", "unsuited", "run_direction", "prepared_unsupported", "arrange", "Direction"]

NAMESPACES = ("numpy",)

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_CHUNK_CAP = 1 << 20


def unsupported(call):
    """Why this path cannot run the call, or None."""
    if call.dtype not in ("float32", "float64"):
        return f"dtype {call.dtype} (this path runs float32 and float64)"
    if call.trace:
        return "per-step tracing is done by the reference loop"
    return None


# Fewer steps than this: impl="auto" leaves the call to the reference loop. Arranging the weights (a
# transposed copy of W_ih and W_hh, made per call) costs about as much as 10 steps of the reference at
# H=128 and batch 1 (more at larger H), and saves a few microseconds a step; explicit impl= still runs here.
MIN_AUTO_STEPS = 4


def unsuited(call):
    """Why impl="auto" should prefer another implementation for this call (it can run it), or None."""
    if call.steps < MIN_AUTO_STEPS:
        return (
            f"{call.steps} step(s): arranging the weights costs more than it saves under {MIN_AUTO_STEPS} "
            "steps (rnn_xp.Stream arranges them once for a stream)"
        )
    return None


def describe(call):
    """One line for explain(): whether this BLAS keeps a sequence's bits apart from its batch (:func:`rows_alike`)."""
    if call.dtype not in ("float32", "float64"):
        return ""
    if rows_alike(call.dtype):
        return (
            "NumPy's BLAS computes each row of a matrix product alike whatever the rows beside it (probed): "
            "a sequence gets the same bits alone or in any batch"
        )
    return (
        "NumPy's BLAS sums a row of a matrix product by how many rows are beside it (probed; OpenBLAS's "
        "Haswell kernels, which it runs on AVX2-only CPUs, do): a sequence's last bits depend on its batch "
        "here; impl='numba' is reproducible by construction (pip install 'rnn_xp[numba]')"
    )


@lru_cache(maxsize=2)
def rows_alike(dtype) -> bool:
    """Whether NumPy's BLAS computes each row of a product alike whatever the rows beside it (two or more).

    numpy-fused's reproducibility rests on it (a lone sequence runs beside a zero row, see
    :func:`Direction`). With OpenBLAS's AVX-512 kernels the property tests held (on an Intel Xeon and on
    Zen 4, small products); its Haswell kernels, which it runs on AVX2-only CPUs, do not: measured on
    Zen 1, a row of a (n, 64) x (64, 256) float32 product had one value for n = 2-3, another for 4-11
    and another for 12-23. So this asks the BLAS at hand, once per process and dtype (products of 2 to
    64 rows, each row against the same row beside a zero row: a few milliseconds).
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 96)).astype(dtype)
    w = rng.standard_normal((96, 256)).astype(dtype)
    pair = np.zeros((2, a.shape[1]), dtype)
    alone = []
    for row in a:
        pair[0] = row
        alone.append(np.matmul(pair, w)[0].copy())
    for n in (2, 3, 4, 5, 7, 8, 12, 13, 17, 24, 31, 33, 64):
        if not np.array_equal(np.matmul(a[:n], w), np.stack(alone[:n])):
            return False
    return True


def prepared_unsupported(cfg, acts, dtype):
    """Why a :class:`Direction` cannot run this layer (for rnn_xp.Stream), or None."""
    name = np.dtype(dtype).name if isinstance(dtype, np.dtype) else str(dtype)
    if name not in ("float32", "float64"):
        return f"dtype {name} (this path runs float32 and float64)"
    return None


def _empty(shape, dtype):
    """Every buffer comes from here (tests poison it with NaN to prove each element is written)."""
    return np.empty(shape, dtype=dtype)


# --- activations, in place --------------------------------------------------------------------
def _tanh_fn(dtype):
    """tanh(a, out): for float32 computed in float64 and rounded once."""
    if dtype == np.float32:
        return lambda a, out: np.tanh(a, out, dtype=np.float64)
    return np.tanh


def _neg_sigmoid_fn(dtype):
    """f(a): a = 1 / (1 + exp(a)) in place (a holds -z: the sigmoid of z); float32 through float64."""
    if dtype != np.float32:
        one = np.asarray(1, dtype=dtype)  # 0-d: a Python scalar operand costs ~200 ns more per call

        def f(a):
            np.exp(a, a)
            np.add(a, one, a)
            np.reciprocal(a, a)

        return f
    one64 = np.asarray(1, dtype=np.float64)
    scratch = {}  # shape -> float64 buffer, allocated on first use (the closure lives with its Direction)

    def f32(a):
        w = scratch.get(a.shape)
        if w is None:
            w = scratch[a.shape] = np.empty(a.shape, dtype=np.float64)
        np.exp(a, w, dtype=np.float64)
        np.add(w, one64, w)
        np.reciprocal(w, a)  # rounded once, to float32

    return f32


def _activation(act, clip, negated, xp, dtype):
    """f(a) overwriting a with act(clip(a)); ``negated``: a holds -z, z the pre-activation of a sigmoid."""
    name = act.name
    if negated:  # a = -z (folded into the weights): sigmoid(z) = 1 / (1 + exp(a))
        sig = _neg_sigmoid_fn(dtype)
        if clip is None:
            return sig

        def f(a):
            np.clip(a, -clip, clip, out=a)  # the bounds are symmetric: clipping -z is -clip(z)
            sig(a)

        return f
    if name == "Tanh":
        inner = _tanh_fn(dtype)
    elif name == "Relu":

        def inner(a, out):
            np.maximum(a, np.asarray(0, dtype=dtype), out=out)
    else:

        def inner(a, out):  # any other function: the shared Array-API definition, then a copy
            out[...] = act(a, xp)

    if clip is None:
        return lambda a: inner(a, out=a)

    def clipped(a):
        np.clip(a, -clip, clip, out=a)
        inner(a, out=a)

    return clipped


def _activation_to(act, xp, dtype):
    """g(a, out): out = act(a), a left unchanged (the LSTM's h(c): clip never bounds c, as in onnxruntime)."""
    if act.name == "Tanh":
        return _tanh_fn(dtype)

    def g(a, out):
        out[...] = act(a, xp)

    return g


# --- the weights, arranged once per call (once per stream) ----------------------------------------
def arrange(w, cfg, acts, dtype):
    """(w_ih_t, w_hh_t, extra, negated): transposed, gate-reordered, sigmoid-negated weights, folded biases.

    w_ih_t (in + 1, G*H), its last row the folded biases (the input gets a constant-1 feature),
    w_hh_t (H_out, G*H), both C-contiguous; extra holds what cannot be folded (GRU b_hn under
    reset_after, LSTM p and w_hr).
    """
    H, G = cfg.hidden_size, cfg.gates
    negate = cfg.cell != "rnn" and acts[0].name == "Sigmoid"
    if cfg.cell == "lstm":
        order, n_sig = (0, 1, 3, 2), 3  # i, f, o | g: the sigmoid gates side by side
    elif cfg.cell == "gru":
        order, n_sig = (0, 1, 2), 2  # r, z | n
    else:
        order, n_sig = (0,), 0
    gate_scale = [-1.0 if negate and j < n_sig else 1.0 for j in range(G)]  # per new gate position

    def rows(a):  # (G*H,) in rnn_xp order -> reordered and scaled, as a new array
        return np.concatenate([np.asarray(a[k * H : (k + 1) * H]) * gate_scale[j] for j, k in enumerate(order)])

    def transposed(wm, extra_row=False):  # (G*H, n) in rnn_xp order -> (n, G*H) C-contiguous, reordered, scaled
        # one pass per gate block: numpy's transposing copy of a whole matrix is several times slower
        out = np.empty((wm.shape[1] + extra_row, G * H), dtype=dtype)
        for j, k in enumerate(order):
            np.multiply(
                np.asarray(wm[k * H : (k + 1) * H]).T, gate_scale[j], out=out[: wm.shape[1], j * H : (j + 1) * H]
            )
        return out

    w_ih_t = transposed(w.w_ih, extra_row=True)  # (in + 1, G*H): the last row takes the biases
    w_hh_t = transposed(w.w_hh)  # (H_out, G*H)
    b_ih = None if w.b_ih is None else rows(w.b_ih)
    b_hh = None if w.b_hh is None else rows(w.b_hh)
    extra = {}
    if cfg.cell == "gru" and cfg.reset_after and b_hh is not None:
        extra["b_hn"] = b_hh[2 * H :].copy()  # r multiplies W_hn h + b_hn: it stays in the step
        b_hh[2 * H :] = 0.0
    if b_ih is None:
        b_in = b_hh
    else:
        b_in = b_ih if b_hh is None else b_ih + b_hh
    # the biases ride in the input GEMM as the weights of a constant-1 input feature: no pass of
    # their own over the projection
    w_ih_t[-1] = 0.0 if b_in is None else b_in
    if w.p is not None:  # ONNX peepholes i, f, o, halved with their gates
        p = np.asarray(w.p, dtype=dtype)
        sign = -1.0 if negate else 1.0  # negated with their gates
        extra["p_if"] = (p[: 2 * H] * sign).reshape(2, H)  # (2, H)
        extra["p_o"] = p[2 * H :] * sign  # (H,)
    if w.w_hr is not None:
        extra["w_hr_t"] = np.ascontiguousarray(np.asarray(w.w_hr).T)  # (H, H_out)
    return w_ih_t, w_hh_t, extra, negate


# --- one step of each cell, as closures over the per-call buffers -------------------------------
def _rnn_step(w_hh_t, acts, cfg, xp, B, dtype):
    act = _activation(acts[0], cfg.clip, False, xp, dtype)
    a = _empty((B, w_hh_t.shape[1]), dtype)  # (B, H)

    def step(h, c, h_out, c_out, g, _):
        np.matmul(h, w_hh_t, a)
        np.add(a, g, h_out)  # x_t W_ih^T + h W_hh^T + b
        act(h_out)

    return step


def _lstm_step(w_hh_t, extra, acts, cfg, xp, B, dtype, negated):
    H = cfg.hidden_size
    f_act, g_act, h_act = acts
    gates = _empty((B, 4 * H), dtype)  # (B, 4H): i, f, o, g
    i, f, o, gg = (gates[:, k * H : (k + 1) * H] for k in range(4))
    gates3 = gates.reshape(B, 4, H)  # a view: gates3[:, :2] are i and f
    sig = gates[:, : 3 * H]
    tmp = _empty((B, H), dtype)
    p_if, p_o, w_hr_t = extra.get("p_if"), extra.get("p_o"), extra.get("w_hr_t")
    hh = _empty((B, H), dtype) if w_hr_t is not None else None  # h before the projection
    peep = _empty((B, 2, H), dtype) if p_if is not None else None
    clip = cfg.clip
    fused = negated and clip is None and g_act.name == "Tanh" and p_if is None
    act_sig = _activation(f_act, clip, negated, xp, dtype)
    act_g = _activation(g_act, clip, False, xp, dtype)
    act_h = _activation_to(h_act, xp, dtype)
    sig_fused, tanh = _neg_sigmoid_fn(dtype), _tanh_fn(dtype)
    input_forget = cfg.input_forget

    def step(h, c, h_out, c_out, g, _):
        np.matmul(h, w_hh_t, gates)
        np.add(gates, g, gates)
        if p_if is not None:  # i and f see c_{t-1}
            np.multiply(c[:, None, :], p_if, peep)
            gates3[:, :2] += peep
            act_sig(gates[:, : 2 * H])
            act_g(gg)
        elif fused:  # i, f, o from their negated pre-activations at once, without act_sig's calls
            sig_fused(sig)
            tanh(gg, gg)
        else:
            act_sig(sig)
            act_g(gg)
        if input_forget:  # f = 1 - i: c = c + i (g - c)
            np.subtract(gg, c, tmp)
            np.multiply(tmp, i, tmp)
            np.add(c, tmp, c_out)
        else:
            np.multiply(i, gg, tmp)
            np.multiply(f, c, c_out)
            c_out += tmp  # c = f c + i g
        if p_if is not None:  # o sees the new c
            np.multiply(c_out, p_o, tmp)
            np.add(o, tmp, o)
            act_sig(o)
        act_h(c_out, tmp)
        if w_hr_t is None:
            np.multiply(o, tmp, h_out)  # h = o act(c)
        else:
            np.multiply(o, tmp, hh)
            np.matmul(hh, w_hr_t, h_out)  # (B, H_out)

    return step


def _gru_step(w_hh_t, extra, acts, cfg, xp, B, dtype, negated):
    H = cfg.hidden_size
    f_act, g_act = acts
    act_rz = _activation(f_act, cfg.clip, negated, xp, dtype)
    act_n = _activation(g_act, cfg.clip, False, xp, dtype)
    b_hn = extra.get("b_hn")
    n = _empty((B, H), dtype)
    d = _empty((B, H), dtype)
    if cfg.reset_after:
        gh = _empty((B, 3 * H), dtype)  # (B, 3H): W_h{r,z,n} h
        rz, r, z, gh_n = gh[:, : 2 * H], gh[:, :H], gh[:, H : 2 * H], gh[:, 2 * H :]

        def step(h, c, h_out, c_out, g_rz, g_n):
            np.matmul(h, w_hh_t, gh)
            np.add(rz, g_rz, rz)
            act_rz(rz)
            if b_hn is not None:
                np.add(gh_n, b_hn, gh_n)
            np.multiply(r, gh_n, n)
            np.add(n, g_n, n)
            act_n(n)  # n = g(x W_in + b_in + r (h W_hn + b_hn))
            np.subtract(h, n, d)
            np.multiply(d, z, d)
            np.add(n, d, h_out)  # h = (1 - z) n + z h

        return step

    w_rz_t, w_n_t = w_hh_t[:, : 2 * H], np.ascontiguousarray(w_hh_t[:, 2 * H :])
    w_rz_t = np.ascontiguousarray(w_rz_t)
    rz = _empty((B, 2 * H), dtype)
    r, z = rz[:, :H], rz[:, H:]

    def step(h, c, h_out, c_out, g_rz, g_n):
        np.matmul(h, w_rz_t, rz)
        np.add(rz, g_rz, rz)
        act_rz(rz)
        np.multiply(r, h, d)
        np.matmul(d, w_n_t, n)  # (r h) W_hn^T, b_hn folded into the projection
        np.add(n, g_n, n)
        act_n(n)
        np.subtract(h, n, d)
        np.multiply(d, z, d)
        np.add(n, d, h_out)

    return step


# --- the default cells of PyTorch, Keras and ONNX, unmasked: the steps written out in the loop ----
def _inline_loop(cfg, acts, negated, extra, w_hh_t, B, dtype):
    """loop(h, c, ys, parts) -> h_T over one chunk, or None when the cell has options the closures handle.

    The same operations as the step closures, without a Python call per step: at batch 1 that
    call is a tenth of the step (gru-latency).
    """
    names = tuple(a.name for a in acts)
    if cfg.clip is not None:
        return None
    H = cfg.hidden_size
    matmul, add, multiply, subtract = np.matmul, np.add, np.multiply, np.subtract
    tanh, sigmoid_neg = _tanh_fn(dtype), _neg_sigmoid_fn(dtype)
    if cfg.cell == "rnn" and names == ("Tanh",):
        a = _empty((B, H), dtype)

        def loop(h, c, ys, parts):
            for h_out, g in zip(ys, parts[0], strict=True):
                matmul(h, w_hh_t, a)
                add(a, g, h_out)
                tanh(h_out, h_out)  # h = tanh(x W_ih^T + h W_hh^T + b)
                h = h_out
            return h

        return loop
    if cfg.cell == "gru" and cfg.reset_after and negated and names == ("Sigmoid", "Tanh"):
        b_hn = extra.get("b_hn")
        if b_hn is None:
            b_hn = np.zeros(H, dtype=dtype)
        gh = _empty((B, 3 * H), dtype)
        rz, r, z, gh_n = gh[:, : 2 * H], gh[:, :H], gh[:, H : 2 * H], gh[:, 2 * H :]
        n = _empty((B, H), dtype)
        d = _empty((B, H), dtype)

        def loop(h, c, ys, parts):
            for h_out, g_rz, g_n in zip(ys, *parts, strict=True):
                matmul(h, w_hh_t, gh)
                add(rz, g_rz, rz)
                sigmoid_neg(rz)  # r, z = sigmoid(z) = 1 / (1 + exp(-z)) (negated pre-activations)
                add(gh_n, b_hn, gh_n)
                multiply(r, gh_n, n)
                add(n, g_n, n)
                tanh(n, n)  # n = tanh(x W_in + b_in + r (h W_hn + b_hn))
                subtract(h, n, d)
                multiply(d, z, d)
                add(n, d, h_out)  # h = n + z (h - n)
                h = h_out
            return h

        return loop
    if (
        cfg.cell == "lstm"
        and negated
        and names == ("Sigmoid", "Tanh", "Tanh")
        and not cfg.input_forget
        and "p_if" not in extra
        and "w_hr_t" not in extra
    ):
        gates = _empty((B, 4 * H), dtype)  # i, f, o, g
        i, f, o, g = (gates[:, k * H : (k + 1) * H] for k in range(4))
        tmp = _empty((B, H), dtype)
        sig = gates[:, : 3 * H]  # (B, 3H): i, f, o

        def loop(h, c, ys, parts):
            for h_out, g_t in zip(ys, parts[0], strict=True):
                matmul(h, w_hh_t, gates)
                add(gates, g_t, gates)
                sigmoid_neg(sig)  # i, f, o = 1 / (1 + exp(-z)) (negated pre-activations)
                tanh(g, g)
                multiply(i, g, tmp)
                multiply(f, c, c)
                add(c, tmp, c)  # c = f c + i g
                tanh(c, tmp)
                multiply(o, tmp, h_out)  # h = o tanh(c)
                h = h_out
            return h

        return loop
    return None


# --- the loop ---------------------------------------------------------------------------------
def Direction(arranged, cfg, acts, dtype, B, xp):  # noqa: N802 - made like a class, by Stream too
    """One layer and direction made ready for batch B (see :class:`_Direction`); batch 1 runs as batch 2.

    NumPy's matmul of a single row goes through BLAS's matrix-vector routine, which sums in another
    order than the matrix product of the same row inside a batch; with two or more rows OpenBLAS
    computes each row of a product alike whatever the rows beside it. So a sequence alone runs beside
    a zero row (:class:`_OneRow`) and gets the bits it gets at any place of any batch.
    """
    if B == 1:
        return _OneRow(arranged, cfg, acts, dtype, xp)
    return _Direction(arranged, cfg, acts, dtype, B, xp)


class _Direction:
    """One layer and direction made ready for batch B: everything that does not depend on the input.

    ``arranged`` is :func:`arrange`'s result (the weights transposed, reordered and with the biases
    folded), made once per call by :func:`run_direction` and once per stream by :class:`rnn_xp.Stream`;
    the step closures and their buffers are made here, the buffers of the input projection on the
    first :meth:`run` that needs them. Not thread-safe: one Direction serves one caller at a time.
    """

    def __init__(self, arranged, cfg, acts, dtype, B, xp):
        w_ih_t, w_hh_t, extra, negated = arranged
        self.cell, self.B, self.dtype = cfg.cell, B, dtype
        self.H, self.GH, self.F = cfg.hidden_size, w_ih_t.shape[1], w_ih_t.shape[0] - 1
        self.w_ih_t = w_ih_t
        if cfg.cell == "rnn":
            self.step = _rnn_step(w_hh_t, acts, cfg, xp, B, dtype)
        elif cfg.cell == "lstm":
            self.step = _lstm_step(w_hh_t, extra, acts, cfg, xp, B, dtype, negated)
        else:
            self.step = _gru_step(w_hh_t, extra, acts, cfg, xp, B, dtype, negated)
        # the written-out loop of the default cells, made on the first unmasked run
        self._make_inline = lambda: _inline_loop(cfg, acts, negated, extra, w_hh_t, B, dtype)
        self.inline = None
        H_out = w_hh_t.shape[0]
        self.h_new = _empty((B, H_out), dtype)  # masked steps: the step's result, before the mask picks
        self.c_new = _empty((B, cfg.hidden_size), dtype) if cfg.cell == "lstm" else None
        self.rows = -1  # rows of the projection buffers (grown on demand, then reused)
        self.x_buf = self.gi_buf = None
        self.step1 = self._one_step()

    def _one_step(self):
        """step1(x, h, c, y): one unmasked step, x (B, F), the state h (B, H_out) and c updated in place,
        y (B, H_out) receives h. Every view bound here: a call is the ufuncs of one step and nothing else."""
        B, F, H = self.B, self.F, self.H
        x_buf, gi = self._buffers(B)
        x_in, w_ih_t, step, copyto, matmul = x_buf[:B, :F], self.w_ih_t, self.step, np.copyto, np.matmul
        x_row, gi = x_buf[:B], gi[:B]  # (B, F+1), (B, G*H)
        g0, g1 = (gi[:, : 2 * H], gi[:, 2 * H :]) if self.cell == "gru" else (gi, gi)

        errstate = np.errstate

        def step1(x, h, c, y):
            copyto(x_in, x)
            matmul(x_row, w_ih_t, gi)  # x W_ih^T + b
            with errstate(over="ignore"):  # see run
                step(h, c, h, c, g0, g1)  # the closures read h and c before they write them
            copyto(y, h)

        return step1

    def _buffers(self, rows):
        if rows > self.rows:
            self.gi_buf = _empty((rows, self.GH), self.dtype)  # (t*B, G*H)
            self.x_buf = _empty((rows, self.F + 1), self.dtype)  # (t*B, F+1): a chunk, contiguous, and ones
            self.x_buf[:, self.F] = 1.0
            self.rows = rows
        return self.x_buf, self.gi_buf

    def run(self, x, h, c, y, *, reverse=False, run=None, emit=None, last=None):
        """Run over x (T, B, F), carrying the state h (B, H_out) and c (B, H) in place; y (T, B, H_out)
        receives the outputs.

        Unmasked (``run`` None) every element of y is written. With ``run``/``emit`` (T, B, 1), y
        must hold zeros (a step outputs ``last`` where emit, and y keeps its zero elsewhere) and
        ``last`` (B, H_out), the last output, is carried in place (zeros for a fresh sequence).
        """
        # the sigmoid's exp(-z) overflows to inf for z << 0, and 1 / (1 + inf) = 0 is the correct limit
        with np.errstate(over="ignore"):
            self._run(x, h, c, y, reverse=reverse, run=run, emit=emit, last=last)

    def _run(self, x, h, c, y, *, reverse, run, emit, last):
        T, B = x.shape[0], self.B
        H, GH, F = self.H, self.GH, self.F
        masked = run is not None
        # at most 1 Mi elements a chunk (4 MB in float32): the projection buffer then stays in cache
        # between the GEMM that writes it and the steps that read it, and costs few page faults
        chunks = _loop.time_chunks(T, B * GH, reverse, min(_loop.CHUNK_ELEMENTS, _CHUNK_CAP))
        if not chunks:
            return
        x_buf, gi_buf = self._buffers(max(t1 - t0 for t0, t1 in chunks) * B)
        if not masked and self._make_inline is not None:
            self.inline, self._make_inline = self._make_inline(), None
        step, inline, state = self.step, self.inline, h
        for t0, t1 in chunks:
            n = t1 - t0
            x_buf[: n * B, :F].reshape(n, B, F)[...] = x[t0:t1]  # (n, B, F)
            gi2 = gi_buf[: n * B]
            np.matmul(x_buf[: n * B], self.w_ih_t, gi2)  # (n*B, G*H) = x W_ih^T + b: one GEMM for the chunk
            gi = gi2.reshape(n, B, GH)  # (n, B, G*H)
            # the per-step views come from zip over whole arrays (made in C, cheaper than indexing)
            if self.cell == "gru":
                parts = (gi[:, :, : 2 * H], gi[:, :, 2 * H :])  # (n, B, 2H), (n, B, H)
            else:
                parts = (gi, gi)  # the second is unused
            ys = y[t0:t1]  # (n, B, H_out)
            if reverse:
                parts, ys = tuple(a[::-1] for a in parts), ys[::-1]
            if not masked and inline is not None:
                h = inline(h, c, ys, parts)  # the state is the output just written: h is a view of y
                continue
            if not masked:
                for h_out, g0, g1 in zip(ys, *parts, strict=True):
                    step(h, c, h_out, c, g0, g1)
                    h = h_out
                continue
            runs, emits = run[t0:t1], emit[t0:t1]  # (n, B, 1)
            if reverse:
                runs, emits = runs[::-1], emits[::-1]
            h_new, c_new = self.h_new, self.c_new
            for y_t, g0, g1, r, e in zip(ys, *parts, runs, emits, strict=True):
                step(h, c, h_new, c_new, g0, g1)
                np.copyto(h, h_new, where=r)
                if c is not None:
                    np.copyto(c, c_new, where=r)
                np.copyto(last, h_new, where=r)
                np.copyto(y_t, last, where=e)
        if h is not state:
            np.copyto(state, h)  # the unmasked loops leave the state in y's last step


class _OneRow:
    """A batch of one run as a batch of two, the second row zero: the products then sum as in any batch."""

    def __init__(self, arranged, cfg, acts, dtype, xp):
        self.inner = _Direction(arranged, cfg, acts, dtype, 2, xp)
        self.B, self.dtype, self.GH = 1, dtype, arranged[0].shape[1]
        self.F, self.H_out = arranged[0].shape[0] - 1, arranged[1].shape[0]
        self.H = cfg.hidden_size
        self.lstm = cfg.cell == "lstm"
        self.h2 = np.zeros((2, self.H_out), dtype=dtype)
        self.c2 = np.zeros((2, self.H), dtype=dtype) if self.lstm else None
        self.x1 = np.zeros((2, self.F), dtype=dtype)
        self.y1 = _empty((2, self.H_out), dtype)

    def _state_in(self, h, c):
        self.h2[0] = h[0]
        self.h2[1] = 0
        if self.lstm:
            self.c2[0] = c[0]
            self.c2[1] = 0

    def _state_out(self, h, c):
        h[0] = self.h2[0]
        if self.lstm:
            c[0] = self.c2[0]

    def run(self, x, h, c, y, *, reverse=False, run=None, emit=None, last=None):
        """:meth:`_Direction.run` for batch 1: chunk by chunk (bounded memory), beside a zero row."""
        T = x.shape[0]
        masked = run is not None
        self._state_in(h, c)
        last2 = None
        if masked:
            last2 = np.zeros((2, self.H_out), dtype=self.dtype)
            last2[0] = last[0]
        for t0, t1 in _loop.time_chunks(T, 2 * self.GH, reverse, min(_loop.CHUNK_ELEMENTS, _CHUNK_CAP)):
            n = t1 - t0
            x2 = np.zeros((n, 2, self.F), dtype=self.dtype)
            x2[:, 0] = x[t0:t1, 0]
            y2 = np.zeros((n, 2, self.H_out), dtype=self.dtype) if masked else _empty((n, 2, self.H_out), self.dtype)
            r2 = e2 = None
            if masked:
                r2 = np.zeros((n, 2, 1), dtype=bool)
                e2 = np.zeros((n, 2, 1), dtype=bool)
                r2[:, 0], e2[:, 0] = run[t0:t1, 0], emit[t0:t1, 0]
            self.inner.run(x2, self.h2, self.c2, y2, reverse=reverse, run=r2, emit=e2, last=last2)
            y[t0:t1, 0] = y2[:, 0]
        self._state_out(h, c)
        if masked:
            last[0] = last2[0]

    def step1(self, x, h, c, y):
        """:meth:`_Direction.step1` for batch 1."""
        self.x1[0] = x[0]
        self._state_in(h, c)
        self.inner.step1(self.x1, self.h2, self.c2, self.y1)
        self._state_out(h, c)
        y[0] = self.y1[0]


def run_direction(x, h0, c0, w, cfg, acts, *, reverse, run, emit, xp, out=None):
    """rnn_xp.loop.run_direction's contract (x (T, B, F), returns y (T, B, H_out), h_T, c_T), fast."""
    T, B, _ = x.shape
    dtype = x.dtype
    H_out = h0.shape[-1]
    direction = Direction(arrange(w, cfg, acts, dtype), cfg, acts, dtype, B, xp)
    h = _empty((B, H_out), dtype)
    h[...] = h0
    c = None
    if c0 is not None:
        c = _empty(c0.shape, dtype)
        c[...] = c0
    if run is not None:
        if out is None:
            y = np.zeros((T, B, H_out), dtype=dtype)  # masked outputs stay zero where emit is off
        else:
            y = out
            y[...] = 0
        last = np.zeros((B, H_out), dtype=dtype)  # the last output, repeated on masked steps (Keras)
    else:
        y = _empty((T, B, H_out), dtype) if out is None else out
        last = None
    direction.run(x, h, c, y, reverse=reverse, run=run, emit=emit, last=last)
    return y, h, c
