"""CuPy fast path: the gate math of each step fused into one ElementwiseKernel.

The same loop as :func:`rnn_xp.loop.run_direction` (same signature, same results within
rounding): the input projection for a chunk of steps as one cuBLAS matmul, then per step the
recurrent matmul (cuBLAS, into a reused buffer) and ONE kernel that computes every gate, the
new state and the masked update, where the reference launches a dozen small kernels. The GRU
with the reset before the recurrent matmul and the LSTM with a projection need a second matmul
inside the step, so two kernels there.

The kernels' sources are data in :mod:`rnn_xp._fast.cupy_kernels` (with ``cupy_gates.cu``);
configurations they do not cover (an activation without a kernel, a dtype other than
float16/32/64, an empty batch or sequence, tracing) are declined, with the reason, and the seam
runs the reference loop. CuPy is imported only when this runner is asked. Buffers are local to
each call: runners may run in threads.
"""

from __future__ import annotations

import functools
import math

from ..loop import input_projection, time_chunks
from .cupy_kernels import ACT_KINDS, ACT_PREFIXES, KERNELS, PREAMBLE

__all__ = ["NAMESPACES", "run_direction", "unsupported", "declines"]

NAMESPACES = ("cupy",)

_DTYPES = ("float16", "float32", "float64")


def _cupy():
    import cupy

    return cupy


def cupy_problem():
    """Why CuPy cannot be used here, or None."""
    try:
        _cupy()
    except Exception as e:  # noqa: BLE001 - ImportError, or a CUDA install broken in any other way
        return f"CuPy does not import ({type(e).__name__}: {e})"
    return None


@functools.cache
def _kernel(cp, spec):
    # CuPy compiles (NVRTC) and caches the binary per dtype on the first call
    return cp.ElementwiseKernel(spec.in_params, spec.out_params, spec.operation, spec.name, preamble=PREAMBLE)


def _launch(cp, name, args):
    """Run kernel `name` on the arguments it names, taken from `args` by name (the rest is ignored)."""
    spec = KERNELS[name]
    try:
        values = [args[n] for n in spec.in_names + spec.out_names]
    except KeyError as e:
        raise RuntimeError(
            f"rnn_xp internal error: kernel {name} needs argument {e} that the runner did not pass"
        ) from None
    _kernel(cp, spec)(*values)


def _empty(cp, shape, dtype):
    """A buffer every element of which the step writes before it is read (tests poison it)."""
    return cp.empty(shape, dtype=dtype)


def _device(x):
    """The context that makes x's device current, so that buffers land beside x."""
    return x.device


def declines(steps, batch, dtype, cfg, acts):
    """Why the fused kernels do not cover one direction of a call, or None when they do."""
    if dtype not in _DTYPES:
        return f"dtype {dtype} (kernels exist for {', '.join(_DTYPES)})"
    missing = [a.name for a in acts if a.name not in ACT_KINDS]
    if missing:
        return f"activation(s) {missing} have no fused kernel"
    if steps == 0 or batch == 0:
        return "no steps or an empty batch: nothing to fuse"
    return None


def unsupported(call):
    """Why this path cannot run the call (the seam's question), or None."""
    if call.trace:
        return "per-step tracing is done by the reference loop"
    for acts in call.cfg.activations:
        why = declines(call.steps, call.batch, call.dtype, call.cfg, acts)
        if why is not None:
            return why
    return cupy_problem()


def _constant_args(cfg, acts, w):
    """The kernel arguments that stay the same for every step of one layer and direction."""
    args = {
        "H": cfg.hidden_size,
        "clip": math.inf if cfg.clip is None else float(cfg.clip),
        # a kernel reads b_hh and p only when has_bh / has_p say so; w_hh stands in for absent ones
        "b_hh": w.w_hh if w.b_hh is None else w.b_hh,
        "has_bh": int(w.b_hh is not None),
        "p": w.w_hh if w.p is None else w.p,
        "has_p": int(w.p is not None),
        "input_forget": int(cfg.input_forget),
    }
    for prefix, act in zip(ACT_PREFIXES, acts, strict=False):
        args[f"{prefix}_kind"] = ACT_KINDS[act.name]
        args[f"{prefix}_alpha"] = 0.0 if act.alpha is None else act.alpha
        args[f"{prefix}_beta"] = 0.0 if act.beta is None else act.beta
    return args


def run_direction(x, h0, c0, w, cfg, acts, *, reverse, run, emit, xp, out=None):
    """:func:`rnn_xp.loop.run_direction` with fused gate kernels (CuPy arrays only; ``out`` is copied into).

    The seam asks :func:`unsupported` first; called directly on a direction the kernels do not cover,
    this raises ValueError with the reason (it never falls back on its own)."""
    why = declines(x.shape[0], x.shape[1], str(x.dtype), cfg, acts)
    if why is not None:
        raise ValueError(
            f"cupy-fused cannot run this direction: {why}. Fix: rnn_xp.forward(..., impl='auto') "
            "chooses an implementation that can"
        )
    cp = _cupy()
    with _device(x):
        return _run(cp, x, h0, c0, w, cfg, acts, reverse, run, emit, xp)


def _run(cp, x, h0, c0, w, cfg, acts, reverse, run, emit, xp):
    T, B, _ = x.shape
    H, H_out, dtype = cfg.hidden_size, h0.shape[-1], x.dtype
    masked = run is not None
    reset_before = cfg.cell == "gru" and not cfg.reset_after
    proj = w.w_hr is not None

    def new(*shape):
        return _empty(cp, shape, dtype)

    def pair(n):
        # a state alternates between two buffers: a step reads one and writes the other
        return (new(B, n), new(B, n))

    # cuBLAS reads the transposed weights in place
    w_hh_t = (w.w_hh[: 2 * H, :] if reset_before else w.w_hh).T  # (H_out, G_h*H)
    w_hn_t = w.w_hh[2 * H :, :].T if reset_before else None  # (H, H)
    w_hr_t = w.w_hr.T if proj else None  # (H, H_out)
    gh = new(B, w_hh_t.shape[1])  # h W_hh^T of the current step
    if reset_before:
        rh, z, gh_n = new(B, H), new(B, H), new(B, H)  # r * h, z, (r * h) W_hn^T
    if proj:
        m = new(B, H)  # o * h(c), the LSTM output before its projection
        hp = new(B, H_out) if masked else None  # the projected output, before the masked update

    y = new(T, B, H_out)
    h, c = h0, c0
    h_bufs = pair(H_out) if masked else None  # unmasked, the state h is the output y[t]
    c_bufs = pair(H) if c0 is not None else None
    last, last_bufs = (cp.zeros((B, H_out), dtype=dtype), pair(H_out)) if masked else (None, None)
    kernel = cfg.cell + ("_n" if reset_before else "") + ("_masked" if masked else "")

    args = _constant_args(cfg, acts, w)
    k = 0  # steps done: picks the buffer of each pair to write
    for t0, t1 in time_chunks(T, B * w.w_ih.shape[0], reverse):
        gi = input_projection(x[t0:t1, ...], w, xp)  # (t1-t0, B, G*H): one cuBLAS matmul for the chunk
        for t in range(t1 - 1, t0 - 1, -1) if reverse else range(t0, t1):
            h_out = h_bufs[k % 2] if masked else y[t, ...]
            c_out = None if c is None else c_bufs[k % 2]
            last_out = last_bufs[k % 2] if masked else None
            args.update(gi=gi[t - t0, ...], gh=gh, h=h, c=c, h_out=h_out, c_out=c_out)
            if masked:
                args.update(run=run[t, ...], emit=emit[t, ...], last=last, last_out=last_out, y_out=y[t, ...])
            cp.matmul(h, w_hh_t, out=gh)  # (B, G_h*H)
            if reset_before:
                _launch(cp, "gru_rz", dict(args, rh_out=rh, z_out=z))
                cp.matmul(rh, w_hn_t, out=gh_n)  # (B, H)
                _launch(cp, kernel, dict(args, gh=gh_n, z=z))
            elif proj:
                # the gate kernel writes o * h(c) to m and the cell state (masked, if so); then h = m W_hr^T
                _launch(cp, "lstm_cmasked" if masked else "lstm", dict(args, h_out=m))
                if masked:
                    cp.matmul(m, w_hr_t, out=hp)  # (B, H_out)
                    _launch(cp, "update_masked", dict(args, hp=hp, H=H_out))
                else:
                    cp.matmul(m, w_hr_t, out=h_out)  # (B, H_out), straight into y[t]
            else:
                _launch(cp, kernel, args)
            h, c, last = h_out, c_out, last_out
            k += 1
    # unmasked, h is a view of y: the caller gets its own array, as from the reference
    return y, (h if masked else h.copy()), c
