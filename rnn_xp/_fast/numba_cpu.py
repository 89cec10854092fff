"""The compiled CPU implementation (impl="numba"): the reference loop's equations, compiled with numba.

Chosen by ``impl="auto"`` on NumPy when numba is installed (``pip install 'rnn_xp[numba]'``); without
it the seam says so and runs numpy-fused. numba is imported on the first call that gets here, never
by ``import rnn_xp``. The compiled code is in :mod:`rnn_xp._fast._numba_kernels`.

How a call runs (per layer and direction):

* the weights are transposed once per call into C-contiguous copies (nothing is cached on params or
  in this module, so calls from many threads never share a buffer);
* the input projection is one GEMM per time chunk (NumPy's BLAS, into a buffer reused by every
  chunk; at most ``loop.CHUNK_ELEMENTS`` elements and 1 Mi, so extra memory is bounded by a chunk);
* batch > 1: per step, the recurrent product ``h W_hh^T`` is one GEMM into a preallocated buffer
  (``np.matmul(..., out=)``, BLAS threads as the user set them, e.g. with threadpoolctl), then one
  compiled call does all of the step's gate math, state update, masks and output, rows spread over
  numba's threads when the step is big enough to pay for the launch;
* batch 1 (and steps of at most SMALL_STEP multiply-adds): the whole chunk runs in one compiled
  call: each step splits W_hh's rows (by unit, every gate of a unit together) over numba's threads,
  each thread doing its units' dot products and gate math, so the matrix is read from the cores'
  own caches and a step costs one parallel launch (none on one thread).

Threads: numba's count is ``numba.get_num_threads()`` of the calling thread (``numba.set_num_threads``
sets it). A call that starts while another is running in the process runs on its own thread
(serial kernels): calls from several threads at once do not oversubscribe the cores, and this also
keeps numba's workqueue threading layer (not thread-safe) to one caller. Results do not depend on
the thread count or on concurrency: every element is computed by the same code whichever thread
computes it.

The first call of a new (dtype, layout) compiles the kernels it uses, then numba's on-disk cache
(``cache=True``, next to this file or under ``NUMBA_CACHE_DIR``) serves later processes.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from .. import loop as _loop  # CHUNK_ELEMENTS is read at call time (tests shrink it)

__all__ = ["NAMESPACES", "unsupported", "unsuited", "run_direction"]

NAMESPACES = ("numpy",)

INSTALL_HINT = "pip install 'rnn_xp[numba]'"
MIN_NUMBA = (0, 60)
_CHUNK_CAP = 1 << 20
# Below these sizes a step's work does not repay a parallel launch: run it on one thread. At batch > 1
# the step's GEMM runs on BLAS's threads, which spin between calls: numba's threads then compete with
# them for the cores (measured on 2 cores, load average 2: lstm-med 178 ms threaded vs 140 ms with the
# gate math on the calling thread), so the gate math is threaded only for very large steps.
ROWS_PARALLEL_MIN = 1 << 21  # batch > 1: B * G * H gate elements a step
VEC_PARALLEL_MIN = 1 << 15  # compiled loop: B * G * H * H_out multiply-adds a step
# Up to this many multiply-adds a step (and always at batch 1) the whole chunk runs compiled: a BLAS call
# and a compiled call per step from Python cost more (~5-10 us a step) than the small product itself.
SMALL_STEP = 1 << 16


def _cores_busy():
    """Whether the cores are taken (1-minute load average above cores - 1/2), where it can be read.

    A step split over threads waits for the slowest: when other work holds the cores a descheduled
    thread stalls every step. Measured on a 2-core machine at load 5-12 (other processes): the
    per-step launch made gru-latency 9x and lstm-med 4.8x slower than one thread; at load 2, still
    1.2x slower (gru-latency 17.7 ms vs 15.1 ms). Then one thread it is.
    """
    try:
        return os.getloadavg()[0] > (os.cpu_count() or 1) - 0.5
    except (AttributeError, OSError):  # no load average (Windows)
        return False


_state = {"kernels": None, "reason": None}
_active = {"calls": 0}
_lock = threading.Lock()


def _load():
    """The kernels module, or None with _state["reason"] saying why numba cannot be used."""
    if _state["kernels"] is not None or _state["reason"] is not None:
        return _state["kernels"]
    with _lock:
        if _state["kernels"] is None and _state["reason"] is None:
            try:
                import numba
            except Exception as e:  # noqa: BLE001 - absent or broken: either way the reason is reported
                _state["reason"] = (
                    f"numba is not installed ({INSTALL_HINT})"
                    if isinstance(e, ModuleNotFoundError)
                    else f"numba cannot be imported ({type(e).__name__}: {e}); {INSTALL_HINT}"
                )
                return None
            version = tuple(int(v) for v in numba.__version__.split(".")[:2] if v.isdigit())
            if version < MIN_NUMBA:
                _state["reason"] = (
                    f"numba {numba.__version__} is older than {'.'.join(map(str, MIN_NUMBA))} ({INSTALL_HINT})"
                )
                return None
            from . import _numba_kernels

            _state["kernels"] = _numba_kernels
    return _state["kernels"]


def unsupported(call):
    """Why this implementation cannot run the call, or None."""
    if call.dtype not in ("float32", "float64"):
        return f"dtype {call.dtype} (this implementation runs float32 and float64)"
    if call.trace:
        return "per-step tracing is done by the reference loop"
    if call.traced:
        return "traced arrays (compiled code needs concrete NumPy arrays)"
    if _load() is None:
        return _state["reason"]
    return None


MIN_AUTO_STEPS = 4


def unsuited(call):
    """Why impl="auto" should prefer another implementation for this call (it can run it), or None."""
    if call.steps < MIN_AUTO_STEPS:
        return (
            f"{call.steps} step(s): arranging the weights costs more than it saves under {MIN_AUTO_STEPS} "
            "steps (rnn_xp.Stream arranges them once for a stream)"
        )
    return None


def _threads():
    """numba threads for this call: the user's setting, or 1 while another call runs in the process."""
    import numba

    with _lock:
        _active["calls"] += 1
        alone = _active["calls"] == 1
    return numba.get_num_threads() if alone else 1


def _done():
    with _lock:
        _active["calls"] -= 1


def _transposed(a, dtype):
    """(rows, cols) -> C-contiguous (cols, rows) copy, in blocks (NumPy's whole-matrix transposing copy is slower)."""
    a = np.asarray(a)
    out = np.empty((a.shape[1], a.shape[0]), dtype=dtype)
    step = 256
    for r in range(0, a.shape[0], step):
        out[:, r : r + step] = a[r : r + step].T
    return out


def _vec(a, n, dtype):
    """A (n,) array of dtype: a copy of a, or zeros where a is None."""
    return np.zeros(n, dtype=dtype) if a is None else np.array(a, dtype=dtype)


def run_direction(x, h0, c0, w, cfg, acts, *, reverse, run, emit, xp, out=None):
    """rnn_xp.loop.run_direction's contract (x (T, B, F), returns y (T, B, H_out), h_T, c_T), compiled."""
    k = _load()
    if k is None:
        raise RuntimeError(f"impl='numba' cannot run: {_state['reason']}")
    nth = _threads()
    try:
        return _run(k, nth, x, h0, c0, w, cfg, acts, reverse, run, emit, out)
    finally:
        _done()


def _run(k, nth, x, h0, c0, w, cfg, acts, reverse, run, emit, out):
    T, B, F = x.shape
    dtype = np.dtype(x.dtype)
    H, H_out, G = cfg.hidden_size, h0.shape[-1], cfg.gates
    GH = G * H
    cell = {"rnn": 0, "lstm": 1}.get(cfg.cell, 2 if cfg.reset_after else 3)
    lstm, proj = cfg.cell == "lstm", w.w_hr is not None

    # --- the weights, arranged once per call
    w_ih_t = _transposed(w.w_ih, dtype)  # (F, G*H)
    b_ih, b_hh = _vec(w.b_ih, GH, dtype), _vec(w.b_hh, GH, dtype)
    bias = b_ih + b_hh  # (G*H,) what adds to both products
    b_hn = np.zeros(H, dtype=dtype)
    if cfg.cell == "gru":  # r multiplies (or follows) W_hn h + b_hn: it stays apart
        bias[2 * H :] = b_ih[2 * H :]
        b_hn = b_hh[2 * H :].copy()
    p = _vec(w.p, 3 * H if w.p is not None else 1, dtype)
    codes = np.array([k.ACT_NAMES.index(a.name) for a in acts], dtype=np.int64)
    alpha = np.array([0.0 if a.alpha is None else a.alpha for a in acts], dtype=np.float64)
    beta = np.array([0.0 if a.beta is None else a.beta for a in acts], dtype=np.float64)
    clip = dtype.type(0.0 if cfg.clip is None else cfg.clip)
    vec = B == 1 or 0 < B * GH * H_out <= SMALL_STEP
    w_hh_t = w_rz_t = w_n_t = w_hr_t = None
    if vec:  # rows of W_hh (and W_hr) for the compiled matrix-vector products
        w_hh = np.array(w.w_hh, dtype=dtype, order="C")  # (G*H, H_out)
        w_hr = np.array(w.w_hr, dtype=dtype, order="C") if proj else np.zeros((1, 1), dtype=dtype)  # (H_out, H)
    else:  # transposed for BLAS: (B, H_out) @ (H_out, G*H)
        w_hh = w_hr = None
        w_hh_t = _transposed(w.w_hh, dtype)  # (H_out, G*H)
        w_rz_t = np.ascontiguousarray(w_hh_t[:, : 2 * H]) if cell == 3 else None  # (H_out, 2H)
        w_n_t = np.ascontiguousarray(w_hh_t[:, 2 * H :]) if cell == 3 else None  # (H_out, H)
        w_hr_t = _transposed(w.w_hr, dtype) if proj else None  # (H, H_out)

    # --- state and scratch, allocated once per call
    h = np.array(h0, dtype=dtype, order="C")  # (B, H_out)
    c = np.array(c0, dtype=dtype, order="C") if lstm else np.zeros((B, 1), dtype=dtype)  # (B, H)
    h_new = _empty((B, H_out), dtype)
    c_new = _empty((B, H), dtype) if lstm else c
    hh = _empty((B, H), dtype) if proj else h_new  # h before the projection
    rh = _empty((B, H), dtype)  # GRU r h; its width tells the kernels H
    gh = _empty((B, 2 * H if cell == 3 else GH), dtype)  # the recurrent product, then the gates
    gn = _empty((B, H), dtype) if cell == 3 else gh
    masked = run is not None
    if masked:
        run_u8 = np.ascontiguousarray(run[:, :, 0]).view(np.uint8)  # (T, B)
        emit_u8 = np.ascontiguousarray(emit[:, :, 0]).view(np.uint8)
        last = np.zeros((B, H_out), dtype=dtype)  # the last output, repeated on masked steps (Keras)
    else:
        run_u8 = emit_u8 = np.zeros((1, 1), dtype=np.uint8)  # never read
        last = h_new
    y = _empty((T, B, H_out), dtype) if out is None else out
    # the kernels see C-contiguous arrays only (one compiled signature per dtype): a strided out (one
    # direction's half of a bidirectional layer's output) is written through a chunk buffer
    direct = y.flags.c_contiguous

    chunks = _loop.time_chunks(T, B * GH, reverse, min(_loop.CHUNK_ELEMENTS, _CHUNK_CAP))
    longest = max((t1 - t0 for t0, t1 in chunks), default=0)
    gi_buf = _empty((longest * B, GH), dtype)  # (t*B, G*H), reused by every chunk
    x_buf = _empty((longest * B, F), dtype)  # (t*B, F): the chunk, contiguous
    y_buf = None if direct else _empty((longest, B, H_out), dtype)  # (t, B, H_out)
    flags = (cfg.peepholes, cfg.input_forget)
    threaded = (
        nth > 1
        and (B * GH * H_out >= VEC_PARALLEL_MIN if vec else B * GH >= ROWS_PARALLEL_MIN)
        and T > 1
        and not _cores_busy()
    )
    if vec:
        kernel = k.vec_chunk_parallel if threaded else k.vec_chunk_serial
    else:
        rows = k.rows_parallel if threaded else k.rows_serial
    for t0, t1 in chunks:
        n = t1 - t0
        x_buf[: n * B].reshape(n, B, F)[...] = x[t0:t1]  # (n, B, F)
        np.matmul(x_buf[: n * B], w_ih_t, out=gi_buf[: n * B])  # (n*B, G*H): x W_ih^T for the chunk
        gi = gi_buf[: n * B].reshape(n, B, GH)  # (n, B, G*H)
        ys = y[t0:t1] if direct else y_buf[:n]  # (n, B, H_out)
        runs = run_u8[t0:t1] if masked else run_u8
        emits = emit_u8[t0:t1] if masked else emit_u8
        if vec:
            kernel(
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
                *flags,
                h,
                c,
                h_new,
                c_new,
                hh,
                rh,
                last,
                ys,
                runs,
                emits,
                masked,
                codes,
                alpha,
                beta,
                clip,
            )
        else:
            _steps(
                k,
                rows,
                n,
                reverse,
                cell,
                proj,
                w_hh_t,
                w_rz_t,
                w_n_t,
                w_hr_t,
                gh,
                gn,
                gi,
                bias,
                b_hn,
                p,
                flags,
                h,
                c,
                h_new,
                c_new,
                hh,
                rh,
                last,
                ys,
                runs,
                emits,
                masked,
                codes,
                alpha,
                beta,
                clip,
            )
        if not direct:
            y[t0:t1] = ys
    return y, h, (c if lstm else None)


def _steps(
    k,
    rows,
    n,
    reverse,
    cell,
    proj,
    w_hh_t,
    w_rz_t,
    w_n_t,
    w_hr_t,
    gh,
    gn,
    gi,
    bias,
    b_hn,
    p,
    flags,
    h,
    c,
    h_new,
    c_new,
    hh,
    rh,
    last,
    ys,
    runs,
    emits,
    masked,
    codes,
    alpha,
    beta,
    clip,
):
    """The steps of one chunk at batch > 1: per step the recurrent GEMM(s) through BLAS, then one compiled call."""
    steps = range(n - 1, -1, -1) if reverse else range(n)
    for t in steps:
        if cell == 3:  # r first: W_hn multiplies r h
            np.matmul(h, w_rz_t, out=gh)
            rows(
                t,
                cell,
                0,
                False,
                gh,
                gn,
                gi,
                bias,
                b_hn,
                p,
                *flags,
                h,
                c,
                h_new,
                c_new,
                hh,
                rh,
                last,
                ys,
                runs,
                emits,
                masked,
                codes,
                alpha,
                beta,
                clip,
            )
            np.matmul(rh, w_n_t, out=gn)
            rows(
                t,
                cell,
                1,
                True,
                gh,
                gn,
                gi,
                bias,
                b_hn,
                p,
                *flags,
                h,
                c,
                h_new,
                c_new,
                hh,
                rh,
                last,
                ys,
                runs,
                emits,
                masked,
                codes,
                alpha,
                beta,
                clip,
            )
            continue
        np.matmul(h, w_hh_t, out=gh)
        rows(
            t,
            cell,
            0,
            not proj,
            gh,
            gn,
            gi,
            bias,
            b_hn,
            p,
            *flags,
            h,
            c,
            h_new,
            c_new,
            hh,
            rh,
            last,
            ys,
            runs,
            emits,
            masked,
            codes,
            alpha,
            beta,
            clip,
        )
        if proj:
            np.matmul(hh, w_hr_t, out=h_new)  # (B, H_out)
            k.finalize_rows(t, h_new, c_new, h, c, last, ys, runs, emits, masked)


def _empty(shape, dtype):
    """Every buffer comes from here (tests poison it with NaN to prove each element is written)."""
    return np.empty(shape, dtype=dtype)
